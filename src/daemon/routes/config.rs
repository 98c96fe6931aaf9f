//! `GET/PUT /api/config`: the live configuration; PUT validates, persists and applies.

use crate::api::ApiError;
use crate::daemon::app::App;
use crate::daemon::http::{ok, ApiResult, Caller, Json};
use crate::services::config::service::Cmd;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

pub async fn show(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(ok(app.config.call(Cmd::Show).await?))
}

/// The keys saved with a value the running daemon does not have yet: they apply at its
/// next start (`{"durability": {"saved": "full", "running": "normal"}}`; `{}` when none).
pub async fn pending(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(ok(serde_json::Value::Object(app.settings.get().pending_restart(&app.started_with))))
}

/// Flattens `{"risk": {"max_open_orders": 3}}` and `{"risk.max_open_orders": 3}` alike.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) if !prefix.is_empty() || !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if v.is_object() {
                    flatten(&key, v, out);
                } else {
                    out.push((key, v.clone()));
                }
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

pub async fn set(State(app): State<Arc<App>>, caller: Caller, Json(body): Json<serde_json::Value>) -> ApiResult<Response> {
    caller.require_admin()?;
    if !body.is_object() {
        return Err(ApiError::invalid("invalid_request", "send a JSON object of dotted keys, e.g. {\"log.level\": \"debug\"}").into());
    }
    let mut changes = Vec::new();
    flatten("", &body, &mut changes);
    if changes.is_empty() || changes.iter().all(|(key, _)| key.is_empty()) {
        return Err(ApiError::invalid("invalid_request", "nothing to set: send keys and values, e.g. {\"log.level\": \"debug\"}").into());
    }
    if changes.iter().any(|(key, _)| key.starts_with("notify.")) {
        // Notify reads its webhooks as they stand when an event reaches it: first let it
        // handle every event published so far, so that a webhook changed here applies
        // to the events after the change, not to older ones its feed had not handed over.
        app.feed_caught_up(&app.feeds.notify).await;
        let _ = app.notify.call(crate::services::notify::Cmd::LastEventSeq).await;
    }
    Ok(ok(app.config.call(|r| Cmd::Set(changes, r)).await?))
}
