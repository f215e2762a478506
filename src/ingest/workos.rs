//! WorkOS objects and events as rollcall reads them: parsed from JSON at the
//! edge into typed values, with every rejection naming the offending field
//! (`data.user.id`). Parsing is strict about what identifies an object and
//! lenient about the rest (nulls, empty strings, either timestamp form).
//!
//! Nothing here touches the store; [`super::apply`] turns these into writes.

use serde_json::{Map, Value};

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

/// A JSON object being read, with the path it was found at.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(value: &'a Value, path: &str) -> Result<Self, FieldError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path: path.to_owned(),
            }),
            _ => Err(FieldError::new(display_path(path), "must be a JSON object")),
        }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The value under `key` as given, `null` included.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<&'a str, FieldError> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(FieldError::new(self.field(key), "must not be empty")),
            None => Err(FieldError::new(self.field(key), "is required")),
        }
    }

    /// A string with a required prefix (`directory_user_`), so ids of the
    /// wrong kind are rejected at the edge.
    pub(crate) fn req_id(&self, key: &str, prefix: &str) -> Result<&'a str, FieldError> {
        let s = self.req_str(key)?;
        if s.len() > MAX_ID_LEN {
            return Err(FieldError::new(self.field(key), "is too long"));
        }
        if !s.starts_with(prefix) {
            return Err(FieldError::new(
                self.field(key),
                format!("must start with `{prefix}`"),
            ));
        }
        Ok(s)
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(FieldError::new(self.field(key), "must be a string")),
        }
    }

    /// An optional string where empty means absent.
    pub(crate) fn opt_nonempty(&self, key: &str) -> Result<Option<String>, FieldError> {
        Ok(self
            .opt_str(key)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(FieldError::new(self.field(key), "must be a boolean")),
        }
    }

    pub(crate) fn opt_time(&self, key: &str) -> Result<Option<Timestamp>, FieldError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => Timestamp::parse_lenient(s)
                .map(Some)
                .ok_or_else(|| FieldError::new(self.field(key), "must be an RFC 3339 timestamp")),
        }
    }

    pub(crate) fn req_obj(&self, key: &str) -> Result<Obj<'a>, FieldError> {
        match self.get(key) {
            None => Err(FieldError::new(self.field(key), "is required")),
            Some(v) => Obj::new(v, &self.field(key)),
        }
    }

    pub(crate) fn opt_obj(&self, key: &str) -> Result<Option<Obj<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, &self.field(key)).map(Some),
        }
    }

    pub(crate) fn opt_array(&self, key: &str) -> Result<&'a [Value], FieldError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(FieldError::new(self.field(key), "must be an array")),
        }
    }

    /// Any JSON value, compactly re-encoded (for `raw_attributes`).
    pub(crate) fn opt_json(&self, key: &str) -> Option<String> {
        self.get(key).map(Value::to_string)
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// WorkOS ids and emails longer than this are refused (they would bloat keys).
pub const MAX_ID_LEN: usize = 256;

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
    pub(crate) fn parse(o: &Obj<'_>) -> Result<Self, FieldError> {
        let mut domains = Vec::new();
        for (i, d) in o.opt_array("domains")?.iter().enumerate() {
            let path = format!("{}.domains[{i}]", o.path());
            let domain = match d {
                Value::String(s) => s.clone(),
                other => Obj::new(other, &path)?.req_str("domain")?.to_owned(),
            };
            domains.push(domain);
        }
        Ok(Self {
            id: o.req_id("id", "directory_")?.to_owned(),
            organization_id: match o.opt_str("organization_id")? {
                Some(_) => Some(o.req_id("organization_id", "org_")?.to_owned()),
                None => None,
            },
            name: o.req_str("name")?.to_owned(),
            kind: o.req_str("type")?.to_owned(),
            state: o.req_str("state")?.to_owned(),
            domains,
            created_at: o.opt_time("created_at")?,
            updated_at: o.opt_time("updated_at")?,
        })
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
    pub(crate) fn parse(o: &Obj<'_>) -> Result<Self, FieldError> {
        let mut emails = Vec::new();
        for (i, e) in o.opt_array("emails")?.iter().enumerate() {
            let e = Obj::new(e, &format!("{}.emails[{i}]", o.path()))?;
            emails.push(Email {
                value: e.req_str("value")?.to_owned(),
                kind: e.opt_nonempty("type")?,
                primary: e.opt_bool("primary")?.unwrap_or(false),
            });
        }
        // CONTRACT: `email`; else the primary of `emails`; else the first.
        let email = match o.opt_str("email")?.filter(|s| !s.trim().is_empty()) {
            Some(e) => e.to_owned(),
            None => emails
                .iter()
                .find(|e| e.primary)
                .or_else(|| emails.first())
                .map(|e| e.value.clone())
                .unwrap_or_default(),
        };
        if email.len() > MAX_ID_LEN {
            return Err(FieldError::new(
                format!("{}.email", o.path()),
                "is too long",
            ));
        }
        Ok(Self {
            id: o.req_id("id", "directory_user_")?.to_owned(),
            directory_id: o.req_id("directory_id", "directory_")?.to_owned(),
            email,
            emails,
            first_name: o.opt_str("first_name")?.map(str::to_owned),
            last_name: o.opt_str("last_name")?.map(str::to_owned),
            state: o.req_str("state")?.to_owned(),
            raw_attributes: o.opt_json("raw_attributes"),
            custom_attributes: o.opt_json("custom_attributes"),
            idp_id: o.opt_nonempty("idp_id")?,
            created_at: o.opt_time("created_at")?,
            updated_at: o.opt_time("updated_at")?,
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
    pub(crate) fn parse(o: &Obj<'_>) -> Result<Self, FieldError> {
        Ok(Self {
            id: o.req_id("id", "directory_group_")?.to_owned(),
            directory_id: o.req_id("directory_id", "directory_")?.to_owned(),
            name: o.req_str("name")?.to_owned(),
            idp_id: o.opt_nonempty("idp_id")?,
            raw_attributes: o.opt_json("raw_attributes"),
            created_at: o.opt_time("created_at")?,
            updated_at: o.opt_time("updated_at")?,
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
    pub(crate) fn parse(o: &Obj<'_>) -> Result<Self, FieldError> {
        let email = o.req_str("email")?;
        if email.len() > MAX_ID_LEN {
            return Err(FieldError::new(
                format!("{}.email", o.path()),
                "is too long",
            ));
        }
        Ok(Self {
            id: o.req_id("id", "user_")?.to_owned(),
            email: email.to_owned(),
            created_at: o.opt_time("created_at")?,
            updated_at: o.opt_time("updated_at")?,
        })
    }
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
            Self::AuthkitUserUpserted(_) | Self::AuthkitUserDeleted(_) | Self::Unknown(_) => None,
        }
    }
}

/// One WorkOS event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    /// The WorkOS event type, as given.
    pub event_type: String,
    pub created_at: Timestamp,
    pub kind: EventKind,
    /// The event as compact JSON, kept to hold it for a directory not yet
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
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| FieldError::new("body", format!("is not valid JSON ({e})")))?;
        Self::from_value(&value)
    }

    /// Parses an already-decoded event.
    ///
    /// # Errors
    /// As [`Event::parse`].
    pub fn from_value(value: &Value) -> Result<Self, FieldError> {
        let o = Obj::new(value, "")?;
        let id = o.req_id("id", "event_")?.to_owned();
        let event_type = o.req_str("event")?.to_owned();
        let created_at = o
            .opt_time("created_at")?
            .ok_or_else(|| FieldError::new("created_at", "is required"))?;
        let kind = if APPLIED_EVENT_TYPES.contains(&event_type.as_str()) {
            let data = o.req_obj("data")?;
            parse_kind(&event_type, &data)?
        } else {
            EventKind::Unknown(event_type.clone())
        };
        Ok(Self {
            id,
            event_type,
            created_at,
            kind,
            raw: serde_json::to_vec(value).unwrap_or_default(),
        })
    }
}

fn parse_kind(event_type: &str, data: &Obj<'_>) -> Result<EventKind, FieldError> {
    Ok(match event_type {
        "dsync.activated" => {
            let d = WorkosDirectory::parse(data)?;
            if d.organization_id.is_none() {
                return Err(FieldError::new("data.organization_id", "is required"));
            }
            EventKind::DirectoryActivated(d)
        }
        "dsync.deleted" => EventKind::DirectoryDeleted(WorkosDirectory::parse(data)?),
        "dsync.user.created" | "dsync.user.updated" => {
            EventKind::UserUpserted(WorkosDirectoryUser::parse(data)?)
        }
        "dsync.user.deleted" => EventKind::UserDeleted(WorkosDirectoryUser::parse(data)?),
        "dsync.group.created" | "dsync.group.updated" => {
            EventKind::GroupUpserted(WorkosDirectoryGroup::parse(data)?)
        }
        "dsync.group.deleted" => EventKind::GroupDeleted(WorkosDirectoryGroup::parse(data)?),
        "dsync.group.user_added" | "dsync.group.user_removed" => {
            let directory_id = data.req_id("directory_id", "directory_")?.to_owned();
            let user = WorkosDirectoryUser::parse(&data.req_obj("user")?)?;
            let group = WorkosDirectoryGroup::parse(&data.req_obj("group")?)?;
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
        "user.created" | "user.updated" => EventKind::AuthkitUserUpserted(WorkosUser::parse(data)?),
        "user.deleted" => EventKind::AuthkitUserDeleted(WorkosUser::parse(data)?),
        other => EventKind::Unknown(other.to_owned()),
    })
}

/// Parses the Char `mapped_role` spelling, for import.
pub(crate) fn parse_mapped_role(o: &Obj<'_>, key: &str) -> Result<Option<MappedRole>, FieldError> {
    match o.opt_str(key)? {
        None => Ok(None),
        Some(s) => MappedRole::parse(s).map(Some).ok_or_else(|| {
            FieldError::new(
                format!("{}.{key}", o.path()),
                "must be `admin`, `member` or null",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn user_maps_email_idp_id_and_raw_attributes_like_the_contract_says() {
        let v = user_json();
        let u = WorkosDirectoryUser::parse(&Obj::new(&v, "data").unwrap()).unwrap();
        assert_eq!(u.email, "A@x.com");
        assert_eq!(u.idp_id, None);
        assert_eq!(u.raw_attributes.as_deref(), Some(r#"{"z":1,"a":[true]}"#));
        assert_eq!(u.state, "suspended");
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let mut v = json!({"id": "event_1", "event": "dsync.user.created",
                           "created_at": "2024-01-01T00:00:00Z", "data": user_json()});
        v["data"]["id"] = Value::Null;
        assert_eq!(Event::from_value(&v).unwrap_err().field, "data.id");
        v["data"]["id"] = json!(7);
        assert_eq!(Event::from_value(&v).unwrap_err().field, "data.id");
        v["data"]["id"] = json!("directory_user_1");
        v["data"]["emails"][1]["value"] = json!(false);
        assert_eq!(
            Event::from_value(&v).unwrap_err().field,
            "data.emails[1].value"
        );
        assert_eq!(Event::parse(b"[1]").unwrap_err().field, "body");
        assert_eq!(Event::parse(b"{").unwrap_err().field, "body");
    }

    #[test]
    fn unknown_event_types_parse_without_data() {
        let v = json!({"id": "event_1", "event": "connection.activated",
                       "created_at": "2024-01-01T00:00:00Z"});
        let e = Event::from_value(&v).unwrap();
        assert_eq!(e.kind, EventKind::Unknown("connection.activated".into()));
    }
}
