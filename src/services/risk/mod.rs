//! The risk service: accounts (cash and asset balances, holds, positions), pre-trade
//! checks, limits and trading halts (DESIGN.md §2).
//!
//! **Message contract** (this file): what other parts of agt may ask of risk. The saga in
//! `services/orders/saga.rs` calls `Reserve` before an order reaches the book, `Settle`
//! after the book has traded, and `Release` when an order closes with something left.
//! Every one of them is idempotent by order id or trade id, because the saga replays
//! interrupted steps after a crash.
//!
//! Beside it: [`checks`] (the pre-trade checks as plain functions, in the contract's
//! order), `accounts.rs` (the ledger of balances, holds and positions, and its store) and
//! `service.rs` (the actor). Settling releases through `Settle { release }`: an order that
//! closes (filled, cancelled, an IOC/FOK/market remainder, a rejection) must be listed
//! there once, or its hold stays open and counts toward `max_open_orders`.

mod accounts;
pub mod checks;
mod service;
#[cfg(test)]
mod tests;

pub use service::Risk;

use crate::api::{Account, Instrument, OrderType, RiskLimits, Side, TradingState};
use crate::services::actor::Reply;
use rust_decimal::Decimal;

pub enum Cmd {
    /// Adds to a balance; answers the account after. `grid`: the most decimal places a
    /// trade moves the asset by, over the instruments listed (`checks::grid_places`); 422
    /// `max_supply` if the supply at those places would not fit in 28 digits.
    Deposit {
        user_id: String,
        asset: String,
        amount: Decimal,
        grid: u32,
        reply: Reply<Account>,
    },
    /// Takes from the available balance (422 `insufficient_funds` if there is not enough).
    Withdraw {
        user_id: String,
        asset: String,
        amount: Decimal,
        reply: Reply<Account>,
    },
    Account {
        user_id: String,
        reply: Reply<Account>,
    },
    /// The pre-trade checks, then the hold. Idempotent: reserving an order id already
    /// reserved answers the same `Reserved` without holding twice. A rejection is a 422
    /// `ApiError` with the check's code.
    Reserve {
        req: ReserveRequest,
        reply: Reply<Reserved>,
    },
    /// Moves cash and assets for trades (each once, by trade id), then releases what the
    /// orders in `release` still hold (each once).
    Settle {
        req: SettleRequest,
        reply: Reply<()>,
    },
    /// Global limits (from config `risk.*`) or a user's effective limits.
    Limits {
        user_id: Option<String>,
        reply: Reply<RiskLimits>,
    },
    /// A user's own limits (fields left out inherit the global value); the limits named
    /// in `clear` lose the user's own value and inherit the global one again.
    SetLimits {
        user_id: String,
        limits: RiskLimits,
        clear: Vec<String>,
        reply: Reply<RiskLimits>,
    },
    Halt {
        symbol: Option<String>,
        reply: Reply<TradingState>,
    },
    Resume {
        symbol: Option<String>,
        reply: Reply<TradingState>,
    },
    TradingState(Reply<TradingState>),
    /// Whether trades of an instrument about to be listed (`symbol`) would settle
    /// exactly: each `(asset, places)` is an asset it trades and the most decimal places
    /// its trades move it by (`checks::grid_places`). 422 `max_supply` if what the
    /// accounts already hold of one of them, written to those places, passes 28 digits:
    /// every order of it would be refused, and deposits of the asset would be capped by
    /// its grid (`Ledger::room`), so the listing is refused instead.
    Room {
        symbol: String,
        grids: Vec<(String, u32)>,
        reply: Reply<()>,
    },
    /// Every hold still open, for consistency checks.
    Holds(Reply<Vec<Hold>>),
    /// Sets a symbol's last price (the price band's anchor) from imported history
    /// (`POST /api/market/import`, after the market service made that close the symbol's
    /// last price). `as_of_us` is the moment the price stands for (µs since the epoch).
    /// Answers `false` and changes nothing if risk has settled a trade of the symbol after
    /// that moment since it started; 400 `invalid_price` for a price <= 0. Persisted like a
    /// settled trade's price.
    SetLastPrice {
        symbol: String,
        price: Decimal,
        as_of_us: i64,
        reply: Reply<bool>,
    },
}

impl Cmd {
    /// Whether the command only reads. The lane answers a batch of reads at once from
    /// its open transactions instead of flushing first (see `services::lane`).
    pub fn is_read(&self) -> bool {
        matches!(self, Cmd::Account { .. } | Cmd::Limits { .. } | Cmd::TradingState(_) | Cmd::Holds(_) | Cmd::Room { .. })
    }
}

/// An order asking to be admitted. The caller has resolved the user and the instrument.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub order_id: String,
    pub user_id: String,
    /// False for a disabled user (`user_disabled`).
    pub user_active: bool,
    pub instrument: Instrument,
    pub side: Side,
    pub kind: OrderType,
    /// The limit price (None for market orders).
    pub price: Option<Decimal>,
    pub quantity: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// For a market buy: the USD it holds and may spend (the engine's budget).
    pub budget: Option<Decimal>,
}

/// One trade to settle: the buyer pays `price × quantity` USD, the seller delivers
/// `quantity` of the base asset.
#[derive(Debug, Clone)]
pub struct SettleTrade {
    pub trade_id: String,
    pub symbol: String,
    pub base_asset: String,
    pub price: Decimal,
    pub quantity: Decimal,
    pub buy_order_id: String,
    pub buy_user_id: String,
    pub sell_order_id: String,
    pub sell_user_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct SettleRequest {
    pub trades: Vec<SettleTrade>,
    /// Orders that are closed (filled, cancelled, IOC/FOK/market remainder): whatever they
    /// still hold goes back to available.
    pub release: Vec<String>,
}

/// What one open order holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    pub order_id: String,
    pub user_id: String,
    pub asset: String,
    pub amount: Decimal,
}
