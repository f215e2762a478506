//! SCIM resources as rollcall keeps them: the bridge between a SCIM User or
//! Group and the Char records of its directory.
//!
//! A SCIM user is a [`DirectoryUser`] whose `raw_attributes` is the resource
//! as last stored (`schemas`, `id` and every attribute and extension the
//! identity provider sent; never `meta`, which is derived, nor `password`);
//! its Char fields are mapped from it (`user_record`). A SCIM group is a
//! [`DirectoryGroup`] the same way, with its `members` kept as memberships,
//! not in the resource, so a member change is one index write and a big
//! group is never rewritten whole. The attributes filters look up are kept
//! in the SCIM index ([`ScimKey`]).
//!
//! Every write here runs inside one committer transaction and checks
//! everything it may refuse (`If-Match`, uniqueness, members) before it
//! writes anything: a refusal leaves the transaction as it found it. Times
//! are the server's, made strictly increasing per resource, so
//! `meta.lastModified` (and the Char `updated_at`) never goes backwards and
//! `meta.version` changes with every change.
//!
//! Nothing here speaks HTTP or touches redb directly.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::ScimType;
use super::filter::{self, Filter, IndexPlan, Indexable};
use super::patch::{self, PatchRequest};
use crate::ingest::apply::authkit_link;
use crate::model::{
    Directory, DirectoryGroup, DirectoryGroupId, DirectoryId, DirectoryUser, DirectoryUserId,
    Email, Provenance, SCIM_DIRECTORY_PREFIX, ScimDirectory, ScimKey, ScimProvider, Timestamp,
    UserState, email_key,
};
use crate::store::{Snapshot, StoreError, Tx};

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// The most resources one list or search answers (`filter.maxResults`).
pub const MAX_RESULTS: u64 = 1000;

/// The largest stored form of one resource (its JSON, without `meta` and
/// group members): an identity provider's user is a few KiB, and a page of
/// [`MAX_RESULTS`] must stay a bounded answer.
pub const MAX_RESOURCE_BYTES: usize = 64 * 1024;

/// Roughly how much one page may hold: past this, a page ends early (with
/// at least one resource) and the client asks for the next with
/// `startIndex`, as RFC 7644 §3.4.2.4 allows.
pub const PAGE_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// The most attribute names `attributes` or `excludedAttributes` may list.
pub const MAX_SELECTORS: usize = 100;
/// The longest `attributes` or `excludedAttributes` value.
pub const MAX_SELECTOR_BYTES: usize = 4096;

/// The most operations of a PATCH that is not member-only, and the most
/// bytes their values may hold together outside `members`: such a PATCH is
/// applied by the whole engine inside the writer every write waits for,
/// and a resource cannot hold more than [`MAX_RESOURCE_BYTES`] anyway.
pub const MAX_ATTRIBUTE_OPERATIONS: usize = 100;

/// What one rendered group member costs in a page, roughly.
const MEMBER_BYTES: usize = 160;

/// A refusal in SCIM terms: the HTTP status, the RFC 7644 `scimType` where
/// it names one, and a detail for the identity provider's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    /// A 400 with a `scimType`.
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    /// A 404 for a resource this directory does not hold.
    pub fn not_found(kind: ResourceKind, id: &str) -> Self {
        Self {
            status: 404,
            scim_type: None,
            detail: format!("{} {id} not found", kind.name()),
        }
    }

    fn uniqueness(detail: impl Into<String>) -> Self {
        Self {
            status: 409,
            scim_type: Some(ScimType::Uniqueness),
            detail: detail.into(),
        }
    }

    fn precondition() -> Self {
        Self {
            status: 412,
            scim_type: None,
            detail: "the resource has changed: its version does not match If-Match".into(),
        }
    }
}

impl From<patch::PatchError> for ScimError {
    fn from(e: patch::PatchError) -> Self {
        Self::bad(e.scim_type, e.message)
    }
}

impl From<filter::FilterError> for ScimError {
    fn from(e: filter::FilterError) -> Self {
        Self::bad(e.scim_type(), e.to_string())
    }
}

/// What a write returns: a storage failure (the commit fails), or the
/// SCIM answer — the stored resource or a refusal that wrote nothing.
pub type Written<T> = Result<Result<T, ScimError>, StoreError>;

/// Users or groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    /// `User` or `Group`, as `meta.resourceType` says.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    /// The endpoint: `Users` or `Groups`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::User => "Users",
            Self::Group => "Groups",
        }
    }

    /// The core schema URN.
    pub fn schema(self) -> &'static str {
        match self {
            Self::User => USER_SCHEMA,
            Self::Group => GROUP_SCHEMA,
        }
    }
}

/// One stored resource, ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub kind: ResourceKind,
    pub id: Uuid,
    /// The stored form: no `meta`, no `members`.
    pub resource: Map<String, Value>,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// A group's member ids, when they were asked for.
    pub members: Option<Vec<Uuid>>,
    /// The stored form's length in bytes.
    pub size: usize,
}

impl Stored {
    /// `meta.version` and the `ETag`: a digest of the stored form and its
    /// time, so it changes with every change (a membership change re-stamps
    /// its group) and is the same on every read.
    pub fn version(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(serde_json::to_vec(&self.resource).unwrap_or_default());
        hash.update(self.updated.0.to_be_bytes());
        format!("W/\"{}\"", hex::encode(&hash.finalize()[..8]))
    }

    /// The resource as SCIM answers it: the stored form with `members`
    /// (when loaded) and `meta`, projected by `projection`. `base` is the
    /// directory's SCIM base URL.
    pub fn render(&self, base: &str, projection: &Projection) -> Value {
        let mut out = self.resource.clone();
        if let Some(members) = &self.members {
            let list = members
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "value": m.to_string(),
                        "$ref": format!("{base}/Users/{m}"),
                        "type": "User",
                    })
                })
                .collect();
            out.insert("members".into(), Value::Array(list));
        }
        out.insert(
            "meta".into(),
            serde_json::json!({
                "resourceType": self.kind.name(),
                "created": self.created.to_rfc3339(),
                "lastModified": self.updated.to_rfc3339(),
                "location": format!("{base}/{}/{}", self.kind.endpoint(), self.id),
                "version": self.version(),
            }),
        );
        projection.apply(self.kind, &mut out);
        Value::Object(out)
    }

    /// Whether `if_match` (an `If-Match` header) allows changing this
    /// version: absent, or naming it ([`Stored::named_by`]).
    fn allows(&self, if_match: Option<&str>) -> bool {
        if_match.is_none_or(|tags| self.named_by(tags))
    }

    /// Whether an `If-Match` / `If-None-Match` list names this version:
    /// `*`, or one of its tags, weak or strong.
    pub fn named_by(&self, tags: &str) -> bool {
        let mine = self.version();
        let bare = mine.trim_start_matches("W/");
        tags.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == bare)
    }

    /// Roughly what this resource adds to an answer.
    fn weight(&self) -> usize {
        self.size + self.members.as_ref().map_or(0, |m| m.len() * MEMBER_BYTES)
    }

    fn from_user(u: &DirectoryUser) -> Self {
        Self {
            size: u.raw_attributes.as_ref().map_or(0, String::len),
            kind: ResourceKind::User,
            id: u.id.0,
            resource: parse_stored(u.raw_attributes.as_deref()),
            created: u.created_at,
            updated: u.source.updated_at,
            members: None,
        }
    }

    fn from_group(g: &DirectoryGroup, members: Option<Vec<Uuid>>) -> Self {
        Self {
            size: g.raw_attributes.as_ref().map_or(0, String::len),
            kind: ResourceKind::Group,
            id: g.id.0,
            resource: parse_stored(g.raw_attributes.as_deref()),
            created: g.created_at,
            updated: g.source.updated_at,
            members,
        }
    }

    /// The resource a filter or PATCH sees: the stored form with its
    /// members when loaded.
    fn as_value(&self) -> Value {
        let mut out = self.resource.clone();
        if let Some(members) = &self.members {
            out.insert(
                "members".into(),
                Value::Array(
                    members
                        .iter()
                        .map(|m| serde_json::json!({ "value": m.to_string() }))
                        .collect(),
                ),
            );
        }
        Value::Object(out)
    }
}

impl Stored {
    /// The resource a PATCH applies to: as answered (`meta`, members with
    /// `$ref`); what it makes is stored without them.
    fn patch_value(&self, base: &str) -> Value {
        self.render(base, &Projection::default())
    }

    /// The resource a filter sees: [`Self::as_value`], with `active` true
    /// for a user that never said (as its Char `state` is), and with
    /// `meta` (but `location`, which needs the base URL) when `meta` is
    /// asked about, so `meta.lastModified gt "…"` (RFC 7644 §3.4.2.2) can
    /// match.
    fn filter_value(&self, meta: bool) -> Value {
        let mut out = self.as_value();
        if let Value::Object(map) = &mut out {
            if self.kind == ResourceKind::User && find_ci(map, "active").is_none() {
                map.insert("active".into(), Value::Bool(true));
            }
            if meta {
                map.insert(
                    "meta".into(),
                    serde_json::json!({
                        "resourceType": self.kind.name(),
                        "created": self.created.to_rfc3339(),
                        "lastModified": self.updated.to_rfc3339(),
                        "version": self.version(),
                    }),
                );
            }
        }
        out
    }
}

fn parse_stored(raw: Option<&str>) -> Map<String, Value> {
    raw.and_then(|r| serde_json::from_str::<Map<String, Value>>(r).ok())
        .unwrap_or_default()
}

// ---- projection ------------------------------------------------------------

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5): which attributes
/// an answer carries. `id`, `schemas` and `meta` always are.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    include: Vec<Selector>,
    exclude: Vec<Selector>,
}

/// One attribute named in a projection: a top-level key (a core attribute,
/// or an extension's URN) and optionally the attribute below it.
#[derive(Clone, Debug)]
struct Selector {
    top: String,
    sub: Option<String>,
}

impl Selector {
    fn parse(kind: ResourceKind, text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let top = if text
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        {
            // `urn:…:User:name.givenName` or `urn:…enterprise:2.0:User:employeeNumber`:
            // the schema is everything before the last `:`.
            let at = text.rfind(':')?;
            let (schema, attr) = (&text[..at], &text[at + 1..]);
            if schema.eq_ignore_ascii_case(kind.schema()) {
                attr.to_owned()
            } else {
                return Some(Self {
                    top: schema.to_owned(),
                    sub: Some(attr.to_owned()),
                });
            }
        } else {
            text.to_owned()
        };
        Some(match top.split_once('.') {
            Some((t, s)) => Self {
                top: t.to_owned(),
                sub: Some(s.to_owned()),
            },
            None => Self { top, sub: None },
        })
    }

    fn names(&self, key: &str) -> bool {
        self.top.eq_ignore_ascii_case(key)
    }
}

impl Projection {
    /// From the comma-separated query parameters (or a search body's lists
    /// joined with commas).
    ///
    /// # Errors
    /// `invalidValue` past [`MAX_SELECTORS`] names or
    /// [`MAX_SELECTOR_BYTES`] bytes in either list: each name costs a test
    /// of every attribute of every resource answered.
    pub fn parse(
        kind: ResourceKind,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Self, ScimError> {
        let list = |s: Option<&str>| -> Result<Vec<Selector>, ScimError> {
            let Some(s) = s else {
                return Ok(Vec::new());
            };
            let names: Vec<Selector> = s
                .split(',')
                .take(MAX_SELECTORS + 1)
                .filter_map(|a| Selector::parse(kind, a))
                .collect();
            if s.len() > MAX_SELECTOR_BYTES || names.len() > MAX_SELECTORS {
                return Err(ScimError::bad(
                    ScimType::InvalidValue,
                    format!(
                        "attributes and excludedAttributes name at most {MAX_SELECTORS} attributes in {MAX_SELECTOR_BYTES} bytes"
                    ),
                ));
            }
            Ok(names)
        };
        Ok(Self {
            include: list(attributes)?,
            exclude: list(excluded)?,
        })
    }

    /// Whether a group's `members` are to be answered (a big group's are
    /// not even read when they are not).
    pub fn wants_members(&self) -> bool {
        let named = |list: &[Selector]| list.iter().any(|s| s.names("members"));
        if !self.include.is_empty() {
            return named(&self.include);
        }
        !self
            .exclude
            .iter()
            .any(|s| s.names("members") && s.sub.is_none())
    }

    fn apply(&self, _kind: ResourceKind, out: &mut Map<String, Value>) {
        const ALWAYS: [&str; 3] = ["id", "schemas", "meta"];
        let always = |k: &str| ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(k));
        if !self.include.is_empty() {
            out.retain(|key, value| {
                if always(key) {
                    return true;
                }
                let named: Vec<&Selector> = self.include.iter().filter(|s| s.names(key)).collect();
                if named.is_empty() {
                    return false;
                }
                if named.iter().any(|s| s.sub.is_none()) {
                    return true;
                }
                let subs: Vec<&str> = named.iter().filter_map(|s| s.sub.as_deref()).collect();
                keep_subs(value, &subs);
                true
            });
        }
        for s in &self.exclude {
            let Some(key) = out.keys().find(|k| s.names(k) && !always(k)).cloned() else {
                continue;
            };
            match &s.sub {
                None => {
                    out.shift_remove(&key);
                }
                Some(sub) => {
                    if let Some(v) = out.get_mut(&key) {
                        drop_sub(v, sub);
                    }
                }
            }
        }
    }
}

fn keep_subs(value: &mut Value, subs: &[&str]) {
    match value {
        Value::Object(map) => map.retain(|k, _| subs.iter().any(|s| s.eq_ignore_ascii_case(k))),
        Value::Array(items) => items.iter_mut().for_each(|i| keep_subs(i, subs)),
        _ => {}
    }
}

fn drop_sub(value: &mut Value, sub: &str) {
    match value {
        Value::Object(map) => map.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
        Value::Array(items) => items.iter_mut().for_each(|i| drop_sub(i, sub)),
        _ => {}
    }
}

// ---- from a request body to the stored form --------------------------------

/// What a request may not set: `id` is the server's, `meta` is derived,
/// `password` is write-only and rollcall has no use for it, a user's
/// `groups` is read-only (memberships are the groups' to say).
const NOT_STORED: [&str; 4] = ["id", "meta", "password", "groups"];

/// A resource's stored form, and for a group the member ids its body named.
type Form = (Map<String, Value>, Option<Vec<String>>);

/// The stored form of a User or Group body (POST or PUT), with `id`, and
/// for a group the member ids it names.
fn stored_form(kind: ResourceKind, body: Value, id: Uuid) -> Result<Form, ScimError> {
    if let Some(key) = twin_key(&body) {
        return Err(ScimError::bad(
            ScimType::InvalidSyntax,
            format!("{key:?} is given twice (SCIM attribute names ignore case)"),
        ));
    }
    let Value::Object(mut body) = body else {
        return Err(ScimError::bad(
            ScimType::InvalidSyntax,
            "the body must be a JSON object",
        ));
    };
    let members = match kind {
        ResourceKind::Group => Some(take_members(&mut body)?),
        ResourceKind::User => None,
    };
    let mut schemas: Vec<String> = match take_ci(&mut body, "schemas") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|s| match s {
                Value::String(s) => Ok(s),
                _ => Err(ScimError::bad(
                    ScimType::InvalidValue,
                    "schemas must be a list of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                "schemas must be a list of strings",
            ));
        }
    };
    if !schemas
        .iter()
        .any(|s| s.eq_ignore_ascii_case(kind.schema()))
    {
        schemas.insert(0, kind.schema().to_owned());
    }
    let mut rest = Map::new();
    for (key, value) in body {
        if NOT_STORED.iter().any(|n| n.eq_ignore_ascii_case(&key)) || value.is_null() {
            continue;
        }
        // An extension object present but not declared gets declared.
        if key.contains(':') && !schemas.iter().any(|s| s.eq_ignore_ascii_case(&key)) {
            schemas.push(key.clone());
        }
        rest.insert(key, value);
    }
    let mut out = Map::new();
    out.insert(
        "schemas".into(),
        Value::Array(schemas.into_iter().map(Value::String).collect()),
    );
    out.insert("id".into(), Value::String(id.to_string()));
    out.extend(rest);
    validate(kind, &mut out)?;
    let size = serde_json::to_vec(&out).map_or(usize::MAX, |v| v.len());
    if size > MAX_RESOURCE_BYTES {
        return Err(ScimError::bad(
            ScimType::InvalidValue,
            format!(
                "the {} is {size} bytes; at most {MAX_RESOURCE_BYTES} are kept per resource",
                kind.name()
            ),
        ));
    }
    Ok((out, members))
}

/// A key that appears twice in one object of `v` (at any depth) in
/// different capitals: SCIM names ignore case, so `userName` and
/// `USERNAME` would be one attribute with two values, and the first one
/// found would decide uniqueness while filters saw the other.
fn twin_key(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => {
            let mut seen = HashSet::with_capacity(map.len());
            for (key, value) in map {
                if !seen.insert(key.to_lowercase()) {
                    return Some(key.clone());
                }
                if let Some(twin) = twin_key(value) {
                    return Some(twin);
                }
            }
            None
        }
        Value::Array(items) => items.iter().find_map(twin_key),
        _ => None,
    }
}

fn take_ci(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let found = map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()?;
    // Not `remove`: with `preserve_order` it swaps the last key into place.
    map.shift_remove(&found)
}

/// The `value`s of a group body's `members`.
fn take_members(body: &mut Map<String, Value>) -> Result<Vec<String>, ScimError> {
    match take_ci(body, "members") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(member_value).collect(),
        Some(_) => Err(ScimError::bad(
            ScimType::InvalidValue,
            "members must be a list",
        )),
    }
}

fn member_value(m: &Value) -> Result<String, ScimError> {
    if let Some(kind) = filter::get_ci(m, "type").and_then(Value::as_str)
        && !kind.eq_ignore_ascii_case("User")
    {
        return Err(ScimError::bad(
            ScimType::InvalidValue,
            "only users can be group members (no nested groups)",
        ));
    }
    filter::get_ci(m, "value")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ScimError::bad(ScimType::InvalidValue, "a member needs a string value"))
}

/// Checks the attributes rollcall relies on and normalises what identity
/// providers send loosely (`"False"` for `false`).
fn validate(kind: ResourceKind, r: &mut Map<String, Value>) -> Result<(), ScimError> {
    let required = match kind {
        ResourceKind::User => "userName",
        ResourceKind::Group => "displayName",
    };
    match r.iter().find(|(k, _)| k.eq_ignore_ascii_case(required)) {
        Some((_, Value::String(s))) if !s.trim().is_empty() => {}
        _ => {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                format!("{required} is required and must be a non-empty string"),
            ));
        }
    }
    if let Some(v) = r.get("externalId").or_else(|| find_ci(r, "externalId"))
        && !v.is_string()
    {
        return Err(ScimError::bad(
            ScimType::InvalidValue,
            "externalId must be a string",
        ));
    }
    if kind == ResourceKind::Group {
        return Ok(());
    }
    for (key, value) in r.iter_mut() {
        if key.eq_ignore_ascii_case("active") {
            *value = Value::Bool(boolean(value).ok_or_else(|| {
                ScimError::bad(ScimType::InvalidValue, "active must be a boolean")
            })?);
        } else if key.eq_ignore_ascii_case("emails") {
            let Value::Array(emails) = value else {
                return Err(ScimError::bad(
                    ScimType::InvalidValue,
                    "emails must be a list",
                ));
            };
            for e in emails {
                let Value::Object(e) = e else {
                    return Err(ScimError::bad(
                        ScimType::InvalidValue,
                        "an email must be an object",
                    ));
                };
                for (k, v) in e.iter_mut() {
                    if k.eq_ignore_ascii_case("primary") {
                        *v = Value::Bool(boolean(v).ok_or_else(|| {
                            ScimError::bad(ScimType::InvalidValue, "primary must be a boolean")
                        })?);
                    } else if k.eq_ignore_ascii_case("value") && !v.is_string() {
                        return Err(ScimError::bad(
                            ScimType::InvalidValue,
                            "an email value must be a string",
                        ));
                    }
                }
            }
        } else if key.eq_ignore_ascii_case("name") && !value.is_object() {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                "name must be an object",
            ));
        }
    }
    Ok(())
}

fn find_ci<'a>(r: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    r.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn str_ci<'a>(r: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    find_ci(r, key).and_then(Value::as_str)
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

// ---- from the stored form to the Char record ---------------------------------

/// The emails of a user resource, as the Char record keeps them.
fn emails_of(r: &Map<String, Value>) -> Vec<Email> {
    let Some(Value::Array(list)) = find_ci(r, "emails") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let e = e.as_object()?;
            Some(Email {
                value: str_ci(e, "value")?.to_owned(),
                kind: str_ci(e, "type").map(str::to_owned),
                primary: find_ci(e, "primary").and_then(boolean).unwrap_or(false),
            })
        })
        .collect()
}

/// The Char `email`: the primary email, else the work one, else the first,
/// else `userName` when it is an address, else empty.
fn char_email(r: &Map<String, Value>, emails: &[Email]) -> String {
    emails
        .iter()
        .find(|e| e.primary)
        .or_else(|| {
            emails.iter().find(|e| {
                e.kind
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("work"))
            })
        })
        .or_else(|| emails.first())
        .map(|e| e.value.clone())
        .or_else(|| {
            str_ci(r, "userName")
                .filter(|u| u.contains('@'))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn name_part(r: &Map<String, Value>, part: &str) -> Option<String> {
    find_ci(r, "name")
        .and_then(Value::as_object)
        .and_then(|n| str_ci(n, part))
        .map(str::to_owned)
}

/// The Char record of a SCIM user.
fn user_record(
    tx: &Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    r: &Map<String, Value>,
    created: Timestamp,
    updated: Timestamp,
) -> Result<DirectoryUser, StoreError> {
    let emails = emails_of(r);
    let email = char_email(r, &emails);
    let active = find_ci(r, "active").and_then(boolean).unwrap_or(true);
    let link = authkit_link(tx, dir, &email_key(&email))?;
    Ok(DirectoryUser {
        id: DirectoryUserId(id),
        directory_id: dir,
        user_id: link.as_ref().map(|l| l.0.clone()),
        workos_directory_user_id: id.to_string(),
        email,
        first_name: name_part(r, "givenName"),
        last_name: name_part(r, "familyName"),
        state: if active {
            UserState::Active
        } else {
            UserState::Inactive
        },
        raw_attributes: Some(serde_json::to_string(r).unwrap_or_default()),
        idp_id: str_ci(r, "externalId").map(str::to_owned),
        created_at: created,
        updated_at: link.map_or(updated, |l| l.1.max(updated)),
        workos_state: if active { "active" } else { "inactive" }.to_owned(),
        emails,
        custom_attributes: None,
        source: Provenance {
            created_at: created,
            updated_at: updated,
        },
    })
}

/// The Char record of a SCIM group.
fn group_record(
    dir: DirectoryId,
    id: Uuid,
    r: &Map<String, Value>,
    created: Timestamp,
    updated: Timestamp,
) -> DirectoryGroup {
    DirectoryGroup {
        id: DirectoryGroupId(id),
        directory_id: dir,
        workos_directory_group_id: id.to_string(),
        name: str_ci(r, "displayName").unwrap_or_default().to_owned(),
        idp_id: str_ci(r, "externalId").map(str::to_owned),
        raw_attributes: Some(serde_json::to_string(r).unwrap_or_default()),
        mapped_role: None,
        created_at: created,
        updated_at: updated,
        source: Provenance {
            created_at: created,
            updated_at: updated,
        },
    }
}

/// The index entries of a resource in its stored form.
fn keys_of(kind: ResourceKind, r: &Map<String, Value>) -> Vec<(ScimKey, String)> {
    let mut keys = Vec::new();
    match kind {
        ResourceKind::User => {
            if let Some(name) = str_ci(r, "userName") {
                keys.push((ScimKey::UserName, name.to_lowercase()));
            }
            if let Some(ext) = str_ci(r, "externalId") {
                keys.push((ScimKey::UserExternalId, ext.to_owned()));
            }
            let mut seen = HashSet::new();
            for e in emails_of(r) {
                let v = e.value.to_lowercase();
                if seen.insert(v.clone()) {
                    keys.push((ScimKey::UserEmail, v));
                }
            }
        }
        ResourceKind::Group => {
            if let Some(name) = str_ci(r, "displayName") {
                keys.push((ScimKey::GroupName, name.to_lowercase()));
            }
            if let Some(ext) = str_ci(r, "externalId") {
                keys.push((ScimKey::GroupExternalId, ext.to_owned()));
            }
        }
    }
    keys
}

/// A time after `previous`: now, or one microsecond past `previous` when
/// the clock has not moved on (or went back).
fn next_time(now: Timestamp, previous: Option<Timestamp>) -> Timestamp {
    match previous {
        Some(p) if p >= now => Timestamp(p.0 + 1),
        _ => now,
    }
}

// ---- writes (inside the committer's transaction) ---------------------------

/// Whether `dir` is still a SCIM directory (it may have been deleted since
/// the request was authenticated).
fn directory_gone(tx: &Tx<'_>, dir: DirectoryId) -> Result<Option<ScimError>, StoreError> {
    Ok(tx.scim_directory(dir)?.is_none().then(|| ScimError {
        status: 404,
        scim_type: None,
        detail: "the directory no longer exists".into(),
    }))
}

/// Refuses a `userName` another user of the directory holds already.
fn check_unique(
    tx: &Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    r: &Map<String, Value>,
) -> Result<Option<ScimError>, StoreError> {
    let Some(name) = str_ci(r, "userName") else {
        return Ok(None);
    };
    let holders = tx.scim_find(dir, ScimKey::UserName, &name.to_lowercase())?;
    Ok(holders
        .iter()
        .any(|h| *h != id)
        .then(|| ScimError::uniqueness(format!("userName {name:?} is taken in this directory"))))
}

/// Returns a refusal (`Some`) from a write, before it has written anything.
macro_rules! refuse {
    ($e:expr) => {
        if let Some(refusal) = $e {
            return Ok(Err(refusal));
        }
    };
}

/// The value of a check, or its refusal returned from the write (before it
/// has written anything).
macro_rules! accept {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(e) => return Ok(Err(ScimError::from(e))),
        }
    };
}

/// A POST body checked and put in its stored form before it reaches the
/// writer (whose transaction every other write waits for), with the id it
/// will have.
#[derive(Debug, Clone)]
pub struct NewResource {
    id: Uuid,
    form: Map<String, Value>,
    members: Vec<String>,
}

/// Checks a POST body of `kind` and gives it its id.
///
/// # Errors
/// The SCIM refusal of a body that cannot be stored.
pub fn prepare(kind: ResourceKind, body: Value) -> Result<NewResource, ScimError> {
    let id = match kind {
        ResourceKind::User => DirectoryUserId::new_v7().0,
        ResourceKind::Group => DirectoryGroupId::new_v7().0,
    };
    let (form, members) = stored_form(kind, body, id)?;
    Ok(NewResource {
        id,
        form,
        members: members.unwrap_or_default(),
    })
}

/// Creates a user from a prepared POST body.
///
/// # Errors
/// Storage failures.
pub fn create_user(tx: &mut Tx<'_>, dir: DirectoryId, new: &NewResource) -> Written<Stored> {
    refuse!(directory_gone(tx, dir)?);
    refuse!(check_unique(tx, dir, new.id, &new.form)?);
    let now = tx.now();
    put_user(tx, dir, new.id, new.form.clone(), now, now, &[])
}

fn put_user(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    r: Map<String, Value>,
    created: Timestamp,
    updated: Timestamp,
    old_keys: &[(ScimKey, String)],
) -> Written<Stored> {
    let record = user_record(tx, dir, id, &r, created, updated)?;
    tx.put_user(&record)?;
    tx.set_scim_keys(dir, id, old_keys, &keys_of(ResourceKind::User, &r))?;
    Ok(Ok(Stored::from_user(&record)))
}

/// The stored user `id` of `dir`, or a 404.
fn existing_user(tx: &Tx<'_>, dir: DirectoryId, id: Uuid) -> Result<Option<Stored>, StoreError> {
    Ok(tx
        .user(dir, DirectoryUserId(id))?
        .map(|u| Stored::from_user(&u)))
}

/// Replaces a user's attributes with a PUT body, or with what a PATCH made
/// of them (`patch`).
///
/// # Errors
/// Storage failures.
pub fn replace_user(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    change: Change,
    if_match: Option<&str>,
) -> Written<Stored> {
    refuse!(directory_gone(tx, dir)?);
    let Some(old) = existing_user(tx, dir, id)? else {
        return Ok(Err(ScimError::not_found(
            ResourceKind::User,
            &id.to_string(),
        )));
    };
    if !old.allows(if_match) {
        return Ok(Err(ScimError::precondition()));
    }
    let body = match change {
        Change::Replace(body) => body,
        Change::Patch(request, base) => {
            accept!(patch::apply(&old.patch_value(&base), &request)).resource
        }
    };
    let (r, _) = accept!(stored_form(ResourceKind::User, body, id));
    if r == old.resource {
        // Nothing changed: nothing is written, the version stays.
        return Ok(Ok(old));
    }
    refuse!(check_unique(tx, dir, id, &r)?);
    let updated = next_time(tx.now(), Some(old.updated));
    let old_keys = keys_of(ResourceKind::User, &old.resource);
    put_user(tx, dir, id, r, old.created, updated, &old_keys)
}

/// What a PUT or PATCH asks for.
pub enum Change {
    /// The whole resource (PUT).
    Replace(Value),
    /// Operations on the stored resource (PATCH), and the directory's SCIM
    /// base URL: the operations see the resource as answered, `meta`
    /// included, so a client echoing it unchanged is not refused.
    Patch(PatchRequest, String),
}

/// Deletes a user (its memberships go with it, and its groups' versions
/// move on).
///
/// # Errors
/// Storage failures.
pub fn delete_user(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    if_match: Option<&str>,
) -> Written<()> {
    let Some(user) = tx.user(dir, DirectoryUserId(id))? else {
        return Ok(Err(ScimError::not_found(
            ResourceKind::User,
            &id.to_string(),
        )));
    };
    let old = Stored::from_user(&user);
    if !old.allows(if_match) {
        return Ok(Err(ScimError::precondition()));
    }
    let groups = tx.groups_of_member(user.id)?;
    tx.delete_user(&user)?;
    tx.set_scim_keys(dir, id, &keys_of(ResourceKind::User, &old.resource), &[])?;
    for (group, _) in groups {
        touch_group(tx, dir, group)?;
    }
    Ok(Ok(()))
}

/// Re-stamps a group whose members changed, so its version moves on.
fn touch_group(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    group: DirectoryGroupId,
) -> Result<(), StoreError> {
    if let Some(g) = tx.group(dir, group)? {
        restamp(tx, &g, next_time(tx.now(), Some(g.source.updated_at)))?;
    }
    Ok(())
}

/// Writes `g` again as of `updated` (its members changed).
fn restamp(
    tx: &mut Tx<'_>,
    g: &DirectoryGroup,
    updated: Timestamp,
) -> Result<DirectoryGroup, StoreError> {
    let mut g = g.clone();
    g.updated_at = updated;
    g.source.updated_at = updated;
    tx.put_group(&g)?;
    Ok(g)
}

/// Member ids as users of `dir`, or the refusal naming the first that is
/// not one.
fn member_ids(
    tx: &Tx<'_>,
    dir: DirectoryId,
    values: &[String],
) -> Result<Result<Vec<Uuid>, ScimError>, StoreError> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let known = match Uuid::try_parse(v) {
            Ok(id) => tx.user(dir, DirectoryUserId(id))?.is_some().then_some(id),
            Err(_) => None,
        };
        match known {
            Some(id) => out.push(id),
            None => {
                return Ok(Err(ScimError::bad(
                    ScimType::InvalidValue,
                    format!("member {v:?} is not a user of this directory"),
                )));
            }
        }
    }
    Ok(Ok(out))
}

/// Creates a group from a prepared POST body, with the members it names.
///
/// # Errors
/// Storage failures.
pub fn create_group(tx: &mut Tx<'_>, dir: DirectoryId, new: &NewResource) -> Written<Stored> {
    refuse!(directory_gone(tx, dir)?);
    let (id, r) = (new.id, &new.form);
    let members = accept!(member_ids(tx, dir, &new.members)?);
    let now = tx.now();
    let record = group_record(dir, id, r, now, now);
    tx.put_group(&record)?;
    tx.set_scim_keys(dir, id, &[], &keys_of(ResourceKind::Group, r))?;
    let set: BTreeSet<Uuid> = members.into_iter().collect();
    for m in &set {
        tx.put_membership(record.id, DirectoryUserId(*m), now)?;
    }
    Ok(Ok(Stored::from_group(
        &record,
        Some(set.into_iter().collect()),
    )))
}

/// Replaces a group (PUT: its members become exactly those named) or
/// patches it (only the members the operations name change).
///
/// # Errors
/// Storage failures.
pub fn replace_group(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    change: Change,
    if_match: Option<&str>,
) -> Written<Stored> {
    refuse!(directory_gone(tx, dir)?);
    let gid = DirectoryGroupId(id);
    let Some(group) = tx.group(dir, gid)? else {
        return Ok(Err(ScimError::not_found(
            ResourceKind::Group,
            &id.to_string(),
        )));
    };
    if let Change::Patch(request, _) = &change
        && let Some(steps) = member_steps(request)
    {
        return patch_members(tx, dir, &group, steps, if_match);
    }
    let before: Vec<Uuid> = tx
        .members_of_group(gid)?
        .into_iter()
        .map(|(u, _)| u.0)
        .collect();
    let old = Stored::from_group(&group, Some(before.clone()));
    if !old.allows(if_match) {
        return Ok(Err(ScimError::precondition()));
    }
    let (body, added, removed) = match change {
        Change::Replace(body) => {
            let Value::Object(mut map) = body else {
                return Ok(Err(ScimError::bad(
                    ScimType::InvalidSyntax,
                    "the body must be a JSON object",
                )));
            };
            let named = accept!(take_members(&mut map));
            let named = accept!(member_ids(tx, dir, &named)?);
            let after: BTreeSet<Uuid> = named.into_iter().collect();
            let was: BTreeSet<Uuid> = before.iter().copied().collect();
            let added = after.difference(&was).copied().collect();
            let removed = was.difference(&after).copied().collect();
            (Value::Object(map), added, removed)
        }
        Change::Patch(request, base) => {
            let outcome = accept!(patch::apply(&old.patch_value(&base), &request));
            let added = accept!(member_ids(tx, dir, &outcome.members_added)?);
            // An id removed in one spelling and added in another (`Replace`
            // with capitals) is the same member: it stays.
            let kept: HashSet<Uuid> = added.iter().copied().collect();
            let removed = outcome
                .members_removed
                .iter()
                .filter_map(|v| Uuid::try_parse(v).ok())
                .filter(|id| !kept.contains(id))
                .collect();
            let mut body = outcome.resource;
            if let Value::Object(map) = &mut body {
                take_ci(map, "members");
            }
            (body, added, removed)
        }
    };
    let (r, _) = accept!(stored_form(ResourceKind::Group, body, id));
    let added: Vec<Uuid> = added;
    let removed: Vec<Uuid> = removed;
    if r == old.resource && added.is_empty() && removed.is_empty() {
        return Ok(Ok(old));
    }
    let updated = next_time(tx.now(), Some(old.updated));
    let record = group_record(dir, id, &r, old.created, updated);
    tx.put_group(&record)?;
    tx.set_scim_keys(
        dir,
        id,
        &keys_of(ResourceKind::Group, &old.resource),
        &keys_of(ResourceKind::Group, &r),
    )?;
    for m in &added {
        tx.put_membership(gid, DirectoryUserId(*m), updated)?;
    }
    for m in &removed {
        tx.delete_membership(gid, DirectoryUserId(*m))?;
    }
    let mut members: BTreeSet<Uuid> = before.into_iter().collect();
    members.extend(added);
    for m in &removed {
        members.remove(m);
    }
    Ok(Ok(Stored::from_group(
        &record,
        Some(members.into_iter().collect()),
    )))
}

/// The member changes of a PATCH that only adds and removes named members
/// (`add` to `members`, `remove` from `members` with a value, or through
/// `members[value eq "…"]`), in order, as `(add?, member id)`; `None` for
/// any other PATCH, which goes through the whole engine. Such a PATCH —
/// what Okta and Entra send for every membership change — never reads the
/// group's other members.
fn member_steps(request: &PatchRequest) -> Option<Vec<(bool, String)>> {
    use filter::{CompareOp, Literal};
    use patch::OpKind;
    let mut steps = Vec::new();
    for op in &request.operations {
        let path = op.path.as_ref()?;
        let core = path
            .schema
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(GROUP_SCHEMA));
        if !core || !path.attr.eq_ignore_ascii_case("members") || path.sub.is_some() {
            return None;
        }
        let add = match op.op {
            OpKind::Add => true,
            OpKind::Remove => false,
            OpKind::Replace => return None,
        };
        match (&path.filter, &op.value) {
            (None, Some(Value::Array(items))) => {
                for item in items {
                    steps.push((add, member_value(item).ok()?));
                }
            }
            (None, Some(item @ Value::Object(_))) => steps.push((add, member_value(item).ok()?)),
            (
                Some(Filter::Compare {
                    path: p,
                    op: CompareOp::Eq,
                    value: Literal::String(v),
                }),
                None,
            ) if !add && p.is("value", None) && p.sub.is_none() => steps.push((false, v.clone())),
            _ => return None,
        }
    }
    Some(steps)
}

/// Refuses, before it reaches the writer, a PATCH whose work there is not
/// bounded: one that is not member-only may carry at most
/// [`MAX_ATTRIBUTE_OPERATIONS`] operations, whose values outside `members`
/// hold at most [`MAX_RESOURCE_BYTES`] together. (Member-only PATCHes —
/// what identity providers send by the thousand — cost one index write
/// per member named.)
///
/// # Errors
/// `tooMany` or `invalidValue`, naming the bound.
pub fn check_patch(request: &PatchRequest) -> Result<(), ScimError> {
    if member_steps(request).is_some() {
        return Ok(());
    }
    if request.operations.len() > MAX_ATTRIBUTE_OPERATIONS {
        return Err(ScimError::bad(
            ScimType::TooMany,
            format!(
                "a PATCH that changes more than members may carry at most {MAX_ATTRIBUTE_OPERATIONS} operations"
            ),
        ));
    }
    let bytes: usize = request
        .operations
        .iter()
        .filter(|op| {
            !op.path
                .as_ref()
                .is_some_and(|p| p.attr.eq_ignore_ascii_case("members"))
        })
        .filter_map(|op| op.value.as_ref())
        .map(|v| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len()))
        .fold(0usize, usize::saturating_add);
    if bytes > MAX_RESOURCE_BYTES {
        return Err(ScimError::bad(
            ScimType::InvalidValue,
            format!(
                "the PATCH values come to {bytes} bytes; a resource holds at most {MAX_RESOURCE_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// Applies member-only PATCH steps: writes the memberships named, and
/// re-stamps the group when one changed.
fn patch_members(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    group: &DirectoryGroup,
    steps: Vec<(bool, String)>,
    if_match: Option<&str>,
) -> Written<Stored> {
    let old = Stored::from_group(group, None);
    if !old.allows(if_match) {
        return Ok(Err(ScimError::precondition()));
    }
    // The last step naming a member decides (an add then a remove is a
    // remove), as applying them in order would.
    let mut net = std::collections::BTreeMap::new();
    for (add, member) in steps {
        // An id in other capitals names the same member.
        let key = Uuid::try_parse(&member).map_or(member, |id| id.to_string());
        net.insert(key, add);
    }
    let adds: Vec<String> = net
        .iter()
        .filter(|(_, add)| **add)
        .map(|(m, _)| m.clone())
        .collect();
    let adds = accept!(member_ids(tx, dir, &adds)?);
    let updated = next_time(tx.now(), Some(old.updated));
    let mut changed = false;
    for m in adds {
        let user = DirectoryUserId(m);
        if tx.membership(group.id, user)?.is_none() {
            tx.put_membership(group.id, user, updated)?;
            changed = true;
        }
    }
    for m in net.iter().filter(|(_, add)| !**add) {
        if let Ok(id) = Uuid::try_parse(m.0) {
            changed |= tx.delete_membership(group.id, DirectoryUserId(id))?;
        }
    }
    if !changed {
        return Ok(Ok(old));
    }
    let g = restamp(tx, group, updated)?;
    Ok(Ok(Stored::from_group(&g, None)))
}

/// Deletes a group with its memberships (its users stay).
///
/// # Errors
/// Storage failures.
pub fn delete_group(
    tx: &mut Tx<'_>,
    dir: DirectoryId,
    id: Uuid,
    if_match: Option<&str>,
) -> Written<()> {
    let Some(group) = tx.group(dir, DirectoryGroupId(id))? else {
        return Ok(Err(ScimError::not_found(
            ResourceKind::Group,
            &id.to_string(),
        )));
    };
    let old = Stored::from_group(&group, None);
    if !old.allows(if_match) {
        return Ok(Err(ScimError::precondition()));
    }
    tx.delete_group(&group)?;
    tx.set_scim_keys(dir, id, &keys_of(ResourceKind::Group, &old.resource), &[])?;
    Ok(Ok(()))
}

// ---- reads -------------------------------------------------------------------

/// One resource of `dir` by its SCIM id; a group's members only when
/// `members` (a big group's are not read otherwise).
///
/// # Errors
/// Storage failures.
pub fn get(
    snap: &Snapshot,
    dir: DirectoryId,
    kind: ResourceKind,
    id: &str,
    members: bool,
) -> Result<Option<Stored>, StoreError> {
    let Ok(id) = Uuid::try_parse(id) else {
        return Ok(None);
    };
    load(snap, dir, kind, id, members)
}

fn load(
    snap: &Snapshot,
    dir: DirectoryId,
    kind: ResourceKind,
    id: Uuid,
    members: bool,
) -> Result<Option<Stored>, StoreError> {
    Ok(match kind {
        ResourceKind::User => snap
            .user(dir, DirectoryUserId(id))?
            .map(|u| Stored::from_user(&u)),
        ResourceKind::Group => match snap.group(dir, DirectoryGroupId(id))? {
            Some(g) => {
                let list = if members {
                    Some(snap.member_ids(g.id)?.into_iter().map(|m| m.0).collect())
                } else {
                    None
                };
                Some(Stored::from_group(&g, list))
            }
            None => None,
        },
    })
}

/// One page of a list or search.
#[derive(Debug)]
pub struct Page {
    /// Every match, not only this page's.
    pub total: u64,
    /// 1-based index of the first resource of this page.
    pub start_index: u64,
    pub resources: Vec<Stored>,
}

/// Lists the resources of `dir` matching `filter`, `count` of them from the
/// `start_index`-th (1-based). A filter of an indexed shape is answered from
/// the index; any other filter is tested against every resource.
///
/// # Errors
/// Storage failures.
pub fn search(
    snap: &Snapshot,
    dir: DirectoryId,
    kind: ResourceKind,
    filter: Option<&Filter>,
    (start_index, count): (u64, u64),
    members: bool,
    cursors: &PageCursors,
) -> Result<Page, StoreError> {
    let start_index = start_index.max(1);
    let count = count.min(MAX_RESULTS);
    let skip = start_index - 1;
    let mut page = Page {
        total: 0,
        start_index,
        resources: Vec::new(),
    };
    let Some(filter) = filter else {
        let Some(d) = snap.directory(dir)? else {
            return Ok(page);
        };
        page.total = match kind {
            ResourceKind::User => d.user_count,
            ResourceKind::Group => d.group_count,
        };
        if count > 0 {
            // Where the previous page of this revision ended, if one did.
            let (after, skip) = match cursors.get(dir, kind, d.revision, start_index) {
                Some(last) => (Some(last), 0),
                None => (None, skip),
            };
            let mut bytes = 0usize;
            let mut keep = |s: Stored| {
                bytes += s.weight();
                page.resources.push(s);
                if page.resources.len() as u64 >= count || bytes > PAGE_BUDGET_BYTES {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            visit(snap, dir, kind, (after, skip), members, &mut keep)?;
            if let Some(last) = page.resources.last() {
                let next = start_index + page.resources.len() as u64;
                cursors.put(dir, kind, (d.revision, next, last.id));
            }
        }
        return Ok(page);
    };
    // Members are read to test a filter only when it names them.
    let filter_members = kind == ResourceKind::Group && names_members(filter);
    // `meta` (a digest for its version) is made only for a filter naming it.
    let filter_meta = filter.to_string().to_ascii_lowercase().contains("meta");
    let mut bytes = 0usize;
    let mut take = |s: Stored, page: &mut Page| {
        if filter.matches(&s.filter_value(filter_meta)) {
            page.total += 1;
            if page.total > skip
                && (page.resources.len() as u64) < count
                && bytes <= PAGE_BUDGET_BYTES
            {
                bytes += s.weight();
                page.resources.push(s);
            }
        }
    };
    match lookups(kind, filter) {
        Some(lookups) => {
            let mut ids = BTreeSet::new();
            for (key, value) in lookups {
                ids.extend(snap.scim_find(dir, key, &value)?);
            }
            for id in ids {
                if let Some(s) = load(snap, dir, kind, id, filter_members)? {
                    take(s, &mut page);
                }
            }
        }
        None => {
            let mut each = |s: Stored| {
                take(s, &mut page);
                ControlFlow::Continue(())
            };
            visit(snap, dir, kind, (None, 0), filter_members, &mut each)?;
        }
    }
    // Members are read for what is answered only, not for every candidate.
    for s in &mut page.resources {
        s.members = match (members, s.members.take()) {
            (false, _) => None,
            (true, Some(read)) => Some(read),
            (true, None) if kind == ResourceKind::User => None,
            (true, None) => Some(
                snap.member_ids(DirectoryGroupId(s.id))?
                    .into_iter()
                    .map(|m| m.0)
                    .collect(),
            ),
        };
    }
    Ok(page)
}

/// Visits the resources of `dir` after a record id and from the
/// `skip`-th on.
fn visit(
    snap: &Snapshot,
    dir: DirectoryId,
    kind: ResourceKind,
    (after, skip): (Option<Uuid>, u64),
    members: bool,
    f: &mut dyn FnMut(Stored) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    match kind {
        ResourceKind::User => {
            snap.visit_user_records(dir, after, skip, |u| f(Stored::from_user(&u)))
        }
        ResourceKind::Group => {
            let mut failure = None;
            snap.visit_group_records(dir, after, skip, |g| {
                let list = if members {
                    match snap.member_ids(g.id) {
                        Ok(m) => Some(m.into_iter().map(|m| m.0).collect()),
                        Err(e) => {
                            failure = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                } else {
                    None
                };
                f(Stored::from_group(&g, list))
            })?;
            failure.map_or(Ok(()), Err)
        }
    }
}

/// Where recent unfiltered pages ended, so the next page of a client
/// paging through a directory (Okta's import asks for every user, 100 at a
/// time) starts from a key instead of stepping over every record before
/// it. Keyed by the directory's revision: any write makes them stale.
/// Each directory keeps its own few, so one directory's clients cannot
/// push out another's.
#[derive(Default)]
pub struct PageCursors {
    ends: std::sync::Mutex<HashMap<(DirectoryId, ResourceKind), VecDeque<PageEnd>>>,
}

/// A page end: (revision, the 1-based index the next page starts at, the
/// last record id of the page).
type PageEnd = (u64, u64, Uuid);

/// Page ends remembered per directory and kind (the oldest goes first).
const CURSORS_PER_DIRECTORY: usize = 64;
/// Directories remembered at most (then forgotten all at once).
const CURSOR_DIRECTORIES: usize = 4096;

impl PageCursors {
    fn get(&self, dir: DirectoryId, kind: ResourceKind, revision: u64, index: u64) -> Option<Uuid> {
        let ends = self.lock();
        ends.get(&(dir, kind))?
            .iter()
            .find(|(r, i, _)| *r == revision && *i == index)
            .map(|(_, _, id)| *id)
    }

    fn put(&self, dir: DirectoryId, kind: ResourceKind, end: PageEnd) {
        let mut ends = self.lock();
        if ends.len() >= CURSOR_DIRECTORIES && !ends.contains_key(&(dir, kind)) {
            ends.clear();
        }
        let list = ends.entry((dir, kind)).or_default();
        // Ends of an older revision are of no use any more.
        list.retain(|(r, i, _)| *r == end.0 && *i != end.1);
        if list.len() >= CURSORS_PER_DIRECTORY {
            list.pop_front();
        }
        list.push_back(end);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(DirectoryId, ResourceKind), VecDeque<PageEnd>>> {
        self.ends.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn names_members(filter: &Filter) -> bool {
    filter.to_string().to_ascii_lowercase().contains("members")
}

/// The index lookups whose union holds every match of `filter`, or `None`
/// when it must be tested against every resource.
fn lookups(kind: ResourceKind, filter: &Filter) -> Option<Vec<(ScimKey, String)>> {
    if kind == ResourceKind::Group {
        return group_lookups(filter);
    }
    let IndexPlan::Lookups(plan) = filter.index_plan() else {
        return None;
    };
    plan.into_iter()
        .map(|i| match i {
            Indexable::UserName(v) => Some((ScimKey::UserName, v.to_lowercase())),
            Indexable::ExternalId(v) => Some((ScimKey::UserExternalId, v.to_owned())),
            Indexable::WorkEmail(v) | Indexable::Email(v) => {
                Some((ScimKey::UserEmail, v.to_lowercase()))
            }
            // Half of a directory is no narrower than all of it.
            Indexable::Active(_) => None,
        })
        .collect()
}

fn group_lookups(filter: &Filter) -> Option<Vec<(ScimKey, String)>> {
    use filter::{CompareOp, Literal};
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Literal::String(v),
        } if path.sub.is_none() => {
            if path.is("displayName", None) {
                Some(vec![(ScimKey::GroupName, v.to_lowercase())])
            } else if path.is("externalId", None) {
                Some(vec![(ScimKey::GroupExternalId, v.clone())])
            } else {
                None
            }
        }
        Filter::And(terms) => terms.iter().find_map(group_lookups),
        Filter::Or(terms) => {
            let mut all = Vec::new();
            for t in terms {
                all.extend(group_lookups(t)?);
            }
            Some(all)
        }
        _ => None,
    }
}

// ---- directories -------------------------------------------------------------

/// A SCIM directory just created or given a new token: the token is in
/// nothing else rollcall keeps or prints again.
#[derive(Debug, Clone)]
pub struct Issued {
    pub directory: Directory,
    pub provider: ScimProvider,
    pub token: String,
}

/// A new bearer token and its hash: 32 random bytes, base64url, prefixed
/// so a leaked one is recognisable in a secret scanner.
fn new_token() -> Result<(String, [u8; 32]), StoreError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
    let token = format!(
        "rcs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// What is stored of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` is the current token of the SCIM directory `s`
/// (compared in constant time).
pub fn token_matches(s: &ScimDirectory, token: &str) -> bool {
    let given = token_hash(token);
    given
        .iter()
        .zip(&s.token_sha256)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Creates a SCIM directory of `organization`.
///
/// # Errors
/// Storage failures.
pub fn create_directory(
    tx: &mut Tx<'_>,
    organization: &str,
    name: &str,
    provider: ScimProvider,
) -> Result<Issued, StoreError> {
    let id = DirectoryId::new_v7();
    let now = tx.now();
    let directory = Directory {
        id,
        organization_id: organization.to_owned(),
        workos_directory_id: format!("{SCIM_DIRECTORY_PREFIX}{}", id.0.simple()),
        name: name.to_owned(),
        workos_type: provider.workos_type().to_owned(),
        workos_state: "active".to_owned(),
        domains: Vec::new(),
        created_at: now,
        updated_at: now,
        user_count: 0,
        group_count: 0,
        revision: 0,
        users_digest: 0,
        groups_digest: 0,
        source: Provenance {
            created_at: now,
            updated_at: now,
        },
    };
    tx.put_directory(&directory)?;
    let (token, token_sha256) = new_token()?;
    tx.put_scim_directory(&ScimDirectory {
        id,
        provider,
        token_sha256,
        token_issued_at: now,
    })?;
    let directory = tx.directory(id)?.unwrap_or(directory);
    Ok(Issued {
        directory,
        provider,
        token,
    })
}

/// Gives a SCIM directory a new token; the old one stops working with this
/// commit. `None` when `dir` is not a SCIM directory.
///
/// # Errors
/// Storage failures.
pub fn rotate_token(tx: &mut Tx<'_>, dir: DirectoryId) -> Result<Option<Issued>, StoreError> {
    let (Some(mut s), Some(directory)) = (tx.scim_directory(dir)?, tx.directory(dir)?) else {
        return Ok(None);
    };
    let (token, hash) = new_token()?;
    s.token_sha256 = hash;
    s.token_issued_at = tx.now();
    tx.put_scim_directory(&s)?;
    Ok(Some(Issued {
        directory,
        provider: s.provider,
        token,
    }))
}

/// Deletes a SCIM directory with everything in it. `false` when `dir` is
/// not a SCIM directory (a WorkOS one is WorkOS's to delete).
///
/// # Errors
/// Storage failures.
pub fn delete_directory(tx: &mut Tx<'_>, dir: DirectoryId) -> Result<bool, StoreError> {
    if tx.scim_directory(dir)?.is_none() {
        return Ok(false);
    }
    tx.delete_directory(dir)
}

/// Every SCIM directory with its provider, in creation order.
///
/// # Errors
/// Storage failures.
pub fn list_directories(snap: &Snapshot) -> Result<Vec<(Directory, ScimDirectory)>, StoreError> {
    let mut out = Vec::new();
    for s in snap.scim_directories()? {
        if let Some(d) = snap.directory(s.id)? {
            out.push((d, s));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(kind: ResourceKind, body: Value) -> Result<Map<String, Value>, ScimError> {
        stored_form(kind, body, Uuid::nil()).map(|(r, _)| r)
    }

    #[test]
    fn the_stored_form_keeps_what_was_sent_and_drops_what_the_server_owns() {
        let r = form(
            ResourceKind::User,
            json!({
                "id": "client-chosen",
                "meta": {"version": "W/\"x\""},
                "password": "hunter2",
                "groups": [{"value": "g"}],
                "userName": "ann@x.test",
                "active": "False",
                "emails": [{"value": "a@x.test", "primary": "True"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"},
                "nickName": null
            }),
        )
        .unwrap();
        assert_eq!(r["id"], Uuid::nil().to_string(), "the id is the server's");
        assert_eq!(
            r["schemas"],
            json!([
                USER_SCHEMA,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            ]),
            "the core schema and a present extension are declared"
        );
        for gone in ["meta", "password", "groups", "nickName"] {
            assert!(!r.contains_key(gone), "{gone} is not stored");
        }
        assert_eq!(r["active"], false, "\"False\" is false");
        assert_eq!(r["emails"][0]["primary"], true);
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "schemas",
                "id",
                "userName",
                "active",
                "emails",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            ]
        );
    }

    #[test]
    fn a_body_without_its_required_attribute_or_with_wrong_types_is_refused() {
        for (kind, body) in [
            (ResourceKind::User, json!({})),
            (ResourceKind::User, json!({"userName": "  "})),
            (ResourceKind::User, json!({"userName": 7})),
            (
                ResourceKind::User,
                json!({"userName": "a", "active": "maybe"}),
            ),
            (
                ResourceKind::User,
                json!({"userName": "a", "emails": "a@x"}),
            ),
            (
                ResourceKind::User,
                json!({"userName": "a", "emails": [{"value": 1}]}),
            ),
            (ResourceKind::User, json!({"userName": "a", "name": "Ann"})),
            (
                ResourceKind::User,
                json!({"userName": "a", "externalId": 5}),
            ),
            (ResourceKind::User, json!({"userName": "a", "schemas": "x"})),
            (ResourceKind::Group, json!({"members": []})),
            (
                ResourceKind::Group,
                json!({"displayName": "g", "members": {}}),
            ),
            (
                ResourceKind::Group,
                json!({"displayName": "g", "members": [{"value": "u", "type": "Group"}]}),
            ),
            (ResourceKind::User, json!([1, 2])),
        ] {
            let e = form(kind, body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.scim_type.is_some(), "{body}");
        }
    }

    #[test]
    fn the_char_email_is_the_primary_else_work_else_first_else_an_address_username() {
        let email = |body: Value| {
            let r = form(ResourceKind::User, body).unwrap();
            char_email(&r, &emails_of(&r))
        };
        let list = json!([
            {"value": "home@x.test", "type": "home"},
            {"value": "work@x.test", "type": "work"},
            {"value": "main@x.test", "type": "other", "primary": true}
        ]);
        assert_eq!(
            email(json!({"userName": "u", "emails": list})),
            "main@x.test"
        );
        let list = json!([{"value": "home@x.test", "type": "home"}, {"value": "work@x.test", "type": "Work"}]);
        assert_eq!(
            email(json!({"userName": "u", "emails": list})),
            "work@x.test"
        );
        let list = json!([{"value": "home@x.test"}, {"value": "other@x.test"}]);
        assert_eq!(
            email(json!({"userName": "u", "emails": list})),
            "home@x.test"
        );
        assert_eq!(email(json!({"userName": "ann@x.test"})), "ann@x.test");
        assert_eq!(email(json!({"userName": "ann"})), "");
    }

    #[test]
    fn projection_keeps_id_schemas_meta_and_what_was_asked() {
        let stored = Stored {
            kind: ResourceKind::User,
            id: Uuid::nil(),
            resource: form(
                ResourceKind::User,
                json!({
                    "userName": "a",
                    "name": {"givenName": "A", "familyName": "B"},
                    "emails": [{"value": "a@x", "type": "work"}],
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D", "costCenter": "C"}
                }),
            )
            .unwrap(),
            created: Timestamp(0),
            updated: Timestamp(0),
            members: None,
            size: 0,
        };
        let only = |a: Option<&str>, e: Option<&str>| {
            let v = stored.render(
                "http://x",
                &Projection::parse(ResourceKind::User, a, e).unwrap(),
            );
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            (keys, v)
        };
        let (keys, v) = only(Some("name.givenName,emails.value"), None);
        assert_eq!(keys, ["emails", "id", "meta", "name", "schemas"]);
        assert_eq!(v["name"], json!({"givenName": "A"}));
        assert_eq!(v["emails"], json!([{"value": "a@x"}]));
        let (keys, _) = only(
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
            None,
        );
        assert_eq!(keys, ["id", "meta", "schemas", "userName"]);
        let (_, v) = only(
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            None,
        );
        assert_eq!(
            v["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            json!({"department": "D"})
        );
        let (keys, v) = only(None, Some("emails,name.familyName,id"));
        assert!(!keys.contains(&"emails".to_owned()));
        assert!(keys.contains(&"id".to_owned()), "id is always returned");
        assert_eq!(v["name"], json!({"givenName": "A"}));
    }

    #[test]
    fn versions_follow_every_change_and_if_match_accepts_weak_strong_and_star() {
        let mut s = Stored {
            kind: ResourceKind::User,
            id: Uuid::nil(),
            resource: form(ResourceKind::User, json!({"userName": "a"})).unwrap(),
            created: Timestamp(1),
            updated: Timestamp(1),
            members: None,
            size: 0,
        };
        let v1 = s.version();
        assert!(s.allows(None));
        assert!(s.allows(Some("*")));
        assert!(s.allows(Some(&v1)));
        assert!(s.allows(Some(v1.trim_start_matches("W/"))));
        assert!(s.allows(Some(&format!("W/\"other\", {v1}"))));
        assert!(!s.allows(Some("W/\"other\"")));
        s.updated = Timestamp(2);
        assert_ne!(s.version(), v1, "a re-stamp is a new version");
        assert!(!s.allows(Some(&v1)));
    }

    #[test]
    fn times_only_move_forward() {
        assert_eq!(next_time(Timestamp(10), None), Timestamp(10));
        assert_eq!(next_time(Timestamp(10), Some(Timestamp(5))), Timestamp(10));
        assert_eq!(next_time(Timestamp(10), Some(Timestamp(10))), Timestamp(11));
        assert_eq!(next_time(Timestamp(10), Some(Timestamp(50))), Timestamp(51));
    }

    #[test]
    fn only_the_directory_token_matches() {
        let s = ScimDirectory {
            id: DirectoryId::new_v7(),
            provider: ScimProvider::Okta,
            token_sha256: token_hash("rcs_right"),
            token_issued_at: Timestamp(0),
        };
        assert!(token_matches(&s, "rcs_right"));
        for wrong in ["rcs_wrong", "", "rcs_righ", "rcs_right "] {
            assert!(!token_matches(&s, wrong), "{wrong:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_json_body_is_stored_or_refused_never_a_panic(body in arb_json(3)) {
            for kind in [ResourceKind::User, ResourceKind::Group] {
                if let Ok(r) = form(kind, body.clone()) {
                    proptest::prop_assert!(serde_json::to_vec(&r).unwrap().len() <= MAX_RESOURCE_BYTES);
                    proptest::prop_assert_eq!(&r["id"], &json!(Uuid::nil().to_string()));
                    let _ = keys_of(kind, &r);
                    let _ = char_email(&r, &emails_of(&r));
                }
            }
        }
    }

    fn arb_json(depth: u32) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let names = prop::sample::select(vec![
            "userName",
            "displayName",
            "emails",
            "value",
            "primary",
            "type",
            "active",
            "name",
            "givenName",
            "externalId",
            "members",
            "schemas",
            "id",
            "meta",
            "urn:x:ext",
            "ACTIVE",
            "Emails",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z@.é ]{0,12}".prop_map(Value::String),
            Just(json!("False")),
        ];
        leaf.prop_recursive(depth, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((names.clone(), inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }
}
