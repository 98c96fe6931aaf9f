//! Each store's batched commit: the write path of every service, as its actor runs it.
//!
//! An actor drains its mailbox, handles the whole batch inside one transaction, writes the
//! batch's events to its outbox and commits (`services/actor.rs`). Two measures per
//! service, for batches of 1, 32 and 256 of the command that service writes most on the
//! order path or its event feed:
//!
//! - `commit/<service>`: on the service's real store (`store::open` with its migrations,
//!   WAL, `synchronous=NORMAL`, the background checkpointer) and the real service state,
//!   `transaction → Service::handle × N → commit`, exactly N per transaction, no threads.
//!   The outbox write is not in it (that step is private to the actor loop).
//! - `actor/<service>`: the real actor loop (`run_incarnation`) on its own thread: N
//!   commands put in its mailbox at once, timed until every one is answered. Batches form
//!   as they do in the daemon (the first command may commit alone); it includes the
//!   mailbox hand-off, the outbox and the hand-over of events to the bus.
//!
//! | service | command per batch item |
//! |---|---|
//! | orders  | `Accept` (a new order row, stage `accepted`) |
//! | risk    | `Reserve` (checks + a hold on USD) |
//! | trading | `Match`, alternately an order that rests and one that crosses it (a trade) |
//! | market  | `Event(TRADE_EXECUTED)` (tape row + candles) |
//! | audit   | `Append` (hash-chained record) |
//! | users   | `Create` |
//! | auth    | `Create` (token, hashed) |
//! | health  | `Event(SERVICE_STARTED)` (lifecycle row) |
//! | notify  | `Event` matching one webhook rule (a queued delivery) |
//! | bus     | `publish_then` of N events until committed (through the bus thread) |
//! | trading-journal | the lane's intake journal (a file, not a store): N records of a traded placement appended in one write (`commit/` only: the lane calls it directly) |
//!
//! Event commands have no reply: an actor batch ends with one `LastEventSeq` query, whose
//! answer comes after the events' commit. Throughput is per command.
//!
//! Run: `cargo bench --bench stores` (add `-- --quick` for a fast pass, or a filter such
//! as `-- commit/orders`). On a shared machine the numbers move with other load.

use agt::api::{Event, Instrument, NewInstrument, NewUser, NewWebhookRule, OrderType, RiskLimits, Side, TimeInForce, Trade};
use agt::daemon::follower::Handed;
use agt::daemon::Home;
use agt::services::actor::{run_incarnation, AfterCommit, Control, Handle, Reply, Service, ServiceCtx, State, Status};
use agt::services::bus::{Bus, BusEvent, NewEvent};
use agt::services::config::settings::Settings;
use agt::services::config::SharedSettings;
use agt::services::store::{self, CheckpointGuard, Durability};
use agt::services::{audit, auth, health, market, notify, orders, risk, trading, users};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rust_decimal::Decimal;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCHES: [usize; 3] = [1, 32, 256];

/// Waits for one answer.
type Waiter = Box<dyn FnOnce()>;

thread_local! {
    /// The answers of the commands made since the last [`take_waiters`].
    static WAITERS: RefCell<Vec<Waiter>> = const { RefCell::new(Vec::new()) };
}

/// A reply channel whose answer [`take_waiters`] hands out.
fn reply<T: Send + 'static>() -> Reply<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    WAITERS.with(|w| {
        w.borrow_mut().push(Box::new(move || {
            let _ = rx.blocking_recv();
        }))
    });
    tx
}

fn take_waiters() -> Vec<Waiter> {
    WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

fn ctx(home: &Home, bus: &Bus) -> ServiceCtx {
    ServiceCtx {
        home: home.clone(),
        durability: Durability::Normal,
        bus: bus.clone(),
        settings: SharedSettings::new(Settings::defaults()),
        directory: Default::default(),
        tokens: Default::default(),
        command_log: Default::default(),
        notify_interest: Default::default(),
        notify_tuning: Default::default(),
        instruments: Default::default(),
    }
}

fn temp_home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::Builder::new().prefix("agt-bench-").tempdir().expect("a temp dir");
    let home = Home::at(dir.path());
    (dir, home)
}

/// One service on its real store in a temporary home, driven directly.
struct Store<S: Service> {
    svc: S,
    conn: rusqlite::Connection,
    _ckpt: CheckpointGuard,
    bus: Bus,
    _dir: tempfile::TempDir,
}

impl<S: Service> Store<S> {
    fn open() -> Store<S> {
        let (dir, home) = temp_home();
        let bus = Bus::open(&home, Durability::Normal).expect("the bus opens");
        let path = home.store(S::NAME);
        let conn = store::open(&path, Durability::Normal, S::MIGRATIONS).expect("the store opens");
        let ckpt = store::spawn_checkpointer(&path, Duration::from_millis(200), &store::Load::default());
        let svc = S::load(&conn, &ctx(&home, &bus)).expect("the service loads");
        Store { svc, conn, _ckpt: ckpt, bus, _dir: dir }
    }

    /// One batch, as the actor loop handles it: one transaction, every command, commit.
    fn commit(&mut self, cmds: Vec<S::Cmd>) {
        let mut after = AfterCommit::new(S::NAME);
        let tx = self.conn.transaction().expect("begin");
        for cmd in cmds {
            self.svc.handle(&tx, cmd, &mut after).expect("the service handles the command");
        }
        self.svc.before_commit(&tx).expect("the service writes its batch");
        tx.commit().expect("commit");
    }
}

impl<S: Service> Drop for Store<S> {
    fn drop(&mut self) {
        self.bus.shutdown();
    }
}

/// One service running its real actor loop on its own thread.
struct Actor<S: Service> {
    handle: Handle<S::Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
    bus: Bus,
    _dir: tempfile::TempDir,
}

impl<S: Service> Actor<S> {
    fn start() -> Actor<S> {
        let (dir, home) = temp_home();
        let bus = Bus::open(&home, Durability::Normal).expect("the bus opens");
        let ctx = ctx(&home, &bus);
        let (tx, rx) = std::sync::mpsc::channel();
        let status = Arc::new(Status::new(S::NAME));
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name(S::NAME.into())
            .spawn(move || {
                if let Err(e) = run_incarnation::<S>(&ctx, &rx, &st) {
                    panic!("{} stopped: {e}", S::NAME);
                }
            })
            .expect("a thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        while status.state() != State::Running {
            assert!(Instant::now() < deadline, "{} did not start", S::NAME);
            std::thread::sleep(Duration::from_millis(1));
        }
        Actor { handle: Handle::new(tx, status), thread: Some(thread), bus, _dir: dir }
    }

    /// Puts every command in the mailbox, then waits for every answer.
    fn run(&self, cmds: Vec<S::Cmd>, waiters: Vec<Waiter>) {
        for cmd in cmds {
            assert!(self.handle.tell(cmd), "{} is gone", S::NAME);
        }
        for w in waiters {
            w();
        }
    }
}

impl<S: Service> Drop for Actor<S> {
    fn drop(&mut self) {
        self.handle.control(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bus.shutdown();
    }
}

/// What a service's bench runs: commands to prepare the store, the command of batch item
/// `i`, and (for commands without a reply) a query whose answer marks the batch done.
struct Work<S: Service, M: FnMut(u64) -> S::Cmd> {
    setup: fn() -> Vec<S::Cmd>,
    make: M,
    sync: Option<fn() -> S::Cmd>,
}

fn group<'a>(c: &'a mut Criterion, name: String) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g
}

fn bench_service<S: Service, M: FnMut(u64) -> S::Cmd>(c: &mut Criterion, mut work: Work<S, M>) {
    let mut i = 0u64;
    // Direct: exactly N commands per transaction.
    {
        let mut store = Store::<S>::open();
        store.commit((work.setup)());
        take_waiters();
        let mut g = group(c, format!("commit/{}", S::NAME));
        for n in BATCHES {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter_batched(
                    || {
                        let cmds: Vec<S::Cmd> = (0..n)
                            .map(|_| {
                                i += 1;
                                (work.make)(i)
                            })
                            .collect();
                        take_waiters();
                        cmds
                    },
                    |cmds| store.commit(cmds),
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
    // Through the actor loop: N in flight at once.
    let actor = Actor::<S>::start();
    actor.run((work.setup)(), take_waiters());
    let mut g = group(c, format!("actor/{}", S::NAME));
    for n in BATCHES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let mut cmds: Vec<S::Cmd> = (0..n)
                        .map(|_| {
                            i += 1;
                            (work.make)(i)
                        })
                        .collect();
                    cmds.extend(work.sync.map(|f| f()));
                    (cmds, take_waiters())
                },
                |(cmds, waiters)| actor.run(cmds, waiters),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn now() -> String {
    agt::api::now_rfc3339()
}

/// Event `seq` as a follower hands it over. `after: 0` vouches for no gap before it: the
/// benches hand events over in order, but not from each store's own position.
fn event(seq: u64, kind: &str, data: serde_json::Value) -> Handed {
    let event = Event { seq, event_id: format!("evt_{seq}"), kind: kind.into(), source: "bench".into(), timestamp: now(), data };
    Handed { after: 0, event: std::sync::Arc::new(BusEvent::from_event(event)) }
}

fn instrument() -> Instrument {
    Instrument {
        symbol: "BENCH".into(),
        base: "BENCH".into(),
        quote: "USD".into(),
        tick: Decimal::new(1, 2),
        lot: Decimal::ONE,
        min_quantity: Decimal::ONE,
        max_quantity: Decimal::from(1_000_000),
    }
}

fn orders_accept(c: &mut Criterion) {
    let run = rand::random::<u32>();
    bench_service(
        c,
        Work::<orders::Orders, _> {
            setup: Vec::new,
            make: move |i| orders::Cmd::Accept {
                order: orders::NewOrder {
                    order_id: format!("ord_{run:08x}{i:016x}"),
                    user_id: format!("usr_{}", i % 64),
                    symbol: "BENCH".into(),
                    side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
                    kind: OrderType::Limit,
                    time_in_force: TimeInForce::Gtc,
                    price: Some(Decimal::new(10_000 + (i % 5) as i64, 2)),
                    quantity: Decimal::from(1 + i % 10),
                    client_order_id: None,
                },
                reply: reply(),
            },
            sync: None,
        },
    );
}

fn risk_reserve(c: &mut Criterion) {
    bench_service(
        c,
        Work::<risk::Risk, _> {
            setup: || {
                let limits = RiskLimits { max_open_orders: Some(u32::MAX), max_orders_per_second: Some(u32::MAX), ..Default::default() };
                vec![
                    risk::Cmd::Deposit {
                        user_id: "usr_bench".into(),
                        asset: "USD".into(),
                        amount: Decimal::from(1_000_000_000_000_000i64),
                        grid: 0,
                        reply: reply(),
                    },
                    risk::Cmd::SetLimits { user_id: "usr_bench".into(), limits, clear: Vec::new(), reply: reply() },
                ]
            },
            make: |i| risk::Cmd::Reserve {
                req: risk::ReserveRequest {
                    order_id: format!("ord_{i:016x}"),
                    user_id: "usr_bench".into(),
                    user_active: true,
                    instrument: instrument(),
                    side: Side::Buy,
                    kind: OrderType::Limit,
                    price: Some(Decimal::new(10_000, 2)),
                    quantity: Decimal::from(1 + i % 10),
                },
                reply: reply(),
            },
            sync: None,
        },
    );
}

fn trading_match(c: &mut Criterion) {
    // Even: a buy that rests; odd: a sell by another user that fills it. The book stays
    // shallow; half the commands persist a resting order and half a trade.
    bench_service(
        c,
        Work::<trading::Trading, _> {
            setup: Vec::new,
            make: |i| {
                let buy = i % 2 == 0;
                trading::Cmd::Match {
                    req: trading::MatchRequest {
                        order_id: format!("ord_{i:016x}"),
                        user_id: if buy { "usr_a".into() } else { "usr_b".into() },
                        symbol: "BENCH".into(),
                        side: if buy { Side::Buy } else { Side::Sell },
                        kind: OrderType::Limit,
                        time_in_force: TimeInForce::Gtc,
                        price: Some(Decimal::new(10_000, 2)),
                        quantity: Decimal::from(3),
                        tick: Decimal::new(1, 2),
                        lot: Decimal::ONE,
                        budget: None,
                    },
                    reply: reply(),
                }
            },
            sync: None,
        },
    );
}

fn market_trades(c: &mut Criterion) {
    bench_service(
        c,
        Work::<market::Market, _> {
            setup: || {
                let new = NewInstrument {
                    symbol: "BENCH".into(),
                    tick: Decimal::new(1, 2),
                    lot: Decimal::ONE,
                    min_quantity: None,
                    max_quantity: None,
                };
                vec![market::Cmd::AddSymbol(new, reply())]
            },
            make: |i| {
                let trade = Trade {
                    trade_id: format!("trd_{i:016x}"),
                    symbol: "BENCH".into(),
                    price: Decimal::new(10_000 + (i % 7) as i64, 2),
                    quantity: Decimal::from(1 + i % 10),
                    taker_side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
                    buy_order_id: format!("ord_b{i}"),
                    sell_order_id: format!("ord_s{i}"),
                    timestamp: now(),
                };
                market::Cmd::Event(event(i, "TRADE_EXECUTED", serde_json::to_value(&trade).expect("a trade serializes")))
            },
            sync: Some(|| market::Cmd::LastEventSeq(reply())),
        },
    );
}

fn audit_append(c: &mut Criterion) {
    bench_service(
        c,
        Work::<audit::Audit, _> {
            setup: Vec::new,
            make: |i| audit::Cmd::Append {
                actor: "socket".into(),
                action: "POST /api/orders".into(),
                detail: serde_json::json!({"status": 201, "order_id": format!("ord_{i:016x}")}),
                reply: Some(reply()),
            },
            sync: None,
        },
    );
}

fn users_create(c: &mut Criterion) {
    let run = rand::random::<u32>();
    bench_service(
        c,
        Work::<users::Users, _> {
            setup: Vec::new,
            make: move |i| {
                users::Cmd::Create(NewUser { username: format!("u{run}-{i}"), email: format!("u{run}-{i}@example.com") }, reply())
            },
            sync: None,
        },
    );
}

fn auth_create(c: &mut Criterion) {
    bench_service(
        c,
        Work::<auth::Auth, _> {
            setup: Vec::new,
            make: |i| auth::Cmd::Create(auth::Create { role: agt::api::Role::Admin, user_id: None, name: format!("bench-{i}") }, reply()),
            sync: None,
        },
    );
}

fn health_events(c: &mut Criterion) {
    bench_service(
        c,
        Work::<health::Health, _> {
            setup: Vec::new,
            make: |i| health::Cmd::Event(event(i, "SERVICE_STARTED", serde_json::json!({"service": "orders"}))),
            sync: Some(|| health::Cmd::LastEventSeq(reply())),
        },
    );
}

fn notify_events(c: &mut Criterion) {
    bench_service(
        c,
        Work::<notify::Notify, _> {
            setup: || {
                let rule = NewWebhookRule { url: "http://127.0.0.1:9/hook".into(), events: vec!["ORDER_CREATED".into()], secret: None };
                vec![notify::Cmd::AddRule { rule, reply: reply() }]
            },
            // Far above the bus's end, where a new notify store starts.
            make: |i| notify::Cmd::Event(event(1_000_000 + i, "ORDER_CREATED", serde_json::json!({"order_id": format!("ord_{i:016x}")}))),
            sync: Some(|| notify::Cmd::LastEventSeq(reply())),
        },
    );
}

fn bus_publish(c: &mut Criterion) {
    let dir = tempfile::Builder::new().prefix("agt-bench-").tempdir().expect("a temp dir");
    let bus = Bus::open(&Home::at(dir.path()), Durability::Normal).expect("the bus opens");
    let mut group = c.benchmark_group("commit/bus");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    (0..n)
                        .map(|i| NewEvent::new("ORDER_CREATED", "orders", serde_json::json!({"order_id": format!("ord_{i}")})))
                        .collect::<Vec<_>>()
                },
                |events| {
                    // Committed when the bus runs the closure queued behind the events.
                    let (tx, rx) = std::sync::mpsc::channel::<()>();
                    bus.publish_then(
                        events,
                        vec![Box::new(move || {
                            let _ = tx.send(());
                        })],
                    );
                    rx.recv().expect("the bus commits");
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    bus.shutdown();
}

/// The lane's intake journal: what a batch of placements waits for (`intake::Journal`).
fn journal_append(c: &mut Criterion) {
    use agt::services::intake::{Grid, Intake, Journal, Record};
    use agt::services::trading::{MatchResult, TradeFill};
    let (_dir, home) = temp_home();
    let mut journal = Journal::open(&home, Durability::Normal).expect("the journal opens");
    let dec = |s: &str| s.parse::<Decimal>().expect("a decimal");
    let record = |i: u64| {
        Record::Place(Intake {
            order: orders::NewOrder {
                order_id: format!("ord_{i:032}"),
                user_id: "usr_0123456789abcdef".into(),
                symbol: "AAPL".into(),
                side: Side::Buy,
                kind: OrderType::Limit,
                time_in_force: TimeInForce::Gtc,
                price: Some(dec("187.25")),
                quantity: dec("10"),
                client_order_id: None,
            },
            at: now(),
            hold: Some(risk::checks::Plan {
                asset: "USD".into(),
                amount: dec("1872.50"),
                limit: Some(dec("187.25")),
                budget: None,
                short: Default::default(),
            }),
            result: Some(MatchResult {
                order_id: format!("ord_{i:032}"),
                fills: vec![TradeFill {
                    trade_id: format!("trd_{i:032}"),
                    maker_order_id: format!("ord_{:032}", i + 1),
                    maker_user_id: "usr_fedcba9876543210".into(),
                    price: dec("187.25"),
                    quantity: dec("10"),
                    maker_remaining: dec("0"),
                    timestamp: now(),
                }],
                filled: dec("10"),
                remaining: dec("0"),
                rests: false,
                self_trade_prevented: false,
            }),
            grid: Some(Grid { tick: dec("0.01"), lot: dec("1") }),
            rejected: None,
        })
    };
    // Numbers go on rising across batches, as in the lane.
    let seq = std::cell::Cell::new(1i64);
    let mut g = group(c, "commit/trading-journal".into());
    for n in BATCHES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || (0..n as u64).map(|i| record(seq.get() as u64 + i)).collect::<Vec<_>>(),
                |records| {
                    // Pruned now and then, as the lane does once the stores have flushed.
                    if seq.get() % 4096 < records.len() as i64 {
                        journal.detach(seq.get() - 1).delete_apart();
                    }
                    journal.append_all(seq.get(), &records).expect("the journal appends");
                    seq.set(seq.get() + records.len() as i64);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    stores,
    orders_accept,
    risk_reserve,
    trading_match,
    market_trades,
    audit_append,
    users_create,
    auth_create,
    health_events,
    notify_events,
    bus_publish,
    journal_append
);
criterion_main!(stores);
