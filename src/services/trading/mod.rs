//! The trading service: one price-time-priority book per symbol, and the fills.
//!
//! [`engine`] is the pure matching engine (integers, no I/O); [`service`] is the actor
//! that owns the books, converts decimals to ticks and lots, persists resting orders,
//! fills and each order's match outcome in `data/trading.db`, and publishes
//! `TRADE_EXECUTED`. This file is its **message contract**.
//!
//! `Match` is idempotent by order id: the outcome is stored with the fills in the same
//! transaction, and a repeated `Match` (the saga resuming after a crash) answers it again.

pub mod engine;
mod service;

pub use service::Trading;

use crate::api::{BookView, OrderType, Side, TimeInForce};
use crate::services::actor::Reply;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub enum Cmd {
    Match { req: MatchRequest, reply: Reply<MatchResult> },
    Book { symbol: String, depth: usize, reply: Reply<BookView> },
}

impl Cmd {
    /// Whether the command only reads. The lane answers a batch of reads at once from
    /// its open transactions instead of flushing first (see `services::lane`).
    pub fn is_read(&self) -> bool {
        matches!(self, Cmd::Book { .. })
    }
}

#[derive(Debug, Clone)]
pub struct MatchRequest {
    pub order_id: String,
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    pub kind: OrderType,
    pub time_in_force: TimeInForce,
    pub price: Option<Decimal>,
    pub quantity: Decimal,
    pub tick: Decimal,
    pub lot: Decimal,
    /// A market buy's spendable USD (what risk holds for it).
    pub budget: Option<Decimal>,
}

/// One trade as the taker and the maker see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeFill {
    pub trade_id: String,
    pub maker_order_id: String,
    pub maker_user_id: String,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub price: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub quantity: Decimal,
    /// The maker's open quantity after this trade; zero means it left the book.
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub maker_remaining: Decimal,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchResult {
    pub order_id: String,
    pub fills: Vec<TradeFill>,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub filled: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub remaining: Decimal,
    /// True when the remainder rests in the book; false when it was cancelled (IOC, FOK,
    /// market, self-trade prevention) or nothing remains.
    pub rests: bool,
    pub self_trade_prevented: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub order_id: String,
    pub user_id: String,
    pub remaining: Decimal,
}
