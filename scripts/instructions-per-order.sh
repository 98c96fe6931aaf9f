#!/bin/bash
# Instructions the daemon executes per order placed, from two runs under callgrind (2,000
# and 4,000 orders at C = 8): the difference divided by 2,000 leaves out start-up, users,
# deposits and shutdown. Runs of one build agree within ~3-6 % (batch sizes still depend
# on how threads interleave), where wall-clock numbers on a shared VM move by 10-20 %.
# Note: valgrind hides SHA-NI, so SHA-256 counts as software here (~20 % of the total)
# while natively it is ~1 %: the script also prints the count without it, and where
# the rest goes (SQLite, allocation, JSON, ...). Usage:
# scripts/instructions-per-order.sh [AGT_BINARY] (needs valgrind; takes a few minutes).
# See BENCHMARKS.md.
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
    if ! "$bin" --home "$home" bench --orders "$n" --concurrency 8 --warmup 0 > "$home/bench.out" 2>&1 ||
        ! grep -q "verified    $n/$n" "$home/bench.out"; then
        # Not every order verified (under valgrind a busy machine can time some out):
        # the count would not be per order. Stop the daemon rather than leave it running.
        cat "$home/bench.out" >&2
        kill "$vg"
        exit 1
    fi
    "$bin" --home "$home" daemon stop >/dev/null
    wait "$vg" || true
    # Exclusive counts by function, summed by where the function comes from.
    callgrind_annotate --auto=no --threshold=100 "$home/cg.out" 2>/dev/null | awk '
        /PROGRAM TOTALS/ {p = 1; next}
        p && /\(/ {
            x = $1; gsub(",", "", x)
            if ($0 ~ /sha2/) k = "sha256"
            else if ($0 ~ /sqlite3\.c/) k = "sqlite"
            else if ($0 ~ /malloc\.c|arena\.c/) k = "malloc"
            else if ($0 ~ /memmove|memcpy|memset|memcmp|strlen|strchr/) k = "memcpy etc."
            else if ($0 ~ /serde_json/) k = "serde_json"
            else if ($0 ~ /rust_decimal/) k = "decimal"
            else if ($0 ~ /rusqlite/) k = "rusqlite"
            else if ($0 ~ /hyper|httparse|http-1|axum|tower/) k = "hyper/axum"
            else if ($0 ~ /tokio/) k = "tokio"
            else if ($0 ~ /sip\.rs|hash_one|hashbrown|foldhash|ahash/) k = "hashing"
            else k = "the rest"
            s[k] += x; t += x
        }
        END {printf "total\t%.0f\n", t; for (k in s) printf "%s\t%.0f\n", k, s[k]}' > "/tmp/agt-cg-parts-$1"
    rm -rf "$home"
}
run 2000; run 4000
a=/tmp/agt-cg-parts-2000 b=/tmp/agt-cg-parts-4000
# Per order: the 4,000-order run's count less the 2,000-order run's, over 2,000.
awk -F'\t' 'NR == FNR {a[$1] = $2; next} {printf "%s\t%.0f\n", $1, ($2 - a[$1]) / 2000}' $a $b > /tmp/agt-cg-per-order
get() { awk -F'\t' -v k="$1" '$1 == k {print $2}' /tmp/agt-cg-per-order; }
echo "instructions: 2000 orders $(awk -F'\t' '$1 == "total" {print $2}' $a), 4000 orders $(awk -F'\t' '$1 == "total" {print $2}' $b)"
echo "per order: $(get total), without SHA-256: $(( $(get total) - $(get sha256) ))"
echo "by part, per order:"
awk -F'\t' '$1 != "total" {printf "  %8d  %s\n", $2, $1}' /tmp/agt-cg-per-order | sort -rn
rm -f $a $b /tmp/agt-cg-per-order
