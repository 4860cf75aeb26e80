#!/bin/bash
# Tool test: views as CDI devices in real podman containers (SPEC S6, S16).
# One daemon serves two views of the simulated devices (view A: 01:00.0 and
# 02:00.0, uid 100000, config_read=header; view B: 00:00.0); `pcifs cdi`
# writes their spec into /var/run/cdi (podman 4.3 reads only /etc/cdi and
# /var/run/cdi: containers.conf's cdi_spec_dirs came with podman 4.5), under
# a file and device names unique to this run. Then, with podman + runc:
#   a. `--device pcifs.io/view=A` alone: lspci -vvv lists exactly A's devices,
#      every capability decoded (the container's root is the host's root);
#   b. with --uidmap/--gidmap putting the container's root on the view's uid,
#      setpci writes COMMAND and reads it back; as --user 1000 (uid 101000
#      outside) the write is refused and the value stays;
#   d. both views in one container: it does not start, with the hook's
#      message (two views at /sys/bus/pci);
#   c. fail closed: after the daemon stops cleanly (its mountpoints stay, as
#      empty directories) the container does not start, with the hook's
#      message; negative control: the same device without the hook starts
#      with an empty /sys/bus/pci, which is what the hook prevents. After a
#      daemon that died (kill -9: a dead FUSE mount) it does not start either.
#      And the hook by itself gives up on a daemon that does not answer.
# What podman printed at each step goes to the log.
# Needs: PCIFS_BUILD_DIR (pcifs built), PCIFS_SOURCE_DIR, root, /dev/fuse,
# podman, runc, python3. Exit 77: skipped.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
# shellcheck source=podman_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/podman_lib.sh"
mount_require lspci python3 timeout
podman_require

VIEW_UID=100000
WANT_A="01:00.0 02:00.0"
WANT_B="00:00.0"
NAME_A=$PODMAN_TAG-a # unique to this run: another build's run may be going on
NAME_B=$PODMAN_TAG-b
CDI_FILE=/var/run/cdi/$PODMAN_TAG.json
MNT_B=
EXPECT_DAEMON=running # running | stopped: what the end of the test expects

# shellcheck disable=SC2317 # the EXIT trap calls it
cleanup() {
  local rc=$? m i
  trap - EXIT
  cd /
  podman_cleanup
  rm -f "$CDI_FILE"
  if [ -n "$DAEMON_PID" ] && daemon_alive; then
    [ "$EXPECT_DAEMON" = running ] || { echo "FAIL: the daemon is still running"; rc=1; }
    kill -TERM "$DAEMON_PID"
    for ((i = 0; i < 200; i++)); do daemon_alive || break; sleep 0.05; done
    daemon_alive && { echo "FAIL: the daemon did not stop on SIGTERM"; kill -KILL "$DAEMON_PID"; rc=1; }
  elif [ "$EXPECT_DAEMON" = running ] && [ -n "$DAEMON_PID" ]; then
    echo "FAIL: the daemon died during the test"
    rc=1
  fi
  [ -n "$DAEMON_PID" ] && wait "$DAEMON_PID" 2>/dev/null
  for m in "$MNT" "$MNT_B"; do
    [ -n "$m" ] || continue
    grep -qF " $m " /proc/mounts && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m"; }
    rmdir "$m" 2>/dev/null
  done
  [ "$rc" = 0 ] || [ "$rc" = 77 ] || print_log
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}

TMP=$(mktemp -d)
MNT=$(mktemp -d)
MNT_B=$(mktemp -d)
chmod 755 "$TMP" "$MNT" "$MNT_B"
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

podman_image
echo "image: $IMAGE"

cat >"$TMP/a.json" <<EOF
{"name": "$NAME_A", "mountpoint": "$MNT", "devices": ["0000:01:00.0", "0000:02:00.0"],
 "uid": $VIEW_UID, "gid": $VIEW_UID, "config_read": "header"}
EOF
cat >"$TMP/b.json" <<EOF
{"name": "$NAME_B", "mountpoint": "$MNT_B", "devices": ["0000:00:00.0"],
 "uid": $VIEW_UID, "gid": $VIEW_UID}
EOF

mounted() { case $(stat -f -c %T "$1" 2>/dev/null) in fuse | fuseblk) return 0 ;; esac; return 1; }
start_daemon() {
  "$PCIFS" -f --view="$TMP/a.json" --view="$TMP/b.json" >>"$TMP/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for ((i = 0; i < 400; i++)); do
    mounted "$MNT" && mounted "$MNT_B" && return 0
    daemon_alive || break
    sleep 0.05
  done
  echo "FAIL: pcifs did not mount $MNT and $MNT_B"
  exit 1
}
start_daemon

# --- The spec, from today's `pcifs cdi`, plus a negative-control device
# A-nohook: A's mount without the hook.
mkdir -p /var/run/cdi
"$PCIFS" cdi --view "$TMP/a.json" --view "$TMP/b.json" >"$TMP/cdi.json" 2>"$TMP/cdi.err" \
  || { echo "FAIL: pcifs cdi exited $?: $(cat "$TMP/cdi.err")"; exit 1; }
python3 - "$TMP/cdi.json" "$NAME_A" "$(readlink -f "$PCIFS")" >"$CDI_FILE.tmp" <<'EOF' || fail "the CDI spec is not what podman needs"
import copy, json, sys
s = json.load(open(sys.argv[1]))
# podman 4.3 knows CDI 0.1.0 to 0.5.0: the spec must not claim more.
assert s["cdiVersion"] in ("0.3.0", "0.4.0", "0.5.0"), s["cdiVersion"]
for d in s["devices"]:
    h = d["containerEdits"]["hooks"]
    assert len(h) == 1 and h[0]["hookName"] == "createRuntime", h
    assert h[0]["path"] == sys.argv[3], (h[0]["path"], sys.argv[3])
    assert h[0]["args"] == ["pcifs", "cdi-hook", "--view", d["name"],
                            "--container-path", "/sys/bus/pci"], h[0]["args"]
a = copy.deepcopy([d for d in s["devices"] if d["name"] == sys.argv[2]][0])
a["name"] += "-nohook"
del a["containerEdits"]["hooks"]
s["devices"].append(a)
print(json.dumps(s, indent=2))
EOF
mv "$CDI_FILE.tmp" "$CDI_FILE" # engines read *.json only: never a half-written one
echo "---- $CDI_FILE ----"
cat "$CDI_FILE"

bdfs() { grep -oE '^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]' "$1" | sort | tr '\n' ' ' | sed 's/ $//'; }
section() { awk -v bdf="$2" '$1 == bdf {p = 1} p && /^$/ {exit} p' "$1"; }
DEV_A=(--device "pcifs.io/view=$NAME_A")
DEV_B=(--device "pcifs.io/view=$NAME_B")
MAP=(--uidmap "0:$VIEW_UID:65536" --gidmap "0:$VIEW_UID:65536")

# --- a. lspci -vvv in a container with view A.
step "a. lspci in a container with view A" podman_run "${DEV_A[@]}" "$IMAGE" lspci -vvv
[ "$STEP_RC" = 0 ] || fail "a: the container exited $STEP_RC"
echo "$STEP_OUT" >"$TMP/a.txt"
[ "$(bdfs "$TMP/a.txt")" = "$WANT_A" ] || fail "a: lspci lists '$(bdfs "$TMP/a.txt")', expected '$WANT_A'"
grep -q 'access denied' "$TMP/a.txt" && fail "a: the container's root was denied capabilities"
for b in $WANT_A; do
  s=$(section "$TMP/a.txt" "$b")
  for cap in 'Power Management' 'MSI-X' 'Express \(v2\) Endpoint' 'Advanced Error Reporting'; do
    grep -qE "^	Capabilities: \[[0-9a-f]+( v[0-9]+)?\] $cap" <<<"$s" \
      || fail "a: $b: no '$cap' in:"$'\n'"$s"
  done
done
step "a. view B alone" podman_run "${DEV_B[@]}" "$IMAGE" lspci
[ "$STEP_RC" = 0 ] || fail "a: the container with view B exited $STEP_RC"
echo "$STEP_OUT" >"$TMP/b.txt"
[ "$(bdfs "$TMP/b.txt")" = "$WANT_B" ] || fail "a: view B lists '$(bdfs "$TMP/b.txt")', expected '$WANT_B'"

# --- b. The view's uid is the container's root: it writes; uid 1000 does not.
SP="setpci -s 01:00.0"
cmd0=$(setpci -A linux-sysfs -O "sysfs.path=$MNT" -s 01:00.0 COMMAND)
[ -n "$cmd0" ] || fail "b: cannot read COMMAND on the host"
step "b. setpci as the container's root (uid $VIEW_UID outside)" \
  podman_run "${DEV_A[@]}" "${MAP[@]}" "$IMAGE" \
  sh -c "id -u; stat -c %u /sys/bus/pci/devices/0000:01:00.0/config; $SP COMMAND=0x0507 COMMAND"
[ "$STEP_RC" = 0 ] || fail "b: the container exited $STEP_RC"
[ "$(echo "$STEP_OUT" | tr '\n' ' ')" = "0 0 0507 " ] \
  || fail "b: expected uid 0, config owned by 0, COMMAND 0507; got: $STEP_OUT"
# The container's claim ended with it: the hand-over (README "Security")
# leaves the device at its baseline, Bus Master off, for whoever comes next.
clean=$(printf %04x $((0x$cmd0 & ~4)))
for ((i = 0; i < 400; i++)); do [ "$(cat "$MNT/devices/0000:01:00.0/owner")" = none ] && break; sleep 0.05; done
[ "$(setpci -A linux-sysfs -O "sysfs.path=$MNT" -s 01:00.0 COMMAND)" = "$clean" ] \
  || fail "b: the host reads COMMAND '$(setpci -A linux-sysfs -O "sysfs.path=$MNT" -s 01:00.0 COMMAND)' after the container, expected $clean"
step "b. setpci as uid 1000 in the container (uid $((VIEW_UID + 1000)) outside)" \
  podman_run "${DEV_A[@]}" "${MAP[@]}" --user 1000 "$IMAGE" \
  sh -c "id -u; $SP COMMAND=0x0000; $SP COMMAND"
[ "$STEP_RC" = 0 ] || fail "b: the container as uid 1000 exited $STEP_RC"
# pcilib only warns when a write fails (setpci still exits 0).
grep -q 'Cannot open /sys/bus/pci/devices/0000:01:00.0/config' <<<"$STEP_ERR" \
  || fail "b: uid 1000's write was not refused"
[ "$(tail -1 <<<"$STEP_OUT")" = "$clean" ] || fail "b: uid 1000 reads COMMAND '$(tail -1 <<<"$STEP_OUT")', expected $clean"

# --- d. Two views in one container: refused by the hook, with its message.
step "d. views A and B in one container" podman_run "${DEV_A[@]}" "${DEV_B[@]}" "$IMAGE" ls /sys/bus/pci/devices
[ "$STEP_RC" != 0 ] || fail "d: a container with two views started"
want="pcifs: container has 2 pcifs views at /sys/bus/pci ($NAME_A, $NAME_B), and only the last would be mounted"
grep -qF "$want" <<<"$STEP_ERR" || fail "d: podman's error does not carry the hook's message '$want...'"

# --- c. Fail closed. First a clean stop: SIGTERM unmounts and exits 0.
EXPECT_DAEMON=stopped
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
status=$?
[ "$status" = 0 ] || fail "c: the daemon exited $status on SIGTERM"
mounted "$MNT" && fail "c: $MNT is still mounted after a clean stop"
# The case under test is the mountpoint left as an empty directory, as a
# daemon leaves a mountpoint it did not create, or as a service unit
# recreates it (pcifs@.service makes it before starting the daemon).
[ -d "$MNT" ] || { echo "note: the clean stop removed $MNT; made again"; mkdir -m 755 "$MNT"; }
step "c. view A after the daemon stopped cleanly" podman_run "${DEV_A[@]}" "$IMAGE" ls /sys/bus/pci/devices
[ "$STEP_RC" != 0 ] || fail "c: a container started with view A not served"
grep -qF "pcifs: view $NAME_A is not served ($MNT is not a FUSE mount" <<<"$STEP_ERR" \
  || fail "c: podman's error does not carry the hook's message"
# Negative control: without the hook the same mount starts, and the
# container sees an empty /sys/bus/pci.
step "c. control: view A without the hook, daemon stopped" \
  podman_run --device "pcifs.io/view=$NAME_A-nohook" "$IMAGE" ls -A /sys/bus/pci
if [ "$STEP_RC" != 0 ] || [ -n "$STEP_OUT" ]; then
  fail "c: control: without the hook the container should start with an empty /sys/bus/pci"
fi

# A daemon that dies leaves a dead FUSE mount behind.
: >"$TMP/daemon.log"
EXPECT_DAEMON=running
start_daemon
step "c. view A, daemon started again" podman_run "${DEV_A[@]}" "$IMAGE" ls /sys/bus/pci/devices
if [ "$STEP_RC" != 0 ] || [ "$(echo "$STEP_OUT" | tr '\n' ' ')" != "0000:01:00.0 0000:02:00.0 " ]; then
  fail "c: the container does not start with view A served again"
fi
# A daemon that is alive but does not answer (here: stopped). runc itself
# blocks on such a mount while it binds it (runc init waits in the kernel's
# FUSE request_wait_answer until the daemon answers), before any hook runs, so
# this is the hook alone, run by hand as runc runs it: it must give up within
# its bound and leave no process behind.
mkdir "$TMP/bundle"
printf '{"mounts": [{"destination": "/sys/bus/pci", "source": "%s", "type": "bind"}]}\n' "$MNT" \
  >"$TMP/bundle/config.json"
hook() { echo "{\"bundle\": \"$TMP/bundle\", \"pid\": 1}" | timeout -k 5 30 "$PCIFS" cdi-hook --view "$NAME_A"; }
hook 2>"$TMP/hook.err" || fail "c: the hook refuses a live view: $(cat "$TMP/hook.err")"
kill -STOP "$DAEMON_PID"
hook 2>"$TMP/hook.err"
rc=$?
kill -CONT "$DAEMON_PID"
echo "---- c. pcifs cdi-hook by hand, daemon stopped (SIGSTOP): exit status $rc"
cat "$TMP/hook.err"
[ "$rc" = 1 ] || fail "c: the hook on a stopped daemon exited $rc, expected 1"
grep -qF "pcifs: view $NAME_A is not served ($MNT does not answer within" "$TMP/hook.err" \
  || fail "c: the hook's message on a stopped daemon"
# Bounded wait, not a sleep: on a loaded machine a process that is ending may
# still be listed for a moment; one that stays for 10 s outlived the hook.
for _ in $(seq 200); do
  pgrep -f -- "cdi-hook --view $NAME_A" >/dev/null || break
  sleep 0.05
done
pgrep -f -- "cdi-hook --view $NAME_A" >/dev/null && fail "c: a hook process outlived the hook"

EXPECT_DAEMON=stopped
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
ls "$MNT" >/dev/null 2>"$TMP/dead.err" && fail "c: the mount of a killed daemon still answers"
echo "host: ls $MNT after kill -9: $(cat "$TMP/dead.err")"
step "c. view A after kill -9 of the daemon" podman_run "${DEV_A[@]}" "$IMAGE" ls /sys/bus/pci/devices
[ "$STEP_RC" != 0 ] || fail "c: a container started with view A's daemon dead"
[ "$STEP_RC" != 124 ] || fail "c: podman hung on the dead mount"
# The hook's ENOTCONN (runc binds the dead mount without touching its daemon).
grep -qF "pcifs: view $NAME_A is not served ($MNT: Transport endpoint is not connected)" \
  <<<"$STEP_ERR" || fail "c: podman's error does not carry the hook's message (ENOTCONN)"
for m in "$MNT" "$MNT_B"; do fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m"; done

if [ "$FAILED" = 0 ]; then
  echo "PASS"
  exit 0
fi
exit 1
