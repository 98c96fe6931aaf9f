//! The market service: instruments, the trades tape, last price, quotes and OHLCV
//! candles (DESIGN.md §2).
//!
//! **Message contract** (this file). Instruments come from config `[[symbols]]` and
//! `agt symbol add`; the tape and candles are built from `TRADE_EXECUTED` events, which the
//! trading service publishes with an [`crate::api::Trade`] as their data, fed to this
//! service by a bus follower (`Event` / `LastEventSeq`, idempotent by event sequence).
//! Historical bars come in through `Import` (`agt market import`, CSV parsed by
//! [`import::parse`] outside the actor).

mod candles;
pub mod import;
mod instruments;
pub use instruments::validate as validate_instrument;
mod listed;
pub use listed::{BySymbol, Listed};
mod service;
mod tape;
#[cfg(test)]
mod tests;

pub use candles::{Interval, Span};
pub use service::Market;

use crate::api::{Candle, Instrument, NewInstrument, Quote, Trade};
use crate::services::actor::Reply;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

pub enum Cmd {
    /// 409 `symbol_exists` if it exists; 400 `invalid_symbol` if its fields are invalid.
    AddSymbol(NewInstrument, Reply<Instrument>),
    Symbols(Reply<Vec<Instrument>>),
    /// 404 `unknown_symbol` if there is no such instrument.
    Symbol(String, Reply<Instrument>),
    Event(crate::daemon::follower::Handed),
    /// The last prices that are imported closes (symbol, price, the moment in µs), for
    /// risk's price band at start-up (`routes::market::anchor_imported_prices`).
    ImportedLast(Reply<Vec<(String, rust_decimal::Decimal, i64)>>),
    LastEventSeq(Reply<u64>),
    /// Every trade up to this seq has been handed over (the follower skips the other
    /// events): the position to record.
    Passed(crate::daemon::follower::Passed),
    /// Newest first.
    Trades {
        symbol: String,
        limit: usize,
        reply: Reply<Vec<Trade>>,
    },
    /// Last price and 24h figures (best bid/ask are the book's: the route fills them in).
    Quote {
        symbol: String,
        reply: Reply<Quote>,
    },
    /// Oldest first, the bars of `interval` (`1s 1m 5m 1h 1d`) that `span` picks.
    Candles {
        symbol: String,
        interval: String,
        span: candles::Span,
        reply: Reply<Vec<Candle>>,
    },
    /// Historical OHLCV bars, all or nothing: if any row is bad or names an unknown
    /// symbol, 400 `invalid_csv` listing the bad rows by line, and nothing is written.
    /// Otherwise every bar is written (replacing a bar with the same symbol, interval and
    /// open time) in one transaction. A symbol's newest imported close becomes its last
    /// price only if it is newer than the last trade (see [`import::as_of_us`]).
    Import {
        rows: Vec<import::CsvRow>,
        reply: Reply<Imported>,
    },
}

/// What an import did (`POST /api/market/import` answers it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    /// Bars written.
    pub imported: usize,
    /// The symbols they belong to, sorted.
    pub symbols: Vec<String>,
    /// Per symbol, the close of its newest imported bar (the one whose interval ends last).
    pub last: BTreeMap<String, Decimal>,
    /// The symbols whose last price the import set (the others have a newer trade).
    pub last_price_updated: Vec<String>,
    /// For the route, to tell risk: (symbol, price, the moment it stands for in µs).
    #[serde(skip)]
    pub new_last_prices: Vec<(String, Decimal, i64)>,
}

/// The base asset an instrument trades against USD: `AAPL` → `AAPL`, `BTC-USD` → `BTC`.
pub fn base_asset(symbol: &str) -> &str {
    symbol.strip_suffix("-USD").unwrap_or(symbol)
}
