//! Bearer-token verification: WorkOS AuthKit access tokens (RS256/ES256
//! against a JWKS from a file or a URL) and, when a secret is configured,
//! HS256 tokens for development and tests.
//!
//! This module decides who is calling and for which organization; it never
//! decides what they may see (that is the API's organization scoping). It
//! never logs a token.
//!
//! Rules (CONTRACT.md section 3):
//! - only `RS256`, `ES256` (JWKS) and `HS256` (secret) are accepted; `none`
//!   and every other algorithm are refused;
//! - an `HS256` token whose `kid` names a JWKS key is refused (key confusion);
//! - a `crit` header parameter is refused: rollcall understands no JWS
//!   extension (RFC 7515 §4.1.11);
//! - `exp` is required and at most the maximum lifetime away; `exp`/`nbf`
//!   are checked with a small leeway; `aud`
//!   when configured; `iss`, when present, must be a string, and one of the
//!   configured issuers when some are;
//! - the organization is `org_id` or `organization_id`; both present and
//!   different is a forged-looking token and refused.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

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
    /// Least time between two JWKS fetches caused by an unknown `kid`.
    pub jwks_refetch_interval: Duration,
    /// Longest accepted lifetime: a token whose `exp` is further than this
    /// (plus the leeway) from now is refused, so a leaked token with a
    /// far-future `exp` does not work forever (nor sit in the cache).
    pub max_lifetime: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwks_url: None,
            jwks_file: None,
            hs256_secret: None,
            issuers: Vec::new(),
            audience: None,
            leeway: Duration::ZERO,
            jwks_refetch_interval: Duration::ZERO,
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
/// goes to the debug log only.
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

struct KeyEntry {
    key: DecodingKey,
    alg: Algorithm,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<KeyEntry>>,
    /// Keys published without a `kid`.
    anonymous: Vec<Arc<KeyEntry>>,
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
            let entry = Arc::new(KeyEntry { key, alg });
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
        Ok(set)
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
pub struct Verifier {
    config: AuthConfig,
    keys: RwLock<Arc<KeySet>>,
    hs256: Option<DecodingKey>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
    cache: Mutex<TokenCache>,
}

impl Verifier {
    /// Loads the configured keys. A JWKS URL that cannot be reached now is
    /// not fatal (it is fetched again when a token needs it); a JWKS file
    /// that cannot be read, is too large, invalid or without a usable key
    /// is.
    ///
    /// # Errors
    /// [`KeyError::File`] naming the file and what is wrong with it.
    pub async fn new(config: AuthConfig) -> Result<Self, KeyError> {
        let keys = match &config.jwks_file {
            Some(path) => KeySet::read(path).map_err(|problem| KeyError::File {
                path: path.clone(),
                problem,
            })?,
            None => KeySet::default(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| KeyError::Client(e.to_string()))?;
        let verifier = Self {
            hs256: config.hs256_secret.as_deref().map(DecodingKey::from_secret),
            config,
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: tokio::sync::Mutex::new(None),
            http,
            cache: Mutex::new(TokenCache::new(CACHE_ENTRIES, CACHE_BYTES)),
        };
        if verifier.config.jwks_url.is_some() {
            verifier.refetch(true).await;
        }
        Ok(verifier)
    }

    fn keyset(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Fetches the JWKS URL again unless it was fetched within the refetch
    /// interval (`force` ignores the interval). Concurrent callers share one
    /// fetch.
    async fn refetch(&self, force: bool) {
        let Some(url) = &self.config.jwks_url else {
            return;
        };
        let mut last = self.last_fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.config.jwks_refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch(url).await {
            Ok(set) => {
                tracing::info!(keys = set.len(), "JWKS loaded");
                match self.keys.write() {
                    Ok(mut k) => *k = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
            }
            // The keys already loaded stay: a failing or emptied endpoint
            // must not lock every caller out.
            Err(reason) => tracing::warn!(%reason, "JWKS fetch failed; keeping the keys loaded"),
        }
    }

    /// Fetches and parses the JWKS at `url`, reading at most
    /// [`MAX_JWKS_BYTES`] of its body.
    async fn fetch(&self, url: &str) -> Result<KeySet, String> {
        let mut resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
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
        KeySet::parse(&body).map_err(|e| e.to_string())
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
        let key = match header.alg {
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
                KeyRef::Secret(secret)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                if self.config.jwks_url.is_none() && self.config.jwks_file.is_none() {
                    return Err(AuthError::Rejected("no JWKS configured"));
                }
                let mut found = self.keyset().find(header.kid.as_deref(), header.alg);
                if found.is_none() && header.kid.is_some() {
                    self.refetch(false).await;
                    found = self.keyset().find(header.kid.as_deref(), header.alg);
                }
                KeyRef::Jwks(found.ok_or(AuthError::Rejected("unknown signing key"))?)
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
        if lifetime > (self.config.max_lifetime + self.config.leeway).as_secs() {
            return Err(AuthError::Rejected("lifetime beyond the maximum"));
        }
        self.remember(digest, &principal);
        Ok(principal)
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let cache = self.cache.lock().ok()?;
        // exp is checked again on every use, with the same leeway.
        cache.get(digest, now.saturating_sub(self.config.leeway.as_secs()))
    }

    fn remember(&self, digest: [u8; 32], principal: &Principal) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(digest, principal.clone());
        }
    }
}

/// Verified tokens by SHA-256, bounded in entries and in bytes (a token
/// can carry claims of any size, so the count alone bounds nothing; only
/// the organization id is kept, and it is at most [`MAX_ORG_ID_LEN`]).
struct TokenCache {
    entries: HashMap<[u8; 32], Principal>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl TokenCache {
    /// What one entry costs besides its strings: the key, the value and the
    /// hash table's control bytes and slack, rounded up.
    const ENTRY_OVERHEAD: usize =
        2 * (size_of::<[u8; 32]>() + size_of::<Principal>()) + size_of::<u64>();

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
        let hit = self.entries.get(digest)?;
        (hit.expires_at >= now).then(|| hit.clone())
    }

    fn insert(&mut self, digest: [u8; 32], principal: Principal) {
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
        if let Some(old) = self.entries.insert(digest, principal) {
            self.bytes -= Self::cost(&old);
        }
        self.bytes += cost;
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
            cache.insert(digest, principal(n));
            assert!(cache.bytes <= 64 * 1024, "{} bytes after {n}", cache.bytes);
            let held: usize = cache.entries.values().map(TokenCache::cost).sum();
            assert_eq!(held, cache.bytes, "the count matches what is held");
        }
        assert!(cache.entries.len() <= 64 * 1024 / per_entry);

        let mut by_count = TokenCache::new(10, usize::MAX);
        for n in 0..25usize {
            by_count.insert([n as u8; 32], principal(n));
            assert!(by_count.entries.len() <= 10);
        }
        // The last one inserted is always there; an expired one never is.
        assert_eq!(by_count.get(&[24; 32], 100), Some(principal(24)));
        assert_eq!(by_count.get(&[24; 32], 101), None);
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
