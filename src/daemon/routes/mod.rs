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
mod masking;
mod notify;
mod orders;
mod risk;
mod system;
mod tokens;
mod users;

use crate::api::{ApiError, Role, TokenInfo};
use crate::daemon::app::App;
use crate::daemon::http::{Caller, ErrorCode, Failure, Transport};
use crate::daemon::metrics::{self, EndpointLabels, ErrorLabels, HttpLabels};
use crate::daemon::refusals::{Ended, Verdict};
use crate::daemon::server::PeerAddr;
use crate::services::audit::Staged;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self as mw, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
pub use market::anchor_imported_prices;
use serde_json::value::RawValue;
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
        .route("/api/config/pending", get(config::pending))
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
    Failure(ApiError::new(
        404,
        "not_found",
        format!("no route {} {}; see DESIGN.md §4 for the API", req.method(), crate::api::quote::bare(req.uri().path())),
    ))
}

async fn method_not_allowed(req: Request) -> Failure {
    Failure(ApiError::new(
        405,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), crate::api::quote::bare(req.uri().path())),
    ))
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
    let peer = req.extensions().get::<PeerAddr>().copied();
    let resp = match guard(&app, req) {
        Ok(req) => audit_commands(&app, req, next).await,
        Err(refused) => {
            if refused.0.status == 401 {
                log_unauthenticated(&app, peer, method, endpoint, &refused.0);
            }
            refused.into_response()
        }
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

/// Counts and times every request (seed metric names), and its errors by code. A probe's
/// 503 (`/ready` while the daemon starts, `/health` while degraded) is its answer, not a
/// failed request: `agt daemon start` polls `/ready` a few dozen times, and each start
/// showed as a burst of errors on an error-rate panel.
fn observe(endpoint: &'static str, method: &'static str, started: Instant, resp: &Response) {
    let service = service_of(endpoint);
    let m = metrics::get();
    m.http_requests.get_or_create(&HttpLabels { service, endpoint, method }).inc();
    m.http_duration.get_or_create(&EndpointLabels { service, endpoint }).observe(started.elapsed().as_secs_f64());
    if (resp.status().is_client_error() || resp.status().is_server_error()) && !is_public(endpoint) {
        let error_type = resp.extensions().get::<ErrorCode>().map(|c| c.0.clone()).unwrap_or_else(|| resp.status().as_u16().to_string());
        m.http_errors.get_or_create(&ErrorLabels { service, endpoint, error_type }).inc();
    }
}

/// The probes, open to every caller on TCP: `/health`, `/ready`, `/metrics`.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
}

/// Whether a path needs a bearer token on TCP: everything under `/api` does, nothing
/// else (DESIGN.md §4). Outside it are `/health`, `/ready` and `/metrics`, open to all,
/// and paths no route has, which are 404 whoever asks, not 401 as if a token would find
/// them something. A handler under `/api` reached without a caller is refused anyway
/// (`Caller` as an extractor is 401).
fn needs_token(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
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
            if needs_token(req.uri().path()) {
                // Two credentials are none: which one the request runs as must not depend
                // on their order (a proxy adding its own token to a client's request).
                if req.headers().get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
                    return Err(Failure(ApiError::unauthorized(
                        "this request has more than one Authorization header: send one Authorization header, `Authorization: Bearer <token>`",
                    )));
                }
                let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_secret);
                let Some(secret) = bearer.filter(|s| !s.is_empty()) else {
                    return Err(Failure(ApiError::unauthorized(
                        "this route needs `Authorization: Bearer <token>`; create one with `agt token create`",
                    )));
                };
                let token = match app.tokens.verify(secret) {
                    Ok(Some(token)) => token,
                    Ok(None) => return Err(Failure(ApiError::unauthorized("the bearer token is unknown or revoked"))),
                    Err(crate::services::auth::NotLoaded) => {
                        return Err(Failure(ApiError::new(
                            503,
                            "service_unavailable",
                            "the daemon is starting: its tokens are not loaded yet (or the auth service cannot open its store; `agt service list` shows it); retry shortly",
                        )))
                    }
                };
                check_bound_user(app, &token)?;
                req.extensions_mut().insert(Caller::Token(token));
            }
        }
    }
    Ok(req)
}

/// The secret of an `Authorization: Bearer <token>` value. The scheme is a
/// case-insensitive token (RFC 9110 §11.1), so `BEARER` names it as `Bearer` does: only
/// `Bearer` and `bearer` were taken, and a client that spelled it otherwise got a 401
/// that told it to send the header it had sent.
fn bearer_secret(value: &str) -> Option<&str> {
    let (scheme, secret) = (value.get(..7)?, value.get(7..)?);
    scheme.eq_ignore_ascii_case("bearer ").then(|| secret.trim())
}

/// A trader token acts for its user, so it works only while that user can: a disabled
/// user's token is refused (403 `user_disabled`) until an admin enables the user again.
/// A trader token bound to no user (the API never makes one, but `auth.db` could hold
/// one) is refused outright: every check that scopes a trader to its user reads "no
/// user" as "not a trader", and would let it act for anyone.
fn check_bound_user(app: &App, token: &TokenInfo) -> Result<(), Failure> {
    if token.role != Role::Trader {
        return Ok(());
    }
    let Some(user_id) = token.user_id.as_deref() else {
        return Err(Failure(ApiError::unauthorized(format!(
            "trader token {} is bound to no user; revoke it and create one with `agt token create --role trader --user USER`",
            token.id
        ))));
    };
    match app.directory.get(user_id) {
        Some(user) if user.is_active() => Ok(()),
        Some(user) => Err(Failure(ApiError::new(
            403,
            "user_disabled",
            format!(
                "user {} is {}: its tokens work again once an admin enables it (`agt user enable {}`)",
                user.username, user.status, user.username
            ),
        ))),
        // Not loaded yet (the daemon is starting): the user may well exist, and a 401
        // would tell the client its token is dead.
        None if !app.directory.loaded() => Err(Failure(ApiError::new(
            503,
            "service_unavailable",
            "the daemon is starting: its users are not loaded yet (or the users service cannot open its store; `agt service list` shows it); retry shortly",
        ))),
        None => Err(Failure(ApiError::unauthorized(format!("trader token {} is bound to user {user_id}, which does not exist", token.id)))),
    }
}

/// Records every command (a POST, PUT, PATCH or DELETE under `/api`) in the audit log, and
/// answers only once that record is durable: an acknowledged command always has its
/// audit record. It is appended to audit's journal of commands before the handler runs
/// (`services::audit::CommandLog`); without one (durability "full") it is sent to audit
/// before the handler runs, so the two overlap, and the answer waits for audit's commit;
/// if audit restarted before answering, the record is sent again once it runs (the
/// command ran), under the same id, so that one it had committed is not stored twice
/// (`audit::Cmd::AppendOnce`). The record's detail is the query and the body
/// ([`command_detail`]). What a command did is recorded by the events it causes; a
/// command refused (an answer of 400 or more) gets a second record with the status and
/// error code ([`record_refusal`]), so an attempt that failed is told from one that worked.
async fn audit_commands(app: &App, req: Request, next: Next) -> Response {
    // Only the methods a route can change something with: OPTIONS (or a method no route
    // has) runs no handler, so it gets the router's 405 with `Allow` whatever the role,
    // not a viewer's 403, and leaves no records in the append-only log.
    let is_command =
        matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE) && req.uri().path().starts_with("/api/");
    if !is_command {
        return next.run(req).await;
    }
    let caller = req.extensions().get::<Caller>().cloned();
    let actor = caller.as_ref().map(|c| c.actor()).unwrap_or_else(|| "anonymous".into());
    let action = format!("{} {}", req.method(), req.uri().path());
    // Run only what the caller's role may do, decided before the handler reads the body:
    // a viewer's write is 403 whatever its body holds, not a 400 about the body. The
    // attempt is still recorded, with its refusal.
    let allowed = caller.as_ref().map_or(Ok(()), |c| may_write(c, req.uri().path()));
    // Such a refusal costs the caller nothing, so only so many a window are audited.
    if let Err(e) = &allowed {
        let (verdict, ended) = app.refused_commands.note(&actor, &action, Instant::now());
        if let Some(ended) = ended {
            record_unrecorded(app, &ended);
        }
        if verdict == Verdict::Count {
            return Failure(e.clone()).into_response();
        }
    }
    // A body in a format the API does not read is refused unread (415): the audit record
    // keeps its size, not its bytes, and an `Expect: 100-continue` client is not asked to
    // send it. A path no route has is left to its 404.
    let routed = req.extensions().get::<MatchedPath>().is_some();
    let media = if allowed.is_ok() && routed { crate::daemon::http::json_body(req.headers(), req.uri().path()) } else { Ok(()) };
    let keep_body = media.is_ok();
    let allowed = allowed.and(media);
    let next = |req| async move {
        match allowed {
            Ok(()) => next.run(req).await,
            Err(e) => Failure(e).into_response(),
        }
    };
    // A body that never came is no command: nothing ran, so there is nothing to audit.
    let (req, detail) = match command_detail(req, keep_body).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let not_run = |e: ApiError| {
        Failure(ApiError::new(503, "service_unavailable", format!("the command was not audited, so it was not run: {}", e.message)))
            .into_response()
    };
    // An operator's restart of audit runs while audit does not (failed, or between two
    // incarnations): refused as every other command is then, a failed audit could only
    // be brought back by restarting the daemon, though each refusal says to run it. It
    // is audited all the same: journalled before it runs, or (durability "full") sent
    // to audit once the restart has it running.
    let restarts_audit = *req.method() == Method::POST && req.uri().path() == "/api/services/audit/restart";
    // Journalled (and so durable) at once, or failing that, appended and committed.
    let (_in_flight, others) = app.command_log.enter();
    let staged = if restarts_audit {
        app.command_log.stage_while_down(actor.clone(), action.clone(), detail)
    } else {
        app.command_log.stage(&app.audit, actor.clone(), action.clone(), detail)
    };
    let detail = match staged {
        Staged::Queued(ticket) => {
            // With other commands in flight, the other requests this worker has ready
            // stage theirs meanwhile, and the first to write puts them all in the
            // journal with one `write`.
            if others {
                tokio::task::yield_now().await;
            }
            if let Err(e) = app.command_log.write_through(&app.audit, ticket) {
                return not_run(e);
            }
            let resp = next(req).await;
            record_refusal(app, &actor, &action, &resp);
            return resp;
        }
        Staged::Refused(e) => return not_run(e),
        Staged::NoJournal(detail) => detail,
    };
    let detail = serde_json::from_str::<serde_json::Value>(detail.get()).unwrap_or_default();
    let id = crate::services::audit::CommandId::next();
    let append = || {
        app.audit.send(|reply| crate::services::audit::Cmd::AppendOnce {
            id,
            actor: actor.clone(),
            action: action.clone(),
            detail: detail.clone(),
            reply,
        })
    };
    // Audit down: nothing runs, as with the journal, but audit's own restart, whose
    // record is sent again below once audit runs.
    let logged = match append() {
        Ok(rx) => Some(rx),
        Err(_) if restarts_audit => None,
        Err(e) => return not_run(e),
    };
    let resp = next(req).await;
    record_refusal(app, &actor, &action, &resp);
    // The command has run, so its record must be kept: a 503 would tell the client it had
    // not (a deposit retried would be made twice). If audit restarted before answering
    // (its reply dropped), the record is sent again as soon as audit runs again.
    let mut logged = match logged {
        Some(rx) => rx.await.unwrap_or_else(|_| Err(ApiError::unavailable("audit"))),
        None => Err(ApiError::unavailable("audit")),
    };
    let deadline = tokio::time::Instant::now() + REAPPEND_WITHIN;
    while logged.is_err() {
        if tokio::time::timeout_at(deadline, app.audit.status.until_running()).await.is_err() {
            break;
        }
        match append() {
            Ok(rx) => logged = rx.await.unwrap_or_else(|_| Err(ApiError::unavailable("audit"))),
            Err(e) => {
                // Refused while it says it runs: its thread is gone, and waiting for it
                // to run again would not wait.
                let gone = app.audit.status.state() == crate::services::actor::State::Running;
                logged = Err(e);
                if gone {
                    break;
                }
            }
        }
    }
    match logged {
        Ok(()) => resp,
        // Nothing may be acknowledged without its audit record.
        Err(e) => Failure(ApiError::new(
            503,
            "service_unavailable",
            format!(
                "the command ran, but its audit record could not be stored, so it is not acknowledged: {}; check what it did before retrying it",
                e.message
            ),
        ))
        .into_response(),
    }
}

/// How long a command that ran under durability "full" waits for audit to come back and
/// store its record, when audit restarted before committing it: the supervisor's backoff
/// reaches 5 s only after several restarts, by when audit is usually marked failed.
const REAPPEND_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a caller's role may send a command to this path (DESIGN.md §4): an admin
/// anything; a trader only its orders' routes (place, amend, cancel, cancel-all, the
/// seed's status route), each of which then checks the order is its own; a viewer
/// nothing. The handlers check again: this only decides first.
fn may_write(caller: &Caller, path: &str) -> Result<(), ApiError> {
    match caller.role() {
        Role::Admin => Ok(()),
        Role::Viewer => caller.require_trading(),
        Role::Trader if path.starts_with("/api/orders") || path.starts_with("/api/trading/orders") => Ok(()),
        Role::Trader => caller.require_admin(),
    }
}

/// The largest body a command's audit record keeps whole; a larger one (a CSV import) is
/// recorded by its size.
const AUDITED_BODY: u64 = 4096;

/// The detail of a command's record: `{"query": …, "body": …}`. A JSON body is kept as it
/// came, with the value of every key that names a secret masked (webhook secrets; keys
/// matched in any case); another small body as text, unless it mentions a secret (a
/// truncated rule body), when it is withheld whole and the detail says why; one over [`AUDITED_BODY`] bytes, or streamed without a length, as
/// `"body_bytes"`. The body is read here only when its length is known and small, and
/// handed on to the handler unchanged, and only if `keep_body` (a body about to be
/// refused unread is recorded by its size). A JSON body is checked once, here, and then
/// copied as it is into the detail and the journal: escaped as a string, every quote of
/// it cost the HTTP worker, for every order.
async fn command_detail(req: Request, keep_body: bool) -> Result<(Request, Box<RawValue>), Response> {
    #[derive(serde::Serialize)]
    struct Detail<'a, B: serde::Serialize> {
        query: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<B>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body_bytes: Option<Option<u64>>,
    }
    let raw = |d: &Detail<&RawValue>| serde_json::value::to_raw_value(d).expect("a detail serializes");
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > 0 && n <= AUDITED_BODY && keep_body => {
            let (parts, body) = req.into_parts();
            // A body that could not be read whole (it stalled, the client went) is refused
            // here: handed on empty, it would read as `{}` (a halt's "everywhere").
            let bytes = match crate::daemon::http::read_body(body, AUDITED_BODY as usize).await {
                Ok(b) => b,
                Err(e) => {
                    let e = e.unwrap_or_else(|| ApiError::bad_request("the request body is longer than its Content-Length"));
                    return Err(Failure(e).into_response());
                }
            };
            let query = parts.uri.query().map(masking::query);
            let query = query.as_deref();
            let json = std::str::from_utf8(&bytes).ok().and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
            let detail = match json {
                // A key may be spelled with escapes (`"secr\u0065t"`) or in capitals
                // (`"Secret"`): such a body is decoded and masked like one that names a
                // secret plainly.
                Some(body) if !masking::may_name_secret(body.get().as_bytes()) => {
                    raw(&Detail { query, body: Some(body), body_bytes: None })
                }
                _ => {
                    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                        Ok(mut v) => {
                            masking::mask_secrets(&mut v);
                            v
                        }
                        // Not JSON, so there are no keys to mask one by one: a body that
                        // may hold a secret (a truncated rule or config body) is withheld
                        // whole, and the detail says so.
                        Err(_) if masking::may_name_secret(&bytes) => serde_json::Value::String(format!(
                            "{} ({} bytes withheld: the body is not valid JSON and mentions a secret)",
                            crate::services::config::settings::MASKED_SECRET,
                            bytes.len()
                        )),
                        Err(_) => serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                    };
                    serde_json::value::to_raw_value(&Detail { query, body: Some(body), body_bytes: None }).expect("a detail serializes")
                }
            };
            Ok((Request::from_parts(parts, axum::body::Body::from(bytes)), detail))
        }
        _ => {
            // Without a length a request has a body only if it is chunked (HTTP/1.1's
            // message length): a bodiless DELETE, as the CLI sends a cancel, has none, and
            // recorded as `"body_bytes": null` read as a body of unknown size.
            let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
            let body_bytes = match length {
                Some(n) if n > 0 => Some(Some(n)),
                None if chunked => Some(None),
                _ => None,
            };
            let query = req.uri().query().map(masking::query);
            let detail = raw(&Detail { query: query.as_deref(), body: None, body_bytes });
            Ok((req, detail))
        }
    }
}

/// One record for the refusals of a caller's window that were counted, not recorded
/// one by one (`daemon::refusals`): `{"status": 403, "error": "forbidden",
/// "unrecorded": N, "window_ms": W}` under the caller's actor and its last such action.
fn record_unrecorded(app: &App, ended: &Ended) {
    let detail = serde_json::json!({
        "status": 403,
        "error": "forbidden",
        "unrecorded": ended.unrecorded,
        "window_ms": ended.window.as_millis() as u64,
    });
    append_record(app, &ended.key, &ended.action, detail);
}

/// Logs a request refused for want of a valid bearer token: the first few of each
/// client's window one by one, then how many more there were once the window ends
/// ([`settle_refusals`]). Not audited: anyone who reaches the port could grow the log.
fn log_unauthenticated(app: &App, peer: Option<PeerAddr>, method: &str, endpoint: &str, e: &ApiError) {
    let client = peer.map_or_else(|| "unknown".to_string(), |p| p.0.ip().to_string());
    let action = format!("{method} {endpoint}");
    let (verdict, ended) = app.refused_requests.note(&client, &action, Instant::now());
    if let Some(ended) = ended {
        log_unrecorded(&ended);
    }
    if verdict == Verdict::Record {
        tracing::warn!(client, action, reason = %e.message, "refused a request without a valid bearer token");
    }
}

fn log_unrecorded(ended: &Ended) {
    tracing::warn!(
        client = ended.key,
        last_action = ended.action,
        window_ms = ended.window.as_millis() as u64,
        "refused {} more requests without a valid bearer token in one window",
        ended.unrecorded
    );
}

/// Records the counted refusals of every window that has ended, once a window, and all
/// that are left when the daemon begins to stop.
pub async fn settle_refusals(app: std::sync::Arc<App>) {
    let mut shutdown = app.shutdown.subscribe();
    let mut tick = tokio::time::interval(app.refused_commands.window());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tokio::select! {
            _ = tick.tick() => Some(Instant::now()),
            _ = shutdown.changed() => None,
        };
        app.refused_commands.take_ended(now).iter().for_each(|e| record_unrecorded(&app, e));
        app.refused_requests.take_ended(now).iter().for_each(log_unrecorded);
        if now.is_none() {
            return;
        }
    }
}

/// A second record for a command that was refused: `{"status", "error"}` (the error
/// code), under the same actor and action. Not waited for: the refusal is answered
/// either way, and the command's own record is already durable.
fn record_refusal(app: &App, actor: &str, action: &str, resp: &Response) {
    let status = resp.status().as_u16();
    if status < 400 {
        return;
    }
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0.as_str()).unwrap_or("");
    append_record(app, actor, action, serde_json::json!({"status": status, "error": code}));
}

/// Appends a record to audit without waiting for it: to its journal of commands, or
/// without one, in a message.
fn append_record(app: &App, actor: &str, action: &str, detail: serde_json::Value) {
    let raw = RawValue::from_string(detail.to_string()).expect("a JSON value makes JSON");
    match app.command_log.append(&app.audit, actor.to_string(), action.to_string(), raw) {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::warn!(action, error = %e.message, "could not audit a refusal"),
        None => {
            app.audit.tell(crate::services::audit::Cmd::Append {
                actor: actor.to_string(),
                action: action.to_string(),
                detail,
                reply: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme in any case, one or more spaces before the secret; another scheme, a
    /// missing space or a bare secret is no bearer token.
    #[test]
    fn a_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer agt_1", "bearer agt_1", "BEARER agt_1", "bEaReR  agt_1 "] {
            assert_eq!(bearer_secret(value), Some("agt_1"), "{value:?}");
        }
        for value in ["Token agt_1", "Bearer", "Beareragt_1", "agt_1", "Basic YWdlbnQ6", "Bearé agt_1"] {
            assert_eq!(bearer_secret(value).filter(|s| !s.is_empty()), None, "{value:?}");
        }
    }

    /// The `body` of the audit detail of `body` sent as a command.
    async fn audited(body: &str) -> serde_json::Value {
        let req = Request::builder()
            .method("POST")
            .uri("/api/notifications/rules")
            .header(header::CONTENT_LENGTH, body.len())
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let (req, detail) = command_detail(req, true).await.expect("a body read whole");
        let handed = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
        assert_eq!(handed, body.as_bytes(), "the handler gets the body unchanged");
        let detail: serde_json::Value = serde_json::from_str(detail.get()).unwrap();
        detail["body"].clone()
    }

    #[tokio::test]
    async fn a_secret_under_a_key_in_any_case_is_masked() {
        let body = audited(r#"{"url": "http://h/x", "Secret": "X1", "nested": {"SECRET": "X2", "webhook_secret": "X3"}}"#).await;
        assert_eq!(body, serde_json::json!({"url": "http://h/x", "Secret": "***", "nested": {"SECRET": "***", "webhook_secret": "***"}}));
        let plain = audited(r#"{"user_id": "u", "symbol": "AAPL"}"#).await;
        assert_eq!(plain["symbol"], "AAPL", "a body without a secret is kept as it came");
    }

    #[tokio::test]
    async fn credentials_in_the_query_and_urls_with_a_user_are_masked() {
        for body in ["", r#"{"log.level": "info"}"#] {
            let mut req = Request::builder().method("PUT").uri("/api/config?secret=Q1&token=Q2&dry=1");
            if !body.is_empty() {
                req = req.header(header::CONTENT_LENGTH, body.len());
            }
            let (_, detail) = command_detail(req.body(axum::body::Body::from(body)).unwrap(), true).await.expect("a body read whole");
            let detail: serde_json::Value = serde_json::from_str(detail.get()).unwrap();
            assert_eq!(detail["query"], "secret=***&token=***&dry=1", "{detail}");
        }
        let body = audited(r#"{"notify.webhooks": [{"url": "http://user:PW4@127.0.0.1:9/y", "events": ["*"]}]}"#).await;
        assert_eq!(body["notify.webhooks"][0]["url"], "http://***@127.0.0.1:9/y");
    }

    /// A command without a body is recorded with its query alone; one streamed without a
    /// length, or too long to keep, by its size (`null`: not known).
    #[tokio::test]
    async fn a_bodiless_command_is_recorded_without_a_body_size() {
        let detail = |req: axum::http::request::Builder| async move {
            let (_, d) = command_detail(req.body(axum::body::Body::empty()).unwrap(), true).await.expect("no body to read");
            serde_json::from_str::<serde_json::Value>(d.get()).unwrap()
        };
        let cancel = Request::builder().method("DELETE").uri("/api/orders/ord_1");
        assert_eq!(detail(cancel).await, serde_json::json!({"query": null}));
        let empty = Request::builder().method("DELETE").uri("/api/orders/ord_1").header(header::CONTENT_LENGTH, 0);
        assert_eq!(detail(empty).await, serde_json::json!({"query": null}));
        let chunked = Request::builder().method("POST").uri("/api/market/import").header(header::TRANSFER_ENCODING, "chunked");
        assert_eq!(detail(chunked).await, serde_json::json!({"query": null, "body_bytes": null}));
        let large = Request::builder().method("POST").uri("/api/market/import").header(header::CONTENT_LENGTH, 5000);
        assert_eq!(detail(large).await, serde_json::json!({"query": null, "body_bytes": 5000}));
    }

    #[tokio::test]
    async fn a_malformed_body_that_mentions_a_secret_is_withheld() {
        for sent in [r#"{"url":"http://h/x","events":["*"],"secret":"X"#, r#"{"SeCrEt": "X""#, r#"{"secr\u0065t": "X""#] {
            let body = audited(sent).await;
            let text = body.as_str().expect("a string");
            assert!(!text.contains('X'), "{sent} -> {text}");
            assert!(text.starts_with("*** (") && text.contains("not valid JSON and mentions a secret"), "{text}");
        }
        let forged = r#"{"asset": "USD"}, "status": 201"#;
        assert_eq!(audited(forged).await, forged, "a malformed body without a secret is kept as text");
    }
}
