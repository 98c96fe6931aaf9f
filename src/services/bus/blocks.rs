//! How `events.db` keeps events: a row per **block** of consecutive events, not a row
//! per event.
//!
//! A block holds up to [`BLOCK_EVENTS`] envelopes of one bus commit, a line each (an
//! envelope is compact JSON, so it holds no raw line break), keyed by its last seq, with
//! the commit's time and a bit per event type it holds. A row per event was three b-tree
//! inserts per event (the table, the unique `event_id` index, the `events_type` index),
//! ~5 events per order: most of the bus thread's CPU, and a third of the pages its
//! checkpointer copied (BENCHMARKS.md, session 24).
//!
//! What the unique `event_id` index did, dropping an event a producer re-sends from its
//! outbox after a crash, the outbox's own ids do now: they only rise, so the bus keeps
//! the highest outbox id it has stored per producer (`outbox_marks`, committed with the
//! events) and drops a re-sent batch at or below it.
//!
//! An older agt's `events` table (a row per event) is read as it is, not rebuilt: its
//! events are all older than the first block, and retention prunes them like the rest.

use super::{BusEvent, EVENT_TYPES};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// The store's schema; the first entry is an older agt's.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        envelope TEXT NOT NULL
    );
    CREATE INDEX events_type ON events(type, seq);",
    "CREATE TABLE event_blocks (
        last_seq INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        stamp TEXT NOT NULL,
        types INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE outbox_marks (source TEXT PRIMARY KEY, upto INTEGER NOT NULL) WITHOUT ROWID;",
];

/// The most events in one block. It is what a read from the middle of a block decodes in
/// vain at most; and a block must be smaller than a prune chunk (`PRUNE_CHUNK`).
pub(super) const BLOCK_EVENTS: usize = 128;

/// A block is closed once its lines pass this many bytes, whatever their number.
const BLOCK_BYTES: usize = 64 * 1024;

/// The bit of an event type in a block's `types`: its place in [`EVENT_TYPES`], and one
/// bit for any other type (tests publish some).
fn type_bit(kind: &str) -> i64 {
    const OTHER: u32 = 62;
    const _: () = assert!(EVENT_TYPES.len() < OTHER as usize, "a bit per event type");
    1 << EVENT_TYPES.iter().position(|t| *t == kind).map_or(OTHER, |i| i as u32)
}

/// The bits a block must share with a reader that wants only `types` (all bits: any).
fn mask_of(types: Option<&[String]>) -> i64 {
    types.map_or(-1, |t| t.iter().fold(0, |m, k| m | type_bit(k)))
}

/// The seq an envelope line starts with (`{"seq":N,…`, as `envelope` writes it).
fn line_seq(line: &str) -> Option<u64> {
    let digits = line.strip_prefix("{\"seq\":")?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

/// The type an envelope line names (`{"seq":N,"event_id":"…","type":"T",…`, as
/// `envelope` writes it), read without parsing the line: a reader that wants some types
/// skips the other lines by this alone. A replay with a type filter parsed every line of
/// every block it read to drop most of them (the soak's followers want two types of
/// ~ten, and a `since=0` one reads the whole retained history). `None` for another
/// layout, or an id or type with a quote or escape in it: such a line is parsed.
fn line_kind(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("{\"seq\":")?.trim_start_matches(|c: char| c.is_ascii_digit());
    let (id, rest) = rest.strip_prefix(",\"event_id\":\"")?.split_once("\",\"type\":\"")?;
    let (kind, _) = rest.split_once('"')?;
    (!id.contains(['"', '\\']) && !kind.contains('\\')).then_some(kind)
}

/// Whether a line is of a type `types` leaves out, told from its text alone.
fn unwanted(line: &str, types: Option<&[String]>) -> bool {
    types.zip(line_kind(line)).is_some_and(|(t, kind)| !t.iter().any(|k| k == kind))
}

/// A block being filled by the bus thread, then inserted.
pub(super) struct Block {
    first: u64,
    last: u64,
    types: i64,
    body: String,
    count: usize,
}

impl Block {
    pub(super) fn new() -> Self {
        Block { first: 0, last: 0, types: 0, body: String::new(), count: 0 }
    }

    /// Adds an event's envelope line; true once the block is full.
    pub(super) fn push(&mut self, seq: u64, kind: &str, line: &str) -> bool {
        debug_assert!(!line.contains('\n'), "an envelope is one line");
        if self.count == 0 {
            self.first = seq;
        } else {
            self.body.push('\n');
        }
        self.body.push_str(line);
        self.last = seq;
        self.types |= type_bit(kind);
        self.count += 1;
        self.count >= BLOCK_EVENTS || self.body.len() >= BLOCK_BYTES
    }

    /// Inserts the block (if it holds any event) and empties it.
    pub(super) fn insert(&mut self, tx: &Connection, stamp: &str) -> rusqlite::Result<()> {
        if self.count > 0 {
            tx.prepare_cached("INSERT INTO event_blocks (last_seq, first_seq, stamp, types, body) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![self.last as i64, self.first as i64, stamp, self.types, self.body])?;
        }
        self.body.clear();
        self.count = 0;
        self.types = 0;
        Ok(())
    }
}

/// The highest outbox id stored per producer.
pub(super) fn load_marks(conn: &Connection) -> rusqlite::Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare("SELECT source, upto FROM outbox_marks")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub(super) fn mark_of(conn: &Connection, source: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT upto FROM outbox_marks WHERE source = ?1")?.query_row([source], |r| r.get(0)).optional()
}

pub(super) fn save_mark(tx: &Connection, source: &str, upto: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO outbox_marks (source, upto) VALUES (?1, ?2) ON CONFLICT(source) DO UPDATE SET upto = excluded.upto")?
        .execute(params![source, upto])?;
    Ok(())
}

/// Whether an older agt's table holds an event (by its id): a producer with no mark yet
/// may re-send what that agt stored.
pub(super) fn legacy_holds(conn: &Connection, event_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM events WHERE event_id = ?1")?.exists([event_id])
}

/// The stored events' span: the oldest seq kept (if any), the newest, and the newest in
/// an older agt's table (0 if it holds none).
pub(super) fn bounds(conn: &Connection) -> rusqlite::Result<(Option<u64>, u64, u64)> {
    let (legacy_first, legacy_last): (Option<i64>, i64) =
        conn.query_row("SELECT min(seq), coalesce(max(seq), 0) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let first = first_in_blocks(conn)?;
    let last: i64 = conn.query_row("SELECT coalesce(max(last_seq), 0) FROM event_blocks", [], |r| r.get(0))?;
    let first = legacy_first.or(first).map(|s| s as u64);
    Ok((first, (last.max(legacy_last)) as u64, legacy_last as u64))
}

/// Narrows a query on an older agt's `events` to some types (`None`: all):
/// ` AND type IN (?, …)` and the values to bind.
fn and_types(sql: &mut String, args: &mut Vec<rusqlite::types::Value>, types: Option<&[String]>) {
    if let Some(t) = types {
        sql.push_str(" AND type IN (");
        sql.push_str(&vec!["?"; t.len()].join(","));
        sql.push(')');
        args.extend(t.iter().map(|x| rusqlite::types::Value::from(x.clone())));
    }
}

/// Stored events with `seq > since`, oldest first, at most `limit`, optionally of some
/// types only. `legacy_last` is the newest seq of an older agt's table.
pub(super) fn read_since(
    conn: &Connection,
    legacy_last: u64,
    since: u64,
    types: Option<&[String]>,
    limit: usize,
) -> anyhow::Result<Vec<BusEvent>> {
    let mut out = Vec::new();
    // Seqs are stored as SQLite integers (i64): none follows a `since` past them, which
    // bound as an i64 would wrap to a negative number and read everything.
    if limit == 0 || since >= i64::MAX as u64 {
        return Ok(out);
    }
    if since < legacy_last {
        let mut sql = String::from("SELECT envelope FROM events WHERE seq > ?");
        let mut args: Vec<rusqlite::types::Value> = vec![(since as i64).into()];
        and_types(&mut sql, &mut args, types);
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push((limit.min(i64::MAX as usize) as i64).into());
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            out.push(BusEvent::from_line(row.get(0)?)?);
        }
    }
    let since = since.max(legacy_last);
    // A block none of whose types is wanted is skipped without reading its body.
    let mut stmt =
        conn.prepare_cached("SELECT CASE WHEN types & ?2 <> 0 THEN body END FROM event_blocks WHERE last_seq > ?1 ORDER BY last_seq")?;
    let mut rows = stmt.query(params![since as i64, mask_of(types)])?;
    while out.len() < limit {
        let Some(row) = rows.next()? else { break };
        let Some(body) = row.get_ref(0)?.as_str_or_null()? else { continue };
        for line in body.split('\n') {
            if line_seq(line).is_some_and(|seq| seq <= since) || unwanted(line, types) {
                continue;
            }
            let e = BusEvent::from_line(line.to_string())?;
            if types.is_none_or(|t| t.iter().any(|k| *k == e.kind)) {
                out.push(e);
                if out.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// How far a [`scan`] read.
#[derive(Debug, PartialEq)]
pub struct Scanned {
    /// Every stored event up to this seq was looked at (or, when `visit` stopped the scan,
    /// the one it stopped at): the next page starts after it. At a block's end unless
    /// stopped, so the next page does not decode the start of a block again.
    pub through: u64,
    /// Whether the scan stopped before the end of the store (its budget, or `visit`).
    pub more: bool,
}

/// Rows of an older agt's table read per page.
const LEGACY_PAGE: usize = 1000;

/// Hands `visit` each stored event with `seq > since` (of `types` only, if given), oldest
/// first, as its seq, type and envelope line, without parsing it, until `visit` returns
/// false or the blocks read pass `budget` bytes (checked at a block's end). A replay
/// built a `BusEvent` per line (five strings, the envelope's fields parsed) and copied
/// its line again to frame it; it needs the line as stored, and its seq and type only
/// for SSE and filters, which the line's first bytes give.
pub(super) fn scan(
    conn: &Connection,
    legacy_last: u64,
    since: u64,
    types: Option<&[String]>,
    budget: usize,
    visit: &mut dyn FnMut(u64, &str, &str) -> bool,
) -> anyhow::Result<Scanned> {
    if since >= i64::MAX as u64 {
        return Ok(Scanned { through: since, more: false });
    }
    if since < legacy_last {
        // An older agt's rows, a page at a time, then the blocks on the next call.
        let mut sql = String::from("SELECT seq, type, envelope FROM events WHERE seq > ?");
        let mut args: Vec<rusqlite::types::Value> = vec![(since as i64).into()];
        and_types(&mut sql, &mut args, types);
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push((LEGACY_PAGE as i64).into());
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let (mut through, mut n) = (legacy_last, 0);
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            n += 1;
            if !visit(seq, row.get_ref(1)?.as_str()?, row.get_ref(2)?.as_str()?) {
                return Ok(Scanned { through: seq, more: true });
            }
            through = seq;
        }
        return Ok(Scanned { through: if n == LEGACY_PAGE { through } else { legacy_last }, more: true });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT last_seq, CASE WHEN types & ?2 <> 0 THEN body END FROM event_blocks WHERE last_seq > ?1 ORDER BY last_seq",
    )?;
    let mut rows = stmt.query(params![since as i64, mask_of(types)])?;
    let (mut through, mut read) = (since, 0);
    while let Some(row) = rows.next()? {
        if let Some(body) = row.get_ref(1)?.as_str_or_null()? {
            read += body.len();
            for line in body.split('\n') {
                let parsed;
                let (seq, kind) = match line_seq(line).zip(line_kind(line)) {
                    Some(found) => found,
                    None => {
                        // Another layout, or a type with an escape in it: parse it.
                        parsed = BusEvent::from_line(line.to_string())?;
                        (parsed.seq, &*parsed.kind)
                    }
                };
                if seq <= since || types.is_some_and(|t| !t.iter().any(|k| k == kind)) {
                    continue;
                }
                if !visit(seq, kind, line) {
                    return Ok(Scanned { through: seq, more: true });
                }
            }
        }
        through = row.get::<_, i64>(0)? as u64;
        if read >= budget {
            return Ok(Scanned { through, more: true });
        }
    }
    Ok(Scanned { through, more: false })
}

/// How many of the newest blocks [`nth_newest`] reads backwards before it looks for the
/// older blocks that hold its types with a forward read.
const NEWEST_BLOCKS: i64 = 256;

/// The seq of the `n`-th newest stored event (of some types only, if given, and only
/// those `keep` takes, if given), counting from 1, or `None` when fewer are stored. With
/// `keep`, at most `scan` events of the types are looked at: when that many were and
/// fewer than `n` kept, the oldest looked at is the answer (a trader's `tail=N` does not
/// read a week of everyone's events to find its own few).
pub(super) fn nth_newest(
    conn: &Connection,
    n: usize,
    types: Option<&[String]>,
    keep: Option<&dyn Fn(&BusEvent) -> bool>,
    scan: usize,
) -> anyhow::Result<Option<u64>> {
    let mut left = n;
    let mut looked = 0usize;
    // Whether the event of `line` counts, and whether the scan must stop at it.
    let mut counts = |line: &str| -> anyhow::Result<(bool, bool)> {
        if types.is_none() && keep.is_none() {
            return Ok((true, false));
        }
        if unwanted(line, types) {
            return Ok((false, false));
        }
        let e = BusEvent::from_line(line.to_string())?;
        if types.is_some_and(|t| !t.iter().any(|k| *k == e.kind)) {
            return Ok((false, false));
        }
        looked += 1;
        Ok((keep.is_none_or(|k| k(&e)), keep.is_some() && looked >= scan))
    };
    // A block's lines, newest first: the seq where the count ends, if it ends there.
    let mut in_block = |body: &str| -> anyhow::Result<Option<u64>> {
        for line in body.rsplit('\n') {
            let (wanted, last) = counts(line)?;
            if wanted {
                left -= 1;
            }
            if left == 0 || last {
                return Ok(Some(line_seq(line).map_or_else(|| BusEvent::from_line(line.to_string()).map(|e| e.seq), Ok)?));
            }
        }
        Ok(None)
    };
    let mask = mask_of(types);
    // The newest blocks, newest first: where the newest n of a common type (or of every
    // type) are found at once.
    let mut older_than = None;
    {
        let mut stmt = conn
            .prepare_cached("SELECT last_seq, CASE WHEN types & ?1 <> 0 THEN body END FROM event_blocks ORDER BY last_seq DESC LIMIT ?2")?;
        let mut rows = stmt.query(params![mask, NEWEST_BLOCKS])?;
        let mut read = 0;
        while let Some(row) = rows.next()? {
            read += 1;
            older_than = Some(row.get::<_, i64>(0)?);
            let Some(body) = row.get_ref(1)?.as_str_or_null()? else { continue };
            if let Some(seq) = in_block(body)? {
                return Ok(Some(seq));
            }
        }
        if read < NEWEST_BLOCKS {
            older_than = None;
        }
    }
    // The rest: which older blocks hold the types, read oldest first, then those blocks
    // alone, newest first. Read backwards, the whole table was read against the disk's
    // read-ahead, a page at a time: a `tail=20&type=TOKEN_CREATED` (fewer than 20 kept)
    // took 27 to 38 s on a 90 MB `events.db` out of the page cache, where a forward read
    // of it (`since=0&type=TOKEN_CREATED`) took 0.5 s. At most the newest `need` holders
    // are kept: each holds an event of the types (a type agt does not know shares its bit
    // with others, so then all are kept), and no more than `n` of them (with `keep`,
    // `scan`) are ever counted.
    if let Some(older_than) = older_than {
        let known = types.is_none_or(|t| t.iter().all(|k| EVENT_TYPES.contains(&k.as_str())));
        let need = match (known, keep) {
            (false, _) => usize::MAX,
            (true, Some(_)) => scan.max(1),
            (true, None) => n,
        };
        let mut holders = std::collections::VecDeque::new();
        {
            let mut stmt =
                conn.prepare_cached("SELECT last_seq FROM event_blocks WHERE last_seq < ?1 AND types & ?2 <> 0 ORDER BY last_seq")?;
            let mut rows = stmt.query(params![older_than, mask])?;
            while let Some(row) = rows.next()? {
                if holders.len() == need {
                    holders.pop_front();
                }
                holders.push_back(row.get::<_, i64>(0)?);
            }
        }
        let mut stmt = conn.prepare_cached("SELECT body FROM event_blocks WHERE last_seq = ?1")?;
        for last_seq in holders.into_iter().rev() {
            let Some(body) = stmt.query_row([last_seq], |r| r.get::<_, String>(0)).optional()? else { continue };
            if let Some(seq) = in_block(&body)? {
                return Ok(Some(seq));
            }
        }
    }
    let mut sql = String::from("SELECT seq FROM events WHERE seq > 0");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    and_types(&mut sql, &mut args, types);
    if keep.is_some() {
        // An older agt's row per event, read one by one for `keep`.
        let sql = sql.replacen("SELECT seq", "SELECT envelope", 1) + " ORDER BY seq DESC";
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            let line: String = row.get(0)?;
            let (wanted, last) = counts(&line)?;
            if wanted {
                left -= 1;
            }
            if left == 0 || last {
                return Ok(Some(BusEvent::from_line(line)?.seq));
            }
        }
        return Ok(None);
    }
    sql.push_str(" ORDER BY seq DESC LIMIT 1 OFFSET ?");
    args.push(((left - 1).min(i64::MAX as usize) as i64).into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let nth: Option<i64> = stmt.query_row(rusqlite::params_from_iter(args), |r| r.get(0)).optional()?;
    Ok(nth.map(|s| s as u64))
}

/// The first stored event at or after `seq`: its seq and its time.
pub(super) fn at_or_after(conn: &Connection, legacy_last: u64, seq: u64) -> anyhow::Result<Option<(u64, String)>> {
    if seq <= legacy_last {
        let mut stmt = conn.prepare_cached("SELECT envelope FROM events WHERE seq >= ? ORDER BY seq LIMIT 1")?;
        if let Some(line) = stmt.query_row([seq as i64], |r| r.get::<_, String>(0)).optional()? {
            let e = BusEvent::from_line(line)?;
            return Ok(Some((e.seq, e.timestamp)));
        }
    }
    // Every event of a block has the block's time (a bus commit stamps its events once).
    let mut stmt = conn.prepare_cached("SELECT first_seq, stamp FROM event_blocks WHERE last_seq >= ? ORDER BY last_seq LIMIT 1")?;
    let found = stmt.query_row([seq as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))).optional()?;
    Ok(found.map(|(first, stamp)| (first.max(seq), stamp)))
}

/// Deletes every stored event up to `end`, in the open transaction: the rows of an
/// older agt's table and the blocks that end by then; a block that holds `end` keeps only
/// the events after it. Gives the oldest seq still stored, if any.
pub(super) fn prune(conn: &Connection, end: u64) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("DELETE FROM events WHERE seq <= ?1")?.execute([end as i64])?;
    conn.prepare_cached("DELETE FROM event_blocks WHERE last_seq <= ?1")?.execute([end as i64])?;
    let straddling: Option<(i64, String)> = conn
        .prepare_cached("SELECT last_seq, body FROM event_blocks WHERE last_seq > ?1 AND first_seq <= ?1")?
        .query_row([end as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((last, body)) = straddling {
        // Its lines after `end`: they begin after the line of `end`, the first whose seq
        // passes it.
        let mut from = 0;
        for line in body.split('\n') {
            if line_seq(line).is_some_and(|seq| seq > end) {
                break;
            }
            from += line.len() + 1;
        }
        conn.prepare_cached("UPDATE event_blocks SET first_seq = ?2, body = ?3 WHERE last_seq = ?1")?.execute(params![
            last,
            (end + 1) as i64,
            &body[from.min(body.len())..]
        ])?;
    }
    let legacy: Option<i64> = conn.query_row("SELECT min(seq) FROM events", [], |r| r.get(0))?;
    Ok(legacy.or(first_in_blocks(conn)?).map(|s| s as u64))
}

/// The oldest event kept in blocks: the first of the block with the lowest `last_seq`
/// (blocks hold consecutive runs, in order). `min(first_seq)` read every block, as no
/// index holds `first_seq`: ~40 ms with 40 k blocks (2 GB) in the page cache, at each
/// start (on the main thread, before any service) and at each pruning pass.
fn first_in_blocks(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT first_seq FROM event_blocks ORDER BY last_seq LIMIT 1", [], |r| r.get(0)).optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_its_seq_and_a_type_its_bit() {
        assert_eq!(line_seq(r#"{"seq":4711,"event_id":"e"}"#), Some(4711));
        assert_eq!(line_seq(r#"{"data":{},"seq":1}"#), None);
        assert_eq!(line_kind(r#"{"seq":4711,"event_id":"e-1","type":"ORDER_CREATED","source":"o","data":{}}"#), Some("ORDER_CREATED"));
        // Another layout, or one a quote or escape could fool, is left to the parser.
        assert_eq!(line_kind(r#"{"data":{"a":"b","type":"X"},"seq":1,"type":"Y"}"#), None);
        assert_eq!(line_kind(r#"{"seq":1,"event_id":"a\",\"type\":\"X","type":"Y"}"#), None);
        assert_eq!(line_kind(r#"{"seq":1,"event_id":"e","type":"A\"B","data":{}}"#), None);
        let trades = ["TRADE_EXECUTED".to_string()];
        assert!(unwanted(r#"{"seq":1,"event_id":"e","type":"ORDER_CREATED","data":{}}"#, Some(&trades)));
        assert!(!unwanted(r#"{"seq":1,"event_id":"e","type":"TRADE_EXECUTED","data":{}}"#, Some(&trades)));
        assert!(!unwanted(r#"{"seq":1,"event_id":"e","type":"ORDER_CREATED","data":{}}"#, None));
        assert_ne!(type_bit("ORDER_CREATED"), type_bit("ORDER_CANCELLED"));
        assert_eq!(type_bit("OTHER"), type_bit("WANTED"), "types agt does not know share a bit");
        let m = mask_of(Some(&["ORDER_CREATED".to_string()]));
        assert_eq!(m & type_bit("ORDER_CREATED"), type_bit("ORDER_CREATED"));
        assert_eq!(m & type_bit("TRADE_EXECUTED"), 0);
        assert_eq!(mask_of(None), -1);
    }

    /// `nth_newest` against counting by hand, where its answer lies among the newest
    /// blocks it reads backwards and where it lies in the older ones it finds with a
    /// forward read (a rare type's few events, a trader's own among everyone's, fewer
    /// than asked for): both give what a count of every stored event gives.
    #[test]
    fn the_nth_newest_is_found_among_the_newest_blocks_and_the_older_ones_alike() {
        let conn = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS {
            conn.execute_batch(m).unwrap();
        }
        // 1,000 blocks of three events: orders, and in a few blocks a token's event,
        // deep in the past and past the newest blocks; "mine" marks a user's own.
        let rare = [5, 300, 600, 900];
        let mut stored: Vec<(u64, &str, bool)> = Vec::new();
        let mut seq = 0;
        for b in 0..1000u64 {
            let mut block = Block::new();
            for i in 0..3 {
                seq += 1;
                let kind = if i == 1 && rare.contains(&b) { "TOKEN_CREATED" } else { "ORDER_CREATED" };
                let mine = seq % 97 == 0;
                let line = format!(
                    r#"{{"seq":{seq},"event_id":"e-{seq}","type":"{kind}","source":"t","timestamp":"2026-01-01T00:00:00Z","data":{{"mine":{mine}}}}}"#
                );
                block.push(seq, kind, &line);
                stored.push((seq, kind, mine));
            }
            block.insert(&conn, "2026-01-01T00:00:00Z").unwrap();
        }
        let mine = |e: &BusEvent| e.line.contains(r#""mine":true"#);
        let by_hand = |n: usize, kind: Option<&str>, only_mine: bool, scan: usize| {
            let mut looked = 0;
            let mut left = n;
            for &(seq, k, m) in stored.iter().rev() {
                if kind.is_some_and(|kind| kind != k) {
                    continue;
                }
                looked += 1;
                if !only_mine || m {
                    left -= 1;
                }
                if left == 0 || (only_mine && looked >= scan) {
                    return Some(seq);
                }
            }
            None
        };
        let tokens = ["TOKEN_CREATED".to_string()];
        let orders = ["ORDER_CREATED".to_string()];
        for n in [1, 2, 3, 4, 5, 20] {
            assert_eq!(nth_newest(&conn, n, Some(&tokens), None, usize::MAX).unwrap(), by_hand(n, Some("TOKEN_CREATED"), false, 0), "{n}");
        }
        for n in [1, 700, 1997, 1998, 1999, 5000] {
            assert_eq!(nth_newest(&conn, n, Some(&orders), None, usize::MAX).unwrap(), by_hand(n, Some("ORDER_CREATED"), false, 0), "{n}");
        }
        for n in [1, 768, 769, 2999, 3000, 3001] {
            assert_eq!(nth_newest(&conn, n, None, None, usize::MAX).unwrap(), by_hand(n, None, false, 0), "{n}");
        }
        for (n, scan) in [(1, usize::MAX), (5, usize::MAX), (20, usize::MAX), (30, usize::MAX), (20, 1000), (3, 200)] {
            assert_eq!(
                nth_newest(&conn, n, Some(&orders), Some(&mine), scan).unwrap(),
                by_hand(n, Some("ORDER_CREATED"), true, scan),
                "{n} {scan}"
            );
        }
        // 4 rare events, the 2 oldest past the newest blocks: found, and no 5th.
        assert_eq!(by_hand(4, Some("TOKEN_CREATED"), false, 0), Some(5 * 3 + 2));
        assert_eq!(by_hand(5, Some("TOKEN_CREATED"), false, 0), None);
    }

    #[test]
    fn a_block_closes_at_its_count_or_its_size() {
        let mut b = Block::new();
        let full = (1..=BLOCK_EVENTS as u64).map(|s| b.push(s, "ORDER_CREATED", "{}")).collect::<Vec<_>>();
        assert_eq!(full.iter().filter(|f| **f).count(), 1);
        assert!(full[BLOCK_EVENTS - 1]);
        let mut b = Block::new();
        assert!(b.push(1, "ORDER_CREATED", &"x".repeat(BLOCK_BYTES)));
    }
}
