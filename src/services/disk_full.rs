//! A full disk: how a failed write is told from other failures, what a caller is told
//! while it lasts, and the fault point the tests fill the disk with.
//!
//! A full disk is not a bug in a service: restarting it sooner or later changes nothing
//! until an operator frees space, and then it should carry on by itself. So the
//! supervisor neither counts such a failure towards `failed` (five in a minute marked
//! every store's service failed for good within a second of the disk filling: nothing
//! resumed once there was room) nor logs each retry; it tries again every
//! [`RETRY`], and a caller meanwhile gets 503 `service_unavailable` saying the disk is
//! full and what to do, not "restarting; retry shortly".

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a service whose store found the disk full is started again: once there is
/// room, it takes writes within this long.
pub const RETRY: Duration = Duration::from_secs(1);

/// ENOSPC and EDQUOT: no space left, or the user's quota is used up.
const FULL_ERRNOS: [i32; 2] = [28, 122];

/// Whether a failure's text says the disk is full: SQLite's `SQLITE_FULL` ("database or
/// disk is full") or an `io::Error` of ENOSPC/EDQUOT ("No space left on device", "Disk
/// quota exceeded"). Failures reach the supervisor as text (a panic's message, or a
/// `ServiceError` of any layer), so the text is what is checked.
pub fn says_full(error: &str) -> bool {
    error.contains("database or disk is full")
        || error.contains("No space left on device")
        || error.contains("Disk quota exceeded")
        || error.contains("os error 28)")
        || error.contains("os error 122)")
}

/// Whether a failure is a full disk's: its text says so ([`says_full`]), or it is an I/O
/// error that SQLite does not name (`disk I/O error`: a write to a WAL or its index that
/// ENOSPC cut short, or an `io::Error`'s text) while the filesystem of `dir` has no room
/// left. On a full tmpfs the audit service failed so, was counted, and was marked
/// `failed`.
pub fn is_full(error: &str, dir: &std::path::Path) -> bool {
    says_full(error) || ((error.contains("disk I/O error") || error.contains("(os error")) && no_room(dir))
}

/// Whether the filesystem of `dir` has less than a megabyte left for the daemon.
pub fn no_room(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct for statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    (st.f_bavail as u128) * (st.f_frsize as u128) < 1 << 20
}

/// Whether an `io::Error` is the disk being full.
pub fn io_full(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| FULL_ERRNOS.contains(&n))
}

/// When a write last failed for a full disk, in milliseconds from [`EPOCH`] (0: never,
/// or there has been room since). One clock for the daemon: every store and journal
/// lives under `AGT_HOME/data`, on one disk. A time, not a flag cleared by the next
/// commit: a commit that writes nothing goes through on a full disk too, and cleared by
/// one the 503s of the writes failing meanwhile said "restarting" instead of "full".
static LAST_FULL_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The daemon's `data/`, whose filesystem [`now`] asks for room once [`SAID_FOR`] has
/// passed ([`watch`]).
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// For how long after a write failed for want of space the daemon says the disk is full
/// without asking the filesystem: two retries of a service, so a write that fails again
/// renews it before it ends.
const SAID_FOR: Duration = Duration::from_secs(2);

fn ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Names the directory whose filesystem holds the stores (`AGT_HOME/data`), once, at
/// the daemon's start.
pub fn watch(data_dir: PathBuf) {
    let _ = DATA_DIR.set(data_dir);
}

/// Whether the disk is full as far as the daemon can tell: a write failed for want of
/// space in the last [`SAID_FOR`], or one did before and there is still no room. The
/// time alone let `/ready` answer 200 two seconds after the last failed write on an
/// idle daemon, though the disk was as full as before and the next write would fail:
/// once the time has passed, the filesystem of `data/` is asked ([`no_room`], one
/// `statvfs`, no write) and the fault point's file counts as full while it exists, and
/// only room clears it. Where the filesystem cannot tell (a user's quota, or a write
/// larger than what is left over a megabyte) it clears after [`SAID_FOR`], as before.
pub fn now() -> bool {
    let last = LAST_FULL_MS.load(Ordering::Acquire);
    if last == 0 {
        return false;
    }
    if ms().saturating_sub(last) < SAID_FOR.as_millis() as u64 {
        return true;
    }
    if fault_file_exists() || DATA_DIR.get().is_some_and(|d| no_room(d)) {
        return true;
    }
    // Room again: later calls answer without a syscall (a write failing meanwhile has
    // set a newer time, which stays).
    let _ = LAST_FULL_MS.compare_exchange(last, 0, Ordering::AcqRel, Ordering::Acquire);
    false
}

/// Records that a write failed for a full disk just now.
pub fn set_full() {
    LAST_FULL_MS.store(ms(), Ordering::Release);
}

/// Records a failed write: full if its text says so.
pub fn note(error: &str) {
    if says_full(error) {
        set_full();
    }
}

/// What a caller is told while `service` cannot write because the disk is full.
pub fn message(service: &str) -> String {
    format!(
        "the {service} service cannot write: the disk holding the daemon's home is full; \
         nothing of this request was stored. Free space there (`df` on AGT_HOME/data): \
         agt resumes by itself within a second or two, no restart needed"
    )
}

/// What `agt daemon run` and `agt daemon start` say when the daemon could not start
/// because the disk holding `data_dir` is full (`error`: what failed, in SQLite's or
/// the OS's words).
pub fn cannot_start(data_dir: &std::path::Path, error: &str) -> String {
    let data = data_dir.display();
    format!(
        "the daemon cannot start: the disk holding {data} is full ({error}). \
         Free space there (`df -h {data}` shows what is left), then start it again"
    )
}

/// A start stopped by a full disk: shown as [`cannot_start`] for the disk holding `dir`.
/// Nearly always `data/`'s (the stores), but a start's first write is the put-back of a
/// cut-off `config set` (`config::cut_off::settle`), beside `agt.toml`, which may be on
/// another disk: freeing space under `data/` would not help it.
#[derive(Debug)]
pub struct CannotStart {
    pub dir: PathBuf,
    /// What failed, in SQLite's or the OS's words.
    pub error: String,
}

impl std::fmt::Display for CannotStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&cannot_start(&self.dir, &self.error))
    }
}

impl std::error::Error for CannotStart {}

/// The fault point (only with `debug.fault_injection = true`, and only when the daemon
/// was started with `AGT_FAULT_DISK_FULL=<path>`): while a file exists at that path,
/// every write of every store fails with `SQLITE_FULL`, as on a full disk. The
/// integration tests fill the disk with it without root or a small filesystem. A file
/// that holds words fills only the stores whose file names begin with one of them
/// (`audit`: `audit.db` and its log), and no journal: one service's store failing while
/// the others, the bus's included, go on.
static FAULT: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Arms the fault point at the daemon's start; the first call wins. The start arms it
/// before it settles a cut-off `config set` if the file as found turns fault injection
/// on (`config::cut_off`'s put-back is then under it too), else once it has read the
/// settings.
pub fn arm_fault(fault_injection: bool) {
    let path = fault_injection.then(|| std::env::var_os("AGT_FAULT_DISK_FULL").map(PathBuf::from)).flatten();
    let _ = FAULT.set(path);
}

/// Whether the fault point's file exists: the disk counts as full (for [`now`]) while it
/// does, whichever stores it names.
fn fault_file_exists() -> bool {
    matches!(FAULT.get(), Some(Some(path)) if path.exists())
}

/// Whether the fault point says the disk is full now for every file (the journals').
pub fn injected() -> bool {
    injected_for(None)
}

/// Whether the fault point is armed: store files then keep their names for
/// [`injected_for`].
pub fn armed() -> bool {
    matches!(FAULT.get(), Some(Some(_)))
}

/// Whether the fault point says the disk is full now for the store file `name` (a read
/// of the flag file per write, only while armed): an empty flag file fills every file, one
/// with words only the stores whose names begin with one of them.
pub fn injected_for(name: Option<&str>) -> bool {
    let Some(Some(path)) = FAULT.get() else { return false };
    match std::fs::read_to_string(path) {
        Err(_) => false,
        Ok(words) if words.trim().is_empty() => true,
        Ok(words) => name.is_some_and(|n| words.split_whitespace().any(|w| n.starts_with(w))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_texts_of_a_full_disk_are_told_from_other_failures() {
        assert!(says_full("sqlite: database or disk is full"));
        assert!(says_full("data/audit-journal: No space left on device (os error 28)"));
        assert!(says_full("Disk quota exceeded (os error 122)"));
        assert!(!says_full("sqlite: database is locked"));
        assert!(!says_full("fault injection: crashed"));
        assert!(!says_full("os error 2812)"));
        assert!(io_full(&std::io::Error::from_raw_os_error(28)));
        assert!(!io_full(&std::io::Error::from_raw_os_error(5)));
    }

    #[test]
    fn an_unnamed_io_error_is_a_full_disk_only_where_there_is_no_room() {
        let dir = tempfile::tempdir().unwrap();
        // The test machine's /tmp has room: a bare I/O error is not taken for a full disk.
        assert!(!no_room(dir.path()));
        assert!(!is_full("sqlite: disk I/O error", dir.path()));
        assert!(is_full("sqlite: database or disk is full", dir.path()));
        assert!(!no_room(std::path::Path::new("/no/such/dir")));
    }
}
