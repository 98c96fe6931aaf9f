#!/usr/bin/env python3
"""How fast notify drains a backlog of pending deliveries to one receiver.

Usage: scripts/notify-drain.py [--n 2000] [--mode ok|hang|500] [--bin target/release/agt]
       [--timeout-ms 200]

Python 3, stdlib only; needs a release build. It builds the backlog first: a fresh home
whose `agt.toml` has one webhook on `ACCOUNT_DEPOSITED` at a local receiver that holds
every post, N deposits (N pending deliveries, two of them with the sender), then
`agt daemon stop` (the held attempts end unanswered and uncounted). Then the receiver
answers as `--mode` says (`ok`: 200 at once; `hang`: never, past the attempt timeout;
`500`: at once), the daemon starts again with `AGT_NOTIFY_MAX_ATTEMPTS=1` (so each
delivery settles after one attempt) and the script times how long the queue takes to
empty (`GET /api/notifications?status=pending`), from the start's return. Prints one
line: mode, N, seconds, deliveries/s, posts the receiver got, and the daemon's threads
that were busy more than 5 % of that time (CPU seconds per second, by thread name).

What bounds it, by design: per URL at most 2 attempts in flight (`MAX_IN_FLIGHT_PER_URL`),
so `hang` drains at 2 per attempt timeout.
"""
import argparse, http.server, json, os, shutil, subprocess, sys, tempfile, threading, time

import agt_unix

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=2000, help="at most 10,000 (a list's limit)")
ap.add_argument("--mode", choices=["ok", "hang", "500"], default="ok")
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "agt"))
ap.add_argument("--timeout-ms", type=int, default=200, help="AGT_NOTIFY_TIMEOUT_MS")
args = ap.parse_args()

mode = "hold"
posts = 0
release = threading.Event()
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        global posts
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            posts += 1
        if mode in ("hold", "hang"):
            release.wait()
            return
        status = 200 if mode == "ok" else 500
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/hook"

home = tempfile.mkdtemp(prefix="agt-notify-drain-")
with open(f"{home}/agt.toml", "w") as f:
    f.write(f'[http]\nlisten = ""\n\n[[notify.webhooks]]\nurl = "{url}"\nevents = ["ACCOUNT_DEPOSITED"]\n')


def daemon(cmd, env):
    subprocess.run([args.bin, "--home", home, "daemon", cmd], check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)


def fail(msg):
    print(msg, file=sys.stderr)
    subprocess.run([args.bin, "--home", home, "daemon", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os._exit(1)


def pending(c, limit):
    s, rows = c.call("GET", f"/api/notifications?status=pending&limit={limit}")
    if s != 200:
        fail(f"GET /api/notifications: {s} {rows}")
    return len(rows)


def cpu(pid):
    """CPU seconds of each of the daemon's threads, summed by thread name."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
    return out


env = {"AGT_NOTIFY_TIMEOUT_MS": "600000", "AGT_NOTIFY_MAX_ATTEMPTS": "1"}
daemon("start", env)
c = agt_unix.Conn(home, fail)
s, user = c.call("POST", "/api/users", {"username": "drain", "email": "drain@example.com"})
if s != 201:
    fail(f"POST /api/users: {s} {user}")
for _ in range(args.n):
    s, body = c.call("POST", f"/api/users/{user['user_id']}/deposits", {"asset": "USD", "amount": "1"})
    if s not in (200, 201):
        fail(f"deposit: {s} {body}")
while pending(c, 10000) < args.n:
    time.sleep(0.05)
c.sock.close()
daemon("stop", env)

mode = args.mode
if mode != "hang":
    release.set()  # the held posts of the first run end
posts = 0
env = {"AGT_NOTIFY_TIMEOUT_MS": str(args.timeout_ms), "AGT_NOTIFY_MAX_ATTEMPTS": "1"}
daemon("start", env)
pid = int(open(f"{home}/agtd.pid").read().split()[0])
before = cpu(pid)
started = time.monotonic()
c = agt_unix.Conn(home, fail)
while pending(c, 1) > 0:
    time.sleep(0.02)
took = time.monotonic() - started
busy = {name: round((t - before.get(name, 0)) / took, 2) for name, t in cpu(pid).items() if t - before.get(name, 0) > 0.05 * took}
c.sock.close()
daemon("stop", env)
release.set()
shutil.rmtree(home)
print(json.dumps({"mode": args.mode, "n": args.n, "seconds": round(took, 3), "per_s": round(args.n / took, 1), "posts": posts,
                  "busy": busy}))
