//! The engine's rules one by one, then random sessions checked against invariants and
//! against a deliberately naive reference book.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use Side::{Buy, Sell};
use TimeInForce::{Fok, Gtc, Ioc};

fn gtc(id: OrderId, owner: OwnerId, side: Side, price: i64, qty: i64) -> Incoming {
    Incoming::limit(id, owner, side, price, qty, Gtc)
}

fn place(book: &mut Book, o: Incoming) -> (Outcome, Vec<Fill>) {
    let mut fills = Vec::new();
    let outcome = book.place(o, &mut fills);
    (outcome, fills)
}

/// Places resting orders that are not expected to trade.
fn seed(book: &mut Book, orders: &[Incoming]) {
    for &o in orders {
        let (outcome, fills) = place(book, o);
        assert_eq!((outcome.rest, fills.len()), (Rest::Resting, 0), "seed order {} traded", o.id);
    }
}

/// `(maker_id, price, qty)` of each fill, the part most tests care about.
fn trades(fills: &[Fill]) -> Vec<(OrderId, i64, i64)> {
    fills.iter().map(|f| (f.maker_id, f.price, f.qty)).collect()
}

fn queue(book: &Book, side: Side) -> Vec<(OrderId, i64, i64)> {
    book.resting().filter(|r| r.side == side).map(|r| (r.id, r.price, r.remaining)).collect()
}

fn outcome(filled: i64, remaining: i64, rest: Rest) -> Outcome {
    Outcome { filled, remaining, rest, self_trade_prevented: false }
}

#[test]
fn a_limit_order_that_does_not_cross_rests_at_its_price() {
    let mut book = Book::with_capacity(8);
    let (o, fills) = place(&mut book, gtc(1, 1, Buy, 99, 5));
    assert_eq!(o, outcome(0, 5, Rest::Resting));
    assert!(fills.is_empty());
    seed(&mut book, &[gtc(2, 2, Sell, 100, 3)]);
    assert_eq!((book.best_bid(), book.best_ask(), book.len()), (Some(99), Some(100), 2));
    assert_eq!(book.get(1), Some(&RestingOrder { id: 1, owner: 1, side: Buy, price: 99, remaining: 5, priority: 1 }));
}

#[test]
fn better_price_trades_first_then_earlier_order() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 101, 1), gtc(2, 1, Sell, 100, 1), gtc(3, 2, Sell, 100, 1), gtc(4, 2, Sell, 102, 1)]);
    let (o, fills) = place(&mut book, gtc(5, 3, Buy, 101, 3));
    assert_eq!(o, outcome(3, 0, Rest::Filled));
    assert_eq!(trades(&fills), vec![(2, 100, 1), (3, 100, 1), (1, 101, 1)]);
    assert!(fills.iter().all(|f| f.taker_id == 5));
    assert_eq!(queue(&book, Sell), vec![(4, 102, 1)]);
}

#[test]
fn bids_are_served_highest_first() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 98, 1), gtc(2, 1, Buy, 99, 1), gtc(3, 2, Buy, 99, 1)]);
    let (_, fills) = place(&mut book, gtc(4, 3, Sell, 90, 3));
    assert_eq!(trades(&fills), vec![(2, 99, 1), (3, 99, 1), (1, 98, 1)]);
}

#[test]
fn a_trade_happens_at_the_resting_orders_price() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 5), gtc(2, 1, Buy, 90, 5)]);
    let (_, fills) = place(&mut book, gtc(3, 2, Buy, 105, 2));
    assert_eq!(trades(&fills), vec![(1, 100, 2)]);
    let (_, fills) = place(&mut book, gtc(4, 2, Sell, 80, 2));
    assert_eq!(trades(&fills), vec![(2, 90, 2)]);
}

#[test]
fn a_partly_filled_maker_keeps_its_place_in_the_queue() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 10), gtc(2, 2, Sell, 100, 5)]);
    let (o, fills) = place(&mut book, gtc(3, 3, Buy, 100, 4));
    assert_eq!(o, outcome(4, 0, Rest::Filled));
    assert_eq!(fills[0].maker_remaining, 6);
    assert_eq!(fills[0].maker_owner, 1);
    assert_eq!(queue(&book, Sell), vec![(1, 100, 6), (2, 100, 5)]);
    let (_, fills) = place(&mut book, gtc(4, 3, Buy, 100, 7));
    assert_eq!(trades(&fills), vec![(1, 100, 6), (2, 100, 1)]);
    assert_eq!(fills[0].maker_remaining, 0);
    assert_eq!(book.get(1), None);
}

#[test]
fn a_partly_filled_gtc_order_rests_its_remainder() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 4), gtc(2, 1, Sell, 102, 4)]);
    let (o, fills) = place(&mut book, gtc(3, 2, Buy, 101, 10));
    assert_eq!(o, outcome(4, 6, Rest::Resting));
    assert_eq!(trades(&fills), vec![(1, 100, 4)]);
    assert_eq!((book.best_bid(), book.best_ask()), (Some(101), Some(102)));
    assert_eq!(book.get(3).map(|r| r.remaining), Some(6));
}

#[test]
fn place_appends_to_the_callers_fills_without_clearing_them() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 1), gtc(2, 1, Sell, 100, 1)]);
    let mut fills = Vec::new();
    book.place(gtc(3, 2, Buy, 100, 1), &mut fills);
    book.place(gtc(4, 2, Buy, 100, 1), &mut fills);
    assert_eq!(fills.iter().map(|f| f.taker_id).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn ioc_trades_what_it_can_and_cancels_the_rest() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 3), gtc(2, 1, Sell, 101, 3)]);
    let (o, fills) = place(&mut book, Incoming::limit(3, 2, Buy, 100, 5, Ioc));
    assert_eq!(o, outcome(3, 2, Rest::Cancelled));
    assert_eq!(trades(&fills), vec![(1, 100, 3)]);
    assert_eq!(book.best_bid(), None);
    let (o, fills) = place(&mut book, Incoming::limit(4, 2, Buy, 99, 5, Ioc));
    assert_eq!(o, outcome(0, 5, Rest::Cancelled));
    assert!(fills.is_empty());
}

#[test]
fn fok_that_cannot_fill_completely_trades_nothing() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 3), gtc(2, 1, Sell, 101, 2), gtc(3, 1, Sell, 103, 9)]);
    let before: Vec<_> = book.resting().copied().collect();
    // Enough lots exist, but not within the limit.
    let (o, fills) = place(&mut book, Incoming::limit(4, 2, Buy, 101, 6, Fok));
    assert_eq!(o, outcome(0, 6, Rest::Cancelled));
    assert!(fills.is_empty());
    assert_eq!(book.resting().copied().collect::<Vec<_>>(), before);
}

#[test]
fn fok_that_can_fill_sweeps_levels() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 3), gtc(2, 1, Sell, 101, 2), gtc(3, 1, Sell, 103, 9)]);
    let (o, fills) = place(&mut book, Incoming::limit(4, 2, Buy, 101, 5, Fok));
    assert_eq!(o, outcome(5, 0, Rest::Filled));
    assert_eq!(trades(&fills), vec![(1, 100, 3), (2, 101, 2)]);
    let (o, _) = place(&mut book, Incoming { tif: Fok, ..Incoming::market(5, 2, Buy, 9) });
    assert_eq!(o, outcome(9, 0, Rest::Filled));
    assert!(book.is_empty());
}

#[test]
fn fok_counts_only_liquidity_before_the_first_own_order() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 3), gtc(2, 2, Sell, 100, 3), gtc(3, 1, Sell, 101, 10)]);
    let (o, fills) = place(&mut book, Incoming::limit(4, 2, Buy, 101, 5, Fok));
    assert_eq!(o, Outcome { filled: 0, remaining: 5, rest: Rest::Cancelled, self_trade_prevented: true });
    assert!(fills.is_empty());
    let (o, fills) = place(&mut book, Incoming::limit(5, 2, Buy, 101, 3, Fok));
    assert_eq!(o, outcome(3, 0, Rest::Filled));
    assert_eq!(trades(&fills), vec![(1, 100, 3)]);
}

#[test]
fn a_market_order_sweeps_levels_and_never_rests() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 3), gtc(2, 1, Sell, 101, 4), gtc(3, 1, Buy, 90, 1)]);
    for tif in [Gtc, Ioc] {
        let mut b = book.clone();
        let (o, fills) = place(&mut b, Incoming { tif, ..Incoming::market(4, 2, Buy, 10) });
        assert_eq!(o, outcome(7, 3, Rest::Cancelled));
        assert_eq!(trades(&fills), vec![(1, 100, 3), (2, 101, 4)]);
        assert_eq!((b.best_bid(), b.best_ask()), (Some(90), None));
    }
    let (o, fills) = place(&mut book, Incoming::market(5, 2, Sell, 1));
    assert_eq!(o, outcome(1, 0, Rest::Filled));
    assert_eq!(trades(&fills), vec![(3, 90, 1)]);
}

#[test]
fn a_market_order_on_an_empty_side_is_cancelled() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 90, 1)]);
    let (o, fills) = place(&mut book, Incoming::market(2, 2, Buy, 10));
    assert_eq!(o, outcome(0, 10, Rest::Cancelled));
    assert!(fills.is_empty());
    assert_eq!(book.len(), 1);
}

#[test]
fn a_market_buy_spends_at_most_its_budget_in_whole_lots() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 5), gtc(2, 1, Sell, 200, 5)]);
    let mut b = book.clone();
    // 5 × 100 = 500, then floor(400 / 200) = 2 lots at 200.
    let (o, fills) = place(&mut b, Incoming { budget: Some(900), ..Incoming::market(3, 2, Buy, 100) });
    assert_eq!(o, outcome(7, 93, Rest::Cancelled));
    assert_eq!(trades(&fills), vec![(1, 100, 5), (2, 200, 2)]);
    assert_eq!(b.get(2).map(|r| r.remaining), Some(3));
    // Cannot afford the last lot at 100: stops inside the level, the order keeps its rest.
    let mut b = book.clone();
    let (o, fills) = place(&mut b, Incoming { budget: Some(450), ..Incoming::market(3, 2, Buy, 100) });
    assert_eq!(o, outcome(4, 96, Rest::Cancelled));
    assert_eq!(trades(&fills), vec![(1, 100, 4)]);
    // Quantity, not budget, can be the binding limit.
    let mut b = book.clone();
    let (o, _) = place(&mut b, Incoming { budget: Some(10_000), ..Incoming::market(3, 2, Buy, 6) });
    assert_eq!(o, outcome(6, 0, Rest::Filled));
    for budget in [0, 99, -5] {
        let mut b = book.clone();
        let (o, fills) = place(&mut b, Incoming { budget: Some(budget), ..Incoming::market(3, 2, Buy, 6) });
        assert_eq!((o, fills.len()), (outcome(0, 6, Rest::Cancelled), 0), "budget {budget}");
    }
}

#[test]
fn fok_with_a_budget_counts_only_what_it_can_afford() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 5), gtc(2, 1, Sell, 200, 5)]);
    let fok = |id, qty| Incoming { tif: Fok, budget: Some(900), ..Incoming::market(id, 2, Buy, qty) };
    let (o, fills) = place(&mut book.clone(), fok(3, 8));
    assert_eq!((o, fills.len()), (outcome(0, 8, Rest::Cancelled), 0));
    let (o, fills) = place(&mut book, fok(4, 7));
    assert_eq!(o, outcome(7, 0, Rest::Filled));
    assert_eq!(trades(&fills), vec![(1, 100, 5), (2, 200, 2)]);
}

#[test]
fn fok_out_of_budget_before_an_own_order_is_not_a_self_trade() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 95, 5), gtc(2, 2, Sell, 95, 1)]);
    let (o, _) = place(&mut book, Incoming { budget: Some(95), ..Incoming::limit(3, 2, Buy, 95, 5, Fok) });
    assert_eq!(o, outcome(0, 5, Rest::Cancelled));
}

#[test]
fn a_budget_on_a_sell_is_ignored() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 100, 5)]);
    let (o, _) = place(&mut book, Incoming { budget: Some(0), ..Incoming::market(2, 2, Sell, 5) });
    assert_eq!(o, outcome(5, 0, Rest::Filled));
}

#[test]
fn self_trade_prevention_cancels_the_incoming_remainder_and_spares_the_resting_order() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 2, Sell, 99, 2), gtc(2, 1, Sell, 100, 5), gtc(3, 2, Sell, 100, 5)]);
    let (o, fills) = place(&mut book, gtc(4, 1, Buy, 100, 10));
    assert_eq!(o, Outcome { filled: 2, remaining: 8, rest: Rest::Cancelled, self_trade_prevented: true });
    assert_eq!(trades(&fills), vec![(1, 99, 2)]);
    assert_eq!(queue(&book, Sell), vec![(2, 100, 5), (3, 100, 5)]);
    assert_eq!(book.best_bid(), None, "a GTC remainder stopped by STP must not rest and cross");
    // An own order beyond the limit is not a self-trade.
    let (o, _) = place(&mut book, gtc(5, 1, Buy, 99, 1));
    assert_eq!(o, outcome(0, 1, Rest::Resting));
    let (o, _) = place(&mut book, Incoming::market(6, 1, Buy, 1));
    assert!(o.self_trade_prevented);
}

#[test]
fn zero_or_negative_quantity_is_cancelled_without_trading() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 5)]);
    for qty in [0, -3] {
        for o in [gtc(2, 2, Buy, 100, qty), Incoming::market(3, 2, Buy, qty), Incoming::limit(4, 2, Buy, 100, qty, Fok)] {
            let (out, fills) = place(&mut book, o);
            assert_eq!((out, fills.len()), (outcome(0, 0, Rest::Cancelled), 0));
        }
    }
    assert_eq!(book.len(), 1);
}

#[test]
fn an_id_that_is_already_resting_is_refused() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 5)]);
    let (o, fills) = place(&mut book, gtc(1, 2, Buy, 100, 5));
    assert_eq!((o, fills.len()), (outcome(0, 5, Rest::Cancelled), 0));
    assert_eq!(book.get(1).map(|r| r.remaining), Some(5));
}

#[test]
fn cancel_removes_the_order_and_returns_what_was_left() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Sell, 100, 5), gtc(2, 1, Sell, 100, 5), gtc(3, 1, Sell, 100, 5), gtc(4, 1, Sell, 101, 1)]);
    place(&mut book, gtc(5, 2, Buy, 100, 2));
    let cancelled = book.cancel(1).expect("order 1 rests");
    assert_eq!((cancelled.id, cancelled.remaining, cancelled.price), (1, 3, 100));
    assert_eq!(book.cancel(1), None);
    assert_eq!(book.cancel(5), None, "a filled order is not resting");
    assert_eq!(book.cancel(42), None);
    book.cancel(3);
    assert_eq!(queue(&book, Sell), vec![(2, 100, 5), (4, 101, 1)]);
    assert_eq!(book.depth(5).1, vec![(100, 5), (101, 1)]);
    book.cancel(2);
    assert_eq!(book.best_ask(), Some(101), "an emptied level disappears");
    book.cancel(4);
    assert!(book.is_empty());
    assert_eq!(book.best_ask(), None);
}

#[test]
fn amend_down_at_the_same_price_keeps_priority() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 100, 5), gtc(2, 1, Buy, 100, 5)]);
    let mut fills = Vec::new();
    assert_eq!(book.amend(1, 100, 3, 3, &mut fills), Some(outcome(0, 3, Rest::Resting)));
    assert_eq!(book.amend(1, 100, 3, 4, &mut fills), Some(outcome(0, 3, Rest::Resting)));
    assert_eq!(queue(&book, Buy), vec![(1, 100, 3), (2, 100, 5)]);
    assert_eq!(book.get(1).map(|r| r.priority), Some(1));
    assert_eq!(book.depth(1).0, vec![(100, 8)]);
    assert!(fills.is_empty());
}

#[test]
fn amend_up_or_to_another_price_loses_priority() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 100, 5), gtc(2, 1, Buy, 100, 5), gtc(3, 1, Buy, 100, 5)]);
    let mut fills = Vec::new();
    assert_eq!(book.amend(1, 100, 6, 4, &mut fills), Some(outcome(0, 6, Rest::Resting)));
    assert_eq!(queue(&book, Buy), vec![(2, 100, 5), (3, 100, 5), (1, 100, 6)]);
    assert_eq!(book.get(1).map(|r| r.priority), Some(4));
    book.amend(2, 99, 5, 5, &mut fills);
    book.amend(2, 100, 5, 6, &mut fills);
    assert_eq!(queue(&book, Buy), vec![(3, 100, 5), (1, 100, 6), (2, 100, 5)]);
    assert_eq!(book.depth(3).0, vec![(100, 16)]);
    assert!(fills.is_empty());
}

#[test]
fn amend_that_crosses_trades_as_taker_under_its_own_id() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 99, 5), gtc(2, 2, Sell, 100, 3), gtc(3, 1, Buy, 99, 1)]);
    let mut fills = Vec::new();
    let o = book.amend(1, 100, 5, 4, &mut fills);
    assert_eq!(o, Some(outcome(3, 2, Rest::Resting)));
    assert_eq!(fills, vec![Fill { maker_id: 2, maker_owner: 2, taker_id: 1, price: 100, qty: 3, maker_remaining: 0 }]);
    assert_eq!(book.get(1), Some(&RestingOrder { id: 1, owner: 1, side: Buy, price: 100, remaining: 2, priority: 4 }));
    assert_eq!((book.best_bid(), book.best_ask()), (Some(100), None));
}

#[test]
fn amend_to_zero_cancels_and_amend_of_an_unknown_order_is_none() {
    let mut book = Book::with_capacity(8);
    seed(&mut book, &[gtc(1, 1, Buy, 99, 5)]);
    let mut fills = Vec::new();
    assert_eq!(book.amend(7, 99, 1, 8, &mut fills), None);
    assert_eq!(book.amend(1, 99, 0, 8, &mut fills), Some(outcome(0, 5, Rest::Cancelled)));
    assert!(book.is_empty());
    assert_eq!(book.amend(1, 99, 1, 9, &mut fills), None);
}

#[test]
fn insert_resting_restores_priority_without_matching() {
    let mut original = Book::with_capacity(8);
    seed(&mut original, &[gtc(1, 1, Buy, 100, 5), gtc(2, 2, Buy, 100, 5), gtc(3, 1, Sell, 102, 5), gtc(4, 2, Buy, 101, 1)]);
    original.amend(1, 100, 6, 5, &mut Vec::new());
    let mut restored = Book::with_capacity(0);
    for r in original.resting() {
        assert!(restored.insert_resting(*r));
    }
    assert_eq!(restored.resting().collect::<Vec<_>>(), original.resting().collect::<Vec<_>>());
    assert_eq!(restored.depth(10), original.depth(10));
    let (_, fills) = place(&mut restored, gtc(6, 3, Sell, 100, 7));
    assert_eq!(trades(&fills), vec![(4, 101, 1), (2, 100, 5), (1, 100, 1)]);
    // Duplicates and empty orders are refused.
    assert!(!restored.insert_resting(*restored.get(1).unwrap()));
    assert!(!restored.insert_resting(RestingOrder { id: 9, owner: 1, side: Buy, price: 1, remaining: 0, priority: 9 }));
}

#[test]
fn insert_resting_out_of_order_still_queues_by_priority() {
    let mut book = Book::with_capacity(8);
    for (id, priority) in [(1, 30), (2, 10), (3, 20)] {
        book.insert_resting(RestingOrder { id, owner: 1, side: Sell, price: 100, remaining: 1, priority });
    }
    assert_eq!(queue(&book, Sell).iter().map(|q| q.0).collect::<Vec<_>>(), vec![2, 3, 1]);
}

#[test]
fn depth_aggregates_each_level_best_first() {
    let mut book = Book::with_capacity(8);
    seed(
        &mut book,
        &[
            gtc(1, 1, Buy, 98, 2),
            gtc(2, 1, Buy, 99, 3),
            gtc(3, 2, Buy, 99, 4),
            gtc(4, 1, Sell, 101, 1),
            gtc(5, 1, Sell, 103, 6),
            gtc(6, 1, Sell, 101, 2),
        ],
    );
    assert_eq!(book.depth(10), (vec![(99, 7), (98, 2)], vec![(101, 3), (103, 6)]));
    assert_eq!(book.depth(1), (vec![(99, 7)], vec![(101, 3)]));
    assert_eq!(book.depth(0), (vec![], vec![]));
}

#[test]
fn a_book_grows_past_its_capacity() {
    let mut book = Book::with_capacity(0);
    for id in 1..=1000 {
        seed(&mut book, &[gtc(id, 1, Buy, (id % 50) as i64, 1)]);
    }
    assert_eq!(book.len(), 1000);
    let (o, _) = place(&mut book, Incoming::market(2000, 2, Sell, 1000));
    assert_eq!(o.filled, 1000);
    assert!(book.is_empty());
}

/// The reference book: a flat list searched from scratch for every trade, with FOK done
/// by trial and rollback, so it shares no structure or shortcut with the engine.
#[derive(Clone, Default)]
struct Model {
    orders: Vec<RestingOrder>,
}

impl Model {
    fn place(&mut self, o: Incoming, priority: u64) -> (Outcome, Vec<Fill>) {
        if o.qty <= 0 {
            return (Outcome { filled: 0, remaining: 0, rest: Rest::Cancelled, self_trade_prevented: false }, vec![]);
        }
        if o.tif == Fok {
            let mut trial = self.clone();
            let (out, fills) = trial.trade(o, priority);
            if out.filled < o.qty {
                let out = Outcome { filled: 0, remaining: o.qty, rest: Rest::Cancelled, ..out };
                return (out, vec![]);
            }
            *self = trial;
            return (out, fills);
        }
        self.trade(o, priority)
    }

    fn trade(&mut self, o: Incoming, priority: u64) -> (Outcome, Vec<Fill>) {
        let mut left = o.qty;
        let mut spent: i128 = 0;
        let mut fills = vec![];
        let mut stp = false;
        let mut may_rest = false;
        while left > 0 {
            let best = (0..self.orders.len()).filter(|&i| self.orders[i].side != o.side).min_by_key(|&i| {
                let r = &self.orders[i];
                (if r.side == Sell { r.price } else { -r.price }, r.priority)
            });
            let Some(i) = best else {
                may_rest = true;
                break;
            };
            let maker = self.orders[i];
            let crosses = match o.limit {
                None => true,
                Some(l) => (o.side == Buy && l >= maker.price) || (o.side == Sell && l <= maker.price),
            };
            if !crosses {
                may_rest = true;
                break;
            }
            if maker.owner == o.owner {
                stp = true;
                break;
            }
            let mut qty = left.min(maker.remaining);
            if let (Buy, Some(budget)) = (o.side, o.budget) {
                if maker.price > 0 {
                    qty = qty.min(((budget - spent).max(0) / maker.price as i128) as i64);
                }
            }
            if qty == 0 {
                break;
            }
            spent += maker.price as i128 * qty as i128;
            left -= qty;
            self.orders[i].remaining -= qty;
            fills.push(Fill {
                maker_id: maker.id,
                maker_owner: maker.owner,
                taker_id: o.id,
                price: maker.price,
                qty,
                maker_remaining: self.orders[i].remaining,
            });
            if self.orders[i].remaining == 0 {
                self.orders.remove(i);
            }
        }
        let rest = if left == 0 {
            Rest::Filled
        } else if may_rest && o.limit.is_some() && o.tif == Gtc {
            self.orders.push(RestingOrder { id: o.id, owner: o.owner, side: o.side, price: o.limit.unwrap(), remaining: left, priority });
            Rest::Resting
        } else {
            Rest::Cancelled
        };
        (Outcome { filled: o.qty - left, remaining: left, rest, self_trade_prevented: stp }, fills)
    }

    fn cancel(&mut self, id: OrderId) -> Option<RestingOrder> {
        let i = self.orders.iter().position(|r| r.id == id)?;
        Some(self.orders.remove(i))
    }

    fn amend(&mut self, id: OrderId, price: i64, qty: i64, priority: u64) -> Option<(Outcome, Vec<Fill>)> {
        let i = self.orders.iter().position(|r| r.id == id)?;
        let r = self.orders[i];
        if qty <= 0 {
            self.orders.remove(i);
            return Some((Outcome { filled: 0, remaining: r.remaining, rest: Rest::Cancelled, self_trade_prevented: false }, vec![]));
        }
        if price == r.price && qty <= r.remaining {
            self.orders[i].remaining = qty;
            return Some((Outcome { filled: 0, remaining: qty, rest: Rest::Resting, self_trade_prevented: false }, vec![]));
        }
        self.orders.remove(i);
        Some(self.trade(gtc(id, r.owner, r.side, price, qty), priority))
    }

    /// Bids best first, then asks best first, FIFO by priority within a price.
    fn sorted(&self) -> Vec<RestingOrder> {
        let mut all = self.orders.clone();
        all.sort_by_key(|r| (r.side == Sell, if r.side == Buy { -r.price } else { r.price }, r.priority));
        all
    }
}

#[derive(Debug, Clone)]
enum Op {
    Place {
        owner: OwnerId,
        side: Side,
        limit: Option<i64>,
        qty: i64,
        tif: TimeInForce,
        budget: Option<i128>,
    },
    /// `pick` chooses among resting orders, or among every id issued when `stale`.
    Cancel {
        pick: usize,
        stale: bool,
    },
    Amend {
        pick: usize,
        stale: bool,
        price: i64,
        qty: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Buy), Just(Sell)];
    let tif = prop_oneof![6 => Just(Gtc), 2 => Just(Ioc), 2 => Just(Fok)];
    let limit = prop_oneof![8 => (95i64..=105).prop_map(Some), 2 => Just(None)];
    let qty = prop_oneof![1 => -1i64..=0, 9 => 1i64..=12];
    let budget = prop_oneof![7 => Just(None), 3 => (0i128..=3000).prop_map(Some)];
    prop_oneof![
        6 => (0u64..4, side, limit, qty, tif, budget)
            .prop_map(|(owner, side, limit, qty, tif, budget)| Op::Place { owner, side, limit, qty, tif, budget }),
        2 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(pick, stale)| Op::Cancel { pick, stale }),
        2 => (any::<usize>(), prop::bool::weighted(0.2), 95i64..=105, -1i64..=12)
            .prop_map(|(pick, stale, price, qty)| Op::Amend { pick, stale, price, qty }),
    ]
}

/// Per order: what it was given, what traded, what was cancelled. Resting quantity is
/// whatever the book says, so `given == filled + cancelled + resting` must always hold.
#[derive(Debug, Default, Clone, Copy)]
struct Ledger {
    given: i64,
    filled: i64,
    cancelled: i64,
}

/// The checks that hold after every operation, independent of the model.
fn check_book(book: &Book, ledgers: &HashMap<OrderId, Ledger>) -> Result<(), TestCaseError> {
    if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
        prop_assert!(bid < ask, "crossed book: bid {} >= ask {}", bid, ask);
    }
    let all: Vec<RestingOrder> = book.resting().copied().collect();
    prop_assert_eq!(all.len(), book.len());
    for side in [Buy, Sell] {
        let orders: Vec<_> = all.iter().filter(|r| r.side == side).collect();
        for pair in orders.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let better = if side == Buy { a.price > b.price } else { a.price < b.price };
            prop_assert!(better || (a.price == b.price && a.priority < b.priority), "out of order: {:?} then {:?}", a, b);
        }
        let mut levels: Vec<(i64, i64)> = Vec::new();
        for r in &orders {
            prop_assert!(r.remaining > 0);
            match levels.last_mut() {
                Some((p, q)) if *p == r.price => *q += r.remaining,
                _ => levels.push((r.price, r.remaining)),
            }
        }
        let depth = book.depth(usize::MAX);
        prop_assert_eq!(if side == Buy { &depth.0 } else { &depth.1 }, &levels);
        prop_assert_eq!(book.depth(2).0.len(), depth.0.len().min(2));
        prop_assert_eq!(book.best_bid(), depth.0.first().map(|l| l.0));
        prop_assert_eq!(book.best_ask(), depth.1.first().map(|l| l.0));
    }
    for (id, l) in ledgers {
        let resting = book.get(*id).map_or(0, |r| r.remaining);
        prop_assert_eq!(l.given, l.filled + l.cancelled + resting, "quantity not conserved for order {}: {:?}", id, l);
    }
    Ok(())
}

/// The checks on one call's fills: taker, maker price, limit, no self-trade, totals.
fn check_fills(before: &HashMap<OrderId, RestingOrder>, taker: &Incoming, out: &Outcome, fills: &[Fill]) -> Result<(), TestCaseError> {
    prop_assert_eq!(fills.iter().map(|f| f.qty).sum::<i64>(), out.filled);
    prop_assert_eq!(out.filled + out.remaining, taker.qty.max(0));
    let mut left: HashMap<OrderId, i64> = HashMap::new();
    let mut spent: i128 = 0;
    for f in fills {
        let maker = before.get(&f.maker_id).expect("fill against an order that was not resting");
        prop_assert_eq!(f.taker_id, taker.id);
        prop_assert_eq!(f.price, maker.price);
        prop_assert_eq!(f.maker_owner, maker.owner);
        prop_assert!(f.maker_owner != taker.owner, "self-trade");
        prop_assert!(f.qty > 0);
        let l = left.entry(f.maker_id).or_insert(maker.remaining);
        *l -= f.qty;
        prop_assert_eq!(f.maker_remaining, *l);
        match (taker.side, taker.limit) {
            (Buy, Some(limit)) => prop_assert!(f.price <= limit),
            (Sell, Some(limit)) => prop_assert!(f.price >= limit),
            _ => {}
        }
        spent += f.price as i128 * f.qty as i128;
    }
    if let (Buy, Some(budget)) = (taker.side, taker.budget) {
        prop_assert!(spent <= budget.max(0));
    }
    Ok(())
}

fn run_session(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut book = Book::with_capacity(16);
    let mut model = Model::default();
    let mut ledgers: HashMap<OrderId, Ledger> = HashMap::new();
    let mut next_id: OrderId = 1;
    for op in ops {
        let before: HashMap<OrderId, RestingOrder> = book.resting().map(|r| (r.id, *r)).collect();
        let pick = |pick: usize, stale: bool| -> OrderId {
            let resting: Vec<OrderId> = book.resting().map(|r| r.id).collect();
            if stale || resting.is_empty() {
                (pick as u64) % next_id
            } else {
                resting[pick % resting.len()]
            }
        };
        let mut fills = Vec::new();
        match op {
            Op::Place { owner, side, limit, qty, tif, budget } => {
                let o = Incoming { id: next_id, owner, side, limit, qty, tif, budget };
                next_id += 1;
                let out = book.place(o, &mut fills);
                let (want, want_fills) = model.place(o, o.id);
                prop_assert_eq!(out, want);
                prop_assert_eq!(&fills, &want_fills);
                check_fills(&before, &o, &out, &fills)?;
                let l = ledgers.entry(o.id).or_default();
                l.given = qty.max(0);
                l.filled += out.filled;
                if out.rest == Rest::Cancelled {
                    l.cancelled += out.remaining;
                }
            }
            Op::Cancel { pick: p, stale } => {
                let id = pick(p, stale);
                let got = book.cancel(id);
                prop_assert_eq!(got, model.cancel(id));
                prop_assert_eq!(got.is_some(), before.contains_key(&id));
                if let Some(r) = got {
                    ledgers.get_mut(&id).unwrap().cancelled += r.remaining;
                }
            }
            Op::Amend { pick: p, stale, price, qty } => {
                let id = pick(p, stale);
                let priority = next_id;
                next_id += 1;
                let got = book.amend(id, price, qty, priority, &mut fills);
                let want = model.amend(id, price, qty, priority);
                prop_assert_eq!(got, want.as_ref().map(|w| w.0));
                prop_assert_eq!(&fills, &want.map(|w| w.1).unwrap_or_default());
                prop_assert_eq!(got.is_some(), before.contains_key(&id));
                if let Some(out) = got {
                    let old = before[&id];
                    let l = ledgers.get_mut(&id).unwrap();
                    if qty <= 0 {
                        l.cancelled += old.remaining;
                    } else {
                        l.given += qty - old.remaining;
                        let as_taker = gtc(id, old.owner, old.side, price, qty);
                        check_fills(&before, &as_taker, &out, &fills)?;
                        l.filled += out.filled;
                        if out.rest == Rest::Cancelled {
                            l.cancelled += out.remaining;
                        }
                    }
                }
            }
        }
        for f in &fills {
            ledgers.get_mut(&f.maker_id).unwrap().filled += f.qty;
        }
        check_book(&book, &ledgers)?;
        prop_assert_eq!(book.resting().copied().collect::<Vec<_>>(), model.sorted());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: crate::testing::proptest_cases(512),
        // Regressions would be written next to this file, which other code shares.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sessions_keep_invariants_and_match_the_reference(ops in prop::collection::vec(op(), 1..200)) {
        run_session(ops)?;
    }

    #[test]
    fn resting_replayed_through_insert_resting_rebuilds_the_same_book(ops in prop::collection::vec(op(), 1..100)) {
        let mut book = Book::with_capacity(8);
        let mut next_id = 1;
        for op in ops {
            if let Op::Place { owner, side, limit, qty, tif, budget } = op {
                book.place(Incoming { id: next_id, owner, side, limit, qty, tif, budget }, &mut Vec::new());
                next_id += 1;
            }
        }
        let mut restored = Book::with_capacity(0);
        for r in book.resting() {
            prop_assert!(restored.insert_resting(*r));
        }
        prop_assert_eq!(restored.resting().collect::<Vec<_>>(), book.resting().collect::<Vec<_>>());
        prop_assert_eq!(restored.depth(usize::MAX), book.depth(usize::MAX));
    }
}
