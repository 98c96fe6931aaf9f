//! The Overview's sparklines: per-second rates turned from counters into short histories.
//!
//! Orders/s, trades/s and placement p99 come from `/metrics`, sampled at most once a
//! second and only while Overview is visible; each point is the change between two
//! samples, so a gap (another tab was open) becomes one averaged point, not a spike.
//! The event rate is counted from the live stream itself, one point per tick.

use crate::cli::metrics::{parse, Sample};
use std::collections::VecDeque;

/// How many points a sparkline keeps: wider than any sparkline drawn at 120 columns.
const HISTORY: usize = 120;

/// One reading of `/metrics`, reduced to what the sparklines need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSample {
    /// Milliseconds since the dashboard started, when the answer arrived; rates divide by
    /// the time between two readings, not by the nominal tick.
    pub at_ms: u64,
    /// `agt_orders_total`, summed over statuses.
    pub orders: f64,
    /// `agt_trades_total`.
    pub trades: f64,
    /// Cumulative buckets of `agt_order_place_duration_seconds`: (upper bound s, count).
    pub place_buckets: Vec<(f64, f64)>,
}

impl MetricsSample {
    /// Reads the Prometheus text of `/metrics`.
    pub fn from_text(text: &str, at_ms: u64) -> MetricsSample {
        let samples = parse(text);
        let sum = |name: &str| samples.iter().filter(|s| s.name == name).map(|s| s.value).sum::<f64>();
        let mut place_buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == "agt_order_place_duration_seconds_bucket")
            .filter_map(|s: &Sample| {
                let le = s.labels.iter().find(|(k, _)| k == "le")?.1.as_str();
                let le = if le.ends_with("Inf") { f64::INFINITY } else { le.parse().ok()? };
                Some((le, s.value))
            })
            .collect();
        place_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        MetricsSample { at_ms, orders: sum("agt_orders_total"), trades: sum("agt_trades_total"), place_buckets }
    }
}

/// A bounded history of one sparkline, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: VecDeque<u64>,
}

impl Series {
    pub fn push(&mut self, v: u64) {
        if self.points.len() == HISTORY {
            self.points.pop_front();
        }
        self.points.push_back(v);
    }

    /// The newest `n` points, oldest first (what a sparkline `n` cells wide shows).
    pub fn last_n(&self, n: usize) -> Vec<u64> {
        let skip = self.points.len().saturating_sub(n);
        self.points.iter().skip(skip).copied().collect()
    }

    pub fn last(&self) -> Option<u64> {
        self.points.back().copied()
    }
}

/// Every sparkline of Overview.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    /// The previous `/metrics` reading; the next one is compared with it.
    prev: Option<MetricsSample>,
    pub orders_per_s: Series,
    pub trades_per_s: Series,
    /// Placement p99 in µs over the window between two readings (0: no placements).
    pub place_p99_us: Series,
    pub events_per_s: Series,
    /// Events received since the last tick.
    events_this_tick: u64,
}

impl Rates {
    /// Adds the points a new `/metrics` reading yields.
    pub fn add_metrics(&mut self, s: MetricsSample) {
        let Some(prev) = self.prev.replace(s.clone()) else { return };
        let dt = s.at_ms.saturating_sub(prev.at_ms) as f64 / 1000.0;
        // A counter that went down means the daemon restarted: start over from this reading.
        if dt <= 0.0 || s.orders < prev.orders || s.trades < prev.trades {
            return;
        }
        self.orders_per_s.push(((s.orders - prev.orders) / dt).round() as u64);
        self.trades_per_s.push(((s.trades - prev.trades) / dt).round() as u64);
        let window = delta_buckets(&prev.place_buckets, &s.place_buckets);
        let p99 = quantile(&window, 0.99).map(|secs| (secs * 1e6).round() as u64).unwrap_or(0);
        self.place_p99_us.push(p99);
    }

    /// One event arrived on the stream.
    pub fn count_event(&mut self) {
        self.events_this_tick += 1;
    }

    /// A second passed: the events counted make one point.
    pub fn tick(&mut self) {
        let n = std::mem::take(&mut self.events_this_tick);
        self.events_per_s.push(n);
    }

    /// Forget the previous reading (after a reconnect the counters may have restarted).
    pub fn reset_metrics(&mut self) {
        self.prev = None;
    }
}

/// The observations that fell between two readings, bucket by bucket.
fn delta_buckets(prev: &[(f64, f64)], now: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|&(le, count)| {
            let before = prev.iter().find(|(l, _)| *l == le).map(|(_, c)| *c).unwrap_or(0.0);
            (le, (count - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets (the same interpolation as `agt metrics`).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    crate::cli::metrics::bucket_quantile(buckets, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(orders: u64, trades: u64, fast: u64, slow: u64) -> String {
        format!(
            "agt_orders_total{{status=\"new\"}} {orders}\nagt_trades_total {trades}\n\
             agt_order_place_duration_seconds_bucket{{le=\"0.0001\"}} {fast}\n\
             agt_order_place_duration_seconds_bucket{{le=\"0.001\"}} {}\n\
             agt_order_place_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
            fast + slow,
            fast + slow
        )
    }

    #[test]
    fn rates_are_changes_per_second() {
        let mut r = Rates::default();
        r.add_metrics(MetricsSample::from_text(&text(10, 2, 10, 0), 1000));
        assert_eq!(r.orders_per_s.last(), None, "one reading makes no rate");
        r.add_metrics(MetricsSample::from_text(&text(30, 6, 20, 10), 3000));
        assert_eq!(r.orders_per_s.last(), Some(10));
        assert_eq!(r.trades_per_s.last(), Some(2));
        // 20 new placements, 10 fast and 10 slow: p99 lies in the slow bucket.
        let p99 = r.place_p99_us.last().unwrap();
        assert!((100..=1000).contains(&p99), "{p99}");
    }

    #[test]
    fn a_restarted_daemon_starts_over() {
        let mut r = Rates::default();
        r.add_metrics(MetricsSample::from_text(&text(100, 0, 0, 0), 1000));
        r.add_metrics(MetricsSample::from_text(&text(5, 0, 0, 0), 2000));
        assert_eq!(r.orders_per_s.last(), None);
        r.add_metrics(MetricsSample::from_text(&text(7, 0, 0, 0), 3000));
        assert_eq!(r.orders_per_s.last(), Some(2));
        assert_eq!(r.place_p99_us.last(), Some(0));
    }

    #[test]
    fn series_are_bounded() {
        let mut s = Series::default();
        for i in 0..500 {
            s.push(i);
        }
        assert_eq!(s.last_n(3), vec![497, 498, 499]);
        assert_eq!(s.last_n(1000).len(), HISTORY);
    }
}
