#!/bin/bash
# Tool test: the sysfs backend serves THIS machine's PCI devices as a drop-in
# for /sys/bus/pci (SPEC S15, issue 4). As nobody,
#   lspci -A linux-sysfs -O sysfs.path=MNT -vvv -xxxx
# over a `pcifs --backend=sysfs` mount must print exactly what root's
#   lspci -vvv -xxxx
# prints over /sys, byte for byte, for every device: config space (read through
# the daemon, partly from its verified shadow), `resource`, `irq`, the driver
# and iommu_group links and the other attributes lspci shows. Also -t, -nn,
# -k and -D, and the mount's device list equals /sys's.
# Negative control: nobody's own lspci over /sys differs (the kernel gives an
# unprivileged reader 64 bytes of config), so the comparison can fail.
# Read-only: lspci only reads, and the daemon opens config read-only until a
# write (nothing here writes). Skips (77) where no PCI devices exist.
# Needs: PCIFS_BUILD_DIR, PCIFS_SOURCE_DIR, root, /dev/fuse, lspci.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
mount_require lspci cmp diff

SYS=/sys/bus/pci
if [ -z "$(ls -A "$SYS/devices" 2>/dev/null)" ]; then
  echo "SKIP: no PCI devices under $SYS/devices"
  exit 77
fi

mount_start --backend=sysfs

# Same devices, same order.
diff <(ls "$SYS/devices") <(ls "$MNT/devices") >"$TMP/list.diff" \
  || fail "device lists differ:"$'\n'"$(cat "$TMP/list.diff")"

# lspci warns on stderr where libkmod has no data: compare stdout only.
n=0
for opts in "-vvv -xxxx" "-t" "-nn" "-k" "-D -vv" "-vvv -xxxx -nn"; do
  n=$((n + 1))
  # shellcheck disable=SC2086 # $opts is a list of options
  lspci $opts >"$TMP/sys.$n" 2>/dev/null || fail "lspci $opts over /sys exited $?"
  # shellcheck disable=SC2086
  as_nobody lspci -A linux-sysfs -O "sysfs.path=$MNT" $opts >"$TMP/mnt.$n" 2>/dev/null \
    || fail "lspci $opts over the mount (nobody) exited $?"
  [ -s "$TMP/sys.$n" ] || fail "lspci $opts printed nothing"
  cmp -s "$TMP/sys.$n" "$TMP/mnt.$n" \
    || fail "lspci $opts: nobody over the mount differs from root over /sys:"$'\n'"$(diff "$TMP/sys.$n" "$TMP/mnt.$n" | head -30)"
done
devices=$(ls "$SYS/devices" | wc -l)
lines=$(wc -l <"$TMP/sys.1")
echo "compared lspci over /sys and over the mount: $devices devices, $lines lines of -vvv -xxxx"

# Negative control: nobody over /sys sees less, so a difference would show.
as_nobody lspci -vvv -xxxx >"$TMP/nobody_sys" 2>/dev/null
if cmp -s "$TMP/sys.1" "$TMP/nobody_sys"; then
  fail "negative control: nobody's lspci over /sys matched root's; the comparison proves nothing here"
fi

# Nothing was refused or written: the daemon logged no denial or EBUSY.
if grep -E "denied|EBUSY|config write" "$TMP/daemon.log"; then
  fail "the daemon logged a refusal or a write during read-only use"
fi
mount_finish
