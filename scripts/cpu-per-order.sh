#!/bin/bash
# CPU time per order, by daemon thread (and for the load generator), over two seconds of
# steady load from `agt bench`. Usage: scripts/cpu-per-order.sh HOME [CONCURRENCY] [ORDERS]
# [BENCH ARGS...] with a daemon already running on HOME; further arguments go to `agt
# bench` (e.g. `--rate 10000` for an open loop: give it ORDERS for 3.5 s or more). Uses
# /proc, so Linux only. See BENCHMARKS.md.
set -euo pipefail
home=$1 conc=${2:-32} orders=${3:-30000}
shift $(($# < 3 ? $# : 3))
agt=${AGT:-target/release/agt}
pid=$(cat "$home/agtd.pid")
snap() {
    for t in /proc/"$pid"/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done |
        awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
    echo "zz-bench-client $(awk '{print $14+$15}' /proc/"$bench"/stat)"
}
placed() { curl -s --unix-socket "$home/agt.sock" http://agt/metrics | awk '/^agt_orders_total/ {s+=$2} END {print s}'; }
out=$(mktemp)
"$agt" --home "$home" bench --orders "$orders" --concurrency "$conc" --warmup 0 "$@" > "$out" 2>&1 &
bench=$!
sleep 1.5; s0=$(snap); o0=$(placed); sleep 2; s1=$(snap); o1=$(placed)
n=$((o1 - o0))
echo "orders in the 2 s window: $n"
join <(echo "$s0") <(echo "$s1") |
    awk -v n="$n" '{d=$3-$2; t+=d; if (d>0) printf "%-16s %5d ticks %7.1f µs/order\n", $1, d, d*10000/n} END {printf "total            %5d ticks %7.1f µs/order\n", t, t*10000/n}'
wait "$bench" || true
grep -E "orders/s|latency|verified" "$out"; rm -f "$out"
