//! `agt market quote|candles SYMBOL`: market data; `agt market import FILE.csv`:
//! historical OHLCV bars (the format is in README.md, "Market data import").

use super::output::{cell, clean, items, kv, list_or_none, table_of, Table};
use super::{CliError, CliResult, Ctx, Cut};
use crate::client::encode;
use clap::Subcommand;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum MarketCmd {
    /// Last price, best bid and ask, 24h volume
    Quote {
        /// The symbol, e.g. AAPL or BTC-USD (`agt symbol list` shows them)
        symbol: String,
    },
    /// OHLCV candles
    Candles {
        /// The symbol, e.g. AAPL or BTC-USD (`agt symbol list` shows them)
        symbol: String,
        /// Candle width, e.g. 1m, 5m, 1h, 1d [daemon default: 1m]
        #[arg(long)]
        interval: Option<String>,
        /// At most this many, the newest (shown oldest first) [default: 100, at most
        /// 10000]; when there are more, a note on stderr says so. With --from, the
        /// first this many from there
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = super::count_up_to(10_000))]
        limit: Option<u32>,
        /// Only bars that start at or after this time (RFC 3339, Unix seconds or YYYY-MM-DD)
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Only bars that start before this time (RFC 3339, Unix seconds or YYYY-MM-DD)
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
    /// Import historical OHLCV bars from a CSV file, all or nothing
    #[command(after_help = concat!(
        "The file starts with the header\n",
        "    symbol,interval,open_time,open,high,low,close,volume\n",
        "then one bar per line, e.g.\n",
        "    AAPL,1d,2024-05-01T00:00:00Z,169.58,172.71,169.11,169.30,50383100\n",
        "interval: 1s 1m 5m 1h 1d; open_time: RFC 3339, Unix seconds or YYYY-MM-DD, the start of the bar.\n",
        "Bad rows are listed by line number and nothing is imported. See README.md, \"Market data import\"."
    ))]
    Import {
        /// The CSV file ("-" reads standard input)
        file: PathBuf,
    },
}

pub fn run(ctx: &Ctx, cmd: MarketCmd) -> CliResult {
    match cmd {
        MarketCmd::Import { file } => import(ctx, &file),
        MarketCmd::Quote { symbol } => {
            let symbol = super::named(&symbol, "SYMBOL", super::A_SYMBOL)?;
            let v = ctx.get(&format!("/api/market/{}", encode(symbol)))?;
            ctx.show(&v, kv)
        }
        MarketCmd::Candles { symbol, interval, limit, from, to } => {
            let symbol = super::named(&symbol, "SYMBOL", super::A_SYMBOL)?;
            let interval = super::named_opt(interval, "--interval", "a candle width (1s, 1m, 5m, 1h, 1d), or leave --interval out for 1m")?;
            let from = super::named_opt(from, "--from", "a time (RFC 3339, Unix seconds or YYYY-MM-DD), or leave --from out")?;
            let to = super::named_opt(to, "--to", "a time (RFC 3339, Unix seconds or YYYY-MM-DD), or leave --to out")?;
            // From a start, the list is the first N, and a bar past them is the extra one.
            let (which, keep_front) = if from.is_some() { ("first", true) } else { ("newest", false) };
            let cut = Cut { noun: "candles".into(), which, default: 100, max: 10_000, keep_front };
            let query = [("interval", interval), ("from", from), ("to", to)];
            let listed = ctx.get_list(&format!("/api/market/{}/candles", encode(symbol)), &query, limit, cut)?;
            ctx.show_list(&listed, |v| {
                let t = table_of(
                    &items(v),
                    &[
                        ("TIME", "start|open_time|time|timestamp"),
                        ("OPEN", "open"),
                        ("HIGH", "high"),
                        ("LOW", "low"),
                        ("CLOSE", "close"),
                        ("VOLUME", "volume"),
                    ],
                );
                list_or_none(t, "no candles")
            })
        }
    }
}

fn import(ctx: &Ctx, file: &std::path::Path) -> CliResult {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| anyhow::anyhow!("cannot read the CSV from standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => CliError::failed("invalid_csv", format!("{} is not UTF-8 text", file.display())),
            _ => CliError::Other(anyhow::anyhow!("cannot read {}: {e}", file.display())),
        })?
    };
    let v = ctx.post("/api/market/import", &serde_json::json!({ "csv": text }))?;
    ctx.show(&v, import_summary)
}

/// `imported N bars of A, B` and a line per symbol: its newest close, and whether that
/// became the last price.
fn import_summary(v: &Value) -> String {
    let symbols: Vec<String> = items(&v["symbols"]).iter().map(cell).collect();
    let updated: Vec<String> = items(&v["last_price_updated"]).iter().map(cell).collect();
    let mut t = Table::new(&["SYMBOL", "NEWEST CLOSE", "LAST PRICE"]);
    for s in &symbols {
        let close = v["last"].get(s.as_str()).map(cell).unwrap_or_else(|| "-".into());
        let set = if updated.contains(s) { "set to it".to_string() } else { "kept (a trade is newer)".to_string() };
        t.row(vec![s.clone(), close, set]);
    }
    format!("imported {} bar(s) of {}\n{}", cell(&v["imported"]), clean(&symbols.join(", ")), t.render())
}
