//! `agt trades SYMBOL [--limit N]`: the tape, newest first.

use super::output::{items, list_or_none, table_of};
use super::{CliResult, Ctx};
use crate::client::{encode, with_query};
use clap::Args;

#[derive(Debug, Args)]
pub struct TradesArgs {
    pub symbol: String,
    /// At most this many trades
    #[arg(long)]
    pub limit: Option<u32>,
}

pub fn run(ctx: &Ctx, args: TradesArgs) -> CliResult {
    let path = with_query(&format!("/api/trades/{}", encode(&args.symbol)), &[("limit", args.limit.map(|l| l.to_string()))]);
    let v = ctx.get(&path)?;
    ctx.show(&v, |v| {
        let t = table_of(
            &items(v),
            &[("TIME", "timestamp"), ("PRICE", "price"), ("QTY", "quantity"), ("TAKER", "taker_side|side"), ("TRADE ID", "trade_id")],
        );
        list_or_none(t, "no trades")
    })
}
