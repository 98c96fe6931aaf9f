//! The trading lane's intake journal: how a placement is made durable with one small
//! commit.
//!
//! A placement changes three stores: risk (the hold, then the settlement), orders (the
//! order, then its fills and status) and trading (the book and the trades). Committing
//! all three before answering cost three commits on every placement's path, and a commit
//! is most of a placement's cost (each dirty 4 KiB page is a WAL frame). So the lane
//! appends one **intake record** per placement to a journal of its own
//! (`data/trading-journal/`, see `services::journal`), and answers. The record holds what each
//! store needs to redo its part without deciding anything again: the order and its
//! time, the hold risk placed (its plan, not the checks that admitted it), the book's
//! grid, the match outcome (fills with their trade ids and times), or the rejection. A
//! cancel is journalled the same way ([`CancelRecord`]: the orders it took out of their
//! books, and when), and an amend ([`AmendRecord`]: the new price and size, and what
//! the book did), each in its place between the placements.
//!
//! The three stores' own transactions stay open over many placements and commit
//! together every few milliseconds (see `services::lane`), each with the sequence number
//! of the last record it holds (`intake_applied`, in its own store and transaction). At
//! start-up, and when the lane restarts, each redoes the records after its own mark
//! ([`crate::services::lane`] `recover`); trading matches the order again and must make
//! the same fills. Records all marks have passed are deleted in bulk.
//!
//! A placement then waits for one `write` of its record (session 7 made it a commit
//! of one row in a store of its own, two or three WAL frames, instead of trading's
//! book, outcome, trade and counter pages; session 8 a file of its own).
//!
//! The journal belongs to trading (the lane runs it); the marks live in each store. An
//! agt from before kept the journal in `trading.db` (table `intake`): what it left there
//! is redone by risk and orders at the first start, then deleted.

use crate::api::Side;
use crate::services::actor::ServiceError;
use crate::services::orders::NewOrder;
use crate::services::risk::checks::Plan;
use crate::services::trading::{Cancelled, MatchResult};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The journal's table in the stores of an agt from before: `trading-journal.db`
/// (moved into the journal's file by `services::journal`) and `trading.db` (trading's
/// migration, kept for what an older agt left there).
pub const JOURNAL_MIGRATION: &str = "CREATE TABLE intake (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);";

/// Each lane store's migration (risk, orders, trading): how far into the journal the store's committed state is.
pub const APPLIED_MIGRATION: &str = "CREATE TABLE intake_applied (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);
    INSERT INTO intake_applied VALUES (1, 0);";

/// One entry of the intake journal: a placement, or a cancel (both change the books, so
/// both are redone, in the order the lane made them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per journalled command; held in bulk only while recovery reads them
pub enum Record {
    Cancel(CancelRecord),
    Amend(AmendRecord),
    /// Records of an agt from before cancels were journalled are all placements.
    Place(Intake),
}

/// Orders a cancel took out of their books, and when. Redone, trading takes each out of
/// its book (if it still rests there), risk releases its hold, and orders records it
/// cancelled at `at`, as it answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRecord {
    pub cancelled: Vec<Cancelled>,
    pub at: String,
}

/// An amend as the lane made it: the order's new price, total quantity and remaining
/// quantity, and what the book did with it (an amend that crosses trades as a taker).
/// Redone, risk resizes the hold and settles the fills, trading amends the order again
/// and must make the same fills, and orders records them at `at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmendRecord {
    pub order_id: String,
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    pub price: Decimal,
    pub quantity: Decimal,
    pub remaining: Decimal,
    pub result: MatchResult,
    pub at: String,
}

/// One placement as the lane decided it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intake {
    pub order: NewOrder,
    /// The order's `created_at`, and `updated_at` of its first record.
    pub at: String,
    /// The hold risk placed; `None` if the checks refused the order.
    pub hold: Option<Plan>,
    /// What the book did with it; `None` if it never traded (rejected).
    pub result: Option<MatchResult>,
    /// The book's grid the match used (`None` in records of an agt from before, which
    /// trading never redoes, and in rejections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<Grid>,
    pub rejected: Option<Rejected>,
}

/// An instrument's tick and lot, for matching an order again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub tick: Decimal,
    pub lot: Decimal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub code: String,
    pub message: String,
}

/// A record as the lane writes it: the same JSON as [`Record`], borrowing the order, its
/// hold and its match from the batch instead of copying them (the copies were ~9
/// allocations per placement on the lane).
#[derive(Serialize)]
#[serde(untagged)]
pub enum RecordRef<'a> {
    Cancel(&'a CancelRecord),
    Amend(&'a AmendRecord),
    Place(IntakeRef<'a>),
}

impl Record {
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Cancel(c) => RecordRef::Cancel(c),
            Record::Amend(a) => RecordRef::Amend(a),
            Record::Place(i) => RecordRef::Place(IntakeRef {
                order: &i.order,
                at: &i.at,
                hold: i.hold.as_ref(),
                result: i.result.as_ref(),
                grid: i.grid,
                rejected: i.rejected.as_ref().map(|r| RejectedRef { code: &r.code, message: &r.message }),
            }),
        }
    }
}

/// [`Intake`], borrowed (see [`RecordRef`]).
#[derive(Serialize)]
pub struct IntakeRef<'a> {
    pub order: &'a NewOrder,
    pub at: &'a str,
    pub hold: Option<&'a Plan>,
    pub result: Option<&'a MatchResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<Grid>,
    pub rejected: Option<RejectedRef<'a>>,
}

/// [`Rejected`], borrowed.
#[derive(Serialize)]
pub struct RejectedRef<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

fn bad(e: serde_json::Error) -> ServiceError {
    ServiceError::Other(format!("an intake record does not read back: {e}"))
}

/// Appends record `seq`.
pub fn append(tx: &Connection, seq: i64, record: &Intake) -> Result<(), ServiceError> {
    let json = crate::api::json::to_string(record).map_err(bad)?;
    tx.prepare_cached("INSERT INTO intake (seq, record) VALUES (?1, ?2)")?.execute(params![seq, json])?;
    Ok(())
}

/// The records after `seq`, oldest first.
pub fn after(tx: &Connection, seq: i64) -> Result<Vec<(i64, Intake)>, ServiceError> {
    let mut stmt = tx.prepare_cached("SELECT seq, record FROM intake WHERE seq > ?1 ORDER BY seq")?;
    let rows = stmt.query_map([seq], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, json) = row?;
        out.push((seq, serde_json::from_str(&json).map_err(bad)?));
    }
    Ok(out)
}

/// The newest record's number (0 for an empty journal).
pub fn last(tx: &Connection) -> Result<i64, ServiceError> {
    Ok(tx.prepare_cached("SELECT max(seq) FROM intake")?.query_row([], |r| r.get::<_, Option<i64>>(0))?.unwrap_or(0))
}

/// Deletes the records up to `seq`, which every store has committed.
pub fn prune(tx: &Connection, seq: i64) -> Result<(), ServiceError> {
    tx.prepare_cached("DELETE FROM intake WHERE seq <= ?1")?.execute([seq])?;
    Ok(())
}

/// How far this store (risk, orders or trading) has applied the journal.
pub fn applied(tx: &Connection) -> Result<i64, ServiceError> {
    let seq = tx.prepare_cached("SELECT seq FROM intake_applied WHERE one = 1")?.query_row([], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0))
}

/// Records, in the transaction that holds them, that this store has applied up to `seq`.
pub fn mark_applied(tx: &Connection, seq: i64) -> Result<(), ServiceError> {
    tx.prepare_cached("UPDATE intake_applied SET seq = ?1 WHERE one = 1")?.execute([seq])?;
    Ok(())
}

pub use crate::services::journal::Journal;
