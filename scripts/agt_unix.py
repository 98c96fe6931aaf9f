"""What agt's drivers run by hand (`chaos.py`, `market-chaos.py`, `notify-chaos.py`,
`config-chaos.py`, `auth-chaos.py`, `disk-full.py`) share, so that each says only what it
does differently. Not a script.

- `Conn`, HTTP/1.1 over the daemon's Unix socket (Python's standard library has no client
  for one), and `connector`, a driver's `Conn()` for its daemon; `events`, the event
  stream read to its end; `ok` and `pid`.
- `Problems`, the one way a driver records and prints a violation and gives its verdict.
- `start` and `stores_agree`: a daemon started or the driver stops; the stopped stores
  against each other. `kill_and_restart`: how chaos.py's and market-chaos.py's `kill`,
  `kill-in-stop` and `kill-in-start` rounds end (`kill_in_start` the last one's second
  kill).
- The load of chaos.py and disk-full.py (`Told`, what their threads were told;
  `draw_order`, a trader's next order; `cashier`) and the checks they make of it after a
  kill or a full disk (`check_balances`, `check_acknowledged`, `check_holds`).

One request at a time per connection, kept open between them. A connection the daemon
drops mid-request (killed, stopping) raises `Gone`: whether the request took effect is
unknown, and each driver decides what that means for its ledger.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import defaultdict
from typing import NamedTuple
from decimal import Decimal


def ok(conn, method, path, body=None):
    """The answer to a request that must succeed; a driver cannot go on without it, so
    anything else stops it, saying what came back."""
    s, v = conn.call(method, path, body)
    if s >= 300:
        raise SystemExit(f"{method} {path} {body}: {s} {v}")
    return v


def pid(home):
    """The pid of the daemon running in `home`, as its `agtd.json` names it."""
    with open(f"{home}/agtd.json") as f:
        return json.load(f)["pid"]


class Problems:
    """A driver's violations: `problems(msg)` records one and prints it as `VIOLATION: msg`
    the moment it is found (from any thread), `len(problems)` counts them and a driver
    with any fails (`verdict()`). A run that finds thousands prints the first
    `print_at_most` (each cut to `width` characters) and says the rest are not printed;
    all are counted."""

    def __init__(self, print_at_most=None, width=None):
        self.lock = threading.Lock()
        self.found = []
        self.print_at_most, self.width = print_at_most, width

    def __call__(self, msg):
        with self.lock:
            self.found.append(msg)
            n = len(self.found)
        if self.print_at_most is None or n <= self.print_at_most:
            print("VIOLATION:", msg[:self.width] if self.width else msg, flush=True)
        elif n == self.print_at_most + 1:
            print(f"VIOLATION: ... (only the first {self.print_at_most} are printed)", flush=True)

    def __len__(self):
        return len(self.found)

    def verdict(self):
        """The driver's exit code: 1 if it found a violation, else 0."""
        return 1 if self.found else 0


class Gone(Exception):
    """The daemon went away mid-request: whether the request took effect is unknown."""


class Conn:
    """A kept-open connection to the daemon of `home`. `on_5xx(message)` is told of every
    answer of 500 or more but 503 (the answer of a service restarting or a daemon
    stopping), which agt promises never to give."""

    def __init__(self, home, on_5xx, timeout=60):
        self.on_5xx = on_5xx
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(f"{home}/agt.sock")
        except OSError as e:
            raise Gone() from e
        self.buf = b""

    def recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Gone()
        self.buf += chunk

    def call(self, method, path, body=None, ctype="application/json"):
        """(status, answer): JSON parsed, a list of events for an NDJSON stream (no
        Content-Length: read to its end), text for what is not JSON (`/metrics`). `body`
        is sent as JSON, or as it is when it is bytes (a CSV import)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: agt\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n"
        try:
            self.sock.sendall(head.encode() + data)
            while b"\r\n\r\n" not in self.buf:
                self.recv()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            status = int(head.split(b" ")[1])
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), None)
            if length is None:
                while True:
                    try:
                        self.recv()
                    except Gone:
                        break
                body, self.buf = self.buf, b""
                return status, [json.loads(l) for l in body.decode().splitlines() if l.strip()]
            while len(self.buf) < length:
                self.recv()
        except (OSError, socket.timeout) as e:
            raise Gone() from e
        body, self.buf = self.buf[:length], self.buf[length:]
        if status >= 500 and status != 503:
            self.on_5xx(f"{method} {path} {data[:200]!r} answered {status} {body[:300]!r}")
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode()


def connector(home, on_5xx, timeout=60):
    """A driver's `Conn()`: a new connection to the daemon of `home` each call, whose
    answers of 500 or more but 503 go to `on_5xx` (its `Problems`)."""
    return lambda: Conn(home, on_5xx, timeout)


def start(agt):
    """`agt daemon start` through the driver's own `agt(*args)` (its home, binary and
    environment); the driver cannot go on without a daemon, so a failed start stops it.
    Returns the finished process."""
    r = agt("daemon", "start")
    if r.returncode != 0:
        raise SystemExit(f"agt daemon start failed: {r.stderr}")
    return r


def wait_ready(connect, timeout=15):
    """Waits until `/ready` answers 200 (all services up after a restart or a crash), for
    `timeout` seconds at most; the checks that follow say what is wrong if it never does."""
    deadline = time.time() + timeout
    while connect().call("GET", "/ready")[0] != 200 and time.time() < deadline:
        time.sleep(0.02)


def kill_in_start(bin, home, victim, r):
    """After a SIGKILL of `victim`: `agt daemon start`, and a SIGKILL of the new daemon
    while it recovers (0-20 ms, drawn from `r`, after its pid shows). True if it was
    killed again; false if no new pid showed within 10 s or it was gone already."""
    starter = subprocess.Popen([bin, "--home", home, "daemon", "start"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, again = time.time() + 10, False
    while time.time() < deadline:
        try:
            if pid(home) != victim:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.001)
    time.sleep(r.randint(0, 20) / 1000)
    try:
        os.kill(pid(home), signal.SIGKILL)
        again = True
    except (ProcessLookupError, OSError, ValueError, KeyError):
        pass
    starter.wait()
    return again


class Killed(NamedTuple):
    """What `kill_and_restart` did, for the driver's round line and its count of kills."""

    kills: int  # SIGKILLs sent: 1, or 2 when kill-in-start killed the recovering daemon too
    had_stopped: bool  # the SIGKILL found the daemon gone (a kill-in-stop whose stop finished first)
    no_second_pid: bool  # kill-in-start: no new daemon showed to be killed while it recovered


def kill_and_restart(bin, home, agt, kind, r, threads, stop=None):
    """Ends a `kill`, `kill-in-stop` or `kill-in-start` round of chaos.py or market-chaos.py:
    SIGKILL of the daemon (for `kill-in-stop`, 0-30 ms after `agt daemon stop` began
    draining), then the round's `threads` joined (they end on `Gone`; with `stop`, set
    first, one between requests ends without trying the dead socket), for `kill-in-start`
    a start killed again while it recovers (`kill_in_start`), and a start through the
    driver's `agt` (`start`). The delays are drawn from `r` in the order the drivers drew
    them, so a seed replays the rounds it did before."""
    victim = pid(home)
    stopper = None
    if kind == "kill-in-stop":
        # A graceful stop, killed while it drains.
        stopper = subprocess.Popen([bin, "--home", home, "daemon", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(r.randint(0, 30) / 1000)
    try:
        os.kill(victim, signal.SIGKILL)
        had_stopped = False
    except ProcessLookupError:
        had_stopped = True
    # Counted as a kill either way, as the drivers always counted it.
    kills = 1
    if stop is not None:
        stop.set()
    for t in threads:
        t.join()
    if stopper is not None:
        stopper.wait()
    no_second_pid = False
    if kind == "kill-in-start" and not had_stopped:
        # Killed again while it recovers from the first kill.
        if kill_in_start(bin, home, victim, r):
            kills += 1
        else:
            no_second_pid = True
    start(agt)
    return Killed(kills, had_stopped, no_second_pid)


def stores_agree(home, problem, label=None):
    """After a clean stop (every mailbox drained, the lane flushed) the stores of `home`
    must agree: the open orders, the open holds and the resting orders are the same ids,
    and no order's saga is left unfinished. Read-only: the daemon must be stopped."""
    conns = []

    def db(name):
        conns.append(sqlite3.connect(f"file:{home}/data/{name}.db?mode=ro", uri=True))
        return conns[-1]

    try:
        open_rows = {r[0] for r in db("orders").execute("SELECT order_id FROM orders WHERE status IN ('new', 'partially_filled')")}
        hold_rows = {r[0] for r in db("risk").execute("SELECT order_id FROM holds WHERE open = 1")}
        rest_rows = {r[0] for r in db("trading").execute("SELECT order_id FROM resting")}
        unfinished = db("orders").execute("SELECT count(*) FROM orders WHERE stage <> 'done'").fetchone()[0]
    finally:
        for c in conns:
            c.close()
    if not (open_rows == hold_rows == rest_rows) or unfinished:
        said = f"{label}: " if label else ""
        problem(f"{said}stopped stores disagree: open {len(open_rows)}, holds {len(hold_rows)}, resting {len(rest_rows)}, unfinished {unfinished}")


def events(home, query, timeout=60):
    """(status line, events) of `GET /api/events?query` over HTTP/1.0, whose stream ends
    with the connection; the events are [] and the status line says why when it is not
    a 200."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(f"{home}/agt.sock")
    sock.sendall(f"GET /api/events?{query} HTTP/1.0\r\nHost: agt\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    sock.close()
    if b"\r\n\r\n" not in data:
        # The daemon went (a kill) before its answer's head was whole.
        return f"no answer: the connection closed after {len(data)} bytes", []
    head, body = data.split(b"\r\n\r\n", 1)
    line = head.split(b"\r\n")[0].decode()
    if " 200 " not in line:
        return f"{line} {body[:200]!r}", []
    return line, [json.loads(l) for l in body.decode().splitlines() if l.strip()]


def check_balances(conn, users, ledger, net, held, uncertain, problem, label, may_go_below_zero=lambda asset: False):
    """Each user's balances against a driver's ledger, as chaos.py and disk-full.py check
    them: available = total - held and none of them below zero (unless
    `may_go_below_zero(asset)`: short sales), held = what the open orders need (`held`,
    by (user, asset)), total = deposits - withdrawals (`ledger`) + what fills moved
    (`net`). Deposits and withdrawals whose answer never came (`uncertain`: (user,
    asset, signed amount)) count as done where exactly such a subset makes a total add
    up; those move into `ledger`. Returns each asset's total over the users, and the
    unanswered ones found done; the caller empties `uncertain`."""
    from decimal import Decimal as D
    totals, resolved = {}, []
    for u in users:
        _, acct = conn.call("GET", f"/api/users/{u}/account")
        seen = set()
        for b in acct["balances"]:
            a, t, h, av = b["asset"], D(b["total"]), D(b["held"]), D(b["available"])
            seen.add(a)
            totals[a] = totals.get(a, D(0)) + t
            if av != t - h or h < 0 or (av < 0 or t < 0) and not may_go_below_zero(a):
                problem(f"{label}: {u} {a}: total {t} held {h} available {av}")
            if h != held[(u, a)]:
                problem(f"{label}: {u} {a} held {h}, open orders need {held[(u, a)]}")
            rest = t - ledger[(u, a)] - net[(u, a)]
            mine = [x for x in uncertain if x[0] == u and x[1] == a]
            match = None
            for mask in range(1 << len(mine)):
                pick = [mine[j] for j in range(len(mine)) if mask >> j & 1]
                if sum((x[2] for x in pick), D(0)) == rest:
                    match = pick
                    break
            if match is None:
                problem(f"{label}: {u} {a}: total {t} != deposits - withdrawals {ledger[(u, a)]} + fills {net[(u, a)]} (off by {rest}; unanswered {mine})")
            else:
                resolved += match
        for (uu, a), v in list(ledger.items()) + list(net.items()):
            if uu == u and a not in seen and v != 0:
                problem(f"{label}: {u} has no {a} balance, expected {ledger[(u, a)] + net[(u, a)]}")
    for x in resolved:
        ledger[(x[0], x[1])] += x[2]
    return totals, resolved


FINAL = {"filled", "cancelled", "rejected", "expired"}
RANK = {"new": 0, "partially_filled": 1}


class Told:
    """What a load driver's threads were told, for the checks after a kill or a full disk
    (`check_acknowledged`, `check_balances`); shared by chaos.py and disk-full.py, whose
    traders and cashiers keep it alike. Change it under `lock`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ledger = defaultdict(Decimal)  # (user, asset) -> acknowledged deposits - withdrawals
        self.uncertain = []  # (user, asset, signed amount) whose answer never came
        self.orders = {}  # order_id -> the most advanced view of the order we were told
        self.cancelled = set()  # acknowledged cancels

    def remember(self, o):
        """Keeps the most advanced answer seen for an order (ignores what is not one)."""
        if not isinstance(o, dict) or "order_id" not in o:
            return
        with self.lock:
            old = self.orders.get(o["order_id"])
            if old is None or Decimal(o["filled_quantity"]) > Decimal(old["filled_quantity"]) or (o["status"] in FINAL and old["status"] not in FINAL):
                self.orders[o["order_id"]] = o

    def cancel_answered(self, order_id, o):
        """A cancel of `order_id` answered 200 with `o`: it must stay cancelled."""
        self.remember(o)
        with self.lock:
            self.cancelled.add(order_id)


def draw_order(r, users, symbols):
    """A trader's next order terms, drawn from `r`: (user, symbol, side, quantity,
    limit price). Quantities of 1-5 (0.0001-0.005 on BTC-USD); most limit prices rest
    (buys below 100, sells above) and some cross."""
    u, sym = r.choice(users), r.choice(symbols)
    side = r.choice(["buy", "sell"])
    qty = str(r.randint(1, 5)) if sym != "BTC-USD" else str(Decimal(r.randint(1, 50)) / 10000)
    lo, hi = (9400, 10050) if side == "buy" else (9950, 10600)
    px = str(Decimal(r.randint(lo, hi)) / 100)
    return u, sym, side, qty, px


def limit_order(r, u, sym, side, qty, px):
    """The body of a limit order on these terms, its time in force drawn from `r` (mostly
    gtc, some ioc and fok)."""
    return {"user_id": u, "symbol": sym, "side": side, "quantity": qty, "price": px,
            "time_in_force": r.choice(["gtc", "gtc", "gtc", "ioc", "fok"])}


def trader(conn, r, users, symbols, stop, act):
    """A trader until `stop` or the daemon goes: each turn draws an order's terms
    (`draw_order`), then k in [0, 1), and `act(conn, r, k, user, symbol, side, quantity,
    price)` does what k picks (place, cancel, amend: each driver its own mix)."""
    while not stop.is_set():
        terms = draw_order(r, users, symbols)
        k = r.random()
        try:
            act(conn, r, k, *terms)
        except Gone:
            return


def cashier(conn, r, users, stop, told, counts, all_in=False, refused=lambda s, v: None):
    """A cashier until `stop` or the daemon goes: deposits and withdrawals of USD, AAPL
    and BTC, each booked in `told` (its ledger once acknowledged, as uncertain when the
    answer never came); `refused(status, answer)` is told of every other answer. With
    `all_in`, half the withdrawals take all a user has available of one asset, racing
    the traders' holds on the same money."""
    while not stop.is_set():
        u, asset = r.choice(users), r.choice(["USD", "USD", "AAPL", "BTC"])
        amount = Decimal(r.randint(1, 100000)) / 100 if asset != "BTC" else Decimal(r.randint(1, 10000)) / 10000
        route = r.choice(["deposits", "deposits", "withdrawals"])
        sign = 1 if route == "deposits" else -1
        try:
            if all_in and route == "withdrawals" and r.random() < 0.5:
                s, acct = conn.call("GET", f"/api/users/{u}/account")
                have = [b for b in acct["balances"] if Decimal(b["available"]) > 0] if s == 200 else []
                if have:
                    b = r.choice(have)
                    asset, amount = b["asset"], Decimal(b["available"])
            s, v = conn.call("POST", f"/api/users/{u}/{route}", {"asset": asset, "amount": str(amount)})
            counts[route] += 1
        except Gone:
            with told.lock:
                told.uncertain.append((u, asset, sign * amount))
            return
        if s < 300:
            with told.lock:
                told.ledger[(u, asset)] += sign * amount
        else:
            refused(s, v)
        time.sleep(0.005)


def check_acknowledged(orders, told, told_cancelled, problem, label):
    """Every order the daemon acknowledged (`told`: id to the order as answered) against
    `orders` (id to the order as read back): it exists, with no fill lost, a final status
    kept and an open one no less advanced; an acknowledged cancel (`told_cancelled`)
    stays cancelled. As chaos.py and disk-full.py check them."""
    from decimal import Decimal as D
    for oid, was in list(told.items()):
        now = orders.get(oid)
        if now is None:
            problem(f"{label}: acknowledged order {oid} is gone: {was}")
            continue
        if D(now["filled_quantity"]) < D(was["filled_quantity"]):
            problem(f"{label}: {oid} lost fills: told {was['filled_quantity']}, now {now['filled_quantity']}")
        if was["status"] in FINAL and now["status"] != was["status"]:
            problem(f"{label}: {oid} was {was['status']}, now {now['status']}")
        if was["status"] not in FINAL and now["status"] not in FINAL and RANK[now["status"]] < RANK[was["status"]]:
            problem(f"{label}: {oid} went back from {was['status']} to {now['status']}")
        now_fills = {f["trade_id"] for f in now["fills"]}
        for f in was.get("fills", []):
            if f["trade_id"] not in now_fills:
                problem(f"{label}: {oid} lost fill {f}")
    for oid in told_cancelled:
        if oid in orders and orders[oid]["status"] != "cancelled":
            problem(f"{label}: acknowledged cancel of {oid}, now {orders[oid]['status']}")


def check_holds(conn, orders, base, problem, label, short=False):
    """The holds (`/api/risk/holds`) against the orders (id to order as read back): each
    open order holds exactly what it needs (remaining x price of USD for a buy, the
    remaining quantity of its symbol's base asset, `base[symbol]`, for a sell; with
    `short`, a sell holds only what was available, the rest sold short) and no other
    order holds anything. Returns the open orders and what they hold by (user, asset),
    for `check_balances`."""
    _, holds = conn.call("GET", "/api/risk/holds")
    open_orders = {i: o for i, o in orders.items() if o["status"] not in FINAL}
    by_order = defaultdict(list)
    for h in holds:
        by_order[h["order_id"]].append(h)
    for i in set(by_order) - set(open_orders):
        problem(f"{label}: hold without an open order: {by_order[i]} ({orders.get(i, {}).get('status')})")
    held = defaultdict(Decimal)
    for i, o in open_orders.items():
        hs = by_order.get(i, [])
        if short and o["side"] == "sell":
            want = (base[o["symbol"]], min(Decimal(o["remaining_quantity"]), sum((Decimal(h["amount"]) for h in hs), Decimal(0))))
        elif o["side"] == "buy":
            want = ("USD", Decimal(o["remaining_quantity"]) * Decimal(o["price"]))
        else:
            want = (base[o["symbol"]], Decimal(o["remaining_quantity"]))
        got = [(h["asset"], Decimal(h["amount"])) for h in hs]
        if got != [want]:
            problem(f"{label}: open order {i} ({o['side']} {o['remaining_quantity']} @ {o['price']}) holds {got}, needs {want}")
        for h in hs:
            held[(o["user_id"], h["asset"])] += Decimal(h["amount"])
    return open_orders, held


# The trading lane's services share one thread: a crash of any of them restarts all three,
# and each one's count of restarts goes up with every one of those crashes.
LANE = ("risk", "orders", "trading")


def restarts(conn):
    """name -> (restarts, state), from `GET /api/services`; {} when it does not answer."""
    s, v = conn.call("GET", "/api/services")
    return {x["name"]: (x["restarts"], x["state"]) for x in v} if s == 200 else {}


def wait_until_crashes_taken(connect, before, crashed, timeout=30):
    """Waits until every crash the daemon accepted has been taken: `crashed` counts the
    202s per service name, `before` is `restarts()` from before the first of them. A 202
    only says the crash was queued, behind whatever the service's mailbox held: `/ready`
    can answer 200 before the service takes it, and checks run then meet the service going
    down under them (503s that say nothing about what the checks look for). A service
    marked `failed` (too many restarts) counts as taken. False on timeout."""
    want = {}
    for name, n in crashed.items():
        key = LANE if name in LANE else (name,)
        for k in key:
            want[k] = want.get(k, 0) + n
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = restarts(connect())
        if now and all(now[k][1] == "failed" or now[k][0] >= before.get(k, (0, ""))[0] + n for k, n in want.items()):
            return True
        time.sleep(0.02)
    return False
