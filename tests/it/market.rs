//! Market data end to end: CSV import of history (all or nothing, the price band
//! anchored), and candles built from trades placed through the API.

use crate::util::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

const HEADER: &str = "symbol,interval,open_time,open,high,low,close,volume\n";

/// RFC 3339 of Unix seconds, as the API writes a bar's start.
fn rfc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn candles(dm: &Daemon, sym: &str, interval: &str) -> Vec<Value> {
    dm.ok("GET", &format!("/api/market/{sym}/candles?interval={interval}&limit=1000"), None).as_array().unwrap().clone()
}

/// (open_time, open, high, low, close, volume) of each bar.
fn ohlcv(bars: &[Value]) -> Vec<(String, Decimal, Decimal, Decimal, Decimal, Decimal)> {
    bars.iter()
        .map(|b| {
            (
                b["open_time"].as_str().unwrap().to_string(),
                dec(&b["open"]),
                dec(&b["high"]),
                dec(&b["low"]),
                dec(&b["close"]),
                dec(&b["volume"]),
            )
        })
        .collect()
}

fn last(dm: &Daemon, sym: &str) -> Option<Decimal> {
    let q = dm.ok("GET", &format!("/api/market/{sym}"), None);
    q["last"].as_str().map(|s| s.parse().unwrap())
}

/// The tape of `sym` once it has `n` trades (the market service follows the bus), newest
/// first, waiting out a restart of the market service; fails after 20 s.
fn tape_of(dm: &Daemon, sym: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, t) = dm.req("GET", &format!("/api/trades/{sym}?limit=100"), None);
        // A market service that is restarting answers 503 for a moment: wait it out.
        if status == 503 {
            assert!(Instant::now() < deadline, "the market service did not come back: {t}");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        assert_eq!(status, 200, "{t}");
        if t.as_array().unwrap().len() == n {
            return t;
        }
        assert!(Instant::now() < deadline, "the tape has {} trades, not {n}", t.as_array().unwrap().len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A POST of a raw CSV body with `Content-Type: text/csv` over the socket.
fn post_csv(dm: &Daemon, body: &str) -> (u16, Value) {
    let mut s = std::os::unix::net::UnixStream::connect(dm.sock()).unwrap();
    write!(
        s,
        "POST /api/market/import HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(rest).unwrap_or(Value::String(rest.into())))
}

#[test]
fn an_import_with_bad_rows_imports_nothing_and_a_good_one_anchors_charts_and_the_band() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let now = chrono::Utc::now().timestamp();
    let m0 = now - now.rem_euclid(60) - 10 * 60; // ten minutes ago, on a minute
                                                 // The day before the minutes' day, at midnight UTC: its bar must end before the
                                                 // minutes start (in the first minutes after midnight, "ten minutes ago" is the day
                                                 // before today, and a bar of that day ended after them and had the newest close).
    let day = m0 - m0.rem_euclid(86_400) - 86_400;

    // Bad rows: every one is named by its line, and nothing is imported.
    let bad = format!(
        "{HEADER}{sym},1m,{m0},100,101,99,100.5,10\n\
         {sym},1m,{},100,99,101,100,10\n\
         NOSUCH,1m,{},100,101,99,100,10\n\
         {sym},1m,{},100,101,99,100,-3\n\
         {sym},7m,{},100,101,99,100,1\n\
         {sym},1m,{},100,101,99,100,1\n\
         {sym},1m,{},abc,101,99,100,1\n\
         {sym},1m,{},100,101,99,100.005,1\n",
        rfc(m0 + 60),
        m0 + 120,
        m0 + 180,
        m0 + 240,
        m0 + 301,
        m0 + 360,
        m0 + 420,
    );
    let file = dm.path().join("bad.csv");
    std::fs::write(&file, &bad).unwrap();
    let out = dm.cli().args(["market", "import"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_csv") && err.contains("7 of 8 row(s) are bad, so nothing was imported"), "{err}");
    for (line, what) in [
        (3, "high 99 is below low 101"),
        (4, "unknown symbol \"NOSUCH\""),
        (5, "volume must not be negative"),
        (6, "interval \"7m\" is not one of 1s, 1m, 5m, 1h, 1d"),
        (7, "is not the start of a 1m bar"),
        (8, "open \"abc\" is not a decimal number"),
        (9, &format!("close 100.005 is not a multiple of {sym}'s tick 0.01")),
    ] {
        assert!(err.lines().any(|l| l.contains(&format!("line {line}: ")) && l.contains(what)), "line {line} ({what}) in:\n{err}");
    }
    assert!(!err.contains("line 2:"), "{err}");
    assert!(candles(&dm, &sym, "1m").is_empty(), "a bad file imports nothing");
    assert_eq!(last(&dm, &sym), None);
    // The same over the API, as text/csv.
    let (s, e) = post_csv(&dm, &bad);
    assert_eq!((s, code(&e)), (400, "invalid_csv"), "{e}");
    // Not for viewers.
    let viewer = dm.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    let (s, _) = dm.tcp("POST", "/api/market/import", Some(json!({"csv": bad})), Some(&viewer));
    assert_eq!(s, 403);

    // A good file: candles appear, the newest close is the last price.
    let good = format!(
        "{HEADER}# the day before, then three minutes ten minutes ago\n\
         {sym},1d,{},90,110,85,95,5000\n\
         {sym},1m,{},100,101,99,100.5,10\n\
         {sym},1m,{},100.5,102,100,101.25,7\n\
         \"{sym}\", 1m, {m0}, 99, 100.5, 98, 100, 12\n",
        rfc(day),
        rfc(m0 + 60),
        m0 + 120,
    );
    let file = dm.path().join("good.csv");
    std::fs::write(&file, &good).unwrap();
    let out = dm.cli().args(["market", "import"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("imported 4 bar(s)") && text.contains("101.25"), "{text}");
    let m1 = candles(&dm, &sym, "1m");
    assert_eq!(
        ohlcv(&m1),
        vec![
            (rfc(m0), d("99"), d("100.5"), d("98"), d("100"), d("12")),
            (rfc(m0 + 60), d("100"), d("101"), d("99"), d("100.5"), d("10")),
            (rfc(m0 + 120), d("100.5"), d("102"), d("100"), d("101.25"), d("7")),
        ]
    );
    assert_eq!(ohlcv(&candles(&dm, &sym, "1d")), vec![(rfc(day), d("90"), d("110"), d("85"), d("95"), d("5000"))]);
    assert_eq!(last(&dm, &sym), Some(d("101.25")));
    assert_eq!(dm.ok("GET", &format!("/api/market/{sym}/candles?limit=2"), None).as_array().unwrap().len(), 2);
    // A limit that is not a whole number from 1 to 10000 is refused, not cut or ignored.
    for path in [format!("/api/market/{sym}/candles"), format!("/api/trades/{sym}"), "/api/audit".to_string(), "/api/orders".into()] {
        for bad in ["0", "-1", "ten", "100001"] {
            let (s, e) = dm.req("GET", &format!("{path}?limit={bad}"), None);
            assert_eq!((s, code(&e)), (400, "invalid_limit"), "{path}?limit={bad}: {e}");
            assert!(e["error"]["message"].as_str().unwrap().contains("limit must be a whole number from 1 to"), "{e}");
        }
    }

    // Importing the same file again replaces the bars rather than adding to them.
    let again = dm.cli().args(["-o", "json", "market", "import"]).arg(&file).output().unwrap();
    assert!(again.status.success(), "{again:?}");
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["imported"], 4);
    assert_eq!(v["symbols"], json!([sym]));
    assert_eq!(v["last"][&sym], "101.25");
    assert_eq!(ohlcv(&candles(&dm, &sym, "1m")), ohlcv(&m1));

    // The price band now applies (10% by default around 101.25).
    let u = dm.user("band");
    dm.deposit(&u, "USD", "100000");
    let (s, e) = dm.place(&u, &sym, "buy", "1", Some("150.00"));
    assert_eq!((s, code(&e)), (422, "price_band"), "{e}");
    // 91.125 to 111.375, as the prices on the 0.01 tick one could send.
    assert!(e["error"]["message"].as_str().unwrap().ends_with("allows 91.13 to 111.37"), "{e}");
    let (s, e) = dm.place(&u, &sym, "buy", "1", Some("50.00"));
    assert_eq!((s, code(&e)), (422, "price_band"), "{e}");
    let (s, o) = dm.place(&u, &sym, "buy", "1", Some("105.00"));
    assert_eq!(s, 201, "{o}");

    // And it survives a restart.
    let mut dm = dm;
    dm.restart();
    assert_eq!(last(&dm, &sym), Some(d("101.25")));
    let (s, e) = dm.place(&u, &sym, "buy", "1", Some("150.00"));
    assert_eq!((s, code(&e)), (422, "price_band"), "{e}");

    // A crash between market's commit of an import and risk's anchor left risk without
    // it: the next start gives risk the imported last price again.
    dm.stop();
    let risk = rusqlite::Connection::open(dm.path().join("data/risk.db")).unwrap();
    assert_eq!(risk.execute("DELETE FROM last_prices WHERE symbol = ?1", [&sym]).unwrap(), 1);
    drop(risk);
    dm.spawn();
    let (s, e) = dm.place(&u, &sym, "buy", "1", Some("150.00"));
    assert_eq!((s, code(&e)), (422, "price_band"), "the band is anchored again at start: {e}");
}

#[test]
fn candles_add_up_the_trades_placed_through_the_api() {
    let dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("1000000", "1000");
    // Makers at several prices, a taker sweeping them, then single crossings.
    for (p, q) in [("100.00", "3"), ("100.50", "2"), ("101.00", "4")] {
        let (s, o) = dm.place(&seller, &sym, "sell", q, Some(p));
        assert_eq!(s, 201, "{o}");
    }
    let (s, o) = dm.place(&buyer, &sym, "buy", "9", Some("101.00"));
    assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    for (p, q) in [("99.00", "5"), ("102.25", "1"), ("98.75", "2")] {
        dm.place(&seller, &sym, "sell", q, Some(p));
        let (s, o) = dm.place(&buyer, &sym, "buy", q, Some(p));
        assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    }

    // The tape has every trade once the market service has caught up with the bus.
    let tape = tape_of(&dm, &sym, 6);
    // What the trades imply, per minute: oldest first (the tape is newest first).
    let mut expected: BTreeMap<i64, (Decimal, Decimal, Decimal, Decimal, Decimal)> = BTreeMap::new();
    for t in tape.as_array().unwrap().iter().rev() {
        let ts = chrono::DateTime::parse_from_rfc3339(t["timestamp"].as_str().unwrap()).unwrap().timestamp();
        let (p, q) = (dec(&t["price"]), dec(&t["quantity"]));
        let bar = expected.entry(ts - ts.rem_euclid(60)).or_insert((p, p, p, p, Decimal::ZERO));
        bar.1 = bar.1.max(p);
        bar.2 = bar.2.min(p);
        bar.3 = p;
        bar.4 += q;
    }
    let want: Vec<_> = expected.iter().map(|(t, b)| (rfc(*t), b.0, b.1, b.2, b.3, b.4)).collect();
    let bars = candles(&dm, &sym, "1m");
    assert_eq!(ohlcv(&bars), want);
    assert_eq!(bars.iter().map(|b| b["trades"].as_u64().unwrap()).sum::<u64>(), 6);
    assert_eq!(bars.iter().map(|b| dec(&b["volume"])).sum::<Decimal>(), d("17"));
    // In the order they traded: 100, 100.5, 101 (the sweep), then 99, 102.25, 98.75.
    let all =
        (want.first().unwrap().1, want.iter().map(|b| b.2).max().unwrap(), want.iter().map(|b| b.3).min().unwrap(), want.last().unwrap().4);
    assert_eq!(all, (d("100"), d("102.25"), d("98.75"), d("98.75")));
    assert_eq!(last(&dm, &sym), Some(d("98.75")));
    // The day's bar holds them all (unless the test ran across midnight UTC).
    let days = candles(&dm, &sym, "1d");
    if days.len() == 1 {
        let (_, o, h, l, c, v) = ohlcv(&days).remove(0);
        assert_eq!((o, h, l, c, v), (d("100"), d("102.25"), d("98.75"), d("98.75"), d("17")));
    }
}

#[test]
fn the_demo_makes_a_live_market_through_the_api_and_reuses_its_users() {
    let dm = Daemon::start();
    let out = dm.cli().args(["demo", "--users", "2", "--rate", "50", "--duration", "2"]).timeout(Duration::from_secs(60)).output().unwrap();
    assert!(out.status.success(), "{out:?}\n{}", dm.log());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim_start().starts_with("1s  orders ")), "a progress line a second:\n{text}");
    assert!(text.contains("done 2s  orders "), "{text}");

    let mut traded = 0;
    for sym in ["AAPL", "MSFT", "BTC-USD", "ETH-USD"] {
        let tape = dm.ok("GET", &format!("/api/trades/{sym}?limit=10000"), None);
        let n = tape.as_array().unwrap().len();
        traded += n;
        if n > 0 {
            let bars = candles(&dm, sym, "1s");
            assert!(!bars.is_empty(), "{sym} traded but has no candles");
            let volume: Decimal = bars.iter().map(|b| dec(&b["volume"])).sum();
            let tape_volume: Decimal = tape.as_array().unwrap().iter().map(|t| dec(&t["quantity"])).sum();
            assert_eq!(volume, tape_volume, "{sym}: the candles add up to the tape");
            assert!(last(&dm, sym).is_some());
        }
    }
    assert!(traded >= 20, "only {traded} trades in 2 s at 50 orders/s");
    // The makers' quotes are cancelled at the end; nothing of the demo rests.
    for u in ["demo-mm-1", "demo-mm-2", "demo-taker-1", "demo-taker-2"] {
        let open = dm.ok("GET", &format!("/api/orders?user_id={u}&status=open"), None);
        assert_eq!(open.as_array().unwrap().len(), 0, "{u}: {open}");
    }

    // Again: the same users, topped up rather than duplicated; JSON progress for scripts.
    let out =
        dm.cli().args(["-o", "json", "demo", "--users", "2", "--rate", "20", "--duration", "1", "--symbols", "AAPL"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let done = lines.last().unwrap();
    assert_eq!(done["done"], true, "{done}");
    assert!(done["orders"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(done["mid"].as_object().unwrap().keys().collect::<Vec<_>>(), ["AAPL"]);
    let users = dm.ok("GET", "/api/users", None);
    let demo: Vec<&str> =
        users.as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).filter(|n| n.starts_with("demo-")).collect();
    assert_eq!(demo.len(), 4, "{demo:?}");

    // Bad flags are usage errors; an unknown symbol is the daemon's kind of error.
    dm.cli().args(["demo", "--rate", "0"]).assert().code(2);
    dm.cli().args(["demo", "--duration", "5d"]).assert().code(2);
    dm.cli().args(["demo", "--symbols", "NOPE", "--duration", "1"]).assert().code(1).stderr(predicates::str::contains("unknown_symbol"));
}

/// The market writes changed candles at most every 250 ms and rebuilds the rest from the
/// tape at start: a SIGKILL right after the trades (usually before that write; the test
/// says which) loses no bar, and the restart after it counts no trade twice.
#[test]
fn candles_survive_a_kill_before_they_are_written_and_count_each_trade_once() {
    let mut dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("1000000", "1000");
    for (p, q) in [("100.00", "3"), ("100.50", "2"), ("99.25", "4"), ("101.00", "1")] {
        dm.place(&seller, &sym, "sell", q, Some(p));
        let (s, o) = dm.place(&buyer, &sym, "buy", q, Some(p));
        assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    }
    tape_of(&dm, &sym, 4);
    let store = dm.path().join("data/market.db");
    let stored = || -> i64 {
        let c = rusqlite::Connection::open(&store).unwrap();
        c.query_row("SELECT coalesce(sum(trades), 0) FROM candles WHERE interval = '1d'", [], |r| r.get(0)).unwrap()
    };
    dm.kill9();
    eprintln!("the 1d bars in market.db hold {} of the 4 trades at the kill", stored());
    dm.spawn();
    for round in ["after the kill", "after a graceful restart"] {
        let days = candles(&dm, &sym, "1d");
        assert_eq!(days.iter().map(|b| b["trades"].as_u64().unwrap()).sum::<u64>(), 4, "{round}: {days:?}");
        assert_eq!(days.iter().map(|b| dec(&b["volume"])).sum::<Decimal>(), d("10"), "{round}");
        let minutes = candles(&dm, &sym, "1m");
        assert_eq!(minutes.iter().map(|b| b["trades"].as_u64().unwrap()).sum::<u64>(), 4, "{round}: {minutes:?}");
        assert_eq!(last(&dm, &sym), Some(d("101")), "{round}");
        dm.restart();
    }
    assert_eq!(stored(), 4, "a read writes the bars first");
}

/// A market batch that fails (here another process holds `market.db`'s write lock past
/// the busy timeout, as a backup tool might) loses the trades it held, while the trades
/// after them still wait in market's mailbox for the restarted service. Applied, those
/// would move market's position past the lost ones for good; the tape must end with
/// every trade.
#[test]
fn the_trades_of_a_failed_market_batch_reach_the_tape_after_its_restart() {
    let dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("1000000", "1000");
    let trade = || {
        dm.place(&seller, &sym, "sell", "1", Some("10.00"));
        let (s, o) = dm.place(&buyer, &sym, "buy", "1", Some("10.00"));
        assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    };
    let market_restarts = || {
        let list = dm.ok("GET", "/api/services", None);
        list.as_array().unwrap().iter().find(|s| s["name"] == "market").unwrap()["restarts"].as_u64().unwrap()
    };
    trade();
    tape_of(&dm, &sym, 1);

    let lock = rusqlite::Connection::open(dm.path().join("data/market.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The first trade's batch waits for the lock; the next ones queue behind it.
    for _ in 0..3 {
        trade();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while market_restarts() == 0 {
        assert!(Instant::now() < deadline, "market never failed on the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    trade();
    tape_of(&dm, &sym, 5);
}

/// A book's `sequence` never goes back, across restarts too, whether or not anything
/// rests on it: a client that drops snapshots older than one it has would otherwise
/// stay stale after a restart.
#[test]
fn a_books_sequence_never_goes_back() {
    let mut dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("100000", "1000");
    let seq = |dm: &Daemon, s: &str| dm.ok("GET", &format!("/api/book/{s}"), None)["sequence"].as_u64().unwrap();
    dm.place(&seller, &sym, "sell", "5", Some("10.00"));
    let resting = seq(&dm, &sym);
    assert!(resting > 0);
    dm.place(&buyer, &sym, "buy", "5", Some("10.00"));
    let emptied = seq(&dm, &sym);
    assert!(emptied > resting, "a fill changed the book");
    let (other, _, other_seller) = dm.market_pair("1", "10");
    dm.place(&other_seller, &other, "sell", "1", Some("20.00"));
    let other_before = seq(&dm, &other);
    for _ in 0..2 {
        dm.restart();
        assert!(seq(&dm, &sym) >= emptied, "the emptied book's sequence went back");
        assert!(seq(&dm, &other) >= other_before, "the resting book's sequence went back");
    }
    dm.place(&seller, &sym, "sell", "1", Some("11.00"));
    assert!(seq(&dm, &sym) > emptied, "and it moves on with the next change");
}

/// `?from=` / `?to=` pick the bars that start in `[from, to)`: the first `limit` from
/// `from`, or the newest `limit` before `to`. A query parameter a route does not take is
/// refused: dropped, `?dept=1` or a time range would answer something else than was asked.
#[test]
fn candles_are_read_by_time_range_and_unknown_parameters_are_refused() {
    let dm = Daemon::start();
    let day = 86_400;
    let start = 1_714_521_600; // 2024-05-01T00:00:00Z
    let rows: String = (0..10).map(|i| format!("AAPL,1d,{},100,110,90,{},1000\n", start + i * day, 100 + i)).collect();
    let (s, r) = post_csv(&dm, &format!("{HEADER}{rows}"));
    assert_eq!(s, 200, "{r}");
    let closes = |q: &str| -> Vec<String> {
        let bars = dm.ok("GET", &format!("/api/market/AAPL/candles?interval=1d&{q}"), None);
        bars.as_array().unwrap().iter().map(|b| b["close"].as_str().unwrap().to_string()).collect()
    };
    let (d3, d7) = (rfc(start + 3 * day), start + 7 * day);
    assert_eq!(closes(&format!("from={d3}&to={d7}")), ["103", "104", "105", "106"], "from is in, to is out");
    assert_eq!(closes(&format!("from={d3}&limit=2")), ["103", "104"], "the first from `from`");
    assert_eq!(closes(&format!("to={d7}&limit=2")), ["105", "106"], "the newest before `to`");
    assert_eq!(closes("from=2024-05-09"), ["108", "109"], "a date is its midnight");
    assert_eq!(closes("limit=3"), ["107", "108", "109"], "without a range, the newest");
    assert!(closes("from=2030-01-01").is_empty());
    for (q, says) in [
        (
            "from=2030-01-01&to=2020-01-01",
            "from must be before to (bars that start in [from, to)); got from \"2030-01-01\" and to \"2020-01-01\"",
        ),
        ("from=2024-05-03&to=2024-05-03", "from must be before to"),
        ("from=yesterday", "from \"yesterday\" is not a time"),
        ("to=1714521600000", "looks like milliseconds"),
        ("frm=2024-05-03", "unknown field `frm`"),
    ] {
        let (s, e) = dm.req("GET", &format!("/api/market/AAPL/candles?{q}"), None);
        assert_eq!((s, code(&e)), (400, "invalid_query"), "{q}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{q}: {e}");
    }
    for path in [
        "/api/book/AAPL?dept=1",
        "/api/orders?usr_id=x",
        "/api/events?bogus=1",
        "/api/trades/AAPL?x=1",
        "/api/audit?actr=x",
        "/api/tokens?user_id=x",
    ] {
        let (s, e) = dm.req("GET", path, None);
        assert_eq!((s, code(&e)), (400, "invalid_query"), "{path}: {e}");
    }
    // A route that takes no parameters refuses any: `?user_id=` on the services or the
    // tokens would read as a filter that was applied.
    let user = dm.user("q");
    for path in [
        "/api/services".to_string(),
        format!("/api/users/{user}"),
        format!("/api/users/{user}/account"),
        "/api/risk/state".into(),
        "/api/audit/verify".into(),
        "/api/config".into(),
        "/api/config/pending".into(),
        "/api/notifications/rules".into(),
        "/api/symbols".into(),
        "/api/symbols/AAPL".into(),
        "/api/market/AAPL".into(),
        // No such order (404 without a query): the query is refused before the lookup.
        "/api/orders/ord_0".into(),
        "/api/trading/orders/ord_0".into(),
    ] {
        let plain = if path.contains("ord_0") { 404 } else { 200 };
        assert_eq!(dm.req("GET", &path, None).0, plain, "{path} without a query");
        let (s, e) = dm.req("GET", &format!("{path}?user_id=x"), None);
        assert_eq!((s, code(&e)), (400, "invalid_query"), "{path}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("takes no query parameters"), "{path}: {e}");
    }
    let out =
        dm.cli_current(&["-o", "json", "market", "candles", "AAPL", "--interval", "1d", "--from", "2024-05-04", "--to", "2024-05-06"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bars: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bars.iter().map(|b| b["close"].as_str().unwrap()).collect::<Vec<_>>(), ["103", "104"]);
}
