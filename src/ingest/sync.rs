//! WorkOS sync: what `--workos-api-key` turns on. An existing WorkOS
//! account is copied whole ([`super::backfill`]), then followed through the
//! Events API from just before the copy began ([`super::pull`]), and
//! periodically compared with the list APIs to repair drift
//! ([`super::reconcile`]). Every object goes through [`super::apply`], like
//! webhooks and imports, so one set of rules decides everything.
//!
//! Progress lives in the database, written in the same transactions as the
//! data it describes: the time the backfill began (where the events are
//! followed from), each directory backfilled (a restart resumes after
//! them), the backfill's completion, the events cursor and when it was last
//! polled (a cursor older than the Events API's 30 days means a new
//! backfill), and the last reconcile. [`SyncStatus`] mirrors them in memory
//! for `/readyz`.
//!
//! This module owns the schedule; it takes its own small settings, never
//! the server's whole configuration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::committer::{Committer, SubmitError, Work};
use super::workos_api::{ApiError, ApiSettings, WorkosApi};
use super::{backfill, pull, reconcile};
use crate::model::Timestamp;
use crate::store::{Store, StoreError};

/// How rollcall syncs with a WorkOS account.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    pub api: ApiSettings,
    /// Only these organizations' directories (all when empty).
    pub organizations: Vec<String>,
    /// Pause between Events API polls once caught up.
    pub poll_interval: Duration,
    /// Between two reconcile rounds; `None` turns reconcile off.
    pub reconcile_interval: Option<Duration>,
    /// Directories copied (or compared) at once.
    pub concurrency: usize,
}

/// Why a sync step failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the committer has stopped")]
    Stopped,
    #[error("the events cursor is older than the Events API keeps ({0}): a new backfill is needed")]
    CursorExpired(String),
}

impl SyncError {
    /// What went wrong without the details (a WorkOS answer's body, a URL
    /// with a directory id): for `/readyz`, which anyone may read. The
    /// details go to the log.
    #[must_use]
    pub fn summary(&self) -> String {
        match self {
            Self::Api(ApiError::Status { status, .. }) => format!("WorkOS answered {status}"),
            Self::Api(ApiError::Network(_)) => "WorkOS could not be reached".into(),
            Self::Api(ApiError::Shape(_)) => "WorkOS answered something that is not a list".into(),
            Self::Api(ApiError::Stopped) | Self::Stopped => "stopping".into(),
            Self::Store(_) => "a storage failure (see the log)".into(),
            Self::CursorExpired(_) => "the events cursor expired".into(),
        }
    }
}

impl From<SubmitError> for SyncError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Store(e) => Self::Store(e),
            SubmitError::Stopped => Self::Stopped,
        }
    }
}

/// How long the Events API keeps events; a cursor not polled for this long
/// (less a day of margin) cannot be trusted to resume from.
pub const EVENTS_RETENTION: Duration = Duration::from_secs(29 * 24 * 3600);
/// Events are followed from this long before the backfill began, so an
/// event emitted while the first page was in flight is not missed
/// (applying an event twice is harmless).
pub const BACKFILL_MARGIN: Duration = Duration::from_secs(60);

/// Names of the progress markers kept in the database.
pub(crate) mod marks {
    pub const BACKFILL_STARTED: &str = "sync.backfill.started_at";
    pub const BACKFILL_COMPLETED: &str = "sync.backfill.completed_at";
    pub const BACKFILL_DONE: &str = "sync.backfill.done.";
    pub const EVENTS_POLLED: &str = "sync.events.polled_at";
    pub const EVENT_LATEST: &str = "sync.events.latest_at";
    pub const RECONCILE_LAST: &str = "sync.reconcile.last";
    /// Set when a backfill starts over after a gap in the events (the
    /// server was away longer than the Events API keeps them): a backfill
    /// cannot see deletions, so a complete reconcile round is owed.
    pub const REPAIR_OWED: &str = "sync.backfill.repair_owed";
}

pub(crate) fn encode_time(t: Timestamp) -> Vec<u8> {
    t.0.to_le_bytes().to_vec()
}

pub(crate) fn decode_time(bytes: Option<Vec<u8>>) -> Option<Timestamp> {
    bytes.and_then(|b| b.try_into().ok().map(|b| Timestamp(i64::from_le_bytes(b))))
}

/// What the last reconcile round did.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct ReconcileReport {
    /// When the round ended (RFC 3339).
    pub at: String,
    pub seconds: f64,
    pub directories: u64,
    pub created: u64,
    pub updated: u64,
    /// Deleted after a direct GET answered 404.
    pub deleted: u64,
    /// Missing from a listing, but a direct GET did not answer 404 (or a
    /// listing of their directory failed): kept.
    pub kept: u64,
    pub pages: u64,
    /// Whether every listing was complete.
    pub complete: bool,
}

/// Sync state for `/readyz` (and the metrics): no tenant data.
#[derive(Default)]
pub struct SyncStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Default, Clone)]
struct StatusInner {
    enabled: bool,
    backfill_started_at: Option<Timestamp>,
    backfill_completed_at: Option<Timestamp>,
    directories_total: u64,
    directories_done: u64,
    last_poll_at: Option<Timestamp>,
    last_event_applied_at: Option<Timestamp>,
    /// WorkOS's `created_at` of the newest event applied.
    latest_event_at: Option<Timestamp>,
    /// Every event up to this time is applied: the last poll that found
    /// the end of the stream, or the newest event of a poll that did not.
    caught_up_to: Option<Timestamp>,
    last_reconcile: Option<ReconcileReport>,
    last_error: Option<String>,
    /// What the last backfill completed by this process did.
    last_backfill: Option<backfill::BackfillReport>,
}

/// The readiness report: no tenant data, only times and counts.
#[derive(Serialize)]
pub struct StatusReport {
    pub backfill_started_at: Option<String>,
    pub backfill_completed_at: Option<String>,
    pub backfill_directories: Option<[u64; 2]>,
    pub last_poll_at: Option<String>,
    pub last_event_applied_at: Option<String>,
    pub event_lag_seconds: Option<f64>,
    pub last_reconcile: Option<ReconcileReport>,
    pub last_error: Option<String>,
}

impl SyncStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status of a server with sync on, from what the database says.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let snapshot = store.snapshot()?;
        let last_reconcile = snapshot
            .mark(marks::RECONCILE_LAST)?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let inner = StatusInner {
            enabled: true,
            backfill_started_at: decode_time(snapshot.mark(marks::BACKFILL_STARTED)?),
            backfill_completed_at: decode_time(snapshot.mark(marks::BACKFILL_COMPLETED)?),
            last_poll_at: decode_time(snapshot.mark(marks::EVENTS_POLLED)?),
            latest_event_at: decode_time(snapshot.mark(marks::EVENT_LATEST)?),
            last_reconcile,
            ..StatusInner::default()
        };
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// Whether the server may take traffic: sync is off, or the first
    /// backfill has completed.
    pub fn is_ready(&self) -> bool {
        let inner = self.lock();
        !inner.enabled || inner.backfill_completed_at.is_some()
    }

    /// Whether sync is on at all.
    pub fn is_enabled(&self) -> bool {
        self.lock().enabled
    }

    /// The report `/readyz` shows.
    pub fn report(&self) -> StatusReport {
        let inner = self.lock().clone();
        let rfc = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339);
        let now = Timestamp::now();
        StatusReport {
            backfill_started_at: rfc(inner.backfill_started_at),
            backfill_completed_at: rfc(inner.backfill_completed_at),
            backfill_directories: (inner.directories_total > 0)
                .then_some([inner.directories_done, inner.directories_total]),
            last_poll_at: rfc(inner.last_poll_at),
            last_event_applied_at: rfc(inner.last_event_applied_at),
            // How far behind WorkOS the newest applied event is; once caught
            // up (polled after it), 0.
            event_lag_seconds: inner
                .caught_up_to
                .map(|t| (now.0 - t.0).max(0) as f64 / 1e6),
            last_reconcile: inner.last_reconcile,
            last_error: inner.last_error,
        }
    }

    /// The numbers the metrics show (Unix seconds, seconds, counts).
    pub fn gauges(&self) -> SyncGauges {
        let inner = self.lock().clone();
        let secs = |t: Option<Timestamp>| t.map(|t| t.0 as f64 / 1e6);
        let now = Timestamp::now();
        SyncGauges {
            enabled: inner.enabled,
            last_event_applied: secs(inner.last_event_applied_at),
            last_poll: secs(inner.last_poll_at),
            event_lag: inner
                .caught_up_to
                .map(|t| (now.0 - t.0).max(0) as f64 / 1e6),
            backfill_completed: secs(inner.backfill_completed_at),
            backfill: inner.last_backfill,
            reconcile: inner.last_reconcile.map(|r| ReconcileGauges {
                at: chrono::DateTime::parse_from_rfc3339(&r.at)
                    .ok()
                    .map(|t| t.timestamp_micros() as f64 / 1e6),
                seconds: r.seconds,
                directories: r.directories,
                created: r.created,
                updated: r.updated,
                deleted: r.deleted,
                kept: r.kept,
                pages: r.pages,
                complete: r.complete,
            }),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SyncStatusView<'_>)) {
        let mut inner = self.lock();
        f(&mut SyncStatusView(&mut inner));
    }
}

/// [`SyncStatus`] as numbers, for the metrics.
#[derive(Clone, Debug, Default)]
pub struct SyncGauges {
    pub enabled: bool,
    pub last_event_applied: Option<f64>,
    pub last_poll: Option<f64>,
    pub event_lag: Option<f64>,
    pub backfill_completed: Option<f64>,
    /// The last backfill completed by this process.
    pub backfill: Option<backfill::BackfillReport>,
    pub reconcile: Option<ReconcileGauges>,
}

/// The last reconcile round, as numbers.
#[derive(Clone, Debug, Default)]
pub struct ReconcileGauges {
    pub at: Option<f64>,
    pub seconds: f64,
    pub directories: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub kept: u64,
    pub pages: u64,
    pub complete: bool,
}

/// Mutations of the status, for the sync's own steps.
pub(crate) struct SyncStatusView<'a>(&'a mut StatusInner);

impl SyncStatusView<'_> {
    pub fn backfill_started(&mut self, at: Timestamp, directories: u64) {
        self.0.backfill_started_at = Some(at);
        self.0.directories_total = directories;
        self.0.directories_done = 0;
    }
    pub fn directory_done(&mut self) {
        self.0.directories_done += 1;
    }
    pub fn backfill_completed(&mut self, at: Timestamp) {
        self.0.backfill_completed_at = Some(at);
        self.0.last_error = None;
    }
    pub fn backfill_reported(&mut self, report: backfill::BackfillReport) {
        self.0.last_backfill = Some(report);
    }
    pub fn backfill_reset(&mut self) {
        self.0.backfill_completed_at = None;
    }
    /// A poll at `at` applied events up to `latest_event` (WorkOS time),
    /// and reached the end of the stream or not.
    pub fn polled(&mut self, at: Timestamp, latest_event: Option<Timestamp>, drained: bool) {
        self.0.last_poll_at = Some(at);
        if let Some(latest) = latest_event {
            self.0.last_event_applied_at = Some(at);
            self.0.latest_event_at = Some(self.0.latest_event_at.map_or(latest, |l| l.max(latest)));
        }
        self.0.caught_up_to = if drained {
            Some(at)
        } else {
            self.0.latest_event_at.or(self.0.caught_up_to)
        };
    }
    pub fn reconciled(&mut self, report: ReconcileReport) {
        self.0.last_reconcile = Some(report);
    }
    pub fn failed(&mut self, error: &SyncError) {
        self.0.last_error = Some(error.summary());
    }
}

/// What a sync step needs; cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub api: WorkosApi,
    pub store: Arc<Store>,
    pub committer: Committer,
    pub settings: Arc<SyncSettings>,
    pub status: Arc<SyncStatus>,
}

impl Context {
    /// Applies listed objects and progress markers in one durable commit.
    ///
    /// # Errors
    /// A storage failure or a stopped committer.
    pub async fn submit(
        &self,
        items: Vec<super::apply::Listed>,
        marks: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<Vec<super::apply::Outcome>, SyncError> {
        Ok(self
            .committer
            .submit_work(Work {
                items,
                marks,
                ..Work::default()
            })
            .await?)
    }

    /// A progress marker, as the database has it now.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn mark(&self, name: &'static str) -> Result<Option<Vec<u8>>, SyncError> {
        let store = self.store.clone();
        Ok(
            tokio::task::spawn_blocking(move || store.snapshot()?.mark(name))
                .await
                .map_err(|e| StoreError::Io(e.to_string()))??,
        )
    }
}

/// Whether a new backfill is needed: none ever completed, or the events
/// cursor has not been polled for longer than the Events API keeps events.
async fn needs_backfill(ctx: &Context) -> Result<Option<&'static str>, SyncError> {
    if decode_time(ctx.mark(marks::BACKFILL_COMPLETED).await?).is_none() {
        return Ok(Some("no backfill has completed"));
    }
    let polled = decode_time(ctx.mark(marks::EVENTS_POLLED).await?);
    let completed = decode_time(ctx.mark(marks::BACKFILL_COMPLETED).await?);
    let last = polled.or(completed).unwrap_or(Timestamp::MIN);
    let retention = i64::try_from(EVENTS_RETENTION.as_micros()).unwrap_or(i64::MAX);
    if Timestamp::now().0 - last.0 > retention {
        return Ok(Some(
            "the events were last followed longer ago than the Events API keeps them",
        ));
    }
    Ok(None)
}

/// Forgets a completed backfill (and the cursor it led to), so the next
/// round copies everything again, and owes a reconcile round for what it
/// cannot see (deletions while the events were not followed).
async fn restart_backfill(ctx: &Context) -> Result<(), SyncError> {
    ctx.submit(
        Vec::new(),
        vec![
            (marks::BACKFILL_COMPLETED.into(), None),
            (marks::BACKFILL_STARTED.into(), None),
            (
                marks::REPAIR_OWED.into(),
                Some(encode_time(Timestamp::now())),
            ),
        ],
    )
    .await?;
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        store.write(|tx| {
            tx.clear_marks(marks::BACKFILL_DONE)?;
            tx.clear_events_cursor()
        })
    })
    .await
    .map_err(|e| StoreError::Io(e.to_string()))??;
    ctx.status.update(|s| s.backfill_reset());
    Ok(())
}

/// Runs sync until `stop`: backfill when needed, then follow the events,
/// and reconcile on schedule. Failures are logged and retried with backoff.
pub async fn run(ctx: Context, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    let max_backoff = ctx.settings.api.max_backoff;
    let mut reconciler: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let step = async {
            if let Some(why) = needs_backfill(&ctx).await? {
                tracing::info!(reason = why, "backfilling from the WorkOS list APIs");
                if decode_time(ctx.mark(marks::BACKFILL_COMPLETED).await?).is_some() {
                    restart_backfill(&ctx).await?;
                }
                backfill::backfill(&ctx).await?;
            }
            if ctx.mark(marks::REPAIR_OWED).await?.is_some() {
                tracing::info!(
                    "reconciling: deletions during the gap in events are not in a backfill"
                );
                reconcile::round(&ctx).await?;
            }
            if reconciler.is_none()
                && let Some(every) = ctx.settings.reconcile_interval
            {
                reconciler = Some(tokio::spawn(reconcile::every(
                    ctx.clone(),
                    every,
                    stop.clone(),
                )));
            }
            pull::follow(&ctx, stop.clone()).await
        };
        match step.await {
            Ok(()) => break,
            Err(SyncError::Api(ApiError::Stopped)) | Err(SyncError::Stopped) => break,
            Err(SyncError::CursorExpired(why)) => {
                tracing::warn!(reason = %why, "the events cursor expired; backfilling again");
                if let Err(e) = restart_backfill(&ctx).await {
                    tracing::error!(error = %e, "cannot reset the backfill");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, wait_secs = backoff.as_secs_f64(), "sync failed; retrying");
                ctx.status.update(|s| s.failed(&e));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(max_backoff);
    }
    if let Some(task) = reconciler {
        let _ = task.await;
    }
}

/// What `rollcall sync` did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub backfill: backfill::BackfillReport,
    /// `None` when a first backfill has just copied everything (there is
    /// nothing yet to repair).
    pub reconcile: Option<ReconcileReport>,
}

/// `rollcall sync`: a backfill (resumed, or anew if none completed or the
/// cursor expired), then a reconcile round unless a first backfill has
/// just listed everything.
///
/// # Errors
/// The first failure.
pub async fn once(ctx: &Context) -> Result<SyncReport, SyncError> {
    let (backfill, first) = match needs_backfill(ctx).await? {
        Some(_) => {
            let again = decode_time(ctx.mark(marks::BACKFILL_COMPLETED).await?).is_some();
            if again {
                restart_backfill(ctx).await?;
            }
            (backfill::backfill(ctx).await?, !again)
        }
        None => (backfill::BackfillReport::default(), false),
    };
    let owed = ctx.mark(marks::REPAIR_OWED).await?.is_some();
    let reconcile = if first && !owed {
        None
    } else {
        Some(reconcile::round(ctx).await?)
    };
    Ok(SyncReport {
        backfill,
        reconcile,
    })
}
