//! Online backup and restore of the whole database.
//!
//! A backup is one read transaction of the live database copied, table by
//! table, into a new redb file beside the target: consistent by
//! construction (every table seen at the same commit), taken while writes
//! go on. The copy is written in bounded batches (non-durable commits, one
//! durable commit at the end), synced, opened again and checked — integrity
//! of every page, the schema version, every table's entry count against
//! the source's, every directory's counts against its rows — and only then
//! renamed over the target (and the folder synced). A failure leaves the
//! target as it was.
//!
//! The read transaction is held for the whole copy, by design: it pins the
//! pages of that commit, so a database written meanwhile grows by what is
//! written during the copy (freed pages are reused once it ends).
//!
//! A restore checks a copy of the backup the same way, then swaps it in
//! while holding the live file's lock (an exclusive `flock`, as redb takes,
//! taken without reading the file: a damaged one can be restored over), so
//! no server can start on it meanwhile; the previous file is kept as
//! `<file>.before-restore-<UTC time>`, never over an earlier one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value,
};

use super::{SCHEMA_VERSION, Store, StoreError, catch_panic, tables};

/// Entries copied per write transaction of the copy: bounds the memory the
/// copy's dirty pages take (a user record is about 1 KB).
const BATCH: u64 = 16 * 1024;

/// What a backup or a restore checked: the copy's entries per table, and
/// the directories, users and groups it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checked {
    pub tables: Vec<(String, u64)>,
    pub directories: u64,
    pub users: u64,
    pub groups: u64,
    /// Bytes of the copy on disk.
    pub bytes: u64,
}

/// Why a backup or a restore did not happen; the target (or the live
/// database) is then as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the copy {path} failed its check: {reason}")]
    Check { path: PathBuf, reason: String },
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::File { what, path, source }
}

/// Calls `$m!(TABLE)` for every table of the schema.
macro_rules! every_table {
    ($m:ident) => {
        $m!(tables::META);
        $m!(tables::DIRECTORIES);
        $m!(tables::DIRECTORIES_BY_ORG);
        $m!(tables::DIRECTORIES_BY_WORKOS);
        $m!(tables::USERS);
        $m!(tables::USERS_BY_WORKOS);
        $m!(tables::USERS_BY_EMAIL);
        $m!(tables::GROUPS);
        $m!(tables::GROUPS_BY_WORKOS);
        $m!(tables::MEMBERS_BY_GROUP);
        $m!(tables::GROUPS_BY_MEMBER);
        $m!(tables::TOMBSTONES);
        $m!(tables::TOMBSTONES_BY_TIME);
        $m!(tables::SEEN_EVENTS);
        $m!(tables::SEEN_EVENTS_BY_TIME);
        $m!(tables::AUTHKIT_USERS);
        $m!(tables::AUTHKIT_BY_EMAIL);
        $m!(tables::ORG_MEMBERSHIPS);
        $m!(tables::PARKED_EVENTS);
        $m!(tables::PARKED_BY_TIME);
        $m!(tables::SCIM_DIRECTORIES);
        $m!(tables::SCIM_INDEX);
    };
}

/// Copies one table of `src` into `dst`, `BATCH` entries per commit.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
    cancel: &AtomicBool,
) -> Result<u64, StoreError> {
    let table = src.open_table(def)?;
    let mut entries = table.iter()?;
    let mut copied = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(StoreError::Redb(
                "the backup was cancelled: the server is stopping".into(),
            ));
        }
        let mut txn = dst.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Redb(e.to_string()))?;
        let mut done = false;
        {
            let mut out = txn.open_table(def)?;
            for _ in 0..BATCH {
                match entries.next() {
                    Some(entry) => {
                        let (k, v) = entry?;
                        out.insert(k.value(), v.value())?;
                        copied += 1;
                    }
                    None => {
                        done = true;
                        break;
                    }
                }
            }
        }
        txn.commit()?;
        if done {
            return Ok(copied);
        }
    }
}

/// Counts the entries of every table of `txn`, refusing a file whose set
/// of tables is not this schema's.
fn count_tables(txn: &ReadTransaction) -> Result<Vec<(String, u64)>, String> {
    let mut counts = Vec::new();
    macro_rules! count {
        ($def:expr) => {
            let table = txn
                .open_table($def)
                .map_err(|e| format!("table {}: {e}", $def.name()))?;
            counts.push((
                $def.name().to_owned(),
                table
                    .len()
                    .map_err(|e| format!("table {}: {e}", $def.name()))?,
            ));
        };
    }
    every_table!(count);
    let names: Vec<String> = txn
        .list_tables()
        .map_err(|e| e.to_string())?
        .map(|t| t.name().to_owned())
        .collect();
    if let Some(extra) = names
        .iter()
        .find(|n| !counts.iter().any(|(name, _)| name == *n))
    {
        return Err(format!("it has a table this build does not know: {extra}"));
    }
    Ok(counts)
}

impl Store {
    /// Copies the whole database, as of one read transaction, into `dest`
    /// (a new, empty file, open: never reopened by name), durably. Returns
    /// every table's entry count as copied. Stops between batches once
    /// `cancel` is set.
    fn copy_into(&self, dest: File, cancel: &AtomicBool) -> Result<Vec<(String, u64)>, StoreError> {
        let db = self.current()?;
        let src = db.begin_read()?;
        let out = open_file(dest, false)?;
        let mut counts = Vec::new();
        macro_rules! copy {
            ($def:expr) => {
                counts.push((
                    $def.name().to_owned(),
                    copy_table(&src, &out, $def, cancel)?,
                ));
            };
        }
        catch_panic(|| -> Result<(), StoreError> {
            every_table!(copy);
            // One durable commit makes every batch before it durable.
            out.begin_write()?.commit()?;
            Ok(())
        })??;
        let live = count_tables(&src).map_err(StoreError::Redb)?;
        if live != counts {
            return Err(StoreError::Redb(format!(
                "the copy's counts {counts:?} differ from the source's {live:?}"
            )));
        }
        Ok(counts)
    }
}

/// A redb database in the open `file` (a backup's or a restore's copy,
/// never reopened by name), with every page's checksum verified when
/// `check`.
fn open_file(file: File, check: bool) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    builder.set_cache_size(16 * 1024 * 1024);
    builder.set_check_integrity_on_open(check);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.create_with_backend(redb::backends::FileBackend::new(file)?)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(StoreError::NotADatabase {
            path: PathBuf::new(),
            reason: e.to_string(),
        }),
        Err(_) => Err(StoreError::NotADatabase {
            path: PathBuf::new(),
            reason: "the file is damaged or of another format".into(),
        }),
    }
}

/// Opens the redb file `file` (named `path` in messages) with every page's
/// checksum verified and checks it is a whole rollcall database of this
/// schema: every table present, each directory's user and group counts
/// equal to its rows. `expected`: the entry counts it must have.
///
/// # Errors
/// [`BackupError::Check`] saying what is wrong; a storage failure.
pub fn check_copy(
    file: &File,
    path: &Path,
    expected: Option<&[(String, u64)]>,
) -> Result<Checked, BackupError> {
    let fail = |reason: String| BackupError::Check {
        path: path.to_owned(),
        reason,
    };
    let handle = file
        .try_clone()
        .map_err(file_error("cannot reopen", path))?;
    let db = open_file(handle, true).map_err(|e| {
        fail(match e {
            StoreError::NotADatabase { reason, .. } => {
                format!("it is not a redb database: {reason}")
            }
            e => e.to_string(),
        })
    })?;
    let checked = catch_panic(|| -> Result<Checked, BackupError> {
        let txn = db.begin_read().map_err(StoreError::from)?;
        let schema = match txn.open_table(tables::META) {
            Ok(meta) => meta
                .get(tables::META_SCHEMA_VERSION)
                .map_err(StoreError::from)?
                .and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes)),
            Err(_) => None,
        };
        match schema {
            None => {
                return Err(fail(
                    "it is not a rollcall database (no schema version)".into(),
                ));
            }
            Some(found) if found != SCHEMA_VERSION => {
                return Err(fail(format!(
                    "it uses schema {found}; this build serves schema {SCHEMA_VERSION}"
                )));
            }
            Some(_) => {}
        }
        let counts = count_tables(&txn).map_err(fail)?;
        if let Some(expected) = expected
            && expected != counts.as_slice()
        {
            return Err(fail(format!(
                "entry counts {counts:?}, expected {expected:?}"
            )));
        }
        let users = txn.open_table(tables::USERS).map_err(StoreError::from)?;
        let groups = txn.open_table(tables::GROUPS).map_err(StoreError::from)?;
        let mut checked = Checked {
            tables: counts,
            ..Checked::default()
        };
        let directories = txn
            .open_table(tables::DIRECTORIES)
            .map_err(StoreError::from)?;
        for entry in directories.iter().map_err(StoreError::from)? {
            let (_, v) = entry.map_err(StoreError::from)?;
            let d = super::codec::decode_directory(v.value()).map_err(StoreError::from)?;
            let id = d.id.as_u128();
            let rows = |t: &redb::ReadOnlyTable<(u128, u128), &[u8]>| -> Result<u64, StoreError> {
                let mut n = 0u64;
                for entry in t.range((id, 0)..=(id, u128::MAX))? {
                    entry?;
                    n += 1;
                }
                Ok(n)
            };
            let (u, g) = (rows(&users)?, rows(&groups)?);
            if (u, g) != (d.user_count, d.group_count) {
                return Err(fail(format!(
                    "directory {} counts {} users and {} groups but holds {u} and {g}",
                    d.workos_directory_id, d.user_count, d.group_count
                )));
            }
            checked.directories += 1;
            checked.users += u;
            checked.groups += g;
        }
        Ok(checked)
    })
    .map_err(|e| fail(e.to_string()))??;
    drop(db);
    Ok(Checked {
        bytes: file.metadata().map(|m| m.len()).unwrap_or(0),
        ..checked
    })
}

/// `<file>.<suffix>` beside `path`, hidden.
fn temp_beside(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    path.with_file_name(format!(".{name}.{what}-{}-{nanos}.tmp", std::process::id()))
}

/// A new owner-only file at `path`, never an existing one nor a symlink's
/// target (`O_EXCL`): the copy is then written and checked through it.
fn create_private(path: &Path) -> Result<File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(file_error("cannot create", path))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

/// The same file, whether or not `b` exists yet (its folder must).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty())?;
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The pid in a backup temp file's name, `.<name>.backup-<pid>-<nanos>.tmp`.
fn backup_temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, nanos) = rest.rsplit_once('-')?;
    let (rest, pid) = rest.rsplit_once('-')?;
    if !rest.ends_with(".backup") || nanos.is_empty() || !nanos.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    pid.parse().ok()
}

/// Removes the backup temp files in `folder` left by a process no longer
/// alive (a crash or a stop mid-backup). Only where `/proc` says which
/// processes live.
fn remove_stale_temps(folder: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(backup_temp_pid) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed a stale backup temp file")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a stale backup temp file")
                }
            }
        }
    }
}

/// Refuses a folder every user may write unless it is sticky: another
/// user could swap the files in it.
fn check_folder(folder: &Path) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A missing folder is refused when the temp file is created.
        let Ok(meta) = std::fs::metadata(folder) else {
            return Ok(());
        };
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(BackupError::Refused(format!(
                "the backup folder {} is writable by every user and not sticky (mode {:o}): another user could swap the file; back up into a private folder",
                folder.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Writes a consistent copy of the live database `store` to `target` (an
/// absolute path in an existing folder): a temp file beside it, written,
/// synced and checked through the one handle it was created with, renamed
/// over it, the folder synced. Stops (and removes the temp file) once
/// `cancel` is set.
///
/// # Errors
/// [`BackupError::Refused`] for a relative target, the live file itself, a
/// folder, or a folder every user may write; a copy that fails its check;
/// a storage or file failure. The target is then as it was and no temp
/// file is left.
pub fn backup(store: &Store, target: &Path, cancel: &AtomicBool) -> Result<Checked, BackupError> {
    if !target.is_absolute() {
        return Err(BackupError::Refused(format!(
            "the backup path {} is not absolute",
            target.display()
        )));
    }
    if same_file(&store.path, target) {
        return Err(BackupError::Refused(format!(
            "refusing to write a backup over the live database {}",
            target.display()
        )));
    }
    if target.is_dir() {
        return Err(BackupError::Refused(format!(
            "{} is a folder: give a file name",
            target.display()
        )));
    }
    let folder = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    check_folder(folder)?;
    remove_stale_temps(folder);
    let temp = temp_beside(target, "backup");
    let result = (|| {
        // Owner-only from the start: it holds every organization's data.
        let file = create_private(&temp)?;
        let handle = file
            .try_clone()
            .map_err(file_error("cannot reopen", &temp))?;
        let counts = store.copy_into(handle, cancel)?;
        file.sync_all().map_err(file_error("cannot sync", &temp))?;
        let checked = check_copy(&file, &temp, Some(&counts))?;
        std::fs::rename(&temp, target).map_err(file_error("cannot rename the copy to", target))?;
        sync_dir(target);
        Ok(checked)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    pub checked: Checked,
    /// Where the previous database was kept (none when there was none).
    pub kept: Option<PathBuf>,
}

/// Keeps the live file as `<live>.before-restore-<UTC time>` (with `-<n>`
/// added while one exists: an earlier kept file is never overwritten). A
/// hard link where the file system allows it, so the live name never goes
/// missing (the backup is then renamed over it); else a rename. Returns
/// the kept name and whether it is a link.
fn keep_old(live: &Path) -> Result<(PathBuf, bool), BackupError> {
    let name = live.file_name().unwrap_or_default().to_string_lossy();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("{name}.before-restore-{stamp}");
    for n in 1..=1000u32 {
        let kept = live.with_file_name(if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        match std::fs::hard_link(live, &kept) {
            Ok(()) => return Ok((kept, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) if kept.symlink_metadata().is_ok() => {}
            Err(_) => {
                std::fs::rename(live, &kept)
                    .map_err(file_error("cannot keep the old file as", &kept))?;
                return Ok((kept, false));
            }
        }
    }
    Err(BackupError::Refused(format!(
        "too many files named {base}-<n> beside {}; remove some",
        live.display()
    )))
}

/// Takes the lock a server holds on its database file (an exclusive
/// `flock`, as redb takes), without reading the file: a damaged file can
/// be restored over. `None` when there is no file.
fn lock_live(live: &Path) -> Result<Option<File>, BackupError> {
    let file = match File::open(live) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error("cannot open", live)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(live.to_owned()).into()),
        Err(std::fs::TryLockError::Error(e)) => Err(file_error("cannot lock", live)(e)),
    }
}

/// When run as root, gives `file` the owner of the old live file (or of
/// the data folder): a service running as that user must open it.
#[cfg(unix)]
fn give_owner(file: &File, temp: &Path, live: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    if rustix::process::geteuid().as_raw() != 0 {
        return Ok(());
    }
    let folder = live
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(owner) = std::fs::metadata(live).or_else(|_| std::fs::metadata(folder)) else {
        return Ok(());
    };
    if owner.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid())).map_err(file_error(
        "cannot give the owner of the data folder to",
        temp,
    ))
}

/// Puts the backup `from` in place of the database at `live`, after
/// checking a copy of it; the previous file is kept as
/// `<live>.before-restore-<UTC time>`. Holds the live file's lock (taken
/// without reading it: a damaged file can be restored over) while
/// swapping, so it refuses while a server runs.
///
/// # Errors
/// [`StoreError::Locked`] while a server holds the file; a backup that
/// fails its check; a file failure. The live database is then untouched.
pub fn restore(live: &Path, from: &Path) -> Result<Restored, BackupError> {
    if same_file(live, from) {
        return Err(BackupError::Refused(format!(
            "{} is the live database itself",
            from.display()
        )));
    }
    if !from.is_file() {
        return Err(BackupError::Refused(format!(
            "no backup file at {}",
            from.display()
        )));
    }
    // Restoring onto a new machine: the data folder may not exist yet.
    if let Some(parent) = live.parent().filter(|p| !p.as_os_str().is_empty()) {
        super::create_private_dir(parent).map_err(file_error("cannot create", parent))?;
    }
    let temp = temp_beside(live, "restoring");
    let result = (|| {
        let mut out = create_private(&temp)?;
        let mut input = File::open(from).map_err(file_error("cannot read", from))?;
        std::io::copy(&mut input, &mut out).map_err(file_error("cannot copy to", &temp))?;
        out.sync_all().map_err(file_error("cannot sync", &temp))?;
        let checked = check_copy(&out, &temp, None).map_err(|e| match e {
            BackupError::Check { reason, .. } => BackupError::Check {
                path: from.to_owned(),
                reason,
            },
            e => e,
        })?;
        #[cfg(unix)]
        give_owner(&out, &temp, live)?;
        drop(out);
        // The live file's lock, held across the swap: a server running (or
        // starting) on it is refused.
        let lock = lock_live(live)?;
        let kept = if lock.is_some() {
            Some(keep_old(live)?)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&temp, live) {
            if let Some((kept, true)) = &kept {
                let _ = std::fs::remove_file(kept);
                return Err(BackupError::Refused(format!(
                    "cannot move the backup to {}: {e}; the database is untouched",
                    live.display()
                )));
            }
            if let Some((kept, false)) = &kept {
                if let Err(back) = std::fs::rename(kept, live) {
                    return Err(BackupError::Refused(format!(
                        "cannot move the backup to {}: {e}; and cannot put the old file back from {}: {back} (move it back by hand)",
                        live.display(),
                        kept.display()
                    )));
                }
                sync_dir(live);
                return Err(BackupError::Refused(format!(
                    "cannot move the backup to {}: {e}; the old file was put back",
                    live.display()
                )));
            }
            return Err(file_error("cannot move the backup to", live)(e));
        }
        sync_dir(live);
        drop(lock);
        Ok(Restored {
            checked,
            kept: kept.map(|(kept, _)| kept),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
