#!/usr/bin/env python3
"""Soak: does a long-running daemon grow without bound under a steady mixed load?

Usage: scripts/soak.py [--minutes 30] [--warmup 5] [--sample 30] [--bin target/release/agt]
       [--home NEW_DIR] [--rate 300] [--seed N] [--csv FILE]

Python 3, stdlib only; needs a release build (`cargo build --release`). Not run by
`cargo test`: it takes as long as --minutes says. It makes a fresh home (a temporary
one unless --home), turns TCP on (127.0.0.1, port 0), starts the daemon with
`agt daemon start`, and for --minutes runs at once:

- traders (about --rate requests a second in all, over the socket): limit orders that
  cross and that rest, market and IOC orders, cancels, amends, cancel-alls, on AAPL and
  BTC-USD, by the users of a sliding window;
- a churner: a new user every 2 s (created, funded), the oldest beyond the window
  cancelled out and disabled: many users come and go;
- a token churner: a trader token created, used over TCP, revoked; and a request with
  a token that is not one (a refusal audit keeps within its bounds);
- followers of `GET /api/events?follow=true` (from the last 100 events, or a
  quarter of them from the first kept), NDJSON and SSE, over the socket and TCP: some
  read for a while then hang up, some never read a byte, some hang up at once;
- webhooks: a rule to a local receiver (answers 200), one to a port nobody listens on
  (retried, then given up), and a rule added and removed every 30 s;
- TCP connections that open and close without a request, or after half a request;
- a poller that asks the GET routes the TUI asks, once a second.

Every --sample seconds it records the daemon's RSS (`/proc/PID/status` VmRSS),
open fds (`/proc/PID/fd`), threads, each thread's CPU time (by thread name; the time of
threads that exited since is a series of its own, `(exited threads)`), the size
of every file under `data/`, and the gauges of `/metrics`. At the end it stops the
load, waits until the daemon is idle again (the drain), samples once more, and
reports for each series its value after the warm-up, at the end of the load and after
the drain, and its growth per 10 minutes (a least-squares slope over the samples after
--warmup), and per 1,000 closed connections/followers and per 1,000 orders. It flags:

- GROWS: a series whose slope would add more than 5 % of its post-warm-up value (and
  more than a small absolute floor) per 10 minutes;
- NOT BACK: a series of per-connection state (fds, threads, active_connections) that
  the drain does not bring back near its value before the load began. The descriptors
  open after the drain and not before are listed by what they are (a file, a socket by
  kind): files of data/ opened once (a store's log, by its checkpointer) do not count.

Files that hold history by design (orders.db, audit.db, market.db, the audit
journal up to audit's pruning, events.db up to `events.retain_s`) grow with the
orders; the report says so next to them rather than flagging them. Exits 1 if anything
was flagged that is not such a file. The daemon is stopped at the end; the home is
kept (its path is printed) with `soak.csv`, one row per sample.
"""
import argparse, csv, http.server, json, os, random, re, socket, subprocess, sys, tempfile, threading, time
from collections import defaultdict

ap = argparse.ArgumentParser()
ap.add_argument("--minutes", type=float, default=30)
ap.add_argument("--warmup", type=float, default=5, help="minutes before the growth is measured")
ap.add_argument("--sample", type=float, default=30, help="seconds between samples")
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--rate", type=float, default=300, help="trader requests a second, in all")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--csv")
ap.add_argument("--report", metavar="CSV", help="only print the report of an earlier run's soak.csv")
args = ap.parse_args()
rng = random.Random(args.seed)
home = args.home or (None if args.report else tempfile.mkdtemp(prefix="agt-soak-"))
if not args.report:
    os.makedirs(home, exist_ok=True)
    with open(f"{home}/agt.toml", "w") as f:
        f.write('[http]\nlisten = "127.0.0.1:0"\n[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\n')
    print(f"home {home}, seed {args.seed}, binary {args.bin}", flush=True)

counts = defaultdict(int)  # what the load did, for the report
clock = threading.Lock()


def count(k, n=1):
    with clock:
        counts[k] += n


class Conn:
    """A keep-alive HTTP/1.1 connection to the socket (admin) or to TCP (with a token)."""

    def __init__(self, token=None, timeout=30):
        if token is None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(f"{home}/agt.sock")
        else:
            self.sock = socket.create_connection(tcp_addr(), timeout=timeout)
        self.token, self.buf = token, b""

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        head = f"{method} {path} HTTP/1.1\r\nHost: agt\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        self.sock.sendall(head.encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self.recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ")[1])
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
        while len(self.buf) < length:
            self.recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        count(f"status {status // 100}xx")
        if status >= 500 and status != 503:
            print(f"! {method} {path} answered {status}: {body[:200]!r}", flush=True)
        try:
            return status, json.loads(body) if body else None
        except ValueError:  # /metrics
            return status, body.decode()

    def recv(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def close(self):
        self.sock.close()


def agt(*a):
    return subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True)


def daemon():
    with open(f"{home}/agtd.json") as f:
        return json.load(f)


def tcp_addr():
    host, port = daemon()["http"].rsplit(":", 1) if isinstance(daemon().get("http"), str) else (None, None)
    return host, int(port)


def ok(method, path, body=None, c=None):
    c = c or Conn()
    s, v = c.call(method, path, body)
    if s >= 300:
        raise SystemExit(f"{method} {path}: {s} {v}")
    return v


# --- the load -----------------------------------------------------------------------
stop = threading.Event()
users = []  # the live window of users traders pick from
ulock = threading.Lock()
next_n = iter(range(10**9))
SYMBOLS = {"AAPL": ("1", 9000, 11000, 100), "BTC-USD": ("0.001", 2900000, 3100000, 100)}


def new_user(c):
    n = next(next_n)
    u = ok("POST", "/api/users", {"username": f"soak{args.seed % 10000}u{n}", "email": f"u{n}@soak.test"}, c)["user_id"]
    ok("POST", f"/api/users/{u}/deposits", {"asset": "USD", "amount": "10000000"}, c)
    ok("POST", f"/api/users/{u}/deposits", {"asset": "AAPL", "amount": "100000"}, c)
    ok("POST", f"/api/users/{u}/deposits", {"asset": "BTC", "amount": "1000"}, c)
    return u


def guarded(fn):
    """Runs a worker until the stop, reconnecting after a failure (and counting it)."""
    def run(*a):
        while not stop.is_set():
            try:
                fn(*a)
            except (OSError, ConnectionError, ValueError, KeyError, StopIteration) as e:
                count(f"{fn.__name__} error {type(e).__name__}")
                time.sleep(0.2)
    return run


@guarded
def trader(seed, rate):
    r = random.Random(seed)
    c = Conn()
    gap, due = 1 / rate, time.monotonic()
    mine = []  # order ids this trader placed that may rest
    while not stop.is_set():
        due += gap
        time.sleep(max(0, due - time.monotonic()))
        with ulock:
            u = r.choice(users)
        sym = r.choice(list(SYMBOLS))
        _, lo, hi, mid = SYMBOLS[sym][0], *SYMBOLS[sym][1:]
        side = r.choice(["buy", "sell"])
        qty = str(r.randint(1, 5)) if sym == "AAPL" else f"0.00{r.randint(1, 9)}"
        # Buys mostly below 100, sells mostly above: most rest, some cross.
        cents = r.randint(9500, 10050) if side == "buy" else r.randint(9950, 10500)
        px = f"{cents / 100:.2f}" if sym == "AAPL" else f"{cents * 300:.2f}"
        k = r.random()
        if k < 0.55 or not mine:
            body = {"user_id": u, "symbol": sym, "side": side, "quantity": qty, "price": px,
                    "time_in_force": r.choice(["gtc", "gtc", "gtc", "ioc"])}
            if r.random() < 0.2:
                body["client_order_id"] = f"c{seed}-{next(next_n)}"
            s, o = c.call("POST", "/api/orders", body)
            if s < 300 and o.get("status") in ("new", "partially_filled"):
                mine.append(o["order_id"])
                del mine[:-200]
            count("place")
        elif k < 0.62:
            c.call("POST", "/api/orders", {"user_id": u, "symbol": sym, "side": side, "quantity": qty, "type": "market",
                                           "time_in_force": "ioc"})
            count("market")
        elif k < 0.80:
            c.call("DELETE", f"/api/orders/{mine.pop(r.randrange(len(mine)))}")
            count("cancel")
        elif k < 0.995:
            c.call("PATCH", f"/api/orders/{r.choice(mine)}", r.choice([{"price": px}, {"quantity": str(r.randint(1, 8)) if sym == "AAPL" else "0.002"}]))
            count("amend")
        else:
            c.call("POST", "/api/orders/cancel-all", {"user_id": u})
            count("cancel-all")


@guarded
def churner():
    c = Conn()
    while not stop.wait(2):
        u = new_user(c)
        with ulock:
            users.append(u)
            old = users.pop(0) if len(users) > 20 else None
        count("users created")
        if old:
            c.call("POST", "/api/orders/cancel-all", {"user_id": old})
            c.call("PUT", f"/api/users/{old}", {"status": "disabled"})
            count("users disabled")


@guarded
def token_churner():
    c = Conn()
    while not stop.wait(1):
        with ulock:
            u = users[-1]
        t = ok("POST", "/api/tokens", {"role": "trader", "user_id": u, "name": f"soak-{next(next_n)}"}, c)
        tc = Conn(token=t["token"])
        tc.call("GET", f"/api/users/{u}/account")
        tc.call("GET", "/api/orders?limit=5")
        tc.close()
        c.call("DELETE", f"/api/tokens/{t['id']}")
        bad = Conn(token="agt_not-a-token")
        bad.call("GET", "/api/users")
        bad.close()
        count("tokens")


def follower(r):
    """One follower of the event stream: reads a while, or never, or hangs up at once."""
    tcp = r.random() < 0.5
    sse = r.random() < 0.5
    how = r.choice(["read", "read", "silent", "vanish"])
    if tcp:
        s = socket.create_connection(tcp_addr(), timeout=10)
    else:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(f"{home}/agt.sock")
    auth = f"Authorization: Bearer {admin_token}\r\n" if tcp else ""
    accept = "Accept: text/event-stream\r\n" if sse else ""
    # Most start at the last 100 events, as `agt events tail -f` does; some replay all.
    start = "since=0" if r.random() < 0.25 else "tail=100"
    s.sendall(f"GET /api/events?follow=true&{start}&type=ORDER_CANCELLED,TRADE_EXECUTED HTTP/1.1\r\nHost: agt\r\n{auth}{accept}\r\n".encode())
    try:
        if how == "read":
            end = time.monotonic() + r.uniform(0.5, 5)
            while time.monotonic() < end and not stop.is_set():
                if not s.recv(1 << 16):
                    count("followers ended by the daemon")
                    break
        elif how == "silent":
            stop.wait(r.uniform(5, 20))  # never reads: the daemon's writes back up
    except OSError:
        count("follower errors")
    s.close()
    count(f"followers closed ({how})")


@guarded
def followers():
    r = random.Random(rng.random())
    live = []
    while not stop.wait(0.5):
        live = [t for t in live if t.is_alive()]
        if len(live) < 12:
            t = threading.Thread(target=follower, args=(random.Random(r.random()),), daemon=True)
            t.start()
            live.append(t)
    for t in live:
        t.join()


@guarded
def dropper():
    r = random.Random(rng.random())
    while not stop.wait(0.1):
        s = socket.create_connection(tcp_addr(), timeout=5)
        k = r.random()
        if k < 0.3:
            s.sendall(b"GET /api/users HTTP/1.1\r\nHost: a")  # half a request
        elif k < 0.4:
            stop.wait(r.uniform(1, 5))  # idle, then gone
        s.close()
        count("tcp drops")


@guarded
def poller():
    c = Conn()
    routes = ["/health", "/ready", "/api/services", "/metrics", "/api/book/AAPL?depth=20", "/api/trades/AAPL?limit=50",
              "/api/market/AAPL", "/api/market/AAPL/candles?interval=1m&limit=60", "/api/users?limit=100",
              "/api/orders?status=all&limit=100", "/api/audit?limit=50", "/api/notifications?limit=50",
              "/api/tokens", "/api/notifications/rules", "/api/risk/limits", "/api/symbols", "/api/config"]
    while not stop.wait(1):
        with ulock:
            u = users[-1]
        for p in routes + [f"/api/users/{u}/account"]:
            c.call("GET", p)
        count("polls")


@guarded
def rule_churner():
    c = Conn()
    while not stop.wait(30):
        rid = ok("POST", "/api/notifications/rules", {"url": f"http://127.0.0.1:{recv_port}/churn", "events": ["USER_CREATED"]}, c)["id"]
        stop.wait(10)
        c.call("DELETE", f"/api/notifications/rules/{rid}")
        count("rules churned")


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        count("webhooks received")

    def log_message(self, *a):
        pass


# --- the samples --------------------------------------------------------------------
def proc(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k == "VmRSS":
                out["rss_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    tick = os.sysconf("SC_CLK_TCK")
    cpu = defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = re.sub(r"[-\d]+$", "", st[st.index("(") + 1:st.rindex(")")]) or "?"
        fields = st[st.rindex(")") + 2:].split()
        cpu[name] += (int(fields[11]) + int(fields[12])) / tick
    for name, s in cpu.items():
        out[f"cpu_s {name}"] = s
    # The process's own count keeps the time of threads that have exited (tokio's
    # blocking pool, named agtd like the runtime, lets an idle thread go after 10 s, and
    # `/api/events` reads events.db there): without it a thread's series can fall.
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    out["cpu_s (exited threads)"] = max(0.0, (int(fields[11]) + int(fields[12])) / tick - sum(cpu.values()))
    return out


def fd_kinds(pid):
    """What each open descriptor is: a file, or a socket by kind (unix, or TCP with its
    ports and state), so the report can say which ones a drain did not give back."""
    socks = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                for line in list(f)[1:]:
                    p = line.split()
                    local, remote, state, inode = p[1], p[2], p[3], p[9]
                    port = lambda a: int(a.rsplit(":", 1)[1], 16)
                    kind = "listen" if state == "0A" else f"to :{port(remote)}" if port(local) != tcp_addr()[1] else "from a client"
                    socks[inode] = f"tcp {kind} (state {state})"
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            for line in list(f)[1:]:
                p = line.split()
                socks.setdefault(p[6], "unix")
    except OSError:
        pass
    kinds = defaultdict(int)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            target = "socket " + socks.get(target[8:-1], "?")
        kinds[target.replace(home, "$HOME")] += 1
    return kinds


def files():
    out, root = {}, f"{home}/data"
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            try:
                size = os.path.getsize(p)
            except OSError:
                continue
            rel = os.path.relpath(p, root)
            if os.path.dirname(rel):  # journal segments: one series per directory
                out[f"file {os.path.dirname(rel)}/ (bytes)"] = out.get(f"file {os.path.dirname(rel)}/ (bytes)", 0) + size
                out[f"file {os.path.dirname(rel)}/ (files)"] = out.get(f"file {os.path.dirname(rel)}/ (files)", 0) + 1
            else:
                out[f"file {rel}"] = size
    logs = f"{home}/logs"
    out["file logs/ (bytes)"] = sum(os.path.getsize(os.path.join(logs, n)) for n in os.listdir(logs)) if os.path.isdir(logs) else 0
    return out


GAUGES = ("active_connections", "agt_mailbox_depth", "agt_bus_backlog", "agt_feed_behind", "agt_bus_events_kept")


def metrics():
    s, text = Conn().call("GET", "/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        name = key.split("{")[0]
        if name.startswith(GAUGES):
            out[f"metric {key}"] = float(value)
        elif key == 'agt_bus_events_total{type="ORDER_CREATED"}':
            out["total orders"] = float(value)
        elif name == "agt_trades_total":
            out["total trades"] = float(value)
    return out


def sample(t0):
    row = {"t_s": round(time.monotonic() - t0, 1)}
    row.update(proc(daemon()["pid"]))
    row.update(files())
    row.update(metrics())
    with clock:
        row["closed"] = sum(v for k, v in counts.items() if k.startswith(("followers closed", "tcp drops", "tokens")))
    return row


def slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


BY_DESIGN = {
    "-wal": "a store's log: restarted past WAL_LIMIT (64 MiB), checkpointed by size",
    "-shm": "the log's index: follows the -wal file",
    "trading.db": "trades, cancels and outcomes are kept (history)",
    "orders.db": "every order is kept (history)", "audit.db": "the audit chain keeps every command and event for good",
    "market.db": "the tape and candles are kept", "events.db": f"events kept for events.retain_s (7 days by default)",
    "audit-journal/": "pruned up to what audit.db stores", "trading-journal/": "pruned past every store's mark",
    "agt_bus_events_kept": "events kept for events.retain_s (7 days by default)",
    "users.db": "every user is kept", "logs/": "daily files, deleted after log.keep_days", "auth.db": "revoked tokens are kept", "notify.db": "the last 100,000 finished deliveries (KEEP_FINISHED) and the pending ones",
    "risk.db": "accounts of every user; settled-trade ids", "health.db": "the lifecycle history",
}


def report(rows, warm_s, base, drained):
    after = [r for r in rows if r["t_s"] >= warm_s] or rows
    keys = sorted({k for r in rows for k in r} - {"t_s", "closed"})
    ts = [r["t_s"] for r in after]
    orders = lambda r: r.get("total orders", r.get("total agt_orders_total", 0))
    d_orders = orders(after[-1]) - orders(after[0])
    d_closed = after[-1]["closed"] - after[0]["closed"]
    flagged = []
    print(f"\n{'series':58} {'warm':>12} {'end':>12} {'drained':>12} {'/10min':>11} {'/1k closed':>10} {'/1k orders':>10}")
    for k in keys:
        if k.startswith("cpu_s") or k.startswith("total"):
            continue
        ys = [r.get(k, 0) for r in after]
        per10 = slope(ts, ys) * 600
        start, end = ys[0], ys[-1]
        grow = end - start
        floor = {"rss_kib": 2048, "fds": 3, "threads": 2}.get(k, 4096 if k.startswith("file") else 2)
        mark = ""
        # Memory that the drain gives back (below its value after the warm-up) was load
        # in flight, not growth.
        # So does a queue (a mailbox, the bus's backlog, a feed behind) that the drain empties.
        queue = any(q in k for q in ("mailbox_depth", "bus_backlog", "feed_behind"))
        held = not ((k == "rss_kib" or queue) and drained.get(k, end) <= (start if k == "rss_kib" else 0) + floor)
        if per10 > max(floor, 0.05 * abs(start)) and grow > floor and held:
            why = next((v for f, v in BY_DESIGN.items() if f in k), None)
            mark = f"grows by design: {why}" if why else "GROWS"
            if not why:
                flagged.append(k)
        if k in ("fds", "threads") or k.startswith("metric active_connections"):
            if drained.get(k, 0) > base.get(k, 0) + {"fds": 4, "threads": 2}.get(k, 1):
                mark += " NOT BACK (before load: %s)" % base.get(k, 0)
                flagged.append(k)
        print(f"{k[:58]:58} {start:12.0f} {end:12.0f} {drained.get(k, 0):12.0f} {per10:11.1f} "
              f"{grow * 1000 / d_closed if d_closed else 0:10.2f} {grow * 1000 / d_orders if d_orders else 0:10.2f} {mark}")
    # CPU per order by thread, per interval: does the lane's cost per order creep up?
    print("\nCPU µs per order by thread, per sample interval after the warm-up (first, last, slope per 10 min):")
    for k in sorted(k for k in keys if k.startswith("cpu_s")):
        per = []
        for a, b in zip(after, after[1:]):
            n = orders(b) - orders(a)
            if n > 0:
                per.append((b["t_s"], (b.get(k, 0) - a.get(k, 0)) * 1e6 / n))
        if per and max(p for _, p in per) > 1:
            rise = slope([t for t, _ in per], [p for _, p in per]) * 600
            mean = sum(p for _, p in per) / len(per)
            # A thread's work per order that rises with time: a cost that grows with
            # something (a queue, a table scanned) rather than with the load.
            mark = "  RISES (not flagged: CPU time on a shared machine is noisy)" if mean > 20 and rise > 0.1 * mean else ""
            print(f"  {k[6:]:20} {per[0][1]:8.1f} {per[-1][1]:8.1f} {rise:+8.2f}{mark}")
    print(f"\nafter the warm-up: {d_orders:.0f} orders, {d_closed} connections/followers/tokens closed; load: {dict(counts)}")
    return flagged


# --- the run ------------------------------------------------------------------------
if args.report:
    def num(v):
        try:
            return float(v)
        except ValueError:
            return 0.0
    rows = [{k: num(v) for k, v in r.items() if v != ""} for r in csv.DictReader(open(args.report))]
    flagged = report(rows[1:-1], args.warmup * 60, rows[0], rows[-1])
    print(f"\nflagged: {flagged or 'nothing'}")
    sys.exit(1 if flagged else 0)
r = agt("daemon", "start")
if r.returncode != 0:
    raise SystemExit(f"agt daemon start failed: {r.stderr}")
try:
    admin_token = ok("POST", "/api/tokens", {"role": "admin", "name": "soak-admin"})["token"]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    srv.daemon_threads = True
    recv_port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]  # bound, never listening: connections are refused
    ok("POST", "/api/notifications/rules", {"url": f"http://127.0.0.1:{recv_port}/hook", "events": ["ORDER_CANCELLED", "USER_CREATED", "ACCOUNT_DEPOSITED"]})
    ok("POST", "/api/notifications/rules", {"url": f"http://127.0.0.1:{dead_port}/dead", "events": ["USER_CREATED"]})
    c = Conn()
    for _ in range(20):
        users.append(new_user(c))
    c.close()
    t0 = time.monotonic()
    base = sample(t0)
    base_fds = fd_kinds(daemon()["pid"])
    print(f"before the load: rss {base['rss_kib']} KiB, fds {base['fds']}, threads {base['threads']}", flush=True)
    workers = [threading.Thread(target=trader, args=(rng.random(), args.rate / 4)) for _ in range(4)]
    workers += [threading.Thread(target=w) for w in (churner, token_churner, followers, dropper, poller, rule_churner)]
    for w in workers:
        w.start()
    rows, end = [], t0 + args.minutes * 60
    while time.monotonic() < end:
        time.sleep(min(args.sample, max(0, end - time.monotonic())))
        row = sample(t0)
        rows.append(row)
        print(f"t={row['t_s']:7.0f}s rss {row['rss_kib']} KiB fds {row['fds']} threads {row['threads']} "
              f"orders {row.get('total orders', 0):.0f} conns {sum(v for k, v in row.items() if k.startswith('metric active_connections')):.0f} "
              f"closed {row['closed']}", flush=True)
    stop.set()
    for w in workers:
        w.join()
    # The drain: the daemon idle again, every connection of the load closed.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = metrics()
        if sum(v for k, v in m.items() if "mailbox_depth" in k or "bus_backlog" in k or "feed_behind" in k) == 0:
            break
        time.sleep(1)
    # Past a follow stream's peer check (`routes::events::PEER_CHECK`, 5 s): a follower
    # whose client went silent is let go at its next check, not at once.
    time.sleep(8)
    drained = sample(t0)
    drained_fds = fd_kinds(daemon()["pid"])
    with open(args.csv or f"{home}/soak.csv", "w", newline="") as f:
        keys = sorted({k for r in [base] + rows + [drained] for k in r})
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in [base] + rows + [drained]:
            w.writerow(row)
    flagged = report(rows, args.warmup * 60, base, drained)
    extra = {k: drained_fds[k] - base_fds.get(k, 0) for k in drained_fds if drained_fds[k] != base_fds.get(k, 0)}
    gone = {k: v - drained_fds.get(k, 0) for k, v in base_fds.items() if v > drained_fds.get(k, 0)}
    print(f"\ndescriptors after the drain that were not open before the load: {extra or 'none'}; closed since: {gone or 'none'}")
    # Files opened once (each store's log by its checkpointer, a journal's current
    # segment) are not what a drain should give back; connections, pipes and the like are.
    held_open = sum(v for k, v in extra.items() if v > 0 and not k.startswith("$HOME/"))
    if "fds" in flagged and held_open <= 0:
        flagged.remove("fds")
        print("fds: what the drain did not give back are files of data/, each opened once; no connection was left open")
finally:
    stop.set()
    agt("daemon", "stop")
print(f"\nflagged: {flagged or 'nothing'}; home {home}")
sys.exit(1 if flagged else 0)
