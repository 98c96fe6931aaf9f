//! `agt risk limits | set | halt | resume | state`: pre-trade limits and trading halts.

use super::output::kv;
use super::{json_value, CliResult, Ctx};
use crate::client::with_query;
use clap::Subcommand;
use serde_json::{Map, Value};

#[derive(Debug, Subcommand)]
pub enum RiskCmd {
    /// Show the global limits, or one user's
    Limits {
        /// Username or user id
        #[arg(long)]
        user: Option<String>,
    },
    /// Set one limit globally, or for one user
    #[command(allow_negative_numbers = true)]
    Set {
        /// max_open_orders, max_order_quantity, max_order_notional, max_orders_per_second,
        /// price_band_pct or allow_short
        key: String,
        /// A number or true/false (sent as JSON), anything else as a string; `default`
        /// with --user drops the user's own value (the global one applies again)
        value: String,
        /// Username or user id
        #[arg(long)]
        user: Option<String>,
    },
    /// Halt trading on one symbol, or everywhere
    Halt { symbol: Option<String> },
    /// Resume trading on one symbol, or everywhere
    Resume { symbol: Option<String> },
    /// Show what is halted: all trading, and which symbols
    State,
}

pub fn run(ctx: &Ctx, cmd: RiskCmd) -> CliResult {
    match cmd {
        RiskCmd::Limits { user } => {
            let v = ctx.get(&with_query("/api/risk/limits", &[("user_id", user)]))?;
            ctx.show(&v, kv)
        }
        RiskCmd::Set { key, value, user } => {
            let mut body = Map::new();
            let value = if value == "default" && user.is_some() { Value::Null } else { json_value(&value) };
            body.insert(key, value);
            let v = ctx.put(&with_query("/api/risk/limits", &[("user_id", user)]), &Value::Object(body))?;
            ctx.show(&v, kv)
        }
        RiskCmd::Halt { symbol } => trading_state(ctx, "halt", symbol),
        RiskCmd::Resume { symbol } => trading_state(ctx, "resume", symbol),
        RiskCmd::State => {
            let v = ctx.get("/api/risk/state")?;
            ctx.show(&v, kv)
        }
    }
}

fn trading_state(ctx: &Ctx, verb: &str, symbol: Option<String>) -> CliResult {
    let mut body = Map::new();
    if let Some(s) = &symbol {
        body.insert("symbol".into(), s.clone().into());
    }
    let v = ctx.post(&format!("/api/risk/{verb}"), &Value::Object(body))?;
    let what = symbol.map(|s| format!("trading in {s}")).unwrap_or_else(|| "all trading".into());
    ctx.show(&v, |_| format!("{what} {}", if verb == "halt" { "halted" } else { "resumed" }))
}
