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
        let (status, headers, answer) = app.scim(method.clone(), &url, &dir.token, body).await;
        // A group PATCH answers 204: what it did is checked on the group.
        let answer = if status == 204 && method == Method::PATCH {
            scim_get(app, &dir, step["path"].as_str().unwrap()).await
        } else {
            answer
        };
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

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn post(app: &TestApp, dir: &ScimDir, endpoint: &str, body: Value) -> Value {
    let (status, _, answer) = app
        .scim(
            Method::POST,
            &format!("{}/{endpoint}", dir.url),
            &dir.token,
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn patch(app: &TestApp, dir: &ScimDir, path: &str, ops: Value) -> Value {
    let (status, _, answer) = app
        .scim(
            Method::PATCH,
            &format!("{}{path}", dir.url),
            &dir.token,
            Some(&json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await;
    if status == 204 && path.starts_with("/Groups") {
        // A group PATCH answers 204: the group as it now is.
        return scim_get(app, dir, path).await;
    }
    assert_eq!(status, 200, "{path} {ops}: {answer}");
    answer
}

async fn scim_get(app: &TestApp, dir: &ScimDir, path: &str) -> Value {
    let (status, _, answer) = app
        .scim(Method::GET, &format!("{}{path}", dir.url), &dir.token, None)
        .await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

async fn char_users(app: &TestApp, org: &str, dir: &ScimDir) -> Value {
    let (status, list) = app
        .get_json(
            &format!("/api/directories/{}/users", dir.id),
            &token_for(org),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list
}

#[tokio::test]
async fn scim_users_link_to_authkit_users_by_email_as_workos_users_do() {
    use crate::workos::*;
    let app = spawn_app().await;
    app.send_all(&[
        authkit_event("created", authkit_user("user_01", "Ada@Example.test", 1), 1),
        member_of("user_01", ORG_A, 1),
    ])
    .await;
    let a = app.scim_directory(ORG_A, "okta").await;
    let b = app.scim_directory(ORG_B, "okta").await;
    let ada = post(
        &app,
        &a,
        "Users",
        json!({"userName": "ada", "emails": [{"value": "ada@EXAMPLE.test", "primary": true}]}),
    )
    .await;
    post(
        &app,
        &b,
        "Users",
        json!({"userName": "ada", "emails": [{"value": "ada@example.test", "primary": true}]}),
    )
    .await;
    let bob = post(&app, &a, "Users", json!({"userName": "bob@example.test"})).await;

    let list = char_users(&app, ORG_A, &a).await;
    assert_eq!(
        char_user(&list, ada["id"].as_str().unwrap())["user_id"],
        "user_01"
    );
    assert_eq!(
        char_user(&list, bob["id"].as_str().unwrap())["user_id"],
        Value::Null
    );
    let list = char_users(&app, ORG_B, &b).await;
    assert_eq!(
        list[0]["user_id"],
        Value::Null,
        "not a member of org B: {list}"
    );

    // An AuthKit user arriving after the SCIM user links it.
    app.send_all(&[
        authkit_event("created", authkit_user("user_02", "BOB@example.test", 2), 2),
        member_of("user_02", ORG_A, 2),
    ])
    .await;
    let list = char_users(&app, ORG_A, &a).await;
    assert_eq!(
        char_user(&list, bob["id"].as_str().unwrap())["user_id"],
        "user_02"
    );

    // An email change through SCIM moves the link.
    let ada_id = ada["id"].as_str().unwrap();
    patch(
        &app,
        &a,
        &format!("/Users/{ada_id}"),
        json!([{"op": "replace", "path": "emails", "value": [{"value": "bob@example.test", "primary": true}]}]),
    )
    .await;
    let list = char_users(&app, ORG_A, &a).await;
    assert_eq!(char_user(&list, ada_id)["email"], "bob@example.test");
    assert_eq!(char_user(&list, ada_id)["user_id"], "user_02");

    // The membership ending, then the AuthKit user's deletion, unlink.
    let bob_id = bob["id"].as_str().unwrap();
    app.send_all(&[org_membership_event(
        "deleted",
        org_membership(
            &format!("om_user_02_{ORG_A}"),
            "user_02",
            ORG_A,
            "active",
            3,
        ),
        3,
    )])
    .await;
    let list = char_users(&app, ORG_A, &a).await;
    assert_eq!(char_user(&list, bob_id)["user_id"], Value::Null, "{list}");
    assert_eq!(char_user(&list, ada_id)["user_id"], Value::Null, "{list}");
    app.send_all(&[
        member_of("user_02", ORG_A, 4),
        authkit_event("deleted", authkit_user("user_02", "bob@example.test", 5), 5),
    ])
    .await;
    let list = char_users(&app, ORG_A, &a).await;
    assert_eq!(char_user(&list, bob_id)["user_id"], Value::Null, "{list}");
}

#[tokio::test]
async fn char_list_answers_follow_every_scim_write() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let ann = post(&app, &d, "Users", json!({"userName": "ann@example.test"})).await;
    let ann_id = ann["id"].as_str().unwrap().to_owned();
    let token = token_for(ORG_A);
    let path = format!("/api/directories/{}/users", d.id);
    let gpath = format!("/api/directories/{}/groups", d.id);
    let etag_of = |resp: &reqwest::Response| resp.headers()["etag"].to_str().unwrap().to_owned();

    let first = app.get(&path, Some(&token)).await;
    assert_eq!(first.status(), 200);
    let etag = etag_of(&first);
    let gfirst = app.get(&gpath, Some(&token)).await;
    let getag = etag_of(&gfirst);
    // Warm the cache, then change through SCIM.
    let _ = app.get(&path, Some(&token)).await;
    patch(
        &app,
        &d,
        &format!("/Users/{ann_id}"),
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a stale ETag must not be answered 304");
    let etag2 = etag_of(&resp);
    assert_ne!(etag2, etag);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list[0]["state"], "inactive");

    let group = post(
        &app,
        &d,
        "Groups",
        json!({"displayName": "g", "members": [{"value": ann_id}]}),
    )
    .await;
    let resp = app
        .client
        .get(format!("{}{gpath}", app.base))
        .bearer_auth(&token)
        .header("if-none-match", &getag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let groups: Value = resp.json().await.unwrap();
    assert_eq!(groups[0]["id"], group["id"]);

    let (status, _, _) = app
        .scim(
            Method::DELETE,
            &format!("{}/Users/{ann_id}", d.url),
            &d.token,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, list) = app.get_json(&path, &token).await;
    assert_eq!(list, json!([]));
    let (_, dd) = app
        .get_json(&format!("/api/directories/{}", d.id), &token)
        .await;
    assert_eq!(
        (dd["user_count"].clone(), dd["group_count"].clone()),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn group_membership_changes_do_exactly_what_they_say() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "entra").await;
    let mut ids = Vec::new();
    for n in ["u1", "u2", "u3", "u4"] {
        ids.push(
            post(&app, &d, "Users", json!({"userName": n})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let sorted = |v: &[&String]| {
        let mut v: Vec<String> = v.iter().map(|s| (*s).clone()).collect();
        v.sort();
        v
    };
    let g = post(
        &app,
        &d,
        "Groups",
        json!({"displayName": "g", "members": [{"value": ids[0]}, {"value": ids[1]}]}),
    )
    .await;
    let gid = g["id"].as_str().unwrap().to_owned();
    let gpath = format!("/Groups/{gid}");
    assert_eq!(member_values(&g), sorted(&[&ids[0], &ids[1]]));

    // Remove then add the same member in one request: it stays.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([
            {"op": "Remove", "path": "members", "value": [{"value": ids[0]}]},
            {"op": "Add", "path": "members", "value": [{"value": ids[0]}, {"value": ids[2]}]}
        ]),
    )
    .await;
    assert_eq!(member_values(&out), sorted(&[&ids[0], &ids[1], &ids[2]]));
    assert_eq!(
        member_values(&scim_get(&app, &d, &gpath).await),
        sorted(&[&ids[0], &ids[1], &ids[2]])
    );

    // Add then remove in one request: it goes.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([
            {"op": "add", "path": "members", "value": [{"value": ids[3]}]},
            {"op": "remove", "path": format!("members[value eq \"{}\"]", ids[3])}
        ]),
    )
    .await;
    assert_eq!(member_values(&out), sorted(&[&ids[0], &ids[1], &ids[2]]));
    assert_eq!(
        member_values(&scim_get(&app, &d, &gpath).await),
        sorted(&[&ids[0], &ids[1], &ids[2]])
    );

    // Replace the whole list.
    let out = patch(&app, &d, &gpath, json!([{"op": "Replace", "path": "members", "value": [{"value": ids[3]}, {"value": ids[1]}]}])).await;
    assert_eq!(member_values(&out), sorted(&[&ids[1], &ids[3]]));

    // A value array naming two of them removes those two only.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([{"op": "Remove", "path": "members", "value": [{"value": ids[3]}]}]),
    )
    .await;
    assert_eq!(member_values(&out), [ids[1].clone()]);

    // PUT sets exactly the members named.
    let (status, _, out) = app
        .scim(
            Method::PUT,
            &format!("{}{gpath}", d.url),
            &d.token,
            Some(&json!({"displayName": "g2", "members": [{"value": ids[2]}, {"value": ids[0]}]})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(member_values(&out), sorted(&[&ids[0], &ids[2]]));
    assert_eq!(
        member_values(&scim_get(&app, &d, &gpath).await),
        sorted(&[&ids[0], &ids[2]])
    );

    // Remove every member.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([{"op": "remove", "path": "members"}]),
    )
    .await;
    assert_eq!(
        out.get("members")
            .map_or(0, |m| m.as_array().unwrap().len()),
        0,
        "{out}"
    );
    let got = scim_get(&app, &d, &gpath).await;
    assert_eq!(
        got.get("members")
            .map_or(0, |m| m.as_array().unwrap().len()),
        0,
        "{got}"
    );

    // A user's deletion moves the version of the groups it was in.
    patch(
        &app,
        &d,
        &gpath,
        json!([{"op": "add", "path": "members", "value": [{"value": ids[1]}]}]),
    )
    .await;
    let (_, headers, _) = app
        .scim(Method::GET, &format!("{}{gpath}", d.url), &d.token, None)
        .await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = app
        .scim(
            Method::DELETE,
            &format!("{}/Users/{}", d.url, ids[1]),
            &d.token,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, headers, got) = app
        .scim(Method::GET, &format!("{}{gpath}", d.url), &d.token, None)
        .await;
    assert_ne!(headers["etag"].to_str().unwrap(), etag);
    assert_eq!(
        got.get("members")
            .map_or(0, |m| m.as_array().unwrap().len()),
        0,
        "{got}"
    );

    // Deleting a group keeps its users.
    let (status, _, _) = app
        .scim(Method::DELETE, &format!("{}{gpath}", d.url), &d.token, None)
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = app
        .scim(Method::GET, &format!("{}{gpath}", d.url), &d.token, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(scim_get(&app, &d, "/Users").await["totalResults"], 3);
    let (_, dd) = app
        .get_json(&format!("/api/directories/{}", d.id), &token_for(ORG_A))
        .await;
    assert_eq!(
        (dd["user_count"].clone(), dd["group_count"].clone()),
        (json!(3), json!(0))
    );
}

#[tokio::test]
async fn entra_shapes_filters_projections_and_the_root_search() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "entra").await;
    let ann = post(&app, &d, "Users", json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": "ann@contoso.test", "externalId": "ext-ann", "active": "False",
        "emails": [{"type": "work", "value": "Ann.Work@contoso.test", "primary": "true"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"}
    })).await;
    assert_eq!(ann["active"], false);
    assert_eq!(ann["emails"][0]["primary"], true);
    let ann_id = ann["id"].as_str().unwrap().to_owned();
    let bob = post(
        &app,
        &d,
        "Users",
        json!({"userName": "bob@contoso.test", "externalId": "ext-bob", "active": true}),
    )
    .await;
    post(
        &app,
        &d,
        "Groups",
        json!({"displayName": "Ops", "externalId": "ext-ops", "members": [{"value": ann_id}]}),
    )
    .await;
    post(&app, &d, "Groups", json!({"displayName": "Dev"})).await;

    let list = char_users(&app, ORG_A, &d).await;
    let u = char_user(&list, &ann_id);
    assert_eq!(u["state"], "inactive");
    assert_eq!(u["email"], "Ann.Work@contoso.test");

    for (filter, want) in [
        ("externalId eq \"ext-bob\"", vec![bob["id"].clone()]),
        (
            "emails[type eq \"work\"].value eq \"ann.work@contoso.test\"",
            vec![json!(ann_id)],
        ),
        ("active eq false", vec![json!(ann_id)]),
        ("active eq true", vec![bob["id"].clone()]),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"Ops\"",
            vec![json!(ann_id)],
        ),
        ("userName eq \"nobody@contoso.test\"", vec![]),
    ] {
        let got = scim_get(&app, &d, &format!("/Users?filter={}", urlencoding(filter))).await;
        let ids: Vec<Value> = got["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(ids, want, "{filter}: {got}");
        assert_eq!(got["totalResults"], want.len(), "{filter}");
    }
    let got = scim_get(&app, &d, "/Groups?filter=externalId%20eq%20%22ext-ops%22").await;
    assert_eq!(got["totalResults"], 1);
    assert_eq!(
        member_values(&got["Resources"][0]),
        std::slice::from_ref(&ann_id)
    );
    let got = scim_get(&app, &d, "/Groups?excludedAttributes=members").await;
    assert_eq!(got["totalResults"], 2);
    assert!(
        got["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.get("members").is_none()),
        "{got}"
    );

    // attributes= keeps only what is named (and id, schemas, meta).
    let got = scim_get(&app, &d, &format!("/Users/{ann_id}?attributes=userName")).await;
    let mut k = keys(&got);
    k.sort();
    assert_eq!(k, ["id", "meta", "schemas", "userName"], "{got}");

    // The root .search: users then groups, paged as one list.
    let (status, _, all) = app
        .scim(
            Method::POST,
            &format!("{}/.search", d.url),
            &d.token,
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "startIndex": 2, "count": 2
            })),
        )
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["totalResults"], 4);
    let types: Vec<&str> = all["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["meta"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["User", "Group"], "{all}");
    assert_eq!(all["Resources"][0]["id"], bob["id"]);

    // Discovery.
    let spc = scim_get(&app, &d, "/ServiceProviderConfig").await;
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let rt = scim_get(&app, &d, "/ResourceTypes").await;
    assert_eq!(rt["totalResults"], 2);
    let endpoints: Vec<&str> = rt["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints, ["/Users", "/Groups"]);
    let schemas = scim_get(&app, &d, "/Schemas").await;
    let mut ids: Vec<&str> = schemas["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "urn:ietf:params:scim:schemas:core:2.0:Group",
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ]
    );
    let one = scim_get(
        &app,
        &d,
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
    )
    .await;
    assert_eq!(one["id"], "urn:ietf:params:scim:schemas:core:2.0:User");
}

fn urlencoding(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned()
}

#[tokio::test]
async fn member_ids_are_matched_as_ids_whatever_their_case() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "entra").await;
    let u1 = post(&app, &d, "Users", json!({"userName": "u1"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let u2 = post(&app, &d, "Users", json!({"userName": "u2"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = post(
        &app,
        &d,
        "Groups",
        json!({"displayName": "g", "members": [{"value": u1.to_uppercase()}, {"value": u2}]}),
    )
    .await;
    let gpath = format!("/Groups/{}", g["id"].as_str().unwrap());
    let both = {
        let mut v = vec![u1.clone(), u2.clone()];
        v.sort();
        v
    };
    assert_eq!(member_values(&g), both);

    // Replacing the members with the same ids spelled otherwise keeps them.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([{"op": "Replace", "path": "members", "value": [{"value": u1.to_uppercase()}, {"value": u2}]}]),
    )
    .await;
    assert_eq!(member_values(&out), both, "{out}");
    assert_eq!(member_values(&scim_get(&app, &d, &gpath).await), both);

    // Adding one already there changes nothing.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([{"op": "Add", "path": "members", "value": [{"value": u2.to_uppercase()}]}]),
    )
    .await;
    assert_eq!(member_values(&out), both, "{out}");

    // Removing by a value array, in capitals, removes that member.
    let out = patch(
        &app,
        &d,
        &gpath,
        json!([{"op": "Remove", "path": "members", "value": [{"value": u1.to_uppercase()}]}]),
    )
    .await;
    assert_eq!(member_values(&out), std::slice::from_ref(&u2), "{out}");
    assert_eq!(
        member_values(&scim_get(&app, &d, &gpath).await),
        std::slice::from_ref(&u2)
    );
}

#[tokio::test]
async fn filters_see_meta_and_compare_date_times_as_instants() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let first = post(&app, &d, "Users", json!({"userName": "first"})).await;
    let second = post(&app, &d, "Users", json!({"userName": "second"})).await;
    post(&app, &d, "Groups", json!({"displayName": "g"})).await;
    let first_at = first["meta"]["lastModified"].as_str().unwrap().to_owned();
    let second_at = second["meta"]["lastModified"].as_str().unwrap().to_owned();
    // `…:SS.mmmZ` cut to whole seconds: an earlier or equal instant, which
    // sorts after it as text.
    let whole = format!("{}Z", &first_at[..19]);
    let ids = |list: &Value| -> Vec<Value> {
        list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    let both = vec![first["id"].clone(), second["id"].clone()];
    for (filter, want) in [
        (
            "meta.lastModified gt \"2000-01-01T00:00:00Z\"".to_owned(),
            both.clone(),
        ),
        (
            "meta.lastModified lt \"2000-01-01T00:00:00Z\"".to_owned(),
            vec![],
        ),
        (format!("meta.lastModified ge \"{whole}\""), both.clone()),
        (format!("meta.created ge \"{first_at}\""), both.clone()),
        (
            format!("meta.lastModified le \"{second_at}\" and userName eq \"second\""),
            vec![second["id"].clone()],
        ),
        (format!("meta.lastModified lt \"{first_at}\""), vec![]),
        ("meta.resourceType eq \"User\"".to_owned(), both.clone()),
        ("meta.version pr".to_owned(), both.clone()),
    ] {
        let list = scim_get(&app, &d, &format!("/Users?filter={}", urlencoding(&filter))).await;
        assert_eq!(ids(&list), want, "{filter}: {list}");
        assert_eq!(list["totalResults"], want.len(), "{filter}");
    }
    let list = scim_get(
        &app,
        &d,
        &format!(
            "/Groups?filter={}",
            urlencoding("meta.resourceType eq \"Group\"")
        ),
    )
    .await;
    assert_eq!(list["totalResults"], 1);
}

#[tokio::test]
async fn a_patch_marking_an_email_primary_unmarks_the_others_and_moves_the_char_email() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "entra").await;
    let u = post(
        &app,
        &d,
        "Users",
        json!({"userName": "pat", "emails": [{"value": "a@x.test", "type": "work", "primary": true}]}),
    )
    .await;
    let path = format!("/Users/{}", u["id"].as_str().unwrap());
    let primaries = |u: &Value| -> Vec<(String, bool)> {
        u["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["value"].as_str().unwrap().to_owned(),
                    e["primary"] == true,
                )
            })
            .collect()
    };
    let p = |v: &str, b: bool| (v.to_owned(), b);
    for (ops, want, char_email) in [
        (
            json!([{"op": "add", "path": "emails", "value": [{"value": "b@x.test", "type": "home", "primary": true}]}]),
            vec![p("a@x.test", false), p("b@x.test", true)],
            "b@x.test",
        ),
        (
            json!([{"op": "Replace", "path": "emails[value eq \"a@x.test\"].primary", "value": "True"}]),
            vec![p("a@x.test", true), p("b@x.test", false)],
            "a@x.test",
        ),
        (
            json!([{"op": "add", "value": {"emails": [{"value": "c@x.test", "type": "other", "primary": true}]}}]),
            vec![
                p("a@x.test", false),
                p("b@x.test", false),
                p("c@x.test", true),
            ],
            "c@x.test",
        ),
        // Marking nothing new leaves the primary where it is.
        (
            json!([{"op": "add", "path": "emails", "value": [{"value": "d@x.test", "type": "work"}]}]),
            vec![
                p("a@x.test", false),
                p("b@x.test", false),
                p("c@x.test", true),
                p("d@x.test", false),
            ],
            "c@x.test",
        ),
    ] {
        let out = patch(&app, &d, &path, ops.clone()).await;
        assert_eq!(primaries(&out), want, "{ops}: {out}");
        assert_eq!(primaries(&scim_get(&app, &d, &path).await), want, "{ops}");
        let list = char_users(&app, ORG_A, &d).await;
        assert_eq!(list[0]["email"], char_email, "{ops}");
    }
}

#[tokio::test]
async fn a_patch_may_echo_the_resource_as_answered_but_not_change_its_meta() {
    let app = spawn_app().await;
    let d = app.scim_directory(ORG_A, "okta").await;
    let u = post(
        &app,
        &d,
        "Users",
        json!({"userName": "echo", "active": true}),
    )
    .await;
    let uid = u["id"].as_str().unwrap().to_owned();
    let upath = format!("/Users/{uid}");

    // The whole resource as answered, meta included, with one change.
    let mut whole = scim_get(&app, &d, &upath).await;
    whole["active"] = json!(false);
    let out = patch(&app, &d, &upath, json!([{"op": "replace", "value": whole}])).await;
    assert_eq!(out["active"], false, "{out}");
    let list = char_users(&app, ORG_A, &d).await;
    assert_eq!(list[0]["state"], "inactive");
    let raw: Value = serde_json::from_str(list[0]["raw_attributes"].as_str().unwrap()).unwrap();
    assert!(raw.get("meta").is_none(), "meta is never stored: {raw}");

    // A meta that differs is still refused, and changes nothing.
    let mut changed = scim_get(&app, &d, &upath).await;
    changed["meta"]["lastModified"] = json!("2001-01-01T00:00:00.000Z");
    changed["active"] = json!(true);
    let (status, _, answer) = app
        .scim(
            Method::PATCH,
            &format!("{}{upath}", d.url),
            &d.token,
            Some(&json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": changed}]})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["scimType"], "mutability");
    assert_eq!(scim_get(&app, &d, &upath).await["active"], false);

    // A group echoed whole, members as answered, renamed.
    let g = post(
        &app,
        &d,
        "Groups",
        json!({"displayName": "before", "members": [{"value": uid}]}),
    )
    .await;
    let gpath = format!("/Groups/{}", g["id"].as_str().unwrap());
    let mut whole = scim_get(&app, &d, &gpath).await;
    whole["displayName"] = json!("after");
    let out = patch(&app, &d, &gpath, json!([{"op": "replace", "value": whole}])).await;
    assert_eq!(out["displayName"], "after");
    assert_eq!(member_values(&out), std::slice::from_ref(&uid));
    assert_eq!(
        member_values(&scim_get(&app, &d, &gpath).await),
        std::slice::from_ref(&uid)
    );
}
