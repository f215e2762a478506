//! Token verification, from the attacker's side too: every failure is a 401
//! with the same body; a valid token without organization is a 403.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;

/// The rotated-in key: `jwks_rotated.json` publishes it as `test-rsa-2` in
/// place of `test-rsa-1`, and is exactly as long as `jwks.json`.
const RSA2_PRIVATE: &[u8] = include_bytes!("../fixtures/rsa2_private.pem");
const JWKS_ROTATED: &str = include_str!("../fixtures/jwks_rotated.json");

/// A token of the rotated-in key, never sent before.
fn fresh_rsa2() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    sign(
        Algorithm::RS256,
        Some("test-rsa-2"),
        &EncodingKey::from_rsa_pem(RSA2_PRIVATE).unwrap(),
        &json!({"org_id": ORG_A, "exp": now_secs() + 3600, "n": n}),
    )
}

const UNAUTHORIZED: &str = r#"{"code":"UNAUTHORIZED","status":401,"message":"Missing or invalid authentication token","data":{"code":"AUTH_REQUIRED"}}"#;

async fn status_of(app: &TestApp, header: Option<&str>) -> (StatusCode, String) {
    let mut req = app.client.get(format!("{}/api/directories", app.base));
    if let Some(h) = header {
        req = req.header("authorization", h);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn assert_401(app: &TestApp, token: &str, why: &str) {
    let (status, body) = status_of(app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
    assert_eq!(body, UNAUTHORIZED, "{why}");
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[tokio::test]
async fn a_valid_rs256_or_es256_token_is_accepted() {
    let app = spawn_app().await;

    let (rs, _) = status_of(&app, Some(&format!("Bearer {}", token_for(ORG_A)))).await;
    let (es, _) = status_of(&app, Some(&format!("Bearer {}", es256(&claims_for(ORG_A))))).await;

    assert_eq!(rs, StatusCode::OK);
    assert_eq!(es, StatusCode::OK);
}

#[tokio::test]
async fn missing_and_malformed_headers_are_401() {
    let app = spawn_app().await;
    let token = token_for(ORG_A);
    for header in [
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {token}")),
        Some(format!("Token {token}")),
        Some("Bearer not-a-jwt".to_owned()),
        Some("Bearer a.b.c".to_owned()),
        Some(format!("Bearer {}", "x".repeat(20_000))),
    ] {
        let (status, body) = status_of(&app, header.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(body, UNAUTHORIZED);
    }
}

#[tokio::test]
async fn forged_expired_and_premature_tokens_are_401() {
    let app = spawn_app().await;
    let now = now_secs();
    let attacker = EncodingKey::from_rsa_pem(RSA_ATTACKER_PRIVATE).unwrap();

    let valid = token_for(ORG_A);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = b64(serde_json::to_vec(&claims_for(ORG_B)).unwrap().as_slice());
    assert_401(
        &app,
        &parts.join("."),
        "payload swapped under the original signature",
    )
    .await;

    let resigned = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &attacker,
        &claims_for(ORG_A),
    );
    assert_401(
        &app,
        &resigned,
        "signed by another key under the trusted kid",
    )
    .await;

    let expired = rs256(&json!({"org_id": ORG_A, "exp": now - 3600}));
    assert_401(&app, &expired, "expired").await;

    let premature = rs256(&json!({"org_id": ORG_A, "exp": now + 7200, "nbf": now + 3600}));
    assert_401(&app, &premature, "not yet valid").await;

    let no_exp = rs256(&json!({"org_id": ORG_A}));
    assert_401(&app, &no_exp, "no exp").await;

    let unknown_kid = sign(
        Algorithm::RS256,
        Some("someone-elses-key"),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims_for(ORG_A),
    );
    assert_401(&app, &unknown_kid, "unknown kid").await;
}

#[tokio::test]
async fn alg_none_and_key_confusion_are_401() {
    let app = spawn_app().await;
    let payload = b64(serde_json::to_vec(&claims_for(ORG_A)).unwrap().as_slice());
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None", "typ": "JWT"}),
        json!({"alg": "none", "kid": RSA_KID}),
    ] {
        let h = b64(serde_json::to_vec(&header).unwrap().as_slice());
        assert_401(&app, &format!("{h}.{payload}."), &format!("{header}")).await;
        assert_401(
            &app,
            &format!("{h}.{payload}"),
            &format!("{header} two parts"),
        )
        .await;
    }

    // HS256 when only a JWKS is configured, keyed with a secret or with the
    // RSA public key itself (the classic confusion attack).
    let hs = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"guess"),
        &claims_for(ORG_A),
    );
    assert_401(&app, &hs, "HS256 without a configured secret").await;
    let public_pem = include_bytes!("../fixtures/rsa_public.pem");
    let confused = sign(
        Algorithm::HS256,
        Some(RSA_KID),
        &EncodingKey::from_secret(public_pem),
        &claims_for(ORG_A),
    );
    assert_401(&app, &confused, "HS256 keyed with the RSA public key").await;

    // Algorithms outside RS256/ES256/HS256, even with a trusted key.
    let rs512 = sign(
        Algorithm::RS512,
        Some(RSA_KID),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims_for(ORG_A),
    );
    assert_401(&app, &rs512, "RS512").await;
    // RS256 header over an EC kid: the key does not match the algorithm.
    let mismatched = sign(
        Algorithm::RS256,
        Some(EC_KID),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims_for(ORG_A),
    );
    assert_401(&app, &mismatched, "RS256 naming the EC key").await;
}

#[tokio::test]
async fn hs256_works_only_with_a_configured_secret_and_never_under_a_jwks_kid() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.hs256_secret = Some(b"dev-secret-0123456789abcdef012345".to_vec());
    let app = spawn_with(s, Arc::new(dir)).await;
    let key = EncodingKey::from_secret(b"dev-secret-0123456789abcdef012345");

    let plain = sign(Algorithm::HS256, None, &key, &claims_for(ORG_A));
    let (status, _) = status_of(&app, Some(&format!("Bearer {plain}"))).await;
    assert_eq!(status, StatusCode::OK);

    let under_rsa_kid = sign(Algorithm::HS256, Some(RSA_KID), &key, &claims_for(ORG_A));
    assert_401(&app, &under_rsa_kid, "HS256 naming an RSA key").await;
    let wrong_secret = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"other"),
        &claims_for(ORG_A),
    );
    assert_401(&app, &wrong_secret, "wrong secret").await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.issuers = vec![
        "https://api.workos.com".into(),
        "https://auth.example.test".into(),
    ];
    s.auth.audience = Some("rollcall".into());
    let app = spawn_with(s, Arc::new(dir)).await;
    let exp = now_secs() + 3600;
    let good = |iss: &str, aud: Value| {
        rs256(&json!({"org_id": ORG_A, "exp": exp, "iss": iss, "aud": aud}))
    };

    for token in [
        good("https://api.workos.com", json!("rollcall")),
        good("https://auth.example.test", json!(["x", "rollcall"])),
    ] {
        let (status, _) = status_of(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_401(
        &app,
        &good("https://evil.test", json!("rollcall")),
        "wrong issuer",
    )
    .await;
    assert_401(
        &app,
        &good("https://api.workos.com", json!("other")),
        "wrong audience",
    )
    .await;
    assert_401(
        &app,
        &rs256(&json!({"org_id": ORG_A, "exp": exp, "aud": "rollcall"})),
        "no issuer",
    )
    .await;
    assert_401(
        &app,
        &rs256(&json!({"org_id": ORG_A, "exp": exp, "iss": "https://api.workos.com"})),
        "no audience",
    )
    .await;
}

#[tokio::test]
async fn an_iss_that_is_not_one_string_is_401_with_or_without_configured_issuers() {
    let exp = now_secs() + 3600;
    let with_iss = |iss: Value| rs256(&json!({"org_id": ORG_A, "exp": exp, "iss": iss}));
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.issuers = vec!["https://api.workos.com".into()];
    let checked = spawn_with(s, Arc::new(dir)).await;
    let unchecked = spawn_app().await;

    for app in [&checked, &unchecked] {
        let (status, body) = status_of(
            app,
            Some(&format!(
                "Bearer {}",
                with_iss(json!("https://api.workos.com"))
            )),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
    }
    // An array naming the accepted issuer next to the attacker's: jsonwebtoken
    // alone passes it when any element matches.
    for iss in [
        json!(["https://evil.test", "https://api.workos.com"]),
        json!(["https://api.workos.com"]),
        json!({"iss": "https://api.workos.com"}),
        json!(42),
        Value::Null,
    ] {
        assert_401(&checked, &with_iss(iss.clone()), &format!("checked {iss}")).await;
        assert_401(
            &unchecked,
            &with_iss(iss.clone()),
            &format!("unchecked {iss}"),
        )
        .await;
    }
}

/// Signs a hand-made protected header (every parameter kept as given) with
/// the trusted RSA key.
fn rs256_with_header(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
    format!("{input}.{signature}")
}

#[tokio::test]
async fn a_token_naming_a_critical_extension_is_401() {
    let app = spawn_app().await;
    let claims = claims_for(ORG_A);
    let plain = rs256_with_header(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
        &claims,
    );
    let (status, body) = status_of(&app, Some(&format!("Bearer {plain}"))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "[]"),
        "the hand-made header is fine"
    );

    for (crit, extra) in [
        (json!(["b64"]), json!({"b64": false})),
        (
            json!(["https://ext.example/policy"]),
            json!({"https://ext.example/policy": "x"}),
        ),
        (json!(["exp"]), json!({})),
        (json!([]), json!({})),
    ] {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID, "crit": crit});
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        assert_401(
            &app,
            &rs256_with_header(&header, &claims),
            &header.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_living_beyond_the_max_lifetime_is_401() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.hs256_secret = Some(b"dev-secret-0123456789abcdef012345".to_vec());
    let app = spawn_with(s, Arc::new(dir)).await;
    let now = now_secs();
    let with_exp = |exp: Value| rs256(&json!({"org_id": ORG_A, "exp": exp}));
    let accepted = |token: String| {
        let app = &app;
        async move {
            let (status, body) = status_of(app, Some(&format!("Bearer {token}"))).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
        }
    };

    // A stolen token minted to live forever.
    assert_401(&app, &with_exp(json!(u64::MAX)), "exp = 2^64 - 1").await;
    assert_401(&app, &with_exp(json!(i64::MAX)), "exp = 2^63 - 1").await;
    assert_401(&app, &with_exp(json!(now + 86_400 + 3600)), "25 hours").await;
    // What benches/load.py and the dev banner mint: a day, within the leeway.
    accepted(with_exp(json!(now + 86_400))).await;
    accepted(with_exp(json!(now + 86_400 + 10))).await;
    let banner = rollcall::auth::mint_hs256(
        b"dev-secret-0123456789abcdef012345",
        ORG_A,
        "user_dev",
        Duration::from_secs(24 * 3600),
    )
    .unwrap();
    accepted(banner).await;

    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.max_lifetime = Duration::from_secs(600);
    let strict = spawn_with(s, Arc::new(dir)).await;
    assert_401(
        &strict,
        &token_for(ORG_A),
        "an hour against a 10-minute maximum",
    )
    .await;
    let (status, _) = status_of(
        &strict,
        Some(&format!("Bearer {}", with_exp(json!(now + 600)))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // An operator may lift the cap, and the refresh, entirely (no overflow
    // on the way).
    let endpoint = JwksEndpoint::start(&all_and_only_ec().0).await;
    let lifted = spawn_with_jwks_url(&endpoint, |s| {
        s.auth.max_lifetime = Duration::from_secs(u64::MAX);
        s.auth.jwks_refresh_interval = Duration::from_secs(u64::MAX);
    })
    .await;
    let (status, _) = status_of(
        &lifted,
        Some(&format!("Bearer {}", with_exp(json!(u64::MAX)))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn minting_a_token_beyond_the_default_max_lifetime_warns_but_mints() {
    let mint = |ttl: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args([
                "token",
                "--org",
                ORG_A,
                "--jwt-secret",
                "s3cret-0123456789abcdef0123456789",
                "--ttl",
                ttl,
            ])
            .output()
            .unwrap()
    };

    let long = mint("90000");
    let day = mint("86400");

    assert!(long.status.success());
    assert_eq!(
        String::from_utf8_lossy(&long.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
    let warning = String::from_utf8_lossy(&long.stderr);
    assert!(
        warning.contains("warning") && warning.contains("86400") && warning.contains("90000"),
        "{warning}"
    );
    assert!(day.status.success());
    assert_eq!(
        String::from_utf8_lossy(&day.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
    assert_eq!(String::from_utf8_lossy(&day.stderr), "");
}

#[tokio::test]
async fn organization_comes_from_org_id_or_organization_id_and_is_required() {
    let app = spawn_app().await;
    let exp = now_secs() + 3600;

    let via_org_id = rs256(&json!({"org_id": ORG_A, "exp": exp}));
    let via_organization_id = rs256(&json!({"organization_id": ORG_A, "exp": exp}));
    for t in [&via_org_id, &via_organization_id] {
        let (status, _) = status_of(&app, Some(&format!("Bearer {t}"))).await;
        assert_eq!(status, StatusCode::OK);
    }

    for claims in [
        json!({"exp": exp}),
        json!({"exp": exp, "org_id": ""}),
        json!({"exp": exp, "org_id": null}),
    ] {
        let t = rs256(&claims);
        let (status, body) = status_of(&app, Some(&format!("Bearer {t}"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{claims}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "ORG_CONTEXT_REQUIRED");
        assert_eq!(body["data"]["code"], "ORG_CONTEXT_REQUIRED");
        assert_eq!(body["status"], 403);
    }

    let conflicting = rs256(&json!({"org_id": ORG_A, "organization_id": ORG_B, "exp": exp}));
    assert_401(&app, &conflicting, "two different organizations").await;
    let mistyped = rs256(&json!({"org_id": 42, "exp": exp}));
    assert_401(&app, &mistyped, "a non-string organization").await;
    let oversized = rs256(&json!({"org_id": "o".repeat(1000), "exp": exp}));
    assert_401(&app, &oversized, "an oversized organization").await;
}

/// What the test JWKS endpoint answers.
#[derive(Clone)]
enum Answer {
    /// A status and a body sent with its `Content-Length`, and optionally a
    /// `Cache-Control` header.
    Fixed {
        status: u16,
        body: Vec<u8>,
        cache_control: Option<&'static str>,
    },
    /// A 200 whose chunked body goes on (up to 64 MiB, so a test of a
    /// server that reads it all stays survivable).
    Endless,
}

/// A JWKS endpoint (plain HTTP/1.1 over a socket, so the body can be
/// anything) whose answer can be swapped, counting its fetches.
struct JwksEndpoint {
    url: String,
    answer: Arc<std::sync::Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
    /// Body bytes of `Endless` answers written before the client hung up.
    endless_sent: Arc<AtomicUsize>,
}

impl JwksEndpoint {
    async fn start(keys: &Value) -> Self {
        let answer = Arc::new(std::sync::Mutex::new(Self::keys_answer(keys, None)));
        let hits = Arc::new(AtomicUsize::new(0));
        let endless_sent = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let (a, h, e) = (answer.clone(), hits.clone(), endless_sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (a, h, e) = (a.clone(), h.clone(), e.clone());
                tokio::spawn(Self::serve(socket, a, h, e));
            }
        });
        Self {
            url,
            answer,
            hits,
            endless_sent,
        }
    }

    async fn serve(
        mut socket: tokio::net::TcpStream,
        answer: Arc<std::sync::Mutex<Answer>>,
        hits: Arc<AtomicUsize>,
        endless_sent: Arc<AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let answer = answer.lock().unwrap().clone();
        match answer {
            Answer::Fixed {
                status,
                body,
                cache_control,
            } => {
                let cache_control = cache_control
                    .map(|v| format!("cache-control: {v}\r\n"))
                    .unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{cache_control}\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            }
            Answer::Endless => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
                chunk.extend_from_slice(&[b' '; 64 * 1024]);
                chunk.extend_from_slice(b"\r\n");
                for _ in 0..1024 {
                    if socket.write_all(&chunk).await.is_err() {
                        break;
                    }
                    endless_sent.fetch_add(64 * 1024, Ordering::SeqCst);
                }
            }
        }
        let _ = socket.shutdown().await;
    }

    fn keys_answer(keys: &Value, cache_control: Option<&'static str>) -> Answer {
        Answer::Fixed {
            status: 200,
            body: serde_json::to_vec(keys).unwrap(),
            cache_control,
        }
    }

    fn serve_keys(&self, keys: &Value) {
        self.set(Self::keys_answer(keys, None));
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The fixture JWKS and the same with only its EC key.
fn all_and_only_ec() -> (Value, Value) {
    let all: Value = serde_json::from_str(JWKS).unwrap();
    let only_ec = json!({"keys": [all["keys"][1].clone()]});
    (all, only_ec)
}

/// A server verifying against `endpoint`, its fetches at most every
/// 100 ms, with `tweak` applied to its settings.
async fn spawn_with_jwks_url(
    endpoint: &JwksEndpoint,
    tweak: impl FnOnce(&mut rollcall::config::Settings),
) -> TestApp {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.jwks_file = None;
    s.auth.jwks_url = Some(endpoint.url.clone());
    s.auth.jwks_refetch_interval = Duration::from_millis(100);
    tweak(&mut s);
    spawn_with(s, Arc::new(dir)).await
}

/// Waits (up to 10 s) for `token` to be refused.
async fn eventually_401(app: &TestApp, token: &str, why: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = status_of(app, Some(&format!("Bearer {token}"))).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(body, UNAUTHORIZED);
            return;
        }
        assert_eq!(status, StatusCode::OK, "{why}: {body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{why}: still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 10 s) until the server has fetched its JWKS URL twice
/// more, so that the first of those fetches is fully handled (fetches run
/// one at a time); tokens naming an unknown kid hurry it along.
async fn wait_for_two_fetches(app: &TestApp, endpoint: &JwksEndpoint) {
    let stranger = sign(
        Algorithm::RS256,
        Some("not-published"),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims_for(ORG_A),
    );
    let target = endpoint.hits() + 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while endpoint.hits() < target {
        assert!(tokio::time::Instant::now() < deadline, "no refetch in 10 s");
        assert_401(app, &stranger, "unknown kid").await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
}

/// An RS256 token never sent before (so never cached).
fn fresh_rs256() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    rs256(&json!({"org_id": ORG_A, "exp": now_secs() + 3600, "n": n}))
}

async fn assert_200(app: &TestApp, token: &str, why: &str) {
    let (status, body) = status_of(app, Some(&format!("Bearer {token}"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"), "{why}");
}

#[tokio::test]
async fn a_jwks_answer_that_is_oversized_failing_or_without_usable_keys_keeps_the_keys_loaded() {
    let (all, only_ec) = all_and_only_ec();
    let endpoint = JwksEndpoint::start(&all).await;
    let app = spawn_with_jwks_url(&endpoint, |_| {}).await;
    assert_200(&app, &fresh_rs256(), "the RSA key is loaded").await;
    let mut rsa_as_rs512 = all["keys"][0].clone();
    rsa_as_rs512["alg"] = json!("RS512");
    rsa_as_rs512["kid"] = json!("rs512");
    let fixed = |status: u16, body: Vec<u8>| Answer::Fixed {
        status,
        body,
        cache_control: None,
    };

    for (what, answer) in [
        (
            "2 MiB JWKS (with a Content-Length) dropping the RSA key",
            fixed(
                200,
                serde_json::to_vec(&json!({"keys": only_ec["keys"], "pad": "x".repeat(2 << 20)}))
                    .unwrap(),
            ),
        ),
        ("an empty key set", fixed(200, br#"{"keys": []}"#.to_vec())),
        (
            "only keys rollcall cannot use",
            fixed(
                200,
                serde_json::to_vec(&json!({"keys": [
                    {"kty": "oct", "kid": "hs", "k": "c2VjcmV0"},
                    rsa_as_rs512,
                ]}))
                .unwrap(),
            ),
        ),
        ("not JSON", fixed(200, b"<html>maintenance</html>".to_vec())),
        ("HTTP 500", fixed(500, br#"{"keys": []}"#.to_vec())),
        ("an endless body", Answer::Endless),
    ] {
        endpoint.set(answer);
        wait_for_two_fetches(&app, &endpoint).await;
        assert_200(&app, &fresh_rs256(), what).await;
    }
    let sent = endpoint.endless_sent.load(Ordering::SeqCst);
    assert!(
        sent < 16 << 20,
        "the endless body was read far past the JWKS bound: {sent} bytes sent"
    );

    // A good answer still replaces the keys: the RSA key is gone.
    endpoint.serve_keys(&only_ec);
    wait_for_two_fetches(&app, &endpoint).await;
    assert_401(&app, &fresh_rs256(), "RSA key no longer published").await;
    assert_200(&app, &es256(&claims_for(ORG_A)), "the EC key").await;
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_url_stops_working_at_the_next_refresh_cached_tokens_too() {
    let (all, only_ec) = all_and_only_ec();
    let endpoint = JwksEndpoint::start(&all).await;
    let app = spawn_with_jwks_url(&endpoint, |s| {
        s.auth.jwks_refresh_interval = Duration::from_secs(1);
    })
    .await;
    // Both tokens are verified now, and so remembered.
    let rsa = token_for(ORG_A);
    let ec = es256(&claims_for(ORG_A));
    assert_200(&app, &rsa, "RSA before the rotation").await;
    assert_200(&app, &ec, "EC before the rotation").await;

    // The RSA key is retired (say, it leaked); no token names an unknown kid.
    endpoint.serve_keys(&only_ec);

    eventually_401(&app, &rsa, "a remembered token of the removed key").await;
    assert!(endpoint.hits() >= 2, "refreshed on schedule");
    assert_401(&app, &fresh_rs256(), "a new token of the removed key").await;
    assert_200(&app, &ec, "the remembered token of the kept key").await;
}

#[tokio::test]
async fn cache_control_max_age_brings_the_refresh_forward() {
    let (all, only_ec) = all_and_only_ec();
    let endpoint = JwksEndpoint::start(&all).await;
    endpoint.set(JwksEndpoint::keys_answer(&all, Some("public, max-age=1")));
    let app = spawn_with_jwks_url(&endpoint, |s| {
        s.auth.jwks_refresh_interval = Duration::from_secs(3600);
    })
    .await;
    let rsa = token_for(ORG_A);
    assert_200(&app, &rsa, "RSA before the rotation").await;

    endpoint.set(JwksEndpoint::keys_answer(
        &only_ec,
        Some("public, max-age=1"),
    ));

    eventually_401(&app, &rsa, "a remembered token of the removed key").await;
}

#[tokio::test]
async fn a_jwks_saying_max_age_0_is_not_fetched_more_often_than_the_floor() {
    let (all, _) = all_and_only_ec();
    let endpoint = JwksEndpoint::start(&all).await;
    endpoint.set(JwksEndpoint::keys_answer(&all, Some("no-store, max-age=0")));
    let app = spawn_with_jwks_url(&endpoint, |s| {
        s.auth.jwks_refetch_interval = Duration::from_secs(1);
        s.auth.jwks_refresh_interval = Duration::from_millis(10);
    })
    .await;

    tokio::time::sleep(Duration::from_millis(3500)).await;

    // Started, then about one fetch a second (never one per 10 ms, nor a
    // busy loop on max-age=0).
    let hits = endpoint.hits();
    assert!((2..=6).contains(&hits), "{hits} fetches in 3.5 s");
    assert_200(&app, &token_for(ORG_A), "still serving").await;
}

#[tokio::test]
async fn a_rewritten_jwks_file_is_read_again_and_an_unusable_one_keeps_the_keys() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.jwks_file_poll = Duration::from_millis(100);
    let path = s.auth.jwks_file.clone().unwrap();
    let app = spawn_with(s, Arc::new(dir)).await;
    let (_, only_ec) = all_and_only_ec();
    let rsa = token_for(ORG_A);
    let ec = es256(&claims_for(ORG_A));
    assert_200(&app, &rsa, "RSA before the rotation").await;
    assert_200(&app, &ec, "EC before the rotation").await;

    // The operator rotates the leaked RSA key out of the file.
    let rotated: Value = serde_json::from_str(JWKS_ROTATED).unwrap();
    std::fs::write(&path, serde_json::to_vec(&rotated).unwrap()).unwrap();

    eventually_401(&app, &rsa, "a remembered token of the removed key").await;
    assert_401(&app, &fresh_rs256(), "a new token of the removed key").await;
    assert_200(&app, &fresh_rsa2(), "the rotated-in key").await;
    assert_200(&app, &ec, "the remembered token of the kept key").await;

    // Half-written, emptied or oversized rewrites are not loaded.
    let oversized =
        serde_json::to_vec(&json!({"keys": only_ec["keys"], "pad": "x".repeat(2 << 20)})).unwrap();
    for (content, what) in [
        (br#"{"keys": [{"kty": "RSA", "#.to_vec(), "half-written"),
        (br#"{"keys": []}"#.to_vec(), "no keys"),
        (oversized, "over 1 MiB"),
    ] {
        std::fs::write(&path, content).unwrap();
        // Several polls' worth.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_200(&app, &fresh_rsa2(), what).await;
    }
    // And the next good file is read.
    std::fs::write(&path, serde_json::to_vec(&only_ec).unwrap()).unwrap();
    eventually_401(&app, &fresh_rsa2(), "the key dropped by the good file").await;
    assert_200(&app, &es256(&claims_for(ORG_A)), "the EC key").await;
}

/// Kills the child process if a test panics.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_a_jwks_file_swapped_with_the_same_mtime_and_length() {
    let dir = TempDir::new().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, JWKS).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path().join("rollcall.redb"))
            .arg("--jwks-file")
            .arg(&jwks)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let ask = |token: String| {
        let request = client
            .get(format!("http://127.0.0.1:{port}/api/directories"))
            .bearer_auth(token)
            .send();
        async move {
            let resp = request.await.expect("the server is up");
            (resp.status(), resp.text().await.unwrap())
        }
    };
    for _ in 0..400 {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let old = token_for(ORG_A);
    assert_eq!(ask(old.clone()).await, (StatusCode::OK, "[]".to_owned()));

    // Swap in the rotated file atomically, with the old file's length and
    // modification time: a change the file poll cannot see.
    assert_eq!(JWKS.len(), JWKS_ROTATED.len());
    let modified = std::fs::metadata(&jwks).unwrap().modified().unwrap();
    let staged = dir.path().join("jwks.json.new");
    std::fs::write(&staged, JWKS_ROTATED).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::rename(&staged, &jwks).unwrap();
    // More than a poll interval (2 s) later, the old key still works...
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ask(old.clone()).await.0, StatusCode::OK, "not reloaded yet");

    // ... until SIGHUP.
    let pid = server.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = ask(old.clone()).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(body, UNAUTHORIZED);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed key still works 10 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ask(fresh_rsa2()).await, (StatusCode::OK, "[]".to_owned()));
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "SIGHUP did not end the server"
    );
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(
        server.0.wait().unwrap().success(),
        "a clean stop after SIGHUP"
    );
}

#[tokio::test]
async fn a_jwks_file_that_is_unusable_stops_startup_naming_the_file() {
    let (all, _) = all_and_only_ec();
    let mut rsa_as_rs512 = all["keys"][0].clone();
    rsa_as_rs512["alg"] = json!("RS512");
    let oversized =
        serde_json::to_vec(&json!({"keys": all["keys"], "pad": "x".repeat(2 << 20)})).unwrap();

    for (content, problem) in [
        (br#"{"keys": []}"#.to_vec(), "no usable key"),
        (
            serde_json::to_vec(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, rsa_as_rs512]}))
                .unwrap(),
            "no usable key",
        ),
        (oversized, "larger than 1048576 bytes"),
        (b"not json".to_vec(), "not a JWKS"),
        (br#"{"kty": "RSA"}"#.to_vec(), "not a JWKS"),
    ] {
        let dir = TempDir::new().unwrap();
        let s = settings(dir.path());
        let path = s.auth.jwks_file.clone().unwrap();
        std::fs::write(&path, &content).unwrap();

        let err = rollcall::app::Application::build(s)
            .await
            .err()
            .expect("refused")
            .to_string();

        assert!(
            err.contains(&path.display().to_string()) && err.contains(problem),
            "{err}"
        );
    }
}

#[tokio::test]
async fn jwks_url_is_cached_and_refetched_for_an_unknown_kid_at_most_once_per_interval() {
    let (all, only_ec) = all_and_only_ec();
    let endpoint = JwksEndpoint::start(&only_ec).await;
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.jwks_file = None;
    s.auth.jwks_url = Some(endpoint.url.clone());
    s.auth.jwks_refetch_interval = Duration::from_millis(500);
    let app = spawn_with(s, Arc::new(dir)).await;
    assert_eq!(endpoint.hits(), 1, "fetched once at start");

    // Known key: served from the cache.
    for _ in 0..5 {
        let (status, _) =
            status_of(&app, Some(&format!("Bearer {}", es256(&claims_for(ORG_A))))).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(endpoint.hits(), 1);

    // The RSA key is rotated in; the first token naming it triggers a refetch.
    tokio::time::sleep(Duration::from_millis(600)).await;
    endpoint.serve_keys(&all);
    let (status, _) = status_of(&app, Some(&format!("Bearer {}", token_for(ORG_A)))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(endpoint.hits(), 2);

    // A flood of unknown kids fetches at most once per interval.
    let stranger = sign(
        Algorithm::RS256,
        Some("unknown"),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims_for(ORG_A),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..20 {
        assert_401(&app, &stranger, "unknown kid").await;
    }
    assert_eq!(
        endpoint.hits(),
        3,
        "one refetch for twenty unknown-kid tokens"
    );
}

#[tokio::test]
async fn the_server_refuses_to_start_without_any_verification() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.jwks_file = None;

    let err = rollcall::app::Application::build(s)
        .await
        .err()
        .expect("refused");

    assert!(err.to_string().contains("no token verification"), "{err}");
}
