//! The read side without HTTP: scanning a directory's pre-rendered users,
//! encoding a whole list, and what a page costs by its position.

mod common;

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rollcall::api::lists::{ListKind, ListParams, render};
use rollcall::store::ListQuery;

fn scan_and_encode(c: &mut Criterion) {
    let data = common::loaded(100_000);
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("scan 100k users (visit_user_json)", |b| {
        b.iter(|| {
            let snapshot = data.store.snapshot().unwrap();
            let mut bytes = 0usize;
            snapshot
                .visit_user_json(data.directory, &ListQuery::default(), |_, json| {
                    bytes += json.len();
                    ControlFlow::Continue(())
                })
                .unwrap();
            black_box(bytes)
        })
    });
    group.finish();

    let small = common::loaded(1_000);
    let mut group = c.benchmark_group("encoding");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("render the 1,000-user list body", |b| {
        b.iter(|| {
            let page = render(
                &small.store,
                ListKind::Users,
                small.directory,
                common::dataset::ORG,
                &ListParams::default(),
                true,
            )
            .unwrap();
            black_box(page.expect("under the render cap").body.len())
        })
    });
    group.finish();
}

fn page_position(c: &mut Criterion) {
    let n = common::big_n();
    let data = common::loaded(n);
    // The id of the user at 90% of the directory.
    let mut at = None;
    let target = n * 9 / 10;
    let mut i = 0;
    data.store
        .snapshot()
        .unwrap()
        .visit_user_json(data.directory, &ListQuery::default(), |id, _| {
            i += 1;
            if i == target {
                at = Some(id);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let mut group = c.benchmark_group(format!("page of 100 in {n} users"));
    for (name, after) in [("first page", None), ("page at 90%", at)] {
        let params = ListParams {
            limit: Some(100),
            after,
            ..ListParams::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let page = render(
                    &data.store,
                    ListKind::Users,
                    data.directory,
                    common::dataset::ORG,
                    &params,
                    true,
                )
                .unwrap();
                black_box(page.expect("under the render cap").body.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scan_and_encode, page_position);
criterion_main!(benches);
