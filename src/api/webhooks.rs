//! `POST /webhooks/workos`: signed WorkOS events.
//!
//! Order of checks: the signature header's form and timestamp (401, before
//! any body is read) → a body slot and memory budget → body size (413) and deadline (408) → signature over the
//! raw bytes (401) → event shape (400 naming the field) → durable commit
//! through the group committer → 200. Nothing is written unless every check
//! passed, and the 200 is sent only after the commit. Without a configured
//! secret the route does not exist (404).
//!
//! Until its signature is checked a body is anyone's, so what unverified
//! bodies may hold is bounded ([`BodyIntake`]): how many are read at once,
//! how many bytes they hold together, and how long each may take to arrive.
//! When every slot (or the memory) is taken, the reader that has waited
//! longest for its body is dropped (408) to make room: a stalled body loses
//! its place to the next sender, and a real delivery — whose body arrives
//! at once — is never the oldest for long. Stalling senders therefore
//! cannot fill the connection cap or the memory, nor keep WorkOS's
//! deliveries out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, header};
use warp::reply::Response;

use super::{ApiError, Shared, json_response, respond, with_state};
use crate::ingest::apply::Outcome;
use crate::ingest::committer::SubmitError;
use crate::ingest::workos::Event;
use crate::metrics::{Delivery, METRICS, Rejection, outcome_name};

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
    /// Bodies being read, oldest first.
    readers: Mutex<Readers>,
    /// Bytes those bodies may hold together, in [`BUDGET_UNIT`]s.
    budget: Arc<Semaphore>,
    /// Longest a body may take to arrive, from the end of the headers.
    deadline: Duration,
    /// Largest body accepted.
    max_bytes: usize,
}

/// Bodies being read, oldest first, with the wake-up that tells each to give
/// up its place.
struct Readers {
    capacity: usize,
    next: u64,
    live: VecDeque<(u64, Arc<Notify>)>,
}

/// A reader's place; given back when dropped.
struct Reader<'a> {
    intake: &'a BodyIntake,
    id: u64,
    evicted: Arc<Notify>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut readers = self.intake.readers();
        if let Some(at) = readers.live.iter().position(|(id, _)| *id == self.id) {
            readers.live.remove(at);
        }
    }
}

/// How long a reader short of memory waits for an evicted one's memory.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

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
            readers: Mutex::new(Readers {
                capacity: slots.max(1),
                next: 0,
                live: VecDeque::new(),
            }),
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
        let reader = self.enter();
        tokio::select! {
            read = tokio::time::timeout(self.deadline, self.read_budgeted(headers, body, reader.id)) => match read {
                Ok(read) => read.map(|(bytes, _held)| bytes),
                Err(_) => {
                    tracing::debug!("a webhook body missed its deadline");
                    Err(ApiError::RequestTimeout)
                }
            },
            () = reader.evicted.notified() => {
                tracing::debug!("a slow webhook body gave its place to a newer one");
                Err(ApiError::RequestTimeout)
            }
        }
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Readers> {
        self.readers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a reader's place, dropping the oldest reader if all are taken.
    fn enter(&self) -> Reader<'_> {
        let evicted = Arc::new(Notify::new());
        let mut readers = self.readers();
        if readers.live.len() >= readers.capacity
            && let Some((_, oldest)) = readers.live.pop_front()
        {
            // notify_one keeps the wake-up even before the reader awaits it.
            oldest.notify_one();
        }
        let id = readers.next;
        readers.next += 1;
        readers.live.push_back((id, evicted.clone()));
        Reader {
            intake: self,
            id,
            evicted,
        }
    }

    /// Drops the oldest reader other than `me` (to free memory); whether
    /// there was one.
    fn evict_oldest_but(&self, me: u64) -> bool {
        let mut readers = self.readers();
        match readers.live.iter().position(|(id, _)| *id != me) {
            Some(at) => {
                if let Some((_, oldest)) = readers.live.remove(at) {
                    oldest.notify_one();
                }
                true
            }
            None => false,
        }
    }

    /// Reads the body, taking budget for each chunk as it arrives (a body
    /// announced but not sent holds none); returns it with the budget it holds.
    async fn read_budgeted<S, B>(
        &self,
        headers: &HeaderMap,
        body: S,
        me: u64,
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
                let permit = match self.budget.clone().try_acquire_many_owned(more) {
                    Ok(p) => p,
                    // The memory is spent: the oldest readers give theirs
                    // back (a real delivery is never among them for long).
                    Err(_) => {
                        let mut freed = None;
                        while freed.is_none() && self.evict_oldest_but(me) {
                            freed = tokio::time::timeout(
                                EVICTION_WAIT,
                                self.budget.clone().acquire_many_owned(more),
                            )
                            .await
                            .ok()
                            .and_then(Result::ok);
                        }
                        freed.ok_or_else(|| {
                            tracing::debug!("the webhook body memory budget is spent");
                            ApiError::Busy {
                                retry_after_secs: RETRY_AFTER_SECS,
                            }
                        })?
                    }
                };
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

/// Why a delivery was refused, as the metrics count it.
fn rejection(e: &ApiError) -> Rejection {
    match e {
        ApiError::Unauthorized => Rejection::Signature,
        ApiError::PayloadTooLarge => Rejection::TooLarge,
        ApiError::RequestTimeout => Rejection::Timeout,
        ApiError::Validation { .. } => Rejection::Invalid,
        ApiError::Busy { .. } => Rejection::Busy,
        ApiError::Unavailable => Rejection::Unavailable,
        _ => Rejection::Error,
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
        Ok((resp, outcome)) => {
            METRICS.webhook(Delivery::Accepted(outcome));
            Ok(resp)
        }
        Err(e) => {
            // NotFound: no webhook secret, so no route and no delivery.
            if !matches!(e, ApiError::NotFound) {
                METRICS.webhook(Delivery::Rejected(rejection(&e)));
            }
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
) -> Result<(Response, Outcome), ApiError>
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
    Ok((
        json_response(serde_json::to_vec(&ack).unwrap_or_default()),
        outcome,
    ))
}
