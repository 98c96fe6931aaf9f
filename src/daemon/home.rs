//! Where a daemon keeps its files: one `AGT_HOME` per daemon (DESIGN.md §3).

use std::path::{Path, PathBuf};

/// The files of one `AGT_HOME`. Every path the daemon or the CLI touches comes from here,
/// so the layout is written down once.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `--home`, else `$AGT_HOME`, else `$XDG_DATA_HOME/agt`, else `~/.local/share/agt`.
    pub fn resolve(flag: Option<&Path>) -> Home {
        if let Some(p) = flag {
            return Home::at(p);
        }
        if let Some(p) = std::env::var_os("AGT_HOME").filter(|v| !v.is_empty()) {
            return Home::at(Path::new(&p));
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Home::at(&Path::new(&p).join("agt"));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        Home::at(&home.join(".local/share/agt"))
    }

    pub fn at(root: &Path) -> Home {
        // Absolute, so that a detached daemon and its clients agree on every path.
        let root = if root.is_absolute() { root.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(root) };
        Home { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The operator's overrides of `config/agt.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("agt.toml")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// `data/<name>.db`: the store of one service (or `events` for the bus).
    pub fn store(&self, name: &str) -> PathBuf {
        self.data_dir().join(format!("{name}.db"))
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("agt.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("agtd.pid")
    }
    pub fn info_file(&self) -> PathBuf {
        self.root.join("agtd.json")
    }
    /// Held with an exclusive `flock` for the daemon's whole life: one daemon per home.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("agtd.lock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}
