//! The notify service: webhook rules and a durable queue of deliveries (DESIGN.md §2).
//!
//! - [`service`] is the actor. Fed by the bus (like audit and health), it turns every
//!   event that a rule wants into a *delivery* row in `data/notify.db`, in the same
//!   transaction that records the event as seen, and keeps each delivery's state:
//!   `pending` → `sent`, or `pending` → `failed` after the last attempt.
//! - [`sender`] is a tokio task that asks the actor for due deliveries, POSTs them
//!   (bounded concurrency, a timeout per attempt) and reports each outcome back.
//!
//! **Architecture Invariant:** the actor thread never touches the network, and nothing on
//! the order path waits for notify: events reach it through the bus and its mailbox, and
//! a dead or hanging receiver occupies at most [`sender::MAX_IN_FLIGHT_PER_URL`] of the
//! sender's slots until their timeouts, so other receivers' deliveries keep flowing.
//!
//! Delivery is at least once: a delivery is in `notify.db` before it is attempted, and one
//! that was in flight when the daemon died is pending again after a restart, so it may
//! reach its receiver twice; the `X-Agt-Delivery` header (stable across retries) lets a
//! receiver drop duplicates. A crash of the actor alone posts nothing twice: the sender
//! outlives it and reports again each outcome it has not seen committed ([`Cmd::Due`]).
//!
//! What a receiver gets: `POST <url>` with the event envelope as the JSON body and
//! `Content-Type: application/json`, `X-Agt-Event: <type>`, `X-Agt-Delivery: <id>`, and,
//! when the rule has a secret, `X-Agt-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//! Any 2xx is delivered; anything else, a timeout or a connection error is a failed
//! attempt, retried after [`Tuning::backoff`]. Only `http://` URLs can be delivered: this
//! build has no TLS client (put a TLS-terminating proxy in front of an https receiver).
//!
//! Tuning comes from the environment, read once when the daemon starts (a bad value stops
//! it, naming the variable) and handed to the service and the sender; the defaults are
//! what production wants, the overrides let tests run in seconds:
//! `AGT_NOTIFY_BACKOFF_MS` (first retry delay, default 1000), `AGT_NOTIFY_MAX_ATTEMPTS`
//! (default 10), `AGT_NOTIFY_TIMEOUT_MS` (per attempt, default 5000).

pub mod fault;
pub mod interest;
pub mod sender;
pub mod service;
pub mod url;

pub use interest::Interest;

pub use service::Notify;
pub use url::{parse_url, shown_url};

use crate::api::{ApiError, Delivery, NewWebhookRule, WebhookRule};
use crate::services::actor::Reply;
use crate::services::config::settings::MASKED_SECRET;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

pub enum Cmd {
    /// A bus event: queues a delivery for every rule that wants it (once per sequence).
    Event(crate::daemon::follower::Handed),
    /// The last bus sequence handled, for the follower to resume after.
    LastEventSeq(Reply<u64>),
    /// Deliveries newest first, optionally of one status (`pending`, `sent`, `failed`).
    List { limit: usize, status: Option<String>, reply: Reply<Vec<Delivery>> },
    /// Up to `max` deliveries due now, for the sender. When none is due the actor keeps
    /// the reply and answers as soon as one is (a long poll), so an idle sender costs
    /// nothing and a new event goes out at once.
    ///
    /// `sending` is every delivery the sender is attempting as it asks, (id, URL): the
    /// sender outlives a restart of notify, the actor's memory does not, and an actor
    /// that forgot an attempt in flight gave up its delivery as its webhook's removal
    /// came (or after a restart, when it found the webhook gone) though the attempt then
    /// delivered it, and handed a hanging receiver two more. The actor takes this list
    /// as what is in flight, and hands out or gives up nothing before the first one.
    ///
    /// `reported` is every outcome the sender has told and not yet seen committed: an
    /// outcome lives only in the actor's open transaction until its batch commits, so a
    /// crash in between lost it, and the restarted actor posted the delivery again. The
    /// actor records them (again, for most: [`Outcome::attempts`] makes that a no-op)
    /// before it hands anything out; its answer, sent after the commit that holds them,
    /// tells the sender it may forget them.
    ///
    /// `max` may be 0: the sender, all its slots busy, gives a restarted actor its lists
    /// at once (instead of at its next free slot, up to an attempt timeout later), and
    /// the actor answers at once, with nothing.
    Due { max: usize, sending: Vec<(String, String)>, reported: Vec<Outcome>, reply: Reply<Vec<Attempt>> },
    /// What became of one attempt; the actor records it and schedules the next one.
    Outcome(Outcome),
    /// Adds a run-time rule (kept in `notify.db`, beside the `[[notify.webhooks]]` of the config).
    AddRule { rule: NewWebhookRule, reply: Reply<WebhookRule> },
    /// Every rule: the config's first (ids `config:N`), then the run-time ones.
    Rules(Reply<Vec<WebhookRule>>),
    /// Removes a run-time rule; its pending deliveries are given up (`NOTIFICATION_FAILED`),
    /// except those already with the sender.
    RemoveRule { id: String, reply: Reply<WebhookRule> },
    /// The feed skipped events no rule wanted ([`Interest`]) up to this one.
    Passed(crate::daemon::follower::Passed),
}

/// One delivery handed to the sender: everything it needs to make the request.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub url: String,
    /// The rule's signing key, copied into the delivery so a later config change cannot
    /// leave a queued delivery unsigned.
    pub secret: Option<String>,
    pub event_type: String,
    /// The event envelope, exactly as the bus keeps it: the request body.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of one attempt, as the sender reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The delivery's id.
    pub id: String,
    /// The attempts made before this one ([`Attempt::attempts`]): the actor records an
    /// outcome only while the delivery still has that many, so one reported twice (in a
    /// `Due` after its `Outcome`) changes nothing the second time.
    pub attempts: u32,
    pub result: AttemptResult,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered 2xx.
    Delivered,
    /// No 2xx: retried later unless `permanent` (a URL that can never be delivered to) or
    /// the attempts are used up.
    Failed { error: String, permanent: bool },
}

/// Delivery timing: production defaults, overridable from the environment (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The wait after the first failed attempt; it doubles with each further one.
    pub backoff_base: Duration,
    /// No wait between attempts is longer than this.
    pub backoff_max: Duration,
    /// After this many failed attempts a delivery is `failed` for good.
    pub max_attempts: u32,
    /// How long one attempt may take, connecting and reading the answer included.
    pub timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 10,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Tuning {
    /// The tuning of the process's environment: see [`Tuning::from_vars`].
    pub fn from_env() -> Result<Tuning, String> {
        Tuning::from_vars(&|name: &str| std::env::var(name).ok())
    }

    /// The defaults, with `AGT_NOTIFY_BACKOFF_MS`, `AGT_NOTIFY_TIMEOUT_MS` (1 to 3,600,000)
    /// and `AGT_NOTIFY_MAX_ATTEMPTS` (1 to 1,000) from `env` where set. An empty variable
    /// counts as unset and anything else out of range is an error naming the variable, as
    /// for the `AGT_<SECTION>_<KEY>` settings: the daemon refuses to start on it
    /// (`daemon::run`) rather than leave the default in force unnoticed.
    pub fn from_vars(env: &impl Fn(&str) -> Option<String>) -> Result<Tuning, String> {
        let var = |name: &str, max: u64, unit: &str| -> Result<Option<u64>, String> {
            let Some(raw) = env(name).filter(|v| !v.trim().is_empty()) else { return Ok(None) };
            match raw.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!("{name}: expected a whole number{unit} from 1 to {max}, got {}", crate::api::quote::quoted(&raw))),
            }
        };
        const HOUR_MS: u64 = 3_600_000;
        let d = Tuning::default();
        Ok(Tuning {
            backoff_base: var("AGT_NOTIFY_BACKOFF_MS", HOUR_MS, " of milliseconds")?.map(Duration::from_millis).unwrap_or(d.backoff_base),
            backoff_max: d.backoff_max,
            max_attempts: var("AGT_NOTIFY_MAX_ATTEMPTS", 1000, "")?.map(|n| n as u32).unwrap_or(d.max_attempts),
            timeout: var("AGT_NOTIFY_TIMEOUT_MS", HOUR_MS, " of milliseconds")?.map(Duration::from_millis).unwrap_or(d.timeout),
        })
    }

    /// The wait after `failed` failed attempts (>= 1): base, 2·base, 4·base, … up to the max.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.backoff_base.saturating_mul(1u32 << doublings).min(self.backoff_max)
    }
}

/// Whether a rule subscribed to `events` could want an event of type `kind`: the type is
/// named, or `*` is. [`wants`] decides exactly; this is all notify's feed asks
/// ([`Interest`]).
pub fn may_want(events: &[String], kind: &str) -> bool {
    events.iter().any(|e| e == kind || e == "*")
}

/// Whether a rule subscribed to `events` wants `event`.
///
/// `"*"` means every event except `NOTIFICATION_SENT`/`NOTIFICATION_FAILED`: those must be
/// named, and even then an event about the delivery of a `NOTIFICATION_*` event is not
/// delivered, so a dead receiver subscribed to its own failures cannot feed a loop.
pub fn wants(events: &[String], event: &crate::services::bus::BusEvent) -> bool {
    let named = events.iter().any(|e| *e == event.kind);
    if event.kind.starts_with("NOTIFICATION_") {
        let about_notification = event.data().get("event_type").and_then(|t| t.as_str()).is_some_and(|t| t.starts_with("NOTIFICATION_"));
        return named && !about_notification;
    }
    may_want(events, &event.kind)
}

/// The `X-Agt-Signature` value of `body` under `secret`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a run-time rule the way the config checks `[[notify.webhooks]]`.
fn check_rule(rule: &NewWebhookRule) -> Result<(), ApiError> {
    parse_url(&rule.url).map_err(|e| ApiError::invalid("invalid_url", e))?;
    if rule.events.is_empty() {
        return Err(ApiError::invalid("invalid_events", "events needs at least one event type, or [\"*\"] for all"));
    }
    for e in &rule.events {
        if e != "*" && !crate::services::bus::EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                "invalid_events",
                format!(
                    "unknown event type {}; expected \"*\" or one of {}",
                    crate::api::quote::quoted(e),
                    crate::services::bus::EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    if let Some(secret) = &rule.secret {
        check_secret(secret).map_err(|e| ApiError::invalid("invalid_secret", e))?;
        // What `GET /api/notifications/rules` shows, sent back (a rule copied from the
        // list): taken as the key, every post would be signed with one the receiver does
        // not have. The config refuses it the same way.
        if secret == MASKED_SECRET {
            return Err(ApiError::invalid(
                "invalid_secret",
                format!(
                    "\"{MASKED_SECRET}\" is the masked value the rule list shows, not a secret: give the webhook's real secret, \
                     or leave secret out to send unsigned"
                ),
            ));
        }
    }
    Ok(())
}

/// The longest signing key a webhook may have, in bytes: free text in agt is at most 256
/// bytes (DESIGN.md §7).
pub const MAX_SECRET_BYTES: usize = 256;

/// Checks a webhook's signing key, for a run-time rule and for `[[notify.webhooks]]`
/// alike, so the two take the same secrets.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() > MAX_SECRET_BYTES {
        return Err(format!("a secret is at most {MAX_SECRET_BYTES} bytes, got {} bytes", secret.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Event;

    fn event(kind: &str, data: serde_json::Value) -> crate::services::bus::BusEvent {
        crate::services::bus::BusEvent::from_event(Event {
            seq: 1,
            event_id: "e".into(),
            kind: kind.into(),
            source: "t".into(),
            timestamp: "now".into(),
            data,
        })
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(signature("other", b"what do ya want for nothing?"), signature("Jefe", b"what do ya want for nothing?"));
    }

    #[test]
    fn tuning_from_the_environment_is_checked() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(Tuning::from_vars(&env(&[])), Ok(Tuning::default()));
        assert_eq!(Tuning::from_vars(&env(&[("AGT_NOTIFY_TIMEOUT_MS", "")])), Ok(Tuning::default()), "empty is unset");
        let t = Tuning::from_vars(&env(&[
            ("AGT_NOTIFY_BACKOFF_MS", "50"),
            ("AGT_NOTIFY_TIMEOUT_MS", " 300 "),
            ("AGT_NOTIFY_MAX_ATTEMPTS", "2"),
        ]));
        let t = t.unwrap();
        assert_eq!((t.backoff_base, t.timeout, t.max_attempts), (Duration::from_millis(50), Duration::from_millis(300), 2));
        for (name, value) in [
            ("AGT_NOTIFY_TIMEOUT_MS", "5s"),
            ("AGT_NOTIFY_TIMEOUT_MS", "0"),
            ("AGT_NOTIFY_BACKOFF_MS", "-1"),
            ("AGT_NOTIFY_MAX_ATTEMPTS", "1001"),
            ("AGT_NOTIFY_MAX_ATTEMPTS", "ten"),
        ] {
            let vars: &'static [(&'static str, &'static str)] = Box::leak(vec![(name, value)].into_boxed_slice());
            let e = Tuning::from_vars(&env(vars)).unwrap_err();
            assert!(e.starts_with(&format!("{name}: expected a whole number")) && e.ends_with(&format!("got {value:?}")), "{e}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let t = Tuning::default();
        let secs: Vec<u64> = (1..=12).map(|n| t.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(t.backoff(u32::MAX), Duration::from_secs(300));
        let fast = Tuning { backoff_base: Duration::from_millis(50), ..t };
        assert_eq!(fast.backoff(3), Duration::from_millis(200));
    }

    #[test]
    fn rules_match_named_types_and_star() {
        let created = event("USER_CREATED", serde_json::json!({}));
        assert!(wants(&list(&["USER_CREATED"]), &created));
        assert!(wants(&list(&["TRADE_EXECUTED", "*"]), &created));
        assert!(!wants(&list(&["TRADE_EXECUTED"]), &created));
        assert!(!wants(&[], &created));
    }

    #[test]
    fn notification_events_go_only_where_named_and_never_loop() {
        let failed = event("NOTIFICATION_FAILED", serde_json::json!({"event_type": "TRADE_EXECUTED"}));
        assert!(!wants(&list(&["*"]), &failed));
        assert!(wants(&list(&["NOTIFICATION_FAILED"]), &failed));
        let about_itself = event("NOTIFICATION_FAILED", serde_json::json!({"event_type": "NOTIFICATION_FAILED"}));
        assert!(!wants(&list(&["NOTIFICATION_FAILED", "*"]), &about_itself));
    }
}
