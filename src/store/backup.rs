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
//! while holding the live file's lock (so no server can start on it
//! meanwhile), keeping the previous file as `<file>.before-restore`.

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value,
};

use super::{SCHEMA_VERSION, Store, StoreError, StoreOptions, catch_panic, open_database, tables};

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
    };
}

/// Copies one table of `src` into `dst`, `BATCH` entries per commit.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let table = src.open_table(def)?;
    let mut entries = table.iter()?;
    let mut copied = 0u64;
    loop {
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
    /// Copies the whole database, as of one read transaction, into a new
    /// redb file at `dest` (which must not exist), durably. Returns every
    /// table's entry count as copied.
    fn copy_into(&self, dest: &Path) -> Result<Vec<(String, u64)>, StoreError> {
        let db = self.current()?;
        let src = db.begin_read()?;
        let options = StoreOptions {
            cache_bytes: 16 * 1024 * 1024,
            ..StoreOptions::default()
        };
        let out = open_database(dest, &options)?;
        let mut counts = Vec::new();
        macro_rules! copy {
            ($def:expr) => {
                counts.push(($def.name().to_owned(), copy_table(&src, &out, $def)?));
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

/// Opens the redb file at `path` with every page's checksum verified and
/// checks it is a whole rollcall database of this schema: every table
/// present, each directory's user and group counts equal to its rows.
/// `expected`: the entry counts it must have.
///
/// # Errors
/// [`BackupError::Check`] saying what is wrong; a storage failure.
pub fn check_copy(path: &Path, expected: Option<&[(String, u64)]>) -> Result<Checked, BackupError> {
    let fail = |reason: String| BackupError::Check {
        path: path.to_owned(),
        reason,
    };
    let options = StoreOptions {
        check_integrity: true,
        cache_bytes: 16 * 1024 * 1024,
        ..StoreOptions::default()
    };
    let db = open_database(path, &options).map_err(|e| {
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
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
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

/// Syncs a file's data, then its folder's entry.
fn sync_file(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(file_error("cannot sync", path))
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

/// Writes a consistent copy of the live database `store` to `target` (an
/// absolute path in an existing folder): a temp file beside it, synced,
/// checked, renamed over it, the folder synced.
///
/// # Errors
/// [`BackupError::Refused`] for a relative target, the live file itself or
/// a folder; a copy that fails its check; a storage or file failure. The
/// target is then as it was and no temp file is left.
pub fn backup(store: &Store, target: &Path) -> Result<Checked, BackupError> {
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
    let temp = temp_beside(target, "backup");
    let result = (|| {
        // Owner-only from the start: it holds every organization's data.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        drop(
            options
                .open(&temp)
                .map_err(file_error("cannot create", &temp))?,
        );
        let counts = store.copy_into(&temp)?;
        sync_file(&temp)?;
        let checked = check_copy(&temp, Some(&counts))?;
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

/// Puts the backup `from` in place of the database at `live`, after
/// checking a copy of it; the previous file is kept as
/// `<live>.before-restore`. Holds the live file's lock while swapping, so
/// it refuses while a server runs.
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
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options
            .open(&temp)
            .map_err(file_error("cannot create", &temp))?;
        let mut input = File::open(from).map_err(file_error("cannot read", from))?;
        std::io::copy(&mut input, &mut out).map_err(file_error("cannot copy to", &temp))?;
        out.sync_all().map_err(file_error("cannot sync", &temp))?;
        drop(out);
        let checked = check_copy(&temp, None).map_err(|e| match e {
            BackupError::Check { reason, .. } => BackupError::Check {
                path: from.to_owned(),
                reason,
            },
            e => e,
        })?;
        // The live file's lock, held while swapping: a server running (or
        // starting) on it is refused, and the live file was not opened
        // before the backup passed its check.
        let lock = if live.exists() {
            Some(open_database(live, &StoreOptions::default())?)
        } else {
            None
        };
        let kept = if lock.is_some() {
            let mut name = live.file_name().unwrap_or_default().to_owned();
            name.push(".before-restore");
            let kept = live.with_file_name(name);
            std::fs::rename(live, &kept)
                .map_err(file_error("cannot keep the old file as", &kept))?;
            Some(kept)
        } else {
            None
        };
        std::fs::rename(&temp, live).map_err(file_error("cannot move the backup to", live))?;
        sync_dir(live);
        drop(lock);
        Ok(Restored { checked, kept })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
