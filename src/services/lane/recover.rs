//! The lane's start: the intake journal's records past each store's mark redone, the
//! books and short positions rebuilt, open orders checked against the books.

use super::*;

impl Lane {
    /// Gives the open short sales an older agt stored without their short part (risk's
    /// `shorts_unknown`) that part back, from what remains of each order: read as 0,
    /// they counted nothing in the supply room (`Ledger::exposure`), so other short
    /// sales could grow past what every balance can hold exactly. Once per store: risk
    /// empties its list as it commits. After recovery, so the orders' remaining sizes and
    /// risk's holds are level with the journal.
    pub(super) fn restore_shorts(&mut self) -> Result<(), ServiceError> {
        let mut listed = Vec::new();
        self.risk.read(|_, tx, _| {
            listed = Risk::unknown_shorts(tx)?;
            Ok(())
        })?;
        if listed.is_empty() {
            return Ok(());
        }
        // Orders' rows as they stand (recovery's fills may wait unwritten).
        self.record_deferred()?;
        let mut remaining = Vec::with_capacity(listed.len());
        self.orders.read(|_, tx, _| {
            for id in listed {
                if let Some(left) = Orders::open_remaining(tx, &id)? {
                    remaining.push((id, left));
                }
            }
            Ok(())
        })?;
        let restored = self.risk.batch(&self.bus, |svc, tx, _| svc.restore_shorts(tx, &remaining))?;
        if restored > 0 {
            tracing::info!(orders = restored, "restored the short part of short sales stored without it");
        }
        Ok(())
    }

    /// Checks every live order against risk's holds and trading's books, in one read of
    /// the orders' live index, before the lane takes any command:
    ///
    /// - frees open holds whose order was never stored. The intake journal redoes a
    ///   placement's records in all three stores, so none should be left; this keeps a
    ///   store that lost its part (an older agt's crash, a restored backup) from holding
    ///   funds forever;
    /// - notes the open orders that rest in no book, where [`LaneCmd::StrayCancels`] then
    ///   looks for cancels to finish (normally there are none).
    ///
    /// Here, not through the mailboxes: ids stay borrowed instead of being copied across.
    /// With 114 k open orders, listing them to recovery, asking trading about each and
    /// checking holds in a read of their own took ~0.35 s of a ~1 s restart.
    pub(super) fn check_live_orders(&mut self) -> Result<(), ServiceError> {
        let mut holds: std::collections::HashSet<&str> = self.risk.svc.ledger().hold_ids().collect();
        let trading = &self.trading.svc;
        let mut unrested = Vec::new();
        let orphans = self.orders.work(|_, tx, _| {
            Orders::each_live(tx, |id, open| {
                holds.remove(id);
                if open && !trading.rests(id) {
                    unrested.push(id.to_string());
                }
            })?;
            // A hold whose order is stored but no longer live is not this check's to free.
            Ok(Orders::unknown(tx, holds)?)
        })?;
        self.orders.commit(&self.bus)?;
        self.unrested = unrested;
        if orphans.is_empty() {
            return Ok(());
        }
        tracing::info!(holds = orphans.len(), "releasing holds of orders that were never stored");
        let req = risk::SettleRequest { trades: vec![], release: orphans };
        if let Err(e) = self.risk.work(|svc, tx, _| svc.settle(tx, &req))? {
            return Err(ServiceError::Other(format!("cannot release the holds of orders never stored: {}", e.message)));
        }
        self.risk.commit(&self.bus)
    }

    /// The open orders noted at open that still rest in no book because a cancel took
    /// them out (trading's `cancels`), with what remains of each. Asked once, by recovery.
    pub(super) fn stray_cancels(&mut self) -> Result<Vec<trading::Cancelled>, ServiceError> {
        let candidates = std::mem::take(&mut self.unrested);
        let mut cancelled = Vec::new();
        self.trading.read(|svc, tx, _| {
            for id in candidates {
                if !svc.rests(&id) && Trading::cancelled_from_book(tx, &id)? {
                    cancelled.push(id);
                }
            }
            Ok(())
        })?;
        let mut stray = Vec::new();
        self.orders.read(|orders, tx, _| {
            debug_assert!(!orders.has_unwritten(), "stray cancels come after record_deferred");
            for id in &cancelled {
                stray.extend(Orders::cancellable(tx, id)?);
            }
            Ok(())
        })?;
        Ok(stray)
    }

    /// Brings the three stores level with the journal after a crash: each redoes, from
    /// the records after its own mark, what the lane had done in its open transaction —
    /// the same fills (trading matches each order again on its committed book, and must
    /// make the fills the journal has, ids and times included), holds, settlements,
    /// orders and times, decided nothing anew.
    pub(super) fn recover(&mut self) -> Result<(), ServiceError> {
        let risk_at = self.risk.work(|_, tx, _| intake::applied(tx))?;
        let orders_at = self.orders.work(|_, tx, _| intake::applied(tx))?;
        // An agt from before journalled into `trading.db`, in trading's own commits:
        // trading holds every record there.
        let (old_last, old) = self.trading.work(|_, tx, _| Ok((intake::last(tx)?, intake::after(tx, risk_at.min(orders_at))?)))?;
        let trading_at = self.trading.work(|_, tx, _| intake::applied(tx))?.max(old_last);
        let (last, new) = self.journal.after(risk_at.min(orders_at).min(trading_at))?;
        let records: Vec<(i64, Record)> = old.into_iter().map(|(seq, r)| (seq, Record::Place(r))).chain(new).collect();
        // Every number handed out is in the journal or below a mark.
        let end = last.max(old_last).max(risk_at).max(orders_at).max(trading_at);
        if !records.is_empty() {
            tracing::info!(
                trading = trading_at,
                risk = risk_at,
                orders = orders_at,
                journal = last,
                "redoing placements, cancels and amends from the intake journal"
            );
        }
        self.trading.work(|svc, tx, after| {
            for (seq, r) in records.iter().filter(|(seq, _)| *seq > trading_at) {
                let r = match r {
                    Record::Place(r) => r,
                    Record::Cancel(c) => {
                        for one in &c.cancelled {
                            svc.cancel(tx, &one.order_id)?;
                        }
                        continue;
                    }
                    Record::Amend(a) => {
                        svc.redo_amend(tx, &a.order_id, a.price, a.remaining, &a.result, after)?;
                        continue;
                    }
                };
                let Some(result) = &r.result else { continue };
                let Some(grid) = r.grid else {
                    return Err(ServiceError::Other(format!("intake record {seq} has a match but not the book's grid")));
                };
                let req = saga::match_on(&r.order, grid.tick, grid.lot, r.hold.as_ref().and_then(|h| h.budget));
                svc.redo_match(tx, req, result, after)?;
            }
            intake::mark_applied(tx, end)
        })?;
        self.trading.commit(&self.bus)?;
        self.risk.work(|svc, tx, _| {
            for (_, r) in records.iter().filter(|(seq, _)| *seq > risk_at) {
                let r = match r {
                    Record::Place(r) => r,
                    Record::Cancel(c) => {
                        let release = c.cancelled.iter().map(|one| one.order_id.clone()).collect();
                        if let Err(e) = svc.settle(tx, &risk::SettleRequest { trades: vec![], release })? {
                            return Err(ServiceError::Other(format!("cannot redo the release of a cancel: {}", e.message)));
                        }
                        continue;
                    }
                    Record::Amend(a) => {
                        let settlement = saga::settlement(&a.user_id, &a.symbol, a.side, &a.result);
                        let mut redone = svc.amend(&a.order_id, a.price, a.remaining, 0)?;
                        if redone.is_ok() {
                            redone = svc.settle_new(tx, &settlement)?;
                        }
                        if let Err(e) = redone {
                            return Err(ServiceError::Other(format!("cannot redo the amend of {}: {}", a.order_id, e.message)));
                        }
                        continue;
                    }
                };
                if let Some(plan) = &r.hold {
                    svc.restore_hold(tx, &r.order, plan)?;
                }
                let req = match (&r.result, &r.hold) {
                    (Some(result), _) => saga::settlement(&r.order.user_id, &r.order.symbol, r.order.side, result),
                    (None, Some(_)) => risk::SettleRequest { trades: vec![], release: vec![r.order.order_id.clone()] },
                    (None, None) => continue,
                };
                if let Err(e) = svc.settle_new(tx, &req)? {
                    return Err(ServiceError::Other(format!("cannot redo the settlement of {}: {}", r.order.order_id, e.message)));
                }
            }
            intake::mark_applied(tx, end)
        })?;
        self.risk.commit(&self.bus)?;
        self.orders.work(|orders, tx, after| {
            for (_, r) in records.iter().filter(|(seq, _)| *seq > orders_at) {
                let r = match r {
                    Record::Place(r) => r,
                    Record::Cancel(c) => {
                        orders.cancelled(tx, c.cancelled.clone(), &c.at, after)?;
                        continue;
                    }
                    Record::Amend(a) => {
                        let amended = Some((a.price, a.quantity));
                        if let Err(e) = orders.record_at(tx, a.result.clone(), amended, true, &a.at, after)? {
                            return Err(ServiceError::Other(format!("cannot redo the amend of {}: {}", a.order_id, e.message)));
                        }
                        continue;
                    }
                };
                if let Accepted::Existing(_) = orders.accept_at(tx, r.order.clone(), r.at.clone())? {
                    continue;
                }
                match (&r.result, &r.rejected) {
                    (Some(result), _) => drop(orders.record_at(tx, result.clone(), None, true, &r.at, after)?),
                    (None, Some(e)) => drop(orders.reject_at(tx, &r.order.order_id, &e.code, &e.message, &r.at, after)?),
                    (None, None) => {}
                }
            }
            intake::mark_applied(tx, end)
        })?;
        self.orders.commit(&self.bus)?;
        if old_last > 0 {
            self.trading.batch(&self.bus, |_, tx, _| intake::prune(tx, end))?;
        }
        self.journal.prune(end)?;
        (self.journalled, self.applied, self.pruned) = (end, end, end);
        self.marks = [end; 3];
        Ok(())
    }
}
