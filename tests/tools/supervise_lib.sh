#!/bin/bash
# Shared helpers for the tool tests that run the host daemon under
# pcifs-supervise (the fd store) and restart it: source it first. It checks
# root, /dev/fuse and the two binaries (skips with 77, or fails), makes the
# work directory W and defines fail, until_true and unmount_under.
# Needs: PCIFS_BUILD_DIR, PCIFS_SOURCE_DIR.

# Variables set here are read by the tests that source this file.
# shellcheck disable=SC2034
BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SRC=${PCIFS_SOURCE_DIR:?PCIFS_SOURCE_DIR not set}
PCIFS=$BUILD/pcifs
SUP=$BUILD/pcifs-supervise
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
if [ ! -c /dev/fuse ] || [ ! -w /dev/fuse ]; then echo "SKIP: no usable /dev/fuse"; exit 77; fi
if [ ! -x "$PCIFS" ] || [ ! -x "$SUP" ]; then echo "FAIL: pcifs or pcifs-supervise not built"; exit 1; fi

W=$(mktemp -d /tmp/pcifs-supervised-XXXXXX)
chmod 755 "$W"
FAILED=0
fail() {
  echo "FAIL: $*"
  FAILED=1
}
# until_true SECONDS CMD...: a gate on a condition, polled every 0.1 s.
until_true() {
  local i n=$(($1 * 10))
  shift
  for ((i = 0; i < n; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}
# unmount_under DIR: lazily unmounts everything mounted below DIR.
unmount_under() {
  awk -v w="$1/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
}
