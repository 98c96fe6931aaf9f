//! How the config service reads an edit of `agt.toml`: once, as the finished file.
//!
//! Editors and shells write the file in steps. `printf … > agt.toml` truncates it, then
//! writes; some tools write in chunks, or delete the file and create it again. Read at
//! the wrong moment, it is empty or half-written, and applying that took every key back
//! to its default (announced in `CONFIG_CHANGED`) for a tick, then forward again. So:
//!
//! - a changed file is applied once two reads [`SETTLE`] apart agree (its text and its
//!   [`Stamp`]). The look that finds it changed reads it and returns; the next look, due
//!   [`SETTLE`] later ([`Watch::due_in`]), reads it again. The service's thread never
//!   sleeps on the file: a `config set` waited up to half a second behind a file that
//!   kept changing. Nothing of a file still changing is applied;
//! - a file that became empty (0 bytes) or missing is held: applied only once it has
//!   stayed so for [`EMPTY_HOLD`], the write that usually follows a truncation replacing
//!   it first. A file that was empty already is no such step.
//!
//! - a file whose size and modification time are as last seen is read again too while
//!   that time is younger than [`RACY`]: a write of the same size within the same tick of
//!   the filesystem's clock leaves both as they were (git's "racily clean" files), and was
//!   never applied. Once a read finds the text unchanged [`RACY`] after the file's
//!   modification time, any later write moves the stamp, and a look is a `stat` again.
//!   (A tool that sets the modification time back, `touch -r`, is not seen.)
//!
//! What the watch compares with is the file the live settings were made from
//! ([`Source`]), kept with them ([`super::SharedSettings::source`]): not the file as it is
//! when the config service (re)starts, which took an edit made since (at boot, before the
//! service started, or while the supervisor restarted it) for the one applied, and never
//! applied it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How long apart two reads of a changed file must agree before it is applied.
pub const SETTLE: Duration = Duration::from_millis(50);
/// How long a file that became empty or missing must stay so to be applied (every key
/// then goes back to its default).
pub const EMPTY_HOLD: Duration = Duration::from_secs(5);
/// How long after a file's modification time a write of the same size may still leave
/// the same modification time: a tick of the filesystem's clock (a few milliseconds on
/// ext4, 2 s on FAT). Until a read that old, a look with an unchanged stamp reads the text.
pub const RACY: Duration = Duration::from_secs(2);

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

/// The file as the live settings were made from it: its stamp (taken before the text, so
/// a write between them makes the next look read it again) and its text (`None`: there
/// was no file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub stamp: Option<Stamp>,
    pub text: Option<String>,
}

impl Source {
    /// The file at `path` as it is now.
    pub fn read(path: &Path) -> std::io::Result<Source> {
        let stamp = stamp(path);
        Ok(Source { stamp, text: read(path)? })
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
    /// The text of the file when `seen` was decided on, and whether `seen` could still be
    /// a later write's too ([`RACY`]): then a look compares the text.
    seen_text: Option<String>,
    racy: bool,
    /// The text the live settings were last made from (`None`: there was no file). A
    /// `config set` whose rewrite started from another text merged an edit the live
    /// settings lack, and applies it ([`Watch::applied`]).
    applied: Option<String>,
    /// Since when the file has been empty or missing (as of which stamp), not yet applied.
    emptied: Option<(Option<Stamp>, Instant)>,
    /// A changed file as a look read it (its stamp, its text, when), waiting for a look
    /// [`SETTLE`] later to read the same.
    settling: Option<(Option<Stamp>, Option<String>, Instant)>,
}

impl Watch {
    /// Takes up from the file the live settings were made from: a file that differs
    /// from it now is an edit, read and applied as any other.
    pub fn start(source: Source) -> Watch {
        Watch { seen: source.stamp, seen_text: source.text.clone(), racy: true, applied: source.text, emptied: None, settling: None }
    }

    /// The file the live settings were last made from, to keep with them.
    pub fn source(&self) -> Source {
        Source { stamp: self.seen, text: self.applied.clone() }
    }

    /// How soon the next look is due, where it is sooner than at the next tick: a file
    /// read as changed is read again [`SETTLE`] after.
    pub fn due_in(&self) -> Option<Duration> {
        self.settling.as_ref().map(|(_, _, read)| SETTLE.saturating_sub(read.elapsed()))
    }

    /// An edit to apply, as its finished text (`None`: the file is gone), or `None` when
    /// there is none yet: the file is as last seen, still changing (or read once only),
    /// or held empty. Once it is applied, call [`Watch::took`].
    pub fn look(&mut self, path: &Path) -> Option<Option<String>> {
        self.look_at(path, Instant::now())
    }

    /// [`Watch::look`] at the moment `at`.
    fn look_at(&mut self, path: &Path, at: Instant) -> Option<Option<String>> {
        let current = stamp(path);
        if current == self.seen && !self.rewritten_within_a_tick(path, current) {
            self.settling = None;
            return None;
        }
        let (now, text) = match self.settle(path, at) {
            Settled::Still(now, text) => (now, text),
            Settled::Changing => return None,
            Settled::Unreadable(now, e) => {
                tracing::warn!(file = %path.display(), error = %e, "the configuration file changed but cannot be read; nothing changed");
                self.seen = now;
                self.racy = false;
                return None;
            }
        };
        if text == self.applied {
            self.decided(now, text);
            self.emptied = None;
            return None;
        }
        if is_empty(&text) && !is_empty(&self.applied) {
            match self.emptied {
                Some((of, since)) if of == now && at.saturating_duration_since(since) >= EMPTY_HOLD => {}
                Some((of, _)) if of == now => return None,
                _ => {
                    tracing::info!(
                        file = %path.display(),
                        hold_s = EMPTY_HOLD.as_secs(),
                        "the configuration file is empty or missing: waiting for it to be written; if it stays so, every key goes back to its default"
                    );
                    self.emptied = Some((now, at));
                    return None;
                }
            }
        }
        self.emptied = None;
        self.decided(now, text.clone());
        Some(text)
    }

    /// The file stamped `now` and holding `text` is decided on (applied, found the same
    /// as applied, or found not to load): looks compare with it.
    fn decided(&mut self, now: Option<Stamp>, text: Option<String>) {
        self.seen = now;
        self.seen_text = text;
        self.racy = true;
    }

    /// Whether the file, its stamp as last decided on, was written since after all: the
    /// stamp is younger than [`RACY`], and the text differs. The time is taken before the
    /// read, so a read that finds the text unchanged that long after the modification time
    /// proves a later write must move the stamp.
    fn rewritten_within_a_tick(&mut self, path: &Path, current: Option<Stamp>) -> bool {
        let Some(stamp) = current.filter(|_| self.racy) else { return false };
        let read_at = SystemTime::now();
        match read(path) {
            Ok(text) if text == self.seen_text => {
                if read_at.duration_since(stamp.modified).is_ok_and(|age| age >= RACY) {
                    self.racy = false;
                }
                false
            }
            Ok(_) => true,
            Err(_) => false,
        }
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
        self.decided(now, Some(text.clone()));
        self.applied = Some(text);
        self.emptied = None;
        self.settling = None;
    }

    /// Reads the changed file: [`Settled::Still`] if a read [`SETTLE`] or more before
    /// `at` found the same, else [`Settled::Changing`] and the read kept for the next look.
    fn settle(&mut self, path: &Path, at: Instant) -> Settled {
        // The stamp before the text: a write between them makes the next look read again.
        let now = stamp(path);
        let text = match read(path) {
            Ok(text) => text,
            Err(e) => {
                self.settling = None;
                return Settled::Unreadable(now, e);
            }
        };
        match self.settling.take() {
            Some((was, t, read)) if was == now && t == text => {
                if at.saturating_duration_since(read) >= SETTLE {
                    return Settled::Still(now, text);
                }
                self.settling = Some((was, t, read));
            }
            _ => self.settling = Some((now, text, at)),
        }
        Settled::Changing
    }
}

enum Settled {
    /// Two reads [`SETTLE`] apart agreed.
    Still(Option<Stamp>, Option<String>),
    /// It changed since the last read, or was read once only.
    Changing,
    /// It cannot be read (its permissions, say).
    Unreadable(Option<Stamp>, std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `agt.toml` in a temporary folder, its watch, and the watch's clock, which the test
    /// moves: each look is [`SETTLE`] after the one before.
    struct Fixture {
        _dir: tempfile::TempDir,
        file: std::path::PathBuf,
        watch: Watch,
        at: Instant,
    }

    impl Fixture {
        /// The daemon started with `text` in the file.
        fn new(text: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("agt.toml");
            std::fs::write(&file, text).unwrap();
            let watch = Watch::start(Source::read(&file).unwrap());
            Fixture { _dir: dir, file, watch, at: Instant::now() }
        }
        fn write(&self, text: &str) {
            std::fs::write(&self.file, text).unwrap();
        }
        fn look(&mut self) -> Option<Option<String>> {
            self.at += SETTLE;
            self.watch.look_at(&self.file, self.at)
        }
        /// The look that reads a changed file first, which applies nothing, then the next.
        fn look_twice(&mut self) -> Option<Option<String>> {
            assert_eq!(self.look(), None, "a file read once is not applied");
            self.look()
        }
    }

    /// A file that changes between two looks is not applied until two looks [`SETTLE`]
    /// apart read the same, and no look waits for that: the one that finds it changing
    /// returns, and says when to look again. It slept up to 10 × 50 ms on the service's
    /// thread, where a `PUT /api/config` waited behind it.
    #[test]
    fn a_changing_file_is_applied_once_two_looks_settle_apart_agree() {
        let mut f = Fixture::new("[risk]\nmax_open_orders = 7\n");
        assert_eq!(f.look(), None, "nothing changed");
        assert_eq!(f.watch.due_in(), None, "nothing to look at before the next tick");
        f.write("[risk]\nmax_open_orders = 8\n");
        assert_eq!(f.look(), None, "read once");
        assert!(f.watch.due_in().is_some_and(|d| d <= SETTLE), "looked at again within {SETTLE:?}");
        // Read again too soon: the same, but not yet SETTLE apart.
        assert_eq!(f.watch.look_at(&f.file, f.at + SETTLE / 2), None);
        f.write("[risk]\nmax_open_orders = 9\n");
        assert_eq!(f.look(), None, "it changed since: read again, nothing applied");
        f.write("[risk]\nmax_open_orders = 10\n");
        assert_eq!(f.look(), None, "and again");
        let text = f.look().expect("two reads SETTLE apart agree");
        assert_eq!(text.as_deref(), Some("[risk]\nmax_open_orders = 10\n"));
        f.watch.took(text);
        assert_eq!(f.watch.due_in(), None);
        assert_eq!(f.look(), None, "applied once");
    }

    /// A watch that (re)starts compares the file with what the live settings were made
    /// from, not with the file as it is then: an edit made between the daemon's read of it
    /// and the config service's start (or while the supervisor restarted the service) is
    /// applied. It was taken for the applied file, and applied at no later look.
    #[test]
    fn a_watch_started_after_an_edit_applies_it() {
        let mut f = Fixture::new("[risk]\nmax_open_orders = 7\n");
        let source = f.watch.source();
        f.write("[risk]\nmax_open_orders = 8\n");
        f.watch = Watch::start(source);
        let text = f.look_twice().expect("the edit made before the start");
        assert_eq!(text.as_deref(), Some("[risk]\nmax_open_orders = 8\n"));
        f.watch.took(text);
        assert_eq!(f.watch.source().text.as_deref(), Some("[risk]\nmax_open_orders = 8\n"), "what is kept with the settings");
        // Restarted again with nothing new: nothing to apply.
        f.watch = Watch::start(f.watch.source());
        assert_eq!(f.look(), None);
    }

    /// A truncation then a write: the empty file between them is never what is applied,
    /// however long the write takes within [`EMPTY_HOLD`]; the written file is, once.
    #[test]
    fn an_emptied_file_is_held_and_the_write_after_it_applied_once() {
        let mut f = Fixture::new("[risk]\nmax_open_orders = 7\n");
        assert_eq!(f.look(), None, "nothing changed");
        f.write("");
        assert_eq!(f.look_twice(), None, "held: it may be being written");
        assert_eq!(f.look_twice(), None, "still held");
        f.write("[risk]\nmax_open_orders = 8\n");
        let text = f.look_twice().expect("the finished edit");
        assert_eq!(text.as_deref(), Some("[risk]\nmax_open_orders = 8\n"));
        f.watch.took(text);
        assert_eq!(f.look(), None, "applied once");
    }

    /// Sets the file's modification time, as a write in the same tick of the
    /// filesystem's clock (or `touch -r`) leaves it.
    fn set_modified(file: &Path, at: SystemTime) {
        std::fs::File::options().write(true).open(file).unwrap().set_modified(at).unwrap();
    }

    /// A write of the same size within the tick of the filesystem's clock that stamped the
    /// file before keeps its stamp (size, modification time, inode): it was never applied.
    /// While the stamp is younger than [`RACY`], a look compares the text as well.
    #[test]
    fn a_same_size_write_within_one_clock_tick_is_applied() {
        let mut f = Fixture::new("[risk]\nmax_open_orders = 7\n");
        let stamped = std::fs::metadata(&f.file).unwrap().modified().unwrap();
        assert_eq!(f.look(), None, "nothing changed");
        f.write("[risk]\nmax_open_orders = 8\n");
        set_modified(&f.file, stamped);
        assert_eq!(stamp(&f.file), f.watch.seen, "the stamp cannot tell the two writes apart");
        let text = f.look_twice().expect("the same stamp, another text");
        assert_eq!(text.as_deref(), Some("[risk]\nmax_open_orders = 8\n"));
        f.watch.took(text);
        assert_eq!(f.look(), None, "applied once");
        // And a file that does not load is decided on too: not tried again at every look.
        let stamped = std::fs::metadata(&f.file).unwrap().modified().unwrap();
        f.write("[risk]\nmax_open_orders = ?\n");
        set_modified(&f.file, stamped);
        assert!(f.look_twice().is_some(), "read, to be tried");
        assert_eq!(f.look(), None, "tried once");
    }

    /// A stamp read with the text unchanged [`RACY`] after its modification time is
    /// trusted: a later write must move it, so a look is a `stat` alone again (a write
    /// that sets the time back is then not seen; without this, every look read the file).
    #[test]
    fn a_stamp_older_than_a_clock_tick_is_trusted_once_read_unchanged() {
        let mut f = Fixture::new("[risk]\nmax_open_orders = 7\n");
        let old = SystemTime::now() - 10 * RACY;
        set_modified(&f.file, old);
        f.watch = Watch::start(Source::read(&f.file).unwrap());
        assert_eq!(f.look(), None, "read: the same text, and its stamp old enough");
        f.write("[risk]\nmax_open_orders = 8\n");
        set_modified(&f.file, old);
        assert_eq!(f.look_twice(), None, "a stat alone: the stamp is trusted");
        f.write("[risk]\nmax_open_orders = 99\n");
        assert_eq!(f.look_twice().flatten().as_deref(), Some("[risk]\nmax_open_orders = 99\n"), "a write that moves the stamp");
    }

    #[test]
    fn an_empty_or_missing_file_that_stays_so_is_applied_after_the_hold() {
        let mut f = Fixture::new("[risk]\nmax_open_orders = 7\n");
        std::fs::remove_file(&f.file).unwrap();
        assert_eq!(f.look_twice(), None);
        assert!(f.watch.is_held(&None), "a rewrite must not write over it");
        f.at += EMPTY_HOLD;
        assert_eq!(f.look_twice(), Some(None), "gone for good: the defaults apply");
        f.watch.took(None);
        assert!(!f.watch.is_held(&None), "applied: no longer held");
        // A file that was empty already is no step of a write.
        f.write("");
        let text = f.look_twice().expect("an empty file where there was none");
        assert_eq!(text.as_deref(), Some(""));
    }
}
