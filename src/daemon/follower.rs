//! Feeds bus events to a service that builds its state from them (audit, health, market,
//! notify), resuming after the last event the service has recorded.
//!
//! The service answers "the last sequence I recorded" and ignores anything at or below
//! it, so replaying after a restart (of the daemon or of the service) neither loses nor
//! doubles an event. A feed that falls behind the bus's live channel (a service slower
//! than the order flow) replays from the store after the last event it handed over, not
//! after the last one the service recorded: the ones in between already wait in the
//! service's mailbox, and handing them over again made a service that was behind fall
//! further behind.
//!
//! `wants` keeps from a service the event types it does nothing with (market builds its
//! tape from trades only, health its history from service lifecycle events): at several
//! events per order, a mailbox message and a transaction for each would cost more than
//! the work the service does. `seen` tells how far the feed has gone, delivered or
//! skipped: a reader that needs the service caught up waits for `seen`, then for one
//! round trip through the service's mailbox (behind everything delivered).

use crate::services::actor::{Handle, Reply, State};
use crate::services::bus::{Bus, BusEvent};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub fn spawn<C: Send + 'static>(
    bus: Bus,
    handle: Handle<C>,
    last_seq: fn(Reply<u64>) -> C,
    wrap: fn(std::sync::Arc<BusEvent>) -> C,
    wants: fn(&str) -> bool,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Release;
    tokio::spawn(async move {
        // After falling behind the live feed: the last event handed over, and the
        // service's restart count then.
        let mut behind: Option<(u64, u32)> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if handle.status.state() != State::Running {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let restarts = handle.status.restarts.load(std::sync::atomic::Ordering::Relaxed);
            let mut live = bus.subscribe();
            // Fallen behind, the feed goes on after what it handed over: those events
            // wait in the service's mailbox, and asking the service (which answers what
            // it has *recorded*) would hand them over twice, more work for a service that
            // is already behind. After a restart (or at first) the service is asked.
            let resume = behind.take().filter(|&(_, r)| r == restarts).map(|(last, _)| last);
            let mut last = match resume {
                Some(last) => last,
                None => match handle.call(last_seq).await {
                    Ok(last) => last,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            // Replay what the service has not seen yet.
            loop {
                let (b, from) = (bus.clone(), last);
                let page = tokio::task::spawn_blocking(move || b.read_since(from, None, 1000)).await;
                let Ok(Ok(page)) = page else { break };
                let n = page.len();
                for e in page {
                    last = e.seq;
                    if wants(&e.kind) {
                        handle.tell(wrap(std::sync::Arc::new(e)));
                    }
                }
                seen.store(last, Release);
                if n < 1000 {
                    break;
                }
            }
            // Then follow, until the service restarts or we fall behind.
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    r = live.recv() => match r {
                        Ok(e) => {
                            if e.seq > last {
                                last = e.seq;
                                if wants(&e.kind) {
                                    handle.tell(wrap(e));
                                }
                                seen.store(last, Release);
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            behind = Some((last, restarts));
                            break;
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = tick.tick() => {
                        if handle.status.restarts.load(std::sync::atomic::Ordering::Relaxed) != restarts {
                            break;
                        }
                    }
                    _ = shutdown.changed() => return,
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::actor::{Envelope, Status};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    enum Cmd {
        LastSeq(Reply<u64>),
        Event(Arc<BusEvent>),
    }

    /// A follower that falls behind the live feed goes on after what it handed over,
    /// instead of handing over again what the service has not recorded yet.
    #[test]
    fn a_follower_that_falls_behind_hands_over_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, _ctx) = crate::services::actor::ServiceCtx::for_tests(dir.path());
        // A service that records nothing (its last recorded seq stays 0) and keeps what
        // it is handed.
        let told = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Status::new("test"));
        status.set_state(State::Running);
        let keep = told.clone();
        let handle = Handle::routed(
            move |e| {
                match e {
                    Envelope::Cmd(Cmd::LastSeq(r)) => drop(r.send(Ok(0))),
                    Envelope::Cmd(Cmd::Event(e)) => keep.lock().unwrap().push(e.seq),
                    Envelope::Control(_) => {}
                }
                true
            },
            status,
        );
        let seen = Arc::new(AtomicU64::new(0));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        // One thread: the follower runs only while the test awaits.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let published = |n: u64| {
            let target = bus.last_seq() + n;
            for i in 0..n {
                bus.publish("CONFIG_CHANGED", "config", serde_json::json!({"i": i}));
            }
            while bus.last_seq() < target {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let wait_until = |n: u64| {
            rt.block_on(async {
                while seen.load(Ordering::Acquire) < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        rt.block_on(async { spawn(bus.clone(), handle, Cmd::LastSeq, Cmd::Event, |_| true, seen.clone(), shutdown) });
        wait_until(0);
        published(100);
        wait_until(100);
        // More than the live feed holds, while the follower cannot run: it falls behind.
        published(9000);
        wait_until(9100);
        let told = told.lock().unwrap().clone();
        let twice = told.len() - told.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(twice, 0, "{twice} events handed over twice");
        assert_eq!(told.len(), 9100, "every event handed over");
        assert!(told.windows(2).all(|w| w[0] < w[1]), "in order");
    }
}
