#!/usr/bin/env python3
"""What a trading bot does: place an order, then read it back. Two users trade with each
other over one keep-alive connection to HOME's socket, N times; prints the latency of
the read (`GET /api/orders/{id}`) that follows each placement, which is when the lane
still holds the placement's records in its open transactions. Usage:
read-after-place.py HOME [N] [PATH]: PATH reads something else after each placement
instead of the order (e.g. /api/trades/AAPL?limit=1). See BENCHMARKS.md (session 11)."""
import json, socket, sys, time

home = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
other = sys.argv[3] if len(sys.argv) > 3 else None
conn = socket.socket(socket.AF_UNIX)
conn.connect(f"{home}/agt.sock")


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: agt\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    conn.sendall(head.encode() + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += conn.recv(65536)
    status = int(head.split(b" ")[1])
    if status >= 400:
        sys.exit(f"{method} {path}: {status} {rest.decode()}")
    return json.loads(rest)


stamp = int(time.time() * 1000)
users = []
for name in (f"rap-a-{stamp}", f"rap-b-{stamp}"):
    uid = call("POST", "/api/users", {"username": name, "email": f"{name}@bench.invalid"})["user_id"]
    for asset in ("USD", "AAPL"):
        call("POST", f"/api/users/{uid}/deposits", {"asset": asset, "amount": "100000000"})
    users.append(uid)
took = []
for i in range(n):
    side = "buy" if i % 2 else "sell"
    order = {"user_id": users[i % 2], "symbol": "AAPL", "side": side, "type": "limit", "price": "100", "quantity": "1"}
    placed = call("POST", "/api/orders", order)
    start = time.perf_counter()
    read = call("GET", other or f"/api/orders/{placed['order_id']}")
    took.append(time.perf_counter() - start)
    if other is None and read["status"] != placed["status"]:
        sys.exit(f"read {read['status']} after placing {placed['status']}")
took.sort()
print(f"read after place, {n} times: p50 {took[n // 2] * 1e6:.0f} µs, p90 {took[n * 9 // 10] * 1e6:.0f} µs, mean {sum(took) / n * 1e6:.0f} µs")
