#!/usr/bin/env bash
# Builds (once per machine) and enters a minimal Debian 13 (trixie) chroot with torch 2.6 and
# oneDNN 3.7, the second release ipex-shim is built and tested on.
#
#   scripts/debian13_chroot.sh ensure            build the chroot if missing, install what
#                                                the package list adds
#   scripts/debian13_chroot.sh run DIR CMD...    run CMD inside it with DIR (a host folder)
#                                                bound at /src/NAME; CMD starts in that folder
#   scripts/debian13_chroot.sh remove            unmount everything and delete the chroot
#
# The chroot lives outside any checkout, in $IPEX_SHIM_CHROOT_CACHE (default
# /var/cache/ipex-shim/trixie). Two stamps inside it say what is done: the base system
# (written after debootstrap completed) and the package list (its hash, written after
# apt-get installed all of it). A chroot without the first, or with a half-built base, is
# rebuilt from scratch; a changed list is installed into the existing one.
# Several runs may share the chroot at once: /proc, /dev and /sys are mounted once and left
# mounted; each run binds its own folder and unbinds only that.
set -euo pipefail

cache=${IPEX_SHIM_CHROOT_CACHE:-/var/cache/ipex-shim/trixie}
mirror=${IPEX_SHIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# What scripts/setup.sh installs on Debian 13, installed up front so that runs are quick;
# setup.sh inside the chroot then finds everything present.
packages=(
  ca-certificates g++ cmake ninja-build ccache
  libtorch-dev python3-torch python3-torchvision python3-dev python3-setuptools
  libdnnl-dev nlohmann-json3-dev googletest libgtest-dev
  ocl-icd-opencl-dev opencl-headers libopenblas0-pthread
  python3-pytest python3-sklearn python3-matplotlib
)
base_stamp=$cache/.ipex-shim-base
list_stamp=$cache/.ipex-shim-packages
list_hash=$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-16)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

mounted() { awk -v p="$1" '$2 == p {found = 1} END {exit !found}' /proc/mounts; }

unmount_under() {
  # Deepest first, so that nothing under the tree stays mounted when it is deleted.
  local m
  for m in $(awk -v root="$1" 'index($2, root "/") == 1 {print $2}' /proc/mounts | sort -r); do
    as_root umount -l "$m" 2>/dev/null || true
  done
}

mount_system() {
  mounted "$cache/proc" || as_root mount -t proc proc "$cache/proc"
  mounted "$cache/sys" || as_root mount -t sysfs sys "$cache/sys" 2>/dev/null || true
  mounted "$cache/dev" || as_root mount --rbind /dev "$cache/dev"
  as_root mount --make-rslave "$cache/dev" 2>/dev/null || true
  # The host's names resolve inside as outside: torchrun's workers reach their agent's store
  # by the machine's hostname, which debootstrap's /etc/hosts does not list.
  cmp -s /etc/hosts "$cache/etc/hosts" || as_root cp /etc/hosts "$cache/etc/hosts"
}

remove() {
  unmount_under "$cache"
  unmount_under "$cache.partial"
  as_root rm -rf --one-file-system "$cache" "$cache.partial"
}

ensure() {
  if [ ! -f "$base_stamp" ]; then
    command -v debootstrap >/dev/null || {
      as_root apt-get update -q
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends debootstrap
    }
    echo "debian13_chroot: building $cache (debootstrap trixie)"
    remove
    as_root mkdir -p "$(dirname "$cache")"
    as_root debootstrap --variant=minbase trixie "$cache.partial" "$mirror"
    as_root mv "$cache.partial" "$cache"
    as_root touch "$base_stamp"
  fi
  if [ "$(cat "$list_stamp" 2>/dev/null)" != "$list_hash" ]; then
    echo "debian13_chroot: installing ${#packages[@]} packages into $cache"
    mount_system
    as_root chroot "$cache" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      DEBIAN_FRONTEND=noninteractive \
      sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends ${packages[*]}"
    echo "$list_hash" | as_root tee "$list_stamp" >/dev/null
    echo "debian13_chroot: ready"
  fi
}

run() {
  local dir=$1; shift
  ensure
  dir=$(cd "$dir" && pwd)
  mount_system
  local name
  name=$(basename "$dir")-$(printf '%s' "$dir" | sha256sum | cut -c1-8)
  local target=$cache/src/$name
  as_root mkdir -p "$target"
  mounted "$target" || as_root mount --bind "$dir" "$target"
  local env=(HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
  local var
  for var in CI OMP_NUM_THREADS IPEX_SHIM_BUILD_DIR; do
    [ -z "${!var:-}" ] || env+=("$var=${!var}")
  done
  local rc=0
  as_root chroot "$cache" /usr/bin/env -i "${env[@]}" sh -c 'cd "$1" && shift && exec "$@"' \
    sh "/src/$name" "$@" || rc=$?
  as_root umount -l "$target" 2>/dev/null || true
  return $rc
}

case "${1:-}" in
  ensure) ensure ;;
  remove) remove ;;
  run) shift; [ $# -ge 2 ] || { echo "usage: $0 run DIR CMD..." >&2; exit 2; }; run "$@" ;;
  *) echo "usage: $0 ensure | run DIR CMD... | remove" >&2; exit 2 ;;
esac
