//! Storage faults on demand, through redb's pluggable storage backend: a
//! file backend that can be told to fail like a full disk or a failing one.
//! Used by the fault-injection tests; in production no faults are attached
//! and the wrapper is never built.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// A switchboard of faults shared between a test and the store.
#[derive(Debug, Default)]
pub struct StorageFaults {
    disk_full: AtomicBool,
    /// Writes still to fail with EIO (0: none).
    failing_writes: AtomicI64,
    /// Syncs still to fail with EIO (0: none).
    failing_syncs: AtomicI64,
}

impl StorageFaults {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Like a full disk: the file cannot grow (ENOSPC); overwriting what is
    /// already allocated still works.
    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::SeqCst);
    }

    /// The next `n` writes fail with an I/O error.
    pub fn fail_next_writes(&self, n: i64) {
        self.failing_writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` fsyncs fail with an I/O error.
    pub fn fail_next_syncs(&self, n: i64) {
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    /// Every fault off.
    pub fn clear(&self) {
        self.set_disk_full(false);
        self.fail_next_writes(0);
        self.fail_next_syncs(0);
    }

    fn take(counter: &AtomicI64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 0).then(|| n - 1)
            })
            .is_ok()
    }
}

fn eio() -> io::Error {
    io::Error::other("injected I/O error")
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// A [`FileBackend`] that consults [`StorageFaults`] before writing.
#[derive(Debug)]
pub(super) struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<StorageFaults>,
}

impl FaultyBackend {
    pub(super) fn new(file: File, faults: Arc<StorageFaults>) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if self.faults.disk_full.load(Ordering::SeqCst) && len > self.inner.len()? {
            return Err(enospc());
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if StorageFaults::take(&self.faults.failing_syncs) {
            return Err(eio());
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if StorageFaults::take(&self.faults.failing_writes) {
            return Err(eio());
        }
        if self.faults.disk_full.load(Ordering::SeqCst)
            && offset + data.len() as u64 > self.inner.len()?
        {
            return Err(enospc());
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
