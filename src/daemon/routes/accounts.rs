//! `/api/users/{id}/deposits`, `/withdrawals` and `/account` (DESIGN.md §4): cash and
//! asset balances, kept by the risk service.

use super::users::visible_user;
use crate::api::{ApiError, Transfer};
use crate::daemon::app::App;
use crate::daemon::http::{ok, ApiResult, Caller, Json, NoQuery, Path};
use crate::services::{market, risk, users};
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
    let grid = traded(&app, &asset, Way::Deposit).await?;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Deposit { user_id, asset, amount, grid, reply }).await?))
}

/// Which way a transfer goes, for [`traded`]'s messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Deposit,
    Withdrawal,
}

/// The cash every instrument is priced in (DESIGN.md §2): deposited before any symbol is
/// listed, too.
const CASH: &str = "USD";

/// A deposit must be of an asset some listed instrument trades, as an exchange refuses a
/// coin it does not support: funds in any other asset (a typo, `APPL`) could never be
/// traded or settle anything. An instrument's own name (`BTC-USD`, which trades `BTC`) is
/// refused with the asset meant (422 `invalid_asset`), any other untraded asset with the
/// list of those that are (400 `unknown_asset`); once its instrument is listed (`agt
/// symbol add`, `[[symbols]]`) the asset takes deposits. A malformed name is left to
/// risk's own check (400 `invalid_asset`, saying the rule). A withdrawal is held to the
/// same rule, so that a typo is told as the deposit's is, not as 422
/// `insufficient_funds` ("only 0 is available"), unless the account holds the asset
/// ([`withdraw`]).
///
/// Answers the most decimal places a trade moves the asset by (`risk::checks::grid_places`,
/// the finest over the instruments that trade it), which the deposit must leave room for.
async fn traded(app: &App, asset: &str, way: Way) -> Result<u32, ApiError> {
    if !risk::checks::valid_name(asset) {
        return Ok(0);
    }
    // The market's read model, or its service before the model has loaded.
    let listed: Vec<crate::api::Instrument> = match app.instruments.get() {
        Some(model) => model.values().cloned().collect(),
        None => app.market.call(market::Cmd::Symbols).await?,
    };
    let trading: Vec<&crate::api::Instrument> = listed.iter().filter(|i| i.base == asset || i.quote == asset).collect();
    if asset == CASH || !trading.is_empty() {
        return Ok(risk::checks::finest_grid(trading, asset));
    }
    let verb = match way {
        Way::Deposit => "deposit",
        Way::Withdrawal => "withdraw",
    };
    if let Some(i) = listed.iter().find(|i| i.symbol == asset) {
        return Err(ApiError::rejected(
            "invalid_asset",
            format!(
                "{asset} is an instrument, not an asset: it trades {} against {}; {verb} {} or {} instead",
                i.base, i.quote, i.base, i.quote
            ),
        ));
    }
    let mut assets: Vec<&str> = listed.iter().flat_map(|i| [i.base.as_str(), i.quote.as_str()]).chain([CASH]).collect();
    assets.sort_unstable();
    assets.dedup();
    const SHOWN: usize = 20;
    let more = assets.len().saturating_sub(SHOWN);
    let mut list = assets[..assets.len().min(SHOWN)].join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more (`agt symbol list`)"));
    }
    let message = match way {
        Way::Deposit => format!(
            "no listed instrument trades {asset}, so it takes no deposits (the assets traded: {list}); list an instrument that trades it first (`agt symbol add {asset} --tick T --lot L`, or {asset}-USD)"
        ),
        Way::Withdrawal => format!(
            "no listed instrument trades {asset} and the account holds none of it, so there is none to withdraw (the assets traded: {list})"
        ),
    };
    Err(ApiError::invalid("unknown_asset", message))
}

/// Admin only; only what is available (not held by open orders) can be withdrawn. An
/// asset no listed instrument trades is refused as a deposit of it is ([`traded`]),
/// unless the account holds some: what an account holds can always leave, though no
/// instrument trades it any more (a balance from an agt that took deposits of any asset,
/// or a `market.db` restored from before its instrument was listed).
pub async fn withdraw(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Transfer>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user_id = user_id(&app, id).await?;
    let Transfer { asset, amount } = body;
    if let Err(untraded) = traded(&app, &asset, Way::Withdrawal).await {
        // Asked only on the way to a refusal: a withdrawal of a traded asset costs no read.
        let account = app.risk.call(|reply| risk::Cmd::Account { user_id: user_id.clone(), reply }).await?;
        if !account.balances.iter().any(|b| b.asset == asset && !b.total.is_zero()) {
            return Err(untraded.into());
        }
    }
    Ok(ok(app.risk.call(|reply| risk::Cmd::Withdraw { user_id, asset, amount, reply }).await?))
}

/// Readers, and a trader for its own user.
pub async fn account(State(app): State<Arc<App>>, caller: Caller, _: NoQuery, Path(id): Path<String>) -> ApiResult<Response> {
    let user = visible_user(&app, &caller, &id).await?;
    Ok(ok(app.risk.call(|reply| risk::Cmd::Account { user_id: user.user_id, reply }).await?))
}
