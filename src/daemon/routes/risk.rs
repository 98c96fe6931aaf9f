//! `/api/risk/*` (DESIGN.md §4): pre-trade limits, trading halts and the holds.
//!
//! Global limits are configuration (`risk.*`): `PUT /api/risk/limits` without `user_id`
//! goes to the config service, exactly as `PUT /api/config` would. A user's own limits
//! live in the risk service.

use super::users::visible_user;
use crate::api::quote::quoted;
use crate::api::{ApiError, HaltRequest, RiskLimits};
use crate::daemon::app::App;
use crate::daemon::http::{ok, parse_json, ApiResult, Caller, NoQuery, Query, RawBody, SettingsBody};
use crate::services::risk::checks::LIMIT_KEYS;
use crate::services::{config, risk, users};
use axum::extract::FromRequest;
use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// `?user_id=`; anything else is refused, because without a user these routes act on
/// every user (`PUT /api/risk/limits?userid=alice` changed the global limits).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    #[serde(default)]
    pub user_id: Option<String>,
}

impl UserQuery {
    /// The user asked for, or `None` for every user; a blank `user_id` is a mistake (a
    /// script's empty variable), not a request for the global limits.
    fn user(self) -> Result<Option<String>, ApiError> {
        match self.user_id {
            Some(u) if u.trim().is_empty() => Err(ApiError::invalid(
                "invalid_user",
                "user_id is empty: name a user (username or id), or leave user_id out for the global limits",
            )),
            other => Ok(other),
        }
    }
}

/// The global limits, or a user's effective limits (readers; a trader its own).
pub async fn limits(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<UserQuery>) -> ApiResult<Response> {
    let user_id = match q.user()? {
        Some(key) => Some(visible_user(&app, &caller, &key).await?.user_id),
        None => {
            caller.require_reader()?;
            None
        }
    };
    Ok(ok(app.risk.call(|reply| risk::Cmd::Limits { user_id, reply }).await?))
}

/// Reads a limits body: an object of known limit names, each with a value of its type,
/// or for a user's own limits `null`, which drops the user's value (the names returned).
fn parse_limits(body: &serde_json::Value, for_user: bool) -> Result<(RiskLimits, Vec<String>), ApiError> {
    let known = LIMIT_KEYS.join(", ");
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid(
            "invalid_request",
            format!("send a JSON object of limits, e.g. {{\"max_open_orders\": 50}}; the limits are {known}"),
        ));
    };
    if obj.is_empty() {
        return Err(ApiError::invalid(
            "invalid_request",
            format!("send at least one limit, e.g. {{\"max_open_orders\": 50}}; the limits are {known}"),
        ));
    }
    // `null`, or `"default"` as the CLI's `agt risk set KEY default --user U` says it.
    let clears = |v: &serde_json::Value| v.is_null() || v.as_str() == Some("default");
    for (k, v) in obj {
        if !LIMIT_KEYS.contains(&k.as_str()) {
            return Err(ApiError::invalid("invalid_limit", format!("unknown limit {}; the limits are {known}", quoted(k))));
        }
        if clears(v) && !for_user {
            return Err(ApiError::invalid(
                "invalid_limit",
                format!("{k} needs a value: a global limit always has one (null or `default` removes a user's own limit, with ?user_id=)"),
            ));
        }
    }
    // The global limits are `risk.*` config keys: each value is read as `agt config set`
    // reads it (a number or its text: `"5"` as `5`), and refused in its words ("expected a
    // whole number >= 1"), not serde's ("expected u32"); a user's limit the same way,
    // each alone, as the global one it stands in for.
    let mut limits = RiskLimits::default();
    for (k, v) in obj.iter().filter(|(_, v)| !clears(v)) {
        let mut read = crate::services::config::settings::Settings::defaults();
        read.set(&format!("risk.{k}"), v).map_err(|e| {
            // Named as the body names it (`max_open_orders`), not as the config key.
            let message = match e {
                crate::services::config::settings::ConfigError::Invalid { message, .. } => format!("{k}: {message}"),
                other => other.to_string(),
            };
            ApiError::invalid("invalid_limit", message)
        })?;
        let r = &read.risk;
        match k.as_str() {
            "max_open_orders" => limits.max_open_orders = Some(r.max_open_orders),
            "max_order_quantity" => limits.max_order_quantity = Some(r.max_order_quantity),
            "max_order_notional" => limits.max_order_notional = Some(r.max_order_notional),
            "max_orders_per_second" => limits.max_orders_per_second = Some(r.max_orders_per_second),
            "price_band_pct" => limits.price_band_pct = Some(r.price_band_pct),
            "allow_short" => limits.allow_short = Some(r.allow_short),
            other => return Err(ApiError::invalid("invalid_limit", format!("unknown limit {}; the limits are {known}", quoted(other)))),
        }
    }
    let clear: Vec<String> = obj.iter().filter(|(_, v)| clears(v)).map(|(k, _)| k.clone()).collect();
    risk::checks::validate_limits(&limits)?;
    Ok((limits, clear))
}

/// Admin: with `?user_id=` sets that user's own limits; without, the global ones (config).
pub async fn set_limits(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<UserQuery>,
    SettingsBody(body): SettingsBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user = q.user()?;
    let (limits, clear) = parse_limits(&body, user.is_some())?;
    if let Some(key) = user {
        let user_id = app.users.call(|r| users::Cmd::Get(key, r)).await?.user_id;
        return Ok(ok(app.risk.call(|reply| risk::Cmd::SetLimits { user_id, limits, clear, reply }).await?));
    }
    let changes: Vec<(String, serde_json::Value)> =
        body.as_object().map(|m| m.iter().map(|(k, v)| (format!("risk.{k}"), v.clone())).collect()).unwrap_or_default();
    app.config.call(|r| config::service::Cmd::Set(changes, r)).await?;
    // The config service announces it (CONFIG_CHANGED and RISK_LIMIT_CHANGED).
    Ok(ok(app.risk.call(|reply| risk::Cmd::Limits { user_id: None, reply }).await?))
}

/// A `HaltRequest` body, where an empty body means "everywhere"; a symbol must be one
/// the market lists (404 `unknown_symbol`), so that a typo is not a halt of nothing.
async fn halt_body(app: &App, req: Request) -> Result<HaltRequest, ApiError> {
    let halt = halt_request(req).await?;
    // A malformed name is risk's to refuse (400 `invalid_symbol`), a well-formed one the
    // market does not list is 404.
    if let Some(symbol) = halt.symbol.as_deref().filter(|s| risk::checks::valid_name(s)) {
        crate::services::orders::saga::instrument(app, symbol).await?;
    }
    Ok(halt)
}

async fn halt_request(req: Request) -> Result<HaltRequest, ApiError> {
    crate::daemon::http::no_query(req.uri(), Some(r#"{"symbol": "AAPL"}, or {} for every symbol"#))?;
    let RawBody(bytes) = RawBody::from_request(req, &()).await.map_err(|e| e.0)?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(HaltRequest::default());
    }
    parse_json(&bytes)
}

pub async fn halt(State(app): State<Arc<App>>, caller: Caller, req: Request) -> ApiResult<Response> {
    caller.require_admin()?;
    let symbol = halt_body(&app, req).await?.symbol;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Halt { symbol, reply }).await?))
}

pub async fn resume(State(app): State<Arc<App>>, caller: Caller, req: Request) -> ApiResult<Response> {
    caller.require_admin()?;
    let symbol = halt_body(&app, req).await?.symbol;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Resume { symbol, reply }).await?))
}

/// `{"halted", "halted_symbols"}` (readers).
pub async fn state(State(app): State<Arc<App>>, caller: Caller, _: NoQuery) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(ok(app.risk.call(risk::Cmd::TradingState).await?))
}

/// Every open hold, or one user's (readers): what open orders have set aside.
pub async fn holds(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<UserQuery>) -> ApiResult<Response> {
    caller.require_reader()?;
    let user_id = match q.user()? {
        Some(key) => Some(app.users.call(|r| users::Cmd::Get(key, r)).await?.user_id),
        None => None,
    };
    let mut holds = app.risk.call(risk::Cmd::Holds).await?;
    if let Some(u) = user_id {
        holds.retain(|h| h.user_id == u);
    }
    Ok(ok(holds))
}
