#!/bin/bash
# tools/soak.sh MINUTES [--asan] [--restarts=SECONDS] [--sample=SECONDS] [--keep]
#
# A long soak of the host daemon (issue 11, part 3): `pcifs -f --control`
# over a simulated device set (DOE endpoints, power-managed endpoints, four
# removable functions) runs under pcifs-supervise (systemd's part: the notify
# socket and the fd store) with views added at runtime, and for MINUTES:
#   - config readers as nobody walking every view (config, attributes, status)
#   - BAR users with a mapping (tools/soak/bar.c): one hammering, one that
#     also puts its device in D3hot and back and resets it while mapped
#   - DOE clients (echo exchanges through `doe`), one on the power-cycled device
#   - claimers of one group that are kill -9'd every few seconds and restarted
#   - a power_state D3hot/D0 + reset toggler on another device
#   - views added and removed through the control socket (pcifs view add/rm)
#   - simulated removal (the sim's `remove` file), one function at a time
#   - with --restarts=S (default 0: off), a daemon restart every S seconds
#     through the fd store (the daemons then run with --fd-store), alternating
#     SIGUSR1 (kill -9) and SIGUSR2 (SIGTERM: a hand-over) to the supervisor;
#     every fourth restart also kills the hot-plug daemon. At the end the
#     views are removed before the daemons get SIGTERM (with --fd-store a
#     SIGTERM hands the mounts over instead of unmounting them; it also ends
#     the daemon with _Exit, so LeakSanitizer does not look at that exit)
# Every --sample seconds (default 10; 3 for runs under 5 minutes) it prints the
# daemon's RSS, fd count and thread count. At the end it stops the clients,
# removes the runtime views it churned and checks, exiting 1 on a violation:
#   - RSS: the last third's median <= the first third's max + 10% + 8 MiB
#     (the first third is the warm-up; tools/soak/flatness.py says why the median)
#   - threads: the last third's max <= the first third's max + 12 (a churned view:
#     its pool of --max-threads=8 and its own threads)
#   - fds: back to the baseline taken before the clients started (+0)
#   - no client saw ENOTCONN or an errno outside its kind's list (table below),
#     no wrong answer (MISMATCH), no oracle violation in `status`
#   - every restart became ready within 60 s; the daemon exits 0 at the end
#     (under --asan: no ASan/UBSan report, no leak)
# Build: $PCIFS_BUILD (default build/dev; --asan: build/ci-asan), configured
# and built here (targets pcifs, pcifs-supervise) unless PCIFS_SOAK_NO_BUILD=1.
# Needs root, /dev/fuse, fusermount3, runuser, python3, cc.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
MINUTES=${1:?usage: tools/soak.sh MINUTES [--asan] [--restarts=SECONDS] [--sample=SECONDS] [--keep]}
shift
ASAN=0
RESTARTS=0
SAMPLE=
KEEP=0
for a in "$@"; do
  case $a in
    --asan) ASAN=1 ;;
    --restarts=*) RESTARTS=${a#--restarts=} ;;
    --sample=*) SAMPLE=${a#--sample=} ;;
    --keep) KEEP=1 ;;
    *) echo "soak: unknown option $a" >&2; exit 2 ;;
  esac
done
[[ $MINUTES =~ ^[0-9]+$ && $MINUTES -ge 1 ]] || { echo "soak: MINUTES: expected an integer >= 1" >&2; exit 2; }
[[ $RESTARTS =~ ^[0-9]+$ ]] || { echo "soak: --restarts: expected seconds" >&2; exit 2; }
[ -n "$SAMPLE" ] || { [ "$MINUTES" -lt 5 ] && SAMPLE=3 || SAMPLE=10; }
export LC_ALL=C

[ "$(id -u)" = 0 ] || { echo "SKIP: soak needs root (mounts, runuser)"; exit 77; }
if [ ! -c /dev/fuse ] || [ ! -w /dev/fuse ]; then
  echo "SKIP: no usable /dev/fuse"
  exit 77
fi
for t in fusermount3 runuser python3 cc; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
id -u nobody >/dev/null 2>&1 || { echo "SKIP: no user nobody"; exit 77; }

if [ "$ASAN" = 1 ]; then
  BUILD=${PCIFS_BUILD:-$SRC/build/ci-asan}
  CONFIG=(-DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang
    "-DPCIFS_SANITIZE=address,undefined")
else
  BUILD=${PCIFS_BUILD:-$SRC/build/dev}
  CONFIG=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
if [ "${PCIFS_SOAK_NO_BUILD:-0}" != 1 ]; then
  [ -f "$BUILD/build.ninja" ] || cmake -S "$SRC" -B "$BUILD" -G Ninja "${CONFIG[@]}" || exit 1
  ninja -C "$BUILD" pcifs pcifs-supervise || exit 1
fi
# The sanitizer is the build's, whichever way it was chosen (CTest runs this
# on the ASan and TSan builds without --asan). ASan's default quarantine keeps
# 256 MiB of freed memory before reusing any: RSS would climb for minutes and
# the thirds below would measure the quarantine filling, not the daemon.
SANITIZE=$(sed -n 's/^PCIFS_SANITIZE:STRING=//p' "$BUILD/CMakeCache.txt" 2>/dev/null)
case $SANITIZE in
  *address*)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:halt_on_error=1:detect_leaks=1}:quarantine_size_mb=16:malloc_context_size=8
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1} ;;
esac
PCIFS=$BUILD/pcifs
SUP=$BUILD/pcifs-supervise
for b in "$PCIFS" "$SUP"; do [ -x "$b" ] || { echo "soak: $b not built" >&2; exit 1; }; done

W=$(mktemp -d /tmp/pcifs-soak-XXXXXX)
chmod 755 "$W"
mkdir -p "$W/out" "$W/views" && chmod 1777 "$W/out"
STOP=$W/out/stop
SUP_PID=
SUP2_PID=
BG_PIDS=()
VIOLATIONS=0
violation() {
  echo "VIOLATION: $*"
  VIOLATIONS=$((VIOLATIONS + 1))
}
log() { echo "$(date -u +%H:%M:%S) soak: $*"; }

cleanup() {
  local rc=$?
  trap - EXIT
  cd /
  touch "$STOP" 2>/dev/null
  local p
  for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  # Clients that outlive this (a claimer's children) see STOP and end.
  for p in $SUP_PID $SUP2_PID; do
    kill -0 "$p" 2>/dev/null || continue
    kill -TERM "$p"
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  local m
  for m in "$W"/views/*; do
    grep -qF " $m " /proc/mounts && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m"; }
  done
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
    echo "soak: files kept in $W (daemon log: $W/daemon.log)"
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---- the device set and the daemon
cat >"$W/set.json" <<'JSON'
{"devices": [
 {"bdf": "0000:01:00.0", "vendor": "0x1b36", "device": "0x10f0", "class": "0x050210",
  "type": "endpoint", "config_size": 4096, "iommu_group": 1,
  "bars": [{"index": 0, "type": "mem64", "prefetchable": true, "size": 1048576}],
  "capabilities": {"pm": {"no_soft_reset": true}, "msi": {},
                   "pcie": {"port": "endpoint", "flr": true}, "aer": {},
                   "doe": [{"cdat": true, "echo": true}]}},
 {"bdf": "0000:02:00.0", "vendor": "0x1b36", "device": "0x10f2", "class": "0x120000",
  "type": "endpoint", "config_size": 4096, "iommu_group": 2,
  "bars": [{"index": 0, "type": "mem32", "size": 65536}],
  "capabilities": {"pm": {}, "pcie": {"port": "endpoint", "flr": true},
                   "doe": [{"echo": true}]}},
 {"bdf": "0000:03:00.0", "vendor": "0x1b36", "device": "0x10f1", "class": "0x058000",
  "type": "endpoint", "config_size": 4096, "iommu_group": 3,
  "bars": [{"index": 0, "type": "mem32", "size": 65536}],
  "capabilities": {"pm": {}, "pcie": {"port": "endpoint", "flr": true}}},
 {"bdf": "0000:04:00.0", "vendor": "0x1b36", "device": "0x10f1", "class": "0x058000",
  "type": "endpoint", "config_size": 4096, "iommu_group": 4,
  "bars": [{"index": 0, "type": "mem32", "size": 65536}],
  "capabilities": {"pm": {"no_soft_reset": false}, "pcie": {"port": "endpoint", "flr": true}}},
 {"bdf": "0000:05:00.0", "count": 4, "vendor": "0x1b36", "device": "0x10f1",
  "class": "0x058000", "type": "endpoint", "iommu_group": 5,
  "bars": [{"index": 0, "type": "mem32", "size": 4096}],
  "capabilities": {"pm": {}, "pcie": {"port": "endpoint", "flr": true}}}
]}
JSON
CTL=$W/control.sock
FD_STORE=()
[ "$RESTARTS" -gt 0 ] && FD_STORE=(--fd-store)
view() { "$PCIFS" view "$@" --control="$CTL"; }

log "build $BUILD; work dir $W; $MINUTES min, restarts every ${RESTARTS}s (0: off), samples every ${SAMPLE}s"
"$SUP" --status "$W/sup.status" --restart=on-failure -- "$PCIFS" -f --backend=sim:"$W/set.json" \
  --control="$CTL" --state-dir="$W/state" --cdi-dir="$W/cdi" --view-root="$W/views" \
  --lock-dir=none --doe-timeout=3000 --max-threads=8 "${FD_STORE[@]}" 2>"$W/daemon.log" &
SUP_PID=$!

# status_field N: field N of the supervisor's status line (1 gen, 2 pid, 3 fds).
status_field() { [ -f "$W/sup.status" ] && cut -d' ' -f"$1" "$W/sup.status"; }
# wait_ready GEN: generation GEN is ready (60 s gate).
wait_ready() {
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(status_field 1)" = "$1" ] && return 0
    kill -0 "$SUP_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
wait_ready 1 || { violation "the daemon was not ready within 60 s"; cat "$W/daemon.log"; exit 1; }

# The hot-plug daemon: a second host daemon over a sysfs-shaped tree, where
# tools/soak/hotplug.py makes a function arrive and leave (uevent datagrams).
python3 "$SRC/tools/soak/hotplug.py" tree "$W/tree" || { violation "the sysfs tree failed"; exit 1; }
HP_CTL=$W/hp.sock
"$SUP" --status "$W/sup2.status" --restart=on-failure -- "$PCIFS" -f \
  --backend=sysfs:"$W/tree/sys/bus/pci" --control="$HP_CTL" --state-dir="$W/hpstate" \
  --cdi-dir="$W/hpcdi" --view-root="$W/views" --lock-dir=none --max-threads=8 "${FD_STORE[@]}" \
  2>"$W/hp.log" &
SUP2_PID=$!
for ((i = 0; i < 600; i++)); do
  [ "$(cut -d' ' -f1 "$W/sup2.status" 2>/dev/null)" = 1 ] && break
  sleep 0.1
done
[ "$i" -lt 600 ] || { violation "the hot-plug daemon was not ready within 60 s"; cat "$W/hp.log"; exit 1; }
echo '{"name": "hp"}' >"$W/hp.json"
"$PCIFS" view add "$W/hp.json" --control="$HP_CTL" >/dev/null || { violation "view add hp failed"; exit 1; }

add_view() { # add_view NAME JSON
  echo "$2" >"$W/$1.json"
  view add "$W/$1.json" >/dev/null
}
add_view all '{"name": "all"}' || { violation "view add all failed"; exit 1; }
add_view work '{"name": "work", "devices": ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0",
  "0000:04:00.0"]}' || { violation "view add work failed"; exit 1; }
ALL=$W/views/all/devices
WORK=$W/views/work/devices
[ -d "$ALL/0000:05:00.3" ] || { violation "view all does not show 0000:05:00.3"; ls "$ALL"; exit 1; }

# ---- samples
# proc_figures PID: RSS (kB), fd count, thread count.
proc_figures() {
  local rss fds thr
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  thr=$(awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  fds=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "${rss:-0} $fds ${thr:-0}"
}
# sample: time, main daemon's generation, pid, RSS, fds, threads, then the
# hot-plug daemon's RSS, fds, threads.
sample() {
  local pid
  pid=$(status_field 2)
  echo "$(date +%s) $(status_field 1) $pid $(proc_figures "$pid")" \
    "$(proc_figures "$(cut -d' ' -f2 "$W/sup2.status")")"
}
read -r _ _ _ BASE_RSS BASE_FDS BASE_THR HP_BASE_RSS HP_BASE_FDS HP_BASE_THR <<<"$(sample)"
log "baseline before the clients: RSS ${BASE_RSS} kB, $BASE_FDS fds, $BASE_THR threads;" \
  "hot-plug daemon: RSS ${HP_BASE_RSS} kB, $HP_BASE_FDS fds, $HP_BASE_THR threads"

# ---- clients
cc -O2 -Wall -Wextra -o "$W/bar" "$SRC/tools/soak/bar.c" || { violation "cc bar.c failed"; exit 1; }
CLIENT=$SRC/tools/soak/client.py
spawn() { # spawn NAME CMD...: a client with its summary in out/NAME.json
  local name=$1
  shift
  "$@" >"$W/out/$name.log" 2>&1 &
  BG_PIDS+=($!)
  CLIENTS+=("$name:$!")
}
CLIENTS=()
for i in 1 2 3; do
  spawn "reader$i" runuser -u nobody -- python3 "$CLIENT" reader "$W/out/reader$i.json" "$STOP" "$W/views"
done
spawn doe1 python3 "$CLIENT" doe "$W/out/doe1.json" "$STOP" "$WORK/0000:01:00.0"
spawn doe2 python3 "$CLIENT" doe "$W/out/doe2.json" "$STOP" "$ALL/0000:02:00.0"
spawn doe3 python3 "$CLIENT" doe "$W/out/doe3.json" "$STOP" "$WORK/0000:02:00.0"
spawn bar_hammer "$W/bar" "$W/out/bar_hammer.json" "$STOP" "$ALL/0000:02:00.0" hammer
spawn bar_powered "$W/bar" "$W/out/bar_powered.json" "$STOP" "$WORK/0000:01:00.0" powered
spawn toggler python3 "$CLIENT" toggler "$W/out/toggler.json" "$STOP" "$WORK/0000:04:00.0"
spawn hotplug python3 "$SRC/tools/soak/hotplug.py" plugger "$W/out/hotplug.json" "$STOP" "$W/tree" \
  "$W/views/hp"

# Claimers: two at a time on group 3; every 3 s one is killed with SIGKILL and
# a new one starts (its summary file gets a new name: nothing is lost).
claimers() {
  local k=0 pids=() victim
  while [ ! -e "$STOP" ]; do
    while [ "${#pids[@]}" -lt 2 ]; do
      k=$((k + 1))
      python3 "$CLIENT" claimer "$W/out/claimer$k.json" "$STOP" "$WORK/0000:03:00.0" \
        >"$W/out/claimer$k.log" 2>&1 &
      pids+=($!)
    done
    sleep 3
    victim=$((RANDOM % 2))
    kill -KILL "${pids[$victim]}" 2>/dev/null
    wait "${pids[$victim]}" 2>/dev/null
    unset "pids[$victim]"
    pids=("${pids[@]}")
  done
  for victim in "${pids[@]}"; do wait "$victim"; done
  echo "$k" >"$W/out/claimers.count"
}
claimers &
BG_PIDS+=($!)

# View churn: add a view, read through it, remove it, again. `pcifs view`
# exits 3 when no daemon listens on the control socket (during a restart):
# that is retried for up to 60 s and counted apart.
RETRIES=0
view_retrying() {
  local i rc
  for ((i = 0; i < 300; i++)); do
    view "$@" >>"$W/out/churn.log" 2>&1
    rc=$?
    [ "$rc" = 3 ] || return "$rc"
    RETRIES=$((RETRIES + 1))
    sleep 0.2
  done
  return 3
}
churn() {
  local k=0 add_fail=0 rm_fail=0 read_fail=0
  while [ ! -e "$STOP" ]; do
    k=$((k + 1))
    echo "{\"name\": \"churn$k\", \"devices\": [\"0000:03:00.0\", \"0000:04:00.0\", \"class:0580\"]}" \
      >"$W/churn.json"
    if view_retrying add "$W/churn.json"; then
      cat "$W/views/churn$k/devices/0000:04:00.0/config" >/dev/null 2>>"$W/out/churn.log" ||
        read_fail=$((read_fail + 1))
      view_retrying rm "churn$k" || rm_fail=$((rm_fail + 1))
    else
      add_fail=$((add_fail + 1))
    fi
    echo "{\"kind\": \"churn\", \"ops\": $k, \"errors\": {\"ADD_FAILED view-add\": $add_fail," \
      "\"RM_FAILED view-rm\": $rm_fail, \"READ_FAILED read-config\": $read_fail," \
      "\"NO_DAEMON control-socket\": $RETRIES}}" \
      >"$W/out/churn.json.tmp" && mv "$W/out/churn.json.tmp" "$W/out/churn.json"
    sleep 1
  done
}
churn &
BG_PIDS+=($!)

END=$(($(date +%s) + MINUTES * 60))
# Removal: one of 0000:05:00.0-3 at each quarter of the run.
removals() {
  local f
  for f in 0 1 2 3; do
    sleep $((MINUTES * 60 / 5))
    [ -e "$STOP" ] && break
    if echo 1 >"$ALL/0000:05:00.$f/remove" 2>>"$W/out/remove.log"; then
      echo "0000:05:00.$f" >>"$W/out/removed"
    else
      echo "remove 0000:05:00.$f failed" >>"$W/out/remove.log"
    fi
  done
}
removals &
BG_PIDS+=($!)

# ---- the main loop: samples and restarts
printf '%-8s %4s %8s %10s %6s %8s | %10s %6s %8s\n' time gen pid rss_kB fds threads \
  hp_rss_kB hp_fds hp_thr | tee "$W/samples.txt"
NEXT_RESTART=$(($(date +%s) + RESTARTS))
RESTART_N=0
while [ "$(date +%s)" -lt "$END" ]; do
  sleep "$SAMPLE"
  kill -0 "$SUP_PID" 2>/dev/null || { violation "the supervisor (and daemon) ended"; break; }
  if [ "$RESTARTS" -gt 0 ] && [ "$(date +%s)" -ge "$NEXT_RESTART" ]; then
    gen=$(status_field 1)
    RESTART_N=$((RESTART_N + 1))
    if ((RESTART_N % 2)); then sig=USR1; else sig=USR2; fi
    log "restart $RESTART_N (SIG$sig) of generation $gen"
    kill -"$sig" "$SUP_PID"
    wait_ready $((gen + 1)) || violation "generation $((gen + 1)) was not ready within 60 s"
    if ((RESTART_N % 4 == 0)); then
      gen=$(cut -d' ' -f1 "$W/sup2.status")
      log "restart of the hot-plug daemon (SIGUSR1) of generation $gen"
      kill -USR1 "$SUP2_PID"
      for ((i = 0; i < 600; i++)); do
        [ "$(cut -d' ' -f1 "$W/sup2.status")" = $((gen + 1)) ] && break
        sleep 0.1
      done
      [ "$i" -lt 600 ] || violation "hot-plug daemon generation $((gen + 1)) not ready within 60 s"
    fi
    NEXT_RESTART=$(($(date +%s) + RESTARTS))
  fi
  read -r t g p r f th hr hf hth <<<"$(sample)"
  printf '%-8s %4s %8s %10s %6s %8s | %10s %6s %8s\n' "$(date -u -d "@$t" +%H:%M:%S)" \
    "$g" "$p" "$r" "$f" "$th" "$hr" "$hf" "$hth" | tee -a "$W/samples.txt"
  echo "$t $g $p $r $f $th $hr $hf $hth" >>"$W/samples.raw"
done

# ---- stop the clients (30 s gate), then the churned views
# A client runs until STOP: one that ended before has stopped testing (its
# log says why), and what it would have exercised went unchecked.
for c in "${CLIENTS[@]}"; do
  kill -0 "${c#*:}" 2>/dev/null ||
    violation "client ${c%%:*} ended before the stop: $(tail -1 "$W/out/${c%%:*}.log")"
done
log "stopping the clients"
touch "$STOP"
for p in "${BG_PIDS[@]}"; do
  for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { violation "client pid $p did not stop within 30 s"; kill -KILL "$p"; }
  wait "$p" 2>/dev/null
done
BG_PIDS=()
for v in $(view ls --json | python3 -c 'import json,sys; print(" ".join(x["name"] for x in json.load(sys.stdin)))'); do
  case $v in churn*) view rm "$v" >/dev/null || violation "view rm $v failed" ;; esac
done

# Oracle violations of the simulated devices.
python3 - "$W/views/all/status" <<'PY' || violation "oracle violations in status (above)"
import json, sys
total = 0
def walk(x, path):
    global total
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "violations":
                n = v if isinstance(v, int) else sum(i for i in (v.values() if isinstance(v, dict) else v) if isinstance(i, int))
                if n:
                    print("oracle:", path, v)
                total += n
            else:
                walk(v, path + "/" + k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            walk(v, path + "/" + str(i))
walk(json.load(open(sys.argv[1])), "")
sys.exit(1 if total else 0)
PY

# fds: back to the baseline once what the clients left is closed (10 s gate).
for ((i = 0; i < 100; i++)); do
  read -r _ _ _ FINAL_RSS FINAL_FDS FINAL_THR HP_FINAL_RSS HP_FINAL_FDS HP_FINAL_THR <<<"$(sample)"
  [ "$FINAL_FDS" -le "$BASE_FDS" ] && [ "$HP_FINAL_FDS" -le "$HP_BASE_FDS" ] && break
  sleep 0.1
done
log "final, clients stopped: RSS ${FINAL_RSS} kB, $FINAL_FDS fds, $FINAL_THR threads;" \
  "hot-plug daemon: RSS ${HP_FINAL_RSS} kB, $HP_FINAL_FDS fds, $HP_FINAL_THR threads"
[ "$FINAL_FDS" -le "$BASE_FDS" ] || violation "fds: $FINAL_FDS at the end, $BASE_FDS before the clients"
[ "$HP_FINAL_FDS" -le "$HP_BASE_FDS" ] ||
  violation "hot-plug daemon fds: $HP_FINAL_FDS at the end, $HP_BASE_FDS before the clients"

# ---- flatness: thirds of the samples
python3 "$SRC/tools/soak/flatness.py" "$W/samples.raw" || violation "RSS or threads grew (above)"

# ---- client errors, by kind and errno
python3 - "$W/out" "$RESTARTS" <<'PY' || violation "client errors outside the expected (above)"
import glob, json, os, re, sys
# What each kind may see, and why (README): anything else is a violation.
allowed = {
    "reader": {"ENOENT", "ENODEV"},     # a view or device removed during the walk
    "doe": {"EIO"},                     # the device is in D3hot (bar_powered)
    "claimer": {"EBUSY"},               # the other claimer holds the group
    "toggler": set(),
    "bar": {"SIGBUS touch-in-D3hot", "EIO pread-in-D3hot"},
    "churn": set(),
    "hotplug": set(),
}
# A daemon restart brings a simulated device back as after a function reset
# (README): a write just before it is lost, a D3hot just before it is D0.
# The control socket is down while a daemon restarts (churn retries).
if int(sys.argv[2]) > 0:
    allowed["bar"] |= {"RESETLOSS", "NOFAULT touch-in-D3hot", "NOERROR pread-in-D3hot"}
    allowed["churn"] |= {"NO_DAEMON"}
totals = {}
ops = {}
bad = False
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    try:
        s = json.load(open(f))
    except ValueError:
        continue
    kind = s["kind"]
    ops[kind] = ops.get(kind, 0) + s["ops"]
    for key, n in s["errors"].items():
        if n == 0:
            continue
        totals[(kind, key)] = totals.get((kind, key), 0) + n
print("%-10s %12s" % ("kind", "operations"))
for kind, n in sorted(ops.items()):
    print("%-10s %12d" % (kind, n))
print("%-10s %-34s %8s" % ("kind", "error", "count"))
for (kind, key), n in sorted(totals.items()):
    name = key.split()[0]
    ok = (name in allowed.get(kind, set()) or key in allowed.get(kind, set())) and name != "ENOTCONN"
    bad |= not ok
    print("%-10s %-34s %8d %s" % (kind, key, n, "" if ok else "UNEXPECTED"))
if not totals:
    print("(no errors)")
for kind in ("reader", "doe", "claimer", "toggler", "bar", "churn", "hotplug"):
    if ops.get(kind, 0) == 0:
        print("no operation succeeded for", kind); bad = True
sys.exit(1 if bad else 0)
PY
echo "claimers started: $(cat "$W/out/claimers.count" 2>/dev/null); restarts: $RESTART_N;" \
  "removals: $(wc -l 2>/dev/null <"$W/out/removed" || echo 0) of 4"
[ -s "$W/out/remove.log" ] && { violation "removal failed:"; cat "$W/out/remove.log"; }

# ---- the daemons end cleanly (under ASan: no report, no leak)
"$PCIFS" view rm hp --control="$HP_CTL" >/dev/null || violation "view rm hp failed"
for v in all work; do view rm "$v" >/dev/null || violation "view rm $v failed"; done
for p in $SUP_PID $SUP2_PID; do
  kill -TERM "$p"
  wait "$p"
  rc=$?
  [ "$rc" = 0 ] || violation "supervisor $p (its daemon) exited with status $rc"
done
SUP_PID=
SUP2_PID=
for l in "$W/daemon.log" "$W/hp.log"; do
  if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$l"; then
    violation "sanitizer report in $l"
  fi
done
if [ "$VIOLATIONS" -gt 0 ]; then
  echo "soak: FAILED with $VIOLATIONS violation(s)"
  KEEP=1
  exit 1
fi
echo "soak: PASSED ($MINUTES min)"
