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
        for secret in [MARKER, WEBHOOK_SECRET, good.as_str(), "eyJ"] {
            assert!(
                !logs.contains(secret),
                "{secret:?} appeared in the {format} logs:\n{logs}"
            );
        }
    }
}
