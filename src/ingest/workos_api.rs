//! A small client for the WorkOS REST API, shared by backfill, the events
//! follower and reconcile: the bearer key, list pagination through
//! `list_metadata.after`, WorkOS's published rate limits, and retries.
//!
//! - **Limits**: at most `requests_per_minute` requests overall (WorkOS:
//!   6,000 per minute per key) and `directory_users_per_second` requests to
//!   `/directory_users` per directory (WorkOS: 4 per second): never more in
//!   any window of the period, counted as requests leave, with the window
//!   widened by 5% and at least [`ARRIVAL_JITTER`]; 0
//!   turns a limit off (for a fake or a proxy).
//! - **429** waits its `Retry-After` (capped at a minute, like the official
//!   SDKs) and asks again, without limit: being told to wait is not failure.
//! - **5xx and network errors** retry with capped exponential backoff, a
//!   bounded number of times, then fail the call: a listing that fails is
//!   reported so, never taken as complete.
//!
//! It speaks JSON in and raw JSON out: parsing WorkOS objects is
//! [`super::workos`]'s job. It never logs the key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

/// Objects asked for per page: the API's maximum.
pub const PAGE_SIZE: usize = 100;
/// The longest `Retry-After` honoured (the official SDKs' cap).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Attempts for one request failing with 5xx or a network error.
const ATTEMPTS: u32 = 6;

/// Where and how to reach the WorkOS API.
#[derive(Clone)]
pub struct ApiSettings {
    pub base_url: String,
    pub api_key: String,
    /// 0: unlimited.
    pub requests_per_minute: u32,
    /// Requests per second to `/directory_users` per directory; 0: unlimited.
    pub directory_users_per_second: u32,
    /// Longest wait between retries of a failing request.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("base_url", &self.base_url)
            .field("requests_per_minute", &self.requests_per_minute)
            .field(
                "directory_users_per_second",
                &self.directory_users_per_second,
            )
            .finish_non_exhaustive()
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("WorkOS answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("WorkOS could not be reached: {0}")]
    Network(String),
    #[error("WorkOS answered something that is not a list: {0}")]
    Shape(String),
    #[error("stopping")]
    Stopped,
}

impl ApiError {
    /// The HTTP status, when WorkOS answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One page of a list.
pub struct Page {
    pub data: Vec<Box<RawValue>>,
    /// The cursor of the next page; `None` on the last one.
    pub after: Option<String>,
}

#[derive(Deserialize)]
struct RawList {
    data: Vec<Box<RawValue>>,
    list_metadata: Option<ListMetadata>,
}

#[derive(Deserialize)]
struct ListMetadata {
    after: Option<String>,
}

/// How much closer together two requests may arrive than they left (a
/// busy machine, a congested link): a one-second window is kept this much
/// wider. 5% of a second (50 ms) was seen exceeded on a loaded 2-core
/// machine.
const ARRIVAL_JITTER: Duration = Duration::from_millis(150);

/// At most `count` requests in any window of `period`, counted when each
/// request leaves (after its wait, not when it was planned: a task woken
/// late must not squeeze the next one into the same window).
struct Pace {
    count: usize,
    period: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl Pace {
    /// `count` requests per `period`, the window widened by 5% and at
    /// least [`ARRIVAL_JITTER`]: requests arrive with some jitter, and two
    /// arriving closer than they left must not make a window count one too
    /// many.
    fn per(count: u32, period: Duration) -> Option<Self> {
        (count > 0).then(|| Self {
            count: count as usize,
            period: period.mul_f64(1.05).max(period + ARRIVAL_JITTER),
            sent: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until a request may leave at `now` (zero: it may).
    fn wait_at(sent: &VecDeque<Instant>, count: usize, period: Duration, now: Instant) -> Duration {
        match sent.len().checked_sub(count) {
            Some(i) => (sent[i] + period).saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }
}

/// Takes a slot in every pace at once, or says how long to wait for all of
/// them to have one (a slot taken in one while waiting for another would
/// count a request that has not left).
fn take_all(paces: &[&Pace], now: Instant) -> Duration {
    let mut locks: Vec<_> = paces.iter().map(|p| (p, p.lock())).collect();
    let wait = locks
        .iter()
        .map(|(p, sent)| Pace::wait_at(sent, p.count, p.period, now))
        .max()
        .unwrap_or_default();
    if wait.is_zero() {
        for (p, sent) in &mut locks {
            sent.push_back(now);
            while sent.len() > p.count {
                sent.pop_front();
            }
        }
    }
    wait
}

/// What the client did, for the metrics and the status page.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    pub ok: u64,
    pub rate_limited: u64,
    pub failed: u64,
    pub not_found: u64,
}

/// A WorkOS API client; cheap to clone.
#[derive(Clone)]
pub struct WorkosApi {
    http: reqwest::Client,
    settings: Arc<ApiSettings>,
    overall: Arc<Option<Pace>>,
    per_directory: Arc<Mutex<HashMap<String, Arc<Option<Pace>>>>>,
    calls: Arc<Mutex<Calls>>,
    stop: watch::Receiver<bool>,
}

impl WorkosApi {
    /// A client; `stop` ends waits and retries early.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(settings: ApiSettings, stop: watch::Receiver<bool>) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ApiError::Network(e.to_string()))?;
        Ok(Self {
            http,
            overall: Arc::new(Pace::per(
                settings.requests_per_minute,
                Duration::from_secs(60),
            )),
            settings: Arc::new(ApiSettings {
                base_url: settings.base_url.trim_end_matches('/').to_owned(),
                ..settings
            }),
            per_directory: Arc::new(Mutex::new(HashMap::new())),
            calls: Arc::new(Mutex::new(Calls::default())),
            stop,
        })
    }

    /// What the client has done so far.
    pub fn calls(&self) -> Calls {
        *self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut Calls)) {
        f(&mut self.calls.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Sleeps `d`, or returns `Err(Stopped)` when asked to stop.
    async fn pause(&self, d: Duration) -> Result<(), ApiError> {
        if d.is_zero() {
            return Ok(());
        }
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return Err(ApiError::Stopped);
        }
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            _ = stop.changed() => Err(ApiError::Stopped),
        }
    }

    /// Waits for this request's slot under the limits that apply to it.
    async fn wait_turn(&self, directory: Option<&str>) -> Result<(), ApiError> {
        let per_directory = match directory {
            Some(dir) if self.settings.directory_users_per_second > 0 => {
                let mut map = self.per_directory.lock().unwrap_or_else(|p| p.into_inner());
                let rate = self.settings.directory_users_per_second;
                map.entry(dir.to_owned())
                    .or_insert_with(|| Arc::new(Pace::per(rate, Duration::from_secs(1))))
                    .clone()
            }
            _ => Arc::new(None),
        };
        let paces: Vec<&Pace> = [per_directory.as_ref(), self.overall.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        loop {
            let wait = take_all(&paces, Instant::now());
            if wait.is_zero() {
                return Ok(());
            }
            self.pause(wait).await?;
        }
    }

    /// GETs `path` with `query`, under the limits (`directory`: the
    /// directory whose `/directory_users` limit applies), retrying as the
    /// module says. `Ok(None)` for a 404.
    ///
    /// # Errors
    /// A non-retryable status, or retries exhausted, or stopping.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        directory: Option<&str>,
    ) -> Result<Option<bytes::Bytes>, ApiError> {
        let url = format!("{}{path}", self.settings.base_url);
        let mut backoff = Duration::from_secs(1).min(self.settings.max_backoff);
        let mut failures = 0;
        loop {
            self.wait_turn(directory).await?;
            let sent = self
                .http
                .get(&url)
                .bearer_auth(&self.settings.api_key)
                .query(query)
                .send()
                .await;
            let failure = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    crate::metrics::METRICS.workos_call(Some(status.as_u16()));
                    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                        self.count(|c| c.rate_limited += 1);
                        let wait = retry_after(resp.headers()).unwrap_or(backoff);
                        tracing::info!(
                            path,
                            wait_secs = wait.as_secs_f64(),
                            "WorkOS rate limit; waiting as told"
                        );
                        self.pause(wait).await?;
                        continue;
                    }
                    if status == reqwest::StatusCode::NOT_FOUND {
                        self.count(|c| c.not_found += 1);
                        return Ok(None);
                    }
                    if status.is_success() {
                        match resp.bytes().await {
                            Ok(body) => {
                                self.count(|c| c.ok += 1);
                                return Ok(Some(body));
                            }
                            Err(e) => ApiError::Network(e.without_url().to_string()),
                        }
                    } else {
                        let body = resp.text().await.unwrap_or_default();
                        let error = ApiError::Status {
                            status: status.as_u16(),
                            body: body.chars().take(300).collect(),
                        };
                        if !status.is_server_error() {
                            self.count(|c| c.failed += 1);
                            return Err(error);
                        }
                        error
                    }
                }
                Err(e) => {
                    crate::metrics::METRICS.workos_call(None);
                    ApiError::Network(e.without_url().to_string())
                }
            };
            self.count(|c| c.failed += 1);
            failures += 1;
            if failures >= ATTEMPTS {
                return Err(failure);
            }
            tracing::warn!(path, error = %failure, wait_secs = backoff.as_secs_f64(), "WorkOS request failed; retrying");
            self.pause(backoff).await?;
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }

    /// One page of the list at `path` (`limit` 100, oldest first), after
    /// `after`.
    ///
    /// # Errors
    /// As [`WorkosApi::get`]; a 404 or a body that is not a list is an error here.
    pub async fn page(
        &self,
        path: &str,
        filters: &[(&str, String)],
        after: Option<&str>,
        directory: Option<&str>,
    ) -> Result<Page, ApiError> {
        let mut query: Vec<(&str, String)> = filters.to_vec();
        query.push(("limit", PAGE_SIZE.to_string()));
        query.push(("order", "asc".to_owned()));
        if let Some(a) = after {
            query.push(("after", a.to_owned()));
        }
        let body = self
            .get(path, &query, directory)
            .await?
            .ok_or(ApiError::Status {
                status: 404,
                body: format!("{path} not found"),
            })?;
        let list: RawList =
            serde_json::from_slice(&body).map_err(|e| ApiError::Shape(e.to_string()))?;
        let after = list
            .list_metadata
            .and_then(|m| m.after)
            .filter(|a| !a.is_empty() && !list.data.is_empty());
        Ok(Page {
            data: list.data,
            after,
        })
    }
}

/// `Retry-After` as seconds (WorkOS sends seconds; an HTTP date is read
/// too), capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        _ => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            let secs = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
            Duration::from_millis(u64::try_from(secs).unwrap_or(0))
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", "0.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert("retry-after", "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
    }

    #[test]
    fn a_pace_never_lets_more_than_its_count_leave_in_a_window() {
        let pace = Pace::per(4, Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        for i in 0..4 {
            let at = start + Duration::from_millis(i * 10);
            assert_eq!(take_all(&[&pace], at), Duration::ZERO, "request {i} fits");
        }
        // The fifth waits for the first to leave the window, kept 150 ms
        // wider.
        let wait = take_all(&[&pace], start + Duration::from_millis(40));
        assert_eq!(wait, Duration::from_millis(1150 - 40));
        // Requests that left late count from when they left: four at 1.3 s,
        // and the next waits a whole window from there.
        let late = start + Duration::from_millis(1300);
        for _ in 0..4 {
            assert_eq!(take_all(&[&pace], late), Duration::ZERO);
        }
        assert_eq!(take_all(&[&pace], late), Duration::from_millis(1150));
        let minute = Pace::per(6000, Duration::from_secs(60)).unwrap();
        assert_eq!(minute.period, Duration::from_secs(63), "5% of a minute");
        assert!(
            Pace::per(0, Duration::from_secs(1)).is_none(),
            "0 is unlimited"
        );
    }

    #[test]
    fn a_slot_is_taken_in_every_pace_or_in_none() {
        let directory = Pace::per(1, Duration::from_secs(1)).unwrap();
        let overall = Pace::per(10, Duration::from_secs(60)).unwrap();
        let now = Instant::now();
        assert_eq!(take_all(&[&directory, &overall], now), Duration::ZERO);
        // The directory is full: nothing is counted overall while waiting.
        assert!(take_all(&[&directory, &overall], now) > Duration::ZERO);
        assert_eq!(overall.lock().len(), 1);
    }
}
