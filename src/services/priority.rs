//! The order path first: threads whose work nobody's answer waits for run at a lower CPU
//! priority than the trading lane and the HTTP workers.
//!
//! After each placement is answered, the event bus, the feeds it hands events to
//! (`daemon::follower`, on a thread of their own), market data, notify and their
//! stores' checkpointers wake up and do their part for that order. On two cores they took a core
//! from the lane or an HTTP worker whenever they woke, and the order that arrived then
//! waited for them (BENCHMARKS.md, session 18: with them at nice 10, p99 at one
//! connection 1.4–1.6 ms instead of 1.6–1.9 ms, at 5,000 orders/s 5.0–5.7 ms instead of
//! 5.5–10.9 ms). They still get their share when the order path waits, which it does
//! between batches, and keep up: over a 30 s closed-loop overload their mailboxes stay
//! empty and the daemon's memory as it was.
//!
//! Audit is one of them too, except under `durability = "full"` (there every command
//! waits for audit's commit). It is the heaviest follower, a record for every event and
//! every command, and once (session 18), lowered, it fell behind under overload (53 k
//! messages waiting in its mailbox after 20 s, the daemon at 228 MB instead of 80).
//! Nothing piles up in memory any more when it does: its follower stops at
//! `follower::MAILBOX_BOUND`, and the commands the HTTP layer hands it go only to its
//! journal while its mailbox is full (`audit::CommandLog`). Lowered, it kept up with a
//! 300,000-order closed-loop overload, and with two CPU hogs beside the daemon its
//! mailbox was back to empty right after; at 10,000 orders/s p99 was 3.2 ms against 3.5
//! (BENCHMARKS.md, session 27).
//!
//! A Linux nice value is per thread, and a thread starts with its creator's: a service
//! lowers its own thread before it opens its store, so the store's checkpointer is
//! lowered too. The lane's and the HTTP workers' threads are never lowered; the
//! checkpointers of the lane's stores (and of audit's, under "full" durability) lower
//! themselves (`store::spawn_checkpointer`): at nice 0 a pass (a few ms of copying) held
//! up a woken lane or HTTP worker until the next tick; lowered, p99.9 at 10,000
//! orders/s fell from 6.9–11.4 to 5.6–7.0 ms and C = 32 gained 2–3 % (BENCHMARKS.md,
//! session 27).
//!
//! Apart from that, every thread of the daemon runs in the batch scheduling class
//! ([`batch_this_thread`]): woken, it waits for the running thread's tick instead of
//! preempting it, so work handed over in batches is done in batches.

use std::sync::atomic::{AtomicU32, Ordering};

/// How much lower background threads run (`trading.background_nice`); 0 until the daemon
/// sets it, so tests and tools that start services run them all alike.
static BACKGROUND_NICE: AtomicU32 = AtomicU32::new(0);

/// Sets how much lower (a nice increment, 0–19) the threads started from now on as
/// background run. Read once per thread, when it starts: not hot.
pub fn set_background_nice(nice: u32) {
    BACKGROUND_NICE.store(nice.min(19), Ordering::Relaxed);
}

/// Lowers the calling thread's priority by the configured increment, and so that of the
/// threads it starts afterwards. Gives the thread's nice value afterwards, `None` where
/// it cannot (not Linux, or refused: then the thread runs as before, which is only
/// slower under load).
pub fn lower_this_thread() -> Option<i32> {
    let by = BACKGROUND_NICE.load(Ordering::Relaxed);
    let now = lower_by(by);
    LOWERED.set(now.is_some());
    now
}

thread_local! {
    /// Whether [`lower_this_thread`] lowered this thread (a thread it starts runs lower
    /// already).
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread was lowered: a thread it starts then runs lower already, and
/// [`lower_this_thread`] there would lower it twice.
pub fn is_lowered() -> bool {
    LOWERED.get()
}

#[cfg(target_os = "linux")]
fn lower_by(by: u32) -> Option<i32> {
    // `nice(2)` changes the calling thread only on Linux (its nice value is per thread),
    // and raising it never needs a privilege. It answers the new value, and -1 both for
    // an error and for a new value of -1: errno tells them apart.
    // SAFETY: `nice` and `errno` touch only this thread's own state.
    unsafe {
        *libc::__errno_location() = 0;
        let now = libc::nice(by as libc::c_int);
        if now == -1 && *libc::__errno_location() != 0 {
            return None;
        }
        Some(now)
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_by(_by: u32) -> Option<i32> {
    None
}

/// Puts the calling thread, and so every thread it starts afterwards, in Linux's batch
/// scheduling class (`SCHED_BATCH`, `trading.sched_batch`). False where it cannot (not
/// Linux, or refused): the threads then run as before.
///
/// A thread in that class that wakes up does not preempt the thread running on its core;
/// it runs at the next tick or when that thread waits. The daemon's threads hand work to
/// each other and to their clients all the time, and on two busy cores every hand-off
/// preempted the thread that made it, halfway through a batch: an HTTP worker writing
/// 32 answers was preempted by the client its first answer woke, and both ran again for
/// each answer. In this class the worker writes them all and then waits, and the client
/// reads them all. At 32 connections, closed loop, with `agt bench` in the class as well:
/// ~4 context switches per order → ~0.5, ~140 → ~115 µs of CPU per order, +17 % orders/s;
/// no change at one connection or at 5,000/s, when a core is free for whoever wakes
/// (BENCHMARKS.md, session 20). Unlike a nice value, it changes no thread's share of the
/// CPU. No privilege is needed to enter the class.
pub fn batch_this_thread() -> bool {
    batch()
}

#[cfg(target_os = "linux")]
fn batch() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn batch() -> bool {
    false
}

/// This thread's nice value as the kernel reports it (`/proc/thread-self/stat`, field 19),
/// for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn nice_of_this_thread() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// One thread is lowered; the thread that started it, and a thread started before,
    /// keep their priority; a thread the lowered one starts inherits it.
    #[test]
    fn a_lowered_thread_and_only_its_own_children_run_lower() {
        let before = nice_of_this_thread();
        let (lowered, child) = std::thread::spawn(move || {
            let now = lower_by(7).expect("raising a nice value needs no privilege");
            let child = std::thread::spawn(nice_of_this_thread).join().unwrap();
            (now, child)
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 7).min(19));
        assert_eq!(child, lowered, "a thread starts with its creator's nice value");
        assert_eq!(nice_of_this_thread(), before, "the creator keeps its own");
        assert_eq!(lower_by(0), Some(before), "0 changes nothing");
    }

    /// A thread put in the batch class is in it, so is a thread it starts, and the
    /// thread that started it is not.
    #[test]
    fn a_batch_thread_and_its_children_are_in_the_batch_class() {
        // SAFETY: pid 0 asks about the calling thread.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = policy();
        let (own, child) = std::thread::spawn(move || {
            assert!(batch_this_thread(), "entering SCHED_BATCH needs no privilege");
            (policy(), std::thread::spawn(policy).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!((own, child), (libc::SCHED_BATCH, libc::SCHED_BATCH));
        assert_eq!(policy(), before, "the creator keeps its own class");
    }
}
