//! `agt symbol list | add`: instruments.

use super::output::{items, kv, list_or_none, table_of};
use super::{CliResult, Ctx};
use clap::Subcommand;
use serde_json::{Map, Value};

#[derive(Debug, Subcommand)]
pub enum SymbolCmd {
    /// Every instrument with its tick, lot and quantity limits
    #[command(visible_alias = "ls")]
    List,
    /// Add an instrument (AAPL trades AAPL against USD; BTC-USD trades BTC)
    #[command(allow_negative_numbers = true)]
    Add {
        /// 1 to 32 characters of A-Z, 0-9, `.` and `-`; its base asset is the symbol, or the
        /// part before -USD
        symbol: String,
        /// Price increment, e.g. 0.01
        #[arg(long)]
        tick: String,
        /// Quantity increment, e.g. 1
        #[arg(long)]
        lot: String,
        /// Smallest order quantity, a multiple of the lot [default: the lot]
        #[arg(long = "min-qty")]
        min_qty: Option<String>,
        /// Largest order quantity, a multiple of the lot [default: 1000000000, rounded down
        /// to the lot]
        #[arg(long = "max-qty")]
        max_qty: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: SymbolCmd) -> CliResult {
    match cmd {
        SymbolCmd::List => {
            let v = ctx.get("/api/symbols")?;
            ctx.show(&v, |v| {
                let t = table_of(
                    &items(v),
                    &[
                        ("SYMBOL", "symbol"),
                        ("BASE", "base"),
                        ("QUOTE", "quote"),
                        ("TICK", "tick|tick_size"),
                        ("LOT", "lot|lot_size"),
                        ("MIN QTY", "min_quantity"),
                        ("MAX QTY", "max_quantity"),
                    ],
                );
                list_or_none(t, "no symbols; add one with `agt symbol add SYMBOL --tick 0.01 --lot 1`")
            })
        }
        SymbolCmd::Add { symbol, tick, lot, min_qty, max_qty } => {
            super::named(&symbol, "SYMBOL", "a new symbol, e.g. AAPL or BTC-USD")?;
            super::named(&tick, "--tick", "a price increment, e.g. 0.01")?;
            super::named(&lot, "--lot", "a quantity increment, e.g. 1")?;
            let min_qty = super::named_opt(min_qty, "--min-qty", "a quantity, or leave --min-qty out")?;
            let max_qty = super::named_opt(max_qty, "--max-qty", "a quantity, or leave --max-qty out")?;
            let mut body = Map::new();
            body.insert("symbol".into(), symbol.into());
            body.insert("tick".into(), tick.into());
            body.insert("lot".into(), lot.into());
            if let Some(m) = min_qty {
                body.insert("min_quantity".into(), m.into());
            }
            if let Some(m) = max_qty {
                body.insert("max_quantity".into(), m.into());
            }
            let v = ctx.post("/api/symbols", &Value::Object(body))?;
            ctx.show(&v, kv)
        }
    }
}
