//! Record encoding: a format version byte, then the record.
//!
//! Users and groups are stored as `[version][tag][json length u32 LE]
//! [Char JSON][bincode extras]`: the JSON the API serves is rendered once,
//! on write, and a list is a copy of those slices — no decoding on the read
//! path. The JSON is also the record's main body: decoding reads the Char
//! fields back from it, and the bincode extras carry only what the JSON does
//! not (exact timestamps, WorkOS provenance, emails), so a user costs about
//! 1 KB on disk instead of twice its JSON. The tag byte carries what list
//! filters need (bit 0: inactive). Other records are `[version][bincode]`.
//! bincode is used through its serde support only here, so it can be
//! swapped by bumping the version.
//!
//! A decode failure is a [`CodecError`], never a panic.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{
    AuthkitUser, Directory, DirectoryGroup, DirectoryGroupId, DirectoryId, DirectoryUser,
    DirectoryUserId, Email, MappedRole, OrgMembership, Provenance, ScimDirectory, Timestamp,
    UserState,
};

/// The only record format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// A stored value that cannot be read back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    #[error("record format version {0} is unknown to this build")]
    UnknownVersion(u8),
    #[error("record is truncated")]
    Truncated,
    #[error("record body is malformed: {0}")]
    Malformed(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

fn encode_plain<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding into a Vec only fails for types serde cannot express in
    // bincode (maps with unknown length, `skip_serializing_if`); the model
    // uses none of those, and the unit tests below round-trip every record.
    if let Err(e) = bincode::serde::encode_into_std_write(value, &mut out, config()) {
        tracing::error!(error = %e, "record encoding failed");
    }
    out
}

fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

/// Tag bit: the user is inactive.
pub const TAG_INACTIVE: u8 = 1;

fn encode_rendered<T: Serialize>(tag: u8, json: &[u8], value: &T) -> Vec<u8> {
    let record = encode_plain(value);
    let mut out = Vec::with_capacity(6 + json.len() + record.len() - 1);
    out.push(FORMAT_VERSION);
    out.push(tag);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(&record[1..]);
    out
}

/// Splits a rendered envelope into `(tag, json, bincode record)`.
fn split_rendered(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (&tag, rest) = rest.split_first().ok_or(CodecError::Truncated)?;
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(CodecError::Truncated)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let json = rest.get(4..4 + len).ok_or(CodecError::Truncated)?;
    Ok((tag, json, &rest[4 + len..]))
}

/// Decodes the extras of a rendered envelope, and hands back its JSON.
fn decode_rendered<T: DeserializeOwned>(bytes: &[u8]) -> Result<(&[u8], T), CodecError> {
    let (_, json, body) = split_rendered(bytes)?;
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed("trailing bytes".into()));
    }
    Ok((json, value))
}

fn parse_id<T>(s: &str, make: fn(uuid::Uuid) -> T) -> Result<T, CodecError> {
    uuid::Uuid::try_parse(s)
        .map(make)
        .map_err(|_| CodecError::Malformed(format!("bad id {s:?}")))
}

fn owned(v: Option<Cow<'_, str>>) -> Option<String> {
    v.map(Cow::into_owned)
}

/// A user's fields that its Char JSON does not carry.
#[derive(Serialize, Deserialize)]
struct UserExtras {
    created_at: Timestamp,
    updated_at: Timestamp,
    workos_state: String,
    /// `None`: exactly one email, the primary `work` one, equal to `email`
    /// (the common case, not stored twice).
    emails: Option<Vec<Email>>,
    custom_attributes: Option<String>,
    source: Provenance,
}

/// A user's Char JSON, read back.
#[derive(Deserialize)]
struct UserJson<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    directory_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    workos_directory_user_id: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    #[serde(borrow)]
    first_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    last_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Cow<'a, str>,
    #[serde(borrow)]
    raw_attributes: Option<Cow<'a, str>>,
    #[serde(borrow)]
    idp_id: Option<Cow<'a, str>>,
}

fn single_work_email(u: &DirectoryUser) -> bool {
    matches!(u.emails.as_slice(), [e] if e.primary && e.value == u.email && e.kind.as_deref() == Some("work"))
}

/// A group's fields that its Char JSON does not carry.
#[derive(Serialize, Deserialize)]
struct GroupExtras {
    created_at: Timestamp,
    updated_at: Timestamp,
    source: Provenance,
}

#[derive(Deserialize)]
struct GroupJson<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    directory_id: Cow<'a, str>,
    #[serde(borrow)]
    workos_directory_group_id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    idp_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    raw_attributes: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mapped_role: Option<Cow<'a, str>>,
}

/// The tag and pre-rendered Char JSON of a stored user or group, without
/// decoding the record.
///
/// # Errors
/// When the envelope is truncated or of an unknown version.
pub fn rendered_json(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    split_rendered(bytes).map(|(tag, json, _)| (tag, json))
}

/// Directories are at format 2: format 1 (schema 1) had no list digests.
const DIRECTORY_VERSION: u8 = 2;

/// A directory as schema 1 wrote it, read only to migrate it.
#[derive(Deserialize)]
struct DirectoryV1 {
    id: DirectoryId,
    organization_id: String,
    workos_directory_id: String,
    name: String,
    workos_type: String,
    workos_state: String,
    domains: Vec<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    user_count: u64,
    group_count: u64,
    revision: u64,
    source: Provenance,
}

pub fn encode_directory(d: &Directory) -> Vec<u8> {
    let mut out = encode_plain(d);
    out[0] = DIRECTORY_VERSION;
    out
}

/// Reads format 2, and format 1 (without digests) for migration.
///
/// # Errors
/// When the bytes are not a directory record of either format.
pub fn decode_directory(bytes: &[u8]) -> Result<Directory, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Truncated)?;
    let mut plain = Vec::with_capacity(bytes.len());
    plain.push(FORMAT_VERSION);
    plain.extend_from_slice(body);
    match version {
        DIRECTORY_VERSION => decode_plain(&plain),
        FORMAT_VERSION => {
            let d: DirectoryV1 = decode_plain(&plain)?;
            Ok(Directory {
                id: d.id,
                organization_id: d.organization_id,
                workos_directory_id: d.workos_directory_id,
                name: d.name,
                workos_type: d.workos_type,
                workos_state: d.workos_state,
                domains: d.domains,
                created_at: d.created_at,
                updated_at: d.updated_at,
                user_count: d.user_count,
                group_count: d.group_count,
                revision: d.revision,
                users_digest: 0,
                groups_digest: 0,
                source: d.source,
            })
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

pub fn encode_user(u: &DirectoryUser) -> Vec<u8> {
    let tag = if u.state == UserState::Inactive {
        TAG_INACTIVE
    } else {
        0
    };
    let extras = UserExtras {
        created_at: u.created_at,
        updated_at: u.updated_at,
        workos_state: u.workos_state.clone(),
        emails: (!single_work_email(u)).then(|| u.emails.clone()),
        custom_attributes: u.custom_attributes.clone(),
        source: u.source.clone(),
    };
    encode_rendered(tag, &u.to_json(), &extras)
}

/// # Errors
/// When the bytes are not a user record of this format.
pub fn decode_user(bytes: &[u8]) -> Result<DirectoryUser, CodecError> {
    let (json, extras): (_, UserExtras) = decode_rendered(bytes)?;
    let j: UserJson<'_> =
        serde_json::from_slice(json).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let state = UserState::parse(&j.state)
        .ok_or_else(|| CodecError::Malformed(format!("bad state {:?}", j.state)))?;
    let email = j.email.into_owned();
    let emails = extras.emails.unwrap_or_else(|| {
        vec![Email {
            value: email.clone(),
            kind: Some("work".to_owned()),
            primary: true,
        }]
    });
    Ok(DirectoryUser {
        id: parse_id(&j.id, DirectoryUserId)?,
        directory_id: parse_id(&j.directory_id, DirectoryId)?,
        user_id: owned(j.user_id),
        workos_directory_user_id: j.workos_directory_user_id.into_owned(),
        email,
        first_name: owned(j.first_name),
        last_name: owned(j.last_name),
        state,
        raw_attributes: owned(j.raw_attributes),
        idp_id: owned(j.idp_id),
        created_at: extras.created_at,
        updated_at: extras.updated_at,
        workos_state: extras.workos_state,
        emails,
        custom_attributes: extras.custom_attributes,
        source: extras.source,
    })
}

pub fn encode_group(g: &DirectoryGroup) -> Vec<u8> {
    let extras = GroupExtras {
        created_at: g.created_at,
        updated_at: g.updated_at,
        source: g.source.clone(),
    };
    encode_rendered(0, &g.to_json(), &extras)
}

/// # Errors
/// When the bytes are not a group record of this format.
pub fn decode_group(bytes: &[u8]) -> Result<DirectoryGroup, CodecError> {
    let (json, extras): (_, GroupExtras) = decode_rendered(bytes)?;
    let j: GroupJson<'_> =
        serde_json::from_slice(json).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let mapped_role = match j.mapped_role.as_deref() {
        None => None,
        Some(r) => Some(
            MappedRole::parse(r)
                .ok_or_else(|| CodecError::Malformed(format!("bad mapped_role {r:?}")))?,
        ),
    };
    Ok(DirectoryGroup {
        id: parse_id(&j.id, DirectoryGroupId)?,
        directory_id: parse_id(&j.directory_id, DirectoryId)?,
        workos_directory_group_id: j.workos_directory_group_id.into_owned(),
        name: j.name.into_owned(),
        idp_id: owned(j.idp_id),
        raw_attributes: owned(j.raw_attributes),
        mapped_role,
        created_at: extras.created_at,
        updated_at: extras.updated_at,
        source: extras.source,
    })
}

pub fn encode_authkit_user(u: &AuthkitUser) -> Vec<u8> {
    encode_plain(u)
}

/// # Errors
/// When the bytes are not an AuthKit user record of this format.
pub fn decode_authkit_user(bytes: &[u8]) -> Result<AuthkitUser, CodecError> {
    decode_plain(bytes)
}

pub fn encode_org_membership(m: &OrgMembership) -> Vec<u8> {
    encode_plain(m)
}

/// # Errors
/// When the bytes are not an organization membership record of this format.
pub fn decode_org_membership(bytes: &[u8]) -> Result<OrgMembership, CodecError> {
    decode_plain(bytes)
}

pub fn encode_scim_directory(s: &ScimDirectory) -> Vec<u8> {
    encode_plain(s)
}

/// # Errors
/// When the bytes are not a SCIM directory record of this format.
pub fn decode_scim_directory(bytes: &[u8]) -> Result<ScimDirectory, CodecError> {
    decode_plain(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn user() -> DirectoryUser {
        DirectoryUser {
            id: DirectoryUserId::new_v7(),
            directory_id: DirectoryId::new_v7(),
            user_id: None,
            workos_directory_user_id: "directory_user_01".into(),
            email: "a@example.com".into(),
            first_name: Some("Ada".into()),
            last_name: None,
            state: UserState::Active,
            raw_attributes: Some("{\"a\":1}".into()),
            idp_id: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
            workos_state: "active".into(),
            emails: vec![Email {
                value: "a@example.com".into(),
                kind: Some("work".into()),
                primary: true,
            }],
            custom_attributes: None,
            source: Provenance::default(),
        }
    }

    #[test]
    fn user_round_trips_and_exposes_its_json() {
        let u = user();
        let bytes = encode_user(&u);
        assert_eq!(decode_user(&bytes).unwrap(), u);
        assert_eq!(rendered_json(&bytes).unwrap(), (0, u.to_json().as_slice()));

        let mut other = user();
        other.emails.push(Email {
            value: "second@example.com".into(),
            kind: None,
            primary: false,
        });
        other.state = UserState::Inactive;
        other.raw_attributes = Some("{\"quote\":\"\\\"\",\"uni\":\"Zoë\"}".into());
        other.user_id = Some("user_01".into());
        other.created_at = Timestamp(1_700_000_000_123_456);
        let bytes = encode_user(&other);
        assert_eq!(decode_user(&bytes).unwrap(), other);
        assert_eq!(rendered_json(&bytes).unwrap().0, TAG_INACTIVE);
    }

    #[test]
    fn group_round_trips() {
        let g = DirectoryGroup {
            id: DirectoryGroupId::new_v7(),
            directory_id: DirectoryId::new_v7(),
            workos_directory_group_id: "directory_group_01".into(),
            name: "Eng \"core\"".into(),
            idp_id: None,
            raw_attributes: Some("{}".into()),
            mapped_role: Some(MappedRole::Admin),
            created_at: Timestamp(5),
            updated_at: Timestamp(6),
            source: Provenance::default(),
        };
        assert_eq!(decode_group(&encode_group(&g)).unwrap(), g);
    }

    #[test]
    fn truncated_and_foreign_bytes_are_errors() {
        let bytes = encode_user(&user());
        for cut in [0, 1, 3, 6, bytes.len() - 1] {
            assert!(decode_user(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(
            decode_user(&wrong),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(decode_directory(&[FORMAT_VERSION, 0xff, 0xff]).is_err());
    }
}
