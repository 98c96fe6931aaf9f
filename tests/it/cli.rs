//! The CLI against a daemon, as a script would use it: lists that say when they were cut,
//! one JSON document per finite list, closed pipes, and arguments refused before asking.

use crate::util::{Daemon, BIN};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// `agt ARGS` with its stdout a pipe whose reader has already gone, as in `agt … | head -1`
/// once `head` has what it wants: its exit status and its stderr.
fn into_a_closed_pipe(home: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("AGT_URL")
        .env_remove("AGT_TOKEN")
        .env_remove("AGT_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).to_string())
}

/// `agt daemon status | head -1` and `agt daemon stop` into a closed pipe end quietly, like
/// every other command (SIGPIPE), instead of panicking with exit 101; only `daemon run`,
/// the daemon itself, ignores SIGPIPE.
#[test]
fn cli_daemon_commands_into_a_closed_pipe_end_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = Daemon::start();
    for args in [&["daemon", "status"][..], &["health"], &["-o", "json", "daemon", "status"]] {
        let (status, stderr) = into_a_closed_pipe(d.path(), args);
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{args:?}: {status:?} {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let idle = tempfile::tempdir().unwrap();
    let (status, stderr) = into_a_closed_pipe(idle.path(), &["daemon", "stop"]);
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "daemon stop with nothing to stop: {status:?} {stderr}");
}
