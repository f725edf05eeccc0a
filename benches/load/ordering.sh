#!/usr/bin/env bash
# What per-call ordering costs: the end-to-end carried rate (events acknowledged and all
# three deliveries delivered, clock stopped when nothing is pending) of one binary with
# three destinations, `ordering = "none"` against `ordering = "per_call"`, alternating in
# one run. Each request is a TeleCMI live event of its own call-in-progress: wrk's Lua gives
# every three requests of a thread one call id (started, answered, hangup), so calls are
# short and overlap, as a dialler's are. synchronous = full, wrk 2 threads, 32 connections.
# Usage: benches/load/ordering.sh [ROUNDS=3] [DURATION=8]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}; DURATION=${2:-8}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q --bin switchboard
BIN=target/release/switchboard
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/calls.lua" <<'LUA'
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local n = 0
local statuses = { "started", "answered", "hangup" }
function request()
  n = n + 1
  local body = string.format(
    '{"type":"event","cmiuuid":"call-%d-%d","status":"%s","direction":"inbound","from":9876543210,"to":18001234567,"time":1700000000000}',
    tid, math.floor(n / 3), statuses[n % 3 + 1])
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
LUA
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }
"$BIN" sink --quiet --listen 127.0.0.1:18291 2>/dev/null & pids+=($!)
wait_port 18291
# Successful attempts so far (a live counter; the queue gauges are cached for seconds).
delivered() {
  python3 -c "
import urllib.request
text = urllib.request.urlopen('http://127.0.0.1:18293/metrics').read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines()
              if l.startswith('switchboard_delivery_attempts_total{') and 'outcome=\"success\"' in l)))"
}
# Prints acknowledged events/s and carried events/s (every delivery delivered) for one mode.
run() {
  local mode=$1 dir="$work/gw"
  rm -rf "$dir"; mkdir -p "$dir/tenants"
  printf '[server]\nlisten = "127.0.0.1:18292"\nadmin_listen = "127.0.0.1:18293"\nallow_private_destinations = true\nmax_connections = 10000\n[store]\nurl = "sqlite://data/ord.db"\nsynchronous = "full"\n' > "$dir/switchboard.toml"
  {
    printf 'id = "bench"\n[[source]]\nid = "telecmi"\nprovider = "telecmi"\nauth = [{ scheme = "none" }]\ndedupe_window = "0s"\n'
    for i in 1 2 3; do printf '[[destination]]\nid = "d%s"\nurl = "http://127.0.0.1:18291/d%s?id=<<id>>"\nmax_in_flight = 64\nordering = "%s"\n' "$i" "$i" "$mode"; done
  } > "$dir/tenants/bench.toml"
  "$BIN" serve --config "$dir/switchboard.toml" 2>/dev/null & local gw=$!
  wait_port 18292
  local start; start=$(date +%s.%N)
  local out; out=$(wrk -t2 -c32 -d"${DURATION}s" -s "$work/calls.lua" http://127.0.0.1:18292/v1/hooks/bench/telecmi)
  local acked; acked=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local total; total=$(echo "$out" | awk '/requests in/ {print $1}')
  while [ "$(delivered)" -lt $((total * 3)) ]; do sleep 0.05; done
  local took; took=$(python3 -c "print($(date +%s.%N) - $start)")
  kill "$gw"; wait "$gw" 2>/dev/null || true
  echo "$acked $(python3 -c "print(round($total / $took))")"
}
echo "| round | none: acked ev/s | none: carried ev/s | per_call: acked ev/s | per_call: carried ev/s | carried per_call / none |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  read -r na nc < <(run none)
  read -r pa pc < <(run per_call)
  echo "| $r | $na | $nc | $pa | $pc | $(python3 -c "print(round($pc / $nc, 3))") |"
done
