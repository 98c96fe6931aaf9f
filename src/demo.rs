//! `agt demo`: a live synthetic market for a first look (DESIGN.md §5).
//!
//! Everything goes through the public HTTP API with [`Client`], like any other program
//! would: the demo creates (or reuses) funded users `demo-mm-N` and `demo-taker-N`, and
//! then, per symbol,
//!
//! - a **mid price** follows a bounded random walk (a few ticks every 250 ms, pulled back
//!   when it strays more than 5% from where it started);
//! - each **market maker** quotes a ladder of [`LEVELS`] bids and asks around the mid,
//!   and about once a second cancels it and quotes afresh around the new mid
//!   (cancel/replace through `POST /api/orders/cancel-all` and `POST /api/orders`);
//! - **takers** send immediate-or-cancel limit orders that cross the makers' first levels
//!   (and now and then a market order), `rate` orders per second in total, from random
//!   takers on random symbols and sides.
//!
//! Prices and quantities are decimals on each instrument's tick and lot; no float ever
//! holds one (randomness picks whole ticks and whole dollars). Funding tops each demo user
//! up to a fixed balance (never beyond), at the start and every 20 s, so running the
//! demo again reuses the same users without inflating them.

use crate::api::quote::quoted;
use crate::api::ApiError;
use crate::client::{encode, Client, ClientError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// The symbols the demo trades when none are named and the daemon has them (the shipped
/// config's).
pub const DEFAULT_SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "BTC-USD", "ETH-USD"];

/// Bid and ask levels each market maker quotes per symbol.
pub const LEVELS: u32 = 3;

/// How often a market maker replaces its quotes in a symbol (±25% jitter).
const REQUOTE: Duration = Duration::from_millis(1000);

/// How often the mid prices move.
const WALK_STEP: Duration = Duration::from_millis(250);

/// How often the demo users are topped up.
const REFUND: Duration = Duration::from_secs(20);

/// At most this many taker orders in flight; beyond it the taker waits (the daemon is
/// slower than the rate asked for).
const MAX_IN_FLIGHT: usize = 64;

/// Consecutive "cannot reach the daemon" errors after which the demo gives up.
const MAX_UNREACHABLE: u64 = 25;

#[derive(Debug, Clone)]
pub struct Options {
    /// Market makers, and as many takers.
    pub users: u32,
    /// Taker orders per second, all takers together.
    pub rate: f64,
    /// How long to trade; `None` until the stop future fires.
    pub duration: Option<Duration>,
    /// The symbols to trade; empty: [`DEFAULT_SYMBOLS`] that exist, else the first four.
    pub symbols: Vec<String>,
    /// Leave the makers' last quotes resting when the demo ends.
    pub keep_quotes: bool,
}

/// What the demo has done so far; one is reported every second, and a last one (`done`)
/// at the end.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Progress {
    pub elapsed_s: u64,
    /// Orders the daemon accepted (makers' quotes and takers' orders).
    pub orders: u64,
    /// Trades those orders made as they arrived.
    pub trades: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The most recent failure, `code: message`.
    pub last_error: Option<String>,
    /// The mid price of each symbol's random walk.
    pub mid: BTreeMap<String, Decimal>,
    pub done: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Something about the daemon's setup prevents the demo (no symbols, say).
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
}

fn failed(code: &str, message: impl Into<String>) -> DemoError {
    DemoError::Failed { code: code.into(), message: message.into() }
}

/// An instrument as the demo needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub symbol: String,
    pub base: String,
    pub tick: Decimal,
    pub lot: Decimal,
    pub min_quantity: Decimal,
    pub max_quantity: Decimal,
}

/// A decimal from a JSON string or number.
fn dec(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => Decimal::from_str(s).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

impl Instrument {
    fn from_json(v: &Value) -> Option<Instrument> {
        let symbol = v["symbol"].as_str()?.to_string();
        let base = v["base"].as_str().map(String::from).unwrap_or_else(|| crate::services::market::base_asset(&symbol).to_string());
        let tick = dec(&v["tick"]).filter(|t| *t > Decimal::ZERO)?;
        let lot = dec(&v["lot"]).filter(|l| *l > Decimal::ZERO)?;
        let min_quantity = dec(&v["min_quantity"]).unwrap_or(lot).max(lot);
        let max_quantity = dec(&v["max_quantity"]).unwrap_or(Decimal::from(1_000_000));
        Some(Instrument { symbol, base, tick, lot, min_quantity, max_quantity })
    }

    /// A price on the tick, at least one tick.
    pub fn price(&self, p: Decimal) -> Decimal {
        ((p / self.tick).round() * self.tick).max(self.tick).normalize()
    }

    /// The quantity worth about `usd` at `price`: whole lots, within the instrument's
    /// minimum and maximum.
    pub fn quantity(&self, usd: Decimal, price: Decimal) -> Decimal {
        let lots = if price > Decimal::ZERO { (usd / price / self.lot).floor() } else { Decimal::ONE };
        let max_lots = (self.max_quantity / self.lot).floor();
        let min_lots = (self.min_quantity / self.lot).ceil();
        (lots.min(max_lots).max(min_lots).max(Decimal::ONE) * self.lot).normalize()
    }

    /// Half the makers' spread: 10 basis points of the mid, at least one tick.
    pub fn half_spread(&self, mid: Decimal) -> Decimal {
        self.price(mid * Decimal::new(1, 3))
    }
}

/// A starting price for a symbol that has never traded.
pub fn default_price(symbol: &str) -> Decimal {
    match symbol {
        "AAPL" => Decimal::from(190),
        "MSFT" => Decimal::from(420),
        "BTC-USD" => Decimal::from(65_000),
        "ETH-USD" => Decimal::from(3_500),
        _ => Decimal::from(100),
    }
}

/// One symbol's walk.
struct Walk {
    inst: Instrument,
    start: Decimal,
    mid: Mutex<Decimal>,
}

impl Walk {
    fn mid(&self) -> Decimal {
        *self.mid.lock().unwrap()
    }

    /// Moves the mid a few ticks (about 4 basis points at most), back towards the start
    /// when it is more than 5% away.
    fn step(&self, rng: &mut impl Rng) {
        let mut mid = self.mid.lock().unwrap();
        let span = ((*mid * Decimal::new(4, 4)) / self.inst.tick).round();
        let span = rust_decimal::prelude::ToPrimitive::to_i64(&span).unwrap_or(1).clamp(1, 1_000_000);
        let mut k = rng.gen_range(-span..=span);
        let band = self.start * Decimal::new(5, 2);
        if *mid > self.start + band {
            k = -k.abs();
        } else if *mid < self.start - band {
            k = k.abs();
        }
        *mid = (*mid + Decimal::from(k) * self.inst.tick).max(self.inst.tick * Decimal::from(10));
    }
}

#[derive(Default)]
struct Stats {
    orders: AtomicU64,
    trades: AtomicU64,
    errors: AtomicU64,
    unreachable_streak: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_unreachable: Mutex<Option<ClientError>>,
}

impl Stats {
    /// Counts a request's outcome; the answer if there was one.
    fn count(&self, r: Result<Value, ClientError>) -> Option<Value> {
        match r {
            Ok(v) => {
                self.unreachable_streak.store(0, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let text = match &e {
                    ClientError::Api(ApiError { code, message, .. }) => format!("{code}: {message}"),
                    other => other.to_string(),
                };
                *self.last_error.lock().unwrap() = Some(text);
                if matches!(e, ClientError::Unreachable { .. }) {
                    self.unreachable_streak.fetch_add(1, Ordering::Relaxed);
                    *self.last_unreachable.lock().unwrap() = Some(e);
                } else {
                    self.unreachable_streak.store(0, Ordering::Relaxed);
                }
                None
            }
        }
    }

    fn placed(&self, r: Result<Value, ClientError>) {
        if let Some(v) = self.count(r) {
            self.orders.fetch_add(1, Ordering::Relaxed);
            let fills = v["fills"].as_array().map_or(0, Vec::len);
            self.trades.fetch_add(fills as u64, Ordering::Relaxed);
        }
    }
}

/// The user named `name`, created if need be and enabled; its id.
async fn ensure_user(client: &Client, name: &str) -> Result<String, ClientError> {
    let body = json!({"username": name, "email": format!("{name}@demo.agt.invalid")});
    let user = match client.post("/api/users", Some(&body)).await {
        Ok(v) => v,
        Err(e) if e.code() == Some("username_taken") || matches!(&e, ClientError::Api(a) if a.status == 409) => {
            client.get(&format!("/api/users/{}", encode(name))).await?
        }
        Err(e) => return Err(e),
    };
    let id = user["user_id"].as_str().unwrap_or(name).to_string();
    if user["status"].as_str() == Some("disabled") {
        client.put(&format!("/api/users/{}", encode(&id)), Some(&json!({"status": "active"}))).await?;
    }
    Ok(id)
}

/// Deposits what `user` lacks of each target balance.
async fn top_up(client: &Client, user: &str, targets: &[(String, Decimal)]) -> Result<(), ClientError> {
    let account = client.get(&format!("/api/users/{}/account", encode(user))).await?;
    let balances = account["balances"].as_array().cloned().unwrap_or_default();
    for (asset, target) in targets {
        let total = balances.iter().find(|b| b["asset"].as_str() == Some(asset)).and_then(|b| dec(&b["total"])).unwrap_or_default();
        if total < *target {
            let body = json!({"asset": asset, "amount": (*target - total).normalize().to_string()});
            client.post(&format!("/api/users/{}/deposits", encode(user)), Some(&body)).await?;
        }
    }
    Ok(())
}

/// What each kind of demo user holds: USD, and about this many dollars of every asset.
fn targets(walks: &[Arc<Walk>], usd: i64, per_asset_usd: i64) -> Vec<(String, Decimal)> {
    let mut t = vec![("USD".to_string(), Decimal::from(usd))];
    for w in walks {
        let q = w.inst.quantity(Decimal::from(per_asset_usd), w.start).max(w.inst.min_quantity * Decimal::from(100));
        t.push((w.inst.base.clone(), q));
    }
    t
}

/// The instruments to trade, from `GET /api/symbols`.
async fn instruments(client: &Client, wanted: &[String]) -> Result<Vec<Instrument>, DemoError> {
    let listed = client.get("/api/symbols").await?;
    let all: Vec<Instrument> = listed.as_array().map(|a| a.iter().filter_map(Instrument::from_json).collect()).unwrap_or_default();
    if !wanted.is_empty() {
        return wanted
            .iter()
            .map(|w| {
                all.iter().find(|i| &i.symbol == w).cloned().ok_or_else(|| {
                    failed(
                        "unknown_symbol",
                        format!("the daemon has no symbol {}; `agt symbol list` shows them, `agt symbol add` adds one", quoted(w)),
                    )
                })
            })
            .collect();
    }
    let defaults: Vec<Instrument> = DEFAULT_SYMBOLS.iter().filter_map(|s| all.iter().find(|i| i.symbol == *s).cloned()).collect();
    let chosen = if defaults.is_empty() { all.into_iter().take(4).collect() } else { defaults };
    if chosen.is_empty() {
        return Err(failed("no_symbols", "the daemon has no symbols to trade: add one with `agt symbol add SYMBOL --tick T --lot L`"));
    }
    Ok(chosen)
}

fn order_body(user: &str, inst: &Instrument, side: &str, qty: Decimal, price: Option<Decimal>, tif: &str) -> Value {
    let mut b = json!({
        "user_id": user,
        "symbol": inst.symbol,
        "side": side,
        "quantity": qty.to_string(),
        "type": if price.is_some() { "limit" } else { "market" },
        "time_in_force": tif,
    });
    if let Some(p) = price {
        b["price"] = Value::String(p.to_string());
    }
    b
}

/// Cancels a maker's orders in one symbol and quotes a fresh ladder around the mid.
async fn requote(client: &Client, stats: &Stats, user: &str, w: &Walk) {
    let cancel = json!({"user_id": user, "symbol": w.inst.symbol});
    stats.count(client.post("/api/orders/cancel-all", Some(&cancel)).await);
    let mid = w.mid();
    let half = w.inst.half_spread(mid);
    for level in 1..=LEVELS {
        let off = half * Decimal::from(level);
        // Deeper levels show more size.
        let usd = Decimal::from(5_000 * level);
        for (side, price) in [("buy", mid - off), ("sell", mid + off)] {
            if price <= Decimal::ZERO {
                continue;
            }
            let price = w.inst.price(price);
            let body = order_body(user, &w.inst, side, w.inst.quantity(usd, price), Some(price), "gtc");
            stats.placed(client.post("/api/orders", Some(&body)).await);
        }
    }
}

/// One taker order: IOC across the makers' first levels, or (one in four) a market order.
async fn take(client: &Client, stats: &Stats, user: &str, w: &Walk, rng: &mut StdRng) {
    let mid = w.mid();
    let buy = rng.gen_bool(0.5);
    let reach = w.inst.half_spread(mid) * Decimal::from(2);
    let price = w.inst.price(if buy { mid + reach } else { mid - reach });
    let qty = w.inst.quantity(Decimal::from(rng.gen_range(200..=3_000)), price);
    let side = if buy { "buy" } else { "sell" };
    let body = if rng.gen_ratio(1, 4) {
        order_body(user, &w.inst, side, qty, None, "ioc")
    } else {
        order_body(user, &w.inst, side, qty, Some(price), "ioc")
    };
    stats.placed(client.post("/api/orders", Some(&body)).await);
}

fn snapshot(stats: &Stats, walks: &[Arc<Walk>], started: Instant, done: bool) -> Progress {
    Progress {
        elapsed_s: started.elapsed().as_secs_f64().round() as u64,
        orders: stats.orders.load(Ordering::Relaxed),
        trades: stats.trades.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        last_error: stats.last_error.lock().unwrap().clone(),
        mid: walks.iter().map(|w| (w.inst.symbol.clone(), w.mid().normalize())).collect(),
        done,
    }
}

/// Sleeps `d`, or less if the demo stops; `false` once it has stopped.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Runs the demo until `opts.duration` has passed or `stop` completes, calling `report`
/// every second; answers the final tally. Setup (users, funds, first quotes) happens
/// before the clock starts.
pub async fn run(
    client: Client,
    opts: Options,
    stop: impl Future<Output = ()>,
    mut report: impl FnMut(&Progress),
) -> Result<Progress, DemoError> {
    if opts.users == 0 {
        return Err(failed("invalid_users", "--users must be at least 1"));
    }
    if !(opts.rate.is_finite() && opts.rate > 0.0) {
        return Err(failed("invalid_rate", "--rate must be a number of orders per second > 0"));
    }
    // Setup: instruments, starting prices, users and their funds.
    let insts = instruments(&client, &opts.symbols).await?;
    let mut walks = Vec::new();
    for inst in insts {
        let quote = client.get(&format!("/api/market/{}", encode(&inst.symbol))).await?;
        let start = inst.price(dec(&quote["last"]).filter(|p| *p > Decimal::ZERO).unwrap_or_else(|| default_price(&inst.symbol)));
        walks.push(Arc::new(Walk { inst, start, mid: Mutex::new(start) }));
    }
    let mut makers = Vec::new();
    let mut takers = Vec::new();
    for n in 1..=opts.users {
        makers.push(ensure_user(&client, &format!("demo-mm-{n}")).await?);
        takers.push(ensure_user(&client, &format!("demo-taker-{n}")).await?);
    }
    let maker_funds = targets(&walks, 5_000_000, 1_000_000);
    let taker_funds = targets(&walks, 1_000_000, 250_000);
    for m in &makers {
        top_up(&client, m, &maker_funds).await?;
    }
    for t in &takers {
        top_up(&client, t, &taker_funds).await?;
    }
    let stats = Arc::new(Stats::default());
    // First quotes, so the takers find a book from the first second.
    for m in &makers {
        for w in &walks {
            requote(&client, &stats, m, w).await;
        }
    }
    if stats.orders.load(Ordering::Relaxed) == 0 {
        let why = stats.last_error.lock().unwrap().clone().unwrap_or_default();
        if let Some(e) = stats.last_unreachable.lock().unwrap().take() {
            return Err(e.into());
        }
        return Err(failed("demo_failed", format!("the daemon accepted none of the market makers' quotes; the last error: {why}")));
    }

    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // The random walks.
    {
        let (walks, mut stop) = (walks.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            while pause(&mut stop, WALK_STEP).await {
                for w in &walks {
                    w.step(&mut rng);
                }
            }
        }));
    }
    // Market makers: one task per maker and symbol, staggered.
    for (i, m) in makers.iter().enumerate() {
        for (j, w) in walks.iter().enumerate() {
            let (client, stats, user, w, mut stop) = (client.clone(), stats.clone(), m.clone(), w.clone(), stop_rx.clone());
            let offset = REQUOTE.mul_f64(((i * walks.len() + j) as f64 / (makers.len() * walks.len()) as f64).fract());
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::from_entropy();
                if !pause(&mut stop, offset).await {
                    return;
                }
                loop {
                    let jitter = REQUOTE.mul_f64(rng.gen_range(0.75..1.25));
                    if !pause(&mut stop, jitter).await {
                        break;
                    }
                    requote(&client, &stats, &user, &w).await;
                }
            }));
        }
    }
    // Takers: `rate` orders per second in total.
    {
        let (client, stats, takers, walks, mut stop) = (client.clone(), stats.clone(), takers.clone(), walks.clone(), stop_rx.clone());
        let period = Duration::from_secs_f64(1.0 / opts.rate).max(Duration::from_micros(10));
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.changed() => break,
                }
                if *stop.borrow() {
                    break;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let user = takers[rng.gen_range(0..takers.len())].clone();
                let w = walks[rng.gen_range(0..walks.len())].clone();
                let (client, stats) = (client.clone(), stats.clone());
                let mut order_rng = StdRng::from_rng(&mut rng).expect("seeding from a StdRng cannot fail");
                tokio::spawn(async move {
                    take(&client, &stats, &user, &w, &mut order_rng).await;
                    drop(slot);
                });
            }
            // Let the orders in flight finish.
            let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
        }));
    }
    // Funding, now and then.
    {
        let (client, stats, makers, takers, mut stop) = (client.clone(), stats.clone(), makers.clone(), takers.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            while pause(&mut stop, REFUND).await {
                for m in &makers {
                    stats.count(top_up(&client, m, &maker_funds).await.map(|_| Value::Null));
                }
                for t in &takers {
                    stats.count(top_up(&client, t, &taker_funds).await.map(|_| Value::Null));
                }
            }
        }));
    }

    // The clock: a report every second until the duration is over or `stop` fires.
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut every_second = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let stop = stop;
    tokio::pin!(stop);
    let mut gave_up = None;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = every_second.tick() => {
                report(&snapshot(&stats, &walks, started, false));
                if stats.unreachable_streak.load(Ordering::Relaxed) >= MAX_UNREACHABLE {
                    gave_up = stats.last_unreachable.lock().unwrap().take();
                    break;
                }
            }
            _ = until_deadline => break,
            _ = &mut stop => break,
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    if let Some(e) = gave_up {
        return Err(e.into());
    }
    if !opts.keep_quotes {
        for m in &makers {
            stats.count(client.post("/api/orders/cancel-all", Some(&json!({"user_id": m}))).await);
        }
    }
    let last = snapshot(&stats, &walks, started, true);
    report(&last);
    Ok(last)
}

/// A duration from the command line: `90`, `90s`, `1.5m`, `2h`, `500ms`; `0` is none
/// (run until stopped).
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {} in {}: use ms, s, m or h (e.g. 90s, 5m), or 0 to run until Ctrl-C",
                quoted(unit),
                quoted(s)
            ))
        }
    };
    let n: f64 =
        num.trim().parse().map_err(|_| format!("{} is not a duration: use e.g. 60, 90s, 5m or 1h, or 0 to run until Ctrl-C", quoted(s)))?;
    if !n.is_finite() || n < 0.0 || n * scale > 366.0 * 86_400.0 {
        return Err(format!("{} is out of range: from 0 (until Ctrl-C) to a year", quoted(s)));
    }
    Ok(if n == 0.0 { None } else { Some(Duration::from_secs_f64(n * scale)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn inst(tick: &str, lot: &str, min: &str, max: &str) -> Instrument {
        Instrument { symbol: "X".into(), base: "X".into(), tick: d(tick), lot: d(lot), min_quantity: d(min), max_quantity: d(max) }
    }

    #[test]
    fn prices_and_quantities_land_on_tick_and_lot() {
        let btc = inst("0.01", "0.0001", "0.0001", "1000");
        assert_eq!(btc.price(d("65000.004")), d("65000"));
        assert_eq!(btc.price(d("65000.006")), d("65000.01"));
        assert_eq!(btc.price(d("0.001")), d("0.01"), "at least one tick");
        assert_eq!(btc.quantity(d("1000"), d("65000")), d("0.0153"));
        assert_eq!(btc.quantity(d("1"), d("65000")), d("0.0001"), "at least the minimum");
        assert_eq!(btc.quantity(d("1000000000"), d("1")), d("1000"), "at most the maximum");
        let aapl = inst("0.01", "1", "1", "100000");
        assert_eq!(aapl.quantity(d("5000"), d("190")), d("26"));
        assert_eq!(aapl.half_spread(d("190")), d("0.19"));
        let coarse = inst("0.5", "10", "20", "1000");
        assert_eq!(coarse.half_spread(d("10")), d("0.5"), "at least one tick");
        assert_eq!(coarse.quantity(d("50"), d("10")), d("20"));
        assert_eq!(coarse.quantity(d("555"), d("10")), d("50"));
    }

    #[test]
    fn the_walk_stays_on_tick_and_near_its_start() {
        let w = Walk { inst: inst("0.01", "1", "1", "1000"), start: d("100"), mid: Mutex::new(d("100")) };
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            w.step(&mut rng);
            let m = w.mid();
            assert_eq!(m, w.inst.price(m), "{m} is on the tick");
            assert!(m > d("90") && m < d("110"), "{m} strayed");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(parse_duration("2s"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_duration("1.5m"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_duration("1h"), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(parse_duration("250ms"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(parse_duration("0"), Ok(None));
        assert_eq!(parse_duration("0s"), Ok(None));
        for bad in ["", "-1", "abc", "5d", "1e9h", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
