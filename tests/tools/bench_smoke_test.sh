#!/bin/bash
# Smoke test of pcifs-bench (issue 3 section 4): `pcifs-bench --quick --json`
# runs, prints every figure with positive values for both mounts, and leaves
# no mount and none of its own processes behind; the same after a SIGINT in
# the middle of a run; refused without root (exit 2). Behaviour only: no
# figure is compared with any number but zero.
# Needs: root, /dev/fuse, python3, PCIFS_BUILD_DIR with pcifs and pcifs-bench.
# Exit 77: skipped.
set -u

BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
BENCH=$BUILD/pcifs-bench
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
[ -x "$BENCH" ] || { echo "FAIL: $BENCH not built"; exit 1; }
[ -x "$BUILD/pcifs" ] || { echo "FAIL: $BUILD/pcifs not built"; exit 1; }

# The bench makes its temp dirs under $TMPDIR: a private one tells its mounts
# apart from anyone else's.
WORK=$(mktemp -d)
export TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR"
cleanup() {  # a safety net: the test fails before it gets here if it was needed
  grep -o " $WORK[^ ]*" /proc/mounts | while read -r m; do
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }

FIGURES="config_read_qd1 config_read_qd32 bar_pread4 bar_pwrite4 bulk_read_1m mmap_fault
doe_1_client doe_8_clients quiesce_64_maps readers_1 readers_2 readers_4"

# check_json FILE: every figure present once, pcifs/floor/ratio finite and > 0.
check_json() {
  python3 - "$1" $FIGURES <<'PY'
import json, math, sys
data = json.load(open(sys.argv[1]))
want = sys.argv[2:]
figs = {f["name"]: f for f in data["figures"]}
bad = [n for n in want if n not in figs]
for n in want:
    f = figs.get(n)
    if f is None:
        continue
    for k in ("pcifs", "floor", "ratio"):
        v = f.get(k)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            bad.append(f"{n}.{k}={v}")
if bad:
    print("bad or missing:", ", ".join(bad))
    sys.exit(1)
PY
}

# run_watched OUT ERR ARGS...: runs the bench in the background, records the
# pids of its children (the pcifs daemon and the floor) while it runs; sets
# RC and CHILDREN. SIGINT_AFTER_MOUNT=1 interrupts it once both mounts are up.
run_watched() {
  local out=$1 err=$2
  shift 2
  "$BENCH" "$@" >"$out" 2>"$err" &
  local pid=$! interrupted=0
  CHILDREN=""
  while kill -0 "$pid" 2>/dev/null; do
    for c in $(pgrep -P "$pid"); do
      case " $CHILDREN " in *" $c "*) ;; *) CHILDREN="$CHILDREN $c" ;; esac
    done
    if [ "${SIGINT_AFTER_MOUNT:-0}" = 1 ] && [ $interrupted = 0 ] &&
       [ "$(grep -c " $TMPDIR/pcifs-bench\.[^ ]*/mnt " /proc/mounts)" = 2 ]; then
      sleep 0.5  # into the rounds
      kill -INT "$pid"
      interrupted=1
    fi
    sleep 0.05
  done
  wait "$pid"
  RC=$?
}

# no_leftovers WHAT: no mount under our TMPDIR, no temp dir left, no child alive.
no_leftovers() {
  local what=$1
  grep -q " $WORK" /proc/mounts && fail "$what: a mount is left: $(grep " $WORK" /proc/mounts)"
  [ -z "$(ls -A "$TMPDIR")" ] || fail "$what: temp dirs left: $(ls -A "$TMPDIR")"
  # Control: the watcher must have seen both children, or this check is empty.
  [ "$(echo $CHILDREN | wc -w)" -ge 2 ] || fail "$what: saw fewer than 2 children: '$CHILDREN'"
  for c in $CHILDREN; do
    kill -0 "$c" 2>/dev/null && fail "$what: child $c still running: $(cat /proc/$c/cmdline | tr '\0' ' ')"
  done
}

# 1. A quick run: every figure, positive, and nothing left behind.
run_watched "$WORK/quick.json" "$WORK/quick.err" --quick --json
[ "$RC" = 0 ] || fail "--quick exited $RC: $(tail -5 "$WORK/quick.err")"
check_json "$WORK/quick.json" || fail "--quick --json: figures missing or not positive"
no_leftovers "--quick"

# Control: the checker rejects a result with a figure missing and one at zero.
python3 - "$WORK/quick.json" "$WORK/doctored.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["figures"] = d["figures"][1:]
d["figures"][0]["floor"] = 0
json.dump(d, open(sys.argv[2], "w"))
PY
check_json "$WORK/doctored.json" >/dev/null && fail "control: the checker accepted a doctored result"

# 2. The table names every figure too.
"$BENCH" --quick >"$WORK/quick.txt" 2>"$WORK/quick.txt.err" || fail "--quick (table) exited $?"
for label in "config read 4 B, QD1" "QD32 io_uring" "BAR pread 4 B" "BAR pwrite 4 B" \
             "bulk pread 1 MiB" "mmap fault-in" "DOE exchanges, 1 client" \
             "DOE exchanges, 8 clients" "quiesce (D3hot), 64 live maps" \
             "config read 4 B, 1 reader" "config read 4 B, 4 readers"; do
  [ "$(grep -cF "$label" "$WORK/quick.txt")" -ge 1 ] || fail "table lacks '$label'"
done
[ -z "$(ls -A "$TMPDIR")" ] || fail "table run: temp dirs left"

# 3. SIGINT in the middle of a run: exit 130, and nothing left behind.
SIGINT_AFTER_MOUNT=1 run_watched "$WORK/int.txt" "$WORK/int.err" --rounds 50
[ "$RC" = 130 ] || fail "after SIGINT: exit $RC, want 130: $(tail -3 "$WORK/int.err")"
no_leftovers "SIGINT"

# 4. Without root: refused before anything is mounted.
if id nobody >/dev/null 2>&1; then
  out=$(runuser -u nobody -- "$BENCH" --quick 2>&1)
  rc=$?
  [ $rc = 2 ] || fail "as nobody: exit $rc, want 2"
  echo "$out" | grep -q "needs root" || fail "as nobody: no 'needs root' message: $out"
  [ -z "$(ls -A "$TMPDIR")" ] || fail "as nobody: temp dirs made"
fi

# 5. A pcifs that does not exist: a clear error, exit 2.
"$BENCH" --quick --pcifs "$WORK/no-such-pcifs" >/dev/null 2>"$WORK/nopcifs.err"
rc=$?
[ $rc = 2 ] || fail "--pcifs missing: exit $rc, want 2"

# 6. --scale (small counts): every figure, positive, for each count; no mount
# or temp dir left. Skipped without lspci (it times lspci).
if command -v lspci >/dev/null; then
  "$BENCH" --scale --quick --scale-counts 8,64 --json >"$WORK/scale.json" 2>"$WORK/scale.err" ||
    fail "--scale exited $?: $(tail -3 "$WORK/scale.err")"
  python3 - "$WORK/scale.json" <<'PY' || fail "--scale: bad JSON (above)"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["counts"] == [8, 64], d["counts"]
names = ["cold lookup + getattr", "getattr", "config read", "lspci, cold, per function",
         "lspci, warm, per function", "lspci, cold, whole set", "lspci, warm, whole set"]
for n in names:
    got = [v for k, v in d["figures"].items() if k.startswith(n + " ")]
    assert len(got) == 1 and len(got[0]) == 2 and all(x > 0 for x in got[0]), (n, d["figures"])
PY
  grep -q " $WORK" /proc/mounts && fail "--scale: a mount is left: $(grep " $WORK" /proc/mounts)"
  [ -z "$(ls -A "$TMPDIR")" ] || fail "--scale: temp dirs left: $(ls -A "$TMPDIR")"
fi

[ $FAILED = 0 ] && echo "PASS: pcifs-bench smoke test"
exit $FAILED
