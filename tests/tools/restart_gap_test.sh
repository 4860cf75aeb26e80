#!/bin/bash
# Tool test of tools/bench/restart_gap.py (README "Restarts: the fd store"):
# two in-place upgrades under a reader of an open config handle; every read
# returns its 4 bytes across both, each upgrade prints its worst gap, and no
# mount, temp dir or process is left behind. The gap is a figure, not
# asserted. Negative control, by hand: a pcifs without --fd-store (each
# generation mounts afresh) makes the reads fail and the tool exit 1.
# Needs: root, /dev/fuse, python3, PCIFS_BUILD_DIR with pcifs and pcifs-supervise.
# Exit 77: skipped.
set -u
BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SRC=${PCIFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }

# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/bench_lib.sh"

python3 "$SRC/tools/bench/restart_gap.py" --upgrades 2 --pcifs "$BUILD/pcifs" \
  >"$WORK/out" 2>"$WORK/err"
rc=$?
cat "$WORK/out"
[ "$rc" = 0 ] || fail "restart_gap.py exited $rc: $(tail -5 "$WORK/err")"
for n in 1 2; do
  grep -Eq "^upgrade $n: worst gap [0-9.]+ ms, [0-9]+ reads, 0 failed$" "$WORK/out" ||
    fail "upgrade $n: no line, or reads failed"
done
grep -q " $WORK" /proc/mounts && fail "a mount is left: $(grep " $WORK" /proc/mounts)"
[ -z "$(ls -A "$TMPDIR")" ] || fail "temp dirs left: $(ls -A "$TMPDIR")"
left=$(pgrep -f "pcifs-restart-gap\." || true)
[ -z "$left" ] || fail "processes left: $left"
[ "$FAILED" = 0 ] && echo "PASS"
exit "$FAILED"
