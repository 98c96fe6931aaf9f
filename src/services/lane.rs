//! The trading lane: the orders, risk and trading services on one thread.
//!
//! A placement walks through all three services (accept, reserve, match, settle,
//! record). Run as three actors, each step was a round trip between threads — about
//! 90 µs of wake-ups each on a small VM — and each store committed once per step. Here
//! the three share one thread: each keeps its own store, state and message contract
//! (other callers still talk to them through their usual [`Handle`]s), but the steps of
//! a placement are function calls, and every store commits once per phase for all the
//! placements drained from the mailbox together.
//!
//! One batch runs in three phases, in the durable order of the step-by-step saga in
//! `orders::saga`, and the end of one batch shares its commits with the start of the
//! next (a pipeline), so a batch costs three commits, not five:
//!
//! 1. risk: queued risk commands, then **reserve** each placement; orders: queued
//!    orders commands, then **accept** each placement. Both transactions still hold the
//!    previous batch's settle (risk) and record (orders). Commit risk, then orders: the
//!    previous batch's placements are answered now.
//! 2. trading: queued trading commands, then **match** each placement that was accepted
//!    and reserved. Commit.
//! 3. risk: **settle** each match and release the holds of placements that ended
//!    (rejected, repeated `client_order_id`); orders: **record** each match with its
//!    saga done and reject the aborted. Neither commits here: the next batch's phase 1
//!    commits them, or the lane does (risk first) when no command arrives within
//!    [`LINGER`]. A placement that traded or rests is answered now, before that commit:
//!    its order, hold and match are committed, and recovery records the same from
//!    trading's stored outcome if this commit is lost. Reads that could tell (orders,
//!    accounts, books) are lane commands answered behind the commit; `/api/events` asks
//!    the lane first (`orders::Cmd::Sync`). Placements that ended are answered when
//!    orders commits, since their rejection is stored nowhere else.
//!
//! Why this order is safe to crash in at any point (recovery: `saga::recover`,
//! `saga::release_orphan_holds`):
//! - risk committed, orders not: the previous batch is settled but its orders are still
//!   `accepted`, which recovery finishes (every step is idempotent); this batch's holds
//!   have no stored order, which `release_orphan_holds` frees.
//! - orders committed, trading not: accepted and reserved, never matched: recovery
//!   matches them.
//! - trading committed: matched, not settled or recorded: recovery settles and records
//!   them from trading's stored outcome.
//!
//! Every other command is answered after its own service's commit.

use crate::api::{ApiError, Instrument, Order};
use crate::services::actor::{Control, Envelope, Exit, Handle, Reply, Service, ServiceCtx, ServiceError, State, Status, Unit, MAX_BATCH};
use crate::services::orders::{self, saga, Accepted, NewOrder, Orders};
use crate::services::risk::{self, Risk};
use crate::services::trading::{self, MatchResult, Trading};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tokio::sync::oneshot;

/// What the lane's mailbox carries: a command for one of its services, or a placement.
pub enum LaneCmd {
    Orders(orders::Cmd),
    Risk(risk::Cmd),
    Trading(trading::Cmd),
    Place(Placement),
}

/// A new order whose user and instrument the caller has resolved.
pub struct Placement {
    pub order: NewOrder,
    pub user_active: bool,
    pub instrument: Instrument,
    /// 201 and the order, or 200 and the first order of a repeated `client_order_id`.
    pub reply: Reply<(u16, Order)>,
}

/// The three services' statuses; they share a thread, so they share a state.
#[derive(Clone)]
pub struct Statuses {
    orders: Arc<Status>,
    risk: Arc<Status>,
    trading: Arc<Status>,
}

impl Statuses {
    pub fn new() -> Self {
        Statuses {
            orders: Arc::new(Status::new("orders")),
            risk: Arc::new(Status::new("risk")),
            trading: Arc::new(Status::new("trading")),
        }
    }
    pub fn all(&self) -> Vec<Arc<Status>> {
        vec![self.risk.clone(), self.trading.clone(), self.orders.clone()]
    }
    /// Counts a command as taken off the mailbox (the `agt_mailbox_depth` gauge).
    pub fn dropped(&self, c: &LaneCmd) {
        let s = match c {
            LaneCmd::Orders(_) | LaneCmd::Place(_) => &self.orders,
            LaneCmd::Risk(_) => &self.risk,
            LaneCmd::Trading(_) => &self.trading,
        };
        s.depth.fetch_sub(1, Ordering::Relaxed);
    }
    fn set(&self, state: State) {
        for s in self.all() {
            s.set_state(state);
        }
    }
}

impl Default for Statuses {
    fn default() -> Self {
        Self::new()
    }
}

/// The handles callers use: one per service, and one for placements.
#[derive(Clone)]
pub struct Handles {
    pub orders: Handle<orders::Cmd>,
    pub risk: Handle<risk::Cmd>,
    pub trading: Handle<trading::Cmd>,
    pub placements: Handle<LaneCmd>,
}

impl Handles {
    pub fn new(tx: mpsc::Sender<Envelope<LaneCmd>>, st: &Statuses) -> Self {
        fn route<C: Send + 'static>(tx: &mpsc::Sender<Envelope<LaneCmd>>, wrap: fn(C) -> LaneCmd, status: &Arc<Status>) -> Handle<C> {
            let tx = tx.clone();
            Handle::routed(
                move |e| {
                    let e = match e {
                        Envelope::Cmd(c) => Envelope::Cmd(wrap(c)),
                        Envelope::Control(c) => Envelope::Control(c),
                    };
                    tx.send(e).is_ok()
                },
                status.clone(),
            )
        }
        Handles {
            orders: route(&tx, LaneCmd::Orders, &st.orders),
            risk: route(&tx, LaneCmd::Risk, &st.risk),
            trading: route(&tx, LaneCmd::Trading, &st.trading),
            placements: Handle::new(tx, st.orders.clone()),
        }
    }
    pub fn control(&self, c: Control) -> bool {
        self.placements.control(c)
    }
}

/// One incarnation of the lane: open the three stores, then drain the mailbox in batches.
pub fn run_incarnation(ctx: &ServiceCtx, rx: &mpsc::Receiver<Envelope<LaneCmd>>, st: &Statuses) -> Result<Exit, ServiceError> {
    let split_fault = if ctx.settings.get().debug.fault_injection { SplitFault::from_env() } else { None };
    let mut lane = Lane { risk: Unit::open(ctx)?, trading: Unit::open(ctx)?, orders: Unit::open(ctx)?, bus: ctx.bus.clone(), split_fault };
    st.set(State::Running);
    for s in st.all() {
        ctx.bus.publish("SERVICE_STARTED", "health", serde_json::json!({"service": s.name}));
    }
    let mut batch: Vec<Envelope<LaneCmd>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = match rx.try_recv() {
            Ok(e) => e,
            Err(mpsc::TryRecvError::Disconnected) => {
                lane.finish()?;
                return Ok(Exit::Stop);
            }
            // Nothing waiting: give the next command a moment to share the commits
            // with the last batch's settle and record, then commit them alone.
            Err(mpsc::TryRecvError::Empty) => {
                let waited = if lane.pending() { rx.recv_timeout(LINGER) } else { Err(mpsc::RecvTimeoutError::Timeout) };
                match waited {
                    Ok(e) => e,
                    Err(_) => {
                        lane.finish()?;
                        match rx.recv() {
                            Ok(e) => e,
                            Err(_) => return Ok(Exit::Stop),
                        }
                    }
                }
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut work = Work::default();
        let mut exit = None;
        for env in batch.drain(..) {
            match env {
                Envelope::Cmd(c) => {
                    st.dropped(&c);
                    match c {
                        LaneCmd::Orders(c) => work.orders.push(c),
                        LaneCmd::Risk(c) => work.risk.push(c),
                        LaneCmd::Trading(c) => work.trading.push(c),
                        LaneCmd::Place(p) => work.places.push(p),
                    }
                }
                Envelope::Control(Control::Crash) => panic!("fault injection: the trading lane was told to crash"),
                Envelope::Control(Control::Restart) => exit = Some(Exit::Restart),
                Envelope::Control(Control::Stop) => exit = Some(Exit::Stop),
            }
        }
        lane.run(work)?;
        if let Some(e) = exit {
            lane.finish()?;
            st.set(State::Restarting);
            return Ok(e);
        }
    }
}

#[derive(Default)]
struct Work {
    orders: Vec<orders::Cmd>,
    risk: Vec<risk::Cmd>,
    trading: Vec<trading::Cmd>,
    places: Vec<Placement>,
}

struct Lane {
    risk: Unit<Risk>,
    trading: Unit<Trading>,
    orders: Unit<Orders>,
    bus: crate::services::bus::Bus,
    split_fault: Option<SplitFault>,
}

/// A test-only fault point (read only with `debug.fault_injection = true`):
/// `AGT_FAULT_LANE_SPLIT=N` makes the lane panic between the risk and the orders commit
/// of its N-th batch of placements, once per process. That is the one place a crash
/// leaves holds whose orders were never stored, for `saga::release_orphan_holds`.
struct SplitFault {
    countdown: u64,
}

static SPLIT_FAULT_FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl SplitFault {
    fn from_env() -> Option<SplitFault> {
        let countdown = std::env::var("AGT_FAULT_LANE_SPLIT").ok()?.trim().parse().ok()?;
        (!SPLIT_FAULT_FIRED.load(Ordering::Relaxed)).then_some(SplitFault { countdown })
    }
    fn tick(fault: &mut Option<SplitFault>) {
        if let Some(f) = fault {
            f.countdown = f.countdown.saturating_sub(1);
            if f.countdown == 0 && !SPLIT_FAULT_FIRED.swap(true, Ordering::Relaxed) {
                panic!("fault injection: the trading lane stopped between its risk and orders commits");
            }
        }
    }
}

/// An answer the lane asked its own service for: already sent, since the batch that
/// produced it has committed.
type Asked<T> = oneshot::Receiver<Result<T, ApiError>>;

fn ask<T>() -> (Reply<T>, Asked<T>) {
    oneshot::channel()
}

fn answer<T>(mut rx: Asked<T>) -> Result<T, ApiError> {
    rx.try_recv().unwrap_or_else(|_| Err(ApiError::internal("a lane step gave no answer")))
}

/// Where a placement stands after phase 1 or 2 (a short-lived list per batch, so the
/// size of its variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Next {
    /// Accepted and reserved: to the book.
    Match(Placement, risk::Reserved),
    /// Matched: settle and record.
    Finish(Placement, MatchResult),
    /// Ends without trading: release its hold (if it has one), reject it (if it was
    /// stored new), then answer.
    End { p: Placement, release: bool, reject: Option<ApiError>, answer: Result<(u16, Order), ApiError> },
}

/// How long an idle lane keeps the last batch's settle and record open for the next
/// command to share their commits. Its placements are answered already; a client that
/// sends its next order on the answer (a closed loop) gets it into the same commits.
const LINGER: Duration = Duration::from_micros(300);

impl Lane {
    /// Whether phase 3 of the last batch waits for a commit.
    fn pending(&self) -> bool {
        self.risk.is_open() || self.orders.is_open()
    }

    /// Commits what phase 3 of the last batch left open: risk first, then orders (which
    /// answers that batch's placements).
    fn finish(&mut self) -> Result<(), ServiceError> {
        self.risk.commit(&self.bus)?;
        self.orders.commit(&self.bus)
    }

    fn run(&mut self, work: Work) -> Result<(), ServiceError> {
        let Work { orders: orders_cmds, risk: risk_cmds, trading: trading_cmds, places } = work;
        let bus = self.bus.clone();

        // Phase 1: reserve ‖ accept, committed with the previous batch's settle and record.
        let mut reserved = Vec::with_capacity(places.len());
        if !risk_cmds.is_empty() || !places.is_empty() {
            self.risk.work(|svc, tx, after| {
                for c in risk_cmds {
                    svc.handle(tx, c, after)?;
                }
                for p in &places {
                    let req = saga::reserve_request(&p.order, p.user_active, &p.instrument);
                    reserved.push(svc.reserve(tx, &req)?);
                }
                Ok(())
            })?;
        }
        let mut accepted = Vec::with_capacity(places.len());
        if !orders_cmds.is_empty() || !places.is_empty() {
            self.orders.work(|svc, tx, after| {
                for c in orders_cmds {
                    svc.handle(tx, c, after)?;
                }
                for p in &places {
                    accepted.push(Orders::accept(tx, p.order.clone())?);
                }
                Ok(())
            })?;
        }
        self.risk.commit(&bus)?;
        if !places.is_empty() {
            SplitFault::tick(&mut self.split_fault);
        }
        self.orders.commit(&bus)?;
        let mut next: Vec<Next> = places
            .into_iter()
            .zip(accepted.into_iter().zip(reserved))
            .map(|(p, (a, r))| match (a, r) {
                (Accepted::New(_), Ok(r)) => Next::Match(p, r),
                (Accepted::New(_), Err(e)) => Next::End { p, release: true, reject: Some(e.clone()), answer: Err(e) },
                (Accepted::Existing(first), r) => Next::End { p, release: r.is_ok(), reject: None, answer: Ok((200, first)) },
            })
            .collect();

        // Phase 2: match.
        let to_match = next.iter().any(|n| matches!(n, Next::Match(..)));
        if !trading_cmds.is_empty() || to_match {
            let mut matched = Vec::new();
            self.trading.batch(&bus, |svc, tx, after| {
                for c in trading_cmds {
                    svc.handle(tx, c, after)?;
                }
                for n in &next {
                    if let Next::Match(p, r) = n {
                        let (reply, rx) = ask();
                        let req = saga::match_request(&p.order, &p.instrument, r.budget);
                        svc.handle(tx, trading::Cmd::Match { req, reply }, after)?;
                        matched.push(rx);
                    }
                }
                Ok(())
            })?;
            let mut matched = matched.into_iter();
            next = next
                .into_iter()
                .map(|n| match n {
                    Next::Match(p, _) => match answer(matched.next().expect("one answer per match")) {
                        Ok(result) => Next::Finish(p, result),
                        Err(e) => Next::End { p, release: true, reject: Some(e.clone()), answer: Err(e) },
                    },
                    other => other,
                })
                .collect();
        }

        // Phase 3: settle, then record and mark done, in the open transactions the next
        // phase 1 (or `finish`) commits, risk first. A batch whose placements all ended
        // before the book with nothing held or stored (repeated client ids) writes
        // nothing and is answered now.
        let writes = |n: &Next| matches!(n, Next::Finish(..) | Next::End { release: true, .. } | Next::End { reject: Some(_), .. });
        if !next.iter().any(writes) {
            for n in next {
                if let Next::End { p, answer, .. } = n {
                    let _ = p.reply.send(answer);
                }
            }
            return Ok(());
        }
        let mut settled = Vec::with_capacity(next.len());
        self.risk.work(|svc, tx, _| {
            for n in &next {
                let req = match n {
                    Next::Finish(p, result) => saga::settlement(&p.order.user_id, &p.order.symbol, p.order.side, result),
                    Next::End { p, release: true, .. } => risk::SettleRequest { trades: vec![], release: vec![p.order.order_id.clone()] },
                    _ => {
                        settled.push(true);
                        continue;
                    }
                };
                settled.push(svc.settle(tx, &req)?.is_ok());
            }
            Ok(())
        })?;
        self.orders.work(|_, tx, after| {
            for (n, settled) in next.into_iter().zip(settled) {
                match n {
                    // Answered now: what it says (accepted, reserved, these fills) is
                    // committed in orders, risk and trading, and recovery records the
                    // same from trading's stored outcome if this transaction is lost.
                    // Reads of it go through this lane, behind the commit.
                    Next::Finish(p, result) => {
                        let order = Orders::record(tx, result, None, settled, after)?;
                        let _ = p.reply.send(order.map(|o| (201, o)));
                    }
                    Next::End { p, reject, answer, .. } => {
                        // An abort whose hold could not be released stays `accepted`:
                        // recovery finishes it.
                        if let (Some(e), true) = (reject, settled) {
                            let _ = Orders::reject(tx, &p.order.order_id, e.code.as_ref(), &e.message, after)?;
                        }
                        after.then(move || {
                            let _ = p.reply.send(answer);
                        });
                    }
                    Next::Match(p, _) => after.then(move || {
                        let _ = p.reply.send(Err(ApiError::internal("an order was left unmatched")));
                    }),
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    //! The lane on its own thread, driven through its handles as the daemon drives it:
    //! placements sent together land in one batch and must come out as the step-by-step
    //! saga would have left them.
    use super::*;
    use crate::api::{OrderStatus, OrderType, Side, TimeInForce};
    use rust_decimal::Decimal;

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
            let home = crate::daemon::Home::at(dir.path());
            let bus = crate::services::bus::Bus::open(&home, Default::default()).unwrap();
            let settings = crate::services::config::SharedSettings::new(Default::default());
            let ctx = ServiceCtx { home, durability: Default::default(), bus: bus.clone(), settings, directory: Default::default() };
            let (tx, rx) = mpsc::channel();
            let statuses = Statuses::new();
            let handles = Handles::new(tx, &statuses);
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

    fn aapl() -> Instrument {
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

    fn order(id: &str, user: &str, side: Side, qty: Decimal, coid: Option<&str>) -> NewOrder {
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
                h.risk.call(move |reply| risk::Cmd::Deposit { user_id, asset, amount, reply })
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
        });
        assert_eq!(lane.statuses.risk.state(), State::Running);
    }
}
