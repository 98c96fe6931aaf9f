//! When the daemon's background work for the measured phase is done: the report's
//! `catch_up_ms`.
//!
//! A placement is answered once it is durable; what follows it runs below the order path
//! and may still be going when the last answer comes: the trading lane's store records,
//! the event bus storing the events, and the services that build on them (audit's
//! hash chain, market's tape and candles, notify's rules, health's history). Under a
//! closed-loop overload audit in particular falls behind and catches up afterwards. A
//! run that reported orders/s and CPU per order without that work would flatter a
//! daemon that only defers it, so the bench waits for it, says how long it took, and
//! counts the daemon's CPU through it as well.
//!
//! The wait: one market read (`GET /api/trades/{symbol}?limit=1`), which the daemon
//! answers only after the lane has flushed and the bus has stored every event published
//! so far; then `/metrics` until every service's feed has handed over what the bus
//! holds (`agt_feed_behind`), every mailbox is empty (`agt_mailbox_depth`) and the bus
//! holds nothing unstored (`agt_bus_backlog`). A service may then still be committing
//! its last batch (a few milliseconds).

use super::conn::Conn;
use hyper::Method;
use std::time::{Duration, Instant};

/// The longest the bench waits; a daemon still busy after it is reported as not caught up.
pub const LIMIT: Duration = Duration::from_secs(60);

/// How often `/metrics` is read meanwhile.
const POLL: Duration = Duration::from_millis(2);

/// Waits until the daemon's background work is done, at most [`LIMIT`]; `None` if it
/// was not by then, or the daemon does not say (`/metrics` unreadable, or a daemon
/// without `agt_feed_behind`). The time counts from `since`, the phase's last answer.
pub async fn wait(conn: &mut Conn, symbol: &str, since: Instant) -> Option<Duration> {
    let sync = conn.request(Method::GET, &format!("/api/trades/{symbol}?limit=1"), None).await.ok()?;
    if !sync.is_success() {
        return None;
    }
    loop {
        let answer = conn.request(Method::GET, "/metrics", None).await.ok()?;
        if !answer.is_success() {
            return None;
        }
        if settled(std::str::from_utf8(&answer.body).ok()?)? {
            return Some(since.elapsed());
        }
        if since.elapsed() > LIMIT {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether a `/metrics` text shows no background work left: every `agt_feed_behind`,
/// `agt_mailbox_depth` and `agt_bus_backlog` sample 0. `None` when it has no
/// `agt_feed_behind` (a daemon that does not say).
pub fn settled(metrics: &str) -> Option<bool> {
    let mut feeds = false;
    let mut idle = true;
    for line in metrics.lines() {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if !matches!(name, "agt_feed_behind" | "agt_mailbox_depth" | "agt_bus_backlog") {
            continue;
        }
        feeds |= name == "agt_feed_behind";
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        idle &= value == Some(0.0);
    }
    feeds.then_some(idle)
}

#[cfg(test)]
mod tests {
    use super::settled;

    const IDLE: &str = "# HELP agt_feed_behind Events …\n# TYPE agt_feed_behind gauge\n\
        agt_feed_behind{service=\"audit\"} 0\nagt_feed_behind{service=\"market\"} 0\n\
        agt_mailbox_depth{service=\"audit\"} 0\nagt_mailbox_depth{service=\"orders\"} 0\n\
        agt_bus_backlog 0\nagt_bus_events_total{type=\"ORDER_CREATED\"} 512\n# EOF\n";

    #[test]
    fn settled_only_when_every_feed_mailbox_and_the_bus_are_at_zero() {
        assert_eq!(settled(IDLE), Some(true), "other series (a counter of 512) do not count");
        for busy in ["agt_feed_behind{service=\"audit\"} 0", "agt_mailbox_depth{service=\"audit\"} 0", "agt_bus_backlog 0"] {
            let text = IDLE.replace(busy, &busy.replace(" 0", " 8192"));
            assert_eq!(settled(&text), Some(false), "{busy} not at 0");
        }
        let garbled = IDLE.replace("agt_bus_backlog 0", "agt_bus_backlog x");
        assert_eq!(settled(&garbled), Some(false), "a value that does not parse is not 0");
    }

    #[test]
    fn a_daemon_without_the_feed_gauge_cannot_tell() {
        let old: String = IDLE.lines().filter(|l| !l.contains("agt_feed_behind")).map(|l| format!("{l}\n")).collect();
        assert_eq!(settled(&old), None);
    }
}
