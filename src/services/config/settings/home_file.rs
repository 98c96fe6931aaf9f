//! Saving a change into the operator's `agt.toml`: the change merged into the file's
//! own text (its comments and layout kept), written atomically, and what it replaced
//! kept until the change is recorded ([`Saved`], [`Former`]).

use super::*;

/// What [`Settings::persist`] wrote, and over what.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The file's text the change was merged into (`None`: there was no file).
    pub base: Option<String>,
    /// The text now in the file.
    pub text: String,
    /// The written file's stamp (`None` if it could not be taken).
    pub stamp: Option<crate::services::config::watch::Stamp>,
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

pub(super) fn edit_value(value: &Toml) -> toml_edit::Value {
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
pub(super) fn put(table: &mut dyn toml_edit::TableLike, leaf: &str, value: &Toml) {
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
pub(super) fn edit(doc: &mut toml_edit::DocumentMut, origin: &str, key: &str, value: Toml) -> Result<(), ConfigError> {
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
pub(super) fn edit_entries(
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
pub(super) fn masked_secret_without_one(index: usize, url: &str) -> ConfigError {
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

pub(super) static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Replaces `path` with `text` through a temp file and a rename, so that readers see the
/// old file or the new one, never half; if `unchanged()` still holds just before the
/// rename, else it leaves `path` alone and answers `None`. A new file is `0600`; an
/// existing one keeps its mode, less what group and others had if `private`. Answers the
/// written file's stamp, taken before the rename, which keeps it: taken after, it could
/// be an edit's that came just after, which would then never be applied.
pub(super) fn write_atomically(
    path: &Path,
    text: &str,
    private: bool,
    unchanged: &dyn Fn() -> bool,
    former: Option<&Former>,
) -> std::io::Result<Option<Option<crate::services::config::watch::Stamp>>> {
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
        let stamp = crate::services::config::watch::stamp_of(&file);
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
            crate::services::config::fault::at(crate::services::config::fault::Step::Linked);
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
