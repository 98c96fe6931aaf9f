//! The ledger: balances, holds and positions, kept in memory and written through to
//! `data/risk.db`.
//!
//! **Invariants** (checked by the proptest in `tests.rs`): `held` of a balance is the sum
//! of the open holds of that user and asset; `available = total - held`; a total, a held
//! amount or an available amount never goes below zero (short selling, when allowed, is
//! the one way a base-asset total goes negative); settling a trade moves USD and the base
//! asset between two users and changes no sum over users; an account with any total
//! below zero withdraws nothing. With short selling (`run_shorts`, with sells that rest
//! across later trades): an account holds no more than its total (nothing below zero),
//! a sell's hold and short part together are what it has left to sell, and
//! [`Ledger::exposure`] counts what accounts below zero owe and every open short part.
//!
//! Every change marks what it touched; [`Ledger::flush`] writes exactly those rows in the
//! batch's transaction, so memory and store never disagree once the batch commits (and if
//! it does not commit, the service restarts and [`Ledger::load`] rebuilds memory).

use super::checks::{Plan, QUOTE};
use super::{Hold, SettleTrade};
use crate::api::decimal::exact_add;
use crate::api::{Account, Balance, Position, Side};
use foldhash::{HashMap, HashSet};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

/// One user's amount of one asset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bal {
    pub total: Decimal,
    /// Set aside for open orders.
    pub held: Decimal,
}

impl Bal {
    pub fn available(&self) -> Decimal {
        self.total - self.held
    }
}

/// What one order holds. Its texts are shared: the order id with the ledger's key, the
/// user, symbol and asset with every other hold that names them
/// (`services::names`). With 100 k
/// open orders a hold's own copies of them were most of its ~0.5 KB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRec {
    pub order_id: Arc<str>,
    pub user_id: Arc<str>,
    pub symbol: Arc<str>,
    pub asset: Arc<str>,
    pub side: Side,
    /// A limit buy's price: a fill of `q` shrinks the hold by `q × limit`, whatever price it
    /// traded at (the difference goes back to available). `None` for sells and market buys.
    pub limit: Option<Decimal>,
    pub amount: Decimal,
    /// A market buy's budget as reserved: the answer to a repeated `Reserve`.
    pub budget: Option<Decimal>,
    /// A short sale's part not yet sold beyond what it holds (`Plan::short`): counted in
    /// [`Ledger::exposure`] until it is sold or the order ends.
    pub short: Decimal,
    pub open: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub quantity: Decimal,
    pub average_price: Decimal,
}

/// The rows a change touched, written by [`Ledger::flush`].
#[derive(Default)]
struct Dirty {
    /// (user, asset), in the ledger's shared names: marking a balance costs no allocation.
    balances: HashSet<(Arc<str>, Arc<str>)>,
    /// Snapshots, closed holds included (they leave memory; the store keeps those it saw open).
    holds: HashMap<Arc<str>, HoldRec>,
    /// Holds placed since the last flush. One that is also closed by then is not written
    /// at all: no stored row ever showed it open, and only a stored open hold can be asked
    /// about again (a placement whose order was stored `accepted`; the lane stores a
    /// placement's order together with its record). Most of the lane's placements are
    /// placed, traded and closed between two flushes.
    placed: HashSet<Arc<str>>,
    /// (user, symbol), like `balances`.
    positions: HashSet<(Arc<str>, Arc<str>)>,
}

#[derive(Default)]
pub struct Ledger {
    /// user → asset → balance; an asset appears once anything has touched it.
    balances: HashMap<String, BTreeMap<String, Bal>>,
    /// Open holds by order id (closed ones live only in the store). Boxed: the table
    /// doubles as it grows, and with 128 k holds a table of whole records took 38 MB.
    holds: HashMap<Arc<str>, Box<HoldRec>>,
    names: crate::services::names::Names,
    /// Open holds per user: the `max_open_orders` count.
    open_orders: HashMap<String, u32>,
    /// user → symbol → position; only nonzero quantities.
    positions: HashMap<String, BTreeMap<String, Pos>>,
    /// asset → its total over every account: deposits less withdrawals, since a trade
    /// moves an asset between accounts and makes none. Kept at most [`MAX_SUPPLY`].
    supply: HashMap<String, Decimal>,
    /// asset → what the accounts below zero owe of it together (short sales): the long
    /// balances hold that much more than the supply. Changed only when a balance is or
    /// goes below zero.
    short: HashMap<String, Decimal>,
    /// asset → the open short sales' parts not sold yet (`HoldRec::short`): what they may
    /// still add to `short`, and so to the long balances.
    open_short: HashMap<String, Decimal>,
    /// asset → the most decimal places a deposit, a withdrawal or a stored balance of it
    /// has had. With the grid's places ([`Ledger::room`]) it bounds the places of every
    /// balance of the asset: a trade adds only amounts on an instrument's grid.
    finest: HashMap<String, u32>,
    dirty: Dirty,
}

/// The most of one asset all accounts together may hold: 10^27. A trade only moves an
/// asset between accounts, so no balance can pass this (short sales aside: those
/// [`Ledger::room`] bounds by [`Ledger::exposure`]), and a settlement's sums and products of such amounts stay inside a decimal's
/// ~7.9 × 10^28. Deposits over it are refused. Without it, a deposit near the decimal
/// limit let a later trade fail to settle, which failed risk at every start, since the
/// intake journal hands the same trade back each time.
pub const MAX_SUPPLY: Decimal = Decimal::from_parts(3_892_314_112, 2_681_241_660, 54_210_108, false, 0);

/// What a balance owes: how far below zero it is.
fn owed(total: Decimal) -> Decimal {
    (-total).max(Decimal::ZERO)
}

/// Whether `d`, written to `places` decimal places, has at most 28 digits.
fn fits_at(d: Decimal, places: u32) -> bool {
    let d = d.normalize();
    let shift = places.saturating_sub(d.scale());
    10i128.checked_pow(shift).and_then(|f| d.mantissa().checked_mul(f)).is_some_and(|m| m.abs() < 10i128.pow(28))
}

/// The decimal places a position's average price is shown with.
pub const SHOWN_PLACES: u32 = 10;
/// The decimal places it is kept with: its rounding at each fill stays far below what
/// is shown.
const KEPT_PLACES: u32 = SHOWN_PLACES + 4;

/// The average price of position `p` grown by `delta` at `price` to `q`: its cost over
/// its quantity, exact wherever the cost fits in a decimal. A cost can pass a decimal's
/// ~7.9 × 10^28 although no trade's notional can (each is at most the USD supply): buys
/// add up, and a buyer whose USD comes back buys again. Past that range the same average
/// is taken as the old one moved towards `price` by the new part's share of `q` (at most
/// 1, so nothing overflows). Without it, the eightieth buy of 1 at 10^27 overflowed, a
/// panic at settlement that failed the trading lane at every start.
fn grown_average(p: Pos, delta: Decimal, price: Decimal, q: Decimal) -> Decimal {
    let cost = p.quantity.abs().checked_mul(p.average_price).zip(delta.abs().checked_mul(price)).and_then(|(a, b)| a.checked_add(b));
    if let Some(average) = cost.and_then(|c| c.checked_div(q.abs())) {
        return average;
    }
    let share = delta.abs().checked_div(q.abs()).unwrap_or(Decimal::ONE);
    crate::api::decimal::moved_toward(p.average_price, price, share)
}

/// One user's positions in the symbols that trade `asset` (`AAPL`, `AAPL-USD`), in symbol
/// order: a range of the map, as they all begin with the asset's name. A trade looks them
/// up twice; a user with positions in many symbols is not walked whole each time.
fn of_asset<'m>(map: &'m BTreeMap<String, Pos>, asset: &'m str) -> impl Iterator<Item = (&'m String, &'m Pos)> + 'm {
    use std::ops::Bound;
    map.range::<str, _>((Bound::Included(asset), Bound::Unbounded))
        .take_while(move |(s, _)| s.starts_with(asset))
        .filter(move |(s, _)| crate::services::market::base_asset(s) == asset)
}

/// A ledger change the ledger cannot make (its callers map it to an API error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `needed` is more than `available`.
    Insufficient {
        asset: String,
        needed: Decimal,
        available: Decimal,
    },
    /// A result would not fit in a decimal.
    TooLarge,
    /// What all accounts hold of `asset` (its supply, and with short selling the
    /// `short` more that long balances hold against short sales, made or open), written to
    /// `places` decimal places (the finest its balances or an instrument's grid have),
    /// would need more than 28 digits: a trade could then round a balance.
    NoRoom {
        asset: String,
        /// What all accounts hold now (before the deposit refused, for one).
        supply: Decimal,
        short: Decimal,
        places: u32,
        /// The deposit refused, if that is what did not fit: its message gives the total
        /// it would have made, not only the one before it.
        deposit: Option<Decimal>,
    },
    /// A deposit would take what all accounts hold of `asset` over [`MAX_SUPPLY`].
    OverSupply {
        asset: String,
        supply: Decimal,
    },
    NoHold,
    /// A withdrawal from an account that owes: `owed` is each asset its balance of is
    /// below zero (sold short) and how much, in asset order. Without margin, what short
    /// sales brought in is all that stands behind the debt; let it leave and the debt
    /// can never be collected.
    Owes {
        owed: Vec<(String, Decimal)>,
    },
}

/// The value under `key`, the default put there first if there is none: the key is
/// copied into the map only then, where `entry(key.to_string())` copies it every time.
trait Slot<V> {
    fn slot_of(&mut self, key: &str) -> &mut V;
}

impl<V: Default> Slot<V> for HashMap<String, V> {
    fn slot_of(&mut self, key: &str) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_owned(), V::default());
        }
        self.get_mut(key).expect("inserted above")
    }
}

impl<V: Default> Slot<V> for BTreeMap<String, V> {
    fn slot_of(&mut self, key: &str) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_owned(), V::default());
        }
        self.get_mut(key).expect("inserted above")
    }
}

fn slot<'m, V, M: Slot<V>>(map: &'m mut M, key: &str) -> &'m mut V {
    map.slot_of(key)
}

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE balances (
        user_id TEXT NOT NULL,
        asset TEXT NOT NULL,
        total TEXT NOT NULL,
        held TEXT NOT NULL,
        PRIMARY KEY (user_id, asset)
    ) WITHOUT ROWID;
    CREATE TABLE holds (
        order_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        asset TEXT NOT NULL,
        side TEXT NOT NULL,
        limit_price TEXT,
        amount TEXT NOT NULL,
        budget TEXT,
        open INTEGER NOT NULL
    );
    CREATE INDEX holds_open ON holds(open) WHERE open = 1;
    CREATE TABLE settled_trades (trade_id TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE positions (
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        quantity TEXT NOT NULL,
        average_price TEXT NOT NULL,
        PRIMARY KEY (user_id, symbol)
    ) WITHOUT ROWID;
    CREATE TABLE user_limits (user_id TEXT PRIMARY KEY, limits TEXT NOT NULL);
    CREATE TABLE halts (scope TEXT PRIMARY KEY);
    CREATE TABLE last_prices (symbol TEXT PRIMARY KEY, price TEXT NOT NULL);",
    // Holds kept in their key's b-tree: one page less per hold written.
    "CREATE TABLE holds_v2 (
        order_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        asset TEXT NOT NULL,
        side TEXT NOT NULL,
        limit_price TEXT,
        amount TEXT NOT NULL,
        budget TEXT,
        open INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO holds_v2 SELECT * FROM holds;
    DROP TABLE holds;
    ALTER TABLE holds_v2 RENAME TO holds;
    CREATE INDEX holds_open ON holds(open) WHERE open = 1;",
    crate::services::intake::APPLIED_MIGRATION,
    // A short sale's part beyond its hold (`HoldRec::short`); NULL when it has none.
    "ALTER TABLE holds ADD COLUMN short TEXT;",
    // The open sells whose short part may be unknown: an agt before the column above
    // stored none (NULL, read as 0), so they counted nothing in the supply room. The
    // lane recomputes them once at its next start (`Ledger::restore_short`) and empties
    // the table. NULL also means "none" since, so some listed have none: they stay 0.
    "CREATE TABLE shorts_unknown (order_id TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT INTO shorts_unknown SELECT order_id FROM holds WHERE open = 1 AND side = 'sell' AND short IS NULL;",
];

/// Decimals are stored as their exact text.
pub fn dec(text: &str) -> rusqlite::Result<Decimal> {
    Decimal::from_str(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// A decimal as its store keeps it: normalized text, without allocating.
pub fn text(d: Decimal) -> crate::services::store::DecimalText {
    crate::services::store::DecimalText::of(d.normalize())
}

impl Ledger {
    pub fn balance(&self, user: &str, asset: &str) -> Bal {
        self.balances.get(user).and_then(|m| m.get(asset)).copied().unwrap_or_default()
    }

    pub fn available(&self, user: &str, asset: &str) -> Decimal {
        self.balance(user, asset).available()
    }

    pub fn open_orders(&self, user: &str) -> u32 {
        self.open_orders.get(user).copied().unwrap_or(0)
    }

    pub fn hold(&self, order_id: &str) -> Option<&HoldRec> {
        self.holds.get(order_id).map(|h| &**h)
    }

    /// A hold changed since the last flush, closed ones included (not in the store yet).
    pub fn unflushed_hold(&self, order_id: &str) -> Option<&HoldRec> {
        self.dirty.holds.get(order_id)
    }

    pub fn position(&self, user: &str, symbol: &str) -> Pos {
        self.positions.get(user).and_then(|m| m.get(symbol)).copied().unwrap_or_default()
    }

    /// A balance to change, marked for the next flush. Settling one trade changes four
    /// balances and two positions: with `entry(user.to_string())` that was ~30 allocations
    /// per trade for keys that were nearly always there already.
    fn bal_mut(&mut self, user: &str, asset: &str) -> &mut Bal {
        self.dirty.balances.insert((self.names.get(user), self.names.get(asset)));
        slot(slot(&mut self.balances, user), asset)
    }

    pub fn account(&self, user: &str) -> Account {
        let balances = self
            .balances
            .get(user)
            .map(|m| {
                m.iter()
                    .map(|(asset, b)| Balance {
                        asset: asset.clone(),
                        total: b.total.normalize(),
                        held: b.held.normalize(),
                        available: b.available().normalize(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let positions = self
            .positions
            .get(user)
            .map(|m| {
                m.iter()
                    .filter(|(_, p)| !p.quantity.is_zero())
                    .map(|(symbol, p)| Position {
                        symbol: symbol.clone(),
                        quantity: p.quantity.normalize(),
                        average_price: p.average_price.round_dp(SHOWN_PLACES).normalize(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Account { user_id: user.to_string(), balances, positions }
    }

    /// `grid` is the most decimal places a trade moves the asset by: a lot's places for a
    /// base asset, a tick's and a lot's together for USD (the notional), the finest over
    /// the instruments that trade it.
    pub fn deposit(&mut self, user: &str, asset: &str, amount: Decimal, grid: u32) -> Result<Bal, Refusal> {
        let b = self.balance(user, asset);
        let total = exact_add(b.total, amount).ok_or(Refusal::TooLarge)?;
        let supply = self.supply.get(asset).copied().unwrap_or_default();
        let supply = exact_add(supply, amount)
            .filter(|s| *s <= MAX_SUPPLY)
            .ok_or_else(|| Refusal::OverSupply { asset: asset.to_string(), supply })?;
        let places = self.finest(asset).max(amount.normalize().scale()).max(total.normalize().scale()).max(grid);
        // A deposit onto a balance below zero pays back what it owes first.
        let short = self.short_of(asset) - owed(b.total) + owed(total) + self.open_short_of(asset);
        if !supply.checked_add(short).is_some_and(|bound| fits_at(bound, places)) {
            return Err(Refusal::NoRoom { asset: asset.to_string(), supply: supply - amount, short, places, deposit: Some(amount) });
        }
        self.note_places(asset, amount.normalize().scale().max(total.normalize().scale()));
        self.supply.insert(asset.to_string(), supply);
        self.set_total(user, asset, total);
        if b.total < Decimal::ZERO {
            // It paid back (some of) what short sales owed.
            self.trim_positions(user, asset);
        }
        Ok(self.balance(user, asset))
    }

    /// What `user` owes: each asset whose balance is below zero (sold short) and by how
    /// much, in asset order; empty for an account that owes nothing.
    pub fn debts(&self, user: &str) -> Vec<(String, Decimal)> {
        let Some(m) = self.balances.get(user) else { return Vec::new() };
        m.iter().filter(|(_, b)| b.total < Decimal::ZERO).map(|(asset, b)| (asset.clone(), owed(b.total))).collect()
    }

    /// Takes `amount` from what is available, unless the account owes anything: while a
    /// short sale is open against the account, nothing leaves it (not the proceeds, not
    /// what they bought, not an unrelated asset, since any of them is the collateral),
    /// and buying the asset back or depositing it lets withdrawals go on.
    pub fn withdraw(&mut self, user: &str, asset: &str, amount: Decimal) -> Result<Bal, Refusal> {
        let owed = self.debts(user);
        if !owed.is_empty() {
            return Err(Refusal::Owes { owed });
        }
        let available = self.available(user, asset);
        if amount > available {
            return Err(Refusal::Insufficient { asset: asset.to_string(), needed: amount, available });
        }
        let total = exact_add(self.balance(user, asset).total, -amount).ok_or(Refusal::TooLarge)?;
        if let Some(s) = self.supply.get_mut(asset) {
            *s = s.saturating_sub(amount);
        }
        self.note_places(asset, amount.normalize().scale().max(total.normalize().scale()));
        self.set_total(user, asset, total);
        self.trim_positions(user, asset);
        Ok(self.balance(user, asset))
    }

    /// Fits `user`'s positions in the symbols that trade `asset` to the balance: the long
    /// ones together to no more than it holds, the short ones together to no more than it
    /// owes. A position is what trades put in the account (or took past it, sold short);
    /// units no longer there have no price to show. Called after every change of such a
    /// balance: a withdrawal (deposited units leave first, so a position shrinks only
    /// once the balance cannot cover it), a deposit (one that pays back a short sale
    /// closes the short position as far), a trade on either side (a sale through
    /// `AAPL-USD` of what was bought through `AAPL` closes the `AAPL` position; a buy
    /// through one symbol covers a short sale through another), and once at load.
    /// Positions shrink in symbol order and keep their average price. Without it, buying
    /// 1 BTC and withdrawing it, or buying 1 through `AAPL` and selling it through
    /// `AAPL-USD`, left a position of 1 in an account holding none.
    fn trim_positions(&mut self, user: &str, asset: &str) {
        let Some(map) = self.positions.get(user) else { return };
        let total = self.balance(user, asset).total;
        // (what the long positions hold, what the short ones owe): summed first, so that
        // a trade whose positions fit (nearly all) allocates nothing.
        let (mut long, mut short) = (Decimal::ZERO, Decimal::ZERO);
        for (_, p) in of_asset(map, asset) {
            if p.quantity > Decimal::ZERO {
                long = long.saturating_add(p.quantity);
            } else {
                short = short.saturating_sub(p.quantity);
            }
        }
        for (is_long, mut excess) in [(true, long - total.max(Decimal::ZERO)), (false, short - owed(total))] {
            if excess <= Decimal::ZERO {
                continue;
            }
            let Some(map) = self.positions.get(user) else { return };
            let side: Vec<(String, Pos)> =
                of_asset(map, asset).filter(|(_, p)| (p.quantity > Decimal::ZERO) == is_long).map(|(s, p)| (s.clone(), *p)).collect();
            for (symbol, p) in side {
                let take = excess.min(p.quantity.abs());
                excess -= take;
                self.dirty.positions.insert((self.names.get(user), self.names.get(&symbol)));
                let map = slot(&mut self.positions, user);
                if take == p.quantity.abs() {
                    map.remove(&symbol);
                } else {
                    let quantity = if is_long { p.quantity - take } else { p.quantity + take };
                    map.insert(symbol, Pos { quantity, ..p });
                }
                if excess.is_zero() {
                    break;
                }
            }
        }
    }

    /// Fits every stored position to its balance ([`Ledger::trim_positions`]) and writes
    /// the rows it changed. A store holds positions an older agt left past the balance
    /// (withdrawals before the trim existed, sales through another symbol of the asset);
    /// without this they stayed until the next withdrawal or trade of that asset. Once
    /// per start: nothing this agt does leaves a position past its balance.
    fn trim_loaded_positions(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (user, map) in &self.positions {
            for symbol in map.keys() {
                let asset = crate::services::market::base_asset(symbol);
                if !pairs.last().is_some_and(|(u, a)| u == user && a == asset) {
                    pairs.push((user.clone(), asset.to_string()));
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        for (user, asset) in &pairs {
            self.trim_positions(user, asset);
        }
        let trimmed = self.dirty.positions.len();
        if trimmed == 0 {
            return Ok(());
        }
        let tx = conn.unchecked_transaction()?;
        self.flush(&tx)?;
        tx.commit()?;
        tracing::info!(positions = trimmed, "trimmed stored positions to what their balances hold");
        Ok(())
    }

    /// Sets a balance's total, keeping `short` (what the accounts below zero owe) in step.
    fn set_total(&mut self, user: &str, asset: &str, total: Decimal) {
        let bal = self.bal_mut(user, asset);
        let before = bal.total;
        bal.total = total;
        self.note_owed(asset, before, total);
    }

    /// Moves a balance's total by `by`, as [`Ledger::set_total`]; a trade's four changes.
    fn move_total(&mut self, user: &str, asset: &str, by: Decimal) -> Result<(), Refusal> {
        let bal = self.bal_mut(user, asset);
        let before = bal.total;
        bal.total = before.checked_add(by).ok_or(Refusal::TooLarge)?;
        let total = bal.total;
        self.note_owed(asset, before, total);
        Ok(())
    }

    /// Keeps `short` in step with a balance that went from `before` to `total`: only a
    /// balance below zero, before or after, changes what is owed.
    fn note_owed(&mut self, asset: &str, before: Decimal, total: Decimal) {
        if before.is_sign_negative() || total.is_sign_negative() {
            let owes = owed(total) - owed(before);
            if !owes.is_zero() {
                let s = slot(&mut self.short, asset);
                *s = s.saturating_add(owes).max(Decimal::ZERO);
            }
        }
    }

    fn short_of(&self, asset: &str) -> Decimal {
        self.short.get(asset).copied().unwrap_or_default()
    }

    fn open_short_of(&self, asset: &str) -> Decimal {
        self.open_short.get(asset).copied().unwrap_or_default()
    }

    /// Moves the open short sales' total of `asset` by `by`.
    fn note_open_short(&mut self, asset: &str, by: Decimal) {
        if !by.is_zero() {
            let s = slot(&mut self.open_short, asset);
            *s = s.saturating_add(by).max(Decimal::ZERO);
        }
    }

    /// The most any one balance of `asset` can come to, in either direction: the supply,
    /// plus what accounts below zero owe (the long balances hold that much more), plus
    /// what open short sales may still sell short. Without short selling it is the supply.
    /// A trade only moves the asset between two accounts, so no balance passes this
    /// before or after it: a long one holds at most the supply and every short, and a
    /// short one owes at most what all shorts owe.
    pub fn exposure(&self, asset: &str) -> (Decimal, Decimal) {
        let supply = self.supply.get(asset).copied().unwrap_or_default();
        (supply, self.short_of(asset).saturating_add(self.open_short_of(asset)))
    }

    /// The most decimal places a balance of `asset` has had (see `finest`).
    fn finest(&self, asset: &str) -> u32 {
        self.finest.get(asset).copied().unwrap_or(0)
    }

    fn note_places(&mut self, asset: &str, places: u32) {
        if places > self.finest(asset) {
            self.finest.insert(asset.to_string(), places);
        }
    }

    /// Whether trades that move `asset` by amounts of up to `grid` decimal places settle
    /// exactly, with an order that may sell `short` more of it short. Every balance is
    /// at most [`Ledger::exposure`] away from zero (the supply, when nobody sells short)
    /// and has at most the places of the finest deposit, withdrawal or trade amount; if
    /// that bound written to those places fits in 28 digits, so does every balance before
    /// and after such a trade, and every notional (at most the buyer's USD, which is never
    /// short). Without it a trade rounded: 0.001 bought onto a balance of 10^26 + 0.9 left
    /// it unchanged, and the seller's 0.001 was gone; with short selling, long balances
    /// could pass the supply (and overflow a decimal) by what shorts owe.
    ///
    /// The places of every term of the bound count too, not only the balances' and this
    /// order's grid: open short sales on a finer lot (0.001 resting on `AAPL-USD`) beside
    /// one of 10^26 on a lot of 1 summed to 10^26 + 1.001, which a decimal cannot hold,
    /// and the running total of open short sales lost the 0.001 for good.
    pub fn room(&self, asset: &str, grid: u32, short: Decimal) -> Result<(), Refusal> {
        let (supply, owed) = self.exposure(asset);
        let places = [self.short_of(asset), self.open_short_of(asset), short]
            .iter()
            .map(|d| d.normalize().scale())
            .fold(self.finest(asset).max(grid), u32::max);
        let short = owed.saturating_add(short);
        if supply.checked_add(short).is_some_and(|bound| fits_at(bound, places)) {
            Ok(())
        } else {
            Err(Refusal::NoRoom { asset: asset.to_string(), supply, short, places, deposit: None })
        }
    }

    /// Takes the hold the checks planned. The checks made sure it fits in available.
    pub fn place_hold(&mut self, order_id: &str, user: &str, symbol: &str, side: Side, plan: &Plan) {
        let order_id: Arc<str> = Arc::from(order_id);
        let rec = HoldRec {
            order_id: order_id.clone(),
            user_id: self.names.get(user),
            symbol: self.names.get(symbol),
            asset: self.names.get(&plan.asset),
            side,
            limit: plan.limit,
            amount: plan.amount,
            budget: plan.budget,
            short: plan.short,
            open: true,
        };
        self.note_open_short(&plan.asset, plan.short);
        self.bal_mut(user, &plan.asset).held += plan.amount;
        *slot(&mut self.open_orders, user) += 1;
        self.dirty.holds.insert(order_id.clone(), rec.clone());
        self.dirty.placed.insert(order_id.clone());
        self.holds.insert(order_id, Box::new(rec));
    }

    /// Closes an order's hold and returns what it still held to available. False if the
    /// order holds nothing open (never reserved, or already released).
    pub fn release(&mut self, order_id: &str) -> bool {
        let Some(mut rec) = self.holds.remove(order_id) else { return false };
        self.note_open_short(&rec.asset, -rec.short);
        rec.short = Decimal::ZERO;
        let bal = self.bal_mut(&rec.user_id, &rec.asset);
        bal.held = (bal.held - rec.amount).max(Decimal::ZERO);
        if let Some(n) = self.open_orders.get_mut(&*rec.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open_orders.remove(&*rec.user_id);
            }
        }
        rec.amount = Decimal::ZERO;
        rec.open = false;
        self.dirty.holds.insert(rec.order_id.clone(), *rec);
        true
    }

    /// Re-sizes an open hold for an amend: a buy to `remaining × price`, a sell to
    /// `remaining` (or what is available, short selling: the rest is its short part).
    /// Refused if the growth is more than is available, or if a larger short part leaves
    /// no room (see [`Ledger::room`]) at `grid` places.
    pub fn resize(&mut self, order_id: &str, price: Decimal, remaining: Decimal, allow_short: bool, grid: u32) -> Result<(), Refusal> {
        let Some(rec) = self.holds.get(order_id) else { return Err(Refusal::NoHold) };
        let (user, asset, old, side, old_short) = (rec.user_id.clone(), rec.asset.clone(), rec.amount, rec.side, rec.short);
        let available = self.available(&user, &asset);
        let mut want = match rec.side {
            Side::Buy => price.checked_mul(remaining).ok_or(Refusal::TooLarge)?,
            Side::Sell => remaining,
        };
        if want > old && want - old > available {
            if rec.side == Side::Sell && allow_short {
                want = old + available.max(Decimal::ZERO);
            } else {
                return Err(Refusal::Insufficient { asset: asset.to_string(), needed: want - old, available });
            }
        }
        let short = match side {
            Side::Sell => (remaining - want).max(Decimal::ZERO),
            Side::Buy => Decimal::ZERO,
        };
        if short > old_short {
            self.room(&asset, grid, short - old_short)?;
        }
        self.note_open_short(&asset, short - old_short);
        let rec = self.holds.get_mut(order_id).expect("checked above");
        rec.amount = want;
        rec.short = short;
        if rec.side == Side::Buy {
            rec.limit = Some(price);
        }
        let snapshot = HoldRec::clone(rec);
        self.dirty.holds.insert(snapshot.order_id.clone(), snapshot);
        let bal = self.bal_mut(&user, &asset);
        bal.held = (bal.held - old + want).max(Decimal::ZERO);
        Ok(())
    }

    /// Sets a sell's short part from the order's `remaining` size, for a hold stored
    /// without one (`shorts_unknown`). A sell holds what was available and sells the rest
    /// short, and each fill comes off the hold first, then off the short part, so at any
    /// time `amount + short` is what remains of the order: the short part is
    /// `remaining - amount`. Only ever raises it (a hold that knows its part keeps it);
    /// false if the order holds nothing open or is not a sell.
    pub fn restore_short(&mut self, order_id: &str, remaining: Decimal) -> bool {
        let Some(rec) = self.holds.get_mut(order_id) else { return false };
        if rec.side != Side::Sell {
            return false;
        }
        let short = (remaining - rec.amount).max(Decimal::ZERO);
        if short <= rec.short {
            return false;
        }
        let by = short - rec.short;
        rec.short = short;
        let snapshot = HoldRec::clone(rec);
        self.note_open_short(&snapshot.asset, by);
        self.dirty.holds.insert(snapshot.order_id.clone(), snapshot);
        true
    }

    /// Shrinks an order's open hold by up to `by` and takes as much off its owner's held
    /// amount. A short sale sells what it holds first: what `by` asks beyond that comes
    /// off its short part (`sold_short`). Returns what came off the short part.
    fn shrink_hold(&mut self, order_id: &str, by: Decimal, sold_short: bool) -> Decimal {
        let Some(rec) = self.holds.get_mut(order_id) else { return Decimal::ZERO };
        let take = by.min(rec.amount).max(Decimal::ZERO);
        rec.amount -= take;
        let short = if sold_short { (by - take).min(rec.short).max(Decimal::ZERO) } else { Decimal::ZERO };
        rec.short -= short;
        let snapshot = HoldRec::clone(rec);
        self.note_open_short(&snapshot.asset, -short);
        let bal = self.bal_mut(&snapshot.user_id, &snapshot.asset);
        bal.held = (bal.held - take).max(Decimal::ZERO);
        self.dirty.holds.insert(snapshot.order_id.clone(), snapshot);
        short
    }

    /// After a short sale sold beyond what it held: those units came out of a balance the
    /// owner's other sells of the asset may hold (a sell placed before it, holding all
    /// there was). They would then hold more than there is: what they hold beyond the
    /// balance becomes their short part, the newest order's first, as if they had been
    /// placed after the short sale. So the account never holds more than it has, and the
    /// room ([`Ledger::exposure`]) still counts all they may sell short (the short sale's
    /// part went down by as much as theirs go up). Rare (a short seller with covered sells
    /// open), so a scan of the open holds is cheap enough.
    fn rehold_after_short_sale(&mut self, user: &str, asset: &str) {
        let bal = self.balance(user, asset);
        let mut excess = bal.held - bal.total.max(Decimal::ZERO);
        if excess <= Decimal::ZERO {
            return;
        }
        let mut sells: Vec<Arc<str>> = self
            .holds
            .values()
            .filter(|h| h.open && h.side == Side::Sell && h.amount > Decimal::ZERO && &*h.user_id == user && &*h.asset == asset)
            .map(|h| h.order_id.clone())
            .collect();
        // Order ids are time-ordered (UUIDv7): the newest first, whatever order the map keeps.
        sells.sort_unstable_by(|a, b| b.cmp(a));
        for id in sells {
            let rec = self.holds.get_mut(&*id).expect("listed above");
            let moved = excess.min(rec.amount);
            rec.amount -= moved;
            rec.short += moved;
            let snapshot = HoldRec::clone(rec);
            self.note_open_short(asset, moved);
            self.dirty.holds.insert(id, snapshot);
            let bal = self.bal_mut(user, asset);
            bal.held -= moved;
            excess -= moved;
            if excess.is_zero() {
                break;
            }
        }
    }

    /// Moves cash and asset for one trade: the buyer pays `price × qty` USD out of its
    /// hold, the seller delivers `qty` of the base asset out of its hold.
    pub fn settle(&mut self, t: &SettleTrade) -> Result<(), Refusal> {
        let notional = t.price.checked_mul(t.quantity).ok_or(Refusal::TooLarge)?;
        let base = t.base_asset.as_str();
        // Buyer: a limit buy's hold shrinks at its limit price, a budget at the fill price.
        let by = match self.holds.get(t.buy_order_id.as_str()) {
            Some(h) if &*h.asset == QUOTE => match h.limit {
                Some(limit) => limit.checked_mul(t.quantity).ok_or(Refusal::TooLarge)?,
                None => notional,
            },
            _ => Decimal::ZERO,
        };
        // Checked before anything changes, so that a refusal leaves the ledger as it was
        // (MAX_SUPPLY keeps it from happening).
        let fits = |total: Decimal, plus: Decimal| total.checked_add(plus).ok_or(Refusal::TooLarge);
        fits(self.balance(&t.buy_user_id, base).total, t.quantity)?;
        fits(self.balance(&t.sell_user_id, QUOTE).total, notional)?;
        self.shrink_hold(&t.buy_order_id, by, false);
        self.move_total(&t.buy_user_id, QUOTE, -notional)?;
        self.move_total(&t.buy_user_id, base, t.quantity)?;
        // Seller.
        let by = match self.holds.get(t.sell_order_id.as_str()) {
            Some(h) if &*h.asset == base => t.quantity,
            _ => Decimal::ZERO,
        };
        let sold_short = self.shrink_hold(&t.sell_order_id, by, true);
        self.move_total(&t.sell_user_id, base, -t.quantity)?;
        self.move_total(&t.sell_user_id, QUOTE, notional)?;
        if sold_short > Decimal::ZERO {
            self.rehold_after_short_sale(&t.sell_user_id, base);
        }
        // Holds never exceed what there is. A short sale (`risk.allow_short`) takes the
        // seller's asset below zero by design, holding what there was: there the check is
        // that it holds nothing it does not have.
        for (user, b) in [(&t.buy_user_id, QUOTE), (&t.sell_user_id, base)] {
            let bal = self.balance(user, b);
            let short_sale = b != QUOTE && bal.total < Decimal::ZERO;
            if (short_sale && bal.held > Decimal::ZERO) || (!short_sale && bal.available() < Decimal::ZERO) {
                tracing::error!(user = %user, asset = b, trade = %t.trade_id, "a settled trade left a balance below its holds");
            }
        }
        self.move_position(&t.buy_user_id, &t.symbol, t.quantity, t.price);
        // Selling what was deposited rather than bought opens no short position: a sale
        // takes the position down to zero, and below only as far as the asset total went
        // below zero (short selling).
        let held_before = self.position(&t.sell_user_id, &t.symbol).quantity;
        let floor = self.balance(&t.sell_user_id, base).total.min(Decimal::ZERO);
        let delta = (held_before - t.quantity).max(floor.min(held_before)) - held_before;
        if !delta.is_zero() {
            self.move_position(&t.sell_user_id, &t.symbol, delta, t.price);
        }
        // The asset is one whatever symbol trades it: a sale through `AAPL-USD` of what
        // was bought through `AAPL` takes the `AAPL` position with it, and a buy through
        // one symbol covers a short sale through another (see `trim_positions`).
        self.trim_positions(&t.sell_user_id, base);
        self.trim_positions(&t.buy_user_id, base);
        Ok(())
    }

    /// A position's quantity moves by `delta` at `price`; its average price is that of
    /// the quantity held (a weighted average while it grows, unchanged while it shrinks).
    fn move_position(&mut self, user: &str, symbol: &str, delta: Decimal, price: Decimal) {
        self.dirty.positions.insert((self.names.get(user), self.names.get(symbol)));
        let map = slot(&mut self.positions, user);
        let p = map.get(symbol).copied().unwrap_or_default();
        let q = p.quantity + delta;
        let average_price = if p.quantity.is_zero() || p.quantity.is_sign_positive() == delta.is_sign_positive() {
            // Kept to KEPT_PLACES, four more than it is shown with: rounded to the shown
            // places at each fill, a position built by many fills drifted (seven fills of
            // one, 704 / 7, gave …715 for …714); it is rounded to those once, where it is
            // shown (`Ledger::account`). Not to every digit a decimal has: a 28-digit
            // average made each later fill's arithmetic and row several times dearer.
            grown_average(p, delta, price, q).round_dp(KEPT_PLACES)
        } else if q.is_zero() {
            Decimal::ZERO
        } else if q.is_sign_positive() == p.quantity.is_sign_positive() {
            p.average_price
        } else {
            price
        };
        if q.is_zero() {
            map.remove(symbol);
        } else {
            *slot(map, symbol) = Pos { quantity: q, average_price: average_price.normalize() };
        }
    }

    /// The order ids of the open holds, in no order.
    pub fn hold_ids(&self) -> impl Iterator<Item = &str> {
        self.holds.keys().map(|id| &**id)
    }

    /// Every open hold, by user then order id.
    pub fn holds(&self) -> Vec<Hold> {
        let mut v: Vec<Hold> = self
            .holds
            .values()
            .map(|h| Hold {
                order_id: h.order_id.to_string(),
                user_id: h.user_id.to_string(),
                asset: h.asset.to_string(),
                amount: h.amount.normalize(),
            })
            .collect();
        v.sort_by(|a, b| (&a.user_id, &a.order_id).cmp(&(&b.user_id, &b.order_id)));
        v
    }

    /// All balances, for consistency checks: (user, asset) → balance.
    pub fn all_balances(&self) -> BTreeMap<(String, String), Bal> {
        self.balances.iter().flat_map(|(u, m)| m.iter().map(move |(a, b)| ((u.clone(), a.clone()), *b))).collect()
    }

    /// All nonzero positions: (user, symbol) → position.
    pub fn all_positions(&self) -> BTreeMap<(String, String), Pos> {
        self.positions.iter().flat_map(|(u, m)| m.iter().map(move |(s, p)| ((u.clone(), s.clone()), *p))).collect()
    }

    /// Writes what changed since the last flush.
    pub fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        if !dirty.balances.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO balances (user_id, asset, total, held) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id, asset) DO UPDATE SET total = excluded.total, held = excluded.held",
            )?;
            for (user, asset) in &dirty.balances {
                let b = self.balance(user, asset);
                stmt.execute(params![&**user, &**asset, text(b.total), text(b.held)])?;
            }
        }
        if !dirty.holds.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO holds (order_id, user_id, symbol, asset, side, limit_price, amount, budget, open, short)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (order_id) DO UPDATE SET limit_price = excluded.limit_price,
                     amount = excluded.amount, open = excluded.open, short = excluded.short",
            )?;
            for h in dirty.holds.values().filter(|h| h.open || !dirty.placed.contains(&h.order_id)) {
                stmt.execute(params![
                    &*h.order_id,
                    &*h.user_id,
                    &*h.symbol,
                    &*h.asset,
                    h.side.as_str(),
                    h.limit.map(text),
                    text(h.amount),
                    h.budget.map(text),
                    h.open,
                    (!h.short.is_zero()).then(|| text(h.short))
                ])?;
            }
        }
        if !dirty.positions.is_empty() {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO positions (user_id, symbol, quantity, average_price) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id, symbol) DO UPDATE SET quantity = excluded.quantity, average_price = excluded.average_price",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM positions WHERE user_id = ?1 AND symbol = ?2")?;
            for (user, symbol) in &dirty.positions {
                match self.positions.get(&**user).and_then(|m| m.get(&**symbol)) {
                    Some(p) => upsert.execute(params![&**user, &**symbol, text(p.quantity), text(p.average_price)])?,
                    None => delete.execute(params![&**user, &**symbol])?,
                };
            }
        }
        Ok(())
    }

    /// Rebuilds the ledger from the store (on start and after every restart).
    pub fn load(conn: &Connection) -> rusqlite::Result<Ledger> {
        let mut ledger = Ledger::default();
        let mut stmt = conn.prepare("SELECT user_id, asset, total, held FROM balances")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (user, asset): (String, String) = (r.get(0)?, r.get(1)?);
            let bal = Bal { total: dec(&r.get::<_, String>(2)?)?, held: dec(&r.get::<_, String>(3)?)? };
            // Saturating: a store written before MAX_SUPPLY may hold more; it then takes
            // no deposit of that asset until withdrawals bring it under.
            let supply = ledger.supply.entry(asset.clone()).or_default();
            *supply = supply.saturating_add(bal.total);
            ledger.note_places(&asset, bal.total.normalize().scale());
            if bal.total.is_sign_negative() {
                let short = ledger.short.entry(asset.clone()).or_default();
                *short = short.saturating_add(-bal.total);
            }
            ledger.balances.entry(user).or_default().insert(asset, bal);
        }
        let mut stmt =
            conn.prepare("SELECT order_id, user_id, symbol, asset, side, limit_price, amount, budget, short FROM holds WHERE open = 1")?;
        let mut rows = stmt.query([])?;
        let open: usize = conn.query_row("SELECT count(*) FROM holds WHERE open = 1", [], |r| r.get(0))?;
        ledger.holds.reserve(open);
        let text_at = crate::services::store::text_at;
        while let Some(r) = rows.next()? {
            let rec = HoldRec {
                order_id: Arc::from(text_at(r, 0)?),
                user_id: ledger.names.get(text_at(r, 1)?),
                symbol: ledger.names.get(text_at(r, 2)?),
                asset: ledger.names.get(text_at(r, 3)?),
                side: crate::services::store::enum_at(r, 4, Side::parse)?,
                limit: r.get::<_, Option<String>>(5)?.map(|t| dec(&t)).transpose()?,
                amount: dec(&r.get::<_, String>(6)?)?,
                budget: r.get::<_, Option<String>>(7)?.map(|t| dec(&t)).transpose()?,
                short: r.get::<_, Option<String>>(8)?.map(|t| dec(&t)).transpose()?.unwrap_or_default(),
                open: true,
            };
            if !rec.short.is_zero() {
                let short = ledger.open_short.entry(rec.asset.to_string()).or_default();
                *short = short.saturating_add(rec.short);
            }
            *ledger.open_orders.entry(rec.user_id.to_string()).or_default() += 1;
            ledger.holds.insert(rec.order_id.clone(), Box::new(rec));
        }
        let mut stmt = conn.prepare("SELECT user_id, symbol, quantity, average_price FROM positions")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (user, symbol): (String, String) = (r.get(0)?, r.get(1)?);
            let p = Pos { quantity: dec(&r.get::<_, String>(2)?)?, average_price: dec(&r.get::<_, String>(3)?)? };
            ledger.positions.entry(user).or_default().insert(symbol, p);
        }
        ledger.trim_loaded_positions(conn)?;
        Ok(ledger)
    }
}

/// The budget a stored (possibly closed) hold was reserved with: `Some(budget)` when the
/// order was reserved before, `None` when it never was.
pub fn reserved_before(tx: &Connection, order_id: &str) -> rusqlite::Result<Option<Option<Decimal>>> {
    let row: Option<Option<String>> =
        tx.prepare_cached("SELECT budget FROM holds WHERE order_id = ?1")?.query_row([order_id], |r| r.get(0)).optional()?;
    row.map(|b| b.map(|t| dec(&t)).transpose()).transpose()
}

/// The orders listed in `shorts_unknown` (see [`Ledger::restore_short`]): empty once the
/// lane has restored them, so a start asks one read of an empty table.
pub fn listed_unknown_shorts(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT order_id FROM shorts_unknown")?;
    let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect();
    ids
}

/// Records a trade as settled; false if it already was.
pub fn mark_settled(tx: &Connection, trade_id: &str) -> rusqlite::Result<bool> {
    Ok(tx.prepare_cached("INSERT OR IGNORE INTO settled_trades (trade_id) VALUES (?1)")?.execute([trade_id])? == 1)
}
