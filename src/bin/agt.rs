//! The `agt` executable: the CLI, and (`agt daemon run`) the daemon itself.
//! Exit codes are documented in `agt::cli`: 0 ok, 1 the daemon answered an error,
//! 2 usage error, 3 the daemon cannot be reached.

use std::process::ExitCode;

/// jemalloc instead of glibc's malloc. The order path allocates in sizes past glibc's
/// per-thread cache (SQLite's page splits, hyper's and axum's buffers and boxed
/// futures, a few KiB each); glibc serves those from shared bins and consolidates its
/// free lists for each, ~10 % of the daemon's CPU at C = 32. With jemalloc: 4 % fewer
/// instructions per order (HTTP workers 12 %), 17.8–18.3 k orders/s against
/// 15.9–17.6 k in four pairs, p50 at 10,000/s 10 % lower, idle RSS 24.6 MB instead of
/// 22.2 MB and less after load (BENCHMARKS.md, session 23).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    agt::cli::main()
}
