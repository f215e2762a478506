//! The write side: a [`Tx`] is one redb write transaction with every table
//! open, and typed operations that keep indexes and counts consistent.
//!
//! Each operation maintains its own index entries in the same transaction as
//! the record. Per-directory counts and revisions are accumulated in memory
//! and written once per directory in [`Tx::finish`], so a bulk import does not
//! rewrite its directory record once per user. Retention of seen event ids,
//! tombstones and parked events is enforced a bounded batch at a time in
//! `finish`, so pruning never makes a single write slow.

use std::collections::HashMap;

use redb::{ReadableTable, Table, WriteTransaction};

use super::directories::DirectoryChanges;
use super::snapshot::{
    Bytes, get_authkit_user, get_directory, get_directory_ref, get_group, get_record_ref,
    get_scim_directory, get_user, scim_find, scim_range,
};
use super::{Retention, StoreError, codec, tables};
use crate::model::{
    AuthkitUser, Directory, DirectoryGroup, DirectoryGroupId, DirectoryId, DirectoryUser,
    DirectoryUserId, OrgMembership, ScimDirectory, ScimKey, Timestamp, json_digest,
};
use uuid::Uuid;

/// How many expired entries of each kind one transaction prunes at most.
const PRUNE_BATCH: usize = 256;

/// What a transaction changed in one directory, written to its record once
/// at the end.
#[derive(Default, Clone, Copy)]
struct Delta {
    users: i64,
    groups: i64,
    /// Added to the list digests (wrapping: a sum mod 2^128).
    users_digest: u128,
    groups_digest: u128,
}

impl Delta {
    fn apply(&self, d: &mut Directory) {
        d.user_count = d.user_count.saturating_add_signed(self.users);
        d.group_count = d.group_count.saturating_add_signed(self.groups);
        d.users_digest = d.users_digest.wrapping_add(self.users_digest);
        d.groups_digest = d.groups_digest.wrapping_add(self.groups_digest);
    }
}

/// One write transaction with typed, index-maintaining operations.
pub struct Tx<'t> {
    now: Timestamp,
    retention: Retention,
    meta: Table<'t, &'static str, Bytes>,
    directories: Table<'t, u128, Bytes>,
    directories_by_org: Table<'t, (&'static str, u128), ()>,
    directories_by_workos: Table<'t, &'static str, u128>,
    users: Table<'t, (u128, u128), Bytes>,
    users_by_workos: Table<'t, &'static str, (u128, u128)>,
    users_by_email: Table<'t, (&'static str, u128, u128), ()>,
    groups: Table<'t, (u128, u128), Bytes>,
    groups_by_workos: Table<'t, &'static str, (u128, u128)>,
    members_by_group: Table<'t, (u128, u128), i64>,
    groups_by_member: Table<'t, (u128, u128), ()>,
    tombstones: Table<'t, &'static str, (i64, i64)>,
    tombstones_by_time: Table<'t, (i64, &'static str), ()>,
    seen_events: Table<'t, &'static str, i64>,
    seen_events_by_time: Table<'t, (i64, &'static str), ()>,
    authkit_users: Table<'t, &'static str, Bytes>,
    authkit_by_email: Table<'t, (&'static str, &'static str), ()>,
    org_memberships: Table<'t, (&'static str, &'static str), Bytes>,
    parked_events: Table<'t, (&'static str, u64), (i64, Bytes)>,
    parked_by_time: Table<'t, (i64, &'static str, u64), ()>,
    scim_directories: Table<'t, u128, Bytes>,
    scim_index: Table<'t, (u128, u8, &'static str, u128), ()>,
    touched: HashMap<DirectoryId, Delta>,
    /// Final directory records written (None: deleted), for the store's
    /// in-memory map once the transaction commits.
    changes: HashMap<DirectoryId, Option<Directory>>,
    /// WorkOS directory id → internal id, as resolved in this transaction
    /// (a bulk import asks once per user).
    resolved: HashMap<String, Option<DirectoryId>>,
    /// Email index entries of users created in this transaction, inserted
    /// sorted when the index is next read or changed, or at the end: a bulk
    /// load then fills the index in key order instead of at random.
    pending_emails: Vec<(String, u128, u128)>,
    /// Whether anything was written: a transaction that wrote nothing is
    /// not committed, so a round that finds nothing to change leaves the
    /// file as it was.
    dirty: bool,
}

impl<'t> Tx<'t> {
    pub(super) fn open(
        txn: &'t WriteTransaction,
        now: Timestamp,
        retention: &Retention,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            now,
            retention: *retention,
            meta: txn.open_table(tables::META)?,
            directories: txn.open_table(tables::DIRECTORIES)?,
            directories_by_org: txn.open_table(tables::DIRECTORIES_BY_ORG)?,
            directories_by_workos: txn.open_table(tables::DIRECTORIES_BY_WORKOS)?,
            users: txn.open_table(tables::USERS)?,
            users_by_workos: txn.open_table(tables::USERS_BY_WORKOS)?,
            users_by_email: txn.open_table(tables::USERS_BY_EMAIL)?,
            groups: txn.open_table(tables::GROUPS)?,
            groups_by_workos: txn.open_table(tables::GROUPS_BY_WORKOS)?,
            members_by_group: txn.open_table(tables::MEMBERS_BY_GROUP)?,
            groups_by_member: txn.open_table(tables::GROUPS_BY_MEMBER)?,
            tombstones: txn.open_table(tables::TOMBSTONES)?,
            tombstones_by_time: txn.open_table(tables::TOMBSTONES_BY_TIME)?,
            seen_events: txn.open_table(tables::SEEN_EVENTS)?,
            seen_events_by_time: txn.open_table(tables::SEEN_EVENTS_BY_TIME)?,
            authkit_users: txn.open_table(tables::AUTHKIT_USERS)?,
            authkit_by_email: txn.open_table(tables::AUTHKIT_BY_EMAIL)?,
            org_memberships: txn.open_table(tables::ORG_MEMBERSHIPS)?,
            parked_events: txn.open_table(tables::PARKED_EVENTS)?,
            parked_by_time: txn.open_table(tables::PARKED_BY_TIME)?,
            scim_directories: txn.open_table(tables::SCIM_DIRECTORIES)?,
            scim_index: txn.open_table(tables::SCIM_INDEX)?,
            touched: HashMap::new(),
            changes: HashMap::new(),
            resolved: HashMap::new(),
            pending_emails: Vec::new(),
            dirty: false,
        })
    }

    /// The time this transaction stamps on what it writes.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    fn touch(&mut self, dir: DirectoryId) -> &mut Delta {
        self.dirty = true;
        self.touched.entry(dir).or_default()
    }

    // ---- directories -------------------------------------------------------

    /// A directory, with the counts this transaction has changed so far.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn directory(&self, id: DirectoryId) -> Result<Option<Directory>, StoreError> {
        let Some(mut d) = get_directory(&self.directories, id)? else {
            return Ok(None);
        };
        if let Some(delta) = self.touched.get(&id) {
            delta.apply(&mut d);
        }
        Ok(Some(d))
    }

    /// A directory by WorkOS id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn directory_by_workos(&self, workos_id: &str) -> Result<Option<Directory>, StoreError> {
        match get_directory_ref(&self.directories_by_workos, workos_id)? {
            Some(id) => self.directory(DirectoryId::from_u128(id)),
            None => Ok(None),
        }
    }

    /// The internal id of the directory with this WorkOS id, if any.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn directory_id_by_workos(
        &mut self,
        workos_id: &str,
    ) -> Result<Option<DirectoryId>, StoreError> {
        if let Some(known) = self.resolved.get(workos_id) {
            return Ok(*known);
        }
        let id =
            get_directory_ref(&self.directories_by_workos, workos_id)?.map(DirectoryId::from_u128);
        self.resolved.insert(workos_id.to_owned(), id);
        Ok(id)
    }

    /// Inserts or replaces a directory. Its counts and revision are the
    /// store's: whatever `d` carries in them is ignored.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn put_directory(&mut self, d: &Directory) -> Result<(), StoreError> {
        let mut record = d.clone();
        match get_directory(&self.directories, d.id)? {
            Some(old) => {
                record.user_count = old.user_count;
                record.group_count = old.group_count;
                record.revision = old.revision;
                record.users_digest = old.users_digest;
                record.groups_digest = old.groups_digest;
                if old.organization_id != d.organization_id {
                    self.directories_by_org
                        .remove((old.organization_id.as_str(), d.id.as_u128()))?;
                }
                if old.workos_directory_id != d.workos_directory_id {
                    self.directories_by_workos
                        .remove(old.workos_directory_id.as_str())?;
                }
            }
            None => {
                record.user_count = 0;
                record.group_count = 0;
                record.revision = 0;
                record.users_digest = 0;
                record.groups_digest = 0;
            }
        }
        self.directories
            .insert(d.id.as_u128(), codec::encode_directory(&record).as_slice())?;
        self.changes.insert(d.id, Some(record));
        self.directories_by_org
            .insert((d.organization_id.as_str(), d.id.as_u128()), ())?;
        self.directories_by_workos
            .insert(d.workos_directory_id.as_str(), d.id.as_u128())?;
        self.resolved.clear();
        self.touch(d.id);
        Ok(())
    }

    /// Deletes a directory with all of its users, groups, memberships and
    /// index entries. Returns whether it existed.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn delete_directory(&mut self, id: DirectoryId) -> Result<bool, StoreError> {
        let Some(old) = get_directory(&self.directories, id)? else {
            return Ok(false);
        };
        self.dirty = true;
        self.flush_pending_emails()?;
        let dir = id.as_u128();
        let range = (dir, 0u128)..=(dir, u128::MAX);

        let mut users = Vec::new();
        for entry in self.users.range(range.clone())? {
            let (_, v) = entry?;
            let u = codec::decode_user(v.value())?;
            users.push((u.id, u.workos_directory_user_id.clone(), u.email_key()));
        }
        for (uid, workos_id, email) in &users {
            self.users_by_workos.remove(workos_id.as_str())?;
            self.users_by_email
                .remove((email.as_str(), dir, uid.as_u128()))?;
            let u = uid.as_u128();
            self.groups_by_member
                .retain_in((u, 0u128)..=(u, u128::MAX), |_, _| false)?;
        }
        self.users.retain_in(range.clone(), |_, _| false)?;

        let mut groups = Vec::new();
        for entry in self.groups.range(range.clone())? {
            let (_, v) = entry?;
            let g = codec::decode_group(v.value())?;
            groups.push((g.id, g.workos_directory_group_id.clone()));
        }
        for (gid, workos_id) in &groups {
            self.groups_by_workos.remove(workos_id.as_str())?;
            let g = gid.as_u128();
            self.members_by_group
                .retain_in((g, 0u128)..=(g, u128::MAX), |_, _| false)?;
        }
        self.groups.retain_in(range, |_, _| false)?;

        self.scim_index.retain_in(scim_range(dir), |_, _| false)?;
        self.scim_directories.remove(dir)?;

        self.directories.remove(dir)?;
        self.directories_by_org
            .remove((old.organization_id.as_str(), dir))?;
        self.directories_by_workos
            .remove(old.workos_directory_id.as_str())?;
        self.touched.remove(&id);
        self.changes.insert(id, None);
        self.resolved.clear();
        Ok(true)
    }

    // ---- users -------------------------------------------------------------

    /// A user by internal ids.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn user(
        &self,
        dir: DirectoryId,
        id: DirectoryUserId,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        get_user(&self.users, dir, id)
    }

    /// A user by WorkOS id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn user_by_workos(&self, workos_id: &str) -> Result<Option<DirectoryUser>, StoreError> {
        match self.user_ref_by_workos(workos_id)? {
            Some((d, u)) => get_user(&self.users, d, u),
            None => Ok(None),
        }
    }

    /// Where the user with this WorkOS id is, from the index alone (no
    /// record read or decoded).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn user_ref_by_workos(
        &self,
        workos_id: &str,
    ) -> Result<Option<(DirectoryId, DirectoryUserId)>, StoreError> {
        Ok(get_record_ref(&self.users_by_workos, workos_id)?
            .map(|(d, u)| (DirectoryId::from_u128(d), DirectoryUserId::from_u128(u))))
    }

    /// Inserts or replaces a user, keeping the WorkOS-id and email indexes
    /// and the directory's count consistent.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn put_user(&mut self, u: &DirectoryUser) -> Result<(), StoreError> {
        let (dir, id) = (u.directory_id.as_u128(), u.id.as_u128());
        let email = u.email_key();
        let encoded = codec::encode_user(u);
        let digest = json_digest(codec::rendered_json(&encoded)?.1);
        let old = match self.users.get((dir, id))? {
            Some(v) => Some((
                codec::decode_user(v.value())?,
                json_digest(codec::rendered_json(v.value())?.1),
            )),
            None => None,
        };
        let delta = match old {
            Some((old, old_digest)) => {
                self.flush_pending_emails()?;
                let old_email = old.email_key();
                if old_email != email {
                    self.users_by_email.remove((old_email.as_str(), dir, id))?;
                }
                if old.workos_directory_user_id != u.workos_directory_user_id {
                    self.users_by_workos
                        .remove(old.workos_directory_user_id.as_str())?;
                }
                self.users_by_email.insert((email.as_str(), dir, id), ())?;
                digest.wrapping_sub(old_digest)
            }
            None => {
                self.touch(u.directory_id).users += 1;
                self.pending_emails.push((email, dir, id));
                digest
            }
        };
        self.users.insert((dir, id), encoded.as_slice())?;
        self.users_by_workos
            .insert(u.workos_directory_user_id.as_str(), (dir, id))?;
        let touched = self.touch(u.directory_id);
        touched.users_digest = touched.users_digest.wrapping_add(delta);
        Ok(())
    }

    fn flush_pending_emails(&mut self) -> Result<(), StoreError> {
        if self.pending_emails.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending_emails);
        pending.sort_unstable();
        for (email, dir, id) in &pending {
            self.users_by_email
                .insert((email.as_str(), *dir, *id), ())?;
        }
        Ok(())
    }

    /// Deletes a user with its index entries and memberships.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn delete_user(&mut self, u: &DirectoryUser) -> Result<(), StoreError> {
        self.flush_pending_emails()?;
        let (dir, id) = (u.directory_id.as_u128(), u.id.as_u128());
        let Some(removed) = self.users.remove((dir, id))? else {
            return Ok(());
        };
        let digest = json_digest(codec::rendered_json(removed.value())?.1);
        drop(removed);
        let touched = self.touch(u.directory_id);
        touched.users_digest = touched.users_digest.wrapping_sub(digest);
        self.users_by_workos
            .remove(u.workos_directory_user_id.as_str())?;
        self.users_by_email
            .remove((u.email_key().as_str(), dir, id))?;
        let mut groups = Vec::new();
        for entry in self.groups_by_member.range((id, 0u128)..=(id, u128::MAX))? {
            groups.push(entry?.0.value().1);
        }
        for g in groups {
            self.members_by_group.remove((g, id))?;
            self.groups_by_member.remove((id, g))?;
        }
        self.touch(u.directory_id).users -= 1;
        Ok(())
    }

    /// Every directory user, in any directory, whose email matches `email_key`
    /// (already trimmed and lower-cased).
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn users_with_email(&mut self, email_key: &str) -> Result<Vec<DirectoryUser>, StoreError> {
        self.flush_pending_emails()?;
        let mut out = Vec::new();
        let range = (email_key, 0u128, 0u128)..=(email_key, u128::MAX, u128::MAX);
        for entry in self.users_by_email.range(range)? {
            let (key, _) = entry?;
            let (_, d, u) = key.value();
            if let Some(user) = get_user(
                &self.users,
                DirectoryId::from_u128(d),
                DirectoryUserId::from_u128(u),
            )? {
                out.push(user);
            }
        }
        Ok(out)
    }

    // ---- groups and memberships -------------------------------------------

    /// A group by internal ids.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn group(
        &self,
        dir: DirectoryId,
        id: DirectoryGroupId,
    ) -> Result<Option<DirectoryGroup>, StoreError> {
        get_group(&self.groups, dir, id)
    }

    /// The groups a user is in, with when each membership was added.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn groups_of_member(
        &self,
        user: DirectoryUserId,
    ) -> Result<Vec<(DirectoryGroupId, Timestamp)>, StoreError> {
        let u = user.as_u128();
        let mut out = Vec::new();
        for entry in self.groups_by_member.range((u, 0u128)..=(u, u128::MAX))? {
            let g = entry?.0.value().1;
            if let Some(added) = self.members_by_group.get((g, u))? {
                out.push((DirectoryGroupId::from_u128(g), Timestamp(added.value())));
            }
        }
        Ok(out)
    }

    /// A group's members, with when each was added.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn members_of_group(
        &self,
        group: DirectoryGroupId,
    ) -> Result<Vec<(DirectoryUserId, Timestamp)>, StoreError> {
        let g = group.as_u128();
        let mut out = Vec::new();
        for entry in self.members_by_group.range((g, 0u128)..=(g, u128::MAX))? {
            let (key, added) = entry?;
            out.push((
                DirectoryUserId::from_u128(key.value().1),
                Timestamp(added.value()),
            ));
        }
        Ok(out)
    }

    /// A group by WorkOS id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn group_by_workos(&self, workos_id: &str) -> Result<Option<DirectoryGroup>, StoreError> {
        match self.group_ref_by_workos(workos_id)? {
            Some((d, g)) => get_group(&self.groups, d, g),
            None => Ok(None),
        }
    }

    /// Where the group with this WorkOS id is, from the index alone.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn group_ref_by_workos(
        &self,
        workos_id: &str,
    ) -> Result<Option<(DirectoryId, DirectoryGroupId)>, StoreError> {
        Ok(get_record_ref(&self.groups_by_workos, workos_id)?
            .map(|(d, g)| (DirectoryId::from_u128(d), DirectoryGroupId::from_u128(g))))
    }

    /// Inserts or replaces a group, keeping its index and the count consistent.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn put_group(&mut self, g: &DirectoryGroup) -> Result<(), StoreError> {
        let (dir, id) = (g.directory_id.as_u128(), g.id.as_u128());
        let encoded = codec::encode_group(g);
        let digest = json_digest(codec::rendered_json(&encoded)?.1);
        let old = match self.groups.get((dir, id))? {
            Some(v) => Some((
                codec::decode_group(v.value())?,
                json_digest(codec::rendered_json(v.value())?.1),
            )),
            None => None,
        };
        let delta = match old {
            Some((old, old_digest)) => {
                if old.workos_directory_group_id != g.workos_directory_group_id {
                    self.groups_by_workos
                        .remove(old.workos_directory_group_id.as_str())?;
                }
                digest.wrapping_sub(old_digest)
            }
            None => {
                self.touch(g.directory_id).groups += 1;
                digest
            }
        };
        self.groups.insert((dir, id), encoded.as_slice())?;
        self.groups_by_workos
            .insert(g.workos_directory_group_id.as_str(), (dir, id))?;
        let touched = self.touch(g.directory_id);
        touched.groups_digest = touched.groups_digest.wrapping_add(delta);
        Ok(())
    }

    /// Deletes a group with its index entry and memberships.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn delete_group(&mut self, g: &DirectoryGroup) -> Result<(), StoreError> {
        let (dir, id) = (g.directory_id.as_u128(), g.id.as_u128());
        let Some(removed) = self.groups.remove((dir, id))? else {
            return Ok(());
        };
        let digest = json_digest(codec::rendered_json(removed.value())?.1);
        drop(removed);
        let touched = self.touch(g.directory_id);
        touched.groups_digest = touched.groups_digest.wrapping_sub(digest);
        self.groups_by_workos
            .remove(g.workos_directory_group_id.as_str())?;
        let mut members = Vec::new();
        for entry in self.members_by_group.range((id, 0u128)..=(id, u128::MAX))? {
            members.push(entry?.0.value().1);
        }
        for u in members {
            self.members_by_group.remove((id, u))?;
            self.groups_by_member.remove((u, id))?;
        }
        self.touch(g.directory_id).groups -= 1;
        Ok(())
    }

    /// When the membership was last added (WorkOS time), if it exists.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn membership(
        &self,
        group: DirectoryGroupId,
        user: DirectoryUserId,
    ) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .members_by_group
            .get((group.as_u128(), user.as_u128()))?
            .map(|v| Timestamp(v.value())))
    }

    /// Adds (or re-stamps) a membership.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn put_membership(
        &mut self,
        group: DirectoryGroupId,
        user: DirectoryUserId,
        version: Timestamp,
    ) -> Result<(), StoreError> {
        let (g, u) = (group.as_u128(), user.as_u128());
        self.dirty = true;
        self.members_by_group.insert((g, u), version.0)?;
        self.groups_by_member.insert((u, g), ())?;
        Ok(())
    }

    /// Removes a membership. Returns whether it existed.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn delete_membership(
        &mut self,
        group: DirectoryGroupId,
        user: DirectoryUserId,
    ) -> Result<bool, StoreError> {
        let (g, u) = (group.as_u128(), user.as_u128());
        let existed = self.members_by_group.remove((g, u))?.is_some();
        if existed {
            self.dirty = true;
            self.groups_by_member.remove((u, g))?;
        }
        Ok(existed)
    }

    // ---- SCIM ----------------------------------------------------------------

    /// The SCIM side of a directory, if it is fed by SCIM.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn scim_directory(&self, dir: DirectoryId) -> Result<Option<ScimDirectory>, StoreError> {
        get_scim_directory(&self.scim_directories, dir)
    }

    /// Records (or replaces) the SCIM side of a directory: its provider and
    /// token hash. The directory record itself is [`Tx::put_directory`]'s.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn put_scim_directory(&mut self, s: &ScimDirectory) -> Result<(), StoreError> {
        self.dirty = true;
        self.scim_directories
            .insert(s.id.as_u128(), codec::encode_scim_directory(s).as_slice())?;
        Ok(())
    }

    /// The users or groups of `dir` whose `key` attribute is `value` (as
    /// indexed: lower-cased where SCIM compares case-insensitively).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn scim_find(
        &self,
        dir: DirectoryId,
        key: ScimKey,
        value: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        scim_find(&self.scim_index, dir, key, value)
    }

    /// Replaces the index entries of one user or group: `old` are removed,
    /// `new` inserted (entries in both are left alone).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn set_scim_keys(
        &mut self,
        dir: DirectoryId,
        id: Uuid,
        old: &[(ScimKey, String)],
        new: &[(ScimKey, String)],
    ) -> Result<(), StoreError> {
        let (d, r) = (dir.as_u128(), id.as_u128());
        for (key, value) in old.iter().filter(|e| !new.contains(e)) {
            self.dirty = true;
            self.scim_index.remove((d, *key as u8, value.as_str(), r))?;
        }
        for (key, value) in new.iter().filter(|e| !old.contains(e)) {
            self.dirty = true;
            self.scim_index
                .insert((d, *key as u8, value.as_str(), r), ())?;
        }
        Ok(())
    }

    // ---- tombstones, seen events, parked events, cursor --------------------

    /// The version as of which `key` was deleted, if remembered.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn tombstone(&self, key: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.tombstones.get(key)?.map(|v| Timestamp(v.value().0)))
    }

    /// Remembers that `key` was deleted as of `version` (keeping the later
    /// version if one is already remembered).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn put_tombstone(&mut self, key: &str, version: Timestamp) -> Result<(), StoreError> {
        self.dirty = true;
        let old = self.tombstones.get(key)?.map(|v| v.value());
        let version = match old {
            Some((old_version, written)) => {
                self.tombstones_by_time.remove((written, key))?;
                version.0.max(old_version)
            }
            None => version.0,
        };
        self.tombstones.insert(key, (version, self.now.0))?;
        self.tombstones_by_time.insert((self.now.0, key), ())?;
        Ok(())
    }

    /// Forgets a tombstone (the object was legitimately re-created).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn clear_tombstone(&mut self, key: &str) -> Result<(), StoreError> {
        let old = self.tombstones.remove(key)?.map(|v| v.value());
        if let Some((_, written)) = old {
            self.dirty = true;
            self.tombstones_by_time.remove((written, key))?;
        }
        Ok(())
    }

    /// Whether an event id has been applied (within retention).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn event_seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.seen_events.get(id)?.is_some())
    }

    /// Remembers an event id as applied.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn mark_event_seen(&mut self, id: &str) -> Result<(), StoreError> {
        self.dirty = true;
        if self.seen_events.insert(id, self.now.0)?.is_none() {
            self.seen_events_by_time.insert((self.now.0, id), ())?;
        }
        Ok(())
    }

    /// Holds an event for a directory that is not known yet.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn park_event(&mut self, workos_directory_id: &str, raw: &[u8]) -> Result<(), StoreError> {
        self.dirty = true;
        let seq = self
            .meta
            .get(tables::META_PARKED_SEQ)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0)
            + 1;
        self.meta
            .insert(tables::META_PARKED_SEQ, seq.to_le_bytes().as_slice())?;
        self.parked_events
            .insert((workos_directory_id, seq), (self.now.0, raw))?;
        self.parked_by_time
            .insert((self.now.0, workos_directory_id, seq), ())?;
        Ok(())
    }

    /// Removes and returns the events held for a directory, oldest first.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn take_parked_events(
        &mut self,
        workos_directory_id: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut held = Vec::new();
        let range = (workos_directory_id, 0u64)..=(workos_directory_id, u64::MAX);
        for entry in self.parked_events.range(range.clone())? {
            let (key, value) = entry?;
            let (parked_at, raw) = value.value();
            held.push((key.value().1, parked_at, raw.to_vec()));
        }
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.dirty = true;
        self.parked_events.retain_in(range, |_, _| false)?;
        for (seq, parked_at, _) in &held {
            self.parked_by_time
                .remove((*parked_at, workos_directory_id, *seq))?;
        }
        Ok(held.into_iter().map(|(_, _, raw)| raw).collect())
    }

    /// A named progress marker of the sync (`sync.…`), kept in the same
    /// table as the store's own markers; the names are the caller's.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn mark(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Sets (or, with `None`, removes) a named progress marker.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn set_mark(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let changed = match value {
            Some(v) => self
                .meta
                .insert(name, v)?
                .is_none_or(|old| old.value() != v),
            None => self.meta.remove(name)?.is_some(),
        };
        self.dirty |= changed;
        Ok(())
    }

    /// Removes every marker whose name starts with `prefix`.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn clear_marks(&mut self, prefix: &str) -> Result<(), StoreError> {
        let names: Vec<String> = self
            .meta
            .range(prefix..)?
            .map_while(|e| {
                e.ok()
                    .map(|(k, _)| k.value().to_owned())
                    .filter(|k| k.starts_with(prefix))
            })
            .collect();
        for name in &names {
            self.meta.remove(name.as_str())?;
        }
        self.dirty |= !names.is_empty();
        Ok(())
    }

    /// Where pull mode stopped.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn events_cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(tables::META_EVENTS_CURSOR)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// Records where pull mode stopped, in the same transaction as the
    /// changes it applied.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn set_events_cursor(&mut self, cursor: &str) -> Result<(), StoreError> {
        self.dirty = true;
        self.meta
            .insert(tables::META_EVENTS_CURSOR, cursor.as_bytes())?;
        Ok(())
    }

    /// Forgets where pull mode stopped (a new backfill starts over).
    ///
    /// # Errors
    /// On a storage failure.
    pub fn clear_events_cursor(&mut self) -> Result<(), StoreError> {
        self.dirty |= self.meta.remove(tables::META_EVENTS_CURSOR)?.is_some();
        Ok(())
    }

    // ---- AuthKit users -----------------------------------------------------

    /// An AuthKit user by id.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn authkit_user(&self, id: &str) -> Result<Option<AuthkitUser>, StoreError> {
        get_authkit_user(&self.authkit_users, id)
    }

    /// The AuthKit user a directory user of `organization` with this email
    /// (trimmed, lower-cased) is linked to: one with that email that is an
    /// active member of the organization — never one of another
    /// organization. The smallest id wins if several qualify.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    /// Returns the active membership that links them.
    pub fn linked_authkit_user(
        &self,
        email_key: &str,
        organization: &str,
    ) -> Result<Option<OrgMembership>, StoreError> {
        let range = (email_key, "")..=(email_key, "\u{10FFFF}");
        for entry in self.authkit_by_email.range(range)? {
            let (key, _) = entry?;
            let user = key.value().1;
            if let Some(m) = self
                .org_membership(user, organization)?
                .filter(OrgMembership::is_active)
            {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// An AuthKit user's membership of an organization, if known.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn org_membership(
        &self,
        user: &str,
        organization: &str,
    ) -> Result<Option<OrgMembership>, StoreError> {
        match self.org_memberships.get((user, organization))? {
            Some(v) => Ok(Some(codec::decode_org_membership(v.value())?)),
            None => Ok(None),
        }
    }

    /// Inserts or replaces an organization membership.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn put_org_membership(&mut self, m: &OrgMembership) -> Result<(), StoreError> {
        self.dirty = true;
        self.org_memberships.insert(
            (m.user_id.as_str(), m.organization_id.as_str()),
            codec::encode_org_membership(m).as_slice(),
        )?;
        Ok(())
    }

    /// Deletes an organization membership; returns whether it existed.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn delete_org_membership(
        &mut self,
        user: &str,
        organization: &str,
    ) -> Result<bool, StoreError> {
        let existed = self.org_memberships.remove((user, organization))?.is_some();
        self.dirty |= existed;
        Ok(existed)
    }

    /// Inserts or replaces an AuthKit user and its email index entry.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn put_authkit_user(&mut self, u: &AuthkitUser) -> Result<(), StoreError> {
        self.dirty = true;
        if let Some(old) = self.authkit_user(&u.id)? {
            let old_key = crate::model::email_key(&old.email);
            self.authkit_by_email
                .remove((old_key.as_str(), old.id.as_str()))?;
        }
        let key = crate::model::email_key(&u.email);
        self.authkit_users
            .insert(u.id.as_str(), codec::encode_authkit_user(u).as_slice())?;
        self.authkit_by_email
            .insert((key.as_str(), u.id.as_str()), ())?;
        Ok(())
    }

    /// Deletes an AuthKit user; returns what was stored.
    ///
    /// # Errors
    /// On a storage or decoding failure.
    pub fn delete_authkit_user(&mut self, id: &str) -> Result<Option<AuthkitUser>, StoreError> {
        let Some(old) = self.authkit_user(id)? else {
            return Ok(None);
        };
        self.dirty = true;
        self.authkit_users.remove(id)?;
        let key = crate::model::email_key(&old.email);
        self.authkit_by_email.remove((key.as_str(), id))?;
        Ok(Some(old))
    }

    /// Writes bookkeeping read from another database (a migration): the
    /// tombstones, seen event ids, held events and pull cursor it had.
    ///
    /// # Errors
    /// On a storage failure.
    pub fn restore_bookkeeping(
        &mut self,
        b: &super::snapshot::Bookkeeping,
    ) -> Result<(), StoreError> {
        self.dirty = true;
        for (key, (version, written)) in &b.tombstones {
            self.tombstones.insert(key.as_str(), (*version, *written))?;
            self.tombstones_by_time
                .insert((*written, key.as_str()), ())?;
        }
        for (id, seen) in &b.seen_events {
            self.seen_events.insert(id.as_str(), *seen)?;
            self.seen_events_by_time.insert((*seen, id.as_str()), ())?;
        }
        for ((dir, seq), (at, raw)) in &b.parked {
            self.parked_events
                .insert((dir.as_str(), *seq), (*at, raw.as_slice()))?;
            self.parked_by_time.insert((*at, dir.as_str(), *seq), ())?;
        }
        if let Some(cursor) = &b.cursor {
            self.meta
                .insert(tables::META_EVENTS_CURSOR, cursor.as_bytes())?;
        }
        if let Some(seq) = &b.parked_seq {
            self.meta.insert(tables::META_PARKED_SEQ, seq.as_slice())?;
        }
        Ok(())
    }

    // ---- end of transaction ------------------------------------------------

    /// Writes accumulated counts and revisions, prunes a bounded batch of
    /// expired bookkeeping, and returns the final state of every directory
    /// the transaction changed.
    /// `None` when the transaction wrote nothing (it is then not committed).
    pub(super) fn finish(mut self) -> Result<Option<DirectoryChanges>, StoreError> {
        if !self.dirty {
            return Ok(None);
        }
        self.flush_pending_emails()?;
        let touched = std::mem::take(&mut self.touched);
        for (id, delta) in touched {
            let Some(mut d) = get_directory(&self.directories, id)? else {
                continue;
            };
            delta.apply(&mut d);
            d.revision += 1;
            self.directories
                .insert(id.as_u128(), codec::encode_directory(&d).as_slice())?;
            self.changes.insert(id, Some(d));
        }
        self.prune()?;
        Ok(Some(
            std::mem::take(&mut self.changes).into_iter().collect(),
        ))
    }

    fn cutoff(&self, keep: std::time::Duration) -> i64 {
        self.now
            .0
            .saturating_sub(i64::try_from(keep.as_micros()).unwrap_or(i64::MAX))
    }

    fn prune(&mut self) -> Result<(), StoreError> {
        let cutoff = self.cutoff(self.retention.seen_events);
        let mut expired = Vec::new();
        for entry in self
            .seen_events_by_time
            .range((i64::MIN, "")..(cutoff, ""))?
        {
            let (key, _) = entry?;
            let (t, id) = key.value();
            expired.push((t, id.to_owned()));
            if expired.len() >= PRUNE_BATCH {
                break;
            }
        }
        for (t, id) in expired {
            self.seen_events_by_time.remove((t, id.as_str()))?;
            self.seen_events.remove(id.as_str())?;
        }

        let cutoff = self.cutoff(self.retention.tombstones);
        let mut expired = Vec::new();
        for entry in self
            .tombstones_by_time
            .range((i64::MIN, "")..(cutoff, ""))?
        {
            let (key, _) = entry?;
            let (t, k) = key.value();
            expired.push((t, k.to_owned()));
            if expired.len() >= PRUNE_BATCH {
                break;
            }
        }
        for (t, k) in expired {
            self.tombstones_by_time.remove((t, k.as_str()))?;
            self.tombstones.remove(k.as_str())?;
        }

        let cutoff = self.cutoff(self.retention.parked_events);
        let mut expired = Vec::new();
        for entry in self
            .parked_by_time
            .range((i64::MIN, "", 0u64)..(cutoff, "", 0u64))?
        {
            let (key, _) = entry?;
            let (t, dir, seq) = key.value();
            expired.push((t, dir.to_owned(), seq));
            if expired.len() >= PRUNE_BATCH {
                break;
            }
        }
        for (t, dir, seq) in expired {
            tracing::warn!(
                workos_directory_id = %dir,
                "dropping an event held too long for a directory that was never activated"
            );
            self.parked_by_time.remove((t, dir.as_str(), seq))?;
            self.parked_events.remove((dir.as_str(), seq))?;
        }
        Ok(())
    }
}
