#!/bin/bash
# Smoke test of pcifs-bench (issue 3 section 4, issue 13 section 4):
# `pcifs-bench --quick --json --transport=both` runs, prints every figure with
# positive values for both mounts on each transport (/dev/fuse and, where the
# kernel has FUSE over io_uring, io_uring) and the uring/dev line, and leaves
# no mount and none of its own processes behind; the same after a SIGINT in
# the middle of a run. The kernel's enable_uring switch, which the bench sets
# for its run, reads as before after a normal run, the SIGINT run and a failed
# run. `--transport=uring` works when forced and refuses a pcifs that serves
# over /dev/fuse instead; without the switch, uring is refused (exit 2) and
# both falls back to dev with a note. Refused without root (exit 2), except
# --core (in process, no mount), which runs as nobody too. --scale and
# --readers print every figure for small counts.
# Behaviour only: no figure is compared with any number but zero.
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

# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/bench_lib.sh"

# The kernel's switch. Other runs may hold it too (with_uring.sh): each check
# compares it with what it read just before the bench started.
PARAM=/sys/module/fuse/parameters/enable_uring
if [ -w "$PARAM" ]; then
  URING=1
  BOTH="dev uring"
  MOUNTS=4  # pcifs and the floor on each transport
else
  URING=0
  BOTH="dev"
  MOUNTS=2
  echo "SKIP: no writable $PARAM: io_uring parts not run (/dev/fuse only)"
fi

FIGURES=(config_read_qd1 config_read_qd32 bar_pread4 bar_pwrite4 bulk_read_1m mmap_fault
  doe_1_client doe_8_clients quiesce_64_maps readers_1 readers_2 readers_4)

# check_json FILE "TRANSPORTS": one block per transport, in that order, each
# with every figure once, pcifs/floor/ratio finite and > 0; with both, the
# uring/dev line of the QD1 read, positive for both servers.
check_json() {
  python3 - "$1" "$2" "${FIGURES[@]}" <<'PY'
import json, math, sys
data = json.load(open(sys.argv[1]))
transports = sys.argv[2].split()
want = sys.argv[3:]
bad = []
def positive(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0
blocks = data.get("blocks", [])
if [b.get("transport") for b in blocks] != transports:
    bad.append(f"blocks {[b.get('transport') for b in blocks]}, want {transports}")
for b in blocks:
    t = b.get("transport")
    figs = {f["name"]: f for f in b["figures"]}
    for n in want:
        f = figs.get(n)
        if f is None:
            bad.append(f"{t}: {n} missing")
            continue
        for k in ("pcifs", "floor", "ratio"):
            if not positive(f.get(k)):
                bad.append(f"{t}: {n}.{k}={f.get(k)}")
    if t == "uring" and not positive(b.get("floor_uring_requests")):
        bad.append(f"uring: floor_uring_requests={b.get('floor_uring_requests')}")
if "dev" in transports and [f["name"] for f in data.get("figures", [])] != \
        [f["name"] for f in blocks[0]["figures"]]:
    bad.append("top-level figures are not the dev block's")
cross = {c["name"]: c for c in data.get("cross_transport", [])}
if len(transports) == 2:
    c = cross.get("config_read_qd1_uring_over_dev")
    if c is None or not positive(c.get("pcifs")) or not positive(c.get("floor")):
        bad.append(f"cross_transport: {c}")
elif cross:
    bad.append(f"cross_transport with one transport: {cross}")
if bad:
    print("bad or missing:", ", ".join(bad))
    sys.exit(1)
PY
}

# The pcifs the bench starts (--pcifs): it notes what the switch reads as it
# starts, then runs pcifs with its arguments, the transport changed to
# $PCIFS_TRANSPORT where that is set.
cat >"$WORK/rec-pcifs" <<EOF
#!/bin/bash
cat "$PARAM" >>"$WORK/switch-seen" 2>/dev/null
args=("\$@")
[ -n "\${PCIFS_TRANSPORT:-}" ] && args=("\${args[@]/--transport=*/--transport=\$PCIFS_TRANSPORT}")
exec "$BUILD/pcifs" "\${args[@]}"
EOF
chmod +x "$WORK/rec-pcifs"

# run_watched OUT ERR ARGS...: runs the bench in the background with
# --verbose, whose stderr names every child it starts (the pcifs daemons and
# the floors: CHILDREN, however briefly they lived), and the pcifs above,
# which notes whether the switch read Y as the bench started it (SAW_Y).
# Sets RC, CHILDREN and SAW_Y. SIGINT_AFTER_MOUNT=N interrupts it once N
# mounts are up.
run_watched() {
  local out=$1 err=$2
  shift 2
  rm -f "$WORK/switch-seen"
  "$BENCH" --verbose --pcifs "$WORK/rec-pcifs" "$@" >"$out" 2>"$err" &
  local pid=$! interrupted=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "${SIGINT_AFTER_MOUNT:-0}" != 0 ] && [ $interrupted = 0 ] &&
       [ "$(grep -c " $TMPDIR/pcifs-bench\.[^ ]*/mnt " /proc/mounts)" = "$SIGINT_AFTER_MOUNT" ]; then
      sleep 0.5  # into the rounds
      kill -INT "$pid"
      interrupted=1
    fi
    sleep 0.05
  done
  wait "$pid"
  RC=$?
  CHILDREN=$(sed -n 's/^pcifs-bench: [a-z]* (pid \([0-9]*\)) serves .*/\1/p' "$err" | tr '\n' ' ')
  SAW_Y=0
  grep -qx Y "$WORK/switch-seen" 2>/dev/null && SAW_Y=1
}

# no_leftovers WHAT N: no mount under our TMPDIR, no temp dir left, none of
# the N children alive.
no_leftovers() {
  local what=$1 n=$2
  grep -q " $WORK" /proc/mounts && fail "$what: a mount is left: $(grep " $WORK" /proc/mounts)"
  [ -z "$(ls -A "$TMPDIR")" ] || fail "$what: temp dirs left: $(ls -A "$TMPDIR")"
  # Control: the bench named every child it started, or this check is empty.
  [ "$(echo "$CHILDREN" | wc -w)" -ge "$n" ] || fail "$what: saw fewer than $n children: '$CHILDREN'"
  for c in $CHILDREN; do
    kill -0 "$c" 2>/dev/null &&
      fail "$what: child $c still running: $(tr '\0' ' ' <"/proc/$c/cmdline")"
  done
}

# switch_back WHAT BEFORE: the switch reads BEFORE again, and (control) the
# bench had set it to Y while it ran.
switch_back() {
  [ "$URING" = 1 ] || return 0
  local now
  now=$(cat "$PARAM")
  [ "$now" = "$2" ] || fail "$1: $PARAM is $now after the run, was $2 before"
  [ "$SAW_Y" = 1 ] || fail "$1: $PARAM did not read Y when the bench started pcifs"
  [ "$2" = Y ] && echo "note: $1: $PARAM was already Y (another run holds it): restore check is weak"
  return 0
}

# 1. A quick run on both transports: every figure, positive, nothing left
# behind, the switch as it was.
before=$([ "$URING" = 1 ] && cat "$PARAM")
run_watched "$WORK/quick.json" "$WORK/quick.err" --quick --json --transport=both
[ "$RC" = 0 ] || fail "--quick exited $RC: $(tail -5 "$WORK/quick.err")"
check_json "$WORK/quick.json" "$BOTH" || fail "--quick --json: figures missing or not positive"
no_leftovers "--quick" "$MOUNTS"
switch_back "--quick" "$before"

# Control: the checker rejects a result with a figure missing and one at zero.
python3 - "$WORK/quick.json" "$WORK/doctored.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
b = d["blocks"][-1]
b["figures"] = b["figures"][1:]
b["figures"][0]["floor"] = 0
json.dump(d, open(sys.argv[2], "w"))
PY
check_json "$WORK/doctored.json" "$BOTH" >/dev/null &&
  fail "control: the checker accepted a doctored result"

# 2. The table names every figure too, in each transport's block.
"$BENCH" --quick >"$WORK/quick.txt" 2>"$WORK/quick.txt.err" || fail "--quick (table) exited $?"
for t in $BOTH; do
  grep -q "^== transport $t:" "$WORK/quick.txt" || fail "table lacks the $t block"
done
blocks=$(echo "$BOTH" | wc -w)
for label in "config read 4 B, QD1" "QD32 io_uring" "BAR pread 4 B" "BAR pwrite 4 B" \
             "bulk pread 1 MiB" "mmap fault-in" "DOE exchanges, 1 client" \
             "DOE exchanges, 8 clients" "quiesce (D3hot), 64 live maps" \
             "config read 4 B, 1 reader" "config read 4 B, 4 readers"; do
  # Each block lists a figure twice: the figures and the diagnostics.
  [ "$(grep -cF "$label" "$WORK/quick.txt")" -ge $((2 * blocks)) ] || fail "table lacks '$label'"
done
if [ "$URING" = 1 ]; then
  grep -q "^config read 4 B, QD1: uring / dev" "$WORK/quick.txt" || fail "table lacks uring / dev"
fi
[ -z "$(ls -A "$TMPDIR")" ] || fail "table run: temp dirs left"

# 3. SIGINT in the middle of a run: exit 130, nothing left behind, the switch
# as it was.
before=$([ "$URING" = 1 ] && cat "$PARAM")
SIGINT_AFTER_MOUNT=$MOUNTS run_watched "$WORK/int.txt" "$WORK/int.err" --rounds 50
[ "$RC" = 130 ] || fail "after SIGINT: exit $RC, want 130: $(tail -3 "$WORK/int.err")"
no_leftovers "SIGINT" "$MOUNTS"
switch_back "SIGINT" "$before"

# 4. io_uring alone, forced; and a pcifs that serves over /dev/fuse when
# asked for io_uring is refused, not measured.
if [ "$URING" = 1 ]; then
  before=$(cat "$PARAM")
  run_watched "$WORK/uring.json" "$WORK/uring.err" --quick --json --transport=uring
  [ "$RC" = 0 ] || fail "--transport=uring exited $RC: $(tail -5 "$WORK/uring.err")"
  check_json "$WORK/uring.json" "uring" || fail "--transport=uring: bad JSON (above)"
  no_leftovers "--transport=uring" 2
  switch_back "--transport=uring" "$before"

  before=$(cat "$PARAM")
  PCIFS_TRANSPORT=dev run_watched "$WORK/fellback.txt" "$WORK/fellback.err" --quick \
    --transport=uring
  [ "$RC" = 1 ] || fail "pcifs on /dev/fuse for uring: exit $RC, want 1"
  grep -q "does not serve over io_uring" "$WORK/fellback.err" ||
    fail "pcifs on /dev/fuse for uring: no refusal: $(tail -3 "$WORK/fellback.err")"
  [ -s "$WORK/fellback.txt" ] && fail "pcifs on /dev/fuse for uring: figures printed"
  no_leftovers "fallen back" 2
  switch_back "fallen back" "$before"
else
  echo "SKIP: --transport=uring (no writable $PARAM)"
fi

# 5. No switch (a missing file named in its place): uring is refused before
# anything is mounted, both measures /dev/fuse and says so.
export PCIFS_BENCH_ENABLE_URING=$WORK/no-such-switch
"$BENCH" --quick --transport=uring >/dev/null 2>"$WORK/noswitch.err"
rc=$?
[ $rc = 2 ] || fail "uring without the switch: exit $rc, want 2"
grep -q "no-such-switch" "$WORK/noswitch.err" || fail "uring without the switch: no message"
"$BENCH" --quick --json --transport=both >"$WORK/noswitch.json" 2>"$WORK/noswitch-both.err" ||
  fail "both without the switch exited $?: $(tail -3 "$WORK/noswitch-both.err")"
check_json "$WORK/noswitch.json" "dev" || fail "both without the switch: bad JSON (above)"
grep -q "measuring /dev/fuse only" "$WORK/noswitch-both.err" ||
  fail "both without the switch: no note"

# 6. A run that fails (a pcifs that never mounts) puts its switch back: a
# file standing in for it, so that this holds on any kernel.
echo N >"$WORK/switch"
printf '#!/bin/sh\nexit 3\n' >"$WORK/broken-pcifs"
chmod +x "$WORK/broken-pcifs"
PCIFS_BENCH_ENABLE_URING=$WORK/switch "$BENCH" --quick --transport=both \
  --pcifs "$WORK/broken-pcifs" >/dev/null 2>"$WORK/broken.err"
rc=$?
[ $rc = 1 ] || fail "broken pcifs: exit $rc, want 1"
[ "$(cat "$WORK/switch")" = N ] || fail "broken pcifs: the switch reads $(cat "$WORK/switch"), want N"
unset PCIFS_BENCH_ENABLE_URING
[ -z "$(ls -A "$TMPDIR")" ] || fail "broken pcifs: temp dirs left: $(ls -A "$TMPDIR")"

# 7. Without root: refused before anything is mounted.
if id nobody >/dev/null 2>&1; then
  out=$(runuser -u nobody -- "$BENCH" --quick 2>&1)
  rc=$?
  [ $rc = 2 ] || fail "as nobody: exit $rc, want 2"
  echo "$out" | grep -q "needs root" || fail "as nobody: no 'needs root' message: $out"
  [ -z "$(ls -A "$TMPDIR")" ] || fail "as nobody: temp dirs made"
fi

# 8. A pcifs that does not exist: a clear error, exit 2.
"$BENCH" --quick --pcifs "$WORK/no-such-pcifs" >/dev/null 2>"$WORK/nopcifs.err"
rc=$?
[ $rc = 2 ] || fail "--pcifs missing: exit $rc, want 2"

# 9. --scale (small counts, and 3 views of the smallest) on every transport
# (default both): every figure, positive, for each configuration on each
# transport; no mount (of any view) or temp dir left; enable_uring as before.
# Skipped without lspci (it times lspci).
if command -v lspci >/dev/null; then
  before=$([ "$URING" = 1 ] && cat "$PARAM")
  "$BENCH" --scale --quick --scale-counts 8,64 --scale-views 1,3 --json >"$WORK/scale.json" \
    2>"$WORK/scale.err" || fail "--scale exited $?: $(tail -3 "$WORK/scale.err")"
  [ "$URING" = 0 ] || [ "$(cat "$PARAM")" = "$before" ] ||
    fail "--scale: $PARAM is $(cat "$PARAM") after the run, was $before before"
  python3 - "$WORK/scale.json" "$BOTH" <<'PY' || fail "--scale: bad JSON (above)"
import json, sys
d = json.load(open(sys.argv[1]))
transports = sys.argv[2].split()
n = 3 * len(transports)
assert d["counts"] == [8, 64, 8] * len(transports), d["counts"]
assert d["views"] == [1, 1, 3] * len(transports), d["views"]
assert d["transports"] == [t for t in transports for _ in range(3)], d["transports"]
names = ["cold lookup + getattr", "cold lookup of a group's link", "getattr", "config read",
         "lspci, cold, per function",
         "lspci, warm, per function", "lspci, cold, whole set", "lspci, warm, whole set"]
for n_ in names:
    got = [v for k, v in d["figures"].items() if k.startswith(n_ + " ")]
    assert len(got) == 1 and len(got[0]) == n and all(x > 0 for x in got[0]), (n_, d["figures"])
PY
  grep -q " $WORK" /proc/mounts && fail "--scale: a mount is left: $(grep " $WORK" /proc/mounts)"
  [ -z "$(ls -A "$TMPDIR")" ] || fail "--scale: temp dirs left: $(ls -A "$TMPDIR")"
fi

# 10. --core: the Mediator's read path in process, no root needed; every
# figure positive (reads, the gate, lookups, opens), for the thread counts asked.
core_check() {  # user json-file
  python3 - "$2" <<'PY' || fail "--core ($1): bad JSON (above)"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["threads"] == [1, 3], d["threads"]
regs = d["reads_per_s"]  # operations per second, per column
assert len(regs) == 5, regs
assert any(k.startswith("lookup") for k in regs) and any(k.startswith("open") for k in regs), regs
for name, v in regs.items():
    assert len(v) == 2 and all(x > 0 for x in v), (name, v)
PY
}
"$BENCH" --core --quick --threads 1,3 --json >"$WORK/core.json" 2>"$WORK/core.err" ||
  fail "--core exited $?: $(tail -3 "$WORK/core.err")"
core_check root "$WORK/core.json"
if id nobody >/dev/null 2>&1; then
  runuser -u nobody -- "$BENCH" --core --quick --threads 1,3 --json >"$WORK/core-nobody.json" \
    2>/dev/null || fail "--core as nobody exited $?"
  core_check nobody "$WORK/core-nobody.json"
fi

# 11. --readers (two readers at most): every source positive in every row; the
# sysfs columns where ROOT has devices (the real /sys/bus/pci, read only) and
# none where it has not (an empty temp tree). Nothing left behind.
readers_check() {  # json-file with-sysfs(0|1)
  python3 - "$1" "$2" <<'PY' || fail "--readers: bad JSON (above)"
import json, sys
d = json.load(open(sys.argv[1]))
keys = ["pcifs_sim_shadow", "pcifs_sim_pmcsr", "floor"]
sysfs = ["sysfs", "pcifs_sysfs_shadow"]
want = keys + sysfs if sys.argv[2] == "1" else keys
assert [r["readers"] for r in d["rows"]] == [1, 2], d["rows"]
for r in d["rows"]:
    assert sorted(k for k in r if k != "readers") == sorted(want), r
    assert all(r[k] > 0 for k in want), r
PY
}
if [ -n "$(ls /sys/bus/pci/devices 2>/dev/null)" ]; then
  "$BENCH" --readers --quick --max-readers 2 --json >"$WORK/readers.json" \
    2>"$WORK/readers.err" || fail "--readers exited $?: $(tail -3 "$WORK/readers.err")"
  readers_check "$WORK/readers.json" 1
fi
mkdir -p "$WORK/empty-root/devices"
"$BENCH" --readers "$WORK/empty-root" --quick --max-readers 2 --json \
  >"$WORK/readers-empty.json" 2>"$WORK/readers-empty.err" ||
  fail "--readers (no devices) exited $?: $(tail -3 "$WORK/readers-empty.err")"
readers_check "$WORK/readers-empty.json" 0
grep -q " $WORK" /proc/mounts && fail "--readers: a mount is left: $(grep " $WORK" /proc/mounts)"
[ -z "$(ls -A "$TMPDIR")" ] || fail "--readers: temp dirs left: $(ls -A "$TMPDIR")"

[ $FAILED = 0 ] && echo "PASS: pcifs-bench smoke test"
exit $FAILED
