//! The actor shape every service shares (DESIGN.md §2).
//!
//! A service is a [`Service`]: state plus a SQLite store, driven by one dedicated thread
//! that drains its mailbox in batches and handles each batch inside one transaction.
//! Replies and events wait in an [`AfterCommit`] until that transaction has committed,
//! so a caller never hears of anything that a crash could take back.
//!
//! Events are written to the store's `outbox` table inside that same transaction and
//! handed to the bus after commit; the bus confirms, and the next batch deletes them from
//! the outbox. A crash in between leaves them in the outbox, and the next incarnation
//! hands them to the bus again (which stores each event id once): an event is never lost
//! once the change it announces is committed.
//!
//! Callers hold a [`Handle`]: `call` refuses at once with 503 `service_unavailable` while
//! the service is not running, so a request never hangs on a restarting service.

use crate::api::ApiError;
use crate::services::bus::{Bus, NewEvent};
use crate::services::spin::AnswerWait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How many commands one transaction takes at most.
pub const MAX_BATCH: usize = 512;

/// Confirmed outbox rows are deleted once this many have gathered. A row holds a
/// commit's events (tens of KB under load), and the file keeps the pages of what the
/// table once held: at 256 rows `orders.db` was twice its size after 30 k orders.
const OUTBOX_DELETE_EVERY: usize = 16;

/// ... or once they hold this many bytes: one commit of a mass cancel holds thousands of
/// events, and a row left behind is re-sent at the next start.
const OUTBOX_DELETE_BYTES: usize = 1 << 20;

/// A store that has written no event for this long deletes every confirmed outbox row
/// ([`Unit::tidy`]): an idle store kept up to [`OUTBOX_DELETE_EVERY`] rows, re-sent at
/// every start (after `agt bench`'s clean-up, 170 k events and 46 MB, the whole of the
/// daemon's peak memory at its next start).
pub const TIDY_AFTER: Duration = Duration::from_secs(1);

/// The reply channel of one command.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A failure that ends a service's incarnation: the supervisor restarts it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] crate::services::store::StoreError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
}

/// One service: its name, its commands, its store schema and how it handles a batch.
pub trait Service: Sized + Send + 'static {
    type Cmd: Send + 'static;
    /// The service's name, which is also its store's file name (`data/<NAME>.db`).
    const NAME: &'static str;
    /// `MIGRATIONS[i]` takes the store from schema version `i` to `i + 1`.
    const MIGRATIONS: &'static [&'static str];
    /// How often [`Service::tick`] runs while the mailbox is idle; `None` for never.
    const TICK: Option<Duration> = None;

    /// Rebuilds the in-memory state from the store (on start and on every restart).
    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError>;

    /// Handles one command inside the batch's transaction. Replies go through `after`;
    /// an `Err` aborts the whole batch (its callers get 503) and restarts the service.
    fn handle(&mut self, tx: &rusqlite::Connection, cmd: Self::Cmd, after: &mut AfterCommit) -> Result<(), ServiceError>;

    /// Writes what the batch's commands left in memory, once per batch after the last
    /// command (risk flushes its ledger here: a balance touched by many orders of one
    /// batch is written once).
    fn before_commit(&mut self, _tx: &rusqlite::Connection) -> Result<(), ServiceError> {
        Ok(())
    }

    /// Runs once the batch's transaction has committed and its replies have gone: work
    /// that must follow the commit, and that no answer waits for (audit anchors its
    /// chain's end outside its store here: written before the commit, a crash in between
    /// would leave the anchor ahead of the store). The batch has committed, so this
    /// cannot fail it.
    fn after_commit(&mut self) {}

    /// Runs when the batch's transaction was rolled back (a command failed, or the
    /// commit did: a full disk), before the incarnation ends: its callers are told it
    /// failed, so what the batch did outside the store is undone here (the config
    /// service puts `agt.toml` back as it was).
    fn rolled_back(&mut self) {}

    /// How long a batch that holds only [`Service::deferrable`] commands sleeps before it
    /// takes what has queued meanwhile and commits; `None` for not at all. At several
    /// events per order a follower of the bus (audit, notify) was woken for nearly every
    /// message, and at light load committed every handful of them. Sleeping a few
    /// milliseconds instead means one wake-up and one commit for many orders (what it
    /// saves: BENCHMARKS.md, session 10). Nothing is lost meanwhile (the bus, or audit's
    /// journal of commands, still holds it); a command someone waits for that arrives
    /// during the sleep waits at most this long.
    fn linger(&self) -> Option<Duration> {
        None
    }

    /// Whether nobody waits for this command's outcome, so that its batch may linger
    /// ([`Service::linger`]).
    fn deferrable(_cmd: &Self::Cmd) -> bool {
        false
    }

    /// Whether nobody's answer waits for this service's work (under `durability`), so
    /// that its thread, and its store's checkpointer, may run at a lower CPU priority
    /// than the order path (`services::priority`).
    fn background(_durability: crate::services::store::Durability) -> bool {
        false
    }

    /// How soon [`Service::tick`] is due where that is sooner than [`Service::TICK`]
    /// after the last (the config service's second read of a file it found changing);
    /// `None` for at the usual time. Only for a service with a `TICK`.
    fn tick_due(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (retries, expiry), in its own transaction.
    fn tick(&mut self, _tx: &rusqlite::Connection, _after: &mut AfterCommit) -> Result<(), ServiceError> {
        Ok(())
    }
}

/// What every incarnation of a service is given.
#[derive(Clone)]
pub struct ServiceCtx {
    pub home: crate::daemon::Home,
    pub durability: crate::services::store::Durability,
    pub bus: Bus,
    pub settings: crate::services::config::SharedSettings,
    /// The users service's read model (written only by that service).
    pub directory: crate::services::users::Directory,
    /// The auth service's read model (written only by that service).
    pub tokens: crate::services::auth::Tokens,
    /// Audit's journal of commands (installed by the audit service, appended to by the
    /// HTTP layer).
    pub command_log: crate::services::audit::CommandLog,
    /// The event types notify's run-time rules name (written only by notify; its feed
    /// skips the rest).
    pub notify_interest: crate::services::notify::Interest,
    /// Notify's delivery timing, read from the environment once, at start, where a bad
    /// value stops the daemon.
    pub notify_tuning: crate::services::notify::Tuning,
    /// The market's read model of its instruments (written only by market; config
    /// reads it).
    pub instruments: crate::services::market::Listed,
}

#[cfg(test)]
impl ServiceCtx {
    /// A context on a home in `dir`, with defaults everywhere, and its bus (for tests).
    pub(crate) fn for_tests(dir: &std::path::Path) -> (Bus, ServiceCtx) {
        let home = crate::daemon::Home::at(dir);
        let bus = Bus::open(&home, Default::default()).unwrap();
        let settings = crate::services::config::SharedSettings::new(Default::default());
        let ctx = ServiceCtx {
            home,
            durability: Default::default(),
            bus: bus.clone(),
            settings,
            directory: Default::default(),
            tokens: Default::default(),
            command_log: Default::default(),
            notify_interest: Default::default(),
            notify_tuning: Default::default(),
            instruments: Default::default(),
        };
        (bus, ctx)
    }
}

/// Replies and events held until the batch's transaction commits.
pub struct AfterCommit {
    source: &'static str,
    replies: Vec<Box<dyn FnOnce() + Send>>,
    events: Vec<NewEvent>,
}

impl AfterCommit {
    pub fn new(source: &'static str) -> Self {
        AfterCommit { source, replies: Vec::new(), events: Vec::new() }
    }
    /// Answers `reply` with `result` once the batch has committed.
    pub fn reply<T: Send + 'static>(&mut self, reply: Reply<T>, result: Result<T, ApiError>) {
        self.replies.push(Box::new(move || {
            let _ = reply.send(result);
        }));
    }
    /// Runs `f` once the batch has committed, in order with the replies (a read model
    /// updated here is current before the reply that follows it leaves).
    pub fn then(&mut self, f: impl FnOnce() + Send + 'static) {
        self.replies.push(Box::new(f));
    }
    /// Publishes an event once the batch has committed.
    pub fn event(&mut self, kind: &'static str, data: serde_json::Value) {
        self.events.push(NewEvent::new(kind, self.source, data));
    }
    /// [`AfterCommit::event`] with `data` encoded straight to JSON text (no
    /// `serde_json::Value` built): for the events of the order path.
    pub fn event_of(&mut self, kind: &'static str, data: &impl serde::Serialize) {
        self.events.push(NewEvent::encoded(kind, self.source, data));
    }
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.events.is_empty()
    }
    /// The events held so far, as (type, data text): for tests of what a step announces.
    #[cfg(test)]
    pub fn event_texts(&self) -> Vec<(&'static str, &str)> {
        self.events.iter().map(|e| (e.kind, e.text.as_str())).collect()
    }
    /// Sends the replies held so far, as a commit would: for tests that drive a service
    /// by hand and read its answers.
    #[cfg(test)]
    pub fn send_replies(self) {
        for r in self.replies {
            r();
        }
    }
    /// Writes the batch's events into the outbox (inside the batch's transaction), as one
    /// row: a row per event was a b-tree insert per event on the order path (~5 per order).
    /// Gives the row's id and size.
    fn stage(&self, tx: &rusqlite::Connection) -> rusqlite::Result<Option<(i64, usize)>> {
        if self.events.is_empty() {
            return Ok(None);
        }
        let text = outbox_text(&self.events);
        tx.prepare_cached("INSERT INTO outbox_batches (events) VALUES (?1)")?.execute([&text])?;
        Ok(Some((tx.last_insert_rowid(), text.len())))
    }
    /// After commit: the events to the bus first (so a reader who syncs with the bus after
    /// our reply sees them); gives back the replies to run.
    fn publish(self, outbox_upto: Option<(i64, &Arc<AtomicI64>)>, bus: &Bus) -> Vec<Box<dyn FnOnce() + Send>> {
        if !self.events.is_empty() {
            match outbox_upto {
                Some((id, acked)) => {
                    let acked = acked.clone();
                    let then: crate::services::bus::Committed = Box::new(move || {
                        acked.fetch_max(id, Ordering::AcqRel);
                    });
                    bus.publish_outbox(self.source, id, self.events, vec![then]);
                }
                None => bus.publish_then(self.events, Vec::new()),
            }
        }
        self.replies
    }
}

/// Writes `events` into the outbox of the store `conn` as one row, inside the caller's
/// open transaction, for a service whose `load` itself decides and records something to
/// announce (config's changes made while the daemon was stopped). [`Unit::open`] re-sends
/// the row right after `load`, like one a crash left. Handed straight to the bus instead,
/// the events were lost to a SIGKILL between the transaction's commit and the bus's, and
/// the record they announce said the next start had nothing to announce. The row is
/// numbered past the bus's mark for `source`, which drops a row at or below it as a re-send
/// (a store restored from a backup numbers from an older id: [`Unit::resend`]).
pub(crate) fn stage_at_load(tx: &rusqlite::Connection, bus: &Bus, source: &'static str, events: &[NewEvent]) -> Result<(), ServiceError> {
    if events.is_empty() {
        return Ok(());
    }
    let newest: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM outbox_batches", [], |r| r.get(0))?;
    let id = newest.max(bus.outbox_mark(source)?.unwrap_or(0)) + 1;
    tx.prepare_cached("INSERT INTO outbox_batches (id, events) VALUES (?1, ?2)")?.execute(rusqlite::params![id, outbox_text(events)])?;
    Ok(())
}

/// The outbox row of a batch of events: a line per event, `event_id kind data`. Neither
/// an id (a uuid) nor a kind (one of `EVENT_TYPES`) holds a space, and compact JSON holds
/// no raw line break (serde escapes one inside a string), so the text needs no escaping.
pub(crate) fn outbox_text(events: &[NewEvent]) -> String {
    let mut out = String::with_capacity(events.iter().map(|e| e.event_id.len() + e.kind.len() + e.text.len() + 3).sum());
    for (i, e) in events.iter().enumerate() {
        debug_assert!(!e.event_id.contains([' ', '\n']) && !e.text.contains('\n'), "an event the outbox line format cannot hold");
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&e.event_id);
        out.push(' ');
        out.push_str(e.kind);
        out.push(' ');
        out.push_str(&e.text);
    }
    out
}

/// The events of an outbox row ([`outbox_text`]). A line of an unknown type is left out;
/// data that is not JSON becomes `null` (the bus stores whatever it is given).
pub(crate) fn outbox_events(text: &str, source: &'static str) -> Vec<NewEvent> {
    text.split('\n')
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (event_id, kind, data) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
            let kind = crate::services::bus::EVENT_TYPES.iter().find(|k| **k == kind)?;
            let text = match serde_json::from_str::<serde::de::IgnoredAny>(data) {
                Ok(_) => data.to_string(),
                Err(_) => "null".to_string(),
            };
            Some(NewEvent { event_id: event_id.to_string(), kind, source, text, value: None })
        })
        .collect()
}

/// Hands events left in the outbox (by a crash, or not deleted yet) to the bus again;
/// gives back the rows it re-sent, (id, bytes), for [`Unit`] to delete once confirmed.
fn replay_outbox(
    conn: &rusqlite::Connection,
    source: &'static str,
    bus: &Bus,
    acked: &Arc<AtomicI64>,
) -> Result<VecDeque<(i64, usize)>, ServiceError> {
    // A blanked row (the newest, kept for its id) holds nothing to send.
    let mut stmt = conn.prepare("SELECT id, events FROM outbox_batches WHERE events <> '' ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
    let Some(last) = rows.last().map(|r| r.0) else { return Ok(VecDeque::new()) };
    tracing::info!(service = source, upto = last, "re-sending events left in the outbox");
    // A row at a time, under its id: the bus drops a row it has stored already.
    for (id, text) in &rows {
        let (acked, id) = (acked.clone(), *id);
        let then: crate::services::bus::Committed = Box::new(move || {
            acked.fetch_max(id, Ordering::AcqRel);
        });
        bus.publish_outbox(source, id, outbox_events(text, source), vec![then]);
    }
    Ok(rows.iter().map(|(id, text)| (*id, text.len())).collect())
}

/// Supervisor orders delivered through the mailbox, behind the commands already queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Finish the queued work, close the store and start again.
    Restart,
    /// Panic (fault injection): the supervisor restarts with backoff.
    Crash,
    /// Finish the queued work, close the store and end.
    Stop,
}

pub enum Envelope<C> {
    Cmd(C),
    Control(Control),
}

impl<C> Envelope<C> {
    fn is_crash(&self) -> bool {
        matches!(self, Envelope::Control(Control::Crash))
    }
}

/// Adds to `batch` what has queued in `rx`, in order, until the batch is full or holds
/// a crash (fault injection). A crash takes the rest of its batch down with it, so what
/// queued after it stays in the mailbox, which outlives the incarnation: each accepted
/// crash is one crash, and the commands behind it are run by the next incarnation. A
/// second crash drained into the first's batch was lost (two 202s, one restart: a chaos
/// round waited for a crash that never came), and so was every command behind it.
pub fn take_queued<C>(rx: &mpsc::Receiver<Envelope<C>>, batch: &mut Vec<Envelope<C>>) {
    while batch.len() < MAX_BATCH && !batch.last().is_some_and(Envelope::is_crash) {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            // A disconnected mailbox is seen (and ends the incarnation) at the next recv.
            Err(_) => return,
        }
    }
}

/// The lifecycle state of a service, as `GET /api/services` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Starting = 0,
    Running = 1,
    Restarting = 2,
    Failed = 3,
    Stopped = 4,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Running,
            2 => State::Restarting,
            3 => State::Failed,
            _ => State::Stopped,
        }
    }
}

/// Shared between a service's thread, its handles and the supervisor.
pub struct Status {
    pub name: &'static str,
    state: AtomicU8,
    pub restarts: AtomicU32,
    /// Commands sent but not yet taken by the service (the `agt_mailbox_depth` gauge).
    pub depth: AtomicI64,
    pub started_at: Mutex<Option<(Instant, String)>>,
    pub last_error: Mutex<Option<String>>,
    /// Wakes whoever waits for the service to run ([`Status::until_running`]).
    running: tokio::sync::Notify,
}

impl Status {
    pub fn new(name: &'static str) -> Status {
        Status {
            name,
            state: AtomicU8::new(State::Starting as u8),
            restarts: AtomicU32::new(0),
            depth: AtomicI64::new(0),
            started_at: Mutex::new(None),
            last_error: Mutex::new(None),
            running: tokio::sync::Notify::new(),
        }
    }
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The 503 for a call the service cannot take. A failed service is not restarted by
    /// the supervisor any more, so "retry shortly" would send the caller round in
    /// circles: it says how to start it again instead.
    pub fn unavailable(&self) -> ApiError {
        if crate::services::disk_full::now() {
            return ApiError::new(503, "service_unavailable", crate::services::disk_full::message(self.name));
        }
        if self.state() != State::Failed {
            return ApiError::unavailable(self.name);
        }
        let name = self.name;
        ApiError::new(
            503,
            "service_unavailable",
            format!("the {name} service has failed (it crashed too often and is not restarted by itself); `agt service restart {name}` starts it again"),
        )
    }
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
        if s == State::Running {
            *self.started_at.lock().unwrap() = Some((Instant::now(), crate::api::now_rfc3339()));
            self.running.notify_waiters();
        }
    }

    /// Returns once the service is running: at once if it is, else when it next starts
    /// (a caller at start-up that polled every 50 ms made every cold start ~50 ms late).
    pub async fn until_running(&self) {
        loop {
            let started = self.running.notified();
            tokio::pin!(started);
            // Registered before the state is read, so a start in between still wakes it.
            started.as_mut().enable();
            if self.state() == State::Running {
                return;
            }
            started.await;
        }
    }
}

/// A caller's end of a service's mailbox. Cheap to clone.
pub struct Handle<C> {
    /// Puts an envelope in the mailbox of the thread that runs the service (its own, or
    /// the lane it shares); false once that thread is gone.
    tx: Arc<dyn Fn(Envelope<C>) -> bool + Send + Sync>,
    pub status: Arc<Status>,
    /// How [`Handle::call`] waits for the answer: asleep, or first awake for a moment
    /// (the trading lane's handles; `services::spin`).
    answer_wait: Option<Arc<AnswerWait>>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle { tx: self.tx.clone(), status: self.status.clone(), answer_wait: self.answer_wait.clone() }
    }
}

impl<C: Send + 'static> Handle<C> {
    pub fn new(tx: mpsc::Sender<Envelope<C>>, status: Arc<Status>) -> Self {
        Handle { tx: Arc::new(move |e| tx.send(e).is_ok()), status, answer_wait: None }
    }

    /// A handle whose envelopes go through `send` (a service that shares a thread).
    pub fn routed(send: impl Fn(Envelope<C>) -> bool + Send + Sync + 'static, status: Arc<Status>) -> Self {
        Handle { tx: Arc::new(send), status, answer_wait: None }
    }

    /// The same handle, waiting for its answers through `wait`.
    pub fn waiting_with(mut self, wait: Arc<AnswerWait>) -> Self {
        self.answer_wait = Some(wait);
        self
    }

    /// Sends a command built around a reply channel and waits for the committed answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> C) -> Result<T, ApiError> {
        let rx = self.send(make)?;
        let answer = match &self.answer_wait {
            Some(w) => w.wait(rx).await,
            None => rx.await.ok(),
        };
        answer.unwrap_or_else(|| Err(self.status.unavailable()))
    }

    /// Sends without waiting; the receiver yields the answer.
    pub fn send<T>(&self, make: impl FnOnce(Reply<T>) -> C) -> Result<oneshot::Receiver<Result<T, ApiError>>, ApiError> {
        if self.status.state() != State::Running {
            return Err(self.status.unavailable());
        }
        let (reply, rx) = oneshot::channel();
        self.status.depth.fetch_add(1, Ordering::Relaxed);
        if !(self.tx)(Envelope::Cmd(make(reply))) {
            self.status.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(self.status.unavailable());
        }
        Ok(rx)
    }

    /// Sends a command whose answer nobody waits for (event feeds).
    pub fn tell(&self, cmd: C) -> bool {
        self.status.depth.fetch_add(1, Ordering::Relaxed);
        (self.tx)(Envelope::Cmd(cmd))
    }

    pub fn control(&self, c: Control) -> bool {
        (self.tx)(Envelope::Control(c))
    }
}

/// Why an incarnation ended.
pub enum Exit {
    /// Restart requested (`agt service restart`): restart now, no backoff.
    Restart,
    /// Stop requested, or every handle is gone.
    Stop,
}

/// One service's state and store as a thread drives it: the mailbox loop of
/// [`run_incarnation`] runs one, the trading lane (`services::lane`) runs three.
///
/// Work goes into the store's open transaction ([`Unit::work`]) and becomes true, answered
/// and published only at [`Unit::commit`]. Most callers do both at once ([`Unit::batch`]);
/// the lane keeps a transaction open across two of its phases so that one commit carries
/// the end of one batch and the start of the next.
pub struct Unit<S: Service> {
    pub svc: S,
    conn: rusqlite::Connection,
    /// The outbox rows the bus has confirmed (deleted in bulk, see `OUTBOX_DELETE_EVERY`).
    acked: Arc<AtomicI64>,
    /// The outbox rows written (or re-sent) and not deleted yet, oldest first: (id, bytes).
    outbox: VecDeque<(i64, usize)>,
    /// When the last outbox row was written: [`Unit::tidy`] waits for [`TIDY_AFTER`].
    staged_at: Instant,
    checkpointer: crate::services::store::CheckpointGuard,
    /// The transaction work has gone into and that has not committed yet.
    open: Option<Pending>,
}

/// An open transaction: what to release when it commits, and the time spent in it.
struct Pending {
    after: AfterCommit,
    busy: Duration,
}

impl<S: Service> Unit<S> {
    /// Opens the store, loads the state and re-sends events a crash left in the outbox.
    pub fn open(ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let mut unit = Unit::load(ctx)?;
        unit.resend(ctx)?;
        Ok(unit)
    }

    /// Opens the store and loads the state, without touching the bus: several units can
    /// load side by side (the lane's three), then [`Unit::resend`] one after another.
    pub fn load(ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let path = ctx.home.store(S::NAME);
        let conn = crate::services::store::open(&path, ctx.durability, S::MIGRATIONS)?;
        let checkpointer = crate::services::store::spawn_checkpointer(&path, Duration::from_millis(50), ctx.bus.load());
        let svc = S::load(&conn, ctx)?;
        let acked = Arc::new(AtomicI64::new(0));
        Ok(Unit { svc, conn, acked, outbox: VecDeque::new(), staged_at: Instant::now(), checkpointer, open: None })
    }

    /// Re-sends the events a crash left in the outbox, and makes sure the outbox's next
    /// ids pass what the bus has stored for this service: the bus drops a row whose id is
    /// at or below its mark (a re-send). A store replaced or restored from a backup
    /// numbers its outbox from an older id, and its new events would be dropped unseen.
    pub fn resend(&mut self, ctx: &ServiceCtx) -> Result<(), ServiceError> {
        self.outbox = replay_outbox(&self.conn, S::NAME, &ctx.bus, &self.acked)?;
        let Some(mark) = ctx.bus.outbox_mark(S::NAME)? else { return Ok(()) };
        let newest: i64 = self.conn.query_row("SELECT coalesce(max(id), 0) FROM outbox_batches", [], |r| r.get(0))?;
        if newest < mark {
            tracing::warn!(
                service = S::NAME,
                outbox = newest,
                bus = mark,
                "the store's outbox is behind what the event bus stored from it (was the store replaced or restored?); its next events are numbered past the bus's mark"
            );
            // An empty row: nothing to send, only the id (the newest row is always kept).
            self.conn.execute("INSERT INTO outbox_batches (id, events) VALUES (?1, '')", [mark])?;
        }
        Ok(())
    }

    /// Runs `work` inside the open transaction (beginning one if none is open). Its
    /// replies and events wait for [`Unit::commit`]. If `work` fails, the whole open
    /// transaction is rolled back and its replies dropped (callers see the service fail).
    pub fn work<R>(
        &mut self,
        work: impl FnOnce(&mut S, &rusqlite::Connection, &mut AfterCommit) -> Result<R, ServiceError>,
    ) -> Result<R, ServiceError> {
        let started = Instant::now();
        if self.open.is_none() {
            // IMMEDIATE: the service is its store's only writer, so this costs nothing,
            // but a deferred transaction that reads before it writes fails at once (no
            // busy wait) if anything else holds the write lock — `sqlite3` opened on the
            // store by an operator, a backup tool — and the service restarts, five times
            // in a few seconds and it is marked failed.
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            self.open = Some(Pending { after: AfterCommit::new(S::NAME), busy: Duration::ZERO });
            // Confirmed outbox rows go in bulk: deleting them every batch wrote a page per
            // commit; left a while longer they are only re-sent (and ignored by the bus)
            // after a crash.
            if let Err(e) = self.delete_confirmed(OUTBOX_DELETE_EVERY, OUTBOX_DELETE_BYTES) {
                self.rollback();
                return Err(e.into());
            }
        }
        let pending = self.open.as_mut().expect("a transaction is open");
        let out = work(&mut self.svc, &self.conn, &mut pending.after);
        pending.busy += started.elapsed();
        if out.is_err() {
            self.rollback();
        }
        out
    }

    /// Deletes, in the open transaction, the outbox rows the bus has confirmed, if there
    /// are at least `rows` of them or `bytes` in them. The newest row keeps its id, its
    /// events blanked: outbox ids are rowids, and an emptied table would number its next
    /// row 1 again, below what the bus has confirmed (`acked` only rises), so the next
    /// bulk delete would take rows the bus had not stored yet, and rows below the old
    /// number were never deleted (72 k of them after 1 M orders, all re-sent at every
    /// start).
    fn delete_confirmed(&mut self, rows: usize, bytes: usize) -> rusqlite::Result<()> {
        let acked = self.acked.load(Ordering::Acquire);
        let (mut n, mut size) = (0, 0);
        for (id, b) in &self.outbox {
            if *id > acked {
                break;
            }
            (n, size) = (n + 1, size + b);
        }
        if n == 0 || (n < rows && size < bytes) {
            return Ok(());
        }
        let delete = "DELETE FROM outbox_batches WHERE id <= ?1 AND id < (SELECT max(id) FROM outbox_batches)";
        self.conn.prepare_cached(delete)?.execute([acked])?;
        let blank = "UPDATE outbox_batches SET events = '' WHERE id = (SELECT max(id) FROM outbox_batches) AND id <= ?1 AND events <> ''";
        self.conn.prepare_cached(blank)?.execute([acked])?;
        self.outbox.drain(..n);
        Ok(())
    }

    /// Whether outbox rows wait to be deleted: the service's loop then wakes after
    /// [`TIDY_AFTER`] without a command, to call [`Unit::tidy`].
    pub fn outbox_waiting(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Deletes every outbox row the bus has confirmed, in a transaction of its own, once
    /// the store has written no event for [`TIDY_AFTER`] (an idle store).
    pub fn tidy(&mut self) -> Result<(), ServiceError> {
        if self.open.is_some() || self.outbox.is_empty() || self.staged_at.elapsed() < TIDY_AFTER {
            return Ok(());
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let done = self.delete_confirmed(1, 0).and_then(|()| self.conn.prepare_cached("COMMIT")?.execute([]).map(drop));
        if let Err(e) = done {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(())
    }

    /// Commits the open transaction (if any), then hands its events to the bus and sends
    /// its replies, in the order they were made.
    pub fn commit(&mut self, bus: &Bus) -> Result<(), ServiceError> {
        let Some(pending) = self.open.take() else { return Ok(()) };
        let started = Instant::now();
        let committed = (|| -> Result<Option<(i64, usize)>, ServiceError> {
            self.svc.before_commit(&self.conn)?;
            let staged = pending.after.stage(&self.conn)?;
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(staged)
        })();
        let staged = match committed {
            Ok(staged) => staged,
            Err(e) => {
                // Before the batch's replies are dropped: their callers' 503 says why.
                crate::services::disk_full::note(&e.to_string());
                let _ = self.conn.execute_batch("ROLLBACK");
                self.svc.rolled_back();
                return Err(e);
            }
        };
        crate::daemon::metrics::observe_commit(S::NAME, pending.busy + started.elapsed());
        if let Some(row) = staged {
            self.outbox.push_back(row);
            self.staged_at = Instant::now();
        }
        if !pending.after.is_empty() {
            for r in pending.after.publish(staged.map(|(id, _)| (id, &self.acked)), bus) {
                r();
            }
        }
        self.svc.after_commit();
        crate::services::store::bound_wal(&self.conn, &self.checkpointer);
        // Answered; more work waits while the bus is far behind (a bounded backlog).
        bus.wait_for_room();
        Ok(())
    }

    /// Runs `work`, which only reads, on the store as its open transaction sees it (or as
    /// committed, if none is open), and sends its replies at once instead of at the next
    /// commit. The caller vouches that the open transaction holds nothing a crash could
    /// take back: the trading lane's holds only what its intake journal would redo.
    pub fn read(
        &mut self,
        work: impl FnOnce(&mut S, &rusqlite::Connection, &mut AfterCommit) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        let mut after = AfterCommit::new(S::NAME);
        work(&mut self.svc, &self.conn, &mut after)?;
        debug_assert!(after.events.is_empty(), "{}: a read announced an event", S::NAME);
        for r in after.replies {
            r();
        }
        Ok(())
    }

    /// [`Unit::work`] then [`Unit::commit`]: one transaction for one batch.
    pub fn batch<R>(
        &mut self,
        bus: &Bus,
        work: impl FnOnce(&mut S, &rusqlite::Connection, &mut AfterCommit) -> Result<R, ServiceError>,
    ) -> Result<R, ServiceError> {
        let out = self.work(work)?;
        self.commit(bus)?;
        Ok(out)
    }

    /// Whether work is waiting for [`Unit::commit`].
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Drops the open transaction and what waited on it.
    fn rollback(&mut self) {
        if self.open.take().is_some() {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.svc.rolled_back();
        }
    }
}

/// Runs one incarnation of a service: open the store, load, then drain the mailbox until
/// told to stop or restart. A panic or an `Err` ends it; the supervisor decides what next.
pub fn run_incarnation<S: Service>(ctx: &ServiceCtx, rx: &mpsc::Receiver<Envelope<S::Cmd>>, status: &Status) -> Result<Exit, ServiceError> {
    let mut unit = Unit::<S>::open(ctx)?;
    status.set_state(State::Running);
    ctx.bus.publish("SERVICE_STARTED", "health", serde_json::json!({"service": S::NAME}));
    let mut batch: Vec<Envelope<S::Cmd>> = Vec::with_capacity(MAX_BATCH);
    let mut last_tick = Instant::now();
    loop {
        let first = match S::TICK {
            None if unit.outbox_waiting() => match rx.recv_timeout(TIDY_AFTER) {
                Ok(e) => Some(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    unit.tidy()?;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Exit::Stop),
            },
            None => match rx.recv() {
                Ok(e) => Some(e),
                Err(_) => return Ok(Exit::Stop),
            },
            Some(period) => {
                let wait = period.saturating_sub(last_tick.elapsed());
                let wait = unit.svc.tick_due().map_or(wait, |due| due.min(wait));
                match rx.recv_timeout(wait) {
                    Ok(e) => Some(e),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        unit.tidy()?;
                        None
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Exit::Stop),
                }
            }
        };
        batch.extend(first);
        take_queued(rx, &mut batch);
        if let Some(linger) = unit.svc.linger() {
            linger_for_more::<S>(rx, &mut batch, linger);
        }
        let exit = unit.batch(&ctx.bus, |svc, tx, after| {
            let mut exit = None;
            for env in batch.drain(..) {
                match env {
                    Envelope::Cmd(cmd) => {
                        status.depth.fetch_sub(1, Ordering::Relaxed);
                        svc.handle(tx, cmd, after)?;
                    }
                    Envelope::Control(Control::Crash) => {
                        panic!("fault injection: {} was told to crash", S::NAME)
                    }
                    Envelope::Control(Control::Restart) => exit = Some(Exit::Restart),
                    Envelope::Control(Control::Stop) => exit = Some(Exit::Stop),
                }
            }
            if let Some(period) = S::TICK {
                if last_tick.elapsed() >= period || svc.tick_due().is_some_and(|due| due.is_zero()) {
                    last_tick = Instant::now();
                    svc.tick(tx, after)?;
                }
            }
            Ok(exit)
        })?;
        if let Some(e) = exit {
            status.set_state(State::Restarting);
            return Ok(e);
        }
    }
}

/// Whether `e` is a command nobody waits for (a control message is never one).
fn deferrable<S: Service>(e: &Envelope<S::Cmd>) -> bool {
    matches!(e, Envelope::Cmd(c) if S::deferrable(c))
}

/// If a batch holds only deferrable commands, sleeps for `linger`, then adds what has
/// queued meanwhile (up to a full batch). The sleep does not listen to the mailbox: a
/// sender does not wake the thread for each message, which is the point. A full batch
/// does not sleep: there is nothing to wait for, and sleeping capped the service at
/// `MAX_BATCH` messages per `linger` (audit, at ~6 records an order, fell behind from
/// ~17 k orders/s on; BENCHMARKS.md, session 24).
fn linger_for_more<S: Service>(rx: &mpsc::Receiver<Envelope<S::Cmd>>, batch: &mut Vec<Envelope<S::Cmd>>, linger: Duration) {
    if batch.is_empty() || batch.len() >= MAX_BATCH || !batch.iter().all(deferrable::<S>) {
        return;
    }
    std::thread::sleep(linger);
    take_queued(rx, batch);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service whose every command publishes one event.
    struct Emitter;

    impl Service for Emitter {
        type Cmd = ();
        const NAME: &'static str = "emitter";
        const MIGRATIONS: &'static [&'static str] = &[];
        fn load(_: &rusqlite::Connection, _: &ServiceCtx) -> Result<Self, ServiceError> {
            Ok(Emitter)
        }
        fn handle(&mut self, _: &rusqlite::Connection, _: (), after: &mut AfterCommit) -> Result<(), ServiceError> {
            after.event("ORDER_CREATED", serde_json::json!({"order_id": "ord_1"}));
            Ok(())
        }
    }

    /// A caller waiting for a service to run is woken when it starts, not by polling,
    /// through a restart in between; one that asks a running service returns at once.
    #[tokio::test]
    async fn a_wait_for_a_service_to_run_ends_when_it_starts() {
        let status = Arc::new(Status::new("starting"));
        let waiter = tokio::spawn({
            let status = status.clone();
            async move { status.until_running().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the service has not started yet");
        status.set_state(State::Restarting);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "restarting is not running");
        status.set_state(State::Running);
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken when the service runs").unwrap();
        tokio::time::timeout(Duration::from_secs(10), status.until_running()).await.expect("a running service answers at once");
    }

    /// Two crashes queued together are two crashes: the first incarnation's batch ends at
    /// its crash, and what queued behind it (the second crash, then a command) waits in
    /// the mailbox for the next incarnation, which takes the second crash, and the one
    /// after it the command. The second crash was drained into the first's batch and lost
    /// with it.
    #[test]
    fn each_queued_crash_is_a_crash_and_what_queued_behind_it_runs_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ctx(dir.path());
        let status = Status::new(Emitter::NAME);
        let (tx, rx) = mpsc::channel();
        let queued = [
            Envelope::Cmd(()),
            Envelope::Control(Control::Crash),
            Envelope::Control(Control::Crash),
            Envelope::Cmd(()),
            Envelope::Control(Control::Stop),
        ];
        for e in queued {
            tx.send(e).unwrap();
        }
        // With every sender gone, an incarnation that finds the mailbox empty ends.
        drop(tx);
        let incarnation = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_incarnation::<Emitter>(&ctx, &rx, &status)));
        for crash in 1..=2 {
            let panic = incarnation().map(|_| ()).expect_err(&format!("crash {crash} panics"));
            let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(message, "fault injection: emitter was told to crash", "crash {crash}");
        }
        assert!(matches!(incarnation().expect("no third crash"), Ok(Exit::Stop)));
        let created = || bus.read_since(0, Some(&["ORDER_CREATED".to_string()]), 100).unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while created() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(created(), 1, "the command behind the crashes ran; the one in the first crash's batch did not");
    }

    /// `n` commits of one event each; the id of the last one's outbox row.
    fn emit(unit: &mut Unit<Emitter>, bus: &Bus, n: i64) -> i64 {
        for _ in 0..n {
            unit.work(|svc, tx, after| svc.handle(tx, (), after)).unwrap();
            unit.commit(bus).unwrap();
        }
        unit.conn.query_row("SELECT max(id) FROM outbox_batches", [], |r| r.get(0)).unwrap()
    }

    fn ctx(dir: &std::path::Path) -> (Bus, ServiceCtx) {
        ServiceCtx::for_tests(dir)
    }

    #[test]
    fn an_outbox_row_gives_back_each_event_as_it_was_written() {
        let data = [
            serde_json::json!({"note": "two words\nand a line break", "tab": "a\tb", "deep": {"x": [1, "y z"]}}),
            serde_json::json!("ünïcode and a space"),
            serde_json::json!(null),
        ];
        let events: Vec<NewEvent> = data.iter().map(|d| NewEvent::new("ORDER_CREATED", "orders", d.clone())).collect();
        let back = outbox_events(&outbox_text(&events), "orders");
        assert_eq!(back.len(), 3);
        for (a, b) in events.iter().zip(&back) {
            assert_eq!((&a.event_id, a.kind, &a.text), (&b.event_id, b.kind, &b.text));
        }
        assert!(outbox_events("id1 NO_SUCH_TYPE {}", "orders").is_empty(), "an unknown type is left out");
        assert_eq!(outbox_events("id1 ORDER_CREATED {not json", "orders")[0].text, "null");
    }

    /// A store written by a version that kept a row per event: its events reach the bus,
    /// once each and in order, when the service opens it.
    #[test]
    fn an_outbox_of_a_row_per_event_is_resent_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ctx(dir.path());
        {
            let conn = rusqlite::Connection::open(ctx.home.store("emitter")).unwrap();
            conn.execute_batch(
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
                 INSERT INTO outbox VALUES (7, 'e-a', 'ORDER_CREATED', '{\"n\":1}'), (9, 'e-b', 'ORDER_CANCELLED', '{\"n\":\"x y\"}');",
            )
            .unwrap();
        }
        let unit = Unit::<Emitter>::open(&ctx).unwrap();
        confirmed(&unit, 1);
        let stored: Vec<(String, String, String)> = bus
            .read_since(0, None, 10)
            .unwrap()
            .iter()
            .map(|e| (e.event_id.clone(), e.kind.to_string(), e.data_text().to_string()))
            .collect();
        let want = [("e-a", "ORDER_CREATED", r#"{"n":1}"#), ("e-b", "ORDER_CANCELLED", r#"{"n":"x y"}"#)];
        assert_eq!(stored, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
        let legacy: i64 = unit.conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'outbox'", [], |r| r.get(0)).unwrap();
        assert_eq!(legacy, 0, "the old table is gone");
        bus.shutdown();
    }

    /// A service whose `true` commands nobody waits for.
    struct Lingerer;

    impl Service for Lingerer {
        type Cmd = bool;
        const NAME: &'static str = "lingerer";
        const MIGRATIONS: &'static [&'static str] = &[];
        fn load(_: &rusqlite::Connection, _: &ServiceCtx) -> Result<Self, ServiceError> {
            Ok(Lingerer)
        }
        fn linger(&self) -> Option<Duration> {
            Some(Duration::from_millis(100))
        }
        fn deferrable(cmd: &bool) -> bool {
            *cmd
        }
        fn handle(&mut self, _: &rusqlite::Connection, _: bool, _: &mut AfterCommit) -> Result<(), ServiceError> {
            Ok(())
        }
    }

    fn kinds(batch: &[Envelope<bool>]) -> Vec<Option<bool>> {
        batch.iter().map(|e| if let Envelope::Cmd(c) = e { Some(*c) } else { None }).collect()
    }

    /// A batch of deferrable commands sleeps through its linger, then takes everything
    /// that queued meanwhile, in order, a waited-for command and a control included.
    #[test]
    fn a_lingering_batch_takes_what_queued_while_it_slept() {
        let (tx, rx) = mpsc::channel();
        let linger = Lingerer.linger().unwrap();
        let sender = std::thread::spawn(move || {
            for e in [Envelope::Cmd(true), Envelope::Cmd(false), Envelope::Cmd(true), Envelope::Control(Control::Stop)] {
                std::thread::sleep(Duration::from_millis(5));
                tx.send(e).unwrap();
            }
        });
        let started = Instant::now();
        let mut batch = vec![Envelope::Cmd(true)];
        sender.join().unwrap();
        linger_for_more::<Lingerer>(&rx, &mut batch, linger);
        assert!(started.elapsed() >= linger, "it slept the linger through");
        assert_eq!(kinds(&batch), [Some(true), Some(true), Some(false), Some(true), None]);
    }

    /// A batch that holds a command someone waits for, or a control message, does not
    /// linger at all.
    #[test]
    fn a_batch_someone_waits_for_does_not_linger() {
        let (tx, rx) = mpsc::channel();
        for first in [Envelope::Cmd(false), Envelope::Control(Control::Stop)] {
            tx.send(Envelope::Cmd(true)).unwrap();
            let started = Instant::now();
            let mut batch = vec![first];
            linger_for_more::<Lingerer>(&rx, &mut batch, Duration::from_secs(60));
            assert!(started.elapsed() < Duration::from_secs(30), "it did not sleep");
            assert_eq!(batch.len(), 1, "and took nothing more: the loop's own drain does that");
            rx.try_recv().unwrap();
        }
    }

    /// A full batch of deferrable commands does not linger: under load the mailbox
    /// refills faster than a sleep could help, and sleeping would cap the service.
    #[test]
    fn a_full_batch_does_not_linger() {
        let (tx, rx) = mpsc::channel();
        tx.send(Envelope::Cmd(true)).unwrap();
        let started = Instant::now();
        let mut batch: Vec<Envelope<bool>> = (0..MAX_BATCH).map(|_| Envelope::Cmd(true)).collect();
        linger_for_more::<Lingerer>(&rx, &mut batch, Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(30), "it did not sleep");
        assert_eq!(batch.len(), MAX_BATCH);
        rx.try_recv().unwrap();
    }

    /// A store replaced by an empty one (or restored from an older backup) numbers its
    /// outbox from an id the bus has passed: opening it moves the numbering past the bus's
    /// mark, so its new events are stored, not dropped as re-sent.
    #[test]
    fn a_replaced_store_numbers_its_outbox_past_what_the_bus_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ctx(dir.path());
        let mut unit = Unit::<Emitter>::open(&ctx).unwrap();
        let last = emit(&mut unit, &bus, 3);
        confirmed(&unit, last);
        drop(unit);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", ctx.home.store("emitter").display()));
        }
        let before = bus.last_seq();
        let mut unit = Unit::<Emitter>::open(&ctx).unwrap();
        let next = emit(&mut unit, &bus, 1);
        assert!(next > last, "outbox id {next} passes the bus's mark {last}");
        confirmed(&unit, next);
        assert_eq!(bus.last_seq(), before + 1, "the new store's event was stored");
        bus.shutdown();
    }

    fn confirmed(unit: &Unit<Emitter>, id: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while unit.acked.load(Ordering::Acquire) < id {
            assert!(Instant::now() < deadline, "the bus never confirmed outbox row {id}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What the outbox table holds: (rows, bytes of events).
    fn outbox_table(unit: &Unit<Emitter>) -> (i64, i64) {
        unit.conn
            .query_row("SELECT count(*), coalesce(sum(length(events)), 0) FROM outbox_batches", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    }

    /// An idle store deletes the rows the bus has confirmed, however few, so that its
    /// next start re-sends nothing; a store that is not idle yet keeps them.
    #[test]
    fn an_idle_store_deletes_its_confirmed_outbox_rows_and_its_next_start_resends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ctx(dir.path());
        let mut unit = Unit::<Emitter>::open(&ctx).unwrap();
        let last = emit(&mut unit, &bus, 3);
        confirmed(&unit, last);
        unit.tidy().unwrap();
        assert_eq!(outbox_table(&unit).0, 3, "not idle yet: the rows stay");
        assert!(unit.outbox_waiting());
        unit.staged_at = Instant::now() - TIDY_AFTER;
        unit.tidy().unwrap();
        assert_eq!(outbox_table(&unit), (1, 0), "only the newest row's id is left, its events blanked");
        assert!(!unit.outbox_waiting(), "nothing waits: the loop may sleep until its next command");
        drop(unit);
        let before = bus.read_since(0, None, 100).unwrap().len();
        let mut unit = Unit::<Emitter>::open(&ctx).unwrap();
        assert!(!unit.outbox_waiting(), "nothing was re-sent");
        let next = emit(&mut unit, &bus, 1);
        assert!(next > last, "ids keep rising past the blanked row");
        confirmed(&unit, next);
        assert_eq!(bus.read_since(0, None, 100).unwrap().len(), before + 1);
        bus.shutdown();
    }

    /// A confirmed row of a large commit (a mass cancel's thousands of events) goes at the
    /// next transaction, without waiting for [`OUTBOX_DELETE_EVERY`] rows.
    #[test]
    fn a_large_confirmed_outbox_row_goes_at_the_next_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ctx(dir.path());
        let mut unit = Unit::<Emitter>::open(&ctx).unwrap();
        unit.work(|svc, tx, after| {
            while after.events.len() * 70 < OUTBOX_DELETE_BYTES {
                svc.handle(tx, (), after)?;
            }
            Ok(())
        })
        .unwrap();
        unit.commit(&bus).unwrap();
        let (rows, bytes) = outbox_table(&unit);
        assert!(rows == 1 && bytes as usize >= OUTBOX_DELETE_BYTES, "one large row: {rows} rows, {bytes} bytes");
        confirmed(&unit, 1);
        emit(&mut unit, &bus, 1);
        let (rows, bytes) = outbox_table(&unit);
        assert_eq!(rows, 2, "the large row's id, blanked, and the new row");
        assert!(bytes < 1000, "the large row's events are gone: {bytes} bytes left");
        bus.shutdown();
    }

    /// A bulk delete of confirmed rows must not let the outbox number rows from 1 again:
    /// `acked` would then count the new, unconfirmed rows as confirmed.
    #[test]
    fn outbox_ids_keep_rising_across_a_bulk_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ctx(dir.path());
        let mut unit = Unit::<Emitter>::open(&ctx).unwrap();
        let first = emit(&mut unit, &bus, OUTBOX_DELETE_EVERY as i64);
        confirmed(&unit, first);
        // The next transaction deletes the confirmed rows in bulk, then adds its own.
        let next = emit(&mut unit, &bus, 1);
        assert!(next > first, "the row after a bulk delete got id {next}, not above {first}");
        let left: i64 = unit.conn.query_row("SELECT count(*) FROM outbox_batches", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 2, "the bulk delete keeps only the newest confirmed row");
        confirmed(&unit, next);
        bus.shutdown();
    }
}
