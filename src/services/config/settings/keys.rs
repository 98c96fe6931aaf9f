//! Every single-value key, described once ([`KEYS`]): its dotted name, what it allows
//! and whether it is hot. Loading a file, reading the environment, `set` and `persist`
//! all validate through this one description.

use super::*;

/// What a single-value key allows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
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

pub(super) struct Key {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    /// Applied to running services without a restart.
    pub(super) hot: bool,
}

pub(super) const U32: u64 = u32::MAX as u64;

/// Every single-value key. The lists (`symbols`, `notify.webhooks`) are handled apart.
pub(super) const KEYS: &[Key] = &[
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

pub(super) const SYMBOLS: &str = "symbols";
pub(super) const WEBHOOKS: &str = "notify.webhooks";
pub(super) const SYMBOL_FIELDS: &[&str] = &["symbol", "tick", "lot", "min_quantity", "max_quantity"];
pub(super) const WEBHOOK_FIELDS: &[&str] = &["url", "events", "secret"];

pub(super) fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

pub(super) fn is_section(name: &str) -> bool {
    name == "notify" || KEYS.iter().any(|k| k.name.split_once('.').is_some_and(|(s, _)| s == name))
}

impl Kind {
    /// What the key allows, as the error messages say it.
    pub(super) fn allowed(self) -> String {
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
    pub(super) fn normalize(self, value: &Toml) -> Result<Toml, String> {
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
pub(super) enum Whole {
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
pub(super) fn whole_of(text: &str) -> Whole {
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
pub(super) fn sent_number(value: &Toml) -> Option<&str> {
    match value {
        Toml::Table(t) if t.len() == 1 => t.get(crate::api::decimal::SENT_NUMBER)?.as_str(),
        _ => None,
    }
}

/// A decimal from a TOML string, integer or float, or a JSON number as sent; a float
/// through its shortest text, so `0.1` is exactly 0.1 (as `api::decimal` does for JSON).
pub(super) fn decimal_of(value: &Toml) -> Option<Decimal> {
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
pub(super) fn shown_key(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, leaf)) if key.chars().count() > 40 && section.chars().count() <= 40 => {
            format!("{section}.{}", crate::api::quote::quoted(leaf))
        }
        _ => crate::api::quote::quoted(key),
    }
}

/// A value as the error messages quote it: text quoted, a number as it was written;
/// either by its ends and length when long (`api::quote`).
pub(super) fn shown(value: &Toml) -> String {
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
pub(super) fn kind(value: &Toml) -> &'static str {
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
