//! Backfill: copies a WorkOS account's current state from the list APIs.
//!
//! `GET /directories` (per organization when `--workos-organizations` names
//! some), then for each directory — several at once — its groups
//! (`/directory_groups?directory=`), its users (`/directory_users?directory=`)
//! and each group's members (`/directory_users?group=`; a user's `groups`
//! array is deprecated), and for each organization of those directories the
//! organization memberships and their AuthKit users (who may be linked).
//! Pages are fetched ahead while the previous page is applied.
//!
//! Before the first request the time T0 (a margin before now) is stored:
//! the events are then followed from T0, so whatever changed while the
//! lists were being read arrives as events too — applying something twice
//! is harmless, missing it is not. Each directory is marked done in the
//! same transaction as its last page: a backfill interrupted by a crash
//! resumes after the directories already done, converging to the same
//! state.

use std::collections::BTreeSet;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::apply::{Internal, Listed, Outcome, listed_unchanged};
use super::sync::{BACKFILL_MARGIN, Context, SyncError, decode_time, encode_time, marks};
use super::workos::{
    RawAuthkitUser, RawDirectory, RawGroup, RawOrgMembership, RawUser, WorkosDirectory,
    WorkosDirectoryGroup, WorkosDirectoryUser, WorkosOrgMembership, WorkosUser, parse_listed,
};
use super::workos_api::{ApiError, WorkosApi};
use crate::model::Timestamp;

/// What a backfill copied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillReport {
    pub directories: u64,
    /// Directories already done by an interrupted backfill, not read again.
    pub resumed: u64,
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
    pub authkit_users: u64,
    pub org_memberships: u64,
    pub pages: u64,
    pub seconds: f64,
}

impl BackfillReport {
    fn add(&mut self, other: &Self) {
        self.users += other.users;
        self.groups += other.groups;
        self.memberships += other.memberships;
        self.authkit_users += other.authkit_users;
        self.org_memberships += other.org_memberships;
        self.pages += other.pages;
    }
}

/// At most this many pages are fetched ahead of the one being applied, and
/// merged into one transaction when they have piled up (the store, not
/// the API, is then the bottleneck: fewer, larger commits write less).
const PAGES_AHEAD: usize = 4;

/// Pages of a list fetched ahead by a task of their own, so the next pages
/// are on their way while this one is applied.
pub(crate) struct Pages {
    rx: mpsc::Receiver<Result<Vec<Box<RawValue>>, ApiError>>,
    /// A failure met while merging: reported after the pages before it.
    failed: Option<ApiError>,
}

impl Pages {
    pub(crate) fn fetch(
        api: &WorkosApi,
        path: &'static str,
        filters: Vec<(&'static str, String)>,
        directory: Option<String>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PAGES_AHEAD);
        let api = api.clone();
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            loop {
                let page = api
                    .page(path, &filters, after.as_deref(), directory.as_deref())
                    .await;
                let (data, next) = match page {
                    Ok(p) => (p.data, p.after),
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if tx.send(Ok(data)).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => after = Some(n),
                    None => return,
                }
            }
        });
        Pages { rx, failed: None }
    }

    /// The next page, merged with any that have already arrived after it:
    /// `(objects, pages)`. A failure comes after the pages before it.
    pub(crate) async fn next(&mut self) -> Option<Result<(Vec<Box<RawValue>>, u64), ApiError>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let mut data = match self.rx.recv().await? {
            Ok(data) => data,
            Err(e) => return Some(Err(e)),
        };
        let mut pages = 1;
        while pages <= PAGES_AHEAD as u64 {
            match self.rx.try_recv() {
                Ok(Ok(more)) => {
                    data.extend(more);
                    pages += 1;
                }
                Ok(Err(e)) => {
                    self.failed = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        Some(Ok((data, pages)))
    }
}

/// One list to read whole.
pub(crate) struct Listing {
    pub path: &'static str,
    pub filters: Vec<(&'static str, String)>,
    /// Whose `/directory_users` limit applies.
    pub directory: Option<String>,
    /// The object kind, for logs.
    pub what: &'static str,
    /// Leave out, before the committer, what the store already holds as
    /// listed (a reconcile: most of it is).
    pub compare_first: bool,
}

impl Listing {
    fn of(
        path: &'static str,
        filters: Vec<(&'static str, String)>,
        directory: Option<&str>,
        what: &'static str,
    ) -> Self {
        Listing {
            path,
            filters,
            directory: directory.map(str::to_owned),
            what,
            compare_first: false,
        }
    }

    /// A directory's groups.
    pub fn groups(directory: &str) -> Self {
        Self::of(
            "/directory_groups",
            vec![("directory", directory.to_owned())],
            None,
            "directory_group",
        )
    }

    /// A directory's users.
    pub fn users(directory: &str) -> Self {
        Self::of(
            "/directory_users",
            vec![("directory", directory.to_owned())],
            Some(directory),
            "directory_user",
        )
    }

    /// A group's members (the users' `groups` array is deprecated).
    pub fn members(directory: &str, group: &str) -> Self {
        Self::of(
            "/directory_users",
            vec![("group", group.to_owned())],
            Some(directory),
            "directory_user",
        )
    }

    /// An organization's AuthKit users.
    pub fn authkit_users(organization: &str) -> Self {
        Self::of(
            "/user_management/users",
            vec![("organization_id", organization.to_owned())],
            None,
            "user",
        )
    }

    /// An organization's memberships, of every status: one turning
    /// inactive must be seen as such.
    pub fn org_memberships(organization: &str) -> Self {
        Self::of(
            "/user_management/organization_memberships",
            vec![
                ("organization_id", organization.to_owned()),
                ("statuses", "active,inactive,pending".to_owned()),
            ],
            None,
            "organization_membership",
        )
    }

    /// The same, leaving out what is stored as listed.
    pub fn compared(self) -> Self {
        Listing {
            compare_first: true,
            ..self
        }
    }
}

/// Reads a whole list, applying its objects as they come through the same
/// code as events; `applied` sees each batch's keys (what `to_item` says)
/// and outcomes. Returns the pages read.
///
/// # Errors
/// A page that failed after retries ([`SyncError::Api`]: what came before
/// it is applied), or a storage failure.
pub(crate) async fn apply_list<T>(
    ctx: &Context,
    listing: Listing,
    parse: impl Fn(&str) -> Result<T, super::workos::FieldError>,
    mut to_item: impl FnMut(T) -> (String, Listed),
    mut applied: impl FnMut(Vec<String>, &[Outcome]),
) -> Result<u64, SyncError> {
    let Listing {
        path,
        filters,
        directory,
        what,
        compare_first,
    } = listing;
    let mut read = 0;
    let mut pages = Pages::fetch(&ctx.api, path, filters, directory);
    while let Some(batch) = pages.next().await {
        let (objects, n) = batch?;
        read += n;
        let (keys, items): (Vec<String>, Vec<Listed>) = parse_page(&objects, what, &parse)
            .into_iter()
            .map(&mut to_item)
            .unzip();
        let outcomes = if compare_first {
            submit_changed(ctx, items).await?
        } else {
            ctx.submit(items, Vec::new()).await?
        };
        applied(keys, &outcomes);
    }
    Ok(read)
}

/// Submits only the items that would change something (judged on a read
/// snapshot, on this thread's pool, not the committer's); the others are
/// [`Outcome::Unchanged`].
async fn submit_changed(ctx: &Context, items: Vec<Listed>) -> Result<Vec<Outcome>, SyncError> {
    let store = ctx.store.clone();
    let (items, unchanged) = tokio::task::spawn_blocking(move || {
        let snapshot = store.snapshot()?;
        let unchanged = items
            .iter()
            .map(|item| listed_unchanged(&store, &snapshot, item))
            .collect::<Result<Vec<bool>, _>>()?;
        Ok::<_, crate::store::StoreError>((items, unchanged))
    })
    .await
    .map_err(|e| crate::store::StoreError::Io(e.to_string()))??;
    let changed: Vec<Listed> = items
        .into_iter()
        .zip(&unchanged)
        .filter(|(_, same)| !**same)
        .map(|(item, _)| item)
        .collect();
    let mut applied = if changed.is_empty() {
        Vec::new()
    } else {
        ctx.submit(changed, Vec::new()).await?
    }
    .into_iter();
    Ok(unchanged
        .iter()
        .map(|same| {
            if *same {
                Outcome::Unchanged
            } else {
                applied.next().unwrap_or(Outcome::Unchanged)
            }
        })
        .collect())
}

/// Parses the objects of a page, skipping (loudly) any that WorkOS sent
/// malformed: asking again would not fix them.
pub(crate) fn parse_page<T>(
    page: &[Box<RawValue>],
    what: &str,
    parse: impl Fn(&str) -> Result<T, super::workos::FieldError>,
) -> Vec<T> {
    page.iter()
        .filter_map(|raw| match parse(raw.get()) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(object = what, error = %e, "skipping a malformed object from WorkOS");
                None
            }
        })
        .collect()
}

pub(crate) fn directory(json: &str) -> Result<WorkosDirectory, super::workos::FieldError> {
    parse_listed::<RawDirectory<'_>, _>(json, WorkosDirectory::from_raw)
}
pub(crate) fn user(json: &str) -> Result<WorkosDirectoryUser, super::workos::FieldError> {
    parse_listed::<RawUser<'_>, _>(json, WorkosDirectoryUser::from_raw)
}
pub(crate) fn group(json: &str) -> Result<WorkosDirectoryGroup, super::workos::FieldError> {
    parse_listed::<RawGroup<'_>, _>(json, WorkosDirectoryGroup::from_raw)
}
pub(crate) fn authkit_user(json: &str) -> Result<WorkosUser, super::workos::FieldError> {
    parse_listed::<RawAuthkitUser<'_>, _>(json, WorkosUser::from_raw)
}
pub(crate) fn org_membership(json: &str) -> Result<WorkosOrgMembership, super::workos::FieldError> {
    parse_listed::<RawOrgMembership<'_>, _>(json, WorkosOrgMembership::from_raw)
}

/// Every directory of the account (of the configured organizations).
pub(crate) async fn list_directories(
    ctx: &Context,
) -> Result<(Vec<WorkosDirectory>, u64), ApiError> {
    let filters: Vec<Vec<(&'static str, String)>> = if ctx.settings.organizations.is_empty() {
        vec![Vec::new()]
    } else {
        ctx.settings
            .organizations
            .iter()
            .map(|o| vec![("organization_id", o.clone())])
            .collect()
    };
    let (mut out, mut pages_read) = (Vec::new(), 0);
    for filter in filters {
        let mut pages = Pages::fetch(&ctx.api, "/directories", filter, None);
        while let Some(batch) = pages.next().await {
            let (objects, n) = batch?;
            pages_read += n;
            out.extend(parse_page(&objects, "directory", directory));
        }
    }
    // An organization filter the API did not honour must not widen the scope.
    if !ctx.settings.organizations.is_empty() {
        out.retain(|d| {
            d.organization_id
                .as_ref()
                .is_some_and(|o| ctx.settings.organizations.contains(o))
        });
    }
    Ok((out, pages_read))
}

/// Copies the account; resumes an interrupted backfill.
///
/// # Errors
/// A failed listing (after retries) or a storage failure; progress made
/// until then is kept.
pub async fn backfill(ctx: &Context) -> Result<BackfillReport, SyncError> {
    let started = Instant::now();
    let t0 = match decode_time(ctx.mark(marks::BACKFILL_STARTED).await?) {
        Some(t0) => t0,
        None => {
            let margin = i64::try_from(BACKFILL_MARGIN.as_micros()).unwrap_or(0);
            let t0 = Timestamp(Timestamp::now().0 - margin);
            ctx.submit(
                Vec::new(),
                vec![(marks::BACKFILL_STARTED.into(), Some(encode_time(t0)))],
            )
            .await?;
            t0
        }
    };
    let done: BTreeSet<String> = {
        let store = ctx.store.clone();
        tokio::task::spawn_blocking(move || store.snapshot()?.marks(marks::BACKFILL_DONE))
            .await
            .map_err(|e| crate::store::StoreError::Io(e.to_string()))??
            .into_iter()
            .filter_map(|m| m.strip_prefix(marks::BACKFILL_DONE).map(str::to_owned))
            .collect()
    };
    let (directories, dir_pages) = list_directories(ctx).await?;
    let total = directories.len() as u64;
    ctx.status.update(|s| s.backfill_started(t0, total));
    let organizations: BTreeSet<String> = directories
        .iter()
        .filter_map(|d| d.organization_id.clone())
        .chain(ctx.settings.organizations.iter().cloned())
        .collect();
    let mut report = BackfillReport {
        directories: total,
        pages: dir_pages,
        ..BackfillReport::default()
    };
    tracing::info!(
        directories = total,
        already_done = done.len(),
        "backfill started"
    );

    let todo: Vec<WorkosDirectory> = directories
        .into_iter()
        .filter(|d| {
            let skip = done.contains(&d.id);
            if skip {
                report.resumed += 1;
                ctx.status.update(|s| s.directory_done());
            }
            !skip
        })
        .collect();
    let mut copies = futures_util::stream::iter(todo)
        .map(|d| copy_directory(ctx, d, t0))
        .buffer_unordered(ctx.settings.concurrency.max(1));
    while let Some(copied) = copies.next().await {
        report.add(&copied?);
        ctx.status.update(|s| s.directory_done());
    }
    drop(copies);

    for org in &organizations {
        report.add(&copy_organization(ctx, org).await?);
    }
    let completed = Timestamp::now();
    ctx.submit(
        Vec::new(),
        vec![(
            marks::BACKFILL_COMPLETED.into(),
            Some(encode_time(completed)),
        )],
    )
    .await?;
    {
        let store = ctx.store.clone();
        tokio::task::spawn_blocking(move || store.write(|tx| tx.clear_marks(marks::BACKFILL_DONE)))
            .await
            .map_err(|e| crate::store::StoreError::Io(e.to_string()))??;
    }
    report.seconds = started.elapsed().as_secs_f64();
    ctx.status.update(|s| {
        s.backfill_completed(completed);
        s.backfill_reported(report.clone());
    });
    tracing::info!(
        directories = report.directories,
        resumed = report.resumed,
        users = report.users,
        groups = report.groups,
        memberships = report.memberships,
        authkit_users = report.authkit_users,
        org_memberships = report.org_memberships,
        pages = report.pages,
        seconds = report.seconds,
        "backfill completed"
    );
    Ok(report)
}

/// Copies one directory: the directory, its groups, its users, its groups'
/// members; marked done with the last of them.
async fn copy_directory(
    ctx: &Context,
    d: WorkosDirectory,
    t0: Timestamp,
) -> Result<BackfillReport, SyncError> {
    let mut report = BackfillReport::default();
    let id = d.id.clone();
    ctx.submit(vec![Listed::Directory(d, Internal::default())], Vec::new())
        .await?;

    let mut group_ids = Vec::new();
    report.pages += apply_list(
        ctx,
        Listing::groups(&id),
        group,
        |g| (g.id.clone(), Listed::Group(g, Internal::default())),
        |ids, _| group_ids.extend(ids),
    )
    .await?;
    report.groups = group_ids.len() as u64;

    let mut users = 0;
    report.pages += apply_list(
        ctx,
        Listing::users(&id),
        user,
        |u| (String::new(), Listed::User(u, Internal::default())),
        |ids, _| users += ids.len() as u64,
    )
    .await?;
    report.users = users;

    let mut members = 0;
    for group_id in group_ids {
        report.pages += apply_list(
            ctx,
            Listing::members(&id, &group_id),
            user,
            |u| {
                let item = Listed::Membership {
                    directory_id: id.clone(),
                    group_id: group_id.clone(),
                    user_id: u.id,
                    at: t0,
                };
                (String::new(), item)
            },
            |ids, _| members += ids.len() as u64,
        )
        .await?;
    }
    report.memberships = members;
    ctx.submit(
        Vec::new(),
        vec![(format!("{}{id}", marks::BACKFILL_DONE), Some(vec![1]))],
    )
    .await?;
    Ok(report)
}

/// Copies an organization's memberships and their AuthKit users (what
/// decides who may be linked to its directory users).
async fn copy_organization(ctx: &Context, org: &str) -> Result<BackfillReport, SyncError> {
    let mut report = BackfillReport::default();
    let mut users = 0;
    report.pages += apply_list(
        ctx,
        Listing::authkit_users(org),
        authkit_user,
        |u| (String::new(), Listed::AuthkitUser(u)),
        |ids, _| users += ids.len() as u64,
    )
    .await?;
    report.authkit_users = users;
    let mut memberships = 0;
    report.pages += apply_list(
        ctx,
        Listing::org_memberships(org),
        org_membership,
        |m| (String::new(), Listed::OrgMembership(m)),
        |ids, _| memberships += ids.len() as u64,
    )
    .await?;
    report.org_memberships = memberships;
    Ok(report)
}
