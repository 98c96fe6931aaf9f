//! The supervisor: runs every service on its own thread and restarts it when it fails.
//!
//! A service that panics or returns an error is restarted with exponential backoff
//! (100 ms doubling to 5 s, and 100 ms again after a `window_s` without a failure: see
//! `Failures`); more than `max_restarts` failures within `window_s` marks it
//! `failed` — the daemon stays up and reports `degraded` until an operator restarts it.
//! A manual restart (`agt service restart`) finishes the queued work first and counts as a
//! restart. While a service is not running its handles answer 503 at once.

use crate::api::ServiceInfo;
use crate::services::actor::{run_incarnation, Control, Envelope, Exit, Handle, Service, ServiceCtx, State, Status};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Restart policy (config `[supervisor]`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

struct Entry {
    status: Arc<Status>,
    control: Box<dyn Fn(Control) -> bool + Send + Sync>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set just before the service is sent its stop (shared by the lane's three).
    told_to_stop: Arc<AtomicBool>,
}

/// All supervised services, in start order (shutdown runs in reverse).
#[derive(Default)]
pub struct Supervisor {
    entries: Vec<Entry>,
}

impl Supervisor {
    /// Starts `S` on its own thread and returns the handle callers use.
    pub fn spawn<S: Service>(&mut self, ctx: ServiceCtx) -> Handle<S::Cmd> {
        let (tx, rx) = mpsc::channel::<Envelope<S::Cmd>>();
        let status = Arc::new(Status::new(S::NAME));
        let handle = Handle::new(tx.clone(), status.clone());
        let st = status.clone();
        let told_to_stop = Arc::new(AtomicBool::new(false));
        let told = told_to_stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("svc-{}", S::NAME))
            .spawn(move || {
                if S::background(ctx.durability) {
                    crate::services::priority::lower_this_thread();
                }
                let statuses = vec![st.clone()];
                supervise(
                    ctx,
                    rx,
                    statuses,
                    &told,
                    |ctx, rx| run_incarnation::<S>(ctx, rx, &st),
                    |_| {
                        st.depth.fetch_sub(1, Ordering::Relaxed);
                    },
                )
            })
            .expect("spawning a service thread");
        let ctl = handle.clone();
        self.entries.push(Entry { status, control: Box::new(move |c| ctl.control(c)), thread: Mutex::new(Some(thread)), told_to_stop });
        handle
    }

    /// Starts the trading lane: orders, risk and trading on one thread (see
    /// `services::lane`), listed as three services that restart together.
    pub fn spawn_lane(&mut self, ctx: ServiceCtx) -> crate::services::lane::Handles {
        use crate::services::lane::{self, LaneCmd};
        let (tx, rx) = mpsc::channel::<Envelope<LaneCmd>>();
        let statuses = lane::Statuses::new();
        let wait = std::sync::Arc::new(crate::services::spin::AnswerWait::new(ctx.settings.clone()));
        let handles = lane::Handles::new(tx, &statuses, wait);
        let st = statuses.clone();
        let told_to_stop = Arc::new(AtomicBool::new(false));
        let told = told_to_stop.clone();
        let thread = std::thread::Builder::new()
            .name("svc-lane".into())
            .spawn(move || {
                let all = st.all();
                supervise(ctx, rx, all, &told, |ctx, rx| lane::run_incarnation(ctx, rx, &st), |c| st.dropped(c))
            })
            .expect("spawning the lane thread");
        let mut thread = Some(thread);
        for status in statuses.all() {
            let ctl = handles.clone();
            let told_to_stop = told_to_stop.clone();
            self.entries.push(Entry {
                status,
                control: Box::new(move |c| ctl.control(c)),
                thread: Mutex::new(thread.take()),
                told_to_stop,
            });
        }
        handles
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.status.name == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.status.name).collect()
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        self.entries
            .iter()
            .map(|e| {
                let s = &e.status;
                let started = s.started_at.lock().unwrap().clone();
                let state = s.state();
                ServiceInfo {
                    name: s.name.to_string(),
                    state: state.as_str().to_string(),
                    restarts: s.restarts.load(Ordering::Relaxed),
                    uptime_s: match (&started, state) {
                        (Some((at, _)), State::Running) => at.elapsed().as_secs(),
                        _ => 0,
                    },
                    started_at: started.map(|(_, t)| t),
                    last_error: s.last_error.lock().unwrap().clone(),
                    mailbox_depth: s.depth.load(Ordering::Relaxed).max(0) as u64,
                }
            })
            .collect()
    }

    pub fn all_running(&self) -> bool {
        self.entries.iter().all(|e| e.status.state() == State::Running)
    }

    /// Asks a service to restart (after its queued work). `false` if there is no such service.
    pub fn restart(&self, name: &str) -> bool {
        self.entry(name).map(|e| (e.control)(Control::Restart)).unwrap_or(false)
    }

    /// Fault injection: makes a service panic.
    pub fn crash(&self, name: &str) -> bool {
        self.entry(name).map(|e| (e.control)(Control::Crash)).unwrap_or(false)
    }

    pub fn has(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// Stops every service in reverse start order, each after its queued work. A
    /// service that fails before it is told to stop is restarted as ever, so that its
    /// queued work is done and it takes its stop in turn.
    pub fn shutdown(&self) {
        for e in self.entries.iter().rev() {
            e.told_to_stop.store(true, Ordering::SeqCst);
            (e.control)(Control::Stop);
            if let Some(t) = e.thread.lock().unwrap().take() {
                let _ = t.join();
            }
        }
    }

    /// Sets the `agt_service_up` and `agt_mailbox_depth` gauges (at scrape time).
    pub fn export_gauges(&self) {
        let m = crate::daemon::metrics::get();
        for e in &self.entries {
            let label = crate::daemon::metrics::ServiceLabel { service: e.status.name };
            m.service_up.get_or_create(&label).set((e.status.state() == State::Running) as i64);
            m.mailbox_depth.get_or_create(&label).set(e.status.depth.load(Ordering::Relaxed).max(0));
            // Every service's restart count is there from the first scrape, at 0, so a
            // rate() over it shows 0 rather than no data.
            let _ = m.service_restarts.get_or_create(&label);
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Restarts one thread's incarnations: a single service's, or the trading lane's three
/// services at once (they share a thread, so they fail and restart together).
///
/// Not once the thread was `told_to_stop`: its stop is a message in its mailbox, and an
/// incarnation that took it and then failed (its last commit or journal prune could not
/// be written) took it with it, so a new one would wait for a stop that never comes and
/// the daemon's stop would wait for it forever. Until then a failure restarts it even
/// while the daemon stops (other services are being stopped first): not restarted, its
/// queued work was answered 503 and left to the next start to redo.
fn supervise<C>(
    ctx: ServiceCtx,
    rx: mpsc::Receiver<Envelope<C>>,
    statuses: Vec<Arc<Status>>,
    told_to_stop: &AtomicBool,
    run: impl Fn(&ServiceCtx, &mpsc::Receiver<Envelope<C>>) -> Result<Exit, crate::services::actor::ServiceError>,
    dropped: impl Fn(&C),
) {
    let set = |s: State| statuses.iter().for_each(|st| st.set_state(s));
    let mut failures = Failures::default();
    // Whether the incarnations have been failing on a full disk (logged once).
    let mut full_streak = false;
    loop {
        // `[supervisor]` keys are hot: read the policy afresh after every incarnation.
        let policy = live_policy(&ctx);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&ctx, &rx)));
        let error = match outcome {
            Ok(Ok(Exit::Stop)) => {
                set(State::Stopped);
                return;
            }
            Ok(Ok(Exit::Restart)) => {
                statuses.iter().for_each(|st| clear_last_error(st));
                statuses.iter().for_each(|st| record_restart(&ctx, st, "requested by an operator"));
                failures.backoff = None;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(p) => panic_text(p.as_ref()),
        };
        let full = crate::services::disk_full::is_full(&error, &ctx.home.data_dir());
        if !(full && full_streak) {
            for status in &statuses {
                tracing::error!(service = status.name, error = %error, "service failed");
                *status.last_error.lock().unwrap() = Some(error.clone());
            }
        }
        if told_to_stop.load(Ordering::SeqCst) {
            for status in &statuses {
                tracing::error!(service = status.name, "the daemon is stopping: not restarted");
            }
            set(State::Stopped);
            return;
        }
        if full {
            // Before the state: a caller refused for it is told why.
            crate::services::disk_full::set_full();
        }
        set(State::Restarting);
        if full {
            // Not the service's fault, and not mended by restarting it sooner or later:
            // tried again every `disk_full::RETRY` for as long as it lasts, not counted
            // towards `failed`, and said once in the log rather than at every retry.
            crate::services::disk_full::set_full();
            if !full_streak {
                for status in &statuses {
                    tracing::error!(
                        service = status.name,
                        retry_every_ms = crate::services::disk_full::RETRY.as_millis() as u64,
                        "the disk is full: the service cannot write; it is started again until there is room, by itself"
                    );
                }
            }
            full_streak = true;
            failures.backoff = None;
            match refuse_while_full(&rx, &dropped) {
                Some(Control::Stop) => {
                    set(State::Stopped);
                    return;
                }
                Some(_) => statuses.iter().for_each(|st| record_restart(&ctx, st, "requested by an operator")),
                // Counted as a restart, though not announced (the bus cannot store the
                // event either): what watches the count (the feeds of audit, market,
                // health and notify; the saga's resume after the lane's restarts; notify's
                // sender) must see that an incarnation ended and its mailbox lost the
                // failed batch and what came meanwhile. Not seen, a feed went on from
                // past the gap, which its service skipped for good.
                None => statuses.iter().for_each(|st| {
                    st.restarts.fetch_add(1, Ordering::Relaxed);
                }),
            }
            continue;
        }
        full_streak = false;
        let Some(backoff) = failures.count(Instant::now(), &policy) else {
            set(State::Failed);
            for status in &statuses {
                ctx.bus.publish("SERVICE_FAILED", "health", serde_json::json!({"service": status.name, "error": error}));
                tracing::error!(service = status.name, "too many restarts; marked failed until `agt service restart`");
            }
            if !wait_for_restart(&rx, &dropped) {
                set(State::Stopped);
                return;
            }
            failures = Failures::default();
            statuses.iter().for_each(|st| clear_last_error(st));
            statuses.iter().for_each(|st| record_restart(&ctx, st, "requested by an operator after failure"));
            continue;
        };
        std::thread::sleep(backoff);
        statuses.iter().for_each(|st| record_restart(&ctx, st, &error));
    }
}

/// A service's failures within the restart window, and the wait before the next restart.
#[derive(Default)]
struct Failures {
    at: VecDeque<Instant>,
    /// The last wait; `None` starts afresh at `backoff_initial`.
    backoff: Option<Duration>,
}

impl Failures {
    /// Counts a failure at `now`: the wait before the service is started again (the
    /// last one doubled, up to `backoff_max`), or `None` once there have been more than
    /// `max_restarts` within `window` (the service is then marked `failed`). A failure
    /// after a whole window without one waits `backoff_initial` again: the backoff is for
    /// a service failing over and over, not for one that failed now and then. It only
    /// ever grew, so after six failures in a long uptime, each days apart, every later
    /// restart waited `backoff_max` (5 s) with the service down.
    fn count(&mut self, now: Instant, policy: &Policy) -> Option<Duration> {
        while self.at.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            self.at.pop_front();
        }
        if self.at.is_empty() {
            self.backoff = None;
        }
        self.at.push_back(now);
        if self.at.len() as u32 > policy.max_restarts {
            return None;
        }
        let backoff = self.backoff.map_or(policy.backoff_initial, |b| (b * 2).min(policy.backoff_max));
        self.backoff = Some(backoff);
        Some(backoff)
    }
}

/// An operator's restart starts the service afresh: `agt service list` stops showing the
/// error it had failed with (the events `SERVICE_RESTARTED` and `SERVICE_FAILED` and the
/// log keep it), so that a
/// running service does not look broken. A restart by the supervisor keeps it: that error
/// is why the service restarted.
fn clear_last_error(status: &Status) {
    *status.last_error.lock().unwrap() = None;
}

fn live_policy(ctx: &ServiceCtx) -> Policy {
    let s = ctx.settings.get();
    Policy {
        max_restarts: s.supervisor.max_restarts,
        window: s.supervisor.window(),
        backoff_initial: s.supervisor.backoff_initial(),
        backoff_max: s.supervisor.backoff_max(),
    }
}

fn record_restart(ctx: &ServiceCtx, status: &Status, reason: &str) {
    status.restarts.fetch_add(1, Ordering::Relaxed);
    crate::daemon::metrics::get().service_restarts.get_or_create(&crate::daemon::metrics::ServiceLabel { service: status.name }).inc();
    tracing::warn!(service = status.name, reason, "restarting service");
    ctx.bus.publish("SERVICE_RESTARTED", "health", serde_json::json!({"service": status.name, "reason": reason}));
}

/// For [`disk_full::RETRY`](crate::services::disk_full::RETRY) after a failure on a full
/// disk: answers each command that arrives 503 (saying the disk is full) rather than
/// leaving it for the next incarnation, which fails again before it takes it while the
/// disk stays full: a cancel waited in the mailbox until there was room (a minute and
/// more). `Some` for an operator's stop or restart, which ends the wait.
fn refuse_while_full<C>(rx: &mpsc::Receiver<Envelope<C>>, dropped: &impl Fn(&C)) -> Option<Control> {
    let until = Instant::now() + crate::services::disk_full::RETRY;
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Envelope::Control(Control::Crash)) => {}
            Ok(Envelope::Control(c)) => return Some(c),
            Ok(Envelope::Cmd(c)) => dropped(&c),
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Some(Control::Stop),
        }
    }
}

/// A failed service drops every command (its callers get 503) until told to restart.
fn wait_for_restart<C>(rx: &mpsc::Receiver<Envelope<C>>, dropped: &impl Fn(&C)) -> bool {
    loop {
        match rx.recv() {
            Ok(Envelope::Control(Control::Restart)) => return true,
            Ok(Envelope::Control(Control::Stop)) | Err(_) => return false,
            Ok(Envelope::Control(Control::Crash)) => {}
            Ok(Envelope::Cmd(c)) => dropped(&c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::actor::{AfterCommit, Reply, ServiceError};

    /// The backoff doubles while failures come within the window, and starts again at
    /// `backoff_initial` after a window without one; more than `max_restarts` within the
    /// window is `failed`.
    #[test]
    fn the_backoff_starts_afresh_after_a_window_without_failures() {
        let policy = Policy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        };
        let ms = |n: u64| Some(Duration::from_millis(n));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut f = Failures::default();
        let waits: Vec<_> = (0..5).map(|i| f.count(at(i * 10), &policy)).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600)], "doubling within the window");
        // Each failure a day apart, long after the window: the first wait every time.
        for day in 1..=8 {
            assert_eq!(f.count(at(day * 86_400), &policy), ms(100), "day {day}");
        }
        // A failure within the window of the last one still doubles.
        assert_eq!(f.count(at(8 * 86_400 + 30), &policy), ms(200));
        // Up to the maximum, and one failure too many in the window is `failed`.
        let mut f = Failures::default();
        let waits: Vec<_> = (0..7).map(|i| f.count(at(i), &Policy { max_restarts: 6, ..policy })).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200), None]);
        let mut f = Failures::default();
        let waits: Vec<_> = (0..8).map(|i| f.count(at(i), &Policy { max_restarts: 100, ..policy })).collect();
        assert_eq!(waits[6..], [ms(5000), ms(5000)], "capped at backoff_max");
    }

    enum Work {
        /// Holds the service's thread until the sender is dropped.
        Hold(mpsc::Receiver<()>),
        Echo(Reply<u32>),
    }

    fn handle(cmd: Work, after: &mut AfterCommit) {
        match cmd {
            Work::Hold(gate) => {
                let _ = gate.recv();
            }
            Work::Echo(reply) => after.reply(reply, Ok(7)),
        }
    }

    /// One test service under two names: `Svc<false>` ("early") is started first, so
    /// stopped last; `Svc<true>` ("late") the other way round.
    struct Svc<const LATE: bool>;
    type Early = Svc<false>;
    type Late = Svc<true>;

    impl<const LATE: bool> Service for Svc<LATE> {
        type Cmd = Work;
        const NAME: &'static str = if LATE { "late" } else { "early" };
        const MIGRATIONS: &'static [&'static str] = &[];
        fn load(_: &rusqlite::Connection, _: &ServiceCtx) -> Result<Self, ServiceError> {
            Ok(Svc)
        }
        fn handle(&mut self, _: &rusqlite::Connection, cmd: Work, after: &mut AfterCommit) -> Result<(), ServiceError> {
            handle(cmd, after);
            Ok(())
        }
    }

    /// A service that fails while the daemon stops, before it was told to stop, is
    /// restarted and does the work queued for it: not restarted (as from d2412ff), that
    /// work was answered 503. Here `late`, stopped first, is held while `early` crashes.
    #[test]
    fn a_service_that_fails_before_it_is_told_to_stop_is_restarted_and_does_its_work() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        let mut sup = Supervisor::default();
        let early = sup.spawn::<Early>(ctx.clone());
        let late = sup.spawn::<Late>(ctx);
        let sup = Arc::new(sup);
        while [&early.status, &late.status].iter().any(|s| s.state() != State::Running) {
            std::thread::yield_now();
        }
        let (release, gate) = mpsc::channel();
        assert!(late.tell(Work::Hold(gate)));
        let stopper = std::thread::spawn({
            let sup = sup.clone();
            move || sup.shutdown()
        });
        // The stop has begun: `late` was told, and waits (held) for its turn.
        while !sup.entries[1].told_to_stop.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(early.control(Control::Crash));
        while early.status.state() == State::Running && early.status.restarts.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        // Queued while `early` is down: its next incarnation answers it.
        let (reply, answer) = tokio::sync::oneshot::channel();
        early.tell(Work::Echo(reply));
        let answer = answer.blocking_recv().expect("answered, not dropped with a service left down");
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(early.status.restarts.load(Ordering::Relaxed), 1);
        drop(release);
        stopper.join().unwrap();
        assert_eq!((early.status.state(), late.status.state()), (State::Stopped, State::Stopped));
        bus.shutdown();
    }
}
