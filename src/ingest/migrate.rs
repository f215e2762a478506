//! `rollcall migrate`: rebuilds a database of an older schema into the
//! current one, beside it, then swaps the files (the old one is kept).
//!
//! Schema 1 gave records random ids and rollcall's own timestamps; schema 2
//! derives both from the WorkOS data. No in-place rewrite can turn one into
//! the other, so the migration is a rebuild through the one path that
//! already knows how: the old file is exported as NDJSON and imported into
//! a new file (ids and times derived as on every other path, links decided
//! by organization membership), then the bookkeeping that makes delivery
//! idempotent and monotonic — tombstones, seen event ids, held events, the
//! pull cursor, all keyed by WorkOS ids — is copied over as it was. The new
//! file is checked, synced and only then renamed into place.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use super::ndjson::{self, NdjsonError};
use crate::store::{SCHEMA_VERSION, Store, StoreError, StoreOptions};

/// What a migration did.
#[derive(Debug, Clone)]
pub struct Migration {
    pub from_schema: u32,
    pub directories: u64,
    pub users: u64,
    pub groups: u64,
    /// Tombstones, seen event ids and held events carried over.
    pub bookkeeping: (usize, usize, usize),
    /// Where the old file was kept.
    pub kept: PathBuf,
}

/// Why a migration did not happen; the original file is untouched.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0} already uses schema {SCHEMA_VERSION}: nothing to migrate")]
    Current(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ndjson(#[from] NdjsonError),
    #[error("the rebuilt database does not match the old one: {0}")]
    Mismatch(String),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError {
    let path = path.to_owned();
    move |source| MigrateError::File { what, path, source }
}

/// Migrates the database at `path` to the current schema, keeping the old
/// file as `<path>.v<old schema>.bak`.
///
/// # Errors
/// A [`MigrateError`]; the original file is then untouched.
pub fn migrate(path: &Path) -> Result<Migration, MigrateError> {
    let (old, from_schema) = Store::open_to_migrate(path)?;
    if from_schema == SCHEMA_VERSION {
        return Err(MigrateError::Current(path.to_owned()));
    }
    let staging = sibling(path, "migrating");
    let export = sibling(path, "migrating.ndjson");
    let kept = sibling(path, &format!("v{from_schema}.bak"));
    for leftover in [&staging, &export] {
        let _ = std::fs::remove_file(leftover);
    }
    let result = rebuild(&old, &staging, &export);
    let _ = std::fs::remove_file(&export);
    let (exported, imported, bookkeeping) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
    };
    drop(old);
    if (exported.directories, exported.users, exported.groups)
        != (imported.directories, imported.users, imported.groups)
    {
        let _ = std::fs::remove_file(&staging);
        return Err(MigrateError::Mismatch(format!(
            "exported {:?}, imported {:?}",
            (exported.directories, exported.users, exported.groups),
            (imported.directories, imported.users, imported.groups)
        )));
    }
    std::fs::rename(path, &kept).map_err(file_error("cannot keep the old file as", &kept))?;
    std::fs::rename(&staging, path).map_err(file_error("cannot move the new file to", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(Migration {
        from_schema,
        directories: imported.directories,
        users: imported.users,
        groups: imported.groups,
        bookkeeping,
        kept,
    })
}

/// `<path>.<suffix>`, beside it.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

type Rebuilt = (
    ndjson::ExportReport,
    ndjson::ImportReport,
    (usize, usize, usize),
);

fn rebuild(old: &Store, staging: &Path, export: &Path) -> Result<Rebuilt, MigrateError> {
    let exported = {
        // Every organization's data passes through this file: owner-only.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(export)
            .map_err(file_error("cannot create", export))?;
        ndjson::export(old, &mut BufWriter::with_capacity(1 << 20, file), |_| {})?
    };
    let new = Store::open(staging, StoreOptions::default())?;
    let file = File::open(export).map_err(file_error("cannot read", export))?;
    let imported = ndjson::import(&new, BufReader::with_capacity(1 << 20, file), |_| {})?;
    let bookkeeping = old.snapshot()?.bookkeeping()?;
    let counts = bookkeeping.counts();
    new.write(|tx| tx.restore_bookkeeping(&bookkeeping))?;
    Ok((exported, imported, counts))
}
