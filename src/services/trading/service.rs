//! The trading actor: books in memory, their state in `data/trading.db`.

use super::engine::{self, Book, Incoming, Rest, RestingOrder};
use super::{Cancelled, Cmd, MatchRequest, MatchResult, TradeFill};
use crate::api::{ApiError, BookView, OrderType, Side, TimeInForce};
use crate::services::actor::{AfterCommit, Service, ServiceCtx, ServiceError};
use crate::services::names::Names;
use crate::services::store::{DecimalText, Held};
use foldhash::{HashMap, HashMapExt};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE resting (
        internal_id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        remaining TEXT NOT NULL,
        priority INTEGER NOT NULL,
        tick TEXT NOT NULL,
        lot TEXT NOT NULL
    );
    CREATE TABLE outcomes (order_id TEXT PRIMARY KEY, result TEXT NOT NULL);
    CREATE TABLE cancels (order_id TEXT PRIMARY KEY, remaining TEXT NOT NULL, timestamp TEXT NOT NULL);
    CREATE TABLE trades (
        trade_id TEXT PRIMARY KEY,
        symbol TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        taker_side TEXT NOT NULL,
        buy_order_id TEXT NOT NULL,
        sell_order_id TEXT NOT NULL,
        timestamp TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('next_id', 1), ('sequence', 0);",
    // Tables keyed by text kept in their key's b-tree: one page less per row written.
    "CREATE TABLE outcomes_v2 (order_id TEXT PRIMARY KEY, result TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO outcomes_v2 SELECT order_id, result FROM outcomes;
    DROP TABLE outcomes;
    ALTER TABLE outcomes_v2 RENAME TO outcomes;
    CREATE TABLE cancels_v2 (order_id TEXT PRIMARY KEY, remaining TEXT NOT NULL, timestamp TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO cancels_v2 SELECT order_id, remaining, timestamp FROM cancels;
    DROP TABLE cancels;
    ALTER TABLE cancels_v2 RENAME TO cancels;
    CREATE TABLE trades_v2 (
        trade_id TEXT PRIMARY KEY,
        symbol TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        taker_side TEXT NOT NULL,
        buy_order_id TEXT NOT NULL,
        sell_order_id TEXT NOT NULL,
        timestamp TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO trades_v2 SELECT * FROM trades;
    DROP TABLE trades;
    ALTER TABLE trades_v2 RENAME TO trades;",
    // No unique index on the order id of a resting order: nothing reads by it (the actor
    // keeps order id → engine id in memory, one each), and every rest, fill and cancel
    // wrote a page of it.
    "CREATE TABLE resting_v2 (
        internal_id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        remaining TEXT NOT NULL,
        priority INTEGER NOT NULL,
        tick TEXT NOT NULL,
        lot TEXT NOT NULL
    );
    INSERT INTO resting_v2 SELECT * FROM resting;
    DROP TABLE resting;
    ALTER TABLE resting_v2 RENAME TO resting;",
    crate::services::intake::JOURNAL_MIGRATION,
    // The journal moved to its own store (`trading-journal.db`), and trading's book now
    // commits with risk and orders: it keeps a mark of the records it holds, as they do.
    // The old table stays for the records an older agt left there.
    crate::services::intake::APPLIED_MIGRATION,
];

/// One symbol's book and the grid its integers are counted on.
struct SymbolBook {
    book: Book,
    tick: Decimal,
    lot: Decimal,
    /// Bumped on every change, for `BookView.sequence`.
    sequence: u64,
}

/// What the actor remembers of a resting order besides the engine's integers.
/// A resting order's texts, shared: the order id with [`Trading::ids`]' key, the user and
/// symbol with every other order that names them (`names`).
struct Meta {
    order_id: Arc<str>,
    user_id: Arc<str>,
    symbol: Arc<str>,
}

/// A `TRADE_EXECUTED` event's data, borrowed from the fill it announces: the same JSON
/// as [`crate::api::Trade`] (checked by a test), without copying the ids, the symbol and
/// the time into a `Trade` first (five strings per fill).
#[derive(serde::Serialize)]
struct TradeRef<'a> {
    trade_id: &'a str,
    symbol: &'a str,
    price: Decimal,
    quantity: Decimal,
    taker_side: Side,
    buy_order_id: &'a str,
    sell_order_id: &'a str,
    timestamp: &'a str,
}

pub struct Trading {
    books: HashMap<String, SymbolBook>,
    /// Engine id of each resting order, by order id.
    ids: HashMap<Arc<str>, u64>,
    meta: HashMap<u64, Meta>,
    /// One shared copy of each user id and symbol resting orders name.
    names: Names,
    /// A small integer per user for self-trade prevention.
    owners: HashMap<String, u64>,
    next_id: u64,
    sequence: u64,
    /// `next_id` and `sequence` as `meta` holds them: both are written once per batch
    /// ([`Service::before_commit`]), not once per order and change.
    stored: (u64, u64),
    /// Reused for every match: no allocation per order once warm.
    fills: Vec<engine::Fill>,
    /// The resting orders a command changed since the last commit (rested, filled,
    /// amended, cancelled), by engine id, each with whether the committed `resting`
    /// table holds a row for it. Their rows are written once, as the commit finds them
    /// ([`Trading::write_resting`]): an order that rests and is filled between two
    /// commits is never written, and one filled five times is written once.
    changed: HashMap<u64, bool>,
    /// Reused by [`Trading::write_resting`] to write the rows in engine-id order.
    changed_ids: Vec<(u64, bool)>,
}

fn dec(s: &str) -> Result<Decimal, ServiceError> {
    Decimal::from_str(s).map_err(|e| ServiceError::Other(format!("corrupt decimal {s:?} in trading.db: {e}")))
}

/// `value / unit` as a whole number, or an error naming what is off the grid. The
/// engine counts prices in ticks and quantities in lots as `i64`s, so a value of more
/// than `i64::MAX` units is refused, and the message says where that bound lies (it
/// said only "too large", and nothing else in the API names it).
fn units(value: Decimal, unit: Decimal, what: &'static str) -> Result<i64, ApiError> {
    let code = if what == "price" { "invalid_tick" } else { "invalid_lot" };
    if unit <= Decimal::ZERO {
        return Err(ApiError::invalid(code, format!("the instrument's {what} unit must be positive")));
    }
    let too_large = || {
        let (one, of) = if what == "price" { ("tick", "ticks") } else { ("lot", "lots") };
        let most = Decimal::from(i64::MAX).checked_mul(unit).map(|m| format!("{} (", m.normalize())).unwrap_or_default();
        let close = if most.is_empty() { "" } else { ")" };
        ApiError::invalid(code, format!("{what} {value} is too large: the most is {most}{} {of} of the {one} {unit}{close}", i64::MAX))
    };
    let n = value.checked_div(unit).ok_or_else(too_large)?;
    if n.fract() != Decimal::ZERO {
        return Err(ApiError::rejected(code, format!("{what} {value} is not a multiple of {unit}")));
    }
    i64::try_from(n).map_err(|_| too_large())
}

impl Trading {
    fn owner(&mut self, user_id: &str) -> u64 {
        if let Some(&known) = self.owners.get(user_id) {
            return known;
        }
        let n = self.owners.len() as u64 + 1;
        *self.owners.entry(user_id.to_string()).or_insert(n)
    }

    fn book_mut(&mut self, symbol: &str, tick: Decimal, lot: Decimal) -> &mut SymbolBook {
        if !self.books.contains_key(symbol) {
            self.books.insert(symbol.to_string(), SymbolBook { book: Book::with_capacity(1024), tick, lot, sequence: 0 });
        }
        self.books.get_mut(symbol).expect("inserted above")
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn bump(&mut self, symbol: &str) {
        self.sequence += 1;
        if let Some(b) = self.books.get_mut(symbol) {
            b.sequence = self.sequence;
        }
    }

    /// Writes the trades of `self.fills` for taker `order`, updates or removes the makers,
    /// and returns them as the API sees them. A redo passes the fills the journal
    /// recorded: their trade ids and times are kept, and any other difference is an error.
    fn record_fills(
        &mut self,
        tx: &Held,
        symbol: &str,
        taker_order_id: &str,
        taker_side: Side,
        journaled: Option<&[TradeFill]>,
        after: &mut AfterCommit,
    ) -> Result<Vec<TradeFill>, ServiceError> {
        let (tick, lot) = {
            let b = &self.books[symbol];
            (b.tick, b.lot)
        };
        let now = crate::api::now_rfc3339();
        let mut out = Vec::with_capacity(self.fills.len());
        let fills = std::mem::take(&mut self.fills);
        if journaled.is_some_and(|j| j.len() != fills.len()) {
            self.fills = fills;
            return Err(ServiceError::Other(format!("redoing {taker_order_id}: the book made other fills than the journal recorded")));
        }
        for (i, f) in fills.iter().enumerate() {
            let maker = self.meta.get(&f.maker_id).ok_or_else(|| ServiceError::Other(format!("maker {} unknown", f.maker_id)))?;
            let (maker_order_id, maker_user_id) = (maker.order_id.to_string(), maker.user_id.to_string());
            // Normalized: a price of 19000 ticks of 0.01 is 190, not 190.00, as the order's
            // own price is written.
            let price = (Decimal::from(f.price) * tick).normalize();
            let quantity = (Decimal::from(f.qty) * lot).normalize();
            let maker_remaining = (Decimal::from(f.maker_remaining) * lot).normalize();
            let (trade_id, timestamp) = match journaled.map(|j| &j[i]) {
                None => (format!("trd_{}", uuid::Uuid::now_v7().simple()), now.clone()),
                Some(j) if (&j.maker_order_id, j.price, j.quantity, j.maker_remaining) == (&maker_order_id, price, quantity, maker_remaining) => {
                    (j.trade_id.clone(), j.timestamp.clone())
                }
                Some(j) => {
                    return Err(ServiceError::Other(format!(
                        "redoing {taker_order_id}: the book filled {quantity} at {price} against {maker_order_id}, the journal {} at {} against {}",
                        j.quantity, j.price, j.maker_order_id
                    )))
                }
            };
            let (buy, sell) = match taker_side {
                Side::Buy => (taker_order_id, maker_order_id.as_str()),
                Side::Sell => (maker_order_id.as_str(), taker_order_id),
            };
            tx.execute(
                "INSERT INTO trades (trade_id, symbol, price, quantity, taker_side, buy_order_id, sell_order_id, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![trade_id, symbol, DecimalText::of(price), DecimalText::of(quantity), taker_side.as_str(), buy, sell, timestamp],
            )?;
            self.changed.entry(f.maker_id).or_insert(true);
            if f.maker_remaining == 0 {
                self.ids.remove(maker_order_id.as_str());
                self.meta.remove(&f.maker_id);
            }
            let trade = TradeRef {
                trade_id: &trade_id,
                symbol,
                price,
                quantity,
                taker_side,
                buy_order_id: buy,
                sell_order_id: sell,
                timestamp: &timestamp,
            };
            after.event_of("TRADE_EXECUTED", &trade);
            out.push(TradeFill { trade_id, maker_order_id, maker_user_id, price, quantity, maker_remaining, timestamp });
        }
        crate::daemon::metrics::get().trades.inc_by(fills.len() as u64);
        self.fills = fills;
        self.fills.clear();
        Ok(out)
    }

    /// Notes that an order rests (a new one, or an amended one at its new price and
    /// size); its row is written at the commit ([`Trading::write_resting`]).
    /// `stored`: whether the committed table may already hold its row (an amend's order
    /// rested before).
    fn rest(&mut self, req: &MatchRequest, internal: u64, stored: bool) {
        self.changed.entry(internal).or_insert(stored);
        let _ = self.remember(internal, &req.order_id, &req.user_id, &req.symbol);
    }

    /// Whether resting orders changed since the `resting` table was last written.
    pub(crate) fn has_unwritten(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Brings the `resting` table level with the books for every order changed since
    /// the last commit: the row of an order that still rests is written as it rests now,
    /// the row of one that left its book is deleted, and one that came and went between
    /// two commits is never written. Rows go in engine-id order, the table's own.
    pub(crate) fn write_resting(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut ids = std::mem::take(&mut self.changed_ids);
        ids.extend(self.changed.drain());
        ids.sort_unstable_by_key(|(internal, _)| *internal);
        // One statement per kind of row for the commit's hundreds of rows, not one per row.
        let tx = &Held::new(tx);
        let written = (|| -> Result<(), ServiceError> {
            for &(internal, stored) in &ids {
                let resting = self.meta.get(&internal).and_then(|m| {
                    let b = &self.books[&*m.symbol];
                    b.book.get(internal).map(|o| (m, b, o))
                });
                match resting {
                    Some((m, b, o)) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO resting (internal_id, order_id, user_id, symbol, side, price, remaining, priority, tick, lot)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                            params![
                            internal as i64,
                            &*m.order_id,
                            &*m.user_id,
                            &*m.symbol,
                            o.side.as_str(),
                            DecimalText::of((Decimal::from(o.price) * b.tick).normalize()),
                            // Normalised as every stored decimal is: 1000 lots of 0.001 are "1", not "1.000".
                            DecimalText::of((Decimal::from(o.remaining) * b.lot).normalize()),
                            o.priority as i64,
                            DecimalText::of(b.tick),
                            DecimalText::of(b.lot)
                        ])?;
                    }
                    None if stored => {
                        tx.execute("DELETE FROM resting WHERE internal_id = ?1", [internal as i64])?;
                    }
                    None => {}
                }
            }
            Ok(())
        })();
        ids.clear();
        self.changed_ids = ids;
        written
    }

    /// Matches one order (`Cmd::Match`, the step a resumed saga replays): an order matched
    /// before answers its stored outcome, and a new one stores its outcome for a replay.
    pub(crate) fn do_match(
        &mut self,
        tx: &Connection,
        req: MatchRequest,
        after: &mut AfterCommit,
    ) -> Result<Result<MatchResult, ApiError>, ServiceError> {
        if let Some(json) = tx
            .prepare_cached("SELECT result FROM outcomes WHERE order_id = ?1")?
            .query_row([&req.order_id], |r| r.get::<_, String>(0))
            .optional()?
        {
            let stored: MatchResult = serde_json::from_str(&json).map_err(|e| ServiceError::Other(e.to_string()))?;
            return Ok(Ok(stored));
        }
        let result = self.match_as(&Held::new(tx), req, None, after)?;
        if let Ok(r) = &result {
            Self::keep_outcome(tx, r)?;
        }
        Ok(result)
    }

    /// Stores a match's outcome, for [`Trading::do_match`] to answer when a resumed saga
    /// replays its match step. The lane calls it for a placement whose settlement risk
    /// refused: that order stays `settling` for recovery to finish, and recovery must
    /// find this outcome rather than match the order a second time.
    pub(crate) fn keep_outcome(tx: &Connection, result: &MatchResult) -> Result<(), ServiceError> {
        tx.prepare_cached("INSERT OR IGNORE INTO outcomes (order_id, result) VALUES (?1, ?2)")?
            .execute(params![result.order_id, serde_json::to_string(result).unwrap_or_default()])?;
        Ok(())
    }

    /// Matches a lane placement: an order never matched before (its id was just made by
    /// `saga::place`), so no stored outcome is looked for, and none is stored. A replay
    /// needs none: the intake journal holds the outcome until all three stores have
    /// applied it ([`Trading::redo_match`]), and the order is recorded done in the same
    /// flush, so no saga is resumed for it (unless risk refuses its settlement: see
    /// [`Trading::keep_outcome`]). Storing it was ~40 % of the pages trading wrote per
    /// order.
    pub(crate) fn match_new(
        &mut self,
        tx: &Held,
        req: MatchRequest,
        after: &mut AfterCommit,
    ) -> Result<Result<MatchResult, ApiError>, ServiceError> {
        self.match_as(tx, req, None, after)
    }

    /// Matches a placement again from the lane's intake journal after a crash took
    /// trading's uncommitted work: the book is as it was then, so the engine must make
    /// the same fills, and they keep the trade ids and times already answered (and
    /// recorded by orders). Anything else is an error, never a silent difference.
    pub(crate) fn redo_match(
        &mut self,
        tx: &Connection,
        req: MatchRequest,
        journaled: &MatchResult,
        after: &mut AfterCommit,
    ) -> Result<(), ServiceError> {
        let order_id = req.order_id.clone();
        match self.match_as(&Held::new(tx), req, Some(journaled), after)? {
            Ok(result) if &result == journaled => Ok(()),
            Ok(result) => Err(ServiceError::Other(format!("redoing {order_id}: the book answered {result:?}, the journal {journaled:?}"))),
            Err(e) => {
                Err(ServiceError::Other(format!("redoing {order_id}: the book refused it ({}) but the journal has it matched", e.message)))
            }
        }
    }

    fn match_as(
        &mut self,
        tx: &Held,
        req: MatchRequest,
        journaled: Option<&MatchResult>,
        after: &mut AfterCommit,
    ) -> Result<Result<MatchResult, ApiError>, ServiceError> {
        let qty = match units(req.quantity, req.lot, "quantity") {
            Ok(q) => q,
            Err(e) => return Ok(Err(e)),
        };
        let limit = match (req.kind, req.price) {
            (OrderType::Limit, Some(p)) => match units(p, req.tick, "price") {
                Ok(t) => Some(t),
                Err(e) => return Ok(Err(e)),
            },
            (OrderType::Limit, None) => return Ok(Err(ApiError::invalid("invalid_price", "a limit order needs a price"))),
            (OrderType::Market, _) => None,
        };
        // A budget of more units than a decimal holds (a balance near the 28-digit limit,
        // a small tick) is more than any book can take: unlimited, not a panic.
        let budget = req.budget.map(|b| {
            let units = req.tick.checked_mul(req.lot).and_then(|unit| b.checked_div(unit));
            units.and_then(|u| rust_decimal::prelude::ToPrimitive::to_i128(&u.floor())).unwrap_or(i128::MAX)
        });
        let owner = self.owner(&req.user_id);
        let internal = self.take_id();
        let incoming = Incoming { id: internal, owner, side: req.side, limit, qty, tif: req.time_in_force, budget };
        let mut fills = std::mem::take(&mut self.fills);
        let outcome = self.book_mut(&req.symbol, req.tick, req.lot).book.place(incoming, &mut fills);
        self.fills = fills;
        let lot = req.lot;
        let trade_fills = self.record_fills(tx, &req.symbol, &req.order_id, req.side, journaled.map(|j| &j.fills[..]), after)?;
        if outcome.rest == Rest::Resting {
            self.rest(&req, internal, false);
        }
        let result = MatchResult {
            order_id: req.order_id.clone(),
            fills: trade_fills,
            filled: (Decimal::from(outcome.filled) * lot).normalize(),
            remaining: (Decimal::from(outcome.remaining) * lot).normalize(),
            rests: outcome.rest == Rest::Resting,
            self_trade_prevented: outcome.self_trade_prevented,
        };
        self.bump(&req.symbol);
        Ok(Ok(result))
    }

    /// The resting orders of `user_id` and/or `symbol` (all, with neither), in the order
    /// they rested (their engine ids), not the map's: a cancel-all answers them so, and
    /// each store meets their rows in the order it wrote them.
    pub(crate) fn resting_of(&self, user_id: Option<&str>, symbol: Option<&str>) -> Vec<String> {
        let mut targets: Vec<(u64, &str)> = self
            .meta
            .iter()
            .filter(|(_, m)| user_id.is_none_or(|u| u == &*m.user_id) && symbol.is_none_or(|s| s == &*m.symbol))
            .map(|(internal, m)| (*internal, &*m.order_id))
            .collect();
        targets.sort_unstable_by_key(|(internal, _)| *internal);
        targets.into_iter().map(|(_, id)| id.to_string()).collect()
    }

    /// Takes a resting order out of its book (`None`: it rests in none).
    pub(crate) fn cancel(&mut self, tx: &Connection, order_id: &str) -> Result<Option<Cancelled>, ServiceError> {
        let Some(&internal) = self.ids.get(order_id) else { return Ok(None) };
        let Some(meta) = self.meta.get(&internal) else { return Ok(None) };
        let symbol = meta.symbol.clone();
        let user_id = meta.user_id.to_string();
        let Some(book) = self.books.get_mut(&*symbol) else { return Ok(None) };
        let Some(removed) = book.book.cancel(internal) else { return Ok(None) };
        let remaining = (Decimal::from(removed.remaining) * book.lot).normalize();
        self.changed.entry(internal).or_insert(true);
        tx.prepare_cached("INSERT OR REPLACE INTO cancels (order_id, remaining, timestamp) VALUES (?1, ?2, ?3)")?.execute(params![
            order_id,
            remaining.to_string(),
            crate::api::now_rfc3339()
        ])?;
        self.ids.remove(order_id);
        self.meta.remove(&internal);
        self.bump(&symbol);
        Ok(Some(Cancelled { order_id: order_id.to_string(), user_id, remaining }))
    }

    /// The tick and lot of the book an order rests in.
    pub(crate) fn grid_of(&self, order_id: &str) -> Option<(Decimal, Decimal)> {
        let internal = self.ids.get(order_id)?;
        let book = &self.books[&*self.meta.get(internal)?.symbol];
        Some((book.tick, book.lot))
    }

    /// [`Trading::amend`] again, from the intake journal: the book must make the fills
    /// the journal has, which keep their trade ids and times (see [`Trading::redo_match`]).
    pub(crate) fn redo_amend(
        &mut self,
        tx: &Connection,
        order_id: &str,
        price: Decimal,
        remaining: Decimal,
        journaled: &MatchResult,
        after: &mut AfterCommit,
    ) -> Result<(), ServiceError> {
        match self.amend(tx, order_id, price, remaining, Some(journaled), after)? {
            Ok(result) if &result == journaled => Ok(()),
            Ok(result) => Err(ServiceError::Other(format!(
                "redoing the amend of {order_id}: the book answered {result:?}, the journal {journaled:?}"
            ))),
            Err(e) => Err(ServiceError::Other(format!("redoing the amend of {order_id}: the book refused it ({})", e.message))),
        }
    }

    /// A resting order's new price and/or remaining quantity; it may trade as a taker.
    /// `journaled`: the fills a redo must make ([`Trading::redo_amend`]).
    pub(crate) fn amend(
        &mut self,
        tx: &Connection,
        order_id: &str,
        price: Decimal,
        remaining: Decimal,
        journaled: Option<&MatchResult>,
        after: &mut AfterCommit,
    ) -> Result<Result<MatchResult, ApiError>, ServiceError> {
        let Some(&internal) = self.ids.get(order_id) else {
            return Ok(Err(ApiError::conflict("order_not_open", format!("order {order_id} is not resting in a book"))));
        };
        let (symbol, user_id) = {
            let m = &self.meta[&internal];
            (m.symbol.to_string(), m.user_id.to_string())
        };
        let (tick, lot) = {
            let b = &self.books[&symbol];
            (b.tick, b.lot)
        };
        let (ticks, lots) = match (units(price, tick, "price"), units(remaining, lot, "quantity")) {
            (Ok(t), Ok(l)) => (t, l),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let current = *self.books[&symbol].book.get(internal).expect("an indexed order is in its book");
        let priority = self.take_id();
        let mut fills = std::mem::take(&mut self.fills);
        let outcome = self.books.get_mut(&symbol).expect("book").book.amend(internal, ticks, lots, priority, &mut fills);
        self.fills = fills;
        let Some(outcome) = outcome else {
            return Ok(Err(ApiError::conflict("order_not_open", format!("order {order_id} is not resting in a book"))));
        };
        let trade_fills = self.record_fills(&Held::new(tx), &symbol, order_id, current.side, journaled.map(|j| &j.fills[..]), after)?;
        let req = MatchRequest {
            order_id: order_id.to_string(),
            user_id,
            symbol: symbol.clone(),
            side: current.side,
            kind: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Some(price),
            quantity: remaining,
            tick,
            lot,
            budget: None,
        };
        if outcome.rest == Rest::Resting {
            self.rest(&req, internal, true);
        } else {
            self.changed.entry(internal).or_insert(true);
            self.ids.remove(order_id);
            self.meta.remove(&internal);
        }
        self.bump(&symbol);
        Ok(Ok(MatchResult {
            order_id: order_id.to_string(),
            fills: trade_fills,
            filled: (Decimal::from(outcome.filled) * lot).normalize(),
            remaining: (Decimal::from(outcome.remaining) * lot).normalize(),
            rests: outcome.rest == Rest::Resting,
            self_trade_prevented: outcome.self_trade_prevented,
        }))
    }

    /// Indexes a resting order by its order id, with its texts; the shared symbol.
    fn remember(&mut self, internal: u64, order_id: &str, user_id: &str, symbol: &str) -> Arc<str> {
        let order_id: Arc<str> = Arc::from(order_id);
        let (user_id, symbol) = (self.names.get(user_id), self.names.get(symbol));
        self.ids.insert(order_id.clone(), internal);
        self.meta.insert(internal, Meta { order_id, user_id, symbol: symbol.clone() });
        symbol
    }

    /// Whether the order rests in a book.
    pub(crate) fn rests(&self, order_id: &str) -> bool {
        self.ids.contains_key(order_id)
    }

    /// Whether a cancel took the order out of its book.
    pub(crate) fn cancelled_from_book(tx: &Connection, order_id: &str) -> rusqlite::Result<bool> {
        tx.prepare_cached("SELECT 1 FROM cancels WHERE order_id = ?1")?.exists([order_id])
    }
}

impl Service for Trading {
    type Cmd = Cmd;
    const NAME: &'static str = "trading";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    /// Writes the resting orders the batch changed ([`Trading::write_resting`]), and the
    /// engine-id counter and the book sequence if the batch moved them. A failed batch
    /// rolls back and restarts the service, which reloads all three.
    fn before_commit(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        self.write_resting(tx)?;
        if self.stored != (self.next_id, self.sequence) {
            let mut set = tx.prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?;
            set.execute(params!["next_id", self.next_id as i64])?;
            set.execute(params!["sequence", self.sequence as i64])?;
            self.stored = (self.next_id, self.sequence);
        }
        Ok(())
    }

    /// Rebuilds every book from its resting orders, in their original priority.
    fn load(conn: &rusqlite::Connection, _ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let next_id: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'next_id'", [], |r| r.get(0))?;
        let sequence: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'sequence'", [], |r| r.get(0))?;
        let mut t = Trading {
            books: HashMap::new(),
            ids: HashMap::new(),
            meta: HashMap::new(),
            names: Names::default(),
            owners: HashMap::new(),
            next_id: next_id as u64,
            sequence: sequence as u64,
            stored: (next_id as u64, sequence as u64),
            fills: Vec::with_capacity(256),
            changed: HashMap::new(),
            changed_ids: Vec::new(),
        };
        let resting: usize = conn.query_row("SELECT count(*) FROM resting", [], |r| r.get(0))?;
        t.ids.reserve(resting);
        t.meta.reserve(resting);
        // In the table's order, sorted by priority below: SQLite's own sort of every row
        // (`ORDER BY priority`) was ~100 ms of a restart with 114 k resting orders.
        let mut stmt =
            conn.prepare("SELECT internal_id, order_id, user_id, symbol, side, price, remaining, priority, tick, lot FROM resting")?;
        let mut queued: Vec<(Arc<str>, RestingOrder)> = Vec::with_capacity(resting);
        let text_at = crate::services::store::text_at;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let internal = r.get::<_, i64>(0)? as u64;
            let (order_id, user_id, symbol) = (text_at(r, 1)?, text_at(r, 2)?, text_at(r, 3)?);
            let side = crate::services::store::enum_at(r, 4, Side::parse)?;
            let (price, remaining, priority) = (dec(&r.get::<_, String>(5)?)?, dec(&r.get::<_, String>(6)?)?, r.get::<_, i64>(7)? as u64);
            let (tick, lot) = (dec(&r.get::<_, String>(8)?)?, dec(&r.get::<_, String>(9)?)?);
            let owner = t.owner(user_id);
            let (price_t, rem_l) = (
                units(price, tick, "price").map_err(|e| ServiceError::Other(e.message))?,
                units(remaining, lot, "quantity").map_err(|e| ServiceError::Other(e.message))?,
            );
            t.book_mut(symbol, tick, lot).sequence = sequence as u64;
            let symbol = t.remember(internal, order_id, user_id, symbol);
            queued.push((symbol, RestingOrder { id: internal, owner, side, price: price_t, remaining: rem_l, priority }));
        }
        drop(rows);
        // Engine ids are mostly in priority order already (only an amend that lost its
        // place moves an order back), so this sort runs over a nearly sorted list. A book
        // queues each order by priority whatever the order they come in, but walks back
        // past every later one to do it: sorted, each insert is at a level's tail.
        queued.sort_by_key(|(_, o)| o.priority);
        for (symbol, order) in queued {
            t.books.get_mut(&*symbol).expect("made for its first order").book.insert_resting(order);
        }
        Ok(t)
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Match { req, reply } => {
                let r = self.do_match(tx, req, after)?;
                after.reply(reply, r);
            }
            Cmd::Book { symbol, depth, reply } => {
                let view = match self.books.get(&symbol) {
                    // No book in memory: nothing rests on it since the start. The counter
                    // as it stands is past every change this book had, where 0 went back
                    // below what a client saw before a restart.
                    None => BookView { symbol, bids: vec![], asks: vec![], sequence: self.sequence },
                    Some(b) => {
                        let (bids, asks) = b.book.depth(depth);
                        let conv = |v: Vec<(i64, i64)>| {
                            v.into_iter()
                                .map(|(p, q)| ((Decimal::from(p) * b.tick).normalize(), (Decimal::from(q) * b.lot).normalize()))
                                .collect()
                        };
                        BookView { symbol, bids: conv(bids), asks: conv(asks), sequence: b.sequence }
                    }
                };
                after.reply(reply, Ok(view));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::actor::{ServiceCtx, Unit};

    /// A value past the engine's `i64` count of ticks or lots says where the bound is.
    #[test]
    fn a_value_past_the_engines_count_names_the_most_it_may_be() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(units(d("9223372036854775807"), d("1"), "quantity").unwrap(), i64::MAX);
        let e = units(d("9223372036854775808"), d("1"), "quantity").unwrap_err();
        assert_eq!(
            (&*e.code, e.message.as_str()),
            (
                "invalid_lot",
                "quantity 9223372036854775808 is too large: the most is 9223372036854775807 (9223372036854775807 lots of the lot 1)"
            )
        );
        let e = units(d("100000000000000000"), d("0.01"), "price").unwrap_err();
        assert_eq!(
            e.message,
            "price 100000000000000000 is too large: the most is 92233720368547758.07 (9223372036854775807 ticks of the tick 0.01)"
        );
    }

    fn order(id: &str, user: &str, side: Side, price: &str, quantity: &str) -> MatchRequest {
        MatchRequest {
            order_id: id.into(),
            user_id: user.into(),
            symbol: "AAPL".into(),
            side,
            kind: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Some(price.parse().unwrap()),
            quantity: quantity.parse().unwrap(),
            tick: "0.01".parse().unwrap(),
            lot: "1".parse().unwrap(),
            budget: None,
        }
    }

    fn place(unit: &mut Unit<Trading>, o: MatchRequest) {
        unit.work(|svc, tx, after| svc.match_new(&Held::new(tx), o, after)).unwrap().unwrap();
    }

    /// A `resting` row: order id, price, remaining, priority.
    type Row = (String, String, String, i64);

    /// Each row of `resting`, and every write a temporary trigger saw since the last look.
    fn rows_and_writes(unit: &mut Unit<Trading>) -> (Vec<Row>, Vec<String>) {
        unit.work(|_, tx, _| {
            let rows = tx
                .prepare("SELECT order_id, price, remaining, priority FROM resting ORDER BY internal_id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let writes =
                tx.prepare("SELECT what FROM temp.writes ORDER BY rowid")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            tx.execute("DELETE FROM temp.writes", [])?;
            Ok((rows, writes))
        })
        .unwrap()
    }

    /// The `resting` table is written at the commit, once per order a batch changed, as
    /// the book then holds it: an order that rests and is filled between two commits is
    /// never written, a filled, amended or cancelled one is rewritten or deleted once,
    /// and the books a restart rebuilds from the table are the books that were committed.
    #[test]
    fn resting_rows_are_written_once_per_commit_as_the_books_stand() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        let mut unit = Unit::<Trading>::open(&ctx).unwrap();
        unit.work(|_, tx, _| {
            tx.execute_batch(
                "CREATE TEMP TABLE writes (what TEXT);
                 CREATE TEMP TRIGGER resting_in AFTER INSERT ON main.resting BEGIN INSERT INTO writes VALUES ('insert ' || new.order_id); END;
                 CREATE TEMP TRIGGER resting_up AFTER UPDATE ON main.resting BEGIN INSERT INTO writes VALUES ('update ' || new.order_id); END;
                 CREATE TEMP TRIGGER resting_out AFTER DELETE ON main.resting BEGIN INSERT INTO writes VALUES ('delete ' || old.order_id); END;",
            )?;
            Ok(())
        })
        .unwrap();
        place(&mut unit, order("ord_a", "u1", Side::Sell, "100", "5"));
        place(&mut unit, order("ord_b", "u1", Side::Sell, "101", "3"));
        place(&mut unit, order("ord_c", "u2", Side::Buy, "100", "1"));
        let (_, writes) = rows_and_writes(&mut unit);
        assert!(writes.is_empty(), "nothing is written before the commit: {writes:?}");
        unit.commit(&bus).unwrap();
        let (rows, writes) = rows_and_writes(&mut unit);
        assert_eq!(writes, ["insert ord_a", "insert ord_b"], "ord_a once, as the fill of ord_c left it");
        let a_priority = rows[0].3;
        assert_eq!(rows, [("ord_a".into(), "100".into(), "4".into(), a_priority), ("ord_b".into(), "101".into(), "3".into(), rows[1].3)]);

        // Rests and is filled between two commits: never written.
        place(&mut unit, order("ord_d", "u1", Side::Sell, "99", "2"));
        place(&mut unit, order("ord_e", "u2", Side::Buy, "99", "2"));
        // Filled twice: written once.
        place(&mut unit, order("ord_f", "u2", Side::Buy, "100", "1"));
        place(&mut unit, order("ord_g", "u2", Side::Buy, "100", "1"));
        unit.work(|svc, tx, _| {
            assert!(svc.cancel(tx, "ord_b")?.is_some());
            Ok(())
        })
        .unwrap();
        unit.commit(&bus).unwrap();
        let (rows, writes) = rows_and_writes(&mut unit);
        assert_eq!(writes, ["insert ord_a", "delete ord_b"], "ord_a once after two fills, ord_b once, ord_d never");
        assert_eq!(rows, [("ord_a".into(), "100".into(), "2".into(), a_priority)]);

        // An amend moves the order and its priority; a later full fill in the same batch
        // deletes the row.
        unit.work(|svc, tx, after| Ok(svc.amend(tx, "ord_a", "100.5".parse().unwrap(), "2".parse().unwrap(), None, after)?.unwrap()))
            .unwrap();
        place(&mut unit, order("ord_h", "u3", Side::Sell, "102", "7"));
        unit.commit(&bus).unwrap();
        let (rows, _) = rows_and_writes(&mut unit);
        assert_eq!(
            rows.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str())).collect::<Vec<_>>(),
            [("ord_a", "100.5", "2"), ("ord_h", "102", "7")]
        );
        assert!(rows[0].3 > a_priority, "an amend that changes the price loses its place");
        place(&mut unit, order("ord_i", "u2", Side::Buy, "100.5", "2"));
        unit.commit(&bus).unwrap();
        let (rows, writes) = rows_and_writes(&mut unit);
        assert_eq!(writes, ["delete ord_a"]);
        assert_eq!(rows.len(), 1);

        // What a restart rebuilds is what was committed.
        let book =
            |unit: &mut Unit<Trading>| unit.work(|svc, _, _| Ok((svc.resting_of(None, None), svc.books["AAPL"].book.depth(10)))).unwrap();
        let before = book(&mut unit);
        assert_eq!(before.0, ["ord_h"]);
        drop(unit);
        let mut reopened = Unit::<Trading>::open(&ctx).unwrap();
        assert_eq!(book(&mut reopened), before);
    }

    /// A resting order's remaining quantity is stored normalised, as every decimal in the
    /// stores is: on a lot of 0.001, what a fill leaves of 1.5 is "1", not "1.000".
    #[test]
    fn resting_rows_hold_normalised_quantities() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        let mut unit = Unit::<Trading>::open(&ctx).unwrap();
        let on_fine_lot = |mut o: MatchRequest| {
            o.lot = "0.001".parse().unwrap();
            o
        };
        place(&mut unit, on_fine_lot(order("ord_a", "u1", Side::Sell, "100", "1.5")));
        place(&mut unit, on_fine_lot(order("ord_b", "u2", Side::Buy, "100", "0.5")));
        place(&mut unit, on_fine_lot(order("ord_c", "u1", Side::Sell, "101", "2")));
        unit.commit(&bus).unwrap();
        let rows: Vec<(String, String)> = unit
            .work(|_, tx, _| {
                Ok(tx
                    .prepare("SELECT order_id, remaining FROM resting ORDER BY internal_id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(rows, [("ord_a".to_string(), "1".to_string()), ("ord_c".to_string(), "2".to_string())]);
    }

    /// The borrowed event data writes exactly what `api::Trade` writes, so a
    /// `TRADE_EXECUTED` reads back as a `Trade`.
    #[test]
    fn a_borrowed_trade_writes_what_a_trade_writes() {
        let trade = crate::api::Trade {
            trade_id: "trd_\"1\"".into(),
            symbol: "BTC-USD".into(),
            price: "64123.50".parse().unwrap(),
            quantity: "0.00000001".parse().unwrap(),
            taker_side: Side::Sell,
            buy_order_id: "ord_b".into(),
            sell_order_id: "ord_s".into(),
            timestamp: "2026-12-05T01:02:03.456789Z".into(),
        };
        let borrowed = TradeRef {
            trade_id: &trade.trade_id,
            symbol: &trade.symbol,
            price: trade.price,
            quantity: trade.quantity,
            taker_side: trade.taker_side,
            buy_order_id: &trade.buy_order_id,
            sell_order_id: &trade.sell_order_id,
            timestamp: &trade.timestamp,
        };
        let text = serde_json::to_string(&borrowed).unwrap();
        assert_eq!(text, serde_json::to_string(&trade).unwrap());
        assert_eq!(serde_json::from_str::<crate::api::Trade>(&text).unwrap(), trade);
    }
}
