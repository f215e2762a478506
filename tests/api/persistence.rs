//! Data written, server stopped, database reopened by a new server → the
//! same answers, byte for byte.

use reqwest::StatusCode;

use crate::helpers::*;
use crate::workos::*;

async fn snapshot(app: &TestApp, token: &str, dir: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for path in [
        "/api/directories".to_owned(),
        format!("/api/directories/{dir}"),
        format!("/api/directories/{dir}/users"),
        format!("/api/directories/{dir}/groups"),
    ] {
        let (status, body) = app.get_raw(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        out.push(body);
    }
    out
}

#[tokio::test]
async fn answers_survive_a_restart_byte_for_byte() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_1", "a@acme.test", 1),
            1,
        ),
        user_event(
            "created",
            bare_user("directory_A", "directory_user_2", "b@acme.test", 2),
            2,
        ),
        group_event(
            "created",
            group("directory_A", "directory_group_1", "Eng", 3),
            3,
        ),
    ])
    .await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let token = token_for(ORG_A);
    let before = snapshot(&app, &token, &dir).await;

    let app = app.restart().await;
    let after = snapshot(&app, &token, &dir).await;

    assert_eq!(before, after);
    assert!(String::from_utf8_lossy(&after[2]).contains("a@acme.test"));
}

#[tokio::test]
async fn a_second_server_on_the_same_file_is_refused_clearly() {
    let app = spawn_app().await;

    let err = rollcall::app::Application::build(app.settings.clone())
        .await
        .err()
        .expect("refused");

    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}
