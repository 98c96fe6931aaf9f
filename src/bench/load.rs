//! The phases of a run: set up bench users and symbols, place orders from C connections
//! (closed or open loop), verify every acknowledged order, clean up.

use super::conn::Conn;
use super::pacer::{self, Pacer};
use super::report::{Cleanup, CpuPerOrder, Latency, Report, Verification};
use super::{Options, Via};
use crate::api::{Account, Order, OrderStatus, Side};
use crate::client::{encode, ClientError, Endpoint};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The mid price every bench symbol trades around, in ticks of 0.01 (100.00).
const MID_TICKS: i64 = 10_000;
/// Limit prices are jittered this many ticks either side of the mid.
const JITTER_TICKS: i64 = 2;
/// Quantities are 1..=MAX_QTY lots of 1.
const MAX_QTY: u64 = 10;
/// What each buyer gets in USD and each seller in every bench asset: far more than any run spends.
const USD_FUNDS: i64 = 1_000_000_000_000;
const ASSET_FUNDS: i64 = 1_000_000_000;
/// Per-user limits high enough that the bench measures the order path, not the limiter.
const MAX_OPEN_ORDERS: u32 = 100_000_000;
const MAX_ORDERS_PER_SECOND: u32 = 100_000_000;
/// Setup and clean-up run on at most this many connections.
const CONTROL_CONNS: usize = 8;
/// An open-loop run kept up when it placed at least this share of its target rate.
const KEPT_UP: f64 = 0.95;
/// How many problems the report lists one by one.
const MAX_PROBLEMS: usize = 20;
/// A worker whose orders got no answer this many times in a row stops placing: the
/// daemon is likely gone, and the others take what is left of the phase.
const GIVE_UP_AFTER: u32 = 3;

/// Who trades: buyer `i` only buys and seller `i` only sells, so no order can meet one of
/// its own user's orders (self-trade prevention would cancel it instead of trading).
struct Users {
    buyers: Vec<String>,
    sellers: Vec<String>,
}

/// What the workers share.
struct Plan {
    next: AtomicU64,
    /// Orders this phase sends.
    n: u64,
    /// Open loop: nanoseconds between scheduled sends.
    interval_ns: Option<f64>,
    route: String,
    symbols: Vec<String>,
    users: Users,
    seed: u64,
    /// Percent of the orders that rest to cancel at once (`--cancels`).
    cancels: u8,
    /// Turns true on Ctrl-C: the workers send no more orders.
    stop: tokio::sync::watch::Receiver<bool>,
}

/// An acknowledged order, as its placement answer described it.
#[derive(Debug, Clone)]
struct Placed {
    order_id: String,
    worker: u32,
    side: Side,
    symbol: u16,
    quantity: u64,
    price_ticks: i64,
    status: OrderStatus,
    filled: Decimal,
    fills: u32,
    /// A cancel was sent and its answer never came: the order may be open or cancelled.
    cancel_unanswered: bool,
}

/// The placement answer, read leanly: only what the report and the verification use.
#[derive(Deserialize)]
struct PlaceAnswer {
    order_id: String,
    status: OrderStatus,
    filled_quantity: Decimal,
    #[serde(default)]
    fills: Vec<FillId>,
}

#[derive(Deserialize)]
struct FillId {
    trade_id: String,
}

#[derive(serde::Serialize)]
struct PlaceBody<'a> {
    user_id: &'a str,
    symbol: &'a str,
    side: Side,
    #[serde(rename = "type")]
    kind: &'static str,
    quantity: String,
    price: String,
}

/// What one worker saw in one phase.
struct WorkerOut {
    hist: Histogram<u64>,
    placed: Vec<Placed>,
    errors: BTreeMap<String, u64>,
    statuses: BTreeMap<String, u64>,
    /// The trade ids in the answers. An answer lists the order's fills when it was
    /// answered: its own trades as taker, and possibly trades in which it already rested
    /// as maker, which another order's answer lists too; so trades are counted by id.
    trades: Vec<String>,
    last_answer: Option<Instant>,
    /// `--cancels`: latency of the cancels answered 200, and those refused because the
    /// order had filled first (409).
    cancel_hist: Histogram<u64>,
    too_late: u64,
    /// Cancels that failed, by the daemon's error code (`connection` when no answer came).
    cancel_errors: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A seed for a run not given one: below 2^53, so the report's `seed` (a JSON number) is
/// read back exactly by every JSON reader, jq and JavaScript's doubles included, and
/// `--seed` with what they print repeats the run.
fn random_seed() -> u64 {
    rand::random::<u64>() >> 11
}

/// A seeded generator, so a run's order mix can be repeated.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        rand::Rng::gen_range(&mut self.0, 0..n)
    }
}

fn progress(opts: &Options, msg: &str) {
    if opts.progress {
        eprintln!("agt bench: {msg}");
    }
}

fn random_tag(len: usize) -> String {
    use rand::Rng as _;
    let mut r = rand::thread_rng();
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len).map(|_| CHARS[r.gen_range(0..CHARS.len())] as char).collect()
}

/// Each user's account, read over the control pool (for the checks after the run).
async fn accounts_of(control: Vec<Conn>, users: Vec<String>) -> (Vec<Conn>, Vec<Result<Account, ClientError>>) {
    on_pool(control, users, |mut conn, user| async move {
        let r = match conn.call(Method::GET, &format!("/api/users/{}/account", encode(&user)), None).await {
            Ok(a) => a.ok().and_then(|a| a.json::<Account>("GET /api/users/{id}/account")),
            Err(e) => Err(e),
        };
        (conn, r)
    })
    .await
}

/// Runs `f` over `items` on the connections of `pool`, each connection taking every
/// `pool.len()`-th item; gives the pool back with the results in item order.
async fn on_pool<T, R, F, Fut>(pool: Vec<Conn>, items: Vec<T>, f: F) -> (Vec<Conn>, Vec<R>)
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Conn, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (Conn, R)> + Send,
{
    let k = pool.len().max(1);
    let mut lanes: Vec<Vec<(usize, T)>> = (0..k).map(|_| Vec::new()).collect();
    for (i, it) in items.into_iter().enumerate() {
        lanes[i % k].push((i, it));
    }
    let mut tasks = Vec::new();
    for (conn, lane) in pool.into_iter().zip(lanes) {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = conn;
            let mut out = Vec::with_capacity(lane.len());
            for (i, it) in lane {
                let (c, r) = f(conn, it).await;
                conn = c;
                out.push((i, r));
            }
            (conn, out)
        }));
    }
    let mut conns = Vec::new();
    let mut all = Vec::new();
    for t in tasks {
        let (c, out) = t.await.expect("a bench task panicked");
        conns.push(c);
        all.extend(out);
    }
    all.sort_by_key(|(i, _)| *i);
    (conns, all.into_iter().map(|(_, r)| r).collect())
}

/// A token given for the load (`--token`, `AGT_TOKEN`) must be an admin's: the load
/// places orders for the bench's own users. Found out before anything is set up, rather
/// than from every order failing afterwards.
async fn check_load_token(load: &Endpoint) -> Result<(), ClientError> {
    if !matches!(load, Endpoint::Tcp { token: Some(_), .. }) {
        return Ok(());
    }
    let mut conn = Conn::open(load).await?;
    match conn.call(Method::GET, "/api/tokens", None).await?.ok() {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if e.status == 401 || e.status == 403 => Err(ClientError::Api(crate::api::ApiError::new(
            e.status,
            e.code.clone(),
            format!(
                "agt bench loads with an admin token (it places orders for its own bench users); the token given is refused: {}",
                e.message
            ),
        ))),
        Err(e) => Err(e),
    }
}

async fn open_pool(endpoint: &Endpoint, n: usize) -> Result<Vec<Conn>, ClientError> {
    let dials = (0..n).map(|_| Conn::open(endpoint));
    futures::future::join_all(dials).await.into_iter().collect()
}

/// One complete run. Ctrl-C stops the placements; what was placed is still verified and
/// cleaned up, and the report says the run was interrupted (a second Ctrl-C quits at once).
pub async fn run(opts: Options) -> Result<Report, ClientError> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let on_interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("agt bench: interrupted; finishing the orders in flight, then verifying and cleaning up (Ctrl-C again to quit now)");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let control = opts.control.clone();
    let mut made_token = None;
    let result = run_until(opts, stop, &mut made_token).await;
    on_interrupt.abort();
    // A run that failed after making its token (setup refused, a connection lost) still
    // revokes it: an admin token must not outlive the run that made it.
    if let (Err(_), Some(id)) = (&result, made_token) {
        let revoked = match Conn::open(&control).await {
            Ok(mut conn) => revoke(&mut conn, &id).await,
            Err(_) => false,
        };
        if !revoked {
            eprintln!("agt bench: could not revoke the run's admin token {id}; revoke it with `agt token revoke {id}`");
        }
    }
    result
}

/// Revokes the admin token the run made; whether that worked.
async fn revoke(conn: &mut Conn, id: &str) -> bool {
    conn.call(Method::DELETE, &format!("/api/tokens/{}", encode(id)), None).await.is_ok_and(|a| a.is_success())
}

fn interrupted(stop: &tokio::sync::watch::Receiver<bool>) -> Result<(), ClientError> {
    if *stop.borrow() {
        return Err(ClientError::Api(crate::api::ApiError::new(400, "interrupted", "interrupted during setup; nothing was placed")));
    }
    Ok(())
}

/// Fails the run as [`ClientError::Unreachable`] (exit 3) when the daemon is gone: a
/// fresh connection to it fails. Called where requests went unanswered, so that a daemon
/// that died mid-run is reported as that, once, and not as thousands of failed orders
/// and lookups. A daemon that answers again (restarted) lets the run go on.
async fn unless_gone(control: &Endpoint, acknowledged: usize, during: &str) -> Result<(), ClientError> {
    match Conn::open(control).await {
        Ok(_) => Ok(()),
        Err(ClientError::Unreachable { target, reason, delivery }) => Err(ClientError::Unreachable {
            target,
            delivery,
            reason: format!(
                "{reason}; the daemon went away during the bench's {during}, after it acknowledged {acknowledged} orders; \
                 the run stopped there (its bench users and orders stay: start the daemon and see `agt order list`)"
            ),
        }),
        Err(e) => Err(e),
    }
}

/// The run; `made_token` is set to the id of the admin token it makes, as soon as it has.
async fn run_until(
    opts: Options,
    stop: tokio::sync::watch::Receiver<bool>,
    made_token: &mut Option<String>,
) -> Result<Report, ClientError> {
    let c = opts.concurrency.max(1);
    let k = opts.symbols.max(1);
    let tag = random_tag(6);
    let prefix = format!("bench{}", tag.to_lowercase());
    let mut control = open_pool(&opts.control, CONTROL_CONNS.min(c).max(1)).await?;
    check_load_token(&opts.load).await?;

    // Symbols: BENCH<tag><i>, tick 0.01, lot 1.
    progress(&opts, &format!("setting up {k} symbols and {} users (prefix {prefix})", 2 * c));
    let mut symbols = Vec::with_capacity(k);
    for i in 0..k {
        interrupted(&stop)?;
        let symbol = format!("BENCH{tag}{i}");
        control[0].call(Method::POST, "/api/symbols", Some(&json!({"symbol": symbol, "tick": "0.01", "lot": "1"}))).await?.ok()?;
        symbols.push(symbol);
    }

    // The load endpoint; over TCP without a token, an admin token made over the socket.
    let mut load = opts.load.clone();
    let mut token_id = None;
    if let Endpoint::Tcp { token, .. } = &mut load {
        if token.is_none() {
            let t = control[0]
                .call(Method::POST, "/api/tokens", Some(&json!({"role": "admin", "name": format!("{prefix}-token")})))
                .await?
                .ok()?;
            let created: crate::api::TokenCreated = t.json("POST /api/tokens")?;
            *token = Some(crate::client::Bearer::new(&created.token)?);
            token_id = Some(created.id);
        }
    }
    made_token.clone_from(&token_id);

    interrupted(&stop)?;
    // Users: a buyer (USD) and a seller (every bench asset) per connection, with high limits.
    let specs: Vec<(String, bool)> = (0..c).flat_map(|w| [(format!("{prefix}-b{w}"), true), (format!("{prefix}-s{w}"), false)]).collect();
    let assets = Arc::new(symbols.clone());
    let (pool, ids) = on_pool(control, specs, move |mut conn, (name, buyer)| {
        let assets = assets.clone();
        async move {
            let r = setup_user(&mut conn, &name, buyer, &assets).await;
            (conn, r)
        }
    })
    .await;
    control = pool;
    let ids: Vec<String> = ids.into_iter().collect::<Result<_, _>>()?;
    let users = Users { buyers: ids.iter().step_by(2).cloned().collect(), sellers: ids.iter().skip(1).step_by(2).cloned().collect() };

    interrupted(&stop)?;
    // The load connections: one keep-alive connection per worker.
    let mut conns = open_pool(&load, c).await?;
    let route = opts.route.clone();
    let mut plan = Plan {
        next: AtomicU64::new(0),
        n: opts.warmup,
        interval_ns: None,
        route: route.clone(),
        symbols: symbols.clone(),
        users,
        seed: opts.seed.unwrap_or_else(random_seed),
        cancels: opts.cancels,
        stop: stop.clone(),
    };
    let seed = plan.seed;

    let mut placed: Vec<Placed> = Vec::new();
    let mut unanswered = 0u64;
    // Every trade id the answers named, warm-up included.
    let mut answered_trades: HashSet<String> = HashSet::new();
    let mut warmup_errors: BTreeMap<String, u64> = BTreeMap::new();
    if opts.warmup > 0 {
        progress(&opts, &format!("warm-up: {} orders", opts.warmup));
        let (back, outs, _) = phase(conns, Arc::new(plan)).await;
        conns = back.0;
        plan = back.1;
        for o in outs {
            unanswered += o.errors.values().sum::<u64>();
            for (k, v) in o.errors.into_iter().chain(o.cancel_errors) {
                *warmup_errors.entry(k).or_default() += v;
            }
            placed.extend(o.placed);
            answered_trades.extend(o.trades);
        }
        if warmup_errors.contains_key("connection") {
            unless_gone(&opts.control, placed.len(), "warm-up").await?;
        }
    }
    let warm_placed = placed.len();

    plan.next = AtomicU64::new(0);
    plan.n = opts.orders;
    plan.interval_ns = opts.rate.map(|r| 1e9 / r);
    plan.seed = plan.seed.wrapping_add(1);
    progress(
        &opts,
        &match opts.rate {
            Some(r) => format!("placing {} orders at {r} orders/s on {c} connections", opts.orders),
            None => format!("placing {} orders as fast as {c} connections go", opts.orders),
        },
    );
    let daemon_pid = conns.first().and_then(|c| c.peer_pid);
    let times_before = placement_times(&mut conns).await;
    let cpu_before = super::cpu::Usage::now(daemon_pid);
    let ((back_conns, back_plan), outs, started) = phase(conns, Arc::new(plan)).await;
    let cpu_after = super::cpu::Usage::now(daemon_pid);
    let phase_ended = Instant::now();
    conns = back_conns;
    let times_after = placement_times(&mut conns).await;
    let caught_up = match (conns.first_mut(), symbols.first()) {
        (Some(conn), Some(symbol)) => super::catch_up::wait(conn, symbol, phase_ended).await,
        _ => None,
    };
    let cpu_caught_up = caught_up.map(|_| super::cpu::Usage::now(daemon_pid));
    let plan = back_plan;

    let mut hist = histogram();
    let (mut cancel_hist, mut too_late) = (histogram(), 0);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut cancel_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut measured_trades: HashSet<String> = HashSet::new();
    let mut end = started;
    for o in outs {
        hist.add(&o.hist).expect("same histogram bounds");
        cancel_hist.add(&o.cancel_hist).expect("same histogram bounds");
        too_late += o.too_late;
        for (k, v) in o.errors {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in o.cancel_errors {
            *cancel_errors.entry(k).or_default() += v;
        }
        for (k, v) in o.statuses {
            *statuses.entry(k).or_default() += v;
        }
        measured_trades.extend(o.trades);
        if let Some(t) = o.last_answer {
            end = end.max(t);
        }
        placed.extend(o.placed);
    }
    let duration = end.saturating_duration_since(started).as_secs_f64();
    let acknowledged = (placed.len() - warm_placed) as u64;
    unanswered += errors.values().sum::<u64>();
    if errors.contains_key("connection") || cancel_errors.contains_key("connection") {
        unless_gone(&opts.control, placed.len(), "placements").await?;
    }

    // Verification: every acknowledged order, looked up on the same connections.
    progress(&opts, &format!("verifying {} orders", placed.len()));
    let get_route = if route == "/api/trading/orders" { "/api/trading/orders" } else { "/api/orders" };
    let (back, mut verification, fills_seen, moves) = verify(conns, &placed, get_route, &plan).await;
    drop(back);
    if verification.lookup_errors > 0 {
        unless_gone(&opts.control, placed.len(), "verification").await?;
    }
    let trades = measured_trades.len() as u64;
    answered_trades.extend(measured_trades);
    // Every trade is between two bench orders: each trade an answer named is recorded on
    // exactly two of them, and no other trade is.
    if unanswered == 0 && verification.lookup_errors == 0 {
        let all_trades = answered_trades.len() as u64;
        let recorded: u64 = fills_seen.values().map(|o| o.len() as u64).sum();
        let unknown = fills_seen.keys().filter(|t| !answered_trades.contains(*t)).count();
        let unrecorded = answered_trades.iter().filter(|t| !fills_seen.contains_key(*t)).count();
        let mut ok = recorded == 2 * all_trades && unknown == 0 && unrecorded == 0;
        if !ok {
            verification.problems.push(format!(
                "the bench orders record {recorded} fills of {} trades, but the placement answers named {all_trades} trades \
                 (expected {} fills; {unrecorded} named trades not recorded, {unknown} recorded trades never named)",
                fills_seen.len(),
                2 * all_trades
            ));
        }
        let mut odd: Vec<(&String, &Vec<String>)> = fills_seen.iter().filter(|(_, o)| o.len() != 2).collect();
        odd.sort();
        for (trade, orders) in odd.into_iter().take(MAX_PROBLEMS) {
            ok = false;
            verification.problems.push(format!(
                "trade {trade} is recorded on {} bench orders ({}), not 2",
                orders.len(),
                orders.join(", ")
            ));
        }
        verification.fills_match_trades = Some(ok);
    }

    // Conservation: trades move cash and assets only between bench users.
    let all_users: Vec<String> = plan.users.buyers.iter().chain(&plan.users.sellers).cloned().collect();
    let (pool, accounts) = accounts_of(control, all_users.clone()).await;
    control = pool;
    match accounts.into_iter().collect::<Result<Vec<Account>, _>>() {
        Ok(accounts) => {
            let mut totals: HashMap<String, Decimal> = HashMap::new();
            for a in &accounts {
                for b in &a.balances {
                    *totals.entry(b.asset.clone()).or_default() += b.total;
                }
            }
            let n = Decimal::from(c as u64);
            let mut ok = true;
            let mut expect = vec![("USD".to_string(), n * Decimal::from(USD_FUNDS))];
            expect.extend(symbols.iter().map(|s| (s.clone(), n * Decimal::from(ASSET_FUNDS))));
            for (asset, want) in expect {
                let got = totals.get(&asset).copied().unwrap_or_default();
                if got != want {
                    ok = false;
                    verification.problems.push(format!("the bench users hold {got} {asset} in total, but {want} was deposited"));
                }
            }
            verification.balances_conserved = Some(ok);
            // Each account, not only the sum: a trade settled to the wrong bench user, or
            // not at all, leaves the totals right. Checkable when every fill is known.
            if unanswered == 0 && verification.lookup_errors == 0 && verification.missing == 0 {
                let mut settled = true;
                for a in &accounts {
                    let buyer = plan.users.buyers.contains(&a.user_id);
                    let mut assets: Vec<&String> = a.balances.iter().map(|b| &b.asset).collect();
                    assets.extend(moves.keys().filter(|(u, _)| *u == a.user_id).map(|(_, asset)| asset));
                    assets.sort();
                    assets.dedup();
                    for asset in assets {
                        let funded = match (buyer, asset.as_str()) {
                            (true, "USD") => Decimal::from(USD_FUNDS),
                            (false, a) if symbols.iter().any(|s| s == a) => Decimal::from(ASSET_FUNDS),
                            _ => Decimal::ZERO,
                        };
                        let want = funded + moves.get(&(a.user_id.clone(), asset.clone())).copied().unwrap_or_default();
                        let got = a.balances.iter().find(|b| &b.asset == asset).map(|b| b.total).unwrap_or_default();
                        if got != want {
                            settled = false;
                            verification.problems.push(format!(
                                "bench user {} holds {got} {asset}, but its deposit and its orders' fills make {want}",
                                a.user_id
                            ));
                        }
                    }
                }
                verification.accounts_match_fills = Some(settled);
            }
        }
        Err(e) => {
            if matches!(e, ClientError::Unreachable { .. }) {
                unless_gone(&opts.control, placed.len(), "verification").await?;
            }
            verification.problems.push(format!("cannot read the bench accounts: {e}"))
        }
    }
    verification.problems.truncate(MAX_PROBLEMS);

    // Clean up: cancel what still rests, revoke the token made for the run.
    progress(&opts, "cancelling the bench users' open orders");
    let (pool, cancelled) = on_pool(control, all_users.clone(), |mut conn, user| async move {
        let r = conn.call(Method::POST, "/api/orders/cancel-all", Some(&json!({ "user_id": user }))).await;
        let n = match r.and_then(|a| a.ok()) {
            Ok(a) => serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&a.body).map(|v| v.len() as u64).map_err(|_| ()),
            Err(_) => Err(()),
        };
        (conn, n)
    })
    .await;
    control = pool;
    let mut cleanup = Cleanup::default();
    for r in cancelled {
        match r {
            Ok(n) => cleanup.cancelled += n,
            Err(()) => cleanup.errors += 1,
        }
    }
    if cleanup.errors > 0 {
        unless_gone(&opts.control, placed.len(), "clean-up").await?;
    }
    // Holds: with every bench order closed, nothing may stay held. The sums above hold
    // whatever the holds are; a hold left open would keep funds from their owner.
    if cleanup.errors == 0 {
        let (pool, accounts) = accounts_of(control, all_users).await;
        control = pool;
        let mut released = true;
        for a in accounts {
            match a {
                Ok(a) => {
                    for b in a.balances.iter().filter(|b| !b.held.is_zero()) {
                        released = false;
                        verification
                            .problems
                            .push(format!("bench user {} still has {} {} held with all its orders closed", a.user_id, b.held, b.asset));
                    }
                }
                Err(e) => {
                    released = false;
                    verification.problems.push(format!("cannot read a bench account after the clean-up: {e}"));
                }
            }
        }
        verification.holds_released = Some(released);
        verification.problems.truncate(MAX_PROBLEMS);
    }
    if let Some(id) = token_id {
        cleanup.token_revoked = Some(revoke(&mut control[0], &id).await);
    }

    let secs = duration.max(1e-9);
    let was_interrupted = *stop.borrow();
    let ok = !was_interrupted
        && errors.is_empty()
        && warmup_errors.is_empty()
        && cancel_errors.is_empty()
        && acknowledged == opts.orders
        && verification.passed()
        && cleanup.errors == 0
        && cleanup.token_revoked != Some(false);
    let orders_per_s = ((acknowledged as f64 / secs) * 10.0).round() / 10.0;
    Ok(Report {
        ok,
        via: match opts.via {
            Via::Socket => "socket",
            Via::Http => "http",
        }
        .to_string(),
        target: opts.load.to_string(),
        route,
        prefix,
        mode: if opts.rate.is_some() { "open" } else { "closed" }.to_string(),
        rate: opts.rate,
        concurrency: c,
        symbols,
        users: 2 * c,
        warmup: opts.warmup,
        orders: opts.orders,
        acknowledged,
        errors,
        warmup_errors,
        cancel_errors,
        interrupted: was_interrupted,
        seed,
        cancels_percent: opts.cancels,
        duration_s: (duration * 1e6).round() / 1e6,
        orders_per_s,
        kept_up: opts.rate.map(|r| orders_per_s >= KEPT_UP * r),
        trades,
        trades_per_s: ((trades as f64 / secs) * 10.0).round() / 10.0,
        statuses,
        latency_us: Latency::of(&hist),
        cancels: cancel_hist.len(),
        cancels_per_s: ((cancel_hist.len() as f64 / secs) * 10.0).round() / 10.0,
        cancels_too_late: too_late,
        cancel_latency_us: Latency::of(&cancel_hist),
        verified: verification.verified,
        verification,
        cleanup,
        sched: opts.sched.to_string(),
        cpu_us_per_order: {
            let (bench, daemon) = cpu_before.per_order(&cpu_after, acknowledged);
            let daemon_with_catch_up = cpu_caught_up.and_then(|at| cpu_before.per_order(&at, acknowledged).1);
            CpuPerOrder { bench, daemon, daemon_with_catch_up }
        },
        catch_up_ms: caught_up.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
        daemon_time: times_before.zip(times_after).map(|(before, after)| after.since(&before)),
    })
}

/// The daemon's placement-time histogram (`super::daemon_time`), read on the first
/// connection; `None` if the daemon does not give it.
async fn placement_times(conns: &mut [Conn]) -> Option<super::daemon_time::Buckets> {
    let answer = conns.first_mut()?.request(Method::GET, "/metrics", None).await.ok()?;
    if !answer.is_success() {
        return None;
    }
    super::daemon_time::Buckets::parse(std::str::from_utf8(&answer.body).ok()?)
}

/// Creates one bench user, funds it and raises its limits; its id.
async fn setup_user(conn: &mut Conn, name: &str, buyer: bool, assets: &[String]) -> Result<String, ClientError> {
    let user =
        conn.call(Method::POST, "/api/users", Some(&json!({"username": name, "email": format!("{name}@bench.invalid")}))).await?.ok()?;
    let user: crate::api::User = user.json("POST /api/users")?;
    let id = encode(&user.user_id);
    let deposits: Vec<(String, i64)> =
        if buyer { vec![("USD".into(), USD_FUNDS)] } else { assets.iter().map(|a| (a.clone(), ASSET_FUNDS)).collect() };
    for (asset, amount) in deposits {
        conn.call(Method::POST, &format!("/api/users/{id}/deposits"), Some(&json!({"asset": asset, "amount": amount.to_string()})))
            .await?
            .ok()?;
    }
    conn.call(
        Method::PUT,
        &format!("/api/risk/limits?user_id={id}"),
        Some(&json!({"max_open_orders": MAX_OPEN_ORDERS, "max_orders_per_second": MAX_ORDERS_PER_SECOND})),
    )
    .await?
    .ok()?;
    Ok(user.user_id)
}

/// Runs one placement phase on all connections; gives back the connections and the plan.
async fn phase(conns: Vec<Conn>, plan: Arc<Plan>) -> ((Vec<Conn>, Plan), Vec<WorkerOut>, Instant) {
    // Open loop: the schedule starts a moment from now so that every worker is waiting.
    let started = Instant::now() + if plan.interval_ns.is_some() { Duration::from_millis(5) } else { Duration::ZERO };
    let pacer = plan.interval_ns.map(|ns| Arc::new(Pacer::start(started, ns, plan.n, conns.len())));
    let mut tasks = Vec::with_capacity(conns.len());
    for (w, conn) in conns.into_iter().enumerate() {
        let plan = plan.clone();
        tasks.push(tokio::spawn(worker(w as u32, conn, plan, started, pacer.clone())));
    }
    let mut conns = Vec::new();
    let mut outs = Vec::new();
    for t in tasks {
        let (c, o) = t.await.expect("a bench worker panicked");
        conns.push(c);
        outs.push(o);
    }
    let plan = Arc::try_unwrap(plan).ok().expect("the workers are done");
    ((conns, plan), outs, started)
}

async fn worker(w: u32, mut conn: Conn, plan: Arc<Plan>, started: Instant, pacer: Option<Arc<Pacer>>) -> (Conn, WorkerOut) {
    let mut out = WorkerOut {
        hist: histogram(),
        placed: Vec::new(),
        errors: BTreeMap::new(),
        statuses: BTreeMap::new(),
        trades: Vec::new(),
        last_answer: None,
        cancel_hist: histogram(),
        too_late: 0,
        cancel_errors: BTreeMap::new(),
    };
    let mut stop = plan.stop.clone();
    let mut unanswered_in_a_row = 0;
    let mut rng = Rng::new(plan.seed ^ ((w as u64 + 1) << 32));
    let buyer = &plan.users.buyers[w as usize];
    let seller = &plan.users.sellers[w as usize];
    loop {
        if *stop.borrow() || unanswered_in_a_row >= GIVE_UP_AFTER {
            break;
        }
        // Open loop: a send slot first ([`Pacer`]); Ctrl-C ends the wait.
        let waited = match &pacer {
            Some(p) => tokio::select! {
                waited = p.next_slot() => waited,
                _ = stop.changed() => break,
            },
            None => false,
        };
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.n {
            break;
        }
        let side = if i.is_multiple_of(2) { Side::Buy } else { Side::Sell };
        let symbol = (rng.below(plan.symbols.len() as u64)) as u16;
        let price_ticks = MID_TICKS + rng.below(2 * JITTER_TICKS as u64 + 1) as i64 - JITTER_TICKS;
        let quantity = 1 + rng.below(MAX_QTY);
        let body = PlaceBody {
            user_id: if side == Side::Buy { buyer } else { seller },
            symbol: &plan.symbols[symbol as usize],
            side,
            kind: "limit",
            quantity: quantity.to_string(),
            price: Decimal::new(price_ticks, 2).to_string(),
        };
        let body = Bytes::from(serde_json::to_vec(&body).expect("a body serializes"));

        // Open loop: latency counts from the slot's time when this order is late, or when
        // the pacer released its slot late ([`pacer::counted_from`]).
        let now = Instant::now();
        let t0 = match plan.interval_ns {
            Some(ns) => pacer::counted_from(started + Duration::from_nanos((i as f64 * ns) as u64), now, waited),
            None => now,
        };
        let answer = conn.request(Method::POST, &plan.route, Some(body)).await;
        let done = Instant::now();
        out.last_answer = Some(done);
        unanswered_in_a_row = if answer.is_err() { unanswered_in_a_row + 1 } else { 0 };
        match answer {
            Ok(a) if a.is_success() => match serde_json::from_slice::<PlaceAnswer>(&a.body) {
                Ok(p) => {
                    let us = done.saturating_duration_since(t0).as_micros().max(1) as u64;
                    out.hist.saturating_record(us);
                    *out.statuses.entry(p.status.as_str().to_string()).or_default() += 1;
                    out.placed.push(Placed {
                        order_id: p.order_id,
                        worker: w,
                        side,
                        symbol,
                        quantity,
                        price_ticks,
                        status: p.status,
                        filled: p.filled_quantity,
                        fills: p.fills.len() as u32,
                        cancel_unanswered: false,
                    });
                    out.trades.extend(p.fills.into_iter().map(|f| f.trade_id));
                    if p.status.is_open() && rng.below(100) < u64::from(plan.cancels) {
                        let placed = out.placed.last_mut().expect("just pushed");
                        cancel(&mut conn, placed, &mut out.cancel_hist, &mut out.too_late, &mut out.cancel_errors).await;
                        out.last_answer = Some(Instant::now());
                    }
                }
                Err(_) => *out.errors.entry("bad_answer".into()).or_default() += 1,
            },
            Ok(a) => *out.errors.entry(a.error_code()).or_default() += 1,
            Err(_) => *out.errors.entry("connection".into()).or_default() += 1,
        }
    }
    (conn, out)
}

/// The cancel answer, read leanly: what the verification then expects.
#[derive(Deserialize)]
struct CancelAnswer {
    status: OrderStatus,
    filled_quantity: Decimal,
    #[serde(default)]
    fills: Vec<FillId>,
}

/// Cancels an order that rested, on the worker's connection; its verification then
/// expects it as the cancel answered it. A 409 (it filled first) is counted, not an error.
/// A cancel whose answer never came (or came unreadable) may or may not have been done:
/// the verification then takes the order open or cancelled.
async fn cancel(conn: &mut Conn, placed: &mut Placed, hist: &mut Histogram<u64>, too_late: &mut u64, errors: &mut BTreeMap<String, u64>) {
    let t0 = Instant::now();
    let answer = conn.request(Method::DELETE, &format!("/api/orders/{}", encode(&placed.order_id)), None).await;
    let us = t0.elapsed().as_micros().max(1) as u64;
    match answer {
        Ok(a) if a.is_success() => match serde_json::from_slice::<CancelAnswer>(&a.body) {
            Ok(c) => {
                hist.saturating_record(us);
                (placed.status, placed.filled, placed.fills) = (c.status, c.filled_quantity, c.fills.len() as u32);
            }
            Err(_) => {
                placed.cancel_unanswered = true;
                *errors.entry("bad_answer".into()).or_default() += 1
            }
        },
        Ok(a) if a.status == 409 => *too_late += 1,
        Ok(a) => {
            placed.cancel_unanswered |= a.status >= 500;
            *errors.entry(a.error_code()).or_default() += 1
        }
        Err(_) => {
            placed.cancel_unanswered = true;
            *errors.entry("connection".into()).or_default() += 1
        }
    }
}

/// Looks every acknowledged order up and compares it with its placement answer. Returns
/// the connections, the verdict and, per trade id, the orders that record a fill of it.
async fn verify(
    conns: Vec<Conn>,
    placed: &[Placed],
    get_route: &str,
    plan: &Plan,
) -> (Vec<Conn>, Verification, HashMap<String, Vec<String>>, Moves) {
    let k = conns.len().max(1);
    let shared =
        Arc::new((placed.to_vec(), get_route.to_string(), plan.symbols.clone(), plan.users.buyers.clone(), plan.users.sellers.clone()));
    let mut tasks = Vec::new();
    for (lane, conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let (placed, route, symbols, buyers, sellers) = &*shared;
            let mut conn = conn;
            let mut v = Verification::default();
            let mut fills: HashMap<String, Vec<String>> = HashMap::new();
            let mut moves = Moves::new();
            for p in placed.iter().skip(lane).step_by(k) {
                v.checked += 1;
                let path = format!("{route}/{}", encode(&p.order_id));
                match conn.request(Method::GET, &path, None).await {
                    Ok(a) if a.is_success() => match serde_json::from_slice::<Order>(&a.body) {
                        Ok(o) => {
                            for f in &o.fills {
                                fills.entry(f.trade_id.clone()).or_default().push(o.order_id.clone());
                                // What the fill moved in its user's account (agt charges no fees).
                                let (cash, units) = (f.price * f.quantity, f.quantity);
                                let (cash, units) = if o.side == Side::Buy { (-cash, units) } else { (cash, -units) };
                                *moves.entry((o.user_id.clone(), "USD".into())).or_default() += cash;
                                *moves.entry((o.user_id.clone(), o.symbol.clone())).or_default() += units;
                            }
                            let user = if p.side == Side::Buy { &buyers[p.worker as usize] } else { &sellers[p.worker as usize] };
                            match check(p, &o, user, &symbols[p.symbol as usize]) {
                                Ok(()) => v.verified += 1,
                                Err(why) => {
                                    v.inconsistent += 1;
                                    v.problems.push(format!("order {}: {why}", p.order_id));
                                }
                            }
                        }
                        Err(e) => {
                            v.lookup_errors += 1;
                            v.problems.push(format!("order {}: the answer is not an order ({e})", p.order_id));
                        }
                    },
                    Ok(a) if a.status == 404 => {
                        v.missing += 1;
                        v.problems.push(format!(
                            "order {}: acknowledged as {} but the daemon does not know it",
                            p.order_id,
                            p.status.as_str()
                        ));
                    }
                    Ok(a) => {
                        v.lookup_errors += 1;
                        v.problems.push(format!("order {}: lookup answered {} {}", p.order_id, a.status, a.error_code()));
                    }
                    Err(e) => {
                        v.lookup_errors += 1;
                        v.problems.push(format!("order {}: lookup failed: {e}", p.order_id));
                    }
                }
                v.problems.truncate(MAX_PROBLEMS);
            }
            (conn, v, fills, moves)
        }));
    }
    let mut conns = Vec::new();
    let mut total = Verification::default();
    let mut fills: HashMap<String, Vec<String>> = HashMap::new();
    let mut moves = Moves::new();
    for t in tasks {
        let (c, v, f, m) = t.await.expect("a verification task panicked");
        conns.push(c);
        for (k, d) in m {
            *moves.entry(k).or_default() += d;
        }
        for (trade, orders) in f {
            fills.entry(trade).or_default().extend(orders);
        }
        total.checked += v.checked;
        total.verified += v.verified;
        total.missing += v.missing;
        total.inconsistent += v.inconsistent;
        total.lookup_errors += v.lookup_errors;
        total.problems.extend(v.problems);
    }
    total.problems.truncate(MAX_PROBLEMS);
    (conns, total, fills, moves)
}

/// Per (user, asset): what the fills recorded on the bench orders moved.
type Moves = HashMap<(String, String), Decimal>;

/// Whether the order the daemon has now is the one it acknowledged, allowing only what
/// may have happened since: a resting order filled further by later orders.
fn check(p: &Placed, o: &Order, user: &str, symbol: &str) -> Result<(), String> {
    let qty = Decimal::from(p.quantity);
    let price = Decimal::new(p.price_ticks, 2);
    if o.order_id != p.order_id {
        return Err(format!("looked up, got order {}", o.order_id));
    }
    if o.user_id != user || o.symbol != symbol || o.side != p.side || o.quantity != qty || o.price != Some(price) {
        return Err(format!(
            "placed as {user} {symbol} {:?} {qty} @ {price}, stored as {} {} {:?} {} @ {:?}",
            p.side, o.user_id, o.symbol, o.side, o.quantity, o.price
        ));
    }
    if o.filled_quantity < p.filled {
        return Err(format!("acknowledged with {} filled, now {} filled", p.filled, o.filled_quantity));
    }
    let allowed = if p.status.is_open() {
        matches!(o.status, OrderStatus::New | OrderStatus::PartiallyFilled | OrderStatus::Filled)
            || (p.cancel_unanswered && o.status == OrderStatus::Cancelled)
    } else {
        o.status == p.status && o.filled_quantity == p.filled
    };
    if !allowed {
        return Err(format!(
            "acknowledged as {} ({} filled), now {} ({} filled)",
            p.status.as_str(),
            p.filled,
            o.status.as_str(),
            o.filled_quantity
        ));
    }
    let coherent = match o.status {
        OrderStatus::New => o.filled_quantity.is_zero(),
        OrderStatus::PartiallyFilled => o.filled_quantity > Decimal::ZERO && o.filled_quantity < qty,
        OrderStatus::Filled => o.filled_quantity == qty,
        _ => o.filled_quantity <= qty,
    };
    if !coherent {
        return Err(format!("status {} does not fit {} of {qty} filled", o.status.as_str(), o.filled_quantity));
    }
    let fills: Decimal = o.fills.iter().map(|f| f.quantity).sum();
    if fills != o.filled_quantity || (o.fills.len() as u32) < p.fills {
        return Err(format!(
            "{} fills totalling {fills} recorded, filled_quantity {} (the placement answer had {} fills)",
            o.fills.len(),
            o.filled_quantity,
            p.fills
        ));
    }
    // Cancelled ones too: their remaining is what never traded.
    if o.remaining_quantity != qty - o.filled_quantity {
        return Err(format!("remaining {} + filled {} is not the quantity {qty}", o.remaining_quantity, o.filled_quantity));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_seed_is_exact_as_a_json_double() {
        for _ in 0..1000 {
            let seed = random_seed();
            assert!(seed < 1 << 53, "{seed}");
            assert_eq!(seed as f64 as u64, seed);
        }
    }

    fn order(status: OrderStatus, filled: i64, fills: usize) -> Order {
        Order {
            order_id: "o1".into(),
            user_id: "u1".into(),
            symbol: "S".into(),
            side: Side::Buy,
            kind: crate::api::OrderType::Limit,
            time_in_force: crate::api::TimeInForce::Gtc,
            price: Some(Decimal::new(10001, 2)),
            quantity: Decimal::from(4),
            filled_quantity: Decimal::from(filled),
            remaining_quantity: Decimal::from(4 - filled),
            average_price: None,
            status,
            fills: (0..fills)
                .map(|i| crate::api::Fill {
                    trade_id: format!("t{i}"),
                    price: Decimal::new(10001, 2),
                    quantity: Decimal::from(filled) / Decimal::from(fills as u64),
                    timestamp: String::new(),
                })
                .collect(),
            client_order_id: None,
            created_at: String::new(),
            updated_at: String::new(),
            reject_reason: None,
        }
    }

    fn placed(status: OrderStatus, filled: i64, fills: u32) -> Placed {
        Placed {
            order_id: "o1".into(),
            worker: 0,
            side: Side::Buy,
            symbol: 0,
            quantity: 4,
            price_ticks: 10001,
            status,
            filled: Decimal::from(filled),
            fills,
            cancel_unanswered: false,
        }
    }

    #[test]
    fn a_resting_order_may_fill_later() {
        let p = placed(OrderStatus::New, 0, 0);
        assert_eq!(check(&p, &order(OrderStatus::New, 0, 0), "u1", "S"), Ok(()));
        assert_eq!(check(&p, &order(OrderStatus::PartiallyFilled, 2, 1), "u1", "S"), Ok(()));
        assert_eq!(check(&p, &order(OrderStatus::Filled, 4, 2), "u1", "S"), Ok(()));
    }

    #[test]
    fn what_was_acknowledged_cannot_go_back_or_change() {
        let p = placed(OrderStatus::Filled, 4, 2);
        assert!(check(&p, &order(OrderStatus::PartiallyFilled, 2, 1), "u1", "S").is_err());
        assert!(check(&p, &order(OrderStatus::Cancelled, 4, 2), "u1", "S").is_err());
        assert!(check(&p, &order(OrderStatus::Filled, 4, 2), "u2", "S").is_err());
        assert!(check(&p, &order(OrderStatus::Filled, 4, 2), "u1", "T").is_err());
        let p = placed(OrderStatus::PartiallyFilled, 2, 1);
        assert!(check(&p, &order(OrderStatus::New, 0, 0), "u1", "S").is_err());
        assert!(check(&p, &order(OrderStatus::Cancelled, 2, 1), "u1", "S").is_err());
        // Fills that do not add up to the filled quantity.
        let mut o = order(OrderStatus::Filled, 4, 2);
        o.fills.pop();
        assert!(check(&placed(OrderStatus::New, 0, 0), &o, "u1", "S").is_err());
    }

    #[test]
    fn rng_jitter_stays_in_band() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let t = MID_TICKS + r.below(2 * JITTER_TICKS as u64 + 1) as i64 - JITTER_TICKS;
            assert!((MID_TICKS - JITTER_TICKS..=MID_TICKS + JITTER_TICKS).contains(&t));
        }
    }
}
