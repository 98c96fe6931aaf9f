#!/usr/bin/env python3
"""Live configuration under load, edits and kills: every change acknowledged holds, every
refused one changes nothing, orders obey the configuration in force, and no secret leaks.

Usage: scripts/config-chaos.py [--steps 200] [--bin target/release/agt] [--home NEW_DIR]
       [--seed N] [--kill-every 12] [--only edit,offline_edit,...]

Python 3, stdlib only; needs a release build (`cargo build --release`). It makes a fresh
home (a temporary one unless --home) whose `agt.toml` has TCP off and a webhook with a
secret, starts the daemon with `agt daemon start`, makes three users with USD and AAPL,
and runs orders on AAPL from three connections (chaos.py's kind of workload: crossing
and resting limit orders, cancels) for the whole run. Meanwhile, one step at a time, it
changes the configuration and keeps a ledger of what was acknowledged:

- every settable single-value key (hot and not) through `PUT /api/config` and through
  `agt config set`, with valid values and invalid ones (out of range, wrong type, unknown
  key, several keys at once where one is bad: all or nothing);
- `notify.webhooks` with a new secret;
- global limits through `PUT /api/risk/limits` and `agt risk set`, per-user limits
  (`?user_id=`, also cleared with null), halts and resumes of AAPL and of everything;
- edits of `agt.toml`: valid ones (written in place, or a new file renamed over it),
  invalid values, half-written files (cut inside a string), an empty-but-for-a-bad-key
  file; after each invalid edit the file is put back as the ledger says;
- an edit while the daemon is stopped, then a start (`daemon run`) killed at a random
  moment, then a start: the edit must be in force and announced exactly once, "at start";
- SIGKILL of the daemon every few steps, sometimes while a change is in flight (its
  answer cut off: either value is then accepted, and the ledger takes the one found),
  and sometimes a start on a broken `agt.toml` (it must fail with exit 1 and a message
  naming the key; the file is then repaired and the daemon started).

After every step it checks: `GET /api/config`, `agt config show -o json` and
`GET /api/risk/limits` (global and per user) equal the ledger; `GET /api/risk/state`
equals the halts acknowledged; an order for more than the `max_order_quantity` in force
(the user's own, else the global one) is refused with `max_order_quantity`, one within it
is not refused for its size; an order on a halted symbol gets `trading_halted`; a sell of
AAPL a user does not hold is refused (`insufficient_position`) unless `allow_short` is in
force; the `CONFIG_CHANGED` events since the step name exactly the keys that changed
(none for a refused change or a no-op) with the new value; no 5xx answer. At the end:
the webhook secrets ever used appear in no event, no file under `logs/`, no CLI output,
and not in `GET /api/audit`. Prints every violation; exits 1 if there was one. Not run by
`cargo test`.
"""
import argparse, json, os, random, signal, subprocess, sys, tempfile, threading, time

import agt_unix  # scripts/agt_unix.py: HTTP over the daemon's socket
from agt_unix import Gone

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--kill-every", type=int, default=12, help="a SIGKILL and restart about every N steps (0: none)")
ap.add_argument("--only", help="run only these kinds of step, comma-separated (api_set, cli_set, risk_limits, halt, edit, offline_edit)")
args = ap.parse_args()
rng = random.Random(args.seed)
home = args.home or tempfile.mkdtemp(prefix="agt-config-chaos-")
os.makedirs(home, exist_ok=True)
CONF = f"{home}/agt.toml"
print(f"home {home}, seed {args.seed}, binary {args.bin}", flush=True)

problems = agt_unix.Problems()
problem = problems  # records and prints a violation
secrets = set()
outputs = []  # every CLI output, searched for secrets at the end
Conn = agt_unix.connector(home, problem)  # a new connection to this run's daemon


def call(method, path, body=None):
    return Conn().call(method, path, body)


def ok(method, path, body=None):
    return agt_unix.ok(Conn(), method, path, body)


def agt(*a):
    r = subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True)
    outputs.append(r.stdout + r.stderr)
    return r


def events_since(seq, types="CONFIG_CHANGED"):
    q = f"&type={types}" if types else ""
    return agt_unix.events(home, f"since={seq}{q}")[1]


def last_seq():
    evs = events_since(0, "CONFIG_CHANGED,RISK_LIMIT_CHANGED,TRADING_STATE_CHANGED")
    return evs[-1]["seq"] if evs else 0


# --- the configuration the script acknowledged ---------------------------------------
# Values as `GET /api/config` flattens them; decimals as the strings it shows.
# key: (valid values, invalid values)
KEYS = {
    "log.level": (["info", "debug", "warn", "info"], ["loud", 3, ""]),
    "log.keep_days": ([0, 3, 14, 30], [-1, "x", 1.5]),
    "trading.order_timeout_s": ([5, 30, 3600], [0, 3601, "soon"]),
    "trading.spin_us": ([0, 50, 200, 1000], [1001, -5]),
    "trading.background_nice": ([0, 5, 10, 19], [20, -1]),
    "trading.sched_batch": ([True, False], ["maybe", 2]),
    "trading.confine_background": ([True, False], ["perhaps"]),
    "risk.max_open_orders": ([50, 1000, 100000], [0, -3, "many"]),
    "risk.max_order_quantity": (["5", "40", "1000", "1000000"], ["0", "-1", "lots"]),
    "risk.max_order_notional": (["100000", "10000000"], ["0", "x"]),
    "risk.max_orders_per_second": ([100000, 50000], [0, "fast"]),
    "risk.price_band_pct": (["10", "50", "1000"], ["0", "1001", "wide"]),
    "risk.allow_short": ([True, False], ["sometimes", 7]),
    "debug.fault_injection": ([True, False], ["on-ish"]),
    "supervisor.max_restarts": ([0, 5, 1000], [1001, -1]),
    "supervisor.window_s": ([1, 60, 86400], [0, 86401]),
    "supervisor.backoff_initial_ms": ([100, 50], [0]),
    "supervisor.backoff_max_ms": ([5000, 200], [0, 3600001]),
    "events.retain_s": ([0, 604800, 3600], [-1]),
    "durability": (["normal", "full"], ["fast", "fsync"]),
}
ledger = {}  # key -> value acknowledged
user_limits = {}  # user -> {limit: value}
halted = {"all": False, "AAPL": False}
WEBHOOK_URL = "http://127.0.0.1:9/agt-hook"


def new_secret():
    s = "sEcReT-" + "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(16))
    secrets.add(s)
    return s


def norm(key, v):
    """A value as the API shows it: decimals as normalized strings, others as they are."""
    if key in ("risk.max_order_quantity", "risk.max_order_notional", "risk.price_band_pct"):
        return str(v)
    return v


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def render(values, webhook_secret, broken=None):
    """agt.toml holding `values` (plus `broken` = (key, raw toml) replacing one)."""
    sections = {}
    for k, v in values.items():
        sec, _, name = k.rpartition(".")
        sections.setdefault(sec, []).append((name, toml_value(v)))
    if broken:
        sec, _, name = broken[0].rpartition(".")
        sections.setdefault(sec, [])
        sections[sec] = [(n, t) for n, t in sections[sec] if n != name] + [(name, broken[1])]
    out = []
    for name, text in sections.get("", []):
        out.append(f"{name} = {text}")
    for sec in sorted(s for s in sections if s):
        if sec == "http":
            continue
        out.append(f"[{sec}]")
        out.extend(f"{n} = {t}" for n, t in sections[sec])
    out.append('[http]\nlisten = ""')
    out.append(f'[[notify.webhooks]]\nurl = "{WEBHOOK_URL}"\nevents = ["USER_CREATED"]\nsecret = "{webhook_secret}"')
    return "\n".join(out) + "\n"


webhook_secret = new_secret()
with open(CONF, "w") as f:
    f.write(render({"risk.max_orders_per_second": 100000, "risk.max_open_orders": 100000}, webhook_secret))
os.chmod(CONF, 0o600)


def start(expect_ok=True):
    """`agt daemon start`; unless `expect_ok`, a failed start is the caller's to judge."""
    return agt_unix.start(agt) if expect_ok else agt("daemon", "start")


def pid():
    return agt_unix.pid(home)


def kill():
    p = pid()
    os.kill(p, signal.SIGKILL)
    for _ in range(500):
        try:
            os.kill(p, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


# --- the order workload ----------------------------------------------------------------
stop = threading.Event()
paused = threading.Event()  # set while the daemon is down
counts = {"orders": 0, "refused": 0, "gone": 0}


def trader(name):
    r = random.Random(rng.random())
    c = None
    while not stop.is_set():
        if paused.is_set():
            c = None
            time.sleep(0.05)
            continue
        try:
            c = c or Conn()
            if r.random() < 0.15:
                c.call("POST", "/api/orders/cancel-all", {"user_id": name})
                continue
            s, o = c.call("POST", "/api/orders", {"user_id": name, "symbol": "AAPL", "side": r.choice(["buy", "sell"]),
                                                  "type": "limit", "price": str(r.choice([99, 100, 101])),
                                                  "quantity": str(r.randint(1, 3))})
            counts["orders"] += 1
            if s >= 400:
                counts["refused"] += 1
        except (Gone, OSError):
            counts["gone"] += 1
            c = None
            time.sleep(0.05)


# --- checks ------------------------------------------------------------------------------
def flat_config():
    v = ok("GET", "/api/config")
    out = {}

    def walk(prefix, x):
        if isinstance(x, dict):
            for k, y in x.items():
                walk(f"{prefix}.{k}" if prefix else k, y)
        else:
            out[prefix] = x
    walk("", v)
    return out, v


def check_config(label):
    flat, whole = flat_config()
    for k, want in ledger.items():
        if flat.get(k) != norm(k, want):
            problem(f"{label}: GET /api/config {k} = {flat.get(k)!r}, acknowledged {want!r}")
    hooks = whole.get("notify", {}).get("webhooks", [])
    if any(h.get("secret") not in (None, "***") for h in hooks):
        problem(f"{label}: GET /api/config shows a webhook secret: {hooks}")
    r = agt("config", "show", "-o", "json")
    if r.returncode != 0:
        problem(f"{label}: agt config show: {r.returncode} {r.stderr}")
    else:
        shown = json.loads(r.stdout)
        if shown != whole:
            problem(f"{label}: agt config show -o json differs from GET /api/config")
    limits = ok("GET", "/api/risk/limits")
    for k, v in limits.items():
        key = f"risk.{k}"
        if key in ledger and v != norm(key, ledger[key]):
            problem(f"{label}: GET /api/risk/limits {k} = {v!r}, acknowledged {ledger[key]!r}")
    for user, own in user_limits.items():
        eff = ok("GET", f"/api/risk/limits?user_id={user}")
        for k, v in own.items():
            if eff.get(k) != norm(f"risk.{k}", v):
                problem(f"{label}: {user}'s limit {k} = {eff.get(k)!r}, acknowledged {v!r}")
    state = ok("GET", "/api/risk/state")
    if state["halted"] != halted["all"] or ("AAPL" in state["halted_symbols"]) != halted["AAPL"]:
        problem(f"{label}: /api/risk/state {state}, acknowledged {halted}")


def effective(user, limit):
    own = user_limits.get(user, {})
    if limit in own:
        return own[limit]
    return ledger.get(f"risk.{limit}")


def probe(label):
    """Orders placed now obey the configuration acknowledged."""
    user = rng.choice(USERS)
    maxq = effective(user, "max_order_quantity")
    if halted["all"] or halted["AAPL"]:
        s, o = call("POST", "/api/orders", {"user_id": user, "symbol": "AAPL", "side": "buy", "type": "limit", "price": "1", "quantity": "1"})
        if s != 422 or o["error"]["code"] != "trading_halted":
            problem(f"{label}: an order on halted AAPL answered {s} {o}")
        return
    if maxq is not None and int(float(maxq)) < 100000:
        q = int(float(maxq)) + 1
        s, o = call("POST", "/api/orders", {"user_id": user, "symbol": "AAPL", "side": "buy", "type": "limit", "price": "1", "quantity": str(q)})
        code = o.get("error", {}).get("code") if isinstance(o, dict) else None
        if code != "max_order_quantity":
            problem(f"{label}: {user} buying {q} over max_order_quantity {maxq} answered {s} {o}")
        elif s < 300:
            call("DELETE", f"/api/orders/{o['order_id']}")
    # allow_short: a seller of what the short user does not hold
    short = effective("shorty", "allow_short")
    s, o = call("POST", "/api/orders", {"user_id": "shorty", "symbol": "AAPL", "side": "sell", "type": "limit", "price": "105", "quantity": "1"})
    code = o.get("error", {}).get("code") if isinstance(o, dict) and "error" in o else None
    if short and code is not None:
        problem(f"{label}: allow_short on for shorty, a sell answered {s} {o}")
    if not short and code != "insufficient_position":
        problem(f"{label}: allow_short off for shorty, a sell answered {s} {o}")
    if s < 300 and isinstance(o, dict) and "order_id" in o:
        call("DELETE", f"/api/orders/{o['order_id']}")


def check_events(label, since, expect):
    """`expect`: {key: value} that changed (value None: any value). An edit's events come
    after the service's commit, a moment after the file was seen: waited for, up to 3 s."""
    deadline = time.time() + 3
    while True:
        evs = [e for e in events_since(since) if e["type"] == "CONFIG_CHANGED"]
        if len({e["data"]["key"] for e in evs}) >= len(expect) or time.time() > deadline:
            break
        time.sleep(0.1)
    got = {}
    for e in evs:
        d = e["data"]
        got[d["key"]] = d["value"]
        blob = json.dumps(e)
        for s in secrets:
            if s in blob:
                problem(f"{label}: a secret in a CONFIG_CHANGED event: {blob[:200]}")
    if set(got) != set(expect):
        problem(f"{label}: CONFIG_CHANGED named {sorted(got)}, the change was {sorted(expect)}")
        return
    for k, v in expect.items():
        if v is not None and got[k] != norm(k, v):
            problem(f"{label}: CONFIG_CHANGED {k} value {got[k]!r}, set {v!r}")


# --- steps -------------------------------------------------------------------------------
def settable():
    return list(KEYS)


def step_api_set(label):
    k = rng.choice(settable())
    valid = rng.random() < 0.7
    if valid:
        v = rng.choice(KEYS[k][0])
        body = {k: v}
        # sometimes a valid pair (backoff) together
        if k.startswith("supervisor.backoff"):
            body = {"supervisor.backoff_initial_ms": 100, "supervisor.backoff_max_ms": rng.choice([200, 5000])}
    else:
        v = rng.choice(KEYS[k][1])
        body = {k: v}
        if rng.random() < 0.4:  # a good key beside a bad one: nothing applies
            g = rng.choice([x for x in settable() if x != k])
            body[g] = rng.choice(KEYS[g][0])
    since = last_seq()
    s, o = call("PUT", "/api/config", body)
    if valid:
        if s != 200:
            problem(f"{label}: PUT /api/config {body} answered {s} {o}")
            return
        expect = {kk: vv for kk, vv in body.items() if ledger.get(kk, DEFAULTS.get(kk)) != norm(kk, vv)}
        ledger.update({kk: norm(kk, vv) for kk, vv in body.items()})
        check_events(label, since, expect)
    else:
        if s not in (400, 422) or not isinstance(o, dict) or "error" not in o:
            problem(f"{label}: PUT /api/config {body} (invalid) answered {s} {o}")
        elif k not in json.dumps(o["error"]):
            problem(f"{label}: PUT /api/config {body} refused without naming {k}: {o}")
        check_events(label, since, {})


def step_cli_set(label):
    k = rng.choice(settable())
    valid = rng.random() < 0.7
    v = rng.choice(KEYS[k][0] if valid else KEYS[k][1])
    text = ("true" if v else "false") if isinstance(v, bool) else str(v)
    since = last_seq()
    r = agt("config", "set", k, text)
    if valid:
        if r.returncode != 0:
            problem(f"{label}: agt config set {k} {text}: {r.returncode} {r.stderr}")
            return
        changed = ledger.get(k, DEFAULTS.get(k)) != norm(k, v)
        ledger[k] = norm(k, v)
        check_events(label, since, {k: v} if changed else {})
    else:
        if r.returncode != 1 or k not in r.stderr:
            problem(f"{label}: agt config set {k} {text!r} (invalid): exit {r.returncode}, {r.stderr.strip()!r}")
        check_events(label, since, {})


LIMITS = ["max_open_orders", "max_order_quantity", "max_order_notional", "max_orders_per_second", "price_band_pct", "allow_short"]


def step_risk_limits(label):
    lim = rng.choice(["max_order_quantity", "max_order_quantity", "allow_short", "price_band_pct", "max_open_orders"])
    values, bad = KEYS[f"risk.{lim}"]
    if rng.random() < 0.5:  # a user's own
        user = rng.choice(USERS + ["shorty"])
        if rng.random() < 0.25:
            s, o = call("PUT", f"/api/risk/limits?user_id={user}", {lim: None})
            if s != 200:
                problem(f"{label}: clearing {user}'s {lim}: {s} {o}")
            else:
                user_limits.get(user, {}).pop(lim, None)
            return
        v = rng.choice(values) if rng.random() < 0.8 else rng.choice(bad)
        valid = v in values
        if rng.random() < 0.5:
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            r = agt("risk", "set", lim, text, "--user", user)
            if valid != (r.returncode == 0) or (not valid and r.returncode != 1):
                problem(f"{label}: agt risk set {lim} {text} --user {user}: exit {r.returncode} {r.stderr.strip()}")
            if valid and r.returncode == 0:
                user_limits.setdefault(user, {})[lim] = norm(f"risk.{lim}", v)
        else:
            s, o = call("PUT", f"/api/risk/limits?user_id={user}", {lim: v})
            if valid != (s == 200) or (not valid and s != 400):
                problem(f"{label}: PUT /api/risk/limits?user_id={user} {lim}={v!r}: {s} {o}")
            if valid and s == 200:
                user_limits.setdefault(user, {})[lim] = norm(f"risk.{lim}", v)
    else:
        v = rng.choice(values) if rng.random() < 0.8 else rng.choice(bad)
        valid = v in values
        since = last_seq()
        s, o = call("PUT", "/api/risk/limits", {lim: v})
        if valid != (s == 200) or (not valid and s != 400):
            problem(f"{label}: PUT /api/risk/limits {lim}={v!r}: {s} {o}")
        if valid and s == 200:
            key = f"risk.{lim}"
            changed = ledger.get(key, DEFAULTS.get(key)) != norm(key, v)
            ledger[key] = norm(key, v)
            check_events(label, since, {key: v} if changed else {})
        else:
            check_events(label, since, {})


def step_halt(label):
    scope = rng.choice(["all", "AAPL"])
    halt = rng.random() < 0.5
    body = {} if scope == "all" else {"symbol": "AAPL"}
    s, o = call("POST", "/api/risk/halt" if halt else "/api/risk/resume", body)
    if s != 200:
        problem(f"{label}: {'halt' if halt else 'resume'} {scope}: {s} {o}")
    else:
        halted[scope] = halt


def wait_applied(label, what):
    deadline = time.time() + 3
    while time.time() < deadline:
        flat, _ = flat_config()
        if all(flat.get(k) == norm(k, v) for k, v in ledger.items()):
            return True
        time.sleep(0.1)
    problem(f"{label}: an edit of agt.toml ({what}) was not applied within 3 s")
    return False


def write_file(text, rename):
    if rename:
        tmp = CONF + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.rename(tmp, CONF)
    else:
        with open(CONF, "w") as f:
            f.write(text)


def step_edit(label):
    global webhook_secret
    kind = rng.choice(["valid", "valid", "valid-rename", "invalid", "half", "secret"])
    since = last_seq()
    before = dict(ledger)
    if kind.startswith("valid") or kind == "secret":
        changes = {}
        if kind == "secret":
            webhook_secret = new_secret()
        else:
            for k in rng.sample(settable(), rng.randint(1, 3)):
                if k.startswith("supervisor.backoff"):
                    continue
                changes[k] = norm(k, rng.choice(KEYS[k][0]))
        ledger.update(changes)
        write_file(render(ledger, webhook_secret), kind == "valid-rename")
        wait_applied(label, f"{kind} {changes}")
        expect = {k: v for k, v in changes.items() if before.get(k, DEFAULTS.get(k)) != v}
        if kind == "secret":
            expect = {"notify.webhooks": None}
        time.sleep(0.1)
        check_events(label, since, expect)
        return
    k = rng.choice(settable())
    if kind == "invalid":
        text = render(ledger, webhook_secret, (k, toml_value(rng.choice(KEYS[k][1]))))
    else:
        whole = render(ledger, webhook_secret)
        cut = whole.index('"', whole.index("secret"))  # inside the secret's string
        text = whole[: cut + 4]
    write_file(text, rng.random() < 0.3)
    time.sleep(1.6)  # two ticks of the config service: it has read the file
    check_config(f"{label} (after a {kind} edit of {k})")
    check_events(label, since, {})
    if rng.random() < 0.3:  # a start on it: refused, naming the key
        kill()
        paused.set()
        r = start(expect_ok=False)
        if r.returncode == 0:
            problem(f"{label}: a start on a broken agt.toml ({kind}) succeeded")
            kill()
        elif kind == "invalid" and k not in r.stderr:
            problem(f"{label}: a start on agt.toml with a bad {k} said: {r.stderr.strip()[:300]}")
    write_file(render(ledger, webhook_secret), False)
    if not os.path.exists(f"{home}/agtd.json") or not alive():
        start()
        paused.clear()
        return "restarted"
    time.sleep(1.2)
    check_events(label, since, {})


def alive():
    try:
        os.kill(pid(), 0)
        return call("GET", "/health")[0] == 200
    except Exception:
        return False


def step_kill(label):
    """SIGKILL, maybe with a config set in flight; then start and check."""
    inflight = {}
    if rng.random() < 0.5:
        k = rng.choice([x for x in settable() if not x.startswith("supervisor.backoff")])
        v = norm(k, rng.choice(KEYS[k][0]))
        inflight = {k: v}
        result = {}

        def go():
            try:
                result["answer"] = call("PUT", "/api/config", {k: v})
            except Exception as e:
                result["answer"] = e
        t = threading.Thread(target=go)
        t.start()
        time.sleep(rng.random() * 0.01)
    paused.set()
    kill()
    if inflight:
        t.join()
        a = result.get("answer")
        if isinstance(a, tuple) and a[0] == 200:
            ledger.update(inflight)
            inflight = {}
    start()
    paused.clear()
    if inflight:  # its answer was cut off: either value will do
        (k, v), = inflight.items()
        flat, _ = flat_config()
        if flat.get(k) in (norm(k, v), ledger.get(k, DEFAULTS.get(k))):
            ledger[k] = flat.get(k)
        else:
            problem(f"{label}: after a kill, {k} = {flat.get(k)!r}: neither {ledger.get(k)!r} nor the unanswered {v!r}")


def step_offline_edit(label):
    """An edit while stopped, then a start killed at a random moment (`daemon run` in the
    foreground), then a start: the edit is in force and announced once, "at start"."""
    k = rng.choice(["risk.max_order_quantity", "risk.max_open_orders", "log.keep_days", "events.retain_s"])
    v = norm(k, rng.choice([x for x in KEYS[k][0] if norm(k, x) != ledger[k]]))
    since = last_seq()
    paused.set()
    kill()
    ledger[k] = v
    write_file(render(ledger, webhook_secret), rng.random() < 0.5)
    p = subprocess.Popen([args.bin, "--home", home, "daemon", "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.random() * 0.4)
    p.kill()
    p.wait()
    start()
    paused.clear()
    deadline = time.time() + 3
    while True:
        got = [e for e in events_since(since) if e["type"] == "CONFIG_CHANGED" and e["data"]["key"] == k]
        if got or time.time() > deadline:
            break
        time.sleep(0.1)
    if len(got) != 1 or got[0]["data"].get("value") != v or got[0]["data"].get("applied") != "at start":
        problem(f"{label}: {k} edited to {v!r} while stopped, a start killed, then a start: announced {[e['data'] for e in got]}")


# --- run -----------------------------------------------------------------------------------
start()
USERS = ["alice", "bob", "carol"]
for u in USERS + ["shorty"]:
    ok("POST", "/api/users", {"username": u, "email": f"{u}@example.com"})
for u in USERS:
    ok("POST", f"/api/users/{u}/deposits", {"asset": "USD", "amount": "100000000"})
    ok("POST", f"/api/users/{u}/deposits", {"asset": "AAPL", "amount": "1000000"})
ok("POST", "/api/users/shorty/deposits", {"asset": "USD", "amount": "1000"})
flat, _ = flat_config()
DEFAULTS = {k: flat[k] for k in KEYS}
ledger.update(DEFAULTS)
threads = [threading.Thread(target=trader, args=(u,), daemon=True) for u in USERS]
for t in threads:
    t.start()
steps = [(step_api_set, 5), (step_cli_set, 3), (step_risk_limits, 4), (step_halt, 2), (step_edit, 3), (step_offline_edit, 1)]
population = [s for s, w in steps for _ in range(w) if not args.only or s.__name__[5:] in args.only.split(",")]
for i in range(args.steps):
    if args.kill_every and rng.random() < 1 / args.kill_every:
        fn = step_kill
    else:
        fn = rng.choice(population)
    label = f"step {i} {fn.__name__}"
    print(label, flush=True)
    try:
        fn(label)
    except Gone:
        problem(f"{label}: the daemon went away")
        if not alive():
            start()
            paused.clear()
    check_config(label)
    probe(label)

stop.set()
for t in threads:
    t.join()
# secrets: events, logs, audit, CLI output
blob = json.dumps(events_since(0, ""))
audit = call("GET", "/api/audit?limit=1000")[1]
blob += json.dumps(audit)
for root, _, files in os.walk(f"{home}/logs"):
    for name in files:
        with open(os.path.join(root, name), errors="replace") as f:
            blob += f.read()
blob += "".join(outputs)
for s in secrets:
    if s in blob:
        problem(f"the secret {s} appears in events, logs, the audit log or CLI output")
agt("daemon", "stop")
print(f"{args.steps} steps, {counts['orders']} orders ({counts['refused']} refused, {counts['gone']} cut off), "
      f"{len(secrets)} secrets, {len(problems)} violations", flush=True)
sys.exit(problems.verdict())
