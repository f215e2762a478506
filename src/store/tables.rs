//! Every redb table and index, in one place, with its key layout.
//!
//! UUIDs are keyed as `u128` (big-endian value order = UUID byte order), so a
//! UUIDv7 key range is creation order. Names carry a `_v1` suffix: changing a
//! key layout or value encoding means a new table name and a migration in
//! `Store::open`, never a silent reinterpretation of old bytes.
//!
//! Nothing outside `src/store/` may name these.

use redb::TableDefinition;

/// `name → bytes`: `schema_version` (u32 LE), `events_cursor` (UTF-8),
/// `parked_seq` (u64 LE).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");

/// `directory id → Directory` (codec envelope).
pub const DIRECTORIES: TableDefinition<u128, &[u8]> = TableDefinition::new("directories_v1");
/// `(organization id, directory id) → ()`: an organization's directories are
/// one key range, in creation order.
pub const DIRECTORIES_BY_ORG: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("directories_by_org_v1");
/// `WorkOS directory id → directory id`.
pub const DIRECTORIES_BY_WORKOS: TableDefinition<&str, u128> =
    TableDefinition::new("directories_by_workos_v1");

/// `(directory id, user id) → DirectoryUser` (codec envelope with the
/// pre-rendered Char JSON first). Clustered by directory: a directory's users
/// are one contiguous range in creation order, so the "users by directory"
/// index is the primary key itself and listing needs no second lookup.
pub const USERS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("users_v1");
/// `WorkOS directory-user id → (directory id, user id)`.
pub const USERS_BY_WORKOS: TableDefinition<&str, (u128, u128)> =
    TableDefinition::new("users_by_workos_v1");
/// `(lower-cased email, directory id, user id) → ()`: every directory user
/// with an email (for linking), or only those of one directory (for `email=`).
pub const USERS_BY_EMAIL: TableDefinition<(&str, u128, u128), ()> =
    TableDefinition::new("users_by_email_v1");

/// `(directory id, group id) → DirectoryGroup`, clustered like `USERS`.
pub const GROUPS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("groups_v1");
/// `WorkOS directory-group id → (directory id, group id)`.
pub const GROUPS_BY_WORKOS: TableDefinition<&str, (u128, u128)> =
    TableDefinition::new("groups_by_workos_v1");

/// `(group id, user id) → WorkOS time of the add (µs)`.
pub const MEMBERS_BY_GROUP: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("members_by_group_v1");
/// `(user id, group id) → ()`: the reverse, to drop a user's memberships.
pub const GROUPS_BY_MEMBER: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("groups_by_member_v1");

/// `tombstone key → (version µs, written at µs)`: what was deleted and as of
/// when, so a late, older update does not resurrect it. Keys are WorkOS ids
/// (`directory_…`, `directory_user_…`, `directory_group_…`, `user_…`) or
/// `membership:<group>:<user>`.
pub const TOMBSTONES: TableDefinition<&str, (i64, i64)> = TableDefinition::new("tombstones_v1");
/// `(written at µs, tombstone key) → ()`, for retention.
pub const TOMBSTONES_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("tombstones_by_time_v1");

/// `WorkOS event id → seen at µs`: replays change nothing.
pub const SEEN_EVENTS: TableDefinition<&str, i64> = TableDefinition::new("seen_events_v1");
/// `(seen at µs, event id) → ()`, for retention.
pub const SEEN_EVENTS_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("seen_events_by_time_v1");

/// `AuthKit user id → AuthkitUser` (codec envelope).
pub const AUTHKIT_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("authkit_users_v1");
/// `(lower-cased email, AuthKit user id) → ()`.
pub const AUTHKIT_BY_EMAIL: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("authkit_by_email_v1");

/// `(AuthKit user id, organization id) → OrgMembership` (codec envelope):
/// an AuthKit user is linked only to directory users of organizations it is
/// an active member of.
pub const ORG_MEMBERSHIPS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("org_memberships_v1");

/// `(WorkOS directory id, sequence) → (parked at µs, raw event JSON)`: events
/// for a directory not yet activated, applied when it is.
pub const PARKED_EVENTS: TableDefinition<(&str, u64), (i64, &[u8])> =
    TableDefinition::new("parked_events_v1");
/// `(parked at µs, WorkOS directory id, sequence) → ()`, for retention.
pub const PARKED_BY_TIME: TableDefinition<(i64, &str, u64), ()> =
    TableDefinition::new("parked_by_time_v1");

/// `directory id → ScimDirectory` (codec): the directories fed by SCIM,
/// with the hash of their bearer token.
pub const SCIM_DIRECTORIES: TableDefinition<u128, &[u8]> =
    TableDefinition::new("scim_directories_v1");
/// `(directory id, ScimKey as u8, value, user or group id) → ()`: the SCIM
/// attributes filters look up, one key range per directory and attribute
/// (values lower-cased where SCIM compares them case-insensitively).
pub const SCIM_INDEX: TableDefinition<(u128, u8, &str, u128), ()> =
    TableDefinition::new("scim_index_v1");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_EVENTS_CURSOR: &str = "events_cursor";
pub const META_PARKED_SEQ: &str = "parked_seq";
