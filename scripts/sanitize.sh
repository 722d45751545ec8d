#!/usr/bin/env bash
# Builds ipex-shim with AddressSanitizer and UndefinedBehaviorSanitizer (GCC, the compiler of
# the normal build; -DIPEX_SHIM_SANITIZE=ON) into build-asan/ and runs, within a time budget:
#   1. the unit and kernel tests (each googletest binary once, every test in one process);
#   2. end-to-end programs of tests/e2e/programs under the preload: inference in every mode,
#      calibration and int8 with the config it wrote, a training step, Python threads, and
#      DataLoaders with worker processes.
# Any sanitizer report fails the run, except those in tests/sanitize/*.supp (each explained
# there by an example from stock torch). Python programs need the sanitizer runtime first in
# LD_PRELOAD, and run with detect_leaks=0: CPython and torch keep objects alive until exit
# by design (interned strings, module state, registries), which LeakSanitizer would list.
# usage: scripts/sanitize.sh [budget_seconds] [all|tests|programs]
#   budget: default 3600 s, the build included; tests: only step 1; programs: only step 2
#   IPEX_SANITIZE_SKIP_BUILD=1 uses build-asan/ as it is (while a build of it runs elsewhere)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
budget=${1:-3600}
steps=${2:-all}
start=$(date +%s)
build=$here/build-asan
out=$(mktemp -d /tmp/ipex_sanitize.XXXXXX)
programs=$here/tests/e2e/programs
python=/usr/bin/python3

left() { echo $((budget - ($(date +%s) - start))); }
say() { echo "sanitize: [$(($(date +%s) - start)) s] $*"; }

export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$here}
if [ -z "${IPEX_SANITIZE_SKIP_BUILD:-}" ]; then
  say "building $build"
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPEX_SHIM_SANITIZE=ON >/dev/null
  if ! timeout "$(left)" cmake --build "$build" -j2 >"$out/build.log" 2>&1; then
    tail -20 "$out/build.log"
    say "FAILED: the build did not finish within the budget of $budget s, or failed (log: $out/build.log)"
    exit 1
  fi
  say "built"
fi

runtime=$(gcc -print-file-name=libasan.so)
# Reports go to files (one per process, DataLoader workers included) as well as failing
# the process: halt_on_error=1 makes UBSan's recoverable checks stop at the first report.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$out/report:suppressions=$here/tests/sanitize/asan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$out/report:suppressions=$here/tests/sanitize/ubsan.supp"
failures=0

check_reports() {  # fails the step that left a report, in a file or in its output
  local step=$1
  local pattern='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |SUMMARY: (Address|Undefined|Leak)'
  if compgen -G "$out/report.*" >/dev/null || grep -q -E "$pattern" "$out/$step.log"; then
    say "FAILED: $step: sanitizer report:"
    head -40 "$out"/report.* 2>/dev/null || grep -E -A20 "$pattern" "$out/$step.log" | head -40
    mkdir -p "$out/failed.$step" && mv "$out"/report.* "$out/failed.$step/" 2>/dev/null || true
    failures=$((failures + 1))
    return 1
  fi
}

run_step() {  # run_step NAME COMMAND...: within the budget, output in $out/NAME.log
  local name=$1
  shift
  if [ "$(left)" -le 0 ]; then
    say "FAILED: $name: not run, the budget of $budget s is spent"
    failures=$((failures + 1))
    return 1
  fi
  local step_start=$(date +%s) rc=0
  timeout "$(left)" "$@" >"$out/$name.log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    say "FAILED: $name: exit code $rc (log: $out/$name.log)"
    tail -15 "$out/$name.log"
    failures=$((failures + 1))
    check_reports "$name" || true
    return 1
  fi
  check_reports "$name" || return 1
  say "ok: $name ($(($(date +%s) - step_start)) s)"
}

# 1. Unit and kernel tests.
if [ "$steps" != programs ]; then
  for binary in ipex_shim_unit_tests ipex_shim_config_tests ipex_shim_kernel_tests; do
    run_step "$binary" env ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=0/detect_leaks=1}" \
      "$build/tests/unit/$binary" --gtest_brief=1 || true
  done
fi

# 2. End-to-end programs under the preload. The banner (IPEX_VERBOSE=1) shows that the
# bootstrap and the core were loaded and the mode taken; without it the step fails (off
# mode prints none: only the bootstrap runs there).
shim() {  # shim MODE NAME PROGRAM ARGS...
  local mode=$1 name=$2
  shift 2
  run_step "$name" env -u OMP_NUM_THREADS IPEX_MODE="$mode" IPEX_VERBOSE=1 \
    LD_PRELOAD="$runtime $build/libipex_shim.so" "$python" "$@" || return 0
  if [ "$mode" != off ] && ! grep -q "^ipex_shim: ipex-shim .*: mode $mode," "$out/$name.log"; then
    say "FAILED: $name: the shim did not start in mode $mode (log: $out/$name.log)"
    failures=$((failures + 1))
  fi
}
if [ "$steps" != tests ]; then
  cd "$programs"
  for mode in off fp32 bf16; do
    shim "$mode" "inference_$mode" residual.py "$out/residual_$mode.pt"
  done
  shim fp32 inference_mode_fp32 residual.py "$out/residual_inference_mode.pt" inference_mode
  IPEX_CONFIG=$out/int8.json shim calibration calibration int8cfg_model.py "$out/cal.pt" --arch full
  if [ -s "$out/int8.json" ]; then
    IPEX_CONFIG=$out/int8.json shim int8 inference_int8 int8cfg_model.py "$out/int8.pt" --arch full
  else
    say "FAILED: calibration wrote no config to $out/int8.json"
    failures=$((failures + 1))
  fi
  shim bf16 training_step float_training.py "$out/training.pt"
  shim fp32 threads int8_threads.py "$out/threads.pt"
  shim fp32 thread_and_dataloader float_parallel.py "$out/parallel.pt"
  IPEX_CONFIG=$out/dataloader.json shim calibration calibration_dataloader int8cfg_dataloader.py "$out/dataloader.pt"
fi

total=$(($(date +%s) - start))
if [ $failures -ne 0 ]; then
  say "FAILED: $failures steps (logs and reports in $out), $total s of a budget of $budget s"
  exit 1
fi
say "clean: no sanitizer report in $total s (budget $budget s)"
rm -rf "$out"
