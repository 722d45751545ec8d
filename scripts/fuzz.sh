#!/usr/bin/env bash
# Fuzzes the torch-free input parsers with libFuzzer (clang), each target for a bounded time:
#   json_file          reading a JSON file (config/json_file.h)
#   int8_config        validating, writing back and matching the INT8 config
#   float_mode_config  the fp32/bf16 overrides
#   settings           the environment table's parsing (shim/settings.h)
# usage: scripts/fuzz.sh [seconds_per_target] [target...]      (default 60 s, every target)
#   IPEX_FUZZ_RUNS=N   stop a target after N executions instead (time limit still applies)
# Builds into build-fuzz/ (-DIPEX_SHIM_FUZZ=ON: only these targets, with ASan and UBSan),
# starts from tests/fuzz/corpus/<target>/ and keeps what it learns in build-fuzz/corpus/.
# A crash, hang (over 10 s for one input), leak or sanitizer report fails the script; the
# input is saved as build-fuzz/artifacts/<target>/crash-*: add it to the corpus with the fix.
# Prints one line per target: executions, seconds, executions per second.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json_file int8_config float_mode_config settings)

packages=(clang libclang-rt-14-dev)   # libclang-rt-14-dev holds libclang_rt.fuzzer
source "$here/scripts/packages.sh"
install_missing fuzz "${packages[@]}"

build=$here/build-fuzz
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$here}
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPEX_SHIM_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" -j2 >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for target in "${targets[@]}"; do
  corpus=$build/corpus/$target
  artifacts=$build/artifacts/$target
  log=$build/$target.log
  mkdir -p "$corpus" "$artifacts"
  runs=()
  [ -z "${IPEX_FUZZ_RUNS:-}" ] || runs=(-runs="$IPEX_FUZZ_RUNS")
  start=$(date +%s%N)
  set +e
  "$build/tests/fuzz/${target}_fuzz" "$corpus" "$here/tests/fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "${runs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  elapsed=$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.1f", ns / 1e9 }')
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  executions=${executions:-0}
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz: $target FAILED after $executions executions (log: $log)"
    grep -E "fuzz check failed|ERROR:|runtime error|SUMMARY|Test unit written" "$log" | head -5
  else
    printf 'fuzz: %-18s %9s executions in %6s s (%s/s), no crash, hang or report\n' \
      "$target" "$executions" "$elapsed" "$(awk -v n="$executions" -v t="$elapsed" 'BEGIN { printf "%.0f", n / t }')"
  fi
done
exit $status
