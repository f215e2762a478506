//! The HTTP surface: one filter function per route, state injected with
//! [`with_state`], authentication after the path match, and one rejection
//! handler for everything no route matched.
//!
//! Handlers return `Result<Response, ApiError>`; [`respond`] turns the error
//! side into the JSON error shape, so a matched route never rejects.
//! Nothing here touches redb: reads go through [`crate::store::Snapshot`] in
//! `spawn_blocking`, writes through the ingestion committer.

pub mod cache;
pub mod chunks;
pub mod directories;
pub mod encoding;
pub mod errors;
pub mod health;
pub mod lists;
pub mod scim;
pub mod slots;
pub mod spec;
pub mod spool;
pub mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

pub use errors::ApiError;

use crate::auth::{AuthError, Verifier};
use crate::ingest::committer::Committer;
use crate::ingest::signature::WebhookVerifier;
use crate::store::Store;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub auth: Arc<Verifier>,
    pub committer: Committer,
    /// Present when a webhook secret is configured; otherwise the webhook
    /// route does not exist.
    pub webhooks: Option<WebhookVerifier>,
    /// Bounds on webhook bodies read before their signature is checked.
    pub intake: Arc<webhooks::BodyIntake>,
    /// Whole list bodies ready to send.
    pub bodies: Arc<cache::BodyCache>,
    /// Large list bodies rendered into files.
    pub body_files: Arc<spool::BodyFiles>,
    /// Memory for uncached answers in flight (KiB permits).
    pub render_budget: Arc<tokio::sync::Semaphore>,
    /// Where the WorkOS sync stands (for `/readyz`).
    pub sync: Arc<crate::ingest::sync::SyncStatus>,
    /// Lists with more records than this are streamed, not cached.
    pub stream_threshold: u64,
    /// Streams served at once, fairly between organizations.
    pub streams: Arc<slots::StreamSlots>,
    /// How slowly a client may read a stream.
    pub pace: spool::Pace,
    /// Bounds on SCIM request bodies (read once their token is checked).
    pub scim_intake: Arc<webhooks::BodyIntake>,
    /// SCIM lists and searches run at once (a filter no index answers
    /// reads the whole directory).
    pub scim_lists: Arc<tokio::sync::Semaphore>,
    /// Where recent SCIM pages ended (sequential paging is linear).
    pub scim_cursors: Arc<crate::scim::service::PageCursors>,
    /// The server's URL as clients reach it (SCIM `location`s), no
    /// trailing slash.
    pub public_url: Arc<str>,
}

/// The state as handlers hold it: one reference count per request.
pub type Shared = Arc<AppState>;

/// Injects the state into a filter chain.
pub fn with_state(state: Shared) -> impl Filter<Extract = (Shared,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Every route and the methods it answers; `{id}` matches one segment.
/// `api/openapi.json` documents exactly these (a test compares them).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET", "HEAD"]),
    ("/readyz", &["GET", "HEAD"]),
    ("/api/spec.json", &["GET", "HEAD"]),
    ("/api/directories", &["GET", "HEAD"]),
    ("/api/directories/{id}", &["GET", "HEAD"]),
    ("/api/directories/{id}/users", &["GET", "HEAD"]),
    ("/api/directories/{id}/groups", &["GET", "HEAD"]),
    ("/webhooks/workos", &["POST"]),
];

/// The methods `path` answers, if it is a route (the webhook route only
/// when webhooks are configured).
pub fn allowed_methods(path: &str, webhooks: bool) -> Option<&'static [&'static str]> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.iter().find_map(|(pattern, methods)| {
        let pattern: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
        let matches = pattern.len() == segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(p, s)| if *p == "{id}" { !s.is_empty() } else { p == s });
        let available = webhooks || !methods.contains(&"POST");
        (matches && available).then_some(*methods)
    })
}

/// A known path asked with a method it does not answer: 405 with `Allow`.
/// Anything else is left to the other rejections (404, 400 …).
fn method_not_allowed(webhooks: bool) -> BoxedFilter<(Response,)> {
    warp::path::full()
        .and(warp::method())
        .and_then(
            move |path: warp::path::FullPath, method: warp::http::Method| async move {
                match allowed_methods(path.as_str(), webhooks) {
                    Some(methods) if !methods.contains(&method.as_str()) => {
                        let mut resp = warp::Reply::into_response(ApiError::MethodNotAllowed);
                        if let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) {
                            resp.headers_mut().insert(header::ALLOW, allow);
                        }
                        Ok(resp)
                    }
                    _ => Err(warp::reject::not_found()),
                }
            },
        )
        .boxed()
}

/// Every route, with the rejection handler last.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let webhooks = state.webhooks.is_some();
    let state: Shared = Arc::new(state);
    let api = warp::path("api").and(
        directories::routes(state.clone())
            .or(lists::routes(state.clone()))
            .unify()
            .or(spec::routes())
            .unify(),
    );
    health::routes(state.clone())
        .or(api)
        .unify()
        .or(webhooks::routes(state.clone()))
        .unify()
        .or(scim::routes(state))
        .unify()
        .or(method_not_allowed(webhooks))
        .unify()
        .recover(errors::handle_rejection)
        .unify()
        .boxed()
}

/// GET, and HEAD answered like GET (hyper drops the body).
pub fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// The `Authorization` header, if any; one that is not visible ASCII counts
/// as absent (and so is a 401, not a 400).
pub fn authorization() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::filters::header::optional::<String>("authorization")
        .or(warp::any().map(|| None))
        .unify()
}

/// Verifies the caller and returns the organization it is scoped to.
///
/// # Errors
/// 401 for a missing or invalid token, 403 for a valid one without organization.
pub async fn organization(state: &AppState, auth: Option<String>) -> Result<String, ApiError> {
    let principal = state.auth.verify(auth.as_deref()).await.map_err(|e| {
        REFUSALS.log(&e as &dyn std::fmt::Display);
        match e {
            AuthError::Missing => ApiError::Unauthorized,
            AuthError::Rejected(_) => ApiError::InvalidToken,
        }
    })?;
    principal
        .organization_id
        .ok_or(ApiError::OrgContextRequired)
}

/// Refused tokens are logged with their reason (never the token), at most
/// this many lines a second: a flood of bad tokens must not flood the log.
const REFUSALS_LOGGED_PER_SEC: u64 = 10;

pub(crate) static REFUSALS: RefusalLog = RefusalLog::new();

/// A per-second budget of log lines for refused tokens, and a count of
/// those left out (reported with the next line that is written).
pub(crate) struct RefusalLog {
    /// `second << 32 | lines written in it`.
    window: AtomicU64,
    suppressed: AtomicU64,
}

impl RefusalLog {
    const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    pub(crate) fn log(&self, error: &dyn std::fmt::Display) {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
        let taken = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                if w >> 32 != second {
                    Some(second << 32 | 1)
                } else if w & 0xffff_ffff < REFUSALS_LOGGED_PER_SEC {
                    Some(w + 1)
                } else {
                    None
                }
            });
        if taken.is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::info!(reason = %error, suppressed_before = suppressed, "request refused: 401");
    }
}

/// Runs a handler and renders its error, so matched routes never reject.
pub async fn respond(
    handler: impl Future<Output = Result<Response, ApiError>>,
) -> Result<Response, Infallible> {
    Ok(handler.await.unwrap_or_else(warp::Reply::into_response))
}

/// A 200 with a JSON body that must not be cached by intermediaries.
pub fn json_response(body: impl Into<Bytes>) -> Response {
    let mut resp = Response::new(body.into().into());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Runs storage work off the async threads.
///
/// # Errors
/// Whatever `f` returns; a panicked task is a 500.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}
