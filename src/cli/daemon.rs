//! `agt daemon run | start | stop | status` (DESIGN.md §3).
//!
//! `run` is the daemon itself, in the foreground. `start` runs the same executable as
//! `agt --home H daemon run --detached` in a new session, detached from the terminal, with
//! its stdout and stderr appended to `$AGT_HOME/logs/daemon.out` (where `--detached` has it
//! print only warnings and errors: `daemon::logging::Stderr`; a file of 8 MiB or more is
//! first renamed `daemon.out.1`, as the running daemon does too: `log_files::StderrFile`), and returns once
//! `agtd.json` names that process and `GET /ready` answers 200 on its socket. `stop`
//! sends SIGTERM to the home's daemon and waits for the process to end; with no
//! daemon running it says so and exits 0, so scripts can call it unconditionally.
//!
//! Whether the home's daemon runs, and which process it is, is decided by the home's
//! own lock ([`running_daemon`]), never by `agtd.pid` or `agtd.json` alone: a stale,
//! reused or copied pid must not be signalled, nor a copied `agtd.json` followed.

use super::output::{duration, field};
use super::{CliError, CliResult, Ctx};
use crate::api::quote::{bare, quoted};
use crate::api::DaemonInfo;
use crate::client::{read_info, BlockingClient, Client, ClientError, Endpoint};
use crate::daemon::lock::{self, Holder};
use crate::daemon::log_files;
use crate::daemon::{Home, RunOptions};
use clap::Subcommand;
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
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
        /// Seconds to wait for the daemon to become ready (1 to 86400)
        #[arg(long, value_name = "SECS", default_value_t = 30, allow_negative_numbers = true, value_parser = wait_seconds)]
        timeout: u64,
    },
    /// Stop the daemon gracefully (SIGTERM) and wait for it to exit
    Stop {
        /// Seconds to wait for the daemon to exit (1 to 86400)
        #[arg(long, value_name = "SECS", default_value_t = 30, allow_negative_numbers = true, value_parser = wait_seconds)]
        timeout: u64,
    },
    /// Whether the daemon runs: pid, socket, HTTP address, version, uptime (exit 3 if not)
    Status,
}

/// The most `--timeout` waits: a day.
const WAIT_MAX_S: u64 = 86_400;

/// `--timeout` of `daemon start` and `stop`: whole seconds from 1 to [`WAIT_MAX_S`]. 0
/// could only fail (no daemon is ready, or gone, the instant it is started or signalled),
/// and a count past the clock's range made the deadline overflow.
fn wait_seconds(raw: &str) -> Result<u64, String> {
    let t = raw.trim();
    match t.parse::<u64>() {
        Ok(0) => Err("0 would give up at once: wait at least 1 second".into()),
        Ok(n) if n <= WAIT_MAX_S => Ok(n),
        Ok(_) => Err(format!("{} is too long: {WAIT_MAX_S} (a day) is the most it waits", bare(t))),
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{} is too long: {WAIT_MAX_S} (a day) is the most it waits", bare(t)))
        }
        Err(_) => Err(format!("{} is not a whole number of seconds (1 to {WAIT_MAX_S})", quoted(t))),
    }
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
    home.check_socket_path().map_err(CliError::Usage)?;
    match running_daemon(home)? {
        Running::No => {}
        Running::Daemon(pid) => {
            return Err(CliError::failed(
                "already_running",
                format!("a daemon already runs for {} (pid {pid}); `agt daemon stop` stops it", home.root().display()),
            ))
        }
        Running::Unknown => {
            return Err(CliError::failed(
                "already_running",
                format!("a daemon already runs for {} (it holds {})", home.root().display(), home.lock_file().display()),
            ))
        }
        other @ Running::Other(..) => {
            return Err(CliError::failed("lock_held", other.held_by_another(home, "no daemon can start on this home until it ends")))
        }
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
    log_files::set_aside_if_full(&log_path, log_files::DAEMON_OUT_LIMIT).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let mut probe: Option<BlockingClient> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(anyhow::Error::from)? {
            let tail = log_tail(&log_path, log_start, 20);
            // Another `agt daemon start` on this home won the race for its lock (it may
            // not have written its pid yet).
            if tail.contains("is already running on") {
                let other = match running_daemon(home) {
                    Ok(Running::Daemon(p)) => format!(" (pid {p})"),
                    _ => String::new(),
                };
                return Err(CliError::failed(
                    "already_running",
                    format!("a daemon already runs for {}{other}; `agt daemon stop` stops it", home.root().display()),
                ));
            }
            // The daemon says so itself when its disk is full, but its words go to
            // daemon.out, on that disk: they may be lost (a bare exit status and an
            // empty log), so the disk is asked here too.
            let data = home.data_dir();
            if crate::services::disk_full::no_room(&data) {
                let why = format!("it exited while starting, {status}");
                return Err(CliError::failed(
                    "daemon_exited",
                    format!("{}. The end of {}:\n{tail}", crate::services::disk_full::cannot_start(&data, &why), log_path.display()),
                ));
            }
            return Err(CliError::failed(
                "daemon_exited",
                format!("the daemon exited while starting ({status}). The end of {}:\n{tail}", log_path.display()),
            ));
        }
        if let Some(info) = read_info(home).filter(|i| i.pid == pid) {
            if probe.is_none() {
                probe = Some(quick_client(Endpoint::for_home(home))?);
            }
            let client = probe.as_ref().expect("set above");
            if client.get("/ready").is_ok() {
                let doc = serde_json::to_value(&info).unwrap_or(Value::Null);
                return ctx.show(&doc, |_| {
                    format!(
                        "agt daemon started (pid {pid})\nsocket: {}\nhttp:   {}\nlogs:   {}",
                        home.socket().display(),
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
                    "the daemon (pid {pid}) is not ready after {} s; it keeps running{}. See {} and `agt daemon status`",
                    timeout.as_secs(),
                    // Its services retry a full disk until there is room: say which disk.
                    if crate::services::disk_full::no_room(&home.data_dir()) {
                        format!(" and waits for room: the disk holding {} is full, free space there", home.data_dir().display())
                    } else {
                        String::new()
                    },
                    log_path.display()
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn stop(ctx: &Ctx, timeout: Duration) -> CliResult {
    let home = &ctx.home;
    let pid = match running_daemon(home)? {
        Running::Daemon(pid) => pid,
        Running::No => {
            let doc = json!({ "running": false, "stopped": false });
            return ctx.show(&doc, |_| format!("agt daemon is not running (home {})", home.root().display()));
        }
        Running::Unknown => {
            return Err(CliError::failed(
                "lock_held",
                format!(
                    "a process holds {} but the system does not say which (no /proc/locks) and agtd.pid names no live agt daemon; \
                     find it with `fuser {}` and end it yourself",
                    home.lock_file().display(),
                    home.lock_file().display()
                ),
            ))
        }
        other @ Running::Other(..) => {
            let why = other.held_by_another(home, "agt daemon stop signals only this home's daemon; end that process yourself");
            return Err(CliError::failed("lock_held", why));
        }
    };
    let was_stopped = process_state(pid) == Some('T');
    // SAFETY: kill has no memory effects; pid holds this home's lock (checked above).
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(anyhow::anyhow!("cannot signal the daemon (pid {pid}): {err}").into());
        }
    }
    // Then SIGCONT, as systemd does: a daemon stopped with SIGSTOP (or Ctrl-Z) would hold
    // the SIGTERM pending and never act on it; woken, it shuts down cleanly. To a running
    // daemon it is nothing.
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    if was_stopped && !ctx.quiet() {
        eprintln!("note: the daemon (pid {pid}) was stopped (SIGSTOP); it was sent SIGCONT so that it can shut down");
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

/// When this home's daemon `pid` took its stop signal, if it has (`agtd.json`).
pub(super) fn stopping_since(home: &Home, pid: u32) -> Option<String> {
    read_info(home).filter(|i| i.pid == pid).and_then(|i| i.stopping_since)
}

/// What a client is told while the daemon `pid` is stopping.
pub(super) fn stopping_message(pid: u32, since: &str) -> String {
    format!(
        "agt daemon (pid {pid}) is stopping (since {since}): it answers the requests it has, then exits; \
         start it again once it has (`agt daemon stop` waits for that)"
    )
}

fn status(ctx: &Ctx) -> CliResult {
    let endpoint = ctx.endpoint()?;
    // Another daemon than this home's (--url, or a --socket elsewhere): all there is to
    // ask is its health.
    let own = endpoint == Endpoint::for_home(&ctx.home);
    let not_running = |msg: String| {
        if ctx.json() && !ctx.quiet() {
            println!("{}", json!({ "running": false }));
        }
        CliError::NotRunning(msg)
    };
    let running = if own { running_daemon(&ctx.home)? } else { Running::Unknown };
    let pid = match running {
        Running::No => {
            return Err(not_running(format!("agt daemon is not running (home {}: no daemon holds its lock)", ctx.home.root().display())))
        }
        Running::Other(..) => {
            if ctx.json() && !ctx.quiet() {
                println!("{}", json!({ "running": false, "lock_held_by": running.pid() }));
            }
            return Err(CliError::NotAnswering(running.held_by_another(&ctx.home, "no daemon can start on this home until it ends")));
        }
        Running::Daemon(pid) => Some(pid),
        Running::Unknown => None,
    };
    // A daemon that took its stop signal closes its listeners first: unreachable then is
    // its stop, not a fault to restart it for.
    let stopping = pid.filter(|_| own).and_then(|pid| Some((pid, stopping_since(&ctx.home, pid)?)));
    let unanswered = |problem: &str, message: String| {
        let (problem, message) = match &stopping {
            Some((pid, since)) => ("stopping", stopping_message(*pid, since)),
            None => (problem, message),
        };
        if ctx.json() && !ctx.quiet() {
            println!(
                "{}",
                json!({ "running": true, "reachable": false, "pid": pid, "problem": problem, "endpoint": endpoint.to_string() })
            );
        }
        CliError::NotAnswering(message)
    };
    if let (true, Some(pid), Endpoint::Unix(sock)) = (own, pid, &endpoint) {
        if !crate::client::socket_exists(sock) {
            return Err(unanswered(
                "socket_missing",
                format!(
                    "agt daemon runs (pid {pid}) but its socket {} is missing, so no command can reach it; \
                     restart it: `agt daemon stop`, then `agt daemon start`",
                    sock.display()
                ),
            ));
        }
    }
    let health = match probe_health(ctx) {
        Ok(h) => h,
        Err(CliError::Client(ClientError::Unreachable { reason, .. })) if own && pid.is_some() => {
            let pid = pid.expect("checked");
            return Err(unanswered(
                "unreachable",
                format!(
                    "agt daemon runs (pid {pid}) but nothing answers on its socket {endpoint} ({reason}); \
                     restart it: `agt daemon stop`, then `agt daemon start`"
                ),
            ));
        }
        Err(CliError::Client(ClientError::Unreachable { .. })) if pid.is_none() => {
            return Err(not_running(format!("agt daemon is not running (nothing answers at {endpoint})")));
        }
        Err(e @ CliError::NotAnswering(_)) => return Err(unanswered("no_answer", e.to_string())),
        Err(e) => return Err(e),
    };
    // agtd.json describes the local daemon, when it is the one holding the lock; a
    // remote one (--url) has only its health.
    let info: Option<DaemonInfo> = match endpoint {
        Endpoint::Unix(_) if own => read_info(&ctx.home).filter(|i| pid == Some(i.pid)),
        _ => None,
    };
    let mut doc = json!({
        "running": true,
        "status": health.get("status"),
        "version": health.get("version"),
        "build": health.get("build"),
        "cli_build": crate::daemon::BUILD,
        "uptime_s": health.get("uptime_s"),
        "endpoint": endpoint.to_string(),
    });
    if let Some(pid) = pid {
        doc["pid"] = json!(pid);
        doc["socket"] = json!(ctx.home.socket().display().to_string());
    }
    if let Some(i) = &info {
        doc["pid"] = json!(i.pid);
        doc["socket"] = json!(ctx.home.socket().display().to_string());
        doc["http"] = json!(i.http);
        doc["started_at"] = json!(i.started_at);
        if doc["version"].is_null() {
            doc["version"] = json!(i.version);
        }
        if doc["build"].is_null() {
            doc["build"] = json!(i.build);
        }
    }
    let local = doc.get("pid").is_some();
    ctx.show(&doc, |d| {
        let uptime = d["uptime_s"].as_u64().map(duration).unwrap_or_else(|| "-".into());
        let mut lines = vec![format!("agt daemon is running ({})", field(d, "status"))];
        if local {
            lines.push(format!("pid:     {}", field(d, "pid")));
            lines.push(format!("socket:  {}", field(d, "socket")));
            lines.push(format!("http:    {}", d["http"].as_str().unwrap_or("off")));
        } else {
            lines.push(format!("url:     {}", field(d, "endpoint")));
        }
        lines.push(format!("version: {}", version_and_build(d)));
        if let Some(note) = other_build(d["build"].as_str(), crate::daemon::BUILD) {
            lines.push(format!("note:    {note}"));
        }
        lines.push(format!("uptime:  {uptime}"));
        lines.join("\n")
    })
}

/// `0.1.0 (8ace95c)`: a daemon's version and the commit it was built from, or the
/// version alone from an agt that does not say its build.
pub fn version_and_build(d: &Value) -> String {
    match d["build"].as_str().filter(|b| !b.is_empty()) {
        Some(build) => format!("{} ({build})", field(d, "version")),
        None => field(d, "version"),
    }
}

/// What `agt daemon status` says when the daemon runs another build than this agt: an
/// operator who replaced the binary and forgot the restart. Nothing when either build
/// is not known.
fn other_build(daemon: Option<&str>, cli: &str) -> Option<String> {
    let known = |b: &&str| !b.is_empty() && *b != "unknown";
    let daemon = daemon.filter(known)?;
    (known(&cli) && daemon != cli)
        .then(|| format!("this agt is build {cli}, the daemon runs {daemon}: to run this one, `agt daemon stop`, then `agt daemon start`"))
}

/// How long `agt daemon status` and `agt health` wait for `GET /health`: a daemon that
/// is stopped (SIGSTOP) or hung would otherwise hold them for the whole request timeout
/// (60 s), and a healthy one answers in milliseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /health` within [`PROBE_TIMEOUT`]. A daemon that takes longer is
/// [`CliError::NotAnswering`] (exit 3), named by its pid when it is this home's.
pub fn probe_health(ctx: &Ctx) -> Result<Value, CliError> {
    let endpoint = ctx.endpoint()?;
    let client = BlockingClient::new(Client::new(endpoint.clone()).with_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| anyhow::anyhow!("cannot start the I/O runtime: {e}"))?;
    let asked = Instant::now();
    match client.get("/health") {
        Err(ClientError::Unreachable { .. }) if asked.elapsed() >= PROBE_TIMEOUT => {
            let secs = PROBE_TIMEOUT.as_secs();
            let own = endpoint == Endpoint::for_home(&ctx.home);
            Err(CliError::NotAnswering(match running_daemon(&ctx.home) {
                Ok(Running::Daemon(pid)) if own => {
                    let why = if process_state(pid) == Some('T') {
                        format!("it is stopped (SIGSTOP or Ctrl-Z): `kill -CONT {pid}` resumes it")
                    } else {
                        format!(
                            "it may be overloaded or hung: see {}; if it stays so, `agt daemon stop` (then `kill -9 {pid}` \
                             if it does not end) and `agt daemon start`",
                            ctx.home.logs_dir().display()
                        )
                    };
                    format!("agt daemon (pid {pid}) does not answer on {endpoint} within {secs} s; {why}")
                }
                _ => format!("the agt daemon at {endpoint} does not answer within {secs} s: it may be stopped, overloaded or hung"),
            }))
        }
        other => Ok(other?),
    }
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

/// What the lock of a home says about its daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// No process holds the home's lock: no daemon runs for it, whatever `agtd.pid`,
    /// `agtd.json` or the socket say (stale, reused or copied from another home).
    No,
    /// The home's daemon: the process holding its lock.
    Daemon(u32),
    /// A process holds the lock that is not an agt daemon (its pid and command line).
    Other(u32, String),
    /// The lock is held, and neither the kernel nor a live daemon's pid file says by whom.
    Unknown,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::Daemon(p) | Running::Other(p, _) => Some(*p),
            Running::No | Running::Unknown => None,
        }
    }

    /// What to say of a lock held by a process that is not an agt daemon.
    fn held_by_another(&self, home: &Home, consequence: &str) -> String {
        let (pid, cmd) = match self {
            Running::Other(p, c) => (*p, c.as_str()),
            _ => (0, ""),
        };
        format!("{} is held by pid {pid} ({cmd}), which is not an agt daemon; {consequence}", home.lock_file().display())
    }
}

/// Whether the daemon of `home` runs, and its pid: the process holding the home's
/// `agtd.lock` (`daemon::lock::holder`). A holder that is not the pid the home's files
/// record nor a process with an argv word `daemon` is [`Running::Other`]. Where the
/// kernel does not name the holder, the recorded pid stands if it is a live agt daemon.
pub fn running_daemon(home: &Home) -> Result<Running, CliError> {
    let recorded =
        read_info(home).map(|i| i.pid).or_else(|| std::fs::read_to_string(home.pid_file()).ok().and_then(|s| s.trim().parse().ok()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = lock::holder(home).map_err(|e| anyhow::anyhow!("cannot read the lock {}: {e}", home.lock_file().display()))?;
        let running = match held {
            Holder::Nobody => Running::No,
            Holder::Pid(pid) if recorded == Some(pid) || is_daemon(pid) => Running::Daemon(pid),
            Holder::Pid(pid) => Running::Other(pid, command_line(pid)),
            Holder::Unknown => match recorded.filter(|&p| p > 1 && process_alive(p) && is_daemon(p)) {
                Some(pid) => Running::Daemon(pid),
                None => Running::Unknown,
            },
        };
        // Killed (`kill -9` just before `agt daemon start`), still tearing down its
        // threads and files: it will never serve again. Wait for it to let go of the
        // lock, so that the next daemon can take it. While it does, the kernel's list of
        // locks may no longer name it (`Unknown`) and its main thread may already be a
        // zombie, whose command line reads empty: the pid it recorded says it is going.
        let going = |pid: u32| dying(pid) || is_zombie(pid);
        let waiting = match running {
            Running::Daemon(pid) => dying(pid),
            Running::Unknown => recorded.is_some_and(going),
            _ => false,
        };
        if !waiting || Instant::now() >= deadline {
            return Ok(running);
        }
        std::thread::sleep(POLL);
    }
}

/// `agtd.json`, when the daemon it describes is the one holding the home's lock: a
/// stale one, or one copied from another home, names another daemon's address.
pub fn running_info(home: &Home) -> Option<DaemonInfo> {
    let info = read_info(home)?;
    match running_daemon(home) {
        Ok(Running::Daemon(pid)) if pid == info.pid => Some(info),
        _ => None,
    }
}

/// Whether `pid`'s command line has the word `daemon` (`agt daemon run`). Without /proc
/// nothing more can be known: it counts as one.
fn is_daemon(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|&b| b == 0).any(|arg| arg == b"daemon"),
        Err(_) => true,
    }
}

/// `pid`'s command line, its words joined by spaces, for a message.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw.split(|&b| b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    if words.is_empty() {
        "command unknown".into()
    } else {
        words.join(" ")
    }
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T` stopped, …).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).and_then(|s| s.chars().next())
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

    /// After the binary was replaced, the daemon still runs the old build until restarted:
    /// `agt daemon status` says so, and only when both builds are known and differ.
    #[test]
    fn a_daemon_of_another_build_is_named_with_the_way_to_run_this_one() {
        let note = other_build(Some("2235370"), "8ace95c").unwrap();
        assert!(note.contains("this agt is build 8ace95c, the daemon runs 2235370"), "{note}");
        assert!(note.contains("`agt daemon stop`, then `agt daemon start`"), "{note}");
        assert_eq!(other_build(Some("8ace95c"), "8ace95c"), None, "the same build");
        assert_eq!(other_build(None, "8ace95c"), None, "an agt that does not say its build");
        assert_eq!(other_build(Some(""), "8ace95c"), None);
        assert_eq!(other_build(Some("unknown"), "8ace95c"), None, "built outside git");
        assert_eq!(other_build(Some("2235370"), "unknown"), None, "this agt built outside git");

        assert_eq!(version_and_build(&json!({"version": "0.1.0", "build": "8ace95c"})), "0.1.0 (8ace95c)");
        assert_eq!(version_and_build(&json!({"version": "0.1.0"})), "0.1.0", "an older daemon");
        assert_eq!(version_and_build(&json!({"version": "0.1.0", "build": ""})), "0.1.0");
    }
}
