#!/bin/bash
# A device that leaves while no daemon runs (a sysfs-shaped tree: the
# function is gone when the successor scans it): a handle a process held on it
# answers ENODEV (taken over dead, not EBADF), and the device's directory
# entry, which the kernel caches for 60 s, is gone at once (the successor
# invalidates it, as the old daemon would have at the removal). Negative
# control: a device that is still there stays visible and readable.
# Needs root, /dev/fuse, python3, $PCIFS_BUILD_DIR/pcifs and pcifs-supervise.
set -u
# shellcheck source=tests/tools/supervise_lib.sh
source "$(dirname "$0")/supervise_lib.sh"
SUP_PID=
HOLD_PID=
cleanup() {
  local rc=$?
  touch "$W/go"
  [ -n "$HOLD_PID" ] && wait "$HOLD_PID" 2>/dev/null
  if [ -n "$SUP_PID" ]; then
    "$PCIFS" view rm hp --control="$W/c.sock" >/dev/null 2>&1
    kill -TERM "$SUP_PID" 2>/dev/null
    wait "$SUP_PID" 2>/dev/null
  fi
  unmount_under "$W"
  if [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
    echo "---- daemon log ----"
    tail -40 "$W/daemon.log"
  fi
  rm -rf "$W"
  [ "$FAILED" = 0 ] || exit 1
  exit "$rc"
}
trap cleanup EXIT

gen_is() { [ "$(cut -d' ' -f1 "$W/sup.status" 2>/dev/null)" = "$1" ]; }
plug() { (cd "$SRC/tools/soak" && python3 -c "import hotplug as h; $1"); }

python3 "$SRC/tools/soak/hotplug.py" tree "$W/tree" || { fail "tree"; exit 1; }
"$SUP" --status "$W/sup.status" -- "$PCIFS" -f --backend=sysfs:"$W/tree/sys/bus/pci" \
  --control="$W/c.sock" --state-dir="$W/state" --cdi-dir="$W/cdi" --view-root="$W/views" \
  --lock-dir=none --fd-store 2>"$W/daemon.log" &
SUP_PID=$!
until_true 60 gen_is 1 || { fail "the daemon was not ready"; exit 1; }
echo '{"name": "hp"}' >"$W/hp.json"
"$PCIFS" view add "$W/hp.json" --control="$W/c.sock" >/dev/null || { fail "view add"; exit 1; }
DEV=$W/views/hp/devices/0000:01:00.0
KEEP=$W/views/hp/devices/0000:00:00.0
plug "h.add_function('$W/tree', '0000:01:00.0', 1, 1); h.announce('$W/tree', 'add', '0000:01:00.0')"
until_true 20 test -e "$DEV" || { fail "the plugged device did not arrive"; exit 1; }

# A process holds the device's BAR; the kernel caches its entry (stat).
python3 - "$DEV/resource0" "$W/held" "$W/go" "$W/holder.out" <<'PY' &
import errno, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
os.pread(fd, 4, 0)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
try:
    os.pread(fd, 4, 0)
    r = "ok"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
open(sys.argv[4], "w").write(r)
PY
HOLD_PID=$!
until_true 20 test -e "$W/held" || { fail "the holder did not open the BAR"; exit 1; }
stat "$DEV/vendor" "$KEEP/vendor" >/dev/null || fail "stat before the restart"

# The function leaves while no daemon runs: out of the tree, with no uevent
# (the killed daemon could not have seen it), then the successor starts.
plug "h.remove_function('$W/tree', '0000:01:00.0')"
kill -USR1 "$SUP_PID"
until_true 60 gen_is 2 || fail "generation 2 was not ready"
[ -e "$DEV" ] && fail "the departed device is still listed after the restart (a stale entry)"
[ -e "$KEEP" ] || fail "control: the device still in the tree is not listed"
[ "$(cat "$KEEP/vendor" 2>/dev/null)" = 0x1b36 ] || fail "control: its vendor does not read"
touch "$W/go"
wait "$HOLD_PID"
HOLD_PID=
[ "$(cat "$W/holder.out" 2>/dev/null)" = ENODEV ] ||
  fail "the held BAR answers $(cat "$W/holder.out" 2>/dev/null), not ENODEV"
grep -q "taken over dead" "$W/daemon.log" || fail "the log does not say the handle was taken over dead"

[ "$FAILED" = 0 ] && echo "PASS"
