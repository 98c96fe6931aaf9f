//! Each layer normalized on its own before the merge: unknown keys refused (with the
//! nearest known ones), values brought to one canonical TOML form, symbols and webhooks
//! checked entry by entry, so that an error names the file or variable it came from.

use super::*;

pub(super) fn unknown(origin: &str, key: &str, known: &[String]) -> ConfigError {
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
pub(super) fn known_near(key: &str) -> Vec<String> {
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

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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

pub(super) fn section<'a>(origin: &str, name: &str, value: &'a Toml) -> Result<&'a toml::Table, ConfigError> {
    value.as_table().ok_or_else(|| {
        ConfigError::invalid(origin, name, format!("expected a table ([{name}] with its keys below it), got {}", shown(value)))
    })
}

/// Checks one file's table: known keys only, every value in canonical form.
pub(super) fn normalize_layer(origin: &str, table: &toml::Table) -> Result<toml::Table, ConfigError> {
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
pub(super) fn normalize_json(key: &str, value: &Json) -> Result<Toml, ConfigError> {
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
pub(super) fn json_to_toml(value: &Json) -> Option<Toml> {
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
pub(super) fn normalize_list(origin: &str, key: &str, value: &Toml) -> Result<Toml, ConfigError> {
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

pub(super) fn entry_table<'a>(origin: &str, key: &str, fields: &[&str], item: &'a Toml) -> Result<&'a toml::Table, ConfigError> {
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

pub(super) fn normalize_symbol(origin: &str, index: usize, item: &Toml) -> Result<Toml, ConfigError> {
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

pub(super) fn normalize_webhook(origin: &str, index: usize, item: &Toml) -> Result<Toml, ConfigError> {
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
