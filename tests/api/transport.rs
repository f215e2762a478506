//! Hostile transport: oversized and countless headers, malformed request
//! heads and targets, slowly dribbled headers, many idle connections, a
//! client that stops reading a large response, a second server on the same
//! port, a full connection cap. Each time the server answers in the JSON
//! error shape where the connection allows an answer, and stays responsive
//! to everyone else.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rollcall::app::{Application, StartupError};
use rollcall::store::{Store, StoreOptions};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn healthy(app: &TestApp) {
    let started = Instant::now();
    let resp = app.get("/healthz", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server stayed responsive"
    );
}

/// Reads whatever the server answers until it closes (or `limit` passes).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

async fn app_with(configure: impl FnOnce(&mut rollcall::config::Settings)) -> TestApp {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    configure(&mut s);
    spawn_with(s, Arc::new(dir)).await
}

#[tokio::test]
async fn oversized_or_countless_headers_are_refused_and_nothing_else_suffers() {
    let app = spawn_app().await;
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let many = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..5000)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for request in [huge, many] {
        let mut stream = TcpStream::connect(app.addr()).await.unwrap();
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .expect("the connection is closed");
        let answer = Answer::parse(&answer);
        assert_eq!(
            answer.status_line,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert_eq!(answer.json()["code"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
        healthy(&app).await;
    }
}

#[tokio::test]
async fn slowly_dribbled_headers_are_cut_off_after_the_header_timeout() {
    let app = app_with(|s| s.header_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if stream
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut probe = [0u8; 512];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the dribbling client was cut off");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "well before it finished dribbling"
    );
    healthy(&app).await;
}

#[tokio::test]
async fn many_idle_connections_neither_block_others_nor_stay_open_forever() {
    let app = app_with(|s| s.header_timeout = Duration::from_secs(2)).await;
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(app.addr()).await.unwrap());
    }
    healthy(&app).await;
    let (_, list) = app.get_json("/api/directories", &token_for(ORG_A)).await;
    assert_eq!(list, serde_json::json!([]));

    // Idle connections are closed once they have sent no request within the
    // header timeout, so they cannot pile up.
    let mut closed = 0;
    for stream in idle.iter_mut().take(50) {
        if read_until_closed(stream, Duration::from_secs(10))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 50);
}

#[tokio::test]
async fn a_client_that_stops_reading_a_streamed_list_is_dropped_and_others_proceed() {
    // A directory whose list (about 24 MB) is far more than socket buffers hold.
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    let store = Store::open(&s.data, StoreOptions::default()).unwrap();
    let mut ndjson = format!(
        "{{\"object\":\"directory\",\"id\":\"directory_S\",\"organization_id\":\"{ORG_A}\",\"name\":\"S\",\"type\":\"okta scim v2.0\",\"state\":\"active\",\"created_at\":\"2026-01-01T00:00:00Z\"}}\n"
    );
    let blob = "x".repeat(12_000);
    for i in 0..2000 {
        ndjson.push_str(&format!(
            "{{\"object\":\"directory_user\",\"id\":\"directory_user_{i}\",\"directory_id\":\"directory_S\",\"email\":\"u{i}@acme.test\",\"state\":\"active\",\"raw_attributes\":{{\"blob\":\"{blob}\"}},\"created_at\":\"{}\"}}\n",
            created(i as i64)
        ));
    }
    rollcall::ingest::ndjson::import(&store, ndjson.as_bytes(), |_| {}).unwrap();
    drop(store);
    s.stream_threshold = 100;
    s.max_streams = 1;
    s.stream_stall = Duration::from_secs(1);
    let app = spawn_with(s, Arc::new(dir)).await;
    let dir_id = directory_id(&app, ORG_A, "directory_S").await;
    let path = format!("/api/directories/{dir_id}/users");

    // The stalled client: asks, reads the head, then nothing.
    let mut stalled = TcpStream::connect(app.addr()).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token_for(ORG_A)
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 1024];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    // Meanwhile: the server answers others, and the next stream (which
    // waits for the only stream slot) gets the whole list once the stalled
    // one has been dropped.
    healthy(&app).await;
    let (status, list) = app.get_json(&path, &token_for(ORG_A)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2000);

    // The stalled response was cut off: reading it now ends before the
    // whole list (an aborted chunked body).
    let rest = read_until_closed(&mut stalled, Duration::from_secs(30))
        .await
        .unwrap_or_default();
    assert!(
        rest.len() < 20_000_000,
        "the stalled stream was abandoned ({} bytes)",
        rest.len()
    );
}

#[tokio::test]
async fn malformed_request_heads_are_a_json_400_then_a_close() {
    let app = spawn_app().await;
    let post = "POST /webhooks/workos HTTP/1.1\r\nHost: x\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unparsable content-length",
            format!("{post}Content-Length: abc\r\n\r\n").into_bytes(),
        ),
        (
            "conflicting content-lengths",
            format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello").into_bytes(),
        ),
        (
            "transfer-encoding not ending in chunked",
            format!("{post}Transfer-Encoding: gzip\r\n\r\n").into_bytes(),
        ),
        (
            "folded header (obs-fold)",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n".to_vec(),
        ),
        ("HTTP/0.9 request line", b"GET /\r\n".to_vec()),
        (
            "no version at all",
            b"GET /healthz\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, request) in cases {
        let answer = exchange(&app, &request).await;
        assert_eq!(answer.status_line, "HTTP/1.1 400 Bad Request", "{what}");
        assert_eq!(answer.header("connection"), "close", "{what}");
        let body = answer.json();
        assert_eq!(body["code"], "BAD_REQUEST", "{what}");
        assert_eq!(body["status"], 400, "{what}");
        assert_eq!(body["data"]["code"], "VALIDATION_ERROR", "{what}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    healthy(&app).await;
}

#[tokio::test]
async fn request_heads_over_32_kib_or_64_headers_are_a_json_431() {
    let app = spawn_app().await;
    let too_large = json!({"code": "REQUEST_HEADER_FIELDS_TOO_LARGE"});

    // Exactly 32 KiB of head passes; one byte more does not.
    let answer = exchange(&app, &head_of_size(32 * 1024)).await;
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK");
    let answer = exchange(&app, &head_of_size(32 * 1024 + 1)).await;
    assert_eq!(
        answer.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    // One header of 40,000 bytes.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000 - "X-Big: ".len())
    );
    let answer = exchange(&app, big.as_bytes()).await;
    assert_eq!(
        answer.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(answer.header("connection"), "close");
    let body = answer.json();
    assert_eq!(body["code"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
    assert_eq!(body["status"], 431);
    assert_eq!(body["data"], too_large);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    // 64 headers pass, 65 do not.
    let with_headers = |n: usize| {
        let mut r = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_owned();
        for i in 2..n {
            r.push_str(&format!("X-H{i}: v\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    let answer = exchange(&app, &with_headers(64)).await;
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK");
    let answer = exchange(&app, &with_headers(65)).await;
    assert_eq!(
        answer.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(answer.json()["data"], too_large);
    healthy(&app).await;
}

#[tokio::test]
async fn a_second_rollcall_on_the_same_port_is_refused() {
    let app = spawn_app().await;
    let other = TempDir::new().unwrap();
    let mut s = settings(other.path());
    s.listen = app.addr();
    let Err(e) = Application::build(s).await else {
        panic!("a second rollcall bound {}", app.addr());
    };
    let message = e.to_string();
    assert!(
        matches!(e, StartupError::Bind { addr, .. } if addr == app.addr()),
        "refused for the port: {message}"
    );
    assert!(
        message.contains(&app.addr().to_string()),
        "the message names the address: {message}"
    );
    // The first one still serves, alone.
    for _ in 0..20 {
        healthy(&app).await;
    }
}

#[tokio::test]
async fn a_port_held_by_another_program_is_refused() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.listen = addr;
    match Application::build(s).await {
        Err(StartupError::Bind { addr: refused, .. }) => assert_eq!(refused, addr),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("rollcall bound {addr}, which another program holds"),
    }
}

/// One HTTP/1.1 answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status_line: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    /// Parses everything the server sent (one answer, then the close).
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!("no complete answer head in {text:?}");
        };
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status_line,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The body as JSON, after checking it is announced as exactly that.
    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), "application/json", "{self:?}");
        assert_eq!(
            self.header("content-length"),
            self.body.len().to_string(),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(app: &TestApp, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    let _ = stream.write_all(request).await;
    let raw = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the server closes the connection after answering");
    Answer::parse(&raw)
}

/// A GET of `/healthz` whose head (request line to the empty line) is
/// exactly `size` bytes, padded with one header.
fn head_of_size(size: usize) -> Vec<u8> {
    let bare = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: \r\n\r\n";
    let mut head = bare.replace(
        "X-Pad: ",
        &format!("X-Pad: {}", "a".repeat(size - bare.len())),
    );
    head.truncate(size);
    assert_eq!(head.len(), size);
    head.into_bytes()
}

#[tokio::test]
async fn authority_form_and_asterisk_targets_are_a_json_400_naming_the_path() {
    let app = spawn_app().await;
    for request_line in [
        "CONNECT a:1 HTTP/1.1",
        "GET a:1 HTTP/1.1",
        "GET 127.0.0.1:80 HTTP/1.1",
        "OPTIONS * HTTP/1.1",
    ] {
        let request = format!("{request_line}\r\nHost: a:1\r\nConnection: close\r\n\r\n");
        let answer = exchange(&app, request.as_bytes()).await;
        assert_eq!(
            answer.status_line, "HTTP/1.1 400 Bad Request",
            "{request_line}"
        );
        let body = answer.json();
        assert_eq!(body["code"], "BAD_REQUEST", "{request_line}");
        assert_eq!(body["status"], 400);
        assert_eq!(
            body["data"],
            json!({"code": "VALIDATION_ERROR", "field": "path"}),
            "{request_line}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The absolute form with a path is a normal request.
    let answer = exchange(
        &app,
        b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK");
    assert_eq!(answer.json(), json!({"status": "ok"}));
    healthy(&app).await;
}

#[tokio::test]
async fn authority_form_targets_leave_no_error_in_the_log() {
    let dir = TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--jwt-secret", "transport-test-secret-0123456789abcdef"])
        .arg("--data")
        .arg(dir.path().join("log.redb"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut connected = None;
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            connected = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(connected.expect("the server started"));
    let mut answered = 0;
    for i in 0..100 {
        let line = if i % 2 == 0 { "CONNECT a:1" } else { "GET a:1" };
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("{line} HTTP/1.1\r\nHost: a:1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let raw = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        if raw.is_some_and(|r| r.starts_with(b"HTTP/1.1 400 ")) {
            answered += 1;
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(logs.contains("rollcall listening"), "captured: {logs}");
    assert_eq!(answered, 100, "every request was answered");
    for bad in ["ERROR", "panic", "internal error"] {
        assert!(!logs.contains(bad), "{bad:?} in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_an_in_memory_list_is_cut_off() {
    // A directory whose plain user list (about 10 MB) is rendered in memory
    // (under the stream threshold) and far more than socket buffers hold.
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    let store = Store::open(&s.data, StoreOptions::default()).unwrap();
    let mut ndjson = format!(
        "{{\"object\":\"directory\",\"id\":\"directory_M\",\"organization_id\":\"{ORG_A}\",\"name\":\"M\",\"type\":\"okta scim v2.0\",\"state\":\"active\",\"created_at\":\"2026-01-01T00:00:00Z\"}}\n"
    );
    let blob = "y".repeat(10_000);
    for i in 0..1000 {
        ndjson.push_str(&format!(
            "{{\"object\":\"directory_user\",\"id\":\"directory_user_{i}\",\"directory_id\":\"directory_M\",\"email\":\"u{i}@acme.test\",\"state\":\"active\",\"raw_attributes\":{{\"blob\":\"{blob}\"}},\"created_at\":\"{}\"}}\n",
            created(i as i64)
        ));
    }
    rollcall::ingest::ndjson::import(&store, ndjson.as_bytes(), |_| {}).unwrap();
    drop(store);
    s.stream_threshold = 100_000;
    s.write_stall = Duration::from_secs(1);
    let app = spawn_with(s, Arc::new(dir)).await;
    let dir_id = directory_id(&app, ORG_A, "directory_M").await;

    // The stalled client: a small receive window, asks, reads the head, then
    // nothing.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&app.addr().into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stalled = TcpStream::from_std(socket.into()).unwrap();
    let request = format!(
        "GET /api/directories/{dir_id}/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token_for(ORG_A)
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = stalled.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("an in-memory body has a content-length")
        .trim()
        .parse()
        .unwrap();
    assert!(length > 9_000_000, "a large body: {length}");

    // Meanwhile the server answers others.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        healthy(&app).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The stalled connection was cut: what is left in the socket buffers
    // ends (close or reset) well before the whole body.
    let rest = read_until_closed(&mut stalled, Duration::from_secs(10))
        .await
        .expect("the server closed the stalled connection");
    assert!(
        n + rest.len() < length,
        "cut off before the end: {} of {length} bytes",
        n + rest.len()
    );
    healthy(&app).await;
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_idle_connection_makes_room() {
    let app = app_with(|s| {
        s.max_connections = 50;
        s.header_timeout = Duration::from_secs(10);
    })
    .await;
    let mut idle = Vec::new();
    for i in 0..50 {
        idle.push(TcpStream::connect(app.addr()).await.unwrap());
        if i == 0 {
            // The first is clearly the oldest.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let asked = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        exchange(
            &app,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("/healthz answered within 2 s at the connection cap");
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK");
    assert_eq!(answer.json(), json!({"status": "ok"}));
    assert!(asked.elapsed() < Duration::from_secs(2));

    // The oldest idle connection is the one that made room.
    let closed = read_until_closed(&mut idle[0], Duration::from_secs(2)).await;
    assert_eq!(
        closed,
        Some(Vec::new()),
        "the oldest idle connection was closed"
    );
    // The others are still there.
    let mut probe = [0u8; 1];
    let still_open =
        tokio::time::timeout(Duration::from_millis(200), idle[49].read(&mut probe)).await;
    assert!(still_open.is_err(), "the newest idle connection stays open");
}

#[tokio::test]
async fn connections_are_served_whichever_loop_accepts_them() {
    // Four loops share one listening socket; a burst of connections is
    // spread over them, some handed from the loop that accepted them to
    // another. Every one of them is served, request after request.
    let app = app_with(|s| s.workers = 4).await;
    let mut streams = Vec::new();
    for _ in 0..64 {
        streams.push(TcpStream::connect(app.addr()).await.unwrap());
    }
    for round in 0..3 {
        for stream in &mut streams {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"{\"status\":\"ok\"}") {
                let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("connection {i} answered in round {round}"))
                    .unwrap();
                assert!(n > 0, "connection {i} stayed open in round {round}");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "connection {i}");
        }
    }
}
