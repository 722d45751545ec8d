#!/usr/bin/env bash
# Sets up (Debian packages, build) and runs the main job on its built-in default: the
# benchmark of torchvision resnet50 (eval, batch 16, 2 threads), stock paths and every shim
# mode side by side. Prints the table; writes bench-out/bench.json and bench-out/bench.png.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
mkdir -p "$here/bench-out"
cd "$here"
exec /usr/bin/python3 scripts/bench.py --json bench-out/bench.json \
  --png bench-out/bench.png "$@"
