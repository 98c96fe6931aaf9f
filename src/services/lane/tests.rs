//! The lane on its own thread, driven through its handles as the daemon drives it:
//! placements sent together land in one batch and must come out as the step-by-step
//! saga would have left them.
use super::cancel::AmendTerms;
use super::flush::{BUSY_AT, FLUSH_AFTER, FLUSH_AFTER_BUSY};
use super::*;
use crate::api::{OrderStatus, OrderType, Side, TimeInForce};
use rust_decimal::Decimal;
use tokio::sync::oneshot;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

struct Running {
    handles: Handles,
    statuses: Statuses,
    thread: Option<std::thread::JoinHandle<()>>,
    bus: crate::services::bus::Bus,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        let (tx, rx) = mpsc::channel();
        let statuses = Statuses::new();
        let handles = Handles::new(tx, &statuses, Arc::new(AnswerWait::new(ctx.settings.clone())));
        let st = statuses.clone();
        let thread = std::thread::spawn(move || {
            run_incarnation(&ctx, &rx, &st).map(|_| ()).unwrap();
        });
        while statuses.orders.state() != State::Running {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Running { handles, statuses, thread: Some(thread), bus, _dir: dir }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handles.control(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bus.shutdown();
    }
}

pub(super) fn aapl() -> Instrument {
    Instrument {
        symbol: "AAPL".into(),
        base: "AAPL".into(),
        quote: "USD".into(),
        tick: dec("0.01"),
        lot: dec("1"),
        min_quantity: dec("1"),
        max_quantity: dec("1000000"),
    }
}

pub(super) fn order(id: &str, user: &str, side: Side, qty: Decimal, coid: Option<&str>) -> NewOrder {
    NewOrder {
        order_id: id.into(),
        user_id: user.into(),
        symbol: "AAPL".into(),
        side,
        kind: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        price: Some(dec("100")),
        quantity: qty,
        client_order_id: coid.map(String::from),
    }
}

#[test]
fn placements_of_one_batch_trade_repeat_and_reject_as_the_saga_would() {
    let lane = Running::start();
    let h = &lane.handles;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let deposit = |user: &str, asset: &str, amount| {
            let (user_id, asset) = (user.to_string(), asset.to_string());
            h.risk.call(move |reply| risk::Cmd::Deposit { user_id, asset, amount, grid: 0, reply })
        };
        deposit("bob", "AAPL", dec("10")).await.unwrap();
        deposit("alice", "USD", dec("1000")).await.unwrap();
        // Sent back to back without waiting, so one drain of the mailbox takes them all.
        let place = |o: NewOrder| {
            h.placements.send(|reply| LaneCmd::Place(Placement { order: o, user_active: true, instrument: aapl(), reply })).unwrap()
        };
        let sell = place(order("ord_s", "bob", Side::Sell, dec("5"), None));
        let buy = place(order("ord_b", "alice", Side::Buy, dec("3"), Some("b1")));
        let again = place(order("ord_b2", "alice", Side::Buy, dec("3"), Some("b1")));
        let too_big = place(order("ord_x", "alice", Side::Buy, dec("9"), None));
        let (sell, buy, again, too_big) = (sell.await.unwrap(), buy.await.unwrap(), again.await.unwrap(), too_big.await.unwrap());

        let (code, sell) = sell.unwrap();
        assert_eq!((code, sell.status), (201, OrderStatus::New), "it rested before the buy crossed it");
        let (code, buy) = buy.unwrap();
        assert_eq!((code, buy.status, buy.filled_quantity, buy.fills.len()), (201, OrderStatus::Filled, dec("3"), 1));
        assert_eq!(buy.average_price, Some(dec("100")));
        let (code, first) = again.unwrap();
        assert_eq!((code, first.order_id.as_str()), (200, "ord_b"), "a repeated client_order_id answers the first order");
        let e = too_big.unwrap_err();
        assert_eq!((e.status, e.code.as_ref()), (422, "insufficient_funds"), "700 USD left cannot buy 9 at 100");

        let get = |id: &str| {
            let order_id = id.to_string();
            h.orders.call(move |reply| orders::Cmd::Get { order_id, reply })
        };
        assert_eq!(get("ord_s").await.unwrap().status, OrderStatus::PartiallyFilled);
        assert_eq!(get("ord_x").await.unwrap().status, OrderStatus::Rejected);
        assert!(get("ord_b2").await.is_err(), "the repeat was never stored");
        let unfinished = h.orders.call(orders::Cmd::Unfinished).await.unwrap();
        assert!(unfinished.is_empty(), "every saga of the batch is done: {unfinished:?}");

        // Cash and assets moved exactly; only the resting sell still holds anything.
        let account = |user: &str| {
            let user_id = user.to_string();
            h.risk.call(move |reply| risk::Cmd::Account { user_id, reply })
        };
        let bal = |a: &crate::api::Account, asset: &str| a.balances.iter().find(|b| b.asset == asset).map(|b| (b.total, b.held));
        let alice = account("alice").await.unwrap();
        assert_eq!(bal(&alice, "USD"), Some((dec("700"), dec("0"))));
        assert_eq!(bal(&alice, "AAPL"), Some((dec("3"), dec("0"))));
        let bob = account("bob").await.unwrap();
        assert_eq!(bal(&bob, "USD"), Some((dec("300"), dec("0"))));
        assert_eq!(bal(&bob, "AAPL"), Some((dec("7"), dec("2"))));
        let holds = h.risk.call(risk::Cmd::Holds).await.unwrap();
        assert_eq!(holds.iter().map(|h| h.order_id.as_str()).collect::<Vec<_>>(), ["ord_s"]);

        // The saga's own match step (what a resumed saga replays) stores its outcome,
        // so a replay answers it again instead of trading twice.
        let req = saga::match_request(&order("ord_m", "alice", Side::Buy, dec("1"), None), &aapl(), None);
        let first = h.trading.call(|reply| trading::Cmd::Match { req: req.clone(), reply }).await.unwrap();
        let replay = h.trading.call(|reply| trading::Cmd::Match { req, reply }).await.unwrap();
        assert_eq!(first.fills.len(), 1);
        assert_eq!(replay, first, "a replayed match answers the stored outcome");
        let book = h.trading.call(|reply| trading::Cmd::Book { symbol: "AAPL".into(), depth: 10, reply }).await.unwrap();
        let resting: Decimal = book.asks.iter().map(|(_, qty)| *qty).sum();
        assert_eq!(resting, dec("1"), "ord_s, the one ask, filled once, not twice: {book:?}");
    });
    // Lane placements keep no outcome: the journal holds it until all three stores
    // have applied it, and no saga is resumed for them.
    let trading_db = rusqlite::Connection::open(lane._dir.path().join("data/trading.db")).unwrap();
    let stored: Vec<String> = trading_db
        .prepare("SELECT order_id FROM outcomes")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, ["ord_m"]);
    // Nor does risk store their trade ids: the journal keeps a redo from settling twice.
    let risk_db = rusqlite::Connection::open(lane._dir.path().join("data/risk.db")).unwrap();
    let settled: i64 = risk_db.query_row("SELECT count(*) FROM settled_trades", [], |r| r.get(0)).unwrap();
    assert_eq!(settled, 0);
    assert_eq!(lane.statuses.risk.state(), State::Running);
}

/// If risk ever refuses a match's settlement, the order is left `settling` for
/// recovery, and trading keeps its outcome so that recovery's match step answers it
/// instead of trading again. (The engine's trades always settle; a symbol whose base
/// asset is the quote currency, `USD-USD`, is the one way to make risk refuse them.)
#[test]
fn a_match_risk_refuses_to_settle_keeps_its_outcome_for_recovery() {
    let lane = Running::start();
    let h = &lane.handles;
    let odd = Instrument { symbol: "USD-USD".into(), base: "USD".into(), ..aapl() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for user in ["bob", "alice"] {
            let user_id = user.to_string();
            h.risk
                .call(move |reply| risk::Cmd::Deposit { user_id, asset: "USD".into(), amount: dec("1000"), grid: 0, reply })
                .await
                .unwrap();
        }
        let place = |o: NewOrder| {
            let instrument = odd.clone();
            h.placements.send(|reply| LaneCmd::Place(Placement { order: o, user_active: true, instrument, reply })).unwrap()
        };
        let usdx = |mut o: NewOrder| {
            o.symbol = "USD-USD".into();
            o
        };
        place(usdx(order("ord_s", "bob", Side::Sell, dec("1"), None))).await.unwrap().unwrap();
        let (_, buy) = place(usdx(order("ord_b", "alice", Side::Buy, dec("1"), None))).await.unwrap().unwrap();
        assert_eq!(buy.fills.len(), 1, "the book traded");
        let unfinished = h.orders.call(orders::Cmd::Unfinished).await.unwrap();
        assert_eq!(unfinished.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), ["ord_b"], "left for recovery");
        // Recovery's match step answers what the book did, and trades nothing more.
        let req = saga::match_request(&usdx(order("ord_b", "alice", Side::Buy, dec("1"), None)), &odd, None);
        let replayed = h.trading.call(|reply| trading::Cmd::Match { req, reply }).await.unwrap();
        assert_eq!(
            replayed.fills.iter().map(|f| &f.trade_id).collect::<Vec<_>>(),
            buy.fills.iter().map(|f| &f.trade_id).collect::<Vec<_>>()
        );
    });
}

/// An order as the lane has it.
pub(super) fn get(lane: &mut Lane, id: &str) -> Order {
    let (reply, rx) = oneshot::channel();
    one(lane, Work { orders: vec![orders::Cmd::Get { order_id: id.into(), reply }], ..Default::default() }, rx).unwrap()
}

/// A user's balances, as (asset, total, held).
pub(super) fn account(lane: &mut Lane, user: &str) -> Vec<(String, Decimal, Decimal)> {
    let (reply, rx) = oneshot::channel();
    let a = one(lane, Work { risk: vec![risk::Cmd::Account { user_id: user.into(), reply }], ..Default::default() }, rx).unwrap();
    a.balances.iter().map(|b| (b.asset.clone(), b.total, b.held)).collect()
}

/// AAPL's book: (bids, asks), each (price, quantity) best first.
#[allow(clippy::type_complexity)]
pub(super) fn book(lane: &mut Lane) -> (Vec<(Decimal, Decimal)>, Vec<(Decimal, Decimal)>) {
    let (reply, rx) = oneshot::channel();
    let b = one(lane, Work { trading: vec![trading::Cmd::Book { symbol: "AAPL".into(), depth: 10, reply }], ..Default::default() }, rx)
        .unwrap();
    (b.bids, b.asks)
}

/// `o` at another price.
pub(super) fn priced(price: &str, o: NewOrder) -> NewOrder {
    NewOrder { price: Some(dec(price)), ..o }
}

/// Runs one batch of commands on a lane driven by hand (no thread), and answers the
/// first reply.
fn one<T>(lane: &mut Lane, work: Work, rx: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    lane.run(work).unwrap();
    let mut rx = rx;
    rx.try_recv().expect("answered within the batch")
}

/// A lane driven by hand (no thread) on a fresh home, with these deposits made.
pub(super) fn funded(dir: &tempfile::TempDir, deposits: &[(&str, &str, &str)]) -> (Lane, ServiceCtx, crate::services::bus::Bus) {
    let (bus, ctx) = ServiceCtx::for_tests(dir.path());
    // The read models an amend's terms come from, as the market and users leave them.
    ctx.instruments.loaded_with(vec![aapl()]);
    ctx.directory.loaded_with(Vec::new());
    let mut lane = Lane::open(&ctx, None).unwrap();
    for (user, asset, amount) in deposits {
        let (reply, rx) = oneshot::channel();
        let cmd = risk::Cmd::Deposit { user_id: user.to_string(), asset: asset.to_string(), amount: dec(amount), grid: 0, reply };
        one(&mut lane, Work { risk: vec![cmd], ..Default::default() }, rx).unwrap();
    }
    (lane, ctx, bus)
}

/// Runs `orders` as one batch of placements on a lane driven by hand, and gives each
/// one's answer, in order.
fn place_batch(lane: &mut Lane, orders: impl IntoIterator<Item = NewOrder>) -> Vec<Result<(u16, Order), ApiError>> {
    let (places, answers): (Vec<_>, Vec<_>) = orders
        .into_iter()
        .map(|order| {
            let (reply, rx) = oneshot::channel();
            (Placement { order, user_active: true, instrument: aapl(), reply }, rx)
        })
        .unzip();
    lane.run(Work { places, ..Default::default() }).unwrap();
    answers.into_iter().map(|mut rx| rx.try_recv().expect("answered within the batch")).collect()
}

#[test]
fn a_lane_that_stops_before_its_flush_redoes_what_it_answered_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("bob", "USD", "1000"), ("alice", "USD", "1000")]);
    let at_101 = |o: NewOrder| NewOrder { price: Some(dec("101")), ..o };
    let batch = [
        order("ord_s", "bob", Side::Sell, dec("5"), None),
        order("ord_b", "alice", Side::Buy, dec("3"), None),
        order("ord_x", "alice", Side::Buy, dec("9"), None),
        // 2 of 5 fill, the rest is cancelled.
        NewOrder { time_in_force: TimeInForce::Ioc, ..order("ord_i", "alice", Side::Buy, dec("5"), None) },
        at_101(order("ord_s2", "bob", Side::Sell, dec("1"), None)),
        // Crosses bob's own sell: self-trade prevention cancels it.
        at_101(order("ord_b2", "bob", Side::Buy, dec("1"), None)),
    ];
    let answered = place_batch(&mut lane, batch);
    assert_eq!(answered[2].as_ref().unwrap_err().code.as_ref(), "insufficient_funds");
    assert!(lane.pending(), "risk and orders wait for their flush");
    // Stopped as by a crash: the open transactions are rolled back.
    drop(lane);

    let mut lane = Lane::open(&ctx, None).unwrap();
    let statuses = [OrderStatus::Filled, OrderStatus::Cancelled, OrderStatus::New, OrderStatus::Cancelled];
    for (answer, status) in [&answered[1], &answered[3], &answered[4], &answered[5]].into_iter().zip(statuses) {
        let (_, answer) = answer.as_ref().unwrap();
        assert_eq!(answer.status, status, "{answer:?}");
        let stored = get(&mut lane, &answer.order_id);
        assert_eq!(&stored, answer, "the order is stored as it was answered, times included");
    }
    assert!(answered[5].as_ref().unwrap().1.reject_reason.as_deref().unwrap().starts_with("self_trade_prevented"));
    // Trading matched the batch again on its committed book: the same book, and the
    // same trades under the ids the answers gave.
    let book = book(&mut lane);
    assert_eq!(book, (vec![], vec![(dec("101"), dec("1"))]), "only ord_s2 rests");
    let answered_trades: Vec<String> = answered.iter().flatten().flat_map(|(_, o)| o.fills.iter().map(|f| f.trade_id.clone())).collect();
    let stored_trades: Vec<String> = lane
        .trading
        .work(|_, tx, _| {
            Ok(tx.prepare("SELECT trade_id FROM trades ORDER BY trade_id")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
        })
        .unwrap();
    let mut answered_trades = answered_trades;
    answered_trades.sort();
    assert_eq!(stored_trades, answered_trades);
    assert_eq!(answered[3].as_ref().unwrap().1.filled_quantity, dec("2"));
    assert_eq!(get(&mut lane, "ord_s").status, OrderStatus::Filled);
    assert_eq!(get(&mut lane, "ord_x").status, OrderStatus::Rejected);
    assert_eq!(account(&mut lane, "alice"), [("AAPL".into(), dec("5"), dec("0")), ("USD".into(), dec("500"), dec("0"))]);
    assert_eq!(account(&mut lane, "bob"), [("AAPL".into(), dec("5"), dec("1")), ("USD".into(), dec("1500"), dec("0"))]);
    let (reply, rx) = oneshot::channel();
    let unfinished = one(&mut lane, Work { orders: vec![orders::Cmd::Unfinished(reply)], ..Default::default() }, rx).unwrap();
    assert!(unfinished.is_empty(), "{unfinished:?}");
    // Redone once: a third start finds nothing more to do and changes nothing.
    drop(lane);
    let mut lane = Lane::open(&ctx, None).unwrap();
    assert_eq!(account(&mut lane, "alice"), [("AAPL".into(), dec("5"), dec("0")), ("USD".into(), dec("500"), dec("0"))]);
    assert_eq!(lane.journal.after(0).unwrap().1.len(), 0, "the journal was pruned");
    // The redone book trades on: alice takes ord_s2.
    let (reply, rx) = oneshot::channel();
    let o = NewOrder { price: Some(dec("101")), ..order("ord_b3", "alice", Side::Buy, dec("1"), None) };
    let (_, taken) = one(
        &mut lane,
        Work { places: vec![Placement { order: o, user_active: true, instrument: aapl(), reply }], ..Default::default() },
        rx,
    )
    .unwrap();
    assert_eq!((taken.status, taken.fills[0].price), (OrderStatus::Filled, dec("101")));
    drop(lane);
    bus.shutdown();
}

/// A flush commits one store per step, and placements taken between two steps join
/// the stores not committed yet. Stopped as by a crash with the stores at three
/// different marks, the lane redoes for each what its mark lacks: every order,
/// account and resting order as answered.
#[test]
fn a_flush_commits_one_store_at_a_time_and_a_crash_between_steps_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    let start = lane.journalled;
    place_batch(&mut lane, [order("ord_s", "bob", Side::Sell, dec("5"), None), order("ord_b", "alice", Side::Buy, dec("3"), None)]);
    let first = lane.journalled;
    assert_eq!(first, start + 2);
    lane.flush_step().unwrap();
    assert_eq!((lane.marks, lane.flushing, lane.prepared), ([start, start, start], 0, true), "trading's resting rows first");
    lane.flush_step().unwrap();
    assert_eq!((lane.marks, lane.flushing, lane.prepared), ([first, start, start], 1, false), "then trading's commit, alone");
    assert!(lane.flush_in().is_zero(), "an idle lane goes straight on with the flush");
    // Each batch the lane runs meanwhile takes the flush one step on.
    place_batch(&mut lane, [order("ord_b2", "alice", Side::Buy, dec("1"), None)]);
    let second = lane.journalled;
    assert_eq!((lane.marks, lane.flushing), ([first, second, start], 2), "then risk, with the placement made meanwhile");
    place_batch(&mut lane, [order("ord_s2", "bob", Side::Sell, dec("2"), Some("c1"))]);
    let third = lane.journalled;
    assert_eq!((lane.marks, lane.flushing, lane.prepared), ([first, second, start], 2, true), "orders records what waits");
    assert!(!lane.has_deferred() && !lane.orders.svc.has_unwritten());
    lane.flush_step().unwrap();
    assert_eq!((lane.marks, lane.flushing, lane.applied), ([first, second, third], 0, first), "then commits; the flush is over");
    assert!(lane.pending(), "trading holds what came after its commit, for the next flush");
    assert!(lane.since.is_some(), "counted toward the next flush, which waits as any does");
    let answered: Vec<Order> = ["ord_s", "ord_b", "ord_b2", "ord_s2"].iter().map(|id| get(&mut lane, id)).collect();
    let accounts = (account(&mut lane, "alice"), account(&mut lane, "bob"), book(&mut lane));
    drop(lane);

    let mut lane = Lane::open(&ctx, None).unwrap();
    for order in &answered {
        assert_eq!(&get(&mut lane, &order.order_id), order);
    }
    assert_eq!((account(&mut lane, "alice"), account(&mut lane, "bob"), book(&mut lane)), accounts);
    assert_eq!(accounts.2, (vec![], vec![(dec("100"), dec("3"))]), "what ord_b and ord_b2 left of ord_s, and ord_s2");
    assert_eq!(lane.marks, [third; 3]);
    drop(lane);
    bus.shutdown();
}

/// A cancel is answered once its record is in the journal, like a placement, and a
/// placement later in the same batch matches on the book without the cancelled order.
/// Stopped before the flush, the lane redoes the cancels from the journal, in their
/// place between the placements: the same book, holds, orders and times.
#[test]
fn cancels_are_answered_from_the_journal_and_redone_in_order_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    // ord_s sells 5, ord_b takes 3 of them; ord_r rests at 99.
    let first = [
        order("ord_s", "bob", Side::Sell, dec("5"), None),
        order("ord_b", "alice", Side::Buy, dec("3"), None),
        priced("99", order("ord_r", "alice", Side::Buy, dec("2"), None)),
    ];
    assert!(place_batch(&mut lane, first).iter().all(|a| a.is_ok()));
    lane.flush().unwrap();

    let cancel_one = |id: &str, owner: Option<&str>| {
        let (reply, rx) = oneshot::channel();
        (Cancel::One { order_id: id.into(), owner: owner.map(String::from), reply }, rx)
    };
    let (mine, mut mine_rx) = cancel_one("ord_s", None);
    let (not_his, mut not_his_rx) = cancel_one("ord_r", Some("bob"));
    let (reply, mut many_rx) = oneshot::channel();
    let many = Cancel::Many { user_id: Some("alice".into()), symbol: None, reply };
    // Would have taken ord_s's last 2, had the cancel not come first.
    let (reply, mut late_rx) = oneshot::channel();
    let late = Placement { order: order("ord_late", "alice", Side::Buy, dec("2"), None), user_active: true, instrument: aapl(), reply };
    lane.run(Work { cancels: vec![mine, not_his, many], places: vec![late], ..Default::default() }).unwrap();
    assert!(lane.pending(), "answered before risk and orders commit");
    let cancelled = mine_rx.try_recv().unwrap().unwrap();
    assert_eq!((cancelled.status, cancelled.remaining_quantity, cancelled.filled_quantity), (OrderStatus::Cancelled, dec("2"), dec("3")));
    assert_eq!(not_his_rx.try_recv().unwrap().unwrap_err().status, 404, "another user's order looks absent");
    let many: Vec<Order> = many_rx.try_recv().unwrap().unwrap();
    assert_eq!(many.iter().map(|o| (o.order_id.as_str(), o.status)).collect::<Vec<_>>(), [("ord_r", OrderStatus::Cancelled)]);
    let (_, late) = late_rx.try_recv().unwrap().unwrap();
    assert_eq!(late.status, OrderStatus::New, "matched against a book without the cancelled sell");
    // Stopped as by a crash: the open transactions are rolled back.
    drop(lane);

    let mut lane = Lane::open(&ctx, None).unwrap();
    assert_eq!(get(&mut lane, "ord_s"), cancelled, "stored as answered, times included");
    assert_eq!(get(&mut lane, "ord_r"), many[0]);
    assert_eq!(get(&mut lane, "ord_late"), late);
    let book = book(&mut lane);
    assert_eq!(book, (vec![(dec("100"), dec("2"))], vec![]), "only ord_late rests");
    assert_eq!(account(&mut lane, "bob"), [("AAPL".into(), dec("7"), dec("0")), ("USD".into(), dec("300"), dec("0"))]);
    assert_eq!(account(&mut lane, "alice"), [("AAPL".into(), dec("3"), dec("0")), ("USD".into(), dec("700"), dec("200"))]);
    // A cancel of a cancelled order changes nothing: 409.
    let (again, mut again_rx) = cancel_one("ord_s", None);
    lane.run(Work { cancels: vec![again], ..Default::default() }).unwrap();
    assert_eq!(again_rx.try_recv().unwrap().unwrap_err().status, 409);
    drop(lane);
    bus.shutdown();
}

/// A cancel-all goes a chunk per batch: the lane serves other commands between its
/// chunks, cancels only what rested when it came, and answers once the last chunk is
/// journalled; a crash keeps the chunks journalled before it.
#[test]
fn a_cancel_all_goes_in_chunks_and_lets_other_work_through() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("alice", "USD", "10000")]);
    let ids: Vec<String> = (0..10).map(|i| format!("ord_{i:02}")).collect();
    assert!(place_batch(&mut lane, ids.iter().map(|id| order(id, "alice", Side::Buy, dec("1"), None))).iter().all(|a| a.is_ok()));
    let (reply, mut all_rx) = oneshot::channel();
    lane.run(Work { cancels: vec![Cancel::Many { user_id: Some("alice".into()), symbol: None, reply }], ..Default::default() }).unwrap();
    assert!(all_rx.try_recv().is_err(), "not answered after its first chunk");
    assert!(lane.cancelling_many());
    // Placed meanwhile: answered at once, and not the cancel-all's.
    let late = place_batch(&mut lane, [order("ord_late", "alice", Side::Buy, dec("1"), None)]);
    assert_eq!(late[0].as_ref().unwrap().1.status, OrderStatus::New);
    lane.run(Work::default()).unwrap();
    let all = all_rx.try_recv().expect("answered after its third chunk").unwrap();
    assert!(!lane.cancelling_many());
    assert_eq!(all.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), ids, "every order that rested, in the order they rested");
    assert!(all.iter().all(|o| o.status == OrderStatus::Cancelled));
    drop(lane);

    let mut lane = Lane::open(&ctx, None).unwrap();
    assert_eq!(account(&mut lane, "alice"), [("USD".into(), dec("10000"), dec("100"))], "holds only ord_late");
    assert_eq!(get(&mut lane, "ord_09").status, OrderStatus::Cancelled);
    drop(lane);
    bus.shutdown();
}

/// An amend is answered once its record is in the journal; one that crosses trades
/// at once, and a placement later in the batch matches on the book it left. Stopped
/// before the flush, the lane redoes the amends in their place: the same fills under
/// the same trade ids, holds, orders and times.
#[test]
fn an_amends_terms_come_from_the_read_models_and_wait_until_they_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, _ctx, _bus) = funded(&dir, &[("alice", "USD", "1000")]);
    assert!(place_batch(&mut lane, [priced("99", order("ord_b", "alice", Side::Buy, dec("2"), None))])[0].is_ok());
    let o = get(&mut lane, "ord_b");
    let (market, users) = (crate::services::market::Listed::default(), crate::services::users::Directory::default());
    let unavailable = |r: Result<AmendTerms, ApiError>| r.err().map(|e| (e.status, e.message));
    let (status, message) = unavailable(AmendTerms::of(&o, &market, &users)).expect("no instruments yet");
    assert!(status == 503 && message.contains("market"), "{message}");
    market.loaded_with(vec![aapl()]);
    let (status, message) = unavailable(AmendTerms::of(&o, &market, &users)).expect("no users yet");
    assert!(status == 503 && message.contains("users"), "{message}");
    let user = |status: &str| crate::api::User {
        user_id: "alice".into(),
        username: "alice".into(),
        email: "alice@example.com".into(),
        status: status.into(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    users.loaded_with(vec![user("active")]);
    let terms = AmendTerms::of(&o, &market, &users).unwrap();
    assert_eq!((terms.instrument_min, terms.instrument_max, terms.user_active), (dec("1"), dec("1000000"), true));
    users.loaded_with(vec![user("disabled")]);
    assert!(!AmendTerms::of(&o, &market, &users).unwrap().user_active);
}

#[test]
fn amends_are_answered_from_the_journal_and_redone_in_order_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    let first = [
        priced("101", order("ord_s", "bob", Side::Sell, dec("5"), None)),
        order("ord_b", "alice", Side::Buy, dec("3"), None),
        priced("99", order("ord_b2", "alice", Side::Buy, dec("2"), None)),
    ];
    assert!(place_batch(&mut lane, first).iter().all(|a| a.is_ok()));
    lane.flush().unwrap();

    let amend = |id: &str, owner: Option<&str>, price: Option<&str>, quantity: Option<&str>| {
        let (reply, rx) = oneshot::channel();
        let a = Amend { order_id: id.into(), owner: owner.map(String::from), price: price.map(dec), quantity: quantity.map(dec), reply };
        (a, rx)
    };
    // ord_b to 101 takes 3 of ord_s; bob may not touch alice's ord_b2; ord_b2 grows to 4.
    let (crossing, mut crossing_rx) = amend("ord_b", None, Some("101"), None);
    let (not_his, mut not_his_rx) = amend("ord_b2", Some("bob"), None, Some("4"));
    let (grown, mut grown_rx) = amend("ord_b2", None, None, Some("4"));
    let (off_tick, mut off_tick_rx) = amend("ord_b2", None, Some("99.001"), None);
    let (reply, mut late_rx) = oneshot::channel();
    let late = Placement {
        order: priced("99", order("ord_late", "bob", Side::Sell, dec("2"), None)),
        user_active: true,
        instrument: aapl(),
        reply,
    };
    lane.run(Work { amends: vec![crossing, not_his, grown, off_tick], places: vec![late], ..Default::default() }).unwrap();
    assert!(lane.pending(), "answered before risk and orders commit");
    let crossed = crossing_rx.try_recv().unwrap().unwrap();
    assert_eq!((crossed.status, crossed.price, crossed.filled_quantity), (OrderStatus::Filled, Some(dec("101")), dec("3")));
    assert_eq!(crossed.fills.iter().map(|f| f.price).collect::<Vec<_>>(), [dec("101")]);
    assert_eq!(not_his_rx.try_recv().unwrap().unwrap_err().status, 404, "another user's order looks absent");
    let grown = grown_rx.try_recv().unwrap().unwrap();
    assert_eq!((grown.status, grown.quantity, grown.remaining_quantity), (OrderStatus::New, dec("4"), dec("4")));
    assert_eq!(off_tick_rx.try_recv().unwrap().unwrap_err().code.as_ref(), "invalid_tick");
    let (_, late) = late_rx.try_recv().unwrap().unwrap();
    assert_eq!((late.status, late.fills[0].price), (OrderStatus::Filled, dec("99")), "sold into the grown ord_b2");
    // Stopped as by a crash: the open transactions are rolled back.
    drop(lane);

    let mut lane = Lane::open(&ctx, None).unwrap();
    assert_eq!(get(&mut lane, "ord_b"), crossed, "stored as answered, fills and times included");
    assert_eq!(get(&mut lane, "ord_late"), late);
    let b2 = get(&mut lane, "ord_b2");
    assert_eq!(
        (b2.status, b2.quantity, b2.filled_quantity, b2.updated_at),
        (OrderStatus::PartiallyFilled, dec("4"), dec("2"), late.updated_at)
    );
    let book = book(&mut lane);
    assert_eq!(book, (vec![(dec("99"), dec("2"))], vec![(dec("101"), dec("2"))]));
    assert_eq!(account(&mut lane, "alice"), [("AAPL".into(), dec("5"), dec("0")), ("USD".into(), dec("499"), dec("198"))]);
    assert_eq!(account(&mut lane, "bob"), [("AAPL".into(), dec("5"), dec("2")), ("USD".into(), dec("501"), dec("0"))]);
    drop(lane);
    bus.shutdown();
}

/// A client that polls its orders must not make the lane commit three stores per
/// poll: reads are answered from the open transactions, which hold only what the
/// journal redoes, so a crash right after the read still shows what it showed.
#[test]
fn reads_are_answered_from_the_open_transactions_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    let batch = [order("ord_s", "bob", Side::Sell, dec("5"), None), order("ord_b", "alice", Side::Buy, dec("3"), None)];
    let answered: Vec<Order> = place_batch(&mut lane, batch).into_iter().map(|a| a.unwrap().1).collect();
    assert!(lane.pending());

    let seen = (get(&mut lane, "ord_s"), get(&mut lane, "ord_b"), account(&mut lane, "alice"), account(&mut lane, "bob"), book(&mut lane));
    assert_eq!((seen.0.status, seen.0.filled_quantity), (OrderStatus::PartiallyFilled, dec("3")));
    assert_eq!(seen.1, answered[1], "the read shows the order as it was answered");
    assert_eq!(seen.2, [("AAPL".into(), dec("3"), dec("0")), ("USD".into(), dec("700"), dec("0"))]);
    assert_eq!(seen.3, [("AAPL".into(), dec("7"), dec("2")), ("USD".into(), dec("300"), dec("0"))]);
    assert_eq!(seen.4, (vec![], vec![(dec("100"), dec("2"))]));
    assert!(lane.pending(), "reads alone do not flush");

    // Stopped as by a crash: the journal's redo shows the same again.
    drop(lane);
    let mut lane = Lane::open(&ctx, None).unwrap();
    let again = (get(&mut lane, "ord_s"), get(&mut lane, "ord_b"), account(&mut lane, "alice"), account(&mut lane, "bob"), book(&mut lane));
    assert_eq!(again, seen);

    // A read in the same batch as a change waits for the change's flush, as before.
    let (reply, _deposited) = oneshot::channel();
    let deposit = risk::Cmd::Deposit { user_id: "alice".into(), asset: "USD".into(), amount: dec("1"), grid: 0, reply };
    let (reply, rx) = oneshot::channel();
    let o = NewOrder { price: Some(dec("100")), ..order("ord_b2", "alice", Side::Buy, dec("1"), None) };
    lane.run(Work { places: vec![Placement { order: o, user_active: true, instrument: aapl(), reply }], ..Default::default() }).unwrap();
    drop(rx);
    assert!(lane.pending());
    let (reply, rx) = oneshot::channel();
    one(
        &mut lane,
        Work { risk: vec![deposit], orders: vec![orders::Cmd::Get { order_id: "ord_b2".into(), reply }], ..Default::default() },
        rx,
    )
    .unwrap();
    assert!(!lane.pending(), "a change is flushed before it is answered");
    drop(lane);
    bus.shutdown();
}

/// Orders' records of answered batches wait while only placements come, in the order
/// they were answered; anything that could see the difference, and orders' commit,
/// come after them ([`Deferred`]).
#[test]
fn answered_batches_are_recorded_in_order_before_anything_that_could_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, _ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    let stored = |lane: &mut Lane, id: &str| -> bool {
        lane.orders
            .work(|_, tx, _| Ok(tx.query_row("SELECT count(*) FROM orders WHERE order_id = ?1", [id], |r| r.get::<_, i64>(0))? == 1))
            .unwrap()
    };
    place_batch(&mut lane, [order("ord_s", "bob", Side::Sell, dec("5"), None)]);
    let answered = place_batch(&mut lane, [order("ord_b", "alice", Side::Buy, dec("3"), None)]);
    assert_eq!(answered[0].as_ref().unwrap().1.status, OrderStatus::Filled, "answered before ord_s is stored");
    assert_eq!(lane.deferred.len(), 2);
    assert!(!stored(&mut lane, "ord_s") && !stored(&mut lane, "ord_b"));
    // Recorded oldest first: the maker is recorded before the fill against it. Its row
    // waits, unwritten, until something reads or writes orders' store.
    lane.record_one_deferred().unwrap();
    assert!(lane.orders.svc.has_unwritten() && !stored(&mut lane, "ord_s"));
    assert_eq!(get(&mut lane, "ord_b").status, OrderStatus::Filled, "a read records the rest first");
    assert!(stored(&mut lane, "ord_s") && stored(&mut lane, "ord_b") && !lane.orders.svc.has_unwritten());
    assert_eq!((get(&mut lane, "ord_s").status, get(&mut lane, "ord_s").filled_quantity), (OrderStatus::PartiallyFilled, dec("3")));
    assert!(!lane.has_deferred());

    // A client order id repeated in the next batch finds the first order: the batch
    // with one is recorded before accept looks.
    let first = place_batch(&mut lane, [order("ord_c1", "alice", Side::Buy, dec("1"), Some("c1"))]);
    let again = place_batch(&mut lane, [order("ord_c2", "alice", Side::Buy, dec("1"), Some("c1"))]);
    assert_eq!(first[0].as_ref().unwrap().0, 201);
    assert_eq!(again[0].as_ref().unwrap(), &(200, first[0].as_ref().unwrap().1.clone()));
    assert!(!stored(&mut lane, "ord_c2"));

    // A flush records what waits before orders commits, and its mark covers it all.
    place_batch(&mut lane, [order("ord_s2", "bob", Side::Sell, dec("1"), None)]);
    assert!(lane.has_deferred());
    lane.flush().unwrap();
    assert!(!lane.has_deferred() && !lane.pending());
    assert_eq!(lane.marks[2], lane.journalled);
    assert!(stored(&mut lane, "ord_s2"));
    drop(lane);
    bus.shutdown();
}

/// A flush waits [`FLUSH_AFTER`] for more placements, and [`FLUSH_AFTER_BUSY`] once
/// [`BUSY_AT`] have come: fewer, bigger commits under heavy load.
#[test]
fn a_flush_waits_longer_once_placements_come_fast() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, _ctx, bus) = funded(&dir, &[("bob", "AAPL", "1000"), ("alice", "USD", "1000000")]);
    place_batch(&mut lane, [order("ord_s0", "bob", Side::Sell, dec("1"), None), order("ord_b0", "alice", Side::Buy, dec("1"), None)]);
    assert!(lane.pending() && lane.flush_window() == FLUSH_AFTER, "a few placements wait {FLUSH_AFTER:?}");
    let pairs = (1..BUSY_AT / 2 + 1).flat_map(|i| {
        [order(&format!("ord_s{i}"), "bob", Side::Sell, dec("1"), None), order(&format!("ord_b{i}"), "alice", Side::Buy, dec("1"), None)]
    });
    // Counted from an hour ahead during the batch, so that it does not flush however
    // slow the machine is (a busy CI box took over 30 ms for it); the window is then
    // checked against a first placement 20 ms old.
    lane.since = Some(Instant::now() + Duration::from_secs(3600));
    let answers = place_batch(&mut lane, pairs);
    assert!(answers.iter().all(|a| matches!(a, Ok((201, _)))), "every placement stands: {:?}", answers.iter().find(|a| a.is_err()));
    assert!(lane.unflushed >= BUSY_AT && lane.pending(), "{} placements, not flushed yet", lane.unflushed);
    assert_eq!(lane.flush_window(), FLUSH_AFTER_BUSY, "{} placements wait longer", lane.unflushed);
    lane.since = Instant::now().checked_sub(FLUSH_AFTER * 2);
    assert!(lane.since.is_some() && !lane.due(), "past FLUSH_AFTER, a busy lane still waits for more");
    assert!(!lane.bus.load().is_heavy());
    lane.flush_step().unwrap();
    assert!(lane.bus.load().is_heavy(), "the stores' checkpointers are told: their passes wait longer too");
    lane.flush().unwrap();
    assert!(!lane.pending() && lane.unflushed == 0);
    place_batch(&mut lane, [order("ord_s", "bob", Side::Sell, dec("1"), None)]);
    lane.flush_step().unwrap();
    assert!(!lane.bus.load().is_heavy(), "and told when the load is light again");
    drop(lane);
    bus.shutdown();
}

/// `/api/events` and the market routes wait for what was acknowledged to reach the bus
/// (`orders::Cmd::Sync`): the next flush, not one of their own.
#[test]
fn a_sync_waits_for_the_next_flush_instead_of_forcing_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, _ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    let sync = |lane: &mut Lane| {
        let (reply, rx) = oneshot::channel();
        lane.run(Work { orders: vec![orders::Cmd::Sync(reply)], ..Default::default() }).unwrap();
        rx
    };
    let mut rx = sync(&mut lane);
    assert!(matches!(rx.try_recv(), Ok(Ok(()))), "nothing waits for a flush: answered at once");

    place_batch(&mut lane, [order("ord_s", "bob", Side::Sell, dec("5"), None), order("ord_b", "alice", Side::Buy, dec("3"), None)]);
    assert!(lane.flush_in() > Duration::ZERO, "placements alone wait for more");
    let mut rx = sync(&mut lane);
    assert!(lane.pending(), "a sync does not flush");
    assert!(rx.try_recv().is_err(), "answered before the placements' events reached the bus");
    assert_eq!(lane.flush_in(), Duration::ZERO, "once the mailbox is empty, the lane flushes at once");
    lane.flush().unwrap();
    assert!(matches!(rx.try_recv(), Ok(Ok(()))), "answered by the flush, after it handed the events to the bus");
    drop(lane);
    bus.shutdown();
}

/// An agt from before kept the journal in `trading.db`, committed with the book: what
/// it left there is redone by risk and orders (not by trading, which holds it) at the
/// first start, then deleted.
#[test]
fn records_an_older_agt_left_in_trading_db_are_redone_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000")]);
    place_batch(&mut lane, [order("ord_s", "bob", Side::Sell, dec("5"), None), order("ord_b", "alice", Side::Buy, dec("3"), None)]);
    // As the older agt left it: the book and the journal committed together in
    // trading.db, risk and orders not yet.
    let (_, records) = lane.journal.after(0).unwrap();
    assert_eq!(records.len(), 2);
    lane.trading
        .work(|_, tx, _| {
            records.iter().try_for_each(|(seq, r)| match r {
                Record::Place(r) => intake::append(tx, *seq, r),
                Record::Cancel(_) | Record::Amend(_) => unreachable!("only placements here"),
            })
        })
        .unwrap();
    lane.trading.commit(&bus).unwrap();
    lane.journal.prune(i64::MAX).unwrap();
    drop(lane);

    let mut lane = Lane::open(&ctx, None).unwrap();
    let (reply, rx) = oneshot::channel();
    let buy =
        one(&mut lane, Work { orders: vec![orders::Cmd::Get { order_id: "ord_b".into(), reply }], ..Default::default() }, rx).unwrap();
    assert_eq!((buy.status, buy.filled_quantity), (OrderStatus::Filled, dec("3")));
    let (reply, rx) = oneshot::channel();
    let a = one(&mut lane, Work { risk: vec![risk::Cmd::Account { user_id: "bob".into(), reply }], ..Default::default() }, rx).unwrap();
    let bob: Vec<_> = a.balances.iter().map(|b| (b.asset.clone(), b.total, b.held)).collect();
    assert_eq!(bob, [("AAPL".into(), dec("7"), dec("2")), ("USD".into(), dec("300"), dec("0"))]);
    let book = book(&mut lane);
    assert_eq!(book.1, vec![(dec("100"), dec("2"))], "trading did not match the orders a second time");
    assert_eq!(lane.trading.work(|_, tx, _| intake::after(tx, 0)).unwrap().len(), 0, "the old journal was emptied");
    drop(lane);
    bus.shutdown();
}

/// A withdrawal and a short sale in one drain of the mailbox are decided one after the
/// other, never on a ledger half-way between them: the drain's commands to risk first
/// (phase 0, flushed), then its placements, whatever order they came in. So a
/// withdrawal beside a short sale takes only what the account held before it (the
/// proceeds are not there yet), every withdrawal after it is refused while the sale is
/// owed, and one beside the buy-back is refused too (the buy-back comes after it).
#[test]
fn a_withdrawal_beside_a_short_sale_in_one_drain_is_decided_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "USD", "1000"), ("sam", "USD", "60")]);
    let mut settings = (*ctx.settings.get()).clone();
    settings.risk.allow_short = true;
    ctx.settings.replace(settings);
    let withdraw = |amount: &str| {
        let (reply, rx) = oneshot::channel();
        (risk::Cmd::Withdraw { user_id: "sam".into(), asset: "USD".into(), amount: dec(amount), reply }, rx)
    };
    let placement = |order: NewOrder| {
        let (reply, rx) = oneshot::channel();
        (Placement { order, user_active: true, instrument: aapl(), reply }, rx)
    };
    let (_, bid) = place_batch(&mut lane, [order("ord_b", "bob", Side::Buy, dec("3"), None)]).remove(0).unwrap();
    assert_eq!(bid.status, OrderStatus::New);

    // The short sale first in the mailbox, two withdrawals after it.
    let (sale, mut sold) = placement(order("ord_s", "sam", Side::Sell, dec("3"), None));
    let ((all, mut all_rx), (own, mut own_rx)) = (withdraw("310"), withdraw("50"));
    lane.run(Work { places: vec![sale], risk: vec![all, own], ..Default::default() }).unwrap();
    let e = all_rx.try_recv().unwrap().unwrap_err();
    assert!(e.message.contains("only 60 is available"), "decided before the sale's proceeds came: {}", e.message);
    own_rx.try_recv().unwrap().unwrap();
    let (_, sold) = sold.try_recv().unwrap().unwrap();
    assert_eq!((sold.status, sold.filled_quantity), (OrderStatus::Filled, dec("3")), "sold short after the withdrawal");
    assert_eq!(account(&mut lane, "sam"), [("AAPL".into(), dec("-3"), dec("0")), ("USD".into(), dec("310"), dec("0"))]);
    let (cmd, rx) = withdraw("310");
    let e = one(&mut lane, Work { risk: vec![cmd], ..Default::default() }, rx).unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (422, "insufficient_funds"));
    assert!(e.message.contains("owes 3 AAPL from short sales"), "{}", e.message);

    // Bought back in the same drain as a withdrawal: the withdrawal is decided first.
    let (_, ask) = place_batch(&mut lane, [order("ord_a", "bob", Side::Sell, dec("3"), None)]).remove(0).unwrap();
    assert_eq!(ask.status, OrderStatus::New);
    let (buy_back, mut bought) = placement(order("ord_c", "sam", Side::Buy, dec("3"), None));
    let (cmd, mut rx) = withdraw("10");
    lane.run(Work { places: vec![buy_back], risk: vec![cmd], ..Default::default() }).unwrap();
    assert!(rx.try_recv().unwrap().unwrap_err().message.contains("owes 3 AAPL"));
    assert_eq!(bought.try_recv().unwrap().unwrap().1.status, OrderStatus::Filled);
    let (cmd, rx) = withdraw("10");
    one(&mut lane, Work { risk: vec![cmd], ..Default::default() }, rx).unwrap();
    assert_eq!(account(&mut lane, "sam"), [("AAPL".into(), dec("0"), dec("0")), ("USD".into(), dec("0"), dec("0"))]);
    drop(lane);
    bus.shutdown();
}

/// A market buy holds all its user's available USD until phase 3 settles it (its budget),
/// so a buy of the same user later in the same drain found none available and was
/// refused `insufficient_funds`, though the user could pay for both in either order:
/// `agt demo`'s takers met it whenever two of one taker's orders shared a drain. Each
/// placement must see its user's account as if the drain's placements ran one at a time,
/// and a crash must redo them so.
#[test]
fn a_buy_after_a_market_buy_of_the_same_user_in_one_drain_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lane, ctx, bus) = funded(&dir, &[("bob", "AAPL", "10"), ("alice", "USD", "1000"), ("carol", "USD", "1000")]);
    let (_, ask) = place_batch(&mut lane, [order("ord_s", "bob", Side::Sell, dec("10"), None)]).remove(0).unwrap();
    assert_eq!(ask.status, OrderStatus::New);
    let market = |id: &str, user: &str, qty: &str| NewOrder {
        kind: OrderType::Market,
        price: None,
        time_in_force: TimeInForce::Ioc,
        ..order(id, user, Side::Buy, dec(qty), None)
    };
    let answered = place_batch(
        &mut lane,
        [
            market("ord_m1", "alice", "2"),
            order("ord_c1", "carol", Side::Buy, dec("1"), None),
            order("ord_a1", "alice", Side::Buy, dec("3"), None),
            market("ord_m2", "alice", "1"),
            market("ord_c2", "carol", "1"),
            order("ord_a2", "alice", Side::Sell, dec("1"), None),
        ],
    );
    let filled: Vec<(OrderStatus, Decimal)> =
        answered.iter().map(|a| a.as_ref().map(|(_, o)| (o.status, o.filled_quantity)).unwrap_or_else(|e| panic!("{e:?}"))).collect();
    // alice's sell finds no bid (every buy filled) and rests.
    assert_eq!(
        filled,
        [
            (OrderStatus::Filled, dec("2")),
            (OrderStatus::Filled, dec("1")),
            (OrderStatus::Filled, dec("3")),
            (OrderStatus::Filled, dec("1")),
            (OrderStatus::Filled, dec("1")),
            (OrderStatus::New, dec("0")),
        ]
    );
    let after = [
        ("alice", vec![("AAPL".to_string(), dec("6"), dec("1")), ("USD".to_string(), dec("400"), dec("0"))]),
        ("bob", vec![("AAPL".to_string(), dec("2"), dec("2")), ("USD".to_string(), dec("800"), dec("0"))]),
        ("carol", vec![("AAPL".to_string(), dec("2"), dec("0")), ("USD".to_string(), dec("800"), dec("0"))]),
    ];
    for (user, balances) in &after {
        assert_eq!(&account(&mut lane, user), balances, "{user}");
    }
    // Stopped as by a crash before the flush: the redo decides each placement as it was.
    assert!(lane.pending());
    drop(lane);
    let mut lane = Lane::open(&ctx, None).unwrap();
    for (user, balances) in &after {
        assert_eq!(&account(&mut lane, user), balances, "{user}, redone");
    }
    for (_, answer) in answered.iter().flatten() {
        assert_eq!(&get(&mut lane, &answer.order_id), answer, "stored as answered");
    }
    drop(lane);
    bus.shutdown();
}
