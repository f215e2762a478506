//! Crash durability with the real binary: concurrent signed webhooks (and, in
//! another test, pull mode) while the process is killed with SIGKILL at
//! random moments, several rounds. After each kill the database must open
//! cleanly, every acknowledged event must be fully there, nothing may be
//! half-applied, and the pull cursor must never point past unapplied events.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rollcall::store::{ListQuery, Store, StoreOptions};
use serde_json::Value;
use tempfile::TempDir;

use crate::fake_workos::{FakeOptions, FakeWorkos};
use crate::helpers::*;
use crate::workos::*;

const ROUNDS: usize = 5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &Path, jwks: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workos-webhook-secret",
            WEBHOOK_SECRET,
        ])
        .arg("--jwks-file")
        .arg(jwks)
        .arg("--data")
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(port: u16) {
    for _ in 0..400 {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("rollcall did not come up on {port}");
}

async fn post_signed(client: &reqwest::Client, port: u16, event: &Value) -> bool {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
    matches!(
        client
            .post(format!("http://127.0.0.1:{port}/webhooks/workos"))
            .header("WorkOS-Signature", signature)
            .body(body)
            .send()
            .await,
        Ok(r) if r.status().is_success()
    )
}

/// Opens the file the killed process left (repairing it as needed) and
/// checks every directory's count against its records.
fn reopen_and_check_counts(data: &Path) -> Store {
    let store = Store::open(data, StoreOptions::default())
        .expect("the database opens cleanly after SIGKILL");
    let snapshot = store.snapshot().unwrap();
    for d in snapshot.all_directories().unwrap() {
        let mut n = 0u64;
        snapshot
            .visit_user_json(d.id, &ListQuery::default(), |_, _| {
                n += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(
            d.user_count, n,
            "user_count of {} matches its records",
            d.workos_directory_id
        );
    }
    store
}

fn jwks_file(dir: &Path) -> PathBuf {
    let path = dir.join("jwks.json");
    std::fs::write(&path, JWKS).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_and_deletions_are_all_or_nothing() {
    let dir = TempDir::new().unwrap();
    let (data, jwks) = (dir.path().join("crash.redb"), jwks_file(dir.path()));
    let seed: u64 = std::env::var("ROLLCALL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = StdRng::seed_from_u64(seed);
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let (mut total_acked, mut next_user) = (0usize, 0usize);

    for round in 0..ROUNDS {
        let port = free_port();
        let mut child = start(&data, &jwks, port, &[]);
        wait_healthy(port).await;
        // A doomed directory with users, deleted (all at once) mid-round.
        let doomed = format!("directory_D{round}");
        assert!(post_signed(&client, port, &activated("directory_C", ORG_A, 0)).await);
        assert!(post_signed(&client, port, &activated(&doomed, ORG_A, 1)).await);
        for i in 0..40 {
            let u = user(
                &doomed,
                &format!("directory_user_d{round}_{i}"),
                &format!("d{round}.{i}@acme.test"),
                2,
            );
            assert!(post_signed(&client, port, &user_event("created", u, 2)).await);
        }

        let mut senders = Vec::new();
        for s in 0..8 {
            let (client, acked) = (client.clone(), acked.clone());
            let start = next_user + s * 10_000;
            senders.push(tokio::spawn(async move {
                for i in start.. {
                    let id = format!("directory_user_c{i}");
                    let event = user_event(
                        "created",
                        user("directory_C", &id, &format!("c{i}@acme.test"), 3),
                        3,
                    );
                    if !post_signed(&client, port, &event).await {
                        return;
                    }
                    acked.lock().unwrap().push((id, format!("c{i}@acme.test")));
                }
            }));
        }
        next_user += 100_000;
        let deleter = {
            let client = client.clone();
            let doomed = doomed.clone();
            let delay = rng.random_range(20..300);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                post_signed(&client, port, &directory_deleted(&doomed, ORG_A, 10)).await
            })
        };

        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for s in senders {
            s.await.unwrap();
        }
        let deletion_acked = deleter.await.unwrap();

        let store = reopen_and_check_counts(&data);
        let snapshot = store.snapshot().unwrap();
        let acked = acked.lock().unwrap().clone();
        let c = snapshot
            .directory_by_workos("directory_C")
            .unwrap()
            .expect("directory_C");
        for (id, email) in &acked {
            let u = snapshot
                .user_by_workos(id)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {id} is missing"));
            assert_eq!(&u.email, email);
            let mut by_email = 0;
            let q = ListQuery {
                email: Some(email.clone()),
                ..ListQuery::default()
            };
            snapshot
                .visit_user_json(c.id, &q, |_, _| {
                    by_email += 1;
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(by_email, 1, "{email} is in the email index");
        }
        match snapshot.directory_by_workos(&doomed).unwrap() {
            Some(d) => {
                assert!(!deletion_acked, "an acknowledged deletion was undone");
                assert_eq!(d.user_count, 40, "the doomed directory is whole");
            }
            None => {
                for i in 0..40 {
                    assert!(
                        snapshot
                            .user_by_workos(&format!("directory_user_d{round}_{i}"))
                            .unwrap()
                            .is_none(),
                        "a user of a deleted directory survived"
                    );
                }
            }
        }
        total_acked = acked.len();
        println!(
            "crash round {round}: {} events acknowledged so far, all present; directory deletion {}",
            acked.len(),
            if deletion_acked {
                "acknowledged and complete"
            } else {
                "all or nothing"
            }
        );
    }
    assert!(total_acked > 0, "the senders got acknowledgements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_cursor_never_points_past_unapplied_events_across_sigkills() {
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let org = fake.create_organization("Acme");
    let directory = fake.create_directory(&org, "Acme Okta", |_| {});
    let dir = TempDir::new().unwrap();
    let (data, jwks) = (dir.path().join("pull.redb"), jwks_file(dir.path()));
    let url = fake.base_url();
    let args = [
        "--workos-api-key",
        fake.api_key(),
        "--workos-api-url",
        &url,
        "--poll-interval-secs",
        "1",
        "--reconcile-interval-secs",
        "0",
    ];
    // The backfill copies the (empty) directory; from then on the users
    // arrive only as events, so the cursor alone decides what is applied.
    let port = free_port();
    let mut child = start(&data, &jwks, port, &args);
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for i in 0..3000 {
        fake.create_user(&directory.id, &format!("p{i}@acme.test"), |_| {});
    }
    let events = fake.events();
    assert_eq!(
        events.len(),
        3001,
        "the activation, then one event per user"
    );
    let mut rng = StdRng::seed_from_u64(11);
    let mut applied = 0;

    for round in 0..ROUNDS + 1 {
        let port = free_port();
        let mut child = start(&data, &jwks, port, &args);
        wait_healthy(port).await;
        if round == ROUNDS {
            // The last round runs until everything is in (however loaded
            // the machine), then is killed like the others.
            let client = reqwest::Client::new();
            for _ in 0..600 {
                let dirs: Value = client
                    .get(format!("http://127.0.0.1:{port}/api/directories"))
                    .bearer_auth(token_for(&org))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if dirs[0]["user_count"] == 3000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..250))).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let store = reopen_and_check_counts(&data);
        let snapshot = store.snapshot().unwrap();
        let cursor = snapshot.events_cursor().unwrap();
        let upto = cursor.as_ref().map_or(0, |c| {
            events
                .iter()
                .position(|e| e["id"] == c.as_str())
                .expect("the cursor is a served event")
                + 1
        });
        // Everything up to the cursor is applied; nothing after it is (pull
        // is the only source here): cursor and changes commit together.
        for (i, e) in events.iter().enumerate().skip(1) {
            let id = e["data"]["id"].as_str().unwrap();
            let present = snapshot.user_by_workos(id).unwrap().is_some();
            assert_eq!(
                present,
                i < upto,
                "event {i} present={present} with the cursor at {upto}"
            );
        }
        assert!(upto >= applied, "the cursor never moves back");
        applied = upto;
        println!(
            "pull crash round {round}: cursor after {upto} of {} events, exactly those applied",
            events.len()
        );
    }
    assert_eq!(
        applied,
        events.len(),
        "after the last round everything is applied"
    );
}
