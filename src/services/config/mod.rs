//! The config service: the live configuration.
//!
//! [`settings`] is the model (defaults, the home file, `AGT_*` overrides, validation);
//! [`service`] is the actor that applies `agt config set` and keeps a history of changes;
//! [`fingerprint`] lets that history tell webhook secrets apart without holding them.
//! Other services read the live settings through [`SharedSettings`]; a hot key takes
//! effect on their next read.

pub mod fingerprint;
pub mod service;
pub mod settings;

use std::sync::{Arc, RwLock};

/// The live settings, replaced as a whole when a hot key changes.
#[derive(Clone)]
pub struct SharedSettings(Arc<RwLock<Arc<settings::Settings>>>);

impl SharedSettings {
    pub fn new(s: settings::Settings) -> Self {
        SharedSettings(Arc::new(RwLock::new(Arc::new(s))))
    }
    /// A snapshot: cheap (one refcount), consistent for as long as the caller keeps it.
    pub fn get(&self) -> Arc<settings::Settings> {
        self.0.read().unwrap().clone()
    }
    pub fn replace(&self, s: settings::Settings) {
        *self.0.write().unwrap() = Arc::new(s);
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
