#!/bin/bash
# Tool test: the container recipe of the README, with stock tools (SPEC S1, S6).
# A view of two simulated devices owned by uid 100000 with config_read=header
# is mounted; in an `unshare -m` namespace its mountpoint is bind-mounted over
# /sys/bus/pci and plain `lspci -vvv` runs (a) as nobody and (b) as the
# container's root, a user namespace whose uid 0 is uid 100000 outside. Both
# list exactly the view's devices; the container's root (the view's uid) sees
# every capability, nobody sees the 64-byte header and `Capabilities: <access
# denied>`, as the kernel shows a non-root reader. Writes reach the daemon
# through the bind (reset as the container's root works, as nobody is
# refused). Control: lspci over the real /sys, outside any namespace, shows
# this machine's devices, not the view's. Then the CDI path: `pcifs cdi`
# prints a spec whose mount is applied here exactly as an engine would
# (rbind, then nosuid,nodev,noexec), with the same results.
# The real /sys/bus/pci is only read: every bind mount lives in a private
# mount namespace that ends with its command.
# Needs: PCIFS_BUILD_DIR (pcifs built), PCIFS_SOURCE_DIR, root, /dev/fuse,
# unshare, setpriv, lspci. Exit 77: skipped.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
mount_require lspci unshare setpriv nsenter mount
unshare --help | grep -q -- --map-user || { echo "SKIP: unshare has no --map-user (util-linux < 2.38)"; exit 77; }

VIEW_UID=100000
WANT="01:00.0 02:00.0"
PCI=/sys/bus/pci

# --- The view, mounted where it says (the CDI spec reads the same file).
TMP=$(mktemp -d)
MNT=$(mktemp -d)
chmod 755 "$TMP" "$MNT"
trap mount_cleanup EXIT
trap 'exit 143' TERM INT HUP
VIEW=$TMP/c1.json
cat >"$VIEW" <<EOF
{"name": "c1", "mountpoint": "$MNT", "devices": ["0000:01:00.0", "0000:02:00.0"],
 "uid": $VIEW_UID, "gid": $VIEW_UID, "config_read": "header"}
EOF
"$PCIFS" -f --view="$VIEW" >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
for ((i = 0; i < 400; i++)); do
  is_mounted && break
  daemon_alive || break
  sleep 0.05
done
is_mounted || { echo "FAIL: pcifs did not mount $MNT"; exit 1; }

# --- What a container engine does, as shell functions exported to the
# namespace's bash. engine SRC OPTS WHO CMD...: in the current (private) mount
# namespace, mount SRC over /sys/bus/pci (OPTS: "bind" for the plain recipe,
# or a CDI options list), then run CMD as WHO: nobody, or root = the
# container's root.
# shellcheck disable=SC2317 # called in the namespace's bash
engine() {
  local src=$1 opts=$2 who=$3 o flags=() extra=()
  shift 3
  for o in ${opts//,/ }; do
    case $o in
      bind) flags+=(--bind) ;;
      rbind) flags+=(--rbind) ;;
      *) extra+=("$o") ;;
    esac
  done
  # util-linux applies -o flags to a bind with a second, remount step, as
  # runc does.
  if ((${#extra[@]})); then
    mount "${flags[@]}" -o "$(IFS=,; echo "${extra[*]}")" "$src" /sys/bus/pci || return 125
  else
    mount "${flags[@]}" "$src" /sys/bus/pci || return 125
  fi
  case $who in
    nobody) runuser -u nobody -- "$@" ;;
    root) container_root "$@" ;;
  esac
}
# container_root CMD...: CMD in a user namespace where uid/gid 0 is the
# view's uid/gid outside, as a rootless engine maps it: the ids drop to the
# view's first, so unshare maps its own. Where unprivileged user namespaces
# are off, root writes the maps of a namespace itself and joins it (nsenter
# takes uid/gid 0 there).
# shellcheck disable=SC2317 # called in the namespace's bash
container_root() {
  if setpriv --reuid="$VIEW_UID" --regid="$VIEW_UID" --clear-groups \
    unshare --user --map-user=0 --map-group=0 true 2>/dev/null; then
    setpriv --reuid="$VIEW_UID" --regid="$VIEW_UID" --clear-groups \
      unshare --user --map-user=0 --map-group=0 "$@"
    return
  fi
  local holder i rc=125
  unshare --user sleep 600 &
  holder=$!
  for ((i = 0; i < 500; i++)); do
    [ "$(readlink "/proc/$holder/ns/user")" != "$(readlink "/proc/$$/ns/user")" ] && break
    sleep 0.01
  done
  if echo "0 $VIEW_UID 1" >"/proc/$holder/uid_map" && echo "0 $VIEW_UID 1" >"/proc/$holder/gid_map"; then
    nsenter --user --target="$holder" "$@"
    rc=$?
  fi
  kill "$holder"
  wait "$holder" 2>/dev/null
  return "$rc"
}
export -f engine container_root
export VIEW_UID
# in_ns SRC OPTS WHO CMD...: engine in a fresh private mount namespace.
in_ns() { unshare -m --propagation private bash -c 'engine "$@"' engine "$@"; }

bdfs() { grep -oE '^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]' "$1" | sort | tr '\n' ' ' | sed 's/ $//'; }
section() { awk -v bdf="$2" '$1 == bdf {p = 1} p && /^$/ {exit} p' "$1"; }

# check_views LABEL ROOT_FILE NOBODY_FILE: the results of (a) and (b).
check_views() {
  local label=$1 root=$2 nobody=$3 b s cap
  for f in "$root" "$nobody"; do
    [ "$(bdfs "$f")" = "$WANT" ] || fail "$label: $(basename "$f") lists '$(bdfs "$f")', expected '$WANT'"
  done
  grep -q 'access denied' "$root" && fail "$label: the container's root was denied:"$'\n'"$(grep -n 'access denied' "$root")"
  for b in $WANT; do
    s=$(section "$root" "$b")
    for cap in 'Power Management' 'MSI-X' 'Express \(v2\) Endpoint' 'Advanced Error Reporting' \
      'Data Object Exchange'; do
      grep -qE "^	Capabilities: \[[0-9a-f]+( v[0-9]+)?\] $cap" <<<"$s" \
        || fail "$label: $b: the container's root does not see '$cap'"
    done
    s=$(section "$nobody" "$b")
    # config_read=header: the 64-byte header decodes, the capabilities do not.
    grep -q '^	Region 0: Memory at' <<<"$s" || fail "$label: $b: nobody does not see the header"
    grep -q '^	Capabilities: <access denied>' <<<"$s" || fail "$label: $b: nobody is not limited to the header"
    grep -q '^	Capabilities: \[' <<<"$s" && fail "$label: $b: nobody sees capabilities beyond the header"
  done
}

# --- (a) and (b): the plain recipe.
in_ns "$MNT" bind nobody lspci -vvv >"$TMP/nobody.txt" 2>>"$TMP/lspci.err" \
  || fail "lspci as nobody in the namespace exited $?"
in_ns "$MNT" bind root sh -c 'id -u; stat -c %u /sys/bus/pci/devices/0000:01:00.0/config; lspci -vvv' \
  >"$TMP/root.all" 2>>"$TMP/lspci.err" || fail "lspci as the container's root exited $?"
ids=$(head -2 "$TMP/root.all" | tr '\n' ' ')
[ "$ids" = "0 0 " ] || fail "the container's root is '$ids' (uid, owner of config), expected '0 0 '"
tail -n +3 "$TMP/root.all" >"$TMP/root.txt"
check_views recipe "$TMP/root.txt" "$TMP/nobody.txt"

# The bind is read-write: the daemon decides each write (S6).
in_ns "$MNT" bind root sh -c 'echo 1 >/sys/bus/pci/devices/0000:01:00.0/reset' 2>>"$TMP/lspci.err" \
  || fail "reset as the container's root failed"
in_ns "$MNT" bind nobody sh -c 'echo 1 >/sys/bus/pci/devices/0000:01:00.0/reset' 2>/dev/null \
  && fail "reset as nobody succeeded"

# Control: outside the namespace lspci reads this machine's /sys, not the view.
lspci >"$TMP/real.txt" 2>/dev/null
[ "$(bdfs "$TMP/real.txt")" != "$WANT" ] || fail "control: the real lspci lists the view's devices"
grep -q "Device 10f0" "$TMP/real.txt" && fail "control: the real lspci shows the simulated CXL device"
grep -q " $PCI " /proc/self/mountinfo && fail "a bind mount over $PCI leaked out of its namespace"

# --- The CDI path: the spec's mount, applied as an engine applies it.
"$PCIFS" cdi --view "$VIEW" >"$TMP/cdi.json" 2>"$TMP/cdi.err" || fail "pcifs cdi exited $?: $(cat "$TMP/cdi.err")"
if command -v python3 >/dev/null; then
  # hostPath, containerPath and options of device c1, one per line.
  python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
# The lowest version its fields need: a typed bind mount (0.4.0); podman 4.3 knows up to 0.5.0.
assert s["cdiVersion"] == "0.4.0" and s["kind"] == "pcifs.io/view", s
m = [d for d in s["devices"] if d["name"] == "c1"][0]["containerEdits"]["mounts"][0]
print(m["hostPath"]); print(m["containerPath"]); print(",".join(m["options"]))
' "$TMP/cdi.json" >"$TMP/cdi.txt" || fail "the CDI spec does not parse:"$'\n'"$(cat "$TMP/cdi.json")"
  { read -r host; read -r cpath; read -r opts; } <"$TMP/cdi.txt"
  [ "$host" = "$MNT" ] || fail "CDI hostPath is '$host', expected $MNT"
  [ "$cpath" = "$PCI" ] || fail "CDI containerPath is '$cpath', expected $PCI"
  in_ns "$host" "$opts" nobody lspci -vvv >"$TMP/cdi-nobody.txt" 2>>"$TMP/lspci.err" \
    || fail "CDI: lspci as nobody exited $?"
  # shellcheck disable=SC2016 # $5, $6 are awk's
  in_ns "$host" "$opts" root sh -c 'awk '\''$5 == "/sys/bus/pci" {print $6}'\'' /proc/self/mountinfo; lspci -vvv' \
    >"$TMP/cdi-root.all" 2>>"$TMP/lspci.err" || fail "CDI: lspci as the container's root exited $?"
  mopts=$(head -1 "$TMP/cdi-root.all")
  for o in rw nosuid nodev noexec; do
    [[ ,$mopts, == *,$o,* ]] || fail "CDI: the mount's options are '$mopts', without $o"
  done
  tail -n +2 "$TMP/cdi-root.all" >"$TMP/cdi-root.txt"
  check_views cdi "$TMP/cdi-root.txt" "$TMP/cdi-nobody.txt"
else
  echo "note: no python3: the CDI spec was generated but not applied"
fi

echo "---- lspci -vvv as nobody, 01:00.0 ----"
section "$TMP/nobody.txt" 01:00.0
mount_finish
