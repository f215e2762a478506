//! `GET /healthz`: answers without authentication, touches nothing.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::get_or_head;

pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path!("healthz")
        .and(get_or_head())
        .map(|| {
            let mut resp = Response::new(r#"{"status":"ok"}"#.into());
            resp.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            resp
        })
        .boxed()
}
