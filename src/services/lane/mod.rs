//! The trading lane: the orders, risk and trading services on one thread.
//!
//! A placement walks through all three services (accept, reserve, match, settle,
//! record). Run as three actors, each step was a round trip between threads — about
//! 90 µs of wake-ups each on a small VM — and each store committed once per step. Here
//! the three share one thread: each keeps its own store, state and message contract
//! (other callers still talk to them through their usual [`Handle`]s), but the steps of
//! a placement are function calls, and one commit makes a whole batch of placements
//! durable: the **intake journal**'s (`services::intake`), a record per placement in a
//! store of its own.
//!
//! A batch drained from the mailbox runs in phases:
//!
//! 0. Commands to risk, orders and trading (deposits, limits, the saga's single steps)
//!    are handled and **flushed** first (below), so that they are answered at a commit
//!    of their own and no placement is journalled on top of a change a crash could undo
//!    (trading's redo matches each order again on the book as committed). A batch whose
//!    commands only read (orders, accounts, limits, holds, books) is answered at once
//!    from the open transactions, without a flush: they hold nothing the journal would
//!    not redo.
//!
//!    Then the batch's **cancels** ([`Cancel`]: out of the book, hold released, recorded
//!    cancelled) and **amends** ([`Amend`]: hold resized, the order moved in its book,
//!    any fills settled and recorded), in the open transactions, each with an intake
//!    record of its own ([`CancelRecord`], [`AmendRecord`]) that goes into the journal
//!    ahead of the batch's placements and is answered with them. The placements then
//!    match on the books they left, and a redo goes through the records in the same
//!    order.
//! 1. risk: **reserve** each placement (checks, hold), in its open transaction;
//!    orders: **accept** each one, in memory only (`Orders::accept_unstored`: a repeated
//!    `client_order_id` is looked up, nothing is written). Nothing commits.
//! 2. trading: **match** each placement that was accepted and reserved, in its open
//!    transaction; then the journal appends one intake record per placement stored new
//!    (the order, the batch's time, the hold's plan, the book's grid, the match outcome
//!    or the rejection) in one write: every placement of the batch is durable, and is
//!    answered now (a traded one with the order its record will store, built in memory:
//!    `orders::matched`).
//! 3. risk: **settle** each match and release the holds of placements that ended;
//!    orders: **record** each match (or the rejection) with its saga done, writing each
//!    new order's row once, as it stands after its match. These stay in the open
//!    transactions. Orders' part waits while more placements arrive ([`Deferred`]): the
//!    lane answers those first and records when its mailbox is empty, before any other
//!    command, and before orders commits.
//!
//! A **flush** commits trading, risk, then orders, each with the number of the last
//! intake record it holds. It happens [`FLUSH_AFTER`] after the first unflushed
//! placement (also when the lane is idle; [`FLUSH_AFTER_BUSY`] when placements come
//! faster than [`BUSY_AT`] in that time), after [`FLUSH_AT`] placements, before a
//! command that changes any of the three, and on stop. When it is due by time or count
//! it goes one store at a time ([`Lane::flush_step`]), taking the commands that came
//! between two commits, so that an order arriving meanwhile waits for one commit, not
//! three. So under load, and for a
//! closed-loop client, the three commit every few milliseconds for many placements
//! instead of once or twice each. Events reach the bus at the flush, as each store
//! commits. Reads of orders, accounts, holds and books see the open transactions
//! (phase 0); `/api/events` and the
//! market routes, which read what the bus has, first wait for the lane's next flush
//! (`orders::Cmd::Sync`, answered at once when nothing waits for one).
//!
//! Why this is safe to crash in at any point: whatever the three stores had not committed
//! is redone from the journal by [`Lane::recover`] when the lane starts — at daemon
//! start-up and after a lane restart, before it takes a command. Each store redoes the
//! records after its own mark, deciding nothing anew (the hold is placed as journalled,
//! not re-checked; the book must make the journalled fills, which keep their trade ids),
//! so a crash between two of the flush's commits is repaired too. A crash before the
//! journal's append loses a batch nobody was answered for: its placements, cancels and
//! amends get 503, like any command whose service stopped before committing.
//!
//! Every other command is answered after its own service's commit.

use crate::api::{ApiError, Instrument, Order, OrderType};
use crate::services::actor::{
    self, take_queued, AfterCommit, Control, Envelope, Exit, Handle, Reply, Service, ServiceCtx, ServiceError, State, Status, Unit,
    MAX_BATCH,
};
use crate::services::intake::{self, AmendRecord, CancelRecord, Grid, IntakeRef, Journal, Record, RecordRef, RejectedRef};
use crate::services::orders::{self, saga, Accepted, NewOrder, Orders};
use crate::services::risk::{self, checks::Plan, Risk};
use crate::services::spin::{self, AnswerWait, SpinHistory};
use crate::services::store::Held;
use crate::services::trading::{self, MatchResult, Trading};
use prometheus_client::metrics::histogram::Histogram;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What the lane's mailbox carries: a command for one of its services, or a placement.
pub enum LaneCmd {
    Orders(orders::Cmd),
    Risk(risk::Cmd),
    Trading(trading::Cmd),
    Place(Placement),
    /// Cancels one order, or many: out of the book, hold released, recorded cancelled,
    /// journalled like a placement (see [`Cancel`]).
    Cancel(Cancel),
    /// Amends an order's price and/or size, journalled like a cancel (see [`Amend`]).
    Amend(Amend),
    /// The open orders that the book no longer holds because a cancel took them out, a
    /// cancel a crash interrupted before orders recorded it: recovery finishes them.
    StrayCancels(Reply<Vec<trading::Cancelled>>),
}

/// A new order whose user and instrument the caller has resolved.
pub struct Placement {
    pub order: NewOrder,
    pub user_active: bool,
    pub instrument: Instrument,
    /// 201 and the order, or 200 and the first order of a repeated `client_order_id`.
    pub reply: Reply<(u16, Order)>,
}

/// A cancel the lane runs whole, like a placement: trading takes the order(s) out of
/// the book, risk releases their holds, orders records them cancelled, all in the open
/// transactions; an intake record ([`CancelRecord`]) makes it durable and it is
/// answered then. As three calls from the saga it was three round trips between threads
/// and three flushes of the three stores; and a flush forced by a cancel in every batch
/// would cost a mixed flow of placements and cancels three commits a batch.
///
/// Cancels go into the journal in the order the lane ran them, between placements, so
/// a redo rebuilds the books as they were when each journalled placement matched. A
/// crash between the flush's commits is redone from the journal as for placements.
pub enum Cancel {
    /// One order. `owner`: a trader may cancel only their own (another's answers 404,
    /// as if absent).
    One { order_id: String, owner: Option<String>, reply: Reply<Order> },
    /// Every order of a user and/or a symbol (all of them with neither) resting when it
    /// comes, taken out a chunk per batch ([`MassCancel`]).
    Many { user_id: Option<String>, symbol: Option<String>, reply: Reply<Vec<Order>> },
}

/// An amend the lane runs whole, like a [`Cancel`]: risk resizes the hold, trading
/// moves the order (a price change or a larger size loses its place; a price that
/// crosses trades at once, as a taker), risk settles any fills and orders records them,
/// in the open transactions, made durable by an intake record ([`AmendRecord`]) and
/// answered then. As calls from the saga it was five round trips and four flushes, and
/// a crash after trading's commit left its fills unsettled and unrecorded.
pub struct Amend {
    pub order_id: String,
    /// A trader may amend only their own orders (another's answers 404, as if absent).
    pub owner: Option<String>,
    /// The new price, and/or the new total quantity: at least one of them.
    pub price: Option<Decimal>,
    pub quantity: Option<Decimal>,
    pub reply: Reply<Order>,
}

/// What an amend is checked against that the lane's three services do not keep, read by
/// the lane from the other services' read models once it has the order: its instrument's
/// quantity bounds (the market's) and whether its user may trade (the users'). The saga
/// used to read the order from the lane first to learn its symbol and user, then look
/// these up and send the amend: two round trips to the lane per amend instead of one.
struct AmendTerms {
    /// The instrument's `min_quantity`, which the new total must reach, as a placement's.
    instrument_min: Decimal,
    /// The instrument's `max_quantity` (zero: none), which the new total must not pass.
    instrument_max: Decimal,
    /// False when the order's user is disabled (`user_disabled`): an amend is a new
    /// decision to trade.
    user_active: bool,
}

impl AmendTerms {
    /// The terms of `order`'s amend, or a 503 while the market or the users service has
    /// not loaded its read model since the daemon started (a start's first moments): the
    /// bounds or the user's status are not known yet.
    fn of(
        order: &Order,
        instruments: &crate::services::market::Listed,
        users: &crate::services::users::Directory,
    ) -> Result<AmendTerms, ApiError> {
        let Some(listed) = instruments.get() else {
            return Err(ApiError::unavailable("market"));
        };
        let user = match users.get(&order.user_id) {
            Some(u) => Some(u),
            None if !users.loaded() => return Err(ApiError::unavailable("users")),
            None => None,
        };
        // An instrument or user gone from its read model cannot be (neither is ever
        // deleted); the amend is then checked as before this lookup moved here: no
        // bounds, an active user.
        let (instrument_min, instrument_max) =
            listed.get(&order.symbol).map_or((Decimal::ZERO, Decimal::ZERO), |i| (i.min_quantity, i.max_quantity));
        Ok(AmendTerms { instrument_min, instrument_max, user_active: user.is_none_or(|u| u.is_active()) })
    }
}

/// A cancel-all under way: the orders that rested when it came, taken out of their books
/// [`MASS_CHUNK`] per batch, and answered with all of them once the last chunk is in the
/// journal. Orders placed meanwhile are not its to cancel. A crash on the way answers
/// 503 and keeps what the journalled chunks did; sent again, it cancels the rest.
struct MassCancel {
    targets: std::vec::IntoIter<String>,
    done: Vec<Order>,
    reply: Reply<Vec<Order>>,
}

/// Orders a cancel-all takes out per batch: ~7 ms of the lane (a few in unit tests, so
/// that they go through several chunks). A cancel-all of 40 k orders in one piece held
/// every other command up to ~0.5 s; in chunks of 500, ~45 ms at most, though it takes
/// ~1.1 s instead of ~0.6 s (the bus and audit take its events meanwhile, not after).
const MASS_CHUNK: usize = if cfg!(test) { 4 } else { 500 };

/// How a [`Cancel`] is answered, once its record is in the journal.
enum CancelAnswer {
    One(String, Reply<Order>),
    Many(Reply<Vec<Order>>),
}

impl CancelAnswer {
    fn send(self, mut done: Vec<Order>) {
        match self {
            CancelAnswer::One(order_id, reply) => drop(reply.send(done.pop().ok_or_else(|| ApiError::not_found("order", &order_id)))),
            CancelAnswer::Many(reply) => drop(reply.send(Ok(done))),
        }
    }
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
        Statuses { orders: Arc::new(Status::new("orders")), risk: Arc::new(Status::new("risk")), trading: Arc::new(Status::new("trading")) }
    }
    pub fn all(&self) -> Vec<Arc<Status>> {
        vec![self.risk.clone(), self.trading.clone(), self.orders.clone()]
    }
    /// Counts a command as taken off the mailbox (the `agt_mailbox_depth` gauge).
    pub fn dropped(&self, c: &LaneCmd) {
        let s = match c {
            LaneCmd::Orders(_) | LaneCmd::Place(_) | LaneCmd::Cancel(_) | LaneCmd::Amend(_) | LaneCmd::StrayCancels(_) => &self.orders,
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
    /// Every caller of the lane waits for its answers through `wait` (`services::spin`).
    pub fn new(tx: mpsc::Sender<Envelope<LaneCmd>>, st: &Statuses, wait: Arc<AnswerWait>) -> Self {
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
            orders: route(&tx, LaneCmd::Orders, &st.orders).waiting_with(wait.clone()),
            risk: route(&tx, LaneCmd::Risk, &st.risk).waiting_with(wait.clone()),
            trading: route(&tx, LaneCmd::Trading, &st.trading).waiting_with(wait.clone()),
            placements: Handle::new(tx, st.orders.clone()).waiting_with(wait),
        }
    }
    pub fn control(&self, c: Control) -> bool {
        self.placements.control(c)
    }
}

/// One incarnation of the lane: open the three stores, then drain the mailbox in batches.
pub fn run_incarnation(ctx: &ServiceCtx, rx: &mpsc::Receiver<Envelope<LaneCmd>>, st: &Statuses) -> Result<Exit, ServiceError> {
    let split_fault = if ctx.settings.get().debug.fault_injection { SplitFault::from_env() } else { None };
    let mut lane = Lane::open(ctx, split_fault)?;
    st.set(State::Running);
    for s in st.all() {
        ctx.bus.publish("SERVICE_STARTED", "health", serde_json::json!({"service": s.name}));
    }
    let mut batch: Vec<Envelope<LaneCmd>> = Vec::with_capacity(MAX_BATCH);
    // How long the lane's recent waits for a command were: whether to wait awake.
    let idle = SpinHistory::default();
    let busy = Busy::new();
    loop {
        let first = match rx.try_recv() {
            Ok(e) => Some(e),
            Err(mpsc::TryRecvError::Disconnected) => {
                lane.close()?;
                return Ok(Exit::Stop);
            }
            // Nothing waiting, but a cancel-all under way: its next chunk.
            Err(mpsc::TryRecvError::Empty) if lane.cancelling_many() => None,
            // Nothing waiting: what orders has to record of answered batches, a batch
            // at a time, looking for commands between two.
            Err(mpsc::TryRecvError::Empty) if lane.has_deferred() => {
                let started = Instant::now();
                lane.record_one_deferred()?;
                busy.record.observe(started.elapsed().as_secs_f64());
                continue;
            }
            // Nothing waiting: the open transactions may wait for more placements until
            // their flush is due, then commit alone.
            Err(mpsc::TryRecvError::Empty) => {
                let waiting = Instant::now();
                let budget = ctx.settings.get().trading.spin();
                // Awake first when the last waits were short (`services::spin`), but
                // never past a flush that is due.
                let spin = if lane.pending() { budget.min(lane.flush_in()) } else { budget };
                let spun =
                    if idle.should_spin(budget) { spin::spin_for(spin, || rx.try_recv().ok(), std::thread::yield_now) } else { None };
                let waited = match spun {
                    Some(e) => Ok(e),
                    None if lane.pending() => rx.recv_timeout(lane.flush_in()),
                    None => Err(mpsc::RecvTimeoutError::Timeout),
                };
                let first = match waited {
                    Ok(e) => e,
                    Err(_) => {
                        let started = Instant::now();
                        lane.flush_step()?;
                        busy.flush_step.observe(started.elapsed().as_secs_f64());
                        if lane.pending() {
                            // More of the flush to commit: first what came meanwhile.
                            continue;
                        }
                        match lane.next_when_idle(rx)? {
                            Some(e) => e,
                            None => {
                                lane.close()?;
                                return Ok(Exit::Stop);
                            }
                        }
                    }
                };
                idle.record(waiting.elapsed(), budget);
                Some(first)
            }
        };
        batch.extend(first);
        take_queued(rx, &mut batch);
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
                        LaneCmd::Cancel(c) => work.cancels.push(c),
                        LaneCmd::Amend(a) => work.amends.push(a),
                        LaneCmd::StrayCancels(r) => work.strays.push(r),
                    }
                }
                Envelope::Control(Control::Crash) => panic!("fault injection: the trading lane was told to crash"),
                Envelope::Control(Control::Restart) => exit = Some(Exit::Restart),
                Envelope::Control(Control::Stop) => exit = Some(Exit::Stop),
            }
        }
        let started = Instant::now();
        lane.run(work)?;
        busy.batch.observe(started.elapsed().as_secs_f64());
        if let Some(e) = exit {
            lane.close()?;
            st.set(State::Restarting);
            return Ok(e);
        }
    }
}

/// Where the lane's stretches of work are counted (`agt_lane_busy_seconds`): each one
/// holds up every placement that arrives meanwhile, so their lengths bound the lane's
/// part of a placement's tail (BENCHMARKS.md, session 27).
struct Busy {
    batch: Histogram,
    flush_step: Histogram,
    record: Histogram,
}

impl Busy {
    fn new() -> Busy {
        use crate::daemon::metrics::lane_busy;
        Busy { batch: lane_busy("batch"), flush_step: lane_busy("flush_step"), record: lane_busy("record") }
    }
}

#[derive(Default)]
struct Work {
    orders: Vec<orders::Cmd>,
    risk: Vec<risk::Cmd>,
    trading: Vec<trading::Cmd>,
    places: Vec<Placement>,
    cancels: Vec<Cancel>,
    amends: Vec<Amend>,
    strays: Vec<Reply<Vec<trading::Cancelled>>>,
}

/// Commits `unit` with the number of the last journal record it holds (`seq`), noted in
/// `mark`. True if the mark moved (the commit holds placements).
fn commit_to<S: Service>(unit: &mut Unit<S>, mark: &mut i64, seq: i64, bus: &crate::services::bus::Bus) -> Result<bool, ServiceError> {
    let moved = *mark < seq;
    if moved {
        unit.work(|_, tx, _| intake::mark_applied(tx, seq))?;
        *mark = seq;
    }
    unit.commit(bus)?;
    Ok(moved)
}

struct Lane {
    risk: Unit<Risk>,
    trading: Unit<Trading>,
    orders: Unit<Orders>,
    journal: Journal,
    bus: crate::services::bus::Bus,
    /// The market's and the users' read models, for an amend's [`AmendTerms`].
    instruments: crate::services::market::Listed,
    users: crate::services::users::Directory,
    split_fault: Option<SplitFault>,
    /// The newest intake record, appended to the journal.
    journalled: i64,
    /// The record that the three stores' committed state all reach.
    applied: i64,
    /// The record each store's committed state reaches: trading, risk, orders.
    marks: [i64; 3],
    /// A flush under way, one store at a time (see [`Lane::flush_step`]): how many of
    /// trading, risk and orders it has committed so far (0: none under way).
    flushing: usize,
    /// The next store's rows that wait for the commit are written (a step of its own):
    /// its commit comes next.
    prepared: bool,
    /// Records deleted from the journal up to here.
    pruned: i64,
    /// Placements journalled since the last flush, and when the first of them was.
    unflushed: usize,
    since: Option<Instant>,
    /// A `Sync` waits for the next flush: the lane flushes as soon as its mailbox is
    /// empty instead of waiting for more placements.
    sync_waiting: bool,
    /// Open orders (as the order list shows them) that rested in no book when the lane
    /// opened: where [`LaneCmd::StrayCancels`] looks.
    unrested: Vec<String>,
    /// Cancel-alls under way, oldest first ([`MassCancel`]).
    mass: std::collections::VecDeque<MassCancel>,
    /// Orders' part of phase 3 for batches already answered, oldest first: recorded when
    /// the mailbox is empty, before anything but placements, and before orders commits
    /// (see [`Deferred`]).
    deferred: std::collections::VecDeque<Deferred>,
}

/// What orders still has to record of a batch whose placements were answered and
/// settled: each outcome (with whether risk settled it), at the batch's time.
///
/// Recording is ~40 % of the lane's work per placement (the order's row and its fills,
/// each maker's, their events), and nothing the lane decides next depends on it: risk
/// settles at once (later reserves see the balances), trading has matched. So while
/// placements keep arriving the lane answers them first, and records when its mailbox
/// is empty. What could see the difference is drained first: any command to the three
/// (reads of orders included), a cancel or amend (they read the order), a placement with
/// a `client_order_id` (accept looks for the first one in orders' store), and orders'
/// commit, whose mark says which journal records it holds. Batches are recorded in the
/// order they were answered, so a maker is stored before a fill against it. A crash
/// loses nothing: the journal redoes orders' records past its mark, as before.
struct Deferred {
    at: String,
    outcomes: Vec<(Then, bool)>,
}

/// A test-only fault point (read only with `debug.fault_injection = true`):
/// `AGT_FAULT_LANE_SPLIT=N` makes the lane panic between the risk and the orders commit
/// of its N-th flush of placements, once per process: trading's and risk's stores are
/// then ahead of orders', which the restarted lane brings level from the intake journal.
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

/// Where a placement stands after phase 1 or 2 (a short-lived list per batch, so the
/// size of its variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Next {
    /// Accepted (as this order) and reserved: to the book.
    Match(Placement, risk::Reserved, Order),
    /// Matched: answer, then settle and record.
    Finish(Placement, MatchResult, Order),
    /// Ends without trading: release its hold (if it has one), reject it (if it was
    /// accepted new: the order as accept answered it, stored by the reject), then answer.
    End { p: Placement, release: bool, reject: Option<(ApiError, Order)>, answer: Result<(u16, Order), ApiError> },
}

impl Next {
    /// The intake record of a placement that was stored new (a repeated
    /// `client_order_id` writes nothing, so it has none).
    fn intake<'a>(&'a self, hold: &'a Option<Plan>, at: &'a str) -> Option<IntakeRef<'a>> {
        let (p, result, rejected) = match self {
            Next::Finish(p, result, _) => (p, Some(result), None),
            Next::End { p, reject: Some((e, _)), .. } => (p, None, Some(RejectedRef { code: &e.code, message: &e.message })),
            _ => return None,
        };
        let grid = result.is_some().then_some(Grid { tick: p.instrument.tick, lot: p.instrument.lot });
        Some(IntakeRef { order: &p.order, at, hold: hold.as_ref(), result, grid, rejected })
    }
}

/// What phase 3 does for an answered placement (a short-lived list per batch, like
/// [`Next`]).
#[allow(clippy::large_enum_variant)]
enum Then {
    /// Settle the match, then record it (the order as accept answered it, not stored
    /// yet: the record stores it).
    Record(Order, MatchResult),
    /// Release its hold (if it took one), then reject it (if it was accepted new: the
    /// reject stores it).
    End { order: NewOrder, release: bool, reject: Option<(ApiError, Order)> },
}

/// The three stores' open transactions commit together (a flush) once this many
/// placements wait in them, or [`FLUSH_AFTER`] after the first did (while fewer than
/// [`BUSY_AT`] have come since; [`FLUSH_AFTER_BUSY`] once more have), or before a command
/// that is answered at their commit. Until then their placements are durable in the
/// intake journal only; a flush bounds what a restart redoes and how late their events
/// (`ORDER_*`) reach the bus. At 1,024 placements `orders.db`'s open transaction holds
/// ~3.5 MiB of dirty pages, within its page cache (`store::CACHE_KIB`): past that,
/// SQLite writes them to the log before the commit.
const FLUSH_AT: usize = 1024;
const FLUSH_AFTER: Duration = Duration::from_millis(10);

/// Past this many placements in [`FLUSH_AFTER`] (15,000/s), a flush waits until
/// [`FLUSH_AFTER_BUSY`]. A commit rewrites a page per b-tree leaf it touches, and many of
/// those are touched by any commit, however small (a leaf of `orders_user` per active
/// user, the makers' rows and fills scattered through their tables): `orders.db` wrote
/// ~280 pages a commit at C = 32 whether the commit held 200 placements or more. Under
/// such load the lane is short of CPU, and three times the placements per commit took
/// the daemon's CPU per order from ~72 to ~66 µs and C = 32 from ~20.7 k to ~22.5 k
/// orders/s (BENCHMARKS.md, session 25). Below it the lane has CPU to spare, and shorter
/// commits keep its stretches of work, which a placement arriving then waits out,
/// short: at 10,000/s a 30 ms window for every flush made p90–p99.9 5–15 % worse.
const BUSY_AT: usize = 150;
const FLUSH_AFTER_BUSY: Duration = Duration::from_millis(30);

/// Journal records both stores have passed are deleted this many at a time: each delete
/// writes pages of its own.
const PRUNE_EVERY: i64 = 1024;

/// Starts `load` on a thread of its own within `scope`; the returned closure waits for
/// its result (a panic there goes on in the caller, for the supervisor to catch).
fn load_beside<'s, T: Send + 's>(
    scope: &'s std::thread::Scope<'s, '_>,
    name: &'static str,
    load: impl FnOnce() -> Result<T, ServiceError> + Send + 's,
) -> impl FnOnce() -> Result<T, ServiceError> + 's {
    let handle = std::thread::Builder::new().name(format!("load-{name}")).spawn_scoped(scope, load);
    move || match handle {
        Ok(h) => h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        Err(e) => Err(ServiceError::Other(format!("cannot start a thread to load {name}: {e}"))),
    }
}

impl Lane {
    /// Opens the three stores and brings risk and orders level with the journal.
    fn open(ctx: &ServiceCtx, split_fault: Option<SplitFault>) -> Result<Lane, ServiceError> {
        // The three stores load side by side: with many open orders each takes a while
        // (the books rebuilt, the ledger's holds, the orders' index), on separate cores.
        let (risk, trading, orders) = std::thread::scope(|s| {
            let risk = load_beside(s, "risk", || Unit::<Risk>::load(ctx));
            let trading = load_beside(s, "trading", || Unit::<Trading>::load(ctx));
            let orders = Unit::<Orders>::load(ctx);
            (risk(), trading(), orders)
        });
        let (mut risk, mut trading, mut orders) = (risk?, trading?, orders?);
        risk.resend(ctx)?;
        trading.resend(ctx)?;
        orders.resend(ctx)?;
        let mut lane = Lane {
            risk,
            trading,
            orders,
            journal: Journal::open(&ctx.home, ctx.durability)?,
            bus: ctx.bus.clone(),
            instruments: ctx.instruments.clone(),
            users: ctx.directory.clone(),
            split_fault,
            journalled: 0,
            applied: 0,
            marks: [0; 3],
            flushing: 0,
            prepared: false,
            pruned: 0,
            unflushed: 0,
            since: None,
            sync_waiting: false,
            unrested: Vec::new(),
            mass: Default::default(),
            deferred: Default::default(),
        };
        lane.recover()?;
        lane.check_live_orders()?;
        lane.restore_shorts()?;
        Ok(lane)
    }

    /// Gives the open short sales an older agt stored without their short part (risk's
    /// `shorts_unknown`) that part back, from what remains of each order: read as 0,
    /// they counted nothing in the supply room (`Ledger::exposure`), so other short
    /// sales could grow past what every balance can hold exactly. Once per store: risk
    /// empties its list as it commits. After recovery, so the orders' remaining sizes and
    /// risk's holds are level with the journal.
    fn restore_shorts(&mut self) -> Result<(), ServiceError> {
        let mut listed = Vec::new();
        self.risk.read(|_, tx, _| {
            listed = Risk::unknown_shorts(tx)?;
            Ok(())
        })?;
        if listed.is_empty() {
            return Ok(());
        }
        // Orders' rows as they stand (recovery's fills may wait unwritten).
        self.record_deferred()?;
        let mut remaining = Vec::with_capacity(listed.len());
        self.orders.read(|_, tx, _| {
            for id in listed {
                if let Some(left) = Orders::open_remaining(tx, &id)? {
                    remaining.push((id, left));
                }
            }
            Ok(())
        })?;
        let restored = self.risk.batch(&self.bus, |svc, tx, _| svc.restore_shorts(tx, &remaining))?;
        if restored > 0 {
            tracing::info!(orders = restored, "restored the short part of short sales stored without it");
        }
        Ok(())
    }

    /// Checks every live order against risk's holds and trading's books, in one read of
    /// the orders' live index, before the lane takes any command:
    ///
    /// - frees open holds whose order was never stored. The intake journal redoes a
    ///   placement's records in all three stores, so none should be left; this keeps a
    ///   store that lost its part (an older agt's crash, a restored backup) from holding
    ///   funds forever;
    /// - notes the open orders that rest in no book, where [`LaneCmd::StrayCancels`] then
    ///   looks for cancels to finish (normally there are none).
    ///
    /// Here, not through the mailboxes: ids stay borrowed instead of being copied across.
    /// With 114 k open orders, listing them to recovery, asking trading about each and
    /// checking holds in a read of their own took ~0.35 s of a ~1 s restart.
    fn check_live_orders(&mut self) -> Result<(), ServiceError> {
        let mut holds: std::collections::HashSet<&str> = self.risk.svc.ledger().hold_ids().collect();
        let trading = &self.trading.svc;
        let mut unrested = Vec::new();
        let orphans = self.orders.work(|_, tx, _| {
            Orders::each_live(tx, |id, open| {
                holds.remove(id);
                if open && !trading.rests(id) {
                    unrested.push(id.to_string());
                }
            })?;
            // A hold whose order is stored but no longer live is not this check's to free.
            Ok(Orders::unknown(tx, holds)?)
        })?;
        self.orders.commit(&self.bus)?;
        self.unrested = unrested;
        if orphans.is_empty() {
            return Ok(());
        }
        tracing::info!(holds = orphans.len(), "releasing holds of orders that were never stored");
        let req = risk::SettleRequest { trades: vec![], release: orphans };
        if let Err(e) = self.risk.work(|svc, tx, _| svc.settle(tx, &req))? {
            return Err(ServiceError::Other(format!("cannot release the holds of orders never stored: {}", e.message)));
        }
        self.risk.commit(&self.bus)
    }

    /// The open orders noted at open that still rest in no book because a cancel took
    /// them out (trading's `cancels`), with what remains of each. Asked once, by recovery.
    fn stray_cancels(&mut self) -> Result<Vec<trading::Cancelled>, ServiceError> {
        let candidates = std::mem::take(&mut self.unrested);
        let mut cancelled = Vec::new();
        self.trading.read(|svc, tx, _| {
            for id in candidates {
                if !svc.rests(&id) && Trading::cancelled_from_book(tx, &id)? {
                    cancelled.push(id);
                }
            }
            Ok(())
        })?;
        let mut stray = Vec::new();
        self.orders.read(|orders, tx, _| {
            debug_assert!(!orders.has_unwritten(), "stray cancels come after record_deferred");
            for id in &cancelled {
                stray.extend(Orders::cancellable(tx, id)?);
            }
            Ok(())
        })?;
        Ok(stray)
    }

    /// Whether any of the three holds work that waits for a flush.
    fn pending(&self) -> bool {
        self.risk.is_open() || self.orders.is_open() || self.trading.is_open() || self.has_deferred()
    }

    /// Whether answered batches wait for orders to record them ([`Deferred`]).
    fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Records the oldest answered batch in orders' open transaction ([`Deferred`]).
    fn record_one_deferred(&mut self) -> Result<(), ServiceError> {
        let Some(Deferred { at, outcomes }) = self.deferred.pop_front() else { return Ok(()) };
        self.orders.work(|orders, tx, after| {
            // One statement per kind of row for the whole batch, not one per row.
            let tx = &Held::new(tx);
            for (t, settled) in outcomes {
                match t {
                    Then::Record(order, result) => drop(orders.record_accepted(tx, order, result, settled, &at, after)?),
                    Then::End { reject: Some((e, order)), .. } if settled => {
                        drop(orders.reject_unstored(tx, order, e.code.as_ref(), &e.message, &at, after)?)
                    }
                    // An abort whose hold could not be released stays `accepted`:
                    // recovery finishes it.
                    Then::End { reject: Some((_, order)), .. } => orders.store_accepted(tx, &order)?,
                    Then::End { .. } => {}
                }
            }
            Ok(())
        })
    }

    /// Records every answered batch ([`Deferred`]), and writes the order rows they left
    /// unwritten (`orders::Unwritten`): whatever reads or writes `orders.db` after this
    /// finds every row as it stands.
    fn record_deferred(&mut self) -> Result<(), ServiceError> {
        while self.has_deferred() {
            self.record_one_deferred()?;
        }
        if self.orders.svc.has_unwritten() {
            self.orders.work(|orders, tx, _| orders.write_unwritten(&Held::new(tx)))?;
        }
        Ok(())
    }

    /// How long an idle lane may still wait before it must flush: not at all once a
    /// `Sync` waits (nothing else is queued to share the flush with).
    fn flush_in(&self) -> Duration {
        if self.flush_under_way() {
            return Duration::ZERO;
        }
        match self.since {
            Some(t) if !self.sync_waiting => self.flush_window().saturating_sub(t.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// How long after its first placement a flush waits for more: longer under heavy
    /// load ([`BUSY_AT`]).
    fn flush_window(&self) -> Duration {
        if self.unflushed >= BUSY_AT {
            FLUSH_AFTER_BUSY
        } else {
            FLUSH_AFTER
        }
    }

    /// Whether a flush has begun and has steps left.
    fn flush_under_way(&self) -> bool {
        self.flushing > 0 || self.prepared
    }

    fn due(&self) -> bool {
        self.unflushed >= FLUSH_AT || self.since.is_some_and(|t| t.elapsed() >= self.flush_window())
    }

    /// Commits trading, risk, then orders, each with the journal record it now reaches,
    /// and releases their replies and events: the whole flush at once (before a command
    /// that changes one of the three, for a `Sync`, on stop), finishing one under way.
    fn flush(&mut self) -> Result<(), ServiceError> {
        self.record_deferred()?;
        let seq = self.journalled;
        commit_to(&mut self.trading, &mut self.marks[0], seq, &self.bus)?;
        if commit_to(&mut self.risk, &mut self.marks[1], seq, &self.bus)? {
            SplitFault::tick(&mut self.split_fault);
        }
        commit_to(&mut self.orders, &mut self.marks[2], seq, &self.bus)?;
        self.applied = seq;
        self.flushing = 0;
        self.prepared = false;
        self.unflushed = 0;
        self.since = None;
        self.sync_waiting = false;
        Ok(())
    }

    /// Flushes, then deletes the intake journal's segments: once the three stores have
    /// committed every record, the journal holds nothing to redo, and the next start
    /// need not read it (after a busy run it held up to a segment, ~5 k records, which
    /// the start read and checked: 44–98 ms to `/ready` instead of ~27; BENCHMARKS.md,
    /// session 28).
    fn close(&mut self) -> Result<(), ServiceError> {
        self.flush()?;
        self.journal.prune(self.applied)?;
        self.pruned = self.applied;
        Ok(())
    }

    /// Commits the next store of a flush (trading, risk, then orders), beginning one
    /// if none is under way. Between two steps the lane takes the commands that came
    /// meanwhile: the three commits together held the lane for ~1.5 ms at 5,000
    /// orders/s (p90 2.4 ms), and every order that arrived then waited for all of
    /// them. Each store's commit carries the journal record it reaches, so they need not
    /// commit together (a crash between them is repaired as in [`Lane::recover`]).
    /// Placements taken between two steps go into the stores' open transactions; those
    /// of a store already committed wait for the next flush. A `Sync` waits for all
    /// three to commit what it was answered after: with one waiting, the rest of the
    /// flush is done at once. The rows a store writes only when it commits (trading's
    /// resting rows, orders' records of answered batches and open orders' rows) are
    /// written in a step before its commit ([`Lane::prepared`]): at C = 32 they are
    /// hundreds of rows.
    fn flush_step(&mut self) -> Result<(), ServiceError> {
        if self.sync_waiting {
            return self.flush();
        }
        let seq = self.journalled;
        match self.flushing {
            0 => {
                if !self.prepared {
                    self.bus.load().set_heavy(self.unflushed >= BUSY_AT);
                    // What is placed from now on counts toward the next flush.
                    self.unflushed = 0;
                    self.since = None;
                    // Trading's resting rows, written at the commit, are a step of
                    // their own: the commit alone comes next.
                    if self.trading.svc.has_unwritten() {
                        self.trading.work(|svc, tx, _| svc.write_resting(tx))?;
                        self.prepared = true;
                        return Ok(());
                    }
                }
                commit_to(&mut self.trading, &mut self.marks[0], seq, &self.bus)?;
            }
            1 => {
                if commit_to(&mut self.risk, &mut self.marks[1], seq, &self.bus)? {
                    SplitFault::tick(&mut self.split_fault);
                }
            }
            _ => {
                // Recording the answered batches and writing open orders' rows is a step
                // of its own too.
                if !self.prepared && (self.has_deferred() || self.orders.svc.has_unwritten()) {
                    self.record_deferred()?;
                    self.prepared = true;
                    return Ok(());
                }
                // Orders' mark must cover only what it holds.
                self.record_deferred()?;
                commit_to(&mut self.orders, &mut self.marks[2], seq, &self.bus)?;
            }
        }
        self.prepared = false;
        self.flushing = (self.flushing + 1) % 3;
        self.applied = self.marks.iter().copied().min().unwrap_or(0);
        Ok(())
    }

    /// Waits for the next command with nothing left to flush (`None`: the mailbox
    /// closed). While outbox rows wait to be deleted, it wakes after
    /// [`actor::TIDY_AFTER`] without a command and deletes what the bus has confirmed.
    fn next_when_idle(&mut self, rx: &mpsc::Receiver<Envelope<LaneCmd>>) -> Result<Option<Envelope<LaneCmd>>, ServiceError> {
        loop {
            if !(self.trading.outbox_waiting() || self.risk.outbox_waiting() || self.orders.outbox_waiting()) {
                return Ok(rx.recv().ok());
            }
            match rx.recv_timeout(actor::TIDY_AFTER) {
                Ok(e) => return Ok(Some(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.trading.tidy()?;
                    self.risk.tidy()?;
                    self.orders.tidy()?;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Brings the three stores level with the journal after a crash: each redoes, from
    /// the records after its own mark, what the lane had done in its open transaction —
    /// the same fills (trading matches each order again on its committed book, and must
    /// make the fills the journal has, ids and times included), holds, settlements,
    /// orders and times, decided nothing anew.
    fn recover(&mut self) -> Result<(), ServiceError> {
        let risk_at = self.risk.work(|_, tx, _| intake::applied(tx))?;
        let orders_at = self.orders.work(|_, tx, _| intake::applied(tx))?;
        // An agt from before journalled into `trading.db`, in trading's own commits:
        // trading holds every record there.
        let (old_last, old) = self.trading.work(|_, tx, _| Ok((intake::last(tx)?, intake::after(tx, risk_at.min(orders_at))?)))?;
        let trading_at = self.trading.work(|_, tx, _| intake::applied(tx))?.max(old_last);
        let (last, new) = self.journal.after(risk_at.min(orders_at).min(trading_at))?;
        let records: Vec<(i64, Record)> = old.into_iter().map(|(seq, r)| (seq, Record::Place(r))).chain(new).collect();
        // Every number handed out is in the journal or below a mark.
        let end = last.max(old_last).max(risk_at).max(orders_at).max(trading_at);
        if !records.is_empty() {
            tracing::info!(
                trading = trading_at,
                risk = risk_at,
                orders = orders_at,
                journal = last,
                "redoing placements, cancels and amends from the intake journal"
            );
        }
        self.trading.work(|svc, tx, after| {
            for (seq, r) in records.iter().filter(|(seq, _)| *seq > trading_at) {
                let r = match r {
                    Record::Place(r) => r,
                    Record::Cancel(c) => {
                        for one in &c.cancelled {
                            svc.cancel(tx, &one.order_id)?;
                        }
                        continue;
                    }
                    Record::Amend(a) => {
                        svc.redo_amend(tx, &a.order_id, a.price, a.remaining, &a.result, after)?;
                        continue;
                    }
                };
                let Some(result) = &r.result else { continue };
                let Some(grid) = r.grid else {
                    return Err(ServiceError::Other(format!("intake record {seq} has a match but not the book's grid")));
                };
                let req = saga::match_on(&r.order, grid.tick, grid.lot, r.hold.as_ref().and_then(|h| h.budget));
                svc.redo_match(tx, req, result, after)?;
            }
            intake::mark_applied(tx, end)
        })?;
        self.trading.commit(&self.bus)?;
        self.risk.work(|svc, tx, _| {
            for (_, r) in records.iter().filter(|(seq, _)| *seq > risk_at) {
                let r = match r {
                    Record::Place(r) => r,
                    Record::Cancel(c) => {
                        let release = c.cancelled.iter().map(|one| one.order_id.clone()).collect();
                        if let Err(e) = svc.settle(tx, &risk::SettleRequest { trades: vec![], release })? {
                            return Err(ServiceError::Other(format!("cannot redo the release of a cancel: {}", e.message)));
                        }
                        continue;
                    }
                    Record::Amend(a) => {
                        let settlement = saga::settlement(&a.user_id, &a.symbol, a.side, &a.result);
                        let mut redone = svc.amend(&a.order_id, a.price, a.remaining, 0)?;
                        if redone.is_ok() {
                            redone = svc.settle_new(tx, &settlement)?;
                        }
                        if let Err(e) = redone {
                            return Err(ServiceError::Other(format!("cannot redo the amend of {}: {}", a.order_id, e.message)));
                        }
                        continue;
                    }
                };
                if let Some(plan) = &r.hold {
                    svc.restore_hold(tx, &r.order, plan)?;
                }
                let req = match (&r.result, &r.hold) {
                    (Some(result), _) => saga::settlement(&r.order.user_id, &r.order.symbol, r.order.side, result),
                    (None, Some(_)) => risk::SettleRequest { trades: vec![], release: vec![r.order.order_id.clone()] },
                    (None, None) => continue,
                };
                if let Err(e) = svc.settle_new(tx, &req)? {
                    return Err(ServiceError::Other(format!("cannot redo the settlement of {}: {}", r.order.order_id, e.message)));
                }
            }
            intake::mark_applied(tx, end)
        })?;
        self.risk.commit(&self.bus)?;
        self.orders.work(|orders, tx, after| {
            for (_, r) in records.iter().filter(|(seq, _)| *seq > orders_at) {
                let r = match r {
                    Record::Place(r) => r,
                    Record::Cancel(c) => {
                        orders.cancelled(tx, c.cancelled.clone(), &c.at, after)?;
                        continue;
                    }
                    Record::Amend(a) => {
                        let amended = Some((a.price, a.quantity));
                        if let Err(e) = orders.record_at(tx, a.result.clone(), amended, true, &a.at, after)? {
                            return Err(ServiceError::Other(format!("cannot redo the amend of {}: {}", a.order_id, e.message)));
                        }
                        continue;
                    }
                };
                if let Accepted::Existing(_) = orders.accept_at(tx, r.order.clone(), r.at.clone())? {
                    continue;
                }
                match (&r.result, &r.rejected) {
                    (Some(result), _) => drop(orders.record_at(tx, result.clone(), None, true, &r.at, after)?),
                    (None, Some(e)) => drop(orders.reject_at(tx, &r.order.order_id, &e.code, &e.message, &r.at, after)?),
                    (None, None) => {}
                }
            }
            intake::mark_applied(tx, end)
        })?;
        self.orders.commit(&self.bus)?;
        if old_last > 0 {
            self.trading.batch(&self.bus, |_, tx, _| intake::prune(tx, end))?;
        }
        self.journal.prune(end)?;
        (self.journalled, self.applied, self.pruned) = (end, end, end);
        self.marks = [end; 3];
        Ok(())
    }

    /// The open order a cancel or an amend is for, without its fills: 404 if there is
    /// none, or if `owner` is given and is not its user (another's order looks absent);
    /// 409 if it is final.
    fn open_order_of(&mut self, order_id: &str, owner: Option<&str>) -> Result<Result<(Order, String), ApiError>, ServiceError> {
        let order = self.orders.work(|orders, tx, _| {
            debug_assert!(!orders.has_unwritten(), "cancels and amends come after record_deferred");
            Ok(Orders::head(tx, order_id)?)
        })?;
        Ok(match order {
            Some((o, _)) if owner.is_some_and(|u| u != o.user_id) => Err(ApiError::not_found("order", order_id)),
            Some((o, _)) if !o.status.is_open() => Err(saga::not_open(&o)),
            Some(head) => Ok(head),
            None => Err(ApiError::not_found("order", order_id)),
        })
    }

    /// Runs a [`Cancel`] in the open transactions at `at`: its journal record, its
    /// answer and the orders it answers with, to send once the record is appended. A
    /// refusal changes nothing and is answered at once (`None`).
    fn cancel(&mut self, cancel: Cancel, at: &str) -> Result<Option<(CancelRecord, CancelAnswer, Vec<Order>)>, ServiceError> {
        let (cancelled, answer) = match cancel {
            Cancel::One { order_id, owner, reply } => {
                if let Err(e) = self.open_order_of(&order_id, owner.as_deref())? {
                    let _ = reply.send(Err(e));
                    return Ok(None);
                }
                let Some(c) = self.trading.work(|svc, tx, _| svc.cancel(tx, &order_id))? else {
                    let e = ApiError::conflict(
                        "order_not_open",
                        format!("order {order_id} is not resting in a book (its placement has not finished)"),
                    );
                    let _ = reply.send(Err(e));
                    return Ok(None);
                };
                (vec![c], CancelAnswer::One(order_id, reply))
            }
            Cancel::Many { user_id, symbol, reply } => {
                let targets = self.trading.svc.resting_of(user_id.as_deref(), symbol.as_deref());
                self.mass.push_back(MassCancel { targets: targets.into_iter(), done: Vec::new(), reply });
                return Ok(None);
            }
        };
        let (record, done) = self.take_out(cancelled, at)?;
        Ok(Some((record, answer, done)))
    }

    /// Releases the holds of orders trading took out of their books and records them
    /// cancelled at `at`: the journal record, and the orders as they now stand.
    fn take_out(&mut self, cancelled: Vec<trading::Cancelled>, at: &str) -> Result<(CancelRecord, Vec<Order>), ServiceError> {
        let release = risk::SettleRequest { trades: vec![], release: cancelled.iter().map(|c| c.order_id.clone()).collect() };
        if let Err(e) = self.risk.work(|svc, tx, _| svc.settle(tx, &release))? {
            // A release alone is never refused; were it, the lane would restart and its
            // open transactions, this cancel's included, roll back (the caller: 503).
            return Err(ServiceError::Other(format!("cannot release the holds of cancelled orders: {}", e.message)));
        }
        let done = self.orders.work(|orders, tx, after| orders.cancelled(tx, cancelled.clone(), at, after))?;
        Ok((CancelRecord { cancelled, at: at.to_string() }, done))
    }

    /// The next [`MASS_CHUNK`] orders of the oldest cancel-all under way: its journal
    /// record (none if they had all left their books meanwhile), and its answer once
    /// this was its last chunk.
    #[allow(clippy::type_complexity)]
    fn mass_chunk(&mut self, at: &str) -> Result<(Option<CancelRecord>, Option<(CancelAnswer, Vec<Order>)>), ServiceError> {
        let Some(mass) = self.mass.front_mut() else { return Ok((None, None)) };
        let chunk: Vec<String> = mass.targets.by_ref().take(MASS_CHUNK).collect();
        let cancelled = self.trading.work(|svc, tx, _| {
            let mut out = Vec::with_capacity(chunk.len());
            for id in &chunk {
                out.extend(svc.cancel(tx, id)?);
            }
            Ok(out)
        })?;
        let record = match cancelled.is_empty() {
            true => None,
            false => {
                let (record, done) = self.take_out(cancelled, at)?;
                self.mass.front_mut().expect("still under way").done.extend(done);
                Some(record)
            }
        };
        let finished = self.mass.front().is_some_and(|m| m.targets.len() == 0);
        let answer = finished.then(|| self.mass.pop_front().expect("under way")).map(|m| (CancelAnswer::Many(m.reply), m.done));
        Ok((record, answer))
    }

    /// Whether a cancel-all is under way: the lane goes on with it while its mailbox is
    /// empty.
    fn cancelling_many(&self) -> bool {
        !self.mass.is_empty()
    }

    /// Runs an [`Amend`] in the open transactions at `at`: its journal record, and its
    /// answer to send once the record is appended. A refusal changes nothing and is
    /// answered at once (`None`). The checks and their order are the saga's before.
    fn amend(&mut self, amend: Amend, at: &str) -> Result<Option<(AmendRecord, Reply<Order>, Order)>, ServiceError> {
        let Amend { order_id, owner, price, quantity, reply } = amend;
        let refuse = |reply: Reply<Order>, e: ApiError| {
            let _ = reply.send(Err(e));
            Ok(None)
        };
        let (o, stage) = match self.open_order_of(&order_id, owner.as_deref())? {
            Ok((o, stage)) if o.kind == OrderType::Limit => (o, stage),
            Ok((o, _)) => return refuse(reply, saga::not_open(&o)),
            Err(e) => return refuse(reply, e),
        };
        let AmendTerms { instrument_min, instrument_max, user_active } = match AmendTerms::of(&o, &self.instruments, &self.users) {
            Ok(terms) => terms,
            Err(e) => return refuse(reply, e),
        };
        let price = price.or(o.price).unwrap_or_default();
        let quantity = quantity.unwrap_or(o.quantity);
        if price <= Decimal::ZERO {
            return refuse(reply, ApiError::invalid("invalid_price", format!("price must be greater than zero, got {price}")));
        }
        if quantity <= o.filled_quantity {
            let e = format!("quantity is the new total and must exceed the filled {}, got {quantity}", o.filled_quantity);
            return refuse(reply, ApiError::invalid("invalid_quantity", e));
        }
        let Some((tick, lot)) = self.trading.svc.grid_of(&order_id) else {
            let e = format!("order {order_id} is not resting in a book (its placement has not finished)");
            return refuse(reply, ApiError::conflict("order_not_open", e));
        };
        if (price % tick) != Decimal::ZERO {
            return refuse(reply, ApiError::rejected("invalid_tick", format!("price {price} is not a multiple of the tick {tick}")));
        }
        let remaining = quantity - o.filled_quantity;
        if (remaining % lot) != Decimal::ZERO {
            return refuse(reply, ApiError::rejected("invalid_lot", format!("quantity {quantity} is not a multiple of the lot {lot}")));
        }
        if let Err(e) = risk::checks::check_lot(quantity, lot, instrument_min) {
            return refuse(reply, e);
        }
        let price_changed = o.price != Some(price);
        if let Err(e) =
            self.risk.svc.check_amend((&o.user_id, user_active), &o.symbol, (price, quantity), price_changed, (tick, instrument_max))
        {
            return refuse(reply, e);
        }
        let grid = lot.normalize().scale();
        if let Err(e) = self.risk.work(|svc, _, _| svc.amend(&order_id, price, remaining, grid))? {
            return refuse(reply, e);
        }
        let result = match self.trading.work(|svc, tx, after| svc.amend(tx, &order_id, price, remaining, None, after))? {
            Ok(result) => result,
            Err(e) => {
                // The hold goes back to what it was.
                let (old_price, old_remaining) = (o.price.unwrap_or_default(), o.remaining_quantity);
                if let Err(e) = self.risk.work(|svc, _, _| svc.amend(&order_id, old_price, old_remaining, 0))? {
                    return Err(ServiceError::Other(format!("cannot put back the hold of {order_id}: {}", e.message)));
                }
                return refuse(reply, e);
            }
        };
        let settlement = saga::settlement(&o.user_id, &o.symbol, o.side, &result);
        if let Err(e) = self.risk.work(|svc, tx, _| svc.settle_new(tx, &settlement))? {
            // Never expected (the fills were just made against open holds); the lane
            // restarts and the open transactions, this amend's included, roll back.
            return Err(ServiceError::Other(format!("cannot settle the amend of {order_id}: {}", e.message)));
        }
        let amended = (price, quantity);
        let (user_id, symbol, side) = (o.user_id.clone(), o.symbol.clone(), o.side);
        // The row the check read is still the order's: nothing between wrote to orders.
        let order =
            self.orders.work(|orders, tx, after| orders.record_head(tx, o, &stage, result.clone(), Some(amended), true, at, after))?;
        let record = AmendRecord { order_id, user_id, symbol, side, price, quantity, remaining, result, at: at.to_string() };
        Ok(Some((record, reply, order)))
    }

    fn run(&mut self, work: Work) -> Result<(), ServiceError> {
        let Work { orders: mut orders_cmds, risk: risk_cmds, trading: trading_cmds, places, cancels, amends, strays } = work;
        // Placements alone go ahead of what orders still has to record; anything that
        // could see the difference goes after it ([`Deferred`]).
        let placements_only = orders_cmds.is_empty()
            && risk_cmds.is_empty()
            && trading_cmds.is_empty()
            && strays.is_empty()
            && cancels.is_empty()
            && amends.is_empty()
            && self.mass.is_empty()
            && places.iter().all(|p| p.order.client_order_id.is_none());
        if !placements_only {
            self.record_deferred()?;
        }
        if !strays.is_empty() {
            let found = self.stray_cancels()?;
            for reply in strays {
                let _ = reply.send(Ok(found.clone()));
            }
        }
        // Phase 0: commands to the three, answered at a flush of their own before this
        // batch's placements, which must not be journalled on top of a change (a deposit,
        // a limit, a cancel) that a crash could still take back. Reads alone need no
        // flush: the open transactions hold only what the journal redoes after a crash,
        // so what they show is as durable as what is committed. (Flushing for each read
        // made a client that polls its orders cost a commit of three stores per poll.)
        // A `Sync` asks for what was acknowledged to be committed and on the bus: it rides
        // on the next flush rather than forcing one here (the market routes and
        // `/api/events` send one per request). Under load that is the next due flush; when
        // the mailbox runs dry, the lane flushes at once (`flush_in`).
        let syncs: Vec<orders::Cmd> = orders_cmds.extract_if(.., |c| matches!(c, orders::Cmd::Sync(_))).collect();
        let reads_only = risk_cmds.iter().all(risk::Cmd::is_read)
            && orders_cmds.iter().all(orders::Cmd::is_read)
            && trading_cmds.iter().all(trading::Cmd::is_read);
        handle_all(&mut self.risk, risk_cmds, reads_only)?;
        handle_all(&mut self.orders, orders_cmds, reads_only)?;
        handle_all(&mut self.trading, trading_cmds, reads_only)?;
        if !reads_only {
            self.flush()?;
        }
        // With nothing waiting for a flush, everything acknowledged is committed and its
        // events handed to the bus already (`App::sync_events` then waits for the bus).
        let nothing_pending = !self.pending();
        self.sync_waiting |= !syncs.is_empty() && !nothing_pending;
        handle_all(&mut self.orders, syncs, nothing_pending)?;
        if places.is_empty() && cancels.is_empty() && amends.is_empty() && self.mass.is_empty() {
            return Ok(());
        }
        // One time for the batch: the journal repeats it when it redoes the batch.
        let at = crate::api::now_rfc3339();

        // Cancels and amends first, journalled ahead of the batch's placements, which
        // then match on the books they left (and are redone so).
        let mut records = Vec::with_capacity(places.len() + cancels.len() + amends.len());
        let mut cancelled = Vec::with_capacity(cancels.len());
        for c in cancels {
            if let Some((record, answer, done)) = self.cancel(c, &at)? {
                records.push(Record::Cancel(record));
                cancelled.push((answer, done));
            }
        }
        // A cancel-all goes a chunk per batch, so that it never holds up the lane for
        // long ([`MASS_CHUNK`]).
        let (chunk, done) = self.mass_chunk(&at)?;
        records.extend(chunk.map(Record::Cancel));
        cancelled.extend(done);
        let mut amended = Vec::with_capacity(amends.len());
        for a in amends {
            if let Some((record, reply, order)) = self.amend(a, &at)? {
                records.push(Record::Amend(record));
                amended.push((reply, order));
            }
        }

        // Phase 1: reserve ‖ accept, in the open transactions.
        let mut reserved = Vec::with_capacity(places.len());
        let mut holds = Vec::with_capacity(places.len());
        if !places.is_empty() {
            self.risk.work(|svc, _, _| {
                for p in &places {
                    let req = saga::reserve_request(&p.order, p.user_active, &p.instrument);
                    let r = svc.reserve_new(&req);
                    holds.push(r.as_ref().ok().and_then(|_| svc.hold_plan(&p.order.order_id)));
                    reserved.push(r);
                }
                Ok(())
            })?;
        }
        // Accept stores nothing yet: phase 3 writes each order once, with its outcome.
        let mut accepted = Vec::with_capacity(places.len());
        if !places.is_empty() {
            self.orders.work(|orders, tx, _| {
                let mut batch = HashMap::new();
                for p in &places {
                    // A client order id is looked up in the store: its batch came after
                    // `record_deferred` (`placements_only`).
                    debug_assert!(p.order.client_order_id.is_none() || !orders.has_unwritten());
                    accepted.push(Orders::accept_unstored(tx, p.order.clone(), at.clone(), &mut batch)?);
                }
                Ok(())
            })?;
        }
        let next: Vec<Next> = places
            .into_iter()
            .zip(accepted.into_iter().zip(reserved))
            .map(|(p, (a, r))| match (a, r) {
                (Accepted::New(o), Ok(r)) => Next::Match(p, r, o),
                (Accepted::New(o), Err(e)) => {
                    let answer = Err(e.clone().for_order(&o.order_id));
                    Next::End { p, release: true, reject: Some((e, o)), answer }
                }
                (Accepted::Existing(first), r) => Next::End { p, release: r.is_ok(), reject: None, answer: Ok((200, first)) },
            })
            .collect();

        // Phase 2: match, and journal every placement stored new. The journal's append
        // makes the whole batch durable: from here on, each placement can be answered.
        let next = self.trading.work(|svc, tx, after| {
            // One statement for the batch's trades, not one per trade.
            let tx = &Held::new(tx);
            let mut out = Vec::with_capacity(next.len());
            for n in next {
                let n = match n {
                    Next::Match(p, r, o) => match svc.match_new(tx, saga::match_request(&p.order, &p.instrument, r.budget), after)? {
                        Ok(result) => Next::Finish(p, result, o),
                        Err(e) => {
                            let answer = Err(e.clone().for_order(&o.order_id));
                            Next::End { p, release: true, reject: Some((e, o)), answer }
                        }
                    },
                    other => other,
                };
                out.push(n);
            }
            Ok(out)
        })?;
        // Cancels and amends first, then each placement stored new, in batch order.
        let refs: Vec<RecordRef> = records
            .iter()
            .map(Record::as_ref)
            .chain(next.iter().zip(&holds).filter_map(|(n, hold)| n.intake(hold, &at).map(RecordRef::Place)))
            .collect();
        if self.applied - self.pruned >= PRUNE_EVERY {
            self.journal.detach(self.applied).delete_apart();
            self.pruned = self.applied;
        }
        self.journal.append_all(self.journalled + 1, &refs)?;
        let journalled = refs.len();
        drop(refs);
        self.journalled += journalled as i64;
        if journalled > 0 {
            self.since.get_or_insert_with(Instant::now);
        }

        for (answer, done) in cancelled {
            answer.send(done);
        }
        for (reply, order) in amended {
            let _ = reply.send(Ok(order));
        }
        // Every placement is answered now: the batch is durable. A traded one with its
        // order as its record is about to store it (`orders::matched`).
        let mut then = Vec::with_capacity(next.len());
        for n in next {
            match n {
                Next::Finish(p, result, order) => {
                    // Counted as answered, so `/metrics` read after the answer has it.
                    let answered = orders::matched(order.clone(), &result, &at);
                    crate::daemon::metrics::order(answered.status.as_str());
                    let _ = p.reply.send(Ok((201, answered)));
                    then.push(Then::Record(order, result));
                }
                Next::End { p, release, reject, answer } => {
                    if reject.is_some() {
                        crate::daemon::metrics::order("rejected");
                    }
                    let _ = p.reply.send(answer);
                    then.push(Then::End { order: p.order, release, reject });
                }
                Next::Match(p, ..) => {
                    let _ = p.reply.send(Err(ApiError::internal("an order was left unmatched")));
                }
            }
        }

        // Phase 3: settle, then record, in the open transactions the next flush commits
        // (risk first). A batch of repeated client ids only has nothing to write.
        if journalled > 0 || then.iter().any(|t| matches!(t, Then::End { release: true, .. })) {
            let mut settled = Vec::with_capacity(then.len());
            self.risk.work(|svc, tx, _| {
                for t in &then {
                    let req = match t {
                        Then::Record(o, result) => saga::settlement(&o.user_id, &o.symbol, o.side, result),
                        Then::End { order, release: true, .. } => {
                            risk::SettleRequest { trades: vec![], release: vec![order.order_id.clone()] }
                        }
                        Then::End { .. } => {
                            settled.push(true);
                            continue;
                        }
                    };
                    settled.push(svc.settle_new(tx, &req)?.is_ok());
                }
                Ok(())
            })?;
            // A match risk refused to settle leaves its order `settling` for recovery to
            // finish, and recovery's match step must answer this outcome, not trade again.
            if then.iter().zip(&settled).any(|(t, ok)| !ok && matches!(t, Then::Record(..))) {
                self.trading.work(|_, tx, _| {
                    for (t, _) in then.iter().zip(&settled).filter(|(_, ok)| !**ok) {
                        if let Then::Record(_, result) = t {
                            Trading::keep_outcome(tx, result)?;
                        }
                    }
                    Ok(())
                })?;
            }
            // Orders records the batch when the lane has nothing else waiting ([`Deferred`]).
            self.deferred.push_back(Deferred { at, outcomes: then.into_iter().zip(settled).collect() });
        }
        self.unflushed += journalled;
        if self.due() || self.flush_under_way() {
            self.flush_step()?;
        }
        Ok(())
    }
}

/// Handles a service's commands of phase 0: in its open transaction, answered at the
/// flush, or, for commands that change nothing, answered at once ([`Unit::read`]).
fn handle_all<S: Service>(unit: &mut Unit<S>, cmds: Vec<S::Cmd>, at_once: bool) -> Result<(), ServiceError> {
    if cmds.is_empty() {
        return Ok(());
    }
    let each =
        |svc: &mut S, tx: &rusqlite::Connection, after: &mut AfterCommit| cmds.into_iter().try_for_each(|c| svc.handle(tx, c, after));
    if at_once {
        unit.read(each)
    } else {
        unit.work(each)
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
        let answered_trades: Vec<String> =
            answered.iter().flatten().flat_map(|(_, o)| o.fills.iter().map(|f| f.trade_id.clone())).collect();
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
        assert_eq!(
            (cancelled.status, cancelled.remaining_quantity, cancelled.filled_quantity),
            (OrderStatus::Cancelled, dec("2"), dec("3"))
        );
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
        lane.run(Work { cancels: vec![Cancel::Many { user_id: Some("alice".into()), symbol: None, reply }], ..Default::default() })
            .unwrap();
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
            let a =
                Amend { order_id: id.into(), owner: owner.map(String::from), price: price.map(dec), quantity: quantity.map(dec), reply };
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

        let seen =
            (get(&mut lane, "ord_s"), get(&mut lane, "ord_b"), account(&mut lane, "alice"), account(&mut lane, "bob"), book(&mut lane));
        assert_eq!((seen.0.status, seen.0.filled_quantity), (OrderStatus::PartiallyFilled, dec("3")));
        assert_eq!(seen.1, answered[1], "the read shows the order as it was answered");
        assert_eq!(seen.2, [("AAPL".into(), dec("3"), dec("0")), ("USD".into(), dec("700"), dec("0"))]);
        assert_eq!(seen.3, [("AAPL".into(), dec("7"), dec("2")), ("USD".into(), dec("300"), dec("0"))]);
        assert_eq!(seen.4, (vec![], vec![(dec("100"), dec("2"))]));
        assert!(lane.pending(), "reads alone do not flush");

        // Stopped as by a crash: the journal's redo shows the same again.
        drop(lane);
        let mut lane = Lane::open(&ctx, None).unwrap();
        let again =
            (get(&mut lane, "ord_s"), get(&mut lane, "ord_b"), account(&mut lane, "alice"), account(&mut lane, "bob"), book(&mut lane));
        assert_eq!(again, seen);

        // A read in the same batch as a change waits for the change's flush, as before.
        let (reply, _deposited) = oneshot::channel();
        let deposit = risk::Cmd::Deposit { user_id: "alice".into(), asset: "USD".into(), amount: dec("1"), grid: 0, reply };
        let (reply, rx) = oneshot::channel();
        let o = NewOrder { price: Some(dec("100")), ..order("ord_b2", "alice", Side::Buy, dec("1"), None) };
        lane.run(Work { places: vec![Placement { order: o, user_active: true, instrument: aapl(), reply }], ..Default::default() })
            .unwrap();
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
            [
                order(&format!("ord_s{i}"), "bob", Side::Sell, dec("1"), None),
                order(&format!("ord_b{i}"), "alice", Side::Buy, dec("1"), None),
            ]
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
}

#[cfg(test)]
mod redo_proptest {
    //! Whatever mix of placements, cancels, amends and cancel-alls the lane answered, a
    //! crash before its flush and the redo from the journal leave every order, account
    //! and book as the lane had them, and money and assets are conserved.
    use super::tests::{aapl, account, book, funded, get, order, priced};
    use super::*;
    use crate::api::Side;
    use proptest::prelude::*;
    use tokio::sync::oneshot;

    #[derive(Debug, Clone)]
    enum Op {
        Place { user: usize, buy: bool, price: u8, qty: u8 },
        Cancel { pick: usize },
        Amend { pick: usize, price: Option<u8>, qty: Option<u8> },
        CancelAll { user: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..3usize, any::<bool>(), 96..=104u8, 1..=6u8).prop_map(|(user, buy, price, qty)| Op::Place { user, buy, price, qty }),
            2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
            2 => (any::<usize>(), proptest::option::of(96..=104u8), proptest::option::of(1..=8u8))
                .prop_map(|(pick, price, qty)| Op::Amend { pick, price, qty }),
            1 => (0..3usize).prop_map(|user| Op::CancelAll { user }),
        ]
    }

    const USERS: [&str; 3] = ["u0", "u1", "u2"];

    /// Every order, account and the book, as the lane has them.
    type Seen = (Vec<Order>, Vec<Vec<(String, Decimal, Decimal)>>, (Vec<(Decimal, Decimal)>, Vec<(Decimal, Decimal)>));

    fn seen(lane: &mut Lane, ids: &[String]) -> Seen {
        let orders = ids.iter().map(|id| get(lane, id)).collect();
        (orders, USERS.iter().map(|u| account(lane, u)).collect(), book(lane))
    }

    fn session(batches: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let deposits: Vec<(&str, &str, &str)> = USERS.iter().flat_map(|u| [(*u, "USD", "100000"), (*u, "AAPL", "1000")]).collect();
        let (mut lane, ctx, bus) = funded(&dir, &deposits);
        let mut ids: Vec<String> = Vec::new();
        for ops in batches {
            let mut work = Work::default();
            for op in ops {
                match op {
                    Op::Place { user, buy, price, qty } => {
                        let id = format!("ord_{:04}", ids.len());
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let o = priced(&price.to_string(), order(&id, USERS[user], side, Decimal::from(qty), None));
                        let (reply, _) = oneshot::channel();
                        work.places.push(Placement { order: o, user_active: true, instrument: aapl(), reply });
                        ids.push(id);
                    }
                    Op::Cancel { pick } if !ids.is_empty() => {
                        let (reply, _) = oneshot::channel();
                        work.cancels.push(Cancel::One { order_id: ids[pick % ids.len()].clone(), owner: None, reply });
                    }
                    Op::Amend { pick, price, qty } if !ids.is_empty() => {
                        let (reply, _) = oneshot::channel();
                        let (price, quantity) = (price.map(Decimal::from), qty.map(Decimal::from));
                        let order_id = ids[pick % ids.len()].clone();
                        work.amends.push(Amend {
                            order_id,
                            owner: None,
                            price: price.or(quantity.is_none().then(|| dec("100"))),
                            quantity,
                            reply,
                        });
                    }
                    Op::CancelAll { user } => {
                        let (reply, _) = oneshot::channel();
                        work.cancels.push(Cancel::Many { user_id: Some(USERS[user].into()), symbol: None, reply });
                    }
                    Op::Cancel { .. } | Op::Amend { .. } => {}
                }
            }
            lane.run(work).unwrap();
        }
        while lane.cancelling_many() {
            lane.run(Work::default()).unwrap();
        }
        let live = seen(&mut lane, &ids);
        // Stopped as by a crash: what the last flush did not commit is redone.
        drop(lane);
        let mut lane = Lane::open(&ctx, None).unwrap();
        let redone = seen(&mut lane, &ids);
        prop_assert_eq!(&redone.0, &live.0, "orders");
        prop_assert_eq!(&redone.1, &live.1, "accounts");
        prop_assert_eq!(&redone.2, &live.2, "book");
        for asset in ["USD", "AAPL"] {
            let total: Decimal = redone.1.iter().flatten().filter(|(a, _, _)| a == asset).map(|(_, t, _)| *t).sum();
            prop_assert_eq!(total, if asset == "USD" { dec("300000") } else { dec("3000") }, "{} conserved", asset);
        }
        drop(lane);
        bus.shutdown();
        Ok(())
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn a_crash_redoes_placements_cancels_and_amends_as_answered(
            batches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..12)
        ) {
            session(batches)?;
        }
    }
}
