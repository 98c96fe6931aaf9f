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
//! intake record it holds (`flush.rs`). It happens [`FLUSH_AFTER`](flush::FLUSH_AFTER)
//! after the first unflushed placement (also when the lane is idle;
//! [`FLUSH_AFTER_BUSY`](flush::FLUSH_AFTER_BUSY) when placements come faster than
//! [`BUSY_AT`](flush::BUSY_AT) in that time), after [`FLUSH_AT`](flush::FLUSH_AT)
//! placements, before a command that changes any of the three, and on stop. When it is
//! due by time or count it goes one store at a time ([`Lane::flush_step`]), taking the
//! commands that came between two commits, so that an order arriving meanwhile waits for
//! one commit, not three. So under load, and for a closed-loop client, the three commit
//! every few milliseconds for many placements instead of once or twice each. Events
//! reach the bus at the flush, as each store commits. Reads of orders, accounts, holds
//! and books see the open transactions (phase 0); `/api/events` and the market routes,
//! which read what the bus has, first wait for the lane's next flush
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
//!
//! Where the rest is: `flush.rs` (the flush and orders' deferred records), `cancel.rs`
//! (cancels, cancel-alls, amends), `recover.rs` (the redo at start), `tests.rs` and
//! `redo_proptest.rs`.

use crate::api::{ApiError, Instrument, Order, OrderType, Side};
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

mod cancel;
mod flush;
mod recover;
#[cfg(test)]
mod redo_proptest;
#[cfg(test)]
mod tests;

use cancel::MassCancel;
pub use cancel::{Amend, Cancel};
use flush::{Deferred, SplitFault, PRUNE_EVERY};

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

    /// Runs a drain of the mailbox. A market buy holds all its user's available USD
    /// until phase 3 settles it (its budget: the book may ask more than the last price
    /// says), so a buy of the same user after it in one batch would find none available
    /// and be refused, though the user could pay for both in either order. Such a buy
    /// starts a batch of its own, run once the one before has settled (another journal
    /// append, for a case that is rare); every placement is still decided in mailbox
    /// order, and a redo goes through the records in the same order.
    fn run(&mut self, mut work: Work) -> Result<(), ServiceError> {
        let later = after_market_buys(&mut work.places);
        self.run_batch(work)?;
        for places in later {
            self.run_batch(Work { places, ..Default::default() })?;
        }
        Ok(())
    }

    fn run_batch(&mut self, work: Work) -> Result<(), ServiceError> {
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
        // long ([`MASS_CHUNK`](cancel::MASS_CHUNK)).
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

/// Cuts `places` before each buy whose user has a market buy earlier in the same part
/// (see [`Lane::run`]): leaves the first part in `places` and answers the others, in
/// order. A drain without a market buy is left whole.
fn after_market_buys(places: &mut Vec<Placement>) -> Vec<Vec<Placement>> {
    let market_buy = |o: &NewOrder| o.side == Side::Buy && o.kind == OrderType::Market;
    if !places.iter().any(|p| market_buy(&p.order)) {
        return Vec::new();
    }
    let mut parts: Vec<Vec<Placement>> = vec![Vec::with_capacity(places.len())];
    // The users with a market buy in the last part: few, so a list.
    let mut buyers: Vec<String> = Vec::new();
    for p in places.drain(..) {
        if p.order.side == Side::Buy && buyers.contains(&p.order.user_id) {
            parts.push(Vec::new());
            buyers.clear();
        }
        if market_buy(&p.order) {
            buyers.push(p.order.user_id.clone());
        }
        parts.last_mut().expect("parts starts with one").push(p);
    }
    *places = parts.remove(0);
    parts
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
