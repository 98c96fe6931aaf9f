//! The config actor: applies `agt config set` / `PUT /api/config` and keeps their history.
//!
//! A change is validated on a copy of the live settings, written into `$AGT_HOME/agt.toml`
//! (comments kept), recorded in `data/config.db`, and only then made live: a hot key takes
//! effect at once, a cold one (`http.listen`, `durability`, `symbols`) at the next start.

use super::settings::Settings;
use super::SharedSettings;
use crate::api::ApiError;
use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use rusqlite::{params, Connection};

pub enum Cmd {
    Show(Reply<serde_json::Value>),
    /// Sets dotted keys (all or none); answers the new configuration.
    Set(Vec<(String, serde_json::Value)>, Reply<serde_json::Value>),
}

pub struct Config {
    live: SharedSettings,
    file: std::path::PathBuf,
}

const MIGRATIONS: &[&str] = &["CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        hot INTEGER NOT NULL
    );"];

impl Service for Config {
    type Cmd = Cmd;
    const NAME: &'static str = "config";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    fn load(_conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        Ok(Config { live: ctx.settings.clone(), file: ctx.home.config_file() })
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Show(reply) => after.reply(reply, Ok(self.live.get().to_json())),
            Cmd::Set(changes, reply) => {
                let result = self.set(tx, changes, after)?;
                after.reply(reply, result);
            }
        }
        Ok(())
    }
}

impl Config {
    fn set(
        &mut self,
        tx: &Connection,
        changes: Vec<(String, serde_json::Value)>,
        after: &mut AfterCommit,
    ) -> Result<Result<serde_json::Value, ApiError>, ServiceError> {
        if changes.is_empty() {
            return Ok(Err(ApiError::bad_request("send at least one key, e.g. {\"risk.max_open_orders\": 50}")));
        }
        // All or nothing: validate every key together (initial <= max backoff, say), then
        // persist what the client sent (not the masked view), then go live.
        let entries: Vec<(&str, &serde_json::Value)> = changes.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut next: Settings = (*self.live.get()).clone();
        let applied = match next.set_many(&entries) {
            Ok(c) => c,
            Err(e) => return Ok(Err(ApiError::invalid("invalid_config", e.to_string()))),
        };
        if let Err(e) = Settings::persist_many(&self.file, &entries) {
            return Ok(Err(ApiError::new(500, "config_not_saved", e.to_string())));
        }
        for change in &applied {
            tx.prepare_cached("INSERT INTO changes (timestamp, key, value, hot) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
                crate::api::now_rfc3339(),
                change.key,
                change.new.to_string(),
                change.hot
            ])?;
            let applied_when = if change.hot { "now" } else { "at restart" };
            after.event(
                "CONFIG_CHANGED",
                serde_json::json!({"key": change.key, "old": change.old, "value": change.new, "applied": applied_when}),
            );
            if change.key.starts_with("risk.") {
                after.event("RISK_LIMIT_CHANGED", serde_json::json!({"user_id": null, "key": change.key, "value": change.new}));
            }
        }
        let json = next.to_json();
        self.live.replace(next);
        Ok(Ok(json))
    }
}
