//! The daemon's shared state: one handle per service, the bus, the live settings.
//!
//! Routes reach services only through these handles (typed messages), never through a
//! service's store or state.

use crate::daemon::follower::Progress;
use crate::daemon::supervisor::Supervisor;
use crate::daemon::Home;
use crate::services::actor::Handle;
use crate::services::bus::Bus;
use crate::services::config::SharedSettings;
use crate::services::{audit, auth, config, health, market, orders, trading, users};
use std::sync::Arc;
use std::time::Instant;

pub struct App {
    pub home: Home,
    pub version: &'static str,
    pub started: Instant,
    pub started_at: String,
    /// The settings the daemon started with: what a key that applies only at a start
    /// (`durability`, `http.listen`, …) runs with until the next one, whatever has been
    /// saved since (`GET /api/config/pending`).
    pub started_with: crate::services::config::settings::Settings,
    pub bus: Bus,
    pub settings: SharedSettings,
    pub supervisor: Arc<Supervisor>,
    pub config: Handle<config::service::Cmd>,
    pub health: Handle<health::Cmd>,
    pub audit: Handle<audit::Cmd>,
    pub users: Handle<users::Cmd>,
    pub auth: Handle<auth::Cmd>,
    pub risk: Handle<crate::services::risk::Cmd>,
    pub market: Handle<market::Cmd>,
    pub trading: Handle<trading::Cmd>,
    pub orders: Handle<orders::Cmd>,
    /// New orders, to the trading lane that runs orders, risk and trading together.
    pub placements: Handle<crate::services::lane::LaneCmd>,
    pub notify: Handle<crate::services::notify::Cmd>,
    /// The users service's read model: lookups without a round trip (read only here).
    pub directory: crate::services::users::Directory,
    /// The auth service's read model: bearer tokens checked without a round trip.
    pub tokens: crate::services::auth::Tokens,
    /// Audit's journal of commands: a command is answered once it is in it.
    pub command_log: crate::services::audit::CommandLog,
    /// Writes refused by the caller's role, by actor: audited one by one up to a bound
    /// per window, then counted (`daemon::refusals`).
    pub refused_commands: crate::daemon::refusals::Refusals,
    /// Requests refused for want of a valid bearer token, by client address: logged one
    /// by one up to the same bound, then counted.
    pub refused_requests: crate::daemon::refusals::Refusals,
    /// The market's instruments (its read model, shared with the services' context): the
    /// order saga and the transfer routes read them without a round trip to market.
    pub instruments: crate::services::market::Listed,
    /// Set once start-up recovery (interrupted sagas) has finished: `/ready` waits for it.
    pub recovered: std::sync::atomic::AtomicBool,
    /// How far each service's event feed has gone (`daemon::follower`).
    pub feeds: Feeds,
    /// How long a read of what the bus builds waits for it ([`SYNC_WAIT`], or
    /// `AGT_SYNC_WAIT_MS`: [`sync_wait_from_vars`]).
    pub sync_wait: std::time::Duration,
    /// Flips to true when the daemon begins to shut down: long streams end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Read-your-writes for readers of the bus: waits (until `deadline` at the latest)
    /// until every event of what was acknowledged before this call is committed on the
    /// bus. The trading lane answers a placement before its record commits, so it is
    /// asked first (one round trip, answered behind that commit), then the bus.
    pub async fn sync_events(&self, deadline: tokio::time::Instant) -> Freshness {
        // A lane that is down answers at once (503): what it had not flushed is redone
        // from its journal when it starts, and waiting here would not bring it sooner.
        // With no wait at all (`AGT_SYNC_WAIT_MS=0`) nothing is checked: marked behind.
        let flushed =
            deadline > tokio::time::Instant::now() && tokio::time::timeout_at(deadline, self.orders.call(orders::Cmd::Sync)).await.is_ok();
        let unstored = self.bus.sync(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        match (flushed, unstored) {
            (true, 0) => Freshness::Current,
            // The lane's unflushed events are not counted yet: at least one is missing.
            (_, n) => Freshness::Behind(n.max(1)),
        }
    }

    /// Waits (at most [`App::sync_wait`] in all) until `feed` has handed its service every
    /// event published so far, or skipped it: a call to the service after this comes
    /// through its mailbox behind them, so a client reads what it has just done. Says
    /// whether it got there; a reader answers anyway, marked ([`Freshness::mark`]).
    pub async fn feed_caught_up(&self, feed: &Progress) -> Freshness {
        let deadline = tokio::time::Instant::now() + self.sync_wait;
        let on_bus = self.sync_events(deadline).await;
        let target = self.bus.last_seq();
        let seen = || feed.seen.load(std::sync::atomic::Ordering::Acquire);
        while seen() < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        match (on_bus, target.saturating_sub(seen())) {
            (Freshness::Current, 0) => Freshness::Current,
            (Freshness::Current, n) => Freshness::Behind(n),
            (Freshness::Behind(b), n) => Freshness::Behind(b + n),
        }
    }
}

/// The longest a read of what the bus builds waits for it to catch up with what was
/// acknowledged before the read ([`App::sync_events`], [`App::feed_caught_up`]). Under
/// normal load that takes milliseconds; on a loaded machine the bus and the feeds, which
/// run at a lower priority (`trading.background_nice`), fall seconds behind (over 2 s at
/// nice 10 beside three CPU hogs: the 2 s this was, per step, let a client miss its own
/// trade). Long enough for that, well inside a client's timeout (the CLI's is 60 s); a
/// feed that is stuck (its service down or its store full) is not waited for longer: the
/// read answers what it has, and says so.
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`SYNC_WAIT`], or `AGT_SYNC_WAIT_MS` from `env` (0 to 600,000; 0: no wait and no
/// check, every such read is answered marked behind, a test's way to see that marking). An empty
/// variable counts as unset; anything else out of range is an error naming the variable,
/// and the daemon refuses to start on it.
pub fn sync_wait_from_vars(env: &impl Fn(&str) -> Option<String>) -> Result<std::time::Duration, String> {
    const NAME: &str = "AGT_SYNC_WAIT_MS";
    let Some(raw) = env(NAME).filter(|v| !v.trim().is_empty()) else { return Ok(SYNC_WAIT) };
    match raw.trim().parse::<u64>() {
        Ok(ms) if ms <= 600_000 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!("{NAME}: expected a whole number of milliseconds from 0 to 600000, got {}", crate::api::quote::quoted(&raw))),
    }
}

pub use crate::api::BEHIND_HEADER;

/// Whether a read of what the bus builds shows everything acknowledged before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// The wait ran out with at least this many events not yet there.
    Behind(u64),
}

impl Freshness {
    /// `answer` as read at this freshness: one that is behind carries [`BEHIND_HEADER`]
    /// (and a warning in the log, for the operator of a machine too loaded for its feeds),
    /// instead of passing for current.
    pub fn mark(self, what: &str, mut answer: axum::response::Response) -> axum::response::Response {
        if let Freshness::Behind(n) = self {
            if let Some(unlogged) = BEHIND_WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).note(std::time::Instant::now()) {
                tracing::warn!(
                    read = what,
                    events_behind = n,
                    earlier_unlogged = unlogged,
                    "answered a read behind the event bus: its feed did not catch up in time"
                );
            }
            answer.headers_mut().insert(BEHIND_HEADER, axum::http::HeaderValue::from(n));
        }
        answer
    }

    /// For a change whose meaning depends on the service having seen every earlier event
    /// (a notify rule, a market import): refused (503, nothing changed) rather than made
    /// against a stale view.
    pub fn require_current(self, service: &str) -> Result<(), crate::api::ApiError> {
        match self {
            Freshness::Current => Ok(()),
            Freshness::Behind(n) => Err(crate::api::ApiError::new(
                503,
                "service_unavailable",
                format!(
                    "the {service} service is {n} or more events behind and did not catch up in time; nothing was changed: retry shortly"
                ),
            )),
        }
    }
}

/// The warnings of reads answered behind the bus: a machine that stays too loaded for its
/// feeds answers every such read so, and a dashboard polling each second would fill the
/// log with the same line; one a [`Throttle::EVERY`] says it, with how many went unlogged.
static BEHIND_WARNINGS: std::sync::Mutex<Throttle> = std::sync::Mutex::new(Throttle::new());

/// At most one log line per [`Throttle::EVERY`], counting those it held back.
#[derive(Debug)]
struct Throttle {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl Throttle {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    const fn new() -> Throttle {
        Throttle { last: None, held_back: 0 }
    }

    /// Whether to log now: `Some(n)` with the `n` held back since the last line logged.
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::EVERY => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// The progress of each service's event feed: routes that read what audit, market or
/// notify build wait on theirs (health's history is read by nobody who must see their
/// own write), and `/metrics` shows how far each is behind the bus (`agt_feed_behind`).
#[derive(Debug, Default)]
pub struct Feeds {
    pub audit: Arc<Progress>,
    pub health: Arc<Progress>,
    pub market: Arc<Progress>,
    pub notify: Arc<Progress>,
}

impl Feeds {
    /// Each feed with the name of the service it feeds.
    pub fn each(&self) -> [(&'static str, &Progress); 4] {
        [("audit", &self.audit), ("health", &self.health), ("market", &self.market), ("notify", &self.notify)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_behind_are_logged_once_a_window_with_the_count_held_back() {
        let mut t = Throttle::new();
        let t0 = Instant::now();
        assert_eq!(t.note(t0), Some(0), "the first is logged");
        assert_eq!(t.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.note(t0 + Throttle::EVERY - Duration::from_millis(1)), None);
        assert_eq!(t.note(t0 + Throttle::EVERY), Some(2), "the next window's first says how many were held back");
        assert_eq!(t.note(t0 + Throttle::EVERY * 3), Some(0));
    }
}
