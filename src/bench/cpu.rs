//! The CPU time the load generator and the daemon spend while the bench measures: the
//! report's `cpu_us_per_order`. On a machine where the two share the cores (the usual
//! way to run `agt bench`), orders/s is bounded by their sum, so the report says how it
//! splits: a number the wall clock alone cannot give on a noisy machine.

use std::time::Duration;

/// CPU time used so far (user and system) by this process and by the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub bench: Option<Duration>,
    pub daemon: Option<Duration>,
}

impl Usage {
    /// Now, for this process and for the daemon's process `daemon` (known only over the
    /// Unix socket, whose peer the kernel names).
    pub fn now(daemon: Option<u32>) -> Usage {
        Usage { bench: own(), daemon: daemon.and_then(of_process) }
    }

    /// µs per order between `self` and `later`, each part where both ends are known.
    pub fn per_order(&self, later: &Usage, orders: u64) -> (Option<f64>, Option<f64>) {
        let per = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            // No tick counted (the daemon's times come in 10 ms ticks): too short to tell.
            (Some(a), Some(b)) if orders > 0 && b > a => Some(b.saturating_sub(a).as_secs_f64() * 1e6 / orders as f64),
            _ => None,
        };
        (per(self.bench, later.bench), per(self.daemon, later.daemon))
    }
}

/// This process's user and system time (`getrusage`).
fn own() -> Option<Duration> {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes the whole struct when it returns 0.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Some(tv(u.ru_utime) + tv(u.ru_stime))
}

/// A process's user and system time, all its threads, from `/proc/<pid>/stat` (Linux;
/// elsewhere unknown). In clock ticks (10 ms), so a run needs a few seconds of CPU for
/// the figure to mean much.
fn of_process(pid: u32) -> Option<Duration> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ticks(&stat).map(|t| Duration::from_secs_f64(t as f64 / clock_ticks_per_s()))
}

/// utime + stime from a `/proc/<pid>/stat` line: fields 14 and 15, counted after the
/// command name, which is in parentheses and may hold spaces.
fn ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_past_a_command_name_with_spaces() {
        let stat = "4242 (svc lane) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 30 0 123 456";
        assert_eq!(ticks(stat), Some(287));
        assert_eq!(ticks("garbage"), None);
    }

    #[test]
    fn counts_this_process_and_divides_by_orders() {
        let me = std::process::id();
        let before = Usage::now(Some(me));
        // Burn CPU until this process has used 30 ms more, so that both clocks move (the
        // /proc one in 10 ms ticks).
        let mut x = 0u64;
        while own().unwrap().saturating_sub(before.bench.unwrap()) < Duration::from_millis(30) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let after = Usage::now(Some(me));
        let (bench, daemon) = before.per_order(&after, 10);
        assert!(bench.is_some_and(|us| us > 1000.0), "{bench:?}");
        if cfg!(target_os = "linux") {
            assert!(daemon.is_some_and(|us| us > 0.0), "{daemon:?}");
        }
        assert_eq!(before.per_order(&after, 0), (None, None));
        assert_eq!(Usage::now(None).daemon, None);
    }
}
