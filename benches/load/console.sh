#!/usr/bin/env bash
# The console against a large store under load: EVENTS callbacks stored first (wrk, distinct
# call ids per wrk run — a call seen a dozen times, like a call's events — every tenth
# from one phone number), then the console's pages timed in Chromium
# while RATE callbacks/s keep arriving (examples/loadgen.rs, open loop).
# Usage: benches/load/console.sh [EVENTS] [RATE]   (defaults 1000000 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${1:-1000000}; RATE=${2:-1000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q --bin switchboard --example loadgen
PYTHON=${SWITCHBOARD_ORACLE_PYTHON:-target/tmp/oracle-venv/bin/python}
[ -x "$PYTHON" ] || { echo "needs the test venv (run cargo test once, or .ci/run)" >&2; exit 1; }
BIN=target/release/switchboard
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }

$BIN sink --quiet --listen 127.0.0.1:18391 2>/dev/null & pids+=($!)
mkdir -p "$work/tenants"
cat > "$work/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:18392"
admin_listen = "127.0.0.1:18393"
allow_private_destinations = true
max_connections = 10000
[admin]
token = { env = "BENCH_ADMIN_TOKEN" }
[store]
url = "sqlite://data/console.db"
TOML
cat > "$work/tenants/acme.toml" <<TOML
id = "acme"
[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{ scheme = "none" }]
dedupe_window = "0s"
[[destination]]
id = "crm"
url = "http://127.0.0.1:18391/crm"
[[destination]]
id = "analytics"
url = "http://127.0.0.1:18391/analytics"
TOML
BENCH_ADMIN_TOKEN=bench $BIN serve --config "$work/switchboard.toml" 2>"$work/log" & pids+=($!)
wait_port 18392
cat > "$work/seed.lua" <<'LUA'
local counter = 0
local thread_id = 0
function setup(thread) thread:set("id", thread_id); thread_id = thread_id + 1 end
function request()
  counter = counter + 1
  local from = (counter % 10 == 0) and "9100000000" or tostring(9000000000 + counter)
  local body = string.format('{"type":"event","direction":"inbound","conversation_uuid":"seed-%d-%d","cmiuuid":"seed-%d-%d","from":%s,"app_id":1111113,"time":1571119921000,"to":4461000000,"status":"waiting"}', id, counter, id, counter, from)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
LUA
started=$(date +%s)
stored=0
while [ "$stored" -lt "$EVENTS" ]; do
  wrk -t2 -c32 -d10s -s "$work/seed.lua" http://127.0.0.1:18392/v1/hooks/acme/telecmi >/dev/null
  stored=$(sqlite3 "$work/data/console.db" "SELECT count(*) FROM events" 2>/dev/null || python3 -c "import sqlite3; print(sqlite3.connect('$work/data/console.db').execute('SELECT count(*) FROM events').fetchone()[0])")
done
seeded=$(( $(date +%s) - started ))
date_=$(date -u +%F); commit=$(git rev-parse --short HEAD 2>/dev/null || echo "-")
echo "Console at scale: $date_, commit $commit, $(nproc) cores; $stored events stored in ${seeded}s; pages timed while $RATE callbacks/s arrive"
echo
echo "| measure | figure |"
echo "|---|---|"
call=$(python3 -c "import sqlite3; print(sqlite3.connect('$work/data/console.db').execute('SELECT call_id FROM events ORDER BY id LIMIT 1 OFFSET 500000').fetchone()[0])")
target/release/examples/loadgen http://127.0.0.1:18392/v1/hooks/acme/telecmi tests/fixtures/seeds/telecmi.json "$RATE" 60 > "$work/loadgen" &
load=$!
sleep 2
"$PYTHON" benches/load/console_paint.py http://127.0.0.1:18393/ bench "$call" 9100000000
kill $load 2>/dev/null || true
