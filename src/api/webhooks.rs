//! `POST /webhooks/workos`: signed WorkOS events.
//!
//! Order of checks: the signature header's form and timestamp (401, before
//! any body is read) → a body slot and memory budget (503 with
//! `Retry-After`) → body size (413) and deadline (408) → signature over the
//! raw bytes (401) → event shape (400 naming the field) → durable commit
//! through the group committer → 200. Nothing is written unless every check
//! passed, and the 200 is sent only after the commit. Without a configured
//! secret the route does not exist (404).
//!
//! Until its signature is checked a body is anyone's, so what unverified
//! bodies may hold is bounded ([`BodyIntake`]): how many are read at once,
//! how many bytes they hold together, and how long each may take to arrive.
//! A sender stalling its body therefore holds one slot for at most the
//! deadline, and thousands of them cannot fill the connection cap or the
//! memory: beyond the slots they are answered 503 at once and closed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, header};
use warp::reply::Response;

use super::{ApiError, Shared, json_response, respond, with_state};
use crate::ingest::apply::Outcome;
use crate::ingest::committer::SubmitError;
use crate::ingest::workos::Event;

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    if state.webhooks.is_none() {
        return warp::path!("webhooks" / "workos")
            .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
            .boxed();
    }
    warp::path!("webhooks" / "workos")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_state(state))
        .and_then(|headers, body, state| respond(receive(headers, body, state)))
        .boxed()
}

/// Bounds on request bodies read before they are authenticated.
pub struct BodyIntake {
    /// Bodies being read at once.
    slots: Arc<Semaphore>,
    /// Bytes those bodies may hold together, in [`BUDGET_UNIT`]s.
    budget: Arc<Semaphore>,
    /// Longest a body may take to arrive, from the end of the headers.
    deadline: Duration,
    /// Largest body accepted.
    max_bytes: usize,
}

/// The memory budget is counted in KiB (a semaphore's permits are `u32`).
const BUDGET_UNIT: usize = 1024;
/// What a refused sender is told to wait.
const RETRY_AFTER_SECS: u32 = 1;

impl BodyIntake {
    /// At most `slots` bodies in flight holding at most `budget_bytes`
    /// together, each of at most `max_bytes` and arriving within `deadline`.
    pub fn new(slots: usize, budget_bytes: usize, deadline: Duration, max_bytes: usize) -> Self {
        // The budget always holds at least one body of the largest size.
        let units = (budget_bytes.max(max_bytes) / BUDGET_UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            budget: Arc::new(Semaphore::new(units)),
            deadline,
            max_bytes,
        }
    }

    /// Reads a whole body within the bounds.
    ///
    /// # Errors
    /// 503 (`Retry-After`) when every slot or the whole budget is taken, 408
    /// past the deadline, 413 beyond the size limit (checked against
    /// `Content-Length` first), 400 when the body cannot be read.
    pub async fn read<S, B>(&self, headers: &HeaderMap, body: S) -> Result<Bytes, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>>,
        B: Buf,
    {
        let busy = ApiError::Busy {
            retry_after_secs: RETRY_AFTER_SECS,
        };
        let _slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::debug!("every webhook body slot is taken");
            busy.clone()
        })?;
        match tokio::time::timeout(self.deadline, self.read_budgeted(headers, body)).await {
            Ok(read) => read.map(|(bytes, _held)| bytes),
            Err(_) => {
                tracing::debug!("a webhook body missed its deadline");
                Err(ApiError::RequestTimeout)
            }
        }
    }

    /// Reads the body, taking budget for each chunk as it arrives (a body
    /// announced but not sent holds none); returns it with the budget it holds.
    async fn read_budgeted<S, B>(
        &self,
        headers: &HeaderMap,
        body: S,
    ) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>>,
        B: Buf,
    {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut reserved = 0usize;
        let mut buf = BytesMut::new();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|_| ApiError::validation("body", "could not be read"))?;
            let len = buf.len() + chunk.remaining();
            if len > self.max_bytes {
                return Err(ApiError::PayloadTooLarge);
            }
            let needed = len.div_ceil(BUDGET_UNIT);
            if needed > reserved {
                let more = u32::try_from(needed - reserved).unwrap_or(u32::MAX);
                let permit = self
                    .budget
                    .clone()
                    .try_acquire_many_owned(more)
                    .map_err(|_| {
                        tracing::debug!("the webhook body memory budget is spent");
                        ApiError::Busy {
                            retry_after_secs: RETRY_AFTER_SECS,
                        }
                    })?;
                match &mut held {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                }
                reserved = needed;
            }
            buf.reserve(chunk.remaining());
            while chunk.has_remaining() {
                let part = chunk.chunk();
                buf.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok((buf.freeze(), held))
    }
}

#[derive(Serialize)]
struct Ack {
    received: bool,
    outcome: &'static str,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Applied => "applied",
        Outcome::Unchanged => "unchanged",
        Outcome::Duplicate => "duplicate",
        Outcome::Stale => "stale",
        Outcome::Parked => "held",
        Outcome::NoDirectory => "no_directory",
        Outcome::Ignored => "ignored",
        Outcome::Conflict => "conflict",
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Answers a webhook; a refusal that leaves the body unread closes the
/// connection, so a sender cannot keep it for a next request.
async fn receive<S, B>(headers: HeaderMap, body: S, state: Shared) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    match receive_event(headers, body, state).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            let mut resp = warp::Reply::into_response(e);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok(resp)
        }
    }
}

async fn receive_event<S, B>(
    headers: HeaderMap,
    body: S,
    state: Shared,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let Some(verifier) = &state.webhooks else {
        return Err(ApiError::NotFound);
    };
    let refused = |e: crate::ingest::signature::SignatureError| {
        tracing::debug!(reason = %e, "webhook signature refused");
        ApiError::Unauthorized
    };
    let signature = headers.get("workos-signature").map(|v| v.as_bytes());
    verifier.precheck(signature, now_ms()).map_err(refused)?;
    let body = state.intake.read(&headers, body).await?;
    verifier
        .verify(signature, &body, now_ms())
        .map_err(refused)?;
    let event = Event::parse(&body).map_err(|e| ApiError::validation(e.field, e.problem))?;
    let (id, event_type) = (event.id.clone(), event.event_type.clone());
    let outcomes = state
        .committer
        .submit(vec![event], None)
        .await
        .map_err(|e| match e {
            SubmitError::Store(e) => ApiError::from(e),
            SubmitError::Stopped => ApiError::Unavailable,
        })?;
    let outcome = outcomes.first().copied().unwrap_or(Outcome::Unchanged);
    tracing::debug!(event_id = %id, %event_type, outcome = outcome_name(outcome), "webhook applied");
    let ack = Ack {
        received: true,
        outcome: outcome_name(outcome),
    };
    Ok(json_response(serde_json::to_vec(&ack).unwrap_or_default()))
}
