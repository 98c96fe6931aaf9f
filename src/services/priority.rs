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
//!
//! The same threads also run on fewer cores ([`confine_background`],
//! `trading.confine_background`): the last quarter of the cores the daemon may use, at
//! least one, when it may use two or more. The order path keeps every core. On two
//! cores that leaves one where no background burst (an audit batch, a checkpoint pass)
//! is running when an order wakes the lane or an HTTP worker. It matters most when
//! other programs want the cores too: with two CPU hogs beside the daemon, closed loop
//! at C = 32 gave 11.6–13.8 k orders/s against 9.3–11.4 k, better in each of five pairs.
//! Alone, the daemon keeps its throughput (six pairs, 22.3 k against 22.4 k) and
//! background work keeps up (audit's mailbox and the bus's backlog over a 300 k-order
//! overload as without); at 10,000/s the median p99 of ten pairs was 3.8 against 3.9
//! ms (BENCHMARKS.md, session 29).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// How much lower background threads run (`trading.background_nice`); 0 until the daemon
/// sets it, so tests and tools that start services run them all alike.
static BACKGROUND_NICE: AtomicU32 = AtomicU32::new(0);

/// Sets how much lower (a nice increment, 0–19) the threads started from now on as
/// background run. Read once per thread, when it starts: not hot.
pub fn set_background_nice(nice: u32) {
    BACKGROUND_NICE.store(nice.min(19), Ordering::Relaxed);
}

/// The cores background threads are confined to ([`confine_background`]); empty: every
/// core, as before the daemon sets it, so tests and tools that start services run them
/// all alike.
static BACKGROUND_CORES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Confines the threads started as background from now on to [`background_cores`] of the
/// cores this thread may run on, or (`on` false) to none. Read once per thread, when it
/// starts: not hot. Gives the cores chosen (empty: every core).
pub fn confine_background(on: bool) -> Vec<usize> {
    let cores = if on { background_cores(&allowed_cores()) } else { Vec::new() };
    *BACKGROUND_CORES.lock().unwrap_or_else(|e| e.into_inner()) = cores.clone();
    cores
}

/// Which of `allowed` (the cores the daemon may use, in ascending order) its background
/// threads get: the last quarter, at least one; none (every core) below two cores, where
/// there is no core to keep for the order path.
pub fn background_cores(allowed: &[usize]) -> Vec<usize> {
    if allowed.len() < 2 {
        return Vec::new();
    }
    let n = (allowed.len() / 4).max(1);
    allowed[allowed.len() - n..].to_vec()
}

/// Lowers the calling thread's priority by the configured increment, and so that of the
/// threads it starts afterwards, and confines it to the background's cores. Gives the
/// thread's nice value afterwards, `None` where it cannot (not Linux, or refused: then
/// the thread runs as before, which is only slower under load).
pub fn lower_this_thread() -> Option<i32> {
    let by = BACKGROUND_NICE.load(Ordering::Relaxed);
    let now = lower_by(by);
    LOWERED.set(now.is_some());
    let cores = BACKGROUND_CORES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !cores.is_empty() {
        run_on(&cores);
    }
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

/// The cores the calling thread may run on (its affinity), in ascending order.
#[cfg(target_os = "linux")]
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cores() -> Vec<usize> {
    Vec::new()
}

/// Confines the calling thread, and the threads it starts afterwards, to `cores`.
#[cfg(target_os = "linux")]
fn run_on(cores: &[usize]) -> bool {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; `CPU_SET` stays within it (cores come
    // from `sched_getaffinity`, below `CPU_SETSIZE`); pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn run_on(_cores: &[usize]) -> bool {
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

    /// The background gets the last quarter of the cores, at least one, and none (every
    /// core) when there is only one: the order path must keep a core of its own.
    #[test]
    fn the_background_gets_the_last_quarter_of_the_cores() {
        assert_eq!(background_cores(&[]), Vec::<usize>::new());
        assert_eq!(background_cores(&[3]), Vec::<usize>::new(), "one core: nothing to keep apart");
        assert_eq!(background_cores(&[0, 1]), [1]);
        assert_eq!(background_cores(&[0, 1, 2]), [2]);
        assert_eq!(background_cores(&[0, 1, 2, 3, 4, 5, 6, 7]), [6, 7]);
        assert_eq!(background_cores(&[2, 5, 9, 11]), [11], "the cores allowed, not 0..n");
    }

    /// A confined thread runs on the cores given, so does a thread it starts, and the
    /// thread that started it keeps its own.
    #[test]
    fn a_confined_thread_and_its_children_run_on_its_cores() {
        let before = allowed_cores();
        assert!(!before.is_empty(), "this thread runs somewhere");
        let last = *before.last().unwrap();
        let (own, child) = std::thread::spawn(move || {
            assert!(run_on(&[last]), "narrowing one's own affinity needs no privilege");
            (allowed_cores(), std::thread::spawn(allowed_cores).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!((own, child), (vec![last], vec![last]));
        assert_eq!(allowed_cores(), before, "the creator keeps its own cores");
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
