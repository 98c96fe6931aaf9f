//! `agt book SYMBOL [--depth N]`: the aggregated order book.

use super::output::{cell, field};
use super::{output::Table, CliResult, Ctx};
use crate::client::{encode, with_query};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct BookArgs {
    /// The symbol, e.g. AAPL or BTC-USD (`agt symbol list` shows them)
    pub symbol: String,
    /// Price levels per side
    #[arg(long, allow_negative_numbers = true, default_value_t = 10, value_parser = super::count_up_to(1000))]
    pub depth: u32,
}

pub fn run(ctx: &Ctx, args: BookArgs) -> CliResult {
    let symbol = super::named(&args.symbol, "SYMBOL", super::A_SYMBOL)?;
    let path = with_query(&format!("/api/book/{}", encode(symbol)), &[("depth", Some(args.depth.to_string()))]);
    let v = ctx.get(&path)?;
    ctx.show(&v, render)
}

/// Bids and asks side by side, best first.
pub fn render(b: &Value) -> String {
    let side = |k: &str| b.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (bids, asks) = (side("bids"), side("asks"));
    let mut t = Table::new(&["BID QTY", "BID", "ASK", "ASK QTY"]);
    for i in 0..bids.len().max(asks.len()) {
        let (bp, bq) = level(bids.get(i));
        let (ap, aq) = level(asks.get(i));
        t.row(vec![bq, bp, ap, aq]);
    }
    let head = format!("{}  (sequence {})", field(b, "symbol"), field(b, "sequence"));
    if t.is_empty() {
        format!("{head}\nthe book is empty")
    } else {
        format!("{head}\n{}", t.render())
    }
}

/// A level as (price, quantity): `["price","qty"]` or `{"price","quantity"}`.
fn level(l: Option<&Value>) -> (String, String) {
    match l {
        Some(Value::Array(a)) => (a.first().map(cell).unwrap_or_default(), a.get(1).map(cell).unwrap_or_default()),
        Some(o @ Value::Object(_)) => (field(o, "price"), super::output::field_any(o, &["quantity", "qty"])),
        _ => (String::new(), String::new()),
    }
}
