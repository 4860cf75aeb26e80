#!/bin/bash
# Tool test: views added and removed at runtime, used by real podman
# containers (SPEC S16, S12, S11). One host daemon (`pcifs --control`) writes
# each view's CDI spec into /var/run/cdi; then, with podman + runc:
#   1. `pcifs view add` A (01:00.0 and 02:00.0, uid 100000): a container with
#      `--device pcifs.io/view=A` lists exactly A's devices with lspci -vvv,
#      every capability decoded, and not the host bridge;
#   2. with --uidmap/--gidmap putting the container's root on the view's uid,
#      setpci writes COMMAND and reads it back; as --user 1000 it is refused;
#   3. revocation while containers run. Container PA (view A) holds
#      02:00.0/resource0 open read-write (a claim) and mapped (bar_probe.c,
#      built here with `cc -static` and bind-mounted in); container PB (view B:
#      02:00.0 alone, the same uid) gets EBUSY opening it (the negative
#      control). Then `pcifs view rm A` while PA runs: PA's lspci fails, its
#      pread on the open fd gets ENODEV, its mapping SIGBUS; PB can now claim
#      resource0; and a new container with view A does not start (its spec is
#      gone);
#   4. fail closed after a clean stop: view C works in a container (control);
#      after SIGTERM the daemon has exited 0, removed C's spec and directory,
#      and a container with view C does not start.
# Everything is named after this run (PODMAN_TAG): CDI device names are global
# in /var/run/cdi, and another build's copy of this test may run at once.
# Every wait is a poll with a generous deadline; nothing sleeps to synchronise.
# What podman printed at each step goes to the log.
# Needs: PCIFS_BUILD_DIR (pcifs built), PCIFS_SOURCE_DIR, root, /dev/fuse,
# podman, runc, cc with a static libc. Exit 77: skipped.
set -u
# shellcheck source=mount_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/mount_lib.sh"
# shellcheck source=podman_lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/podman_lib.sh"
mount_require lspci setpci timeout
command -v cc >/dev/null || { echo "SKIP: no C compiler (cc) to build tests/tools/bar_probe.c"; exit 77; }
podman_require

VIEW_UID=100000
NAME_A=$PODMAN_TAG-a # unique to this run: CDI names are global
NAME_B=$PODMAN_TAG-b
NAME_C=$PODMAN_TAG-c
CDI_DIR=/var/run/cdi # podman 4.3 reads only /etc/cdi and /var/run/cdi
PA=$PODMAN_TAG-pa    # the detached containers of step 3
PB=$PODMAN_TAG-pb
RES=/sys/bus/pci/devices/0000:02:00.0/resource0 # in the containers
EXPECT_DAEMON=running                           # running | stopped: what the end expects
T0=$SECONDS

spec_of() { echo "$CDI_DIR/pcifs.io-view_$1.json"; }

# shellcheck disable=SC2317 # the EXIT trap calls it
cleanup() {
  local rc=$? i m n
  trap - EXIT
  cd /
  podman_cleanup
  if [ -n "$DAEMON_PID" ] && daemon_alive; then
    [ "$EXPECT_DAEMON" = running ] || { echo "FAIL: the daemon is still running"; rc=1; }
    kill -TERM "$DAEMON_PID"
    for ((i = 0; i < 400; i++)); do daemon_alive || break; sleep 0.05; done
    daemon_alive && { echo "FAIL: the daemon did not stop on SIGTERM"; kill -KILL "$DAEMON_PID"; rc=1; }
  elif [ "$EXPECT_DAEMON" = running ] && [ -n "$DAEMON_PID" ]; then
    echo "FAIL: the daemon died during the test"
    rc=1
  fi
  [ -n "$DAEMON_PID" ] && wait "$DAEMON_PID" 2>/dev/null
  # Specs a clean stop would have removed (after a failure it may not have).
  for n in "$NAME_A" "$NAME_B" "$NAME_C"; do rm -f "$(spec_of "$n")"; done
  if [ -n "$TMP" ]; then
    # /proc/mounts escapes spaces; mktemp's paths have none.
    while read -r _ m _; do
      case $m in "$TMP"/*) fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" ;; esac
    done </proc/mounts
  fi
  [ "$rc" = 0 ] || [ "$rc" = 77 ] || print_log
  if [ -n "$TMP" ]; then
    if grep -qF " $TMP/" /proc/mounts; then
      echo "FAIL: mounts left under $TMP: kept"
      rc=1
    else
      rm -rf "$TMP"
    fi
  fi
  echo "($((SECONDS - T0)) s)"
  exit "$rc"
}

TMP=$(mktemp -d)
chmod 755 "$TMP"
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

# --- The probe: a static binary, since the image has no libraries of its own.
mkdir -m 755 "$TMP/bin"
echo 'int main(void) { return 0; }' >"$TMP/empty.c"
if ! cc -static -o "$TMP/bin/empty" "$TMP/empty.c" 2>"$TMP/cc.err"; then
  echo "SKIP: cc cannot link a static program (no static libc: libc6-dev): $(head -3 "$TMP/cc.err")"
  exit 77
fi
cc -static -O2 -Wall -Wextra -o "$TMP/bin/bar_probe" "$SRC/tests/tools/bar_probe.c" 2>"$TMP/cc.err" \
  || { echo "FAIL: cannot build bar_probe.c: $(cat "$TMP/cc.err")"; exit 1; }
chmod 755 "$TMP/bin/bar_probe"
PROBE=(-v "$TMP/bin/bar_probe:/probe:ro")

podman_image
echo "image: $IMAGE"

# --- The host daemon: state and views in $TMP, specs in /var/run/cdi.
SOCK=$TMP/control.sock
VIEWS=$TMP/views
view() { timeout -k 5 60 "$PCIFS" view "$@" --control="$SOCK"; }
"$PCIFS" -f --control="$SOCK" --state-dir="$TMP/state" --cdi-dir="$CDI_DIR" \
  --view-root="$VIEWS" --lock-dir=none >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
end=$((SECONDS + 60))
until view ls >/dev/null 2>&1; do
  daemon_alive || { echo "FAIL: the daemon exited at start"; exit 1; }
  [ "$SECONDS" -lt "$end" ] || { echo "FAIL: the control socket did not answer within 60 s"; exit 1; }
  sleep 0.05
done

# view_add NAME JSON-BODY: `pcifs view add`, checked and logged.
view_add() {
  local name=$1 out rc
  echo "{\"name\": \"$name\", $2}" >"$TMP/$name.json"
  echo "---- pcifs view add $TMP/$name.json: $(cat "$TMP/$name.json")"
  out=$(view add "$TMP/$name.json" 2>&1)
  rc=$?
  echo "$out"
  [ "$rc" = 0 ] || { fail "view add $name exited $rc"; exit 1; }
  [ "$out" = "view $name mounted at $VIEWS/$name (CDI device pcifs.io/view=$name)" ] \
    || fail "view add $name said: $out"
  [ -f "$(spec_of "$name")" ] || { fail "no CDI spec $(spec_of "$name") after view add"; exit 1; }
}

bdfs() { grep -oE '^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]' "$1" | sort | tr '\n' ' ' | sed 's/ $//'; }
section() { awk -v bdf="$2" '$1 == bdf {p = 1} p && /^$/ {exit} p' "$1"; }
# quoted ARGS...: the words as a shell would read them back.
quoted() {
  local a out=
  for a in "$@"; do
    if [[ $a =~ ^[][A-Za-z0-9_./:=,@+%-]+$ ]]; then
      out+=" $a"
    elif [[ $a != *\'* ]]; then
      out+=" '$a'"
    else
      out+=" $(printf %q "$a")"
    fi
  done
  echo "${out# }"
}
# The command line that CMD... runs (what the helpers below add spelled out).
cmdline() {
  case $1 in
    podman_run) quoted "${PODMAN[@]}" "${PODMAN_RUN[@]}" --name "$PODMAN_TAG-$((PODMAN_N + 1))" "${@:2}" ;;
    podman_start) quoted "${PODMAN[@]}" "${PODMAN_START[@]}" --name "${@:2}" ;;
    podman_exec) quoted "${PODMAN[@]}" exec "${@:2}" ;;
    view) quoted pcifs view "${@:2}" --control="$SOCK" ;;
    *) quoted "$@" ;;
  esac
}
# podman_start NAME ARGS...: a detached container (podman_run's flags, less
# --rm: its logs and status are read after it exits; podman_cleanup removes it).
PODMAN_START=(run -d)
for a in "${PODMAN_RUN[@]}"; do
  case $a in run | --rm) ;; *) PODMAN_START+=("$a") ;; esac
done
# shellcheck disable=SC2317 # step calls them
podman_start() {
  local name=$1
  shift
  timeout --kill-after=10 "$PODMAN_RUN_LIMIT" "${PODMAN[@]}" "${PODMAN_START[@]}" --name "$name" "$@"
}
# shellcheck disable=SC2317 # step calls it
podman_exec() { timeout --kill-after=10 "$PODMAN_RUN_LIMIT" "${PODMAN[@]}" exec "$@"; }
running() { [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
# wait_file FILE SECONDS [CONTAINER]: polls for FILE; gives up at the deadline
# or, when CONTAINER is given, once it is no longer running.
wait_file() {
  local f=$1 end=$((SECONDS + $2)) n=0
  until [ -e "$f" ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    n=$((n + 1))
    if [ -n "${3:-}" ] && [ $((n % 20)) = 0 ] && ! running "$3"; then
      [ -e "$f" ] # it may have written it just before it exited
      return
    fi
    sleep 0.05
  done
}
DEV_A=(--device "pcifs.io/view=$NAME_A")
DEV_B=(--device "pcifs.io/view=$NAME_B")
DEV_C=(--device "pcifs.io/view=$NAME_C")
MAP=(--uidmap "0:$VIEW_UID:65536" --gidmap "0:$VIEW_UID:65536")
CAPS=('Power Management' 'MSI-X' 'Express \(v2\) Endpoint' 'Advanced Error Reporting')

# ---------------------------------------------------------------- step 1
view_add "$NAME_A" "\"devices\": [\"0000:01:00.0\", \"0000:02:00.0\"], \"uid\": $VIEW_UID, \"gid\": $VIEW_UID"
echo "---- $(spec_of "$NAME_A")"
cat "$(spec_of "$NAME_A")"
step "1. lspci -vvv with view A" podman_run "${DEV_A[@]}" "$IMAGE" lspci -vvv
[ "$STEP_RC" = 0 ] || { fail "1: the container exited $STEP_RC"; exit 1; }
echo "$STEP_OUT" >"$TMP/1.txt"
[ "$(bdfs "$TMP/1.txt")" = "01:00.0 02:00.0" ] \
  || fail "1: lspci lists '$(bdfs "$TMP/1.txt")', expected '01:00.0 02:00.0' (no host bridge)"
grep -q 'access denied' "$TMP/1.txt" && fail "1: the container's root was denied capabilities"
for b in 01:00.0 02:00.0; do
  s=$(section "$TMP/1.txt" "$b")
  for cap in "${CAPS[@]}"; do
    grep -qE "^	Capabilities: \[[0-9a-f]+( v[0-9]+)?\] $cap" <<<"$s" || fail "1: $b: no '$cap'"
  done
done

# The view's vendor:device IDs, as the host reads them through the view.
IDS_A=$(lspci -n -A linux-sysfs -O "sysfs.path=$VIEWS/$NAME_A" | awk '{print $3}' | sort -u)
[ -n "$IDS_A" ] || fail "1: the host reads no device IDs through view A"

# ---------------------------------------------------------------- step 2
SP="setpci -s 01:00.0"
HOST_SP=(setpci -A linux-sysfs -O "sysfs.path=$VIEWS/$NAME_A" -s 01:00.0)
cmd0=$("${HOST_SP[@]}" COMMAND)
[ -n "$cmd0" ] || fail "2: cannot read COMMAND on the host"
step "2. setpci as the container's root (uid $VIEW_UID outside)" \
  podman_run "${DEV_A[@]}" "${MAP[@]}" "$IMAGE" \
  sh -c "id -u; $SP COMMAND=0x0507 COMMAND"
[ "$STEP_RC" = 0 ] || fail "2: the container exited $STEP_RC"
[ "$(echo "$STEP_OUT" | tr '\n' ' ')" = "0 0507 " ] || fail "2: expected uid 0 and COMMAND 0507"
# The container's claim ended with it: the hand-over (README "Security")
# leaves the device at its baseline, Bus Master off, for whoever comes next.
clean=$(printf %04x $((0x$cmd0 & ~4)))
for ((i = 0; i < 400; i++)); do [ "$(cat "$VIEWS/$NAME_A/devices/0000:01:00.0/owner")" = none ] && break; sleep 0.05; done
[ "$("${HOST_SP[@]}" COMMAND)" = "$clean" ] \
  || fail "2: the host reads COMMAND '$("${HOST_SP[@]}" COMMAND)' after the container, expected $clean"
step "2. setpci as uid 1000 in the container (uid $((VIEW_UID + 1000)) outside)" \
  podman_run "${DEV_A[@]}" "${MAP[@]}" --user 1000 "$IMAGE" \
  sh -c "id -u; $SP COMMAND=0x0000; $SP COMMAND"
[ "$STEP_RC" = 0 ] || fail "2: the container as uid 1000 exited $STEP_RC"
# pcilib only warns when a write fails (setpci still exits 0).
grep -q 'Cannot open /sys/bus/pci/devices/0000:01:00.0/config' <<<"$STEP_ERR" \
  || fail "2: uid 1000's write was not refused"
[ "$(tail -1 <<<"$STEP_OUT")" = "$clean" ] || fail "2: uid 1000 reads COMMAND '$(tail -1 <<<"$STEP_OUT")', expected $clean"

# ---------------------------------------------------------------- step 3
view_add "$NAME_B" "\"devices\": [\"0000:02:00.0\"], \"uid\": $VIEW_UID, \"gid\": $VIEW_UID"
SHA=$TMP/shared-a # PA's reports
SHB=$TMP/shared-b
mkdir -m 1777 "$SHA" "$SHB"
step "3. PA: view A, bar_probe holds $RES" podman_start "$PA" "${DEV_A[@]}" "${MAP[@]}" "${PROBE[@]}" \
  -v "$SHA:/shared" "$IMAGE" /probe hold /shared "$RES"
[ "$STEP_RC" = 0 ] || { fail "3: PA did not start"; exit 1; }
step "3. PB: view B (02:00.0 alone), idle" podman_start "$PB" "${DEV_B[@]}" "${MAP[@]}" "${PROBE[@]}" \
  -v "$SHB:/shared" "$IMAGE" /probe idle /shared stop
[ "$STEP_RC" = 0 ] || { fail "3: PB did not start"; exit 1; }
wait_file "$SHA/ready" 120 "$PA" || { fail "3: PA's probe did not report ready"; exit 1; }
echo "PA: held: $(cat "$SHA/held")"
[ "$(cat "$SHA/ready")" = ok ] || { fail "3: PA could not claim and map $RES"; exit 1; }
echo "---- pcifs view ls"
view ls | tee "$TMP/ls.txt"
grep -E "^$NAME_A " "$TMP/ls.txt" | grep -qF "0000:02:00.0(pid " || fail "3: view ls shows no claim of PA's"
# Negative control: while PA holds the claim, PB (another view) cannot take it.
step "3. PB claims resource0 while PA holds it" podman_exec "$PB" /probe try "$RES"
if [ "$STEP_RC" = 0 ] || [ "$STEP_OUT" != EBUSY ]; then fail "3: PB got '$STEP_OUT', expected EBUSY"; fi
step "3. PA lists its devices before rm" podman_exec "$PA" ls /sys/bus/pci/devices
[ "$STEP_RC" = 0 ] || fail "3: PA cannot list its devices before rm"

step "3. pcifs view rm A" view rm "$NAME_A"
[ "$STEP_RC" = 0 ] || fail "3: view rm exited $STEP_RC"
[ -e "$(spec_of "$NAME_A")" ] && fail "3: A's CDI spec is still there after rm"
[ -e "$VIEWS/$NAME_A" ] && fail "3: A's mountpoint $VIEWS/$NAME_A is still there after rm"
view ls | grep -qE "^$NAME_A " && fail "3: view ls still lists A"
daemon_alive || { fail "3: the daemon died at rm"; exit 1; }
echo "host after rm: spec $(spec_of "$NAME_A") $([ -e "$(spec_of "$NAME_A")" ] && echo present || echo gone);" \
  "$VIEWS holds: '$(find "$VIEWS" -mindepth 1 -maxdepth 1 -printf '%f ')'"

step "3. PA: ls /sys/bus/pci/devices after rm" podman_exec "$PA" ls /sys/bus/pci/devices
[ "$STEP_RC" != 0 ] || fail "3: PA still lists devices after rm"
grep -qF "No such device" <<<"$STEP_ERR" || fail "3: PA's ls after rm does not say ENODEV"
# pcilib falls back from sysfs to /proc/bus/pci (the host's devices, read-only
# in a container): -A linux-sysfs is the method that reads the view.
step "3. PA: lspci -A linux-sysfs after rm" podman_exec "$PA" lspci -A linux-sysfs
[ "$STEP_RC" != 0 ] || fail "3: PA's lspci succeeded after rm"
step "3. PA: plain lspci -n after rm (may fall back to /proc/bus/pci)" podman_exec "$PA" lspci -n
if [ "$STEP_RC" = 0 ]; then # the fallback: none of the view's devices may show
  while read -r id; do
    grep -qF " $id" <<<"$STEP_OUT" && fail "3: PA's lspci still shows a device $id after rm"
  done <<<"$IDS_A"
fi

touch "$SHA/go"
wait_file "$SHA/done" 120 "$PA" || fail "3: PA's probe did not finish"
echo "PA after rm: pread on the open fd: $(cat "$SHA/pread" 2>/dev/null); touch of the mapping: $(cat "$SHA/map" 2>/dev/null)"
[ "$(cat "$SHA/pread" 2>/dev/null)" = ENODEV ] || fail "3: PA's pread after rm: expected ENODEV"
[ "$(cat "$SHA/map" 2>/dev/null)" = SIGBUS ] || fail "3: PA's mapping after rm: expected SIGBUS"

step "3. PB claims resource0 after rm A" podman_exec "$PB" /probe try "$RES"
if [ "$STEP_RC" != 0 ] || [ "${STEP_OUT:0:3}" != "ok " ]; then fail "3: PB cannot claim resource0 after rm A"; fi

step "3. a new container with view A after rm" podman_run "${DEV_A[@]}" "$IMAGE" ls /sys/bus/pci/devices
[ "$STEP_RC" != 0 ] || fail "3: a container started with the removed view A"
[ "$STEP_RC" != 124 ] || fail "3: podman hung on the removed view"
grep -qF "unresolvable CDI devices pcifs.io/view=$NAME_A" <<<"$STEP_ERR" \
  || fail "3: podman's error does not name the unresolvable device"

touch "$SHB/stop"
for c in "$PA" "$PB"; do
  step "3. podman wait $c" timeout -k 10 120 "${PODMAN[@]}" wait "$c"
  [ "$STEP_OUT" = 0 ] || fail "3: $c exited '$STEP_OUT'"
  echo "---- podman logs $c"
  "${PODMAN[@]}" logs "$c" 2>&1
  "${PODMAN[@]}" rm -f "$c" >/dev/null 2>&1
done

# ---------------------------------------------------------------- step 4
view_add "$NAME_C" "\"devices\": [\"0000:01:00.0\"], \"uid\": $VIEW_UID, \"gid\": $VIEW_UID"
step "4. control: view C while the daemon runs" podman_run "${DEV_C[@]}" "$IMAGE" ls /sys/bus/pci/devices
if [ "$STEP_RC" != 0 ] || [ "$STEP_OUT" != 0000:01:00.0 ]; then fail "4: a container with view C does not work"; fi
EXPECT_DAEMON=stopped
kill -TERM "$DAEMON_PID"
end=$((SECONDS + 60))
while daemon_alive && [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
daemon_alive && { fail "4: the daemon did not exit within 60 s of SIGTERM"; exit 1; }
wait "$DAEMON_PID"
status=$?
echo "---- the daemon exited $status on SIGTERM"
[ "$status" = 0 ] || fail "4: the daemon exited $status on SIGTERM"
for n in "$NAME_B" "$NAME_C"; do
  [ -e "$(spec_of "$n")" ] && fail "4: $(spec_of "$n") is still there after a clean stop"
  [ -e "$VIEWS/$n" ] && fail "4: the mountpoint $VIEWS/$n is still there after a clean stop"
done
echo "host after the stop: specs of this run in $CDI_DIR:" \
  "$(find "$CDI_DIR" -maxdepth 1 -name "*$PODMAN_TAG*" | wc -l);" \
  "$VIEWS holds: '$(find "$VIEWS" -mindepth 1 -maxdepth 1 -printf '%f ' 2>&1)'"
step "4. view C after the daemon stopped cleanly" podman_run "${DEV_C[@]}" "$IMAGE" ls /sys/bus/pci/devices
[ "$STEP_RC" != 0 ] || fail "4: a container started with view C after the daemon stopped"
[ "$STEP_RC" != 124 ] || fail "4: podman hung"
grep -qF "unresolvable CDI devices pcifs.io/view=$NAME_C" <<<"$STEP_ERR" \
  || fail "4: podman's error does not name the unresolvable device"

echo "elapsed: $((SECONDS - T0)) s"
if [ "$FAILED" = 0 ]; then
  echo "PASS"
  exit 0
fi
exit 1
