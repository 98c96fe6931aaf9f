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

pub fn acquire(home: &Home) -> anyhow::Result<HomeLock> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(home.lock_file())?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
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
