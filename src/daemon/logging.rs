//! Logs: daily files `logs/agtd.log.YYYY-MM-DD` (tracing-appender; kept `log.keep_days`
//! days, see [`log_files`](super::log_files)) and stderr ([`Stderr`]).
//!
//! The level comes from `log.level` and can be changed live (`agt config set log.level`),
//! as can `log.keep_days`. Nothing logs a token secret: tokens are logged by id only.

use super::log_files::{say_deleted, DailyFiles, KeepDays, Pruned, StderrFile};
use crate::daemon::Home;
use crate::services::config::settings::LogSettings;
use crate::services::config::SharedSettings;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// What the daemon's stderr carries besides the daily files.
///
/// In the foreground (`agt daemon run` in a terminal, or under systemd, whose journal
/// keeps what it prints) stderr is a log of its own, at `log.level`. A daemon that
/// `agt daemon start` launched (it passes `daemon run --detached`) has its stderr in
/// `logs/daemon.out`, beside the daily files that hold every line already: there it
/// carries only warnings and errors (and is set aside when full, `log_files::StderrFile`),
/// so that file stays small and still shows, with a
/// panic's message and a failed start's error (neither goes through this log), why a
/// daemon stopped. The flag, not "is stderr a terminal", decides: systemd's stderr is
/// not a terminal either, and it must keep the whole log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Every line the daily files get.
    AtLevel,
    /// Warnings and errors only.
    WarningsOnly,
}

pub struct Logging {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    reload: reload::Handle<EnvFilter, Registry>,
    keep_days: KeepDays,
}

impl Logging {
    /// Keeps the log's level and how long its files are kept in step with the live
    /// settings: a change applies in the config service's replace of them, so it is in
    /// force when `config set` answers (a poll of them left `log.level` up to 500 ms
    /// behind an acknowledged change).
    pub fn follow(&self, settings: &SharedSettings) {
        let (reload, keep_days) = (self.reload.clone(), self.keep_days.clone());
        settings.on_change(move |old, new| {
            if old.log.level != new.log.level {
                set_level(&reload, new.log.level.as_str());
            }
            if old.log.keep_days != new.log.keep_days {
                say_deleted(&keep_days.set(new.log.keep_days), new.log.keep_days, Pruned::KeepDaysChanged);
            }
        });
    }
}

fn set_level(reload: &reload::Handle<EnvFilter, Registry>, level: &str) {
    if let Ok(f) = EnvFilter::try_new(filter_for(level)) {
        let _ = reload.reload(f);
    }
}

fn filter_for(level: &str) -> String {
    // Our crate at the chosen level; chatty dependencies stay at warn.
    format!("warn,agt={level}")
}

pub fn init(home: &Home, log: &LogSettings, stderr: Stderr) -> anyhow::Result<Logging> {
    std::fs::create_dir_all(home.logs_dir())?;
    // Only a detached daemon's stderr is a file of ours (`logs/daemon.out`) to keep bounded.
    let stderr_file = (stderr == Stderr::WarningsOnly).then(|| StderrFile::daemon_out(&home.logs_dir()));
    let (daily, keep, deleted) = DailyFiles::open(&home.logs_dir(), log.keep_days, stderr_file)?;
    let (file, guard) = tracing_appender::non_blocking(daily);
    let (filter, reload) = reload::Layer::new(EnvFilter::try_new(filter_for(log.level.as_str()))?);
    // On top of the level, which filters every layer.
    let stderr_filter = match stderr {
        Stderr::AtLevel => LevelFilter::TRACE,
        Stderr::WarningsOnly => LevelFilter::WARN,
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(file).with_ansi(false))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).with_filter(stderr_filter))
        .try_init();
    say_deleted(&deleted, log.keep_days, Pruned::Start);
    Ok(Logging { _guard: guard, reload, keep_days: keep })
}
