//! Tests of the risk service: each pre-trade check on its own, the service through its
//! store, and a proptest of the ledger's invariants over random sessions.

use super::accounts::{Bal, MIGRATIONS};
use super::checks::{self, admit, Context, Effective, RateWindow};
use super::service::{Outcome, Risk};
use super::{Hold, ReserveRequest, Reserved, SettleRequest, SettleTrade};
use crate::api::{ApiError, Instrument, OrderType, RiskLimits, Side};
use crate::services::actor::AfterCommit;
use crate::services::config::settings::Settings;
use crate::services::config::SharedSettings;
use crate::services::store::{self, Durability};
use rusqlite::{Connection, OptionalExtension};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn instrument(symbol: &str) -> Instrument {
    Instrument {
        symbol: symbol.into(),
        base: crate::services::market::base_asset(symbol).into(),
        quote: "USD".into(),
        tick: d("0.01"),
        lot: d("1"),
        min_quantity: d("1"),
        max_quantity: d("100000"),
    }
}

fn order(id: &str, user: &str, side: Side, price: Option<&str>, qty: &str) -> ReserveRequest {
    ReserveRequest {
        order_id: id.into(),
        user_id: user.into(),
        user_active: true,
        instrument: instrument("AAPL"),
        side,
        kind: if price.is_some() { OrderType::Limit } else { OrderType::Market },
        price: price.map(d),
        quantity: d(qty),
    }
}

// ---------------------------------------------------------------- the checks, one by one

fn global() -> Effective {
    Effective::new(&Settings::defaults().risk, None)
}

/// A user with plenty of everything, in a market that has not traded.
struct Scene {
    limits: Effective,
    halted: bool,
    symbol_halted: bool,
    open_orders: u32,
    last_price: Option<Decimal>,
    quote: Decimal,
    base: Decimal,
    rate: RateWindow,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            limits: global(),
            halted: false,
            symbol_halted: false,
            open_orders: 0,
            last_price: None,
            quote: d("1000000"),
            base: d("1000"),
            rate: RateWindow::default(),
        }
    }
    fn admit(&mut self, req: &ReserveRequest) -> Result<checks::Plan, ApiError> {
        admit(
            req,
            Context {
                limits: &self.limits,
                halted: self.halted,
                symbol_halted: self.symbol_halted,
                open_orders: self.open_orders,
                last_price: self.last_price,
                available_quote: self.quote,
                available_base: self.base,
                rate: &mut self.rate,
                now: Instant::now(),
            },
        )
    }
    fn code(&mut self, req: &ReserveRequest) -> String {
        match self.admit(req) {
            Ok(p) => format!("ok {} {}", p.asset, p.amount),
            Err(e) => {
                assert!(!e.message.is_empty());
                e.code.to_string()
            }
        }
    }
}

#[test]
fn admits_a_limit_buy_with_a_hold_of_price_times_quantity() {
    let plan = Scene::new().admit(&order("o", "u", Side::Buy, Some("10.50"), "3")).unwrap();
    assert_eq!((plan.asset.as_str(), plan.amount, plan.limit, plan.budget), ("USD", d("31.5"), Some(d("10.50")), None));
}

#[test]
fn admits_a_sell_with_a_hold_of_its_quantity_of_the_base_asset() {
    let mut req = order("o", "u", Side::Sell, Some("10"), "3");
    req.instrument = instrument("BTC-USD");
    let plan = Scene::new().admit(&req).unwrap();
    assert_eq!((plan.asset.as_str(), plan.amount), ("BTC", d("3")));
}

#[test]
fn a_market_buy_holds_all_available_usd_as_its_budget() {
    let mut s = Scene::new();
    s.quote = d("123.45");
    let plan = s.admit(&order("o", "u", Side::Buy, None, "3")).unwrap();
    assert_eq!((plan.amount, plan.budget), (d("123.45"), Some(d("123.45"))));
    s.quote = Decimal::ZERO;
    assert_eq!(s.code(&order("o", "u", Side::Buy, None, "3")), "insufficient_funds");
}

#[test]
fn user_disabled() {
    let mut req = order("o", "u", Side::Buy, Some("10"), "1");
    req.user_active = false;
    assert_eq!(Scene::new().code(&req), "user_disabled");
}

#[test]
fn trading_halted_globally_or_in_the_symbol() {
    let req = order("o", "u", Side::Buy, Some("10"), "1");
    let mut s = Scene::new();
    s.halted = true;
    assert_eq!(s.code(&req), "trading_halted");
    let mut s = Scene::new();
    s.symbol_halted = true;
    assert_eq!(s.code(&req), "trading_halted");
}

#[test]
fn invalid_tick() {
    let mut s = Scene::new();
    for p in ["10.005", "0", "-1", "0.001"] {
        assert_eq!(s.code(&order("o", "u", Side::Buy, Some(p), "1")), "invalid_tick", "price {p}");
    }
    assert!(checks::check_tick(d("100.05"), d("0.05")).is_ok());
    assert_eq!(checks::check_tick(d("100.03"), d("0.05")).unwrap_err().code, "invalid_tick");
    let e = checks::check_tick(d("100.03"), d("0.05")).unwrap_err();
    assert_eq!(e.message, "price 100.03 is not a multiple of the tick 0.05 (nearest on it: 100 or 100.05)");
    assert_eq!(e.status, 422);
    // The price below is 0, which no order may have: only the one above is named.
    let e = checks::check_tick(d("0.001"), d("0.01")).unwrap_err();
    assert_eq!(e.message, "price 0.001 is not a multiple of the tick 0.01 (the smallest on it is 0.01)");
}

#[test]
fn invalid_lot() {
    let mut s = Scene::new();
    for q in ["1.5", "0", "-2"] {
        assert_eq!(s.code(&order("o", "u", Side::Buy, Some("10"), q)), "invalid_lot", "quantity {q}");
    }
    assert_eq!(checks::check_lot(d("15"), d("10"), d("10")).unwrap_err().code, "invalid_lot");
    assert!(checks::check_lot(d("20"), d("10"), d("10")).is_ok());
    let e = checks::check_lot(d("1.25"), d("0.5"), d("0.5")).unwrap_err();
    assert_eq!(e.message, "quantity 1.25 is not a multiple of the lot 0.5 (nearest on it: 1 or 1.5)");
    let e = checks::check_lot(d("0.0001"), d("0.001"), d("0.001")).unwrap_err();
    assert_eq!(e.message, "quantity 0.0001 is not a multiple of the lot 0.001 (the smallest on it is 0.001)");
    // Below the minimum although on the lot.
    let e = checks::check_lot(d("5"), d("5"), d("10")).unwrap_err();
    assert!(e.message.contains("minimum 10"), "{}", e.message);
}

#[test]
fn max_order_quantity_of_the_user_and_of_the_instrument() {
    let mut s = Scene::new();
    s.limits.max_order_quantity = d("5");
    let e = s.admit(&order("o", "u", Side::Buy, Some("1"), "6")).unwrap_err();
    assert_eq!(e.code, "max_order_quantity");
    assert!(e.message.contains("by 1"), "{}", e.message);
    assert!(s.admit(&order("o", "u", Side::Buy, Some("1"), "5")).is_ok());
    let mut s = Scene::new();
    assert_eq!(s.code(&order("o", "u", Side::Buy, Some("1"), "100001")), "max_order_quantity");
}

#[test]
fn max_order_notional_for_limits_and_for_markets_once_there_is_a_last_price() {
    let mut s = Scene::new();
    s.limits.max_order_notional = d("100");
    let e = s.admit(&order("o", "u", Side::Buy, Some("10.01"), "10")).unwrap_err();
    assert_eq!(e.code, "max_order_notional");
    assert!(e.message.contains("by 0.1"), "{}", e.message);
    assert!(s.admit(&order("o", "u", Side::Buy, Some("10"), "10")).is_ok());
    // A market order is estimated at the last price, and not checked before one exists.
    assert!(s.admit(&order("o", "u", Side::Sell, None, "11")).is_ok());
    s.last_price = Some(d("10"));
    assert_eq!(s.code(&order("o", "u", Side::Sell, None, "11")), "max_order_notional");
    assert_eq!(s.code(&order("o", "u", Side::Buy, None, "11")), "max_order_notional");
}

#[test]
fn max_open_orders() {
    let mut s = Scene::new();
    s.limits.max_open_orders = 3;
    s.open_orders = 2;
    assert!(s.admit(&order("o", "u", Side::Buy, Some("1"), "1")).is_ok());
    s.open_orders = 3;
    let e = s.admit(&order("o", "u", Side::Buy, Some("1"), "1")).unwrap_err();
    assert_eq!((e.code.as_ref(), e.status), ("max_open_orders", 422));
    assert!(e.message.contains('3'), "{}", e.message);
}

#[test]
fn rate_limited_within_a_sliding_second() {
    let mut w = RateWindow::default();
    let t0 = Instant::now();
    for i in 0..3 {
        w.admit(t0 + Duration::from_millis(i * 100), 3).unwrap();
    }
    let e = w.admit(t0 + Duration::from_millis(500), 3).unwrap_err();
    assert_eq!(e.code, "rate_limited");
    // The first placement leaves the window one second after it.
    w.admit(t0 + Duration::from_millis(1000), 3).unwrap();
    assert!(w.admit(t0 + Duration::from_millis(1050), 3).is_err());
    assert!(w.is_idle(t0 + Duration::from_secs(3)));

    let mut s = Scene::new();
    s.limits.max_orders_per_second = 2;
    let req = order("o", "u", Side::Buy, Some("1"), "1");
    assert!(s.admit(&req).is_ok());
    assert!(s.admit(&req).is_ok());
    assert_eq!(s.code(&req), "rate_limited");
}

#[test]
fn price_band_applies_only_once_the_symbol_has_a_last_price() {
    let mut s = Scene::new();
    assert!(s.admit(&order("o", "u", Side::Buy, Some("500"), "1")).is_ok());
    s.last_price = Some(d("100"));
    assert!(s.admit(&order("o", "u", Side::Buy, Some("110"), "1")).is_ok());
    assert!(s.admit(&order("o", "u", Side::Sell, Some("90"), "1")).is_ok());
    let e = s.admit(&order("o", "u", Side::Buy, Some("110.01"), "1")).unwrap_err();
    assert_eq!(e.code, "price_band");
    assert!(e.message.contains("90 to 110"), "{}", e.message);
    assert_eq!(s.code(&order("o", "u", Side::Sell, Some("89.99"), "1")), "price_band");
    // Market orders have no price to band.
    assert!(s.admit(&order("o", "u", Side::Buy, None, "1")).is_ok());
}

/// The band a refusal names is the prices one could send: its ends rounded inward to the
/// tick, not the exact percentages of the last price.
#[test]
fn price_band_refusal_names_the_prices_on_the_tick() {
    let mut s = Scene::new();
    s.last_price = Some(d("189.99"));
    let e = s.admit(&order("o", "u", Side::Buy, Some("250"), "1")).unwrap_err();
    assert!(e.message.ends_with("price_band_pct = 10 allows 171 to 208.98"), "{}", e.message);
    assert!(s.admit(&order("o", "u", Side::Buy, Some("171"), "1")).is_ok(), "the lower end named is allowed");
    assert!(s.admit(&order("o", "u", Side::Buy, Some("208.98"), "1")).is_ok(), "the upper end named is allowed");
    assert_eq!(s.code(&order("o", "u", Side::Buy, Some("170.99"), "1")), "price_band");
    assert_eq!(s.code(&order("o", "u", Side::Buy, Some("208.99"), "1")), "price_band");
    // A band wider than the price itself starts at one tick.
    s.limits.price_band_pct = d("200");
    let e = s.admit(&order("o", "u", Side::Buy, Some("600"), "1")).unwrap_err();
    assert!(e.message.ends_with("allows 0.01 to 569.97"), "{}", e.message);
    let e = checks::check_band(d("0.5"), d("0.333"), d("0.1"), d("0.01"), "X").unwrap_err();
    assert!(e.message.ends_with("allows 0.332667 to 0.333333, which holds no price on the tick 0.01"), "{}", e.message);
}

#[test]
fn insufficient_funds_says_by_how_much() {
    let mut s = Scene::new();
    s.quote = d("100");
    let e = s.admit(&order("o", "u", Side::Buy, Some("100"), "10")).unwrap_err();
    assert_eq!((e.code.as_ref(), e.status), ("insufficient_funds", 422));
    assert!(e.message.contains("1000") && e.message.contains("short by 900"), "{}", e.message);
    assert!(s.admit(&order("o", "u", Side::Buy, Some("10"), "10")).is_ok());
    // Amounts in the message as a person writes them, without the scale arithmetic left.
    s.quote = d("99809.00000");
    let e = s.admit(&order("o", "u", Side::Buy, Some("99809.010"), "1.000")).unwrap_err();
    assert!(e.message.contains("needs 99809.01 USD, but only 99809 is available (short by 0.01)"), "{}", e.message);
}

#[test]
fn insufficient_position_unless_short_selling_is_allowed() {
    let mut s = Scene::new();
    s.base = d("2");
    let e = s.admit(&order("o", "u", Side::Sell, Some("10"), "3")).unwrap_err();
    assert_eq!((e.code.as_ref(), e.status), ("insufficient_position", 422));
    assert!(e.message.contains("short by 1"), "{}", e.message);
    s.limits.allow_short = true;
    let plan = s.admit(&order("o", "u", Side::Sell, Some("10"), "3")).unwrap();
    assert_eq!(plan.amount, d("2"), "a short sale holds what there is");
}

#[test]
fn checks_run_in_the_contract_order() {
    // Everything wrong at once: the first check in the list wins.
    let mut s = Scene::new();
    s.halted = true;
    s.quote = Decimal::ZERO;
    s.open_orders = 1000;
    let mut req = order("o", "u", Side::Buy, Some("10.001"), "1.5");
    req.user_active = false;
    assert_eq!(s.code(&req), "user_disabled");
    req.user_active = true;
    assert_eq!(s.code(&req), "trading_halted");
    s.halted = false;
    assert_eq!(s.code(&req), "invalid_tick");
    req.price = Some(d("10"));
    assert_eq!(s.code(&req), "invalid_lot");
    req.quantity = d("2000000");
    assert_eq!(s.code(&req), "max_order_quantity");
    req.quantity = d("99999");
    req.price = Some(d("1000"));
    assert_eq!(s.code(&req), "max_order_notional");
    req.price = Some(d("10"));
    assert_eq!(s.code(&req), "max_open_orders");
    s.open_orders = 0;
    s.limits.max_orders_per_second = 1;
    s.rate.admit(Instant::now(), 1).unwrap();
    assert_eq!(s.code(&req), "rate_limited");
    s.rate = RateWindow::default();
    s.last_price = Some(d("1"));
    assert_eq!(s.code(&req), "price_band");
    s.last_price = None;
    s.rate = RateWindow::default();
    assert_eq!(s.code(&req), "insufficient_funds");
}

#[test]
fn limits_are_validated_like_the_config() {
    for bad in [
        RiskLimits { max_open_orders: Some(0), ..Default::default() },
        RiskLimits { max_orders_per_second: Some(0), ..Default::default() },
        RiskLimits { max_order_quantity: Some(d("0")), ..Default::default() },
        RiskLimits { max_order_notional: Some(d("-1")), ..Default::default() },
        RiskLimits { price_band_pct: Some(d("1000.1")), ..Default::default() },
    ] {
        assert_eq!(checks::validate_limits(&bad).unwrap_err().code, "invalid_limit", "{bad:?}");
    }
    assert!(checks::validate_limits(&RiskLimits { max_open_orders: Some(1), allow_short: Some(true), ..Default::default() }).is_ok());
}

#[test]
fn asset_and_amount_validation() {
    for ok in ["USD", "AAPL", "BTC", "BRK.B", "X-1"] {
        assert!(checks::validate_asset(ok).is_ok(), "{ok}");
    }
    for bad in ["", "usd", "A B", "A'; DROP", "🚀", &"A".repeat(33)] {
        assert_eq!(checks::validate_asset(bad).unwrap_err().code, "invalid_asset", "{bad:?}");
    }
    assert_eq!(checks::validate_amount(d("0")).unwrap_err().code, "invalid_amount");
    assert_eq!(checks::validate_amount(d("-5")).unwrap_err().status, 400);
    assert!(checks::validate_amount(d("0.0000000000000000000000000001")).is_ok());
}

// ---------------------------------------------------------------- the service and its store

/// A risk service on a temporary store, driven one committed command at a time.
struct Fixture {
    _dir: tempfile::TempDir,
    conn: Connection,
    settings: SharedSettings,
    /// The market's instruments as risk sees them (none listed unless a test lists some).
    instruments: crate::services::market::Listed,
    risk: Risk,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(Settings::defaults())
    }
    fn with(settings: Settings) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(&dir.path().join("risk.db"), Durability::Normal, MIGRATIONS).unwrap();
        let settings = SharedSettings::new(settings);
        let instruments = crate::services::market::Listed::default();
        let risk = Risk::open(&conn, settings.clone(), instruments.clone()).unwrap();
        Fixture { _dir: dir, conn, settings, instruments, risk }
    }
    /// Runs one command in its own committed transaction.
    fn run<T>(&mut self, f: impl FnOnce(&mut Risk, &Connection, &mut AfterCommit) -> Outcome<T>) -> Result<T, ApiError> {
        let tx = self.conn.transaction().unwrap();
        let mut after = AfterCommit::new("risk");
        let out = f(&mut self.risk, &tx, &mut after).expect("the service must not fail");
        crate::services::actor::Service::before_commit(&mut self.risk, &tx).unwrap();
        tx.commit().unwrap();
        out
    }
    fn deposit(&mut self, user: &str, asset: &str, amount: &str) -> Result<crate::api::Account, ApiError> {
        let a = d(amount);
        self.run(|r, _, after| r.deposit(after, user, asset, a, 0))
    }
    fn withdraw(&mut self, user: &str, asset: &str, amount: &str) -> Result<crate::api::Account, ApiError> {
        let a = d(amount);
        self.run(|r, _, after| r.withdraw(after, user, asset, a))
    }
    fn reserve(&mut self, req: &ReserveRequest) -> Result<Reserved, ApiError> {
        self.run(|r, tx, _| r.reserve(tx, req))
    }
    fn settle(&mut self, req: &SettleRequest) -> Result<(), ApiError> {
        self.run(|r, tx, _| r.settle(tx, req))
    }
    fn release(&mut self, ids: &[&str]) {
        let req = SettleRequest { trades: vec![], release: ids.iter().map(|s| s.to_string()).collect() };
        self.settle(&req).unwrap();
    }
    fn amend(&mut self, id: &str, price: &str, remaining: &str) -> Result<(), ApiError> {
        let (p, q) = (d(price), d(remaining));
        self.run(|r, _, _| r.amend(id, p, q, 0))
    }
    fn bal(&self, user: &str, asset: &str) -> (Decimal, Decimal, Decimal) {
        let b: Bal = self.risk.ledger().balance(user, asset);
        (b.total, b.held, b.available())
    }
    /// Everything the service knows, for comparing before and after a reload.
    fn snapshot(&self) -> impl PartialEq + std::fmt::Debug {
        (
            self.risk.ledger().all_balances(),
            self.risk.holds(),
            self.risk.ledger().all_positions(),
            self.risk.trading_state(),
            self.risk.limits(Some("u1")),
        )
    }
    fn reload(&mut self) {
        self.risk = Risk::open(&self.conn, self.settings.clone(), self.instruments.clone()).unwrap();
    }
}

fn trade(id: &str, price: &str, qty: &str, buy: (&str, &str), sell: (&str, &str)) -> SettleTrade {
    SettleTrade {
        trade_id: id.into(),
        symbol: "AAPL".into(),
        base_asset: "AAPL".into(),
        price: d(price),
        quantity: d(qty),
        buy_order_id: buy.0.into(),
        buy_user_id: buy.1.into(),
        sell_order_id: sell.0.into(),
        sell_user_id: sell.1.into(),
    }
}

#[test]
fn an_assets_supply_is_capped_across_accounts_and_rebuilt_on_load() {
    let mut f = Fixture::new();
    let cap = crate::services::risk::accounts::MAX_SUPPLY;
    assert_eq!(cap.to_string(), format!("1{}", "0".repeat(27)));
    f.deposit("u1", "AAPL", &(cap - Decimal::ONE).to_string()).unwrap();
    f.deposit("u2", "AAPL", "1").unwrap();
    f.deposit("u2", "USD", &cap.to_string()).unwrap();
    let e = f.deposit("u1", "AAPL", "1").unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (422, "max_supply"), "{}", e.message);
    f.withdraw("u2", "AAPL", "1").unwrap();
    f.reload();
    f.deposit("u1", "AAPL", "1").unwrap();
    assert_eq!(f.deposit("u2", "AAPL", "1").unwrap_err().code, "max_supply", "the supply was rebuilt from the balances");
}

/// Short selling on, with limits that let one order move up to 10^28.
fn short_seller() -> Fixture {
    let mut settings = Settings::defaults();
    settings.risk.allow_short = true;
    settings.risk.max_order_quantity = Decimal::from_str(&"9".repeat(28)).unwrap();
    settings.risk.max_order_notional = settings.risk.max_order_quantity;
    settings.risk.price_band_pct = Decimal::from(1000);
    Fixture::with(settings)
}

/// An order at 1 USD in `symbol` on a tick of 1 and a lot of `lot`.
fn at_one(id: &str, user: &str, side: Side, symbol: &str, lot: &str, qty: &str) -> ReserveRequest {
    ReserveRequest { instrument: tick_one(symbol, lot), ..order(id, user, side, Some("1"), qty) }
}

/// `symbol` on a tick of 1 and a lot of `lot`, up to 28 nines.
fn tick_one(symbol: &str, lot: &str) -> Instrument {
    Instrument { tick: d("1"), lot: d(lot), min_quantity: d(lot), max_quantity: d(&"9".repeat(28)), ..instrument(symbol) }
}

/// With short selling, long balances hold more than the supply: what the accounts below
/// zero owe. The supply room alone let 10^25 bought against a short sale take 0.001 more
/// on a finer lot, which needs 29 digits: the buyer's balance stayed as it was and the
/// seller's 0.001 was gone (and ever larger shorts overflowed a decimal, so that a trade
/// failed to settle). The room now counts what shorts owe and what open short sales may
/// still sell, and refuses with `max_supply` instead.
#[test]
fn short_sales_count_in_the_supply_room_so_long_balances_settle_exactly() {
    let mut f = short_seller();
    let e25 = format!("1{}", "0".repeat(25));
    f.deposit("fine", "AAPL", "1").unwrap();
    f.deposit("long", "USD", &e25).unwrap();
    // 10^25 sold short on a lot of 1 (0 places): room for it, the supply being 1.
    f.reserve(&at_one("s1", "short", Side::Sell, "AAPL", "1", &e25)).unwrap();
    f.reserve(&at_one("b1", "long", Side::Buy, "AAPL", "1", &e25)).unwrap();
    let t = SettleTrade { price: d("1"), quantity: d(&e25), ..trade("t1", "1", "1", ("b1", "long"), ("s1", "short")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s1".into(), "b1".into()] }).unwrap();
    assert_eq!((f.bal("long", "AAPL").0, f.bal("short", "AAPL").0), (d(&e25), -d(&e25)));
    // The buyer has a little for the fine lot. (The seller's proceeds stay: an account
    // that owes withdraws nothing.)
    f.deposit("long", "USD", "1").unwrap();
    // On a lot of 0.001, 10^25 + 1 needs 29 digits: neither side may trade it, nor add to it.
    for (id, side) in [("s2", Side::Sell), ("b2", Side::Buy)] {
        let user = if side == Side::Sell { "fine" } else { "long" };
        let e = f.reserve(&at_one(id, user, side, "AAPL-USD", "0.001", "0.001")).unwrap_err();
        assert_eq!((e.status, e.code.as_ref()), (422, "max_supply"), "{}", e.message);
        assert!(e.message.contains("short sales") && e.message.contains("3 decimal places"), "{}", e.message);
    }
    let e = f.run(|r, _, after| r.deposit(after, "fine", "AAPL", d("0.001"), 3)).unwrap_err();
    assert_eq!(e.code, "max_supply", "{}", e.message);
    f.reload();
    assert_eq!(f.reserve(&at_one("s3", "fine", Side::Sell, "AAPL-USD", "0.001", "0.001")).unwrap_err().code, "max_supply", "rebuilt");
    // Open short sales count before they trade: two that together pass 10^28 cannot both rest.
    let six = format!("6{}", "0".repeat(27));
    f.reserve(&at_one("s4", "short", Side::Sell, "AAPL", "1", &six)).unwrap();
    let e = f.reserve(&at_one("s5", "other", Side::Sell, "AAPL", "1", &six)).unwrap_err();
    assert_eq!(e.code, "max_supply", "{}", e.message);
    f.reload();
    assert_eq!(f.reserve(&at_one("s6", "other", Side::Sell, "AAPL", "1", &six)).unwrap_err().code, "max_supply", "rebuilt");
    // Nor can one grow into it by an amend; shrinking is always allowed.
    assert_eq!(f.run(|r, _, _| r.amend("s4", d("1"), d(&format!("9999{}", "0".repeat(24))), 0)).unwrap_err().code, "max_supply");
    f.amend("s4", "1", "5").unwrap();
    f.reserve(&at_one("s7", "other", Side::Sell, "AAPL", "1", &six)).unwrap();
    f.release(&["s4", "s7"]);
    // Buying the short back (with its proceeds) frees the room again, and the fine lot
    // trades exactly.
    f.reserve(&at_one("s8", "long", Side::Sell, "AAPL", "1", &e25)).unwrap();
    f.reserve(&at_one("b8", "short", Side::Buy, "AAPL", "1", &e25)).unwrap();
    let t = SettleTrade { price: d("1"), quantity: d(&e25), ..trade("t8", "1", "1", ("b8", "short"), ("s8", "long")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s8".into(), "b8".into()] }).unwrap();
    f.withdraw("long", "USD", &e25).unwrap();
    f.reserve(&at_one("s9", "fine", Side::Sell, "AAPL-USD", "0.001", "0.001")).unwrap();
    f.reserve(&at_one("b9", "long", Side::Buy, "AAPL-USD", "0.001", "0.001")).unwrap();
    let t = SettleTrade { symbol: "AAPL-USD".into(), ..trade("t9", "1", "0.001", ("b9", "long"), ("s9", "fine")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s9".into(), "b9".into()] }).unwrap();
    assert_eq!((f.bal("long", "AAPL").0, f.bal("fine", "AAPL").0, f.bal("short", "AAPL").0), (d("0.001"), d("0.999"), d("0")));
}

/// Open short sales on two lots of one asset: 0.001 resting on a lot of 0.001 and 1 on
/// a lot of 1 left room, by the balances' places and the coarse lot's, for 10^26 more on
/// the lot of 1. The open short sales then summed to 10^26 + 1.001, which needs 30
/// digits: the total rounded to 10^26 + 1.00, and once the large sale ended, the room
/// counted 1.00 where 1.001 was still open (found by `short_sales_never_round_or_overflow_a_balance`).
/// The sale is refused with `max_supply` instead, and the total stays exact.
#[test]
fn open_short_sales_on_a_finer_lot_keep_their_places_in_the_room() {
    let mut f = short_seller();
    f.reserve(&at_one("s1", "short", Side::Sell, "AAPL", "1", "1")).unwrap();
    f.reserve(&at_one("s2", "short", Side::Sell, "AAPL-USD", "0.001", "0.001")).unwrap();
    let e26 = format!("1{}", "0".repeat(26));
    let e = f.reserve(&at_one("s3", "short", Side::Sell, "AAPL", "1", &e26)).unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (422, "max_supply"), "{}", e.message);
    assert!(e.message.contains("3 decimal places"), "{}", e.message);
    assert_eq!(f.risk.ledger().exposure("AAPL").1, d("1.001"));
    // What fits at those places still rests.
    let e24 = format!("1{}", "0".repeat(24));
    f.reserve(&at_one("s4", "short", Side::Sell, "AAPL", "1", &e24)).unwrap();
    f.release(&["s4"]);
    assert_eq!(f.risk.ledger().exposure("AAPL").1, d("1.001"));
    f.reload();
    assert_eq!(f.risk.ledger().exposure("AAPL").1, d("1.001"), "rebuilt");
}

/// Open orders on a lot of 0.001 (a buy and a short sale of AAPL-USD), then 8 × 10^25
/// sold short on AAPL's lot of 1: checked at its own lot's places, the bound fitted, and
/// the fine orders' fill of 0.001 then took the open short sales' total to 8 × 10^25 +
/// 0.009, which a decimal cannot hold: it rounded to 0.01 (found by
/// `short_sales_never_round_or_overflow_a_balance`). A reserve now checks the room at the
/// finest lot any listed instrument trades the asset on, as a deposit does.
#[test]
fn a_short_sale_on_a_coarse_lot_leaves_room_for_the_fills_of_a_finer_one() {
    let mut f = short_seller();
    f.deposit("long", "USD", "1").unwrap();
    f.reserve(&at_one("b1", "long", Side::Buy, "AAPL-USD", "0.001", "0.001")).unwrap();
    // Listed after risk worked out the grids of nothing listed: it sees the new listing.
    f.instruments.loaded_with(vec![tick_one("AAPL", "1"), tick_one("AAPL-USD", "0.001")]);
    f.reserve(&at_one("s1", "short", Side::Sell, "AAPL-USD", "0.001", "0.01")).unwrap();
    let big = format!("8{}", "0".repeat(25));
    let e = f.reserve(&at_one("s2", "short", Side::Sell, "AAPL", "1", &big)).unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (422, "max_supply"), "{}", e.message);
    assert!(e.message.contains("3 decimal places"), "{}", e.message);
    // What fits at 3 places still rests on the coarse lot, and the fine fill settles exactly.
    let fits = format!("8{}", "0".repeat(23));
    f.reserve(&at_one("s3", "short", Side::Sell, "AAPL", "1", &fits)).unwrap();
    // Nor can it grow past the room by an amend on its own lot.
    assert_eq!(f.run(|r, _, _| r.amend("s3", d("1"), d(&big), 0)).unwrap_err().code, "max_supply");
    let t = SettleTrade { symbol: "AAPL-USD".into(), ..trade("t1", "1", "0.001", ("b1", "long"), ("s1", "short")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec!["b1".into()] }).unwrap();
    assert_eq!(f.risk.ledger().exposure("AAPL").1, d(&fits) + d("0.01"), "owed 0.001, open 0.009 and the coarse sale");
    // It is the listing that counts: unlisted (no placement has an instrument before the
    // market has loaded), the order's own lot and the open sales' places are all the check
    // knows, and the same sale rests.
    let mut g = short_seller();
    g.reserve(&at_one("s1", "short", Side::Sell, "AAPL-USD", "0.001", "0.01")).unwrap();
    g.reserve(&at_one("s2", "short", Side::Sell, "AAPL", "1", &big)).unwrap();
}

/// A short sale that trades before the same account's covered sell sells units that sell
/// holds: the account then held 10 of the 5 it had (logged as an error at every such
/// trade), and the covered sell's 5 to be sold short were counted nowhere in the room.
/// What it holds beyond the balance becomes its short part instead.
#[test]
fn a_short_sale_that_trades_first_turns_what_an_earlier_sell_held_into_its_short_part() {
    let mut f = short_seller();
    f.deposit("s", "AAPL", "10").unwrap();
    f.deposit("b", "USD", "100").unwrap();
    // What short sales owe and may still sell short.
    let open_short = |f: &Fixture| f.risk.ledger().exposure("AAPL").1;
    let hold = |f: &Fixture, id: &str| f.risk.ledger().hold(id).map(|h| (h.amount, h.short));
    f.reserve(&at_one("s1-covered", "s", Side::Sell, "AAPL", "1", "10")).unwrap();
    f.reserve(&at_one("s2-short", "s", Side::Sell, "AAPL", "1", "5")).unwrap();
    assert_eq!((hold(&f, "s1-covered"), hold(&f, "s2-short")), (Some((d("10"), d("0"))), Some((d("0"), d("5")))));
    assert_eq!(open_short(&f), d("5"));
    f.reserve(&at_one("b1", "b", Side::Buy, "AAPL", "1", "5")).unwrap();
    let t = trade("t1", "1", "5", ("b1", "b"), ("s2-short", "s"));
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s2-short".into(), "b1".into()] }).unwrap();
    assert_eq!(f.bal("s", "AAPL"), (d("5"), d("5"), d("0")), "it holds what it has, no more");
    assert_eq!(hold(&f, "s1-covered"), Some((d("5"), d("5"))), "the rest of the covered sell is sold short");
    assert_eq!(open_short(&f), d("5"), "and still counted in the room");
    f.reload();
    assert_eq!((f.bal("s", "AAPL"), hold(&f, "s1-covered"), open_short(&f)), ((d("5"), d("5"), d("0")), Some((d("5"), d("5"))), d("5")));
    // The covered sell trades whole: the account owes 5, holds nothing, and nothing is open.
    f.reserve(&at_one("b2", "b", Side::Buy, "AAPL", "1", "10")).unwrap();
    let t = trade("t2", "1", "10", ("b2", "b"), ("s1-covered", "s"));
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s1-covered".into(), "b2".into()] }).unwrap();
    assert_eq!(f.bal("s", "AAPL"), (d("-5"), d("0"), d("-5")));
    assert_eq!((f.bal("b", "AAPL").0, f.bal("s", "USD").0 + f.bal("b", "USD").0), (d("15"), d("100")));
    assert_eq!(open_short(&f), d("5"), "owed now, no longer open");
}

/// An older agt stored no short part (`holds.short` NULL, read as 0): its open short
/// sales counted nothing in the supply room. The migration lists them; given what remains
/// of each order, risk sets the part (`remaining - amount`: a sell holds what there was
/// and sells the rest short), stores it, and empties the list.
#[test]
fn a_short_part_stored_as_null_is_restored_from_what_remains_of_the_order() {
    let mut f = short_seller();
    let six = format!("6{}", "0".repeat(27));
    f.deposit("short", "AAPL", "1").unwrap();
    f.reserve(&at_one("s4", "short", Side::Sell, "AAPL", "1", &six)).unwrap();
    let open_short = |f: &Fixture| f.risk.ledger().exposure("AAPL").1;
    assert_eq!(open_short(&f), d(&six) - Decimal::ONE);
    f.conn.execute("UPDATE holds SET short = NULL", []).unwrap();
    f.conn.execute("INSERT INTO shorts_unknown SELECT order_id FROM holds WHERE open = 1 AND side = 'sell'", []).unwrap();
    f.reload();
    assert_eq!(open_short(&f), Decimal::ZERO, "what an older agt's row reads as");
    assert_eq!(Risk::unknown_shorts(&f.conn).unwrap(), vec!["s4".to_string()]);
    let remaining = vec![("s4".to_string(), d(&six)), ("gone".to_string(), d("5"))];
    assert_eq!(f.run(|r, tx, _| r.restore_shorts(tx, &remaining).map(Ok)).unwrap(), 1);
    assert_eq!(open_short(&f), d(&six) - Decimal::ONE);
    assert_eq!(Risk::unknown_shorts(&f.conn).unwrap(), Vec::<String>::new(), "once");
    f.reload();
    assert_eq!(open_short(&f), d(&six) - Decimal::ONE, "stored");
    let e = f.reserve(&at_one("s5", "other", Side::Sell, "AAPL", "1", &six)).unwrap_err();
    assert_eq!(e.code, "max_supply", "{}", e.message);
    // A hold that knows its part keeps it; a buy has none.
    assert_eq!(f.run(|r, tx, _| r.restore_shorts(tx, &[("s4".into(), Decimal::ONE)]).map(Ok)).unwrap(), 0);
    assert_eq!(open_short(&f), d(&six) - Decimal::ONE);
}

#[test]
fn deposits_and_withdrawals_move_balances_exactly() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "1000.50").unwrap();
    f.deposit("u1", "USD", "250").unwrap();
    let a = f.deposit("u1", "AAPL", "7").unwrap();
    assert_eq!(a.balances.iter().map(|b| b.asset.as_str()).collect::<Vec<_>>(), ["AAPL", "USD"], "sorted by asset");
    assert_eq!(f.bal("u1", "USD"), (d("1250.5"), d("0"), d("1250.5")));
    let a = f.withdraw("u1", "USD", "200.25").unwrap();
    assert_eq!(a.balances[1].total, d("1050.25"));
    let e = f.withdraw("u1", "USD", "5000").unwrap_err();
    assert_eq!((e.code.as_ref(), e.status), ("insufficient_funds", 422));
    assert_eq!(f.deposit("u1", "USD", "0").unwrap_err().code, "invalid_amount");
    assert_eq!(f.deposit("u1", "USD", "-5").unwrap_err().code, "invalid_amount");
    assert_eq!(f.deposit("u1", "", "5").unwrap_err().code, "invalid_asset");
    assert_eq!(f.deposit("u1", "usd", "5").unwrap_err().code, "invalid_asset");
    assert_eq!(f.withdraw("u1", "NOPE", "1").unwrap_err().code, "insufficient_funds");
    assert_eq!(f.bal("u1", "USD"), (d("1050.25"), d("0"), d("1050.25")));
    let big = Decimal::MAX.to_string();
    assert_eq!(f.deposit("u1", "USD", &big).unwrap_err().code, "invalid_amount", "overflow is refused");
    assert_eq!(f.risk.account("nobody").balances, vec![]);
}

#[test]
fn cannot_withdraw_what_orders_hold() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "100").unwrap();
    f.reserve(&order("o1", "u1", Side::Buy, Some("10"), "6")).unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("100"), d("60"), d("40")));
    assert_eq!(f.withdraw("u1", "USD", "40.01").unwrap_err().code, "insufficient_funds");
    f.withdraw("u1", "USD", "40").unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("60"), d("60"), d("0")));
}

/// `seller` sells `qty` AAPL at 100 to `buyer` through the checks, as the lane would:
/// reserved, settled, released.
fn sell_at_100(f: &mut Fixture, id: &str, seller: &str, buyer: &str, qty: &str) {
    f.reserve(&order(&format!("s{id}"), seller, Side::Sell, Some("100"), qty)).unwrap();
    f.reserve(&order(&format!("b{id}"), buyer, Side::Buy, Some("100"), qty)).unwrap();
    let t = trade(&format!("t{id}"), "100", qty, (&format!("b{id}"), buyer), (&format!("s{id}"), seller));
    f.settle(&SettleRequest { trades: vec![t], release: vec![format!("s{id}"), format!("b{id}")] }).unwrap();
}

/// A short seller with 50 USD and 5 MSFT of its own who sold 3 AAPL holding 1: it owes
/// 2 AAPL and holds 350 USD, 300 of them the short sale's proceeds.
fn sold_short() -> Fixture {
    let mut f = short_seller();
    f.deposit("b", "USD", "10000").unwrap();
    f.deposit("s", "USD", "50").unwrap();
    f.deposit("s", "AAPL", "1").unwrap();
    f.deposit("s", "MSFT", "5").unwrap();
    sell_at_100(&mut f, "1", "s", "b", "3");
    assert_eq!((f.bal("s", "AAPL").0, f.bal("s", "USD").0), (d("-2"), d("350")));
    f
}

/// Tries a withdrawal `s` must be refused because it owes `owes`: 422
/// `insufficient_funds` saying what it owes and how to stop owing, with nothing moved in
/// memory or in the store, and no event.
fn refused_while_owing(f: &mut Fixture, asset: &str, amount: &str, owes: &str) {
    let before = f.snapshot();
    let a = d(amount);
    let tx = f.conn.transaction().unwrap();
    let mut after = AfterCommit::new("risk");
    let e = f.risk.withdraw(&mut after, "s", asset, a).unwrap().unwrap_err();
    assert!(after.event_texts().is_empty(), "a refused withdrawal announced {:?}", after.event_texts());
    crate::services::actor::Service::before_commit(&mut f.risk, &tx).unwrap();
    tx.commit().unwrap();
    assert_eq!((e.status, e.code.as_ref()), (422, "insufficient_funds"), "{}", e.message);
    let want = format!("cannot withdraw {amount} {asset}: the account owes {owes} from short sales: buy ");
    assert!(e.message.starts_with(&want), "{}", e.message);
    assert!(e.message.contains("before withdrawing"), "{}", e.message);
    assert_eq!(before, f.snapshot(), "a refused withdrawal moved something");
    f.reload();
    assert_eq!(before, f.snapshot(), "a refused withdrawal stored something");
}

/// Without margin, a short sale's proceeds are all that stands behind what it owes: an
/// account below zero in any asset may withdraw nothing (the proceeds, what they buy, or
/// an unrelated asset), until it buys the asset back.
#[test]
fn an_account_that_owes_may_withdraw_nothing_until_it_buys_back() {
    let mut f = sold_short();
    refused_while_owing(&mut f, "USD", "300", "2 AAPL");
    refused_while_owing(&mut f, "USD", "0.01", "2 AAPL");
    refused_while_owing(&mut f, "AAPL", "1", "2 AAPL");
    // Trading goes on: the proceeds buy another asset, which cannot leave either.
    f.deposit("m", "MSFT", "10").unwrap();
    let t = SettleTrade { symbol: "MSFT".into(), base_asset: "MSFT".into(), ..trade("m1", "20", "5", ("mb", "s"), ("ms", "m")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec![] }).unwrap();
    assert_eq!((f.bal("s", "MSFT").0, f.bal("s", "USD").0), (d("10"), d("250")));
    refused_while_owing(&mut f, "MSFT", "5", "2 AAPL");
    // Bought back in part, it still owes the rest.
    sell_at_100(&mut f, "2", "b", "s", "1");
    refused_while_owing(&mut f, "USD", "1", "1 AAPL");
    // Bought back whole: withdrawals are as before.
    sell_at_100(&mut f, "3", "b", "s", "1");
    assert_eq!(f.bal("s", "AAPL").0, d("0"));
    assert!(f.risk.ledger().debts("s").is_empty());
    f.withdraw("s", "USD", "50").unwrap();
    f.withdraw("s", "MSFT", "10").unwrap();
    assert_eq!(f.withdraw("s", "USD", "1000").unwrap_err().code, "insufficient_funds", "and only what is available");
    assert_eq!(f.bal("s", "USD"), (d("0"), d("0"), d("0")));
}

/// Depositing what a short sale owes pays it back, and withdrawals go on; a deposit of
/// part of it does not.
#[test]
fn depositing_what_is_owed_lets_an_account_withdraw_again() {
    let mut f = sold_short();
    f.deposit("s", "AAPL", "1.5").unwrap();
    refused_while_owing(&mut f, "USD", "350", "0.5 AAPL");
    f.deposit("s", "AAPL", "0.5").unwrap();
    let a = f.withdraw("s", "USD", "350").unwrap();
    assert_eq!(a.balances.iter().find(|b| b.asset == "USD").map(|b| b.total), Some(d("0")));
    f.withdraw("s", "MSFT", "5").unwrap();
}

/// What an account owes in two assets is said whole, and an asset it never traded is
/// held back too: it is collateral like any other.
#[test]
fn an_account_short_in_one_asset_may_not_withdraw_an_unrelated_one() {
    let mut f = sold_short();
    refused_while_owing(&mut f, "MSFT", "5", "2 AAPL");
    f.deposit("b", "USD", "1000").unwrap();
    let t = SettleTrade { symbol: "BBB-USD".into(), base_asset: "BBB".into(), ..trade("x1", "10", "1.5", ("xb", "b"), ("xs", "s")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec![] }).unwrap();
    refused_while_owing(&mut f, "MSFT", "1", "2 AAPL and 1.5 BBB");
    let e = f.withdraw("s", "USD", "1").unwrap_err();
    assert!(e.message.contains("buy them back or deposit them"), "{}", e.message);
    // Another account, owing nothing, withdraws as before.
    f.withdraw("b", "AAPL", "3").unwrap();
    f.deposit("s", "AAPL", "2").unwrap();
    refused_while_owing(&mut f, "MSFT", "1", "1.5 BBB");
    f.deposit("s", "BBB", "1.5").unwrap();
    f.withdraw("s", "MSFT", "5").unwrap();
}

#[test]
fn a_cross_trade_moves_cash_and_asset_exactly() {
    let mut f = Fixture::new();
    f.deposit("buyer", "USD", "10000").unwrap();
    f.deposit("seller", "AAPL", "10").unwrap();
    f.reserve(&order("s", "seller", Side::Sell, Some("100"), "10")).unwrap();
    assert_eq!(f.bal("seller", "AAPL"), (d("10"), d("10"), d("0")));
    f.reserve(&order("b", "buyer", Side::Buy, Some("101"), "10")).unwrap();
    assert_eq!(f.bal("buyer", "USD"), (d("10000"), d("1010"), d("8990")));
    let t = trade("t1", "100", "10", ("b", "buyer"), ("s", "seller"));
    f.settle(&SettleRequest { trades: vec![t.clone()], release: vec!["b".into(), "s".into()] }).unwrap();
    assert_eq!(f.bal("buyer", "USD"), (d("9000"), d("0"), d("9000")));
    assert_eq!(f.bal("buyer", "AAPL"), (d("10"), d("0"), d("10")));
    assert_eq!(f.bal("seller", "USD"), (d("1000"), d("0"), d("1000")));
    assert_eq!(f.bal("seller", "AAPL"), (d("0"), d("0"), d("0")));
    let acct = f.risk.account("buyer");
    assert_eq!(acct.positions.len(), 1);
    assert_eq!((acct.positions[0].quantity, acct.positions[0].average_price), (d("10"), d("100")));
    assert!(f.risk.account("seller").positions.is_empty(), "a closed position is not listed");
    // Settling the same trade again changes nothing, also after a restart.
    let before = f.snapshot();
    f.settle(&SettleRequest { trades: vec![t.clone()], release: vec!["b".into()] }).unwrap();
    f.reload();
    f.settle(&SettleRequest { trades: vec![t], release: vec!["b".into(), "s".into()] }).unwrap();
    assert_eq!(f.snapshot(), before);
    assert!(f.risk.holds().is_empty());
}

#[test]
fn a_partial_fill_holds_exactly_the_rest_and_release_frees_it() {
    let mut f = Fixture::new();
    f.deposit("buyer", "USD", "1000").unwrap();
    f.deposit("seller", "AAPL", "10").unwrap();
    f.reserve(&order("s", "seller", Side::Sell, Some("50"), "4")).unwrap();
    f.reserve(&order("b", "buyer", Side::Buy, Some("50"), "10")).unwrap();
    let t = trade("t1", "50", "4", ("b", "buyer"), ("s", "seller"));
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s".into()] }).unwrap();
    assert_eq!(f.bal("buyer", "USD"), (d("800"), d("300"), d("500")));
    assert_eq!(f.risk.holds(), vec![Hold { order_id: "b".into(), user_id: "buyer".into(), asset: "USD".into(), amount: d("300") }]);
    f.release(&["b"]);
    f.release(&["b", "never-reserved"]);
    assert_eq!(f.bal("buyer", "USD"), (d("800"), d("0"), d("800")));
    assert_eq!(f.bal("seller", "AAPL"), (d("6"), d("0"), d("6")));
}

#[test]
fn a_limit_buy_filled_below_its_limit_gets_the_difference_back() {
    let mut f = Fixture::new();
    f.deposit("buyer", "USD", "1000").unwrap();
    f.deposit("seller", "AAPL", "10").unwrap();
    f.reserve(&order("b", "buyer", Side::Buy, Some("60"), "10")).unwrap();
    f.reserve(&order("s", "seller", Side::Sell, Some("50"), "4")).unwrap();
    // Amend lowered the price after resting? No: here the maker (buy) sets the price.
    let t = trade("t1", "55", "4", ("b", "buyer"), ("s", "seller"));
    f.settle(&SettleRequest { trades: vec![t], release: vec!["s".into()] }).unwrap();
    // Paid 220; the hold shrank by 4 × 60 = 240; 6 × 60 = 360 still held.
    assert_eq!(f.bal("buyer", "USD"), (d("780"), d("360"), d("420")));
}

#[test]
fn a_position_built_by_many_fills_shows_its_average_rounded_once() {
    let mut f = Fixture::new();
    f.deposit("buyer", "USD", "10000").unwrap();
    f.deposit("seller", "AAPL", "7").unwrap();
    // Seven fills of 1: 704 / 7 = 100.571428571428…, shown as 100.5714285714. Rounded
    // at each fill, the average crept up to …715.
    let prices = ["100", "100", "100", "100", "100", "101", "103"];
    for (i, p) in prices.iter().enumerate() {
        let t = trade(&format!("t{i}"), p, "1", (&format!("b{i}"), "buyer"), (&format!("s{i}"), "seller"));
        f.settle(&SettleRequest { trades: vec![t], release: vec![] }).unwrap();
    }
    let p = &f.risk.account("buyer").positions[0];
    assert_eq!((p.quantity, p.average_price), (d("7"), d("100.5714285714")));
    f.reload();
    assert_eq!(f.risk.account("buyer").positions[0].average_price, d("100.5714285714"), "the same after a reload");
}

#[test]
fn a_market_buy_spends_its_budget_and_the_rest_is_released() {
    let mut f = Fixture::new();
    f.deposit("buyer", "USD", "10000").unwrap();
    f.deposit("s1", "AAPL", "5").unwrap();
    f.deposit("s2", "AAPL", "5").unwrap();
    f.reserve(&order("a1", "s1", Side::Sell, Some("100"), "5")).unwrap();
    f.reserve(&order("a2", "s2", Side::Sell, Some("101"), "5")).unwrap();
    let r = f.reserve(&order("m", "buyer", Side::Buy, None, "10")).unwrap();
    assert_eq!(r, Reserved { budget: Some(d("10000")) });
    assert_eq!(f.reserve(&order("m", "buyer", Side::Buy, None, "10")).unwrap(), r, "same answer again");
    assert_eq!(f.bal("buyer", "USD"), (d("10000"), d("10000"), d("0")));
    let trades = vec![trade("t1", "100", "5", ("m", "buyer"), ("a1", "s1")), trade("t2", "101", "5", ("m", "buyer"), ("a2", "s2"))];
    f.settle(&SettleRequest { trades, release: vec!["a1".into(), "a2".into(), "m".into()] }).unwrap();
    assert_eq!(f.bal("buyer", "USD"), (d("8995"), d("0"), d("8995")));
    assert_eq!(f.bal("s1", "USD").0, d("500"));
    assert_eq!(f.bal("s2", "USD").0, d("505"));
    let p = &f.risk.account("buyer").positions[0];
    assert_eq!((p.quantity, p.average_price), (d("10"), d("100.5")));
    // Reserved and closed: a replay answers the budget it had, and holds nothing.
    f.reload();
    assert_eq!(f.reserve(&order("m", "buyer", Side::Buy, None, "10")).unwrap(), r);
    assert_eq!(f.bal("buyer", "USD"), (d("8995"), d("0"), d("8995")));
}

/// A hold whose stored side no agt writes (a hand edit, a bad restore) stops the load
/// with the value named, instead of being read as a buy and holding the wrong asset.
#[test]
fn a_hold_with_an_unknown_side_is_a_load_error_not_a_buy() {
    let mut f = Fixture::new();
    f.deposit("u1", "AAPL", "10").unwrap();
    f.reserve(&order("o1", "u1", Side::Sell, Some("10"), "5")).unwrap();
    f.reload();
    assert_eq!(f.bal("u1", "AAPL"), (d("10"), d("5"), d("5")));
    f.conn.execute("UPDATE holds SET side = 'sel' WHERE order_id = 'o1'", []).unwrap();
    let err = Risk::open(&f.conn, f.settings.clone(), f.instruments.clone()).err().expect("the load must fail");
    assert!(err.to_string().contains("unknown value \"sel\""), "{err}");
}

#[test]
fn reserve_is_idempotent_across_restarts() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "1000").unwrap();
    let req = order("o1", "u1", Side::Buy, Some("10"), "10");
    f.reserve(&req).unwrap();
    f.reserve(&req).unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("1000"), d("100"), d("900")));
    f.reload();
    f.reserve(&req).unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("1000"), d("100"), d("900")));
    f.release(&["o1"]);
    f.reload();
    f.reserve(&req).unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("1000"), d("0"), d("1000")), "a released order is not held again");
    // A rejected order holds nothing and may be tried again.
    let big = order("o2", "u1", Side::Buy, Some("10"), "101");
    assert_eq!(f.reserve(&big).unwrap_err().code, "insufficient_funds");
    f.deposit("u1", "USD", "10").unwrap();
    f.reserve(&big).unwrap();
}

/// A hold stored open is stored closed when released (a repeated reserve is answered
/// from it); a hold placed and released between two commits — most of the lane's
/// placements — is never written.
#[test]
fn only_holds_a_commit_saw_open_are_kept_once_closed() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "1000").unwrap();
    let stored = |f: &Fixture, id: &str| -> Option<bool> {
        f.conn.query_row("SELECT open FROM holds WHERE order_id = ?1", [id], |r| r.get(0)).optional().unwrap()
    };
    f.reserve(&order("kept", "u1", Side::Buy, Some("10"), "1")).unwrap();
    assert_eq!(stored(&f, "kept"), Some(true));
    f.release(&["kept"]);
    assert_eq!(stored(&f, "kept"), Some(false));

    let req = order("passing", "u1", Side::Buy, Some("10"), "2");
    let release = SettleRequest { trades: vec![], release: vec!["passing".into()] };
    f.run(|r, tx, _| {
        r.reserve_new(&req).unwrap();
        r.settle(tx, &release)
    })
    .unwrap();
    assert_eq!(stored(&f, "passing"), None, "placed and released in one transaction: nothing to keep");
    assert_eq!(f.bal("u1", "USD"), (d("1000"), d("0"), d("1000")));
    f.reload();
    assert_eq!(f.bal("u1", "USD"), (d("1000"), d("0"), d("1000")));
}

#[test]
fn max_open_orders_counts_open_holds_and_follows_the_live_config() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "1000").unwrap();
    let mut s = (*f.settings.get()).clone();
    s.risk.max_open_orders = 3;
    f.settings.replace(s);
    for i in 0..3 {
        f.reserve(&order(&format!("o{i}"), "u1", Side::Buy, Some("10"), "1")).unwrap();
    }
    assert_eq!(f.reserve(&order("o3", "u1", Side::Buy, Some("10"), "1")).unwrap_err().code, "max_open_orders");
    f.release(&["o0"]);
    f.reserve(&order("o3", "u1", Side::Buy, Some("10"), "1")).unwrap();
    // A user's own limit wins over the global one.
    let own = RiskLimits { max_open_orders: Some(5), ..Default::default() };
    let eff = f.run(|r, tx, after| r.set_limits(tx, after, "u1", own, &[])).unwrap();
    assert_eq!((eff.max_open_orders, eff.allow_short), (Some(5), Some(false)));
    f.reserve(&order("o4", "u1", Side::Buy, Some("10"), "1")).unwrap();
    f.reload();
    assert_eq!(f.risk.limits(Some("u1")).max_open_orders, 5);
    assert_eq!(f.risk.limits(None).max_open_orders, 3);
    f.reserve(&order("o5", "u1", Side::Buy, Some("10"), "1")).unwrap();
    assert_eq!(f.reserve(&order("o6", "u1", Side::Buy, Some("10"), "1")).unwrap_err().code, "max_open_orders");
    // Setting another limit keeps the first.
    let more = RiskLimits { price_band_pct: Some(d("5")), ..Default::default() };
    let eff = f.run(|r, tx, after| r.set_limits(tx, after, "u1", more, &[])).unwrap();
    assert_eq!((eff.max_open_orders, eff.price_band_pct), (Some(5), Some(d("5"))));
    let bad = RiskLimits { max_open_orders: Some(0), ..Default::default() };
    assert_eq!(f.run(|r, tx, after| r.set_limits(tx, after, "u1", bad, &[])).unwrap_err().code, "invalid_limit");
}

#[test]
fn halts_are_kept_across_restarts() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "1000").unwrap();
    let s = f.run(|r, tx, after| r.set_halt(tx, after, Some("AAPL".into()), true)).unwrap();
    assert_eq!((s.halted, s.halted_symbols.clone()), (false, vec!["AAPL".to_string()]));
    assert_eq!(f.reserve(&order("o1", "u1", Side::Buy, Some("10"), "1")).unwrap_err().code, "trading_halted");
    f.run(|r, tx, after| r.set_halt(tx, after, None, true)).unwrap();
    f.reload();
    let s = f.risk.trading_state();
    assert!(s.halted && s.halted_symbols == ["AAPL"]);
    f.run(|r, tx, after| r.set_halt(tx, after, None, false)).unwrap();
    assert_eq!(f.reserve(&order("o1", "u1", Side::Buy, Some("10"), "1")).unwrap_err().code, "trading_halted");
    f.run(|r, tx, after| r.set_halt(tx, after, Some("AAPL".into()), false)).unwrap();
    f.reload();
    assert_eq!(f.risk.trading_state(), Default::default());
    f.reserve(&order("o1", "u1", Side::Buy, Some("10"), "1")).unwrap();
    let e = f.run(|r, tx, after| r.set_halt(tx, after, Some("a'; drop".into()), true)).unwrap_err();
    assert_eq!(e.code, "invalid_symbol");
}

#[test]
fn the_price_band_starts_with_the_first_settled_trade() {
    let mut f = Fixture::new();
    f.deposit("b", "USD", "100000").unwrap();
    f.deposit("s", "AAPL", "100").unwrap();
    f.reserve(&order("b1", "b", Side::Buy, Some("500"), "1")).unwrap();
    f.reserve(&order("s1", "s", Side::Sell, Some("100"), "1")).unwrap();
    f.settle(&SettleRequest { trades: vec![trade("t1", "100", "1", ("b1", "b"), ("s1", "s"))], release: vec!["s1".into()] }).unwrap();
    f.reload();
    assert_eq!(f.reserve(&order("b2", "b", Side::Buy, Some("111"), "1")).unwrap_err().code, "price_band");
    f.reserve(&order("b3", "b", Side::Buy, Some("110"), "1")).unwrap();
}

#[test]
fn amend_resizes_the_hold_or_refuses() {
    let mut f = Fixture::new();
    f.deposit("u1", "USD", "100").unwrap();
    f.deposit("u1", "AAPL", "10").unwrap();
    f.reserve(&order("b", "u1", Side::Buy, Some("10"), "5")).unwrap();
    f.reserve(&order("s", "u1", Side::Sell, Some("20"), "5")).unwrap();
    f.amend("b", "9", "10").unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("100"), d("90"), d("10")));
    let e = f.amend("b", "10", "11").unwrap_err();
    assert_eq!((e.code.as_ref(), e.status), ("insufficient_funds", 422));
    assert!(e.message.contains("short by 10"), "{}", e.message);
    assert_eq!(f.bal("u1", "USD"), (d("100"), d("90"), d("10")), "a refused amend changes nothing");
    f.amend("b", "5", "2").unwrap();
    assert_eq!(f.bal("u1", "USD"), (d("100"), d("10"), d("90")));
    f.amend("s", "21", "10").unwrap();
    assert_eq!(f.bal("u1", "AAPL"), (d("10"), d("10"), d("0")));
    assert_eq!(f.amend("s", "21", "11").unwrap_err().code, "insufficient_position");
    f.release(&["b"]);
    assert_eq!(f.amend("b", "5", "2").unwrap_err().status, 409);
    assert_eq!(f.amend("s", "0", "2").unwrap_err().status, 400);
    // Fills after an amend shrink the hold at the new price.
    f.deposit("v", "AAPL", "5").unwrap();
    f.reserve(&order("b2", "u1", Side::Buy, Some("10"), "5")).unwrap();
    f.amend("b2", "12", "5").unwrap();
    f.reserve(&order("vs", "v", Side::Sell, Some("11"), "5")).unwrap();
    f.settle(&SettleRequest { trades: vec![trade("t", "12", "2", ("b2", "u1"), ("vs", "v"))], release: vec![] }).unwrap();
    assert_eq!(f.risk.holds().iter().find(|h| h.order_id == "b2").unwrap().amount, d("36"));
}

#[test]
fn positions_follow_trades_with_the_average_buy_price() {
    let mut f = Fixture::new();
    f.deposit("b", "USD", "100000").unwrap();
    f.deposit("s", "AAPL", "100").unwrap();
    f.deposit("s", "USD", "1000").unwrap();
    let mut n = 0;
    let mut cross = |f: &mut Fixture, buyer: &str, seller: &str, price: &str, qty: &str| {
        n += 1;
        let (bo, so) = (format!("b{n}"), format!("s{n}"));
        f.reserve(&order(&so, seller, Side::Sell, Some(price), qty)).unwrap();
        f.reserve(&order(&bo, buyer, Side::Buy, Some(price), qty)).unwrap();
        let t = trade(&format!("t{n}"), price, qty, (&bo, buyer), (&so, seller));
        f.settle(&SettleRequest { trades: vec![t], release: vec![bo, so] }).unwrap();
    };
    cross(&mut f, "b", "s", "100", "10");
    cross(&mut f, "b", "s", "110", "10");
    let pos = |f: &Fixture, u: &str| f.risk.account(u).positions.first().map(|p| (p.quantity, p.average_price));
    assert_eq!(pos(&f, "b"), Some((d("20"), d("105"))));
    assert_eq!(pos(&f, "s"), None, "selling deposited shares opens no short position");
    cross(&mut f, "s", "b", "120", "5");
    assert_eq!(pos(&f, "b"), Some((d("15"), d("105"))), "a sale keeps the average");
    assert_eq!(pos(&f, "s"), Some((d("5"), d("120"))));
    cross(&mut f, "s", "b", "110", "15");
    assert_eq!(pos(&f, "b"), None);
    f.reload();
    assert_eq!(pos(&f, "s"), Some((d("20"), d("112.5"))));
}

/// A position's cost (quantity × average price) is not bounded by any supply: each buy
/// costs at most what the USD supply is, but a buyer whose USD comes back (the seller
/// withdraws, the buyer deposits) buys again. Eighty buys of 1 at 10^27 cost more than a
/// decimal holds: the weighted average overflowed, a panic that failed risk, trading and
/// orders at every start, since the journal hands the same trade back each time.
#[test]
fn a_position_costing_more_than_a_decimal_holds_keeps_its_average() {
    let mut f = Fixture::new();
    let price = "1000000000000000000000000000";
    f.deposit("seller", "AAPL", "100").unwrap();
    for i in 0..100 {
        f.deposit("buyer", "USD", price).unwrap();
        let t = trade(&format!("t{i}"), price, "1", (&format!("b{i}"), "buyer"), (&format!("s{i}"), "seller"));
        f.settle(&SettleRequest { trades: vec![t], release: vec![] }).unwrap();
        f.withdraw("seller", "USD", price).unwrap();
    }
    // One more at half the price moves the average by its share: (100 × 10^27 + 10^27 / 2)
    // / 101, i.e. 10^27 less 1/101 of the difference.
    f.deposit("seller", "AAPL", "1").unwrap();
    f.deposit("buyer", "USD", price).unwrap();
    let half = "500000000000000000000000000";
    f.settle(&SettleRequest { trades: vec![trade("t-half", half, "1", ("b-half", "buyer"), ("s-half", "seller"))], release: vec![] })
        .unwrap();
    let p = &f.risk.account("buyer").positions[0];
    assert_eq!(p.quantity, d("101"));
    let expected = d(price) - (d(price) - d(half)) / d("101");
    assert!((p.average_price - expected).abs() < d("1"), "{} against {expected}", p.average_price);
    f.reload();
    assert_eq!(f.risk.account("buyer").positions[0].quantity, d("101"), "the same after a reload");
}

/// A position is what trades put in the account: once a withdrawal takes the units away,
/// it goes with them (buying 1 and withdrawing it left a position of 1 in an account that
/// held none). Deposited units leave first; the average of what is left stays.
#[test]
fn a_withdrawal_takes_the_position_with_the_units_it_takes() {
    let mut f = Fixture::new();
    f.deposit("b", "USD", "10000").unwrap();
    f.deposit("s", "AAPL", "100").unwrap();
    f.reserve(&order("s1", "s", Side::Sell, Some("100"), "4")).unwrap();
    f.reserve(&order("b1", "b", Side::Buy, Some("100"), "4")).unwrap();
    let t = trade("t1", "100", "4", ("b1", "b"), ("s1", "s"));
    f.settle(&SettleRequest { trades: vec![t], release: vec!["b1".into(), "s1".into()] }).unwrap();
    f.deposit("b", "AAPL", "2").unwrap();
    let pos = |f: &Fixture| f.risk.account("b").positions.first().map(|p| (p.quantity, p.average_price));
    f.withdraw("b", "AAPL", "2").unwrap();
    assert_eq!(pos(&f), Some((d("4"), d("100"))), "the deposited units left first");
    f.withdraw("b", "AAPL", "1").unwrap();
    assert_eq!(pos(&f), Some((d("3"), d("100"))));
    f.reload();
    assert_eq!(pos(&f), Some((d("3"), d("100"))), "stored");
    f.withdraw("b", "AAPL", "3").unwrap();
    assert_eq!(pos(&f), None, "nothing held, no position");
    f.reload();
    assert_eq!(pos(&f), None);
    assert_eq!(f.withdraw("s", "AAPL", "96").unwrap().positions, vec![], "a seller of deposited units has none to lose");
}

/// `AAPL` and `AAPL-USD` trade one asset. Selling through one what was bought through the
/// other left a long position of 1 in `AAPL` in an account holding no AAPL: a sale now
/// closes its own symbol's position first, then trims the others to what the balance
/// still holds, deposited units going first, in symbol order, as a withdrawal does.
#[test]
fn a_sale_through_another_symbol_of_the_asset_takes_the_position_with_it() {
    let mut f = Fixture::new();
    f.deposit("b", "USD", "10000").unwrap();
    f.deposit("s", "AAPL", "100").unwrap();
    f.deposit("s", "USD", "10000").unwrap();
    f.deposit("b", "AAPL", "2").unwrap();
    let pos = |f: &Fixture, u: &str| -> Vec<(String, Decimal, Decimal)> {
        f.risk.account(u).positions.iter().map(|p| (p.symbol.clone(), p.quantity, p.average_price)).collect()
    };
    let via = |symbol: &str, req: ReserveRequest| ReserveRequest { instrument: instrument(symbol), ..req };
    f.reserve(&order("s1", "s", Side::Sell, Some("100"), "3")).unwrap();
    f.reserve(&order("b1", "b", Side::Buy, Some("100"), "3")).unwrap();
    let t = trade("t1", "100", "3", ("b1", "b"), ("s1", "s"));
    f.settle(&SettleRequest { trades: vec![t], release: vec!["b1".into(), "s1".into()] }).unwrap();
    assert_eq!(pos(&f, "b"), vec![("AAPL".into(), d("3"), d("100"))]);
    // 4 sold through AAPL-USD: the 2 deposited go first, then 2 of the 3 bought.
    f.reserve(&via("AAPL-USD", order("s2", "b", Side::Sell, Some("110"), "4"))).unwrap();
    f.reserve(&via("AAPL-USD", order("b2", "s", Side::Buy, Some("110"), "4"))).unwrap();
    let t = SettleTrade { symbol: "AAPL-USD".into(), ..trade("t2", "110", "4", ("b2", "s"), ("s2", "b")) };
    f.settle(&SettleRequest { trades: vec![t.clone()], release: vec!["b2".into(), "s2".into()] }).unwrap();
    assert_eq!(f.bal("b", "AAPL").0, d("1"));
    assert_eq!(pos(&f, "b"), vec![("AAPL".into(), d("1"), d("100"))], "what is left keeps its average");
    assert_eq!(pos(&f, "s"), vec![("AAPL-USD".into(), d("4"), d("110"))], "the buyer's side is a position as before");
    // Settled again (a redo) it moves nothing, also after a restart.
    let before = f.snapshot();
    f.settle(&SettleRequest { trades: vec![t], release: vec![] }).unwrap();
    f.reload();
    assert_eq!(f.snapshot(), before);
    // The last one through AAPL-USD: no position is left anywhere.
    f.reserve(&via("AAPL-USD", order("s3", "b", Side::Sell, Some("110"), "1"))).unwrap();
    f.reserve(&via("AAPL-USD", order("b3", "s", Side::Buy, Some("110"), "1"))).unwrap();
    let t = SettleTrade { symbol: "AAPL-USD".into(), ..trade("t3", "110", "1", ("b3", "s"), ("s3", "b")) };
    f.settle(&SettleRequest { trades: vec![t], release: vec!["b3".into(), "s3".into()] }).unwrap();
    assert_eq!((f.bal("b", "AAPL").0, pos(&f, "b")), (d("0"), vec![]));
    f.reload();
    assert_eq!(pos(&f, "b"), vec![], "stored");
}

/// With short selling, a short position never owes more than the account does: a sale
/// past the balance through one symbol closes the long position in the other and opens
/// a short one for the rest; a buy through the other covers it; a deposit of the asset
/// that pays back the debt closes the short position as far.
#[test]
fn short_positions_follow_the_balance_across_symbols_and_deposits() {
    let mut f = short_seller();
    f.deposit("b", "USD", "10000").unwrap();
    f.deposit("s", "AAPL", "100").unwrap();
    let pos = |f: &Fixture| -> Vec<(String, Decimal, Decimal)> {
        f.risk.account("b").positions.iter().map(|p| (p.symbol.clone(), p.quantity, p.average_price)).collect()
    };
    let cross = |f: &mut Fixture, id: &str, symbol: &str, price: &str, qty: &str, buyer: &str, seller: &str| {
        let t = SettleTrade { symbol: symbol.into(), ..trade(id, price, qty, ("bo", buyer), ("so", seller)) };
        f.settle(&SettleRequest { trades: vec![t], release: vec![] }).unwrap();
    };
    cross(&mut f, "t1", "AAPL", "100", "1", "b", "s");
    cross(&mut f, "t2", "AAPL-USD", "120", "3", "s", "b");
    assert_eq!(f.bal("b", "AAPL").0, d("-2"));
    assert_eq!(pos(&f), vec![("AAPL-USD".into(), d("-2"), d("120"))], "the AAPL long went with the unit sold");
    cross(&mut f, "t3", "AAPL", "90", "1", "b", "s");
    assert_eq!(pos(&f), vec![("AAPL-USD".into(), d("-1"), d("120"))], "a buy through AAPL covers the short first");
    cross(&mut f, "t4", "AAPL", "95", "3", "b", "s");
    assert_eq!(f.bal("b", "AAPL").0, d("2"));
    assert_eq!(pos(&f), vec![("AAPL".into(), d("2"), d("95"))], "the rest is long, at the price paid");
    // Sold short again, then paid back by deposits.
    cross(&mut f, "t5", "AAPL", "100", "5", "s", "b");
    assert_eq!(pos(&f), vec![("AAPL".into(), d("-3"), d("100"))]);
    f.deposit("b", "AAPL", "1").unwrap();
    assert_eq!(pos(&f), vec![("AAPL".into(), d("-2"), d("100"))]);
    f.reload();
    assert_eq!(pos(&f), vec![("AAPL".into(), d("-2"), d("100"))], "stored");
    f.deposit("b", "AAPL", "5").unwrap();
    assert_eq!((f.bal("b", "AAPL").0, pos(&f)), (d("3"), vec![]), "a deposit is a balance, not a position");
}

/// Positions an older agt left past the balance (a withdrawal before withdrawals trimmed
/// them, a sale through another symbol of the asset, a deposit paying back a short sale)
/// are trimmed when the ledger loads, and the trimmed rows are written.
#[test]
fn positions_left_past_the_balance_are_trimmed_at_load_and_stay_trimmed() {
    let mut f = Fixture::new();
    f.deposit("b", "AAPL", "1").unwrap();
    f.deposit("b", "MSFT", "5").unwrap();
    for (user, symbol, quantity, average) in [
        ("b", "AAPL", "2", "100"),
        ("b", "AAPL-USD", "3", "110"),
        ("b", "MSFT", "4", "50"),
        ("c", "AAPL", "-2", "120"),
        ("c", "BTC-USD", "1", "60000"),
    ] {
        f.conn.execute("INSERT INTO positions VALUES (?1, ?2, ?3, ?4)", [user, symbol, quantity, average]).unwrap();
    }
    f.reload();
    let stored = |f: &Fixture| -> Vec<(String, String, String)> {
        let mut stmt = f.conn.prepare("SELECT user_id, symbol, quantity FROM positions ORDER BY user_id, symbol").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    };
    let row = |u: &str, s: &str, q: &str| (u.to_string(), s.to_string(), q.to_string());
    // 5 long in AAPL against a balance of 1: trimmed in symbol order, AAPL first.
    assert_eq!(stored(&f), vec![row("b", "AAPL-USD", "1"), row("b", "MSFT", "4")], "written at load");
    let p = &f.risk.account("b").positions;
    assert_eq!((p[0].symbol.as_str(), p[0].quantity, p[0].average_price), ("AAPL-USD", d("1"), d("110")));
    assert!(f.risk.account("c").positions.is_empty());
    let before = f.snapshot();
    f.reload();
    assert_eq!(f.snapshot(), before);
}

#[test]
fn a_malformed_settlement_moves_nothing() {
    let mut f = Fixture::new();
    f.deposit("b", "USD", "100").unwrap();
    let before = f.snapshot();
    let bad = trade("t", "0", "1", ("x", "b"), ("y", "s"));
    assert_eq!(f.settle(&SettleRequest { trades: vec![bad], release: vec![] }).unwrap_err().code, "invalid_trade");
    assert_eq!(f.snapshot(), before);
}

// ---------------------------------------------------------------- proptest of the ledger

mod ledger_properties {
    use super::*;
    use proptest::prelude::*;

    const USERS: [&str; 3] = ["ann", "bob", "cy"];
    /// `AAA` and `AAA-USD` trade one asset: positions in both must fit its balance.
    const SYMBOLS: [&str; 3] = ["AAA", "BBB-USD", "AAA-USD"];
    const ASSETS: [&str; 3] = ["USD", "AAA", "BBB"];

    #[derive(Debug, Clone)]
    enum Op {
        Deposit {
            user: usize,
            asset: usize,
            cents: u32,
        },
        Withdraw {
            user: usize,
            asset: usize,
            cents: u32,
        },
        /// `price` in ticks of 0.5; None for a market order.
        Reserve {
            user: usize,
            symbol: usize,
            buy: bool,
            price: Option<u8>,
            qty: u8,
        },
        /// Reserves an order again (by index among those reserved).
        Again(usize),
        /// Matches an open buy with an open sell of the same symbol (by index).
        Trade {
            buy: usize,
            sell: usize,
            part: u8,
        },
        /// Settles a trade already settled (by index).
        Replay(usize),
        Release(usize),
        Amend {
            order: usize,
            price: u8,
            qty: u8,
        },
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..3usize, 0..3usize, 1..200_000u32).prop_map(|(user, asset, cents)| Op::Deposit { user, asset, cents }),
            1 => (0..3usize, 0..3usize, 1..50_000u32).prop_map(|(user, asset, cents)| Op::Withdraw { user, asset, cents }),
            5 => (0..3usize, 0..SYMBOLS.len(), any::<bool>(), prop::option::weighted(0.8, 1..40u8), 1..20u8)
                .prop_map(|(user, symbol, buy, price, qty)| Op::Reserve { user, symbol, buy, price, qty }),
            1 => any::<usize>().prop_map(Op::Again),
            8 => (any::<usize>(), any::<usize>(), 1..=4u8).prop_map(|(buy, sell, part)| Op::Trade { buy, sell, part }),
            1 => any::<usize>().prop_map(Op::Replay),
            2 => any::<usize>().prop_map(Op::Release),
            2 => (any::<usize>(), 1..40u8, 1..20u8).prop_map(|(order, price, qty)| Op::Amend { order, price, qty }),
            1 => Just(Op::Restart),
        ]
    }

    /// What the test knows of an order it reserved.
    #[derive(Debug, Clone)]
    struct Placed {
        req: ReserveRequest,
        remaining: Decimal,
        /// A limit order's current price (after amends).
        price: Option<Decimal>,
        /// A market buy's budget still unspent.
        budget: Option<Decimal>,
        /// What the first Reserve answered.
        reserved: Reserved,
        open: bool,
    }

    fn instrument_of(symbol: &str) -> Instrument {
        Instrument { tick: d("0.5"), ..instrument(symbol) }
    }

    fn check_invariants(f: &Fixture, net: &BTreeMap<&str, Decimal>) -> Result<(), TestCaseError> {
        let balances = f.risk.ledger().all_balances();
        let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
        for ((user, asset), b) in &balances {
            prop_assert!(b.total >= Decimal::ZERO, "{user} {asset} total {}", b.total);
            prop_assert!(b.held >= Decimal::ZERO, "{user} {asset} held {}", b.held);
            prop_assert!(b.available() >= Decimal::ZERO, "{user} {asset} available {}", b.available());
            *sums.entry(asset.clone()).or_default() += b.total;
        }
        for asset in ASSETS {
            let want = net.get(asset).copied().unwrap_or_default();
            let got = sums.get(asset).copied().unwrap_or_default();
            prop_assert_eq!(got, want, "sum of {} totals", asset);
        }
        let mut held: BTreeMap<(String, String), Decimal> = BTreeMap::new();
        for h in f.risk.holds() {
            prop_assert!(h.amount >= Decimal::ZERO);
            *held.entry((h.user_id.clone(), h.asset.clone())).or_default() += h.amount;
        }
        for (key, b) in &balances {
            prop_assert_eq!(b.held, held.get(key).copied().unwrap_or_default(), "held of {:?} vs its open holds", key);
        }
        for key in held.keys() {
            prop_assert!(balances.contains_key(key), "a hold on {key:?} without a balance");
        }
        positions_fit(f)
    }

    /// Every user's positions in the symbols of one asset hold together no more than its
    /// balance holds (long) and owe no more than it owes (short).
    fn positions_fit(f: &Fixture) -> Result<(), TestCaseError> {
        let mut sums: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
        for ((user, symbol), p) in f.risk.ledger().all_positions() {
            prop_assert!(!p.quantity.is_zero(), "{user} {symbol}: a zero position is listed");
            let asset = crate::services::market::base_asset(&symbol).to_string();
            let (long, short) = sums.entry((user, asset)).or_default();
            if p.quantity > Decimal::ZERO {
                *long += p.quantity;
            } else {
                *short -= p.quantity;
            }
        }
        for ((user, asset), (long, short)) in sums {
            let total = f.risk.ledger().balance(&user, &asset).total;
            prop_assert!(long <= total.max(Decimal::ZERO), "{user} is long {long} {asset} holding {total}");
            prop_assert!(short <= (-total).max(Decimal::ZERO), "{user} is short {short} {asset} holding {total}");
        }
        Ok(())
    }

    fn run_session(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut settings = Settings::defaults();
        settings.risk.price_band_pct = Decimal::from(1000);
        let mut f = Fixture::with(settings);
        let mut net: BTreeMap<&str, Decimal> = BTreeMap::new();
        // Everyone starts with something to trade (the session's deposits come on top).
        for user in USERS {
            for (asset, amount) in [("USD", d("5000")), ("AAA", d("40")), ("BBB", d("40"))] {
                f.run(|r, _, after| r.deposit(after, user, asset, amount, 0)).unwrap();
                *net.entry(asset).or_default() += amount;
            }
        }
        let mut placed: Vec<Placed> = Vec::new();
        let mut settled: Vec<SettleTrade> = Vec::new();
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Deposit { user, asset, cents } => {
                    let amount = Decimal::new(i64::from(cents), 2);
                    let a = f.run(|r, _, after| r.deposit(after, USERS[user], ASSETS[asset], amount, 0));
                    prop_assert!(a.is_ok());
                    *net.entry(ASSETS[asset]).or_default() += amount;
                }
                Op::Withdraw { user, asset, cents } => {
                    let amount = Decimal::new(i64::from(cents), 2);
                    let available = f.risk.ledger().available(USERS[user], ASSETS[asset]);
                    let r = f.run(|r, _, after| r.withdraw(after, USERS[user], ASSETS[asset], amount));
                    prop_assert_eq!(r.is_ok(), amount <= available);
                    if r.is_ok() {
                        *net.entry(ASSETS[asset]).or_default() -= amount;
                    }
                }
                Op::Reserve { user, symbol, buy, price, qty } => {
                    next_id += 1;
                    let price = price.map(|p| Decimal::new(i64::from(p) * 5, 1));
                    let req = ReserveRequest {
                        order_id: format!("o{next_id}"),
                        user_id: USERS[user].into(),
                        user_active: true,
                        instrument: instrument_of(SYMBOLS[symbol]),
                        side: if buy { Side::Buy } else { Side::Sell },
                        kind: if price.is_some() { OrderType::Limit } else { OrderType::Market },
                        price,
                        quantity: Decimal::from(qty),
                    };
                    if let Ok(r) = f.reserve(&req) {
                        placed.push(Placed { remaining: req.quantity, price, budget: r.budget, reserved: r, open: true, req });
                    }
                }
                Op::Again(i) if !placed.is_empty() => {
                    let p = &placed[i % placed.len()];
                    let before = (f.risk.ledger().all_balances(), f.risk.holds());
                    let r = f.reserve(&p.req);
                    prop_assert_eq!(r, Ok(p.reserved.clone()), "a reserved order reserved again");
                    prop_assert_eq!(before, (f.risk.ledger().all_balances(), f.risk.holds()), "held twice");
                }
                Op::Trade { buy, sell, part } => {
                    let buys: Vec<usize> = (0..placed.len()).filter(|&i| placed[i].open && placed[i].req.side == Side::Buy).collect();
                    let sells: Vec<usize> = (0..placed.len()).filter(|&i| placed[i].open && placed[i].req.side == Side::Sell).collect();
                    if buys.is_empty() || sells.is_empty() {
                        continue;
                    }
                    let bi = buys[buy % buys.len()];
                    let b = &placed[bi];
                    // Only sells of the same symbol that cross this buy.
                    let sells: Vec<usize> = sells
                        .into_iter()
                        .filter(|&i| {
                            let s = &placed[i];
                            s.req.instrument.symbol == b.req.instrument.symbol
                                && match (b.price, s.price) {
                                    (Some(bp), Some(sp)) => sp <= bp,
                                    (None, None) => false,
                                    _ => true,
                                }
                        })
                        .collect();
                    if sells.is_empty() {
                        continue;
                    }
                    let si = sells[sell % sells.len()];
                    let s = &placed[si];
                    // The maker's price; a market taker trades at the resting limit.
                    let price = match (b.price, s.price) {
                        (Some(bp), Some(sp)) if sp <= bp => sp,
                        (Some(_), Some(_)) => continue,
                        (Some(bp), None) => bp,
                        (None, Some(sp)) => sp,
                        (None, None) => continue,
                    };
                    let mut qty = (b.remaining.min(s.remaining) * Decimal::from(part) / Decimal::from(4)).floor();
                    if let Some(budget) = b.budget {
                        qty = qty.min((budget / price).floor());
                    }
                    if qty <= Decimal::ZERO {
                        continue;
                    }
                    let t = SettleTrade {
                        trade_id: format!("t{}", settled.len()),
                        symbol: b.req.instrument.symbol.clone(),
                        base_asset: crate::services::market::base_asset(&b.req.instrument.symbol).into(),
                        price,
                        quantity: qty,
                        buy_order_id: b.req.order_id.clone(),
                        buy_user_id: b.req.user_id.clone(),
                        sell_order_id: s.req.order_id.clone(),
                        sell_user_id: s.req.user_id.clone(),
                    };
                    placed[bi].remaining -= qty;
                    placed[si].remaining -= qty;
                    if let Some(budget) = &mut placed[bi].budget {
                        *budget -= qty * price;
                    }
                    // As the saga does: an order done with is released with its last trade.
                    let mut release = Vec::new();
                    for i in [bi, si] {
                        if placed[i].remaining.is_zero() {
                            placed[i].open = false;
                            release.push(placed[i].req.order_id.clone());
                        }
                    }
                    let r = f.settle(&SettleRequest { trades: vec![t.clone()], release });
                    prop_assert!(r.is_ok(), "settle: {:?}", r);
                    settled.push(t);
                }
                Op::Replay(i) if !settled.is_empty() => {
                    let before = f.snapshot();
                    let t = settled[i % settled.len()].clone();
                    let r = f.settle(&SettleRequest { trades: vec![t], release: vec![] });
                    prop_assert!(r.is_ok(), "replay: {:?}", r);
                    prop_assert_eq!(before, f.snapshot(), "a replayed trade moved something");
                }
                Op::Release(i) if !placed.is_empty() => {
                    let n = placed.len();
                    let p = &mut placed[i % n];
                    p.open = false;
                    let id = p.req.order_id.clone();
                    f.release(&[id.as_str()]);
                    f.release(&[id.as_str()]);
                }
                Op::Amend { order, price, qty } if !placed.is_empty() => {
                    let n = placed.len();
                    let p = &mut placed[order % n];
                    if !p.open || p.req.kind != OrderType::Limit {
                        continue;
                    }
                    let (price, qty) = (Decimal::new(i64::from(price) * 5, 1), Decimal::from(qty));
                    let id = p.req.order_id.clone();
                    let before = f.snapshot();
                    match f.amend(&id, &price.to_string(), &qty.to_string()) {
                        Ok(()) => {
                            p.price = Some(price);
                            p.remaining = qty;
                        }
                        Err(e) => {
                            prop_assert!(e.code == "insufficient_funds" || e.code == "insufficient_position", "{e:?}");
                            prop_assert_eq!(before, f.snapshot(), "a refused amend moved something");
                        }
                    }
                }
                Op::Restart => {
                    let before = f.snapshot();
                    let accounts: Vec<_> = USERS.iter().map(|u| f.risk.account(u)).collect();
                    f.reload();
                    prop_assert_eq!(before, f.snapshot(), "the store lost something");
                    prop_assert_eq!(accounts, USERS.iter().map(|u| f.risk.account(u)).collect::<Vec<_>>());
                }
                _ => {}
            }
            check_invariants(&f, &net)?;
        }
        // Closing every order leaves nothing held.
        let ids: Vec<String> = placed.iter().map(|p| p.req.order_id.clone()).collect();
        f.settle(&SettleRequest { trades: vec![], release: ids }).unwrap();
        prop_assert!(f.risk.holds().is_empty());
        for (_, b) in f.risk.ledger().all_balances() {
            prop_assert_eq!(b.held, Decimal::ZERO);
        }
        check_invariants(&f, &net)
    }

    /// One step of a short-selling session. Every order is at 1 USD, on a lot of 1
    /// (`AAA`) or of 0.001 (`AAA-USD`, `fine`), and `digit` × 10^`exp` lots in size:
    /// - `Cross`: a sell and a buy of two users that trade whole at once (the buyer
    ///   funded first) and end;
    /// - `Rest`: an order that stays open across later steps (a buy funded first). A
    ///   user's second resting sell is what `Ledger::rehold_after_short_sale` is for: the
    ///   first holds all there is, the second sells short, and should the second (or any
    ///   short sale of that user) trade first, the first holds more than is left;
    /// - `Hit`: a new order of another user (`taker` picks which) trades `part` quarters
    ///   of a resting order's rest (a lot at least) and ends;
    /// - `Match`: a resting buy and a resting sell of one symbol and two users trade so;
    /// - `Cancel`: a resting order ends untraded;
    /// - `Deposit` of the base asset; `Withdraw` of `part` quarters of what is available
    ///   of USD or the base asset (1 where nothing is: what a short seller owes).
    #[derive(Debug, Clone)]
    enum Big {
        Cross { seller: usize, buyer: usize, fine: bool, digit: u8, exp: u32 },
        Rest { user: usize, buy: bool, fine: bool, digit: u8, exp: u32 },
        Hit { order: usize, taker: bool, part: u8 },
        Match { buy: usize, sell: usize, part: u8 },
        Cancel(usize),
        Deposit { user: usize, digit: u8, exp: u32 },
        Withdraw { user: usize, usd: bool, part: u8 },
    }

    fn big() -> impl Strategy<Value = Big> {
        let size = || (any::<bool>(), 1..10u8, 0..28u32);
        prop_oneof![
            4 => (0..3usize, 0..3usize, size())
                .prop_map(|(seller, buyer, (fine, digit, exp))| Big::Cross { seller, buyer, fine, digit, exp }),
            4 => (0..3usize, any::<bool>(), size()).prop_map(|(user, buy, (fine, digit, exp))| Big::Rest { user, buy, fine, digit, exp }),
            3 => (any::<usize>(), any::<bool>(), 1..=4u8).prop_map(|(order, taker, part)| Big::Hit { order, taker, part }),
            2 => (any::<usize>(), any::<usize>(), 1..=4u8).prop_map(|(buy, sell, part)| Big::Match { buy, sell, part }),
            1 => any::<usize>().prop_map(Big::Cancel),
            1 => (0..3usize, 1..10u8, 0..28u32).prop_map(|(user, digit, exp)| Big::Deposit { user, digit, exp }),
            2 => (0..3usize, any::<bool>(), 1..=4u8).prop_map(|(user, usd, part)| Big::Withdraw { user, usd, part }),
        ]
    }

    /// An amount in thousandths, the finest places the session moves.
    fn thousandths(x: Decimal) -> i128 {
        let x = x.normalize();
        assert!(x.scale() <= 3, "{x} has more than 3 places");
        x.mantissa() * 10i128.pow(3 - x.scale())
    }

    /// (symbol, lot) of the coarse or the fine market of `AAA`.
    fn market(fine: bool) -> (&'static str, &'static str) {
        if fine {
            ("AAA-USD", "0.001")
        } else {
            ("AAA", "1")
        }
    }

    /// `digit` × 10^`exp` lots.
    fn sized(fine: bool, digit: u8, exp: u32) -> Decimal {
        let lots = Decimal::from_i128_with_scale(i128::from(digit) * 10i128.pow(exp), 0);
        if fine {
            lots / Decimal::from(1000)
        } else {
            lots
        }
    }

    /// An order a session left open, and what it has left to trade.
    #[derive(Debug, Clone)]
    struct Resting {
        id: String,
        user: usize,
        side: Side,
        fine: bool,
        remaining: Decimal,
    }

    /// A short-selling session: the risk service, and an exact model of what it should hold.
    struct Shorts {
        f: Fixture,
        /// (user, asset) → balance, in thousandths.
        model: BTreeMap<(usize, &'static str), i128>,
        /// asset → deposited less withdrawn, in thousandths: what its balances must sum to.
        net: BTreeMap<&'static str, i128>,
        resting: Vec<Resting>,
    }

    impl Shorts {
        fn deposit(&mut self, user: usize, asset: &'static str, amount: Decimal) -> bool {
            if self.f.run(|r, _, after| r.deposit(after, USERS[user], asset, amount, 3)).is_err() {
                return false;
            }
            *self.model.entry((user, asset)).or_default() += thousandths(amount);
            *self.net.entry(asset).or_default() += thousandths(amount);
            true
        }

        /// Deposits what `user` lacks of `qty` USD available, for a buy of `qty` at 1.
        fn fund(&mut self, user: usize, qty: Decimal) -> bool {
            let need = qty - self.f.risk.ledger().available(USERS[user], "USD");
            need <= Decimal::ZERO || self.deposit(user, "USD", need)
        }

        /// Reserves an order; false if the checks refuse it (for a reason they may have).
        fn reserve(&mut self, id: &str, user: usize, side: Side, fine: bool, qty: Decimal) -> Result<bool, TestCaseError> {
            let (symbol, lot) = market(fine);
            match self.f.reserve(&at_one(id, USERS[user], side, symbol, lot, &qty.to_string())) {
                Ok(_) => Ok(true),
                Err(e) => {
                    let known = ["max_supply", "insufficient_funds", "max_order_quantity", "max_order_notional"];
                    prop_assert!(known.contains(&e.code.as_ref()), "{:?}", e);
                    prop_assert!(self.f.risk.ledger().hold(id).is_none(), "{} refused yet held", id);
                    Ok(false)
                }
            }
        }

        /// Settles one trade of `qty` at 1 USD, releasing the orders in `release`.
        fn trade(
            &mut self,
            n: usize,
            fine: bool,
            buy: (&str, usize),
            sell: (&str, usize),
            qty: Decimal,
            release: Vec<String>,
        ) -> Result<(), TestCaseError> {
            let t = SettleTrade {
                trade_id: format!("t{n}"),
                symbol: market(fine).0.into(),
                base_asset: "AAA".into(),
                price: d("1"),
                quantity: qty,
                buy_order_id: buy.0.into(),
                buy_user_id: USERS[buy.1].into(),
                sell_order_id: sell.0.into(),
                sell_user_id: USERS[sell.1].into(),
            };
            let r = self.f.settle(&SettleRequest { trades: vec![t], release });
            prop_assert!(r.is_ok(), "a trade the checks admitted did not settle: {:?}", r);
            let q = thousandths(qty);
            *self.model.entry((buy.1, "AAA")).or_default() += q;
            *self.model.entry((sell.1, "AAA")).or_default() -= q;
            *self.model.entry((buy.1, "USD")).or_default() -= q;
            *self.model.entry((sell.1, "USD")).or_default() += q;
            Ok(())
        }

        /// Takes `qty` off a resting order's rest; its id if that ends it.
        fn fill(&mut self, i: usize, qty: Decimal) -> Option<String> {
            self.resting[i].remaining -= qty;
            self.resting[i].remaining.is_zero().then(|| self.resting[i].id.clone())
        }

        fn step(&mut self, n: usize, op: Big) -> Result<(), TestCaseError> {
            // Ids sort as they were made, as the daemon's (UUIDv7) do: the rehold takes
            // the newest sell's hold first.
            let id = |what: &str| format!("{n:03}-{what}");
            match op {
                Big::Deposit { user, digit, exp } => {
                    self.deposit(user, "AAA", sized(false, digit, exp));
                }
                Big::Withdraw { user, usd, part } => {
                    let (u, asset) = (USERS[user], if usd { "USD" } else { "AAA" });
                    let available = self.f.risk.ledger().available(u, asset);
                    let quarters = available.checked_mul(Decimal::from(part)).map_or(available, |x| x / Decimal::from(4));
                    let mut amount = quarters.round_dp_with_strategy(3, rust_decimal::RoundingStrategy::ToZero);
                    if amount <= Decimal::ZERO {
                        amount = Decimal::ONE;
                    }
                    let owes = self.model.iter().any(|((who, _), v)| *who == user && *v < 0);
                    match self.f.run(|r, _, after| r.withdraw(after, u, asset, amount)) {
                        Ok(_) => {
                            prop_assert!(!owes, "{} withdrew {} {} while owing: {:?}", u, amount, asset, self.model);
                            prop_assert!(amount <= available, "{} withdrew {} {} of {} available", u, amount, asset, available);
                            *self.model.entry((user, asset)).or_default() -= thousandths(amount);
                            *self.net.entry(asset).or_default() -= thousandths(amount);
                        }
                        Err(e) => {
                            prop_assert_eq!(e.code.as_ref(), "insufficient_funds", "{:?}", e);
                            prop_assert_eq!(e.message.contains("from short sales"), owes, "{}", e.message);
                            prop_assert!(owes || amount > available, "{} refused {} {} of {} available", u, amount, asset, available);
                        }
                    }
                }
                Big::Cross { seller, buyer, fine, digit, exp } if seller != buyer => {
                    let qty = sized(fine, digit, exp);
                    let (s_id, b_id) = (id("sell"), id("buy"));
                    if !self.fund(buyer, qty) {
                        return Ok(());
                    }
                    let sold = self.reserve(&s_id, seller, Side::Sell, fine, qty)?;
                    let bought = self.reserve(&b_id, buyer, Side::Buy, fine, qty)?;
                    if sold && bought {
                        self.trade(n, fine, (&b_id, buyer), (&s_id, seller), qty, vec![s_id.clone(), b_id.clone()])?;
                    } else {
                        self.f.release(&[&s_id, &b_id]);
                    }
                }
                Big::Rest { user, buy, fine, digit, exp } => {
                    let (qty, rest_id) = (sized(fine, digit, exp), id("rest"));
                    let side = if buy { Side::Buy } else { Side::Sell };
                    if (!buy || self.fund(user, qty)) && self.reserve(&rest_id, user, side, fine, qty)? {
                        self.resting.push(Resting { id: rest_id, user, side, fine, remaining: qty });
                    }
                }
                Big::Hit { order, taker, part } if !self.resting.is_empty() => {
                    let i = order % self.resting.len();
                    let r = self.resting[i].clone();
                    let other = (r.user + 1 + usize::from(taker)) % USERS.len();
                    let qty = quarters(r.remaining, part, r.fine);
                    let hit_id = id("hit");
                    let side = if r.side == Side::Buy { Side::Sell } else { Side::Buy };
                    if (side == Side::Sell || self.fund(other, qty)) && self.reserve(&hit_id, other, side, r.fine, qty)? {
                        let release = [Some(hit_id.clone()), self.fill(i, qty)].into_iter().flatten().collect();
                        let (buy, sell) =
                            if side == Side::Buy { ((&*hit_id, other), (&*r.id, r.user)) } else { ((&*r.id, r.user), (&*hit_id, other)) };
                        self.trade(n, r.fine, buy, sell, qty, release)?;
                    }
                }
                Big::Match { buy, sell, part } => {
                    let resting = &self.resting;
                    let buys: Vec<usize> = (0..resting.len()).filter(|&i| resting[i].side == Side::Buy).collect();
                    let Some(&bi) = buys.get(buy % buys.len().max(1)) else { return Ok(()) };
                    let b = resting[bi].clone();
                    let sells: Vec<usize> = (0..resting.len())
                        .filter(|&i| resting[i].side == Side::Sell && resting[i].fine == b.fine && resting[i].user != b.user)
                        .collect();
                    let Some(&si) = sells.get(sell % sells.len().max(1)) else { return Ok(()) };
                    let s = self.resting[si].clone();
                    let qty = quarters(b.remaining.min(s.remaining), part, b.fine);
                    let release = [self.fill(bi, qty), self.fill(si, qty)].into_iter().flatten().collect();
                    self.trade(n, b.fine, (&b.id, b.user), (&s.id, s.user), qty, release)?;
                }
                Big::Cancel(order) if !self.resting.is_empty() => {
                    let r = self.resting.remove(order % self.resting.len());
                    self.f.release(&[&r.id]);
                }
                _ => {}
            }
            self.resting.retain(|r| !r.remaining.is_zero());
            Ok(())
        }

        /// What the ledger holds and owes, for a reload to give back.
        fn state(&self) -> impl PartialEq + std::fmt::Debug {
            let ledger = self.f.risk.ledger();
            let holds: Vec<_> = self.resting.iter().map(|r| ledger.hold(&r.id).cloned()).collect();
            (ledger.all_balances(), ledger.all_positions(), holds, ledger.exposure("AAA"), ledger.exposure("USD"))
        }

        /// The ledger's invariants, after every step.
        fn check(&mut self) -> Result<(), TestCaseError> {
            let ledger = self.f.risk.ledger();
            for ((user, asset), want) in &self.model {
                let got = ledger.balance(USERS[*user], asset).total;
                prop_assert_eq!(thousandths(got), *want, "{} {} is {}", USERS[*user], asset, got);
            }
            // Conservation: trades only move an asset, so its balances sum to what came in
            // less what went out, and that is its supply.
            for asset in ["USD", "AAA"] {
                let sum: i128 = ledger.all_balances().iter().filter(|((_, a), _)| a == asset).map(|(_, b)| thousandths(b.total)).sum();
                let net = self.net.get(asset).copied().unwrap_or_default();
                prop_assert_eq!(sum, net, "the {} balances sum to what was deposited less withdrawn", asset);
                prop_assert_eq!(thousandths(ledger.exposure(asset).0), net, "the {} supply", asset);
            }
            // The open holds are the resting orders', each what its order has left: at
            // 1 USD a buy holds its rest; a sell holds some and sells the rest short.
            let mut ids: Vec<&str> = ledger.hold_ids().collect();
            ids.sort_unstable();
            let mut want: Vec<&str> = self.resting.iter().map(|r| r.id.as_str()).collect();
            want.sort_unstable();
            prop_assert_eq!(ids, want, "the open holds are the resting orders'");
            let mut held: BTreeMap<(&str, &str), Decimal> = BTreeMap::new();
            let mut open_short = Decimal::ZERO;
            for r in &self.resting {
                let h = ledger.hold(&r.id).expect("listed above");
                prop_assert!(h.amount >= Decimal::ZERO && h.short >= Decimal::ZERO, "{:?}", h);
                match r.side {
                    Side::Buy => prop_assert_eq!((h.amount, h.short), (r.remaining, Decimal::ZERO), "{:?}", r),
                    Side::Sell => prop_assert_eq!(h.amount + h.short, r.remaining, "{:?} holds {:?}", r, h),
                }
                *held.entry((USERS[r.user], &*h.asset)).or_default() += h.amount;
                open_short += h.short;
            }
            // Per user and asset: held is what its open orders hold, and never more than
            // the balance has (nothing, below zero).
            for user in USERS {
                for asset in ["USD", "AAA"] {
                    let b = ledger.balance(user, asset);
                    prop_assert_eq!(b.held, held.get(&(user, asset)).copied().unwrap_or_default(), "{} {} held", user, asset);
                    prop_assert!(b.held <= b.total.max(Decimal::ZERO), "{} holds {} {} of {}", user, b.held, asset, b.total);
                }
            }
            // The supply room counts what short sellers owe and every open sell's short part.
            let owed: i128 = self.model.iter().filter(|((_, a), v)| *a == "AAA" && **v < 0).map(|(_, v)| -v).sum();
            prop_assert_eq!(ledger.exposure("AAA").1, Decimal::from_i128_with_scale(owed, 3) + open_short, "AAA short sales");
            prop_assert_eq!(ledger.exposure("USD").1, Decimal::ZERO, "USD is never sold short");
            positions_fit(&self.f)?;
            let before = self.state();
            self.f.reload();
            prop_assert_eq!(before, self.state(), "the store gives back another ledger");
            Ok(())
        }
    }

    /// `part` quarters of `rest`, down to the lot; the whole rest if that is less than a lot.
    fn quarters(rest: Decimal, part: u8, fine: bool) -> Decimal {
        let q = (rest / Decimal::from(4) * Decimal::from(part))
            .round_dp_with_strategy(if fine { 3 } else { 0 }, rust_decimal::RoundingStrategy::ToZero);
        if q.is_zero() {
            rest
        } else {
            // Dividing a 28-digit rest may round up.
            q.min(rest)
        }
    }

    /// With short selling, sizes up to 10^28, two grids on one asset, and orders that
    /// rest across steps: every trade the checks let through settles exactly (each
    /// balance as the model has it), what they refuse is refused as `max_supply` (or for
    /// funds, or a size past the limit), and after every step the ledger's invariants
    /// hold (`Shorts::check`). A user the model has below zero withdraws nothing; any
    /// other withdraws what is available.
    fn run_shorts(ops: Vec<Big>) -> Result<(), TestCaseError> {
        let mut s = Shorts { f: short_seller(), model: BTreeMap::new(), net: BTreeMap::new(), resting: Vec::new() };
        // Both markets are listed, as the market's read model has them in the daemon.
        s.f.instruments.loaded_with([true, false].map(|fine| tick_one(market(fine).0, market(fine).1)).to_vec());
        for (n, op) in ops.into_iter().enumerate() {
            s.step(n, op)?;
            s.check()?;
        }
        // Ending every resting order leaves nothing held and nothing open short.
        while !s.resting.is_empty() {
            s.step(usize::MAX, Big::Cancel(0))?;
        }
        s.check()?;
        let owed: i128 = s.model.iter().filter(|((_, a), v)| *a == "AAA" && **v < 0).map(|(_, v)| -v).sum();
        prop_assert_eq!(s.f.risk.ledger().exposure("AAA").1, Decimal::from_i128_with_scale(owed, 3));
        Ok(())
    }
    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::testing::proptest_cases(64), ..ProptestConfig::default() })]
        #[test]
        fn short_sales_never_round_or_overflow_a_balance(ops in prop::collection::vec(big(), 1..60)) {
            run_shorts(ops)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::testing::proptest_cases(200), ..ProptestConfig::default() })]
        #[test]
        fn conservation_holds_and_idempotence(ops in prop::collection::vec(op(), 1..120)) {
            run_session(ops)?;
        }
    }
}
