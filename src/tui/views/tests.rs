//! Every view drawn with fixed data on ratatui's `TestBackend`, at 80x24 (the smallest
//! supported terminal) and 120x40, and compared with the snapshots in `snapshots/`.
//! `cargo insta review` (or `INSTA_UPDATE=always`) accepts intended changes.

use super::*;
use crate::tui::action::{Action, Command, Net, Snapshot};
use crate::tui::app::App;
use crate::tui::fixture::{self, ch, key, typing};
use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn render(app: &App, w: u16, h: u16, theme: Theme) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app, theme)).unwrap();
    t
}

fn check(name: &str, app: &App) {
    for (w, h) in SIZES {
        let t = render(app, w, h, Theme { color: true });
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

/// The screen's rows as plain text, uncoloured.
fn screen_rows(app: &App, w: u16, h: u16) -> Vec<String> {
    let t = render(app, w, h, Theme { color: false });
    let buf = t.backend().buffer();
    (0..h).map(|y| (0..w).map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol())).collect()).collect()
}

/// The open form's focused field and its value as drawn: the text typed with its cursor,
/// or the choice in brackets.
fn focused_field(app: &App) -> (&'static str, String) {
    let Overlay::Form(form) = &app.overlay else { panic!("a form is open") };
    let field = &form.fields[form.focus];
    let value = match &field.input {
        crate::tui::form::Input::Text(v) => format!("{v}█"),
        crate::tui::form::Input::Choice { .. } => format!("[{}]", field.value()),
    };
    (field.label, value)
}

fn on_tab(c: char) -> App {
    let mut app = fixture::app();
    app.update(ch(c));
    app.update(Action::Flush);
    app
}

/// The Orders tab's form filled in (10 @ 150.25) and sent: the app, and the command it
/// handed the net task, whose answer a test then gives it.
fn an_order_sent() -> (App, crate::tui::action::Command) {
    let mut app = on_tab('2');
    app.update(ch('n'));
    typing(&mut app, "10");
    app.update(key(KeyCode::Tab));
    typing(&mut app, "150.25");
    let fx = app.update(key(KeyCode::Enter));
    let Some(crate::tui::action::Effect::Send(command)) = fx.into_iter().next() else { panic!("sent") };
    (app, command)
}

#[test]
fn overview() {
    check("overview", &fixture::app());
}

#[test]
fn orders() {
    check("orders", &on_tab('2'));
}

#[test]
fn orders_filtered() {
    let mut app = on_tab('2');
    app.update(ch('/'));
    typing(&mut app, "bob");
    check("orders_filtering", &app);
}

#[test]
fn book() {
    check("book", &on_tab('3'));
}

#[test]
fn accounts() {
    check("accounts", &on_tab('4'));
}

#[test]
fn events() {
    let mut app = on_tab('5');
    app.update(ch(' '));
    app.update(Action::Net(Net::Event(Box::new(fixture::event(306, "ORDER_CANCELLED", "orders", serde_json::json!({}))))));
    check("events_paused", &app);
    app.update(ch(' '));
    check("events", &app);
}

#[test]
fn audit() {
    check("audit", &on_tab('6'));
}

/// A chain cut short of its anchor: the verdict says which records are missing, whole,
/// at 80 columns too.
#[test]
fn audit_broken() {
    let mut app = on_tab('6');
    let anchor = crate::api::UnmetAnchor { seq: 1008, hash: "ab".repeat(32), chain_end: Some(1006), file: "data/audit.head.lost".into() };
    let verify =
        crate::api::AuditVerify { ok: false, records: 1006, first_bad: Some(1007), unmet_anchor: Some(anchor), anchor_unreadable: None };
    app.update(fixture::snap(crate::tui::action::Snapshot::AuditVerify(verify)));
    check("audit_broken", &app);
}

/// An anchor a start could not read: every record hashes well, but the chain's end is
/// unchecked, and the verdict says so.
#[test]
fn audit_anchor_unreadable() {
    let mut app = on_tab('6');
    let unreadable = crate::api::UnreadableAnchor { file: "data/audit.head.unreadable".into(), error: "is empty".into() };
    let verify =
        crate::api::AuditVerify { ok: false, records: 1006, first_bad: None, unmet_anchor: None, anchor_unreadable: Some(unreadable) };
    app.update(fixture::snap(crate::tui::action::Snapshot::AuditVerify(verify)));
    check("audit_anchor_unreadable", &app);
}

#[test]
fn help() {
    let mut app = on_tab('2');
    app.update(ch('?'));
    check("help", &app);
}

#[test]
fn order_form_with_errors() {
    let mut app = on_tab('2');
    app.update(ch('n'));
    typing(&mut app, "1.5");
    app.update(key(KeyCode::Enter));
    check("form_errors", &app);
}

#[test]
fn order_form_refused_by_the_daemon() {
    let (mut app, command) = an_order_sent();
    let failure = crate::tui::action::Failure {
        status: 422,
        code: "insufficient_funds".into(),
        message: "buying 10 AAPL at 150.25 needs 1502.50 USD available, but only 1000 is (short by 502.50)".into(),
        nothing_sent: false,
    };
    app.update(Action::Net(Net::Done(command, Err(failure))));
    check("form_refused", &app);
}

#[test]
fn cancel_confirm() {
    let mut app = on_tab('2');
    app.update(ch('c'));
    check("confirm", &app);
    app.update(ch('y'));
    let mut done = fixture::orders()[0].clone();
    done.status = crate::api::OrderStatus::Cancelled;
    app.update(Action::Net(Net::Done(Command::Cancel { order_id: done.order_id.clone() }, Ok(serde_json::to_value(&done).unwrap()))));
    check("cancelled", &app);
}

#[test]
fn reconnecting() {
    let mut app = fixture::app();
    app.update(Action::Net(Net::Disconnected("cannot reach the agt daemon at /tmp/agt.sock: connection refused".into())));
    check("reconnecting", &app);
}

/// A daemon gone away does not look alive on the Overview: its services are "last seen"
/// running, their uptimes stop counting, and the rates show no number; all comes back
/// with the stream.
#[test]
fn a_daemon_away_is_not_shown_running() {
    let mut app = fixture::app();
    let uptime = |app: &App| app.services.first().map(|s| app.service_uptime(s));
    let before = uptime(&app);
    app.update(Action::Net(Net::Disconnected("cannot reach the agt daemon at /tmp/agt.sock: connection refused".into())));
    for _ in 0..12 {
        app.update(Action::Tick);
    }
    assert_eq!(uptime(&app), before, "a dead daemon's uptime does not count on");
    let screen = format!("{}", render(&app, 120, 40, Theme { color: false }).backend());
    for needle in ["Services · daemon away 12s · last seen", "orders/s – ", "trades/s – ", "placement p99 – "] {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
    app.update(Action::Net(Net::Connected { head: 300, own: false }));
    assert_eq!(app.away_for(), None);
    let screen = format!("{}", render(&app, 120, 40, Theme { color: false }).backend());
    assert!(!screen.contains("daemon away"), "back:\n{screen}");
}

#[test]
fn before_any_data() {
    let app = App::new(crate::tui::app::Settings { endpoint: "http://10.0.0.5:8000".into(), read_only: true, symbol: None });
    check("empty", &app);
    let mut app = app;
    for c in ['2', '3', '4', '5', '6'] {
        app.update(ch(c));
        check(&format!("empty_{}", app.tab.title().to_lowercase()), &app);
    }
}

/// A trader's dashboard: its own orders, account, events and the market; the services'
/// states without their details; Audit dimmed in the tab bar and saying why.
#[test]
fn trader() {
    for (tab, name) in [('1', "overview"), ('2', "orders"), ('3', "book"), ('4', "accounts"), ('5', "events"), ('6', "audit")] {
        let mut app = fixture::trader_app();
        app.update(ch(tab));
        check(&format!("trader_{name}"), &app);
    }
}

/// The panels a trader may not read say so in words, at 80 columns too, and no error
/// shows; the tabs it may not read are dimmed, the others not.
#[test]
fn a_trader_is_told_what_it_may_not_read() {
    let mut app = fixture::trader_app();
    let t = render(&app, 80, 24, Theme { color: true });
    let screen = format!("{}", t.backend());
    for needle in ["● polling", "trader alice", "Services · 9/10 running", "only admin and viewer tokens", "no event rate for a trader"]
    {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
    assert!(!screen.contains("not refreshed") && !screen.contains("forbidden"), "{screen}");
    let title_colour = |t: &Terminal<TestBackend>, title: &str| {
        let row: Vec<_> = t.backend().buffer().content()[..80].to_vec();
        let text: String = row.iter().map(|c| c.symbol()).collect();
        let at = text.find(title).unwrap_or_else(|| panic!("{title} in {text}"));
        row[text[..at].chars().count()].fg
    };
    let dim = Theme { color: true }.dim().fg.unwrap();
    assert_eq!(title_colour(&t, "6 Audit"), dim);
    assert_ne!(title_colour(&t, "5 Events"), dim);
    assert_ne!(title_colour(&t, "2 Orders"), dim);
    app.update(ch('6'));
    let screen = format!("{}", render(&app, 80, 24, Theme { color: false }).backend());
    assert!(
        screen.contains("The audit log is not available to a trader token.") && screen.contains("only admin and viewer tokens"),
        "{screen}"
    );
    assert!(!screen.contains("v verify"), "keys of an unavailable tab:\n{screen}");

    // Its Events tab: its own user's events, with the keys an admin has there; it said the
    // session was polled and named `agt events tail -f`.
    app.update(ch('5'));
    let screen = format!("{}", render(&app, 80, 24, Theme { color: false }).backend());
    for needle in ["Events · 3 shown · alice's own · following", "ACCOUNT_DEPOSITED", "ORDER_CREATED", "space pause", "/ filter"] {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
    assert!(!screen.contains("SERVICE_RESTARTED") && !screen.contains("tail -f"), "{screen}");

    // A session the daemon refuses the stream says so there instead.
    let mut refused = App::new(crate::tui::app::Settings::default());
    refused.update(Action::Net(Net::Role(crate::api::Role::Trader)));
    refused.update(Action::Net(Net::Polling(fixture::TRADER_REFUSED.into())));
    refused.update(ch('5'));
    let screen = format!("{}", render(&refused, 80, 24, Theme { color: false }).backend());
    assert!(screen.contains("does not follow the event stream for a trader token.") && screen.contains("bound to no user"), "{screen}");
    assert!(!screen.contains("space pause"), "keys of an unavailable tab:\n{screen}");
    app.update(ch('4'));
    let screen = format!("{}", render(&app, 80, 24, Theme { color: false }).backend());
    assert!(screen.contains("n new order") && !screen.contains("d deposit"), "{screen}");
}

/// Without colour nothing has a foreground or background colour, and the words that
/// carry the meaning are still there.
#[test]
fn no_color_draws_no_colour() {
    for tab in ['1', '2', '3', '4', '5', '6'] {
        let app = on_tab(tab);
        let t = render(&app, 120, 40, Theme { color: false });
        for cell in t.backend().buffer().content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "tab {tab}: {:?}", cell.symbol());
        }
    }
    let t = render(&fixture::app(), 80, 24, Theme { color: false });
    let text = format!("{}", t.backend());
    assert!(text.contains("FAILED") && text.contains("restarted 2×"), "{text}");
}

/// Drawing never panics, however small or large the terminal.
#[test]
fn any_size_draws() {
    for (tab, trader) in ['1', '2', '3', '4', '5', '6'].into_iter().flat_map(|t| [(t, false), (t, true)]) {
        let mut app = if trader { fixture::trader_app() } else { fixture::app() };
        app.update(ch(tab));
        app.update(Action::Flush);
        for (w, h) in [(1, 1), (20, 5), (40, 10), (79, 23), (200, 60)] {
            render(&app, w, h, Theme { color: true });
        }
        app.update(ch('?'));
        render(&app, 30, 8, Theme { color: true });
    }
}

#[test]
fn a_long_message_takes_two_rows() {
    let mut app = on_tab('2');
    app.update(Action::Net(Net::Done(
        Command::Cancel { order_id: "ord_0195aaaa00000000c0ffee01".into() },
        Err(crate::tui::action::Failure {
            status: 503,
            code: "service_unavailable".into(),
            message: "the orders service has failed (it crashed too often and is not restarted by itself); `agt service restart orders` starts it again".into(), nothing_sent: false,
        }),
    )));
    let t = render(&app, 80, 24, Theme { color: false });
    let screen = format!("{:?}", t.backend());
    assert!(screen.contains("starts it again"), "{screen}");
}

/// A message longer than its three rows ends the last in `…`: cut at the bottom, the
/// words that say what to fix were missing, and nothing said so.
#[test]
fn a_message_longer_than_three_rows_ends_in_a_mark() {
    let mut app = on_tab('2');
    let message = "the orders service has failed (it crashed too often and is not restarted by itself: its store \
                   data/orders.db could not be opened, the disk is full or the file is not readable by the daemon's user); \
                   free some room or fix the file's owner, then `agt service restart orders` starts it again, or stop \
                   the daemon and start it again, which also starts the orders service with every other one";
    app.update(Action::Net(Net::Done(
        Command::Cancel { order_id: "ord_0195aaaa00000000c0ffee01".into() },
        Err(crate::tui::action::Failure { status: 503, code: "service_unavailable".into(), message: message.into(), nothing_sent: false }),
    )));
    for (w, h) in [(40, 10), (80, 24), (120, 40)] {
        let t = render(&app, w, h, Theme { color: true });
        insta::assert_snapshot!(format!("long_message_{w}x{h}"), t.backend());
        let cells = t.backend().buffer().content();
        let row = |y: usize| cells[y * usize::from(w)..(y + 1) * usize::from(w)].iter().map(|c| c.symbol()).collect::<String>();
        // The message's rows 1 to 3, the body's border under them.
        assert!(row(1).starts_with("cancel c0ffee01 failed:"), "{}", t.backend());
        assert!(row(3).trim_end().ends_with('…'), "the last row marks the cut:\n{}", t.backend());
        assert!(row(4).starts_with('┌'), "{}", t.backend());
    }
    // A message that fits its rows is shown whole, unmarked, in as many rows as it takes.
    let t = render(&app, 200, 40, Theme { color: false });
    let screen = format!("{}", t.backend());
    assert!(screen.contains("with every other one") && !screen.contains('…'), "{screen}");
}

/// A filter longer than the footer shows its tail after a `…`, the cursor right after the
/// last letter typed and the key that cancels beside it: cut at the end, the line lost
/// the cursor and what was just typed.
#[test]
fn a_long_filter_keeps_the_cursor_in_sight() {
    // The bottom row as it reads: a wide letter's second cell (blank) left out.
    let footer = |app: &App, w: u16, h: u16| -> String {
        use unicode_width::UnicodeWidthStr;
        let t = render(app, w, h, Theme { color: false });
        let cells = &t.backend().buffer().content()[usize::from(h - 1) * usize::from(w)..usize::from(h) * usize::from(w)];
        let (mut row, mut skip) = (String::new(), 0);
        for c in cells {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            row.push_str(c.symbol());
            skip = c.symbol().width().saturating_sub(1);
        }
        row
    };
    let mut app = on_tab('2');
    app.update(ch('/'));
    let typed = "user:alice sym:AAPL status:part-filled side:buy type:limit, last";
    assert_eq!(typed.len(), 64, "the longest filter the app takes");
    typing(&mut app, typed);
    for (w, h) in [(40, 10), (80, 24)] {
        let t = render(&app, w, h, Theme { color: true });
        insta::assert_snapshot!(format!("long_filter_{w}x{h}"), t.backend());
        let row = footer(&app, w, h);
        assert!(row.starts_with("/…") && row.trim_end().ends_with("…  Esc cancel"), "{row:?}");
        let (before, _) = row.split_once('█').expect("the cursor on screen");
        assert!(before.ends_with("limit, last"), "the cursor right after the last letter typed: {row:?}");
    }
    // Whole where it fits, with every key.
    let row = footer(&app, 120, 40);
    assert!(row.starts_with(&format!("/{typed}█  Enter keep  Esc cancel")), "{row:?}");
    // Wide letters take two columns each: the cursor is still right after the last.
    let mut app = on_tab('2');
    app.update(ch('/'));
    typing(&mut app, &"株式".repeat(9));
    let row = footer(&app, 40, 10);
    assert_eq!(row, format!("/…{}█  …  Esc cancel", &"株式".repeat(9)[3 * 7..]), "{row:?}");
    // On a line too narrow for the keys as well, the filter takes it all.
    assert_eq!(footer(&app, 14, 10), "/…式株式株式█ ");
}

/// An amount is never shown cut (cut unmarked, 123456789016.04595678 read as
/// 123456789016.0, another amount; cut marked, its last digits were still gone): whole,
/// or its column is left out, the total last of the amounts, at every width the view
/// draws at. At 60 columns the totals were cut.
#[test]
fn an_amount_is_whole_or_its_column_left_out() {
    let mut app = on_tab('4');
    let mut account = fixture::account();
    account.balances[1].total = "123456789016.04595678".parse().unwrap();
    account.balances[1].available = "123456787513.54595678".parse().unwrap();
    app.update(fixture::snap(crate::tui::action::Snapshot::Account(account)));
    // The account's table rows: the right pane of each row that names an asset or symbol.
    let table_rows = |w: u16| -> Vec<String> {
        let t = render(&app, w, 24, Theme { color: false });
        let buf = t.backend().buffer();
        let rows: Vec<String> = (0..24).map(|y| (0..w).map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol())).collect()).collect();
        rows.iter().filter_map(|r| r.rsplit_once("││").map(|(_, right)| right.to_string())).collect()
    };
    for w in 30..=130 {
        let rows = table_rows(w);
        let screen = rows.join("\n");
        for row in rows.iter().filter(|r| ["USD", "AAPL", "U…", "A…"].iter().any(|a| r.starts_with(a))) {
            let chars: Vec<char> = row.chars().collect();
            let cut = chars.windows(2).any(|p| p[1] == '…' && (p[0].is_ascii_digit() || p[0] == '.'));
            assert!(!cut, "an amount cut at {w} columns: {row:?}\n{screen}");
        }
        if w >= 60 {
            assert!(screen.contains("TOTAL") && screen.contains("123456789016.04595678"), "the total whole at {w}:\n{screen}");
        }
    }
    let wide = table_rows(130).join("\n");
    for whole in ["TOTAL", "HELD", "AVAILABLE", "123456789016.04595678", "1502.5", "123456787513.54595678", "150.04"] {
        assert!(wide.contains(whole), "{whole} at 130:\n{wide}");
    }
    // At 60, the amounts that fit beside the total; the available amount (as long as the
    // total) is left out rather than cut.
    let sixty = table_rows(60).join("\n");
    assert!(sixty.contains("ASSET TOTAL                 HELD"), "{sixty}");
    assert!(sixty.contains("USD   123456789016.04595678 1502.5"), "{sixty}");
    assert!(!sixty.contains("AVAIL"), "{sixty}");
    // The fixture's short amounts keep every column at 60.
    let t = render(&on_tab('4'), 60, 24, Theme { color: false });
    let screen = format!("{}", t.backend());
    assert!(["ASSET", "TOTAL", "HELD", "AVAILABLE", "98197.5", "1502.5", "96695"].iter().all(|n| screen.contains(n)), "{screen}");
}

/// A revoked token is said once and for good, not retried as an outage.
#[test]
fn a_refused_token_is_said_not_retried() {
    let mut app = fixture::app();
    app.update(Action::Net(Net::Refused("the bearer token is unknown or revoked".into())));
    let t = render(&app, 80, 24, Theme { color: false });
    let screen: String = t.backend().buffer().content().iter().map(|c| c.symbol()).collect();
    assert!(screen.contains("✗ token refused") && screen.contains("unknown or revoked"), "{}", t.backend());
    assert!(!screen.contains("reconnecting"), "{}", t.backend());
}

/// On a short terminal the form scrolls to the field being typed in and keeps its
/// complaint and the keys in sight: cut at the bottom, it hid both and the user typed blind.
#[test]
fn a_form_on_a_short_terminal_shows_the_field_being_typed_in() {
    let mut app = on_tab('2');
    app.update(ch('n'));
    typing(&mut app, "1.5");
    let screen = |app: &App| {
        let t = render(app, 40, 10, Theme { color: false });
        t.backend().buffer().content().iter().map(|c| c.symbol()).collect::<String>()
    };
    let s = screen(&app);
    assert!(s.contains("Quantity  1.5█") && s.contains("Enter sends"), "{s}");
    app.update(key(KeyCode::Enter));
    let s = screen(&app);
    assert!(s.contains("✗ must be a") && s.contains("Quantity  1.5█"), "{s}");
    // The last field too, and back to the first.
    for _ in 0..2 {
        app.update(key(KeyCode::Tab));
    }
    assert!(screen(&app).contains("Time in force"), "{}", screen(&app));
    for _ in 0..6 {
        app.update(key(KeyCode::BackTab));
    }
    assert!(screen(&app).contains("User  alice"), "{}", screen(&app));
}

/// A send that never reached the daemon is not "refused by the daemon": the form says it
/// was not sent and that Enter sends it again; an answer lost on the way says the order
/// may exist. Told by the client's typed [`Delivery`], not its words: a lost answer whose
/// reason reads "connection refused" is still a lost answer.
///
/// [`Delivery`]: crate::client::Delivery
#[test]
fn a_form_sent_to_a_stopped_daemon_says_it_was_not_sent() {
    use crate::client::{ClientError, Delivery};
    let gone = |reason: &str, delivery| ClientError::Unreachable { target: "/tmp/h/agt.sock".into(), reason: reason.into(), delivery };
    for (error, shown, says, not_says) in [
        (gone("no socket there", Delivery::NotSent), "✗ not sent: cannot reach", "Enter sends it again", "may have been done"),
        (gone("connection refused", Delivery::NotSent), "✗ not sent: cannot reach", "Enter sends it again", "may have been done"),
        (
            gone("the connection dropped during the answer (eof)", Delivery::AnswerLost),
            "✗ no answer: cannot reach",
            "it may have been done",
            "Enter sends it again",
        ),
        (gone("connection refused", Delivery::AnswerLost), "✗ no answer: cannot reach", "it may have been done", "Enter sends it again"),
    ] {
        let (mut app, command) = an_order_sent();
        app.update(Action::Net(Net::Done(command, Err(error.into()))));
        let t = render(&app, 120, 40, Theme { color: false });
        let s: String = t.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        assert!(s.contains(shown) && !s.contains("daemon refused"), "{}", t.backend());
        let Overlay::Form(form) = &app.overlay else { panic!("the form stays open") };
        let error = form.error.as_deref().unwrap_or_default();
        assert!(error.contains(says) && !error.contains(not_says), "{error:?}");
    }
}

/// The tab bar always shows the tab on screen: where the titles do not fit, the others
/// shrink to their digits. Cut at the edge, it hid tabs 4 to 6 at 40 columns.
#[test]
fn a_narrow_tab_bar_still_names_the_tab_on_screen() {
    for (tab, title) in [('1', "1 Overview"), ('4', "4 Accounts"), ('6', "6 Audit")] {
        let app = on_tab(tab);
        for w in [30, 40, 60] {
            let t = render(&app, w, 10, Theme { color: false });
            let row: String = t.backend().buffer().content()[..usize::from(w)].iter().map(|c| c.symbol()).collect();
            assert!(row.contains(title) && row.contains("● live"), "{w} columns: {row:?}");
        }
    }
    let t = render(&on_tab('4'), 80, 24, Theme { color: false });
    let row: String = t.backend().buffer().content()[..80].iter().map(|c| c.symbol()).collect();
    assert!(row.contains("1 Overview │ 2 Orders"), "whole where they fit: {row:?}");
}

/// A trader's long user name is cut to the status line, marked, after the role; it
/// wrapped whole onto a row nobody sees, and the line said only "trader".
#[test]
fn a_long_trader_name_is_cut_in_the_status_line() {
    let mut app = fixture::trader_app();
    let long = format!("{}z", "a".repeat(63));
    app.update(fixture::snap(crate::tui::action::Snapshot::Users(vec![fixture::user(fixture::ALICE, &long)])));
    let t = render(&app, 80, 24, Theme { color: false });
    let row: String = t.backend().buffer().content()[80..160].iter().map(|c| c.symbol()).collect();
    assert!(row.contains("· trader aaaa") && row.trim_end().ends_with('…'), "{row:?}");
    let t = render(&app, 200, 24, Theme { color: false });
    let row: String = t.backend().buffer().content()[200..400].iter().map(|c| c.symbol()).collect();
    assert!(row.contains(&format!("trader {long}")), "whole where it fits: {row:?}");
}

/// A long symbol and a long user name take the columns a wide terminal has to spare
/// (symbols first), in Orders and in the account's balances and positions: cut to `VERYLONGS…`
/// they left blank columns at the right. At 80 columns they are cut, marked.
#[test]
fn long_symbols_and_names_use_the_room_there_is() {
    use crate::tui::action::Snapshot;
    let sym = "VERYLONGSYMBOLNAME-USD";
    let mut app = on_tab('2');
    let users = vec![fixture::user(fixture::BOB, "bob"), fixture::user(fixture::ALICE, "alice_with_a_long_name")];
    app.update(fixture::snap(Snapshot::Users(users)));
    let mut orders = fixture::orders();
    orders[0].symbol = sym.into();
    app.update(fixture::snap(Snapshot::Orders(orders)));
    let row_of = |t: &Terminal<TestBackend>, needle: &str| {
        let w = usize::from(t.backend().buffer().area.width);
        let cells = t.backend().buffer().content();
        cells.chunks(w).map(|r| r.iter().map(|c| c.symbol()).collect::<String>()).find(|r| r.contains(needle)).unwrap_or_default()
    };
    let t = render(&app, 140, 40, Theme { color: false });
    let row = row_of(&t, "c0ffee01");
    assert!(row.contains(sym) && row.contains("alice_with_a_long_name"), "{}", t.backend());
    let t = render(&app, 80, 24, Theme { color: false });
    assert!(row_of(&t, "c0ffee01").contains("VERYLONGSY…"), "{}", t.backend());

    app.update(ch('4'));
    let mut account = fixture::account();
    account.balances[0].asset = "VERYLONGSYMBOLNAME".into();
    account.positions[0].symbol = sym.into();
    account.user_id = app.selected_user().unwrap().user_id.clone();
    app.update(fixture::snap(Snapshot::Account(account)));
    let t = render(&app, 120, 40, Theme { color: false });
    let screen = format!("{}", t.backend());
    assert!(screen.contains("VERYLONGSYMBOLNAME ") && screen.contains(sym), "{screen}");
}

/// The detail scrolls until its last line is at the bottom, not a page past it: at the
/// end, the last row shows on the bottom row and the first k moves it up again.
#[test]
fn the_detail_stops_at_its_last_line() {
    let mut app = on_tab('2');
    for _ in 0..3 {
        app.update(ch('j'));
    }
    app.update(key(KeyCode::Enter));
    app.update(Action::Resize(80, 12));
    for _ in 0..5 {
        app.update(key(KeyCode::PageDown));
    }
    let Overlay::Detail { scroll: end, .. } = app.overlay.clone() else { panic!("the detail is open") };
    let t = render(&app, 80, 12, Theme { color: true });
    insta::assert_snapshot!("detail_order_end_80x12", t.backend());
    let screen = format!("{}", t.backend());
    assert!(screen.contains("updated") && screen.contains("k up") && !screen.contains("j more"), "{screen}");
    // 16 rows of the record in 10 rows of screen: the seventh is the first shown.
    assert_eq!(end, 6, "{screen}");
    app.update(key(KeyCode::End));
    assert!(matches!(app.overlay, Overlay::Detail { scroll, .. } if scroll == end));
    app.update(ch('k'));
    assert!(matches!(app.overlay, Overlay::Detail { scroll, .. } if scroll == end - 1), "one press moves it back");
    assert!(format!("{}", render(&app, 80, 12, Theme { color: false }).backend()).contains("j more"));
    // A taller screen shows it all, and a scroll from a shorter one is taken back.
    app.update(Action::Resize(120, 40));
    assert!(matches!(app.overlay, Overlay::Detail { scroll: 0, .. }));
}

/// Enter shows the selected row whole, what its table cuts: an order's reject reason and
/// full id, an event's data, an audit record's detail and hashes. It stays on that row
/// when newer ones arrive above it, scrolls with j/k, and Esc closes it.
#[test]
fn enter_shows_the_selected_row_whole() {
    use crate::tui::action::Snapshot;
    let text = |app: &App, w: u16, h: u16| format!("{}", render(app, w, h, Theme { color: false }).backend());
    let mut app = on_tab('2');
    for _ in 0..3 {
        app.update(ch('j'));
    }
    app.update(key(KeyCode::Enter));
    check("detail_order", &app);
    let screen = text(&app, 80, 24);
    for needle in ["Order c0ffee04", "ord_0195aaaa00000000c0ffee04", "reason  insufficient_funds", "alice (usr_00000000a11ce001)"] {
        assert!(screen.contains(needle), "{needle}:\n{screen}");
    }
    // A new order on top moves the list, not the pop-up.
    let mut orders = fixture::orders();
    orders.insert(
        0,
        fixture::order(
            "ord_0195aaaa00000000c0ffee09",
            fixture::BOB,
            crate::api::Side::Buy,
            "1",
            Some("1"),
            "0",
            crate::api::OrderStatus::New,
            "06:00",
        ),
    );
    app.update(fixture::snap(Snapshot::Orders(orders)));
    assert!(text(&app, 80, 24).contains("ord_0195aaaa00000000c0ffee04"));
    // Scrolled past the first rows on a short terminal, then closed.
    app.update(Action::Resize(80, 12));
    app.update(ch('j'));
    let screen = text(&app, 80, 12);
    assert!(!screen.contains("order id") && screen.contains("k up"), "{screen}");
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None) && !app.quit);

    let mut app = on_tab('5');
    app.update(key(KeyCode::Enter));
    let screen = text(&app, 120, 40);
    assert!(screen.contains("Event 305") && screen.contains("event id"), "{screen}");
    let mut app = on_tab('6');
    app.update(key(KeyCode::Enter));
    let screen = text(&app, 120, 40);
    assert!(screen.contains("Audit record") && screen.contains("prev hash"), "{screen}");
    // Nothing to show in the Book: Enter does nothing there.
    let mut app = on_tab('3');
    app.update(key(KeyCode::Enter));
    assert!(matches!(app.overlay, Overlay::None));
}

/// On a narrow, short terminal the help is one column that scrolls: squeezed into two
/// columns of 19 it cut every line, and the keys past its tenth row could not be read.
/// It scrolls no further than its last row: one key back up shows that there is more.
#[test]
fn the_help_scrolls_on_a_small_terminal() {
    let mut app = on_tab('2');
    app.update(Action::Resize(40, 10));
    app.update(ch('?'));
    let text = |app: &App| format!("{}", render(app, 40, 10, Theme { color: false }).backend());
    let screen = text(&app);
    assert!(screen.contains("close, clear") && screen.contains("j more"), "{screen}");
    for _ in 0..100 {
        app.update(ch('j'));
    }
    let screen = text(&app);
    let last = "  Esc        cancel";
    assert!(screen.contains(last) && screen.contains("k up") && !screen.contains("j more"), "{screen}");
    assert!(matches!(app.overlay, Overlay::Help { scroll } if scroll == help::max_scroll(app.screen)), "{:?}", app.overlay);
    app.update(ch('k'));
    let screen = text(&app);
    assert!(!screen.contains(last) && screen.contains("j more"), "one key back:\n{screen}");
    // Grown taller, the offset shrinks with what is left to show.
    app.update(Action::Resize(40, 60));
    assert!(matches!(app.overlay, Overlay::Help { scroll: 0 }), "{:?}", app.overlay);
    app.update(ch('G'));
    assert!(matches!(app.overlay, Overlay::Help { scroll: 0 }), "{:?}", app.overlay);
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None));
}

/// At 40 columns Orders shows the columns a person tells an order by, whole, rather
/// than every column squeezed to a few letters; the Book its ladder across the width.
#[test]
fn narrow_orders_and_book() {
    for (tab, name) in [('2', "orders"), ('3', "book")] {
        let app = on_tab(tab);
        for (w, h) in [(40, 10), (40, 24), (60, 24)] {
            let t = render(&app, w, h, Theme { color: true });
            insta::assert_snapshot!(format!("narrow_{name}_{w}x{h}"), t.backend());
        }
    }
    let t = render(&on_tab('2'), 40, 10, Theme { color: false });
    let screen = format!("{}", t.backend());
    for needle in ["SYM", "FILL", "ST", "AAPL", "150.25", "0/10", "2/5", "part-filled", "market"] {
        assert!(screen.contains(needle), "{needle}:\n{screen}");
    }
    let body: String = t.backend().buffer().content()[80..360].iter().map(|c| c.symbol()).collect();
    assert!(!body.contains('…'), "a value cut:\n{screen}");
    let t = render(&on_tab('3'), 40, 24, Theme { color: false });
    let screen = format!("{}", t.backend());
    for needle in ["PRICE", "SIZE", "CUM", "150.25", "151.00", "100", "AAPL trades"] {
        assert!(screen.contains(needle), "{needle}:\n{screen}");
    }
    // Too narrow for three numbers of 8: price and size only.
    let screen = format!("{}", render(&on_tab('3'), 28, 24, Theme { color: false }).backend());
    assert!(screen.contains("PRICE") && screen.contains("151.00") && !screen.contains("CUM"), "{screen}");
}

/// The footer and the status line say less, visibly, where they do not fit: the keys
/// before help and quit give way to a `…`, the status line drops the endpoint, then the
/// version, then the uptime, and what still does not fit ends in `…`. Cut at the edge,
/// 40 columns lost `? help` and half a path, unmarked.
#[test]
fn the_footer_and_status_line_shorten_visibly() {
    let rows = |app: &App, w: u16, h: u16| -> (String, String) {
        let t = render(app, w, h, Theme { color: false });
        let cells = t.backend().buffer().content();
        let row = |y: usize| cells[y * usize::from(w)..(y + 1) * usize::from(w)].iter().map(|c| c.symbol()).collect::<String>();
        (row(1).trim_end().to_string(), row(usize::from(h) - 1).trim_end().to_string())
    };
    let app = on_tab('2');
    let (status, footer) = rows(&app, 40, 10);
    assert_eq!(footer, "/ filter  n new  …  ? help  q quit");
    assert_eq!(status, "agt 0.1.0 · up 2h04m · DEGRADED · admin");
    let (status, footer) = rows(&app, 80, 24);
    assert_eq!(footer, "/ filter  n new  c cancel  a amend  j/k move  Tab switch  ? help  q quit", "whole where it fits");
    assert!(status.ends_with("/home/op/.local/share/agt/agt.sock · admin"), "{status}");
    let (_, footer) = rows(&app, 120, 40);
    assert!(footer.ends_with("? help  q quit") && !footer.contains('…'), "{footer}");

    // A form's keys keep the one that cancels; a 12-column line is cut, marked.
    let mut form = on_tab('2');
    form.update(ch('n'));
    let (_, footer) = rows(&form, 40, 30);
    assert_eq!(footer, "Tab next field  …  Esc cancel");
    let (status, footer) = rows(&app, 12, 10);
    assert_eq!((status.as_str(), footer.as_str()), ("DEGRADED · …", "…  ? help  …"));

    // Why the daemon is out of reach, and a refused token, end in `…` where cut.
    let mut app = fixture::app();
    app.update(Action::Net(Net::Refused("the bearer token is unknown or revoked".into())));
    let (status, _) = rows(&app, 40, 10);
    assert_eq!(status, "the bearer token is unknown or revoked");
    let (status, _) = rows(&app, 30, 10);
    assert!(status.starts_with("the bearer token") && status.ends_with('…'), "{status}");
}

/// A title longer than its block ends in `…` (or says less, on purpose), never cut
/// silently at the corner.
#[test]
fn titles_too_long_for_their_block_are_shortened_visibly() {
    let mut app = on_tab('2');
    app.update(ch('/'));
    typing(&mut app, "user:alice sym:AAPL");
    app.update(key(KeyCode::Enter));
    let t = render(&app, 40, 10, Theme { color: false });
    let row: String = t.backend().buffer().content()[80..120].iter().map(|c| c.symbol()).collect();
    assert!(row.starts_with("┌ Orders · ") && row.ends_with("…┐"), "{row:?}");

    let area = Rect::new(0, 0, 13, 3);
    assert_eq!(title(" Positions ", area).to_string(), " Positions ");
    assert_eq!(title(" Positions · 3 ", area).to_string(), " Positions…");
    assert_eq!(titled([" Verify · v again ", " Verify "], area).to_string(), " Verify ");
    assert_eq!(title(" anything ", Rect::new(0, 0, 2, 3)).to_string(), "");

    let mut app = on_tab('2');
    app.update(Action::Resize(40, 10));
    app.update(ch('?'));
    app.update(ch('j'));
    let t = render(&app, 40, 10, Theme { color: false });
    let screen = format!("{}", t.backend());
    assert!(screen.contains(" Keys · Esc closes · k up · j more "), "{screen}");
}

/// At 40 columns every tab's table shows whole words: the columns that matter first, each
/// as wide as its values, a short header where the name does not fit (`RST`, `AVAIL`), and
/// `…` where a value still does not. Squeezed to fixed widths they read `runnin`,
/// `RESTAR`, `event:or`, `ORDER_CR` and a balances header `H`, with no mark.
#[test]
fn narrow_tables_cut_no_word_without_a_mark() {
    for (tab, name) in [('1', "overview"), ('2', "orders"), ('3', "book"), ('4', "accounts"), ('5', "events"), ('6', "audit")] {
        let app = on_tab(tab);
        for (w, h) in [(40, 10), (40, 12)] {
            let t = render(&app, w, h, Theme { color: true });
            insta::assert_snapshot!(format!("narrow_table_{name}_{w}x{h}"), t.backend());
        }
    }
    let screen = |tab: char| format!("{}", render(&on_tab(tab), 40, 12, Theme { color: false }).backend());
    let checks: [(char, &[&str], &[&str]); 4] = [
        ('1', &["SERVICE", "STATE", "RST", "running", "2h03m", "… 5 more · 1 FAILED · 1 restarted"], &["runnin ", "RESTAR"]),
        ('4', &["ASSET", "AVAIL", "96695", "AAPL", "12"], &["│ASSET     H │"]),
        ('5', &["TYPE", "DATA", "TRADE_EXECUTED", "SERVICE_RESTARTED", "ACCOUNT_DEPOSITED", "305"], &[]),
        ('6', &["ACTOR", "ACTION", "event:orders", "ORDER_CREATED", "POST /api/orders", "1006"], &["event:or ", "ORDER_CR ", "/ap "]),
    ];
    for (tab, has, lacks) in checks {
        let screen = screen(tab);
        for needle in has {
            assert!(screen.contains(needle), "tab {tab}: {needle:?} missing:\n{screen}");
        }
        for needle in lacks {
            assert!(!screen.contains(needle), "tab {tab}: {needle:?} cut without a mark:\n{screen}");
        }
    }

    // An action longer than the room (a deposit's path) keeps its first 24 letters,
    // marked, and leaves the actor what is left, marked too, rather than dropping it.
    let mut app = on_tab('6');
    let mut records = fixture::audit();
    records[5].action = "POST /api/accounts/usr_000000000b0b0002/deposit".into();
    records[5].actor = "token:tok_0123456789".into();
    app.update(fixture::snap(crate::tui::action::Snapshot::Audit(records)));
    let screen = format!("{}", render(&app, 40, 12, Theme { color: false }).backend());
    assert!(screen.contains("│▶ token:tok_… POST /api/accounts/usr_…│"), "{screen}");

    // The longest event type is whole at every width; a paused stream's highlight mark
    // takes its two columns from the data, not from the type.
    let mut app = on_tab('5');
    app.update(Action::Net(Net::Event(Box::new(fixture::event(306, "TRADING_STATE_CHANGED", "trading", serde_json::json!({}))))));
    for (w, h) in [(40, 12), (80, 24), (120, 40)] {
        let screen = format!("{}", render(&app, w, h, Theme { color: false }).backend());
        assert!(screen.contains("TRADING_STATE_CHANGED"), "{w}x{h}:\n{screen}");
    }
    app.update(ch(' '));
    let screen = format!("{}", render(&app, 40, 12, Theme { color: false }).backend());
    assert!(screen.contains("▶ 306 TRADING_STATE_CHANGED"), "{screen}");
}

/// The Overview's services table says which rows it leaves out on a short terminal: its
/// last row counts them, and the failed among them. At 40x12 it showed 6 of 10 services,
/// the failed one not among them, with no row saying so (the title's counts were cut).
#[test]
fn the_services_table_marks_the_rows_it_leaves_out() {
    // An admin's at 40x12 is `narrow_table_overview_40x12`; 80x24 and 120x40 `overview_*`.
    let t = render(&fixture::trader_app(), 40, 12, Theme { color: true });
    insta::assert_snapshot!("services_cut_trader_overview_40x12", t.backend());
    for (app, name) in [(fixture::app(), "overview"), (fixture::trader_app(), "trader_overview")] {
        let screen = |w, h| format!("{}", render(&app, w, h, Theme { color: false }).backend());
        let small = screen(40, 12);
        let restarted = if name == "overview" { " · 1 restarted" } else { "" };
        assert!(small.contains(&format!("│… 5 more · 1 FAILED{restarted} ")), "{name}:\n{small}");
        let short = screen(80, 14);
        // The trader's are in name order (from `/health`): notify is shown there.
        let failed = if name == "overview" { " · 1 FAILED" } else { "" };
        assert!(short.contains(&format!("│… 3 more{failed} ")), "{name}:\n{short}");
        // Where they fit (the snapshots at 80x24 and 120x40), all ten and no mark.
        for (w, h) in [(80, 24), (120, 40)] {
            let whole = screen(w, h);
            assert!(whole.contains("notify") && !whole.contains(" more"), "{name} {w}x{h}:\n{whole}");
        }
    }
    // One row for the mark alone, and none at all, draw without a panic.
    for h in [5, 6, 7] {
        render(&fixture::app(), 40, h, Theme { color: true });
    }
}

/// The row of the screen a tab's block title is on, as text.
fn title_row(app: &App, w: u16, h: u16) -> String {
    let t = render(app, w, h, Theme { color: false });
    let buf = t.backend().buffer();
    let y = (0..h).find(|&y| buf.cell((0, y)).is_some_and(|c| c.symbol() == "┌")).expect("a block");
    (0..w).map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol())).collect()
}

/// The Events title says what the stream does: "following" only while it is live; while
/// the daemon is away, reconnecting, for how long and after how many failed tries (the
/// title said "following" throughout); following again once the stream is back.
#[test]
fn the_events_title_says_whether_it_follows() {
    let gone = || Action::Net(Net::Disconnected("cannot reach the agt daemon at /tmp/agt.sock: connection refused".into()));
    let mut app = on_tab('5');
    for (w, h) in [(80, 24), (60, 20), (40, 12)] {
        let row = title_row(&app, w, h);
        assert!(row.contains("following") && !row.contains("reconnecting"), "{w}x{h}: {row}");
    }
    app.update(gone());
    for (w, h) in [(80, 24), (60, 20), (40, 12)] {
        let row = title_row(&app, w, h);
        assert!(row.contains("reconnecting… 0s") && !row.contains("following"), "{w}x{h}: {row}");
    }
    for _ in 0..12 {
        app.update(Action::Tick);
    }
    app.update(gone());
    assert!(title_row(&app, 80, 24).contains("reconnecting… 12s, 1 try failed"), "{}", title_row(&app, 80, 24));
    app.update(gone());
    app.update(gone());
    let row = title_row(&app, 80, 24);
    assert!(row.contains("reconnecting… 12s, 3 tries failed · seq "), "{row}");
    // Narrower, the sequence number, the count and the tries give way; the state stays.
    let row = title_row(&app, 60, 20);
    assert!(row.contains("┌ Events · 5 shown · reconnecting… 12s, 3 tries failed ─"), "{row}");
    let row = title_row(&app, 50, 20);
    assert!(row.contains("┌ Events · reconnecting… 12s, 3 tries failed ─"), "{row}");
    let row = title_row(&app, 40, 12);
    assert!(row.contains("┌ Events · reconnecting… 12s ─"), "{row}");
    // Paused meanwhile: both.
    app.update(ch(' '));
    let row = title_row(&app, 80, 24);
    assert!(row.contains("PAUSED (0 new) · reconnecting… 12s"), "{row}");
    app.update(ch(' '));
    app.update(Action::Net(Net::Connected { head: 300, own: false }));
    let row = title_row(&app, 80, 24);
    assert!(row.contains("following") && !row.contains("reconnecting") && !row.contains("failed"), "{row}");
    // A break after that counts afresh.
    app.update(gone());
    assert!(title_row(&app, 80, 24).contains("reconnecting… 0s ·"), "{}", title_row(&app, 80, 24));
    // Before the first answer, and once the token is refused for good.
    let mut fresh = fixture::app();
    fresh.conn = crate::tui::app::Conn::Connecting;
    fresh.update(ch('5'));
    assert!(title_row(&fresh, 80, 24).contains("connecting…"), "{}", title_row(&fresh, 80, 24));
    app.update(Action::Net(Net::Refused("the bearer token is unknown or revoked".into())));
    let row = title_row(&app, 80, 24);
    assert!(row.contains("stopped: token refused") && !row.contains("following"), "{row}");
}

/// Every form is usable at 80x24, 60x20 and 40x12: tabbing through it, the focused field
/// shows with its marker, its label and its value, and the keys stay in sight (an open
/// form once showed no field below 80x24). Below the smallest size it says so.
#[test]
fn every_form_shows_its_focused_field_on_a_small_terminal() {
    for (tab, open, title) in [('2', 'n', "New order"), ('2', 'a', "Amend order"), ('4', 'd', "Deposit to"), ('4', 'w', "Withdraw from")] {
        for (w, h) in [(80, 24), (60, 20), (40, 12)] {
            let mut app = on_tab(tab);
            app.update(ch(open));
            let Overlay::Form(form) = &app.overlay else { panic!("{open} opens a form") };
            let fields: Vec<&str> = form.fields.iter().map(|f| f.label).collect();
            for _ in 0..fields.len() {
                let Overlay::Form(form) = &app.overlay else { panic!("the form stays open") };
                let label = form.fields[form.focus].label;
                let value = form.fields[form.focus].value().to_string();
                let rows = screen_rows(&app, w, h);
                let screen = rows.join("\n");
                assert!(screen.contains(title), "{title} at {w}x{h}:\n{screen}");
                assert!(screen.contains("Enter sends · Esc cancels"), "{title} at {w}x{h}:\n{screen}");
                let row = rows.iter().find(|r| r.contains("▶ ") && r.contains(&format!("{label}  ")));
                let Some(row) = row else { panic!("{title}: {label} not in sight at {w}x{h}:\n{screen}") };
                assert!(row.contains(&value), "{title}: {label}'s value {value:?} at {w}x{h}:\n{screen}");
                app.update(key(KeyCode::Tab));
            }
        }
        // Narrower than a label and its value: the label on its own row, above its value,
        // each in sight when focused (an empty value above once scrolled the last one away).
        let mut app = on_tab(tab);
        app.update(ch(open));
        let Overlay::Form(form) = &app.overlay else { panic!("{open} opens a form") };
        for _ in 0..form.fields.len() {
            let (label, value) = focused_field(&app);
            let rows = screen_rows(&app, 30, 10);
            let screen = rows.join("\n");
            // Stacked (the order form's long labels) or beside it (a transfer's, an amend's).
            let at = rows.iter().position(|r| r.starts_with("│▶ ") && r.contains(&format!("{label} ")));
            let Some(at) = at else { panic!("{title}: {label} not in sight at 30x10:\n{screen}") };
            let shown = rows[at].contains(&value) || rows.get(at + 1).is_some_and(|r| r.contains(&format!("│    {value}")));
            assert!(shown, "{title}: {value:?} beside or under its label at 30x10:\n{screen}");
            assert!(screen.contains("Enter sends"), "{title} at 30x10:\n{screen}");
            app.update(key(KeyCode::Tab));
        }
        // Too small for any field: it says so, and how big it must be.
        let screen = screen_rows(&app, 19, 4).join("");
        assert!(screen.contains("terminal too small") && screen.contains("20×5"), "{title} at 19x4: {screen}");
    }
}

/// PgDn and PgUp move the selection by the rows the list shows, on every tab with a list
/// and at every size: they moved 10 rows whatever the height, so at 40x12 (5 rows shown)
/// a page skipped rows never seen, and at 120x40 it took four presses to turn a page.
#[test]
fn a_page_is_the_rows_the_list_shows() {
    let many_orders: Vec<_> = (0..300)
        .map(|i| {
            let mut o = fixture::orders()[0].clone();
            o.order_id = format!("ord_0195aaaa0000000000{i:06}");
            o
        })
        .collect();
    let many_users: Vec<_> = (0..300).map(|i| fixture::user(&format!("usr_{i:016}"), &format!("user{i:04}"))).collect();
    for (tab, name) in [('2', "Orders"), ('4', "Users")] {
        for (w, h) in [(40, 12), (80, 24), (120, 40)] {
            let mut app = on_tab(tab);
            app.update(Action::Resize(w, h));
            app.update(fixture::snap(Snapshot::Orders(many_orders.clone())));
            app.update(fixture::snap(Snapshot::Users(many_users.clone())));
            // The list's rows: those between its header and its bottom border, in the
            // list's own panel (Users is the left one).
            let rows = screen_rows(&app, w, h);
            let screen = rows.join("\n");
            let top = rows.iter().position(|r| r.contains(&format!("┌ {name}"))).unwrap_or_else(|| panic!("{name} at {w}x{h}:\n{screen}"));
            let shown = rows[top + 2..].iter().take_while(|r| !r.starts_with('└')).count();
            let selected = |app: &App| if tab == '2' { app.orders.selected } else { app.accounts.selected };
            app.update(key(KeyCode::PageDown));
            assert_eq!(selected(&app), shown, "{name}: PgDn from the top at {w}x{h} ({shown} rows shown):\n{screen}");
            app.update(key(KeyCode::PageDown));
            app.update(key(KeyCode::PageUp));
            assert_eq!(selected(&app), shown, "{name}: PgUp at {w}x{h}");
        }
    }
}

/// At the smallest size a form is drawn in (20×5, labels stacked over their values), the
/// focused field shows its label and its value, and the keys (shortened) stay in the last
/// row: the keys wrapped to two rows there and left the field one, its label alone, so
/// the user typed blind.
#[test]
fn a_form_at_its_smallest_size_shows_the_value_being_typed() {
    for (tab, open) in [('2', 'n'), ('2', 'a'), ('4', 'd'), ('4', 'w')] {
        for (w, h) in [(20, 5), (24, 5), (20, 6)] {
            let mut app = on_tab(tab);
            app.update(ch(open));
            let Overlay::Form(form) = &app.overlay else { panic!("{open} opens a form") };
            for _ in 0..form.fields.len() {
                let (label, value) = focused_field(&app);
                let rows = screen_rows(&app, w, h);
                let screen = rows.join("\n");
                let shown_label = label.chars().take(usize::from(w) - 4).collect::<String>();
                let at = rows.iter().position(|r| r.contains(&format!("▶ {shown_label}")));
                let Some(at) = at else { panic!("{label} not in sight at {w}x{h}:\n{screen}") };
                let shown_value = value.chars().take(usize::from(w) - 6).collect::<String>();
                assert!(
                    rows[at].contains(&shown_value) || rows.get(at + 1).is_some_and(|r| r.contains(&shown_value)),
                    "{label}'s value {value:?} at {w}x{h}:\n{screen}"
                );
                assert!(rows[usize::from(h) - 2].contains("Esc"), "the keys in the last row at {w}x{h}:\n{screen}");
                app.update(key(KeyCode::Tab));
            }
        }
    }
}

/// A field's complaint longer than the room right of its value goes on under its own
/// first letter, broken between words: wrapped by ratatui, it went on at the form's first
/// column, under the labels, as if it were another field's. Stacked (a narrow form), the
/// complaint starts under the value.
#[test]
fn a_long_field_complaint_wraps_under_itself() {
    for (w, h, stacked) in [(80, 30, false), (60, 30, false), (44, 40, false), (30, 40, true)] {
        let mut app = on_tab('2');
        app.update(ch('n'));
        typing(&mut app, "1,5");
        app.update(key(KeyCode::Enter));
        let Overlay::Form(form) = &app.overlay else { panic!("the form stays open") };
        let message = form.fields.iter().find_map(|f| f.error.clone()).expect("the quantity is refused");
        assert!(message.chars().count() > 60, "a complaint long enough to wrap: {message}");
        let t = render(&app, w, h, Theme { color: false });
        let buf = t.backend().buffer();
        let rows: Vec<String> = (0..h).map(|y| (0..w).map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol())).collect()).collect();
        let screen = rows.join("\n");
        let first = rows.iter().position(|r| r.contains("✗ ")).unwrap_or_else(|| panic!("no complaint at {w}x{h}:\n{screen}"));
        // Columns in characters: the border and the complaint are one cell each.
        let mark = rows[first].chars().position(|c| c == '✗').unwrap();
        let text_col = mark + 2;
        // The popup's left border: the form's first column is right of it.
        let left = rows[first].chars().take(mark).collect::<Vec<_>>().iter().rposition(|c| *c == '│').expect("the popup's border");
        if stacked {
            let value_col = rows[first - 1].chars().position(|c| c == '1').expect("the value above");
            assert_eq!(mark, value_col, "under the value at {w}x{h}:\n{screen}");
        }
        // The complaint's rows: the first, and those after it that start at its column.
        let mut words: Vec<String> = vec![rows[first].chars().skip(text_col).collect::<String>().trim_end_matches(['│', ' ']).to_string()];
        for row in &rows[first + 1..] {
            let chars: Vec<char> = row.chars().collect();
            let lead_blank = chars[left + 1..text_col].iter().all(|c| *c == ' ');
            if !lead_blank || chars[text_col] == ' ' {
                break;
            }
            words.push(chars[text_col..].iter().collect::<String>().trim_end_matches(['│', ' ']).to_string());
        }
        assert!(words.len() > 1, "wrapped at {w}x{h}:\n{screen}");
        assert_eq!(words.join(" "), message, "every row under the first letter, words whole, at {w}x{h}:\n{screen}");
    }
    // Still too small is still said so.
    let mut app = on_tab('2');
    app.update(ch('n'));
    typing(&mut app, "1,5");
    app.update(key(KeyCode::Enter));
    let screen = format!("{}", render(&app, 19, 4, Theme { color: false }).backend());
    assert!(screen.contains("terminal too small"), "{screen}");
}

/// What a tab shows that the daemon answered behind its event bus (a loaded machine:
/// the feeds that build the audit log and the tape had not caught up) says so on the
/// status line, at 80 columns too, while that tab is shown; the next current answer
/// clears it.
#[test]
fn feeds_behind_are_said_on_the_status_line_until_current() {
    use crate::tui::action::Snapshot;
    let status = |app: &App, w: u16| {
        let screen = format!("{}", render(app, w, 24, Theme { color: false }).backend());
        screen.lines().nth(1).expect("a status line").to_string()
    };
    let mut app = on_tab('6');
    assert!(!status(&app, 80).contains("behind"), "current: {}", status(&app, 80));
    app.update(fixture::snap_behind(Snapshot::Audit(fixture::audit()), 7));
    for w in [80, 120] {
        assert!(status(&app, w).contains("feeds 7+ events behind"), "{w} columns: {}", status(&app, w));
    }
    // The Overview shows no audit log: nothing of it to warn about there.
    app.update(ch('1'));
    assert!(!status(&app, 80).contains("behind"), "{}", status(&app, 80));
    app.update(ch('6'));
    assert!(status(&app, 80).contains("feeds 7+ events behind"), "{}", status(&app, 80));
    app.update(fixture::snap(Snapshot::Audit(fixture::audit())));
    assert!(!status(&app, 80).contains("behind"), "caught up: {}", status(&app, 80));

    // The Book tab's tape and candles likewise; the most of what it shows is said.
    app.update(ch('3'));
    app.update(fixture::snap_behind(Snapshot::Market(fixture::market()), 2));
    assert!(status(&app, 80).contains("feeds 2+ events behind"), "{}", status(&app, 80));
    app.update(fixture::snap(Snapshot::Market(fixture::market())));
    assert!(!status(&app, 80).contains("behind"), "{}", status(&app, 80));
}
