//! WorkOS objects and events as rollcall reads them: parsed from JSON at the
//! edge into typed values, with every rejection naming the offending field
//! (`data.user.id`). Parsing is strict about what identifies an object and
//! lenient about the rest (nulls, empty strings, either timestamp form).
//!
//! Parsing is two-step and allocation-light: serde reads the bytes into
//! borrowed `Raw*` structs (all fields optional, attribute objects kept as raw
//! JSON text), then a validation step checks what is required and builds the
//! owned WorkOS types. Only when serde itself fails (a field of the wrong
//! type) is the input read again with `serde_path_to_error`, to name the field.
//!
//! Nothing here touches the store; [`super::apply`] turns these into writes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{Email, MappedRole, Timestamp, email_key};

/// A rejected input: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// WorkOS ids and emails longer than this are refused (they would bloat keys).
pub const MAX_ID_LEN: usize = 256;

/// `path.key`, or `key` at the top level.
pub(crate) fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Deserializes `json` into `T`; on failure names the field at fault,
/// prefixed with `path` (`whole` names the input itself: `body`, `line`).
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(
    json: &'a str,
    path: &str,
    whole: &str,
) -> Result<T, FieldError> {
    if !json.trim_start().starts_with('{') {
        let name = if path.is_empty() { whole } else { path };
        return Err(FieldError::new(name, "must be a JSON object"));
    }
    match serde_json::from_str(json) {
        Ok(v) => Ok(v),
        Err(first) => {
            // Read again, slowly, only to learn which field failed.
            let mut de = serde_json::Deserializer::from_str(json);
            let located: Result<T, _> = serde_path_to_error::deserialize(&mut de);
            let (at, problem) = match located {
                Err(e) => (e.path().to_string(), e.into_inner().to_string()),
                Ok(_) => (String::new(), first.to_string()),
            };
            let whole = if path.is_empty() { whole } else { path };
            if first.is_syntax() || first.is_eof() {
                return Err(FieldError::new(
                    whole,
                    format!("is not valid JSON ({first})"),
                ));
            }
            let name = match at.as_str() {
                "" | "." | "?" => whole.to_owned(),
                at => field(path, at),
            };
            Err(FieldError::new(name, problem))
        }
    }
}

/// The IdP's JSON text without insignificant whitespace; key order, number
/// spelling and string escapes are kept exactly as sent.
pub(crate) fn compact_json(raw: &RawValue) -> String {
    let text = raw.get().as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut in_string = false;
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            // Copy the run before this whitespace, skip the whitespace.
            out.extend_from_slice(&text[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&text[start.min(text.len())..]);
    // Only ASCII whitespace outside strings was dropped: still valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub(crate) fn required<'a>(
    v: &'a Option<Cow<'_, str>>,
    path: &str,
    key: &str,
) -> Result<&'a str, FieldError> {
    match v.as_deref() {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(FieldError::new(field(path, key), "must not be empty")),
        None => Err(FieldError::new(field(path, key), "is required")),
    }
}

/// A required id with a required prefix (`directory_user_`), so ids of the
/// wrong kind are refused at the edge.
pub(crate) fn required_id<'a>(
    v: &'a Option<Cow<'_, str>>,
    path: &str,
    key: &str,
    prefix: &str,
) -> Result<&'a str, FieldError> {
    let s = required(v, path, key)?;
    if s.len() > MAX_ID_LEN {
        return Err(FieldError::new(field(path, key), "is too long"));
    }
    if !s.starts_with(prefix) {
        return Err(FieldError::new(
            field(path, key),
            format!("must start with `{prefix}`"),
        ));
    }
    Ok(s)
}

pub(crate) fn time(
    v: &Option<Cow<'_, str>>,
    path: &str,
    key: &str,
) -> Result<Option<Timestamp>, FieldError> {
    match v.as_deref() {
        None => Ok(None),
        Some(s) => Timestamp::parse_lenient(s).map(Some).ok_or_else(|| {
            FieldError::new(
                field(path, key),
                "must be an RFC 3339 timestamp in the years 1970 to 9999",
            )
        }),
    }
}

fn owned(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().map(str::to_owned)
}

fn nonempty(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// `Some(None)` for an explicit `null`, `None` when the key is absent.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// rollcall's own fields on an import line (`"rollcall": {…}`) that are
/// not derived from the WorkOS data: a group's `mapped_role`, a membership's
/// `added_at`. Anything else there (`id`, `created_at`, `updated_at`,
/// `user_id`, written by export for people to read) is ignored: those are
/// derived.
#[derive(Deserialize, Default)]
pub(crate) struct RawInternal<'a> {
    #[serde(borrow, default, deserialize_with = "double_option")]
    pub mapped_role: Option<Option<Cow<'a, str>>>,
    #[serde(borrow)]
    pub added_at: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDomain {
    Name(String),
    Object { domain: Option<String> },
}

#[derive(Deserialize)]
pub(crate) struct RawDirectory<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    organization_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    domains: Option<Vec<RawDomain>>,
    /// The list and get APIs give one `domain`; events give `domains`.
    #[serde(borrow)]
    domain: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub rollcall: Option<RawInternal<'a>>,
}

#[derive(Deserialize)]
struct RawEmail<'a> {
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    primary: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct RawUser<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    directory_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    email: Option<Cow<'a, str>>,
    #[serde(borrow)]
    emails: Option<Vec<RawEmail<'a>>>,
    #[serde(borrow)]
    first_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    last_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    #[serde(borrow)]
    idp_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    raw_attributes: Option<&'a RawValue>,
    #[serde(borrow)]
    custom_attributes: Option<&'a RawValue>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub rollcall: Option<RawInternal<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct RawGroup<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    directory_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    idp_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    raw_attributes: Option<&'a RawValue>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub rollcall: Option<RawInternal<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct RawAuthkitUser<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    email: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct RawOrgMembership<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    organization_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawMembershipEvent<'a> {
    #[serde(borrow)]
    directory_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<RawUser<'a>>,
    #[serde(borrow)]
    group: Option<RawGroup<'a>>,
}

/// A WorkOS directory.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkosDirectory {
    pub id: String,
    pub organization_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub state: String,
    pub domains: Vec<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl WorkosDirectory {
    pub(crate) fn from_raw(r: &RawDirectory<'_>, path: &str) -> Result<Self, FieldError> {
        let mut domains = Vec::new();
        for (i, d) in r.domains.iter().flatten().enumerate() {
            match d {
                RawDomain::Name(s) => domains.push(s.clone()),
                RawDomain::Object { domain: Some(s) } if !s.trim().is_empty() => {
                    domains.push(s.clone());
                }
                RawDomain::Object { .. } => {
                    return Err(FieldError::new(
                        field(path, &format!("domains[{i}].domain")),
                        "is required",
                    ));
                }
            }
        }
        if domains.is_empty()
            && let Some(d) = r.domain.as_deref().filter(|d| !d.trim().is_empty())
        {
            domains.push(d.to_owned());
        }
        Ok(Self {
            id: required_id(&r.id, path, "id", "directory_")?.to_owned(),
            organization_id: match &r.organization_id {
                Some(_) => Some(
                    required_id(&r.organization_id, path, "organization_id", "org_")?.to_owned(),
                ),
                None => None,
            },
            name: required(&r.name, path, "name")?.to_owned(),
            kind: required(&r.kind, path, "type")?.to_owned(),
            state: directory_state(required(&r.state, path, "state")?),
            domains,
            created_at: time(&r.created_at, path, "created_at")?,
            updated_at: time(&r.updated_at, path, "updated_at")?,
        })
    }
}

/// A directory's state in one spelling whichever API gave it: the list and
/// get APIs say `linked`/`unlinked` where events say `active`/`inactive`,
/// and a record must not depend on which path brought it.
fn directory_state(state: &str) -> String {
    match state {
        "linked" => "active".to_owned(),
        "unlinked" => "inactive".to_owned(),
        other => other.to_owned(),
    }
}

/// A WorkOS directory user.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkosDirectoryUser {
    pub id: String,
    pub directory_id: String,
    pub email: String,
    pub emails: Vec<Email>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub state: String,
    pub raw_attributes: Option<String>,
    pub custom_attributes: Option<String>,
    pub idp_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl WorkosDirectoryUser {
    pub(crate) fn from_raw(r: &RawUser<'_>, path: &str) -> Result<Self, FieldError> {
        let mut emails = Vec::new();
        for (i, e) in r.emails.iter().flatten().enumerate() {
            let at = field(path, &format!("emails[{i}]"));
            emails.push(Email {
                value: required(&e.value, &at, "value")?.to_owned(),
                kind: nonempty(&e.kind),
                primary: e.primary.unwrap_or(false),
            });
        }
        // The mapping (README, "WorkOS webhooks"): `email`; else the primary of `emails`; else the first.
        let email = match r.email.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(e) => e.to_owned(),
            None => emails
                .iter()
                .find(|e| e.primary)
                .or_else(|| emails.first())
                .map(|e| e.value.clone())
                .unwrap_or_default(),
        };
        if email.len() > MAX_ID_LEN {
            return Err(FieldError::new(field(path, "email"), "is too long"));
        }
        Ok(Self {
            id: required_id(&r.id, path, "id", "directory_user_")?.to_owned(),
            directory_id: required_id(&r.directory_id, path, "directory_id", "directory_")?
                .to_owned(),
            email,
            emails,
            first_name: owned(&r.first_name),
            last_name: owned(&r.last_name),
            state: required(&r.state, path, "state")?.to_owned(),
            raw_attributes: r.raw_attributes.map(compact_json),
            custom_attributes: r.custom_attributes.map(compact_json),
            idp_id: nonempty(&r.idp_id),
            created_at: time(&r.created_at, path, "created_at")?,
            updated_at: time(&r.updated_at, path, "updated_at")?,
        })
    }

    pub fn email_key(&self) -> String {
        email_key(&self.email)
    }
}

/// A WorkOS directory group.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkosDirectoryGroup {
    pub id: String,
    pub directory_id: String,
    pub name: String,
    pub idp_id: Option<String>,
    pub raw_attributes: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl WorkosDirectoryGroup {
    pub(crate) fn from_raw(r: &RawGroup<'_>, path: &str) -> Result<Self, FieldError> {
        Ok(Self {
            id: required_id(&r.id, path, "id", "directory_group_")?.to_owned(),
            directory_id: required_id(&r.directory_id, path, "directory_id", "directory_")?
                .to_owned(),
            name: required(&r.name, path, "name")?.to_owned(),
            idp_id: nonempty(&r.idp_id),
            raw_attributes: r.raw_attributes.map(compact_json),
            created_at: time(&r.created_at, path, "created_at")?,
            updated_at: time(&r.updated_at, path, "updated_at")?,
        })
    }
}

/// A WorkOS AuthKit user (`user_…`), as far as linking needs one.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkosUser {
    pub id: String,
    pub email: String,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl WorkosUser {
    pub(crate) fn from_raw(r: &RawAuthkitUser<'_>, path: &str) -> Result<Self, FieldError> {
        let email = required(&r.email, path, "email")?;
        if email.len() > MAX_ID_LEN {
            return Err(FieldError::new(field(path, "email"), "is too long"));
        }
        Ok(Self {
            id: required_id(&r.id, path, "id", "user_")?.to_owned(),
            email: email.to_owned(),
            created_at: time(&r.created_at, path, "created_at")?,
            updated_at: time(&r.updated_at, path, "updated_at")?,
        })
    }
}

/// A WorkOS organization membership (`om_…`): an AuthKit user's place in
/// an organization.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkosOrgMembership {
    pub id: String,
    pub user_id: String,
    pub organization_id: String,
    pub status: String,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl WorkosOrgMembership {
    pub(crate) fn from_raw(r: &RawOrgMembership<'_>, path: &str) -> Result<Self, FieldError> {
        Ok(Self {
            id: required_id(&r.id, path, "id", "om_")?.to_owned(),
            user_id: required_id(&r.user_id, path, "user_id", "user_")?.to_owned(),
            organization_id: required_id(&r.organization_id, path, "organization_id", "org_")?
                .to_owned(),
            status: required(&r.status, path, "status")?.to_owned(),
            created_at: time(&r.created_at, path, "created_at")?,
            updated_at: time(&r.updated_at, path, "updated_at")?,
        })
    }
}

impl WorkosDirectory {
    /// A directory known only by id (a deletion).
    pub fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            organization_id: None,
            name: String::new(),
            kind: String::new(),
            state: String::new(),
            domains: Vec::new(),
            created_at: None,
            updated_at: None,
        }
    }
}

impl WorkosDirectoryUser {
    /// A directory user known only by id (a deletion).
    pub fn named(directory_id: &str, id: &str) -> Self {
        Self {
            id: id.to_owned(),
            directory_id: directory_id.to_owned(),
            email: String::new(),
            emails: Vec::new(),
            first_name: None,
            last_name: None,
            state: String::new(),
            raw_attributes: None,
            custom_attributes: None,
            idp_id: None,
            created_at: None,
            updated_at: None,
        }
    }
}

impl WorkosDirectoryGroup {
    /// A directory group known only by id (a deletion).
    pub fn named(directory_id: &str, id: &str) -> Self {
        Self {
            id: id.to_owned(),
            directory_id: directory_id.to_owned(),
            name: String::new(),
            idp_id: None,
            raw_attributes: None,
            created_at: None,
            updated_at: None,
        }
    }
}

impl WorkosUser {
    /// An AuthKit user known only by id (a deletion).
    pub fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            email: String::new(),
            created_at: None,
            updated_at: None,
        }
    }
}

impl WorkosOrgMembership {
    /// A membership known only by its ids (a deletion).
    pub fn named(id: &str, user_id: &str, organization_id: &str) -> Self {
        Self {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            organization_id: organization_id.to_owned(),
            status: String::new(),
            created_at: None,
            updated_at: None,
        }
    }
}

/// Parses one object of a WorkOS list API page (`directory`,
/// `directory_user`, `directory_group`, `user`, `organization_membership`).
///
/// # Errors
/// A [`FieldError`] naming what is missing or malformed.
pub fn parse_listed<'a, R: Deserialize<'a>, T>(
    json: &'a str,
    from_raw: impl FnOnce(&R, &str) -> Result<T, FieldError>,
) -> Result<T, FieldError> {
    let raw: R = parse_json(json, "", "object")?;
    from_raw(&raw, "")
}

/// The WorkOS event types rollcall applies; anything else is
/// [`EventKind::Unknown`].
pub const APPLIED_EVENT_TYPES: &[&str] = &[
    "dsync.activated",
    "dsync.deleted",
    "dsync.user.created",
    "dsync.user.updated",
    "dsync.user.deleted",
    "dsync.group.created",
    "dsync.group.updated",
    "dsync.group.deleted",
    "dsync.group.user_added",
    "dsync.group.user_removed",
    "user.created",
    "user.updated",
    "user.deleted",
    "organization_membership.created",
    "organization_membership.updated",
    "organization_membership.deleted",
];

/// What an event asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    DirectoryActivated(WorkosDirectory),
    DirectoryDeleted(WorkosDirectory),
    UserUpserted(WorkosDirectoryUser),
    UserDeleted(WorkosDirectoryUser),
    GroupUpserted(WorkosDirectoryGroup),
    GroupDeleted(WorkosDirectoryGroup),
    MemberAdded {
        directory_id: String,
        user: WorkosDirectoryUser,
        group: WorkosDirectoryGroup,
    },
    MemberRemoved {
        directory_id: String,
        user: WorkosDirectoryUser,
        group: WorkosDirectoryGroup,
    },
    AuthkitUserUpserted(WorkosUser),
    AuthkitUserDeleted(WorkosUser),
    OrgMembershipUpserted(WorkosOrgMembership),
    OrgMembershipDeleted(WorkosOrgMembership),
    /// A type rollcall does not apply; acknowledged and ignored.
    Unknown(String),
}

impl EventKind {
    /// The WorkOS directory this event belongs to, if it is a directory event.
    pub fn workos_directory_id(&self) -> Option<&str> {
        match self {
            Self::DirectoryActivated(d) | Self::DirectoryDeleted(d) => Some(&d.id),
            Self::UserUpserted(u) | Self::UserDeleted(u) => Some(&u.directory_id),
            Self::GroupUpserted(g) | Self::GroupDeleted(g) => Some(&g.directory_id),
            Self::MemberAdded { directory_id, .. } | Self::MemberRemoved { directory_id, .. } => {
                Some(directory_id)
            }
            Self::AuthkitUserUpserted(_)
            | Self::AuthkitUserDeleted(_)
            | Self::OrgMembershipUpserted(_)
            | Self::OrgMembershipDeleted(_)
            | Self::Unknown(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// One WorkOS event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    /// The WorkOS event type, as given.
    pub event_type: String,
    pub created_at: Timestamp,
    pub kind: EventKind,
    /// The event as received, kept to hold it for a directory not yet
    /// activated.
    pub raw: Vec<u8>,
}

impl Event {
    /// Parses a webhook body or an Events API entry.
    ///
    /// # Errors
    /// A [`FieldError`] naming the first field that is missing or malformed
    /// (`body` when the bytes are not a JSON object).
    pub fn parse(bytes: &[u8]) -> Result<Self, FieldError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| FieldError::new("body", "is not valid UTF-8"))?;
        let raw: RawEvent<'_> = parse_json(text, "", "body")?;
        let id = required_id(&raw.id, "", "id", "event_")?.to_owned();
        let event_type = required(&raw.event, "", "event")?.to_owned();
        let created_at = time(&raw.created_at, "", "created_at")?
            .ok_or_else(|| FieldError::new("created_at", "is required"))?;
        let kind = if APPLIED_EVENT_TYPES.contains(&event_type.as_str()) {
            let data = raw
                .data
                .filter(|d| d.get() != "null")
                .ok_or_else(|| FieldError::new("data", "is required"))?;
            parse_kind(&event_type, data.get())?
        } else {
            EventKind::Unknown(event_type.clone())
        };
        Ok(Self {
            id,
            event_type,
            created_at,
            kind,
            raw: bytes.to_vec(),
        })
    }
}

fn parse_data<'a, T: Deserialize<'a>>(data: &'a str) -> Result<T, FieldError> {
    parse_json(data, "data", "data")
}

fn parse_kind(event_type: &str, data: &str) -> Result<EventKind, FieldError> {
    Ok(match event_type {
        "dsync.activated" | "dsync.deleted" => {
            let d = WorkosDirectory::from_raw(&parse_data(data)?, "data")?;
            if event_type == "dsync.deleted" {
                EventKind::DirectoryDeleted(d)
            } else if d.organization_id.is_none() {
                return Err(FieldError::new("data.organization_id", "is required"));
            } else {
                EventKind::DirectoryActivated(d)
            }
        }
        "dsync.user.created" | "dsync.user.updated" | "dsync.user.deleted" => {
            let u = WorkosDirectoryUser::from_raw(&parse_data(data)?, "data")?;
            if event_type == "dsync.user.deleted" {
                EventKind::UserDeleted(u)
            } else {
                EventKind::UserUpserted(u)
            }
        }
        "dsync.group.created" | "dsync.group.updated" | "dsync.group.deleted" => {
            let g = WorkosDirectoryGroup::from_raw(&parse_data(data)?, "data")?;
            if event_type == "dsync.group.deleted" {
                EventKind::GroupDeleted(g)
            } else {
                EventKind::GroupUpserted(g)
            }
        }
        "dsync.group.user_added" | "dsync.group.user_removed" => {
            let raw: RawMembershipEvent<'_> = parse_data(data)?;
            let directory_id =
                required_id(&raw.directory_id, "data", "directory_id", "directory_")?.to_owned();
            let user = raw
                .user
                .as_ref()
                .ok_or_else(|| FieldError::new("data.user", "is required"))?;
            let group = raw
                .group
                .as_ref()
                .ok_or_else(|| FieldError::new("data.group", "is required"))?;
            let user = WorkosDirectoryUser::from_raw(user, "data.user")?;
            let group = WorkosDirectoryGroup::from_raw(group, "data.group")?;
            if user.directory_id != directory_id {
                return Err(FieldError::new(
                    "data.user.directory_id",
                    "must match data.directory_id",
                ));
            }
            if group.directory_id != directory_id {
                return Err(FieldError::new(
                    "data.group.directory_id",
                    "must match data.directory_id",
                ));
            }
            if event_type.ends_with("added") {
                EventKind::MemberAdded {
                    directory_id,
                    user,
                    group,
                }
            } else {
                EventKind::MemberRemoved {
                    directory_id,
                    user,
                    group,
                }
            }
        }
        "user.created" | "user.updated" | "user.deleted" => {
            let u = WorkosUser::from_raw(&parse_data(data)?, "data")?;
            if event_type == "user.deleted" {
                EventKind::AuthkitUserDeleted(u)
            } else {
                EventKind::AuthkitUserUpserted(u)
            }
        }
        "organization_membership.created"
        | "organization_membership.updated"
        | "organization_membership.deleted" => {
            let m = WorkosOrgMembership::from_raw(&parse_data(data)?, "data")?;
            if event_type.ends_with("deleted") {
                EventKind::OrgMembershipDeleted(m)
            } else {
                EventKind::OrgMembershipUpserted(m)
            }
        }
        other => EventKind::Unknown(other.to_owned()),
    })
}

/// Parses the Char `mapped_role` spelling, for import.
pub(crate) fn parse_mapped_role(
    v: &Option<Cow<'_, str>>,
    path: &str,
) -> Result<Option<MappedRole>, FieldError> {
    match v.as_deref() {
        None => Ok(None),
        Some(s) => MappedRole::parse(s).map(Some).ok_or_else(|| {
            FieldError::new(
                field(path, "mapped_role"),
                "must be `admin`, `member` or null",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn user_json() -> Value {
        json!({
            "object": "directory_user", "id": "directory_user_01", "directory_id": "directory_01",
            "organization_id": "org_01", "idp_id": "", "email": null,
            "emails": [{"primary": false, "type": "work", "value": "b@x.com"},
                       {"primary": true, "type": "work", "value": "A@x.com"}],
            "first_name": "Ada", "last_name": null, "state": "suspended",
            "raw_attributes": {"z": 1, "a": [true]}, "custom_attributes": {},
            "created_at": "2023-04-28 20:05:31.093", "updated_at": "2023-04-28T20:05:32.000Z"
        })
    }

    fn event(data: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"id": "event_1", "event": "dsync.user.created",
                                   "created_at": "2024-01-01T00:00:00Z", "data": data}))
        .unwrap()
    }

    #[test]
    fn user_maps_email_idp_id_and_raw_attributes_like_the_contract_says() {
        let e = Event::parse(&event(user_json())).unwrap();
        let EventKind::UserUpserted(u) = e.kind else {
            panic!("{:?}", e.kind)
        };
        assert_eq!(u.email, "A@x.com");
        assert_eq!(u.idp_id, None);
        assert_eq!(u.raw_attributes.as_deref(), Some(r#"{"z":1,"a":[true]}"#));
        assert_eq!(u.state, "suspended");
    }

    #[test]
    fn raw_attributes_keep_the_idps_text_minus_whitespace() {
        let body =
            br#"{"id":"event_1","event":"dsync.user.created","created_at":"2024-01-01T00:00:00Z",
            "data":{"id":"directory_user_1","directory_id":"directory_1","state":"active",
            "raw_attributes": { "b" : 1.50, "a" : "x y\" z", "n": [ 1 , 2e3 ] } }}"#;
        let EventKind::UserUpserted(u) = Event::parse(body).unwrap().kind else {
            panic!()
        };
        assert_eq!(
            u.raw_attributes.as_deref(),
            Some(r#"{"b":1.50,"a":"x y\" z","n":[1,2e3]}"#)
        );
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let mut v = user_json();
        v["id"] = Value::Null;
        assert_eq!(
            Event::parse(&event(v.clone())).unwrap_err().field,
            "data.id"
        );
        v["id"] = json!(7);
        assert_eq!(
            Event::parse(&event(v.clone())).unwrap_err().field,
            "data.id"
        );
        v["id"] = json!("directory_user_1");
        v["emails"][1]["value"] = json!(false);
        assert_eq!(
            Event::parse(&event(v)).unwrap_err().field,
            "data.emails[1].value"
        );
        assert_eq!(Event::parse(b"[1]").unwrap_err().field, "body");
        assert_eq!(Event::parse(b"{").unwrap_err().field, "body");
        assert_eq!(Event::parse(b"\xff").unwrap_err().field, "body");
    }

    #[test]
    fn unknown_event_types_parse_without_data() {
        let e = Event::parse(
            br#"{"id": "event_1", "event": "connection.activated", "created_at": "2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Unknown("connection.activated".into()));
    }
}
