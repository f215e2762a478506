//! HTTPS with `--tls-cert` / `--tls-key`, spoken to by a real TLS client
//! (reqwest on rustls) trusting a certificate generated here; renewal
//! without a restart; a broken renewal or a silent client changes nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall::app::Application;
use rollcall::config::TlsFiles;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::helpers::*;

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key) PEM.
fn certificate() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// A client that trusts only `cert`, with no connection reuse (each
/// request makes a new handshake, so it sees the certificate served now).
fn trusting(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
    files
}

async fn https_app(pair: &(String, String)) -> (TestApp, TlsFiles) {
    let dir = TempDir::new().unwrap();
    let files = write_pair(dir.path(), pair);
    let mut s = settings(dir.path());
    s.tls = Some(files.clone());
    s.header_timeout = Duration::from_secs(1);
    let app = spawn_with(s, Arc::new(dir)).await;
    (app, files)
}

fn https(app: &TestApp, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", app.addr().port())
}

#[tokio::test]
async fn https_serves_the_api_and_nothing_is_served_in_the_clear() {
    let pair = certificate();
    let (app, _) = https_app(&pair).await;
    let client = trusting(&pair.0);

    let health = client.get(https(&app, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    let list = client
        .get(https(&app, "/api/directories"))
        .bearer_auth(token_for(ORG_A))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    assert_eq!(list.headers()["cache-control"], "no-store");
    assert_eq!(list.text().await.unwrap(), "[]");
    let refused = client
        .get(https(&app, "/api/directories"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // A client that does not trust this certificate gets no answer.
    let stranger = trusting(&certificate().0);
    assert!(stranger.get(https(&app, "/healthz")).send().await.is_err());
    // Plain HTTP on the TLS port is not answered in the clear.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "no plain-HTTP answer"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_keeps_the_old() {
    let first = certificate();
    let (app, files) = https_app(&first).await;
    let old = trusting(&first.0);
    assert_eq!(
        old.get(https(&app, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A half-written renewal: the loaded certificate stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    tokio::time::sleep(rollcall::net::tls::WATCH_EVERY * 2).await;
    assert_eq!(
        old.get(https(&app, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the old certificate is still served"
    );

    // The real renewal: new connections get it, with no restart.
    let second = certificate();
    write_pair(files.cert.parent().unwrap(), &second);
    let new = trusting(&second.0);
    let started = Instant::now();
    loop {
        if let Ok(resp) = new.get(https(&app, "/healthz")).send().await {
            assert_eq!(resp.status(), 200);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        old.get(https(&app, "/healthz")).send().await.is_err(),
        "the old certificate is no longer served"
    );
}

#[tokio::test]
async fn clients_that_never_finish_a_handshake_are_dropped_and_hold_up_no_one() {
    let pair = certificate();
    let (app, _) = https_app(&pair).await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(app.addr()).await.unwrap());
    }
    // Half a handshake: a few bytes of a ClientHello, then nothing.
    let mut half = TcpStream::connect(app.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, &[0x16, 0x03, 0x01, 0x02])
        .await
        .unwrap();
    let client = trusting(&pair.0);
    let resp = client.get(https(&app, "/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "others are served meanwhile");

    // Past the handshake timeout (1 s here), the server has closed them.
    silent.push(half);
    for mut conn in silent {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
            "the server closed the silent connection"
        );
    }
}

#[tokio::test]
async fn an_unusable_certificate_or_key_stops_startup_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate();
    let (_, other_key) = certificate();
    let start = |tls: TlsFiles| {
        let mut s = settings(dir.path());
        s.tls = Some(tls);
        async move {
            match Application::build(s).await {
                Ok(_) => panic!("started with an unusable TLS pair"),
                Err(e) => e.to_string(),
            }
        }
    };
    let path = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let good_cert = path("cert.pem", &cert);
    let good_key = path("key.pem", &key);

    let missing = start(TlsFiles {
        cert: dir.path().join("nowhere.pem"),
        key: good_key.clone(),
    })
    .await;
    assert!(
        missing.contains("cannot read") && missing.contains("nowhere.pem"),
        "{missing}"
    );
    let not_a_cert = start(TlsFiles {
        cert: path("junk.pem", "hello"),
        key: good_key.clone(),
    })
    .await;
    assert!(
        not_a_cert.contains("junk.pem") && not_a_cert.contains("no PEM certificate"),
        "{not_a_cert}"
    );
    let no_key = start(TlsFiles {
        cert: good_cert.clone(),
        key: good_cert.clone(),
    })
    .await;
    assert!(no_key.contains("no usable PEM private key"), "{no_key}");
    let mismatch = start(TlsFiles {
        cert: good_cert.clone(),
        key: path("other-key.pem", &other_key),
    })
    .await;
    assert!(
        mismatch.contains("does not fit the certificate"),
        "{mismatch}"
    );
}

fn healthcheck(listen: std::net::SocketAddr, tls_cert: Option<&Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.arg("healthcheck")
        .arg("--listen")
        .arg(listen.to_string())
        .env_remove("ROLLCALL_LISTEN")
        .env_remove("ROLLCALL_TLS_CERT");
    if let Some(cert) = tls_cert {
        cmd.arg("--tls-cert").arg(cert);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_asks_readyz_over_http_or_https() {
    let plain = spawn_app().await;
    let out = tokio::task::spawn_blocking({
        let addr = plain.addr();
        move || healthcheck(addr, None)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"status":"ready"}"#
    );

    let pair = certificate();
    let (secure, files) = https_app(&pair).await;
    let out = tokio::task::spawn_blocking({
        let addr = secure.addr();
        move || healthcheck(addr, Some(&files.cert))
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Nothing listening: a failure, saying so.
    let gone = plain.addr();
    drop(plain.stop().await);
    let out = tokio::task::spawn_blocking(move || healthcheck(gone, None))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"));
}

#[tokio::test]
async fn at_the_connection_cap_a_silent_handshake_gives_its_slot_to_a_real_client() {
    // Every slot taken by connections that never start their handshake: a
    // real client must still get in (the cap closes one of them), not wait
    // for the handshakes to time out (5 s here; the client waits 3 s).
    let pair = certificate();
    let dir = TempDir::new().unwrap();
    let files = write_pair(dir.path(), &pair);
    let mut s = settings(dir.path());
    s.tls = Some(files);
    s.max_connections = 40;
    let app = spawn_with(s, Arc::new(dir)).await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(app.addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pair.0.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for round in 0..3 {
        let resp = client
            .get(https(&app, "/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer at the cap: {e}"));
        assert_eq!(resp.status(), 200);
        // Fill the freed slot again.
        silent.push(TcpStream::connect(app.addr()).await.unwrap());
    }
}
