#!/usr/bin/env python3
"""Generated invocations of every `agt` command, checked against the CLI's contract.

Usage: scripts/cli-fuzz.py [--bin target/release/agt] [--home NEW_DIR] [--seed N]
       [--runs 3000] [--keep]

Python 3, stdlib only; needs a release build (`cargo build --release`). What
`scripts/fuzz-api.py` does for the HTTP routes, this does for the CLI scripts call. It
starts a daemon with `agt daemon start` on a fresh home (a temporary directory unless
--home) with TCP on a free port, makes two funded users, resting orders and three tokens
(admin, viewer, trader bound to the first user), then runs --runs invocations of `agt`,
each drawn at random from every command and subcommand of DESIGN.md §5 (`src/cli/`):
valid ones, and ones with one argument replaced by junk (negative, zero, huge, too many
decimals, exponents, NaN and infinities, unicode digits, empty and blank, SQL, control
characters, emoji, 300-character strings), unknown users, symbols, ids and keys, wrong
types, duplicate and unknown flags, missing required arguments, generated CSV files for
`market import` (good rows and a bad one), `bench` and `demo` with bad arguments, wrong
ways to the daemon (a malformed `--url` or `--token`, an unknown token, a `--socket`
nobody listens on); each with `-o json` or tables, `-q` sometimes, over the socket or
over TCP with one of the tokens. Then the
same commands with `--home` of a directory no daemon ever ran in, and after
`agt daemon stop`, against the stopped daemon.

For each invocation it checks:
- no panic text or backtrace on stderr, no death by a signal;
- the exit code is one the contract allows (0 ok, 1 the daemon answered an error,
  2 usage, 3 unreachable): a valid invocation 0 (or 1 where the daemon may refuse it, as
  for funds), junk 1 or 2, a clap usage error 2, no daemon 3;
- a failure says something on stderr that starts with `error:` (or, for a stopped
  daemon, names it) and names what to fix: not empty, not a Rust debug dump
  (`ApiError {`, `Os {`, `kind:`), not a Rust type's range (`0..=4294967295`); no raw
  escape or bell character reaches the terminal;
- a refused command (exit 1 or 2) changed nothing the API shows: users, accounts,
  limits (global and per user), config, symbols, tokens, halts, holds, orders (but a
  stored rejection) and webhook rules read the same before and after; a viewer's token
  changes nothing, a trader's only its own user's orders;
- with `-o json` and exit 0, stdout is one JSON document (NDJSON for `events tail`) of
  the documented shape (an order has `order_id` and a known status, lists are arrays…);
  with a table and exit 0, stdout is not empty unless `-q`;
- what the CLI says it changed is what `GET` over the socket then reads: a placed order
  is `GET /api/orders/{id}` with the same status and quantity, a refused placement left
  the user's open orders and balances alone (a stored rejection is `rejected`), a
  deposit or withdrawal moved the balance by exactly its amount and a refused one not
  at all, a cancel left the order cancelled, an amend's price and quantity are the
  order's, a created user and token can be read back, a refused user create added none,
  a `risk set` and `config set` read back as set.

Prints each violation (the command line, exit code, stdout and stderr cut short) and a
summary (invocations per command and exit code); exits 1 if there was a violation. Takes
about a minute for 3000 invocations: never run by `cargo test`. Bugs it found have a test
in `tests/it/cli.rs` or `tests/it/cli_offline.rs` each.
"""
import argparse, atexit, json, os, random, re, shutil, subprocess, sys, tempfile, time
from collections import Counter
from decimal import Decimal as D, InvalidOperation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agt_unix import Conn, Problems  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--runs", type=int, default=3000)
ap.add_argument("--keep", action="store_true", help="leave the daemon running at the end")
args = ap.parse_args()
rng = random.Random(args.seed)
root = args.home or tempfile.mkdtemp(prefix="agt-clifuzz-")
home = os.path.join(root, "home")
nowhere = os.path.join(root, "nowhere")  # a home no daemon ever ran in
os.makedirs(home, exist_ok=True)
os.makedirs(nowhere, exist_ok=True)
print(f"home {root}, seed {args.seed}, binary {args.bin}", flush=True)

ENV = {k: v for k, v in os.environ.items() if not k.startswith("AGT_")}
ENV["RUST_BACKTRACE"] = "1"  # a panic would print its backtrace: the check sees either
violations = Problems()
violation = violations  # records and prints a violation
runs = Counter()


def agt(argv, where=None, timeout=30):
    """Runs `agt --home WHERE argv`: (exit code, stdout, stderr). A signal is -N."""
    p = subprocess.run([args.bin, "--home", where or home] + argv, env=ENV, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def must(argv):
    rc, out, err = agt(["-o", "json"] + argv)
    if rc != 0:
        sys.exit(f"setup: agt {' '.join(argv)} exited {rc}: {err}")
    return json.loads(out) if out.strip() else None


def stop_daemon():
    agt(["daemon", "stop"], timeout=60)


# --- setup -------------------------------------------------------------------------
rc, out, err = agt(["daemon", "start", "--http", "127.0.0.1:0"], timeout=60)
if rc != 0:
    sys.exit(f"daemon start exited {rc}: {err}")
if not args.keep:
    atexit.register(stop_daemon)
http = must(["daemon", "status"])["http"]
url = f"http://{http}"
conn = Conn(home, lambda m: violation(f"5xx on a read-back: {m}"))


def api(method, path, body=None):
    global conn
    for _ in range(3):
        try:
            return conn.call(method, path, body)
        except Exception:
            conn = Conn(home, lambda m: violation(f"5xx on a read-back: {m}"))
    return conn.call(method, path, body)


tag = f"{rng.randrange(1 << 30):x}"
USERS = [f"alice{tag}", f"bob{tag}"]
uid = {}
for u in USERS:
    uid[u] = must(["user", "create", u, "--email", f"{u}@example.com"])["user_id"]
    must(["user", "deposit", u, "USD", "10000000"])
    for asset in ("AAPL", "BTC", "MSFT"):
        must(["user", "deposit", u, asset, "100000"])
TOKENS = {r: must(["token", "create", "--role", r] + (["--user", USERS[0]] if r == "trader" else []))["token"] for r in ("admin", "viewer", "trader")}
SYMBOLS = [s["symbol"] for s in must(["symbol", "list"])]
orders = []  # ids of orders placed, any status
for i in range(6):
    o = must(["order", "place", USERS[i % 2], "AAPL", "buy" if i % 2 else "sell", "1", str(200 + i) if i % 2 == 0 else str(100 - i)])
    orders.append(o["order_id"])
print(f"users {USERS}, symbols {SYMBOLS}, http {http}", flush=True)

# --- values ------------------------------------------------------------------------
BAD_NUM = ["-1", "-0.01", "0", "-0", "0.000", "1e400", "1e3", "1E2", "99999999999999999999999999999999", "79228162514264337593543950336",
           "0.0000000000000000000000000001", "1.123456789012345678901234567890", "NaN", "nan", "inf", "-inf", "Infinity", "", " ",
           "abc", "١٢", "１", "1,5", "0x10", "1_000", "+1", "1.", ".", ".5", " 1", "1 ", "💥", "1e-5", "--1", "1/2", "null",
           "true", "[1]", "{}", "{\"a\":1}", "\"1\"", "1..2", "0001", "1e", "e1", "-", "\t", "1\n2"]
BAD_STR = ["", " ", "x" * 300, "'; DROP TABLE users;--", "\x1b[31mred", "é", "😀", "a b", "a\nb", "../..", "%2F", "a/b", "?a=1", "#",
           "ord_doesnotexist", "usr_0000000000000000", "tok_000000000000", "null", "NaN", "-1", "--", "-x", "\u202e", "a" * 65]
GOOD_QTY = ["1", "2", "3", "10"]
GOOD_PRICE = ["100", "99.5", "150.25", "101.01", "200"]


def pick(xs):
    return rng.choice(xs)


def user():
    return pick(USERS + [uid[USERS[0]]])


def order_id():
    return pick(orders) if orders else "ord_none"


def junk():
    return pick(BAD_NUM + BAD_STR)


def dec(x):
    try:
        d = D(x)
    except (InvalidOperation, TypeError):
        return None
    return d if d.is_finite() else None


def positive(x):
    d = dec(x.strip()) if isinstance(x, str) and x.strip() else None
    return d is not None and d > 0


def balances(u):
    s, acct = api("GET", f"/api/users/{uid[u]}/account")
    return {b["asset"]: (D(b["total"]), D(b["held"])) for b in acct["balances"]} if s == 200 else None


WORLD = ["/api/users", "/api/risk/limits", "/api/config", "/api/symbols", "/api/tokens?all=true", "/api/risk/state",
         "/api/risk/holds", "/api/orders?status=all&limit=10000", "/api/notifications/rules"]


def world():
    """What a refused command must leave as it was: every user, limit, setting, symbol,
    token, halt, hold, order (but a stored rejection, which a refused placement adds) and
    account. Per-user limits are read for the two users too."""
    w = {}
    for path in WORLD + [f"/api/users/{i}/account" for i in uid.values()] + [f"/api/risk/limits?user_id={i}" for i in uid.values()]:
        s, v = api("GET", path)
        if path.startswith("/api/orders"):
            v = sorted((o["order_id"], o["status"], o["price"], o["quantity"], o["filled_quantity"]) for o in v if o["status"] != "rejected")
        w[path] = (s, v)
    return w


def open_orders(u):
    s, lst = api("GET", f"/api/orders?user_id={uid[u]}&status=all&limit=10000")
    return {o["order_id"]: o["status"] for o in lst} if s == 200 else None


# --- cases -------------------------------------------------------------------------
# A case: (name, argv, allowed exit codes, shape check for -o json, state check).
# A state check is (before(), after(rc, json_or_None, before_value)).

ORDER_STATUSES = {"new", "partially_filled", "filled", "cancelled", "rejected", "expired"}


def is_order(v):
    return isinstance(v, dict) and str(v.get("order_id", "")).startswith("ord_") and v.get("status") in ORDER_STATUSES and "quantity" in v


def is_user(v):
    return isinstance(v, dict) and all(k in v for k in ("user_id", "username", "email", "status"))


def is_account(v):
    return isinstance(v, dict) and isinstance(v.get("balances"), list) and "user_id" in v


def list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def is_dict(*keys):
    return lambda v: isinstance(v, dict) and all(k in v for k in keys)


ANY = lambda v: True  # noqa: E731


def place_case():
    u = rng.choice(USERS)
    sym = pick(SYMBOLS[:3] + ["AAPL", "AAPL", "NOPE", "aapl"])
    side = pick(["buy", "sell"])
    qty, price = pick(GOOD_QTY), pick(GOOD_PRICE + [None])
    extra = []
    bad = False
    r = rng.random()
    if r < 0.25:
        qty, bad = junk(), True
    elif r < 0.45 and price is not None:
        price, bad = junk(), True
    elif r < 0.5:
        side, bad = junk(), True
    if rng.random() < 0.3:
        extra += ["--tif", pick(["gtc", "ioc", "fok", "GTC", "day", ""])]
    if rng.random() < 0.2:
        extra += ["--type", pick(["limit", "market", "stop"])]
    if rng.random() < 0.2:
        extra += ["--client-id", pick([f"c{rng.randrange(50)}", "", "x" * 300, "😀", "a b"])]
    argv = ["order", "place", u, sym, side, qty] + ([price] if price is not None else []) + extra
    # " 1" and "1E2" are decimals too (the daemon trims and reads exponents): junk only
    # when it is not a positive decimal at all.
    codes = {1, 2} if bad and not all(positive(x) for x in (qty, price) if x is not None) or side not in ("buy", "sell") else {0, 1, 2}
    if "--" in argv:
        codes = {0, 1, 2}  # `--` ends the options: what follows is taken as the next positional

    def before():
        return balances(u), open_orders(u)

    def after(rc, v, b):
        bal0, ords0 = b
        bal1, ords1 = balances(u), open_orders(u)
        new = set(ords1) - set(ords0)
        if rc == 0 and v is not None:
            if not is_order(v):
                return
            s, o = api("GET", f"/api/orders/{v['order_id']}")
            if s != 200:
                violation(f"{argv}: placed {v['order_id']} but GET says {s} {o}")
            elif (o["status"], D(o["quantity"])) != (v["status"], D(v["quantity"])) and o["status"] not in ("filled", "partially_filled", "cancelled"):
                violation(f"{argv}: the CLI said {v['status']} {v['quantity']}, GET says {o['status']} {o['quantity']}")
            if v.get("client_order_id") is None and "--client-id" not in argv and v["order_id"] not in new:
                violation(f"{argv}: placed {v['order_id']}, not among the user's new orders")
            orders.append(v["order_id"])
        elif rc != 0:
            stray = [o for o in new if ords1[o] != "rejected"]
            if stray:
                violation(f"{argv}: exit {rc} yet the user has new live orders {stray}")
            if bal0 != bal1 and not any(ords1[o] != ords0.get(o) for o in ords0):
                violation(f"{argv}: exit {rc} yet balances moved {bal0} -> {bal1}")
            for o in new:
                orders.append(o)
    return ("order place", argv, codes, is_order, (before, after))


def funds_case(kind):
    u = rng.choice(USERS)
    asset = pick(["USD", "USD", "AAPL", "BTC", "NOPE", "usd", ""])
    amt = pick(["1", "0.5", "12.34", "100"]) if rng.random() < 0.5 else junk()
    argv = ["user", kind, pick([u, uid[u]]), asset, amt]

    def before():
        return balances(u)

    def after(rc, v, b):
        b1 = balances(u)
        if rc == 0 and positive(amt):
            key = asset if asset in b1 else asset.upper()
            was = b.get(key, (D(0), D(0)))[0]
            want = was + dec(amt.strip()) if kind == "deposit" else was - dec(amt.strip())
            if b1.get(key, (D(0),))[0] != want:
                violation(f"{argv}: exit 0, total {was} -> {b1.get(key)} (want {want})")
        elif rc != 0 and b1 != b:
            violation(f"{argv}: exit {rc} yet balances moved {b} -> {b1}")
    ok = asset in ("USD", "AAPL", "BTC") and positive(amt)
    return (f"user {kind}", argv, {0, 1} if ok and not asset.startswith("-") else {0, 1, 2} if positive(amt) else {1, 2}, is_account, (before, after))


def user_create_case():
    name = f"u{tag}{rng.randrange(10**6)}" if rng.random() < 0.5 else pick(BAD_STR + [USERS[0], USERS[0].upper()])
    email = f"{name}@example.com" if rng.random() < 0.6 else pick(BAD_STR + ["a@b", "no-at", "a@@b", f"{USERS[0]}@example.com"])
    argv = ["user", "create", name, "--email", email]

    def before():
        s, lst = api("GET", "/api/users")
        return len(lst)

    def after(rc, v, n):
        s, lst = api("GET", "/api/users")
        if rc == 0 and v is not None and is_user(v):
            if api("GET", f"/api/users/{v['user_id']}")[0] != 200:
                violation(f"{argv}: created {v['user_id']} but GET does not find it")
        elif rc != 0 and len(lst) != n:
            violation(f"{argv}: exit {rc} yet users went {n} -> {len(lst)}")
    return ("user create", argv, {0, 1, 2}, is_user, (before, after))


def cancel_case():
    oid = order_id() if rng.random() < 0.7 else pick(BAD_STR)
    argv = ["order", "cancel", oid]

    def after(rc, v, b):
        if rc == 0 and is_order(v):
            s, o = api("GET", f"/api/orders/{oid}")
            if o.get("status") not in ("cancelled",):
                violation(f"{argv}: exit 0 yet GET says {o.get('status')}")
    return ("order cancel", argv, {0, 1, 2}, is_order, (lambda: None, after))


def amend_case():
    oid = order_id() if rng.random() < 0.8 else pick(BAD_STR)
    extra = []
    price = qty = None
    if rng.random() < 0.6:
        price = pick(GOOD_PRICE) if rng.random() < 0.5 else junk()
        extra += ["--price", price]
    if rng.random() < 0.5 or not extra:
        qty = pick(GOOD_QTY) if rng.random() < 0.5 else junk()
        extra += ["--qty", qty]
    argv = ["order", "amend", oid] + extra

    def after(rc, v, b):
        if rc == 0 and is_order(v):
            s, o = api("GET", f"/api/orders/{oid}")
            if price is not None and dec(o["price"]) != dec(price):
                violation(f"{argv}: exit 0 yet the order's price is {o['price']}")
            if qty is not None and dec(o["quantity"]) != dec(qty):
                violation(f"{argv}: exit 0 yet the order's quantity is {o['quantity']}")
    return ("order amend", argv, {0, 1, 2}, is_order, (lambda: None, after))


def risk_set_case():
    key = pick(["max_open_orders", "max_order_quantity", "max_order_notional", "max_orders_per_second", "price_band_pct", "allow_short", "nope", ""])
    good = {"max_open_orders": ["200", "1000"], "max_order_quantity": ["1000000"], "max_order_notional": ["10000000"],
            "max_orders_per_second": ["1000", "5000"], "price_band_pct": ["50", "90"], "allow_short": ["false"]}.get(key, ["1"])
    val = pick(good) if rng.random() < 0.5 else junk()
    extra = ["--user", user()] if rng.random() < 0.3 else []
    if extra and rng.random() < 0.3:
        val = "default"
    argv = ["risk", "set", key, val] + extra

    def after(rc, v, b):
        if rc == 0 and isinstance(v, dict) and key in v and val != "default":
            q = f"?user_id={uid.get(extra[1], extra[1])}" if extra else ""
            s, lim = api("GET", f"/api/risk/limits{q}")
            if str(lim.get(key)).lower() != str(v.get(key)).lower():
                violation(f"{argv}: the CLI answered {key}={v.get(key)}, GET says {lim.get(key)}")
    return ("risk set", argv, {0, 1, 2}, is_dict(), (lambda: None, after))


def config_set_case():
    key = pick(["risk.max_open_orders", "risk.price_band_pct", "log.level", "trading.order_timeout_s", "nope.key", "", "risk", "symbols"])
    val = pick({"risk.max_open_orders": ["300"], "risk.price_band_pct": ["60"], "log.level": ["info", "debug"],
                "trading.order_timeout_s": ["30"]}.get(key, ["1"])) if rng.random() < 0.5 else junk()
    argv = ["config", "set", key, val]

    def after(rc, v, b):
        if rc == 0:
            s, cfg = api("GET", "/api/config")
            node = cfg
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                violation(f"{argv}: exit 0 yet GET /api/config has no {key}")
    return ("config set", argv, {0, 1, 2}, is_dict(), (lambda: None, after))


def token_create_case():
    role = pick(["admin", "viewer", "trader", "trader", "root", ""])
    extra = []
    if rng.random() < 0.6:
        extra += ["--user", user() if rng.random() < 0.6 else pick(BAD_STR)]
    if rng.random() < 0.5:
        extra += ["--name", pick(["ci", "x" * 300, "😀", "", "a b", f"n{rng.randrange(100)}"])]
    argv = ["token", "create", "--role", role] + extra

    def after(rc, v, b):
        if rc == 0 and isinstance(v, dict) and "id" in v:
            s, lst = api("GET", "/api/tokens")
            if v["id"] not in [t["id"] for t in lst]:
                violation(f"{argv}: created {v['id']} but GET /api/tokens lacks it")
            if v["token"] in json.dumps(lst):
                violation(f"{argv}: GET /api/tokens shows a secret")
    return ("token create", argv, {0, 1, 2}, is_dict("id", "token", "role", "user_id"), (lambda: None, after))


def simple(name, argv, codes, shape):
    return (name, argv, codes, shape, None)


def maybe(x, junk_p=0.4, pool=None):
    return x if rng.random() >= junk_p else pick(pool or (BAD_NUM + BAD_STR))


def import_case():
    """A generated CSV of old bars for one symbol: good rows, and sometimes a bad one (a
    wrong field, a bar off its interval, low above high, an unknown symbol, junk). All or
    nothing: a refused import leaves that symbol's candles as they were."""
    sym, interval = pick(SYMBOLS), pick(["1d", "1h"])
    step = 86400 if interval == "1d" else 3600
    start = 1_600_000_000 // 86400 * 86400 + rng.randrange(1000) * 86400
    rows = []
    for i in range(rng.randrange(1, 6)):
        o = D(rng.randrange(9000, 11000)) / 100
        row = [sym, interval, str(start + i * step), str(o), str(o + 1), str(o - 1), str(o), str(rng.randrange(1000))]
        rows.append(row)
    bad = rng.random() < 0.5
    if bad:
        row = pick(rows)
        row[rng.randrange(8)] = pick(BAD_NUM + BAD_STR + ["1e2", "NOPE", "1m", "2999-01-01", "1600000001"])
    text = "symbol,interval,open_time,open,high,low,close,volume\n" + "\n".join(",".join(r) for r in rows) + "\n"
    path = os.path.join(root, f"bars{rng.randrange(1 << 30)}.csv")
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    candles = lambda: api("GET", f"/api/market/{sym}/candles?interval={interval}&limit=10000")  # noqa: E731

    def after(rc, v, b):
        c = candles()
        if rc == 0:
            opens = {str(x.get("open_time")) for x in c[1]} if c[0] == 200 else set()
            if c[0] != 200 or len(c[1]) < len(b[1]):
                violation(f"market import {text!r}: exit 0 yet candles went {b} -> {c}")
        elif c != b:
            violation(f"market import {text!r}: exit {rc} yet {sym}'s {interval} candles changed")
    return ("market import", ["market", "import", path], {0, 1, 2} if bad else {0}, is_dict(), (candles, after))


def tool_case():
    """`bench` and `demo` with a bad argument: refused before they start (exit 2); a
    short valid bench now and then."""
    if rng.random() < 0.05:
        # Exit 1 (bench_failed, its report still printed) when the fuzz's limits refuse it.
        return simple("bench", ["bench", "--orders", "40", "--concurrency", "2", "--symbols", "1"], {0, 1}, is_dict())
    cmd, flags = pick([("bench", ["--orders", "--concurrency", "--symbols", "--via"]), ("demo", ["--users", "--rate", "--duration"])])
    # Never a value that could run (`demo --duration 0` runs until Ctrl-C, `+1` is a count).
    return simple(cmd, [cmd, pick(flags), pick(["-5", "abc", "", " ", "NaN", "inf", "1y", "99999999999h", "💥", "1,5", "0x10", "-0.5", "1e999"])], {2}, None)


def connection_case():
    """A read through a wrong way to the daemon: a malformed URL or token is a usage
    error (2), a place nobody listens 3, a token the daemon does not know 1 (401)."""
    cmd = pick([["user", "list"], ["order", "list"], ["risk", "state"], ["config", "show"]])
    host = http.rsplit(":", 1)[0]
    way, codes = pick([
        (["--url", pick(["junk", "ftp://x", "http://", "http://[::1", "http://127.0.0.1:99999", "127.0.0.1", "😀"]), "--token", TOKENS["admin"]], {2, 3}),
        (["--url", f"http://{host}:1", "--token", TOKENS["admin"]], {3}),
        (["--url", url], {1, 2}),
        (["--url", url, "--token", pick(["", " ", "agt_" + "0" * 48, "Bearer x", "x" * 300, "tok\nx", "😀"])], {1, 2}),
        (["--url", url, "--token", TOKENS["admin"]], {0}),
        (["--socket", pick(["/nonexistent/agt.sock", "/etc/hostname", root])], {3}),
        (["--socket", os.path.join(home, "agt.sock")], {0}),
    ])
    return (f"connection {way[0]}", way + cmd, codes, ANY, None)


def gen():
    """One case drawn from every command; roughly a third carry junk."""
    r = rng.randrange(50)
    if r == 46:
        return connection_case()
    if r in (47, 48):
        return import_case()
    if r == 49:
        return tool_case()
    sym = lambda: maybe(pick(SYMBOLS[:4]), 0.3)  # noqa: E731
    if r < 6:
        return place_case()
    if r < 8:
        return funds_case(pick(["deposit", "withdraw"]))
    if r < 9:
        return user_create_case()
    if r < 11:
        return cancel_case()
    if r < 13:
        return amend_case()
    if r < 14:
        return risk_set_case()
    if r < 15:
        return config_set_case()
    if r < 16:
        return token_create_case()
    table = [
        lambda: simple("health", ["health"], {0}, is_dict("status", "services")),
        lambda: simple("service list", ["service", pick(["list", "ls"])], {0}, list_of(is_dict("name", "state"))),
        lambda: simple("service restart", ["service", "restart", maybe(pick(["market", "notify", "health"]), 0.6, BAD_STR)], {0, 1, 2}, is_dict()),
        lambda: simple("user get", ["user", "get", maybe(user(), 0.4, BAD_STR)], {0, 1, 2}, is_user),
        lambda: simple("user list", ["user", pick(["list", "ls"])], {0}, list_of(is_user)),
        lambda: simple("user update", ["user", "update", maybe(user(), 0.2, BAD_STR)] + pick([["--status", maybe("active", 0.4, BAD_STR)], ["--email", maybe(f"{USERS[0]}@example.com", 0.5, BAD_STR)], []]), {0, 1, 2}, is_user),
        lambda: simple("user enable", ["user", "enable", maybe(user(), 0.4, BAD_STR)], {0, 1, 2}, is_user),
        lambda: simple("user account", ["user", "account", maybe(user(), 0.4, BAD_STR)], {0, 1, 2}, is_account),
        lambda: simple("order get", ["order", "get", maybe(order_id(), 0.4, BAD_STR)], {0, 1, 2}, is_order),
        lambda: simple("order list", ["order", pick(["list", "ls"])] + pick([[], ["--all"], ["--user", maybe(user(), 0.4, BAD_STR)], ["--symbol", sym()], ["--limit", maybe("5", 0.5)]]), {0, 1, 2}, list_of(is_order)),
        lambda: simple("order cancel-all", ["order", "cancel-all", "--symbol", pick(["MSFT", "NOPE", "", "😀"])] + pick([[], ["--user", maybe(USERS[1], 0.5, BAD_STR)]]), {0, 1, 2}, list_of(is_order)),
        lambda: simple("book", ["book", sym()] + pick([[], ["--depth", maybe("3", 0.6)]]), {0, 1, 2}, is_dict("symbol", "bids", "asks")),
        lambda: simple("trades", ["trades", sym()] + pick([[], ["--limit", maybe("5", 0.6)]]), {0, 1, 2}, list_of(is_dict("price", "quantity"))),
        lambda: simple("market quote", ["market", "quote", sym()], {0, 1, 2}, is_dict("symbol", "last")),
        lambda: simple("market candles", ["market", "candles", sym()] + pick([[], ["--interval", maybe("5m", 0.6, BAD_STR + ["0m", "1y", "-1m", "99999999999d"])], ["--limit", maybe("5", 0.6)], ["--from", maybe("2026-01-01", 0.6)], ["--to", maybe("1700000000", 0.6)]]), {0, 1, 2}, list_of(is_dict())),
        lambda: simple("market import", ["market", "import", pick(["/nonexistent.csv", "/etc/hostname", "/", ""])], {1, 2}, ANY),
        lambda: simple("symbol list", ["symbol", pick(["list", "ls"])], {0}, list_of(is_dict("symbol", "tick", "lot"))),
        lambda: simple("symbol add", ["symbol", "add", maybe(f"Z{tag[:4].upper()}{rng.randrange(1000)}", 0.5, BAD_STR + ["aapl", "AAPL"]), "--tick", maybe("0.01", 0.4), "--lot", maybe("1", 0.4)] + pick([[], ["--min-qty", maybe("1", 0.6)], ["--max-qty", maybe("1000", 0.6)]]), {0, 1, 2}, is_dict("symbol", "tick", "lot")),
        lambda: simple("risk limits", ["risk", "limits"] + pick([[], ["--user", maybe(user(), 0.5, BAD_STR)]]), {0, 1, 2}, is_dict("max_open_orders")),
        lambda: simple("risk halt", ["risk", "halt", pick(["MSFT", "NOPE", "", "😀"])], {0, 1, 2}, is_dict("halted", "halted_symbols")),
        lambda: simple("risk resume", ["risk", "resume"] + pick([["MSFT"], [], ["NOPE"], [""]]), {0, 1, 2}, is_dict("halted", "halted_symbols")),
        lambda: simple("risk state", ["risk", "state"], {0}, is_dict("halted", "halted_symbols")),
        lambda: simple("risk holds", ["risk", "holds"] + pick([[], ["--user", maybe(user(), 0.5, BAD_STR)]]), {0, 1, 2}, list_of(is_dict())),
        lambda: simple("events tail", ["events", "tail"] + pick([[], ["--since", maybe(str(rng.randrange(200)), 0.5)], ["--type", maybe("ORDER_CREATED", 0.5, BAD_STR + ["order_created", "ORDER_CREATED,,", "NOPE"])]]), {0, 1, 2}, "ndjson"),
        lambda: simple("audit tail", ["audit", "tail"] + pick([[], ["--since", maybe("5", 0.5)], ["--limit", maybe("3", 0.5)], ["--actor", maybe("socket", 0.5, BAD_STR)]]), {0, 1, 2}, list_of(is_dict("seq", "hash"))),
        lambda: simple("audit verify", ["audit", "verify"], {0}, is_dict("ok", "records")),
        lambda: simple("config show", ["config", "show"], {0}, is_dict("risk")),
        lambda: simple("config get", ["config", "get", maybe(pick(["risk.max_open_orders", "log.level", "risk", "http.listen"]), 0.5, BAD_STR + ["risk.nope", "symbols.99", "symbols.-1", "symbols.0.tick.x"])], {0, 1, 2}, ANY),
        lambda: simple("token list", ["token", pick(["list", "ls"])] + pick([[], ["--all"]]), {0}, list_of(is_dict("id", "role"))),
        lambda: simple("token revoke", ["token", "revoke", pick(BAD_STR + ["tok_nope"])], {1, 2}, ANY),
        lambda: simple("notify list", ["notify", pick(["list", "ls"])] + pick([[], ["--limit", maybe("5", 0.5)], ["--status", maybe("sent", 0.5, BAD_STR)]]), {0, 1, 2}, list_of(is_dict())),
        lambda: simple("notify rules", ["notify", "rules"] + pick([[], ["list"], ["remove", pick(BAD_STR + ["rule_nope"])], ["add", maybe("http://127.0.0.1:9/x", 0.5, BAD_STR + ["ftp://x", "http://"]), "--events", maybe("ORDER_CREATED", 0.5, BAD_STR)]]), {0, 1, 2}, ANY),
        lambda: simple("metrics", ["metrics"], {0}, is_dict()),
        lambda: simple("daemon status", ["daemon", "status"], {0}, is_dict("running", "pid")),
        lambda: simple("completions", ["completions", maybe("bash", 0.5, BAD_STR + ["zsh", "fish", "powershell", "elvish"])], {0, 2}, None),
    ]
    return pick(table)()


USAGE_MUTATIONS = ["unknown flag", "duplicate flag", "drop arg", "extra arg", "bad output"]


def usage_case(case):
    """The same invocation with its command line broken the way clap refuses: exit 2."""
    name, argv, codes, shape, state = case
    if "--" in argv:
        return None  # after `--` a flag is a positional
    m = pick(USAGE_MUTATIONS)
    if m == "unknown flag":
        argv = argv + [pick(["--nope", "--quantity=1", "-z", "--Price"])]
    elif m == "duplicate flag":
        # Not a global option (clap takes one per command level) nor a repeatable list
        # (`events tail --type A --type B`, `notify rules add --events`).
        flags = [i for i, a in enumerate(argv) if a.startswith("--") and a not in ("--url", "--token", "--socket", "--home", "--events", "--type" if name == "events tail" else "")
                 and i + 1 < len(argv) and not argv[i + 1].startswith("-")]
        if not flags:
            return None
        i = pick(flags)
        argv = argv + [argv[i], argv[i + 1]]
    elif m == "drop arg":
        if len(argv) < 3 or name in ("order list", "risk resume", "risk limits", "risk holds", "events tail", "audit tail", "notify rules", "notify list", "token list", "order cancel-all", "market candles", "book", "trades", "symbol add", "order place", "user update", "risk halt", "config get", "token create", "config set", "risk set", "order amend"):
            return None
        argv = argv[:-1]
    elif m == "extra arg":
        if name in ("order place", "risk halt", "risk resume", "notify rules"):
            return None
        argv = argv + ["surplus"]
    else:
        argv = ["-o", pick(["xml", "", "JSON"])] + argv
    return (f"{name} ({m})", argv, {2}, None, None)


# clap's message for a number past its type names the type's range (`0..=4294967295`),
# which no count here takes: say what the daemon takes instead (cli::count_up_to).
TYPE_RANGE = re.compile(r"is not in 0\.\.=(4294967295|65535|255)\b")
DEBUG_DUMP = re.compile(r"ApiError \{|Os \{|kind: |Custom \{|Error \{ |\bSome\(|\bOk\(|\bErr\(|\\\\x")


def check(name, argv, rc, out, err, codes, shape, json_out, quiet, via):
    where = f"[{via}] agt {' '.join(repr(a) if (not a or ' ' in a or not a.isprintable()) else a for a in argv)}"
    short = f"exit {rc}\n  stdout: {out[:300]!r}\n  stderr: {err[:400]!r}"
    if "panicked" in err or "stack backtrace" in err or "RUST_BACKTRACE" in err:
        violation(f"{where}: panic: {short}")
        return
    if rc < 0 or rc not in codes:
        violation(f"{where}: exit {rc} not in {sorted(codes)}: {short}")
        return
    if rc != 0:
        first = err.strip().splitlines()[0] if err.strip() else ""
        if not first:
            violation(f"{where}: failed with nothing on stderr: {short}")
        elif rc == 2 and "\nUsage: agt " in err and "\nCommands:\n" in err:
            pass  # a command without its subcommand: clap shows the subcommands to pick from
        elif not (first.startswith("error:") or "daemon" in first.lower()):
            violation(f"{where}: stderr does not start with `error:`: {short}")
        elif len(" ".join(err.strip().splitlines()[:2])) < 20 or (first.rstrip().endswith(":") and len(err.strip().splitlines()) < 2):
            violation(f"{where}: a failure that does not say what to fix: {short}")
        elif TYPE_RANGE.search(err):
            violation(f"{where}: the range of a Rust type, not what the command takes: {short}")
        elif DEBUG_DUMP.search(err):
            violation(f"{where}: a debug dump in the message: {short}")
        if out.strip() and json_out and not name.startswith("bench"):
            violation(f"{where}: failed but printed data on stdout: {short}")
        return
    if quiet:
        # -q prints a new token's secret alone (shown only then) and the completion
        # script asked for: README.md, "-q".
        if out.strip() and not name.startswith(("token create", "completions")):
            violation(f"{where}: -q printed on stdout: {short}")
        return
    if json_out and shape is not None:
        try:
            if shape == "ndjson":
                vs = [json.loads(l) for l in out.splitlines() if l.strip()]
                if not all(isinstance(e, dict) and "seq" in e and "type" in e for e in vs):
                    violation(f"{where}: events that are not envelopes: {short}")
                return vs
            v = json.loads(out)
        except ValueError as e:
            violation(f"{where}: -o json is not one JSON document ({e}): {short}")
            return
        if not shape(v):
            violation(f"{where}: JSON of the wrong shape: {short}")
        return v
    if not json_out and not out.strip() and name not in ("order list", "token list", "notify list", "risk holds", "events tail", "trades", "market candles", "notify rules", "audit tail"):
        violation(f"{where}: exit 0 with nothing on stdout: {short}")


MUTATING = {"order place", "order cancel", "order amend", "order cancel-all", "user create", "user update", "user enable", "user deposit",
            "user withdraw", "risk set", "risk halt", "risk resume", "config set", "token create", "token revoke", "symbol add",
            "service restart", "market import"}


def run_case(case, where=None):
    name, argv, codes, shape, state = case
    json_out = rng.random() < 0.6
    quiet = rng.random() < 0.08
    via = "socket"
    pre = ["-o", "json"] if json_out else []
    if quiet:
        pre.append("-q")
    if where is None and rng.random() < 0.25 and name not in ("completions", "daemon status", "events tail") and not name.startswith("connection"):
        role = pick(["admin", "admin", "viewer", "trader"])
        pre += ["--url", url, "--token", TOKENS[role]]
        via = role
        if role != "admin":
            codes = codes | {1}  # a viewer or trader may be refused what an admin may do
    before = state[0]() if state else None
    mutating = name.split(" (")[0] in MUTATING or (name == "notify rules" and len(argv) > 2 and argv[2] in ("add", "remove"))
    w0 = world() if where is None and mutating else None
    rc, out, err = agt(pre + argv, where)
    if w0 is not None and rc != 0:
        w1 = world()
        for k in w0:
            if w0[k] != w1[k]:
                violation(f"agt {pre + argv}: exit {rc} ({err.strip()[:200]!r}) yet {k} changed:\n  {str(w0[k])[:400]}\n  {str(w1[k])[:400]}")
    for stream in (out, err):
        if "\x1b" in stream or "\x07" in stream:
            violation(f"agt {pre + argv}: a raw control character reached the terminal: {stream[:300]!r}")
    runs[(name.split(" (")[0], rc)] += 1
    if rc == 0 and mutating and via == "viewer":
        violation(f"agt {pre + argv}: a viewer's token changed something (exit 0)")
    if rc == 0 and mutating and via == "trader" and not (name in ("order place", "order cancel", "order amend", "order cancel-all") and USERS[1] not in argv and uid[USERS[1]] not in argv):
        violation(f"agt {pre + argv}: a trader's token did what only an admin may (exit 0)")
    v = check(name, pre + argv, rc, out, err, codes, shape, json_out, quiet, via)
    if state and not quiet and json_out:
        state[1](rc, v if rc == 0 else None, before)
    elif state:
        state[1](rc, None, before)
    return rc


# --- phase 1: a running daemon -----------------------------------------------------
t0 = time.time()
n = 0
while n < args.runs:
    case = gen()
    if rng.random() < 0.12:
        broken = usage_case(case)
        if broken:
            case = broken
    run_case(case)
    n += 1
    if n % 500 == 0:
        s, _ = api("GET", "/ready")
        log = "".join(open(os.path.join(home, "logs", f)).read() for f in os.listdir(os.path.join(home, "logs")) if f.startswith("agtd.log"))
        if "panicked" in log:
            violation("the daemon's log says panicked")
        print(f"{n} invocations, {len(violations)} violations, {time.time() - t0:.0f}s; /ready {s}", flush=True)
        # Open orders pile up: cancel them so placements keep meeting the limit rarely.
        agt(["order", "cancel-all"])

s, v = api("GET", "/api/audit/verify")
if not (s == 200 and v.get("ok")):
    violation(f"audit verify after the fuzz: {s} {v}")


# --- phase 2: no daemon in --home, then a stopped one ------------------------------
def offline(where, label, k):
    for _ in range(k):
        name, argv, codes, shape, state = gen()
        if name in ("completions",) or name.startswith(("connection", "bench", "demo")):
            continue
        if name == "market import" and argv[-1] in ("/nonexistent.csv", "/", ""):
            continue  # the file is read (and refused) before the daemon is asked
        pre = ["-o", "json"] if rng.random() < 0.5 else []
        rc, out, err = agt(pre + argv, where)
        runs[(f"{label}: {name}", rc)] += 1
        allowed = {3} if name != "daemon status" else {3}
        # A usage error the CLI finds before asking is still a usage error.
        if rc == 2 and codes & {2}:
            allowed = {2, 3}
        check(f"{label}: {name}", pre + argv, rc, out, err, allowed, None, False, False, label)
        if rc == 3 and "agt daemon start" not in err:
            violation(f"{label} agt {argv}: exit 3 without saying how to start the daemon: {err[:300]!r}")


offline(nowhere, "no daemon", max(50, args.runs // 20))
rc, out, err = agt(["daemon", "stop"], timeout=60)
if rc != 0:
    violation(f"daemon stop exited {rc}: {err}")
offline(home, "stopped daemon", max(50, args.runs // 20))
rc, out, err = agt(["-o", "json", "daemon", "status"])
if rc != 3 or json.loads(out or "{}").get("running") is not False:
    violation(f"daemon status of a stopped daemon: exit {rc}, {out[:200]!r} {err[:200]!r}")
if args.keep:
    agt(["daemon", "start", "--http", "127.0.0.1:0"], timeout=60)

total = sum(runs.values())
print(f"\n{total} invocations in {time.time() - t0:.0f}s")
by_cmd = Counter()
for (name, rc), k in sorted(runs.items()):
    by_cmd[name] += k
for name in sorted(by_cmd):
    codes = ", ".join(f"{rc}:{k}" for (nm, rc), k in sorted(runs.items()) if nm == name)
    print(f"  {name:40} {codes}")
print(f"{len(violations)} violations")
if not args.keep:
    shutil.rmtree(root, ignore_errors=True) if not violations else print(f"kept {root} for a look")
sys.exit(violations.verdict())
