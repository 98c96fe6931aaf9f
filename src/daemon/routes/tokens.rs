//! `/api/tokens`: bearer tokens for TCP clients; the secret is answered once.

use crate::api::quote::quoted;
use crate::api::{ApiError, NewToken, Role};
use crate::daemon::app::App;
use crate::daemon::http::{created, ok, ApiResult, Caller, Json, Path, Query};
use crate::services::auth::{Cmd, Create, Listed};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// `GET /api/tokens?status=live|revoked|all`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
}

pub async fn create(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<NewToken>) -> ApiResult<Response> {
    caller.require_admin()?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("invalid_role", format!("role must be admin, trader or viewer, got {}", quoted(&body.role))))?;
    let user = match body.user_id.as_deref().filter(|u| !u.is_empty()) {
        Some(key) => Some(app.users.call(|r| crate::services::users::Cmd::Get(key.to_string(), r)).await?),
        None => None,
    };
    let user_id = match (role, user) {
        (Role::Trader, None) => {
            return Err(ApiError::invalid("user_required", "a trader token is bound to one user: pass user_id (or --user)").into());
        }
        // It could not act until the user is enabled; say so now rather than at first use.
        (Role::Trader, Some(user)) if user.status != "active" => {
            return Err(ApiError::conflict(
                "user_disabled",
                format!(
                    "user {} is {}: enable it first (`agt user enable {}`), then create its token",
                    user.username, user.status, user.username
                ),
            )
            .into());
        }
        (Role::Trader, Some(user)) => Some(user.user_id),
        // An admin or viewer token reads every user: a binding would look like a scope
        // it does not have.
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "user_not_allowed",
                format!(
                    "only a trader token is bound to a user; {} token acts for every user: drop user_id (or --user)",
                    role.with_article()
                ),
            )
            .into());
        }
        (_, None) => None,
    };
    let name = body.name.unwrap_or_else(|| format!("{}-token", role.as_str()));
    if name.len() > 256 {
        return Err(ApiError::invalid("invalid_name", "a token name is at most 256 bytes").into());
    }
    let token = app.auth.call(|r| Cmd::Create(Create { role, user_id, name }, r)).await?;
    Ok(created(token))
}

/// The live tokens unless `status` asks for the revoked ones too (`all`) or alone
/// (`revoked`): a revoked token stays in the store for good, and a daemon that makes a
/// token per job had every one of them in each answer (211 KB after 1.4 k, most of it
/// tokens nobody can use), where the live ones are what a reader acts on.
pub async fn list(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    caller.require_admin()?;
    let which = match q.status.as_deref().map(str::trim) {
        None | Some("live") => Listed::Live,
        Some("revoked") => Listed::Revoked,
        Some("all") => Listed::All,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_status",
                format!("status must be live (the default), revoked or all; got {}", quoted(other)),
            )
            .into());
        }
    };
    Ok(ok(app.auth.call(|r| Cmd::List(which, r)).await?))
}

pub async fn revoke(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(ok(app.auth.call(|r| Cmd::Revoke(id, r)).await?))
}
