//! Random requests at the real server: arbitrary methods, paths, queries,
//! headers and bodies, with and without valid tokens and signatures. Never a
//! 5xx, never anything but the JSON error shape for an error, nothing written
//! by a request that was refused.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;
use crate::workos::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "api",
            "directories",
            "users",
            "groups",
            "healthz",
            "webhooks",
            "workos",
            "spec.json",
            "..",
            "%2e%2e",
            "",
            "%00"
        ])
        .prop_map(str::to_owned),
        Just(uuid::Uuid::now_v7().to_string()),
        "[a-zA-Z0-9%._~-]{1,20}",
    ]
}

#[test]
fn random_requests_never_break_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(async {
        let app = spawn_app().await;
        app.send_all(&[
            activated("directory_A", ORG_A, 0),
            user_event(
                "created",
                user("directory_A", "directory_user_1", "a@acme.test", 1),
                1,
            ),
        ])
        .await;
        app
    });
    let dir = runtime.block_on(directory_id(&app, ORG_A, "directory_A"));
    let token = token_for(ORG_A);
    let users_before = runtime
        .block_on(app.get_raw(&format!("/api/directories/{dir}/users"), &token))
        .1;
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };

    proptest!(config, |(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        known_dir in any::<bool>(),
        segments in prop::collection::vec(segment(), 0..6),
        query in prop::collection::vec(("[a-z]{1,8}", "[ -~]{0,30}"), 0..4),
        auth in 0usize..4,
        body in prop::collection::vec(any::<u8>(), 0..300),
        signed in any::<bool>(),
        header in ("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~]{0,60}"),
    )| {
        let mut path = if known_dir && segments.len() > 2 {
            format!("/api/directories/{dir}/{}", segments[2..].join("/"))
        } else {
            format!("/{}", segments.join("/"))
        };
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", v.replace(['#', ' '], "%20"))).collect();
            path = format!("{path}?{}", q.join("&"));
        }
        let url = format!("{}{}", app.base, path);
        let (status, content_type, text) = runtime.block_on(async {
            let mut req = app.client.request(Method::from_bytes(method.as_bytes()).unwrap(), &url);
            req = match auth {
                0 => req,
                1 => req.bearer_auth(&token),
                2 => req.bearer_auth(token_for(ORG_B)),
                _ => req.header("authorization", "Bearer x.y.z"),
            };
            if signed {
                req = req.header("WorkOS-Signature", sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms()));
            }
            let req = req.header(header.0.as_str(), header.1.as_str()).body(body.clone());
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned());
                    (Some(status), ct, resp.text().await.unwrap_or_default())
                }
                // reqwest refuses some generated URLs or headers itself.
                Err(e) if e.is_builder() => (None, None, String::new()),
                Err(e) => panic!("the server dropped {method} {url}: {e}"),
            }
        });
        let Some(status) = status else { return Ok(()); };
        prop_assert!(status.as_u16() < 500, "{} {} → {} {}", method, path, status, text);
        if status.as_u16() >= 400 && method != "HEAD" {
            prop_assert_eq!(content_type.as_deref(), Some("application/json"), "{} {}", method, path);
            let err: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(err["status"].as_u64(), Some(u64::from(status.as_u16())));
            prop_assert!(err["code"].is_string() && err["data"]["code"].is_string() && err["message"].is_string());
        }
    });

    let users_after = runtime
        .block_on(app.get_raw(&format!("/api/directories/{dir}/users"), &token))
        .1;
    assert_eq!(
        users_before, users_after,
        "no random request changed anything"
    );
    runtime.block_on(app.stop());
}
