//! The shipped monitoring files: every metric the Grafana dashboard queries is one a real
//! daemon exports, and the Prometheus and systemd files say what the README says.

use crate::util::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn config_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{…}` or a `by (…)`
/// list), durations (inside `[…]`) or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out string literals and the insides of label matchers and ranges.
    let mut flat = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                flat.push_str(" \"\" ");
            }
            '{' => {
                // Label matchers; their values are strings, which may hold braces.
                let mut quote = None;
                for d in chars.by_ref() {
                    match (quote, d) {
                        (None, '}') => break,
                        (None, '"' | '\'' | '`') => quote = Some(d),
                        (Some(q), _) if d == q => quote = None,
                        _ => {}
                    }
                }
                flat.push_str("{}");
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
                flat.push_str("[]");
            }
            c => flat.push(c),
        }
    }
    let bytes: Vec<char> = flat.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let mut j = i;
            while j < bytes.len() && bytes[j].is_whitespace() {
                j += 1;
            }
            let next = bytes.get(j).copied();
            match word.as_str() {
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => skip_group = next == Some('('),
                "and" | "or" | "unless" | "bool" | "offset" | "inf" | "nan" | "Inf" | "NaN" => {}
                // Aggregations, also when their grouping comes first: `sum by (x) (…)`.
                "sum" | "min" | "max" | "avg" | "group" | "stddev" | "stdvar" | "count" | "count_values" | "bottomk" | "topk"
                | "quantile" | "limitk" | "limit_ratio" => {}
                _ if next == Some('(') => {}
                _ => {
                    names.insert(word);
                }
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // A number (0.99, 1e3): its letters are not a name.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c == '(' && skip_group {
            // A label list: `by (le, service)`.
            while i < bytes.len() && bytes[i] != ')' {
                i += 1;
            }
            skip_group = false;
        }
        i += 1;
    }
    names
}

/// A histogram's series name to its family: `x_bucket` → `x`.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let got = metric_names(
        r#"histogram_quantile(0.99, sum(rate(agt_store_commit_duration_seconds_bucket{instance=~"$instance"}[1m])) by (le, service))"#,
    );
    assert_eq!(got, BTreeSet::from(["agt_store_commit_duration_seconds_bucket".to_string()]));
    let got = metric_names(
        r#"sum by (status) (rate(agt_orders_total{a="b{c}"}[1m])) / on (x) group_left sum(up) > bool 0.5e1 and agt_trades_total"#,
    );
    assert_eq!(got, BTreeSet::from(["agt_orders_total".into(), "up".into(), "agt_trades_total".into()]));
    assert_eq!(family("agt_order_place_duration_seconds_bucket"), "agt_order_place_duration_seconds");
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_the_daemon() {
    let dash: Value = serde_json::from_str(&config_file("grafana-dashboard.json")).expect("the dashboard is JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36, "a current Grafana schema");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"),
        "a Prometheus datasource variable"
    );

    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{} has a gridPos", p["title"]);
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries something", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let families: BTreeSet<&str> = used.iter().map(|n| family(n)).collect();
    // The dashboard covers what DESIGN.md §4 exports.
    for want in [
        "http_requests_total",
        "http_errors_total",
        "agt_orders_total",
        "agt_trades_total",
        "agt_order_place_duration_seconds",
        "agt_service_up",
        "agt_service_restarts_total",
        "agt_mailbox_depth",
        "agt_bus_backlog",
        "agt_store_commit_duration_seconds",
        "agt_bus_events_total",
        "agt_notification_deliveries_total",
        "agt_feed_behind",
    ] {
        assert!(families.contains(want), "no panel shows {want}: {families:?}");
    }
    for want in [
        "rate(agt_orders_total",
        "rate(agt_trades_total",
        "histogram_quantile(0.99, sum(rate(agt_order_place_duration_seconds_bucket",
        "histogram_quantile(0.5, sum(rate(agt_order_place_duration_seconds_bucket",
        "sum(rate(http_errors_total",
        "increase(agt_service_restarts_total",
        "histogram_quantile(0.99, sum(rate(agt_store_commit_duration_seconds_bucket",
    ] {
        assert!(exprs.iter().any(|e| e.contains(want)), "no query has {want}");
    }

    // A real daemon, after a trade so that the lazily created series exist.
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let (b, s) = (dm.user("mb"), dm.user("ms"));
    dm.deposit(&b, "USD", "1000");
    dm.deposit(&s, &sym, "5");
    assert_eq!(dm.place(&s, &sym, "sell", "2", Some("10.00")).0, 201);
    let (st, o) = dm.place(&b, &sym, "buy", "2", Some("10.00"));
    assert_eq!((st, o["status"].as_str()), (201, Some("filled")), "{o}");
    dm.place(&b, &sym, "buy", "1000", Some("10.00")); // an error answer too
                                                      // /metrics is open on TCP: no token.
    let (st, text) = dm.tcp("GET", "/metrics", None, None);
    assert_eq!(st, 200);
    // The body is OpenMetrics (it ends with `# EOF`), and the content type says so.
    let mut raw = std::net::TcpStream::connect(dm.tcp_addr()).unwrap();
    std::io::Write::write_all(&mut raw, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut raw, &mut answer).unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(text.as_str().unwrap().trim_end().ends_with("# EOF"));
    let text = text.as_str().expect("Prometheus text").to_string();
    let mut declared = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap().to_string(), it.next().unwrap_or(""));
            // prometheus-client declares a counter family without `_total`, its samples carry it.
            if kind == "counter" && !name.ends_with("_total") {
                declared.insert(format!("{name}_total"));
            }
            declared.insert(name);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            sampled.insert(family(name).to_string());
        }
    }
    for f in &families {
        assert!(declared.contains(*f) || sampled.contains(*f), "the dashboard queries {f}, which /metrics does not export:\n{text}");
    }
    // Those a trade and an error produce have samples, not just a declaration.
    for f in [
        "http_requests_total",
        "http_errors_total",
        "agt_orders_total",
        "agt_trades_total",
        "agt_order_place_duration_seconds",
        "agt_service_up",
        "agt_mailbox_depth",
        "agt_bus_backlog",
        "agt_store_commit_duration_seconds",
        "agt_lane_busy_seconds",
        "agt_bus_events_total",
        "agt_feed_behind",
    ] {
        assert!(sampled.contains(f), "{f} has no sample after a trade:\n{text}");
    }
    // Each service's feed is there by name; market's is at 0 once a market read has
    // waited for it (`/api/trades` answers after market has seen every event).
    dm.ok("GET", &format!("/api/trades/{sym}"), None);
    let (_, text) = dm.tcp("GET", "/metrics", None, None);
    let text = text.as_str().unwrap();
    let behind = |service: &str| -> i64 {
        let series = format!("agt_feed_behind{{service=\"{service}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series}:\n{text}"));
        line[series.len()..].trim().parse().unwrap()
    };
    for service in ["audit", "health", "notify"] {
        assert!(behind(service) >= 0);
    }
    assert_eq!(behind("market"), 0, "{text}");
}

#[test]
fn the_prometheus_and_systemd_files_say_what_the_readme_says() {
    let prom = config_file("prometheus.yml");
    assert!(!prom.contains('\t'), "YAML is indented with spaces");
    let lines: Vec<&str> = prom.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect();
    for l in &lines {
        let indent = l.len() - l.trim_start().len();
        assert_eq!(indent % 2, 0, "odd indentation: {l:?}");
        let t = l.trim_start().trim_start_matches("- ");
        assert!(t.contains(':'), "not `key: value`: {l:?}");
    }
    for want in ["scrape_configs:", "job_name: agt", "metrics_path: /metrics", "scrape_interval: 5s", "\"127.0.0.1:8000\""] {
        assert!(prom.contains(want), "prometheus.yml lacks {want:?}");
    }
    assert!(prom.to_lowercase().contains("/metrics") && prom.contains("open"), "prometheus.yml says /metrics needs no token");
    // It scrapes where the daemon listens by default.
    let defaults: toml::Value = toml::from_str(&config_file("agt.toml")).unwrap();
    assert_eq!(defaults["http"]["listen"].as_str(), Some("127.0.0.1:8000"));

    let unit = config_file("agt.service");
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "agt.service lacks {section}");
    }
    let settings: Vec<&str> = unit.lines().filter(|l| !l.trim_start().starts_with('#') && l.contains('=')).collect();
    for want in [
        "ExecStart=%h/.cargo/bin/agt daemon run",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "WantedBy=default.target",
    ] {
        assert!(settings.contains(&want), "agt.service lacks {want:?}");
    }
}

/// `agt_orders_total` counts an order by the time its placement is answered: a scrape
/// right after the answer sees it (the lane records the order after it answers, and
/// counting there left a window in which it did not).
#[test]
fn an_answered_order_is_already_counted() {
    let d = Daemon::start();
    let sym = d.symbol("0.01", "1");
    let u = d.user("counted");
    d.deposit(&u, "USD", "100");
    let orders = |d: &Daemon| -> f64 {
        let (_, text) = d.req("GET", "/metrics", None);
        text.as_str()
            .expect("Prometheus text")
            .lines()
            .filter(|l| l.starts_with("agt_orders_total"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    for n in 1..=20 {
        // The last one asks for more than the account holds: rejected, and counted too.
        let qty = if n == 20 { "500" } else { "1" };
        let (status, body) = d.place(&u, &sym, "buy", qty, Some("1.00"));
        assert_eq!(status, if n == 20 { 422 } else { 201 }, "{body}");
        assert_eq!(orders(&d), n as f64, "order {n} answered but not counted");
    }
}
