//! AuthKit users (`user.*` events) set and clear `user_id` on every
//! directory user with the same email, case-insensitively, in any order.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

async fn user_ids(app: &TestApp, org: &str, workos_dir: &str) -> Vec<Value> {
    let dir = directory_id(app, org, workos_dir).await;
    let (_, list) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(org))
        .await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].clone())
        .collect()
}

#[tokio::test]
async fn an_authkit_user_known_first_links_the_directory_user_when_it_arrives() {
    let app = spawn_app().await;
    app.send_all(&[
        authkit_event("created", authkit_user("user_01", "Ada@Example.test", 1), 1),
        activated("directory_A", ORG_A, 2),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "ada@example.TEST", 3),
            3,
        ),
        user_event(
            "created",
            user("directory_A", "directory_user_2", "bob@example.test", 4),
            4,
        ),
    ])
    .await;

    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [json!("user_01"), Value::Null]
    );
}

#[tokio::test]
async fn an_authkit_user_arriving_later_links_every_matching_directory_user() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 1),
        activated("directory_B", ORG_B, 1),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "ada@example.test", 2),
            2,
        ),
        user_event(
            "created",
            user("directory_B", "directory_user_2", "ADA@example.test", 3),
            3,
        ),
    ])
    .await;
    let before = app
        .get_json(
            &format!(
                "/api/directories/{}/users",
                directory_id(&app, ORG_A, "directory_A").await
            ),
            &token_for(ORG_A),
        )
        .await
        .1;

    app.send_all(&[authkit_event(
        "created",
        authkit_user("user_01", "Ada@Example.test", 5),
        5,
    )])
    .await;

    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [json!("user_01")]
    );
    assert_eq!(
        user_ids(&app, ORG_B, "directory_B").await,
        [json!("user_01")]
    );
    let after = app
        .get_json(
            &format!(
                "/api/directories/{}/users",
                directory_id(&app, ORG_A, "directory_A").await
            ),
            &token_for(ORG_A),
        )
        .await
        .1;
    assert_eq!(after[0]["created_at"], before[0]["created_at"]);
    assert!(
        after[0]["updated_at"].as_str() > before[0]["updated_at"].as_str(),
        "linking is a change"
    );
}

#[tokio::test]
async fn deleting_the_authkit_user_unlinks_and_an_email_change_moves_the_link() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 1),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "old@example.test", 2),
            2,
        ),
        user_event(
            "created",
            user("directory_A", "directory_user_2", "new@example.test", 3),
            3,
        ),
        authkit_event("created", authkit_user("user_01", "old@example.test", 4), 4),
    ])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [json!("user_01"), Value::Null]
    );

    app.send_all(&[authkit_event(
        "updated",
        authkit_user("user_01", "new@example.test", 5),
        5,
    )])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, json!("user_01")]
    );

    app.send_all(&[authkit_event(
        "deleted",
        authkit_user("user_01", "new@example.test", 6),
        6,
    )])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, Value::Null]
    );

    // A late, older update does not resurrect the deleted AuthKit user.
    app.send_all(&[authkit_event(
        "updated",
        authkit_user("user_01", "new@example.test", 5),
        5,
    )])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, Value::Null]
    );
}

#[tokio::test]
async fn a_directory_user_changing_email_follows_the_link() {
    let app = spawn_app().await;
    app.send_all(&[
        authkit_event("created", authkit_user("user_01", "ada@example.test", 1), 1),
        activated("directory_A", ORG_A, 1),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "ada@example.test", 2),
            2,
        ),
    ])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [json!("user_01")]
    );

    app.send_all(&[user_event(
        "updated",
        user("directory_A", "directory_user_1", "someone@example.test", 3),
        3,
    )])
    .await;

    assert_eq!(user_ids(&app, ORG_A, "directory_A").await, [Value::Null]);
}
