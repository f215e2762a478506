//! AuthKit users (`user.*` events) set and clear `user_id` on every
//! directory user with the same email, case-insensitively, in any order —
//! but only in the organizations the AuthKit user is an active member of
//! (`organization_membership.*` events).

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
        member_of("user_01", ORG_A, 1),
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

    app.send_all(&[
        member_of("user_01", ORG_A, 4),
        member_of("user_01", ORG_B, 4),
        authkit_event("created", authkit_user("user_01", "Ada@Example.test", 5), 5),
    ])
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
        member_of("user_01", ORG_A, 4),
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
        member_of("user_01", ORG_A, 1),
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

/// The attack: ACME's IdP adds a user with a Globex person's email. Without
/// the organization check, ACME's API would show that person's AuthKit
/// `user_id` — and `null` for an unknown email: an existence oracle.
#[tokio::test]
async fn another_organizations_authkit_user_is_never_linked_or_revealed() {
    let app = spawn_app().await;
    app.send_all(&[
        authkit_event(
            "created",
            authkit_user("user_globex", "Pat@Globex.test", 1),
            1,
        ),
        member_of("user_globex", ORG_B, 1),
        activated("directory_A", ORG_A, 2),
        activated("directory_B", ORG_B, 2),
        user_event(
            "created",
            user("directory_B", "directory_user_pat", "pat@globex.test", 3),
            3,
        ),
        // ACME's IdP, knowingly or not, provisions the same address.
        user_event(
            "created",
            user("directory_A", "directory_user_spy", "PAT@globex.test", 4),
            4,
        ),
        user_event(
            "created",
            user(
                "directory_A",
                "directory_user_nobody",
                "nobody@globex.test",
                5,
            ),
            5,
        ),
    ])
    .await;
    assert_eq!(
        user_ids(&app, ORG_B, "directory_B").await,
        [json!("user_globex")],
        "linked in its own organization"
    );
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, Value::Null],
        "a known and an unknown address look alike to ACME"
    );

    // Later AuthKit changes (an update, a pending invitation to ACME) still
    // reveal nothing to ACME.
    app.send_all(&[
        authkit_event(
            "updated",
            authkit_user("user_globex", "pat@globex.test", 6),
            6,
        ),
        org_membership_event(
            "created",
            org_membership("om_invite", "user_globex", ORG_A, "pending", 7),
            7,
        ),
    ])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, Value::Null]
    );

    // Once Pat really joins ACME, the link appears there too; when the
    // membership ends, it goes again.
    app.send_all(&[org_membership_event(
        "updated",
        org_membership("om_invite", "user_globex", ORG_A, "active", 8),
        8,
    )])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [json!("user_globex"), Value::Null]
    );
    app.send_all(&[org_membership_event(
        "deleted",
        org_membership("om_invite", "user_globex", ORG_A, "active", 9),
        9,
    )])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, Value::Null]
    );
    assert_eq!(
        user_ids(&app, ORG_B, "directory_B").await,
        [json!("user_globex")],
        "untouched in its own organization"
    );

    // A late, older re-activation does not resurrect the ended membership.
    app.send_all(&[org_membership_event(
        "updated",
        org_membership("om_invite", "user_globex", ORG_A, "active", 8),
        8,
    )])
    .await;
    assert_eq!(
        user_ids(&app, ORG_A, "directory_A").await,
        [Value::Null, Value::Null]
    );
}
