//! `GET /api/spec.json`: the OpenAPI 3 description of every route, kept in
//! the repository (`api/openapi.json`) and checked against the code by the
//! tests (routes, methods, schema keys) and by schemathesis in CI.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::get_or_head;

/// The document, as served.
pub const OPENAPI: &str = include_str!("../../api/openapi.json");

pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path!("spec.json")
        .and(get_or_head())
        .map(|| {
            let mut resp = Response::new(OPENAPI.into());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        })
        .boxed()
}
