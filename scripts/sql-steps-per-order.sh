#!/bin/bash
# SQLite statements run (sqlite3_step calls) per order, by daemon thread, over a whole
# `agt bench` run (its set-up and verification included). Deterministic where timings are
# not: it shows what a change to a write path saves even when orders/s is lost in noise.
# Usage: scripts/sql-steps-per-order.sh [AGT_BINARY] [ORDERS]   (needs perf and root)
# A fresh home under /tmp/agt-steps is used and removed. See BENCHMARKS.md.
set -euo pipefail
bin=$(realpath "${1:-target/release/agt}") orders=${2:-10000}
home=/tmp/agt-steps
rm -rf "$home"; mkdir -p "$home"; printf '[http]\nlisten = "127.0.0.1:0"\n' > "$home/agt.toml"
perf probe -q -d 'probe_agt*:*' 2>/dev/null || true
perf probe -q -x "$bin" sqlite3_step
"$bin" --home "$home" daemon start >/dev/null
pid=$(cat "$home/agtd.pid")
perf record -q -e 'probe_agt*:sqlite3_step' -p "$pid" -o "$home/perf.data" 2>/dev/null &
rec=$!
sleep 1
"$bin" --home "$home" bench --orders "$orders" --concurrency 32 --warmup 0 | grep -E "orders/s|verified"
kill -INT "$rec"; wait "$rec" || true
"$bin" --home "$home" daemon stop >/dev/null
perf script -i "$home/perf.data" -F comm 2>/dev/null | sort | uniq -c | sort -rn |
    awk -v n="$orders" '{t+=$1; if ($1 > n/100) printf "%-14s %6.2f statements/order\n", $2, $1/n} END {printf "%-14s %6.2f statements/order\n", "total", t/n}'
perf probe -q -d 'probe_agt*:*' || true
rm -rf "$home"
