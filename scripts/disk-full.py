#!/usr/bin/env python3
"""What agt does when its disk fills up: mixed load on a home on a small tmpfs until its
writes fail, a while on the full disk, then room again; and restarts on the full disk.

Usage (as root: it mounts a tmpfs): scripts/disk-full.py [--bin target/release/agt]
       [--size-mb 40] [--full-s 6] [--seed N] [--keep]

Python 3, stdlib only; needs a release build (`cargo build --release`). It mounts a
tmpfs of --size-mb on a fresh directory (and unmounts it at the end; --keep leaves it),
makes the home there, starts the daemon with `agt daemon start`, makes eight funded
users, then fills the tmpfs with a ballast file but for a few MB. Over six connections
to the socket: three traders place limit orders (crossing and resting, gtc/ioc/fok) and
market orders, cancel and amend; a cashier deposits and withdraws; an admin makes users
and tokens and sets `risk.max_order_notional` (`agt config set`). Rounds:

1. `fill`: load until writes are refused, then --full-s more seconds on the full disk;
   then the load stops and the daemon idles on the full disk (its CPU is measured);
   `/ready`, `agt health` and a CLI deposit are asked; then the tmpfs grows
   (`mount -o remount,size=...`) and the daemon must take a placement within 10 s,
   with no restart;
2. `stop-on-full`: fill again, `agt daemon stop` on the full disk, `agt daemon start` on
   the full disk (it must start, or refuse with a message, not hang), grow, start;
3. `kill-on-full`: fill again under load, SIGKILL on the full disk, grow, start.

It checks, after each round (as chaos.py does for kills):

- every order answered 201/200 exists with a status at least as advanced and no less
  filled; an acknowledged cancel stays cancelled;
- per user and asset: total = acknowledged deposits - withdrawals + what fills moved
  (a request whose answer never came may count or not); available = total - held;
  holds are exactly the open orders (remaining x price of USD for a buy, remaining of
  the base asset for a sell);
- every refusal is a clear one: a 4xx, or 503 with a code and a message naming the
  full disk; never another 5xx, never a request that hangs past 40 s; the CLI exits 1
  with a message;
- the daemon stays up and idles on the full disk (under 20 % of a core), `/ready` and
  `agt health` say it is degraded while writes fail, and `logs/daemon.out` and the day's
  log do not repeat the failure thousands of times;
- once space is back it takes writes within 10 s by itself, `GET /api/audit/verify` is
  ok, and at the end the stopped stores agree (open orders = open holds = resting
  orders, no saga unfinished).

Prints each round and every violation; exits 1 if there was one. Takes about a minute.
Never run by `cargo test`; the bugs it found have short deterministic versions in
`tests/it/` (fault injection of ENOSPC, no root needed).
"""
import argparse, os, random, signal, subprocess, sys, tempfile, threading, time
from collections import defaultdict
from decimal import Decimal as D

import agt_unix  # scripts/agt_unix.py: HTTP over the daemon's socket
from agt_unix import Gone

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--size-mb", type=int, default=40)
ap.add_argument("--full-s", type=float, default=6)
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--keep", action="store_true", help="leave the tmpfs mounted (and the daemon stopped) at the end")
args = ap.parse_args()
args.bin = os.path.abspath(args.bin)
rng = random.Random(args.seed)
mnt = tempfile.mkdtemp(prefix="agt-diskfull-")
r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size_mb}m", "tmpfs", mnt], capture_output=True, text=True)
if r.returncode != 0:
    print(f"cannot mount a tmpfs ({r.stderr.strip()}): run as root", flush=True)
    sys.exit(2)
home = f"{mnt}/home"
os.makedirs(home)
with open(f"{home}/agt.toml", "w") as f:
    f.write('[http]\nlisten = ""\n[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\n')
print(f"home {home} on a {args.size_mb} MB tmpfs, seed {args.seed}, binary {args.bin}", flush=True)

BASE = {"AAPL": "AAPL", "BTC-USD": "BTC"}
SYMBOLS = list(BASE)
FINAL = agt_unix.FINAL
# A full disk can fail thousands of requests alike: the first 30 are printed, all counted.
problems = agt_unix.Problems(print_at_most=30, width=600)
problem = problems  # records and prints a violation
refusals = defaultdict(int)  # (status, code) -> how many
messages = {}  # (status, code) -> one message
lock = threading.Lock()


class Conn(agt_unix.Conn):
    """A connection to this run's daemon that also counts every refusal by (status,
    code), and takes an answer slower than 40 s, or a refusal without an error body or a
    503 without a message, for a violation."""

    def __init__(self):
        super().__init__(home, problem, timeout=40)

    def call(self, method, path, body=None, ctype="application/json"):
        t = time.time()
        try:
            s, v = super().call(method, path, body, ctype)
        except Gone:
            if time.time() - t > 39:
                problem(f"{method} {path}: no answer in 40 s")
            raise
        if s >= 400 and isinstance(v, dict) and "error" in v:
            key = (s, v["error"]["code"])
            with lock:
                refusals[key] += 1
                messages.setdefault(key, v["error"]["message"])
            if s == 503 and not v["error"].get("message"):
                problem(f"{method} {path}: 503 without a message")
        elif s >= 400:
            problem(f"{method} {path}: {s} without an error body: {v!r:.200}")
        return s, v


def agt(*a, timeout=60):
    try:
        return subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        problem(f"agt {' '.join(a)}: no exit in {timeout} s")
        return subprocess.CompletedProcess(a, -1, "", "timeout")


def ok(method, path, body=None):
    return agt_unix.ok(Conn(), method, path, body)


def pid():
    return agt_unix.pid(home)


def free_mb():
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize / 2**20


BALLAST = f"{mnt}/ballast"


def fill(leave_mb):
    """Fills the tmpfs with ballast but for `leave_mb`."""
    with open(BALLAST, "ab") as f:
        chunk = b"\0" * 2**20
        while free_mb() > leave_mb + 1:
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break


size_now = args.size_mb


def grow(mb):
    """More room, without touching the daemon: the tmpfs grows by `mb`."""
    global size_now
    size_now += mb
    r = subprocess.run(["mount", "-o", f"remount,size={size_now}m", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"remount: {r.stderr}")


# --- what the script was told -------------------------------------------------------
TOLD = agt_unix.Told()  # the acknowledged orders, cancels and cash, and the cash whose answer never came
ledger, uncertain, told, told_cancelled = TOLD.ledger, TOLD.uncertain, TOLD.orders, TOLD.cancelled
remember = TOLD.remember
counts = defaultdict(int)
writes_refused = threading.Event()


def refused(s, v):
    """Notes a refusal of a write; a 503 must say the disk is full."""
    if s == 503:
        writes_refused.set()
        counts["503"] += 1
        return True
    return False


def trader(users, stop):
    r = random.Random(rng.random())
    agt_unix.trader(Conn(), r, users, SYMBOLS, stop, trade)


def trade(c, r, k, u, sym, side, qty, px):
    """One turn of a trader (`agt_unix.trader`): what k picks, on these terms."""
    if k < 0.55:
        s, o = c.call("POST", "/api/orders", agt_unix.limit_order(r, u, sym, side, qty, px))
        counts["place"] += 1
        refused(s, o) or remember(o)
    elif k < 0.65:
        s, o = c.call("POST", "/api/orders", {"user_id": u, "symbol": sym, "side": side, "quantity": qty, "type": "market"})
        counts["market"] += 1
        refused(s, o) or remember(o)
    else:
        s, v = c.call("GET", f"/api/orders?user_id={u}&status=open&limit=100")
        ids = [o["order_id"] for o in v] if s == 200 else []
        if not ids:
            return
        i = r.choice(ids)
        if k < 0.8:
            s, o = c.call("DELETE", f"/api/orders/{i}")
            counts["cancel"] += 1
            if not refused(s, o) and s == 200:
                TOLD.cancel_answered(i, o)
        else:
            s, o = c.call("PATCH", f"/api/orders/{i}", r.choice([{"price": px}, {"quantity": str(r.randint(1, 8))}]))
            counts["amend"] += 1
            refused(s, o) or remember(o)


def cashier(users, stop):
    r = random.Random(rng.random())
    agt_unix.cashier(Conn(), r, users, stop, TOLD, counts, refused=refused)


tag = f"{args.seed % 100000}"
made = iter(range(10**9))


def admin(users, stop):
    r = random.Random(rng.random())
    c = Conn()
    while not stop.is_set():
        k = r.random()
        try:
            if k < 0.4:
                n = next(made)
                s, v = c.call("POST", "/api/users", {"username": f"df{tag}x{n}", "email": f"df{tag}x{n}@example.com"})
                counts["user"] += 1
            elif k < 0.7:
                s, v = c.call("POST", "/api/tokens", {"name": f"t{next(made)}", "role": "viewer"})
                counts["token"] += 1
            else:
                s, v = c.call("PUT", "/api/config", {"risk.max_order_notional": str(r.randint(10**6, 10**7))})
                counts["config"] += 1
            if s >= 300:
                refused(s, v)
        except Gone:
            return
        time.sleep(0.02)


def all_orders(c, u):
    s, v = c.call("GET", f"/api/orders?user_id={u}&status=all&limit=10000")
    if s != 200:
        problem(f"GET /api/orders of {u}: {s} {v}")
        return []
    return v


def check(users, label):
    c = Conn()
    orders = {}
    for u in users:
        for o in all_orders(c, u):
            orders[o["order_id"]] = o
    agt_unix.check_acknowledged(orders, told, told_cancelled, problem, label)
    net = defaultdict(D)
    for o in orders.values():
        base = BASE[o["symbol"]]
        for f in o["fills"]:
            sign = 1 if o["side"] == "buy" else -1
            net[(o["user_id"], base)] += sign * D(f["quantity"])
            net[(o["user_id"], "USD")] -= sign * D(f["quantity"]) * D(f["price"])
    open_orders, held = agt_unix.check_holds(c, orders, BASE, problem, label)
    agt_unix.check_balances(c, users, ledger, net, held, uncertain, problem, label)
    uncertain.clear()
    s, v = c.call("GET", "/api/audit/verify")
    if s != 200 or not v.get("ok"):
        problem(f"{label}: audit verify: {s} {v}")
    return len(orders), len(open_orders)


def cpu_seconds(p):
    with open(f"/proc/{p}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(users):
    stop = threading.Event()
    threads = [threading.Thread(target=trader, args=(users, stop)) for _ in range(3)]
    threads += [threading.Thread(target=cashier, args=(users, stop)), threading.Thread(target=admin, args=(users, stop))]
    for t in threads:
        t.start()
    return stop, threads


def until_refused(limit_s=120):
    writes_refused.clear()
    t = time.time()
    while not writes_refused.is_set() and time.time() - t < limit_s:
        time.sleep(0.05)
    if not writes_refused.is_set():
        raise SystemExit(f"no write was refused in {limit_s} s on a disk with {free_mb():.1f} MB free")
    return time.time() - t


def full_under_load(before_stop=lambda: None):
    """Rounds 2 and 3: the disk filled again but for 3 MB, the load until a write is
    refused and a second more of it on the full disk; then `before_stop()` (a SIGKILL
    while the load still runs) and the load stops."""
    fill(leave_mb=3)
    stop, threads = load(users)
    until_refused()
    time.sleep(1)
    before_stop()
    stop.set()
    for t in threads:
        t.join()


def disk_refusals_named():
    """Every 503 seen must name the full disk (or a service restarting)."""
    for (s, code), n in refusals.items():
        if s == 503 and "disk" not in messages[(s, code)].lower() and "space" not in messages[(s, code)].lower():
            problem(f"{n} answers of 503 {code} do not say the disk is full: {messages[(s, code)]!r}")


def log_lines():
    n = 0
    for d in ("logs",):
        for name in os.listdir(f"{home}/{d}"):
            with open(f"{home}/{d}/{name}", errors="replace") as f:
                n += sum(1 for l in f if "ERROR" in l or "WARN" in l)
    return n


def start():
    r = agt("daemon", "start")
    if r.returncode != 0:
        problem(f"agt daemon start: exit {r.returncode}: {r.stderr.strip()[:300]}")
    return r


def resumes(label):
    """Once there is room again a placement goes through within 10 s, with no restart."""
    t = time.time()
    c = Conn()
    while time.time() - t < 10:
        s, v = c.call("POST", "/api/users/%s/deposits" % users[0], {"asset": "USD", "amount": "1"})
        if s == 201 or s == 200:
            ledger[(users[0], "USD")] += 1
            s2, o = c.call("POST", "/api/orders", {"user_id": users[0], "symbol": "AAPL", "side": "buy", "quantity": "1", "price": "90"})
            # A 4xx (the price band, say) came from the lane too: it takes writes.
            if s2 < 500:
                remember(o)
                took = time.time() - t
                while Conn().call("GET", "/ready")[0] != 200 and time.time() - t < 10:
                    time.sleep(0.1)
                if Conn().call("GET", "/ready")[0] != 200:
                    problem(f"{label}: writes go through but /ready is not 200")
                print(f"{label}: took writes again {took:.2f} s after the disk grew", flush=True)
                return took
        time.sleep(0.1)
    problem(f"{label}: no write went through 10 s after the disk grew: {s} {v}")
    return None


# --- setup ------------------------------------------------------------------------------
start()
users = [ok("POST", "/api/users", {"username": f"df{tag}u{i}", "email": f"df{tag}u{i}@example.com"})["user_id"] for i in range(8)]
for u in users:
    for asset, amount in (("USD", D("50000")), ("AAPL", D("500")), ("BTC", D("2"))):
        ok("POST", f"/api/users/{u}/deposits", {"asset": asset, "amount": str(amount)})
        ledger[(u, asset)] += amount
fill(leave_mb=4)
print(f"ballast in: {free_mb():.1f} MB free", flush=True)

# --- round 1: fill, stay full, idle, grow -------------------------------------------
stop, threads = load(users)
took = until_refused()
print(f"round 1: first refusal after {took:.1f} s ({free_mb():.1f} MB free)", flush=True)
time.sleep(args.full_s)
stop.set()
for t in threads:
    t.join()
alive = pid()
try:
    os.kill(alive, 0)
except ProcessLookupError:
    problem("round 1: the daemon died on the full disk")
logs_before = log_lines()
c0 = cpu_seconds(alive)
time.sleep(3)
idle = (cpu_seconds(alive) - c0) / 3
print(f"round 1: idle on the full disk: {idle * 100:.1f} % of a core", flush=True)
if idle > 0.2:
    problem(f"round 1: the daemon spins on the full disk: {idle * 100:.0f} % of a core while idle")
s, ready = Conn().call("GET", "/ready")
h = agt("health")
print(f"round 1: /ready {s}; agt health exit {h.returncode}: {h.stdout.strip()[:400]}", flush=True)
d = agt("user", "deposit", users[1], "USD", "5")
print(f"round 1: CLI deposit on the full disk: exit {d.returncode}: {(d.stderr or d.stdout).strip()[:300]}", flush=True)
if d.returncode == 0:
    ledger[(users[1], "USD")] += 5
elif d.returncode != 1 or not d.stderr.strip():
    problem(f"round 1: CLI deposit on the full disk exit {d.returncode}: {d.stderr!r}")
logs_after = log_lines()
print(f"round 1: warnings and errors logged: {logs_before} under load, {logs_after - logs_before} more while idle", flush=True)
if logs_after - logs_before > 50:
    problem(f"round 1: {logs_after - logs_before} warnings/errors logged in 3 s of idling on the full disk")
grow(200)
resumes("round 1")
n, o = check(users, "round 1")
print(f"round 1: {n} orders ({o} open), {len(told)} acknowledged, refusals {dict(refusals)}, violations {len(problems)}", flush=True)

# --- round 2: stop on the full disk, start on it -------------------------------------
full_under_load()
t = time.time()
r = agt("daemon", "stop")
print(f"round 2: agt daemon stop on the full disk: exit {r.returncode} in {time.time() - t:.1f} s {r.stderr.strip()[:200]}", flush=True)
if r.returncode != 0:
    problem(f"round 2: agt daemon stop on the full disk: {r.returncode} {r.stderr.strip()[:300]}")
t = time.time()
r = agt("daemon", "start")
print(f"round 2: agt daemon start on the full disk: exit {r.returncode} in {time.time() - t:.1f} s: {(r.stderr or r.stdout).strip()[:300]}", flush=True)
if r.returncode == 0:
    s, v = Conn().call("GET", "/ready")
    print(f"round 2: started on the full disk, /ready {s}", flush=True)
    grow(200)
    resumes("round 2")
else:
    if not r.stderr.strip():
        problem("round 2: start on the full disk failed without a message")
    grow(200)
    start()
n, o = check(users, "round 2")
print(f"round 2: {n} orders ({o} open), {len(told)} acknowledged, violations {len(problems)}", flush=True)

# --- round 3: SIGKILL on the full disk ------------------------------------------------
full_under_load(lambda: os.kill(pid(), signal.SIGKILL))
time.sleep(0.2)
r = agt("daemon", "start")
print(f"round 3: start after SIGKILL on the full disk: exit {r.returncode}: {(r.stderr or r.stdout).strip()[:300]}", flush=True)
grow(200)
if r.returncode == 0 or "start_timeout" in r.stderr:
    # Started, or not ready within the start's wait but still running, waiting for room
    # (its recovery has to write): either way it must take writes by itself now.
    resumes("round 3")
else:
    start()
n, o = check(users, "round 3")
print(f"round 3: {n} orders ({o} open), {len(told)} acknowledged, violations {len(problems)}", flush=True)

# --- the end: stopped stores agree --------------------------------------------------
r = agt("daemon", "stop")
agt_unix.stores_agree(home, problem)
disk_refusals_named()
print(f"refusals: " + ", ".join(f"{s} {c} x{n}: {messages[(s, c)]!r}" for (s, c), n in sorted(refusals.items())), flush=True)
print(f"{dict(counts)}; {len(problems)} violations", flush=True)
if not args.keep:
    if os.path.exists(f"{home}/agtd.json"):
        agt("daemon", "stop")
    subprocess.run(["umount", mnt])
    os.rmdir(mnt)
sys.exit(problems.verdict())
