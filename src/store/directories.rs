//! An in-memory copy of every directory record, kept by the store.
//!
//! Directories are few and small, and every API request starts by asking
//! "does this directory exist, and whose is it?". Answering that from memory
//! keeps the hot path off redb and off the blocking pool, and makes a hit and
//! a miss cost the same (an unknown id and another organization's id are
//! indistinguishable in timing as well as in body).
//!
//! The map is loaded once at open and changed only by [`super::Store::write`]
//! after a successful commit, with the final records of the transaction, so
//! it never holds what the file does not. Users are never loaded.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::model::{Directory, DirectoryId};

#[derive(Default)]
struct Inner {
    by_id: HashMap<DirectoryId, Arc<Directory>>,
    /// `(organization, id)`: an organization's directories in creation order.
    by_org: BTreeSet<(String, DirectoryId)>,
    by_workos: HashMap<String, DirectoryId>,
}

/// What a committed transaction did to directories.
pub(super) type DirectoryChanges = Vec<(DirectoryId, Option<Directory>)>;

#[derive(Default)]
pub(super) struct DirectoryMap {
    inner: RwLock<Inner>,
}

impl DirectoryMap {
    pub(super) fn load(all: Vec<Directory>) -> Self {
        let map = Self::default();
        map.apply(all.into_iter().map(|d| (d.id, Some(d))).collect());
        map
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, id: DirectoryId) -> Option<Arc<Directory>> {
        self.read().by_id.get(&id).cloned()
    }

    pub(super) fn by_workos(&self, workos_id: &str) -> Option<Arc<Directory>> {
        let inner = self.read();
        inner
            .by_workos
            .get(workos_id)
            .and_then(|id| inner.by_id.get(id))
            .cloned()
    }

    pub(super) fn of_org(&self, org: &str) -> Vec<Arc<Directory>> {
        let inner = self.read();
        let start = (org.to_owned(), DirectoryId::from_u128(0));
        inner
            .by_org
            .range(start..)
            .take_while(|(o, _)| o == org)
            .filter_map(|(_, id)| inner.by_id.get(id).cloned())
            .collect()
    }

    /// Directories, and their users and groups added up (from each
    /// directory's own counts: no scan).
    pub(super) fn totals(&self) -> (u64, u64, u64) {
        let inner = self.read();
        inner
            .by_id
            .values()
            .fold((inner.by_id.len() as u64, 0, 0), |(d, u, g), dir| {
                (d, u + dir.user_count, g + dir.group_count)
            })
    }

    /// Replaces everything (after the database was reopened).
    pub(super) fn replace(&self, all: Vec<Directory>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *inner = Inner::default();
        drop(inner);
        self.apply(all.into_iter().map(|d| (d.id, Some(d))).collect());
    }

    /// Applies a committed transaction's directory changes.
    pub(super) fn apply(&self, changes: DirectoryChanges) {
        if changes.is_empty() {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for (id, record) in changes {
            if let Some(old) = inner.by_id.remove(&id) {
                inner.by_org.remove(&(old.organization_id.clone(), id));
                inner.by_workos.remove(&old.workos_directory_id);
            }
            if let Some(d) = record {
                inner.by_org.insert((d.organization_id.clone(), id));
                inner.by_workos.insert(d.workos_directory_id.clone(), id);
                inner.by_id.insert(id, Arc::new(d));
            }
        }
    }
}
