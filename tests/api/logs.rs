//! Tokens, secrets and raw webhook bodies never reach the logs at the
//! default level, whatever the requests carry and however they fail.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::helpers::*;
use crate::workos::*;

const MARKER: &str = "MARKER7f3a9c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_tokens_and_bodies_stay_out_of_the_logs() {
    for format in ["text", "json"] {
        let dir = TempDir::new().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, JWKS).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                format,
            ])
            .args([
                "--workos-webhook-secret",
                WEBHOOK_SECRET,
                "--jwt-secret",
                "hs-secret-MARKER7f3a9c-0123456789abcdef",
            ])
            .args([
                "--workos-api-key",
                "sk_live_MARKER7f3a9c",
                "--workos-api-url",
                "http://127.0.0.1:9",
            ])
            .arg("--jwks-file")
            .arg(&jwks)
            .arg("--data")
            .arg(dir.path().join("logs.redb"))
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        let claims =
            json!({"org_id": ORG_A, "sub": format!("user_{MARKER}"), "exp": now_secs() + 600});
        let good = rs256(&claims);
        let expired = rs256(&json!({"org_id": ORG_A, "sub": MARKER, "exp": 1}));
        for token in [
            good.as_str(),
            expired.as_str(),
            &format!("{MARKER}.{MARKER}.{MARKER}"),
            "garbage",
        ] {
            let _ = client
                .get(format!("{base}/api/directories"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let _ = client
                .get(format!("{base}/api/directories/{MARKER}/users"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
        let events = [
            activated("directory_A", ORG_A, 0),
            user_event(
                "created",
                user(
                    "directory_A",
                    "directory_user_1",
                    &format!("{MARKER}@acme.test"),
                    1,
                ),
                1,
            ),
            envelope("connection.activated", json!({"secret": MARKER}), 2),
        ];
        for e in &events {
            let body = serde_json::to_vec(e).unwrap();
            let sig = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
            let _ = client
                .post(format!("{base}/webhooks/workos"))
                .header("WorkOS-Signature", sig)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let _ = client
                .post(format!("{base}/webhooks/workos"))
                .header("WorkOS-Signature", format!("t=1, v1={MARKER}"))
                .body(body)
                .send()
                .await
                .unwrap();
        }
        let malformed = format!(
            "{{\"id\": \"event_1\", \"event\": \"dsync.user.created\", \"created_at\": \"{MARKER}\"}}"
        );
        let sig = sign_webhook(WEBHOOK_SECRET.as_bytes(), malformed.as_bytes(), now_ms());
        let _ = client
            .post(format!("{base}/webhooks/workos"))
            .header("WorkOS-Signature", sig)
            .body(malformed)
            .send()
            .await
            .unwrap();

        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let mut logs = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert!(
            logs.contains("rollcall listening"),
            "the logs were captured ({format}): {logs}"
        );
        assert!(
            !logs.contains('\x1b'),
            "no colour codes when stderr is not a terminal ({format})"
        );
        for secret in [MARKER, WEBHOOK_SECRET, good.as_str(), "eyJ"] {
            assert!(
                !logs.contains(secret),
                "{secret:?} appeared in the {format} logs:\n{logs}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_logged_with_its_reason_and_challenged_as_rfc_6750_says() {
    let dir = TempDir::new().unwrap();
    let server = crate::process::Process::start(dir.path(), &dir.path().join("r.redb"), &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/api/directories", server.base);
    let challenge = |resp: &reqwest::Response| {
        resp.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        challenge(&none).as_deref(),
        Some("Bearer"),
        "no token: no error code"
    );

    let expired = rs256(&json!({"org_id": ORG_A, "exp": 1}));
    let attacker = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_ATTACKER_PRIVATE).unwrap();
    let forged = sign(
        jsonwebtoken::Algorithm::RS256,
        Some(RSA_KID),
        &attacker,
        &claims_for(ORG_A),
    );
    let unknown_kid = sign(
        jsonwebtoken::Algorithm::RS256,
        Some("kid-nobody-published"),
        &attacker,
        &claims_for(ORG_A),
    );
    for token in [&expired, &forged, &unknown_kid] {
        let resp = client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            challenge(&resp).as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
    }
    // A flood of bad tokens is logged at most ten lines a second.
    for _ in 0..200 {
        let _ = client
            .get(&url)
            .bearer_auth("garbage")
            .send()
            .await
            .unwrap();
    }
    // A valid token still works, and is not logged as refused.
    let ok = client
        .get(&url)
        .bearer_auth(token_for(ORG_A))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(challenge(&ok).is_none());

    let logs = server.logs_after_stop();
    let refusals: Vec<String> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request refused: 401")
        .inspect(|v| assert_eq!(v["level"], "INFO", "logged at info: {v}"))
        .map(|v| v["fields"]["reason"].as_str().unwrap().to_owned())
        .collect();
    for reason in [
        "no bearer token",
        "token rejected: expired",
        "token rejected: bad signature",
        "token rejected: unknown signing key",
    ] {
        assert!(
            refusals.iter().any(|r| r == reason),
            "{reason:?} in {refusals:?}"
        );
    }
    assert!(
        refusals.len() < 4 + 60,
        "the flood was rate-limited: {} lines",
        refusals.len()
    );
    let all = logs.join("\n");
    for secret in [
        expired.as_str(),
        forged.as_str(),
        unknown_kid.as_str(),
        "eyJ",
    ] {
        assert!(!all.contains(secret), "a token reached the log");
    }
}
