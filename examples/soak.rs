//! Soak load: for a bounded time, concurrent readers list a directory's users
//! (whole lists and pages) while concurrent writers send signed webhook
//! events; a share of every kind of request is deliberately wrong (foreign
//! tokens, bad signatures, malformed events) and must be refused with the
//! right status. Prints request counts, unexpected errors (must be 0) and
//! latency percentiles. `benches/soak.py` starts the server and watches RSS.
//!
//! `soak BASE_URL WEBHOOK_SECRET TOKEN FOREIGN_TOKEN DIRECTORY_UUID SECONDS [READERS] [WRITERS]`

mod common;

use common::sign;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    refused_as_expected: AtomicU64,
    unexpected: AtomicU64,
    read_latency: Mutex<Vec<Duration>>,
    write_latency: Mutex<Vec<Duration>>,
}

fn event(n: u64, directory: &str) -> Vec<u8> {
    let email = format!("soak.{n}@example-corporation.test");
    serde_json::to_vec(&serde_json::json!({
        "object": "event", "id": format!("event_01SOAK{n:020}"), "event": "dsync.user.created",
        "created_at": "2026-06-01T00:00:00.000Z",
        "data": {"object": "directory_user", "id": format!("directory_user_01SOAK{n:016}"),
                 "directory_id": directory, "email": email, "first_name": "Soak", "last_name": null,
                 "state": "active", "raw_attributes": {"n": n}, "custom_attributes": {},
                 "created_at": "2026-06-01T00:00:00.000Z", "updated_at": "2026-06-01T00:00:00.000Z"}
    }))
    .unwrap_or_default()
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!(
            "usage: soak BASE_URL WEBHOOK_SECRET TOKEN FOREIGN_TOKEN DIRECTORY_UUID SECONDS [READERS] [WRITERS]"
        );
        std::process::exit(2);
    }
    let base = args[1].clone();
    let secret = args[2].clone().into_bytes();
    let (token, foreign) = (args[3].clone(), args[4].clone());
    let directory = args[5].clone();
    let seconds: u64 = args[6].parse().unwrap_or(30);
    let readers: usize = args.get(7).and_then(|a| a.parse().ok()).unwrap_or(8);
    let writers: usize = args.get(8).and_then(|a| a.parse().ok()).unwrap_or(8);
    let workos_directory = "directory_01BENCH00000000000001".to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let stats = Arc::new(Stats::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let next = Arc::new(AtomicU64::new(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() * 1_000_000)
            .unwrap_or(0),
    ));
    let mut tasks = Vec::new();

    for r in 0..readers {
        let (client, stats, base, token, foreign, directory) = (
            client.clone(),
            stats.clone(),
            base.clone(),
            token.clone(),
            foreign.clone(),
            directory.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = r as u64;
            while Instant::now() < deadline {
                i += 1;
                // One request in ten is wrong on purpose: another
                // organization's token must get a 404.
                let injected = i.is_multiple_of(10);
                let path = match i % 3 {
                    0 => format!("{base}/api/directories/{directory}/users"),
                    1 => format!("{base}/api/directories/{directory}/users?limit=100"),
                    _ => format!("{base}/api/directories/{directory}"),
                };
                let started = Instant::now();
                let resp = client
                    .get(&path)
                    .bearer_auth(if injected { &foreign } else { &token })
                    .send()
                    .await;
                let outcome = match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let complete = r.bytes().await.is_ok();
                        (status, complete)
                    }
                    Err(_) => (0, false),
                };
                match (injected, outcome) {
                    (false, (200, true)) => {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                        stats.read_latency.lock().await.push(started.elapsed());
                    }
                    (true, (404, true)) => {
                        stats.refused_as_expected.fetch_add(1, Ordering::Relaxed);
                    }
                    (_, other) => {
                        eprintln!("unexpected read outcome {other:?} for {path}");
                        stats.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for _ in 0..writers {
        let (client, stats, base, secret, next, dir) = (
            client.clone(),
            stats.clone(),
            base.clone(),
            secret.clone(),
            next.clone(),
            workos_directory.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = event(n, &dir);
                // One in ten: a bad signature (401); one in twenty more: a
                // malformed event (400).
                let (sig, body, expect) = match n % 20 {
                    0 | 10 => (format!("t=1, v1={}", "0".repeat(64)), body, 401),
                    5 => {
                        let bad = br#"{"id": "event_x", "event": "dsync.user.created"}"#.to_vec();
                        (sign(&secret, &bad), bad, 400)
                    }
                    _ => (sign(&secret, &body), body, 200),
                };
                let started = Instant::now();
                let resp = client
                    .post(format!("{base}/webhooks/workos"))
                    .header("WorkOS-Signature", sig)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let status = resp.map(|r| r.status().as_u16()).unwrap_or(0);
                if status == expect && expect == 200 {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    stats.write_latency.lock().await.push(started.elapsed());
                } else if status == expect {
                    stats.refused_as_expected.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("unexpected write outcome {status} (expected {expect})");
                    stats.unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut reads = stats.read_latency.lock().await.clone();
    let mut writes = stats.write_latency.lock().await.clone();
    println!(
        "soak {seconds}s, {readers} readers + {writers} writers: {} ok ({} reads, {} writes), {} refused as injected, {} unexpected errors; \
read p50 {:.1} ms p99 {:.1} ms; write p50 {:.1} ms p99 {:.1} ms",
        stats.ok.load(Ordering::Relaxed),
        reads.len(),
        writes.len(),
        stats.refused_as_expected.load(Ordering::Relaxed),
        stats.unexpected.load(Ordering::Relaxed),
        percentile(&mut reads, 0.50),
        percentile(&mut reads, 0.99),
        percentile(&mut writes, 0.50),
        percentile(&mut writes, 0.99),
    );
    if stats.unexpected.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
