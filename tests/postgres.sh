#!/usr/bin/env bash
# A private PostgreSQL for the tests, from the machine's installed server binaries:
# initdb into a temporary directory, listening only on 127.0.0.1 on a free port.
#
#   bash tests/postgres.sh start   # prints the server's URL (idempotent)
#   bash tests/postgres.sh url     # prints the URL of the running server, if any
#   bash tests/postgres.sh stop    # stops it and removes its files
#   bash tests/postgres.sh down    # stops the server, keeping its files (a database outage)
#   bash tests/postgres.sh up      # starts it again, on the same port
#
# The tests use $SWITCHBOARD_TEST_POSTGRES when set, else run `start` themselves (the
# server then stays up for later runs; `stop` when done). Each test makes its own database.
set -euo pipefail

dir=${SWITCHBOARD_PG_DIR:-/tmp/switchboard-test-pg}
data=$dir/data

find_bin() {
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$found" ] && [ -x "$found/pg_ctl" ] && echo "$found"
}

# initdb refuses to run as root; run the server as the package's postgres user then.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
  [ -f "$dir/url" ] && [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

cmd=${1:-start}
bin=$(find_bin || true)
if [ -z "$bin" ]; then
  echo "no PostgreSQL server binaries found (install Debian's postgresql package)" >&2
  exit 3
fi

case "$cmd" in
  start)
    exec 9>"$dir.lock"
    flock 9
    if running; then cat "$dir/url"; exit 0; fi
    [ -d "$data" ] && as_owner "$bin/pg_ctl" -D "$data" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$data" -U switchboard --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Test settings: no fsync (the tests kill gateways, not the database), room for many
    # pools. SWITCHBOARD_PG_DURABLE=1 keeps PostgreSQL's durable defaults (for benchmarks).
    settings="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400"
    # SWITCHBOARD_PG_STATEMENTS=1 loads pg_stat_statements (the load harness's PG_STATEMENTS=1).
    if [ "${SWITCHBOARD_PG_STATEMENTS:-0}" = 1 ]; then
      settings="$settings -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
      settings="$settings -c pg_stat_statements.track_planning=on"
    fi
    # SWITCHBOARD_PG_SETTINGS: more server settings, e.g. "-c commit_delay=100" (benchmarks).
    settings="$settings ${SWITCHBOARD_PG_SETTINGS:-}"
    if [ "${SWITCHBOARD_PG_DURABLE:-0}" != 1 ]; then
      settings="$settings -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    echo "$settings" >"$dir/settings"
    # The server must not inherit the lock (fd 9) or the caller's pipes.
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o "$settings" \
      </dev/null >/dev/null 9>&- || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://switchboard@127.0.0.1:$port/postgres" >"$dir/url"
    cat "$dir/url"
    ;;
  down)
    as_owner "$bin/pg_ctl" -D "$data" stop -m fast >/dev/null
    ;;
  up)
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o "$(cat "$dir/settings")" \
      </dev/null >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    ;;
  url)
    running && cat "$dir/url"
    ;;
  stop)
    if [ -d "$data" ]; then as_owner "$bin/pg_ctl" -D "$data" stop -m fast >/dev/null 2>&1 || true; fi
    rm -rf "$dir" "$dir.lock"
    ;;
  *)
    echo "usage: $0 start|url|stop|down|up" >&2
    exit 2
    ;;
esac
