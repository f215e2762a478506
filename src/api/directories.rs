//! `GET /api/directories` and `GET /api/directories/{id}`: the caller's
//! organization's directories, answered from the store's in-memory directory
//! map. Another organization's directory is a 404 identical to a nonexistent
//! one.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::{
    ApiError, Shared, authorization, get_or_head, json_response, organization, respond, with_state,
};
use crate::model::DirectoryId;

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let list = warp::path!("directories")
        .and(get_or_head())
        .and(authorization())
        .and(with_state(state.clone()))
        .and_then(|auth, state| respond(list(auth, state)));
    let one = warp::path!("directories" / String)
        .and(get_or_head())
        .and(authorization())
        .and(with_state(state))
        .and_then(|id, auth, state| respond(get(id, auth, state)));
    list.or(one).unify().boxed()
}

/// Parses the `{id}` path parameter.
///
/// # Errors
/// 400 naming `id` when it is not a UUID.
pub fn parse_directory_id(id: &str) -> Result<DirectoryId, ApiError> {
    parse_uuid(id)
        .map(DirectoryId)
        .ok_or_else(|| ApiError::validation("id", "must be a UUID"))
}

/// A UUID in its canonical hyphenated form only (what every id rollcall
/// hands out looks like), so `{…}`, `urn:uuid:` and unhyphenated spellings
/// are refused like any other malformed id.
pub fn parse_uuid(s: &str) -> Option<uuid::Uuid> {
    (s.len() == 36)
        .then(|| uuid::Uuid::try_parse(s).ok())
        .flatten()
}

async fn list(auth: Option<String>, state: Shared) -> Result<Response, ApiError> {
    let org = organization(&state, auth).await?;
    let directories = state.store.directories_of_org(&org);
    let mut out = Vec::with_capacity(directories.len() * 320 + 2);
    out.push(b'[');
    for (i, d) in directories.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&d.to_json());
    }
    out.push(b']');
    Ok(json_response(out))
}

async fn get(id: String, auth: Option<String>, state: Shared) -> Result<Response, ApiError> {
    let org = organization(&state, auth).await?;
    let id = parse_directory_id(&id)?;
    match state.store.directory(id) {
        Some(d) if d.organization_id == org => Ok(json_response(d.to_json())),
        _ => Err(ApiError::NotFound),
    }
}
