//! The market service: instruments, the trades tape, last price, quotes and OHLCV
//! candles (DESIGN.md §2).
//!
//! **Message contract** (this file). Instruments come from config `[[symbols]]` and
//! `agt symbol add`; the tape and candles are built from `TRADE_EXECUTED` events, which the
//! trading service publishes with an [`crate::api::Trade`] as their data, fed to this
//! service by a bus follower (`Event` / `LastEventSeq`, idempotent by event sequence).

mod candles;
mod instruments;
mod service;
mod tape;
#[cfg(test)]
mod tests;

pub use candles::Interval;
pub use service::Market;

use crate::api::{Candle, Instrument, NewInstrument, Quote, Trade};
use crate::services::actor::Reply;
use crate::services::bus::BusEvent;

pub enum Cmd {
    /// 409 `symbol_exists` if it exists; 400 `invalid_symbol` if its fields are invalid.
    AddSymbol(NewInstrument, Reply<Instrument>),
    Symbols(Reply<Vec<Instrument>>),
    /// 404 `unknown_symbol` if there is no such instrument.
    Symbol(String, Reply<Instrument>),
    Event(BusEvent),
    LastEventSeq(Reply<u64>),
    /// Newest first.
    Trades { symbol: String, limit: usize, reply: Reply<Vec<Trade>> },
    /// Last price and 24h figures (best bid/ask are the book's: the route fills them in).
    Quote { symbol: String, reply: Reply<Quote> },
    /// Oldest first, the newest `limit` bars of `interval` (`1s 1m 5m 1h 1d`).
    Candles { symbol: String, interval: String, limit: usize, reply: Reply<Vec<Candle>> },
}

/// The base asset an instrument trades against USD: `AAPL` → `AAPL`, `BTC-USD` → `BTC`.
pub fn base_asset(symbol: &str) -> &str {
    symbol.strip_suffix("-USD").unwrap_or(symbol)
}
