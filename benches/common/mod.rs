//! Shared setup for the criterion benches: a store in a temp dir loaded with
//! the synthetic dataset of `examples/common/dataset.rs`.

#![allow(dead_code)]

// The same allocator as the rollcall binary, so numbers match what it does.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "../../examples/common/dataset.rs"]
pub mod dataset;

use std::sync::Arc;

use rollcall::model::DirectoryId;
use rollcall::store::{Store, StoreOptions};
use tempfile::TempDir;

pub struct Loaded {
    pub store: Arc<Store>,
    pub directory: DirectoryId,
    /// Keeps the database file alive.
    pub dir: TempDir,
}

/// A fresh store holding one directory of `n` users.
pub fn loaded(n: u64) -> Loaded {
    let dir = TempDir::new().expect("temp dir");
    let store =
        Store::open(&dir.path().join("bench.redb"), StoreOptions::default()).expect("store");
    let mut ndjson = Vec::new();
    dataset::write(n, &mut ndjson).expect("dataset");
    rollcall::ingest::ndjson::import(&store, ndjson.as_slice(), |_| {}).expect("import");
    Loaded {
        store: Arc::new(store),
        directory: DirectoryId::parse(&dataset::directory_uuid()).expect("uuid"),
        dir,
    }
}

/// Users in the large benches (`ROLLCALL_BENCH_USERS`, default 1,000,000).
pub fn big_n() -> u64 {
    std::env::var("ROLLCALL_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
