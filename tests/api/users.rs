//! `GET /api/directories/{id}/users` — the seed endpoint.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

const USER_KEYS: [&str; 12] = [
    "id",
    "directory_id",
    "user_id",
    "workos_directory_user_id",
    "email",
    "first_name",
    "last_name",
    "state",
    "raw_attributes",
    "idp_id",
    "created_at",
    "updated_at",
];

fn is_rfc3339_utc(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| uuid::Uuid::try_parse(s).is_ok())
}

#[tokio::test]
async fn list_users_returns_exactly_the_twelve_keys_with_nulls_as_null() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_full", "Ada@Acme.test", 1),
            1,
        ),
        user_event(
            "created",
            bare_user("directory_A", "directory_user_bare", "bare@acme.test", 2),
            2,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;

    let (status, list) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;

    assert_eq!(status, StatusCode::OK);
    let users = list.as_array().unwrap();
    assert_eq!(users.len(), 2);
    for u in users {
        assert_eq!(keys(u), USER_KEYS, "key set and order of {u}");
        assert!(is_uuid(&u["id"]));
        assert_eq!(u["directory_id"], dir.as_str());
        assert!(is_rfc3339_utc(&u["created_at"]), "{}", u["created_at"]);
        assert!(is_rfc3339_utc(&u["updated_at"]), "{}", u["updated_at"]);
    }
    let full = &users[0];
    assert_eq!(full["workos_directory_user_id"], "directory_user_full");
    assert_eq!(full["email"], "Ada@Acme.test");
    assert_eq!(full["first_name"], "Ada");
    assert_eq!(full["last_name"], "Lovelace");
    assert_eq!(full["state"], "active");
    assert_eq!(full["idp_id"], "idp-directory_user_full");
    assert_eq!(full["user_id"], Value::Null);
    let raw = full["raw_attributes"]
        .as_str()
        .expect("raw_attributes is a JSON string");
    assert_eq!(
        serde_json::from_str::<Value>(raw).unwrap(),
        json!({"userName": "Ada@Acme.test", "title": "Engineer", "active": true})
    );

    let bare = &users[1];
    assert_eq!(bare["workos_directory_user_id"], "directory_user_bare");
    assert_eq!(bare["first_name"], Value::Null);
    assert_eq!(bare["last_name"], Value::Null);
    assert_eq!(bare["raw_attributes"], Value::Null);
    assert_eq!(bare["idp_id"], Value::Null, "an empty idp_id is null");
    assert_eq!(bare["state"], "inactive", "suspended maps to inactive");
}

#[tokio::test]
async fn users_come_in_creation_order_and_updates_keep_id_and_created_at() {
    let app = spawn_app().await;
    let mut events = vec![activated("directory_A", ORG_A, 0)];
    for i in 0..25 {
        let email = format!("u{i:02}@acme.test");
        events.push(user_event(
            "created",
            user(
                "directory_A",
                &format!("directory_user_{i:02}"),
                &email,
                10 + i,
            ),
            10 + i,
        ));
    }
    app.send_all(&events).await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let path = format!("/api/directories/{dir}/users");
    let (_, before) = app.get_json(&path, &token_for(ORG_A)).await;

    // An update to an early user must not move it or change its identity.
    let renamed = with(
        user("directory_A", "directory_user_03", "u03@acme.test", 100),
        "first_name",
        json!("Renamed"),
    );
    app.send_all(&[user_event("updated", renamed, 100)]).await;
    let (_, after) = app.get_json(&path, &token_for(ORG_A)).await;

    let expected: Vec<String> = (0..25).map(|i| format!("u{i:02}@acme.test")).collect();
    assert_eq!(emails(&before), expected);
    assert_eq!(emails(&after), expected);
    let ids: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "UUIDv7 ids sort in creation order");
    assert_eq!(before[3]["id"], after[3]["id"]);
    assert_eq!(before[3]["created_at"], after[3]["created_at"]);
    assert_eq!(after[3]["first_name"], "Renamed");
    assert!(after[3]["updated_at"].as_str() >= before[3]["updated_at"].as_str());
}

#[tokio::test]
async fn an_empty_directory_lists_an_empty_array() {
    let app = spawn_app().await;
    app.send_all(&[activated("directory_E", ORG_A, 0)]).await;
    let dir = directory_id(&app, ORG_A, "directory_E").await;

    let (status, body) = app
        .get_raw(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"[]");
}

#[tokio::test]
async fn list_users_of_another_org_is_404() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_B", ORG_B, 0),
        user_event(
            "created",
            user("directory_B", "directory_user_b", "b@globex.test", 1),
            1,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_B, "directory_B").await;

    let (status, body) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(body["data"]["code"], "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn list_responses_are_json_and_not_cacheable() {
    let app = spawn_app().await;
    app.send_all(&[activated("directory_A", ORG_A, 0)]).await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;

    let resp = app
        .get(
            &format!("/api/directories/{dir}/users"),
            Some(&token_for(ORG_A)),
        )
        .await;

    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "no-store");
}
