//! Settings as an operator meets them: shipped defaults, a home file, the environment,
//! `agt config get|set`, and the errors that say what to fix.

use super::*;
use serde_json::json;
use std::collections::HashMap;

fn no_env(_: &str) -> Option<String> {
    None
}

/// A home directory with `agt.toml` holding `text`.
fn home_with(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agt.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

fn load_text(text: &str) -> Result<Settings, ConfigError> {
    let (_dir, file) = home_with(text);
    Settings::load(&file, &no_env)
}

/// The error for `text`, with the temp file's path replaced by `/h/agt.toml`.
fn load_error(text: &str) -> String {
    let (_dir, file) = home_with(text);
    let err = Settings::load(&file, &no_env).expect_err("should not load");
    err.to_string().replace(&file.display().to_string(), "/h/agt.toml")
}

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[test]
fn defaults_are_the_shipped_file() {
    let s = Settings::defaults();
    assert_eq!(s.http.listen, "127.0.0.1:8000");
    assert_eq!(s.http.addr(), Some("127.0.0.1:8000".parse().unwrap()));
    assert_eq!(s.log.level, LogLevel::Info);
    assert_eq!(s.log.keep_days, 14);
    assert_eq!(s.durability, Durability::Normal);
    assert_eq!(s.trading.order_timeout_s, 30);
    assert_eq!(s.risk.max_open_orders, 100);
    assert_eq!(s.risk.max_order_quantity, dec("1000000"));
    assert_eq!(s.risk.max_order_notional, dec("10000000"));
    assert_eq!(s.risk.max_orders_per_second, 1000);
    assert_eq!(s.risk.price_band_pct, dec("10"));
    assert!(!s.risk.allow_short);
    assert!(!s.debug.fault_injection);
    assert_eq!(
        (s.supervisor.max_restarts, s.supervisor.window_s, s.supervisor.backoff_initial_ms, s.supervisor.backoff_max_ms),
        (5, 60, 100, 5000)
    );
    assert!(s.notify.webhooks.is_empty());
    let symbols: Vec<(&str, String, String)> =
        s.symbols.iter().map(|x| (x.symbol.as_str(), x.tick.to_string(), x.lot.to_string())).collect();
    assert_eq!(
        symbols,
        [
            ("AAPL", "0.01".into(), "1".into()),
            ("MSFT", "0.01".into(), "1".into()),
            ("BTC-USD", "0.01".into(), "0.0001".into()),
            ("ETH-USD", "0.01".into(), "0.001".into()),
        ]
    );
    assert!(s.symbols.iter().all(|x| x.min_quantity > Decimal::ZERO && x.min_quantity <= x.max_quantity));
    assert_eq!(s.symbols[2].base(), "BTC");
    assert_eq!(s.symbols[0].base(), "AAPL");
    assert_eq!(Settings::default(), s);
}

#[test]
fn every_key_is_in_the_shipped_file_with_a_comment() {
    let text = include_str!("../../../../config/agt.toml");
    for key in Settings::known_keys() {
        let leaf = key.rsplit('.').next().unwrap();
        let line = match key {
            "symbols" => "[[symbols]]".to_string(),
            "notify.webhooks" => "webhooks = []".to_string(),
            _ => format!("{leaf} = "),
        };
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("{key} is not in agt.toml"));
        // Grouped keys share one comment block, so look for a comment a few lines above.
        let commented = lines[at.saturating_sub(4)..at].iter().any(|l| l.starts_with('#'));
        assert!(commented, "{key} has no comment above it in agt.toml");
    }
}

#[test]
fn a_missing_home_file_gives_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::load(&dir.path().join("agt.toml"), &no_env).unwrap();
    assert_eq!(s, Settings::defaults());
}

#[test]
fn the_acceptance_harness_home_file_loads() {
    let s = load_text("[http]\nlisten = \"127.0.0.1:0\"\n\n[debug]\nfault_injection = true\n").unwrap();
    assert_eq!(s.http.listen, "127.0.0.1:0");
    assert_eq!(s.http.addr().unwrap().port(), 0);
    assert!(s.debug.fault_injection);
    // Everything else keeps its default.
    assert_eq!(s.risk, Settings::defaults().risk);
    assert_eq!(s.symbols.len(), 4);
}

#[test]
fn a_home_file_overrides_keys_and_adds_symbols() {
    let s = load_text(
        r#"
durability = "full"
[risk]
max_open_orders = 5           # tight, for a demo
max_order_quantity = 250.5    # a TOML number is fine
price_band_pct = 0.1
[[symbols]]
symbol = "TSLA"
tick = 0.05
lot = 1
[[symbols]]
symbol = "BTC-USD"
tick = "0.5"
lot = "0.001"
min_quantity = "0.001"
max_quantity = "10"
"#,
    )
    .unwrap();
    assert_eq!(s.durability, Durability::Full);
    assert_eq!(s.risk.max_open_orders, 5);
    assert_eq!(s.risk.max_order_quantity, dec("250.5"));
    assert_eq!(s.risk.price_band_pct.to_string(), "0.1", "a float is read from its shortest text");
    // Keys the file does not name keep their defaults, even in the same table.
    assert_eq!(s.risk.max_orders_per_second, 1000);
    let names: Vec<&str> = s.symbols.iter().map(|x| x.symbol.as_str()).collect();
    assert_eq!(names, ["AAPL", "MSFT", "BTC-USD", "ETH-USD", "TSLA"]);
    let btc = &s.symbols[2];
    assert_eq!((btc.tick.to_string(), btc.max_quantity.to_string()), ("0.5".into(), "10".into()));
    let tsla = &s.symbols[4];
    assert_eq!(tsla.tick.to_string(), "0.05");
    assert_eq!((tsla.min_quantity, tsla.max_quantity), (dec("1"), dec("1000000000")), "min defaults to the lot, max as `symbol add`'s");
}

#[test]
fn webhooks_in_the_home_file_are_added_and_their_secrets_hidden() {
    let s = load_text(
        r#"
[[notify.webhooks]]
url = "http://example.com/hook"
events = ["TRADE_EXECUTED", "ORDER_REJECTED"]
secret = "s3cret"
[[notify.webhooks]]
url = "http://127.0.0.1:9000/all"
"#,
    )
    .unwrap();
    assert_eq!(s.notify.webhooks.len(), 2);
    assert_eq!(s.notify.webhooks[0].secret.as_deref(), Some("s3cret"));
    assert_eq!(s.notify.webhooks[1].events, ["*"], "no events means every event");
    let json = s.to_json();
    assert_eq!(json["notify"]["webhooks"][0]["secret"], "***");
    assert!(!json.to_string().contains("s3cret"));
    assert_eq!(s.get("notify.webhooks.0.secret"), Some(json!("***")));
    assert_eq!(s.get("notify.webhooks.1.url"), Some(json!("http://127.0.0.1:9000/all")));
}

#[test]
fn the_environment_overrides_the_home_file() {
    let (_dir, file) = home_with("[log]\nlevel = \"debug\"\n[risk]\nmax_open_orders = 5\n");
    let env = env_of(&[
        ("AGT_HTTP_ADDR", "0.0.0.0:9000"),
        ("AGT_LOG_LEVEL", "warn"),
        ("AGT_DURABILITY", "full"),
        ("AGT_RISK_MAX_OPEN_ORDERS", "7"),
        ("AGT_RISK_PRICE_BAND_PCT", "2.5"),
        ("AGT_RISK_ALLOW_SHORT", "true"),
        ("AGT_SUPERVISOR_MAX_RESTARTS", ""),
        ("AGT_HOME", "/elsewhere"),
    ]);
    let s = Settings::load(&file, &env).unwrap();
    assert_eq!(s.http.listen, "0.0.0.0:9000");
    assert_eq!(s.log.level, LogLevel::Warn);
    assert_eq!(s.durability, Durability::Full);
    assert_eq!(s.risk.max_open_orders, 7);
    assert_eq!(s.risk.price_band_pct, dec("2.5"));
    assert!(s.risk.allow_short);
    assert_eq!(s.supervisor.max_restarts, 5, "an empty variable is ignored");
    assert_eq!(Settings::env_var("risk.max_open_orders"), "AGT_RISK_MAX_OPEN_ORDERS");
    assert_eq!(Settings::env_var("durability"), "AGT_DURABILITY");
    // The variable a start would take, as load reads them: the later one wins, and an
    // empty value counts only for http.listen (it turns TCP off).
    let both = env_of(&[("AGT_HTTP_LISTEN", "127.0.0.1:1"), ("AGT_HTTP_ADDR", "")]);
    assert_eq!(Settings::env_override("http.listen", &both).as_deref(), Some("AGT_HTTP_ADDR"));
    assert_eq!(Settings::env_override("risk.allow_short", &env_of(&[("AGT_RISK_ALLOW_SHORT", "")])), None);
    assert_eq!(
        Settings::env_override("risk.allow_short", &env_of(&[("AGT_RISK_ALLOW_SHORT", "1")])).as_deref(),
        Some("AGT_RISK_ALLOW_SHORT")
    );
    assert_eq!(Settings::env_override("no.such.key", &both), None);
}

#[test]
fn agt_http_addr_wins_and_empty_turns_tcp_off() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agt.toml");
    let s = Settings::load(&file, &env_of(&[("AGT_HTTP_LISTEN", "127.0.0.1:1"), ("AGT_HTTP_ADDR", "127.0.0.1:2")])).unwrap();
    assert_eq!(s.http.listen, "127.0.0.1:2");
    let s = Settings::load(&file, &env_of(&[("AGT_HTTP_ADDR", "")])).unwrap();
    assert_eq!(s.http.listen, "");
    assert_eq!(s.http.addr(), None);
}

#[test]
fn a_bad_value_names_the_file_the_key_and_what_is_allowed() {
    assert_eq!(
        load_error("[risk]\nmax_open_orders = \"abc\"\n"),
        r#"/h/agt.toml: risk.max_open_orders: expected a whole number >= 1, got "abc""#
    );
    assert_eq!(load_error("[risk]\nmax_open_orders = 0\n"), "/h/agt.toml: risk.max_open_orders: expected a whole number >= 1, got 0");
    assert_eq!(
        load_error("[log]\nlevel = \"verbose\"\n"),
        r#"/h/agt.toml: log.level: expected one of "error", "warn", "info", "debug", "trace", got "verbose""#
    );
    assert_eq!(load_error("durability = \"fast\"\n"), r#"/h/agt.toml: durability: expected "normal" or "full", got "fast""#);
    assert_eq!(
        load_error("[http]\nlisten = \"nowhere\"\n"),
        "/h/agt.toml: http.listen: expected \"host:port\" such as \"127.0.0.1:8000\" (port 0 picks a free port), \
         or \"\" to turn TCP off, got \"nowhere\""
    );
    assert_eq!(
        load_error("[risk]\nprice_band_pct = \"1001\"\n"),
        r#"/h/agt.toml: risk.price_band_pct: expected a decimal number > 0 and <= 1000 such as "10", got "1001""#
    );
    assert_eq!(
        load_error("[risk]\nmax_order_notional = -5\n"),
        r#"/h/agt.toml: risk.max_order_notional: expected a decimal number > 0 such as "10.5", got -5"#
    );
    let pasted = load_error("[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"***\"\n");
    assert!(pasted.contains("notify.webhooks[0].secret") && pasted.contains("the masked value"), "{pasted}");
    assert_eq!(
        load_error("[risk]\nallow_short = \"maybe\"\n"),
        r#"/h/agt.toml: risk.allow_short: expected true or false (yes/no, on/off and 1/0 are read as those), got "maybe""#
    );
    assert_eq!(
        load_error("[trading]\norder_timeout_s = 99999\n"),
        "/h/agt.toml: trading.order_timeout_s: expected a whole number from 1 to 3600, got 99999"
    );
    assert_eq!(load_error("risk = 5\n"), "/h/agt.toml: risk: expected a table ([risk] with its keys below it), got 5");
}

/// `log.keep_days` as an operator meets it in each place a value comes from: a whole
/// number of days, 0 keeping every file, anything else refused with what to write.
#[test]
fn log_keep_days_takes_whole_days_and_says_what_to_fix() {
    assert_eq!(load_text("[log]\nkeep_days = 2\n").unwrap().log.keep_days, 2);
    assert_eq!(load_text("[log]\nkeep_days = 0\n").unwrap().log.keep_days, 0, "0 keeps every file");
    for (bad, refusal) in [("-1", ", got -1"), ("\"two\"", ", got \"two\""), ("1.5", " (not a fraction), got 1.5"), ("true", ", got true")]
    {
        assert_eq!(
            load_error(&format!("[log]\nkeep_days = {bad}\n")),
            format!("/h/agt.toml: log.keep_days: expected a whole number >= 0{refusal}")
        );
    }
    let (_dir, file) = home_with("");
    assert_eq!(Settings::load(&file, &env_of(&[("AGT_LOG_KEEP_DAYS", "30")])).unwrap().log.keep_days, 30);
    let err = Settings::load(&file, &env_of(&[("AGT_LOG_KEEP_DAYS", "a week")])).unwrap_err().to_string();
    assert_eq!(err, r#"AGT_LOG_KEEP_DAYS: log.keep_days: expected a whole number >= 0, got "a week""#);
    let mut s = Settings::defaults();
    let change = s.set("log.keep_days", &json!("7")).unwrap();
    assert_eq!((change.old, change.new, change.hot), (json!(14), json!(7), true));
    let err = s.set("log.keep_days", &json!(-3)).unwrap_err().to_string();
    assert_eq!(err, "log.keep_days: expected a whole number >= 0, got -3");
    assert_eq!(s.log.keep_days, 7, "a refused set changes nothing");
}

/// A number past a key's largest value is refused naming the whole range, for every
/// whole-number key (those whose only bound said is ">= 0" too), from `set`, a file and
/// the environment alike, however it is written.
#[test]
fn a_whole_number_too_large_names_the_largest_allowed() {
    for key in KEYS {
        let Kind::Whole { min, max } = key.kind else { continue };
        let name = key.name;
        let range = format!("{name}: expected a whole number from {min} to {max}, got");
        let mut s = Settings::defaults();
        for too_large in [json!(max + 1), json!((max + 1).to_string()), json!("99999999999999999999999999999999999999999"), json!(1e20)] {
            let err = s.set(name, &too_large).unwrap_err().to_string();
            assert!(err.starts_with(&range), "{too_large}: {err}");
        }
        assert_eq!(s, Settings::defaults(), "a refused set changes nothing");
        let (section, leaf) = name.split_once('.').unwrap_or(("", name));
        let text = if section.is_empty() { format!("{leaf} = {}\n", max + 1) } else { format!("[{section}]\n{leaf} = {}\n", max + 1) };
        assert_eq!(load_error(&text), format!("/h/agt.toml: {range} {}", max + 1));
        let (_dir, file) = home_with("");
        let var = Settings::env_var(name);
        let err = Settings::load(&file, &env_of(&[(var.as_str(), &(max + 1).to_string())])).unwrap_err().to_string();
        assert_eq!(err, format!("{var}: {range} \"{}\"", max + 1));
    }
    let err = Settings::defaults().set("log.keep_days", &json!(4294967296u64)).unwrap_err().to_string();
    assert_eq!(err, "log.keep_days: expected a whole number from 0 to 4294967295, got 4294967296");
    // Below the least allowed, or not a number, keeps the shorter wording.
    let err = Settings::defaults().set("risk.max_open_orders", &json!(0)).unwrap_err().to_string();
    assert_eq!(err, "risk.max_open_orders: expected a whole number >= 1, got 0");
}

/// An entry compared with the instrument it names: each field that differs, with both
/// values, in the entry's order; nothing for the same terms written otherwise (`0.010`).
#[test]
fn a_symbol_entry_names_each_term_that_differs_from_its_instrument() {
    let instrument = crate::api::Instrument {
        symbol: "MSFT".into(),
        base: "MSFT".into(),
        quote: "USD".into(),
        tick: dec("0.01"),
        lot: dec("1"),
        min_quantity: dec("1"),
        max_quantity: dec("100000"),
    };
    let entry = |tick: &str, max: &str| SymbolSettings {
        symbol: "MSFT".into(),
        tick: dec(tick),
        lot: dec("1"),
        min_quantity: dec("1"),
        max_quantity: dec(max),
    };
    assert!(entry("0.010", "100000").differences(&instrument).is_empty());
    assert!(entry("0.010", "100000").same_terms(&instrument) && entry("0.01", "100000").refusal(&instrument).is_none());
    assert_eq!(entry("0.05", "100000").differences(&instrument), ["tick: trades with 0.01, requested 0.05"]);
    let two = entry("0.05", "500");
    assert_eq!(two.differences(&instrument), ["tick: trades with 0.01, requested 0.05", "max_quantity: trades with 100000, requested 500"]);
    assert!(!two.same_terms(&instrument));
    let why = two.refusal(&instrument).unwrap();
    assert!(
        why.starts_with(
            "MSFT already trades on other terms (tick: trades with 0.01, requested 0.05; max_quantity: trades with 100000, requested 500)"
        ),
        "{why}"
    );
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion_and_the_known_keys() {
    let err = load_error("[risk]\nmax_open_order = 5\n");
    assert!(
        err.starts_with(r#"/h/agt.toml: unknown key "risk.max_open_order" (did you mean "risk.max_open_orders"? known keys: risk.max_open_orders, risk.max_order_quantity"#),
        "{err}"
    );
    let err = load_error("[rsik]\nmax_open_orders = 5\n");
    assert!(err.starts_with(r#"/h/agt.toml: unknown key "rsik" ("#), "{err}");
    assert!(err.contains("known keys: durability, http.listen, log.level"), "{err}");
    let err = load_error("[[symbols]]\nsymbol = \"X\"\ntick = 1\nlot = 1\nticks = 2\n");
    assert!(err.starts_with(r#"/h/agt.toml: unknown key "symbols[0].ticks" (did you mean "tick"? known keys: symbol, tick, lot"#), "{err}");
    let err = load_error("[notify]\nwebhook = []\n");
    assert!(err.contains(r#"unknown key "notify.webhook" (did you mean "notify.webhooks"?"#), "{err}");
}

#[test]
fn bad_symbols_and_webhooks_say_what_is_wrong() {
    assert_eq!(
        load_error("[[symbols]]\nsymbol = \"aapl\"\ntick = 1\nlot = 1\n"),
        r#"/h/agt.toml: symbols[0].symbol: expected 1-32 characters of A-Z, 0-9, '.' and '-', beginning and ending with a letter or digit such as "BTC-USD", got "aapl""#
    );
    assert_eq!(
        load_error("[[symbols]]\nsymbol = \"X\"\ntick = 0\nlot = 1\n"),
        r#"/h/agt.toml: symbols.X.tick: expected a decimal number > 0 such as "0.01", got 0"#
    );
    assert_eq!(
        load_error("[[symbols]]\nsymbol = \"X\"\nlot = 1\n"),
        r#"/h/agt.toml: symbols.X.tick: missing: expected a decimal number > 0 such as "0.01""#
    );
    assert_eq!(
        load_error("[[symbols]]\nsymbol = \"X\"\ntick = 1\nlot = 1\nmin_quantity = 10\nmax_quantity = 5\n"),
        "/h/agt.toml: symbols.X: max_quantity (5) must be at least min_quantity (10)"
    );
    // What `agt symbol add` refuses, the file refuses too: start-up would skip it.
    assert!(load_error("[[symbols]]\nsymbol = \"ZZ\"\ntick = \"0.01\"\nlot = 1\nmin_quantity = \"0.5\"\n")
        .starts_with("/h/agt.toml: symbols.ZZ: min_quantity (0.5) must be a multiple of the lot (1)"));
    assert!(load_error("[[symbols]]\nsymbol = \"USD\"\ntick = 1\nlot = 1\n").contains("would trade USD against itself"));
    assert!(load_error("[[symbols]]\nsymbol = \"..\"\ntick = 1\nlot = 1\n").contains("beginning and ending with a letter or digit"));
    assert_eq!(
        load_error("[[symbols]]\nsymbol = \"X\"\ntick = 1\nlot = 1\n[[symbols]]\nsymbol = \"X\"\ntick = 1\nlot = 1\n"),
        r#"/h/agt.toml: symbols[1].symbol: "X" is listed twice"#
    );
    assert_eq!(
        load_error("[[notify.webhooks]]\nurl = \"ftp://x\"\n"),
        r#"/h/agt.toml: notify.webhooks[0].url: "ftp://x" is not an http:// URL such as "http://127.0.0.1:9000/hook""#
    );
    let err = load_error("[[notify.webhooks]]\nurl = \"http://x\"\nevents = [\"TRADE_DONE\"]\n");
    assert!(
        err.starts_with(r#"/h/agt.toml: notify.webhooks[0].events: expected a list of "*" or event types from: USER_CREATED,"#),
        "{err}"
    );
    assert!(err.ends_with(r#"TOKEN_REVOKED, got "TRADE_DONE""#), "{err}");
}

#[test]
fn a_bad_environment_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agt.toml");
    let err = Settings::load(&file, &env_of(&[("AGT_RISK_MAX_OPEN_ORDERS", "lots")])).unwrap_err();
    assert_eq!(err.to_string(), r#"AGT_RISK_MAX_OPEN_ORDERS: risk.max_open_orders: expected a whole number >= 1, got "lots""#);
    assert_eq!(err.key(), Some("risk.max_open_orders"));
    let err = Settings::load(&file, &env_of(&[("AGT_HTTP_ADDR", "8000")])).unwrap_err();
    assert!(err.to_string().starts_with("AGT_HTTP_ADDR: http.listen: expected \"host:port\""), "{err}");
}

#[test]
fn invalid_toml_names_the_file_and_line() {
    let err = load_error("[risk]\nmax_open_orders = = 5\n");
    assert!(err.starts_with("/h/agt.toml: not valid TOML: "), "{err}");
    assert!(err.ends_with("(line 2)"), "{err}");
}

#[test]
fn rules_between_keys_blame_the_key_that_changed() {
    assert_eq!(
        load_error("[supervisor]\nbackoff_initial_ms = 10000\n"),
        "/h/agt.toml: supervisor.backoff_initial_ms: expected a whole number <= supervisor.backoff_max_ms (5000), got 10000"
    );
    assert_eq!(
        load_error("[supervisor]\nbackoff_max_ms = 50\n"),
        "/h/agt.toml: supervisor.backoff_max_ms: expected a whole number >= supervisor.backoff_initial_ms (100), got 50"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = Settings::load(&dir.path().join("agt.toml"), &env_of(&[("AGT_SUPERVISOR_BACKOFF_MAX_MS", "10")])).unwrap_err();
    assert!(err.to_string().starts_with("AGT_SUPERVISOR_BACKOFF_MAX_MS: supervisor.backoff_max_ms: "), "{err}");
}

#[test]
fn get_and_set_round_trip_through_dotted_keys() {
    let mut s = Settings::defaults();
    assert_eq!(s.get("risk.max_open_orders"), Some(json!(100)));
    assert_eq!(s.get("risk.max_order_notional"), Some(json!("10000000")), "decimals are strings");
    assert_eq!(s.get("durability"), Some(json!("normal")));
    assert_eq!(s.get("symbols.BTC-USD.lot"), Some(json!("0.0001")));
    assert_eq!(s.get("symbols.AAPL").unwrap()["tick"], "0.01");
    assert_eq!(s.get("risk").unwrap()["allow_short"], false);
    assert_eq!(s.get("risk.nope"), None);
    assert_eq!(s.get(""), None);

    let change = s.set("risk.max_open_orders", &json!("3")).unwrap();
    assert_eq!(change, Change { key: "risk.max_open_orders".into(), old: json!(100), new: json!(3), hot: true });
    assert_eq!(s.risk.max_open_orders, 3);

    s.set("risk.max_order_quantity", &json!(12.5)).unwrap();
    assert_eq!(s.get("risk.max_order_quantity"), Some(json!("12.5")));
    s.set("risk.allow_short", &json!("true")).unwrap();
    assert!(s.risk.allow_short);
    s.set("risk.allow_short", &json!(0)).unwrap();
    assert!(!s.risk.allow_short, "a number 0 is false, as the string \"0\" is");
    s.set("risk.allow_short", &json!(1)).unwrap();
    assert!(s.risk.allow_short);
    assert!(s.set("risk.allow_short", &json!(2)).is_err());
    s.set("log.level", &json!("DEBUG")).unwrap();
    assert_eq!(s.log.level, LogLevel::Debug);
    let change = s.set("http.listen", &json!("")).unwrap();
    assert!(!change.hot);
    assert_eq!(s.http.addr(), None);

    let change = s.set("symbols", &json!({"symbol": "TSLA", "tick": "0.05", "lot": 1})).unwrap();
    assert!(!change.hot);
    assert_eq!(s.symbols.len(), 5);
    assert_eq!(s.get("symbols.TSLA.max_quantity"), Some(json!("1000000000")));
    s.set("symbols", &json!([{"symbol": "AAPL", "tick": "0.05", "lot": 10}])).unwrap();
    assert_eq!(s.symbols.len(), 5, "the same symbol is replaced, not added");
    assert_eq!(s.symbols[0].lot, dec("10"));
}

#[test]
fn a_failed_set_changes_nothing() {
    let mut s = Settings::defaults();
    let before = s.clone();
    let err = s.set("risk.max_open_order", &json!(5)).unwrap_err();
    assert!(err.to_string().starts_with(r#"unknown key "risk.max_open_order" (did you mean "risk.max_open_orders"?"#), "{err}");
    let err = s.set("risk.max_open_orders", &json!("abc")).unwrap_err();
    assert_eq!(err.to_string(), r#"risk.max_open_orders: expected a whole number >= 1, got "abc""#);
    assert!(s.set("risk.max_open_orders", &json!(-1)).is_err());
    assert!(s.set("risk.max_open_orders", &json!(1.5)).is_err());
    assert!(s.set("risk.max_open_orders", &Json::Null).is_err());
    assert!(s.set("risk.price_band_pct", &json!("NaN")).is_err());
    assert!(s.set("durability", &json!(true)).is_err());
    assert!(s.set("supervisor.backoff_max_ms", &json!(1)).is_err());
    assert!(s.set("symbols", &json!({"symbol": "bad", "tick": 1, "lot": 1})).is_err());
    assert!(s.set("risk", &json!({"max_open_orders": 5})).is_err());
    assert!(s.set_many(&[("risk.max_open_orders", &json!(5)), ("risk.allow_short", &json!("perhaps"))]).is_err());
    assert_eq!(s, before);
}

#[test]
fn set_many_checks_rules_between_keys_at_the_end() {
    let mut s = Settings::defaults();
    let patch = Settings::flatten(&json!({"supervisor": {"backoff_initial_ms": 10000, "backoff_max_ms": 20000}})).unwrap();
    let entries: Vec<(&str, &Json)> = patch.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let changes = s.set_many(&entries).unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!((s.supervisor.backoff_initial_ms, s.supervisor.backoff_max_ms), (10000, 20000));
    let flat = Settings::flatten(&json!({"risk.max_open_orders": 1, "notify": {"webhooks": []}})).unwrap();
    assert_eq!(flat, [("notify.webhooks".to_string(), json!([])), ("risk.max_open_orders".to_string(), json!(1))]);
}

#[test]
fn a_webhook_set_with_the_masked_secret_keeps_its_secret() {
    let mut s = Settings::defaults();
    let change = s.set("notify.webhooks", &json!([{"url": "http://x.test/h", "events": ["*"], "secret": "k"}])).unwrap();
    assert_eq!(change.new[0]["secret"], "***", "a change never shows a secret");
    s.set("notify.webhooks", &json!({"url": "http://x.test/h", "events": ["TRADE_EXECUTED"], "secret": "***"})).unwrap();
    assert_eq!(s.notify.webhooks.len(), 1);
    assert_eq!(s.notify.webhooks[0].secret.as_deref(), Some("k"));
    assert_eq!(s.notify.webhooks[0].events, ["TRADE_EXECUTED"]);
}

/// `config set`, `PUT /api/config` and a live edit of the file take a webhook URL only if
/// start-up would: the check is notify's own (`notify::parse_url`).
#[test]
fn a_webhook_url_is_accepted_by_set_only_if_start_up_accepts_it() {
    for (url, says) in [
        ("http://user:pw@127.0.0.1:18701/cred", "credentials"),
        ("http://x/<>", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://127.0.0.1:99999/typo", "from 1 to 65535"),
        ("http://127.0.0.1:abc/", "from 1 to 65535"),
        ("https://example.com/hook", "https"),
    ] {
        let mut s = Settings::defaults();
        let err = s.set("notify.webhooks", &json!([{"url": url, "events": ["*"]}])).expect_err(url).to_string();
        assert!(err.starts_with("notify.webhooks[0].url: ") && err.contains(says), "{url}: {err}");
        assert!(!err.contains("pw@"), "no password in a message: {err}");
        assert!(s.notify.webhooks.is_empty(), "nothing changed");
        let file_err = load_error(&format!("[[notify.webhooks]]\nurl = {url:?}\n"));
        assert!(file_err.contains(says), "{url}: {file_err}");
        let (_dir, file) = home_with("");
        assert!(Settings::persist(&file, "notify.webhooks", &json!([{"url": url}])).is_err(), "{url}: not written");
    }
}

#[test]
fn a_webhook_secret_is_at_most_256_bytes_as_for_a_run_time_rule() {
    let mut s = Settings::defaults();
    let long = "k".repeat(257);
    let err = s.set("notify.webhooks", &json!([{"url": "http://x.test/h", "secret": long}])).unwrap_err().to_string();
    assert_eq!(err, "notify.webhooks[0].secret: a secret is at most 256 bytes, got 257 bytes");
    s.set("notify.webhooks", &json!([{"url": "http://x.test/h", "secret": "k".repeat(256)}])).unwrap();
}

/// `"***"` is what `config get` shows for a secret: given back for a webhook whose URL
/// changed (or is new), there is no secret to keep, and dropping it would send unsigned.
#[test]
fn the_masked_secret_for_a_new_url_is_refused() {
    let (_dir, file) = home_with("[[notify.webhooks]]\nurl = \"http://x.test/h\"\nsecret = \"k\"\n");
    let mut s = Settings::load(&file, &no_env).unwrap();
    let moved = json!([{"url": "http://y.test/h", "events": ["*"], "secret": "***"}]);
    let err = s.set("notify.webhooks", &moved).unwrap_err().to_string();
    assert!(err.starts_with("notify.webhooks[0].secret: \"***\" is the masked value"), "{err}");
    assert!(err.contains("give the secret again"), "{err}");
    assert_eq!(s.notify.webhooks[0].url, "http://x.test/h", "nothing changed");
    let err = Settings::persist(&file, "notify.webhooks", &moved).unwrap_err().to_string();
    assert!(err.contains("is the masked value"), "{err}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("http://x.test/h"), "the file is as it was");
    let unsigned = json!([{"url": "http://x.test/h", "events": ["*"]}]);
    s.set("notify.webhooks", &unsigned).unwrap();
    let err = s.set("notify.webhooks", &json!([{"url": "http://x.test/h", "secret": "***"}])).unwrap_err().to_string();
    assert!(err.contains("has no secret to keep"), "the same url without a secret: {err}");
}

#[test]
fn a_set_of_the_webhooks_is_the_whole_list_and_symbols_cannot_be_emptied() {
    let (_dir, file) = home_with("# mine\n[risk]\nmax_open_orders = 5\n\n[[notify.webhooks]]\nurl = \"http://a.test/h\"\n\n[[notify.webhooks]]\nurl = \"http://b.test/h\"\n");
    let mut s = Settings::load(&file, &no_env).unwrap();
    assert_eq!(s.notify.webhooks.len(), 2);
    let only_c = json!([{"url": "http://c.test/h", "events": ["*"]}]);
    s.set("notify.webhooks", &only_c).unwrap();
    Settings::persist(&file, "notify.webhooks", &only_c).unwrap();
    let urls = |s: &Settings| s.notify.webhooks.iter().map(|w| w.url.clone()).collect::<Vec<_>>();
    assert_eq!(urls(&s), ["http://c.test/h"]);
    assert_eq!(urls(&Settings::load(&file, &no_env).unwrap()), ["http://c.test/h"], "the file holds the same list");
    s.set("notify.webhooks", &json!([])).unwrap();
    Settings::persist(&file, "notify.webhooks", &json!([])).unwrap();
    assert!(s.notify.webhooks.is_empty());
    assert!(Settings::load(&file, &no_env).unwrap().notify.webhooks.is_empty());
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("# mine\n[risk]\nmax_open_orders = 5\n"));
    let err = s.set("symbols", &json!([])).unwrap_err().to_string();
    assert!(err.contains("instruments are never removed"), "{err}");
}

#[test]
fn hot_keys_are_the_ones_services_can_apply_live() {
    let hot: Vec<&str> = Settings::known_keys().into_iter().filter(|k| Settings::is_hot(k)).collect();
    assert_eq!(
        hot,
        [
            "log.level",
            "log.keep_days",
            "trading.order_timeout_s",
            "trading.spin_us",
            "risk.max_open_orders",
            "risk.max_order_quantity",
            "risk.max_order_notional",
            "risk.max_orders_per_second",
            "risk.price_band_pct",
            "risk.allow_short",
            "debug.fault_injection",
            "supervisor.max_restarts",
            "supervisor.window_s",
            "supervisor.backoff_initial_ms",
            "supervisor.backoff_max_ms",
            "events.retain_s",
            "notify.webhooks",
        ]
    );
    for cold in ["http.listen", "durability", "symbols", "nope"] {
        assert!(!Settings::is_hot(cold), "{cold}");
    }
}

#[test]
fn persist_keeps_the_operators_comments_and_reloads() {
    let original = "# my settings\n[risk]\n# keep this low\nmax_open_orders = 5 # tight\nallow_short = true\n\n[log]\nlevel = \"debug\"\n";
    let (_dir, file) = home_with(original);
    Settings::persist(&file, "risk.max_open_orders", &json!("7")).unwrap();
    Settings::persist(&file, "durability", &json!("full")).unwrap();
    Settings::persist(&file, "supervisor.window_s", &json!(30)).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# my settings\n"), "{text}");
    assert!(text.contains("# keep this low\nmax_open_orders = 7 # tight\n"), "{text}");
    assert!(text.contains("allow_short = true"), "{text}");
    assert!(text.contains("level = \"debug\""), "{text}");
    assert!(text.contains("durability = \"full\""), "{text}");
    assert!(text.contains("[supervisor]\nwindow_s = 30"), "{text}");
    let s = Settings::load(&file, &no_env).unwrap();
    assert_eq!(s.risk.max_open_orders, 7);
    assert!(s.risk.allow_short);
    assert_eq!(s.durability, Durability::Full);
    assert_eq!(s.supervisor.window_s, 30);
    assert_eq!(s.log.level, LogLevel::Debug);
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["agt.toml"], "no temp file is left behind");
}

#[test]
fn persist_creates_the_home_file_and_writes_decimals_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agt.toml");
    Settings::persist(&file, "risk.price_band_pct", &json!(0.1)).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.trim(), "[risk]\nprice_band_pct = \"0.1\"");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(Settings::load(&file, &no_env).unwrap().risk.price_band_pct, dec("0.1"));
}

#[test]
fn persist_refuses_a_bad_value_and_leaves_the_file_alone() {
    let original = "[supervisor]\nbackoff_max_ms = 1000 # careful\n";
    let (_dir, file) = home_with(original);
    assert!(Settings::persist(&file, "risk.max_open_orders", &json!("abc")).is_err());
    assert!(Settings::persist(&file, "risk.nope", &json!(1)).is_err());
    let err = Settings::persist(&file, "supervisor.backoff_initial_ms", &json!(2000)).unwrap_err();
    assert!(
        err.to_string().contains("supervisor.backoff_initial_ms: expected a whole number <= supervisor.backoff_max_ms (1000)"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    // Both together are fine.
    Settings::persist_many(&file, &[("supervisor.backoff_initial_ms", &json!(2000)), ("supervisor.backoff_max_ms", &json!(4000))]).unwrap();
    let s = Settings::load(&file, &no_env).unwrap();
    assert_eq!((s.supervisor.backoff_initial_ms, s.supervisor.backoff_max_ms), (2000, 4000));
    assert!(std::fs::read_to_string(&file).unwrap().contains("backoff_max_ms = 4000 # careful"));
}

#[test]
fn persist_adds_and_replaces_list_entries() {
    let original = "# symbols I trade\n[[symbols]]\n# a comment on TSLA\nsymbol = \"TSLA\"\ntick = \"0.05\"\nlot = \"1\"\n\n[[notify.webhooks]]\nurl = \"http://x.test/h\"\nevents = [\"*\"]\nsecret = \"k\"\n";
    let (_dir, file) = home_with(original);
    Settings::persist(&file, "symbols", &json!({"symbol": "TSLA", "tick": "0.01", "lot": 1})).unwrap();
    Settings::persist(&file, "symbols", &json!([{"symbol": "NVDA", "tick": 0.01, "lot": 1}])).unwrap();
    Settings::persist(&file, "notify.webhooks", &json!({"url": "http://x.test/h", "events": ["TRADE_EXECUTED"], "secret": "***"})).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# a comment on TSLA\nsymbol = \"TSLA\"\ntick = \"0.01\""), "{text}");
    assert_eq!(text.matches("[[symbols]]").count(), 2, "{text}");
    assert!(text.contains("secret = \"k\""), "the masked secret keeps the secret: {text}");
    let s = Settings::load(&file, &no_env).unwrap();
    let names: Vec<&str> = s.symbols.iter().map(|x| x.symbol.as_str()).collect();
    assert_eq!(names, ["AAPL", "MSFT", "BTC-USD", "ETH-USD", "TSLA", "NVDA"]);
    assert_eq!(s.notify.webhooks[0].events, ["TRADE_EXECUTED"]);
    assert_eq!(s.notify.webhooks[0].secret.as_deref(), Some("k"));
}

#[test]
fn persisting_a_webhook_secret_makes_the_file_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, file) = home_with("[log]\nlevel = \"info\"\n");
    let mode = |f: &std::path::Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Nothing secret: the operator's mode stays.
    Settings::persist(&file, "log.level", &json!("debug")).unwrap();
    assert_eq!(mode(&file), 0o644);
    Settings::persist(&file, "notify.webhooks", &json!([{"url": "http://h.test/x", "events": ["*"], "secret": "s3cr3t"}])).unwrap();
    assert_eq!(mode(&file), 0o600, "a secret written into a file others could read");
    // A file made private stays so, and one with no other bits keeps its own (0700 here).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o740)).unwrap();
    Settings::persist(&file, "log.level", &json!("info")).unwrap();
    assert_eq!(mode(&file), 0o700);
}

#[test]
fn persist_into_a_file_without_webhooks_writes_an_array_of_tables() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agt.toml");
    Settings::persist(&file, "notify.webhooks", &json!([{"url": "http://h.test/x", "events": ["ORDER_CREATED"]}])).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("[[notify.webhooks]]\nurl = \"http://h.test/x\""), "{text}");
    assert!(!text.contains("[notify]\n"), "{text}");
    assert_eq!(Settings::load(&file, &no_env).unwrap().notify.webhooks.len(), 1);
}

#[test]
fn parse_listen_takes_ip_or_localhost_with_a_port() {
    assert_eq!(parse_listen("").unwrap(), None);
    assert_eq!(parse_listen("[::1]:80").unwrap(), Some("[::1]:80".parse().unwrap()));
    assert_eq!(parse_listen("localhost:0").unwrap(), Some("127.0.0.1:0".parse().unwrap()));
    for bad in ["8000", "127.0.0.1", "host:80", "127.0.0.1:99999", " 127.0.0.1:80"] {
        assert!(parse_listen(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_variable_that_looks_like_a_setting_but_names_none_is_refused() {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
    assert!(check_env_names(names(&["AGT_HOME", "AGT_URL", "AGT_RISK_MAX_OPEN_ORDERS", "AGT_HTTP_ADDR", "AGT_NOTIFY_TIMEOUT_MS", "PATH"]))
        .is_ok());
    let err = check_env_names(names(&["AGT_LOG_LEVEL", "AGT_TRADING_SPIN"])).unwrap_err().to_string();
    assert!(err.starts_with("environment: unknown key \"AGT_TRADING_SPIN\" (did you mean AGT_TRADING_SPIN_US?"), "{err}");
}

/// A JSON number as its client sent it (how a settings body keeps `100.0` or `1e2`).
fn sent(text: &str) -> Json {
    json!({ crate::api::decimal::SENT_NUMBER: text })
}

#[test]
fn a_whole_number_setting_takes_any_exact_whole_number_and_shows_a_refused_one_as_sent() {
    let mut s = Settings::defaults();
    for v in [json!(100), json!("100"), json!("100.0"), json!("1e2"), sent("100.0"), sent("1e2"), sent("1E2"), sent("100.000")] {
        s.set("risk.max_open_orders", &json!(7)).unwrap();
        s.set("risk.max_open_orders", &v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(s.risk.max_open_orders, 100, "{v}");
    }
    let refused = |v: &Json| s.clone().set("risk.max_open_orders", v).unwrap_err().to_string();
    assert_eq!(refused(&sent("100.5")), "risk.max_open_orders: expected a whole number >= 1 (not a fraction), got 100.5");
    assert_eq!(refused(&json!("100.5")), r#"risk.max_open_orders: expected a whole number >= 1 (not a fraction), got "100.5""#);
    assert_eq!(refused(&sent("0.0")), "risk.max_open_orders: expected a whole number >= 1, got 0.0");
    assert_eq!(refused(&sent("1e30")), "risk.max_open_orders: expected a whole number from 1 to 4294967295, got 1e30");
    assert_eq!(refused(&sent("5e9")), "risk.max_open_orders: expected a whole number from 1 to 4294967295, got 5e9");
    let err = s.clone().set("trading.spin_us", &sent("2.5e3")).unwrap_err().to_string();
    assert_eq!(err, "trading.spin_us: expected a whole number from 0 to 1000, got 2.5e3");
    // A decimal setting takes the number exactly; a text one refuses it, shown as sent.
    s.set("risk.max_order_notional", &sent("12345678.123456789012")).unwrap();
    assert_eq!(s.get("risk.max_order_notional"), Some(json!("12345678.123456789012")));
    let err = s.clone().set("risk.price_band_pct", &sent("1e4")).unwrap_err().to_string();
    assert!(err.ends_with("got 1e4"), "{err}");
    let err = s.clone().set("log.level", &sent("1.5")).unwrap_err().to_string();
    assert!(err.ends_with("got 1.5"), "{err}");
    s.set("risk.allow_short", &sent("1.0")).unwrap();
    assert!(s.risk.allow_short, "1.0 is 1");
    // In a list's entries too: a number is no symbol name, and a tick keeps its digits.
    let err = s.clone().set("symbols", &json!({"symbol": sent("1.5"), "tick": "0.01", "lot": 1})).unwrap_err().to_string();
    assert!(err.starts_with("symbols[0].symbol: expected") && err.ends_with("got 1.5"), "{err}");
    let err = s.clone().set("symbols", &sent("1.5")).unwrap_err().to_string();
    assert!(err.starts_with("symbols[0]: expected a table") && err.ends_with("got 1.5"), "{err}");
    let err = s.clone().set("notify.webhooks", &json!([{"url": "http://a/", "secret": sent("0.5")}])).unwrap_err().to_string();
    assert_eq!(err, "notify.webhooks[0].secret: expected a string, got a number", "a secret is never shown");
    s.set("symbols", &json!({"symbol": "TSLA", "tick": sent("0.05"), "lot": sent("1e0")})).unwrap();
    assert_eq!(s.get("symbols.TSLA.tick"), Some(json!("0.05")));
}

/// A secret of the wrong type is refused by its kind alone: a number, a date or a switch
/// written where the signing key goes is still the signing key, and errors are shown to
/// callers, logged, and kept by audit.
#[test]
fn a_secret_of_the_wrong_type_is_refused_without_being_shown() {
    const SECRET: &str = "987654321";
    let hook = |secret: Json| json!([{"url": "http://127.0.0.1:9/hook", "secret": secret}]);
    // As `PUT /api/config` reads a body: a number kept as sent, or a plain JSON one.
    for secret in [json!({"$number": SECRET}), json!(987654321), json!(987654321.5), json!(true)] {
        let err = Settings::defaults().set(WEBHOOKS, &hook(secret.clone())).expect_err("not a string").to_string();
        assert!(err.contains("notify.webhooks[0].secret: expected a string, got "), "{err}");
        assert!(!err.contains(SECRET) && !err.contains("true"), "{secret}: {err}");
    }
    // As an edit of agt.toml writes it.
    for written in [SECRET, "987654321.5", "1987-05-27", "true"] {
        let err = load_error(&format!("[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = {written}\n"));
        assert!(err.contains("notify.webhooks[0].secret: expected a string, got "), "{err}");
        assert!(!err.contains(written), "{written}: {err}");
    }
    // A secret left unquoted is a syntax error: it names the line, never quotes it, in a
    // start's or an edit's error and in a `config set`'s refusal to rewrite the file.
    let broken = format!("[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = x{SECRET}\n");
    let err = load_error(&broken);
    assert!(err.contains("line 3") && !err.contains(SECRET), "{err}");
    let (_dir, file) = home_with(&broken);
    let err = Settings::persist(&file, "risk.max_open_orders", &json!(5)).expect_err("the file does not parse").to_string();
    assert!(err.contains("line 3") && !err.contains(SECRET), "{err}");
}

/// An edit of `agt.toml` that lands while a `config set` rewrites it (after the read,
/// before the rename) is merged into the rewrite, not overwritten; a file that changes
/// at every try is left alone, with a message saying so.
#[test]
fn an_edit_made_while_a_set_rewrites_the_file_is_kept() {
    let (_dir, file) = home_with("[risk]\nmax_open_orders = 7\n");
    let mut reads = 0;
    let saved = Settings::persist_over(&file, &[("risk.allow_short", &json!(true))], &mut |_| {
        if reads == 0 {
            std::fs::write(&file, "[risk]\nmax_open_orders = 8\n").unwrap();
        }
        reads += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(reads, 2, "merged again into the edited file");
    assert_eq!(saved.base.as_deref(), Some("[risk]\nmax_open_orders = 8\n"));
    let s = Settings::load(&file, &no_env).unwrap();
    assert_eq!((s.risk.max_open_orders, s.risk.allow_short), (8, true));
    let mut n = 10;
    let err = Settings::persist_over(&file, &[("risk.max_open_orders", &json!(5))], &mut |_| {
        n += 1;
        std::fs::write(&file, format!("[risk]\nmax_open_orders = {n}\n")).unwrap();
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Busy { .. }) && err.to_string().contains("nothing was saved"), "{err}");
    assert_eq!(Settings::load(&file, &no_env).unwrap().risk.max_open_orders, n, "the last edit stands");
}
