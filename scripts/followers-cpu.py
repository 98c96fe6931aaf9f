#!/usr/bin/env python3
"""What event-stream followers cost the HTTP runtime, on a running daemon's home.

Usage: scripts/followers-cpu.py HOME [--seconds 60] [--since0 0.25]
       scripts/followers-cpu.py HOME --replay 3 [--seconds 2]
       scripts/followers-cpu.py HOME --replay 3 --to-end [--parallel] [--all-types]

Python 3, stdlib only. Over the socket (every caller is admin). The CPU counted is that
of the daemon's threads named `agtd` (the tokio runtime: HTTP, and its blocking pool,
where `/api/events` reads `events.db`), sampled every 100 ms and summed over every such
thread seen: the blocking pool's threads exit after 10 s idle, and their time leaves
/proc/PID/task with them (a sum of the live threads alone can even fall).

- Default: `soak.py`'s followers alone for --seconds (12 at a time, a new one every
  0.5 s; reading 0.5-5 s, silent 5-20 s, or gone at once; NDJSON or SSE; of
  ORDER_CANCELLED,TRADE_EXECUTED), a --since0 share of them from `since=0` (the whole
  retained history), the rest from `tail=100`. Compare a fresh home with one that holds
  a long history (`agt bench --orders 300000 --cancels 20`), and --since0 0 with 0.25.
- --replay N: N followers from `since=0`, each read for --seconds as fast as Python
  reads: the runtime's CPU per MB of events sent (a replay's cost per event).
  With --to-end, each is a read without `follow` to the stream's end, and the wall time
  gives MB/s (a followed one that caught up in less than --seconds idles the rest, so its
  MB/s says nothing); --parallel runs the N at once (do replays wait for one another?),
  --all-types reads every type instead of the followers' two.
"""
import argparse, json, os, random, socket, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("home")
ap.add_argument("--seconds", type=float)
ap.add_argument("--since0", type=float, default=0.25, help="share of followers from since=0")
ap.add_argument("--replay", type=int, metavar="N")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--to-end", action="store_true", help="with --replay: no follow, read each to its end")
ap.add_argument("--parallel", action="store_true", help="with --to-end: the N replays at once")
ap.add_argument("--all-types", action="store_true", help="with --replay: every event type")
args = ap.parse_args()
HOME = args.home
TICK = os.sysconf("SC_CLK_TCK")
TYPES = "ORDER_CANCELLED,TRADE_EXECUTED"


class Watch:
    """CPU of the agtd threads, each thread's last value kept after it exits."""

    def __init__(self):
        with open(f"{HOME}/agtd.json") as f:
            self.pid = json.load(f)["pid"]
        self.seen, self.stop = {}, threading.Event()
        self.sample()
        self.base = sum(self.seen.values())
        threading.Thread(target=self.run, daemon=True).start()

    def sample(self):
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.index("(") + 1:st.rindex(")")].startswith("agtd"):
                fields = st[st.rindex(")") + 2:].split()
                self.seen[tid] = (int(fields[11]) + int(fields[12])) / TICK

    def run(self):
        while not self.stop.wait(0.1):
            self.sample()

    def used(self):
        self.sample()
        return sum(self.seen.values()) - self.base


def open_stream(start, sse=False, follow=True, types=TYPES):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(f"{HOME}/agt.sock")
    accept = "Accept: text/event-stream\r\n" if sse else ""
    query = f"{start}" + ("&follow=true" if follow else "") + (f"&type={types}" if types else "")
    close = "" if follow else "Connection: close\r\n"
    s.sendall(f"GET /api/events?{query} HTTP/1.1\r\nHost: agt\r\n{accept}{close}\r\n".encode())
    return s


def read_to_end(s):
    got = 0
    while True:
        b = s.recv(1 << 16)
        if not b:
            return got
        got += len(b)


def read_for(s, seconds, stop=None):
    got, end = 0, time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            b = s.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            break
        if not b:
            break
        got += len(b)
    return got


watch = Watch()
t0 = time.monotonic()
if args.replay and args.to_end:
    types = None if args.all_types else TYPES
    sizes = []

    def one():
        sizes.append(read_to_end(open_stream("since=0", follow=False, types=types)))

    if args.parallel:
        threads = [threading.Thread(target=one) for _ in range(args.replay)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for _ in range(args.replay):
            one()
    wall = time.monotonic() - t0
    cpu = watch.used()
    sent = sum(sizes)
    print(f"since=0 to the end x{args.replay}{' at once' if args.parallel else ''}, {'all types' if types is None else types}: "
          f"{wall:.2f} s, {sent / 1e6:.1f} MB ({', '.join(f'{n / 1e6:.1f}' for n in sizes)}), {sent / 1e6 / wall:.1f} MB/s; "
          f"agtd {cpu:.2f} s CPU, {1000 * cpu / max(sent / 1e6, 1e-9):.2f} ms per MB")
elif args.replay:
    secs = args.seconds or 2
    sent = 0
    for _ in range(args.replay):
        s = open_stream("since=0")
        sent += read_for(s, secs)
        s.close()
    time.sleep(0.5)
    cpu = watch.used()
    print(f"since=0 x{args.replay}, {secs:g} s each: agtd {cpu:.2f} s CPU, {sent / 1e6:.1f} MB sent, "
          f"{1000 * cpu / max(sent / 1e6, 1e-9):.2f} ms per MB")
else:
    secs = args.seconds or 60
    stop, live, r = threading.Event(), [], random.Random(args.seed)

    def follower(fr):
        sse = fr.random() < 0.5
        how = fr.choice(["read", "read", "silent", "vanish"])
        s = open_stream("since=0" if fr.random() < args.since0 else "tail=100", sse)
        try:
            if how == "read":
                read_for(s, fr.uniform(0.5, 5), stop)
            elif how == "silent":
                stop.wait(fr.uniform(5, 20))  # never reads: the daemon's writes back up
        except OSError:
            pass
        s.close()

    while time.monotonic() - t0 < secs:
        time.sleep(0.5)
        live = [t for t in live if t.is_alive()]
        if len(live) < 12:
            t = threading.Thread(target=follower, args=(random.Random(r.random()),), daemon=True)
            t.start()
            live.append(t)
    stop.set()
    for t in live:
        t.join()
    time.sleep(0.5)
    print(f"followers, since=0 share {args.since0:g}: agtd {watch.used():.2f} s CPU in {time.monotonic() - t0:.0f} s")
