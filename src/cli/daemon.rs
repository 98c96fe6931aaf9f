//! `agt daemon run | start | stop | status` (DESIGN.md §3).
//!
//! `run` is the daemon itself, in the foreground. `start` runs the same executable as
//! `agt --home H daemon run --detached` in a new session, detached from the terminal, with
//! its stdout and stderr appended to `$AGT_HOME/logs/daemon.out` (where `--detached` has it
//! print only warnings and errors: `daemon::logging::Stderr`; a file of 8 MiB or more is
//! first renamed `daemon.out.1`), and returns once
//! `agtd.json` names that process and `GET /ready` answers 200 on its socket. `stop`
//! sends SIGTERM to the pid in `agtd.json` and waits for the process to end; with no
//! daemon running it says so and exits 0, so scripts can call it unconditionally.

use super::output::{duration, field};
use super::{CliError, CliResult, Ctx};
use crate::client::{read_info, BlockingClient, Client, ClientError, Endpoint};
use crate::daemon::{Home, RunOptions};
use clap::Subcommand;
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum DaemonCmd {
    /// Run the daemon in the foreground until SIGINT, SIGTERM or `agt daemon stop`
    Run {
        /// TCP listen address, e.g. 127.0.0.1:8000 (port 0 picks one; "" turns TCP off)
        /// [default: config http.listen, or AGT_HTTP_ADDR]
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Set by `agt daemon start`: stderr goes to logs/daemon.out and carries only
        /// warnings and errors, as the daily log files hold every line
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Start the daemon in the background and wait until it is ready
    Start {
        /// TCP listen address, as for `daemon run`
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Seconds to wait for the daemon to become ready
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// Stop the daemon gracefully (SIGTERM) and wait for it to exit
    Stop {
        /// Seconds to wait for the daemon to exit
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// Whether the daemon runs: pid, socket, HTTP address, version, uptime (exit 3 if not)
    Status,
}

pub fn run(ctx: &Ctx, cmd: DaemonCmd) -> CliResult {
    // start and stop act on this machine's daemon, by its home and pid; a --url (or
    // AGT_URL) naming another daemon would otherwise be ignored, and `stop` would say
    // "not running" of a daemon that goes on running there.
    let remote = ctx.global.url.as_deref().filter(|u| !u.is_empty());
    if let (Some(url), DaemonCmd::Start { .. } | DaemonCmd::Stop { .. }) = (remote, &cmd) {
        let verb = if matches!(cmd, DaemonCmd::Start { .. }) { "start" } else { "stop" };
        return Err(CliError::Usage(format!(
            "agt daemon {verb} acts on the daemon of this machine's home ({}), not on --url/AGT_URL {url}: \
             run it on that machine, or leave out --url (unset AGT_URL)",
            ctx.home.root().display()
        )));
    }
    match cmd {
        DaemonCmd::Run { http, detached } => {
            crate::daemon::run(RunOptions { home: ctx.home.clone(), http, detached })?;
            Ok(())
        }
        DaemonCmd::Start { http, timeout } => start(ctx, http, Duration::from_secs(timeout)),
        DaemonCmd::Stop { timeout } => stop(ctx, Duration::from_secs(timeout)),
        DaemonCmd::Status => status(ctx),
    }
}

/// How often `start` and `stop` look again: a look is a `kill(pid, 0)` or a `GET /ready`
/// on the socket, and a daemon is ready ~15–25 ms after it is started, so at 50 ms each
/// command waited about twice as long as the daemon took.
const POLL: Duration = Duration::from_millis(5);

fn start(ctx: &Ctx, http: Option<String>, timeout: Duration) -> CliResult {
    let home = &ctx.home;
    if let Some(pid) = running_daemon(home) {
        return Err(CliError::failed(
            "already_running",
            format!("a daemon already runs for {} (pid {pid}); `agt daemon stop` stops it", home.root().display()),
        ));
    }
    if answers(&Endpoint::for_home(home)) {
        return Err(CliError::failed("already_running", format!("a daemon already answers on {}", Endpoint::for_home(home))));
    }
    let log_path = home.logs_dir().join("daemon.out");
    // The daemon's own files are private (it runs under umask 077); so is what it prints.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home.logs_dir())
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", home.logs_dir().display()))?;
    set_aside_if_full(&log_path, DAEMON_OUT_LIMIT)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the agt executable: {e}"))?;

    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home.root()).arg("daemon").arg("run").arg("--detached");
    if let Some(h) = &http {
        cmd.arg("--http").arg(h);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(anyhow::Error::from)?)
        .stderr(log)
        // The daemon's own flags come from --home and the config, not from a client's
        // environment.
        .env_remove("AGT_SOCKET")
        .env_remove("AGT_URL")
        .env_remove("AGT_TOKEN")
        .env_remove("AGT_OUTPUT");
    // A new session: no controlling terminal, and the terminal's Ctrl-C or hang-up
    // never reaches the daemon.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start the daemon: {e}"))?;
    let pid = child.id();

    let deadline = Instant::now() + timeout;
    let mut probe: Option<(PathBuf, BlockingClient)> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(anyhow::Error::from)? {
            let tail = log_tail(&log_path, log_start, 20);
            // Another `agt daemon start` on this home won the race for its lock (it may
            // not have written its pid yet).
            if tail.contains("is already running on") {
                let other = running_daemon(home).map(|p| format!(" (pid {p})")).unwrap_or_default();
                return Err(CliError::failed(
                    "already_running",
                    format!("a daemon already runs for {}{other}; `agt daemon stop` stops it", home.root().display()),
                ));
            }
            return Err(CliError::failed(
                "daemon_exited",
                format!("the daemon exited while starting ({status}). The end of {}:\n{tail}", log_path.display()),
            ));
        }
        if let Some(info) = read_info(home).filter(|i| i.pid == pid) {
            let sock = PathBuf::from(&info.socket);
            if probe.as_ref().map(|(p, _)| p != &sock).unwrap_or(true) {
                probe = Some((sock.clone(), quick_client(Endpoint::Unix(sock))?));
            }
            let (_, client) = probe.as_ref().expect("set above");
            if client.get("/ready").is_ok() {
                let doc = serde_json::to_value(&info).unwrap_or(Value::Null);
                return ctx.show(&doc, |_| {
                    format!(
                        "agt daemon started (pid {pid})\nsocket: {}\nhttp:   {}\nlogs:   {}",
                        info.socket,
                        info.http.as_deref().unwrap_or("off"),
                        home.logs_dir().display()
                    )
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(CliError::failed(
                "start_timeout",
                format!(
                    "the daemon (pid {pid}) is not ready after {} s; it keeps running. See {} and `agt daemon status`",
                    timeout.as_secs(),
                    log_path.display()
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// How big `logs/daemon.out` may grow before a start sets it aside. The daemon prints
/// little there (warnings and errors), so this takes many starts, or a daemon in
/// trouble for a long time; its tail is what `start` shows when the daemon exits.
const DAEMON_OUT_LIMIT: u64 = 8 * 1024 * 1024;

/// Renames `path` to `path.1` (replacing the one before) when it holds `limit` bytes or
/// more, so a start appends to a fresh file and the two together stay near twice the
/// limit. Only a start rotates: a daemon that prints warnings for months between starts
/// grows it past the limit until the next one.
fn set_aside_if_full(path: &Path, limit: u64) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if meta.len() < limit {
        return Ok(());
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".1");
    match std::fs::rename(path, &aside) {
        Ok(()) => Ok(()),
        // A start racing this one set it aside first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot set {} aside as {}: {e}", path.display(), Path::new(&aside).display())),
    }
}

fn stop(ctx: &Ctx, timeout: Duration) -> CliResult {
    let home = &ctx.home;
    let Some(pid) = running_daemon(home) else {
        let doc = json!({ "running": false, "stopped": false });
        return ctx.show(&doc, |_| format!("agt daemon is not running (home {})", home.root().display()));
    };
    // SAFETY: kill has no memory effects; pid names a live agt daemon (checked above).
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(anyhow::anyhow!("cannot signal the daemon (pid {pid}): {err}").into());
        }
    }
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return Err(CliError::failed(
                "stop_timeout",
                format!("the daemon (pid {pid}) is still running {} s after SIGTERM; see {}", timeout.as_secs(), home.logs_dir().display()),
            ));
        }
        std::thread::sleep(POLL);
    }
    ctx.show(&json!({ "running": false, "stopped": true, "pid": pid }), |_| format!("agt daemon stopped (pid {pid})"))
}

fn status(ctx: &Ctx) -> CliResult {
    let endpoint = ctx.endpoint()?;
    let health = match ctx.get("/health") {
        Ok(h) => h,
        Err(CliError::Client(ClientError::Unreachable { .. })) => {
            if ctx.json() && !ctx.quiet() {
                println!("{}", json!({ "running": false }));
            }
            return Err(CliError::NotRunning(format!("agt daemon is not running (nothing answers at {endpoint})")));
        }
        Err(e) => return Err(e),
    };
    // agtd.json describes the local daemon; a remote one (--url) has only its health.
    let info = match endpoint {
        Endpoint::Unix(_) => read_info(&ctx.home),
        Endpoint::Tcp { .. } => None,
    };
    let mut doc = json!({
        "running": true,
        "status": health.get("status"),
        "version": health.get("version"),
        "uptime_s": health.get("uptime_s"),
        "endpoint": endpoint.to_string(),
    });
    if let Some(i) = &info {
        doc["pid"] = json!(i.pid);
        doc["socket"] = json!(i.socket);
        doc["http"] = json!(i.http);
        doc["started_at"] = json!(i.started_at);
        if doc["version"].is_null() {
            doc["version"] = json!(i.version);
        }
    }
    ctx.show(&doc, |d| {
        let uptime = d["uptime_s"].as_u64().map(duration).unwrap_or_else(|| "-".into());
        let mut lines = vec![format!("agt daemon is running ({})", field(d, "status"))];
        if info.is_some() {
            lines.push(format!("pid:     {}", field(d, "pid")));
            lines.push(format!("socket:  {}", field(d, "socket")));
            lines.push(format!("http:    {}", d["http"].as_str().unwrap_or("off")));
        } else {
            lines.push(format!("url:     {}", field(d, "endpoint")));
        }
        lines.push(format!("version: {}", field(d, "version")));
        lines.push(format!("uptime:  {uptime}"));
        lines.join("\n")
    })
}

/// A client for probing: short timeouts, its own runtime.
fn quick_client(endpoint: Endpoint) -> Result<BlockingClient, CliError> {
    BlockingClient::new(Client::new(endpoint).with_timeout(Some(Duration::from_secs(2))))
        .map_err(|e| anyhow::anyhow!("cannot start the I/O runtime: {e}").into())
}

/// True when a daemon answers `GET /health` there.
fn answers(endpoint: &Endpoint) -> bool {
    if let Endpoint::Unix(p) = endpoint {
        if !crate::client::socket_exists(p) {
            return false;
        }
    }
    quick_client(endpoint.clone()).map(|c| c.get("/health").is_ok()).unwrap_or(false)
}

/// The pid of the daemon running for `home`, if one does: the pid `agtd.json` (or
/// `agtd.pid`) records, when that process is alive and is an agt daemon rather than an
/// unrelated process that inherited a stale pid.
pub fn running_daemon(home: &Home) -> Option<u32> {
    let pid =
        read_info(home).map(|i| i.pid).or_else(|| std::fs::read_to_string(home.pid_file()).ok().and_then(|s| s.trim().parse().ok()))?;
    if pid <= 1 || !process_alive(pid) {
        return None;
    }
    if dying(pid) {
        // Killed (`kill -9` just before `agt daemon start`), still tearing down its
        // threads and files: it will never serve again. Wait for it to be gone, so that
        // its lock and socket are free for the next daemon.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if !process_alive(pid) {
            return None;
        }
    }
    let is_daemon = match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|&b| b == 0).any(|arg| arg == b"daemon"),
        // No /proc here: the pid being alive is all we can know.
        Err(_) => true,
    };
    (is_daemon || answers(&Endpoint::for_home(home))).then_some(pid)
}

/// Whether `pid` is a live process. A zombie (exited, not yet reaped by its parent)
/// counts as gone: it will never serve again.
fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Whether `pid` is on its way out: exiting (`PF_EXITING` in its flags) or with a
/// SIGKILL pending that it has not acted on yet.
fn dying(pid: u32) -> bool {
    let read = |what: &str| std::fs::read_to_string(format!("/proc/{pid}/{what}")).unwrap_or_default();
    dying_by(&read("stat"), &read("status"))
}

/// [`dying`] from the texts of `/proc/PID/stat` and `/proc/PID/status`.
fn dying_by(stat: &str, status: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    // `pid (comm) state ppid pgrp session tty tpgid flags …`
    let fields: Vec<&str> = stat.rfind(')').map(|i| stat[i + 1..].split_whitespace().collect()).unwrap_or_default();
    let exiting = fields.get(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|flags| flags & PF_EXITING != 0);
    let killed = status
        .lines()
        .filter_map(|l| l.strip_prefix("ShdPnd:").or_else(|| l.strip_prefix("SigPnd:")))
        .any(|mask| u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & SIGKILL_BIT != 0));
    exiting || killed
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S …`: the state follows the last `)` (comm may hold spaces or parens).
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|state| state == "Z" || state == "X")
}

/// The last `lines` lines written to `path` since byte `from`.
fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.trim().is_empty() {
        "(nothing)".to_string()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_out_is_set_aside_once_it_reaches_the_limit_and_replaces_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let (out, aside) = (dir.path().join("daemon.out"), dir.path().join("daemon.out.1"));
        set_aside_if_full(&out, 10).unwrap();
        assert!(!out.exists() && !aside.exists(), "nothing to set aside");
        std::fs::write(&aside, "the run before").unwrap();
        std::fs::write(&out, "123456789").unwrap();
        set_aside_if_full(&out, 10).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "123456789", "under the limit: kept to append to");
        std::fs::write(&out, "1234567890").unwrap();
        set_aside_if_full(&out, 10).unwrap();
        assert!(!out.exists());
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "1234567890", "at the limit: set aside, the older one replaced");
    }

    #[test]
    fn a_killed_or_exiting_process_is_dying_a_running_one_is_not() {
        let stat = |flags: u64| format!("4242 (agt daemon) S 1 4242 4242 0 -1 {flags} 120 0 0 0");
        let status = |shd: &str| format!("Name:\tagt\nSigPnd:\t0000000000000000\nShdPnd:\t{shd}\nSigBlk:\t0000000000000000\n");
        assert!(!dying_by(&stat(0x400040), &status("0000000000000000")));
        assert!(dying_by(&stat(0x400044), &status("0000000000000000")), "PF_EXITING");
        assert!(dying_by(&stat(0x400040), &status("0000000000000100")), "SIGKILL pending");
        assert!(!dying_by(&stat(0x400040), &status("0000000000004000")), "SIGTERM pending is not dying");
        assert!(!dying_by("", ""), "no /proc: not known to be dying");
        // The process's own state now: alive, not dying.
        assert!(!dying(std::process::id()));
    }
}
