//! HTTP plumbing shared by every route: who is calling, JSON in, JSON errors out.
//!
//! **Architecture Invariant:** a handler never builds an error body itself; it returns an
//! [`ApiError`], and this module turns it into `{"error":{"code","message"}}` with its
//! status. Malformed JSON, wrong types and missing fields are answered here, before any
//! service sees the request.

use crate::api::quote::{bare, quote_long_in, quoted};
use crate::api::{ApiError, Role, TokenInfo};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// The error code of an error response, for the `http_errors_total` metric.
#[derive(Clone, Debug)]
pub struct ErrorCode(pub String);

/// An [`ApiError`] as an axum response.
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = json(status, &self.0.body());
        resp.extensions_mut().insert(ErrorCode(self.0.code.to_string()));
        // The one 429 is `rate_limited`, a count over the last second: a client that
        // honours Retry-After (RFC 9110 §10.2.3) waits that second, not a guess.
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        // A body that never came whole leaves the connection mid-request: it ends here.
        if status == StatusCode::REQUEST_TIMEOUT {
            resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, Failure>;

/// How a request arrived: the socket is the owner's (admin); TCP needs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Socket,
    Tcp,
}

/// Who is calling, set by the transport guard before any handler runs.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Over the Unix socket: the owner of the machine account, an admin.
    Socket,
    /// Shared with the tokens' read model: a request clones a pointer, not the token.
    Token(std::sync::Arc<TokenInfo>),
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::Socket => Role::Admin,
            Caller::Token(t) => t.role,
        }
    }
    /// Who did it, for the audit log: never a secret.
    pub fn actor(&self) -> String {
        match self {
            Caller::Socket => "socket".into(),
            Caller::Token(t) => format!("token:{}", t.id),
        }
    }
    /// Admin only: deposits, users, symbols, limits, halts, config, services, tokens.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role() {
            Role::Admin => Ok(()),
            r => Err(ApiError::forbidden(format!("{} token may not do this; it needs an admin token", r.with_article()))),
        }
    }
    /// Anyone but a trader may read everything (a viewer reads all, except tokens).
    pub fn require_reader(&self) -> Result<(), ApiError> {
        match self.role() {
            Role::Admin | Role::Viewer => Ok(()),
            Role::Trader => Err(ApiError::forbidden("a trader token may only read its own user's data and market data")),
        }
    }
    /// Admins and traders may place, amend and cancel; viewers change nothing.
    pub fn require_trading(&self) -> Result<(), ApiError> {
        match self.role() {
            Role::Admin | Role::Trader => Ok(()),
            Role::Viewer => Err(ApiError::forbidden("a viewer token cannot change anything")),
        }
    }
    /// The user a trader token is bound to (`None` for admins and viewers).
    pub fn bound_user(&self) -> Option<&str> {
        match self {
            Caller::Token(t) if t.role == Role::Trader => t.user_id.as_deref(),
            _ => None,
        }
    }
    pub fn is_trader(&self) -> bool {
        self.role() == Role::Trader
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| Failure(ApiError::unauthorized("no caller identity on this request")))
    }
}

/// A JSON body, refused with a 400 that says what is wrong (not axum's plain-text one).
pub struct Json<T>(pub T);

/// The largest request body accepted (a placement is ~200 bytes).
pub const MAX_BODY: usize = 1 << 20;

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(Json).map_err(Failure)
    }
}

/// A settings body (`PUT /api/config`, `PUT /api/risk/limits`): a JSON value whose
/// numbers keep the text they were sent as (`crate::api::decimal::numbers_kept`), so a
/// whole-number setting takes `100.0` and `1e2` as `100` does, a decimal one any exact
/// decimal, and a refusal shows a number as the client wrote it, unquoted.
pub struct SettingsBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for SettingsBody {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_settings(&bytes).map(SettingsBody).map_err(Failure)
    }
}

/// [`SettingsBody`] from the body's bytes.
pub fn parse_settings(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let mut value: serde_json::Value = parse_json(bytes)?;
    let probe = match crate::api::decimal::numbers_as_one(bytes) {
        std::borrow::Cow::Owned(text) => serde_json::from_slice::<serde_json::Value>(&text).ok(),
        std::borrow::Cow::Borrowed(_) => None,
    };
    crate::api::decimal::numbers_kept(&mut value, probe.as_ref())
        .map_err(|e| ApiError::invalid("invalid_request", format!("invalid request body: {e}")))?;
    Ok(value)
}

/// A body as it came, up to [`MAX_BODY`], for a route that reads an empty one its own
/// way; refused as [`Json`] refuses one (413, 408, 400), not with axum's plain text.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Failure;
    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        read_body(req.into_body(), MAX_BODY).await.map(RawBody).map_err(|e| {
            Failure(e.unwrap_or_else(|| {
                ApiError::new(413, "payload_too_large", format!("the request body is over the {} KiB a request may carry", MAX_BODY >> 10))
            }))
        })
    }
}

/// A request's whole body, at most `limit` bytes. `Err(None)`: it is longer (each route
/// says what it takes); `Err(Some(e))`: it could not be read, 408 `request_timeout` if it
/// did not arrive in time (`server::TimedBody`), else 400. A body whose announced length
/// (`Content-Length`, hyper's size hint) is over `limit` is refused before it is polled:
/// hyper answers `Expect: 100-continue` when a body is first polled, and a client that
/// announced too much should get its 413 at once, not be asked to send it all first.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, Option<ApiError>> {
    if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(None);
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut cause = Some(&e as &(dyn std::error::Error + 'static));
        while let Some(c) = cause {
            if let Some(late) = c.downcast_ref::<crate::daemon::server::BodyTimedOut>() {
                return Some(ApiError::new(408, "request_timeout", late.to_string()));
            }
            if c.is::<http_body_util::LengthLimitError>() {
                return None;
            }
            cause = c.source();
        }
        Some(ApiError::bad_request(format!("could not read the request body: {e}")))
    })
}

/// The route that takes a body other than JSON: a CSV import may come as the CSV itself.
pub const IMPORT_PATH: &str = "/api/market/import";

/// Whether a command's body comes as JSON, by its `Content-Type` (415
/// `unsupported_media_type` if not). Every body of the API is JSON; one labelled as
/// something else (curl's `-d` sends `application/x-www-form-urlencoded`, an HTML form
/// `multipart/form-data`) was read as JSON all the same, so a client that meant another
/// format got a parser's complaint, or worse, had it taken. Accepted:
/// `application/json` with or without parameters (`; charset=utf-8`), any
/// `application/*+json`, and no `Content-Type` at all (a hand-written request, `printf |
/// nc`: what it sends can only be meant as JSON, and JSON is what is checked next). A
/// request without a body is not held to it (a `DELETE` with a stray header). `POST
/// /api/market/import` also takes `text/csv` and `text/plain` (the CSV itself).
///
/// A body with a `Content-Encoding` other than `identity` is refused the same way: the
/// daemon decodes none, and read as it came, a gzipped body was a parser's "expected
/// value at line 1 column 1", and a plain one labelled `br` was taken as if unlabelled.
///
/// The order path sends `application/json` exactly (the CLI, the bench, the TUI): that is
/// two header lookups and one comparison, with nothing allocated.
pub fn json_body(headers: &axum::http::HeaderMap, path: &str) -> Result<(), ApiError> {
    use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
    let has_body = || headers.contains_key(TRANSFER_ENCODING) || headers.get(CONTENT_LENGTH).is_some_and(|n| n.as_bytes() != b"0");
    if let Some(coding) = headers.get_all(CONTENT_ENCODING).iter().find(|v| !is_identity(v.as_bytes())) {
        if has_body() {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                format!(
                    "the daemon reads request bodies uncompressed: send the body without Content-Encoding (or with `Content-Encoding: identity`); got Content-Encoding {}",
                    quoted(&String::from_utf8_lossy(coding.as_bytes()))
                ),
            ));
        }
    }
    let Some(value) = headers.get(CONTENT_TYPE) else { return Ok(()) };
    let raw = value.as_bytes();
    if raw == b"application/json" {
        return Ok(());
    }
    if !has_body() {
        return Ok(());
    }
    let essence = raw.split(|&b| b == b';').next().unwrap_or(raw).trim_ascii();
    let is = |t: &str| essence.eq_ignore_ascii_case(t.as_bytes());
    let lower = essence.to_ascii_lowercase();
    if is("application/json") || (lower.starts_with(b"application/") && lower.ends_with(b"+json")) {
        return Ok(());
    }
    let import = path == IMPORT_PATH;
    if import && (is("text/csv") || is("text/plain")) {
        return Ok(());
    }
    let wanted = if import {
        "this route takes JSON {\"csv\": \"<the file>\"} with `Content-Type: application/json`, or the CSV itself with `Content-Type: text/csv`"
    } else {
        "this route takes a JSON body: send it with `Content-Type: application/json` (curl: `--json '{…}'`, or `-H 'Content-Type: application/json'` with `-d`)"
    };
    Err(ApiError::new(415, "unsupported_media_type", format!("{wanted}; got Content-Type {}", quoted(&String::from_utf8_lossy(raw)))))
}

/// Whether a `Content-Encoding` value says the body is not encoded: `identity`, in any
/// case, alone or listed with itself, or nothing.
fn is_identity(value: &[u8]) -> bool {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).all(|c| c.is_empty() || c.eq_ignore_ascii_case(b"identity"))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::invalid("invalid_json", "the request needs a JSON object body"));
    }
    // Every body of the API is an object; serde would read a struct from an array too, and
    // its words for the wrong shape name our Rust types.
    const OBJECT: &str = "the request body must be a JSON object of named fields, such as {\"symbol\": \"AAPL\"}";
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid("invalid_request", OBJECT));
    }
    let exact = crate::api::decimal::exact_numbers(bytes);
    let t = serde_json::from_slice(&exact).map_err(|e| {
        let mut refused = body_refusal::<T>(e, &exact, OBJECT);
        if let std::borrow::Cow::Owned(_) = exact {
            refused.message = number_unquoted::<T>(refused.message, &exact, &crate::api::decimal::numbers_as_one(bytes));
        }
        refused
    })?;
    if let std::borrow::Cow::Owned(_) = exact {
        // Quoting a number made it a string, which a text field would take as its text
        // (`{"username": 1.5}` a user named "1.5") where `{"username": 15}` is refused.
        // Read the types again with each such number a JSON number still.
        let probe = crate::api::decimal::numbers_as_one(bytes);
        if let Err(e) = serde_json::from_slice::<T>(&probe) {
            let mut refused = body_refusal::<T>(e, &probe, OBJECT);
            refused.message = refused.message.replace("integer `1`", "a number");
            return Err(refused);
        }
    }
    Ok(t)
}

/// `message` with the refused value shown as its client sent it: a number that
/// [`crate::api::decimal::exact_numbers`] quoted for the decimal reader (`{"amount": 1e400}`)
/// is a number in `probe` (the body as `numbers_as_one` wrote it), and is shown unquoted
/// (`1e400`, not `"1e400"`), as a string sent as a string stays quoted. Only on the way
/// to an error: the body is read again.
fn number_unquoted<T: DeserializeOwned>(message: String, exact: &[u8], probe: &[u8]) -> String {
    use serde_path_to_error::Segment;
    let Err(e) = serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_slice(exact)) else { return message };
    let (Ok(mut quoted), Ok(mut sent)) =
        (serde_json::from_slice::<serde_json::Value>(exact), serde_json::from_slice::<serde_json::Value>(probe))
    else {
        return message;
    };
    for segment in e.path().iter() {
        let (q, s) = match segment {
            Segment::Map { key } => (quoted.get_mut(key).map(std::mem::take), sent.get_mut(key).map(std::mem::take)),
            Segment::Seq { index } => (quoted.get_mut(*index).map(std::mem::take), sent.get_mut(*index).map(std::mem::take)),
            _ => return message,
        };
        let (Some(q), Some(s)) = (q, s) else { return message };
        (quoted, sent) = (q, s);
    }
    match (&quoted, &sent) {
        (serde_json::Value::String(text), serde_json::Value::Number(_)) => {
            message.replacen(&crate::api::quote::quoted(text), &bare(text), 1)
        }
        _ => message,
    }
}

/// Why a request body did not read as `T`: a syntax error as serde says it, a value of
/// the wrong kind with its field's name.
fn body_refusal<T: DeserializeOwned>(e: serde_json::Error, text: &[u8], object: &str) -> ApiError {
    let syntax = e.is_syntax() || e.is_eof();
    let code = if syntax { "invalid_json" } else { "invalid_request" };
    let message = e.to_string();
    if message.contains("expected struct") {
        return ApiError::invalid(code, object);
    }
    if syntax {
        return ApiError::invalid(code, format!("invalid request body: {}", quote_long_in(&message)));
    }
    // A value of the wrong kind: name its field (found by reading the body again, only
    // now, so a good body pays nothing for it), not its column in a line the caller
    // may never have seen (the CLI builds it).
    let path = serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_slice(text))
        .err()
        .map(|e| e.path().to_string())
        .filter(|p| p != ".");
    // serde quotes an unknown key or enum value whole, and the path names the key again.
    let message = quote_long_in(message.rsplit_once(" at line ").map_or(message.as_str(), |(t, _)| t));
    let path = path.map(|p| if p.chars().count() > 40 { quoted(&p) } else { p });
    match path {
        Some(field) => ApiError::invalid(code, format!("invalid request body: {field}: {message}")),
        None => ApiError::invalid(code, format!("invalid request body: {message}")),
    }
}

/// A path's parameters, refused with a JSON 400: axum's own rejection is plain text
/// (`/api/users/%FF` answered `text/plain`), and every error is JSON (DESIGN.md §4).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(t)) => Ok(Path(t)),
            Err(e) => Err(Failure(ApiError::new(e.status().as_u16(), "invalid_path", quote_long_in(&e.body_text())))),
        }
    }
}

/// Query strings, refused with a JSON 400 naming the bad parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q).map(Query).map_err(Failure)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    let uri: axum::http::Uri = format!("/?{q}").parse().map_err(|_| ApiError::bad_request("malformed query string"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|axum::extract::Query(t)| t)
        .map_err(|e| ApiError::invalid("invalid_query", query_refusal(&uri, &e.body_text())))
}

/// axum's words for a query it could not read, with each long key or value the client
/// sent quoted by its ends and length: serde quotes an unknown key whole, and axum names
/// it again, bare, as the path of the error.
fn query_refusal(uri: &axum::http::Uri, message: &str) -> String {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    crate::api::quote::quote_given(&quote_long_in(message), pairs.into_iter().flat_map(|(k, v)| [k, v]))
}

/// The query of a GET route that takes no parameters: any is refused (400
/// `invalid_query`), as the routes that take some refuse those they do not know, so that
/// `?user_id=bob` on a route that cannot filter is not read as a filtered answer.
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        no_query(&parts.uri, None).map(|()| NoQuery).map_err(Failure)
    }
}

/// Refuses a query string on a route that takes none: a GET ([`NoQuery`]), or a command
/// that takes its filters in the body (`cancel-all`, `halt`, `resume`; `body` shows
/// them), where a dropped `?symbol=MSFT` would cancel or halt everything.
pub fn no_query(uri: &axum::http::Uri, body: Option<&str>) -> Result<(), ApiError> {
    match uri.query() {
        Some(q) if !q.is_empty() => {
            let instead = body.map(|b| format!("; send its filters in the JSON body: {b}")).unwrap_or_default();
            Err(ApiError::invalid("invalid_query", format!("this route takes no query parameters (got {}){instead}", quoted(q))))
        }
        _ => Ok(()),
    }
}

/// A list's `?limit=` (kept as text in the query struct, so that `-1` or `ten` get this
/// message rather than a parser's): absent gives `default`; else a whole number from 1 to
/// `max`, or 400 `invalid_limit` saying so. Too large is refused, not cut down, so that a
/// script never takes a shortened list for the whole one.
pub fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid("invalid_limit", format!("limit must be a whole number from 1 to {max}; got {}", quoted(raw)))),
    }
}

/// A whole number from a query string (`since`, `tail`, `depth`; kept as text in the
/// query struct, like `limit`): absent gives `None`; else a number from `min` to `max`,
/// or 400 `invalid_query` naming the parameter and its range, so that `-1` gets more than
/// a parser's "invalid digit found in string".
pub fn query_number(name: &str, raw: Option<&str>, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        // Digits that overflow are a number, only too large: say so, not "a whole number".
        Err(_) if !raw.trim().is_empty() && raw.trim().bytes().all(|b| b.is_ascii_digit()) => Err(ApiError::invalid(
            "invalid_query",
            format!("{name} is too large: the largest this parameter takes is {max}; got {}", quoted(raw)),
        )),
        _ => {
            let range = if max == u64::MAX { format!("of {min} or more") } else { format!("from {min} to {max}") };
            Err(ApiError::invalid("invalid_query", format!("{name} must be a whole number {range}; got {}", quoted(raw))))
        }
    }
}

/// 201 with a JSON body.
pub fn created<T: serde::Serialize>(t: T) -> Response {
    json(StatusCode::CREATED, &t)
}

pub fn ok<T: serde::Serialize>(t: T) -> Response {
    json(StatusCode::OK, &t)
}

/// `t` as a JSON answer, as `axum::Json` writes it (`content-type: application/json`),
/// written at its exact size ([`crate::api::to_json_exact`]) instead of in a buffer that
/// starts at 128 bytes and doubles.
fn json<T: serde::Serialize>(status: StatusCode, t: &T) -> Response {
    let body = crate::api::to_json_exact(t).map(Bytes::from);
    match body {
        Ok(body) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        // What `axum::Json` answers: only a type that cannot be JSON gets here.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query's number that is negative or not a number is told its range, as a
    /// list's `limit` is.
    #[test]
    fn query_numbers_name_their_range() {
        assert_eq!(query_number("since", None, 0, u64::MAX).unwrap(), None);
        assert_eq!(query_number("since", Some("18446744073709551615"), 0, u64::MAX).unwrap(), Some(u64::MAX));
        assert_eq!(query_number("depth", Some(" 7 "), 1, 1000).unwrap(), Some(7));
        let e = query_number("since", Some("-1"), 0, u64::MAX).unwrap_err();
        assert_eq!((e.status, &*e.code), (400, "invalid_query"));
        assert_eq!(e.message, "since must be a whole number of 0 or more; got \"-1\"");
        let e = query_number("depth", Some("0"), 1, 1000).unwrap_err();
        assert_eq!(e.message, "depth must be a whole number from 1 to 1000; got \"0\"");
        let e = query_number("depth", Some("18446744073709551616"), 1, u64::MAX).unwrap_err();
        assert!(e.message.starts_with("depth is too large: the largest this parameter takes is 18446744073709551615"), "{}", e.message);
        assert!(query_number("tail", Some("ten"), 0, u64::MAX).is_err());
        assert!(page_limit(Some("-1"), 100, 10_000).unwrap_err().message.contains("from 1 to 10000"));
    }

    #[test]
    fn a_body_must_be_labelled_as_json_or_not_at_all() {
        let check = |ctype: Option<&str>, length: Option<&str>, path: &str| {
            let mut h = axum::http::HeaderMap::new();
            if let Some(t) = ctype {
                h.insert(axum::http::header::CONTENT_TYPE, t.parse().unwrap());
            }
            if let Some(n) = length {
                h.insert(axum::http::header::CONTENT_LENGTH, n.parse().unwrap());
            }
            json_body(&h, path).map_err(|e| (e.status, e.code.to_string(), e.message))
        };
        for ok in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON ;charset=UTF-8"),
            Some("application/merge-patch+json"),
        ] {
            assert_eq!(check(ok, Some("2"), "/api/orders"), Ok(()), "{ok:?}");
        }
        for bad in
            ["application/x-www-form-urlencoded", "text/plain", "text/csv", "multipart/form-data; boundary=x", "application/jsonx", ""]
        {
            let (status, code, message) = check(Some(bad), Some("2"), "/api/orders").unwrap_err();
            assert_eq!((status, code.as_str()), (415, "unsupported_media_type"), "{bad}");
            assert!(message.contains("Content-Type: application/json") && message.contains(&format!("{bad:?}")), "{message}");
        }
        assert_eq!(check(Some("text/plain"), Some("0"), "/api/orders"), Ok(()), "no body, nothing to label");
        assert_eq!(check(Some("text/plain"), None, "/api/orders"), Ok(()), "no body, nothing to label");
        assert_eq!(check(Some("text/csv; charset=utf-8"), Some("9"), IMPORT_PATH), Ok(()));
        assert_eq!(check(Some("text/plain"), Some("9"), IMPORT_PATH), Ok(()));
        let (_, _, message) = check(Some("application/x-www-form-urlencoded"), Some("9"), IMPORT_PATH).unwrap_err();
        assert!(message.contains("text/csv"), "{message}");
    }

    #[test]
    fn a_rate_limited_answer_says_when_to_retry() {
        let limited = Failure(ApiError::new(429, "rate_limited", "too many")).into_response();
        assert_eq!(limited.headers()[axum::http::header::RETRY_AFTER], "1");
        let refused = Failure(ApiError::rejected("price_band", "far")).into_response();
        assert!(refused.headers().get(axum::http::header::RETRY_AFTER).is_none());
    }
}
