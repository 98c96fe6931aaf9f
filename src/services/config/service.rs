//! The config actor: applies `agt config set` / `PUT /api/config` and edits of `agt.toml`,
//! and keeps their history.
//!
//! A change is validated on a copy of the live settings, written into `$AGT_HOME/agt.toml`
//! (comments kept), recorded in `data/config.db`, and only then made live: a hot key takes
//! effect at once, a cold one (`http.listen`, `durability`, `symbols`) at the next start.
//! An edit of the file itself is seen within a second (its size, modification time and
//! inode, checked each [`Config::TICK`]), read until it is finished ([`super::watch`]) and
//! applied the same way, without writing it back; a file that no longer loads is reported
//! in the log and changes nothing. A `config set` that finds an edit in the file it
//! rewrites keeps it, and applies it too. A set a crash cut off between its write and
//! its record is undone when the service (or the daemon) starts again ([`super::cut_off`]).
//!
//! `[[symbols]]` entries apply only at a start, and only where the market has no such
//! instrument yet: an instrument's terms never change. So what is said about them is
//! what the market's read model (`market::Listed`) shows: an edit names the entries a
//! start will list and those it never will, and a start announces only the entries the
//! market now trades as written.

use super::settings::{Change, Settings, SymbolSettings};
use super::watch::Watch;
use super::SharedSettings;
use crate::api::ApiError;
use crate::services::actor::{stage_at_load, AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use crate::services::bus::NewEvent;
use rusqlite::{params, Connection};

pub enum Cmd {
    Show(Reply<serde_json::Value>),
    /// Sets dotted keys (all or none); answers the new configuration.
    Set(Vec<(String, serde_json::Value)>, Reply<serde_json::Value>),
}

pub struct Config {
    live: SharedSettings,
    file: std::path::PathBuf,
    /// The file as the live settings last matched it: an edit changes it.
    watch: Watch,
    /// The market's instruments (its read model): which `[[symbols]]` entries apply.
    instruments: crate::services::market::Listed,
    /// A start's change of `symbols`, announced once the market has loaded (and seeded
    /// what it could): only the entries it trades as written are announced.
    held: Option<HeldSymbols>,
    /// Fingerprints the webhook secrets in the baseline.
    key: super::fingerprint::Key,
    /// Where `key` is kept: named in the warning when it was lost.
    key_file: std::path::PathBuf,
    /// What the open batch's first `config set` changed outside `config.db`, to undo if
    /// the batch does not commit ([`Service::rolled_back`]): the set writes `agt.toml`
    /// and makes its change live before the commit that records it, and on a full disk
    /// that commit failed, the caller was told 503, and the file and the live settings
    /// kept the change anyway (and a restarted service recorded and announced it).
    undo: Option<Undo>,
}

/// The file and the live settings as they were before the batch's first `config set`.
struct Undo {
    saved: super::settings::Saved,
    settings: Settings,
    source: super::watch::Source,
    /// The command line's settings for this run: a set drops the ones it saves a value for.
    run_flags: Vec<(&'static str, serde_json::Value)>,
}

/// `symbols` as the history last recorded it and as this start read it.
struct HeldSymbols {
    change: Change,
    saved: Vec<SymbolSettings>,
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        hot INTEGER NOT NULL
    );",
    // Every key's value as the history last left it (secrets masked): what a start
    // compares the loaded configuration with (`Config::record_offline_changes`).
    "CREATE TABLE baseline (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // Beside the masked `notify.webhooks`, a keyed fingerprint of their secrets
    // (`fingerprint.rs`): without it a secret changed while stopped looked like no change.
    "ALTER TABLE baseline ADD COLUMN fingerprint TEXT;",
    // The SHA-256 of `agt.toml` as the history last agreed with it (a set's write, an
    // applied edit, a start's file): how a start tells a set a crash cut off before its
    // record from one recorded (`cut_off.rs`).
    "CREATE TABLE agreed_file (id INTEGER PRIMARY KEY CHECK (id = 1), sha256 TEXT NOT NULL);",
];

impl Service for Config {
    type Cmd = Cmd;
    const NAME: &'static str = "config";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;
    /// How often the file is looked at: an edit applies within this.
    const TICK: Option<std::time::Duration> = Some(std::time::Duration::from_secs(1));

    /// A file read as changed is read again [`super::watch::SETTLE`] later, not a tick later.
    fn tick_due(&self) -> Option<std::time::Duration> {
        self.watch.due_in()
    }

    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let file = ctx.home.config_file();
        super::fault::arm(ctx.settings.get().debug.fault_injection);
        // A set the previous incarnation was cut off in (a panic) is settled before the
        // watch takes the file; the daemon's start settled one a SIGKILL left already.
        let settled = super::cut_off::settle(&file, super::cut_off::agreed(conn).as_deref())
            .map_err(|e| ServiceError::Other(format!("cannot settle a config set cut off in {}: {e}", file.display())))?;
        settled.say(&file);
        if matches!(settled, super::cut_off::Settled::PutBack { .. }) {
            take_file_back(&ctx.settings, &file);
        }
        let key_file = ctx.home.config_key();
        let key = super::fingerprint::Key::load_or_create(&key_file);
        let mut config = Config {
            live: ctx.settings.clone(),
            watch: Watch::start(ctx.settings.source()),
            file,
            instruments: ctx.instruments.clone(),
            held: None,
            key,
            key_file,
            undo: None,
        };
        config.held = config.record_offline_changes(conn, &ctx.bus)?;
        Ok(config)
    }

    fn tick(&mut self, tx: &Connection, after: &mut AfterCommit) -> Result<(), ServiceError> {
        self.announce_held(after);
        if let Some(text) = self.watch.look(&self.file) {
            if self.reload(tx, after, text.as_deref())? {
                super::cut_off::agree(tx, text.as_deref())?;
                self.watch.took(text);
                self.live.made_from(self.watch.source());
            }
        }
        Ok(())
    }

    /// The batch's sets are recorded (the file they replaced went before their answers).
    fn after_commit(&mut self) {
        self.undo = None;
    }

    /// The batch's sets were not recorded (their callers got 503, saying nothing was
    /// stored): `agt.toml` and the live settings go back to what they were before them.
    fn rolled_back(&mut self) {
        let Some(undo) = self.undo.take() else { return };
        match undo.saved.put_back() {
            Ok(()) => tracing::warn!(
                file = %undo.saved.path.display(),
                "a config set could not be recorded (its commit failed): the file is put back as it was, nothing changed"
            ),
            Err(e) => tracing::error!(
                file = %undo.saved.path.display(),
                error = %e,
                "a config set could not be recorded and the file cannot be put back as it was: it holds the change until the config service starts again, which puts it back"
            ),
        }
        self.live.replace(undo.settings);
        self.live.made_from(undo.source);
        self.live.restore_run_flags(undo.run_flags);
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

/// The live settings with a file's values taken ([`taken`]).
struct Taken {
    next: Settings,
    /// The changes, before [`is_change`] judges them.
    applied: Vec<Change>,
    /// `symbols` differ: they apply only at a start, which the log says.
    symbols_changed: bool,
}

/// `live` with the values of `loaded` (a file as read, with the environment's
/// overrides) where they differ, as an edit of the file applies them: `None` if none
/// does. The webhooks are taken as the file has them when the list differs whole,
/// secrets included (`get` masks them), as `record` judges it ([`is_change`]); the live
/// `symbols` take the file's too, though they apply only at the next start.
fn taken(live: &Settings, loaded: &Settings) -> Result<Option<Taken>, super::settings::ConfigError> {
    let changed: Vec<(&str, serde_json::Value)> = Settings::known_keys()
        .into_iter()
        .filter(|key| *key != WEBHOOKS)
        .filter_map(|key| {
            let new = loaded.get(key)?;
            (live.get(key).as_ref() != Some(&new)).then_some((key, new))
        })
        .collect();
    let (lists, keys): (Vec<_>, Vec<_>) = changed.iter().partition(|(key, _)| Settings::is_list(key));
    let symbols_changed = !lists.is_empty();
    let hooks_changed = live.notify.webhooks != loaded.notify.webhooks;
    if keys.is_empty() && !hooks_changed && !symbols_changed {
        return Ok(None);
    }
    let entries: Vec<(&str, &serde_json::Value)> = keys.iter().map(|(k, v)| (*k, v)).collect();
    let mut next: Settings = live.clone();
    let mut applied = if entries.is_empty() { Vec::new() } else { next.set_many(&entries)? };
    if hooks_changed {
        let old = next.get(WEBHOOKS).unwrap_or_default();
        next.notify.webhooks = loaded.notify.webhooks.clone();
        let new = next.get(WEBHOOKS).unwrap_or_default();
        applied.push(Change { key: WEBHOOKS.into(), old, new, hot: true });
    }
    if symbols_changed {
        next.symbols = loaded.symbols.clone();
    }
    Ok(Some(Taken { next, applied, symbols_changed }))
}

/// After [`super::cut_off::settle`] put back the file a set cut off by a panic had
/// replaced: the live settings, which that set had made live, are made from the file
/// again, with nothing recorded or announced (the history never held the set).
fn take_file_back(live: &SharedSettings, file: &std::path::Path) {
    let read = Settings::load_with_source(file, &|name: &str| std::env::var(name).ok());
    let (loaded, source) = match read {
        Ok((loaded, source)) => (live.with_run_flags(loaded), source),
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "the file put back does not load; the live settings keep the cut-off set's change until it does");
            return;
        }
    };
    match taken(&live.get(), &loaded) {
        Ok(Some(Taken { next, .. })) => live.replace(next),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "the file put back does not go together; the live settings keep the cut-off set's change until it does");
            return;
        }
    }
    live.made_from(source);
}

/// Keeps a change in the history.
fn keep(tx: &Connection, change: &Change) -> Result<(), ServiceError> {
    tx.prepare_cached("INSERT INTO changes (timestamp, key, value, hot) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        crate::api::now_rfc3339(),
        change.key,
        change.new.to_string(),
        change.hot
    ])?;
    Ok(())
}

/// Whether `change`, which took the settings from `before` to `now`, changes anything:
/// the one rule for every caller of [`Config::record`]. A key's value as shown must
/// differ, except `notify.webhooks`, whose shown value masks the secrets: the lists are
/// compared whole, secrets included, so the same list again (its secrets written out or
/// as `***`) is no change and announces nothing, and a new secret for the same url is a
/// change, announced with the secret masked like every view of one.
fn is_change(change: &Change, before: &Settings, now: &Settings) -> bool {
    if change.key == WEBHOOKS {
        before.notify.webhooks != now.notify.webhooks
    } else {
        change.old != change.new
    }
}

/// The list key whose shown value hides what differs (its secrets): see [`is_change`].
const WEBHOOKS: &str = "notify.webhooks";

/// The events that announce a change, `applied` saying when it takes effect.
fn announcements(change: &Change, applied: &str) -> Vec<(&'static str, serde_json::Value)> {
    let mut out =
        vec![("CONFIG_CHANGED", serde_json::json!({"key": change.key, "old": change.old, "value": change.new, "applied": applied}))];
    if change.key.starts_with("risk.") {
        out.push(("RISK_LIMIT_CHANGED", serde_json::json!({"user_id": null, "key": change.key, "value": change.new})));
    }
    out
}

/// The announcement of a webhook secret a start cannot compare ([`Config::secrets_unknown`]):
/// the history cannot say whether it changed, so its receivers are told it may have. Masked
/// like every view of a secret.
fn secret_unknown(index: usize) -> serde_json::Value {
    let masked = super::settings::MASKED_SECRET;
    serde_json::json!({"key": format!("notify.webhooks.{index}.secret"), "old": masked, "value": masked, "applied": "at start", "changed": "unknown"})
}

/// The environment variable that sets `key` for this daemon, if one does: it wins over
/// agt.toml at every start, so a `config set` of that key would answer ok and be undone
/// by the next start.
fn overridden_by_environment(key: &str) -> Option<String> {
    Settings::env_override(key, &|name: &str| std::env::var(name).ok())
}

/// Why a change validated against the live settings was not written to `agt.toml`. A file
/// that cannot be read or written is the daemon's trouble (500; 503 on a full disk); one that, with the change,
/// would not load (an edit that broke it, or a key it holds that does not go with the
/// change) is the operator's to fix (409), and the message says so; so is a file someone
/// is writing meanwhile (it kept changing, or it is empty as while an editor rewrites it).
fn not_saved(e: super::settings::ConfigError) -> ApiError {
    match e {
        // A full disk is not the daemon's trouble either: 503, saying what to do.
        super::settings::ConfigError::Io { ref message, .. } if crate::services::disk_full::says_full(message) => ApiError::new(
            503,
            "config_not_saved",
            format!("nothing was saved: {e}; the disk holding agt.toml is full: free space there and set again"),
        ),
        super::settings::ConfigError::Io { .. } => ApiError::new(500, "config_not_saved", e.to_string()),
        super::settings::ConfigError::Busy { .. } => ApiError::conflict("config_not_saved", e.to_string()),
        e => ApiError::conflict(
            "config_not_saved",
            format!("nothing was saved: agt.toml with this change would not load ({e}); fix the file, then set again"),
        ),
    }
}

/// Stores the value of each of `keys` (secrets masked, as `get` shows them) as the
/// history's baseline: at a start every key, after a change the keys it recorded. Only
/// those: the live `symbols` also follow an edit of the file that is not recorded (it
/// applies at the next start), and that start must still find it changed to announce it.
/// The webhooks' row also keeps the fingerprint of their secrets (never the secrets).
fn save_baseline(tx: &Connection, settings: &Settings, keys: &[&str], key: &super::fingerprint::Key) -> Result<(), ServiceError> {
    let mut put = tx.prepare_cached(
        "INSERT INTO baseline (key, value, fingerprint) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, fingerprint = excluded.fingerprint",
    )?;
    for &name in keys {
        if let Some(v) = settings.get(name) {
            let fingerprint = (name == WEBHOOKS).then(|| secrets_fingerprint(settings, key));
            put.execute(params![name, v.to_string(), fingerprint])?;
        }
    }
    Ok(())
}

fn secrets_fingerprint(settings: &Settings, key: &super::fingerprint::Key) -> String {
    key.fingerprint(settings.notify.webhooks.iter().map(|w| w.secret.as_deref()))
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
        if let Some((key, var)) = changes.iter().find_map(|(k, _)| overridden_by_environment(k).map(|v| (k, v))) {
            return Ok(Err(ApiError::conflict(
                "set_by_environment",
                format!(
                    "{key} is set by {var} in the daemon's environment, which wins over agt.toml at every start: \
                     this change would be undone at the next one. Change or unset {var} and restart the daemon"
                ),
            )));
        }
        // An edit of the file the tick has not seen yet goes first: the write below would
        // otherwise keep it in the file and leave it out of the live settings.
        self.tick(tx, after)?;
        // All or nothing: validate every key together (initial <= max backoff, say), then
        // persist what the client sent (not the masked view), then go live.
        let entries: Vec<(&str, &serde_json::Value)> = changes.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut next: Settings = (*self.live.get()).clone();
        let mut applied = match next.set_many(&entries) {
            Ok(c) => c,
            Err(e) => return Ok(Err(ApiError::invalid("invalid_config", e.to_string()))),
        };
        let watch = &self.watch;
        let mut check = |base: &Option<String>| match watch.is_held(base) {
            true => Err(super::settings::ConfigError::Busy {
                path: self.file.display().to_string(),
                message: format!(
                    "the file is empty or missing, as while an editor rewrites it; it is applied as such once it stays so for {} s: \
                     nothing was saved, set again once it is written",
                    super::watch::EMPTY_HOLD.as_secs()
                ),
            }),
            false => Ok(()),
        };
        // The batch's first set keeps the file it replaces, to put back if the batch
        // does not commit (`Config::rolled_back`); a later one's file is the first's.
        let first = self.undo.is_none();
        let saved = match Settings::persist_keeping(&self.file, &entries, &mut check, first) {
            Ok(saved) => saved,
            Err(e) => return Ok(Err(not_saved(e))),
        };
        if first {
            let settings = (*self.live.get()).clone();
            let source = self.live.source();
            let run_flags = self.live.run_flags();
            self.undo = Some(Undo { saved: saved.clone(), settings, source, run_flags });
            // Recorded: the replaced file is not needed any more, and goes before the
            // answer does (`after_commit` runs after it).
            let recorded = saved.clone();
            after.then(move || {
                super::fault::at(super::fault::Step::Recorded);
                recorded.forget_former();
                super::fault::at(super::fault::Step::Unlinked);
            });
        }
        // The record says which file it agrees with: a start that finds the kept file
        // beside another one knows this record never committed (`cut_off.rs`).
        super::cut_off::agree(tx, Some(&saved.text))?;
        if entries.iter().any(|(key, _)| key.starts_with("notify.webhooks")) {
            super::warn_if_secrets_are_readable(&self.file, &next);
        }
        self.record(tx, &mut applied, &self.live.get(), &next, after)?;
        save_baseline(tx, &next, &applied.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), &self.key)?;
        for (key, _) in &entries {
            self.live.forget_run_flag(key);
        }
        self.live.replace(next);
        // The file it was merged into held an edit the tick had not seen (one that came
        // after it, or while the file was read): it is in the file now, so it is applied
        // now, as the edit it is. Its own write is not an edit to apply again.
        if !self.watch.applied(&saved.base) {
            self.reload(tx, after, Some(&saved.text))?;
        }
        self.watch.wrote(saved.stamp, saved.text);
        self.live.made_from(self.watch.source());
        // The file written and the change live, its record not committed: the worst place.
        super::fault::at(super::fault::Step::Written);
        Ok(Ok(self.live.get().to_json()))
    }

    /// Applies an edit of the file: every single-value key whose value (with the
    /// environment's overrides, as at start) differs from the live one, as [`Config::set`]
    /// would, hot keys at once, and `notify.webhooks` whole. A changed `symbols` entry
    /// applies at the next start if it names a new instrument, and never if it asks an
    /// existing one for other terms: neither is announced now, and the log says which is
    /// which ([`Config::say_symbols_edit`]). The live `symbols` take the file's all the
    /// same, as a `config set` of them would (`config get` and `GET /api/config/pending`
    /// show what is saved): compared with the old ones, every later edit of the file
    /// said the same entries again.
    ///
    /// `text` is the file as read (`None`: it is gone); answers whether it loaded.
    fn reload(&mut self, tx: &Connection, after: &mut AfterCommit, text: Option<&str>) -> Result<bool, ServiceError> {
        let loaded = match Settings::from_text(&self.file, text, &|name: &str| std::env::var(name).ok()) {
            Ok(s) => self.live.with_run_flags(s),
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "the configuration file changed but does not load; nothing changed");
                return Ok(false);
            }
        };
        let live = self.live.get();
        match taken(&live, &loaded) {
            Ok(None) => return Ok(true),
            Ok(Some(Taken { next, mut applied, symbols_changed })) => {
                if symbols_changed {
                    self.say_symbols_edit(&live.symbols, &loaded.symbols);
                }
                self.record(tx, &mut applied, &live, &next, after)?;
                let recorded: Vec<&str> = applied.iter().map(|c| c.key.as_str()).collect();
                if !recorded.is_empty() {
                    tracing::info!(keys = ?recorded, "applied an edit of the configuration file");
                }
                save_baseline(tx, &next, &recorded, &self.key)?;
                self.live.replace(next);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the configuration file changed to values that do not go together; nothing changed");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records, as changes applied at this start, where the configuration the daemon
    /// started with differs from what the history last recorded: an edit of `agt.toml`
    /// while the daemon was stopped (or a list edited while it ran, which applies only at
    /// a start), or an environment override. (A `config set` a crash cut off after it
    /// wrote the file but before its record committed was never acknowledged: the file is
    /// put back before this, `cut_off.rs`, so it is neither recorded nor announced.) It also
    /// stores which file the history now agrees with. The first start of a home only takes the
    /// configuration as its baseline. A change of `symbols` is recorded now but given back
    /// to be announced once the market has loaded ([`Config::announce_held`]): only the
    /// entries it then trades as written were applied.
    fn record_offline_changes(&self, conn: &Connection, bus: &crate::services::bus::Bus) -> Result<Option<HeldSymbols>, ServiceError> {
        let live = self.live.get();
        let tx = conn.unchecked_transaction()?;
        let baseline: std::collections::HashMap<String, (String, Option<String>)> = tx
            .prepare("SELECT key, value, fingerprint FROM baseline")?
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
            .collect::<rusqlite::Result<_>>()?;
        let mut changed = Vec::new();
        let secrets_unknown = self.secrets_unknown(&live, baseline.get(WEBHOOKS).and_then(|(_, f)| f.as_deref()));
        if !baseline.is_empty() {
            for key in Settings::known_keys() {
                let Some(new) = live.get(key) else { continue };
                let was = baseline.get(key).and_then(|(v, _)| serde_json::from_str::<serde_json::Value>(v).ok());
                // The webhooks as shown hide their secrets: the fingerprints tell a new
                // one apart ([`is_change`] compares them whole while running).
                let secrets_changed = key == WEBHOOKS && {
                    let stored = baseline.get(key).and_then(|(_, f)| f.as_deref());
                    self.key.differs(stored, &secrets_fingerprint(&live, &self.key)) == Some(true)
                };
                if was.as_ref() != Some(&new) || secrets_changed {
                    let old = was.unwrap_or(serde_json::Value::Null);
                    changed.push(Change { key: key.to_string(), old, new, hot: Settings::is_hot(key) });
                }
            }
        }
        for change in &changed {
            keep(&tx, change)?;
        }
        save_baseline(&tx, &live, &Settings::known_keys(), &self.key)?;
        super::cut_off::agree(&tx, self.live.source().text.as_deref())?;
        // The announcements go into the outbox in the transaction that moves the baseline
        // past them (`Unit::open` sends them on): once the baseline holds a change, no
        // later start finds it to announce, so a SIGKILL between this commit and the bus's
        // lost it for good when they were handed to the bus after.
        let mut events = Vec::new();
        let mut held = None;
        for change in changed {
            if change.key == "symbols" {
                held = Some(HeldSymbols { change, saved: live.symbols.clone() });
                continue;
            }
            tracing::info!(key = change.key, "the configuration changed while the daemon was stopped; recorded");
            for (kind, data) in announcements(&change, "at start") {
                events.push(NewEvent::new(kind, "config", data));
            }
        }
        if let Some(why) = secrets_unknown {
            let with_secret: Vec<usize> =
                live.notify.webhooks.iter().enumerate().filter(|(_, w)| w.secret.is_some()).map(|(i, _)| i).collect();
            tracing::warn!(
                file = %self.key_file.display(),
                webhooks = ?with_secret,
                "{why}: whether a webhook secret changed while the daemon was stopped cannot be told at this start; \
                 each is announced as possibly changed (CONFIG_CHANGED, \"changed\": \"unknown\"): check the secrets the receivers verify with"
            );
            for i in with_secret {
                events.push(NewEvent::new("CONFIG_CHANGED", "config", secret_unknown(i)));
            }
        }
        stage_at_load(&tx, bus, Self::NAME, &events)?;
        tx.commit()?;
        Ok(held)
    }

    /// Why the webhooks' secrets cannot be compared with the fingerprint the history
    /// stored, where they cannot and it matters: a fingerprint was stored, the key that
    /// made it is gone (`config.key` lost, cut short, or another home's), and a webhook
    /// has a secret now. `None` at a home's first start, for an older agt's baseline
    /// without a fingerprint, and where no webhook has a secret (one removed shows in the
    /// masked value, as a change).
    fn secrets_unknown(&self, live: &Settings, stored: Option<&str>) -> Option<String> {
        let stored = stored?;
        if !live.notify.webhooks.iter().any(|w| w.secret.is_some()) {
            return None;
        }
        if self.key.differs(Some(stored), &secrets_fingerprint(live, &self.key)).is_some() {
            return None;
        }
        Some(match self.key.made_because {
            Some(why) => format!("config.key {why} and was replaced by a new key"),
            None => "config.key holds another key than the one that fingerprinted the webhook secrets".to_string(),
        })
    }

    /// Announces a start's change of `symbols` once the market has loaded: as a change
    /// from what the history recorded to that with the entries the market now trades as
    /// written (a new instrument it listed), and nothing if there are none. An entry that
    /// asks an existing instrument for other terms was not applied: it is said in the log,
    /// with the terms that differ, not announced.
    fn announce_held(&mut self, after: &mut AfterCommit) {
        if self.held.is_none() {
            return;
        }
        let Some(listed) = self.instruments.get() else { return }; // the market has not loaded yet
        let HeldSymbols { change, saved } = self.held.take().expect("checked");
        let recorded: Vec<serde_json::Value> = change.old.as_array().cloned().unwrap_or_default();
        let mut applied = recorded.clone();
        for entry in &saved {
            let json = serde_json::to_value(entry).unwrap_or_default();
            if recorded.contains(&json) {
                continue;
            }
            match listed.get(&entry.symbol) {
                Some(i) if entry.same_terms(i) => match applied.iter_mut().find(|e| e["symbol"] == entry.symbol.as_str()) {
                    Some(slot) => *slot = json,
                    None => applied.push(json),
                },
                Some(i) => tracing::warn!(
                    symbol = %entry.symbol,
                    "a [[symbols]] entry changed while the daemon was stopped is not applied: {}; it stays pending (`GET /api/config/pending`)",
                    entry.refusal(i).unwrap_or_default()
                ),
                None => tracing::warn!(
                    symbol = %entry.symbol,
                    "a [[symbols]] entry added while the daemon was stopped is not listed by the market; the start's log says why"
                ),
            }
        }
        let applied = serde_json::Value::Array(applied);
        if applied == change.old {
            return;
        }
        tracing::info!(key = change.key, "the configuration changed while the daemon was stopped; recorded");
        let change = Change { new: applied, ..change };
        for (kind, data) in announcements(&change, "at start") {
            after.event(kind, data);
        }
    }

    /// Says in the log what an edit of the file's `[[symbols]]` will do: an entry for a
    /// symbol the market does not list yet applies at the next start; one that asks an
    /// existing instrument for other terms never applies (it stays pending, with the
    /// terms that differ); one as the market trades it changes nothing.
    fn say_symbols_edit(&self, live: &[SymbolSettings], loaded: &[SymbolSettings]) {
        let changed: Vec<&SymbolSettings> = loaded.iter().filter(|s| !live.contains(s)).collect();
        let Some(listed) = self.instruments.get() else {
            tracing::info!(key = "symbols", "the configuration file changed symbols: a new symbol is listed at the next start");
            return;
        };
        for s in changed {
            match listed.get(&s.symbol) {
                None => tracing::info!(
                    symbol = %s.symbol,
                    "the configuration file lists a new symbol: the market lists it at the next start"
                ),
                Some(i) => match s.refusal(i) {
                    Some(why) => tracing::warn!(
                        symbol = %s.symbol,
                        "the configuration file's [[symbols]] entry is not applied, now or at a start: {why}; it stays pending (`GET /api/config/pending`)"
                    ),
                    None => {
                        tracing::info!(symbol = %s.symbol, "the configuration file's [[symbols]] entry is as the market trades it already")
                    }
                },
            }
        }
    }

    /// Keeps changes in the history and announces them; `applied` is left with those
    /// ([`is_change`]: a key set to the value it has is no change, neither kept nor
    /// announced), `before` and `now` being the settings without and with them.
    fn record(
        &self,
        tx: &Connection,
        applied: &mut Vec<Change>,
        before: &Settings,
        now: &Settings,
        after: &mut AfterCommit,
    ) -> Result<(), ServiceError> {
        applied.retain(|c| is_change(c, before, now));
        for change in applied.iter() {
            keep(tx, change)?;
            for (kind, data) in announcements(change, if change.hot { "now" } else { "at restart" }) {
                after.event(kind, data);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hooks(secret: &str) -> serde_json::Value {
        json!([{"url": "http://127.0.0.1:9/hook", "events": ["USER_CREATED"], "secret": secret}])
    }

    /// `before` with its webhooks set to `hooks(secret)`: the change, and the settings after.
    fn set_hooks(before: &Settings, secret: &str) -> (Change, Settings) {
        let mut now = before.clone();
        let change = now.set(WEBHOOKS, &hooks(secret)).unwrap();
        (change, now)
    }

    #[test]
    fn the_same_webhooks_are_no_change_and_a_new_secret_is_one_announced_masked() {
        let (_, before) = set_hooks(&Settings::defaults(), "k1");
        for same in ["k1", "***"] {
            let (change, now) = set_hooks(&before, same);
            assert!(!is_change(&change, &before, &now), "the list again, its secret as {same:?}");
        }
        let (change, now) = set_hooks(&before, "k2");
        assert_eq!(change.old, change.new, "shown, the lists look alike: only the secret differs");
        assert!(is_change(&change, &before, &now), "a new secret is a change");
        let announced = announcements(&change, "now");
        assert_eq!(announced[0].1["value"][0]["secret"], "***", "{announced:?}");
        assert!(!format!("{announced:?}").contains("k1") && !format!("{announced:?}").contains("k2"), "{announced:?}");
    }

    /// A start that finds a key changed while the daemon was stopped moves the baseline
    /// past it and must announce it: both in one commit. Its announcement was handed to
    /// the bus after the commit, so a SIGKILL before the bus stored it (here: the store
    /// loaded, never re-sent) lost it for good, the next start finding nothing changed.
    #[test]
    fn a_start_commits_its_announcements_with_the_baseline_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let (_bus, mut ctx) = ServiceCtx::for_tests(dir.path());
        let file = ctx.home.config_file();
        let load = |ctx: &mut ServiceCtx| {
            ctx.settings = SharedSettings::new(Settings::load(&file, &|_: &str| None).unwrap());
            drop(crate::services::actor::Unit::<Config>::load(ctx).unwrap());
        };
        std::fs::write(&file, "[risk]\nmax_open_orders = 7\n").unwrap();
        load(&mut ctx); // the first start: the baseline
        std::fs::write(&file, "[risk]\nmax_open_orders = 8\n").unwrap();
        load(&mut ctx); // the edit seen at a start that is killed before the bus stores anything
        let conn = Connection::open(ctx.home.store("config")).unwrap();
        let outbox: Vec<String> =
            conn.prepare("SELECT events FROM outbox_batches").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let text = outbox.join("\n");
        assert!(text.contains("CONFIG_CHANGED") && text.contains(r#""key":"risk.max_open_orders""#), "{text:?}");
        assert!(text.contains(r#""value":8"#) && text.contains(r#""applied":"at start""#), "{text:?}");
        assert!(text.contains("RISK_LIMIT_CHANGED"), "{text:?}");
        load(&mut ctx); // nothing new: nothing more to send
        let rows: i64 = conn.query_row("SELECT count(*) FROM outbox_batches", [], |r| r.get(0)).unwrap();
        assert_eq!(rows as usize, outbox.len());
    }

    /// An edit of `agt.toml` that lands after the tick looked, before (or while) a `config
    /// set` rewrites the file, is kept in the file and applied with the set, each change
    /// announced once: it was kept in the file and left out of the live settings, the
    /// tick then taking the set's own write for the file the settings matched.
    #[test]
    fn an_edit_the_tick_has_not_seen_survives_a_set_and_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, mut ctx) = ServiceCtx::for_tests(dir.path());
        let file = ctx.home.config_file();
        std::fs::write(&file, "[risk]\nmax_open_orders = 7\n").unwrap();
        ctx.settings = SharedSettings::new(Settings::load(&file, &|_: &str| None).unwrap());
        let mut unit = crate::services::actor::Unit::<Config>::load(&ctx).unwrap();
        // The edit, after the tick's look: the watch takes the file as what it applied.
        std::fs::write(&file, "[risk]\nmax_open_orders = 8\n").unwrap();
        unit.svc.watch.wrote(super::super::watch::stamp(&file), "[risk]\nmax_open_orders = 7\n".into());
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let set = Cmd::Set(vec![("risk.allow_short".into(), json!(true))], reply);
        let events = unit.batch(&bus, |svc, tx, after| {
            svc.handle(tx, set, after)?;
            Ok(after
                .event_texts()
                .into_iter()
                .map(|(kind, data)| (kind, serde_json::from_str::<serde_json::Value>(data).unwrap()))
                .collect::<Vec<_>>())
        });
        let answer = answer.try_recv().unwrap().expect("set");
        assert_eq!(answer["risk"]["max_open_orders"], 8, "{answer}");
        assert_eq!(answer["risk"]["allow_short"], true, "{answer}");
        let live = ctx.settings.get();
        assert_eq!((live.risk.max_open_orders, live.risk.allow_short), (8, true));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("max_open_orders = 8") && text.contains("allow_short = true"), "{text}");
        let changed: Vec<_> = events.unwrap().into_iter().filter(|(k, _)| *k == "CONFIG_CHANGED").map(|(_, d)| d["key"].clone()).collect();
        assert_eq!(changed, [json!("risk.allow_short"), json!("risk.max_open_orders")]);
        // Nothing is left for the tick: the set's write is not an edit.
        assert_eq!(unit.svc.watch.look(&file), None);
    }

    #[test]
    fn any_other_key_set_to_its_value_is_no_change() {
        let before = Settings::defaults();
        let mut now = before.clone();
        let change = now.set("risk.max_open_orders", &json!(before.risk.max_open_orders)).unwrap();
        assert!(!is_change(&change, &before, &now));
        let change = now.set("risk.max_open_orders", &json!(before.risk.max_open_orders + 1)).unwrap();
        assert!(is_change(&change, &before, &now));
    }
}
