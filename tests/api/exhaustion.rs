//! Resource exhaustion from outside and from inside: what an attacker with
//! no token (webhook bodies) or with a valid token (big lists, filters,
//! slow reads) can make the server hold. Every bound is tested under the
//! attack itself. The thousand-connection runs are `#[ignore]`d in
//! `cargo test` and run by `.ci/run` (`cargo test -- --ignored`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::process::Process;
use crate::workos::*;

/// A webhook request head whose signature header passes every check that
/// needs no body (fresh timestamp, well formed), announcing `len` bytes.
fn webhook_head(len: usize) -> String {
    format!(
        "POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         WorkOS-Signature: t={}, v1={}\r\nContent-Length: {len}\r\n\r\n",
        now_ms(),
        "ab".repeat(32)
    )
}

/// Reads one response (head and JSON body) or until closed; `None` if
/// nothing came within `limit`.
async fn response_within(stream: &mut TcpStream, limit: Duration) -> Option<(u16, String, Value)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&out[..split]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if out.len() >= split + 4 + len {
                        let status = head[9..12].parse().ok()?;
                        let body = serde_json::from_slice(&out[split + 4..split + 4 + len])
                            .unwrap_or(Value::Null);
                        return Some((status, head, body));
                    }
                }
            }
            Err(_) => return None,
        }
    }
    None
}

async fn stalled_webhook(
    app_addr: std::net::SocketAddr,
    announced: usize,
    sent: usize,
) -> TcpStream {
    let mut s = TcpStream::connect(app_addr).await.unwrap();
    s.write_all(webhook_head(announced).as_bytes())
        .await
        .unwrap();
    s.write_all(&vec![b' '; sent]).await.unwrap();
    s
}

async fn app_with(configure: impl FnOnce(&mut rollcall::config::Settings)) -> TestApp {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    configure(&mut s);
    spawn_with(s, Arc::new(dir)).await
}

#[tokio::test]
async fn a_stalled_webhook_body_is_cut_at_the_deadline_with_a_408() {
    let app = app_with(|s| s.body_timeout = Duration::from_secs(1)).await;
    let mut s = stalled_webhook(app.addr(), 10, 3).await;
    let (status, head, body) = response_within(&mut s, Duration::from_secs(5))
        .await
        .expect("an answer before the client gives up");
    assert_eq!(status, 408);
    assert_eq!(body["code"], "REQUEST_TIMEOUT");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "and the connection is closed"
    );
}

#[tokio::test]
async fn a_webhook_without_a_plausible_signature_is_refused_before_its_body() {
    let app = spawn_app().await;
    for head in [
        "POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_owned(),
        format!(
            "POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nWorkOS-Signature: t={}, v1=00\r\nContent-Length: 100000\r\n\r\n",
            now_ms() - 3_600_000
        ),
    ] {
        let mut s = TcpStream::connect(app.addr()).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        // No body is ever sent: the answer must not wait for one.
        let (status, head, body) = response_within(&mut s, Duration::from_secs(3))
            .await
            .expect("answered without the body");
        assert_eq!(status, 401);
        assert_eq!(body["code"], "UNAUTHORIZED");
        assert!(head.contains("connection: close"));
    }
}

#[tokio::test]
async fn stalled_bodies_give_their_places_to_new_senders_and_deliveries_get_through() {
    let app = app_with(|s| {
        s.max_webhook_bodies = 4;
        s.body_timeout = Duration::from_secs(30);
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_webhook(app.addr(), 10, 1).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Every slot is taken by a stalled body — a real delivery still lands,
    // taking the place of the one that has waited longest…
    let started = Instant::now();
    app.send_all(&[activated("directory_A", ORG_A, 1)]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, head, body) = response_within(&mut stalled[0], Duration::from_secs(2))
        .await
        .expect("the oldest stalled body is answered at once");
    assert_eq!(status, 408);
    assert_eq!(body["code"], "REQUEST_TIMEOUT");
    assert!(head.contains("connection: close"));
    // …and so does everything else.
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    let (status, dirs) = app.get_json("/api/directories", &token_for(ORG_A)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dirs.as_array().unwrap().len(), 1);
    // A flood of new stalled senders keeps evicting its own kind, not the
    // deliveries (whose bodies arrive at once).
    for i in 0..20 {
        let _flood = stalled_webhook(app.addr(), 10, 1).await;
        app.send_all(&[activated(&format!("directory_F{i}"), ORG_A, 2)])
            .await;
    }
}

#[tokio::test]
async fn unverified_bodies_share_a_bounded_memory_budget() {
    let app = app_with(|s| {
        s.max_body_bytes = 512 * 1024;
        s.webhook_body_budget = 1024 * 1024;
        s.body_timeout = Duration::from_secs(30);
    })
    .await;
    let mut a = stalled_webhook(app.addr(), 500 * 1024, 400 * 1024).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _b = stalled_webhook(app.addr(), 500 * 1024, 400 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two stalled bodies hold 800 KiB of the 1 MiB budget: a third needing
    // 400 KiB makes the oldest give its memory back.
    let _c = stalled_webhook(app.addr(), 500 * 1024, 400 * 1024).await;
    let (status, _, _) = response_within(&mut a, Duration::from_secs(3))
        .await
        .expect("the oldest is dropped for the memory");
    assert_eq!(status, 408);
    // A real delivery still lands while the budget is held by stalled ones.
    app.send_all(&[activated("directory_A", ORG_A, 1)]).await;
}

/// The attack run's shape: thousands of connections announcing a body and
/// never sending it, beside hundreds sending almost a whole 1 MiB body and
/// stalling. `/healthz` and reads keep answering within a second and the
/// server's memory stays bounded.
#[tokio::test]
#[ignore = "thousands of connections; run by .ci/run"]
async fn thousands_of_stalled_webhook_bodies_starve_nobody_and_grow_no_memory() {
    let dir = TempDir::new().unwrap();
    let server = Process::start(dir.path(), &dir.path().join("db.redb"), &[]);
    let client = reqwest::Client::new();
    let token = token_for(ORG_A);
    let probe = |path: &'static str| {
        let (client, base, token) = (client.clone(), server.base.clone(), token.clone());
        async move {
            let started = Instant::now();
            let resp = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            (resp.map(|r| r.status()).ok(), started.elapsed())
        }
    };
    let rss_before = server.status_kb("VmRSS");

    let mut held = Vec::new();
    let mut worst = Duration::ZERO;
    let mut deliveries = 0;
    for wave in 0..10 {
        let mut opening = Vec::new();
        for i in 0..500 {
            let addr = server.addr;
            // One in five sends almost a whole 1 MiB body before stalling.
            let sent = if i % 5 == 0 { 1024 * 1024 - 1 } else { 0 };
            opening.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.ok()?;
                s.write_all(webhook_head(1024 * 1024).as_bytes())
                    .await
                    .ok()?;
                if sent > 0 {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        s.write_all(&vec![b' '; sent]),
                    )
                    .await;
                }
                Some(s)
            }));
        }
        for o in opening {
            if let Ok(Some(s)) = o.await {
                held.push(s);
            }
        }
        for path in ["/healthz", "/api/directories"] {
            let (status, took) = probe(path).await;
            assert_eq!(status, Some(StatusCode::OK), "{path} during wave {wave}");
            worst = worst.max(took);
        }
        // A real delivery gets through during the attack.
        let body = serde_json::to_vec(&activated(&format!("directory_W{wave}"), ORG_A, 1)).unwrap();
        let delivered = client
            .post(format!("{}/webhooks/workos", server.base))
            .header(
                "WorkOS-Signature",
                sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms()),
            )
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status());
        if matches!(delivered, Ok(StatusCode::OK)) {
            deliveries += 1;
        }
    }
    assert!(
        held.len() >= 4000,
        "the attack really held {} connections",
        held.len()
    );
    assert!(
        worst < Duration::from_secs(1),
        "/healthz and reads answered within 1 s under the attack (worst {worst:?})"
    );
    let peak_mb = server.status_kb("VmHWM") / 1024;
    eprintln!(
        "stalled-body attack: {} connections, worst probe {worst:?}, {deliveries}/10 deliveries applied, RSS {} MB before, peak {peak_mb} MB",
        held.len(),
        rss_before / 1024
    );
    assert!(peak_mb < 200, "peak RSS {peak_mb} MB under the attack");
    assert_eq!(
        deliveries, 10,
        "every real delivery during the attack was applied"
    );
    drop(held);
    // And webhooks are accepted again afterwards.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let body = serde_json::to_vec(&activated("directory_A", ORG_A, 1)).unwrap();
    let resp = client
        .post(format!("{}/webhooks/workos", server.base))
        .header(
            "WorkOS-Signature",
            sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(server.stop().success());
}

/// Imports a directory of `users` users (every third inactive, each with a
/// `blob`-byte attribute) into the database at `data`, before a server
/// opens it.
fn import_directory(
    data: &std::path::Path,
    org: &str,
    workos_dir: &str,
    users: usize,
    blob: usize,
) {
    let store =
        rollcall::store::Store::open(data, rollcall::store::StoreOptions::default()).unwrap();
    let mut ndjson = format!(
        "{{\"object\":\"directory\",\"id\":\"{workos_dir}\",\"organization_id\":\"{org}\",\"name\":\"Big\",\"type\":\"okta scim v2.0\",\"state\":\"active\",\"created_at\":\"2026-01-01T00:00:00Z\"}}\n"
    );
    let blob = "x".repeat(blob);
    for i in 0..users {
        let state = if i % 3 == 0 { "inactive" } else { "active" };
        ndjson.push_str(&format!(
            "{{\"object\":\"directory_user\",\"id\":\"directory_user_{workos_dir}_{i}\",\"directory_id\":\"{workos_dir}\",\"email\":\"u{i}@{workos_dir}.test\",\"state\":\"{state}\",\"raw_attributes\":{{\"blob\":\"{blob}\"}},\"created_at\":\"{}\"}}\n",
            created(i as i64)
        ));
    }
    rollcall::ingest::ndjson::import(&store, ndjson.as_bytes(), |_| {}).unwrap();
}

async fn app_on(
    users: usize,
    blob: usize,
    configure: impl FnOnce(&mut rollcall::config::Settings),
) -> (TestApp, String) {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    import_directory(&s.data, ORG_A, "directory_big", users, blob);
    import_directory(&s.data, ORG_B, "directory_other", users, blob);
    configure(&mut s);
    let app = spawn_with(s, Arc::new(dir)).await;
    let id = directory_id(&app, ORG_A, "directory_big").await;
    (app, id)
}

#[tokio::test]
async fn filtered_lists_of_a_big_directory_stream_the_same_bytes_a_render_would() {
    let (app, id) = app_on(1500, 200, |s| s.stream_threshold = 100).await;
    let token = token_for(ORG_A);
    let (_, all) = app
        .get_json(&format!("/api/directories/{id}/users"), &token)
        .await;
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 1500);
    let nil = "00000000-0000-0000-0000-000000000000";
    let third = all[2]["id"].as_str().unwrap().to_owned();
    let cases: Vec<(String, Vec<Value>)> = vec![
        (format!("after={nil}"), all.clone()),
        (format!("after={third}"), all[3..].to_vec()),
        (
            "state=active".into(),
            all.iter()
                .filter(|u| u["state"] == "active")
                .cloned()
                .collect(),
        ),
        (
            "state=inactive".into(),
            all.iter()
                .filter(|u| u["state"] == "inactive")
                .cloned()
                .collect(),
        ),
    ];
    for (query, expected) in cases {
        let resp = app
            .get(
                &format!("/api/directories/{id}/users?{query}"),
                Some(&token),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{query}");
        assert!(resp.headers().get("etag").is_some());
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, Value::Array(expected), "{query}");
    }
}

#[tokio::test]
async fn a_page_of_huge_records_ends_early_and_its_link_goes_on() {
    // 600 users of ~40 KB: a page of 1000 would be 24 MB, over the 16 MiB cap.
    let (app, id) = app_on(600, 40_000, |_| {}).await;
    let token = token_for(ORG_A);
    let mut path = Some(format!("/api/directories/{id}/users?limit=1000"));
    let (mut seen, mut pages) = (Vec::new(), Vec::new());
    while let Some(p) = path {
        let resp = app.get(&p, Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        path = resp.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_owned()
        });
        let body = resp.bytes().await.unwrap();
        assert!(body.len() <= 16 * 1024 * 1024, "a page is capped");
        let page: Vec<Value> = serde_json::from_slice(&body).unwrap();
        pages.push(page.len());
        seen.extend(page.into_iter().map(|u| u["id"].clone()));
    }
    assert!(
        pages.len() >= 2 && pages[0] < 600,
        "the first page ended early: {pages:?}"
    );
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (600, 600), "every user once");
}

#[tokio::test]
async fn head_renders_nothing_and_says_the_same_as_get() {
    let (app, id) = app_on(300, 10, |_| {}).await;
    let token = token_for(ORG_A);
    for query in ["", "?state=active", "?limit=7", "?limit=7&state=inactive"] {
        let url = format!("{}/api/directories/{id}/users{query}", app.base);
        let get = app
            .client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let head = app
            .client
            .head(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{query}");
        for h in ["etag", "link", "content-type", "cache-control"] {
            assert_eq!(
                head.headers().get(h),
                get.headers().get(h),
                "{h} for {query:?}"
            );
        }
        assert!(head.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn stream_slots_are_shared_fairly_and_a_full_organization_waits_then_gets_503() {
    let (app, id) = app_on(2000, 10_000, |s| {
        s.stream_threshold = 100;
        s.max_streams = 4;
        s.max_streams_per_org = 2;
        s.stream_wait = Duration::from_secs(1);
    })
    .await;
    let path = format!("/api/directories/{id}/users");
    // ACME takes its two slots with clients that read the head and stop.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(app.addr()).await.unwrap();
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                token_for(ORG_A)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 64];
        let n = s.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
        stalled.push(s);
    }
    // A third ACME stream waits its bounded turn, then is told to retry.
    let started = Instant::now();
    let resp = app.get(&path, Some(&token_for(ORG_A))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Globex is not blocked by ACME: its whole list arrives.
    let other = directory_id(&app, ORG_B, "directory_other").await;
    let (status, list) = app
        .get_json(
            &format!("/api/directories/{other}/users"),
            &token_for(ORG_B),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2000);
}

#[tokio::test]
async fn a_reader_crawling_below_the_minimum_rate_is_dropped_after_the_grace_period() {
    let (app, id) = app_on(2000, 10_000, |s| {
        s.stream_threshold = 100;
        s.stream_grace = Duration::from_secs(1);
        s.min_stream_rate = 1024 * 1024;
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(app.addr()).await.unwrap();
    s.write_all(
        format!(
            "GET /api/directories/{id}/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            token_for(ORG_A)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Read about 100 KB/s — far below the 1 MiB/s minimum — for 8 s…
    let (mut total, started) = (0usize, Instant::now());
    let mut buf = [0u8; 10_000];
    while started.elapsed() < Duration::from_secs(8) {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …then take whatever the server still sends: what it had already
    // handed to the kernel, then the end of a cut-off stream.
    let mut rest = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
    assert!(drained.is_ok(), "the connection ended");
    total += rest.len();
    let list_bytes = 2000 * 10_000;
    assert!(
        total < list_bytes,
        "the crawling reader was cut off before the whole list ({total} of {list_bytes}+ bytes)"
    );
    app.get("/healthz", None).await;
}

/// Starts the real binary on a database holding ACME's big directory (and
/// Globex's), returning it with ACME's directory id.
async fn process_on(dir: &TempDir, users: usize, blob: usize, extra: &[&str]) -> (Process, String) {
    let data = dir.path().join("db.redb");
    import_directory(&data, ORG_A, "directory_big", users, blob);
    import_directory(&data, ORG_B, "directory_other", users / 10, blob);
    let server = Process::start(dir.path(), &data, extra);
    let (_, list) = get_json(&server, "/api/directories", ORG_A).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    (server, id)
}

async fn get_json(server: &Process, path: &str, org: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", server.base))
        .bearer_auth(token_for(org))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

/// Sends a list request and reads only the response head: a client that
/// never reads its body.
async fn never_reading(
    addr: std::net::SocketAddr,
    path: &str,
    org: &str,
    method: &str,
) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            token_for(org)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// CPU seconds the process has used (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Finding 4: `?after=<nil>`, `?state=` and `?email=` used to render the
/// whole filtered list in memory (20 non-reading clients pinned 2 GB on a
/// 120k-user directory) and HEAD rendered it too.
#[tokio::test]
#[ignore = "a 120,000-user directory; run by .ci/run"]
async fn filtered_lists_to_clients_that_never_read_pin_no_memory() {
    let dir = TempDir::new().unwrap();
    let (server, id) = process_on(&dir, 120_000, 600, &[]).await;
    let rss_start = server.status_kb("VmRSS") / 1024;
    // HEAD with a filter costs next to nothing: nothing is rendered.
    let cpu_before = cpu_secs(server.pid());
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let resp = client
            .head(format!(
                "{}/api/directories/{id}/users?state=active",
                server.base
            ))
            .bearer_auth(token_for(ORG_A))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let head_cpu = cpu_secs(server.pid()) - cpu_before;
    let nil = "00000000-0000-0000-0000-000000000000";
    let mut held = Vec::new();
    for i in 0..40 {
        let query = if i % 2 == 0 {
            format!("after={nil}")
        } else {
            "state=active".to_owned()
        };
        let path = format!("/api/directories/{id}/users?{query}");
        held.push(never_reading(server.addr, &path, ORG_A, "GET").await);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let peak = server.status_kb("VmHWM") / 1024;
    eprintln!(
        "40 non-reading filtered-list clients on 120,000 users: RSS {rss_start} MB at start, peak {peak} MB; 50 filtered HEADs took {head_cpu:.2} s of CPU"
    );
    assert!(peak < 200, "peak RSS {peak} MB");
    assert!(head_cpu < 1.0, "50 HEADs used {head_cpu:.2} s of CPU");
    // Another organization is served meanwhile.
    let (_, other) = get_json(&server, "/api/directories", ORG_B).await;
    let other = other[0]["id"].as_str().unwrap().to_owned();
    let (status, list) = get_json(&server, &format!("/api/directories/{other}/users"), ORG_B).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 12_000);
    drop(held);
    assert!(server.stop().success());
}

/// Finding 5: 32 ACME streams trickle-reading at ~100 KB/s used to hold
/// every stream slot past the stall cut-off, and Globex's full list got no
/// answer for 100 s.
#[tokio::test]
#[ignore = "slow readers over tens of seconds; run by .ci/run"]
async fn trickle_readers_of_one_organization_do_not_block_another() {
    let dir = TempDir::new().unwrap();
    let (server, id) = process_on(&dir, 50_000, 600, &["--stream-threshold", "1000"]).await;
    let path = format!("/api/directories/{id}/users");
    let mut trickles = Vec::new();
    for _ in 0..32 {
        let mut s = never_reading(server.addr, &path, ORG_A, "GET").await;
        trickles.push(tokio::spawn(async move {
            // ~100 KB/s for 25 s, then whatever is left, as fast as it comes.
            let mut buf = [0u8; 10_000];
            let (mut total, started) = (0usize, Instant::now());
            let mut head = Vec::new();
            while started.elapsed() < Duration::from_secs(25) {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if head.len() < 12 {
                            head.extend_from_slice(&buf[..n.min(12)]);
                        }
                        total += n;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
            total += rest.len();
            let status =
                (head.len() >= 12).then(|| String::from_utf8_lossy(&head[9..12]).into_owned());
            (status, total)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, other) = get_json(&server, "/api/directories", ORG_B).await;
    let other = other[0]["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (status, list) = get_json(&server, &format!("/api/directories/{other}/users"), ORG_B).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 5_000);
    let mut outcomes = Vec::new();
    for t in trickles {
        outcomes.push(t.await.unwrap());
    }
    let refused = outcomes
        .iter()
        .filter(|(s, _)| s.as_deref() == Some("503"))
        .count();
    // The whole list is ~40 MB: a stream that ended far short was cut.
    let cut = outcomes
        .iter()
        .filter(|(s, total)| s.as_deref() == Some("200") && *total < 20_000_000)
        .count();
    eprintln!(
        "32 trickling ACME streams: Globex's list answered in {took:?}; {refused} ACME requests refused with 503, {cut} trickle streams cut"
    );
    assert!(took < Duration::from_secs(5), "Globex waited {took:?}");
    assert_eq!(refused, 32 - 8, "ACME holds at most its share of 8 slots");
    assert_eq!(
        cut, 8,
        "and its crawling streams are cut after the grace period"
    );
    assert!(server.stop().success());
}

/// Sends `count` signed updates (32 senders) renaming users of ACME's big
/// directory; returns how many were acknowledged.
async fn rename_users(server: &Process, users: usize, count: usize, round: usize) -> usize {
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for worker in 0..32usize {
        let (client, base) = (client.clone(), server.base.clone());
        senders.push(tokio::spawn(async move {
            let mut ok = 0;
            for n in (worker..count).step_by(32) {
                let i = n % users;
                let at = 1000 + (round * count + n) as i64;
                let mut u = user(
                    "directory_big",
                    &format!("directory_user_directory_big_{i}"),
                    &format!("u{i}@directory_big.test"),
                    at,
                );
                u["first_name"] = serde_json::json!(format!("Name {round}-{n}"));
                let body = serde_json::to_vec(&user_event("updated", u, at)).unwrap();
                let resp = client
                    .post(format!("{base}/webhooks/workos"))
                    .header(
                        "WorkOS-Signature",
                        sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms()),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                if resp.status() == StatusCode::OK {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut applied = 0;
    for s in senders {
        applied += s.await.unwrap();
    }
    applied
}

/// Finding 6: one slow reader used to pin a snapshot while 40,000 signed
/// updates went in, growing the file from 329 MB to 2.63 GB for good. Now
/// the same updates grow the file alike with and without a slow reader.
#[tokio::test]
#[ignore = "80,000 signed updates; run by .ci/run"]
async fn a_slow_reader_does_not_grow_the_database_file() {
    let dir = TempDir::new().unwrap();
    let users = 60_000usize;
    // No minimum rate: the reader stays for the whole run.
    let (server, id) = process_on(
        &dir,
        users,
        600,
        &["--stream-threshold", "1000", "--min-stream-rate-kib", "0"],
    )
    .await;
    let db = dir.path().join("db.redb");
    let size = || std::fs::metadata(&db).unwrap().len();
    let imported = size();
    // First without a reader: what 40,000 updates cost the file anyway.
    assert_eq!(rename_users(&server, users, 40_000, 0).await, 40_000);
    let without_reader = size();

    let mut reader = never_reading(
        server.addr,
        &format!("/api/directories/{id}/users"),
        ORG_A,
        "GET",
    )
    .await;
    let reading = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        // ~40 KB/s: slow, never stalled, never done.
        for _ in 0..3000 {
            match tokio::time::timeout(Duration::from_secs(60), reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => total += n,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        total
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rename_users(&server, users, 40_000, 1).await, 40_000);
    let with_reader = size();
    reading.abort();
    eprintln!(
        "file: {} MB imported; {} MB after 40,000 updates without a reader; {} MB after 40,000 more under a slow reader",
        imported / 1_000_000,
        without_reader / 1_000_000,
        with_reader / 1_000_000
    );
    assert!(
        with_reader < without_reader * 5 / 4,
        "the slow reader's updates grew the file from {without_reader} to {with_reader} bytes"
    );
    assert!(with_reader < 2 * imported, "less than 2x overall");
    assert!(server.stop().success());
}

#[tokio::test]
async fn one_organizations_filtered_lists_cannot_take_the_disk_from_another() {
    // 40 MB of body files, 2 of 8 stream slots per organization: an
    // organization's private bodies may hold 10 MB; a list here is ~7 MB.
    let (app, id) = app_on(3000, 2000, |s| {
        s.stream_threshold = 100;
        s.max_streams = 8;
        s.max_streams_per_org = 2;
        s.stream_wait = Duration::from_secs(1);
        s.body_files_budget = 40 * 1024 * 1024;
    })
    .await;
    // A first whole list measures how large the records are.
    let (status, _) = app
        .get_raw(&format!("/api/directories/{id}/users"), &token_for(ORG_A))
        .await;
    assert_eq!(status, StatusCode::OK);
    let _holding = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(app.addr()).await.unwrap();
        s.write_all(
            format!(
                "GET /api/directories/{id}/users?state=active HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                token_for(ORG_A)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[9..12], b"200");
        s
    };
    // ACME's next filtered list would pass its share of the disk: refused…
    let resp = app
        .get(
            &format!("/api/directories/{id}/users?state=inactive"),
            Some(&token_for(ORG_A)),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    // …while Globex's filtered list is served whole.
    let other = directory_id(&app, ORG_B, "directory_other").await;
    let (status, list) = app
        .get_json(
            &format!("/api/directories/{other}/users?state=active"),
            &token_for(ORG_B),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2000);
}
