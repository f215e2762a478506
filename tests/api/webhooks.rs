//! `POST /webhooks/workos`: signatures from the attacker's side, body limits,
//! validation, and "2xx only after a durable commit".

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;
use crate::workos::*;

async fn directory_count(app: &TestApp) -> usize {
    let (_, list) = app.get_json("/api/directories", &token_for(ORG_A)).await;
    list.as_array().unwrap().len()
}

#[tokio::test]
async fn a_correctly_signed_event_is_applied_and_acknowledged() {
    let app = spawn_app().await;

    let resp = app.post_event(&activated("directory_A", ORG_A, 0)).await;

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"received": true, "outcome": "applied"})
    );
    assert_eq!(directory_count(&app).await, 1);
}

#[tokio::test]
async fn bad_signatures_are_401_and_change_nothing() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&activated("directory_A", ORG_A, 0)).unwrap();
    let secret = WEBHOOK_SECRET.as_bytes();
    let now = now_ms();
    let good = sign_webhook(secret, &body, now);
    let mut tampered = body.clone();
    let pos = tampered.iter().position(|&b| b == b'A').unwrap();
    tampered[pos] = b'B';

    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("tampered body", tampered, Some(good.clone())),
        (
            "wrong secret",
            body.clone(),
            Some(sign_webhook(b"not-the-secret", &body, now)),
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign_webhook(secret, &body, now - 181_000)),
        ),
        (
            "future timestamp",
            body.clone(),
            Some(sign_webhook(secret, &body, now + 181_000)),
        ),
        ("missing header", body.clone(), None),
        ("garbage header", body.clone(), Some("garbage".into())),
        ("no v1", body.clone(), Some(format!("t={now}"))),
        (
            "no t",
            body.clone(),
            Some(good.split(", ").nth(1).unwrap().to_owned()),
        ),
        (
            "non-hex v1",
            body.clone(),
            Some(format!("t={now}, v1=zzzz")),
        ),
        (
            "seconds, not ms",
            body.clone(),
            Some(sign_webhook(secret, &body, now / 1000)),
        ),
    ];
    for (why, body, header) in cases {
        let resp = app.post_webhook(body, header.as_deref()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{why}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], "UNAUTHORIZED", "{why}");
    }
    assert_eq!(directory_count(&app).await, 0, "nothing was applied");
}

#[tokio::test]
async fn whitespace_around_signature_parts_is_tolerated() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&activated("directory_A", ORG_A, 0)).unwrap();
    let now = now_ms();
    let sig = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now);
    let v1 = sig.split("v1=").nth(1).unwrap();

    let resp = app
        .post_webhook(body, Some(&format!("  t = {now} ,v1={v1}  ")))
        .await;

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(directory_count(&app).await, 1);
}

#[tokio::test]
async fn the_tolerance_is_configurable() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.webhook_tolerance = Duration::from_secs(3600);
    let app = spawn_with(s, Arc::new(dir)).await;
    let body = serde_json::to_vec(&activated("directory_A", ORG_A, 0)).unwrap();

    let old = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms() - 1_800_000);
    let resp = app.post_webhook(body, Some(&old)).await;

    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.max_body_bytes = 4096;
    let app = spawn_with(s, Arc::new(dir)).await;
    let mut event = activated("directory_A", ORG_A, 0);
    event["data"]["name"] = json!("x".repeat(8000));
    let body = serde_json::to_vec(&event).unwrap();
    let sig = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());

    let resp = app.post_webhook(body, Some(&sig)).await;

    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(err["data"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(directory_count(&app).await, 0);
}

#[tokio::test]
async fn malformed_events_are_400_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let mut missing_id = activated("directory_A", ORG_A, 0);
    missing_id["data"].as_object_mut().unwrap().remove("id");
    let mut bad_user = user_event(
        "created",
        user("directory_A", "directory_user_1", "a@acme.test", 1),
        1,
    );
    bad_user["data"]["state"] = json!(5);
    let mut bad_member = member_event(
        "user_added",
        "directory_A",
        user("directory_A", "directory_user_1", "a@acme.test", 1),
        group("directory_A", "directory_group_1", "G", 1),
        1,
    );
    bad_member["data"]["group"]["id"] = json!("user_123");
    let mut no_org = activated("directory_A", ORG_A, 0);
    no_org["data"]["organization_id"] = Value::Null;
    let mut bad_time = activated("directory_A", ORG_A, 0);
    bad_time["created_at"] = json!("yesterday");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "body"),
        (b"[1,2,3]".to_vec(), "body"),
        (serde_json::to_vec(&missing_id).unwrap(), "data.id"),
        (serde_json::to_vec(&bad_user).unwrap(), "data.state"),
        (serde_json::to_vec(&bad_member).unwrap(), "data.group.id"),
        (serde_json::to_vec(&no_org).unwrap(), "data.organization_id"),
        (serde_json::to_vec(&bad_time).unwrap(), "created_at"),
        (
            serde_json::to_vec(&json!({"event": "dsync.activated"})).unwrap(),
            "id",
        ),
    ];
    for (body, field) in cases {
        let sig = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
        let resp = app.post_webhook(body, Some(&sig)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{field}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["data"]["code"], "VALIDATION_ERROR");
        assert_eq!(err["data"]["field"], field);
    }
    assert_eq!(directory_count(&app).await, 0);
}

#[tokio::test]
async fn unknown_event_types_are_acknowledged_and_ignored() {
    let app = spawn_app().await;

    let resp = app
        .post_event(&envelope(
            "connection.activated",
            json!({"id": "conn_1"}),
            0,
        ))
        .await;

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "ignored");
}

#[tokio::test]
async fn without_a_webhook_secret_the_route_does_not_exist() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.webhook_secret = None;
    let app = spawn_with(s, Arc::new(dir)).await;

    let resp = app.post_event(&activated("directory_A", ORG_A, 0)).await;

    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
}

#[tokio::test]
async fn an_acknowledged_event_survives_an_immediate_restart() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "a@acme.test", 1),
            1,
        ),
    ])
    .await;

    let app = app.restart().await;

    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let (_, list) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;
    assert_eq!(emails(&list), ["a@acme.test"]);
}

#[tokio::test]
async fn events_for_an_unknown_directory_are_held_until_it_is_activated() {
    let app = spawn_app().await;
    let early = user_event(
        "created",
        user("directory_L", "directory_user_1", "early@acme.test", 5),
        5,
    );

    let resp = app.post_event(&early).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "held");
    assert_eq!(directory_count(&app).await, 0, "nothing dangling appears");

    let app = app.restart().await;
    app.send_all(&[activated("directory_L", ORG_A, 1)]).await;

    let dir = directory_id(&app, ORG_A, "directory_L").await;
    let (_, list) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;
    assert_eq!(emails(&list), ["early@acme.test"]);
}

#[tokio::test]
async fn events_for_a_deleted_directory_are_dropped_not_held() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_D", ORG_A, 0),
        directory_deleted("directory_D", ORG_A, 10),
    ])
    .await;

    let late = user_event(
        "created",
        user("directory_D", "directory_user_1", "late@acme.test", 5),
        5,
    );
    let resp = app.post_event(&late).await;
    let stale_activation = app.post_event(&activated("directory_D", ORG_A, 1)).await;

    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "stale");
    assert_eq!(
        stale_activation.json::<Value>().await.unwrap()["outcome"],
        "stale"
    );
    assert_eq!(directory_count(&app).await, 0);
}
