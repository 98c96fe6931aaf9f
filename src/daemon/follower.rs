//! Feeds bus events to a service that builds its state from them (audit, health, market,
//! notify), resuming after the last event the service has recorded.
//!
//! The service answers "the last sequence I recorded" and ignores anything at or below
//! it, so replaying after a restart (of the daemon or of the service) neither loses nor
//! doubles an event.
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
            let Ok(mut last) = handle.call(last_seq).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
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
                        Err(RecvError::Lagged(_)) => break,
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
