//! Fixed fake data for the dashboard's tests: a small market seen through the same
//! actions the daemon would cause, so the tests exercise `update` while they build it.

use super::action::{Action, MarketData, Net, Snapshot};
use super::app::{App, Settings};
use super::rates::MetricsSample;
use crate::api::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rust_decimal::Decimal;
use serde_json::json;

pub fn d(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

pub fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ch(c: char) -> Action {
    key(KeyCode::Char(c))
}

pub fn ctrl(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// Types `text` key by key.
pub fn typing(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(ch(c));
    }
}

pub fn snap(s: Snapshot) -> Action {
    Action::Net(Net::Snapshot(s, None))
}

/// A snapshot the daemon answered `behind` events behind its event bus.
pub fn snap_behind(s: Snapshot, behind: u64) -> Action {
    Action::Net(Net::Snapshot(s, Some(behind)))
}

pub const ALICE: &str = "usr_00000000a11ce001";
pub const BOB: &str = "usr_000000000b0b0002";

pub fn user(id: &str, name: &str) -> User {
    User {
        user_id: id.into(),
        username: name.into(),
        email: format!("{name}@example.com"),
        status: "active".into(),
        created_at: "2025-03-01T09:00:00.000000Z".into(),
        updated_at: "2025-03-01T09:00:00.000000Z".into(),
    }
}

pub fn instrument(symbol: &str, tick: &str, lot: &str) -> Instrument {
    Instrument {
        symbol: symbol.into(),
        base: symbol.trim_end_matches("-USD").into(),
        quote: "USD".into(),
        tick: d(tick),
        lot: d(lot),
        min_quantity: d(lot),
        max_quantity: d("100000"),
    }
}

pub fn services() -> Vec<ServiceInfo> {
    let names = ["config", "health", "audit", "users", "auth", "risk", "market", "trading", "orders", "notify"];
    names
        .iter()
        .map(|n| {
            let (state, restarts, uptime, err) = match *n {
                "risk" => ("running", 2, 40, Some("fault injection: risk was told to crash")),
                "notify" => ("failed", 6, 0, Some("webhook queue: disk I/O error")),
                _ => ("running", 0, 7380, None),
            };
            ServiceInfo {
                name: n.to_string(),
                state: state.into(),
                restarts,
                started_at: None,
                uptime_s: uptime,
                last_error: err.map(String::from),
                mailbox_depth: if *n == "orders" { 3 } else { 0 },
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // one row of a table of fixtures, read across
pub fn order(id: &str, user: &str, side: Side, qty: &str, price: Option<&str>, filled: &str, status: OrderStatus, at: &str) -> Order {
    let q = d(qty);
    let f = d(filled);
    Order {
        order_id: id.into(),
        user_id: user.into(),
        symbol: "AAPL".into(),
        side,
        kind: if price.is_some() { OrderType::Limit } else { OrderType::Market },
        time_in_force: TimeInForce::Gtc,
        price: price.map(d),
        quantity: q,
        filled_quantity: f,
        remaining_quantity: q - f,
        average_price: (!f.is_zero()).then(|| d(price.unwrap_or("150.10"))),
        status,
        fills: vec![],
        client_order_id: None,
        created_at: format!("2025-03-01T10:{at}.000000Z"),
        updated_at: format!("2025-03-01T10:{at}.000000Z"),
        reject_reason: (status == OrderStatus::Rejected).then(|| "insufficient_funds".to_string()),
    }
}

pub fn orders() -> Vec<Order> {
    use OrderStatus::*;
    vec![
        order("ord_0195aaaa00000000c0ffee01", ALICE, Side::Buy, "10", Some("150.25"), "0", New, "05:09"),
        order("ord_0195aaaa00000000c0ffee02", BOB, Side::Sell, "5", Some("150.30"), "2", PartiallyFilled, "04:30"),
        order("ord_0195aaaa00000000c0ffee03", BOB, Side::Sell, "3", None, "3", Filled, "03:12"),
        order("ord_0195aaaa00000000c0ffee04", ALICE, Side::Buy, "1000", Some("149.00"), "0", Rejected, "02:00"),
        order("ord_0195aaaa00000000c0ffee05", ALICE, Side::Buy, "7", Some("148.50"), "0", Cancelled, "01:45"),
    ]
}

pub fn market() -> MarketData {
    let level = |p: &str, q: &str| (d(p), d(q));
    let trade = |n: u32, p: &str, q: &str, side: Side, at: &str| Trade {
        trade_id: format!("trd_{n}"),
        symbol: "AAPL".into(),
        price: d(p),
        quantity: d(q),
        taker_side: side,
        buy_order_id: "ord_b".into(),
        sell_order_id: "ord_s".into(),
        timestamp: format!("2025-03-01T10:{at}.000000Z"),
    };
    let closes = ["149.80", "150.10", "149.95", "150.40", "150.20", "150.65", "150.30", "150.15"];
    let candles = closes
        .iter()
        .enumerate()
        .map(|(i, c)| Candle {
            symbol: "AAPL".into(),
            interval: "1m".into(),
            open_time: format!("2025-03-01T10:0{i}:00Z"),
            open: d(c) - d("0.10"),
            high: d(c) + d("0.20"),
            low: d(c) - d("0.25"),
            close: d(c),
            volume: d("120"),
            trades: 4,
        })
        .collect();
    MarketData {
        symbol: "AAPL".into(),
        book: BookView {
            symbol: "AAPL".into(),
            bids: vec![level("150.25", "10"), level("150.20", "25"), level("150.00", "100")],
            asks: vec![level("150.30", "3"), level("150.35", "40"), level("151.00", "8")],
            sequence: 42,
        },
        trades: vec![
            trade(3, "150.30", "2", Side::Buy, "04:31"),
            trade(2, "150.10", "3", Side::Sell, "03:12"),
            trade(1, "150.15", "1", Side::Buy, "01:02"),
        ],
        candles,
    }
}

pub fn account() -> Account {
    Account {
        user_id: ALICE.into(),
        balances: vec![
            Balance { asset: "AAPL".into(), total: d("12"), held: d("0"), available: d("12") },
            Balance { asset: "USD".into(), total: d("98197.50"), held: d("1502.50"), available: d("96695.00") },
        ],
        positions: vec![Position { symbol: "AAPL".into(), quantity: d("12"), average_price: d("150.04") }],
    }
}

pub fn event(seq: u64, kind: &str, source: &str, data: serde_json::Value) -> Event {
    Event {
        seq,
        event_id: format!("evt_{seq}"),
        kind: kind.into(),
        source: source.into(),
        timestamp: format!("2025-03-01T10:{:02}:{:02}.000000Z", seq / 60 % 60, seq % 60),
        data,
    }
}

pub fn events() -> Vec<Event> {
    vec![
        event(
            301,
            "USER_CREATED",
            "users",
            json!({"user_id": ALICE, "username": "alice", "email": "alice@example.com", "status": "active"}),
        ),
        event(302, "ACCOUNT_DEPOSITED", "risk", json!({"user_id": ALICE, "asset": "USD", "amount": "100000", "total": "100000"})),
        event(303, "SERVICE_RESTARTED", "health", json!({"service": "risk", "reason": "fault injection: risk was told to crash"})),
        event(
            304,
            "ORDER_CREATED",
            "orders",
            json!({"order_id": "ord_0195aaaa00000000c0ffee01", "user_id": ALICE, "symbol": "AAPL", "side": "buy", "quantity": "10", "price": "150.25", "status": "new"}),
        ),
        event(
            305,
            "TRADE_EXECUTED",
            "trading",
            json!({"trade_id": "trd_3", "symbol": "AAPL", "price": "150.30", "quantity": "2", "taker_side": "buy"}),
        ),
    ]
}

pub fn audit() -> Vec<AuditRecord> {
    (1..=6)
        .map(|i| AuditRecord {
            seq: 1000 + i,
            timestamp: format!("2025-03-01T10:0{i}:00.000000Z"),
            actor: if i % 2 == 0 { "socket".into() } else { "event:orders".into() },
            action: if i % 2 == 0 { "POST /api/orders".into() } else { "ORDER_CREATED".into() },
            detail: json!({"symbol": "AAPL", "n": i}),
            prev_hash: format!("{:064x}", i - 1),
            hash: format!("{:064x}", i * 7919),
        })
        .collect()
}

/// A metrics text with these counters.
pub fn metrics(at_ms: u64, orders: u64, trades: u64, fast: u64, slow: u64) -> Snapshot {
    let text = format!(
        "agt_orders_total{{status=\"new\"}} {orders}\nagt_trades_total {trades}\n\
         agt_order_place_duration_seconds_bucket{{le=\"0.00004\"}} {fast}\n\
         agt_order_place_duration_seconds_bucket{{le=\"0.00008\"}} {}\n\
         agt_order_place_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
        fast + slow,
        fast + slow
    );
    Snapshot::Metrics(MetricsSample::from_text(&text, at_ms))
}

/// `/health` of a degraded daemon up for 2h03m, with these services' states.
pub fn health(services: std::collections::BTreeMap<String, String>) -> Health {
    Health {
        service: "agt".into(),
        status: "degraded".into(),
        timestamp: "2025-03-01T10:05:00Z".into(),
        version: "0.1.0".into(),
        build: "8ace95c".into(),
        uptime_s: 7380,
        services,
    }
}

/// A dashboard connected to a daemon holding all of the above.
pub fn app() -> App {
    let mut app = App::new(Settings { endpoint: "/home/op/.local/share/agt/agt.sock".into(), read_only: false, symbol: None });
    app.update(Action::Net(Net::Connected { head: 300, own: false }));
    app.update(Action::Net(Net::Role(Role::Admin)));
    app.update(snap(Snapshot::Health(health(Default::default()))));
    app.update(snap(Snapshot::Services(services())));
    app.update(snap(Snapshot::Users(vec![user(BOB, "bob"), user(ALICE, "alice")])));
    app.update(snap(Snapshot::Symbols(vec![instrument("AAPL", "0.01", "1"), instrument("BTC-USD", "0.01", "0.0001")])));
    app.update(snap(Snapshot::Orders(orders())));
    app.update(snap(Snapshot::Market(market())));
    app.update(snap(Snapshot::Account(account())));
    app.update(snap(Snapshot::Audit(audit())));
    app.update(snap(Snapshot::AuditVerify(AuditVerify {
        ok: true,
        records: 1006,
        first_bad: None,
        unmet_anchor: None,
        anchor_unreadable: None,
    })));
    // Sparklines: a minute of readings with a wave in them, and events each second.
    a_minute_of_readings(&mut app, true);
    for e in events() {
        app.update(Action::Net(Net::Event(Box::new(e))));
    }
    // The events above made some snapshots stale; answer as the daemon would.
    app.update(Action::Flush);
    app.update(snap(Snapshot::Orders(orders())));
    app.update(snap(Snapshot::Services(services())));
    app.flash = None;
    app
}

/// A minute of `/metrics` readings with a wave in them, a tick each second, and with
/// `events` the event stream's arrivals of each second too.
fn a_minute_of_readings(app: &mut App, events: bool) {
    let (mut orders_n, mut trades_n, mut fast, mut slow) = (0, 0, 0, 0);
    for i in 0..60u64 {
        let wave = (i % 10) * 3;
        orders_n += 20 + wave;
        trades_n += 5 + wave / 2;
        fast += 18 + wave;
        slow += 2 + i % 3;
        if events {
            for _ in 0..(40 + wave) {
                app.rates.count_event();
            }
        }
        app.update(Action::Tick);
        app.update(snap(metrics(i * 1000, orders_n, trades_n, fast, slow)));
    }
}

/// Why the daemon refuses a trader token its event stream: one bound to no user.
pub const TRADER_REFUSED: &str = "this trader token is bound to no user, so it has no events to read";

/// Alice's own events, as her trader token's stream holds them: of the trader's types,
/// naming her.
pub fn own_events() -> Vec<Event> {
    let own = |e: &Event| !e.kind.starts_with("SERVICE_") && e.kind != "TRADE_EXECUTED" && e.data["user_id"] == ALICE;
    events().into_iter().filter(own).collect()
}

/// Alice's dashboard with her trader token over TCP, answered as the daemon answers a
/// trader: the stream of her own events (polled besides), the services' states from
/// `/health` only, her user alone, her orders alone, the tape without order ids.
pub fn trader_app() -> App {
    let mut app = App::new(Settings { endpoint: "http://10.0.0.5:8000".into(), read_only: false, symbol: None });
    app.update(Action::Net(Net::Role(Role::Trader)));
    app.update(Action::Net(Net::Connected { head: 304, own: true }));
    for e in own_events() {
        app.update(Action::Net(Net::Event(Box::new(e))));
    }
    app.update(snap(Snapshot::Health(health(services().into_iter().map(|s| (s.name, s.state)).collect()))));
    app.update(snap(Snapshot::Users(vec![user(ALICE, "alice")])));
    app.update(snap(Snapshot::Symbols(vec![instrument("AAPL", "0.01", "1"), instrument("BTC-USD", "0.01", "0.0001")])));
    app.update(snap(Snapshot::Orders(orders().into_iter().filter(|o| o.user_id == ALICE).collect())));
    let mut market = market();
    for t in &mut market.trades {
        t.buy_order_id.clear();
        t.sell_order_id.clear();
    }
    app.update(snap(Snapshot::Market(market)));
    app.update(snap(Snapshot::Account(account())));
    // Its stream is not the market's: no event rate, readings only.
    a_minute_of_readings(&mut app, false);
    app.flash = None;
    app
}
