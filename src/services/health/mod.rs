//! The health service: the history of service starts, restarts and failures.
//!
//! The supervisor knows each service's state right now; this service remembers what
//! happened, in `data/health.db`, fed by the bus (`SERVICE_*` events), so an operator can
//! see after a restart of the daemon which service failed and why.

use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use rusqlite::{params, Connection};

pub enum Cmd {
    Event(crate::daemon::follower::Handed),
    LastEventSeq(Reply<u64>),
    /// Every lifecycle event up to this seq has been handed over (the follower skips the
    /// others): the position to record.
    Passed(crate::daemon::follower::Passed),
    /// The newest `limit` lifecycle events, newest first.
    History {
        limit: usize,
        reply: Reply<Vec<serde_json::Value>>,
    },
}

pub struct Health {
    last_event_seq: u64,
    /// `last_event_seq` moved by a `Passed`, until `before_commit` stores it.
    unsaved: bool,
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE lifecycle (
        seq INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT
    );",
    // How far the feed has gone, past the last lifecycle event (`Cmd::Passed`).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('last_event_seq', 0);",
];

impl Service for Health {
    type Cmd = Cmd;
    const NAME: &'static str = "health";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    /// It follows the bus: nobody's answer waits for it (`/health` and `/ready` ask the supervisor, not it).
    fn background(_durability: crate::services::store::Durability) -> bool {
        true
    }

    fn load(conn: &rusqlite::Connection, _ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let last: i64 = conn.query_row(
            "SELECT max((SELECT coalesce(max(seq), 0) FROM lifecycle), (SELECT value FROM meta WHERE key = 'last_event_seq'))",
            [],
            |r| r.get(0),
        )?;
        Ok(Health { last_event_seq: last as u64, unsaved: false })
    }

    fn before_commit(&mut self, tx: &rusqlite::Connection) -> Result<(), ServiceError> {
        if std::mem::take(&mut self.unsaved) {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_event_seq'")?.execute([self.last_event_seq as i64])?;
        }
        Ok(())
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Event(handed) => {
                let e = &handed.event;
                if handed.is_next(self.last_event_seq) && e.kind.starts_with("SERVICE_") {
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
            Cmd::Passed(passed) => {
                if passed.is_next(self.last_event_seq) {
                    self.last_event_seq = passed.seq;
                    self.unsaved = true;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Event;
    use crate::daemon::follower::{Handed, Passed};
    use std::sync::Arc;

    /// The event `seq`, handed over by a follower that left health at `after`.
    fn event(after: u64, seq: u64, kind: &str) -> Cmd {
        let data = serde_json::json!({"service": "risk"});
        let e = Event { seq, event_id: format!("e{seq}"), kind: kind.into(), source: "daemon".into(), timestamp: "now".into(), data };
        Cmd::Event(Handed { after, event: Arc::new(crate::services::bus::BusEvent::from_event(e)) })
    }

    fn passed(after: u64, seq: u64) -> Cmd {
        Cmd::Passed(Passed { after, seq })
    }

    /// The follower hands health only lifecycle events; `Passed` records how far it went
    /// past them, so that a restart replays none of the skipped events again.
    #[test]
    fn the_position_passed_survives_a_reload_and_a_lower_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, ctx) = ServiceCtx::for_tests(dir.path());
        let mut conn = crate::services::store::open(&ctx.home.store("health"), Default::default(), MIGRATIONS).unwrap();
        let mut run = |cmds: Vec<Cmd>| {
            let mut svc = Health::load(&conn, &ctx).unwrap();
            let tx = conn.transaction().unwrap();
            for cmd in cmds {
                svc.handle(&tx, cmd, &mut AfterCommit::new("health")).unwrap();
            }
            svc.before_commit(&tx).unwrap();
            tx.commit().unwrap();
            Health::load(&conn, &ctx).unwrap().last_event_seq
        };
        assert_eq!(run(vec![event(0, 3, "SERVICE_STARTED")]), 3);
        assert_eq!(run(vec![passed(3, 1000)]), 1000, "the position passed is stored");
        assert_eq!(run(vec![passed(3, 900), event(900, 950, "SERVICE_STOPPED")]), 1000, "nothing at or below it counts");
        assert_eq!(run(vec![event(1000, 1001, "SERVICE_FAILED"), passed(1001, 1500)]), 1500);
        // Messages after a lost batch (the follower left health at 1550, not 1500).
        assert_eq!(run(vec![event(1550, 1600, "SERVICE_STARTED"), passed(1600, 1700)]), 1500, "after a gap nothing counts");
        assert_eq!(run(vec![event(1500, 1600, "SERVICE_STARTED")]), 1600, "a newer lifecycle event moves it too");
        let kinds: Vec<u64> = conn
            .prepare("SELECT seq FROM lifecycle ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kinds, [3, 1001, 1600]);
        bus.shutdown();
    }
}
