//! The daemon's own placement time while the bench measures: the report's
//! `daemon_time`.
//!
//! On one machine the generator and the daemon share the cores, and a client's latency
//! includes its own waits for a core to read the answer. The daemon times each placement
//! itself, from validation to the trading lane's answer
//! (`agt_order_place_duration_seconds`, a histogram on `/metrics`); the difference of its
//! buckets before and after the measured phase tells how many placements took longer
//! than each bound inside the daemon, so that a tail can be put where it is. The buckets
//! double from 10 µs, so this is a share over each bound, not a percentile.

use serde::Serialize;
use std::collections::BTreeMap;

/// The histogram's name on `/metrics`.
const FAMILY: &str = "agt_order_place_duration_seconds";

/// The bounds the report gives a share for, µs: the histogram's own buckets (10 µs × 2ⁿ)
/// where a placement's tail lies.
const REPORTED_US: [u64; 6] = [160, 320, 640, 1280, 2560, 5120];

/// The placements the daemon timed during the phase (every client's, not only the
/// bench's), and the share of them over each bound.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DaemonTime {
    pub placements: u64,
    /// Bound in µs → the share (0–1) of placements that took longer than it.
    pub over_us: BTreeMap<u64, f64>,
}

/// The histogram's cumulative buckets: (upper bound in µs, placements at or under it),
/// and the count of all placements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    bounds: Vec<(u64, u64)>,
    count: u64,
}

impl Buckets {
    /// Reads the histogram out of a `/metrics` text; `None` when it is not there.
    pub fn parse(metrics: &str) -> Option<Buckets> {
        let mut b = Buckets::default();
        let mut seen_count = false;
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(FAMILY) else { continue };
            let Some((name, value)) = rest.rsplit_once(' ') else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            if name == "_count" {
                b.count = value as u64;
                seen_count = true;
            } else if let Some(le) = name.strip_prefix("_bucket{le=\"").and_then(|l| l.strip_suffix("\"}")) {
                if let Ok(seconds) = le.parse::<f64>() {
                    b.bounds.push(((seconds * 1e6).round() as u64, value as u64));
                }
            }
        }
        seen_count.then_some(b)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Buckets) -> DaemonTime {
        let placements = self.count.saturating_sub(earlier.count);
        let at_or_under = |buckets: &Buckets, us: u64| buckets.bounds.iter().find(|(b, _)| *b == us).map(|(_, n)| *n);
        let over_us = REPORTED_US
            .iter()
            .filter_map(|&us| {
                let under = at_or_under(self, us)?.saturating_sub(at_or_under(earlier, us).unwrap_or(0));
                let share = if placements == 0 { 0.0 } else { placements.saturating_sub(under) as f64 / placements as f64 };
                Some((us, share))
            })
            .collect();
        DaemonTime { placements, over_us }
    }
}

/// `over 160 µs 12.1 %, 320 µs 9.0 %, …` for the report's table.
pub fn render(t: &DaemonTime) -> String {
    let bound = |us: u64| if us >= 1000 { format!("{} ms", us as f64 / 1000.0) } else { format!("{us} µs") };
    let parts: Vec<String> = t.over_us.iter().map(|(&us, &share)| format!("{} {:.1} %", bound(us), share * 100.0)).collect();
    format!("over {} (of {} placements)", parts.join(", "), t.placements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(count: u64, buckets: &[(&str, u64)]) -> String {
        let mut s = String::from("# TYPE agt_order_place_duration_seconds histogram\nagt_orders_total{status=\"new\"} 5\n");
        s.push_str(&format!("agt_order_place_duration_seconds_sum 1.5\nagt_order_place_duration_seconds_count {count}\n"));
        for (le, n) in buckets {
            s.push_str(&format!("agt_order_place_duration_seconds_bucket{{le=\"{le}\"}} {n}\n"));
        }
        s
    }

    #[test]
    fn the_share_over_each_bound_comes_from_the_buckets_difference() {
        let before =
            Buckets::parse(&metrics(100, &[("0.00016", 90), ("0.00032", 95), ("0.00064", 100), ("0.00128", 100), ("+Inf", 100)])).unwrap();
        let after =
            Buckets::parse(&metrics(1100, &[("0.00016", 890), ("0.00032", 995), ("0.00064", 1090), ("0.00128", 1100), ("+Inf", 1100)]))
                .unwrap();
        let t = after.since(&before);
        assert_eq!(t.placements, 1000);
        assert_eq!(t.over_us[&160], 0.2, "800 of the 1000 at or under 160 µs");
        assert_eq!(t.over_us[&320], 0.1);
        assert_eq!(t.over_us[&640], 0.01);
        assert_eq!(t.over_us[&1280], 0.0);
        assert!(!t.over_us.contains_key(&2560), "a bound the daemon does not export is left out");
        assert_eq!(render(&t), "over 160 µs 20.0 %, 320 µs 10.0 %, 640 µs 1.0 %, 1.28 ms 0.0 % (of 1000 placements)");
    }

    #[test]
    fn no_histogram_no_figures() {
        assert_eq!(Buckets::parse("agt_orders_total 3\n"), None);
        let empty = Buckets::parse(&metrics(0, &[("0.00016", 0)])).unwrap();
        assert_eq!(empty.since(&empty).over_us[&160], 0.0, "no placements: nothing over");
    }
}
