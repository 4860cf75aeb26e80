#!/usr/bin/env bash
# Issue 13's figures on a many-core machine, in one prepared run that fits a
# short lease (about 7 minutes on 16 cores). Build here, make a kit, carry it:
#
#   bash ../shared/tools/device-kit.sh build/dev .kit    # .kit: git-ignored
#   bash tools/bench/kit_extras.sh .kit                   # symbols only, perf: 36 MiB
#   (on the machine, from the repo root, as root)
#   bash tools/bench/many_core.sh .kit "$OUT" [quick]
#
# Writes OUT/figures.txt (every figure, as printed), OUT/log.txt (the
# machine, each step's stderr and exit status) and, where the kit has perf
# and the machine python3, OUT/profile-dev.txt and OUT/profile-uring.txt
# (where the daemon's time goes with one reader per CPU, issue 13 §1). Read-only on the machine's /sys: the sysfs mounts
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

# profile TRANSPORT SECONDS: pcifs on the simulator, one reader process per
# CPU making 4-byte preads of the endpoint's PMCSR (through the device's gate
# to the simulator), and perf sampling the daemon (call graphs) for SECONDS
# in the middle of it; the report by symbol and by thread to
# OUT/profile-TRANSPORT.txt. Skipped without the kit's perf or python3.
profile() {
  local transport=$1 secs=$2
  local perf=$kit/perf/perf report=$out/profile-$transport.txt
  if [ ! -x "$perf" ] || ! command -v python3 >/dev/null; then
    echo "--- profile $transport: skipped (no $perf or no python3)" | tee -a "$txt" >>"$log"
    return
  fi
  echo "=== profile $transport: $(nproc) readers, perf for $secs s" | tee -a "$txt" >>"$log"
  local mnt data=$out/perf-$transport.data host
  mnt=$(mktemp -d)
  host=$(mktemp -d)  # its control socket (for `pcifs view locks`), state and CDI directories
  if [ "$transport" = uring ]; then echo Y >"$uring_param" 2>>"$log"; fi
  "$pcifs" -f --lock-dir=none --transport="$transport" --control="$host/control.sock" \
    --state-dir="$host/state" --cdi-dir="$host/cdi" --view-root="$host/views" "$mnt" 2>>"$log" &
  local pid=$!
  local cfg=$mnt/devices/0000:01:00.0/config
  for _ in $(seq 100); do [ -e "$cfg" ] && break; sleep 0.1; done
  local readers=()
  for _ in $(seq "$(nproc)"); do
    timeout -k 5 $((secs + 6)) python3 -c '
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY); end = time.time() + float(sys.argv[2])
while time.time() < end:
    for _ in range(1000): os.pread(fd, 4, 0x44)
' "$cfg" $((secs + 4)) 2>>"$log" &
    readers+=($!)
  done
  sleep 2  # the readers are all reading: sample the steady state
  LD_LIBRARY_PATH=$kit/perf/lib timeout -k 5 $((secs + 30)) "$perf" record -F 499 -g \
    -p "$pid" -o "$data" -- sleep "$secs" >>"$log" 2>&1
  wait "${readers[@]}" 2>/dev/null
  # The daemon's lock waits over the whole run (include/pcifs/sync.hpp).
  timeout -k 5 20 "$pcifs" view locks --control "$host/control.sock" >"$host/locks.txt" 2>>"$log"
  # A daemon with a control socket outlives its mount: SIGTERM stops it and
  # unmounts; the unmount after it is for a daemon that did not.
  kill -TERM "$pid" 2>>"$log"
  wait "$pid" 2>/dev/null
  if grep -q " $mnt " /proc/mounts; then
    fusermount3 -u "$mnt" 2>>"$log" || umount -l "$mnt" 2>>"$log"
  fi
  rmdir "$mnt" 2>/dev/null
  if [ "$transport" = uring ]; then echo "$uring_before" >"$uring_param" 2>>"$log"; fi
  {
    echo "# pcifs --transport=$transport, $(nproc) readers of PMCSR, perf -F 499 -g for $secs s"
    echo "# the daemon's lock waits since it started (pcifs view locks)"
    cat "$host/locks.txt" 2>/dev/null
    LD_LIBRARY_PATH=$kit/perf/lib "$perf" report -i "$data" --no-children --sort pid --stdio \
      -g none 2>/dev/null | grep -v '^$' | head -40
    LD_LIBRARY_PATH=$kit/perf/lib "$perf" report -i "$data" --no-children --sort dso,sym \
      --stdio -g none 2>/dev/null | grep -v '^$' | head -80
    LD_LIBRARY_PATH=$kit/perf/lib "$perf" report -i "$data" --children --sort sym --stdio \
      -g caller,0.5,callee --percent-limit 3 2>/dev/null | head -1500
  } >"$report"
  rm -f "$data"
  rm -rf "$host"
  echo "--- profile $transport: $(wc -l <"$report") lines in $report" | tee -a "$txt" >>"$log"
}

step core 90 --core --rounds 3
step readers_dev 120 --readers --transport=dev --rounds 3
step readers_uring 120 --readers --transport=uring --rounds 3
step transports 150 --transport=both --rounds 3
step lspci_dev 45 --lspci --transport=dev --rounds 9
step lspci_uring 45 --lspci --transport=uring --rounds 9
step scale 120 --scale --rounds 3  # both transports
secs=10
[ -n "$quick" ] && secs=2
profile dev $secs
profile uring $secs

uring_after=$(cat "$uring_param" 2>/dev/null || echo absent)
echo "enable_uring after: $uring_after (before: $uring_before)" >>"$log"
if [ "$uring_after" != "$uring_before" ]; then
  echo "enable_uring was left changed: putting back $uring_before" >>"$log"
  echo "$uring_before" >"$uring_param"
fi
left=$(grep -c ' fuse\.\(pcifs\|pcifs-bench\)' /proc/mounts || true)
echo "pcifs mounts left: $left" >>"$log"
