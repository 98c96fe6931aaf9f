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

/// The shipped defaults, the first layer of every load.
const DEFAULTS: &str = include_str!("../../../config/agt.toml");
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

// ---------------------------------------------------------------- the keys

/// What a single-value key allows.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Listen,
    LogLevel,
    Durability,
    /// A whole number in `min..=max`.
    Whole {
        min: u64,
        max: u64,
    },
    /// A decimal > 0, and <= `max` if given.
    Positive {
        max: Option<u32>,
    },
    Bool,
}

struct Key {
    name: &'static str,
    kind: Kind,
    /// Applied to running services without a restart.
    hot: bool,
}

const U32: u64 = u32::MAX as u64;

/// Every single-value key. The lists (`symbols`, `notify.webhooks`) are handled apart.
const KEYS: &[Key] = &[
    Key { name: "durability", kind: Kind::Durability, hot: false },
    Key { name: "http.listen", kind: Kind::Listen, hot: false },
    Key { name: "log.level", kind: Kind::LogLevel, hot: true },
    Key { name: "log.keep_days", kind: Kind::Whole { min: 0, max: U32 }, hot: true },
    Key { name: "trading.order_timeout_s", kind: Kind::Whole { min: 1, max: 3600 }, hot: true },
    Key { name: "trading.spin_us", kind: Kind::Whole { min: 0, max: 1000 }, hot: true },
    Key { name: "trading.background_nice", kind: Kind::Whole { min: 0, max: 19 }, hot: false },
    Key { name: "trading.sched_batch", kind: Kind::Bool, hot: false },
    Key { name: "trading.confine_background", kind: Kind::Bool, hot: false },
    Key { name: "risk.max_open_orders", kind: Kind::Whole { min: 1, max: U32 }, hot: true },
    Key { name: "risk.max_order_quantity", kind: Kind::Positive { max: None }, hot: true },
    Key { name: "risk.max_order_notional", kind: Kind::Positive { max: None }, hot: true },
    Key { name: "risk.max_orders_per_second", kind: Kind::Whole { min: 1, max: U32 }, hot: true },
    Key { name: "risk.price_band_pct", kind: Kind::Positive { max: Some(1000) }, hot: true },
    Key { name: "risk.allow_short", kind: Kind::Bool, hot: true },
    Key { name: "debug.fault_injection", kind: Kind::Bool, hot: true },
    Key { name: "supervisor.max_restarts", kind: Kind::Whole { min: 0, max: 1000 }, hot: true },
    Key { name: "supervisor.window_s", kind: Kind::Whole { min: 1, max: 86_400 }, hot: true },
    Key { name: "supervisor.backoff_initial_ms", kind: Kind::Whole { min: 1, max: 3_600_000 }, hot: true },
    Key { name: "supervisor.backoff_max_ms", kind: Kind::Whole { min: 1, max: 3_600_000 }, hot: true },
    Key { name: "events.retain_s", kind: Kind::Whole { min: 0, max: U32 }, hot: true },
];

const SYMBOLS: &str = "symbols";
const WEBHOOKS: &str = "notify.webhooks";
const SYMBOL_FIELDS: &[&str] = &["symbol", "tick", "lot", "min_quantity", "max_quantity"];
const WEBHOOK_FIELDS: &[&str] = &["url", "events", "secret"];

fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn is_section(name: &str) -> bool {
    name == "notify" || KEYS.iter().any(|k| k.name.split_once('.').is_some_and(|(s, _)| s == name))
}

impl Kind {
    /// What the key allows, as the error messages say it.
    fn allowed(self) -> String {
        match self {
            Kind::Listen => "\"host:port\" such as \"127.0.0.1:8000\" (port 0 picks a free port), or \"\" to turn TCP off".into(),
            Kind::LogLevel => "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"".into(),
            Kind::Durability => "\"normal\" or \"full\"".into(),
            Kind::Whole { min, max } if max == U32 => format!("a whole number >= {min}"),
            Kind::Whole { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Positive { max: None } => "a decimal number > 0 such as \"10.5\"".into(),
            Kind::Positive { max: Some(m) } => format!("a decimal number > 0 and <= {m} such as \"10\""),
            Kind::Bool => crate::api::switch::EXPECTED.into(),
        }
    }

    /// Checks `value` and returns it in canonical form, or the reason it is refused.
    fn normalize(self, value: &Toml) -> Result<Toml, String> {
        let refuse = || format!("expected {}, got {}", self.allowed(), shown(value));
        match self {
            Kind::Listen => {
                let text = value.as_str().ok_or_else(refuse)?;
                parse_listen(text).map_err(|_| refuse())?;
                Ok(Toml::String(text.to_string()))
            }
            Kind::LogLevel => {
                let text = value.as_str().map(|s| s.trim().to_ascii_lowercase()).ok_or_else(refuse)?;
                LogLevel::parse(&text).ok_or_else(refuse)?;
                Ok(Toml::String(text))
            }
            Kind::Durability => {
                let text = value.as_str().map(|s| s.trim().to_ascii_lowercase()).ok_or_else(refuse)?;
                Durability::parse(&text).ok_or_else(refuse)?;
                Ok(Toml::String(text))
            }
            Kind::Whole { min, max } => {
                // A number past the largest allowed is refused naming the whole range: ">= 0"
                // alone reads as if 4294967296 were fine.
                let too_large = || format!("expected a whole number from {min} to {max}, got {}", shown(value));
                let fraction = || format!("expected {} (not a fraction), got {}", self.allowed(), shown(value));
                let n: i128 = match value {
                    Toml::Integer(i) => i128::from(*i),
                    Toml::Float(f) if f.is_finite() && f.fract() != 0.0 => return Err(fraction()),
                    Toml::Float(f) if f.fract() == 0.0 && f.abs() < 1e18 => *f as i128,
                    Toml::Float(f) if *f > max as f64 => return Err(too_large()),
                    // Text (`"100"`, the CLI's and the environment's) and a JSON number as
                    // sent (`100.0`, `1e2`) are read alike: any exact whole number.
                    _ => match value.as_str().or_else(|| sent_number(value)).map(whole_of) {
                        Some(Whole::Is(n)) => n,
                        Some(Whole::Fraction) => return Err(fraction()),
                        Some(Whole::TooLarge) => return Err(too_large()),
                        Some(Whole::Not) | None => return Err(refuse()),
                    },
                };
                if n > i128::from(max) {
                    return Err(too_large());
                }
                if n < i128::from(min) {
                    return Err(refuse());
                }
                Ok(Toml::Integer(n as i64))
            }
            Kind::Positive { max } => {
                let d = decimal_of(value).ok_or_else(refuse)?;
                if d <= Decimal::ZERO || max.is_some_and(|m| d > Decimal::from(m)) {
                    return Err(refuse());
                }
                Ok(Toml::String(d.to_string()))
            }
            Kind::Bool => match value {
                Toml::Boolean(b) => Ok(Toml::Boolean(*b)),
                // As the strings "1" and "0" are: `config set risk.allow_short 1` sends a number.
                Toml::Integer(n @ (0 | 1)) => Ok(Toml::Boolean(*n == 1)),
                Toml::String(s) => crate::api::switch::parse(s).map(Toml::Boolean).ok_or_else(refuse),
                // `1.0` as `1`: a number means what it is, however it is written.
                _ => match sent_number(value).map(whole_of) {
                    Some(Whole::Is(n @ (0 | 1))) => Ok(Toml::Boolean(n == 1)),
                    _ => Err(refuse()),
                },
            },
        }
    }
}

/// What a text says as a whole-number setting.
enum Whole {
    Is(i128),
    /// An exact number with a fraction (`100.5`).
    Fraction,
    /// A whole number past any setting's range (`1e30`, 40 digits).
    TooLarge,
    /// Not a number.
    Not,
}

/// Reads a whole number from text: digits (`"100"`, as `str::parse` takes them), or any
/// exact decimal that is whole (`"100.0"`, `"1e2"`), so that a number means the same as
/// text, as a JSON number and in a file.
fn whole_of(text: &str) -> Whole {
    let t = text.trim();
    if let Ok(n) = t.parse::<i128>() {
        return Whole::Is(n);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Whole::TooLarge;
    }
    match crate::api::decimal::parse(t) {
        // `parse` normalizes: a whole number has no digits after the point.
        Ok(d) if d.scale() == 0 => Whole::Is(d.mantissa()),
        Ok(_) => Whole::Fraction,
        // Beyond a decimal: a size it cannot hold (`1e30`) is only too large.
        Err(_) if t.parse::<f64>().is_ok_and(|f| f > 1e18) => Whole::TooLarge,
        Err(_) => Whole::Not,
    }
}

/// The text of a JSON number as its client sent it (`1e2`), which a settings body keeps
/// as a one-key table (`crate::api::decimal::SENT_NUMBER`) on its way to TOML.
fn sent_number(value: &Toml) -> Option<&str> {
    match value {
        Toml::Table(t) if t.len() == 1 => t.get(crate::api::decimal::SENT_NUMBER)?.as_str(),
        _ => None,
    }
}

/// A decimal from a TOML string, integer or float, or a JSON number as sent; a float
/// through its shortest text, so `0.1` is exactly 0.1 (as `api::decimal` does for JSON).
fn decimal_of(value: &Toml) -> Option<Decimal> {
    if let Some(text) = sent_number(value) {
        return crate::api::decimal::parse(text).ok();
    }
    match value {
        Toml::String(s) => crate::api::decimal::parse(s).ok(),
        Toml::Integer(i) => Some(Decimal::from(*i)),
        Toml::Float(f) if f.is_finite() => crate::api::decimal::parse(&format!("{f}")).ok(),
        _ => None,
    }
}

/// An unknown key as its error quotes it: whole, or by its ends and length when long
/// (`api::quote`); a long one under a section agt wrote (`notify.webhooks[0].`) shows
/// the section whole, so that the message still says where the key is.
fn shown_key(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, leaf)) if key.chars().count() > 40 && section.chars().count() <= 40 => {
            format!("{section}.{}", crate::api::quote::quoted(leaf))
        }
        _ => crate::api::quote::quoted(key),
    }
}

/// A value as the error messages quote it: text quoted, a number as it was written;
/// either by its ends and length when long (`api::quote`).
fn shown(value: &Toml) -> String {
    if let Some(number) = sent_number(value) {
        return crate::api::quote::bare(number);
    }
    match value {
        Toml::String(s) => crate::api::quote::quoted(s),
        Toml::Integer(i) => i.to_string(),
        Toml::Float(f) => f.to_string(),
        Toml::Boolean(b) => b.to_string(),
        Toml::Datetime(d) => format!("the date {d}"),
        Toml::Array(_) => "a list".into(),
        Toml::Table(_) => "a table".into(),
    }
}

/// What kind of value `value` is, without the value: what an error says of a secret.
fn kind(value: &Toml) -> &'static str {
    if sent_number(value).is_some() {
        return "a number";
    }
    match value {
        Toml::String(_) => "a string",
        Toml::Integer(_) | Toml::Float(_) => "a number",
        Toml::Boolean(_) => "a boolean",
        Toml::Datetime(_) => "a date",
        Toml::Array(_) => "a list",
        Toml::Table(_) => "a table",
    }
}

/// Parses `http.listen` (or `--http`): `None` for `""` (TCP off), else the address to bind.
/// Takes an IP address or `localhost` with a port.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    if let Some(port) = text.strip_prefix("localhost:").and_then(|p| p.parse::<u16>().ok()) {
        return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    Err(format!("expected {}, got {}", Kind::Listen.allowed(), crate::api::quote::quoted(text)))
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

/// What [`Settings::persist`] wrote, and over what.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The file's text the change was merged into (`None`: there was no file).
    pub base: Option<String>,
    /// The text now in the file.
    pub text: String,
    /// The written file's stamp (`None` if it could not be taken).
    pub stamp: Option<super::watch::Stamp>,
    /// The file written (a symlink's target).
    pub path: PathBuf,
    /// Where the file it replaced is kept, asked for by [`Settings::persist_keeping`]
    /// (`None`: not asked for); where there was no file, the marker that says so
    /// ([`Former::none`]).
    pub former: Option<PathBuf>,
}

impl Saved {
    /// Puts the file back as it was before this write: the kept former file renamed over
    /// it (the same inode, text and times), or the file removed where there was none.
    /// Only for a write made with `keep_former`.
    pub fn put_back(&self) -> std::io::Result<()> {
        match (&self.former, &self.base) {
            (Some(former), Some(_)) => std::fs::rename(former, &self.path),
            (Some(marker), None) => std::fs::remove_file(&self.path).and_then(|()| std::fs::remove_file(marker)),
            (None, None) => std::fs::remove_file(&self.path),
            (None, Some(_)) => Err(std::io::Error::other("the file it replaced was not kept")),
        }
    }

    /// Drops the kept former file once the change is recorded.
    pub fn forget_former(&self) {
        if let Some(former) = &self.former {
            let _ = std::fs::remove_file(former);
        }
    }
}

/// What [`Settings::persist_keeping`] leaves beside the file it replaces until the
/// change is recorded: the config service's start reads them to undo a set a crash cut
/// off before its record (`config::cut_off`).
pub struct Former {
    /// The replaced file, kept as a hard link (`.agt.toml.before-set`).
    pub link: PathBuf,
    /// An empty file saying there was no file to replace (`.agt.toml.before-set-none`):
    /// putting back is then removing the new one.
    pub none: PathBuf,
}

impl Former {
    /// Beside `path` (a symlink's target), hidden.
    pub fn of(path: &Path) -> Former {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "agt.toml".into());
        Former { link: path.with_file_name(format!(".{name}.before-set")), none: path.with_file_name(format!(".{name}.before-set-none")) }
    }
}

/// Variables that start like a setting's (`AGT_RISK_…`) but name none, such as the typo
/// `AGT_RISK_MAX_OPEN_ORDRS`: ignored, they would leave the default in force unnoticed,
/// so start-up refuses them as it refuses an unknown key in `agt.toml`. Names outside the
/// sections (`AGT_HOME`, `AGT_URL`, …) and the tuning knobs (`AGT_NOTIFY_*`, the HTTP body's
/// deadline) are not settings.
pub fn check_env_names(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    const NOT_SETTINGS: &[&str] =
        &["AGT_HTTP_ADDR", "AGT_HTTP_BODY_TIMEOUT_MS", "AGT_NOTIFY_BACKOFF_MS", "AGT_NOTIFY_MAX_ATTEMPTS", "AGT_NOTIFY_TIMEOUT_MS"];
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

// ---------------------------------------------------------------- normalizing

fn unknown(origin: &str, key: &str, known: &[String]) -> ConfigError {
    let near = known
        .iter()
        .map(|k| {
            // Entry fields are listed bare (`tick`), so compare the last part of the key too.
            let leaf = key.rsplit('.').next().unwrap_or(key);
            (edit_distance(key, k).min(edit_distance(leaf, k)), k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean {k:?}? "))
        .unwrap_or_default();
    ConfigError::UnknownKey { origin: origin.to_string(), key: key.to_string(), hint: format!("{near}known keys: {}", known.join(", ")) }
}

/// The known keys to list when `key` is unknown: its section's if it names one, else all.
fn known_near(key: &str) -> Vec<String> {
    let section = key.split('.').next().unwrap_or_default();
    let all = Settings::known_keys();
    let in_section: Vec<String> =
        all.iter().filter(|k| k.split('.').next() == Some(section) && k.contains('.')).map(|k| k.to_string()).collect();
    if key.contains('.') && !in_section.is_empty() {
        in_section
    } else {
        all.iter().map(|k| k.to_string()).collect()
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + usize::from(ca != *cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn section<'a>(origin: &str, name: &str, value: &'a Toml) -> Result<&'a toml::Table, ConfigError> {
    value.as_table().ok_or_else(|| {
        ConfigError::invalid(origin, name, format!("expected a table ([{name}] with its keys below it), got {}", shown(value)))
    })
}

/// Checks one file's table: known keys only, every value in canonical form.
fn normalize_layer(origin: &str, table: &toml::Table) -> Result<toml::Table, ConfigError> {
    let mut out = toml::Table::new();
    for (name, value) in table {
        if name == SYMBOLS {
            out.insert(name.clone(), normalize_list(origin, SYMBOLS, value)?);
        } else if let Some(key) = find_key(name) {
            let v = key.kind.normalize(value).map_err(|m| ConfigError::invalid(origin, name.as_str(), m))?;
            out.insert(name.clone(), v);
        } else if is_section(name) {
            for (leaf, v) in section(origin, name, value)? {
                let dotted = format!("{name}.{leaf}");
                let v = if dotted == WEBHOOKS {
                    normalize_list(origin, WEBHOOKS, v)?
                } else {
                    let key = find_key(&dotted).ok_or_else(|| unknown(origin, &dotted, &known_near(&dotted)))?;
                    key.kind.normalize(v).map_err(|m| ConfigError::invalid(origin, dotted.as_str(), m))?
                };
                insert_dotted(&mut out, &dotted, v);
            }
        } else {
            return Err(unknown(origin, name, &known_near(name)));
        }
    }
    Ok(out)
}

/// Checks a value given to `set`/`persist` for `key`.
fn normalize_json(key: &str, value: &Json) -> Result<Toml, ConfigError> {
    let toml = json_to_toml(value);
    if key == SYMBOLS || key == WEBHOOKS {
        // One entry or a list of them.
        let list = match toml {
            Some(t @ Toml::Table(_)) => Toml::Array(vec![t]),
            Some(t) => t,
            None => return Err(ConfigError::invalid("", key, "expected a list of entries, got null")),
        };
        return normalize_list("", key, &list);
    }
    let Some(k) = find_key(key) else {
        return Err(unknown("", key, &known_near(key)));
    };
    let Some(toml) = toml else {
        return Err(ConfigError::invalid("", key, format!("expected {}, got null", k.kind.allowed())));
    };
    k.kind.normalize(&toml).map_err(|m| ConfigError::invalid("", key, m))
}

/// JSON as TOML; `null` is absent (a `null` field of an object is left out).
fn json_to_toml(value: &Json) -> Option<Toml> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(b) => Toml::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Toml::Integer(i),
            None => Toml::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Toml::String(s.clone()),
        Json::Array(items) => Toml::Array(items.iter().filter_map(json_to_toml).collect()),
        Json::Object(map) => Toml::Table(map.iter().filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?))).collect()),
    })
}

/// Checks a `[[symbols]]` or `[[notify.webhooks]]` list.
fn normalize_list(origin: &str, key: &str, value: &Toml) -> Result<Toml, ConfigError> {
    let Toml::Array(items) = value else {
        let example = if key == SYMBOLS { "[[symbols]] entries" } else { "[[notify.webhooks]] entries" };
        return Err(ConfigError::invalid(origin, key, format!("expected a list of {example}, got {}", shown(value))));
    };
    let mut out: Vec<Toml> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let entry = if key == SYMBOLS { normalize_symbol(origin, i, item)? } else { normalize_webhook(origin, i, item)? };
        let (id, name) = if key == SYMBOLS { ("symbol", "symbols") } else { ("url", "notify.webhooks") };
        if out.iter().any(|e| e.get(id) == entry.get(id)) {
            let shown_id = entry.get(id).map(shown).unwrap_or_default();
            return Err(ConfigError::invalid(origin, format!("{name}[{i}].{id}"), format!("{shown_id} is listed twice")));
        }
        out.push(entry);
    }
    Ok(Toml::Array(out))
}

fn entry_table<'a>(origin: &str, key: &str, fields: &[&str], item: &'a Toml) -> Result<&'a toml::Table, ConfigError> {
    let table = item
        .as_table()
        .filter(|_| sent_number(item).is_none())
        .ok_or_else(|| ConfigError::invalid(origin, key, format!("expected a table with {}, got {}", fields.join(", "), shown(item))))?;
    if let Some(extra) = table.keys().find(|k| !fields.contains(&k.as_str())) {
        let known: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        return Err(unknown(origin, &format!("{key}.{extra}"), &known));
    }
    Ok(table)
}

fn normalize_symbol(origin: &str, index: usize, item: &Toml) -> Result<Toml, ConfigError> {
    let at = format!("symbols[{index}]");
    let table = entry_table(origin, &at, SYMBOL_FIELDS, item)?;
    let symbol = match table.get("symbol") {
        Some(Toml::String(s)) if crate::api::valid_name(s) => s.clone(),
        Some(v) => {
            return Err(ConfigError::invalid(
                origin,
                format!("{at}.symbol"),
                format!("expected {} such as \"BTC-USD\", got {}", crate::api::NAME_RULE, shown(v)),
            ))
        }
        None => return Err(ConfigError::invalid(origin, format!("{at}.symbol"), "missing: every [[symbols]] entry needs a symbol")),
    };
    let at = format!("symbols.{symbol}");
    let decimal = |field: &str, default: Option<Decimal>| -> Result<Decimal, ConfigError> {
        let key = format!("{at}.{field}");
        match table.get(field) {
            None => default.ok_or_else(|| ConfigError::invalid(origin, &key, "missing: expected a decimal number > 0 such as \"0.01\"")),
            Some(v) => match decimal_of(v) {
                Some(d) if d > Decimal::ZERO => Ok(d),
                _ => Err(ConfigError::invalid(origin, &key, format!("expected a decimal number > 0 such as \"0.01\", got {}", shown(v)))),
            },
        }
    };
    let optional = |field: &str| table.get(field).map(|_| decimal(field, None)).transpose();
    let new = crate::api::NewInstrument {
        symbol,
        tick: decimal("tick", None)?,
        lot: decimal("lot", None)?,
        min_quantity: optional("min_quantity")?,
        max_quantity: optional("max_quantity")?,
    };
    // The market's own check, so that an entry here is one `agt symbol add` would take
    // (a minimum off the lot, a symbol that trades USD against itself): start-up would
    // otherwise skip it with only a warning in the log.
    let i = crate::services::market::validate_instrument(new).map_err(|e| ConfigError::invalid(origin, &at, e.message))?;
    let mut out = toml::Table::new();
    out.insert("symbol".into(), Toml::String(i.symbol));
    for (field, d) in [("tick", i.tick), ("lot", i.lot), ("min_quantity", i.min_quantity), ("max_quantity", i.max_quantity)] {
        out.insert(field.into(), Toml::String(d.to_string()));
    }
    Ok(Toml::Table(out))
}

fn normalize_webhook(origin: &str, index: usize, item: &Toml) -> Result<Toml, ConfigError> {
    let at = format!("notify.webhooks[{index}]");
    let table = entry_table(origin, &at, WEBHOOK_FIELDS, item)?;
    // Notify's own check, so that what is accepted here is what start-up and the sender
    // accept (a URL with credentials, a bad port or a stray character is refused).
    let url = match table.get("url") {
        Some(Toml::String(u)) => match crate::services::notify::parse_url(u) {
            Ok(_) => u.clone(),
            Err(e) => return Err(ConfigError::invalid(origin, format!("{at}.url"), e)),
        },
        Some(v) => return Err(ConfigError::invalid(
            origin,
            format!("{at}.url"),
            format!(
                "expected an http:// URL such as \"http://example.com/hook\" (https is not supported: put a TLS proxy in front of the receiver), got {}",
                shown(v)
            ),
        )),
        None => {
            return Err(ConfigError::invalid(
                origin,
                format!("{at}.url"),
                "missing: every webhook needs a url",
            ))
        }
    };
    let allowed = || format!("\"*\" or event types from: {}", EVENT_TYPES.join(", "));
    let events = match table.get("events") {
        None => vec![Toml::String("*".into())],
        Some(Toml::Array(items)) if !items.is_empty() => {
            let mut events: Vec<Toml> = Vec::new();
            for e in items {
                match e.as_str() {
                    // Each type once, as a run-time rule keeps them.
                    Some(name) if events.contains(&Toml::String(name.into())) => {}
                    Some(name) if name == "*" || EVENT_TYPES.contains(&name) => events.push(Toml::String(name.into())),
                    _ => {
                        return Err(ConfigError::invalid(
                            origin,
                            format!("{at}.events"),
                            format!("expected a list of {}, got {}", allowed(), shown(e)),
                        ))
                    }
                }
            }
            events
        }
        Some(v) => {
            return Err(ConfigError::invalid(
                origin,
                format!("{at}.events"),
                format!("expected a non-empty list of {}, got {}", allowed(), shown(v)),
            ))
        }
    };
    let mut out = toml::Table::new();
    out.insert("url".into(), Toml::String(url));
    out.insert("events".into(), Toml::Array(events));
    match table.get("secret") {
        None => {}
        Some(Toml::String(s)) if s.is_empty() => {}
        // From the file (a set's `***` was replaced by the kept secret before this), it is
        // `config get`'s output pasted back: signing with it would sign with a key the
        // receiver does not have.
        Some(Toml::String(s)) if s == MASKED_SECRET && !origin.is_empty() => {
            return Err(ConfigError::invalid(
                origin,
                format!("{at}.secret"),
                format!("\"{MASKED_SECRET}\" is the masked value `config get` shows, not a secret: write the webhook's real secret, or leave secret out to send unsigned"),
            ))
        }
        Some(Toml::String(s)) => {
            crate::services::notify::check_secret(s).map_err(|e| ConfigError::invalid(origin, format!("{at}.secret"), e))?;
            out.insert("secret".into(), Toml::String(s.clone()));
        }
        // Its kind only: a secret written as a number is a secret all the same.
        Some(v) => return Err(ConfigError::invalid(origin, format!("{at}.secret"), format!("expected a string, got {}", kind(v)))),
    }
    Ok(Toml::Table(out))
}

// ---------------------------------------------------------------- editing the home file

fn edit_value(value: &Toml) -> toml_edit::Value {
    match value {
        Toml::String(s) => s.as_str().into(),
        Toml::Integer(i) => (*i).into(),
        Toml::Float(f) => (*f).into(),
        Toml::Boolean(b) => (*b).into(),
        Toml::Array(items) => toml_edit::Value::Array(items.iter().map(edit_value).collect()),
        Toml::Datetime(d) => toml_edit::Value::from(*d),
        Toml::Table(t) => {
            let mut inline = toml_edit::InlineTable::new();
            for (k, v) in t {
                inline.insert(k, edit_value(v));
            }
            toml_edit::Value::InlineTable(inline)
        }
    }
}

/// Sets `leaf` in a table, keeping the comment that follows the old value on its line.
fn put(table: &mut dyn toml_edit::TableLike, leaf: &str, value: &Toml) {
    let mut new = edit_value(value);
    match table.get_mut(leaf) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *new.decor_mut() = old.decor().clone();
            }
            *item = toml_edit::Item::Value(new);
        }
        None => {
            table.insert(leaf, toml_edit::Item::Value(new));
        }
    }
}

/// Writes one normalized key into the operator's document.
fn edit(doc: &mut toml_edit::DocumentMut, origin: &str, key: &str, value: Toml) -> Result<(), ConfigError> {
    let root = doc.as_table_mut();
    let (parent, leaf): (&mut dyn toml_edit::TableLike, &str) = match key.split_once('.') {
        None => (root, key),
        Some((section, leaf)) => {
            let item = root.entry(section).or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                // `[notify]` need not appear when only `[[notify.webhooks]]` is written.
                t.set_implicit(section == "notify");
                t.decor_mut().set_prefix("\n");
                toml_edit::Item::Table(t)
            });
            let table = item
                .as_table_like_mut()
                .ok_or_else(|| ConfigError::invalid(origin, section, format!("expected a table ([{section}] with its keys below it)")))?;
            (table, leaf)
        }
    };
    match (key, value) {
        (SYMBOLS, Toml::Array(entries)) => edit_entries(parent, origin, key, leaf, "symbol", entries),
        (WEBHOOKS, Toml::Array(entries)) => edit_entries(parent, origin, key, leaf, "url", entries),
        (_, value) => {
            put(parent, leaf, &value);
            Ok(())
        }
    }
}

/// Adds list entries to `[[symbols]]` or `[[notify.webhooks]]`, replacing the fields of an
/// entry with the same id in place (so comments around it stay). The webhooks given are
/// the whole list: the file's others are removed.
fn edit_entries(
    parent: &mut dyn toml_edit::TableLike,
    origin: &str,
    key: &str,
    leaf: &str,
    id: &str,
    entries: Vec<Toml>,
) -> Result<(), ConfigError> {
    let item = parent.entry(leaf).or_insert(toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    if item.is_none() {
        *item = toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new());
    }
    // `symbols = [...]` written inline: turn it into [[symbols]] tables, which can be edited
    // in place (comments inside an inline array would not survive the rewrite anyway).
    if let Some(array) = item.as_array() {
        let mut aot = toml_edit::ArrayOfTables::new();
        for v in array.iter() {
            let Some(inline) = v.as_inline_table() else {
                return Err(ConfigError::invalid(origin, key, "expected a list of tables"));
            };
            aot.push(inline.clone().into_table());
        }
        *item = toml_edit::Item::ArrayOfTables(aot);
    }
    let Some(aot) = item.as_array_of_tables_mut() else {
        return Err(ConfigError::invalid(origin, key, "expected a list of tables"));
    };
    let given: Vec<String> = entries.iter().filter_map(|e| e.get(id).and_then(Toml::as_str)).map(String::from).collect();
    if key == WEBHOOKS {
        aot.retain(|t| t.get(id).and_then(|i| i.as_str()).is_some_and(|u| given.iter().any(|g| g == u)));
    }
    for (i, entry) in entries.into_iter().enumerate() {
        let Toml::Table(mut fields) = entry else {
            continue;
        };
        let wanted = fields.get(id).and_then(Toml::as_str).unwrap_or_default().to_string();
        let existing = aot.iter_mut().find(|t| t.get(id).and_then(|i| i.as_str()) == Some(wanted.as_str()));
        let table = match existing {
            Some(t) => t,
            None => {
                aot.push(toml_edit::Table::new());
                aot.iter_mut().last().expect("just pushed")
            }
        };
        if fields.get("secret").and_then(Toml::as_str) == Some(MASKED_SECRET) {
            match table.get("secret").and_then(|s| s.as_str()) {
                Some(current) => fields.insert("secret".into(), Toml::String(current.to_string())),
                None => return Err(masked_secret_without_one(i, &wanted)),
            };
        }
        let stale: Vec<String> = table.iter().map(|(k, _)| k.to_string()).filter(|k| !fields.contains_key(k)).collect();
        for k in stale {
            table.remove(&k);
        }
        // In the order the docs list them, not alphabetically.
        let order = if id == "symbol" { SYMBOL_FIELDS } else { WEBHOOK_FIELDS };
        for k in order {
            if let Some(v) = fields.get(*k) {
                put(table, k, v);
            }
        }
    }
    Ok(())
}

/// The error for a webhook given the masked secret where there is none to keep.
fn masked_secret_without_one(index: usize, url: &str) -> ConfigError {
    ConfigError::invalid(
        "",
        format!("notify.webhooks[{index}].secret"),
        format!(
            "\"{MASKED_SECRET}\" is the masked value `config get` shows, and the webhook {} has no secret to keep \
             (a new or changed url starts without one): give the secret again, or leave secret out to send unsigned",
            crate::api::quote::quoted(&crate::services::notify::shown_url(url))
        ),
    )
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Replaces `path` with `text` through a temp file and a rename, so that readers see the
/// old file or the new one, never half; if `unchanged()` still holds just before the
/// rename, else it leaves `path` alone and answers `None`. A new file is `0600`; an
/// existing one keeps its mode, less what group and others had if `private`. Answers the
/// written file's stamp, taken before the rename, which keeps it: taken after, it could
/// be an edit's that came just after, which would then never be applied.
fn write_atomically(
    path: &Path,
    text: &str,
    private: bool,
    unchanged: &dyn Fn() -> bool,
    former: Option<&Former>,
) -> std::io::Result<Option<Option<super::watch::Stamp>>> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "agt.toml".into());
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    // Webhook secrets may live here: new files are the owner's alone; old ones keep their mode.
    let old = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
    let mode = if private { old & !0o077 } else { old };
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        let stamp = super::watch::stamp_of(&file);
        if !unchanged() {
            return Ok(None);
        }
        if let Some(former) = former {
            // Left by a write that was never put back nor forgotten (a crash the start
            // did not settle: it runs before any set, so this is only a precaution).
            let _ = std::fs::remove_file(&former.link);
            let _ = std::fs::remove_file(&former.none);
            match std::fs::hard_link(path, &former.link) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Created, not linked: an empty file costs an inode, no block.
                    std::fs::File::create(&former.none)?;
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            // On disk before the rename: a power cut must not keep the new file and lose
            // what undoes it.
            std::fs::File::open(&dir)?.sync_all()?;
            super::fault::at(super::fault::Step::Linked);
        }
        std::fs::rename(&temp, path)?;
        Ok(Some(stamp))
    })();
    let stamp = match result {
        Ok(Some(stamp)) => stamp,
        other => {
            let _ = std::fs::remove_file(&temp);
            return other;
        }
    };
    if mode != old {
        tracing::warn!(
            file = %path.display(),
            "the config file now holds a webhook secret and others could read it: its mode is now {mode:o} (was {old:o})"
        );
    }
    // The rename is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Some(stamp))
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

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
