#!/usr/bin/env python3
"""How fast cancels and amends go: one user places N resting buys over C keep-alive
connections to HOME's socket, then amends each (a new price, `PATCH /api/orders/{id}`),
then cancels each (`DELETE /api/orders/{id}`), C at a time; prints the rate of each
phase and the mean time per request at C = 1. Usage: cancels-and-amends.py HOME [N] [C].
Needs a running daemon on HOME; makes a user of its own. See BENCHMARKS.md (session 17)."""
import json, socket, sys, threading, time

home = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
c = int(sys.argv[3]) if len(sys.argv) > 3 else 8


class Conn:
    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(f"{home}/agt.sock")
        self.buf = b""

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: agt\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        self.sock.sendall(head.encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ")[1])
        length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, json.loads(body) if body else None


def phase(name, items, request):
    """Runs `request(conn, item)` for every item on C connections; prints the rate."""
    out, chunks = [], [items[i::c] for i in range(c)]

    def work(chunk):
        conn = Conn()
        for item in chunk:
            out.append(request(conn, item))

    threads = [threading.Thread(target=work, args=(ch,)) for ch in chunks]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - started
    bad = [s for s, _ in out if s >= 300]
    print(f"{name:<8} {len(items)} at C={c}: {len(items) / took:7.0f}/s, {took / len(items) * c * 1e6:6.0f} µs each, errors {len(bad)}")
    return out


admin = Conn()
tag = str(time.time_ns())[-9:]
status, user = admin.call("POST", "/api/users", {"username": f"edits{tag}", "email": f"edits{tag}@example.com"})
uid = user["user_id"]
admin.call("POST", f"/api/users/{uid}/deposits", {"asset": "USD", "amount": "100000000"})
admin.call("PUT", f"/api/risk/limits?user_id={uid}", {"max_open_orders": 10 * n, "max_orders_per_second": 1000000})
order = {"user_id": uid, "symbol": "AAPL", "side": "buy", "type": "limit", "price": "10.00", "quantity": "1"}
placed = phase("place", list(range(n)), lambda conn, _: conn.call("POST", "/api/orders", order))
ids = [o["order_id"] for s, o in placed if s == 201]
phase("amend", ids, lambda conn, i: conn.call("PATCH", f"/api/orders/{i}", {"price": "9.00"}))
phase("cancel", ids, lambda conn, i: conn.call("DELETE", f"/api/orders/{i}"))
