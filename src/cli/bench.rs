//! `agt bench`: load the daemon with orders and report throughput and latency
//! (DESIGN.md §5). The work is in [`crate::bench`]; this file turns flags into its
//! options and prints the report.

use super::{CliError, CliResult, Ctx};
use crate::bench::{self, Options, Via};
use crate::client::Endpoint;
use clap::{Args, ValueEnum};
use std::io::IsTerminal;

/// The scheduling class of the load generator's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedArg {
    /// Linux's SCHED_BATCH: an answer that wakes the generator does not preempt the
    /// daemon's thread that sent it, as a client on another machine would not
    Batch,
    /// The normal class: the generator preempts the daemon whenever an answer wakes it
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViaArg {
    /// The daemon's Unix socket
    Socket,
    /// The daemon's TCP listener (--url, else the address in agtd.json)
    Http,
}

/// Places orders from C keep-alive connections, reports orders/s, trades/s and placement
/// latency, then checks that every acknowledged order is in the daemon as acknowledged.
#[derive(Debug, Args)]
#[command(after_help = "Setup (symbols BENCH<tag><i>, funded users <prefix>-b<i> and <prefix>-s<i>, raised limits) goes over the \
socket, or over --url with an admin --token. Over --via http without --token, an admin token is made for the run and revoked after it.\n\
The symbols and users stay (agt never deletes either): each run adds K symbols and 2C funded users; use a throwaway AGT_HOME \
for benchmarks. Their open orders are cancelled at the end.\n\
Ctrl-C stops placing; what was placed is still verified and cleaned up (Ctrl-C again quits at once).\n\
Exit status 1 when an order or cancel was not acknowledged (warm-up included), the verification found a problem, the clean-up \
failed, or the run was interrupted; exit status 3 when the daemon cannot be reached, or goes away during the run.")]
pub struct BenchArgs {
    /// Orders to place in the measured phase
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = super::whole_in::<u64>("--orders", 1, Some(100_000_000)))]
    pub orders: u64,
    /// Connections, each with one worker placing orders on it
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = super::whole_in::<usize>("--concurrency", 1, Some(4096)))]
    pub concurrency: usize,
    /// Bench symbols to spread the orders over
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = super::whole_in::<usize>("--symbols", 1, Some(64)))]
    pub symbols: usize,
    /// Transport of the load [default: http with --url, else socket]
    #[arg(long, value_enum)]
    pub via: Option<ViaArg>,
    /// Open loop at this many orders/s (latency counts from each order's scheduled time);
    /// without it, closed loop as fast as the connections go
    #[arg(long, allow_negative_numbers = true, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// The placement route
    #[arg(long, default_value = "/api/orders", value_parser = ["/api/orders", "/api/trading/orders"])]
    pub route: String,
    /// Orders to place before measuring (closed loop; verified, not reported)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = super::whole_in::<u64>("--warmup", 0, Some(100_000_000)))]
    pub warmup: u64,
    /// Cancel this percent of the orders that rest, right after their answer, on the same
    /// connection (a market maker's flow); reported as cancels/s with their own latency
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = super::whole_in::<u8>("--cancels", 0, Some(100)))]
    pub cancels: u8,
    /// Seed of the order mix: the same seed and options place the same orders [default: random, reported]
    #[arg(long, allow_negative_numbers = true, value_parser = super::whole_in::<u64>("--seed", 0, None))]
    pub seed: Option<u64>,
    /// Scheduling class of the load generator's thread (Linux; elsewhere always normal)
    #[arg(long, value_enum, default_value_t = SchedArg::Batch)]
    pub sched: SchedArg,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && (1.0..=10_000_000.0).contains(&r) => Ok(r),
        _ => Err(format!("the rate is orders per second, a number from 1 to 10000000, got {}", crate::api::quote::quoted(s))),
    }
}

pub fn run(ctx: &Ctx, args: BenchArgs) -> CliResult {
    let url = ctx.global.url.as_deref().filter(|u| !u.is_empty());
    let token = ctx.global.token.clone().filter(|t| !t.is_empty());
    let via = match args.via {
        Some(ViaArg::Socket) => Via::Socket,
        Some(ViaArg::Http) => Via::Http,
        None if url.is_some() => Via::Http,
        None => Via::Socket,
    };
    if url.is_some() && via == Via::Socket {
        return Err(CliError::Usage("--via socket loads the local daemon's socket; leave out --url (or use --via http)".into()));
    }
    if url.is_some() && token.is_none() {
        return Err(CliError::Usage("agt bench with --url needs --token, an admin token (setup creates users and symbols)".into()));
    }
    // Setup and clean-up: the socket, or the URL with its admin token.
    let control = ctx.endpoint()?;
    let load = match via {
        Via::Socket => control.clone(),
        Via::Http => match url {
            Some(u) => Endpoint::tcp(u, token)?,
            None => {
                let Some(info) = super::daemon::running_info(&ctx.home) else {
                    return Err(CliError::NotRunning(format!(
                        "no agt daemon is running at {} (no agtd.json of a daemon holding its lock), so there is no HTTP address to load",
                        ctx.home.root().display()
                    )));
                };
                let Some(addr) = info.http.filter(|a| !a.is_empty()) else {
                    return Err(CliError::failed(
                        "tcp_off",
                        "the daemon does not listen on TCP (http.listen = \"\"); use --via socket, or set http.listen and restart it",
                    ));
                };
                Endpoint::tcp(&format!("http://{addr}"), token)?
            }
        },
    };
    let opts = Options {
        orders: args.orders,
        concurrency: args.concurrency,
        symbols: args.symbols,
        via,
        rate: args.rate,
        route: args.route,
        warmup: args.warmup,
        cancels: args.cancels,
        seed: args.seed,
        control,
        load,
        progress: !ctx.quiet() && !ctx.json() && std::io::stderr().is_terminal(),
        // This thread runs the generator's runtime (and any thread it starts inherits the
        // class).
        sched: if args.sched == SchedArg::Batch && crate::services::priority::batch_this_thread() { "batch" } else { "normal" },
    };
    // One thread: the load of a few thousand connections is ~13 µs of CPU per order,
    // and with two workers each answer's wake-up crossed threads (~15 µs per order,
    // fewer orders/s from the daemon sharing the cores; BENCHMARKS.md, session 20).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the I/O runtime: {e}"))?;
    let report = rt.block_on(bench::run(opts))?;
    let json = serde_json::to_value(&report).expect("a report serializes");
    ctx.show(&json, |_| bench::report::render(&report))?;
    if report.ok {
        return Ok(());
    }
    let sum = |m: &std::collections::BTreeMap<String, u64>| m.values().sum::<u64>();
    let mut why = Vec::new();
    if report.interrupted {
        why.push("interrupted (Ctrl-C)".to_string());
    }
    if sum(&report.errors) > 0 {
        why.push(format!("{} of {} orders were not acknowledged", sum(&report.errors), report.orders));
    }
    if sum(&report.warmup_errors) > 0 {
        why.push(format!("{} warm-up orders or cancels failed", sum(&report.warmup_errors)));
    }
    if sum(&report.cancel_errors) > 0 {
        why.push(format!("{} cancels failed", sum(&report.cancel_errors)));
    }
    let failed = report.verification.failures();
    if !failed.is_empty() {
        why.push(format!("verification failed: {}", failed.join("; ")));
    }
    if report.cleanup.errors > 0 {
        why.push(format!("the clean-up failed for {} bench users", report.cleanup.errors));
    }
    if report.cleanup.token_revoked == Some(false) {
        why.push("the run's admin token was not revoked".to_string());
    }
    if why.is_empty() {
        why.push(format!("{} of {} orders acknowledged", report.acknowledged, report.orders));
    }
    Err(CliError::failed("bench_failed", why.join("; ")))
}
