//! Bearer-token verification: WorkOS AuthKit access tokens (RS256/ES256
//! against a JWKS from a file or a URL) and, when a secret is configured,
//! HS256 tokens for development and tests.
//!
//! This module decides who is calling and for which organization; it never
//! decides what they may see (that is the API's organization scoping). It
//! never logs a token. It owns the keys and their freshness
//! ([`Verifier::keep_keys_fresh`], which the application runs beside the
//! server and stops on shutdown), but not process signals: the application
//! turns SIGHUP into [`Verifier::reload_keys`].
//!
//! Rules (the README's "Errors", on tokens):
//! - only `RS256`, `ES256` (JWKS) and `HS256` (secret) are accepted; `none`
//!   and every other algorithm are refused;
//! - an `HS256` token whose `kid` names a JWKS key is refused (key confusion);
//! - a `crit` header parameter is refused: rollcall understands no JWS
//!   extension (RFC 7515 §4.1.11);
//! - `exp` is required and at most the maximum lifetime away; `exp`/`nbf`
//!   are checked with a small leeway; `aud` when configured; `iss`, when
//!   present, must be a string, and one of the configured issuers when
//!   some are;
//! - the organization is `org_id` or `organization_id`; both present and
//!   different is a forged-looking token and refused.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

/// Longest bearer token accepted; real AuthKit tokens are ~1 KB.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest organization id accepted (WorkOS ids are ~30 characters).
pub const MAX_ORG_ID_LEN: usize = 256;
/// Verified tokens remembered at most.
const CACHE_ENTRIES: usize = 16 * 1024;
/// Bytes the verified-token cache may hold, each entry's strings counted.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Largest JWKS read, from a file or a URL (WorkOS's is about 1 KB; a
/// 400 MB one once took 800 MB of memory to refuse).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Longest token lifetime accepted by default: a day, what the dev banner
/// and `benches/load.py` mint (WorkOS access tokens live minutes).
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 3600;
/// Longest time between two fetches of the JWKS URL by default.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;

/// Where verification keys come from and what claims must say.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub jwks_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub hs256_secret: Option<Vec<u8>>,
    /// Accepted `iss` values; empty accepts any.
    pub issuers: Vec<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Least time between two fetches of the JWKS URL, whatever asks for
    /// them (an unknown `kid`, the schedule, a short `max-age`); only an
    /// explicit reload ignores it.
    pub jwks_refetch_interval: Duration,
    /// Longest time between two fetches of the JWKS URL: keys it no longer
    /// publishes stop working within this (or its `Cache-Control: max-age`
    /// when shorter).
    pub jwks_refresh_interval: Duration,
    /// How often the JWKS file's modification time and length are looked
    /// at; the file is read again when either changed.
    pub jwks_file_poll: Duration,
    /// Longest accepted lifetime: a token whose `exp` is further than this
    /// (plus the leeway) from now is refused, so a leaked token with a
    /// far-future `exp` does not work forever (nor sit in the cache).
    pub max_lifetime: Duration,
}

/// The defaults of `rollcall serve`, no keys configured.
impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwks_url: None,
            jwks_file: None,
            hs256_secret: None,
            issuers: Vec::new(),
            audience: None,
            leeway: Duration::from_secs(30),
            jwks_refetch_interval: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(DEFAULT_JWKS_REFRESH_SECS),
            jwks_file_poll: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(DEFAULT_MAX_LIFETIME_SECS),
        }
    }
}

impl AuthConfig {
    /// Whether any way of verifying tokens is configured.
    pub fn is_configured(&self) -> bool {
        self.jwks_url.is_some() || self.jwks_file.is_some() || self.hs256_secret.is_some()
    }
}

/// Why a request is not authenticated. Every variant is a 401; the reason
/// goes to the server's log (rate-limited), never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token rejected: {0}")]
    Rejected(&'static str),
}

/// A startup failure of the key configuration.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot use the JWKS file {path}: {problem}")]
    File { path: PathBuf, problem: JwksProblem },
    #[error("cannot set up the JWKS client: {0}")]
    Client(String),
}

/// Why a JWKS (a file or a URL's answer) is not used. At startup a file
/// with a problem stops the server; later, the keys already loaded stay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksProblem {
    #[error("{0}")]
    Unreadable(String),
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS: {0}")]
    Invalid(String),
    #[error("no usable key (an RSA key for RS256 or an EC P-256 key for ES256)")]
    NoUsableKey,
}

/// The verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The organization the token is scoped to, if any.
    pub organization_id: Option<String>,
    /// `exp`, seconds since the epoch.
    expires_at: u64,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    org_id: Option<Value>,
    organization_id: Option<Value>,
}

/// Reads a claim that is there, `null` included, as `Some` (a plain
/// `Option<Value>` reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A published key's identity: SHA-256 over its `kid`, algorithm and
/// public parameters, so a new key under an old `kid` is a different key.
type Fingerprint = [u8; 32];

/// The key a cached token was verified with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signer {
    /// The HS256 secret, fixed for the life of the process.
    Secret,
    Jwk(Fingerprint),
}

struct KeyEntry {
    key: DecodingKey,
    alg: Algorithm,
    fingerprint: Fingerprint,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<KeyEntry>>,
    /// Keys published without a `kid`.
    anonymous: Vec<Arc<KeyEntry>>,
    /// Every key of the set (what [`Signer::Jwk`] is checked against).
    fingerprints: HashSet<Fingerprint>,
}

impl KeySet {
    /// Parses a JWKS, skipping keys rollcall cannot use.
    ///
    /// # Errors
    /// When the document is not a JWKS or has no usable key: a set without
    /// keys never replaces one with keys.
    fn parse(json: &[u8]) -> Result<Self, JwksProblem> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksProblem::TooLarge);
        }
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| JwksProblem::Invalid(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwksProblem::Invalid("no `keys` array".into()))?;
        let mut set = Self::default();
        for raw in keys {
            // One unusable key (another algorithm, a private-only key) must
            // not take the others down with it.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                tracing::warn!("skipping a JWKS key that cannot be parsed");
                continue;
            };
            let alg = match (&jwk.algorithm, raw.get("kty").and_then(Value::as_str)) {
                (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), _) => Algorithm::RS256,
                (jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p), _)
                    if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    tracing::warn!("skipping a JWKS key that is neither RSA nor EC P-256");
                    continue;
                }
            };
            if let Some(declared) = raw.get("alg").and_then(Value::as_str)
                && declared != format!("{alg:?}")
            {
                tracing::warn!(
                    alg = declared,
                    "skipping a JWKS key for an unsupported algorithm"
                );
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                tracing::warn!("skipping a JWKS key that cannot be loaded");
                continue;
            };
            let fingerprint = fingerprint(&jwk, alg);
            let entry = Arc::new(KeyEntry {
                key,
                alg,
                fingerprint,
            });
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, entry);
                }
                None => set.anonymous.push(entry),
            }
        }
        if set.len() == 0 {
            return Err(JwksProblem::NoUsableKey);
        }
        set.fingerprints = set.entries().map(|e| e.fingerprint).collect();
        Ok(set)
    }

    /// The keys of both sets; on a `kid` in both, `preferred`'s.
    fn merged(other: &Self, preferred: &Self) -> Self {
        let mut by_kid = other.by_kid.clone();
        by_kid.extend(
            preferred
                .by_kid
                .iter()
                .map(|(kid, key)| (kid.clone(), key.clone())),
        );
        let mut set = Self {
            by_kid,
            anonymous: [&other.anonymous[..], &preferred.anonymous[..]].concat(),
            fingerprints: HashSet::new(),
        };
        set.fingerprints = set.entries().map(|e| e.fingerprint).collect();
        set
    }

    fn entries(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        self.by_kid.values().chain(&self.anonymous)
    }

    /// Whether a token verified by `signer` may still be trusted.
    fn still_has(&self, signer: &Signer) -> bool {
        match signer {
            Signer::Secret => true,
            Signer::Jwk(fingerprint) => self.fingerprints.contains(fingerprint),
        }
    }

    /// Reads and parses a JWKS file, its size checked before it is read.
    ///
    /// # Errors
    /// As [`KeySet::parse`], and when the file cannot be read.
    fn read(path: &Path) -> Result<Self, JwksProblem> {
        let unreadable = |e: std::io::Error| JwksProblem::Unreadable(e.to_string());
        let file = std::fs::File::open(path).map_err(unreadable)?;
        if file.metadata().map_err(unreadable)?.len() > MAX_JWKS_BYTES as u64 {
            return Err(JwksProblem::TooLarge);
        }
        // The file may grow between the stat and the read.
        let mut bytes = Vec::new();
        file.take(MAX_JWKS_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        Self::parse(&bytes)
    }

    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<KeyEntry>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).filter(|k| k.alg == alg).cloned(),
            None => {
                let mut candidates = self
                    .anonymous
                    .iter()
                    .chain(self.by_kid.values())
                    .filter(|k| k.alg == alg);
                let first = candidates.next()?;
                // Without a kid, only an unambiguous key may be used.
                candidates.next().is_none().then(|| first.clone())
            }
        }
    }
}

/// Verifies bearer tokens; cheap to share (`Arc`).
///
/// The keys are kept current by [`Verifier::keep_keys_fresh`], a task the
/// application runs beside the server: the JWKS URL is fetched again on a
/// schedule (sooner when its `Cache-Control: max-age` says so), besides
/// when a token names an unknown `kid`; the JWKS file is read again when
/// its modification time or length changes; both on
/// [`Verifier::reload_keys`].
pub struct Verifier {
    config: AuthConfig,
    hs256: Option<DecodingKey>,
    /// What verification reads: the file's and the URL's keys merged.
    keys: RwLock<Arc<KeySet>>,
    /// Each source's last good keys; replacing one rebuilds `keys`.
    sources: Mutex<Sources>,
    /// When the JWKS URL was last fetched; held during a fetch, so
    /// concurrent callers share one.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// When the scheduled refresh of the JWKS URL is due.
    url_due: Mutex<Option<Instant>>,
    /// The JWKS file as last looked at (`None`: it could not be).
    file_seen: Mutex<Option<FileStamp>>,
    /// The HTTP client for the JWKS URL; none without one (an offline
    /// install may have no CA certificates to build one with).
    http: Option<reqwest::Client>,
    cache: Mutex<TokenCache>,
    /// Wakes [`Verifier::keep_keys_fresh`] for an immediate reload.
    reload: Notify,
    /// Wakes [`Verifier::keep_keys_fresh`] when `url_due` moved earlier.
    rescheduled: Notify,
}

#[derive(Default)]
struct Sources {
    file: Arc<KeySet>,
    url: Arc<KeySet>,
}

/// What the JWKS file poll compares. The modification time alone misses
/// a rewrite within the file system's timestamp granularity; the length
/// catches most of those. (A change keeping both takes a SIGHUP.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// Where keys come from (for the logs).
#[derive(Clone, Copy, Debug)]
enum Source {
    File,
    Url,
}

/// Why the JWKS URL is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    Startup,
    /// A token named a `kid` the keys do not have (rate-limited).
    UnknownKid,
    /// The refresh schedule says so.
    Scheduled,
    /// Asked for ([`Verifier::reload_keys`], SIGHUP).
    Reload,
}

impl Verifier {
    /// Loads the configured keys. A JWKS URL that cannot be reached now is
    /// not fatal (it is fetched again when a token needs it, and on
    /// schedule); a JWKS file that cannot be read, is too large, invalid or
    /// without a usable key is.
    ///
    /// # Errors
    /// [`KeyError::File`] naming the file and what is wrong with it.
    pub async fn new(config: AuthConfig) -> Result<Self, KeyError> {
        // Looked at before the read: a change during it is seen next poll.
        let file_seen = config.jwks_file.as_deref().and_then(FileStamp::of);
        let file = match &config.jwks_file {
            Some(path) => KeySet::read(path).map_err(|problem| KeyError::File {
                path: path.clone(),
                problem,
            })?,
            None => KeySet::default(),
        };
        let http = match &config.jwks_url {
            Some(_) => Some(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| KeyError::Client(e.to_string()))?,
            ),
            None => None,
        };
        let file = Arc::new(file);
        let verifier = Self {
            hs256: config.hs256_secret.as_deref().map(DecodingKey::from_secret),
            config,
            keys: RwLock::new(file.clone()),
            sources: Mutex::new(Sources {
                file,
                url: Arc::default(),
            }),
            last_fetch: tokio::sync::Mutex::new(None),
            url_due: Mutex::new(None),
            file_seen: Mutex::new(file_seen),
            http,
            cache: Mutex::new(TokenCache::new(CACHE_ENTRIES, CACHE_BYTES)),
            reload: Notify::new(),
            rescheduled: Notify::new(),
        };
        verifier.refetch(Fetch::Startup).await;
        Ok(verifier)
    }

    fn keyset(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks [`Verifier::keep_keys_fresh`] to reload the keys now: the JWKS
    /// file is read again and the URL fetched, whatever the schedule (what
    /// SIGHUP does).
    pub fn reload_keys(&self) {
        self.reload.notify_one();
    }

    /// Keeps the keys current until `stopped` turns true (or its sender is
    /// dropped): fetches the JWKS URL when its refresh is due, reads the
    /// JWKS file again when it changed, and reloads both when
    /// [`Verifier::reload_keys`] asks. Returns at once when no JWKS is
    /// configured.
    pub async fn keep_keys_fresh(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        if self.config.jwks_url.is_none() && self.config.jwks_file.is_none() {
            return;
        }
        while !*stopped.borrow() {
            let wake = self.next_wake();
            let work = async {
                tokio::select! {
                    () = self.reload.notified() => self.reload_now().await,
                    () = self.rescheduled.notified() => {}
                    () = tokio::time::sleep_until(wake.into()) => self.refresh_due().await,
                }
            };
            tokio::select! {
                () = work => {}
                _ = stopped.changed() => break,
            }
        }
    }

    /// When [`Verifier::keep_keys_fresh`] next has something to do.
    fn next_wake(&self) -> Instant {
        let idle = if self.config.jwks_file.is_some() {
            self.config.jwks_file_poll
        } else {
            Duration::from_secs(3600)
        };
        let idle = Instant::now() + idle;
        let url_due = *lock(&self.url_due);
        url_due.map_or(idle, |due| due.min(idle))
    }

    async fn refresh_due(&self) {
        self.reread_file(false).await;
        self.refetch(Fetch::Scheduled).await;
    }

    async fn reload_now(&self) {
        self.reread_file(true).await;
        self.refetch(Fetch::Reload).await;
    }

    /// Reads the JWKS file again if it changed since last looked at (or
    /// `always`). A file that cannot be used keeps the keys loaded.
    async fn reread_file(&self, always: bool) {
        let Some(path) = self.config.jwks_file.as_deref() else {
            return;
        };
        let seen = *lock(&self.file_seen);
        let owned = path.to_owned();
        // A stat, and maybe a read of up to 1 MiB: off the async threads.
        let looked = tokio::task::spawn_blocking(move || {
            let now = FileStamp::of(&owned);
            (always || now != seen).then(|| (now, KeySet::read(&owned)))
        })
        .await;
        let Ok(Some((now, read))) = looked else {
            return;
        };
        *lock(&self.file_seen) = now;
        match read {
            Ok(set) => self.replace(Source::File, set),
            Err(problem) => tracing::warn!(
                path = %path.display(),
                %problem,
                "JWKS file not loaded; keeping the keys loaded"
            ),
        }
    }

    /// Fetches the JWKS URL, unless `why` does not warrant it now: an
    /// unknown `kid` within the refetch interval of the last fetch, or a
    /// scheduled refresh another fetch has pushed back. Schedules the next
    /// refresh. A failed fetch keeps the keys loaded.
    async fn refetch(&self, why: Fetch) {
        let Some(url) = &self.config.jwks_url else {
            return;
        };
        let mut last = self.last_fetch.lock().await;
        let now = Instant::now();
        let skip = match why {
            Fetch::UnknownKid => {
                last.is_some_and(|t| now.duration_since(t) < self.config.jwks_refetch_interval)
            }
            Fetch::Scheduled => lock(&self.url_due).is_some_and(|due| now < due),
            Fetch::Startup | Fetch::Reload => false,
        };
        if skip {
            return;
        }
        *last = Some(now);
        let fetched = self.fetch(url).await;
        let floor = self.config.jwks_refetch_interval;
        let next = match &fetched {
            Ok((_, max_age)) => refresh_after(self.config.jwks_refresh_interval, *max_age, floor),
            Err(_) => floor,
        };
        // An interval too large for an Instant means "not in this process's life".
        let due = Instant::now()
            .checked_add(next)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        let earlier = lock(&self.url_due)
            .replace(due)
            .is_none_or(|before| due < before);
        if earlier {
            self.rescheduled.notify_one();
        }
        match fetched {
            Ok((set, _)) => self.replace(Source::Url, set),
            // The keys already loaded stay: a failing or emptied endpoint
            // must not lock every caller out.
            Err(reason) => {
                tracing::warn!(%reason, ?why, "JWKS fetch failed; keeping the keys loaded");
            }
        }
    }

    /// Makes `set` the keys of `source` and drops from the cache every
    /// token verified by a key no longer in the merged set.
    ///
    /// Each cache entry remembers its key, rather than the whole cache being
    /// cleared on any change: WorkOS rotates by publishing the new key
    /// before retiring the old, and a clear on each step would re-verify
    /// every live token for nothing. Lock order: `sources`, then `keys`
    /// (released), then `cache`; [`Verifier::remember`] takes `cache` then
    /// `keys`, so a token verified with a key removed meanwhile is either
    /// purged here or never inserted.
    fn replace(&self, source: Source, set: KeySet) {
        let mut sources = lock(&self.sources);
        let slot = match source {
            Source::File => &mut sources.file,
            Source::Url => &mut sources.url,
        };
        if slot.fingerprints == set.fingerprints {
            tracing::debug!(?source, "JWKS unchanged");
            return;
        }
        tracing::info!(?source, keys = set.len(), "JWKS loaded");
        *slot = Arc::new(set);
        // The file is the operator's own word: it wins a kid clash.
        let merged = Arc::new(KeySet::merged(&sources.url, &sources.file));
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = merged.clone();
        lock(&self.cache).retain(|signer| merged.still_has(signer));
    }

    /// Fetches and parses the JWKS at `url`, reading at most
    /// [`MAX_JWKS_BYTES`] of its body, with the `max-age` its
    /// `Cache-Control` gives.
    async fn fetch(&self, url: &str) -> Result<(KeySet, Option<Duration>), String> {
        let http = self.http.as_ref().ok_or("no HTTP client for a JWKS URL")?;
        let mut resp = http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let cache_control: Vec<&str> = resp
            .headers()
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let max_age = max_age(&cache_control.join(","));
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksProblem::TooLarge.to_string());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksProblem::TooLarge.to_string());
            }
            body.extend_from_slice(&chunk);
        }
        let set = KeySet::parse(&body).map_err(|e| e.to_string())?;
        Ok((set, max_age))
    }

    /// Verifies the `Authorization` header value.
    ///
    /// # Errors
    /// [`AuthError`] for a missing, malformed, forged, expired or otherwise
    /// unacceptable token.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(hit) = self.cached(&digest, now) {
            return Ok(hit);
        }

        refuse_critical_extensions(token)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Rejected("malformed token header"))?;
        let (key, signer) = match header.alg {
            Algorithm::HS256 => {
                let secret = self
                    .hs256
                    .as_ref()
                    .ok_or(AuthError::Rejected("HS256 is not enabled"))?;
                if let Some(kid) = &header.kid
                    && self.keyset().by_kid.contains_key(kid)
                {
                    return Err(AuthError::Rejected("HS256 token names a JWKS key"));
                }
                (KeyRef::Secret(secret), Signer::Secret)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                if self.config.jwks_url.is_none() && self.config.jwks_file.is_none() {
                    return Err(AuthError::Rejected("no JWKS configured"));
                }
                let mut found = self.keyset().find(header.kid.as_deref(), header.alg);
                if found.is_none() && header.kid.is_some() {
                    self.refetch(Fetch::UnknownKid).await;
                    found = self.keyset().find(header.kid.as_deref(), header.alg);
                }
                let entry = found.ok_or(AuthError::Rejected("unknown signing key"))?;
                let signer = Signer::Jwk(entry.fingerprint);
                (KeyRef::Jwks(entry), signer)
            }
            _ => return Err(AuthError::Rejected("algorithm not accepted")),
        };

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key.key(), &validation)
            .map_err(|e| AuthError::Rejected(reject_reason(e.kind())))?;
        check_issuer(data.claims.iss.as_ref(), &self.config.issuers)?;
        let principal = principal_from(data.claims)?;
        let lifetime = principal.expires_at.saturating_sub(now);
        let longest = self.config.max_lifetime.saturating_add(self.config.leeway);
        if lifetime > longest.as_secs() {
            return Err(AuthError::Rejected("lifetime beyond the maximum"));
        }
        self.remember(digest, &principal, signer);
        Ok(principal)
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let cache = lock(&self.cache);
        // exp is checked again on every use, with the same leeway.
        cache.get(digest, now.saturating_sub(self.config.leeway.as_secs()))
    }

    fn remember(&self, digest: [u8; 32], principal: &Principal, signer: Signer) {
        let mut cache = lock(&self.cache);
        // Checked under the cache lock (see `replace`): a key removed while
        // this token was being verified must not be remembered.
        if self.keyset().still_has(&signer) {
            cache.insert(digest, principal.clone(), signer);
        }
    }
}

/// Locks `mutex`, even if a panic poisoned it: every value behind these
/// locks is whole between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When to fetch the JWKS URL next: after the configured interval, or the
/// answer's `max-age` when shorter, but never sooner than `floor` (the
/// unknown-`kid` rate limit) — a `max-age=0` must not become a busy loop.
fn refresh_after(interval: Duration, max_age: Option<Duration>, floor: Duration) -> Duration {
    max_age.map_or(interval, |m| m.min(interval)).max(floor)
}

/// The `max-age` of a `Cache-Control` value (its smallest, if repeated);
/// `no-cache` and `no-store` count as 0. Unparsable directives are ignored.
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found: Option<u64> = None;
    for directive in cache_control.split(',') {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let secs = if name.eq_ignore_ascii_case("max-age") {
            match value {
                Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                    // All digits: only too large to parse can fail.
                    v.parse().unwrap_or(u64::MAX)
                }
                _ => continue,
            }
        } else if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            0
        } else {
            continue;
        };
        found = Some(found.map_or(secs, |f| f.min(secs)));
    }
    found.map(Duration::from_secs)
}

/// SHA-256 over a key's `kid` (length-prefixed), algorithm and public
/// parameters as jsonwebtoken serializes them.
fn fingerprint(jwk: &Jwk, alg: Algorithm) -> Fingerprint {
    let mut hash = Sha256::new();
    match &jwk.common.key_id {
        Some(kid) => {
            hash.update([1]);
            hash.update((kid.len() as u64).to_be_bytes());
            hash.update(kid.as_bytes());
        }
        None => hash.update([0]),
    }
    hash.update(format!("{alg:?}").as_bytes());
    hash.update([0]);
    // Serializing a parsed key cannot fail; an empty rendering would only
    // make two keys under one kid and algorithm look alike.
    hash.update(serde_json::to_vec(&jwk.algorithm).unwrap_or_default());
    hash.finalize().into()
}

/// Verified tokens by SHA-256, bounded in entries and in bytes (a token
/// can carry claims of any size, so the count alone bounds nothing; only
/// the organization id is kept, and it is at most [`MAX_ORG_ID_LEN`]).
struct TokenCache {
    entries: HashMap<[u8; 32], Cached>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

struct Cached {
    principal: Principal,
    signer: Signer,
}

impl TokenCache {
    /// What one entry costs besides its strings: the key, the value and the
    /// hash table's control bytes and slack, rounded up.
    const ENTRY_OVERHEAD: usize =
        2 * (size_of::<[u8; 32]>() + size_of::<Cached>()) + size_of::<u64>();

    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn cost(principal: &Principal) -> usize {
        Self::ENTRY_OVERHEAD
            + principal
                .organization_id
                .as_ref()
                .map_or(0, String::capacity)
    }

    /// The principal of a token remembered and not expired at `now`.
    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let hit = &self.entries.get(digest)?.principal;
        (hit.expires_at >= now).then(|| hit.clone())
    }

    fn insert(&mut self, digest: [u8; 32], principal: Principal, signer: Signer) {
        let cost = Self::cost(&principal);
        if cost > self.max_bytes {
            return;
        }
        if self.entries.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            // Dropping everything is crude but bounded; a full cache means
            // an unusual number of distinct live tokens.
            self.entries = HashMap::new();
            self.bytes = 0;
        }
        if let Some(old) = self.entries.insert(digest, Cached { principal, signer }) {
            self.bytes -= Self::cost(&old.principal);
        }
        self.bytes += cost;
    }

    /// Keeps only the tokens whose signer `keep` accepts.
    fn retain(&mut self, keep: impl Fn(&Signer) -> bool) {
        self.entries.retain(|_, cached| keep(&cached.signer));
        self.bytes = self
            .entries
            .values()
            .map(|cached| Self::cost(&cached.principal))
            .sum();
    }
}

enum KeyRef<'a> {
    Secret(&'a DecodingKey),
    Jwks(Arc<KeyEntry>),
}

impl KeyRef<'_> {
    fn key(&self) -> &DecodingKey {
        match self {
            Self::Secret(k) => k,
            Self::Jwks(e) => &e.key,
        }
    }
}

fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or(AuthError::Rejected("not a bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Rejected("not a bearer token"));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Rejected("bearer token has an impossible length"));
    }
    Ok(token)
}

/// Refuses a token whose protected header has a `crit` parameter.
/// jsonwebtoken's `Header` drops unknown parameters, `crit` included, so the
/// header is decoded here; rollcall implements no extension, so any `crit`
/// (even an empty or malformed one, which RFC 7515 forbids) is refused.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    let malformed = AuthError::Rejected("malformed token header");
    let encoded = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed.clone())?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&json).map_err(|_| malformed)?;
    if header.contains_key("crit") {
        return Err(AuthError::Rejected("critical header extension"));
    }
    Ok(())
}

/// `iss`, when present, must be a single string (jsonwebtoken also accepts
/// an array and passes it when any element matches); with issuers
/// configured it is required and must be one of them.
fn check_issuer(iss: Option<&Value>, accepted: &[String]) -> Result<(), AuthError> {
    match iss {
        None if accepted.is_empty() => Ok(()),
        None => Err(AuthError::Rejected("missing iss")),
        Some(Value::String(iss)) if accepted.is_empty() || accepted.contains(iss) => Ok(()),
        Some(Value::String(_)) => Err(AuthError::Rejected("wrong issuer")),
        Some(_) => Err(AuthError::Rejected("malformed iss")),
    }
}

fn reject_reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not yet valid",
        K::InvalidAudience => "wrong audience",
        K::InvalidSignature => "bad signature",
        K::MissingRequiredClaim(_) => "missing a required claim",
        K::InvalidAlgorithm => "algorithm does not match the key",
        _ => "invalid token",
    }
}

fn principal_from(claims: Claims) -> Result<Principal, AuthError> {
    let org = |v: Option<Value>| -> Result<Option<String>, AuthError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_ORG_ID_LEN => Ok(Some(s)),
            Some(_) => Err(AuthError::Rejected("malformed organization claim")),
        }
    };
    let a = org(claims.org_id)?;
    let b = org(claims.organization_id)?;
    let organization_id = match (a, b) {
        (Some(a), Some(b)) if a != b => {
            return Err(AuthError::Rejected("conflicting organization claims"));
        }
        (a, b) => a.or(b),
    };
    let expires_at = claims
        .exp
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or(AuthError::Rejected("malformed exp"))?;
    Ok(Principal {
        organization_id,
        expires_at,
    })
}

/// Claims of a token minted by `rollcall token` (and the dev quickstart).
#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    org_id: &'a str,
    iat: u64,
    exp: u64,
}

/// Mints an HS256 token for `org` valid for `ttl`.
///
/// # Errors
/// Only if signing fails, which HS256 with a non-empty key does not.
pub fn mint_hs256(
    secret: &[u8],
    org: &str,
    subject: &str,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: subject,
        org_id: org,
        iat: now,
        exp: now + ttl.as_secs(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert!(bearer_token(Some("Basic abc")).is_err());
        assert!(bearer_token(Some("Bearer")).is_err());
        assert!(bearer_token(Some("Bearer    ")).is_err());
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
    }

    #[test]
    fn organization_comes_from_either_claim_and_conflicts_are_refused() {
        let claims = |a: Value, b: Value| Claims {
            exp: Some(Value::from(10u64)),
            iss: None,
            org_id: Some(a),
            organization_id: Some(b),
        };
        let p = principal_from(claims(Value::Null, "org_b".into())).unwrap();
        assert_eq!(p.organization_id.as_deref(), Some("org_b"));
        let p = principal_from(claims("org_a".into(), Value::Null)).unwrap();
        assert_eq!(p.organization_id.as_deref(), Some("org_a"));
        let p = principal_from(claims("".into(), Value::Null)).unwrap();
        assert_eq!(p.organization_id, None);
        assert!(principal_from(claims("org_a".into(), "org_b".into())).is_err());
        assert!(principal_from(claims(Value::from(5), Value::Null)).is_err());
        assert!(principal_from(claims("x".repeat(300).into(), Value::Null)).is_err());
    }

    #[test]
    fn the_token_cache_is_bounded_in_bytes_and_entries() {
        let principal = |n: usize| Principal {
            organization_id: Some(format!("{n:0>256}")),
            expires_at: 100,
        };
        let per_entry = TokenCache::cost(&principal(0));
        assert!(per_entry >= 256 + 32 + size_of::<Principal>());

        let mut cache = TokenCache::new(16 * 1024, 64 * 1024);
        for n in 0..10_000usize {
            let digest: [u8; 32] = Sha256::digest(n.to_be_bytes()).into();
            cache.insert(digest, principal(n), Signer::Secret);
            assert!(cache.bytes <= 64 * 1024, "{} bytes after {n}", cache.bytes);
            let held: usize = cache
                .entries
                .values()
                .map(|c| TokenCache::cost(&c.principal))
                .sum();
            assert_eq!(held, cache.bytes, "the count matches what is held");
        }
        assert!(cache.entries.len() <= 64 * 1024 / per_entry);

        let mut by_count = TokenCache::new(10, usize::MAX);
        for n in 0..25usize {
            by_count.insert([n as u8; 32], principal(n), Signer::Secret);
            assert!(by_count.entries.len() <= 10);
        }
        // The last one inserted is always there; an expired one never is.
        assert_eq!(by_count.get(&[24; 32], 100), Some(principal(24)));
        assert_eq!(by_count.get(&[24; 32], 101), None);
    }

    #[test]
    fn retain_drops_the_tokens_of_removed_keys_and_recounts_bytes() {
        let principal = Principal {
            organization_id: Some("org_a".into()),
            expires_at: 100,
        };
        let mut cache = TokenCache::new(100, usize::MAX);
        cache.insert([1; 32], principal.clone(), Signer::Jwk([1; 32]));
        cache.insert([2; 32], principal.clone(), Signer::Jwk([2; 32]));
        cache.insert([3; 32], principal.clone(), Signer::Secret);

        cache.retain(|s| *s != Signer::Jwk([1; 32]));

        assert_eq!(cache.get(&[1; 32], 0), None);
        assert_eq!(cache.get(&[2; 32], 0), Some(principal.clone()));
        assert_eq!(cache.get(&[3; 32], 0), Some(principal.clone()));
        assert_eq!(cache.bytes, 2 * TokenCache::cost(&principal));
    }

    #[test]
    fn fingerprints_tell_keys_apart_by_kid_and_material() {
        let jwks: Value =
            serde_json::from_str(include_str!("../tests/fixtures/jwks.json")).unwrap();
        let rsa = jwks["keys"][0].clone();
        let set = |keys: Vec<Value>| {
            KeySet::parse(&serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap())
                .unwrap()
        };
        let mut renamed = rsa.clone();
        renamed["kid"] = "test-rsa-2".into();
        let mut other_material = rsa.clone();
        other_material["e"] = "AQAC".into();

        let original = set(vec![rsa.clone()]);
        assert_eq!(original.fingerprints, set(vec![rsa.clone()]).fingerprints);
        assert_ne!(
            original.fingerprints,
            set(vec![renamed.clone()]).fingerprints
        );
        assert_ne!(
            original.fingerprints,
            set(vec![other_material]).fingerprints
        );

        // Merged: both kids, and the preferred set wins a kid clash.
        let merged = KeySet::merged(&original, &set(vec![renamed, jwks["keys"][1].clone()]));
        assert_eq!(merged.len(), 3);
        assert_eq!(merged.fingerprints.len(), 3);
        let ec = set(vec![jwks["keys"][1].clone()]);
        let clash = KeySet::merged(&ec, &ec);
        assert_eq!((clash.len(), clash.fingerprints.len()), (1, 1));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let secs = |v: &str| max_age(v).map(|d| d.as_secs());
        assert_eq!(secs("max-age=60"), Some(60));
        assert_eq!(secs("public, max-age=300, must-revalidate"), Some(300));
        assert_eq!(secs("Max-Age = 5"), Some(5));
        assert_eq!(secs(r#"max-age="7""#), Some(7));
        assert_eq!(secs("max-age=10, max-age=5"), Some(5));
        assert_eq!(secs("no-store"), Some(0));
        assert_eq!(secs("max-age=3600, no-cache"), Some(0));
        assert_eq!(secs("max-age=99999999999999999999999"), Some(u64::MAX));
        for ignored in [
            "",
            "public",
            "s-maxage=10",
            "max-age",
            "max-age=",
            "max-age=-1",
            "max-age=1e3",
        ] {
            assert_eq!(secs(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn the_refresh_follows_max_age_within_the_floor_and_the_interval() {
        let s = Duration::from_secs;
        let (interval, floor) = (s(300), s(30));
        assert_eq!(refresh_after(interval, None, floor), s(300));
        assert_eq!(refresh_after(interval, Some(s(60)), floor), s(60));
        assert_eq!(refresh_after(interval, Some(s(86_400)), floor), s(300));
        assert_eq!(refresh_after(interval, Some(s(0)), floor), s(30));
        assert_eq!(refresh_after(s(1), None, floor), s(30));
    }

    #[test]
    fn iss_must_be_one_string() {
        let workos = vec!["https://api.workos.com".to_owned()];
        let good = Value::from("https://api.workos.com");
        assert!(check_issuer(None, &[]).is_ok());
        assert!(check_issuer(Some(&good), &[]).is_ok());
        assert!(check_issuer(Some(&good), &workos).is_ok());
        assert!(check_issuer(None, &workos).is_err());
        assert!(check_issuer(Some(&Value::from("https://evil.test")), &workos).is_err());
        let array = serde_json::json!(["https://evil.test", "https://api.workos.com"]);
        assert!(check_issuer(Some(&array), &workos).is_err());
        assert!(check_issuer(Some(&array), &[]).is_err());
        assert!(check_issuer(Some(&Value::Null), &[]).is_err());
    }

    #[test]
    fn any_crit_header_is_refused() {
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
        };
        let token = |h: Value| format!("{}.e30.sig", b64(h));
        assert!(refuse_critical_extensions(&token(serde_json::json!({"alg": "RS256"}))).is_ok());
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!([]),
            Value::Null,
        ] {
            let t = token(serde_json::json!({"alg": "RS256", "crit": crit}));
            assert_eq!(
                refuse_critical_extensions(&t),
                Err(AuthError::Rejected("critical header extension"))
            );
        }
        assert!(refuse_critical_extensions("!!!.e30.sig").is_err());
    }
}
