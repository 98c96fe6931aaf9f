//! `GET/PUT /api/config`: the live configuration; PUT validates, persists and applies.

use crate::api::ApiError;
use crate::daemon::app::App;
use crate::daemon::http::{ok, ApiResult, Caller, NoQuery, SettingsBody};
use crate::services::config::service::Cmd;
use crate::services::config::settings::Settings;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

pub async fn show(State(app): State<Arc<App>>, caller: Caller, _: NoQuery) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(ok(app.config.call(Cmd::Show).await?))
}

/// The keys saved with a value the running daemon does not have yet: they apply at its
/// next start (`{"durability": {"saved": "full", "running": "normal"}}`; `{}` when none).
/// Under `symbols`, the entries not traded as written, each beside the instrument's
/// terms (`null` for a symbol not listed yet).
pub async fn pending(State(app): State<Arc<App>>, caller: Caller, _: NoQuery) -> ApiResult<Response> {
    caller.require_reader()?;
    let saved = app.settings.get();
    let mut pending = saved.pending_restart(&app.started_with);
    // `[[symbols]]` entries the market does not trade as written: a new one waits for the
    // next start; one that names an existing instrument with other terms never applies.
    let instruments = app.market.call(crate::services::market::Cmd::Symbols).await?;
    let (mut entries, mut running) = (Vec::new(), Vec::new());
    for s in &saved.symbols {
        let trades = instruments.iter().find(|i| i.symbol == s.symbol);
        if trades.is_some_and(|i| s.same_terms(i)) {
            continue;
        }
        entries.push(serde_json::to_value(s).unwrap_or_default());
        running.push(trades.map(|i| serde_json::to_value(i).unwrap_or_default()).unwrap_or_default());
    }
    if !entries.is_empty() {
        pending.insert("symbols".into(), serde_json::json!({"saved": entries, "running": running}));
    }
    Ok(ok(serde_json::Value::Object(pending)))
}

/// Flattens `{"risk": {"max_open_orders": 3}}` and `{"risk.max_open_orders": 3}` alike.
/// An object under a list key (`symbols`, `notify.webhooks`) is one entry of that list,
/// not more keys: `{"symbols": {"symbol": "X-USD", …}}` adds one instrument, as
/// `agt symbol add` does, rather than being refused as an unknown key `symbols.lot`.
/// A number as its client sent it (`decimal::SENT_NUMBER`) is a value, not more keys.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) if !prefix.is_empty() || !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if v.is_object() && !Settings::is_list(&key) && crate::api::decimal::sent_number(v).is_none() {
                    flatten(&key, v, out);
                } else {
                    out.push((key, v.clone()));
                }
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

pub async fn set(State(app): State<Arc<App>>, caller: Caller, SettingsBody(body): SettingsBody) -> ApiResult<Response> {
    caller.require_admin()?;
    if !body.is_object() {
        return Err(ApiError::invalid("invalid_request", "send a JSON object of dotted keys, e.g. {\"log.level\": \"debug\"}").into());
    }
    let mut changes = Vec::new();
    flatten("", &body, &mut changes);
    if changes.is_empty() || changes.iter().all(|(key, _)| key.is_empty()) {
        return Err(ApiError::invalid("invalid_request", "nothing to set: send keys and values, e.g. {\"log.level\": \"debug\"}").into());
    }
    refuse_changed_instruments(&app, &changes).await?;
    if changes.iter().any(|(key, _)| key.starts_with("notify.")) {
        // Notify reads its webhooks as they stand when an event reaches it: first let it
        // handle every event published so far, so that a webhook changed here applies
        // to the events after the change, not to older ones its feed had not handed over.
        // One too far behind refuses the change (503), as a rule's does.
        app.feed_caught_up(&app.feeds.notify).await.require_current("notify")?;
        let _ = app.notify.call(crate::services::notify::Cmd::LastEventSeq).await;
    }
    Ok(ok(app.config.call(|r| Cmd::Set(changes, r)).await?))
}

/// An instrument's terms never change once it exists (`agt symbol add` of an existing
/// symbol is 409 too): orders rest on its tick and lot, and start-up seeds `[[symbols]]`
/// only where the market has no such instrument. A `symbols` change that would give an
/// existing instrument other terms is refused (409 `instrument_exists`) instead of being
/// saved, announced and never applied. Entries the change leaves as they were are not
/// looked at; a malformed change is the config service's to refuse.
async fn refuse_changed_instruments(app: &App, changes: &[(String, serde_json::Value)]) -> Result<(), ApiError> {
    if !changes.iter().any(|(key, _)| key == "symbols" || key.starts_with("symbols.")) {
        return Ok(());
    }
    let live = app.settings.get();
    let mut next = (*live).clone();
    let entries: Vec<(&str, &serde_json::Value)> = changes.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if next.set_many(&entries).is_err() {
        return Ok(());
    }
    let changed: Vec<_> = next.symbols.iter().filter(|s| !live.symbols.contains(s)).collect();
    if changed.is_empty() {
        return Ok(());
    }
    let existing = app.market.call(crate::services::market::Cmd::Symbols).await?;
    for s in changed {
        let Some(i) = existing.iter().find(|i| i.symbol == s.symbol) else { continue };
        if let Some(why) = s.refusal(i) {
            return Err(ApiError::conflict("instrument_exists", why));
        }
    }
    Ok(())
}
