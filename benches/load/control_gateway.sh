# Sourced by control.sh and destinations.sh: a gateway with the admin API and sealed
# secrets on a SQLite store in a scratch directory, and no tenant file (tenants come
# through the API). Needs BIN; CONTROL_EXTRA is more TOML for the main file. Gives `work`,
# `pids` (killed on exit), `wait_port PORT`, and `serve` (starts the gateway: `$gw`).
SCALE=target/release/examples/control_scale
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; cp "$work/log" "${KEEP_LOG:-/dev/null}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
mkdir -p "$work/tenants"
cat > "$work/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:18192"
admin_listen = "127.0.0.1:18193"
allow_private_destinations = true
max_connections = 10000
[admin]
token = { env = "BENCH_ADMIN_TOKEN" }
secrets_key = { env = "BENCH_SECRETS_KEY" }
[store]
url = "sqlite://data/control.db"
${CONTROL_EXTRA:-}
TOML
export BENCH_ADMIN_TOKEN=bench BENCH_SECRETS_KEY=$(openssl rand -hex 32 2>/dev/null || python3 -c "import secrets; print(secrets.token_hex(32))")
serve() { $BIN serve --config "$work/switchboard.toml" 2>"$work/log" & gw=$!; pids+=($gw); }
