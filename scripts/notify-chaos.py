#!/usr/bin/env python3
"""Webhook delivery under a misbehaving receiver, live rule changes and SIGKILLs.

Usage: scripts/notify-chaos.py [--rounds 8] [--bin target/release/agt] [--home NEW_DIR]
       [--seed N] [--timeout-ms 400] [--backoff-ms 100] [--max-attempts 5]

Python 3, stdlib only; needs a release build (`cargo build --release`). It starts two
webhook receivers (threaded http.server on 127.0.0.1, A and B) that answer each post at
random: 200, 500, 429, hang past the daemon's attempt timeout, close the connection
without an answer; now and then one is down for a while (its listener and its open
connections closed). It makes a fresh home whose `agt.toml` has one webhook (`config:0`,
on A, signed) and starts the daemon with `agt daemon start` and short notify tuning
(`AGT_NOTIFY_TIMEOUT_MS`, `AGT_NOTIFY_BACKOFF_MS`, `AGT_NOTIFY_MAX_ATTEMPTS`). Each
round: four traders place crossing limit orders on AAPL (timing each placement), a
cashier deposits, a clerk creates users; meanwhile rules are added on A and B (random
event types, `*`, `NOTIFICATION_FAILED`; signed or not; each its own URL path), removed,
and the config webhook's event list is changed with `PUT /api/config`; then the daemon
is SIGKILLed at a random moment and started again. Every rule change is bracketed by the
bus's last sequence before the request and after its answer, so each event is known to
have been published before, after, or during the change.

After each restart it checks what holds at any moment; after the last round it makes
the receivers answer 200, waits for the queue to drain and checks everything:

- every post: its `X-Agt-Signature` verifies under its rule's secret (none when the rule
  has none), its `X-Agt-Event` is the body's type, and its event is one the rule wanted:
  of a type it names (`*`: every type but NOTIFICATION_*; a NOTIFICATION_* event about a
  NOTIFICATION_* event never), not published after the rule's removal was answered;
- every event of `GET /api/events` that a rule wanted for certain (published after its
  creation was answered and before its removal was asked) reached that rule's URL with a
  200, or ended in a `NOTIFICATION_FAILED` for that URL and seq;
- each `NOTIFICATION_SENT` names a delivery the receiver answered 200 at that URL, once;
  no delivery is both sent and failed;
- the queue drains (`GET /api/notifications?status=pending` empty), settling deliveries
  all the while: --drain-s without one settled is a violation (the backlog grows with
  the rounds and the rules, so no fixed time fits it; the time and rate are printed);
- no placement took longer than --stall-ms while a receiver hung or was down (placements
  cut by a kill, and the first second after a start, are not counted).

Prints each round and every violation; exits 1 if there was one. Slow (~10 s a round):
never run by `cargo test`; each bug it found has a short test beside the code
(`src/services/notify/service.rs`): a receiver's backlog read at every `due`, and a freed
slot left to the next tick, which capped a URL at 20 deliveries/s.
"""
import argparse, hashlib, hmac, http.server, json, os, random, signal, socket, subprocess, sys, tempfile, threading, time
from collections import defaultdict

import agt_unix  # scripts/agt_unix.py: HTTP over the daemon's socket
from agt_unix import Gone

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=8)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--timeout-ms", type=int, default=400, help="AGT_NOTIFY_TIMEOUT_MS")
ap.add_argument("--backoff-ms", type=int, default=100, help="AGT_NOTIFY_BACKOFF_MS")
ap.add_argument("--max-attempts", type=int, default=5, help="AGT_NOTIFY_MAX_ATTEMPTS")
ap.add_argument("--min-ms", type=int, default=1500, help="shortest round before the kill")
ap.add_argument("--max-ms", type=int, default=5000, help="longest round before the kill")
ap.add_argument("--order-gap-ms", type=float, default=20, help="each trader's pause between orders")
ap.add_argument("--stall-ms", type=int, default=1000, help="a placement slower than this is a stall")
ap.add_argument("--drain-s", type=int, default=120, help="how long the draining queue may go without settling a delivery at the end")
args = ap.parse_args()
rng = random.Random(args.seed)
home = args.home or tempfile.mkdtemp(prefix="agt-notify-chaos-")
os.makedirs(home, exist_ok=True)
problems = agt_unix.Problems()
problem = problems  # records and prints a violation
counts = defaultdict(int)
lock = threading.Lock()


# --- the receivers ---------------------------------------------------------------------
class Receiver:
    """A webhook receiver that misbehaves at random; records every post it read."""

    FATES = [("200", 55), ("500", 10), ("429", 10), ("hang", 8), ("close", 7), ("204", 10)]

    def __init__(self, name):
        self.name, self.rng, self.calm = name, random.Random(rng.random()), False
        self.hits = []  # dicts: path, delivery, event, signature, body, fate, at
        self.conns = set()
        self.server, self.port, self.up = None, 0, False
        self.hanging = 0
        self.open()

    def open(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: with Nagle on, the body waited
                # for the daemon's delayed ACK, 40 ms a post, and the queue never drained.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with lock:
                    rec.conns.add(self.connection)

            def finish(self):
                with lock:
                    rec.conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    fate = "200" if rec.calm else rec.choose()
                    rec.hits.append({"path": self.path, "delivery": self.headers.get("X-Agt-Delivery"),
                                     "event": self.headers.get("X-Agt-Event"), "signature": self.headers.get("X-Agt-Signature"),
                                     "body": body, "fate": fate, "at": time.monotonic()})
                if fate == "hang":
                    with lock:
                        rec.hanging += 1
                    time.sleep(args.timeout_ms / 1000 * 3)
                    with lock:
                        rec.hanging -= 1
                    self.close_connection = True
                    return
                if fate == "close":
                    self.close_connection = True
                    return
                status = int(fate)
                text = b"" if status == 204 else json.dumps({"fate": fate}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:  # the daemon gave up on it (its timeout), or we went down
                    self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a connection the daemon or `down` cut: nothing to report

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.up = True

    def choose(self):
        r = self.rng.randrange(sum(w for _, w in self.FATES))
        for fate, w in self.FATES:
            if r < w:
                return fate
            r -= w

    def down(self):
        """Closes the listener and every open connection: posts are refused meanwhile."""
        self.server.shutdown()
        self.server.server_close()
        with lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.up = False

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


A, B = Receiver("A"), Receiver("B")
RECEIVERS = {"A": A, "B": B}


def blocked():
    """Whether a receiver hangs or is down right now (placements are timed against it)."""
    return any(r.hanging or not r.up for r in RECEIVERS.values())


# --- the daemon -------------------------------------------------------------------------
CONFIG_URL = A.url("/config")
CONFIG_SECRET = "config-secret"
with open(f"{home}/agt.toml", "w") as f:
    f.write('[http]\nlisten = ""\n[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\n'
            f'[[notify.webhooks]]\nurl = "{CONFIG_URL}"\nevents = ["USER_CREATED", "ACCOUNT_DEPOSITED"]\nsecret = "{CONFIG_SECRET}"\n')
env = dict(os.environ, AGT_NOTIFY_TIMEOUT_MS=str(args.timeout_ms), AGT_NOTIFY_BACKOFF_MS=str(args.backoff_ms),
           AGT_NOTIFY_MAX_ATTEMPTS=str(args.max_attempts))
print(f"home {home}, seed {args.seed}, binary {args.bin}, receivers A :{A.port} B :{B.port}", flush=True)


Conn = agt_unix.connector(home, problem)  # a new connection to this run's daemon


def ok(method, path, body=None):
    return agt_unix.ok(Conn(), method, path, body)


def stream(query):
    """The events of `GET /api/events?query` (HTTP/1.0: the stream ends with the connection)."""
    try:
        line, events = agt_unix.events(home, query)
    except OSError as e:  # the daemon is down (a kill): no socket, or no answer
        raise Gone(f"GET /api/events?{query}: {e}")
    if " 200 " not in line:
        raise Gone(f"GET /api/events?{query}: {line}")
    return events


def last_seq():
    e = stream("tail=1")
    return e[-1]["seq"] if e else 0


def seq_after(what, rule):
    """The bus's last seq once a rule change was answered; if the kill comes first, the
    change is settled after the restart as one whose answer was cut off (it was made,
    and its bracket ends where the restart finds the bus)."""
    try:
        return last_seq()
    except Gone:
        uncertain_ops.append((what, rule))
        raise


def agt(*a):
    return subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True, env=env)


started_at = [0.0]


def start():
    agt_unix.start(agt)
    started_at[0] = time.monotonic()


def pid():
    return agt_unix.pid(home)


# --- the rules ----------------------------------------------------------------------------
class Rule:
    """A subscription and when it held: `periods` of (events, asked, answered) seqs."""

    def __init__(self, tag, url, secret):
        self.tag, self.url, self.secret = tag, url, secret
        self.periods = []  # [events, begun_before, begun_after]: in force for events after begun_after for certain
        self.removed = None  # (asked, answered): gone for events after `answered`
        self.id = None


rules = {}  # url -> Rule
config_rule = Rule("config", CONFIG_URL, CONFIG_SECRET)
config_rule.periods.append([["USER_CREATED", "ACCOUNT_DEPOSITED"], 0, 0])
rules[CONFIG_URL] = config_rule
TYPES = ["USER_CREATED", "ACCOUNT_DEPOSITED", "ORDER_CREATED", "TRADE_EXECUTED", "ORDER_EXECUTED", "ORDER_STATUS_UPDATED",
         "ORDER_CANCELLED", "NOTIFICATION_FAILED", "NOTIFICATION_SENT"]
uncertain_ops = []  # rule ops the kill cut off: settled after the restart
next_tag = iter(range(10**9))


def wants(events, e):
    """notify::wants: `*` is every type but NOTIFICATION_*; never a notification about one."""
    if e["type"].startswith("NOTIFICATION_"):
        return e["type"] in events and not str(e["data"].get("event_type", "")).startswith("NOTIFICATION_")
    return e["type"] in events or "*" in events


def may_want(rule, e):
    """Whether `rule` may have been sent `e` (a type it named while it could have held)."""
    if rule.removed and e["seq"] > rule.removed[1]:
        return False
    for i, (events, before, after) in enumerate(rule.periods):
        nxt = rule.periods[i + 1] if i + 1 < len(rule.periods) else None
        if nxt and e["seq"] > nxt[2]:
            continue  # replaced for certain before this event
        if i > 0 and e["seq"] <= before:
            continue  # a config change is exact: not for events published before it was asked
        if wants(events, e):
            return True
    return False


def must_want(rule, e):
    """Whether `rule` wanted `e` for certain: in force before and after it, never removed meanwhile."""
    if rule.removed and e["seq"] > rule.removed[0]:
        return False
    holding = [p for p in rule.periods if p[2] < e["seq"]]
    if not holding:
        return False
    events, _, _ = holding[-1]
    later = [p for p in rule.periods if p[1] < e["seq"] <= p[2]]  # a change under way: either list
    return wants(events, e) and all(wants(p[0], e) for p in later)


def rule_op(c, r):
    """One live change of the rules: add one, remove one, or change the config's events."""
    k = r.random()
    live = [x for x in rules.values() if x.id and not x.removed]
    if k < 0.5 or not live:
        recv = r.choice(["A", "B"])
        tag = next(next_tag)
        url = RECEIVERS[recv].url(f"/rule/{tag}")
        events = r.sample(TYPES, r.randint(1, 3)) if r.random() < 0.8 else ["*"]
        if r.random() < 0.3:
            events.append("NOTIFICATION_FAILED")
        secret = f"secret-{tag}" if r.random() < 0.7 else None
        rule = Rule(tag, url, secret)
        before = last_seq()
        rule.periods.append([events, before, None])
        rules[url] = rule
        body = {"url": url, "events": events} | ({"secret": secret} if secret else {})
        try:
            s, v = c.call("POST", "/api/notifications/rules", body)
        except Gone:
            uncertain_ops.append(("add", rule))
            raise
        if s != 201:
            problem(f"POST rule {body}: {s} {v}")
            del rules[url]
            return
        rule.id = v["id"]
        rule.periods[-1][2] = seq_after("add", rule)
        counts["rules added"] += 1
    elif k < 0.8:
        rule = r.choice([x for x in live if x is not config_rule] or live)
        if rule is config_rule:
            return
        before = last_seq()
        rule.removed = (before, None)
        try:
            s, v = c.call("DELETE", f"/api/notifications/rules/{rule.id}")
        except Gone:
            uncertain_ops.append(("remove", rule))
            raise
        if s != 200:
            problem(f"DELETE rule {rule.id}: {s} {v}")
        rule.removed = (before, seq_after("remove", rule))
        counts["rules removed"] += 1
    else:
        events = r.sample(TYPES, r.randint(1, 3))
        before = last_seq()
        config_rule.periods.append([events, before, None])
        webhook = {"url": CONFIG_URL, "events": events, "secret": CONFIG_SECRET}
        try:
            s, v = c.call("PUT", "/api/config", {"notify.webhooks": [webhook]})
        except Gone:
            uncertain_ops.append(("config", config_rule))
            raise
        if s != 200:
            problem(f"PUT notify.webhooks: {s} {v}")
        config_rule.periods[-1][2] = seq_after("config", config_rule)
        counts["config changes"] += 1


def settle_uncertain():
    """After a restart: what became of the rule changes the kill cut off."""
    now = last_seq()
    listed = {x["url"]: x for x in ok("GET", "/api/notifications/rules")}
    for what, rule in uncertain_ops:
        if what == "add":
            if rule.url in listed:
                rule.id = listed[rule.url]["id"]
                rule.periods[-1][2] = now
            else:
                del rules[rule.url]
        elif what == "remove":
            if rule.url in listed:
                rule.removed = None
            else:
                rule.removed = (rule.removed[0], now)
        else:
            if set(listed[CONFIG_URL]["events"]) == set(rule.periods[-1][0]):
                rule.periods[-1][2] = now
            else:
                rule.periods.pop()
    uncertain_ops.clear()


# --- the workload ---------------------------------------------------------------------------
latencies = []  # (seconds, blocked while it ran)


def trader(users, stop, seed):
    r = random.Random(seed)
    c = Conn()
    while not stop.is_set():
        side = r.choice(["buy", "sell"])
        px = f"{r.randint(9950, 10050) / 100:.2f}"
        body = {"user_id": r.choice(users), "symbol": "AAPL", "side": side, "quantity": str(r.randint(1, 3)), "price": px}
        t0, b0 = time.monotonic(), blocked()
        try:
            s, o = c.call("POST", "/api/orders", body)
        except Gone:
            return
        dt = time.monotonic() - t0
        if t0 - started_at[0] > 1:
            with lock:
                latencies.append((dt, b0 or blocked()))
        counts["orders"] += 1
        stop.wait(args.order_gap_ms / 1000)
        if counts["orders"] % 50 == 0:
            try:
                c.call("POST", "/api/orders/cancel-all", {"user_id": body["user_id"]})
            except Gone:
                return


def cashier(users, stop, seed):
    r = random.Random(seed)
    c = Conn()
    while not stop.is_set():
        try:
            c.call("POST", f"/api/users/{r.choice(users)}/deposits", {"asset": r.choice(["USD", "AAPL"]), "amount": str(r.randint(1, 50))})
            counts["deposits"] += 1
            if r.random() < 0.1:
                n = next(next_tag)
                s, u = c.call("POST", "/api/users", {"username": f"nc{args.seed}x{n}", "email": f"nc{n}@example.com"})
                counts["users"] += 1
        except Gone:
            return
        time.sleep(0.01)


def admin(stop, seed):
    r = random.Random(seed)
    c = Conn()
    while not stop.is_set():
        try:
            rule_op(c, r)
        except Gone:
            return
        stop.wait(r.uniform(0.1, 0.6))


def troublemaker(stop, seed):
    """Takes a receiver down for a while now and then."""
    r = random.Random(seed)
    while not stop.wait(r.uniform(0.5, 2.0)):
        if r.random() < 0.4:
            rec = RECEIVERS[r.choice("AB")]
            rec.down()
            counts["receiver down"] += 1
            stop.wait(r.uniform(0.2, args.timeout_ms / 1000 * 4))
            rec.open()
    for rec in RECEIVERS.values():
        if not rec.up:
            rec.open()


# --- the checks --------------------------------------------------------------------------------
def check(label, final):
    events = stream("since=0")
    by_seq = {e["seq"]: e for e in events}
    with lock:
        hits = list(A.hits) + list(B.hits)
    notes = ok("GET", "/api/notifications?status=all&limit=10000")
    answered_200 = defaultdict(set)  # url -> delivery ids answered 2xx
    got = defaultdict(set)  # url -> seqs answered 2xx
    for rec in RECEIVERS.values():
        for h in list(rec.hits):
            url = rec.url(h["path"])
            rule = rules.get(url)
            try:
                body = json.loads(h["body"])
            except ValueError:
                problem(f"{label}: a post to {url} is not JSON: {h['body'][:200]!r}")
                continue
            if rule is None:
                problem(f"{label}: a post to {url}, which no rule names: {body.get('type')} seq {body.get('seq')}")
                continue
            want = hmac.new(rule.secret.encode(), h["body"], hashlib.sha256).hexdigest() if rule.secret else None
            if (f"sha256={want}" if want else None) != h["signature"]:
                problem(f"{label}: {url} seq {body['seq']}: signature {h['signature']!r}, expected {'sha256=' + want if want else None!r}")
            if h["event"] != body["type"]:
                problem(f"{label}: {url} seq {body['seq']}: X-Agt-Event {h['event']} but the body is a {body['type']}")
            stored = by_seq.get(body["seq"])
            if stored is None or stored["event_id"] != body["event_id"]:
                problem(f"{label}: {url} got seq {body['seq']} ({body['type']}) that /api/events does not have as such")
            elif not may_want(rule, body):
                problem(f"{label}: {url} got {body['type']} seq {body['seq']}, which rule {rule.tag} "
                        f"({rule.periods}, removed {rule.removed}) did not want")
            if h["fate"] in ("200", "204"):
                answered_200[url].add(h["delivery"])
                got[url].add(body["seq"])
    sent = defaultdict(int)
    failed = defaultdict(set)  # url -> seqs given up
    failed_ids = set()
    for e in events:
        if e["type"] == "NOTIFICATION_SENT":
            d = e["data"]
            sent[d["delivery_id"]] += 1
            if d["delivery_id"] not in answered_200.get(d["url"], ()):
                problem(f"{label}: NOTIFICATION_SENT {d} but {d['url']} never answered 2xx to that delivery")
        elif e["type"] == "NOTIFICATION_FAILED":
            d = e["data"]
            failed[d["url"]].add(d["event_seq"])
            failed_ids.add(d["delivery_id"])
    for i, n in sent.items():
        if n > 1:
            problem(f"{label}: NOTIFICATION_SENT {n} times for delivery {i}")
        if i in failed_ids:
            problem(f"{label}: delivery {i} both sent and failed")
    counts_now = {"events": len(events), "posts": len(hits), "sent": sum(sent.values()), "failed": len(failed_ids),
                  "deliveries": len(notes)}
    if not final:
        return counts_now
    missing = []
    for rule in rules.values():
        for e in events:
            if must_want(rule, e) and e["seq"] not in got[rule.url] and e["seq"] not in failed[rule.url]:
                missing.append((rule.tag, e["type"], e["seq"]))
    if missing:
        problem(f"{label}: {len(missing)} events a rule wanted neither reached it nor failed, e.g. {missing[:8]}")
    pending = ok("GET", "/api/notifications?status=pending&limit=10000")
    if pending:
        problem(f"{label}: {len(pending)} deliveries still pending, e.g. {pending[:2]}")
    return counts_now


def settled():
    """How many delivery attempts this daemon has settled (`agt_notification_deliveries`,
    every result), or None when /metrics does not say."""
    s, text = Conn().call("GET", "/metrics")
    if s != 200 or not isinstance(text, str):
        return None
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("agt_notification_deliveries_total{"))


def drained(quiet_s):
    """Waits until nothing is pending, for as long as deliveries keep settling: the
    backlog the rounds leave grows with the rules live (each `*` or `NOTIFICATION_SENT`
    rule takes a share of every event), and a fixed time failed a queue that drained at
    its usual rate (10 rounds, ~30 rules). False when `quiet_s` pass without one settled.
    Prints how long it took and how many settled."""
    began = time.monotonic()
    first = last = settled()
    quiet_since = began
    while time.monotonic() - quiet_since < quiet_s:
        if not ok("GET", "/api/notifications?status=pending&limit=1"):
            took = time.monotonic() - began
            n = (settled() or 0) - (first or 0)
            print(f"drained in {took:.1f} s: {n:.0f} attempts settled meanwhile ({n / max(took, 0.001):.0f}/s)", flush=True)
            return True
        now = settled()
        if now is not None and (last is None or now > last):
            quiet_since = time.monotonic()
        last = now
        time.sleep(0.2)
    return False


# --- the run -------------------------------------------------------------------------------------
start()
users = [ok("POST", "/api/users", {"username": f"nc{args.seed}u{i}", "email": f"u{i}@example.com"})["user_id"] for i in range(8)]
for u in users:
    ok("POST", f"/api/users/{u}/deposits", {"asset": "USD", "amount": "1000000"})
    ok("POST", f"/api/users/{u}/deposits", {"asset": "AAPL", "amount": "10000"})
kills = 0
for rnd in range(args.rounds):
    stop = threading.Event()
    threads = [threading.Thread(target=trader, args=(users, stop, rng.random())) for _ in range(4)]
    threads += [threading.Thread(target=cashier, args=(users, stop, rng.random())),
                threading.Thread(target=admin, args=(stop, rng.random())),
                threading.Thread(target=troublemaker, args=(stop, rng.random()))]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(args.min_ms, args.max_ms) / 1000)
    os.kill(pid(), signal.SIGKILL)
    kills += 1
    stop.set()
    for t in threads:
        t.join()
    # The pid file names a dead process: start waits for the lock, then recovers.
    start()
    settle_uncertain()
    n = check(f"round {rnd + 1}", final=False)
    print(f"round {rnd + 1}: {n}, rules {sum(1 for r in rules.values() if not r.removed)} live / {len(rules)}, "
          f"{dict(counts)}, violations {len(problems)}", flush=True)

for rec in RECEIVERS.values():
    rec.calm = True
if not drained(args.drain_s):
    problem(f"the queue stopped draining: no delivery settled for {args.drain_s} s, some still pending")
n = check("final", final=True)
blocked_lat = sorted(dt for dt, b in latencies if b)
free_lat = sorted(dt for dt, b in latencies if not b)
pct = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else 0
print(f"placements while a receiver hung or was down: {len(blocked_lat)}, p50 {pct(blocked_lat, .5):.1f} ms, "
      f"p99 {pct(blocked_lat, .99):.1f} ms, max {pct(blocked_lat, 1):.1f} ms; otherwise: {len(free_lat)}, "
      f"p50 {pct(free_lat, .5):.1f} ms, p99 {pct(free_lat, .99):.1f} ms, max {pct(free_lat, 1):.1f} ms")
stalls = [dt for dt in blocked_lat if dt * 1000 > args.stall_ms]
if stalls:
    problem(f"{len(stalls)} placements took over {args.stall_ms} ms while a receiver hung or was down (max {max(stalls):.2f} s)")
agt("daemon", "stop")
for rec in RECEIVERS.values():
    rec.down()
print(f"done: {args.rounds} rounds, {kills} kills, {n}, {dict(counts)}, {len(problems)} violations (home {home}, seed {args.seed})")
sys.exit(problems.verdict())
