//! The event bus: every event gets a global sequence number and is kept in
//! `data/events.db` before anyone hears of it.
//!
//! Producers never wait: `publish_then` hands the events (and the replies that must not
//! overtake them) to the bus thread, which commits a whole drain of them in one
//! transaction, then sends the replies, then broadcasts the events. Live subscribers get a
//! bounded broadcast channel; one that falls behind is told it lagged and catches up from
//! the store ([`Bus::read_since`]), so a slow subscriber never blocks a producer.
//!
//! Old events are pruned on request ([`Bus::prune`], from `daemon::retention`), a chunk
//! at a time between batches, so a large backlog to prune never holds up new events.
//! The newest event is never pruned: the next start numbers on from it.

use crate::api::Event;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;

mod blocks;
mod readers;

pub use blocks::Scanned;

/// Every event type of DESIGN.md §2. A service may only publish one of these.
pub const EVENT_TYPES: &[&str] = &[
    "USER_CREATED",
    "USER_UPDATED",
    "ACCOUNT_DEPOSITED",
    "ACCOUNT_WITHDRAWN",
    "ORDER_CREATED",
    "ORDER_REJECTED",
    "ORDER_STATUS_UPDATED",
    "ORDER_EXECUTED",
    "ORDER_CANCELLED",
    "ORDER_EXPIRED",
    "TRADE_EXECUTED",
    "RISK_LIMIT_CHANGED",
    "TRADING_STATE_CHANGED",
    "SERVICE_STARTED",
    "SERVICE_RESTARTED",
    "SERVICE_FAILED",
    "CONFIG_CHANGED",
    "NOTIFICATION_SENT",
    "NOTIFICATION_FAILED",
    "TOKEN_CREATED",
    "TOKEN_REVOKED",
];

/// An event before the bus has numbered it. `event_id` is chosen by the producer; an
/// event re-sent from a service's outbox after a crash is stored once (by the outbox
/// row's id, [`Bus::publish_outbox`]).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub kind: &'static str,
    pub source: &'static str,
    /// `data` as JSON text, written once by the producer: the outbox row, the envelope in
    /// `events.db` and the audit record all hold this text, so an event is encoded once
    /// instead of three times (encoding was ~6 % of the daemon's CPU under load).
    pub text: String,
    /// `data` as a value, when the producer built one (it saves followers a parse).
    pub value: Option<serde_json::Value>,
}

impl NewEvent {
    /// A new event with a fresh (time-ordered) id, from a value.
    pub fn new(kind: &'static str, source: &'static str, data: serde_json::Value) -> Self {
        let text = data.to_string();
        NewEvent { event_id: uuid::Uuid::now_v7().to_string(), kind, source, text, value: Some(data) }
    }

    /// A new event whose data is `data` encoded straight to JSON text, with no
    /// `serde_json::Value` built on the way: the order path's events are built this way
    /// (building, encoding and dropping their maps was ~10 % of the trading lane).
    ///
    /// The text is written at its exact size ([`crate::api::to_json_exact`]).
    pub fn encoded(kind: &'static str, source: &'static str, data: &impl serde::Serialize) -> Self {
        let text = crate::api::to_json_exact(data).expect("event data encodes");
        let text = String::from_utf8(text).expect("serde_json writes UTF-8");
        NewEvent { event_id: uuid::Uuid::now_v7().to_string(), kind, source, text, value: None }
    }
}

/// A committed event, as the bus hands it to followers and streams: its envelope's
/// fields, and the envelope as JSON text (what NDJSON streams send as is). Its `data` is
/// the tail of that text, parsed only for a follower that reads it ([`BusEvent::data`]).
#[derive(Debug)]
pub struct BusEvent {
    pub seq: u64,
    pub event_id: String,
    /// The type and the source: the names the producer gave (no copy) for an event
    /// the bus has just stored, owned for one read back from the store.
    pub kind: Cow<'static, str>,
    pub source: Cow<'static, str>,
    pub timestamp: String,
    pub line: String,
    /// Where `data`'s text begins in `line`, if it ends the line (see [`Self::data_text`]).
    data_at: Option<usize>,
    data: std::sync::OnceLock<serde_json::Value>,
}

/// What precedes `data` in an envelope: it is the last field.
const DATA_KEY: &str = ",\"data\":";

/// Where `data`'s text begins in an envelope line that ends with it.
fn data_at(line: &str) -> Option<usize> {
    line.ends_with('}').then(|| line.find(DATA_KEY)).flatten().map(|at| at + DATA_KEY.len())
}

/// The `data` of an envelope line as JSON text, when it is the line's last field (as in
/// every envelope agt writes): a reader of the raw line ([`Bus::scan_since`]) looks at it
/// without parsing the rest.
pub fn data_of(line: &str) -> Option<&str> {
    data_at(line).map(|at| &line[at..line.len() - 1])
}

impl BusEvent {
    /// A committed event from its API form (read back from the store, or in tests).
    pub fn from_event(event: Event) -> Self {
        let line = serde_json::to_string(&event).expect("an event encodes");
        Self::with_line(event, line)
    }

    /// A committed event read back from the store: the envelope's fields are parsed and
    /// its `data` stays text until a follower reads it (serde skips it without building
    /// it). Parsing every event's data into a `serde_json::Value` and dropping it was
    /// most of a replay's cost: a follower catching up, `GET /api/events?since=`.
    fn from_line(line: String) -> serde_json::Result<Self> {
        #[cfg(test)]
        tests::LINES_PARSED.with(|n| n.set(n.get() + 1));
        let Some(at) = data_at(&line) else {
            // Not the layout `data_text` slices: parse it whole.
            let event: Event = serde_json::from_str(&line)?;
            return Ok(Self::with_line(event, line));
        };
        let h: Head = serde_json::from_str(&line)?;
        Ok(BusEvent {
            seq: h.seq,
            event_id: h.event_id,
            kind: h.kind.into(),
            source: h.source.into(),
            timestamp: h.timestamp,
            line,
            data_at: Some(at),
            data: std::sync::OnceLock::new(),
        })
    }

    fn with_line(e: Event, line: String) -> Self {
        BusEvent {
            seq: e.seq,
            event_id: e.event_id,
            kind: e.kind.into(),
            source: e.source.into(),
            timestamp: e.timestamp,
            data_at: data_at(&line),
            line,
            data: std::sync::OnceLock::from(e.data),
        }
    }

    /// The event's `data` as JSON text: the tail of its line (the envelope puts `data`
    /// last, both [`envelope`] and serde's encoding of [`Event`]), so followers that
    /// store it need not encode it again.
    pub fn data_text(&self) -> &str {
        match self.data_at {
            Some(at) => &self.line[at..self.line.len() - 1],
            None => "null",
        }
    }

    /// The event's `data`, parsed from its text the first time it is asked for (unless
    /// its producer handed the bus a value).
    pub fn data(&self) -> &serde_json::Value {
        self.data.get_or_init(|| serde_json::from_str(self.data_text()).unwrap_or_default())
    }
}

/// An envelope's fields but `data`, which serde skips without building it.
#[derive(serde::Deserialize)]
struct Head {
    seq: u64,
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    source: String,
    timestamp: String,
}

/// An event's envelope as JSON text, the same text `serde_json::to_string(&Event)` gives,
/// with `data` already encoded by its producer; and where `data` begins in it. Written
/// into one buffer of the right size (a reallocation and its copy per event showed as
/// ~10 % of the bus thread).
fn envelope(seq: u64, event_id: &str, kind: &str, source: &str, timestamp: &str, data: &str) -> (String, usize) {
    use std::io::Write;
    const FIXED: usize = r#"{"seq":,"event_id":"","type":"","source":"","timestamp":"","data":}"#.len() + 20;
    let mut out = Vec::with_capacity(FIXED + event_id.len() + kind.len() + source.len() + timestamp.len() + data.len());
    out.extend_from_slice(b"{\"seq\":");
    write!(out, "{seq}").expect("a Vec takes any write");
    for (key, value) in [("event_id", event_id), ("type", kind), ("source", source), ("timestamp", timestamp)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        crate::api::json::write_str(&mut out, value);
    }
    out.extend_from_slice(DATA_KEY.as_bytes());
    let at = out.len();
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    (String::from_utf8(out).expect("JSON text is UTF-8"), at)
}

/// Called by the bus thread once a batch of events is committed (a service then drops
/// them from its outbox).
pub type Committed = Box<dyn FnOnce() + Send>;

enum Msg {
    Publish {
        events: Vec<NewEvent>,
        then: Vec<Committed>,
        /// The producer and the id of the outbox row that holds these events, if one does.
        outbox: Option<(&'static str, i64)>,
    },
    /// Prune every event up to this seq (at most up to the newest but one).
    Prune(u64),
    Stop,
}

/// Events handed to the bus and not yet stored at which a service waits after its
/// commit ([`Bus::wait_for_room`]): ~16 MB of events. Under a closed-loop overload the
/// backlog stays under a few thousand (BENCHMARKS.md, session 18); this bounds the
/// cases where the bus cannot keep up at all.
pub const BACKLOG_BOUND: u64 = 16_384;

/// Events deleted per transaction when pruning: ~10 ms of the bus thread, between batches.
const PRUNE_CHUNK: u64 = 2000;

/// A handle on the bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    live: broadcast::Sender<Arc<BusEvent>>,
    /// Read connections, one per read at a time (`readers`): replays read side by side.
    readers: readers::Readers,
    /// The newest seq of an older agt's table of a row per event (0: none), see `blocks`.
    legacy_last: u64,
    last_seq: AtomicU64,
    /// The oldest seq still stored (every event before it was pruned), or `last_seq + 1`
    /// while there are none.
    first_kept: AtomicU64,
    /// Events handed to the bus so far, and events it has committed (or found stored
    /// already): a reader that waits for `processed >= submitted` sees every event
    /// published before it asked.
    submitted: AtomicU64,
    processed: tokio::sync::watch::Sender<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The daemon's load, for every store's checkpointer ([`Bus::load`]).
    load: crate::services::store::Load,
}

impl Bus {
    /// Opens `events.db` and starts the bus thread.
    pub fn open(home: &crate::daemon::Home, durability: crate::services::store::Durability) -> anyhow::Result<Bus> {
        let path = home.store("events");
        let conn = crate::services::store::open(&path, durability, blocks::MIGRATIONS)?;
        let (first, last, legacy_last) = blocks::bounds(&conn)?;
        let reader = crate::services::store::open_reader(&path)?;
        let (tx, rx) = mpsc::channel();
        let (live, _) = broadcast::channel(8192);
        let inner = Arc::new(Inner {
            tx,
            live,
            readers: readers::Readers::new(path.clone(), reader),
            legacy_last,
            last_seq: AtomicU64::new(last),
            first_kept: AtomicU64::new(first.unwrap_or(last + 1)),
            submitted: AtomicU64::new(0),
            processed: tokio::sync::watch::channel(0).0,
            thread: Mutex::new(None),
            load: crate::services::store::Load::default(),
        });
        let worker = inner.clone();
        let handle = std::thread::Builder::new().name("bus".into()).spawn(move || {
            // Nobody's answer waits for the bus (replies go out at commit, before it).
            crate::services::priority::lower_this_thread();
            let checkpointer = crate::services::store::spawn_checkpointer(&path, std::time::Duration::from_millis(50), &worker.load);
            run(conn, &checkpointer, rx, &worker)
        })?;
        *inner.thread.lock().unwrap() = Some(handle);
        crate::daemon::metrics::bus_events_kept(inner.first_kept.load(Ordering::Acquire), last);
        Ok(Bus { inner })
    }

    /// Persists `events`, then runs `then`, then broadcasts the events.
    pub fn publish_then(&self, events: Vec<NewEvent>, then: Vec<Committed>) {
        self.send(events, then, None);
    }

    /// [`Bus::publish_then`] for the events of `source`'s outbox row `id`. Outbox ids
    /// only rise: the bus keeps, with the events, the highest it has stored per source,
    /// and drops a row sent again at or below it (re-sent after a crash), running only
    /// its `then`.
    pub fn publish_outbox(&self, source: &'static str, id: i64, events: Vec<NewEvent>, then: Vec<Committed>) {
        self.send(events, then, Some((source, id)));
    }

    fn send(&self, events: Vec<NewEvent>, then: Vec<Committed>, outbox: Option<(&'static str, i64)>) {
        self.inner.submitted.fetch_add(events.len() as u64, Ordering::AcqRel);
        let _ = self.inner.tx.send(Msg::Publish { events, then, outbox });
    }

    pub fn publish(&self, kind: &'static str, source: &'static str, data: serde_json::Value) {
        self.publish_then(vec![NewEvent::new(kind, source, data)], Vec::new());
    }

    /// Waits until every event published before this call is committed (read-your-writes
    /// for `/api/events` and for services fed from the bus). Gives up after `timeout`, and
    /// says how many of them were not committed then (0: all were).
    pub async fn sync(&self, timeout: std::time::Duration) -> u64 {
        let target = self.inner.submitted.load(Ordering::Acquire);
        let mut rx = self.inner.processed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= target)).await;
        let stored = *rx.borrow();
        target.saturating_sub(stored)
    }

    /// Events handed to the bus and not stored yet (the `agt_bus_backlog` gauge).
    pub fn backlog(&self) -> u64 {
        self.inner.submitted.load(Ordering::Acquire).saturating_sub(*self.inner.processed.borrow())
    }

    /// Waits while the bus holds [`BACKLOG_BOUND`] events not yet stored, until it holds
    /// half that (or its thread has ended). A service's thread calls it after each commit,
    /// before it takes more work: when events cannot be stored as fast as they are made
    /// (the bus runs at a lower priority, or its store refuses writes for a while), the
    /// order path slows to the bus's pace instead of piling events up in memory. Its
    /// committed work is answered first; its events are safe in its outbox meanwhile.
    pub fn wait_for_room(&self) {
        if self.backlog() < BACKLOG_BOUND {
            return;
        }
        let started = Instant::now();
        while self.backlog() > BACKLOG_BOUND / 2 {
            if self.inner.thread.lock().unwrap().as_ref().is_none_or(|h| h.is_finished()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        tracing::debug!(waited_ms = started.elapsed().as_millis() as u64, "waited for the event bus to store its backlog");
    }

    /// Live events from now on. Pair it with [`Bus::read_since`] to replay first.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.inner.live.subscribe()
    }

    /// The highest sequence number committed so far.
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// The oldest event still stored: every event before it has been pruned.
    pub fn first_kept(&self) -> u64 {
        self.inner.first_kept.load(Ordering::Acquire)
    }

    /// Asks the bus thread to prune every event up to `upto` (it keeps the newest one
    /// whatever `upto` says). Returns at once; [`Bus::first_kept`] moves as it goes.
    pub fn prune(&self, upto: u64) {
        let _ = self.inner.tx.send(Msg::Prune(upto));
    }

    /// The newest stored event stamped before `cutoff` (an RFC 3339 time as
    /// `api::now_rfc3339` writes it, which sorts as text), or 0 if none is. The bus stamps
    /// events as it numbers them, so their times rise with their seqs: a binary search of
    /// ~log2(events) lookups by seq. Blocking.
    pub fn seq_before(&self, cutoff: &str) -> anyhow::Result<u64> {
        let conn = self.inner.readers.take();
        let at_or_after = |seq: u64| blocks::at_or_after(&conn, self.inner.legacy_last, seq);
        let (mut lo, mut hi, mut best) = (self.first_kept(), self.last_seq(), 0);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match at_or_after(mid)? {
                Some((seq, at)) if at.as_str() < cutoff => {
                    best = seq;
                    lo = seq + 1;
                }
                _ => hi = mid - 1,
            }
        }
        Ok(best)
    }

    /// Where to start reading to get the newest `n` events (of some types only, if
    /// given): the seq just before the `n`-th newest, or 0 when fewer are kept. Blocking.
    pub fn since_for_last(&self, n: usize, types: Option<&[String]>) -> anyhow::Result<u64> {
        self.since_for_last_kept(n, types, None, usize::MAX)
    }

    /// [`Bus::since_for_last`] counting only the events `keep` takes, among at most `scan`
    /// of the types (see `blocks::nth_newest`). Blocking.
    pub fn since_for_last_kept(
        &self,
        n: usize,
        types: Option<&[String]>,
        keep: Option<&dyn Fn(&BusEvent) -> bool>,
        scan: usize,
    ) -> anyhow::Result<u64> {
        if n == 0 {
            return Ok(self.last_seq());
        }
        let conn = self.inner.readers.take();
        // Not from before `first_kept`: a prune says so before its commit (`prune_chunk`),
        // and a tail that began among the events going would be answered 410.
        Ok(blocks::nth_newest(&conn, n, types, keep, scan)?.map_or(0, |seq| (seq - 1).max(self.first_kept().saturating_sub(1))))
    }

    /// How heavily the daemon is loaded (set by the trading lane, read by every store's
    /// checkpointer): the bus is what every service of one daemon shares.
    pub fn load(&self) -> &crate::services::store::Load {
        &self.inner.load
    }

    /// The highest outbox row id stored from `source` (see [`Bus::publish_outbox`]).
    pub fn outbox_mark(&self, source: &str) -> rusqlite::Result<Option<i64>> {
        blocks::mark_of(&self.inner.readers.take(), source)
    }

    /// Committed events with `seq > since`, oldest first, at most `limit`, optionally of
    /// some types only; none before [`Bus::first_kept`] (a prune says so before its commit,
    /// so what a read gives and what `first_kept` says agree). Blocking: call it from
    /// `spawn_blocking` in async code.
    pub fn read_since(&self, since: u64, types: Option<&[String]>, limit: usize) -> anyhow::Result<Vec<BusEvent>> {
        let since = since.max(self.first_kept().saturating_sub(1));
        let conn = self.inner.readers.take();
        blocks::read_since(&conn, self.inner.legacy_last, since, types, limit)
    }

    /// A page of a replay: hands `visit` the committed events with `seq > since` (of
    /// `types` only, if given), oldest first, as their seq, type and envelope line,
    /// none parsed, until `visit` says stop (returns false) or about `budget` bytes of
    /// the store were read. One short read on a connection of its own: a replay's client
    /// may read slowly, and a read held open meanwhile would keep `events.db`'s log from
    /// being checkpointed. [`Scanned::through`] is where the next page starts. None
    /// before [`Bus::first_kept`], as [`Bus::read_since`]. Blocking.
    pub fn scan_since(
        &self,
        since: u64,
        types: Option<&[String]>,
        budget: usize,
        visit: &mut dyn FnMut(u64, &str, &str) -> bool,
    ) -> anyhow::Result<Scanned> {
        let since = since.max(self.first_kept().saturating_sub(1));
        let conn = self.inner.readers.take();
        blocks::scan(&conn, self.inner.legacy_last, since, types, budget, visit)
    }

    /// Commits what is queued and stops the bus thread.
    pub fn shutdown(&self) {
        let _ = self.inner.tx.send(Msg::Stop);
        if let Some(h) = self.inner.thread.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}

/// The first wait before a failed batch is tried again, and the longest.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

fn run(mut conn: rusqlite::Connection, checkpointer: &crate::services::store::CheckpointGuard, rx: mpsc::Receiver<Msg>, inner: &Inner) {
    let mut seq = inner.last_seq.load(Ordering::Acquire);
    // The highest outbox row stored per producer (see `blocks`).
    let mut marks = match blocks::load_marks(&conn) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "the event bus could not read its outbox marks; it stops");
            return;
        }
    };

    let mut batch = Vec::with_capacity(1024);
    let mut retry = RETRY_FIRST;
    // Prune requests are noted, not batched: the highest seq asked to be pruned.
    let mut prune_to = 0u64;
    let take = |m: Msg, batch: &mut Vec<Msg>, prune_to: &mut u64| match m {
        Msg::Prune(upto) => *prune_to = (*prune_to).max(upto),
        m => batch.push(m),
    };
    loop {
        // A batch that failed to commit is tried again as it is (with what queued since):
        // its events keep their order, and no later event overtakes them.
        if batch.is_empty() {
            // With pruning left to do, a chunk of it per round, before the next batch:
            // under load that keeps pace with any order flow, and idle it goes on until done.
            let upto = prune_to.min(seq.saturating_sub(1));
            let pending = upto >= inner.first_kept.load(Ordering::Acquire);
            if pending {
                if !prune_chunk(&mut conn, inner, upto) {
                    prune_to = 0;
                }
                crate::services::store::bound_wal(&conn, checkpointer);
            }
            let first = if pending {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::TryRecvError::Empty) => continue,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                let Ok(m) = rx.recv() else { return };
                m
            };
            take(first, &mut batch, &mut prune_to);
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut batch, &mut prune_to),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
        }
        let started = Instant::now();
        let stop = batch.iter().any(|m| matches!(m, Msg::Stop));
        // Per event of the batch, in order: its seq, envelope and time if it is new, None
        // if it was stored already (re-sent from an outbox after a crash).
        let events = batch.iter().map(|m| if let Msg::Publish { events, .. } = m { events.len() } else { 0 }).sum();
        let mut stored: Vec<Option<(u64, String, usize)>> = Vec::with_capacity(events);
        let mut next = seq;
        // The outbox marks this batch moves: applied once it has committed.
        let mut moved: Vec<(&'static str, i64)> = Vec::new();
        // One time for the batch's events: they are stored by one commit, and formatting
        // a time per event was ~1 µs of each order's ~4 events.
        let timestamp = crate::api::now_rfc3339();
        let result: rusqlite::Result<()> = (|| {
            let tx = conn.transaction()?;
            let mut block = blocks::Block::new();
            for m in &batch {
                let Msg::Publish { events, outbox, .. } = m else { continue };
                let mut stale = false;
                if let Some((source, id)) = *outbox {
                    let mark = moved.iter().rev().find(|(s, _)| *s == source).map(|m| m.1).or_else(|| marks.get(source).copied());
                    stale = mark.is_some_and(|upto| id <= upto);
                    if !stale {
                        moved.push((source, id));
                    }
                }
                for e in events {
                    // A producer with no mark yet may re-send what an older agt stored.
                    let known = stale
                        || (inner.legacy_last > 0
                            && outbox.is_some_and(|(source, _)| !marks.contains_key(source))
                            && blocks::legacy_holds(&tx, &e.event_id)?);
                    if known {
                        stored.push(None);
                        continue;
                    }
                    next += 1;
                    let (line, data_at) = envelope(next, &e.event_id, e.kind, e.source, &timestamp, &e.text);
                    if block.push(next, e.kind, &line) {
                        block.insert(&tx, &timestamp)?;
                    }
                    stored.push(Some((next, line, data_at)));
                }
            }
            block.insert(&tx, &timestamp)?;
            for (source, id) in &moved {
                blocks::save_mark(&tx, source, *id)?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            if stop {
                // Shutting down: the producers' outboxes still hold these events (they
                // are confirmed only after a commit) and re-send them at the next start.
                tracing::error!(error = %e, "the event bus could not commit at shutdown; the next start re-sends the events");
                return;
            }
            // events.db is unwritable for now (disk full, locked by another process):
            // said once, not at every retry (every 2 s for as long as a disk stays full).
            crate::services::disk_full::note(&e.to_string());
            if retry == RETRY_FIRST {
                tracing::error!(error = %e, "the event bus could not commit; trying again until it can (said once)");
            }
            std::thread::sleep(retry);
            retry = (retry * 2).min(RETRY_MAX);
            while let Ok(m) = rx.try_recv() {
                take(m, &mut batch, &mut prune_to);
            }
            continue;
        }
        if retry != RETRY_FIRST {
            tracing::warn!("the event bus commits again");
        }
        retry = RETRY_FIRST;
        seq = next;
        for (source, id) in moved {
            marks.insert(source.to_string(), id);
        }
        inner.last_seq.store(seq, Ordering::Release);
        crate::daemon::metrics::observe_commit("bus", started.elapsed());
        crate::daemon::metrics::bus_events_kept(inner.first_kept.load(Ordering::Acquire), seq);
        let mut handled = 0u64;
        let mut committed: Vec<BusEvent> = Vec::with_capacity(events);
        let mut stored = stored.into_iter();
        for m in batch.drain(..) {
            let Msg::Publish { events, then, .. } = m else { continue };
            for e in events {
                handled += 1;
                let Some(Some((seq, line, data_at))) = stored.next() else { continue };
                crate::daemon::metrics::bus_event(e.kind);
                committed.push(BusEvent {
                    seq,
                    event_id: e.event_id,
                    kind: Cow::Borrowed(e.kind),
                    source: Cow::Borrowed(e.source),
                    timestamp: timestamp.clone(),
                    line,
                    data_at: Some(data_at),
                    data: e.value.map(std::sync::OnceLock::from).unwrap_or_default(),
                });
            }
            for r in then {
                r();
            }
        }
        inner.processed.send_modify(|p| *p += handled);
        crate::services::store::bound_wal(&conn, checkpointer);
        for e in committed {
            let _ = inner.live.send(Arc::new(e));
        }
        if stop {
            return;
        }
    }
}

/// Deletes the next chunk of events up to `upto` in one transaction and moves
/// `first_kept` past it. False once it has got to `upto`, or if the store refused
/// (pruning stops until asked again).
fn prune_chunk(conn: &mut rusqlite::Connection, inner: &Inner, upto: u64) -> bool {
    const _: () = assert!(blocks::BLOCK_EVENTS as u64 <= PRUNE_CHUNK, "a chunk passes at least a block");
    let before = inner.first_kept.load(Ordering::Acquire);
    let end = upto.min(before + PRUNE_CHUNK - 1);
    let pruned = conn.transaction().and_then(|tx| {
        let first = blocks::prune(&tx, end)?;
        // Said before the commit, not after: a reader whose read follows the commit must
        // find these events pruned when it then checks (`/api/events`), or it would take
        // the seqs missing from its page for events of other types, a silent gap.
        inner.first_kept.store(end + 1, Ordering::Release);
        tx.commit().inspect_err(|_| inner.first_kept.store(before, Ordering::Release))?;
        Ok(first)
    });
    match pruned {
        Ok(first) => {
            let last = inner.last_seq.load(Ordering::Acquire);
            let first = first.unwrap_or(last + 1).max(end + 1);
            inner.first_kept.store(first, Ordering::Release);
            crate::daemon::metrics::bus_events_kept(first, last);
            end < upto
        }
        Err(e) => {
            tracing::warn!(error = %e, upto = end, "the event bus could not prune old events; it tries again at the next round");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Lines this thread parsed into events (`BusEvent::from_line`): what a read cost.
        pub(super) static LINES_PARSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The envelope the bus writes by hand reads exactly as serde writes an [`Event`];
    /// a follower gets back the very text the producer encoded, escapes and all, and
    /// the same data whether the producer built a value or encoded it straight to text.
    #[test]
    fn an_envelope_is_serdes_encoding_and_gives_back_its_data() {
        let data = serde_json::json!({"note": "a \"quoted\" ,\"data\": line\n", "price": "1.50", "fills": [1, 2], "none": null});
        for new in [NewEvent::new("ORDER_CREATED", "orders", data.clone()), NewEvent::encoded("ORDER_CREATED", "orders", &data)] {
            let event = Event {
                seq: 42,
                event_id: new.event_id.clone(),
                kind: new.kind.to_string(),
                source: new.source.to_string(),
                timestamp: crate::api::now_rfc3339(),
                data: data.clone(),
            };
            let (line, at) = envelope(42, &new.event_id, new.kind, new.source, &event.timestamp, &new.text);
            assert_eq!(line, serde_json::to_string(&event).unwrap());
            assert_eq!(&line[at..line.len() - 1], new.text);
            let e = BusEvent { data: new.value.map(std::sync::OnceLock::from).unwrap_or_default(), ..BusEvent::from_event(event.clone()) };
            assert_eq!(e.data_text(), new.text);
            assert_eq!(e.data(), &data);
            // Read back from the store: the envelope's fields, and the data, unparsed until asked.
            let back = BusEvent::from_line(line).unwrap();
            assert_eq!((back.seq, &*back.kind, &*back.source), (42, "ORDER_CREATED", "orders"));
            assert_eq!((&back.event_id, &back.timestamp), (&event.event_id, &event.timestamp));
            assert!(back.data.get().is_none(), "data is not parsed on the way in");
            assert_eq!(back.data_text(), new.text);
            assert_eq!(back.data(), &data);
        }
    }

    /// Waits until `done` holds (the bus thread works on its own).
    fn wait_until(done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "the bus did not get there");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Pruning removes events from the oldest on, in chunks, up to what it is asked but
    /// never the newest event, and a reopened bus numbers on from where it was.
    #[test]
    fn old_events_are_pruned_and_the_newest_is_always_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let bus = Bus::open(&home, Default::default()).unwrap();
        let n = 2 * PRUNE_CHUNK + 500;
        bus.publish_then((0..n).map(|i| NewEvent::new("ORDER_CREATED", "test", serde_json::json!({ "i": i }))).collect(), Vec::new());
        wait_until(|| bus.last_seq() == n);
        assert_eq!(bus.first_kept(), 1);

        bus.prune(PRUNE_CHUNK + 700);
        wait_until(|| bus.first_kept() == PRUNE_CHUNK + 701);
        let kept = bus.read_since(0, None, 10).unwrap();
        assert_eq!(kept[0].seq, PRUNE_CHUNK + 701, "reading from the start gives the oldest kept");
        assert_eq!(bus.read_since(5, None, 1).unwrap()[0].seq, PRUNE_CHUNK + 701);

        bus.prune(u64::MAX);
        wait_until(|| bus.first_kept() == n);
        assert_eq!(bus.read_since(0, None, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [n], "the newest stays");
        bus.shutdown();

        let bus = Bus::open(&home, Default::default()).unwrap();
        assert_eq!((bus.first_kept(), bus.last_seq()), (n, n));
        bus.publish("ORDER_CREATED", "test", serde_json::json!({}));
        wait_until(|| bus.last_seq() == n + 1);
        assert_eq!(bus.read_since(n, None, 10).unwrap()[0].seq, n + 1, "numbering goes on after a prune and a restart");
        bus.shutdown();
    }

    /// `seq_before` finds the newest event stamped before a time, from the events' own
    /// stamps; nothing older gives 0.
    #[test]
    fn the_newest_event_before_a_time_is_found_by_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::open(&crate::daemon::Home::at(dir.path()), Default::default()).unwrap();
        // The events of one commit share a stamp: thirty commits of ten.
        for i in 0..300 {
            bus.publish("ORDER_CREATED", "test", serde_json::json!({ "i": i }));
            if i % 10 == 9 {
                wait_until(|| bus.last_seq() == i + 1);
            }
        }
        let stamps: Vec<String> = bus.read_since(0, None, 300).unwrap().into_iter().map(|e| e.timestamp).collect();
        for k in [1usize, 2, 77, 150, 299, 300] {
            let cutoff = &stamps[k - 1];
            let found = bus.seq_before(cutoff).unwrap() as usize;
            let want = stamps.iter().rposition(|t| t < cutoff).map_or(0, |i| i + 1);
            assert_eq!(found, want, "before the stamp of event {k}");
        }
        assert_eq!(bus.seq_before("9999-12-31T00:00:00.000000Z").unwrap(), 300);
        bus.prune(100);
        wait_until(|| bus.first_kept() == 101);
        assert_eq!(bus.seq_before(&stamps[49]).unwrap(), 0, "what was pruned is not found");
        assert_eq!(bus.seq_before(&stamps[200]).unwrap() as usize, stamps.iter().rposition(|t| t < &stamps[200]).unwrap() + 1);
        assert!(stamps.iter().filter(|t| *t < &stamps[200]).count() > 100, "the cut-off is past what was pruned");
        bus.shutdown();
    }

    /// A stored line whose `data` is not last (no agt writes one) is parsed whole rather
    /// than sliced wrong.
    #[test]
    fn a_line_in_another_layout_still_gives_its_data() {
        let line = r#"{"data":{"a":1},"seq":7,"event_id":"e","type":"T","source":"s","timestamp":"t"}"#;
        let e = BusEvent::from_line(line.to_string()).unwrap();
        assert_eq!((e.seq, &*e.kind), (7, "T"));
        assert_eq!(e.data(), &serde_json::json!({"a": 1}));
        assert!(BusEvent::from_line("{\"seq\":1}".to_string()).is_err(), "a line without an envelope is an error");
    }

    /// While the bus cannot store events (another connection holds events.db's write
    /// lock), a publisher past the bound waits; once the bus has stored its backlog down
    /// to half the bound, the publisher goes on, and nothing was lost.
    #[test]
    fn a_publisher_waits_while_the_bus_holds_its_bound_of_events() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let bus = Bus::open(&home, Default::default()).unwrap();
        bus.wait_for_room(); // nothing held: no wait
        let blocker = rusqlite::Connection::open(home.store("events")).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let n = BACKLOG_BOUND;
        bus.publish_then((0..n).map(|i| NewEvent::new("ORDER_CREATED", "test", serde_json::json!({ "i": i }))).collect(), Vec::new());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                bus.wait_for_room();
                done_tx.send(bus.backlog()).unwrap();
            })
        };
        assert!(done_rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "held back while the events cannot be stored");
        blocker.execute_batch("ROLLBACK").unwrap();
        let held = done_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("goes on once the bus stores them");
        assert!(held <= BACKLOG_BOUND / 2);
        waiter.join().unwrap();
        wait_until(|| bus.last_seq() == n);
        bus.shutdown();
    }

    fn event(kind: &'static str, i: u64) -> NewEvent {
        NewEvent::new(kind, "orders", serde_json::json!({ "i": i }))
    }

    fn seqs(events: &[BusEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// A producer's outbox row sent again (a crash before the bus's confirmation reached
    /// it) is dropped by its id, its `then` still runs, and the mark survives a restart;
    /// another producer's ids are its own.
    #[test]
    fn an_outbox_row_sent_again_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let bus = Bus::open(&home, Default::default()).unwrap();
        let confirmed = Arc::new(AtomicU64::new(0));
        let then = || -> Vec<Committed> {
            let c = confirmed.clone();
            vec![Box::new(move || {
                c.fetch_add(1, Ordering::AcqRel);
            })]
        };
        let row5 = vec![event("ORDER_CREATED", 1), event("ORDER_EXECUTED", 2)];
        bus.publish_outbox("orders", 5, row5.clone(), then());
        bus.publish_outbox("orders", 5, row5.clone(), then());
        bus.publish_outbox("orders", 4, vec![event("ORDER_CREATED", 0)], then());
        bus.publish_outbox("orders", 6, vec![event("ORDER_CANCELLED", 3)], then());
        wait_until(|| confirmed.load(Ordering::Acquire) == 4);
        assert_eq!(bus.last_seq(), 3, "rows 5 and 6 once, row 4 (older than 5) not at all");
        let data: Vec<_> = bus.read_since(0, None, 10).unwrap().iter().map(|e| e.data()["i"].as_u64().unwrap()).collect();
        assert_eq!(data, [1, 2, 3]);
        bus.shutdown();

        let bus = Bus::open(&home, Default::default()).unwrap();
        let confirmed_before = confirmed.load(Ordering::Acquire);
        bus.publish_outbox("orders", 6, vec![event("ORDER_CANCELLED", 3)], then());
        bus.publish_outbox("risk", 1, vec![event("ACCOUNT_DEPOSITED", 4)], then());
        wait_until(|| confirmed.load(Ordering::Acquire) == confirmed_before + 2);
        assert_eq!(bus.last_seq(), 4, "the mark outlived the restart; risk's row 1 is new");
        bus.shutdown();
    }

    /// Events of one commit span several blocks; reads start in the middle of one, filter
    /// by type across them, count back from the newest, and pruning into a block keeps
    /// exactly the events after the cut.
    #[test]
    fn reads_and_pruning_cross_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::open(&crate::daemon::Home::at(dir.path()), Default::default()).unwrap();
        let n = 3 * blocks::BLOCK_EVENTS as u64 + 10;
        let kind = |i: u64| if i.is_multiple_of(3) { "TRADE_EXECUTED" } else { "ORDER_CREATED" };
        bus.publish_then((1..=n).map(|i| event(kind(i), i)).collect(), Vec::new());
        bus.publish("USER_CREATED", "users", serde_json::json!({}));
        wait_until(|| bus.last_seq() == n + 1);

        assert_eq!(seqs(&bus.read_since(0, None, 1000).unwrap()), (1..=n + 1).collect::<Vec<_>>());
        assert_eq!(seqs(&bus.read_since(100, None, 5).unwrap()), [101, 102, 103, 104, 105]);
        for past_the_end in [n + 1, i64::MAX as u64, u64::MAX] {
            assert!(bus.read_since(past_the_end, None, 5).unwrap().is_empty(), "nothing after {past_the_end}");
        }
        let trades = vec!["TRADE_EXECUTED".to_string()];
        let want: Vec<u64> = (120..=n).filter(|i| i.is_multiple_of(3)).take(60).collect();
        LINES_PARSED.with(|p| p.set(0));
        assert_eq!(seqs(&bus.read_since(119, Some(&trades), 60).unwrap()), want, "across blocks, one type");
        assert_eq!(LINES_PARSED.with(|p| p.get()), 60, "only the lines of the asked type are parsed");
        let all_trades = (1..=n).filter(|i| i.is_multiple_of(3)).count();
        LINES_PARSED.with(|p| p.set(0));
        assert_eq!(bus.read_since(0, Some(&trades), 1000).unwrap().len(), all_trades);
        assert_eq!(LINES_PARSED.with(|p| p.get()), all_trades, "a replay from the start parses what it sends");
        let users = vec!["USER_CREATED".to_string()];
        assert_eq!(seqs(&bus.read_since(0, Some(&users), 10).unwrap()), [n + 1], "blocks without the type are skipped");
        assert_eq!(bus.since_for_last(3, None).unwrap(), n - 2);
        let third_newest_trade = (1..=n).rev().filter(|i| i.is_multiple_of(3)).nth(2).unwrap();
        LINES_PARSED.with(|p| p.set(0));
        assert_eq!(bus.since_for_last(3, Some(&trades)).unwrap(), third_newest_trade - 1);
        assert_eq!(LINES_PARSED.with(|p| p.get()), 3, "a tail counts its type's lines without parsing the others");
        assert_eq!(bus.since_for_last(10 * n as usize, None).unwrap(), 0, "fewer than asked: from the start");
        // Counting only what `keep` takes (a trader's own): the 2nd newest trade of those
        // whose seq is a multiple of 9, and a scan bounded to the newest 5 trades starts
        // at the 5th newest when fewer are kept there.
        let nine = |e: &BusEvent| e.seq.is_multiple_of(9);
        let second_ninth = (1..=n).rev().filter(|i| i.is_multiple_of(9)).nth(1).unwrap();
        assert_eq!(bus.since_for_last_kept(2, Some(&trades), Some(&nine), usize::MAX).unwrap(), second_ninth - 1);
        let fifth_trade = (1..=n).rev().filter(|i| i.is_multiple_of(3)).nth(4).unwrap();
        assert_eq!(bus.since_for_last_kept(4, Some(&trades), Some(&nine), 5).unwrap(), fifth_trade - 1, "the scan stops");
        assert_eq!(bus.since_for_last_kept(10 * n as usize, Some(&trades), Some(&nine), usize::MAX).unwrap(), 0);

        let cut = blocks::BLOCK_EVENTS as u64 + 7;
        bus.prune(cut);
        wait_until(|| bus.first_kept() == cut + 1);
        assert_eq!(bus.read_since(0, None, 1).unwrap()[0].seq, cut + 1);
        assert_eq!(seqs(&bus.read_since(0, None, 1000).unwrap()), (cut + 1..=n + 1).collect::<Vec<_>>());
        bus.shutdown();
        let bus = Bus::open(&crate::daemon::Home::at(dir.path()), Default::default()).unwrap();
        assert_eq!((bus.first_kept(), bus.last_seq()), (cut + 1, n + 1), "the cut block reopens as cut");
        bus.shutdown();
    }

    /// Pages of a scan end at a block's end (where the next begins), together give every
    /// event once, in order, of the asked types, with each line as stored; `visit` stops
    /// a scan at once.
    #[test]
    fn a_scan_pages_through_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::open(&crate::daemon::Home::at(dir.path()), Default::default()).unwrap();
        let n = 5 * blocks::BLOCK_EVENTS as u64 + 10;
        let kind = |i: u64| if i.is_multiple_of(3) { "TRADE_EXECUTED" } else { "ORDER_CREATED" };
        bus.publish_then((1..=n).map(|i| event(kind(i), i)).collect(), Vec::new());
        wait_until(|| bus.last_seq() == n);
        let stored = bus.read_since(0, None, n as usize).unwrap();
        for types in [None, Some(vec!["TRADE_EXECUTED".to_string()])] {
            let (mut seen, mut since, mut pages) = (Vec::new(), 7, 0);
            loop {
                let page = bus
                    .scan_since(since, types.as_deref(), 1, &mut |seq, kind, line| {
                        seen.push((seq, kind.to_string(), line.to_string()));
                        true
                    })
                    .unwrap();
                pages += 1;
                assert!(page.through.is_multiple_of(blocks::BLOCK_EVENTS as u64) || page.through == n, "{page:?}");
                since = page.through;
                if !page.more {
                    break;
                }
            }
            assert!(pages >= 5, "a budget of one byte reads a block per page: {pages}");
            let want: Vec<_> = stored
                .iter()
                .filter(|e| e.seq > 7 && types.as_ref().is_none_or(|t| t.iter().any(|k| *k == e.kind)))
                .map(|e| (e.seq, e.kind.to_string(), e.line.clone()))
                .collect();
            assert_eq!(seen, want);
        }
        let mut left = 3;
        let stopped = bus
            .scan_since(100, None, usize::MAX, &mut |_, _, _| {
                left -= 1;
                left > 0
            })
            .unwrap();
        assert_eq!(stopped, Scanned { through: 103, more: true }, "stopped at the third event");
        bus.shutdown();
    }

    /// An older agt kept a row per event (`events`): a store of its is read as it is, its
    /// events before the new blocks, and pruned like them; an event it stored that a
    /// producer re-sends from its outbox (no mark yet) is not stored again.
    #[test]
    fn an_older_agts_row_per_event_store_is_read_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        std::fs::create_dir_all(home.store("events").parent().unwrap()).unwrap();
        let old = rusqlite::Connection::open(home.store("events")).unwrap();
        old.execute_batch(blocks::MIGRATIONS[0]).unwrap();
        old.execute_batch("PRAGMA user_version = 1").unwrap();
        let kinds = ["USER_CREATED", "ORDER_CREATED", "USER_CREATED", "ORDER_CREATED", "ORDER_CREATED"];
        for (i, kind) in kinds.iter().enumerate() {
            let seq = i as u64 + 1;
            let (line, _) = envelope(seq, &format!("old-{seq}"), kind, "users", "2026-01-01T00:00:00.000000Z", "{}");
            old.execute("INSERT INTO events VALUES (?1, ?2, ?3, ?4)", rusqlite::params![seq as i64, format!("old-{seq}"), kind, line])
                .unwrap();
        }
        drop(old);

        let bus = Bus::open(&home, Default::default()).unwrap();
        assert_eq!((bus.first_kept(), bus.last_seq()), (1, 5));
        let resent = NewEvent { event_id: "old-4".into(), ..event("ORDER_CREATED", 4) };
        bus.publish_outbox("orders", 9, vec![resent, event("ORDER_CREATED", 6)], Vec::new());
        bus.publish("USER_CREATED", "users", serde_json::json!({}));
        wait_until(|| bus.last_seq() == 7);
        assert_eq!(seqs(&bus.read_since(0, None, 100).unwrap()), [1, 2, 3, 4, 5, 6, 7], "old-4 was not stored again");
        assert_eq!(seqs(&bus.read_since(3, None, 3).unwrap()), [4, 5, 6]);
        let users = vec!["USER_CREATED".to_string()];
        assert_eq!(seqs(&bus.read_since(0, Some(&users), 100).unwrap()), [1, 3, 7]);
        assert_eq!(bus.since_for_last(2, Some(&users)).unwrap(), 2, "counting back into the old rows");
        assert_eq!(bus.since_for_last(4, None).unwrap(), 3);
        let odd = |e: &BusEvent| e.seq % 2 == 1;
        assert_eq!(bus.since_for_last_kept(2, None, Some(&odd), usize::MAX).unwrap(), 4, "kept: 7, then the old row 5");
        assert_eq!(bus.since_for_last_kept(2, Some(&users), Some(&odd), usize::MAX).unwrap(), 2);
        assert_eq!(bus.since_for_last_kept(9, Some(&users), Some(&odd), usize::MAX).unwrap(), 0, "fewer kept than asked");
        assert_eq!(bus.seq_before("2026-06-01T00:00:00.000000Z").unwrap(), 5, "the old rows' own stamps");
        assert_eq!(bus.seq_before("9999-01-01T00:00:00.000000Z").unwrap(), 7);

        bus.prune(6);
        wait_until(|| bus.first_kept() == 7);
        assert_eq!(seqs(&bus.read_since(0, None, 100).unwrap()), [7]);
        bus.shutdown();
    }
}
