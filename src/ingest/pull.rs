//! Pull mode, for installs that cannot receive webhooks: poll the WorkOS
//! Events API (`GET /events?events=…&after=<cursor>&limit=100`) and apply
//! each page through the same committer as webhooks, storing the cursor in
//! the same write transaction as the page's changes. After a restart it
//! resumes from the stored cursor, so nothing is applied twice (and the seen
//! event ids make a replay harmless anyway) and nothing is skipped.
//!
//! Errors back off exponentially; a 429 waits for `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::committer::Committer;
use super::workos::{APPLIED_EVENT_TYPES, Event};
use crate::config::PullSettings;
use crate::store::Store;

/// Events asked for per page (the API's maximum).
pub const PAGE_SIZE: usize = 100;

/// An Events API page: `{"object": "list", "data": [...], "list_metadata": {...}}`.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct EntryId {
    id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("rate limited")]
    RateLimited(Option<Duration>),
    #[error("{0}")]
    Failed(String),
}

struct Page {
    events: Vec<Event>,
    /// The id of the last entry, applied or skipped: the next cursor.
    last_id: Option<String>,
    entries: usize,
}

/// Polls until `stop` turns true.
pub async fn run(
    settings: PullSettings,
    store: Arc<Store>,
    committer: Committer,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "pull mode cannot start its HTTP client");
            return;
        }
    };
    let mut cursor = loop {
        let store = store.clone();
        let read = tokio::task::spawn_blocking(move || store.snapshot()?.events_cursor()).await;
        match read {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => tracing::error!(error = %e, "pull mode cannot read its cursor"),
            Err(e) => tracing::error!(error = %e, "pull mode cannot read its cursor"),
        }
        if pause(&mut stop, settings.poll_interval).await {
            return;
        }
    };
    tracing::info!(
        cursor = cursor.as_deref().unwrap_or("(start)"),
        "pull mode started"
    );
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match fetch_page(&client, &settings, cursor.as_deref()).await {
            Ok(page) => {
                let Some(last_id) = page.last_id.clone() else {
                    backoff = Duration::from_secs(1);
                    if pause(&mut stop, settings.poll_interval).await {
                        return;
                    }
                    continue;
                };
                let count = page.events.len();
                match committer.submit(page.events, Some(last_id.clone())).await {
                    Ok(_) => {
                        tracing::debug!(events = count, cursor = %last_id, "pulled a page of events");
                        cursor = Some(last_id);
                        backoff = Duration::from_secs(1);
                        if page.entries < PAGE_SIZE {
                            settings.poll_interval
                        } else {
                            Duration::ZERO
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pull mode could not commit a page; retrying");
                        next_backoff(&mut backoff, settings.max_backoff)
                    }
                }
            }
            Err(PullError::RateLimited(retry_after)) => {
                let wait =
                    retry_after.unwrap_or_else(|| next_backoff(&mut backoff, settings.max_backoff));
                tracing::warn!(
                    wait_secs = wait.as_secs_f64(),
                    "Events API rate limit; waiting"
                );
                wait
            }
            Err(PullError::Failed(reason)) => {
                let wait = next_backoff(&mut backoff, settings.max_backoff);
                tracing::warn!(%reason, wait_secs = wait.as_secs_f64(), "Events API request failed; backing off");
                wait
            }
        };
        if !wait.is_zero() && pause(&mut stop, wait).await {
            return;
        }
    }
}

fn next_backoff(current: &mut Duration, max: Duration) -> Duration {
    let wait = *current;
    *current = (*current * 2).min(max);
    wait
}

/// Sleeps for `d`; returns true if asked to stop meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn fetch_page(
    client: &reqwest::Client,
    settings: &PullSettings,
    cursor: Option<&str>,
) -> Result<Page, PullError> {
    let mut query = vec![
        ("events", APPLIED_EVENT_TYPES.join(",")),
        ("limit", PAGE_SIZE.to_string()),
    ];
    if let Some(c) = cursor {
        query.push(("after", c.to_owned()));
    }
    let resp = client
        .get(format!("{}/events", settings.api_url))
        .bearer_auth(&settings.api_key)
        .query(&query)
        .send()
        .await
        .map_err(|e| PullError::Failed(e.without_url().to_string()))?;
    let status = resp.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        return Err(PullError::RateLimited(retry_after));
    }
    if !status.is_success() {
        return Err(PullError::Failed(format!("HTTP {status}")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| PullError::Failed(format!("unreadable page: {}", e.without_url())))?;
    let page: RawPage<'_> = serde_json::from_slice(&body)
        .map_err(|e| PullError::Failed(format!("page is not an event list: {e}")))?;
    let entries = page.data;
    let mut events = Vec::with_capacity(entries.len());
    let mut last_id = None;
    for entry in &entries {
        let id = serde_json::from_str::<EntryId>(entry.get())
            .ok()
            .and_then(|e| e.id);
        match Event::parse(entry.get().as_bytes()) {
            Ok(event) => events.push(event),
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
    Ok(Page {
        events,
        last_id,
        entries: entries.len(),
    })
}
