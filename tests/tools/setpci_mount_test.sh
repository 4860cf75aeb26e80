#!/bin/bash
# Tool test: setpci runs unchanged on the mount (SPEC S1, S4, S6.1, S11, S13).
# Reads of named registers and capability registers agree with the bytes of
# `lspci -xxxx`; as root, writes the policy allows take effect (command
# register, PCIe Device Control, RW1C status bits, virtual BARs that size and
# restore like hardware) and writes to read-only, PowerState and DOE bits
# change nothing; a write while another process holds the group's claim is
# refused with EBUSY; as nobody every write is refused and config is unchanged.
# pcilib only warns when a write fails and setpci still exits 0 (pciutils
# 3.9), so refusals are checked by pcilib's message and by the value.
# Needs: PCIFS_BUILD_DIR (pcifs built), PCIFS_SOURCE_DIR, root, /dev/fuse,
# setpci, lspci. Exit 77: skipped.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
mount_require setpci lspci cmp

mount_start
SP=(setpci -A linux-sysfs -O "sysfs.path=$MNT" -s 01:00.0)
sp() { "${SP[@]}" "$@" 2>>"$TMP/setpci.err"; }
sp_nobody() { as_nobody "${SP[@]}" "$@"; }
# expect REG VALUE: setpci reads VALUE from REG.
expect() {
  local got
  got=$(sp "$1")
  [ "$got" = "$2" ] || fail "$1 reads '$got', expected '$2'"
}
# unclaimed: no claim outlives setpci (S11: it ends when setpci exits, and the
# group is handed over, README "Security", before it reads "none").
unclaimed() {
  local i
  for ((i = 0; i < 400; i++)); do [ "$(cat "$DEV/owner")" = none ] && return 0; sleep 0.05; done
  fail "owner is '$(cat "$DEV/owner")' after setpci exited"
}
# write_ok REG=VALUE...: setpci as root writes without a complaint.
write_ok() {
  "${SP[@]}" "$@" 2>"$TMP/w.err" || fail "setpci $* exited $?"
  [ ! -s "$TMP/w.err" ] || fail "setpci $*: $(cat "$TMP/w.err")"
  unclaimed
}
# wexpect REG VALUE WRITE...: one setpci makes the writes, then reads VALUE
# from REG. One process: what it wrote lasts as long as its claim, since the
# hand-over at the claim's end restores the device's baseline.
wexpect() {
  local reg=$1 want=$2 got
  shift 2
  got=$("${SP[@]}" "$@" "$reg" 2>"$TMP/w.err") || fail "setpci $* $reg exited $?"
  [ ! -s "$TMP/w.err" ] || fail "setpci $*: $(cat "$TMP/w.err")"
  [ "$got" = "$want" ] || fail "$reg reads '$got' after $*, expected '$want'"
  unclaimed
}
violations() { awk '/"0000:01:00.0"/ {p = 1} p && /"violations"/ {gsub(/[^0-9]/, ""); print; exit}' "$MNT/status"; }

# --- Reads agree with lspci's dump of the same config space.
lspci -A linux-sysfs -O "sysfs.path=$MNT" -s 01:00.0 -vvv -xxxx >"$TMP/lspci" 2>/dev/null \
  || fail "lspci exited $?"
read -r -a BYTES < <(grep -E '^[0-9a-f]{2,3}: ' "$TMP/lspci" | cut -d' ' -f2- | tr '\n' ' ')
[ "${#BYTES[@]}" = 4096 ] || fail "lspci dumped ${#BYTES[@]} bytes, expected 4096"
# dumped OFFSET WIDTH: the register as setpci prints it, from lspci's bytes.
dumped() {
  local i out=
  for ((i = 0; i < $2; i++)); do out=${BYTES[$(($1 + i))]}$out; done
  echo "$out"
}
cap_at() { grep -oE "Capabilities: \[[0-9a-f]+( v[0-9]+)?\] $1" "$TMP/lspci" | sed -E 's/.*\[([0-9a-f]+).*/0x\1/'; }
PM=$(cap_at 'Power Management') MSIX=$(cap_at 'MSI-X') EXP=$(cap_at Express)
AER=$(cap_at 'Advanced Error') DSN=$(cap_at 'Device Serial') DOE=$(cap_at 'Data Object')
for c in PM MSIX EXP AER DSN DOE; do [ -n "${!c}" ] || fail "lspci shows no $c capability"; done
declare -A REGS=(
  [VENDOR_ID]=0:2 [DEVICE_ID]=2:2 [COMMAND]=4:2 [STATUS]=6:2 [REVISION]=8:1 [CLASS_PROG]=9:1
  [CLASS_DEVICE]=10:2 [HEADER_TYPE]=14:1 [BASE_ADDRESS_0]=16:4 [BASE_ADDRESS_1]=20:4
  [BASE_ADDRESS_2]=24:4 [BASE_ADDRESS_4]=32:4 [SUBSYSTEM_VENDOR_ID]=44:2 [SUBSYSTEM_ID]=46:2
  [ROM_ADDRESS]=48:4 [CAPABILITIES]=52:1 [INTERRUPT_LINE]=60:1 [INTERRUPT_PIN]=61:1
  [CAP_PM+4.w]=$((PM + 4)):2 [CAP_MSIX+2.w]=$((MSIX + 2)):2 [CAP_MSIX+4.l]=$((MSIX + 4)):4
  [CAP_EXP+2.w]=$((EXP + 2)):2 [CAP_EXP+4.l]=$((EXP + 4)):4 [CAP_EXP+8.w]=$((EXP + 8)):2
  [CAP_EXP+0xc.l]=$((EXP + 12)):4 [ECAP_AER+4.l]=$((AER + 4)):4 [ECAP_AER+0xc.l]=$((AER + 12)):4
  [ECAP_DSN+4.l]=$((DSN + 4)):4 [ECAP_DSN+8.l]=$((DSN + 8)):4 [0x100.l]=256:4
)
for r in "${!REGS[@]}"; do
  spec=${REGS[$r]}
  want=$(dumped "${spec%:*}" "${spec#*:}")
  expect "$r" "$want"
  got=$(sp_nobody "$r" 2>/dev/null)
  [ "$got" = "$want" ] || fail "$r as nobody reads '$got', expected '$want'"
done
expect VENDOR_ID 1b36
expect DEVICE_ID 10f0
expect ECAP_DSN+4.l 00000001

# --- Root: writes the policy allows take effect.
cmd0=$(sp COMMAND)
wexpect COMMAND 0507 COMMAND=0x0507
wexpect COMMAND 0107 COMMAND=0x0507 COMMAND=0x0000:0x0400
expect COMMAND "$(printf %04x $((0x$cmd0 & ~4)))"  # the hand-over: baseline, bus master off
devctl=$(sp CAP_EXP+8.w)
wexpect CAP_EXP+8.w "$(printf %04x $((0x$devctl ^ 1)))" "CAP_EXP+8.w=$(printf %04x $((0x$devctl ^ 1)))"
expect CAP_EXP+8.w "$devctl"
# Device Status bits are RW1C: writing 1 to CorrErr clears it and only it.
devsta=$(sp CAP_EXP+0xa.w)
[ $((0x$devsta & 1)) = 1 ] || fail "DevSta $devsta has no CorrErr bit to clear: the RW1C check is vacuous"
wexpect CAP_EXP+0xa.w "$(printf %04x $((0x$devsta & ~1)))" CAP_EXP+0xa.w=0x0001

# Virtual BARs (S4): all-ones reads the size mask, the old value restores it.
declare -A SIZED=([BASE_ADDRESS_0]=fff0000c [BASE_ADDRESS_1]=ffffffff [BASE_ADDRESS_2]=ffff0000
  [BASE_ADDRESS_4]=ffffff01)
for r in BASE_ADDRESS_0 BASE_ADDRESS_1 BASE_ADDRESS_2 BASE_ADDRESS_4; do
  old=$(sp "$r")
  wexpect "$r" "${SIZED[$r]}" "$r=ffffffff"
  wexpect "$r" "$old" "$r=ffffffff" "$r=$old"
done
rom=$(sp ROM_ADDRESS)
wexpect ROM_ADDRESS ffff0000 ROM_ADDRESS=fffff800
wexpect ROM_ADDRESS "$rom" ROM_ADDRESS=fffff800 "ROM_ADDRESS=$rom"
# The device kept decoding at its addresses: BAR2's ID register still reads.
[ "$(dd if="$DEV/resource2" bs=4 skip=16 count=1 status=none | xxd -p)" = 46494350 ] \
  || fail "BAR2's ID register does not read after the sizing writes"
unclaimed

# Read-only bits: the write is accepted (as on hardware) and changes nothing.
for w in VENDOR_ID=0x1234 DEVICE_ID=0x5678 CLASS_DEVICE=0x0101 HEADER_TYPE=0x01; do
  before=$(sp "${w%=*}")
  write_ok "$w"
  expect "${w%=*}" "$before"
done
# PowerState moves only through power_state (S4); DOE registers are never
# written through config: a GO bit reaching the device would count a violation.
pmcsr=$(sp CAP_PM+4.w)
write_ok "CAP_PM+4.w=$(printf %04x $((0x$pmcsr | 3)))"
expect CAP_PM+4.w "$pmcsr"
[ "$(cat "$DEV/power_state")" = D0 ] || fail "power_state is $(cat "$DEV/power_state") after a PMCSR write"
doectl_reg=$(printf %x.l $((DOE + 8)))
doectl=$(sp "$doectl_reg")
write_ok "$doectl_reg=0x80000000"
expect "$doectl_reg" "$doectl"
[ "$(violations)" = 0 ] || fail "the simulator counted $(violations) violations on 0000:01:00.0"

# --- S11: another process holds the group's claim (resource2 open): writes
# to both functions of IOMMU group 2 are refused with EBUSY.
sleep 600 3<"$DEV/resource2" &
HELPER_PIDS+=($!)
for ((i = 0; i < 200; i++)); do [ "$(cat "$DEV/owner")" != none ] && break; sleep 0.05; done
grep -q "^pid=$! uid=0 " "$DEV/owner" || fail "owner '$(cat "$DEV/owner")' is not the holder pid=$!"
for bdf in 01:00.0 01:00.1; do
  before=$(setpci -A linux-sysfs -O "sysfs.path=$MNT" -s $bdf COMMAND 2>/dev/null)
  setpci -A linux-sysfs -O "sysfs.path=$MNT" -s $bdf COMMAND=0x0507 2>"$TMP/busy.err"
  grep -q 'Device or resource busy' "$TMP/busy.err" || fail "$bdf write under another claim: '$(cat "$TMP/busy.err")'"
  after=$(setpci -A linux-sysfs -O "sysfs.path=$MNT" -s $bdf COMMAND 2>/dev/null)
  [ "$before" = "$after" ] || fail "$bdf COMMAND changed from $before to $after under another claim"
done
kill "${HELPER_PIDS[@]}"
wait "${HELPER_PIDS[@]}" 2>/dev/null
HELPER_PIDS=()
unclaimed  # the helper's claim ended: handed over
wexpect COMMAND 0507 COMMAND=0x0507
cmd_clean=$(sp COMMAND)  # the baseline again, as every claim's end leaves it

# --- Nobody: every write refused, config unchanged.
cat "$DEV/config" >"$TMP/config.before"
for w in COMMAND=0x0507 BASE_ADDRESS_2=ffffffff CAP_EXP+8.w=0x0000 VENDOR_ID=0x1234; do
  sp_nobody "$w" 2>"$TMP/nobody.err"
  grep -q "Cannot open $MNT/devices/0000:01:00.0/config" "$TMP/nobody.err" \
    || fail "setpci $w as nobody: no refusal: '$(cat "$TMP/nobody.err")'"
done
cmp -s "$TMP/config.before" "$DEV/config" || fail "config changed after nobody's refused writes"
# The refusal is EACCES on opening config for writing (what pcilib hides).
# shellcheck disable=SC2016
as_nobody bash -c 'exec 3<>"$1"' _ "$DEV/config" 2>"$TMP/open.err" && fail "nobody opened config read-write"
grep -q 'Permission denied' "$TMP/open.err" || fail "nobody opening config read-write: $(cat "$TMP/open.err")"
grep -qE 'denied.*uid=65534' "$TMP/daemon.log" || fail "the daemon logged no denial for uid 65534"
# Negative control: the same nobody can read, so the refusals are the policy's.
[ "$(sp_nobody COMMAND 2>/dev/null)" = "$cmd_clean" ] || fail "nobody cannot read COMMAND"

mount_finish
