#!/usr/bin/env bash
# The load harness: on loopback, a bare hyper server (the machine's ceiling), a quiet sink,
# and `switchboard serve` with a benchmark tenant (three destinations on the sink: the
# original body, a JSON template, a form template). Prints a markdown table of:
#   - ingest ratio: acknowledged callbacks/s ÷ the ceiling's requests/s (same payload,
#     connections and duration), with synchronous = full and = normal;
#   - ack latency p50/p99/p99.9 at 25%, 50% and 75% of the full-sync ingest rate, at a fixed
#     rate (examples/loadgen.rs, open loop);
#   - fan-out width: events/s ingested and deliveries/s drained with 1, 3, 10, 50 destinations;
#   - sustained: the highest fixed event rate whose three-way fan-out keeps up for STEADY
#     seconds (default 60; the backlog does not grow), and ack latency at 25/50/75% of it;
#   - backlog: 1,000,000 pending deliveries behind paused destinations — peak RSS, store
#     size, then the drain rate once they are resumed.
# Usage: benches/load/run.sh [--smoke] [--record]   (DURATION=seconds per closed-loop run, default 10;
#   --smoke: 2 s runs, a 5 s two-step ladder, a 30,000-delivery backlog)
set -euo pipefail
cd "$(dirname "$0")/../.."

SMOKE=0; RECORD=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --record) RECORD=1 ;;
    *) echo "usage: $0 [--smoke] [--record]" >&2; exit 2 ;;
  esac
done
# --record: the whole report is also appended to BENCHMARKS.md.
if [ $RECORD = 1 ]; then
  exec > >(tee -a BENCHMARKS.md)
  echo; echo "### Load harness run (\`bash benches/load/run.sh\`)"; echo
fi
DURATION=${DURATION:-10}
[ $SMOKE = 1 ] && DURATION=2
CONNECTIONS=${CONNECTIONS:-32}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q --bin switchboard --example ceiling --example loadgen
BIN=target/release/switchboard
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

PAYLOAD=tests/fixtures/seeds/telecmi.json
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$PWD/$PAYLOAD", "r")
wrk.body = f:read("*a")
f:close()
LUA

wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
rps() { wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$work/post.lua" "$1" | awk '/Requests\/sec/ {print $2}'; }

target/release/examples/ceiling 127.0.0.1:18090 2>/dev/null & pids+=($!)
$BIN sink --quiet --listen 127.0.0.1:18091 2>/dev/null & pids+=($!)
wait_port 18090; wait_port 18091

# A gateway with `n` destinations on the sink and the given synchronous mode.
gateway() {
  local n=$1 sync=$2
  local dir="$work/gw-$n-$sync"
  rm -rf "$dir"; mkdir -p "$dir/tenants"
  cat > "$dir/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:18092"
admin_listen = "127.0.0.1:18093"
allow_private_destinations = true
max_connections = 10000
[admin]
token = { env = "BENCH_ADMIN_TOKEN" }
[store]
url = "sqlite://data/bench.db"
synchronous = "$sync"
TOML
  {
    echo 'id = "bench"'
    echo '[[source]]'; echo 'id = "telecmi"'; echo 'provider = "telecmi"'
    echo 'auth = [{ scheme = "none" }]'; echo 'dedupe_window = "0s"'
    for i in $(seq 1 "$n"); do
      echo '[[destination]]'; echo "id = \"d$i\""
      case $((i % 3)) in
        1) echo "url = \"http://127.0.0.1:18091/original/$i\"" ;;
        2) echo "url = \"http://127.0.0.1:18091/json/$i?id=<<id>>&status=<<status>>\""
           echo "body = '{\"id\": \"<<id>>\", \"from\": \"<<from>>\", \"to\": \"<<to>>\", \"status\": \"<<status>>\", \"at\": \"<<occurred_at>>\"}'" ;;
        0) echo "url = \"http://127.0.0.1:18091/form/$i\""
           echo "form = { call = \"<<id>>\", status = \"<<status | upper>>\" }" ;;
      esac
      echo 'max_in_flight = 64'
    done
  } > "$dir/tenants/bench.toml"
  BENCH_ADMIN_TOKEN=bench $BIN serve --config "$dir/switchboard.toml" 2>"$dir/log" & gw=$!
  gw_dir=$dir
  pids+=($gw)
  wait_port 18092
}
stop_gateway() { kill "$gw"; wait "$gw" 2>/dev/null || true; }
calc() { python3 -c "print($1)"; }
pending() {
  python3 - <<'PY'
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:18093/metrics").read().decode()
print(next((line.split()[-1] for line in text.splitlines() if line.startswith('switchboard_deliveries{state="pending"}')), "0"))
PY
}
drain_seconds() {
  local start; start=$(date +%s.%N)
  while [ "$(pending)" != "0" ]; do sleep 0.2; done
  calc "round($(date +%s.%N) - $start, 1)"
}

date_=$(date -u +%F); commit=$(git rev-parse --short HEAD 2>/dev/null || echo "-")
cpu=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'); cores=$(nproc)
echo "Load harness: $date_, commit $commit, $cores cores ($cpu), ${DURATION}s per run, $CONNECTIONS connections, payload $PAYLOAD"
echo

ceiling=$(rps http://127.0.0.1:18090/)
echo "| measure | figure |"
echo "|---|---|"
echo "| ceiling (bare hyper, reads body, answers 200) | $ceiling req/s |"
for sync in full normal; do
  gateway 3 "$sync"
  ingest=$(rps http://127.0.0.1:18092/v1/hooks/bench/telecmi)
  ratio=$(calc "round($ingest / $ceiling, 2)")
  echo "| ingest, 3 destinations, synchronous = $sync | $ingest events/s acknowledged; ratio to ceiling $ratio |"
  [ "$sync" = full ] && full_rate=$ingest
  drained=$(drain_seconds)
  echo "| backlog after that run drained (sync = $sync) | in ${drained}s |"
  stop_gateway
done

admin() { python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:18093$1', method='POST', headers={'Authorization': 'Bearer bench'})).read()"; }
loadgen() { target/release/examples/loadgen http://127.0.0.1:18092/v1/hooks/bench/telecmi "$PAYLOAD" "$1" "$2"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# Sustained: climb fixed rates; a rate is kept up with when every callback is acknowledged
# and the pending backlog at the end is under one second's worth of deliveries.
STEADY=${STEADY:-60}; ladder="1000 2000 3000 4000 5000 6000 8000 10000"
[ $SMOKE = 1 ] && STEADY=5 && ladder="500 1000"
sustained=0
for rate in $ladder; do
  gateway 3 full
  result=$(loadgen "$rate" "$STEADY")
  backlog=$(pending)
  failed=$(echo "$result" | field failed)
  kept=$(calc "int($failed == 0 and $backlog < 3 * $rate)")
  echo "| sustained ladder: $rate events/s for ${STEADY}s | $(echo "$result" | field ok) acknowledged, $failed failed, $backlog deliveries pending at the end$( [ "$kept" = 1 ] && echo ' — kept up' || echo ' — fell behind') |"
  stop_gateway
  [ "$kept" = 1 ] || break
  sustained=$rate
done
echo "| highest sustained rate (3-way fan-out) | $sustained events/s = $((sustained * 3)) deliveries/s |"
[ "$sustained" = 0 ] && sustained=$full_rate

gateway 3 full
for pct in 25 50 75; do
  [ $SMOKE = 1 ] && [ $pct != 50 ] && continue
  rate=$(calc "int($sustained * $pct / 100)")
  result=$(target/release/examples/loadgen http://127.0.0.1:18092/v1/hooks/bench/telecmi "$PAYLOAD" "$rate" "$DURATION")
  p50=$(echo "$result" | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.2f / %.2f / %.2f ms (%d ok, %d failed)' % (r['p50_ms'], r['p99_ms'], r['p999_ms'], r['ok'], r['failed']))")
  echo "| ack latency p50 / p99 / p99.9 at $pct% of sustained ($rate events/s, fixed rate) | $p50 |"
done
drain_seconds >/dev/null
stop_gateway

widths="1 3 10 50"; [ $SMOKE = 1 ] && widths="1 10"
for n in $widths; do
  gateway "$n" full
  started=$(date +%s.%N)
  ingest=$(rps http://127.0.0.1:18092/v1/hooks/bench/telecmi)
  drained=$(drain_seconds)
  total=$(calc "round($(date +%s.%N) - $started, 1)")
  deliveries=$(calc "int($ingest * $DURATION * $n / $total)")
  echo "| fan-out to $n destinations | $ingest events/s ingested; $deliveries deliveries/s over ingest + drain (${total}s) |"
  stop_gateway
done

# Backlog: pause the three destinations, ingest until a million deliveries are pending,
# watch memory and disk, then resume and time the drain.
TARGET=${BACKLOG:-1000000}; FILL=5; [ $SMOKE = 1 ] && TARGET=30000 && FILL=1
gateway 3 full
for d in d1 d2 d3; do admin "/v1/destinations/bench/$d/pause"; done
rss_peak=0
while [ "$(pending)" -lt "$TARGET" ]; do
  wrk -t2 -c"$CONNECTIONS" -d"${FILL}s" -s "$work/post.lua" http://127.0.0.1:18092/v1/hooks/bench/telecmi >/dev/null
  rss=$(awk '/VmRSS/ {print $2}' /proc/$gw/status); [ "$rss" -gt "$rss_peak" ] && rss_peak=$rss
done
backlog=$(pending)
store_mb=$(du -sm "$gw_dir/data" | awk '{print $1}')
echo "| backlog: $backlog deliveries pending (destinations paused) | RSS $((rss_peak / 1024)) MB at peak while filling; store $store_mb MB on disk |"
started=$(date +%s.%N)
for d in d1 d2 d3; do admin "/v1/destinations/bench/$d/resume"; done
while [ "$(pending)" != "0" ]; do
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' /proc/$gw/status); [ "$rss" -gt "$rss_peak" ] && rss_peak=$rss
done
took=$(calc "round($(date +%s.%N) - $started, 1)")
hwm=$(awk '/VmHWM/ {print $2}' /proc/$gw/status)
echo "| backlog drain once resumed | $backlog deliveries in ${took}s = $(calc "int($backlog / $took)") deliveries/s; peak RSS (VmHWM) $((hwm / 1024)) MB |"
stop_gateway
