//! Storage faults injected through redb's storage backend: the failing
//! request gets a 503 in the JSON error shape with nothing written, reads
//! keep working, and writes recover once the fault clears (the store
//! reopens the database, which redb requires after a failed write).

use std::sync::Arc;

use reqwest::StatusCode;
use rollcall::store::StorageFaults;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;
use crate::workos::*;

async fn faulty_app() -> (TestApp, Arc<StorageFaults>) {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    let faults = StorageFaults::new();
    s.store.faults = Some(faults.clone());
    s.max_body_bytes = 2 * 1024 * 1024;
    (spawn_with(s, Arc::new(dir)).await, faults)
}

async fn listed(app: &TestApp) -> Vec<String> {
    let dir = directory_id(app, ORG_A, "directory_A").await;
    let (status, list) = app
        .get_json(&format!("/api/directories/{dir}/users"), &token_for(ORG_A))
        .await;
    assert_eq!(status, StatusCode::OK, "reads keep working");
    let (_, d) = app
        .get_json(&format!("/api/directories/{dir}"), &token_for(ORG_A))
        .await;
    assert_eq!(
        d["user_count"].as_u64().unwrap() as usize,
        list.as_array().unwrap().len(),
        "count matches the list"
    );
    emails(&list)
}

fn big_user(i: usize) -> Value {
    let u = user(
        "directory_A",
        &format!("directory_user_big{i}"),
        &format!("big{i}@acme.test"),
        10 + i as i64,
    );
    with(u, "raw_attributes", json!({"blob": "x".repeat(700_000)}))
}

async fn assert_503(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(body["status"], 503);
    assert_eq!(body["data"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        !body["message"].as_str().unwrap().contains("injected"),
        "nothing internal leaks"
    );
}

#[tokio::test]
async fn a_full_disk_fails_writes_with_503_keeps_reads_and_recovers() {
    let (app, faults) = faulty_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        user_event(
            "created",
            user("directory_A", "directory_user_a", "a@acme.test", 1),
            1,
        ),
    ])
    .await;

    faults.set_disk_full(true);
    let mut acked = vec!["a@acme.test".to_owned()];
    let mut failed = None;
    for i in 0..40 {
        let event = user_event("created", big_user(i), 10 + i as i64);
        let resp = app.post_event(&event).await;
        if resp.status() == StatusCode::OK {
            acked.push(format!("big{i}@acme.test"));
            continue;
        }
        assert_503(resp).await;
        failed = Some(event);
        break;
    }
    let failed = failed.expect("the disk filled up");
    assert_eq!(
        listed(&app).await,
        acked,
        "the failed write left nothing behind"
    );
    assert_503(app.post_event(&failed).await).await;

    faults.set_disk_full(false);
    app.send_all(&[failed]).await;
    let after = listed(&app).await;
    assert_eq!(after.len(), acked.len() + 1);
    assert!(after.last().unwrap().starts_with("big"));
}

#[tokio::test]
async fn a_failed_write_or_fsync_is_a_503_and_the_next_write_succeeds() {
    let (app, faults) = faulty_app().await;
    app.send_all(&[activated("directory_A", ORG_A, 0)]).await;

    for (i, fault) in ["write", "fsync", "write", "fsync"].iter().enumerate() {
        let doomed = user_event(
            "created",
            user(
                "directory_A",
                &format!("directory_user_{i}"),
                &format!("u{i}@acme.test"),
                1 + i as i64,
            ),
            1 + i as i64,
        );
        match *fault {
            "write" => faults.fail_next_writes(1),
            _ => faults.fail_next_syncs(1),
        }
        assert_503(app.post_event(&doomed).await).await;
        let before: Vec<String> = (0..i).map(|j| format!("u{j}@acme.test")).collect();
        let mut whole = before.clone();
        whole.push(format!("u{i}@acme.test"));
        let seen = listed(&app).await;
        if *fault == "write" {
            assert_eq!(seen, before, "a failed write leaves nothing");
        } else {
            // A failed fsync is ambiguous at the storage level (the pages
            // may have reached the file): unacknowledged, the change is
            // entirely there or entirely absent, never in part.
            assert!(
                seen == before || seen == whole,
                "after a failed fsync: {seen:?}"
            );
        }

        app.send_all(&[doomed]).await;
        let after: Vec<String> = (0..=i).map(|j| format!("u{j}@acme.test")).collect();
        assert_eq!(
            listed(&app).await,
            after,
            "recovered after a failed {fault}"
        );
    }
}

#[tokio::test]
async fn a_failed_commit_survives_a_restart_as_never_written() {
    let (app, faults) = faulty_app().await;
    app.send_all(&[activated("directory_A", ORG_A, 0)]).await;
    faults.fail_next_writes(1);
    let doomed = user_event(
        "created",
        user("directory_A", "directory_user_x", "x@acme.test", 1),
        1,
    );
    assert_503(app.post_event(&doomed).await).await;

    let app = app.restart().await;

    assert_eq!(listed(&app).await, Vec::<String>::new());
}
