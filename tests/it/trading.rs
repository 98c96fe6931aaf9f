//! Trading end to end: funds, orders through the saga, fills to the cent, recovery.

use crate::util::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::HashMap;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// {asset: (total, held, available)}
fn account(dm: &Daemon, user: &str) -> HashMap<String, (Decimal, Decimal, Decimal)> {
    let a = dm.ok("GET", &format!("/api/users/{user}/account"), None);
    a["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let (t, h, av) = (dec(&b["total"]), dec(&b["held"]), dec(&b["available"]));
            assert_eq!(t, h + av, "total != held + available in {b}");
            (b["asset"].as_str().unwrap().to_string(), (t, h, av))
        })
        .collect()
}

fn bal(dm: &Daemon, user: &str, asset: &str) -> (Decimal, Decimal, Decimal) {
    account(dm, user).get(asset).copied().unwrap_or_default()
}

#[test]
fn a_crossing_order_fills_at_the_makers_price_and_moves_money_exactly() {
    let dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("10000", "10");
    let (s, sell) = dm.place(&seller, &sym, "sell", "10", Some("100.00"));
    assert_eq!((s, sell["status"].as_str()), (201, Some("new")), "{sell}");
    assert_eq!(bal(&dm, &seller, &sym), (d("10"), d("10"), d("0")));
    let (s, buy) = dm.place(&buyer, &sym, "buy", "4", Some("101.00"));
    assert_eq!(s, 201, "{buy}");
    assert_eq!(buy["status"], "filled");
    assert_eq!(dec(&buy["average_price"]), d("100"));
    assert_eq!(buy["fills"].as_array().unwrap().len(), 1);
    assert_eq!(buy["fills"][0]["price"], "100", "written as the order's price is, not 100.00: {buy}");
    assert_eq!(bal(&dm, &buyer, "USD"), (d("9600"), d("0"), d("9600")));
    assert_eq!(bal(&dm, &buyer, &sym), (d("4"), d("0"), d("4")));
    assert_eq!(bal(&dm, &seller, "USD"), (d("400"), d("0"), d("400")));
    assert_eq!(bal(&dm, &seller, &sym), (d("6"), d("6"), d("0")));
    let maker = dm.ok("GET", &format!("/api/orders/{}", sell["order_id"].as_str().unwrap()), None);
    assert_eq!(maker["status"], "partially_filled");
    assert_eq!(dec(&maker["remaining_quantity"]), d("6"));
    let book = dm.ok("GET", &format!("/api/book/{sym}"), None);
    assert_eq!(book["asks"], json!([["100", "6"]]));
    let tape = dm.ok("GET", &format!("/api/trades/{sym}"), None);
    assert_eq!(tape.as_array().unwrap().len(), 1);
}

#[test]
fn rejections_are_422_with_their_code_and_stay_queryable() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.05", "10");
    let u = dm.user("r");
    dm.deposit(&u, "USD", "100");
    let cases = [
        ("buy", "10", Some("100.03"), "invalid_tick"),
        ("buy", "15", Some("1.00"), "invalid_lot"),
        ("buy", "10", Some("100.00"), "insufficient_funds"),
        ("sell", "10", Some("1.00"), "insufficient_position"),
    ];
    for (side, q, p, want) in cases {
        let (s, e) = dm.place(&u, &sym, side, q, p);
        assert_eq!((s, code(&e)), (422, want), "{side} {q} @ {p:?}: {e}");
        // The answer names the order it stored as rejected.
        let stored = dm.ok("GET", &format!("/api/orders/{}", e["error"]["order_id"].as_str().unwrap()), None);
        assert_eq!((stored["status"].as_str(), stored["quantity"].as_str()), (Some("rejected"), Some(q)), "{stored}");
        assert!(stored["reject_reason"].as_str().unwrap().starts_with(want), "{stored}");
    }
    let out = dm.cli().args(["order", "place", &u, &sym, "buy", "10", "100.00"]).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("insufficient_funds") && err.contains("is stored as rejected (agt order get ord_"), "{err}");
    let rejected = dm.ok("GET", &format!("/api/orders?user_id={u}&status=rejected"), None);
    assert_eq!(rejected.as_array().unwrap().len(), 5);
    assert!(rejected[0]["reject_reason"].as_str().unwrap().contains("insufficient_funds"), "the newest first: the CLI's");
    assert_eq!(bal(&dm, &u, "USD"), (d("100"), d("0"), d("100")));
    let (s, e) = dm.place(&u, "NOSUCH", "buy", "1", Some("1"));
    assert_eq!((s, code(&e)), (404, "unknown_symbol"));
    // Bodies and queries of the wrong shape say what is wanted.
    let (s, e) = dm.raw("POST", "/api/orders", "[1]", &[]);
    assert!(s == 400 && e["error"]["message"].as_str().unwrap().contains("must be a JSON object"), "{e}");
    let (s, e) = dm.req("GET", &format!("/api/book/{sym}?depth=0"), None);
    assert_eq!((s, code(&e)), (400, "invalid_query"), "{e}");
    let (s, e) = dm.req("POST", &format!("/api/users/{u}/withdrawals"), Some(json!({"asset": "USD", "amount": "101"})));
    let message = e["error"]["message"].as_str().unwrap();
    assert!(s == 422 && message.contains("only 100 is available (short by 1)") && !message.contains("hold"), "{e}");
    // A forgotten price is not a market order: without "type" an order is a limit order.
    let (s, e) = dm.req("POST", "/api/orders", Some(json!({"user_id": u, "symbol": sym, "side": "buy", "quantity": "10"})));
    assert_eq!((s, code(&e)), (400, "invalid_price"), "{e}");
    for (q, p) in [("0", "1"), ("-1", "1"), ("1", "0"), ("abc", "1"), ("1e400", "1")] {
        let body = format!(r#"{{"user_id":"{u}","symbol":"{sym}","side":"buy","quantity":{q:?},"price":{p:?}}}"#);
        let (s, e) = dm.raw("POST", "/api/orders", &body, &[]);
        assert_eq!(s, 400, "{q} @ {p}: {e}");
    }
}

#[test]
fn money_is_taken_digit_for_digit_or_refused_never_rounded() {
    let dm = Daemon::start();
    let u = dm.user("exact");
    // JSON numbers a float would round are read as written.
    for (asset, body) in [("USD", "12345678901234567.89"), ("BTC", "0.30000000000000001")] {
        let (s, a) = dm.raw("POST", &format!("/api/users/{u}/deposits"), &format!(r#"{{"asset":"{asset}","amount":{body}}}"#), &[]);
        assert_eq!(s, 200, "{body}: {a}");
        assert_eq!(bal(&dm, &u, asset).0, d(body));
    }
    // A deposit the balance could not hold exactly is refused, and changes nothing.
    for amount in ["0.0000000000001", "0.0000000000000000000000000001"] {
        let (s, e) = dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "USD", "amount": amount})));
        assert_eq!((s, code(&e)), (400, "invalid_amount"), "{amount}: {e}");
    }
    let (s, e) =
        dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "USD", "amount": "190.00000000000000000000000000001"})));
    assert_eq!(s, 400, "{e}");
    assert_eq!(bal(&dm, &u, "USD").0, d("12345678901234567.89"));
    // So is a price or quantity with more digits than a decimal keeps.
    let (sym, buyer, _) = dm.market_pair("10000", "10");
    let (s, e) = dm.place(&buyer, &sym, "buy", "1", Some("10.00000000000000000000000000001"));
    assert_eq!(s, 400, "{e}");
    let body = format!(r#"{{"user_id":"{buyer}","symbol":"{sym}","side":"buy","quantity":1.0000000000000001,"price":"10"}}"#);
    let (s, e) = dm.raw("POST", "/api/orders", &body, &[]);
    assert_eq!((s, code(&e)), (422, "invalid_lot"), "1.0000000000000001 is off the lot of 1, not 1: {e}");
    assert!(dm.ok("GET", &format!("/api/orders?user_id={buyer}&status=open"), None).as_array().unwrap().is_empty());
}

#[test]
fn a_mistyped_key_is_refused_on_the_own_route_and_ignored_on_the_seeds() {
    let dm = Daemon::start();
    let (sym, buyer, _) = dm.market_pair("1000", "10");
    let body = json!({"user_id": buyer, "symbol": sym, "side": "buy", "quantity": "1", "price": "10", "tif": "ioc"});
    let (s, e) = dm.req("POST", "/api/orders", Some(body.clone()));
    assert_eq!((s, code(&e)), (400, "invalid_request"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("unknown field `tif`"), "{e}");
    // A value of the wrong kind is named by its field, not by a column of a line the
    // caller never saw (the CLI builds the body).
    let bad = json!({"user_id": buyer, "symbol": sym, "side": "buy", "quantity": "abc", "price": "10"});
    let (s, e) = dm.req("POST", "/api/orders", Some(bad));
    let message = e["error"]["message"].as_str().unwrap();
    assert!(s == 400 && message.contains("quantity: expected a decimal number") && !message.contains("column"), "{e}");
    // The seed's gateway took any dict: a client written against it keeps working.
    let (s, o) = dm.req("POST", "/api/trading/orders", Some(body));
    assert_eq!((s, o["time_in_force"].as_str()), (201, Some("gtc")), "{o}");
    let seed = dm.ok("GET", &format!("/api/trading/orders/{}", o["order_id"].as_str().unwrap()), None);
    assert_eq!(seed["status"], "new");
}

#[test]
fn an_amend_passes_the_checks_a_placement_would_and_is_an_event() {
    let dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("100000000", "10");
    let ask = dm.place(&seller, &sym, "sell", "1", Some("100.00")).1;
    let bid = dm.place(&buyer, &sym, "buy", "1", Some("90.00")).1;
    let id = bid["order_id"].as_str().unwrap();
    let amend = |body: Value| dm.req("PATCH", &format!("/api/orders/{id}"), Some(body));
    // A mistyped key is an error, not an amend of the other one.
    let (s, e) = amend(json!({"price": "91.00", "qty": "2"}));
    assert_eq!(s, 400, "{e}");
    // A halted symbol does not trade by amend either.
    dm.ok("POST", "/api/risk/halt", Some(json!({"symbol": sym})));
    let (s, e) = amend(json!({"price": "100.00"}));
    assert_eq!((s, code(&e)), (422, "trading_halted"), "{e}");
    dm.ok("POST", "/api/risk/resume", Some(json!({"symbol": sym})));
    // The limits apply to the new terms (the instrument's max_quantity is 1000000000).
    dm.ok("PUT", "/api/risk/limits", Some(json!({"max_order_notional": "1000", "max_order_quantity": "50"})));
    let (s, e) = amend(json!({"quantity": "51"}));
    assert_eq!((s, code(&e)), (422, "max_order_quantity"), "{e}");
    let (s, e) = amend(json!({"quantity": "20"}));
    assert_eq!((s, code(&e)), (422, "max_order_notional"), "{e}");
    dm.ok("PUT", "/api/risk/limits", Some(json!({"max_order_notional": "1000000", "max_order_quantity": "100000"})));
    // Once the symbol has traded, the price band (20 % by default) applies too.
    dm.place(&buyer, &sym, "buy", "1", Some("100.00"));
    let (s, e) = amend(json!({"price": "1.00"}));
    assert_eq!((s, code(&e)), (422, "price_band"), "{e}");
    let untouched = dm.ok("GET", &format!("/api/orders/{id}"), None);
    assert_eq!((dec(&untouched["price"]), dec(&untouched["quantity"])), (d("90"), d("1")));
    // An amend that passes is an event with the new terms, though the status stays `new`.
    let amended = amend(json!({"price": "95.00", "quantity": "2"})).1;
    assert_eq!(amended["status"], "new", "{amended}");
    let changes: Vec<Value> = dm.events("ORDER_STATUS_UPDATED").into_iter().filter(|e| e["data"]["order_id"] == id).collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let data = &changes[0]["data"];
    assert_eq!((data["from"].as_str(), data["to"].as_str()), (Some("new"), Some("new")));
    assert_eq!((dec(&data["price"]), dec(&data["quantity"]), dec(&data["remaining_quantity"])), (d("95"), d("2"), d("2")));
    // A disabled user trades neither by a new order nor by amending an open one; it may
    // still cancel.
    dm.ok("PUT", &format!("/api/users/{buyer}"), Some(json!({"status": "disabled"})));
    let (s, e) = amend(json!({"price": "100.00"}));
    assert_eq!((s, code(&e)), (422, "user_disabled"), "{e}");
    // It says how to undo it, as the token routes' refusal does.
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("`agt user enable {buyer}`")), "{message}");
    let (s, e) = amend(json!({"quantity": "3"}));
    assert_eq!((s, code(&e)), (422, "user_disabled"), "{e}");
    assert_eq!(dm.ok("GET", &format!("/api/orders/{id}"), None)["status"], "new");
    assert_eq!(dm.ok("DELETE", &format!("/api/orders/{id}"), None)["status"], "cancelled");
    dm.ok("PUT", &format!("/api/users/{buyer}"), Some(json!({"status": "active"})));
    let _ = ask;
    // Halts and mass cancels name symbols that exist.
    for (path, body) in [
        ("/api/risk/halt", json!({"symbol": "NOPE"})),
        ("/api/risk/resume", json!({"symbol": "NOPE"})),
        ("/api/orders/cancel-all", json!({"symbol": "NOPE"})),
    ] {
        let (s, e) = dm.req("POST", path, Some(body));
        assert_eq!((s, code(&e)), (404, "unknown_symbol"), "{path}: {e}");
    }
    assert_eq!(dm.ok("GET", "/api/risk/state", None)["halted_symbols"], json!([]));
    // A misspelt filter is refused, not dropped: it would halt, or cancel, everything.
    for (path, body) in [
        ("/api/risk/halt", json!({"symbl": "X"})),
        ("/api/risk/resume", json!({"symbl": "X"})),
        ("/api/orders/cancel-all", json!({"usr_id": "x"})),
    ] {
        let (s, e) = dm.req("POST", path, Some(body));
        assert_eq!((s, code(&e)), (400, "invalid_request"), "{path}: {e}");
    }
    let (s, e) = dm.req("POST", "/api/orders/cancel-all", Some(json!({"user_id": " "})));
    assert_eq!((s, code(&e)), (400, "invalid_user"), "a blank user is not every user: {e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("leave user_id out"), "{e}");
    // And filters in the query string: dropped, they would cancel or halt everything.
    for path in ["/api/orders/cancel-all?symbol=AAPL&user_id=x", "/api/risk/halt?symbol=AAPL", "/api/risk/resume?symbol=AAPL"] {
        let (s, e) = dm.req("POST", path, None);
        assert_eq!((s, code(&e)), (400, "invalid_query"), "{path}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("JSON body"), "{e}");
    }
    // So is a blank symbol (a script's unset variable), over the API and from the CLI.
    for blank in ["", " "] {
        let (s, e) = dm.req("POST", "/api/orders/cancel-all", Some(json!({"symbol": blank})));
        assert_eq!((s, code(&e)), (400, "invalid_symbol"), "a blank symbol is not every symbol: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("leave symbol out"), "{e}");
    }
    dm.cli().args(["order", "cancel-all", "--symbol", ""]).assert().code(2).stderr(predicates::str::contains("--symbol cannot be empty"));
    assert_eq!(dm.ok("GET", "/api/risk/state", None)["halted"], false);
    assert_eq!(dm.ok("GET", &format!("/api/orders/{id}"), None)["status"], "cancelled");
}

/// Balances near the decimal's limit: a market buy's budget, and a price far from the
/// last one, are too large to divide into units or percents. Each is an answer, not a
/// panic of the lane.
#[test]
fn amounts_near_the_decimal_limit_are_answered_not_panicked_on() {
    let dm = Daemon::start();
    // The most USD there may be while BTC-USD (tick 0.01 × lot 0.0001, 6 places) is
    // listed: 22 digits, so that its notionals settle exactly; one more is refused.
    // And no notional limit below it: a market buy's budget is then ~10^24 ticks.
    let (sym, buyer, seller) = dm.market_pair("9999999999999999999999", "100");
    let (s, e) = dm.req("POST", &format!("/api/users/{buyer}/deposits"), Some(json!({"asset": "USD", "amount": "1"})));
    assert_eq!((s, code(&e)), (422, "max_supply"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("6 decimal places"), "{e}");
    dm.ok("PUT", "/api/risk/limits", Some(json!({"max_order_notional": "9999999999999999999999999999"})));
    let (s, ask) = dm.place(&seller, &sym, "sell", "1", Some("10.00"));
    assert_eq!(s, 201, "{ask}");
    let (s, o) = dm.place(&buyer, &sym, "buy", "1", None);
    assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    // The band's distance overflows: refused as outside the band.
    let (s, e) = dm.place(&buyer, &sym, "buy", "1", Some("9999999999999999999999999999"));
    assert_eq!((s, code(&e)), (422, "price_band"), "{e}");
    assert_eq!(dm.ok("GET", "/api/services", None).as_array().unwrap().iter().filter(|s| s["restarts"].as_u64() > Some(0)).count(), 0);
}

#[test]
fn cancel_amend_and_mass_cancel_release_exactly_what_was_held() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("c");
    dm.deposit(&u, "USD", "1000");
    let ids: Vec<String> = ["10.00", "11.00", "12.00"]
        .iter()
        .map(|p| dm.place(&u, &sym, "buy", "2", Some(p)).1["order_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bal(&dm, &u, "USD").1, d("66"));
    let amended = dm.ok("PATCH", &format!("/api/orders/{}", ids[0]), Some(json!({"price": "20.00", "quantity": "3"})));
    assert_eq!(dec(&amended["price"]), d("20"));
    assert_eq!(bal(&dm, &u, "USD").1, d("106"), "amend re-sizes the hold to 3 × 20");
    let c = dm.ok("DELETE", &format!("/api/orders/{}", ids[1]), None);
    assert_eq!(c["status"], "cancelled");
    let (s, e) = dm.req("DELETE", &format!("/api/orders/{}", ids[1]), None);
    assert_eq!((s, code(&e)), (409, "order_not_open"));
    assert_eq!(bal(&dm, &u, "USD").1, d("84"));
    // The seed's status route: a query and a body that disagree are refused, naming both,
    // rather than one silently winning; a key the seed ignored (`reason`) is still ignored.
    let status = format!("/api/orders/{}/status", ids[2]);
    let (s, e) = dm.req("PUT", &format!("{status}?status=new"), Some(json!({"status": "cancelled"})));
    assert_eq!((s, code(&e)), (400, "invalid_status"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"cancelled\"") && message.contains("\"new\""), "{message}");
    assert_eq!(dm.ok("GET", &format!("/api/orders/{}", ids[2]), None)["status"], "new", "nothing was cancelled");
    let c = dm.ok("PUT", &format!("{status}?status=cancelled"), Some(json!({"status": "cancelled", "reason": "user request"})));
    assert_eq!(c["status"], "cancelled");
    assert_eq!(bal(&dm, &u, "USD").1, d("60"));
    dm.ok("POST", "/api/orders/cancel-all", Some(json!({"user_id": u})));
    assert_eq!(bal(&dm, &u, "USD"), (d("1000"), d("0"), d("1000")));
    assert!(dm.ok("GET", &format!("/api/orders?user_id={u}&status=open"), None).as_array().unwrap().is_empty());
    let (s, _) = dm.req("PUT", &format!("/api/orders/{}/status?status=filled", ids[2]), None);
    assert_eq!(s, 422);
}

#[test]
fn self_trade_prevention_ioc_fok_and_market_orders() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let (a, b) = (dm.user("a"), dm.user("b"));
    for u in [&a, &b] {
        dm.deposit(u, "USD", "10000");
        dm.deposit(u, &sym, "100");
    }
    dm.place(&a, &sym, "sell", "5", Some("100.00"));
    let (_, own) = dm.place(&a, &sym, "buy", "5", Some("100.00"));
    assert_eq!(own["status"], "cancelled", "self-trade prevented: {own}");
    assert_eq!(dec(&own["filled_quantity"]), d("0"));
    let (_, fok) = dm.req(
        "POST",
        "/api/orders",
        Some(json!({"user_id": b, "symbol": sym, "side": "buy", "quantity": "6", "price": "100", "time_in_force": "fok"})),
    );
    assert_eq!(fok["status"], "cancelled");
    assert_eq!(dec(&fok["filled_quantity"]), d("0"));
    let (_, ioc) = dm.req(
        "POST",
        "/api/orders",
        Some(json!({"user_id": b, "symbol": sym, "side": "buy", "quantity": "6", "price": "100", "time_in_force": "ioc"})),
    );
    assert_eq!((ioc["status"].as_str(), dec(&ioc["filled_quantity"])), (Some("cancelled"), d("5")));
    // A cancelled order nobody cancelled says what stopped it.
    let reasons = [&own, &fok, &ioc].map(|o| o["reject_reason"].as_str().unwrap_or_default().split(':').next().unwrap().to_string());
    assert_eq!(reasons, ["self_trade_prevented", "fok_unfilled", "ioc_unfilled"], "{own} {fok} {ioc}");
    assert!(ioc["reject_reason"].as_str().unwrap().contains("ioc_unfilled: 1 did not fill"), "{ioc}");
    dm.place(&a, &sym, "sell", "2", Some("101.00"));
    dm.place(&a, &sym, "sell", "2", Some("102.00"));
    let (_, mkt) = dm.place(&b, &sym, "buy", "3", None);
    assert_eq!(mkt["status"], "filled", "{mkt}");
    assert_eq!(mkt["reject_reason"], Value::Null);
    assert_eq!(dec(&mkt["average_price"]), d("101.333333333333"));
    assert_eq!(bal(&dm, &b, "USD").1, d("0"), "a market buy holds nothing once done");
    // A market buy the funds cut short ends cancelled with what was left.
    let poor = dm.user("poor");
    dm.deposit(&poor, "USD", "150");
    let (s, short) = dm.place(&poor, &sym, "buy", "2", None);
    assert_eq!((s, short["status"].as_str(), dec(&short["filled_quantity"])), (201, Some("cancelled"), d("1")), "{short}");
    assert!(short["reject_reason"].as_str().unwrap().starts_with("market_unfilled: 1 not bought"), "{short}");
    // A fill-or-kill market order that cannot fill whole is killed as fill-or-kill.
    let body = json!({"user_id": poor, "symbol": sym, "side": "buy", "quantity": "50", "type": "market", "time_in_force": "fok"});
    let (s, killed) = dm.req("POST", "/api/orders", Some(body));
    assert_eq!((s, killed["status"].as_str(), dec(&killed["filled_quantity"])), (201, Some("cancelled"), d("0")), "{killed}");
    assert!(killed["reject_reason"].as_str().unwrap().starts_with("fok_unfilled"), "{killed}");
}

/// A closed order's `remaining_quantity` is what never traded (quantity − filled), in
/// the placement's answer, in `GET /api/orders/{id}` and in `ORDER_CANCELLED`: a market
/// buy its budget cut short answered "0" as if it had bought everything.
#[test]
fn a_closed_orders_remaining_is_what_never_traded() {
    let dm = Daemon::with_config("[risk]\nprice_band_pct = 1000\n");
    let sym = dm.symbol("0.01", "1");
    let (maker, taker) = (dm.user("mk"), dm.user("tk"));
    dm.deposit(&maker, &sym, "100");
    dm.deposit(&maker, "USD", "1000");
    dm.deposit(&taker, "USD", "250");
    dm.place(&maker, &sym, "sell", "1", Some("100.00"));
    dm.place(&maker, &sym, "sell", "5", Some("200.00"));
    let remaining = |o: &Value| (o["status"].as_str().unwrap().to_string(), dec(&o["filled_quantity"]), dec(&o["remaining_quantity"]));
    let check = |o: &Value, want: (&str, &str, &str)| {
        let want = (want.0.to_string(), d(want.1), d(want.2));
        assert_eq!(remaining(o), want, "answered {o}");
        let stored = dm.ok("GET", &format!("/api/orders/{}", o["order_id"].as_str().unwrap()), None);
        assert_eq!(remaining(&stored), want, "stored {stored}");
    };
    // A market buy of 5 whose budget (250 USD) covers 1 at 100 and no lot at 200.
    let (_, mkt) = dm.place(&taker, &sym, "buy", "5", None);
    check(&mkt, ("cancelled", "1", "4"));
    assert!(mkt["reject_reason"].as_str().unwrap().starts_with("market_unfilled: 4 not bought"), "{mkt}");
    // A market buy the book runs out under.
    let rich = dm.user("rich");
    dm.deposit(&rich, "USD", "100000");
    let (_, mkt) = dm.place(&rich, &sym, "buy", "9", None);
    check(&mkt, ("cancelled", "5", "4"));
    // IOC and FOK limit orders, a market sell, then a partly filled limit cancelled.
    dm.place(&maker, &sym, "sell", "3", Some("300.00"));
    let tif = |qty: &str, tif: &str| {
        let body = json!({"user_id": rich, "symbol": sym, "side": "buy", "quantity": qty, "price": "300", "time_in_force": tif});
        dm.req("POST", "/api/orders", Some(body)).1
    };
    check(&tif("4", "fok"), ("cancelled", "0", "4"));
    check(&tif("5", "ioc"), ("cancelled", "3", "2"));
    dm.place(&rich, &sym, "buy", "2", Some("50.00"));
    let (_, sell) = dm.place(&maker, &sym, "sell", "7", None);
    check(&sell, ("cancelled", "2", "5"));
    let (_, rest) = dm.place(&maker, &sym, "sell", "6", Some("400.00"));
    let (_, part) = dm.place(&rich, &sym, "buy", "2", None);
    check(&part, ("filled", "2", "0"));
    let id = rest["order_id"].as_str().unwrap();
    let cancelled = dm.ok("DELETE", &format!("/api/orders/{id}"), None);
    check(&cancelled, ("cancelled", "2", "4"));
    let event = dm.events("ORDER_CANCELLED").into_iter().find(|e| e["data"]["order_id"] == id).unwrap();
    assert_eq!(dec(&event["data"]["remaining_quantity"]), d("4"), "{event}");
    // A rejected order traded none of its quantity.
    let (s, rejected) = dm.place(&taker, &sym, "buy", "1000", Some("400.00"));
    assert_eq!(s, 422, "{rejected}");
    let id = dm.ok("GET", &format!("/api/orders?user_id={taker}&status=all"), None)[0]["order_id"].as_str().unwrap().to_string();
    let stored = dm.ok("GET", &format!("/api/orders/{id}"), None);
    assert_eq!(remaining(&stored), ("rejected".to_string(), d("0"), d("1000")), "{stored}");
}

/// Sums every user's balances per asset.
fn totals(dm: &Daemon, users: &[String]) -> HashMap<String, Decimal> {
    let mut t = HashMap::new();
    for u in users {
        for (asset, (total, _, _)) in account(dm, u) {
            *t.entry(asset).or_default() += total;
        }
    }
    t
}

fn check_consistency(dm: &Daemon, users: &[String], sym: &str, expected: &HashMap<String, Decimal>) {
    assert_eq!(&totals(dm, users), expected, "cash or assets were created or destroyed");
    let book = dm.ok("GET", &format!("/api/book/{sym}?depth=1"), None);
    if let (Some(bid), Some(ask)) = (book["bids"].get(0), book["asks"].get(0)) {
        assert!(dec(&bid[0]) < dec(&ask[0]), "crossed book {book}");
    }
    // Holds equal what open orders need.
    for u in users {
        let open = dm.ok("GET", &format!("/api/orders?user_id={u}&status=open&limit=10000"), None);
        let (mut usd, mut base) = (Decimal::ZERO, Decimal::ZERO);
        for o in open.as_array().unwrap() {
            let rem = dec(&o["remaining_quantity"]);
            if o["side"] == "buy" {
                usd += rem * dec(&o["price"]);
            } else {
                base += rem;
            }
        }
        assert_eq!(bal(dm, u, "USD").1, usd, "USD held by {u} != open buys");
        assert_eq!(bal(dm, u, sym).1, base, "{sym} held by {u} != open sells");
    }
}

#[test]
fn sigkill_during_a_burst_of_concurrent_orders_loses_nothing_acknowledged() {
    // Orders pile up over the cycles; at the default limit of 100 open orders a user, a
    // fast machine had each trader at the limit by the third cycle, and nothing more was
    // acknowledged to check.
    let mut dm = Daemon::with_config("[risk]\nmax_open_orders = 100000\n");
    let sym = dm.symbol("0.01", "1");
    let users = funded_traders(&dm, "k", &sym);
    let expected = totals(&dm, &users);
    let mut acked_in_all = 0;
    for cycle in 0..3 {
        let acked: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let sock = dm.sock();
        let threads: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let (u, sym, acked, sock) = (u.clone(), sym.clone(), acked.clone(), sock.clone());
                std::thread::spawn(move || {
                    for n in 0..400 {
                        let side = if (n + i) % 2 == 0 { "buy" } else { "sell" };
                        let price = format!("{}.{:02}", 99 + (n % 3), (n * 7 + i) % 100);
                        let body = json!({"user_id": u, "symbol": sym, "side": side, "quantity": "1", "price": price}).to_string();
                        let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else { return };
                        match exchange(s, "POST", "/api/orders", Some(&body), &[]) {
                            Ok((201, o)) => acked.lock().unwrap().push(o),
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        // A reader polls the traders' newest orders meanwhile. Reads are answered from the
        // lane's open transactions, before its flush: what they show must survive the kill.
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let reader = {
            let (users, sock, seen) = (users.clone(), sock.clone(), seen.clone());
            std::thread::spawn(move || {
                for u in users.iter().cycle() {
                    let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else { return };
                    match exchange(s, "GET", &format!("/api/orders?user_id={u}&limit=20"), None, &[]) {
                        Ok((200, list)) => seen.lock().unwrap().extend(list.as_array().unwrap().iter().cloned()),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        };
        // The kill comes mid-burst, later in each cycle: once that many placements are
        // answered and the reader has seen some. (A fixed 150 ms, then 250 and 350, could
        // pass before the first answer on a loaded machine: nothing acknowledged to check.)
        let answered = 20 * (cycle + 1);
        wait_until("placements answered and read before the kill", std::time::Duration::from_secs(60), || {
            (acked.lock().unwrap().len() >= answered && !seen.lock().unwrap().is_empty()).then_some(())
        });
        dm.kill9();
        for t in threads {
            t.join().unwrap();
        }
        reader.join().unwrap();
        dm.spawn();
        let acked = acked.lock().unwrap();
        let seen = seen.lock().unwrap();
        // The last read of each order: fills only grow, so it showed the most.
        let seen: HashMap<&str, &Value> = seen.iter().map(|o| (o["order_id"].as_str().unwrap(), o)).collect();
        assert!(!acked.is_empty(), "cycle {cycle}: nothing was acknowledged before the kill");
        assert!(!seen.is_empty(), "cycle {cycle}: the reader saw nothing before the kill");
        for o in acked.iter().chain(seen.into_values()) {
            let now = dm.ok("GET", &format!("/api/orders/{}", o["order_id"].as_str().unwrap()), None);
            assert!(dec(&now["filled_quantity"]) >= dec(&o["filled_quantity"]), "fills lost: {o} -> {now}");
            for f in o["fills"].as_array().unwrap() {
                assert!(now["fills"].as_array().unwrap().contains(f), "fill {f} lost");
            }
        }
        check_consistency(&dm, &users, &sym, &expected);
        check_events(&dm, &acked);
        // Every acknowledged command has its audit record (it was journalled before it
        // was answered), and the chain still verifies.
        acked_in_all += acked.len();
        let audit = dm.ok("GET", "/api/audit?limit=100000", None);
        let placed = audit.as_array().unwrap().iter().filter(|r| r["action"] == "POST /api/orders").count();
        assert!(placed >= acked_in_all, "cycle {cycle}: {placed} audit records of placements for {acked_in_all} acknowledged");
        assert_eq!(dm.ok("GET", "/api/audit/verify", None)["ok"], true);
    }
}

/// Cancels and amends are answered once journalled, like placements. Four traders cancel
/// or amend their resting orders at once (some amends cross and trade) while the daemon
/// is SIGKILLed: every acknowledged cancel and amend is there after the restart, with
/// its fills, and money, holds and the book agree.
#[test]
fn sigkill_during_a_burst_of_cancels_and_amends_loses_nothing_acknowledged() {
    let mut dm = Daemon::with_config("[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\n");
    let sym = dm.symbol("0.01", "1");
    let users = funded_traders(&dm, "e", &sym);
    let expected = totals(&dm, &users);
    // Resting orders, none crossing: buys at 90-94, sells at 106-110.
    let resting: Vec<Vec<(String, &str)>> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            (0..120)
                .map(|n| {
                    let side = if (n + i) % 2 == 0 { "buy" } else { "sell" };
                    let price = if side == "buy" { format!("{}.00", 90 + n % 5) } else { format!("{}.00", 106 + n % 5) };
                    let (status, o) = dm.place(u, &sym, side, "1", Some(&price));
                    assert_eq!(status, 201, "{o}");
                    (o["order_id"].as_str().unwrap().to_string(), side)
                })
                .collect()
        })
        .collect();
    let acked: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Value)>>> = Default::default();
    let sock = dm.sock();
    let threads: Vec<_> = resting
        .into_iter()
        .map(|orders| {
            let (acked, sock) = (acked.clone(), sock.clone());
            std::thread::spawn(move || {
                for (n, (id, side)) in orders.into_iter().enumerate() {
                    let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else { return };
                    let (what, r) = match n % 3 {
                        0 => ("cancel", exchange(s, "DELETE", &format!("/api/orders/{id}"), None, &[])),
                        // Across the book: buys up to 107, sells down to 93; they may trade.
                        1 => {
                            let price = if side == "buy" { "107.00" } else { "93.00" };
                            ("amend", exchange(s, "PATCH", &format!("/api/orders/{id}"), Some(&json!({"price": price}).to_string()), &[]))
                        }
                        _ => {
                            ("amend", exchange(s, "PATCH", &format!("/api/orders/{id}"), Some(&json!({"quantity": "2"}).to_string()), &[]))
                        }
                    };
                    match r {
                        Ok((200, o)) => acked.lock().unwrap().push((what, o)),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // The kill comes mid-burst, once cancels and amends are answered (a fixed 120 ms
    // could pass before the first answer on a loaded machine).
    wait_until("cancels and amends answered before the kill", std::time::Duration::from_secs(60), || {
        let acked = acked.lock().unwrap();
        let count = |what: &str| acked.iter().filter(|(w, _)| *w == what).count();
        (count("cancel") >= 10 && count("amend") >= 10).then_some(())
    });
    dm.kill9();
    for t in threads {
        t.join().unwrap();
    }
    dm.spawn();
    let acked = acked.lock().unwrap();
    assert!(acked.iter().any(|(w, _)| *w == "cancel") && acked.iter().any(|(w, _)| *w == "amend"), "too little was acknowledged");
    for (what, o) in acked.iter() {
        let now = dm.ok("GET", &format!("/api/orders/{}", o["order_id"].as_str().unwrap()), None);
        match *what {
            "cancel" => assert_eq!(now["status"], "cancelled", "a cancel was lost: {o} -> {now}"),
            _ => {
                assert_eq!((&now["price"], &now["quantity"]), (&o["price"], &o["quantity"]), "an amend was lost: {o} -> {now}");
                for f in o["fills"].as_array().unwrap() {
                    assert!(now["fills"].as_array().unwrap().contains(f), "fill {f} of an amend lost");
                }
            }
        }
    }
    check_consistency(&dm, &users, &sym, &expected);
}

/// Every acknowledged order has its `ORDER_CREATED` and each of its trades its
/// `TRADE_EXECUTED`, once each, whatever a crash left in the stores' outboxes; and no
/// event is stored twice.
fn check_events(dm: &Daemon, acked: &[Value]) {
    let events = dm.events("ORDER_CREATED,TRADE_EXECUTED");
    let mut ids = std::collections::HashSet::new();
    let (mut created, mut traded) = (HashMap::<String, u32>::new(), HashMap::<String, u32>::new());
    for e in &events {
        assert!(ids.insert(e["event_id"].as_str().unwrap().to_string()), "event {} stored twice", e["event_id"]);
        let (map, key) = if e["type"] == "ORDER_CREATED" { (&mut created, "order_id") } else { (&mut traded, "trade_id") };
        *map.entry(e["data"][key].as_str().unwrap().to_string()).or_default() += 1;
    }
    for o in acked {
        assert_eq!(created.get(o["order_id"].as_str().unwrap()), Some(&1), "ORDER_CREATED of {}", o["order_id"]);
        for f in o["fills"].as_array().unwrap() {
            assert_eq!(traded.get(f["trade_id"].as_str().unwrap()), Some(&1), "TRADE_EXECUTED of {}", f["trade_id"]);
        }
    }
}

/// Four traders each place 150 crossing orders at once over the socket; `meanwhile` runs
/// once 20 of them are answered. Returns how many were placed (201) and refused (503, the lane restarting).
fn burst(dm: &Daemon, users: &[String], sym: &str, meanwhile: impl FnOnce()) -> (u32, u32) {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    let (placed, refused) = (std::sync::Arc::new(AtomicU32::new(0)), std::sync::Arc::new(AtomicU32::new(0)));
    let sock = dm.sock();
    let threads: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let (u, sym, sock, placed, refused) = (u.clone(), sym.to_string(), sock.clone(), placed.clone(), refused.clone());
            std::thread::spawn(move || {
                for n in 0..150 {
                    let side = if (n + i) % 2 == 0 { "buy" } else { "sell" };
                    let price = format!("{}.{:02}", 99 + (n % 3), (n * 7 + i) % 100);
                    let body = json!({"user_id": u, "symbol": sym, "side": side, "quantity": "1", "price": price}).to_string();
                    let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
                    match exchange(s, "POST", "/api/orders", Some(&body), &[]).unwrap().0 {
                        201 => placed.fetch_add(1, Relaxed),
                        503 => refused.fetch_add(1, Relaxed),
                        other => panic!("a placement answered {other}"),
                    };
                }
            })
        })
        .collect();
    // `meanwhile` runs during the burst, not before it: once some placements are answered
    // (a slow machine took longer than the 100 ms this used to wait to make its first).
    crate::util::wait_until("the burst's first answers", std::time::Duration::from_secs(60), || {
        (placed.load(Relaxed) + refused.load(Relaxed) >= 20 || threads.iter().all(|t| t.is_finished())).then_some(())
    });
    meanwhile();
    for t in threads {
        t.join().unwrap();
    }
    (placed.load(Relaxed), refused.load(Relaxed))
}

fn restarts(dm: &Daemon, name: &str) -> u64 {
    service(dm, name)["restarts"].as_u64().unwrap()
}

fn service(dm: &Daemon, name: &str) -> Value {
    let list = dm.ok("GET", "/api/services", None);
    list.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone()
}

/// Waits (10 s at most) until the lane's three services have all restarted since `before`
/// and run again (the count goes up when a restart begins, before the stores reopen).
fn wait_for_lane_restart(dm: &Daemon, before: &[u64]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let back = |n: &str, b: u64| {
        let s = service(dm, n);
        s["restarts"].as_u64().unwrap() > b && s["state"] == "running"
    };
    while !["risk", "trading", "orders"].iter().zip(before).all(|(n, b)| back(n, *b)) {
        assert!(std::time::Instant::now() < deadline, "the lane's three services did not all restart");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn funded_traders(dm: &Daemon, prefix: &str, sym: &str) -> Vec<String> {
    let users: Vec<String> = (0..4).map(|i| dm.user(&format!("{prefix}{i}"))).collect();
    for u in &users {
        dm.deposit(u, "USD", "100000");
        dm.deposit(u, sym, "1000");
    }
    users
}

/// risk, trading and orders share one thread (the trading lane): a crash of it restarts
/// all three, and placements sent meanwhile either land whole or are refused (503).
#[test]
fn a_crash_of_the_trading_lane_during_a_burst_leaves_every_store_consistent() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let users = funded_traders(&dm, "l", &sym);
    let expected = totals(&dm, &users);
    let before: Vec<u64> = ["risk", "trading", "orders"].iter().map(|n| restarts(&dm, n)).collect();
    let (placed, _) = burst(&dm, &users, &sym, || {
        dm.ok("POST", "/api/services/orders/crash", None);
    });
    wait_for_lane_restart(&dm, &before);
    assert!(placed > 0);
    check_consistency(&dm, &users, &sym, &expected);
    // And it trades on.
    assert_eq!(dm.place(&users[0], &sym, "buy", "1", Some("99.00")).0, 201);
}

/// The lane answers a placement once trading commits it with its intake record; risk
/// and orders commit later, together (a flush). A crash between those two commits leaves
/// risk ahead of orders by placements already answered; the restarted lane redoes them
/// in orders from the journal, without a daemon restart.
#[test]
fn a_lane_crash_between_risk_and_orders_commits_loses_no_answered_order() {
    let dm = Daemon::with_config_env("", &[("AGT_FAULT_LANE_SPLIT", "2")]);
    let sym = dm.symbol("0.01", "1");
    let users = funded_traders(&dm, "h", &sym);
    let expected = totals(&dm, &users);
    let before: Vec<u64> = ["risk", "trading", "orders"].iter().map(|n| restarts(&dm, n)).collect();
    let (placed, refused) = burst(&dm, &users, &sym, || {});
    wait_for_lane_restart(&dm, &before);
    // Placements the lane had not taken when it stopped are refused (503) and not stored.
    assert!(placed > 0, "{placed} placed, {refused} refused");
    let stored = dm.ok("GET", "/api/orders?status=all&limit=10000", None);
    assert_eq!(stored.as_array().unwrap().len() as u32, placed, "every answered placement is stored, and nothing else");
    let held = users.iter().map(|u| bal(&dm, u, "USD").1 + bal(&dm, u, &sym).1).sum::<Decimal>();
    let open = dm.ok("GET", "/api/orders?status=open&limit=10000", None);
    let open_need = open
        .as_array()
        .unwrap()
        .iter()
        .map(|o| if o["side"] == "buy" { dec(&o["remaining_quantity"]) * dec(&o["price"]) } else { dec(&o["remaining_quantity"]) })
        .sum::<Decimal>();
    assert_eq!(held, open_need, "holds are what open orders need");
    check_consistency(&dm, &users, &sym, &expected);
    assert_eq!(dm.place(&users[0], &sym, "buy", "1", Some("99.00")).0, 201);
}

/// A cancel is answered once its record is in the lane's journal, before risk and orders
/// commit it (as a placement is). A crash of the lane between those two commits leaves
/// the orders store without it: the restarted lane redoes it from the journal, so the
/// order stays cancelled as answered, with one `ORDER_CANCELLED`, its hold released and
/// nothing left in the book.
#[test]
fn a_cancel_answered_before_a_lane_crash_between_commits_stays_cancelled() {
    // The lane's second flush of journalled records stops between risk's and orders' commits.
    let dm = Daemon::with_config_env("", &[("AGT_FAULT_LANE_SPLIT", "2")]);
    let sym = dm.symbol("0.01", "1");
    let (buyer, seller) = (dm.user("cb"), dm.user("cs"));
    dm.deposit(&buyer, "USD", "100");
    dm.deposit(&seller, &sym, "2");
    let id = dm.place(&buyer, &sym, "buy", "2", Some("10.00")).1["order_id"].as_str().unwrap().to_string();
    // Reading events waits for the lane's next flush: the placement's, the first.
    assert_eq!(dm.events("ORDER_CREATED").len(), 1);
    let before: Vec<u64> = ["risk", "trading", "orders"].iter().map(|n| restarts(&dm, n)).collect();
    let answered = dm.ok("DELETE", &format!("/api/orders/{id}"), None);
    assert_eq!((answered["status"].as_str(), answered["remaining_quantity"].as_str()), (Some("cancelled"), Some("2")));
    wait_for_lane_restart(&dm, &before);
    let now = dm.ok("GET", &format!("/api/orders/{id}"), None);
    assert_eq!(now, answered, "stored as it was answered");
    assert_eq!(bal(&dm, &buyer, "USD"), (d("100"), d("0"), d("100")), "the hold is released");
    let cancels = dm.events("ORDER_CANCELLED");
    assert_eq!(cancels.iter().filter(|e| e["data"]["order_id"] == id.as_str()).count(), 1, "{cancels:?}");
    let (_, sell) = dm.place(&seller, &sym, "sell", "2", Some("10.00"));
    assert_eq!(sell["status"], "new", "the cancelled buy still rested: {sell}");
}

/// Cancels answered right before a SIGKILL (most of them not yet committed by risk and
/// orders) are all there after the restart: orders cancelled, holds released, books empty.
#[test]
fn cancels_acknowledged_before_a_sigkill_survive_it() {
    let mut dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("ck");
    dm.deposit(&u, "USD", "1000");
    let ids: Vec<String> = (0..20)
        .map(|i| dm.place(&u, &sym, "buy", "1", Some(&format!("{}.00", 10 + i))).1["order_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bal(&dm, &u, "USD").1, d("390"), "held for the 20 buys");
    for id in &ids[..10] {
        dm.ok("DELETE", &format!("/api/orders/{id}"), None);
    }
    let rest = dm.ok("POST", "/api/orders/cancel-all", Some(json!({"user_id": u})));
    assert_eq!(rest.as_array().unwrap().len(), 10);
    dm.kill9();
    dm.spawn();
    for id in &ids {
        assert_eq!(dm.ok("GET", &format!("/api/orders/{id}"), None)["status"], "cancelled", "{id}");
    }
    assert_eq!(bal(&dm, &u, "USD"), (d("1000"), d("0"), d("1000")), "every hold released");
    let book = dm.ok("GET", &format!("/api/book/{sym}"), None);
    assert_eq!(book["bids"], json!([]), "{book}");
}

/// Amends answered right before a SIGKILL (not yet committed by risk and orders) are
/// all there after the restart: the one that crossed has its fills settled, the one that
/// grew holds for its new size, and the books are as the answers left them.
#[test]
fn amends_acknowledged_before_a_sigkill_survive_it() {
    let mut dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("1000", "10");
    let sell = dm.place(&seller, &sym, "sell", "5", Some("11.00")).1["order_id"].as_str().unwrap().to_string();
    let crossing = dm.place(&buyer, &sym, "buy", "3", Some("10.00")).1["order_id"].as_str().unwrap().to_string();
    let growing = dm.place(&buyer, &sym, "buy", "1", Some("9.00")).1["order_id"].as_str().unwrap().to_string();
    let crossed = dm.ok("PATCH", &format!("/api/orders/{crossing}"), Some(json!({"price": "11.00"})));
    assert_eq!((crossed["status"].as_str(), crossed["filled_quantity"].as_str()), (Some("filled"), Some("3")), "{crossed}");
    let grown = dm.ok("PATCH", &format!("/api/orders/{growing}"), Some(json!({"quantity": "4"})));
    assert_eq!(grown["quantity"], "4");
    dm.kill9();
    dm.spawn();
    assert_eq!(dm.ok("GET", &format!("/api/orders/{crossing}"), None), crossed, "stored as answered");
    assert_eq!(dm.ok("GET", &format!("/api/orders/{growing}"), None), grown);
    assert_eq!(dm.ok("GET", &format!("/api/orders/{sell}"), None)["filled_quantity"], "3");
    assert_eq!(bal(&dm, &buyer, "USD"), (d("967"), d("36"), d("931")), "paid 33, holds 4 at 9.00");
    assert_eq!(bal(&dm, &buyer, &sym), (d("3"), d("0"), d("3")));
    assert_eq!(bal(&dm, &seller, &sym), (d("7"), d("2"), d("5")));
    let book = dm.ok("GET", &format!("/api/book/{sym}"), None);
    assert_eq!((book["bids"].clone(), book["asks"].clone()), (json!([["9", "4"]]), json!([["11", "2"]])), "{book}");
}

/// Two makers' sells of 5 at 10.00, one after the other (the first maker holds 6, so its
/// order can grow by one), and a taker with cash: the symbol, the two order ids, the taker.
fn two_sells_at_ten(dm: &Daemon, tag: &str) -> (String, String, String, String) {
    let sym = dm.symbol("0.01", "1");
    let (m1, m2, t) = (dm.user(&format!("{tag}1")), dm.user(&format!("{tag}2")), dm.user(&format!("{tag}t")));
    dm.deposit(&m1, &sym, "6");
    dm.deposit(&m2, &sym, "5");
    dm.deposit(&t, "USD", "1000");
    let first = dm.place(&m1, &sym, "sell", "5", Some("10.00")).1;
    let second = dm.place(&m2, &sym, "sell", "5", Some("10.00")).1;
    let id = |o: &Value| o["order_id"].as_str().unwrap().to_string();
    (sym, id(&first), id(&second), t)
}

/// SIGKILL and restart, then the taker buys 5 at 10.00, which must fill at once.
fn kill_restart_and_buy_five(dm: &mut Daemon, sym: &str, taker: &str) {
    dm.kill9();
    dm.spawn();
    let (_, buy) = dm.place(taker, sym, "buy", "5", Some("10.00"));
    assert_eq!(buy["status"], "filled", "{buy}");
}

/// A clean stop leaves the intake journal empty: the three stores hold every record, so
/// the next start has nothing to read or redo, and the book and the orders are all
/// there (the priority too).
#[test]
fn a_clean_stop_leaves_nothing_in_the_intake_journal() {
    let mut dm = Daemon::start();
    let (sym, first, _, t) = two_sells_at_ten(&dm, "c");
    let journal = dm.path().join("data/trading-journal");
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log")).count()
    };
    assert!(segments(&journal) > 0, "the placements are journalled");
    assert!(dm.stop().success());
    assert_eq!(segments(&journal), 0, "a clean stop prunes what the stores have committed");
    dm.spawn();
    let (_, buy) = dm.place(&t, &sym, "buy", "5", Some("10.00"));
    assert_eq!(buy["status"], "filled", "{buy}");
    assert_eq!(dm.ok("GET", &format!("/api/orders/{first}"), None)["status"], "filled", "time priority kept");
}

#[test]
fn books_are_rebuilt_in_priority_order_after_a_restart() {
    let mut dm = Daemon::start();
    let (sym, first, _, t) = two_sells_at_ten(&dm, "m");
    kill_restart_and_buy_five(&mut dm, &sym, &t);
    let first_now = dm.ok("GET", &format!("/api/orders/{first}"), None);
    assert_eq!(first_now["status"], "filled", "time priority lost across the restart");
}

/// An amend that grew an order moved it behind the orders at its price; the order keeps
/// its engine id, so its stored row sits before theirs. A restart must still queue it last.
#[test]
fn an_order_an_amend_sent_to_the_back_stays_there_after_a_restart() {
    let mut dm = Daemon::start();
    let (sym, first, second, t) = two_sells_at_ten(&dm, "a");
    dm.ok("PATCH", &format!("/api/orders/{first}"), Some(json!({"quantity": "6"})));
    kill_restart_and_buy_five(&mut dm, &sym, &t);
    let second_now = dm.ok("GET", &format!("/api/orders/{second}"), None);
    assert_eq!(second_now["status"], "filled", "the amended order got its old place back: {second_now}");
    assert_eq!(dm.ok("GET", &format!("/api/orders/{first}"), None)["status"], "new");
}

#[test]
fn client_order_id_is_idempotent_per_user() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("i");
    dm.deposit(&u, "USD", "100");
    let body = json!({"user_id": u, "symbol": sym, "side": "buy", "quantity": "1", "price": "10", "client_order_id": "c-1 🚀'"});
    let (s1, o1) = dm.req("POST", "/api/orders", Some(body.clone()));
    let (s2, o2) = dm.req("POST", "/api/orders", Some(body));
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(o1["order_id"], o2["order_id"]);
    assert_eq!(o2["client_order_id"], "c-1 🚀'");
    assert_eq!(bal(&dm, &u, "USD").1, d("10"));
}

#[test]
fn traders_see_and_touch_only_their_own_orders() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let (a, b) = (dm.user("ta"), dm.user("tb"));
    dm.deposit(&a, "USD", "100");
    dm.deposit(&b, "USD", "100");
    let tok = dm.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": a})))["token"].as_str().unwrap().to_string();
    let (s, mine) = dm.tcp("POST", "/api/orders", Some(json!({"symbol": sym, "side": "buy", "quantity": "1", "price": "1"})), Some(&tok));
    assert_eq!(s, 201, "{mine}");
    assert_eq!(mine["user_id"], a.as_str());
    let theirs = dm.place(&b, &sym, "buy", "1", Some("1")).1;
    let tid = theirs["order_id"].as_str().unwrap();
    assert_eq!(dm.tcp("GET", &format!("/api/orders/{tid}"), None, Some(&tok)).0, 404);
    assert_eq!(dm.tcp("DELETE", &format!("/api/orders/{tid}"), None, Some(&tok)).0, 404);
    let (s, _) =
        dm.tcp("POST", "/api/orders", Some(json!({"user_id": b, "symbol": sym, "side": "buy", "quantity": "1", "price": "1"})), Some(&tok));
    assert_eq!(s, 403);
    assert_eq!(dm.tcp("GET", &format!("/api/users/{b}/account"), None, Some(&tok)).0, 404);
    assert_eq!(dm.tcp("POST", &format!("/api/users/{a}/deposits"), Some(json!({"asset": "USD", "amount": "5"})), Some(&tok)).0, 403);
    let listed = dm.tcp("GET", "/api/orders?status=all", None, Some(&tok)).1;
    assert!(listed.as_array().unwrap().iter().all(|o| o["user_id"] == a.as_str()));
    assert_eq!(dm.tcp("GET", &format!("/api/book/{sym}"), None, Some(&tok)).0, 200);
}

#[test]
fn a_cancel_interrupted_after_the_book_let_go_is_finished_at_start_up() {
    let mut dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("rc");
    dm.deposit(&u, "USD", "100");
    let o = dm.place(&u, &sym, "buy", "2", Some("10.00")).1;
    let id = o["order_id"].as_str().unwrap().to_string();
    dm.ok("DELETE", &format!("/api/orders/{id}"), None);
    dm.stop();
    // As if the daemon died after the book and risk let go, before orders recorded it.
    let conn = rusqlite::Connection::open(dm.path().join("data/orders.db")).unwrap();
    assert_eq!(conn.execute("UPDATE orders SET status = 'new' WHERE order_id = ?1", [&id]).unwrap(), 1);
    drop(conn);
    dm.spawn();
    let now = dm.ok("GET", &format!("/api/orders/{id}"), None);
    assert_eq!(now["status"], "cancelled", "recovery did not finish the cancel: {now}");
    assert_eq!(bal(&dm, &u, "USD"), (d("100"), d("0"), d("100")));
}

#[test]
fn a_hold_whose_order_was_never_stored_is_released_at_start_up() {
    let mut dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("orphan");
    dm.deposit(&u, "USD", "100");
    dm.stop();
    // As if the daemon died after risk held funds for a placement and before orders stored it.
    let conn = rusqlite::Connection::open(dm.path().join("data/risk.db")).unwrap();
    conn.execute(
        "INSERT INTO holds (order_id, user_id, symbol, asset, side, limit_price, amount, budget, open)
         VALUES ('ord_never_stored', ?1, ?2, 'USD', 'buy', '10', '30', NULL, 1)",
        [&u, &sym],
    )
    .unwrap();
    conn.execute("UPDATE balances SET held = '30' WHERE user_id = ?1 AND asset = 'USD'", [&u]).unwrap();
    drop(conn);
    dm.spawn();
    assert_eq!(bal(&dm, &u, "USD"), (d("100"), d("0"), d("100")), "the orphan hold was not released");
}

/// A placement is answered before the lane commits its record (recovery would write the
/// same from trading's stored outcome), so readers must still see it at once: the order
/// and account routes go through the lane, and `/api/events` waits for the lane first.
#[test]
fn what_a_placement_answered_is_readable_at_once_in_orders_accounts_and_events() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let (maker, taker) = (dm.user("rm"), dm.user("rt"));
    dm.deposit(&maker, &sym, "100");
    dm.deposit(&taker, "USD", "100000");
    for i in 0..10 {
        let (_, sell) = dm.place(&maker, &sym, "sell", "1", Some("10.00"));
        let (s, buy) = dm.place(&taker, &sym, "buy", "1", Some("10.00"));
        assert_eq!((s, buy["status"].as_str()), (201, Some("filled")), "{buy}");
        let (_, body) = dm.req("GET", "/api/events?since=0&type=ORDER_EXECUTED", None);
        let text = match body {
            Value::String(s) => s,
            v => v.to_string(),
        };
        assert!(text.contains(buy["order_id"].as_str().unwrap()), "ORDER_EXECUTED of {} not readable yet", buy["order_id"]);
        let sell_now = dm.ok("GET", &format!("/api/orders/{}", sell["order_id"].as_str().unwrap()), None);
        assert_eq!(sell_now["status"], "filled");
        assert_eq!(bal(&dm, &taker, &sym).0, d(&(i + 1).to_string()), "the taker's asset arrived");
    }
}

/// Placements that follow each other closely make the order path wait awake
/// (`trading.spin_us`, `services::spin`). Each is answered and stored, and moves money
/// exactly, with spinning on, off and at its longest; the key is live and bounded.
#[test]
fn placements_one_after_another_are_answered_with_spinning_on_and_off() {
    let dm = Daemon::with_config("[trading]\norder_timeout_s = 5\n");
    let (sym, buyer, seller) = dm.market_pair("10000", "100");
    let trade_round = |n: usize| {
        for _ in 0..n {
            let (s, sell) = dm.place(&seller, &sym, "sell", "1", Some("50.00"));
            assert_eq!(s, 201, "{sell}");
            let (s, buy) = dm.place(&buyer, &sym, "buy", "1", Some("50.00"));
            assert_eq!((s, buy["status"].as_str()), (201, Some("filled")), "{buy}");
        }
    };
    trade_round(30);
    dm.cli().args(["config", "set", "trading.spin_us", "0"]).assert().success();
    trade_round(10);
    dm.cli().args(["config", "set", "trading.spin_us", "1000"]).assert().success();
    trade_round(30);
    dm.cli().args(["config", "set", "trading.spin_us", "1001"]).assert().code(1).stderr(predicates::str::contains("trading.spin_us"));
    assert_eq!(bal(&dm, &buyer, &sym), (d("70"), d("0"), d("70")));
    assert_eq!(bal(&dm, &buyer, "USD"), (d("6500"), d("0"), d("6500")));
    assert_eq!(bal(&dm, &seller, "USD"), (d("3500"), d("0"), d("3500")));
    assert_eq!(bal(&dm, &seller, &sym), (d("30"), d("0"), d("30")));
}

/// An amend off the tick is told the nearest prices on it, in the words a placement off
/// the tick gets (the amend said only "not a multiple of the tick"), over HTTP and through
/// `agt order amend`; a quantity off the lot likewise.
#[test]
fn an_amend_off_the_grid_names_the_nearest_values_on_it_as_a_placement_does() {
    let dm = Daemon::start();
    let sym = format!("TK{}", unique().to_uppercase());
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": sym, "tick": "0.05", "lot": "1"})));
    let u = dm.user("tk");
    dm.deposit(&u, "USD", "1000");
    let (s, placed) = dm.place(&u, &sym, "buy", "1", Some("100.03"));
    assert_eq!((s, code(&placed)), (422, "invalid_tick"), "{placed}");
    let placement_says = placed["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(placement_says, "price 100.03 is not a multiple of the tick 0.05 (nearest on it: 100 or 100.05)");
    let (s, o) = dm.place(&u, &sym, "buy", "1", Some("90"));
    assert_eq!(s, 201, "{o}");
    let id = o["order_id"].as_str().unwrap();
    let (s, e) = dm.req("PATCH", &format!("/api/orders/{id}"), Some(json!({"price": "100.03"})));
    assert_eq!((s, code(&e)), (422, "invalid_tick"), "{e}");
    assert_eq!(e["error"]["message"].as_str(), Some(placement_says.as_str()), "{e}");
    let out = dm.cli().args(["order", "amend", id, "--price", "100.03"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("invalid_tick") && err.contains("(nearest on it: 100 or 100.05)"), "{err}");
    let (s, e) = dm.req("PATCH", &format!("/api/orders/{id}"), Some(json!({"price": "95.07", "quantity": "2"})));
    assert_eq!(
        e["error"]["message"].as_str(),
        Some("price 95.07 is not a multiple of the tick 0.05 (nearest on it: 95.05 or 95.1)"),
        "{s} {e}"
    );
    let (s, e) = dm.req("PATCH", &format!("/api/orders/{id}"), Some(json!({"quantity": "2.5"})));
    assert_eq!((s, code(&e)), (422, "invalid_lot"), "{e}");
    assert_eq!(e["error"]["message"].as_str(), Some("quantity 2.5 is not a multiple of the lot 1 (nearest on it: 2 or 3)"), "{e}");
    let unchanged = dm.ok("GET", &format!("/api/orders/{id}"), None);
    assert_eq!((dec(&unchanged["price"]), dec(&unchanged["quantity"])), (d("90"), d("1")), "a refused amend changed nothing");
}

/// An amend passes the checks a placement would on its new terms: the instrument's
/// `min_quantity` as well as its `max_quantity`.
#[test]
fn an_amend_cannot_shrink_an_order_below_the_instrument_minimum() {
    let dm = Daemon::start();
    let sym = format!("MQ{}", unique().to_uppercase());
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": sym, "tick": "0.01", "lot": "1", "min_quantity": "5", "max_quantity": "20"})));
    let u = dm.user("mq");
    dm.deposit(&u, "USD", "1000");
    let (s, e) = dm.place(&u, &sym, "buy", "3", Some("10"));
    assert_eq!((s, code(&e)), (422, "invalid_lot"), "{e}");
    let (s, o) = dm.place(&u, &sym, "buy", "5", Some("10"));
    assert_eq!(s, 201, "{o}");
    let id = o["order_id"].as_str().unwrap();
    let (s, e) = dm.req("PATCH", &format!("/api/orders/{id}"), Some(json!({"quantity": "1"})));
    assert_eq!((s, code(&e)), (422, "invalid_lot"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("below the minimum 5"), "{e}");
    let (s, e) = dm.req("PATCH", &format!("/api/orders/{id}"), Some(json!({"quantity": "25"})));
    assert_eq!(s, 422, "{e}");
    let amended = dm.ok("PATCH", &format!("/api/orders/{id}"), Some(json!({"quantity": "6"})));
    assert_eq!(amended["quantity"], "6");
    assert_eq!(dm.ok("GET", &format!("/api/orders/{id}"), None)["quantity"], "6", "refused amends changed nothing");
}

/// A retry with the same `client_order_id` answers the first order (200, as DESIGN.md
/// says); when that one was refused, `agt order place` tells the retry as it told the
/// refusal: nothing on stdout, the refusal's code and reason on stderr, exit 1, so that a
/// retrying script neither takes it for placed nor sees another error. A retry of an
/// accepted order prints that order and exits 0.
#[test]
fn a_retried_placement_of_a_refused_order_is_told_as_the_refusal() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("retry");
    dm.deposit(&u, "USD", "50");
    let place = |args: &[&str]| {
        let mut c = dm.cli();
        c.args(args).args(["order", "place", &u, &sym, "buy", "1", "100", "--client-id", "retry-7"]);
        let out = c.assert().code(1).get_output().clone();
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (first_out, first_err) = place(&[]);
    let reason = first_err.lines().next().unwrap().to_string();
    assert!(reason.starts_with("error: insufficient_funds: ") && first_out.is_empty(), "{first_out}{first_err}");
    for args in [&[][..], &["-o", "json"]] {
        let (out, err) = place(args);
        assert!(out.is_empty(), "a refused order is not printed as if placed ({args:?}): {out}");
        assert_eq!(err.lines().next(), Some(reason.as_str()), "the refusal's code and reason, as the first try said them: {err}");
        assert!(err.contains("--client-id") && err.contains("new"), "says why and what to do: {err}");
    }
    // The HTTP API answers the first order, rejected as it is stored (DESIGN.md §4).
    let body = json!({"user_id": u, "symbol": sym, "side": "buy", "quantity": "1", "price": "100", "client_order_id": "retry-7"});
    let (status, order) = dm.req("POST", "/api/orders", Some(body));
    assert_eq!((status, order["status"].as_str()), (200, Some("rejected")), "{order}");
    assert!(order["reject_reason"].as_str().unwrap().starts_with("insufficient_funds: "), "{order}");

    let accepted = |c: &mut assert_cmd::Command| {
        let out = c.args(["-o", "json", "order", "place", &u, &sym, "buy", "1", "10", "--client-id", "retry-8"]).assert().success();
        serde_json::from_slice::<Value>(&out.get_output().stdout).unwrap()
    };
    let first = accepted(&mut dm.cli());
    let again = accepted(&mut dm.cli());
    assert_eq!((again["order_id"].clone(), again["status"].as_str()), (first["order_id"].clone(), Some("new")), "{again}");
}

/// Listing by a symbol the market does not list is 404 `unknown_symbol`, as listing by an
/// unknown user is: a typo must not read as "no orders". A blank filter is refused.
#[test]
fn orders_listed_by_an_unknown_symbol_are_refused() {
    let dm = Daemon::start();
    for q in ["aapl", "NOPE"] {
        let (s, e) = dm.req("GET", &format!("/api/orders?symbol={q}"), None);
        assert_eq!((s, code(&e)), (404, "unknown_symbol"), "{q}: {e}");
    }
    dm.cli().args(["order", "list", "--symbol", "aapl"]).assert().code(1).stderr(predicates::str::contains("unknown_symbol"));
    assert_eq!(dm.ok("GET", "/api/orders?symbol=AAPL", None), json!([]));
    // A blank filter (a script's unset variable) is refused, not read as "every".
    for (q, want) in [
        ("symbol=", "invalid_symbol"),
        ("symbol=%20", "invalid_symbol"),
        ("user_id=", "invalid_user"),
        ("user_id=&symbol=AAPL", "invalid_user"),
    ] {
        let (s, e) = dm.req("GET", &format!("/api/orders?{q}"), None);
        assert_eq!((s, code(&e)), (400, want), "{q}: {e}");
    }
    for flag in ["--symbol", "--user"] {
        dm.cli().args(["order", "list", flag, ""]).assert().code(2).stderr(predicates::str::contains(format!("{flag} cannot be empty")));
    }
}

/// Every amount of an order is answered as a person writes it, however many fills made
/// it: a sum of fills kept the larger scale of its terms (five fills of 0.2 answered
/// `"filled_quantity":"1.0"`), on the market order that took them and on its maker.
#[test]
fn an_order_filled_in_pieces_answers_its_amounts_normalized() {
    let dm = Daemon::start();
    let sym = dm.symbol("0.01", "0.0001");
    let (buyer, seller) = (dm.user("buyer"), dm.user("seller"));
    dm.deposit(&buyer, "USD", "100000");
    dm.deposit(&seller, &sym, "10");
    for p in ["100", "100.5", "101", "101.5", "102"] {
        assert_eq!(dm.place(&seller, &sym, "sell", "0.2", Some(p)).0, 201);
    }
    let (s, o) = dm.place(&buyer, &sym, "buy", "1", None);
    assert_eq!(s, 201, "{o}");
    let amounts = |o: &Value| {
        let fills: Vec<&str> = o["fills"].as_array().unwrap().iter().map(|f| f["quantity"].as_str().unwrap()).collect();
        let text = |k: &str| o[k].as_str().unwrap_or("null").to_string();
        (text("quantity"), text("filled_quantity"), text("remaining_quantity"), text("average_price"), fills.join(" "))
    };
    let want = |q: &str, filled: &str, left: &str, avg: &str, fills: &str| {
        (q.to_string(), filled.to_string(), left.to_string(), avg.to_string(), fills.to_string())
    };
    assert_eq!(amounts(&o), want("1", "1", "0", "101", "0.2 0.2 0.2 0.2 0.2"), "{o}");
    let id = o["order_id"].as_str().unwrap();
    assert_eq!(amounts(&dm.ok("GET", &format!("/api/orders/{id}"), None)), amounts(&o), "read back as answered");

    // A maker filled by five market orders of 0.2.
    let (_, maker) = dm.place(&seller, &sym, "sell", "2", Some("103"));
    for _ in 0..5 {
        let (s, o) = dm.place(&buyer, &sym, "buy", "0.2", None);
        assert_eq!((s, amounts(&o)), (201, want("0.2", "0.2", "0", "103", "0.2")), "{o}");
    }
    let path = format!("/api/orders/{}", maker["order_id"].as_str().unwrap());
    let maker = dm.ok("GET", &path, None);
    assert_eq!(amounts(&maker), want("2", "1", "1", "103", "0.2 0.2 0.2 0.2 0.2"), "{maker}");
    let mut dm = dm;
    dm.restart();
    assert_eq!(amounts(&dm.ok("GET", &path, None)), amounts(&maker), "and after a restart");
}

/// A position whose buys come to more than a decimal holds (~7.9 × 10^28) in all. No
/// trade's notional can (each is at most the USD supply, 10^27), but buys add up: the
/// buyer's USD deposited again each time the seller withdraws it, eighty buys of 1 at
/// 10^27 overflowed the position's cost, a panic in settlement that failed risk, trading
/// and orders, and again at every start, since the intake journal hands the same trade
/// back.
#[test]
fn a_position_bought_for_more_than_a_decimal_holds_keeps_trading_and_survives_a_restart() {
    // The shipped instruments trade USD on a 0.01 tick and a 0.0001 lot (6 places), which
    // caps USD at 10^22: coarse ones let the supply reach 10^27.
    let coarse: String = ["AAPL", "MSFT", "BTC-USD", "ETH-USD"]
        .iter()
        .map(|s| format!("[[symbols]]\nsymbol = \"{s}\"\ntick = \"1\"\nlot = \"1\"\n"))
        .collect();
    let mut dm = Daemon::with_config(&format!(
        "{coarse}\n[risk]\nmax_order_notional = \"1e27\"\nmax_order_quantity = \"1e27\"\nmax_orders_per_second = 100000\n"
    ));
    let price = "1000000000000000000000000000";
    let sym = dm.symbol("1000000000000000000000000", "1");
    let (buyer, seller) = (dm.user("buyer"), dm.user("seller"));
    dm.deposit(&seller, &sym, "100");
    for i in 0..85 {
        dm.deposit(&buyer, "USD", price);
        let (s, sell) = dm.place(&seller, &sym, "sell", "1", Some(price));
        assert_eq!((s, sell["status"].as_str()), (201, Some("new")), "sell {i}: {sell}");
        let (s, buy) = dm.place(&buyer, &sym, "buy", "1", Some(price));
        assert_eq!((s, buy["status"].as_str()), (201, Some("filled")), "buy {i}: {buy}");
        let (s, v) = dm.req("POST", &format!("/api/users/{seller}/withdrawals"), Some(json!({"asset": "USD", "amount": price})));
        assert_eq!(s, 200, "withdrawal {i}: {v}");
    }
    let check = |dm: &Daemon| {
        let a = dm.ok("GET", &format!("/api/users/{buyer}/account"), None);
        assert_eq!((dec(&a["positions"][0]["quantity"]), dec(&a["positions"][0]["average_price"])), (d("85"), d(price)), "{a}");
        assert_eq!(bal(dm, &seller, &sym), (d("15"), d("0"), d("15")));
        assert_eq!(bal(dm, &buyer, &sym), (d("85"), d("0"), d("85")));
        assert_eq!(bal(dm, &buyer, "USD"), (d("0"), d("0"), d("0")));
    };
    check(&dm);
    dm.kill9();
    dm.spawn();
    check(&dm);
    dm.deposit(&buyer, "USD", price);
    assert_eq!(dm.place(&seller, &sym, "sell", "1", Some(price)).0, 201);
    let (s, buy) = dm.place(&buyer, &sym, "buy", "1", Some(price));
    assert_eq!((s, buy["status"].as_str()), (201, Some("filled")), "after the restart: {buy}");
}
