//! `/api/users/{id}/deposits`, `/withdrawals` and `/account` (DESIGN.md §4): cash and
//! asset balances, kept by the risk service.

use super::users::visible_user;
use crate::api::{ApiError, Transfer};
use crate::daemon::app::App;
use crate::daemon::http::{ok, ApiResult, Caller, Json, Path};
use crate::services::{risk, users};
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

/// The user id behind an id or a username (404 if there is none).
async fn user_id(app: &App, key: String) -> Result<String, crate::api::ApiError> {
    Ok(app.users.call(|r| users::Cmd::Get(key, r)).await?.user_id)
}

/// Admin only; answers the account after the deposit.
pub async fn deposit(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Transfer>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user_id = user_id(&app, id).await?;
    let Transfer { asset, amount } = body;
    not_an_instrument(&app, &asset).await?;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Deposit { user_id, asset, amount, reply }).await?))
}

/// A deposit names an asset; `BTC-USD` is the instrument that trades `BTC`. Funds
/// deposited under an instrument's name could never be traded or settle anything, so that
/// mistake is refused (422 `invalid_asset`) with the asset meant. A symbol that is its own
/// base asset (`AAPL`, `BRK.B`) is an asset as well.
async fn not_an_instrument(app: &App, asset: &str) -> Result<(), ApiError> {
    let Ok(i) = crate::services::orders::saga::instrument(app, asset).await else { return Ok(()) };
    if i.base == asset {
        return Ok(());
    }
    Err(ApiError::rejected(
        "invalid_asset",
        format!(
            "{asset} is an instrument, not an asset: it trades {} against {}; deposit {} or {} instead",
            i.base, i.quote, i.base, i.quote
        ),
    ))
}

/// Admin only; only what is available (not held by open orders) can be withdrawn.
pub async fn withdraw(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Transfer>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user_id = user_id(&app, id).await?;
    let Transfer { asset, amount } = body;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Withdraw { user_id, asset, amount, reply }).await?))
}

/// Readers, and a trader for its own user.
pub async fn account(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let user = visible_user(&app, &caller, &id).await?;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Account { user_id: user.user_id, reply }).await?))
}
