//! The chain's end kept outside `audit.db`: what lets `verify` see a tail that is gone.
//!
//! A hash chain shows a record changed, removed or reordered anywhere but at its end:
//! delete the last blocks of `audit.db` (or restore an older copy of it) and what is left
//! is a shorter chain that verifies. So after each commit audit writes the chain's last
//! seq and hash to `data/audit.head` ([`HEAD`], a line of JSON, temp file and rename:
//! readers see the old anchor or the new one), and `verify` asks that the chain still
//! hold that record with that hash. Records past it are fine: the anchor may lag.
//!
//! **Cheap.** Audit commits a few hundred times a second under load, on a background
//! thread. The write is an `open`, a `write` of ~90 bytes, a `close` and a `rename`, with
//! no `fsync`, after the commit (its replies have gone by then), and none for a commit
//! that chained nothing.
//!
//! **What a stop can leave.** The anchor is written after the commit that makes it true:
//! - a crash (SIGKILL, a panic) between the two leaves it behind the store, met by an
//!   older record: not an alarm;
//! - a power loss can undo the anchor's last writes (behind again), or, on a file system
//!   that may persist a rename before the renamed file's data, leave it empty: an anchor
//!   that does not parse is not compared (a warning in the log), as in a home an older
//!   agt wrote, and the next start writes it anew;
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
//! store that holds the record). Only the first such anchor is kept; a later one is
//! logged.
//!
//! **Not a defence against an attacker.** Whoever can edit `audit.db` can edit these
//! files too (or delete them: a home without an anchor verifies as before). The anchor
//! catches a tail lost to a tool, an accident or a careless restore, and a tail deleted
//! without the anchor; against someone with full write access only a witness elsewhere
//! (another machine keeping the anchors) would do.

use super::records;
use crate::api::UnmetAnchor;
use crate::services::actor::ServiceError;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The anchor's file under `data/`: the chain's end as the last commit left it.
pub(super) const HEAD: &str = "audit.head";

/// The file under `data/` that keeps an anchor a start found the chain short of.
pub(super) const LOST: &str = "audit.head.lost";

/// What [`HEAD`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
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
    /// Whether the last write failed: said in the log once, not at every commit.
    failing: bool,
}

impl Anchor {
    /// Compares the anchor a previous run left with the chain that `conn` holds (its
    /// newest record is `chain_end`, `end_hash`); keeps it in [`LOST`] if the chain does
    /// not hold it; then anchors the chain's end.
    pub(super) fn open(dir: PathBuf, conn: &Connection, chain_end: u64, end_hash: &str) -> Result<Anchor, ServiceError> {
        let mut anchor = Anchor { dir, written: 0, failing: false };
        if let Some(head) = read::<Head>(&anchor.dir.join(HEAD)) {
            let now = standing(conn, head.seq, &head.hash, chain_end)?;
            if now != Standing::Met {
                anchor.keep_lost(Lost { seq: head.seq, hash: head.hash, chain_end: now.chain_end() })?;
            }
        }
        anchor.advance(chain_end, end_hash);
        Ok(anchor)
    }

    /// Anchors the chain's end (`seq`, `hash`) once the commit that stored it is done.
    /// A failed write only leaves the anchor behind, which `verify` allows: it is logged
    /// and tried again at the next commit, and audit goes on.
    pub(super) fn advance(&mut self, seq: u64, hash: &str) {
        if seq == self.written {
            return;
        }
        let text = format!("{{\"seq\":{seq},\"hash\":\"{hash}\"}}\n");
        match replace(&self.dir, HEAD, text.as_bytes(), false) {
            Ok(()) => {
                if self.failing {
                    tracing::info!(seq, "the audit chain's anchor is written again");
                    self.failing = false;
                }
                self.written = seq;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, behind = self.written, "could not write the audit chain's anchor (data/{HEAD}); it stays behind until a write succeeds");
                    self.failing = true;
                }
            }
        }
    }

    /// The anchor the chain of `conn` (its newest record `chain_end`) does not hold, if
    /// any: the one kept in [`LOST`] or the one in [`HEAD`], whichever vouches for the
    /// earlier missing record.
    pub(super) fn unmet(&self, conn: &Connection, chain_end: u64) -> rusqlite::Result<Option<UnmetAnchor>> {
        let mut found: Vec<UnmetAnchor> = Vec::new();
        if let Some(lost) = read::<Lost>(&self.dir.join(LOST)) {
            let now = standing(conn, lost.seq, &lost.hash, chain_end)?;
            if now != Standing::Met {
                // Where the chain ended when the loss was found: the records numbered
                // after it since then are newer ones.
                let chain_end = lost.chain_end.or(now.chain_end());
                found.push(UnmetAnchor { seq: lost.seq, hash: lost.hash, chain_end, file: format!("data/{LOST}") });
            }
        }
        if let Some(head) = read::<Head>(&self.dir.join(HEAD)) {
            let now = standing(conn, head.seq, &head.hash, chain_end)?;
            if now != Standing::Met {
                found.push(UnmetAnchor { seq: head.seq, hash: head.hash, chain_end: now.chain_end(), file: format!("data/{HEAD}") });
            }
        }
        Ok(found.into_iter().min_by_key(UnmetAnchor::first_missing))
    }

    /// Keeps an anchor the chain does not hold in [`LOST`], unless one is kept already
    /// (the first loss is the evidence; a later one is only logged).
    fn keep_lost(&self, lost: Lost) -> Result<(), ServiceError> {
        let missing = match lost.chain_end {
            Some(end) => format!("the chain ends at record {end}: records {}..{} are missing", end + 1, lost.seq),
            None => format!("the chain holds another record {} (or none)", lost.seq),
        };
        if self.dir.join(LOST).exists() {
            tracing::error!(
                anchor = lost.seq,
                "the audit chain does not hold its anchor: {missing}; data/{LOST} already keeps an earlier anchor, so this one is only logged"
            );
            return Ok(());
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

/// An anchor file's content; `None` if there is none, or if it does not parse (a power
/// loss may leave it empty: said in the log, and not taken as tampering).
fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "the audit chain's anchor cannot be read; it is not compared");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(anchor) => Some(anchor),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "the audit chain's anchor does not parse; it is not compared");
            None
        }
    }
}

/// Replaces `dir/name` with `text` through a temp file and a rename, so that a reader (or
/// a crash) sees the old file or the new one; with `sync`, durably (the file, then the
/// directory's entry). The file is the owner's alone, as everything under `data/` is.
fn replace(dir: &Path, name: &str, text: &[u8], sync: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(text)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(&temp, dir.join(name))?;
    if sync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
