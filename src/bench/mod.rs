//! `agt bench`: the daemon's built-in load generator (DESIGN.md §5), like redis-benchmark
//! or pgbench.
//!
//! A run sets up its own world over the admin connection (the socket, or `--url` with an
//! admin token): K symbols `BENCH<tag><i>` (tick 0.01, lot 1) and, per connection, a
//! buyer funded with USD and a seller funded with every bench asset, with per-user risk
//! limits raised so that the run measures the order path rather than the limiter. Names
//! carry a random per-run tag, so runs never collide.
//!
//! Then C workers, each on ONE keep-alive HTTP/1.1 connection ([`conn::Conn`]), place
//! limit orders alternately buying and selling at the mid price ±2 ticks, so that about
//! half rest and half cross. Closed loop (default): each worker sends its next order as
//! soon as the last one is answered. Open loop (`--rate R`): order `i` is due at
//! `start + i/R`; a late order's latency counts from when it was due, so a slow daemon
//! cannot hide behind the load generator (coordinated omission).
//!
//! With `--cancels P`, a worker cancels P % of its orders that rest right after their
//! answer (`DELETE /api/orders/{id}`), as a market maker replacing quotes does; cancels
//! are reported with their own rate and latency, and a cancelled order must be found
//! cancelled.
//!
//! Afterwards every acknowledged order is looked up and compared with its placement
//! answer (a resting order may have filled further since; nothing may be missing or go
//! back), the fills on all bench orders must be twice the trades the answers reported, and
//! cash and assets summed over the bench users must equal what was deposited. Finally the
//! bench users' open orders are cancelled and a token made for the run is revoked.

mod catch_up;
pub mod conn;
mod cpu;
pub mod daemon_time;
mod load;
mod pacer;
pub mod report;

pub use report::Report;

use crate::client::{ClientError, Endpoint};

/// Which transport the load goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Http,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Orders in the measured phase.
    pub orders: u64,
    /// Connections, one worker each.
    pub concurrency: usize,
    pub symbols: usize,
    pub via: Via,
    /// Open loop at this many orders/s; `None` for closed loop.
    pub rate: Option<f64>,
    /// `/api/orders` or `/api/trading/orders`.
    pub route: String,
    /// Orders placed before measuring (closed loop), verified but not reported.
    pub warmup: u64,
    /// Percent (0-100) of the orders that rest which the worker cancels at once, on its
    /// connection: a market maker's flow of quotes and cancels.
    pub cancels: u8,
    /// Where setup and clean-up go: needs admin rights.
    pub control: Endpoint,
    /// Where the load goes. A TCP endpoint without a token gets an admin token made over
    /// `control` for the run (and revoked after it).
    pub load: Endpoint,
    /// Say what is happening on stderr.
    pub progress: bool,
    /// Seeds the order mix (sides, symbols, prices, quantities, which orders to cancel):
    /// the same seed and options place the same orders. `None`: a random one, reported.
    pub seed: Option<u64>,
    /// The scheduling class the load generator's thread runs in, `batch` or `normal`
    /// (reported; the caller puts its thread in it before it starts the runtime).
    pub sched: &'static str,
}

/// Runs the benchmark. `Err` when the daemon cannot be reached or setup is refused; a run
/// that completes returns its report, whose `ok` says whether everything verified.
pub async fn run(opts: Options) -> Result<Report, ClientError> {
    load::run(opts).await
}
