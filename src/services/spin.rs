//! Waiting awake: the trading lane's two waits spin for a short while before they
//! sleep, when the recent past says the wait will be short.
//!
//! On a virtual machine a thread that sleeps lets its vCPU halt, and waking it costs an
//! interrupt to the host and a reschedule of that vCPU: tens of µs here (BENCHMARKS.md,
//! "Session 12"). An unloaded placement paid that twice: the lane slept on its mailbox
//! until the HTTP worker sent the order, and the worker slept on its answer until the
//! lane gave it. Together that was about half of an unloaded placement's ~200 µs.
//! Spinning on one side alone barely helps: the other side's vCPU halts instead
//! (measured: 160–190 µs with either alone, 60–120 µs with both). Reads, cancels and
//! every other call to the lane wait the same way ([`AnswerWait`] sits in each of the
//! lane's handles), so a bot that places and then reads its order gains too.
//!
//! Spinning holds a core while it lasts, so a wait spins only while calls to the lane
//! have recently followed each other closely: [`SpinHistory`] remembers whether each of
//! the last eight gaps (the lane's waits for a command; on the callers' side, the time
//! from an answer to the next call) was within twice the budget (`trading.spin_us`; a
//! wait spent asleep includes its own wake-up), and the next wait spins only if six
//! were. A steady client that places, reads the answer and places again (one
//! connection, a bot) keeps both sides awake; orders that arrive at random, further
//! apart than that, and an idle daemon, sleep as before. A spinning thread yields its
//! core at every turn (`yield_now`), so a thread with work to do on that core (the
//! lane's flush, the bus, the client) runs first.

use crate::services::config::SharedSettings;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot::{self, error::TryRecvError};

/// The last eight gaps, one bit each (1: within twice the budget).
#[derive(Debug, Default)]
pub struct SpinHistory(AtomicU8);

/// How many of the last eight gaps must have been short for the next wait to spin.
const SHORT_OF_EIGHT: u32 = 6;

impl SpinHistory {
    /// Whether the next wait should spin (for at most `budget`) before it sleeps.
    pub fn should_spin(&self, budget: Duration) -> bool {
        !budget.is_zero() && self.0.load(Ordering::Relaxed).count_ones() >= SHORT_OF_EIGHT
    }

    /// Records a gap: how long a wait took, spinning or asleep, or the time between calls.
    pub fn record(&self, waited: Duration, budget: Duration) {
        let short = u8::from(waited <= budget * 2);
        // Lost updates between racing waiters only blur a heuristic.
        let bits = self.0.load(Ordering::Relaxed);
        self.0.store(bits << 1 | short, Ordering::Relaxed);
    }
}

/// Polls `poll` until it yields or `budget` has passed; `pause` runs between polls.
/// `None` when the budget ran out: the caller then sleeps as usual.
pub fn spin_for<T>(budget: Duration, mut poll: impl FnMut() -> Option<T>, mut pause: impl FnMut()) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(t) = poll() {
            return Some(t);
        }
        if started.elapsed() >= budget {
            return None;
        }
        pause();
    }
}

/// The caller's side of the trading lane: waiting for its answer (a placement's, or a
/// read's or a cancel's; every handle of the lane waits through one of these).
///
/// Its history is of how soon each call followed the previous answer, the same thing
/// the lane's history measures from its side: only when calls follow each other closely
/// is the lane awake, so that the answer is quick and a spin catches it. It spins only
/// while this is the one call in flight: an HTTP worker that spins serves no other
/// connection meanwhile, and with other calls in flight the lane is busy and the answer
/// will not be quick anyway.
pub struct AnswerWait {
    settings: SharedSettings,
    in_flight: AtomicUsize,
    history: SpinHistory,
    epoch: Instant,
    /// When the last answer came, in µs since `epoch`.
    answered_at: AtomicU64,
}

impl AnswerWait {
    /// Spins for up to `trading.spin_us` of the live settings.
    pub fn new(settings: SharedSettings) -> Self {
        AnswerWait {
            settings,
            in_flight: AtomicUsize::new(0),
            history: SpinHistory::default(),
            epoch: Instant::now(),
            answered_at: AtomicU64::new(0),
        }
    }

    /// The answer on `rx`, or `None` if its sender was dropped.
    pub async fn wait<T>(&self, mut rx: oneshot::Receiver<T>) -> Option<T> {
        let budget = self.settings.get().trading.spin();
        let since_answer = self.now_us().saturating_sub(self.answered_at.load(Ordering::Relaxed));
        self.history.record(Duration::from_micros(since_answer), budget);
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        let _leave = Leave(&self.in_flight);
        let mut answer = None;
        if alone && self.history.should_spin(budget) {
            answer = spin_for(
                budget,
                || match rx.try_recv() {
                    Ok(v) => Some(Some(v)),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Closed) => Some(None),
                },
                std::thread::yield_now,
            );
        }
        let answer = match answer {
            Some(a) => a,
            None => rx.await.ok(),
        };
        self.answered_at.store(self.now_us(), Ordering::Relaxed);
        answer
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// Counts a call out of flight however its wait ends (a timeout drops it).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_micros(200);

    #[test]
    fn spins_only_after_mostly_short_waits() {
        let h = SpinHistory::default();
        assert!(!h.should_spin(BUDGET), "no history: sleep");
        for _ in 0..5 {
            h.record(Duration::from_micros(50), BUDGET);
        }
        assert!(!h.should_spin(BUDGET), "five short waits of eight");
        h.record(Duration::from_micros(400), BUDGET);
        assert!(h.should_spin(BUDGET), "six: a wait within twice the budget is short");
        assert!(!h.should_spin(Duration::ZERO), "a zero budget turns spinning off");
        for _ in 0..2 {
            h.record(Duration::from_micros(401), BUDGET);
        }
        assert!(h.should_spin(BUDGET), "six of eight still: the two long ones pushed out nothing short");
        h.record(Duration::from_millis(3), BUDGET);
        assert!(!h.should_spin(BUDGET), "a third long wait of eight: sleep");
        for _ in 0..6 {
            h.record(Duration::ZERO, BUDGET);
        }
        assert!(h.should_spin(BUDGET), "short again");
    }

    #[test]
    fn spin_for_returns_what_arrives_or_gives_up_after_the_budget() {
        let mut polls = 0;
        let got = spin_for(
            Duration::from_secs(5),
            || {
                polls += 1;
                (polls == 3).then_some(polls)
            },
            || {},
        );
        assert_eq!(got, Some(3));
        let started = Instant::now();
        assert_eq!(spin_for(Duration::from_millis(2), || None::<()>, std::hint::spin_loop), None);
        assert!(started.elapsed() >= Duration::from_millis(2));
    }

    #[tokio::test]
    async fn an_answer_wait_spins_for_placements_that_follow_closely_and_counts_them_out() {
        let w = AnswerWait::new(SharedSettings::new(crate::services::config::settings::Settings::defaults()));
        assert_eq!(w.settings.get().trading.spin(), BUDGET, "the shipped default");
        for i in 0..8 {
            let (tx, rx) = oneshot::channel();
            tx.send(i).unwrap();
            assert_eq!(w.wait(rx).await, Some(i));
        }
        assert!(w.history.should_spin(BUDGET), "eight placements one right after another");
        let (tx, rx) = oneshot::channel::<u32>();
        drop(tx);
        assert_eq!(w.wait(rx).await, None, "a dropped sender while spinning");
        let (tx, rx) = oneshot::channel();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(7).unwrap();
        });
        assert_eq!(w.wait(rx).await, Some(7), "an answer after the spin is awaited");
        late.await.unwrap();
        let (_tx, rx) = oneshot::channel::<u32>();
        let _ = tokio::time::timeout(Duration::from_millis(1), w.wait(rx)).await;
        assert_eq!(w.in_flight.load(Ordering::Relaxed), 0, "a wait given up on is out of flight");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let (tx, rx) = oneshot::channel();
            tx.send(0).unwrap();
            w.wait(rx).await;
        }
        assert!(!w.history.should_spin(BUDGET), "three placements a while after the last answer: sleep");
    }
}
