//! One daemon per `AGT_HOME`: an exclusive `flock` on `agtd.lock`, held for the daemon's
//! whole life. The kernel drops it when the process dies, even by SIGKILL, so a crashed
//! daemon never blocks the next one; the files it left (socket, pid, agtd.json) are then
//! known to be stale and are cleaned up.

use crate::daemon::Home;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;

pub struct HomeLock {
    _file: File,
}

/// How long a start waits for the lock of a daemon that is dying (killed, its threads
/// still exiting): a start right after a SIGKILL found the lock still held now and then.
const DYING_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub fn acquire(home: &Home) -> anyhow::Result<HomeLock> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(home.lock_file())?;
    let waited_since = std::time::Instant::now();
    let locked = loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 || !holder_is_dying(home) || waited_since.elapsed() >= DYING_WAIT {
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

/// Removes a socket left by a daemon that died, after checking nobody answers on it.
pub fn clear_stale_socket(home: &Home) -> anyhow::Result<()> {
    let path = home.socket();
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!("something is listening on {} although no daemon holds the home's lock; stop it first", path.display());
    }
    std::fs::remove_file(&path)?;
    tracing::info!(socket = %path.display(), "removed a stale socket left by a previous daemon");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
