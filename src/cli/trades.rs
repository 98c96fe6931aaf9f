//! `agt trades SYMBOL [--limit N]`: the tape, newest first.

use super::output::{items, list_or_none, table_of};
use super::{CliResult, Ctx, Cut};
use crate::client::encode;
use clap::Args;

#[derive(Debug, Args)]
pub struct TradesArgs {
    /// The symbol, e.g. AAPL or BTC-USD (`agt symbol list` shows them)
    pub symbol: String,
    /// At most this many, the newest [default: 100, at most 10000]; when there are more,
    /// a note on stderr says so
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = super::count_up_to(10_000))]
    pub limit: Option<u32>,
}

pub fn run(ctx: &Ctx, args: TradesArgs) -> CliResult {
    let cut = Cut { noun: "trades".into(), which: "newest", default: 100, max: 10_000, keep_front: true };
    let symbol = super::named(&args.symbol, "SYMBOL", super::A_SYMBOL)?;
    let listed = ctx.get_list(&format!("/api/trades/{}", encode(symbol)), &[], args.limit, cut)?;
    ctx.show_list(&listed, |v| {
        let t = table_of(
            &items(v),
            &[("TIME", "timestamp"), ("PRICE", "price"), ("QTY", "quantity"), ("TAKER", "taker_side|side"), ("TRADE ID", "trade_id")],
        );
        list_or_none(t, "no trades")
    })
}
