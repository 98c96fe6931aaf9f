#!/usr/bin/env python3
"""Starts `agt daemon run` on HOME and prints the time until `GET /ready` answers 200 on
its socket (cold start, or recovery after a SIGKILL). Usage: time-to-ready.py HOME [AGT].
The daemon is left running; stop it with `agt --home HOME daemon stop`."""
import socket, subprocess, sys, time

home = sys.argv[1]
agt = sys.argv[2] if len(sys.argv) > 2 else "target/release/agt"
start = time.monotonic()
subprocess.Popen([agt, "--home", home, "daemon", "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(home + "/agt.sock")
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: agt\r\nConnection: close\r\n\r\n")
        answer = s.recv(100)
        s.close()
        if b" 200 " in answer:
            break
    except OSError:
        pass
    time.sleep(0.002)
print(f"ready after {(time.monotonic() - start) * 1000:.0f} ms")
