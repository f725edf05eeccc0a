#!/usr/bin/env bash
# Listing destinations and scraping /metrics at platform scale: 10,000 tenants × 5
# destinations (seeded through the API), all on a closed port so every delivery retries and
# the queue spans most of them. Prints each listing's status, size and time, the scrape's
# size, lines and time, and the gateway's RSS before and after.
# Usage: benches/load/destinations.sh   (TENANTS=10000; BIN=switchboard binary; QUERIES="?a ?b";
#   DETAIL=destination|tenant|gateway: [metrics] detail)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q --bin switchboard --example control_scale
BIN=${BIN:-target/release/switchboard}; TENANTS=${TENANTS:-10000}
CONTROL_EXTRA=$( [ -n "${DETAIL:-}" ] && printf '[metrics]\ndetail = "%s"' "$DETAIL" || true )
source benches/load/control_gateway.sh
serve; wait_port 18193
# Destinations on a closed port; callbacks to random tenants for 6 s (the churn mode also
# replaces a tenant every 50 ms).
$SCALE seed http://127.0.0.1:18193 bench http://127.0.0.1:9 "$TENANTS" >/dev/null
$SCALE churn http://127.0.0.1:18193 http://127.0.0.1:18192 bench http://127.0.0.1:9 "$TENANTS" 2000 6 >/dev/null
pending=$(curl -s 127.0.0.1:18193/metrics | awk '/^switchboard_deliveries\{state="pending"\}/ {print $2}')
echo "pending: $pending; RSS before the listings $(awk "/VmRSS/ {print \$2/1024}" /proc/$gw/status) MB"
for q in ${QUERIES:-"?" "?health=true" "?limit=1000&health=true" "?tenant=t5"}; do
  curl -s -o /dev/null -H 'Authorization: Bearer bench' -w "GET /v1/destinations$q: %{http_code} %{size_download} bytes %{time_total} s\n" "127.0.0.1:18193/v1/destinations$q"
done
curl -s -o "$work/metrics" -w "GET /metrics: %{http_code} %{size_download} bytes %{time_total} s" 127.0.0.1:18193/metrics
echo ", $(wc -l < "$work/metrics") lines"
echo "RSS $(awk '/VmRSS/ {print $2/1024}' /proc/$gw/status) MB"
