#!/usr/bin/env python3
"""Tokens, roles and isolation under load and kills: does every token do exactly what its
role, its user and the last acknowledged revoke allow, also right after a SIGKILL?

Usage: scripts/auth-chaos.py [--rounds 20] [--bin target/release/agt] [--home NEW_DIR]
       [--seed N] [--kill-pct 60] [--log-level info|debug]

Python 3, stdlib only; needs a release build (`cargo build --release`). It makes a fresh
home (a temporary one unless --home) with TCP on a free port, starts the daemon, makes
four funded traders and, over the socket, trader tokens for each (two at first), two
viewer and two admin tokens. Each round, at once, over TCP:

- each trader places crossing and resting AAPL orders with one of its user's tokens
  (live, revoked, or of a disabled user), lists, gets, cancels and amends its own, and
  tries to get, cancel and amend other traders' orders and read their accounts;
- each viewer token reads orders and events and tries to place, cancel and deposit;
- an admin (socket and TCP admin tokens) revokes tokens, creates new ones (each used at
  once), disables and enables users, deposits, sends wrong, malformed and missing
  tokens, and crashes the auth and users services (fault injection: their read models,
  the live tokens and the users, are rebuilt);
- followers (`GET /api/events?follow=true`, NDJSON and SSE) are open with trader and
  viewer tokens; after a revoke or a disable is acknowledged the admin deposits a unique
  amount to the token's user, which the stream must never carry, and the stream must end.

A round ends with a SIGKILL and restart (--kill-pct of them) or goes on. It checks,
against its own ledger of what was acknowledged:

- a request sent after its token's revoke was acknowledged is 401 (JSON error), also
  after the restart; one sent after its user's disable was acknowledged is 403
  `user_disabled`; a live token is never refused; a token created is usable once its
  201 came (a revoke or status change sent while a request was in flight may have come
  first: that answer is not held to either); acknowledged revokes and statuses survive
  the kill;
- a trader never sees another user's order id, user id or event in any answer or stream
  (lists, gets, events, accounts, the tape), and its cancel/amend/get of another's order
  is 404 exactly as an unknown id; a viewer's writes are 403;
- wrong, malformed and missing tokens are 401 with a JSON error; no answer is a 5xx
  other than 503 (a daemon starting, auth or users restarting);
- no secret the script was given appears in any answer but its own 201 (also the
  admin's `GET /api/tokens`, the whole audit log and every event), nor under `data/` or
  `logs/` (`--log-level debug` for more log lines to look through).

Prints each round and every violation; exits 1 if there was one. Never run by `cargo
test`; a short version of each bug it found lives in `tests/it/platform.rs`.
"""
import argparse, atexit, json, os, random, signal, socket, subprocess, sys, tempfile, threading, time
from collections import defaultdict

import agt_unix  # scripts/agt_unix.py: HTTP over the daemon's socket
from agt_unix import Gone

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=20)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--home")
ap.add_argument("--seed", type=int, default=int(time.time()))
ap.add_argument("--kill-pct", type=int, default=60)
ap.add_argument("--log-level", default="info", help="the daemon's log.level (debug: more lines a secret could leak into)")
args = ap.parse_args()
rng = random.Random(args.seed)
home = args.home or tempfile.mkdtemp(prefix="agt-authchaos-")
os.makedirs(home, exist_ok=True)
with open(f"{home}/agt.toml", "w") as f:
    f.write(f'[log]\nlevel = "{args.log_level}"\n' + '[http]\nlisten = "127.0.0.1:0"\n[risk]\nmax_open_orders = 100000\nmax_orders_per_second = 100000\nprice_band_pct = "1000"\n[debug]\nfault_injection = true\n')
print(f"home {home}, seed {args.seed}, binary {args.bin}", flush=True)

problems = agt_unix.Problems()
problem = problems  # records and prints a violation
stats = defaultdict(int)


def agt(*a):
    return subprocess.run([args.bin, "--home", home, *a], capture_output=True, text=True, timeout=120)


def start():
    agt_unix.start(agt)


def info():
    with open(f"{home}/agtd.json") as f:
        return json.load(f)


Conn = agt_unix.connector(home, problem)  # a new connection to this run's daemon


def sock_call(method, path, body=None):
    return Conn().call(method, path, body)


def ok(method, path, body=None):
    return agt_unix.ok(Conn(), method, path, body)


class Tcp:
    """One keep-alive HTTP/1.1 connection over TCP with a bearer token (or a raw header)."""

    def __init__(self, token=None, auth=None, timeout=20):
        host, port = info()["http"].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.auth = auth if auth is not None else (f"Bearer {token}" if token else None)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Gone()
        self.buf += chunk

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: agt\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        if self.auth is not None:
            head += f"Authorization: {self.auth}\r\n"
        try:
            self.sock.sendall((head + "\r\n").encode() + data)
            while b"\r\n\r\n" not in self.buf:
                self._recv()
            h, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = h.split(b"\r\n")
            status = int(lines[0].split(b" ")[1])
            hd = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip() for l in lines[1:] if b":" in l}
            if hd.get(b"transfer-encoding", b"").lower() == b"chunked":
                out = b""
                while True:
                    while b"\r\n" not in self.buf:
                        self._recv()
                    size_line, self.buf = self.buf.split(b"\r\n", 1)
                    size = int(size_line.split(b";")[0], 16)
                    while len(self.buf) < size + 2:
                        self._recv()
                    out, self.buf = out + self.buf[:size], self.buf[size + 2:]
                    if size == 0:
                        break
                raw = out
            else:
                n = int(hd.get(b"content-length", b"0"))
                while len(self.buf) < n:
                    self._recv()
                raw, self.buf = self.buf[:n], self.buf[n:]
        except (OSError, socket.timeout) as e:
            raise Gone() from e
        stats["tcp requests"] += 1
        text = raw.decode(errors="replace")
        if status >= 500 and status != 503:
            problem(f"{method} {path} answered {status} {text[:300]}")
        return status, text


def parse(text):
    try:
        return json.loads(text)
    except ValueError:
        return [json.loads(l) for l in text.splitlines() if l.strip().startswith("{")]


def is_error(text, code=None):
    try:
        e = json.loads(text)["error"]
        return isinstance(e["message"], str) and (code is None or e["code"] == code)
    except (ValueError, KeyError, TypeError):
        return False


# --- the ledger: what the script was told ---------------------------------------------
lock = threading.Lock()
tokens = {}  # id -> {"secret", "role", "user", "revoked": acknowledged, "revoking": sent, answer unknown}
status = {}  # user_id -> {"acked": "active"/"disabled", "pending": count of updates sent, not answered}
owner = {}  # order_id -> user_id (every order id the script saw)
users = {}  # username -> user_id
names = {}  # user_id -> username
secrets_shown = []  # every secret a 201 gave
changes_sent = [0]  # revokes and status changes sent so far: one sent while a request was
# in flight may have been applied before it, so the request's answer proves nothing
canaries = {}  # unique deposit amount -> (token id or user id, why, when): a stream opened before must not carry it


def user_state(uid):
    """(disabled for sure, disabled maybe) as of now."""
    with lock:
        s = status[uid]
        return s["acked"] == "disabled" and s["pending"] == 0, s["acked"] == "disabled" or s["pending"] > 0


def token_state(tid):
    with lock:
        t = tokens[tid]
        return t["revoked"], t["revoked"] or t["revoking"]


def expect_auth(tid, sent_revoked, sent_disabled, maybe, s, text, where):
    """Checks an answer against the token's state when the request was sent. Returns True
    if the request went through to its handler (neither 401 nor 403 user_disabled)."""
    t = tokens[tid]
    if s == 503 and is_error(text, "service_unavailable"):
        return False  # a daemon starting, or auth or users restarting: retried, not refused
    if sent_revoked:
        if s != 401 or not is_error(text, "unauthorized"):
            problem(f"{where}: token {tid} revoked (acknowledged) before the request, answered {s} {text[:200]}")
        return False
    if s == 401:
        if not maybe:
            problem(f"{where}: live token {tid} ({t['role']}) refused 401 {text[:200]}")
        return False
    if t["role"] == "trader" and sent_disabled:
        if s != 403 or not is_error(text, "user_disabled"):
            problem(f"{where}: token {tid} of disabled user {names[t['user']]} answered {s} {text[:200]}")
        return False
    if s == 403 and is_error(text, "user_disabled"):
        if not maybe:
            problem(f"{where}: token {tid} of an active user refused {text[:200]}")
        return False
    return True


def foreign_ids(text, me, asked=""):
    """Order or user ids of other users that an answer to `me`'s token names, other than
    those the request itself named (a 404 says which id it did not find)."""
    found = []
    with lock:
        other_users = [u for u in names if u != me]
        orders = [(o, u) for o, u in owner.items() if u != me]
    for u in other_users:
        if u in text and u not in asked:
            found.append(u)
    if "ord_" in text:
        for o, u in orders:
            if o in text and o not in asked:
                found.append(o)
    return found


def leaked_secret(text, own=None):
    return [s for s in list(secrets_shown) if s in text and s != own]


def state_of(tid):
    """(revoked for sure, user disabled for sure, either maybe) as the request is sent."""
    sent_revoked, maybe_revoked = token_state(tid)
    t = tokens[tid]
    sent_disabled, maybe_disabled = user_state(t["user"]) if t["user"] else (False, False)
    return sent_revoked, sent_disabled, maybe_revoked or maybe_disabled


def settled(st, before):
    """A request's state, made uncertain if a change was sent while it was in flight."""
    return st if changes_sent[0] == before else (st[0], False, True)


def checked(c, tid, method, path, body=None):
    """A request with token `tid`, checked for auth, leaks and isolation. Returns
    (status, parsed answer) when it reached its handler, else None."""
    st, before = state_of(tid), changes_sent[0]
    s, text = c.call(method, path, body)
    st = settled(st, before)
    where = f"{method} {path}"
    for leak in leaked_secret(text):
        problem(f"{where}: answer holds a secret: {leak[:12]}…")
    if not expect_auth(tid, *st, s, text, where):
        return None
    t = tokens[tid]
    if t["role"] == "trader":
        leaks = foreign_ids(text, t["user"], path + json.dumps(body))
        if leaks:
            problem(f"{where}: trader {names[t['user']]} sees other users' ids {leaks[:3]}: {text[:300]}")
    return s, parse(text) if text else None


def create_token(role, user=None):
    body = {"role": role, "name": f"ac-{role}-{rng.randrange(1 << 30)}"}
    if user:
        body["user_id"] = user
    s, v = sock_call("POST", "/api/tokens", body)
    if s == 409 and v["error"]["code"] == "user_disabled":
        return None
    if s != 201:
        if s != 503:
            problem(f"create token {body}: {s} {v}")
        return None
    secrets_shown.append(v["token"])
    with lock:
        tokens[v["id"]] = {"secret": v["token"], "role": role, "user": user, "revoked": False, "revoking": False}
    return v["id"]


def live_tokens(role=None, user=None):
    with lock:
        return [i for i, t in tokens.items() if not t["revoked"] and (role is None or t["role"] == role) and (user is None or t["user"] == user)]


# --- followers -------------------------------------------------------------------------
followers = []  # dicts: token id, events got, open flag


def follow(tid, sse):
    """Opens `GET /api/events?follow=true` with token `tid` and reads it on a thread."""
    f = {"tid": tid, "events": [], "open": True, "status": None, "sse": sse, "opened": time.time()}
    st, before = state_of(tid), changes_sent[0]
    try:
        host, port = info()["http"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=30)
        accept = "Accept: text/event-stream\r\n" if sse else ""
        sock.sendall(f"GET /api/events?tail=5&follow=true HTTP/1.0\r\nHost: agt\r\nAuthorization: Bearer {tokens[tid]['secret']}\r\n{accept}\r\n".encode())
    except OSError:
        return

    def read():
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            if b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                f["sent_state"] = settled(st, before)
                f["status"] = int(head.split(b" ")[1])
                if f["status"] != 200:
                    while chunk := sock.recv(65536):
                        buf += chunk
                    f["error"] = buf.decode(errors="replace")
                    return
                while True:
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        line = line.decode(errors="replace")
                        if sse:
                            if line.startswith("data: "):
                                line = line[6:]
                            else:
                                continue
                        if line.strip():
                            try:
                                f["events"].append((time.time(), json.loads(line)))
                            except ValueError:
                                problem(f"follower {tid}: not JSON: {line[:200]}")
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError:
            pass
        finally:
            f["open"] = False
            f["closed"] = time.time()
            sock.close()

    threading.Thread(target=read, daemon=True).start()
    followers.append(f)


def check_followers(label):
    for f in followers:
        t = tokens[f["tid"]]
        if f["status"] is None or f.get("reported"):
            continue
        sent_revoked, sent_disabled, maybe = f["sent_state"]
        if f["status"] != 200:
            f["reported"] = True
            if sent_revoked and f["status"] != 401:
                problem(f"{label}: follower with revoked token {f['tid']} got {f['status']}")
            if not (sent_revoked or sent_disabled or maybe) and f["status"] != 503:
                problem(f"{label}: follower with live token {f['tid']} got {f['status']} {f.get('error', '')[:200]}")
            continue
        if (sent_revoked or sent_disabled) and not f.get("said_open"):
            f["said_open"] = True
            problem(f"{label}: follower opened with token {f['tid']} (revoked {sent_revoked}, user disabled {sent_disabled}) got 200")
        seen = f.setdefault("checked", 0)
        f["checked"] = len(f["events"])
        for at, e in f["events"][seen:]:
            if "error" in e:  # an SSE `cut` frame
                continue
            data = e.get("data", {})
            if t["role"] == "trader":
                if data.get("user_id") != t["user"]:
                    problem(f"{label}: trader {names[t['user']]}'s stream carried {e.get('type')} of {data.get('user_id')}")
                leaks = foreign_ids(json.dumps(e), t["user"])
                if leaks:
                    problem(f"{label}: trader {names[t['user']]}'s stream names {leaks[:3]}: {json.dumps(e)[:300]}")
            if t["role"] == "viewer" and e.get("type", "").startswith("TOKEN_"):
                problem(f"{label}: viewer stream carried {e['type']}")
            amount = str(data.get("amount", ""))
            if e.get("type") == "ACCOUNT_DEPOSITED" and amount in canaries:
                who, why, when = canaries[amount]
                # A stream opened since (the user enabled again) may replay it.
                if who in (f["tid"], t["user"]) and f["opened"] < when:
                    problem(f"{label}: follower of token {f['tid']} got a deposit made after {why}")
            for leak in leaked_secret(json.dumps(e)):
                problem(f"{label}: a stream carried a secret {leak[:12]}…")


# --- the workload ------------------------------------------------------------------------
def trader(uid, stop):
    """Trades for `uid` with a random one of its tokens, and probes other users' data."""
    conns = {}
    mine = []
    while not stop.is_set():
        with lock:
            tids = [i for i, t in tokens.items() if t["user"] == uid]
        tid = rng.choice(tids)
        try:
            c = conns.get(tid) or conns.setdefault(tid, Tcp(tokens[tid]["secret"]))
            op = rng.random()
            if op < 0.4:
                side = rng.choice(["buy", "sell"])
                price = f"{rng.randint(95, 105)}.00"
                r = checked(c, tid, "POST", "/api/orders", {"symbol": "AAPL", "side": side, "quantity": str(rng.randint(1, 5)), "price": price})
                if r and r[0] in (200, 201):
                    o = r[1]
                    if o["user_id"] != uid:
                        problem(f"trader {names[uid]}'s order was placed for {o['user_id']}")
                    with lock:
                        owner[o["order_id"]] = uid
                    mine.append(o["order_id"])
                    stats["orders"] += 1
            elif op < 0.5:
                r = checked(c, tid, "GET", "/api/orders?status=all&limit=200")
                if r and r[0] == 200:
                    for o in r[1]:
                        if o["user_id"] != uid:
                            problem(f"trader {names[uid]} lists {o['order_id']} of {o['user_id']}")
            elif op < 0.6 and mine:
                oid = rng.choice(mine)
                r = checked(c, tid, rng.choice(["DELETE", "GET"]), f"/api/orders/{oid}")
                if r and r[0] not in (200, 409):
                    problem(f"trader {names[uid]} on its own order {oid}: {r}")
            elif op < 0.75:
                with lock:
                    others = [o for o, u in owner.items() if u != uid]
                if others:
                    oid = rng.choice(others)
                    method, path, body = rng.choice([("GET", f"/api/orders/{oid}", None), ("DELETE", f"/api/orders/{oid}", None),
                                                     ("PATCH", f"/api/orders/{oid}", {"price": "100.00"}),
                                                     ("PATCH", f"/api/orders/{oid}", {"price": "100.003"}),
                                                     ("PUT", f"/api/orders/{oid}/status", {"status": "cancelled"}),
                                                     ("GET", f"/api/trading/orders/{oid}", None)])
                    r = checked(c, tid, method, path, body)
                    if r and not (r[0] == 404 and r[1]["error"]["code"] == "not_found"):
                        problem(f"trader {names[uid]}: {method} {path} of another's order answered {r[0]} {json.dumps(r[1])[:200]}")
                    stats["foreign probes"] += 1
            elif op < 0.85:
                other = rng.choice([u for u in names if u != uid])
                method, path, body = rng.choice([("GET", f"/api/users/{other}/account", None), ("GET", f"/api/users/{other}", None),
                                                 ("GET", f"/api/orders?user_id={other}", None), ("GET", f"/api/risk/limits?user_id={other}", None),
                                                 ("POST", "/api/orders", {"user_id": other, "symbol": "AAPL", "side": "buy", "quantity": "1", "price": "1.00"}),
                                                 ("POST", "/api/orders/cancel-all", {"user_id": other})])
                r = checked(c, tid, method, path, body)
                if r and r[0] < 400:
                    problem(f"trader {names[uid]}: {method} {path} for another user answered {r[0]} {json.dumps(r[1])[:200]}")
                stats["foreign probes"] += 1
            else:
                path = rng.choice(["/api/events?tail=50", "/api/users", "/api/users/" + uid + "/account", "/api/trades/AAPL", "/api/book/AAPL",
                                   "/api/events?since=0&limit=300"])
                r = checked(c, tid, "GET", path)
                if r and r[0] == 200 and path.startswith("/api/events"):
                    for e in r[1]:
                        if e.get("data", {}).get("user_id") != uid:
                            problem(f"trader {names[uid]} read {e['type']} of another from {path}")
        except Gone:
            conns.pop(tid, None)
            time.sleep(0.05)
        except OSError:
            time.sleep(0.1)


def viewer(stop):
    conns = {}
    while not stop.is_set():
        with lock:
            tids = [i for i, t in tokens.items() if t["role"] == "viewer"]
        tid = rng.choice(tids)
        try:
            c = conns.get(tid) or conns.setdefault(tid, Tcp(tokens[tid]["secret"]))
            with lock:
                some = rng.choice(list(owner) or ["ord_0"])
            uid = rng.choice(list(names))
            method, path, body = rng.choice([
                ("POST", "/api/orders", {"user_id": uid, "symbol": "AAPL", "side": "buy", "quantity": "1", "price": "1.00"}),
                ("DELETE", f"/api/orders/{some}", None), ("PATCH", f"/api/orders/{some}", {"price": "99.00"}),
                ("POST", f"/api/users/{uid}/deposits", {"asset": "USD", "amount": "1"}), ("PUT", f"/api/users/{uid}", {"status": "disabled"}),
                ("POST", "/api/tokens", {"role": "admin"}), ("POST", "/api/orders/cancel-all", {}),
                ("GET", "/api/orders?status=all&limit=10", None), ("GET", "/api/tokens", None), ("GET", "/api/events?tail=20", None)])
            r = checked(c, tid, method, path, body)
            if r is None:
                continue
            if method != "GET" or path == "/api/tokens":
                if r[0] != 403:
                    problem(f"viewer {tid}: {method} {path} answered {r[0]} {json.dumps(r[1])[:200]}")
            elif r[0] != 200:
                problem(f"viewer {tid}: {method} {path} answered {r[0]} {json.dumps(r[1])[:200]}")
            elif path.startswith("/api/events") and any(e["type"].startswith("TOKEN_") for e in r[1]):
                problem("viewer read TOKEN_ events")
        except Gone:
            conns.pop(tid, None)
            time.sleep(0.05)
        except OSError:
            time.sleep(0.1)


def bad_tokens():
    """Wrong, malformed and missing tokens: 401 with a JSON error."""
    revoked = [t["secret"] for t in tokens.values() if t["revoked"]]
    for auth in [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer agt_" + "0" * 48, "Bearer " + "x" * 5000, "bearer nope",
                 "Bearer \u00e9".encode().decode("latin-1"), *(f"Bearer {s}" for s in revoked[:3])]:
        try:
            c = Tcp(auth=auth if auth is not None else None)
            s, text = c.call(rng.choice(["GET", "POST", "DELETE"]), rng.choice(["/api/orders", "/api/tokens", "/api/events?follow=true&since=999999999", "/api/users/x"]),
                             {"symbol": "AAPL"})
            c.close()
        except Gone:
            continue
        if s not in (401, 503) or not is_error(text):
            problem(f"Authorization {auth!r:.40}: {s} {text[:200]}")
        stats["bad-token requests"] += 1


last_crash = {}


def admin(stop):
    while not stop.is_set():
        op = rng.random()
        try:
            if op < 0.3:
                live = live_tokens()
                # Keep each trader and role one live token, so the load goes on.
                cands = [i for i in live if not tokens[i]["revoking"] and len([j for j in live if tokens[j]["role"] == tokens[i]["role"] and tokens[j]["user"] == tokens[i]["user"]]) > 1]
                if not cands:
                    continue
                tid = rng.choice(cands)
                with lock:
                    tokens[tid]["revoking"] = True
                    changes_sent[0] += 1
                via_tcp = rng.random() < 0.5
                if via_tcp:
                    c = Tcp(tokens[rng.choice(live_tokens("admin"))]["secret"])
                    s, text = c.call("DELETE", f"/api/tokens/{tid}")
                    c.close()
                    v = parse(text)
                else:
                    s, v = sock_call("DELETE", f"/api/tokens/{tid}")
                if s == 200:
                    with lock:
                        tokens[tid]["revoked"] = True
                    stats["revokes"] += 1
                    # A canary: an event for the token's user (or anyone, for a viewer),
                    # made after the revoke was acknowledged: no stream of it may carry it.
                    target = tokens[tid]["user"] or rng.choice(list(names))
                    amount = f"1.{rng.randrange(10 ** 6):06d}"
                    canaries[amount] = (tid, f"token {tid} was revoked", time.time())
                    sock_call("POST", f"/api/users/{target}/deposits", {"asset": "USD", "amount": amount})
                elif s == 401 and via_tcp:
                    continue  # the admin token itself was revoked meanwhile
                elif s != 503:
                    problem(f"revoke {tid}: {s} {v}")
            elif op < 0.5:
                role = rng.choice(["trader", "trader", "viewer", "admin"])
                uid = rng.choice(list(names)) if role == "trader" else None
                tid = create_token(role, uid)
                if tid:
                    stats["tokens created"] += 1
                    c = Tcp(tokens[tid]["secret"])
                    st, before = state_of(tid), changes_sent[0]
                    s, text = c.call("GET", "/api/orders" if role != "viewer" else "/api/orders?status=all&limit=1")
                    c.close()
                    st = settled(st, before)
                    expect_auth(tid, *st, s, text, "first use of a new token")
                    if rng.random() < 0.5:
                        follow(tid, rng.random() < 0.3)
            elif op < 0.7:
                uid = rng.choice(list(names))
                new = rng.choice(["disabled", "active"])
                with lock:
                    status[uid]["pending"] += 1
                    changes_sent[0] += 1
                s, v = sock_call("PUT", f"/api/users/{uid}", {"status": new})
                with lock:
                    status[uid]["pending"] -= 1
                    if s == 200:
                        status[uid]["acked"] = new
                stats["status changes"] += 1
                if s == 200 and new == "disabled":
                    amount = f"2.{rng.randrange(10 ** 6):06d}"
                    canaries[amount] = (uid, f"user {names[uid]} was disabled", time.time())
                    sock_call("POST", f"/api/users/{uid}/deposits", {"asset": "USD", "amount": amount})
                elif s not in (200, 503):
                    problem(f"PUT /api/users/{uid}: {s} {v}")
            elif op < 0.74:
                # The read models (auth's tokens, users' directory) are rebuilt. At most one
                # crash a service every 15 s: six in a minute would mark it failed.
                svc = rng.choice(["auth", "users"])
                if time.time() - last_crash.get(svc, 0) < 15:
                    continue
                last_crash[svc] = time.time()
                s, v = sock_call("POST", f"/api/services/{svc}/crash")
                if s not in (202, 409):
                    problem(f"crash {svc}: {s} {v}")
                stats["service crashes"] += 1
            elif op < 0.85:
                tid = rng.choice(live_tokens("trader") + live_tokens("viewer"))
                follow(tid, rng.random() < 0.3)
            else:
                bad_tokens()
        except Gone:
            # The answer was lost: a revoke or a status change may or may not have happened.
            time.sleep(0.05)
        except OSError:
            time.sleep(0.1)


def settle_uncertain():
    """After a restart: what a kill left unanswered is read back from the daemon."""
    listed = {t["id"]: t for t in ok("GET", "/api/tokens?status=all")}
    with lock:
        for tid, t in tokens.items():
            if t["revoking"] and not t["revoked"]:
                if listed[tid]["revoked"]:
                    t["revoked"] = True
                else:
                    t["revoking"] = False
            if t["revoked"] and not listed[tid]["revoked"]:
                problem(f"token {tid}: its revoke was acknowledged, the daemon lists it live")
        for uid, s in status.items():
            now = ok("GET", f"/api/users/{uid}")["status"]
            if s["pending"] == 0 and now != s["acked"]:
                problem(f"user {names[uid]}: acknowledged {s['acked']}, the daemon says {now}")
            s["acked"], s["pending"] = now, 0


def check_all(label):
    """Every token, once, in a quiet daemon: exactly what the ledger says."""
    for tid, t in list(tokens.items()):
        try:
            c = Tcp(t["secret"])
            st = state_of(tid)
            s, text = c.call("GET", "/api/orders?status=all&limit=1000")
            c.close()
        except Gone:
            problem(f"{label}: token {tid}: connection lost")
            continue
        went = expect_auth(tid, *st, s, text, f"{label}: GET /api/orders")
        if went and s != 200:
            problem(f"{label}: token {tid} ({t['role']}) GET /api/orders: {s} {text[:200]}")
        if went and t["role"] == "trader":
            bad = [o["order_id"] for o in json.loads(text) if o["user_id"] != t["user"]]
            if bad:
                problem(f"{label}: trader token {tid} lists others' orders {bad[:3]}")
    # Every stream opened with a token now revoked or of a user now disabled has ended.
    deadline = time.time() + 7
    for f in followers:
        revoked, disabled, _ = state_of(f["tid"])
        if f["open"] and (revoked or disabled):
            while f["open"] and time.time() < deadline:
                time.sleep(0.1)
            if f["open"] and not f.get("said_still"):
                f["said_still"] = True
                why = "revoked" if revoked else "its user disabled"
                problem(f"{label}: follower of token {f['tid']} ({why}) still open")
    check_followers(label)
    # What an admin reads back (tokens, the audit log, every event) holds no secret.
    for path in ("/api/tokens?status=all", "/api/audit?since=0&limit=100000", "/api/notifications"):
        for leak in leaked_secret(json.dumps(ok("GET", path))):
            problem(f"{label}: GET {path} holds a secret {leak[:12]}…")
    line, evs = agt_unix.events(home, "since=0")
    for leak in leaked_secret(json.dumps(evs)):
        problem(f"{label}: the events hold a secret {leak[:12]}…")


def grep_secrets(label):
    for d in ("data", "logs"):
        for root, _, files in os.walk(f"{home}/{d}"):
            for name in files:
                try:
                    with open(os.path.join(root, name), "rb") as fh:
                        blob = fh.read()
                except OSError:
                    continue
                for s in secrets_shown:
                    if s.encode() in blob:
                        problem(f"{label}: secret {s[:12]}… is in {os.path.relpath(os.path.join(root, name), home)}")


# --- the run ----------------------------------------------------------------------------
start()
# Also when a check or the setup ends the script early: leave no daemon behind.
atexit.register(lambda: agt("daemon", "stop"))
for i in range(4):
    u = ok("POST", "/api/users", {"username": f"trader{i}", "email": f"trader{i}@example.com"})
    users[u["username"]], names[u["user_id"]] = u["user_id"], u["username"]
    status[u["user_id"]] = {"acked": "active", "pending": 0}
    for asset, amt in (("USD", "100000000"), ("AAPL", "1000000")):
        ok("POST", f"/api/users/{u['user_id']}/deposits", {"asset": asset, "amount": amt})
    for _ in range(2):
        create_token("trader", u["user_id"])
for role in ("viewer", "viewer", "admin", "admin"):
    create_token(role)
for tid in list(tokens):
    if rng.random() < 0.5:
        follow(tid, rng.random() < 0.3)

kills = 0
for rnd in range(1, args.rounds + 1):
    stop = threading.Event()
    # A disabled user's trader keeps sending (its answers must be 403): enable some.
    threads = [threading.Thread(target=trader, args=(uid, stop)) for uid in names]
    threads += [threading.Thread(target=viewer, args=(stop,)), threading.Thread(target=admin, args=(stop,))]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.5, 3.0))
    killed = rng.randrange(100) < args.kill_pct
    if killed:
        os.kill(info()["pid"], signal.SIGKILL)
        kills += 1
    stop.set()
    for t in threads:
        t.join()
    if killed:
        start()
        settle_uncertain()
    label = f"round {rnd}{' after SIGKILL' if killed else ''}"
    check_all(label)
    grep_secrets(label)
    print(f"{label}: {dict(stats)}, {len(followers)} followers, {len(problems)} violations", flush=True)
    # Fresh followers for the next round (the kill ended the old ones).
    for tid in rng.sample(live_tokens(), min(4, len(live_tokens()))):
        if tokens[tid]["role"] != "admin":
            follow(tid, rng.random() < 0.3)

agt("daemon", "stop")
grep_secrets("after stop")
print(f"\n{args.rounds} rounds, {kills} kills, {dict(stats)}, {len(followers)} followers, {len(problems)} violations")
sys.exit(problems.verdict())
