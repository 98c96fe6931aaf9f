//! `agt risk limits | set | halt | resume | state | holds`: pre-trade limits, trading
//! halts, and what open orders hold.

use super::output::{cell, clean, items, kv, list_or_none, table_of};
use super::{json_text, one_key_body, CliResult, Ctx};
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
    Halt {
        /// The symbol to halt; without it, all trading
        symbol: Option<String>,
    },
    /// Resume trading on one symbol, or lift the halt of all trading (symbols halted on
    /// their own stay halted: the answer names them)
    Resume {
        /// The symbol to resume; without it, the halt of all trading
        symbol: Option<String>,
    },
    /// Show what is halted: all trading, and which symbols
    State,
    /// The open holds: the USD or asset each open order keeps from its user's available
    /// balance, every user's or one user's
    Holds {
        /// Only this user's holds (username or id)
        #[arg(long)]
        user: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: RiskCmd) -> CliResult {
    match cmd {
        RiskCmd::Limits { user } => {
            let user = super::named_opt(user, "--user", super::A_USER)?;
            let v = ctx.get(&with_query("/api/risk/limits", &[("user_id", user)]))?;
            ctx.show(&v, kv)
        }
        RiskCmd::Set { key, value, user } => {
            super::named(&key, "KEY", "a limit's name, e.g. max_open_orders")?;
            super::named(&value, "VALUE", "a number, true/false, or `default` with --user")?;
            let user = super::named_opt(user, "--user", super::A_USER)?;
            let value = if value == "default" && user.is_some() { "null".to_string() } else { json_text(&value) };
            let v = ctx.put_text(&with_query("/api/risk/limits", &[("user_id", user)]), one_key_body(&key, &value))?;
            ctx.show(&v, kv)
        }
        RiskCmd::Halt { symbol } => trading_state(ctx, "halt", symbol),
        RiskCmd::Resume { symbol } => trading_state(ctx, "resume", symbol),
        RiskCmd::State => {
            let v = ctx.get("/api/risk/state")?;
            ctx.show(&v, kv)
        }
        RiskCmd::Holds { user } => {
            let user = super::named_opt(user, "--user", super::A_USER)?;
            let v = ctx.get(&with_query("/api/risk/holds", &[("user_id", user)]))?;
            ctx.show(&v, |v| {
                let t = table_of(&items(v), &[("ORDER ID", "order_id"), ("USER ID", "user_id"), ("ASSET", "asset"), ("AMOUNT", "amount")]);
                list_or_none(t, "no open holds")
            })
        }
    }
}

fn trading_state(ctx: &Ctx, verb: &str, symbol: Option<String>) -> CliResult {
    // Empty, it would halt (or resume) nothing the user meant: leave SYMBOL out for all.
    let symbol = super::named_opt(symbol, "SYMBOL", "a symbol, or no SYMBOL at all for every symbol")?;
    let mut body = Map::new();
    if let Some(s) = &symbol {
        body.insert("symbol".into(), s.clone().into());
    }
    let v = ctx.post(&format!("/api/risk/{verb}"), &Value::Object(body))?;
    ctx.show(&v, |state| halt_summary(verb, symbol.as_deref(), state))
}

/// What a halt or resume did, and what stays halted: the global halt and each symbol's are
/// separate (`agt risk resume` lifts only the global one), so "all trading resumed" while
/// a symbol's halt remains would mislead.
fn halt_summary(verb: &str, symbol: Option<&str>, state: &Value) -> String {
    let what = symbol.map(|s| format!("trading in {}", clean(s))).unwrap_or_else(|| "all trading".into());
    let mut out = format!("{what} {}", if verb == "halt" { "halted" } else { "resumed" });
    if verb == "resume" {
        let everywhere = state.get("halted").and_then(Value::as_bool) == Some(true);
        let symbols: Vec<String> = items(state.get("halted_symbols").unwrap_or(&Value::Null)).iter().map(cell).collect();
        if everywhere {
            out.push_str("; all trading is still halted (`agt risk resume` lifts that)");
        } else if !symbols.is_empty() {
            out = format!("{out}, except in {}, halted on their own (`agt risk resume SYMBOL` for each)", symbols.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resume_names_what_stays_halted() {
        let state = json!({"halted": false, "halted_symbols": ["AAPL", "MSFT"]});
        assert_eq!(
            halt_summary("resume", None, &state),
            "all trading resumed, except in AAPL, MSFT, halted on their own (`agt risk resume SYMBOL` for each)"
        );
        let none = json!({"halted": false, "halted_symbols": []});
        assert_eq!(halt_summary("resume", None, &none), "all trading resumed");
        let global = json!({"halted": true, "halted_symbols": []});
        assert_eq!(
            halt_summary("resume", Some("AAPL"), &global),
            "trading in AAPL resumed; all trading is still halted (`agt risk resume` lifts that)"
        );
        assert_eq!(halt_summary("halt", Some("AAPL"), &global), "trading in AAPL halted");
    }
}
