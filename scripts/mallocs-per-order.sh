#!/bin/bash
# Heap allocations per order: calls to glibc's malloc on the trading lane's thread and in
# the whole daemon, over 2 s of steady load from `agt bench` at C = 32. Unlike CPU time
# on a shared VM, the count does not move with the hour (runs of one build agree within
# ~10 %: batch sizes still vary). Usage: scripts/mallocs-per-order.sh HOME [ORDERS] with a daemon
# already running on HOME; `AGT=` selects the bench binary. Needs root (a uprobe on
# malloc: `perf probe -x LIBC malloc`, added once). Linux only. See BENCHMARKS.md.
set -euo pipefail
home=$1 orders=${2:-60000}
agt=${AGT:-target/release/agt}
libc=$(ldconfig -p | awk '/libc.so.6 .*x86-64/ {print $NF; exit}')
perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc' || perf probe -q -x "$libc" malloc
pid=$(cat "$home/agtd.pid")
lane=$(grep -l '^svc-lane$' /proc/"$pid"/task/*/comm | head -1 | cut -d/ -f5)
placed() { curl -s --unix-socket "$home/agt.sock" http://agt/metrics | awk '/^agt_orders_total/ {s+=$2} END {print s}'; }
out=$(mktemp) lane_out=$(mktemp) all_out=$(mktemp)
"$agt" --home "$home" bench --orders "$orders" --concurrency 32 --warmup 0 > "$out" 2>&1 &
bench=$!
sleep 2
o0=$(placed)
perf stat -e probe_libc:malloc -t "$lane" -x, -o "$lane_out" -- sleep 2 &
perf stat -e probe_libc:malloc -p "$pid" -x, -o "$all_out" -- sleep 2
wait %2 2>/dev/null || true
o1=$(placed)
n=$((o1 - o0))
l=$(awk -F, '/probe_libc/ {print $1}' "$lane_out") a=$(awk -F, '/probe_libc/ {print $1}' "$all_out")
echo "orders in the 2 s window: $n"
echo "mallocs per order: lane $((l / n)), whole daemon $((a / n))"
wait "$bench" || true
grep -E "verified" "$out"; rm -f "$out" "$lane_out" "$all_out"
