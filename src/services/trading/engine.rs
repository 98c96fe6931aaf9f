//! The matching engine: one price-time-priority [`Book`] per symbol (DESIGN.md §2,
//! "Trading rules").
//!
//! **Architecture Invariant:** the engine is pure and synchronous: no I/O, no clock, no
//! dependency beyond std (it borrows `Side` and `TimeInForce` from [`crate::api`]), and
//! `place`/`cancel`/`amend` do not allocate while the book is
//! within the capacity it was built with and the caller's `fills` vector has room.
//! Persistence, holds and events are the trading actor's business.
//!
//! Everything is an integer. A price is a count of the instrument's ticks
//! (`price / tick`) and a quantity a count of its lots (`quantity / lot`); the caller
//! converts, having rejected values off the tick or lot grid. A notional (`budget`) is
//! ticks × lots, i.e. `money / (tick × lot)` rounded down so that it never overspends.
//!
//! The rules, in the order `place` applies them:
//! - an incoming order trades with the best opposite price first and, within a price,
//!   with the order of lowest `priority` (earliest) first; each trade is at the resting
//!   (maker) order's price;
//! - a limit buy crosses an ask at or below its limit, a limit sell a bid at or above
//!   it; a market order (`limit: None`) crosses any price;
//! - self-trade prevention: reaching an order of the same owner stops matching and
//!   cancels the incoming order's remainder; the resting order is untouched;
//! - a buy with a `budget` takes at each maker only the whole lots it can still afford
//!   and, when it cannot afford one more, stops and cancels its remainder;
//! - FOK first checks, without touching the book, that the whole quantity is reachable
//!   under the rules above; if not, nothing trades;
//! - what is left rests only for a GTC limit order that stopped because the book no
//!   longer crossed; otherwise (IOC, FOK, market, self-trade, budget) it is cancelled.

#[path = "book.rs"]
mod book;

pub use crate::api::{Side, TimeInForce};
pub use book::{Book, Levels, RestingOrder};

/// Assigned by the caller: unique, and increasing with arrival, because it is also the
/// queue position (`priority`) of a newly resting order.
pub type OrderId = u64;
/// The user who owns an order, for self-trade prevention.
pub type OwnerId = u64;

/// An order arriving at the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub id: OrderId,
    pub owner: OwnerId,
    pub side: Side,
    /// Limit price in ticks; `None` is a market order, which never rests.
    pub limit: Option<i64>,
    /// Lots; zero or negative is accepted and cancelled without trading.
    pub qty: i64,
    pub tif: TimeInForce,
    /// For buys: the most the order may spend, as the sum of price × qty over its fills
    /// (ticks × lots). Meant for market buys sized in money; ignored on sells.
    pub budget: Option<i128>,
}

impl Incoming {
    pub fn limit(id: OrderId, owner: OwnerId, side: Side, price: i64, qty: i64, tif: TimeInForce) -> Incoming {
        Incoming { id, owner, side, limit: Some(price), qty, tif, budget: None }
    }

    /// A market order; its time in force matters only as FOK (all or nothing), since a
    /// market order never rests.
    pub fn market(id: OrderId, owner: OwnerId, side: Side, qty: i64) -> Incoming {
        Incoming { id, owner, side, limit: None, qty, tif: TimeInForce::Ioc, budget: None }
    }
}

/// One trade between a resting (maker) order and the incoming (taker) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub maker_id: OrderId,
    pub maker_owner: OwnerId,
    pub taker_id: OrderId,
    /// The maker's price, in ticks.
    pub price: i64,
    pub qty: i64,
    /// The maker's open quantity after this fill; 0 means it left the book.
    pub maker_remaining: i64,
}

/// What became of the part of an order that did not trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// It rests in the book (GTC limit only).
    Resting,
    /// It was cancelled: IOC, FOK that could not fill, market, self-trade prevention,
    /// budget exhausted, an amend to zero, or an invalid quantity.
    Cancelled,
    /// Nothing is left: the order filled completely.
    Filled,
}

/// The result of placing (or amending) one order; its fills were appended separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Lots traded by this call, the sum of its fills' `qty`.
    pub filled: i64,
    /// Lots not traded: resting or cancelled as `rest` says; 0 when `rest` is `Filled`.
    pub remaining: i64,
    pub rest: Rest,
    /// Matching stopped at an order of the same owner (for FOK: an own order stood
    /// between the order and its full quantity).
    pub self_trade_prevented: bool,
}

impl Outcome {
    fn cancelled(remaining: i64, self_trade_prevented: bool) -> Outcome {
        Outcome { filled: 0, remaining, rest: Rest::Cancelled, self_trade_prevented }
    }
}

/// Why matching stopped before the incoming order was filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The other side is empty.
    Empty,
    /// The best opposite price is beyond the limit.
    Price,
    SelfTrade,
    Budget,
}

impl Book {
    /// Matches an incoming order, appending its fills to `fills` (which is not cleared),
    /// and rests or cancels the remainder. An id that is already resting is refused
    /// untouched, as `Cancelled` with nothing filled.
    pub fn place(&mut self, o: Incoming, fills: &mut Vec<Fill>) -> Outcome {
        if self.get(o.id).is_some() {
            return Outcome::cancelled(o.qty.max(0), false);
        }
        self.enter(o, o.id, fills)
    }

    /// Changes a resting order's price and/or open quantity, keeping its id.
    ///
    /// A lower quantity at the same price keeps the queue position. A price change or a
    /// higher quantity re-enters the order as a new GTC limit order queued by
    /// `new_priority_id` (take it from the same sequence as order ids): it may cross and
    /// trade as taker, with fills carrying the original id. `new_qty_remaining <= 0`
    /// cancels the order (`Outcome::remaining` is then the cancelled quantity). Returns
    /// `None` when the id is not resting.
    pub fn amend(
        &mut self,
        id: OrderId,
        new_limit: i64,
        new_qty_remaining: i64,
        new_priority_id: OrderId,
        fills: &mut Vec<Fill>,
    ) -> Option<Outcome> {
        let current = *self.get(id)?;
        if new_qty_remaining <= 0 {
            self.cancel(id);
            return Some(Outcome::cancelled(current.remaining, false));
        }
        if new_limit == current.price && new_qty_remaining <= current.remaining {
            self.reduce(id, new_qty_remaining);
            return Some(Outcome { filled: 0, remaining: new_qty_remaining, rest: Rest::Resting, self_trade_prevented: false });
        }
        self.cancel(id);
        let again = Incoming {
            id,
            owner: current.owner,
            side: current.side,
            limit: Some(new_limit),
            qty: new_qty_remaining,
            tif: TimeInForce::Gtc,
            budget: None,
        };
        Some(self.enter(again, new_priority_id, fills))
    }

    /// `place` without the duplicate check; a remainder that rests is queued by `priority`.
    fn enter(&mut self, o: Incoming, priority: u64, fills: &mut Vec<Fill>) -> Outcome {
        if o.qty <= 0 {
            return Outcome::cancelled(0, false);
        }
        if o.tif == TimeInForce::Fok {
            if let Err(stop) = self.reachable(&o) {
                return Outcome::cancelled(o.qty, stop == Stop::SelfTrade);
            }
        }
        let makers = opposite(o.side);
        let mut remaining = o.qty;
        let mut budget = budget_of(&o);
        let stop = loop {
            if remaining == 0 {
                break None;
            }
            let Some(maker) = self.first(makers) else {
                break Some(Stop::Empty);
            };
            let qty = match allowance(&o, maker, remaining, budget) {
                Ok(qty) => qty,
                Err(stop) => break Some(stop),
            };
            let (maker_id, maker_owner, price) = (maker.id, maker.owner, maker.price);
            let maker_remaining = self.fill_first(makers, qty);
            fills.push(Fill { maker_id, maker_owner, taker_id: o.id, price, qty, maker_remaining });
            remaining -= qty;
            budget = budget.map(|b| b - i128::from(price) * i128::from(qty));
        };
        let filled = o.qty - remaining;
        let rest = match (stop, o.limit, o.tif) {
            (None, _, _) => Rest::Filled,
            (Some(Stop::Empty | Stop::Price), Some(price), TimeInForce::Gtc) => {
                self.push(RestingOrder { id: o.id, owner: o.owner, side: o.side, price, remaining, priority });
                Rest::Resting
            }
            _ => Rest::Cancelled,
        };
        Outcome { filled, remaining, rest, self_trade_prevented: stop == Some(Stop::SelfTrade) }
    }

    /// FOK's dry run: walks the makers `enter` would trade with, in the same order and
    /// under the same rules, until the full quantity is found or a rule stops it.
    fn reachable(&self, o: &Incoming) -> Result<(), Stop> {
        let mut need = o.qty;
        let mut budget = budget_of(o);
        for maker in self.side_orders(opposite(o.side)) {
            let qty = allowance(o, maker, need, budget)?;
            need -= qty;
            if need == 0 {
                return Ok(());
            }
            if qty < maker.remaining {
                // Only the budget leaves a maker unfinished with lots still wanted;
                // matching would stop right here, before any later maker.
                return Err(Stop::Budget);
            }
            budget = budget.map(|b| b - i128::from(maker.price) * i128::from(qty));
        }
        Err(Stop::Empty)
    }
}

/// How many lots the taker may take from `maker` now, or why it may take none. The one
/// place where the limit, self-trade and budget rules are written, shared by matching
/// and by the FOK dry run so that the two cannot disagree.
fn allowance(o: &Incoming, maker: &RestingOrder, remaining: i64, budget: Option<i128>) -> Result<i64, Stop> {
    let crosses = match (o.limit, o.side) {
        (None, _) => true,
        (Some(limit), Side::Buy) => limit >= maker.price,
        (Some(limit), Side::Sell) => limit <= maker.price,
    };
    if !crosses {
        return Err(Stop::Price);
    }
    if maker.owner == o.owner {
        return Err(Stop::SelfTrade);
    }
    let mut qty = remaining.min(maker.remaining);
    if let (Some(budget), true) = (budget, maker.price > 0) {
        let affordable = budget.max(0) / i128::from(maker.price);
        qty = qty.min(i64::try_from(affordable).unwrap_or(i64::MAX));
    }
    if qty == 0 {
        return Err(Stop::Budget);
    }
    Ok(qty)
}

/// The budget that applies: only buys spend money.
fn budget_of(o: &Incoming) -> Option<i128> {
    match o.side {
        Side::Buy => o.budget,
        Side::Sell => None,
    }
}

fn opposite(side: Side) -> Side {
    match side {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
