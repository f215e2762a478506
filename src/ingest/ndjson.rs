//! Bulk NDJSON import and export: one WorkOS-shaped object per line.
//!
//! ```text
//! {"object":"user","id":"user_…","email":"…"}                                  AuthKit user (for linking)
//! {"object":"organization_membership","id":"om_…","user_id":"user_…","organization_id":"org_…","status":"active"}
//! {"object":"directory","id":"directory_…","organization_id":"org_…","name":…,"type":…,"state":…,"domains":[…]}
//! {"object":"directory_group","id":"directory_group_…","directory_id":"directory_…","name":…}
//! {"object":"directory_user","id":"directory_user_…","directory_id":"directory_…","email":…,"state":…}
//! {"object":"directory_group_membership","directory_id":"directory_…",
//!  "directory_group_id":"directory_group_…","directory_user_id":"directory_user_…"}
//! ```
//!
//! Any line may carry a `"rollcall"` object with rollcall's own fields. Of
//! those, import keeps `mapped_role` (groups) and `added_at` (memberships);
//! `id`, `created_at`, `updated_at` and `user_id` are written by export for
//! people and ignored by import, which derives them from the WorkOS data
//! like every other path (a directory, group, user, AuthKit user or
//! organization membership line needs `created_at` or `updated_at`). So
//! export → import into an empty database reproduces every API answer byte
//! for byte. SCIM directories (`rollcall directory create`) are not
//! exported: their data is their identity provider's, and their tokens
//! exist only as hashes; `rollcall backup` keeps them.
//!
//! Import is one write transaction: a bad line aborts with its line number
//! and nothing is written; re-importing the same file changes nothing
//! (objects are applied through [`super::apply`], monotonic and idempotent).

use std::io::{BufRead, Write};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::apply::{self, Internal, Listed, Outcome};
use super::workos::{
    FieldError, RawAuthkitUser, RawDirectory, RawGroup, RawInternal, RawOrgMembership, RawUser,
    WorkosDirectory, WorkosDirectoryGroup, WorkosDirectoryUser, WorkosOrgMembership, WorkosUser,
    parse_json, parse_mapped_role, required_id, time,
};
use crate::model::{Directory, DirectoryGroup, DirectoryUser, Timestamp};
use crate::store::{Store, StoreError, Tx};

/// Why an import or export failed.
#[derive(Debug, thiserror::Error)]
pub enum NdjsonError {
    #[error("line {line}: {field}: {problem}")]
    Line {
        line: u64,
        field: String,
        problem: String,
    },
    #[error("reading the input failed: {0}")]
    Read(std::io::Error),
    #[error("writing the output failed: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NdjsonError {
    fn line(line: u64, e: FieldError) -> Self {
        Self::Line {
            line,
            field: e.field,
            problem: e.problem,
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub lines: u64,
    pub applied: u64,
    pub unchanged: u64,
    pub directories: u64,
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
    pub authkit_users: u64,
    pub org_memberships: u64,
}

/// Imports NDJSON from `input` in one transaction. `progress` is called
/// with the number of bytes consumed so far.
///
/// Lines are read and parsed on a second thread while this one applies
/// them, so parsing overlaps the storage work.
///
/// # Errors
/// The first bad line (with its number), a read failure, or a storage
/// failure; in every case nothing is written.
pub fn import(
    store: &Store,
    input: impl BufRead + Send,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, NdjsonError> {
    let (batches, parsed) = std::sync::mpsc::sync_channel::<Result<Batch, NdjsonError>>(8);
    std::thread::scope(|scope| {
        scope.spawn(move || read_and_parse(input, &batches));
        store
            .write(|tx| {
                let mut report = ImportReport::default();
                for batch in parsed {
                    let batch = batch.map_err(ImportAbort::Failed)?;
                    for (line, item) in batch.items {
                        let outcome = apply_item(tx, item, &mut report).map_err(|e| match e {
                            LineError::Field(e) => ImportAbort::Failed(NdjsonError::line(line, e)),
                            LineError::Store(e) => ImportAbort::Store(e),
                        })?;
                        match outcome {
                            Outcome::Applied => report.applied += 1,
                            _ => report.unchanged += 1,
                        }
                    }
                    report.lines = batch.lines;
                    progress(batch.consumed);
                }
                Ok(report)
            })
            .map_err(|e| match e {
                ImportAbort::Failed(e) => e,
                ImportAbort::Store(e) => NdjsonError::Store(e),
            })
        // Leaving the scope joins the reader: dropping `parsed` (on success
        // or abort) makes its next send fail, so it stops promptly.
    })
}

/// Carries a line error out of the write transaction (which then aborts).
enum ImportAbort {
    Failed(NdjsonError),
    Store(StoreError),
}

impl From<StoreError> for ImportAbort {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

enum LineError {
    Field(FieldError),
    Store(StoreError),
}

impl From<FieldError> for LineError {
    fn from(e: FieldError) -> Self {
        Self::Field(e)
    }
}

impl From<StoreError> for LineError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Lines parsed ahead of the writer.
struct Batch {
    items: Vec<(u64, Listed)>,
    /// Lines read so far (blank ones included).
    lines: u64,
    /// Bytes read so far.
    consumed: u64,
}

const BATCH_LINES: usize = 512;

fn read_and_parse(
    mut input: impl BufRead,
    out: &std::sync::mpsc::SyncSender<Result<Batch, NdjsonError>>,
) {
    let mut line = String::new();
    let (mut lines, mut consumed) = (0u64, 0u64);
    let mut items = Vec::with_capacity(BATCH_LINES);
    loop {
        line.clear();
        let n = match input.read_line(&mut line) {
            Ok(n) => n,
            Err(e) => {
                let _ = out.send(Err(NdjsonError::Read(e)));
                return;
            }
        };
        if n > 0 {
            consumed += n as u64;
            lines += 1;
            if !line.trim().is_empty() {
                match parse_line(&line) {
                    Ok(item) => items.push((lines, item)),
                    Err(e) => {
                        let _ = out.send(Err(NdjsonError::line(lines, e)));
                        return;
                    }
                }
            }
        }
        if n == 0 || items.len() >= BATCH_LINES {
            let batch = Batch {
                items: std::mem::replace(&mut items, Vec::with_capacity(BATCH_LINES)),
                lines,
                consumed,
            };
            if out.send(Ok(batch)).is_err() || n == 0 {
                return;
            }
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawMembershipLine<'a> {
    #[serde(borrow)]
    directory_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    directory_group_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    directory_user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rollcall: Option<RawInternal<'a>>,
}

/// The `object` of a line: read from the usual `{"object":"…"` prefix
/// (what export writes), else by parsing the line for it.
fn object_of(line: &str) -> Result<Cow<'_, str>, FieldError> {
    if let Some(rest) = line.strip_prefix(r#"{"object":""#)
        && let Some(end) = rest.find('"')
        && !rest[..end].contains('\\')
    {
        return Ok(Cow::Borrowed(&rest[..end]));
    }
    let head: Head<'_> = parse_json(line, "", "line")?;
    head.object
        .ok_or_else(|| FieldError::new("object", "is required"))
}

fn parse_line(line: &str) -> Result<Listed, FieldError> {
    Ok(match object_of(line)?.as_ref() {
        "directory" => {
            let raw: RawDirectory<'_> = parse_json(line, "", "line")?;
            let d = WorkosDirectory::from_raw(&raw, "")?;
            if d.organization_id.is_none() {
                return Err(FieldError::new("organization_id", "is required"));
            }
            Listed::Directory(d, parse_internal(raw.rollcall.as_ref())?)
        }
        "directory_user" => {
            let raw: RawUser<'_> = parse_json(line, "", "line")?;
            let u = WorkosDirectoryUser::from_raw(&raw, "")?;
            Listed::User(u, parse_internal(raw.rollcall.as_ref())?)
        }
        "directory_group" => {
            let raw: RawGroup<'_> = parse_json(line, "", "line")?;
            let g = WorkosDirectoryGroup::from_raw(&raw, "")?;
            Listed::Group(g, parse_internal(raw.rollcall.as_ref())?)
        }
        "directory_group_membership" => {
            let raw: RawMembershipLine<'_> = parse_json(line, "", "line")?;
            Listed::Membership {
                directory_id: required_id(&raw.directory_id, "", "directory_id", "directory_")?
                    .to_owned(),
                group_id: required_id(
                    &raw.directory_group_id,
                    "",
                    "directory_group_id",
                    "directory_group_",
                )?
                .to_owned(),
                user_id: required_id(
                    &raw.directory_user_id,
                    "",
                    "directory_user_id",
                    "directory_user_",
                )?
                .to_owned(),
                // Without a time a membership is as old as can be: any
                // event about it wins.
                at: match &raw.rollcall {
                    Some(r) => time(&r.added_at, "rollcall", "added_at")?,
                    None => None,
                }
                .unwrap_or(Timestamp::MIN),
            }
        }
        "user" => {
            let raw: RawAuthkitUser<'_> = parse_json(line, "", "line")?;
            Listed::AuthkitUser(WorkosUser::from_raw(&raw, "")?)
        }
        "organization_membership" => {
            let raw: RawOrgMembership<'_> = parse_json(line, "", "line")?;
            Listed::OrgMembership(WorkosOrgMembership::from_raw(&raw, "")?)
        }
        _ => {
            return Err(FieldError::new(
                "object",
                "must be `directory`, `directory_user`, `directory_group`, `directory_group_membership`, `user` or `organization_membership`",
            ));
        }
    })
}

fn apply_item(
    tx: &mut Tx<'_>,
    item: Listed,
    report: &mut ImportReport,
) -> Result<Outcome, LineError> {
    match &item {
        Listed::Directory(..) => report.directories += 1,
        Listed::User(..) => report.users += 1,
        Listed::Group(..) => report.groups += 1,
        Listed::Membership { .. } => report.memberships += 1,
        Listed::AuthkitUser(_) => report.authkit_users += 1,
        Listed::OrgMembership(_) => report.org_memberships += 1,
        Listed::Gone(_) => {}
    }
    if item.version().is_none() {
        return Err(FieldError::new(
            "updated_at",
            "is required (or created_at): rollcall's ids and times derive from WorkOS's",
        )
        .into());
    }
    let outcome = apply::apply_listed(tx, &item)?;
    match (&item, outcome) {
        (_, Outcome::NoDirectory) => Err(FieldError::new(
            "directory_id",
            "names a directory that is neither in the database nor on an earlier line",
        )
        .into()),
        (_, Outcome::Conflict) => Err(FieldError::new(
            "id",
            "names an object the database holds under another directory or organization",
        )
        .into()),
        (Listed::Membership { user_id, .. }, Outcome::Stale)
            if tx.user_by_workos(user_id)?.is_none() =>
        {
            Err(FieldError::new(
                "directory_user_id",
                "names no user of this directory on an earlier line",
            )
            .into())
        }
        (Listed::Membership { group_id, .. }, Outcome::Stale)
            if tx.group_by_workos(group_id)?.is_none() =>
        {
            Err(FieldError::new(
                "directory_group_id",
                "names no group of this directory on an earlier line",
            )
            .into())
        }
        (_, outcome) => Ok(outcome),
    }
}

fn parse_internal(r: Option<&RawInternal<'_>>) -> Result<Internal, FieldError> {
    let mapped_role = match r.and_then(|r| r.mapped_role.as_ref()) {
        None => None,
        Some(v) => Some(parse_mapped_role(v, "rollcall")?),
    };
    Ok(Internal { mapped_role })
}

// ---- export ------------------------------------------------------------------

#[derive(Serialize)]
struct DirectoryLine<'a> {
    object: &'static str,
    id: &'a str,
    organization_id: &'a str,
    name: &'a str,
    r#type: &'a str,
    state: &'a str,
    domains: Vec<DomainLine<'a>>,
    created_at: String,
    updated_at: String,
    rollcall: RollcallFields,
}

#[derive(Serialize)]
struct DomainLine<'a> {
    object: &'static str,
    domain: &'a str,
}

#[derive(Serialize)]
struct RollcallFields {
    id: String,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapped_role: Option<Option<&'static str>>,
}

#[derive(Serialize)]
struct EmailLine<'a> {
    primary: bool,
    r#type: Option<&'a str>,
    value: &'a str,
}

#[derive(Serialize)]
struct UserLine<'a> {
    object: &'static str,
    id: &'a str,
    directory_id: &'a str,
    organization_id: &'a str,
    idp_id: Option<&'a str>,
    email: &'a str,
    emails: Vec<EmailLine<'a>>,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    state: &'a str,
    raw_attributes: Option<Box<RawValue>>,
    custom_attributes: Option<Box<RawValue>>,
    created_at: String,
    updated_at: String,
    rollcall: RollcallFields,
}

#[derive(Serialize)]
struct GroupLine<'a> {
    object: &'static str,
    id: &'a str,
    directory_id: &'a str,
    organization_id: &'a str,
    name: &'a str,
    idp_id: Option<&'a str>,
    raw_attributes: Option<Box<RawValue>>,
    created_at: String,
    updated_at: String,
    rollcall: RollcallFields,
}

#[derive(Serialize)]
struct MembershipLine<'a> {
    object: &'static str,
    directory_id: &'a str,
    directory_group_id: &'a str,
    directory_user_id: &'a str,
    rollcall: AddedAt,
}

#[derive(Serialize)]
struct AddedAt {
    added_at: String,
}

#[derive(Serialize)]
struct OrgMembershipLine<'a> {
    object: &'static str,
    id: &'a str,
    user_id: &'a str,
    organization_id: &'a str,
    status: &'a str,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct AuthkitLine<'a> {
    object: &'static str,
    id: &'a str,
    email: &'a str,
    created_at: String,
    updated_at: String,
}

fn raw_json(s: Option<&String>) -> Option<Box<RawValue>> {
    s.and_then(|s| RawValue::from_string(s.clone()).ok())
}

fn write_line<T: Serialize>(out: &mut impl Write, line: &T) -> Result<(), NdjsonError> {
    serde_json::to_writer(&mut *out, line).map_err(|e| NdjsonError::Write(e.into()))?;
    out.write_all(b"\n").map_err(NdjsonError::Write)
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportReport {
    /// SCIM directories left out: NDJSON carries WorkOS data, and a SCIM
    /// directory's is its identity provider's (a backup carries it).
    #[serde(default)]
    pub scim_directories_skipped: u64,
    pub directories: u64,
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
    pub authkit_users: u64,
    pub org_memberships: u64,
}

/// Writes the whole database as NDJSON from one consistent snapshot:
/// AuthKit users and their organization memberships, then per directory (in creation order) the directory, its
/// groups, its users and its memberships. `progress` is called after each
/// directory with the number of lines written so far.
///
/// # Errors
/// A storage failure or a write failure.
pub fn export(
    store: &Store,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<ExportReport, NdjsonError> {
    let snapshot = store.snapshot()?;
    let mut report = ExportReport::default();
    for u in snapshot.authkit_users()? {
        write_line(
            out,
            &AuthkitLine {
                object: "user",
                id: &u.id,
                email: &u.email,
                created_at: u.source.created_at.to_rfc3339_exact(),
                updated_at: u.source.updated_at.to_rfc3339_exact(),
            },
        )?;
        report.authkit_users += 1;
    }
    for m in snapshot.org_memberships()? {
        write_line(
            out,
            &OrgMembershipLine {
                object: "organization_membership",
                id: &m.id,
                user_id: &m.user_id,
                organization_id: &m.organization_id,
                status: &m.status,
                created_at: m.source.created_at.to_rfc3339_exact(),
                updated_at: m.source.updated_at.to_rfc3339_exact(),
            },
        )?;
        report.org_memberships += 1;
    }
    for d in snapshot.all_directories()? {
        if d.is_scim() {
            report.scim_directories_skipped += 1;
            continue;
        }
        write_directory(out, &d)?;
        report.directories += 1;
        snapshot.visit_groups(d.id, |g: DirectoryGroup| {
            report.groups += 1;
            write_group(out, &d, &g)
        })?;
        snapshot.visit_users(d.id, |u: DirectoryUser| {
            report.users += 1;
            write_user(out, &d, &u)
        })?;
        snapshot.visit_memberships(d.id, |group, user, added| {
            report.memberships += 1;
            write_line(
                out,
                &MembershipLine {
                    object: "directory_group_membership",
                    directory_id: &d.workos_directory_id,
                    directory_group_id: group,
                    directory_user_id: user,
                    rollcall: AddedAt {
                        added_at: added.to_rfc3339_exact(),
                    },
                },
            )
        })?;
        progress(
            report.directories
                + report.users
                + report.groups
                + report.memberships
                + report.authkit_users
                + report.org_memberships,
        );
    }
    out.flush().map_err(NdjsonError::Write)?;
    Ok(report)
}

fn write_directory(out: &mut impl Write, d: &Directory) -> Result<(), NdjsonError> {
    write_line(
        out,
        &DirectoryLine {
            object: "directory",
            id: &d.workos_directory_id,
            organization_id: &d.organization_id,
            name: &d.name,
            r#type: &d.workos_type,
            state: &d.workos_state,
            domains: d
                .domains
                .iter()
                .map(|domain| DomainLine {
                    object: "organization_domain",
                    domain,
                })
                .collect(),
            created_at: d.source.created_at.to_rfc3339_exact(),
            updated_at: d.source.updated_at.to_rfc3339_exact(),
            rollcall: RollcallFields {
                id: d.id.to_string(),
                created_at: d.created_at.to_rfc3339_exact(),
                updated_at: d.updated_at.to_rfc3339_exact(),
                user_id: None,
                mapped_role: None,
            },
        },
    )
}

fn write_group(out: &mut impl Write, d: &Directory, g: &DirectoryGroup) -> Result<(), NdjsonError> {
    write_line(
        out,
        &GroupLine {
            object: "directory_group",
            id: &g.workos_directory_group_id,
            directory_id: &d.workos_directory_id,
            organization_id: &d.organization_id,
            name: &g.name,
            idp_id: g.idp_id.as_deref(),
            raw_attributes: raw_json(g.raw_attributes.as_ref()),
            created_at: g.source.created_at.to_rfc3339_exact(),
            updated_at: g.source.updated_at.to_rfc3339_exact(),
            rollcall: RollcallFields {
                id: g.id.to_string(),
                created_at: g.created_at.to_rfc3339_exact(),
                updated_at: g.updated_at.to_rfc3339_exact(),
                user_id: None,
                mapped_role: Some(g.mapped_role.map(|r| r.as_str())),
            },
        },
    )
}

fn write_user(out: &mut impl Write, d: &Directory, u: &DirectoryUser) -> Result<(), NdjsonError> {
    write_line(
        out,
        &UserLine {
            object: "directory_user",
            id: &u.workos_directory_user_id,
            directory_id: &d.workos_directory_id,
            organization_id: &d.organization_id,
            idp_id: u.idp_id.as_deref(),
            email: &u.email,
            emails: u
                .emails
                .iter()
                .map(|e| EmailLine {
                    primary: e.primary,
                    r#type: e.kind.as_deref(),
                    value: &e.value,
                })
                .collect(),
            first_name: u.first_name.as_deref(),
            last_name: u.last_name.as_deref(),
            state: &u.workos_state,
            raw_attributes: raw_json(u.raw_attributes.as_ref()),
            custom_attributes: raw_json(u.custom_attributes.as_ref()),
            created_at: u.source.created_at.to_rfc3339_exact(),
            updated_at: u.source.updated_at.to_rfc3339_exact(),
            rollcall: RollcallFields {
                id: u.id.to_string(),
                created_at: u.created_at.to_rfc3339_exact(),
                updated_at: u.updated_at.to_rfc3339_exact(),
                user_id: Some(u.user_id.clone()),
                mapped_role: None,
            },
        },
    )
}
