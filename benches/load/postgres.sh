#!/usr/bin/env bash
# Throughput on the shared PostgreSQL store: one node, then two nodes on one database, each
# with a three-destination tenant on a quiet sink. A private, durable PostgreSQL (fsync on,
# synchronous_commit on) is started in /tmp and stopped at the end. For each setup: the
# events/s acknowledged under closed-loop load (wrk, 32 connections in all), then the
# time until every delivery is delivered, giving end-to-end events/s (3 deliveries each).
# Everything — PostgreSQL, the nodes, the sink, wrk — shares this one machine.
# Usage: benches/load/postgres.sh [--smoke]    (DURATION=seconds of load, default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-20}
[ "${1:-}" = --smoke ] && DURATION=2

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q --bin switchboard
BIN=target/release/switchboard
work=$(mktemp -d)
export SWITCHBOARD_PG_DIR=$work/pg SWITCHBOARD_PG_DURABLE=1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash tests/postgres.sh stop
  rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
server=$(bash tests/postgres.sh start)
base=${server%/*}

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$PWD/tests/fixtures/seeds/telecmi.json", "r")
wrk.body = f:read("*a")
f:close()
LUA
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
$BIN sink --quiet --listen 127.0.0.1:18191 2>/dev/null & pids+=($!)
wait_port 18191

pending() {
  python3 - "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(next((l.split()[-1] for l in text.splitlines() if l.startswith('switchboard_deliveries{state="pending"}')), "0"))
PY
}

echo "| setup | acknowledged events/s (closed loop) | end-to-end events/s (all 3 deliveries delivered) |"
echo "|---|---|---|"
for nodes in 1 2; do
  db="bench_$nodes"
  psql -q "$server" -c "CREATE DATABASE $db"
  node_pids=()
  for n in $(seq 1 "$nodes"); do
    dir="$work/node-$nodes-$n"; mkdir -p "$dir/tenants"
    cat > "$dir/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:1820$n"
admin_listen = "127.0.0.1:1821$n"
allow_private_destinations = true
max_connections = 10000
[store]
url = "$base/$db"
pool_size = 16
TOML
    {
      echo 'id = "bench"'
      echo '[[source]]'; echo 'id = "telecmi"'; echo 'provider = "telecmi"'
      echo 'auth = [{ scheme = "none" }]'; echo 'dedupe_window = "0s"'
      for d in crm analytics ticketing; do
        echo '[[destination]]'; echo "id = \"$d\""; echo 'url = "http://127.0.0.1:18191/hook"'; echo 'max_in_flight = 32'
      done
    } > "$dir/tenants/bench.toml"
    $BIN serve --config "$dir/switchboard.toml" 2>"$dir/log" & node_pids+=($!); pids+=($!)
    wait_port "1820$n"
  done
  start=$(date +%s.%N)
  outs=()
  for n in $(seq 1 "$nodes"); do
    wrk -t1 -c$((32 / nodes)) -d"${DURATION}s" -s "$work/post.lua" "http://127.0.0.1:1820$n/v1/hooks/bench/telecmi" >"$work/wrk-$n" &
    outs+=($!)
  done
  wait "${outs[@]}"
  acked=$(cat "$work"/wrk-* | awk '/requests in/ {n += $1} END {print n}')
  non2xx=$(cat "$work"/wrk-* | awk '/Non-2xx/ {n += $NF} END {print n + 0}')
  while [ "$(pending 18211)" != "0" ]; do sleep 0.2; done
  end=$(date +%s.%N)
  ok=$((acked - non2xx))
  echo "| $nodes node(s), one PostgreSQL | $(python3 -c "print(round($ok / $DURATION))") ($non2xx refused) | $(python3 -c "print(round($ok / ($end - $start)))") |"
  for p in "${node_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  rm -f "$work"/wrk-*
done
