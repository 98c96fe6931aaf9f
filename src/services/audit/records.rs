//! How `audit.db` keeps the chain: a row per **block** of consecutive records, not a row
//! per record.
//!
//! A block holds up to [`BLOCK_RECORDS`] records of one commit, a line each: the JSON
//! array `[seq, timestamp, actor, action, hash, detail]`, with `detail` last and as it
//! was hashed (it is JSON text, so it is written as it is and read back as the same
//! text). A record's `prev_hash` is the hash on the line before it; the block keeps the
//! one before its first line. A row per record was a b-tree insert of seven columns for
//! each of an order's ~6 records (its command and its events): most of audit's thread
//! after SHA-256 (BENCHMARKS.md, session 24). A block also keeps the newest bus seq audit
//! had recorded by then, where the feed resumes after a restart.
//!
//! An older agt's `records` table (a row per record) is read as it is: its records come
//! before the first block, and the chain goes on from its last hash.

use crate::api::AuditRecord;
use rusqlite::{params, Connection, OptionalExtension};

/// The store's schema; the first two entries are an older agt's.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('last_event_seq', 0);",
    // The last command of the journal (`commands`) this store holds.
    "INSERT INTO meta VALUES ('command_journal_seq', 0);",
    "CREATE TABLE record_blocks (
        last_seq INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        prev_hash TEXT NOT NULL,
        last_event_seq INTEGER NOT NULL,
        body TEXT NOT NULL
    );",
    // The ids of the commands run under durability "full" that the chain holds
    // (`CommandId`): one sent again after a restart is stored once.
    "CREATE TABLE command_ids (id INTEGER PRIMARY KEY);",
];

/// The most records in one block: what a read from the middle of one decodes in vain.
const BLOCK_RECORDS: usize = 128;

/// A block is closed once its lines pass this many bytes, whatever their number.
const BLOCK_BYTES: usize = 64 * 1024;

/// One record of the chain as it is hashed and stored, borrowed.
pub(super) struct Chained<'a> {
    pub seq: u64,
    pub timestamp: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    /// JSON text, exactly as hashed.
    pub detail: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

/// The records of the open transaction not written yet, as the lines of the next block.
#[derive(Default)]
pub(super) struct Pending {
    first_seq: u64,
    last_seq: u64,
    prev_hash: String,
    body: String,
    count: usize,
}

impl Pending {
    /// Adds a record, with the newest bus seq recorded by then. Writes the block into `tx`
    /// when it is full.
    pub(super) fn push(&mut self, tx: &Connection, r: &Chained, last_event_seq: u64) -> rusqlite::Result<()> {
        debug_assert!(serde_json::from_str::<serde::de::IgnoredAny>(r.detail).is_ok(), "a detail is JSON text: {}", r.detail);
        if self.count == 0 {
            self.first_seq = r.seq;
            self.prev_hash.clear();
            self.prev_hash.push_str(r.prev_hash);
        } else {
            self.body.push('\n');
        }
        self.body.push('[');
        self.body.push_str(itoa::Buffer::new().format(r.seq));
        for field in [r.timestamp, r.actor, r.action, r.hash] {
            self.body.push(',');
            push_json_str(&mut self.body, field);
        }
        self.body.push(',');
        self.body.push_str(r.detail);
        self.body.push(']');
        self.last_seq = r.seq;
        self.count += 1;
        if self.count >= BLOCK_RECORDS || self.body.len() >= BLOCK_BYTES {
            self.write(tx, last_event_seq)?;
        }
        Ok(())
    }

    /// Writes what it holds as a block into `tx` (a reader in the same transaction then
    /// sees it), and empties.
    pub(super) fn write(&mut self, tx: &Connection, last_event_seq: u64) -> rusqlite::Result<()> {
        if self.count > 0 {
            tx.prepare_cached(
                "INSERT INTO record_blocks (last_seq, first_seq, prev_hash, last_event_seq, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                self.last_seq as i64,
                self.first_seq as i64,
                self.prev_hash,
                last_event_seq as i64,
                self.body
            ])?;
        }
        self.body.clear();
        self.count = 0;
        Ok(())
    }
}

/// Writes `s` as a JSON string. Timestamps, hashes and most actors and actions need no
/// escape: they are copied as they are.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string encodes"));
    }
}

/// A record as its line holds it: `prev_hash` comes from the line before.
struct Line<'a> {
    seq: u64,
    timestamp: String,
    actor: String,
    action: String,
    hash: String,
    detail: &'a str,
}

fn parse(line: &str) -> rusqlite::Result<Line<'_>> {
    let (seq, timestamp, actor, action, hash, detail): (u64, String, String, String, String, &serde_json::value::RawValue) =
        serde_json::from_str(line).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(Line { seq, timestamp, actor, action, hash, detail: detail.get() })
}

/// A record in the API's form, its detail parsed.
fn record(l: Line, prev_hash: String) -> AuditRecord {
    AuditRecord {
        seq: l.seq,
        timestamp: l.timestamp,
        actor: l.actor,
        action: l.action,
        detail: serde_json::from_str(l.detail).unwrap_or_else(|_| serde_json::Value::String(l.detail.to_string())),
        prev_hash,
        hash: l.hash,
    }
}

/// The newest seq of an older agt's `records` (0: none).
pub(super) fn legacy_last(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get::<_, i64>(0)).map(|s| s as u64)
}

/// The newest record's seq and hash, if any.
pub(super) fn newest(conn: &Connection) -> rusqlite::Result<Option<(u64, String)>> {
    let block: Option<String> =
        conn.query_row("SELECT body FROM record_blocks ORDER BY last_seq DESC LIMIT 1", [], |r| r.get(0)).optional()?;
    if let Some(body) = block {
        let l = parse(body.rsplit('\n').next().unwrap_or_default())?;
        return Ok(Some((l.seq, l.hash)));
    }
    conn.query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .optional()
}

/// Record `seq`'s hash, if the store holds that record (a line that no longer parses
/// holds none): how the chain's anchor is compared with the store (`anchor`).
pub(super) fn hash_at(conn: &Connection, seq: u64) -> rusqlite::Result<Option<String>> {
    // Seqs are SQLite integers: an anchor's seq past i64 names no record.
    let Ok(key) = i64::try_from(seq) else { return Ok(None) };
    let block: Option<(i64, String)> = conn
        .prepare_cached("SELECT first_seq, body FROM record_blocks WHERE last_seq >= ?1 ORDER BY last_seq LIMIT 1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((_, body)) = block.filter(|(first, _)| *first <= key) {
        return Ok(body.split('\n').filter_map(|l| parse(l).ok()).find(|l| l.seq == seq).map(|l| l.hash));
    }
    conn.prepare_cached("SELECT hash FROM records WHERE seq = ?1")?.query_row([key], |r| r.get(0)).optional()
}

/// The newest bus seq recorded: kept with each block, or an older agt's newest event
/// record's.
pub(super) fn last_event_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let block: Option<i64> =
        conn.query_row("SELECT last_event_seq FROM record_blocks ORDER BY last_seq DESC LIMIT 1", [], |r| r.get(0)).optional()?;
    if let Some(seq) = block {
        return Ok(seq as u64);
    }
    let newest: Option<String> =
        conn.query_row("SELECT detail FROM records WHERE actor LIKE 'event:%' ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).optional()?;
    Ok(newest.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok()).and_then(|d| d["seq"].as_u64()).unwrap_or(0))
}

fn legacy_record(r: &rusqlite::Row) -> rusqlite::Result<AuditRecord> {
    let detail: String = r.get(4)?;
    Ok(AuditRecord {
        seq: r.get::<_, i64>(0)? as u64,
        timestamp: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        prev_hash: r.get(5)?,
        hash: r.get(6)?,
    })
}

/// Every line of a block with its record's `prev_hash`, in order.
fn lines<'a>(prev_hash: String, body: &'a str) -> impl Iterator<Item = rusqlite::Result<(Line<'a>, String)>> + 'a {
    let mut prev = prev_hash;
    body.split('\n').map(move |text| {
        let l = parse(text)?;
        let before = std::mem::replace(&mut prev, l.hash.clone());
        Ok((l, before))
    })
}

/// Records with `seq > since` (by `actor`, if given), oldest first, at most `limit`.
pub(super) fn after(conn: &Connection, legacy_last: u64, since: u64, filter: &Filter, limit: usize) -> rusqlite::Result<Vec<AuditRecord>> {
    let actor = filter.actor.as_deref();
    let mut out = Vec::new();
    if since < legacy_last {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, timestamp, actor, action, detail, prev_hash, hash FROM records
             WHERE seq > ?1 AND (?2 IS NULL OR actor = ?2) AND NOT (?4 AND (action LIKE 'TOKEN^_%' ESCAPE '^' OR substr(action, instr(action, ' ') + 1) LIKE '/api/tokens%'))
             ORDER BY seq LIMIT ?3",
        )?;
        out = stmt
            .query_map(params![since as i64, actor, limit as i64, filter.hide_tokens], legacy_record)?
            .collect::<rusqlite::Result<_>>()?;
    }
    let since = since.max(legacy_last);
    let mut stmt = conn.prepare_cached("SELECT prev_hash, body FROM record_blocks WHERE last_seq > ?1 ORDER BY last_seq")?;
    // Seqs are SQLite integers: a `since` past i64 follows them all (bound as it is, it
    // would wrap negative and scan every block).
    let mut rows = stmt.query([since.min(i64::MAX as u64) as i64])?;
    while out.len() < limit {
        let Some(row) = rows.next()? else { break };
        let body: String = row.get(1)?;
        for line in lines(row.get(0)?, &body) {
            let (l, prev) = line?;
            if l.seq > since && filter.keeps(&l.actor, &l.action) {
                out.push(record(l, prev));
                if out.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Which records a list shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this actor's.
    pub actor: Option<String>,
    /// Not the records of tokens (their commands and `TOKEN_*` events): a viewer reads
    /// everything but tokens (DESIGN.md §4).
    pub hide_tokens: bool,
}

impl Filter {
    fn keeps(&self, actor: &str, action: &str) -> bool {
        self.actor.as_deref().is_none_or(|a| a == actor) && !(self.hide_tokens && is_about_tokens(action))
    }
}

/// A token's command (`POST /api/tokens`, `DELETE /api/tokens/{id}`) or event. The
/// queries of legacy rows say the same in SQL (`substr(action, instr(action, ' ') + 1)`
/// is the path); change both together.
fn is_about_tokens(action: &str) -> bool {
    action.starts_with("TOKEN_") || action.split_once(' ').is_some_and(|(_, path)| path.starts_with("/api/tokens"))
}

/// The newest `limit` records (of the filter's), oldest first.
pub(super) fn newest_records(conn: &Connection, filter: &Filter, limit: usize) -> rusqlite::Result<Vec<AuditRecord>> {
    let actor = filter.actor.as_deref();
    let mut out = Vec::new();
    {
        let mut stmt = conn.prepare_cached("SELECT prev_hash, body FROM record_blocks ORDER BY last_seq DESC")?;
        let mut rows = stmt.query([])?;
        while out.len() < limit {
            let Some(row) = rows.next()? else { break };
            let body: String = row.get(1)?;
            let block = lines(row.get(0)?, &body).collect::<rusqlite::Result<Vec<_>>>()?;
            for (l, prev) in block.into_iter().rev() {
                if filter.keeps(&l.actor, &l.action) {
                    out.push(record(l, prev));
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
    }
    if out.len() < limit {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, timestamp, actor, action, detail, prev_hash, hash FROM records
             WHERE (?1 IS NULL OR actor = ?1) AND NOT (?3 AND (action LIKE 'TOKEN^_%' ESCAPE '^' OR substr(action, instr(action, ' ') + 1) LIKE '/api/tokens%'))
             ORDER BY seq DESC LIMIT ?2",
        )?;
        let older = stmt.query_map(params![actor, (limit - out.len()) as i64, filter.hide_tokens], legacy_record)?;
        for r in older {
            out.push(r?);
        }
    }
    out.reverse();
    Ok(out)
}

/// Calls `each` with every record in chain order. A line that no longer parses (it was
/// changed) is walked as a record of seq 0 with empty fields: it verifies as no record does.
pub(super) fn walk(conn: &Connection, mut each: impl FnMut(&Chained)) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("SELECT seq, timestamp, actor, action, detail, prev_hash, hash FROM records ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let text = |i| r.get_ref(i).and_then(|v| v.as_str().map_err(Into::into));
        each(&Chained {
            seq: r.get::<_, i64>(0)? as u64,
            timestamp: text(1)?,
            actor: text(2)?,
            action: text(3)?,
            detail: text(4)?,
            prev_hash: text(5)?,
            hash: text(6)?,
        });
    }
    let mut stmt = conn.prepare_cached("SELECT prev_hash, body FROM record_blocks ORDER BY last_seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let body = r.get_ref(1)?.as_str()?;
        for line in lines(r.get(0)?, body) {
            match line {
                Ok((l, prev)) => each(&Chained {
                    seq: l.seq,
                    timestamp: &l.timestamp,
                    actor: &l.actor,
                    action: &l.action,
                    detail: l.detail,
                    prev_hash: &prev,
                    hash: &l.hash,
                }),
                Err(_) => each(&Chained { seq: 0, timestamp: "", actor: "", action: "", detail: "", prev_hash: "", hash: "" }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_back_its_record_and_the_detail_as_it_was_hashed() {
        let conn = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS {
            conn.execute_batch(m).unwrap();
        }
        let mut p = Pending::default();
        let detail = r#"{"b": 1,"a":"x\"y\n"}"#;
        let first = Chained { seq: 7, timestamp: "t", actor: "user \"q\"", action: "POST /api/x", detail, prev_hash: "h6", hash: "h7" };
        p.push(&conn, &first, 3).unwrap();
        let second =
            Chained { seq: 8, timestamp: "t2", actor: "event:orders", action: "ORDER_CREATED", detail: "{}", prev_hash: "h7", hash: "h8" };
        p.push(&conn, &second, 4).unwrap();
        p.write(&conn, 4).unwrap();
        let mut seen = Vec::new();
        walk(&conn, |r| seen.push(format!("{}|{}|{}|{}|{}|{}|{}", r.seq, r.timestamp, r.actor, r.action, r.detail, r.prev_hash, r.hash)))
            .unwrap();
        assert_eq!(seen, [format!("7|t|user \"q\"|POST /api/x|{detail}|h6|h7"), "8|t2|event:orders|ORDER_CREATED|{}|h7|h8".to_string()]);
        assert_eq!(newest(&conn).unwrap(), Some((8, "h8".to_string())));
        assert_eq!(last_event_seq(&conn).unwrap(), 4);
        let listed = after(&conn, 0, 7, &Filter::default(), 10).unwrap();
        assert_eq!((listed[0].seq, &*listed[0].prev_hash, &listed[0].detail), (8, "h7", &serde_json::json!({})));
    }
}
