#!/usr/bin/env python3
"""Which tables and indexes fill a store's write-ahead log: the frames of the log's
current generation, counted by the b-tree their page belongs to. Under load, what a
store writes per order is mostly whole pages rewritten at each commit, so this shows
which table or index to change to write fewer bytes. See BENCHMARKS.md.

Usage: scripts/wal-pages.py COPY_OF_STORE.db
Take the copy while the daemon is paused, so the log and the database agree:
    kill -STOP $PID; cp $AGT_HOME/data/orders.db* /tmp/snap/; kill -CONT $PID
(the copy is opened, so SQLite may checkpoint it: never point this at a live store).
"""
import collections
import sqlite3
import struct
import sys


def frames(wal_path):
    """Page numbers of the frames in the log's current generation (the salts match)."""
    wal = open(wal_path, "rb").read()
    if len(wal) < 32:
        return [], 4096
    _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", wal[:32])
    pages, at = [], 32
    while at + 24 + page_size <= len(wal):
        page, _commit, s1, s2, _k1, _k2 = struct.unpack(">6I", wal[at:at + 24])
        if (s1, s2) != (salt1, salt2):
            break
        pages.append(page)
        at += 24 + page_size
    return pages, page_size


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    db = sys.argv[1]
    pages, page_size = frames(db + "-wal")
    if not pages:
        sys.exit(f"{db}-wal holds no frames")
    # dbstat reads through the log, so a page new in the log is named too.
    owner = dict(sqlite3.connect(db).execute("SELECT pageno, name FROM dbstat"))
    counts = collections.Counter(owner.get(p, "(free or overflow)") for p in pages)
    print(f"{len(pages)} frames ({len(pages) * (page_size + 24) // 1024} KiB) in {db}-wal")
    for name, n in counts.most_common():
        print(f"  {name:32s} {n:7d} frames {n * 100 / len(pages):5.1f} %")


if __name__ == "__main__":
    main()
