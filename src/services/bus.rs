//! The event bus: every event gets a global sequence number and is kept in
//! `data/events.db` before anyone hears of it.
//!
//! Producers never wait: `publish_then` hands the events (and the replies that must not
//! overtake them) to the bus thread, which commits a whole drain of them in one
//! transaction, then sends the replies, then broadcasts the events. Live subscribers get a
//! bounded broadcast channel; one that falls behind is told it lagged and catches up from
//! the store ([`Bus::read_since`]), so a slow subscriber never blocks a producer.

use crate::api::Event;
use rusqlite::params;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;

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

const MIGRATIONS: &[&str] = &["CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        envelope TEXT NOT NULL
    );
    CREATE INDEX events_type ON events(type, seq);"];

/// An event before the bus has numbered it. `event_id` is chosen by the producer, so an
/// event re-sent from a service's outbox after a crash is stored once.
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
    pub fn encoded(kind: &'static str, source: &'static str, data: &impl serde::Serialize) -> Self {
        let text = serde_json::to_string(data).expect("event data encodes");
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
    pub kind: String,
    pub source: String,
    pub timestamp: String,
    pub line: Arc<str>,
    data: std::sync::OnceLock<serde_json::Value>,
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
        if !(line.contains(",\"data\":") && line.ends_with('}')) {
            // Not the layout `data_text` slices: parse it whole.
            let event: Event = serde_json::from_str(&line)?;
            return Ok(Self::with_line(event, line));
        }
        let h: Head = serde_json::from_str(&line)?;
        Ok(BusEvent {
            seq: h.seq,
            event_id: h.event_id,
            kind: h.kind,
            source: h.source,
            timestamp: h.timestamp,
            line: line.into(),
            data: std::sync::OnceLock::new(),
        })
    }

    fn with_line(e: Event, line: String) -> Self {
        BusEvent {
            seq: e.seq,
            event_id: e.event_id,
            kind: e.kind,
            source: e.source,
            timestamp: e.timestamp,
            line: line.into(),
            data: std::sync::OnceLock::from(e.data),
        }
    }

    /// The event's `data` as JSON text: the tail of its line (the envelope puts `data`
    /// last, both [`envelope`] and serde's encoding of [`Event`]), so followers that
    /// store it need not encode it again.
    pub fn data_text(&self) -> &str {
        match self.line.find(",\"data\":") {
            Some(at) if self.line.ends_with('}') => &self.line[at + 8..self.line.len() - 1],
            _ => "null",
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
/// with `data` already encoded by its producer.
fn envelope(seq: u64, event_id: &str, kind: &str, source: &str, timestamp: &str, data: &str) -> String {
    let mut out = Vec::with_capacity(112 + event_id.len() + data.len());
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    for (key, value) in [("event_id", event_id), ("type", kind), ("source", source), ("timestamp", timestamp)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        serde_json::to_writer(&mut out, value).expect("a string encodes");
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// Called by the bus thread once a batch of events is committed (a service then drops
/// them from its outbox).
pub type Committed = Box<dyn FnOnce() + Send>;

enum Msg {
    Publish { events: Vec<NewEvent>, then: Vec<Committed> },
    Stop,
}

/// A handle on the bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    live: broadcast::Sender<Arc<BusEvent>>,
    reader: Mutex<rusqlite::Connection>,
    last_seq: AtomicU64,
    /// Events handed to the bus so far, and events it has committed (or found stored
    /// already): a reader that waits for `processed >= submitted` sees every event
    /// published before it asked.
    submitted: AtomicU64,
    processed: tokio::sync::watch::Sender<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Bus {
    /// Opens `events.db` and starts the bus thread.
    pub fn open(home: &crate::daemon::Home, durability: crate::services::store::Durability) -> anyhow::Result<Bus> {
        let path = home.store("events");
        let conn = crate::services::store::open(&path, durability, MIGRATIONS)?;
        let last: u64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get::<_, i64>(0))? as u64;
        let reader = crate::services::store::open_reader(&path)?;
        let (tx, rx) = mpsc::channel();
        let (live, _) = broadcast::channel(8192);
        let inner = Arc::new(Inner {
            tx,
            live,
            reader: Mutex::new(reader),
            last_seq: AtomicU64::new(last),
            submitted: AtomicU64::new(0),
            processed: tokio::sync::watch::channel(0).0,
            thread: Mutex::new(None),
        });
        let worker = inner.clone();
        let handle = std::thread::Builder::new().name("bus".into()).spawn(move || {
            let checkpointer = crate::services::store::spawn_checkpointer(&path, std::time::Duration::from_millis(50));
            run(conn, &checkpointer, rx, &worker)
        })?;
        *inner.thread.lock().unwrap() = Some(handle);
        Ok(Bus { inner })
    }

    /// Persists `events`, then runs `then`, then broadcasts the events.
    pub fn publish_then(&self, events: Vec<NewEvent>, then: Vec<Committed>) {
        self.inner.submitted.fetch_add(events.len() as u64, Ordering::AcqRel);
        let _ = self.inner.tx.send(Msg::Publish { events, then });
    }

    pub fn publish(&self, kind: &'static str, source: &'static str, data: serde_json::Value) {
        self.publish_then(vec![NewEvent::new(kind, source, data)], Vec::new());
    }

    /// Waits until every event published before this call is committed (read-your-writes
    /// for `/api/events` and for services fed from the bus). Gives up after `timeout`.
    pub async fn sync(&self, timeout: std::time::Duration) {
        let target = self.inner.submitted.load(Ordering::Acquire);
        let mut rx = self.inner.processed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= target)).await;
    }

    /// Live events from now on. Pair it with [`Bus::read_since`] to replay first.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.inner.live.subscribe()
    }

    /// The highest sequence number committed so far.
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// Committed events with `seq > since`, oldest first, at most `limit`, optionally of
    /// some types only. Blocking: call it from `spawn_blocking` in async code.
    pub fn read_since(&self, since: u64, types: Option<&[String]>, limit: usize) -> anyhow::Result<Vec<BusEvent>> {
        let conn = self.inner.reader.lock().unwrap();
        let mut sql = String::from("SELECT envelope FROM events WHERE seq > ?");
        let mut args: Vec<rusqlite::types::Value> = vec![(since as i64).into()];
        if let Some(t) = types {
            sql.push_str(" AND type IN (");
            sql.push_str(&vec!["?"; t.len()].join(","));
            sql.push(')');
            args.extend(t.iter().map(|x| rusqlite::types::Value::from(x.clone())));
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push((limit.min(i64::MAX as usize) as i64).into());
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let line: String = row.get(0)?;
            out.push(BusEvent::from_line(line)?);
        }
        Ok(out)
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
    let mut batch = Vec::with_capacity(1024);
    let mut retry = RETRY_FIRST;
    loop {
        // A batch that failed to commit is tried again as it is (with what queued since):
        // its events keep their order, and no later event overtakes them.
        if batch.is_empty() {
            let Ok(first) = rx.recv() else { return };
            batch.push(first);
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
        }
        let started = Instant::now();
        let stop = batch.iter().any(|m| matches!(m, Msg::Stop));
        // Per event of the batch, in order: its seq, envelope and time if it is new, None
        // if it was stored already (re-sent from an outbox after a crash).
        let mut stored: Vec<Option<(u64, String, String)>> = Vec::new();
        let mut next = seq;
        let result: rusqlite::Result<()> = (|| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events(seq, event_id, type, envelope) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(event_id) DO NOTHING",
                )?;
                for e in batch.iter().flat_map(|m| match m {
                    Msg::Publish { events, .. } => events.as_slice(),
                    Msg::Stop => &[],
                }) {
                    let timestamp = crate::api::now_rfc3339();
                    let line = envelope(next + 1, &e.event_id, e.kind, e.source, &timestamp, &e.text);
                    if insert.execute(params![(next + 1) as i64, e.event_id, e.kind, line])? == 0 {
                        stored.push(None);
                        continue;
                    }
                    next += 1;
                    stored.push(Some((next, line, timestamp)));
                }
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
            // events.db is unwritable for now (disk full, locked by another process).
            tracing::error!(error = %e, retry_in_ms = retry.as_millis() as u64, "the event bus could not commit; trying again");
            std::thread::sleep(retry);
            retry = (retry * 2).min(RETRY_MAX);
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            continue;
        }
        retry = RETRY_FIRST;
        seq = next;
        inner.last_seq.store(seq, Ordering::Release);
        crate::daemon::metrics::observe_commit("bus", started.elapsed());
        let mut handled = 0u64;
        let mut committed: Vec<BusEvent> = Vec::new();
        let mut stored = stored.into_iter();
        for m in batch.drain(..) {
            let Msg::Publish { events, then } = m else { continue };
            for e in events {
                handled += 1;
                let Some(Some((seq, line, timestamp))) = stored.next() else { continue };
                crate::daemon::metrics::bus_event(e.kind);
                committed.push(BusEvent {
                    seq,
                    event_id: e.event_id,
                    kind: e.kind.to_string(),
                    source: e.source.to_string(),
                    timestamp,
                    line: line.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let line = envelope(42, &new.event_id, new.kind, new.source, &event.timestamp, &new.text);
            assert_eq!(line, serde_json::to_string(&event).unwrap());
            let e = BusEvent { data: new.value.map(std::sync::OnceLock::from).unwrap_or_default(), ..BusEvent::from_event(event.clone()) };
            assert_eq!(e.data_text(), new.text);
            assert_eq!(e.data(), &data);
            // Read back from the store: the envelope's fields, and the data, unparsed until asked.
            let back = BusEvent::from_line(line).unwrap();
            assert_eq!((back.seq, back.kind.as_str(), back.source.as_str()), (42, "ORDER_CREATED", "orders"));
            assert_eq!((&back.event_id, &back.timestamp), (&event.event_id, &event.timestamp));
            assert!(back.data.get().is_none(), "data is not parsed on the way in");
            assert_eq!(back.data_text(), new.text);
            assert_eq!(back.data(), &data);
        }
    }

    /// A stored line whose `data` is not last (no agt writes one) is parsed whole rather
    /// than sliced wrong.
    #[test]
    fn a_line_in_another_layout_still_gives_its_data() {
        let line = r#"{"data":{"a":1},"seq":7,"event_id":"e","type":"T","source":"s","timestamp":"t"}"#;
        let e = BusEvent::from_line(line.to_string()).unwrap();
        assert_eq!((e.seq, e.kind.as_str()), (7, "T"));
        assert_eq!(e.data(), &serde_json::json!({"a": 1}));
        assert!(BusEvent::from_line("{\"seq\":1}".to_string()).is_err(), "a line without an envelope is an error");
    }
}
