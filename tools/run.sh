#!/usr/bin/env bash
# README command 1: installs what is missing, builds pcifs, mounts the
# embedded default simulated devices and gives a short tour of what it serves.
# Then it stays mounted until Ctrl-C (which unmounts), or with --detach leaves
# the daemon running in the background.
#
#   bash tools/run.sh [--detach] [MOUNTPOINT] [-- PCIFS-OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")/.."
detach=0
mnt=/tmp/pcifs
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --detach) detach=1 ;;
    --) shift; extra=("$@"); break ;;
    *) mnt=$1 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (it installs packages and mounts)" >&2; exit 1; }
bash tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc)" --target pcifs

mkdir -p "$mnt"
if grep -q " $mnt fuse" /proc/mounts; then fusermount3 -u "$mnt" || fusermount3 -u -z "$mnt"; fi
log=$(mktemp /tmp/pcifs-run-log.XXXXXX)
build/release/pcifs -f "${extra[@]}" "$mnt" 2>"$log" &
daemon=$!
cleanup() {
  if grep -q " $mnt fuse" /proc/mounts; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt"; fi
  wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "unmounting $mnt"; exit 0' INT TERM
for _ in $(seq 100); do stat -f -c %T "$mnt" 2>/dev/null | grep -q fuse && break; sleep 0.1; done
stat -f -c %T "$mnt" | grep -q fuse || { cat "$log"; exit 1; }

D=$mnt/devices/0000:01:00.0
step() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }
step "pcifs mounted the default simulated devices at $mnt (log: $log)"
sed 's/^/    /' "$log"
step "ls $D"
ls "$D"
step "lspci over the mount, as the unprivileged user nobody (no <access denied>)"
runuser -u nobody -- lspci -A linux-sysfs -O sysfs.path="$mnt" 2>/dev/null
runuser -u nobody -- lspci -A linux-sysfs -O sysfs.path="$mnt" -vvv -s 01:00.0 2>/dev/null |
  sed -n '1,12p;/Capabilities: \[1/p'
step "the expansion ROM, from the shadow (no 'echo 1 > rom' needed): its header"
xxd -l 32 "$D/rom"
step "a DOE Discovery exchange through $D/doe (write a request object, read the response)"
idx=0
while :; do
  exec 3<>"$D/doe"
  printf "\\x01\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x$(printf %02x "$idx")\\x00\\x00\\x00" >&3
  resp=$(head -c 12 <&3 | xxd -p)
  exec 3>&-
  echo "    request index $idx -> response ${resp}: protocol ${resp:18:2}${resp:16:2}:${resp:20:2}"
  idx=$((16#${resp:22:2}))
  [ "$idx" = 0 ] && break
done
echo "    doe_features/: $(ls "$D/doe_features" | tr '\n' ' ')"
step "power state: D0 -> D3hot -> D0 (a BAR read in D3hot fails with EIO)"
echo "    power_state: $(cat "$D/power_state")"
echo D3hot >"$D/power_state"
echo "    power_state: $(cat "$D/power_state")"
dd if="$D/resource2" bs=4 count=1 skip=16 status=none 2>&1 | sed 's/^/    BAR read: /' || true
echo D0 >"$D/power_state"
printf '    power_state: %s; BAR2 ID register: %s\n' "$(cat "$D/power_state")" \
  "$(dd if="$D/resource2" bs=4 count=1 skip=16 status=none | xxd -p)"
step "status (JSON), first device"
sed -n '1,22p' "$mnt/status"
echo "    ..."

if [ "$detach" = 1 ]; then
  trap - EXIT INT TERM
  disown "$daemon"
  step "pcifs stays mounted at $mnt (pid $daemon); end it with: fusermount3 -u $mnt"
  exit 0
fi
if [ -t 0 ]; then
  step "pcifs is mounted at $mnt. Try: ls $D; press Ctrl-C to unmount."
  wait "$daemon"
else
  step "not a terminal: unmounting (use --detach to keep it mounted)"
fi
