//! SQLite helpers shared by every service's store.
//!
//! Each service opens its own `data/<name>.db` here and nowhere else. A store is in WAL
//! mode with `synchronous=NORMAL` (or `FULL` with `durability = "full"`), schema versions
//! tracked by `PRAGMA user_version`, and the automatic WAL checkpoint moved off the writer
//! onto a background thread: a checkpoint inside the writer stalls it for ~10 ms every
//! thousand pages (see PERFORMANCE-NOTES.md), which is what dominates order-path p99.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How hard a commit is pushed to disk: the config key `durability`, one type for both.
pub use crate::services::config::settings::Durability;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{path}: the store is at schema version {found}, newer than this agt ({known}); upgrade agt")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("{path}: {reason}")]
    Vfs { path: PathBuf, reason: String },
}

/// Column `i` of a row as text, without copying it out.
pub fn text_at<'r>(r: &'r rusqlite::Row, i: usize) -> rusqlite::Result<&'r str> {
    r.get_ref(i)?.as_str().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// Column `i` of a row as one of the wire enums (`Side::parse`, `OrderStatus::parse`, …):
/// a value none of them spells is an error, never a default (a corrupt `side` read as
/// `buy` would move money the wrong way).
pub fn enum_at<T>(r: &rusqlite::Row, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s = text_at(r, i)?;
    parse(s).ok_or_else(|| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("unknown value {s:?}").into()))
}

/// A decimal as SQLite text, written on the stack. Stores keep decimals as text (exact,
/// and readable with the `sqlite3` shell); binding each as a `String` was an allocation
/// per value, ~20 per order on the trading lane.
pub use crate::api::decimal::DecimalText;

/// Opens (creating if needed) a service's store and brings its schema up to date.
///
/// `migrations[i]` takes the schema from version `i` to `i + 1`; each runs in its own
/// transaction together with the `user_version` bump, so a crash mid-migration leaves
/// the old version intact.
pub fn open(path: &Path, durability: Durability, migrations: &[&str]) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // The writer appends to its log through `wal_writes`: one write per commit.
    crate::services::wal_writes::register().map_err(|reason| StoreError::Vfs { path: path.to_path_buf(), reason })?;
    let mut conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), crate::services::wal_writes::NAME).map_err(wrap)?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000; PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{CACHE_KIB};
         PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT};"
    ))
    .map_err(wrap)?;
    conn.set_prepared_statement_cache_capacity(64);
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(wrap)?;
    let known = migrations.len() as i64;
    if version > known {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found: version, known });
    }
    // Every store carries an outbox: a service's events are written in the same
    // transaction as the change they announce, and handed to the bus after commit. A
    // row holds all the events of one commit (`services::actor::outbox_text`).
    conn.execute_batch("CREATE TABLE IF NOT EXISTS outbox_batches (id INTEGER PRIMARY KEY, events TEXT NOT NULL)").map_err(wrap)?;
    // A store from before batches kept a row per event: what it holds, in order, becomes
    // one batch.
    let legacy: bool = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'outbox'", [], |r| r.get::<_, i64>(0))
        .map_err(wrap)?
        > 0;
    if legacy {
        // One transaction (rolled back if any step fails): the rows move whole or not at all.
        let tx = conn.transaction().map_err(wrap)?;
        tx.execute_batch(
            "INSERT INTO outbox_batches (events)
                 SELECT group_concat(event_id || ' ' || kind || ' ' || data, char(10) ORDER BY id) FROM outbox HAVING count(*) > 0;
             DROP TABLE outbox;",
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
    }
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(wrap)?;
        tx.execute_batch(sql).map_err(wrap)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).map_err(wrap)?;
        tx.commit().map_err(wrap)?;
    }
    Ok(conn)
}

/// A read-only connection beside the writer (WAL lets it read while the writer commits).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(wrap)?;
    conn.execute_batch("PRAGMA busy_timeout=5000;").map_err(wrap)?;
    Ok(conn)
}

/// Each writer's page cache, in KiB. The daemon has a writer per store, and each cache
/// fills up to its limit as the store grows, so this bounds most of the daemon's memory
/// under load: at 16 MiB, RSS reached 144 MB after 40k orders; at 4 MiB, 81 MB, at the
/// same orders/s (the order path's working set is the tables' right edges and the open
/// orders, far smaller than this). See BENCHMARKS.md.
///
/// Each connection's cache is its own: SQLite is built without
/// `SQLITE_ENABLE_MEMORY_MANAGEMENT` (`.cargo/config.toml`), which would pool every
/// connection's pages in one LRU, so that one store's large transaction made every other
/// store drop its hot pages as soon as it released them.
const CACHE_KIB: i64 = 4096;

/// The WAL size past which the writer restarts the log itself (see [`bound_wal`]).
///
/// Each restart stalls the writer for three `fsync`s (the log, the database, then the
/// log's new header), and for the trading lane, the bus and audit that stall is on the
/// order path: at 10,000 orders/s, with 8 MiB, orders' log restarted ~5 times a second
/// and the lane spent ~20 ms of each second in 70 such `fsync`s, 1–14 ms each as the
/// disk allowed; with 64 MiB, 3 per second and ~3 ms (BENCHMARKS.md, session 21). What a
/// restart copies does not grow with the limit (the checkpointer passes first); the
/// price is disk, up to this much log per busy store under load, and recovery after a
/// SIGKILL reads the logs whole (~70 ms more with ~380 MB of them).
const WAL_LIMIT: i64 = 64 << 20;

/// The WAL file is cut back to this size when the log restarts. It is well above
/// [`WAL_LIMIT`], so it rarely is: on a filesystem mounted with `discard`, every cut was
/// a synchronous discard on the writer's thread.
const JOURNAL_SIZE_LIMIT: i64 = 128 << 20;

/// Under sustained writes the background passive checkpoint never quite catches up with
/// the writer (the log restarts only when a checkpoint has copied every frame before the
/// next write begins), so the WAL only grows (agt bench saw 1 GB for 40k orders). The
/// writer calls this between batches: once the checkpointer has seen [`WAL_LIMIT`] bytes
/// of frames since the last restart, the writer asks it for a pass now, and at its next
/// commit after that pass finishes the checkpoint on its own connection (RESTART) and the
/// next write starts the log from its beginning. Right after a pass, the RESTART has only
/// the frames of one commit left to copy and fsync, whatever the limit. (Before the
/// writer asked for that pass, its own checkpoint copied everything the checkpointer had
/// not, and the limit had to be small: at 64 MB with TRUNCATE, p99.9 of a placement at
/// 32 connections was ~250 ms; at 8 MB with RESTART, ~80 ms.)
pub fn bound_wal(conn: &Connection, checkpointer: &CheckpointGuard) {
    checkpointer.wake_if_idle();
    if checkpointer.wal_bytes.load(Ordering::Relaxed) > checkpointer.wal_limit {
        if checkpointer.ready.swap(false, Ordering::AcqRel) {
            let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
            checkpointer.wal_bytes.store(0, Ordering::Relaxed);
        } else if !checkpointer.urgent.swap(true, Ordering::AcqRel) {
            if let Some(h) = &checkpointer.handle {
                h.thread().unpark();
            }
        }
    } else if checkpointer.ready.load(Ordering::Relaxed) {
        // The log restarted on its own since the pass it asked for: a later ask needs
        // a pass of its own.
        checkpointer.ready.store(false, Ordering::Relaxed);
    }
}

/// A checkpoint pass waits until this many frames (~2 MiB) are in the log and not yet
/// copied, or [`CHECKPOINT_LATEST`] has passed since the last one. Each pass fsyncs the
/// log and the database, and the log then restarts, which fsyncs the log's header on the
/// writer's thread. Passes every 50 ms whatever was written made ~155 fsyncs a second
/// for the daemon at 1,000 orders/s; ~60 with this (`perf stat -e
/// syscalls:sys_enter_fsync`). Under load a pass is due at every period anyway.
///
/// Longer passes write a page the writer keeps changing (an index's leaf per active
/// user, a table's last leaf) fewer times: at 32 MiB the checkpointers' CPU per order at
/// C = 32 fell from ~11 to ~8 µs. But a pass is a burst of kernel work the daemon's
/// woken threads wait behind, and at 10,000 orders/s p99 rose from 4.1–5.6 ms to
/// 5.5–8.5 ms (8 MiB: 5.1–7.3 ms; BENCHMARKS.md, session 23), so passes stay short.
const CHECKPOINT_FRAMES: i64 = 512;
const CHECKPOINT_LATEST: Duration = Duration::from_secs(1);

/// [`CHECKPOINT_FRAMES`] under heavy load (~32 MiB): then the CPU is short, the tail is
/// queueing anyway, and a page that many commits rewrite is copied once a pass. At C = 32
/// this took the checkpointers from ~9–10 to ~7 µs of CPU per order (BENCHMARKS.md,
/// session 25); below that load, passes stay short for the tail's sake (above).
const CHECKPOINT_FRAMES_BUSY: i64 = 8192;

/// How heavily the daemon is loaded, as the trading lane sees it (its flushes wait
/// longer under heavy load, `lane::BUSY_AT`): every store's checkpointer then waits for
/// [`CHECKPOINT_FRAMES_BUSY`]. One per daemon, carried by its bus ([`Bus::load`]).
///
/// [`Bus::load`]: crate::services::bus::Bus::load
#[derive(Clone, Default, Debug)]
pub struct Load(Arc<AtomicBool>);

impl Load {
    pub fn set_heavy(&self, heavy: bool) {
        if self.0.load(Ordering::Relaxed) != heavy {
            self.0.store(heavy, Ordering::Relaxed);
        }
    }

    pub fn is_heavy(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// How many uncopied frames a checkpoint pass waits for now.
    fn pass_frames(&self) -> i64 {
        if self.is_heavy() {
            CHECKPOINT_FRAMES_BUSY
        } else {
            CHECKPOINT_FRAMES
        }
    }
}

/// The log's last frame as the wal-index header in `<db>-shm` says (`mxFrame`, a
/// native-endian u32 at offset 16: <https://www.sqlite.org/walformat.html>), read
/// without a lock: a hint of how much was written, never a decision about data.
fn log_frames(shm: &std::fs::File) -> Option<i64> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 4];
    shm.read_exact_at(&mut b, 16).ok()?;
    Some(u32::from_ne_bytes(b) as i64)
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection once the log holds
/// [`CHECKPOINT_FRAMES`] frames it has not copied, or a little of them for
/// [`CHECKPOINT_LATEST`] (it looks every `period` while the store is written, backing
/// off to once a second while it is idle: the writer's next commit wakes it, see
/// [`bound_wal`]), until the returned guard is dropped; the writer pays only for what
/// [`bound_wal`] has left to do.
///
/// A short period matters under load: when the writer restarts the log, it must first
/// fsync the frames not yet checkpointed, and that stall is on the order path. At 200 ms
/// the lane spent ~1.2 s of a 5 s `agt bench` run in those restarts (10–37 ms each); at
/// 50 ms, ~0.5 s (~6 ms each).
pub fn spawn_checkpointer(path: &Path, period: Duration, load: &Load) -> CheckpointGuard {
    spawn_checkpointer_idling(path, period, Duration::from_secs(1), CHECKPOINT_LATEST, WAL_LIMIT, load.clone())
}

/// [`spawn_checkpointer`] with the longest wait between looks while idle, the longest a
/// few frames wait for a pass, and the log size past which the writer restarts it.
fn spawn_checkpointer_idling(
    path: &Path,
    period: Duration,
    idle_wait: Duration,
    latest: Duration,
    wal_limit: i64,
    load: Load,
) -> CheckpointGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let wal_bytes = Arc::new(AtomicI64::new(0));
    let seen = wal_bytes.clone();
    let idle = Arc::new(AtomicBool::new(false));
    let backed_off = idle.clone();
    let passes = Arc::new(AtomicI64::new(0));
    let passed = passes.clone();
    let (urgent_flag, ready_flag) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (urgent, ready) = (urgent_flag.clone(), ready_flag.clone());
    let path = path.to_path_buf();
    let shm = PathBuf::from(format!("{}-shm", path.display()));
    let name = format!("ckpt-{}", path.file_stem().and_then(|s| s.to_str()).unwrap_or("db"));
    let lowered = crate::services::priority::is_lowered();
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // Nobody's answer waits for a checkpoint pass, whoever's store it is: the
            // trading lane's and audit's checkpointers run lower too.
            if !lowered {
                crate::services::priority::lower_this_thread();
            }
            let Ok(conn) = Connection::open(&path) else { return };
            let _ = conn.execute_batch("PRAGMA busy_timeout=1000;");
            // A WAL frame is a page and a 24-byte header.
            let frame = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).unwrap_or(4096) + 24;
            // Opened once: this thread's connection keeps the file from being removed.
            let mut shm_file = None;
            let (mut wait, mut last_seen, mut copied, mut last_pass) = (period, -1i64, 0i64, std::time::Instant::now());
            while !flag.load(Ordering::Relaxed) {
                std::thread::park_timeout(wait);
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                // Frames written since the last pass copied up to `copied` (a smaller
                // number: the log has restarted since). Unknown: pass as before.
                if shm_file.is_none() {
                    shm_file = std::fs::File::open(&shm).ok();
                }
                let frames = shm_file.as_ref().and_then(log_frames);
                let pass_frames = load.pass_frames();
                let uncopied = frames.map_or(pass_frames, |f| if f >= copied { f - copied } else { f });
                let asked = urgent.load(Ordering::Acquire);
                if asked || uncopied >= pass_frames || (uncopied > 0 && last_pass.elapsed() >= latest) {
                    // Answers (busy, frames in the log, frames checkpointed).
                    if let Ok((log, done)) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                    {
                        copied = done.max(0);
                        seen.store(log.max(0) * frame, Ordering::Relaxed);
                    }
                    last_pass = std::time::Instant::now();
                    passed.fetch_add(1, Ordering::Relaxed);
                    if asked {
                        ready.store(true, Ordering::Release);
                        urgent.store(false, Ordering::Release);
                    }
                }
                // The same log as last time means nobody wrote since: back off.
                let now = frames.unwrap_or(-2);
                wait = if now != last_seen { period } else { (wait * 2).min(idle_wait) };
                backed_off.store(wait > period, Ordering::Relaxed);
                last_seen = now;
            }
            // Leave a small WAL behind on a clean stop.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .ok();
    CheckpointGuard { stop, handle, wal_bytes, wal_limit, idle, passes, urgent: urgent_flag, ready: ready_flag }
}

/// Stops the checkpoint thread when dropped (after a final checkpoint).
pub struct CheckpointGuard {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// Bytes of frames in the WAL since its last restart, as of the last checkpoint pass.
    wal_bytes: Arc<AtomicI64>,
    /// Past this many, the writer restarts the log ([`WAL_LIMIT`]; smaller in tests).
    wal_limit: i64,
    /// Set while the checkpointer has backed off (nothing was written lately).
    idle: Arc<AtomicBool>,
    /// Checkpoint passes run so far (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    passes: Arc<AtomicI64>,
    /// The writer asks for a pass before it restarts the log ([`bound_wal`]); the
    /// checkpointer says when one has run since.
    urgent: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
}

impl CheckpointGuard {
    /// Called by the writer after each commit: a checkpointer that backed off while the
    /// store was idle starts its short period again now, not up to a second later. Left
    /// asleep, it let the first second of a burst pile up in the WAL, and the writer's
    /// first restart had to copy and fsync all of it: 100–200 ms on the order path after
    /// every idle spell (open loop at 2,250 orders/s: p99 160–210 ms, 23–29 ms with this).
    fn wake_if_idle(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            if let Some(h) = &self.handle {
                h.thread().unpark();
            }
        }
    }
}

impl Drop for CheckpointGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// A connection with the statements one piece of work runs row after row held for that
/// work's length (a lane drain's recorded orders, a commit's resting rows).
/// `prepare_cached` per row hashes the SQL and allocates its key to take the statement
/// out of rusqlite's cache, and on drop hashes it again and clears its bindings to put it
/// back: ~2 k instructions a row, ~4 % of the lane (BENCHMARKS.md, session 41). Held
/// here, a statement is taken once per piece of work and goes back to the cache when
/// the `Held` drops. Derefs to the connection, so everything else runs as before.
pub(crate) struct Held<'c> {
    conn: &'c Connection,
    /// Taken statements by their SQL's address: a handful, so a scan beats a hash. The
    /// same text at another address is only a second entry.
    held: std::cell::RefCell<Vec<(&'static str, rusqlite::CachedStatement<'c>)>>,
}

impl<'c> Held<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Held { conn, held: std::cell::RefCell::new(Vec::new()) }
    }

    /// Runs `sql` (one statement that returns no rows) with `params`, as
    /// `Statement::execute`: the statement is reset after each run, and every run binds
    /// all its parameters, so nothing carries over from one row to the next.
    pub(crate) fn execute(&self, sql: &'static str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        let mut held = self.held.borrow_mut();
        let i = match held.iter().position(|(s, _)| std::ptr::eq(*s, sql)) {
            Some(i) => i,
            None => {
                held.push((sql, self.conn.prepare_cached(sql)?));
                held.len() - 1
            }
        };
        held[i].1.execute(params)
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held statement writes each row as `prepare_cached` would: every run binds all
    /// its parameters (a NULL after a value stays NULL), a failed run leaves it usable,
    /// and the statement goes back to rusqlite's cache when the `Held` drops, so the
    /// transaction commits.
    #[test]
    fn a_held_statement_writes_each_row_as_prepare_cached_would() {
        const INSERT: &str = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        let rows = [(1, Some("a")), (2, None), (1, Some("dup")), (3, Some("c"))];
        let mut written = Vec::new();
        for held in [false, true] {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); BEGIN").unwrap();
            let outcomes: Vec<bool> = if held {
                let tx = Held::new(&conn);
                rows.iter().map(|(k, v)| tx.execute(INSERT, rusqlite::params![k, v]).is_ok()).collect()
            } else {
                rows.iter().map(|(k, v)| conn.prepare_cached(INSERT).unwrap().execute(rusqlite::params![k, v]).is_ok()).collect()
            };
            assert_eq!(outcomes, [true, true, false, true], "held: {held}");
            conn.execute_batch("COMMIT").unwrap();
            let got: Vec<(i64, Option<String>)> = conn
                .prepare("SELECT k, v FROM t ORDER BY k")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            written.push(got);
        }
        assert_eq!(written[0], [(1, Some("a".into())), (2, None), (3, Some("c".into()))]);
        assert_eq!(written[1], written[0]);
    }

    /// Under heavy load a checkpoint pass waits for more of the log.
    #[test]
    fn a_pass_waits_for_more_frames_under_heavy_load() {
        let load = Load::default();
        assert_eq!(load.pass_frames(), CHECKPOINT_FRAMES);
        load.clone().set_heavy(true);
        assert_eq!(load.pass_frames(), CHECKPOINT_FRAMES_BUSY, "a clone is the same signal");
        load.set_heavy(false);
        assert_eq!(load.pass_frames(), CHECKPOINT_FRAMES);
    }

    /// The stores' page caches are separate (see [`CACHE_KIB`]), and SQLite's allocations
    /// take no process-wide lock: lost if the bundled SQLite is built without
    /// `.cargo/config.toml`'s flags.
    #[test]
    fn each_store_has_a_page_cache_of_its_own_and_allocates_without_a_global_lock() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> =
            conn.prepare("PRAGMA compile_options").unwrap().query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(options.iter().any(|o| o.starts_with("THREADSAFE=")), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "SQLite pools every connection's pages: {options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "SQLite counts every allocation under one mutex: {options:?}");
    }

    /// The rebuilds that took the order path's tables to fewer b-trees keep every row.
    #[test]
    fn the_order_path_stores_keep_their_rows_through_the_rebuilds() {
        use crate::services::actor::Service;
        use crate::services::{orders::Orders, risk::Risk, trading::Trading};
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[&str], &str, &[&str]); 3] = [
            (
                "orders",
                Orders::MIGRATIONS,
                "INSERT INTO orders (order_id, user_id, symbol, side, type, time_in_force, price, quantity, filled, status,
                     client_order_id, created_at, updated_at, reject_reason, stage)
                 VALUES ('ord_1', 'u', 'AAPL', 'buy', 'limit', 'gtc', '100', '5', '2', 'partially_filled', 'c1', 't', 't', NULL, 'done'),
                        ('ord_2', 'u', 'AAPL', 'sell', 'limit', 'gtc', '100', '2', '2', 'filled', NULL, 't', 't', NULL, 'settling');
                 INSERT INTO fills VALUES ('ord_1', 'trd_1', '100', '2', 't'), ('ord_2', 'trd_1', '100', '2', 't');",
                &[
                    "SELECT count(*) FROM orders WHERE (status IN ('new', 'partially_filled') OR stage <> 'done')",
                    "SELECT count(*) FROM fills WHERE trade_id = 'trd_1'",
                    "SELECT seq FROM orders WHERE order_id = 'ord_2'",
                ],
            ),
            (
                "trading",
                Trading::MIGRATIONS,
                "INSERT INTO outcomes VALUES ('ord_1', '{}'), ('ord_2', '{}');
                 INSERT INTO cancels VALUES ('ord_3', '1', 't');
                 INSERT INTO trades VALUES ('trd_1', 'AAPL', '100', '2', 'sell', 'ord_1', 'ord_2', 't');
                 INSERT INTO resting VALUES (7, 'ord_1', 'u', 'AAPL', 'buy', '100', '3', 9, '0.01', '1');",
                &[
                    "SELECT count(*) FROM outcomes",
                    "SELECT count(*) FROM cancels",
                    "SELECT count(*) FROM trades WHERE buy_order_id = 'ord_1'",
                    "SELECT internal_id + priority FROM resting WHERE order_id = 'ord_1'",
                ],
            ),
            (
                "risk",
                Risk::MIGRATIONS,
                "INSERT INTO holds VALUES ('ord_1', 'u', 'AAPL', 'USD', 'buy', '100', '300', NULL, 1),
                                          ('ord_2', 'u', 'AAPL', 'AAPL', 'sell', '100', '0', NULL, 0);",
                &["SELECT count(*) FROM holds WHERE open = 1", "SELECT count(*) FROM holds"],
            ),
        ];
        for (name, migrations, rows, checks) in cases {
            let p = dir.path().join(format!("{name}.db"));
            let c = open(&p, Durability::Normal, &migrations[..1]).unwrap();
            c.execute_batch(rows).unwrap();
            let count = |c: &Connection| checks.iter().map(|q| c.query_row(q, [], |r| r.get::<_, i64>(0)).unwrap()).collect::<Vec<_>>();
            let before = count(&c);
            drop(c);
            let c = open(&p, Durability::Normal, migrations).unwrap();
            assert_eq!(count(&c), before, "{name}: the same rows after the rebuild");
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version as usize, migrations.len(), "{name}");
        }
        // The open and unfinished orders are read through the new partial index.
        let c = Connection::open(dir.path().join("orders.db")).unwrap();
        let live = "SELECT count(*) FROM orders INDEXED BY orders_live WHERE (status IN ('new', 'partially_filled') OR stage <> 'done')";
        assert_eq!(c.query_row(live, [], |r| r.get::<_, i64>(0)).unwrap(), 2);
    }

    /// The checkpointer counts the log's frames since its last restart; past the limit
    /// the writer restarts it, and the next write starts the log from its beginning.
    #[test]
    fn the_writer_restarts_a_log_the_checkpointer_saw_pass_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.db");
        let mut c = open(&p, Durability::Normal, &["CREATE TABLE t(x BLOB)"]).unwrap();
        // A small limit, so that the test writes little: the daemon's is [`WAL_LIMIT`].
        let limit = 8 << 20;
        let ckpt =
            spawn_checkpointer_idling(&p, Duration::from_millis(5), Duration::from_secs(1), CHECKPOINT_LATEST, limit, Load::default());
        let tx = c.transaction().unwrap();
        for _ in 0..2600 {
            tx.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap(); // ~10 MB of pages
        }
        tx.commit().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ckpt.wal_bytes.load(Ordering::Relaxed) <= limit {
            assert!(std::time::Instant::now() < deadline, "the checkpointer never counted the frames");
            std::thread::sleep(Duration::from_millis(2));
        }
        let counted = ckpt.wal_bytes.load(Ordering::Relaxed);
        assert!(counted < 2 * limit, "{counted} bytes counted for ~10 MB written");
        // The first call asks the checkpointer for a pass; the call after it restarts.
        let passes = ckpt.passes.load(Ordering::Relaxed);
        bound_wal(&c, &ckpt);
        assert_eq!(ckpt.wal_bytes.load(Ordering::Relaxed), counted, "no restart before the pass it asked for");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ckpt.ready.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the checkpointer never answered the writer's ask");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(ckpt.passes.load(Ordering::Relaxed) > passes);
        bound_wal(&c, &ckpt);
        assert_eq!(ckpt.wal_bytes.load(Ordering::Relaxed), 0, "restarted: nothing counted until the next pass");
        c.execute("INSERT INTO t VALUES (x'00')", []).unwrap();
        let frames: i64 = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap();
        assert!(frames < 10, "the log starts again from its beginning, {frames} frames");
        bound_wal(&c, &ckpt);
        assert_eq!(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 2601);
    }

    /// A few frames wait for a pass (each pass fsyncs twice, and the log's restart after
    /// it fsyncs on the writer); a log that has grown by [`CHECKPOINT_FRAMES`] does not.
    #[test]
    fn a_pass_waits_for_enough_frames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.db");
        let c = open(&p, Durability::Normal, &["CREATE TABLE t(x BLOB)"]).unwrap();
        let ckpt = spawn_checkpointer_idling(
            &p,
            Duration::from_millis(5),
            Duration::from_millis(5),
            Duration::from_secs(60),
            WAL_LIMIT,
            Load::default(),
        );
        c.execute("INSERT INTO t VALUES (x'00')", []).unwrap();
        // Twenty looks at the log go by without a pass.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ckpt.passes.load(Ordering::Relaxed), 0, "a pass for a few frames");
        let tx = c.unchecked_transaction().unwrap();
        for _ in 0..CHECKPOINT_FRAMES {
            tx.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
        }
        tx.commit().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ckpt.passes.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "no pass for {CHECKPOINT_FRAMES} frames");
            std::thread::sleep(Duration::from_millis(2));
        }
        let shm = std::fs::File::open(dir.path().join("f.db-shm")).unwrap();
        let frames = log_frames(&shm).expect("the wal-index header reads");
        assert!(frames > CHECKPOINT_FRAMES, "{frames} frames in the log");
    }

    /// A burst after an idle spell must not wait for the idle checkpointer's next pass:
    /// the writer's commit wakes it. Idle, it waits twice as long each time (20 ms, 40 ms,
    /// … up to 60 s here): 5.5 s into the spell it is in a wait of ~5 s that ends ~4.7 s
    /// after the write, so a pass within 3 s is the wake's. (With 1.5 s and 0.5 s the test
    /// failed once on a machine loaded tenfold: the woken thread had no core for 0.5 s.)
    #[test]
    fn a_write_after_an_idle_spell_wakes_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.db");
        let c = open(&p, Durability::Normal, &["CREATE TABLE t(x)"]).unwrap();
        let ckpt =
            spawn_checkpointer_idling(&p, Duration::from_millis(10), Duration::from_secs(60), Duration::ZERO, WAL_LIMIT, Load::default());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ckpt.idle.load(Ordering::Relaxed) {
            assert!(std::time::Instant::now() < deadline, "the checkpointer never backed off");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Let it back off far (its next pass is then seconds away), then write.
        std::thread::sleep(Duration::from_millis(5500));
        let before = ckpt.wal_bytes.load(Ordering::Relaxed);
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
        bound_wal(&c, &ckpt);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while ckpt.wal_bytes.load(Ordering::Relaxed) == before {
            assert!(std::time::Instant::now() < deadline, "the write did not wake the checkpointer");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!ckpt.idle.load(Ordering::Relaxed));
    }

    /// Every decimal's text fits, the longest ones included, and reads back as it was.
    #[test]
    fn decimal_text_is_the_decimals_own_text() {
        use rust_decimal::Decimal;
        let longest =
            [Decimal::MAX, Decimal::MIN, Decimal::new(1, 28), Decimal::new(-1, 28), Decimal::from_i128_with_scale(-(1 << 95), 28)];
        for d in longest.into_iter().chain(["0", "-0.5", "1.10", "123456.789"].map(|t| t.parse().unwrap())) {
            let t = DecimalText::of(d);
            assert_eq!(t.as_str(), d.to_string());
            let c = Connection::open_in_memory().unwrap();
            let back: String = c.query_row("SELECT ?1", [&t], |r| r.get(0)).unwrap();
            assert_eq!(back.parse::<Decimal>().unwrap(), d);
        }
    }

    #[test]
    fn migrations_run_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let m = ["CREATE TABLE a(x INTEGER);", "ALTER TABLE a ADD COLUMN y TEXT;"];
        let c = open(&p, Durability::Normal, &m[..1]).unwrap();
        c.execute("INSERT INTO a(x) VALUES (1)", []).unwrap();
        drop(c);
        let c = open(&p, Durability::Normal, &m).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 2);
        let n: i64 = c.query_row("SELECT count(*) FROM a WHERE y IS NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        drop(c);
        assert!(matches!(open(&p, Durability::Normal, &m[..1]), Err(StoreError::TooNew { .. })));
    }
}
