//! `/metrics` on its own listener and the access log, through the real
//! binary: a scripted workload, then the scraped values and the logged
//! lines checked one by one, and no tenant data anywhere in them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::*;
use crate::process::Process;
use crate::workos::*;

const DIR_WORKOS: &str = "directory_01METRICSDIR00000000";
const USER_WORKOS: &str = "directory_user_01METRICSUSR0000";
const EMAIL: &str = "ada.metrics@acme.test";

async fn scrape(client: &reqwest::Client, addr: std::net::SocketAddr) -> (String, String) {
    let resp = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (kind, resp.text().await.unwrap())
}

/// Scrapes until `ready` holds (a request's last bytes reach the client a
/// moment before the server marks it done), at most 5 s.
async fn scrape_when(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> (String, HashMap<String, f64>) {
    let started = Instant::now();
    loop {
        let (_, text) = scrape(client, addr).await;
        let values = metric_samples(&text);
        if ready(&values) || started.elapsed() > Duration::from_secs(5) {
            return (text, values);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value(values: &HashMap<String, f64>, key: &str) -> f64 {
    *values
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in the scrape"))
}

async fn post_webhook(
    client: &reqwest::Client,
    base: &str,
    body: &[u8],
    signature: &str,
) -> (StatusCode, Value) {
    let resp = client
        .post(format!("{base}/webhooks/workos"))
        .header("content-type", "application/json")
        .header("WorkOS-Signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_workload_is_counted_exactly_and_no_label_carries_tenant_data() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("metrics.redb");
    let server = Process::start(dir.path(), &data, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = server.metrics.expect("the metrics listener is logged");
    assert_ne!(metrics.port(), server.addr.port());
    let client = reqwest::Client::new();
    let base = server.base.as_str();

    // Webhooks: the directory and a user applied, the user again (the same
    // event id: a duplicate), and one with a bad signature.
    let events = [
        activated(DIR_WORKOS, ORG_A, 0),
        user_event("created", user(DIR_WORKOS, USER_WORKOS, EMAIL, 1), 1),
    ];
    let mut bodies = Vec::new();
    for event in events.iter().chain([&events[1]]) {
        let body = serde_json::to_vec(event).unwrap();
        let signature = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
        bodies.push((body, signature));
    }
    let mut outcomes = Vec::new();
    for (body, signature) in &bodies {
        let (status, ack) = post_webhook(&client, base, body, signature).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        outcomes.push(ack["outcome"].as_str().unwrap().to_owned());
    }
    assert_eq!(outcomes, ["applied", "applied", "duplicate"]);
    let forged = sign_webhook(b"not-the-secret", &bodies[0].0, now_ms());
    let (status, _) = post_webhook(&client, base, &bodies[0].0, &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Reads: the directory list once, the users list three times and once
    // without a token. Every body's length is added up.
    let token = token_for(ORG_A);
    let mut sent_users = 0;
    let resp = client
        .get(format!("{base}/api/directories"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = resp.json().await.unwrap();
    let dir_id = list[0]["id"].as_str().unwrap().to_owned();
    let users_path = format!("{base}/api/directories/{dir_id}/users");
    let mut users_body_len = 0;
    for _ in 0..3 {
        let resp = client
            .get(&users_path)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.bytes().await.unwrap();
        assert!(body.windows(EMAIL.len()).any(|w| w == EMAIL.as_bytes()));
        users_body_len = body.len();
        sent_users += body.len();
    }
    let resp = client.get(&users_path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    sent_users += resp.bytes().await.unwrap().len();

    let users_ok = r#"rollcall_http_requests_total{route="/api/directories/{id}/users",method="GET",status="200"}"#;
    let (text, v) = scrape_when(&client, metrics, |v| {
        v.get(users_ok) == Some(&3.0)
            && v.get("rollcall_http_requests_in_flight") == Some(&0.0)
            && v.get(r#"rollcall_http_request_duration_seconds_count{route="/api/directories/{id}/users"}"#)
                == Some(&4.0)
    })
    .await;

    // Requests by route template, method and status.
    for (key, want) in [
        (users_ok, 3.0),
        (
            r#"rollcall_http_requests_total{route="/api/directories/{id}/users",method="GET",status="401"}"#,
            1.0,
        ),
        (
            r#"rollcall_http_requests_total{route="/api/directories",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"rollcall_http_requests_total{route="/webhooks/workos",method="POST",status="200"}"#,
            3.0,
        ),
        (
            r#"rollcall_http_requests_total{route="/webhooks/workos",method="POST",status="401"}"#,
            1.0,
        ),
        (
            r#"rollcall_http_request_duration_seconds_count{route="/api/directories/{id}/users"}"#,
            4.0,
        ),
        (
            r#"rollcall_http_request_duration_seconds_bucket{route="/api/directories/{id}/users",le="+Inf"}"#,
            4.0,
        ),
        (
            r#"rollcall_http_request_duration_seconds_count{route="/webhooks/workos"}"#,
            4.0,
        ),
        (
            r#"rollcall_http_response_bytes_total{route="/api/directories/{id}/users"}"#,
            sent_users as f64,
        ),
        ("rollcall_http_requests_in_flight", 0.0),
        // Webhook deliveries by outcome; events applied by type.
        (
            r#"rollcall_webhook_deliveries_total{outcome="applied"}"#,
            2.0,
        ),
        (
            r#"rollcall_webhook_deliveries_total{outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"rollcall_webhook_deliveries_total{outcome="unchanged"}"#,
            0.0,
        ),
        (
            r#"rollcall_webhook_deliveries_total{outcome="rejected",reason="signature"}"#,
            1.0,
        ),
        (
            r#"rollcall_webhook_deliveries_total{outcome="rejected",reason="invalid"}"#,
            0.0,
        ),
        (
            r#"rollcall_events_applied_total{type="dsync.activated"}"#,
            1.0,
        ),
        (
            r#"rollcall_events_applied_total{type="dsync.user.created"}"#,
            1.0,
        ),
        (
            r#"rollcall_events_applied_total{type="dsync.user.updated"}"#,
            0.0,
        ),
        // One commit per delivered event (sent one at a time).
        ("rollcall_commit_batch_size_count", 3.0),
        ("rollcall_commit_batch_size_sum", 3.0),
        ("rollcall_commit_duration_seconds_count", 3.0),
        ("rollcall_commit_failures_total", 0.0),
        // The users list: rendered once, then served from the cache twice.
        ("rollcall_cache_misses_total", 1.0),
        ("rollcall_cache_hits_total", 2.0),
        ("rollcall_cache_bytes", users_body_len as f64),
        ("rollcall_body_file_bytes", 0.0),
        ("rollcall_streams_in_flight", 0.0),
        ("rollcall_directories", 1.0),
        ("rollcall_users", 1.0),
        ("rollcall_groups", 0.0),
        ("rollcall_sync_enabled", 0.0),
    ] {
        assert_eq!(value(&v, key), want, "{key}");
    }
    assert_eq!(
        value(&v, "rollcall_database_bytes"),
        std::fs::metadata(&data).unwrap().len() as f64
    );
    assert!(value(&v, "process_resident_memory_bytes") > 1e6);
    assert!(value(&v, "process_open_fds") >= 3.0);
    assert!(value(&v, "process_cpu_seconds_total") > 0.0);
    // Only route templates, never a path.
    let routes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    for route in &routes {
        assert!(
            [
                "/healthz",
                "/readyz",
                "/api/spec.json",
                "/api/directories",
                "/api/directories/{id}",
                "/api/directories/{id}/users",
                "/api/directories/{id}/groups",
                "/webhooks/workos",
                "/scim/v2/{id}/Users",
                "/scim/v2/{id}/Groups",
                "/scim/v2/{id}",
                "other",
            ]
            .contains(route),
            "{route}"
        );
    }
    // No tenant data anywhere: organization, directory and user ids, the
    // email, the user's other identifiers.
    for secret in [
        ORG_A,
        DIR_WORKOS,
        dir_id.as_str(),
        USER_WORKOS,
        EMAIL,
        "acme.test",
        "org_ignored",
        "idp-",
    ] {
        let line = text.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret} scraped in {line:?}");
    }

    // The API listener does not serve /metrics.
    let resp = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("rollcall_"), "{body}");
    // Only GET and HEAD of /metrics on its own listener.
    let (kind, _) = scrape(&client, metrics).await;
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let resp = client
        .get(format!("http://{metrics}/api/directories"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = client
        .post(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The scrapes themselves are not API requests.
    let (_, v) = scrape(&client, metrics).await;
    let other = r#"rollcall_http_requests_total{route="other",method="GET",status="404"}"#;
    assert_eq!(
        value(&metric_samples(&v), other),
        1.0,
        "the API's /metrics 404"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_there_is_no_metrics_listener() {
    // The binary: nothing listening logged, /metrics not on the API.
    let dir = TempDir::new().unwrap();
    let server = Process::start(dir.path(), &dir.path().join("off.redb"), &[]);
    assert_eq!(server.metrics, None);
    let logs = server.logs.lock().unwrap().clone();
    assert!(
        !logs.iter().any(|l| l.contains("metrics listening")),
        "{logs:?}"
    );
    let resp = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The server as a library: no second address bound.
    let dir = TempDir::new().unwrap();
    let app = rollcall::app::Application::build(settings(dir.path()))
        .await
        .unwrap();
    assert_eq!(app.metrics_addr(), None);
    let mut on = settings(dir.path());
    on.data = dir.path().join("on.redb");
    on.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = rollcall::app::Application::build(on).await.unwrap();
    let addr = app.metrics_addr().expect("bound");
    assert_ne!(addr.port(), 0);
    assert_ne!(addr.port(), app.port());
}

/// The access log's lines so far, parsed.
fn access_lines(server: &Process) -> Vec<Value> {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "rollcall::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_line_per_request_and_no_token_or_email() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("access.redb");
    let server = Process::start(dir.path(), &data, &["--access-log"]);
    let client = reqwest::Client::new();
    let base = server.base.as_str();
    let event = activated(DIR_WORKOS, ORG_A, 0);
    let body = serde_json::to_vec(&event).unwrap();
    let signature = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
    let (status, _) = post_webhook(&client, base, &body, &signature).await;
    assert_eq!(status, StatusCode::OK);

    let token = token_for(ORG_A);
    let secret_email = "secret@x.test";
    let mut ids = Vec::new();
    // (path, token, client's X-Request-Id, status, route)
    let requests: [(&str, bool, Option<&str>, u16, &str); 4] = [
        (
            "/api/directories?email=secret@x.test",
            true,
            None,
            200,
            "/api/directories",
        ),
        ("/healthz", false, Some("client-id.1_x"), 200, "/healthz"),
        (
            "/api/directories/nope/users?email=secret%40x.test",
            true,
            Some("not acceptable!"),
            400,
            "/api/directories/{id}/users",
        ),
        ("/no/such/secret@x.test", false, None, 404, "other"),
    ];
    for (path, with_token, client_id, want, _) in requests {
        let mut req = client.get(format!("{base}{path}"));
        if with_token {
            req = req.bearer_auth(&token);
        }
        if let Some(id) = client_id {
            req = req.header("X-Request-Id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let bytes = resp.bytes().await.unwrap().len();
        ids.push((id, bytes));
    }
    // A well-formed client id is echoed; a malformed one is replaced.
    assert_eq!(ids[1].0, "client-id.1_x");
    assert_ne!(ids[2].0, "not acceptable!");
    let ours: Vec<&str> = [0, 2, 3].iter().map(|&i| ids[i].0.as_str()).collect();
    for id in &ours {
        assert!(
            id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{id}"
        );
    }
    assert!(ours[0] != ours[1] && ours[1] != ours[2] && ours[0] != ours[2]);

    let started = Instant::now();
    while access_lines(&server).len() < 5 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = access_lines(&server);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let webhook = &lines[0]["fields"];
    assert_eq!(webhook["method"], "POST");
    assert_eq!(webhook["route"], "/webhooks/workos");
    assert_eq!(webhook["status"], 200);
    for ((id, bytes), (path, _, _, status, route)) in ids.iter().zip(requests) {
        let line = lines
            .iter()
            .find(|l| l["fields"]["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no line for {id} ({path}): {lines:?}"));
        let fields = &line["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["method"], "GET", "{path}");
        assert_eq!(fields["route"], route, "{path}");
        assert_eq!(fields["status"], status, "{path}");
        assert_eq!(fields["bytes"], *bytes as u64, "{path}");
        let ms = fields["duration_ms"].as_f64().unwrap();
        assert!((0.0..5_000.0).contains(&ms), "{path}: {ms}");
        assert_eq!(line["level"], "INFO");
        let time = line["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    }
    let logs = server.logs.clone();
    let status = server.stop();
    assert!(status.success(), "{status}");

    // Neither the token nor the email (nor any query) anywhere in stderr.
    let all = logs.lock().unwrap().join("\n");
    for secret in [
        token.as_str(),
        secret_email,
        "secret%40x.test",
        "email=",
        "/no/such",
        "nope",
    ] {
        assert!(!all.contains(secret), "{secret} logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_measured_calls_by_status_including_429s_backfill_and_lag() {
    use crate::fake_workos::{FakeOptions, FakeWorkos, Seed};
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    let seeded = fake.seed(&Seed {
        directories: 2,
        users_per_directory: 5,
        groups_per_directory: 1,
        ..Seed::default()
    });
    // Two rate-limited answers, each waited out (Retry-After: 1).
    fake.fail_next("/directory_users", 2, 429);
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("sync.redb");
    let before = now_secs() as f64;
    let base_url = fake.base_url();
    let server = Process::start(
        dir.path(),
        &data,
        &[
            "--workos-api-key",
            fake.api_key(),
            "--workos-api-url",
            &base_url,
            "--workos-requests-per-minute",
            "0",
            "--workos-directory-users-per-second",
            "0",
            "--poll-interval-secs",
            "3600",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics = server.metrics.expect("the metrics listener is logged");
    wait_ready(&server.base).await;
    let client = reqwest::Client::new();
    // Once the first poll has drained the events, nothing more is asked
    // for an hour: the counts settle and must match what the fake saw.
    let answered = |status: u16| {
        fake.requests()
            .iter()
            .filter(|r| r.status == status)
            .count() as f64
    };
    let (text, v) = scrape_when(&client, metrics, |v| {
        v.contains_key("rollcall_sync_last_poll_timestamp_seconds")
            && v.get(r#"rollcall_workos_api_calls_total{status="200"}"#) == Some(&answered(200))
    })
    .await;
    let after = now_secs() as f64 + 1.0;
    assert_eq!(
        value(&v, r#"rollcall_workos_api_calls_total{status="200"}"#),
        answered(200)
    );
    assert!(answered(200) >= 6.0, "directories, users, groups, events");
    assert_eq!(
        value(&v, r#"rollcall_workos_api_calls_total{status="429"}"#),
        2.0
    );
    assert_eq!(answered(429), 2.0);
    assert_eq!(
        value(&v, r#"rollcall_workos_api_calls_total{status="error"}"#),
        0.0
    );
    assert_eq!(value(&v, "rollcall_sync_enabled"), 1.0);
    for (kind, want) in [("directories", 2.0), ("users", 10.0), ("groups", 2.0)] {
        let key = format!(r#"rollcall_sync_backfill_objects{{kind="{kind}"}}"#);
        assert_eq!(value(&v, &key), want, "{key}");
    }
    let completed = value(&v, "rollcall_sync_backfill_completed_timestamp_seconds");
    assert!(
        (before..after).contains(&completed),
        "{before} {completed} {after}"
    );
    let took = value(&v, "rollcall_sync_backfill_duration_seconds");
    assert!((1.0..60.0).contains(&took), "two 1 s waits: {took}");
    let polled = value(&v, "rollcall_sync_last_poll_timestamp_seconds");
    assert!((completed..after).contains(&polled));
    let lag = value(&v, "rollcall_sync_event_lag_seconds");
    assert!((0.0..60.0).contains(&lag), "{lag}");
    assert_eq!(value(&v, "rollcall_directories"), 2.0);
    assert_eq!(value(&v, "rollcall_users"), 10.0);
    assert_eq!(value(&v, "rollcall_groups"), 2.0);
    // No reconcile round yet: nothing said about one.
    assert!(!text.contains("rollcall_sync_reconcile"), "{text}");
    for secret in seeded.organizations.iter().chain(&seeded.directories) {
        assert!(!text.contains(secret.as_str()), "{secret} scraped");
    }
    assert!(!text.contains('@'), "an email scraped");
    assert!(server.stop().success());
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_reconcile_round_is_measured() {
    use crate::fake_workos::{FakeOptions, FakeWorkos, Seed};
    let fake = FakeWorkos::start(FakeOptions::default()).await;
    fake.seed(&Seed {
        directories: 2,
        users_per_directory: 3,
        ..Seed::default()
    });
    let dir = TempDir::new().unwrap();
    let before = now_secs() as f64;
    let base_url = fake.base_url();
    let server = Process::start(
        dir.path(),
        &dir.path().join("reconcile.redb"),
        &[
            "--workos-api-key",
            fake.api_key(),
            "--workos-api-url",
            &base_url,
            "--workos-requests-per-minute",
            "0",
            "--workos-directory-users-per-second",
            "0",
            "--reconcile-interval-secs",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics = server.metrics.expect("the metrics listener is logged");
    wait_ready(&server.base).await;
    let client = reqwest::Client::new();
    let (_, v) = scrape_when(&client, metrics, |v| {
        v.contains_key("rollcall_sync_reconcile_timestamp_seconds")
    })
    .await;
    let at = value(&v, "rollcall_sync_reconcile_timestamp_seconds");
    assert!((before..now_secs() as f64 + 1.0).contains(&at), "{at}");
    let took = value(&v, "rollcall_sync_reconcile_duration_seconds");
    assert!((0.0..30.0).contains(&took), "{took}");
    assert_eq!(value(&v, "rollcall_sync_reconcile_complete"), 1.0);
    for (kind, want) in [
        ("directories", 2.0),
        ("created", 0.0),
        ("updated", 0.0),
        ("deleted", 0.0),
    ] {
        let key = format!(r#"rollcall_sync_reconcile_objects{{kind="{kind}"}}"#);
        assert_eq!(value(&v, &key), want, "{key}");
    }
    assert!(value(&v, r#"rollcall_sync_reconcile_objects{kind="pages"}"#) >= 2.0);
    assert!(server.stop().success());
    fake.stop().await;
}
