#!/bin/bash
# Whether the three trading stores of a stopped daemon agree: the open orders in
# orders.db, the open holds in risk.db and the resting orders in trading.db must be the
# same order ids, and no order may be left mid-saga. Run it after `agt daemon stop` (a
# running daemon's stores may trail its intake journal by a flush). Usage:
# scripts/stores-agree.sh HOME. Needs the sqlite3 command. Exit 0 when they agree.
set -euo pipefail
data="$1/data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sqlite3 "$data/orders.db" "SELECT order_id FROM orders WHERE status IN ('new', 'partially_filled') ORDER BY 1" > "$tmp/orders"
sqlite3 "$data/risk.db" "SELECT order_id FROM holds WHERE open = 1 ORDER BY 1" > "$tmp/holds"
sqlite3 "$data/trading.db" "SELECT order_id FROM resting ORDER BY 1" > "$tmp/book"
unfinished=$(sqlite3 "$data/orders.db" "SELECT count(*) FROM orders WHERE stage <> 'done'")
echo "open orders $(wc -l < "$tmp/orders"), open holds $(wc -l < "$tmp/holds"), resting $(wc -l < "$tmp/book"), unfinished sagas $unfinished"
if cmp -s "$tmp/orders" "$tmp/holds" && cmp -s "$tmp/orders" "$tmp/book" && [ "$unfinished" = 0 ]; then
    echo "the stores agree"
else
    echo "the stores DISAGREE"
    diff "$tmp/orders" "$tmp/holds" | head -5 || true
    diff "$tmp/orders" "$tmp/book" | head -5 || true
    exit 1
fi
