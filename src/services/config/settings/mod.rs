//! The configuration model: typed, validated [`Settings`] and the rules that build them.
//!
//! Settings come in layers, later wins: the shipped `config/agt.toml` (compiled in), the
//! operator's `$AGT_HOME/agt.toml`, then `AGT_*` environment variables (DESIGN.md §3).
//! Every single-value key is described once, in [`KEYS`]: its dotted name, what it allows
//! and whether it is hot. Loading a file, reading the environment, `set` and `persist` all
//! validate through that one description, so a value refused in one place is refused in
//! all of them, with the same message.
//!
//! Each layer is first normalized on its own (unknown keys refused, values brought to one
//! canonical TOML form: whole numbers as integers, decimals as exact strings), so an error
//! names the file or variable the bad value came from. Layers are then merged as TOML
//! tables and deserialized into [`Settings`].

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Value as Toml;

mod home_file;
mod keys;
mod normalize;
#[cfg(test)]
mod tests;

use home_file::*;
pub use home_file::{Former, Saved};
pub use keys::parse_listen;
use keys::*;
use normalize::*;

/// The shipped defaults, the first layer of every load.
const DEFAULTS: &str = include_str!("../../../../config/agt.toml");
const DEFAULTS_ORIGIN: &str = "config/agt.toml (built in)";

/// The event types of DESIGN.md §2: what a webhook may subscribe to (or `"*"` for all).
pub use crate::services::bus::EVENT_TYPES;

/// How webhook secrets are shown: they are write-only once configured.
pub const MASKED_SECRET: &str = "***";

/// The whole configuration of one daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How hard each commit is pushed to disk; read when stores open, so not hot.
    pub durability: Durability,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub trading: TradingSettings,
    pub risk: RiskSettings,
    pub debug: DebugSettings,
    pub supervisor: SupervisorSettings,
    pub events: EventsSettings,
    /// The instruments the market service seeds on start.
    pub symbols: Vec<SymbolSettings>,
    pub notify: NotifySettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port` of the TCP listener; `""` turns TCP off. See [`HttpSettings::addr`].
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: LogLevel,
    /// How many days of daily log files are kept, today's included; 0 keeps them all.
    /// See `daemon::log_files`.
    pub keep_days: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradingSettings {
    /// A placement still running after this long answers 504 `timeout`.
    pub order_timeout_s: u64,
    /// How long the order path may wait awake (spinning) rather than asleep, in
    /// microseconds; 0 never spins. See `services::spin`.
    pub spin_us: u64,
    /// How much lower (a nice increment) the threads nobody's answer waits for run than
    /// the order path. See `services::priority`.
    pub background_nice: u64,
    /// Whether the daemon's threads run in Linux's batch scheduling class, where a thread
    /// that wakes does not preempt the one running. See `services::priority`.
    pub sched_batch: bool,
    /// Whether the threads nobody's answer waits for run on fewer cores than the order
    /// path. See `services::priority`.
    pub confine_background: bool,
}

/// The global pre-trade limits (per-user limits, kept by the risk service, override them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSettings {
    pub max_open_orders: u32,
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub max_order_quantity: Decimal,
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub max_order_notional: Decimal,
    pub max_orders_per_second: u32,
    /// In percent of the last trade price: `10` allows 90..110 around a last price of 100.
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub price_band_pct: Decimal,
    pub allow_short: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugSettings {
    /// Guards `POST /api/services/{name}/crash`, so production daemons cannot be crashed
    /// through the API.
    pub fault_injection: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    /// More restarts than this within `window_s` marks a service `failed`.
    pub max_restarts: u32,
    pub window_s: u64,
    /// The first restart's delay; it doubles per restart up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// Events older than this many seconds are pruned from `events.db` once every
    /// service that follows the bus has passed them; 0 keeps every event.
    pub retain_s: u64,
}

/// One `[[symbols]]` entry: an instrument trading its base asset against USD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolSettings {
    pub symbol: String,
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub tick: Decimal,
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub lot: Decimal,
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub min_quantity: Decimal,
    #[serde(deserialize_with = "crate::api::decimal::de")]
    pub max_quantity: Decimal,
}

impl SymbolSettings {
    /// Whether the market trades `instrument` on exactly these terms (an instrument's
    /// terms never change once it exists, so an entry that differs never applies).
    pub fn same_terms(&self, instrument: &crate::api::Instrument) -> bool {
        self.differences(instrument).is_empty()
    }

    /// Where these terms differ from `instrument`'s, one per field, in the order the
    /// entry lists them: `tick: trades with 0.01, requested 0.05`. Empty when the market
    /// trades it on these terms.
    pub fn differences(&self, instrument: &crate::api::Instrument) -> Vec<String> {
        let i = instrument;
        [
            ("tick", i.tick, self.tick),
            ("lot", i.lot, self.lot),
            ("min_quantity", i.min_quantity, self.min_quantity),
            ("max_quantity", i.max_quantity, self.max_quantity),
        ]
        .into_iter()
        .filter(|(_, has, asked)| has != asked)
        .map(|(field, has, asked)| format!("{field}: trades with {has}, requested {asked}"))
        .collect()
    }

    /// Why this entry cannot apply to `instrument` (`None` when it can): the fields that
    /// differ, each with both values, and what to do instead.
    pub fn refusal(&self, instrument: &crate::api::Instrument) -> Option<String> {
        let differences = self.differences(instrument);
        (!differences.is_empty()).then(|| {
            format!(
                "{} already trades on other terms ({}): an instrument's terms never change once it exists; \
                 write the entry with the terms it trades on, or list another symbol instead",
                instrument.symbol,
                differences.join("; ")
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// One `[[notify.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// Event types from [`EVENT_TYPES`], or `"*"` for every event.
    pub events: Vec<String>,
    /// Signs deliveries so the receiver can trust them; never shown back ([`MASKED_SECRET`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// SQLite WAL + `synchronous=NORMAL`: survives a crash or SIGKILL of the daemon; the
    /// last commits may be lost on power loss or an OS crash.
    #[default]
    Normal,
    /// SQLite WAL + `synchronous=FULL`: every commit is fsynced; survives power loss too.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// What one `set` changed, in the shape `get` shows (webhook secrets masked), so it can go
/// into a `CONFIG_CHANGED` event or the audit log as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub old: Json,
    pub new: Json,
    /// Applied without a restart (see [`Settings::is_hot`]); else it applies at next start.
    pub hot: bool,
}

/// A configuration that cannot be loaded, set or saved. The message names where the value
/// came from (file or environment variable; nothing for `set`), the dotted key, and what
/// is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value outside what its key allows.
    #[error("{}{key}: {message}", prefix(.origin))]
    Invalid { origin: String, key: String, message: String },
    /// A key agt does not know (usually a typo).
    #[error("{}unknown key {} ({hint})", prefix(.origin), shown_key(.key))]
    UnknownKey { origin: String, key: String, hint: String },
    /// A file that is not valid TOML.
    #[error("{origin}: not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    /// A file that cannot be read or written.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// A file that someone else is writing while a change is saved into it.
    #[error("{path}: {message}")]
    Busy { path: String, message: String },
}

fn prefix(origin: &str) -> String {
    if origin.is_empty() {
        String::new()
    } else {
        format!("{origin}: ")
    }
}

impl ConfigError {
    /// The dotted key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::UnknownKey { key, .. } => Some(key),
            _ => None,
        }
    }
    fn invalid(origin: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { origin: origin.to_string(), key: key.into(), message: message.into() }
    }
}

impl LogLevel {
    pub fn parse(text: &str) -> Option<LogLevel> {
        Some(match text {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
    /// The name, which is also a valid `tracing_subscriber::EnvFilter` directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl Durability {
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "normal" => Some(Durability::Normal),
            "full" => Some(Durability::Full),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Normal => "normal",
            Durability::Full => "full",
        }
    }
}

impl HttpSettings {
    /// The address to bind, or `None` when TCP is off.
    pub fn addr(&self) -> Option<SocketAddr> {
        parse_listen(&self.listen).ok().flatten()
    }
}

impl TradingSettings {
    pub fn order_timeout(&self) -> Duration {
        Duration::from_secs(self.order_timeout_s)
    }
    /// The longest a wait on the order path spins before it sleeps.
    pub fn spin(&self) -> Duration {
        Duration::from_micros(self.spin_us)
    }
}

impl EventsSettings {
    /// How long events are kept, or `None` to keep them all.
    pub fn retention(&self) -> Option<Duration> {
        (self.retain_s > 0).then(|| Duration::from_secs(self.retain_s))
    }
}

impl SupervisorSettings {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_s)
    }
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
}

impl SymbolSettings {
    /// The asset bought and sold: `AAPL` for `AAPL`, `BTC` for `BTC-USD`.
    pub fn base(&self) -> &str {
        self.symbol.strip_suffix("-USD").unwrap_or(&self.symbol)
    }
}

// ---------------------------------------------------------------- loading

impl Default for Settings {
    fn default() -> Self {
        Settings::defaults()
    }
}

impl Settings {
    /// The shipped defaults of `config/agt.toml`.
    pub fn defaults() -> Settings {
        let table = parse_layer(DEFAULTS_ORIGIN, DEFAULTS).expect("config/agt.toml is valid (tested)");
        from_table(DEFAULTS_ORIGIN, table).expect("config/agt.toml is valid (tested)")
    }

    /// The defaults, then `home_file` if it exists, then the environment as `env` reports it
    /// (`&|name| std::env::var(name).ok()` for the process's own).
    ///
    /// Environment variables: `AGT_<SECTION>_<KEY>` upper-cased for every single-value key
    /// (`AGT_RISK_MAX_OPEN_ORDERS`, `AGT_DURABILITY`), and `AGT_HTTP_ADDR`, which wins over
    /// `AGT_HTTP_LISTEN`. An empty variable counts as unset, except that an empty
    /// `AGT_HTTP_ADDR`/`AGT_HTTP_LISTEN` turns TCP off.
    pub fn load(home_file: &Path, env: &impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Ok(Settings::load_with_source(home_file, env)?.0)
    }

    /// [`Settings::load`], with the file as it was read: what the settings were made
    /// from, for the config service to tell an edit made since from the file it applied.
    pub fn load_with_source(
        home_file: &Path,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(Settings, super::watch::Source), ConfigError> {
        let source = super::watch::Source::read(home_file)
            .map_err(|e| ConfigError::Io { path: home_file.display().to_string(), message: format!("cannot read: {e}") })?;
        Ok((Settings::from_text(home_file, source.text.as_deref(), env)?, source))
    }

    /// [`Settings::load`] of `home_file` as read already (`None`: there is none): the
    /// config service reads an edit once and applies what it read.
    pub fn from_text(home_file: &Path, text: Option<&str>, env: &impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut settings = Settings::defaults();
        let origin = home_file.display().to_string();
        if let Some(text) = text {
            let layer = parse_layer(&origin, text)?;
            let changed = layer_keys(&layer);
            settings = settings.layered(layer, &|key| changed.iter().any(|c| c == key).then(|| origin.clone()))?;
        }
        let mut layer = toml::Table::new();
        let mut vars: Vec<(&'static str, String)> = Vec::new();
        for key in KEYS {
            for name in env_names(key) {
                let Some(raw) = env(&name).filter(|raw| overrides(key, raw)) else { continue };
                let value = key.kind.normalize(&Toml::String(raw)).map_err(|m| ConfigError::invalid(&name, key.name, m))?;
                insert_dotted(&mut layer, key.name, value);
                vars.retain(|(k, _)| *k != key.name);
                vars.push((key.name, name));
            }
        }
        if !vars.is_empty() {
            settings = settings.layered(layer, &|key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))?;
        }
        Ok(settings)
    }

    /// The name of the environment variable that overrides `key` (`risk.max_open_orders` →
    /// `AGT_RISK_MAX_OPEN_ORDERS`).
    pub fn env_var(key: &str) -> String {
        env_var(key)
    }

    /// The environment variable whose value sets `key` at a start, if `env` has one, as
    /// [`Settings::load`] reads them (the last of [`env_names`] that [`overrides`]).
    pub fn env_override(key: &str, env: &impl Fn(&str) -> Option<String>) -> Option<String> {
        let key = find_key(key)?;
        env_names(key).into_iter().filter(|name| env(name).is_some_and(|raw| overrides(key, &raw))).last()
    }

    /// Whether `key` is one of the lists (`symbols`, `notify.webhooks`).
    pub fn is_list(key: &str) -> bool {
        key == SYMBOLS || key == WEBHOOKS
    }

    /// Every dotted key `get`/`set` take, single-value keys first, then the lists.
    pub fn known_keys() -> Vec<&'static str> {
        KEYS.iter().map(|k| k.name).chain([SYMBOLS, WEBHOOKS]).collect()
    }

    /// Whether a change to `key` reaches running services without a restart: `log.*`,
    /// `risk.*`, `debug.*`, `supervisor.*`, `events.*`, `notify.webhooks` (notify reads them
    /// live) and `trading.*` but for the three that set up threads at start
    /// (`background_nice`, `sched_batch`, `confine_background`). `http.listen`,
    /// `durability` and `symbols` apply at the next start (symbols can be added live with
    /// `agt symbol add`). Unknown keys are not hot; [`KEYS`] says which are.
    pub fn is_hot(key: &str) -> bool {
        key == WEBHOOKS || find_key(key).is_some_and(|k| k.hot)
    }

    /// The single-value keys that apply only at a start whose value in `self` (saved:
    /// the live settings) differs from `running` (what the daemon started with), as
    /// `{"durability": {"saved": "full", "running": "normal"}}`: without it, `config get`
    /// after `config set durability full` reads "full" while every commit still runs
    /// without fsync.
    pub fn pending_restart(&self, running: &Settings) -> serde_json::Map<String, Json> {
        KEYS.iter()
            .filter(|k| !k.hot)
            .filter_map(|k| {
                let (saved, was) = (self.get(k.name)?, running.get(k.name)?);
                (saved != was).then(|| (k.name.to_string(), serde_json::json!({"saved": saved, "running": was})))
            })
            .collect()
    }

    /// Merges a normalized layer over these settings. `origin_of(key)` names where a
    /// changed key came from (file or variable), for cross-key errors.
    fn layered(&self, layer: toml::Table, origin_of: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut table = self.to_table();
        merge(&mut table, layer);
        let next = from_table("", table)?;
        next.check_across(origin_of)?;
        Ok(next)
    }

    /// Rules between keys, blamed on whichever of them the last layer changed.
    fn check_across(&self, origin_of: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let s = &self.supervisor;
        if s.backoff_initial_ms > s.backoff_max_ms {
            let (key, message) = if origin_of("supervisor.backoff_max_ms").is_some() || origin_of("supervisor.backoff_initial_ms").is_none()
            {
                (
                    "supervisor.backoff_max_ms",
                    format!(
                        "expected a whole number >= supervisor.backoff_initial_ms ({}), got {}",
                        s.backoff_initial_ms, s.backoff_max_ms
                    ),
                )
            } else {
                (
                    "supervisor.backoff_initial_ms",
                    format!("expected a whole number <= supervisor.backoff_max_ms ({}), got {}", s.backoff_max_ms, s.backoff_initial_ms),
                )
            };
            return Err(ConfigError::invalid(&origin_of(key).unwrap_or_default(), key, message));
        }
        Ok(())
    }

    fn to_table(&self) -> toml::Table {
        match Toml::try_from(self) {
            Ok(Toml::Table(t)) => t,
            other => unreachable!("Settings serialize to a TOML table, got {other:?}"),
        }
    }

    // ------------------------------------------------------------ dotted keys

    /// The whole configuration as nested JSON: decimals as strings, webhook secrets masked.
    pub fn to_json(&self) -> Json {
        let mut json = serde_json::to_value(self).expect("Settings serialize to JSON");
        if let Some(hooks) = json.pointer_mut("/notify/webhooks").and_then(Json::as_array_mut) {
            for hook in hooks {
                if let Some(secret) = hook.get_mut("secret") {
                    *secret = Json::String(MASKED_SECRET.into());
                }
            }
        }
        json
    }

    /// The value at a dotted key, as in [`Settings::to_json`]: a single key
    /// (`risk.max_open_orders`), a section (`risk`), a list (`symbols`), one symbol or its
    /// field (`symbols.BTC-USD`, `symbols.BTC-USD.tick`), or a list index
    /// (`notify.webhooks.0.url`).
    pub fn get(&self, key: &str) -> Option<Json> {
        let json = self.to_json();
        if let Some(rest) = key.strip_prefix("symbols.") {
            // Symbols may contain dots (`BRK.B`), so match whole symbols, not path parts.
            for (i, s) in self.symbols.iter().enumerate() {
                let entry = &json["symbols"][i];
                if rest == s.symbol {
                    return Some(entry.clone());
                }
                if let Some(field) = rest.strip_prefix(s.symbol.as_str()).and_then(|r| r.strip_prefix('.')) {
                    return entry.get(field).cloned();
                }
            }
        }
        if key.is_empty() {
            return None;
        }
        let mut at = &json;
        for part in key.split('.') {
            at = match at {
                Json::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => at.get(part)?,
            };
        }
        Some(at.clone())
    }

    /// Sets one key after checking its type and range; on error nothing changes.
    ///
    /// Numbers and booleans may come as JSON strings (`"3"`, `"true"`), as the CLI sends
    /// them. `symbols` takes one entry or a list, added to the symbols or replacing the one
    /// with the same symbol, as in a home file (instruments are never removed, so an empty
    /// list is refused). `notify.webhooks` is the whole new list (`[]` removes them all),
    /// and a secret of `"***"` keeps the webhook's current secret. This changes these settings
    /// whether or not the key is hot: [`Change::hot`] says if running services can apply it.
    pub fn set(&mut self, key: &str, value: &Json) -> Result<Change, ConfigError> {
        let mut changes = self.set_many(&[(key, value)])?;
        Ok(changes.remove(0))
    }

    /// Sets several keys at once, all or none, checking rules between keys only at the end
    /// (so raising both `supervisor.backoff_initial_ms` and `backoff_max_ms` works).
    pub fn set_many(&mut self, entries: &[(&str, &Json)]) -> Result<Vec<Change>, ConfigError> {
        let mut layer = toml::Table::new();
        let mut keys: Vec<&str> = Vec::new();
        let mut base = self.clone();
        for (key, value) in entries {
            let value = normalize_json(key, value)?;
            let value = match (*key, value) {
                (WEBHOOKS, Toml::Array(hooks)) => {
                    base.notify.webhooks.clear();
                    Toml::Array(self.keep_secrets(hooks)?)
                }
                (SYMBOLS, Toml::Array(list)) if list.is_empty() => {
                    return Err(ConfigError::invalid(
                        "",
                        SYMBOLS,
                        "symbols are added or changed one entry at a time and instruments are never removed, so [] changes nothing; give the entries to add or change",
                    ))
                }
                (_, v) => v,
            };
            insert_dotted(&mut layer, key, value);
            keys.push(key);
        }
        let before: Vec<Json> = keys.iter().map(|k| self.get(k).unwrap_or(Json::Null)).collect();
        let next = base.layered(layer, &|k| keys.contains(&k).then(String::new))?;
        *self = next;
        Ok(keys
            .iter()
            .zip(before)
            .map(|(key, old)| Change { key: key.to_string(), old, new: self.get(key).unwrap_or(Json::Null), hot: Self::is_hot(key) })
            .collect())
    }

    /// Flattens a `PUT /api/config` body into `(dotted key, value)` pairs for `set_many`:
    /// nested (`{"risk": {"max_open_orders": 5}}`) or dotted (`{"risk.max_open_orders": 5}`).
    pub fn flatten(patch: &Json) -> Result<Vec<(String, Json)>, ConfigError> {
        fn walk(prefix: &str, object: &serde_json::Map<String, Json>, out: &mut Vec<(String, Json)>) {
            for (k, v) in object {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    Json::Object(inner) if is_section(&key) => walk(&key, inner, out),
                    _ => out.push((key, v.clone())),
                }
            }
        }
        let Json::Object(object) = patch else {
            return Err(ConfigError::invalid(
                "",
                "",
                // Its kind, not the body: a list of webhooks holds their secrets.
                format!(
                    "expected an object of keys and values such as {{\"risk.max_open_orders\": 50}}, got {}",
                    match json_to_toml(patch) {
                        Some(value) => kind(&value),
                        None => "null",
                    }
                ),
            ));
        };
        let mut out = Vec::new();
        walk("", object, &mut out);
        Ok(out)
    }

    /// A webhook given back with the masked secret keeps the secret it has. `"***"` for a
    /// URL that has no secret (a new or changed URL) is refused: dropping it would send
    /// that webhook's posts unsigned without a word, and taking `"***"` as the key would
    /// sign them with a key the receiver does not have.
    fn keep_secrets(&self, hooks: Vec<Toml>) -> Result<Vec<Toml>, ConfigError> {
        let mut out = Vec::with_capacity(hooks.len());
        for (i, mut hook) in hooks.into_iter().enumerate() {
            if let Toml::Table(t) = &mut hook {
                if t.get("secret").and_then(Toml::as_str) == Some(MASKED_SECRET) {
                    let url = t.get("url").and_then(Toml::as_str).unwrap_or_default();
                    let kept = self.notify.webhooks.iter().find(|w| w.url == url).and_then(|w| w.secret.clone());
                    let secret = kept.ok_or_else(|| masked_secret_without_one(i, url))?;
                    t.insert("secret".into(), Toml::String(secret));
                }
            }
            out.push(hook);
        }
        Ok(out)
    }

    // ------------------------------------------------------------ saving

    /// Writes `key = value` into the operator's `home_file` (created if absent), keeping its
    /// comments, layout and other keys. The value is checked as `set` checks it, and the
    /// file is written only if it still loads, atomically (temp file + rename), so a crash
    /// never leaves half a file. Not safe against a concurrent `persist` to the same file:
    /// callers serialize (the config service does).
    pub fn persist(home_file: &Path, key: &str, value: &Json) -> Result<Saved, ConfigError> {
        Self::persist_many(home_file, &[(key, value)])
    }

    /// [`Settings::persist`] for several keys in one write.
    pub fn persist_many(home_file: &Path, entries: &[(&str, &Json)]) -> Result<Saved, ConfigError> {
        Self::persist_over(home_file, entries, &mut |_| Ok(()))
    }

    /// [`Settings::persist_many`], without losing an edit someone else makes meanwhile:
    /// the file is read again just before the rename, and if it changed since it was
    /// read, the change is merged into the new text instead ([`MERGE_TRIES`] times, then
    /// [`ConfigError::Busy`]). Only an edit landing between that last read and the
    /// rename (microseconds) can still be lost. `check` is given each text the change is
    /// about to be merged into (`None`: no file) and may refuse it.
    pub fn persist_over(
        home_file: &Path,
        entries: &[(&str, &Json)],
        check: &mut dyn FnMut(&Option<String>) -> Result<(), ConfigError>,
    ) -> Result<Saved, ConfigError> {
        Self::persist_keeping(home_file, entries, check, false)
    }

    /// [`Settings::persist_over`]; with `keep_former`, the file it replaces stays on disk
    /// under another name ([`Saved::former`], a hard link: no space needed), so that the
    /// config service can put it back by a rename if the change's record then fails to
    /// commit ([`Saved::put_back`]), on a full disk too.
    pub fn persist_keeping(
        home_file: &Path,
        entries: &[(&str, &Json)],
        check: &mut dyn FnMut(&Option<String>) -> Result<(), ConfigError>,
        keep_former: bool,
    ) -> Result<Saved, ConfigError> {
        let origin = home_file.display().to_string();
        // Write through a symlink to its target rather than replacing the link.
        let target = std::fs::canonicalize(home_file).unwrap_or_else(|_| home_file.to_path_buf());
        let read =
            || super::watch::read(&target).map_err(|e| ConfigError::Io { path: origin.clone(), message: format!("cannot read: {e}") });
        for _ in 0..MERGE_TRIES {
            let base = read()?;
            check(&base)?;
            let (text, private) = Self::merged(&origin, base.as_deref().unwrap_or_default(), entries)?;
            let unchanged = || matches!(read(), Ok(now) if now == base);
            let former = keep_former.then(|| Former::of(&target));
            match write_atomically(&target, &text, private, &unchanged, former.as_ref()) {
                Ok(Some(stamp)) => {
                    // No file before: the marker says so; putting back is removing it.
                    let former = former.map(|f| if base.is_some() { f.link } else { f.none });
                    return Ok(Saved { base, text, stamp, path: target, former });
                }
                Ok(None) => continue,
                Err(e) => return Err(ConfigError::Io { path: origin, message: format!("cannot write: {e}") }),
            }
        }
        Err(ConfigError::Busy {
            path: origin,
            message: format!("the file changed each of the {MERGE_TRIES} times this change was merged into it (is something writing it?); nothing was saved, set again"),
        })
    }

    /// `base` with `entries` written in, and whether it holds a webhook's secret.
    fn merged(origin: &str, base: &str, entries: &[(&str, &Json)]) -> Result<(String, bool), ConfigError> {
        let mut doc: toml_edit::DocumentMut = base.parse().map_err(|e: toml_edit::TomlError| ConfigError::Syntax {
            origin: origin.to_string(),
            // Not toml_edit's whole report: it quotes the line, which may be a secret's.
            message: e.message().trim_end().to_string() + &line_of(base, e.span()),
        })?;
        for (key, value) in entries {
            let value = normalize_json(key, value)?;
            edit(&mut doc, origin, key, value)?;
        }
        let text = doc.to_string();
        // Refuse to write a file that would stop the daemon from starting.
        let layer = parse_layer(origin, &text)?;
        let persisted: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        let saved = Settings::defaults().layered(layer, &|key| persisted.contains(&key).then(|| origin.to_string()))?;
        // A file that holds a webhook's signing secret is the owner's alone, whatever mode
        // it had: `config set` must not leave a secret it wrote readable by others.
        let private = saved.notify.webhooks.iter().any(|w| w.secret.is_some());
        Ok((text, private))
    }
}

/// How many times a save merges its change into a file that keeps changing under it.
const MERGE_TRIES: usize = 5;

/// Variables that start like a setting's (`AGT_RISK_…`) but name none, such as the typo
/// `AGT_RISK_MAX_OPEN_ORDRS`: ignored, they would leave the default in force unnoticed,
/// so start-up refuses them as it refuses an unknown key in `agt.toml`. Names outside the
/// sections (`AGT_HOME`, `AGT_URL`, …) and the tuning knobs (`AGT_NOTIFY_*`, the HTTP body's
/// deadline) are not settings.
pub fn check_env_names(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    const NOT_SETTINGS: &[&str] = &[
        "AGT_HTTP_ADDR",
        "AGT_HTTP_BODY_TIMEOUT_MS",
        "AGT_NOTIFY_BACKOFF_MS",
        "AGT_NOTIFY_MAX_ATTEMPTS",
        "AGT_NOTIFY_TIMEOUT_MS",
        "AGT_SYNC_WAIT_MS",
    ];
    let vars: Vec<String> = KEYS.iter().map(|k| env_var(k.name)).collect();
    let sections: Vec<String> = KEYS.iter().filter_map(|k| k.name.split_once('.')).map(|(section, _)| env_var(section) + "_").collect();
    for name in names {
        if !sections.iter().any(|s| name.starts_with(s.as_str())) || vars.contains(&name) || NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let near = vars
            .iter()
            .map(|v| (edit_distance(&name, v), v))
            .filter(|(d, _)| *d <= 3)
            .min_by_key(|(d, _)| *d)
            .map(|(_, v)| format!("did you mean {v}? "))
            .unwrap_or_default();
        return Err(ConfigError::UnknownKey {
            origin: "environment".into(),
            key: name,
            hint: format!("{near}each setting KEY is read from AGT_<KEY> upper-cased with _ for dots, e.g. AGT_RISK_MAX_OPEN_ORDERS"),
        });
    }
    Ok(())
}

fn env_var(key: &str) -> String {
    format!("AGT_{}", key.replace(['.', '-'], "_").to_ascii_uppercase())
}

/// The variables that may set `key`, the later winning: `AGT_<KEY>`, and for
/// `http.listen` also `AGT_HTTP_ADDR`.
fn env_names(key: &Key) -> Vec<String> {
    let mut names = vec![env_var(key.name)];
    if key.name == "http.listen" {
        names.push("AGT_HTTP_ADDR".to_string());
    }
    names
}

/// Whether a variable's value sets its key: an empty one counts as unset, except for
/// `http.listen`, where "" turns TCP off.
fn overrides(key: &Key, raw: &str) -> bool {
    !raw.is_empty() || matches!(key.kind, Kind::Listen)
}

/// Reads one file's text into a normalized layer.
fn parse_layer(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
        origin: origin.to_string(),
        message: e.message().to_string() + &location(text, &e),
    })?;
    normalize_layer(origin, &table)
}

/// Where a syntax error is, by line: never the line itself, which may hold a secret.
fn location(text: &str, e: &toml::de::Error) -> String {
    line_of(text, e.span())
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

fn from_table(origin: &str, table: toml::Table) -> Result<Settings, ConfigError> {
    // Normalization has checked every key and value, so this fails only on an agt bug.
    Toml::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Syntax { origin: origin.to_string(), message: e.to_string() })
}

/// The dotted keys a normalized layer sets, for blaming cross-key errors.
fn layer_keys(layer: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in layer {
        match v {
            Toml::Table(t) => out.extend(t.keys().map(|leaf| format!("{k}.{leaf}"))),
            _ => out.push(k.clone()),
        }
    }
    out
}

fn insert_dotted(table: &mut toml::Table, key: &str, value: Toml) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((section, leaf)) => {
            let entry = table.entry(section.to_string()).or_insert_with(|| Toml::Table(toml::Table::new()));
            if let Toml::Table(t) = entry {
                t.insert(leaf.to_string(), value);
            }
        }
    }
}

/// Lays a normalized layer over `base`: keys replace keys; list entries replace the entry
/// with the same symbol (or url) and are otherwise added.
fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (name, value) in layer {
        match (name.as_str(), value) {
            (SYMBOLS, Toml::Array(entries)) => merge_entries(base, SYMBOLS, "symbol", entries),
            (_, Toml::Table(section)) => {
                let slot = base.entry(name.clone()).or_insert_with(|| Toml::Table(toml::Table::new()));
                let Toml::Table(slot) = slot else { continue };
                for (leaf, v) in section {
                    match (name.as_str(), leaf.as_str(), v) {
                        ("notify", "webhooks", Toml::Array(entries)) => merge_entries(slot, "webhooks", "url", entries),
                        (_, _, v) => {
                            slot.insert(leaf, v);
                        }
                    }
                }
            }
            (_, value) => {
                base.insert(name, value);
            }
        }
    }
}

fn merge_entries(table: &mut toml::Table, name: &str, id: &str, entries: Vec<Toml>) {
    let list = table.entry(name.to_string()).or_insert_with(|| Toml::Array(Vec::new()));
    let Toml::Array(list) = list else { return };
    for entry in entries {
        let same = |e: &Toml| e.get(id).is_some() && e.get(id) == entry.get(id);
        match list.iter().position(same) {
            Some(i) => list[i] = entry,
            None => list.push(entry),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
