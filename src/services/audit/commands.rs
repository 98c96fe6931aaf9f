//! Audit's journal of commands: what lets a command be answered before audit's store
//! has committed its record.
//!
//! Every command (a POST, PUT, PATCH or DELETE under `/api`) must have its audit record
//! before it is acknowledged. Waiting for `audit.db` to commit it put audit's commit,
//! and the writer's WAL restarts (9–32 ms), on every command's answer: at 1,000
//! orders/s they were about half of p99 (BENCHMARKS.md, session 9). Instead the HTTP
//! layer appends the command to this journal (`data/audit-journal/`, a
//! [`Journal`]: one `write`, durable against SIGKILL like a commit with
//! `synchronous=NORMAL`) and answers; the audit service chains and stores it as before,
//! in order, and when it starts it first chains whatever the journal holds past the
//! last command its store committed (`meta.command_journal_seq`).
//!
//! With `durability = "full"` there is no journal: a journal `fdatasync` per command
//! would cost more than audit's group commit, so commands wait for the commit as before.
//! The same happens while the audit service is not running (the journal is installed by
//! its start-up).

use super::Cmd;
use crate::api::ApiError;
use crate::services::actor::{Handle, ServiceError};
use crate::services::journal::Journal;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// The journal's directory under `data/`, and the name of its commit metric.
pub const NAME: &str = "audit-journal";

/// A command as it is journalled: the audit record it becomes, before it is chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub timestamp: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// The journal of commands, shared by the HTTP layer (which appends) and the audit
/// service (which installs it when it starts, and prunes it).
#[derive(Clone, Default)]
pub struct CommandLog {
    journal: Arc<Mutex<Option<Journal<Command>>>>,
}

impl CommandLog {
    /// Journals a command and hands it to the audit service. `None` when there is no
    /// journal (durability "full", or audit not started): the caller waits for audit's
    /// commit instead. Once this answers `Some(Ok)`, the command may be acknowledged.
    pub fn append(&self, audit: &Handle<Cmd>, actor: String, action: String, detail: String) -> Option<Result<(), ApiError>> {
        // As before the journal: while audit is down a command is refused, not piled up.
        if audit.status.state() != crate::services::actor::State::Running {
            return Some(Err(ApiError::unavailable("audit")));
        }
        let mut slot = self.journal.lock().unwrap();
        let journal = slot.as_mut()?;
        let command = Command { timestamp: crate::api::now_rfc3339(), actor, action, detail };
        let seq = journal.last() + 1;
        if let Err(e) = journal.append_all(seq, std::slice::from_ref(&command), None) {
            tracing::error!(error = %e, "the audit journal could not append a command");
            return Some(Err(ApiError::unavailable("audit")));
        }
        // Sent under the lock, so the service receives commands in journal order. If it
        // stopped in between, the journal still holds the command: its next start
        // chains it.
        audit.tell(Cmd::Journalled { seq, command });
        Some(Ok(()))
    }

    /// Puts the journal in place (the audit service, when it starts), or takes it out.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Journal<Command>>> {
        self.journal.lock().unwrap()
    }

    /// Deletes the journal's segments whose commands are all stored (at or below `seq`),
    /// outside the lock: every command's append waits for that lock, and an `unlink` of a
    /// full segment (a millisecond, longer if audit is preempted meanwhile) held them all
    /// up.
    pub(super) fn prune(&self, seq: i64) -> Result<(), ServiceError> {
        let detached = match self.journal.lock().unwrap().as_mut() {
            Some(j) => j.detach(seq),
            None => return Ok(()),
        };
        detached.delete()
    }
}
