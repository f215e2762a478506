//! Large list bodies rendered into files, so that no client holds a
//! database snapshot while it reads.
//!
//! A long list read straight from a redb snapshot pins that snapshot for as
//! long as the client takes; every page a later write frees stays allocated
//! meanwhile, so one slow reader grows the database file for good. Instead,
//! a builder renders the list from a snapshot into a file at disk speed and
//! lets the snapshot go; readers stream the file, following it while it is
//! still being written (the first byte leaves as soon as the first chunk is
//! on disk, not after the whole list).
//!
//! - **Shared bodies**: the plain list of a directory (users or groups) is
//!   kept per directory revision and served to every request for it until a
//!   write bumps the revision, which retires the file.
//! - **Private bodies**: a filtered list too large to render in memory is
//!   spooled the same way for the one request that asked for it.
//! - **Compressed bodies**: a shared body in gzip or zstd is compressed
//!   from the plain one (following it while it is written) into a file of
//!   its own, kept and retired with it.
//!
//! Every file is anonymous (created and unlinked at once, in the data
//! folder): nothing is left behind by a crash, and a retired file's space
//! is freed when its last reader is done; whatever else is found in the
//! folder at start is removed. Disk use is bounded by a budget:
//! shared files are evicted least recently used first, and a body that
//! would not fit is refused (the caller falls back or answers 503).
//!
//! This module renders through [`crate::store::Snapshot`] and never holds
//! one longer than [`MAX_SNAPSHOT_HOLD`]; it knows nothing of HTTP beyond
//! the chunks it hands to a response stream.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OnceCell, oneshot, watch};
use uuid::Uuid;

use super::chunks::ChunkPool;
use super::encoding::{Compressor, Encoding, PIECE};
use super::lists::ListKind;
use crate::model::DirectoryId;
use crate::store::{ListQuery, Store, StoreError};

/// The longest a builder keeps its snapshot: past it the build is abandoned
/// (its readers see a truncated body) rather than pin the database.
pub const MAX_SNAPSHOT_HOLD: Duration = Duration::from_secs(30);
/// Bytes written between two progress reports to readers.
const FLUSH_BYTES: usize = 1024 * 1024;
/// Size assumed per record before a list of that kind has been measured.
const DEFAULT_RECORD_BYTES: u64 = 1024;
/// What a compressed body is reserved, as a share of the plain one's
/// estimate (measured: 10–16%).
const COMPRESSED_SHARE: u64 = 4;

/// How far a body file has been written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes on disk, readable by anyone.
    pub written: u64,
    pub state: BuildState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildState {
    Building,
    Done,
    /// The build failed or took too long: readers must abort.
    Failed,
}

/// One rendered body on disk, complete or still being written.
pub struct BodyFile {
    file: File,
    /// The directory revision the body was rendered at.
    pub revision: u64,
    /// The list's digest at that revision (what its ETag is made of).
    pub digest: u128,
    progress: watch::Receiver<Progress>,
    /// Disk this body is counted for in the budget (its builder grows it).
    reservation: Arc<Reservation>,
}

impl BodyFile {
    /// How far the file has been written.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// The body's length, once it is complete.
    pub fn complete_len(&self) -> Option<u64> {
        let p = self.progress();
        (p.state == BuildState::Done).then_some(p.written)
    }

    /// A receiver of the build's progress, to follow it.
    pub fn follow(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    fn failed(&self) -> bool {
        self.progress().state == BuildState::Failed
    }

    /// Asks the kernel to read `len` bytes from `offset` into the page
    /// cache ahead of their `sendfile`, so the event loop sending them does
    /// not wait on the disk.
    pub fn will_need(&self, offset: u64, len: usize) {
        #[cfg(target_os = "linux")]
        if let Some(len) = std::num::NonZeroU64::new(len as u64) {
            let _ =
                rustix::fs::fadvise(&self.file, offset, Some(len), rustix::fs::Advice::WillNeed);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }
}

impl crate::net::sendfile::Source for BodyFile {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }
}

/// Why a body could not be put on disk.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory is gone or belongs to another organization.
    #[error("no such directory")]
    NotFound,
    /// The body would not fit in the disk budget.
    #[error("the body does not fit in the body-file budget")]
    NoRoom,
    #[error("cannot create a body file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Disk counted against the budget while a body exists: an estimate at
/// first, grown by the builder to cover what it writes.
struct Reservation {
    files: Arc<BodyFiles>,
    bytes: AtomicU64,
    /// The organization a private body is counted to.
    private_to: Option<String>,
}

impl Reservation {
    /// Grows the reservation to cover `written` bytes (with an eighth more,
    /// so it is not grown at every flush); false when the budget (or the
    /// organization's share of it) has no room for them.
    fn cover(&self, written: u64) -> bool {
        let have = self.bytes.load(Ordering::Relaxed);
        if written <= have {
            return true;
        }
        let files = &self.files;
        let mut inner = files.lock();
        let held = self
            .private_to
            .as_ref()
            .map_or(0, |org| inner.private.get(org).copied().unwrap_or(0));
        let fits = |to: u64| {
            inner.reserved - have + to <= files.budget
                && (self.private_to.is_none() || held - have + to <= files.private_per_org)
        };
        let Some(to) = [written.saturating_add(written / 8), written]
            .into_iter()
            .find(|to| fits(*to))
        else {
            return false;
        };
        inner.reserved = inner.reserved - have + to;
        if let Some(org) = &self.private_to {
            inner.private.insert(org.clone(), held - have + to);
        }
        self.bytes.store(to, Ordering::Relaxed);
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        let mut inner = self.files.lock();
        inner.reserved = inner.reserved.saturating_sub(bytes);
        if let Some(org) = &self.private_to
            && let Some(held) = inner.private.get_mut(org)
        {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                inner.private.remove(org);
            }
        }
    }
}

/// The error of a build that outgrew the disk budget.
fn over_budget() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "the body outgrew the body-file budget",
    )
}

struct Slot {
    /// The revision this slot was opened for.
    expected: u64,
    body: OnceCell<Arc<BodyFile>>,
    last_used: AtomicU64,
}

impl Slot {
    fn failed(&self) -> bool {
        self.body.get().is_some_and(|b| b.failed())
    }
}

#[derive(Default)]
struct Inner {
    shared: HashMap<(DirectoryId, ListKind, Encoding), Arc<Slot>>,
    /// Disk reserved by every body that still exists (shared or private,
    /// in the map or only held by readers).
    reserved: u64,
    /// Of that, what private bodies hold, per organization.
    private: HashMap<String, u64>,
    clock: u64,
    /// Bytes per record last measured, per kind.
    record_bytes: HashMap<ListKind, u64>,
    /// Bytes per record last measured, per list: a directory's own
    /// measure comes first (records differ in size between directories).
    list_record_bytes: HashMap<(DirectoryId, ListKind), u64>,
}

/// Body files of one server: where they live and how much disk they may use.
pub struct BodyFiles {
    dir: PathBuf,
    budget: u64,
    /// The most one organization's private bodies may hold together, so a
    /// tenant's filtered lists cannot take the disk from everyone else.
    private_per_org: u64,
    inner: Mutex<Inner>,
}

/// What a builder renders: which list of which directory, for whom.
struct Job {
    store: Arc<Store>,
    dir: DirectoryId,
    kind: ListKind,
    org: String,
    query: ListQuery,
}

impl BodyFiles {
    /// Body files in `dir` (created owner-only if missing), using at most
    /// `budget` bytes of disk, of which at most `private_per_org` for one
    /// organization's private bodies.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn new(dir: PathBuf, budget: u64, private_per_org: u64) -> std::io::Result<Arc<Self>> {
        crate::store::create_private_dir(&dir)?;
        clean(&dir)?;
        Ok(Arc::new(Self {
            dir,
            budget,
            private_per_org,
            inner: Mutex::new(Inner::default()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Disk reserved right now by every body that exists.
    pub fn reserved_bytes(&self) -> u64 {
        self.lock().reserved
    }

    /// The shared body of a directory's plain list at `revision` (or
    /// later) in `encoding`: the one on disk or being written, else a new
    /// one (a compressed one is made from the plain one). Bodies of
    /// directories whose revision has moved on are retired on the way.
    ///
    /// # Errors
    /// [`SpoolError`]: the directory is not the organization's, the body
    /// does not fit in the budget, or the file cannot be made.
    #[allow(clippy::too_many_arguments)]
    pub async fn shared(
        self: &Arc<Self>,
        store: &Arc<Store>,
        dir: DirectoryId,
        kind: ListKind,
        org: &str,
        revision: u64,
        count: u64,
        encoding: Encoding,
    ) -> Result<Arc<BodyFile>, SpoolError> {
        let job = Job {
            store: store.clone(),
            dir,
            kind,
            org: org.to_owned(),
            query: ListQuery::default(),
        };
        let plain = self
            .slot_body(store, (dir, kind, Encoding::Identity), revision, async {
                self.start(job, count, true).await
            })
            .await?;
        if encoding == Encoding::Identity {
            return Ok(plain);
        }
        let at = plain.revision;
        self.slot_body(store, (dir, kind, encoding), at, async {
            self.start_compressed(plain, (dir, kind), encoding, count)
                .await
        })
        .await
    }

    /// The body in the slot `key` at `revision` (or later), made by `make`
    /// when there is none. A failed plain body is made again; a failed
    /// compressed one is remembered until the revision moves on (its
    /// clients get the plain body instead of failing again and again).
    async fn slot_body(
        self: &Arc<Self>,
        store: &Store,
        key: (DirectoryId, ListKind, Encoding),
        revision: u64,
        make: impl std::future::Future<Output = Result<BodyFile, SpoolError>>,
    ) -> Result<Arc<BodyFile>, SpoolError> {
        // Slots leaving the map are dropped only after the lock is given
        // back: dropping the last reference to a body gives its
        // reservation back, which takes the lock again.
        let mut retired = Vec::new();
        let slot = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            // A write retires every body of the directory it touched:
            // readers still holding one finish; its space is freed after.
            let stale: Vec<_> = inner
                .shared
                .iter()
                .filter(|((d, _, _), slot)| {
                    let current = store.directory(*d).map(|d| d.revision);
                    let built = slot.body.get().map_or(slot.expected, |b| b.revision);
                    current.is_none_or(|c| c > built)
                })
                .map(|(key, _)| *key)
                .collect();
            retired.extend(stale.iter().filter_map(|key| inner.shared.remove(key)));
            let slot = inner
                .shared
                .get(&key)
                .filter(|slot| slot.body.get().map_or(slot.expected, |b| b.revision) >= revision)
                .filter(|slot| key.2 != Encoding::Identity || !slot.failed())
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(Slot {
                        expected: revision,
                        body: OnceCell::new(),
                        last_used: AtomicU64::new(now),
                    })
                });
            slot.last_used.store(now, Ordering::Relaxed);
            retired.extend(inner.shared.insert(key, slot.clone()));
            slot
        };
        if !retired.is_empty() {
            // Closing a retired file frees its pages (tens of megabytes):
            // not on an event loop.
            tokio::task::spawn_blocking(move || drop(retired));
        }
        if slot.failed() {
            return Err(SpoolError::NoRoom);
        }
        let body = slot
            .body
            .get_or_try_init(|| async { make.await.map(Arc::new) })
            .await
            .cloned();
        if body.is_err() {
            // A slot whose build never started is forgotten, so the next
            // request tries again.
            let mut inner = self.lock();
            let forgotten = inner
                .shared
                .get(&key)
                .is_some_and(|s| Arc::ptr_eq(s, &slot))
                .then(|| inner.shared.remove(&key));
            drop(inner);
            drop(forgotten);
        }
        body
    }

    /// A private body for one request: `query` applied to the list.
    ///
    /// # Errors
    /// As [`BodyFiles::shared`].
    pub async fn private(
        self: &Arc<Self>,
        store: &Arc<Store>,
        dir: DirectoryId,
        kind: ListKind,
        org: &str,
        query: ListQuery,
        count: u64,
    ) -> Result<Arc<BodyFile>, SpoolError> {
        let job = Job {
            store: store.clone(),
            dir,
            kind,
            org: org.to_owned(),
            query,
        };
        self.start(job, count, false).await.map(Arc::new)
    }

    /// Reserves disk for a list of `count` records (`1/share` of it; a
    /// private body: counted to `private_to`), evicting shared bodies least
    /// recently used first if needed — never those of the list `spare`
    /// (what a compressed body is being made from).
    fn reserve(
        self: &Arc<Self>,
        dir: DirectoryId,
        kind: ListKind,
        count: u64,
        share: u64,
        private_to: Option<&str>,
        spare: Option<(DirectoryId, ListKind)>,
    ) -> Result<Arc<Reservation>, SpoolError> {
        let mut evicted = Vec::new();
        let reservation = {
            let mut inner = self.lock();
            let per_record = inner
                .list_record_bytes
                .get(&(dir, kind))
                .or_else(|| inner.record_bytes.get(&kind))
                .copied()
                .unwrap_or(DEFAULT_RECORD_BYTES);
            let bytes = count.saturating_mul(per_record).saturating_add(2) / share.max(1);
            if bytes > self.budget {
                return Err(SpoolError::NoRoom);
            }
            if let Some(org) = private_to
                && inner.private.get(org).copied().unwrap_or(0) + bytes > self.private_per_org
            {
                return Err(SpoolError::NoRoom);
            }
            // Evicting only drops the map's reference: the space comes back
            // when the body's last reader is done, so evict what is needed
            // and count on it.
            let mut freeable: u64 = 0;
            while inner.reserved.saturating_sub(freeable) + bytes > self.budget {
                let oldest = inner
                    .shared
                    .iter()
                    .filter(|((d, k, _), _)| spare != Some((*d, *k)))
                    .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| *k);
                let Some(slot) = oldest.and_then(|k| inner.shared.remove(&k)) else {
                    break;
                };
                if let Some(body) = slot.body.get() {
                    freeable += body.reservation.bytes.load(Ordering::Relaxed);
                }
                evicted.push(slot);
            }
            if inner.reserved.saturating_sub(freeable) + bytes > self.budget {
                None
            } else {
                inner.reserved += bytes;
                if let Some(org) = private_to {
                    *inner.private.entry(org.to_owned()).or_default() += bytes;
                }
                Some(bytes)
            }
        };
        // Dropping evicted bodies (outside the lock) gives their
        // reservations back unless readers still hold them.
        drop(evicted);
        let bytes = reservation.ok_or(SpoolError::NoRoom)?;
        Ok(Arc::new(Reservation {
            files: self.clone(),
            bytes: AtomicU64::new(bytes),
            private_to: private_to.map(str::to_owned),
        }))
    }

    /// Remembers what a list of `kind` measured per record, for the next
    /// estimate.
    fn measured(&self, dir: DirectoryId, kind: ListKind, written: u64, records: u64) {
        if let Some(per_record) = written.checked_div(records) {
            let mut inner = self.lock();
            inner.record_bytes.insert(kind, per_record + 1);
            inner.list_record_bytes.insert((dir, kind), per_record + 1);
        }
    }

    /// Creates the file and starts its builder; returns once the builder
    /// holds its snapshot (so the body's revision is known).
    async fn start(
        self: &Arc<Self>,
        job: Job,
        count: u64,
        shared: bool,
    ) -> Result<BodyFile, SpoolError> {
        let private_to = (!shared).then(|| job.org.clone());
        let reservation = self.reserve(job.dir, job.kind, count, 1, private_to.as_deref(), None)?;
        let file = tempfile::tempfile_in(&self.dir)?;
        let writer = file.try_clone()?;
        let (ready, revision) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(Progress {
            written: 0,
            state: BuildState::Building,
        });
        let files = self.clone();
        let covering = reservation.clone();
        tokio::task::spawn_blocking(move || {
            match build(&job, &writer, ready, &progress_tx, &covering) {
                Ok(Some((written, records))) => {
                    // What this list's records measured is what the next
                    // estimate of its kind uses.
                    files.measured(job.dir, job.kind, written, records);
                    progress_tx.send_replace(Progress {
                        written,
                        state: BuildState::Done,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "rendering a list body to a file failed");
                    // Its readers are aborted: the space goes back at once.
                    let _ = writer.set_len(0);
                    progress_tx.send_modify(|p| p.state = BuildState::Failed);
                }
            }
        });
        let (revision, digest) = revision.await.map_err(|_| {
            SpoolError::Io(std::io::Error::other("the body builder stopped at start"))
        })??;
        Ok(BodyFile {
            file,
            revision,
            digest,
            progress,
            reservation,
        })
    }
}

impl BodyFiles {
    /// Creates the file of `plain` in `encoding` and starts compressing
    /// into it, following `plain` while it is still being written.
    async fn start_compressed(
        self: &Arc<Self>,
        plain: Arc<BodyFile>,
        plain_key: (DirectoryId, ListKind),
        encoding: Encoding,
        count: u64,
    ) -> Result<BodyFile, SpoolError> {
        let kind = plain_key.1;
        let spare = Some((plain_key.0, plain_key.1));
        let reservation = self.reserve(plain_key.0, kind, count, COMPRESSED_SHARE, None, spare)?;
        let covering = reservation.clone();
        let file = tempfile::tempfile_in(&self.dir)?;
        let writer = file.try_clone()?;
        let (progress_tx, progress) = watch::channel(Progress {
            written: 0,
            state: BuildState::Building,
        });
        let (revision, digest) = (plain.revision, plain.digest);
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            match compress_file(&handle, &plain, encoding, &writer, &progress_tx, &covering) {
                Ok(written) => {
                    progress_tx.send_replace(Progress {
                        written,
                        state: BuildState::Done,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, encoding = encoding.token(), "compressing a list body failed");
                    let _ = writer.set_len(0);
                    progress_tx.send_modify(|p| p.state = BuildState::Failed);
                }
            }
        });
        Ok(BodyFile {
            file,
            revision,
            digest,
            progress,
            reservation,
        })
    }
}

/// The writer into a body file: counts what passes through to the file
/// (what readers may read), and grows the reservation to cover it before
/// it lands, so no body file ever holds more than it is counted for.
struct Counted<'a> {
    file: &'a File,
    written: u64,
    reservation: &'a Reservation,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.reservation.cover(self.written + buf.len() as u64) {
            return Err(over_budget());
        }
        let n = (&*self.file).write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compresses `plain` into `file` in [`PIECE`]s, waiting for each piece to
/// be written when `plain` is still being built; reports what is on disk
/// after every piece. Returns the compressed length.
fn compress_file(
    handle: &tokio::runtime::Handle,
    plain: &BodyFile,
    encoding: Encoding,
    file: &File,
    progress: &watch::Sender<Progress>,
    reservation: &Reservation,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut source = plain.follow();
    // Written to the file in large pieces: the page cache then holds the
    // file in large folios, which sendfile sends measurably faster (a file
    // written 8–32 KiB at a time went out ~10% slower).
    let mut out = Compressor::new(
        encoding,
        std::io::BufWriter::with_capacity(
            FLUSH_BYTES,
            Counted {
                file,
                written: 0,
                reservation,
            },
        ),
    )?;
    let mut piece = vec![0u8; PIECE];
    let mut at = 0u64;
    loop {
        let p = *source.borrow_and_update();
        let ready = p.written - at;
        let done = p.state == BuildState::Done;
        if ready >= PIECE as u64 || (done && ready > 0) {
            let len = usize::try_from(ready).unwrap_or(PIECE).min(PIECE);
            plain.file.read_exact_at(&mut piece[..len], at)?;
            at += len as u64;
            out.write_piece(&piece[..len])?;
            let written = match &out {
                Compressor::Gzip(e) => e.get_ref().get_ref().written,
                Compressor::Zstd(e) => e.get_ref().get_ref().written,
            };
            progress.send_modify(|p| p.written = written);
            continue;
        }
        match p.state {
            BuildState::Done => {
                return Ok(out
                    .finish()?
                    .into_inner()
                    .map_err(std::io::IntoInnerError::into_error)?
                    .written);
            }
            BuildState::Failed => return Err(std::io::Error::other("the plain body failed")),
            BuildState::Building => {
                let changed = handle.block_on(async {
                    tokio::time::timeout(MAX_SNAPSHOT_HOLD, source.changed()).await
                });
                if !matches!(changed, Ok(Ok(()))) {
                    return Err(std::io::Error::other("the plain body stopped growing"));
                }
            }
        }
    }
}

/// Removes the files a body-file folder holds (left by an older version,
/// or put there by hand): every body file is anonymous, so none of them is
/// in use. Folders are left alone.
fn clean(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            tracing::warn!(path = %path.display(), "a folder in the body-file folder is left alone");
            continue;
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover body file");
        } else {
            tracing::info!(path = %path.display(), "removed a leftover body file");
        }
    }
    Ok(())
}

/// Renders the list into `file`: first tells `ready` the revision and the
/// list digest its snapshot reads (or why it cannot), then writes, reporting progress every
/// [`FLUSH_BYTES`]. Returns the bytes and records written, or `None` when
/// the build never started (the caller was told why through `ready`).
fn build(
    job: &Job,
    file: &File,
    ready: oneshot::Sender<Result<(u64, u128), SpoolError>>,
    progress: &watch::Sender<Progress>,
    reservation: &Reservation,
) -> Result<Option<(u64, u64)>, std::io::Error> {
    let opened = Instant::now();
    let snapshot = match job.store.snapshot() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(None);
        }
    };
    let version = match snapshot.directory(job.dir) {
        Ok(Some(d)) if d.organization_id == job.org => (
            d.revision,
            match job.kind {
                ListKind::Users => d.users_digest,
                ListKind::Groups => d.groups_digest,
            },
        ),
        Ok(_) => {
            let _ = ready.send(Err(SpoolError::NotFound));
            return Ok(None);
        }
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(None);
        }
    };
    if ready.send(Ok(version)).is_err() {
        return Ok(None);
    }
    let mut out = std::io::BufWriter::with_capacity(
        FLUSH_BYTES,
        Counted {
            file,
            written: 0,
            reservation,
        },
    );
    let (mut written, mut records) = (0u64, 0u64);
    let mut since_flush = 0usize;
    let mut failure: Option<std::io::Error> = None;
    out.write_all(b"[")?;
    written += 1;
    let visit = |_: Uuid, json: &[u8]| {
        let step = (|| {
            if records > 0 {
                out.write_all(b",")?;
                written += 1;
            }
            out.write_all(json)?;
            written += json.len() as u64;
            records += 1;
            since_flush += json.len() + 1;
            if since_flush >= FLUSH_BYTES {
                out.flush()?;
                since_flush = 0;
                progress.send_modify(|p| p.written = written);
                if opened.elapsed() > MAX_SNAPSHOT_HOLD {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "rendering took longer than the snapshot may be held",
                    ));
                }
            }
            Ok(())
        })();
        match step {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    let visited = match job.kind {
        ListKind::Users => snapshot.visit_user_json(job.dir, &job.query, visit),
        ListKind::Groups => snapshot.visit_group_json(job.dir, &job.query, visit),
    };
    drop(snapshot);
    visited.map_err(|e| std::io::Error::other(e.to_string()))?;
    let ended = match failure {
        Some(e) => Err(e),
        None => out.write_all(b"]").and_then(|()| out.flush()),
    };
    if let Err(e) = ended {
        if e.kind() == std::io::ErrorKind::StorageFull {
            // The next estimate for this list is what was measured.
            reservation
                .files
                .measured(job.dir, job.kind, written, records);
        }
        return Err(e);
    }
    Ok(Some((written + 1, records)))
}

/// Follows `body` as it is written, handing each new stretch to `next`
/// (given how far the file is written; it says what to send and how far
/// that goes, or why to stop) once `tx` has room for it. A client whose
/// `taken` bytes do not move for `stall` while `tx` is full is given up.
/// Returns why it stopped early, or `None` at the end of the body or when
/// the receiver is gone (the client left).
pub async fn follow<T>(
    body: &BodyFile,
    tx: &tokio::sync::mpsc::Sender<Result<T, std::io::Error>>,
    stall: Duration,
    taken: impl Fn() -> u64,
    mut next: impl FnMut(u64) -> Result<(T, u64), &'static str>,
) -> Option<&'static str> {
    let mut progress = body.follow();
    let mut at = 0u64;
    loop {
        let p = *progress.borrow_and_update();
        if at < p.written {
            // A slow reader keeps its stream as long as it takes bytes; one
            // that takes nothing for `stall` is dropped.
            let permit = loop {
                let before = taken();
                match tokio::time::timeout(stall, tx.reserve()).await {
                    Ok(Ok(permit)) => break permit,
                    Ok(Err(_)) => return None,
                    Err(_) if taken() == before => return Some("the reader stalled"),
                    Err(_) => {}
                }
            };
            match next(p.written) {
                Ok((item, to)) => {
                    permit.send(Ok(item));
                    at = to;
                }
                Err(why) => return Some(why),
            }
            continue;
        }
        match p.state {
            BuildState::Done => return None,
            BuildState::Failed => return Some("list could not be rendered"),
            BuildState::Building => {
                let changed = tokio::select! {
                    changed = tokio::time::timeout(MAX_SNAPSHOT_HOLD, progress.changed()) => changed,
                    () = tx.closed() => return None,
                };
                if !matches!(changed, Ok(Ok(()))) {
                    return Some("list could not be rendered");
                }
            }
        }
    }
}

/// Streams `body` into `send` chunk by chunk, following the file while it
/// is still being written. Runs on a blocking thread (`handle` drives the
/// waits). Stops when the client has gone, takes nothing for `stall`, or
/// after `grace` reads slower than `min_rate` bytes per second on average.
pub fn stream_file(
    handle: &tokio::runtime::Handle,
    body: &BodyFile,
    pool: &mut ChunkPool,
    pace: &Pace,
    send: &dyn Fn(Result<Bytes, std::io::Error>) -> bool,
) {
    use std::os::unix::fs::FileExt;
    let mut meter = Meter::new(*pace);
    let mut progress = body.progress.clone();
    let mut at = 0u64;
    loop {
        let p = *progress.borrow_and_update();
        if at < p.written {
            let Some(mut buf) = pool.take(pace.stall) else {
                return;
            };
            let want = usize::try_from(p.written - at)
                .unwrap_or(usize::MAX)
                .min(pool.chunk_size());
            buf.resize(want, 0);
            match body.file.read_exact_at(&mut buf, at) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading a body file failed");
                    send(Err(std::io::Error::other("list could not be read")));
                    return;
                }
            }
            at += want as u64;
            if !send(Ok(pool.seal(buf))) {
                return;
            }
            if meter.too_slow(Instant::now(), at) {
                tracing::info!(
                    bytes = at,
                    "dropping a list reader below the minimum transfer rate"
                );
                send(Err(std::io::Error::other("reader too slow")));
                return;
            }
            continue;
        }
        match p.state {
            BuildState::Done => return,
            BuildState::Failed => {
                send(Err(std::io::Error::other("list could not be rendered")));
                return;
            }
            BuildState::Building => {
                let changed = handle.block_on(async {
                    tokio::time::timeout(MAX_SNAPSHOT_HOLD, progress.changed()).await
                });
                if !matches!(changed, Ok(Ok(()))) {
                    send(Err(std::io::Error::other("list could not be rendered")));
                    return;
                }
            }
        }
    }
}

/// How slowly a client may read a streamed list.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// A client that takes nothing for this long is dropped.
    pub stall: Duration,
    /// The window the rate is measured over; none is checked before the
    /// first window has passed.
    pub grace: Duration,
    /// Bytes per second over the last window; 0 turns the check off.
    pub min_rate: u64,
}

/// What a stream has handed to its client over time, to tell a reader that
/// crawls from one that is merely slow to start. Measured over a sliding
/// window, not since the start: the first megabytes fill socket buffers at
/// once and would hide a crawl for minutes.
pub struct Meter {
    pace: Pace,
    started: Instant,
    /// `(when, bytes sent by then)`, oldest first, spanning about one window.
    marks: std::collections::VecDeque<(Instant, u64)>,
}

impl Meter {
    pub fn new(pace: Pace) -> Self {
        let now = Instant::now();
        Self {
            pace,
            started: now,
            marks: std::collections::VecDeque::from([(now, 0)]),
        }
    }

    /// Records that `sent` bytes have been handed over by `now`; returns
    /// whether the reader is below the minimum rate over the last window.
    pub fn too_slow(&mut self, now: Instant, sent: u64) -> bool {
        if self.pace.min_rate == 0 {
            return false;
        }
        self.marks.push_back((now, sent));
        let window = self.pace.grace;
        // Keep one mark at or before the window's start.
        while self.marks.len() > 2 && now.duration_since(self.marks[1].0) >= window {
            self.marks.pop_front();
        }
        if now.duration_since(self.started) < window {
            return false;
        }
        let (then, sent_then) = self.marks[0];
        let span = now
            .duration_since(then)
            .as_secs_f64()
            .max(window.as_secs_f64());
        ((sent - sent_then) as f64) < self.pace.min_rate as f64 * span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_over_a_sliding_window_after_the_first() {
        let pace = Pace {
            stall: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            min_rate: 100_000,
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut m = Meter::new(pace);
        m.started = t0;
        m.marks = std::collections::VecDeque::from([(t0, 0)]);
        // A burst into the socket buffers, then a crawl at 10 KB/s.
        assert!(!m.too_slow(at(1), 5_000_000), "a burst");
        for s in 2..10 {
            assert!(
                !m.too_slow(at(s), 5_000_000 + (s - 1) * 10_000),
                "first window: {s}"
            );
        }
        let mut cut = None;
        for s in 10..30 {
            if m.too_slow(at(s), 5_000_000 + (s - 1) * 10_000) {
                cut = Some(s);
                break;
            }
        }
        assert_eq!(
            cut,
            Some(11),
            "cut once a whole window crawled, despite the burst"
        );

        let mut steady = Meter::new(pace);
        steady.started = t0;
        steady.marks = std::collections::VecDeque::from([(t0, 0)]);
        for s in 1..60 {
            assert!(
                !steady.too_slow(at(s), s * 150_000),
                "150 KB/s is fine: {s}"
            );
        }
        let mut off = Meter::new(Pace {
            min_rate: 0,
            ..pace
        });
        assert!(!off.too_slow(at(100), 0));
    }
}
