#!/usr/bin/env python3
"""Crash consistency under a mixed workload: SIGKILL the daemon at random moments and
check that nothing acknowledged was lost and that money is conserved.

Usage: scripts/chaos.py [--rounds 30] [--bin target/release/agt] [--home NEW_DIR]
       [--seed N] [--durability normal|full] [--short] [--kinds kill,crash,...]
       [--upgrade-from OLD_AGT]

Python 3, stdlib only; needs a release build (`cargo build --release`). It makes a
fresh home (a temporary one unless --home), starts the daemon with `agt daemon start`,
lists `AAPL-USD` beside the shipped `AAPL` (two symbols trading one base asset) and
makes ten users. Each round, over seven connections to the socket at once: four traders
place limit (crossing and resting, some for all a user has), market, IOC and FOK orders
on AAPL, AAPL-USD and BTC-USD, each with a client order id, cancel, amend and
cancel-all; a cashier deposits and withdraws USD, AAPL and BTC (some withdrawals take
all that is available, racing the traders' holds); an admin halts and resumes symbols
and all trading, disables and enables users, changes their max_order_quantity, lists new instruments (and deposits
their asset at once) and changes `risk.max_order_notional` live; a
reader lists orders. The script keeps a ledger of every acknowledged deposit and
withdrawal, and of those whose answer the kill cut off (they may or may not have
happened: the checks find which). A round ends in one of (--kinds): `kill` (SIGKILL at
a random moment), `crash-then-kill` (a service crashed by fault injection first),
`kill-in-stop` (killed while `agt daemon stop` drains), `kill-in-start` (killed again
while it recovers), `crash` (services crashed, no kill: the running daemon is checked), `mass` (a
cancel-all of 2,400 resting orders of one user, killed part way through), `stop` (a
graceful stop under load, after which the stopped stores must agree).
Then it starts the daemon again and checks, through the API:

- every order it got an answer for (or saw in a list) exists, with its fills, a status
  at least as advanced and no less filled; an acknowledged cancel stays cancelled; an
  open order has the price and quantity its last acknowledged amend gave it;
- a placement retried with its client order id finds the first order (200); one whose
  answer the kill cut off either finds it or is placed now;
- per user and asset: total = deposits - withdrawals + what the user's fills moved,
  so the sum over users is deposits - withdrawals; available = total - held, and none
  of them below zero (with --short, only USD: all-in sells then sell more than there
  is, and `risk.allow_short` is turned off and on live);
- holds (`/api/risk/holds`) are exactly the open orders, each of remaining x price
  (buys, USD) or remaining (sells, the base asset), and `held` is their sum;
- every trade id is in exactly two fills (a buy and a sell, same price and quantity),
  on its symbol's tape naming those orders; each order's filled quantity is its fills'
  sum; the quote's last price, 24 h trades and volume and the 1m candles match the tape;
- the books (`/api/book/SYM`) are the open orders' remaining quantities by price;
- `TRADE_EXECUTED` events name each trade once; `ACCOUNT_DEPOSITED` less
  `ACCOUNT_WITHDRAWN` events sum to the ledger, per user and asset;
- acknowledged halts, resumes, user statuses, limits, instruments and config hold
  after the restart;
- `GET /api/audit/verify` is ok, `/ready` and `/metrics` show every service up, and
  no answer was a 5xx other than 503.

With --upgrade-from, the home is made and run by that older agt binary until the first
round that kills the daemon (or until the clean stop at the end, if none does); from
then on, --bin runs it (its `daemon stop` of a kill-in-stop round already). The newer
agt must take over an older one's home, stores and intake journal as a crash left
them, as an operator who upgrades after a crash would have it. Use kinds that kill
(e.g. `--kinds kill,kill-in-stop,kill-in-start`) and an older build whose routes the
rounds use (`git worktree add /tmp/old REV`, then `cargo build --release` there).

After the last round it stops the daemon cleanly, checks that the stopped stores agree
(open orders = open holds = resting orders, no saga left unfinished; python's sqlite3),
starts it and checks again. Prints each round and every violation; exits 1 if there was
one. Slow (~3 s a round): never run by `cargo test`; a short version of each bug it
found lives in `tests/it/` (audit.rs: a command run while audit restarted under
durability "full").
"""
import argparse, os, random, subprocess, sys, tempfile, threading, time
from collections import defaultdict
from decimal import Decimal as D

import agt_unix  # scripts/agt_unix.py: HTTP over the daemon's socket
from agt_unix import Gone

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=30)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--short", action="store_true", help="risk.allow_short = true: sells may go below zero")
ap.add_argument("--durability", choices=["normal", "full"])
ap.add_argument("--kinds", default="kill,kill,kill,crash-then-kill,kill-in-stop,kill-in-start,crash,mass,stop",
                help="the kinds of round to pick from at random (a kind listed twice is picked twice as often)")
ap.add_argument("--min-ms", type=int, default=200, help="shortest round before the kill")
ap.add_argument("--upgrade-from", metavar="OLD_AGT", help="an older agt binary that runs the home until the first kill")
ap.add_argument("--max-ms", type=int, default=2500, help="longest round before the kill")
args = ap.parse_args()
rng = random.Random(args.seed)
home = args.home or tempfile.mkdtemp(prefix="agt-chaos-")
os.makedirs(home, exist_ok=True)
with open(f"{home}/agt.toml", "w") as f:
    f.write((f'durability = "{args.durability}"\n' if args.durability else '')
            + '[http]\nlisten = ""\n[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\n' + ('allow_short = true\n' if args.short else '') + '[debug]\nfault_injection = true\n')
# The binary the rounds end with; with --upgrade-from, the older one runs until a kill.
newer = args.bin
if args.upgrade_from:
    args.bin = args.upgrade_from
print(f"home {home}, seed {args.seed}, binary {args.bin}" + (f", upgraded to {newer} at the first kill" if args.upgrade_from else ""), flush=True)

BASE = {"AAPL": "AAPL", "AAPL-USD": "AAPL", "BTC-USD": "BTC"}
SYMBOLS = list(BASE)
FINAL = agt_unix.FINAL
problems = agt_unix.Problems()
problem = problems  # records and prints a violation
Conn = agt_unix.connector(home, problem)  # a new connection to this run's daemon


def events(types):
    """Every stored event of these types."""
    line, evs = agt_unix.events(home, f"since=0&type={types}")
    if " 200 " not in line:
        problem(f"GET /api/events: {line}")
    return evs


def ok(method, path, body=None):
    return agt_unix.ok(Conn(), method, path, body)


def agt(*a):
    return subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True)


def start():
    agt_unix.start(agt)


# --- what the script was told -------------------------------------------------------
TOLD = agt_unix.Told()  # the acknowledged orders, cancels and cash, and the cash the kill cut the answer off
lock, ledger, uncertain, told, told_cancelled = TOLD.lock, TOLD.ledger, TOLD.uncertain, TOLD.orders, TOLD.cancelled
remember = TOLD.remember
amended = defaultdict(list)  # order_id -> (price, quantity) of each acknowledged amend, in answer order
amend_unanswered = set()  # orders an amend was sent for that the kill cut off
halts = {}  # symbol -> (halted, certain)
listed = set()  # instruments added and acknowledged
settings = {}  # (user, "status" or "limit") -> (value, certain): users' status and max_order_quantity
counts = defaultdict(int)


placed = {}  # client_order_id -> (body, order_id) of every answered placement
unplaced = []  # bodies of placements the kill cut the answer off
next_cid = iter(range(10**9))


def place(c, body):
    """Places with a client order id of our own, so a retry after the kill can be checked."""
    body = dict(body, client_order_id=f"x{args.seed}-{next(next_cid)}")
    try:
        s, o = c.call("POST", "/api/orders", body)
    except Gone:
        with lock:
            unplaced.append(body)
        raise
    if isinstance(o, dict) and "order_id" in o:
        with lock:
            placed[body["client_order_id"]] = (body, o["order_id"])
    remember(o)
    return s, o


def open_ids(c, user):
    s, v = c.call("GET", f"/api/orders?user_id={user}&status=open&limit=200")
    return [o["order_id"] for o in v] if s == 200 else []


def trader(users, stop):
    r = random.Random(rng.random())
    agt_unix.trader(Conn(), r, users, SYMBOLS, stop, trade)


def trade(c, r, k, u, sym, side, qty, px):
    """One turn of a trader (`agt_unix.trader`): what k picks, on these terms."""
    if k < 0.45:
        s, o = place(c, agt_unix.limit_order(r, u, sym, side, qty, px))
        counts["place"] += 1
    elif k < 0.55:
        s, o = place(c, {"user_id": u, "symbol": sym, "side": side, "quantity": qty, "type": "market",
                         "time_in_force": r.choice(["gtc", "ioc", "fok"])})
        counts["market"] += 1
    elif k < 0.65:
        ids = open_ids(c, u)
        if ids:
            i = r.choice(ids)
            s, o = c.call("DELETE", f"/api/orders/{i}")
            counts["cancel"] += 1
            if s == 200:
                TOLD.cancel_answered(i, o)
    elif k < 0.85:
        ids = open_ids(c, u)
        if ids:
            i = r.choice(ids)
            body = r.choice([{"price": px}, {"quantity": str(r.randint(1, 8))}, {"price": px, "quantity": str(r.randint(1, 8))}])
            try:
                s, o = c.call("PATCH", f"/api/orders/{i}", body)
            except Gone:
                with lock:
                    amend_unanswered.add(i)
                raise
            counts["amend"] += 1
            if s == 200:
                remember(o)
                with lock:
                    amended[i].append((D(o["price"]), D(o["quantity"])))
    elif k < 0.99:
        # Nearly all of the user's cash or asset in one order.
        s, acct = c.call("GET", f"/api/users/{u}/account")
        bal = {b["asset"]: D(b["available"]) for b in acct["balances"]} if s == 200 else {}
        p = D(r.randint(9900, 10100)) / 100
        q = int(bal.get("USD", 0) / p) if side == "buy" else int(bal.get(BASE[sym], 0))
        if sym == "BTC-USD":
            q = (bal.get("USD", D(0)) / p if side == "buy" else bal.get("BTC", D(0))).quantize(D("0.0001"), rounding="ROUND_DOWN")
        if args.short and side == "sell":
            # More than there is: the rest is sold short.
            q += r.randint(1, 20) if sym != "BTC-USD" else D(r.randint(1, 5000)) / 10000
        if q > 0:
            s, o = place(c, {"user_id": u, "symbol": sym, "side": side, "quantity": str(q), "price": str(p)})
            counts["all-in"] += 1
    else:
        s, v = c.call("POST", "/api/orders/cancel-all", {"user_id": u, "symbol": sym})
        counts["cancel-all"] += 1
        if s == 200:
            for o in v if isinstance(v, list) else v.get("cancelled", []):
                TOLD.cancel_answered(o["order_id"], o)


def cashier(users, stop):
    r = random.Random(rng.random())
    agt_unix.cashier(Conn(), r, users, stop, TOLD, counts, all_in=True)


def admin(users, stop):
    r = random.Random(rng.random())
    c = Conn()
    while not stop.is_set():
        # Halts are brief and rare enough that most of a round trades.
        halted = [k for k, (h, _) in halts.items() if h]
        route = "resume" if halted and r.random() < 0.7 else "halt" if r.random() < 0.3 else "resume"
        sym = r.choice(halted) if route == "resume" and halted else r.choice(SYMBOLS + SYMBOLS + [None])
        with lock:
            halts[sym] = (route == "halt", False)
        try:
            s, v = c.call("POST", f"/api/risk/{route}", {"symbol": sym} if sym else {})
        except Gone:
            return
        counts[route] += 1
        if s < 300:
            with lock:
                halts[sym] = (route == "halt", True)
        # A user disabled for a moment, or given a new per-user limit; now and then a
        # new instrument (and a deposit of its asset) or a live config change.
        u = r.choice(users)
        if r.random() < 0.1:
            sym = f"Z{args.seed % 1000}N{next(next_cid)}-USD"
            deposit = None  # (user, asset, amount) once the deposit is sent
            try:
                s, v = c.call("POST", "/api/symbols", {"symbol": sym, "tick": "0.01", "lot": "1"})
                if s < 300:
                    with lock:
                        listed.add(sym)
                    amount = D(r.randint(1, 1000))
                    deposit = (u, sym[:-4], amount)
                    s, v = c.call("POST", f"/api/users/{u}/deposits", {"asset": sym[:-4], "amount": str(amount)})
                    if s < 300:
                        with lock:
                            ledger[(u, sym[:-4])] += amount
                    elif s != 503:
                        problem(f"deposit of {sym[:-4]} right after listing {sym}: {s} {v}")
                counts["listed"] += 1
            except Gone:
                # The kill cut the deposit's answer off: it may have happened, as a
                # cashier's may (the checks find which).
                if deposit:
                    with lock:
                        uncertain.append(deposit)
                    counts["unanswered deposits after listing"] += 1
                return
            continue
        if r.random() < 0.1:
            # With --short, short selling is also turned off and on while shorts are open.
            key, value = "risk.max_order_notional", str(r.randint(10000000, 20000000))
            if args.short and r.random() < 0.5:
                key, value = "risk.allow_short", r.choice([True, False])
            with lock:
                settings[("config", key)] = (None, False)
            try:
                s, v = c.call("PUT", "/api/config", {key: value})
            except Gone:
                return
            counts["config"] += 1
            if s < 300:
                with lock:
                    settings[("config", key)] = (value, True)
            continue
        if r.random() < 0.3:
            what, path, body = ("status", f"/api/users/{u}", {"status": r.choice(["disabled", "active", "active"])})
            method = "PUT"
        else:
            what, path, body = ("limit", f"/api/risk/limits?user_id={u}", {"max_order_quantity": str(r.randint(4, 1000))})
            method = "PUT"
        with lock:
            settings[(u, what)] = (None, False)
        try:
            s, v = c.call(method, path, body)
        except Gone:
            return
        counts[what] += 1
        if s < 300:
            with lock:
                settings[(u, what)] = (list(body.values())[0], True)
        time.sleep(r.choice([0.02, 0.1, 0.2]))


def reader(users, stop):
    r = random.Random(rng.random())
    c = Conn()
    while not stop.is_set():
        try:
            s, v = c.call("GET", f"/api/orders?user_id={r.choice(users)}&limit=20")
        except Gone:
            return
        if s == 200:
            for o in v:
                remember(o)


# --- the checks -------------------------------------------------------------------
def all_orders(c, u):
    s, v = c.call("GET", f"/api/orders?user_id={u}&status=all&limit=10000")
    if s != 200:
        problem(f"listing {u}'s orders: {s} {v}")
        return []
    if len(v) >= 10000:
        problem(f"{u} has 10,000 orders or more: the checks see only the newest")
    return v


def check(users, label):
    c = Conn()
    global unplaced
    orders = {}
    for u in users:
        for o in all_orders(c, u):
            orders[o["order_id"]] = o
    # every acknowledged order, at least as advanced; acknowledged cancels kept
    agt_unix.check_acknowledged(orders, told, told_cancelled, problem, label)
    for oid, values in amended.items():
        o = orders.get(oid)
        # Two amends of one order may cross on the way; the last applied is one of the last two.
        if o and o["status"] not in FINAL and oid not in amend_unanswered and (D(o["price"]), D(o["quantity"])) not in values[-2:]:
            problem(f"{label}: open {oid} is {o['quantity']} @ {o['price']}, acknowledged amends made it {values[-2:]}")
    # fills and trades
    trades = defaultdict(list)
    net = defaultdict(D)  # (user, asset) -> what fills moved
    for o in orders.values():
        fq = sum((D(f["quantity"]) for f in o["fills"]), D(0))
        if fq != D(o["filled_quantity"]):
            problem(f"{label}: {o['order_id']} filled_quantity {o['filled_quantity']} but its fills sum to {fq}")
        if D(o["remaining_quantity"]) != D(o["quantity"]) - D(o["filled_quantity"]) and o["status"] not in FINAL:
            problem(f"{label}: open {o['order_id']} remaining {o['remaining_quantity']} != quantity - filled")
        base = BASE[o["symbol"]]
        for f in o["fills"]:
            trades[f["trade_id"]].append((o["side"], D(f["price"]), D(f["quantity"]), o["symbol"]))
            sign = 1 if o["side"] == "buy" else -1
            net[(o["user_id"], base)] += sign * D(f["quantity"])
            net[(o["user_id"], "USD")] -= sign * D(f["quantity"]) * D(f["price"])
    for tid, fs in trades.items():
        if len(fs) != 2 or {fs[0][0], fs[1][0]} != {"buy", "sell"} or fs[0][1:] != fs[1][1:]:
            problem(f"{label}: trade {tid} has fills {fs}")
    for sym in SYMBOLS:
        s, tape = c.call("GET", f"/api/trades/{sym}?limit=10000")
        ids = {t["trade_id"] for t in tape}
        for t in tape:
            for side, key in (("buy", "buy_order_id"), ("sell", "sell_order_id")):
                o = orders.get(t[key])
                if o is None or o["side"] != side or t["trade_id"] not in {f["trade_id"] for f in o["fills"]}:
                    problem(f"{label}: tape trade {t['trade_id']} names {side} order {t[key]}, which has no such fill")
        mine = {t for t, fs in trades.items() if fs[0][3] == sym}
        if len(tape) < 10000 and ids != mine:
            problem(f"{label}: {sym} tape has {len(ids - mine)} trades no fill names and lacks {len(mine - ids)}: {list(ids ^ mine)[:3]}")
    # holds, accounts, money
    open_orders, held = agt_unix.check_holds(c, orders, BASE, problem, label, short=args.short)
    # the kill may have cut off answers to deposits that happened: find which did
    totals, resolved = agt_unix.check_balances(c, users, ledger, net, held, uncertain, problem, label, lambda a: args.short and a != "USD")
    totals = defaultdict(D, totals)
    # the events say the same: each trade once, and the deposits and withdrawals made
    seen = defaultdict(int)
    moved = defaultdict(D)
    for e in events("TRADE_EXECUTED,ACCOUNT_DEPOSITED,ACCOUNT_WITHDRAWN"):
        d = e["data"]
        if e["type"] == "TRADE_EXECUTED":
            seen[d["trade_id"]] += 1
        else:
            moved[(d["user_id"], d["asset"])] += D(d["amount"]) * (1 if e["type"] == "ACCOUNT_DEPOSITED" else -1)
    if set(seen) != set(trades) or any(n != 1 for n in seen.values()):
        problem(f"{label}: TRADE_EXECUTED events: {len(set(trades) - set(seen))} trades without, {len(set(seen) - set(trades))} unknown, "
                f"{sum(n > 1 for n in seen.values())} twice")
    for key in set(moved) | {k for k, v in ledger.items() if v}:
        if moved[key] != ledger[key]:
            problem(f"{label}: {key}: deposit and withdrawal events sum to {moved[key]}, the acknowledged ones to {ledger[key]}")
    counts["unanswered cash"] += len(uncertain)
    counts["unanswered cash that happened"] += len(resolved)
    uncertain.clear()
    # books
    for sym in SYMBOLS:
        s, book = c.call("GET", f"/api/book/{sym}?depth=1000")
        for side, key in (("buy", "bids"), ("sell", "asks")):
            want = defaultdict(D)
            for o in open_orders.values():
                if o["symbol"] == sym and o["side"] == side:
                    want[D(o["price"])] += D(o["remaining_quantity"])
            got = {D(p): D(q) for p, q in book[key]}
            if got != dict(want):
                problem(f"{label}: {sym} {key} {sorted(got.items())[:5]} != open orders {sorted(want.items())[:5]}")
    # market data agrees with the tape
    for sym in SYMBOLS:
        s, tape = c.call("GET", f"/api/trades/{sym}?limit=10000")
        s, q = c.call("GET", f"/api/market/{sym}")
        if tape and len(tape) < 10000:
            vol = sum((D(t["quantity"]) for t in tape), D(0))
            if D(q["last"] or 0) != D(tape[0]["price"]) or q["trades_24h"] != len(tape) or D(q["volume_24h"]) != vol:
                problem(f"{label}: {sym} quote {q} disagrees with the tape: last {tape[0]['price']}, {len(tape)} trades, volume {vol}")
            s, bars = c.call("GET", f"/api/market/{sym}/candles?interval=1m&limit=10000")
            bvol, bn = sum((D(b["volume"]) for b in bars), D(0)), sum(b["trades"] for b in bars)
            if (bvol, bn) != (vol, len(tape)):
                problem(f"{label}: {sym} 1m candles hold {bn} trades, volume {bvol}; the tape {len(tape)}, {vol}")
    # a retried placement (same client_order_id) finds the order the kill cut the answer off
    for body in unplaced:
        s, o = c.call("POST", "/api/orders", body)
        if s not in (200, 201, 422):
            problem(f"{label}: retry of an unanswered placement answered {s} {o}")
        counts["retried unanswered placements"] += 1
        counts["... that had happened"] += s == 200
        if isinstance(o, dict) and "order_id" in o:
            placed[body["client_order_id"]] = (body, o["order_id"])
            remember(o)
    unplaced.clear()
    for cid in random.Random(label).sample(sorted(placed), min(20, len(placed))):
        body, oid = placed[cid]
        s, o = c.call("POST", "/api/orders", body)
        if s != 200 or o.get("order_id") != oid:
            problem(f"{label}: retry of answered placement {cid} ({oid}) answered {s} {o}")
    # halts
    s, state = c.call("GET", "/api/risk/state")
    halted = set(state["halted_symbols"])
    for sym, (h, certain) in halts.items():
        if certain and (state["halted"] if sym is None else sym in halted) != h:
            problem(f"{label}: {sym} acknowledged {'halted' if h else 'resumed'}, state {state}")
    s, syms = c.call("GET", "/api/symbols")
    lost = listed - {x["symbol"] for x in syms}
    if lost:
        problem(f"{label}: acknowledged instruments lost: {sorted(lost)}")
    for (u, what), (value, certain) in settings.items():
        if not certain:
            continue
        if u == "config":
            now = c.call("GET", "/api/config")[1]["risk"][what.split(".")[1]]
            if isinstance(value, bool):
                if now != value:
                    problem(f"{label}: acknowledged {what} {value}, now {now}")
                continue
        elif what == "status":
            now = c.call("GET", f"/api/users/{u}")[1]["status"]
        else:
            now = c.call("GET", f"/api/risk/limits?user_id={u}")[1]["max_order_quantity"]
        if D(now) != D(value) if what != "status" else now != value:
            problem(f"{label}: {u} acknowledged {what} {value}, now {now}")
    s, v = c.call("GET", "/api/audit/verify")
    if not v.get("ok"):
        problem(f"{label}: audit verify {v}")
    s, metrics = c.call("GET", "/metrics")
    down = [l for l in (metrics or "").splitlines() if l.startswith("agt_service_up{") and not l.endswith(" 1")]
    if s != 200 or down:
        problem(f"{label}: /metrics {s}, services down: {down}")
    s, _ = c.call("GET", "/ready")
    if s != 200:
        problem(f"{label}: /ready {s}")
    return len(orders), len(open_orders), len(trades)


# --- the run ----------------------------------------------------------------------
start()
ok("POST", "/api/symbols", {"symbol": "AAPL-USD", "tick": "0.01", "lot": "1", "min_quantity": "1"})
tag = str(time.time_ns())[-6:]
users = [ok("POST", "/api/users", {"username": f"chaos{tag}{i}", "email": f"c{tag}{i}@example.com"})["user_id"] for i in range(10)]
for u in users:
    for asset, amount in (("USD", D("20000")), ("AAPL", D("200")), ("BTC", D("1"))):
        ok("POST", f"/api/users/{u}/deposits", {"asset": asset, "amount": str(amount)})
        ledger[(u, asset)] += amount
kills = 0
def mass_cancel(u, sent):
    """Cancels all of one user's orders; the main thread kills the daemon meanwhile."""
    c = Conn()
    sent.set()
    try:
        s, v = c.call("POST", "/api/orders/cancel-all", {"user_id": u})
    except Gone:
        return
    if s == 200:
        for o in v:
            TOLD.cancel_answered(o["order_id"], o)


def stop_and_compare_stores(label):
    """A clean stop drains every mailbox and flushes the lane: the stores then agree."""
    r = agt("daemon", "stop")
    if r.returncode != 0:
        problem(f"{label}: agt daemon stop: {r.stderr}")
    agt_unix.stores_agree(home, problem, label)


def next_round(users, enable=True):
    """Resumes every symbol and all trading, and (enable) every user, so the next round trades."""
    for sym in SYMBOLS + [None]:
        ok("POST", "/api/risk/resume", {"symbol": sym} if sym else {})
        halts[sym] = (False, True)
    if enable:
        for u in users:
            ok("PUT", f"/api/users/{u}", {"status": "active"})
            settings[(u, "status")] = ("active", True)


def said(rnd, kind, n, o, t):
    print(f"round {rnd + 1} [{kind}]: {n} orders ({o} open), {t} trades, {len(told)} acknowledged, violations {len(problems)}", flush=True)


for rnd in range(args.rounds):
    stop = threading.Event()
    kind = rng.choice(args.kinds.split(","))
    if kind == "mass":
        # Thousands of one user's orders resting, then a cancel-all of them (done 500 at
        # a time between other commands) killed part way through.
        u = rng.choice(users)
        ok("POST", f"/api/users/{u}/deposits", {"asset": "USD", "amount": "400000"})
        ledger[(u, "USD")] += D("400000")
        for sym in SYMBOLS + [None]:
            ok("POST", "/api/risk/resume", {"symbol": sym} if sym else {})
            halts[sym] = (False, True)
        ok("PUT", f"/api/users/{u}", {"status": "active"})
        settings[(u, "status")] = ("active", True)

        def rest(n, r):
            c = Conn()
            for _ in range(n):
                try:
                    place(c, {"user_id": u, "symbol": r.choice(["AAPL", "AAPL-USD"]), "side": "buy", "quantity": "1",
                              "price": str(D(r.randint(9000, 9100)) / 100)})
                except Gone:
                    return
        fill = [threading.Thread(target=rest, args=(600, random.Random(rng.random()))) for _ in range(4)]
        [t.start() for t in fill]
        [t.join() for t in fill]
    threads = [threading.Thread(target=trader, args=(users, stop)) for _ in range(4)]
    threads += [threading.Thread(target=cashier, args=(users, stop)), threading.Thread(target=admin, args=(users, stop)),
                threading.Thread(target=reader, args=(users, stop))]
    for t in threads:
        t.start()
    wait = rng.randint(args.min_ms, args.max_ms) / 1000
    if kind == "mass":
        sent = threading.Event()
        threads.append(threading.Thread(target=mass_cancel, args=(u, sent)))
        threads[-1].start()
        sent.wait()
        wait = rng.randint(0, 150) / 1000
    if kind == "crash-then-kill":
        # A service crashes (the supervisor restarts it) while the orders flow.
        time.sleep(wait / 2)
        name = rng.choice(["risk", "orders", "trading", "audit", "market", "users", "notify"])
        s, v = Conn().call("POST", f"/api/services/{name}/crash")
        kind += f" ({name}: {s})"
        time.sleep(wait / 2)
    else:
        time.sleep(wait)
    if kind == "crash":
        # No kill: a service crashes and the supervisor restarts it while the orders
        # flow; the running daemon must agree with itself afterwards.
        names = ["risk", "orders", "trading", "audit", "market", "users"]
        before, crashed = agt_unix.restarts(Conn()), defaultdict(int)
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(names)
            s, v = Conn().call("POST", f"/api/services/{name}/crash")
            kind += f" {name}:{s}"
            crashed[name] += s == 202
            time.sleep(rng.randint(50, 400) / 1000)
        stop.set()
        for t in threads:
            t.join()
        if not agt_unix.wait_until_crashes_taken(Conn, before, crashed):
            problem(f"round {rnd + 1} ({kind}): the crashes were not all taken within 30 s")
        # More than supervisor.max_restarts in its window mark a service failed (as they
        # should; the lane's three count each other's): start it again, as an operator
        # would, so that the checks and the next rounds test something.
        s, v = Conn().call("GET", "/api/services")
        for x in v if s == 200 else []:
            if x.get("state") == "failed":
                counts["restarted by hand"] += 1
                Conn().call("POST", f"/api/services/{x['name']}/restart")
        agt_unix.wait_ready(Conn)
        n, o, t = check(users, f"round {rnd + 1} ({kind})")
        next_round(users)
        said(rnd, kind, n, o, t)
        continue
    if kind == "stop":
        # A graceful stop while the orders flow: no kill.
        stop_and_compare_stores(f"round {rnd + 1} (stopped under load)")
        for t in threads:
            t.join()
        start()
        n, o, t = check(users, f"round {rnd + 1} ({kind})")
        next_round(users, enable=False)
        said(rnd, kind, n, o, t)
        continue
    # Killed (in a stop's drain, or again in the start's recovery), then started: the
    # threads end on the kill (`Gone`).
    if args.bin != newer:
        print(f"upgrade: the daemon of {args.bin} is killed, {newer} starts it again", flush=True)
        args.bin = newer
    ended = agt_unix.kill_and_restart(args.bin, home, agt, kind, rng, threads)
    kills += ended.kills
    kind += " (it had already stopped)" if ended.had_stopped else " (no second pid)" if ended.no_second_pid else ""
    n, o, t = check(users, f"round {rnd + 1}")
    next_round(users)
    said(rnd, kind, n, o, t)

stop_and_compare_stores("the last round")
if args.bin != newer:
    # No round killed it: the upgrade comes after a clean stop instead.
    print(f"upgrade: the daemon of {args.bin} stopped cleanly, {newer} starts it again", flush=True)
    args.bin = newer
start()
n, o, t = check(users, "after a clean stop")
agt("daemon", "stop")
print(f"{kills} kills, {n} orders ({o} open), {t} trades, {dict(counts)}; {len(problems)} violations", flush=True)
sys.exit(problems.verdict())
