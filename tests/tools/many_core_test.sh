#!/bin/bash
# The prepared many-core run (issue 13 §4), tried small: `many_core.sh KIT OUT
# quick` on a kit made of this build exits 0, runs every step with status 0
# into OUT/figures.txt, logs enable_uring before and after (the same) and no
# mount left, and leaves no mount or temp dir behind; --core prints its lock
# waits. Where perf is installed the two profiles name the daemon's threads
# and hold its lock table (`pcifs view locks`); where it is not, they are
# reported skipped. A device session is short: this is what makes sure the
# script it runs works.
# Needs: root, /dev/fuse, python3, PCIFS_BUILD_DIR with pcifs and pcifs-bench.
# Exit 77: skipped.
set -u

BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SRC=${PCIFS_SOURCE_DIR:?PCIFS_SOURCE_DIR not set}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
for b in pcifs pcifs-bench; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b not built"; exit 1; }
done

# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/bench_lib.sh"
# --lspci runs lspci as nobody over its mount too: the path must be open to it.
chmod 755 "$WORK" "$TMPDIR"

# A kit as device-kit.sh lays it out (bin/, lib/), of this build; perf as
# kit_extras.sh adds it, where this machine has it.
kit=$WORK/kit out=$WORK/out
mkdir -p "$kit/bin" "$kit/lib"
ln -s "$BUILD/pcifs" "$BUILD/pcifs-bench" "$kit/bin/"
have_perf=0
if perf=$(command -v perf) && perf --version >/dev/null 2>&1; then
  mkdir -p "$kit/perf/lib" && ln -s "$perf" "$kit/perf/perf" && have_perf=1
fi
param=/sys/module/fuse/parameters/enable_uring
before=$(cat "$param" 2>/dev/null || echo absent)

timeout -k 10 300 bash "$SRC/tools/bench/many_core.sh" "$kit" "$out" quick >"$WORK/stdout" 2>&1
rc=$?
[ "$rc" = 0 ] || fail "many_core.sh exited $rc: $(tail -5 "$WORK/stdout")"
txt=$out/figures.txt log=$out/log.txt
for s in core readers_dev readers_uring transports lspci_dev lspci_uring scale; do
  grep -q "^--- $s: rc 0," "$txt" || fail "step $s: $(grep "^--- $s:" "$txt" || echo missing)"
done
grep -q "config read 4 B, QD1" "$txt" || fail "the transport table is missing"
grep -q "ratio mount / sysfs" "$txt" || fail "the lspci comparison is missing"
grep -q "^Lock waits" "$txt" || fail "--core printed no lock waits"
grep -q "^enable_uring after: $before (before: $before)$" "$log" ||
  fail "enable_uring: $(grep enable_uring "$log")"
grep -q "^pcifs mounts left: 0$" "$log" || fail "$(grep 'mounts left' "$log" || echo 'no mount count')"
[ "$(cat "$param" 2>/dev/null || echo absent)" = "$before" ] || fail "enable_uring left changed"
for t in dev uring; do
  if [ "$have_perf" = 1 ]; then
    p=$out/profile-$t.txt
    grep -q "pcifs" "$p" 2>/dev/null || fail "profile $t names no pcifs thread: $(head -c 300 "$p" 2>&1)"
    grep -q "^LOCK  *CONTENDED  *WAITED_MS" "$p" || fail "profile $t has no lock table: $(head -c 300 "$p")"
    grep -q "^--- profile $t: [0-9]* lines" "$txt" || fail "profile $t not reported"
  else
    grep -q "^--- profile $t: skipped" "$txt" || fail "profile $t: neither run nor skipped"
  fi
done
[ -z "$(ls "$out"/*.data 2>/dev/null)" ] || fail "perf data left in OUT"
grep -q " $WORK" /proc/mounts && fail "a mount is left: $(grep " $WORK" /proc/mounts)"
[ -z "$(ls -A "$TMPDIR")" ] || fail "temp dirs left: $(ls -A "$TMPDIR")"

[ "$FAILED" = 0 ] && echo "PASS: many_core.sh quick (profiles: $([ $have_perf = 1 ] && echo run || echo skipped))"
exit "$FAILED"
