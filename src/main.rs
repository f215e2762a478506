//! The `rollcall` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use rollcall::config::{Cli, LogFormat};

// jemalloc instead of glibc malloc: with glibc, blocking threads that read
// redb pages each kept a fragmented arena (a 100k-user list streamed to 8
// clients peaked at 131 MB RSS; 67 MB with jemalloc), and import's parse and
// write threads contended on cross-thread frees (1M users: 20 s; 12 s).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // A panic is caught where it can be (a request fails, a damaged file is
    // refused): report it as one log line, not a backtrace on stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal error");
    }));
    match rollcall::cli::run(cli.command, &cli.data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollcall: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("rollcall=info,warn"));
    // Colour codes only for a person at a terminal, never into a file or a
    // journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
