//! Audit's journal of commands: what lets a command be answered before audit's store
//! has committed its record.
//!
//! Every command (a POST, PUT, PATCH or DELETE under `/api`) must have its audit record
//! before it is acknowledged. Waiting for `audit.db` to commit it put audit's commit,
//! and the writer's WAL restarts (9–32 ms), on every command's answer: at 1,000
//! orders/s they were about half of p99 (BENCHMARKS.md, session 9). Instead the HTTP
//! layer appends the command to this journal (`data/audit-journal/`, a
//! [`Journal`]: one `write`, durable against SIGKILL like a commit with
//! `synchronous=NORMAL`, shared by the commands an HTTP worker has ready at once, see
//! [`CommandLog::stage`]) and answers; the audit service chains and stores it as before,
//! in order, and when it starts it first chains whatever the journal holds past the
//! last command its store committed (`meta.command_journal_seq`).
//!
//! **Bounded.** A command is handed over by message only while audit's mailbox holds
//! fewer than [`MAILBOX_BOUND`] messages. Past that, commands are only journalled, and
//! audit is told once to read them back from the journal (`Cmd::CatchUp`) until it has
//! them all. An audit that falls behind under overload so keeps its backlog on disk,
//! where the journal holds it anyway, instead of in memory (one message per order).
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
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The journal's directory under `data/`, and the name of its commit metric.
pub const NAME: &str = "audit-journal";

/// A command as it is journalled: the audit record it becomes, before it is chained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    pub timestamp: String,
    pub actor: String,
    pub action: String,
    /// JSON text, journalled as it is: as a JSON string, every quote of a request's body
    /// was escaped on the HTTP worker, for every order.
    #[serde(deserialize_with = "detail_or_its_text")]
    pub detail: Box<RawValue>,
}

impl PartialEq for Command {
    fn eq(&self, other: &Command) -> bool {
        (&self.timestamp, &self.actor, &self.action, self.detail.get())
            == (&other.timestamp, &other.actor, &other.action, other.detail.get())
    }
}

/// A detail as journalled: JSON, or (by an agt before session 31) a JSON string holding
/// the JSON text.
fn detail_or_its_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    if !raw.get().starts_with('"') {
        return Ok(raw);
    }
    let text: String = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
    RawValue::from_string(text).map_err(serde::de::Error::custom)
}

/// The journal of commands, shared by the HTTP layer (which appends) and the audit
/// service (which installs it when it starts, and prunes it).
#[derive(Clone, Default)]
pub struct CommandLog {
    shared: Arc<Mutex<Shared>>,
    /// Commands between [`CommandLog::enter`] and their answer.
    in_flight: Arc<AtomicUsize>,
}

/// Counts a command in flight until it is dropped (with the command's answer).
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the lock guards: the journal (absent with "full" durability or while audit is
/// not running), and whether audit is reading commands from it instead of its mailbox.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) journal: Option<Journal<Command>>,
    /// Set once audit's mailbox held [`MAILBOX_BOUND`] messages when a command came:
    /// from then on commands are only journalled, and audit reads them back from the
    /// journal ([`Cmd::CatchUp`]) until it has them all, then clears this. So a slow
    /// audit holds its backlog on disk, not in memory, and still chains every command
    /// once, in journal order.
    pub(super) behind: bool,
    /// Commands staged ([`CommandLog::stage`]) and not yet in the journal, oldest first.
    pending: Vec<Command>,
    /// Tickets: how many commands were ever staged, and how many of them are in the
    /// journal; those in between are `pending`.
    staged: u64,
    written: u64,
}

/// What [`CommandLog::stage`] did with a command.
#[derive(Debug)]
pub enum Staged {
    /// In line for the journal: [`CommandLog::write_through`] with this ticket writes it.
    Queued(Ticket),
    /// Refused (audit is not running, or too many commands wait): it must not run.
    Refused(ApiError),
    /// There is no journal (durability "full", or audit not started): the detail comes
    /// back, for a record that audit commits itself (given back rather than copied
    /// beforehand for this rare path).
    NoJournal(Box<RawValue>),
}

/// A staged command's place in line; see [`CommandLog::write_through`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// At most this many commands wait to be written. More come only if writing fails over
/// and over (a full disk): each of them is refused then, not kept in memory.
const PENDING_BOUND: usize = 4096;

/// Audit's mailbox holds at most about this many messages from the HTTP layer (and as
/// many from its follower of the bus, which stops at the same bound).
pub const MAILBOX_BOUND: i64 = crate::daemon::follower::MAILBOX_BOUND;

impl CommandLog {
    /// Journals a command and hands it to the audit service. `None` when there is no
    /// journal (durability "full", or audit not started): the caller waits for audit's
    /// commit instead. Once this answers `Some(Ok)`, the command may be acknowledged.
    pub fn append(&self, audit: &Handle<Cmd>, actor: String, action: String, detail: Box<RawValue>) -> Option<Result<(), ApiError>> {
        match self.stage(audit, actor, action, detail) {
            Staged::Queued(ticket) => Some(self.write_through(audit, ticket)),
            Staged::Refused(e) => Some(Err(e)),
            Staged::NoJournal(_) => None,
        }
    }

    /// Counts a command in flight until its answer (drop the guard then), and tells
    /// whether others were: only then can its write wait for theirs to be staged
    /// (`routes::audit_commands`). Alone, waiting would cost a turn of the worker's
    /// event loop (an `epoll_wait`) and gather nothing.
    pub fn enter(&self) -> (InFlight<'_>, bool) {
        let others = self.in_flight.fetch_add(1, Ordering::Relaxed) > 0;
        (InFlight(&self.in_flight), others)
    }

    /// Queues a command for the journal, without writing it yet: [`Self::write_through`]
    /// with its ticket writes it, together with every other command queued by then, in
    /// one `write`. Under load the HTTP worker stages the commands of all the requests
    /// it has ready before the first of them writes (`routes::audit_commands`): one
    /// `write` per batch instead of one per command (at 32 connections, ~2 µs of an HTTP
    /// worker's CPU per order).
    pub fn stage(&self, audit: &Handle<Cmd>, actor: String, action: String, detail: Box<RawValue>) -> Staged {
        // As before the journal: while audit is down a command is refused, not piled up.
        if audit.status.state() != crate::services::actor::State::Running {
            return Staged::Refused(audit.status.unavailable());
        }
        self.stage_while_down(actor, action, detail)
    }

    /// [`Self::stage`] even while audit is not running, for the one command that must
    /// run then: an operator's restart of audit (`routes::audit_commands`). Audit, once
    /// started, stores what the journal holds beyond its store, this command included.
    pub fn stage_while_down(&self, actor: String, action: String, detail: Box<RawValue>) -> Staged {
        let mut shared = self.shared.lock().unwrap();
        if shared.journal.is_none() {
            return Staged::NoJournal(detail);
        }
        if shared.pending.len() >= PENDING_BOUND {
            return Staged::Refused(ApiError::unavailable("audit"));
        }
        shared.pending.push(Command { timestamp: crate::api::now_rfc3339(), actor, action, detail });
        shared.staged += 1;
        Staged::Queued(Ticket(shared.staged))
    }

    /// Returns once the command of `ticket` is in the journal, writing it (and every
    /// command staged before or after it, not yet written) if no other call has. Then
    /// the command may be run and acknowledged. Written commands are handed to audit in
    /// journal order, by message, or once a [`Cmd::CatchUp`] when its mailbox is full.
    /// A failed write leaves them staged for the next call to try again: a command
    /// refused then (503, not run) may still get its record from a later write, as a
    /// command journalled and then refused by its handler does.
    pub fn write_through(&self, audit: &Handle<Cmd>, ticket: Ticket) -> Result<(), ApiError> {
        let mut shared = self.shared.lock().unwrap();
        if shared.written >= ticket.0 {
            return Ok(());
        }
        let Shared { journal, behind, pending, written, .. } = &mut *shared;
        let Some(journal) = journal.as_mut() else { return Err(ApiError::unavailable("audit")) };
        let first = journal.last() + 1;
        if let Err(e) = journal.append_all(first, pending) {
            let text = e.to_string();
            if !crate::services::disk_full::says_full(&text) {
                tracing::error!(error = %e, "the audit journal could not append a command");
                return Err(ApiError::unavailable("audit"));
            }
            // Said once while the disk stays full, not for every command refused.
            if !crate::services::disk_full::now() {
                tracing::error!(error = %e, "the audit journal could not append a command: the disk is full");
            }
            crate::services::disk_full::set_full();
            return Err(audit.status.unavailable());
        }
        *written += pending.len() as u64;
        let commands = std::mem::take(pending);
        // Sent under the lock, so the service receives commands in journal order. If it
        // stopped in between, the journal still holds them: its next start chains them.
        if *behind {
            return Ok(());
        }
        if audit.status.depth.load(Ordering::Relaxed) >= MAILBOX_BOUND {
            *behind = true;
            audit.tell(Cmd::CatchUp);
        } else {
            for (seq, command) in (first..).zip(commands) {
                audit.tell(Cmd::Journalled { seq, command });
            }
        }
        Ok(())
    }

    /// The journal and the flag it guards. Every command's append waits for this lock:
    /// hold it only briefly.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    /// Deletes the journal's segments whose commands are all stored (at or below `seq`),
    /// outside the lock: every command's append waits for that lock, and an `unlink` of a
    /// full segment (a millisecond, longer if audit is preempted meanwhile) held them all
    /// up.
    pub(super) fn prune(&self, seq: i64) -> Result<(), ServiceError> {
        let detached = match self.lock().journal.as_mut() {
            Some(j) => j.detach(seq),
            None => return Ok(()),
        };
        detached.delete()
    }
}
