//! Every answer is a function of the WorkOS data alone (the README's
//! "Determinism"): ids derive from WorkOS ids and `created_at`, times are
//! WorkOS's, and the same data brought by different paths, in different
//! orders, gives byte-identical answers — bodies, ids, ETags and `Link`
//! headers — on every instance.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;
use crate::workos::*;

/// Two organizations with users, groups, memberships, AuthKit users and
/// their organization memberships, updates, a suspension, deletions — and
/// a directory created and deleted.
fn history() -> Vec<Value> {
    let ada = user("directory_A", "directory_user_ada", "ada@acme.test", 10);
    let bob = user("directory_A", "directory_user_bob", "bob@acme.test", 11);
    let cy = bare_user("directory_A", "directory_user_cy", "cy@acme.test", 12);
    let pat = user("directory_B", "directory_user_pat", "pat@globex.test", 13);
    let eng = group("directory_A", "directory_group_eng", "Engineering", 14);
    let ops = group("directory_B", "directory_group_ops", "Ops", 15);
    let bob_suspended = with(
        with(bob.clone(), "state", json!("suspended")),
        "updated_at",
        json!(t(30)),
    );
    let ada_renamed = with(
        with(ada.clone(), "first_name", json!("Augusta")),
        "updated_at",
        json!(t(31)),
    );
    vec![
        activated("directory_A", ORG_A, 1),
        activated("directory_B", ORG_B, 2),
        activated("directory_T", ORG_A, 3),
        user_event("created", ada.clone(), 10),
        user_event("created", bob.clone(), 11),
        user_event("created", cy.clone(), 12),
        user_event("created", pat.clone(), 13),
        group_event("created", eng.clone(), 14),
        group_event("created", ops.clone(), 15),
        member_event("user_added", "directory_A", ada.clone(), eng.clone(), 20),
        member_event("user_added", "directory_A", bob.clone(), eng.clone(), 21),
        member_event("user_added", "directory_B", pat.clone(), ops.clone(), 22),
        user_event("updated", bob_suspended, 30),
        user_event("updated", ada_renamed, 31),
        member_event("user_removed", "directory_A", bob.clone(), eng.clone(), 32),
        user_event("deleted", with(cy, "updated_at", json!(t(33))), 33),
        directory_deleted("directory_T", ORG_A, 34),
        authkit_event("created", authkit_user("user_ada", "ada@acme.test", 40), 40),
        member_of("user_ada", ORG_A, 41),
        authkit_event(
            "created",
            authkit_user("user_pat", "pat@globex.test", 42),
            42,
        ),
        member_of("user_pat", ORG_B, 43),
        authkit_event(
            "updated",
            authkit_user("user_pat", "pat@globex.test", 50),
            50,
        ),
    ]
}

async fn fed(events: &[Value]) -> TestApp {
    let app = spawn_app().await;
    app.send_all(events).await;
    app
}

async fn answers(app: &TestApp) -> Vec<Answer> {
    every_answer(&app.client, &app.base, &[ORG_A, ORG_B]).await
}

#[tokio::test]
async fn ids_and_times_are_the_workos_ones() {
    let app = fed(&history()).await;
    let token = token_for(ORG_A);
    let (_, dirs) = app.get_json("/api/directories", &token).await;
    let dir = &dirs[0];
    assert_eq!(dir["workos_directory_id"], "directory_A");
    assert_eq!(dir["id"], derived_id("directory_A", &t(1)));
    assert_eq!(
        (&dir["created_at"], &dir["updated_at"]),
        (&json!(t(1)), &json!(t(1)))
    );

    let (_, users) = app
        .get_json(
            &format!("/api/directories/{}/users", dir["id"].as_str().unwrap()),
            &token,
        )
        .await;
    let by_id = |id: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["workos_directory_user_id"] == id)
            .unwrap()
            .clone()
    };
    let ada = by_id("directory_user_ada");
    assert_eq!(ada["id"], derived_id("directory_user_ada", &t(10)));
    assert_eq!(ada["directory_id"], dir["id"]);
    assert_eq!(ada["created_at"], t(10));
    // Renamed at 31, linked to an AuthKit user created at 40 whose
    // membership started at 41: the latest of them.
    assert_eq!(ada["user_id"], "user_ada");
    assert_eq!(ada["updated_at"], t(41));
    let bob = by_id("directory_user_bob");
    assert_eq!(bob["id"], derived_id("directory_user_bob", &t(11)));
    assert_eq!(
        (&bob["updated_at"], &bob["state"]),
        (&json!(t(30)), &json!("inactive"))
    );
    assert!(
        ada["id"].as_str() < bob["id"].as_str(),
        "ids sort in WorkOS's creation order"
    );

    let (_, other) = app.get_json("/api/directories", &token_for(ORG_B)).await;
    let (_, pats) = app
        .get_json(
            &format!(
                "/api/directories/{}/users",
                other[0]["id"].as_str().unwrap()
            ),
            &token_for(ORG_B),
        )
        .await;
    assert_eq!(
        pats[0]["updated_at"],
        t(50),
        "the AuthKit user's later update counts"
    );
}

#[tokio::test]
async fn any_order_and_any_path_give_byte_identical_answers() {
    let events = history();
    let in_order = fed(&events).await;
    let reference = answers(&in_order).await;
    assert!(reference.len() > 10);

    // Shuffled (at-least-once, out of order), and every event twice.
    for seed in [1u64, 7, 42] {
        let mut shuffled = events.clone();
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let app = fed(&shuffled).await;
        app.send_all(&shuffled).await;
        assert_eq!(answers(&app).await, reference, "shuffled with seed {seed}");
    }

    // Exported and imported into an empty database.
    let export = in_order.dir().path().join("all.ndjson");
    let (dir, settings) = in_order.stop().await;
    let out = rollcall(&settings.data, &["export", export.to_str().unwrap()]);
    assert!(out.status.success());
    let fresh = TempDir::new().unwrap();
    let mut imported = crate::helpers::settings(fresh.path());
    imported.webhook_secret = settings.webhook_secret.clone();
    let out = rollcall(&imported.data, &["import", export.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = spawn_with(imported, Arc::new(fresh)).await;
    assert_eq!(answers(&app).await, reference, "exported and imported");
    drop(dir);
}

fn rollcall(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("ROLLCALL_DATA")
        .output()
        .unwrap()
}

#[tokio::test]
async fn importing_what_is_already_there_writes_nothing() {
    let app = fed(&history()).await;
    let export = app.dir().path().join("all.ndjson");
    let (_dir, settings) = app.stop().await;
    assert!(
        rollcall(&settings.data, &["export", export.to_str().unwrap()])
            .status
            .success()
    );
    let ndjson = std::fs::read(&export).unwrap();
    // In one process: redb itself rewrites its header when a file is
    // opened or closed, but a transaction that changed nothing is never
    // committed, so while the file stays open not a byte moves.
    let store = rollcall::store::Store::open(&settings.data, Default::default()).unwrap();
    let before = std::fs::read(&settings.data).unwrap();
    let report = rollcall::ingest::ndjson::import(&store, ndjson.as_slice(), |_| {}).unwrap();
    assert_eq!(report.applied, 0, "{report:?}");
    assert!(
        std::fs::read(&settings.data).unwrap() == before,
        "a write that changes nothing is not committed"
    );
}

#[tokio::test]
async fn a_schema_1_database_is_refused_then_migrated_keeping_its_bookkeeping() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("old.redb");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v1.redb"),
        &data,
    )
    .unwrap();

    // Never silently mixed: serving, importing or exporting it is refused
    // with the command to run.
    let mut s = settings(dir.path());
    s.data = data.clone();
    let refused = rollcall::app::Application::build(s.clone())
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("migrate"), "{refused}");
    let out = rollcall(&data, &["export"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("rollcall --data {} migrate", data.display())),
        "{stderr}"
    );
    let (_, schema) = rollcall::store::Store::open_to_migrate(&data).unwrap();
    assert_eq!(schema, 1, "the refusals left the file as it was");

    let out = rollcall(&data, &["migrate"]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("2 directories, 11 users, 2 groups")
            && report.contains("1 tombstones, 2 seen event ids, 1 held events"),
        "{report}"
    );
    let kept = dir.path().join("old.redb.v1.bak");
    let (old, schema) = rollcall::store::Store::open_to_migrate(&kept).unwrap();
    assert_eq!(schema, 1, "the old file is kept as it was");
    assert_eq!(old.snapshot().unwrap().all_directories().unwrap().len(), 2);
    drop(old);
    let again = rollcall(&data, &["migrate"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to migrate"));

    let app = spawn_with(s, Arc::new(dir)).await;
    let (_, dirs) = app
        .get_json("/api/directories", &token_for("org_01V1ACME"))
        .await;
    assert_eq!(
        dirs[0]["id"],
        derived_id("directory_01V1ACME", "2026-01-01T00:00:02Z")
    );
    assert_eq!(
        dirs[0]["user_count"], 7,
        "8 imported, one deleted by a webhook"
    );
    let users_path = format!("/api/directories/{}/users", dirs[0]["id"].as_str().unwrap());
    let (_, users) = app.get_json(&users_path, &token_for("org_01V1ACME")).await;
    assert_eq!(
        users[0]["id"],
        derived_id(
            "directory_user_directory_01V1ACME_0",
            "2026-01-01T00:00:10Z"
        )
    );
    assert_eq!(
        users[0]["updated_at"], "2026-01-01T00:00:20.000Z",
        "WorkOS's time, not the import's"
    );
    assert_eq!(
        users[0]["user_id"],
        Value::Null,
        "the old link without an organization membership is not carried over"
    );

    // The bookkeeping came along: the seen event id is a duplicate, the
    // tombstone stops a late update, the held event lands on activation.
    let deleted = json!({"object": "directory_user", "id": "directory_user_directory_01V1ACME_7",
        "directory_id": "directory_01V1ACME", "email": "u7@org_01v1acme.test", "state": "active",
        "created_at": "2026-01-01T00:00:17.000Z", "updated_at": "2026-01-01T00:01:00.000Z"});
    let replay = json!({"id": "event_01V1DELETE", "event": "dsync.user.deleted",
        "created_at": "2026-01-01T00:01:00.000Z", "data": deleted});
    let resp: Value = app.post_event(&replay).await.json().await.unwrap();
    assert_eq!(resp["outcome"], "duplicate");
    let late = json!({"id": "event_01V1LATE", "event": "dsync.user.updated",
        "created_at": "2026-01-01T00:00:50.000Z",
        "data": with(deleted, "updated_at", json!("2026-01-01T00:00:50.000Z"))});
    let resp: Value = app.post_event(&late).await.json().await.unwrap();
    assert_eq!(resp["outcome"], "stale");
    app.send_all(&[with(
        activated("directory_01V1LATER", "org_01V1ACME", 1),
        "id",
        json!("event_01V1ACTIVATE"),
    )])
    .await;
    let later = directory_id(&app, "org_01V1ACME", "directory_01V1LATER").await;
    let (_, held) = app
        .get_json(
            &format!("/api/directories/{later}/users"),
            &token_for("org_01V1ACME"),
        )
        .await;
    assert_eq!(held[0]["workos_directory_user_id"], "directory_user_parked");
}
