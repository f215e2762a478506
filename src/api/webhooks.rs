//! `POST /webhooks/workos`: signed WorkOS events.
//!
//! Order of checks: body size (413) → signature over the raw bytes (401) →
//! event shape (400 naming the field) → durable commit through the group
//! committer → 200. Nothing is written unless every check passed, and the
//! 200 is sent only after the commit. Without a configured secret the route
//! does not exist (404).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, header};
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

/// Reads a body of at most `limit` bytes.
///
/// # Errors
/// 413 beyond the limit (checked against `Content-Length` first), 400 when
/// the body cannot be read.
pub async fn read_capped<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| ApiError::validation("body", "could not be read"))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
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

async fn receive<S, B>(headers: HeaderMap, body: S, state: Shared) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let Some(verifier) = &state.webhooks else {
        return Err(ApiError::NotFound);
    };
    let body = read_capped(&headers, body, state.max_body_bytes).await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let signature = headers.get("workos-signature").map(|v| v.as_bytes());
    verifier.verify(signature, &body, now_ms).map_err(|e| {
        tracing::debug!(reason = %e, "webhook signature refused");
        ApiError::Unauthorized
    })?;
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
