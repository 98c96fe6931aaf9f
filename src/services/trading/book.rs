//! How one symbol's resting orders are stored; the matching rules live in `engine.rs`.
//!
//! Orders sit in an arena (`Vec<Node>` with a free list) and are found by id through a
//! hash map. Each price level is a FIFO queue threaded through the arena with intrusive
//! `prev`/`next` slot links, so joining, leaving and filling the head of a queue never
//! allocates. Each side's levels are a `Vec` sorted so that the best price is the
//! *last* element: taking liquidity pops from the end, and new orders, which mostly
//! arrive near the touch, shift few elements when they open a level.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{OrderId, OwnerId, Side};

/// An order waiting in the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestingOrder {
    pub id: OrderId,
    /// The user, so that an incoming order never trades with its own owner's orders.
    pub owner: OwnerId,
    pub side: Side,
    /// Limit price in ticks; every fill against this order happens at this price.
    pub price: i64,
    /// Lots still open; always > 0 while the order is in the book.
    pub remaining: i64,
    /// Queue position key within the price level: lower is served first. It is the
    /// order id on arrival, and the `new_priority_id` of an amend that lost priority.
    pub priority: u64,
}

/// Aggregated price levels, best first: `(price in ticks, total lots)`.
pub type Levels = Vec<(i64, i64)>;

/// A slot index into the arena; `NIL` ends a list.
type Slot = u32;
const NIL: Slot = Slot::MAX;

#[derive(Debug, Clone)]
struct Node {
    order: RestingOrder,
    /// Neighbours in the price level's queue, or, for a free slot, `next` is the next
    /// free slot.
    prev: Slot,
    next: Slot,
}

/// One price on one side: a FIFO queue of orders and its aggregated quantity.
#[derive(Debug, Clone, Copy)]
struct Level {
    price: i64,
    /// Sum of `remaining` over the queue, kept so that `depth` is O(levels).
    total: i64,
    head: Slot,
    tail: Slot,
}

/// One side's levels, ascending by `key` so that the best price is last.
#[derive(Debug, Clone)]
struct Ladder {
    side: Side,
    levels: Vec<Level>,
}

impl Ladder {
    /// Sort key under which "better" is "greater" on both sides. Asks use `!price`
    /// (= -price - 1), which reverses the order without overflowing at `i64::MIN`.
    fn key(&self, price: i64) -> i64 {
        match self.side {
            Side::Buy => price,
            Side::Sell => !price,
        }
    }

    fn find(&self, price: i64) -> Result<usize, usize> {
        let key = self.key(price);
        self.levels.binary_search_by_key(&key, |l| self.key(l.price))
    }
}

/// Hashes order ids so that ids close together land in neighbouring buckets.
///
/// Ids come from a sequence, so the resting ones are mostly recent and close together.
/// The low 8 bits of an id place it within a block of 256 adjacent buckets (4 KiB, one
/// page) and a multiply-fold of the rest picks the block, so the live ids touch few
/// pages and cache lines however large the table was reserved; measured, this keeps the
/// mixed workload at 12 M ops/s with a 1 M-order reservation where a fully mixing hash
/// fell to 5 M. Ids with a regular stride still spread, because the block is hashed.
/// The low 7 bits also go into the top bits, which the table uses as its in-group tag,
/// so neighbours do not share a tag. SipHash's defence against chosen keys is not
/// needed: the ids are ours.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        let id = self.0;
        let m = u128::from(id >> 8) * 0x9E37_79B9_7F4A_7C15;
        let block = (m as u64) ^ ((m >> 64) as u64);
        ((block << 8) | (id & 0xFF)) ^ ((id & 0x7F) << 57)
    }
}

/// The order book of one symbol.
#[derive(Debug, Clone)]
pub struct Book {
    arena: Vec<Node>,
    /// Head of the free-slot list threaded through `Node::next`.
    free: Slot,
    index: HashMap<OrderId, Slot, BuildHasherDefault<IdHasher>>,
    bids: Ladder,
    asks: Ladder,
}

impl Book {
    /// A book that holds up to `orders` resting orders without allocating (it still
    /// grows past that, allocating). The id index reserves twice that many entries so
    /// that churn (tombstones) is cleaned up in place rather than by growing the table.
    /// Reserved memory is 150-190 bytes per order of capacity, touched only as used; a
    /// clone keeps the orders but not the spare capacity.
    pub fn with_capacity(orders: usize) -> Book {
        Book {
            arena: Vec::with_capacity(orders),
            free: NIL,
            index: HashMap::with_capacity_and_hasher(orders.saturating_mul(2), Default::default()),
            bids: Ladder { side: Side::Buy, levels: Vec::with_capacity(orders) },
            asks: Ladder { side: Side::Sell, levels: Vec::with_capacity(orders) },
        }
    }

    /// The resting order with this id, if it is still in the book.
    pub fn get(&self, id: OrderId) -> Option<&RestingOrder> {
        self.index.get(&id).map(|&slot| &self.arena[slot as usize].order)
    }

    /// Number of resting orders on both sides.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn best_bid(&self) -> Option<i64> {
        self.bids.levels.last().map(|l| l.price)
    }

    pub fn best_ask(&self) -> Option<i64> {
        self.asks.levels.last().map(|l| l.price)
    }

    /// Aggregated `(price, total lots)` for up to `levels` levels per side, best first:
    /// `(bids, asks)`.
    pub fn depth(&self, levels: usize) -> (Levels, Levels) {
        let side = |l: &Ladder| l.levels.iter().rev().take(levels).map(|l| (l.price, l.total)).collect();
        (side(&self.bids), side(&self.asks))
    }

    /// Every resting order: bids best level first, then asks best level first, each level
    /// in queue order. Replaying this through [`Book::insert_resting`] rebuilds the book.
    pub fn resting(&self) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.side_orders(Side::Buy).chain(self.side_orders(Side::Sell))
    }

    /// Recovery: puts an order back without matching it. Orders are expected in their
    /// original priority order, but each is queued by `priority` within its level anyway.
    /// Returns false, changing nothing, for an id already resting or `remaining <= 0`.
    /// The caller must not insert an order that crosses the other side.
    pub fn insert_resting(&mut self, r: RestingOrder) -> bool {
        if r.remaining <= 0 || self.index.contains_key(&r.id) {
            return false;
        }
        self.push(r);
        true
    }

    /// Removes a resting order, returning it with its remaining quantity.
    pub fn cancel(&mut self, id: OrderId) -> Option<RestingOrder> {
        let slot = self.index.remove(&id)?;
        Some(self.unlink(slot))
    }

    /// One side's orders in priority order (best level first, FIFO within a level).
    pub(super) fn side_orders(&self, side: Side) -> impl Iterator<Item = &RestingOrder> + '_ {
        let arena = &self.arena;
        self.ladder(side).levels.iter().rev().flat_map(move |l| Queue { arena, slot: l.head })
    }

    /// The order first in line on `side` (the head of its best level).
    pub(super) fn first(&self, side: Side) -> Option<&RestingOrder> {
        let level = self.ladder(side).levels.last()?;
        Some(&self.arena[level.head as usize].order)
    }

    /// Fills `qty` lots of the order returned by [`Book::first`]`(side)`, removing it
    /// (and its level) when it is used up. Returns the order's remaining quantity.
    pub(super) fn fill_first(&mut self, side: Side, qty: i64) -> i64 {
        let ladder = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = ladder.levels.last_mut().expect("fill_first on an empty side");
        let slot = level.head;
        let node = &mut self.arena[slot as usize];
        debug_assert!(0 < qty && qty <= node.order.remaining);
        node.order.remaining -= qty;
        level.total -= qty;
        let left = node.order.remaining;
        if left == 0 {
            let (id, next) = (node.order.id, node.next);
            level.head = next;
            if next == NIL {
                ladder.levels.pop();
            } else {
                self.arena[next as usize].prev = NIL;
            }
            self.index.remove(&id);
            self.release(slot);
        }
        left
    }

    /// Lowers a resting order's quantity in place, keeping its queue position.
    pub(super) fn reduce(&mut self, id: OrderId, new_remaining: i64) {
        let slot = self.index[&id];
        let order = &mut self.arena[slot as usize].order;
        debug_assert!(0 < new_remaining && new_remaining <= order.remaining);
        let delta = order.remaining - new_remaining;
        order.remaining = new_remaining;
        let (side, price) = (order.side, order.price);
        let ladder = self.ladder_mut(side);
        let at = ladder.find(price).expect("resting order without its level");
        ladder.levels[at].total -= delta;
    }

    /// Adds an order to its level (opening the level if needed) at the queue position
    /// its `priority` gives it. The caller has checked the id is not already resting.
    pub(super) fn push(&mut self, order: RestingOrder) {
        let slot = self.alloc(order);
        self.index.insert(order.id, slot);
        let ladder = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let at = match ladder.find(order.price) {
            Ok(at) => at,
            Err(at) => {
                ladder.levels.insert(at, Level { price: order.price, total: 0, head: NIL, tail: NIL });
                at
            }
        };
        let level = &mut ladder.levels[at];
        level.total += order.remaining;
        // Walk back from the tail past later-priority orders; on arrival there are none.
        let mut after = level.tail;
        while after != NIL && self.arena[after as usize].order.priority > order.priority {
            after = self.arena[after as usize].prev;
        }
        let next = if after == NIL { level.head } else { self.arena[after as usize].next };
        let node = &mut self.arena[slot as usize];
        node.prev = after;
        node.next = next;
        if after == NIL {
            level.head = slot;
        } else {
            self.arena[after as usize].next = slot;
        }
        if next == NIL {
            level.tail = slot;
        } else {
            self.arena[next as usize].prev = slot;
        }
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Takes the order in `slot` out of its level's queue; its id is already unindexed.
    fn unlink(&mut self, slot: Slot) -> RestingOrder {
        let Node { order, prev, next } = self.arena[slot as usize].clone();
        let ladder = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let at = ladder.find(order.price).expect("resting order without its level");
        let level = &mut ladder.levels[at];
        level.total -= order.remaining;
        if prev == NIL {
            level.head = next;
        } else {
            self.arena[prev as usize].next = next;
        }
        if next == NIL {
            level.tail = prev;
        } else {
            self.arena[next as usize].prev = prev;
        }
        if level.head == NIL {
            ladder.levels.remove(at);
        }
        self.release(slot);
        order
    }

    fn alloc(&mut self, order: RestingOrder) -> Slot {
        let node = Node { order, prev: NIL, next: NIL };
        if self.free == NIL {
            // NIL is never a real slot, so `Queue` can stop on an out-of-range index.
            let slot = Slot::try_from(self.arena.len()).ok().filter(|&s| s != NIL).expect("too many resting orders");
            self.arena.push(node);
            slot
        } else {
            let slot = self.free;
            self.free = self.arena[slot as usize].next;
            self.arena[slot as usize] = node;
            slot
        }
    }

    fn release(&mut self, slot: Slot) {
        self.arena[slot as usize].next = self.free;
        self.free = slot;
    }
}

/// Walks one level's queue from `slot` onwards.
struct Queue<'a> {
    arena: &'a [Node],
    slot: Slot,
}

impl<'a> Iterator for Queue<'a> {
    type Item = &'a RestingOrder;

    fn next(&mut self) -> Option<&'a RestingOrder> {
        let node = self.arena.get(self.slot as usize)?;
        self.slot = node.next;
        Some(&node.order)
    }
}
