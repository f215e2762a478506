//! spawn_app(): a real rollcall on an ephemeral port with a fresh redb file in
//! a temp dir, plus token minting and signed webhook delivery.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rollcall::app::Application;
use rollcall::config::Settings;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const RSA_PRIVATE: &[u8] = include_bytes!("../fixtures/rsa_private.pem");
pub const RSA_ATTACKER_PRIVATE: &[u8] = include_bytes!("../fixtures/rsa_attacker_private.pem");
pub const EC_PRIVATE: &[u8] = include_bytes!("../fixtures/ec_private.pem");
pub const JWKS: &str = include_str!("../fixtures/jwks.json");
pub const RSA_KID: &str = "test-rsa-1";
pub const EC_KID: &str = "test-ec-1";

pub const ORG_A: &str = "org_01TESTACME00000000000000";
pub const ORG_B: &str = "org_01TESTGLOBEX000000000000";
pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Signs `claims` with the trusted RSA key (kid `test-rsa-1`).
pub fn rs256(claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        claims,
    )
}

/// Signs `claims` with the trusted EC key (kid `test-ec-1`).
pub fn es256(claims: &Value) -> String {
    sign(
        Algorithm::ES256,
        Some(EC_KID),
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        claims,
    )
}

pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Standard claims for `org`, valid for an hour.
pub fn claims_for(org: &str) -> Value {
    json!({"sub": "user_test", "org_id": org, "iat": now_secs(), "exp": now_secs() + 3600})
}

/// A valid RS256 token for `org`.
pub fn token_for(org: &str) -> String {
    rs256(&claims_for(org))
}

/// Settings of the default test server: JWKS file verification (no HS256),
/// a webhook secret, a fresh database in `dir`.
pub fn settings(dir: &Path) -> Settings {
    let jwks = dir.join("jwks.json");
    if !jwks.exists() {
        std::fs::write(&jwks, JWKS).unwrap();
    }
    let mut s = Settings::new(dir.join("rollcall.redb"));
    s.auth.jwks_file = Some(jwks);
    s.webhook_secret = Some(WEBHOOK_SECRET.as_bytes().to_vec());
    s.shutdown_grace = Duration::from_secs(5);
    s
}

pub struct TestApp {
    addr: std::net::SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub db_path: PathBuf,
    pub settings: Settings,
    /// Where `/metrics` is served, when `settings.metrics_listen` is set.
    pub metrics: Option<std::net::SocketAddr>,
    dir: Arc<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The default test server on a fresh database.
pub async fn spawn_app() -> TestApp {
    let dir = TempDir::new().unwrap();
    let s = settings(dir.path());
    spawn_with(s, Arc::new(dir)).await
}

/// A server with custom settings; `dir` is kept alive as long as the app.
pub async fn spawn_with(settings: Settings, dir: Arc<TempDir>) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("the test server starts");
    let addr = app.local_addr();
    let metrics = app.metrics_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        db_path: settings.data.clone(),
        settings,
        metrics,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> Arc<TempDir> {
        self.dir.clone()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// GET with a token; status and parsed JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let resp = self.get(path, Some(token)).await;
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// GET with a token; status and raw body.
    pub async fn get_raw(&self, path: &str, token: &str) -> (StatusCode, Vec<u8>) {
        let resp = self.get(path, Some(token)).await;
        (resp.status(), resp.bytes().await.unwrap().to_vec())
    }

    /// POSTs `event` to the webhook route, signed now with the test secret.
    pub async fn post_event(&self, event: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(event).unwrap();
        let signature = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
        self.post_webhook(body, Some(&signature)).await
    }

    pub async fn post_webhook(&self, body: Vec<u8>, signature: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhooks/workos", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("WorkOS-Signature", s);
        }
        req.send().await.unwrap()
    }

    /// Posts each event and asserts a 200.
    pub async fn send_all(&self, events: &[Value]) {
        for e in events {
            let resp = self.post_event(e).await;
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "event {e} answered {text}");
        }
    }

    /// Stops the server gracefully; the database file stays in the temp dir.
    pub async fn stop(mut self) -> (Arc<TempDir>, Settings) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        (self.dir.clone(), self.settings.clone())
    }

    /// Stops this server and starts a new one on the same database file.
    pub async fn restart(self) -> TestApp {
        let (dir, settings) = self.stop().await;
        spawn_with(settings, dir).await
    }
}

/// The `WorkOS-Signature` header, computed independently of the server code
/// (straight from WorkOS's documented scheme).
pub fn sign_webhook(secret: &[u8], body: &[u8], t_ms: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t_ms}.").as_bytes());
    mac.update(body);
    format!("t={t_ms}, v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The keys of a JSON object, in order.
pub fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// The user ids of a list answer, in order.
pub fn emails(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

/// The internal id of the directory with this WorkOS id, via the API.
pub async fn directory_id(app: &TestApp, org: &str, workos_id: &str) -> String {
    let (status, list) = app.get_json("/api/directories", &token_for(org)).await;
    assert_eq!(status, StatusCode::OK);
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["workos_directory_id"] == workos_id)
        .unwrap_or_else(|| panic!("{workos_id} not listed for {org}: {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `created_at` of the `i`-th object of a generated NDJSON file: one
/// second apart, so ids (derived from it) keep the file's order.
pub fn created(i: i64) -> String {
    crate::workos::t(i + 1)
}

/// One answer of a server, as a client sees it: what must be identical
/// between instances holding the same data.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub path: String,
    pub status: u16,
    pub etag: Option<String>,
    pub link: Option<String>,
    pub body: Vec<u8>,
}

/// Asserts two servers gave the same answers, naming the first that differs
/// (bodies as text) instead of dumping every byte of both.
pub fn assert_same_answers(one: &[Answer], two: &[Answer], what: &str) {
    for (a, b) in one.iter().zip(two) {
        assert!(
            a == b,
            "{what}: answers differ\n{} {} {:?}\n{}\n---\n{} {} {:?}\n{}",
            a.path,
            a.status,
            a.etag,
            String::from_utf8_lossy(&a.body),
            b.path,
            b.status,
            b.etag,
            String::from_utf8_lossy(&b.body),
        );
    }
    assert_eq!(
        one.len(),
        two.len(),
        "{what}: a different number of answers"
    );
}

/// Every answer the API gives the organizations `orgs` at `base`: the
/// directory list, each directory, its users and groups whole, filtered,
/// and page by page following the `Link` headers.
pub async fn every_answer(client: &reqwest::Client, base: &str, orgs: &[&str]) -> Vec<Answer> {
    let mut out = Vec::new();
    let get = |path: String, org: &str| {
        let token = token_for(org);
        async move {
            let resp = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let (etag, link) = (header("etag"), header("link"));
            Answer {
                path,
                status: resp.status().as_u16(),
                etag,
                link,
                body: resp.bytes().await.unwrap().to_vec(),
            }
        }
    };
    for org in orgs {
        let list = get("/api/directories".into(), org).await;
        let dirs: Value = serde_json::from_slice(&list.body).unwrap();
        out.push(list);
        for d in dirs.as_array().unwrap() {
            let id = d["id"].as_str().unwrap();
            let mut paths = vec![
                format!("/api/directories/{id}"),
                format!("/api/directories/{id}/users"),
                format!("/api/directories/{id}/groups"),
                format!("/api/directories/{id}/users?state=active"),
                format!("/api/directories/{id}/users?state=inactive"),
            ];
            for page in ["/users?limit=2", "/groups?limit=1"] {
                let mut next = Some(format!("/api/directories/{id}{page}"));
                while let Some(path) = next {
                    let answer = get(path, org).await;
                    next = answer
                        .link
                        .as_ref()
                        .map(|l| l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_owned());
                    out.push(answer);
                }
            }
            for path in paths.drain(..) {
                out.push(get(path, org).await);
            }
        }
    }
    out
}

/// The contract's derivation, written out independently of the server: a
/// version-7 UUID with `created_at`'s milliseconds and 74 bits of
/// SHA-256(WorkOS id) (10 bytes, then version and variant overwrite 6 bits).
pub fn derived_id(workos_id: &str, created_at: &str) -> String {
    let ms = chrono::DateTime::parse_from_rfc3339(created_at)
        .unwrap()
        .timestamp_millis() as u64;
    let h = <sha2::Sha256 as sha2::Digest>::digest(workos_id.as_bytes());
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6..].copy_from_slice(&h[..10]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn ready(base: &str) -> (StatusCode, Value) {
    let resp = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn wait_ready(base: &str) {
    eventually(Duration::from_secs(60), "ready", || async {
        // Refused connections too: a process may still be starting.
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

/// A SCIM directory made through the running server's control socket, as
/// `rollcall directory create` does.
pub struct ScimDir {
    pub id: String,
    pub token: String,
    /// `http://…/scim/v2/{id}`.
    pub url: String,
}

impl TestApp {
    /// Creates a SCIM directory of `org` for `provider` (okta, entra, …).
    pub async fn scim_directory(&self, org: &str, provider: &str) -> ScimDir {
        let result = self
            .directory_op(rollcall::scim::admin::DirectoryOp::Create {
                organization_id: org.to_owned(),
                name: format!("{provider} SCIM"),
                provider: provider.to_owned(),
            })
            .await
            .expect("the directory is created");
        let id = result["id"].as_str().unwrap().to_owned();
        ScimDir {
            url: format!("{}/scim/v2/{id}", self.base),
            token: result["token"].as_str().unwrap().to_owned(),
            id,
        }
    }

    /// Runs a directory operation through the control socket.
    pub async fn directory_op(
        &self,
        op: rollcall::scim::admin::DirectoryOp,
    ) -> Result<Value, String> {
        let data = self.db_path.clone();
        tokio::task::spawn_blocking(move || {
            let server = rollcall::control::connect(&data)?.ok_or("no control socket")?;
            rollcall::control::request_directory(server, &op)
        })
        .await
        .unwrap()
    }

    /// A SCIM request with `token`: status, headers and parsed body
    /// (`Null` when empty).
    pub async fn scim(
        &self,
        method: reqwest::Method,
        url: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        self.scim_raw(method, url, Some(&auth), body, &[]).await
    }

    /// A request with a raw `Authorization` header (or none), raw body and
    /// extra headers: status, headers, parsed body (`Null` when not JSON).
    pub async fn scim_raw(
        &self,
        method: reqwest::Method,
        url: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// The samples of a Prometheus scrape: `name{labels}` to value.
pub fn metric_samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}
