//! The trading lane's intake journal: how a placement is made durable with one commit.
//!
//! A placement changes three stores: risk (the hold, then the settlement), orders (the
//! order, then its fills and status) and trading (the book and the trades). Committing
//! all three before answering cost three commits on every placement's path, and a commit
//! is most of a placement's cost (each dirty 4 KiB page is a WAL frame). So the lane
//! writes one **intake record** per placement into trading's transaction, beside the
//! match it led to, and answers once trading commits. The record holds what risk and
//! orders need to redo their part without deciding anything again: the order and its
//! time, the hold risk placed (its plan, not the checks that admitted it), the match
//! outcome, or the rejection.
//!
//! Risk's and orders' own transactions stay open over many placements and commit
//! together every few milliseconds (see `services::lane`), each with the sequence number
//! of the last record it holds (`intake_applied`, in its own store and transaction). At
//! start-up, and when the lane restarts, each of the two redoes the records after its
//! own mark ([`crate::services::lane`] `recover`). Records both marks have passed are
//! deleted in bulk.
//!
//! The journal table lives in `trading.db` and the marks in `risk.db` and `orders.db`:
//! each service's store is still opened only by its service (the lane runs all three).

use crate::services::actor::ServiceError;
use crate::services::orders::NewOrder;
use crate::services::risk::checks::Plan;
use crate::services::trading::MatchResult;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Trading's migration: the journal.
pub const JOURNAL_MIGRATION: &str = "CREATE TABLE intake (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);";

/// Risk's and orders' migration: how far into the journal the store's committed state is.
pub const APPLIED_MIGRATION: &str = "CREATE TABLE intake_applied (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);
    INSERT INTO intake_applied VALUES (1, 0);";

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
    pub rejected: Option<Rejected>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub code: String,
    pub message: String,
}

fn bad(e: serde_json::Error) -> ServiceError {
    ServiceError::Other(format!("an intake record does not read back: {e}"))
}

/// Appends record `seq` (trading's transaction).
pub fn append(tx: &Connection, seq: i64, record: &Intake) -> Result<(), ServiceError> {
    let json = serde_json::to_string(record).map_err(bad)?;
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

/// Deletes the records up to `seq`, which both risk and orders have committed.
pub fn prune(tx: &Connection, seq: i64) -> Result<(), ServiceError> {
    tx.prepare_cached("DELETE FROM intake WHERE seq <= ?1")?.execute([seq])?;
    Ok(())
}

/// How far this store (risk or orders) has applied the journal.
pub fn applied(tx: &Connection) -> Result<i64, ServiceError> {
    let seq = tx.prepare_cached("SELECT seq FROM intake_applied WHERE one = 1")?.query_row([], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0))
}

/// Records, in the transaction that holds them, that this store has applied up to `seq`.
pub fn mark_applied(tx: &Connection, seq: i64) -> Result<(), ServiceError> {
    tx.prepare_cached("UPDATE intake_applied SET seq = ?1 WHERE one = 1")?.execute([seq])?;
    Ok(())
}
