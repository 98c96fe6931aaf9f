//! Refusals that cost the caller nothing, kept on the record within bounds.
//!
//! A write a token's role may not make (a viewer's, or a trader's outside its orders)
//! is refused before anything runs, and audited, the command and its refusal, so that
//! the attempt is on the record. Audit is append-only, so one viewer token could
//! otherwise grow it without limit, as fast as it sends requests. A request without a
//! valid bearer token (401) is not audited at all, since anyone who reaches the port
//! could grow the log that way; it is logged instead, where a log's rotation bounds it.
//!
//! [`Refusals`] counts each caller's refusals in windows of time: the first
//! [`RECORDED`] of a window are recorded one by one, later ones are only counted, and
//! once the window has ended the count is recorded once ([`Ended`]). So a caller adds at
//! most `RECORDED + 1` records per window whatever it sends, and the record still says
//! how many attempts there were.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals of one caller recorded one by one in each window.
pub const RECORDED: u32 = 20;

/// The window when `AGT_REFUSAL_WINDOW_MS` does not set one.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Callers tracked at once. Beyond it, a new caller is counted under [`OTHERS`], so that
/// requests from many addresses cannot grow this map without bound.
const CALLERS: usize = 10_000;

/// The key of callers counted together once [`CALLERS`] are tracked.
pub const OTHERS: &str = "(other callers)";

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record it, as every refusal was recorded before.
    Record,
    /// Only count it: the caller's window has had its [`RECORDED`] refusals.
    Count,
}

/// A window that ended with refusals counted but not recorded one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The caller: an audit actor (`token:…`) or a client's address.
    pub key: String,
    /// The last refused action counted (`POST /api/users`).
    pub action: String,
    /// Refusals counted and not recorded one by one.
    pub unrecorded: u64,
    /// The window's length.
    pub window: Duration,
}

/// Each caller's refusals in its current window.
pub struct Refusals {
    window: Duration,
    callers: Mutex<HashMap<String, Tally>>,
}

struct Tally {
    since: Instant,
    seen: u64,
    action: String,
}

impl Tally {
    fn ended(&self, key: &str, window: Duration) -> Option<Ended> {
        let unrecorded = self.seen.saturating_sub(RECORDED as u64);
        (unrecorded > 0).then(|| Ended { key: key.to_string(), action: self.action.clone(), unrecorded, window })
    }
}

impl Refusals {
    pub fn new(window: Duration) -> Refusals {
        Refusals { window, callers: Mutex::new(HashMap::new()) }
    }

    /// The window from `AGT_REFUSAL_WINDOW_MS` (1 to 3,600,000), else [`WINDOW`]. Anything
    /// else is an error naming the variable: the daemon refuses to start on it.
    pub fn window_from(env: &impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
        const NAME: &str = "AGT_REFUSAL_WINDOW_MS";
        let Some(raw) = env(NAME).filter(|v| !v.trim().is_empty()) else { return Ok(WINDOW) };
        match raw.trim().parse::<u64>() {
            Ok(ms) if (1..=3_600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err(format!("{NAME}: expected a whole number of milliseconds from 1 to 3600000, got {}", crate::api::quote::quoted(&raw))),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts one refusal of `key` at `now`: whether to record it, and the caller's
    /// previous window if it has ended with refusals left to record (record that first).
    pub fn note(&self, key: &str, action: &str, now: Instant) -> (Verdict, Option<Ended>) {
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let key = if callers.len() >= CALLERS && !callers.contains_key(key) { OTHERS } else { key };
        let mut ended = None;
        let tally = match callers.get_mut(key) {
            Some(t) if now.saturating_duration_since(t.since) < self.window => t,
            Some(t) => {
                ended = t.ended(key, self.window);
                *t = Tally { since: now, seen: 0, action: String::new() };
                t
            }
            None => callers.entry(key.to_string()).or_insert(Tally { since: now, seen: 0, action: String::new() }),
        };
        tally.seen += 1;
        let verdict = if tally.seen <= RECORDED as u64 {
            Verdict::Record
        } else {
            // Only the counted ones need their action for the summary.
            if tally.action != action {
                tally.action = action.to_string();
            }
            Verdict::Count
        };
        (verdict, ended)
    }

    /// Forgets every window that has ended by `now` (all of them if `now` is `None`: at
    /// shutdown), and returns those with refusals left to record.
    pub fn take_ended(&self, now: Option<Instant>) -> Vec<Ended> {
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended = Vec::new();
        callers.retain(|key, t| {
            let over = now.is_none_or(|now| now.saturating_duration_since(t.since) >= self.window);
            if over {
                ended.extend(t.ended(key, self.window));
            }
            !over
        });
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    fn noted(r: &Refusals, key: &str, n: u32, at: Instant) -> Vec<Verdict> {
        (0..n).map(|_| r.note(key, "POST /api/users", at).0).collect()
    }

    #[test]
    fn the_first_of_a_window_are_recorded_and_the_rest_counted() {
        let (r, t0) = (Refusals::new(W), Instant::now());
        let verdicts = noted(&r, "token:v", RECORDED + 5, t0);
        assert!(verdicts[..RECORDED as usize].iter().all(|v| *v == Verdict::Record));
        assert!(verdicts[RECORDED as usize..].iter().all(|v| *v == Verdict::Count));
        // Another caller has a window of its own.
        assert_eq!(r.note("token:w", "POST /api/users", t0).0, Verdict::Record);
        // Not over yet: nothing to record.
        assert_eq!(r.take_ended(Some(t0 + W / 2)), vec![]);
        let ended = r.take_ended(Some(t0 + W));
        assert_eq!(ended, vec![Ended { key: "token:v".into(), action: "POST /api/users".into(), unrecorded: 5, window: W }]);
        // Taken once, and the windows are forgotten: the next refusal opens a new one.
        assert_eq!(r.take_ended(Some(t0 + 3 * W)), vec![]);
        assert_eq!(r.note("token:v", "POST /api/users", t0 + 3 * W), (Verdict::Record, None));
    }

    #[test]
    fn a_refusal_after_the_window_hands_over_its_count() {
        let (r, t0) = (Refusals::new(W), Instant::now());
        noted(&r, "token:v", RECORDED + 2, t0);
        let (verdict, ended) = r.note("token:v", "DELETE /api/tokens/x", t0 + W);
        assert_eq!(verdict, Verdict::Record);
        assert_eq!(ended.map(|e| (e.unrecorded, e.action)), Some((2, "POST /api/users".into())));
        // A window that recorded every refusal has nothing to hand over.
        let (r, t0) = (Refusals::new(W), Instant::now());
        noted(&r, "token:v", RECORDED, t0);
        assert_eq!(r.note("token:v", "POST /api/users", t0 + W), (Verdict::Record, None));
        assert_eq!(r.take_ended(None), vec![]);
    }

    #[test]
    fn shutdown_takes_every_window_with_a_count() {
        let (r, t0) = (Refusals::new(W), Instant::now());
        noted(&r, "a", RECORDED + 1, t0);
        noted(&r, "b", 3, t0);
        let ended = r.take_ended(None);
        assert_eq!(ended.iter().map(|e| (e.key.as_str(), e.unrecorded)).collect::<Vec<_>>(), vec![("a", 1)]);
    }

    #[test]
    fn callers_beyond_the_bound_share_one_window() {
        let (r, t0) = (Refusals::new(W), Instant::now());
        for i in 0..CALLERS {
            r.note(&format!("10.0.{}.{}", i / 256, i % 256), "GET /api/users", t0);
        }
        for i in 0..RECORDED + 3 {
            r.note(&format!("192.168.0.{i}"), "GET /api/users", t0);
        }
        let ended = r.take_ended(None);
        let others: Vec<_> = ended.iter().filter(|e| e.key == OTHERS).map(|e| e.unrecorded).collect();
        assert_eq!(others, vec![3]);
        assert_eq!(r.callers.lock().unwrap().len(), 0);
    }

    #[test]
    fn the_window_comes_from_the_environment_or_is_refused() {
        let env = |v: Option<&'static str>| move |_: &str| v.map(String::from);
        assert_eq!(Refusals::window_from(&env(None)), Ok(WINDOW));
        assert_eq!(Refusals::window_from(&env(Some(" "))), Ok(WINDOW));
        assert_eq!(Refusals::window_from(&env(Some("250"))), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "1.5", "3600001", "soon"] {
            let e = Refusals::window_from(&env(Some(bad))).unwrap_err();
            assert!(e.starts_with("AGT_REFUSAL_WINDOW_MS: expected a whole number of milliseconds from 1 to 3600000"), "{e}");
        }
    }
}
