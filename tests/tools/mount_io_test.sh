#!/bin/bash
# Tool test of the mount with the plainest tools (SPEC S3, S4, S5, S6.1, S7,
# S9, S13): cat, dd at several block sizes and xxd on the files of the
# simulated 0000:01:00.0, as root and as nobody. A user must get the same
# bytes whichever way they read, sysfs-formatted text, the BAR register map of
# the simulator, and the default view's split between everyone (config reads)
# and root (BARs, config writes).
# Needs: PCIFS_BUILD_DIR (pcifs built), PCIFS_SOURCE_DIR, root, /dev/fuse.
# Exit 77: skipped.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
mount_require dd xxd stat cmp

# hex FILE OFFSET LENGTH: the bytes as one lowercase hex string.
hex() { xxd -p -s "$2" -l "$3" "$1" | tr -d '\n'; }
# le HEX: a little-endian byte string as a number's hex digits ("361b" -> "1b36").
le() { local h=$1 out=; while [ -n "$h" ]; do out=${h:0:2}$out; h=${h:2}; done; echo "$out"; }

mount_start
cd "$DEV" || { fail "no $DEV"; mount_finish; }

# --- S4: config is 4096 bytes and reads the same at any block size.
cat config >"$TMP/config.cat" || fail "cat config exited $?"
size=$(stat -c %s "$TMP/config.cat")
[ "$size" = 4096 ] || fail "cat config gave $size bytes, expected 4096"
[ "$(stat -c %s config)" = 4096 ] || fail "config st_size is $(stat -c %s config), expected 4096"
for spec in 1:4096 2:2048 4:1024 1M:1; do
  bs=${spec%:*} count=${spec#*:}
  dd if=config of="$TMP/config.$bs" bs="$bs" count="$count" status=none || fail "dd bs=$bs exited $?"
  cmp -s "$TMP/config.cat" "$TMP/config.$bs" \
    || fail "dd bs=$bs of config differs from cat: $(cmp "$TMP/config.cat" "$TMP/config.$bs" 2>&1)"
done
# Reads at an odd offset and length (dd skip in 1-byte blocks) match too.
dd if=config bs=1 skip=257 count=7 status=none | xxd -p >"$TMP/odd"
[ "$(cat "$TMP/odd")" = "$(hex "$TMP/config.cat" 257 7)" ] || fail "config bytes 257..263 differ"

# The header decodes to what the attribute files say (a non-vacuous check:
# the bytes are the device's, not zeros).
[ "0x$(le "$(hex config 0 2)")" = "$(cat vendor)" ] || fail "config vendor $(hex config 0 2) vs vendor $(cat vendor)"
[ "0x$(le "$(hex config 2 2)")" = "$(cat device)" ] || fail "config device $(hex config 2 2) vs device $(cat device)"
[ "0x$(le "$(hex config 9 3)")" = "$(cat class)" ] || fail "config class $(hex config 9 3) vs class $(cat class)"
[ "0x$(hex config 8 1)" = "$(cat revision)" ] || fail "config revision vs revision $(cat revision)"
[ "0x$(le "$(hex config 44 2)")" = "$(cat subsystem_vendor)" ] || fail "config subsystem vendor differs"
[ "0x$(le "$(hex config 46 2)")" = "$(cat subsystem_device)" ] || fail "config subsystem device differs"
[ "$(hex config 0 4)" = 361bf010 ] || fail "config starts $(hex config 0 4), expected 361bf010"
[ "$(hex config 52 1)" != 00 ] || fail "config has no capability pointer"

# --- S3: text attributes exactly as sysfs formats them, newline included.
check_text() {
  local f=$1 want=$2 got
  got=$(xxd -p "$f" | tr -d '\n')
  [ "$got" = "$(printf '%s\n' "$want" | xxd -p | tr -d '\n')" ] || fail "$f reads $(od -c <"$f" | head -2)"
}
check_text vendor 0x1b36
check_text device 0x10f0
check_text class 0x050210
check_text revision 0x01
check_text subsystem_vendor 0x1b36
check_text subsystem_device 0x0001
check_text irq 11
check_text power_state D0
check_text owner none
for f in numa_node resource; do
  [ "$(tail -c 1 "$f" | xxd -p)" = 0a ] || fail "$f lacks a trailing newline"
done
# sysfs gives text attributes st_size 4096; a short read must not change it.
for f in vendor resource power_state owner; do
  [ "$(stat -c %s "$f")" = 4096 ] || fail "$f st_size is $(stat -c %s "$f") after reads, expected 4096"
done
# resource line 3 (BAR2) is 64 KiB of 32-bit memory.
read -r start end _ < <(sed -n 3p resource)
[ $((end - start + 1)) = 65536 ] || fail "resource line 3 spans $((end - start + 1)) bytes, expected 65536"

# --- S5: the BAR register map through dd. ID at 0x40 = 0x50434946.
[ "$(stat -c %s resource2)" = 65536 ] || fail "resource2 st_size $(stat -c %s resource2)"
id4=$(dd if=resource2 bs=4 skip=16 count=1 status=none | xxd -p)
[ "$id4" = 46494350 ] || fail "resource2 ID (bs=4) reads '$id4', expected 46494350"
id2=$(dd if=resource2 bs=2 skip=32 count=2 status=none | xxd -p)
[ "$id2" = 46494350 ] || fail "resource2 ID (bs=2) reads '$id2', expected 46494350"
id1=$(dd if=resource2 bs=1 skip=64 count=4 status=none | xxd -p)
[ "$id1" = 46494350 ] || fail "resource2 ID (bs=1) reads '$id1', expected 46494350"
id8=$(dd if=resource2 bs=8 skip=8 count=1 status=none | xxd -p)
[ "${id8:0:8}" = 46494350 ] || fail "resource2 ID (bs=8) reads '$id8'"

# SCRATCH0 (0x00) and SCRATCH1 (0x08) are read/write. The shell holds the
# claim (S11: per process) on fd 3, reopened at offset 0 for each access, and
# each dd works on the inherited fd: what one wrote the next reads back. When
# the shell closes it the claim ends, and the hand-over (README "Security")
# clears the scratch registers before anyone else gets the device.
exec 3<>resource2
before=$(dd bs=4 count=1 status=none <&3 | xxd -p)
[ "$before" = 00000000 ] || fail "SCRATCH0 starts as '$before', expected 00000000"
exec 3<>resource2
printf '\x78\x56\x34\x12' | dd bs=4 count=1 status=none >&3 || fail "dd write of SCRATCH0 exited $?"
exec 3<>resource2
got=$(dd bs=4 count=1 status=none <&3 | xxd -p)
[ "$got" = 78563412 ] || fail "SCRATCH0 reads back '$got' after writing 78563412"
exec 3<>resource2
printf '\x01\x02\x03\x04\x05\x06\x07\x08' | dd bs=8 seek=1 count=1 status=none >&3 \
  || fail "dd write of SCRATCH1 exited $?"
exec 3<>resource2
got=$(dd bs=8 skip=1 count=1 status=none <&3 | xxd -p)
[ "$got" = 0102030405060708 ] || fail "SCRATCH1 reads back '$got'"
exec 3<>resource2
got=$(dd bs=4 count=1 status=none <&3 | xxd -p)
[ "$got" = 78563412 ] || fail "SCRATCH0 changed to '$got' by a write of SCRATCH1"
exec 3<&-
for ((i = 0; i < 400; i++)); do [ "$(cat owner)" = none ] && break; sleep 0.05; done
[ "$(cat owner)" = none ] || fail "owner is '$(cat owner)' after the shell closed its fd"
got=$(dd if=resource2 bs=4 count=1 status=none | xxd -p)
[ "$got" = 00000000 ] || fail "SCRATCH0 reads '$got' after the hand-over, expected 00000000"
for ((i = 0; i < 400; i++)); do [ "$(cat owner)" = none ] && break; sleep 0.05; done

# Bulk: one 1 MiB read of resource0 returns the whole BAR in one record.
dd if=resource0 of="$TMP/bar0" bs=1M count=1 2>"$TMP/dd.err" || fail "dd bs=1M exited $?"
[ "$(stat -c %s "$TMP/bar0")" = 1048576 ] || fail "dd bs=1M count=1 gave $(stat -c %s "$TMP/bar0") bytes"
grep -q '^1+0 records in' "$TMP/dd.err" || fail "1 MiB read was split: $(head -1 "$TMP/dd.err")"
[ "$(hex "$TMP/bar0" 64 4)" = 46494350 ] || fail "the 1 MiB read does not hold the ID at 0x40"
# At and past the end: 0 bytes, no error (S5).
n=$(dd if=resource0 bs=1M skip=1 count=1 status=none | wc -c)
[ "$n" = 0 ] || fail "a read at the end of resource0 returned $n bytes"
n=$(dd if=resource2 bs=4 skip=16384 count=1 status=none | wc -c)
[ "$n" = 0 ] || fail "a read at the end of resource2 returned $n bytes"
n=$(dd if=resource2 bs=4 skip=16383 count=2 status=none | wc -c)
[ "$n" = 4 ] || fail "a read across the end of resource2 returned $n bytes, expected 4"

# --- S7: the ROM. st_size is the ROM BAR size (lspci shows [size=64K]);
# reads end at the end of the last image, found by walking the PCIR headers.
rom_st=$(stat -c %s rom)
[ "$rom_st" = 65536 ] || fail "rom st_size $rom_st, expected the ROM BAR size 65536"
cat rom >"$TMP/rom" || fail "cat rom exited $?"
[ "$(hex "$TMP/rom" 0 2)" = 55aa ] || fail "rom starts $(hex "$TMP/rom" 0 2), expected 55aa"
off=0 images=0
while [ "$images" -lt 8 ] && [ "$(hex "$TMP/rom" $off 2)" = 55aa ]; do
  pcir=$((off + 0x$(le "$(hex "$TMP/rom" $((off + 0x18)) 2)")))
  len=$((0x$(le "$(hex "$TMP/rom" $((pcir + 0x10)) 2)") * 512))
  last=$((0x$(hex "$TMP/rom" $((pcir + 0x15)) 1) & 0x80))
  off=$((off + len)) images=$((images + 1))
  [ "$last" = 0 ] || break
done
[ "$images" = 2 ] || fail "rom holds $images images, expected 2"
[ "$(stat -c %s "$TMP/rom")" = "$off" ] \
  || fail "cat rom gave $(stat -c %s "$TMP/rom") bytes, the images end at $off"
[ "$(stat -c %s rom)" = "$rom_st" ] \
  || fail "S3: rom st_size changed from $rom_st to $(stat -c %s rom) after a read"
cmp -s "$TMP/rom" <(dd if=rom bs=512 status=none) || fail "rom reads differ between cat and dd bs=512"
printf 'x' | dd of=rom conv=notrunc status=none 2>/dev/null && fail "writing rom succeeded"

# --- S6.1 as nobody: full config, but no BARs and no config writes.
cat config >"$TMP/config.cat" || fail "cat config exited $?"  # after the hand-overs above
as_nobody cat config >"$TMP/config.nobody" || fail "cat config as nobody exited $?"
cmp -s "$TMP/config.cat" "$TMP/config.nobody" \
  || fail "config as nobody differs from root's: $(cmp "$TMP/config.cat" "$TMP/config.nobody" 2>&1)"
as_nobody dd if=config bs=4 count=1024 status=none | cmp -s "$TMP/config.cat" - \
  || fail "dd bs=4 of config as nobody differs from root's"
# Negative control: the nobody runs really are unprivileged.
if as_nobody dd if=resource2 bs=4 count=1 status=none >/dev/null 2>"$TMP/err"; then
  fail "nobody read resource2"
fi
grep -q 'Permission denied' "$TMP/err" || fail "nobody reading resource2: $(cat "$TMP/err")"
if printf '\x00\x00' | as_nobody dd of=config bs=2 seek=2 conv=notrunc status=none 2>"$TMP/err"; then
  fail "nobody wrote config"
fi
grep -q 'Permission denied' "$TMP/err" || fail "nobody writing config: $(cat "$TMP/err")"
cmp -s "$TMP/config.cat" config || fail "config changed after nobody's refused write"
as_nobody cat power_state | grep -qx D0 || fail "power_state as nobody is not D0"

mount_finish
