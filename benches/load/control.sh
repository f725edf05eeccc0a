#!/usr/bin/env bash
# The control plane at platform scale (issue: 10,000 tenants × 5 templated destinations):
#   - seeding: 10,000 tenants PUT through the API (8 at a time);
#   - memory: the gateway's RSS with no tenant and with all of them (the table's cost);
#   - start: from `switchboard serve` to the first accepted callback of the last tenant,
#     every tenant loaded from the store and compiled;
#   - churn: one tenant replaced every 50 ms while RATE callbacks/s (default 2,000) go to
#     random tenants: PUT latency (committed and serving when it answers), and callbacks
#     not accepted while tenants change (must be 0).
# Usage: benches/load/control.sh [TENANTS] [RATE] [SECONDS]   (defaults 10000 2000 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
TENANTS=${1:-10000}; RATE=${2:-2000}; SECONDS_=${3:-20}
cargo build --release -q --bin switchboard --example control_scale
BIN=target/release/switchboard
source benches/load/control_gateway.sh
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

$BIN sink --quiet --listen 127.0.0.1:18191 2>/dev/null & pids+=($!)

date_=$(date -u +%F); commit=$(git rev-parse --short HEAD 2>/dev/null || echo "-")
cpu=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
echo "Control plane at scale: $date_, commit $commit, $(nproc) cores ($cpu), $TENANTS tenants × 5 destinations"
echo
echo "| measure | figure |"
echo "|---|---|"
serve; wait_port 18193; sleep 0.5
empty=$(rss_mb $gw)
seeded=$($SCALE seed http://127.0.0.1:18193 bench http://127.0.0.1:18191 "$TENANTS")
echo "| seeding through the API | $seeded |"
full=$(rss_mb $gw)
echo "| RSS with no tenant → with $TENANTS tenants | $empty MB → $full MB (the table: $((full - empty)) MB) |"
kill $gw; wait $gw 2>/dev/null || true

start=$(date +%s%N)
serve
ms=$($SCALE first-ok http://127.0.0.1:18192 "t$((TENANTS - 1))" 60)
total=$(( ($(date +%s%N) - start) / 1000000 ))
echo "| start: serve → first callback of the last tenant accepted | $total ms (after the listener opened: $ms ms) |"
echo "| RSS after a start with $TENANTS tenants | $(rss_mb $gw) MB |"
quiet=$($SCALE churn http://127.0.0.1:18193 http://127.0.0.1:18192 bench http://127.0.0.1:18191 "$TENANTS" 10 5)
echo "| churn: one PUT every 50 ms under 10 callbacks/s for 5s | $quiet |"
churn=$($SCALE churn http://127.0.0.1:18193 http://127.0.0.1:18192 bench http://127.0.0.1:18191 "$TENANTS" "$RATE" "$SECONDS_")
echo "| churn: one PUT every 50 ms under $RATE callbacks/s for ${SECONDS_}s | $churn |"
echo "| RSS after the churn | $(rss_mb $gw) MB |"
