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

use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::directories::parse_directory_id;
use super::{
    ApiError, AppState, authorization, blocking, get_or_head, json_response, organization, respond,
    with_state,
};
use crate::model::{DirectoryId, UserState, email_key};
use crate::store::{ListQuery, Store};

/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;

/// Which records a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let route = |kind: ListKind, state: AppState| {
        warp::path("directories")
            .and(warp::path::param::<String>())
            .and(warp::path(kind.segment()))
            .and(warp::path::end())
            .and(get_or_head())
            .and(query())
            .and(authorization())
            .and(with_state(state))
            .and_then(move |id, q, auth, state| respond(list(kind, id, q, auth, state)))
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
                Uuid::try_parse(v)
                    .map_err(|_| ApiError::validation("after", "must be a record id (UUID)"))?,
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

async fn list(
    kind: ListKind,
    id: String,
    q: HashMap<String, String>,
    auth: Option<String>,
    state: AppState,
) -> Result<Response, ApiError> {
    let org = organization(&state, auth).await?;
    let dir = parse_directory_id(&id)?;
    let params = ListParams::parse(kind, &q)?;
    let store = state.store.clone();
    let (body, next, params) = blocking(move || {
        let (body, next) = render(&store, kind, dir, &org, &params)?;
        Ok((body, next, params))
    })
    .await?;
    let mut resp = json_response(body);
    if let Some(last) = next {
        let link = format!(
            "</api/directories/{dir}/{}?{}>; rel=\"next\"",
            kind.segment(),
            params.next_query(last)
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// Renders one list (or page) from one snapshot. Returns the body and, when
/// more records remain after a page, the id of its last record.
///
/// # Errors
/// 404 when the directory does not exist or belongs to another organization.
pub fn render(
    store: &Store,
    kind: ListKind,
    dir: DirectoryId,
    org: &str,
    params: &ListParams,
) -> Result<(Vec<u8>, Option<Uuid>), ApiError> {
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
    Ok((out, if more { last } else { None }))
}
