//! The only code that touches redb.
//!
//! [`Store`] opens one database file, creates every table once, records the
//! schema version, and hands out two kinds of short-lived handles:
//! a [`Snapshot`] (one read transaction: a consistent view for one request)
//! and a [`Tx`] (one write transaction, through [`Store::write`], with typed
//! domain operations that keep every index and count consistent).
//!
//! Everything here is synchronous: callers on the async side run it in
//! `spawn_blocking` and never hold a handle across an `.await`.
//! Keys, encodings and transactions never leave this module; callers speak in
//! [`crate::model`] values.

pub mod backup;
mod codec;
mod directories;
mod faults;
mod snapshot;
mod tables;
mod tx;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, TableDefinition};

use directories::DirectoryMap;

pub use codec::CodecError;
pub use faults::StorageFaults;
pub use snapshot::{Bookkeeping, ListQuery, Snapshot};
pub use tx::Tx;

use crate::model::{Directory, DirectoryId, Timestamp};

/// The on-disk schema this build writes. Bump it with a migration in
/// [`Store::open`] whenever a table's key layout or value encoding changes.
///
/// - 1: random UUIDv7 ids and rollcall's own clock (rollcall 0.1).
/// - 2: ids and times derived from WorkOS's; list digests in directory
///   records. A schema-1 file is refused with what to run (`rollcall
///   migrate`).
pub const SCHEMA_VERSION: u32 = 2;

/// How long rollcall remembers things that only exist to make event delivery
/// idempotent and monotonic.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Seen event ids: a replay older than this is applied again (and, being
    /// monotonic, changes nothing unless its object was since deleted and
    /// its tombstone expired too).
    pub seen_events: Duration,
    /// Tombstones of deleted users, groups, directories and memberships.
    pub tombstones: Duration,
    /// Events held for a directory that was never activated.
    pub parked_events: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            seen_events: Duration::from_secs(7 * DAY),
            tombstones: Duration::from_secs(30 * DAY),
            parked_events: Duration::from_secs(7 * DAY),
        }
    }
}

/// Settings of the store itself.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb's page cache. Kept small: list bodies are cached above the store,
    /// and the OS page cache serves the rest.
    pub cache_bytes: usize,
    pub retention: Retention,
    /// Verify every page's checksum when opening (slow on big files; for
    /// after a crash or when damage is suspected).
    pub check_integrity: bool,
    /// Faults to inject into the file backend (tests only).
    pub faults: Option<Arc<StorageFaults>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
            retention: Retention::default(),
            check_integrity: false,
            faults: None,
        }
    }
}

/// The open database, or why there is none right now.
struct Handle {
    db: Option<Arc<Database>>,
    /// An I/O error happened: redb refuses every further operation on this
    /// handle until the database is closed and opened again.
    poisoned: bool,
    last_reopen: Option<Instant>,
}

/// Least time between two attempts to reopen a failed database.
const REOPEN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a reopen waits for open snapshots (streams) to finish.
const REOPEN_DRAIN: Duration = Duration::from_secs(2);

/// Everything that can go wrong below the API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database file {0} is in use by another process")]
    Locked(PathBuf),
    #[error(
        "the database file {path} was written by a newer rollcall (schema {found}; this build knows up to {known})"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error(
        "the database file {path} uses schema {found} (ids and times of rollcall 0.1); this build needs schema {known}: run `rollcall --data {path} migrate` (the old file is kept beside it)"
    )]
    OldSchema {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("the file {path} is not a rollcall database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },
    #[error("stored record is unreadable: {0}")]
    Codec(#[from] CodecError),
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("the database file is damaged: {0}")]
    Damaged(String),
    #[error("storage error: {0}")]
    Redb(String),
}

impl StoreError {
    /// Whether the failure is the disk's (full, failing, gone): the request
    /// may succeed later and deserves a 503 rather than a 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Locked(_))
    }

    /// Whether the handle must be reopened before it can be used again.
    fn poisons(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Damaged(_))
    }
}

fn classify(e: redb::Error) -> StoreError {
    match e {
        redb::Error::Io(e) => StoreError::Io(e.to_string()),
        redb::Error::PreviousIo => StoreError::Io("an earlier write failed".into()),
        redb::Error::Backend(e) => StoreError::Io(e.to_string()),
        other => StoreError::Redb(other.to_string()),
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                classify(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// The database: one redb file with rollcall's tables.
pub struct Store {
    handle: RwLock<Handle>,
    path: PathBuf,
    created: bool,
    options: StoreOptions,
    directories: DirectoryMap,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if absent) the database at `path`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds the file,
    /// [`StoreError::NotADatabase`] for a file that is not a redb database,
    /// [`StoreError::NewerSchema`] for one written by a newer build.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|e| StoreError::Io(e.to_string()))?;
        }
        let db = open_database(path, &options)?;
        warn_if_readable_by_others(path);
        let created = Self::init_schema(&db, path)?;
        let directories = DirectoryMap::load(load_directories(&db)?);
        Ok(Self {
            handle: RwLock::new(Handle {
                db: Some(Arc::new(db)),
                poisoned: false,
                last_reopen: None,
            }),
            path: path.to_owned(),
            created,
            options,
            directories,
        })
    }

    /// Opens a database of an older schema to read it, and only that (a
    /// migration exports it): nothing is written to the file. Returns the
    /// store and the file's schema version.
    ///
    /// # Errors
    /// As [`Store::open`] for a file that cannot be opened;
    /// [`StoreError::NewerSchema`] for one of a newer build.
    pub fn open_to_migrate(path: &Path) -> Result<(Self, u32), StoreError> {
        let options = StoreOptions::default();
        let db = open_database(path, &options)?;
        let found = {
            let txn = db.begin_read()?;
            let meta = txn
                .open_table(tables::META)
                .map_err(|e| StoreError::NotADatabase {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            meta.get(tables::META_SCHEMA_VERSION)?
                .and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes))
                .ok_or_else(|| StoreError::NotADatabase {
                    path: path.to_owned(),
                    reason: "its schema version is unreadable".into(),
                })?
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        let directories = DirectoryMap::load(load_directories(&db)?);
        Ok((
            Self {
                handle: RwLock::new(Handle {
                    db: Some(Arc::new(db)),
                    poisoned: false,
                    last_reopen: None,
                }),
                path: path.to_owned(),
                created: false,
                options,
                directories,
            },
            found,
        ))
    }

    /// The database to use, reopening it first if an I/O error poisoned it.
    fn current(&self) -> Result<Arc<Database>, StoreError> {
        {
            let handle = self.handle.read().unwrap_or_else(|p| p.into_inner());
            if let (Some(db), false) = (&handle.db, handle.poisoned) {
                return Ok(db.clone());
            }
        }
        self.reopen()
    }

    /// Closes a poisoned database and opens the file again (redb refuses
    /// every operation on a handle after an I/O error). Waits, bounded, for
    /// open snapshots; at most one attempt per [`REOPEN_INTERVAL`].
    fn reopen(&self) -> Result<Arc<Database>, StoreError> {
        let mut handle = self.handle.write().unwrap_or_else(|p| p.into_inner());
        if let (Some(db), false) = (&handle.db, handle.poisoned) {
            return Ok(db.clone());
        }
        if handle
            .last_reopen
            .is_some_and(|t| t.elapsed() < REOPEN_INTERVAL)
        {
            return Err(StoreError::Io(
                "the database is recovering from an I/O error".into(),
            ));
        }
        handle.last_reopen = Some(Instant::now());
        if let Some(old) = handle.db.take() {
            // The file lock is released only when the last snapshot of the
            // old handle is gone.
            let deadline = Instant::now() + REOPEN_DRAIN;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if Arc::strong_count(&old) > 1 {
                handle.db = Some(old);
                return Err(StoreError::Io(
                    "the database is recovering from an I/O error".into(),
                ));
            }
            drop(old);
        }
        let db = open_database(&self.path, &self.options)?;
        self.directories.replace(load_directories(&db)?);
        let db = Arc::new(db);
        handle.db = Some(db.clone());
        handle.poisoned = false;
        tracing::warn!("the database was reopened after an I/O error");
        Ok(db)
    }

    /// Records that `e` came from the storage; an I/O failure poisons the
    /// handle, which is then reopened right away (or by the next caller).
    fn note(&self, e: &StoreError) {
        if e.poisons() {
            self.handle
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .poisoned = true;
            if let Err(again) = self.reopen() {
                tracing::warn!(error = %again, "reopening the database failed; will retry");
            }
        }
    }

    /// Creates every table and records the schema version. Returns whether
    /// the database was new.
    fn init_schema(db: &Database, path: &Path) -> Result<bool, StoreError> {
        // Read first: opening a database of the current schema writes
        // nothing (a file only ever changes when its data does), and one of
        // another schema is refused untouched.
        let found = {
            let txn = db.begin_read()?;
            match txn.open_table(tables::META) {
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                meta => meta?
                    .get(tables::META_SCHEMA_VERSION)?
                    .map(|v| v.value().try_into().map(u32::from_le_bytes)),
            }
        };
        match found {
            None => {}
            Some(Ok(found)) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.to_owned(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            Some(Ok(found)) if found < SCHEMA_VERSION => {
                return Err(StoreError::OldSchema {
                    path: path.to_owned(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            // Every table was created with the schema version, but the
            // SCIM tables came later within it: a file written before them
            // gets them once, on its first open by this build.
            Some(Ok(_)) => {
                let missing = matches!(
                    db.begin_read()?.open_table(tables::SCIM_INDEX),
                    Err(redb::TableError::TableDoesNotExist(_))
                );
                if missing {
                    let txn = db.begin_write()?;
                    txn.open_table(tables::SCIM_DIRECTORIES)?;
                    txn.open_table(tables::SCIM_INDEX)?;
                    txn.commit()?;
                }
                return Ok(false);
            }
            Some(Err(_)) => {
                return Err(StoreError::NotADatabase {
                    path: path.to_owned(),
                    reason: "its schema version is unreadable".into(),
                });
            }
        }
        let txn = db.begin_write()?;
        txn.open_table(tables::META)?.insert(
            tables::META_SCHEMA_VERSION,
            SCHEMA_VERSION.to_le_bytes().as_slice(),
        )?;
        fn create<K: redb::Key + 'static, V: redb::Value + 'static>(
            txn: &redb::WriteTransaction,
            def: TableDefinition<K, V>,
        ) -> Result<(), StoreError> {
            txn.open_table(def)?;
            Ok(())
        }
        create(&txn, tables::DIRECTORIES)?;
        create(&txn, tables::DIRECTORIES_BY_ORG)?;
        create(&txn, tables::DIRECTORIES_BY_WORKOS)?;
        create(&txn, tables::USERS)?;
        create(&txn, tables::USERS_BY_WORKOS)?;
        create(&txn, tables::USERS_BY_EMAIL)?;
        create(&txn, tables::GROUPS)?;
        create(&txn, tables::GROUPS_BY_WORKOS)?;
        create(&txn, tables::MEMBERS_BY_GROUP)?;
        create(&txn, tables::GROUPS_BY_MEMBER)?;
        create(&txn, tables::TOMBSTONES)?;
        create(&txn, tables::TOMBSTONES_BY_TIME)?;
        create(&txn, tables::SEEN_EVENTS)?;
        create(&txn, tables::SEEN_EVENTS_BY_TIME)?;
        create(&txn, tables::AUTHKIT_USERS)?;
        create(&txn, tables::AUTHKIT_BY_EMAIL)?;
        create(&txn, tables::ORG_MEMBERSHIPS)?;
        create(&txn, tables::PARKED_EVENTS)?;
        create(&txn, tables::PARKED_BY_TIME)?;
        create(&txn, tables::SCIM_DIRECTORIES)?;
        create(&txn, tables::SCIM_INDEX)?;
        txn.commit()?;
        Ok(true)
    }

    /// Whether this open created the database.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// A consistent read view. Keep it short: an open snapshot pins pages.
    ///
    /// # Errors
    /// When the database cannot start a read transaction.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let db = self.current()?;
        match db.begin_read() {
            Ok(txn) => Ok(Snapshot::new(txn, db)),
            Err(e) => {
                let e = StoreError::from(e);
                drop(db);
                self.note(&e);
                Err(e)
            }
        }
    }

    /// Runs `f` in one write transaction and commits durably (fsync) when it
    /// returns `Ok`; on `Err` nothing is written.
    ///
    /// # Errors
    /// Whatever `f` returns, or a storage failure while committing.
    pub fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let db = self.current()?;
        let mut failure = None;
        let result = catch_panic(|| {
            let txn = db.begin_write().map_err(|e| keep(&mut failure, e.into()))?;
            let (out, changes) = {
                let mut tx = Tx::open(&txn, Timestamp::now(), &self.options.retention)
                    .map_err(|e| keep(&mut failure, e))?;
                let out = f(&mut tx)?;
                (out, tx.finish().map_err(|e| keep(&mut failure, e))?)
            };
            match changes {
                Some(changes) => {
                    txn.commit().map_err(|e| keep(&mut failure, e.into()))?;
                    Ok((out, changes))
                }
                // Nothing was written: nothing to commit, nothing to sync,
                // and the file stays exactly as it was.
                None => {
                    txn.abort().map_err(|e| keep(&mut failure, e.into()))?;
                    Ok((out, Vec::new()))
                }
            }
        })
        .unwrap_or_else(|damage| {
            failure = Some(damage.clone());
            Err(E::from(damage))
        });
        drop(db);
        match result {
            Ok((out, changes)) => {
                // Only what is committed reaches the in-memory map, and it
                // does so before the caller can acknowledge anything.
                self.directories.apply(changes);
                Ok(out)
            }
            Err(e) => {
                if let Some(failure) = &failure {
                    self.note(failure);
                }
                Err(e)
            }
        }
    }

    /// A directory, from memory (no storage access; hit and miss cost alike).
    pub fn directory(&self, id: DirectoryId) -> Option<Arc<Directory>> {
        self.directories.get(id)
    }

    /// Directories, users and groups stored, from memory (the directories'
    /// own counts; no storage access).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.directories.totals()
    }

    /// A directory by WorkOS id, from memory.
    pub fn directory_by_workos(&self, workos_id: &str) -> Option<Arc<Directory>> {
        self.directories.by_workos(workos_id)
    }

    /// An organization's directories in creation order, from memory.
    pub fn directories_of_org(&self, org: &str) -> Vec<Arc<Directory>> {
        self.directories.of_org(org)
    }
}

/// What a compaction did to the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Compacts the database file at `path` in place: pages freed by past
/// writes are given back to the file system. Needs the file to itself
/// (redb compacts only with no transaction open), so it runs with the
/// server stopped — a running server reuses freed pages anyway.
///
/// # Errors
/// [`StoreError::Locked`] while a server holds the file; a storage failure.
pub fn compact(path: &Path) -> Result<Compaction, StoreError> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if !path.exists() {
        return Err(StoreError::Io(format!("no database at {}", path.display())));
    }
    let bytes_before = size(path);
    let mut db = open_database(path, &StoreOptions::default())?;
    Store::init_schema(&db, path)?;
    // Compaction runs until a pass frees nothing more.
    while db.compact().map_err(|e| StoreError::Redb(e.to_string()))? {}
    drop(db);
    Ok(Compaction {
        bytes_before,
        bytes_after: size(path),
    })
}

/// Runs `f`, turning a panic inside redb (which it raises on some damaged
/// pages) into an error, so a damaged file fails one request instead of a
/// thread of the server.
fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| StoreError::Damaged("the storage engine failed on a damaged page".into()))
}

/// Keeps a storage failure aside (to poison the handle) and passes it on.
fn keep<E: From<StoreError>>(slot: &mut Option<StoreError>, e: StoreError) -> E {
    *slot = Some(e.clone());
    E::from(e)
}

fn load_directories(db: &Database) -> Result<Vec<Directory>, StoreError> {
    Snapshot::new_unshared(db.begin_read()?).all_directories()
}

/// Creates `dir` and any missing parents, owner-only (0700) on Unix: the
/// folder holds every organization's directory data and the dev secrets.
/// Folders that already exist keep their mode.
///
/// # Errors
/// When a folder cannot be created.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Warns when an existing database file can be read by other local users
/// (a copy made by hand, a restored backup): rollcall creates it 0600.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{mode:o}"),
                    "the database file is readable or writable by other local users; run `chmod 600` on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Opens (creating if absent) the redb file, with injected faults if any.
fn open_database(path: &Path, options: &StoreOptions) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_bytes);
    builder.set_check_integrity_on_open(options.check_integrity);
    let mut open = std::fs::OpenOptions::new();
    open.read(true).write(true).create(true).truncate(false);
    // A new database is created owner-only: it holds every organization.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let file = open
        .open(path)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
    // redb may panic on a file it does not recognise; a foreign or damaged
    // file must be a clean error at startup, not a crash.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &options.faults {
        Some(faults) => {
            builder.create_with_backend(faults::FaultyBackend::new(file, faults.clone())?)
        }
        None => builder.create_with_backend(redb::backends::FileBackend::new(file)?),
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(StoreError::Locked(path.to_owned()))
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(StoreError::NotADatabase {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => {
            Err(StoreError::Io(e.to_string()))
        }
        Ok(Err(e)) => Err(StoreError::NotADatabase {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(_) => Err(StoreError::NotADatabase {
            path: path.to_owned(),
            reason: "the file is damaged or of another format".into(),
        }),
    }
}
