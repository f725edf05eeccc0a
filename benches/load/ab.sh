#!/usr/bin/env bash
# Side by side: the acknowledged ingest rate of two switchboard binaries (e.g. main and a
# change), alternating A, B, A, B… against the same bare-hyper ceiling in one run, so the
# machine's mood is shared. Three destinations on a quiet sink, synchronous = full, the
# TeleCMI seed, wrk with 32 connections.
# Usage: benches/load/ab.sh BIN_A BIN_B [ROUNDS=3] [DURATION=8]
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$1; B=$2; ROUNDS=${3:-3}; DURATION=${4:-8}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q --example ceiling
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$PWD/tests/fixtures/seeds/telecmi.json", "r")
wrk.body = f:read("*a")
f:close()
LUA
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }
rps() { wrk -t2 -c32 -d"${DURATION}s" -s "$work/post.lua" "$1" | awk '/Requests\/sec/ {print $2}'; }
target/release/examples/ceiling 127.0.0.1:18190 2>/dev/null & pids+=($!)
"$A" sink --quiet --listen 127.0.0.1:18191 2>/dev/null & pids+=($!)
wait_port 18190; wait_port 18191
run() {
  local bin=$1 dir="$work/gw"
  rm -rf "$dir"; mkdir -p "$dir/tenants"
  printf '[server]\nlisten = "127.0.0.1:18192"\nadmin_listen = "127.0.0.1:18193"\nallow_private_destinations = true\nmax_connections = 10000\n[store]\nurl = "sqlite://data/ab.db"\nsynchronous = "full"\n' > "$dir/switchboard.toml"
  {
    printf 'id = "bench"\n[[source]]\nid = "telecmi"\nprovider = "telecmi"\nauth = [{ scheme = "none" }]\ndedupe_window = "0s"\n'
    for i in 1 2 3; do printf '[[destination]]\nid = "d%s"\nurl = "http://127.0.0.1:18191/d%s?id=<<id>>"\nmax_in_flight = 64\n' "$i" "$i"; done
  } > "$dir/tenants/bench.toml"
  "$bin" serve --config "$dir/switchboard.toml" 2>/dev/null & local gw=$!
  wait_port 18192
  rps http://127.0.0.1:18192/v1/hooks/bench/telecmi
  kill "$gw"; wait "$gw" 2>/dev/null || true
}
echo "| round | ceiling req/s | A events/s (ratio) | B events/s (ratio) |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  c=$(rps http://127.0.0.1:18190/)
  a=$(run "$A"); b=$(run "$B")
  echo "| $r | $c | $a ($(python3 -c "print(round($a/$c, 3))")) | $b ($(python3 -c "print(round($b/$c, 3))")) |"
done
