//! [`FrontDoor`]: the hyper service in front of warp. It refuses request
//! targets warp cannot take (authority form `CONNECT a:1`, asterisk form
//! `OPTIONS *`) with a JSON 400 before warp sees them.
//!
//! It must not route, authenticate or read bodies: everything else goes
//! to warp unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use warp::Reply;

use crate::api::ApiError;

/// The per-connection service: a target check around `inner` (warp's
/// routes as a hyper service).
#[derive(Clone)]
pub struct FrontDoor<S> {
    inner: S,
}

impl<S> FrontDoor<S> {
    /// `inner`, behind the target check.
    pub fn new(inner: S) -> Self {
        Self { inner }
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
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Answer<S::Future, B>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if !has_path(req.uri()) {
            tracing::debug!(method = %req.method(), target = %req.uri(), "request target is not a path");
            let refusal = ApiError::validation(
                "path",
                "the request target must be a path (origin form), like /healthz",
            )
            .into_response();
            return Answer::Ready(Some(Response::<B>::from(refusal)));
        }
        Answer::Inner(self.inner.call(req))
    }
}

/// The response future of [`FrontDoor`].
pub enum Answer<F, B> {
    /// Answered without warp.
    Ready(Option<Response<B>>),
    /// warp's answer.
    Inner(F),
}

impl<F, B> Future for Answer<F, B>
where
    F: Future<Output = Result<Response<B>, Infallible>> + Unpin,
    B: Unpin,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // Taken once; hyper never polls a finished future again.
            Answer::Ready(resp) => match resp.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => Poll::Pending,
            },
            Answer::Inner(future) => Pin::new(future).poll(cx),
        }
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
            // An empty path in the absolute form is "/".
            ("http://x", true),
            ("a:1", false),
            ("127.0.0.1:80", false),
            ("*", false),
        ] {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(has_path(&uri), routable, "{target}");
        }
    }
}
