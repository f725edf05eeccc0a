#!/usr/bin/env bash
# Issue #14's five figures in one run, each a ratio or a comparison measured side by side on
# this machine, printed against its target:
#   1. carried: events acknowledged and all three deliveries delivered, per second, against
#      a relay that stores nothing (examples/relay.rs: each POST sent on to the same three
#      sink URLs with hyper's pooled client, answered once all three answered);
#   2. burst absorption: events/s acknowledged in a closed-loop run while deliveries go on,
#      and with the destinations paused, against the bare hyper ceiling (examples/ceiling.rs);
#   3. PostgreSQL, one node and two nodes on one database, end to end (skip with NO_PG=1);
#   4. ack p99 at half the carried rate (fixed rate, open loop); RSS at 1,000,000 pending
#      deliveries (the paused run goes on filling), and the drain once resumed;
#   5. fan-out width 1 / 3 / 10 / 50: deliveries/s carried.
# Workload: wrk, 1 thread × 32 connections, the Wavecell seed with a fresh callId per
# request; destinations (original body, JSON template, form template) on a bare hyper sink;
# synchronous = "full". Gateway, sink, relay, PostgreSQL and wrk share the machine's cores.
# Usage: benches/load/limit.sh [--smoke]   (DURATION=8 s per run; BIN=switchboard binary to
#   measure, default this tree's release build; BACKLOG=1000000; NO_PG=1; PERF=file: a CPU
#   profile of the gateway during the carried run; ONLY=1: stop after the carried run;
#   ONLY=3: PostgreSQL's figure 3 alone; PG_STATEMENTS=1: figure 3's cost by statement;
#   PG_SETTINGS="-c name=value ...": PostgreSQL's settings for figure 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-8}; BACKLOG=${BACKLOG:-1000000}; WIDTHS="1 3 10 50"
if [ "${1:-}" = --smoke ]; then DURATION=2; BACKLOG=30000; WIDTHS="1 10"; fi

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q --bin switchboard --example ceiling --example relay --example loadgen
BIN=${BIN:-target/release/switchboard}
work=$(mktemp -d); pids=(); own_pg=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Only the PostgreSQL this script started (a caller's, e.g. CI's, is left alone).
  if [ -n "$own_pg" ]; then SWITCHBOARD_PG_DIR=$own_pg bash tests/postgres.sh stop; fi
  rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"

# Every request a new call: wrk's Lua numbers them per thread.
cat > "$work/calls.lua" <<'LUA'
local n, prefix = 0, "bench"
function init(args) prefix = args[1] or prefix end
function request()
  n = n + 1
  local body = string.format(
    '{"callId":"%s-%d","sessionId":"s-%d","eventType":"CALL_RECEIVED","direction":0,"timestamp":"2019-10-16T08:12:01Z","sourceMsisdn":"6512345678","targetMsisdn":"6587654321","status":"NOT_CONNECTED","duration":0,"dtmf":787}',
    prefix, n, n)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
LUA
SEED=tests/fixtures/seeds/wavecell.json
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
# Prints "requests/s total non2xx" of a wrk run. Each run's call ids are its own.
runs=0
load() {
  runs=$((runs + 1))
  wrk -t1 -c"${2:-32}" -d"${DURATION}s" -s "$work/calls.lua" "$1" -- "run$runs-$BASHPID-$RANDOM" |
    awk '/Requests\/sec/ {r = $2} /requests in/ {t = $1} /Non-2xx/ {e = $NF} END {print r, t, e + 0}'
}
calc() { python3 -c "print($1)"; }
metric() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
if sys.argv[2] == "delivered":
    print(int(sum(float(l.split()[-1]) for l in text.splitlines()
                  if l.startswith('switchboard_delivery_attempts_total{') and 'outcome="success"' in l)))
else:
    print(next((l.split()[-1] for l in text.splitlines() if l.startswith('switchboard_deliveries{state="pending"}')), "0"))
PY
}
# Waits until `want` deliveries succeeded on the admin port, at most 600 s.
await_delivered() {
  local port=$1 want=$2
  for _ in $(seq 1 12000); do [ "$(metric "$port" delivered)" -ge "$want" ] && return 0; sleep 0.05; done
  echo "deliveries never reached $want" >&2; exit 1
}
admin() { python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$1$2', method='POST', headers={'Authorization': 'Bearer bench'})).read()"; }
# CPU seconds of a process's threads, by thread name, as "name=seconds ...".
threads_cpu() {
  local hz; hz=$(getconf CLK_TCK)
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' < "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk -v hz="$hz" '{s[$1] += $2} END {for (k in s) printf "%s=%.2f ", k, s[k] / hz}'
}

target/release/examples/ceiling 127.0.0.1:18390 2>/dev/null & pids+=($!)
target/release/examples/ceiling 127.0.0.1:18391 2>/dev/null & pids+=($!)   # the sink
wait_port 18390; wait_port 18391
sink_urls=(http://127.0.0.1:18391/original/1 http://127.0.0.1:18391/json/2 http://127.0.0.1:18391/form/3)
target/release/examples/relay 127.0.0.1:18394 "${sink_urls[@]}" 2>/dev/null & pids+=($!)
wait_port 18394

# A gateway (`serve` with store URL $3) with `n` destinations on the sink; admin port $2+1.
tenant() {
  local n=$1
  echo 'id = "bench"'
  echo '[[source]]'; echo 'id = "wavecell"'; echo 'provider = "wavecell"'; echo 'auth = [{ scheme = "none" }]'
  for i in $(seq 1 "$n"); do
    echo '[[destination]]'; echo "id = \"d$i\""
    case $((i % 3)) in
      1) echo "url = \"http://127.0.0.1:18391/original/$i\"" ;;
      2) echo "url = \"http://127.0.0.1:18391/json/$i?id=<<id>>&status=<<status>>\""
         echo "body = '{\"id\": \"<<id>>\", \"from\": \"<<from>>\", \"to\": \"<<to>>\", \"status\": \"<<status>>\", \"at\": \"<<occurred_at>>\"}'" ;;
      0) echo "url = \"http://127.0.0.1:18391/form/$i\""
         echo "form = { call = \"<<id>>\", status = \"<<status | upper>>\" }" ;;
    esac
    echo 'max_in_flight = 64'
  done
}
gateway() {
  local n=$1 port=$2 store=$3 dir="$work/gw-$2"
  rm -rf "$dir"; mkdir -p "$dir/tenants"
  printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\nallow_private_destinations = true\nmax_connections = 10000\n[admin]\ntoken = { env = "BENCH_ADMIN_TOKEN" }\n[store]\nurl = "%s"\n%s\n' \
    "$port" $((port + 1)) "$store" "$( [[ $store == sqlite* ]] && echo 'synchronous = "full"' || echo 'pool_size = 16')" > "$dir/switchboard.toml"
  tenant "$n" > "$dir/tenants/bench.toml"
  BENCH_ADMIN_TOKEN=bench "$BIN" serve --config "$dir/switchboard.toml" 2>"$dir/log" & gw=$!; pids+=($gw)
  wait_port "$port"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
# Carried events/s of a gateway on `port` with `n` destinations: acknowledged events ÷ the
# time until every delivery of them succeeded. Prints "acked/s carried/s".
carried() {
  local port=$1 n=$2 start out
  start=$(date +%s.%N)
  read -r acked total refused < <(load "http://127.0.0.1:$port/v1/hooks/bench/wavecell")
  local ok=$((total - refused))
  await_delivered $((port + 1)) $((ok * n))
  echo "$acked $(calc "round($ok / ($(date +%s.%N) - $start))")"
}

sqlite="sqlite://data/bench.db"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo -)
echo "Issue #14 harness: $(date -u +%F), commit $commit, binary $BIN, $(nproc) cores ($(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')), ${DURATION}s runs, wrk 1 thread × 32 connections, Wavecell seed, fresh callId per request"
echo
echo "| # | measure | figure | target | verdict |"
echo "|---|---|---|---|---|"
verdict() { python3 -c "print('met' if $1 else 'missed')"; }

# ONLY=3: PostgreSQL's figure alone.
if [ "${ONLY:-0}" != 3 ]; then
read -r ceiling _ _ < <(load http://127.0.0.1:18390/)
read -r relay _ _ < <(load http://127.0.0.1:18394/)

# 1 and 2a: carried, and acknowledged while delivering.
gateway 3 18392 "$sqlite"
before=$(threads_cpu "$gw")
# PERF=file: a CPU profile of the gateway during this run (`perf report -i file`).
if [ -n "${PERF:-}" ]; then perf record -q -F ${PERF_HZ:-499} ${PERF_CG:--g} -o "$PERF" -p "$gw" 2>/dev/null & prof=$!; fi
read -r acked sb < <(carried 18392 3)
after=$(threads_cpu "$gw")
if [ -n "${PERF:-}" ]; then kill -INT "$prof"; wait "$prof" 2>/dev/null || true; fi
stop "$gw"
r1=$(calc "round($sb / $relay, 3)")
echo "| 1 | carried, 3 destinations (SQLite, sync full) | $sb events/s vs relay $relay/s: **$r1** | ≥ 0.5 | $(verdict "$r1 >= 0.5") |"
r2=$(calc "round($acked / $ceiling, 3)")
echo "| 2a | acknowledged while delivering | $acked events/s vs ceiling $ceiling req/s: **$r2** | ≥ 0.25 | $(verdict "$r2 >= 0.25") |"
cpu=$(python3 - "$before" "$after" "$DURATION" <<'PY'
import sys
parse = lambda s: {k: float(v) for k, v in (x.split('=') for x in s.split())}
b, a = parse(sys.argv[1]), parse(sys.argv[2])
print(', '.join(f"{k} {round(a[k] - b.get(k, 0), 2)} s" for k in sorted(a, key=lambda k: b.get(k, 0) - a[k]) if a[k] - b.get(k, 0) >= 0.05))
PY
)
echo "|  | gateway CPU in that run, by thread | $cpu | — | — |"

[ "${ONLY:-0}" = 1 ] && exit 0

# 2b and 4: destinations paused: acknowledged, then fill to the backlog, RSS, drain.
gateway 3 18392 "$sqlite"
for d in d1 d2 d3; do admin 18393 "/v1/destinations/bench/$d/pause"; done
read -r paused _ _ < <(load http://127.0.0.1:18392/v1/hooks/bench/wavecell)
r2b=$(calc "round($paused / $ceiling, 3)")
echo "| 2b | acknowledged, destinations paused | $paused events/s vs ceiling: **$r2b** | ≥ 0.4 | $(verdict "$r2b >= 0.4") |"
rss_peak=0
while [ "$(metric 18393 pending)" -lt "$BACKLOG" ]; do
  load http://127.0.0.1:18392/v1/hooks/bench/wavecell >/dev/null
  rss=$(awk '/VmRSS/ {print $2}' /proc/$gw/status); [ "$rss" -gt "$rss_peak" ] && rss_peak=$rss
done
backlog=$(metric 18393 pending)
base=$(metric 18393 delivered)
start=$(date +%s.%N)
for d in d1 d2 d3; do admin 18393 "/v1/destinations/bench/$d/resume"; done
while [ "$(metric 18393 delivered)" -lt $((base + backlog)) ]; do
  sleep 0.5; rss=$(awk '/VmRSS/ {print $2}' /proc/$gw/status); [ "$rss" -gt "$rss_peak" ] && rss_peak=$rss
done
took=$(calc "$(date +%s.%N) - $start")
hwm=$(( $(awk '/VmHWM/ {print $2}' /proc/$gw/status) / 1024 ))
stop "$gw"
echo "| 4 | $backlog deliveries pending, then drained | peak RSS $hwm MB; drained at $(calc "int($backlog / $took)") deliveries/s | < 150 MB | $(verdict "$hwm < 150") |"

# 4: ack latency at half the carried rate, fixed rate.
gateway 3 18392 "$sqlite"
half=$(calc "int($sb / 2)")
lat=$(target/release/examples/loadgen http://127.0.0.1:18392/v1/hooks/bench/wavecell "$SEED" "$half" "$DURATION")
p99=$(echo "$lat" | python3 -c "import json,sys; print(json.load(sys.stdin)['p99_ms'])")
desc=$(echo "$lat" | python3 -c "import json,sys; r=json.load(sys.stdin); print('p50 %.2f / p99 %.2f / p99.9 %.2f ms, %d ok, %d failed' % (r['p50_ms'], r['p99_ms'], r['p999_ms'], r['ok'], r['failed']))")
stop "$gw"
echo "| 4 | ack latency at half the carried rate ($half events/s) | $desc | p99 ≤ 5 ms | $(verdict "$p99 <= 5") |"

# 5: fan-out width.
prev=0; rising=1; line=""
for n in $WIDTHS; do
  gateway "$n" 18392 "$sqlite"
  read -r _ events < <(carried 18392 "$n")
  stop "$gw"
  d=$((events * n)); line="$line$n: $d; "
  [ "$d" -gt "$prev" ] || rising=0; prev=$d
done
echo "| 5 | deliveries/s carried by fan-out width | ${line% } | rises with width | $(verdict "$rising == 1") |"

fi

# 3: PostgreSQL.
# CPU seconds of every PostgreSQL process on the machine (backends, WAL writer, checkpointer).
pg_cpu() {
  python3 - <<'PY'
import os
ticks = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{pid}/comm").read().strip() == "postgres":
            # After the command name: state is field 3, utime and stime are 14 and 15.
            ticks += sum(int(f) for f in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
    except OSError:
        pass
print(ticks / os.sysconf("SC_CLK_TCK"))
PY
}
# PG_STATEMENTS=1: what each statement cost the database in a run ($1, for $2 events):
# calls, rows and blocks per call, WAL records per call, plans made, and its execution time
# per event. That time is wall time inside PostgreSQL: on a saturated machine it includes
# waiting for a core, so compare statements within a run, not runs.
statements() {
  [ "${PG_STATEMENTS:-0}" = 1 ] || return 0
  echo "PostgreSQL statements, $1 ($2 events):"
  psql -q -At -F ' | ' "$server" -c "SELECT calls, round(rows::numeric / calls, 1), round(shared_blks_hit::numeric / calls),
      round(wal_records::numeric / calls), plans, round((total_exec_time * 1000 / $2)::numeric, 1),
      left(regexp_replace(query, '\s+', ' ', 'g'), 70)
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$3')
    ORDER BY total_exec_time DESC LIMIT 8" |
    awk 'BEGIN {print "  calls | rows/call | blocks/call | WAL records/call | plans | exec µs/event | statement"} {print "  " $0}'
}
if [ "${NO_PG:-0}" != 1 ]; then
  export SWITCHBOARD_PG_DIR=$work/pg SWITCHBOARD_PG_DURABLE=1 SWITCHBOARD_PG_STATEMENTS=${PG_STATEMENTS:-0}
  export SWITCHBOARD_PG_SETTINGS=${PG_SETTINGS:-}
  own_pg=$SWITCHBOARD_PG_DIR
  server=$(bash tests/postgres.sh start); pgbase=${server%/*}
  [ "${PG_STATEMENTS:-0}" = 1 ] && psql -q "$server" -c "CREATE EXTENSION pg_stat_statements"
  psql -q "$server" -c "CREATE DATABASE bench_1"
  gateway 3 18392 "$pgbase/bench_1"
  [ "${PG_STATEMENTS:-0}" = 1 ] && psql -q "$server" -c "SELECT pg_stat_statements_reset()" >/dev/null
  c0=$(pg_cpu)
  read -r _ pg1 < <(carried 18392 3)
  # Read while the gateway's connections (and so their backends) are still up.
  one=$(($(metric 18393 delivered) / 3))
  pg_us=$(calc "round(($(pg_cpu) - $c0) * 1e6 / max(1, $one))")
  stop "$gw"
  statements "one node" "$one" bench_1
  psql -q "$server" -c "CREATE DATABASE bench_2"
  gateway 3 18392 "$pgbase/bench_2"; g1=$gw
  gateway 3 18396 "$pgbase/bench_2"; g2=$gw
  [ "${PG_STATEMENTS:-0}" = 1 ] && psql -q "$server" -c "SELECT pg_stat_statements_reset()" >/dev/null
  c0=$(pg_cpu)
  start=$(date +%s.%N)
  load http://127.0.0.1:18392/v1/hooks/bench/wavecell 16 > "$work/n1" & l1=$!
  load http://127.0.0.1:18396/v1/hooks/bench/wavecell 16 > "$work/n2" & l2=$!
  wait $l1 $l2
  ok=$(cat "$work/n1" "$work/n2" | awk '{n += $2 - $3} END {print n}')
  # Either node may deliver any event: wait on the two counters together.
  for _ in $(seq 1 12000); do
    [ $(( $(metric 18393 delivered) + $(metric 18397 delivered) )) -ge $((ok * 3)) ] && break; sleep 0.05
  done
  pg2=$(calc "round($ok / ($(date +%s.%N) - $start))")
  pg2_us=$(calc "round(($(pg_cpu) - $c0) * 1e6 / max(1, $ok))")
  stop "$g1"; stop "$g2"
  statements "two nodes" "$ok" bench_2
  echo "| 3 | PostgreSQL, one node, carried | $pg1 events/s (PostgreSQL CPU $pg_us µs per event) | ≥ 4,000 | $(verdict "$pg1 >= 4000") |"
  echo "| 3 | PostgreSQL, two nodes on one database, carried | $pg2 events/s ($(calc "round($pg2 / $pg1, 2)")× one node; PostgreSQL CPU $pg2_us µs per event) | ≥ one node | $(verdict "$pg2 >= $pg1") |"
fi
