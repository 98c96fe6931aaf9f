//! The chain's end kept outside `audit.db`: what lets `verify` see a tail that is gone.
//!
//! A hash chain shows a record changed, removed or reordered anywhere but at its end:
//! delete the last blocks of `audit.db` (or restore an older copy of it) and what is left
//! is a shorter chain that verifies. So after each commit audit writes the chain's last
//! seq and hash to `data/audit.head` ([`HEAD`], a line of JSON), and `verify` asks that
//! the chain still hold that record with that hash. Records past it are fine: the anchor
//! may lag.
//!
//! **Cheap.** Audit commits up to a few hundred times a second, on a background thread.
//! A start lays the file down whole (temp file and rename) and keeps it open; each
//! commit then overwrites its one record in place through that handle: one `pwrite` of
//! 130 bytes at offset 0, no `open`, `close` or `fsync`, after the commit (its replies
//! have gone by then), and nothing for a commit that chained nothing. A temp file and a
//! rename per commit cost ~80 µs of CPU and 130–260 µs on ext4 (a rename over a file
//! starts the writeback of the new one, `auto_da_alloc`); an `open` and a `close` around
//! each `pwrite` cost about four times the `pwrite` (8 µs against 2 on a VM). So the
//! record has a fixed length (the seq padded to 20 places: JSON allows the spaces) and a
//! check of its own (`check`, the first 16 hex digits of SHA-256 over its seq and hash):
//! a record a power loss tore reads as unreadable, not as another anchor. Only audit's
//! thread reads it while the daemon runs. A write that fails drops the handle: the next
//! commit lays the file down anew. So does a file deleted or replaced under the daemon
//! (writes through the handle would go nowhere anyone reads): at most once a second
//! ([`RECHECK`]; an `fstat` costs more than the `pwrite`) a commit asks whether the
//! handle's file is still linked.
//!
//! **What a stop can leave.** The anchor is written after the commit that makes it true:
//! - a crash (SIGKILL, a panic) between the two leaves it behind the store, met by an
//!   older record: not an alarm; a crash cannot tear the one `pwrite` of a record;
//! - a power loss can undo the anchor's last writes (behind again), or tear its record,
//!   or (on a file system that may persist a rename before the renamed file's data)
//!   leave a file a start laid down empty: an anchor that cannot be read, does not parse
//!   or does not check out cannot be compared, so the chain's end goes unchecked. That is
//!   not hidden: `verify` fails while such a file stands (`anchor_unreadable`), and a
//!   start that finds one moves it to [`UNREADABLE`] before it lays the anchor down anew,
//!   where it fails `verify` until the operator, having looked into it, deletes it (a
//!   power loss explains it; a chain cut with the anchor garbled would read the same).
//!   An older agt's record (no check) is not compared, as before;
//! - with `durability = "normal"` a power loss can also undo the store's last commits
//!   (SQLite's `synchronous=NORMAL` does not sync a commit) while the anchor written
//!   after them survives: the anchor is then ahead, and `verify` reports those records
//!   missing. They are: the journal of commands and the bus store what they held again,
//!   but as new records. That is the honest limit of an anchor without `fsync`. With
//!   `durability = "full"` every commit is synced before the anchor is written, so the
//!   anchor is never ahead and needs no `fsync` of its own: one would only keep it from
//!   lagging, at a second `fsync` per commit on the thread every command waits for there.
//!
//! **Kept when unmet.** The first commit after a start would overwrite the anchor with
//! the new end, and the records stored next take the missing numbers again: the evidence
//! would be gone within milliseconds. So when audit starts and finds its chain short of
//! the anchor (or holding another record at the anchor's seq), it keeps that anchor, and
//! where the chain ended, in `data/audit.head.lost` ([`LOST`], synced: it is rare, and it
//! is the evidence), and `verify` fails until someone deletes that file (or restores a
//! store that holds the record). A second loss before the first is accepted keeps
//! whichever anchor reaches further, from the lower chain end, so `verify` names both.
//!
//! **Not a defence against an attacker.** Whoever can edit `audit.db` can edit these
//! files too (or delete them: a home without an anchor verifies as before). The anchor
//! catches a tail lost to a tool, an accident or a careless restore, and a tail deleted
//! without the anchor; against someone with full write access only a witness elsewhere
//! (another machine keeping the anchors) would do.

use super::records;
use crate::api::{UnmetAnchor, UnreadableAnchor};
use crate::services::actor::ServiceError;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The anchor's file under `data/`: the chain's end as the last commit left it.
pub(super) const HEAD: &str = "audit.head";

/// The file under `data/` that keeps an anchor a start found the chain short of.
pub(super) const LOST: &str = "audit.head.lost";

/// The file under `data/` that keeps an anchor a start could not read (so could not
/// compare), moved aside before the start lays [`HEAD`] down anew.
pub(super) const UNREADABLE: &str = "audit.head.unreadable";

/// How often a commit asks whether the [`HEAD`] it holds open is still linked: a file
/// deleted (or replaced by a rename) while the daemon runs is laid down anew within this
/// long, at the next commit.
const RECHECK: Duration = Duration::from_secs(1);

/// What [`HEAD`] holds: `{"seq", "hash", "check"}`, see [`head_text`]. An agt before the
/// check wrote `{"seq", "hash"}` alone.
#[derive(Debug, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    #[serde(default)]
    check: Option<String>,
}

/// [`HEAD`]'s record for the chain's end (`seq`, `hash`): a line of JSON of one length
/// for every seq (and every chain hash: 64 hex digits), so that a commit overwrites it in
/// place, with its own check.
pub(super) fn head_text(seq: u64, hash: &str) -> String {
    format!("{{\"seq\":{seq:>20},\"hash\":\"{hash}\",\"check\":\"{}\"}}\n", head_check(seq, hash))
}

/// The first 16 hex digits of SHA-256 over `seq hash`: what tells a whole record from one
/// a power loss tore (an old seq beside a new hash would read as another anchor).
fn head_check(seq: u64, hash: &str) -> String {
    let digest = Sha256::new().chain_update(itoa::Buffer::new().format(seq)).chain_update(b" ").chain_update(hash).finalize();
    hex::encode(&digest[..8])
}

/// [`HEAD`]'s anchor: found if it parses and checks out; unreadable if it cannot be read,
/// does not parse (a power loss may leave it empty) or does not check out (torn, or
/// edited); absent if there is none, or if an agt before the check wrote it (a whole
/// file, but its record is not compared, as before).
fn read_head(path: &Path) -> Read<Head> {
    match read::<Head>(path) {
        Read::Found(Head { check: None, .. }) => Read::Absent,
        Read::Found(head) if head.check.as_deref() != Some(head_check(head.seq, &head.hash).as_str()) => {
            Read::Unreadable("does not check out (a power loss tore it, or it was edited)".into())
        }
        other => other,
    }
}

/// What [`LOST`] holds: the anchor, and where the chain ended when audit started and
/// found it unmet (none: the chain went on past `seq` with another record there).
#[derive(Debug, Serialize, Deserialize)]
struct Lost {
    seq: u64,
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_end: Option<u64>,
}

/// How the chain stands against an anchor.
#[derive(Debug, PartialEq)]
enum Standing {
    /// The chain holds the anchor's record, with its hash.
    Met,
    /// The chain ends at this seq, before the anchor's record.
    Short(u64),
    /// The chain goes on past the anchor's seq, but with another record there, or none.
    Differs,
}

impl Standing {
    /// Where the chain ended short of the anchor, if it did.
    fn chain_end(&self) -> Option<u64> {
        match self {
            Standing::Short(n) => Some(*n),
            _ => None,
        }
    }
}

/// How the chain of `conn`, whose newest record is `chain_end`, stands against the
/// anchor (`seq`, `hash`).
fn standing(conn: &Connection, seq: u64, hash: &str, chain_end: u64) -> rusqlite::Result<Standing> {
    if seq == 0 {
        return Ok(Standing::Met); // an empty chain: nothing anchored
    }
    if seq > chain_end {
        return Ok(Standing::Short(chain_end));
    }
    Ok(match records::hash_at(conn, seq)? {
        Some(h) if h == hash => Standing::Met,
        _ => Standing::Differs,
    })
}

/// Audit's anchor: writes [`HEAD`] after each commit, and compares the files with the
/// chain.
pub(super) struct Anchor {
    /// `$AGT_HOME/data`.
    dir: PathBuf,
    /// The seq this incarnation last wrote to [`HEAD`] (0: none yet): a commit that
    /// chained nothing writes nothing.
    written: u64,
    /// [`HEAD`] as this incarnation laid it down, still open (`None`: nothing laid down
    /// yet, or a write failed): a record of its length is overwritten in place through
    /// it, anything else replaces the file whole.
    held: Option<Held>,
    /// Whether the last write failed: said in the log once, not at every commit.
    failing: bool,
}

/// [`HEAD`], open for writing since this incarnation laid it down.
struct Held {
    file: File,
    /// The length of the record laid down: the one length written in place.
    len: usize,
    /// When the file was last known to be linked: asked again after [`RECHECK`].
    linked_at: Instant,
}

impl Held {
    /// Lays [`HEAD`] down whole in `dir` with `text`, and keeps it open.
    fn lay_down(dir: &Path, text: &[u8]) -> std::io::Result<Held> {
        let file = replace(dir, HEAD, text, false)?;
        Ok(Held { file, len: text.len(), linked_at: Instant::now() })
    }

    /// Whether the file is still linked (not deleted, nor replaced by a rename), asked of
    /// the kernel at most once a [`RECHECK`]; an `fstat` that fails counts as gone.
    fn still_linked(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.linked_at) < RECHECK {
            return true;
        }
        let linked = self.file.metadata().is_ok_and(|m| m.nlink() > 0);
        if linked {
            self.linked_at = now;
        }
        linked
    }
}

impl Anchor {
    /// Compares the anchor a previous run left with the chain that `conn` holds (its
    /// newest record is `chain_end`, `end_hash`); keeps it in [`LOST`] if the chain does
    /// not hold it; then anchors the chain's end.
    pub(super) fn open(dir: PathBuf, conn: &Connection, chain_end: u64, end_hash: &str) -> Result<Anchor, ServiceError> {
        let mut anchor = Anchor { dir, written: 0, held: None, failing: false };
        match read_head(&anchor.dir.join(HEAD)) {
            Read::Found(head) => {
                let now = standing(conn, head.seq, &head.hash, chain_end)?;
                if now != Standing::Met {
                    anchor.keep_lost(Lost { seq: head.seq, hash: head.hash, chain_end: now.chain_end() })?;
                }
            }
            Read::Unreadable(why) => anchor.keep_unreadable(&why, chain_end)?,
            Read::Absent => {}
        }
        anchor.advance(chain_end, end_hash);
        Ok(anchor)
    }

    /// Moves an anchor this start cannot read to [`UNREADABLE`] before [`HEAD`] is laid
    /// down anew: the chain's end was not checked at this start, and laying it down
    /// would leave nothing to say so. An earlier one nobody has looked into yet is kept
    /// (it is the older evidence); this one is then only logged.
    fn keep_unreadable(&self, why: &str, chain_end: u64) -> Result<(), ServiceError> {
        let (head, kept) = (self.dir.join(HEAD), self.dir.join(UNREADABLE));
        if std::fs::symlink_metadata(&kept).is_ok() {
            tracing::error!(
                chain_end,
                "the audit chain's anchor (data/{HEAD}) {why}, so the chain's end was not checked at this start; data/{UNREADABLE} already keeps an anchor an earlier start could not read, so this one is only logged"
            );
            return Ok(());
        }
        std::fs::rename(&head, &kept)
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all())
            .map_err(|e| ServiceError::Other(format!("keeping the audit chain's unreadable anchor in data/{UNREADABLE}: {e}")))?;
        tracing::error!(
            chain_end,
            "the audit chain's anchor (data/{HEAD}) {why}, so the chain's end was not checked at this start; it is kept in data/{UNREADABLE}, and `agt audit verify` fails until that file is deleted"
        );
        Ok(())
    }

    /// Anchors the chain's end (`seq`, `hash`) once the commit that stored it is done.
    /// A failed write only leaves the anchor behind, which `verify` allows: it is logged,
    /// the file is laid down anew (and opened again) at the next commit, and audit goes
    /// on.
    pub(super) fn advance(&mut self, seq: u64, hash: &str) {
        if seq == self.written {
            return;
        }
        let text = head_text(seq, hash);
        let held = match self.held.take() {
            Some(mut held) if held.len == text.len() => held.still_linked().then_some(held),
            _ => None,
        };
        let wrote = match held {
            // Not truncated first: ext4 starts writing a file truncated to nothing back at
            // its `close` (`auto_da_alloc`), the cost this write is here to avoid.
            Some(held) => held.file.write_all_at(text.as_bytes(), 0).map(|()| held),
            None => Held::lay_down(&self.dir, text.as_bytes()),
        };
        match wrote {
            Ok(held) => {
                if self.failing {
                    tracing::info!(seq, "the audit chain's anchor is written again");
                    self.failing = false;
                }
                self.written = seq;
                self.held = Some(held);
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, behind = self.written, "could not write the audit chain's anchor (data/{HEAD}); it stays behind until a write succeeds");
                    self.failing = true;
                }
            }
        }
    }

    /// How the chain of `conn` (its newest record `chain_end`) stands against the anchor
    /// files: the anchor it does not hold, if any (the one kept in [`LOST`] or the one in
    /// [`HEAD`], whichever vouches for the earlier missing record), and the anchor file
    /// that cannot be read, if any (one a start kept in [`UNREADABLE`] first, then
    /// [`LOST`], then [`HEAD`]): an anchor that cannot be read vouches for nothing, so
    /// the chain's end is unchecked while it stands.
    pub(super) fn check(&self, conn: &Connection, chain_end: u64) -> rusqlite::Result<(Option<UnmetAnchor>, Option<UnreadableAnchor>)> {
        let mut found: Vec<UnmetAnchor> = Vec::new();
        let mut unreadable: Vec<UnreadableAnchor> = Vec::new();
        let kept = self.dir.join(UNREADABLE);
        if std::fs::symlink_metadata(&kept).is_ok() {
            // It is there because a start could not read it: say why, as it reads now.
            let error = match read_head(&kept) {
                Read::Unreadable(why) => why,
                _ => "could not be read when the daemon started".into(),
            };
            unreadable.push(UnreadableAnchor { file: format!("data/{UNREADABLE}"), error });
        }
        match read::<Lost>(&self.dir.join(LOST)) {
            Read::Found(lost) => {
                let now = standing(conn, lost.seq, &lost.hash, chain_end)?;
                if now != Standing::Met {
                    // Where the chain ended when the loss was found: the records numbered
                    // after it since then are newer ones.
                    let chain_end = lost.chain_end.or(now.chain_end());
                    found.push(UnmetAnchor { seq: lost.seq, hash: lost.hash, chain_end, file: format!("data/{LOST}") });
                }
            }
            Read::Unreadable(error) => unreadable.push(UnreadableAnchor { file: format!("data/{LOST}"), error }),
            Read::Absent => {}
        }
        match read_head(&self.dir.join(HEAD)) {
            Read::Found(head) => {
                let now = standing(conn, head.seq, &head.hash, chain_end)?;
                if now != Standing::Met {
                    found.push(UnmetAnchor { seq: head.seq, hash: head.hash, chain_end: now.chain_end(), file: format!("data/{HEAD}") });
                }
            }
            Read::Unreadable(error) => unreadable.push(UnreadableAnchor { file: format!("data/{HEAD}"), error }),
            Read::Absent => {}
        }
        Ok((found.into_iter().min_by_key(UnmetAnchor::first_missing), unreadable.into_iter().next()))
    }

    /// Keeps an anchor the chain does not hold in [`LOST`]. When one is kept already (an
    /// earlier loss nobody has accepted yet), the one that reaches further is kept, from
    /// the lower of the two chain ends: a second loss after the first must not leave
    /// `verify` naming only the first, and deleting the file would then hide the second.
    fn keep_lost(&self, mut lost: Lost) -> Result<(), ServiceError> {
        let missing = match lost.chain_end {
            Some(end) => format!("the chain ends at record {end}: records {}..{} are missing", end + 1, lost.seq),
            None => format!("the chain holds another record {} (or none)", lost.seq),
        };
        if let Read::Found(kept) = read::<Lost>(&self.dir.join(LOST)) {
            if kept.seq >= lost.seq {
                tracing::error!(
                    anchor = lost.seq,
                    "the audit chain does not hold its anchor: {missing}; data/{LOST} already keeps an anchor that reaches as far, so this one is only logged"
                );
                return Ok(());
            }
            lost.chain_end = match (kept.chain_end, lost.chain_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let text = serde_json::to_string(&lost).expect("an anchor encodes") + "\n";
        replace(&self.dir, LOST, text.as_bytes(), true)
            .map_err(|e| ServiceError::Other(format!("keeping the audit chain's unmet anchor in data/{LOST}: {e}")))?;
        tracing::error!(
            anchor = lost.seq,
            "the audit chain does not hold its anchor: {missing} (deleted, or an older audit.db restored); the anchor is kept in data/{LOST}, and `agt audit verify` fails until that file is deleted"
        );
        Ok(())
    }
}

/// What reading an anchor file found.
enum Read<T> {
    /// No such file.
    Absent,
    /// A file that cannot be read or does not parse (a power loss may leave it empty or
    /// torn; a permission or a stray edit may stand in the way): why, in words.
    Unreadable(String),
    Found(T),
}

/// An anchor file's content.
fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Read<T> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Absent,
        Err(e) => return Read::Unreadable(format!("cannot be read ({e})")),
    };
    match serde_json::from_slice(&bytes) {
        Ok(anchor) => Read::Found(anchor),
        Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => Read::Unreadable("is empty".into()),
        Err(e) => Read::Unreadable(format!("does not parse ({e})")),
    }
}

/// Replaces `dir/name` with `text` through a temp file and a rename, so that a reader (or
/// a crash) sees the old file or the new one; with `sync`, durably (the file, then the
/// directory's entry). The file is the owner's alone, as everything under `data/` is.
/// Answers the new file, open for writing (the rename keeps the handle on it).
fn replace(dir: &Path, name: &str, text: &[u8], sync: bool) -> std::io::Result<File> {
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(text)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&temp, dir.join(name))?;
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    /// Laid down once, then overwritten in place through the handle kept open: the same
    /// file (inode) holds each new record.
    #[test]
    fn commits_overwrite_the_file_laid_down_through_one_handle() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let head = dir.path().join(HEAD);
        let mut anchor = Anchor::open(dir.path().to_path_buf(), &conn, 1, HASH).unwrap();
        assert_eq!(std::fs::read_to_string(&head).unwrap(), head_text(1, HASH));
        let laid = inode(&head);
        for seq in [2, 3, 99_999] {
            anchor.advance(seq, HASH);
            assert_eq!(std::fs::read_to_string(&head).unwrap(), head_text(seq, HASH));
            assert_eq!(inode(&head), laid, "overwritten in place, not replaced");
        }
        assert!(!dir.path().join(format!("{HEAD}.tmp")).exists());
    }

    /// A write through the handle that fails drops it: the next commit lays the file
    /// down anew, and writes in place through the new handle after that.
    #[test]
    fn a_failed_write_lays_the_file_down_anew_at_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let head = dir.path().join(HEAD);
        let mut anchor = Anchor::open(dir.path().to_path_buf(), &conn, 1, HASH).unwrap();
        // A handle that cannot write (EBADF), as a failing disk would answer.
        anchor.held.as_mut().unwrap().file = File::open(&head).unwrap();
        anchor.advance(2, HASH);
        assert!(anchor.failing && anchor.held.is_none());
        assert_eq!(std::fs::read_to_string(&head).unwrap(), head_text(1, HASH), "behind, which verify allows");
        anchor.advance(3, HASH);
        assert!(!anchor.failing);
        assert_eq!(std::fs::read_to_string(&head).unwrap(), head_text(3, HASH));
        let laid = inode(&head);
        anchor.advance(4, HASH);
        assert_eq!((std::fs::read_to_string(&head).unwrap(), inode(&head)), (head_text(4, HASH), laid));
    }

    /// A file deleted, or replaced by a rename, under the running daemon would take the
    /// writes through the handle unseen: once the recheck is due, the next commit lays
    /// it down anew.
    #[test]
    fn a_file_deleted_or_replaced_meanwhile_is_laid_down_anew() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let head = dir.path().join(HEAD);
        let mut anchor = Anchor::open(dir.path().to_path_buf(), &conn, 1, HASH).unwrap();
        let due = |anchor: &mut Anchor| anchor.held.as_mut().unwrap().linked_at -= RECHECK;

        std::fs::remove_file(&head).unwrap();
        due(&mut anchor);
        anchor.advance(2, HASH);
        assert_eq!(std::fs::read_to_string(&head).unwrap(), head_text(2, HASH), "deleted: laid down anew");

        let other = dir.path().join("other");
        std::fs::write(&other, "put back by hand\n").unwrap();
        std::fs::rename(&other, &head).unwrap();
        due(&mut anchor);
        anchor.advance(3, HASH);
        assert_eq!(std::fs::read_to_string(&head).unwrap(), head_text(3, HASH), "replaced: laid down anew");

        // Not due: the handle is trusted, and no fstat is spent.
        let laid = inode(&head);
        anchor.advance(4, HASH);
        assert_eq!((std::fs::read_to_string(&head).unwrap(), inode(&head)), (head_text(4, HASH), laid));
    }
}
