//! `agt market quote|candles SYMBOL`: market data.

use super::output::{items, kv, list_or_none, table_of};
use super::{CliResult, Ctx};
use crate::client::{encode, with_query};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum MarketCmd {
    /// Last price, best bid and ask, 24h volume
    Quote { symbol: String },
    /// OHLCV candles
    Candles {
        symbol: String,
        /// Candle width, e.g. 1m, 5m, 1h, 1d [daemon default: 1m]
        #[arg(long)]
        interval: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

pub fn run(ctx: &Ctx, cmd: MarketCmd) -> CliResult {
    match cmd {
        MarketCmd::Quote { symbol } => {
            let v = ctx.get(&format!("/api/market/{}", encode(&symbol)))?;
            ctx.show(&v, kv)
        }
        MarketCmd::Candles { symbol, interval, limit } => {
            let path = with_query(
                &format!("/api/market/{}/candles", encode(&symbol)),
                &[("interval", interval), ("limit", limit.map(|l| l.to_string()))],
            );
            let v = ctx.get(&path)?;
            ctx.show(&v, |v| {
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
