//! Instruments and market data: `/api/symbols`, `/api/trades/{symbol}`,
//! `/api/market/{symbol}` and its candles, and `/api/market/import` (DESIGN.md §4).
//!
//! Market data is readable by every role, traders included; adding an instrument and
//! importing history need an admin.

use crate::api::quote::quoted;
use crate::api::{ApiError, NewInstrument, Role};
use crate::daemon::app::{App, Freshness};
use crate::daemon::http::{created, ok, page_limit, parse_json, read_body, ApiResult, Caller, Json, NoQuery, Path, Query};
use crate::services::market::{import, Cmd};
use crate::services::{risk, trading};
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// The most trades or candles one request returns.
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    #[serde(default)]
    limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandlesQuery {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

pub async fn list_symbols(State(app): State<Arc<App>>, _caller: Caller, _: NoQuery) -> ApiResult<Response> {
    Ok(ok(app.market.call(Cmd::Symbols).await?))
}

/// Lists an instrument. One whose trades could not settle exactly with what the accounts
/// already hold is refused (422 `max_supply`, risk's `Cmd::Room`): a lot and tick of many
/// decimal places make every trade move USD and the base asset by that many places, and
/// agt never rounds money. Listed anyway, each of its orders would be refused, and USD
/// deposits would be capped for every account by its grid. A deposit between this check
/// and the listing can still pass it: the symbol's orders are then refused as before.
pub async fn add_symbol(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<NewInstrument>) -> ApiResult<Response> {
    caller.require_admin()?;
    // Market validates again (and refuses a symbol that exists): this is for the grid.
    if let Ok(inst) = crate::services::market::validate_instrument(body.clone()) {
        if app.market.call(|r| Cmd::Symbol(inst.symbol.clone(), r)).await.is_err() {
            let (lot, notional) = risk::checks::grid_places(&inst);
            let grids = vec![(inst.base.clone(), lot), (inst.quote.clone(), notional)];
            app.risk.call(|reply| risk::Cmd::Room { symbol: inst.symbol.clone(), grids, reply }).await?;
        }
    }
    Ok(created(app.market.call(|r| Cmd::AddSymbol(body, r)).await?))
}

pub async fn get_symbol(State(app): State<Arc<App>>, _caller: Caller, _: NoQuery, Path(symbol): Path<String>) -> ApiResult<Response> {
    Ok(ok(app.market.call(|r| Cmd::Symbol(symbol, r)).await?))
}

/// Market data is built from bus events: before answering, wait (briefly) until the
/// market service has seen every event published so far, so a client that has just
/// traded reads its own trade on the tape. The feed skips events market does not use, so
/// "seen" is the feed's progress, then one round trip behind what it delivered.
async fn caught_up(app: &App) -> Freshness {
    let freshness = app.feed_caught_up(&app.feeds.market).await;
    let _ = app.market.call(Cmd::LastEventSeq).await;
    freshness
}

/// The tape, newest first: `?limit=` (default 100, 1 to 10000).
pub async fn trades(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(symbol): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit.as_deref(), 100, MAX_LIMIT)?;
    let freshness = caught_up(&app).await;
    let mut trades = app.market.call(|reply| Cmd::Trades { symbol, limit, reply }).await?;
    if caller.role() == Role::Trader {
        // The tape is market data: a trader sees every trade, not whose orders made it.
        for t in &mut trades {
            t.buy_order_id.clear();
            t.sell_order_id.clear();
        }
    }
    Ok(freshness.mark("market trades", ok(trades)))
}

/// Last price and 24h figures from the market service, best bid and ask from the book.
pub async fn quote(State(app): State<Arc<App>>, _caller: Caller, _: NoQuery, Path(symbol): Path<String>) -> ApiResult<Response> {
    let freshness = caught_up(&app).await;
    let mut quote = app.market.call(|reply| Cmd::Quote { symbol: symbol.clone(), reply }).await?;
    // The quote is still worth answering while the trading service restarts: without a book.
    if let Ok(book) = app.trading.call(|reply| trading::Cmd::Book { symbol, depth: 1, reply }).await {
        quote.best_bid = book.bids.first().map(|l| l.0);
        quote.best_ask = book.asks.first().map(|l| l.0);
    }
    Ok(freshness.mark("market quote", ok(quote)))
}

/// OHLCV bars, oldest first: `?interval=` (1s 1m 5m 1h 1d, default 1m), `?limit=`
/// (default 100, 1 to 10000), and `?from=` / `?to=` (RFC 3339, Unix seconds or a date;
/// bars that start in `[from, to)`): the first `limit` from `from` when it is given,
/// else the newest `limit` before `to`.
pub async fn candles(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(symbol): Path<String>,
    Query(q): Query<CandlesQuery>,
) -> ApiResult<Response> {
    let interval = q.interval.unwrap_or_else(|| "1m".into());
    let limit = page_limit(q.limit.as_deref(), 100, MAX_LIMIT)?;
    let time = |name: &str, raw: Option<&String>| {
        raw.map(|t| import::parse_time_named(name, t.trim()).map_err(|e| ApiError::invalid("invalid_query", e))).transpose()
    };
    let (from, to) = (time("from", q.from.as_ref())?, time("to", q.to.as_ref())?);
    if let (Some(f), Some(t), Some(raw_from), Some(raw_to)) = (from, to, &q.from, &q.to) {
        if f >= t {
            // In the user's own words (a date, RFC 3339 or seconds), not the seconds they
            // were read as: "got from 1714608000" does not say which one to move.
            let (raw_from, raw_to) = (quoted(raw_from.trim()), quoted(raw_to.trim()));
            return Err(ApiError::invalid(
                "invalid_query",
                format!("from must be before to (bars that start in [from, to)); got from {raw_from} and to {raw_to}"),
            )
            .into());
        }
    }
    let freshness = caught_up(&app).await;
    let span = crate::services::market::Span { from, to, limit };
    Ok(freshness.mark("market candles", ok(app.market.call(|reply| Cmd::Candles { symbol, interval, span, reply }).await?)))
}

/// The largest import body: about half a million bars.
pub const MAX_IMPORT_BODY: usize = 64 << 20;

#[derive(Deserialize)]
struct ImportBody {
    csv: String,
}

/// `POST /api/market/import` (admin): historical OHLCV bars, all or none. The body is the
/// CSV itself with `Content-Type: text/csv` (or `text/plain`), or JSON `{"csv": "<the
/// file>"}` (what `agt market import` sends; any other type is refused with 415 before it
/// gets here, `http::json_body`). Answers
/// `{"imported", "symbols", "last": {symbol: close}, "last_price_updated": [symbol]}`, or
/// 400 `invalid_csv` listing every bad row by line. Where an import set a symbol's last
/// price, risk is told before the answer, so the price band applies to the next order.
/// How long start-up waits for market and risk to run before it anchors the price band.
const ANCHOR_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// At start-up, before the daemon is ready: gives risk, as its price band's anchor,
/// every last price that is an imported close. An import commits in market and is then
/// handed to risk ([`import`]); a crash in between left market showing the imported last
/// price and risk with no anchor (or an older one), so orders far from it were accepted.
/// Market has taken every trade published by then, so an imported close it still shows
/// as the last price is newer than every trade.
pub async fn anchor_imported_prices(app: &App) {
    // At start-up the services are still loading their stores: wait for both (a service
    // that does not come up is reported by the supervisor; recovery goes on without this).
    let market_up = tokio::time::timeout(ANCHOR_WAIT, app.market.status.until_running()).await;
    let risk_up = tokio::time::timeout(ANCHOR_WAIT, app.risk.status.until_running()).await;
    if market_up.is_err() || risk_up.is_err() {
        return tracing::warn!("market or risk is not running: the imported last prices were not given to the price band");
    }
    let _ = app.feed_caught_up(&app.feeds.market).await;
    let lasts = match app.market.call(Cmd::ImportedLast).await {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e.message, "could not read the imported last prices for the price band"),
    };
    for (symbol, price, as_of_us) in lasts {
        let s = symbol.clone();
        if let Err(e) = app.risk.call(|reply| risk::Cmd::SetLastPrice { symbol, price, as_of_us, reply }).await {
            tracing::warn!(symbol = %s, error = %e.message, "could not give risk an imported last price");
        }
    }
}

pub async fn import(State(app): State<Arc<App>>, caller: Caller, req: Request) -> ApiResult<Response> {
    caller.require_admin()?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let raw_csv = content_type.starts_with("text/csv") || content_type.starts_with("text/plain");
    let bytes = read_body(req.into_body(), MAX_IMPORT_BODY).await.map_err(|e| {
        e.unwrap_or_else(|| {
            ApiError::new(413, "payload_too_large", format!("an import takes at most {} MiB: split the file", MAX_IMPORT_BODY >> 20))
        })
    })?;
    let text = if raw_csv {
        String::from_utf8(bytes.to_vec()).map_err(|e| ApiError::invalid("invalid_csv", format!("the CSV is not UTF-8 text: {e}")))?
    } else {
        parse_json::<ImportBody>(&bytes)
            .map_err(|e| {
                ApiError::invalid(
                    if e.code == "invalid_json" { "invalid_json" } else { "invalid_request" },
                    format!("{}; send {{\"csv\": \"<the CSV file>\"}}, or the CSV itself with Content-Type: text/csv", e.message),
                )
            })?
            .csv
    };
    // Parsing a large file is CPU work: off the runtime's workers, and outside the actor.
    let now_secs = chrono::Utc::now().timestamp();
    let rows = tokio::task::spawn_blocking(move || import::parse(&text, now_secs))
        .await
        .map_err(|e| ApiError::new(500, "internal", format!("the CSV parser failed: {e}")))??;
    // Compare the bars with every trade published so far, not only those the market
    // service has already taken from the bus: a market too far behind refuses (503).
    caught_up(&app).await.require_current("market")?;
    let summary = app.market.call(|reply| Cmd::Import { rows, reply }).await?;
    for (symbol, price, as_of_us) in summary.new_last_prices.iter().cloned() {
        app.risk.call(|reply| risk::Cmd::SetLastPrice { symbol, price, as_of_us, reply }).await.map_err(|e| {
            ApiError::new(
                e.status,
                e.code.clone(),
                format!(
                    "the {} bars were imported, but the risk service could not take the new last prices ({}); import the file again (it replaces the same bars) to apply the price band",
                    summary.imported, e.message
                ),
            )
        })?;
    }
    Ok(ok(summary))
}
