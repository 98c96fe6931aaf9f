//! The config service: the live configuration.
//!
//! [`settings`] is the model (defaults, the home file, `AGT_*` overrides, validation);
//! [`service`] is the actor that applies `agt config set` and keeps a history of changes.
//! Other services read the live settings through [`SharedSettings`]; a hot key takes
//! effect on their next read.

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
