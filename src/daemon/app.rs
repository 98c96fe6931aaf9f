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
    /// Instruments the order saga has looked up (they never change once created).
    pub instruments: std::sync::RwLock<std::collections::HashMap<String, crate::api::Instrument>>,
    /// Set once start-up recovery (interrupted sagas) has finished: `/ready` waits for it.
    pub recovered: std::sync::atomic::AtomicBool,
    /// How far each service's event feed has gone (`daemon::follower`).
    pub feeds: Feeds,
    /// Flips to true when the daemon begins to shut down: long streams end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Read-your-writes for readers of the bus: waits (at most `timeout`) until every
    /// event of what was acknowledged before this call is committed on the bus. The
    /// trading lane answers a placement before its record commits, so it is asked first
    /// (one round trip, answered behind that commit), then the bus.
    pub async fn sync_events(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.orders.call(orders::Cmd::Sync)).await;
        self.bus.sync(timeout).await;
    }

    /// Waits (each step at most [`SYNC_WAIT`]) until `feed` has handed its service every
    /// event published so far, or skipped it: a call to the service after this comes
    /// through its mailbox behind them, so a client reads what it has just done.
    pub async fn feed_caught_up(&self, feed: &Progress) {
        self.sync_events(SYNC_WAIT).await;
        let target = self.bus.last_seq();
        let deadline = tokio::time::Instant::now() + SYNC_WAIT;
        while feed.seen.load(std::sync::atomic::Ordering::Acquire) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    }
}

/// The longest a read waits for each step of [`App::feed_caught_up`]: a service far
/// behind under load answers with what it has by then.
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
