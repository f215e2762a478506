//! [`FrontDoor`]: the hyper service in front of warp. It refuses request
//! targets warp cannot take (authority form `CONNECT a:1`, asterisk form
//! `OPTIONS *`) with a JSON 400 before warp sees them, and marks its
//! connection busy from a request's arrival until its response body is
//! done (so the connection cap knows which connections are idle).
//!
//! It must not route, authenticate or read bodies: everything else goes
//! to warp unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, Uri};
use warp::Reply;

use super::cap::ConnState;
use crate::api::ApiError;

/// The per-connection service: a target check and busy/idle marking around
/// `inner` (warp's routes as a hyper service).
#[derive(Clone)]
pub struct FrontDoor<S> {
    inner: S,
    conn: Arc<ConnState>,
}

impl<S> FrontDoor<S> {
    /// `inner` serving the connection whose state is `conn`.
    pub fn new(inner: S, conn: Arc<ConnState>) -> Self {
        Self { inner, conn }
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

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.conn.clone());
        if !has_path(req.uri()) {
            tracing::debug!(method = %req.method(), target = %req.uri(), "request target is not a path");
            let refusal = ApiError::validation(
                "path",
                "the request target must be a path (origin form), like /healthz",
            )
            .into_response();
            let resp = Response::<B>::from(refusal);
            return Answer::Ready(Some(resp.map(|body| Tracked::new(body, busy))));
        }
        Answer::Inner {
            future: self.inner.call(req),
            busy: Some(busy),
        }
    }
}

/// The response future of [`FrontDoor`].
pub enum Answer<F, B> {
    /// Answered without warp.
    Ready(Option<Response<Tracked<B>>>),
    /// warp's answer, to be tracked.
    Inner { future: F, busy: Option<Busy> },
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
            Answer::Inner { future, busy } => {
                let Ok(resp) = ready!(Pin::new(future).poll(cx));
                let busy = busy.take();
                Poll::Ready(Ok(resp.map(|inner| Tracked { inner, _busy: busy })))
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
/// all of it (or dropped it).
pub struct Tracked<B> {
    inner: B,
    _busy: Option<Busy>,
}

impl<B> Tracked<B> {
    fn new(inner: B, busy: Busy) -> Self {
        Self {
            inner,
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
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
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
