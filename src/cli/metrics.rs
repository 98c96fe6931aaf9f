//! `agt metrics`: a readable summary of the daemon's Prometheus metrics (`GET /metrics`).
//!
//! Orders by status, trades, placement latency (p50/p99 estimated from the histogram
//! buckets of `agt_order_place_duration_seconds`, as Prometheus' `histogram_quantile`
//! does), services, and HTTP requests, plus current orders/s, trades/s and requests/s
//! from two scrapes one second apart. `-o json` prints the same summary as one object.

use super::output::Table;
use super::{CliResult, Ctx};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// How long `agt metrics` watches the counters to report current rates.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

pub fn run(ctx: &Ctx) -> CliResult {
    let client = ctx.client()?;
    let first = parse(&client.get_text("/metrics")?);
    let started = std::time::Instant::now();
    std::thread::sleep(RATE_WINDOW);
    let text = client.get_text("/metrics")?;
    let elapsed = started.elapsed().as_secs_f64();
    let now = parse(&text);
    let mut summary = summarize(&now);
    let rate = |name: &str| number(((sum(&now, name) - sum(&first, name)) / elapsed).max(0.0));
    summary["rates"] = json!({
        "window_s": elapsed,
        "orders_per_s": rate("agt_orders_total"),
        "trades_per_s": rate("agt_trades_total"),
        "http_requests_per_s": rate("http_requests_total"),
    });
    ctx.show(&summary, render)
}

/// One sample line of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus / OpenMetrics text format; lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(|l| parse_line(l.trim())).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// `a="x",b="y\"z"}` → the pairs and what follows the closing brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.push((key, value));
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Seconds rounded to the nanosecond: interpolation leaves float noise (0.010000000000000002).
fn nanos(secs: f64) -> f64 {
    (secs * 1e9).round() / 1e9
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

fn by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        *out.entry(s.label(label).unwrap_or("").to_string()).or_insert(0.0) += s.value;
    }
    out
}

/// The `q` quantile of a histogram (summed over its other labels), interpolating
/// linearly inside the bucket where it falls; `None` without observations.
pub fn quantile(samples: &[Sample], histogram: &str, q: f64) -> Option<f64> {
    let bucket = format!("{histogram}_bucket");
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == bucket) {
        let le = match s.label("le")? {
            "+Inf" | "Inf" => f64::INFINITY,
            v => v.parse().ok()?,
        };
        // Keyed by the bits of a non-negative float, which sort like the floats.
        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
    }
    let buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    bucket_quantile(&buckets, q)
}

/// The `q` quantile of cumulative `(le, count)` buckets in ascending `le`, interpolated
/// inside its bucket as Prometheus' `histogram_quantile` does; `None` without
/// observations. Shared with the TUI's sparklines.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = if count > below { (rank - below) / (count - below) } else { 1.0 };
            return Some(lower + (le - lower) * share);
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

/// The summary `agt metrics` prints.
pub fn summarize(samples: &[Sample]) -> Value {
    let orders: Map<String, Value> = by_label(samples, "agt_orders_total", "status").into_iter().map(|(k, v)| (k, number(v))).collect();
    let place = "agt_order_place_duration_seconds";
    let mut services: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    // `feed_behind`: events on the bus not handed to the service yet (audit, health,
    // market and notify are fed from the bus; the others have no feed).
    for (metric, key) in [
        ("agt_service_up", "up"),
        ("agt_service_restarts_total", "restarts"),
        ("agt_mailbox_depth", "mailbox_depth"),
        ("agt_feed_behind", "feed_behind"),
    ] {
        for (svc, v) in by_label(samples, metric, "service") {
            let v = if key == "up" { json!(v > 0.0) } else { number(v) };
            services.entry(svc).or_default().insert(key.into(), v);
        }
    }
    // A counter with no samples yet is left out of the text: no restarts is 0 restarts.
    for s in services.values_mut() {
        s.entry("restarts").or_insert(json!(0));
    }
    let mut by_endpoint: BTreeMap<String, f64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "http_requests_total") {
        let key = format!("{} {}", s.label("method").unwrap_or("?"), s.label("endpoint").unwrap_or("?"));
        *by_endpoint.entry(key).or_insert(0.0) += s.value;
    }
    json!({
        "orders": orders,
        "trades": number(sum(samples, "agt_trades_total")),
        "order_place_seconds": {
            "count": number(sum(samples, &format!("{place}_count"))),
            "p50": quantile(samples, place, 0.5).map(nanos),
            "p99": quantile(samples, place, 0.99).map(nanos),
        },
        "services": services,
        "bus_backlog": number(sum(samples, "agt_bus_backlog")),
        "http_requests": {
            "total": number(sum(samples, "http_requests_total")),
            "errors": number(sum(samples, "http_errors_total")),
            "by_endpoint": by_endpoint.into_iter().map(|(k, v)| (k, number(v))).collect::<Map<String, Value>>(),
        },
    })
}

fn latency(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(s) if s < 0.001 => format!("{:.0} µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.2} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
    }
}

fn render(m: &Value) -> String {
    let mut out = Vec::new();
    let orders = m["orders"].as_object().cloned().unwrap_or_default();
    let orders_line =
        if orders.is_empty() { "0".to_string() } else { orders.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ") };
    let p = &m["order_place_seconds"];
    let r = &m["rates"];
    if r.is_object() {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        out.push(format!(
            "rates:          {:.1} orders/s, {:.1} trades/s, {:.1} requests/s (over {:.1} s)",
            f("orders_per_s"),
            f("trades_per_s"),
            f("http_requests_per_s"),
            f("window_s")
        ));
    }
    // `agt_orders_total` counts each placement once, by the status it was answered with: a
    // later cancel or fill does not move it (`agt_bus_events_total` counts those events).
    out.push(format!("orders placed:  {orders_line} (status when answered)"));
    out.push(format!("trades:         {}", m["trades"]));
    out.push(format!("placement:      p50 {}, p99 {} ({} orders)", latency(&p["p50"]), latency(&p["p99"]), p["count"]));
    let http = &m["http_requests"];
    out.push(format!("http requests:  {} ({} errors)", http["total"], http["errors"]));
    out.push(format!("bus backlog:    {} events not stored yet", m["bus_backlog"]));
    if let Some(services) = m["services"].as_object().filter(|s| !s.is_empty()) {
        let mut t = Table::new(&["SERVICE", "UP", "RESTARTS", "MAILBOX", "FEED BEHIND"]);
        for (name, s) in services {
            let up = match s.get("up").and_then(Value::as_bool) {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            let num = |k: &str| s.get(k).map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            t.row(vec![name.clone(), up.into(), num("restarts"), num("mailbox_depth"), num("feed_behind")]);
        }
        out.push(String::new());
        out.push(t.render());
    }
    if let Some(eps) = http["by_endpoint"].as_object().filter(|e| !e.is_empty()) {
        let mut rows: Vec<(&String, f64)> = eps.iter().map(|(k, v)| (k, v.as_f64().unwrap_or(0.0))).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut t = Table::new(&["ENDPOINT", "REQUESTS"]);
        for (k, v) in rows.into_iter().take(10) {
            t.row(vec![super::output::clean(k), number(v).to_string()]);
        }
        out.push(String::new());
        out.push(t.render());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP agt_orders_total Orders by final status.
# TYPE agt_orders_total counter
agt_orders_total{status="new"} 3
agt_orders_total{status="filled"} 2
agt_trades_total 4
agt_order_place_duration_seconds_bucket{le="0.001"} 50
agt_order_place_duration_seconds_bucket{le="0.01"} 90
agt_order_place_duration_seconds_bucket{le="+Inf"} 100
agt_order_place_duration_seconds_count 100
agt_order_place_duration_seconds_sum 0.5
agt_service_up{service="market"} 1
agt_service_restarts_total{service="market"} 2
agt_mailbox_depth{service="market"} 0
agt_feed_behind{service="market"} 9
agt_bus_backlog 17
http_requests_total{service="agt",endpoint="/health",method="GET"} 7
http_requests_total{service="agt",endpoint="/api/orders",method="POST",note="a \"q\""} 5
# EOF
"#;

    #[test]
    fn parses_the_text_format() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 15);
        assert_eq!(s[14].label("note"), Some("a \"q\""));
        assert_eq!((s[5].label("le"), s[5].value), (Some("+Inf"), 100.0));
        assert_eq!(s[7], Sample { name: "agt_order_place_duration_seconds_sum".into(), labels: vec![], value: 0.5 });
    }

    #[test]
    fn summarizes() {
        let m = summarize(&parse(TEXT));
        assert_eq!(m["orders"]["filled"], 2);
        assert_eq!(m["trades"], 4);
        assert_eq!(m["http_requests"]["total"], 12);
        assert_eq!(m["http_requests"]["by_endpoint"]["GET /health"], 7);
        assert_eq!(m["services"]["market"]["up"], true);
        assert_eq!(m["services"]["market"]["restarts"], 2);
        assert_eq!(m["services"]["market"]["feed_behind"], 9);
        let table = render(&m);
        let head = table.lines().find(|l| l.starts_with("SERVICE")).unwrap();
        let market = table.lines().find(|l| l.starts_with("market")).unwrap();
        assert!(head.ends_with("FEED BEHIND") && market.trim_end().ends_with(" 9"), "{table}");
        // p50: rank 50 is the top of the first bucket.
        assert!((m["order_place_seconds"]["p50"].as_f64().unwrap() - 0.001).abs() < 1e-12);
        // p99: rank 99 is past the last finite bucket: its bound.
        assert!((m["order_place_seconds"]["p99"].as_f64().unwrap() - 0.01).abs() < 1e-12);
        assert!(render(&m).contains("p50 1.00 ms"));
        assert_eq!(m["bus_backlog"], 17);
        assert!(render(&m).contains("bus backlog:    17 events not stored yet"));
        assert!(render(&m).contains("orders placed:  filled 2, new 3 (status when answered)"), "{}", render(&m));
    }

    #[test]
    fn interpolates_inside_a_bucket() {
        let s = parse("h_bucket{le=\"1\"} 0\nh_bucket{le=\"2\"} 10\nh_bucket{le=\"+Inf\"} 10\n");
        assert!((quantile(&s, "h", 0.5).unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(quantile(&parse(""), "h", 0.5), None);
    }
}
