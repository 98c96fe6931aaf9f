//! Instruments and market data: `/api/symbols`, `/api/trades/{symbol}`,
//! `/api/market/{symbol}` and its candles (DESIGN.md §4).
//!
//! Market data is readable by every role, traders included; only adding an instrument
//! needs an admin.

use crate::api::NewInstrument;
use crate::daemon::app::App;
use crate::daemon::http::{created, ok, ApiResult, Caller, Json, Query};
use crate::services::market::Cmd;
use crate::services::trading;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// The most trades or candles one request returns.
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
pub struct LimitQuery {
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
pub struct CandlesQuery {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn list_symbols(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Response> {
    Ok(ok(app.market.call(Cmd::Symbols).await?))
}

pub async fn add_symbol(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<NewInstrument>) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(created(app.market.call(|r| Cmd::AddSymbol(body, r)).await?))
}

pub async fn get_symbol(State(app): State<Arc<App>>, _caller: Caller, Path(symbol): Path<String>) -> ApiResult<Response> {
    Ok(ok(app.market.call(|r| Cmd::Symbol(symbol, r)).await?))
}

/// The tape, newest first: `?limit=` (default 100, at most 10000).
pub async fn trades(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(symbol): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    Ok(ok(app.market.call(|reply| Cmd::Trades { symbol, limit, reply }).await?))
}

/// Last price and 24h figures from the market service, best bid and ask from the book.
pub async fn quote(State(app): State<Arc<App>>, _caller: Caller, Path(symbol): Path<String>) -> ApiResult<Response> {
    let mut quote = app.market.call(|reply| Cmd::Quote { symbol: symbol.clone(), reply }).await?;
    // The quote is still worth answering while the trading service restarts: without a book.
    if let Ok(book) = app.trading.call(|reply| trading::Cmd::Book { symbol, depth: 1, reply }).await {
        quote.best_bid = book.bids.first().map(|l| l.0);
        quote.best_ask = book.asks.first().map(|l| l.0);
    }
    Ok(ok(quote))
}

/// OHLCV bars, oldest first: `?interval=` (1s 1m 5m 1h 1d, default 1m), `?limit=`
/// (the newest N, default 100, at most 10000).
pub async fn candles(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(symbol): Path<String>,
    Query(q): Query<CandlesQuery>,
) -> ApiResult<Response> {
    let interval = q.interval.unwrap_or_else(|| "1m".into());
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    Ok(ok(app.market.call(|reply| Cmd::Candles { symbol, interval, limit, reply }).await?))
}
