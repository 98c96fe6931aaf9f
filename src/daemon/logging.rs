//! Logs: daily files `logs/agtd.log.YYYY-MM-DD` (tracing-appender) and stderr.
//!
//! The level comes from `log.level` and can be changed live (`agt config set log.level`).
//! Nothing logs a token secret: tokens are logged by id only.

use crate::daemon::Home;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub struct Logging {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    reload: reload::Handle<EnvFilter, Registry>,
}

impl Logging {
    pub fn set_level(&self, level: &str) {
        if let Ok(f) = EnvFilter::try_new(filter_for(level)) {
            let _ = self.reload.reload(f);
        }
    }
}

fn filter_for(level: &str) -> String {
    // Our crate at the chosen level; chatty dependencies stay at warn.
    format!("warn,agt={level}")
}

pub fn init(home: &Home, level: &str) -> anyhow::Result<Logging> {
    std::fs::create_dir_all(home.logs_dir())?;
    let appender = tracing_appender::rolling::daily(home.logs_dir(), "agtd.log");
    let (file, guard) = tracing_appender::non_blocking(appender);
    let (filter, reload) = reload::Layer::new(EnvFilter::try_new(filter_for(level))?);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(file).with_ansi(false))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .try_init();
    Ok(Logging { _guard: guard, reload })
}
