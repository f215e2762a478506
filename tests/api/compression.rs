//! Compressed list bodies (`Accept-Encoding: zstd, gzip`): each coding
//! decodes to exactly the plain bytes, carries its own ETag, is made once
//! per revision (in memory for small lists, as a body file for large ones)
//! and retired by the next write; body files are bounded, cleaned at start,
//! survive clients that leave, fall back when they cannot be made, and go
//! out with sendfile(2) on plain TCP and copied over TLS.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::workos::*;

const BIG: &str = "directory_big";
const SMALL: &str = "directory_small";

/// NDJSON of one directory of `org` with `users` users (every third
/// inactive, each with a `blob`-byte attribute) and `groups` groups.
fn ndjson(org: &str, workos_dir: &str, users: usize, groups: usize, blob: usize) -> String {
    let blob = "x".repeat(blob);
    ndjson_with(org, workos_dir, users, groups, |_| blob.clone())
}

/// Hex digits that compress about as well as real attributes do (to about
/// half), different for every record: `len` of them for record `i`.
fn noisy(i: usize, len: usize) -> String {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

/// As [`ndjson`], each record's attribute made by `blob(i)`.
fn ndjson_with(
    org: &str,
    workos_dir: &str,
    users: usize,
    groups: usize,
    blob: impl Fn(usize) -> String,
) -> String {
    let mut out = format!(
        "{{\"object\":\"directory\",\"id\":\"{workos_dir}\",\"organization_id\":\"{org}\",\"name\":\"Big\",\"type\":\"okta scim v2.0\",\"state\":\"active\",\"created_at\":\"2026-01-01T00:00:00Z\"}}\n"
    );
    for i in 0..users {
        let state = if i % 3 == 0 { "inactive" } else { "active" };
        out.push_str(&format!(
            "{{\"object\":\"directory_user\",\"id\":\"directory_user_{workos_dir}_{i}\",\"directory_id\":\"{workos_dir}\",\"email\":\"u{i}@{workos_dir}.test\",\"first_name\":\"User\",\"last_name\":\"Number {i}\",\"state\":\"{state}\",\"raw_attributes\":{{\"blob\":\"{blob}\"}},\"created_at\":\"{}\"}}\n",
            created(i as i64),
            blob = blob(i),
        ));
    }
    for i in 0..groups {
        out.push_str(&format!(
            "{{\"object\":\"directory_group\",\"id\":\"directory_group_{workos_dir}_{i}\",\"directory_id\":\"{workos_dir}\",\"name\":\"Group {i} of {workos_dir}\",\"raw_attributes\":{{\"blob\":\"{blob}\"}},\"created_at\":\"{}\"}}\n",
            created(i as i64),
            blob = blob(i),
        ));
    }
    out
}

/// Imports `ndjson` into the database at `data`, before a server opens it.
fn import(data: &Path, ndjson: &str) {
    let store =
        rollcall::store::Store::open(data, rollcall::store::StoreOptions::default()).unwrap();
    rollcall::ingest::ndjson::import(&store, ndjson.as_bytes(), |_| {}).unwrap();
}

/// A server whose database holds `BIG` (ORG_A) with `users` users and
/// `groups` groups of `blob`-byte attributes; its internal directory id.
async fn app_with(
    users: usize,
    groups: usize,
    blob: usize,
    configure: impl FnOnce(&mut rollcall::config::Settings),
) -> (TestApp, String) {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    import(&s.data, &ndjson(ORG_A, BIG, users, groups, blob));
    configure(&mut s);
    let app = spawn_with(s, Arc::new(dir)).await;
    let id = directory_id(&app, ORG_A, BIG).await;
    (app, id)
}

/// Stream lists of more than 50 records from body files.
fn low_threshold(s: &mut rollcall::config::Settings) {
    s.stream_threshold = 50;
}

/// One answer as the client got it (nothing decoded).
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn encoding(&self) -> Option<String> {
        self.header("content-encoding")
    }

    fn etag(&self) -> String {
        self.header("etag").expect("an ETag")
    }

    /// The body with its content coding undone.
    fn decoded(&self) -> Vec<u8> {
        decode(self.encoding().as_deref(), &self.body)
    }
}

fn decode(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    match encoding {
        None => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("a valid gzip body");
            out
        }
        Some("zstd") => zstd::stream::decode_all(body).expect("a valid zstd body"),
        Some(other) => panic!("unexpected content coding {other}"),
    }
}

/// A request of ORG_A with an explicit `Accept-Encoding` (none when
/// `None`) and `If-None-Match`.
async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    accept: Option<&str>,
    inm: Option<&str>,
) -> Got {
    let mut req = client.request(method, url).bearer_auth(token_for(ORG_A));
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    if let Some(t) = inm {
        req = req.header("if-none-match", t);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.bytes().await.unwrap().to_vec();
    Got {
        status,
        headers,
        body,
    }
}

async fn get(app: &TestApp, url: &str, accept: Option<&str>) -> Got {
    let got = request(&app.client, reqwest::Method::GET, url, accept, None).await;
    assert_eq!(got.status, StatusCode::OK, "{url} with {accept:?}");
    got
}

fn users_url(app: &TestApp, id: &str) -> String {
    format!("{}/api/directories/{id}/users", app.base)
}

fn groups_url(app: &TestApp, id: &str) -> String {
    format!("{}/api/directories/{id}/groups", app.base)
}

/// The emails of a plain users body.
fn body_emails(body: &[u8]) -> Vec<String> {
    let list: Value = serde_json::from_slice(body).expect("a JSON body");
    emails(&list)
}

fn expected_emails(users: usize) -> Vec<String> {
    (0..users).map(|i| format!("u{i}@{BIG}.test")).collect()
}

/// The body files this app has open: `(descriptor path, target)` of this
/// process's file descriptors inside the app's body-file folder (other
/// tests' servers run in this process too, each with its own folder).
/// Targets of anonymous files name their inode, which the file system may
/// give a new file once the old one is freed: compare contents, not names.
fn body_files(app: &TestApp) -> Vec<(std::path::PathBuf, String)> {
    let dir = app.settings.body_files_dir();
    let mut prefixes = vec![format!("{}/", dir.display())];
    if let Ok(canonical) = std::fs::canonicalize(&dir) {
        prefixes.push(format!("{}/", canonical.display()));
    }
    let mut out: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((e.path(), target.to_string_lossy().into_owned()))
        })
        .filter(|(_, t)| prefixes.iter().any(|p| t.starts_with(p)))
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn body_fds(app: &TestApp) -> Vec<String> {
    body_files(app).into_iter().map(|(_, t)| t).collect()
}

/// What each open body file holds, told by its first bytes: its coding
/// and its content decoded.
fn body_file_contents(app: &TestApp) -> Vec<(&'static str, Vec<u8>)> {
    body_files(app)
        .into_iter()
        .map(|(fd, target)| {
            let bytes = std::fs::read(&fd).unwrap_or_else(|e| panic!("{target}: {e}"));
            match bytes.first() {
                Some(b'[') => ("identity", bytes),
                Some(0x1f) => ("gzip", decode(Some("gzip"), &bytes)),
                Some(0x28) => ("zstd", decode(Some("zstd"), &bytes)),
                _ => panic!("{target} holds no list body"),
            }
        })
        .collect()
}

/// Polls until this app has exactly `n` body files open.
async fn body_fds_settle(app: &TestApp, n: usize, what: &str) -> Vec<String> {
    eventually(Duration::from_secs(20), what, || async {
        body_fds(app).len() == n
    })
    .await;
    body_fds(app)
}

/// The samples of this app's `/metrics`.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let addr = app.metrics.expect("the metrics listener is on");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_samples(&text)
}

fn metric(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in the scrape"))
}

fn with_metrics(s: &mut rollcall::config::Settings) {
    s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
}

/// Renames user `i` of `BIG` (keeping its creation time, so its place in
/// the list) through a signed webhook; returns the new email.
async fn rename_user(app: &TestApp, i: usize, round: i64) -> String {
    let email = format!("renamed{i}.{round}@{BIG}.test");
    let renamed = with(
        user(
            BIG,
            &format!("directory_user_{BIG}_{i}"),
            &email,
            1_000_000 + round,
        ),
        "created_at",
        json!(created(i as i64)),
    );
    app.send_all(&[user_event("updated", renamed, 1_000_000 + round)])
        .await;
    email
}

// 1 ---------------------------------------------------------------------

#[tokio::test]
async fn compressed_lists_decode_to_exactly_the_plain_bytes_and_repeat_identically() {
    for (what, users, configure) in [
        ("small (cached)", 30usize, (|_| {}) as fn(&mut _)),
        ("large (body files)", 300, low_threshold as fn(&mut _)),
    ] {
        // Arrange
        let (app, id) = app_with(users, users, 200, configure).await;
        for url in [users_url(&app, &id), groups_url(&app, &id)] {
            // Act: the codings asked before the plain body exists, twice each.
            let mut firsts = Vec::new();
            for coding in ["gzip", "zstd"] {
                firsts.push((coding, get(&app, &url, Some(coding)).await));
            }
            let plain = get(&app, &url, None).await;
            // Assert
            assert_eq!(plain.encoding(), None, "{what} {url}");
            assert_eq!(
                plain.header("vary").as_deref(),
                Some("accept-encoding"),
                "{what}"
            );
            let list: Value = serde_json::from_slice(&plain.body).unwrap();
            assert_eq!(list.as_array().unwrap().len(), users, "{what} {url}");
            for (coding, first) in firsts {
                assert_eq!(
                    first.encoding().as_deref(),
                    Some(coding),
                    "{what} {url} in {coding}"
                );
                assert_eq!(
                    first.header("vary").as_deref(),
                    Some("accept-encoding"),
                    "{what} {coding}"
                );
                assert!(
                    first.body.len() < plain.body.len() / 2,
                    "{what} {coding}: {} of {} bytes",
                    first.body.len(),
                    plain.body.len()
                );
                assert!(
                    first.decoded() == plain.body,
                    "{what} {url}: {coding} does not decode to the plain body"
                );
                let second = get(&app, &url, Some(coding)).await;
                assert_eq!(second.encoding().as_deref(), Some(coding), "{what}");
                assert_eq!(second.etag(), first.etag(), "{what} {coding}");
                assert!(
                    second.body == first.body,
                    "{what} {url}: the second {coding} answer differs from the first"
                );
                if let Some(len) = first.header("content-length") {
                    assert_eq!(len, first.body.len().to_string(), "{what} {coding}");
                }
            }
        }
    }
}

// 2 ---------------------------------------------------------------------

#[tokio::test]
async fn curl_compressed_gets_the_plain_body() {
    for (what, users, configure) in [
        ("small", 30usize, (|_| {}) as fn(&mut _)),
        ("large", 300, low_threshold as fn(&mut _)),
    ] {
        // Arrange
        let (app, id) = app_with(users, 0, 200, configure).await;
        let url = users_url(&app, &id);
        let plain = get(&app, &url, None).await;
        let headers = app.dir().path().join(format!("curl-headers-{users}"));

        // Act (tokio's Command: the server runs on this test's runtime)
        let out = tokio::process::Command::new("curl")
            .arg("--compressed")
            .arg("-s")
            .arg("-D")
            .arg(&headers)
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token_for(ORG_A)))
            .arg(&url)
            .output()
            .await
            .expect("curl is installed");

        // Assert
        assert!(out.status.success(), "{what}: curl failed: {out:?}");
        let head = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            head.contains("content-encoding: zstd") || head.contains("content-encoding: gzip"),
            "{what}: curl was sent a compressed body: {head}"
        );
        assert!(
            out.stdout == plain.body,
            "{what}: curl's output ({} bytes) differs from the plain body ({} bytes)",
            out.stdout.len(),
            plain.body.len()
        );
    }
}

// 3 ---------------------------------------------------------------------

#[tokio::test]
async fn bodies_under_a_kibibyte_are_never_compressed() {
    for (users, expected) in [(0usize, Some("[]")), (1, None)] {
        // Arrange
        let (app, id) = app_with(users, 0, 10, |_| {}).await;
        let url = users_url(&app, &id);
        let plain = get(&app, &url, None).await;
        assert!(plain.body.len() < 1024, "{users} users under 1 KiB");
        if let Some(e) = expected {
            assert_eq!(plain.body, e.as_bytes());
        }
        for accept in ["gzip", "zstd", "zstd, gzip", "*"] {
            // Act (twice: the second from the cache)
            for _ in 0..2 {
                let got = get(&app, &url, Some(accept)).await;
                // Assert
                assert_eq!(got.encoding(), None, "{users} users, {accept}");
                assert_eq!(got.etag(), plain.etag(), "{users} users, {accept}");
                assert!(!got.etag().contains('-'), "an identity tag");
                assert_eq!(
                    got.header("vary").as_deref(),
                    Some("accept-encoding"),
                    "{users} users, {accept}"
                );
                assert!(got.body == plain.body, "{users} users, {accept}");
            }
        }
    }
}

// 4 ---------------------------------------------------------------------

#[tokio::test]
async fn each_coding_has_its_own_etag_and_304_confirms_only_what_the_client_accepts() {
    for (what, users, configure) in [
        ("small", 30usize, (|_| {}) as fn(&mut _)),
        ("large", 300, low_threshold as fn(&mut _)),
    ] {
        // Arrange
        let (app, id) = app_with(users, 0, 200, configure).await;
        let url = users_url(&app, &id);
        let c = &app.client;
        let get_ = reqwest::Method::GET;
        let plain = get(&app, &url, None).await;
        let gz = get(&app, &url, Some("gzip")).await;
        let zs = get(&app, &url, Some("zstd")).await;
        let (tag_i, tag_g, tag_z) = (plain.etag(), gz.etag(), zs.etag());

        // Assert: three tags, of one shape
        assert!(
            tag_i.starts_with('"') && tag_i.ends_with('"') && !tag_i.contains('-'),
            "{what}: {tag_i}"
        );
        assert_eq!(
            tag_g,
            format!("{}-gzip\"", tag_i.trim_end_matches('"')),
            "{what}"
        );
        assert_eq!(
            tag_z,
            format!("{}-zstd\"", tag_i.trim_end_matches('"')),
            "{what}"
        );

        // The gzip tag, gzip accepted: 304 with that tag, no body.
        let held = request(c, get_.clone(), &url, Some("gzip"), Some(&tag_g)).await;
        assert_eq!(held.status, StatusCode::NOT_MODIFIED, "{what}");
        assert_eq!(held.etag(), tag_g, "{what}");
        assert_eq!(
            held.header("vary").as_deref(),
            Some("accept-encoding"),
            "{what}"
        );
        assert!(held.body.is_empty(), "{what}");
        // Among others, with a weak prefix.
        let listed = format!("\"nope\", W/{tag_z}");
        let held = request(c, get_.clone(), &url, Some("zstd"), Some(&listed)).await;
        assert_eq!(held.status, StatusCode::NOT_MODIFIED, "{what}");
        assert_eq!(held.etag(), tag_z, "{what}");

        // The gzip tag, gzip not accepted: the full identity body.
        let full = request(c, get_.clone(), &url, None, Some(&tag_g)).await;
        assert_eq!(full.status, StatusCode::OK, "{what}");
        assert_eq!(full.encoding(), None, "{what}");
        assert_eq!(full.etag(), tag_i, "{what}");
        assert!(full.body == plain.body, "{what}: the full plain body");
        // The gzip tag to a zstd-only client: the zstd body.
        let other = request(c, get_.clone(), &url, Some("zstd"), Some(&tag_g)).await;
        assert_eq!(other.status, StatusCode::OK, "{what}");
        assert_eq!(other.encoding().as_deref(), Some("zstd"), "{what}");
        assert_eq!(other.etag(), tag_z, "{what}");
        assert!(other.decoded() == plain.body, "{what}");

        // The identity tag to a gzip client: it holds the plain copy.
        let held = request(c, get_.clone(), &url, Some("gzip"), Some(&tag_i)).await;
        assert_eq!(held.status, StatusCode::NOT_MODIFIED, "{what}");
        assert_eq!(held.etag(), tag_i, "{what}");
        assert!(held.body.is_empty(), "{what}");

        // Act: a change to the directory.
        let email = rename_user(&app, 1, 1).await;

        // Assert: every old tag answers 200 with a new tag and new body.
        for (tag, accept, coding) in [
            (&tag_i, None, None),
            (&tag_g, Some("gzip"), Some("gzip")),
            (&tag_z, Some("zstd"), Some("zstd")),
        ] {
            let fresh = request(c, get_.clone(), &url, accept, Some(tag)).await;
            assert_eq!(fresh.status, StatusCode::OK, "{what} after a change");
            assert_eq!(fresh.encoding().as_deref(), coding, "{what}");
            assert_ne!(&fresh.etag(), tag, "{what}: a new tag");
            let emails = body_emails(&fresh.decoded());
            assert_eq!(emails.len(), users, "{what}");
            assert_eq!(emails[1], email, "{what}: the change is in the body");
        }
        let i2 = get(&app, &url, None).await.etag();
        let g2 = get(&app, &url, Some("gzip")).await.etag();
        assert_eq!(g2, format!("{}-gzip\"", i2.trim_end_matches('"')));
    }
}

// 5 ---------------------------------------------------------------------

#[tokio::test]
async fn a_change_retires_the_body_file_of_every_coding() {
    // Arrange
    let (app, id) = app_with(300, 0, 200, |s| {
        low_threshold(s);
        with_metrics(s);
    })
    .await;
    let url = users_url(&app, &id);
    let mut old = HashMap::new();
    for accept in [None, Some("gzip"), Some("zstd")] {
        old.insert(accept, get(&app, &url, accept).await);
    }
    body_fds_settle(&app, 3, "plain, gzip and zstd files open").await;
    let reserved_before = metric(&scrape(&app).await, "rollcall_body_file_bytes");
    assert!(reserved_before > 0.0, "body files are counted");

    // Act
    let email = rename_user(&app, 7, 1).await;
    let mut new = HashMap::new();
    for accept in [None, Some("gzip"), Some("zstd")] {
        new.insert(accept, get(&app, &url, accept).await);
    }

    // Assert
    let plain = &new[&None];
    let emails = body_emails(&plain.body);
    assert_eq!(emails[7], email, "the change is in the new plain body");
    assert!(plain.body != old[&None].body);
    for coding in ["gzip", "zstd"] {
        let got = &new[&Some(coding)];
        assert_eq!(got.encoding().as_deref(), Some(coding));
        assert_ne!(got.etag(), old[&Some(coding)].etag(), "{coding}");
        assert!(
            got.decoded() == plain.body,
            "the new {coding} body decodes to the new plain body"
        );
    }
    body_fds_settle(&app, 3, "only the new files open").await;
    let mut codings = Vec::new();
    for (coding, content) in body_file_contents(&app) {
        assert!(
            content == plain.body,
            "the open {coding} body file holds the new list, not the old one"
        );
        codings.push(coding);
    }
    codings.sort_unstable();
    assert_eq!(codings, ["gzip", "identity", "zstd"]);
    let reserved_after = metric(&scrape(&app).await, "rollcall_body_file_bytes");
    assert!(
        reserved_after <= reserved_before,
        "the old files' space was given back: {reserved_before} then {reserved_after}"
    );
}

// 6 ---------------------------------------------------------------------

#[tokio::test]
async fn files_left_in_the_body_file_folder_are_removed_at_start() {
    // Arrange: a stopped server's folder with strays in it.
    let (app, id) = app_with(300, 0, 200, low_threshold).await;
    let url = users_url(&app, &id);
    let plain = get(&app, &url, None).await;
    let (dir, s) = app.stop().await;
    let folder = s.body_files_dir();
    assert!(folder.is_dir(), "the folder exists: {}", folder.display());
    let strays = [folder.join("stray.json"), folder.join("#1234.tmp")];
    for f in &strays {
        std::fs::write(f, b"[\"left behind\"]").unwrap();
    }
    std::fs::create_dir(folder.join("a-folder")).unwrap();

    // Act
    let app = spawn_with(s, dir).await;
    let url = users_url(&app, &id);

    // Assert
    for f in &strays {
        assert!(!f.exists(), "{} was removed", f.display());
    }
    assert!(folder.join("a-folder").is_dir(), "folders are left alone");
    for accept in [None, Some("gzip"), Some("zstd")] {
        let got = get(&app, &url, accept).await;
        assert!(got.decoded() == plain.body, "{accept:?} after a restart");
    }
}

#[tokio::test]
async fn files_put_in_the_body_file_folder_before_the_first_start_are_removed() {
    // Arrange
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    import(&s.data, &ndjson(ORG_A, BIG, 300, 0, 200));
    low_threshold(&mut s);
    let folder = s.body_files_dir();
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("stray.json"), b"[]").unwrap();
    std::fs::write(folder.join("other"), b"x").unwrap();

    // Act
    let app = spawn_with(s, Arc::new(dir)).await;

    // Assert
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        0,
        "the folder is empty"
    );
    let id = directory_id(&app, ORG_A, BIG).await;
    let got = get(&app, &users_url(&app, &id), Some("gzip")).await;
    assert_eq!(body_emails(&got.decoded()), expected_emails(300));
}

// 7 ---------------------------------------------------------------------

/// The plain file of 300 users is reserved 300 × 1024 bytes (+2) before
/// any list has been measured; its gzip file a quarter of the estimate.
/// This budget holds the plain reservation but not both.
const PLAIN_ONLY_BUDGET: u64 = 320_000;

/// A compressed body that does not fit beside the plain one it is made
/// from is refused (the plain file is never evicted for it): the client
/// gets the plain body, uncompressed.
#[tokio::test]
async fn when_the_budget_holds_the_plain_file_only_gzip_clients_get_it_uncompressed() {
    // Arrange
    let (app, id) = app_with(300, 0, 200, |s| {
        low_threshold(s);
        with_metrics(s);
        s.body_files_budget = PLAIN_ONLY_BUDGET;
    })
    .await;
    let url = users_url(&app, &id);

    // Act: gzip first, so the plain estimate is the unmeasured one.
    let got = get(&app, &url, Some("gzip")).await;
    let reserved = metric(&scrape(&app).await, "rollcall_body_file_bytes");
    body_fds_settle(&app, 1, "one body file kept").await;
    let kept: Vec<_> = body_file_contents(&app)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let plain = get(&app, &url, None).await;

    // Assert
    assert_eq!(body_emails(&plain.body), expected_emails(300));
    assert!(
        got.decoded() == plain.body,
        "the gzip client got the list in full"
    );
    assert!(
        reserved <= PLAIN_ONLY_BUDGET as f64,
        "{reserved} bytes reserved once the answer is sent, over the {PLAIN_ONLY_BUDGET}-byte budget"
    );
    assert_eq!(kept, ["identity"], "the plain body file is kept");
    assert_eq!(
        got.encoding(),
        None,
        "the compressed file did not fit: the plain body, uncompressed"
    );
    assert_eq!(got.etag(), plain.etag(), "the identity tag");
}

/// 4 MiB: what 3000 records are estimated at before any is measured
/// (3000 × 1024) fits; the 3000 records of 3 KB each do not.
const SMALL_BUDGET: u64 = 4 * 1024 * 1024;

/// A body file's reservation is an estimate (count × bytes per record last
/// measured); its builder grows it to cover what it writes and stops at the
/// budget. The build that finds out aborts its readers (a cut transfer,
/// never a well-formed partial list), its list is measured, and from then
/// on it does not fit: it streams from a snapshot, in full.
#[tokio::test]
async fn body_files_on_disk_stay_within_the_budget_whatever_their_records_weigh() {
    // Arrange: ~9.5 MB of users, under a 4 MiB budget.
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    import(
        &s.data,
        &ndjson_with(ORG_A, BIG, 3000, 0, |i| noisy(i, 3000)),
    );
    low_threshold(&mut s);
    with_metrics(&mut s);
    s.body_files_budget = SMALL_BUDGET;
    let app = spawn_with(s, Arc::new(dir)).await;
    let id = directory_id(&app, ORG_A, BIG).await;
    let url = users_url(&app, &id);

    // Act: the first read finds out what the records weigh.
    let first = app
        .client
        .get(&url)
        .bearer_auth(token_for(ORG_A))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.bytes().await;
    let on_disk = || -> u64 {
        body_files(&app)
            .iter()
            .map(|(fd, _)| std::fs::metadata(fd).map_or(0, |m| m.len()))
            .sum()
    };
    let after_first = on_disk();
    let reserved = metric(&scrape(&app).await, "rollcall_body_file_bytes");
    let second = get(&app, &url, None).await;
    let zstd = get(&app, &url, Some("zstd")).await;

    // Assert: the first answer is complete or cut, never a partial list.
    if let Ok(body) = &first {
        assert_eq!(body_emails(body), expected_emails(3000), "complete");
    }
    assert!(
        after_first <= SMALL_BUDGET && reserved <= SMALL_BUDGET as f64,
        "{after_first} bytes of body files on disk, {reserved} reserved, under a {SMALL_BUDGET}-byte budget"
    );
    assert_eq!(body_emails(&second.body), expected_emails(3000));
    assert!(second.body.len() as u64 > 2 * SMALL_BUDGET);
    assert!(
        zstd.decoded() == second.body,
        "too big for a file: sent whole, uncompressed or not"
    );
    assert!(on_disk() <= SMALL_BUDGET, "still within the budget");
}

#[tokio::test]
async fn with_no_room_for_any_body_file_the_list_is_streamed_in_full() {
    // Arrange
    let (app, id) = app_with(300, 0, 200, |s| {
        low_threshold(s);
        s.body_files_budget = 1000;
    })
    .await;
    let url = users_url(&app, &id);

    for accept in [None, Some("gzip"), Some("zstd, gzip")] {
        // Act
        let got = get(&app, &url, accept).await;
        // Assert
        assert_eq!(got.encoding(), None, "{accept:?}: sent as it is");
        assert_eq!(
            body_emails(&got.body),
            expected_emails(300),
            "{accept:?}: in full"
        );
        assert!(!got.etag().contains('-'), "{accept:?}: the identity tag");
        assert_eq!(
            got.header("vary").as_deref(),
            Some("accept-encoding"),
            "{accept:?}"
        );
    }
    assert!(body_fds(&app).is_empty(), "no body file was made");
}

// 8 ---------------------------------------------------------------------

#[tokio::test]
async fn a_client_leaving_mid_sendfile_leaves_nothing_behind() {
    // Arrange: ~10 MB of users (~5 MB in gzip): more than socket buffers.
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    import(
        &s.data,
        &ndjson_with(ORG_A, BIG, 3000, 0, |i| noisy(i, 3000)),
    );
    low_threshold(&mut s);
    with_metrics(&mut s);
    let app = spawn_with(s, Arc::new(dir)).await;
    let id = directory_id(&app, ORG_A, BIG).await;
    let url = users_url(&app, &id);
    let plain = get(&app, &url, None).await;
    assert!(plain.body.len() > 9_000_000, "{} bytes", plain.body.len());
    let gz = get(&app, &url, Some("gzip")).await;
    assert!(gz.body.len() > 4_000_000, "{} bytes in gzip", gz.body.len());

    // Act: read a few KB, then hang up.
    for accept in ["identity", "gzip"] {
        let mut socket = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
        let head = format!(
            "GET /api/directories/{id}/users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nAccept-Encoding: {accept}\r\n\r\n",
            token_for(ORG_A)
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut got = vec![0u8; 8192];
        let mut read = 0;
        while read < 4096 {
            let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut got[read..]))
                .await
                .expect("the answer starts")
                .unwrap();
            assert!(n > 0, "the server closed early");
            read += n;
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{accept}");
        drop(socket);
    }

    // Assert: others are served correctly meanwhile.
    for accept in [None, Some("gzip"), Some("zstd")] {
        let got = get(&app, &url, accept).await;
        assert!(got.decoded() == plain.body, "{accept:?} after the hang-ups");
    }
    let email = rename_user(&app, 2, 1).await;
    let fresh = get(&app, &url, None).await;
    assert_eq!(body_emails(&fresh.body)[2], email);
    body_fds_settle(&app, 1, "only the new plain file open").await;
    let open = body_file_contents(&app);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "identity");
    assert!(
        open[0].1 == fresh.body,
        "the one open body file is the new plain body: no old file lingers"
    );
    eventually(Duration::from_secs(20), "no stream in flight", || async {
        metric(&scrape(&app).await, "rollcall_streams_in_flight") == 0.0
    })
    .await;
}

// 9 ---------------------------------------------------------------------

#[tokio::test]
async fn when_no_body_file_can_be_made_the_list_is_streamed_from_a_snapshot() {
    // Arrange: the folder replaced by a regular file after start.
    let (app, id) = app_with(300, 300, 200, low_threshold).await;
    let folder = app.settings.body_files_dir();
    std::fs::rename(&folder, folder.with_extension("moved")).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();

    for (url, count) in [(users_url(&app, &id), 300), (groups_url(&app, &id), 300)] {
        for accept in [None, Some("gzip"), Some("zstd")] {
            // Act
            let got = get(&app, &url, accept).await;
            // Assert
            assert_eq!(got.encoding(), None, "{url} {accept:?}");
            assert!(!got.etag().contains('-'), "{accept:?}: the identity tag");
            let list: Value = serde_json::from_slice(&got.body).expect("a whole JSON list");
            assert_eq!(list.as_array().unwrap().len(), count, "{url} {accept:?}");
        }
    }
    let users = get(&app, &users_url(&app, &id), None).await;
    assert_eq!(body_emails(&users.body), expected_emails(300));
}

// 10 --------------------------------------------------------------------

#[tokio::test]
async fn a_page_is_compressed_for_its_request_and_keeps_its_link() {
    for (what, configure) in [
        ("small", (|_| {}) as fn(&mut _)),
        ("large", low_threshold as fn(&mut _)),
    ] {
        // Arrange
        let (app, id) = app_with(300, 0, 200, configure).await;
        let url = format!("{}?limit=10", users_url(&app, &id));
        let plain = get(&app, &url, None).await;
        assert!(plain.body.len() >= 1024, "{what}: a page of 1 KiB or more");
        let link = plain.header("link").expect("a Link to the next page");

        for coding in ["gzip", "zstd"] {
            // Act
            let got = get(&app, &url, Some(coding)).await;
            // Assert
            assert_eq!(got.encoding().as_deref(), Some(coding), "{what}");
            assert!(got.decoded() == plain.body, "{what}: {coding} page");
            assert_eq!(got.header("link").as_deref(), Some(link.as_str()));
            assert_eq!(
                got.etag(),
                format!("{}-{coding}\"", plain.etag().trim_end_matches('"')),
                "{what}"
            );
            assert_eq!(got.header("vary").as_deref(), Some("accept-encoding"));
            // The page's tag is its own.
            let held = request(
                &app.client,
                reqwest::Method::GET,
                &url,
                Some(coding),
                Some(&got.etag()),
            )
            .await;
            assert_eq!(held.status, StatusCode::NOT_MODIFIED, "{what} {coding}");
        }
        assert_eq!(
            body_emails(&plain.body),
            expected_emails(10),
            "{what}: the first page"
        );
    }
}

/// HEADs and GETs of a large list, mixed on one keep-alive connection:
/// every GET is the whole list, byte for byte (a file body never leaves
/// anything queued for the connection's next answer).
#[tokio::test]
async fn heads_and_gets_of_a_large_list_share_a_connection_safely() {
    // Arrange
    let (app, id) = app_with(300, 0, 200, low_threshold).await;
    let url = users_url(&app, &id);
    let plain = get(&app, &url, None).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    for accept in [None, Some("gzip"), Some("zstd"), None] {
        // Act
        let head = request(&client, reqwest::Method::HEAD, &url, accept, None).await;
        let got = request(&client, reqwest::Method::GET, &url, accept, None).await;
        let again = request(&client, reqwest::Method::HEAD, &url, accept, None).await;

        // Assert
        assert_eq!(head.status, StatusCode::OK, "{accept:?}");
        assert!(head.body.is_empty() && again.body.is_empty());
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.decoded() == plain.body, "{accept:?}: the whole list");
    }
}

// 11 --------------------------------------------------------------------

#[tokio::test]
async fn head_of_a_cached_list_says_what_a_gzip_get_sends() {
    // Arrange
    let (app, id) = app_with(30, 0, 200, |_| {}).await;
    let url = users_url(&app, &id);
    let plain = get(&app, &url, None).await;
    let gz = get(&app, &url, Some("gzip")).await;

    for accept in ["gzip", "zstd"] {
        // Act
        let head = request(&app.client, reqwest::Method::HEAD, &url, Some(accept), None).await;
        let got = get(&app, &url, Some(accept)).await;
        // Assert
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.encoding().as_deref(), Some(accept));
        assert_eq!(head.etag(), got.etag(), "{accept}");
        assert_eq!(
            head.header("content-length"),
            Some(got.body.len().to_string()),
            "{accept}: the coded body's length"
        );
        assert_eq!(head.header("vary").as_deref(), Some("accept-encoding"));
        assert!(head.body.is_empty());
    }
    assert_eq!(
        gz.etag(),
        format!("{}-gzip\"", plain.etag().trim_end_matches('"'))
    );
}

// 12 --------------------------------------------------------------------

#[tokio::test]
async fn large_lists_go_out_with_sendfile_on_plain_tcp() {
    // Arrange
    let (app, id) = app_with(300, 0, 200, |s| {
        low_threshold(s);
        with_metrics(s);
    })
    .await;
    let url = users_url(&app, &id);
    for accept in [None, Some("gzip"), Some("zstd")] {
        let before = metric(&scrape(&app).await, "rollcall_sendfile_bytes_total");

        // Act
        let got = get(&app, &url, accept).await;

        // Assert (the counter is process-wide and only grows)
        assert_eq!(body_emails(&got.decoded()), expected_emails(300));
        let after = metric(&scrape(&app).await, "rollcall_sendfile_bytes_total");
        assert!(
            after - before >= got.body.len() as f64,
            "{accept:?}: {} bytes sent with sendfile for a body of {}",
            after - before,
            got.body.len()
        );
    }
}

// 13 --------------------------------------------------------------------

#[tokio::test]
async fn over_tls_large_lists_are_copied_complete_in_every_coding() {
    // Arrange
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    let dir = TempDir::new().unwrap();
    let files = rollcall::config::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, &cert).unwrap();
    std::fs::write(&files.key, &key).unwrap();
    let mut s = settings(dir.path());
    import(&s.data, &ndjson(ORG_A, BIG, 3000, 0, 300));
    low_threshold(&mut s);
    s.tls = Some(files);
    let app = spawn_with(s, Arc::new(dir)).await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}", app.addr().port());
    let (_, dirs) = {
        let got = request(
            &client,
            reqwest::Method::GET,
            &format!("{base}/api/directories"),
            None,
            None,
        )
        .await;
        (
            got.status,
            serde_json::from_slice::<Value>(&got.body).unwrap(),
        )
    };
    let id = dirs[0]["id"].as_str().unwrap().to_owned();
    let url = format!("{base}/api/directories/{id}/users");

    // Act
    let plain = request(&client, reqwest::Method::GET, &url, None, None).await;
    let mut coded = Vec::new();
    for coding in ["gzip", "zstd", "gzip"] {
        coded.push((
            coding,
            request(&client, reqwest::Method::GET, &url, Some(coding), None).await,
        ));
    }

    // Assert
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(body_emails(&plain.body), expected_emails(3000));
    for (coding, got) in coded {
        assert_eq!(got.status, StatusCode::OK, "{coding}");
        assert_eq!(got.encoding().as_deref(), Some(coding));
        if let Some(len) = got.header("content-length") {
            assert_eq!(len, got.body.len().to_string(), "{coding}");
        }
        assert!(
            got.decoded() == plain.body,
            "{coding} over TLS decodes to the plain body"
        );
    }
}

// 14 --------------------------------------------------------------------

/// `(path and coding asked, Content-Encoding, ETag, body)`.
type Coded = (String, Option<String>, String, Vec<u8>);

#[tokio::test]
async fn identical_data_gives_byte_identical_compressed_bodies_on_every_instance() {
    // Arrange: the same NDJSON into three instances; two stream from body
    // files, one renders the large list in memory.
    let data = format!(
        "{}{}",
        ndjson(ORG_A, BIG, 300, 300, 200),
        ndjson(ORG_A, SMALL, 30, 30, 200)
    );
    let mut apps = Vec::new();
    for threshold in [50u64, 50, 100_000] {
        let dir = TempDir::new().unwrap();
        let mut s = settings(dir.path());
        import(&s.data, &data);
        s.stream_threshold = threshold;
        apps.push(spawn_with(s, Arc::new(dir)).await);
    }

    // Act
    let mut answers: Vec<Vec<Coded>> = Vec::new();
    for app in &apps {
        let mut mine = Vec::new();
        for workos in [BIG, SMALL] {
            let id = directory_id(app, ORG_A, workos).await;
            for url in [users_url(app, &id), groups_url(app, &id)] {
                for accept in ["gzip", "zstd"] {
                    let got = get(app, &url, Some(accept)).await;
                    let path = url.trim_start_matches(&app.base).to_owned();
                    mine.push((
                        format!("{path} {accept}"),
                        got.encoding(),
                        got.etag(),
                        got.body,
                    ));
                }
            }
        }
        answers.push(mine);
    }

    // Assert
    for (n, other) in answers.iter().enumerate().skip(1) {
        for (a, b) in answers[0].iter().zip(other) {
            assert_eq!(a.0, b.0);
            assert!(a.1.is_some(), "{} is compressed", a.0);
            assert_eq!(a.1, b.1, "{}: instance {n}", a.0);
            assert_eq!(a.2, b.2, "{}: instance {n}", a.0);
            assert!(
                a.3 == b.3,
                "{}: instance {n} sent other bytes under the same tag ({} vs {} bytes)",
                a.0,
                a.3.len(),
                b.3.len()
            );
        }
        assert_eq!(answers[0].len(), other.len());
    }
}

// Negotiation -------------------------------------------------------------

#[tokio::test]
async fn the_coding_follows_the_clients_preferences_zstd_first_on_a_tie() {
    for (what, configure) in [
        ("small", (|_| {}) as fn(&mut _)),
        ("large", low_threshold as fn(&mut _)),
    ] {
        // Arrange
        let (app, id) = app_with(300, 0, 200, configure).await;
        let url = users_url(&app, &id);
        let plain = get(&app, &url, None).await;
        for (accept, expected) in [
            ("gzip, zstd", Some("zstd")),
            ("zstd;q=0.5, gzip", Some("gzip")),
            ("gzip;q=0.8, zstd;q=0.9, identity;q=0.1", Some("zstd")),
            ("gzip;q=0.9, zstd;q=0.8, identity;q=0.1", Some("gzip")),
            ("x-gzip", Some("gzip")),
            ("GZIP", Some("gzip")),
            ("*", Some("zstd")),
            ("*;q=0.5, gzip", Some("gzip")),
            ("zstd;q=0, *", Some("gzip")),
            ("br, deflate", None),
            ("gzip;q=0", None),
            ("identity", None),
            ("", None),
        ] {
            // Act
            let got = get(&app, &url, Some(accept)).await;
            // Assert
            assert_eq!(got.encoding().as_deref(), expected, "{what}: {accept:?}");
            let suffix = expected.map_or(String::new(), |c| format!("-{c}"));
            assert_eq!(
                got.etag(),
                format!("{}{suffix}\"", plain.etag().trim_end_matches('"')),
                "{what}: {accept:?}"
            );
            assert!(got.decoded() == plain.body, "{what}: {accept:?}");
        }
    }
}
