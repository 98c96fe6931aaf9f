//! `agt tui` for real: the binary in a tmux pane (120x40, and 40x12) against a real daemon, driven
//! with keys and read back with `capture-pane`. Skipped, with a note, where tmux is not
//! installed (CI installs it).

use crate::util::*;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long any one thing may take to appear on screen.
const WAIT: Duration = Duration::from_secs(15);

/// A private tmux server (its own socket) holding one shell in a pane (120x40 unless said).
struct Pane {
    server: String,
    /// The server's socket file, which `kill-server` leaves behind.
    socket: Option<String>,
}

impl Pane {
    fn available() -> bool {
        let ok = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("note: tmux is not installed; skipping the `agt tui` terminal test");
        }
        ok
    }

    fn open() -> Pane {
        Pane::open_sized(120, 40)
    }

    /// A pane of `w` columns and `h` rows.
    fn open_sized(w: u16, h: u16) -> Pane {
        let (w, h) = (w.to_string(), h.to_string());
        let mut pane = Pane { server: format!("agt-tui-{}", unique()), socket: None };
        // A bare shell with a known prompt; the dashboard's variables, nothing of ours.
        let shell = "env -u AGT_URL -u AGT_TOKEN -u AGT_SOCKET -u AGT_HOME NO_COLOR=1 TERM=xterm-256color PS1='$ ' sh";
        pane.tmux(&["new-session", "-d", "-s", "t", "-x", &w, "-y", &h, shell]);
        pane.socket = Some(pane.tmux(&["display-message", "-p", "#{socket_path}"]).trim().to_string());
        // capture-pane drops trailing blanks: the prompt reads `$`.
        pane.wait_until("the shell prompt", |s| s.lines().any(|l| l.trim_end() == "$"));
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.server).args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Named keys (`Enter`, `Tab`, `BSpace`) or single characters.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Text typed as is.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// Polls the screen until `pred` holds; fails with the screen after [`WAIT`].
    fn wait_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait_until(&format!("{text:?}"), |s| s.contains(text))
    }

    fn alternate_screen(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", "t", "#{alternate_on}"]).trim() == "1"
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.server).arg("kill-server").output();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// `c` on the Orders tab, confirmed with `y`: the selected row then reads cancelled.
fn cancel_the_selected_order(pane: &Pane) {
    pane.keys(&["c"]);
    pane.wait_for("Cancel order");
    pane.keys(&["y"]);
    pane.wait_until("the order cancelled", |s| line_with(s, "▶").is_some_and(|l| l.contains("cancelled")));
}

/// The line of the screen that holds `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

/// A daemon with a user, alice (with 100 000 USD), and a fresh symbol on a 0.01 tick and
/// a lot of 1: where the dashboards that trade start.
fn alice_and_a_symbol() -> (Daemon, String, String) {
    let d = Daemon::start();
    let alice = format!("alice{}", unique());
    d.ok("POST", "/api/users", Some(json!({"username": alice, "email": format!("{alice}@example.com")})));
    d.deposit(&alice, "USD", "100000");
    let sym = d.symbol("0.01", "1");
    (d, alice, sym)
}

#[test]
fn tui_places_and_cancels_an_order_and_gives_the_terminal_back() {
    if !Pane::available() {
        return;
    }
    let (mut d, alice, sym) = alice_and_a_symbol();

    let pane = Pane::open();
    pane.type_text(&format!("{BIN} --home {} tui --symbol {sym}; echo \"tui exited $?\"", d.path().display()));
    pane.keys(&["Enter"]);
    pane.wait_for("● live");
    assert!(pane.alternate_screen(), "the dashboard runs on the alternate screen");
    pane.wait_for("Services · 10/10 running");

    // Tabs switch with digits and Tab.
    pane.keys(&["2"]);
    pane.wait_for("no orders yet");
    pane.keys(&["Tab"]);
    pane.wait_for(&format!(" {sym} · "));
    pane.keys(&["BTab"]);
    pane.wait_for("Orders · 0 of 0");

    // The form says what is wrong before anything is sent.
    pane.keys(&["n"]);
    pane.wait_for("New order");
    pane.type_text(&alice);
    pane.keys(&["Tab", "C-u"]);
    pane.type_text(&sym);
    pane.keys(&["Tab", "Tab", "Tab"]);
    pane.type_text("7");
    pane.keys(&["Tab"]);
    pane.type_text("101.255");
    pane.keys(&["Enter"]);
    pane.wait_for("✗ must be on the tick 0.01");
    pane.keys(&["BSpace", "Enter"]);
    let screen = pane.wait_for("placed ");
    assert!(screen.contains(&format!("buy 7 {sym} @ 101.25: new")), "{screen}");

    // The order is in the table, selected, and resting in the book.
    let screen = pane.wait_until("the order in the table", |s| line_with(s, "▶").is_some_and(|l| l.contains(&sym) && l.contains("101.25")));
    assert!(line_with(&screen, "▶").unwrap().contains("new"), "{screen}");
    // Enter shows it whole, its full id and user too; Esc goes back to the table.
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("Esc closes");
    let id = d.ok("GET", &format!("/api/orders?symbol={sym}&status=all"), None)[0]["order_id"].as_str().unwrap().to_string();
    assert!(screen.contains(&id) && screen.contains(&format!("user  {alice} (")), "{screen}");
    pane.keys(&["Escape"]);
    pane.wait_until("the detail closed", |s| !s.contains("Esc closes"));
    pane.keys(&["3"]);
    pane.wait_until("the bid in the ladder", |s| line_with(s, "bid").is_some_and(|l| l.contains("101.25") && l.contains(" 7 ")));

    // Cancel asks first, then the table and the book show it.
    pane.keys(&["2"]);
    pane.wait_for("Orders · 1 of 1");
    cancel_the_selected_order(&pane);
    let orders = d.ok("GET", &format!("/api/orders?symbol={sym}&status=all"), None);
    assert_eq!(orders[0]["status"], "cancelled", "{orders}");
    pane.keys(&["3"]);
    pane.wait_for("empty book");

    // The daemon goes away and comes back: the dashboard says so and recovers by itself.
    // An order sent meanwhile is said not sent (not "refused"), and Enter sends it again.
    // The Events title says the stream is reconnecting, not "following", until it is back.
    let events_title = |s: &str, state: &str| s.lines().any(|l| l.starts_with("┌ Events") && l.contains(state));
    pane.keys(&["5"]);
    pane.wait_until("Events following", |s| events_title(s, " following "));
    d.kill9();
    pane.wait_for("reconnecting…");
    pane.wait_until("Events reconnecting", |s| events_title(s, " reconnecting… ") && !events_title(s, "following"));
    pane.keys(&["3"]);
    pane.keys(&["n"]);
    pane.wait_for("New order");
    pane.type_text("2");
    pane.keys(&["Tab"]);
    pane.type_text("99");
    pane.keys(&["Enter"]);
    // The whole message, not the capture taken as its first part is drawn: tmux can
    // catch the terminal mid-write.
    let screen =
        pane.wait_until("the not-sent message", |s| s.contains("✗ not sent: cannot reach") && s.contains("once the daemon is back"));
    assert!(!screen.contains("the daemon refused"), "{screen}");
    d.spawn();
    pane.wait_for("● live");
    pane.keys(&["Enter"]);
    pane.wait_for(&format!("buy 2 {sym} @ 99: new"));
    pane.keys(&["5"]);
    pane.wait_until("Events following again", |s| events_title(s, " following ") && !events_title(s, "reconnecting"));
    pane.keys(&["1"]);
    pane.wait_for("Services · 10/10 running");

    // Down to the smallest supported size: everything is laid out again, nothing lost.
    pane.tmux(&["resize-window", "-t", "t", "-x", "80", "-y", "24"]);
    let screen = pane.wait_until("a redraw at 80x24", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 24 && lines[0].ends_with("● live") && lines[23].starts_with("Tab switch")
    });
    for needle in ["Services · 10/10 running", "notify", "orders/s", "events/s"] {
        assert!(screen.contains(needle), "{needle} missing at 80x24:\n{screen}");
    }

    // Help, then Esc closes it and Esc again quits: the shell is back, on the main screen, in cooked mode.
    pane.keys(&["?"]);
    pane.wait_for("Keys · Esc or ? closes");
    pane.keys(&["Escape"]);
    pane.wait_until("the help closed", |s| !s.contains("Keys · Esc"));
    pane.keys(&["Escape"]);
    pane.wait_for("tui exited 0");
    assert!(!pane.alternate_screen(), "the alternate screen is left");
    pane.type_text("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ,");
    pane.keys(&["Enter"]);
    pane.wait_for("icanon,echo,");
}

/// At 40x12, the narrowest the snapshots draw, for real: every tab, a detail, the help
/// and a long filter lay out without a panic, each screen names its tab and its panel,
/// and the footer keeps its last keys whole, a `…` where others gave way, never a word
/// cut at the edge.
#[test]
fn tui_at_40_columns_marks_what_it_leaves_out() {
    if !Pane::available() {
        return;
    }
    let (d, alice, sym) = alice_and_a_symbol();
    let bob = d.user("bob");
    d.deposit(&bob, &sym, "100");
    d.place(&bob, &sym, "sell", "10", Some("150"));
    d.place(&alice, &sym, "buy", "4", Some("151"));
    d.place(&alice, &sym, "buy", "5", Some("140"));

    let pane = Pane::open_sized(40, 12);
    pane.type_text(&format!("{BIN} --home {} tui --symbol {sym}; echo \"tui exited $?\"", d.path().display()));
    pane.keys(&["Enter"]);
    pane.wait_for("● live");
    let footer = |s: &str| s.lines().nth(11).unwrap_or("").trim_end().to_string();
    for (key, tab, panel) in [
        ("1", "1 Overview", "Services · 10/10 running".to_string()),
        ("2", "2 Orders", "Orders · 3 of 3".to_string()),
        ("3", "3 Book", format!("{sym} · spread 10.00")),
        ("4", "4 Accounts", "Users · ".to_string()),
        ("5", "5 Events", "Events · ".to_string()),
        ("6", "6 Audit", "Audit · newest".to_string()),
    ] {
        // The tables' headers and words whole, or short on purpose: squeezed to fixed
        // widths they read `RESTAR`, `runnin`, `event:or`, `POST /ap`.
        let (has, lacks): (&[&str], &[&str]) = match key {
            "1" => (&["SERVICE", "STATE", "RST", "running"], &["RESTAR", "runnin "]),
            "5" => (&["TYPE", "ORDER_CREATED"], &["ORDER_CREATE "]),
            "6" => (&["ACTOR", "ACTION"], &["event:or ", "POST /ap "]),
            _ => (&[], &[]),
        };
        pane.keys(&[key]);
        let screen = pane.wait_until(&format!("tab {tab} with {panel:?}"), |s| {
            s.lines().next().is_some_and(|l| l.contains(tab))
                && s.contains(&panel)
                && footer(s).ends_with("? help  q quit")
                && has.iter().all(|n| s.contains(n))
        });
        let keys = footer(&screen);
        // The footer at 80 columns on this tab, less what gave way: a `…` says where.
        assert!(keys.len() < 30 || keys.contains("  …  "), "{tab}: keys left out without a mark: {keys:?}\n{screen}");
        for needle in has {
            assert!(screen.contains(needle), "{tab}: {needle:?} missing:\n{screen}");
        }
        for needle in lacks {
            assert!(!screen.contains(needle), "{tab}: {needle:?} cut without a mark:\n{screen}");
        }
    }

    // A detail and the help open, scroll and close at this size too.
    pane.keys(&["2"]);
    pane.wait_for("Orders · 3 of 3");
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("Esc closes");
    assert!(screen.contains("order id") && screen.contains("symbol  "), "{screen}");
    pane.keys(&["j"]);
    pane.keys(&["Escape"]);
    pane.wait_until("the detail closed", |s| s.contains("Orders · 3 of 3") && !s.contains("Esc closes"));
    pane.keys(&["?"]);
    let screen = pane.wait_for("Keys · Esc or ? closes");
    assert!(screen.contains("quit"), "{screen}");
    pane.keys(&["?"]);
    pane.wait_until("the help closed", |s| !s.contains("Keys · ") && s.contains("Orders · 3 of 3"));

    // A filter longer than the footer: its tail and the cursor stay in sight.
    pane.keys(&["/"]);
    pane.type_text("user:alice sym:AAPL status:part-filled side:buy");
    let screen = pane.wait_until("the filter's tail", |s| footer(s).ends_with("side:buy█  …  Esc cancel"));
    assert!(footer(&screen).starts_with("/…"), "{screen}");
    pane.keys(&["Escape"]);
    pane.wait_until("the filter cancelled", |s| footer(s).starts_with("/ filter"));

    pane.keys(&["q"]);
    let screen = pane.wait_for("tui exited 0");
    assert!(!screen.contains("panicked"), "{screen}");
}

/// With most of the event log pruned (`events.retain_s`), the dashboard still finds the
/// newest event, goes live from the oldest kept, and shows what happens next.
#[test]
fn tui_goes_live_on_a_daemon_that_pruned_its_old_events() {
    if !Pane::available() {
        return;
    }
    let d = Daemon::with_config("[events]\nretain_s = 1\n");
    // More events than the dashboard's backlog, then wait until all but the newest are gone.
    for i in 0..260 {
        d.user(&format!("old{i}"));
    }
    let start = std::time::Instant::now();
    while d.req("GET", "/api/events?since=1", None).0 != 410 || d.events("").len() > 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "the old events were not pruned");
        std::thread::sleep(Duration::from_millis(100));
    }

    let pane = Pane::open();
    pane.type_text(&format!("{BIN} --home {} tui; echo \"tui exited $?\"", d.path().display()));
    pane.keys(&["Enter"]);
    pane.wait_for("● live");
    pane.keys(&["5"]);
    let name = format!("fresh{}", unique());
    d.user(&name);
    pane.wait_until("the new user's event", |s| s.contains("USER_CREATED") && s.contains(&name));
    pane.keys(&["q"]);
    pane.wait_for("tui exited 0");
}

#[test]
fn tui_with_a_viewer_token_is_read_only() {
    if !Pane::available() {
        return;
    }
    let d = Daemon::start();
    let token = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer", "name": "tui-test"})));
    let url = format!("http://{}", d.http.as_ref().unwrap());

    let pane = Pane::open();
    pane.type_text(&format!("{BIN} tui --url {url} --token {}; echo \"tui exited $?\"", token["token"].as_str().unwrap()));
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("viewer · read-only");
    assert!(screen.contains("● live"), "{screen}");
    pane.keys(&["2"]);
    pane.wait_for("Orders · ");
    pane.keys(&["n"]);
    pane.wait_for("read-only session (a viewer token)");
    assert!(!pane.screen().contains("New order"));
    pane.keys(&["C-c"]);
    pane.wait_for("tui exited 0");
    assert!(!pane.alternate_screen());
}

/// A trader's token over TCP: the dashboard opens (polled besides its stream, which holds
/// only its own user's events), shows the trader's own orders, account and events and the
/// market, follows what others do to them, says which panels the role may not read, and
/// comes back after a crash.
#[test]
fn tui_with_a_trader_token_shows_its_own_orders_account_and_market() {
    if !Pane::available() {
        return;
    }
    let (mut d, alice, sym) = alice_and_a_symbol();
    let bob = d.user("bob");
    d.deposit(&bob, &sym, "10");
    let (_, bobs) = d.place(&bob, &sym, "sell", "2", Some("250"));
    let bobs = bobs["order_id"].as_str().unwrap().to_string();
    let token = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})));
    let url = format!("http://{}", d.http.as_ref().unwrap());

    let pane = Pane::open();
    pane.type_text(&format!("{BIN} tui --url {url} --token {} --symbol {sym}; echo \"tui exited $?\"", token["token"].as_str().unwrap()));
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("● polling");
    assert!(pane.alternate_screen(), "the dashboard runs on the alternate screen:\n{screen}");
    let screen = pane.wait_for(&format!("trader {alice}"));
    assert!(!screen.contains("read-only"), "a trader may trade:\n{screen}");
    // Overview: the services' states from /health, what is not the trader's said once.
    let screen = pane.wait_for("Services · 10/10 running");
    for needle in ["only admin and viewer tokens read it", "no event rate for a trader token"] {
        assert!(screen.contains(needle), "{needle}:\n{screen}");
    }
    assert!(!screen.contains("not refreshed") && !screen.contains("forbidden"), "{screen}");

    // Orders: its own only (bob's resting sell is not there), and a new one placed as itself.
    pane.keys(&["2"]);
    pane.wait_for(&format!("{alice}'s own"));
    let screen = pane.wait_for("no orders yet");
    assert!(!screen.contains(&bobs[bobs.len() - 8..]), "another user's order is shown:\n{screen}");
    pane.keys(&["n"]);
    let screen = pane.wait_for("New order");
    assert!(screen.contains(&alice) && screen.contains(&sym), "prefilled with the trader and the symbol:\n{screen}");
    pane.type_text("3");
    pane.keys(&["Tab"]);
    pane.type_text("100");
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("placed ");
    assert!(screen.contains(&format!("buy 3 {sym} @ 100: new")), "{screen}");
    pane.wait_until("the order in the table", |s| line_with(s, "▶").is_some_and(|l| l.contains(&sym) && l.contains(" new")));

    // Another user's fill and an admin's deposit reach the screen with no event: polled.
    d.place(&bob, &sym, "sell", "1", Some("100"));
    pane.wait_until("the fill", |s| line_with(s, "▶").is_some_and(|l| l.contains("part-filled")));
    pane.keys(&["3"]);
    pane.wait_until("the bid in the ladder", |s| line_with(s, "bid").is_some_and(|l| l.contains("100.00") && l.contains(" 2 ")));
    pane.keys(&["4"]);
    pane.wait_until("its account", |s| line_with(s, "USD").is_some_and(|l| l.contains("99900") && l.contains("200")));
    d.deposit(&alice, "USD", "5000");
    pane.wait_until("the deposit", |s| line_with(s, "USD").is_some_and(|l| l.contains("104900")));
    let screen = pane.screen();
    assert!(screen.contains("Users · 1") && !screen.contains("bob"), "its own user alone:\n{screen}");
    pane.keys(&["d"]);
    pane.wait_for("deposits and withdrawals need an admin token");
    assert!(!pane.screen().contains("Deposit to"));

    // Events: its own user's events, as they come, none of bob's; filtered by type as an
    // admin's are. It said the session was polled and named `agt events tail -f`.
    pane.keys(&["5"]);
    let screen = pane.wait_until("its own events", |s| {
        s.contains(&format!("{alice}'s own"))
            && s.contains("ORDER_EXECUTED")
            && s.contains("ACCOUNT_DEPOSITED")
            && s.contains("USER_CREATED")
    });
    assert!(!screen.contains(&bobs[bobs.len() - 8..]) && !screen.contains("username=bob"), "another user's events:\n{screen}");
    assert!(!screen.contains("TRADE_EXECUTED") && !screen.contains("tail -f"), "{screen}");
    pane.keys(&["/"]);
    pane.type_text("deposit");
    pane.keys(&["Enter"]);
    pane.wait_until("its deposits alone", |s| s.contains("type: deposit") && s.contains("ACCOUNT_DEPOSITED") && !s.contains("ORDER_"));
    d.deposit(&alice, "USD", "7");
    pane.wait_until("a deposit as it comes", |s| line_with(s, "ACCOUNT_DEPOSITED").is_some_and(|l| l.contains("amount=7 ")));
    pane.keys(&["Escape"]);
    pane.wait_until("the filter cleared", |s| !s.contains("type: deposit") && s.contains("ORDER_CREATED"));

    // Audit says the role may not read it.
    pane.keys(&["6"]);
    pane.wait_for("The audit log is not available to a trader token.");

    // A crash and a start on the same address: reconnecting, then polled again.
    let addr = d.http.clone().unwrap();
    d.kill9();
    pane.wait_for("reconnecting…");
    let config = std::fs::read_to_string(d.path().join("agt.toml")).unwrap();
    std::fs::write(d.path().join("agt.toml"), config.replace("127.0.0.1:0", &addr)).unwrap();
    d.spawn();
    assert_eq!(d.http.as_deref(), Some(addr.as_str()));
    pane.wait_for("● polling");
    pane.keys(&["2"]);
    pane.wait_until("its order again", |s| line_with(s, "▶").is_some_and(|l| l.contains("part-filled")));

    // Cancel asks first, then the table shows it; the daemon agrees.
    cancel_the_selected_order(&pane);
    let orders = d.ok("GET", &format!("/api/orders?user_id={alice}&status=all"), None);
    assert_eq!(orders[0]["status"], "cancelled", "{orders}");
    pane.keys(&["q"]);
    pane.wait_for("tui exited 0");
    assert!(!pane.alternate_screen());
}

#[test]
fn tui_without_a_daemon_says_how_to_start_one() {
    let home = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
    let out = Command::new(BIN).arg("--home").arg(home.path()).arg("tui").env_remove("AGT_URL").env_remove("AGT_SOCKET").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agt daemon start"));
}

/// Run from a script (no terminal on stdin or stdout), the dashboard does not start: it
/// exits 1, a local failure of a well-formed command, and names the commands to use.
#[test]
fn tui_without_a_terminal_exits_1_and_points_at_the_other_commands() {
    let d = Daemon::start();
    d.cli()
        .arg("tui")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("agt tui needs a terminal"))
        .stderr(predicates::str::contains("-o json"));
}
