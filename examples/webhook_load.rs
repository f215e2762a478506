//! Sends signed WorkOS webhook events from many concurrent senders and
//! reports events/s and latency percentiles — each event counts only once
//! the server acknowledged it (after its durable commit).
//!
//! `cargo run --release --example webhook_load -- URL SECRET EVENTS SENDERS`
//! e.g. `… http://127.0.0.1:8080 whsec_bench 20000 32`.

mod common;

use common::sign;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn event(id: u64, kind: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "object": "event", "id": format!("event_01LOAD{id:020}"), "event": kind,
        "data": data, "created_at": "2026-06-01T00:00:00.000Z"
    }))
    .unwrap_or_default()
}

fn user(i: u64, run: u64) -> serde_json::Value {
    let email = format!("load{run}.user{i}@example-corporation.test");
    serde_json::json!({
        "object": "directory_user", "id": format!("directory_user_01LOAD{run:04}{i:014}"),
        "directory_id": "directory_01LOADBENCH", "organization_id": "org_01LOADBENCH",
        "idp_id": format!("00u{i:017}"), "email": email,
        "emails": [{"primary": true, "type": "work", "value": email}],
        "first_name": "Load", "last_name": format!("User {i}"), "state": "active",
        "raw_attributes": {"userName": email, "title": "Engineer", "department": "Load", "employeeNumber": i},
        "custom_attributes": {"department": "Load"},
        "created_at": "2026-06-01T00:00:00.000Z", "updated_at": "2026-06-01T00:00:00.000Z"
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = format!(
        "{}/webhooks/workos",
        args.get(1).map_or("http://127.0.0.1:8080", String::as_str)
    );
    let secret = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "whsec_bench".into())
        .into_bytes();
    let total: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let senders: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(32);
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() % 10_000)
        .unwrap_or(0);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders as usize)
        .build()
        .expect("client");

    let activated = event(
        run * 10_000_000_000,
        "dsync.activated",
        serde_json::json!({"object": "directory", "id": "directory_01LOADBENCH", "organization_id": "org_01LOADBENCH",
            "name": "Load", "type": "okta scim v2.0", "state": "active", "domains": [],
            "created_at": "2026-06-01T00:00:00.000Z", "updated_at": "2026-06-01T00:00:00.000Z"}),
    );
    let resp = client
        .post(&url)
        .header("WorkOS-Signature", sign(&secret, &activated))
        .body(activated)
        .send()
        .await
        .expect("server reachable");
    assert!(
        resp.status().is_success(),
        "activation refused: {}",
        resp.status()
    );

    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, url, secret, next) =
            (client.clone(), url.clone(), secret.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return latencies;
                }
                let body = event(
                    run * 10_000_000_000 + i + 1,
                    "dsync.user.created",
                    user(i, run),
                );
                let sent = Instant::now();
                let resp = client
                    .post(&url)
                    .header("WorkOS-Signature", sign(&secret, &body))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                    Ok(r) => panic!("event {i} answered {}", r.status()),
                    Err(e) => panic!("event {i} failed: {e}"),
                }
            }
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sender task"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{} events from {senders} senders in {:.2}s: {:.0} events/s, p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
}
