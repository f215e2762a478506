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

mod codec;
mod directories;
mod snapshot;
mod tables;
mod tx;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use directories::DirectoryMap;

pub use codec::CodecError;
pub use snapshot::{ListQuery, Snapshot};
pub use tx::Tx;

use crate::model::{Directory, DirectoryId, Timestamp};

/// The on-disk schema this build writes. Bump it with a migration in
/// [`Store::open`] whenever a table's key layout or value encoding changes.
pub const SCHEMA_VERSION: u32 = 1;

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
            retention: Retention::default(),
        }
    }
}

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
    #[error("the file {path} is not a rollcall database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },
    #[error("stored record is unreadable: {0}")]
    Codec(#[from] CodecError),
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("storage error: {0}")]
    Redb(String),
}

impl StoreError {
    /// Whether the failure is the disk's (full, failing, gone): the request
    /// may succeed later and deserves a 503 rather than a 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Locked(_))
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
    db: Database,
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
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Io(e.to_string()))?;
        }
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        // redb may panic on a file it does not recognise; a foreign or
        // damaged file must be a clean error at startup, not a crash.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::Locked(path.to_owned()));
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => {
                return Err(StoreError::Io(e.to_string()));
            }
            Ok(Err(e)) => {
                return Err(StoreError::NotADatabase {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(StoreError::NotADatabase {
                    path: path.to_owned(),
                    reason: "the file is damaged or of another format".into(),
                });
            }
        };
        let created = Self::init_schema(&db, path)?;
        let directories = DirectoryMap::load(Snapshot::new(db.begin_read()?).all_directories()?);
        Ok(Self {
            db,
            path: path.to_owned(),
            created,
            options,
            directories,
        })
    }

    /// Creates every table and records the schema version. Returns whether
    /// the database was new.
    fn init_schema(db: &Database, path: &Path) -> Result<bool, StoreError> {
        let txn = db.begin_write()?;
        let created;
        {
            let mut meta = txn.open_table(tables::META)?;
            let found = meta
                .get(tables::META_SCHEMA_VERSION)?
                .map(|v| v.value().try_into().map(u32::from_le_bytes));
            match found {
                None => {
                    created = true;
                    meta.insert(
                        tables::META_SCHEMA_VERSION,
                        SCHEMA_VERSION.to_le_bytes().as_slice(),
                    )?;
                }
                Some(Ok(found)) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: path.to_owned(),
                        found,
                        known: SCHEMA_VERSION,
                    });
                }
                // Version 1 is the first schema: nothing to migrate yet.
                Some(Ok(_)) => created = false,
                Some(Err(_)) => {
                    return Err(StoreError::NotADatabase {
                        path: path.to_owned(),
                        reason: "its schema version is unreadable".into(),
                    });
                }
            }
        }
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
        create(&txn, tables::PARKED_EVENTS)?;
        create(&txn, tables::PARKED_BY_TIME)?;
        txn.commit()?;
        Ok(created)
    }

    /// Whether this open created the database.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent read view. Keep it short: an open snapshot pins pages.
    ///
    /// # Errors
    /// When the database cannot start a read transaction.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::new(self.db.begin_read()?))
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
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let (out, changes) = {
            let mut tx = Tx::open(&txn, Timestamp::now(), &self.options.retention)?;
            let out = f(&mut tx)?;
            (out, tx.finish()?)
        };
        txn.commit().map_err(StoreError::from)?;
        // Only what is committed reaches the in-memory map, and it does so
        // before the caller can acknowledge anything.
        self.directories.apply(changes);
        Ok(out)
    }

    /// A directory, from memory (no storage access; hit and miss cost alike).
    pub fn directory(&self, id: DirectoryId) -> Option<Arc<Directory>> {
        self.directories.get(id)
    }

    /// An organization's directories in creation order, from memory.
    pub fn directories_of_org(&self, org: &str) -> Vec<Arc<Directory>> {
        self.directories.of_org(org)
    }

    /// Whether the file holds no directory at all.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(tables::DIRECTORIES)?;
        Ok(t.first()?.is_none())
    }
}
