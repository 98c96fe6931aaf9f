//! `agt demo [--users N] [--rate R] [--duration D]`: a live synthetic market for a first
//! look. The work is in [`crate::demo`]; this file turns flags into its options and
//! prints a line of progress every second.

use super::{CliError, CliResult, Ctx};
use crate::client::Client;
use crate::demo::{self, DemoError, Options, Progress};
use clap::Args;

/// Creates funded demo users (demo-mm-N, demo-taker-N; reused when they exist) and runs a
/// synthetic market through the API: market makers quote around a random-walk price and
/// replace their quotes every second, takers cross them with IOC and market orders.
#[derive(Debug, Args)]
#[command(after_help = "Trades the shipped symbols (AAPL, MSFT, BTC-USD, ETH-USD) unless --symbols names others. \
Watch it with `agt tui`, `agt book AAPL`, `agt trades AAPL` or `agt market candles AAPL --interval 1s`.\n\
Over --url, the --token must be an admin's (the demo creates users and deposits).")]
pub struct DemoArgs {
    /// Market makers, and as many takers
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub users: u32,
    /// Taker orders per second, all takers together
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true, value_parser = parse_rate)]
    pub rate: f64,
    /// How long to trade: 60, 90s, 5m, 1h; 0 runs until Ctrl-C
    #[arg(long, default_value = "60s", allow_negative_numbers = true, value_parser = parse_run_for)]
    pub duration: RunFor,
    /// Symbols to trade, comma-separated [default: AAPL,MSFT,BTC-USD,ETH-USD]
    #[arg(long, value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Leave the market makers' last quotes in the book at the end
    #[arg(long)]
    pub keep_quotes: bool,
}

/// `--duration`: how long, or `None` for until Ctrl-C.
#[derive(Debug, Clone, Copy)]
pub struct RunFor(pub Option<std::time::Duration>);

fn parse_run_for(s: &str) -> Result<RunFor, String> {
    demo::parse_duration(s).map(RunFor)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!("the rate is taker orders per second, a number > 0 and <= 100000, got {}", crate::api::quote::quoted(s))),
    }
}

/// `  12s  orders 1204 (+61/s)  trades 390 (+20/s)  errors 0  AAPL 190.2  MSFT 419.87 …`
fn line(p: &Progress, before: &Progress) -> String {
    let mids: Vec<String> = p.mid.iter().map(|(s, m)| format!("{s} {m}")).collect();
    let head = if p.done { format!("done {}s", p.elapsed_s) } else { format!("{:>4}s", p.elapsed_s) };
    let mut out = if p.done {
        format!("{head}  orders {}  trades {}  errors {}  {}", p.orders, p.trades, p.errors, mids.join("  "))
    } else {
        format!(
            "{head}  orders {} (+{}/s)  trades {} (+{}/s)  errors {}  {}",
            p.orders,
            p.orders - before.orders.min(p.orders),
            p.trades,
            p.trades - before.trades.min(p.trades),
            p.errors,
            mids.join("  ")
        )
    };
    if p.errors > before.errors {
        if let Some(e) = &p.last_error {
            let e: String = super::output::clean(e).chars().take(120).collect();
            out.push_str(&format!("\n      last error: {e}"));
        }
    }
    out
}

pub fn run(ctx: &Ctx, args: DemoArgs) -> CliResult {
    let client = Client::new(ctx.endpoint()?);
    let opts = Options {
        users: args.users,
        rate: args.rate,
        duration: args.duration.0,
        symbols: args.symbols.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        keep_quotes: args.keep_quotes,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the I/O runtime: {e}"))?;
    if !ctx.quiet() && !ctx.json() {
        let how = match opts.duration {
            Some(d) => format!("for {}s", d.as_secs_f64()),
            None => "until Ctrl-C".to_string(),
        };
        eprintln!("agt demo: {} market maker(s) and {} taker(s), {} taker orders/s, {how}", opts.users, opts.users, opts.rate);
    }
    let mut before = Progress::default();
    let result = rt.block_on(demo::run(
        client,
        opts,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        |p| {
            if ctx.quiet() {
                return;
            }
            if ctx.json() {
                println!("{}", serde_json::to_string(p).expect("progress serializes"));
            } else {
                println!("{}", line(p, &before));
            }
            before = p.clone();
        },
    ));
    match result {
        Ok(p) => {
            if !ctx.quiet() && !ctx.json() {
                let first = p.mid.keys().next().cloned().unwrap_or_else(|| "AAPL".into());
                println!("see it: agt book {first} | agt trades {first} | agt market candles {first} --interval 1s | agt tui");
            }
            if p.orders == 0 {
                return Err(CliError::failed(
                    "demo_failed",
                    format!("no order was accepted; the last error: {}", p.last_error.unwrap_or_default()),
                ));
            }
            Ok(())
        }
        Err(DemoError::Client(e)) => Err(e.into()),
        Err(DemoError::Failed { code, message }) => Err(CliError::failed(&code, message)),
    }
}
