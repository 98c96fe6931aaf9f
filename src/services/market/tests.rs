//! The market service against a real store: instruments, the tape, quotes, candles,
//! replayed events and reloads.

use super::candles::Span;
use super::service::TEST_MIGRATIONS;
use super::Market;
use crate::api::{ApiError, Event, NewInstrument, Side, Trade};
use crate::services::bus::BusEvent;
use crate::services::config::settings::SymbolSettings;
use crate::services::store::{self, Durability};
use rust_decimal::Decimal;
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    conn: rusqlite::Connection,
    market: Market,
    seq: u64,
}

impl Fixture {
    fn new(seeds: &[SymbolSettings]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("market.db");
        let conn = store::open(&path, Durability::Normal, TEST_MIGRATIONS).unwrap();
        let market = Market::open(&conn, seeds).unwrap();
        Fixture { _dir: dir, path, conn, market, seq: 0 }
    }

    /// Runs `f` in one committed transaction, as the actor runs a batch.
    fn tx<T>(&mut self, f: impl FnOnce(&mut Market, &rusqlite::Connection) -> T) -> T {
        let tx = self.conn.transaction().unwrap();
        let out = f(&mut self.market, &tx);
        crate::services::actor::Service::before_commit(&mut self.market, &tx).unwrap();
        tx.commit().unwrap();
        out
    }

    fn add(&mut self, symbol: &str, tick: &str, lot: &str) -> Result<crate::api::Instrument, ApiError> {
        let new = NewInstrument { symbol: symbol.into(), tick: d(tick), lot: d(lot), min_quantity: None, max_quantity: None };
        self.tx(|m, tx| m.add_symbol(tx, new).unwrap())
    }

    fn event(&mut self, seq: u64, kind: &str, data: serde_json::Value) {
        let e = BusEvent::from_event(Event {
            seq,
            event_id: format!("evt_{seq}"),
            kind: kind.into(),
            source: "trading".into(),
            timestamp: crate::api::now_rfc3339(),
            data,
        });
        self.tx(|m, tx| m.apply(tx, &e).unwrap());
        self.seq = self.seq.max(seq);
    }

    /// A TRADE_EXECUTED event with the next sequence number.
    fn trade(&mut self, id: &str, symbol: &str, price: &str, qty: &str, ts_us: i64) {
        let t = trade(id, symbol, price, qty, ts_us);
        let seq = self.seq + 1;
        self.event(seq, "TRADE_EXECUTED", serde_json::to_value(t).unwrap());
    }

    fn tape(&mut self, symbol: &str, limit: usize) -> Vec<String> {
        self.tx(|m, tx| m.trades(tx, symbol, limit).unwrap().unwrap()).into_iter().map(|t| t.trade_id).collect()
    }

    fn reopen(&mut self, seeds: &[SymbolSettings]) -> Market {
        let conn = store::open(&self.path, Durability::Normal, TEST_MIGRATIONS).unwrap();
        Market::open(&conn, seeds).unwrap()
    }
}

fn ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn trade(id: &str, symbol: &str, price: &str, qty: &str, ts_us: i64) -> Trade {
    Trade {
        trade_id: id.into(),
        symbol: symbol.into(),
        price: d(price),
        quantity: d(qty),
        taker_side: Side::Buy,
        buy_order_id: format!("b_{id}"),
        sell_order_id: format!("s_{id}"),
        timestamp: ts(ts_us),
    }
}

fn seed(symbol: &str, tick: &str, lot: &str) -> SymbolSettings {
    SymbolSettings { symbol: symbol.into(), tick: d(tick), lot: d(lot), min_quantity: d(lot), max_quantity: d("1000") }
}

const S: i64 = 1_000_000;
/// 2024-05-01T00:00:00Z in microseconds.
const T0: i64 = 1_714_521_600 * S;

#[test]
fn symbols_are_validated_with_codes_that_say_what_is_wrong() {
    let mut f = Fixture::new(&[]);
    let i = f.add("BTC-USD", "0.01", "0.0001").unwrap();
    assert_eq!((i.base.as_str(), i.quote.as_str()), ("BTC", "USD"));
    assert_eq!((i.min_quantity, i.max_quantity), (d("0.0001"), d("1000000000")));
    assert_eq!(f.add("BRK.B", "0.01", "1").unwrap().base, "BRK.B");
    assert_eq!(f.add(&"X".repeat(32), "1", "1").unwrap().symbol.len(), 32);

    for bad in [
        "",
        "aapl",
        "AAPL ",
        "A B",
        "X'; DROP TABLE instruments;--",
        "\u{1f680}",
        "A\u{0}B",
        "USD",
        "-USD",
        ".",
        "..",
        "-",
        "-A-",
        "USD-",
        ".-USD",
        "BTC-USD-USD",
    ] {
        let e = f.add(bad, "0.01", "1").unwrap_err();
        assert_eq!((e.status, e.code.as_ref()), (400, "invalid_symbol"), "{bad:?}");
    }
    let e = f.add(&"X".repeat(33), "1", "1").unwrap_err();
    assert!(e.message.contains("1-32 characters of A-Z"), "{}", e.message);
    assert_eq!(f.add("NEG", "-1", "1").unwrap_err().code, "invalid_tick");
    assert_eq!(f.add("ZERO", "0", "1").unwrap_err().code, "invalid_tick");
    assert_eq!(f.add("LOT", "0.01", "0").unwrap_err().code, "invalid_lot");

    let inverted =
        NewInstrument { symbol: "INV".into(), tick: d("1"), lot: d("1"), min_quantity: Some(d("10")), max_quantity: Some(d("5")) };
    assert_eq!(f.tx(|m, tx| m.add_symbol(tx, inverted).unwrap()).unwrap_err().code, "invalid_quantity");
    // Quantities on the lot's grid: no order could be exactly a min or max off it.
    for (min, max) in [(Some("1.5"), None), (Some("4"), Some("5"))] {
        let off = NewInstrument { symbol: "OFF".into(), tick: d("1"), lot: d("2"), min_quantity: min.map(d), max_quantity: max.map(d) };
        assert_eq!(f.tx(|m, tx| m.add_symbol(tx, off).unwrap()).unwrap_err().code, "invalid_quantity", "{min:?} {max:?}");
    }
    assert_eq!(f.add("THIRDS", "0.01", "0.3").unwrap().max_quantity, d("999999999.9"), "the default max, on the grid");
    let typo = serde_json::from_str::<NewInstrument>(r#"{"symbol": "TYPO", "tick": "1", "lot": "1", "max_qty": "5"}"#);
    assert!(typo.unwrap_err().to_string().contains("unknown field `max_qty`"));

    let e = f.add("BTC-USD", "1", "1").unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (409, "symbol_exists"));
    let e = f.market.symbol("NOPE").unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (404, "unknown_symbol"));
    assert_eq!(f.market.symbol("BTC-USD").unwrap().tick, d("0.01"));
}

#[test]
fn config_symbols_are_seeded_but_never_replace_the_operators() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    assert_eq!(f.market.symbol("AAPL").unwrap().tick, d("0.01"));
    f.add("MSFT", "0.05", "10").unwrap();
    // Next start: the config now also names MSFT (differently) and a new symbol.
    let m = f.reopen(&[seed("AAPL", "0.01", "1"), seed("MSFT", "0.01", "1"), seed("ETH-USD", "0.01", "0.001")]);
    assert_eq!(m.symbol("MSFT").unwrap().tick, d("0.05"));
    assert_eq!(m.symbol("MSFT").unwrap().lot, d("10"));
    assert_eq!(m.symbol("ETH-USD").unwrap().base, "ETH");
    let all: Vec<_> = f.reopen(&[]).symbol("AAPL").into_iter().map(|i| i.symbol).collect();
    assert_eq!(all, ["AAPL"], "seeded instruments stay in the store");
}

#[test]
fn the_tape_is_newest_first_by_time_then_arrival_and_honours_limit() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1"), seed("MSFT", "0.01", "1")]);
    f.trade("t1", "AAPL", "100", "2", T0);
    f.trade("t2", "AAPL", "101", "3", T0 + S);
    f.trade("t3", "AAPL", "102", "1", T0 + S); // same instant as t2: arrival decides
    f.trade("m1", "MSFT", "50", "1", T0 + 2 * S);
    f.trade("t0", "AAPL", "99", "1", T0 - S); // late, but older
    assert_eq!(f.tape("AAPL", 100), ["t3", "t2", "t1", "t0"]);
    assert_eq!(f.tape("AAPL", 2), ["t3", "t2"]);
    assert!(f.tape("AAPL", 0).is_empty());
    assert_eq!(f.tape("MSFT", 10), ["m1"]);
    let full = f.tx(|m, tx| m.trades(tx, "AAPL", 1).unwrap().unwrap());
    assert_eq!(full, vec![trade("t3", "AAPL", "102", "1", T0 + S)], "a trade reads back as it was sent");
    // The late older trade did not become the last price.
    let q = f.tx(|m, tx| m.quote(tx, "AAPL", T0 + 10 * S).unwrap().unwrap());
    assert_eq!(q.last, Some(d("102")));
    let e = f.tx(|m, tx| m.trades(tx, "NOPE", 10).unwrap()).unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (404, "unknown_symbol"));
}

#[test]
fn the_quote_counts_exactly_the_trades_of_the_last_24_hours() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    let now = T0 + 30 * 3600 * S + 17 * S + 250_000; // not on a minute boundary
    let q = f.tx(|m, tx| m.quote(tx, "AAPL", now).unwrap().unwrap());
    assert_eq!((q.last, q.volume_24h, q.high_24h, q.low_24h, q.trades_24h), (None, d("0"), None, None, 0));
    assert_eq!((q.best_bid, q.best_ask), (None, None));

    let day = 24 * 3600 * S;
    f.trade("old", "AAPL", "500", "100", now - day - 1); // just outside
    f.trade("edge_out", "AAPL", "1", "7", now - day - 5 * S); // same minute as the window start, before it
    f.trade("edge_in", "AAPL", "90", "2", now - day + 2 * S); // same minute, inside
    f.trade("start", "AAPL", "95", "1", now - day); // exactly 24h ago: inside
    f.trade("mid", "AAPL", "120", "3", now - 3600 * S);
    f.trade("recent", "AAPL", "110", "4", now - S);
    let q = f.tx(|m, tx| m.quote(tx, "AAPL", now).unwrap().unwrap());
    assert_eq!(q.last, Some(d("110")));
    assert_eq!(q.trades_24h, 4);
    assert_eq!(q.volume_24h, d("10"));
    assert_eq!((q.high_24h, q.low_24h), (Some(d("120")), Some(d("90"))));
    assert_eq!(q.symbol, "AAPL");

    // A day later only the recent trades' window has moved on.
    let q = f.tx(|m, tx| m.quote(tx, "AAPL", now + day).unwrap().unwrap());
    assert_eq!((q.trades_24h, q.volume_24h, q.last), (0, d("0"), Some(d("110"))));
}

#[test]
fn candles_answer_by_interval_and_refuse_unknown_ones() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    f.trade("a", "AAPL", "100", "1", T0 + 5 * S);
    f.trade("b", "AAPL", "104", "2", T0 + 50 * S);
    f.trade("c", "AAPL", "98", "3", T0 + 70 * S);
    f.trade("d", "AAPL", "101", "4", T0 + 3600 * S);
    let get = |f: &mut Fixture, iv: &str, limit: usize| f.tx(|m, tx| m.candles(tx, "AAPL", iv, Span::newest(limit)).unwrap());

    let m1 = get(&mut f, "1m", 100).unwrap();
    let rows: Vec<_> = m1.iter().map(|c| (c.open_time.as_str(), c.open, c.high, c.low, c.close, c.volume, c.trades)).collect();
    assert_eq!(
        rows,
        vec![
            ("2024-05-01T00:00:00Z", d("100"), d("104"), d("100"), d("104"), d("3"), 2),
            ("2024-05-01T00:01:00Z", d("98"), d("98"), d("98"), d("98"), d("3"), 1),
            ("2024-05-01T01:00:00Z", d("101"), d("101"), d("101"), d("101"), d("4"), 1),
        ]
    );
    assert!(m1.iter().all(|c| c.symbol == "AAPL" && c.interval == "1m"));
    // The newest `limit`, oldest first.
    let last2: Vec<_> = get(&mut f, "1m", 2).unwrap().into_iter().map(|c| c.open_time).collect();
    assert_eq!(last2, ["2024-05-01T00:01:00Z", "2024-05-01T01:00:00Z"]);
    assert_eq!(get(&mut f, "1s", 100).unwrap().len(), 4);
    let h = get(&mut f, "1h", 100).unwrap();
    assert_eq!((h.len(), h[0].open, h[0].high, h[0].low, h[0].close, h[0].volume), (2, d("100"), d("104"), d("98"), d("98"), d("6")));
    let day = get(&mut f, "1d", 100).unwrap();
    assert_eq!((day.len(), day[0].close, day[0].volume, day[0].trades), (1, d("101"), d("10"), 4));
    assert_eq!(get(&mut f, "5m", 100).unwrap().len(), 2);

    let e = get(&mut f, "2m", 10).unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (400, "invalid_interval"));
    assert!(e.message.contains("1s, 1m, 5m, 1h, 1d"), "{}", e.message);
    let e = f.tx(|m, tx| m.candles(tx, "NOPE", "1m", Span::newest(10)).unwrap()).unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (404, "unknown_symbol"));
}

#[test]
fn a_replayed_event_or_trade_counts_once() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    let t = serde_json::to_value(trade("t1", "AAPL", "100", "5", T0)).unwrap();
    f.event(1, "TRADE_EXECUTED", t.clone());
    f.event(1, "TRADE_EXECUTED", t.clone()); // the same event again (follower replay)
    f.event(2, "ORDER_CREATED", serde_json::json!({"order_id": "o1"}));
    f.event(3, "TRADE_EXECUTED", t); // the same trade under a new sequence
    f.event(4, "TRADE_EXECUTED", serde_json::json!({"not": "a trade"}));
    assert_eq!(f.market.last_event_seq(), 4);
    assert_eq!(f.tape("AAPL", 10), ["t1"]);
    let c = f.tx(|m, tx| m.candles(tx, "AAPL", "1m", Span::newest(10)).unwrap().unwrap());
    assert_eq!((c.len(), c[0].volume, c[0].trades), (1, d("5"), 1));
    assert_eq!(f.reopen(&[]).last_event_seq(), 4, "the position survives a restart");
}

/// The follower hands market only trades, and tells it how far it went past the other
/// events: that position is stored, so a restart does not replay them again.
#[test]
fn the_position_passed_after_the_last_trade_survives_a_restart() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    f.event(5, "TRADE_EXECUTED", serde_json::to_value(trade("t1", "AAPL", "100", "5", T0)).unwrap());
    f.tx(|m, _| m.passed(900));
    assert_eq!(f.reopen(&[]).last_event_seq(), 900);
    f.tx(|m, _| m.passed(800));
    f.event(850, "TRADE_EXECUTED", serde_json::to_value(trade("t2", "AAPL", "101", "1", T0)).unwrap());
    assert_eq!((f.reopen(&[]).last_event_seq(), f.tape("AAPL", 10)), (900, vec!["t1".to_string()]), "nothing at or below it counts");
    f.event(901, "TRADE_EXECUTED", serde_json::to_value(trade("t3", "AAPL", "102", "1", T0)).unwrap());
    f.tx(|m, _| m.passed(1200));
    let reopened = f.reopen(&[]);
    assert_eq!(reopened.last_event_seq(), 1200);
    assert_eq!(f.tape("AAPL", 10), ["t3", "t1"]);
}

#[test]
fn a_reload_from_the_store_gives_the_same_state() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    f.add("ZZZ", "0.5", "2").unwrap();
    f.trade("a", "AAPL", "100", "1", T0);
    f.trade("b", "ZZZ", "7.5", "4", T0 + S);
    f.trade("c", "AAPL", "101", "2", T0 + 61 * S);
    f.trade("x", "AAPL", "90", "1", T0 - S); // late and older: not the last price
    let now = T0 + 120 * S;
    let before = (
        f.tx(|m, tx| m.quote(tx, "AAPL", now).unwrap().unwrap()),
        f.tx(|m, tx| m.candles(tx, "AAPL", "1m", Span::newest(10)).unwrap().unwrap()),
        f.tape("AAPL", 10),
    );
    f.market = f.reopen(&[seed("AAPL", "0.01", "1")]);
    let fresh = f.reopen(&[]);
    assert!(f.market.same_state(&fresh));
    let after = (
        f.tx(|m, tx| m.quote(tx, "AAPL", now).unwrap().unwrap()),
        f.tx(|m, tx| m.candles(tx, "AAPL", "1m", Span::newest(10)).unwrap().unwrap()),
        f.tape("AAPL", 10),
    );
    assert_eq!(before, after);
    assert_eq!(after.0.last, Some(d("101")));
    // Trading on after the reload extends the bars the store already had.
    f.trade("d", "AAPL", "105", "3", T0 + 62 * S);
    let c = f.tx(|m, tx| m.candles(tx, "AAPL", "1m", Span::newest(10)).unwrap().unwrap());
    let last = c.last().unwrap();
    assert_eq!((last.open, last.high, last.close, last.volume, last.trades), (d("101"), d("105"), d("105"), d("5"), 2));
}

#[test]
fn a_rolled_back_batch_leaves_nothing_behind_after_the_restart() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    f.trade("a", "AAPL", "100", "1", T0);
    // A batch that fails: the actor drops the transaction and reloads the service.
    {
        let tx = f.conn.transaction().unwrap();
        let e = BusEvent::from_event(Event {
            seq: 99,
            event_id: "e".into(),
            kind: "TRADE_EXECUTED".into(),
            source: "trading".into(),
            timestamp: ts(T0),
            data: serde_json::to_value(trade("b", "AAPL", "200", "1", T0 + S)).unwrap(),
        });
        f.market.apply(&tx, &e).unwrap();
        assert!(super::tape::Tape::has(&tx, "b").unwrap());
        drop(tx);
    }
    f.market = f.reopen(&[]);
    assert_eq!(f.market.last_event_seq(), 1);
    assert_eq!(f.tape("AAPL", 10), ["a"]);
    let q = f.tx(|m, tx| m.quote(tx, "AAPL", T0 + 2 * S).unwrap().unwrap());
    assert_eq!((q.last, q.volume_24h), (Some(d("100")), d("1")));
}

// ---------------------------------------------------------------- CSV import

const HEADER: &str = "symbol,interval,open_time,open,high,low,close,volume\n";

impl Fixture {
    /// Imports a CSV body as the route does, as of `now_us`.
    fn import(&mut self, body: &str, now_us: i64) -> Result<super::Imported, ApiError> {
        let rows = super::import::parse(&format!("{HEADER}{body}"), now_us / S)?;
        self.tx(|m, tx| m.import(tx, rows, now_us).unwrap())
    }

    fn candles(&mut self, symbol: &str, iv: &str) -> Vec<(String, Decimal, Decimal, Decimal, Decimal, Decimal, u64)> {
        self.tx(|m, tx| m.candles(tx, symbol, iv, Span::newest(100)).unwrap().unwrap())
            .into_iter()
            .map(|c| (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.trades))
            .collect()
    }

    fn last(&mut self, symbol: &str) -> Option<Decimal> {
        self.tx(|m, tx| m.quote(tx, symbol, T0 + 100 * 86_400 * S).unwrap().unwrap()).last
    }
}

#[test]
fn imported_bars_become_candles_and_the_newest_close_the_last_price() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1"), seed("MSFT", "0.01", "1")]);
    let now = T0 + 3 * 86_400 * S;
    let out = f
        .import(
            "AAPL,1d,2024-05-02,101,105,100,104,1000\n\
             AAPL,1d,2024-05-01,100,102,99,101,900\n\
             AAPL,1m,2024-05-01T00:00:00Z,100,100.5,99.5,100.25,10\n\
             MSFT,1h,2024-05-01T05:00:00Z,50,51,49,50.5,7\n",
            now,
        )
        .unwrap();
    assert_eq!(out.imported, 4);
    assert_eq!(out.symbols, ["AAPL", "MSFT"]);
    assert_eq!(out.last.get("AAPL"), Some(&d("104")));
    assert_eq!(out.last.get("MSFT"), Some(&d("50.5")));
    assert_eq!(out.last_price_updated, ["AAPL", "MSFT"]);
    assert_eq!(out.new_last_prices[0], ("AAPL".to_string(), d("104"), T0 + 2 * 86_400 * S - 1));
    assert_eq!(
        f.candles("AAPL", "1d"),
        vec![
            ("2024-05-01T00:00:00Z".into(), d("100"), d("102"), d("99"), d("101"), d("900"), 0),
            ("2024-05-02T00:00:00Z".into(), d("101"), d("105"), d("100"), d("104"), d("1000"), 0),
        ]
    );
    assert_eq!(f.candles("AAPL", "1m").len(), 1);
    assert!(f.candles("AAPL", "1h").is_empty(), "an import writes the intervals it names, nothing derived");
    assert_eq!(f.last("AAPL"), Some(d("104")));
    assert_eq!(f.last("MSFT"), Some(d("50.5")));

    // Importing again replaces bars, it does not add to them.
    let out = f.import("AAPL,1d,2024-05-02,101,106,100,103,1100\n", now).unwrap();
    assert_eq!((out.imported, out.last_price_updated.len()), (1, 1));
    assert_eq!(f.candles("AAPL", "1d")[1], ("2024-05-02T00:00:00Z".into(), d("101"), d("106"), d("100"), d("103"), d("1100"), 0));
    assert_eq!(f.last("AAPL"), Some(d("103")));

    // The store agrees after a restart.
    let fresh = f.reopen(&[]);
    assert!(f.market.same_state(&fresh));
}

#[test]
fn an_import_never_replaces_a_newer_trade_price_and_trades_extend_imported_bars() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    let now = T0 + 86_400 * S;
    f.trade("t1", "AAPL", "200", "1", T0 + 3600 * S); // 01:00
                                                      // A bar that ended before the trade: history, not the last price.
    let out = f.import("AAPL,1m,2024-05-01T00:30:00Z,150,150,150,150,1\n", now).unwrap();
    assert!(out.last_price_updated.is_empty());
    assert_eq!(out.last.get("AAPL"), Some(&d("150")));
    assert_eq!(f.last("AAPL"), Some(d("200")));
    // One that ends after it: the last price.
    let out = f.import("AAPL,1m,2024-05-01T02:00:00Z,190,195,185,191,1\n", now).unwrap();
    assert_eq!(out.last_price_updated, ["AAPL"]);
    assert_eq!(f.last("AAPL"), Some(d("191")));
    assert!(f.reopen(&[]).same_state(&f.market), "the imported last price survives a restart");
    // A trade inside that (ended) bar widens it and adds to it, but is older than its
    // close: neither the bar's close nor the last price.
    f.trade("t2", "AAPL", "196", "2", T0 + 2 * 3600 * S + 30 * S);
    assert_eq!(f.last("AAPL"), Some(d("191")));
    let bar = f.candles("AAPL", "1m").last().cloned().unwrap();
    assert_eq!(bar, ("2024-05-01T02:00:00Z".into(), d("190"), d("196"), d("185"), d("191"), d("3"), 1));
    // A later trade is the last price again.
    f.trade("t3", "AAPL", "189", "1", T0 + 2 * 3600 * S + 61 * S);
    assert_eq!(f.last("AAPL"), Some(d("189")));
    assert!(f.reopen(&[]).same_state(&f.market));

    // A bar still open stands for the moment of the import: trades after it win.
    let now = T0 + 3 * 3600 * S + 10 * S;
    let out = f.import("AAPL,1h,2024-05-01T03:00:00Z,190,199,189,198,5\n", now).unwrap();
    assert_eq!(out.new_last_prices, [("AAPL".to_string(), d("198"), now)]);
    f.trade("t4", "AAPL", "197", "1", now + 1);
    assert_eq!(f.last("AAPL"), Some(d("197")));
    let bar = f.candles("AAPL", "1h").last().cloned().unwrap();
    assert_eq!(bar, ("2024-05-01T03:00:00Z".into(), d("190"), d("199"), d("189"), d("197"), d("6"), 1));
}

#[test]
fn a_bad_import_writes_nothing() {
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    let now = T0 + 86_400 * S;
    let e = f
        .import(
            "AAPL,1m,2024-05-01T00:00:00Z,100,101,99,100,1\n\
             MSFT,1m,2024-05-01T00:00:00Z,100,101,99,100,1\n\
             AAPL,1m,2024-05-01T00:01:00Z,100,99,101,100,1\n",
            now,
        )
        .unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (400, "invalid_csv"));
    assert!(e.message.contains("line 3: unknown symbol \"MSFT\""), "{}", e.message);
    assert!(e.message.contains("line 4: high 99 is below low 101"), "{}", e.message);
    assert!(f.candles("AAPL", "1m").is_empty());
    assert_eq!(f.last("AAPL"), None);
}

/// Bars are written back once per batch: a batch of trades in any time order, crossing
/// bars of every interval, leaves each bar as the trades add up, before and after a
/// reload of the service.
#[test]
fn a_batch_of_trades_out_of_order_leaves_every_bar_as_its_trades_add_up() {
    use super::candles::{aggregate, Interval};
    use super::tape::Print;
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1")]);
    let offsets = [61, 0, 5, 3_600, 62, 1, 301, 2, 86_400 + 7, 60, 3_599, 300];
    let prints: Vec<Print> = offsets
        .iter()
        .enumerate()
        .map(|(i, s)| Print { ts_us: T0 + s * S, price: d("100") + Decimal::from(i as i64), quantity: Decimal::from(1 + i as i64 % 3) })
        .collect();
    f.tx(|m, tx| {
        for (i, p) in prints.iter().enumerate() {
            let t = Trade { price: p.price, quantity: p.quantity, ..trade(&format!("t{i}"), "AAPL", "1", "1", p.ts_us) };
            let event = Event {
                seq: i as u64 + 1,
                event_id: format!("evt_{i}"),
                kind: "TRADE_EXECUTED".into(),
                source: "trading".into(),
                timestamp: ts(p.ts_us),
                data: serde_json::to_value(t).unwrap(),
            };
            m.apply(tx, &BusEvent::from_event(event)).unwrap();
        }
    });
    let expected = |iv: Interval| -> Vec<_> {
        aggregate(iv, &prints)
            .iter()
            .map(|b| b.to_candle("AAPL", iv))
            .map(|c| (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.trades))
            .collect()
    };
    for round in ["as written", "after a reload"] {
        for iv in Interval::ALL {
            assert_eq!(f.candles("AAPL", iv.as_str()), expected(iv), "{iv:?} {round}");
        }
        f.market = Market::open(&f.conn, &[seed("AAPL", "0.01", "1")]).unwrap();
    }
}

/// Bars wait in memory between flushes (at most 250 ms): a stop, a crash or a reload
/// before the flush loses none of them, and one after it counts no trade twice, because a
/// reload adds again exactly the tape's trades past the stored bars' mark.
#[test]
fn bars_not_yet_written_are_rebuilt_from_the_tape_once() {
    use super::candles::{aggregate, Interval};
    use super::tape::Print;
    let hour = std::time::Duration::from_secs(3_600);
    let mut f = Fixture::new(&[seed("AAPL", "0.01", "1"), seed("ZZZ", "0.5", "1")]);
    f.market.hold_bars_for(hour);
    // Out of order across bars of every width, over two symbols, one trade per batch.
    let offsets = [61, 0, 5, 3_600, 62, 1, 301, 2, 86_400 + 7, 60, 3_599, 300];
    let print = |i: usize| Print { ts_us: T0 + offsets[i] * S, price: d("100") + Decimal::from(i as i64), quantity: d("1") };
    let stored = |f: &Fixture| f.conn.query_row("SELECT count(*) FROM candles", [], |r| r.get::<_, i64>(0)).unwrap();
    let expected = |iv: Interval, prints: &[Print]| -> Vec<_> {
        aggregate(iv, prints)
            .iter()
            .map(|b| b.to_candle("AAPL", iv))
            .map(|c| (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.trades))
            .collect()
    };
    let mut aapl = Vec::new();
    for (i, _) in offsets.iter().enumerate().take(6) {
        let p = print(i);
        f.trade(&format!("a{i}"), "AAPL", &p.price.to_string(), "1", p.ts_us);
        f.trade(&format!("z{i}"), "ZZZ", "7.5", "1", p.ts_us);
        aapl.push(p);
    }
    assert_eq!(stored(&f), 0, "the bars wait in memory");

    // A stop now: the reload rebuilds them from the tape.
    f.market = f.reopen(&[]);
    f.market.hold_bars_for(hour);
    assert_eq!(stored(&f), 0);
    for iv in Interval::ALL {
        assert_eq!(f.candles("AAPL", iv.as_str()), expected(iv, &aapl), "{iv:?} after a stop before any flush");
    }
    // Reading them flushed them; the trades after that flush are the only ones added again.
    assert!(stored(&f) > 0);
    for (i, _) in offsets.iter().enumerate().skip(6) {
        let p = print(i);
        f.trade(&format!("a{i}"), "AAPL", &p.price.to_string(), "1", p.ts_us);
        aapl.push(p);
    }
    for round in ["after a stop between flushes", "after a clean reload"] {
        f.market = f.reopen(&[]);
        f.market.hold_bars_for(hour);
        for iv in Interval::ALL {
            assert_eq!(f.candles("AAPL", iv.as_str()), expected(iv, &aapl), "{iv:?} {round}");
        }
    }
    let z = f.candles("ZZZ", "1d");
    assert_eq!(z.iter().map(|c| (c.5, c.6)).collect::<Vec<_>>(), [(d("6"), 6)], "ZZZ's six trades of the first day, once");
}
