#!/usr/bin/env bash
# Installs what ipex-shim needs from Debian's packages and builds it into build/.
# Safe to run again: packages already present are not reinstalled, the build is incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  g++ cmake ninja-build ccache
  libtorch-dev python3-torch python3-torchvision   # the same libtorch for C++ and Python
  libdnnl-dev nlohmann-json3-dev googletest libgtest-dev
  ocl-icd-opencl-dev opencl-headers   # dnnl-config.cmake requires OpenCL to configure
  libopenblas0-pthread    # a fair stock fp32 anchor: the reference BLAS is 10-100x slower
  python3-pytest python3-sklearn python3-matplotlib
  python3-dev python3-setuptools   # torch.compile (inductor) builds C++ with them
)

source "$here/scripts/packages.sh"
install_missing setup "${packages[@]}"

build_dir=${IPEX_SHIM_BUILD_DIR:-$here/build}
# Paths inside the checkout hashed relative to it: a fresh clone elsewhere (CI) reuses
# ccache's objects instead of compiling every file against torch's headers again.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$here}
cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${IPEX_SHIM_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j2
echo "setup: built $build_dir/libipex_shim.so"
