//! `GET /api/directories` and `GET /api/directories/{id}`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

const DIRECTORY_KEYS: [&str; 11] = [
    "id",
    "organization_id",
    "workos_directory_id",
    "name",
    "type",
    "state",
    "domain",
    "created_at",
    "updated_at",
    "user_count",
    "group_count",
];

#[tokio::test]
async fn directories_lists_only_the_callers_organization_in_creation_order() {
    let app = spawn_app().await;
    let mut google = directory(
        "directory_A2",
        ORG_A,
        "Acme Google",
        "gsuite directory",
        "invalid_credentials",
        2,
    );
    google["domains"] = json!([]);
    app.send_all(&[
        activated("directory_A1", ORG_A, 1),
        activated("directory_B1", ORG_B, 1),
        envelope("dsync.activated", google, 2),
        user_event(
            "created",
            user("directory_A1", "directory_user_1", "a@acme.test", 3),
            3,
        ),
        user_event(
            "created",
            user("directory_A1", "directory_user_2", "b@acme.test", 4),
            4,
        ),
        group_event(
            "created",
            group("directory_A1", "directory_group_1", "Eng", 5),
            5,
        ),
    ])
    .await;

    let (status, list) = app.get_json("/api/directories", &token_for(ORG_A)).await;

    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    for d in list {
        assert_eq!(keys(d), DIRECTORY_KEYS);
        assert_eq!(d["organization_id"], ORG_A);
    }
    assert_eq!(list[0]["workos_directory_id"], "directory_A1");
    assert_eq!(list[0]["name"], "Directory directory_A1");
    assert_eq!(list[0]["type"], "okta_scim");
    assert_eq!(list[0]["state"], "active");
    assert_eq!(list[0]["domain"], "acme.test");
    assert_eq!(list[0]["user_count"], 2);
    assert_eq!(list[0]["group_count"], 1);
    assert_eq!(list[1]["workos_directory_id"], "directory_A2");
    assert_eq!(list[1]["type"], "google_workspace");
    assert_eq!(list[1]["state"], "inactive");
    assert_eq!(list[1]["domain"], Value::Null);
    assert_eq!(list[1]["user_count"], 0);
}

#[tokio::test]
async fn an_organization_without_directories_lists_an_empty_array() {
    let app = spawn_app().await;
    app.send_all(&[activated("directory_B1", ORG_B, 1)]).await;

    let (status, body) = app.get_raw("/api/directories", &token_for(ORG_A)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"[]");
}

#[tokio::test]
async fn get_directory_returns_the_same_object_as_the_list() {
    let app = spawn_app().await;
    app.send_all(&[activated("directory_A1", ORG_A, 1)]).await;
    let (_, list) = app.get_json("/api/directories", &token_for(ORG_A)).await;
    let id = list[0]["id"].as_str().unwrap();

    let (status, one) = app
        .get_json(&format!("/api/directories/{id}"), &token_for(ORG_A))
        .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, list[0]);
}

#[tokio::test]
async fn another_orgs_directory_is_byte_identical_to_a_random_uuid() {
    let app = spawn_app().await;
    app.send_all(&[activated("directory_B1", ORG_B, 1)]).await;
    let theirs = directory_id(&app, ORG_B, "directory_B1").await;
    let random = uuid::Uuid::now_v7().to_string();
    let token = token_for(ORG_A);

    for suffix in ["", "/users", "/groups"] {
        let (s1, b1) = app
            .get_raw(&format!("/api/directories/{theirs}{suffix}"), &token)
            .await;
        let (s2, b2) = app
            .get_raw(&format!("/api/directories/{random}{suffix}"), &token)
            .await;
        assert_eq!(s1, StatusCode::NOT_FOUND, "{suffix}");
        assert_eq!(s2, StatusCode::NOT_FOUND, "{suffix}");
        assert_eq!(b1, b2, "bodies for {suffix} must not tell the two apart");
    }
}
