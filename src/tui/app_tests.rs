//! `update` driven by key sequences and canned daemon answers, as a user would drive it.

use super::*;
use crate::tui::action::{Failure, Snapshot};
use crate::tui::fixture::{self, ch, ctrl, key, snap, typing, ALICE};
use crate::tui::form;

fn fetches(fx: &[Effect]) -> Vec<Fetch> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Fetch(f) => Some(f.clone()),
            Effect::FetchOrders(_) => Some(Fetch::Orders),
            Effect::Send(_) => None,
        })
        .collect()
}

fn sent(fx: &[Effect]) -> Vec<Command> {
    fx.iter().filter_map(|e| if let Effect::Send(c) = e { Some(c.clone()) } else { None }).collect()
}

fn form(app: &App) -> &Form {
    match &app.overlay {
        Overlay::Form(f) => f,
        other => panic!("expected a form, got {other:?}"),
    }
}

fn event(kind: &str, data: serde_json::Value) -> Action {
    Action::Net(Net::Event(Box::new(fixture::event(900, kind, "orders", data))))
}

#[test]
fn digits_tab_and_esc_move_between_tabs() {
    let mut app = fixture::app();
    assert_eq!(app.tab, Tab::Overview);
    app.update(ch('3'));
    assert_eq!(app.tab, Tab::Book);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.tab, Tab::Accounts);
    app.update(key(KeyCode::BackTab));
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.tab, Tab::Orders);
    app.update(ch('6'));
    app.update(key(KeyCode::Tab));
    assert_eq!(app.tab, Tab::Overview, "Tab wraps around");
}

/// Esc closes the innermost thing open, one at a time, and with nothing open does
/// nothing, on every tab: it quit there, and a user closing what was already closed lost
/// the session.
#[test]
fn esc_closes_what_is_open_undoes_what_is_in_effect_then_quits() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(ch('/'));
    typing(&mut app, "bob");
    app.update(key(KeyCode::Enter));
    app.update(ch('?'));
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None), "first the help closes");
    app.update(key(KeyCode::Esc));
    assert_eq!((app.orders.filter.as_str(), app.quit), ("", false), "then the filter clears");
    app.update(ch('5'));
    app.update(ch(' '));
    assert!(app.events.paused);
    app.update(key(KeyCode::Esc));
    assert!(!app.events.paused && !app.quit, "then the stream resumes");
    app.update(ch('2'));
    app.update(key(KeyCode::Enter));
    assert!(matches!(app.overlay, Overlay::Detail { .. }));
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None) && app.tab == Tab::Orders && !app.quit, "a detail closes, and only it");
    app.update(ch('c'));
    assert!(matches!(app.overlay, Overlay::Confirm { .. }));
    assert!(sent(&app.update(key(KeyCode::Esc))).is_empty());
    assert!(matches!(app.overlay, Overlay::None) && !app.quit, "a question is answered no");
    app.update(ch('/'));
    typing(&mut app, "al");
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None) && app.orders.filter.is_empty() && !app.quit, "a filter being typed is cancelled");
    app.update(key(KeyCode::Esc));
    assert!(app.quit, "with nothing left, Esc quits (DESIGN.md §6: q/Esc quit)");
    for tab in ['1', '2', '3', '4', '5', '6'] {
        let mut app = fixture::app();
        app.update(ch(tab));
        app.update(key(KeyCode::Esc));
        assert!(app.quit, "tab {tab}: Esc with nothing open quits");
    }
}

#[test]
fn q_and_ctrl_c_quit_but_q_in_a_text_field_is_typed() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(ch('n'));
    app.update(ch('q'));
    assert!(!app.quit);
    assert_eq!(form(&app).field(form::QUANTITY).unwrap().value(), "q");
    app.update(ctrl('c'));
    assert!(app.quit, "Ctrl-C quits from anywhere");

    let mut app = fixture::app();
    app.update(ch('q'));
    assert!(app.quit);
}

#[test]
fn help_overlay_opens_and_closes() {
    let mut app = fixture::app();
    app.update(ch('?'));
    assert!(matches!(app.overlay, Overlay::Help { .. }));
    app.update(ch('2'));
    assert!(matches!(app.overlay, Overlay::Help { .. }), "keys do not leak through the help");
    assert_eq!(app.tab, Tab::Overview);
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None));
    app.update(ch('?'));
    app.update(ch('?'));
    assert!(matches!(app.overlay, Overlay::None));
}

#[test]
fn orders_filter_by_user_symbol_and_status() {
    let mut app = fixture::app();
    app.update(ch('2'));
    assert_eq!(app.visible_orders().len(), 5);
    app.update(ch('/'));
    typing(&mut app, "bob");
    assert_eq!(app.visible_orders().len(), 2, "filters while typing");
    app.update(key(KeyCode::Enter));
    assert!(matches!(app.overlay, Overlay::None));
    assert_eq!(app.orders.filter, "bob");

    // Esc while typing restores the filter as it was.
    app.update(ch('/'));
    typing(&mut app, "zzz");
    assert!(app.visible_orders().is_empty());
    app.update(key(KeyCode::Esc));
    assert_eq!(app.orders.filter, "bob");

    for (filter, n) in [
        ("status:filled", 1),
        ("st:part-filled", 1),
        ("c0ffee02", 1),
        ("sym:aapl side:sell", 2),
        ("user:alice new", 1),
        ("cancelled", 1),
        ("msft", 0),
    ] {
        app.orders.filter = filter.into();
        assert_eq!(app.visible_orders().len(), n, "{filter}");
    }
    // Esc with a filter set clears it, and stays on the tab.
    app.update(key(KeyCode::Esc));
    assert_eq!((app.orders.filter.as_str(), app.tab), ("", Tab::Orders));
    assert_eq!(app.visible_orders().len(), 5);
}

#[test]
fn j_k_move_the_selection_within_bounds() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(key(KeyCode::Up));
    assert_eq!(app.orders.selected, 0);
    app.update(ch('j'));
    app.update(key(KeyCode::Down));
    assert_eq!(app.selected_order().unwrap().order_id, "ord_0195aaaa00000000c0ffee03");
    app.update(ch('G'));
    assert_eq!(app.orders.selected, 4);
    app.update(ch('j'));
    assert_eq!(app.orders.selected, 4);
    app.update(ch('k'));
    app.update(ch('g'));
    assert_eq!(app.orders.selected, 0);
}

#[test]
fn the_order_form_validates_inline_before_sending() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(ch('n'));
    let f = form(&app);
    assert_eq!(f.field(form::USER).unwrap().value(), "alice", "prefilled from the selected order");
    assert_eq!(f.field(form::SYMBOL).unwrap().value(), "AAPL");

    // Nothing is sent while a field is wrong; each complaint sits by its field.
    typing(&mut app, "10.5");
    let fx = app.update(key(KeyCode::Enter));
    assert!(sent(&fx).is_empty());
    assert_eq!(form(&app).field(form::QUANTITY).unwrap().error.as_deref(), Some("must be a multiple of the lot 1"));
    assert_eq!(form(&app).field(form::PRICE).unwrap().error.as_deref(), Some("required, e.g. 150.25"));

    // Fix both: focus went to the first complaint.
    assert_eq!(form(&app).fields[form(&app).focus].label, form::QUANTITY);
    app.update(key(KeyCode::Backspace));
    app.update(key(KeyCode::Backspace));
    app.update(key(KeyCode::Tab));
    typing(&mut app, "150.2");
    let fx = app.update(key(KeyCode::Enter));
    let Ok::<[Command; 1], _>([Command::Place(p)]) = sent(&fx).try_into() else { panic!("one order sent") };
    assert_eq!((p.user_id.as_deref(), p.quantity, p.price), (Some("alice"), fixture::d("10"), Some(fixture::d("150.2"))));
    assert!(form(&app).sending);

    // The daemon refuses: its message is shown and the form stays open to fix it.
    let refused =
        Failure { status: 422, code: "insufficient_funds".into(), message: "needs 1502 USD, 10 available".into(), nothing_sent: false };
    app.update(Action::Net(Net::Done(Command::Place(p.clone()), Err(refused))));
    let f = form(&app);
    assert!(!f.sending);
    assert_eq!(f.error.as_deref(), Some("the daemon refused: insufficient_funds: needs 1502 USD, 10 available"));

    // Accepted: the form closes, the message says so, and the new order gets selected.
    app.update(key(KeyCode::Enter));
    let mut placed = fixture::orders()[0].clone();
    placed.order_id = "ord_0195aaaa00000000c0ffee99".into();
    let fx = app.update(Action::Net(Net::Done(Command::Place(p), Ok(serde_json::to_value(&placed).unwrap()))));
    assert!(fx.is_empty());
    assert!(matches!(app.overlay, Overlay::None));
    assert!(app.flash.as_ref().unwrap().text.starts_with("placed c0ffee99 buy 10 AAPL @ 150.25"), "{:?}", app.flash);
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Orders]);
    let mut rows = fixture::orders();
    rows.insert(0, placed);
    app.update(snap(Snapshot::Orders(rows)));
    assert_eq!(app.selected_order().unwrap().order_id, "ord_0195aaaa00000000c0ffee99");
}

#[test]
fn esc_closes_a_form_without_sending() {
    let mut app = fixture::app();
    app.update(ch('3'));
    app.update(ch('n'));
    assert_eq!(form(&app).field(form::SYMBOL).unwrap().value(), "AAPL", "the Book's symbol");
    let fx = app.update(key(KeyCode::Esc));
    assert!(fx.is_empty());
    assert!(matches!(app.overlay, Overlay::None));
    assert_eq!(app.tab, Tab::Book, "Esc closed the form only");
}

#[test]
fn cancel_asks_first() {
    let mut app = fixture::app();
    app.update(ch('2'));
    let fx = app.update(ch('c'));
    assert!(fx.is_empty());
    let Overlay::Confirm { question, .. } = &app.overlay else { panic!("a question") };
    assert_eq!(question, "Cancel order c0ffee01 (alice: buy 10 AAPL @ 150.25)?");
    assert!(sent(&app.update(ch('n'))).is_empty());
    assert!(matches!(app.overlay, Overlay::None));

    app.update(ch('c'));
    let fx = app.update(ch('y'));
    assert!(matches!(sent(&fx).as_slice(), [Command::Cancel { order_id }] if order_id == "ord_0195aaaa00000000c0ffee01"));

    // A final order cannot be cancelled: no question, a message.
    app.update(ch('j'));
    app.update(ch('j'));
    app.update(ch('c'));
    assert!(matches!(app.overlay, Overlay::None));
    assert_eq!(app.flash.as_ref().unwrap().text, "order c0ffee03 is filled; only open orders can be cancelled");

    // A refused cancel shows the daemon's message.
    let refused = Failure { status: 409, code: "order_not_open".into(), message: "order is filled".into(), nothing_sent: false };
    app.update(Action::Net(Net::Done(Command::Cancel { order_id: "ord_x".into() }, Err(refused))));
    let flash = app.flash.clone().unwrap();
    assert!(flash.error);
    assert_eq!(flash.text, "cancel ord_x failed: order_not_open: order is filled");
}

#[test]
fn amend_prefills_the_order() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(ch('a'));
    let f = form(&app);
    assert_eq!((f.field(form::PRICE).unwrap().value(), f.field(form::QUANTITY).unwrap().value()), ("150.25", "10"));
    assert_eq!(f.fields[f.focus].label, form::PRICE);
    // Off the tick, or not more than has filled: said before anything is sent.
    typing(&mut app, "5");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert_eq!(form(&app).field(form::PRICE).unwrap().error.as_deref(), Some("must be on the tick 0.01"));
    app.update(key(KeyCode::Backspace));
    app.update(key(KeyCode::Backspace));
    typing(&mut app, "4");
    let fx = app.update(key(KeyCode::Enter));
    let Ok::<[Command; 1], _>([Command::Amend { order_id, amend }]) = sent(&fx).try_into() else { panic!("one amend") };
    assert_eq!(
        (order_id.as_str(), amend.price, amend.quantity),
        ("ord_0195aaaa00000000c0ffee01", Some(fixture::d("150.24")), Some(fixture::d("10")))
    );
}

#[test]
fn deposit_and_withdraw_from_accounts() {
    let mut app = fixture::app();
    app.update(ch('4'));
    assert_eq!(app.selected_user().unwrap().username, "alice", "users sorted by name");
    app.update(ch('d'));
    assert_eq!(form(&app).title(), "Deposit to alice");
    typing(&mut app, "250");
    let fx = app.update(key(KeyCode::Enter));
    assert!(matches!(sent(&fx).as_slice(), [Command::Deposit { user_id, transfer }] if user_id == ALICE && transfer.asset == "USD"));
    app.update(key(KeyCode::Esc));
    app.update(ch('w'));
    assert_eq!(form(&app).title(), "Withdraw from alice");
}

#[test]
fn space_pauses_the_event_stream_without_losing_events() {
    let mut app = fixture::app();
    app.update(ch('5'));
    let before = app.events.items.len();
    app.update(ch(' '));
    assert!(app.events.paused);
    app.update(event("ORDER_CREATED", serde_json::json!({"symbol": "AAPL"})));
    assert_eq!((app.events.items.len(), app.events.held.len()), (before, 1), "held, not shown");
    app.update(ch(' '));
    assert!(!app.events.paused);
    assert_eq!((app.events.items.len(), app.events.held.len()), (before + 1, 0));
    assert_eq!(app.events.items[0].seq, 900);
}

/// A pause longer than the tab's history under load: resuming shows the newest events,
/// not those of the moment it paused with everything since missing above them, and the
/// title counts every arrival, not only those held.
#[test]
fn a_long_pause_resumes_on_the_newest_events() {
    let mut app = fixture::app();
    app.update(ch('5'));
    app.update(ch(' '));
    let arrived = EVENT_HISTORY as u64 * 3;
    for seq in 1000..1000 + arrived {
        app.update(Action::Net(Net::Event(Box::new(fixture::event(seq, "ORDER_CREATED", "orders", serde_json::json!({}))))));
    }
    assert_eq!(app.events.held_count, arrived, "every arrival counted");
    assert!(app.events.held.len() <= EVENT_HISTORY);
    app.update(ch(' '));
    let newest = 1000 + arrived - 1;
    assert_eq!(app.events.items.len(), EVENT_HISTORY);
    assert_eq!(app.events.items[0].seq, newest, "the newest on top");
    let seqs: Vec<u64> = app.events.items.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "no gap below the newest");
    assert_eq!(app.events.held_count, 0);
}

/// The Audit tab under load: a refresh with newer records above keeps the cursor on the
/// record it was on (as Orders does), while the top row follows the newest.
#[test]
fn the_audit_cursor_stays_on_its_record_as_new_ones_arrive() {
    let mut app = fixture::app();
    app.update(ch('6'));
    app.update(snap(Snapshot::Audit(fixture::audit())));
    app.update(ch('j'));
    app.update(ch('j'));
    let on = |app: &App| app.audit.records.iter().rev().nth(app.audit.selected).map(|r| r.seq);
    assert_eq!(on(&app), Some(1004));
    // Two newer records (1007, 1008); the two oldest leave the window.
    let mut newer = fixture::audit();
    for r in &mut newer {
        r.seq += 2;
    }
    app.update(snap(Snapshot::Audit(newer.clone())));
    assert_eq!(on(&app), Some(1004), "still on its record");
    app.update(key(KeyCode::Home));
    assert_eq!(on(&app), Some(1008));
    let mut newest = newer;
    for r in &mut newest {
        r.seq += 1;
    }
    app.update(snap(Snapshot::Audit(newest)));
    assert_eq!(on(&app), Some(1009), "the top row follows the newest");
}

#[test]
fn events_filter_by_type() {
    let mut app = fixture::app();
    app.update(ch('5'));
    app.update(ch('/'));
    typing(&mut app, "order trade");
    app.update(key(KeyCode::Enter));
    let kinds: Vec<&str> = app.visible_events().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["TRADE_EXECUTED", "ORDER_CREATED"]);
}

#[test]
fn a_scrolled_event_list_keeps_its_place() {
    let mut app = fixture::app();
    app.update(ch('5'));
    app.update(ch('j'));
    let seq = app.visible_events()[app.events.selected].seq;
    app.update(event("ORDER_CREATED", serde_json::json!({})));
    assert_eq!(app.visible_events()[app.events.selected].seq, seq);
}

#[test]
fn snapshots_are_fetched_when_stale_and_visible() {
    let mut app = fixture::app();
    assert!(fetches(&app.update(Action::Flush)).is_empty(), "nothing stale");
    // An order event on Overview: the orders table is stale but not on screen.
    app.update(event("ORDER_CREATED", serde_json::json!({"symbol": "AAPL", "user_id": ALICE})));
    assert!(!app.wants_flush());
    assert!(fetches(&app.update(Action::Flush)).is_empty());
    app.update(ch('2'));
    assert!(app.wants_flush());
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Orders]);
    // In flight: another event does not ask again until the answer is in.
    app.update(event("ORDER_CANCELLED", serde_json::json!({"symbol": "AAPL"})));
    assert!(fetches(&app.update(Action::Flush)).is_empty());
    app.update(snap(Snapshot::Orders(fixture::orders())));
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Orders]);
    // The Book refetches on a trade of its own symbol only.
    app.update(ch('3'));
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Market("AAPL".into())], "made stale by the fixture's trade");
    app.update(snap(Snapshot::Market(fixture::market())));
    app.update(event("TRADE_EXECUTED", serde_json::json!({"symbol": "BTC-USD"})));
    assert!(!fetches(&app.update(Action::Flush)).contains(&Fetch::Market("AAPL".into())));
    app.update(event("TRADE_EXECUTED", serde_json::json!({"symbol": "AAPL"})));
    assert!(fetches(&app.update(Action::Flush)).contains(&Fetch::Market("AAPL".into())));
    // h/l changes the symbol and asks for its book.
    app.update(ch('l'));
    assert_eq!(app.book.symbol.as_deref(), Some("BTC-USD"));
    assert!(fetches(&app.update(Action::Flush)).contains(&Fetch::Market("BTC-USD".into())));
}

#[test]
fn metrics_are_polled_only_on_overview() {
    let mut app = fixture::app();
    assert_eq!(fetches(&app.update(Action::Tick)), vec![Fetch::Metrics]);
    assert!(fetches(&app.update(Action::Tick)).is_empty(), "one at a time");
    app.update(fixture::snap(fixture::metrics(99_000, 1, 1, 1, 0)));
    app.update(ch('2'));
    assert!(fetches(&app.update(Action::Tick)).is_empty());
}

#[test]
fn a_lost_connection_is_shown_and_recovered() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(Action::Net(Net::Disconnected("connection refused".into())));
    assert_eq!(app.conn, Conn::Reconnecting("connection refused".into()));
    app.update(event("ORDER_CREATED", serde_json::json!({})));
    assert!(fetches(&app.update(Action::Flush)).is_empty(), "no fetches while the daemon is away");
    app.update(Action::Net(Net::Connected { head: 1000, own: false }));
    assert_eq!(app.conn, Conn::Live);
    let fx = fetches(&app.update(Action::Flush));
    for k in [Fetch::Health, Fetch::Services, Fetch::Users, Fetch::Symbols, Fetch::Orders] {
        assert!(fx.contains(&k), "{k:?} refetched after a reconnect: {fx:?}");
    }
}

#[test]
fn a_viewer_session_is_read_only() {
    let mut app = fixture::app();
    app.update(Action::Net(Net::Role(Role::Viewer)));
    assert!(app.read_only());
    app.update(ch('2'));
    for k in ['n', 'c', 'a'] {
        let fx = app.update(ch(k));
        assert!(fx.is_empty() && matches!(app.overlay, Overlay::None), "{k}");
        assert!(app.flash.as_ref().unwrap().text.starts_with("read-only session (a viewer token)"));
    }
    app.update(ch('4'));
    app.update(ch('d'));
    assert!(matches!(app.overlay, Overlay::None));
}

#[test]
fn a_failed_fetch_is_shown_where_the_data_would_be() {
    let mut app = fixture::app();
    app.update(ch('6'));
    app.update(Action::Net(Net::FetchFailed(
        Fetch::AuditVerify,
        Failure { status: 503, code: "service_unavailable".into(), message: "audit is restarting".into(), nothing_sent: false },
    )));
    assert_eq!(app.errors.get(&Fetch::AuditVerify).map(String::as_str), Some("service_unavailable: audit is restarting"));
    app.update(ch('v'));
    app.update(snap(Snapshot::AuditVerify(crate::api::AuditVerify {
        ok: true,
        records: 1,
        first_bad: None,
        unmet_anchor: None,
        anchor_unreadable: None,
    })));
    assert!(app.errors.is_empty());
}

#[test]
fn replayed_history_is_not_counted_as_a_rate() {
    let mut app = App::new(Settings::default());
    app.update(Action::Net(Net::Connected { head: 10, own: false }));
    for seq in 1..=12 {
        app.update(Action::Net(Net::Event(Box::new(fixture::event(seq, "USER_CREATED", "users", serde_json::json!({}))))));
    }
    app.update(Action::Tick);
    assert_eq!(app.rates.events_per_s.last(), Some(2));
    assert_eq!(app.last_seq, 12);
}

#[test]
fn messages_fade() {
    let mut app = fixture::app();
    app.update(ch('r'));
    assert!(app.flash.is_some());
    for _ in 0..10 {
        app.update(Action::Tick);
    }
    assert!(app.flash.is_none());
}

#[test]
fn a_filter_naming_a_user_or_symbol_asks_the_daemon_for_their_orders() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(Action::Flush);
    app.update(snap(Snapshot::Orders(fixture::orders())));
    let scopes =
        |fx: &[Effect]| fx.iter().filter_map(|e| if let Effect::FetchOrders(s) = e { Some(s.clone()) } else { None }).collect::<Vec<_>>();
    app.update(ch('/'));
    typing(&mut app, "bob aapl");
    app.update(key(KeyCode::Enter));
    let want = OrdersScope { user_id: Some(fixture::BOB.into()), symbol: Some("AAPL".into()) };
    assert_eq!(scopes(&app.update(Action::Flush)), vec![want]);
    app.update(snap(Snapshot::Orders(fixture::orders())));
    // A partial word filters the rows fetched, and asks nothing new of the daemon.
    app.update(ch('/'));
    typing(&mut app, " sel");
    app.update(key(KeyCode::Enter));
    assert!(scopes(&app.update(Action::Flush)).is_empty());
    app.update(snap(Snapshot::Orders(fixture::orders())));
    // Cleared: every user's orders again.
    app.update(key(KeyCode::Esc));
    assert_eq!(scopes(&app.update(Action::Flush)), vec![OrdersScope::default()]);
}

/// A cancel (a question, not a form) that got no answer says, like a form, whether it
/// reached the daemon: one to a stopped daemon was not sent and may be asked again; one
/// whose answer was lost may have been done. Both once read `cancel … failed:
/// unreachable: …`, and the user could not tell whether the order was still open.
#[test]
fn a_cancel_without_an_answer_says_whether_it_was_sent() {
    let mut app = fixture::app();
    app.update(ch('2'));
    let cancel = || Command::Cancel { order_id: "ord_0195aaaa00000000c0ffee01".into() };
    let down = Failure {
        status: 0,
        code: "unreachable".into(),
        message: "cannot reach the agt daemon at /tmp/h/agt.sock: connection refused".into(),
        nothing_sent: true,
    };
    app.update(Action::Net(Net::Done(cancel(), Err(down))));
    let flash = app.flash.clone().unwrap();
    assert!(flash.error);
    assert_eq!(flash.text, "cancel c0ffee01 not sent: cannot reach the agt daemon at /tmp/h/agt.sock: connection refused");

    let lost = Failure { status: 0, code: "unreachable".into(), message: "connection reset".into(), nothing_sent: false };
    app.update(Action::Net(Net::Done(cancel(), Err(lost))));
    let flash = app.flash.clone().unwrap();
    assert!(flash.error);
    assert_eq!(flash.text, "cancel c0ffee01: no answer: connection reset; it may have been done: look before sending it again");
}

#[test]
fn the_top_row_follows_the_newest_order_and_another_row_stays_on_its_order() {
    let mut app = fixture::app();
    app.update(ch('2'));
    let mut rows = fixture::orders();
    let newer = |rows: &mut Vec<Order>, id: &str| {
        let mut o = rows[0].clone();
        o.order_id = id.into();
        rows.insert(0, o);
    };
    newer(&mut rows, "ord_0195aaaa00000000c0ffee06");
    app.update(fixture::snap(Snapshot::Orders(rows.clone())));
    assert_eq!(app.selected_order().unwrap().order_id, "ord_0195aaaa00000000c0ffee06");
    app.update(ch('j'));
    newer(&mut rows, "ord_0195aaaa00000000c0ffee07");
    app.update(fixture::snap(Snapshot::Orders(rows)));
    assert_eq!(app.selected_order().unwrap().order_id, "ord_0195aaaa00000000c0ffee01", "a row below the top keeps its order");
}

#[test]
fn the_order_form_takes_the_selected_users_name_over_the_last_forms() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(ch('n'));
    typing(&mut app, "10");
    app.update(key(KeyCode::Tab));
    typing(&mut app, "150.2");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))).len(), 1, "alice's order is sent");
    app.update(key(KeyCode::Esc));
    app.update(ch('j'));
    assert_eq!(app.selected_order().unwrap().user_id, fixture::BOB);
    app.update(ch('n'));
    assert_eq!(form(&app).field(form::USER).unwrap().value(), "bob");
}

#[test]
fn a_failed_refresh_of_what_the_tab_shows_is_said_even_with_rows_on_screen() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(snap(Snapshot::Orders(fixture::orders())));
    assert_eq!(app.refresh_error(), None);
    let down =
        Failure { status: 503, code: "service_unavailable".into(), message: "the orders service has failed".into(), nothing_sent: false };
    app.update(Action::Net(Net::FetchFailed(Fetch::Orders, down)));
    assert_eq!(app.orders.rows.len(), 5, "the last rows stay");
    assert!(app.refresh_error().is_some_and(|e| e.contains("service_unavailable")), "{:?}", app.refresh_error());
    app.update(ch('3'));
    assert_eq!(app.refresh_error(), None, "another tab does not show orders");
}

#[test]
fn the_overview_refetches_the_services_every_few_seconds() {
    let mut app = fixture::app();
    app.update(Action::Flush);
    let services = |fx: &[Effect]| fetches(fx).contains(&Fetch::Services);
    let mut seen = 0;
    for _ in 0..6 {
        app.update(Action::Tick);
        if services(&app.update(Action::Flush)) {
            seen += 1;
            app.update(snap(Snapshot::Services(Vec::new())));
        }
    }
    assert_eq!(seen, 2, "every 3 ticks");
    app.update(ch('2'));
    for _ in 0..6 {
        app.update(Action::Tick);
        assert!(!services(&app.update(Action::Flush)), "not while another tab is shown");
    }
}

#[test]
fn an_amend_of_a_partly_filled_order_needs_a_total_above_the_filled() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(ch('j'));
    assert_eq!(app.selected_order().unwrap().filled_quantity, fixture::d("2"));
    app.update(ch('a'));
    app.update(key(KeyCode::Tab));
    app.update(ctrl('u'));
    typing(&mut app, "2");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert_eq!(form(&app).field(form::QUANTITY).unwrap().error.as_deref(), Some("the new total must exceed the 2 already filled"));
}

/// A trader's token: its stream holds its own user's events alone, so what the tab shows
/// is polled besides; what the role may not read (services' details, audit) is never
/// asked for.
#[test]
fn a_trader_session_polls_what_it_may_read_and_never_asks_for_the_rest() {
    let mut app = App::new(Settings::default());
    app.update(Action::Net(Net::Role(Role::Trader)));
    app.update(Action::Net(Net::Connected { head: 0, own: true }));
    assert_eq!(app.conn, Conn::Live);
    assert!(app.polled());
    let fx = fetches(&app.update(Action::Flush));
    for k in [Fetch::Health, Fetch::Users, Fetch::Symbols] {
        assert!(fx.contains(&k), "{k:?} fetched on connect: {fx:?}");
    }
    for k in [Fetch::Services, Fetch::Audit, Fetch::AuditVerify] {
        assert!(!fx.contains(&k), "{k:?} is not a trader's to read: {fx:?}");
    }
    app.update(snap(Snapshot::Users(vec![fixture::user(ALICE, "alice")])));
    app.update(snap(Snapshot::Health(fixture::health(Default::default()))));
    assert_eq!(app.own_user().map(|u| u.username.as_str()), Some("alice"));

    // Orders: fetched on entering, then again each second, one request at a time.
    app.update(ch('2'));
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Orders]);
    app.update(Action::Tick);
    assert!(fetches(&app.update(Action::Flush)).is_empty(), "still in flight");
    app.update(snap(Snapshot::Orders(vec![])));
    app.update(Action::Tick);
    assert!(!app.loading(&Fetch::Orders), "a poll of an empty list is not a first load: no flicker of \"loading…\"");
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Orders], "polled without any event");

    // Accounts: the one user listed, its account polled.
    app.update(ch('4'));
    assert_eq!(fetches(&app.update(Action::Flush)), vec![Fetch::Account(ALICE.into())]);
    app.update(snap(Snapshot::Account(fixture::account())));
    app.update(Action::Tick);
    let fx = fetches(&app.update(Action::Flush));
    assert!(fx.contains(&Fetch::Account(ALICE.into())), "{fx:?}");
    answer_as_for_a_trader(&mut app, &fx);

    // Audit has nothing to show; Events shows its stream. Neither asks for anything,
    // `r` and `v` included.
    assert!(!app.tab_available(Tab::Audit));
    assert!([Tab::Orders, Tab::Book, Tab::Accounts, Tab::Events].into_iter().all(|t| app.tab_available(t)));
    for k in ['6', 'v', 'r', '5', 'r'] {
        app.update(ch(k));
        for _ in 0..3 {
            app.update(Action::Tick);
        }
        let fx = fetches(&app.update(Action::Flush));
        assert!(!fx.iter().any(|f| matches!(f, Fetch::Services | Fetch::Audit | Fetch::AuditVerify)), "after {k}: {fx:?}");
        answer_as_for_a_trader(&mut app, &fx);
    }
    assert_eq!(app.refresh_error(), None, "nothing refused is shown as an outage");

    // Overview: the health every few seconds and the public metrics, not the services.
    app.update(ch('1'));
    let mut asked = Vec::new();
    for _ in 0..3 {
        asked.extend(fetches(&app.update(Action::Tick)));
        asked.extend(fetches(&app.update(Action::Flush)));
    }
    assert!(asked.contains(&Fetch::Health) && asked.contains(&Fetch::Metrics), "{asked:?}");
    assert!(!asked.contains(&Fetch::Services), "{asked:?}");
}

/// Answers fetches as the daemon answers a trader (who asks for nothing else).
fn answer_as_for_a_trader(app: &mut App, fx: &[Fetch]) {
    for f in fx {
        let s = match f {
            Fetch::Health => Snapshot::Health(fixture::health(Default::default())),
            Fetch::Users => Snapshot::Users(vec![fixture::user(ALICE, "alice")]),
            Fetch::Symbols => Snapshot::Symbols(vec![fixture::instrument("AAPL", "0.01", "1")]),
            Fetch::Orders => Snapshot::Orders(vec![]),
            Fetch::Account(_) => Snapshot::Account(fixture::account()),
            Fetch::Market(_) => Snapshot::Market(fixture::market()),
            Fetch::Metrics => fixture::metrics(0, 0, 0, 0, 0),
            other => panic!("a trader's dashboard asked for {other:?}"),
        };
        app.update(snap(s));
    }
}

/// A trader's Events tab shows its own user's events as they come on its stream, with
/// the filter, the pause and the detail an admin has; they also make its orders stale.
/// It said the session was polled and named `agt events tail -f` instead.
#[test]
fn a_trader_follows_its_own_events() {
    let mut app = fixture::trader_app();
    app.update(ch('2'));
    app.update(Action::Flush);
    app.update(snap(Snapshot::Orders(vec![])));
    app.update(ch('5'));
    assert!(app.tab_available(Tab::Events));
    let kinds = |app: &App| app.visible_events().iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&app), ["ORDER_CREATED", "ACCOUNT_DEPOSITED", "USER_CREATED"]);
    app.update(ch('/'));
    typing(&mut app, "order");
    app.update(key(KeyCode::Enter));
    assert_eq!(kinds(&app), ["ORDER_CREATED"]);
    app.update(ch(' '));
    let fill = serde_json::json!({"order_id": "ord_0195aaaa00000000c0ffee01", "user_id": ALICE, "status": "partially_filled"});
    app.update(Action::Net(Net::Event(Box::new(fixture::event(420, "ORDER_EXECUTED", "orders", fill)))));
    assert_eq!(kinds(&app), ["ORDER_CREATED"], "held while paused");
    app.update(ch(' '));
    assert_eq!(kinds(&app), ["ORDER_EXECUTED", "ORDER_CREATED"]);
    app.update(key(KeyCode::Enter));
    assert!(matches!(app.overlay, Overlay::Detail { of: Detail::Event(420), .. }));
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Esc));
    assert_eq!(kinds(&app).len(), 4, "Esc cleared the filter");
    app.update(ch('2'));
    assert!(fetches(&app.update(Action::Flush)).contains(&Fetch::Orders), "the fill made its orders stale");
}

/// A token the daemon refuses the stream (a trader's bound to no user) is polled, and
/// its Events tab has nothing to show.
#[test]
fn a_session_refused_the_stream_has_no_events_tab() {
    let mut app = App::new(Settings::default());
    app.update(Action::Net(Net::Role(Role::Trader)));
    app.update(Action::Net(Net::Polling(fixture::TRADER_REFUSED.into())));
    assert!(app.polled() && app.conn == Conn::Live);
    assert!(!app.tab_available(Tab::Events));
}

/// A session that follows the stream polls nothing but the Overview's counters.
#[test]
fn a_session_with_the_event_stream_is_not_polled() {
    let mut app = fixture::app();
    app.update(ch('2'));
    app.update(Action::Flush);
    app.update(snap(Snapshot::Orders(fixture::orders())));
    for _ in 0..12 {
        app.update(Action::Tick);
        assert!(fetches(&app.update(Action::Flush)).is_empty());
    }
}

/// A trader places, amends and cancels its own orders, as its own user; transfers are an
/// admin's and are refused before anything is sent.
#[test]
fn a_trader_trades_as_its_own_user_but_does_not_transfer() {
    let mut app = fixture::trader_app();
    assert!(!app.read_only());
    app.update(ch('3'));
    app.update(ch('n'));
    assert_eq!(form(&app).field(form::USER).unwrap().value(), "alice", "the new order is the trader's own");
    app.update(key(KeyCode::Esc));
    app.update(ch('2'));
    app.update(ch('c'));
    assert!(matches!(app.overlay, Overlay::Confirm { .. }), "its own open order can be cancelled");
    app.update(ch('n'));
    app.update(ch('4'));
    for k in ['d', 'w'] {
        let fx = app.update(ch(k));
        assert!(fx.is_empty() && matches!(app.overlay, Overlay::None), "{k}");
        let flash = app.flash.as_ref().unwrap();
        assert!(flash.error && flash.text.starts_with("deposits and withdrawals need an admin token"), "{flash:?}");
    }
}

/// A read the daemon refuses as `forbidden` is that token's for good: said where the data
/// would be, never asked for again, and not an outage in the status line. A disabled
/// user's 403 is an error like any other: it passes once the user is enabled.
#[test]
fn a_read_refused_as_forbidden_is_not_asked_for_again() {
    let mut app = fixture::app();
    app.update(ch('2'));
    let forbidden = Failure { status: 403, code: "forbidden".into(), message: "not yours".into(), nothing_sent: false };
    app.update(Action::Net(Net::FetchFailed(Fetch::Orders, forbidden)));
    assert_eq!(app.unavailable(&Fetch::Orders), Some("not yours"));
    assert_eq!(app.who(), "an admin token");
    assert!(app.errors.is_empty() && app.refresh_error().is_none());
    app.update(event("ORDER_CREATED", serde_json::json!({"symbol": "AAPL"})));
    app.update(ch('r'));
    assert!(!fetches(&app.update(Action::Flush)).contains(&Fetch::Orders));

    let disabled = Failure { status: 403, code: "user_disabled".into(), message: "user alice is disabled".into(), nothing_sent: false };
    app.update(ch('3'));
    app.update(Action::Net(Net::FetchFailed(Fetch::Market("AAPL".into()), disabled)));
    assert_eq!(app.unavailable(&Fetch::Market("AAPL".into())), None);
    assert!(app.refresh_error().is_some_and(|e| e.starts_with("user_disabled")));
}
