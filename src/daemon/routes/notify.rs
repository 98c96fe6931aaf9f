//! `/api/notifications`: the webhook delivery log, and webhook rules added at run time.
//!
//! Reading is for admins and viewers; adding and removing rules is admin-only. Secrets
//! are never answered back (shown as `"***"`).

use crate::api::quote::quoted;
use crate::api::{ApiError, NewWebhookRule};
use crate::daemon::app::App;
use crate::daemon::http::{created, ok, page_limit, ApiResult, Caller, Json, NoQuery, Path, Query};
use crate::services::notify::Cmd;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Deliveries, newest first: `?limit=` (default 100, 1 to 10000), `?status=pending|sent|failed`.
/// A delivery is queued when notify handles the event that causes it, so the list first
/// waits for notify's feed as `/api/audit` waits for audit's: a client reads the delivery
/// its trade caused. A list still behind after the wait is answered marked
/// (`X-Agt-Behind`), not refused: the log is worth reading on a loaded machine too.
pub async fn list(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    caller.require_reader()?;
    let limit = page_limit(q.limit.as_deref(), 100, 10_000)?;
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty() && *s != "all") {
        None => None,
        Some(s @ ("pending" | "sent" | "failed")) => Some(s.to_string()),
        Some(other) => {
            return Err(
                ApiError::invalid("invalid_status", format!("status must be pending, sent, failed or all, got {}", quoted(other))).into()
            )
        }
    };
    let freshness = app.feed_caught_up(&app.feeds.notify).await;
    Ok(freshness.mark("notifications", ok(app.notify.call(|reply| Cmd::List { limit, status, reply }).await?)))
}

pub async fn rules(State(app): State<Arc<App>>, caller: Caller, _: NoQuery) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(ok(app.notify.call(Cmd::Rules).await?))
}

/// Body `{"url", "events", "secret"?}` → 201 the rule (its secret masked).
pub async fn add_rule(State(app): State<Arc<App>>, caller: Caller, Json(rule): Json<NewWebhookRule>) -> ApiResult<Response> {
    caller.require_admin()?;
    caught_up(&app).await?;
    Ok(created(app.notify.call(|reply| Cmd::AddRule { rule, reply }).await?))
}

/// Notify matches an event against the rules as they stand when the event reaches it:
/// first let it handle every event published so far, so that a rule added or removed
/// applies to the events after the change, as a webhook changed by `PUT /api/config`
/// does. Without it, events a busy notify had not reached yet were matched against the
/// new rules: a rule removed lost them (neither delivered nor `NOTIFICATION_FAILED`), and
/// a rule added was sent events from before it existed.
/// A notify that does not catch up within the wait refuses the change (503) rather than
/// apply it to events older than its answer.
async fn caught_up(app: &App) -> Result<(), ApiError> {
    app.feed_caught_up(&app.feeds.notify).await.require_current("notify")?;
    let _ = app.notify.call(Cmd::LastEventSeq).await;
    Ok(())
}

pub async fn remove_rule(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    caught_up(&app).await?;
    Ok(ok(app.notify.call(|reply| Cmd::RemoveRule { id, reply }).await?))
}
