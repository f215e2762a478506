//! Following the WorkOS Events API after a backfill: polls
//! `GET /events?events=…&limit=100`, first from `range_start` = the time
//! the backfill began (so nothing that changed while it ran is missed), then
//! `after` the stored cursor, and applies each page through the same
//! committer as webhooks, storing the cursor (and when it was polled) in the
//! same write transaction as the page's changes. After a restart it resumes
//! from the stored cursor: nothing is skipped, and seen event ids make a
//! replay harmless.
//!
//! A cursor the API no longer accepts (older than its 30 days) ends the
//! following with [`SyncError::CursorExpired`]: the caller backfills anew.

use serde::Deserialize;
use tokio::sync::watch;

use super::committer::Work;
use super::sync::{Context, SyncError, decode_time, encode_time, marks};
use super::workos::{APPLIED_EVENT_TYPES, Event};
use super::workos_api::{ApiError, PAGE_SIZE};
use crate::model::Timestamp;

/// How often (µs) a quiet account's successful polls are recorded.
const POLL_MARK_EVERY: i64 = 3_600_000_000;

#[derive(Deserialize)]
struct EntryId {
    id: Option<String>,
}

/// Polls until `stop`.
///
/// # Errors
/// [`SyncError::CursorExpired`] when the Events API refuses the cursor; a
/// storage failure; stopping.
pub async fn follow(ctx: &Context, mut stop: watch::Receiver<bool>) -> Result<(), SyncError> {
    let store = ctx.store.clone();
    let mut cursor = tokio::task::spawn_blocking(move || store.snapshot()?.events_cursor())
        .await
        .map_err(|e| crate::store::StoreError::Io(e.to_string()))??;
    let range_start = decode_time(ctx.mark(marks::BACKFILL_STARTED).await?);
    tracing::info!(
        cursor = cursor.as_deref().unwrap_or("(none)"),
        range_start = range_start
            .map(Timestamp::to_rfc3339)
            .as_deref()
            .unwrap_or("(none)"),
        "following the WorkOS Events API"
    );
    let mut persisted_poll = decode_time(ctx.mark(marks::EVENTS_POLLED).await?);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let mut filters = vec![("events", APPLIED_EVENT_TYPES.join(","))];
        if cursor.is_none()
            && let Some(start) = range_start
        {
            filters.push(("range_start", start.to_rfc3339()));
        }
        let page = match ctx
            .api
            .page("/events", &filters, cursor.as_deref(), None)
            .await
        {
            Ok(page) => page,
            Err(ApiError::Status { status, body })
                if cursor.is_some() && is_refused_cursor(status) =>
            {
                return Err(SyncError::CursorExpired(format!("HTTP {status}: {body}")));
            }
            Err(e) => return Err(e.into()),
        };
        let entries = page.data.len();
        let mut events = Vec::with_capacity(entries);
        let mut last_id = None;
        let mut latest: Option<Timestamp> = None;
        for entry in &page.data {
            let id = serde_json::from_str::<EntryId>(entry.get())
                .ok()
                .and_then(|e| e.id);
            match Event::parse(entry.get().as_bytes()) {
                Ok(event) => {
                    latest = Some(latest.map_or(event.created_at, |l| l.max(event.created_at)));
                    events.push(event);
                }
                // A malformed event cannot be fixed by asking again: skip it
                // (loudly) rather than stall the stream behind it.
                Err(e) => {
                    tracing::error!(event_id = id.as_deref().unwrap_or("?"), error = %e, "skipping a malformed event")
                }
            }
            if id.is_some() {
                last_id = id;
            }
        }
        let polled = Timestamp::now();
        let drained = entries < PAGE_SIZE;
        // When the cursor was last good is kept with every page applied,
        // and on a quiet account about hourly (a poll that finds nothing
        // does not need a durable write each time).
        let stale_mark = persisted_poll.is_none_or(|p: Timestamp| polled.0 - p.0 > POLL_MARK_EVERY);
        if last_id.is_some() || stale_mark {
            let mut marks = vec![(marks::EVENTS_POLLED.into(), Some(encode_time(polled)))];
            if let Some(latest) = latest {
                marks.push((marks::EVENT_LATEST.into(), Some(encode_time(latest))));
            }
            let count = events.len();
            ctx.committer
                .submit_work(Work {
                    events,
                    cursor: last_id.clone(),
                    marks,
                    ..Work::default()
                })
                .await?;
            persisted_poll = Some(polled);
            if let Some(last) = last_id {
                tracing::debug!(events = count, cursor = %last, "pulled a page of events");
                cursor = Some(last);
            }
        }
        ctx.status.update(|s| s.polled(polled, latest, drained));
        if drained {
            tokio::select! {
                () = tokio::time::sleep(ctx.settings.poll_interval) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

/// Whether WorkOS refused the request for its cursor (not a passing error).
fn is_refused_cursor(status: u16) -> bool {
    matches!(status, 400 | 404 | 410 | 422)
}
