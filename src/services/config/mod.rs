//! The config service: the live configuration.
//!
//! [`settings`] is the model (defaults, the home file, `AGT_*` overrides, validation);
//! [`service`] is the actor that applies `agt config set` and keeps a history of changes;
//! [`fingerprint`] lets that history tell webhook secrets apart without holding them;
//! [`watch`] says when an edit of `agt.toml` is finished, to be applied; [`cut_off`]
//! undoes a set a crash stopped between writing the file and recording it ([`fault`]
//! stops one there, in tests).
//! Other services read the live settings through [`SharedSettings`]; a hot key takes
//! effect on their next read, or, for what reads it only when it changes (the log's
//! level), through [`SharedSettings::on_change`] before the change is answered.

pub mod cut_off;
pub mod fault;
pub mod fingerprint;
pub mod service;
pub mod settings;
pub mod watch;

use std::sync::{Arc, Mutex, RwLock};

/// What runs when the settings are replaced, given them before and after.
type Watcher = Box<dyn Fn(&settings::Settings, &settings::Settings) + Send + Sync>;

/// The live settings, replaced as a whole when a hot key changes.
#[derive(Clone)]
pub struct SharedSettings(Arc<Shared>);

struct Shared {
    current: RwLock<Arc<settings::Settings>>,
    /// What applies a change outside the settings themselves (the log's level): run by
    /// [`SharedSettings::replace`] before it returns, so a change the config service
    /// acknowledges is in force when its answer leaves, not at a later poll. Locked for
    /// the whole of a replace, so watchers see the replaces in the order they happened.
    watchers: Mutex<Vec<Watcher>>,
    /// The file the settings were last made from (or matched, after a `config set`'s
    /// write), as the config service's watch last took it: kept here, not in the service,
    /// so a restarted service compares the file with what was applied, not with the file
    /// as it is when it starts (an edit made meanwhile was never applied).
    source: Mutex<watch::Source>,
    /// What the daemon's command line set for this run (`daemon run --http ADDR`). Like an
    /// environment override it wins over agt.toml for as long as the daemon runs, so a
    /// fresh read of the file (an edit, a put-back) takes it again rather than the file's
    /// value: without it an edit of any key announced `http.listen` changed to the file's.
    run_flags: Mutex<Vec<(&'static str, serde_json::Value)>>,
}

impl SharedSettings {
    pub fn new(s: settings::Settings) -> Self {
        SharedSettings(Arc::new(Shared {
            current: RwLock::new(Arc::new(s)),
            watchers: Mutex::new(Vec::new()),
            source: Mutex::new(watch::Source::default()),
            run_flags: Mutex::new(Vec::new()),
        }))
    }
    /// Keeps `key = value` as set by the daemon's command line for this run: see
    /// [`SharedSettings::with_run_flags`]. The live settings must hold it already.
    pub fn set_for_this_run(&self, key: &'static str, value: serde_json::Value) {
        let mut flags = self.0.run_flags.lock().unwrap_or_else(|e| e.into_inner());
        flags.retain(|(k, _)| *k != key);
        flags.push((key, value));
    }
    /// This run's command-line settings, to give back with [`SharedSettings::restore_run_flags`].
    pub fn run_flags(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.0.run_flags.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Puts back the command-line settings [`SharedSettings::run_flags`] gave.
    pub fn restore_run_flags(&self, flags: Vec<(&'static str, serde_json::Value)>) {
        *self.0.run_flags.lock().unwrap_or_else(|e| e.into_inner()) = flags;
    }
    /// A `config set` of `key` saved a value for it: that is what the live settings hold
    /// now (shown as saved, pending the next start), and a later read of the file must
    /// not put the flag's value back over it, as a change nobody made.
    /// (`key` may name a section, `http`, for the keys in it.)
    pub fn forget_run_flag(&self, key: &str) {
        let within = |k: &str| k == key || k.strip_prefix(key).is_some_and(|rest| rest.starts_with('.'));
        self.0.run_flags.lock().unwrap_or_else(|e| e.into_inner()).retain(|(k, _)| !within(k));
    }
    /// `loaded` (agt.toml read again, with the environment's overrides) with this run's
    /// command-line settings over it, as the start read them: what the daemon would run
    /// with were it started now the way it was. A flag was checked at the start, so it
    /// sets again; one that would not is left to the file's value and logged.
    pub fn with_run_flags(&self, mut loaded: settings::Settings) -> settings::Settings {
        for (key, value) in self.0.run_flags.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Err(e) = loaded.set(key, value) {
                tracing::warn!(key, error = %e, "a setting of the daemon's command line no longer applies over agt.toml");
            }
        }
        loaded
    }
    /// The file the live settings were made from (none known: no file).
    pub fn source(&self) -> watch::Source {
        self.0.source.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The live settings are now made from `source`.
    pub fn made_from(&self, source: watch::Source) {
        *self.0.source.lock().unwrap_or_else(|e| e.into_inner()) = source;
    }
    /// A snapshot: cheap (one refcount), consistent for as long as the caller keeps it.
    pub fn get(&self) -> Arc<settings::Settings> {
        self.0.current.read().unwrap().clone()
    }
    /// Makes `s` the live settings, then runs every watcher with the settings before and
    /// after, on the caller's thread.
    pub fn replace(&self, s: settings::Settings) {
        let watchers = self.0.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let new = Arc::new(s);
        let old = std::mem::replace(&mut *self.0.current.write().unwrap(), new.clone());
        for watch in watchers.iter() {
            watch(&old, &new);
        }
    }
    /// Runs `watch` at every later [`SharedSettings::replace`]. It must be quick and must
    /// not replace the settings itself.
    pub fn on_change(&self, watch: impl Fn(&settings::Settings, &settings::Settings) + Send + Sync + 'static) {
        self.0.watchers.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(watch));
    }
}

/// Says so in the log when `agt.toml` holds a webhook's signing key and others may read
/// it (a URL with a password in it is refused: `notify::parse_url`) (ssh refuses such a key file; we warn): at start, and when a
/// `config set` writes such a value into it. The daemon writes the file 0600 and keeps
/// its mode when it rewrites it, but a file the user wrote is theirs.
pub fn warn_if_secrets_are_readable(file: &std::path::Path, settings: &settings::Settings) {
    use std::os::unix::fs::PermissionsExt;
    let webhooks = &settings.notify.webhooks;
    if !webhooks.iter().any(|w| w.secret.is_some()) {
        return;
    }
    let Ok(meta) = std::fs::metadata(file) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %file.display(),
            mode = format!("{mode:o}"),
            "the config file holds webhook secrets and others can read it: `chmod 600` it"
        );
    }
}
