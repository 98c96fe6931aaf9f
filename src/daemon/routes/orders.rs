//! Orders and books: placement, queries, cancel, amend, mass cancel (DESIGN.md §4),
//! including the seed-compatible routes.

use crate::api::quote::quoted;
use crate::api::{AmendOrder, ApiError, CancelAll, OrderStatus, PlaceOrder, SeedPlaceOrder};
use crate::daemon::app::App;
use crate::daemon::http::{created, ok, page_limit, parse_json, query_number, ApiResult, Caller, Json, NoQuery, Path, Query, RawBody};
use crate::services::orders::{saga, Cmd, ListFilter};
use crate::services::{market, trading};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

pub async fn place(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<PlaceOrder>) -> ApiResult<Response> {
    let (status, order) = saga::place(app, &caller, body).await?;
    Ok(if status == 201 { created(order) } else { ok(order) })
}

/// `POST /api/trading/orders`, the seed's route: [`place`], ignoring keys it does not know.
pub async fn place_seed(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<SeedPlaceOrder>) -> ApiResult<Response> {
    place(State(app), caller, Json(body.into())).await
}

pub async fn get(State(app): State<Arc<App>>, caller: Caller, _: NoQuery, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(saga::visible_order(&app, &caller, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    user_id: Option<String>,
    symbol: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

pub async fn list(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    // A blank filter is refused, not dropped: a script's unset variable would list
    // everyone's orders, or every symbol's, as if they were the ones it asked for.
    for (name, value, what) in [("user_id", &q.user_id, "user"), ("symbol", &q.symbol, "symbol")] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            let code = if name == "user_id" { "invalid_user" } else { "invalid_symbol" };
            return Err(
                ApiError::invalid(code, format!("{name} is empty: name the {what} whose orders to list, or leave {name} out")).into()
            );
        }
    }
    let user_id = match (caller.bound_user(), q.user_id.as_deref()) {
        (None, None) => None,
        (_, named) => Some(saga::resolve_user(&app, &caller, named).await?.user_id.clone()),
    };
    let statuses = match q.status.as_deref().unwrap_or("open") {
        "open" => vec![OrderStatus::New, OrderStatus::PartiallyFilled],
        "all" | "" => vec![],
        list => list
            .split(',')
            .map(|s| {
                OrderStatus::parse(s.trim()).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_status",
                        format!(
                            "status must be open, all, or one of new, partially_filled, filled, cancelled, rejected, expired; got {}",
                            quoted(s)
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let limit = page_limit(q.limit.as_deref(), 100, 10_000)?;
    let symbol = q.symbol;
    // A symbol the market does not list is 404 `unknown_symbol`, as an unknown user is: a
    // typo (`aapl`) must not read as "no orders".
    if let Some(symbol) = &symbol {
        saga::instrument(&app, symbol).await?;
    }
    let filter = ListFilter { user_id, symbol, statuses, limit };
    Ok(ok(app.orders.call(|reply| Cmd::List { filter, reply }).await?))
}

pub async fn cancel(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(saga::cancel(&app, &caller, &id).await?))
}

#[derive(Deserialize, Default)]
struct StatusBody {
    status: Option<String>,
}

#[derive(Deserialize)]
pub struct StatusQuery {
    status: Option<String>,
}

/// The seed's `PUT /api/orders/{id}/status`: only `cancelled` is accepted (= cancel).
/// The status comes from the body or `?status=`; both may say it, but not differently
/// (which one meant it?). Other keys of the body (`"reason"`) are ignored, as the seed's
/// gateway ignored them.
pub async fn set_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StatusQuery>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) { None } else { parse_json::<StatusBody>(&body)?.status };
    let status = match (from_body, q.status) {
        (Some(body), Some(query)) if body != query => {
            return Err(ApiError::invalid(
                "invalid_status",
                format!(
                    "the body says status {} and the query ?status= says {}: send the status once, or the same in both",
                    quoted(&body),
                    quoted(&query)
                ),
            )
            .into())
        }
        (body, query) => body.or(query),
    };
    let status = status.ok_or_else(|| ApiError::invalid("invalid_status", "send {\"status\": \"cancelled\"} or ?status=cancelled"))?;
    if status != "cancelled" {
        // Check the order exists first, so an unknown id is still a 404.
        saga::visible_order(&app, &caller, &id).await?;
        return Err(ApiError::rejected(
            "invalid_status_transition",
            match OrderStatus::parse(&status) {
                Some(_) => format!("only \"cancelled\" can be set by a client; {} is decided by the matching engine", quoted(&status)),
                None => format!("{} is not an order status; the only one a client can set is \"cancelled\"", quoted(&status)),
            },
        )
        .into());
    }
    Ok(ok(saga::cancel(&app, &caller, &id).await?))
}

pub async fn amend(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AmendOrder>,
) -> ApiResult<Response> {
    Ok(ok(saga::amend(&app, &caller, &id, body).await?))
}

pub async fn cancel_all(State(app): State<Arc<App>>, caller: Caller, uri: axum::http::Uri, RawBody(body): RawBody) -> ApiResult<Response> {
    crate::daemon::http::no_query(&uri, Some(r#"{"user_id": "…", "symbol": "…"}, each optional"#))?;
    let req: CancelAll = if body.iter().all(u8::is_ascii_whitespace) { CancelAll::default() } else { parse_json(&body)? };
    // A blank user or symbol is refused, not read as "every user" or "every symbol": a
    // script's unset variable would cancel everything.
    if req.symbol.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err(ApiError::invalid(
            "invalid_symbol",
            "symbol is empty: name the symbol whose orders to cancel, or leave symbol out to cancel every symbol's",
        )
        .into());
    }
    if req.user_id.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(ApiError::invalid(
            "invalid_user",
            "user_id is empty: name the user whose orders to cancel, or leave user_id out to cancel every user's",
        )
        .into());
    }
    Ok(ok(saga::cancel_all(&app, &caller, req.user_id.as_deref(), req.symbol).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookQuery {
    /// As text, read by `query_number`: `-1` is told the range, not a parser's error.
    depth: Option<String>,
}

pub async fn book(State(app): State<Arc<App>>, Path(symbol): Path<String>, Query(q): Query<BookQuery>) -> ApiResult<Response> {
    app.market.call(|r| market::Cmd::Symbol(symbol.clone(), r)).await?;
    // Levels per side; a deeper ask gets the 1000 there are room for (a ladder, not a list a
    // script could mistake for the whole book: each level says its price).
    let depth = query_number("depth", q.depth.as_deref(), 1, u64::MAX)?.map_or(10, |d| d.min(1000) as usize);
    Ok(ok(app.trading.call(|reply| trading::Cmd::Book { symbol, depth, reply }).await?))
}
