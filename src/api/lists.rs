//! `GET /api/directories/{id}/users` — the seed endpoint — and
//! `GET /api/directories/{id}/groups`: a directory's records as a plain JSON
//! array, in creation order.
//!
//! Cursor pagination is opt-in so the seed's plain array stays the default:
//! `?limit=N&after=<record id>` answers the next N records in the same array
//! shape, with a `Link: <…>; rel="next"` header while more remain. Users also
//! take `state=active|inactive` and `email=` (exact, case-insensitive, an
//! index lookup).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use bytes::Bytes;

use uuid::Uuid;
use warp::Filter;
use warp::Reply;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::chunks::ChunkPool;
use super::directories::{parse_directory_id, parse_uuid};
use super::{
    ApiError, AppState, Shared, authorization, blocking, get_or_head, json_response, organization,
    respond, with_state,
};
use crate::model::{DirectoryId, UserState, email_key};
use crate::store::{ListQuery, Store};

/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;

/// Which records a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Users,
    Groups,
}

impl ListKind {
    fn segment(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Groups => "groups",
        }
    }
}

pub fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let route = |kind: ListKind, state: Shared| {
        warp::path("directories")
            .and(warp::path::param::<String>())
            .and(warp::path(kind.segment()))
            .and(warp::path::end())
            .and(get_or_head())
            .and(query())
            .and(authorization())
            .and(
                warp::header::optional::<String>("if-none-match")
                    .or(warp::any().map(|| None))
                    .unify(),
            )
            .and(with_state(state))
            .and_then(move |id, q, auth, inm, state| respond(list(kind, id, q, auth, inm, state)))
    };
    route(ListKind::Users, state.clone())
        .or(route(ListKind::Groups, state))
        .unify()
        .boxed()
}

/// The query string as pairs; a malformed one is a 400 naming `query`.
fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = warp::Rejection> + Clone {
    warp::query::<HashMap<String, String>>()
}

/// The parsed list parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    pub limit: Option<usize>,
    pub after: Option<Uuid>,
    pub state: Option<UserState>,
    /// Lower-cased.
    pub email: Option<String>,
}

impl ListParams {
    /// Parses and bounds the query parameters; unknown ones are ignored.
    ///
    /// # Errors
    /// 400 naming the parameter that is malformed or out of range.
    pub fn parse(kind: ListKind, q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match q.get("limit") {
            None => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
                _ => {
                    return Err(ApiError::validation(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        let after = match q.get("after") {
            None => None,
            Some(v) => Some(
                parse_uuid(v)
                    .ok_or_else(|| ApiError::validation("after", "must be a record id (UUID)"))?,
            ),
        };
        let (state, email) = match kind {
            ListKind::Groups => (None, None),
            ListKind::Users => {
                let state = match q.get("state") {
                    None => None,
                    Some(v) => Some(UserState::parse(v).ok_or_else(|| {
                        ApiError::validation("state", "must be `active` or `inactive`")
                    })?),
                };
                let email = match q.get("email") {
                    None => None,
                    Some(v) if v.trim().is_empty() || v.len() > 256 => {
                        return Err(ApiError::validation(
                            "email",
                            "must be a non-empty email address",
                        ));
                    }
                    Some(v) => Some(email_key(v)),
                };
                (state, email)
            }
        };
        Ok(Self {
            limit,
            after,
            state,
            email,
        })
    }

    /// The query string of the page after `last`.
    fn next_query(&self, last: Uuid) -> String {
        let mut pairs = vec![
            ("limit", self.limit.unwrap_or(MAX_LIMIT).to_string()),
            ("after", last.to_string()),
        ];
        if let Some(s) = self.state {
            pairs.push(("state", s.as_str().to_owned()));
        }
        if let Some(e) = &self.email {
            pairs.push(("email", e.clone()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// Records in a list beyond which it is streamed rather than rendered whole.
pub const DEFAULT_STREAM_THRESHOLD: u64 = 10_000;
/// Size of each streamed chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunk buffers per stream: with the chunk size, a stream's memory bound.
const STREAM_CHUNKS: usize = 4;
/// A client that takes no chunk for this long is dropped (its snapshot
/// would otherwise stay pinned).
pub const DEFAULT_STREAM_STALL: Duration = Duration::from_secs(30);

async fn list(
    kind: ListKind,
    id: String,
    q: HashMap<String, String>,
    auth: Option<String>,
    if_none_match: Option<String>,
    state: Shared,
) -> Result<Response, ApiError> {
    let org = organization(&state, auth).await?;
    let dir_id = parse_directory_id(&id)?;
    let dir = state
        .store
        .directory(dir_id)
        .filter(|d| d.organization_id == org)
        .ok_or(ApiError::NotFound)?;
    let params = ListParams::parse(kind, &q)?;
    let plain = params == ListParams::default();
    let tag = etag(dir_id, kind, dir.revision, &params);
    if if_none_match.is_some_and(|v| etag_matches(&v, &tag)) {
        return Ok(not_modified(&tag));
    }
    if plain {
        if let Some(body) = state.bodies.get(dir_id, kind, dir.revision) {
            return Ok(with_etag(json_response(body), &tag));
        }
        let count = match kind {
            ListKind::Users => dir.user_count,
            ListKind::Groups => dir.group_count,
        };
        if count > state.stream_threshold {
            return Ok(with_etag(stream(&state, kind, dir_id, org).await, &tag));
        }
    }
    let store = state.store.clone();
    let (page, params) = blocking(move || {
        let page = render(&store, kind, dir_id, &org, &params)?;
        Ok((page, params))
    })
    .await?;
    let body = Bytes::from(page.body);
    if plain {
        state.bodies.put(dir_id, kind, page.revision, body.clone());
    }
    let mut resp = with_etag(
        json_response(body),
        &etag(dir_id, kind, page.revision, &params),
    );
    if let Some(last) = page.next {
        let link = format!(
            "</api/directories/{dir_id}/{}?{}>; rel=\"next\"",
            kind.segment(),
            params.next_query(last)
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// A strong validator: the directory, the list, the directory's revision
/// (bumped by every write that touches it) and the query that shaped the
/// body — so a 304 can only ever confirm the very same resource.
fn etag(dir: DirectoryId, kind: ListKind, revision: u64, params: &ListParams) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(dir.0.as_bytes());
    h.update(kind.segment().as_bytes());
    h.update(revision.to_le_bytes());
    h.update(params.limit.unwrap_or(0).to_le_bytes());
    h.update(params.after.map_or([0; 16], |a| *a.as_bytes()));
    h.update(params.state.map_or("", UserState::as_str).as_bytes());
    h.update([0]);
    h.update(params.email.as_deref().unwrap_or("").as_bytes());
    let digest = h.finalize();
    format!("\"{}\"", hex::encode(&digest[..16]))
}

fn etag_matches(header: &str, tag: &str) -> bool {
    header
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

fn with_etag(mut resp: Response, tag: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn not_modified(tag: &str) -> Response {
    let mut resp = with_etag(Response::new(Bytes::new().into()), tag);
    *resp.status_mut() = warp::http::StatusCode::NOT_MODIFIED;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Streams a whole list from one snapshot through a bounded channel: memory
/// stays at a few recycled chunks however large the directory, and the first
/// bytes leave before the last record is read.
async fn stream(state: &AppState, kind: ListKind, dir: DirectoryId, org: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_CHUNKS);
    let store = state.store.clone();
    let handle = tokio::runtime::Handle::current();
    // Bounds the blocking threads (and pinned snapshots) streams may hold.
    let permit = state.streams.clone().acquire_owned().await;
    let stall = state.stream_stall;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let send = |chunk: Result<Bytes, std::io::Error>| {
            matches!(
                handle.block_on(tokio::time::timeout(stall, tx.send(chunk))),
                Ok(Ok(()))
            )
        };
        let mut pool = ChunkPool::new(STREAM_CHUNKS, CHUNK_BYTES);
        if let Err(e) = produce(&store, kind, dir, &org, &mut pool, stall, &send) {
            tracing::error!(error = %e, "streaming a list failed midway");
            // An error frame aborts the response: the client sees a
            // truncated body, never a well-formed partial list.
            send(Err(std::io::Error::other("list could not be read")));
        }
    });
    let mut resp =
        warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Renders a list chunk by chunk into `send`; stops early when the client
/// is gone or has stopped reading.
fn produce(
    store: &Store,
    kind: ListKind,
    dir: DirectoryId,
    org: &str,
    pool: &mut ChunkPool,
    stall: Duration,
    send: &dyn Fn(Result<Bytes, std::io::Error>) -> bool,
) -> Result<(), crate::store::StoreError> {
    let snapshot = store.snapshot()?;
    let Some(mut buf) = pool.take(stall) else {
        return Ok(());
    };
    buf.push(b'[');
    let mut first = true;
    let mut alive = true;
    // The directory may have been deleted since the status line was chosen:
    // it then streams as empty.
    if snapshot
        .directory(dir)?
        .is_some_and(|d| d.organization_id == org)
    {
        let visit = |_: Uuid, json: &[u8]| {
            if buf.len() + json.len() + 2 > pool.chunk_size() && buf.len() > 1 {
                let full = std::mem::take(&mut buf);
                match pool.take(stall) {
                    Some(next) if send(Ok(pool.seal(full))) => buf = next,
                    _ => {
                        alive = false;
                        return ControlFlow::Break(());
                    }
                }
            }
            if !first {
                buf.push(b',');
            }
            first = false;
            buf.extend_from_slice(json);
            ControlFlow::Continue(())
        };
        match kind {
            ListKind::Users => snapshot.visit_user_json(dir, &ListQuery::default(), visit)?,
            ListKind::Groups => snapshot.visit_group_json(dir, &ListQuery::default(), visit)?,
        }
    }
    if alive {
        buf.push(b']');
        send(Ok(pool.seal(buf)));
    }
    Ok(())
}

/// One rendered list or page.
pub struct Page {
    pub body: Vec<u8>,
    /// When more records remain after a page: the id of its last record.
    pub next: Option<Uuid>,
    /// The directory revision the body was read at.
    pub revision: u64,
}

/// Renders one list (or page) from one snapshot.
///
/// # Errors
/// 404 when the directory does not exist or belongs to another organization.
pub fn render(
    store: &Store,
    kind: ListKind,
    dir: DirectoryId,
    org: &str,
    params: &ListParams,
) -> Result<Page, ApiError> {
    let snapshot = store.snapshot()?;
    let directory = match snapshot.directory(dir)? {
        Some(d) if d.organization_id == org => d,
        _ => return Err(ApiError::NotFound),
    };
    let expected = match kind {
        ListKind::Users => directory.user_count,
        ListKind::Groups => directory.group_count,
    } as usize;
    let expected = params.limit.map_or(expected, |l| l.min(expected));
    let mut out = Vec::with_capacity(
        2 + expected.saturating_mul(match kind {
            ListKind::Users => 900,
            ListKind::Groups => 400,
        }),
    );
    out.push(b'[');
    let (mut count, mut last, mut more) = (0usize, None, false);
    let visit = |id: Uuid, json: &[u8]| {
        if params.limit == Some(count) {
            more = true;
            return ControlFlow::Break(());
        }
        if count > 0 {
            out.push(b',');
        }
        out.extend_from_slice(json);
        count += 1;
        last = Some(id);
        ControlFlow::Continue(())
    };
    let query = ListQuery {
        after: params.after,
        state: params.state,
        email: params.email.clone(),
    };
    match kind {
        ListKind::Users => snapshot.visit_user_json(dir, &query, visit)?,
        ListKind::Groups => snapshot.visit_group_json(dir, &query, visit)?,
    }
    out.push(b']');
    Ok(Page {
        body: out,
        next: if more { last } else { None },
        revision: directory.revision,
    })
}
