//! A `config set` cut off by a crash between writing `agt.toml` and committing its record.
//!
//! A set writes the file first and records the change after, in the config service's
//! batch; until that commit it keeps the file it replaced beside it, a hard link
//! `.agt.toml.before-set` (or, where there was no file, the empty marker
//! `.agt.toml.before-set-none`: [`super::settings::Former`]). A failed commit puts it
//! back (`Service::rolled_back`); a panic of the service or a SIGKILL of the daemon in
//! between runs nothing, and left the file holding a change the caller was told failed
//! (or never heard of), which the next start then recorded and announced as its own.
//!
//! So every record that agrees with the file (a set's, an applied edit's, a start's)
//! also stores the SHA-256 of the text it agreed with (`agreed_file` in `config.db`),
//! and [`settle`], run by the daemon before it reads the settings and by the config
//! service each time it loads (a supervisor restart), decides from it:
//!
//! | killed                                  | link | file       | outcome              |
//! |-----------------------------------------|------|------------|----------------------|
//! | before the link                         | none | old        | nothing to do        |
//! | after the link, before the rename       | yes  | old (the link's own) | link removed |
//! | after the rename, before the commit     | yes  | new, ≠ agreed | put back          |
//! | after the commit, before the unlink     | yes  | new, = agreed | link removed      |
//! | after the unlink                        | none | new        | nothing to do        |
//!
//! (A kill while the new text is written to its temp file leaves that file, and the
//! old one in place: [`settle`] removes such temp files at every start.)
//!
//! What was acknowledged (committed, hence answered at most after) is kept; what was
//! not is undone. A file that differs from the agreed one is put back even when
//! someone edited it after the crash, while the daemon was stopped: the file as the
//! crash left it is kept as `.agt.toml.cut-off-set` (a hard link again) and the log
//! names it, so such an edit can be taken from it.

use super::settings::Former;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What [`settle`] found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// No set was cut off.
    Nothing,
    /// The set had not replaced the file yet: only what it kept is removed.
    NotWritten,
    /// The set's record committed: the file is kept, the link removed.
    Recorded,
    /// The set's record did not commit: the file is as before the set. `kept` is the
    /// file as the set left it (none if it removed it).
    PutBack { kept: Option<PathBuf> },
}

/// The digest stored for a text of `agt.toml` (`None`: no file), compared by [`settle`].
pub fn digest(text: Option<&str>) -> String {
    match text {
        Some(text) => hex::encode(Sha256::digest(text.as_bytes())),
        None => "none".to_string(),
    }
}

/// Stores, in the transaction that records it, the text of `agt.toml` the history now
/// agrees with.
pub fn agree(tx: &rusqlite::Connection, text: Option<&str>) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO agreed_file (id, sha256) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET sha256 = excluded.sha256")?
        .execute([digest(text)])?;
    Ok(())
}

/// The digest the history last agreed with (`None`: never stored, or no such table yet).
pub fn agreed(conn: &rusqlite::Connection) -> Option<String> {
    conn.query_row("SELECT sha256 FROM agreed_file WHERE id = 1", [], |r| r.get(0)).ok()
}

/// [`agreed`] read from the store at `path` before the config service opens it (the
/// daemon's start reads the settings before any service runs). A store that does not
/// exist yet has agreed with nothing.
pub fn agreed_in(path: &Path) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    agreed(&conn)
}

/// Where [`settle`] keeps the file a cut-off set left, when it puts the former back.
fn kept_of(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "agt.toml".into());
    target.with_file_name(format!(".{name}.cut-off-set"))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the temp files a set killed before its rename left beside `target`
/// (`.agt.toml.<pid>.<n>.tmp`, `settings::write_atomically`): only the config service
/// writes them, and this runs while none of its incarnations can be writing one.
fn remove_temp_files(target: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else { return Ok(()) };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let middle = file.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".tmp"));
        let ours = middle.and_then(|m| m.split_once('.')).is_some_and(|(pid, n)| {
            !pid.is_empty() && !n.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && n.bytes().all(|b| b.is_ascii_digit())
        });
        if ours {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

/// With the disk-full fault point armed and set for `agt.toml` (`disk_full`'s
/// `AGT_FAULT_DISK_FULL`, a flag file naming it), fails as a write on a full disk does
/// (ENOSPC), before the put-back changes anything: the tests' way to fill the disk under
/// a start's first write, made before any store is open.
fn fault_full(home_file: &Path) -> std::io::Result<()> {
    let name = home_file.file_name().map(|n| n.to_string_lossy());
    if crate::services::disk_full::injected_for(name.as_deref()) {
        return Err(std::io::Error::from_raw_os_error(28));
    }
    Ok(())
}

/// Finds what a set cut off by a crash left beside `home_file` and ends it as the
/// history says (`agreed`: [`agreed`]'s digest), as the module's table shows.
pub fn settle(home_file: &Path, agreed: Option<&str>) -> std::io::Result<Settled> {
    // The set wrote through a symlink to its target, and kept the former beside that.
    let target = std::fs::canonicalize(home_file).unwrap_or_else(|_| home_file.to_path_buf());
    remove_temp_files(&target)?;
    let former = Former::of(&target);
    let (link, none) = (exists(&former.link), exists(&former.none));
    if !link && !none {
        return Ok(Settled::Nothing);
    }
    let current = super::watch::read(&target)?;
    // Kept, not yet replaced: rename(2) between two links of one file does nothing, so
    // the link must go by name.
    let not_written = if link { same_file(&former.link, &target) } else { current.is_none() };
    let settled = if not_written {
        Settled::NotWritten
    } else if agreed == Some(digest(current.as_deref()).as_str()) {
        Settled::Recorded
    } else {
        fault_full(home_file)?;
        let kept = match current {
            Some(_) => {
                let kept = kept_of(&target);
                remove(&kept)?;
                std::fs::hard_link(&target, &kept)?;
                Some(kept)
            }
            None => None,
        };
        if link {
            std::fs::rename(&former.link, &target)?;
        } else {
            remove(&target)?;
        }
        Settled::PutBack { kept }
    };
    remove(&former.link)?;
    remove(&former.none)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(settled)
}

impl Settled {
    /// Says in the log what was found, if anything (after the start has its log).
    pub fn say(&self, file: &Path) {
        match self {
            Settled::Nothing => {}
            Settled::NotWritten => tracing::info!(
                file = %file.display(),
                "a config set was cut off (a crash) before it replaced the file: the file is as it was"
            ),
            Settled::Recorded => tracing::info!(
                file = %file.display(),
                "a config set was cut off (a crash) after its record committed: the file keeps its change"
            ),
            Settled::PutBack { kept } => tracing::warn!(
                file = %file.display(),
                kept = %kept.as_ref().map(|k| k.display().to_string()).unwrap_or_else(|| "none".into()),
                "a config set was cut off (a crash) before its record committed, so it was never acknowledged: \
                 the file is put back as it was before it; the file as the crash left it is kept (`kept`), \
                 in case it holds an edit made since"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The home's file as a set left it at each step, and what [`settle`] makes of it.
    fn home(old: Option<&str>) -> (tempfile::TempDir, PathBuf, Former) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agt.toml");
        if let Some(old) = old {
            std::fs::write(&file, old).unwrap();
        }
        let former = Former::of(&std::fs::canonicalize(dir.path()).unwrap().join("agt.toml"));
        (dir, file, former)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    }

    #[test]
    fn a_set_killed_after_its_link_leaves_the_file_and_no_link() {
        let (dir, file, former) = home(Some("a = 1\n"));
        std::fs::write(dir.path().join(".agt.toml.4242.0.tmp"), "a = 2\n").unwrap();
        std::fs::write(dir.path().join(".agt.toml.notes.tmp"), "not ours").unwrap();
        std::fs::hard_link(&file, &former.link).unwrap();
        assert_eq!(settle(&file, Some(&digest(Some("other")))).unwrap(), Settled::NotWritten);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a = 1\n");
        assert_eq!(names(dir.path()), [".agt.toml.notes.tmp", "agt.toml"], "the set's temp file is gone, no other");
    }

    #[test]
    fn a_set_killed_before_its_record_is_put_back_and_what_it_wrote_kept_aside() {
        let (dir, file, former) = home(Some("a = 1\n"));
        std::fs::hard_link(&file, &former.link).unwrap();
        std::fs::write(file.with_file_name("new"), "a = 2\n").unwrap();
        std::fs::rename(file.with_file_name("new"), &file).unwrap();
        let settled = settle(&file, Some(&digest(Some("a = 1\n")))).unwrap();
        assert!(matches!(settled, Settled::PutBack { kept: Some(_) }), "{settled:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a = 1\n");
        assert_eq!(std::fs::read_to_string(dir.path().join(".agt.toml.cut-off-set")).unwrap(), "a = 2\n");
        assert_eq!(names(dir.path()), [".agt.toml.cut-off-set", "agt.toml"]);
        // Settled: a second look finds nothing.
        assert_eq!(settle(&file, Some(&digest(Some("a = 1\n")))).unwrap(), Settled::Nothing);
    }

    #[test]
    fn a_set_killed_after_its_record_keeps_the_file() {
        let (dir, file, former) = home(Some("a = 1\n"));
        std::fs::hard_link(&file, &former.link).unwrap();
        std::fs::write(file.with_file_name("new"), "a = 2\n").unwrap();
        std::fs::rename(file.with_file_name("new"), &file).unwrap();
        assert_eq!(settle(&file, Some(&digest(Some("a = 2\n")))).unwrap(), Settled::Recorded);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a = 2\n");
        assert_eq!(names(dir.path()), ["agt.toml"]);
    }

    #[test]
    fn a_first_file_a_set_created_unrecorded_is_removed() {
        let (dir, file, former) = home(None);
        std::fs::File::create(&former.none).unwrap();
        assert_eq!(settle(&file, None).unwrap(), Settled::NotWritten, "killed before the rename");
        std::fs::File::create(&former.none).unwrap();
        std::fs::write(&file, "a = 2\n").unwrap();
        assert!(matches!(settle(&file, Some(&digest(None))).unwrap(), Settled::PutBack { kept: Some(_) }));
        assert!(!file.exists());
        assert_eq!(names(dir.path()), [".agt.toml.cut-off-set"]);
        std::fs::File::create(&former.none).unwrap();
        std::fs::write(&file, "a = 3\n").unwrap();
        assert_eq!(settle(&file, Some(&digest(Some("a = 3\n")))).unwrap(), Settled::Recorded);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a = 3\n");
    }
}
