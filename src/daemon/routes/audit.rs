//! `/api/audit` and `/api/audit/verify`.

use crate::api::Role;
use crate::daemon::app::App;
use crate::daemon::http::{ok, page_limit, query_number, ApiResult, Caller, NoQuery, Query};
use crate::services::audit::{Cmd, Filter};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// As text, read by `query_number`: `-1` is told the range, not a parser's error.
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

pub async fn list(State(app): State<Arc<App>>, caller: Caller, Query(q): Query<AuditQuery>) -> ApiResult<Response> {
    caller.require_reader()?;
    let since = query_number("since", q.since.as_deref(), 0, u64::MAX)?;
    let limit = page_limit(q.limit.as_deref(), 100, 100_000)?;
    let filter = Filter { actor: q.actor, hide_tokens: caller.role() == Role::Viewer };
    // Events reach audit through its feed: a client lists what it has just done.
    let freshness = app.feed_caught_up(&app.feeds.audit).await;
    Ok(freshness.mark("audit", ok(app.audit.call(|reply| Cmd::List { since, filter, limit, reply }).await?)))
}

pub async fn verify(State(app): State<Arc<App>>, caller: Caller, _: NoQuery) -> ApiResult<Response> {
    caller.require_reader()?;
    let freshness = app.feed_caught_up(&app.feeds.audit).await;
    Ok(freshness.mark("audit verify", ok(app.audit.call(Cmd::Verify).await?)))
}
