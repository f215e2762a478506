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

use super::apply::{Internal, Listed};
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

/// Pages of a list fetched ahead by a task of their own, so the next page
/// is on its way while this one is applied.
pub(crate) fn pages(
    api: &WorkosApi,
    path: &'static str,
    filters: Vec<(&'static str, String)>,
    directory: Option<String>,
) -> mpsc::Receiver<Result<Vec<Box<RawValue>>, ApiError>> {
    let (tx, rx) = mpsc::channel(2);
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
    rx
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
        let mut rx = pages(&ctx.api, "/directories", filter, None);
        while let Some(page) = rx.recv().await {
            pages_read += 1;
            out.extend(parse_page(&page?, "directory", directory));
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
    ctx.status.update(|s| s.backfill_completed(completed));
    report.seconds = started.elapsed().as_secs_f64();
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
    let mut rx = pages(
        &ctx.api,
        "/directory_groups",
        vec![("directory", id.clone())],
        None,
    );
    while let Some(page) = rx.recv().await {
        let groups = parse_page(&page?, "directory_group", group);
        report.pages += 1;
        report.groups += groups.len() as u64;
        group_ids.extend(groups.iter().map(|g| g.id.clone()));
        let items = groups
            .into_iter()
            .map(|g| Listed::Group(g, Internal::default()))
            .collect();
        ctx.submit(items, Vec::new()).await?;
    }

    let mut rx = pages(
        &ctx.api,
        "/directory_users",
        vec![("directory", id.clone())],
        Some(id.clone()),
    );
    while let Some(page) = rx.recv().await {
        let users = parse_page(&page?, "directory_user", user);
        report.pages += 1;
        report.users += users.len() as u64;
        let items = users
            .into_iter()
            .map(|u| Listed::User(u, Internal::default()))
            .collect();
        ctx.submit(items, Vec::new()).await?;
    }

    for group_id in group_ids {
        let mut rx = pages(
            &ctx.api,
            "/directory_users",
            vec![("group", group_id.clone())],
            Some(id.clone()),
        );
        while let Some(page) = rx.recv().await {
            let members = parse_page(&page?, "directory_user", user);
            report.pages += 1;
            report.memberships += members.len() as u64;
            let items = members
                .into_iter()
                .map(|u| Listed::Membership {
                    directory_id: id.clone(),
                    group_id: group_id.clone(),
                    user_id: u.id,
                    at: t0,
                })
                .collect();
            ctx.submit(items, Vec::new()).await?;
        }
    }
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
    let mut rx = pages(
        &ctx.api,
        "/user_management/users",
        vec![("organization_id", org.to_owned())],
        None,
    );
    while let Some(page) = rx.recv().await {
        let users = parse_page(&page?, "user", authkit_user);
        report.pages += 1;
        report.authkit_users += users.len() as u64;
        ctx.submit(
            users.into_iter().map(Listed::AuthkitUser).collect(),
            Vec::new(),
        )
        .await?;
    }
    let mut rx = pages(
        &ctx.api,
        "/user_management/organization_memberships",
        // Every status: a membership turning inactive must be seen as such.
        vec![
            ("organization_id", org.to_owned()),
            ("statuses", "active,inactive,pending".to_owned()),
        ],
        None,
    );
    while let Some(page) = rx.recv().await {
        let memberships = parse_page(&page?, "organization_membership", org_membership);
        report.pages += 1;
        report.org_memberships += memberships.len() as u64;
        ctx.submit(
            memberships.into_iter().map(Listed::OrgMembership).collect(),
            Vec::new(),
        )
        .await?;
    }
    Ok(report)
}
