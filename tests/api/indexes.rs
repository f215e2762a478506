//! Secondary indexes stay consistent: a deleted user disappears from its
//! directory's list, its count and its email index; a changed email moves.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

async fn user_count(app: &TestApp, dir: &str) -> u64 {
    let (_, d) = app
        .get_json(&format!("/api/directories/{dir}"), &token_for(ORG_A))
        .await;
    d["user_count"].as_u64().unwrap()
}

async fn by_email(app: &TestApp, dir: &str, email: &str) -> Value {
    let (status, list) = app
        .get_json(
            &format!("/api/directories/{dir}/users?email={email}"),
            &token_for(ORG_A),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    list
}

#[tokio::test]
async fn a_deleted_user_leaves_the_list_the_count_and_the_email_index() {
    let app = spawn_app().await;
    let doomed = user("directory_A", "directory_user_2", "Doomed@Acme.test", 2);
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "keep@acme.test", 1),
            1,
        ),
        user_event("created", doomed.clone(), 2),
        group_event(
            "created",
            group("directory_A", "directory_group_1", "Eng", 3),
            3,
        ),
        member_event(
            "user_added",
            "directory_A",
            doomed.clone(),
            group("directory_A", "directory_group_1", "Eng", 3),
            4,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    assert_eq!(user_count(&app, &dir).await, 2);
    assert_eq!(
        emails(&by_email(&app, &dir, "doomed@ACME.test").await),
        ["Doomed@Acme.test"]
    );

    app.send_all(&[user_event(
        "deleted",
        with(doomed, "updated_at", json!(t(5))),
        5,
    )])
    .await;

    let (_, list) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;
    assert_eq!(emails(&list), ["keep@acme.test"]);
    assert_eq!(user_count(&app, &dir).await, 1);
    assert_eq!(by_email(&app, &dir, "doomed@acme.test").await, json!([]));
}

#[tokio::test]
async fn a_changed_email_moves_in_the_email_index() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "old@acme.test", 1),
            1,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;

    let moved = user("directory_A", "directory_user_1", "new@acme.test", 2);
    app.send_all(&[user_event("updated", moved, 2)]).await;

    assert_eq!(by_email(&app, &dir, "old@acme.test").await, json!([]));
    assert_eq!(
        emails(&by_email(&app, &dir, "new@acme.test").await),
        ["new@acme.test"]
    );
    assert_eq!(
        user_count(&app, &dir).await,
        1,
        "an update is not a second user"
    );
}

#[tokio::test]
async fn a_deleted_group_leaves_the_list_and_the_count() {
    let app = spawn_app().await;
    let g = group("directory_A", "directory_group_1", "Eng", 1);
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        group_event("created", g.clone(), 1),
        group_event(
            "created",
            group("directory_A", "directory_group_2", "Ops", 2),
            2,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;

    app.send_all(&[group_event(
        "deleted",
        with(g, "updated_at", json!(t(3))),
        3,
    )])
    .await;

    let (_, groups) = app
        .get_json(&format!("/api/directories/{dir}/groups"), &token_for(ORG_A))
        .await;
    let (_, d) = app
        .get_json(&format!("/api/directories/{dir}"), &token_for(ORG_A))
        .await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["name"], "Ops");
    assert_eq!(d["group_count"], 1);
}
