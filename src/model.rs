//! The domain records rollcall keeps — directories, directory users, directory
//! groups — with typed ids and the exact JSON shape of the Char Directories API.
//!
//! This module owns the Char rendering (`to_json`): key order, nulls and
//! RFC 3339 timestamps are decided here and nowhere else. It also owns how a
//! record's id and times derive from its source ([`derive_id`], the README's
//! "Determinism"): every instance computes the same answer from the same
//! WorkOS data. It knows nothing of
//! storage or HTTP; the `Serialize`/`Deserialize` derives exist for the store's
//! codec, which wraps them in a versioned envelope.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The id a record with this source id and `created_at` gets
            /// (see [`derive_id`]).
            pub fn derive(source_id: &str, created_at: Timestamp) -> Self {
                Self(derive_id(source_id, created_at, 0))
            }

            /// A fresh, random UUIDv7 — for tests and tools; records get
            /// [`Self::derive`]d ids.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical hyphenated (or simple) UUID form.
            ///
            /// # Errors
            /// When `s` is not a UUID.
            pub fn parse(s: &str) -> Result<Self, uuid::Error> {
                Uuid::try_parse(s).map(Self)
            }

            /// The id as a big-endian integer, the form the store keys on.
            pub fn as_u128(self) -> u128 {
                self.0.as_u128()
            }

            /// The id from its key form.
            pub fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

typed_id!(
    /// Internal id of a directory.
    DirectoryId
);
typed_id!(
    /// Internal id of a directory-user record.
    DirectoryUserId
);
typed_id!(
    /// Internal id of a directory-group record.
    DirectoryGroupId
);

/// The id of a record derived from its source object: a UUID in the
/// version-7 layout whose millisecond field is the object's `created_at` and
/// whose other 74 bits come from SHA-256 of the source id (`directory_…`,
/// `directory_user_…`, `directory_group_…`). Ids therefore sort in the
/// source's creation order, and every instance, rebuild and restore
/// computes the same id for the same object.
///
/// `probe` is 0 but after a collision (two source ids of one directory with
/// the same millisecond and the same 74 hash bits): the colliding record then
/// takes the next probe, hashed as `<source id>#<probe>` (see
/// `ingest::apply`).
pub fn derive_id(source_id: &str, created_at: Timestamp, probe: u32) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(source_id.as_bytes());
    if probe > 0 {
        hash.update(format!("#{probe}").as_bytes());
    }
    let digest = collide_in_tests(source_id, probe, hash.finalize().into());
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(created_at.as_millis()).unwrap_or(0) & ((1 << 48) - 1);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
}

/// Unit tests force collisions: a source id containing `COLLIDE` hashes to
/// the same bits (per probe) as every other such id. Real builds never do.
#[cfg(test)]
fn collide_in_tests(source_id: &str, probe: u32, digest: [u8; 32]) -> [u8; 32] {
    if source_id.contains("COLLIDE") && probe == 0 {
        [0x5a; 32]
    } else {
        digest
    }
}

#[cfg(not(test))]
fn collide_in_tests(_: &str, _: u32, digest: [u8; 32]) -> [u8; 32] {
    digest
}

/// A point in time, microseconds since the Unix epoch, always UTC.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// From milliseconds since the epoch.
    pub fn from_millis(ms: i64) -> Self {
        Self(ms.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The earliest time accepted from outside: 1970-01-01T00:00:00Z.
    pub const MIN: Self = Self(0);
    /// The latest time accepted from outside: 9999-12-31T23:59:59.999999Z.
    pub const MAX: Self = Self(253_402_300_799_999_999);

    /// Parses RFC 3339, or WorkOS's `2023-04-28 20:05:31.093` form read as UTC.
    /// Only years 1970–9999 are accepted: every accepted time renders back
    /// to RFC 3339 and parses again to the same value (what export → import
    /// relies on), and no WorkOS object predates 1970.
    pub fn parse_lenient(s: &str) -> Option<Self> {
        let s = s.trim();
        let micros = if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            dt.with_timezone(&Utc).timestamp_micros()
        } else {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
                .map(|naive| Utc.from_utc_datetime(&naive).timestamp_micros())?
        };
        (Self::MIN.0..=Self::MAX.0)
            .contains(&micros)
            .then_some(Self(micros))
    }

    /// RFC 3339 in UTC with millisecond precision and a `Z` suffix (the API form).
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; 24];
        match self.rfc3339_millis(&mut buf) {
            Some(s) => s.to_owned(),
            None => self.format(SecondsFormat::Millis),
        }
    }

    /// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf` without allocating (this
    /// runs twice per record rendered); `None` outside years 0–9999.
    pub fn rfc3339_millis(self, buf: &mut [u8; 24]) -> Option<&str> {
        let secs = self.0.div_euclid(1_000_000);
        let millis = self.0.rem_euclid(1_000_000) / 1000;
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut put = |at: usize, value: i64, width: usize| {
            let mut v = value;
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, sod / 3600, 2);
        put(14, sod % 3600 / 60, 2);
        put(17, sod % 60, 2);
        put(20, millis, 3);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ] {
            buf[at] = c;
        }
        std::str::from_utf8(buf).ok()
    }

    /// RFC 3339 in UTC with full (microsecond) precision, for export.
    pub fn to_rfc3339_exact(self) -> String {
        self.format(SecondsFormat::Micros)
    }

    fn format(self, precision: SecondsFormat) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(precision, true)
    }
}

impl Serialize for RfcTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        match self.0.rfc3339_millis(&mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&self.0.to_rfc3339()),
        }
    }
}

/// Serializes a [`Timestamp`] as RFC 3339 (the API form; the store keeps integers).
struct RfcTime(Timestamp);

/// `active` or `inactive`, the two states Char knows for a directory user.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum UserState {
    Active,
    Inactive,
}

impl UserState {
    /// The Char spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }

    /// Maps a WorkOS directory-user state: `active` is active; `inactive`,
    /// `suspended` and anything unknown are inactive.
    pub fn from_workos(state: &str) -> Self {
        if state.eq_ignore_ascii_case("active") {
            Self::Active
        } else {
            Self::Inactive
        }
    }

    /// Parses the Char spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// `active`, `inactive` or `deleting`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum DirectoryState {
    Active,
    Inactive,
    Deleting,
}

impl DirectoryState {
    /// The Char spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Deleting => "deleting",
        }
    }

    /// Maps a WorkOS directory state: `active` (and the legacy `linked`, which
    /// the WorkOS SDKs read as `active`) is active, `deleting` is deleting,
    /// everything else is inactive.
    pub fn from_workos(state: &str) -> Self {
        match state.to_ascii_lowercase().as_str() {
            "active" | "linked" => Self::Active,
            "deleting" => Self::Deleting,
            _ => Self::Inactive,
        }
    }
}

/// The role a group maps to in Char, when one is configured.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum MappedRole {
    Admin,
    Member,
}

impl MappedRole {
    /// The Char spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// Parses the Char spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// Maps a WorkOS directory type to Char's: lower-cased, ` v2.0` dropped,
/// spaces to `_`; `gsuite directory` is `google_workspace`.
pub fn char_directory_type(workos_type: &str) -> String {
    let lower = workos_type.trim().to_ascii_lowercase();
    if lower == "gsuite directory" {
        return "google_workspace".to_owned();
    }
    let trimmed = lower.strip_suffix(" v2.0").unwrap_or(&lower);
    trimmed.replace(' ', "_")
}

/// One email of a WorkOS directory user, kept for export fidelity.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Email {
    pub value: String,
    pub kind: Option<String>,
    pub primary: bool,
}

/// What WorkOS said about an object, kept beside the Char record: used for
/// ordering (`updated_at`) and to export the object in WorkOS's shape.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// WorkOS's own `created_at`.
    pub created_at: Timestamp,
    /// WorkOS's own `updated_at`: an incoming object older than this changes nothing.
    pub updated_at: Timestamp,
}

/// What the ingestion rules need from every stored record.
pub trait Record: Clone + PartialEq {
    /// WorkOS's `updated_at` of the object this record was written from:
    /// an incoming version older than this changes nothing.
    fn source_version(&self) -> Timestamp;
    /// The source object's id (`directory_…`, `directory_user_…`,
    /// `directory_group_…`).
    fn source_id(&self) -> &str;
    /// The source data only, canonically encoded: of two different versions
    /// with the same `updated_at`, the one with the greater tiebreak wins, so
    /// every instance keeps the same one whatever order they arrived in.
    fn tiebreak(&self) -> Vec<u8>;
}

impl Record for Directory {
    fn source_version(&self) -> Timestamp {
        self.source.updated_at
    }
    fn source_id(&self) -> &str {
        &self.workos_directory_id
    }
    fn tiebreak(&self) -> Vec<u8> {
        to_vec(&(
            &self.organization_id,
            &self.name,
            &self.workos_type,
            &self.workos_state,
            &self.domains,
            self.source.created_at,
        ))
    }
}

impl Record for DirectoryUser {
    fn source_version(&self) -> Timestamp {
        self.source.updated_at
    }
    fn source_id(&self) -> &str {
        &self.workos_directory_user_id
    }
    fn tiebreak(&self) -> Vec<u8> {
        to_vec(&(
            &self.email,
            &self.emails,
            &self.first_name,
            &self.last_name,
            &self.workos_state,
            &self.raw_attributes,
            &self.custom_attributes,
            &self.idp_id,
            self.source.created_at,
        ))
    }
}

impl Record for DirectoryGroup {
    fn source_version(&self) -> Timestamp {
        self.source.updated_at
    }
    fn source_id(&self) -> &str {
        &self.workos_directory_group_id
    }
    fn tiebreak(&self) -> Vec<u8> {
        to_vec(&(
            &self.name,
            &self.idp_id,
            &self.raw_attributes,
            self.mapped_role.map(MappedRole::as_str),
            self.source.created_at,
        ))
    }
}

/// The digest of a set of rendered records that a list's ETag is made
/// from: the sum (mod 2^128) of the first 16 bytes of each record's SHA-256.
/// A sum is order-free and can be kept up to date on every write (add the
/// new rendering, subtract the old), so it is the same on every instance
/// that holds the same records, however they arrived.
pub fn json_digest(json: &[u8]) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(json);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A directory connection of an organization.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Directory {
    pub id: DirectoryId,
    pub organization_id: String,
    pub workos_directory_id: String,
    pub name: String,
    /// WorkOS's type as given (`okta scim v2.0`); the Char `type` derives from it.
    pub workos_type: String,
    /// WorkOS's state as given (`active`, `invalid_credentials` …).
    pub workos_state: String,
    /// Every domain WorkOS listed; the Char `domain` is the first.
    pub domains: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub user_count: u64,
    pub group_count: u64,
    /// Bumped by every write that changes the directory, its users or
    /// groups: what this instance's caches are keyed by (never served).
    pub revision: u64,
    /// [`json_digest`]s of the users' and the groups' rendered records,
    /// summed: what list ETags are made from (the same on every instance).
    pub users_digest: u128,
    pub groups_digest: u128,
    pub source: Provenance,
}

impl Directory {
    /// The Char `type`.
    pub fn kind(&self) -> String {
        char_directory_type(&self.workos_type)
    }

    /// The Char `state`.
    pub fn state(&self) -> DirectoryState {
        DirectoryState::from_workos(&self.workos_state)
    }

    /// The Char `domain`.
    pub fn domain(&self) -> Option<&str> {
        self.domains.first().map(String::as_str)
    }

    /// The Char JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct View<'a> {
            id: String,
            organization_id: &'a str,
            workos_directory_id: &'a str,
            name: &'a str,
            r#type: String,
            state: &'static str,
            domain: Option<&'a str>,
            created_at: RfcTime,
            updated_at: RfcTime,
            user_count: u64,
            group_count: u64,
        }
        to_vec(&View {
            id: self.id.to_string(),
            organization_id: &self.organization_id,
            workos_directory_id: &self.workos_directory_id,
            name: &self.name,
            r#type: self.kind(),
            state: self.state().as_str(),
            domain: self.domain(),
            created_at: RfcTime(self.created_at),
            updated_at: RfcTime(self.updated_at),
            user_count: self.user_count,
            group_count: self.group_count,
        })
    }
}

/// A user of a directory, as the identity provider describes them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub id: DirectoryUserId,
    pub directory_id: DirectoryId,
    /// The linked AuthKit user (`user_…`), once one with the same email is known.
    pub user_id: Option<String>,
    pub workos_directory_user_id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub state: UserState,
    /// The IdP's raw attributes, JSON-encoded.
    pub raw_attributes: Option<String>,
    pub idp_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// WorkOS's state as given (`suspended` …), for export.
    pub workos_state: String,
    pub emails: Vec<Email>,
    /// WorkOS `custom_attributes`, JSON-encoded, for export.
    pub custom_attributes: Option<String>,
    pub source: Provenance,
}

impl DirectoryUser {
    /// The email as the indexes key it: trimmed and lower-cased.
    pub fn email_key(&self) -> String {
        email_key(&self.email)
    }

    /// The Char JSON object: exactly the 12 documented keys, in order.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct View<'a> {
            id: String,
            directory_id: String,
            user_id: Option<&'a str>,
            workos_directory_user_id: &'a str,
            email: &'a str,
            first_name: Option<&'a str>,
            last_name: Option<&'a str>,
            state: &'static str,
            raw_attributes: Option<&'a str>,
            idp_id: Option<&'a str>,
            created_at: RfcTime,
            updated_at: RfcTime,
        }
        to_vec(&View {
            id: self.id.to_string(),
            directory_id: self.directory_id.to_string(),
            user_id: self.user_id.as_deref(),
            workos_directory_user_id: &self.workos_directory_user_id,
            email: &self.email,
            first_name: self.first_name.as_deref(),
            last_name: self.last_name.as_deref(),
            state: self.state.as_str(),
            raw_attributes: self.raw_attributes.as_deref(),
            idp_id: self.idp_id.as_deref(),
            created_at: RfcTime(self.created_at),
            updated_at: RfcTime(self.updated_at),
        })
    }
}

/// A group of a directory.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DirectoryGroup {
    pub id: DirectoryGroupId,
    pub directory_id: DirectoryId,
    pub workos_directory_group_id: String,
    pub name: String,
    pub idp_id: Option<String>,
    pub raw_attributes: Option<String>,
    pub mapped_role: Option<MappedRole>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub source: Provenance,
}

impl DirectoryGroup {
    /// The Char JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct View<'a> {
            id: String,
            directory_id: String,
            workos_directory_group_id: &'a str,
            name: &'a str,
            idp_id: Option<&'a str>,
            raw_attributes: Option<&'a str>,
            mapped_role: Option<&'static str>,
            created_at: RfcTime,
            updated_at: RfcTime,
        }
        to_vec(&View {
            id: self.id.to_string(),
            directory_id: self.directory_id.to_string(),
            workos_directory_group_id: &self.workos_directory_group_id,
            name: &self.name,
            idp_id: self.idp_id.as_deref(),
            raw_attributes: self.raw_attributes.as_deref(),
            mapped_role: self.mapped_role.map(MappedRole::as_str),
            created_at: RfcTime(self.created_at),
            updated_at: RfcTime(self.updated_at),
        })
    }
}

/// An AuthKit user as far as linking needs one: its id and email.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AuthkitUser {
    pub id: String,
    pub email: String,
    pub source: Provenance,
}

/// An AuthKit user's membership of an organization (WorkOS
/// `organization_membership`): what decides whether a directory user of
/// that organization may be linked to the AuthKit user.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OrgMembership {
    /// WorkOS's `om_…` id.
    pub id: String,
    /// The AuthKit user (`user_…`).
    pub user_id: String,
    pub organization_id: String,
    /// WorkOS's status as given: `active`, `pending` or `inactive`.
    pub status: String,
    pub source: Provenance,
}

impl OrgMembership {
    /// Only an active membership links: a pending one is an invitation
    /// not yet accepted, an inactive one a person who left.
    pub fn is_active(&self) -> bool {
        self.status.eq_ignore_ascii_case("active")
    }
}

/// Where a SCIM-fed directory's `workos_directory_id` starts: WorkOS ids
/// never do (`directory_…`), so WorkOS sync and SCIM can each tell the
/// other's directories apart without a lookup.
pub const SCIM_DIRECTORY_PREFIX: &str = "scim_directory_";

impl Directory {
    /// Whether this directory is fed by SCIM (created with `rollcall
    /// directory create`) rather than by WorkOS.
    pub fn is_scim(&self) -> bool {
        is_scim_directory_id(&self.workos_directory_id)
    }
}

/// Whether a `workos_directory_id` names a SCIM-fed directory.
pub fn is_scim_directory_id(id: &str) -> bool {
    id.starts_with(SCIM_DIRECTORY_PREFIX)
}

/// The identity provider a SCIM directory is fed by: what its Char `type`
/// says.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ScimProvider {
    Okta,
    Entra,
    OneLogin,
    JumpCloud,
    Generic,
}

impl ScimProvider {
    /// Every provider, in the order `--provider` lists them.
    pub const ALL: [Self; 5] = [
        Self::Okta,
        Self::Entra,
        Self::OneLogin,
        Self::JumpCloud,
        Self::Generic,
    ];

    /// The `--provider` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Okta => "okta",
            Self::Entra => "entra",
            Self::OneLogin => "onelogin",
            Self::JumpCloud => "jumpcloud",
            Self::Generic => "generic",
        }
    }

    /// Parses the `--provider` spelling (case-insensitive; `azure` is Entra).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "okta" => Some(Self::Okta),
            "entra" | "azure" => Some(Self::Entra),
            "onelogin" => Some(Self::OneLogin),
            "jumpcloud" => Some(Self::JumpCloud),
            "generic" => Some(Self::Generic),
            _ => None,
        }
    }

    /// The directory type WorkOS gives this provider's SCIM directories, so
    /// the Char `type` is the same as for one fed through WorkOS
    /// (`okta_scim`, `azure_scim`, …).
    pub fn workos_type(self) -> &'static str {
        match self {
            Self::Okta => "okta scim v2.0",
            Self::Entra => "azure scim v2.0",
            Self::OneLogin => "onelogin scim v2.0",
            Self::JumpCloud => "jump cloud scim v2.0",
            Self::Generic => "generic scim v2.0",
        }
    }
}

/// What makes a directory SCIM-fed: its provider and the SHA-256 of its
/// bearer token (the token itself is shown once and never stored).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ScimDirectory {
    pub id: DirectoryId,
    pub provider: ScimProvider,
    pub token_sha256: [u8; 32],
    /// When the current token was issued.
    pub token_issued_at: Timestamp,
}

/// The attributes a SCIM directory indexes, each a key range per
/// directory: what makes `filter=userName eq "…"` a lookup, not a scan.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ScimKey {
    /// A user's `userName`, lower-cased (unique in the directory).
    UserName = 1,
    /// A user's `externalId`, as given (case-exact).
    UserExternalId = 2,
    /// Every `emails[].value` of a user, lower-cased.
    UserEmail = 3,
    /// A group's `displayName`, lower-cased.
    GroupName = 4,
    /// A group's `externalId`, as given.
    GroupExternalId = 5,
}

/// The form emails are compared in: trimmed, lower-cased.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings, integers and options into a Vec
    // cannot fail: there is no I/O and no map with non-string keys.
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_types_map_like_the_contract_says() {
        assert_eq!(char_directory_type("okta scim v2.0"), "okta_scim");
        assert_eq!(char_directory_type("azure scim v2.0"), "azure_scim");
        assert_eq!(char_directory_type("gsuite directory"), "google_workspace");
        assert_eq!(char_directory_type("Generic SCIM v2.0"), "generic_scim");
        assert_eq!(char_directory_type("bamboohr"), "bamboohr");
    }

    #[test]
    fn timestamps_parse_leniently_and_render_as_utc_z() {
        let a = Timestamp::parse_lenient("2023-04-28 20:05:31.093").unwrap();
        let b = Timestamp::parse_lenient("2023-04-28T20:05:31.093Z").unwrap();
        let c = Timestamp::parse_lenient("2023-04-28T22:05:31.093+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_rfc3339(), "2023-04-28T20:05:31.093Z");
        assert!(Timestamp::parse_lenient("yesterday").is_none());
    }

    #[test]
    fn only_years_1970_to_9999_are_accepted() {
        for bad in [
            "-262143-01-01 00:00:00",
            "1969-12-31T23:59:59.999Z",
            "+10000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z\u{0}",
        ] {
            assert_eq!(Timestamp::parse_lenient(bad), None, "{bad}");
        }
        for good in [
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31 23:59:59.999",
        ] {
            let t = Timestamp::parse_lenient(good).unwrap();
            assert_eq!(
                Timestamp::parse_lenient(&t.to_rfc3339_exact()),
                Some(t),
                "{good} round-trips"
            );
        }
    }

    #[test]
    fn fast_rfc3339_agrees_with_chrono_everywhere() {
        let mut t: i64 = -62_135_596_800_000_000; // 0001-01-01
        while t < 253_402_300_799_000_000 {
            let fast = Timestamp(t).to_rfc3339();
            let slow = Timestamp(t).format(SecondsFormat::Millis);
            assert_eq!(fast, slow, "at {t}");
            t += 86_400_000_000 * 37 + 3_723_456_789;
        }
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp(951_782_400_000_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn states_map_like_the_contract_says() {
        assert_eq!(UserState::from_workos("suspended"), UserState::Inactive);
        assert_eq!(UserState::from_workos("active"), UserState::Active);
        assert_eq!(
            DirectoryState::from_workos("deleting"),
            DirectoryState::Deleting
        );
        assert_eq!(
            DirectoryState::from_workos("invalid_credentials"),
            DirectoryState::Inactive
        );
    }
}
