#!/usr/bin/env bash
# Issue 13's figures on a many-core machine, in one prepared run that fits a
# short lease (about 7 minutes on 16 cores). Build here, make a kit, carry it:
#
#   bash ../shared/tools/device-kit.sh build/dev .kit    # .kit: git-ignored
#   strip .kit/bin/pcifs*                                 # 150 MiB -> 8 MiB
#   (on the machine, from the repo root, as root)
#   bash tools/bench/many_core.sh .kit "$OUT" [quick]
#
# Writes OUT/figures.txt (every figure, as printed) and OUT/log.txt (the
# machine, each step's stderr and exit status). Read-only on the machine's /sys: the sysfs mounts
# only read config, and lspci only reads. pcifs-bench sets
# /sys/module/fuse/parameters/enable_uring for its io_uring steps and puts it
# back; this script checks that it did. `quick` runs each step once, small
# (to try the script on any machine).
set -uo pipefail
kit=$(cd "${1:?usage: many_core.sh KIT OUT [quick]}" && pwd)
out=${2:?usage: many_core.sh KIT OUT [quick]}
quick=${3:-}
mkdir -p "$out"
export LD_LIBRARY_PATH=$kit/lib PATH=$kit/bin:$PATH
bench=$kit/bin/pcifs-bench
pcifs=$kit/bin/pcifs
txt=$out/figures.txt log=$out/log.txt
: >"$txt" && : >"$log"

uring_param=/sys/module/fuse/parameters/enable_uring
uring_before=$(cat "$uring_param" 2>/dev/null || echo absent)
{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-))"
  echo "load: $(cat /proc/loadavg)"
  echo "enable_uring: $uring_before"
  echo "pci functions: $(ls /sys/bus/pci/devices | wc -l)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >>"$log"

# step NAME SECONDS ARGS...: one pcifs-bench run, bounded; its figures to txt.
step() {
  local name=$1 limit=$2
  shift 2
  local rounds=()
  [ -n "$quick" ] && rounds=(--quick)
  echo "=== $name: pcifs-bench $* ${rounds[*]}" | tee -a "$txt" >>"$log"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$bench" --pcifs "$pcifs" "$@" "${rounds[@]}" >>"$txt" 2>>"$log"
  local rc=$?
  echo "--- $name: rc $rc, $((SECONDS - t0)) s" | tee -a "$txt" >>"$log"
}

step core 90 --core --rounds 3
step readers_dev 120 --readers --transport=dev --rounds 3
step readers_uring 120 --readers --transport=uring --rounds 3
step transports 150 --transport=both --rounds 3
step lspci_dev 45 --lspci --transport=dev --rounds 9
step lspci_uring 45 --lspci --transport=uring --rounds 9
step scale 90 --scale --rounds 3

uring_after=$(cat "$uring_param" 2>/dev/null || echo absent)
echo "enable_uring after: $uring_after (before: $uring_before)" >>"$log"
if [ "$uring_after" != "$uring_before" ]; then
  echo "enable_uring was left changed: putting back $uring_before" >>"$log"
  echo "$uring_before" >"$uring_param"
fi
left=$(grep -c ' fuse\.\(pcifs\|pcifs-bench\)' /proc/mounts || true)
echo "pcifs mounts left: $left" >>"$log"
