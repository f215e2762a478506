//! Prints a benchmark dataset as rollcall NDJSON: `cargo run --release
//! --example dataset -- 100000 > users.ndjson`, then `rollcall import`.

mod common;

fn main() -> std::io::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    common::dataset::write(n, &mut out)
}
