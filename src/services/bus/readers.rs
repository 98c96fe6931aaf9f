//! The bus's read connections to `events.db`: a small pool, lent one read at a time.
//!
//! One connection behind a mutex made every replay wait for every other: two clients
//! reading `GET /api/events?since=0` took turns page by page, and a follower catching up
//! waited behind both. WAL lets any number of readers read beside the writer, so each
//! read takes a connection of its own, up to [`READERS`] at once; a read past that waits
//! for one to come back. The bound is what keeps memory bounded: each connection has its
//! own page cache (SQLite's default, 2 MiB at most) and its prepared statements.

use rusqlite::Connection;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

/// The most read connections open at once: enough for a few replays and the followers'
/// catch-ups side by side on the machines we run on (a read is CPU-bound once its pages
/// are cached), few enough that their caches stay small beside the writers'.
pub(super) const READERS: usize = 4;

pub(super) struct Readers {
    path: PathBuf,
    pool: Mutex<Pool>,
    /// Told when a connection comes back, for a read waiting for one.
    returned: Condvar,
}

struct Pool {
    idle: Vec<Connection>,
    /// Connections open, lent or idle: at least the one opened with the bus, which is
    /// never closed, so a read can always wait for it when opening another fails.
    open: usize,
}

/// A connection lent for one read; it goes back to the pool when dropped.
pub(super) struct Lent<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Readers {
    /// The pool, holding `first` (opened by the bus's start, so that a store it cannot
    /// read fails the start, not the first read).
    pub(super) fn new(path: PathBuf, first: Connection) -> Self {
        Readers { path, pool: Mutex::new(Pool { idle: vec![first], open: 1 }), returned: Condvar::new() }
    }

    /// An idle connection, a new one while fewer than [`READERS`] are open, or else the
    /// next one returned. Blocking.
    pub(super) fn take(&self) -> Lent<'_> {
        let mut pool = self.pool.lock().unwrap();
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Lent { readers: self, conn: Some(conn) };
            }
            if pool.open < READERS {
                pool.open += 1;
                drop(pool);
                match crate::services::store::open_reader(&self.path) {
                    Ok(conn) => return Lent { readers: self, conn: Some(conn) },
                    Err(e) => {
                        // Out of file descriptors, say: wait for one of those open.
                        tracing::warn!(error = %e, "could not open another reader of events.db; waiting for one in use");
                        pool = self.pool.lock().unwrap();
                        pool.open -= 1;
                        continue;
                    }
                }
            }
            pool = self.returned.wait(pool).unwrap();
        }
    }
}

impl Deref for Lent<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("lent until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.pool.lock().unwrap().idle.push(conn);
            self.readers.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads take connections side by side up to the bound; one past it waits until a
    /// connection comes back, and gets that one (no more are opened).
    #[test]
    fn reads_run_side_by_side_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)").unwrap();
        let readers = Readers::new(path.clone(), crate::services::store::open_reader(&path).unwrap());
        let lent: Vec<Lent> = (0..READERS).map(|_| readers.take()).collect();
        assert_eq!(readers.pool.lock().unwrap().open, READERS);
        std::thread::scope(|s| {
            let (got, told) = std::sync::mpsc::channel();
            let readers = &readers;
            s.spawn(move || {
                let conn = readers.take();
                got.send(conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap()).unwrap();
            });
            assert!(told.recv_timeout(std::time::Duration::from_millis(100)).is_err(), "waits while every connection is lent");
            drop(lent);
            assert_eq!(told.recv().unwrap(), 0, "reads once one comes back");
        });
        let pool = readers.pool.lock().unwrap();
        assert_eq!((pool.open, pool.idle.len()), (READERS, READERS), "every connection came back, none more opened");
    }
}
