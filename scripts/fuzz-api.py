#!/usr/bin/env python3
"""Generated bad input and conflicting concurrency at every route of the API.

Usage: scripts/fuzz-api.py [--bin target/release/agt] [--home NEW_DIR] [--seed N]
       [--requests 20000] [--bursts 20] [--keep] [--messages FILE]

Python 3, stdlib only; needs a release build (`cargo build --release`). Each phase has
a fresh home (`fuzz/` and `bursts/` in a temporary directory unless --home) with TCP on
a free port, a daemon started with `agt daemon start`, two users funded in USD, AAPL and
BTC, a resting order, and three tokens (admin, viewer, trader bound to the first user):

1. Fuzz: --requests requests, each to a route of `src/daemon/routes/mod.rs` picked at
   random, over the socket or over TCP with one of the three tokens (or none, or a bad
   one): bodies that are the route's valid body with one field replaced by junk (wrong
   JSON types, huge, negative, exponent and NaN-like numbers, 40-digit decimal strings,
   empty strings, unicode, control characters, 10 KB strings, nested junk), fields
   dropped, unknown keys, duplicate keys, wrong top-level types, truncated or non-UTF-8
   bodies, wrong or missing Content-Type, a Content-Length larger than the body sent;
   path segments with `%`-escapes (`%00`, `%ff`, `%2F`), `..`, unicode and 5 KB ids;
   junk query parameters; generated CSV for the import (good and bad rows), junk keys
   and values for `PUT /api/config` and `PUT /api/risk/limits`. Then raw requests at
   the protocol's edges (bad chunked bodies, two Content-Lengths, HTTP/1.0 and /2.0, no
   Host, a 100 KB header, 500 headers, a 80 KB query, 50 pipelined requests). Every
   answer must come within 15 s, have a status below 500 (503 `service_unavailable`,
   and 504 on order routes, allowed), and, if 4xx, be `{"error": {"code", "message"}}`
   with both non-empty; every 50 requests `/ready` must answer 200 and the daemon's log
   must not say `panicked`; at the end `/api/audit/verify` must be ok.
2. Bursts (--bursts rounds), each from several connections at once on the same objects:
   cancel and amend the same order; two amends of one order; amend while it fills;
   cancel-all while placing for the same user; deposits and withdrawals racing a
   placement that needs the whole balance; disable a user while its orders are placed;
   the same username (in any case), email, symbol and token name created at once, and
   two users given the same email; halt and resume while placing; a service restarted
   while placing; a token revoked while it is used. After each burst, through
   the API: per asset the users' totals sum to deposits - withdrawals; each user's held
   is the sum of its open orders' needs and equals its holds; available = total - held
   >= 0; each book is its symbol's open orders; a 2xx cancel left the order cancelled,
   a 200 amend's price and quantity are the order's (the last one's); of concurrent
   creates of one name exactly one got 201 and the others 409; a placement after a
   disable's answer is refused, as is a revoked token; `/api/audit/verify` is ok.

Prints each violation and a summary (requests per route and status); exits 1 if there
was a violation. Takes a minute or two: never run by `cargo test`. Bugs it found have a
test in `tests/it/` each.
"""
import argparse, atexit, json, os, random, re, socket, subprocess, sys, tempfile, threading, time
from collections import Counter, defaultdict
from decimal import Decimal as D

import agt_unix  # scripts/agt_unix.py: how a driver records violations

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--requests", type=int, default=20000)
ap.add_argument("--bursts", type=int, default=20)
ap.add_argument("--keep", action="store_true", help="leave the daemon running at the end")
ap.add_argument("--messages", help="write each distinct error code and message of the fuzz to this file, to read")
args = ap.parse_args()
rng = random.Random(args.seed)
root = args.home or tempfile.mkdtemp(prefix="agt-fuzz-")
home = None  # the home of the daemon being driven: `{root}/fuzz`, then `{root}/bursts`
print(f"home {root}, seed {args.seed}, binary {args.bin}", flush=True)

violations = agt_unix.Problems()
violation = violations  # records and prints a violation


class Conn:
    """One keep-alive HTTP/1.1 connection, over the socket or TCP; sends raw bytes."""

    def __init__(self, tcp=None, token=None, timeout=15):
        if tcp:
            host, port = tcp.rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(f"{home}/agt.sock")
        self.token, self.buf = token, b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def raw(self, method, path, body=b"", headers=None, length=None, half_close=False, head_only=False):
        hdrs = {"Host": "agt", "Content-Type": "application/json"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        hdrs["Content-Length"] = str(len(body) if length is None else length)
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(head.encode("utf-8", "surrogateescape") + body)
        if half_close:
            self.sock.shutdown(socket.SHUT_WR)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before an answer")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        hd = {l.split(b":", 1)[0].strip().lower().decode(): l.split(b":", 1)[1].strip().decode("latin-1") for l in lines[1:] if b":" in l}
        if head_only:
            return status, hd, b""
        if hd.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                while b"\r\n" not in self.buf:
                    self.buf += self._recv()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self.buf += self._recv()
                out, self.buf = out + self.buf[:size], self.buf[size + 2:]
                if size == 0:
                    return status, hd, out
        length = int(hd.get("content-length", "0"))
        while len(self.buf) < length:
            self.buf += self._recv()
        data, self.buf = self.buf[:length], self.buf[length:]
        return status, hd, data

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-answer")
        return chunk

    def call(self, method, path, body=None):
        s, _, data = self.raw(method, path, json.dumps(body).encode() if body is not None else b"")
        try:
            return s, json.loads(data) if data else None
        except ValueError:
            return s, data


def agt(*a, check=True):
    r = subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        sys.exit(f"agt {' '.join(a)} failed ({r.returncode}): {r.stderr}")
    return r


def must(status_body, want=(200, 201)):
    s, b = status_body
    if s not in want:
        sys.exit(f"setup failed: {s} {b}")
    return b


def start_home(name):
    """A daemon on a fresh home `{root}/{name}`, with two funded users, three tokens
    and a resting order. Each phase has its own: the fuzz may list instruments whose fine
    grids lower the assets' cap (`max_supply`), set limits and halt, where the bursts need
    a known start."""
    global home, tcp, admin, alice, bob, ledger, tokens, resting, log_dir
    home = f"{root}/{name}"
    os.makedirs(home, exist_ok=True)
    with open(f"{home}/agt.toml", "w") as f:
        f.write('[http]\nlisten = "127.0.0.1:0"\n[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\nprice_band_pct = "1000"\n')
    agt("daemon", "start")
    if not args.keep:
        # Also when a check or the setup ends the script early: leave no daemon behind.
        atexit.register(lambda h=home: subprocess.run([args.bin, "--home", h, "daemon", "stop"], capture_output=True))
    tcp = json.load(open(f"{home}/agtd.json"))["http"]
    log_dir = f"{home}/logs"
    admin = Conn()
    alice = must(admin.call("POST", "/api/users", {"username": "alice", "email": "alice@example.com"}))
    bob = must(admin.call("POST", "/api/users", {"username": "bob", "email": "bob@example.com"}))
    ledger = defaultdict(D)  # asset -> deposits - withdrawals acknowledged
    for u in (alice, bob):
        for asset, amt in (("USD", "1000000"), ("AAPL", "10000"), ("BTC", "100")):
            must(admin.call("POST", f"/api/users/{u['user_id']}/deposits", {"asset": asset, "amount": amt}))
            ledger[asset] += D(amt)
    tokens = {role: must(admin.call("POST", "/api/tokens", {"role": role, "name": f"fuzz-{role}", **({"user_id": "alice"} if role == "trader" else {})}))
              for role in ("admin", "viewer", "trader")}
    resting = must(admin.call("POST", "/api/orders", {"user_id": "alice", "symbol": "AAPL", "side": "buy", "quantity": "1", "price": "10.00"}))


start_home("fuzz")


def log_text():
    out = ""
    for name in sorted(os.listdir(log_dir)):
        with open(os.path.join(log_dir, name), errors="replace") as f:
            out += f.read()
    return out


# ---------------------------------------------------------------- phase 1: the fuzz

JUNK_SCALARS = [
    None, True, False, 0, -1, 1, 1.5, -0.0, 1e308, -1e308, 1e-308, 1e400, 123456789012345678901234567890123456789012,
    "1e5", "1E-3", "-5", "0", "-0", "NaN", "nan", "Infinity", "-inf", "0x10", "1_000", " 5 ", "5.", ".5", "+5", "١٢٣",
    "1234567890123456789012345678901234567890", "0.0000000000000000000000000000000000000001", "79228162514264337593543950336",
    "-79228162514264337593543950336", "", " ", "\u0000", "\t\r\n", "é", "🚀", "\u202e", "a\u0000b", "'; DROP TABLE users; --",
    "x" * 10000, "%00", "../../etc/passwd", "AAPL", "USD", "alice", "buy", "sell", "limit", "market", "gtc", "ioc", "fok",
    "cancelled", "active", "disabled", "admin", "trader", "viewer", "*", "http://127.0.0.1:1/x",
]


NUMS = ["79228162514264337593543950335", "7922816251426433759354395033.5", "0.0000000000000000000000000001", "1e27", "1e-28",
        "99999999999999999999999999", "0.00000001", "1", "0.01", "100000", "1000000000", "-0", "0.0", "10000000000000000000000000000",
        79228162514264337593543950335, 1e28, 0.1, 3, "4294967296", "18446744073709551616", "9223372036854775808"]


def junk(depth=0):
    r = rng.random()
    if depth < 3 and r < 0.1:
        return [junk(depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and r < 0.2:
        return {rng.choice(["a", "", "price", "symbol", "\u0000"]): junk(depth + 1) for _ in range(rng.randint(0, 3))}
    if r < 0.3:
        return rng.choice([10 ** rng.randint(0, 60), -(10 ** rng.randint(0, 60)), rng.uniform(-1e6, 1e6)])
    return rng.choice(JUNK_SCALARS)


uid = alice["user_id"]
ROUTES = [
    # method, path template, valid body (None: none), query keys
    ("GET", "/health", None, []), ("GET", "/ready", None, []), ("GET", "/metrics", None, []),
    ("GET", "/api/services", None, []), ("POST", "/api/services/{svc}/restart", None, []),
    ("POST", "/api/services/{svc}/crash", None, []),
    ("GET", "/api/users", None, ["limit", "status"]), ("POST", "/api/users", {"username": "u", "email": "u@example.com"}, []),
    ("GET", "/api/users/{user}", None, []), ("PUT", "/api/users/{user}", {"email": "a@example.com", "status": "active"}, []),
    ("POST", "/api/users/{user}/deposits", {"asset": "USD", "amount": "1"}, []),
    ("POST", "/api/users/{user}/withdrawals", {"asset": "USD", "amount": "1"}, []),
    ("GET", "/api/users/{user}/account", None, []),
    ("GET", "/api/risk/limits", None, ["user_id"]), ("PUT", "/api/risk/limits", {"max_open_orders": 100000}, ["user_id"]),
    ("POST", "/api/risk/halt", {"symbol": "BTC-USD"}, []), ("POST", "/api/risk/resume", {"symbol": "BTC-USD"}, []),
    ("GET", "/api/risk/state", None, []), ("GET", "/api/risk/holds", None, ["user_id"]),
    ("GET", "/api/tokens", None, []), ("POST", "/api/tokens", {"role": "viewer", "name": "n"}, []),
    ("DELETE", "/api/tokens/{token}", None, []),
    ("GET", "/api/events", None, ["since", "type", "limit"]),
    ("GET", "/api/audit", None, ["since", "actor", "limit"]), ("GET", "/api/audit/verify", None, []),
    ("GET", "/api/config", None, []), ("PUT", "/api/config", {"log.level": "info"}, []), ("GET", "/api/config/pending", None, []),
    ("GET", "/api/notifications", None, ["limit", "status"]), ("GET", "/api/notifications/rules", None, []),
    ("POST", "/api/notifications/rules", {"url": "http://127.0.0.1:1/hook", "events": ["USER_CREATED"]}, []),
    ("DELETE", "/api/notifications/rules/{rule}", None, []),
    ("GET", "/api/symbols", None, []), ("POST", "/api/symbols", {"symbol": "FZ", "tick": "0.01", "lot": "1"}, []),
    ("GET", "/api/symbols/{symbol}", None, []), ("GET", "/api/trades/{symbol}", None, ["limit"]),
    ("POST", "/api/market/import", {"csv": "symbol,timestamp,open,high,low,close,volume\n"}, []),
    ("GET", "/api/market/{symbol}", None, []), ("GET", "/api/market/{symbol}/candles", None, ["interval", "limit"]),
    ("GET", "/api/orders", None, ["user_id", "symbol", "status", "limit"]),
    ("POST", "/api/orders", {"user_id": uid, "symbol": "AAPL", "side": "buy", "quantity": "1", "price": "1.00", "type": "limit", "time_in_force": "ioc", "client_order_id": "c"}, []),
    ("POST", "/api/trading/orders", {"user_id": uid, "symbol": "AAPL", "side": "sell", "quantity": "1", "price": "100000.00", "type": "limit", "time_in_force": "fok"}, []),
    ("POST", "/api/orders/cancel-all", {"user_id": "bob", "symbol": "BTC-USD"}, []),
    ("GET", "/api/orders/{order}", None, []), ("DELETE", "/api/orders/{order}", None, []),
    ("PATCH", "/api/orders/{order}", {"price": "9.00", "quantity": "1"}, []),
    ("GET", "/api/trading/orders/{order}", None, []), ("PUT", "/api/orders/{order}/status", {"status": "cancelled"}, ["status"]),
    ("GET", "/api/book/{symbol}", None, ["depth"]),
    ("GET", "/api/nope", None, []), ("POST", "/api", None, []),
]
VALID_SEG = {"svc": ["nosuch", "market"], "user": [uid, "bob", "alice"], "token": [tokens["viewer"]["id"]], "rule": ["1"],
             "symbol": ["AAPL", "BTC-USD"], "order": [resting["order_id"]]}
SEG_JUNK = ["%00", "%ff", "%2F", "%2e%2e", "..", ".", "%", "%zz", "%25", "a%20b", "é", "%F0%9F%9A%80", "x" * 5000, "0",
            "-1", "99999999999999999999999", "'", "%22", "%0A", "AAPL%00", "a;b", "~", "%C0%AF"]


def q_escape(s):
    return "".join(c if c.isalnum() or c in "-_.~" else "".join(f"%{b:02X}" for b in c.encode()) for c in s)


def gen_path(tmpl, qkeys):
    def seg(m):
        r = rng.random()
        return rng.choice(VALID_SEG[m.group(1)]) if r < 0.4 else rng.choice(SEG_JUNK)
    path = re.sub(r"\{(\w+)\}", seg, tmpl)
    params = []
    for k in qkeys + ["junk", "follow"] * (rng.random() < 0.2):
        if rng.random() < 0.5:
            v = junk()
            v = v if isinstance(v, str) else json.dumps(v)
            params.append(f"{k}={q_escape(v) if rng.random() < 0.8 else rng.choice(['%', '%zz', '%ff', v[:50]])}")
    if rng.random() < 0.05:
        params.append(rng.choice(["=", "&&", "a", "x=1&x=2", "limit=1&limit=2"]))
    if "events" in tmpl:
        params = [p for p in params if not p.startswith("follow")]
    return path + ("?" + "&".join(params) if params else "")


CONFIG_KEYS = ["log.level", "log.keep_days", "durability", "trading.order_timeout_s", "trading.spin_us", "risk.max_open_orders",
               "risk.max_order_quantity", "risk.max_order_notional", "risk.max_orders_per_second", "risk.price_band_pct",
               "risk.allow_short", "debug.fault_injection", "supervisor.max_restarts", "supervisor.window_s", "events.retain_s",
               "symbols", "notify.webhooks", "nope", "risk", ""]
LIMIT_KEYS = ["max_open_orders", "max_order_quantity", "max_order_notional", "max_orders_per_second", "price_band_pct", "allow_short"]
CSV_FIELDS = {"symbol": ["AAPL", "BTC-USD", "NOPE", "", "aapl", "\"AAPL\"", "\"A,B\""],
              "interval": ["1s", "1m", "5m", "1h", "1d", "2m", "", "1M", "-1m"],
              "open_time": ["2024-05-01T00:00:00Z", "1714571100", "2024-05-01", "0", "-86400", "99999999999999999999", "2999-01-01",
                            "1714571101", "2024-02-30", "1e9", "NaN", ""],
              "open": ["170.10", "0", "-1", "1e5", "1234567890123456789012345678901234567890", "0.001", "NaN", "", "79228162514264337593543950335"],
              "volume": ["0", "1200", "-5", "1e400", "0.0000000000000000000000000001", "", "99999999999999999999999999999"]}


def gen_csv():
    cols = ["symbol", "interval", "open_time", "open", "high", "low", "close", "volume"]
    if rng.random() < 0.1:
        rng.shuffle(cols)
    if rng.random() < 0.05:
        cols = cols[:rng.randint(0, 8)] + ["extra"] * (rng.random() < 0.5)
    lines = [",".join(c.upper() if rng.random() < 0.1 else c for c in cols)]
    for _ in range(rng.randint(0, 30)):
        row = []
        for c in cols:
            pool = CSV_FIELDS.get(c) or CSV_FIELDS["open"]
            row.append(rng.choice(pool) if rng.random() < 0.3 else pool[0] if c not in ("open_time",) else rng.choice(pool[:3]))
        if rng.random() < 0.05:
            row = row[:rng.randint(0, len(row))]
        lines.append(",".join(row))
    if rng.random() < 0.1:
        lines.insert(rng.randint(0, len(lines)), rng.choice(["", "#x", "\"", "\x00", ",,,,,,,,,,"]))
    return "\n".join(lines) + rng.choice(["", "\n", "\r\n"])


def gen_body(valid):
    r = rng.random()
    if valid and "csv" in valid and r < 0.7:
        return json.dumps({"csv": gen_csv()}).encode()
    if valid and "log.level" in valid and r < 0.6:
        valid = {rng.choice(CONFIG_KEYS): junk() for _ in range(rng.randint(1, 3))}
    if valid and "max_open_orders" in valid and r < 0.6:
        valid = {rng.choice(LIMIT_KEYS): junk() for _ in range(rng.randint(1, 3))}
    if valid is None or r < 0.05:
        return json.dumps(junk()).encode() if rng.random() < 0.5 else b""
    body = dict(valid)
    if r < 0.55 and body:
        body[rng.choice(list(body))] = junk()
    elif r < 0.65 and body:
        body.pop(rng.choice(list(body)))
    elif r < 0.7:
        body[rng.choice(["extra", "", "\u0000", "x" * 300])] = junk()
    elif r < 0.75 and body:
        k = rng.choice(list(body))
        text = json.dumps(body)
        return (text[:-1] + f', {json.dumps(k)}: {json.dumps(junk())}}}').encode()
    elif r < 0.8:
        return json.dumps(body).encode()[: rng.randint(0, len(json.dumps(body)))]
    elif r < 0.83:
        return b"\xff\xfe" + json.dumps(body).encode()
    elif r < 0.86:
        return rng.choice([b"null", b"[]", b"0", b'"x"', b"{}", b"{{", b"\x00", b"{" * 10000, b"[" * 5000 + b"]" * 5000])
    elif r < 0.9:
        for k in list(body):
            body[k] = junk()
    elif r < 0.97:
        # Extreme numbers in every numeric field at once: products and sums that overflow.
        for k in ("price", "quantity", "amount", "tick", "lot", "min_quantity", "max_quantity"):
            if k in body or rng.random() < 0.2:
                body[k] = rng.choice(NUMS)
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()


def check_error_shape(where, status, data):
    try:
        b = json.loads(data)
    except ValueError:
        violation(f"{where}: {status} with a body that is not JSON: {data[:200]!r}")
        return None
    e = b.get("error") if isinstance(b, dict) else None
    if not (isinstance(e, dict) and isinstance(e.get("code"), str) and e["code"] and isinstance(e.get("message"), str) and e["message"]):
        violation(f"{where}: {status} with a body not of the error shape: {data[:200]!r}")
        return None
    messages.add((status, e["code"], e["message"][:300]))
    return e["code"]


stats, messages = Counter(), set()
creds = [None, tokens["admin"]["token"], tokens["viewer"]["token"], tokens["trader"]["token"], "bogus"]


def fuzz_one(i):
    method, tmpl, valid, qkeys = rng.choice(ROUTES)
    path = gen_path(tmpl, qkeys)
    body = gen_body(valid) if method != "GET" or rng.random() < 0.1 else b""
    use_tcp = rng.random() < 0.5
    token = rng.choice(creds) if use_tcp else None
    headers = {}
    r = rng.random()
    if r < 0.08:
        headers["Content-Type"] = rng.choice(["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin1", "text/csv", None])
    if tmpl == "/api/market/import" and rng.random() < 0.3:
        body, headers["Content-Type"] = gen_csv().encode(), rng.choice(["text/csv", "text/plain; charset=utf-8"])
    length, half = None, False
    if rng.random() < 0.03 and body:
        length, half = len(body) + rng.randint(1, 100), True  # announced more than sent, then EOF
    if rng.random() < 0.03:
        method = rng.choice(["PATCH", "PUT", "DELETE", "OPTIONS", "HEAD"])
    where = f"#{i} {method} {path[:160]} body={body[:120]!r} via {'tcp' if use_tcp else 'socket'}"
    conn = None
    try:
        conn = Conn(tcp if use_tcp else None, token)
        status, hd, data = conn.raw(method, path, body, headers, length, half, head_only=method == "HEAD")
    except (socket.timeout, TimeoutError):
        violation(f"{where}: no answer within 15 s (a hang)")
        return
    except ConnectionError as e:
        if half:
            return  # the body never came: closing without an answer is fine
        violation(f"{where}: {e}")
        return
    finally:
        if conn:
            conn.close()
    stats[(tmpl, method, status)] += 1
    if status >= 500 and status != 503 and not (status == 504 and "orders" in tmpl):
        violation(f"{where}: {status} {data[:300]!r}")
    if status >= 400 and method != "HEAD":
        code = check_error_shape(where, status, data)
        if status == 503 and code not in (None, "service_unavailable"):
            violation(f"{where}: 503 with code {code}")


def ready_and_no_panic(when):
    deadline = time.time() + 20
    while True:
        try:
            c = Conn()
            s, _, data = c.raw("GET", "/ready")
            c.close()
            if s == 200:
                break
        except OSError as e:
            s, data = 0, str(e).encode()
        if time.time() > deadline:
            violation(f"{when}: /ready answered {s} {data[:200]!r} for 20 s")
            break
        time.sleep(0.2)
    text = log_text()
    if "panicked" in text:
        line = next(l for l in text.splitlines() if "panicked" in l)
        violation(f"{when}: the log says {line[:400]}")
        return False
    return True


print(f"phase 1: {args.requests} generated requests over {len(ROUTES)} routes", flush=True)
started = time.time()
seen_panic = False
for i in range(args.requests):
    fuzz_one(i)
    if i % 50 == 49 and not seen_panic:
        seen_panic = not ready_and_no_panic(f"after request #{i}")
# Requests at the protocol's edges, sent as raw bytes: each must get a JSON answer (or,
# where the request never ended, a closed connection), and no hang.
RAW = [
    b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"use\r\n0\r\n\r\n",
    b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}",
    b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    b"GET /api/users HTTP/1.0\r\n\r\n",
    b"GET /api/users HTTP/1.1\r\n\r\n",
    b"GET /api/users/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET //api//users HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/users/%2e%2e/%2e%2e/ready HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/book/AAPL?depth=1&depth=2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/book/AAPL?depth=0 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/book/AAPL?depth=99999999999999999999999 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/orders?limit=0 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/users HTTP/1.1\r\nHost: a\r\nX-Long: " + b"x" * 100000 + b"\r\n\r\n",
    b"GET /api/users?" + b"a=1&" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/users HTTP/1.1\r\nHost: a\r\n" + b"X-H: 1\r\n" * 500 + b"\r\n",
    b"BREW /api/users HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/users HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET \x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/events?since=0&follow=false HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
    (b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n") * 50,
]
for i, req in enumerate(RAW):
    for use_tcp in (False, True):
        c = Conn(tcp if use_tcp else None)
        try:
            c.sock.sendall(req)
            c.sock.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = c.sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, TimeoutError):
            violation(f"raw #{i} {req[:80]!r}: no answer within 15 s")
            continue
        except OSError as e:
            got = f"{e}".encode()
        finally:
            c.close()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
        if not m:
            continue  # closed without an answer: the request never ended
        status = int(m.group(1))
        stats[("raw", f"#{i}", status)] += 1
        if status >= 500 and status != 503:
            violation(f"raw #{i} {req[:80]!r}: {got[:300]!r}")
        if status >= 400:
            body = got.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in got else b""
            if b"transfer-encoding: chunked" in got.split(b"\r\n\r\n", 1)[0].lower():
                body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0] if b"\r\n" in body else body
            check_error_shape(f"raw #{i} {req[:80]!r}", status, body)
ready_and_no_panic("after the raw requests")
verify = must(Conn().call("GET", "/api/audit/verify"))
if not verify["ok"]:
    violation(f"audit verify after the fuzz: {verify}")
agt("daemon", "stop")
print(f"phase 1 done in {time.time() - started:.0f} s", flush=True)

# ---------------------------------------------------------------- phase 2: bursts


def at_once(fns):
    """Runs each fn on its own connection, started together; returns their results."""
    out = [None] * len(fns)
    gate = threading.Barrier(len(fns))

    def run(i, fn):
        c = Conn()
        gate.wait()
        try:
            out[i] = fn(c)
        except Exception as e:  # noqa: BLE001 - a broken connection is a finding
            out[i] = ("exception", repr(e))
        finally:
            c.close()
    ts = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in out:
        if isinstance(r, tuple) and r and r[0] == "exception":
            violation(f"burst: {r[1]}")
        elif isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], int) and r[0] >= 500 and r[0] != 503:
            violation(f"burst: {r}")
    return out


def base_of(sym):
    return sym[:-4] if sym.endswith("-USD") else sym


def consistency(when):
    c = Conn()
    users = must(c.call("GET", "/api/users?limit=10000"))
    totals = defaultdict(D)
    holds = must(c.call("GET", "/api/risk/holds"))
    hold_by = defaultdict(D)
    for h in holds:
        hold_by[(h["user_id"], h["asset"])] += D(h["amount"])
    open_orders = must(c.call("GET", "/api/orders?status=open&limit=10000"))
    need = defaultdict(D)
    books = defaultdict(lambda: {"buy": defaultdict(D), "sell": defaultdict(D)})
    for o in open_orders:
        rem = D(o["remaining_quantity"])
        if o["side"] == "buy":
            need[(o["user_id"], "USD")] += rem * D(o["price"])
        else:
            need[(o["user_id"], base_of(o["symbol"]))] += rem
        books[o["symbol"]][o["side"]][D(o["price"])] += rem
    for u in users:
        acct = must(c.call("GET", f"/api/users/{u['user_id']}/account"))
        for b in acct["balances"]:
            t, h, a = D(b["total"]), D(b["held"]), D(b["available"])
            totals[b["asset"]] += t
            key = (u["user_id"], b["asset"])
            if h != need[key] or h != hold_by[key]:
                violation(f"{when}: {u['username']} {b['asset']} held {h}, open orders need {need[key]}, holds say {hold_by[key]}")
            if a != t - h or a < 0:
                violation(f"{when}: {u['username']} {b['asset']} total {t} held {h} available {a}")
            need.pop(key, None)
    for key, v in need.items():
        if v:
            violation(f"{when}: open orders need {v} {key[1]} of {key[0]}, whose account shows no such balance")
    for asset in set(totals) | set(ledger):
        if totals[asset] != ledger[asset]:
            violation(f"{when}: {asset} across users {totals[asset]}, deposits - withdrawals {ledger[asset]}")
    for sym in set(books) | {"AAPL", "BTC-USD"}:
        book = must(c.call("GET", f"/api/book/{sym}?depth=100000"))
        for side, key in (("buy", "bids"), ("sell", "asks")):
            got = {D(p): D(q) for p, q in book[key]}
            want = {p: q for p, q in books[sym][side].items() if q}
            if got != want:
                violation(f"{when}: book {sym} {key} {got}, open orders {want}")
    c.close()


def place(c, user, sym, side, qty, price=None, tif="gtc"):
    body = {"user_id": user, "symbol": sym, "side": side, "quantity": str(qty), "time_in_force": tif}
    if price is None:
        body["type"] = "market"
    else:
        body["price"] = str(price)
    return c.call("POST", "/api/orders", body)


def expect_final(when, order_id, status_want):
    s, o = admin.call("GET", f"/api/orders/{order_id}")
    if s != 200 or o["status"] != status_want:
        violation(f"{when}: order {order_id} is {o.get('status') if isinstance(o, dict) else o}, a 2xx answer said {status_want}")


def new_user(tag):
    u = must(admin.call("POST", "/api/users", {"username": tag, "email": f"{tag}@example.com"}))
    return u["user_id"]


def fund(user, asset, amount):
    s, b = admin.call("POST", f"/api/users/{user}/deposits", {"asset": asset, "amount": str(amount)})
    if s == 201 or s == 200:
        ledger[asset] += D(amount)
    return s, b


def burst_cancel_amend(n):
    u = new_user(f"ca{n}")
    fund(u, "USD", 100000)
    o = must(place(admin, u, "AAPL", "buy", 10, "5.00"))
    res = at_once([lambda c: c.call("DELETE", f"/api/orders/{o['order_id']}"),
                   lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"price": "6.00", "quantity": "20"}),
                   lambda c: c.call("PUT", f"/api/orders/{o['order_id']}/status", {"status": "cancelled"}),
                   lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"price": "4.00"})])
    cancels = [r for r in (res[0], res[2]) if r[0] == 200]
    if len(cancels) != 1:
        violation(f"cancel+amend: {len(cancels)} cancels of one order answered 200: {res}")
    expect_final("cancel+amend", o["order_id"], "cancelled")


def burst_amend_fill(n):
    b, s = new_user(f"afb{n}"), new_user(f"afs{n}")
    fund(b, "USD", 100000)
    fund(s, "AAPL", 1000)
    o = must(place(admin, b, "AAPL", "buy", 10, "5.00"))
    res = at_once([lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"price": "5.50", "quantity": "15"}),
                   lambda c: place(c, s, "AAPL", "sell", 6, "5.00"),
                   lambda c: place(c, s, "AAPL", "sell", 6, "5.00", "ioc"),
                   lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"quantity": "3"})])
    s_, after = admin.call("GET", f"/api/orders/{o['order_id']}")
    if D(after["filled_quantity"]) > D(after["quantity"]):
        violation(f"amend+fill: order filled {after['filled_quantity']} of {after['quantity']}")
    admin.call("POST", "/api/orders/cancel-all", {"user_id": s})
    admin.call("POST", "/api/orders/cancel-all", {"user_id": b})


def burst_cancel_all_place(n):
    u = new_user(f"cap{n}")
    fund(u, "USD", 100000)
    placers = [lambda c: [place(c, u, "BTC-USD", "buy", "0.01", "100.00") for _ in range(20)] for _ in range(3)]
    res = at_once(placers + [lambda c: c.call("POST", "/api/orders/cancel-all", {"user_id": u}),
                             lambda c: (time.sleep(0.005), c.call("POST", "/api/orders/cancel-all", {"user_id": u, "symbol": "BTC-USD"}))[1]])
    for r in res[3:]:
        if r[0] == 200 and isinstance(r[1], (list, dict)):
            ids = [o["order_id"] for o in (r[1] if isinstance(r[1], list) else r[1].get("orders", []))]
            for i in ids[:5]:
                expect_final("cancel-all+place", i, "cancelled")
    admin.call("POST", "/api/orders/cancel-all", {"user_id": u})


def burst_money_race(n):
    u = new_user(f"mr{n}")
    fund(u, "USD", 1000)
    outcomes = {}

    def w(c):
        r = c.call("POST", f"/api/users/{u}/withdrawals", {"asset": "USD", "amount": "1000"})
        outcomes["w"] = r
        return r

    def d(c):
        r = c.call("POST", f"/api/users/{u}/deposits", {"asset": "USD", "amount": "1"})
        outcomes["d"] = r
        return r
    res = at_once([lambda c: place(c, u, "AAPL", "buy", 100, "10.00"), w, d,
                   lambda c: c.call("POST", f"/api/users/{u}/withdrawals", {"asset": "USD", "amount": "500"})])
    if outcomes["w"][0] in (200, 201):
        ledger["USD"] -= D(1000)
    if outcomes["d"][0] in (200, 201):
        ledger["USD"] += D(1)
    if res[3][0] in (200, 201):
        ledger["USD"] -= D(500)
    if res[0][0] == 201 and outcomes["w"][0] in (200, 201) and res[0][1]["status"] == "new":
        violation(f"money race: a buy holding 1000 USD and a withdrawal of 1000 both succeeded on 1001: {res}")
    admin.call("POST", "/api/orders/cancel-all", {"user_id": u})
    # Each of these needs the whole balance: exactly one may have it.
    v = new_user(f"mw{n}")
    fund(v, "USD", 1000)
    res = at_once([lambda c: c.call("POST", f"/api/users/{v}/withdrawals", {"asset": "USD", "amount": "1000"})] * 3
                  + [lambda c: place(c, v, "AAPL", "buy", 100, "10.00")] * 3)
    won = [r for r in res[:3] if r[0] in (200, 201)] + [r for r in res[3:] if r[0] == 201]
    ledger["USD"] -= D(1000) * sum(1 for r in res[:3] if r[0] in (200, 201))
    if len(won) != 1:
        violation(f"whole balance raced 6 ways: {len(won)} won: {[r[0] for r in res]}")
    admin.call("POST", "/api/orders/cancel-all", {"user_id": v})


def burst_disable(n):
    u = new_user(f"dis{n}")
    fund(u, "USD", 100000)
    res = at_once([lambda c: [place(c, u, "AAPL", "buy", 1, "3.00") for _ in range(15)] for _ in range(2)]
                  + [lambda c: c.call("PUT", f"/api/users/{u}", {"status": "disabled"})])
    if res[2][0] != 200:
        violation(f"disable: {res[2]}")
    # After the disable answered, a placement must be refused.
    s, b = place(admin, u, "AAPL", "buy", 1, "3.00")
    if s != 422 or b.get("error", {}).get("code") != "user_disabled":
        violation(f"disable: a placement after the disable answered {s} {b}")
    admin.call("PUT", f"/api/users/{u}", {"status": "active"})
    admin.call("POST", "/api/orders/cancel-all", {"user_id": u})


def burst_same_name(n):
    for kind, fn in (("username", lambda c: c.call("POST", "/api/users", {"username": f"dup{n}", "email": f"dup{n}@example.com"})),
                     ("email", lambda c: c.call("POST", "/api/users", {"username": f"dupe{n}-{threading.get_ident()}", "email": f"same{n}@example.com"})),
                     ("symbol", lambda c: c.call("POST", "/api/symbols", {"symbol": f"DUP{n}", "tick": "0.01", "lot": "1"})),
                     ("username in any case", lambda c: c.call("POST", "/api/users", {"username": rng.choice([f"Case{n}", f"case{n}", f"CASE{n}"]), "email": f"c{threading.get_ident()}{n}@example.com"})),
                     ("email in any case", lambda c: c.call("POST", "/api/users", {"username": f"ec{n}-{threading.get_ident()}", "email": rng.choice([f"Mail{n}@example.com", f"mail{n}@EXAMPLE.com"])}))):
        res = at_once([fn] * 4)
        codes = sorted(r[0] for r in res)
        if codes != [201, 409, 409, 409]:
            violation(f"same {kind} created 4 times at once answered {codes}: {[r[1] for r in res if r[0] != 201]}")
    a, b = new_user(f"ra{n}"), new_user(f"rb{n}")
    for field, value in (("email", f"taken{n}@example.com"),):  # a username cannot be changed
        res = at_once([lambda c, u=u: c.call("PUT", f"/api/users/{u}", {field: value}) for u in (a, b)])
        codes = sorted(r[0] for r in res)
        if codes != [200, 409]:
            violation(f"two users given the same {field} at once answered {codes}: {res}")
    res = at_once([lambda c: c.call("POST", "/api/tokens", {"role": "viewer", "name": f"tok{n}"})] * 3)
    if any(r[0] not in (201, 409) for r in res):
        violation(f"same token name at once: {res}")


def burst_halt(n):
    u = new_user(f"h{n}")
    fund(u, "USD", 100000)
    res = at_once([lambda c: [place(c, u, "AAPL", "buy", 1, "2.00") for _ in range(15)] for _ in range(2)]
                  + [lambda c: [c.call("POST", "/api/risk/halt", {"symbol": "AAPL"}), c.call("POST", "/api/risk/resume", {"symbol": "AAPL"}),
                                c.call("POST", "/api/risk/halt", {}), c.call("POST", "/api/risk/resume", {})]])
    for r in res[:2]:
        for s, b in r:
            if s not in (201, 422) or (s == 422 and b["error"]["code"] != "trading_halted"):
                violation(f"halt+place: {s} {b}")
    st = must(admin.call("GET", "/api/risk/state"))
    if st["halted"] or st["halted_symbols"]:
        violation(f"halt+place: after resumes the state is {st}")
    admin.call("POST", "/api/orders/cancel-all", {"user_id": u})


def burst_double_amend(n):
    u = new_user(f"da{n}")
    fund(u, "USD", 100000)
    o = must(place(admin, u, "AAPL", "buy", 10, "5.00"))
    res = at_once([lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"price": "4.00", "quantity": "12"}),
                   lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"price": "4.50", "quantity": "8"}),
                   lambda c: c.call("PATCH", f"/api/orders/{o['order_id']}", {"quantity": "30"})])
    s_, final = admin.call("GET", f"/api/orders/{o['order_id']}")
    claims = [(D(b["price"]), D(b["quantity"])) for st, b in res if st == 200]
    if claims and (D(final["price"]), D(final["quantity"])) not in claims:
        violation(f"double amend: the order is {final['price']} x {final['quantity']}, the 200 answers said {claims}")
    admin.call("DELETE", f"/api/orders/{o['order_id']}")


def burst_restart(n):
    u = new_user(f"rs{n}")
    fund(u, "USD", 100000)
    svc = ["risk", "orders", "trading", "users", "auth", "market"][n % 6]
    res = at_once([lambda c: [place(c, u, "AAPL", "buy", 1, "4.00") for _ in range(10)] for _ in range(2)]
                  + [lambda c: c.call("POST", f"/api/services/{svc}/restart")])
    for r in res[:2]:
        for s_, b in r:
            if s_ not in (201, 503):
                violation(f"restart {svc} while placing: {s_} {b}")
    ready_and_no_panic(f"restart {svc}")
    admin.call("POST", "/api/orders/cancel-all", {"user_id": u})


def burst_revoke(n):
    t = must(admin.call("POST", "/api/tokens", {"role": "trader", "user_id": "bob", "name": f"rv{n}"}))

    def use(c):
        out = []
        c2 = Conn(tcp, t["token"])
        for _ in range(10):
            out.append(c2.call("GET", "/api/orders"))
        c2.close()
        return out
    res = at_once([use, use, lambda c: c.call("DELETE", f"/api/tokens/{t['id']}")])
    if res[2][0] != 200:
        violation(f"revoke: {res[2]}")
    c2 = Conn(tcp, t["token"])
    s_, b = c2.call("GET", "/api/orders")
    c2.close()
    if s_ != 401:
        violation(f"revoke: the revoked token still answers {s_}")


def burst_settings(n):
    """Different keys set at once, globally and for one user: each 200 must still hold."""
    u = new_user(f"st{n}")
    globals_ = {"risk.max_open_orders": 100000 + n, "risk.max_orders_per_second": 100000 + n, "log.level": rng.choice(["info", "debug"]),
                "risk.price_band_pct": str(900 + n)}
    mine = {"max_open_orders": 50 + n, "max_order_quantity": str(1000 + n), "max_orders_per_second": 70 + n, "max_order_notional": str(90000 + n)}
    res = at_once([lambda c, k=k, v=v: c.call("PUT", "/api/config", {k: v}) for k, v in globals_.items()]
                  + [lambda c, k=k, v=v: c.call("PUT", f"/api/risk/limits?user_id={u}", {k: v}) for k, v in mine.items()])
    if any(r[0] != 200 for r in res):
        violation(f"settings at once: {[r for r in res if r[0] != 200]}")
    config = must(admin.call("GET", "/api/config"))
    for k, v in globals_.items():
        section, key = k.split(".")
        if str(config[section][key]) != str(v):
            violation(f"settings at once: {k} is {config[section][key]}, its 200 said {v}")
    limits = must(admin.call("GET", f"/api/risk/limits?user_id={u}"))
    for k, v in mine.items():
        if str(limits[k]) != str(v):
            violation(f"settings at once: {u}'s {k} is {limits[k]}, its 200 said {v}")


def burst_trader(n):
    """A trader token places and cancels over TCP while an admin disables and enables its user."""
    u = new_user(f"tr{n}")
    fund(u, "USD", 100000)
    t = must(admin.call("POST", "/api/tokens", {"role": "trader", "user_id": u, "name": f"tr{n}"}))

    def trade(c):
        out, tc = [], Conn(tcp, t["token"])
        for _ in range(10):
            s_, b = tc.call("POST", "/api/orders", {"symbol": "AAPL", "side": "buy", "quantity": "1", "price": "3.00"})
            out.append((s_, b))
            if s_ == 201 and b["status"] == "new":
                out.append(tc.call("DELETE", f"/api/orders/{b['order_id']}"))
        out.append(tc.call("POST", "/api/orders/cancel-all", {}))
        tc.close()
        return out
    res = at_once([trade, trade, lambda c: [c.call("PUT", f"/api/users/{u}", {"status": st}) for st in ("disabled", "active", "disabled")]])
    for r in res[:2]:
        for s_, b in r:
            if s_ >= 400 and not (s_ in (403, 422) and b["error"]["code"] == "user_disabled") and not (s_ == 409 and b["error"]["code"] == "order_not_open"):
                violation(f"trader while disabled: {s_} {b}")
    s_, b = Conn(tcp, t["token"]).call("GET", "/api/orders")
    if s_ != 403:
        violation(f"trader after its user was disabled: {s_} {b}")
    admin.call("PUT", f"/api/users/{u}", {"status": "active"})
    admin.call("POST", "/api/orders/cancel-all", {"user_id": u})


BURSTS = [burst_trader, burst_settings, burst_double_amend, burst_restart, burst_revoke, burst_cancel_amend, burst_amend_fill, burst_cancel_all_place, burst_money_race, burst_disable, burst_same_name, burst_halt]
print(f"phase 2: {args.bursts} rounds of {len(BURSTS)} bursts", flush=True)
start_home("bursts")
consistency("before the bursts")
for n in range(args.bursts):
    for burst in BURSTS:
        burst(n)
        consistency(f"round {n} after {burst.__name__}")
    ready_and_no_panic(f"round {n}")
verify = must(admin.call("GET", "/api/audit/verify"))
if not verify["ok"]:
    violation(f"audit verify: {verify}")

print("\nrequests by route (status: count):")
by_route = defaultdict(Counter)
for (tmpl, method, status), k in stats.items():
    by_route[f"{method} {tmpl}"][status] += k
for r in sorted(by_route):
    print(f"  {r:<45} " + ", ".join(f"{s}: {k}" for s, k in sorted(by_route[r].items())))
if args.messages:
    with open(args.messages, "w") as f:
        f.writelines(f"{st} {code}: {msg}\n" for st, code, msg in sorted(messages))
print(f"\n{sum(stats.values())} fuzz requests, {args.bursts * len(BURSTS)} bursts, {len(violations)} violations")
if not args.keep:
    agt("daemon", "stop", check=False)
sys.exit(violations.verdict())
