//! The placement saga: accept → reserve → match → settle → record (DESIGN.md §2).
//!
//! Each step is a message to the service that owns it, and each is idempotent by order
//! id or trade id. A step that failed with 503 did not commit (a reply is only ever sent
//! after commit; a lost reply means the batch rolled back), so before the book has
//! traded an order can be aborted cleanly; after it, the remaining steps are retried
//! until they land. [`recover`] replays every unfinished saga at start-up, and finishes
//! cancels that a crash interrupted.

use super::{Cmd, NewOrder};
use crate::api::{AmendOrder, ApiError, Instrument, Order, OrderType, PlaceOrder, Side, TimeInForce};
use crate::daemon::app::App;
use crate::daemon::http::Caller;
use crate::services::lane::{Amend, Cancel, LaneCmd, Placement};
use crate::services::market::base_asset;
use crate::services::trading::{self, Cancelled, MatchRequest, MatchResult};
use crate::services::{market, risk, users};
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Duration;

/// How long the remaining steps of a traded order are retried before recovery at the
/// next start takes over.
const FINISH_RETRY: Duration = Duration::from_secs(300);

fn invalid(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(code, msg)
}

/// Resolves the user an order or a query is for: a trader's own user, or the named one.
pub async fn resolve_user(app: &App, caller: &Caller, named: Option<&str>) -> Result<Arc<crate::api::User>, ApiError> {
    match (caller.bound_user(), named.filter(|s| !s.is_empty())) {
        (Some(own), None) => lookup_user(app, own).await,
        (Some(own), Some(name)) => {
            let u = lookup_user(app, name).await.map_err(|_| ApiError::forbidden("a trader token acts only for its own user"))?;
            if u.user_id != own {
                return Err(ApiError::forbidden("a trader token acts only for its own user"));
            }
            Ok(u)
        }
        (None, Some(name)) => lookup_user(app, name).await,
        (None, None) => Err(invalid("missing_user", "user_id is required: the id or username of the user placing the order")),
    }
}

/// The users service's directory first; the service itself (which answers 404 or 503)
/// when the directory does not know the key.
async fn lookup_user(app: &App, key: &str) -> Result<Arc<crate::api::User>, ApiError> {
    match app.directory.get(key) {
        Some(u) => Ok(u),
        None => app.users.call(|r| users::Cmd::Get(key.to_string(), r)).await.map(Arc::new),
    }
}

/// An instrument, from the market's read model (`market::Listed`), or from the market
/// service when the model does not hold it (not loaded yet, or no such symbol: the
/// service answers 404 `unknown_symbol` or 503). Instruments never change once created.
pub async fn instrument(app: &App, symbol: &str) -> Result<Instrument, ApiError> {
    if let Some(i) = app.instruments.get().and_then(|listed| listed.get(symbol).cloned()) {
        return Ok(i);
    }
    app.market.call(|r| market::Cmd::Symbol(symbol.to_string(), r)).await
}

/// Checks the body, resolves user and instrument, then hands the placement to the trading
/// lane (`services::lane`), which runs the saga's steps for a whole batch of placements;
/// a client that gives up (or the 504 timeout) never leaves it half-way.
/// Answers 201 with a new order or 200 with the first order of a repeated client id.
pub async fn place(app: Arc<App>, caller: &Caller, body: PlaceOrder) -> Result<(u16, Order), ApiError> {
    caller.require_trading()?;
    let started = std::time::Instant::now();
    let symbol = body.symbol.trim().to_string();
    if symbol.is_empty() || symbol.len() > 32 {
        return Err(invalid("invalid_symbol", "symbol must be 1-32 characters, e.g. \"AAPL\""));
    }
    if body.quantity <= Decimal::ZERO {
        return Err(invalid("invalid_quantity", format!("quantity must be greater than zero, got {}", body.quantity)));
    }
    if let Some(p) = body.price {
        if p <= Decimal::ZERO {
            return Err(invalid("invalid_price", format!("price must be greater than zero, got {p}")));
        }
    }
    // A limit order unless it says otherwise: a forgotten price must not make an order
    // that trades at any price.
    let kind = body.kind.unwrap_or(OrderType::Limit);
    match (kind, body.price) {
        (OrderType::Limit, None) => {
            return Err(invalid("invalid_price", "a limit order needs a price; for a market order send \"type\": \"market\""))
        }
        (OrderType::Market, Some(_)) => {
            return Err(invalid("invalid_price", "a market order takes no price: leave price out or use \"type\": \"limit\""))
        }
        _ => {}
    }
    if let Some(c) = &body.client_order_id {
        if c.len() > 256 {
            return Err(invalid("invalid_client_order_id", "client_order_id is at most 256 bytes"));
        }
        // Refused, not read as none: an id means "place this once", and an order stored
        // without one would be placed again by the same request retried.
        if c.is_empty() {
            return Err(invalid(
                "invalid_client_order_id",
                "client_order_id is empty: give the id a retry of this order repeats, or leave it out for an order without one",
            ));
        }
    }
    let (user, instrument) = tokio::join!(resolve_user(&app, caller, body.user_id.as_deref()), instrument(&app, &symbol));
    let (user, instrument) = (user?, instrument?);
    let new = NewOrder {
        order_id: format!("ord_{}", uuid::Uuid::now_v7().simple()),
        user_id: user.user_id.clone(),
        symbol,
        side: body.side,
        kind,
        time_in_force: body.time_in_force.unwrap_or(TimeInForce::Gtc),
        price: body.price,
        quantity: body.quantity,
        client_order_id: body.client_order_id,
    };
    let timeout = Duration::from_secs(app.settings.get().trading.order_timeout_s.max(1));
    let placement = |reply| LaneCmd::Place(Placement { order: new, user_active: user.is_active(), instrument, reply });
    // The lane finishes the placement whether or not anyone still waits for it.
    let answer = match tokio::time::timeout(timeout, app.placements.call(placement)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::timeout(format!(
            "placement took longer than trading.order_timeout_s = {}s; it goes on in the background: check the order by its client_order_id",
            timeout.as_secs()
        ))),
    };
    crate::daemon::metrics::get().order_place_duration.observe(started.elapsed().as_secs_f64());
    answer
}

/// Reserve, match, settle, record. Before the match an error aborts the order cleanly.
async fn advance(app: &App, new: &NewOrder, user_active: bool, instrument: &Instrument) -> Result<Order, ApiError> {
    let reserved = match reserve(app, new, user_active, instrument).await {
        Ok(r) => r,
        Err(e) => {
            abort(app, &new.order_id, &e).await;
            return Err(e);
        }
    };
    trade(app, new, instrument, reserved).await
}

/// The pre-trade checks and the hold.
async fn reserve(app: &App, new: &NewOrder, user_active: bool, instrument: &Instrument) -> Result<risk::Reserved, ApiError> {
    let req = reserve_request(new, user_active, instrument);
    app.risk.call(|reply| risk::Cmd::Reserve { req, reply }).await
}

/// What risk checks and holds for a new order.
pub fn reserve_request(new: &NewOrder, user_active: bool, instrument: &Instrument) -> risk::ReserveRequest {
    risk::ReserveRequest {
        order_id: new.order_id.clone(),
        user_id: new.user_id.clone(),
        user_active,
        instrument: instrument.clone(),
        side: new.side,
        kind: new.kind,
        price: new.price,
        quantity: new.quantity,
    }
}

/// What the book matches for a new order that risk reserved (`budget`: a market buy's).
pub fn match_request(new: &NewOrder, instrument: &Instrument, budget: Option<Decimal>) -> MatchRequest {
    match_on(new, instrument.tick, instrument.lot, budget)
}

/// [`match_request`] on a grid given without its instrument (the lane's redo has it from
/// the journal).
pub fn match_on(new: &NewOrder, tick: Decimal, lot: Decimal, budget: Option<Decimal>) -> MatchRequest {
    MatchRequest {
        order_id: new.order_id.clone(),
        user_id: new.user_id.clone(),
        symbol: new.symbol.clone(),
        side: new.side,
        kind: new.kind,
        time_in_force: new.time_in_force,
        price: new.price,
        quantity: new.quantity,
        tick,
        lot,
        budget,
    }
}

/// Match (an error still aborts cleanly: the book has not traded), then settle and record.
async fn trade(app: &App, new: &NewOrder, instrument: &Instrument, reserved: risk::Reserved) -> Result<Order, ApiError> {
    let req = match_request(new, instrument, reserved.budget);
    let result = match app.trading.call(|reply| trading::Cmd::Match { req, reply }).await {
        Ok(r) => r,
        Err(e) => {
            abort(app, &new.order_id, &e).await;
            return Err(e);
        }
    };
    finish(app, &new.user_id, &new.symbol, new.side, result).await
}

/// The order never reached the book: release whatever it holds and mark it rejected.
async fn abort(app: &App, order_id: &str, why: &ApiError) {
    let release = risk::SettleRequest { trades: vec![], release: vec![order_id.to_string()] };
    if app.risk.call(|reply| risk::Cmd::Settle { req: release, reply }).await.is_err() {
        return; // left unfinished: recovery completes it
    }
    let (code, message) = (why.code.to_string(), why.message.clone());
    let _ = app.orders.call(|reply| Cmd::Reject { order_id: order_id.to_string(), code, message, reply }).await;
}

/// Retries a step that must happen (the book has traded) while its service restarts.
async fn must<T, F, Fut>(mut step: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let deadline = std::time::Instant::now() + FINISH_RETRY;
    loop {
        match step().await {
            Err(e) if e.status == 503 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// What risk must do for a match (taker `user_id` on `side`): move cash and assets for
/// each trade, and release the holds of the orders the match closed.
pub fn settlement(user_id: &str, symbol: &str, side: Side, result: &MatchResult) -> risk::SettleRequest {
    let base = base_asset(symbol).to_string();
    let trades: Vec<risk::SettleTrade> = result
        .fills
        .iter()
        .map(|f| {
            let (buy, sell) = match side {
                Side::Buy => ((result.order_id.clone(), user_id.to_string()), (f.maker_order_id.clone(), f.maker_user_id.clone())),
                Side::Sell => ((f.maker_order_id.clone(), f.maker_user_id.clone()), (result.order_id.clone(), user_id.to_string())),
            };
            risk::SettleTrade {
                trade_id: f.trade_id.clone(),
                symbol: symbol.to_string(),
                base_asset: base.clone(),
                price: f.price,
                quantity: f.quantity,
                buy_order_id: buy.0,
                buy_user_id: buy.1,
                sell_order_id: sell.0,
                sell_user_id: sell.1,
            }
        })
        .collect();
    let mut release: Vec<String> = result.fills.iter().filter(|f| f.maker_remaining.is_zero()).map(|f| f.maker_order_id.clone()).collect();
    if !result.rests {
        release.push(result.order_id.clone());
    }
    risk::SettleRequest { trades, release }
}

/// Settles the trades of a placement's match (taker `user_id` on `side`) and records the
/// outcome (recovery's step; the lane does both for its own placements).
async fn finish(app: &App, user_id: &str, symbol: &str, side: Side, result: MatchResult) -> Result<Order, ApiError> {
    let req = settlement(user_id, symbol, side, &result);
    let settle = || {
        let req = req.clone();
        app.risk.call(|reply| risk::Cmd::Settle { req, reply })
    };
    let record = || {
        let result = result.clone();
        app.orders.call(|reply| Cmd::Record { result, settled: false, reply })
    };
    // A placement records (stage `settling`) and settles side by side, then marks itself
    // done; recovery replays any order still `settling`, and both steps are idempotent.
    let (settled, recorded) = tokio::join!(must(settle), must(record));
    settled?;
    let order = recorded?;
    app.orders.tell(Cmd::Settled { order_id: order.order_id.clone() });
    Ok(order)
}

/// The order a caller may act on: a trader's own only (others look absent: 404).
pub async fn visible_order(app: &App, caller: &Caller, order_id: &str) -> Result<Order, ApiError> {
    let o = app.orders.call(|reply| Cmd::Get { order_id: order_id.to_string(), reply }).await?;
    if caller.is_trader() && caller.bound_user() != Some(o.user_id.as_str()) {
        return Err(ApiError::not_found("order", order_id));
    }
    Ok(o)
}

/// Whose orders a caller may cancel or amend: a trader only their own user's (the lane
/// answers 404 for another's, as [`visible_order`] does); others any (`None`).
fn owner(caller: &Caller) -> Option<String> {
    caller.is_trader().then(|| caller.bound_user().unwrap_or_default().to_string())
}

pub(crate) fn not_open(o: &Order) -> ApiError {
    ApiError::conflict(
        "order_not_open",
        format!("order {} is already {}; only new or partially filled orders can change", o.order_id, o.status.as_str()),
    )
}

pub async fn cancel(app: &App, caller: &Caller, order_id: &str) -> Result<Order, ApiError> {
    caller.require_trading()?;
    let owner = owner(caller);
    app.placements.call(|reply| LaneCmd::Cancel(Cancel::One { order_id: order_id.to_string(), owner, reply })).await
}

/// Releases the holds of orders taken out of the book and marks them cancelled.
async fn finish_cancel(app: &App, cancelled: Vec<Cancelled>) -> Result<Vec<Order>, ApiError> {
    if cancelled.is_empty() {
        return Ok(vec![]);
    }
    let req = risk::SettleRequest { trades: vec![], release: cancelled.iter().map(|c| c.order_id.clone()).collect() };
    must(|| {
        let req = req.clone();
        app.risk.call(|reply| risk::Cmd::Settle { req, reply })
    })
    .await?;
    must(|| {
        let cancelled = cancelled.clone();
        app.orders.call(|reply| Cmd::Cancelled { cancelled, reply })
    })
    .await
}

pub async fn cancel_all(app: &App, caller: &Caller, user: Option<&str>, symbol: Option<String>) -> Result<Vec<Order>, ApiError> {
    caller.require_trading()?;
    if let Some(symbol) = &symbol {
        instrument(app, symbol).await?;
    }
    let user_id = match (caller.bound_user(), user) {
        (None, None) => None,
        _ => Some(resolve_user(app, caller, user).await?.user_id.clone()),
    };
    app.placements.call(|reply| LaneCmd::Cancel(Cancel::Many { user_id, symbol, reply })).await
}

pub async fn amend(app: &App, caller: &Caller, order_id: &str, body: AmendOrder) -> Result<Order, ApiError> {
    caller.require_trading()?;
    if body.price.is_none() && body.quantity.is_none() {
        return Err(invalid("invalid_request", "send a new \"price\" and/or \"quantity\" (the order's new total quantity)"));
    }
    // Every other check needs the order as the lane has it, and is the lane's
    // (`lane::Amend`): it also refuses another trader's order before any check could tell
    // it exists.
    let owner = owner(caller);
    let (order_id, price, quantity) = (order_id.to_string(), body.price, body.quantity);
    let amend = |reply| LaneCmd::Amend(Amend { order_id, owner, price, quantity, reply });
    app.placements.call(amend).await
}

/// At start-up: finishes every saga a crash interrupted, and every cancel whose order left
/// the book but is still open in the orders store. The daemon is not ready until then.
pub async fn recover(app: Arc<App>) {
    resume(&app).await;
    app.recovered.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("recovery finished");
    crate::daemon::trim_heap();
    after_lane_restarts(app).await;
}

/// The trading lane restarts after a failed commit (a full disk, say) and may leave its
/// last batch half-way: orders accepted but not matched, or matched but not recorded.
/// Each time it is running again, finish them as start-up recovery does. (The lane
/// finishes every batch it starts, so nothing it is working on looks unfinished here;
/// and every step is idempotent.)
async fn after_lane_restarts(app: Arc<App>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut shutdown = app.shutdown.subscribe();
    let mut seen = app.orders.status.restarts.load(Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
        let now = app.orders.status.restarts.load(Relaxed);
        if now != seen && app.orders.status.state() == crate::services::actor::State::Running {
            seen = now;
            tracing::info!("the trading lane restarted: finishing what it left");
            resume(&app).await;
        }
    }
}

async fn resume(app: &Arc<App>) {
    let unfinished = loop {
        match app.orders.call(Cmd::Unfinished).await {
            Ok(u) => break u,
            // At start-up the lane is still opening its stores: ask again as soon as it
            // runs. A lane that runs and still fails is given 50 ms before the next try.
            Err(_) if app.orders.status.state() != crate::services::actor::State::Running => {
                let _ = tokio::time::timeout(Duration::from_millis(50), app.orders.status.until_running()).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    if !unfinished.is_empty() {
        tracing::info!(orders = unfinished.len(), "resuming interrupted order placements");
    }
    for o in unfinished {
        let new = NewOrder {
            order_id: o.order_id.clone(),
            user_id: o.user_id.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            kind: o.kind,
            time_in_force: o.time_in_force,
            price: o.price,
            quantity: o.quantity,
            client_order_id: o.client_order_id.clone(),
        };
        let user = must(|| app.users.call(|r| users::Cmd::Get(o.user_id.clone(), r))).await;
        let instrument = must(|| instrument(app, &o.symbol)).await;
        let outcome = match (user, instrument) {
            (Ok(u), Ok(i)) => advance(app, &new, u.is_active(), &i).await,
            (Err(e), _) | (_, Err(e)) => {
                abort(app, &o.order_id, &e).await;
                Err(e)
            }
        };
        if let Err(e) = outcome {
            tracing::info!(order_id = %o.order_id, error = %e, "an interrupted placement ended rejected");
        }
    }
    // Open orders that the book no longer holds were being cancelled: finish that. The
    // lane found the candidates when it opened (`Lane::check_live_orders`).
    let Ok(stray) = must(|| app.placements.call(LaneCmd::StrayCancels)).await else { return };
    if !stray.is_empty() {
        tracing::info!(orders = stray.len(), "finishing interrupted cancels");
        let _ = finish_cancel(app, stray).await;
    }
}
