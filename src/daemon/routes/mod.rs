//! The router: every route of DESIGN.md §4, and the layers every request passes through
//! (metrics, the transport guard, the audit of commands).
//!
//! The same router serves the socket and TCP; the [`Transport`] a connection came in on
//! decides who the caller is.

mod accounts;
mod audit;
mod config;
mod events;
mod market;
mod notify;
mod orders;
mod risk;
mod system;
mod tokens;
mod users;

use crate::api::ApiError;
use crate::daemon::app::App;
use crate::daemon::http::{Caller, ErrorCode, Failure, Transport};
use crate::daemon::metrics::{self, EndpointLabels, ErrorLabels, HttpLabels};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self as mw, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::metrics))
        .route("/api/services", get(system::services))
        .route("/api/services/{name}/restart", post(system::restart))
        .route("/api/services/{name}/crash", post(system::crash))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{id}", get(users::get).put(users::update))
        .route("/api/users/{id}/deposits", post(accounts::deposit))
        .route("/api/users/{id}/withdrawals", post(accounts::withdraw))
        .route("/api/users/{id}/account", get(accounts::account))
        .route("/api/risk/limits", get(risk::limits).put(risk::set_limits))
        .route("/api/risk/halt", post(risk::halt))
        .route("/api/risk/resume", post(risk::resume))
        .route("/api/risk/state", get(risk::state))
        .route("/api/risk/holds", get(risk::holds))
        .route("/api/tokens", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/events", get(events::events))
        .route("/api/audit", get(audit::list))
        .route("/api/audit/verify", get(audit::verify))
        .route("/api/config", get(config::show).put(config::set))
        .route("/api/notifications", get(notify::list))
        .route("/api/notifications/rules", get(notify::rules).post(notify::add_rule))
        .route("/api/notifications/rules/{id}", axum::routing::delete(notify::remove_rule))
        .route("/api/symbols", get(market::list_symbols).post(market::add_symbol))
        .route("/api/symbols/{symbol}", get(market::get_symbol))
        .route("/api/trades/{symbol}", get(market::trades))
        .route("/api/market/import", post(market::import))
        .route("/api/market/{symbol}", get(market::quote))
        .route("/api/market/{symbol}/candles", get(market::candles))
        .route("/api/orders", get(orders::list).post(orders::place))
        .route("/api/trading/orders", axum::routing::post(orders::place_seed))
        .route("/api/orders/cancel-all", post(orders::cancel_all))
        .route("/api/orders/{id}", get(orders::get).delete(orders::cancel).patch(orders::amend))
        .route("/api/trading/orders/{id}", get(orders::get))
        .route("/api/orders/{id}/status", axum::routing::put(orders::set_status))
        .route("/api/book/{symbol}", get(orders::book))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(mw::from_fn_with_state(app.clone(), front))
        .with_state(app)
}

async fn not_found(req: Request) -> Failure {
    Failure(ApiError::new(404, "not_found", format!("no route {} {}; see DESIGN.md §4 for the API", req.method(), req.uri().path())))
}

async fn method_not_allowed(req: Request) -> Failure {
    Failure(ApiError::new(405, "method_not_allowed", format!("{} is not allowed on {}", req.method(), req.uri().path())))
}

/// The service a route belongs to, for the seed's `service` metric label.
fn service_of(path: &str) -> &'static str {
    let seg = path.strip_prefix("/api/").unwrap_or("").split('/').next().unwrap_or("");
    match seg {
        "users" => "users",
        "tokens" => "auth",
        "orders" | "trading" => "orders",
        "book" => "trading",
        "symbols" | "market" | "trades" => "market",
        "risk" => "risk",
        "events" => "bus",
        "audit" => "audit",
        "config" => "config",
        "notifications" => "notify",
        _ => "health",
    }
}

/// Every request passes here, in one layer (each `from_fn` layer costs a boxed future
/// and a clone of the service under it, per request): it is counted and timed
/// ([`observe`]), its caller decided ([`guard`]), and if it is a command, audited
/// ([`audit_commands`]).
async fn front(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = endpoint_of(&req);
    let method = method_label(req.method());
    let resp = match guard(&app, req) {
        Ok(req) => audit_commands(&app, req, next).await,
        Err(refused) => refused.into_response(),
    };
    observe(endpoint, method, started, &resp);
    resp
}

/// The route a request matched, as a label: one shared copy of each route's pattern
/// (the router has a few dozen), so that labelling a request allocates nothing.
fn endpoint_of(req: &Request) -> &'static str {
    static SEEN: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    let Some(path) = req.extensions().get::<MatchedPath>().map(|p| p.as_str()) else { return "unmatched" };
    if let Some(known) = SEEN.read().unwrap().iter().find(|p| **p == path) {
        return known;
    }
    let mut seen = SEEN.write().unwrap();
    if let Some(known) = seen.iter().find(|p| **p == path) {
        return known;
    }
    let leaked: &'static str = Box::leak(path.to_string().into_boxed_str());
    seen.push(leaked);
    leaked
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts and times every request (seed metric names), and its errors by code.
fn observe(endpoint: &'static str, method: &'static str, started: Instant, resp: &Response) {
    let service = service_of(endpoint);
    let m = metrics::get();
    m.http_requests.get_or_create(&HttpLabels { service, endpoint, method }).inc();
    m.http_duration.get_or_create(&EndpointLabels { service, endpoint }).observe(started.elapsed().as_secs_f64());
    if resp.status().is_client_error() || resp.status().is_server_error() {
        let error_type = resp.extensions().get::<ErrorCode>().map(|c| c.0.clone()).unwrap_or_else(|| resp.status().as_u16().to_string());
        m.http_errors.get_or_create(&ErrorLabels { service, endpoint, error_type }).inc();
    }
}

fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
}

/// Decides who is calling. On the socket everyone is the owner (admin), but a request
/// carrying `Origin` or `Referer` came from a browser page and is refused. On TCP,
/// everything under `/api` needs a valid bearer token.
fn guard(app: &App, mut req: Request) -> Result<Request, Failure> {
    let transport = req.extensions().get::<Transport>().copied().unwrap_or(Transport::Tcp);
    match transport {
        Transport::Socket => {
            if req.headers().contains_key(header::ORIGIN) || req.headers().contains_key(header::REFERER) {
                return Err(Failure(ApiError::forbidden("requests from web pages (with Origin or Referer) are refused on the socket")));
            }
            req.extensions_mut().insert(Caller::Socket);
        }
        Transport::Tcp => {
            if !is_public(req.uri().path()) {
                let bearer = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                    .map(str::trim);
                let Some(secret) = bearer.filter(|s| !s.is_empty()) else {
                    return Err(Failure(ApiError::unauthorized(
                        "this route needs `Authorization: Bearer <token>`; create one with `agt token create`",
                    )));
                };
                match app.tokens.verify(secret) {
                    Some(token) => {
                        req.extensions_mut().insert(Caller::Token(token));
                    }
                    None => return Err(Failure(ApiError::unauthorized("the bearer token is unknown or revoked"))),
                }
            }
        }
    }
    Ok(req)
}

/// Records every command (any method but GET/HEAD under `/api`) in the audit log, and
/// answers only once that record is durable: an acknowledged command always has its
/// audit record. It is appended to audit's journal of commands before the handler runs
/// (`services::audit::CommandLog`); without one (durability "full", audit not running)
/// it is sent to audit before the handler runs, so the two overlap, and the answer
/// waits for audit's commit. The outcome of the command is recorded by the events it
/// causes.
async fn audit_commands(app: &App, req: Request, next: Next) -> Response {
    let is_command = !matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path().starts_with("/api/");
    if !is_command {
        return next.run(req).await;
    }
    let actor = req.extensions().get::<Caller>().map(|c| c.actor()).unwrap_or_else(|| "anonymous".into());
    let action = format!("{} {}", req.method(), req.uri().path());
    let detail = serde_json::json!({"query": req.uri().query()});
    // Journalled (and so durable) at once, or failing that, appended and committed.
    let (_in_flight, others) = app.command_log.enter();
    let journalled = match app.command_log.stage(&app.audit, actor.clone(), action.clone(), detail.to_string()) {
        Some(Ok(ticket)) => {
            // With other commands in flight, the other requests this worker has ready
            // stage theirs meanwhile, and the first to write puts them all in the
            // journal with one `write`.
            if others {
                tokio::task::yield_now().await;
            }
            Some(app.command_log.write_through(&app.audit, ticket))
        }
        other => other.map(|staged| staged.map(|_| ())),
    };
    match journalled {
        Some(Ok(())) => return next.run(req).await,
        Some(Err(e)) => {
            return Failure(ApiError::new(
                503,
                "service_unavailable",
                format!("the command was not audited, so it was not run: {}", e.message),
            ))
            .into_response()
        }
        None => {}
    }
    let logged = app.audit.send(|r| crate::services::audit::Cmd::Append { actor, action, detail, reply: Some(r) });
    let resp = next.run(req).await;
    let logged = match logged {
        Ok(rx) => rx.await.unwrap_or_else(|_| Err(ApiError::unavailable("audit"))),
        Err(e) => Err(e),
    };
    match logged {
        Ok(()) => resp,
        // Nothing may be acknowledged without its audit record.
        Err(e) => Failure(ApiError::new(
            503,
            "service_unavailable",
            format!("the command was not audited, so it is not acknowledged: {}", e.message),
        ))
        .into_response(),
    }
}
