//! Accounts and risk over HTTP: deposits and withdrawals, who may read an account, limits
//! (global through config, per user through risk), halts, and the holds open orders take.

use crate::util::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// (total, held, available) of one asset, zeros when the account does not list it.
fn bal(dm: &Daemon, user: &str, asset: &str) -> (Decimal, Decimal, Decimal) {
    let a = dm.ok("GET", &format!("/api/users/{user}/account"), None);
    a["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == asset)
        .map(|b| (dec(&b["total"]), dec(&b["held"]), dec(&b["available"])))
        .unwrap_or_default()
}

fn events_of(dm: &Daemon, kind: &str) -> Vec<Value> {
    let (_, body) = dm.req("GET", &format!("/api/events?since=0&type={kind}"), None);
    match body {
        Value::String(s) => s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
        v => vec![v],
    }
}

#[test]
fn deposits_withdrawals_and_who_may_read_an_account() {
    let dm = Daemon::start();
    let u = dm.user("acct");
    let name = dm.ok("GET", &format!("/api/users/{u}"), None)["username"].as_str().unwrap().to_string();
    // By username too; the answer is the account after.
    let a = dm.ok("POST", &format!("/api/users/{name}/deposits"), Some(json!({"asset": "USD", "amount": 100.25})));
    assert_eq!(a["user_id"], u.as_str());
    assert_eq!(a["balances"][0], json!({"asset": "USD", "total": "100.25", "held": "0", "available": "100.25"}));
    dm.deposit(&u, "AAPL", "3");
    let a = dm.ok("POST", &format!("/api/users/{u}/withdrawals"), Some(json!({"asset": "USD", "amount": "0.25"})));
    let assets: Vec<&str> = a["balances"].as_array().unwrap().iter().map(|b| b["asset"].as_str().unwrap()).collect();
    assert_eq!(assets, ["AAPL", "USD"], "balances sorted by asset");
    assert_eq!(bal(&dm, &u, "USD"), (d("100"), d("0"), d("100")));

    for (path, body, status, want) in [
        ("withdrawals", json!({"asset": "USD", "amount": "100.01"}), 422, "insufficient_funds"),
        ("withdrawals", json!({"asset": "GOLD", "amount": "1"}), 400, "unknown_asset"),
        ("deposits", json!({"asset": "USD", "amount": "0"}), 400, "invalid_amount"),
        ("deposits", json!({"asset": "USD", "amount": "-1"}), 400, "invalid_amount"),
        ("deposits", json!({"asset": "usd", "amount": "1"}), 400, "invalid_asset"),
        ("deposits", json!({"asset": "", "amount": "1"}), 400, "invalid_asset"),
        ("deposits", json!({"asset": "USD'; DROP TABLE balances;--", "amount": "1"}), 400, "invalid_asset"),
    ] {
        let (s, e) = dm.req("POST", &format!("/api/users/{u}/{path}"), Some(body.clone()));
        assert_eq!((s, code(&e)), (status, want), "{path} {body}: {e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    for body in ["{", "", "[]", r#"{"asset": "USD"}"#, r#"{"asset": "USD", "amount": "abc"}"#, r#"{"asset": 5, "amount": "1"}"#] {
        let (s, e) = dm.raw("POST", &format!("/api/users/{u}/deposits"), body, &[]);
        assert_eq!(s, 400, "{body}: {e}");
    }
    assert_eq!(bal(&dm, &u, "USD"), (d("100"), d("0"), d("100")), "refused requests moved money");
    assert_eq!(dm.req("POST", "/api/users/nobody-x/deposits", Some(json!({"asset": "USD", "amount": "1"}))).0, 404);
    assert_eq!(dm.req("GET", "/api/users/nobody-x/account", None).0, 404);
    // An instrument's name is not an asset: funds under it could never trade.
    let (s, e) = dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "BTC-USD", "amount": "1"})));
    assert_eq!((s, code(&e)), (422, "invalid_asset"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("deposit BTC or USD"), "{e}");
    dm.deposit(&u, "BTC", "1");
    let fresh = dm.user("empty");
    assert_eq!(dm.ok("GET", &format!("/api/users/{fresh}/account"), None), json!({"user_id": fresh, "balances": [], "positions": []}));

    let deposited = events_of(&dm, "ACCOUNT_DEPOSITED");
    assert!(deposited.iter().any(|e| e["data"] == json!({"user_id": u, "asset": "AAPL", "amount": "3", "total": "3"})), "{deposited:?}");
    assert!(events_of(&dm, "ACCOUNT_WITHDRAWN").iter().any(|e| e["data"]["total"] == "100"));

    // Over TCP: viewers read any account, a trader only its own; only admins move money.
    let viewer = dm.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    let trader = dm.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": fresh})))["token"].as_str().unwrap().to_string();
    assert_eq!(dm.tcp("GET", &format!("/api/users/{u}/account"), None, Some(&viewer)).0, 200);
    assert_eq!(dm.tcp("GET", &format!("/api/users/{fresh}/account"), None, Some(&trader)).0, 200);
    assert_eq!(dm.tcp("GET", &format!("/api/users/{u}/account"), None, Some(&trader)).0, 404);
    assert_eq!(dm.tcp("GET", &format!("/api/users/{u}/account"), None, None).0, 401);
    let dep = json!({"asset": "USD", "amount": "1"});
    assert_eq!(dm.tcp("POST", &format!("/api/users/{u}/deposits"), Some(dep.clone()), Some(&viewer)).0, 403);
    assert_eq!(dm.tcp("POST", &format!("/api/users/{fresh}/withdrawals"), Some(dep), Some(&trader)).0, 403);
}

/// An amount is written as a JSON number is, in a string too: `"+5"`, `"5."` and `".5"`
/// are refused by deposits, withdrawals and orders alike, as `5.` is in a body.
#[test]
fn an_amount_with_a_sign_or_a_bare_point_is_refused_everywhere() {
    let dm = Daemon::start();
    let u = dm.user("signs");
    dm.deposit(&u, "USD", "100");
    for amount in ["+5", "5.", ".5", "+0.5e1"] {
        for path in ["deposits", "withdrawals"] {
            let (s, e) = dm.req("POST", &format!("/api/users/{u}/{path}"), Some(json!({"asset": "USD", "amount": amount})));
            assert_eq!((s, code(&e)), (400, "invalid_request"), "{path} {amount}: {e}");
            assert!(e["error"]["message"].as_str().unwrap().contains("amount: "), "{e}");
        }
        let (s, e) = dm.place(&u, "AAPL", "buy", "1", Some(amount));
        assert_eq!(s, 400, "price {amount}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("price: "), "{e}");
        let (s, e) = dm.place(&u, "AAPL", "buy", amount, Some("1"));
        assert_eq!(s, 400, "quantity {amount}: {e}");
    }
    let (s, e) = dm.raw("POST", &format!("/api/users/{u}/deposits"), r#"{"asset": "USD", "amount": 5.}"#, &[]);
    assert_eq!((s, code(&e)), (400, "invalid_json"), "a JSON number: {e}");
    assert_eq!(bal(&dm, &u, "USD"), (d("100"), d("0"), d("100")), "refused amounts moved money");
    assert_eq!(dm.req("GET", &format!("/api/orders?user_id={u}&status=all"), None).1, json!([]), "refused orders were stored");
    // The CLI's arguments go the same way.
    dm.cli().args(["user", "deposit", &u, "USD", "+5"]).assert().code(1).stderr(predicates::str::contains("without a plus sign"));
    dm.cli()
        .args(["order", "place", &u, "AAPL", "buy", "1", "5."])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("a digit on each side"));
}

/// A deposit is of an asset some listed instrument trades (or USD): another is refused
/// with the list of those that are, until an instrument for it is listed. What an account
/// holds can still be withdrawn.
#[test]
fn a_deposit_in_an_asset_no_instrument_trades_is_refused() {
    let dm = Daemon::start();
    let u = dm.user("coins");
    let (s, e) = dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "ZZZ", "amount": "5"})));
    assert_eq!((s, code(&e)), (400, "unknown_asset"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    for traded in ["AAPL", "BTC", "ETH", "MSFT", "USD"] {
        assert!(message.contains(traded), "{traded} missing from {message}");
    }
    assert!(message.contains("agt symbol add ZZZ"), "{message}");
    dm.cli().args(["user", "deposit", &u, "ZZZ", "5"]).assert().code(1).stderr(predicates::str::contains("unknown_asset"));
    assert_eq!(bal(&dm, &u, "ZZZ"), Default::default());
    // Listed later, it takes deposits, as the base of a `-USD` symbol does.
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": "ZZZ", "tick": "0.01", "lot": "1"})));
    dm.deposit(&u, "ZZZ", "5");
    let (s, e) = dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "QQ", "amount": "5"})));
    assert_eq!((s, code(&e)), (400, "unknown_asset"), "{e}");
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": "QQ-USD", "tick": "0.01", "lot": "1"})));
    dm.deposit(&u, "QQ", "5");
    assert_eq!(bal(&dm, &u, "QQ"), (d("5"), d("0"), d("5")));
    dm.ok("POST", &format!("/api/users/{u}/withdrawals"), Some(json!({"asset": "QQ", "amount": "5"})));
}

/// A withdrawal of an asset no listed instrument trades is refused as a deposit of it is
/// (400 `unknown_asset`, where it was 422 `insufficient_funds`, "only 0 is available"),
/// unless the account holds some: a balance whose instrument is gone (here deleted from
/// `market.db`, as a restore of an older one would lose it; agt never delists) still
/// leaves, and only the reasons of a withdrawal of it are its own.
#[test]
fn a_withdrawal_of_an_asset_no_instrument_trades_is_refused_unless_the_account_holds_it() {
    let mut dm = Daemon::start();
    let u = dm.user("untraded");
    let withdraw = |dm: &Daemon, asset: &str, amount: &str| {
        dm.req("POST", &format!("/api/users/{u}/withdrawals"), Some(json!({"asset": asset, "amount": amount})))
    };
    let (s, e) = withdraw(&dm, "ZZZ", "5");
    assert_eq!((s, code(&e)), (400, "unknown_asset"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("no listed instrument trades ZZZ and the account holds none of it"), "{message}");
    for traded in ["AAPL", "BTC", "USD"] {
        assert!(message.contains(traded), "{traded} missing from {message}");
    }
    dm.cli().args(["user", "withdraw", &u, "ZZZ", "5"]).assert().code(1).stderr(predicates::str::contains("unknown_asset"));
    let (s, e) = withdraw(&dm, "BTC-USD", "1");
    assert_eq!((s, code(&e)), (422, "invalid_asset"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("withdraw BTC or USD instead"), "{e}");
    // A listed asset the account lacks is still its own reason.
    let (s, e) = withdraw(&dm, "AAPL", "1");
    assert_eq!((s, code(&e)), (422, "insufficient_funds"), "{e}");

    let sym = format!("GONE{}", unique().to_uppercase());
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": sym, "tick": "0.01", "lot": "1"})));
    dm.deposit(&u, &sym, "5");
    dm.stop();
    let market = rusqlite::Connection::open(dm.path().join("data/market.db")).unwrap();
    assert_eq!(market.execute("DELETE FROM instruments WHERE symbol = ?1", [&sym]).unwrap(), 1);
    drop(market);
    dm.spawn();
    let (s, e) = dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": sym, "amount": "1"})));
    assert_eq!((s, code(&e)), (400, "unknown_asset"), "unlisted, it takes no deposits: {e}");
    let (s, e) = withdraw(&dm, &sym, "6");
    assert_eq!((s, code(&e)), (422, "insufficient_funds"), "held: more than there is is its own reason: {e}");
    dm.ok("POST", &format!("/api/users/{u}/withdrawals"), Some(json!({"asset": sym, "amount": "2"})));
    dm.cli().args(["user", "withdraw", &u, &sym, "3"]).assert().success();
    assert_eq!(bal(&dm, &u, &sym).0, d("0"));
    let (s, e) = withdraw(&dm, &sym, "1");
    assert_eq!((s, code(&e)), (400, "unknown_asset"), "none left: {e}");
}

#[test]
fn limits_global_through_config_and_per_user_through_risk() {
    let dm = Daemon::start();
    let g = dm.ok("GET", "/api/risk/limits", None);
    assert_eq!(g["max_open_orders"], 100);
    assert_eq!(g["price_band_pct"], "10");
    assert_eq!(g["allow_short"], false);
    let g = dm.ok("PUT", "/api/risk/limits", Some(json!({"max_open_orders": 2, "max_order_quantity": "50"})));
    assert_eq!((g["max_open_orders"].clone(), g["max_order_quantity"].clone()), (json!(2), json!("50")));
    assert_eq!(dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 2, "global limits are config");
    for (body, want) in [
        (json!({}), "invalid_request"),
        (json!({"max_open_order": 3}), "invalid_limit"),
        (json!({"max_open_orders": 0}), "invalid_limit"),
        (json!({"max_open_orders": "many"}), "invalid_limit"),
        (json!({"price_band_pct": "-1"}), "invalid_limit"),
        (json!([1]), "invalid_request"),
    ] {
        let (s, e) = dm.req("PUT", "/api/risk/limits", Some(body.clone()));
        assert_eq!((s, code(&e)), (400, want), "{body}: {e}");
    }
    assert_eq!(dm.raw("PUT", "/api/risk/limits", "{{", &[]).0, 400);
    // Refused in the words `agt config set` uses, and a global `default` says why.
    let (_, e) = dm.req("PUT", "/api/risk/limits", Some(json!({"max_open_orders": "many"})));
    assert!(e["error"]["message"].as_str().unwrap().contains("expected a whole number >= 1"), "{e}");
    dm.cli()
        .args(["risk", "set", "max_open_orders", "default"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("a global limit always has one"));

    let sym = dm.symbol("0.01", "1");
    let (u, v) = (dm.user("lim"), dm.user("other"));
    dm.deposit(&u, "USD", "1000");
    dm.deposit(&v, "USD", "1000");
    let mine = dm.ok("PUT", &format!("/api/risk/limits?user_id={u}"), Some(json!({"max_open_orders": 3})));
    assert_eq!((mine["max_open_orders"].clone(), mine["max_order_quantity"].clone()), (json!(3), json!("50")), "own over global");
    assert_eq!(dm.ok("GET", &format!("/api/risk/limits?user_id={u}"), None)["max_open_orders"], 3);
    assert_eq!(dm.ok("GET", &format!("/api/risk/limits?user_id={v}"), None)["max_open_orders"], 2);
    assert_eq!(dm.req("PUT", "/api/risk/limits?user_id=nobody-x", Some(json!({"max_open_orders": 3}))).0, 404);
    // A user's limit takes what `PUT /api/config` takes (a number or its text), and is
    // refused in config's words, never a Rust type's.
    let v_limits = dm.ok("PUT", &format!("/api/risk/limits?user_id={v}"), Some(json!({"max_open_orders": "5", "allow_short": "yes"})));
    assert_eq!((v_limits["max_open_orders"].clone(), v_limits["allow_short"].clone()), (json!(5), json!(true)));
    for bad in [json!({"max_open_orders": "5.5"}), json!({"max_open_orders": "many"}), json!({"max_orders_per_second": -1})] {
        let (s, e) = dm.req("PUT", &format!("/api/risk/limits?user_id={v}"), Some(bad.clone()));
        let message = e["error"]["message"].as_str().unwrap_or("");
        assert_eq!((s, code(&e)), (400, "invalid_limit"), "{bad}: {e}");
        assert!(message.contains("expected a whole number") && !message.contains("u32"), "{bad}: {message}");
    }
    // `"default"` drops a user's own value, as null does (and as the CLI's word).
    let v_limits = dm.ok("PUT", &format!("/api/risk/limits?user_id={v}"), Some(json!({"max_open_orders": "default", "allow_short": null})));
    assert_eq!((v_limits["max_open_orders"].clone(), v_limits["allow_short"].clone()), (json!(2), json!(false)));
    // A blank or misspelt user is refused: without a user the route changes every user's.
    let global = dm.ok("GET", "/api/risk/limits", None);
    for (query, code_) in [("?user_id=", "invalid_user"), ("?user_id=%20", "invalid_user"), ("?userid=x", "invalid_query")] {
        let (s, e) = dm.req("PUT", &format!("/api/risk/limits{query}"), Some(json!({"max_open_orders": 1})));
        assert_eq!((s, code(&e)), (400, code_), "{query}: {e}");
    }
    // The CLI refuses an empty --user itself, as a usage error.
    dm.cli()
        .args(["risk", "set", "max_open_orders", "1", "--user", ""])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--user cannot be empty"));
    assert_eq!(dm.ok("GET", "/api/risk/limits", None), global, "the global limits are as they were");
    for p in ["1.00", "1.01", "1.02"] {
        assert_eq!(dm.place(&u, &sym, "buy", "1", Some(p)).0, 201);
    }
    let (s, e) = dm.place(&u, &sym, "buy", "1", Some("1.03"));
    assert_eq!((s, code(&e)), (422, "max_open_orders"), "{e}");
    for p in ["1.00", "1.01"] {
        assert_eq!(dm.place(&v, &sym, "buy", "1", Some(p)).0, 201);
    }
    assert_eq!(code(&dm.place(&v, &sym, "buy", "1", Some("1.02")).1), "max_open_orders");
    let (s, e) = dm.place(&u, &sym, "sell", "51", Some("1"));
    assert_eq!((s, code(&e)), (422, "max_order_quantity"), "{e}");
    let changed = events_of(&dm, "RISK_LIMIT_CHANGED");
    assert!(changed.iter().any(|e| e["data"]["user_id"] == u.as_str()), "{changed:?}");

    // The CLI's way, and a restart keeps the user's limit.
    dm.cli().args(["risk", "set", "max_order_notional", "5", "--user", &u]).assert().success();
    let mut dm = dm;
    dm.restart();
    let l = dm.ok("GET", &format!("/api/risk/limits?user_id={u}"), None);
    assert_eq!((l["max_open_orders"].clone(), l["max_order_notional"].clone()), (json!(3), json!("5")));
    // The CLI sends a decimal as the digits typed, not through a float.
    dm.cli().args(["risk", "set", "max_order_notional", "12345678.123456789012", "--user", &u]).assert().success();
    assert_eq!(dm.ok("GET", &format!("/api/risk/limits?user_id={u}"), None)["max_order_notional"], "12345678.123456789012");
    // A user's own value goes with null (the CLI's `default`): the global one applies again.
    let l = dm.ok("PUT", &format!("/api/risk/limits?user_id={u}"), Some(json!({"max_open_orders": null})));
    assert_eq!((l["max_open_orders"].clone(), l["max_order_notional"].clone()), (json!(2), json!("12345678.123456789012")));
    dm.cli().args(["risk", "set", "max_order_notional", "default", "--user", &u]).assert().success();
    assert_eq!(dm.ok("GET", &format!("/api/risk/limits?user_id={u}"), None), dm.ok("GET", "/api/risk/limits", None));
    let (s, e) = dm.req("PUT", "/api/risk/limits", Some(json!({"max_open_orders": null})));
    assert_eq!((s, code(&e)), (400, "invalid_limit"), "a global limit needs a value: {e}");
    let viewer = dm.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    assert_eq!(dm.tcp("GET", "/api/risk/limits", None, Some(&viewer)).0, 200);
    assert_eq!(dm.tcp("PUT", "/api/risk/limits", Some(json!({"max_open_orders": 9})), Some(&viewer)).0, 403);
}

/// No more than 10^27 of an asset may be deposited across all accounts, so that every
/// trade's settlement fits in a decimal: a deposit near the decimal limit once let a
/// filled order fail to settle, failing risk, trading and orders at every start.
/// `agt risk set allow_short` reads a yes/no as `agt config set` does, globally and for
/// one user, and refuses a typo with what it accepts.
#[test]
fn allow_short_reads_yes_and_no_as_config_does() {
    let dm = Daemon::start();
    let u = dm.user("shorty");
    let per_user = || dm.ok("GET", &format!("/api/risk/limits?user_id={u}"), None)["allow_short"].clone();
    for (word, want) in [("True", true), ("off", false), ("YES", true), ("0", false)] {
        dm.cli().args(["risk", "set", "allow_short", word, "--user", &u]).assert().success();
        assert_eq!(per_user(), want, "--user, {word}");
        dm.cli().args(["risk", "set", "allow_short", word]).assert().success();
        assert_eq!(dm.ok("GET", "/api/risk/limits", None)["allow_short"], want, "global, {word}");
        dm.cli().args(["config", "set", "risk.allow_short", word]).assert().success();
        assert_eq!(dm.ok("GET", "/api/config", None)["risk"]["allow_short"], want, "config set, {word}");
    }
    for args in [vec!["risk", "set", "allow_short", "ture", "--user", &u], vec!["risk", "set", "allow_short", "2"]] {
        let out = dm.cli().args(&args).assert().code(1).get_output().stderr.clone();
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains("true or false"), "{args:?}: {err}");
    }
    assert_eq!(per_user(), false, "a refused value changed nothing");
}

/// With short selling on, a short seller cannot walk off with the proceeds: while its
/// account owes an asset, `agt user withdraw` of anything fails (exit 1, 422
/// `insufficient_funds`) saying what it owes and how to stop owing, and moves nothing;
/// once it has bought the asset back, it withdraws as before.
#[test]
fn a_short_seller_withdraws_nothing_until_it_buys_back() {
    let dm = Daemon::start();
    let ok = |args: &[&str]| {
        let out = dm.cli().args(["-o", "json"]).args(args).assert().success().get_output().stdout.clone();
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    let refused = |args: &[&str]| {
        let out = dm.cli().args(args).assert().code(1).get_output().stderr.clone();
        String::from_utf8_lossy(&out).into_owned()
    };
    ok(&["config", "set", "risk.allow_short", "true"]);
    ok(&["symbol", "add", "SHRT", "--tick", "0.01", "--lot", "1"]);
    ok(&["symbol", "add", "OTHR", "--tick", "0.01", "--lot", "1"]);
    for name in ["bob", "sam"] {
        ok(&["user", "create", name, "--email", &format!("{name}@example.com")]);
    }
    ok(&["user", "deposit", "bob", "USD", "1000"]);
    ok(&["user", "deposit", "sam", "USD", "10"]);
    ok(&["user", "deposit", "sam", "OTHR", "4"]);
    let sam = ok(&["user", "get", "sam"])["user_id"].as_str().unwrap().to_string();

    // Sold short against a resting buy: sam owes 3 SHRT and holds 310 USD.
    assert_eq!(ok(&["order", "place", "bob", "SHRT", "buy", "3", "100"])["status"], "new");
    assert_eq!(ok(&["order", "place", "sam", "SHRT", "sell", "3", "100"])["status"], "filled");
    assert_eq!(bal(&dm, &sam, "SHRT").0, d("-3"));
    assert_eq!(bal(&dm, &sam, "USD"), (d("310"), d("0"), d("310")));
    let withdrawn = || events_of(&dm, "ACCOUNT_WITHDRAWN").len();
    let before = (withdrawn(), dm.ok("GET", &format!("/api/users/{sam}/account"), None));
    // The proceeds, its own 10 USD, an unrelated asset: all refused alike.
    for (asset, amount) in [("USD", "300"), ("USD", "10"), ("OTHR", "4"), ("SHRT", "1")] {
        let err = refused(&["user", "withdraw", "sam", asset, amount]);
        assert!(err.contains("insufficient_funds"), "{asset}: {err}");
        let says = format!(
            "cannot withdraw {amount} {asset}: the account owes 3 SHRT from short sales: buy it back or deposit it before withdrawing"
        );
        assert!(err.contains(&says), "{asset}: {err}");
    }
    assert_eq!(before, (withdrawn(), dm.ok("GET", &format!("/api/users/{sam}/account"), None)), "a refusal moved or announced something");
    // Audit keeps each attempt and its refusal.
    wait_until("the refusals to be audited", std::time::Duration::from_secs(10), || {
        let records = dm.ok("GET", "/api/audit?limit=1000", None);
        let refusals = records
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "POST /api/users/sam/withdrawals" && r["detail"]["error"] == "insufficient_funds")
            .count();
        (refusals == 4).then_some(())
    });

    // Bought back: withdrawals work again, of what is available.
    assert_eq!(ok(&["order", "place", "bob", "SHRT", "sell", "3", "100"])["status"], "new");
    assert_eq!(ok(&["order", "place", "sam", "SHRT", "buy", "3", "100"])["status"], "filled");
    let account = ok(&["user", "withdraw", "sam", "USD", "10"]);
    assert!(account["balances"].as_array().unwrap().iter().any(|b| b["asset"] == "USD" && b["total"] == "0"), "{account}");
    ok(&["user", "withdraw", "sam", "OTHR", "4"]);
    let err = refused(&["user", "withdraw", "sam", "USD", "1"]);
    assert!(err.contains("only 0 is available") && !err.contains("owes"), "{err}");
    assert_eq!(withdrawn(), before.0 + 2);
}

#[test]
fn deposits_stop_at_the_supply_every_trade_can_settle() {
    let mut dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("100000", "1000");
    let (s, e) =
        dm.req("POST", &format!("/api/users/{buyer}/deposits"), Some(json!({"asset": sym, "amount": "79228162514264337593543950000"})));
    assert_eq!((s, code(&e)), (422, "max_supply"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains(&format!("already hold 1000 {sym}")), "{e}");
    dm.deposit(&buyer, &sym, "999999999999999999999999000");
    let (s, e) = dm.req("POST", &format!("/api/users/{seller}/deposits"), Some(json!({"asset": sym, "amount": "0.5"})));
    assert_eq!((s, code(&e)), (422, "max_supply"), "one over, whoever deposits it: {e}");
    dm.cli().args(["user", "deposit", &seller, &sym, "1"]).assert().code(1).stderr(predicates::str::contains("10^27"));
    // At the cap, a trade still settles, and the services stay up across a restart.
    dm.place(&seller, &sym, "sell", "1000", Some("95.00"));
    let (s, o) = dm.place(&buyer, &sym, "buy", "1000", Some("95.00"));
    assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    dm.restart();
    assert_eq!(bal(&dm, &buyer, &sym).0, d("1000000000000000000000000000"));
    assert_eq!(bal(&dm, &buyer, "USD").0, d("5000"));
    assert_eq!(dm.ok("GET", "/health", None)["status"], "healthy");
    // A withdrawal makes room again.
    dm.ok("POST", &format!("/api/users/{buyer}/withdrawals"), Some(json!({"asset": sym, "amount": "1"})));
    dm.deposit(&seller, &sym, "1");
}

/// A market buy spends at most max_order_notional, whatever the book asks: its notional
/// can only be estimated before it trades (at the last price, or not at all before the
/// first trade).
#[test]
fn a_market_buy_stays_within_max_order_notional() {
    let dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("100000", "1000");
    dm.ok("PUT", &format!("/api/risk/limits?user_id={buyer}"), Some(json!({"max_order_notional": "1000"})));
    dm.place(&seller, &sym, "sell", "10", Some("150.00"));
    let (s, o) = dm.place(&buyer, &sym, "buy", "9", None);
    assert_eq!(s, 201, "{o}");
    assert_eq!(dec(&o["filled_quantity"]), d("6"), "6 × 150 fits in 1000, 7 would not: {o}");
    assert_eq!(bal(&dm, &buyer, "USD"), (d("99100"), d("0"), d("99100")), "nothing stays held");
    // With a last price (150), the estimate passes, and the book is dearer than it.
    dm.place(&buyer, &sym, "buy", "4", Some("150.00"));
    dm.place(&seller, &sym, "sell", "10", Some("165.00"));
    dm.ok("PUT", &format!("/api/risk/limits?user_id={buyer}"), Some(json!({"max_order_notional": "800"})));
    let (_, o) = dm.place(&buyer, &sym, "buy", "5", None);
    assert_eq!(dec(&o["filled_quantity"]), d("4"), "5 × 150 = 750 passes the estimate; 4 × 165 = 660 fits in 800, 5 would not: {o}");
    assert!(o["reject_reason"].as_str().unwrap().contains("max_order_notional"), "{o}");
    assert_eq!(bal(&dm, &buyer, "USD").0, d("97840"));
}

#[test]
fn a_short_sale_holds_what_there_is_and_settles_without_complaint() {
    let dm = Daemon::with_config("[risk]\nallow_short = true\n");
    let sym = dm.symbol("0.01", "1");
    let (short, buyer) = (dm.user("short"), dm.user("long"));
    dm.deposit(&short, &sym, "1");
    dm.deposit(&buyer, "USD", "1000");
    let (s, o) = dm.place(&short, &sym, "sell", "3", Some("10.00"));
    assert_eq!((s, o["status"].as_str()), (201, Some("new")), "{o}");
    let held = |u: &str, asset: &str| {
        let a = dm.ok("GET", &format!("/api/users/{u}/account"), None);
        let b = a["balances"].as_array().unwrap().iter().find(|b| b["asset"] == asset).cloned().unwrap_or_default();
        (dec(&b["total"]), dec(&b["held"]))
    };
    assert_eq!(held(&short, &sym), (1.into(), 1.into()), "it holds the one it has");
    assert_eq!(dm.place(&buyer, &sym, "buy", "2", Some("10.00")).0, 201);
    assert_eq!(held(&short, &sym), ((-1).into(), 0.into()), "short by one, holding nothing it has not");
    assert_eq!(held(&short, "USD").0, 20.into());
    assert!(!dm.log().contains("below its holds"), "a short sale is not an inconsistency: {}", dm.log());
}

#[test]
fn halts_resume_and_survive_a_restart() {
    let mut dm = Daemon::start();
    let (s1, s2) = (dm.symbol("0.01", "1"), dm.symbol("0.01", "1"));
    let u = dm.user("halt");
    dm.deposit(&u, "USD", "1000");
    let st = dm.ok("POST", "/api/risk/halt", Some(json!({"symbol": s1})));
    assert_eq!(st, json!({"halted": false, "halted_symbols": [s1]}));
    assert_eq!(code(&dm.place(&u, &s1, "buy", "1", Some("1")).1), "trading_halted");
    assert_eq!(dm.place(&u, &s2, "buy", "1", Some("1")).0, 201);
    // An empty body halts everything.
    let (s, st) = dm.raw("POST", "/api/risk/halt", "", &[]);
    assert_eq!((s, st["halted"].clone()), (200, json!(true)));
    dm.kill9();
    dm.spawn();
    assert_eq!(dm.ok("GET", "/api/risk/state", None), json!({"halted": true, "halted_symbols": [s1]}));
    let (s, e) = dm.place(&u, &s2, "buy", "1", Some("1"));
    assert_eq!((s, code(&e)), (422, "trading_halted"));
    assert_eq!(dm.ok("POST", "/api/risk/resume", Some(json!({}))), json!({"halted": false, "halted_symbols": [s1]}));
    assert_eq!(code(&dm.place(&u, &s1, "buy", "1", Some("1")).1), "trading_halted", "resume without a symbol keeps symbol halts");
    dm.ok("POST", "/api/risk/resume", Some(json!({"symbol": s1})));
    assert_eq!(dm.place(&u, &s1, "buy", "1", Some("1")).0, 201);
    let (s, e) = dm.req("POST", "/api/risk/halt", Some(json!({"symbol": "bad symbol"})));
    assert_eq!((s, code(&e)), (400, "invalid_symbol"));
    assert_eq!(dm.raw("POST", "/api/risk/halt", "{nope", &[]).0, 400);
    dm.cli().args(["risk", "halt", &s1]).assert().success();
    let out = dm.cli().args(["risk", "state", "-o", "json"]).assert().success();
    let state: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(state["halted_symbols"], json!([s1]), "{state}");
    let changes = events_of(&dm, "TRADING_STATE_CHANGED");
    assert!(changes.iter().any(|e| e["data"]["action"] == "halt" && e["data"]["symbol"] == s1.as_str()), "{changes:?}");
    let viewer = dm.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    assert_eq!(dm.tcp("GET", "/api/risk/state", None, Some(&viewer)).0, 200);
    assert_eq!(dm.tcp("POST", "/api/risk/halt", None, Some(&viewer)).0, 403);
}

#[test]
fn holds_are_exactly_what_open_orders_need() {
    let dm = Daemon::start();
    let (sym, b, s) = dm.market_pair("1000", "10");
    dm.place(&b, &sym, "buy", "3", Some("10.00"));
    dm.place(&b, &sym, "buy", "2", Some("9.50"));
    let sell = dm.place(&s, &sym, "sell", "4", Some("11.00")).1;
    let holds = dm.ok("GET", &format!("/api/risk/holds?user_id={b}"), None);
    let mut amounts: Vec<Decimal> = holds.as_array().unwrap().iter().map(|h| dec(&h["amount"])).collect();
    amounts.sort();
    assert_eq!(amounts, [d("19"), d("30")]);
    assert_eq!(bal(&dm, &b, "USD"), (d("1000"), d("49"), d("951")));
    assert_eq!(bal(&dm, &s, &sym), (d("10"), d("4"), d("6")));
    // A sell crossing the first buy: fills at 10.00, the rest rests.
    let o = dm.place(&s, &sym, "sell", "5", Some("10.00")).1;
    assert_eq!(o["status"], "partially_filled", "{o}");
    assert_eq!(bal(&dm, &b, "USD"), (d("970"), d("19"), d("951")));
    assert_eq!(bal(&dm, &s, &sym), (d("7"), d("6"), d("1")));
    assert_eq!(bal(&dm, &s, "USD"), (d("30"), d("0"), d("30")));
    let all = dm.ok("GET", "/api/risk/holds", None);
    let held_by_s: Decimal = all.as_array().unwrap().iter().filter(|h| h["user_id"] == s.as_str()).map(|h| dec(&h["amount"])).sum();
    assert_eq!(held_by_s, d("6"));
    let p = dm.ok("GET", &format!("/api/users/{b}/account"), None)["positions"].clone();
    assert_eq!(p, json!([{"symbol": sym, "quantity": "3", "average_price": "10"}]));
    // Cancelling releases the hold; the price band now anchors at 10.00.
    dm.ok("DELETE", &format!("/api/orders/{}", sell["order_id"].as_str().unwrap()), None);
    assert_eq!(bal(&dm, &s, &sym), (d("7"), d("2"), d("5")));
    let (st, e) = dm.place(&b, &sym, "buy", "1", Some("11.01"));
    assert_eq!((st, code(&e)), (422, "price_band"), "{e}");
}

/// A trade must not round a balance. A lot of 0.001 bought onto a balance of
/// 99999999999999999999999999.9 needs 29 digits: the buyer's balance stayed as it was and
/// the seller's 0.001 was gone. Deposits and orders now keep each asset's supply within 28
/// digits at the finest decimal places its trades move it by.
#[test]
fn supply_leaves_room_for_the_grid_so_trades_settle_exactly() {
    let dm = Daemon::start();
    let (buyer, seller) = (dm.user("big"), dm.user("small"));
    let big = "99999999999999999999999999.9";
    // A deposit that leaves no room for the lot's places is refused.
    let fine = dm.symbol("0.01", "0.001");
    dm.deposit(&seller, &fine, "1");
    let (s, e) = dm.req("POST", &format!("/api/users/{buyer}/deposits"), Some(json!({"asset": fine, "amount": big})));
    assert_eq!((s, code(&e)), (422, "max_supply"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 decimal places"), "{e}");
    // The total named is the one the deposit would make, not the one before it.
    assert!(
        message.contains(&format!("with this deposit of {big}")) && message.ends_with("deposit less, or in fewer decimal places"),
        "{e}"
    );
    // An instrument listed later with a finer lot would trade the asset at places its
    // supply has no room for: the listing is refused (before, it was listed and every
    // order of it refused, and deposits of the asset capped by its grid).
    let coarse = dm.symbol("0.01", "1");
    dm.deposit(&seller, &coarse, "1");
    dm.deposit(&buyer, &coarse, big);
    dm.deposit(&buyer, "USD", "10");
    let later = format!("{coarse}-USD");
    let (s, e) = dm.req("POST", "/api/symbols", Some(json!({"symbol": later, "tick": "0.01", "lot": "0.001"})));
    assert_eq!((s, code(&e)), (422, "max_supply"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{later} cannot be listed: its trades would move {coarse} by amounts of 3 decimal places")),
        "{e}"
    );
    assert!(message.contains("100000000000000000000000000.9") && message.ends_with("list it with a coarser tick or lot"), "{e}");
    assert_eq!(dm.req("GET", &format!("/api/symbols/{later}"), None).0, 404);
    // The same from the CLI: exit 1 with the message.
    dm.cli()
        .args(["symbol", "add", &later, "--tick", "0.01", "--lot", "0.001"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("coarser tick or lot"));
    // USD too: the notional's places are the tick's and the lot's together.
    let rich = dm.user("rich");
    dm.deposit(&rich, "USD", "1000000000000");
    let other = format!("{coarse}X-USD");
    let (s, e) = dm.req("POST", "/api/symbols", Some(json!({"symbol": other, "tick": "0.01", "lot": "0.00000000000000001"})));
    assert_eq!((s, code(&e)), (422, "max_supply"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("move USD by amounts of 19 decimal places"), "{e}");
    // A grid with room lists, and an existing symbol is still a conflict, not a grid check.
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": later, "tick": "0.01", "lot": "1"})));
    let (s, e) = dm.req("POST", "/api/symbols", Some(json!({"symbol": later, "tick": "0.01", "lot": "0.001"})));
    assert_eq!((s, code(&e)), (409, "symbol_exists"), "{e}");
    assert_eq!(bal(&dm, &buyer, &coarse).0, d(big));
    assert_eq!(bal(&dm, &seller, &coarse).0, d("1"));
    // The coarse instrument still trades: its lot of 1 leaves the balance exact.
    dm.place(&seller, &coarse, "sell", "1", Some("1"));
    let (s, o) = dm.place(&buyer, &coarse, "buy", "1", Some("1"));
    assert_eq!((s, o["status"].as_str()), (201, Some("filled")), "{o}");
    assert_eq!(bal(&dm, &buyer, &coarse).0, d("100000000000000000000000000.9"));
    assert_eq!(bal(&dm, &seller, &coarse).0, d("0"));
    // A tick and a lot whose notional needs more than 28 places are refused at listing
    // (one tick of 1e-14 times one lot of 1e-15 settled as 0 USD).
    let (s, e) = dm.req(
        "POST",
        "/api/symbols",
        Some(json!({"symbol": format!("{coarse}Z"), "tick": "0.00000000000001", "lot": "0.000000000000001"})),
    );
    assert_eq!((s, code(&e)), (400, "invalid_lot"), "{e}");
}

/// `agt risk holds [--user U]` shows `GET /api/risk/holds` (the README sent users to
/// curl): every open order's hold, or one user's, by username as well as by id.
#[test]
fn cli_risk_holds_lists_every_users_or_one_users() {
    let dm = Daemon::start();
    let (sym, b, s) = dm.market_pair("1000", "10");
    let buy = dm.place(&b, &sym, "buy", "3", Some("10.00")).1;
    let sell = dm.place(&s, &sym, "sell", "4", Some("11.00")).1;
    let name = dm.ok("GET", &format!("/api/users/{b}"), None)["username"].as_str().unwrap().to_string();
    let json = |args: &[&str]| -> Value {
        serde_json::from_slice(&dm.cli().args(["-o", "json", "risk", "holds"]).args(args).assert().success().get_output().stdout).unwrap()
    };
    let theirs = json(&["--user", &name]);
    let [hold] = theirs.as_array().unwrap().as_slice() else { panic!("one hold: {theirs}") };
    assert_eq!((&hold["order_id"], hold["user_id"].as_str(), hold["asset"].as_str()), (&buy["order_id"], Some(b.as_str()), Some("USD")));
    assert_eq!(dec(&hold["amount"]), d("30"));
    let all = json(&[]);
    let ids: Vec<&str> = all.as_array().unwrap().iter().map(|h| h["order_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&buy["order_id"].as_str().unwrap()) && ids.contains(&sell["order_id"].as_str().unwrap()), "{all}");
    let table = String::from_utf8(dm.cli().args(["risk", "holds", "--user", &s]).assert().success().get_output().stdout.clone()).unwrap();
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(table.starts_with("ORDER ID") && row.contains(sell["order_id"].as_str().unwrap()) && row.contains(&sym), "{table}");
    dm.ok("DELETE", &format!("/api/orders/{}", sell["order_id"].as_str().unwrap()), None);
    dm.cli().args(["risk", "holds", "--user", &s]).assert().success().stdout("no open holds\n");
    dm.cli().args(["risk", "holds", "--user", "nobody-at-all"]).assert().code(1).stderr(predicates::str::contains("not_found"));
    dm.cli().args(["risk", "holds", "--user", ""]).assert().code(2).stderr(predicates::str::contains("--user cannot be empty"));
}

/// A position is per symbol, but `X` and `X-USD` trade one asset with one balance: buying
/// 1 through `X` and selling it through `X-USD` left `agt user account` showing a long
/// position of 1 in `X` in an account holding no X. The sale takes it with it.
#[test]
fn selling_through_another_symbol_of_the_asset_leaves_no_position_behind() {
    let dm = Daemon::start();
    let (sym, buyer, seller) = dm.market_pair("1000", "5");
    let other = format!("{sym}-USD");
    dm.ok("POST", "/api/symbols", Some(json!({"symbol": other, "tick": "0.01", "lot": "1"})));
    let taker = dm.user("taker");
    dm.deposit(&taker, "USD", "1000");
    assert_eq!(dm.place(&seller, &sym, "sell", "1", Some("100.00")).0, 201);
    assert_eq!(dm.place(&buyer, &sym, "buy", "1", Some("100.00")).1["status"], "filled");
    let account = || -> Value {
        let out = dm.cli().args(["-o", "json", "user", "account", &buyer]).assert().success().get_output().stdout.clone();
        serde_json::from_slice(&out).unwrap()
    };
    assert_eq!(account()["positions"], json!([{"symbol": sym, "quantity": "1", "average_price": "100"}]));
    assert_eq!(dm.place(&buyer, &other, "sell", "1", Some("110.00")).0, 201);
    assert_eq!(dm.place(&taker, &other, "buy", "1", Some("110.00")).1["status"], "filled");
    let a = account();
    assert_eq!(bal(&dm, &buyer, &sym).0, d("0"));
    assert_eq!(a["positions"], json!([]), "no X is held, so no X position: {a}");
    assert_eq!(dm.ok("GET", &format!("/api/users/{taker}/account"), None)["positions"][0]["symbol"], other.as_str());
}

/// A short sale an older agt stored without its short part (NULL, read as 0) counted
/// nothing in the supply room, so a second one that together with it passes what a
/// balance can hold exactly was let through. At start the lane gives it its part back
/// from what remains of the order, once (the list of such holds is emptied).
#[test]
fn a_short_sale_stored_without_its_short_part_counts_again_after_a_restart() {
    let mut dm = Daemon::with_config("[risk]\nallow_short = true\n");
    // 22 places on the lot: all of the asset, and what short sales add, must stay under
    // 10^6. A deposit fills nearly all of it; room is left for one sale of 0.0005 short.
    let sym = dm.symbol("1", "0.0000000000000000000001");
    let (holder, first, second) = (dm.user("holder"), dm.user("first"), dm.user("second"));
    dm.deposit(&holder, &sym, "999999.999");
    let (s, o) = dm.place(&first, &sym, "sell", "0.0005", Some("1"));
    assert_eq!((s, o["status"].as_str()), (201, Some("new")), "{o}");
    dm.stop();
    // What a store an agt before `holds.short` wrote looks like after this one's migration.
    let store = dm.path().join("data/risk.db");
    let c = rusqlite::Connection::open(&store).unwrap();
    c.execute("UPDATE holds SET short = NULL", []).unwrap();
    c.execute("INSERT INTO shorts_unknown SELECT order_id FROM holds WHERE open = 1 AND side = 'sell'", []).unwrap();
    drop(c);
    dm.spawn();
    let (s, e) = dm.place(&second, &sym, "sell", "0.0005", Some("1"));
    assert_eq!((s, code(&e)), (422, "max_supply"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("short sales"), "{e}");
    let c = rusqlite::Connection::open(&store).unwrap();
    let short: Option<String> = c.query_row("SELECT short FROM holds WHERE open = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(short.as_deref(), Some("0.0005"), "stored");
    assert_eq!(c.query_row("SELECT count(*) FROM shorts_unknown", [], |r| r.get::<_, i64>(0)).unwrap(), 0, "done once");
}
