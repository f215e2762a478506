//! `rollcall import` / `rollcall export`, run as the real binary: a round trip
//! reproduces every API answer byte for byte, re-importing changes nothing,
//! and a bad line aborts with its number leaving the database untouched.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::*;
use crate::workos::*;

fn rollcall(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("ROLLCALL_DATA")
        .output()
        .expect("the rollcall binary runs")
}

/// Every API answer for both organizations, raw.
async fn answers(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for org in [ORG_A, ORG_B] {
        let token = token_for(org);
        let (_, dirs) = app.get_json("/api/directories", &token).await;
        out.push((
            format!("{org} directories"),
            app.get_raw("/api/directories", &token).await.1,
        ));
        for d in dirs.as_array().unwrap() {
            let id = d["id"].as_str().unwrap();
            for path in [
                format!("/api/directories/{id}"),
                format!("/api/directories/{id}/users"),
                format!("/api/directories/{id}/groups"),
            ] {
                let (status, body) = app.get_raw(&path, &token).await;
                assert_eq!(status, StatusCode::OK);
                out.push((path, body));
            }
        }
    }
    out
}

async fn populated() -> TestApp {
    let app = spawn_app().await;
    let ada = user("directory_A", "directory_user_ada", "ada@acme.test", 2);
    let eng = group("directory_A", "directory_group_eng", "Engineering", 3);
    app.send_all(&[
        authkit_event("created", authkit_user("user_ada", "ada@acme.test", 1), 1),
        activated("directory_A", ORG_A, 1),
        activated("directory_B", ORG_B, 1),
        user_event("created", ada.clone(), 2),
        user_event(
            "created",
            bare_user("directory_A", "directory_user_bare", "bare@acme.test", 3),
            3,
        ),
        user_event(
            "created",
            with(
                user("directory_B", "directory_user_uni", "uni@globex.test", 4),
                "raw_attributes",
                json!({"name": "Zoë 日本", "n": 1.5, "nested": {"b": [1, null], "a": true}}),
            ),
            4,
        ),
        group_event("created", eng.clone(), 3),
        group_event(
            "created",
            group("directory_B", "directory_group_ops", "Ops", 5),
            5,
        ),
        member_event("user_added", "directory_A", ada, eng, 6),
    ])
    .await;
    app
}

#[tokio::test]
async fn export_then_import_into_an_empty_database_reproduces_every_answer() {
    let app = populated().await;
    let before = answers(&app).await;
    let (dir, settings) = app.stop().await;
    let file = dir.path().join("export.ndjson");

    let out = rollcall(&settings.data, &["export", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = TempDir::new().unwrap();
    let mut fresh_settings = crate::helpers::settings(fresh.path());
    let out = rollcall(&fresh_settings.data, &["import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fresh_settings.listen = settings.listen;
    let app = spawn_with(fresh_settings, Arc::new(fresh)).await;

    let after = answers(&app).await;
    assert_eq!(before.len(), after.len());
    for ((p1, b1), (_, b2)) in before.iter().zip(&after) {
        assert_eq!(
            String::from_utf8_lossy(b1),
            String::from_utf8_lossy(b2),
            "{p1}"
        );
    }
    let lines = std::fs::read_to_string(&file).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"object\":\"directory_group_membership\""))
    );
}

#[tokio::test]
async fn reimporting_the_same_file_changes_nothing() {
    let app = populated().await;
    let (dir, settings) = app.stop().await;
    let file = dir.path().join("export.ndjson");
    assert!(
        rollcall(&settings.data, &["export", file.to_str().unwrap()])
            .status
            .success()
    );
    let app = spawn_with(settings.clone(), dir.clone()).await;
    let before = answers(&app).await;
    let (dir, settings) = app.stop().await;

    let out = rollcall(&settings.data, &["import", file.to_str().unwrap()]);

    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains(" 0 changed"), "{report}");
    let app = spawn_with(settings, dir).await;
    assert_eq!(answers(&app).await, before);
}

#[tokio::test]
async fn a_bad_line_aborts_with_its_number_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let settings = crate::helpers::settings(dir.path());
    let file = dir.path().join("bad.ndjson");
    let good_dir = json!({"object": "directory", "id": "directory_X", "organization_id": ORG_A, "name": "X", "type": "okta scim v2.0", "state": "active", "domains": [], "created_at": t(0)});
    let good_user = user("directory_X", "directory_user_1", "a@acme.test", 1);
    let cases = [
        (
            "{\"object\": \"directory_user\", \"id\": \"directory_user_2\"",
            "line 3",
        ),
        (
            "{\"object\": \"directory_user\", \"id\": \"directory_user_2\", \"directory_id\": \"directory_X\"}",
            "line 3: state",
        ),
        ("{\"object\": \"spaceship\"}", "line 3: object"),
        (
            "{\"object\": \"directory_user\", \"id\": \"directory_user_2\", \"directory_id\": \"directory_nowhere\", \"state\": \"active\", \"created_at\": \"2026-01-01T00:00:00Z\"}",
            "line 3: directory_id",
        ),
    ];
    for (bad, expected) in cases {
        let body = format!(
            "{good_dir}\n{good_user}\n{bad}\n{}\n",
            user("directory_X", "directory_user_3", "c@acme.test", 1)
        );
        std::fs::write(&file, body).unwrap();

        let out = rollcall(&settings.data, &["import", file.to_str().unwrap()]);

        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    let app = spawn_with(settings, Arc::new(dir)).await;
    let (_, dirs) = app.get_json("/api/directories", &token_for(ORG_A)).await;
    assert_eq!(dirs, json!([]), "nothing of any aborted import was written");
}

#[tokio::test]
async fn import_refuses_clearly_while_the_server_holds_the_database() {
    let app = spawn_app().await;
    let file = app.dir().path().join("x.ndjson");
    std::fs::write(&file, "").unwrap();

    let out = rollcall(&app.db_path, &["import", file.to_str().unwrap()]);

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("held by another process"));
}
