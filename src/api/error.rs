//! The one error shape of the API: `{"error": {"code", "message"}}` with a status.
//!
//! Every failure a client can see is an [`ApiError`]: a stable `code` (scripts match on it),
//! a message that says what to fix, and the HTTP status it travels with. Codes are the
//! contract of DESIGN.md §2 and §4; add new ones here, never inline elsewhere.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// An error answered to a client. Cheap to build; `code` is usually a static string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: Cow<'static, str>,
    pub message: String,
    /// A placement's risk rejection: the order it stored as `rejected`, so that a client
    /// can read it without listing its orders.
    pub order_id: Option<String>,
}

/// The message of [`ApiError::daemon_stopping`].
pub const DAEMON_STOPPING: &str = "the daemon is stopping: the request was not run; send it again once the daemon has started again";

/// The JSON body of an error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: message.into(), order_id: None }
    }
    /// The same error, naming the order a rejection stored.
    pub fn for_order(mut self, order_id: &str) -> Self {
        self.order_id = Some(order_id.to_string());
        self
    }
    /// 400 for input that is malformed or invalid, with the code naming what is wrong.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(404, "not_found", format!("no {what} {}", super::quote::quoted(id)))
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    /// 422: a pre-trade risk rejection (the order is stored as `rejected`).
    pub fn rejected(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }
    pub fn unavailable(service: &str) -> Self {
        Self::new(
            503,
            "service_unavailable",
            format!("the {service} service is restarting or down; retry shortly (agt service list shows its state)"),
        )
    }
    /// 503 for a request read once the daemon has begun to stop (`daemon::server`): not
    /// run. Its message is [`DAEMON_STOPPING`], by which a client tells it from a
    /// service's 503 ([`ApiError::is_daemon_stopping`]).
    pub fn daemon_stopping() -> Self {
        Self::new(503, "service_unavailable", DAEMON_STOPPING)
    }
    /// Whether this is the answer of a daemon on its way out ([`ApiError::daemon_stopping`]):
    /// `agt events tail -f` whose stream ended at a stop asks the daemon why, and may be
    /// answered this instead of finding nobody there.
    pub fn is_daemon_stopping(&self) -> bool {
        self.status == 503 && self.message == DAEMON_STOPPING
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "timeout", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message.clone(), order_id: self.order_id.clone() } }
    }
}
