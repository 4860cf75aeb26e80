#!/bin/bash
# A view removed at runtime while a container still holds its mount (here a
# bind mount, as a container's /sys/bus/pci is) answers ENODEV until the
# kernel lets go. Across daemon restarts through the fd store it must go on
# answering ENODEV (README "Restarts"), never ENOTCONN: its connection stays
# in the store under a retired name, the successor serves it dead, and once
# the bind is unmounted it leaves the store. Both restart kinds (kill -9 and
# SIGTERM with a successor). Negative control: the same without the store
# (pcifs-supervise --no-fd-store) ends the connection at the first kill.
# Needs root, /dev/fuse, $PCIFS_BUILD_DIR/pcifs and pcifs-supervise.
set -u
# shellcheck source=tests/tools/supervise_lib.sh
source "$(dirname "$0")/supervise_lib.sh"
SUP_PID=
stop_daemon() {
  [ -n "$SUP_PID" ] || return 0
  kill -TERM "$SUP_PID" 2>/dev/null
  wait "$SUP_PID" 2>/dev/null
  SUP_PID=
}
cleanup() {
  local rc=$?
  umount -l "$W/bind" 2>/dev/null
  stop_daemon
  unmount_under "$W"
  if [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
    echo "---- daemon log ----"
    cat "$W"/*.log 2>/dev/null | tail -60
  fi
  rm -rf "$W"
  [ "$FAILED" = 0 ] || exit 1
  exit "$rc"
}
trap cleanup EXIT

# field N: the supervisor's status "<generation> <pid> <stored fds>".
field() { cut -d' ' -f"$1" "$W/sup.status" 2>/dev/null; }
field_is() { [ "$(field "$1")" = "$2" ]; }
wait_gen() { until_true 60 field_is 1 "$1"; }    # generation $1 is ready
wait_stored() { until_true 20 field_is 3 "$1"; } # the store holds $1 fds
# What listing the bind's devices directory fails with ("ok" if it works):
# opendir always reaches the daemon (a stat may be answered from the cache).
probe() {
  python3 -c '
import errno, os, sys
try:
    os.listdir(sys.argv[1]); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))' "$W/bind/devices"
}

# start [supervisor options]: the host daemon, view "a" added, bound at $W/bind.
start() {
  rm -f "$W/sup.status"
  "$SUP" --status "$W/sup.status" "$@" -- "$PCIFS" -f --backend=sim --control="$W/c.sock" \
    --state-dir="$W/state" --cdi-dir="$W/cdi" --view-root="$W/views" --lock-dir=none \
    --fd-store 2>>"$W/daemon.log" &
  SUP_PID=$!
  wait_gen 1 || { fail "the daemon was not ready within 60 s"; exit 1; }
  echo '{"name": "a"}' >"$W/a.json"
  "$PCIFS" view add "$W/a.json" --control="$W/c.sock" >/dev/null || { fail "view add"; exit 1; }
  mkdir -p "$W/bind"
  mount --bind "$W/views/a" "$W/bind" || { fail "bind mount"; exit 1; }
  [ "$(probe)" = ok ] || fail "the bound view does not answer"
  "$PCIFS" view rm a --control="$W/c.sock" >/dev/null || fail "view rm"
  [ "$(probe)" = ENODEV ] || fail "a removed view answers $(probe), not ENODEV"
}

echo "== with the fd store"
start
stored=$(field 3)
[ "$stored" = 2 ] || fail "the store holds $stored fds after the removal, not 2 (state, the retired view)"
kill -USR1 "$SUP_PID"  # kill -9, start anew
wait_gen 2 || fail "generation 2 not ready"
[ "$(probe)" = ENODEV ] || fail "after kill -9 the retired view answers $(probe), not ENODEV"
kill -USR2 "$SUP_PID"  # SIGTERM, start anew
wait_gen 3 || fail "generation 3 not ready"
[ "$(probe)" = ENODEV ] || fail "after SIGTERM the retired view answers $(probe), not ENODEV"
grep -q "retired view ~a~" "$W/daemon.log" || fail "no successor took the retired view over"
umount "$W/bind" || fail "umount of the bind"
wait_stored 1 || fail "the store still holds $(field 3) fds after the bind was unmounted, not 1"
kill -USR1 "$SUP_PID"
wait_gen 4 || fail "generation 4 not ready"
grep -q "restart: view .* no longer configured" "$W/daemon.log" &&
  fail "a stored connection was left over for a view that no longer exists"
stop_daemon

echo "== negative control: without the store"
: >"$W/daemon.log"
start --no-fd-store
kill -USR1 "$SUP_PID"
wait_gen 2 || fail "generation 2 not ready (no store)"
got=$(probe)
[ "$got" = ENOTCONN ] || [ "$got" = ECONNABORTED ] ||
  fail "without the store the retired view answers $got after kill -9, not ENOTCONN"
umount -l "$W/bind"
stop_daemon

[ "$FAILED" = 0 ] && echo "PASS"
