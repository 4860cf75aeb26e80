#!/bin/bash
# Shared helpers for the tool tests that run against a real pcifs mount
# (STYLE.md tests tier 3). Source it, call mount_require, then mount_start: it
# runs the daemon in the foreground on a fresh temp dir and sets MNT, DEV
# (MNT/devices/0000:01:00.0), TMP and DAEMON_PID. An EXIT trap always unmounts
# (fusermount3 -u, then -z), stops the daemon, and turns the test into a
# failure if the daemon died on its own or exited non-zero, printing its log:
# a crash must never hide behind tool output that happened to look fine.
# Needs: PCIFS_BUILD_DIR, PCIFS_SOURCE_DIR. Skips (exit 77) without root,
# /dev/fuse, fusermount3 or a tool the test names.

# Variables set here are read by the tests that source this file.
# shellcheck disable=SC2034
BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SRC=${PCIFS_SOURCE_DIR:?PCIFS_SOURCE_DIR not set}
PCIFS=$BUILD/pcifs
FAILED=0
DAEMON_PID=
HELPER_PIDS=() # processes a test started that may hold files open on the mount
MNT=
TMP=
export LC_ALL=C

fail() {
  echo "FAIL: $*"
  FAILED=1
}

# mount_require TOOL...: skip unless we can mount and every TOOL exists.
mount_require() {
  [ "$(id -u)" = 0 ] || { echo "SKIP: needs root (mounts, runuser)"; exit 77; }
  if [ ! -c /dev/fuse ] || [ ! -w /dev/fuse ]; then
    echo "SKIP: no usable /dev/fuse"
    exit 77
  fi
  local t
  for t in fusermount3 runuser "$@"; do
    command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
  done
  id -u nobody >/dev/null 2>&1 || { echo "SKIP: no user nobody"; exit 77; }
  [ -x "$PCIFS" ] || { echo "FAIL: $PCIFS not built"; exit 1; }
}

# A daemon that exited stays a zombie until we wait for it, and kill -0
# succeeds on a zombie: look at its state instead.
daemon_alive() {
  [ -n "$DAEMON_PID" ] || return 1
  local stat
  stat=$(cat "/proc/$DAEMON_PID/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

is_mounted() {
  case $(stat -f -c %T "$MNT" 2>/dev/null) in fuse | fuseblk) return 0 ;; esac
  return 1
}

print_log() {
  echo "---- daemon log ($TMP/daemon.log) ----"
  cat "$TMP/daemon.log" 2>/dev/null
  echo "---- end of daemon log ----"
}

# Runs at exit, whatever happened: unmount, reap the daemon, judge it.
mount_cleanup() {
  local rc=$? status=
  trap - EXIT
  # A shell whose working directory is inside the mount keeps it busy, and so
  # does a helper holding a file open.
  cd /
  local p
  for p in "${HELPER_PIDS[@]}"; do
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  if [ -n "$DAEMON_PID" ]; then
    daemon_alive || { echo "FAIL: the daemon died during the test"; rc=1; }
    if [ -n "$MNT" ] && grep -qF " $MNT " /proc/mounts; then
      fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null \
        || { echo "FAIL: could not unmount $MNT"; rc=1; }
    fi
    # fusermount3 -u ends the daemon (S2); give it a generous bound, then kill.
    local i
    for ((i = 0; i < 200; i++)); do daemon_alive || break; sleep 0.05; done
    if daemon_alive; then
      echo "FAIL: the daemon did not exit after unmount; killing it"
      kill -KILL "$DAEMON_PID" 2>/dev/null
      rc=1
    fi
    wait "$DAEMON_PID"
    status=$?
    if [ "$status" != 0 ]; then
      echo "FAIL: the daemon exited with status $status"
      rc=1
    fi
    [ "$rc" = 0 ] || [ "$rc" = 77 ] || print_log
  fi
  [ -n "$MNT" ] && rmdir "$MNT" 2>/dev/null
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}

# mount_start [DAEMON ARGS...]: mounts the default simulated set (or what the
# arguments say) and waits until the mount is live.
# shellcheck disable=SC2120 # arguments are optional
mount_start() {
  TMP=$(mktemp -d)
  MNT=$(mktemp -d)
  chmod 755 "$TMP" "$MNT"
  trap mount_cleanup EXIT
  trap 'exit 143' TERM INT HUP
  "$PCIFS" -f "$@" "$MNT" >"$TMP/daemon.log" 2>&1 &
  DAEMON_PID=$!
  local i
  for ((i = 0; i < 400; i++)); do
    is_mounted && break
    daemon_alive || break
    sleep 0.05
  done
  if ! is_mounted; then
    echo "FAIL: pcifs did not mount $MNT"
    exit 1
  fi
  # DOE Discovery runs in the background after the mount (the faulty mailbox
  # of 02:00.0 until its 1 s timeout) and shows in that mailbox's registers:
  # a listing of each device directory waits for it, so tests that compare
  # what lspci prints start from settled mailboxes.
  ls "$MNT"/devices/*/ >/dev/null 2>&1 || true
  # shellcheck disable=SC2034
  DEV=$MNT/devices/0000:01:00.0
}

# as_nobody CMD...: runs CMD as the unprivileged user nobody.
as_nobody() { runuser -u nobody -- "$@"; }

# mount_finish: the last line of every test.
mount_finish() {
  daemon_alive || fail "the daemon is not running at the end of the test"
  if [ "$FAILED" = 0 ]; then
    echo "PASS"
    exit 0
  fi
  exit 1
}
