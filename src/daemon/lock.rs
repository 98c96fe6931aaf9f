//! One daemon per `AGT_HOME`: an exclusive `flock` on `agtd.lock`, held for the daemon's
//! whole life. The kernel drops it when the process dies, even by SIGKILL, so a crashed
//! daemon never blocks the next one; the files it left (socket, pid, agtd.json) are then
//! known to be stale and are cleaned up.
//!
//! The lock is also how a client tells whether *this* home's daemon runs
//! ([`holder`]): a pid in `agtd.pid` or `agtd.json` can be stale, reused by another
//! process, or copied with the home from another one, and a socket path in `agtd.json`
//! can name another home's socket; the lock on this home's own `agtd.lock` cannot.

use crate::daemon::Home;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;

pub struct HomeLock {
    _file: File,
}

/// How long a start waits for the lock of a daemon that is dying (killed, its threads
/// still exiting): a start right after a SIGKILL found the lock still held now and then.
const DYING_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a start tries again when the lock is held: longer than any client's probe
/// of it, short enough that a second daemon on a taken home gives up at once.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

pub fn acquire(home: &Home) -> anyhow::Result<HomeLock> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(home.lock_file())?;
    let waited_since = std::time::Instant::now();
    let locked = loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let waited = waited_since.elapsed();
        // A client's probe ([`holder`]) holds the lock for a few microseconds: a start
        // that met one tries again for a moment before it calls the home taken.
        let probe = waited < PROBE_WAIT;
        if rc == 0 || !(probe || holder_is_dying(home)) || waited >= DYING_WAIT {
            break rc == 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if !locked {
        // The other daemon may hold the lock before it has written its pid.
        let pid = std::fs::read_to_string(home.pid_file()).unwrap_or_default();
        let pid = match pid.trim() {
            "" => String::new(),
            p => format!(" (pid {p})"),
        };
        anyhow::bail!(
            "another agt daemon{pid} is already running on {}; stop it with `agt daemon stop` or use another --home",
            home.root().display()
        );
    }
    Ok(HomeLock { _file: file })
}

/// Whether the daemon that holds the lock is on its way out: the process its pid file
/// names is gone or a zombie (a killed process keeps its lock until its last thread has
/// exited). A daemon still starting has not written its pid yet: not dying.
fn holder_is_dying(home: &Home) -> bool {
    let pid = std::fs::read_to_string(home.pid_file()).unwrap_or_default();
    let Ok(pid) = pid.trim().parse::<u32>() else { return false };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s == "Z" || s == "X"),
        Err(_) => std::path::Path::new("/proc/self").exists(),
    }
}

/// Who holds a home's `agtd.lock`, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: no daemon runs for this home, whatever its pid files and socket say.
    Nobody,
    /// This process holds it (the kernel's list of locks names it).
    Pid(u32),
    /// Someone holds it, but the kernel's list does not say who (no `/proc/locks`, or a
    /// holder in another pid namespace).
    Unknown,
}

/// Whether a daemon holds `home`'s lock, and which process: the lock is taken
/// (non-blocking) and released at once, and when it is held `/proc/locks` names the
/// holder of that very file (its device and inode), not of a copy of it elsewhere.
pub fn holder(home: &Home) -> std::io::Result<Holder> {
    use std::os::unix::fs::MetadataExt;
    // Read-only and never created: a probe leaves no file in a home without a daemon.
    let file = match File::open(home.lock_file()) {
        Ok(f) => f,
        // Every daemon creates it before anything else: without it, none ever ran here.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holder::Nobody),
        Err(e) => return Err(e),
    };
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return Ok(Holder::Nobody);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(err);
    }
    let meta = file.metadata()?;
    // The kernel hands `/proc/locks` out a page per `read`, walking its list afresh each
    // time: a lock another process drops meanwhile shifts the lines after it, and one can
    // be missed (with tests' daemons taking and dropping SQLite's locks beside it, CI once
    // saw a held lock named by nobody). A line that is there shows up in a read or two.
    for _ in 0..LOCKS_READS {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        if let Some(pid) = flock_holder(&locks, meta.dev(), meta.ino()) {
            return Ok(Holder::Pid(pid));
        }
    }
    Ok(Holder::Unknown)
}

/// How many times [`holder`] reads `/proc/locks` for a held lock's holder.
const LOCKS_READS: usize = 4;

/// The pid `/proc/locks` gives for a granted `flock` on the file with this device and
/// inode. Lines read `1: FLOCK  ADVISORY  WRITE 4242 fe:00:10502428 0 EOF` (the device
/// as hex major:minor); a waiter's line has `->` after the number. Where the device
/// numbers differ (btrfs gives stat an anonymous one), one holder of the inode will do.
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want_dev = format!("{:02x}:{:02x}", libc::major(dev), libc::minor(dev));
    let mut by_inode = Vec::new();
    for line in locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            continue;
        }
        let Some((dev_text, ino_text)) = f[5].rsplit_once(':') else { continue };
        let (Ok(pid), Ok(inode)) = (f[4].parse::<u32>(), ino_text.parse::<u64>()) else { continue };
        if inode != ino || pid == 0 {
            continue;
        }
        if dev_text == want_dev {
            return Some(pid);
        }
        by_inode.push(pid);
    }
    by_inode.dedup();
    match by_inode[..] {
        [pid] => Some(pid),
        _ => None,
    }
}

/// Removes a socket left by a daemon that died, after checking nobody answers on it.
pub fn clear_stale_socket(home: &Home) -> anyhow::Result<()> {
    let path = home.socket();
    if !path.exists() {
        return Ok(());
    }
    if let Some(what) = not_a_socket(&path) {
        anyhow::bail!(
            "{} is {what}, not a socket: the daemon listens there (DESIGN.md: $AGT_HOME/agt.sock); move it away or remove it, then start again",
            path.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!("something is listening on {} although no daemon holds the home's lock; stop it first", path.display());
    }
    std::fs::remove_file(&path)
        .map_err(|e| anyhow::anyhow!("cannot remove the stale socket {}: {e}; remove it yourself", path.display()))?;
    tracing::info!(socket = %path.display(), "removed a stale socket left by a previous daemon");
    Ok(())
}

/// What is at `path` when it is not a socket (a directory, a file), for the message.
fn not_a_socket(path: &std::path::Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::symlink_metadata(path).ok()?.file_type();
    if t.is_socket() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("a file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_a_lock_is_read_from_proc_locks_by_device_and_inode() {
        let locks = "1: FLOCK  ADVISORY  WRITE 15195 fe:00:10502428 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 999 fe:00:77 0 EOF\n\
                     2: POSIX  ADVISORY  READ 32374 fe:00:77 128 128\n\
                     3: FLOCK  ADVISORY  WRITE 4242 fe:00:77 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 5151 08:01:77 0 EOF\n";
        let fe00 = libc::makedev(0xfe, 0);
        assert_eq!(flock_holder(locks, fe00, 77), Some(4242), "the granted flock of that device and inode");
        assert_eq!(flock_holder(locks, libc::makedev(8, 1), 77), Some(5151));
        assert_eq!(flock_holder(locks, fe00, 78), None, "nobody locks that inode");
        assert_eq!(flock_holder(locks, libc::makedev(0, 40), 10502428), Some(15195), "another device number, one holder");
        assert_eq!(flock_holder(locks, libc::makedev(0, 40), 77), None, "another device number, two holders: unknown");
    }

    /// A probe sees the daemon's lock (and its pid), and a copy of the home, whose
    /// `agtd.lock` is another file, is not locked.
    #[test]
    fn a_probe_names_the_holder_and_a_copied_home_is_not_held() {
        let (dir, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (home, other) = (Home::at(dir.path()), Home::at(copy.path()));
        assert_eq!(holder(&home).unwrap(), Holder::Nobody, "no agtd.lock: nobody");
        assert!(!home.lock_file().exists(), "a probe creates nothing");
        let lock = acquire(&home).unwrap();
        std::fs::copy(home.lock_file(), other.lock_file()).unwrap();
        let held = holder(&home).unwrap();
        if std::path::Path::new("/proc/locks").exists() {
            assert_eq!(held, Holder::Pid(std::process::id()));
        } else {
            assert_ne!(held, Holder::Nobody);
        }
        assert_eq!(holder(&other).unwrap(), Holder::Nobody);
        drop(lock);
        // A test beside this one that spawns a process forks this one: until the child
        // execs (its copy of the descriptor is close-on-exec), it shares the lock, still
        // named by this pid. Seen once in a full run on a loaded machine; that window is
        // microseconds, so a lock still held after a few seconds is a real one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while holder(&home).unwrap() != Holder::Nobody {
            assert!(std::time::Instant::now() < deadline, "released with the daemon: {:?}", holder(&home));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        acquire(&home).expect("a probe leaves the lock free");
    }

    /// A start waits only for a holder on its way out: one whose pid names a zombie
    /// (a killed daemon whose threads are still exiting), not a live or starting one.
    #[test]
    fn only_a_dying_holder_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert!(!holder_is_dying(&home), "no pid yet: a daemon still starting");
        std::fs::write(home.pid_file(), std::process::id().to_string()).unwrap();
        assert!(!holder_is_dying(&home), "a live process");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        std::fs::write(home.pid_file(), child.id().to_string()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !holder_is_dying(&home) {
            assert!(std::time::Instant::now() < deadline, "an exited, unreaped child is a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(holder_is_dying(&home), "a process that is gone");
    }
}
