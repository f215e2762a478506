//! `GET /healthz` (liveness: answers without authentication, touches
//! nothing) and `GET /readyz` (readiness: the database answers and, with a
//! WorkOS API key, the first backfill has completed — a load balancer must
//! never send traffic to an instance that is still empty). Neither needs a
//! token, so neither says anything about any tenant: `/readyz` reports only
//! times and counts of the sync.

use serde::Serialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::{Shared, blocking, get_or_head, respond, with_state};
use crate::ingest::sync::StatusReport;

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz").and(get_or_head()).map(|| {
        let mut resp = Response::new(r#"{"status":"ok"}"#.into());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    });
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .and(with_state(state))
        .and_then(|state| respond(async move { Ok(ready(state).await) }));
    healthz.or(readyz).unify().boxed()
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<StatusReport>,
}

#[derive(Serialize)]
struct NotReady {
    code: &'static str,
    status: u16,
    message: &'static str,
    data: NotReadyData,
}

#[derive(Serialize)]
struct NotReadyData {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<StatusReport>,
}

async fn ready(state: Shared) -> Response {
    let store = state.store.clone();
    let readable = blocking(move || Ok(store.snapshot().is_ok()))
        .await
        .unwrap_or(false);
    let sync = state.sync.is_enabled().then(|| state.sync.report());
    let (status, body) = if !readable {
        not_ready("The database cannot be read", sync)
    } else if !state.sync.is_ready() {
        not_ready("The first backfill from WorkOS has not completed", sync)
    } else {
        (
            StatusCode::OK,
            serde_json::to_vec(&Ready {
                status: "ready",
                sync,
            }),
        )
    };
    let mut resp = Response::new(body.unwrap_or_default().into());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn not_ready(
    message: &'static str,
    sync: Option<StatusReport>,
) -> (StatusCode, serde_json::Result<Vec<u8>>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::to_vec(&NotReady {
            code: "SERVICE_UNAVAILABLE",
            status: 503,
            message,
            data: NotReadyData {
                code: "NOT_READY",
                sync,
            },
        }),
    )
}
