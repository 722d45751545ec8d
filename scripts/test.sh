#!/usr/bin/env bash
# Sets up (Debian packages, build) and runs every test: the googletest unit tests, then the
# end-to-end tests that run real Python programs under the preload next to control runs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
build_dir=${IPEX_SHIM_BUILD_DIR:-$here/build}
export IPEX_SHIM_BUILD_DIR=$build_dir

echo "== unit tests (ctest)"
ctest --test-dir "$build_dir" --output-on-failure -j2

echo "== end-to-end tests (pytest)"
cd "$here"
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e "$@"
