#!/bin/bash
# Instructions per order in steady state, by daemon thread, under callgrind: the daemon
# runs under valgrind with instrumentation off; once `agt bench` (C = 8) has placed 1,000
# orders it is switched on for WINDOW seconds, then off, and the orders placed meanwhile
# divide each thread's count. Set-up, the bench's verification and shutdown are left out,
# and nothing scrapes `/metrics` while instrumentation is on (a scrape is ~300 k
# instructions). Quicker than scripts/instructions-per-order.sh (~45 s) and split by
# thread. valgrind runs SHA-256 in software (SHA-NI natively, ~20x cheaper), so each
# line also gives the count without it. Usage:
# scripts/instructions-by-thread.sh [AGT_BINARY] [WINDOW_S] (needs valgrind). See
# BENCHMARKS.md, session 22.
set -euo pipefail
bin=$(realpath "${1:-target/release/agt}")
window=${2:-15}
home=$(mktemp -d /tmp/agt-ibt.XXXXXX)
printf '[http]\nlisten = "127.0.0.1:0"\n' > "$home/agt.toml"
valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no --callgrind-out-file="$home/cg.out" \
    "$bin" --home "$home" daemon run > "$home/log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true; rm -rf "$home"' EXIT
for _ in $(seq 1 600); do curl -sf --unix-socket "$home/agt.sock" http://agt/ready >/dev/null 2>&1 && break; sleep 0.5; done
placed() { curl -s --unix-socket "$home/agt.sock" http://agt/metrics | awk '/^agt_orders_total/ {s += $2} END {print s + 0}'; }
n=100000
"$bin" --home "$home" bench --orders $n --concurrency 8 --warmup 0 > "$home/bench.out" 2>&1 &
bench=$!
while [ "$(placed)" -lt 1000 ]; do sleep 0.2; done
o0=$(placed)
callgrind_control -i on $vg > /dev/null 2>&1
sleep "$window"
callgrind_control -i off $vg > /dev/null 2>&1
o1=$(placed)
kill $bench 2>/dev/null || true
wait $bench 2>/dev/null || true
"$bin" --home "$home" daemon stop > /dev/null
wait $vg || true
orders=$((o1 - o0))
echo "orders placed with instrumentation on: $orders"
# A thread is named by the first of these its inclusive profile holds.
names='lane::run_incarnation=lane
audit::Audit=audit
market::service=market
notify::service=notify
hyper::proto=http
services::bus::=bus
walCheckpoint=checkpointers'
for f in "$home"/cg.out-*; do
    total=$(awk '/^totals:/ {print $2; exit}' "$f")
    [ "${total:-0}" -gt 0 ] || continue
    profile=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null)
    name=other
    while IFS== read -r pattern label; do
        if grep -q "$pattern" <<< "$profile"; then name=$label; break; fi
    done <<< "$names"
    callgrind_annotate --auto=no --threshold=100 "$f" 2>/dev/null | awk -v name="$name" '
        /PROGRAM TOTALS/ {p = 1; next}
        p && /\(/ {x = $1; gsub(",", "", x); t += x; if ($0 ~ /sha2/) s += x}
        END {print name, t + 0, s + 0}'
done | awk -v n="$orders" '
    {t[$1] += $2; s[$1] += $3; T += $2; S += $3}
    END {
        printf "%-13s %10s %14s\n", "thread", "per order", "without SHA"
        for (k in t) if (t[k] / n >= 100) printf "%-13s %10.0f %14.0f\n", k, t[k] / n, (t[k] - s[k]) / n
        printf "%-13s %10.0f %14.0f\n", "total", T / n, (T - S) / n
    }'
