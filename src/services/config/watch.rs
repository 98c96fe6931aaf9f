//! How the config service reads an edit of `agt.toml`: once, as the finished file.
//!
//! Editors and shells write the file in steps. `printf … > agt.toml` truncates it, then
//! writes; some tools write in chunks, or delete the file and create it again. Read at
//! the wrong moment, it is empty or half-written, and applying that took every key back
//! to its default (announced in `CONFIG_CHANGED`) for a tick, then forward again. So:
//!
//! - a changed file is read until two reads [`SETTLE`] apart agree (its text and its
//!   [`Stamp`]); one still changing after [`SETTLE_READS`] reads is looked at again at the
//!   next tick, and nothing of it is applied meanwhile;
//! - a file that became empty (0 bytes) or missing is held: applied only once it has
//!   stayed so for [`EMPTY_HOLD`], the write that usually follows a truncation replacing
//!   it first. A file that was empty already is no such step.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How long apart two reads of a changed file must agree before it is applied.
pub const SETTLE: Duration = Duration::from_millis(50);
/// How many reads a tick spends on a file that keeps changing.
const SETTLE_READS: usize = 10;
/// How long a file that became empty or missing must stay so to be applied (every key
/// then goes back to its default).
pub const EMPTY_HOLD: Duration = Duration::from_secs(5);

/// A file's identity and version as `stat` gives them: an edit in place changes its
/// size or modification time, a replacement (rename) its inode. A rename does not change
/// the renamed file's, so [`stamp_of`] a file about to replace `agt.toml` is its stamp
/// once it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: (u64, u64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        Some(Stamp { len: meta.len(), modified: meta.modified().ok()?, inode: (meta.dev(), meta.ino()) })
    }
}

/// The stamp of the file at `path` (through a symlink), `None` if there is none.
pub fn stamp(path: &Path) -> Option<Stamp> {
    Stamp::of(&std::fs::metadata(path).ok()?)
}

/// The stamp of an open file.
pub fn stamp_of(file: &std::fs::File) -> Option<Stamp> {
    Stamp::of(&file.metadata().ok()?)
}

/// The file's text, `None` if there is no file.
pub fn read(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A text that is no configuration at all: an empty or missing file.
fn is_empty(text: &Option<String>) -> bool {
    text.as_deref().is_none_or(str::is_empty)
}

/// What the config service knows of `agt.toml`: the version the live settings were
/// last made from, and an empty one waiting out [`EMPTY_HOLD`].
pub struct Watch {
    /// The stamp of the file as last decided on (applied, or found not to load); a tick
    /// reads the file only when it differs.
    seen: Option<Stamp>,
    /// The text the live settings were last made from (`None`: there was no file). A
    /// `config set` whose rewrite started from another text merged an edit the live
    /// settings lack, and applies it ([`Watch::applied`]).
    applied: Option<String>,
    /// Since when the file has been empty or missing (as of which stamp), not yet applied.
    emptied: Option<(Option<Stamp>, Instant)>,
}

impl Watch {
    /// The file as it is when the service starts: what the daemon's settings were read from.
    pub fn start(path: &Path) -> Watch {
        let seen = stamp(path);
        Watch { seen, applied: read(path).ok().flatten(), emptied: None }
    }

    /// An edit to apply, as its finished text (`None`: the file is gone), or `None` when
    /// there is none yet: the file is as last seen, still changing, or held empty. Once
    /// it is applied, call [`Watch::took`].
    pub fn look(&mut self, path: &Path) -> Option<Option<String>> {
        if stamp(path) == self.seen {
            return None;
        }
        let (now, text) = match settled(path) {
            Settled::Still(now, text) => (now, text),
            Settled::Changing => return None,
            Settled::Unreadable(now, e) => {
                tracing::warn!(file = %path.display(), error = %e, "the configuration file changed but cannot be read; nothing changed");
                self.seen = now;
                return None;
            }
        };
        if text == self.applied {
            self.seen = now;
            self.emptied = None;
            return None;
        }
        if is_empty(&text) && !is_empty(&self.applied) {
            match self.emptied {
                Some((at, since)) if at == now && since.elapsed() >= EMPTY_HOLD => {}
                Some((at, _)) if at == now => return None,
                _ => {
                    tracing::info!(
                        file = %path.display(),
                        hold_s = EMPTY_HOLD.as_secs(),
                        "the configuration file is empty or missing: waiting for it to be written; if it stays so, every key goes back to its default"
                    );
                    self.emptied = Some((now, Instant::now()));
                    return None;
                }
            }
        }
        self.emptied = None;
        self.seen = now;
        Some(text)
    }

    /// The live settings are now made from `text`.
    pub fn took(&mut self, text: Option<String>) {
        self.applied = text;
    }

    /// Whether the live settings were made from `text`: a rewrite that started from
    /// another merged an edit they lack.
    pub fn applied(&self, text: &Option<String>) -> bool {
        self.applied == *text
    }

    /// Whether `text`, read by a rewrite as the file to merge a change into, is a file
    /// being written: empty or missing where the live settings came from a file with
    /// keys in it, and not yet applied as such ([`EMPTY_HOLD`]). Writing over it would
    /// replace the file its writer is about to finish.
    pub fn is_held(&self, text: &Option<String>) -> bool {
        is_empty(text) && !is_empty(&self.applied)
    }

    /// A `config set` wrote `text` (stamped `now`), which the live settings now match.
    pub fn wrote(&mut self, now: Option<Stamp>, text: String) {
        self.seen = now;
        self.applied = Some(text);
        self.emptied = None;
    }
}

enum Settled {
    /// Two reads [`SETTLE`] apart agreed.
    Still(Option<Stamp>, Option<String>),
    /// It kept changing.
    Changing,
    /// It cannot be read (its permissions, say).
    Unreadable(Option<Stamp>, std::io::Error),
}

fn settled(path: &Path) -> Settled {
    // The stamp before the text: a write between them makes the next look read again.
    let look = || (stamp(path), read(path));
    let (mut now, mut text) = match look() {
        (now, Ok(text)) => (now, text),
        (now, Err(e)) => return Settled::Unreadable(now, e),
    };
    for _ in 0..SETTLE_READS {
        std::thread::sleep(SETTLE);
        match look() {
            (again, Ok(t)) if again == now && t == text => return Settled::Still(now, text),
            (again, Ok(t)) => (now, text) = (again, t),
            (again, Err(e)) => return Settled::Unreadable(again, e),
        }
    }
    Settled::Changing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A truncation then a write: the empty file between them is never what is applied,
    /// however long the write takes within [`EMPTY_HOLD`]; the written file is, once.
    #[test]
    fn an_emptied_file_is_held_and_the_write_after_it_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agt.toml");
        std::fs::write(&file, "[risk]\nmax_open_orders = 7\n").unwrap();
        let mut watch = Watch::start(&file);
        assert_eq!(watch.look(&file), None, "nothing changed");
        std::fs::write(&file, "").unwrap();
        assert_eq!(watch.look(&file), None, "held: it may be being written");
        assert_eq!(watch.look(&file), None, "still held");
        std::fs::write(&file, "[risk]\nmax_open_orders = 8\n").unwrap();
        let text = watch.look(&file).expect("the finished edit");
        assert_eq!(text.as_deref(), Some("[risk]\nmax_open_orders = 8\n"));
        watch.took(text);
        assert_eq!(watch.look(&file), None, "applied once");
    }

    #[test]
    fn an_empty_or_missing_file_that_stays_so_is_applied_after_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agt.toml");
        std::fs::write(&file, "[risk]\nmax_open_orders = 7\n").unwrap();
        let mut watch = Watch::start(&file);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(watch.look(&file), None);
        assert!(watch.is_held(&None), "a rewrite must not write over it");
        // As if the hold had passed.
        watch.emptied = watch.emptied.map(|(at, since)| (at, since - EMPTY_HOLD));
        assert_eq!(watch.look(&file), Some(None), "gone for good: the defaults apply");
        watch.took(None);
        assert!(!watch.is_held(&None), "applied: no longer held");
        // A file that was empty already is no step of a write.
        std::fs::write(&file, "").unwrap();
        let text = watch.look(&file).expect("an empty file where there was none");
        assert_eq!(text.as_deref(), Some(""));
    }
}
