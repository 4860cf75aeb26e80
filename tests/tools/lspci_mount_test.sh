#!/bin/bash
# Tool test: pciutils runs unchanged on the mount (SPEC S1, S3, S6.1).
# `lspci -A linux-sysfs -O sysfs.path=MNT -vvv -xxxx` over the default
# simulated set must print the reviewed golden output tests/golden/lspci_default.txt,
# byte for byte, as root and as nobody: through pcifs an unprivileged user sees
# every capability, where the kernel's sysfs gives them `<access denied>`.
# A negative control shows the same check catches `<access denied>`; `-t` and
# `-nn` are checked too. Names come from the pinned tests/golden/pci.ids so the
# machine's ID database cannot change the output; the golden output is tied to
# the pciutils version in tests/golden/lspci_default.version (other versions
# decode differently: then only the version-independent checks run).
# PCIFS_UPDATE_GOLDEN=1 rewrites the golden files (review them before committing).
# Needs: PCIFS_BUILD_DIR (pcifs built), PCIFS_SOURCE_DIR, root, /dev/fuse, lspci.
# Exit 77: skipped.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
mount_require lspci cmp diff

GOLDEN=$SRC/tests/golden/lspci_default.txt
GOLDEN_VERSION=$SRC/tests/golden/lspci_default.version
# lspci warns on stderr where libkmod has no module data: compare stdout only.
lspci_on() { lspci -A linux-sysfs -O "sysfs.path=$1" -i "$IDS" "${@:2}" 2>>"$TMP/lspci.err"; }
COMPLAINT='access denied|<BAD>|<unknown>|<\?>|Unknown|!!!'

mount_start
# nobody must be able to read the ID file wherever the source tree lives.
IDS=$TMP/pci.ids
cp "$SRC/tests/golden/pci.ids" "$IDS" && chmod 644 "$IDS"

# --- The full decode, as root and as nobody.
lspci_on "$MNT" -vvv -xxxx >"$TMP/root.txt" || fail "lspci as root exited $?"
as_nobody lspci -A linux-sysfs -O "sysfs.path=$MNT" -i "$IDS" -vvv -xxxx \
  >"$TMP/nobody.txt" 2>>"$TMP/lspci.err" || fail "lspci as nobody exited $?"
[ -s "$TMP/root.txt" ] || fail "lspci printed nothing"
cmp -s "$TMP/root.txt" "$TMP/nobody.txt" \
  || fail "lspci as nobody differs from root:"$'\n'"$(diff "$TMP/root.txt" "$TMP/nobody.txt" | head -20)"
for who in root nobody; do
  bad=$(grep -nE "$COMPLAINT" "$TMP/$who.txt")
  [ -z "$bad" ] || fail "lspci as $who complained:"$'\n'"$bad"
done

version=$(lspci --version | awk '{print $NF}')
if [ "${PCIFS_UPDATE_GOLDEN:-0}" = 1 ]; then
  cp "$TMP/root.txt" "$GOLDEN" && echo "$version" >"$GOLDEN_VERSION"
  echo "note: wrote $GOLDEN (pciutils $version): review it"
elif [ "$version" = "$(cat "$GOLDEN_VERSION")" ]; then
  cmp -s "$GOLDEN" "$TMP/root.txt" \
    || fail "lspci differs from $GOLDEN:"$'\n'"$(diff "$GOLDEN" "$TMP/root.txt" | head -40)"
else
  echo "note: golden output is from pciutils $(cat "$GOLDEN_VERSION"), this is $version: not compared"
fi

# --- Version-independent checks of the decode (S14's device table).
section() { awk -v bdf="$2" '$1 == bdf {p = 1} p && /^$/ {exit} p' "$1"; }
expect_caps() {
  local bdf=$1 s cap
  shift
  s=$(section "$TMP/root.txt" "$bdf")
  [ -n "$s" ] || { fail "$bdf missing from lspci"; return; }
  for cap in "$@"; do
    grep -qE "^	Capabilities: \[[0-9a-f]+( v[0-9]+)?\] $cap" <<<"$s" || fail "$bdf: capability '$cap' not decoded"
  done
}
expect_caps 00:00.0
grep -q 'Capabilities' <<<"$(section "$TMP/root.txt" 00:00.0)" && fail "00:00.0 shows capabilities"
expect_caps 00:01.0 'Power Management' 'MSI:' 'Express \(v2\) Root Port'
expect_caps 00:02.0 'Power Management' 'MSI:' 'Express \(v2\) Root Port'
expect_caps 01:00.0 'Power Management' 'MSI-X' 'Express \(v2\) Endpoint' 'Advanced Error Reporting' \
  'Device Serial Number' 'Data Object Exchange'
expect_caps 01:00.1 'Power Management' 'Express \(v2\) Endpoint' 'Advanced Error Reporting'
expect_caps 02:00.0 'Power Management' 'MSI-X' 'Express \(v2\) Endpoint' 'Advanced Error Reporting' \
  'Device Serial Number' 'Data Object Exchange'
n=$(section "$TMP/root.txt" 02:00.0 | grep -c 'Data Object Exchange')
[ "$n" = 2 ] || fail "02:00.0 shows $n DOE capabilities, expected 2"
ep=$(section "$TMP/root.txt" 01:00.0)
for want in 'Region 0: Memory at [0-9a-f]+ \(64-bit, prefetchable\) \[size=1M\]' \
            'Region 2: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\) \[size=64K\]' \
            'Region 4: I/O ports at [0-9a-f]+ \[size=256\]' \
            'Expansion ROM at [0-9a-f]+ \[disabled\] \[size=64K\]' \
            'Status: D0 NoSoftRst\+' 'IOMMU group: 2$' 'Interrupt: pin A routed to IRQ 11$'; do
  grep -qE "$want" <<<"$ep" || fail "01:00.0: no line matching '$want'"
done
for g in 00:00.0:0 00:01.0:1 00:02.0:4 01:00.0:2 01:00.1:2 02:00.0:3; do
  section "$TMP/root.txt" "${g%:*}" | grep -qx "	IOMMU group: ${g##*:}" || fail "${g%:*}: not in IOMMU group ${g##*:}"
done
# -xxxx: 4096-byte functions dump 256 rows.
rows=$(section "$TMP/root.txt" 01:00.0 | grep -cE '^[0-9a-f]{2,3}: ')
[ "$rows" = 256 ] || fail "01:00.0 dumped $rows rows, expected 256"

# --- -t and -nn.
lspci_on "$MNT" -t >"$TMP/tree" || fail "lspci -t exited $?"
cat >"$TMP/tree.want" <<'EOF'
-[0000:00]-+-00.0
           +-01.0-[01]--+-00.0
           |            \-00.1
           \-02.0-[02]----00.0
EOF
cmp -s "$TMP/tree.want" "$TMP/tree" || fail "lspci -t:"$'\n'"$(diff "$TMP/tree.want" "$TMP/tree")"
as_nobody lspci -A linux-sysfs -O "sysfs.path=$MNT" -i "$IDS" -nn >"$TMP/nn" 2>>"$TMP/lspci.err" \
  || fail "lspci -nn as nobody exited $?"
cat >"$TMP/nn.want" <<'EOF'
00:00.0 Host bridge [0600]: Red Hat, Inc. QEMU PCIe Host bridge [1b36:0008]
00:01.0 PCI bridge [0604]: Red Hat, Inc. QEMU PCIe Root port [1b36:000c]
00:02.0 PCI bridge [0604]: Red Hat, Inc. QEMU PCIe Root port [1b36:000c]
01:00.0 CXL [0502]: Red Hat, Inc. Device [1b36:10f0] (rev 01)
01:00.1 Memory controller [0580]: Red Hat, Inc. Device [1b36:10f1] (rev 01)
02:00.0 Processing accelerators [1200]: Red Hat, Inc. Device [1b36:10f2] (rev 02)
EOF
cmp -s "$TMP/nn.want" "$TMP/nn" || fail "lspci -nn:"$'\n'"$(diff "$TMP/nn.want" "$TMP/nn")"

# --- Negative controls: the complaint check catches what the kernel gives a
# non-root reader. (a) A sysfs-shaped copy of the mount whose config files hold
# only the 64 bytes sysfs shows non-root: lspci must print <access denied>.
COPY=$TMP/copy
for d in "$MNT"/devices/*; do
  c=$COPY/devices/${d##*/}
  mkdir -p "$c"
  for a in vendor device class subsystem_vendor subsystem_device revision irq resource; do
    cat "$d/$a" >"$c/$a"
  done
  head -c 64 "$d/config" >"$c/config"
done
chmod -R a+rX "$TMP"
as_nobody lspci -A linux-sysfs -O "sysfs.path=$COPY" -i "$IDS" -vvv >"$TMP/copy.txt" 2>>"$TMP/lspci.err"
grep -qE "$COMPLAINT" "$TMP/copy.txt" \
  || fail "control: lspci on a 64-byte config copy shows no complaint; the check cannot fail"
# (b) The machine's own devices as nobody, where there are any with capabilities.
if [ -n "$(ls /sys/bus/pci/devices 2>/dev/null)" ] && lspci -vvv 2>/dev/null | grep -q 'Capabilities: \['; then
  as_nobody lspci -vvv 2>/dev/null | grep -qE "$COMPLAINT" \
    || fail "control: lspci -vvv on /sys as nobody shows no <access denied>"
else
  echo "note: no real PCI device with capabilities: /sys control skipped"
fi

mount_finish
