//! Recycled buffers for streamed lists.
//!
//! A stream owns a few chunk buffers and hands each to hyper as `Bytes`;
//! when hyper has written and dropped a chunk, its buffer comes back to the
//! stream for the next one. Memory per stream is therefore fixed (chunks ×
//! chunk size), there is no allocation per chunk, and the allocator has
//! nothing to fragment: with fresh 256 KiB allocations per chunk, glibc's
//! per-thread arenas held 8–14 MB per concurrent stream.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use bytes::Bytes;

/// The buffers of one stream.
pub struct ChunkPool {
    home: SyncSender<Vec<u8>>,
    returned: Receiver<Vec<u8>>,
    allocated: usize,
    max: usize,
    size: usize,
}

struct Pooled {
    buf: Vec<u8>,
    home: SyncSender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // The stream may be over (receiver gone): the buffer is then freed.
        let _ = self.home.try_send(buf);
    }
}

impl ChunkPool {
    /// A pool of at most `max` buffers of `size` bytes.
    pub fn new(max: usize, size: usize) -> Self {
        let (home, returned) = sync_channel(max);
        Self {
            home,
            returned,
            allocated: 0,
            max: max.max(1),
            size,
        }
    }

    /// The capacity each buffer starts with.
    pub fn chunk_size(&self) -> usize {
        self.size
    }

    /// An empty buffer: a returned one, a new one while under the limit, or
    /// the next one returned within `wait` (None: the reader has stalled).
    pub fn take(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if let Ok(buf) = self.returned.try_recv() {
            return Some(buf);
        }
        if self.allocated < self.max {
            self.allocated += 1;
            return Some(Vec::with_capacity(self.size));
        }
        self.returned.recv_timeout(wait).ok()
    }

    /// Wraps a filled buffer for hyper; it comes back here when dropped.
    pub fn seal(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            home: self.home.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_the_pool_never_exceeds_its_size() {
        let mut pool = ChunkPool::new(2, 16);
        let a = pool.take(Duration::ZERO).unwrap();
        let b = pool.take(Duration::ZERO).unwrap();
        assert!(
            pool.take(Duration::from_millis(10)).is_none(),
            "both out: stalled"
        );
        let mut a = a;
        a.extend_from_slice(b"hello");
        let sealed = pool.seal(a);
        assert_eq!(&sealed[..], b"hello");
        drop(sealed);
        let back = pool.take(Duration::ZERO).unwrap();
        assert!(
            back.is_empty() && back.capacity() >= 16,
            "returned, cleared, reused"
        );
        drop(b);
    }
}
