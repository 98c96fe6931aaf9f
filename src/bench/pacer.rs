//! The open loop's schedule (`agt bench --rate`): send slots handed out at their times.
//!
//! tokio's timers tick in whole milliseconds, so workers that each slept until their own
//! slot all woke at the same tick: at 10,000 orders/s the daemon got a burst of ten every
//! millisecond, and the latency measured was mostly the queue of that burst, not what a
//! steady 10,000/s meets. A thread of its own sleeps (a high-resolution timer, within the
//! kernel's timer slack of ~50 µs) until the next slot, or for at least [`TICK`], then
//! releases every slot that is due as a permit; a worker takes one before each send. A worker that finds a permit
//! waiting is late (its previous order took longer than the interval), and its latency
//! counts from the slot's time, not from its send (coordinated omission).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, TryAcquireError};

/// The shortest sleep between two releases of slots. A wake-up of the pacer and of the
/// generator's runtime for every slot cost the generator ~27 µs of CPU per order at
/// 10,000/s (CPU the daemon's two cores lose), ~20 at this tick, which sends two at a
/// time at that rate; 500 µs was ~16, but p50–p99 rose again (BENCHMARKS.md, session 25).
const TICK: Duration = Duration::from_micros(200);

/// Hands out `n` send slots, one every `interval_ns` from `start`.
pub struct Pacer {
    slots: Arc<Semaphore>,
    /// Set when the phase is over (every worker gone: done, or stopped by Ctrl-C), so
    /// that the thread ends without releasing the rest of its schedule first.
    over: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The longest the schedule's thread sleeps before it looks at `over` again.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

impl Pacer {
    /// Starts the schedule. `workers` more permits follow the last slot, so that every
    /// worker still waiting wakes and finds the phase over.
    pub fn start(start: Instant, interval_ns: f64, n: u64, workers: usize) -> Pacer {
        let slots = Arc::new(Semaphore::new(0));
        let out = slots.clone();
        let over = Arc::new(AtomicBool::new(false));
        let stop = over.clone();
        let thread = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || {
                let mut released = 0u64;
                while released < n && !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let due = due_by(start, interval_ns, now).min(n);
                    if due > released {
                        out.add_permits((due - released) as usize);
                        released = due;
                    }
                    let next = start + Duration::from_nanos((released as f64 * interval_ns) as u64);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()).clamp(TICK, LOOK_AGAIN));
                }
                out.add_permits(workers);
            })
            .expect("a thread for the bench's schedule");
        Pacer { slots, over, thread: Some(thread) }
    }

    /// Waits for the next slot. True if the worker had to wait for it (it was on time and
    /// its latency counts from its send); false if one was already due (it is late).
    pub async fn next_slot(&self) -> bool {
        match self.slots.try_acquire() {
            Ok(permit) => {
                permit.forget();
                false
            }
            Err(TryAcquireError::NoPermits) => {
                self.slots.acquire().await.expect("the schedule's semaphore is never closed").forget();
                true
            }
            Err(TryAcquireError::Closed) => unreachable!("the schedule's semaphore is never closed"),
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.over.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How late after its slot's time the pacer may release it while on schedule: it releases
/// at most every [`TICK`], and its sleep ends within the kernel's timer slack (~50 µs) and
/// a wake-up. A worker that waited for its slot and got it later than this was held up
/// by the pacer itself (its thread waited for a core), not by the daemon: a client whose
/// arrivals do not wait on one generator thread would have sent on time.
pub const RELEASE_ALLOWANCE: Duration = Duration::from_micros(TICK.as_micros() as u64 + 150);

/// The instant an order's latency counts from (coordinated omission). `scheduled` is its
/// slot's time; `now` its send; `waited` whether the worker waited for the slot
/// ([`Pacer::next_slot`]). A late worker (its slot was already due) counts from the slot's
/// time: the daemon or the connections fell behind. One that waited counts from its send,
/// so that the pacer's ticks and timer slack are not counted, but from no later than
/// [`RELEASE_ALLOWANCE`] after the slot: past that, the pacer lagged, and the order would
/// have gone out earlier from an independent client.
pub fn counted_from(scheduled: Instant, now: Instant, waited: bool) -> Instant {
    let latest = if waited { scheduled + RELEASE_ALLOWANCE } else { scheduled };
    now.min(latest)
}

/// How many slots are due at `now`: slot k (from 0) is due at `start + k × interval`.
fn due_by(start: Instant, interval_ns: f64, now: Instant) -> u64 {
    match now.checked_duration_since(start) {
        Some(since) => (since.as_nanos() as f64 / interval_ns) as u64 + 1,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_k_is_due_at_start_plus_k_intervals() {
        let start = Instant::now();
        let at = |us: u64| start + Duration::from_micros(us);
        assert_eq!(due_by(at(10), 100_000.0, start), 0, "nothing before the start");
        assert_eq!(due_by(start, 100_000.0, start), 1, "the first at the start");
        assert_eq!(due_by(start, 100_000.0, at(99)), 1);
        assert_eq!(due_by(start, 100_000.0, at(100)), 2);
        assert_eq!(due_by(start, 100_000.0, at(1_050)), 11);
    }

    #[test]
    fn latency_counts_from_the_send_unless_the_order_was_late_or_the_pacer_lagged() {
        let slot = Instant::now();
        let at = |us: u64| slot + Duration::from_micros(us);
        assert_eq!(counted_from(slot, at(120), true), at(120), "released within a tick: from the send");
        assert_eq!(counted_from(slot, at(3_000), false), slot, "a late worker: from the slot");
        assert_eq!(counted_from(slot, at(3_000), true), slot + RELEASE_ALLOWANCE, "the pacer 3 ms late: its lag counts");
        assert_eq!(counted_from(at(50), slot, false), slot, "sent before its slot's time (the first slot's rounding)");
    }

    #[tokio::test]
    async fn slots_come_on_schedule_and_a_late_worker_knows_it() {
        let start = Instant::now() + Duration::from_millis(2);
        let pacer = Pacer::start(start, 1e6, 5, 2);
        assert!(pacer.next_slot().await, "the first slot is waited for");
        assert!(Instant::now() >= start, "not before its time");
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert!(!pacer.next_slot().await, "a slot already due: this worker is late");
        for _ in 0..3 {
            pacer.next_slot().await;
        }
        assert!(Instant::now() >= start + Duration::from_millis(4), "the fifth slot comes 4 ms after the first");
        // The two permits past the last slot let waiting workers end.
        pacer.next_slot().await;
        pacer.next_slot().await;
        drop(pacer);
    }
}
