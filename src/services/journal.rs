//! The intake journal's log: an append-only file of checksummed records, the one write a
//! placement waits for (see `services::intake` for what a record holds and why).
//!
//! A SQLite store did this job before (`data/trading-journal.db`). Its commit wrote two
//! or three 4 KiB pages per batch, and its log had to be checkpointed into the database
//! (fsyncs) and restarted by the lane itself: 3–18 ms stalls on the answer's path under
//! load. The journal needs none of that: records are only ever appended, read back once
//! when the lane starts, and deleted once trading, risk and orders have all committed
//! them. So it is a directory of segment files, `data/trading-journal/<first seq>.log`,
//! each a run of frames:
//!
//! ```text
//! length: u32 LE | seq: u64 LE | check: first 8 bytes of SHA-256(seq | payload) | payload (JSON)
//! ```
//!
//! **Durable like the stores.** With `durability = "normal"` an append is one `write`
//! (in the page cache once it returns, so it survives SIGKILL, like a commit with
//! `synchronous=NORMAL`); with `"full"` it is also `fdatasync`ed before the lane
//! answers. A frame that does not check out (a power loss cut the tail) ends the
//! journal: it and everything after it are dropped when the journal opens, like an
//! invalid frame in SQLite's log. Record numbers only rise; a number that does not is
//! damage, and the journal refuses to open.
//!
//! **Pruning** deletes whole segments: a new segment begins once the current one passes
//! [`SEGMENT_BYTES`], and an older one goes once every record in it is applied.
//!
//! **Upgrade:** records an agt from before left in `trading-journal.db` are copied into
//! the log when it first opens (the log made durable), then that store is removed.

use crate::services::actor::ServiceError;
use crate::services::config::settings::Durability;
use crate::services::intake::{self, Record};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A segment is closed, and a new one begun, once it holds this many bytes (~5 k
/// records): small enough that pruning frees space soon, large enough that segments are
/// rarely created.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The journal's directory under `data/`, and the name of its commit metric.
pub const NAME: &str = "trading-journal";

const HEADER: usize = 4 + 8 + 8;

/// An append-only journal of records of type `T` in `data/<name>/`: the lane's intake
/// journal (the default), and audit's journal of commands (`services::audit`). One
/// writer at a time.
pub struct Journal<T = Record> {
    name: &'static str,
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    /// Segments by first record number, oldest first; the last is written.
    segments: Vec<(i64, PathBuf)>,
    /// The last segment, open for appending, and its length.
    current: Option<(File, u64)>,
    last: i64,
    buf: Vec<u8>,
    /// Why the journal takes no more appends: a torn append it could not cut back.
    broken: Option<String>,
    records: PhantomData<fn() -> T>,
}

/// `file.write_all(data)`, or, with the fault point of `disk_full` armed and set, the
/// first half of `data` then ENOSPC: a write a full disk cut short.
fn write_all(file: &mut File, data: &[u8]) -> std::io::Result<()> {
    if crate::services::disk_full::injected() {
        file.write_all(&data[..data.len() / 2])?;
        return Err(std::io::Error::from_raw_os_error(28));
    }
    file.write_all(data)
}

/// A journal's segment files and newest record number at one moment
/// ([`Journal::snapshot`]).
pub struct Snapshot<T> {
    name: &'static str,
    segments: Vec<(i64, PathBuf)>,
    last: i64,
    records: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Snapshot<T> {
    /// The newest record's number when the snapshot was taken.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The records after `seq` up to the snapshot's newest, oldest first, reading only
    /// the segments that can hold them, and no further segment once it has `limit` (so
    /// a reader far behind holds a segment or so at a time). Appends made since are past
    /// the snapshot's newest and are left alone, a frame half written among them
    /// included. The caller must keep the segments from being deleted meanwhile (only it
    /// prunes).
    pub fn read(&self, seq: i64, limit: usize) -> Result<Vec<(i64, T)>, ServiceError> {
        let mut out = Vec::new();
        for (i, (_, path)) in self.segments.iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            if self.segments.get(i + 1).is_some_and(|(next, _)| *next <= seq + 1) {
                continue; // every record in it is at or below `seq`
            }
            let mut bytes = Vec::new();
            match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
                Ok(_) => {}
                // Only a pruned segment goes while the journal is open, and every record
                // in it was applied (see [`Journal::check_frames`]).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", path, e)),
            }
            for (at, payload) in decode(&bytes).0 {
                if at <= seq || at > self.last {
                    continue;
                }
                let record = serde_json::from_slice(payload)
                    .map_err(|e| ServiceError::Other(format!("record {at} of the journal {} does not read back: {e}", self.name)))?;
                out.push((at, record));
            }
        }
        Ok(out)
    }
}

/// Segment files taken out of a journal ([`Journal::detach`]), to delete.
#[must_use = "the files stay on disk until deleted"]
pub struct Detached {
    files: Vec<PathBuf>,
}

impl Detached {
    /// Deletes the files on a thread of its own, at background priority, and returns at
    /// once. The trading lane prunes so: every stall of the lane holds up the placements
    /// that arrive meanwhile, and an `unlink` of a full segment (ext4 frees its blocks
    /// then) was ~1 ms every ~5,000 records, among the longest things it did at 10,000
    /// orders/s. Where no thread can be started, they are deleted here.
    pub fn delete_apart(self) {
        if self.files.is_empty() {
            return;
        }
        let files = self.files.clone();
        let spawned = std::thread::Builder::new().name("journal-prune".into()).spawn(move || {
            crate::services::priority::lower_this_thread();
            Detached { files }.delete_or_warn();
        });
        if spawned.is_err() {
            self.delete_or_warn();
        }
    }

    /// A file left behind is only read again at the next start and passed over.
    fn delete_or_warn(self) {
        if let Err(e) = self.delete() {
            tracing::warn!(error = %e, "pruning a journal");
        }
    }

    pub fn delete(self) -> Result<(), ServiceError> {
        for path in self.files {
            std::fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
        }
        Ok(())
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Other(format!("the journal cannot {what} {}: {e}", path.display()))
}

fn check(seq: i64, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(seq.to_le_bytes());
    h.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize()[..8]);
    out
}

/// One frame, appended to `buf`.
fn encode<T: Serialize>(buf: &mut Vec<u8>, seq: i64, record: &T) -> Result<(), ServiceError> {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    crate::api::json::write(buf, record).map_err(|e| ServiceError::Other(format!("a journal record does not encode: {e}")))?;
    let len = (buf.len() - at - HEADER) as u32;
    let sum = check(seq, &buf[at + HEADER..]);
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    buf[at + 4..at + 12].copy_from_slice(&seq.to_le_bytes());
    buf[at + 12..at + 20].copy_from_slice(&sum);
    Ok(())
}

/// The frames of one segment that check out, and the length they span.
fn decode(bytes: &[u8]) -> (Vec<(i64, &[u8])>, usize) {
    let (mut out, mut at) = (Vec::new(), 0);
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let seq = i64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap());
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if check(seq, payload)[..] != bytes[at + 12..at + 20] {
            break;
        }
        out.push((seq, payload));
        at += HEADER + len;
    }
    (out, at)
}

impl Journal<Record> {
    /// Opens (or creates) the intake journal in `data/trading-journal/` and reads what it
    /// holds.
    pub fn open(home: &crate::daemon::Home, durability: Durability) -> Result<Journal, ServiceError> {
        Self::open_with(home, durability, SEGMENT_BYTES)
    }

    /// [`Journal::open`] with segments closed at `segment_bytes` (tests use tiny ones).
    pub(crate) fn open_with(home: &crate::daemon::Home, durability: Durability, segment_bytes: u64) -> Result<Journal, ServiceError> {
        let mut j = Journal::open_named(home, NAME, durability, segment_bytes)?;
        j.take_over_old_store(home)?;
        Ok(j)
    }

    /// Copies what an agt from before left in `trading-journal.db` into the log, makes
    /// the log durable, then removes that store. A crash in between copies nothing twice:
    /// only records after the log's last are copied.
    fn take_over_old_store(&mut self, home: &crate::daemon::Home) -> Result<(), ServiceError> {
        let path = home.store(NAME);
        if !path.exists() {
            return Ok(());
        }
        let conn = rusqlite::Connection::open(&path)?;
        let has_table: bool = conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'intake'", [], |r| r.get(0))?;
        let old = if has_table { intake::after(&conn, self.last)? } else { Vec::new() };
        drop(conn);
        if !old.is_empty() {
            tracing::info!(records = old.len(), "moving the intake journal out of trading-journal.db into data/trading-journal/");
            // Numbered as they were, in runs of consecutive numbers (one append, and one
            // fdatasync, each: a gap is not expected, but costs nothing to keep right).
            let durability = std::mem::replace(&mut self.durability, Durability::Full);
            let mut appended = Ok(());
            for run in old.chunk_by(|(a, _), (b, _)| *b == a + 1) {
                let records: Vec<Record> = run.iter().map(|(_, r)| Record::Place(r.clone())).collect();
                appended = self.append_all(run[0].0, &records);
                if appended.is_err() {
                    break;
                }
            }
            self.durability = durability;
            appended?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| io("remove", &p, e))?;
            }
        }
        Ok(())
    }
}

impl<T: Serialize + DeserializeOwned + Clone> Journal<T> {
    /// Opens (or creates) the journal in `data/<name>/` and reads what it holds, cutting
    /// a torn tail.
    pub fn open_named(
        home: &crate::daemon::Home,
        name: &'static str,
        durability: Durability,
        segment_bytes: u64,
    ) -> Result<Journal<T>, ServiceError> {
        let dir = home.data_dir().join(name);

        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| io("list", &dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .filter_map(|p| Some((p.file_stem()?.to_str()?.parse::<i64>().ok()?, p)))
            .collect();
        segments.sort();
        let mut j = Journal {
            name,
            dir,
            durability,
            segment_bytes,
            segments,
            current: None,
            last: 0,
            buf: Vec::new(),
            broken: None,
            records: PhantomData,
        };
        j.last = j.check_frames()?;
        Ok(j)
    }

    /// Reads every frame, checking that each checks out and that the numbers rise, and
    /// gives the newest record's number (0 if none). A journal that ends in a frame that
    /// does not check out is cut there (that segment truncated, later ones removed). Records are not decoded here: after a clean stop every one is
    /// applied already, and decoding a segment's JSON twice (here, then for the lane's
    /// redo) was most of a start-up after a busy run (60 ms against 27 with ~5 k records
    /// left; BENCHMARKS.md, session 28). [`Journal::after`] decodes what is to be redone.
    fn check_frames(&mut self) -> Result<i64, ServiceError> {
        let mut last: Option<i64> = None;
        let mut cut_at = None;
        for (i, (_, path)) in self.segments.iter().enumerate() {
            let mut bytes = Vec::new();
            match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
                Ok(_) => {}
                // Only a pruned segment goes while the journal is open: a lane that
                // restarts may list one that its predecessor's deletion
                // ([`Detached::delete_apart`]) then takes away. Its records were all applied.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", path, e)),
            }
            let (frames, good) = decode(&bytes);
            for (seq, _) in frames {
                if let Some(prev) = last.filter(|prev| seq <= *prev) {
                    return Err(ServiceError::Other(format!(
                        "the journal {} is damaged: record {seq} follows {prev} in {}",
                        self.name,
                        path.display()
                    )));
                }
                last = Some(seq);
            }
            if good < bytes.len() {
                cut_at = Some((i, good, bytes.len() - good));
                break;
            }
        }
        if let Some((i, good, dropped)) = cut_at {
            let path = self.segments[i].1.clone();
            tracing::warn!(path = %path.display(), kept = good, dropped, "a journal ends in a frame that does not check out (cut by a power loss?): dropped from there");
            let f = OpenOptions::new().write(true).open(&path).map_err(|e| io("open", &path, e))?;
            f.set_len(good as u64).and_then(|_| f.sync_all()).map_err(|e| io("truncate", &path, e))?;
            for (_, later) in self.segments.drain(i + 1..) {
                std::fs::remove_file(&later).map_err(|e| io("remove", &later, e))?;
            }
        }
        Ok(last.unwrap_or(0))
    }

    /// Appends `records`, numbered from `first`. Once it returns, the placements are
    /// durable (see the module's note on durability).
    /// The records may be any type that writes the JSON `T` reads (a borrowed view of
    /// it, say: `intake::RecordRef`).
    pub fn append_all<R: Serialize>(&mut self, first: i64, records: &[R]) -> Result<(), ServiceError> {
        if records.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        if let Some(why) = &self.broken {
            return Err(ServiceError::Other(why.clone()));
        }
        if first <= self.last {
            return Err(ServiceError::Other(format!("record {first} of the journal {} would follow {}", self.name, self.last)));
        }
        self.buf.clear();
        for (i, r) in records.iter().enumerate() {
            encode(&mut self.buf, first + i as i64, r)?;
        }
        self.open_segment(first)?;
        let (file, len) = self.current.as_mut().expect("a segment is open");
        let path = &self.segments.last().expect("a segment is open").1;
        if let Err(e) = write_all(file, &self.buf) {
            // A write cut short (a full disk) leaves part of a frame at the end, and the
            // next append would follow it: at the next start the journal is cut at that
            // torn frame, and with it every record appended after it, acknowledged
            // since. So the segment is cut back to its last whole frame first; if even
            // that fails, the journal takes no more appends (each refused with 503)
            // until the service restarts and reopens it, which cuts the torn tail.
            if crate::services::disk_full::io_full(&e) {
                // Before the batch's replies are dropped: their callers' 503 says why.
                crate::services::disk_full::set_full();
            }
            if let Err(cut) = file.set_len(*len) {
                self.broken = Some(format!("{}: cannot cut a torn append back ({cut})", path.display()));
            }
            return Err(io("append to", path, e));
        }
        if self.durability == Durability::Full {
            file.sync_data().map_err(|e| io("sync", path, e))?;
        }
        *len += self.buf.len() as u64;
        self.last = first + records.len() as i64 - 1;
        crate::daemon::metrics::observe_commit(self.name, started.elapsed());
        Ok(())
    }

    /// Opens the segment to append to, begun anew at record `first` when there is none
    /// or the current one is full.
    fn open_segment(&mut self, first: i64) -> Result<(), ServiceError> {
        if self.current.is_none() {
            if let Some((_, path)) = self.segments.last() {
                let len = std::fs::metadata(path).map_err(|e| io("read", path, e))?.len();
                if len < self.segment_bytes {
                    let f = OpenOptions::new().append(true).open(path).map_err(|e| io("open", path, e))?;
                    self.current = Some((f, len));
                }
            }
        }
        if self.current.as_ref().is_none_or(|(_, len)| *len >= self.segment_bytes) {
            let path = self.dir.join(format!("{first:020}.log"));
            let f = OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| io("create", &path, e))?;
            if self.durability == Durability::Full {
                // The new file's name must survive a power loss with what it holds.
                File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("sync", &self.dir, e))?;
            }
            self.segments.push((first, path));
            self.current = Some((f, 0));
        }
        Ok(())
    }

    /// Takes the segments whose records are all at or below `upto` out of the journal,
    /// without deleting their files yet: [`Detached::delete`] does, and a caller that
    /// shares the journal behind a lock calls it after releasing the lock, so that an
    /// `unlink` (a millisecond for a large file) never holds up an append. A crash in
    /// between leaves files whose records are all stored, which the next start reads
    /// and passes over as it does any stored record.
    pub fn detach(&mut self, upto: i64) -> Detached {
        let all = upto >= self.last;
        let mut files = Vec::new();
        while !self.segments.is_empty() && (all || (self.segments.len() > 1 && self.segments[1].0 <= upto + 1)) {
            files.push(self.segments.remove(0).1);
            if self.segments.is_empty() {
                self.current = None;
            }
        }
        Detached { files }
    }

    /// The records after `seq`, oldest first, read from the log, and the newest record's
    /// number (0 if the journal never held one). The lane asks as it starts; only the
    /// segments that can hold such records are read, and only those records decoded.
    pub fn after(&mut self, seq: i64) -> Result<(i64, Vec<(i64, T)>), ServiceError> {
        Ok((self.last, self.snapshot().read(seq, usize::MAX)?))
    }

    /// The newest record's number (0 if the journal never held one).
    pub fn last(&self) -> i64 {
        self.last
    }

    /// Makes the next record follow `seq` at least. A journal numbers its records from
    /// the newest it finds on disk, so once every segment has been pruned (all stored)
    /// it would begin again at 1; a reader that skips what its store holds (at or below
    /// its mark) would then skip new records as stored. Its owner says where its mark is.
    pub fn continue_after(&mut self, seq: i64) {
        self.last = self.last.max(seq);
    }

    /// Where the journal's records are at this moment, for reading them while appends
    /// go on ([`Snapshot::read`]): a reader that shares the journal behind a lock holds
    /// it only to take this, not while it reads.
    pub fn snapshot(&self) -> Snapshot<T> {
        Snapshot { name: self.name, segments: self.segments.clone(), last: self.last, records: PhantomData }
    }

    /// Deletes the segments all of whose records are at or below `seq`: each one whose
    /// successor begins at or below `seq + 1`, and all of them once `seq` reaches the
    /// newest record (the next append begins a new segment).
    pub fn prune(&mut self, seq: i64) -> Result<(), ServiceError> {
        self.detach(seq).delete()
    }

    /// The segment files, oldest first (for tests).
    #[cfg(test)]
    fn files(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|(_, p)| p.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{OrderType, Side, TimeInForce};
    use crate::services::intake::{AmendRecord, CancelRecord, Intake, Rejected};
    use crate::services::orders::NewOrder;
    use crate::services::trading::{Cancelled, MatchResult};

    fn record(id: &str) -> Record {
        Record::Place(placement(id))
    }

    fn placement(id: &str) -> Intake {
        Intake {
            order: NewOrder {
                order_id: id.into(),
                user_id: "usr_1".into(),
                symbol: "AAPL".into(),
                side: Side::Buy,
                kind: OrderType::Limit,
                time_in_force: TimeInForce::Gtc,
                price: Some("100.5".parse().unwrap()),
                quantity: "2".parse().unwrap(),
                client_order_id: None,
            },
            at: "2026-12-03T00:00:00Z".into(),
            hold: None,
            result: None,
            grid: None,
            rejected: Some(Rejected { code: "halted".into(), message: "m".into() }),
        }
    }

    fn cancel(id: &str) -> Record {
        let c = Cancelled { order_id: id.into(), user_id: "usr_1".into(), remaining: "2".parse().unwrap() };
        Record::Cancel(CancelRecord { cancelled: vec![c], at: "2026-12-04T00:00:00Z".into() })
    }

    fn amend(id: &str) -> Record {
        let result = MatchResult {
            order_id: id.into(),
            fills: vec![],
            filled: "0".parse().unwrap(),
            remaining: "3".parse().unwrap(),
            rests: true,
            self_trade_prevented: false,
        };
        let (price, quantity, remaining) = ("99".parse().unwrap(), "3".parse().unwrap(), "3".parse().unwrap());
        let (order_id, user_id, symbol, at) = (id.into(), "usr_1".into(), "AAPL".into(), "2026-12-04T00:00:00Z".into());
        Record::Amend(AmendRecord { order_id, user_id, symbol, side: Side::Buy, price, quantity, remaining, result, at })
    }

    fn ids(records: &[(i64, Record)]) -> Vec<(i64, String)> {
        let id = |r: &Record| match r {
            Record::Place(p) => p.order.order_id.clone(),
            Record::Cancel(c) => format!("cancel {}", c.cancelled[0].order_id),
            Record::Amend(a) => format!("amend {}", a.order_id),
        };
        records.iter().map(|(s, r)| (*s, id(r))).collect()
    }

    #[test]
    fn records_read_back_after_a_reopen_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        j.append_all(1, &[record("a"), record("b")]).unwrap();
        j.append_all(3, &[record("c")]).unwrap();
        assert!(j.append_all(3, &[record("again")]).is_err(), "a number is never used twice");
        drop(j);
        let mut j = Journal::open(&home, Durability::Full).unwrap();
        let (last, records) = j.after(1).unwrap();
        assert_eq!((last, ids(&records)), (3, vec![(2, "b".into()), (3, "c".into())]));
        let Record::Place(c) = &records[1].1 else { panic!("a placement read back as a cancel") };
        assert_eq!(c.order.price, Some("100.5".parse().unwrap()));
        j.append_all(4, &[record("d")]).unwrap();
        assert_eq!(ids(&j.after(3).unwrap().1), [(4, "d".to_string())]);
    }

    /// Opening checks the frames without decoding a record, and `after` decodes only the
    /// records it returns: one at or below the mark that would not read back costs
    /// nothing (it was applied), one past the mark is an error.
    #[test]
    fn only_the_records_past_the_mark_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        j.append_all(1, &[record("a")]).unwrap();
        j.append_all(2, &["not an intake record"]).unwrap();
        j.append_all(3, &[record("c")]).unwrap();
        drop(j);
        let mut j = Journal::open(&home, Durability::Normal).expect("the frames check out");
        let (last, records) = j.after(2).unwrap();
        assert_eq!((last, ids(&records)), (3, vec![(3, "c".into())]));
        let err = j.after(1).expect_err("record 2 is to be redone and does not read back");
        assert!(err.to_string().contains("record 2"), "{err}");
    }

    /// A power loss may leave the last frame half written: it and what follows are
    /// dropped, and the journal goes on from the last whole record.
    #[test]
    fn a_torn_tail_is_cut_off_when_the_journal_opens() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        j.append_all(1, &[record("a"), record("b")]).unwrap();
        let file = j.files()[0].clone();
        drop(j);
        let whole = std::fs::metadata(&file).unwrap().len();
        // Half of a third frame, and then a frame whose payload was changed.
        let mut frame = Vec::new();
        encode(&mut frame, 3, &record("c")).unwrap();
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&frame[..frame.len() / 2]).unwrap();
        drop(f);
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), whole, "cut back to the whole frames");
        assert_eq!(ids(&j.after(0).unwrap().1), [(1, "a".to_string()), (2, "b".into())]);
        j.append_all(3, &[record("c")]).unwrap();
        drop(j);

        let mut bytes = std::fs::read(&file).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x55; // the last frame's payload, changed
        std::fs::write(&file, &bytes).unwrap();
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        assert_eq!(ids(&j.after(0).unwrap().1), [(1, "a".to_string()), (2, "b".into())]);
    }

    /// A journal in a temporary folder with a segment per append (any segment is full
    /// once written to): records 1–2 ("a", "b") in the first, 3 ("c") in the second.
    fn two_segments() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open_with(&home, Durability::Normal, 1).unwrap();
        j.append_all(1, &[record("a"), record("b")]).unwrap();
        j.append_all(3, &[record("c")]).unwrap();
        (dir, j)
    }

    /// A snapshot reads what was appended before it, from the segments that hold it,
    /// and nothing appended after, while the journal goes on appending.
    #[test]
    fn a_snapshot_reads_the_records_it_saw_while_appends_go_on() {
        let (_dir, mut j) = two_segments();
        let snapshot = j.snapshot();
        j.append_all(4, &[record("d")]).unwrap();
        assert_eq!(snapshot.last(), 3);
        assert_eq!(ids(&snapshot.read(1, usize::MAX).unwrap()), [(2, "b".to_string()), (3, "c".into())]);
        assert_eq!(ids(&snapshot.read(2, usize::MAX).unwrap()), [(3, "c".to_string())]);
        assert!(snapshot.read(3, usize::MAX).unwrap().is_empty());
        // With a limit, no further segment once it is reached (a segment is read whole).
        assert_eq!(ids(&snapshot.read(0, 1).unwrap()), [(1, "a".to_string()), (2, "b".into())]);
        // The first segment (records 1 and 2) is not read for what follows 2: deleting it
        // does not matter.
        std::fs::remove_file(&j.files()[0]).unwrap();
        assert_eq!(ids(&j.snapshot().read(2, usize::MAX).unwrap()), [(3, "c".to_string()), (4, "d".into())]);
    }

    #[test]
    fn pruning_deletes_the_segments_whose_records_are_all_applied() {
        let (dir, mut j) = two_segments();
        j.append_all(4, &[record("d"), record("e")]).unwrap();
        assert_eq!(j.files().len(), 3);
        j.prune(3).unwrap();
        assert_eq!(j.files().len(), 1, "1-2 and 3 are applied; 4-5 is not wholly");
        j.prune(4).unwrap();
        j.append_all(6, &[record("f")]).unwrap();
        assert_eq!(ids(&j.after(4).unwrap().1), [(5, "e".to_string()), (6, "f".into())], "4-5 stays while 5 is not applied");
        j.prune(6).unwrap();
        assert!(j.files().is_empty(), "everything applied: nothing left");
        j.append_all(7, &[record("g")]).unwrap();
        drop(j);
        let mut j = Journal::open(&crate::daemon::Home::at(dir.path()), Durability::Normal).unwrap();
        let (last, records) = j.after(0).unwrap();
        assert_eq!((last, ids(&records)), (7, vec![(7, "g".to_string())]));
    }

    /// Detached segments leave the journal at once but stay on disk until deleted; an
    /// append in between starts a segment of its own, which the deletion leaves alone.
    /// A start that finds detached files still there (a crash before the deletion) reads
    /// their records as stored ones.
    #[test]
    fn detached_segments_are_deleted_apart_from_the_appends_that_follow() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open_with(&home, Durability::Normal, 1).unwrap();
        j.append_all(1, &[record("a")]).unwrap();
        j.append_all(2, &[record("b")]).unwrap();
        let folder = j.dir.clone();
        let on_disk = || std::fs::read_dir(&folder).unwrap().count();
        let detached = j.detach(2);
        assert!(j.files().is_empty(), "out of the journal");
        assert_eq!(on_disk(), 2, "but not deleted yet");
        j.append_all(3, &[record("c")]).unwrap();
        detached.delete().unwrap();
        assert_eq!(j.files().len(), 1);
        assert_eq!(on_disk(), 1, "the new segment stays");

        let crashed = j.detach(3);
        std::mem::forget(crashed);
        drop(j);
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        let (last, records) = j.after(3).unwrap();
        assert_eq!((last, records.len()), (3, 0), "nothing after what was stored");
    }

    /// The lane's pruning deletes on a thread of its own; a journal opened meanwhile
    /// (a restarted lane) passes over a segment that goes while it reads.
    #[test]
    fn segments_deleted_apart_go_while_appends_and_a_reopen_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open_with(&home, Durability::Normal, 1).unwrap();
        for seq in 1..=3 {
            j.append_all(seq, &[record(&format!("r{seq}"))]).unwrap();
        }
        let folder = j.dir.clone();
        let on_disk = || std::fs::read_dir(&folder).unwrap().count();
        j.detach(2).delete_apart();
        j.append_all(4, &[record("r4")]).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while on_disk() > 2 {
            assert!(Instant::now() < deadline, "the detached segments were never deleted");
            std::thread::yield_now();
        }
        assert_eq!(ids(&j.after(0).unwrap().1), [(3, "r3".to_string()), (4, "r4".into())]);

        let mut reopened = Journal::<Record>::open(&home, Durability::Normal).unwrap();
        let gone = reopened.segments[0].1.clone();
        std::fs::remove_file(&gone).unwrap();
        let (last, records) = reopened.after(0).unwrap();
        assert_eq!((last, ids(&records)), (4, vec![(4, "r4".to_string())]), "the vanished segment is passed over");
    }

    /// An agt from before kept the journal in `data/trading-journal.db`: its records move
    /// into the log once, and that store goes.
    #[test]
    fn records_in_an_older_agts_journal_store_move_into_the_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let path = home.store(NAME);
        let mut conn = crate::services::store::open(&path, Durability::Normal, &[intake::JOURNAL_MIGRATION]).unwrap();
        let tx = conn.transaction().unwrap();
        for (seq, id) in [(7, "a"), (8, "b"), (10, "d")] {
            intake::append(&tx, seq, &placement(id)).unwrap();
        }
        tx.commit().unwrap();
        drop(conn);
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        let (last, records) = j.after(0).unwrap();
        assert_eq!((last, ids(&records)), (10, vec![(7, "a".to_string()), (8, "b".into()), (10, "d".into())]));
        assert!(!path.exists(), "the old store is removed");
        j.append_all(11, &[record("e")]).unwrap();
        drop(j);
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        let all = [(7, "a".to_string()), (8, "b".into()), (10, "d".into()), (11, "e".into())];
        assert_eq!(ids(&j.after(0).unwrap().1), all, "copied once");
    }

    /// Cancels, amends and placements share the journal and read back as what they were, and a
    /// placement written before cancels were journalled (no `cancelled` field) still reads
    /// The lane writes borrowed views of its records (`RecordRef`): each must write the
    /// bytes its owned record writes, or a redo would read something else than the lane
    /// decided.
    #[test]
    fn a_borrowed_record_writes_what_the_record_writes() {
        use crate::services::intake::Grid;
        use crate::services::risk::checks::Plan;
        use crate::services::trading::TradeFill;
        let mut traded = placement("t");
        traded.rejected = None;
        traded.hold = Some(Plan {
            asset: "USD".into(),
            amount: "201".parse().unwrap(),
            limit: Some("100.5".parse().unwrap()),
            budget: None,
            short: Default::default(),
        });
        traded.grid = Some(Grid { tick: "0.01".parse().unwrap(), lot: "1".parse().unwrap() });
        let fill = TradeFill {
            trade_id: "trd_1".into(),
            maker_order_id: "m".into(),
            maker_user_id: "usr_2".into(),
            price: "100".parse().unwrap(),
            quantity: "2".parse().unwrap(),
            maker_remaining: "0".parse().unwrap(),
            timestamp: "2026-12-03T00:00:00.000001Z".into(),
        };
        let (filled, remaining) = ("2".parse().unwrap(), "0".parse().unwrap());
        traded.result =
            Some(MatchResult { order_id: "t".into(), fills: vec![fill], filled, remaining, rests: false, self_trade_prevented: false });
        for r in [Record::Place(traded), record("rejected"), cancel("c"), amend("a")] {
            assert_eq!(serde_json::to_string(&r.as_ref()).unwrap(), serde_json::to_string(&r).unwrap());
        }
    }

    /// as a placement.
    #[test]
    fn cancels_and_placements_read_back_as_what_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::daemon::Home::at(dir.path());
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        j.append_all(1, &[record("a"), cancel("a"), record("b"), amend("b")]).unwrap();
        drop(j);
        let mut j = Journal::open(&home, Durability::Normal).unwrap();
        let (_, records) = j.after(0).unwrap();
        let expected = [(1, "a"), (2, "cancel a"), (3, "b"), (4, "amend b")].map(|(s, id)| (s, id.to_string()));
        assert_eq!(ids(&records), expected);
        let old = serde_json::to_string(&placement("old")).unwrap();
        assert!(matches!(serde_json::from_str::<Record>(&old).unwrap(), Record::Place(_)));
    }
}
