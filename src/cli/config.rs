//! `agt config show | get KEY | set KEY VALUE`: the live configuration.
//!
//! Keys are dotted (`risk.max_open_orders`). `get` reads the whole configuration and
//! walks the key locally; `set` sends `{"KEY": VALUE}` with the dotted key as one flat
//! JSON key, and the daemon validates, persists and applies it.

use super::output::{cell, flatten};
use super::{json_text, one_key_body, CliError, CliResult, Ctx};
use crate::services::config::settings::Settings;
use clap::Subcommand;
use serde_json::{Map, Value};

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Every key with its current value
    Show,
    /// One key's value, e.g. `agt config get risk.max_open_orders`
    Get {
        /// A dotted key (`agt config show` lists them); a list's items by index, e.g.
        /// notify.webhooks.0.url
        key: String,
    },
    /// Change a key; the daemon validates it, writes it to agt.toml and applies it live
    /// where it can
    #[command(allow_negative_numbers = true)]
    Set {
        /// A dotted key, as `agt config show` lists them
        key: String,
        /// A number, true/false or a JSON array/object (sent as JSON), anything else as a string
        value: String,
    },
}

pub fn run(ctx: &Ctx, cmd: ConfigCmd) -> CliResult {
    match cmd {
        ConfigCmd::Show => {
            let v = ctx.get("/api/config")?;
            let pending = pending(ctx);
            ctx.show(&v, |v| {
                let mut pairs = Vec::new();
                flatten("", v, &mut pairs);
                pairs.iter().map(|(k, v)| format!("{k} = {}{}", shown_cell(k, v), running_note(&pending, k))).collect::<Vec<_>>().join("\n")
            })
        }
        ConfigCmd::Get { key } => {
            super::named(&key, "KEY", "a dotted key (`agt config show` lists them)")?;
            let v = ctx.get("/api/config")?;
            let found = lookup(&v, &key).ok_or_else(|| {
                CliError::failed("unknown_key", format!("no config key {}; `agt config show` lists them", crate::api::quote::quoted(&key)))
            })?;
            let pending = if Settings::is_hot(&key) { Map::new() } else { pending(ctx) };
            ctx.show(&found, |f| match f {
                Value::Object(_) => show(&key, f),
                Value::Array(_) => serde_json::to_string_pretty(f).unwrap_or_default(),
                other => format!("{}{}", shown(&key, other), running_note(&pending, &key)),
            })
        }
        ConfigCmd::Set { key, value } => {
            // VALUE may be empty: `http.listen ""` turns TCP off.
            super::named(&key, "KEY", "a dotted key (`agt config show` lists them)")?;
            let v = ctx.put_text("/api/config", one_key_body(&key, &json_text(&value)))?;
            // A key the running daemon cannot apply live is saved for its next start; say
            // so, or the user takes the echo for a change in effect. Not when the daemon
            // runs with that value already (set back to it): nothing waits for a start.
            let waits = !Settings::is_hot(&key)
                && Settings::known_keys().contains(&key.as_str())
                && (key == "symbols" || pending(ctx).contains_key(&key));
            let later = if waits {
                "\n(saved in agt.toml; it takes effect when the daemon next starts: `agt daemon stop && agt daemon start`)"
            } else {
                ""
            };
            ctx.show(&v, |v| match lookup(v, &key) {
                Some(now) => format!("{key} = {}{later}", shown(&key, &now)),
                None => format!("{key} set{later}"),
            })
        }
    }
}

/// The keys saved with a value the running daemon gets only at its next start
/// (`GET /api/config/pending`); none from a daemon too old to say.
fn pending(ctx: &Ctx) -> Map<String, Value> {
    match ctx.get("/api/config/pending") {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `  (running: normal until the daemon restarts)` after a key that waits for a restart.
fn running_note(pending: &Map<String, Value>, key: &str) -> String {
    if key == "symbols" {
        // A new entry waits for the next start; one with other terms than its instrument
        // never applies: the daemon lists which.
        return match pending.get(key) {
            Some(_) => "  (saved; some entries are not traded as written: `GET /api/config/pending` says which)".into(),
            None => String::new(),
        };
    }
    match pending.get(key).and_then(|p| p.get("running")) {
        Some(running) => format!("  (saved; the daemon runs with {} until it restarts)", inline(key, &cell(running))),
        None => String::new(),
    }
}

/// A value as people read it: an empty text as `""` (a blank after `=` reads as a value
/// missing), and an empty `http.listen` with what it means, as `config/agt.toml` says it.
/// JSON output keeps the value as it is.
fn shown(key: &str, v: &Value) -> String {
    shown_cell(key, &cell(v))
}

/// [`shown`] for a value already made a cell (a string is its text as it is).
fn shown_cell(key: &str, cell: &str) -> String {
    match (key, cell) {
        ("http.listen", "") => "\"\"  (TCP off: the API is served on the Unix socket only)".into(),
        (_, "") => "\"\"".into(),
        (_, text) => text.to_string(),
    }
}

/// [`shown`] inside a note: the meaning in the same parentheses.
fn inline(key: &str, cell: &str) -> String {
    match (key, cell) {
        ("http.listen", "") => "\"\" (TCP off)".into(),
        (_, "") => "\"\"".into(),
        (_, text) => text.to_string(),
    }
}

/// `key = value` lines, one per leaf of the section `section`, sorted as the daemon sent
/// them.
fn show(section: &str, v: &Value) -> String {
    let mut pairs = Vec::new();
    flatten("", v, &mut pairs);
    pairs.iter().map(|(k, v)| format!("{k} = {}", shown_cell(&format!("{section}.{k}"), v))).collect::<Vec<_>>().join("\n")
}

/// The value at a dotted key: a flat key as sent, else a walk through nested objects
/// (trying the longest key at each level, so `a.b` may itself be a key), also inside a
/// `{"config": …}` wrapper.
pub fn lookup(v: &Value, key: &str) -> Option<Value> {
    if let Some(found) = walk(v, key) {
        return Some(found.clone());
    }
    ["config", "effective", "values"].iter().find_map(|w| v.get(*w).and_then(|inner| walk(inner, key)).cloned())
}

/// The value at a dotted key; a list's items are named by their index
/// (`notify.webhooks.0.url`), as `config set` names them.
fn walk<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    if let Value::Array(items) = v {
        let (index, rest) = key.split_once('.').map_or((key, None), |(i, rest)| (i, Some(rest)));
        let item = items.get(index.parse::<usize>().ok()?)?;
        return match rest {
            None => Some(item),
            Some(rest) => walk(item, rest),
        };
    }
    let obj = v.as_object()?;
    if let Some(found) = obj.get(key) {
        return Some(found);
    }
    // Split at each dot, left to right: `a.b.c` tries `a` → `b.c`, then `a.b` → `c`.
    for (i, _) in key.match_indices('.') {
        if let Some(inner) = obj.get(&key[..i]) {
            if let Some(found) = walk(inner, &key[i + 1..]) {
                return Some(found);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An empty `http.listen` says that TCP is off, not a blank; other values as they are.
    #[test]
    fn an_empty_listen_address_reads_as_tcp_off() {
        assert_eq!(shown("http.listen", &json!("")), "\"\"  (TCP off: the API is served on the Unix socket only)");
        assert_eq!(shown("http.listen", &json!("127.0.0.1:8000")), "127.0.0.1:8000");
        assert_eq!(shown("log.level", &json!("info")), "info");
        assert_eq!(show("http", &json!({"listen": ""})), "listen = \"\"  (TCP off: the API is served on the Unix socket only)");
        let pending: Map<String, Value> = serde_json::from_value(json!({"http.listen": {"saved": "127.0.0.1:1", "running": ""}})).unwrap();
        assert_eq!(running_note(&pending, "http.listen"), "  (saved; the daemon runs with \"\" (TCP off) until it restarts)");
    }

    #[test]
    fn looks_up_dotted_keys() {
        let c = json!({"risk": {"max_open_orders": 100}, "http.listen": "x", "durability": "normal"});
        assert_eq!(lookup(&c, "risk.max_open_orders"), Some(json!(100)));
        assert_eq!(lookup(&c, "http.listen"), Some(json!("x")));
        assert_eq!(lookup(&c, "durability"), Some(json!("normal")));
        assert_eq!(lookup(&c, "risk.nope"), None);
        assert_eq!(lookup(&json!({"config": {"log": {"level": "info"}}}), "log.level"), Some(json!("info")));
        let hooks = json!({"notify": {"webhooks": [{"url": "http://a/", "events": ["TRADE_EXECUTED"]}]}});
        assert_eq!(lookup(&hooks, "notify.webhooks.0.url"), Some(json!("http://a/")), "a list item by its index");
        assert_eq!(lookup(&hooks, "notify.webhooks.0.events.0"), Some(json!("TRADE_EXECUTED")));
        assert_eq!(lookup(&hooks, "notify.webhooks.0"), Some(json!({"url": "http://a/", "events": ["TRADE_EXECUTED"]})));
        assert_eq!(lookup(&hooks, "notify.webhooks.1.url"), None, "past the end");
        assert_eq!(lookup(&hooks, "notify.webhooks.x"), None);
    }
}
