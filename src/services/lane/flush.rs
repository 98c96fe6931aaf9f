//! When the lane's three stores commit (a flush), one store at a time under load, and
//! orders' deferred records of answered batches that must come before it. See the
//! module doc of `services::lane` for the phases of a batch.

use super::*;

/// The three stores' open transactions commit together (a flush) once this many
/// placements wait in them, or [`FLUSH_AFTER`] after the first did (while fewer than
/// [`BUSY_AT`] have come since; [`FLUSH_AFTER_BUSY`] once more have), or before a command
/// that is answered at their commit. Until then their placements are durable in the
/// intake journal only; a flush bounds what a restart redoes and how late their events
/// (`ORDER_*`) reach the bus. At 1,024 placements `orders.db`'s open transaction holds
/// ~3.5 MiB of dirty pages, within its page cache (`store::CACHE_KIB`): past that,
/// SQLite writes them to the log before the commit.
pub(super) const FLUSH_AT: usize = 1024;
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(10);

/// Past this many placements in [`FLUSH_AFTER`] (15,000/s), a flush waits until
/// [`FLUSH_AFTER_BUSY`]. A commit rewrites a page per b-tree leaf it touches, and many of
/// those are touched by any commit, however small (a leaf of `orders_user` per active
/// user, the makers' rows and fills scattered through their tables): `orders.db` wrote
/// ~280 pages a commit at C = 32 whether the commit held 200 placements or more. Under
/// such load the lane is short of CPU, and three times the placements per commit took
/// the daemon's CPU per order from ~72 to ~66 µs and C = 32 from ~20.7 k to ~22.5 k
/// orders/s (BENCHMARKS.md, session 25). Below it the lane has CPU to spare, and shorter
/// commits keep its stretches of work, which a placement arriving then waits out,
/// short: at 10,000/s a 30 ms window for every flush made p90–p99.9 5–15 % worse.
pub(super) const BUSY_AT: usize = 150;
pub(super) const FLUSH_AFTER_BUSY: Duration = Duration::from_millis(30);

/// Journal records both stores have passed are deleted this many at a time: each delete
/// writes pages of its own.
pub(super) const PRUNE_EVERY: i64 = 1024;

/// Commits `unit` with the number of the last journal record it holds (`seq`), noted in
/// `mark`. True if the mark moved (the commit holds placements).
pub(super) fn commit_to<S: Service>(
    unit: &mut Unit<S>,
    mark: &mut i64,
    seq: i64,
    bus: &crate::services::bus::Bus,
) -> Result<bool, ServiceError> {
    let moved = *mark < seq;
    if moved {
        unit.work(|_, tx, _| intake::mark_applied(tx, seq))?;
        *mark = seq;
    }
    unit.commit(bus)?;
    Ok(moved)
}

/// What orders still has to record of a batch whose placements were answered and
/// settled: each outcome (with whether risk settled it), at the batch's time.
///
/// Recording is ~40 % of the lane's work per placement (the order's row and its fills,
/// each maker's, their events), and nothing the lane decides next depends on it: risk
/// settles at once (later reserves see the balances), trading has matched. So while
/// placements keep arriving the lane answers them first, and records when its mailbox
/// is empty. What could see the difference is drained first: any command to the three
/// (reads of orders included), a cancel or amend (they read the order), a placement with
/// a `client_order_id` (accept looks for the first one in orders' store), and orders'
/// commit, whose mark says which journal records it holds. Batches are recorded in the
/// order they were answered, so a maker is stored before a fill against it. A crash
/// loses nothing: the journal redoes orders' records past its mark, as before.
pub(super) struct Deferred {
    pub(super) at: String,
    pub(super) outcomes: Vec<(Then, bool)>,
}

/// A test-only fault point (read only with `debug.fault_injection = true`):
/// `AGT_FAULT_LANE_SPLIT=N` makes the lane panic between the risk and the orders commit
/// of its N-th flush of placements, once per process: trading's and risk's stores are
/// then ahead of orders', which the restarted lane brings level from the intake journal.
pub(super) struct SplitFault {
    countdown: u64,
}

pub(super) static SPLIT_FAULT_FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl SplitFault {
    pub(super) fn from_env() -> Option<SplitFault> {
        let countdown = std::env::var("AGT_FAULT_LANE_SPLIT").ok()?.trim().parse().ok()?;
        (!SPLIT_FAULT_FIRED.load(Ordering::Relaxed)).then_some(SplitFault { countdown })
    }
    pub(super) fn tick(fault: &mut Option<SplitFault>) {
        if let Some(f) = fault {
            f.countdown = f.countdown.saturating_sub(1);
            if f.countdown == 0 && !SPLIT_FAULT_FIRED.swap(true, Ordering::Relaxed) {
                panic!("fault injection: the trading lane stopped between its risk and orders commits");
            }
        }
    }
}

impl Lane {
    /// Whether any of the three holds work that waits for a flush.
    pub(super) fn pending(&self) -> bool {
        self.risk.is_open() || self.orders.is_open() || self.trading.is_open() || self.has_deferred()
    }

    /// Whether answered batches wait for orders to record them ([`Deferred`]).
    pub(super) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Records the oldest answered batch in orders' open transaction ([`Deferred`]).
    pub(super) fn record_one_deferred(&mut self) -> Result<(), ServiceError> {
        let Some(Deferred { at, outcomes }) = self.deferred.pop_front() else { return Ok(()) };
        self.orders.work(|orders, tx, after| {
            // One statement per kind of row for the whole batch, not one per row.
            let tx = &Held::new(tx);
            for (t, settled) in outcomes {
                match t {
                    Then::Record(order, result) => drop(orders.record_accepted(tx, order, result, settled, &at, after)?),
                    Then::End { reject: Some((e, order)), .. } if settled => {
                        drop(orders.reject_unstored(tx, order, e.code.as_ref(), &e.message, &at, after)?)
                    }
                    // An abort whose hold could not be released stays `accepted`:
                    // recovery finishes it.
                    Then::End { reject: Some((_, order)), .. } => orders.store_accepted(tx, &order)?,
                    Then::End { .. } => {}
                }
            }
            Ok(())
        })
    }

    /// Records every answered batch ([`Deferred`]), and writes the order rows they left
    /// unwritten (`orders::Unwritten`): whatever reads or writes `orders.db` after this
    /// finds every row as it stands.
    pub(super) fn record_deferred(&mut self) -> Result<(), ServiceError> {
        while self.has_deferred() {
            self.record_one_deferred()?;
        }
        if self.orders.svc.has_unwritten() {
            self.orders.work(|orders, tx, _| orders.write_unwritten(&Held::new(tx)))?;
        }
        Ok(())
    }

    /// How long an idle lane may still wait before it must flush: not at all once a
    /// `Sync` waits (nothing else is queued to share the flush with).
    pub(super) fn flush_in(&self) -> Duration {
        if self.flush_under_way() {
            return Duration::ZERO;
        }
        match self.since {
            Some(t) if !self.sync_waiting => self.flush_window().saturating_sub(t.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// How long after its first placement a flush waits for more: longer under heavy
    /// load ([`BUSY_AT`]).
    pub(super) fn flush_window(&self) -> Duration {
        if self.unflushed >= BUSY_AT {
            FLUSH_AFTER_BUSY
        } else {
            FLUSH_AFTER
        }
    }

    /// Whether a flush has begun and has steps left.
    pub(super) fn flush_under_way(&self) -> bool {
        self.flushing > 0 || self.prepared
    }

    pub(super) fn due(&self) -> bool {
        self.unflushed >= FLUSH_AT || self.since.is_some_and(|t| t.elapsed() >= self.flush_window())
    }

    /// Commits trading, risk, then orders, each with the journal record it now reaches,
    /// and releases their replies and events: the whole flush at once (before a command
    /// that changes one of the three, for a `Sync`, on stop), finishing one under way.
    pub(super) fn flush(&mut self) -> Result<(), ServiceError> {
        self.record_deferred()?;
        let seq = self.journalled;
        commit_to(&mut self.trading, &mut self.marks[0], seq, &self.bus)?;
        if commit_to(&mut self.risk, &mut self.marks[1], seq, &self.bus)? {
            SplitFault::tick(&mut self.split_fault);
        }
        commit_to(&mut self.orders, &mut self.marks[2], seq, &self.bus)?;
        self.applied = seq;
        self.flushing = 0;
        self.prepared = false;
        self.unflushed = 0;
        self.since = None;
        self.sync_waiting = false;
        Ok(())
    }

    /// Flushes, then deletes the intake journal's segments: once the three stores have
    /// committed every record, the journal holds nothing to redo, and the next start
    /// need not read it (after a busy run it held up to a segment, ~5 k records, which
    /// the start read and checked: 44–98 ms to `/ready` instead of ~27; BENCHMARKS.md,
    /// session 28).
    pub(super) fn close(&mut self) -> Result<(), ServiceError> {
        self.flush()?;
        self.journal.prune(self.applied)?;
        self.pruned = self.applied;
        Ok(())
    }

    /// Commits the next store of a flush (trading, risk, then orders), beginning one
    /// if none is under way. Between two steps the lane takes the commands that came
    /// meanwhile: the three commits together held the lane for ~1.5 ms at 5,000
    /// orders/s (p90 2.4 ms), and every order that arrived then waited for all of
    /// them. Each store's commit carries the journal record it reaches, so they need not
    /// commit together (a crash between them is repaired as in [`Lane::recover`]).
    /// Placements taken between two steps go into the stores' open transactions; those
    /// of a store already committed wait for the next flush. A `Sync` waits for all
    /// three to commit what it was answered after: with one waiting, the rest of the
    /// flush is done at once. The rows a store writes only when it commits (trading's
    /// resting rows, orders' records of answered batches and open orders' rows) are
    /// written in a step before its commit ([`Lane::prepared`]): at C = 32 they are
    /// hundreds of rows.
    pub(super) fn flush_step(&mut self) -> Result<(), ServiceError> {
        if self.sync_waiting {
            return self.flush();
        }
        let seq = self.journalled;
        match self.flushing {
            0 => {
                if !self.prepared {
                    self.bus.load().set_heavy(self.unflushed >= BUSY_AT);
                    // What is placed from now on counts toward the next flush.
                    self.unflushed = 0;
                    self.since = None;
                    // Trading's resting rows, written at the commit, are a step of
                    // their own: the commit alone comes next.
                    if self.trading.svc.has_unwritten() {
                        self.trading.work(|svc, tx, _| svc.write_resting(tx))?;
                        self.prepared = true;
                        return Ok(());
                    }
                }
                commit_to(&mut self.trading, &mut self.marks[0], seq, &self.bus)?;
            }
            1 => {
                if commit_to(&mut self.risk, &mut self.marks[1], seq, &self.bus)? {
                    SplitFault::tick(&mut self.split_fault);
                }
            }
            _ => {
                // Recording the answered batches and writing open orders' rows is a step
                // of its own too.
                if !self.prepared && (self.has_deferred() || self.orders.svc.has_unwritten()) {
                    self.record_deferred()?;
                    self.prepared = true;
                    return Ok(());
                }
                // Orders' mark must cover only what it holds.
                self.record_deferred()?;
                commit_to(&mut self.orders, &mut self.marks[2], seq, &self.bus)?;
            }
        }
        self.prepared = false;
        self.flushing = (self.flushing + 1) % 3;
        self.applied = self.marks.iter().copied().min().unwrap_or(0);
        Ok(())
    }

    /// Waits for the next command with nothing left to flush (`None`: the mailbox
    /// closed). While outbox rows wait to be deleted, it wakes after
    /// [`actor::TIDY_AFTER`] without a command and deletes what the bus has confirmed.
    pub(super) fn next_when_idle(&mut self, rx: &mpsc::Receiver<Envelope<LaneCmd>>) -> Result<Option<Envelope<LaneCmd>>, ServiceError> {
        loop {
            if !(self.trading.outbox_waiting() || self.risk.outbox_waiting() || self.orders.outbox_waiting()) {
                return Ok(rx.recv().ok());
            }
            match rx.recv_timeout(actor::TIDY_AFTER) {
                Ok(e) => return Ok(Some(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.trading.tidy()?;
                    self.risk.tidy()?;
                    self.orders.tidy()?;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}
