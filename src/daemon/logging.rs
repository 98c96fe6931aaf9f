//! Logs: daily files `logs/agtd.log.YYYY-MM-DD` (tracing-appender; kept `log.keep_days`
//! days, see [`log_files`](super::log_files)) and stderr.
//!
//! The level comes from `log.level` and can be changed live (`agt config set log.level`),
//! as can `log.keep_days`. Nothing logs a token secret: tokens are logged by id only.

use super::log_files::{DailyFiles, KeepDays};
use crate::daemon::Home;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub struct Logging {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    reload: reload::Handle<EnvFilter, Registry>,
    keep_days: KeepDays,
}

impl Logging {
    pub fn set_level(&self, level: &str) {
        if let Ok(f) = EnvFilter::try_new(filter_for(level)) {
            let _ = self.reload.reload(f);
        }
    }

    /// Takes a changed `log.keep_days` and deletes at once the daily files it no longer keeps.
    pub fn set_keep_days(&self, days: u64) {
        say_deleted(&self.keep_days.set(days), days);
    }
}

fn say_deleted(deleted: &[std::path::PathBuf], keep_days: u64) {
    if !deleted.is_empty() {
        tracing::info!(files = deleted.len(), keep_days, "deleted daily log files older than log.keep_days");
    }
}

fn filter_for(level: &str) -> String {
    // Our crate at the chosen level; chatty dependencies stay at warn.
    format!("warn,agt={level}")
}

pub fn init(home: &Home, level: &str, keep_days: u64) -> anyhow::Result<Logging> {
    std::fs::create_dir_all(home.logs_dir())?;
    let (daily, keep, deleted) = DailyFiles::open(&home.logs_dir(), keep_days)?;
    let (file, guard) = tracing_appender::non_blocking(daily);
    let (filter, reload) = reload::Layer::new(EnvFilter::try_new(filter_for(level))?);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(file).with_ansi(false))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .try_init();
    say_deleted(&deleted, keep_days);
    Ok(Logging { _guard: guard, reload, keep_days: keep })
}
