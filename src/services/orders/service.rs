//! The orders actor: `data/orders.db` holds every order, its fills and its saga stage.

use super::events::{OrderEvent, StatusChange, TradeRef};
use super::{Accepted, Cmd, ListFilter, NewOrder};
use crate::api::{ApiError, Fill, Order, OrderStatus, OrderType, Side, TimeInForce};
use crate::services::actor::{AfterCommit, Service, ServiceCtx, ServiceError};
use crate::services::store::{enum_at, text_at, DecimalText, Held};
use crate::services::trading::{Cancelled, MatchResult};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE orders (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        time_in_force TEXT NOT NULL,
        price TEXT,
        quantity TEXT NOT NULL,
        filled TEXT NOT NULL,
        status TEXT NOT NULL,
        client_order_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        reject_reason TEXT,
        stage TEXT NOT NULL
    );
    CREATE UNIQUE INDEX orders_client_id ON orders(user_id, client_order_id) WHERE client_order_id IS NOT NULL;
    CREATE INDEX orders_user ON orders(user_id, seq);
    CREATE INDEX orders_symbol ON orders(symbol, seq);
    CREATE INDEX orders_open ON orders(status) WHERE status IN ('new', 'partially_filled');
    CREATE INDEX orders_unfinished ON orders(stage) WHERE stage <> 'done';
    CREATE TABLE fills (
        order_id TEXT NOT NULL,
        trade_id TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        PRIMARY KEY (order_id, trade_id)
    );",
    // Fewer b-tree pages written per commit (each is a 4 KiB WAL frame): no AUTOINCREMENT
    // bookkeeping (orders are never deleted, so rowids still only grow), one partial index
    // for open and unfinished orders instead of two, and fills kept in their key's b-tree.
    "CREATE TABLE orders_v2 (
        seq INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        time_in_force TEXT NOT NULL,
        price TEXT,
        quantity TEXT NOT NULL,
        filled TEXT NOT NULL,
        status TEXT NOT NULL,
        client_order_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        reject_reason TEXT,
        stage TEXT NOT NULL
    );
    INSERT INTO orders_v2 SELECT * FROM orders;
    DROP TABLE orders;
    ALTER TABLE orders_v2 RENAME TO orders;
    CREATE UNIQUE INDEX orders_client_id ON orders(user_id, client_order_id) WHERE client_order_id IS NOT NULL;
    CREATE INDEX orders_user ON orders(user_id, seq);
    CREATE INDEX orders_symbol ON orders(symbol, seq);
    CREATE INDEX orders_live ON orders(stage, status) WHERE status IN ('new', 'partially_filled') OR stage <> 'done';
    CREATE TABLE fills_v2 (
        order_id TEXT NOT NULL,
        trade_id TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        PRIMARY KEY (order_id, trade_id)
    ) WITHOUT ROWID;
    INSERT INTO fills_v2 SELECT * FROM fills;
    DROP TABLE fills;
    ALTER TABLE fills_v2 RENAME TO fills;",
    crate::services::intake::APPLIED_MIGRATION,
    // The sum of price × quantity over an order's fills, so that a fill gives its order's
    // average price without reading every fill before it (a big resting order hit by many
    // small ones read them all at each fill). NULL in rows from before: summed from their
    // fills at their next fill.
    "ALTER TABLE orders ADD COLUMN notional TEXT;",
    // The live index holds the order id too, so the lane's check of every live order when
    // it opens (`Orders::each_live`) reads the index alone, not a table row per order
    // (114 k open orders: ~0.25 s on the lane before it was ready).
    "DROP INDEX orders_live;
    CREATE INDEX orders_live ON orders(stage, status, order_id) WHERE status IN ('new', 'partially_filled') OR stage <> 'done';",
];

/// The condition of the `orders_live` partial index, written out in queries of open or
/// unfinished orders so that SQLite can prove the index covers them.
const LIVE: &str = "(status IN ('new', 'partially_filled') OR stage <> 'done')";

/// The order row's columns, as a macro so that the order path's statements are built
/// at compile time (`concat!`): a `format!` per statement was an allocation per call.
macro_rules! columns {
    () => {
        "order_id, user_id, symbol, side, type, time_in_force, price, quantity, filled, status, \
         client_order_id, created_at, updated_at, reject_reason"
    };
}
const COLUMNS: &str = columns!();

/// The orders service. Its state is [`Resting`], open orders' rows kept for the trading
/// lane's maker fills, and [`Unwritten`], the open orders' rows the lane's placements
/// changed since orders last wrote them; everything else is read from the store.
#[derive(Default)]
pub struct Orders {
    resting: Resting,
    unwritten: Unwritten,
    /// The `seq` the next new row gets (read from the store at the first one): an open
    /// order's row may be written after later orders' rows ([`Unwritten`]), and keeps the
    /// number of its place.
    next_seq: Option<i64>,
}

/// The rows of open orders the lane's placements made or changed and orders has not
/// written yet: each is written once, as it then stands ([`Orders::write_unwritten`]),
/// when the order closes (it cannot change again), before anything else reads or writes
/// `orders.db`, or at the commit. A maker placed and filled before then is inserted
/// once, already filled, instead of inserted `new` and updated at each fill (with its
/// `orders_live` entry made and removed); a maker partly filled five times is updated
/// once. A new row has its `seq` from when its order came ([`Orders::take_seq`]).
///
/// Closed orders' rows are written at once, as before: writing every row at the flush
/// moved that work out of the lane's idle moments into its flush (at C = 32 p99 rose from
/// ~7 to ~11 ms, BENCHMARKS.md, session 26).
///
/// **Architecture Invariant:** every method of [`Orders`] that reads order rows or
/// changes stored ones, other than the lane's record of its placements
/// ([`Orders::record_accepted`]), writes these first; the functions without `self`
/// ([`Orders::head`], [`Orders::cancellable`], [`Orders::each_live`],
/// [`Orders::unknown`], [`Orders::accept_unstored`] for a client order id) run only
/// after the lane has written them (`Lane::record_deferred`).
#[derive(Default)]
struct Unwritten {
    /// In the order they first changed; `None` while a fill has one taken out.
    rows: Vec<Option<UnwrittenRow>>,
    /// Where each order's row is in `rows`.
    at: foldhash::HashMap<String, usize>,
}

struct UnwrittenRow {
    /// As [`load_bare`] would read it: no fills, no average price.
    order: Order,
    stage: String,
    notional: Decimal,
    /// Its rowid, in the store or to be.
    seq: i64,
    /// Whether the store holds the row already (then it is updated, else inserted).
    stored: bool,
}

impl Unwritten {
    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Keeps `row` to write, in place of the order's earlier unwritten row if it has one.
    fn put(&mut self, row: UnwrittenRow) {
        match self.at.get(&row.order.order_id) {
            Some(&i) => self.rows[i] = Some(row),
            None => {
                self.at.insert(row.order.order_id.clone(), self.rows.len());
                self.rows.push(Some(row));
            }
        }
    }

    /// The order's unwritten row, taken out for a fill (the caller puts it back, or
    /// writes it and [`Unwritten::forget`]s it).
    fn take(&mut self, order_id: &str) -> Option<UnwrittenRow> {
        self.at.get(order_id).and_then(|&i| self.rows[i].take())
    }

    /// The order's row was written: nothing of it is left to write.
    fn forget(&mut self, order_id: &str) {
        if let Some(i) = self.at.remove(order_id) {
            self.rows[i] = None;
        }
    }
}

/// An order row as [`load_bare`] reads it: the order without fills or average price, its
/// saga stage, its fills' notional, and its rowid (`seq`, which never changes: orders
/// are never deleted), by which [`save`] finds the row without the `order_id` index.
type Bare = (Order, String, Option<Decimal>, i64);

/// Open orders' rows as [`load_bare`] would read them, so that a fill against a resting
/// order need not read its row back: by its text id (an index descent), decoded into an
/// `Order` (strings and decimals), ~12 k instructions per order, ~5 % of the trading
/// lane (BENCHMARKS.md, session 22).
///
/// **Kept in step with the store:** every write of an order row goes through [`insert`]
/// or [`save`], which update this within the open transaction, and the stage's own
/// update (`Cmd::Settled`) does too. A transaction that fails ends the service's
/// incarnation (the lane's too), and the next one starts with nothing cached. Debug
/// builds (the tests) check each row taken from here against the store.
#[derive(Default)]
struct Resting {
    rows: foldhash::HashMap<String, Bare>,
}

/// At most this many rows are kept (~0.5 KB each); orders that rest beyond it are read
/// from the store when they fill, as before.
const RESTING_KEPT: usize = 16_384;

impl Resting {
    /// After [`insert`] wrote `o` at `stage` with `notional`.
    fn inserted(&mut self, o: &Order, stage: &str, notional: Decimal, seq: i64) {
        let mut row = o.clone();
        row.fills = Vec::new();
        self.put((row, stage.to_string(), Some(notional), seq));
    }

    /// After [`save`] wrote `o`'s columns, and `stage` and `notional` where given.
    fn saved(&mut self, o: &Order, stage: Option<&str>, notional: Option<Decimal>) {
        if !o.status.is_open() {
            self.rows.remove(&o.order_id);
            return;
        }
        let Some((row, row_stage, row_notional, _)) = self.rows.get_mut(&o.order_id) else { return };
        row.price = o.price;
        row.quantity = o.quantity;
        row.filled_quantity = o.filled_quantity;
        row.status = o.status;
        row.updated_at.clone_from(&o.updated_at);
        row.reject_reason.clone_from(&o.reject_reason);
        row.remaining_quantity = (o.quantity - o.filled_quantity).normalize();
        if let Some(stage) = stage {
            *row_stage = stage.to_string();
        }
        if notional.is_some() {
            *row_notional = notional;
        }
    }

    /// Keeps a row as [`load_bare`] would read it, if the order is open and there is room.
    fn put(&mut self, (mut row, stage, notional, seq): Bare) {
        if !row.status.is_open() {
            self.rows.remove(&row.order_id);
            return;
        }
        if self.rows.len() >= RESTING_KEPT && !self.rows.contains_key(&row.order_id) {
            return;
        }
        // As `row_to_order` reads it: no average price, and what is left to fill.
        row.average_price = None;
        row.remaining_quantity = (row.quantity - row.filled_quantity).normalize();
        self.rows.insert(row.order_id.clone(), (row, stage, notional, seq));
    }

    /// The row of `order_id`, taken out (the caller saves the order and puts it back), or
    /// read from the store.
    fn take(&mut self, tx: &Connection, order_id: &str) -> rusqlite::Result<Option<Bare>> {
        match self.rows.remove(order_id) {
            Some(row) => {
                debug_assert_eq!(Some(&row), load_bare(tx, order_id)?.as_ref(), "the resting row of {order_id} is not the stored one");
                Ok(Some(row))
            }
            None => load_bare(tx, order_id),
        }
    }
}

/// An order's `remaining_quantity`: the part of its quantity that has not traded. While
/// the order is open that is what may still fill; once it is cancelled (by its owner, an
/// IOC or FOK rule, a market order's empty book or spent budget, self-trade prevention)
/// or rejected, it is what never traded, so that `filled_quantity + remaining_quantity =
/// quantity` always holds and a cancelled market buy says how much it did not buy. (A
/// closed order used to answer 0 here, which read as "all of it traded".)
pub(crate) fn unfilled(quantity: Decimal, filled: Decimal) -> Decimal {
    (quantity - filled).max(Decimal::ZERO).normalize()
}

fn dec(s: &str) -> rusqlite::Result<Decimal> {
    Decimal::from_str(s).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn row_to_order(r: &rusqlite::Row) -> rusqlite::Result<Order> {
    let quantity = dec(text_at(r, 7)?)?;
    // Normalized: a row written before sums of fills were ("1.0" for five fills of 0.2).
    let filled = dec(text_at(r, 8)?)?.normalize();
    let status = enum_at(r, 9, OrderStatus::parse)?;
    Ok(Order {
        order_id: r.get(0)?,
        user_id: r.get(1)?,
        symbol: r.get(2)?,
        side: enum_at(r, 3, Side::parse)?,
        kind: enum_at(r, 4, OrderType::parse)?,
        time_in_force: enum_at(r, 5, TimeInForce::parse)?,
        price: r.get::<_, Option<String>>(6)?.map(|p| dec(&p)).transpose()?,
        quantity,
        filled_quantity: filled,
        remaining_quantity: unfilled(quantity, filled),
        average_price: None,
        status,
        fills: Vec::new(),
        client_order_id: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        reject_reason: r.get(13)?,
    })
}

/// Fills and the volume-weighted average price.
fn with_fills(tx: &Connection, mut o: Order) -> rusqlite::Result<Order> {
    let mut stmt =
        tx.prepare_cached("SELECT trade_id, price, quantity, timestamp FROM fills WHERE order_id = ?1 ORDER BY timestamp, trade_id")?;
    let fills = stmt
        .query_map([&o.order_id], |r| {
            Ok(Fill {
                trade_id: r.get(0)?,
                price: dec(&r.get::<_, String>(1)?)?,
                quantity: dec(&r.get::<_, String>(2)?)?,
                timestamp: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    o.fills = fills;
    average(&mut o);
    Ok(o)
}

/// Sets the volume-weighted average price from the order's fills.
fn average(o: &mut Order) {
    if let Some(average) = average_of_fills(&o.fills) {
        o.average_price = Some(average);
    }
}

/// The volume-weighted average price of `fills` (`None` without any), rounded as
/// [`average_of`] does: their notional over their quantity, exact while the notional fits
/// in a decimal. An order's fills can come to more (~7.9 × 10^28) although no one fill
/// can: a sell amended after fills at 10^27 trades on at a new price, its buyers' USD
/// deposited again each time its seller withdraws it. Past that range each fill moves the
/// average towards its price by its share of what has filled (at most 1, so nothing
/// overflows). Without it the sum overflowed, a panic that failed the trading lane at
/// every start.
fn average_of_fills(fills: &[Fill]) -> Option<Decimal> {
    let qty: Decimal = fills.iter().map(|f| f.quantity).sum();
    if qty <= Decimal::ZERO {
        return None;
    }
    if let Some(notional) = exact_notional(fills) {
        return average_of(notional, qty);
    }
    let (mut average, mut filled) = (Decimal::ZERO, Decimal::ZERO);
    for f in fills {
        filled += f.quantity;
        let share = f.quantity.checked_div(filled).unwrap_or(Decimal::ONE);
        average = crate::api::decimal::moved_toward(average, f.price, share);
    }
    Some(average.round_dp(12).normalize())
}

/// The sum of price × quantity over `fills`, or `None` past a decimal's range.
fn exact_notional(fills: &[Fill]) -> Option<Decimal> {
    fills.iter().try_fold(Decimal::ZERO, |sum, f| f.price.checked_mul(f.quantity).and_then(|n| sum.checked_add(n)))
}

/// The status a match leaves its taker in, from what is filled; a final status stays.
fn after_match(taker: &mut Order, result: &MatchResult) {
    if taker.status.is_open() {
        taker.status = if taker.filled_quantity >= taker.quantity {
            OrderStatus::Filled
        } else if result.rests {
            if taker.filled_quantity > Decimal::ZERO {
                OrderStatus::PartiallyFilled
            } else {
                OrderStatus::New
            }
        } else {
            OrderStatus::Cancelled
        };
        if taker.status == OrderStatus::Cancelled {
            taker.reject_reason = Some(why_cancelled(taker, result));
        }
    }
}

/// Why a placement's remainder ended `cancelled` at its match (201, not an error, as
/// DESIGN.md has it), in its `reject_reason`: a client reading a cancelled order it did
/// not cancel learns what stopped it.
fn why_cancelled(taker: &Order, result: &MatchResult) -> String {
    let left = (taker.quantity - taker.filled_quantity).normalize();
    if result.self_trade_prevented {
        return "self_trade_prevented: the crossing part would have traded with your own order".into();
    }
    match (taker.kind, taker.side, taker.time_in_force) {
        // A fill-or-kill market order is killed whole, whatever cut it short.
        (_, _, TimeInForce::Fok) => "fok_unfilled: the whole quantity could not fill at once, so none of it did".into(),
        (OrderType::Market, Side::Buy, _) => {
            format!("market_unfilled: {left} not bought: the book had no more to sell, or its budget (the available USD, at most max_order_notional) did not cover another lot")
        }
        (OrderType::Market, Side::Sell, _) => format!("market_unfilled: {left} not sold: the book had no more bids"),
        (_, _, TimeInForce::Ioc) => format!("ioc_unfilled: {left} did not fill at once and was cancelled"),
        _ => format!("unfilled: {left} was cancelled at its match"),
    }
}

/// A new order (as [`Orders::accept_at`] answered it) as its first record after
/// `result` stores it, built in memory: the lane answers with this before it writes the
/// record.
pub(crate) fn matched(mut o: Order, result: &MatchResult, now: &str) -> Order {
    for f in &result.fills {
        o.filled_quantity = filled_after(o.filled_quantity, f.quantity);
        o.fills.push(Fill { trade_id: f.trade_id.clone(), price: f.price, quantity: f.quantity, timestamp: f.timestamp.clone() });
    }
    after_match(&mut o, result);
    o.updated_at = now.to_string();
    o.remaining_quantity = unfilled(o.quantity, o.filled_quantity);
    average(&mut o);
    o
}

/// An order without its fills, its saga stage, and its fills' notional (`None` in a row
/// stored before the column was): one read.
fn load_bare(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<Bare>> {
    tx.prepare_cached(concat!("SELECT ", columns!(), ", stage, notional, seq FROM orders WHERE order_id = ?1"))?
        .query_row([order_id], |r| {
            let notional = r.get::<_, Option<String>>(15)?.map(|t| dec(&t)).transpose()?;
            Ok((row_to_order(r)?, r.get(14)?, notional, r.get(16)?))
        })
        .optional()
}

/// An order's filled quantity after a fill of `quantity`, normalized as every amount the
/// API answers is: a sum keeps the larger scale of its terms (five fills of 0.2 made
/// "1.0").
fn filled_after(filled: Decimal, quantity: Decimal) -> Decimal {
    (filled + quantity).normalize()
}

/// The sum of price × quantity over `fills`, as a row keeps it: [`TOO_LARGE`] past a
/// decimal's range.
fn notional_of(fills: &[Fill]) -> Decimal {
    exact_notional(fills).unwrap_or(TOO_LARGE)
}

/// The notional a row keeps for fills that come to more than a decimal holds: the next
/// fill's average is then taken from the fills themselves ([`average_of_fills`]).
const TOO_LARGE: Decimal = Decimal::MAX;

/// The average price of `filled` bought or sold for `notional`, rounded as [`average`] does.
fn average_of(notional: Decimal, filled: Decimal) -> Option<Decimal> {
    (filled > Decimal::ZERO).then(|| (notional / filled).round_dp(12).normalize())
}

fn load(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<Order>> {
    let o = tx
        .prepare_cached(concat!("SELECT ", columns!(), " FROM orders WHERE order_id = ?1"))?
        .query_row([order_id], row_to_order)
        .optional()?;
    o.map(|o| with_fills(tx, o)).transpose()
}

/// Stages of an order's saga: `accepted` (stored, not yet through the book), `settling`
/// (matched and recorded; risk settlement may still be in flight), `done`.
/// `notional` is given by whoever added fills; others leave the stored one. The row is
/// found by its `seq` where the caller has it (a row from [`load_bare`] or [`Resting`]),
/// else by `order_id`.
fn save(
    tx: &Held,
    o: &mut Order,
    stage: Option<&str>,
    notional: Option<Decimal>,
    seq: Option<i64>,
    resting: &mut Resting,
) -> rusqlite::Result<()> {
    o.remaining_quantity = unfilled(o.quantity, o.filled_quantity);
    macro_rules! update {
        ($by:literal) => {
            concat!(
                "UPDATE orders SET price = ?2, quantity = ?3, filled = ?4, status = ?5, updated_at = ?6, reject_reason = ?7,
                 stage = coalesce(?8, stage), notional = coalesce(?9, notional) WHERE ",
                $by,
                " = ?1"
            )
        };
    }
    let (sql, key): (_, &dyn rusqlite::ToSql) = match &seq {
        Some(seq) => (update!("seq"), seq),
        None => (update!("order_id"), &o.order_id),
    };
    let changed = tx.execute(
        sql,
        params![
            key,
            o.price.map(DecimalText::of),
            DecimalText::of(o.quantity),
            DecimalText::of(o.filled_quantity),
            o.status.as_str(),
            o.updated_at,
            o.reject_reason,
            stage,
            notional.map(DecimalText::of)
        ],
    )?;
    debug_assert!(changed == 1 || seq.is_none(), "no row {seq:?} for order {}", o.order_id);
    resting.saved(o, stage, notional);
    Ok(())
}

/// Writes a whole order row: `o` as it stands, at `stage`, its fills coming to `notional`.
fn insert(tx: &Held, o: &Order, stage: &str, notional: Decimal, seq: i64, resting: &mut Resting) -> rusqlite::Result<()> {
    tx.execute(
        concat!(
            "INSERT INTO orders (",
            columns!(),
            ", stage, notional, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        params![
            o.order_id,
            o.user_id,
            o.symbol,
            o.side.as_str(),
            o.kind.as_str(),
            o.time_in_force.as_str(),
            o.price.map(DecimalText::of),
            DecimalText::of(o.quantity),
            DecimalText::of(o.filled_quantity),
            o.status.as_str(),
            o.client_order_id,
            o.created_at,
            o.updated_at,
            o.reject_reason,
            stage,
            DecimalText::of(notional),
            seq
        ],
    )?;
    resting.inserted(o, stage, notional, seq);
    Ok(())
}

/// An order that never reached the book, as rejected: none of it traded, and why.
fn mark_rejected(o: &mut Order, code: &str, message: &str, now: &str) {
    o.status = OrderStatus::Rejected;
    o.reject_reason = Some(format!("{code}: {message}"));
    o.remaining_quantity = unfilled(o.quantity, o.filled_quantity);
    o.updated_at = now.to_string();
}

fn stage_of(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached("SELECT stage FROM orders WHERE order_id = ?1")?.query_row([order_id], |r| r.get(0)).optional()
}

/// Adds a fill to an order once (by trade id); true if it was new.
fn add_fill(tx: &Held, order_id: &str, trade_id: &str, price: Decimal, qty: Decimal, ts: &str) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "INSERT OR IGNORE INTO fills (order_id, trade_id, price, quantity, timestamp) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![order_id, trade_id, DecimalText::of(price), DecimalText::of(qty), ts],
    )?;
    Ok(n == 1)
}

impl Orders {
    /// Whether [`Unwritten`] holds rows to write.
    pub(crate) fn has_unwritten(&self) -> bool {
        !self.unwritten.is_empty()
    }

    /// Writes the rows [`Unwritten`] holds, each once as it stands, in the order they
    /// first changed, and keeps the open ones in [`Resting`] as [`insert`] and [`save`]
    /// would.
    pub(crate) fn write_unwritten(&mut self, tx: &Held) -> Result<(), ServiceError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        self.unwritten.at.clear();
        let rows = std::mem::take(&mut self.unwritten.rows);
        for UnwrittenRow { mut order, stage, notional, seq, stored } in rows.into_iter().flatten() {
            if stored {
                save(tx, &mut order, Some(&stage), Some(notional), Some(seq), &mut self.resting)?;
                self.resting.put((order, stage, Some(notional), seq));
            } else {
                insert(tx, &order, &stage, notional, seq, &mut self.resting)?;
            }
        }
        Ok(())
    }

    /// The `seq` of the next new row: one past the store's highest, then counted here.
    /// An incarnation whose transaction failed ends, and the next reads it again.
    fn take_seq(&mut self, tx: &Connection) -> rusqlite::Result<i64> {
        let seq = match self.next_seq {
            Some(seq) => seq,
            None => tx.query_row("SELECT coalesce(max(seq), 0) + 1 FROM orders", [], |r| r.get(0))?,
        };
        self.next_seq = Some(seq + 1);
        Ok(seq)
    }

    pub(crate) fn accept(&mut self, tx: &Connection, n: NewOrder) -> Result<Accepted, ServiceError> {
        self.accept_at(tx, n, crate::api::now_rfc3339())
    }

    /// [`Orders::accept`] at a given time: the lane stamps a batch once, so that redoing
    /// it from the intake journal (`services::intake`) stores the times it answered.
    pub(crate) fn accept_at(&mut self, tx: &Connection, n: NewOrder, now: String) -> Result<Accepted, ServiceError> {
        let tx = &Held::new(tx);
        self.write_unwritten(tx)?;
        let accepted = Self::accept_unstored(tx, n, now, &mut HashMap::new())?;
        if let Accepted::New(o) = &accepted {
            let seq = self.take_seq(tx)?;
            insert(tx, o, "accepted", Decimal::ZERO, seq, &mut self.resting)?;
        }
        Ok(accepted)
    }

    /// [`Orders::accept_at`] without the write: the order as it would be stored, for the
    /// lane to store once, with its outcome, when it records the batch
    /// ([`Orders::record_accepted`], [`Orders::reject_unstored`],
    /// [`Orders::store_accepted`]). One row written per placement instead of a row and
    /// then its update. `batch` holds this batch's client order ids, which are in no
    /// row yet: a repeat within the batch answers the first as accepted, as a read of
    /// its `accepted` row did.
    pub(crate) fn accept_unstored(
        tx: &Connection,
        n: NewOrder,
        now: String,
        batch: &mut HashMap<(String, String), Order>,
    ) -> Result<Accepted, ServiceError> {
        if let Some(coid) = &n.client_order_id {
            if let Some(first) = batch.get(&(n.user_id.clone(), coid.clone())) {
                return Ok(Accepted::Existing(first.clone()));
            }
            let existing: Option<String> = tx
                .prepare_cached("SELECT order_id FROM orders WHERE user_id = ?1 AND client_order_id = ?2")?
                .query_row(params![n.user_id, coid], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                let o = load(tx, &id)?.ok_or_else(|| ServiceError::Other(format!("order {id} vanished")))?;
                return Ok(Accepted::Existing(o));
            }
        }
        let order = Order {
            order_id: n.order_id,
            user_id: n.user_id,
            symbol: n.symbol,
            side: n.side,
            kind: n.kind,
            time_in_force: n.time_in_force,
            price: n.price,
            quantity: n.quantity,
            filled_quantity: Decimal::ZERO,
            remaining_quantity: n.quantity,
            average_price: None,
            status: OrderStatus::New,
            fills: Vec::new(),
            client_order_id: n.client_order_id,
            created_at: now.clone(),
            updated_at: now,
            reject_reason: None,
        };
        if let Some(coid) = &order.client_order_id {
            batch.insert((order.user_id.clone(), coid.clone()), order.clone());
        }
        Ok(Accepted::New(order))
    }

    /// Stores an order [`Orders::accept_unstored`] answered at stage `accepted`, as
    /// [`Orders::accept_at`] would have: the lane's placement that could not be finished
    /// (its hold not released), for recovery to find.
    pub(crate) fn store_accepted(&mut self, tx: &Held, o: &Order) -> Result<(), ServiceError> {
        let seq = self.take_seq(tx)?;
        Ok(insert(tx, o, "accepted", Decimal::ZERO, seq, &mut self.resting)?)
    }

    /// Stores an order [`Orders::accept_unstored`] answered as rejected, its saga done:
    /// what [`Orders::reject_at`] leaves of a stored `accepted` order, in one write.
    pub(crate) fn reject_unstored(
        &mut self,
        tx: &Held,
        mut o: Order,
        code: &str,
        message: &str,
        now: &str,
        after: &mut AfterCommit,
    ) -> Result<Order, ServiceError> {
        mark_rejected(&mut o, code, message, now);
        let seq = self.take_seq(tx)?;
        insert(tx, &o, "done", Decimal::ZERO, seq, &mut self.resting)?;
        // Counted in `agt_orders_total` by the lane, as it answers.
        after.event_of("ORDER_REJECTED", &OrderEvent::rejected(&o, code));
        Ok(o)
    }

    /// Marks an order that never reached the book rejected, if its saga is still at
    /// `accepted` (a repeat answers the order as it stands).
    pub(crate) fn reject(
        &mut self,
        tx: &Connection,
        order_id: &str,
        code: &str,
        message: &str,
        after: &mut AfterCommit,
    ) -> Result<Result<Order, ApiError>, ServiceError> {
        self.reject_at(tx, order_id, code, message, &crate::api::now_rfc3339(), after)
    }

    /// [`Orders::reject`] at a given time (see [`Orders::accept_at`]).
    pub(crate) fn reject_at(
        &mut self,
        tx: &Connection,
        order_id: &str,
        code: &str,
        message: &str,
        now: &str,
        after: &mut AfterCommit,
    ) -> Result<Result<Order, ApiError>, ServiceError> {
        let tx = &Held::new(tx);
        self.write_unwritten(tx)?;
        let Some(mut o) = load(tx, order_id)? else {
            return Ok(Err(ApiError::not_found("order", order_id)));
        };
        if stage_of(tx, order_id)?.as_deref() == Some("accepted") {
            mark_rejected(&mut o, code, message, now);
            save(tx, &mut o, Some("done"), None, None, &mut self.resting)?;
            crate::daemon::metrics::order("rejected");
            after.event_of("ORDER_REJECTED", &OrderEvent::rejected(&o, code));
        }
        Ok(Ok(o))
    }

    /// Records a match outcome. Sagas run side by side, so the records of one order can
    /// arrive in any order (a later fill before an earlier one, a cancel before the fill
    /// that preceded it): fills are added once each by trade id, a status is derived from
    /// what is filled, and a final status (cancelled) is never undone.
    ///
    /// `settled`: risk has already committed this match's settlement, so a placement's
    /// saga is done with this record (the lane settles before it records).
    pub(crate) fn record(
        &mut self,
        tx: &Connection,
        result: MatchResult,
        settled: bool,
        after: &mut AfterCommit,
    ) -> Result<Result<Order, ApiError>, ServiceError> {
        self.record_at(tx, result, None, settled, &crate::api::now_rfc3339(), after)
    }

    /// [`Orders::record`] at a given time (see [`Orders::accept_at`]).
    pub(crate) fn record_at(
        &mut self,
        tx: &Connection,
        result: MatchResult,
        amended: Option<(Decimal, Decimal)>,
        settled: bool,
        now: &str,
        after: &mut AfterCommit,
    ) -> Result<Result<Order, ApiError>, ServiceError> {
        self.write_unwritten(&Held::new(tx))?;
        let Some((taker, stage, _, _)) = load_bare(tx, &result.order_id)? else {
            return Ok(Err(ApiError::not_found("order", &result.order_id)));
        };
        Ok(Ok(self.record_head(tx, taker, &stage, result, amended, settled, now, after)?))
    }

    /// [`Orders::record_at`] for an order whose row the caller has just read with
    /// [`Orders::head`] in this transaction (an amend checks it first): not read again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_head(
        &mut self,
        tx: &Connection,
        mut taker: Order,
        stage: &str,
        result: MatchResult,
        amended: Option<(Decimal, Decimal)>,
        settled: bool,
        now: &str,
        after: &mut AfterCommit,
    ) -> Result<Order, ServiceError> {
        let tx = &Held::new(tx);
        self.write_unwritten(tx)?;
        // Fills are read only when there were some before; a new order's are this match's.
        if !taker.filled_quantity.is_zero() {
            taker = with_fills(tx, taker)?;
        }
        self.record_loaded(tx, taker, true, stage == "accepted", result, amended, settled, now, after)
    }

    /// The first record of an order the lane accepted unstored in this same transaction
    /// ([`Orders::accept_unstored`]): its row is written once, at once if its match
    /// closed it, else when it closes or orders next writes [`Unwritten`]; its makers'
    /// rows the same way.
    pub(crate) fn record_accepted(
        &mut self,
        tx: &Held,
        taker: Order,
        result: MatchResult,
        settled: bool,
        now: &str,
        after: &mut AfterCommit,
    ) -> Result<Order, ServiceError> {
        debug_assert!(taker.fills.is_empty() && taker.status == OrderStatus::New);
        self.record_loaded(tx, taker, false, true, result, None, settled, now, after)
    }

    /// [`Orders::record_at`] for `taker` as stored (with its fills, if it had any), or
    /// as accepted and not stored yet (`stored` false: the record inserts its row).
    #[allow(clippy::too_many_arguments)]
    fn record_loaded(
        &mut self,
        tx: &Held,
        mut taker: Order,
        stored: bool,
        first_record: bool,
        result: MatchResult,
        amended: Option<(Decimal, Decimal)>,
        settled: bool,
        now: &str,
        after: &mut AfterCommit,
    ) -> Result<Order, ServiceError> {
        // The lane's placements leave open orders' rows (theirs and their makers') to
        // [`Unwritten`].
        let behind = !stored;
        let before = taker.status;
        if let Some((price, quantity)) = amended {
            taker.price = Some(price);
            taker.quantity = quantity;
        }
        let mut trades = Vec::new();
        for f in &result.fills {
            if add_fill(tx, &taker.order_id, &f.trade_id, f.price, f.quantity, &f.timestamp)? {
                taker.filled_quantity = filled_after(taker.filled_quantity, f.quantity);
                taker.fills.push(Fill {
                    trade_id: f.trade_id.clone(),
                    price: f.price,
                    quantity: f.quantity,
                    timestamp: f.timestamp.clone(),
                });
                trades.push(TradeRef { trade_id: &f.trade_id, price: f.price, quantity: f.quantity });
            }
            // A maker's row: unwritten (the lane's placements only; any other record
            // wrote those first), kept in `Resting`, or read.
            let (mut maker, stage, notional, seq, unwritten, stored) = match self.unwritten.take(&f.maker_order_id) {
                Some(UnwrittenRow { order, stage, notional, seq, stored }) => (order, stage, Some(notional), seq, true, stored),
                None => match self.resting.take(tx, &f.maker_order_id)? {
                    Some((order, stage, notional, seq)) => (order, stage, notional, seq, false, true),
                    None => continue,
                },
            };
            // What its fills so far came to: stored, or summed from them in a row stored
            // before the column was.
            let so_far = match notional {
                Some(n) => n,
                None if maker.filled_quantity.is_zero() => Decimal::ZERO,
                None => notional_of(&with_fills(tx, maker.clone())?.fills),
            };
            if !add_fill(tx, &maker.order_id, &f.trade_id, f.price, f.quantity, &f.timestamp)? {
                // Recorded before (a redo): the row is as it was.
                if unwritten {
                    self.unwritten.put(UnwrittenRow { order: maker, stage, notional: notional.unwrap_or_default(), seq, stored });
                } else {
                    self.resting.put((maker, stage, notional, seq));
                }
                continue;
            }
            let notional = f.price.checked_mul(f.quantity).and_then(|n| so_far.checked_add(n)).filter(|n| *n < TOO_LARGE);
            let was = maker.status;
            maker.filled_quantity = filled_after(maker.filled_quantity, f.quantity);
            if maker.status.is_open() {
                maker.status = if maker.filled_quantity >= maker.quantity { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
            }
            maker.updated_at = now.to_string();
            maker.average_price = match notional {
                Some(notional) => average_of(notional, maker.filled_quantity),
                // Its fills, this one's included (just added), past a decimal's range.
                None => average_of_fills(&with_fills(tx, maker.clone())?.fills),
            };
            let notional = notional.unwrap_or(TOO_LARGE);
            maker.remaining_quantity = unfilled(maker.quantity, maker.filled_quantity);
            after.event_of("ORDER_EXECUTED", &OrderEvent::maker_fill(&maker, &f.trade_id, f.price, f.quantity));
            if was != maker.status {
                after.event_of("ORDER_STATUS_UPDATED", &StatusChange::of(&maker, was));
            }
            if behind && maker.status.is_open() {
                maker.average_price = None;
                self.unwritten.put(UnwrittenRow { order: maker, stage, notional, seq, stored });
            } else {
                // Closed (it cannot change again), or not the lane's placement: written now,
                // in the lane's idle time.
                self.unwritten.forget(&maker.order_id);
                if stored {
                    save(tx, &mut maker, None, Some(notional), Some(seq), &mut self.resting)?;
                    self.resting.put((maker, stage, Some(notional), seq));
                } else {
                    insert(tx, &maker, &stage, notional, seq, &mut self.resting)?;
                }
            }
        }
        after_match(&mut taker, &result);
        let unchanged = trades.is_empty() && before == taker.status && amended.is_none() && !first_record;
        if unchanged {
            return Ok(taker); // a replayed step: recorded already
        }
        taker.updated_at = now.to_string();
        // A placement waits in `settling` until the saga confirms risk has settled it; an
        // amend is recorded only after its settlement, so it is done at once.
        let next_stage = match (amended.is_some(), first_record) {
            (true, _) => Some("done"),
            (false, true) if settled => Some("done"),
            (false, true) => Some("settling"),
            (false, false) => None,
        };
        let notional = notional_of(&taker.fills);
        if stored {
            save(tx, &mut taker, next_stage, Some(notional), None, &mut self.resting)?;
        } else {
            taker.remaining_quantity = unfilled(taker.quantity, taker.filled_quantity);
            let stage = next_stage.unwrap_or("accepted");
            let seq = self.take_seq(tx)?;
            if taker.status.is_open() {
                let mut row = taker.clone();
                row.fills = Vec::new();
                self.unwritten.put(UnwrittenRow { order: row, stage: stage.to_string(), notional, seq, stored: false });
            } else {
                insert(tx, &taker, stage, notional, seq, &mut self.resting)?;
            }
        }
        average(&mut taker);
        if first_record {
            // The lane counts its placements as it answers them, before this record.
            if stored {
                crate::daemon::metrics::order(taker.status.as_str());
            }
            after.event_of("ORDER_CREATED", &OrderEvent::of(&taker));
        }
        if !trades.is_empty() {
            after.event_of("ORDER_EXECUTED", &OrderEvent::taker_fills(&taker, &trades));
        }
        if amended.is_some() {
            // Its new terms, even when its status stays: followers of the events (the
            // dashboard, webhooks) see every change of an open order.
            after.event_of("ORDER_STATUS_UPDATED", &StatusChange::amended(&taker, before));
        } else if before != taker.status && !first_record {
            after.event_of("ORDER_STATUS_UPDATED", &StatusChange::of(&taker, before));
        }
        if taker.status == OrderStatus::Cancelled && before != OrderStatus::Cancelled {
            after.event_of("ORDER_CANCELLED", &OrderEvent::of(&taker));
        }
        Ok(taker)
    }

    /// Calls `each` with the id of every live order (open, or with its saga unfinished),
    /// and whether it is open as [`Orders::list`] shows it (not still `accepted`). One read
    /// of the live orders' index: the lane checks them all when it opens (114 k after a
    /// busy day), against risk's holds and trading's books at once.
    pub(crate) fn each_live(tx: &Connection, mut each: impl FnMut(&str, bool)) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT order_id, status IN ('new', 'partially_filled') AND stage <> 'accepted'
             FROM orders INDEXED BY orders_live WHERE {LIVE}"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if let Ok(id) = r.get_ref(0)?.as_str() {
                each(id, r.get(1)?);
            }
        }
        Ok(())
    }

    /// What finishing a cancel of the order needs, if it is open as [`Orders::list`] shows
    /// it (not still `accepted`).
    pub(crate) fn cancellable(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<Cancelled>> {
        Ok(load_bare(tx, order_id)?.filter(|(o, stage, _, _)| o.status.is_open() && stage != "accepted").map(|(o, _, _, _)| Cancelled {
            order_id: o.order_id,
            user_id: o.user_id,
            remaining: o.remaining_quantity,
        }))
    }

    /// What remains of an open order, `None` if it is not stored or not open.
    pub(crate) fn open_remaining(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<Decimal>> {
        Ok(load_bare(tx, order_id)?.filter(|(o, _, _, _)| o.status.is_open()).map(|(o, _, _, _)| o.remaining_quantity))
    }

    /// Which of `order_ids` are not stored at all, sorted: one lookup each.
    pub fn unknown<'a>(tx: &Connection, order_ids: impl IntoIterator<Item = &'a str>) -> rusqlite::Result<Vec<String>> {
        let mut stmt = tx.prepare_cached("SELECT 1 FROM orders WHERE order_id = ?1")?;
        let mut unknown = Vec::new();
        for id in order_ids {
            if !stmt.exists([id])? {
                unknown.push(id.to_string());
            }
        }
        unknown.sort();
        Ok(unknown)
    }

    /// An order as stored, without its fills (one read): enough to check a cancel or an
    /// amend against.
    pub(crate) fn head(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<(Order, String)>> {
        Ok(load_bare(tx, order_id)?.map(|(o, stage, _, _)| (o, stage)))
    }

    /// Marks cancelled, at `at`, the open orders trading took out of its books (their
    /// holds released first), with their events; answers each order as it now stands,
    /// open or not (a fill may have ended it first).
    pub(crate) fn cancelled(
        &mut self,
        tx: &Connection,
        cancelled: Vec<Cancelled>,
        at: &str,
        after: &mut AfterCommit,
    ) -> Result<Vec<Order>, ServiceError> {
        let tx = &Held::new(tx);
        self.write_unwritten(tx)?;
        let mut out = Vec::with_capacity(cancelled.len());
        for c in cancelled {
            let Some(mut o) = load(tx, &c.order_id)? else { continue };
            if o.status.is_open() {
                let was = o.status;
                o.status = OrderStatus::Cancelled;
                o.updated_at = at.to_string();
                // The stage is the placement saga's to finish (it may still be settling).
                save(tx, &mut o, None, None, None, &mut self.resting)?;
                after.event_of("ORDER_CANCELLED", &OrderEvent::of(&o));
                after.event_of("ORDER_STATUS_UPDATED", &StatusChange::of(&o, was));
            }
            out.push(o);
        }
        Ok(out)
    }

    fn list(tx: &Connection, f: &ListFilter) -> rusqlite::Result<Vec<Order>> {
        // Open orders are few beside all the closed ones: read them through `orders_live`.
        let open_only = !f.statuses.is_empty() && f.statuses.iter().all(|s| s.is_open());
        let mut sql = if open_only {
            format!("SELECT {COLUMNS} FROM orders INDEXED BY orders_live WHERE {LIVE} AND stage <> 'accepted'")
        } else {
            format!("SELECT {COLUMNS} FROM orders WHERE stage <> 'accepted'")
        };
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(u) = &f.user_id {
            sql.push_str(" AND user_id = ?");
            args.push(u.clone().into());
        }
        if let Some(s) = &f.symbol {
            sql.push_str(" AND symbol = ?");
            args.push(s.clone().into());
        }
        if !f.statuses.is_empty() {
            sql.push_str(&format!(" AND status IN ({})", vec!["?"; f.statuses.len()].join(",")));
            args.extend(f.statuses.iter().map(|s| rusqlite::types::Value::from(s.as_str().to_string())));
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        args.push((f.limit as i64).into());
        let mut stmt = tx.prepare_cached(&sql)?;
        let orders = stmt.query_map(rusqlite::params_from_iter(args), row_to_order)?.collect::<rusqlite::Result<Vec<_>>>()?;
        orders.into_iter().map(|o| with_fills(tx, o)).collect()
    }
}

impl Service for Orders {
    type Cmd = Cmd;
    const NAME: &'static str = "orders";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    fn load(_conn: &rusqlite::Connection, _ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        Ok(Orders::default())
    }

    /// Writes what [`Unwritten`] still holds.
    fn before_commit(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        self.write_unwritten(&Held::new(tx))
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        self.write_unwritten(&Held::new(tx))?;
        match cmd {
            Cmd::Accept { order, reply } => {
                let r = self.accept(tx, order)?;
                after.reply(reply, Ok(r));
            }
            Cmd::Reject { order_id, code, message, reply } => {
                let r = self.reject(tx, &order_id, &code, &message, after)?;
                after.reply(reply, r);
            }
            Cmd::Record { result, settled, reply } => {
                let r = self.record(tx, result, settled, after)?;
                after.reply(reply, r);
            }
            Cmd::Cancelled { cancelled, reply } => {
                let out = self.cancelled(tx, cancelled, &crate::api::now_rfc3339(), after)?;
                after.reply(reply, Ok(out));
            }
            Cmd::Settled { order_id } => {
                tx.prepare_cached("UPDATE orders SET stage = 'done' WHERE order_id = ?1 AND stage = 'settling'")?.execute([&order_id])?;
                if let Some((_, stage, _, _)) = self.resting.rows.get_mut(&order_id) {
                    if stage == "settling" {
                        *stage = "done".to_string();
                    }
                }
            }
            Cmd::Sync(reply) => after.reply(reply, Ok(())),
            Cmd::Get { order_id, reply } => {
                let o = load(tx, &order_id)?.ok_or_else(|| ApiError::not_found("order", &order_id));
                after.reply(reply, o);
            }
            Cmd::List { filter, reply } => after.reply(reply, Ok(Orders::list(tx, &filter)?)),
            Cmd::Unfinished(reply) => {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM orders INDEXED BY orders_live WHERE {LIVE} AND stage <> 'done' ORDER BY seq"
                ))?;
                let orders = stmt.query_map([], row_to_order)?.collect::<rusqlite::Result<Vec<_>>>()?;
                after.reply(reply, Ok(orders));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{OrderType, Side, TimeInForce};
    use crate::services::orders::NewOrder;
    use crate::services::trading::TradeFill;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// A fresh orders store (and the directory that holds it).
    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::services::store::open(&dir.path().join("orders.db"), Default::default(), MIGRATIONS).unwrap();
        (dir, conn)
    }

    /// Stores a sell limit order of `quantity` at 100 as accepted, then resting unfilled
    /// (a maker for the tests' takers).
    fn resting_sell(orders: &mut Orders, tx: &Connection, id: &str, quantity: &str) {
        orders.accept_at(tx, order(id, Side::Sell, "100", quantity), "t".into()).unwrap();
        let rests = MatchResult {
            order_id: id.into(),
            fills: vec![],
            filled: Decimal::ZERO,
            remaining: d(quantity),
            rests: true,
            self_trade_prevented: false,
        };
        orders.record_at(tx, rests, None, true, "t", &mut AfterCommit::new("orders")).unwrap().unwrap();
    }

    fn order(id: &str, side: Side, price: &str, quantity: &str) -> NewOrder {
        NewOrder {
            order_id: id.into(),
            user_id: format!("usr_{id}"),
            symbol: "AAPL".into(),
            side,
            kind: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Some(d(price)),
            quantity: d(quantity),
            client_order_id: None,
        }
    }

    /// Places `taker` for `quantity` at `price` against the resting maker `mk`; the
    /// average price the maker's `ORDER_EXECUTED` gives.
    fn trade(orders: &mut Orders, tx: &Connection, n: usize, price: &str, quantity: &str) -> Decimal {
        let taker = order(&format!("tk{n}"), Side::Buy, price, quantity);
        orders.accept_at(tx, taker.clone(), "t".into()).unwrap();
        let fill = TradeFill {
            trade_id: format!("trd_{n}"),
            maker_order_id: "mk".into(),
            maker_user_id: "usr_mk".into(),
            price: d(price),
            quantity: d(quantity),
            maker_remaining: Decimal::ZERO,
            timestamp: format!("t{n:03}"),
        };
        let result = MatchResult {
            order_id: taker.order_id,
            fills: vec![fill],
            filled: d(quantity),
            remaining: Decimal::ZERO,
            rests: false,
            self_trade_prevented: false,
        };
        let mut after = AfterCommit::new("orders");
        orders.record_at(tx, result, None, true, "t", &mut after).unwrap().unwrap();
        let events = after.event_texts();
        let (_, text) = events.iter().find(|(kind, text)| *kind == "ORDER_EXECUTED" && text.contains(r#""order_id":"mk""#)).unwrap();
        let data: serde_json::Value = serde_json::from_str(text).unwrap();
        d(data["average_price"].as_str().unwrap())
    }

    /// The lane's record of a placement (`record_accepted`) for `taker`, which filled
    /// `fills` (maker id, trade id, quantity) at 100 and rests with what is left.
    fn record_placement(orders: &mut Orders, tx: &Connection, taker: NewOrder, fills: &[(&str, &str, &str)]) {
        let Accepted::New(o) = Orders::accept_unstored(tx, taker, "t".into(), &mut HashMap::new()).unwrap() else { panic!() };
        let filled: Decimal = fills.iter().map(|(_, _, q)| d(q)).sum();
        let result = MatchResult {
            order_id: o.order_id.clone(),
            fills: fills
                .iter()
                .map(|(maker, trade, q)| TradeFill {
                    trade_id: trade.to_string(),
                    maker_order_id: maker.to_string(),
                    maker_user_id: format!("usr_{maker}"),
                    price: d("100"),
                    quantity: d(q),
                    maker_remaining: Decimal::ZERO,
                    timestamp: "t".into(),
                })
                .collect(),
            filled,
            remaining: o.quantity - filled,
            rests: filled < o.quantity,
            self_trade_prevented: false,
        };
        orders.record_accepted(&Held::new(tx), o, result, true, "t", &mut AfterCommit::new("orders")).unwrap();
    }

    /// Every write to `orders` a temporary trigger saw since the last look.
    fn writes(tx: &Connection) -> Vec<String> {
        let mut stmt = tx.prepare("SELECT what FROM temp.writes ORDER BY rowid").unwrap();
        let w = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<Vec<String>, _>>().unwrap();
        drop(stmt);
        tx.execute("DELETE FROM temp.writes", []).unwrap();
        w
    }

    /// The lane's placements leave open orders' rows, their own and their makers',
    /// unwritten until the order closes, something else reads or writes the store, or
    /// it commits: then each is written once, as it stands. A maker placed and filled
    /// meanwhile is inserted filled, never `new` and then updated; a stored maker partly
    /// filled twice is updated once. Closed orders' rows are written at once, and every
    /// new row keeps the `seq` of its order's place.
    #[test]
    fn open_orders_rows_are_written_once_as_they_stand_and_keep_their_place() {
        let (_dir, mut conn) = store();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(
            "CREATE TEMP TABLE writes (what TEXT);
             CREATE TEMP TRIGGER orders_in AFTER INSERT ON main.orders BEGIN INSERT INTO writes VALUES ('insert ' || new.order_id || ' ' || new.status || ' ' || new.filled); END;
             CREATE TEMP TRIGGER orders_up AFTER UPDATE ON main.orders BEGIN INSERT INTO writes VALUES ('update ' || new.order_id || ' ' || new.status || ' ' || new.filled); END;",
        )
        .unwrap();
        let orders = &mut Orders::default();
        resting_sell(orders, &tx, "old", "10");
        writes(&tx);

        record_placement(orders, &tx, order("s1", Side::Sell, "100", "5"), &[]);
        record_placement(orders, &tx, order("b1", Side::Buy, "100", "2"), &[("s1", "trd_1", "2")]);
        record_placement(orders, &tx, order("b2", Side::Buy, "100", "3"), &[("s1", "trd_2", "3")]);
        record_placement(orders, &tx, order("b3", Side::Buy, "100", "4"), &[("old", "trd_3", "1"), ("old", "trd_4", "3")]);
        assert_eq!(
            writes(&tx),
            ["insert b1 filled 2", "insert s1 filled 5", "insert b2 filled 3", "insert b3 filled 4"],
            "closed orders at once; s1 once, filled, never `new`; old not yet"
        );
        assert!(orders.has_unwritten());
        // Any other command writes the rest first (here one that changes nothing of theirs).
        orders.handle(&tx, Cmd::Settled { order_id: "old".into() }, &mut AfterCommit::new("orders")).unwrap();
        assert_eq!(writes(&tx), ["update old partially_filled 4"], "two fills, one update");
        assert!(!orders.has_unwritten());
        let old = load(&tx, "old").unwrap().unwrap();
        assert_eq!((old.status, old.filled_quantity, old.fills.len()), (OrderStatus::PartiallyFilled, d("4"), 2));

        // A stored maker's closing fill is written at once; a new order still open at the
        // commit is written then, as it stands.
        record_placement(orders, &tx, order("b4", Side::Buy, "100", "6"), &[("old", "trd_5", "6")]);
        record_placement(orders, &tx, order("s2", Side::Sell, "100", "5"), &[]);
        record_placement(orders, &tx, order("b5", Side::Buy, "100", "1"), &[("s2", "trd_6", "1")]);
        assert_eq!(writes(&tx), ["update old filled 10", "insert b4 filled 6", "insert b5 filled 1"]);
        orders.before_commit(&tx).unwrap();
        assert_eq!(writes(&tx), ["insert s2 partially_filled 1"]);
        let in_place: Vec<String> = tx
            .prepare("SELECT order_id FROM orders ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(in_place, ["old", "s1", "b1", "b2", "b3", "b4", "s2", "b5"], "each in its order's place");
        let old = load(&tx, "old").unwrap().unwrap();
        assert_eq!(
            (old.status, old.filled_quantity, old.average_price, old.fills.len()),
            (OrderStatus::Filled, d("10"), Some(d("100")), 3)
        );
    }

    /// The live orders the lane checks when it opens: a partly filled maker and a resting
    /// order are open as the list shows them; an order still `accepted` is live but not
    /// open; a filled taker is neither. Finishing a cancel takes what remains of an open one.
    #[test]
    fn the_live_orders_are_read_with_whether_each_is_open_as_the_list_shows_it() {
        let (_dir, mut conn) = store();
        let tx = conn.transaction().unwrap();
        let orders = &mut Orders::default();
        for (id, quantity) in [("mk", "100"), ("rest", "5")] {
            resting_sell(orders, &tx, id, quantity);
        }
        trade(orders, &tx, 0, "100", "3"); // tk0: filled, closed
        orders.accept_at(&tx, order("acc", Side::Buy, "99", "1"), "t".into()).unwrap();
        let mut live = Vec::new();
        Orders::each_live(&tx, |id, open| live.push((id.to_string(), open))).unwrap();
        live.sort();
        assert_eq!(live, [("acc".to_string(), false), ("mk".into(), true), ("rest".into(), true)]);

        let filter = ListFilter { statuses: vec![OrderStatus::New, OrderStatus::PartiallyFilled], limit: 100, ..Default::default() };
        let mut listed: Vec<String> = Orders::list(&tx, &filter).unwrap().into_iter().map(|o| o.order_id).collect();
        listed.sort();
        assert_eq!(listed, live.iter().filter(|(_, open)| *open).map(|(id, _)| id.clone()).collect::<Vec<_>>());

        let mk = Orders::cancellable(&tx, "mk").unwrap();
        assert_eq!(mk, Some(Cancelled { order_id: "mk".into(), user_id: "usr_mk".into(), remaining: d("97") }));
        for id in ["acc", "tk0", "nope"] {
            assert_eq!(Orders::cancellable(&tx, id).unwrap(), None, "{id}");
        }
    }

    /// Only an order never stored is unknown: open, closed and still `accepted` ones are not.
    #[test]
    fn unknown_orders_are_the_unstored_ones() {
        let (_dir, mut conn) = store();
        let tx = conn.transaction().unwrap();
        let orders = &mut Orders::default();
        resting_sell(orders, &tx, "mk", "100");
        trade(orders, &tx, 0, "100", "3"); // tk0: filled, closed
        orders.accept_at(&tx, order("acc", Side::Buy, "99", "1"), "t".into()).unwrap();
        assert_eq!(Orders::unknown(&tx, ["nope2", "mk", "tk0", "acc", "nope1"]).unwrap(), ["nope1", "nope2"]);
    }

    /// A maker's average price comes from its stored notional, not from reading its fills
    /// again at each one; a row stored before the notional column gets it from its fills.
    #[test]
    fn a_makers_average_price_is_exact_after_many_fills_and_in_rows_from_before_the_notional() {
        let (_dir, mut conn) = store();
        let tx = conn.transaction().unwrap();
        let orders = &mut Orders::default();
        resting_sell(orders, &tx, "mk", "100");
        let fills = [("100.01", "3"), ("99.99", "7"), ("100.5", "0.25")];
        let vwap = |fills: &[(&str, &str)]| {
            let (notional, qty) = fills.iter().fold((Decimal::ZERO, Decimal::ZERO), |(n, q), (p, x)| (n + d(p) * d(x), q + d(x)));
            (notional / qty).round_dp(12).normalize()
        };
        for (n, (price, quantity)) in fills.iter().enumerate() {
            assert_eq!(trade(orders, &tx, n, price, quantity), vwap(&fills[..=n]), "the event after fill {n}");
        }
        let stored = load(&tx, "mk").unwrap().unwrap();
        assert_eq!(stored.average_price, Some(vwap(&fills)));
        assert_eq!(stored.filled_quantity, d("10.25"));

        // As a row from before the column (an older agt wrote it, so this one starts with
        // nothing kept): its next fill sums the fills it has.
        tx.execute("UPDATE orders SET notional = NULL WHERE order_id = 'mk'", []).unwrap();
        let all = [fills[0], fills[1], fills[2], ("101", "1.75")];
        assert_eq!(trade(&mut Orders::default(), &tx, 3, "101", "1.75"), vwap(&all));
        let (notional, stored) = tx
            .query_row("SELECT notional, filled FROM orders WHERE order_id = 'mk'", [], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .unwrap();
        assert_eq!(d(&notional), all.iter().map(|(p, q)| d(p) * d(q)).sum::<Decimal>());
        assert_eq!(d(&stored), d("12"));
        assert_eq!(load(&tx, "mk").unwrap().unwrap().average_price, Some(vwap(&all)));
    }

    /// A maker whose fills come to more than a decimal holds: eighty fills of 1 at 10^27
    /// overflowed the sum kept in its row, a panic that failed the trading lane at every
    /// start. Its average is then taken from its fills, and stays exact.
    #[test]
    fn a_makers_fills_may_come_to_more_than_a_decimal_holds() {
        let (_dir, mut conn) = store();
        let tx = conn.transaction().unwrap();
        let orders = &mut Orders::default();
        resting_sell(orders, &tx, "mk", "1000");
        let price = "1000000000000000000000000000";
        for n in 0..85 {
            assert_eq!(trade(orders, &tx, n, price, "1"), d(price), "the event after fill {n}");
        }
        assert_eq!(trade(orders, &tx, 85, "1", "85"), d("500000000000000000000000000.5"), "half at 10^27, half at 1");
        let stored = load(&tx, "mk").unwrap().unwrap();
        assert_eq!((stored.filled_quantity, stored.average_price), (d("170"), Some(d("500000000000000000000000000.5"))));
    }

    /// The rows kept for maker fills are the stored ones after every kind of write: a
    /// resting order, each partial fill, the stage's own update, an amend (a save of the
    /// taker); a filled or cancelled order is no longer kept. (Debug builds also check
    /// every row taken for a fill against the store.)
    #[test]
    fn the_rows_kept_for_maker_fills_are_the_stored_ones() {
        let (_dir, mut conn) = store();
        let tx = conn.transaction().unwrap();
        let orders = &mut Orders::default();
        let same = |orders: &Orders, id: &str| {
            assert_eq!(orders.resting.rows.get(id), load_bare(&tx, id).unwrap().as_ref(), "{id}");
        };
        resting_sell(orders, &tx, "mk", "10");
        resting_sell(orders, &tx, "gone", "1");
        same(orders, "mk");
        trade(orders, &tx, 0, "100", "3");
        same(orders, "mk");
        assert_eq!(orders.resting.rows["mk"].0.status, OrderStatus::PartiallyFilled);
        orders.handle(&tx, Cmd::Settled { order_id: "mk".into() }, &mut AfterCommit::new("orders")).unwrap();
        same(orders, "mk");
        // An amend of the maker: a new price, recorded as the lane records one.
        let head = Orders::head(&tx, "mk").unwrap().unwrap();
        let unfilled = MatchResult {
            order_id: "mk".into(),
            fills: vec![],
            filled: d("3"),
            remaining: d("6"),
            rests: true,
            self_trade_prevented: false,
        };
        orders.record_head(&tx, head.0, &head.1, unfilled, Some((d("101"), d("9"))), true, "t2", &mut AfterCommit::new("orders")).unwrap();
        same(orders, "mk");
        assert_eq!(orders.resting.rows["mk"].0.price, Some(d("101")));
        // Filled: no longer kept. Cancelled: the same.
        trade(orders, &tx, 1, "101", "6");
        assert!(!orders.resting.rows.contains_key("mk"));
        let c = Orders::cancellable(&tx, "gone").unwrap().unwrap();
        orders.cancelled(&tx, vec![c], "t3", &mut AfterCommit::new("orders")).unwrap();
        assert!(orders.resting.rows.is_empty(), "{:?}", orders.resting.rows.keys().collect::<Vec<_>>());
    }
}
