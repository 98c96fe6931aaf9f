//! Where a daemon keeps its files: one `AGT_HOME` per daemon (DESIGN.md §3).

use std::path::{Path, PathBuf};

/// The files of one `AGT_HOME`. Every path the daemon or the CLI touches comes from here,
/// so the layout is written down once.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `--home`, else `$AGT_HOME`, else `$XDG_DATA_HOME/agt`, else `~/.local/share/agt`,
    /// `~` being `$HOME` or, where that is unset (cron, `env -i`), the home directory of
    /// the user's passwd entry. Never a folder relative to wherever the command runs:
    /// without any of these it is an error asking for `--home` or `AGT_HOME`.
    pub fn resolve(flag: Option<&Path>) -> Result<Home, String> {
        if let Some(p) = flag {
            return Ok(Home::at(p));
        }
        if let Some(p) = std::env::var_os("AGT_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home::at(Path::new(&p)));
        }
        let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        default_root(xdg, home, passwd_home).map(|root| Home::at(&root))
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
    /// The key that fingerprints webhook secrets for the config history
    /// (`services::config::fingerprint`): beside `agt.toml`, which holds the secrets,
    /// not in `data/` with the fingerprints.
    pub fn config_key(&self) -> PathBuf {
        self.root.join("config.key")
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
    /// Whether [`Home::socket`] fits in a Unix socket address (`sun_path`: 108 bytes on
    /// Linux, with its terminating NUL); if not, a message naming the path and the fix.
    pub fn check_socket_path(&self) -> Result<(), String> {
        use std::os::unix::ffi::OsStrExt;
        let sock = self.socket();
        let len = sock.as_os_str().as_bytes().len();
        // SAFETY: an all-zero sockaddr_un is a valid value; only its field's size is read.
        let max = unsafe { std::mem::zeroed::<libc::sockaddr_un>() }.sun_path.len() - 1;
        if len <= max {
            return Ok(());
        }
        Err(format!(
            "the socket path {} is {len} bytes, longer than the {max} a Unix socket path may have; \
             use a shorter --home (or AGT_HOME), such as ~/.agt",
            sock.display()
        ))
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

/// The default root from `$XDG_DATA_HOME`, `$HOME` and the passwd entry's home (asked only
/// when needed). A relative or empty value is ignored, as the XDG spec says of
/// `XDG_DATA_HOME`: a home must not depend on the folder a command runs in.
fn default_root(xdg: Option<PathBuf>, home: Option<PathBuf>, passwd: impl FnOnce() -> Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(x) = xdg.filter(|p| p.is_absolute()) {
        return Ok(x.join("agt"));
    }
    match home.filter(|p| p.is_absolute()).or_else(|| passwd().filter(|p| p.is_absolute())) {
        Some(h) => Ok(h.join(".local/share/agt")),
        None => Err("no home folder for agt: HOME and XDG_DATA_HOME are unset (or not absolute paths) and the user's passwd \
                     entry names no home directory; pass --home DIR or set AGT_HOME=DIR"
            .to_string()),
    }
}

/// The home directory of this user's passwd entry (`getpwuid_r`), if it has one.
fn passwd_home() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: pw and buf outlive the call and buf's length is passed; the strings it
        // points pw at live in buf, read below while buf is alive.
        let rc = unsafe { libc::getpwuid_r(libc::getuid(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded: pw_dir is a NUL-terminated string inside buf.
        let dir = unsafe { CStr::from_ptr(pw.pw_dir) };
        return (!dir.to_bytes().is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_home_is_never_relative() {
        let p = |s: &str| Some(PathBuf::from(s));
        let none = || None;
        assert_eq!(default_root(p("/x"), p("/h"), none), Ok(PathBuf::from("/x/agt")));
        assert_eq!(default_root(None, p("/h"), none), Ok(PathBuf::from("/h/.local/share/agt")));
        assert_eq!(default_root(p("rel"), p("/h"), none), Ok(PathBuf::from("/h/.local/share/agt")), "a relative XDG_DATA_HOME is ignored");
        assert_eq!(default_root(p(""), None, || p("/pw")), Ok(PathBuf::from("/pw/.local/share/agt")), "unset HOME: the passwd entry");
        assert_eq!(default_root(None, p("."), || p("/pw")), Ok(PathBuf::from("/pw/.local/share/agt")));
        let err = default_root(None, None, || p("")).unwrap_err();
        assert!(err.contains("--home") && err.contains("AGT_HOME"), "{err}");
        assert!(default_root(None, None, none).is_err());
    }

    #[test]
    fn the_passwd_entry_gives_an_absolute_home() {
        // The test runs as a user with a passwd entry (root in a container has /root).
        assert!(passwd_home().is_some_and(|h| h.is_absolute()));
    }

    #[test]
    fn a_socket_path_too_long_for_sun_path_is_named_with_the_fix() {
        assert!(Home::at(Path::new("/tmp/agt")).check_socket_path().is_ok());
        let long = Home::at(&Path::new("/tmp").join("h".repeat(100)));
        let err = long.check_socket_path().unwrap_err();
        assert!(err.contains(&long.socket().display().to_string()) && err.contains("shorter --home"), "{err}");
        // `/` + the folder + `/agt.sock`.
        let at = |len: usize| Home::at(&Path::new("/").join("h".repeat(len - "//agt.sock".len())));
        assert_eq!(at(107).socket().as_os_str().len(), 107);
        assert!(at(107).check_socket_path().is_ok(), "107 bytes fit");
        assert!(at(108).check_socket_path().is_err(), "108 leave no room for the NUL");
    }
}
