//! Read access: a [`Snapshot`] is one redb read transaction, so everything
//! read through it is one consistent view. The lookup helpers are generic over
//! `ReadableTable` and shared with the write side ([`super::Tx`]).

use std::ops::ControlFlow;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableTable};
use uuid::Uuid;

use super::codec::{self, TAG_INACTIVE};
use super::{StoreError, tables};
use crate::model::{
    AuthkitUser, Directory, DirectoryGroup, DirectoryGroupId, DirectoryId, DirectoryUser,
    DirectoryUserId, ScimDirectory, ScimKey, UserState,
};

/// Which slice of a directory's users (or groups) to read.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Start after this record id (exclusive); ids are creation-ordered.
    pub after: Option<Uuid>,
    /// Only users in this state (ignored for groups).
    pub state: Option<UserState>,
    /// Only users with this email, compared lower-cased (ignored for groups).
    pub email: Option<String>,
}

pub(super) type Bytes = &'static [u8];

pub(super) fn get_directory(
    t: &impl ReadableTable<u128, Bytes>,
    id: DirectoryId,
) -> Result<Option<Directory>, StoreError> {
    match t.get(id.as_u128())? {
        Some(v) => Ok(Some(codec::decode_directory(v.value())?)),
        None => Ok(None),
    }
}

pub(super) fn get_directory_ref(
    t: &impl ReadableTable<&'static str, u128>,
    workos_id: &str,
) -> Result<Option<u128>, StoreError> {
    Ok(t.get(workos_id)?.map(|v| v.value()))
}

/// Where a user and a group are, and whether the user is a member:
/// `((directory, user), (directory, group), member)`.
pub type MembershipRefs = (
    (DirectoryId, DirectoryUserId),
    (DirectoryId, DirectoryGroupId),
    bool,
);

pub(super) fn get_record_ref(
    t: &impl ReadableTable<&'static str, (u128, u128)>,
    workos_id: &str,
) -> Result<Option<(u128, u128)>, StoreError> {
    Ok(t.get(workos_id)?.map(|v| v.value()))
}

pub(super) fn get_user(
    t: &impl ReadableTable<(u128, u128), Bytes>,
    dir: DirectoryId,
    id: DirectoryUserId,
) -> Result<Option<DirectoryUser>, StoreError> {
    match t.get((dir.as_u128(), id.as_u128()))? {
        Some(v) => Ok(Some(codec::decode_user(v.value())?)),
        None => Ok(None),
    }
}

pub(super) fn get_group(
    t: &impl ReadableTable<(u128, u128), Bytes>,
    dir: DirectoryId,
    id: DirectoryGroupId,
) -> Result<Option<DirectoryGroup>, StoreError> {
    match t.get((dir.as_u128(), id.as_u128()))? {
        Some(v) => Ok(Some(codec::decode_group(v.value())?)),
        None => Ok(None),
    }
}

pub(super) fn get_authkit_user(
    t: &impl ReadableTable<&'static str, Bytes>,
    id: &str,
) -> Result<Option<AuthkitUser>, StoreError> {
    match t.get(id)? {
        Some(v) => Ok(Some(codec::decode_authkit_user(v.value())?)),
        None => Ok(None),
    }
}

pub(super) fn get_scim_directory(
    t: &impl ReadableTable<u128, Bytes>,
    dir: DirectoryId,
) -> Result<Option<ScimDirectory>, StoreError> {
    match t.get(dir.as_u128())? {
        Some(v) => Ok(Some(codec::decode_scim_directory(v.value())?)),
        None => Ok(None),
    }
}

/// Every SCIM index entry of one directory.
pub(super) fn scim_range(dir: u128) -> std::ops::Range<(u128, u8, &'static str, u128)> {
    // One past the largest `ScimKey`.
    (dir, 0, "", 0)..(dir, ScimKey::GroupExternalId as u8 + 1, "", 0)
}

pub(super) fn scim_find(
    t: &impl ReadableTable<(u128, u8, &'static str, u128), ()>,
    dir: DirectoryId,
    key: ScimKey,
    value: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let (d, k) = (dir.as_u128(), key as u8);
    let mut out = Vec::new();
    for entry in t.range((d, k, value, 0u128)..=(d, k, value, u128::MAX))? {
        out.push(Uuid::from_u128(entry?.0.value().3));
    }
    Ok(out)
}

/// The key range of one directory's records, starting after `after`.
fn directory_range(
    dir: DirectoryId,
    after: Option<Uuid>,
) -> std::ops::RangeInclusive<(u128, u128)> {
    let start = match after {
        Some(id) => id.as_u128().saturating_add(1),
        None => 0,
    };
    (dir.as_u128(), start)..=(dir.as_u128(), u128::MAX)
}

/// A consistent read view of the whole database.
pub struct Snapshot {
    txn: ReadTransaction,
    /// Keeps the handle this view reads from open (a reopen after an I/O
    /// error waits for it).
    _db: Option<Arc<Database>>,
}

impl Snapshot {
    pub(super) fn new(txn: ReadTransaction, db: Arc<Database>) -> Self {
        Self { txn, _db: Some(db) }
    }

    /// A view over a handle the store does not share yet (while opening).
    pub(super) fn new_unshared(txn: ReadTransaction) -> Self {
        Self { txn, _db: None }
    }

    /// One directory by internal id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn directory(&self, id: DirectoryId) -> Result<Option<Directory>, StoreError> {
        get_directory(&self.txn.open_table(tables::DIRECTORIES)?, id)
    }

    /// One directory by WorkOS id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn directory_by_workos(&self, workos_id: &str) -> Result<Option<Directory>, StoreError> {
        let index = self.txn.open_table(tables::DIRECTORIES_BY_WORKOS)?;
        match get_directory_ref(&index, workos_id)? {
            Some(id) => self.directory(DirectoryId::from_u128(id)),
            None => Ok(None),
        }
    }

    /// An organization's directories, in creation order (one index range).
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn directories_of_org(&self, org: &str) -> Result<Vec<Directory>, StoreError> {
        let index = self.txn.open_table(tables::DIRECTORIES_BY_ORG)?;
        let table = self.txn.open_table(tables::DIRECTORIES)?;
        let mut out = Vec::new();
        for entry in index.range((org, 0u128)..=(org, u128::MAX))? {
            let (key, _) = entry?;
            let (_, id) = key.value();
            if let Some(d) = get_directory(&table, DirectoryId::from_u128(id))? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Every directory, in creation order (for export).
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn all_directories(&self) -> Result<Vec<Directory>, StoreError> {
        let table = self.txn.open_table(tables::DIRECTORIES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(codec::decode_directory(v.value())?);
        }
        Ok(out)
    }

    /// Visits the pre-rendered Char JSON of a directory's users matching
    /// `query`, in creation order, until `visit` breaks.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn visit_user_json(
        &self,
        dir: DirectoryId,
        query: &ListQuery,
        mut visit: impl FnMut(Uuid, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let users = self.txn.open_table(tables::USERS)?;
        let wanted = |tag: u8| match query.state {
            None => true,
            Some(UserState::Inactive) => tag & TAG_INACTIVE != 0,
            Some(UserState::Active) => tag & TAG_INACTIVE == 0,
        };
        if let Some(email) = &query.email {
            let index = self.txn.open_table(tables::USERS_BY_EMAIL)?;
            let start = query.after.map_or(0, |a| a.as_u128().saturating_add(1));
            let range =
                (email.as_str(), dir.as_u128(), start)..=(email.as_str(), dir.as_u128(), u128::MAX);
            for entry in index.range(range)? {
                let (key, _) = entry?;
                let (_, d, u) = key.value();
                let Some(value) = users.get((d, u))? else {
                    continue;
                };
                let (tag, json) = codec::rendered_json(value.value())?;
                if wanted(tag) && visit(Uuid::from_u128(u), json).is_break() {
                    break;
                }
            }
            return Ok(());
        }
        for entry in users.range(directory_range(dir, query.after))? {
            let (key, value) = entry?;
            let (tag, json) = codec::rendered_json(value.value())?;
            if wanted(tag) && visit(Uuid::from_u128(key.value().1), json).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits the pre-rendered Char JSON of a directory's groups, in creation
    /// order, starting after `query.after`, until `visit` breaks.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn visit_group_json(
        &self,
        dir: DirectoryId,
        query: &ListQuery,
        mut visit: impl FnMut(Uuid, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let groups = self.txn.open_table(tables::GROUPS)?;
        for entry in groups.range(directory_range(dir, query.after))? {
            let (key, value) = entry?;
            let (_, json) = codec::rendered_json(value.value())?;
            if visit(Uuid::from_u128(key.value().1), json).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits a directory's users as records, in creation order (for export).
    ///
    /// # Errors
    /// On a storage or decoding failure, or what `visit` returns.
    pub fn visit_users<E: From<StoreError>>(
        &self,
        dir: DirectoryId,
        mut visit: impl FnMut(DirectoryUser) -> Result<(), E>,
    ) -> Result<(), E> {
        let users = self
            .txn
            .open_table(tables::USERS)
            .map_err(StoreError::from)?;
        for entry in users
            .range(directory_range(dir, None))
            .map_err(StoreError::from)?
        {
            let (_, value) = entry.map_err(StoreError::from)?;
            visit(codec::decode_user(value.value()).map_err(StoreError::from)?)?;
        }
        Ok(())
    }

    /// Visits a directory's groups as records, in creation order (for export).
    ///
    /// # Errors
    /// On a storage or decoding failure, or what `visit` returns.
    pub fn visit_groups<E: From<StoreError>>(
        &self,
        dir: DirectoryId,
        mut visit: impl FnMut(DirectoryGroup) -> Result<(), E>,
    ) -> Result<(), E> {
        let groups = self
            .txn
            .open_table(tables::GROUPS)
            .map_err(StoreError::from)?;
        for entry in groups
            .range(directory_range(dir, None))
            .map_err(StoreError::from)?
        {
            let (_, value) = entry.map_err(StoreError::from)?;
            visit(codec::decode_group(value.value()).map_err(StoreError::from)?)?;
        }
        Ok(())
    }

    /// Visits a directory's memberships as `(WorkOS group id, WorkOS user id,
    /// added at)`, group by group (for export).
    ///
    /// # Errors
    /// On a storage or decoding failure, or what `visit` returns.
    pub fn visit_memberships<E: From<StoreError>>(
        &self,
        dir: DirectoryId,
        mut visit: impl FnMut(&str, &str, crate::model::Timestamp) -> Result<(), E>,
    ) -> Result<(), E> {
        let groups = self
            .txn
            .open_table(tables::GROUPS)
            .map_err(StoreError::from)?;
        let members = self
            .txn
            .open_table(tables::MEMBERS_BY_GROUP)
            .map_err(StoreError::from)?;
        let users = self
            .txn
            .open_table(tables::USERS)
            .map_err(StoreError::from)?;
        for entry in groups
            .range(directory_range(dir, None))
            .map_err(StoreError::from)?
        {
            let (_, value) = entry.map_err(StoreError::from)?;
            let group = codec::decode_group(value.value()).map_err(StoreError::from)?;
            let g = group.id.as_u128();
            for m in members
                .range((g, 0u128)..=(g, u128::MAX))
                .map_err(StoreError::from)?
            {
                let (key, added) = m.map_err(StoreError::from)?;
                let user = key.value().1;
                let Some(user) = get_user(&users, dir, DirectoryUserId::from_u128(user))? else {
                    continue;
                };
                visit(
                    &group.workos_directory_group_id,
                    &user.workos_directory_user_id,
                    crate::model::Timestamp(added.value()),
                )?;
            }
        }
        Ok(())
    }

    /// The SCIM side of a directory, if it is fed by SCIM.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn scim_directory(&self, dir: DirectoryId) -> Result<Option<ScimDirectory>, StoreError> {
        get_scim_directory(&self.txn.open_table(tables::SCIM_DIRECTORIES)?, dir)
    }

    /// The users or groups of `dir` whose `key` attribute is `value` (see
    /// [`super::Tx::scim_find`]).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn scim_find(
        &self,
        dir: DirectoryId,
        key: ScimKey,
        value: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        scim_find(&self.txn.open_table(tables::SCIM_INDEX)?, dir, key, value)
    }

    /// One group by internal ids.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn group(
        &self,
        dir: DirectoryId,
        id: DirectoryGroupId,
    ) -> Result<Option<DirectoryGroup>, StoreError> {
        get_group(&self.txn.open_table(tables::GROUPS)?, dir, id)
    }

    /// The ids of a group's members, in id order.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn member_ids(&self, group: DirectoryGroupId) -> Result<Vec<DirectoryUserId>, StoreError> {
        let members = self.txn.open_table(tables::MEMBERS_BY_GROUP)?;
        let g = group.as_u128();
        let mut out = Vec::new();
        for entry in members.range((g, 0u128)..=(g, u128::MAX))? {
            out.push(DirectoryUserId::from_u128(entry?.0.value().1));
        }
        Ok(out)
    }

    /// Visits a directory's users as records, in creation order, after
    /// `after` and from the `skip`-th on (those before are stepped over
    /// undecoded), until `visit` breaks.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn visit_user_records(
        &self,
        dir: DirectoryId,
        after: Option<Uuid>,
        skip: u64,
        mut visit: impl FnMut(DirectoryUser) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let users = self.txn.open_table(tables::USERS)?;
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        for entry in users.range(directory_range(dir, after))?.skip(skip) {
            let (_, value) = entry?;
            if visit(codec::decode_user(value.value())?).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits a directory's groups as records, like
    /// [`Snapshot::visit_user_records`].
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn visit_group_records(
        &self,
        dir: DirectoryId,
        after: Option<Uuid>,
        skip: u64,
        mut visit: impl FnMut(DirectoryGroup) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let groups = self.txn.open_table(tables::GROUPS)?;
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        for entry in groups.range(directory_range(dir, after))?.skip(skip) {
            let (_, value) = entry?;
            if visit(codec::decode_group(value.value())?).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Every SCIM-fed directory's SCIM side.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn scim_directories(&self) -> Result<Vec<ScimDirectory>, StoreError> {
        let table = self.txn.open_table(tables::SCIM_DIRECTORIES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(codec::decode_scim_directory(entry?.1.value())?);
        }
        Ok(out)
    }

    /// One user by internal ids.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn user(
        &self,
        dir: DirectoryId,
        id: DirectoryUserId,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        get_user(&self.txn.open_table(tables::USERS)?, dir, id)
    }

    /// One user by WorkOS id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn user_by_workos(&self, workos_id: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let index = self.txn.open_table(tables::USERS_BY_WORKOS)?;
        match get_record_ref(&index, workos_id)? {
            Some((d, u)) => self.user(DirectoryId::from_u128(d), DirectoryUserId::from_u128(u)),
            None => Ok(None),
        }
    }

    /// Where the user and the group with these WorkOS ids are, and whether
    /// the user is a member of the group: `(user, group, member)`, from
    /// the indexes alone.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn membership_by_workos(
        &self,
        user: &str,
        group: &str,
    ) -> Result<Option<MembershipRefs>, StoreError> {
        let users = self.txn.open_table(tables::USERS_BY_WORKOS)?;
        let groups = self.txn.open_table(tables::GROUPS_BY_WORKOS)?;
        let (Some((ud, u)), Some((gd, g))) = (
            get_record_ref(&users, user)?,
            get_record_ref(&groups, group)?,
        ) else {
            return Ok(None);
        };
        let member = self
            .txn
            .open_table(tables::MEMBERS_BY_GROUP)?
            .get((g, u))?
            .is_some();
        Ok(Some((
            (DirectoryId::from_u128(ud), DirectoryUserId::from_u128(u)),
            (DirectoryId::from_u128(gd), DirectoryGroupId::from_u128(g)),
            member,
        )))
    }

    /// One group by WorkOS id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn group_by_workos(&self, workos_id: &str) -> Result<Option<DirectoryGroup>, StoreError> {
        let index = self.txn.open_table(tables::GROUPS_BY_WORKOS)?;
        match get_record_ref(&index, workos_id)? {
            Some((d, g)) => get_group(
                &self.txn.open_table(tables::GROUPS)?,
                DirectoryId::from_u128(d),
                DirectoryGroupId::from_u128(g),
            ),
            None => Ok(None),
        }
    }

    /// Every AuthKit user known for linking (for export).
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn authkit_users(&self) -> Result<Vec<AuthkitUser>, StoreError> {
        let table = self.txn.open_table(tables::AUTHKIT_USERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(codec::decode_authkit_user(v.value())?);
        }
        Ok(out)
    }

    /// Every AuthKit organization membership (for export).
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn org_memberships(&self) -> Result<Vec<crate::model::OrgMembership>, StoreError> {
        // Files of schema 1 written before memberships were kept lack the
        // table (read when migrating them).
        let table = match self.txn.open_table(tables::ORG_MEMBERSHIPS) {
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            other => other?,
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(codec::decode_org_membership(v.value())?);
        }
        Ok(out)
    }

    /// A named progress marker of the sync (see [`super::Tx::set_mark`]).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn mark(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        Ok(meta.get(name)?.map(|v| v.value().to_vec()))
    }

    /// The names of the markers starting with `prefix`.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn marks(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        let mut out = Vec::new();
        for entry in meta.range(prefix..)? {
            let (k, _) = entry?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(k.value().to_owned());
        }
        Ok(out)
    }

    /// Where pull mode stopped: the id of the last event applied.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn events_cursor(&self) -> Result<Option<String>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        Ok(meta
            .get(tables::META_EVENTS_CURSOR)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }
}

/// A held event: `(WorkOS directory id, sequence)` and `(held at, raw event)`.
type ParkedEntry = ((String, u64), (i64, Vec<u8>));

/// What makes event delivery idempotent and monotonic, keyed by WorkOS ids
/// only (so it carries over to a rebuilt database unchanged): tombstones,
/// seen event ids, held events, and the pull cursor.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    pub(super) tombstones: Vec<(String, (i64, i64))>,
    pub(super) seen_events: Vec<(String, i64)>,
    pub(super) parked: Vec<ParkedEntry>,
    pub(super) cursor: Option<String>,
    pub(super) parked_seq: Option<Vec<u8>>,
}

impl Bookkeeping {
    /// Entries held: tombstones, seen events, held events.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.tombstones.len(),
            self.seen_events.len(),
            self.parked.len(),
        )
    }
}

impl Snapshot {
    /// Every tombstone, seen event id and held event, and the pull cursor.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn bookkeeping(&self) -> Result<Bookkeeping, StoreError> {
        let mut out = Bookkeeping::default();
        for entry in self.txn.open_table(tables::TOMBSTONES)?.iter()? {
            let (k, v) = entry?;
            out.tombstones.push((k.value().to_owned(), v.value()));
        }
        for entry in self.txn.open_table(tables::SEEN_EVENTS)?.iter()? {
            let (k, v) = entry?;
            out.seen_events.push((k.value().to_owned(), v.value()));
        }
        for entry in self.txn.open_table(tables::PARKED_EVENTS)?.iter()? {
            let (k, v) = entry?;
            let ((dir, seq), (at, raw)) = (k.value(), v.value());
            out.parked.push(((dir.to_owned(), seq), (at, raw.to_vec())));
        }
        let meta = self.txn.open_table(tables::META)?;
        out.cursor = meta
            .get(tables::META_EVENTS_CURSOR)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        out.parked_seq = meta
            .get(tables::META_PARKED_SEQ)?
            .map(|v| v.value().to_vec());
        Ok(out)
    }
}
