//! Keeps `events.db` from growing without end: events older than `events.retain_s` are
//! pruned, but never one a service that follows the bus (audit, health, market, notify)
//! has not recorded yet, since after a restart it replays from its own position.
//!
//! A home grows ~2 KB of events per order; at a sustained 2,000 orders/s, nothing
//! pruned, that is ~380 GB a day in `events.db` alone. The audit log keeps every event
//! for good; the bus keeps them for replay (`GET /api/events?since=`, services catching
//! up), which needs a window, not all of history.

use crate::daemon::follower::Position;
use crate::services::bus::Bus;
use crate::services::config::SharedSettings;
use std::time::Duration;

/// How often the retention is checked: a tenth of it, at least every second and at most
/// every minute (a short retention, as tests set, is kept to within about a second).
fn check_every(retain: Duration) -> Duration {
    (retain / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The highest seq that may be pruned: the newest event older than the retention
/// (`older`), but none that a follower has not recorded, and never the newest event (the
/// next start numbers on from it). `None` if a follower did not answer.
fn prune_upto(older: u64, followers: &[Option<u64>], last: u64) -> Option<u64> {
    let mut upto = older.min(last.saturating_sub(1));
    for f in followers {
        upto = upto.min((*f)?);
    }
    Some(upto)
}

/// Runs until `shutdown`: each round asks the bus for the newest event past the
/// retention, the followers for their positions, and prunes what all of them allow.
pub fn spawn(bus: Bus, settings: SharedSettings, followers: Vec<Position>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        // The setting is looked at every second, so a hot change takes effect at once.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_round: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let Some(retain) = settings.get().events.retention() else { continue };
            if last_round.is_some_and(|at| at.elapsed() < check_every(retain)) {
                continue;
            }
            last_round = Some(tokio::time::Instant::now());
            let Some(cutoff) = chrono::Duration::from_std(retain).ok().and_then(|d| chrono::Utc::now().checked_sub_signed(d)) else {
                continue;
            };
            let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let b = bus.clone();
            let Ok(Ok(older)) = tokio::task::spawn_blocking(move || b.seq_before(&cutoff)).await else { continue };
            if older < bus.first_kept() {
                continue;
            }
            let mut positions = Vec::with_capacity(followers.len());
            for ask in &followers {
                positions.push(tokio::time::timeout(Duration::from_secs(5), ask()).await.ok().flatten());
            }
            match prune_upto(older, &positions, bus.last_seq()) {
                Some(upto) if upto >= bus.first_kept() => {
                    tracing::debug!(upto, "pruning events older than events.retain_s");
                    bus.prune(upto);
                }
                Some(_) => {}
                None => tracing::debug!("a service that follows the bus did not say where it stands; no events pruned this round"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_follower_has_not_recorded_is_pruned_nor_the_newest_event() {
        assert_eq!(prune_upto(100, &[Some(500), Some(700)], 1000), Some(100), "the retention bounds it");
        assert_eq!(prune_upto(100, &[Some(500), Some(40)], 1000), Some(40), "the slowest follower bounds it");
        assert_eq!(prune_upto(100, &[Some(500), None], 1000), None, "a follower that does not answer stops the round");
        assert_eq!(prune_upto(1000, &[Some(1000)], 1000), Some(999), "the newest event stays");
        assert_eq!(prune_upto(5, &[], 0), Some(0), "an empty bus prunes nothing");
    }

    #[test]
    fn a_retention_is_checked_about_ten_times_over_within_a_second_to_a_minute() {
        assert_eq!(check_every(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(check_every(Duration::from_secs(100)), Duration::from_secs(10));
        assert_eq!(check_every(Duration::from_secs(604_800)), Duration::from_secs(60));
    }
}
