//! Cancels, cancel-alls and amends, run whole by the lane like placements and
//! journalled with them.

use super::*;

/// A cancel the lane runs whole, like a placement: trading takes the order(s) out of
/// the book, risk releases their holds, orders records them cancelled, all in the open
/// transactions; an intake record ([`CancelRecord`]) makes it durable and it is
/// answered then. As three calls from the saga it was three round trips between threads
/// and three flushes of the three stores; and a flush forced by a cancel in every batch
/// would cost a mixed flow of placements and cancels three commits a batch.
///
/// Cancels go into the journal in the order the lane ran them, between placements, so
/// a redo rebuilds the books as they were when each journalled placement matched. A
/// crash between the flush's commits is redone from the journal as for placements.
pub enum Cancel {
    /// One order. `owner`: a trader may cancel only their own (another's answers 404,
    /// as if absent).
    One { order_id: String, owner: Option<String>, reply: Reply<Order> },
    /// Every order of a user and/or a symbol (all of them with neither) resting when it
    /// comes, taken out a chunk per batch ([`MassCancel`]).
    Many { user_id: Option<String>, symbol: Option<String>, reply: Reply<Vec<Order>> },
}

/// An amend the lane runs whole, like a [`Cancel`]: risk resizes the hold, trading
/// moves the order (a price change or a larger size loses its place; a price that
/// crosses trades at once, as a taker), risk settles any fills and orders records them,
/// in the open transactions, made durable by an intake record ([`AmendRecord`]) and
/// answered then. As calls from the saga it was five round trips and four flushes, and
/// a crash after trading's commit left its fills unsettled and unrecorded.
pub struct Amend {
    pub order_id: String,
    /// A trader may amend only their own orders (another's answers 404, as if absent).
    pub owner: Option<String>,
    /// The new price, and/or the new total quantity: at least one of them.
    pub price: Option<Decimal>,
    pub quantity: Option<Decimal>,
    pub reply: Reply<Order>,
}

/// What an amend is checked against that the lane's three services do not keep, read by
/// the lane from the other services' read models once it has the order: its instrument's
/// quantity bounds (the market's) and whether its user may trade (the users'). The saga
/// used to read the order from the lane first to learn its symbol and user, then look
/// these up and send the amend: two round trips to the lane per amend instead of one.
pub(super) struct AmendTerms {
    /// The instrument's `min_quantity`, which the new total must reach, as a placement's.
    pub(super) instrument_min: Decimal,
    /// The instrument's `max_quantity` (zero: none), which the new total must not pass.
    pub(super) instrument_max: Decimal,
    /// False when the order's user is disabled (`user_disabled`): an amend is a new
    /// decision to trade.
    pub(super) user_active: bool,
}

impl AmendTerms {
    /// The terms of `order`'s amend, or a 503 while the market or the users service has
    /// not loaded its read model since the daemon started (a start's first moments): the
    /// bounds or the user's status are not known yet.
    pub(super) fn of(
        order: &Order,
        instruments: &crate::services::market::Listed,
        users: &crate::services::users::Directory,
    ) -> Result<AmendTerms, ApiError> {
        let Some(listed) = instruments.get() else {
            return Err(ApiError::unavailable("market"));
        };
        let user = match users.get(&order.user_id) {
            Some(u) => Some(u),
            None if !users.loaded() => return Err(ApiError::unavailable("users")),
            None => None,
        };
        // An instrument or user gone from its read model cannot be (neither is ever
        // deleted); the amend is then checked as before this lookup moved here: no
        // bounds, an active user.
        let (instrument_min, instrument_max) =
            listed.get(&order.symbol).map_or((Decimal::ZERO, Decimal::ZERO), |i| (i.min_quantity, i.max_quantity));
        Ok(AmendTerms { instrument_min, instrument_max, user_active: user.is_none_or(|u| u.is_active()) })
    }
}

/// A cancel-all under way: the orders that rested when it came, taken out of their books
/// [`MASS_CHUNK`] per batch, and answered with all of them once the last chunk is in the
/// journal. Orders placed meanwhile are not its to cancel. A crash on the way answers
/// 503 and keeps what the journalled chunks did; sent again, it cancels the rest.
pub(super) struct MassCancel {
    pub(super) targets: std::vec::IntoIter<String>,
    pub(super) done: Vec<Order>,
    pub(super) reply: Reply<Vec<Order>>,
}

/// Orders a cancel-all takes out per batch: ~7 ms of the lane (a few in unit tests, so
/// that they go through several chunks). A cancel-all of 40 k orders in one piece held
/// every other command up to ~0.5 s; in chunks of 500, ~45 ms at most, though it takes
/// ~1.1 s instead of ~0.6 s (the bus and audit take its events meanwhile, not after).
pub(super) const MASS_CHUNK: usize = if cfg!(test) { 4 } else { 500 };

/// How a [`Cancel`] is answered, once its record is in the journal.
pub(super) enum CancelAnswer {
    One(String, Reply<Order>),
    Many(Reply<Vec<Order>>),
}

impl CancelAnswer {
    pub(super) fn send(self, mut done: Vec<Order>) {
        match self {
            CancelAnswer::One(order_id, reply) => drop(reply.send(done.pop().ok_or_else(|| ApiError::not_found("order", &order_id)))),
            CancelAnswer::Many(reply) => drop(reply.send(Ok(done))),
        }
    }
}

impl Lane {
    /// The open order a cancel or an amend is for, without its fills: 404 if there is
    /// none, or if `owner` is given and is not its user (another's order looks absent);
    /// 409 if it is final.
    pub(super) fn open_order_of(&mut self, order_id: &str, owner: Option<&str>) -> Result<Result<(Order, String), ApiError>, ServiceError> {
        let order = self.orders.work(|orders, tx, _| {
            debug_assert!(!orders.has_unwritten(), "cancels and amends come after record_deferred");
            Ok(Orders::head(tx, order_id)?)
        })?;
        Ok(match order {
            Some((o, _)) if owner.is_some_and(|u| u != o.user_id) => Err(ApiError::not_found("order", order_id)),
            Some((o, _)) if !o.status.is_open() => Err(saga::not_open(&o)),
            Some(head) => Ok(head),
            None => Err(ApiError::not_found("order", order_id)),
        })
    }

    /// Runs a [`Cancel`] in the open transactions at `at`: its journal record, its
    /// answer and the orders it answers with, to send once the record is appended. A
    /// refusal changes nothing and is answered at once (`None`).
    pub(super) fn cancel(&mut self, cancel: Cancel, at: &str) -> Result<Option<(CancelRecord, CancelAnswer, Vec<Order>)>, ServiceError> {
        let (cancelled, answer) = match cancel {
            Cancel::One { order_id, owner, reply } => {
                if let Err(e) = self.open_order_of(&order_id, owner.as_deref())? {
                    let _ = reply.send(Err(e));
                    return Ok(None);
                }
                let Some(c) = self.trading.work(|svc, tx, _| svc.cancel(tx, &order_id))? else {
                    let e = ApiError::conflict(
                        "order_not_open",
                        format!("order {order_id} is not resting in a book (its placement has not finished)"),
                    );
                    let _ = reply.send(Err(e));
                    return Ok(None);
                };
                (vec![c], CancelAnswer::One(order_id, reply))
            }
            Cancel::Many { user_id, symbol, reply } => {
                let targets = self.trading.svc.resting_of(user_id.as_deref(), symbol.as_deref());
                self.mass.push_back(MassCancel { targets: targets.into_iter(), done: Vec::new(), reply });
                return Ok(None);
            }
        };
        let (record, done) = self.take_out(cancelled, at)?;
        Ok(Some((record, answer, done)))
    }

    /// Releases the holds of orders trading took out of their books and records them
    /// cancelled at `at`: the journal record, and the orders as they now stand.
    pub(super) fn take_out(&mut self, cancelled: Vec<trading::Cancelled>, at: &str) -> Result<(CancelRecord, Vec<Order>), ServiceError> {
        let release = risk::SettleRequest { trades: vec![], release: cancelled.iter().map(|c| c.order_id.clone()).collect() };
        if let Err(e) = self.risk.work(|svc, tx, _| svc.settle(tx, &release))? {
            // A release alone is never refused; were it, the lane would restart and its
            // open transactions, this cancel's included, roll back (the caller: 503).
            return Err(ServiceError::Other(format!("cannot release the holds of cancelled orders: {}", e.message)));
        }
        let done = self.orders.work(|orders, tx, after| orders.cancelled(tx, cancelled.clone(), at, after))?;
        Ok((CancelRecord { cancelled, at: at.to_string() }, done))
    }

    /// The next [`MASS_CHUNK`] orders of the oldest cancel-all under way: its journal
    /// record (none if they had all left their books meanwhile), and its answer once
    /// this was its last chunk.
    #[allow(clippy::type_complexity)]
    pub(super) fn mass_chunk(&mut self, at: &str) -> Result<(Option<CancelRecord>, Option<(CancelAnswer, Vec<Order>)>), ServiceError> {
        let Some(mass) = self.mass.front_mut() else { return Ok((None, None)) };
        let chunk: Vec<String> = mass.targets.by_ref().take(MASS_CHUNK).collect();
        let cancelled = self.trading.work(|svc, tx, _| {
            let mut out = Vec::with_capacity(chunk.len());
            for id in &chunk {
                out.extend(svc.cancel(tx, id)?);
            }
            Ok(out)
        })?;
        let record = match cancelled.is_empty() {
            true => None,
            false => {
                let (record, done) = self.take_out(cancelled, at)?;
                self.mass.front_mut().expect("still under way").done.extend(done);
                Some(record)
            }
        };
        let finished = self.mass.front().is_some_and(|m| m.targets.len() == 0);
        let answer = finished.then(|| self.mass.pop_front().expect("under way")).map(|m| (CancelAnswer::Many(m.reply), m.done));
        Ok((record, answer))
    }

    /// Whether a cancel-all is under way: the lane goes on with it while its mailbox is
    /// empty.
    pub(super) fn cancelling_many(&self) -> bool {
        !self.mass.is_empty()
    }

    /// Runs an [`Amend`] in the open transactions at `at`: its journal record, and its
    /// answer to send once the record is appended. A refusal changes nothing and is
    /// answered at once (`None`). The checks and their order are the saga's before.
    pub(super) fn amend(&mut self, amend: Amend, at: &str) -> Result<Option<(AmendRecord, Reply<Order>, Order)>, ServiceError> {
        let Amend { order_id, owner, price, quantity, reply } = amend;
        let refuse = |reply: Reply<Order>, e: ApiError| {
            let _ = reply.send(Err(e));
            Ok(None)
        };
        let (o, stage) = match self.open_order_of(&order_id, owner.as_deref())? {
            Ok((o, stage)) if o.kind == OrderType::Limit => (o, stage),
            Ok((o, _)) => return refuse(reply, saga::not_open(&o)),
            Err(e) => return refuse(reply, e),
        };
        let AmendTerms { instrument_min, instrument_max, user_active } = match AmendTerms::of(&o, &self.instruments, &self.users) {
            Ok(terms) => terms,
            Err(e) => return refuse(reply, e),
        };
        let price = price.or(o.price).unwrap_or_default();
        let quantity = quantity.unwrap_or(o.quantity);
        if price <= Decimal::ZERO {
            return refuse(reply, ApiError::invalid("invalid_price", format!("price must be greater than zero, got {price}")));
        }
        if quantity <= o.filled_quantity {
            let e = format!("quantity is the new total and must exceed the filled {}, got {quantity}", o.filled_quantity);
            return refuse(reply, ApiError::invalid("invalid_quantity", e));
        }
        let Some((tick, lot)) = self.trading.svc.grid_of(&order_id) else {
            let e = format!("order {order_id} is not resting in a book (its placement has not finished)");
            return refuse(reply, ApiError::conflict("order_not_open", e));
        };
        // A placement's rule and words, the nearest price on the tick included.
        if let Err(e) = risk::checks::check_tick(price, tick) {
            return refuse(reply, e);
        }
        if let Err(e) = risk::checks::check_lot(quantity, lot, instrument_min) {
            return refuse(reply, e);
        }
        // Fills come in lots, so this holds whenever the total is on the lot; a row from
        // before that rule is refused rather than left resting off its grid.
        let remaining = quantity - o.filled_quantity;
        if (remaining % lot) != Decimal::ZERO {
            let e = format!("the unfilled {remaining} of quantity {quantity} is not a multiple of the lot {lot}");
            return refuse(reply, ApiError::rejected("invalid_lot", e));
        }
        let price_changed = o.price != Some(price);
        if let Err(e) =
            self.risk.svc.check_amend((&o.user_id, user_active), &o.symbol, (price, quantity), price_changed, (tick, instrument_max))
        {
            return refuse(reply, e);
        }
        let grid = lot.normalize().scale();
        if let Err(e) = self.risk.work(|svc, _, _| svc.amend(&order_id, price, remaining, grid))? {
            return refuse(reply, e);
        }
        let result = match self.trading.work(|svc, tx, after| svc.amend(tx, &order_id, price, remaining, None, after))? {
            Ok(result) => result,
            Err(e) => {
                // The hold goes back to what it was.
                let (old_price, old_remaining) = (o.price.unwrap_or_default(), o.remaining_quantity);
                if let Err(e) = self.risk.work(|svc, _, _| svc.amend(&order_id, old_price, old_remaining, 0))? {
                    return Err(ServiceError::Other(format!("cannot put back the hold of {order_id}: {}", e.message)));
                }
                return refuse(reply, e);
            }
        };
        let settlement = saga::settlement(&o.user_id, &o.symbol, o.side, &result);
        if let Err(e) = self.risk.work(|svc, tx, _| svc.settle_new(tx, &settlement))? {
            // Never expected (the fills were just made against open holds); the lane
            // restarts and the open transactions, this amend's included, roll back.
            return Err(ServiceError::Other(format!("cannot settle the amend of {order_id}: {}", e.message)));
        }
        let amended = (price, quantity);
        let (user_id, symbol, side) = (o.user_id.clone(), o.symbol.clone(), o.side);
        // The row the check read is still the order's: nothing between wrote to orders.
        let order =
            self.orders.work(|orders, tx, after| orders.record_head(tx, o, &stage, result.clone(), Some(amended), true, at, after))?;
        let record = AmendRecord { order_id, user_id, symbol, side, price, quantity, remaining, result, at: at.to_string() };
        Ok(Some((record, reply, order)))
    }
}
