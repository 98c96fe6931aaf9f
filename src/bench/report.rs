//! What `agt bench` reports: one JSON document (`-o json`) or a table for people.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// The result of one run. Its JSON is the `-o json` output; field names are a contract
/// for scripts (README: `agt bench`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every order (warm-up included) was acknowledged, every cancel answered,
    /// every acknowledged order verified and the clean-up done, and the run was not
    /// interrupted.
    pub ok: bool,
    /// `socket` or `http`.
    pub via: String,
    /// The socket path or URL the load went to.
    pub target: String,
    pub route: String,
    /// The per-run tag in every name the run made: users `<prefix>-b<i>` (buyers) and
    /// `<prefix>-s<i>` (sellers).
    pub prefix: String,
    /// `closed` (as fast as the connections go) or `open` (fixed rate).
    pub mode: String,
    /// The target rate of an open-loop run, orders/s.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub symbols: Vec<String>,
    pub users: usize,
    /// Orders placed before measuring (not in the figures below, but verified).
    pub warmup: u64,
    /// Orders the measured phase was to send (`--orders`; fewer were sent when interrupted).
    pub orders: u64,
    /// Of those, answered 201/200 with an order.
    pub acknowledged: u64,
    /// Everything else, by the daemon's error code (`connection` when no answer came).
    pub errors: BTreeMap<String, u64>,
    /// Warm-up placements and cancels that failed, by error code.
    pub warmup_errors: BTreeMap<String, u64>,
    /// Cancels (`--cancels`) of the measured phase that failed, by error code; a 409
    /// (the order filled first) is not one.
    pub cancel_errors: BTreeMap<String, u64>,
    /// Ctrl-C stopped the placements before all were sent.
    pub interrupted: bool,
    /// The order mix's seed (`--seed` repeats it).
    pub seed: u64,
    /// `--cancels`: the percent of resting orders cancelled.
    pub cancels_percent: u8,
    /// Measured phase, first send to last answer, seconds.
    pub duration_s: f64,
    /// Acknowledged orders per second.
    pub orders_per_s: f64,
    /// Open loop: whether it placed at least 95 % of the target rate (`null` closed loop).
    /// Latency counts from each order's scheduled time either way.
    pub kept_up: Option<bool>,
    /// Distinct trades named in the placement answers of the measured phase.
    pub trades: u64,
    pub trades_per_s: f64,
    /// The statuses the placement answers reported.
    pub statuses: BTreeMap<String, u64>,
    /// Placement latency of acknowledged orders, µs. Open loop: from the scheduled send time.
    pub latency_us: Latency,
    /// `--cancels`: cancels answered 200 in the measured phase (0 without it).
    pub cancels: u64,
    pub cancels_per_s: f64,
    /// Cancels refused because their order had filled meanwhile (409), not errors.
    pub cancels_too_late: u64,
    /// Cancel latency, µs (from the cancel's send).
    pub cancel_latency_us: Latency,
    /// Acknowledged orders (warm-up included) found in the daemon as they were acknowledged.
    pub verified: u64,
    pub verification: Verification,
    pub cleanup: Cleanup,
    /// The scheduling class the load generator's thread ran in: `batch` (`--sched`, the
    /// default on Linux) or `normal`.
    pub sched: String,
    /// CPU time per acknowledged order during the measured phase.
    pub cpu_us_per_order: CpuPerOrder,
    /// How long after the measured phase's last answer the daemon's background work for
    /// it was done (events stored, audit, market, notify and health caught up:
    /// `bench::catch_up`), ms; `null` if not within a minute or the daemon does not say.
    pub catch_up_ms: Option<f64>,
    /// The daemon's own placement time during the measured phase: the share of its
    /// placements over each bound (`null` if its `/metrics` could not be read).
    pub daemon_time: Option<super::daemon_time::DaemonTime>,
}

/// CPU time (user and system) per acknowledged order, µs, spent during the measured phase:
/// when the generator and the daemon share a machine, orders/s is bounded by the sum.
/// Work the daemon does after the phase (events still being stored, audit catching up)
/// is in `daemon_with_catch_up`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPerOrder {
    /// This load generator.
    pub bench: Option<f64>,
    /// The daemon, all its threads: known over the Unix socket on Linux (the socket names
    /// its peer), `null` over TCP.
    pub daemon: Option<f64>,
    /// The daemon from the phase's start until its background work for the phase was
    /// done (`catch_up_ms` after the last answer): what each order cost it in all.
    pub daemon_with_catch_up: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    pub max: u64,
    /// How many placements the histogram holds.
    pub count: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Acknowledged orders looked up.
    pub checked: u64,
    pub verified: u64,
    /// Acknowledged but unknown to the daemon (404).
    pub missing: u64,
    /// Found, but not as acknowledged (fields, status or fills disagree).
    pub inconsistent: u64,
    /// Lookups that failed for another reason.
    pub lookup_errors: u64,
    /// Fills recorded on all bench orders = 2 × trades (every trade has a bench order on
    /// each side). `None` when not checkable (some placement got no answer).
    pub fills_match_trades: Option<bool>,
    /// Cash and every bench asset summed over the bench users equal what was deposited.
    pub balances_conserved: Option<bool>,
    /// Every bench user's cash and assets are its deposit plus what its orders' fills
    /// moved. `None` when not checkable (some placement got no answer, or some order
    /// could not be read).
    pub accounts_match_fills: Option<bool>,
    /// After the clean-up cancelled every open bench order, no bench user holds anything.
    /// `None` when the clean-up failed for some user.
    pub holds_released: Option<bool>,
    /// The first problems found, one line each.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.missing == 0
            && self.inconsistent == 0
            && self.lookup_errors == 0
            && self.verified == self.checked
            && self.fills_match_trades != Some(false)
            && self.balances_conserved != Some(false)
            && self.accounts_match_fills != Some(false)
            && self.holds_released != Some(false)
    }

    /// The checks that failed, for a one-line summary.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.missing + self.inconsistent + self.lookup_errors > 0 || self.verified != self.checked {
            out.push(format!(
                "{}/{} orders verified ({} missing, {} inconsistent, {} lookup errors)",
                self.verified, self.checked, self.missing, self.inconsistent, self.lookup_errors
            ));
        }
        if self.fills_match_trades == Some(false) {
            out.push("the fills do not match the trades".into());
        }
        if self.balances_conserved == Some(false) {
            out.push("the bench users' balances are not conserved".into());
        }
        if self.accounts_match_fills == Some(false) {
            out.push("some bench account does not match its fills".into());
        }
        if self.holds_released == Some(false) {
            out.push("some bench account still holds funds with its orders closed".into());
        }
        out
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    /// Open bench orders cancelled after the run.
    pub cancelled: u64,
    pub errors: u64,
    /// Whether the HTTP token the bench made was revoked (null when it made none).
    pub token_revoked: Option<bool>,
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The report for people.
pub fn render(r: &Report) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mode = match r.rate {
        Some(rate) => format!("open loop at {} orders/s", fmt_rate(rate)),
        None => "closed loop".to_string(),
    };
    lines.push(("target".into(), format!("{} ({}), POST {}", r.target, r.via, r.route)));
    lines.push((
        "load".into(),
        format!(
            "{mode}, {} connections, {} symbols, {} users, warm-up {}, client sched {}",
            r.concurrency,
            r.symbols.len(),
            r.users,
            r.warmup,
            r.sched
        ),
    ));
    lines.push(("seed".into(), r.seed.to_string()));
    let errors: u64 = r.errors.values().sum();
    let sent = if r.interrupted { format!("{} of {}", r.acknowledged + errors, r.orders) } else { r.orders.to_string() };
    lines.push(("orders".into(), format!("{sent} sent, {} acknowledged, {errors} errors", r.acknowledged)));
    let by = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    if !r.errors.is_empty() {
        lines.push(("errors".into(), by(&r.errors)));
    }
    if !r.warmup_errors.is_empty() {
        lines.push(("warm-up errors".into(), by(&r.warmup_errors)));
    }
    if r.interrupted {
        lines.push(("interrupted".into(), "Ctrl-C: the rest of the orders were not sent".into()));
    }
    lines.push(("duration".into(), format!("{:.3} s", r.duration_s)));
    let rate = match (r.kept_up, r.rate) {
        (Some(false), Some(target)) => format!("{}  (did NOT keep up with {} orders/s)", fmt_rate(r.orders_per_s), fmt_rate(target)),
        _ => fmt_rate(r.orders_per_s),
    };
    lines.push(("orders/s".into(), rate));
    lines.push(("trades".into(), format!("{} ({}/s)", r.trades, fmt_rate(r.trades_per_s))));
    if !r.statuses.is_empty() {
        let by: Vec<String> = r.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
        lines.push(("statuses".into(), by.join(", ")));
    }
    let l = &r.latency_us;
    let latency =
        format!("p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}, min {})", l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean, l.min);
    lines.push(("latency µs".into(), latency));
    if let Some(t) = &r.daemon_time {
        lines.push(("daemon time".into(), super::daemon_time::render(t)));
    }
    if r.cancels_percent > 0 {
        let l = &r.cancel_latency_us;
        let late = if r.cancels_too_late > 0 { format!(", {} too late (filled first)", r.cancels_too_late) } else { String::new() };
        let failed: u64 = r.cancel_errors.values().sum();
        let failed = if failed > 0 { format!(", {failed} failed ({})", by(&r.cancel_errors)) } else { String::new() };
        lines.push((
            "cancels".into(),
            format!("{} % of resting orders: {} ({}/s){late}{failed}", r.cancels_percent, r.cancels, fmt_rate(r.cancels_per_s)),
        ));
        let latency =
            format!("p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}, min {})", l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean, l.min);
        lines.push(("cancel µs".into(), latency));
    }
    let cpu = &r.cpu_us_per_order;
    let part = |name: &str, us: Option<f64>| us.map(|us| format!("{name} {us:.1}"));
    let parts: Vec<String> = [part("daemon", cpu.daemon), part("bench", cpu.bench)].into_iter().flatten().collect();
    if !parts.is_empty() {
        lines.push(("cpu µs/order".into(), parts.join(", ")));
    }
    lines.push(("caught up".into(), caught_up(r.catch_up_ms, cpu.daemon_with_catch_up)));
    let v = &r.verification;
    let mut ver = format!("{}/{}", v.verified, v.checked);
    if v.missing + v.inconsistent + v.lookup_errors > 0 {
        ver.push_str(&format!(" ({} missing, {} inconsistent, {} lookup errors)", v.missing, v.inconsistent, v.lookup_errors));
    }
    let yn = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not checked",
    };
    ver.push_str(&format!(
        "; fills = 2×trades: {}; balances conserved: {}; accounts match fills: {}; holds released: {}",
        yn(v.fills_match_trades),
        yn(v.balances_conserved),
        yn(v.accounts_match_fills),
        yn(v.holds_released)
    ));
    lines.push(("verified".into(), ver));
    let mut cleanup = format!("{} open orders cancelled", r.cleanup.cancelled);
    if r.cleanup.errors > 0 {
        cleanup.push_str(&format!("; FAILED for {} bench users (their orders may still rest)", r.cleanup.errors));
    }
    match r.cleanup.token_revoked {
        Some(true) => cleanup.push_str("; the run's token revoked"),
        Some(false) => cleanup.push_str("; the run's admin token was NOT revoked (`agt token list`, `agt token revoke ID`)"),
        None => {}
    }
    lines.push(("cleanup".into(), cleanup));
    let width = lines.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out: Vec<String> = lines.into_iter().map(|(k, v)| format!("{k:<width$}  {v}")).collect();
    for p in &v.problems {
        out.push(format!("problem: {}", crate::cli::output::clean(p)));
    }
    out.push(if r.ok { "result: ok".to_string() } else { "result: FAILED".to_string() });
    out.join("\n")
}

/// The report's `caught up` line: when the daemon's background work was done, and its
/// CPU per order counted through it.
fn caught_up(ms: Option<f64>, daemon_us: Option<f64>) -> String {
    match (ms, daemon_us) {
        (Some(ms), Some(us)) => format!("{ms:.0} ms after the last answer; daemon {us:.1} cpu µs/order with that work"),
        (Some(ms), None) => format!("{ms:.0} ms after the last answer"),
        (None, _) => format!("not within {} s of the last answer, or the daemon does not say", super::catch_up::LIMIT.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caught_up_line_gives_the_time_and_the_cpu_with_it() {
        assert_eq!(caught_up(Some(41.6), Some(80.26)), "42 ms after the last answer; daemon 80.3 cpu µs/order with that work");
        assert_eq!(caught_up(Some(3.0), None), "3 ms after the last answer", "over TCP the daemon's CPU is not known");
        assert_eq!(caught_up(None, Some(80.0)), "not within 60 s of the last answer, or the daemon does not say");
    }

    #[test]
    fn latency_summary() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!(l.p50 >= 499 && l.p50 <= 501, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
        assert_eq!(l.max, 1000);
        assert_eq!(Latency::of(&Histogram::<u64>::new(3).unwrap()).count, 0);
    }

    #[test]
    fn verification_passes_only_when_clean() {
        let mut v = Verification { checked: 3, verified: 3, ..Default::default() };
        assert!(v.passed());
        v.fills_match_trades = Some(false);
        assert!(!v.passed());
        let v = Verification { checked: 3, verified: 2, missing: 1, ..Default::default() };
        assert!(!v.passed());
        // Cash moved between bench users keeps the totals and fails the run all the same
        // (the integration test interrupts its run, so it cannot show this alone).
        let v = Verification {
            checked: 3,
            verified: 3,
            balances_conserved: Some(true),
            accounts_match_fills: Some(false),
            ..Default::default()
        };
        assert!(!v.passed());
        assert_eq!(v.failures(), vec!["some bench account does not match its fills".to_string()]);
    }
}
