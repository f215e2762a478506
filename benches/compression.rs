//! What compressing a user list body costs and gains: gzip (flate2 on
//! zlib-rs), zstd and brotli at a range of levels, on the plain body
//! `GET /api/directories/{id}/users` serves — a JSON array of Char user
//! objects exactly as the store holds them (`DirectoryUser::to_json`), from
//! the synthetic dataset of `examples/common/dataset.rs` (about 850 bytes a
//! user, deterministic). Bodies of 100,000, 1,000 and 10 users.
//!
//! `ROLLCALL_BENCH_TABLE=1 cargo bench --bench compression` prints a plain
//! table (size as % of the plain body, compression time and input MB/s,
//! decompression time; best of a few runs, one run when a call takes over
//! half a second) and exits; `cargo bench --bench compression` runs the
//! criterion groups (the slow levels, zstd 19 and brotli 11, are in the
//! table only).
//!
//! Measured once on a shared 2-core machine (others' builds running; the
//! absolute times are loose, the ratios exact) with
//! `ROLLCALL_BENCH_TABLE=1 cargo bench --bench compression`: plain bodies
//! of 83,978,314 bytes (100k users), 839,483 (1k) and 8,380 (10); times
//! are per body, so the 100k column is per 100,000 users.
//!
//! | codec   | 100k: % of plain | compress ms | MB/s in | decompress ms | 1k: % | compress ms | 10: % | compress µs |
//! |---------|-----:|------:|----:|----:|-----:|------:|-----:|------:|
//! | gzip-1  | 15.9% | 154 | 547 | 120 | 16.0% | 1.37 | 23.8% | 16 |
//! | gzip-3  | 11.3% | 268 | 313 | 115 | 11.4% | 2.63 | 18.6% | 35 |
//! | gzip-6  | 9.5% | 500 | 168 | 108 | 9.6% | 4.98 | 17.1% | 41 |
//! | gzip-9  | 9.4% | 787 | 107 | 111 | 9.6% | 7.87 | 17.1% | 56 |
//! | zstd-1  | 10.2% | 90 | 937 | 69 | 10.4% | 0.87 | 17.6% | 19 |
//! | zstd-3  | 10.2% | 122 | 686 | 71 | 10.2% | 1.02 | 17.4% | 21 |
//! | zstd-6  | 9.5% | 477 | 176 | 69 | 9.4% | 4.35 | 16.6% | 39 |
//! | zstd-9  | 9.0% | 858 | 98 | 72 | 8.7% | 6.19 | 16.6% | 55 |
//! | zstd-12 | 8.3% | 1,817 | 46 | 69 | 8.2% | 9.92 | 16.7% | 217 |
//! | zstd-19 | 6.6% | 47,272 | 2 | 68 | 7.2% | 297.76 | 16.5% | 2,513 |
//! | br-1    | 25.5% | 561 | 150 | 215 | 25.5% | 5.14 | 26.6% | 42 |
//! | br-4    | 11.8% | 975 | 86 | 120 | 10.3% | 5.82 | 16.6% | 441 |
//! | br-5    | 8.9% | 1,403 | 60 | 113 | 9.0% | 9.84 | 15.6% | 548 |
//! | br-9    | 8.0% | 4,652 | 18 | 116 | 8.1% | 43.20 | 15.3% | 2,781 |
//! | br-11   | 6.3% | 164,229 | 1 | 119 | 6.8% | 1297.13 | 14.4% | 10,167 |
//!
//! Decompression of the 1k body: 0.17-0.24 ms zstd, 0.6-0.7 ms gzip,
//! 0.9 ms brotli (2.7 ms at level 1); of the 10-user body about 10 µs
//! for all. Brotli 4+ on a tiny body pays for its window setup (0.4 ms
//! for 8 KB at level 4, where zstd-3 takes 21 µs).
//!
//! The criterion run right after (`cargo bench --bench compression`, 10
//! min 24 s on the same machine) agreed within 5-15% (100k medians:
//! zstd-1 97 ms, zstd-3 135 ms, gzip-1 170 ms, gzip-6 572 ms, br-5 1.26 s;
//! decompression 77-85 ms zstd, 112-137 ms gzip, 124-141 ms br-4+).
//!
//! zstd's levels here all keep its window at or under 8 MiB (level 19 uses
//! exactly 8 MiB on large inputs), the most an HTTP `Content-Encoding: zstd`
//! decoder must accept (RFC 9659); brotli runs with a 4 MiB window
//! (`lgwin` 22), the usual default.

mod common;

use std::hint::black_box;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
};
use rollcall::store::ListQuery;

/// A codec at one level.
#[derive(Clone, Copy)]
enum Codec {
    Gzip(u32),
    Zstd(i32),
    Brotli(i32),
}

/// Every codec and level the table measures.
const ALL: [Codec; 15] = [
    Codec::Gzip(1),
    Codec::Gzip(3),
    Codec::Gzip(6),
    Codec::Gzip(9),
    Codec::Zstd(1),
    Codec::Zstd(3),
    Codec::Zstd(6),
    Codec::Zstd(9),
    Codec::Zstd(12),
    Codec::Zstd(19),
    Codec::Brotli(1),
    Codec::Brotli(4),
    Codec::Brotli(5),
    Codec::Brotli(9),
    Codec::Brotli(11),
];

impl Codec {
    fn name(self) -> String {
        match self {
            Codec::Gzip(l) => format!("gzip-{l}"),
            Codec::Zstd(l) => format!("zstd-{l}"),
            Codec::Brotli(l) => format!("br-{l}"),
        }
    }

    /// Too slow on 85 MB for criterion's repeated samples.
    fn slow(self) -> bool {
        matches!(self, Codec::Zstd(19) | Codec::Brotli(11))
    }

    fn compress(self, plain: &[u8]) -> Vec<u8> {
        match self {
            Codec::Gzip(level) => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(plain.len() / 8),
                    flate2::Compression::new(level),
                );
                e.write_all(plain).expect("gzip");
                e.finish().expect("gzip")
            }
            Codec::Zstd(level) => zstd::bulk::compress(plain, level).expect("zstd"),
            Codec::Brotli(quality) => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality,
                    lgwin: 22,
                    size_hint: plain.len(),
                    ..Default::default()
                };
                let mut out = Vec::with_capacity(plain.len() / 8);
                brotli::BrotliCompress(&mut &plain[..], &mut out, &params).expect("brotli");
                out
            }
        }
    }

    fn decompress(self, packed: &[u8], plain_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain_len);
        match self {
            Codec::Gzip(_) => {
                flate2::read::GzDecoder::new(packed)
                    .read_to_end(&mut out)
                    .expect("gunzip");
            }
            Codec::Zstd(_) => {
                out = zstd::bulk::decompress(packed, plain_len).expect("unzstd");
            }
            Codec::Brotli(_) => {
                brotli::BrotliDecompress(&mut &packed[..], &mut out).expect("unbrotli");
            }
        }
        out
    }
}

/// Each user's Char JSON, in list order, for 100,000 users: what the store
/// hands the list renderer.
fn users() -> &'static [Vec<u8>] {
    static USERS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    USERS.get_or_init(|| {
        let data = common::loaded(100_000);
        let mut users = Vec::with_capacity(100_000);
        data.store
            .snapshot()
            .expect("snapshot")
            .visit_user_json(data.directory, &ListQuery::default(), |_, json| {
                users.push(json.to_vec());
                ControlFlow::Continue(())
            })
            .expect("visit");
        assert_eq!(users.len(), 100_000);
        users
    })
}

/// The plain list body of the first `n` users, as `lists::render` makes it.
fn body(n: usize) -> Vec<u8> {
    let users = &users()[..n];
    let mut out = Vec::with_capacity(2 + users.iter().map(|u| u.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, u) in users.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(u);
    }
    out.push(b']');
    out
}

const SIZES: [usize; 3] = [100_000, 1_000, 10];

/// The best time of `f` over a few runs (one run when it takes over half a
/// second; short calls are timed in batches of about 50 ms).
fn best_time(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    let first = start.elapsed();
    if first > Duration::from_millis(500) {
        return first;
    }
    let batch = (50_000_000 / first.as_nanos().max(1)).clamp(1, 1_000_000) as u32;
    let until = Instant::now() + Duration::from_millis(800);
    let mut best = first;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        best = best.min(t.elapsed() / batch);
        if Instant::now() > until {
            break;
        }
    }
    best
}

fn table() {
    for n in SIZES {
        let plain = body(n);
        let mb = plain.len() as f64 / 1e6;
        println!(
            "\n{n} users: plain body {} bytes ({:.1} bytes a user)",
            plain.len(),
            plain.len() as f64 / n as f64
        );
        println!("| codec    | bytes      | % of plain | compress ms | MB/s in | decompress ms |");
        println!("|----------|-----------:|-----------:|------------:|--------:|--------------:|");
        for codec in ALL {
            let packed = codec.compress(&plain);
            assert_eq!(codec.decompress(&packed, plain.len()), plain, "round trip");
            let c = best_time(|| {
                black_box(codec.compress(black_box(&plain)));
            });
            let d = best_time(|| {
                black_box(codec.decompress(black_box(&packed), plain.len()));
            });
            println!(
                "| {:<8} | {:>10} | {:>9.2}% | {:>11.3} | {:>7.0} | {:>13.3} |",
                codec.name(),
                packed.len(),
                100.0 * packed.len() as f64 / plain.len() as f64,
                c.as_secs_f64() * 1e3,
                mb / c.as_secs_f64(),
                d.as_secs_f64() * 1e3,
            );
        }
    }
}

/// Few samples, short windows: the whole run stays within minutes on a
/// shared machine. On 85 MB one call is up to seconds, so every sample is
/// the same one iteration (flat) instead of criterion's 1, 2 … 10.
fn lean(group: &mut BenchmarkGroup<'_, WallTime>, n: usize, bytes: usize) {
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    if n >= 100_000 {
        group.sampling_mode(SamplingMode::Flat);
    }
}

fn compression(c: &mut Criterion) {
    for n in SIZES {
        let plain = body(n);
        let mut group = c.benchmark_group(format!("compress {n} users"));
        lean(&mut group, n, plain.len());
        for codec in ALL.into_iter().filter(|c| !c.slow()) {
            group.bench_with_input(BenchmarkId::from_parameter(codec.name()), &plain, |b, p| {
                b.iter(|| codec.compress(p))
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("decompress {n} users"));
        lean(&mut group, n, plain.len());
        for codec in ALL.into_iter().filter(|c| !c.slow()) {
            let packed = codec.compress(&plain);
            group.bench_with_input(
                BenchmarkId::from_parameter(codec.name()),
                &packed,
                |b, p| b.iter(|| codec.decompress(p, plain.len())),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, compression);

fn main() {
    if std::env::var_os("ROLLCALL_BENCH_TABLE").is_some_and(|v| v == "1") {
        table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
