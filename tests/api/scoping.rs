//! Signed events are scoped to what they name. WorkOS signs per environment,
//! not per organization, so a validly signed event can still contradict what
//! is stored: ACME's user id under Globex's directory, ACME's directory
//! under Globex's organization. Such an event changes nothing — answered
//! `"outcome":"conflict"` so WorkOS does not retry it forever — and every
//! other organization's answers stay byte-identical.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

/// ACME (directory_A: a user, a group, a membership) and Globex
/// (directory_B, empty).
async fn two_tenants() -> TestApp {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 1),
        activated("directory_B", ORG_B, 1),
        user_event(
            "created",
            user("directory_A", "directory_user_acme", "ada@acme.test", 2),
            2,
        ),
        group_event(
            "created",
            group("directory_A", "directory_group_acme", "Admins", 2),
            2,
        ),
        member_event(
            "user_added",
            "directory_A",
            user("directory_A", "directory_user_acme", "ada@acme.test", 2),
            group("directory_A", "directory_group_acme", "Admins", 2),
            3,
        ),
    ])
    .await;
    app
}

/// Every answer both organizations can get, raw.
async fn everything(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for org in [ORG_A, ORG_B] {
        let token = token_for(org);
        let (_, list) = app.get_raw("/api/directories", &token).await;
        out.push((format!("{org} directories"), list.clone()));
        let dirs: Value = serde_json::from_slice(&list).unwrap();
        for d in dirs.as_array().unwrap() {
            let id = d["id"].as_str().unwrap();
            for path in ["users", "groups"] {
                let path = format!("/api/directories/{id}/{path}");
                let (status, body) = app.get_raw(&path, &token).await;
                assert_eq!(status, StatusCode::OK);
                out.push((path, body));
            }
        }
    }
    out
}

async fn assert_conflict(app: &TestApp, event: Value) {
    let resp = app.post_event(&event).await;
    assert_eq!(resp.status(), StatusCode::OK, "acknowledged, not retried");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"received": true, "outcome": "conflict"}),
        "{}",
        event["event"]
    );
}

#[tokio::test]
async fn a_user_or_group_event_naming_another_directory_changes_nothing() {
    let app = two_tenants().await;
    let before = everything(&app).await;

    let hijacked = with(
        user(
            "directory_B",
            "directory_user_acme",
            "mallory@globex.test",
            50,
        ),
        "first_name",
        json!("Mallory"),
    );
    assert_conflict(&app, user_event("updated", hijacked.clone(), 50)).await;
    assert_conflict(&app, user_event("deleted", hijacked.clone(), 51)).await;
    let hijacked_group = group("directory_B", "directory_group_acme", "Owned", 50);
    assert_conflict(&app, group_event("updated", hijacked_group.clone(), 50)).await;
    assert_conflict(&app, group_event("deleted", hijacked_group.clone(), 51)).await;
    for kind in ["user_added", "user_removed"] {
        assert_conflict(
            &app,
            member_event(
                kind,
                "directory_B",
                hijacked.clone(),
                hijacked_group.clone(),
                52,
            ),
        )
        .await;
    }

    assert_eq!(everything(&app).await, before, "nothing changed anywhere");
}

#[tokio::test]
async fn a_directory_event_naming_another_organization_changes_nothing() {
    let app = two_tenants().await;
    let before = everything(&app).await;

    // The attack run moved ACME's directory (and its users) to Globex this way.
    let mut moved = directory(
        "directory_A",
        ORG_B,
        "Directory directory_A",
        "okta scim v2.0",
        "active",
        60,
    );
    assert_conflict(&app, envelope("dsync.activated", moved.clone(), 60)).await;
    moved["state"] = json!("deleting");
    assert_conflict(&app, envelope("dsync.deleted", moved, 61)).await;

    assert_eq!(everything(&app).await, before, "nothing changed anywhere");
    let (_, globex) = app.get_json("/api/directories", &token_for(ORG_B)).await;
    assert_eq!(
        globex.as_array().unwrap().len(),
        1,
        "Globex still has only its own"
    );
}

#[tokio::test]
async fn the_real_owner_can_still_change_its_records_afterwards() {
    let app = two_tenants().await;
    assert_conflict(
        &app,
        user_event(
            "deleted",
            user("directory_B", "directory_user_acme", "ada@acme.test", 50),
            50,
        ),
    )
    .await;
    // No tombstone was left by the refused deletion: ACME's own update lands.
    app.send_all(&[user_event(
        "updated",
        with(
            user("directory_A", "directory_user_acme", "ada@acme.test", 55),
            "first_name",
            json!("Augusta"),
        ),
        55,
    )])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let (_, users) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;
    assert_eq!(users[0]["first_name"], "Augusta");
}
