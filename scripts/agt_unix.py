"""HTTP/1.1 over agt's Unix socket, for the drivers run by hand (`chaos.py`,
`market-chaos.py`, `notify-chaos.py`, `config-chaos.py`, `auth-chaos.py`): Python's standard library has
no client for a Unix socket, and each driver had its own copy of this one. Not a script.

One request at a time per connection, kept open between them. A connection the daemon
drops mid-request (killed, stopping) raises `Gone`: whether the request took effect is
unknown, and each driver decides what that means for its ledger.
"""

import json
import socket


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
