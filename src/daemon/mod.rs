//! The daemon: boot, supervisor, HTTP server on the socket and TCP, routes and auth.
//!
//! [`run`] is `agt daemon run`: take the home's lock, load the config, open the bus and
//! start every service under the supervisor, bind the socket (0600) and TCP, write
//! `agtd.json`, then serve until SIGINT/SIGTERM and shut down in reverse.

pub mod app;
pub mod follower;
pub mod home;
pub mod http;
pub mod lock;
pub mod log_files;
mod logging;
mod malformed;
pub mod metrics;
mod refusals;
mod retention;
mod routes;
mod server;
pub mod supervisor;

pub use home::Home;

use crate::api::DaemonInfo;
use crate::services::actor::ServiceCtx;
use crate::services::config::settings::Settings;
use crate::services::config::SharedSettings;
use crate::services::disk_full::CannotStart;
use crate::services::{audit, auth, config, health, market, notify, users};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this agt was built from (`build.rs`), `unknown` outside a git checkout:
/// every build is `0.1.0` until a release, and an operator who replaced the binary must
/// be able to tell whether the daemon runs the new one.
pub const BUILD: &str = env!("AGT_COMMIT");
/// `agt --version`: `0.1.0 (8ace95c)`.
pub const VERSION_AND_BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("AGT_COMMIT"), ")");

/// What `agt daemon run` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub home: Home,
    /// `--http ADDR`: overrides `http.listen` (and `AGT_HTTP_ADDR`).
    pub http: Option<String>,
    /// `--detached`: launched by `agt daemon start`, with stderr in `logs/daemon.out`,
    /// which then gets only warnings and errors (`logging::Stderr`).
    pub detached: bool,
}

/// Raises the soft limit on open files to the hard one, as a server should (Go's runtime
/// does the same): a connection holds two descriptors (hyper's and `server::Peer`'s),
/// each store three or four, and a login shell's soft limit is often 1,024. Logged, and
/// left alone where it cannot be raised.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::info!(from = lim.rlim_cur, to = lim.rlim_max, "raised the open-file limit");
    } else {
        tracing::warn!(limit = lim.rlim_cur, "could not raise the open-file limit; each connection takes two descriptors");
    }
}

/// Runs the daemon in the foreground until SIGINT, SIGTERM or `agt daemon stop`.
///
/// A start that fails on a full disk says so, and names the disk: SQLite's own words
/// ("disk I/O error", "database or disk is full") named neither the disk nor the fix.
/// It is `data/`'s, but for the put-back of a cut-off `config set`, which writes beside
/// `agt.toml` and says so itself ([`CannotStart`]).
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let data = opts.home.data_dir();
    start_and_serve(opts).map_err(|e| {
        let error = format!("{e:#}");
        if e.is::<CannotStart>() || !crate::services::disk_full::is_full(&error, &data) {
            e
        } else {
            anyhow::Error::new(CannotStart { dir: data, error })
        }
    })
}

fn start_and_serve(opts: RunOptions) -> anyhow::Result<()> {
    let home = opts.home;
    // Before anything is created: bind() would refuse it only after start-up, in words
    // ("path must be shorter than SUN_LEN") that name neither the path nor the fix.
    home.check_socket_path().map_err(|e| anyhow::anyhow!(e))?;
    // Everything the daemon creates (stores and their -wal/-shm files, journals, logs,
    // agtd.json) is its owner's alone. Set once, before any thread exists: umask is
    // per process, and the socket's narrower umask below would otherwise race with
    // services creating their stores, leaving some files 0600 and others 0644.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    // The stores hold webhook signing keys, e-mail addresses, balances and orders: like
    // the socket, they are the owner's alone, whatever the umask made of the folder.
    std::fs::create_dir_all(home.data_dir())?;
    std::fs::set_permissions(home.data_dir(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| anyhow::anyhow!("cannot make {} private: {e}", home.data_dir().display()))?;
    let _lock = lock::acquire(&home)?;
    let env = |k: &str| std::env::var(k).ok();
    crate::services::config::settings::check_env_names(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // A `config set` a SIGKILL cut off before its record committed is undone before the
    // settings are read: its cold keys (`durability`, `http.listen`, `symbols`) would
    // otherwise be in force for this run, and its change recorded as the start's own.
    // The disk-full fault point (tests only) reaches the put-back of such a set: it is
    // armed before it, by the file as found. Once: a put-back of a cut-off set of
    // `debug.fault_injection` itself would not disarm it (no test makes one). The file
    // is read for it only when the fault point's variable is set, not at every start.
    if env("AGT_FAULT_DISK_FULL").is_some() && Settings::load(&home.config_file(), &env).is_ok_and(|s| s.debug.fault_injection) {
        crate::services::disk_full::arm_fault(true);
    }
    let agreed = crate::services::config::cut_off::agreed_in(&home.store("config"));
    let settled = crate::services::config::cut_off::settle(&home.config_file(), agreed.as_deref()).map_err(|e| {
        let error = format!("cannot settle a config set cut off in {}: {e}", home.config_file().display());
        if crate::services::disk_full::io_full(&e) {
            // Its writes are beside the file it puts back, whose disk may not be data/'s.
            let file = std::fs::canonicalize(home.config_file()).unwrap_or_else(|_| home.config_file());
            let dir = file.parent().unwrap_or(home.root()).to_path_buf();
            anyhow::Error::new(CannotStart { dir, error })
        } else {
            anyhow::anyhow!(error)
        }
    })?;
    let (mut settings, source) = Settings::load_with_source(&home.config_file(), &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let notify_tuning = crate::services::notify::Tuning::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    let windows = Windows {
        refusal: refusals::Refusals::window_from(&env).map_err(|e| anyhow::anyhow!("{e}"))?,
        sync_wait: app::sync_wait_from_vars(&env).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let body_deadline = server::BodyDeadline::from_vars(&env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut run_flags = Vec::new();
    if let Some(addr) = opts.http {
        let value = serde_json::Value::String(addr);
        settings.set("http.listen", &value).map_err(|e| anyhow::anyhow!("--http: {e}"))?;
        run_flags.push(("http.listen", value));
    }
    let origin = Origin { source, run_flags };
    // Before any thread starts (the log writer is the first): each inherits the class.
    crate::services::disk_full::arm_fault(settings.debug.fault_injection);
    crate::services::disk_full::watch(home.data_dir());
    let batch = settings.trading.sched_batch && crate::services::priority::batch_this_thread();
    let stderr = if opts.detached { logging::Stderr::WarningsOnly } else { logging::Stderr::AtLevel };
    let logging = logging::init(&home, &settings.log, stderr)?;
    if settings.trading.sched_batch && !batch {
        tracing::warn!("trading.sched_batch: the batch scheduling class was refused; the daemon's threads run in the normal one");
    }
    settled.say(&home.config_file());
    crate::services::config::warn_if_secrets_are_readable(&home.config_file(), &settings);
    raise_open_file_limit();
    lock::clear_stale_socket(&home)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("agtd").build()?;
    let result = runtime.block_on(serve(home.clone(), settings, origin, notify_tuning, windows, body_deadline, logging));
    runtime.shutdown_timeout(Duration::from_secs(5));
    for f in [home.socket(), home.pid_file(), home.info_file()] {
        let _ = std::fs::remove_file(f);
    }
    result
}

fn bind_socket(home: &Home) -> anyhow::Result<tokio::net::UnixListener> {
    let path = home.socket();
    // Created 0600 before it listens: bind() under a umask that grants nobody else anything.
    // SAFETY: umask only changes this process's file-creation mask; we restore it at once.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(&path);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(listener)?)
}

/// What the daemon's settings were made from: agt.toml as read (with the environment's
/// overrides), and the command line's settings over it for this run (`--http`), which the
/// config service keeps over every later read of the file.
struct Origin {
    source: crate::services::config::watch::Source,
    run_flags: Vec<(&'static str, serde_json::Value)>,
}

/// The daemon's windows a test may shorten (`AGT_REFUSAL_WINDOW_MS`, `AGT_SYNC_WAIT_MS`,
/// read at start): how long refusals are counted together, how long a read waits for the bus.
struct Windows {
    refusal: Duration,
    sync_wait: Duration,
}

async fn serve(
    home: Home,
    settings: Settings,
    origin: Origin,
    notify_tuning: crate::services::notify::Tuning,
    windows: Windows,
    body_deadline: server::BodyDeadline,
    logging: logging::Logging,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let durability = settings.durability;
    crate::services::priority::set_background_nice(settings.trading.background_nice as u32);
    let cores = crate::services::priority::confine_background(settings.trading.confine_background);
    if !cores.is_empty() {
        tracing::debug!(?cores, "the background threads run on these cores");
    }
    let bus = crate::services::bus::Bus::open(&home, durability)?;
    let shared = SharedSettings::new(settings.clone());
    // What the config service compares the file with: an edit made from here on is one.
    shared.made_from(origin.source);
    for (key, value) in origin.run_flags {
        shared.set_for_this_run(key, value);
    }
    logging.follow(&shared);
    let directory = crate::services::users::Directory::default();
    let tokens = auth::Tokens::default();
    let command_log = audit::CommandLog::default();
    let ctx = ServiceCtx {
        home: home.clone(),
        durability,
        bus: bus.clone(),
        settings: shared.clone(),
        directory: directory.clone(),
        tokens: tokens.clone(),
        command_log: command_log.clone(),
        notify_interest: Default::default(),
        notify_tuning,
        instruments: Default::default(),
    };
    let mut sup = supervisor::Supervisor::default();
    let config = sup.spawn::<config::service::Config>(ctx.clone());
    let health = sup.spawn::<health::Health>(ctx.clone());
    let audit = sup.spawn::<audit::Audit>(ctx.clone());
    let users = sup.spawn::<users::Users>(ctx.clone());
    let auth = sup.spawn::<auth::Auth>(ctx.clone());
    let market = sup.spawn::<market::Market>(ctx.clone());
    let lane = sup.spawn_lane(ctx.clone());
    let notify = sup.spawn::<crate::services::notify::Notify>(ctx.clone());
    let supervisor = Arc::new(sup);
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let app = Arc::new(app::App {
        home: home.clone(),
        version: VERSION,
        started,
        started_at: crate::api::now_rfc3339(),
        started_with: settings.clone(),
        bus: bus.clone(),
        settings: shared.clone(),
        supervisor: supervisor.clone(),
        config,
        health,
        audit,
        users,
        auth,
        risk: lane.risk,
        market,
        trading: lane.trading,
        orders: lane.orders,
        placements: lane.placements,
        notify,
        instruments: ctx.instruments.clone(),
        directory,
        tokens,
        command_log,
        refused_commands: refusals::Refusals::new(windows.refusal),
        refused_requests: refusals::Refusals::new(windows.refusal),
        recovered: Default::default(),
        feeds: Default::default(),
        sync_wait: windows.sync_wait,
        shutdown,
    });
    use follower::{Feed, Filter};
    let followers_rt = follower::background_runtime(app.shutdown.subscribe())?;
    let on_followers_rt = followers_rt.enter();
    let feed = Feed { last_seq: audit::Cmd::LastEventSeq, event: audit::Cmd::Event, filter: Filter::All };
    let audit_at = follower::spawn(bus.clone(), app.audit.clone(), feed, app.feeds.audit.clone(), app.shutdown.subscribe());
    let lifecycle = Filter::Only { wants: Box::new(|kind| kind.starts_with("SERVICE_")), passed: health::Cmd::Passed };
    let feed = Feed { last_seq: health::Cmd::LastEventSeq, event: health::Cmd::Event, filter: lifecycle };
    let health_at = follower::spawn(bus.clone(), app.health.clone(), feed, app.feeds.health.clone(), app.shutdown.subscribe());
    let trades = Filter::Only { wants: Box::new(|kind| kind == "TRADE_EXECUTED"), passed: market::Cmd::Passed };
    let feed = Feed { last_seq: market::Cmd::LastEventSeq, event: market::Cmd::Event, filter: trades };
    let market_at = follower::spawn(bus.clone(), app.market.clone(), feed, app.feeds.market.clone(), app.shutdown.subscribe());
    let rules = Filter::Only { wants: Box::new(ctx.notify_interest.clone().feed_wants(shared.clone())), passed: notify::Cmd::Passed };
    let feed = Feed { last_seq: notify::Cmd::LastEventSeq, event: notify::Cmd::Event, filter: rules };
    let notify_at = follower::spawn(bus.clone(), app.notify.clone(), feed, app.feeds.notify.clone(), app.shutdown.subscribe());
    let followers = vec![audit_at, health_at, market_at, notify_at];
    drop(on_followers_rt);
    let refusals_settled = tokio::spawn(routes::settle_refusals(app.clone()));
    retention::spawn(bus.clone(), app.settings.clone(), followers, app.shutdown.subscribe());
    crate::services::notify::sender::spawn(app.notify.clone(), app.shutdown.subscribe(), notify_tuning);

    tokio::spawn({
        let app = app.clone();
        async move {
            routes::anchor_imported_prices(&app).await;
            crate::services::orders::saga::recover(app).await
        }
    });

    let router = routes::router(app.clone());
    let unix = bind_socket(&home)?;
    let mut servers =
        vec![tokio::spawn(server::serve(unix, router.clone(), http::Transport::Socket, body_deadline, app.shutdown.subscribe()))];
    let listen = settings.http.listen.trim().to_string();
    let mut http_addr = None;
    if !listen.is_empty() {
        let tcp =
            tokio::net::TcpListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("cannot listen on http.listen = {listen:?}: {e}"))?;
        http_addr = Some(tcp.local_addr()?.to_string());
        servers.push(tokio::spawn(server::serve(tcp, router, http::Transport::Tcp, body_deadline, app.shutdown.subscribe())));
    }
    let info = DaemonInfo {
        pid: std::process::id(),
        socket: home.socket().display().to_string(),
        http: http_addr.clone(),
        version: VERSION.into(),
        build: Some(BUILD.into()),
        started_at: app.started_at.clone(),
        stopping_since: None,
    };
    write_atomically(&home.pid_file(), format!("{}\n", info.pid).as_bytes())?;
    write_atomically(&home.info_file(), serde_json::to_string_pretty(&info)?.as_bytes())?;
    tracing::info!(pid = info.pid, socket = %info.socket, http = ?http_addr, "agt daemon started");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    tracing::info!("shutting down: draining connections, then services");
    let stopping = DaemonInfo { stopping_since: Some(crate::api::now_rfc3339()), ..info };
    if let Err(e) = write_atomically(&home.info_file(), serde_json::to_string_pretty(&stopping)?.as_bytes()) {
        tracing::warn!(error = %e, "cannot mark agtd.json as stopping; clients may advise a restart meanwhile");
    }
    let _ = app.shutdown.send(true);
    for s in servers {
        let _ = s.await;
    }
    // The refusals counted in windows still open are recorded before audit stops: the
    // settle task records them as the stop begins, but nothing else made it run before
    // the services' shutdown, and a record appended once audit has stopped is lost.
    let _ = refusals_settled.await;
    let sup = supervisor.clone();
    tokio::task::spawn_blocking(move || sup.shutdown()).await?;
    let b = bus.clone();
    tokio::task::spawn_blocking(move || b.shutdown()).await?;
    tracing::info!("agt daemon stopped");
    Ok(())
}

/// Gives the heap memory freed so far back to the system; called once start-up
/// recovery has finished (`saga::recover`). Each service loads its state on its own
/// thread, so glibc's malloc spreads start-up's temporary allocations (rows read, a
/// journal redone, outbox rows re-sent) over per-thread arenas and keeps them when they
/// are freed: after a SIGKILL of a daemon with 1.4 M orders, RSS was 158 MB at `/ready`
/// and 96 MB after a trim.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    fn open_file_limit() -> libc::rlimit {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        lim
    }

    /// Lowered by one below the hard limit (harmless to the tests beside it), then raised.
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_one() {
        let hard = open_file_limit().rlim_max;
        let lowered = libc::rlimit { rlim_cur: hard - 1, rlim_max: hard };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        super::raise_open_file_limit();
        assert_eq!(open_file_limit().rlim_cur, hard);
    }
}
