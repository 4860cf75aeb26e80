#!/bin/bash
# Acceptance test of the simulator's config space and of pcifs-dump: lspci must
# decode every simulated device without complaint (`lspci -F DUMP -vvv`), show
# the expected capabilities and bridge windows, and, on this machine's real
# sysfs, pcifs-dump must agree byte for byte with lspci's own view.
# Needs: PCIFS_BUILD_DIR (pcifs-dump built), PCIFS_SOURCE_DIR, lspci. Exit 77: skipped.
set -u

BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SRC=${PCIFS_SOURCE_DIR:?PCIFS_SOURCE_DIR not set}
DUMP_TOOL=$BUILD/pcifs-dump
command -v lspci >/dev/null || { echo "SKIP: lspci not installed"; exit 77; }
[ -x "$DUMP_TOOL" ] || { echo "FAIL: $DUMP_TOOL not built"; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }

# Decodes dump $1 with lspci (-vvv, then -vvv -xxxx) into $1.vvv / $1.xxxx and
# fails on a non-zero exit or on any sign that lspci could not make sense of it.
decode_clean() {
  local dump=$1 what=$2
  lspci -F "$dump" -D -vvv >"$dump.vvv" 2>"$dump.err" || fail "$what: lspci -vvv exited $?"
  lspci -F "$dump" -D -vvv -xxxx >"$dump.xxxx" 2>>"$dump.err" || fail "$what: lspci -vvv -xxxx exited $?"
  # Register names that merely contain "Error" are fine (the AER capability's
  # title, "First Error Pointer", "ErrorSrc:", flags like "Error-"); strip them,
  # then anything left is lspci complaining about a malformed field.
  local bad
  bad=$(grep -nE "$COMPLAINT" "$dump.vvv" "$dump.xxxx" "$dump.err" \
        | grep -v libkmod | sed -E 's/Advanced Error Reporting|First Error Pointer|ErrorSrc:|Error[-+]//g' \
        | grep -E "$COMPLAINT")
  [ -z "$bad" ] || fail "$what: lspci complained:"$'\n'"$bad"
  [ -s "$dump.vvv" ] || fail "$what: lspci decoded nothing"
}

COMPLAINT='<BAD>|<unknown>|<\?>|Unknown|Error'

# The -vvv section of one function (title line up to the blank line).
section() { awk -v bdf="$2" '$1 == bdf {p = 1} p && /^$/ {exit} p' "$1"; }

# --- 1. The embedded default set.
"$DUMP_TOOL" >"$TMP/sim.dump" || fail "pcifs-dump (default sim) exited $?"
decode_clean "$TMP/sim.dump" "sim"
for bdf in 0000:00:00.0 0000:00:01.0 0000:00:02.0 0000:01:00.0 0000:01:00.1 0000:02:00.0; do
  grep -q "^$bdf " "$TMP/sim.dump.vvv" || fail "sim: $bdf missing from lspci output"
done
ep=$(section "$TMP/sim.dump.vvv" 0000:01:00.0)
for cap in 'Power Management' 'MSI-X' 'Express' 'Advanced Error Reporting' \
           'Device Serial Number' 'Data Object Exchange'; do
  grep -q "Capabilities: \[[0-9a-f]*[^]]*\] $cap" <<<"$ep" || fail "sim: 0000:01:00.0 lacks capability '$cap'"
done
for port in 0000:00:01.0:01 0000:00:02.0:02; do
  bdf=${port%:*} sec=${port##*:}
  s=$(section "$TMP/sim.dump.vvv" "$bdf")
  grep -qE "Bus: primary=00, secondary=$sec, subordinate=$sec" <<<"$s" \
    || fail "sim: $bdf bus numbers do not decode to secondary=$sec"
  grep -qE "Memory behind bridge: [0-9a-f]+-[0-9a-f]+ \[size=" <<<"$s" \
    || fail "sim: $bdf memory window does not decode: $(grep 'behind bridge' <<<"$s")"
  grep -qE "(I/O|Prefetchable memory) behind bridge:" <<<"$s" \
    || fail "sim: $bdf I/O and prefetchable windows missing"
  grep -q "Root Port" <<<"$s" || fail "sim: $bdf is not decoded as a PCIe Root Port"
done
# A 4096-byte function dumps 256 rows of 16 bytes, a 256-byte one 16.
rows=$(awk '/^0000:01:00.0 /{p=1; next} p && /^$/{exit} p' "$TMP/sim.dump" | wc -l)
[ "$rows" = 256 ] || fail "sim: 0000:01:00.0 dumped $rows rows, expected 256"

# --- 2. A device set from a file.
SET=$SRC/tests/fixtures/lspci_dump_set.json
if [ -f "$SET" ]; then
  "$DUMP_TOOL" --backend="sim:$SET" >"$TMP/file.dump" || fail "pcifs-dump sim:FILE exited $?"
  decode_clean "$TMP/file.dump" "sim:FILE"
  n=$(grep -c '^[0-9a-f]\{4\}:' "$TMP/file.dump.vvv")
  expect=$(cat "$SRC/tests/fixtures/lspci_dump_set.count")
  [ "$n" = "$expect" ] || fail "sim:FILE: lspci shows $n functions, expected $expect"
else
  fail "fixture $SET missing"
fi

# --- 3. Command-line errors: exit 2 with a message that says what was expected.
check_bad() {
  local spec=$1 want=$2 rc
  "$DUMP_TOOL" --backend="$spec" >"$TMP/bad.out" 2>"$TMP/bad.err"; rc=$?
  [ "$rc" = 2 ] || fail "--backend=$spec: exit $rc, expected 2"
  grep -q -- "$want" "$TMP/bad.err" || fail "--backend=$spec: message lacks '$want': $(cat "$TMP/bad.err")"
  [ ! -s "$TMP/bad.out" ] || fail "--backend=$spec: printed a dump anyway"
}
check_bad bogus "expected sim, sim:FILE.json, sysfs or sysfs:DIR"
check_bad sim: "expected a file name"
check_bad sysfs: "expected a directory"
check_bad "sim:$TMP/none.json" "none.json"
check_bad "sysfs:$TMP/nowhere" "nowhere/devices"
"$DUMP_TOOL" --no-such-option >/dev/null 2>&1; rc=$?
[ "$rc" = 2 ] || fail "unknown option: exit $rc, expected 2"
"$DUMP_TOOL" --help >"$TMP/help" 2>&1 || fail "--help exited $?"
grep -q -- "--backend" "$TMP/help" || fail "--help does not explain --backend"

# --- 4. Real sysfs, read only. Root sees the full config space; others get 64
# bytes from the kernel, which cannot match, so that part needs root.
if [ -n "$(ls /sys/bus/pci/devices 2>/dev/null)" ] && [ "$(id -u)" = 0 ]; then
  "$DUMP_TOOL" --backend=sysfs >"$TMP/real.dump" || fail "pcifs-dump --backend=sysfs exited $?"
  lspci -D -xxxx >"$TMP/lspci.dump" 2>/dev/null
  # (a) lspci -F on our dump shows exactly the bytes plain lspci reads.
  lspci -F "$TMP/real.dump" -D -xxxx >"$TMP/real.xxxx" 2>/dev/null
  cmp -s "$TMP/lspci.dump" "$TMP/real.xxxx" \
    || fail "sysfs: lspci -F <pcifs-dump> -xxxx differs from lspci -xxxx:"$'\n'"$(
         diff "$TMP/lspci.dump" "$TMP/real.xxxx" | head -20)"
  # (b) Decoded, our dump and lspci's own dump read the same, byte for byte.
  # (Plain lspci -vvv also shows what only sysfs knows: drivers, BAR sizes.)
  lspci -F "$TMP/real.dump" -D -vvv >"$TMP/real.vvv" 2>/dev/null
  lspci -F "$TMP/lspci.dump" -D -vvv >"$TMP/ref.vvv" 2>/dev/null
  cmp -s "$TMP/ref.vvv" "$TMP/real.vvv" \
    || fail "sysfs: decoded dumps differ:"$'\n'"$(diff "$TMP/ref.vvv" "$TMP/real.vvv" | head -20)"
  # (c) sysfs:DIR on a copy of one real function's attributes.
  dev=$(ls /sys/bus/pci/devices | head -1)
  mkdir -p "$TMP/tree/devices/$dev"
  for a in config vendor device class subsystem_vendor subsystem_device revision irq \
           numa_node resource; do
    [ -r "/sys/bus/pci/devices/$dev/$a" ] && cat "/sys/bus/pci/devices/$dev/$a" >"$TMP/tree/devices/$dev/$a"
  done
  "$DUMP_TOOL" --backend="sysfs:$TMP/tree" >"$TMP/tree.dump" || fail "pcifs-dump sysfs:DIR exited $?"
  awk -v b="$dev" '$1 == b {p=1} p && /^$/ {exit} p' "$TMP/real.dump" | tail -n +2 >"$TMP/one.real"
  tail -n +2 "$TMP/tree.dump" | sed '/^$/d' >"$TMP/one.tree"
  cmp -s "$TMP/one.real" "$TMP/one.tree" || fail "sysfs:DIR: config of $dev differs from real sysfs"
else
  echo "note: real sysfs comparison skipped (no devices, or not root)"
fi

[ "$FAILED" = 0 ] && echo "PASS" || exit 1
