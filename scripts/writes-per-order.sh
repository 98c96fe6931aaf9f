#!/bin/bash
# Log and file writes per order, by daemon thread: `pwrite64` and `write` calls (SQLite's
# logs and databases, the journals) and `fsync`/`fdatasync` calls, counted over 2 s of an
# open-loop `agt bench` at RATE orders/s. Deterministic where timings are not: it shows
# whether a store's writer still hands each commit to its log in one write
# (`services/wal_writes.rs`). Usage: scripts/writes-per-order.sh HOME [RATE] with a daemon
# already running on HOME; `AGT=` selects the bench binary. Needs perf and root. Linux
# only. See BENCHMARKS.md, session 19.
set -euo pipefail
home=$1 rate=${2:-5000}
agt=${AGT:-target/release/agt}
pid=$(cat "$home/agtd.pid")
placed() { curl -s --unix-socket "$home/agt.sock" http://agt/metrics | awk '/^agt_orders_total/ {s+=$2} END {print s}'; }
out=$(mktemp) counts=$(mktemp)
trap 'rm -f "$out" "$counts"' EXIT
"$agt" --home "$home" bench --orders $((rate * 6)) --concurrency 32 --rate "$rate" --warmup 0 > "$out" 2>&1 &
bench=$!
sleep 1.5
o0=$(placed)
perf stat --per-thread -x, -o "$counts" -p "$pid" \
    -e syscalls:sys_enter_pwrite64,syscalls:sys_enter_write,syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -- sleep 2
o1=$(placed)
n=$((o1 - o0))
echo "orders in the 2 s window: $n"
# Thread names come as `name-tid`; threads of one name are summed.
awk -F, -v n="$n" '$2 ~ /^[0-9]+$/ && $2 > 0 {
        name = $1; sub(/-[0-9]+$/, "", name); ev = $4; sub(/.*sys_enter_/, "", ev)
        c[name " " ev] += $2
    }
    END { for (k in c) if (c[k] / n >= 0.001) printf "%-28s %8.3f per order\n", k, c[k] / n }' "$counts" | sort
wait "$bench" || true
grep -E "latency|verified" "$out"
