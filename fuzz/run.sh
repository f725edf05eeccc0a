#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time each (FUZZ_SECONDS, default 30), on the
# stable toolchain (RUSTC_BOOTSTRAP lets it take the sanitizer flags). Installs
# cargo-fuzz if missing. A crash fails the run and leaves its input in artifacts/TARGET/.
#
#   bash fuzz/run.sh                      # every target, 30 s each
#   FUZZ_SECONDS=3600 bash fuzz/run.sh config_load
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-30}
export PATH=$HOME/.cargo/bin:$PATH RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# libFuzzer itself is C++.
if ! command -v c++ >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq g++
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  echo "fuzz: $target for ${seconds}s"
  log="artifacts/$target.log"
  mkdir -p artifacts
  status=0
  cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|Done)" "$log" || true
  if [ "$status" != 0 ]; then
    tail -60 "$log"
    echo "fuzz: $target FAILED (exit $status; the input is in fuzz/artifacts/$target/)"
    exit 1
  fi
done
