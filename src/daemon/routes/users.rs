//! `/api/users`: create, read, update (DESIGN.md §4, seed-compatible).

use crate::api::{ApiError, NewUser, User, UserUpdate};
use crate::daemon::app::App;
use crate::daemon::http::{created, ok, page_limit, ApiResult, Caller, Json, NoQuery, Path, Query};
use crate::services::users::Cmd;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

pub async fn create(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<NewUser>) -> ApiResult<Response> {
    caller.require_admin()?;
    let user = app.users.call(|r| Cmd::Create(body, r)).await?;
    Ok(created(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<String>,
}

/// Every user, oldest first; `?limit=N` the first N, checked as every list's `limit` is
/// (1 to 10000, else 400 `invalid_limit`). There is no default cut: users are few, and a
/// list cut silently would pass for the whole one. The limit goes into the store's
/// query, which reads only the users it answers.
///
/// A trader's token lists its own user alone, as `GET /api/orders` lists its own orders:
/// that user is already its to read (`GET /api/users/{id}`), and the list is how a client
/// holding only the token (the dashboard) learns whose account it shows.
pub async fn list(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let limit = q.limit.as_deref().map(|raw| page_limit(Some(raw), MAX_LIMIT, MAX_LIMIT)).transpose()?;
    if let Some(own) = caller.bound_user() {
        return Ok(ok(vec![visible_user(&app, &caller, own).await?]));
    }
    // A trader bound to no user is refused here, as everywhere.
    caller.require_reader()?;
    Ok(ok(app.users.call(|reply| Cmd::List { limit, reply }).await?))
}

/// The largest `?limit=` of `GET /api/users`, as for the other lists.
const MAX_LIMIT: usize = 10_000;

/// A user the caller may see: a trader sees only its own user (others are 404, not 403,
/// so a trader cannot probe which users exist).
pub async fn visible_user(app: &App, caller: &Caller, key: &str) -> Result<User, ApiError> {
    let user = app.users.call(|r| Cmd::Get(key.to_string(), r)).await?;
    if caller.is_trader() && caller.bound_user() != Some(user.user_id.as_str()) {
        return Err(ApiError::not_found("user", key));
    }
    Ok(user)
}

pub async fn get(State(app): State<Arc<App>>, caller: Caller, _: NoQuery, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(visible_user(&app, &caller, &id).await?))
}

pub async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UserUpdate>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(ok(app.users.call(|r| Cmd::Update(id, body, r)).await?))
}
