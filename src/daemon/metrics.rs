//! Every metric agt exports, in one place (DESIGN.md §4), so names cannot drift.
//!
//! Labels are bounded: a service name, a route template, a status, an event type — never an
//! id or a username. The registry is process-wide; `/metrics` encodes it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub service: &'static str,
    pub endpoint: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service: &'static str,
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub service: &'static str,
    pub endpoint: &'static str,
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkLabel {
    pub work: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 10 µs .. ~40 s: placement is tens of µs; a stuck request shows up too.
    prometheus_client::metrics::histogram::exponential_buckets(0.00001, 2.0, 22)
}

/// The metric families.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<EndpointLabels, Histogram>,
    pub http_errors: Family<ErrorLabels, Counter>,
    pub active_connections: Family<ServiceLabel, Gauge>,
    pub orders: Family<StatusLabel, Counter>,
    pub trades: Counter,
    pub order_place_duration: Histogram,
    pub service_restarts: Family<ServiceLabel, Counter>,
    pub service_up: Family<ServiceLabel, Gauge>,
    pub mailbox_depth: Family<ServiceLabel, Gauge>,
    pub store_commit: Family<ServiceLabel, Histogram>,
    /// The trading lane's stretches of work, each one a wait for every placement that
    /// arrives meanwhile (`lane_busy`).
    pub lane_busy: Family<WorkLabel, Histogram>,
    pub bus_events: Family<TypeLabel, Counter>,
    pub bus_events_kept: Gauge,
    /// Events handed to the bus and not stored yet (set at scrape time).
    pub bus_backlog: Gauge,
    /// Events stored on the bus that a service's feed has not handed to it yet (set at
    /// scrape time).
    pub feed_behind: Family<ServiceLabel, Gauge>,
    pub notification_deliveries: Family<ResultLabel, Counter>,
}

pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<EndpointLabels, Histogram>::new_with_constructor((|| Histogram::new(latency_buckets())) as fn() -> Histogram);
        let http_errors = Family::<ErrorLabels, Counter>::default();
        let active_connections = Family::<ServiceLabel, Gauge>::default();
        let orders = Family::<StatusLabel, Counter>::default();
        let trades = Counter::default();
        let order_place_duration = Histogram::new(latency_buckets());
        let service_restarts = Family::<ServiceLabel, Counter>::default();
        let service_up = Family::<ServiceLabel, Gauge>::default();
        let mailbox_depth = Family::<ServiceLabel, Gauge>::default();
        let store_commit =
            Family::<ServiceLabel, Histogram>::new_with_constructor((|| Histogram::new(latency_buckets())) as fn() -> Histogram);
        let lane_busy = Family::<WorkLabel, Histogram>::new_with_constructor((|| Histogram::new(latency_buckets())) as fn() -> Histogram);
        let bus_events = Family::<TypeLabel, Counter>::default();
        let bus_events_kept = Gauge::default();
        let bus_backlog = Gauge::default();
        let feed_behind = Family::<ServiceLabel, Gauge>::default();
        let notification_deliveries = Family::<ResultLabel, Counter>::default();
        r.register("http_requests", "HTTP requests by service, route and method", http_requests.clone());
        r.register("http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        r.register("http_errors", "HTTP error answers by error code", http_errors.clone());
        r.register("active_connections", "Open client connections", active_connections.clone());
        r.register("agt_orders", "Orders by final or resting status at placement", orders.clone());
        r.register("agt_trades", "Trades executed", trades.clone());
        r.register("agt_order_place_duration_seconds", "Order placement latency through the whole saga", order_place_duration.clone());
        r.register("agt_service_restarts", "Service restarts by the supervisor", service_restarts.clone());
        r.register("agt_service_up", "1 when the service is running", service_up.clone());
        r.register("agt_mailbox_depth", "Commands waiting in a service's mailbox", mailbox_depth.clone());
        r.register("agt_store_commit_duration_seconds", "One batch transaction's duration", store_commit.clone());
        r.register(
            "agt_lane_busy_seconds",
            "The trading lane's stretches of work without a look at its mailbox: a batch of commands (with a flush step it made due), or, while no command waits, a flush step or the record of one answered batch",
            lane_busy.clone(),
        );
        r.register("agt_bus_events", "Events committed to the bus by type", bus_events.clone());
        r.register(
            "agt_bus_events_kept",
            "Events kept in events.db for replay (older ones are pruned: events.retain_s)",
            bus_events_kept.clone(),
        );
        r.register(
            "agt_bus_backlog",
            "Events handed to the bus and not yet stored in events.db (it runs below the order path: this shows whether it keeps up)",
            bus_backlog.clone(),
        );
        r.register(
            "agt_feed_behind",
            "Events stored on the bus that a service's feed has not handed to it yet: with agt_mailbox_depth, how far audit, health, market and notify are behind the order flow (a feed waits while its service's mailbox is full, then reads what it passed from events.db)",
            feed_behind.clone(),
        );
        r.register("agt_notification_deliveries", "Webhook delivery attempts by result", notification_deliveries.clone());
        // Every status is there from the start, at 0 (a rate() over a series that does not
        // exist yet shows no data, not 0).
        for status in ["new", "partially_filled", "filled", "cancelled", "rejected", "expired"] {
            let _ = orders.get_or_create(&StatusLabel { status });
        }
        Metrics {
            registry: r,
            http_requests,
            http_duration,
            http_errors,
            active_connections,
            orders,
            trades,
            order_place_duration,
            service_restarts,
            service_up,
            mailbox_depth,
            store_commit,
            lane_busy,
            bus_events,
            bus_events_kept,
            bus_backlog,
            feed_behind,
            notification_deliveries,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

pub fn observe_commit(service: &'static str, took: Duration) {
    get().store_commit.get_or_create(&ServiceLabel { service }).observe(took.as_secs_f64());
}

/// The histogram of the trading lane's stretches of `work` ("batch", "flush_step",
/// "record"), taken once by the lane: a stretch is observed without a label lookup.
pub fn lane_busy(work: &'static str) -> Histogram {
    get().lane_busy.get_or_create(&WorkLabel { work }).clone()
}

pub fn bus_event(kind: &'static str) {
    get().bus_events.get_or_create(&TypeLabel { r#type: kind }).inc();
}

/// Events stored from the oldest kept to the newest.
pub fn bus_events_kept(first: u64, last: u64) {
    get().bus_events_kept.set((last + 1).saturating_sub(first) as i64);
}

pub fn order(status: &'static str) {
    get().orders.get_or_create(&StatusLabel { status }).inc();
}
