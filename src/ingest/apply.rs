//! The one place where WorkOS objects become store writes — used by
//! webhooks, pull mode, backfill, reconcile and bulk import alike.
//!
//! What is stored is a function of the WorkOS data alone (the README's
//! "Determinism"): a record's id derives from its WorkOS id and `created_at`
//! ([`crate::model::derive_id`]), its times are WorkOS's, and every rule
//! below decides the same way whatever order the data came in, so any
//! number of instances fed by any paths answer alike. Delivery is
//! at-least-once and unordered, so application is:
//! - **idempotent**: a seen event id changes nothing ([`apply_event`]), and an
//!   object identical to what is stored writes nothing;
//! - **monotonic**: an object whose WorkOS `updated_at` is older than the
//!   stored one changes nothing (of two versions with the same `updated_at`
//!   the one with the greater [`Record::tiebreak`] wins); a deletion leaves
//!   a tombstone so a late, older update does not resurrect the object;
//!   memberships are ordered by their event's time the same way;
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
//!
//! Directories, users and groups go through one generic [`upsert`] and
//! [`delete`]; a [`Kind`] says what differs between them.

use uuid::Uuid;

use super::workos::{
    Event, EventKind, WorkosDirectory, WorkosDirectoryGroup, WorkosDirectoryUser,
    WorkosOrgMembership, WorkosUser,
};
use crate::model::{
    AuthkitUser, Directory, DirectoryGroup, DirectoryGroupId, DirectoryId, DirectoryUser,
    DirectoryUserId, MappedRole, OrgMembership, Provenance, Record, Timestamp, UserState,
    derive_id, email_key, is_scim_directory_id,
};
use crate::store::{Snapshot, Store, StoreError, Tx};

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

/// What an import line may say beyond the WorkOS object: the group's role
/// in Char, which WorkOS does not know. Everything else rollcall stores is
/// derived from the WorkOS data.
#[derive(Clone, Debug, Default)]
pub struct Internal {
    pub mapped_role: Option<Option<MappedRole>>,
}

const NO_INTERNAL: &Internal = &Internal { mapped_role: None };

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
    if let Some(dir) = kind
        .workos_directory_id()
        .filter(|d| is_scim_directory_id(d))
    {
        return Ok(conflict("directory", dir, SCIM_OWNED));
    }
    let outcome = match kind {
        EventKind::DirectoryActivated(d) => {
            upsert::<Directories>(tx, d, d.updated_at.unwrap_or(at), NO_INTERNAL)?
        }
        EventKind::DirectoryDeleted(d) => {
            delete::<Directories>(tx, d, deletion_version(d.updated_at, at))?
        }
        EventKind::UserUpserted(u) => {
            upsert::<Users>(tx, u, u.updated_at.unwrap_or(at), NO_INTERNAL)?
        }
        EventKind::UserDeleted(u) => delete::<Users>(tx, u, deletion_version(u.updated_at, at))?,
        EventKind::GroupUpserted(g) => {
            upsert::<Groups>(tx, g, g.updated_at.unwrap_or(at), NO_INTERNAL)?
        }
        EventKind::GroupDeleted(g) => delete::<Groups>(tx, g, deletion_version(g.updated_at, at))?,
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

/// Why WorkOS data naming a SCIM directory changes nothing: SCIM owns it.
const SCIM_OWNED: &str = "the directory is fed by SCIM, not WorkOS";

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

// ---- one upsert and one delete for every kind --------------------------------

/// What differs between directories, users and groups on their way from a
/// WorkOS object to a stored record.
trait Kind {
    /// The WorkOS object.
    type Object;
    type Record: Record;
    /// Where a record lives and must stay: its directory (users, groups) or
    /// its organization (directories).
    type Scope: PartialEq;
    /// The object kind, for logs.
    const NAME: &'static str;
    /// What a record under another scope is, for logs.
    const ELSEWHERE: &'static str;

    fn source_id(o: &Self::Object) -> &str;
    fn created_at(o: &Self::Object) -> Option<Timestamp>;
    fn existing(tx: &Tx<'_>, o: &Self::Object) -> Result<Option<Self::Record>, StoreError>;
    /// The scope the object names, or why there is none
    /// ([`Outcome::NoDirectory`], or [`Outcome::Stale`] for a directory
    /// nobody knows the organization of).
    fn scope(
        tx: &mut Tx<'_>,
        o: &Self::Object,
        existing: Option<&Self::Record>,
    ) -> Result<Result<Self::Scope, Outcome>, StoreError>;
    fn scope_of(r: &Self::Record) -> Self::Scope;
    fn id_of(r: &Self::Record) -> Uuid;
    /// The record the object becomes, under `id`.
    fn build(
        tx: &Tx<'_>,
        o: &Self::Object,
        scope: &Self::Scope,
        id: Uuid,
        version: Timestamp,
        existing: Option<&Self::Record>,
        internal: &Internal,
    ) -> Result<Self::Record, StoreError>;
    /// The record stored under `id` in `scope`, if any (to detect a
    /// collision of derived ids).
    fn occupant(
        tx: &Tx<'_>,
        scope: &Self::Scope,
        id: Uuid,
    ) -> Result<Option<Self::Record>, StoreError>;
    fn put(tx: &mut Tx<'_>, r: &Self::Record) -> Result<(), StoreError>;
    fn remove(tx: &mut Tx<'_>, r: &Self::Record) -> Result<(), StoreError>;
    /// Moves a record to another id (after a collision), memberships and
    /// all; `false` when this kind cannot move (directories).
    fn rekey(tx: &mut Tx<'_>, r: &Self::Record, id: Uuid) -> Result<bool, StoreError>;
    /// After a record was created.
    fn created(_tx: &mut Tx<'_>, _o: &Self::Object) -> Result<(), StoreError> {
        Ok(())
    }
    /// After a deletion was recorded (whether or not the record existed).
    fn deleted(_tx: &mut Tx<'_>, _o: &Self::Object) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Creates or updates the record of a WorkOS object, at WorkOS version
/// `version` (its `updated_at`).
///
/// # Errors
/// Storage failures.
fn upsert<K: Kind>(
    tx: &mut Tx<'_>,
    o: &K::Object,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    let source_id = K::source_id(o);
    let existing = K::existing(tx, o)?;
    let scope = match K::scope(tx, o, existing.as_ref())? {
        Ok(scope) => scope,
        Err(outcome) => return Ok(outcome),
    };
    if existing
        .as_ref()
        .is_some_and(|old| K::scope_of(old) != scope)
    {
        return Ok(conflict(K::NAME, source_id, K::ELSEWHERE));
    }
    if is_tombstoned(tx, source_id, version)?
        || existing
            .as_ref()
            .is_some_and(|old| old.source_version() > version)
    {
        return Ok(Outcome::Stale);
    }
    let id = match &existing {
        Some(old) => K::id_of(old),
        None => {
            let created = K::created_at(o).unwrap_or(version);
            place::<K>(tx, &scope, source_id, created)?
        }
    };
    let record = K::build(tx, o, &scope, id, version, existing.as_ref(), internal)?;
    if let Some(old) = &existing {
        if *old == record {
            return Ok(Outcome::Unchanged);
        }
        // Two different versions with the same updated_at: the same one
        // wins on every instance, whichever arrived first.
        if old.source_version() == version && old.tiebreak() > record.tiebreak() {
            return Ok(Outcome::Stale);
        }
    }
    K::put(tx, &record)?;
    tx.clear_tombstone(source_id)?;
    if existing.is_none() {
        K::created(tx, o)?;
    }
    Ok(Outcome::Applied)
}

/// The id a new record gets: its derived id, unless another record of the
/// same scope already holds it (a collision: same millisecond, same 74 hash
/// bits). Then the smaller WorkOS id keeps the slot and the other takes its
/// next probe — moved, if it was there first — so the outcome does not
/// depend on arrival order. (Only if the smaller one is later deleted does
/// the other keep its probe id until a rebuild; see the README.)
fn place<K: Kind>(
    tx: &mut Tx<'_>,
    scope: &K::Scope,
    source_id: &str,
    created: Timestamp,
) -> Result<Uuid, StoreError> {
    let mut probe = 0u32;
    loop {
        let id = derive_id(source_id, created, probe);
        let Some(other) = K::occupant(tx, scope, id)? else {
            return Ok(id);
        };
        tracing::error!(
            object = K::NAME,
            workos_id = source_id,
            holder = other.source_id(),
            %id,
            "two records derive the same id; the smaller WorkOS id keeps it"
        );
        if source_id < other.source_id() {
            let moved = next_free::<K>(tx, scope, &other, probe + 1)?;
            if K::rekey(tx, &other, moved)? {
                return Ok(id);
            }
        }
        probe += 1;
    }
}

/// The first id of `r`'s probe sequence, from `probe` on, that nobody holds.
fn next_free<K: Kind>(
    tx: &Tx<'_>,
    scope: &K::Scope,
    r: &K::Record,
    mut probe: u32,
) -> Result<Uuid, StoreError> {
    let created = Timestamp::from_millis(i64::try_from(uuid_millis(K::id_of(r))).unwrap_or(0));
    loop {
        let id = derive_id(r.source_id(), created, probe);
        if K::occupant(tx, scope, id)?.is_none() {
            return Ok(id);
        }
        probe += 1;
    }
}

/// The millisecond field of a version-7 id.
fn uuid_millis(id: Uuid) -> u64 {
    (id.as_u128() >> 80) as u64
}

/// Deletes the record of a WorkOS object and remembers the deletion as of
/// `version`.
///
/// # Errors
/// Storage failures.
fn delete<K: Kind>(
    tx: &mut Tx<'_>,
    o: &K::Object,
    version: Timestamp,
) -> Result<Outcome, StoreError> {
    let source_id = K::source_id(o);
    let existing = K::existing(tx, o)?;
    let scope = match K::scope(tx, o, existing.as_ref())? {
        Ok(scope) => Some(scope),
        Err(Outcome::NoDirectory) => return Ok(Outcome::NoDirectory),
        Err(_) => None,
    };
    if let (Some(old), Some(scope)) = (&existing, &scope)
        && K::scope_of(old) != *scope
    {
        return Ok(conflict(K::NAME, source_id, K::ELSEWHERE));
    }
    if existing
        .as_ref()
        .is_some_and(|old| old.source_version() > version)
    {
        return Ok(Outcome::Stale);
    }
    tx.put_tombstone(source_id, version)?;
    let outcome = match existing {
        Some(old) => {
            K::remove(tx, &old)?;
            Outcome::Applied
        }
        None => Outcome::Unchanged,
    };
    K::deleted(tx, o)?;
    Ok(outcome)
}

/// Directories: scoped by organization.
struct Directories;

impl Kind for Directories {
    type Object = WorkosDirectory;
    type Record = Directory;
    type Scope = String;
    const NAME: &'static str = "directory";
    const ELSEWHERE: &'static str = "it belongs to another organization";

    fn source_id(o: &WorkosDirectory) -> &str {
        &o.id
    }
    fn created_at(o: &WorkosDirectory) -> Option<Timestamp> {
        o.created_at
    }
    fn existing(tx: &Tx<'_>, o: &WorkosDirectory) -> Result<Option<Directory>, StoreError> {
        tx.directory_by_workos(&o.id)
    }
    fn scope(
        _tx: &mut Tx<'_>,
        o: &WorkosDirectory,
        existing: Option<&Directory>,
    ) -> Result<Result<String, Outcome>, StoreError> {
        // A deletion or an update may omit the organization; a directory
        // nobody knows the organization of cannot be created.
        Ok(o.organization_id
            .clone()
            .or_else(|| existing.map(|d| d.organization_id.clone()))
            .ok_or(Outcome::Stale))
    }
    fn scope_of(r: &Directory) -> String {
        r.organization_id.clone()
    }
    fn id_of(r: &Directory) -> Uuid {
        r.id.0
    }
    fn build(
        _tx: &Tx<'_>,
        d: &WorkosDirectory,
        organization: &String,
        id: Uuid,
        version: Timestamp,
        existing: Option<&Directory>,
        _internal: &Internal,
    ) -> Result<Directory, StoreError> {
        // Fixed when first stored, like the id (WorkOS never changes it).
        let created = existing
            .map(|o| o.created_at)
            .or(d.created_at)
            .unwrap_or(version);
        Ok(Directory {
            id: DirectoryId(id),
            organization_id: organization.clone(),
            workos_directory_id: d.id.clone(),
            name: d.name.clone(),
            workos_type: d.kind.clone(),
            workos_state: d.state.clone(),
            domains: d.domains.clone(),
            created_at: created,
            updated_at: version,
            // Counts, revision and digests are the store's.
            user_count: existing.map_or(0, |o| o.user_count),
            group_count: existing.map_or(0, |o| o.group_count),
            revision: existing.map_or(0, |o| o.revision),
            users_digest: existing.map_or(0, |o| o.users_digest),
            groups_digest: existing.map_or(0, |o| o.groups_digest),
            source: Provenance {
                created_at: created,
                updated_at: version,
            },
        })
    }
    fn occupant(tx: &Tx<'_>, _org: &String, id: Uuid) -> Result<Option<Directory>, StoreError> {
        tx.directory(DirectoryId(id))
    }
    fn put(tx: &mut Tx<'_>, r: &Directory) -> Result<(), StoreError> {
        tx.put_directory(r)
    }
    fn remove(tx: &mut Tx<'_>, r: &Directory) -> Result<(), StoreError> {
        tx.delete_directory(r.id).map(|_| ())
    }
    fn rekey(_tx: &mut Tx<'_>, _r: &Directory, _id: Uuid) -> Result<bool, StoreError> {
        // Moving a directory would move every record in it; directories
        // are few, and the newcomer takes the next probe instead.
        Ok(false)
    }
    /// Applies the events held for the directory.
    fn created(tx: &mut Tx<'_>, d: &WorkosDirectory) -> Result<(), StoreError> {
        for raw in tx.take_parked_events(&d.id)? {
            match Event::parse(&raw) {
                Ok(event) => {
                    apply_kind(tx, &event.kind, event.created_at, None)?;
                }
                Err(e) => tracing::warn!(error = %e, "dropping a held event that no longer parses"),
            }
        }
        Ok(())
    }
    /// Drops the events held for a deleted directory.
    fn deleted(tx: &mut Tx<'_>, d: &WorkosDirectory) -> Result<(), StoreError> {
        let dropped = tx.take_parked_events(&d.id)?.len();
        if dropped > 0 {
            tracing::info!(workos_directory_id = %d.id, dropped, "dropped events held for a deleted directory");
        }
        Ok(())
    }
}

/// The directory a user or group event names, by WorkOS id.
fn directory_of(
    tx: &mut Tx<'_>,
    workos_id: &str,
) -> Result<Result<DirectoryId, Outcome>, StoreError> {
    Ok(tx
        .directory_id_by_workos(workos_id)?
        .ok_or(Outcome::NoDirectory))
}

/// Directory users: scoped by directory; linked to AuthKit users.
struct Users;

/// The record a directory user is stored as.
fn user_record(
    u: &WorkosDirectoryUser,
    dir: DirectoryId,
    id: Uuid,
    version: Timestamp,
    created: Timestamp,
    link: Option<Link>,
) -> DirectoryUser {
    DirectoryUser {
        id: DirectoryUserId(id),
        directory_id: dir,
        updated_at: link.as_ref().map_or(version, |l| l.version.max(version)),
        user_id: link.map(|l| l.user_id),
        workos_directory_user_id: u.id.clone(),
        email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        state: UserState::from_workos(&u.state),
        raw_attributes: u.raw_attributes.clone(),
        idp_id: u.idp_id.clone(),
        created_at: created,
        workos_state: u.state.clone(),
        emails: u.emails.clone(),
        custom_attributes: u.custom_attributes.clone(),
        source: Provenance {
            created_at: created,
            updated_at: version,
        },
    }
}

impl Kind for Users {
    type Object = WorkosDirectoryUser;
    type Record = DirectoryUser;
    type Scope = DirectoryId;
    const NAME: &'static str = "directory_user";
    const ELSEWHERE: &'static str = "it belongs to another directory";

    fn source_id(o: &WorkosDirectoryUser) -> &str {
        &o.id
    }
    fn created_at(o: &WorkosDirectoryUser) -> Option<Timestamp> {
        o.created_at
    }
    fn existing(tx: &Tx<'_>, o: &WorkosDirectoryUser) -> Result<Option<DirectoryUser>, StoreError> {
        tx.user_by_workos(&o.id)
    }
    fn scope(
        tx: &mut Tx<'_>,
        o: &WorkosDirectoryUser,
        _: Option<&DirectoryUser>,
    ) -> Result<Result<DirectoryId, Outcome>, StoreError> {
        directory_of(tx, &o.directory_id)
    }
    fn scope_of(r: &DirectoryUser) -> DirectoryId {
        r.directory_id
    }
    fn id_of(r: &DirectoryUser) -> Uuid {
        r.id.0
    }
    fn build(
        tx: &Tx<'_>,
        u: &WorkosDirectoryUser,
        dir: &DirectoryId,
        id: Uuid,
        version: Timestamp,
        existing: Option<&DirectoryUser>,
        _internal: &Internal,
    ) -> Result<DirectoryUser, StoreError> {
        // Fixed when first stored, like the id (WorkOS never changes it).
        let created = existing
            .map(|o| o.created_at)
            .or(u.created_at)
            .unwrap_or(version);
        let link = linked_user(tx, *dir, &u.email_key())?;
        Ok(user_record(u, *dir, id, version, created, link))
    }
    fn occupant(
        tx: &Tx<'_>,
        dir: &DirectoryId,
        id: Uuid,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        tx.user(*dir, DirectoryUserId(id))
    }
    fn put(tx: &mut Tx<'_>, r: &DirectoryUser) -> Result<(), StoreError> {
        tx.put_user(r)
    }
    fn remove(tx: &mut Tx<'_>, r: &DirectoryUser) -> Result<(), StoreError> {
        tx.delete_user(r)
    }
    fn rekey(tx: &mut Tx<'_>, r: &DirectoryUser, id: Uuid) -> Result<bool, StoreError> {
        let groups = tx.groups_of_member(r.id)?;
        tx.delete_user(r)?;
        let moved = DirectoryUser {
            id: DirectoryUserId(id),
            ..r.clone()
        };
        tx.put_user(&moved)?;
        for (group, added) in groups {
            tx.put_membership(group, moved.id, added)?;
        }
        Ok(true)
    }
}

/// Directory groups: scoped by directory.
struct Groups;

/// The record a group is stored as.
fn group_record(
    g: &WorkosDirectoryGroup,
    dir: DirectoryId,
    id: Uuid,
    version: Timestamp,
    existing: Option<&DirectoryGroup>,
    internal: &Internal,
) -> DirectoryGroup {
    // Fixed when first stored, like the id (WorkOS never changes it).
    let created = existing
        .map(|o| o.created_at)
        .or(g.created_at)
        .unwrap_or(version);
    DirectoryGroup {
        id: DirectoryGroupId(id),
        directory_id: dir,
        workos_directory_group_id: g.id.clone(),
        name: g.name.clone(),
        idp_id: g.idp_id.clone(),
        raw_attributes: g.raw_attributes.clone(),
        mapped_role: match internal.mapped_role {
            Some(given) => given,
            None => existing.and_then(|o| o.mapped_role),
        },
        created_at: created,
        updated_at: version,
        source: Provenance {
            created_at: created,
            updated_at: version,
        },
    }
}

impl Kind for Groups {
    type Object = WorkosDirectoryGroup;
    type Record = DirectoryGroup;
    type Scope = DirectoryId;
    const NAME: &'static str = "directory_group";
    const ELSEWHERE: &'static str = "it belongs to another directory";

    fn source_id(o: &WorkosDirectoryGroup) -> &str {
        &o.id
    }
    fn created_at(o: &WorkosDirectoryGroup) -> Option<Timestamp> {
        o.created_at
    }
    fn existing(
        tx: &Tx<'_>,
        o: &WorkosDirectoryGroup,
    ) -> Result<Option<DirectoryGroup>, StoreError> {
        tx.group_by_workos(&o.id)
    }
    fn scope(
        tx: &mut Tx<'_>,
        o: &WorkosDirectoryGroup,
        _: Option<&DirectoryGroup>,
    ) -> Result<Result<DirectoryId, Outcome>, StoreError> {
        directory_of(tx, &o.directory_id)
    }
    fn scope_of(r: &DirectoryGroup) -> DirectoryId {
        r.directory_id
    }
    fn id_of(r: &DirectoryGroup) -> Uuid {
        r.id.0
    }
    fn build(
        _tx: &Tx<'_>,
        g: &WorkosDirectoryGroup,
        dir: &DirectoryId,
        id: Uuid,
        version: Timestamp,
        existing: Option<&DirectoryGroup>,
        internal: &Internal,
    ) -> Result<DirectoryGroup, StoreError> {
        Ok(group_record(g, *dir, id, version, existing, internal))
    }
    fn occupant(
        tx: &Tx<'_>,
        dir: &DirectoryId,
        id: Uuid,
    ) -> Result<Option<DirectoryGroup>, StoreError> {
        tx.group(*dir, DirectoryGroupId(id))
    }
    fn put(tx: &mut Tx<'_>, r: &DirectoryGroup) -> Result<(), StoreError> {
        tx.put_group(r)
    }
    fn remove(tx: &mut Tx<'_>, r: &DirectoryGroup) -> Result<(), StoreError> {
        tx.delete_group(r)
    }
    fn rekey(tx: &mut Tx<'_>, r: &DirectoryGroup, id: Uuid) -> Result<bool, StoreError> {
        let members = tx.members_of_group(r.id)?;
        tx.delete_group(r)?;
        let moved = DirectoryGroup {
            id: DirectoryGroupId(id),
            ..r.clone()
        };
        tx.put_group(&moved)?;
        for (user, added) in members {
            tx.put_membership(moved.id, user, added)?;
        }
        Ok(true)
    }
}

/// Creates or updates a directory from a WorkOS directory object; the
/// events held for a new directory are applied.
///
/// # Errors
/// Storage failures.
pub fn upsert_directory(
    tx: &mut Tx<'_>,
    d: &WorkosDirectory,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    upsert::<Directories>(tx, d, version, internal)
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
    delete::<Directories>(tx, d, version)
}

/// Creates or updates a directory user, linking it to the AuthKit user with
/// its email who is a member of the directory's organization.
///
/// # Errors
/// Storage failures.
pub fn upsert_user(
    tx: &mut Tx<'_>,
    u: &WorkosDirectoryUser,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    upsert::<Users>(tx, u, version, internal)
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
    delete::<Users>(tx, u, version)
}

/// Creates or updates a directory group.
///
/// # Errors
/// Storage failures.
pub fn upsert_group(
    tx: &mut Tx<'_>,
    g: &WorkosDirectoryGroup,
    version: Timestamp,
    internal: &Internal,
) -> Result<Outcome, StoreError> {
    upsert::<Groups>(tx, g, version, internal)
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
    delete::<Groups>(tx, g, version)
}

// ---- objects as a listing gives them -------------------------------------------

/// A WorkOS object as a listing gives it — an import line, a page of the
/// WorkOS list APIs (backfill, reconcile) — rather than an event.
#[derive(Clone, Debug)]
pub enum Listed {
    Directory(WorkosDirectory, Internal),
    User(WorkosDirectoryUser, Internal),
    Group(WorkosDirectoryGroup, Internal),
    /// A group membership, seen at `at` (the list APIs carry no time):
    /// an event about it newer than `at` wins.
    Membership {
        directory_id: String,
        group_id: String,
        user_id: String,
        at: Timestamp,
    },
    AuthkitUser(WorkosUser),
    OrgMembership(WorkosOrgMembership),
    /// Confirmed gone: a complete listing lacked it and WorkOS answered 404
    /// when asked for it directly (reconcile).
    Gone(Gone),
}

/// What reconcile found deleted at WorkOS.
#[derive(Clone, Debug)]
pub enum Gone {
    Directory(String),
    User {
        directory_id: String,
        id: String,
    },
    Group {
        directory_id: String,
        id: String,
    },
    Membership {
        directory_id: String,
        group_id: String,
        user_id: String,
    },
    AuthkitUser(String),
    OrgMembership {
        id: String,
        user_id: String,
        organization_id: String,
    },
}

impl Listed {
    /// The directory the item is about, if it is about one.
    pub fn workos_directory_id(&self) -> Option<&str> {
        match self {
            Self::Directory(d, _) => Some(&d.id),
            Self::User(u, _) => Some(&u.directory_id),
            Self::Group(g, _) => Some(&g.directory_id),
            Self::Membership { directory_id, .. } => Some(directory_id),
            Self::Gone(
                Gone::Directory(directory_id)
                | Gone::User { directory_id, .. }
                | Gone::Group { directory_id, .. }
                | Gone::Membership { directory_id, .. },
            ) => Some(directory_id),
            Self::AuthkitUser(_) | Self::OrgMembership(_) | Self::Gone(_) => None,
        }
    }

    /// The WorkOS version of the object: its `updated_at`, else its
    /// `created_at` (`None` when it has neither; memberships and deletions
    /// carry their own time).
    pub fn version(&self) -> Option<Timestamp> {
        match self {
            Self::Directory(d, _) => d.updated_at.or(d.created_at),
            Self::User(u, _) => u.updated_at.or(u.created_at),
            Self::Group(g, _) => g.updated_at.or(g.created_at),
            Self::AuthkitUser(u) => u.updated_at.or(u.created_at),
            Self::OrgMembership(m) => m.updated_at.or(m.created_at),
            Self::Membership { at, .. } => Some(*at),
            Self::Gone(_) => Some(Timestamp::MIN),
        }
    }
}

/// Applies a listed object through the same rules as events. An object
/// without a version is stale (never applied with a made-up one).
///
/// # Errors
/// Storage failures.
pub fn apply_listed(tx: &mut Tx<'_>, item: &Listed) -> Result<Outcome, StoreError> {
    if let Some(dir) = item
        .workos_directory_id()
        .filter(|d| is_scim_directory_id(d))
    {
        return Ok(conflict("directory", dir, SCIM_OWNED));
    }
    let Some(version) = item.version() else {
        return Ok(Outcome::Stale);
    };
    match item {
        Listed::Directory(d, internal) => upsert_directory(tx, d, version, internal),
        Listed::User(u, internal) => upsert_user(tx, u, version, internal),
        Listed::Group(g, internal) => upsert_group(tx, g, version, internal),
        Listed::Membership {
            directory_id,
            group_id,
            user_id,
            at,
        } => list_member(tx, directory_id, group_id, user_id, *at),
        Listed::AuthkitUser(u) => upsert_authkit_user(tx, u, version),
        Listed::OrgMembership(m) => upsert_org_membership(tx, m, version),
        Listed::Gone(gone) => apply_gone(tx, gone),
    }
}

/// Whether applying a listed object would change nothing, judged from a
/// read snapshot: a reconcile's listings are mostly what is stored
/// already, and what this accepts never reaches the committer. Exact for
/// what it accepts — the record [`apply_listed`] would build is the one
/// stored (a user's link is kept consistent by the AuthKit side); anything
/// else is left to the committer.
///
/// # Errors
/// Storage failures.
pub fn listed_unchanged(
    store: &Store,
    snapshot: &Snapshot,
    item: &Listed,
) -> Result<bool, StoreError> {
    let Some(version) = item.version() else {
        return Ok(false);
    };
    let directory = |workos_id: &str| store.directory_by_workos(workos_id).map(|d| d.id);
    Ok(match item {
        Listed::User(u, _) => match snapshot.user_by_workos(&u.id)? {
            Some(stored) if directory(&u.directory_id) == Some(stored.directory_id) => {
                let link = stored.user_id.clone().map(|user_id| Link {
                    user_id,
                    version: stored.updated_at,
                });
                let built = user_record(
                    u,
                    stored.directory_id,
                    stored.id.0,
                    version,
                    stored.created_at,
                    link,
                );
                built == stored
            }
            _ => false,
        },
        Listed::Group(g, internal) => match snapshot.group_by_workos(&g.id)? {
            Some(stored) if directory(&g.directory_id) == Some(stored.directory_id) => {
                let built = group_record(
                    g,
                    stored.directory_id,
                    stored.id.0,
                    version,
                    Some(&stored),
                    internal,
                );
                built == stored
            }
            _ => false,
        },
        Listed::Membership {
            directory_id,
            group_id,
            user_id,
            ..
        } => match snapshot.membership_by_workos(user_id, group_id)? {
            Some(((ud, _), (gd, _), member)) => {
                member && ud == gd && directory(directory_id) == Some(ud)
            }
            None => false,
        },
        _ => false,
    })
}

/// Deletes what reconcile confirmed gone, as of now.
fn apply_gone(tx: &mut Tx<'_>, gone: &Gone) -> Result<Outcome, StoreError> {
    let now = tx.now();
    match gone {
        Gone::Directory(id) => delete_directory(tx, &WorkosDirectory::named(id), now),
        Gone::User { directory_id, id } => {
            delete_user(tx, &WorkosDirectoryUser::named(directory_id, id), now)
        }
        Gone::Group { directory_id, id } => {
            delete_group(tx, &WorkosDirectoryGroup::named(directory_id, id), now)
        }
        Gone::Membership {
            directory_id,
            group_id,
            user_id,
        } => {
            let Some(dir) = tx.directory_id_by_workos(directory_id)? else {
                return Ok(Outcome::NoDirectory);
            };
            match (tx.user_by_workos(user_id)?, tx.group_by_workos(group_id)?) {
                (Some(u), Some(g)) if u.directory_id == dir && g.directory_id == dir => {
                    let existed = tx.delete_membership(g.id, u.id)?;
                    tx.put_tombstone(&membership_key(group_id, user_id), now)?;
                    Ok(if existed {
                        Outcome::Applied
                    } else {
                        Outcome::Unchanged
                    })
                }
                _ => Ok(Outcome::Unchanged),
            }
        }
        Gone::AuthkitUser(id) => delete_authkit_user(tx, &WorkosUser::named(id), now),
        Gone::OrgMembership {
            id,
            user_id,
            organization_id,
        } => delete_org_membership(
            tx,
            &WorkosOrgMembership::named(id, user_id, organization_id),
            now,
        ),
    }
}

// ---- memberships -----------------------------------------------------------------

fn membership_key(group: &str, user: &str) -> String {
    format!("membership:{group}:{user}")
}

/// The user and group of a membership event, after upserting the nested
/// objects (monotonically), with whether either upsert changed something —
/// or why there is no pair: [`Outcome::Stale`] when one of them does not
/// exist (deleted, or never seen), [`Outcome::Conflict`] when one belongs
/// to another directory.
type Pair = Result<(bool, DirectoryUserId, DirectoryGroupId), Outcome>;

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
    match (
        tx.user_ref_by_workos(&user.id)?,
        tx.group_ref_by_workos(&group.id)?,
    ) {
        (Some((ud, u)), Some((gd, g))) if ud == gd => Ok(Ok((changed, u, g))),
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
    let key = membership_key(&group.id, &user.id);
    put_member(tx, &key, u, g, at, changed)
}

/// Records that `u` is in `g` (`key` names the pair by WorkOS ids) as of
/// `at` (a membership, or a membership removal, that is newer wins);
/// `changed` says whether the caller already changed something.
fn put_member(
    tx: &mut Tx<'_>,
    key: &str,
    u: DirectoryUserId,
    g: DirectoryGroupId,
    at: Timestamp,
    changed: bool,
) -> Result<Outcome, StoreError> {
    let done = |applied: bool, otherwise: Outcome| {
        Ok(if applied || changed {
            Outcome::Applied
        } else {
            otherwise
        })
    };
    if is_tombstoned(tx, key, at)? {
        return done(false, Outcome::Stale);
    }
    if tx.membership(g, u)?.is_some_and(|t| t >= at) {
        return done(false, Outcome::Unchanged);
    }
    tx.put_membership(g, u, at)?;
    tx.clear_tombstone(key)?;
    done(true, Outcome::Applied)
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
    if tx.membership(g, u)?.is_some_and(|t| t > at) {
        return Ok(if changed {
            Outcome::Applied
        } else {
            Outcome::Stale
        });
    }
    let existed = tx.delete_membership(g, u)?;
    tx.put_tombstone(&key, at)?;
    Ok(if existed || changed {
        Outcome::Applied
    } else {
        Outcome::Unchanged
    })
}

/// A membership listed by the WorkOS API (backfill, reconcile) or an import
/// line: the user and group must already be stored in the directory.
///
/// # Errors
/// Storage failures.
pub fn list_member(
    tx: &mut Tx<'_>,
    directory: &str,
    group: &str,
    user: &str,
    at: Timestamp,
) -> Result<Outcome, StoreError> {
    let Some(dir) = tx.directory_id_by_workos(directory)? else {
        return Ok(Outcome::NoDirectory);
    };
    match (tx.user_ref_by_workos(user)?, tx.group_ref_by_workos(group)?) {
        (Some((ud, u)), Some((gd, g))) if ud == dir && gd == dir => {
            // A listing confirms a membership; it never re-dates one.
            if tx.membership(g, u)?.is_some() {
                return Ok(Outcome::Unchanged);
            }
            put_member(tx, &membership_key(group, user), u, g, at, false)
        }
        (Some((ud, _)), _) if ud != dir => Ok(conflict(
            "directory_user",
            user,
            "it belongs to another directory",
        )),
        (_, Some((gd, _))) if gd != dir => Ok(conflict(
            "directory_group",
            group,
            "it belongs to another directory",
        )),
        _ => Ok(Outcome::Stale),
    }
}

// ---- AuthKit users and organization memberships (linking) --------------------

/// The AuthKit user a directory user is linked to, and the latest WorkOS
/// time among the data that decided it (the AuthKit user and its
/// membership): part of the directory user's `updated_at`.
struct Link {
    user_id: String,
    version: Timestamp,
}

/// The link of a directory user of `dir` with this email (see
/// [`Tx::linked_authkit_user`]).
fn linked_user(tx: &Tx<'_>, dir: DirectoryId, key: &str) -> Result<Option<Link>, StoreError> {
    let Some(d) = tx.directory(dir)? else {
        return Ok(None);
    };
    let Some(membership) = tx.linked_authkit_user(key, &d.organization_id)? else {
        return Ok(None);
    };
    let authkit = tx
        .authkit_user(&membership.user_id)?
        .map_or(Timestamp::MIN, |a| a.source.updated_at);
    Ok(Some(Link {
        version: membership.source.updated_at.max(authkit),
        user_id: membership.user_id,
    }))
}

/// The AuthKit user a directory user of `dir` with this email (already
/// trimmed and lower-cased) is linked to, with the version of that link:
/// what a SCIM-fed user gets, as a WorkOS-fed one does.
///
/// # Errors
/// Storage failures.
pub(crate) fn authkit_link(
    tx: &Tx<'_>,
    dir: DirectoryId,
    email_key: &str,
) -> Result<Option<(String, Timestamp)>, StoreError> {
    Ok(linked_user(tx, dir, email_key)?.map(|l| (l.user_id, l.version)))
}

/// Points every directory user with this email, in every directory, at the
/// AuthKit user it is now linked to (or at nobody), with the `updated_at`
/// that follows.
fn relink(tx: &mut Tx<'_>, key: &str) -> Result<(), StoreError> {
    for mut user in tx.users_with_email(key)? {
        let link = linked_user(tx, user.directory_id, key)?;
        let updated_at = link.as_ref().map_or(user.source.updated_at, |l| {
            l.version.max(user.source.updated_at)
        });
        let user_id = link.map(|l| l.user_id);
        if user.user_id != user_id || user.updated_at != updated_at {
            user.user_id = user_id;
            user.updated_at = updated_at;
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

/// Records an AuthKit user and relinks every directory user with its email.
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
    if let Some(old) = &existing {
        if *old == record {
            return Ok(Outcome::Unchanged);
        }
        if old.source.updated_at == version && old.email > record.email {
            return Ok(Outcome::Stale);
        }
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
    if let Some(old) = &existing {
        if *old == record {
            return Ok(Outcome::Unchanged);
        }
        if old.source.updated_at == version && (&old.id, &old.status) > (&record.id, &record.status)
        {
            return Ok(Outcome::Stale);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn directory() -> WorkosDirectory {
        WorkosDirectory {
            id: "directory_1".into(),
            organization_id: Some("org_1".into()),
            name: "D".into(),
            kind: "okta scim v2.0".into(),
            state: "active".into(),
            domains: vec![],
            created_at: Some(Timestamp(1_000_000)),
            updated_at: Some(Timestamp(1_000_000)),
        }
    }

    fn user(id: &str) -> WorkosDirectoryUser {
        WorkosDirectoryUser {
            id: id.into(),
            directory_id: "directory_1".into(),
            email: format!("{id}@x.test"),
            emails: vec![],
            first_name: None,
            last_name: None,
            state: "active".into(),
            raw_attributes: None,
            custom_attributes: None,
            idp_id: None,
            created_at: Some(Timestamp(5_000_000)),
            updated_at: Some(Timestamp(5_000_000)),
        }
    }

    fn group() -> WorkosDirectoryGroup {
        WorkosDirectoryGroup {
            id: "directory_group_1".into(),
            directory_id: "directory_1".into(),
            name: "G".into(),
            idp_id: None,
            raw_attributes: None,
            created_at: Some(Timestamp(2_000_000)),
            updated_at: Some(Timestamp(2_000_000)),
        }
    }

    /// Stores the users in `order` (the second one joining the group), and
    /// returns each user's id and groups, and the directory's digest.
    fn stored(order: [&str; 2]) -> (Vec<(String, Uuid, usize)>, u128, u64) {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(&dir.path().join("c.redb"), StoreOptions::default()).unwrap();
        let at = Timestamp(9_000_000);
        store
            .write(|tx| {
                upsert_directory(tx, &directory(), at, NO_INTERNAL)?;
                upsert_group(tx, &group(), at, NO_INTERNAL)?;
                for id in order {
                    assert_eq!(
                        upsert_user(tx, &user(id), at, NO_INTERNAL)?,
                        Outcome::Applied
                    );
                    add_member(tx, &user(id), &group(), at)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        store
            .write(|tx| {
                let d = tx.directory_by_workos("directory_1")?.unwrap();
                let mut users = Vec::new();
                for id in ["directory_user_COLLIDE_a", "directory_user_COLLIDE_b"] {
                    let u = tx.user_by_workos(id)?.unwrap();
                    users.push((id.to_owned(), u.id.0, tx.groups_of_member(u.id)?.len()));
                }
                Ok::<_, StoreError>((users, d.users_digest, d.user_count))
            })
            .unwrap()
    }

    #[test]
    fn colliding_ids_are_told_apart_the_same_way_in_any_order() {
        let (a, b) = ("directory_user_COLLIDE_a", "directory_user_COLLIDE_b");
        let created = Timestamp(5_000_000);
        // The test build derives the same probe-0 id for every COLLIDE id.
        assert_eq!(derive_id(a, created, 0), derive_id(b, created, 0));

        let first = stored([b, a]);
        let second = stored([a, b]);
        assert_eq!(first, second, "the arrival order does not matter");
        let (users, _, count) = first;
        assert_eq!(count, 2, "both kept");
        assert_eq!(
            users[0],
            (a.to_owned(), derive_id(a, created, 0), 1),
            "the smaller WorkOS id keeps the derived id"
        );
        assert_eq!(
            users[1],
            (b.to_owned(), derive_id(b, created, 1), 1),
            "the other takes its next probe, with its membership"
        );
    }

    /// A store with two directories, a group, a plain member and a user
    /// linked to an AuthKit user whose data is newer than the user's.
    fn reconciled() -> (tempfile::TempDir, Store) {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(&dir.path().join("l.redb"), StoreOptions::default()).unwrap();
        let at = Timestamp(9_000_000);
        store
            .write(|tx| {
                upsert_directory(tx, &directory(), at, NO_INTERNAL)?;
                let other = WorkosDirectory {
                    id: "directory_2".into(),
                    organization_id: Some("org_2".into()),
                    ..directory()
                };
                upsert_directory(tx, &other, at, NO_INTERNAL)?;
                upsert_group(tx, &group(), at, NO_INTERNAL)?;
                for id in ["plain", "linked"] {
                    upsert_user(tx, &user(id), at, NO_INTERNAL)?;
                }
                add_member(tx, &user("plain"), &group(), at)?;
                let later = Timestamp(12_000_000);
                let authkit = WorkosUser {
                    id: "user_1".into(),
                    email: "linked@x.test".into(),
                    created_at: Some(later),
                    updated_at: Some(later),
                };
                upsert_authkit_user(tx, &authkit, later)?;
                let membership = WorkosOrgMembership {
                    id: "om_1".into(),
                    user_id: "user_1".into(),
                    organization_id: "org_1".into(),
                    status: "active".into(),
                    created_at: Some(later),
                    updated_at: Some(later),
                };
                upsert_org_membership(tx, &membership, later)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let linked = store
            .snapshot()
            .unwrap()
            .user_by_workos("linked")
            .unwrap()
            .unwrap();
        assert!(linked.user_id.is_some(), "the fixture links a user");
        (dir, store)
    }

    #[test]
    fn what_the_reconcile_filter_leaves_out_the_committer_would_not_change() {
        let at = Some(Timestamp(9_000_000));
        let listed_user = |id: &str, edit: &dyn Fn(&mut WorkosDirectoryUser)| {
            let mut u = WorkosDirectoryUser {
                updated_at: at,
                ..user(id)
            };
            edit(&mut u);
            Listed::User(u, Internal::default())
        };
        let listed_group = |edit: &dyn Fn(&mut WorkosDirectoryGroup)| {
            let mut g = WorkosDirectoryGroup {
                updated_at: at,
                ..group()
            };
            edit(&mut g);
            Listed::Group(g, Internal::default())
        };
        let member = |dir: &str, user: &str| Listed::Membership {
            directory_id: dir.into(),
            group_id: "directory_group_1".into(),
            user_id: user.into(),
            at: Timestamp(20_000_000),
        };
        // (item, whether the filter should recognise it as stored)
        let cases: Vec<(Listed, bool)> = vec![
            (listed_user("plain", &|_| {}), true),
            (listed_user("linked", &|_| {}), true),
            (
                listed_user("plain", &|u| u.first_name = Some("Ada".into())),
                false,
            ),
            (
                listed_user("plain", &|u| u.updated_at = Some(Timestamp(10_000_000))),
                false,
            ),
            (
                listed_user("plain", &|u| u.updated_at = Some(Timestamp(8_000_000))),
                false,
            ),
            (
                listed_user("plain", &|u| u.directory_id = "directory_2".into()),
                false,
            ),
            (
                listed_user("linked", &|u| u.updated_at = Some(Timestamp(13_000_000))),
                false,
            ),
            (listed_user("newcomer", &|_| {}), false),
            (listed_group(&|_| {}), true),
            (listed_group(&|g| g.name = "Renamed".into()), false),
            (
                listed_group(&|g| g.updated_at = Some(Timestamp(1_000))),
                false,
            ),
            (member("directory_1", "plain"), true),
            (member("directory_1", "linked"), false),
            (member("directory_2", "plain"), false),
        ];
        for (i, (item, expected)) in cases.iter().enumerate() {
            let (_dir, store) = reconciled();
            let snapshot = store.snapshot().unwrap();
            let left_out = listed_unchanged(&store, &snapshot, item).unwrap();
            drop(snapshot);
            assert_eq!(left_out, *expected, "case {i}");
            let outcome = store.write(|tx| apply_listed(tx, item)).unwrap();
            if left_out {
                assert_eq!(
                    outcome,
                    Outcome::Unchanged,
                    "case {i}: left out, yet it changes"
                );
            }
        }
    }
}
