#!/usr/bin/env bash
# Drives `agt tui` in tmux against a busy daemon and checks that it survives: every tab,
# its keys (pause, filter, help, detail, forms), tiny/huge/odd terminal sizes, and the
# daemon stopped, SIGKILLed and started again under it. After each step the pane must
# still run the dashboard with no panic text, and after a restart it must say `● live`
# again on its own; `q` must end it with exit code 0.
#
# Usage: scripts/tui-chaos.sh [--rounds 3] [--bin target/release/agt]
# Needs tmux and a release build. Makes a temporary home on a fixed local port (so a
# restarted daemon is found at the same address), loads it with `agt bench --rate 300`,
# and removes everything (daemon, bench, tmux session) when it exits.
set -euo pipefail

rounds=3
bin=target/release/agt
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--bin PATH]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "$bin")
home=$(mktemp -d /tmp/agt-tui-chaos.XXXXXX)
session=agt-tui-chaos-$$
port=$((20000 + $$ % 20000))
printf '[http]\nlisten = "127.0.0.1:%s"\n' "$port" > "$home/agt.toml"
agt() { "$bin" --home "$home" "$@"; }
bench_pid=
cleanup() {
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null || true
  tmux kill-session -t "$session" 2>/dev/null || true
  agt daemon stop >/dev/null 2>&1 || true
  rm -rf "$home"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; tmux capture-pane -p -t "$session" >&2 || true; exit 1; }
screen() { tmux capture-pane -p -t "$session"; }
keys() { for k in "$@"; do tmux send-keys -t "$session" "$k"; sleep 0.2; done; }
# The pane still runs the dashboard and shows no panic.
alive() {
  local s; s=$(screen)
  grep -q 'TUI-EXITED' <<<"$s" && fail "the dashboard exited on its own ($1)"
  grep -qi 'panicked' <<<"$s" && fail "a panic ($1)"
  return 0
}
# Waits up to $2 seconds for the screen to contain $1.
wait_for() {
  for _ in $(seq $(($2 * 5))); do screen | grep -q "$1" && return 0; sleep 0.2; done
  fail "no '$1' within $2 s"
}
load() { agt bench --rate 300 --orders 1000000 >/dev/null 2>&1 & bench_pid=$!; }

agt daemon start >/dev/null
load
tmux new-session -d -s "$session" -x 120 -y 40 "$bin --home $home tui; echo TUI-EXITED rc=\$?; sleep 3600"
wait_for '● live' 10

for round in $(seq "$rounds"); do
  echo "round $round: tabs and keys"
  keys 1 2 / sym: Enter Enter Escape Escape n Escape 3 h l l 4 j 5 ' ' Enter j Escape ' ' / order Enter Escape 6 j j Enter Escape v '?' j G Escape
  alive "tabs and keys"
  echo "round $round: sizes"
  for size in 20x6 40x10 300x80 1x1 13x3 81x23 79x25 200x15 30x50 120x40; do
    tmux resize-window -t "$session" -x "${size%x*}" -y "${size#*x}"
    for t in 1 2 3 4 5 6; do keys "$t"; done
    keys '?' G Escape
    alive "at $size"
  done
  echo "round $round: stop, start"
  agt daemon stop >/dev/null
  wait_for 'reconnecting' 5
  alive "daemon stopped"
  agt daemon start >/dev/null
  load
  wait_for '● live' 10
  echo "round $round: SIGKILL, start"
  kill -9 "$(cat "$home/agtd.pid")"
  wait_for 'reconnecting' 5
  alive "daemon killed"
  agt daemon start >/dev/null
  load
  wait_for '● live' 10
done

keys q
wait_for 'TUI-EXITED rc=0' 5
echo "ok: $rounds rounds"
