//! Identity providers' request sequences, replayed from fixtures
//! (`tests/fixtures/scim/{okta,entra}.json`, modelled on Okta's and
//! Microsoft Entra's published SCIM 2.0 provisioning guides), then the
//! SCIM and Char answers they must leave behind.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const OKTA: &str = include_str!("../fixtures/scim/okta.json");
const ENTRA: &str = include_str!("../fixtures/scim/entra.json");

/// `text` with every `{{name}}` replaced by the id saved under `name`.
fn substitute(text: &str, ids: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (name, id) in ids {
        out = out.replace(&format!("{{{{{name}}}}}"), id);
    }
    assert!(!out.contains("{{"), "an unknown placeholder in {out}");
    out
}

/// Whether `actual` holds everything `expected` says: objects by their
/// listed keys, arrays element by element (same length), scalars equal.
pub fn holds(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|got| holds(got, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(x, y)| holds(x, y))
        }
        _ => actual == expected,
    }
}

/// The `value`s of a group's `members`, sorted.
pub fn member_values(group: &Value) -> Vec<String> {
    let mut out: Vec<String> = group["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {group}"))
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// Replays a fixture against a new SCIM directory of `org`; the ids it
/// saved, by name.
async fn replay(app: &TestApp, org: &str, fixture: &str) -> (ScimDir, HashMap<String, String>) {
    let fixture: Value = serde_json::from_str(fixture).unwrap();
    let dir = app
        .scim_directory(org, fixture["provider"].as_str().unwrap())
        .await;
    let mut ids = HashMap::new();
    for step in fixture["steps"].as_array().unwrap() {
        let step: Value = serde_json::from_str(&substitute(&step.to_string(), &ids)).unwrap();
        let name = step["name"].as_str().unwrap();
        let method = Method::from_bytes(step["method"].as_str().unwrap().as_bytes()).unwrap();
        let url = format!("{}{}", dir.url, step["path"].as_str().unwrap());
        let body = step.get("body");
        let (status, headers, answer) = app.scim(method, &url, &dir.token, body).await;
        let expect = &step["expect"];
        assert_eq!(
            status.as_u16(),
            expect["status"].as_u64().unwrap() as u16,
            "{name}: {answer}"
        );
        if status != 204 {
            assert_eq!(
                headers["content-type"], "application/scim+json",
                "{name}: the media type"
            );
        }
        if let Some(want) = expect.get("body") {
            assert!(
                holds(&answer, want),
                "{name}: the answer\n{answer:#}\ndoes not hold\n{want:#}"
            );
        }
        for key in expect["absent"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap();
            assert!(
                answer.get(key).is_none(),
                "{name}: {key} answered: {answer}"
            );
        }
        if let Some(members) = expect.get("members") {
            let mut want: Vec<String> = members
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
                .collect();
            want.sort();
            assert_eq!(member_values(&answer), want, "{name}: the members");
        }
        if let Some(save) = step["save"].as_str() {
            let id = answer["id"].as_str().unwrap().to_owned();
            if status == 201 {
                assert_eq!(
                    headers["location"].to_str().unwrap(),
                    format!(
                        "{}/{}/{id}",
                        dir.url,
                        answer["meta"]["resourceType"].as_str().unwrap().to_owned() + "s"
                    ),
                    "{name}: Location"
                );
                assert_eq!(headers["etag"].to_str().unwrap(), answer["meta"]["version"]);
            }
            ids.insert(save.to_owned(), id);
        }
    }
    (dir, ids)
}

/// The Char user with this id in a list answer.
fn char_user<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

/// A Char user's fields, checked whole.
#[allow(clippy::too_many_arguments)]
fn assert_char_user(
    list: &Value,
    dir: &str,
    id: &str,
    email: &str,
    first: &str,
    last: &str,
    state: &str,
    idp_id: &str,
) -> Value {
    let u = char_user(list, id);
    assert_eq!(keys(u).len(), 12, "{u}");
    assert_eq!(u["directory_id"], dir, "{u}");
    assert_eq!(u["workos_directory_user_id"], id, "{u}");
    assert_eq!(u["email"], email, "{u}");
    assert_eq!(u["first_name"], first, "{u}");
    assert_eq!(u["last_name"], last, "{u}");
    assert_eq!(u["state"], state, "{u}");
    assert_eq!(u["idp_id"], idp_id, "{u}");
    assert_eq!(u["user_id"], Value::Null, "{u}");
    let raw: Value = serde_json::from_str(u["raw_attributes"].as_str().unwrap()).unwrap();
    assert_eq!(raw["id"], id);
    assert!(
        raw.get("meta").is_none() && raw.get("password").is_none(),
        "{raw}"
    );
    raw
}

#[tokio::test]
async fn an_okta_provisioning_sequence_leaves_the_char_answers_okta_meant() {
    let app = spawn_app().await;
    let (dir, ids) = replay(&app, ORG_A, OKTA).await;
    let token = token_for(ORG_A);

    let (status, list) = app
        .get_json(&format!("/api/directories/{}/users", dir.id), &token)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let order: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [&ids["user:test"], &ids["user:bob"], &ids["user:carol"]]
    );
    let raw = assert_char_user(
        &list,
        &dir.id,
        &ids["user:test"],
        "test.user@okta.local",
        "Another",
        "User",
        "active",
        "00ujl29u0le5T6Aj10h7",
    );
    assert_eq!(raw["displayName"], "Another User");
    assert_eq!(raw["locale"], "en-US");
    assert!(raw.get("groups").is_none(), "{raw}");
    assert_char_user(
        &list,
        &dir.id,
        &ids["user:bob"],
        "bob.jones@okta.local",
        "Bob",
        "Jones",
        "inactive",
        "00ujl29u0le5T6Aj10h8",
    );
    assert_char_user(
        &list,
        &dir.id,
        &ids["user:carol"],
        "carol.white@okta.local",
        "Carol",
        "White",
        "inactive",
        "00ujl29u0le5T6Aj10h9",
    );
    let (_, active) = app
        .get_json(
            &format!("/api/directories/{}/users?state=active", dir.id),
            &token,
        )
        .await;
    assert_eq!(emails(&active), ["test.user@okta.local"]);

    let (status, groups) = app
        .get_json(&format!("/api/directories/{}/groups", dir.id), &token)
        .await;
    assert_eq!(status, 200, "{groups}");
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["id"], ids["group:eng"]);
    assert_eq!(groups[0]["workos_directory_group_id"], ids["group:eng"]);
    assert_eq!(groups[0]["name"], "Engineering");
    assert_eq!(groups[0]["idp_id"], Value::Null);
    assert_eq!(groups[0]["directory_id"], dir.id);

    let (_, d) = app
        .get_json(&format!("/api/directories/{}", dir.id), &token)
        .await;
    assert_eq!(d["type"], "okta_scim", "{d}");
    assert_eq!(d["organization_id"], ORG_A, "{d}");
    assert_eq!(d["user_count"], 3, "{d}");
    assert_eq!(d["group_count"], 1, "{d}");
    assert_eq!(d["state"], "active", "{d}");
}

#[tokio::test]
async fn an_entra_provisioning_sequence_leaves_the_char_answers_entra_meant() {
    let app = spawn_app().await;
    let (dir, ids) = replay(&app, ORG_B, ENTRA).await;
    let token = token_for(ORG_B);

    let (status, list) = app
        .get_json(&format!("/api/directories/{}/users", dir.id), &token)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "chloe was deleted: {list}"
    );
    let raw = assert_char_user(
        &list,
        &dir.id,
        &ids["user:ada"],
        "updatedEmail@microsoft.com",
        "givenName",
        "updatedFamilyName",
        "active",
        "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    );
    assert_eq!(
        raw["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        json!({"department": "Engineering", "costCenter": "CC-42"})
    );
    assert_eq!(
        raw["schemas"],
        json!([
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ])
    );
    let raw = assert_char_user(
        &list,
        &dir.id,
        &ids["user:brian"],
        "brian@testuser.com",
        "Brian",
        "Brown",
        "inactive",
        "1b32e1e3-9e3b-4f9f-a0a9-8474d5bfe5f0",
    );
    assert_eq!(raw["active"], false, "stored as a boolean: {raw}");

    let (_, groups) = app
        .get_json(&format!("/api/directories/{}/groups", dir.id), &token)
        .await;
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["id"], ids["group:g"]);
    assert_eq!(
        groups[0]["name"],
        "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    );
    assert_eq!(groups[0]["idp_id"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");

    let (_, d) = app
        .get_json(&format!("/api/directories/{}", dir.id), &token)
        .await;
    assert_eq!(d["type"], "azure_scim", "{d}");
    assert_eq!(d["user_count"], 2, "{d}");
    assert_eq!(d["group_count"], 1, "{d}");

    // The other organization sees none of it.
    let (status, _) = app
        .get_json(
            &format!("/api/directories/{}/users", dir.id),
            &token_for(ORG_A),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_char_email_is_the_primary_then_the_work_then_the_first_then_the_user_name() {
    let app = spawn_app().await;
    let dir = app.scim_directory(ORG_A, "generic").await;
    let cases = [
        (
            json!({"userName": "u1", "emails": [
                {"value": "work1@x.test", "type": "work"},
                {"value": "primary1@x.test", "type": "home", "primary": true}]}),
            "primary1@x.test",
        ),
        (
            json!({"userName": "u2", "emails": [
                {"value": "home2@x.test", "type": "home"},
                {"value": "work2@x.test", "type": "work"}]}),
            "work2@x.test",
        ),
        (
            json!({"userName": "u3", "emails": [
                {"value": "first3@x.test", "type": "home"},
                {"value": "other3@x.test", "type": "other"}]}),
            "first3@x.test",
        ),
        (json!({"userName": "name4@x.test"}), "name4@x.test"),
        (json!({"userName": "plain5"}), ""),
    ];
    for (body, _) in &cases {
        let (status, _, answer) = app
            .scim(
                Method::POST,
                &format!("{}/Users", dir.url),
                &dir.token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let (_, list) = app
        .get_json(
            &format!("/api/directories/{}/users", dir.id),
            &token_for(ORG_A),
        )
        .await;
    let want: Vec<&str> = cases.iter().map(|(_, e)| *e).collect();
    assert_eq!(emails(&list), want);
    let (_, d) = app
        .get_json(&format!("/api/directories/{}", dir.id), &token_for(ORG_A))
        .await;
    assert_eq!(d["type"], "generic_scim");
}

#[tokio::test]
async fn each_provider_names_its_char_type() {
    let app = spawn_app().await;
    for (provider, kind) in [
        ("okta", "okta_scim"),
        ("entra", "azure_scim"),
        ("onelogin", "onelogin_scim"),
        ("jumpcloud", "jump_cloud_scim"),
        ("generic", "generic_scim"),
    ] {
        let dir = app.scim_directory("org_types", provider).await;
        let (_, d) = app
            .get_json(
                &format!("/api/directories/{}", dir.id),
                &token_for("org_types"),
            )
            .await;
        assert_eq!(d["type"], kind, "{provider}: {d}");
        assert_eq!(d["user_count"], 0);
    }
}
