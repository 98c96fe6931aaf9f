//! The audit service: an append-only, hash-chained record of every command and event.
//!
//! Record `n` stores `hash = sha256(prev_hash | seq | timestamp | actor | action | detail)`
//! with `prev_hash` the hash of record `n-1`, so changing, removing or reordering any
//! record breaks the chain from that point; `verify` names the first record that fails.
//! A chain's end cut off leaves a shorter chain that hashes well: so the end is also kept
//! outside `audit.db` after each commit (`anchor`, `data/audit.head`), and `verify` asks
//! that the chain still hold it.
//! Events arrive from the bus through a follower and are recorded once each (by their
//! bus sequence), so a restart replays what was missed instead of losing or doubling it.

mod anchor;
mod commands;
mod records;

pub use commands::{Command, CommandLog, Staged};
pub use records::Filter;

use crate::api::{AuditRecord, AuditVerify};
use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

pub enum Cmd {
    /// A command someone ran (`actor` did `action`); the reply comes after commit.
    Append {
        actor: String,
        action: String,
        detail: serde_json::Value,
        reply: Option<Reply<()>>,
    },
    /// A command run under durability "full" (no journal of commands), appended once by
    /// its `id`: one sent again after audit restarted (`routes::audit_commands`) is not
    /// stored twice when the incarnation that failed had committed it before replying.
    AppendOnce {
        id: CommandId,
        actor: String,
        action: String,
        detail: serde_json::Value,
        reply: Reply<()>,
    },
    /// A bus event to record (skipped if its sequence was recorded already).
    Event(crate::daemon::follower::Handed),
    /// A command the HTTP layer journalled (`commands`) and answered: chained and stored
    /// once (by its journal number).
    Journalled {
        seq: i64,
        command: Command,
    },
    /// Chain the commands the journal holds past the last one chained: the HTTP layer
    /// stopped handing them over because the mailbox was full (`CommandLog`'s `behind`).
    CatchUp,
    /// The last bus sequence recorded, for the follower to resume after.
    LastEventSeq(Reply<u64>),
    /// Records after `since`, oldest first, at most `limit`: the first ones after it (a
    /// reader resuming where it stopped), or without `since` the newest ones.
    List {
        since: Option<u64>,
        filter: records::Filter,
        limit: usize,
        reply: Reply<Vec<AuditRecord>>,
    },
    Verify(Reply<AuditVerify>),
}

pub struct Audit {
    last_seq: u64,
    last_hash: String,
    /// The records of the open transaction not written yet (`records`).
    pending: records::Pending,
    /// The newest seq of an older agt's table of a row per record (0: none).
    legacy_last: u64,
    last_event_seq: u64,
    log: CommandLog,
    /// The last journalled command chained, the last one `meta` holds as stored, and how
    /// far the journal has been pruned.
    journal_applied: i64,
    journal_stored: i64,
    journal_pruned: i64,
    /// Commands wait for audit's commit ("full" durability: no journal of commands).
    commits_answer_commands: bool,
    /// The chain's end as kept outside the store, written after each commit.
    anchor: anchor::Anchor,
    /// Ids of [`Cmd::AppendOnce`] stored since `command_ids` was last pruned.
    ids_since_prune: u32,
}

/// The id of a command run under durability "full", unique to it: the milliseconds of
/// the Unix time it was given at, then a counter (from a random start) in the low 20
/// bits. Stored in `command_ids` with its record, in the same commit, so an incarnation
/// started after one that committed it and failed before replying finds it there; as
/// ids grow with time, those older than [`COMMAND_IDS_KEPT`] go by a range of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandId(i64);

impl CommandId {
    pub fn next() -> CommandId {
        static COUNTER: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
        let counter = COUNTER.get_or_init(|| std::sync::atomic::AtomicU64::new(rand::random()));
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xF_FFFF;
        CommandId(((unix_ms() << 20) | n) as i64)
    }

    /// The smallest id given at `ms` (Unix time).
    fn first_at(ms: u64) -> i64 {
        (ms << 20) as i64
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How long a command's id is kept after it was given: far longer than a command may
/// run and then send its record again (`REAPPEND_WITHIN`, 10 s, after the command).
const COMMAND_IDS_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// `command_ids` is pruned once this many ids have been stored since the last time.
const PRUNE_IDS_EVERY: u32 = 256;

/// How long audit gathers events and journalled commands into one commit (see
/// [`Service::linger`]).
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// A catch-up from the journal of commands reads the last this many under the
/// journal's lock (every command's append waits for it meanwhile): a few hundred
/// microseconds.
const CATCH_UP_UNDER_LOCK: i64 = 256;

/// A catch-up from the journal of commands holds about this many commands in memory at
/// a time (a segment is read whole: ~13 k commands of ~300 bytes in 4 MiB).
const CATCH_UP_AT_ONCE: usize = 8192;

/// The journal of commands is pruned once this many stored commands have gathered in it.
const PRUNE_EVERY: i64 = 1024;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain hash of one record.
pub fn chain_hash(prev: &str, seq: u64, timestamp: &str, actor: &str, action: &str, detail: &str) -> String {
    use std::io::Write;
    // The sequence's decimal digits, without a String for them (this runs for every
    // record, ~5 per order).
    let mut digits = [0u8; 20];
    let mut at = std::io::Cursor::new(&mut digits[..]);
    write!(at, "{seq}").expect("a u64 has at most 20 digits");
    let len = at.position() as usize;
    let seq = &digits[..len];
    let mut h = Sha256::new();
    for part in [prev.as_bytes(), seq, timestamp.as_bytes(), actor.as_bytes(), action.as_bytes(), detail.as_bytes()] {
        h.update(part);
        h.update([0x1f]); // unit separator: "ab"+"c" must not hash like "a"+"bc"
    }
    // Lowercase hex, written into place (`hex::encode` builds it a char at a time).
    let mut out = [0u8; 64];
    hex::encode_to_slice(h.finalize(), &mut out).expect("32 bytes are 64 hex digits");
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

/// An event's record's detail: `{"data", "event_id", "seq"}` as `json!` would write it
/// (keys sorted), with the data's text as its producer encoded it. Written into one
/// buffer of the right size (this runs ~4 times per order).
fn event_detail(e: &crate::services::bus::BusEvent) -> String {
    use std::io::Write;
    let data = e.data_text();
    let mut out = Vec::with_capacity(data.len() + e.event_id.len() + 48);
    out.extend_from_slice(b"{\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b",\"event_id\":");
    crate::api::json::write_str(&mut out, &e.event_id);
    write!(out, ",\"seq\":{}}}", e.seq).expect("a Vec takes any write");
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// An event's record's actor, `event:<source>`: a constant for the services that
/// publish events, so that no string is built per event.
fn event_actor(source: &str) -> Cow<'static, str> {
    const KNOWN: &[&str] = &[
        "event:orders",
        "event:trading",
        "event:risk",
        "event:market",
        "event:users",
        "event:auth",
        "event:config",
        "event:notify",
        "event:health",
    ];
    match KNOWN.iter().find(|k| &k[6..] == source) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(format!("event:{source}")),
    }
}

impl Audit {
    fn append(&mut self, tx: &Connection, actor: &str, action: &str, detail: &serde_json::Value) -> rusqlite::Result<()> {
        self.append_text(tx, actor, action, detail.to_string())
    }

    fn append_text(&mut self, tx: &Connection, actor: &str, action: &str, detail: String) -> rusqlite::Result<()> {
        self.append_at(tx, crate::api::now_rfc3339(), actor, action, detail)
    }

    fn append_at(&mut self, tx: &Connection, ts: String, actor: &str, action: &str, detail: String) -> rusqlite::Result<()> {
        let seq = self.last_seq + 1;
        let hash = chain_hash(&self.last_hash, seq, &ts, actor, action, &detail);
        let record = records::Chained { seq, timestamp: &ts, actor, action, detail: &detail, prev_hash: &self.last_hash, hash: &hash };
        self.pending.push(tx, &record, self.last_event_seq)?;
        self.last_seq = seq;
        self.last_hash = hash;
        Ok(())
    }

    /// Chains the commands the journal holds past the last one chained, in journal
    /// order, and then has the HTTP layer hand commands over by message again. Most are
    /// read without the journal's lock (commands go on being appended meanwhile); only
    /// the last few, and the switch back, are read under it, so that no command is
    /// appended between the last one read and the switch.
    fn catch_up(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        loop {
            let Some(snapshot) = self.log.lock().journal.as_ref().map(|j| j.snapshot()) else { return Ok(()) };
            if snapshot.last() - self.journal_applied > CATCH_UP_UNDER_LOCK {
                self.chain_journalled(tx, snapshot.read(self.journal_applied, CATCH_UP_AT_ONCE)?)?;
                continue;
            }
            let log = self.log.clone();
            let mut shared = log.lock();
            if let Some(journal) = shared.journal.as_ref() {
                let rest = journal.snapshot().read(self.journal_applied, usize::MAX)?;
                self.chain_journalled(tx, rest)?;
            }
            shared.behind = false;
            return Ok(());
        }
    }

    fn chain_journalled(&mut self, tx: &Connection, commands: impl IntoIterator<Item = (i64, Command)>) -> Result<(), ServiceError> {
        for (seq, c) in commands {
            if seq > self.journal_applied {
                self.append_at(tx, c.timestamp, &c.actor, &c.action, Box::<str>::from(c.detail).into_string())?;
                self.journal_applied = seq;
            }
        }
        Ok(())
    }

    /// Walks the chain: each record must follow the one before and hash as it says. Then
    /// the chain must hold its anchor: a tail cut off leaves a chain that hashes well.
    fn verify(&self, tx: &Connection) -> rusqlite::Result<AuditVerify> {
        let (mut prev, mut expect_seq, mut n, mut chain_end) = (GENESIS.to_string(), 1u64, 0u64, 0u64);
        let mut first_bad = None;
        records::walk(tx, |r| {
            n += 1;
            chain_end = chain_end.max(r.seq);
            if first_bad.is_some() {
                return;
            }
            let good =
                r.seq == expect_seq && r.prev_hash == prev && chain_hash(&prev, r.seq, r.timestamp, r.actor, r.action, r.detail) == r.hash;
            if !good {
                // A line that no longer parses walks as seq 0.
                first_bad = Some(if r.seq == 0 { expect_seq } else { expect_seq.min(r.seq) });
            }
            prev = r.hash.to_string();
            expect_seq = r.seq + 1;
        })?;
        let (unmet_anchor, anchor_unreadable) = self.anchor.check(tx, chain_end)?;
        if let Some(missing) = unmet_anchor.as_ref().map(crate::api::UnmetAnchor::first_missing) {
            first_bad = Some(first_bad.map_or(missing, |bad: u64| bad.min(missing)));
        }
        // An anchor that cannot be read leaves the chain's end unchecked: not ok, though
        // no record is known bad.
        let ok = first_bad.is_none() && anchor_unreadable.is_none();
        Ok(AuditVerify { ok, records: n, first_bad, unmet_anchor, anchor_unreadable })
    }

    /// Writes the records not written yet into the open transaction, so that it can
    /// commit or be read.
    fn write_pending(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        self.pending.write(tx, self.last_event_seq)
    }
}

impl Service for Audit {
    type Cmd = Cmd;
    const NAME: &'static str = "audit";
    const MIGRATIONS: &'static [&'static str] = records::MIGRATIONS;

    /// Nobody's answer waits for audit's commit but under "full" durability: it runs
    /// lower than the order path, and catches up when the order path waits
    /// (`services::priority`).
    fn background(durability: crate::services::store::Durability) -> bool {
        durability == crate::services::store::Durability::Normal
    }

    /// Not with "full" durability: there every command waits for audit's commit.
    fn linger(&self) -> Option<std::time::Duration> {
        (!self.commits_answer_commands).then_some(LINGER)
    }

    /// Events and journalled commands are recorded already (in the bus, in the journal
    /// of commands) and a follower is not waited for.
    fn deferrable(cmd: &Cmd) -> bool {
        matches!(cmd, Cmd::Event(_) | Cmd::Journalled { .. } | Cmd::CatchUp | Cmd::Append { reply: None, .. })
    }

    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let last = records::newest(conn)?;
        // The feed's position: the newest event record's seq (older stores kept it in meta).
        let in_meta: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'last_event_seq'", [], |r| r.get(0))?;
        let last_event_seq = (in_meta as u64).max(records::last_event_seq(conn)?);
        let (last_seq, last_hash) = last.unwrap_or((0, GENESIS.to_string()));
        // Before anything is chained: the anchor is compared with the chain as the last
        // run left it.
        let anchor = anchor::Anchor::open(ctx.home.data_dir(), conn, last_seq, &last_hash)?;
        let stored: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'command_journal_seq'", [], |r| r.get(0))?;
        let mut audit = Audit {
            last_seq,
            last_hash,
            pending: records::Pending::default(),
            legacy_last: records::legacy_last(conn)?,
            last_event_seq,
            log: ctx.command_log.clone(),
            journal_applied: stored,
            journal_stored: stored,
            journal_pruned: 0,
            commits_answer_commands: ctx.durability == crate::services::store::Durability::Full,
            anchor,
            ids_since_prune: PRUNE_IDS_EVERY,
        };
        // Commands answered but not yet stored when the daemon (or this service) stopped
        // are chained first, before anything newer. The journal stays locked meanwhile:
        // a command answered now is numbered after them.
        let log = audit.log.clone();
        let mut shared = log.lock();
        let mut journal = match shared.journal.take() {
            Some(j) => j,
            None => crate::services::journal::Journal::open_named(
                &ctx.home,
                commands::NAME,
                ctx.durability,
                crate::services::journal::SEGMENT_BYTES,
            )?,
        };
        // Every segment may have been pruned (all stored) before the last stop: the
        // journal then numbers on from the stored mark, not from 1.
        journal.continue_after(stored);
        let (_, unstored) = journal.after(stored)?;
        if !unstored.is_empty() {
            tracing::info!(commands = unstored.len(), "audit: storing commands answered before the last stop");
            let tx = conn.unchecked_transaction()?;
            audit.chain_journalled(&tx, unstored)?;
            audit.write_pending(&tx)?;
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'command_journal_seq'", [audit.journal_applied])?;
            tx.commit()?;
            audit.journal_stored = audit.journal_applied;
            audit.anchor.advance(audit.last_seq, &audit.last_hash);
        }
        // With "full" durability commands wait for audit's group commit instead.
        // Every command journalled so far is stored now: the next ones come by message.
        shared.behind = false;
        if !audit.commits_answer_commands {
            shared.journal = Some(journal);
        }
        drop(shared);
        Ok(audit)
    }

    /// Stores how far the journal of commands is chained, once per batch; prunes what
    /// earlier batches committed.
    fn before_commit(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        if self.journal_stored - self.journal_pruned >= PRUNE_EVERY {
            self.log.prune(self.journal_stored)?;
            self.journal_pruned = self.journal_stored;
        }
        if self.journal_applied != self.journal_stored {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'command_journal_seq'")?.execute([self.journal_applied])?;
            self.journal_stored = self.journal_applied;
        }
        if self.ids_since_prune >= PRUNE_IDS_EVERY {
            let kept_from = unix_ms().saturating_sub(COMMAND_IDS_KEPT.as_millis() as u64);
            tx.prepare_cached("DELETE FROM command_ids WHERE id < ?1")?.execute([CommandId::first_at(kept_from)])?;
            self.ids_since_prune = 0;
        }
        self.write_pending(tx)?;
        Ok(())
    }

    /// Anchors the chain's end outside the store, now that the commit holds it (`anchor`).
    fn after_commit(&mut self) {
        self.anchor.advance(self.last_seq, &self.last_hash);
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Append { actor, action, detail, reply } => {
                self.append(tx, &actor, &action, &detail)?;
                if let Some(r) = reply {
                    after.reply(r, Ok(()));
                }
            }
            Cmd::AppendOnce { id, actor, action, detail, reply } => {
                // Held already: an incarnation committed it, then failed before its reply.
                let new = tx.prepare_cached("INSERT OR IGNORE INTO command_ids (id) VALUES (?1)")?.execute([id.0])? == 1;
                if new {
                    self.append(tx, &actor, &action, &detail)?;
                    self.ids_since_prune += 1;
                }
                after.reply(reply, Ok(()));
            }
            Cmd::Event(handed) => {
                if handed.is_next(self.last_event_seq) {
                    let e = &handed.event;
                    // `{"data", "event_id", "seq"}` as `json!` would write it (keys sorted),
                    // with the data's text as its producer encoded it (no copy, no second
                    // encoding). The record's seq is where `load` finds the feed's
                    // position again.
                    let detail = event_detail(e);
                    // Moved first: a block written by this append holds the feed's
                    // position after it.
                    self.last_event_seq = e.seq;
                    self.append_text(tx, &event_actor(&e.source), &e.kind, detail)?;
                }
            }
            Cmd::Journalled { seq, command } => self.chain_journalled(tx, [(seq, command)])?,
            Cmd::CatchUp => self.catch_up(tx)?,
            Cmd::LastEventSeq(reply) => after.reply(reply, Ok(self.last_event_seq)),
            Cmd::List { since, filter, limit, reply } => {
                self.write_pending(tx)?;
                let list = match since {
                    Some(since) => records::after(tx, self.legacy_last, since, &filter, limit)?,
                    None => records::newest_records(tx, &filter, limit)?,
                };
                after.reply(reply, Ok(list));
            }
            Cmd::Verify(reply) => {
                self.write_pending(tx)?;
                after.reply(reply, Ok(self.verify(tx)?));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(json.to_string()).unwrap()
    }

    #[test]
    fn a_command_journals_its_detail_as_json_and_reads_the_older_string_form_too() {
        let c =
            Command { timestamp: "t".into(), actor: "socket".into(), action: "POST /api/x".into(), detail: raw(r#"{"body":{"a":"b"}}"#) };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""detail":{"body":{"a":"b"}}"#), "{text}");
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
        let older = r#"{"timestamp":"t","actor":"socket","action":"POST /api/x","detail":"{\"body\":{\"a\":\"b\"}}"}"#;
        assert_eq!(serde_json::from_str::<Command>(older).unwrap(), c);
    }

    #[test]
    fn the_hash_covers_every_field_and_the_boundaries_between_them() {
        let a = chain_hash(GENESIS, 1, "t", "ab", "c", "{}");
        assert_ne!(a, chain_hash(GENESIS, 1, "t", "a", "bc", "{}"));
        assert_ne!(a, chain_hash(GENESIS, 2, "t", "ab", "c", "{}"));
        assert_ne!(a, chain_hash(&a, 1, "t", "ab", "c", "{}"));
        assert_eq!(a, chain_hash(GENESIS, 1, "t", "ab", "c", "{}"));
        // Records already stored keep verifying: the hash of a fixed record is what the
        // first chain gave (sha256 of the parts, each followed by 0x1f, in lowercase hex).
        let mut h = Sha256::new();
        h.update(format!("{GENESIS}\x1f18446744073709551615\x1ft\x1fab\x1fc\x1f{{}}\x1f"));
        assert_eq!(chain_hash(GENESIS, u64::MAX, "t", "ab", "c", "{}"), hex::encode(h.finalize()));
    }

    #[test]
    fn an_events_actor_names_its_source() {
        for source in ["orders", "trading", "risk", "health", "a-plugin"] {
            assert_eq!(event_actor(source), format!("event:{source}"));
        }
        assert!(matches!(event_actor("orders"), Cow::Borrowed(_)), "a service's name is not built per event");
    }

    /// The event `seq`, handed over by a follower that left audit at `after`.
    fn event(after: u64, seq: u64) -> crate::daemon::follower::Handed {
        let event = crate::api::Event {
            seq,
            event_id: format!("evt_{seq}"),
            kind: "ORDER_CREATED".into(),
            source: "orders".into(),
            timestamp: crate::api::now_rfc3339(),
            data: serde_json::json!({"order_id": "ord_1", "quantity": "1.5"}),
        };
        let event = std::sync::Arc::new(crate::services::bus::BusEvent::from_event(event));
        crate::daemon::follower::Handed { after, event }
    }

    /// An admin's `USER_CREATE` command, nobody waiting for it.
    fn user_created() -> Cmd {
        Cmd::Append { actor: "admin".into(), action: "USER_CREATE".into(), detail: serde_json::json!({}), reply: None }
    }

    /// Every record's action, in chain order.
    fn actions(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        records::walk(conn, |r| out.push(r.action.to_string())).unwrap();
        out
    }

    /// Record `seq`'s detail, as it was hashed.
    fn detail_of(conn: &Connection, seq: u64) -> String {
        let mut out = None;
        records::walk(conn, |r| {
            if r.seq == seq {
                out = Some(r.detail.to_string());
            }
        })
        .unwrap();
        out.expect("the record is stored")
    }

    /// A context on a home in `dir`, its bus, and audit's store opened there.
    fn opened(dir: &std::path::Path) -> (crate::services::bus::Bus, ServiceCtx, Connection) {
        let (bus, ctx) = ServiceCtx::for_tests(dir);
        let conn = crate::services::store::open(&ctx.home.store("audit"), Default::default(), records::MIGRATIONS).unwrap();
        (bus, ctx, conn)
    }

    #[test]
    fn an_event_record_reads_as_before_and_a_reload_resumes_after_the_newest_one() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        for (prev, seq) in [(0, 3), (3, 7)] {
            svc.handle(&tx, Cmd::Event(event(prev, seq)), &mut after).unwrap();
        }
        // A command's record after the events: the feed's position is still the event's.
        let detail = serde_json::json!({"user": "x"});
        svc.handle(&tx, Cmd::Append { actor: "admin".into(), action: "USER_CREATE".into(), detail, reply: None }, &mut after).unwrap();
        svc.handle(&tx, Cmd::Event(event(3, 7)), &mut after).unwrap(); // replayed: ignored
        svc.handle(&tx, Cmd::Event(event(9, 10)), &mut after).unwrap(); // after a gap (8 and 9 lost): ignored
        svc.before_commit(&tx).unwrap();
        let detail = detail_of(&tx, 2);
        let as_json = serde_json::json!({"seq": 7, "event_id": "evt_7", "data": {"order_id": "ord_1", "quantity": "1.5"}});
        assert_eq!(detail, as_json.to_string(), "the same text json! gave, so old and new records read alike");
        tx.commit().unwrap();
        let reloaded = Audit::load(&conn, &ctx).unwrap();
        assert_eq!((reloaded.last_event_seq, reloaded.last_seq), (7, 3));
        assert!(reloaded.verify(&conn.transaction().unwrap()).unwrap().ok);
        bus.shutdown();
    }

    /// Under durability "full" a command's record is sent again after audit restarted
    /// without answering; when the incarnation that failed had committed it, the record
    /// was stored twice. Sent under the command's id, it is stored once, whichever
    /// incarnation gets it, and the chain verifies.
    #[test]
    fn a_command_sent_again_under_its_id_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let once = |id, action: &str| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let cmd = Cmd::AppendOnce { id, actor: "socket".into(), action: action.into(), detail: serde_json::json!({"body": 1}), reply };
            (cmd, answer)
        };
        let (first, second) = (CommandId::next(), CommandId::next());
        assert_ne!(first, second);
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        let (cmd, lost) = once(first, "POST /api/first");
        svc.handle(&tx, cmd, &mut after).unwrap();
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();
        // Committed, and the incarnation dies before its reply goes out.
        drop((svc, after));
        assert!(lost.blocking_recv().is_err());

        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        let (again, _answer) = once(first, "POST /api/first");
        svc.handle(&tx, again, &mut after).unwrap();
        assert!(!after.is_empty(), "the command is answered, as stored");
        let (next, _) = once(second, "POST /api/second");
        svc.handle(&tx, next, &mut after).unwrap();
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();
        assert_eq!(actions(&conn), ["POST /api/first", "POST /api/second"]);
        assert!(svc.verify(&conn.transaction().unwrap()).unwrap().ok);
        bus.shutdown();
    }

    /// A handle on an audit service that says it is running, whose mailbox the test
    /// reads instead of a service.
    fn running_handle() -> (
        crate::services::actor::Handle<Cmd>,
        std::sync::Arc<crate::services::actor::Status>,
        std::sync::mpsc::Receiver<crate::services::actor::Envelope<Cmd>>,
    ) {
        let (sender, mailbox) = std::sync::mpsc::channel();
        let status = std::sync::Arc::new(crate::services::actor::Status::new("audit"));
        status.set_state(crate::services::actor::State::Running);
        (crate::services::actor::Handle::new(sender, status.clone()), status, mailbox)
    }

    /// A command answered from the journal and never seen by the service (it stopped
    /// first: the journal's message went nowhere) is chained when audit next starts,
    /// once, in journal order, and the chain verifies.
    #[test]
    fn commands_answered_from_the_journal_are_stored_when_audit_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        svc.handle(&tx, user_created(), &mut after).unwrap();
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();

        let (nobody, status, _unserved) = running_handle();
        for i in 1..=3 {
            let answered = ctx.command_log.append(&nobody, "admin".into(), format!("POST /api/x{i}"), raw(r#"{"query":null}"#));
            assert!(matches!(answered, Some(Ok(()))), "journalled and answered");
        }
        status.set_state(crate::services::actor::State::Restarting);
        let refused = ctx.command_log.append(&nobody, "admin".into(), "POST /api/x4".into(), raw("{}"));
        assert!(matches!(refused, Some(Err(_))), "refused while audit is down, as before the journal");
        drop(svc);
        let svc = Audit::load(&conn, &ctx).unwrap();
        assert_eq!((svc.last_seq, svc.journal_applied), (4, 3));
        let actions = actions(&conn);
        assert_eq!(actions, ["USER_CREATE", "POST /api/x1", "POST /api/x2", "POST /api/x3"]);

        // Started again, it stores them no second time; a late message for one is ignored.
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        assert_eq!(svc.last_seq, 4);
        let tx = conn.transaction().unwrap();
        let command = Command { timestamp: "t".into(), actor: "admin".into(), action: "POST /api/x3".into(), detail: raw("{}") };
        svc.handle(&tx, Cmd::Journalled { seq: 3, command }, &mut after).unwrap();
        assert_eq!(svc.last_seq, 4);
        assert!(svc.verify(&tx).unwrap().ok);
        bus.shutdown();
    }

    /// Once every command is stored, pruning deletes every segment of the journal; at
    /// the next start the journal must number on from the stored mark. It began again
    /// at 1, below the mark, so the commands answered after that start were skipped as
    /// stored and their records lost (found by a crash audit; no crash needed).
    #[test]
    fn commands_after_a_start_that_finds_the_journal_pruned_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let (nobody, _status, _unserved) = running_handle();
        let n = PRUNE_EVERY + 10;
        let _ = Audit::load(&conn, &ctx).unwrap();
        for i in 1..=n {
            assert!(matches!(ctx.command_log.append(&nobody, "admin".into(), format!("POST /api/x{i}"), raw("{}")), Some(Ok(()))));
        }
        // A start stores them; its first commit prunes the whole journal.
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let tx = conn.transaction().unwrap();
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();
        assert_eq!(std::fs::read_dir(ctx.home.data_dir().join(commands::NAME)).map_or(0, |d| d.count()), 0, "all pruned");
        // The daemon stops before another command; the next process opens the journal anew.
        drop(svc);
        let ctx = ServiceCtx { command_log: Default::default(), ..ctx.clone() };
        let _svc = Audit::load(&conn, &ctx).unwrap();
        assert!(matches!(ctx.command_log.append(&nobody, "admin".into(), "POST /api/after".into(), raw("{}")), Some(Ok(()))));
        let ctx = ServiceCtx { command_log: Default::default(), ..ctx.clone() };
        let svc = Audit::load(&conn, &ctx).unwrap();
        assert_eq!(svc.journal_applied, n + 1, "numbered on from the stored mark");
        assert_eq!(actions(&conn).last().map(String::as_str), Some("POST /api/after"), "its record is stored");
        bus.shutdown();
    }

    /// Staged commands reach the journal together, in one write, when the first of them
    /// is written through; the others are then written already. Audit is told each
    /// once, in journal order, only after they are in the journal.
    #[test]
    fn staged_commands_are_written_together_by_the_first_write_through() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, conn) = opened(dir.path());
        let _svc = Audit::load(&conn, &ctx).unwrap();
        let (audit, _, mailbox) = running_handle();
        let log = &ctx.command_log;
        let journalled = || log.lock().journal.as_ref().unwrap().last();
        let told = || -> Vec<(i64, String)> {
            mailbox
                .try_iter()
                .filter_map(|m| match m {
                    crate::services::actor::Envelope::Cmd(Cmd::Journalled { seq, command }) => Some((seq, command.action)),
                    _ => None,
                })
                .collect()
        };
        let tickets: Vec<_> = (1..=3)
            .map(|i| match log.stage(&audit, "admin".into(), format!("POST /api/x{i}"), raw("{}")) {
                super::commands::Staged::Queued(ticket) => ticket,
                other => panic!("not queued: {other:?}"),
            })
            .collect();
        assert_eq!(journalled(), 0, "staged, not written");
        assert!(told().is_empty(), "audit hears of a command only once it is in the journal");
        log.write_through(&audit, tickets[1]).unwrap();
        assert_eq!(journalled(), 3, "the middle ticket wrote all three");
        let expected: Vec<(i64, String)> = (1..=3).map(|i| (i, format!("POST /api/x{i}"))).collect();
        assert_eq!(told(), expected);
        log.write_through(&audit, tickets[0]).unwrap();
        log.write_through(&audit, tickets[2]).unwrap();
        assert_eq!(journalled(), 3, "written already: nothing more");
        assert!(told().is_empty());
        assert!(matches!(log.append(&audit, "admin".into(), "POST /api/x4".into(), raw("{}")), Some(Ok(()))));
        assert_eq!((journalled(), told()), (4, vec![(4, "POST /api/x4".to_string())]));

        // Only a command with others in flight waits for theirs to be staged.
        let (first, alone) = log.enter();
        let (second, others) = log.enter();
        assert_eq!((alone, others), (false, true));
        drop((first, second));
        assert!(!log.enter().1, "both answered: the next is alone again");
        bus.shutdown();
    }

    /// With audit's mailbox full, commands are journalled and not handed over: audit
    /// is told once to catch up, reads them all back from the journal, chains each once
    /// in journal order, and from then on takes commands by message again.
    #[test]
    fn a_full_mailbox_sends_commands_to_the_journal_and_audit_catches_up_from_it() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let (audit, status, mailbox) = running_handle();
        let append = |i: usize| {
            let answered = ctx.command_log.append(&audit, "admin".into(), format!("POST /api/x{i}"), raw("{}"));
            assert!(matches!(answered, Some(Ok(()))), "journalled and answered");
        };
        let told = || -> Vec<String> {
            mailbox
                .try_iter()
                .map(|m| match m {
                    crate::services::actor::Envelope::Cmd(Cmd::Journalled { seq, .. }) => format!("command {seq}"),
                    crate::services::actor::Envelope::Cmd(Cmd::CatchUp) => "catch up".into(),
                    _ => "other".into(),
                })
                .collect()
        };
        append(1);
        status.depth.store(commands::MAILBOX_BOUND, Relaxed); // full: the next ones stay in the journal
        for i in 2..=600 {
            append(i);
        }
        assert_eq!(told(), ["command 1", "catch up"], "one message to catch up, not one per command");
        status.depth.store(0, Relaxed);
        append(601);
        assert!(told().is_empty(), "still behind: the journal holds it until audit has caught up");

        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        let command = Command { timestamp: "t".into(), actor: "admin".into(), action: "POST /api/x1".into(), detail: raw("{}") };
        svc.handle(&tx, Cmd::Journalled { seq: 1, command }, &mut after).unwrap();
        svc.handle(&tx, Cmd::CatchUp, &mut after).unwrap();
        append(602);
        assert_eq!(told(), ["command 602"], "caught up: commands come by message again");
        // A second catch-up reads 602 from the journal; its message then changes nothing.
        svc.handle(&tx, Cmd::CatchUp, &mut after).unwrap();
        let command = Command { timestamp: "t".into(), actor: "admin".into(), action: "POST /api/x602".into(), detail: raw("{}") };
        svc.handle(&tx, Cmd::Journalled { seq: 602, command }, &mut after).unwrap();
        svc.write_pending(&tx).unwrap();
        let actions = actions(&tx);
        let want: Vec<String> = (1..=602).map(|i| format!("POST /api/x{i}")).collect();
        assert!(actions == want, "every command once, in journal order: {} records", actions.len());
        assert_eq!(svc.journal_applied, 602);
        assert!(svc.verify(&tx).unwrap().ok);
        bus.shutdown();
    }

    /// Records past a block's size span blocks: listing from the middle of one, by actor,
    /// the newest across them, and `prev_hash` across a block's edge all read as one
    /// chain; a line changed in place is found by `verify`.
    #[test]
    fn a_chain_spans_blocks_and_reads_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        let n = 300u64;
        for i in 1..=n {
            let actor = if i % 2 == 0 { "even" } else { "odd" };
            svc.handle(
                &tx,
                Cmd::Append { actor: actor.into(), action: format!("A{i}"), detail: serde_json::json!({"i": i}), reply: None },
                &mut after,
            )
            .unwrap();
        }
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();
        let blocks: i64 = conn.query_row("SELECT count(*) FROM record_blocks", [], |r| r.get(0)).unwrap();
        assert!(blocks >= 3, "{blocks} blocks");

        let (tx, after_list) = (conn.transaction().unwrap(), |list: &[AuditRecord]| list.iter().map(|r| r.seq).collect::<Vec<_>>());
        let page = records::after(&tx, 0, 126, &Filter::default(), 5).unwrap();
        assert_eq!(after_list(&page), [127, 128, 129, 130, 131]);
        for pair in page.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "prev_hash is the record before's, across a block's edge");
        }
        let evens = records::after(&tx, 0, 250, &Filter { actor: Some("even".into()), ..Filter::default() }, 100).unwrap();
        assert_eq!(after_list(&evens), (252..=n).step_by(2).collect::<Vec<_>>());
        let newest = records::newest_records(&tx, &Filter { actor: Some("odd".into()), ..Filter::default() }, 70).unwrap();
        assert_eq!(after_list(&newest), (n - 139..=n - 1).step_by(2).collect::<Vec<_>>());
        assert_eq!(newest[0].detail, serde_json::json!({"i": n - 139}));
        assert_eq!(
            svc.verify(&tx).unwrap(),
            AuditVerify { ok: true, records: n, first_bad: None, unmet_anchor: None, anchor_unreadable: None }
        );
        tx.commit().unwrap();

        let reloaded = Audit::load(&conn, &ctx).unwrap();
        assert_eq!(reloaded.last_seq, n);
        conn.execute("UPDATE record_blocks SET body = replace(body, '\"A200\"', '\"B200\"')", []).unwrap();
        assert_eq!(reloaded.verify(&conn.transaction().unwrap()).unwrap().first_bad, Some(200));
        bus.shutdown();
    }

    /// An older agt's store, a row per record: the chain goes on from its last hash in
    /// blocks, reads and `verify` walk both, and a change to an old row is still found.
    #[test]
    fn an_older_agts_row_per_record_chain_goes_on_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        {
            let old = crate::services::store::open(&ctx.home.store("audit"), Default::default(), &records::MIGRATIONS[..2]).unwrap();
            let mut prev = GENESIS.to_string();
            for seq in 1..=3u64 {
                let (actor, action, detail) =
                    ("event:orders", "ORDER_CREATED", format!(r#"{{"data":{{}},"event_id":"e{seq}","seq":{}}}"#, seq + 10));
                let hash = chain_hash(&prev, seq, "t", actor, action, &detail);
                old.execute(
                    "INSERT INTO records VALUES (?1, 't', ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![seq as i64, actor, action, detail, prev, hash],
                )
                .unwrap();
                prev = hash;
            }
        }
        let mut conn = crate::services::store::open(&ctx.home.store("audit"), Default::default(), records::MIGRATIONS).unwrap();
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        assert_eq!((svc.last_seq, svc.last_event_seq, svc.legacy_last), (3, 13, 3), "the old rows give the chain's end and the feed's");
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        svc.handle(&tx, Cmd::Event(event(13, 14)), &mut after).unwrap();
        svc.handle(&tx, user_created(), &mut after).unwrap();
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();

        let tx = conn.transaction().unwrap();
        let all = records::after(&tx, svc.legacy_last, 0, &Filter::default(), 100).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(all[3].prev_hash, all[2].hash, "the first block goes on from the last old row");
        assert_eq!(records::after(&tx, 3, 2, &Filter::default(), 2).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        let newest = records::newest_records(&tx, &Filter { actor: Some("event:orders".into()), ..Filter::default() }, 2).unwrap();
        assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4], "newest by actor, across both");
        assert_eq!(
            svc.verify(&tx).unwrap(),
            AuditVerify { ok: true, records: 5, first_bad: None, unmet_anchor: None, anchor_unreadable: None }
        );
        tx.commit().unwrap();
        let reloaded = Audit::load(&conn, &ctx).unwrap();
        assert_eq!((reloaded.last_seq, reloaded.last_event_seq), (5, 14));

        conn.execute("UPDATE records SET actor = 'mallory' WHERE seq = 2", []).unwrap();
        assert_eq!(reloaded.verify(&conn.transaction().unwrap()).unwrap().first_bad, Some(2));
        bus.shutdown();
    }

    /// `n` commands chained, committed, and the commit's end anchored, as the service's
    /// loop does it.
    fn commit_commands(svc: &mut Audit, conn: &mut Connection, n: usize) {
        let tx = conn.transaction().unwrap();
        let mut after = AfterCommit::new("audit");
        for _ in 0..n {
            svc.handle(&tx, user_created(), &mut after).unwrap();
        }
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();
        svc.after_commit();
    }

    /// What `data/<name>` holds, as JSON (`None`: no such file).
    fn anchor_file(ctx: &ServiceCtx, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(ctx.home.data_dir().join(name)).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// Deletes the newest block of the store: the chain's tail, as a tool or a careless
    /// hand would. Gives the seq the chain now ends at.
    fn cut_last_block(conn: &Connection) -> u64 {
        let first: i64 = conn.query_row("SELECT first_seq FROM record_blocks ORDER BY last_seq DESC LIMIT 1", [], |r| r.get(0)).unwrap();
        conn.execute("DELETE FROM record_blocks WHERE first_seq = ?1", [first]).unwrap();
        first as u64 - 1
    }

    /// The service's loop commits through `Unit`: the anchor follows each commit, never
    /// the open transaction (ahead of the store, a crash would leave a false alarm). A
    /// commit overwrites the record in place: a new file and a rename per commit cost
    /// ~80 µs of CPU on ext4.
    #[test]
    fn a_commit_anchors_the_chains_end_outside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        let mut unit = crate::services::actor::Unit::<Audit>::open(&ctx).unwrap();
        assert_eq!(anchor_file(&ctx, anchor::HEAD), None, "an empty chain has nothing to anchor");
        unit.work(|svc, tx, after| svc.handle(tx, user_created(), after)).unwrap();
        assert_eq!(anchor_file(&ctx, anchor::HEAD), None, "not committed yet: not anchored");
        unit.commit(&bus).unwrap();
        let conn = crate::services::store::open(&ctx.home.store("audit"), Default::default(), records::MIGRATIONS).unwrap();
        let (seq, hash) = records::newest(&conn).unwrap().unwrap();
        let head = ctx.home.data_dir().join(anchor::HEAD);
        assert_eq!(std::fs::read_to_string(&head).unwrap(), anchor::head_text(seq, &hash));
        let file = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&head).unwrap());
        let laid_down = file();
        unit.batch(&bus, |svc, tx, after| svc.handle(tx, user_created(), after)).unwrap();
        let (seq, hash) = records::newest(&conn).unwrap().unwrap();
        assert_eq!((seq, std::fs::read_to_string(&head).unwrap()), (2, anchor::head_text(2, &hash)));
        assert_eq!(file(), laid_down, "overwritten in place, not replaced");
        bus.shutdown();
    }

    /// The chain's tail deleted: the rest hashes well, but the anchor says how far it
    /// went. A start keeps that anchor before its commits overwrite it, and `verify`
    /// names the same missing records however far the chain has grown again since, until
    /// the kept anchor is deleted.
    #[test]
    fn a_tail_cut_below_the_anchor_fails_verify_with_the_missing_records() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        commit_commands(&mut svc, &mut conn, 300);
        assert!(svc.verify(&conn.transaction().unwrap()).unwrap().ok);
        let end = cut_last_block(&conn);
        assert!(end > 0 && end < 300, "the last block held records {}..300", end + 1);

        let cut = svc.verify(&conn.transaction().unwrap()).unwrap();
        let unmet = cut.unmet_anchor.clone().expect("the anchor is not met");
        assert_eq!((cut.ok, cut.records, cut.first_bad), (false, end, Some(end + 1)));
        assert_eq!((unmet.seq, unmet.chain_end, unmet.file.as_str()), (300, Some(end), "data/audit.head"));

        drop(svc);
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        let lost = anchor_file(&ctx, anchor::LOST).expect("the start kept the unmet anchor");
        assert_eq!((lost["seq"].as_u64(), lost["chain_end"].as_u64()), (Some(300), Some(end)));
        assert_eq!(anchor_file(&ctx, anchor::HEAD).unwrap()["seq"], end, "the chain's end is anchored anew");
        // The chain grows past the old end again: records end+1.. are new ones.
        commit_commands(&mut svc, &mut conn, 400);
        let again = svc.verify(&conn.transaction().unwrap()).unwrap();
        assert_eq!((again.ok, again.records, again.first_bad), (false, end + 400, Some(end + 1)));
        let unmet = again.unmet_anchor.unwrap();
        assert_eq!((unmet.seq, unmet.chain_end, unmet.file.as_str()), (300, Some(end), "data/audit.head.lost"));
        drop(svc);
        let svc = Audit::load(&conn, &ctx).unwrap();
        assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap().first_bad, Some(end + 1), "kept across starts");

        std::fs::remove_file(ctx.home.data_dir().join(anchor::LOST)).unwrap();
        let accepted = svc.verify(&conn.transaction().unwrap()).unwrap();
        assert_eq!(accepted, AuditVerify { ok: true, records: end + 400, first_bad: None, unmet_anchor: None, anchor_unreadable: None });
        bus.shutdown();
    }

    /// A second loss before the first is accepted: the kept anchor becomes the one that
    /// reaches further, so `verify` names every missing record, not the first loss's.
    #[test]
    fn a_second_cut_before_the_first_is_accepted_is_named_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        commit_commands(&mut svc, &mut conn, 300);
        let end = cut_last_block(&conn);
        drop(svc);
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        commit_commands(&mut svc, &mut conn, 400);
        let grown = end + 400;
        let second_end = cut_last_block(&conn);
        assert!(second_end < grown, "the second cut took records {}..{grown}", second_end + 1);
        drop(svc);
        let svc = Audit::load(&conn, &ctx).unwrap();
        let lost = anchor_file(&ctx, anchor::LOST).unwrap();
        assert_eq!((lost["seq"].as_u64(), lost["chain_end"].as_u64()), (Some(grown), Some(end.min(second_end))));
        let v = svc.verify(&conn.transaction().unwrap()).unwrap();
        let unmet = v.unmet_anchor.unwrap();
        assert_eq!((unmet.seq, v.ok), (grown, false), "the whole loss, up to the later anchor");
        bus.shutdown();
    }

    /// An anchor behind the chain (a crash between a commit and its anchor, or an older
    /// copy put back) is met by an older record; a home without one, or with an older
    /// agt's record (no check), verifies as before. None of them is kept as lost.
    #[test]
    fn an_anchor_behind_the_chain_or_none_at_all_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let head = ctx.home.data_dir().join(anchor::HEAD);
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        commit_commands(&mut svc, &mut conn, 5);
        let older = std::fs::read(&head).unwrap();
        commit_commands(&mut svc, &mut conn, 5);
        assert_eq!(anchor_file(&ctx, anchor::HEAD).unwrap()["seq"], 10);
        let ok = AuditVerify { ok: true, records: 10, first_bad: None, unmet_anchor: None, anchor_unreadable: None };

        std::fs::write(&head, &older).unwrap();
        assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap(), ok, "behind: fine");
        drop(svc);
        let svc = Audit::load(&conn, &ctx).unwrap();
        assert_eq!(anchor_file(&ctx, anchor::HEAD).unwrap()["seq"], 10, "the start anchors the chain's end");
        assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap(), ok);

        // No anchor, or an older agt's record without a check: not compared.
        let older = format!("{{\"seq\":11,\"hash\":\"{GENESIS}\"}}\n");
        for left in [None, Some(older.as_str())] {
            match left {
                None => std::fs::remove_file(&head).unwrap(),
                Some(text) => std::fs::write(&head, text).unwrap(),
            }
            assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap(), ok, "{left:?}: not compared");
            let svc = Audit::load(&conn, &ctx).unwrap();
            assert_eq!(anchor_file(&ctx, anchor::HEAD).unwrap()["seq"], 10, "{left:?}: written anew");
            assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap(), ok);
        }
        assert_eq!(anchor_file(&ctx, anchor::LOST), None, "nothing was lost");
        assert!(!ctx.home.data_dir().join(anchor::UNREADABLE).exists(), "nothing was unreadable");
        bus.shutdown();
    }

    /// An anchor that cannot be read (torn or emptied by a power loss, garbage, not a
    /// file) vouches for nothing: verify fails while it stands, naming the file and why.
    /// A start moves it to `data/audit.head.unreadable` before it lays the anchor down
    /// anew, and verify fails until that file is deleted: the start could not check the
    /// chain's end. A kept unmet anchor that cannot be read fails verify too.
    #[test]
    fn an_anchor_that_cannot_be_read_fails_verify_until_it_is_dealt_with() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let (head, kept) = (ctx.home.data_dir().join(anchor::HEAD), ctx.home.data_dir().join(anchor::UNREADABLE));
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        commit_commands(&mut svc, &mut conn, 10);
        let ok = AuditVerify { ok: true, records: 10, first_bad: None, unmet_anchor: None, anchor_unreadable: None };
        // A seq the chain lacks beside the hash of another: a record a power loss tore.
        let torn = anchor::head_text(10, GENESIS).replacen("  10,", "  11,", 1);
        assert!(torn.contains("  11,"), "{torn}");
        let garbage = [0xffu8, 0x00, 0x17, b'x'];
        let cases: [(&str, &[u8], &str); 5] = [
            ("empty", b"", "is empty"),
            ("cut short", b"{\"seq\":", "does not parse"),
            ("torn", torn.as_bytes(), "does not check out"),
            ("garbage", &garbage, "does not parse"),
            ("a folder", b"", "cannot be read"),
        ];
        for (what, bytes, why) in cases {
            std::fs::remove_file(&head).unwrap();
            if what == "a folder" {
                std::fs::create_dir(&head).unwrap();
            } else {
                std::fs::write(&head, bytes).unwrap();
            }
            let v = svc.verify(&conn.transaction().unwrap()).unwrap();
            assert_eq!((v.ok, v.records, v.first_bad, &v.unmet_anchor), (false, 10, None, &None), "{what}: {v:?}");
            let a = v.anchor_unreadable.expect(what);
            assert_eq!(a.file, "data/audit.head", "{what}");
            assert!(a.error.starts_with(why), "{what}: {}", a.error);

            drop(svc);
            svc = Audit::load(&conn, &ctx).unwrap();
            assert_eq!(anchor_file(&ctx, anchor::HEAD).unwrap()["seq"], 10, "{what}: laid down anew");
            assert!(kept.exists(), "{what}: the unreadable one is kept");
            let v = svc.verify(&conn.transaction().unwrap()).unwrap();
            let a = v.anchor_unreadable.clone().expect(what);
            assert_eq!((v.ok, a.file.as_str()), (false, "data/audit.head.unreadable"), "{what}: {v:?}");
            assert!(a.error.starts_with(why), "{what}: {}", a.error);
            assert!(a.advice().contains("delete data/audit.head.unreadable"), "{}", a.advice());
            // Still there after another start; accepted by deleting it.
            drop(svc);
            svc = Audit::load(&conn, &ctx).unwrap();
            assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap().anchor_unreadable.map(|a| a.file), Some(a.file), "{what}");
            match what {
                "a folder" => std::fs::remove_dir(&kept).unwrap(),
                _ => std::fs::remove_file(&kept).unwrap(),
            }
            assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap(), ok, "{what}: accepted");
        }
        // A kept unmet anchor that cannot be read cannot name what is missing: not ok.
        std::fs::write(ctx.home.data_dir().join(anchor::LOST), "{\"seq\": 5").unwrap();
        let v = svc.verify(&conn.transaction().unwrap()).unwrap();
        assert_eq!((v.ok, v.anchor_unreadable.map(|a| a.file)), (false, Some("data/audit.head.lost".to_string())));
        bus.shutdown();
    }

    /// An anchor whose record the chain holds with another hash (a chain replaced, or the
    /// anchor edited): `first_bad` is that record, and a start keeps the anchor too.
    #[test]
    fn an_anchor_naming_another_record_fails_verify_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx, mut conn) = opened(dir.path());
        let mut svc = Audit::load(&conn, &ctx).unwrap();
        commit_commands(&mut svc, &mut conn, 10);
        std::fs::write(ctx.home.data_dir().join(anchor::HEAD), anchor::head_text(7, GENESIS)).unwrap();
        let v = svc.verify(&conn.transaction().unwrap()).unwrap();
        assert_eq!((v.ok, v.records, v.first_bad), (false, 10, Some(7)));
        assert_eq!(v.unmet_anchor.map(|a| (a.seq, a.chain_end)), Some((7, None)));
        drop(svc);
        let svc = Audit::load(&conn, &ctx).unwrap();
        let lost = anchor_file(&ctx, anchor::LOST).unwrap();
        assert_eq!(lost, serde_json::json!({"seq": 7, "hash": GENESIS}), "kept, with no chain end: the chain went on past it");
        assert_eq!(svc.verify(&conn.transaction().unwrap()).unwrap().first_bad, Some(7));
        bus.shutdown();
    }
}
