//! The one place where WorkOS objects become store writes — used by
//! webhooks, pull mode and bulk import alike.
//!
//! Delivery is at-least-once and unordered, so application is:
//! - **idempotent**: a seen event id changes nothing ([`apply_event`]), and an
//!   object identical to what is stored is not rewritten (no `updated_at` bump);
//! - **monotonic**: an object whose WorkOS `updated_at` is older than the
//!   stored one changes nothing; a deletion leaves a tombstone so a late,
//!   older update does not resurrect the object; memberships are ordered by
//!   their event's time the same way;
//! - **self-healing**: a `user_added` before its `user.created` creates the
//!   user from the nested object;
//! - **never dangling**: an event for a directory rollcall has never seen is
//!   *held* (parked, durably) and applied when `dsync.activated` arrives;
//!   events for a deleted directory are dropped;
//! - **scoped**: WorkOS signs per environment, not per organization, so an
//!   event whose objects contradict what is stored — a user or group under
//!   another directory than the one it belongs to, a directory under
//!   another organization — changes nothing ([`Outcome::Conflict`], logged);
//! - **linked within the organization only**: a directory user's `user_id`
//!   is an AuthKit user with the same email who is an active member of the
//!   directory's organization, never one of another organization.

use uuid::Uuid;

use super::workos::{
    Event, EventKind, WorkosDirectory, WorkosDirectoryGroup, WorkosDirectoryUser,
    WorkosOrgMembership, WorkosUser,
};
use crate::model::{
    AuthkitUser, Directory, DirectoryGroup, DirectoryGroupId, DirectoryId, DirectoryUser,
    DirectoryUserId, MappedRole, OrgMembership, Provenance, Record, Timestamp, UserState,
    email_key,
};
use crate::store::{StoreError, Tx};

/// What applying one event or object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Something changed.
    Applied,
    /// It was already so.
    Unchanged,
    /// The event id was applied before.
    Duplicate,
    /// Older than what is stored, or deleted since: ignored.
    Stale,
    /// Held until its directory is activated.
    Parked,
    /// For a directory rollcall does not know (import reports it).
    NoDirectory,
    /// An event type rollcall does not apply.
    Ignored,
    /// Contradicts what is stored (an object under another directory or
    /// organization than the one it belongs to): changed nothing.
    Conflict,
}

/// rollcall's own fields, carried by an import line so that an export
/// re-imports to byte-identical API answers. Events carry none.
#[derive(Clone, Debug, Default)]
pub struct Internal {
    pub id: Option<Uuid>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    /// `Some(None)` sets `user_id` to null explicitly.
    pub user_id: Option<Option<String>>,
    pub mapped_role: Option<Option<MappedRole>>,
}

const NO_INTERNAL: &Internal = &Internal {
    id: None,
    created_at: None,
    updated_at: None,
    user_id: None,
    mapped_role: None,
};

/// Events of types rollcall does not apply, since start (reported in the log).
static IGNORED_EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Applies one event, once.
///
/// # Errors
/// Only storage failures; the caller's transaction is then not committed.
pub fn apply_event(tx: &mut Tx<'_>, event: &Event) -> Result<Outcome, StoreError> {
    if tx.event_seen(&event.id)? {
        return Ok(Outcome::Duplicate);
    }
    let outcome = apply_kind(tx, &event.kind, event.created_at, Some(&event.raw))?;
    if outcome == Outcome::Ignored {
        let total = IGNORED_EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(
            event_type = %event.event_type,
            ignored_total = total,
            "ignoring an event type rollcall does not apply"
        );
    }
    tx.mark_event_seen(&event.id)?;
    Ok(outcome)
}

/// Applies what an event asks for. `raw` is the event to hold when its
/// directory is unknown (`None` while replaying held events).
fn apply_kind(
    tx: &mut Tx<'_>,
    kind: &EventKind,
    at: Timestamp,
    raw: Option<&[u8]>,
) -> Result<Outcome, StoreError> {
    let outcome = match kind {
        EventKind::DirectoryActivated(d) => {
            upsert_directory(tx, d, d.updated_at.unwrap_or(at), NO_INTERNAL)?
        }
        EventKind::DirectoryDeleted(d) => {
            delete_directory(tx, d, deletion_version(d.updated_at, at))?
        }
        EventKind::UserUpserted(u) => upsert_user(tx, u, u.updated_at.unwrap_or(at), NO_INTERNAL)?,
        EventKind::UserDeleted(u) => delete_user(tx, u, deletion_version(u.updated_at, at))?,
        EventKind::GroupUpserted(g) => {
            upsert_group(tx, g, g.updated_at.unwrap_or(at), NO_INTERNAL)?
        }
        EventKind::GroupDeleted(g) => delete_group(tx, g, deletion_version(g.updated_at, at))?,
        EventKind::MemberAdded { user, group, .. } => add_member(tx, user, group, at)?,
        EventKind::MemberRemoved { user, group, .. } => remove_member(tx, user, group, at)?,
        EventKind::AuthkitUserUpserted(u) => {
            upsert_authkit_user(tx, u, u.updated_at.unwrap_or(at))?
        }
        EventKind::AuthkitUserDeleted(u) => {
            delete_authkit_user(tx, u, deletion_version(u.updated_at, at))?
        }
        EventKind::OrgMembershipUpserted(m) => {
            upsert_org_membership(tx, m, m.updated_at.unwrap_or(at))?
        }
        EventKind::OrgMembershipDeleted(m) => {
            delete_org_membership(tx, m, deletion_version(m.updated_at, at))?
        }
        EventKind::Unknown(_) => Outcome::Ignored,
    };
    if outcome != Outcome::NoDirectory {
        return Ok(outcome);
    }
    let dir = kind.workos_directory_id().unwrap_or_default();
    if tx.tombstone(dir)?.is_some() {
        return Ok(Outcome::Stale);
    }
    match raw {
        Some(raw) => {
            tx.park_event(dir, raw)?;
            tracing::info!(workos_directory_id = %dir, "holding an event until its directory is activated");
            Ok(Outcome::Parked)
        }
        None => Ok(Outcome::NoDirectory),
    }
}

/// A deletion is as new as the later of its object's `updated_at` and the
/// event itself: the event is emitted after the object's last change.
fn deletion_version(updated_at: Option<Timestamp>, at: Timestamp) -> Timestamp {
    updated_at.map_or(at, |u| u.max(at))
}

/// Logs why an event changed nothing: it contradicts what is stored.
fn conflict(kind: &str, workos_id: &str, why: &str) -> Outcome {
    tracing::warn!(
        object = kind,
        workos_id,
        why,
        "refusing a change that contradicts what is stored"
    );
    Outcome::Conflict
}

fn is_tombstoned(tx: &Tx<'_>, key: &str, version: Timestamp) -> Result<bool, StoreError> {
    Ok(tx.tombstone(key)?.is_some_and(|t| t >= version))
}

/// Whether the stored record is newer than `version` (an incoming change
/// of that version is then stale).
fn stored_is_newer<T: Record>(existing: Option<&T>, version: Timestamp) -> bool {
    existing.is_some_and(|old| old.source_version() > version)
}

/// Keeps the stored `updated_at` when only timestamps differ (an update
/// that changes nothing visible must not look like a change); returns
/// whether anything is left to write.
fn settle<T: Record>(existing: Option<&T>, record: &mut T, internal: &Internal) -> bool {
    let Some(old) = existing else {
        return true;
    };
    if internal.updated_at.is_none() && old.same_content(record) {
        *record.updated_at_mut() = old.updated_at();
    }
    old != record
}

// ---- directories -----------------------------------------------------------

/// Creates or updates a directory from a WorkOS directory object; a new
/// directory gets a new internal UUID, and the events held for it are applied.
///
/// # Errors
/// Storage failures.
pub fn upsert_directory(
    tx: &mut Tx<'_>,
    d: &WorkosDirectory,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    if is_tombstoned(tx, &d.id, version)? {
        return Ok(Outcome::Stale);
    }
    let existing = tx.directory_by_workos(&d.id)?;
    if let (Some(old), Some(org)) = (&existing, &d.organization_id)
        && old.organization_id != *org
    {
        return Ok(conflict(
            "directory",
            &d.id,
            "it belongs to another organization",
        ));
    }
    if stored_is_newer(existing.as_ref(), version) {
        return Ok(Outcome::Stale);
    }
    let Some(organization_id) = d
        .organization_id
        .clone()
        .or_else(|| existing.as_ref().map(|o| o.organization_id.clone()))
    else {
        return Ok(Outcome::Stale);
    };
    let mut record = Directory {
        id: existing
            .as_ref()
            .map(|o| o.id)
            .or(internal.id.map(DirectoryId))
            .unwrap_or_else(DirectoryId::new_v7),
        organization_id,
        workos_directory_id: d.id.clone(),
        name: d.name.clone(),
        workos_type: d.kind.clone(),
        workos_state: d.state.clone(),
        domains: d.domains.clone(),
        created_at: existing
            .as_ref()
            .map(|o| o.created_at)
            .or(internal.created_at)
            .unwrap_or(tx.now()),
        updated_at: internal.updated_at.unwrap_or(tx.now()),
        user_count: 0,
        group_count: 0,
        revision: 0,
        source: Provenance {
            created_at: d.created_at.unwrap_or(version),
            updated_at: version,
        },
    };
    if let Some(old) = &existing {
        // Counts and revision are the store's; compare like with like.
        record.user_count = old.user_count;
        record.group_count = old.group_count;
        record.revision = old.revision;
    }
    if !settle(existing.as_ref(), &mut record, internal) {
        return Ok(Outcome::Unchanged);
    }
    tx.put_directory(&record)?;
    tx.clear_tombstone(&d.id)?;
    if existing.is_none() {
        for raw in tx.take_parked_events(&d.id)? {
            match Event::parse(&raw) {
                Ok(event) => {
                    apply_kind(tx, &event.kind, event.created_at, None)?;
                }
                Err(e) => tracing::warn!(error = %e, "dropping a held event that no longer parses"),
            }
        }
    }
    Ok(Outcome::Applied)
}

/// Removes a directory with everything in it, and remembers the deletion.
///
/// # Errors
/// Storage failures.
pub fn delete_directory(
    tx: &mut Tx<'_>,
    d: &WorkosDirectory,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    let existing = tx.directory_by_workos(&d.id)?;
    if let (Some(old), Some(org)) = (&existing, &d.organization_id)
        && old.organization_id != *org
    {
        return Ok(conflict(
            "directory",
            &d.id,
            "it belongs to another organization",
        ));
    }
    let existed = match existing {
        Some(old) => tx.delete_directory(old.id)?,
        None => false,
    };
    tx.put_tombstone(&d.id, version)?;
    let dropped = tx.take_parked_events(&d.id)?.len();
    if dropped > 0 {
        tracing::info!(workos_directory_id = %d.id, dropped, "dropped events held for a deleted directory");
    }
    Ok(if existed {
        Outcome::Applied
    } else {
        Outcome::Unchanged
    })
}

// ---- users -------------------------------------------------------------------

/// Creates or updates a directory user by WorkOS id, keeping its internal
/// UUID and `created_at`, and linking it to the AuthKit user with its email.
///
/// # Errors
/// Storage failures.
pub fn upsert_user(
    tx: &mut Tx<'_>,
    u: &WorkosDirectoryUser,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    let Some(dir) = tx.directory_id_by_workos(&u.directory_id)? else {
        return Ok(Outcome::NoDirectory);
    };
    let existing = tx.user_by_workos(&u.id)?;
    if existing.as_ref().is_some_and(|o| o.directory_id != dir) {
        return Ok(conflict(
            "directory_user",
            &u.id,
            "it belongs to another directory",
        ));
    }
    if is_tombstoned(tx, &u.id, version)? || stored_is_newer(existing.as_ref(), version) {
        return Ok(Outcome::Stale);
    }
    let user_id = match &internal.user_id {
        Some(given) => given.clone(),
        None => linked_user(tx, dir, &u.email_key())?,
    };
    let mut record = DirectoryUser {
        id: existing
            .as_ref()
            .map(|o| o.id)
            .or(internal.id.map(DirectoryUserId))
            .unwrap_or_else(DirectoryUserId::new_v7),
        directory_id: dir,
        user_id,
        workos_directory_user_id: u.id.clone(),
        email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        state: UserState::from_workos(&u.state),
        raw_attributes: u.raw_attributes.clone(),
        idp_id: u.idp_id.clone(),
        created_at: existing
            .as_ref()
            .map(|o| o.created_at)
            .or(internal.created_at)
            .unwrap_or(tx.now()),
        updated_at: internal.updated_at.unwrap_or(tx.now()),
        workos_state: u.state.clone(),
        emails: u.emails.clone(),
        custom_attributes: u.custom_attributes.clone(),
        source: Provenance {
            created_at: u.created_at.unwrap_or(version),
            updated_at: version,
        },
    };
    if !settle(existing.as_ref(), &mut record, internal) {
        return Ok(Outcome::Unchanged);
    }
    tx.put_user(&record)?;
    tx.clear_tombstone(&u.id)?;
    Ok(Outcome::Applied)
}

/// Deletes a directory user and remembers the deletion.
///
/// # Errors
/// Storage failures.
pub fn delete_user(
    tx: &mut Tx<'_>,
    u: &WorkosDirectoryUser,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    let Some(dir) = tx.directory_id_by_workos(&u.directory_id)? else {
        return Ok(Outcome::NoDirectory);
    };
    let existing = tx.user_by_workos(&u.id)?;
    if existing.as_ref().is_some_and(|o| o.directory_id != dir) {
        return Ok(conflict(
            "directory_user",
            &u.id,
            "it belongs to another directory",
        ));
    }
    if stored_is_newer(existing.as_ref(), version) {
        return Ok(Outcome::Stale);
    }
    tx.put_tombstone(&u.id, version)?;
    match existing {
        Some(old) => {
            tx.delete_user(&old)?;
            Ok(Outcome::Applied)
        }
        None => Ok(Outcome::Unchanged),
    }
}

// ---- groups and memberships ---------------------------------------------------

/// Creates or updates a directory group by WorkOS id.
///
/// # Errors
/// Storage failures.
pub fn upsert_group(
    tx: &mut Tx<'_>,
    g: &WorkosDirectoryGroup,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    let Some(dir) = tx.directory_id_by_workos(&g.directory_id)? else {
        return Ok(Outcome::NoDirectory);
    };
    let existing = tx.group_by_workos(&g.id)?;
    if existing.as_ref().is_some_and(|o| o.directory_id != dir) {
        return Ok(conflict(
            "directory_group",
            &g.id,
            "it belongs to another directory",
        ));
    }
    if is_tombstoned(tx, &g.id, version)? || stored_is_newer(existing.as_ref(), version) {
        return Ok(Outcome::Stale);
    }
    let mut record = DirectoryGroup {
        id: existing
            .as_ref()
            .map(|o| o.id)
            .or(internal.id.map(DirectoryGroupId))
            .unwrap_or_else(DirectoryGroupId::new_v7),
        directory_id: dir,
        workos_directory_group_id: g.id.clone(),
        name: g.name.clone(),
        idp_id: g.idp_id.clone(),
        raw_attributes: g.raw_attributes.clone(),
        mapped_role: match internal.mapped_role {
            Some(given) => given,
            None => existing.as_ref().and_then(|o| o.mapped_role),
        },
        created_at: existing
            .as_ref()
            .map(|o| o.created_at)
            .or(internal.created_at)
            .unwrap_or(tx.now()),
        updated_at: internal.updated_at.unwrap_or(tx.now()),
        source: Provenance {
            created_at: g.created_at.unwrap_or(version),
            updated_at: version,
        },
    };
    if !settle(existing.as_ref(), &mut record, internal) {
        return Ok(Outcome::Unchanged);
    }
    tx.put_group(&record)?;
    tx.clear_tombstone(&g.id)?;
    Ok(Outcome::Applied)
}

/// Deletes a directory group (and its memberships) and remembers the deletion.
///
/// # Errors
/// Storage failures.
pub fn delete_group(
    tx: &mut Tx<'_>,
    g: &WorkosDirectoryGroup,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    let Some(dir) = tx.directory_id_by_workos(&g.directory_id)? else {
        return Ok(Outcome::NoDirectory);
    };
    let existing = tx.group_by_workos(&g.id)?;
    if existing.as_ref().is_some_and(|o| o.directory_id != dir) {
        return Ok(conflict(
            "directory_group",
            &g.id,
            "it belongs to another directory",
        ));
    }
    if stored_is_newer(existing.as_ref(), version) {
        return Ok(Outcome::Stale);
    }
    tx.put_tombstone(&g.id, version)?;
    match existing {
        Some(old) => {
            tx.delete_group(&old)?;
            Ok(Outcome::Applied)
        }
        None => Ok(Outcome::Unchanged),
    }
}

fn membership_key(group: &str, user: &str) -> String {
    format!("membership:{group}:{user}")
}

/// The user and group of a membership event, after upserting the nested
/// objects (monotonically), with whether either upsert changed something —
/// or why there is no pair: [`Outcome::Stale`] when one of them does not
/// exist (deleted, or never seen), [`Outcome::Conflict`] when one belongs
/// to another directory.
type Pair = Result<(bool, DirectoryUser, DirectoryGroup), Outcome>;

fn member_pair(
    tx: &mut Tx<'_>,
    user: &WorkosDirectoryUser,
    group: &WorkosDirectoryGroup,
    at: Timestamp,
) -> Result<Pair, StoreError> {
    let u = upsert_user(tx, user, user.updated_at.unwrap_or(at), NO_INTERNAL)?;
    let g = upsert_group(tx, group, group.updated_at.unwrap_or(at), NO_INTERNAL)?;
    if u == Outcome::Conflict || g == Outcome::Conflict {
        return Ok(Err(Outcome::Conflict));
    }
    let changed = u == Outcome::Applied || g == Outcome::Applied;
    match (tx.user_by_workos(&user.id)?, tx.group_by_workos(&group.id)?) {
        (Some(user), Some(group)) if user.directory_id == group.directory_id => {
            Ok(Ok((changed, user, group)))
        }
        _ => Ok(Err(Outcome::Stale)),
    }
}

/// Adds a user to a group, creating either from the nested objects if needed.
///
/// # Errors
/// Storage failures.
pub fn add_member(
    tx: &mut Tx<'_>,
    user: &WorkosDirectoryUser,
    group: &WorkosDirectoryGroup,
    at: Timestamp,
) -> Result<Outcome, StoreError> {
    if tx.directory_id_by_workos(&user.directory_id)?.is_none() {
        return Ok(Outcome::NoDirectory);
    }
    let (changed, u, g) = match member_pair(tx, user, group, at)? {
        Ok(pair) => pair,
        Err(why) => return Ok(why),
    };
    let key = membership_key(&g.workos_directory_group_id, &u.workos_directory_user_id);
    if is_tombstoned(tx, &key, at)? {
        return Ok(if changed {
            Outcome::Applied
        } else {
            Outcome::Stale
        });
    }
    if tx.membership(g.id, u.id)?.is_some_and(|t| t >= at) {
        return Ok(if changed {
            Outcome::Applied
        } else {
            Outcome::Unchanged
        });
    }
    tx.put_membership(g.id, u.id, at)?;
    tx.clear_tombstone(&key)?;
    Ok(Outcome::Applied)
}

/// Removes a user from a group, and remembers the removal.
///
/// # Errors
/// Storage failures.
pub fn remove_member(
    tx: &mut Tx<'_>,
    user: &WorkosDirectoryUser,
    group: &WorkosDirectoryGroup,
    at: Timestamp,
) -> Result<Outcome, StoreError> {
    if tx.directory_id_by_workos(&user.directory_id)?.is_none() {
        return Ok(Outcome::NoDirectory);
    }
    let key = membership_key(&group.id, &user.id);
    let (changed, u, g) = match member_pair(tx, user, group, at)? {
        Ok(pair) => pair,
        Err(Outcome::Conflict) => return Ok(Outcome::Conflict),
        Err(_) => {
            tx.put_tombstone(&key, at)?;
            return Ok(Outcome::Unchanged);
        }
    };
    if tx.membership(g.id, u.id)?.is_some_and(|t| t > at) {
        return Ok(if changed {
            Outcome::Applied
        } else {
            Outcome::Stale
        });
    }
    let existed = tx.delete_membership(g.id, u.id)?;
    tx.put_tombstone(&key, at)?;
    Ok(if existed || changed {
        Outcome::Applied
    } else {
        Outcome::Unchanged
    })
}

// ---- AuthKit users (linking) ------------------------------------------------

/// The AuthKit user a directory user of `dir` with this email is linked to
/// (see [`Tx::linked_authkit_user`]).
fn linked_user(tx: &Tx<'_>, dir: DirectoryId, key: &str) -> Result<Option<String>, StoreError> {
    match tx.directory(dir)? {
        Some(d) => tx.linked_authkit_user(key, &d.organization_id),
        None => Ok(None),
    }
}

/// Points every directory user with this email, in every directory, at the
/// AuthKit user it is now linked to (or at nobody).
fn relink(tx: &mut Tx<'_>, key: &str) -> Result<(), StoreError> {
    let mut targets: std::collections::HashMap<DirectoryId, Option<String>> =
        std::collections::HashMap::new();
    for mut user in tx.users_with_email(key)? {
        let target = match targets.get(&user.directory_id) {
            Some(t) => t.clone(),
            None => {
                let t = linked_user(tx, user.directory_id, key)?;
                targets.insert(user.directory_id, t.clone());
                t
            }
        };
        if user.user_id != target {
            user.user_id = target;
            user.updated_at = tx.now();
            tx.put_user(&user)?;
        }
    }
    Ok(())
}

/// Relinks the directory users with the email of this AuthKit user, if the
/// AuthKit user is known.
fn relink_authkit_user(tx: &mut Tx<'_>, user_id: &str) -> Result<(), StoreError> {
    if let Some(u) = tx.authkit_user(user_id)? {
        relink(tx, &email_key(&u.email))?;
    }
    Ok(())
}

/// Records an AuthKit user and links every directory user with its email.
///
/// # Errors
/// Storage failures.
pub fn upsert_authkit_user(
    tx: &mut Tx<'_>,
    u: &WorkosUser,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    if is_tombstoned(tx, &u.id, version)? {
        return Ok(Outcome::Stale);
    }
    let existing = tx.authkit_user(&u.id)?;
    if existing
        .as_ref()
        .is_some_and(|old| old.source.updated_at > version)
    {
        return Ok(Outcome::Stale);
    }
    let record = AuthkitUser {
        id: u.id.clone(),
        email: u.email.clone(),
        source: Provenance {
            created_at: u.created_at.unwrap_or(version),
            updated_at: version,
        },
    };
    if existing.as_ref() == Some(&record) {
        return Ok(Outcome::Unchanged);
    }
    tx.put_authkit_user(&record)?;
    tx.clear_tombstone(&u.id)?;
    if let Some(old) = existing {
        let old_key = email_key(&old.email);
        if old_key != email_key(&u.email) {
            relink(tx, &old_key)?;
        }
    }
    relink(tx, &email_key(&u.email))?;
    Ok(Outcome::Applied)
}

/// Forgets an AuthKit user and unlinks the directory users it was linked to.
///
/// # Errors
/// Storage failures.
pub fn delete_authkit_user(
    tx: &mut Tx<'_>,
    u: &WorkosUser,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    if tx
        .authkit_user(&u.id)?
        .is_some_and(|old| old.source.updated_at > version)
    {
        return Ok(Outcome::Stale);
    }
    tx.put_tombstone(&u.id, version)?;
    match tx.delete_authkit_user(&u.id)? {
        Some(old) => {
            relink(tx, &email_key(&old.email))?;
            Ok(Outcome::Applied)
        }
        None => Ok(Outcome::Unchanged),
    }
}

// ---- organization memberships (who may be linked) ---------------------------

/// Records an AuthKit user's membership of an organization and relinks the
/// directory users with that user's email.
///
/// # Errors
/// Storage failures.
pub fn upsert_org_membership(
    tx: &mut Tx<'_>,
    m: &WorkosOrgMembership,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    if is_tombstoned(tx, &m.id, version)? {
        return Ok(Outcome::Stale);
    }
    let existing = tx.org_membership(&m.user_id, &m.organization_id)?;
    if existing
        .as_ref()
        .is_some_and(|old| old.source.updated_at > version)
    {
        return Ok(Outcome::Stale);
    }
    let record = OrgMembership {
        id: m.id.clone(),
        user_id: m.user_id.clone(),
        organization_id: m.organization_id.clone(),
        status: m.status.clone(),
        source: Provenance {
            created_at: m.created_at.unwrap_or(version),
            updated_at: version,
        },
    };
    if existing.as_ref() == Some(&record) {
        return Ok(Outcome::Unchanged);
    }
    tx.put_org_membership(&record)?;
    tx.clear_tombstone(&m.id)?;
    relink_authkit_user(tx, &m.user_id)?;
    Ok(Outcome::Applied)
}

/// Forgets an organization membership and unlinks the directory users of
/// that organization from the AuthKit user.
///
/// # Errors
/// Storage failures.
pub fn delete_org_membership(
    tx: &mut Tx<'_>,
    m: &WorkosOrgMembership,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    if tx
        .org_membership(&m.user_id, &m.organization_id)?
        .is_some_and(|old| old.source.updated_at > version)
    {
        return Ok(Outcome::Stale);
    }
    tx.put_tombstone(&m.id, version)?;
    if !tx.delete_org_membership(&m.user_id, &m.organization_id)? {
        return Ok(Outcome::Unchanged);
    }
    relink_authkit_user(tx, &m.user_id)?;
    Ok(Outcome::Applied)
}
