//! [`FrontDoor`]: the hyper service in front of warp. It refuses request
//! targets warp cannot take (authority form `CONNECT a:1`, asterisk form
//! `OPTIONS *`) with a JSON 400 before warp sees them, and marks its
//! connection busy from a request's arrival until its response body is
//! done (so the connection cap knows which connections are idle).
//!
//! Over the same span it observes each request, when asked to
//! ([`Observe`]): the metrics' counts, durations and bytes by route
//! template, and the access log line with its request id (also answered as
//! `X-Request-Id`). Off, none of this costs more than a branch.
//!
//! Requests on a connection that can send files carry its
//! [`FileQueue`] as an extension, for the routes that answer with files.
//!
//! It must not route, authenticate or read bodies: everything else goes
//! to warp unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use std::time::Instant;

use bytes::Buf;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, Uri};
use warp::Reply;

use super::cap::ConnState;
use super::sendfile::FileQueue;
use crate::api::ApiError;
use crate::metrics::{METRICS, Observe, RequestIds, Route, acceptable_request_id};

/// The status recorded for a request whose client left before it was
/// answered (nginx's convention; never sent).
pub const CLIENT_CLOSED: u16 = 499;

/// The header a request id travels in.
pub const REQUEST_ID: &str = "x-request-id";

/// The per-connection service: a target check and busy/idle marking around
/// `inner` (warp's routes as a hyper service).
#[derive(Clone)]
pub struct FrontDoor<S> {
    inner: S,
    conn: Arc<ConnState>,
    observe: Observe,
    ids: Arc<RequestIds>,
    /// The connection's file queue, handed to every request (as an
    /// extension) when the connection can send files.
    files: Option<Arc<FileQueue>>,
}

impl<S> FrontDoor<S> {
    /// `inner` serving the connection whose state is `conn`, recording what
    /// `observe` asks for (request ids from `ids`); requests carry `files`.
    pub fn new(
        inner: S,
        conn: Arc<ConnState>,
        observe: Observe,
        ids: Arc<RequestIds>,
        files: Option<Arc<FileQueue>>,
    ) -> Self {
        Self {
            inner,
            conn,
            observe,
            ids,
            files,
        }
    }
}

/// One request being observed, from arrival until its body is done.
pub struct Seen {
    observe: Observe,
    route: Route,
    method: Method,
    started: Instant,
    status: u16,
    bytes: u64,
    id: Option<HeaderValue>,
}

impl Seen {
    fn begin(req: &Request<Incoming>, observe: Observe, ids: &RequestIds) -> Self {
        if observe.metrics {
            METRICS.request_started(observe.shard);
        }
        // The client's id when well formed; otherwise one of ours.
        let id = observe.access_log.then(|| {
            req.headers()
                .get(REQUEST_ID)
                .filter(|v| acceptable_request_id(v.as_bytes()))
                .cloned()
                .unwrap_or_else(|| ids.next())
        });
        Self {
            observe,
            route: Route::classify(req.uri().path()),
            method: req.method().clone(),
            started: Instant::now(),
            status: 0,
            bytes: 0,
            id,
        }
    }

    /// Notes the response's status and gives it the request id.
    fn answered<B>(&mut self, resp: &mut Response<B>) {
        self.status = resp.status().as_u16();
        if let Some(id) = &self.id {
            resp.headers_mut().insert(REQUEST_ID, id.clone());
        }
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        // Never answered: the client went away first (nginx's 499).
        if self.status == 0 {
            self.status = CLIENT_CLOSED;
        }
        if self.observe.metrics {
            METRICS.request_done(
                self.observe.shard,
                self.route,
                &self.method,
                self.status,
                self.bytes,
                took,
            );
        }
        if self.observe.access_log {
            let id = self
                .id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                target: "rollcall::access",
                request_id = id,
                method = self.method.as_str(),
                route = self.route.name(),
                status = self.status,
                bytes = self.bytes,
                duration_ms = took.as_micros() as f64 / 1e3,
                "request"
            );
        }
    }
}

/// Whether warp can route `uri`: origin form (`/path?query`) or absolute
/// form with a path (`http://host/path`). The authority form (`a:1`) has no
/// path at all, and warp panics on it; the asterisk form (`*`) names no
/// resource rollcall has.
pub fn has_path(uri: &Uri) -> bool {
    uri.path_and_query()
        .is_some_and(|p| p.path().starts_with('/'))
}

impl<S, B> hyper::service::Service<Request<Incoming>> for FrontDoor<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Unpin,
    B: Unpin,
    // B is warp's body type, which warp does not name; this bound is how
    // the refusal below, a warp reply, is known to be of the same type.
    Response<B>: From<warp::reply::Response>,
{
    type Response = Response<Tracked<B>>;
    type Error = Infallible;
    type Future = Answer<S::Future, B>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(files) = &self.files {
            req.extensions_mut().insert(files.clone());
        }
        let busy = Busy::new(self.conn.clone());
        let mut seen = self
            .observe
            .any()
            .then(|| Seen::begin(&req, self.observe, &self.ids));
        if !has_path(req.uri()) {
            tracing::debug!(method = %req.method(), target = %req.uri(), "request target is not a path");
            let refusal = ApiError::validation(
                "path",
                "the request target must be a path (origin form), like /healthz",
            )
            .into_response();
            let mut resp = Response::<B>::from(refusal);
            if let Some(seen) = &mut seen {
                seen.answered(&mut resp);
            }
            return Answer::Ready(Some(resp.map(|body| Tracked::new(body, busy, seen))));
        }
        Answer::Inner {
            future: self.inner.call(req),
            busy: Some(busy),
            seen,
        }
    }
}

/// The response future of [`FrontDoor`].
pub enum Answer<F, B> {
    /// Answered without warp.
    Ready(Option<Response<Tracked<B>>>),
    /// warp's answer, to be tracked.
    Inner {
        future: F,
        busy: Option<Busy>,
        seen: Option<Seen>,
    },
}

impl<F, B> Future for Answer<F, B>
where
    F: Future<Output = Result<Response<B>, Infallible>> + Unpin,
    B: Unpin,
{
    type Output = Result<Response<Tracked<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // Taken once; hyper never polls a finished future again.
            Answer::Ready(resp) => match resp.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => Poll::Pending,
            },
            Answer::Inner { future, busy, seen } => {
                let Ok(mut resp) = ready!(Pin::new(future).poll(cx));
                let busy = busy.take();
                let mut seen = seen.take();
                if let Some(seen) = &mut seen {
                    seen.answered(&mut resp);
                }
                Poll::Ready(Ok(resp.map(|inner| Tracked {
                    inner,
                    seen,
                    _busy: busy,
                })))
            }
        }
    }
}

/// A connection's request in progress: the connection counts as busy
/// while one exists.
pub struct Busy(Arc<ConnState>);

impl Busy {
    fn new(conn: Arc<ConnState>) -> Self {
        conn.begin_request();
        Self(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that keeps its connection busy until hyper has taken
/// all of it (or dropped it), counting the bytes sent when observed.
pub struct Tracked<B> {
    inner: B,
    /// Dropped (and so recorded) before the connection counts as idle.
    seen: Option<Seen>,
    _busy: Option<Busy>,
}

impl<B> Tracked<B> {
    fn new(inner: B, busy: Busy, seen: Option<Seen>) -> Self {
        Self {
            inner,
            seen,
            _busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let (Some(seen), Some(Ok(frame))) = (&mut this.seen, &frame)
            && let Some(data) = frame.data_ref()
        {
            seen.bytes += data.remaining() as u64;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_targets_with_a_path_reach_warp() {
        for (target, routable) in [
            ("/healthz", true),
            ("/api/directories?limit=1", true),
            ("http://x/healthz", true),
            ("a:1", false),
            ("127.0.0.1:80", false),
            ("*", false),
            // An empty path in the absolute form is "/".
            ("http://x", true),
        ] {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(has_path(&uri), routable, "{target}");
        }
    }
}
