#!/bin/bash
# Instructions the daemon executes per order placed, from two runs under callgrind (2,000
# and 4,000 orders at C = 8): the difference divided by 2,000 leaves out start-up, users,
# deposits and shutdown. Runs of one build agree within ~3-6 % (batch sizes still depend
# on how threads interleave), where wall-clock numbers on a shared VM move by 10-20 %. Note: valgrind hides SHA-NI, so SHA-256 counts as software here (~10 % of the
# total) while natively it is ~0.6 %. Usage: scripts/instructions-per-order.sh [AGT_BINARY]
# (needs valgrind; takes a few minutes). See BENCHMARKS.md.
set -euo pipefail
bin=$(realpath "${1:-target/release/agt}")
run() {
    local n=$1 home=/tmp/agt-cg-$1
    rm -rf "$home"; mkdir -p "$home"; printf '[http]\nlisten = "127.0.0.1:0"\n' > "$home/agt.toml"
    valgrind --tool=callgrind --callgrind-out-file="$home/cg.out" "$bin" --home "$home" daemon run >"$home/log" 2>&1 &
    local vg=$!
    # Every service running (`/ready`), not only the daemon up: under valgrind the
    # threads take turns, and a service still starting refuses the bench's first calls.
    for _ in $(seq 1 600); do curl -sf --unix-socket "$home/agt.sock" http://agt/ready >/dev/null 2>&1 && break; sleep 0.5; done
    "$bin" --home "$home" bench --orders "$n" --concurrency 8 --warmup 0 | grep -q "verified    $n/$n"
    "$bin" --home "$home" daemon stop >/dev/null
    wait "$vg" || true
    callgrind_annotate "$home/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
    rm -rf "$home"
}
a=$(run 2000) b=$(run 4000)
echo "instructions: 2000 orders $a, 4000 orders $b"
echo "per order: $(( (b - a) / 2000 ))"
