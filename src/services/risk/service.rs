//! The risk actor: serves the [`Cmd`](super::Cmd) contract over the [`Ledger`], the
//! per-user limits, the halts and the last trade prices.
//!
//! The global limits are read from the live settings (`risk.*`) on every check, so a hot
//! config change applies to the next order. Everything else lives in memory and is written
//! through to `data/risk.db` once per batch, just before its transaction commits
//! ([`Service::before_commit`]); [`Risk::open`] rebuilds it.

use super::accounts::{self, Ledger, Refusal};
use super::checks::{self, Context, Effective, RateWindow, QUOTE};
use super::{Cmd, Hold, ReserveRequest, Reserved, SettleRequest};
use crate::api::{Account, ApiError, RiskLimits, Side, TradingState};
use crate::services::actor::{AfterCommit, Service, ServiceCtx, ServiceError};
use crate::services::config::SharedSettings;
use foldhash::{HashMap, HashMapExt};
use rusqlite::{params, Connection};
use rust_decimal::Decimal;
use std::collections::BTreeSet;
use std::time::Instant;

/// A command's outcome: the inner error is the caller's, the outer one restarts the service.
pub(super) type Outcome<T> = Result<Result<T, ApiError>, ServiceError>;

/// The scope stored in `halts` for a halt of all trading (no symbol can be named `*`).
const GLOBAL: &str = "*";

pub struct Risk {
    /// The live config: the global limits come from its `risk.*` on every check.
    settings: SharedSettings,
    ledger: Ledger,
    /// Each user's own limits; fields left out inherit the global value.
    user_limits: HashMap<String, RiskLimits>,
    halted: bool,
    halted_symbols: BTreeSet<String>,
    /// The last trade price per symbol: the price band's anchor.
    last_price: HashMap<String, Decimal>,
    /// When each last price was set (µs since the epoch), since this incarnation started:
    /// an imported price older than a settled trade must not replace it.
    last_price_at: HashMap<String, i64>,
    /// Symbols whose last price settlements moved since the last commit: written once per
    /// batch, like the ledger.
    prices_unsaved: BTreeSet<String>,
    /// Recent placements per user (`rate_limited`); in memory only, a restart forgets them.
    rates: HashMap<String, RateWindow>,
    /// The market's instruments (its read model): a reserve checks the supply room at the
    /// finest grid any of them trades the asset on, not only its own order's.
    instruments: crate::services::market::Listed,
    /// Those finest grids, worked out once per snapshot of the read model.
    listed_grids: ListedGrids,
}

/// The finest grid of each asset over the listed instruments ([`Risk::finest_listed`]),
/// worked out once per snapshot of the market's read model (it changes only when an
/// instrument is added) and asset, not at every reserve.
#[derive(Default)]
struct ListedGrids {
    /// The snapshot they are worked out from (`None`: nothing listed yet).
    of: Option<crate::services::market::BySymbol>,
    /// Asset → [`checks::finest_grid`] over that snapshot.
    by_asset: HashMap<String, u32>,
}

impl Service for Risk {
    type Cmd = Cmd;
    const NAME: &'static str = "risk";
    const MIGRATIONS: &'static [&'static str] = accounts::MIGRATIONS;

    fn load(conn: &Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        Risk::open(conn, ctx.settings.clone(), ctx.instruments.clone())
    }

    /// The ledger changes in memory command by command and is written once per batch.
    fn before_commit(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        if !self.prices_unsaved.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO last_prices (symbol, price) VALUES (?1, ?2) ON CONFLICT (symbol) DO UPDATE SET price = excluded.price",
            )?;
            for symbol in std::mem::take(&mut self.prices_unsaved) {
                if let Some(price) = self.last_price.get(&symbol) {
                    stmt.execute(params![symbol, accounts::text(*price)])?;
                }
            }
        }
        Ok(self.ledger.flush(tx)?)
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Deposit { user_id, asset, amount, grid, reply } => {
                let r = self.deposit(after, &user_id, &asset, amount, grid)?;
                after.reply(reply, r);
            }
            Cmd::Withdraw { user_id, asset, amount, reply } => {
                let r = self.withdraw(after, &user_id, &asset, amount)?;
                after.reply(reply, r);
            }
            Cmd::Account { user_id, reply } => after.reply(reply, Ok(self.ledger.account(&user_id))),
            Cmd::Reserve { req, reply } => {
                let r = self.reserve(tx, &req)?;
                after.reply(reply, r);
            }
            Cmd::Settle { req, reply } => {
                let r = self.settle(tx, &req)?;
                after.reply(reply, r);
            }
            Cmd::Limits { user_id, reply } => after.reply(reply, Ok(self.limits(user_id.as_deref()).to_limits())),
            Cmd::SetLimits { user_id, limits, clear, reply } => {
                let r = self.set_limits(tx, after, &user_id, limits, &clear)?;
                after.reply(reply, r);
            }
            Cmd::Halt { symbol, reply } => {
                let r = self.set_halt(tx, after, symbol, true)?;
                after.reply(reply, r);
            }
            Cmd::Resume { symbol, reply } => {
                let r = self.set_halt(tx, after, symbol, false)?;
                after.reply(reply, r);
            }
            Cmd::TradingState(reply) => after.reply(reply, Ok(self.trading_state())),
            Cmd::Holds(reply) => after.reply(reply, Ok(self.holds())),
            Cmd::Room { symbol, grids, reply } => {
                let r = grids
                    .iter()
                    .try_for_each(|(asset, places)| self.ledger.room(asset, *places, Decimal::ZERO).map_err(|r| unlistable(&symbol, r)));
                after.reply(reply, r);
            }
            Cmd::SetLastPrice { symbol, price, as_of_us, reply } => {
                let r = self.set_last_price(tx, &symbol, price, as_of_us)?;
                after.reply(reply, r);
            }
        }
        Ok(())
    }
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Insufficient { asset, needed, available } => {
            let code = if asset == QUOTE { "insufficient_funds" } else { "insufficient_position" };
            let (needed, available, short) = (needed.normalize(), available.normalize(), (needed - available).normalize());
            ApiError::rejected(code, format!("needs {needed} {asset} but only {available} is available (short by {short})"))
        }
        Refusal::TooLarge => ApiError::invalid(
            "invalid_amount",
            "the balance would not be exact: it would need more than 28 significant digits (agt never rounds money)",
        ),
        Refusal::OverSupply { asset, supply } => ApiError::rejected(
            "max_supply",
            format!(
                "all accounts together already hold {} {asset}; agt keeps at most {} of one asset (10^27), so that every trade settles exactly",
                supply.normalize(),
                super::accounts::MAX_SUPPLY
            ),
        ),
        Refusal::NoRoom { asset, supply, short, places, deposit } => {
            // A first deposit refused read "all accounts together hold 0 USD": the total
            // that does not fit is the one the deposit would make.
            let held = match deposit.and_then(|amount| Some((amount, supply.checked_add(amount)?))) {
                Some((amount, after)) => format!(
                    "all accounts together hold {} {asset}, {} with this deposit of {}",
                    supply.normalize(),
                    after.normalize(),
                    amount.normalize()
                ),
                None => format!("all accounts together hold {} {asset}", supply.normalize()),
            };
            let shorts = if short.is_zero() {
                String::new()
            } else {
                format!(", and with short sales (made, open, and this order's) long balances may hold {} more", short.normalize())
            };
            let fix = match (deposit, short.is_zero()) {
                (Some(_), _) => ": deposit less, or in fewer decimal places",
                (None, false) => ": sell less short, or buy back what is sold short first",
                (None, true) => "",
            };
            ApiError::rejected(
                "max_supply",
                format!("{held}{shorts}; written to {places} decimal places (the finest of its balances and of the lots and ticks it trades on) that is more than 28 digits, so a trade could not settle exactly{fix}"),
            )
        }
        Refusal::NoHold => ApiError::conflict("order_not_open", "the order holds nothing: it is not open"),
        Refusal::Owes { owed } => ApiError::rejected("insufficient_funds", format!("the account {}", owes(&owed))),
    }
}

/// What an account owes, and how it stops owing: "owes 2 AAPL from short sales: buy it
/// back or deposit it before withdrawing".
fn owes(owed: &[(String, Decimal)]) -> String {
    let each: Vec<String> = owed.iter().map(|(asset, amount)| format!("{} {asset}", amount.normalize())).collect();
    let (list, it) = match each.as_slice() {
        [one] => (one.clone(), "it"),
        [rest @ .., last] => (format!("{} and {last}", rest.join(", ")), "them"),
        [] => (String::from("nothing"), "it"),
    };
    format!("owes {list} from short sales: buy {it} back or deposit {it} before withdrawing (an account that owes can withdraw nothing)")
}

/// Why `symbol` cannot be listed: what the accounts hold of an asset it trades does not
/// fit in 28 digits at the places its trades would move that asset by.
fn unlistable(symbol: &str, r: Refusal) -> ApiError {
    let Refusal::NoRoom { asset, supply, short, places, .. } = r else { return refused(r) };
    let shorts = if short.is_zero() {
        String::new()
    } else {
        format!(" (and long balances may hold {} more against short sales)", short.normalize())
    };
    ApiError::rejected(
        "max_supply",
        format!(
            "{symbol} cannot be listed: its trades would move {asset} by amounts of {places} decimal places, and all accounts together hold {} {asset}{shorts}, which written to {places} places is more than 28 digits, so its trades could not settle exactly; list it with a coarser tick or lot",
            supply.normalize()
        ),
    )
}

impl Risk {
    /// Rebuilds the service's memory from its store.
    pub fn open(conn: &Connection, settings: SharedSettings, instruments: crate::services::market::Listed) -> Result<Risk, ServiceError> {
        let ledger = Ledger::load(conn)?;
        let mut user_limits = HashMap::new();
        let mut stmt = conn.prepare("SELECT user_id, limits FROM user_limits")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (user, json): (String, String) = (r.get(0)?, r.get(1)?);
            let limits: RiskLimits =
                serde_json::from_str(&json).map_err(|e| ServiceError::Other(format!("risk.db: limits of {user}: {e}")))?;
            user_limits.insert(user, limits);
        }
        let mut halted = false;
        let mut halted_symbols = BTreeSet::new();
        let mut stmt = conn.prepare("SELECT scope FROM halts")?;
        for scope in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let scope = scope?;
            if scope == GLOBAL {
                halted = true;
            } else {
                halted_symbols.insert(scope);
            }
        }
        let mut last_price = HashMap::new();
        let mut stmt = conn.prepare("SELECT symbol, price FROM last_prices")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            last_price.insert(r.get::<_, String>(0)?, accounts::dec(&r.get::<_, String>(1)?)?);
        }
        Ok(Risk {
            settings,
            ledger,
            user_limits,
            halted,
            halted_symbols,
            last_price,
            last_price_at: HashMap::new(),
            prices_unsaved: BTreeSet::new(),
            rates: HashMap::new(),
            instruments,
            listed_grids: ListedGrids::default(),
        })
    }

    /// The limits that apply to `user` (the global ones without a user).
    pub fn limits(&self, user: Option<&str>) -> Effective {
        Effective::new(&self.settings.get().risk, user.and_then(|u| self.user_limits.get(u)))
    }

    pub fn account(&self, user: &str) -> Account {
        self.ledger.account(user)
    }

    pub fn holds(&self) -> Vec<Hold> {
        self.ledger.holds()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The open sells stored without their short part (risk's `shorts_unknown`): the
    /// lane looks up what remains of each and hands it to [`Risk::restore_shorts`].
    pub fn unknown_shorts(tx: &Connection) -> Result<Vec<String>, ServiceError> {
        Ok(accounts::listed_unknown_shorts(tx)?)
    }

    /// Sets each sell's short part from what remains of its order, and empties
    /// `shorts_unknown`, so that this runs once per store. Returns how many changed.
    pub fn restore_shorts(&mut self, tx: &Connection, remaining: &[(String, Decimal)]) -> Result<usize, ServiceError> {
        let restored = remaining.iter().filter(|(id, left)| self.ledger.restore_short(id, *left)).count();
        tx.execute("DELETE FROM shorts_unknown", [])?;
        Ok(restored)
    }

    pub fn trading_state(&self) -> TradingState {
        TradingState { halted: self.halted, halted_symbols: self.halted_symbols.iter().cloned().collect() }
    }

    pub fn deposit(&mut self, after: &mut AfterCommit, user: &str, asset: &str, amount: Decimal, grid: u32) -> Outcome<Account> {
        if let Err(e) = checks::validate_asset(asset).and_then(|_| checks::validate_amount(amount)) {
            return Ok(Err(e));
        }
        let bal = match self.ledger.deposit(user, asset, amount, grid) {
            Ok(b) => b,
            Err(r) => return Ok(Err(refused(r))),
        };
        after.event(
            "ACCOUNT_DEPOSITED",
            serde_json::json!({"user_id": user, "asset": asset, "amount": amount.normalize(), "total": bal.total.normalize()}),
        );
        Ok(Ok(self.ledger.account(user)))
    }

    pub fn withdraw(&mut self, after: &mut AfterCommit, user: &str, asset: &str, amount: Decimal) -> Outcome<Account> {
        if let Err(e) = checks::validate_asset(asset).and_then(|_| checks::validate_amount(amount)) {
            return Ok(Err(e));
        }
        let bal = match self.ledger.withdraw(user, asset, amount) {
            Ok(b) => b,
            Err(Refusal::Owes { owed }) => {
                return Ok(Err(ApiError::rejected(
                    "insufficient_funds",
                    format!("cannot withdraw {} {asset}: the account {}", amount.normalize(), owes(&owed)),
                )));
            }
            Err(Refusal::Insufficient { needed, available, .. }) => {
                let held = self.ledger.balance(user, asset).held;
                let why = if held > Decimal::ZERO { format!("; open orders hold {}", held.normalize()) } else { String::new() };
                return Ok(Err(ApiError::rejected(
                    "insufficient_funds",
                    format!(
                        "cannot withdraw {} {asset}: only {} is available (short by {}){why}",
                        needed.normalize(),
                        available.normalize().max(Decimal::ZERO),
                        (needed - available.max(Decimal::ZERO)).normalize()
                    ),
                )));
            }
            Err(r) => return Ok(Err(refused(r))),
        };
        after.event(
            "ACCOUNT_WITHDRAWN",
            serde_json::json!({"user_id": user, "asset": asset, "amount": amount.normalize(), "total": bal.total.normalize()}),
        );
        Ok(Ok(self.ledger.account(user)))
    }

    pub fn reserve(&mut self, tx: &Connection, req: &ReserveRequest) -> Outcome<Reserved> {
        // Idempotent: an order reserved before (open, or closed since) is answered as then.
        if let Some(h) = self.ledger.hold(&req.order_id).or_else(|| self.ledger.unflushed_hold(&req.order_id)) {
            return Ok(Ok(Reserved { budget: h.budget }));
        }
        if let Some(budget) = accounts::reserved_before(tx, &req.order_id)? {
            return Ok(Ok(Reserved { budget }));
        }
        Ok(self.reserve_new(req))
    }

    /// [`Risk::reserve`] for an order never reserved before, without looking for its
    /// stored hold: the lane's placements, whose ids `saga::place` has just made.
    pub fn reserve_new(&mut self, req: &ReserveRequest) -> Result<Reserved, ApiError> {
        let limits = self.limits(Some(&req.user_id));
        let symbol = req.instrument.symbol.as_str();
        let base = crate::services::market::base_asset(symbol);
        let now = Instant::now();
        if self.rates.len() > 10_000 {
            self.rates.retain(|_, w| !w.is_idle(now));
        }
        let cx = Context {
            limits: &limits,
            halted: self.halted,
            symbol_halted: self.halted_symbols.contains(symbol),
            open_orders: self.ledger.open_orders(&req.user_id),
            last_price: self.last_price.get(symbol).copied(),
            available_quote: self.ledger.available(&req.user_id, QUOTE),
            available_base: self.ledger.available(&req.user_id, base),
            rate: self.rates.entry(req.user_id.clone()).or_default(),
            now,
        };
        let plan = checks::admit(req, cx)?;
        let (own_lot, own_notional) = checks::grid_places(&req.instrument);
        let (lot_places, notional_places) = (own_lot.max(self.finest_listed(base)), own_notional.max(self.finest_listed(QUOTE)));
        // A short sale's own short part counts: its fills may lengthen its buyers by that much.
        self.ledger
            .room(base, lot_places, plan.short)
            .and_then(|_| self.ledger.room(QUOTE, notional_places, Decimal::ZERO))
            .map_err(refused)?;
        self.ledger.place_hold(&req.order_id, &req.user_id, symbol, req.side, &plan);
        Ok(Reserved { budget: plan.budget })
    }

    /// [`checks::finest_grid`] of `asset` over every listed instrument, as a deposit's
    /// grid is (`routes::accounts`): a reserve or an amend checks the supply room at these
    /// places too, not only at its own order's. Checked at its own lot alone, 8 × 10^25
    /// sold short on a lot of 1 beside open orders on a lot of 0.001 passed, and their
    /// later 0.001 fills summed with it past what a decimal holds: the open short sales'
    /// total rounded. Before the market has loaded nothing is listed (and no placement
    /// has an instrument yet).
    fn finest_listed(&mut self, asset: &str) -> u32 {
        let listed = self.instruments.get();
        let cached = &mut self.listed_grids;
        let same = match (&cached.of, &listed) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            *cached = ListedGrids { of: listed, by_asset: HashMap::new() };
        }
        if let Some(&places) = cached.by_asset.get(asset) {
            return places;
        }
        let places = cached.of.as_ref().map_or(0, |l| checks::finest_grid(l.values(), asset));
        cached.by_asset.insert(asset.to_string(), places);
        places
    }

    /// The hold a reserve placed for an open order, as its plan: what the lane journals
    /// (`services::intake`) so that the hold can be placed again without the checks.
    pub fn hold_plan(&self, order_id: &str) -> Option<checks::Plan> {
        let h = self.ledger.hold(order_id)?;
        Some(checks::Plan { asset: h.asset.to_string(), amount: h.amount, limit: h.limit, budget: h.budget, short: h.short })
    }

    /// Places a journalled hold again, as it was admitted (no checks: its placement has
    /// been answered). Nothing if the order was reserved before.
    pub fn restore_hold(
        &mut self,
        tx: &Connection,
        order: &crate::services::orders::NewOrder,
        plan: &checks::Plan,
    ) -> Result<(), ServiceError> {
        let known = self.ledger.hold(&order.order_id).or_else(|| self.ledger.unflushed_hold(&order.order_id)).is_some();
        if !known && accounts::reserved_before(tx, &order.order_id)?.is_none() {
            self.ledger.place_hold(&order.order_id, &order.user_id, &order.symbol, order.side, plan);
        }
        Ok(())
    }

    /// Settles trades and releases holds (`Cmd::Settle`, the saga step a resumed saga
    /// replays): each trade id is stored, so a replay does not move money twice.
    pub fn settle(&mut self, tx: &Connection, req: &SettleRequest) -> Outcome<()> {
        self.settle_as(tx, req, true)
    }

    /// [`Risk::settle`] for the lane's own placements, whose trades were just made and
    /// are settled once: the intake journal, not a stored trade id, keeps a redo from
    /// settling them twice (risk redoes only the records after its own mark, which
    /// commits with their settlements). Storing the ids was ~16 % of the pages risk wrote.
    pub fn settle_new(&mut self, tx: &Connection, req: &SettleRequest) -> Outcome<()> {
        self.settle_as(tx, req, false)
    }

    fn settle_as(&mut self, tx: &Connection, req: &SettleRequest, remember: bool) -> Outcome<()> {
        // Refuse a malformed request whole, before anything moves.
        for t in &req.trades {
            let ok = t.price > Decimal::ZERO
                && t.quantity > Decimal::ZERO
                && t.price.checked_mul(t.quantity).is_some()
                && !t.base_asset.is_empty()
                && t.base_asset != QUOTE;
            if !ok {
                return Ok(Err(ApiError::invalid(
                    "invalid_trade",
                    format!(
                        "trade {} has price {} and quantity {} of {:?}: both must be > 0",
                        t.trade_id, t.price, t.quantity, t.base_asset
                    ),
                )));
            }
        }
        let settled_at = if req.trades.is_empty() { 0 } else { chrono::Utc::now().timestamp_micros() };
        for t in &req.trades {
            if remember && !accounts::mark_settled(tx, &t.trade_id)? {
                continue;
            }
            self.ledger.settle(t).map_err(|r| ServiceError::Other(format!("cannot settle trade {}: {r:?}", t.trade_id)))?;
            self.last_price.insert(t.symbol.clone(), t.price);
            self.last_price_at.insert(t.symbol.clone(), settled_at);
            if !self.prices_unsaved.contains(&t.symbol) {
                self.prices_unsaved.insert(t.symbol.clone());
            }
        }
        for order_id in &req.release {
            self.ledger.release(order_id);
        }
        Ok(Ok(()))
    }

    /// A last price from imported history (see `Cmd::SetLastPrice`): `Ok(false)` when a
    /// trade settled since this incarnation started is newer than `as_of_us`.
    pub fn set_last_price(&mut self, tx: &Connection, symbol: &str, price: Decimal, as_of_us: i64) -> Outcome<bool> {
        if price <= Decimal::ZERO {
            return Ok(Err(ApiError::invalid("invalid_price", format!("a last price must be > 0, got {price} for {symbol}"))));
        }
        if self.last_price_at.get(symbol).is_some_and(|at| *at > as_of_us) {
            return Ok(Ok(false));
        }
        tx.prepare_cached(
            "INSERT INTO last_prices (symbol, price) VALUES (?1, ?2) ON CONFLICT (symbol) DO UPDATE SET price = excluded.price",
        )?
        .execute(params![symbol, accounts::text(price)])?;
        self.last_price.insert(symbol.to_string(), price);
        self.last_price_at.insert(symbol.to_string(), as_of_us);
        Ok(Ok(true))
    }

    /// The price band's anchor for a symbol.
    pub fn last_price(&self, symbol: &str) -> Option<Decimal> {
        self.last_price.get(symbol).copied()
    }

    /// The pre-trade checks an amend's new terms must pass ([`checks::admit_amend`]).
    pub fn check_amend(
        &self,
        (user, user_active): (&str, bool),
        symbol: &str,
        (price, quantity): (Decimal, Decimal),
        price_changed: bool,
        (tick, instrument_max): (Decimal, Decimal),
    ) -> Result<(), ApiError> {
        let limits = self.limits(Some(user));
        let cx = checks::AmendContext {
            user_id: user,
            user_active,
            limits: &limits,
            halted: self.halted,
            symbol_halted: self.halted_symbols.contains(symbol),
            last_price: self.last_price.get(symbol).copied(),
        };
        checks::admit_amend(symbol, price, quantity, price_changed, (tick, instrument_max), &cx)
    }

    /// Re-sizes an open order's hold for an amend (422 `insufficient_funds` /
    /// `insufficient_position` when the new size needs more than is available).
    /// `grid`: the decimal places of the order's lot, for the room a larger short part
    /// needs (0 where the amend was already answered: a redo, or a hold put back).
    pub fn amend(&mut self, order_id: &str, price: Decimal, remaining: Decimal, grid: u32) -> Outcome<()> {
        if price <= Decimal::ZERO || remaining <= Decimal::ZERO {
            return Ok(Err(ApiError::invalid(
                "invalid_amend",
                format!("an amend needs a price and a remaining quantity > 0, got {price} and {remaining}"),
            )));
        }
        let Some(hold) = self.ledger.hold(order_id) else {
            return Ok(Err(ApiError::conflict("order_not_open", format!("order {order_id} holds nothing: it is not open"))));
        };
        let (user, side, asset) = (hold.user_id.clone(), hold.side, hold.asset.clone());
        let allow_short = self.limits(Some(&user)).allow_short;
        // A sale grown short needs room at the finest lot its asset trades on, as a reserve.
        let grid = if side == Side::Sell { grid.max(self.finest_listed(&asset)) } else { grid };
        match self.ledger.resize(order_id, price, remaining, allow_short, grid) {
            Ok(()) => Ok(Ok(())),
            Err(Refusal::Insufficient { asset, needed, available }) => {
                let (code, what) = match side {
                    // `remaining` is what would rest, not the total the amend asked for
                    // (its fills are already paid): said so, or 200 reads as 193.
                    Side::Buy => ("insufficient_funds", format!("{remaining} unfilled at {price}")),
                    Side::Sell => ("insufficient_position", format!("{remaining} unfilled")),
                };
                Ok(Err(ApiError::rejected(
                    code,
                    format!(
                        "amending order {order_id} to {what} needs {} more {asset}, but only {} is available (short by {})",
                        needed.normalize(),
                        available.normalize(),
                        (needed - available).normalize()
                    ),
                )))
            }
            Err(Refusal::TooLarge) => Ok(Err(ApiError::rejected(
                "max_order_notional",
                format!("price {price} × quantity {remaining} does not fit in 28 significant digits"),
            ))),
            Err(r) => Ok(Err(refused(r))),
        }
    }

    pub fn set_limits(
        &mut self,
        tx: &Connection,
        after: &mut AfterCommit,
        user: &str,
        limits: RiskLimits,
        clear: &[String],
    ) -> Outcome<RiskLimits> {
        if let Err(e) = checks::validate_limits(&limits) {
            return Ok(Err(e));
        }
        let mut own = self.user_limits.get(user).cloned().unwrap_or_default();
        for key in clear {
            match key.as_str() {
                "max_open_orders" => own.max_open_orders = None,
                "max_order_quantity" => own.max_order_quantity = None,
                "max_order_notional" => own.max_order_notional = None,
                "max_orders_per_second" => own.max_orders_per_second = None,
                "price_band_pct" => own.price_band_pct = None,
                "allow_short" => own.allow_short = None,
                other => {
                    let known = checks::LIMIT_KEYS.join(", ");
                    return Ok(Err(ApiError::invalid(
                        "invalid_limit",
                        format!("unknown limit {}; the limits are {known}", crate::api::quote::quoted(other)),
                    )));
                }
            }
        }
        own.max_open_orders = limits.max_open_orders.or(own.max_open_orders);
        own.max_order_quantity = limits.max_order_quantity.or(own.max_order_quantity);
        own.max_order_notional = limits.max_order_notional.or(own.max_order_notional);
        own.max_orders_per_second = limits.max_orders_per_second.or(own.max_orders_per_second);
        own.price_band_pct = limits.price_band_pct.or(own.price_band_pct);
        own.allow_short = limits.allow_short.or(own.allow_short);
        let json = serde_json::to_string(&own).map_err(|e| ServiceError::Other(e.to_string()))?;
        tx.prepare_cached(
            "INSERT INTO user_limits (user_id, limits) VALUES (?1, ?2) ON CONFLICT (user_id) DO UPDATE SET limits = excluded.limits",
        )?
        .execute(params![user, json])?;
        self.user_limits.insert(user.to_string(), own.clone());
        let effective = self.limits(Some(user)).to_limits();
        after.event("RISK_LIMIT_CHANGED", serde_json::json!({"user_id": user, "limits": own, "effective": effective}));
        Ok(Ok(effective))
    }

    pub fn set_halt(&mut self, tx: &Connection, after: &mut AfterCommit, symbol: Option<String>, halt: bool) -> Outcome<TradingState> {
        if let Some(s) = &symbol {
            if !checks::valid_name(s) {
                return Ok(Err(ApiError::invalid(
                    "invalid_symbol",
                    format!(
                        "symbol must be 1-32 characters of A-Z, 0-9, '-' and '.' (such as \"AAPL\"), got {}",
                        crate::api::quote::quoted(s)
                    ),
                )));
            }
        }
        let changed = match (&symbol, halt) {
            (None, h) => std::mem::replace(&mut self.halted, h) != h,
            (Some(s), true) => self.halted_symbols.insert(s.clone()),
            (Some(s), false) => self.halted_symbols.remove(s),
        };
        let state = self.trading_state();
        if changed {
            let scope = symbol.as_deref().unwrap_or(GLOBAL);
            if halt {
                tx.prepare_cached("INSERT OR IGNORE INTO halts (scope) VALUES (?1)")?.execute([scope])?;
            } else {
                tx.prepare_cached("DELETE FROM halts WHERE scope = ?1")?.execute([scope])?;
            }
            after.event(
                "TRADING_STATE_CHANGED",
                serde_json::json!({
                    "halted": state.halted,
                    "halted_symbols": state.halted_symbols,
                    "symbol": symbol,
                    "action": if halt { "halt" } else { "resume" },
                }),
            );
        }
        Ok(Ok(state))
    }
}

#[cfg(test)]
mod set_last_price_tests {
    use super::*;
    use crate::api::{Instrument, OrderType};
    use crate::services::config::settings::Settings;
    use crate::services::store::{self, Durability};
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn run<T>(conn: &mut Connection, f: impl FnOnce(&Connection, &mut AfterCommit) -> Outcome<T>) -> Result<T, ApiError> {
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("risk");
        let out = f(&tx, &mut after).unwrap();
        tx.commit().unwrap();
        out
    }

    #[test]
    fn an_imported_price_anchors_the_band_unless_a_newer_trade_did() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store::open(&dir.path().join("risk.db"), Durability::Normal, accounts::MIGRATIONS).unwrap();
        let settings = SharedSettings::new(Settings::defaults());
        let mut risk = Risk::open(&conn, settings.clone(), Default::default()).unwrap();
        assert_eq!(risk.last_price("AAPL"), None);
        let e = run(&mut conn, |tx, _| risk.set_last_price(tx, "AAPL", d("0"), 1)).unwrap_err();
        assert_eq!((e.status, e.code.as_ref()), (400, "invalid_price"));
        assert!(run(&mut conn, |tx, _| risk.set_last_price(tx, "AAPL", d("100"), 1_000)).unwrap());
        assert_eq!(risk.last_price("AAPL"), Some(d("100")));

        // The band now applies: 10% by default.
        run(&mut conn, |_, after| risk.deposit(after, "u", "USD", d("100000"), 0)).unwrap();
        let instrument = Instrument {
            symbol: "AAPL".into(),
            base: "AAPL".into(),
            quote: "USD".into(),
            tick: d("0.01"),
            lot: d("1"),
            min_quantity: d("1"),
            max_quantity: d("1000"),
        };
        let req = |id: &str, price: &str| ReserveRequest {
            order_id: id.into(),
            user_id: "u".into(),
            user_active: true,
            instrument: instrument.clone(),
            side: Side::Buy,
            kind: OrderType::Limit,
            price: Some(d(price)),
            quantity: d("1"),
        };
        let e = run(&mut conn, |tx, _| risk.reserve(tx, &req("o1", "150"))).unwrap_err();
        assert_eq!((e.status, e.code.as_ref()), (422, "price_band"));
        run(&mut conn, |tx, _| risk.reserve(tx, &req("o2", "105"))).unwrap();

        // A trade settled after the moment an import stands for wins.
        risk.last_price_at.insert("AAPL".into(), 5_000);
        assert!(!run(&mut conn, |tx, _| risk.set_last_price(tx, "AAPL", d("50"), 4_999)).unwrap());
        assert_eq!(risk.last_price("AAPL"), Some(d("100")));
        assert!(run(&mut conn, |tx, _| risk.set_last_price(tx, "AAPL", d("101"), 5_001)).unwrap());
        // Persisted like a settled trade's price.
        assert_eq!(Risk::open(&conn, settings, Default::default()).unwrap().last_price("AAPL"), Some(d("101")));
    }
}
