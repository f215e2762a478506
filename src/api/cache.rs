//! Whole list bodies, kept ready to send.
//!
//! A directory's full user (or group) list is cached as one `Bytes`, tagged
//! with the directory's revision — which every write touching the directory
//! bumps — so a hit is a pointer copy and an outdated entry is never served.
//! The cache is bounded in bytes and evicts the least recently used entry.
//! Lists too large to cache are streamed instead (see `lists.rs`).
//!
//! An entry also keeps the body's compressed codings once a client has
//! asked for them, counted in the same budget and gone with the revision.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::encoding::Encoding;
use super::lists::ListKind;
use crate::model::DirectoryId;

struct Entry {
    revision: u64,
    body: Bytes,
    /// The body in other codings, as asked for.
    coded: Vec<(Encoding, Bytes)>,
    last_used: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.body.len() + self.coded.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
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

    /// The body of `(dir, kind)` at exactly `revision` in `encoding`, if
    /// cached.
    pub fn get_coded(
        &self,
        dir: DirectoryId,
        kind: ListKind,
        revision: u64,
        encoding: Encoding,
    ) -> Option<Bytes> {
        let inner = self.lock();
        let entry = inner.entries.get(&(dir, kind))?;
        if entry.revision != revision {
            return None;
        }
        entry
            .coded
            .iter()
            .find(|(e, _)| *e == encoding)
            .map(|(_, b)| b.clone())
    }

    /// Keeps the body of `(dir, kind)` at `revision` in `encoding`, when
    /// that revision's plain body is cached.
    pub fn put_coded(
        &self,
        dir: DirectoryId,
        kind: ListKind,
        revision: u64,
        encoding: Encoding,
        body: Bytes,
    ) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&(dir, kind)) else {
            return;
        };
        if entry.revision != revision || entry.coded.iter().any(|(e, _)| *e == encoding) {
            return;
        }
        let len = body.len();
        entry.coded.push((encoding, body));
        inner.bytes += len;
        self.evict(&mut inner);
    }

    /// Drops least recently used entries until the budget holds.
    fn evict(&self, inner: &mut Inner) {
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
                inner.bytes -= e.bytes();
            }
        }
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
            if old.revision == revision {
                return;
            }
            let old_len = old.bytes();
            inner.bytes -= old_len;
        }
        inner.bytes += body.len();
        inner.entries.insert(
            (dir, kind),
            Entry {
                revision,
                body,
                coded: Vec::new(),
                last_used: now,
            },
        );
        self.evict(&mut inner);
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
        cache.put(a, ListKind::Users, 1, Bytes::from(vec![b'z'; 100]));
        assert_eq!(
            cache.get(a, ListKind::Users, 1).unwrap()[0],
            b'a',
            "the same revision is not rendered twice over its codings"
        );
        cache.put_coded(
            a,
            ListKind::Users,
            1,
            Encoding::Gzip,
            Bytes::from_static(b"gz"),
        );
        cache.put_coded(
            a,
            ListKind::Users,
            2,
            Encoding::Zstd,
            Bytes::from_static(b"zs"),
        );
        assert_eq!(
            cache
                .get_coded(a, ListKind::Users, 1, Encoding::Gzip)
                .as_deref(),
            Some(&b"gz"[..])
        );
        assert!(
            cache
                .get_coded(a, ListKind::Users, 1, Encoding::Zstd)
                .is_none(),
            "a coding of another revision is not kept"
        );
        let before = cache.bytes();
        cache.put(a, ListKind::Users, 2, Bytes::from(vec![b'a'; 10]));
        assert_eq!(
            cache.bytes(),
            before - 102 + 10,
            "codings leave with their revision"
        );
        assert!(
            cache
                .get_coded(a, ListKind::Users, 2, Encoding::Gzip)
                .is_none()
        );
        cache.put(a, ListKind::Users, 5, Bytes::from(vec![b'a'; 101]));
        assert!(
            cache.get(a, ListKind::Users, 5).is_none(),
            "larger than a quarter: not cached"
        );
    }
}
