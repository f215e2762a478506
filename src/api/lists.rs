//! `GET /api/directories/{id}/users` — the seed endpoint — and
//! `GET /api/directories/{id}/groups`: a directory's records as a plain JSON
//! array, in creation order.
//!
//! How an answer is made decides what a client can make the server hold:
//! - a small plain list is rendered once per revision and cached;
//! - a large one (over the stream threshold, or over [`RENDER_CAP`] bytes)
//!   is rendered into a body file shared until the next write, and
//!   streamed from it ([`super::spool`]) — no reader holds a snapshot;
//! - a filtered list is rendered in memory when small; a large one is
//!   spooled to a private file and streamed the same way;
//! - a page (`limit`) is at most `limit` records and [`RENDER_CAP`] bytes
//!   (a shorter page, with its `Link`, when records are huge);
//! - uncached bodies in memory share a global byte budget; streams take a
//!   slot fair between organizations (503 with `Retry-After` after a
//!   bounded wait), and a reader that stalls or crawls is dropped;
//! - `HEAD` renders nothing (a page walks its ids for the `Link` only);
//!   it answers a cached body's headers exactly, and otherwise those of the
//!   plain body (the coding is known only once a body is rendered).
//!
//! Bodies of 1 KiB and more are compressed when the client asks
//! (`Accept-Encoding: zstd` or `gzip`, see [`super::encoding`]), each coding
//! with its own ETag: a cached list's codings are kept with it, a large
//! list's in files of their own beside the plain one, a page is compressed
//! for its request. Large bodies are sent with `sendfile(2)` on plain
//! connections ([`crate::net::sendfile`]).
//!
//! Cursor pagination is opt-in so the seed's plain array stays the default:
//! `?limit=N&after=<record id>` answers the next N records in the same array
//! shape, with a `Link: <…>; rel="next"` header while more remain. Users also
//! take `state=active|inactive` and `email=` (exact, case-insensitive, an
//! index lookup).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use uuid::Uuid;
use warp::Filter;
use warp::Reply;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::chunks::ChunkPool;
use super::directories::{parse_directory_id, parse_uuid};
use super::encoding::{self, Accepted, Encoding};
use super::slots::Slot;
use super::spool::{BodyFile, MAX_SNAPSHOT_HOLD, Meter, SpoolError};
use super::{
    ApiError, AppState, Shared, authorization, blocking, get_or_head, json_response, organization,
    respond, with_state,
};
use crate::model::{Directory, DirectoryId, UserState, email_key};
use crate::net::sendfile::FileQueue;
use crate::store::{ListQuery, Store};

/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;

/// Which records a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
            .and(warp::method())
            .and(get_or_head())
            .and(query())
            .and(authorization())
            .and(optional_header("if-none-match"))
            .and(optional_header("accept-encoding"))
            .and(warp::ext::optional::<Arc<FileQueue>>())
            .and(with_state(state))
            .and_then(
                move |id,
                      method: warp::http::Method,
                      q,
                      auth,
                      inm,
                      ae: Option<String>,
                      files,
                      state| {
                    let request = Request {
                        kind,
                        head: method == warp::http::Method::HEAD,
                        if_none_match: inm,
                        accept: Accepted::parse(ae.as_deref()),
                        files,
                    };
                    respond(list(request, id, q, auth, state))
                },
            )
    };
    route(ListKind::Users, state.clone())
        .or(route(ListKind::Groups, state))
        .unify()
        .boxed()
}

/// A header's value as text; absent or not text: `None`.
fn optional_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<String>(name)
        .or(warp::any().map(|| None))
        .unify()
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

    /// The store query these parameters ask for (the limit aside).
    fn query(&self) -> ListQuery {
        ListQuery {
            after: self.after,
            state: self.state,
            email: self.email.clone(),
        }
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
/// The most bytes one answer is rendered into memory: a larger list is
/// streamed from a file, a larger page ends early (with its `Link`).
pub const RENDER_CAP: usize = 16 * 1024 * 1024;
/// Size of each streamed chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes of a body file handed to the kernel at a time (nginx's
/// `sendfile_max_chunk` is 2 MiB): the reader's pace is checked between.
const SENDFILE_BYTES: usize = 2 * 1024 * 1024;
/// Chunk buffers per stream: with the chunk size, a stream's memory bound.
const STREAM_CHUNKS: usize = 4;
/// A client that takes no chunk for this long is dropped.
pub const DEFAULT_STREAM_STALL: Duration = Duration::from_secs(30);
/// What a client refused for lack of a stream slot or memory is told to wait.
const RETRY_AFTER_SECS: u32 = 2;

/// What was asked, besides the path and query.
#[derive(Clone)]
struct Request {
    kind: ListKind,
    head: bool,
    if_none_match: Option<String>,
    accept: Accepted,
    /// The connection's file queue, when it can send files.
    files: Option<Arc<FileQueue>>,
}

async fn list(
    req: Request,
    id: String,
    q: HashMap<String, String>,
    auth: Option<String>,
    state: Shared,
) -> Result<Response, ApiError> {
    let org = organization(&state, auth).await?;
    let dir_id = parse_directory_id(&id)?;
    let dir = state
        .store
        .directory(dir_id)
        .filter(|d| d.organization_id == org)
        .ok_or(ApiError::NotFound)?;
    let kind = req.kind;
    let params = ListParams::parse(kind, &q)?;
    let plain = params == ListParams::default();
    let tag = etag(dir_id, kind, digest_of(&dir, kind), &params);
    if let Some(held) = req.if_none_match.as_deref().and_then(|inm| {
        // The client may hold the body in any coding it takes.
        [Encoding::Identity, Encoding::Zstd, Encoding::Gzip]
            .into_iter()
            .filter(|e| req.accept.accepts(*e))
            .map(|e| e.etag(&tag))
            .find(|t| etag_matches(inm, t))
    }) {
        return Ok(not_modified(&held));
    }
    let want = req.accept.preferred();
    let cached = plain
        .then(|| state.bodies.get(dir_id, kind, dir.revision))
        .flatten();
    if let Some(body) = cached {
        // HEAD included: hyper sends the headers only.
        return cached_answer(&state, dir_id, kind, dir.revision, body, want, &tag).await;
    }
    if req.head && params.limit.is_none() {
        // The headers need nothing read: no body is rendered for a HEAD.
        return Ok(vary(with_etag(json_response(Bytes::new()), &tag)));
    }
    let count = match kind {
        ListKind::Users => dir.user_count,
        ListKind::Groups => dir.group_count,
    };
    if params.limit.is_none() && count > state.stream_threshold {
        return spooled(&state, &dir, &req, &org, &params, count).await;
    }

    let store = state.store.clone();
    let keep = !req.head;
    let (page, coded, params, org) = blocking(move || {
        let page = render(&store, kind, dir_id, &org, &params, keep)?;
        let coded = page
            .as_ref()
            .filter(|_| keep)
            .and_then(|p| encode(&p.body, want));
        Ok((page, coded, params, org))
    })
    .await?;
    let Some(page) = page else {
        // Over the render cap (huge records): stream it instead.
        return spooled(&state, &dir, &req, &org, &params, count).await;
    };
    let tag = etag(dir_id, kind, page.digest, &params);
    let (body, encoding) = if plain {
        let body = Bytes::from(page.body);
        state.bodies.put(dir_id, kind, page.revision, body.clone());
        match coded {
            Some((coded, e)) => {
                let coded = Bytes::from(coded);
                state
                    .bodies
                    .put_coded(dir_id, kind, page.revision, e, coded.clone());
                (coded, e)
            }
            None => (body, Encoding::Identity),
        }
    } else {
        let (body, encoding) = coded.unwrap_or((page.body, Encoding::Identity));
        match budgeted(&state, body) {
            Ok(body) => (body, encoding),
            // Memory for uncached answers is spent (clients not reading
            // theirs): a whole list can still be streamed from disk.
            Err(_) if params.limit.is_none() => {
                return spooled(&state, &dir, &req, &org, &params, count).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut resp = coded_answer(json_response(body), encoding, &tag);
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

/// `body` in `want`, when that is a compression and the body is large
/// enough for it to pay; a failed compression is logged (the body then goes
/// out as it is).
fn encode(body: &[u8], want: Encoding) -> Option<(Vec<u8>, Encoding)> {
    if want == Encoding::Identity || body.len() < encoding::MIN_BYTES {
        return None;
    }
    match encoding::compress(want, body) {
        Ok(coded) => Some((coded, want)),
        Err(e) => {
            tracing::warn!(error = %e, encoding = want.token(), "compressing a list failed");
            None
        }
    }
}

/// A cached plain body's answer in `want`: its coding from the cache, or
/// compressed now (once per revision) and cached.
async fn cached_answer(
    state: &AppState,
    dir: DirectoryId,
    kind: ListKind,
    revision: u64,
    body: Bytes,
    want: Encoding,
    tag: &str,
) -> Result<Response, ApiError> {
    if want == Encoding::Identity || body.len() < encoding::MIN_BYTES {
        return Ok(coded_answer(json_response(body), Encoding::Identity, tag));
    }
    if let Some(coded) = state.bodies.get_coded(dir, kind, revision, want) {
        return Ok(coded_answer(json_response(coded), want, tag));
    }
    let plain = body.clone();
    let Some((coded, encoding)) = blocking(move || Ok(encode(&plain, want))).await? else {
        return Ok(coded_answer(json_response(body), Encoding::Identity, tag));
    };
    let coded = Bytes::from(coded);
    state
        .bodies
        .put_coded(dir, kind, revision, encoding, coded.clone());
    Ok(coded_answer(json_response(coded), encoding, tag))
}

/// A list answer in `encoding`: its ETag (the coding's), its
/// `Content-Encoding`, and `Vary: Accept-Encoding`.
fn coded_answer(resp: Response, encoding: Encoding, tag: &str) -> Response {
    let mut resp = vary(with_etag(resp, &encoding.etag(tag)));
    if encoding != Encoding::Identity {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        );
    }
    resp
}

/// Marks an answer as depending on `Accept-Encoding`.
fn vary(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    resp
}

/// An uncached body, counted against the memory budget for answers in
/// flight until hyper has written (or dropped) it.
fn budgeted(state: &AppState, body: Vec<u8>) -> Result<Bytes, ApiError> {
    struct Held {
        body: Vec<u8>,
        _permit: OwnedSemaphorePermit,
    }
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.body
        }
    }
    let units = u32::try_from(body.len().div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let permit = state
        .render_budget
        .clone()
        .try_acquire_many_owned(units)
        .map_err(|_| {
            tracing::info!(
                bytes = body.len(),
                "the memory for uncached answers is spent"
            );
            ApiError::Busy {
                retry_after_secs: RETRY_AFTER_SECS,
            }
        })?;
    Ok(Bytes::from_owner(Held {
        body,
        _permit: permit,
    }))
}

/// A whole list (plain or filtered) streamed from a body file, under a
/// stream slot; from a snapshot (cut at [`MAX_SNAPSHOT_HOLD`]) when no file
/// can be made. A plain list comes in the client's coding (a compressed
/// one that cannot be made falls back to the plain file); a filtered one
/// is sent as it is.
async fn spooled(
    state: &AppState,
    dir: &Directory,
    req: &Request,
    org: &str,
    params: &ListParams,
    count: u64,
) -> Result<Response, ApiError> {
    let kind = req.kind;
    let slot = state.streams.acquire(org).await.map_err(|_| {
        tracing::info!("no stream slot came free in time");
        ApiError::Busy {
            retry_after_secs: RETRY_AFTER_SECS,
        }
    })?;
    let plain = *params == ListParams::default();
    let shared = |encoding| {
        state.body_files.shared(
            &state.store,
            dir.id,
            kind,
            org,
            dir.revision,
            count,
            encoding,
        )
    };
    let mut encoding = if plain {
        req.accept.preferred()
    } else {
        Encoding::Identity
    };
    let body = if plain {
        match shared(encoding).await {
            Err(e) if encoding != Encoding::Identity && !matches!(e, SpoolError::NotFound) => {
                tracing::warn!(error = %e, "sending a list uncompressed: its compressed body cannot be made");
                encoding = Encoding::Identity;
                shared(encoding).await
            }
            body => body,
        }
    } else {
        state
            .body_files
            .private(&state.store, dir.id, kind, org, params.query(), count)
            .await
    };
    match body {
        Ok(body) => {
            let tag = etag(dir.id, kind, body.digest, params);
            let resp = stream_body(state, slot, body, req.files.clone());
            Ok(coded_answer(resp, encoding, &tag))
        }
        Err(SpoolError::NotFound) => Err(ApiError::NotFound),
        // A filtered list that does not fit on disk now: retry later (a
        // plain list is still served, from a snapshot).
        Err(SpoolError::NoRoom) if !plain => Err(ApiError::Busy {
            retry_after_secs: RETRY_AFTER_SECS,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "streaming a list from a snapshot instead of a file");
            let tag = etag(dir.id, kind, digest_of(dir, kind), params);
            let resp = stream_snapshot(state, slot, kind, dir.id, org.to_owned(), params.query());
            Ok(coded_answer(resp, Encoding::Identity, &tag))
        }
    }
}

/// A streamed JSON answer: chunks sent into `produce`'s channel arrive at
/// the client; an `Err` chunk aborts the response (the client sees a
/// truncated body, never a well-formed partial list).
fn stream_response(
    length: Option<u64>,
    produce: impl FnOnce(&dyn Fn(Result<Bytes, std::io::Error>) -> bool) + Send + 'static,
    stall: Duration,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_CHUNKS);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let send = |chunk: Result<Bytes, std::io::Error>| {
            matches!(
                handle.block_on(tokio::time::timeout(stall, tx.send(chunk))),
                Ok(Ok(()))
            )
        };
        produce(&send);
    });
    streamed(tokio_stream::wrappers::ReceiverStream::new(rx), length)
}

/// The JSON response whose body is `chunks` (an `Err` aborts it).
fn streamed(
    chunks: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    length: Option<u64>,
) -> Response {
    let mut resp = warp::reply::stream(chunks).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(len) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// Streams a body file (complete or still being written): with
/// `sendfile(2)` when the connection can, else read through chunk buffers.
fn stream_body(
    state: &AppState,
    slot: Slot,
    body: Arc<BodyFile>,
    files: Option<Arc<FileQueue>>,
) -> Response {
    let pace = state.pace;
    if let Some(files) = files {
        return send_file(pace, slot, body, files);
    }
    let handle = tokio::runtime::Handle::current();
    stream_response(
        body.complete_len(),
        move |send| {
            let _slot = slot;
            let mut pool = ChunkPool::new(STREAM_CHUNKS, CHUNK_BYTES);
            super::spool::stream_file(&handle, &body, &mut pool, &pace, send);
        },
        pace.stall,
    )
}

/// Sends a body file through the connection's file queue: each chunk handed
/// to hyper is a placeholder for up to [`SENDFILE_BYTES`] of the file, which
/// the connection's writer sends with `sendfile(2)`. The file is followed
/// while it is written; a reader below the minimum rate is dropped between
/// chunks, one that takes nothing by the connection's write stall.
fn send_file(
    pace: super::spool::Pace,
    slot: Slot,
    body: Arc<BodyFile>,
    files: Arc<FileQueue>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let length = body.complete_len();
    let followed = body.clone();
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, connection) = (finished.clone(), files.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let mut meter = Meter::new(pace);
        let mut at = 0u64;
        let taken = || connection.sent();
        let failure = super::spool::follow(&followed, &tx, pace.stall, taken, |written| {
            let len = usize::try_from(written - at)
                .unwrap_or(usize::MAX)
                .min(SENDFILE_BYTES);
            if meter.too_slow(Instant::now(), at) {
                tracing::info!(
                    bytes = at,
                    "dropping a list reader below the minimum transfer rate"
                );
                return Err("reader too slow");
            }
            followed.will_need(at, len);
            let stretch = (at, len);
            at += len as u64;
            Ok((stretch, at))
        })
        .await;
        match failure {
            None => done.store(true, std::sync::atomic::Ordering::Release),
            Some(why) => tracing::debug!(why, "a file body ends early"),
        }
    });
    streamed(
        Placeholders {
            stretches: rx,
            files,
            body,
            finished,
        },
        length,
    )
}

/// A file body as hyper takes it: each stretch of the file is queued on
/// the connection only when hyper takes its placeholder, so the queue never
/// holds a stretch of a body hyper dropped unread (a HEAD's, say). A body
/// whose stretches stop before the end is ended with an error, so the
/// client sees an aborted transfer, never a complete-looking partial list.
struct Placeholders {
    stretches: tokio::sync::mpsc::Receiver<Result<(u64, usize), std::io::Error>>,
    files: Arc<FileQueue>,
    body: Arc<BodyFile>,
    /// Set once every stretch of the body has been handed over.
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl futures_util::Stream for Placeholders {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.stretches.poll_recv(cx).map(|stretch| match stretch {
            Some(s) => Some(s.map(|(at, len)| this.files.push(this.body.clone(), at, len))),
            None if this
                .finished
                .swap(true, std::sync::atomic::Ordering::AcqRel) =>
            {
                None
            }
            None => Some(Err(std::io::Error::other(
                "the list stopped before its end",
            ))),
        })
    }
}

/// Streams a list straight from one snapshot — only when no body file can
/// be made — cut once the snapshot has been held [`MAX_SNAPSHOT_HOLD`].
fn stream_snapshot(
    state: &AppState,
    slot: Slot,
    kind: ListKind,
    dir: DirectoryId,
    org: String,
    query: ListQuery,
) -> Response {
    let store = state.store.clone();
    let stall = state.pace.stall;
    stream_response(
        None,
        move |send| {
            let _slot = slot;
            let mut pool = ChunkPool::new(STREAM_CHUNKS, CHUNK_BYTES);
            if let Err(e) = produce(&store, kind, dir, &org, &query, &mut pool, stall, send) {
                tracing::warn!(error = %e, "streaming a list failed midway");
                send(Err(std::io::Error::other("list could not be read")));
            }
        },
        stall,
    )
}

/// Renders a list chunk by chunk into `send`; stops early when the client
/// is gone or has stopped reading.
///
/// # Errors
/// A storage failure, or the snapshot held too long.
#[allow(clippy::too_many_arguments)]
fn produce(
    store: &Store,
    kind: ListKind,
    dir: DirectoryId,
    org: &str,
    query: &ListQuery,
    pool: &mut ChunkPool,
    stall: Duration,
    send: &dyn Fn(Result<Bytes, std::io::Error>) -> bool,
) -> Result<(), crate::store::StoreError> {
    let snapshot = store.snapshot()?;
    let opened = Instant::now();
    let Some(mut buf) = pool.take(stall) else {
        return Ok(());
    };
    buf.push(b'[');
    let mut first = true;
    let mut alive = true;
    let mut expired = false;
    // The directory may have been deleted since the status line was chosen:
    // it then streams as empty.
    if snapshot
        .directory(dir)?
        .is_some_and(|d| d.organization_id == org)
    {
        let visit = |_: Uuid, json: &[u8]| {
            if buf.len() + json.len() + 2 > pool.chunk_size() && buf.len() > 1 {
                if opened.elapsed() > MAX_SNAPSHOT_HOLD {
                    expired = true;
                    return ControlFlow::Break(());
                }
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
            ListKind::Users => snapshot.visit_user_json(dir, query, visit)?,
            ListKind::Groups => snapshot.visit_group_json(dir, query, visit)?,
        }
    }
    if expired {
        return Err(crate::store::StoreError::Io(
            "the list took longer to send than a snapshot may be held".into(),
        ));
    }
    if alive {
        buf.push(b']');
        send(Ok(pool.seal(buf)));
    }
    Ok(())
}

/// The digest of a directory's list of `kind`: the same on every instance
/// holding the same records.
fn digest_of(d: &Directory, kind: ListKind) -> u128 {
    match kind {
        ListKind::Users => d.users_digest,
        ListKind::Groups => d.groups_digest,
    }
}

/// A strong validator: the directory, the list, the digest of its records
/// (see [`crate::model::json_digest`]) and the query that shaped the body —
/// so a 304 can only ever confirm the very same bytes, and two instances
/// holding the same data give the same ETag.
fn etag(dir: DirectoryId, kind: ListKind, digest: u128, params: &ListParams) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(dir.0.as_bytes());
    h.update(kind.segment().as_bytes());
    h.update(digest.to_be_bytes());
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
    let mut resp = vary(with_etag(Response::new(Bytes::new().into()), tag));
    *resp.status_mut() = warp::http::StatusCode::NOT_MODIFIED;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One rendered list or page.
pub struct Page {
    pub body: Vec<u8>,
    /// When more records remain after a page: the id of its last record.
    pub next: Option<Uuid>,
    /// The directory revision the body was read at (what caches key on).
    pub revision: u64,
    /// The list's digest at that revision (what ETags are made of).
    pub digest: u128,
}

/// Renders one list (or page) from one snapshot, into at most
/// [`RENDER_CAP`] bytes: a page that would pass it ends early (its `next`
/// says where to go on); a whole list that would pass it is `None` (stream
/// it instead). Without `keep`, only the page's bounds are read (for HEAD).
///
/// # Errors
/// 404 when the directory does not exist or belongs to another organization.
pub fn render(
    store: &Store,
    kind: ListKind,
    dir: DirectoryId,
    org: &str,
    params: &ListParams,
    keep: bool,
) -> Result<Option<Page>, ApiError> {
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
    let mut out = Vec::with_capacity(if keep {
        (2 + expected.saturating_mul(match kind {
            ListKind::Users => 900,
            ListKind::Groups => 400,
        }))
        .min(RENDER_CAP)
    } else {
        2
    });
    out.push(b'[');
    let (mut count, mut last, mut more, mut over) = (0usize, None, false, false);
    let visit = |id: Uuid, json: &[u8]| {
        if params.limit == Some(count) {
            more = true;
            return ControlFlow::Break(());
        }
        if keep {
            if out.len() + json.len() + 2 > RENDER_CAP && count > 0 {
                // A page ends here; a whole list is streamed instead.
                more = true;
                over = true;
                return ControlFlow::Break(());
            }
            if count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json);
        }
        count += 1;
        last = Some(id);
        ControlFlow::Continue(())
    };
    let query = params.query();
    match kind {
        ListKind::Users => snapshot.visit_user_json(dir, &query, visit)?,
        ListKind::Groups => snapshot.visit_group_json(dir, &query, visit)?,
    }
    if over && params.limit.is_none() {
        return Ok(None);
    }
    out.push(b']');
    Ok(Some(Page {
        body: out,
        next: if more { last } else { None },
        revision: directory.revision,
        digest: digest_of(&directory, kind),
    }))
}
