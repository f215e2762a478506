//! Reconcile: re-lists everything and repairs drift — a missed deletion, a
//! lost webhook, a server down longer than anyone noticed.
//!
//! Every listed object goes through the same monotonic apply as events, so
//! a listing older than what is stored changes nothing, and a round that
//! finds no difference commits nothing (a transaction that wrote nothing is
//! never committed): the file, the caches and the ETags stay as they were.
//!
//! A record rollcall holds but a **complete** listing did not return is
//! deleted only after WorkOS answers 404 to a direct GET of it
//! (`/directory_users/{id}`, `/directory_groups/{id}`, `/directories/{id}`,
//! …); a group membership, which has no such GET, only when the complete
//! listing still has both its user and its group. If any page of a
//! directory's listing failed, nothing in that directory is deleted this
//! round: a WorkOS outage must never empty a directory.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::apply::{Gone, Internal, Listed, Outcome};
use super::backfill::{
    Listing, apply_list, authkit_user, group, list_directories, org_membership, user,
};
use super::sync::{Context, ReconcileReport, SyncError, marks};
use super::workos::WorkosDirectory;
use super::workos_api::ApiError;
use crate::model::{DirectoryId, Timestamp};
use crate::store::StoreError;

/// Runs a round every `interval` until `stop` (the first one an interval
/// after the start: a backfill has just copied everything).
pub async fn every(ctx: Context, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match round(&ctx).await {
            Ok(_) => {}
            Err(SyncError::Api(ApiError::Stopped)) | Err(SyncError::Stopped) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile failed; trying again next round");
                ctx.status.update(|s| s.failed(&e));
            }
        }
    }
}

/// What rollcall holds of one directory, by WorkOS ids.
#[derive(Default)]
struct Held {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    /// `(group, user)`.
    memberships: BTreeSet<(String, String)>,
}

/// Counts of one directory's (or organization's) round.
#[derive(Default)]
struct Tally {
    created: u64,
    updated: u64,
    deleted: u64,
    kept: u64,
    pages: u64,
    complete: bool,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.kept += other.kept;
        self.pages += other.pages;
        self.complete &= other.complete;
    }

    /// Counts applied outcomes: created when rollcall did not hold it.
    fn count(&mut self, outcomes: &[Outcome], held: &[bool]) {
        for (outcome, held) in outcomes.iter().zip(held) {
            if *outcome == Outcome::Applied {
                if *held {
                    self.updated += 1;
                } else {
                    self.created += 1;
                }
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(e.to_string()))??)
}

/// One round over the whole account (the configured organizations).
///
/// # Errors
/// When the list of directories itself cannot be read (nothing is then
/// deleted anywhere), or a storage failure.
pub async fn round(ctx: &Context) -> Result<ReconcileReport, SyncError> {
    let started = Instant::now();
    let (directories, dir_pages) = list_directories(ctx).await?;
    let mut total = Tally {
        pages: dir_pages,
        complete: true,
        ..Tally::default()
    };
    let listed: BTreeSet<String> = directories.iter().map(|d| d.id.clone()).collect();
    let organizations: BTreeSet<String> = directories
        .iter()
        .filter_map(|d| d.organization_id.clone())
        .chain(ctx.settings.organizations.iter().cloned())
        .collect();
    let count = directories.len() as u64;

    let mut rounds = futures_util::stream::iter(directories)
        .map(|d| directory_round(ctx, d))
        .buffer_unordered(ctx.settings.concurrency.max(1));
    while let Some(tally) = rounds.next().await {
        total.add(&tally?);
    }
    drop(rounds);

    // Directories rollcall holds that the (complete) listing lacks.
    let scope = ctx.settings.organizations.clone();
    let store = ctx.store.clone();
    let held: Vec<String> = blocking(move || {
        Ok(store
            .snapshot()?
            .all_directories()?
            .into_iter()
            // SCIM directories are not WorkOS's: never deleted for
            // missing from its listing.
            .filter(|d| !d.is_scim())
            .filter(|d| scope.is_empty() || scope.contains(&d.organization_id))
            .map(|d| d.workos_directory_id)
            .collect())
    })
    .await?;
    for id in held.into_iter().filter(|id| !listed.contains(id)) {
        confirm_gone(
            ctx,
            &format!("/directories/{id}"),
            None,
            Gone::Directory(id),
            &mut total,
        )
        .await?;
    }

    for org in &organizations {
        total.add(&organization_round(ctx, org).await?);
    }

    let report = ReconcileReport {
        at: Timestamp::now().to_rfc3339(),
        seconds: started.elapsed().as_secs_f64(),
        directories: count,
        created: total.created,
        updated: total.updated,
        deleted: total.deleted,
        kept: total.kept,
        pages: total.pages,
        complete: total.complete,
    };
    tracing::info!(
        directories = report.directories,
        created = report.created,
        updated = report.updated,
        deleted = report.deleted,
        kept = report.kept,
        pages = report.pages,
        seconds = report.seconds,
        complete = report.complete,
        "reconcile round"
    );
    let json = serde_json::to_vec(&report).unwrap_or_default();
    // The report is written only if the round changed something: a
    // no-change round leaves the file alone. A complete round pays any
    // repair owed after a gap in the events (removing an absent mark
    // writes nothing either).
    let mut done = Vec::new();
    if total.created + total.updated + total.deleted > 0 {
        done.push((marks::RECONCILE_LAST.into(), Some(json)));
    }
    if report.complete {
        done.push((marks::REPAIR_OWED.into(), None));
    }
    if !done.is_empty() {
        ctx.submit(Vec::new(), done).await?;
    }
    ctx.status.update(|s| s.reconciled(report.clone()));
    Ok(report)
}

/// Deletes `gone` if WorkOS answers 404 for `path`, else keeps it.
async fn confirm_gone(
    ctx: &Context,
    path: &str,
    directory: Option<&str>,
    gone: Gone,
    tally: &mut Tally,
) -> Result<(), SyncError> {
    match ctx.api.get(path, &[], directory).await {
        Ok(None) => {
            let outcomes = ctx.submit(vec![Listed::Gone(gone)], Vec::new()).await?;
            if outcomes.first() == Some(&Outcome::Applied) {
                tally.deleted += 1;
            }
        }
        Ok(Some(_)) => {
            tracing::warn!(
                path,
                "missing from a complete listing, but WorkOS still has it: kept"
            );
            tally.kept += 1;
        }
        Err(ApiError::Stopped) => return Err(ApiError::Stopped.into()),
        Err(e) => {
            tracing::warn!(path, error = %e, "cannot confirm a deletion: kept");
            tally.kept += 1;
            tally.complete = false;
        }
    }
    Ok(())
}

/// Reads a whole list through [`apply_list`], counting what it created
/// and updated; returns the keys `to_item` gave the objects seen, or `None`
/// when a page failed (the listing is incomplete).
async fn apply_listing<T>(
    ctx: &Context,
    listing: Listing,
    parse: impl Fn(&str) -> Result<T, super::workos::FieldError>,
    to_item: impl FnMut(T) -> (String, Listed),
    held: &BTreeSet<String>,
    tally: &mut Tally,
) -> Result<Option<Vec<String>>, SyncError> {
    let path = listing.path;
    let mut seen = Vec::new();
    let read = apply_list(ctx, listing, parse, to_item, |keys, outcomes| {
        let was_held: Vec<bool> = keys.iter().map(|k| held.contains(k)).collect();
        tally.count(outcomes, &was_held);
        seen.extend(keys);
    })
    .await;
    match read {
        Ok(pages) => {
            tally.pages += pages;
            Ok(Some(seen))
        }
        Err(SyncError::Api(e)) if !matches!(e, ApiError::Stopped) => {
            tracing::warn!(path, error = %e, "a listing failed midway: nothing it covers is deleted this round");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn directory_round(ctx: &Context, d: WorkosDirectory) -> Result<Tally, SyncError> {
    let mut tally = Tally {
        complete: true,
        ..Tally::default()
    };
    let id = d.id.clone();
    let existed = ctx.store.directory_by_workos(&id).map(|d| d.id);
    let held = match existed {
        Some(dir) => {
            let store = ctx.store.clone();
            blocking(move || held_of(&store, dir)).await?
        }
        None => Held::default(),
    };
    let outcomes = ctx
        .submit(vec![Listed::Directory(d, Internal::default())], Vec::new())
        .await?;
    tally.count(&outcomes, &[existed.is_some()]);

    let groups_seen = apply_listing(
        ctx,
        Listing::groups(&id).compared(),
        group,
        |g| (g.id.clone(), Listed::Group(g, Internal::default())),
        &held.groups,
        &mut tally,
    )
    .await?;
    let users_seen = apply_listing(
        ctx,
        Listing::users(&id).compared(),
        user,
        |u| (u.id.clone(), Listed::User(u, Internal::default())),
        &held.users,
        &mut tally,
    )
    .await?;
    let now = Timestamp::now();
    let mut members_complete = true;
    let mut memberships_seen: BTreeSet<(String, String)> = BTreeSet::new();
    let held_pairs: BTreeSet<String> = held
        .memberships
        .iter()
        .map(|(g, u)| format!("{g}\u{0}{u}"))
        .collect();
    for group_id in groups_seen.iter().flatten() {
        let seen = apply_listing(
            ctx,
            Listing::members(&id, group_id).compared(),
            user,
            |u| {
                (
                    format!("{group_id}\u{0}{}", u.id),
                    Listed::Membership {
                        directory_id: id.clone(),
                        group_id: group_id.clone(),
                        user_id: u.id,
                        at: now,
                    },
                )
            },
            &held_pairs,
            &mut tally,
        )
        .await?;
        match seen {
            Some(seen) => memberships_seen.extend(seen.into_iter().filter_map(|pair| {
                pair.split_once('\u{0}')
                    .map(|(g, u)| (g.to_owned(), u.to_owned()))
            })),
            None => members_complete = false,
        }
    }

    let (Some(groups_seen), Some(users_seen), true) = (groups_seen, users_seen, members_complete)
    else {
        tally.complete = false;
        tally.kept += held.users.len() as u64;
        return Ok(tally);
    };
    let users_seen: BTreeSet<String> = users_seen.into_iter().collect();
    let groups_seen: BTreeSet<String> = groups_seen.into_iter().collect();
    for user_id in held.users.difference(&users_seen) {
        let gone = Gone::User {
            directory_id: id.clone(),
            id: user_id.clone(),
        };
        let path = format!("/directory_users/{user_id}");
        confirm_gone(ctx, &path, Some(&id), gone, &mut tally).await?;
    }
    for group_id in held.groups.difference(&groups_seen) {
        let gone = Gone::Group {
            directory_id: id.clone(),
            id: group_id.clone(),
        };
        let path = format!("/directory_groups/{group_id}");
        confirm_gone(ctx, &path, None, gone, &mut tally).await?;
    }
    // A membership has no GET of its own: it is gone when the complete
    // listing still has its user and its group but not it.
    let gone: Vec<Listed> = held
        .memberships
        .difference(&memberships_seen)
        .filter(|(g, u)| groups_seen.contains(g) && users_seen.contains(u))
        .map(|(g, u)| {
            Listed::Gone(Gone::Membership {
                directory_id: id.clone(),
                group_id: g.clone(),
                user_id: u.clone(),
            })
        })
        .collect();
    if !gone.is_empty() {
        let outcomes = ctx.submit(gone, Vec::new()).await?;
        tally.deleted += outcomes.iter().filter(|o| **o == Outcome::Applied).count() as u64;
    }
    Ok(tally)
}

/// What rollcall holds of a directory.
fn held_of(store: &crate::store::Store, dir: DirectoryId) -> Result<Held, StoreError> {
    let snapshot = store.snapshot()?;
    let mut held = Held::default();
    snapshot.visit_users(dir, |u| {
        held.users.insert(u.workos_directory_user_id);
        Ok::<_, StoreError>(())
    })?;
    snapshot.visit_groups(dir, |g| {
        held.groups.insert(g.workos_directory_group_id);
        Ok::<_, StoreError>(())
    })?;
    snapshot.visit_memberships(dir, |g, u, _| {
        held.memberships.insert((g.to_owned(), u.to_owned()));
        Ok::<_, StoreError>(())
    })?;
    Ok(held)
}

/// An organization's AuthKit users and memberships (who may be linked).
async fn organization_round(ctx: &Context, org: &str) -> Result<Tally, SyncError> {
    let mut tally = Tally {
        complete: true,
        ..Tally::default()
    };
    let store = ctx.store.clone();
    let org_owned = org.to_owned();
    let (held_users, held_memberships): (BTreeSet<String>, HashMap<String, (String, String)>) =
        blocking(move || {
            let snapshot = store.snapshot()?;
            let memberships: HashMap<String, (String, String)> = snapshot
                .org_memberships()?
                .into_iter()
                .filter(|m| m.organization_id == org_owned)
                .map(|m| (m.id, (m.user_id, m.organization_id)))
                .collect();
            let users = memberships.values().map(|(u, _)| u.clone()).collect();
            Ok((users, memberships))
        })
        .await?;
    apply_listing(
        ctx,
        Listing::authkit_users(org).compared(),
        authkit_user,
        |u| (u.id.clone(), Listed::AuthkitUser(u)),
        &held_users,
        &mut tally,
    )
    .await?;
    let held_ids: BTreeSet<String> = held_memberships.keys().cloned().collect();
    let Some(memberships_seen) = apply_listing(
        ctx,
        Listing::org_memberships(org).compared(),
        org_membership,
        |m| (m.id.clone(), Listed::OrgMembership(m)),
        &held_ids,
        &mut tally,
    )
    .await?
    else {
        tally.complete = false;
        return Ok(tally);
    };
    let seen: BTreeSet<String> = memberships_seen.into_iter().collect();
    for (id, (user_id, organization_id)) in held_memberships {
        if seen.contains(&id) {
            continue;
        }
        let path = format!("/user_management/organization_memberships/{id}");
        let gone = Gone::OrgMembership {
            id,
            user_id,
            organization_id,
        };
        confirm_gone(ctx, &path, None, gone, &mut tally).await?;
    }
    Ok(tally)
}
