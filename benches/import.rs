//! Bulk import throughput, and for reference the ceiling of the storage
//! engine itself: raw redb inserting rows of the same size with the same two
//! index entries (what rollcall's import can at best approach on a machine).

mod common;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redb::{Database, TableDefinition};
use rollcall::store::{Store, StoreOptions};
use tempfile::TempDir;

const N: u64 = 50_000;

fn import(c: &mut Criterion) {
    let mut ndjson = Vec::new();
    common::dataset::write(N, &mut ndjson).unwrap();
    let mut group = c.benchmark_group("import");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N));
    group.bench_function("rollcall import, 50k users (one transaction)", |b| {
        b.iter_batched(
            || TempDir::new().unwrap(),
            |dir| {
                let store =
                    Store::open(&dir.path().join("i.redb"), StoreOptions::default()).unwrap();
                let report =
                    rollcall::ingest::ndjson::import(&store, ndjson.as_slice(), |_| {}).unwrap();
                black_box(report.users);
                drop(store);
                dir
            },
            BatchSize::PerIteration,
        )
    });

    const ROWS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("rows");
    const BY_ID: TableDefinition<&str, (u128, u128)> = TableDefinition::new("by_id");
    const BY_EMAIL: TableDefinition<(&str, u128, u128), ()> = TableDefinition::new("by_email");
    let row = vec![7u8; 1000];
    group.bench_function("raw redb ceiling: 50k 1 KB rows + 2 index entries", |b| {
        b.iter_batched(
            || TempDir::new().unwrap(),
            |dir| {
                let mut builder = Database::builder();
                builder.set_cache_size(32 << 20);
                let db = builder.create(dir.path().join("r.redb")).unwrap();
                let tx = db.begin_write().unwrap();
                {
                    let mut rows = tx.open_table(ROWS).unwrap();
                    let mut by_id = tx.open_table(BY_ID).unwrap();
                    let mut by_email = tx.open_table(BY_EMAIL).unwrap();
                    for k in 0..u128::from(N) {
                        rows.insert((1, k), row.as_slice()).unwrap();
                        let id = format!("directory_user_01HBENCH{k:018}");
                        by_id.insert(id.as_str(), (1, k)).unwrap();
                        let email = format!("{}.user{k}@example.test", k * 2_654_435_761 % 1000);
                        by_email.insert((email.as_str(), 1, k), ()).unwrap();
                    }
                }
                tx.commit().unwrap();
                drop(db);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
