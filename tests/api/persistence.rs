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

#[tokio::test]
async fn compact_gives_freed_space_back_and_changes_no_answer() {
    let app = spawn_app().await;
    let mut events = vec![activated("directory_A", ORG_A, 0)];
    for i in 0..300 {
        let mut u = user(
            "directory_A",
            &format!("directory_user_{i}"),
            &format!("u{i}@a.test"),
            1,
        );
        u["raw_attributes"] = serde_json::json!({"blob": "x".repeat(4000)});
        events.push(user_event("created", u, 1));
    }
    app.send_all(&events).await;
    // Deleting most of them leaves freed pages inside the file.
    let deletions: Vec<_> = (0..280)
        .map(|i| {
            user_event(
                "deleted",
                user(
                    "directory_A",
                    &format!("directory_user_{i}"),
                    &format!("u{i}@a.test"),
                    2,
                ),
                2,
            )
        })
        .collect();
    app.send_all(&deletions).await;
    let dir = directory_id(&app, ORG_A, "directory_A").await;
    let path = format!("/api/directories/{dir}/users");
    let (_, before) = app.get_raw(&path, &token_for(ORG_A)).await;

    // While the server holds the file, compact refuses and changes nothing.
    let held = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(&app.db_path)
        .arg("compact")
        .output()
        .unwrap();
    assert_eq!(held.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&held.stderr).contains("stop it first"));

    let (dir_keep, settings) = app.stop().await;
    let size_before = std::fs::metadata(&settings.data).unwrap().len();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(&settings.data)
        .arg("compact")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size_after = std::fs::metadata(&settings.data).unwrap().len();
    assert!(size_after < size_before, "{size_before} -> {size_after}");

    let app = spawn_with(settings, dir_keep).await;
    let (_, after) = app.get_raw(&path, &token_for(ORG_A)).await;
    assert_eq!(after, before, "the same answer after compaction");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&after)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        20
    );
}
