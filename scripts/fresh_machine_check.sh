#!/usr/bin/env bash
# Proves the README's set-up on fresh machines: for each Debian release named (default:
# bookworm trixie), debootstraps a minimal system into a scratch folder, copies this
# checkout's committed tree into it, runs scripts/setup.sh there (which must install every
# package it needs by itself) and a smoke test under the preload: a small convolutional model
# in fp32 mode must match stock PyTorch and run on the shim's oneDNN kernels.
#
#   scripts/fresh_machine_check.sh [bookworm] [trixie]
#
# Needs root (or sudo) and debootstrap (installed if missing). Takes 15-30 minutes a release
# on 2 cores, most of it apt-get and the build. The scratch folders are removed at the end;
# $IPEX_SHIM_FRESH_KEEP=1 keeps them for a look.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mirror=${IPEX_SHIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(bookworm trixie)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

command -v debootstrap >/dev/null || {
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends debootstrap
}

smoke='
import json, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(16 * 14 * 14, 10)).eval()
x = torch.randn(4, 3, 16, 16)
with torch.no_grad():
    got = model(x)
    ref = model.double()(x.double())
err = ((got.double() - ref).norm() / ref.norm()).item()
status = json.loads(torch.ops.ipex_shim.status())
if status.get("refused"):
    raise SystemExit("smoke: set-up done, but the shim stays off on this machine: " + status["refused"])
ops = status["ops"]
ran = ops["conv2d"].get("onednn_fp32", 0) + ops["linear"].get("onednn_fp32", 0)
print("smoke: torch", torch.__version__, "relative error", err, "shim kernel calls", ran)
assert err < 1e-5 and ran == 2, "smoke test failed"
'

failed=()
for release in "${releases[@]}"; do
  root=$(mktemp -d "/var/tmp/ipex-shim-fresh-$release.XXXXXX")
  cleanup() {
    for m in $(awk -v r="$root" 'index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r); do
      as_root umount -l "$m" || true
    done
    [ "${IPEX_SHIM_FRESH_KEEP:-0}" = 1 ] || as_root rm -rf --one-file-system "$root"
  }
  trap cleanup EXIT
  start=$(date +%s)
  echo "fresh_machine_check: $release: debootstrap into $root"
  as_root debootstrap --variant=minbase "$release" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -20 "$root.debootstrap.log"; failed+=("$release (debootstrap)"); cleanup; trap - EXIT; continue; }
  rm -f "$root.debootstrap.log"
  as_root mkdir -p "$root/src"
  git -C "$here" archive HEAD | as_root tar -x -C "$root/src"
  printf '%s' "$smoke" | as_root tee "$root/src/fresh_smoke.py" >/dev/null
  as_root mount -t proc proc "$root/proc"
  as_root mount --rbind /dev "$root/dev"
  as_root mount --make-rslave "$root/dev"
  rc=0
  as_root chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 sh -c "cd /src && scripts/setup.sh && LD_PRELOAD=/src/build/libipex_shim.so \
    IPEX_MODE=fp32 /usr/bin/python3 /src/fresh_smoke.py" || rc=$?
  echo "fresh_machine_check: $release: exit $rc after $(( $(date +%s) - start )) s"
  [ $rc -eq 0 ] || failed+=("$release")
  cleanup
  trap - EXIT
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fresh_machine_check: FAILED on ${failed[*]}"
  exit 1
fi
echo "fresh_machine_check: passed on ${releases[*]}"
