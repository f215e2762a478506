//! Prometheus metrics: one process-wide set of atomic counters, written on
//! the hot path with relaxed increments (no lock, no allocation, no
//! formatting), and encoded only when `/metrics` is scraped, on its own
//! listener (`--metrics-listen`), never the API's.
//!
//! The encoding is `prometheus-client`'s (the Prometheus text format 0.0.4,
//! through one [`Collector`]); the values are ours, so that a request costs
//! a handful of `fetch_add`s: the crate's own histogram takes a mutex per
//! observation, its label families a lock and a hash per lookup.
//!
//! No label carries tenant data: routes are the fixed templates of
//! [`crate::api::ROUTES`] (anything else is `other`), statuses, methods,
//! outcomes and event types come from fixed sets. Gauges that describe the
//! server's state (database size, totals, cache bytes, streams, sync) are
//! read at scrape time from their owners, never kept twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::cache::BodyCache;
use crate::api::slots::StreamSlots;
use crate::ingest::apply::Outcome;
use crate::ingest::sync::SyncStatus;
use crate::ingest::workos::APPLIED_EVENT_TYPES;
use crate::store::Store;

/// The route templates requests are counted by; `Other` is anything no
/// route matches (its path is never recorded).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Spec,
    Directories,
    Directory,
    Users,
    Groups,
    Webhooks,
    ScimUsers,
    ScimGroups,
    Scim,
    Other,
}

const ROUTES: usize = 12;
const ROUTE_NAMES: [&str; ROUTES] = [
    "/healthz",
    "/readyz",
    "/api/spec.json",
    "/api/directories",
    "/api/directories/{id}",
    "/api/directories/{id}/users",
    "/api/directories/{id}/groups",
    "/webhooks/workos",
    "/scim/v2/{id}/Users",
    "/scim/v2/{id}/Groups",
    "/scim/v2/{id}",
    "other",
];

impl Route {
    /// The template `path` (without its query) matches, like the routes do.
    pub fn classify(path: &str) -> Self {
        match path {
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/api/spec.json" => Self::Spec,
            "/api/directories" => Self::Directories,
            "/webhooks/workos" => Self::Webhooks,
            _ if path.starts_with("/scim/v2/") => Self::scim(&path["/scim/v2/".len()..]),
            _ => {
                let Some(rest) = path.strip_prefix("/api/directories/") else {
                    return Self::Other;
                };
                let (id, tail) = match rest.split_once('/') {
                    Some((id, tail)) => (id, Some(tail)),
                    None => (rest, None),
                };
                match (id.is_empty(), tail) {
                    (true, _) => Self::Other,
                    (false, None) => Self::Directory,
                    (false, Some("users")) => Self::Users,
                    (false, Some("groups")) => Self::Groups,
                    (false, Some(_)) => Self::Other,
                }
            }
        }
    }

    /// A SCIM path after `/scim/v2/`: a directory's Users (with `/{id}`
    /// and `/.search`), its Groups, or anything else of its (discovery).
    fn scim(rest: &str) -> Self {
        let mut parts = rest.split('/');
        match (parts.next(), parts.next()) {
            (Some(""), _) => Self::Other,
            (_, Some(r)) if r.eq_ignore_ascii_case("Users") => Self::ScimUsers,
            (_, Some(r)) if r.eq_ignore_ascii_case("Groups") => Self::ScimGroups,
            _ => Self::Scim,
        }
    }

    /// The template, as labelled and logged.
    pub fn name(self) -> &'static str {
        ROUTE_NAMES[self as usize]
    }
}

const METHODS: usize = 4;
const METHOD_NAMES: [&str; METHODS] = ["GET", "HEAD", "POST", "other"];

fn method_index(method: &hyper::Method) -> usize {
    match *method {
        hyper::Method::GET => 0,
        hyper::Method::HEAD => 1,
        hyper::Method::POST => 2,
        _ => 3,
    }
}

/// Statuses 100..=599, one slot each.
const STATUSES: usize = 500;

/// The statuses rollcall answers, counted per shard; any other is counted
/// in one shared table (rare, so uncontended).
const CODES: [u16; 24] = [
    200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 406, 408, 409, 412, 413, 415,
    422, 429, 499, 500, 503,
];

fn code_index(status: u16) -> Option<usize> {
    CODES.iter().position(|c| *c == status)
}

/// Shards of the request counters: each event loop counts into its own
/// (cache-line aligned), so two loops never contend for a counter; a
/// scrape adds them up. Loops beyond this share shards.
pub const SHARDS: usize = 16;

/// One event loop's request counters.
#[repr(align(128))]
struct Shard {
    requests: [[[AtomicU64; CODES.len()]; METHODS]; ROUTES],
    durations: [Histogram<14>; ROUTES],
    bytes_sent: [AtomicU64; ROUTES],
    in_flight: AtomicI64,
}

impl Shard {
    const fn new() -> Self {
        Self {
            requests: [const { [const { [const { AtomicU64::new(0) }; CODES.len()] }; METHODS] };
                ROUTES],
            durations: [const { Histogram::new() }; ROUTES],
            bytes_sent: [const { AtomicU64::new(0) }; ROUTES],
            in_flight: AtomicI64::new(0),
        }
    }
}

fn status_index(status: u16) -> usize {
    usize::from(status.clamp(100, 599) - 100)
}

/// Upper bounds of the request duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the commit latency buckets, in seconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds of the group-commit batch size buckets, in jobs.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram of atomics: per-bucket counts (the last is +Inf) and a sum
/// in millionths.
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, bounds: &[f64; N], value: f64) {
        match bounds.iter().position(|b| value <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        // Saturating float-to-int conversion; negative values count as 0.
        self.sum_micros
            .fetch_add((value * 1e6).round() as u64, Relaxed);
    }

    /// Adds this histogram's counts into `totals` (buckets, +Inf, sum).
    fn add_to(&self, totals: &mut HistogramTotals<N>) {
        for (t, c) in totals.buckets.iter_mut().zip(&self.buckets) {
            *t += c.load(Relaxed);
        }
        totals.overflow += self.overflow.load(Relaxed);
        totals.sum_micros += self.sum_micros.load(Relaxed);
    }

    fn encode(
        &self,
        bounds: &[f64; N],
        metric: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let mut totals = HistogramTotals::default();
        self.add_to(&mut totals);
        totals.encode(bounds, metric)
    }
}

/// A histogram's counts added up (over the shards).
struct HistogramTotals<const N: usize> {
    buckets: [u64; N],
    overflow: u64,
    sum_micros: u64,
}

impl<const N: usize> Default for HistogramTotals<N> {
    fn default() -> Self {
        Self {
            buckets: [0; N],
            overflow: 0,
            sum_micros: 0,
        }
    }
}

impl<const N: usize> HistogramTotals<N> {
    fn encode(
        &self,
        bounds: &[f64; N],
        metric: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(self.buckets).collect();
        buckets.push((f64::INFINITY, self.overflow));
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.sum_micros as f64 / 1e6;
        metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// How a webhook delivery ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Accepted(Outcome),
    Rejected(Rejection),
}

/// Why a webhook delivery was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    Signature,
    TooLarge,
    Timeout,
    Invalid,
    Busy,
    Unavailable,
    Error,
}

const OUTCOMES: usize = 8;
const OUTCOME_NAMES: [&str; OUTCOMES] = [
    "applied",
    "unchanged",
    "duplicate",
    "stale",
    "held",
    "no_directory",
    "ignored",
    "conflict",
];

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Applied => 0,
        Outcome::Unchanged => 1,
        Outcome::Duplicate => 2,
        Outcome::Stale => 3,
        Outcome::Parked => 4,
        Outcome::NoDirectory => 5,
        Outcome::Ignored => 6,
        Outcome::Conflict => 7,
    }
}

/// The name an outcome is labelled and answered with.
pub fn outcome_name(o: Outcome) -> &'static str {
    OUTCOME_NAMES[outcome_index(o)]
}

const REJECTIONS: usize = 7;
const REJECTION_NAMES: [&str; REJECTIONS] = [
    "signature",
    "too_large",
    "timeout",
    "invalid",
    "busy",
    "unavailable",
    "error",
];

const EVENT_TYPES: usize = APPLIED_EVENT_TYPES.len();

/// Every counter of the process.
pub struct Metrics {
    shards: [Shard; SHARDS],
    /// Requests answered with a status not in [`CODES`].
    rare_requests: [[[AtomicU64; STATUSES]; METHODS]; ROUTES],
    webhooks: [AtomicU64; OUTCOMES],
    webhooks_rejected: [AtomicU64; REJECTIONS],
    events_applied: [AtomicU64; EVENT_TYPES],
    commits: Histogram<12>,
    commit_batches: Histogram<10>,
    commit_failures: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    sendfile_bytes: AtomicU64,
    workos_calls: [AtomicU64; STATUSES],
    workos_network_errors: AtomicU64,
}

/// The one set of counters.
pub static METRICS: Metrics = Metrics::new();

impl Metrics {
    const fn new() -> Self {
        Self {
            shards: [const { Shard::new() }; SHARDS],
            rare_requests: [const { [const { [const { AtomicU64::new(0) }; STATUSES] }; METHODS] };
                ROUTES],
            webhooks: [const { AtomicU64::new(0) }; OUTCOMES],
            webhooks_rejected: [const { AtomicU64::new(0) }; REJECTIONS],
            events_applied: [const { AtomicU64::new(0) }; EVENT_TYPES],
            commits: Histogram::new(),
            commit_batches: Histogram::new(),
            commit_failures: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            sendfile_bytes: AtomicU64::new(0),
            workos_calls: [const { AtomicU64::new(0) }; STATUSES],
            workos_network_errors: AtomicU64::new(0),
        }
    }

    /// A request has arrived on event loop `shard`.
    pub fn request_started(&self, shard: usize) {
        self.shards[shard % SHARDS].in_flight.fetch_add(1, Relaxed);
    }

    /// A request of event loop `shard` has been answered (its body sent or
    /// dropped).
    pub fn request_done(
        &self,
        shard: usize,
        route: Route,
        method: &hyper::Method,
        status: u16,
        bytes: u64,
        took: Duration,
    ) {
        let (r, m) = (route as usize, method_index(method));
        let shard = &self.shards[shard % SHARDS];
        match code_index(status) {
            Some(c) => shard.requests[r][m][c].fetch_add(1, Relaxed),
            None => self.rare_requests[r][m][status_index(status)].fetch_add(1, Relaxed),
        };
        shard.durations[r].observe(&DURATION_BUCKETS, took.as_secs_f64());
        shard.bytes_sent[r].fetch_add(bytes, Relaxed);
        shard.in_flight.fetch_sub(1, Relaxed);
    }

    /// A webhook delivery has been answered.
    pub fn webhook(&self, delivery: Delivery) {
        match delivery {
            Delivery::Accepted(o) => self.webhooks[outcome_index(o)].fetch_add(1, Relaxed),
            Delivery::Rejected(r) => self.webhooks_rejected[r as usize].fetch_add(1, Relaxed),
        };
    }

    /// An event of `event_type` changed something (committed).
    pub fn event_applied(&self, event_type: &str) {
        if let Some(i) = APPLIED_EVENT_TYPES.iter().position(|t| *t == event_type) {
            self.events_applied[i].fetch_add(1, Relaxed);
        }
    }

    /// A group commit of `jobs` jobs took `took` (`ok`: committed).
    pub fn commit(&self, jobs: usize, took: Duration, ok: bool) {
        self.commits.observe(&COMMIT_BUCKETS, took.as_secs_f64());
        self.commit_batches.observe(&BATCH_BUCKETS, jobs as f64);
        if !ok {
            self.commit_failures.fetch_add(1, Relaxed);
        }
    }

    /// A list body was (`true`) or was not found in the body cache.
    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Relaxed);
        }
    }

    /// `bytes` of a body file went out with `sendfile(2)`.
    pub fn sent_file(&self, bytes: usize) {
        self.sendfile_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// A WorkOS API call was answered with `status` (`None`: no answer).
    pub fn workos_call(&self, status: Option<u16>) {
        match status {
            Some(s) => self.workos_calls[status_index(s)].fetch_add(1, Relaxed),
            None => self.workos_network_errors.fetch_add(1, Relaxed),
        };
    }
}

/// Where the scrape-time gauges are read from.
pub struct Sources {
    pub store: Arc<Store>,
    pub data: PathBuf,
    pub cache: Arc<BodyCache>,
    pub body_files: Arc<crate::api::spool::BodyFiles>,
    pub streams: Arc<StreamSlots>,
    pub sync: Arc<SyncStatus>,
}

/// The registry `/metrics` encodes: [`METRICS`] and the gauges of `sources`.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exporter(sources)));
    registry
}

/// Encodes `registry` in the Prometheus text format.
///
/// # Errors
/// Only if formatting fails (it does not, into a `String`).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// The media type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Exporter(Sources);

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn labelled_gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(L, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

fn status_label(i: usize) -> String {
    (i + 100).to_string()
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &METRICS;
        self.encode_http(&mut enc, m)?;
        self.encode_ingest(&mut enc, m)?;
        self.encode_state(&mut enc, m)?;
        encode_sync(&mut enc, &self.0.sync, m)?;
        encode_process(&mut enc)
    }
}

impl Exporter {
    fn encode_http(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        m: &Metrics,
    ) -> Result<(), std::fmt::Error> {
        let statuses: Vec<String> = (0..STATUSES).map(status_label).collect();
        let mut samples = Vec::new();
        for (r, methods) in m.rare_requests.iter().enumerate() {
            for (k, rare) in methods.iter().enumerate() {
                let mut counts: Vec<u64> = rare.iter().map(|c| c.load(Relaxed)).collect();
                for shard in &m.shards {
                    for (code, c) in CODES.iter().zip(&shard.requests[r][k]) {
                        counts[status_index(*code)] += c.load(Relaxed);
                    }
                }
                for (s, n) in counts.into_iter().enumerate() {
                    if n > 0 {
                        let labels = vec![
                            ("route", ROUTE_NAMES[r]),
                            ("method", METHOD_NAMES[k]),
                            ("status", statuses[s].as_str()),
                        ];
                        samples.push((labels, n));
                    }
                }
            }
        }
        counter(
            enc,
            "rollcall_http_requests",
            "Requests answered, by route template, method and status.",
            &samples,
        )?;
        let mut metric = enc.encode_descriptor(
            "rollcall_http_request_duration_seconds",
            "Time from a request's arrival until its response body is sent, by route template.",
            None,
            MetricType::Histogram,
        )?;
        for (r, name) in ROUTE_NAMES.iter().enumerate() {
            let mut totals = HistogramTotals::default();
            for shard in &m.shards {
                shard.durations[r].add_to(&mut totals);
            }
            let labels = [("route", *name)];
            totals.encode(&DURATION_BUCKETS, &mut metric.encode_family(&labels)?)?;
        }
        let bytes: Vec<(Labels<'_>, u64)> = ROUTE_NAMES
            .iter()
            .enumerate()
            .map(|(r, name)| {
                let sent = m.shards.iter().map(|s| s.bytes_sent[r].load(Relaxed)).sum();
                (vec![("route", *name)], sent)
            })
            .collect();
        counter(
            enc,
            "rollcall_http_response_bytes",
            "Response body bytes sent, by route template.",
            &bytes,
        )?;
        gauge(
            enc,
            "rollcall_http_requests_in_flight",
            "Requests arrived whose response is not yet sent.",
            m.shards
                .iter()
                .map(|s| s.in_flight.load(Relaxed))
                .sum::<i64>(),
        )
    }

    fn encode_ingest(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        m: &Metrics,
    ) -> Result<(), std::fmt::Error> {
        let mut deliveries: Vec<(Labels<'_>, u64)> = OUTCOME_NAMES
            .iter()
            .zip(&m.webhooks)
            .map(|(o, c)| (vec![("outcome", *o)], c.load(Relaxed)))
            .collect();
        deliveries.extend(
            REJECTION_NAMES
                .iter()
                .zip(&m.webhooks_rejected)
                .map(|(r, c)| {
                    (
                        vec![("outcome", "rejected"), ("reason", *r)],
                        c.load(Relaxed),
                    )
                }),
        );
        counter(
            enc,
            "rollcall_webhook_deliveries",
            "Webhook deliveries answered, by outcome (and, when rejected, by reason).",
            &deliveries,
        )?;
        let events: Vec<(Labels<'_>, u64)> = APPLIED_EVENT_TYPES
            .iter()
            .zip(&m.events_applied)
            .map(|(t, c)| (vec![("type", *t)], c.load(Relaxed)))
            .collect();
        counter(
            enc,
            "rollcall_events_applied",
            "Events (webhooks and the Events API) that changed something, by type.",
            &events,
        )?;
        let mut metric = enc.encode_descriptor(
            "rollcall_commit_duration_seconds",
            "Time to apply and durably commit one group commit.",
            None,
            MetricType::Histogram,
        )?;
        m.commits.encode(&COMMIT_BUCKETS, &mut metric)?;
        let mut metric = enc.encode_descriptor(
            "rollcall_commit_batch_size",
            "Jobs (webhooks, event pages, listing pages) sharing one group commit.",
            None,
            MetricType::Histogram,
        )?;
        m.commit_batches.encode(&BATCH_BUCKETS, &mut metric)?;
        counter(
            enc,
            "rollcall_commit_failures",
            "Group commits that failed.",
            &[(vec![], m.commit_failures.load(Relaxed))],
        )?;
        let statuses: Vec<(String, u64)> = m
            .workos_calls
            .iter()
            .enumerate()
            .filter_map(|(s, c)| {
                let n = c.load(Relaxed);
                (n > 0).then(|| (status_label(s), n))
            })
            .collect();
        let mut calls: Vec<(Labels<'_>, u64)> = statuses
            .iter()
            .map(|(s, n)| (vec![("status", s.as_str())], *n))
            .collect();
        calls.push((
            vec![("status", "error")],
            m.workos_network_errors.load(Relaxed),
        ));
        counter(
            enc,
            "rollcall_workos_api_calls",
            "WorkOS API calls by HTTP status (429: rate limited; error: no answer).",
            &calls,
        )
    }

    fn encode_state(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        m: &Metrics,
    ) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        counter(
            enc,
            "rollcall_cache_hits",
            "List bodies served from the body cache.",
            &[(vec![], m.cache_hits.load(Relaxed))],
        )?;
        counter(
            enc,
            "rollcall_cache_misses",
            "List bodies looked for in the body cache and not found.",
            &[(vec![], m.cache_misses.load(Relaxed))],
        )?;
        gauge(
            enc,
            "rollcall_cache_bytes",
            "Bytes of list bodies held by the body cache.",
            s.cache.bytes() as u64,
        )?;
        gauge(
            enc,
            "rollcall_body_file_bytes",
            "Disk reserved by large list bodies kept as files (plain and compressed).",
            s.body_files.reserved_bytes(),
        )?;
        counter(
            enc,
            "rollcall_sendfile_bytes",
            "Bytes of list bodies sent from their files with sendfile(2).",
            &[(vec![], m.sendfile_bytes.load(Relaxed))],
        )?;
        gauge(
            enc,
            "rollcall_streams_in_flight",
            "Large lists being streamed now.",
            s.streams.in_use() as u64,
        )?;
        let size = std::fs::metadata(&s.data).map_or(0, |m| m.len());
        gauge(
            enc,
            "rollcall_database_bytes",
            "Size of the database file.",
            size,
        )?;
        let (directories, users, groups) = s.store.totals();
        gauge(
            enc,
            "rollcall_directories",
            "Directories stored.",
            directories,
        )?;
        gauge(
            enc,
            "rollcall_users",
            "Directory users stored, all directories.",
            users,
        )?;
        gauge(
            enc,
            "rollcall_groups",
            "Directory groups stored, all directories.",
            groups,
        )
    }
}

fn encode_sync(
    enc: &mut DescriptorEncoder<'_>,
    sync: &SyncStatus,
    _m: &Metrics,
) -> Result<(), std::fmt::Error> {
    let g = sync.gauges();
    gauge(
        enc,
        "rollcall_sync_enabled",
        "1 when WorkOS sync is on.",
        i64::from(g.enabled),
    )?;
    let optional = |enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: Option<f64>| match v
    {
        Some(v) => gauge(enc, name, help, v),
        None => Ok(()),
    };
    optional(
        enc,
        "rollcall_sync_last_event_applied_timestamp_seconds",
        "When the Events API last delivered an event that was applied (Unix time).",
        g.last_event_applied,
    )?;
    optional(
        enc,
        "rollcall_sync_last_poll_timestamp_seconds",
        "When the Events API was last polled (Unix time).",
        g.last_poll,
    )?;
    optional(
        enc,
        "rollcall_sync_event_lag_seconds",
        "How far behind WorkOS the events applied are (0 once caught up).",
        g.event_lag,
    )?;
    optional(
        enc,
        "rollcall_sync_backfill_completed_timestamp_seconds",
        "When the last backfill completed (Unix time).",
        g.backfill_completed,
    )?;
    if let Some(b) = &g.backfill {
        gauge(
            enc,
            "rollcall_sync_backfill_duration_seconds",
            "How long the last backfill completed by this process took.",
            b.seconds,
        )?;
        let counts = [
            ([("kind", "directories")], b.directories as f64),
            ([("kind", "resumed")], b.resumed as f64),
            ([("kind", "users")], b.users as f64),
            ([("kind", "groups")], b.groups as f64),
            ([("kind", "memberships")], b.memberships as f64),
            ([("kind", "authkit_users")], b.authkit_users as f64),
            ([("kind", "org_memberships")], b.org_memberships as f64),
            ([("kind", "pages")], b.pages as f64),
        ];
        labelled_gauge(
            enc,
            "rollcall_sync_backfill_objects",
            "What the last backfill completed by this process copied, by kind.",
            &counts,
        )?;
    }
    if let Some(r) = &g.reconcile {
        optional(
            enc,
            "rollcall_sync_reconcile_timestamp_seconds",
            "When the last reconcile round ended (Unix time).",
            r.at,
        )?;
        gauge(
            enc,
            "rollcall_sync_reconcile_duration_seconds",
            "How long the last reconcile round took.",
            r.seconds,
        )?;
        let counts = [
            ([("kind", "directories")], r.directories as f64),
            ([("kind", "created")], r.created as f64),
            ([("kind", "updated")], r.updated as f64),
            ([("kind", "deleted")], r.deleted as f64),
            ([("kind", "kept")], r.kept as f64),
            ([("kind", "pages")], r.pages as f64),
        ];
        labelled_gauge(
            enc,
            "rollcall_sync_reconcile_objects",
            "What the last reconcile round did, by kind.",
            &counts,
        )?;
        gauge(
            enc,
            "rollcall_sync_reconcile_complete",
            "1 when every listing of the last reconcile round was complete.",
            i64::from(r.complete),
        )?;
    }
    Ok(())
}

/// The process's CPU time, resident memory and open files, from /proc.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

/// Reads [`ProcessStats`] (Linux; elsewhere `None`).
pub fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15, starttime 22.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // The kernel reports these in USER_HZ, 100 on every Linux ABI.
    const TICKS: f64 = 100.0;
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let cpu_seconds = (ticks(11)? + ticks(12)?) as f64 / TICKS;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let start_time_seconds = boot
        .zip(ticks(19))
        .map_or(0.0, |(boot, started)| boot as f64 + started as f64 / TICKS);
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes: resident_kib * 1024,
        open_fds,
        start_time_seconds,
    })
}

fn encode_process(enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let Some(p) = process_stats() else {
        return Ok(());
    };
    let mut cpu = enc.encode_descriptor(
        "process_cpu_seconds",
        "User and system CPU time spent, in seconds.",
        None,
        MetricType::Counter,
    )?;
    cpu.encode_counter::<NoLabelSet, _, f64>(&p.cpu_seconds, None)?;
    gauge(
        enc,
        "process_resident_memory_bytes",
        "Resident memory size, in bytes.",
        p.resident_bytes,
    )?;
    gauge(
        enc,
        "process_open_fds",
        "Open file descriptors.",
        p.open_fds,
    )?;
    gauge(
        enc,
        "process_start_time_seconds",
        "When the process started (Unix time).",
        p.start_time_seconds,
    )
}

/// A request id: a per-process random prefix and a counter, or a client's
/// own well-formed `X-Request-Id`.
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        let prefix = match getrandom::fill(&mut seed) {
            Ok(()) => u64::from_le_bytes(seed),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        Self {
            prefix,
            next: AtomicU64::new(0),
        }
    }
}

/// Whether a client's `X-Request-Id` may be used as ours: at most 64
/// characters of `[A-Za-z0-9._-]`.
pub fn acceptable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RequestIds {
    /// The next id, like `3f9a0c1e5b7d2a64-1a`.
    pub fn next(&self) -> hyper::header::HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Relaxed);
        let mut buf = [0u8; 33];
        for (i, slot) in buf[..16].iter_mut().enumerate() {
            *slot = HEX[((self.prefix >> (60 - 4 * i)) & 0xf) as usize];
        }
        buf[16] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            buf[17 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        match hyper::header::HeaderValue::from_bytes(&buf[..17 + digits]) {
            Ok(v) => v,
            Err(_) => hyper::header::HeaderValue::from_static("-"),
        }
    }
}

/// What the front door records per request.
#[derive(Copy, Clone, Debug, Default)]
pub struct Observe {
    /// The event loop's shard of the request counters.
    pub shard: usize,
    /// Count requests in [`METRICS`].
    pub metrics: bool,
    /// Log one line per request (and answer `X-Request-Id`).
    pub access_log: bool,
}

impl Observe {
    /// Whether anything is recorded at all.
    pub fn any(self) -> bool {
        self.metrics || self.access_log
    }
}

/// How long the `/metrics` listener waits for a scrape's request head.
pub const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until `stopped` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let service = hyper::service::service_fn(move |req| {
            let registry = registry.clone();
            async move { Ok::<_, std::convert::Infallible>(scrape(&req, &registry)) }
        });
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                _ = stopped.wait_for(|s| *s) => true,
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        });
    }
}

fn scrape<B>(req: &hyper::Request<B>, registry: &Registry) -> hyper::Response<String> {
    use hyper::{Method, StatusCode, header};
    let plain = |status: StatusCode, body: &'static str| {
        let mut resp = hyper::Response::new(body.to_owned());
        *resp.status_mut() = status;
        resp
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let started = Instant::now();
    match render(registry) {
        Ok(text) => {
            tracing::trace!(took = ?started.elapsed(), "metrics scraped");
            let mut resp = hyper::Response::new(text);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            resp
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_template() {
        for (template, _) in crate::api::ROUTES {
            let path = template.replace("{id}", "dir_01HXYZ");
            assert_eq!(Route::classify(&path).name(), *template);
        }
        for other in [
            "/",
            "/api",
            "/api/directories/",
            "/api/directories//users",
            "/api/directories/x/users/y",
            "/api/directories/x/members",
            "/metrics",
            "/healthz/",
            "/scim/v2/",
            "/scim/v2//Users",
        ] {
            assert_eq!(Route::classify(other), Route::Other, "{other}");
        }
    }

    #[test]
    fn scim_paths_are_counted_by_directory_template_never_by_id() {
        for (path, template) in [
            ("/scim/v2/d1/Users", "/scim/v2/{id}/Users"),
            ("/scim/v2/d1/Users/u1", "/scim/v2/{id}/Users"),
            ("/scim/v2/d1/users/.search", "/scim/v2/{id}/Users"),
            ("/scim/v2/d1/Groups/g1", "/scim/v2/{id}/Groups"),
            ("/scim/v2/d1/ServiceProviderConfig", "/scim/v2/{id}"),
            ("/scim/v2/d1", "/scim/v2/{id}"),
            ("/scim/v2/d1/.search", "/scim/v2/{id}"),
        ] {
            assert_eq!(Route::classify(path).name(), template, "{path}");
        }
    }

    #[test]
    fn request_ids_are_distinct_and_well_formed() {
        let ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(acceptable_request_id(id.as_bytes()), "{id:?}");
            assert_eq!(id.as_bytes()[16], b'-');
        }
        assert!(!acceptable_request_id(b"a b"));
        assert!(!acceptable_request_id(&[b'a'; 65]));
        assert!(acceptable_request_id(&[b'a'; 64]));
        assert!(!acceptable_request_id(b""));
    }

    #[test]
    fn histograms_bucket_and_sum() {
        let h: Histogram<3> = Histogram::new();
        let bounds = [0.1, 1.0, 10.0];
        for v in [0.05, 0.1, 0.5, 20.0] {
            h.observe(&bounds, v);
        }
        let counts: Vec<u64> = h.buckets.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts, [2, 1, 0]);
        assert_eq!(h.overflow.load(Relaxed), 1);
        assert_eq!(h.sum_micros.load(Relaxed), 20_650_000);
    }

    #[test]
    fn process_stats_are_read_on_linux() {
        if cfg!(target_os = "linux") {
            let p = process_stats().expect("process stats");
            assert!(p.resident_bytes > 0);
            assert!(p.open_fds > 0);
            assert!(p.start_time_seconds > 1e9);
        }
    }
}
