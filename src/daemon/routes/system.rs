//! `/health`, `/ready`, `/metrics` and the supervisor's view (`/api/services`).

use crate::api::quote::quoted;
use crate::api::{ApiError, Health};
use crate::daemon::app::App;
use crate::daemon::http::{ApiResult, Caller, NoQuery, Path};
use crate::daemon::metrics::ServiceLabel;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

pub async fn health(State(app): State<Arc<App>>) -> Json<Health> {
    let services = app.supervisor.list().into_iter().map(|s| (s.name, s.state)).collect();
    Json(Health {
        service: "agt".into(),
        // A full disk degrades the daemon even while its services run idle.
        status: if app.supervisor.all_running() && !crate::services::disk_full::now() { "healthy" } else { "degraded" }.into(),
        timestamp: crate::api::now_rfc3339(),
        version: app.version.into(),
        build: crate::daemon::BUILD.into(),
        uptime_s: app.started.elapsed().as_secs(),
        services,
    })
}

pub async fn ready(State(app): State<Arc<App>>) -> Response {
    let not_ready = |message: String| crate::daemon::http::Failure(ApiError::new(503, "not_ready", message)).into_response();
    if !app.recovered.load(std::sync::atomic::Ordering::Acquire) {
        return not_ready("recovering interrupted orders".into());
    }
    if !app.supervisor.all_running() {
        let down: Vec<_> = app.supervisor.list().into_iter().filter(|s| s.state != "running").map(|s| s.name).collect();
        // Why, when it is the disk: a probe's reader should not go looking for a crash.
        let why = if crate::services::disk_full::now() {
            "; the disk holding the daemon's home is full: free space there, agt resumes by itself"
        } else {
            ""
        };
        return not_ready(format!("services not running: {}{why}", down.join(", ")));
    }
    if crate::services::disk_full::now() {
        // Every service runs (idle), but the last write found the disk full.
        return not_ready(
            "the disk holding the daemon's home is full (the last write failed for want of space): free space there, agt resumes by itself"
                .into(),
        );
    }
    (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response()
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.supervisor.export_gauges();
    let metrics = crate::daemon::metrics::get();
    metrics.bus_backlog.set(app.bus.backlog() as i64);
    let stored = app.bus.last_seq();
    for (service, feed) in app.feeds.each() {
        let seen = feed.seen.load(std::sync::atomic::Ordering::Acquire);
        metrics.feed_behind.get_or_create(&ServiceLabel { service }).set(stored.saturating_sub(seen) as i64);
    }
    let text = crate::daemon::metrics::get().encode();
    // prometheus-client writes OpenMetrics (`# EOF`, a counter's family without `_total`):
    // said so, since a 0.0.4 parser reads those families' TYPE and HELP as no one's.
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

pub async fn services(State(app): State<Arc<App>>, caller: Caller, _: NoQuery) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(crate::daemon::http::ok(app.supervisor.list()))
}

fn known(app: &App, name: &str) -> Result<(), ApiError> {
    if app.supervisor.has(name) {
        Ok(())
    } else {
        Err(ApiError::new(404, "unknown_service", format!("no service {}; known: {}", quoted(name), app.supervisor.names().join(", "))))
    }
}

pub async fn restart(State(app): State<Arc<App>>, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    known(&app, &name)?;
    let before = app.supervisor.list().into_iter().find(|s| s.name == name).map(|s| s.restarts).unwrap_or(0);
    app.supervisor.restart(&name);
    // Answer once the new incarnation runs, so `agt service restart` means "restarted".
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = app.supervisor.list().into_iter().find(|s| s.name == name);
        if let Some(s) = s {
            if s.restarts > before && s.state == "running" || std::time::Instant::now() > deadline {
                return Ok(crate::daemon::http::ok(s));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

pub async fn crash(State(app): State<Arc<App>>, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    if !app.settings.get().debug.fault_injection {
        return Err(ApiError::forbidden("fault injection is off; set debug.fault_injection = true to use it").into());
    }
    known(&app, &name)?;
    let state = app.supervisor.list().into_iter().find(|s| s.name == name).map(|s| s.state).unwrap_or_default();
    if state != "running" {
        return Err(
            ApiError::conflict("service_not_running", format!("the {name} service is {state}, so there is nothing to crash")).into()
        );
    }
    app.supervisor.crash(&name);
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"service": name, "crash": "requested"}))).into_response())
}
