//! One `write` per commit to a store's log, instead of two per page.
//!
//! SQLite appends a commit to the WAL a frame at a time, and each frame in two calls:
//! its 24-byte header, then its page (`walWriteOneFrame`). The trading lane made ~6.5
//! `pwrite`s per order at 5,000 orders/s, and at C = 32 `pwrite` was 12 % of its CPU.
//! On this machine 16 small `pwrite`s cost ~14 µs where one of the same 33 KB costs
//! ~3.6 µs: most of the price is per call, not per byte (BENCHMARKS.md, session 19).
//!
//! So the stores' writers open their files through a thin VFS, [`NAME`], that wraps the
//! platform's own. For a WAL file it gathers writes that follow each other into one
//! buffer and hands them to the real file in one `write`:
//!
//! - **at the end of a commit**: a frame header whose commit field (`nTruncate`, bytes
//!   4..8) is not zero marks the last frame of a commit; once its page is in the buffer,
//!   the buffer is written, within that `xWrite` call. So a commit is in the operating
//!   system, as with the platform's VFS, before SQLite goes on to publish it in the
//!   wal-index: a SIGKILL after a commit returns loses nothing, and an error to write it
//!   fails the commit as it would have;
//! - before anything else touches the file: a read, a sync (`durability = "full"`
//!   syncs each commit), a truncation, a size, a file control, a close;
//! - before a write that does not follow the buffer (SQLite rewrites the checksums of
//!   frames a transaction wrote twice), which then goes to the file as it is;
//! - once the buffer holds [`FLUSH_AT`] bytes (a large transaction spills).
//!
//! A buffer goes out in writes of at most [`WRITE_MAX`] bytes: the platform's VFS takes
//! no more in one call.
//!
//! Files that are not logs (the database, its journal) pass straight through, as do
//! readers and checkpointers, which open stores with the platform's VFS: locks and the
//! wal-index belong to the file (the platform VFS keeps them per inode), not to the VFS
//! a connection named.

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// The VFS's name: `store::open` opens writers with it.
pub const NAME: &str = "agt-wal";

/// A buffer holding this much is written even before its commit ends.
const FLUSH_AT: usize = 256 << 10;

/// The most one write hands the platform: the unix VFS writes at most 128 KiB per call
/// (it masks the length with `0x1ffff`, sized for one page).
const WRITE_MAX: usize = 64 << 10;

/// A WAL frame's header, and where the first one begins (after the log's own header).
const FRAME_HEADER: usize = 24;
const LOG_HEADER: i64 = 32;

thread_local! {
    /// Writes this thread handed the platform for log files (for tests).
    static LOG_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// One open file: ours, then the platform's right after it in the same allocation.
#[repr(C)]
struct File {
    /// Must come first: SQLite sees this struct as a `sqlite3_file`.
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    log: bool,
    /// Bytes not yet handed to the platform, and the offset of the first.
    buf: Vec<u8>,
    at: i64,
    /// The buffer's last write was the header of a commit's last frame: its page ends
    /// the commit.
    commit: bool,
    /// The file's name (`audit.db-wal`), kept only while the disk-full fault point is
    /// armed (tests), which may fill one store's files and not the others'.
    fault_name: Option<Box<str>>,
}

/// Where the platform's file begins in ours (8-byte aligned).
const REAL_AT: usize = std::mem::size_of::<File>().next_multiple_of(8);

struct Registered {
    platform: *mut ffi::sqlite3_vfs,
}
// The platform VFS is a static of SQLite's, shared by every thread.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Result<Registered, String>> = OnceLock::new();

/// Registers the VFS (once per process; not as the default). Err if SQLite has no
/// default VFS to wrap, or refused it.
pub fn register() -> Result<(), String> {
    REGISTERED
        .get_or_init(|| unsafe {
            let platform = ffi::sqlite3_vfs_find(std::ptr::null());
            if platform.is_null() {
                return Err("SQLite has no default VFS".into());
            }
            let mut vfs: ffi::sqlite3_vfs = *platform;
            vfs.szOsFile = (REAL_AT + (*platform).szOsFile as usize) as c_int;
            vfs.zName = c"agt-wal".as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            match ffi::sqlite3_vfs_register(vfs, 0) {
                ffi::SQLITE_OK => Ok(Registered { platform }),
                rc => Err(format!("SQLite refused the {NAME} VFS: error {rc}")),
            }
        })
        .as_ref()
        .map(drop)
        .map_err(Clone::clone)
}

fn platform() -> *mut ffi::sqlite3_vfs {
    match REGISTERED.get() {
        Some(Ok(r)) => r.platform,
        _ => unreachable!("a file is opened through the VFS only once it is registered"),
    }
}

/// Log writes this thread has handed the platform so far.
pub fn log_writes() -> u64 {
    LOG_WRITES.get()
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let ours = file as *mut File;
    let real = (file as *mut u8).add(REAL_AT) as *mut ffi::sqlite3_file;
    let platform = platform();
    let rc = ((*platform).xOpen.expect("the platform VFS opens files"))(platform, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
        (*ours).base.pMethods = std::ptr::null();
        return rc;
    }
    std::ptr::write(
        ours,
        File {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            real,
            log: flags & ffi::SQLITE_OPEN_WAL != 0,
            buf: Vec::new(),
            at: 0,
            commit: false,
            fault_name: (crate::services::disk_full::armed() && !name.is_null())
                .then(|| {
                    let full = std::ffi::CStr::from_ptr(name).to_string_lossy();
                    full.rsplit('/').next().map(Box::from)
                })
                .flatten(),
        },
    );
    rc
}

impl File {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        unsafe { &*(*self.real).pMethods }
    }

    /// Hands the buffer to the platform in one write. The buffer is emptied whatever
    /// the outcome: after an error SQLite writes the transaction's frames again.
    fn flush(&mut self) -> c_int {
        self.commit = false;
        if self.buf.is_empty() {
            return ffi::SQLITE_OK;
        }
        let write = self.methods().xWrite.expect("a file takes writes");
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.at;
        for chunk in self.buf.chunks(WRITE_MAX) {
            LOG_WRITES.set(LOG_WRITES.get() + 1);
            rc = unsafe { write(self.real, chunk.as_ptr() as *const c_void, chunk.len() as c_int, at) };
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        // The capacity stays as it grew: at most twice FLUSH_AT (a page past it doubles).
        self.buf.clear();
        rc
    }

    fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        if !self.buf.is_empty() && offset != self.at + self.buf.len() as i64 {
            // Not the next byte: what is gathered goes first, then this as it is.
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            LOG_WRITES.set(LOG_WRITES.get() + 1);
            let write = self.methods().xWrite.expect("a file takes writes");
            return unsafe { write(self.real, data.as_ptr() as *const c_void, data.len() as c_int, offset) };
        }
        if self.buf.is_empty() {
            self.at = offset;
        }
        let ends_commit = std::mem::take(&mut self.commit);
        self.buf.extend_from_slice(data);
        if data.len() == FRAME_HEADER && offset >= LOG_HEADER {
            // A frame's header: its page follows. Bytes 4..8 hold the database's size
            // in pages after a commit, on the commit's last frame only.
            self.commit = data[4..8] != [0, 0, 0, 0];
            return ffi::SQLITE_OK;
        }
        if ends_commit || self.buf.len() >= FLUSH_AT {
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

unsafe fn this<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
    &mut *(file as *mut File)
}

/// Flushes the buffer, then runs `then` on the platform's file.
unsafe fn flushed(file: *mut ffi::sqlite3_file, then: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> c_int) -> c_int {
    let f = this(file);
    let rc = f.flush();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    then(f.methods(), f.real)
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let f = this(file);
    let flushed = f.flush();
    let rc = (f.methods().xClose.expect("a file closes"))(f.real);
    std::ptr::drop_in_place(&mut f.buf);
    std::ptr::drop_in_place(&mut f.fault_name);
    f.base.pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        rc
    }
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    flushed(file, |m, real| (m.xRead.expect("a file reads"))(real, buf, amount, offset))
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let f = this(file);
    if crate::services::disk_full::injected_for(f.fault_name.as_deref()) {
        return ffi::SQLITE_FULL;
    }
    if !f.log {
        return (f.methods().xWrite.expect("a file takes writes"))(f.real, data, amount, offset);
    }
    f.write(std::slice::from_raw_parts(data as *const u8, amount as usize), offset)
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed(file, |m, real| (m.xTruncate.expect("a file truncates"))(real, size))
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed(file, |m, real| (m.xSync.expect("a file syncs"))(real, flags))
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed(file, |m, real| (m.xFileSize.expect("a file has a size"))(real, size))
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed(file, |m, real| (m.xLock.expect("a file locks"))(real, level))
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed(file, |m, real| (m.xUnlock.expect("a file unlocks"))(real, level))
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let f = this(file);
    (f.methods().xCheckReservedLock.expect("a file has locks"))(f.real, out)
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    flushed(file, |m, real| (m.xFileControl.expect("a file takes controls"))(real, op, arg))
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let f = this(file);
    (f.methods().xSectorSize.expect("a file has sectors"))(f.real)
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let f = this(file);
    (f.methods().xDeviceCharacteristics.expect("a file has a device"))(f.real)
}

// The wal-index (shared memory) and memory-mapped reads belong to the database file:
// passed through as they are, where the platform has them.

unsafe extern "C" fn x_shm_map(file: *mut ffi::sqlite3_file, page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int {
    let f = this(file);
    match f.methods().xShmMap {
        Some(map) => map(f.real, page, size, extend, out),
        None => ffi::SQLITE_IOERR,
    }
}

unsafe extern "C" fn x_shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    let f = this(file);
    match f.methods().xShmLock {
        Some(lock) => lock(f.real, offset, n, flags),
        None => ffi::SQLITE_IOERR,
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let f = this(file);
    if let Some(barrier) = f.methods().xShmBarrier {
        barrier(f.real)
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let f = this(file);
    match f.methods().xShmUnmap {
        Some(unmap) => unmap(f.real, delete),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    let f = this(file);
    match f.methods().xFetch {
        Some(fetch) if f.methods().iVersion >= 3 => fetch(f.real, offset, amount, out),
        _ => {
            *out = std::ptr::null_mut();
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    let f = this(file);
    match f.methods().xUnfetch {
        Some(unfetch) if f.methods().iVersion >= 3 => unfetch(f.real, offset, page),
        _ => ffi::SQLITE_OK,
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn open(path: &std::path::Path) -> Connection {
        register().unwrap();
        let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;").unwrap();
        c
    }

    /// A new store in a temporary folder, opened through this VFS, with table `t` made
    /// by `schema` (the folder lives as long as the first element).
    fn store_with(schema: &str) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = open(&path);
        w.execute_batch(schema).unwrap();
        (dir, path, w)
    }

    /// A commit of many pages reaches the log in one write, and what it wrote reads back:
    /// through the same connection, through another one on the platform's VFS while the
    /// writer is open (it reads the log), and after the writer closes.
    #[test]
    fn a_commit_is_one_write_and_reads_back_everywhere() {
        let (_dir, path, w) = store_with("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
        let text = "x".repeat(500);
        for round in 0..3 {
            let before = log_writes();
            let tx = w.unchecked_transaction().unwrap();
            for k in 0..200 {
                tx.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![round * 1000 + k, text]).unwrap();
            }
            tx.commit().unwrap();
            // ~100 KB of pages in 64 KiB writes; a page at a time, it took ~50.
            let writes = log_writes() - before;
            assert!((1..=2).contains(&writes), "a commit of ~25 pages took {writes} writes through the VFS");
            let r = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            let n: i64 = r.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(n, (round + 1) * 200, "another connection sees the commit");
        }
        let n: i64 = w.query_row("SELECT count(*) FROM t WHERE v = ?1", [&text], |r| r.get(0)).unwrap();
        assert_eq!(n, 600);
        // Checkpointed and restarted from the writer, then written on from the log's start.
        w.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())).unwrap();
        w.execute("UPDATE t SET v = 'y' WHERE k < 100", []).unwrap();
        drop(w);
        let r = Connection::open(&path).unwrap();
        let (n, y): (i64, i64) = r.query_row("SELECT count(*), sum(v = 'y') FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((n, y), (600, 100));
        assert_eq!(r.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    }

    /// What a SIGKILL leaves is what the files hold: copied right after each commit
    /// returns (the database and its log, as the operating system has them), the store
    /// opens with every committed row, though the writer never checkpointed or closed.
    #[test]
    fn every_commit_is_in_the_files_when_it_returns() {
        let (dir, path, w) = store_with("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
        for round in 0..5i64 {
            let tx = w.unchecked_transaction().unwrap();
            for k in 0..(1 + round * 40) {
                tx.execute("INSERT INTO t VALUES (?1, 'v')", [round * 1000 + k]).unwrap();
            }
            tx.commit().unwrap();
            let copy = tempfile::tempdir().unwrap();
            std::fs::copy(&path, copy.path().join("t.db")).unwrap();
            std::fs::copy(dir.path().join("t.db-wal"), copy.path().join("t.db-wal")).unwrap();
            let r = Connection::open(copy.path().join("t.db")).unwrap();
            let n: i64 = r.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(n, (0..=round).map(|i| 1 + i * 40).sum::<i64>(), "round {round}: the copy holds every commit");
        }
    }

    /// A transaction larger than the buffer spills before its commit, and a rolled-back
    /// one leaves nothing behind: the log's frames past the last commit are ignored.
    #[test]
    fn a_large_or_rolled_back_transaction_keeps_the_store_whole() {
        let (_dir, path, w) = store_with("PRAGMA cache_size=-256; CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
        let blob = vec![7u8; 3000];
        let tx = w.unchecked_transaction().unwrap();
        for k in 0..2000 {
            tx.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![k, blob]).unwrap();
        }
        tx.commit().unwrap();
        let tx = w.unchecked_transaction().unwrap();
        for k in 2000..3000 {
            tx.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![k, blob]).unwrap();
        }
        tx.rollback().unwrap();
        drop(w);
        let r = Connection::open(&path).unwrap();
        assert_eq!(r.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 2000);
        assert_eq!(r.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    }
}
