//! The health service: the history of service starts, restarts and failures.
//!
//! The supervisor knows each service's state right now; this service remembers what
//! happened, in `data/health.db`, fed by the bus (`SERVICE_*` events), so an operator can
//! see after a restart of the daemon which service failed and why.

use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use crate::services::bus::BusEvent;
use rusqlite::{params, Connection};

pub enum Cmd {
    Event(std::sync::Arc<BusEvent>),
    LastEventSeq(Reply<u64>),
    /// The newest `limit` lifecycle events, newest first.
    History {
        limit: usize,
        reply: Reply<Vec<serde_json::Value>>,
    },
}

pub struct Health {
    last_event_seq: u64,
}

const MIGRATIONS: &[&str] = &["CREATE TABLE lifecycle (
        seq INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT
    );"];

impl Service for Health {
    type Cmd = Cmd;
    const NAME: &'static str = "health";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    fn load(conn: &rusqlite::Connection, _ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let last: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM lifecycle", [], |r| r.get(0))?;
        Ok(Health { last_event_seq: last as u64 })
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Event(e) => {
                if e.seq > self.last_event_seq && e.kind.starts_with("SERVICE_") {
                    tx.prepare_cached("INSERT INTO lifecycle (seq, timestamp, service, kind, reason) VALUES (?1, ?2, ?3, ?4, ?5)")?
                        .execute(params![
                            e.seq as i64,
                            e.timestamp,
                            e.data()["service"].as_str().unwrap_or(""),
                            e.kind,
                            e.data().get("reason").or(e.data().get("error")).and_then(|v| v.as_str())
                        ])?;
                    self.last_event_seq = e.seq;
                }
            }
            Cmd::LastEventSeq(reply) => after.reply(reply, Ok(self.last_event_seq)),
            Cmd::History { limit, reply } => {
                let mut stmt =
                    tx.prepare_cached("SELECT seq, timestamp, service, kind, reason FROM lifecycle ORDER BY seq DESC LIMIT ?1")?;
                let rows = stmt
                    .query_map([limit as i64], |r| {
                        Ok(serde_json::json!({
                            "seq": r.get::<_, i64>(0)?, "timestamp": r.get::<_, String>(1)?,
                            "service": r.get::<_, String>(2)?, "type": r.get::<_, String>(3)?,
                            "reason": r.get::<_, Option<String>>(4)?,
                        }))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                after.reply(reply, Ok(rows));
            }
        }
        Ok(())
    }
}
