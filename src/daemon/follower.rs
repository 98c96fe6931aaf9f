//! Feeds bus events to a service that builds its state from them (audit, health, market,
//! notify), resuming after the last event the service has recorded.
//!
//! The service answers "the last sequence I recorded" and ignores anything at or below
//! it, so replaying after a restart (of the daemon or of the service) neither loses nor
//! doubles an event. A feed that falls behind the bus's live channel (a service slower
//! than the order flow) replays from the store after the last event it handed over (or
//! told the service it passed), not after the last one the service recorded: the ones in between already wait in the
//! service's mailbox, and handing them over again made a service that was behind fall
//! further behind.
//!
//! A [`Filter::Only`] keeps from a service the event types it does nothing with (market
//! builds its tape from trades only, health its history from service lifecycle events,
//! notify queues only what a webhook names: `notify::Interest`):
//! at several events per order, a mailbox message and a transaction for each would cost
//! more than the work the service does. What the filter skips, the service is still told
//! it has passed (`passed`, after each replayed page and at most every 200 ms while
//! following), so that it records how far it has gone: otherwise it would record only its
//! last wanted event, and every start would replay from there (after a 3 M-order run
//! with its clean-up, health re-read all 11 M events, market the last 0.9 M, at every
//! start: 25 s of a core). `seen` tells how far the feed has gone, delivered or skipped:
//! a reader that needs the service caught up waits for `seen`, then for one round trip
//! through the service's mailbox (behind everything delivered).

use crate::services::actor::{Handle, Reply, State};
use crate::services::bus::{Bus, BusEvent};
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Events a feed hands over after the one that woke it before it looks at its tick and
/// shutdown again.
const DRAIN_AT_ONCE: usize = 256;

/// How a follower talks to its service.
pub struct Feed<C> {
    /// Asks for the last event the service has recorded.
    pub last_seq: fn(Reply<u64>) -> C,
    /// Hands over one event.
    pub event: fn(Handed) -> C,
    pub filter: Filter<C>,
}

/// One event handed to a service, with where the follower left the service before it.
///
/// The service's mailbox outlives a failed batch (the supervisor restarts the service on
/// the same mailbox), so the events of that batch are gone while the ones after it still
/// wait: applied, they would move the service's position past the lost ones for good.
/// `after` lets the service see the gap and skip the rest, until the follower, seeing
/// the restart, asks again and hands everything over from the service's position.
pub struct Handed {
    /// The seq of the event handed over, or passed, just before this one.
    pub after: u64,
    pub event: std::sync::Arc<BusEvent>,
}

impl Handed {
    /// Whether a service whose position is `last` applies this event: not one it has
    /// (a replay), nor one after a gap.
    pub fn is_next(&self, last: u64) -> bool {
        self.after <= last && self.event.seq > last
    }
}

/// Every event up to `seq` the service wants has been handed over (see [`Handed`] for
/// `after`).
pub struct Passed {
    pub after: u64,
    pub seq: u64,
}

impl Passed {
    /// Whether a service whose position is `last` moves it to `seq`.
    pub fn is_next(&self, last: u64) -> bool {
        self.after <= last && self.seq > last
    }
}

/// Which events a service is handed.
pub enum Filter<C> {
    All,
    /// Only the event types `wants` accepts; `passed(seq)` tells the service that every
    /// event up to `seq` it wants has been handed over, so it can record `seq` as its
    /// position (it comes through the mailbox behind those events).
    Only {
        wants: Box<dyn Fn(&str) -> bool + Send + Sync>,
        passed: fn(Passed) -> C,
    },
}

impl<C: Send + 'static> Filter<C> {
    fn wants(&self, kind: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Only { wants, .. } => wants(kind),
        }
    }

    /// Tells the service it has passed `last`, if the feed has gone beyond `told` (the
    /// last seq it was handed or told), and moves `told` there.
    fn tell_passed(&self, handle: &Handle<C>, last: u64, told: &mut u64) {
        if let Filter::Only { passed, .. } = self {
            if last > *told {
                handle.tell(passed(Passed { after: *told, seq: last }));
            }
        }
        *told = last;
    }
}

/// How far a feed has gone: the last event it handed over or skipped. A reader that needs
/// the service caught up waits for it (`App::feed_caught_up`, see the module's docs);
/// right after start-up that includes the replay of what the service had not recorded.
#[derive(Debug, Default)]
pub struct Progress {
    pub seen: std::sync::atomic::AtomicU64,
}

/// Asks a follower's service for the last event it has recorded (`None` if it does not
/// answer): the bus keeps every event after it (`daemon::retention`).
pub type Position = Box<dyn Fn() -> futures::future::BoxFuture<'static, Option<u64>> + Send + Sync>;

/// A service's mailbox holds at most about this many messages from its follower. Past
/// it the follower waits until the service has taken half of them; meanwhile the bus's
/// live channel overflows, and the follower later reads what it skipped from
/// `events.db`, which holds it anyway. Without a bound, a service slower than the order
/// flow let its mailbox, and the daemon's memory, grow for as long as the flow lasted
/// (audit at a lower priority, session 18: 53 k messages after 20 s of overload).
pub const MAILBOX_BOUND: i64 = 8192;

/// Waits until `handle`'s mailbox has room again (see [`MAILBOX_BOUND`]). False if the
/// daemon is stopping.
async fn room<C>(handle: &Handle<C>, shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    if handle.status.depth.load(Relaxed) < MAILBOX_BOUND {
        return true;
    }
    while handle.status.depth.load(Relaxed) > MAILBOX_BOUND / 2 {
        if *shutdown.borrow() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Starts feeding `handle`'s service; returns how to ask where it stands.
/// A runtime of the followers' own, on a thread at the background priority
/// (`services::priority`), running until `shutdown`: spawn them inside its
/// [`tokio::runtime::Handle::enter`]. On the HTTP workers' runtime, every bus commit woke
/// a worker for four feeds' work nobody's answer waits for, at the order path's priority
/// and across two threads; on one lowered thread, the feeds of a commit run in one
/// wake-up (closed loop at C = 32: +3 % orders/s, seven pairs; BENCHMARKS.md,
/// session 27). `spawn_blocking` (a fallen-behind feed's replay) gets threads of its own
/// that start lowered too.
pub fn background_runtime(mut shutdown: tokio::sync::watch::Receiver<bool>) -> std::io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new().name("followers".into()).spawn(move || {
        crate::services::priority::lower_this_thread();
        rt.block_on(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    })?;
    Ok(handle)
}

pub fn spawn<C: Send + 'static>(
    bus: Bus,
    handle: Handle<C>,
    feed: Feed<C>,
    progress: std::sync::Arc<Progress>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Position {
    use std::sync::atomic::Ordering::Release;
    let Feed { last_seq, event: wrap, filter } = feed;
    let asked = handle.clone();
    let position: Position = Box::new(move || {
        let h = asked.clone();
        Box::pin(async move { h.call(last_seq).await.ok() })
    });
    tokio::spawn(async move {
        // After falling behind the live feed: the last event handed over or passed, and
        // the service's restart count then.
        let mut behind: Option<(u64, u32)> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if handle.status.state() != State::Running {
                // Looks at shutdown again at least every 20 ms.
                let _ = tokio::time::timeout(Duration::from_millis(20), handle.status.until_running()).await;
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
            let mut told = last;
            // Replay what the service has not seen yet.
            loop {
                let (b, from) = (bus.clone(), last);
                let page = tokio::task::spawn_blocking(move || b.read_since(from, None, 1000)).await;
                let Ok(Ok(page)) = page else { break };
                let n = page.len();
                for e in page {
                    last = e.seq;
                    if filter.wants(&e.kind) {
                        if !room(&handle, &shutdown).await {
                            return;
                        }
                        handle.tell(wrap(Handed { after: told, event: std::sync::Arc::new(e) }));
                        told = last;
                    }
                }
                filter.tell_passed(&handle, last, &mut told);
                progress.seen.store(last, Release);
                if n < 1000 {
                    break;
                }
            }
            // Then follow, until the service restarts or we fall behind.
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            'follow: loop {
                let first = tokio::select! {
                    r = live.recv() => r,
                    _ = tick.tick() => {
                        // A restarted service may have lost events from its mailbox:
                        // it is asked again, not told it has passed them.
                        if handle.status.restarts.load(std::sync::atomic::Ordering::Relaxed) != restarts {
                            break;
                        }
                        filter.tell_passed(&handle, last, &mut told);
                        continue;
                    }
                    _ = shutdown.changed() => return,
                };
                // The event that woke the feed, then those already waiting behind it (a
                // bus commit sends a batch at once), up to a bound so that the tick still
                // comes round: `select!` builds and polls all three of its futures each
                // time, which per event was most of the feeds' cost on the HTTP workers.
                let mut next = Some(first);
                let mut drained = 0;
                while let Some(r) = next.take() {
                    match r {
                        Ok(e) => {
                            if e.seq > last {
                                last = e.seq;
                                if filter.wants(&e.kind) {
                                    if !room(&handle, &shutdown).await {
                                        return;
                                    }
                                    handle.tell(wrap(Handed { after: told, event: e }));
                                    told = last;
                                }
                                progress.seen.store(last, Release);
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            // The feed goes on from `last`: the service is told it has
                            // passed what was skipped up to there, or the next event
                            // would follow a position the service never heard of.
                            filter.tell_passed(&handle, last, &mut told);
                            behind = Some((last, restarts));
                            break 'follow;
                        }
                        Err(RecvError::Closed) => return,
                    }
                    drained += 1;
                    if drained < DRAIN_AT_ONCE {
                        next = match live.try_recv() {
                            Ok(e) => Some(Ok(e)),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                            Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                        };
                    }
                }
            }
        }
    });
    position
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::actor::{Envelope, Status};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    enum Cmd {
        LastSeq(Reply<u64>),
        Event(Handed),
        Passed(Passed),
    }

    /// A filtered feed tells its service how far it has gone past the events it wanted:
    /// after each replayed page and, while following, once the feed has moved on, but not
    /// again while nothing happens.
    #[test]
    fn a_filtered_feed_tells_its_service_the_events_it_passed() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, _ctx) = crate::services::actor::ServiceCtx::for_tests(dir.path());
        let published = |kinds: &mut dyn Iterator<Item = &'static str>| {
            let mut target = bus.last_seq();
            for kind in kinds {
                bus.publish(kind, "test", serde_json::json!({}));
                target += 1;
            }
            while bus.last_seq() < target {
                std::thread::sleep(Duration::from_millis(1));
            }
            target
        };
        let base = bus.last_seq();
        // Before the follower starts: 1,500 events, one of them wanted.
        let end = published(&mut (1..=1500).map(|i| if i == 700 { "WANTED" } else { "OTHER" }));
        assert_eq!(end, base + 1500);
        let (handle, log) = recorder(base);
        let progress = Arc::new(Progress::default());
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let logged = |entry: (&str, u64)| {
            rt.block_on(async {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !log.lock().unwrap().iter().any(|(k, _, s)| (k.as_str(), *s) == entry) {
                    assert!(tokio::time::Instant::now() < deadline, "{entry:?} never came: {:?}", log.lock().unwrap());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let feed = Feed {
            last_seq: Cmd::LastSeq,
            event: Cmd::Event,
            filter: Filter::Only { wants: Box::new(|k| k == "WANTED"), passed: Cmd::Passed },
        };
        let position = rt.block_on(async { spawn(bus.clone(), handle, feed, progress.clone(), shutdown) });
        logged(("passed", base + 1500));
        assert_eq!(rt.block_on(position()), Some(base), "the position is what the service answers it recorded");
        let entries =
            |log: &Mutex<Vec<(String, u64, u64)>>| log.lock().unwrap().iter().map(|(k, _, s)| (k.clone(), s - base)).collect::<Vec<_>>();
        let replayed = vec![("WANTED".to_string(), 700), ("passed".to_string(), 1000), ("passed".to_string(), 1500)];
        assert_eq!(entries(&log), replayed, "the wanted event, then each page's end");

        // Following: ten skipped events, one wanted, five skipped.
        let end = published(&mut (1..=16).map(|i| if i == 11 { "WANTED" } else { "OTHER" }));
        logged(("passed", end));
        let followed = entries(&log).split_off(replayed.len());
        assert!(followed.contains(&("WANTED".to_string(), 1511)), "{followed:?}");
        let passed: Vec<u64> = followed.iter().filter(|(k, _)| k == "passed").map(|(_, s)| *s).collect();
        assert!(passed.windows(2).all(|w| w[0] < w[1]) && passed.last() == Some(&1516), "{passed:?}");
        // Idle: nothing more to tell (two ticks of the follower).
        let before = log.lock().unwrap().len();
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(450)).await });
        assert_eq!(log.lock().unwrap().len(), before, "told again while nothing happened: {:?}", entries(&log));
        // Each message says where the one before it left the service.
        let log = log.lock().unwrap();
        let afters: Vec<u64> = log.iter().map(|(_, after, _)| *after).collect();
        let before: Vec<u64> = std::iter::once(base).chain(log.iter().map(|(_, _, seq)| *seq)).take(log.len()).collect();
        assert_eq!(afters, before);
    }

    /// A service applies the next event or mark, and neither one it has nor one after a gap
    /// (messages lost with a failed batch).
    #[test]
    fn a_service_applies_what_follows_its_position_only() {
        let seq = 8;
        let event = |seq: u64| crate::api::Event {
            seq,
            event_id: "e".into(),
            kind: "OTHER".into(),
            source: "test".into(),
            timestamp: "now".into(),
            data: serde_json::json!({}),
        };
        let handed = |after: u64| Handed { after, event: Arc::new(BusEvent::from_event(event(seq))) };
        assert!(handed(seq - 1).is_next(seq - 1), "the next one");
        assert!(!handed(seq - 1).is_next(seq), "one it has");
        assert!(!handed(seq - 1).is_next(seq - 2), "after a gap");
        assert!(handed(seq - 2).is_next(seq - 1), "its position moved on by itself");
        let passed = |after: u64| Passed { after, seq: 10 };
        assert!(passed(5).is_next(5) && passed(5).is_next(7));
        assert!(!passed(5).is_next(10) && !passed(5).is_next(4));
    }

    /// A follower that falls behind the live feed goes on after what it handed over,
    /// instead of handing over again what the service has not recorded yet.
    #[test]
    fn a_follower_that_falls_behind_hands_over_each_event_once() {
        let log = falling_behind(Filter::All);
        let handed: Vec<u64> = log.iter().filter(|m| m.0).map(|m| m.2).collect();
        let twice = handed.len() - handed.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(twice, 0, "{twice} events handed over twice");
        assert_eq!(handed.len(), 10_100, "every event handed over");
        assert!(handed.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(log.iter().all(|m| m.0), "nothing passed: every event is wanted");
    }

    /// A filtered feed that falls behind tells its service how far it went before it goes
    /// on: otherwise the first event after the gap would say it follows events the
    /// service was never told about, and the service would ignore it and all after it.
    #[test]
    fn a_filtered_follower_that_falls_behind_keeps_its_service_in_step() {
        let log = falling_behind(Filter::Only { wants: Box::new(|k| k == "WANTED"), passed: Cmd::Passed });
        let handed: Vec<u64> = log.iter().filter(|m| m.0).map(|m| m.2).collect();
        assert_eq!(handed.len(), 5050, "every wanted event handed over once");
        assert!(handed.windows(2).all(|w| w[0] < w[1]), "in order");
        let before = std::iter::once(0).chain(log.iter().map(|m| m.2));
        let wrong = log.iter().zip(before).position(|(m, before)| m.1 != before);
        assert_eq!(wrong.map(|i| &log[i.saturating_sub(1)..(i + 1).min(log.len())]), None, "each message follows the one before it");
    }

    /// A service that takes nothing for a while holds at most [`MAILBOX_BOUND`] messages
    /// from its follower; once it takes them it still gets every event, each once and in
    /// order, what the live feed could not hold read back from the store.
    #[test]
    fn a_slow_service_holds_a_bounded_mailbox_and_still_gets_every_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, _ctx) = crate::services::actor::ServiceCtx::for_tests(dir.path());
        let base = bus.last_seq();
        let status = Arc::new(Status::new("test"));
        status.set_state(State::Running);
        // The events handed over and not yet taken, and the deepest the mailbox got.
        let (mailbox, deepest) = (Arc::new(Mutex::new(Vec::new())), Arc::new(std::sync::atomic::AtomicI64::new(0)));
        let (inbox, depth, st) = (mailbox.clone(), deepest.clone(), status.clone());
        let handle = Handle::routed(
            move |e| {
                depth.fetch_max(st.depth.load(Ordering::Relaxed), Ordering::Relaxed);
                match e {
                    Envelope::Cmd(Cmd::LastSeq(r)) => {
                        st.depth.fetch_sub(1, Ordering::Relaxed);
                        drop(r.send(Ok(base)))
                    }
                    Envelope::Cmd(Cmd::Event(h)) => inbox.lock().unwrap().push(h.event.seq - base),
                    Envelope::Cmd(Cmd::Passed(_)) => panic!("nothing is filtered"),
                    Envelope::Control(_) => {}
                }
                true
            },
            status.clone(),
        );
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let feed = Feed { last_seq: Cmd::LastSeq, event: Cmd::Event, filter: Filter::All };
        let _position = rt.block_on(async { spawn(bus.clone(), handle, feed, Default::default(), shutdown) });
        let total = 3 * MAILBOX_BOUND as u64;
        for i in 0..total {
            bus.publish("OTHER", "test", serde_json::json!({ "i": i }));
        }
        while bus.last_seq() < base + total {
            std::thread::sleep(Duration::from_millis(1));
        }
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
        let held = mailbox.lock().unwrap().len() as i64;
        assert!(held <= MAILBOX_BOUND, "{held} messages waiting");
        assert_eq!(status.depth.load(Ordering::Relaxed), held);
        // The service takes what waits, a while at a time, until it has every event.
        let mut taken = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while (taken.len() as u64) < total {
            assert!(std::time::Instant::now() < deadline, "{} of {total} events taken", taken.len());
            let batch = std::mem::take(&mut *mailbox.lock().unwrap());
            status.depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
            taken.extend(batch);
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(10)).await });
        }
        assert_eq!(taken, (1..=total).collect::<Vec<_>>(), "each event once, in order");
        assert!(deepest.load(Ordering::Relaxed) <= MAILBOX_BOUND + 1, "the mailbox got {} deep", deepest.load(Ordering::Relaxed));
    }

    /// Runs a follower on a service that records nothing (its position stays where it
    /// started) through 100 events, then 10,000 published while it cannot run (more than
    /// the live feed holds), every other one `WANTED`. Gives what the service was told, in order:
    /// (an event?, after, seq), seqs counted from the first published.
    fn falling_behind(filter: Filter<Cmd>) -> Vec<(bool, u64, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let (bus, _ctx) = crate::services::actor::ServiceCtx::for_tests(dir.path());
        let base = bus.last_seq();
        let (handle, log) = recorder(base);
        let progress = Arc::new(Progress::default());
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        // One thread: the follower runs only while the test awaits. Paused time: its
        // 200 ms timer cannot fire while the test publishes, so it meets the lag first.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        // Every other event is wanted, counting from the first.
        let published = |n: u64| {
            let target = bus.last_seq() + n;
            for i in bus.last_seq() - base..target - base {
                bus.publish(if i % 2 == 0 { "WANTED" } else { "OTHER" }, "test", serde_json::json!({"i": i}));
            }
            while bus.last_seq() < target {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let wait_until = |n: u64| {
            rt.block_on(async {
                while progress.seen.load(Ordering::Acquire) < base + n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let feed = Feed { last_seq: Cmd::LastSeq, event: Cmd::Event, filter };
        let _position = rt.block_on(async { spawn(bus.clone(), handle, feed, progress.clone(), shutdown) });
        // The follower has replayed the first event, and follows the live feed from then
        // on: the next 99 come live, the last of them skipped.
        published(1);
        wait_until(1);
        published(99);
        wait_until(100);
        // More than the live feed holds (by more than the bus's last batch, which may
        // still be on its way), while the follower cannot run: it falls behind at once.
        published(10_000);
        wait_until(10_100);
        let log = log.lock().unwrap().iter().map(|(kind, after, seq)| (kind != "passed", after - base, seq - base)).collect();
        log
    }

    /// A service whose position stays at `base` and which records what it is told, in
    /// order: (the event's type, or `passed`; after; seq).
    #[allow(clippy::type_complexity)]
    fn recorder(base: u64) -> (Handle<Cmd>, Arc<Mutex<Vec<(String, u64, u64)>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Status::new("test"));
        status.set_state(State::Running);
        let keep = log.clone();
        let taken = status.clone();
        let handle = Handle::routed(
            move |e| {
                if matches!(e, Envelope::Cmd(_)) {
                    taken.depth.fetch_sub(1, Ordering::Relaxed);
                }
                match e {
                    Envelope::Cmd(Cmd::LastSeq(r)) => drop(r.send(Ok(base))),
                    Envelope::Cmd(Cmd::Event(h)) => keep.lock().unwrap().push((h.event.kind.to_string(), h.after, h.event.seq)),
                    Envelope::Cmd(Cmd::Passed(p)) => keep.lock().unwrap().push(("passed".to_string(), p.after, p.seq)),
                    Envelope::Control(_) => {}
                }
                true
            },
            status,
        );
        (handle, log)
    }
}
