//! Matching engine throughput: `add` (orders that rest), `cancel`, and `mixed`, a
//! match-heavy session of ~60 % resting places, ~30 % cancels of live orders and ~10 %
//! orders that cross the spread. Throughput is reported per operation.
//!
//! Every workload is generated up front by a seeded RNG, and the mixed one by playing it
//! on a scratch book so that each cancel names an order that is really resting. Before
//! measuring, each workload is run once under a counting allocator to show that the hot
//! path does not allocate when the book has capacity.
//!
//! Run: `cargo bench --bench engine -- --quick`. On a shared machine, set
//! `ENGINE_BENCH_CLOCK=cpu` to time with the benchmark thread's CPU clock instead of the
//! wall clock, so that other processes' load does not count as the engine's time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agt::services::trading::engine::{Book, Fill, Incoming, OrderId, Rest, Side, TimeInForce};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Counts allocations so the bench can prove the engine's no-allocation claim.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resting orders for `add` and `cancel`.
const ORDERS: usize = 100_000;
/// Mixed: operations that build a steady-state book (not timed), then the timed ones.
const WARMUP: usize = 50_000;
const MIXED: usize = 100_000;
/// The fixed mid price in ticks; passive orders rest on their own side of it.
const MID: i64 = 1_000_000;
const OWNERS: u64 = 100;

/// A seeded generator: every run replays the same operations.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: u64) -> u64 {
        rand::Rng::gen_range(&mut self.0, 0..n)
    }

    fn side(&mut self) -> Side {
        if self.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

/// A passive order: its distance from the mid is skewed towards the touch (cube of a
/// uniform), as in real books where most orders sit within a few ticks.
fn passive(rng: &mut Rng, id: OrderId) -> Incoming {
    let u = rng.below(1000) as i64;
    let distance = u * u * u / 10_000_000;
    let side = rng.side();
    let price = match side {
        Side::Buy => MID - 1 - distance,
        Side::Sell => MID + distance,
    };
    Incoming::limit(id, rng.below(OWNERS), side, price, 1 + rng.below(10) as i64, TimeInForce::Gtc)
}

/// An order that takes liquidity: a market order, an IOC or a marketable GTC limit,
/// sized to eat about three resting orders.
fn crossing(rng: &mut Rng, id: OrderId) -> Incoming {
    let side = rng.side();
    let owner = rng.below(OWNERS);
    let qty = 1 + rng.below(40) as i64;
    let through = match side {
        Side::Buy => MID + 5,
        Side::Sell => MID - 6,
    };
    match rng.below(3) {
        0 => Incoming::market(id, owner, side, qty),
        1 => Incoming::limit(id, owner, side, through, qty, TimeInForce::Ioc),
        _ => Incoming::limit(id, owner, side, through, qty, TimeInForce::Gtc),
    }
}

#[derive(Clone, Copy)]
enum Op {
    /// A passive order, placed to rest (it trades only if a crossing GTC order left its
    /// remainder past the mid).
    Place(Incoming),
    /// An order meant to take liquidity; run exactly like `Place`, labelled for the mix.
    Cross(Incoming),
    Cancel(OrderId),
}

fn run(book: &mut Book, ops: &[Op], fills: &mut Vec<Fill>) {
    for op in ops {
        match *op {
            Op::Place(o) | Op::Cross(o) => {
                fills.clear();
                black_box(book.place(o, fills));
            }
            Op::Cancel(id) => {
                black_box(book.cancel(id));
            }
        }
    }
}

/// Passive orders only: bids below the mid and asks at or above it never cross.
fn adds() -> Vec<Op> {
    let mut rng = Rng::seeded(0x5EED_0001);
    (1..=ORDERS as u64).map(|id| Op::Place(passive(&mut rng, id))).collect()
}

/// Cancels of every order in `adds`, in a shuffled order.
fn cancels() -> Vec<Op> {
    let mut ids: Vec<OrderId> = (1..=ORDERS as u64).collect();
    let mut rng = Rng::seeded(0x5EED_0002);
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    ids.into_iter().map(Op::Cancel).collect()
}

/// The mixed session, generated by playing it on a scratch book so that cancels pick
/// orders that are live at that moment.
fn mixed() -> Vec<Op> {
    let mut rng = Rng::seeded(0x5EED_0003);
    let mut book = Book::with_capacity(WARMUP + MIXED);
    let mut fills = Vec::new();
    let mut live: Vec<OrderId> = Vec::new();
    let mut at: HashMap<OrderId, usize> = HashMap::new();
    let forget = |live: &mut Vec<OrderId>, at: &mut HashMap<OrderId, usize>, id: OrderId| {
        if let Some(i) = at.remove(&id) {
            live.swap_remove(i);
            if let Some(&moved) = live.get(i) {
                at.insert(moved, i);
            }
        }
    };
    let mut ops = Vec::with_capacity(WARMUP + MIXED);
    let mut id = 0;
    while ops.len() < WARMUP + MIXED {
        let roll = rng.below(100);
        let op = if roll < 30 && !live.is_empty() {
            let victim = live[rng.below(live.len() as u64) as usize];
            forget(&mut live, &mut at, victim);
            book.cancel(victim);
            Op::Cancel(victim)
        } else {
            id += 1;
            let (o, op) = if roll < 90 {
                let o = passive(&mut rng, id);
                (o, Op::Place(o))
            } else {
                let o = crossing(&mut rng, id);
                (o, Op::Cross(o))
            };
            fills.clear();
            if book.place(o, &mut fills).rest == Rest::Resting {
                at.insert(id, live.len());
                live.push(id);
            }
            for f in &fills {
                if f.maker_remaining == 0 {
                    forget(&mut live, &mut at, f.maker_id);
                }
            }
            op
        };
        ops.push(op);
    }
    ops
}

/// The benchmark thread's CPU time: what it spent running, not waiting for a core.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times `ops` on a book prepared by `setup` (not timed), `iters` times.
fn timed(iters: u64, setup: impl Fn() -> Book, ops: &[Op], cpu: bool) -> Duration {
    let mut fills = Vec::with_capacity(1024);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut book = setup();
        if cpu {
            let start = cpu_time();
            run(&mut book, ops, &mut fills);
            total += cpu_time() - start;
        } else {
            let start = Instant::now();
            run(&mut book, ops, &mut fills);
            total += start.elapsed();
        }
        drop(black_box(book));
    }
    total
}

/// Runs `ops` once and returns how many allocations happened while they ran.
fn allocations(setup: impl Fn() -> Book, ops: &[Op]) -> usize {
    let mut fills = Vec::with_capacity(1024);
    let mut book = setup();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(&mut book, ops, &mut fills);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn engine(c: &mut Criterion) {
    let adds = adds();
    let cancels = cancels();
    let session = mixed();
    let (warmup, measured) = session.split_at(WARMUP);

    let empty = || Book::with_capacity(ORDERS);
    let full = || {
        let mut book = Book::with_capacity(ORDERS);
        run(&mut book, &adds, &mut Vec::new());
        assert_eq!(book.len(), ORDERS, "every add must rest");
        book
    };
    let warm = || {
        let mut book = Book::with_capacity(WARMUP + MIXED);
        run(&mut book, warmup, &mut Vec::with_capacity(1024));
        book
    };

    let share = |f: fn(&Op) -> bool| 100.0 * measured.iter().filter(|op| f(op)).count() as f64 / measured.len() as f64;
    let mut fills = Vec::with_capacity(1024);
    let mut book = warm();
    let resting_before = book.len();
    let mut traded = 0;
    for op in measured {
        run(&mut book, std::slice::from_ref(op), &mut fills);
        traded += fills.len();
    }
    eprintln!(
        "mixed: {} ops = {:.1}% place, {:.1}% cancel, {:.1}% crossing; {} fills; {} resting orders before, {} after",
        measured.len(),
        share(|op| matches!(op, Op::Place(_))),
        share(|op| matches!(op, Op::Cancel(_))),
        share(|op| matches!(op, Op::Cross(_))),
        traded,
        resting_before,
        book.len(),
    );
    for (name, n) in [("add", allocations(empty, &adds)), ("cancel", allocations(full, &cancels)), ("mixed", allocations(warm, measured))] {
        eprintln!("{name}: {n} allocations on the hot path");
        assert_eq!(n, 0, "{name} allocated on the hot path");
    }

    let cpu = std::env::var("ENGINE_BENCH_CLOCK").is_ok_and(|v| v == "cpu");
    eprintln!("timing with the {} clock", if cpu { "thread CPU" } else { "wall" });
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(adds.len() as u64));
    group.bench_function("add", |b| b.iter_custom(|iters| timed(iters, empty, &adds, cpu)));
    group.throughput(Throughput::Elements(cancels.len() as u64));
    group.bench_function("cancel", |b| b.iter_custom(|iters| timed(iters, full, &cancels, cpu)));
    group.throughput(Throughput::Elements(measured.len() as u64));
    group.bench_function("mixed", |b| b.iter_custom(|iters| timed(iters, warm, measured, cpu)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = engine
}
criterion_main!(benches);
