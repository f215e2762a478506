//! Whole list bodies, kept ready to send.
//!
//! A directory's full user (or group) list is cached as one `Bytes`, tagged
//! with the directory's revision — which every write touching the directory
//! bumps — so a hit is a pointer copy and an outdated entry is never served.
//! The cache is bounded in bytes and evicts the least recently used entry.
//! Lists too large to cache are streamed instead (see `lists.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::lists::ListKind;
use crate::model::DirectoryId;

struct Entry {
    revision: u64,
    body: Bytes,
    last_used: u64,
}

struct Inner {
    entries: HashMap<(DirectoryId, ListKind), Entry>,
    bytes: usize,
    clock: u64,
}

/// A byte-bounded LRU of list bodies.
pub struct BodyCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl BodyCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            max_bytes,
        }
    }

    /// The largest body worth caching: a quarter of the budget.
    pub fn max_entry(&self) -> usize {
        self.max_bytes / 4
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body of `(dir, kind)` at exactly `revision`, if cached.
    pub fn get(&self, dir: DirectoryId, kind: ListKind, revision: u64) -> Option<Bytes> {
        let found = self.lookup(dir, kind, revision);
        crate::metrics::METRICS.cache_lookup(found.is_some());
        found
    }

    fn lookup(&self, dir: DirectoryId, kind: ListKind, revision: u64) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(&(dir, kind))?;
        if entry.revision != revision {
            return None;
        }
        entry.last_used = now;
        Some(entry.body.clone())
    }

    /// Bytes of bodies held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Caches a body rendered at `revision` (an older revision never
    /// replaces a newer one).
    pub fn put(&self, dir: DirectoryId, kind: ListKind, revision: u64, body: Bytes) {
        if body.len() > self.max_entry() {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.get(&(dir, kind)) {
            if old.revision > revision {
                return;
            }
            let old_len = old.body.len();
            inner.bytes -= old_len;
        }
        inner.bytes += body.len();
        inner.entries.insert(
            (dir, kind),
            Entry {
                revision,
                body,
                last_used: now,
            },
        );
        while inner.bytes > self.max_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.body.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_the_current_revision_and_stays_within_budget() {
        let cache = BodyCache::new(400);
        let (a, b, c) = (
            DirectoryId::new_v7(),
            DirectoryId::new_v7(),
            DirectoryId::new_v7(),
        );
        cache.put(a, ListKind::Users, 1, Bytes::from(vec![b'a'; 100]));
        assert!(cache.get(a, ListKind::Users, 1).is_some());
        assert!(
            cache.get(a, ListKind::Users, 2).is_none(),
            "revision moved on"
        );
        assert!(cache.get(a, ListKind::Groups, 1).is_none());
        cache.put(a, ListKind::Users, 0, Bytes::from(vec![b'x'; 10]));
        assert_eq!(
            cache.get(a, ListKind::Users, 1).unwrap().len(),
            100,
            "older never replaces newer"
        );

        cache.put(b, ListKind::Users, 1, Bytes::from(vec![b'b'; 100]));
        cache.get(a, ListKind::Users, 1);
        cache.put(c, ListKind::Users, 1, Bytes::from(vec![b'c'; 100]));
        cache.put(c, ListKind::Groups, 1, Bytes::from(vec![b'c'; 100]));
        cache.put(b, ListKind::Groups, 1, Bytes::from(vec![b'b'; 100]));
        assert!(cache.lock().bytes <= 400);
        assert!(
            cache.get(a, ListKind::Users, 1).is_some(),
            "recently used survives"
        );
        assert!(
            cache.get(b, ListKind::Users, 1).is_none(),
            "least recently used went first"
        );
        cache.put(a, ListKind::Users, 5, Bytes::from(vec![b'a'; 101]));
        assert!(
            cache.get(a, ListKind::Users, 5).is_none(),
            "larger than a quarter: not cached"
        );
    }
}
