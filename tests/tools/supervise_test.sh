#!/bin/bash
# pcifs-supervise plays systemd's part for the restart tests and the soak: a
# notify socket that keeps the fds a service stores (FDSTORE=1, FDNAME=), and
# a restart that hands them back (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), as
# sd_notify(3) and sd_listen_fds(3) say. A small fake daemon (python) stores a
# memfd with content and checks what it gets back after a SIGKILL (SIGUSR1 to
# the supervisor) and a clean restart (SIGUSR2): the same open file (inode and
# content) at fd 3, inheritable, with the right names and pid; FDSTOREREMOVE
# drops a name; an fd sent again is not stored twice; a notification from
# another pid is ignored and its fds closed; with --no-fd-store (the negative
# control, FileDescriptorStoreMax=0) the fd is lost; the exit status follows
# the child's. Needs: PCIFS_BUILD_DIR, python3. No root, no mount.
set -u
BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SUP=$BUILD/pcifs-supervise
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
[ -x "$SUP" ] || { echo "FAIL: $SUP not built"; exit 1; }
TMP=$(mktemp -d)
FAILED=0
SUP_PID=
cleanup() {
  local rc=$?
  if [ -n "$SUP_PID" ] && kill -0 "$SUP_PID" 2>/dev/null; then
    kill -KILL "$SUP_PID" 2>/dev/null
    wait "$SUP_PID" 2>/dev/null
  fi
  if [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
    echo "---- supervisor log ----"
    cat "$TMP"/sup*.log
  fi
  rm -rf "$TMP"
  [ "$FAILED" = 0 ] || exit 1
  exit "$rc"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  FAILED=1
}

# The fake daemon. It writes report.<pid> (what it was given) before READY=1.
# FAKE_MODE: "store" stores memfd "state" and pipe-less memfd "extra" when it
# got nothing; when it got fds it stores its fd 3 again (must not be added
# twice), removes "extra" (FDSTOREREMOVE) and lets a child process send an
# intruder fd. FAKE_EXIT=N: exit N right after READY=1.
cat >"$TMP/fake.py" <<'EOF'
import fcntl, json, os, signal, socket, stat, sys
out = sys.argv[1]
path = os.environ["NOTIFY_SOCKET"]
def notify(msg, fds=()):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(path)
    socket.send_fds(s, [msg.encode()], list(fds))
    s.close()
n = int(os.environ.get("LISTEN_FDS", "0"))
rep = {"LISTEN_FDS": os.environ.get("LISTEN_FDS"), "LISTEN_PID": os.environ.get("LISTEN_PID"),
       "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES"), "pid": os.getpid(), "fds": []}
for fd in range(3, 3 + n):
    st = os.fstat(fd)
    content = os.pread(fd, 64, 0).decode() if stat.S_ISREG(st.st_mode) else ""
    rep["fds"].append({"ino": st.st_ino, "content": content,
                       "cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)})
# Nothing beyond 3+n may leak in from the supervisor.
# (The listing's own fd is closed by the time readlink looks at it.)
def alive(f):
    try:
        os.readlink("/proc/self/fd/" + f)
        return True
    except OSError:
        return False
rep["extra_fds"] = sorted(int(f) for f in os.listdir("/proc/self/fd")
                          if int(f) >= 3 + n and alive(f))
if os.environ.get("FAKE_MODE") == "pipe":
    if n == 0:
        # Two pipe read ends; this process keeps the write ends, so both
        # hang up when it dies: the polled one leaves the store then.
        for name, extra in (("hup", ""), ("kept", "\nFDPOLL=0")):
            r, w = os.pipe()
            notify("FDSTORE=1\nFDNAME=" + name + extra, [r])
            os.close(r)
            rep.setdefault("writers", []).append(w)
elif n == 0:
    for name in ("state", "extra"):
        m = os.memfd_create(name)
        os.write(m, ("content-of-" + name).encode())
        notify("FDSTORE=1\nFDNAME=" + name, [m])
        rep.setdefault("made", {})[name] = os.fstat(m).st_ino
        os.close(m)
    # Fds without FDSTORE=1 are closed, not stored.
    m = os.memfd_create("unasked")
    notify("STATUS=sending an fd without FDSTORE", [m])
else:
    notify("FDSTORE=1\nFDNAME=state", [3])
    notify("FDSTOREREMOVE=1\nFDNAME=extra")
    pid = os.fork()
    if pid == 0:
        m = os.memfd_create("intruder")
        notify("FDSTORE=1\nFDNAME=intruder", [m])
        notify("READY=1")
        os._exit(0)
    os.waitpid(pid, 0)
# The report is complete before READY=1, which the test waits for.
with open(out + ".tmp", "w") as f:
    json.dump(rep, f)
os.rename(out + ".tmp", out)
notify("READY=1\nSTATUS=serving")
code = os.environ.get("FAKE_EXIT")
if code is not None:
    sys.exit(int(code))
signal.signal(signal.SIGTERM, lambda *a: (notify("STOPPING=1"), sys.exit(0)))
while True:
    signal.pause()
EOF

# wait_status GEN: the status file says generation GEN is ready (60 s gate).
wait_status() {
  local gen=$1 i
  for ((i = 0; i < 1200; i++)); do
    if [ -f "$TMP/status" ]; then
      read -r G P N <"$TMP/status"
      [ "$G" = "$gen" ] && return 0
    fi
    kill -0 "$SUP_PID" 2>/dev/null || { fail "supervisor died waiting for generation $gen"; return 1; }
    sleep 0.05
  done
  fail "generation $gen not ready within 60 s"
  return 1
}

# field PID EXPR: a value from report.<pid>.
field() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "$TMP/report.$1" "$2"
}
expect() {
  [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"
}

start_sup() {
  local log=$1
  shift
  rm -f "$TMP/status"
  "$SUP" --status "$TMP/status" "$@" -- python3 "$TMP/fake.py" "$TMP/report" \
    2>"$TMP/$log" &
  SUP_PID=$!
}
# The fake writes report (no pid suffix): move it to report.<pid> once ready.
take_report() {
  mv "$TMP/report" "$TMP/report.$P" || fail "no report from pid $P"
}

echo "== store, kill -9 through the supervisor, the same fd comes back"
start_sup sup1.log
wait_status 1 || exit 1
take_report
P1=$P
expect "stored after gen 1" "$N" 2
expect "gen 1 LISTEN_FDS" "$(field "$P1" 'r["LISTEN_FDS"]')" None
expect "gen 1 LISTEN_PID" "$(field "$P1" 'r["LISTEN_PID"]')" None
expect "gen 1 leaked fds" "$(field "$P1" 'r["extra_fds"]')" "[]"
STATE_INO=$(field "$P1" 'r["made"]["state"]')
EXTRA_INO=$(field "$P1" 'r["made"]["extra"]')
kill -USR1 "$SUP_PID"
wait_status 2 || exit 1
take_report
P2=$P
[ "$P2" != "$P1" ] || fail "gen 2 has the same pid as gen 1"
[ -d "/proc/$P1" ] && fail "gen 1 (pid $P1) still exists"
expect "gen 2 LISTEN_FDS" "$(field "$P2" 'r["LISTEN_FDS"]')" 2
expect "gen 2 LISTEN_PID" "$(field "$P2" 'r["LISTEN_PID"]')" "$P2"
expect "gen 2 LISTEN_FDNAMES" "$(field "$P2" 'r["LISTEN_FDNAMES"]')" state:extra
expect "gen 2 fd 3 inode" "$(field "$P2" 'r["fds"][0]["ino"]')" "$STATE_INO"
expect "gen 2 fd 3 content" "$(field "$P2" 'r["fds"][0]["content"]')" content-of-state
expect "gen 2 fd 4 inode" "$(field "$P2" 'r["fds"][1]["ino"]')" "$EXTRA_INO"
expect "gen 2 fd 4 content" "$(field "$P2" 'r["fds"][1]["content"]')" content-of-extra
expect "gen 2 fd 3 inheritable" "$(field "$P2" 'r["fds"][0]["cloexec"]')" False
expect "gen 2 leaked fds" "$(field "$P2" 'r["extra_fds"]')" "[]"
# Gen 2 stored fd 3 again (not added twice), removed "extra", and its child
# sent "intruder" (ignored): one fd left.
expect "stored after gen 2" "$N" 1
grep -q "killed by Killed" "$TMP/sup1.log" || fail "gen 1 was not killed by SIGKILL"
grep -q "ignoring a notification (from pid" "$TMP/sup1.log" ||
  fail "the intruder's notification was not ignored"
grep -q "closing 1 fds passed without FDSTORE=1" "$TMP/sup1.log" ||
  fail "an fd sent without FDSTORE=1 was not closed"

echo "== clean restart (SIGUSR2): what is left after FDSTOREREMOVE, no intruder"
kill -USR2 "$SUP_PID"
wait_status 3 || exit 1
take_report
P3=$P
expect "gen 3 LISTEN_FDS" "$(field "$P3" 'r["LISTEN_FDS"]')" 1
expect "gen 3 LISTEN_PID" "$(field "$P3" 'r["LISTEN_PID"]')" "$P3"
expect "gen 3 LISTEN_FDNAMES" "$(field "$P3" 'r["LISTEN_FDNAMES"]')" state
expect "gen 3 fd 3 inode" "$(field "$P3" 'r["fds"][0]["ino"]')" "$STATE_INO"
expect "gen 3 fd 3 content" "$(field "$P3" 'r["fds"][0]["content"]')" content-of-state
grep -q "STOPPING=1" "$TMP/sup1.log" || fail "gen 2 was not stopped with SIGTERM"

echo "== SIGTERM to the supervisor: the child stops, the exit status is its own"
kill -TERM "$SUP_PID"
wait "$SUP_PID"
rc=$?
SUP_PID=
expect "supervisor exit status after SIGTERM" "$rc" 0
[ -d "/proc/$P3" ] && fail "gen 3 (pid $P3) outlived the supervisor"
grep -q "fd store: closed 1 fds" "$TMP/sup1.log" || fail "the store was not closed at exit"

echo "== FDPOLL: a stored fd that hangs up leaves the store, unless FDPOLL=0"
FAKE_MODE=pipe start_sup sup5.log
wait_status 1 || exit 1
take_report
expect "stored pipes" "$N" 2
kill -USR1 "$SUP_PID"
wait_status 2 || exit 1
take_report
expect "LISTEN_FDNAMES after the writers died" "$(field "$P" 'r["LISTEN_FDNAMES"]')" kept
grep -q "fd store: hup reported POLLHUP, removing it" "$TMP/sup5.log" ||
  fail "the hung-up fd was not removed"
kill -TERM "$SUP_PID"
wait "$SUP_PID"
SUP_PID=

echo "== negative control: --no-fd-store loses the fd"
start_sup sup2.log --no-fd-store
wait_status 1 || exit 1
take_report
expect "stored with --no-fd-store" "$N" 0
kill -USR1 "$SUP_PID"
wait_status 2 || exit 1
take_report
expect "LISTEN_FDS without a store" "$(field "$P" 'r["LISTEN_FDS"]')" None
expect "LISTEN_FDNAMES without a store" "$(field "$P" 'r["LISTEN_FDNAMES"]')" None
grep -q "hit the limit of 0 fds" "$TMP/sup2.log" || fail "no log of the fd store limit"
kill -TERM "$SUP_PID"
wait "$SUP_PID"
SUP_PID=

echo "== --restart=no: the child's own exit status ends the supervisor"
FAKE_EXIT=3 start_sup sup3.log --restart=no
wait "$SUP_PID"
rc=$?
SUP_PID=
expect "supervisor exit status after the child's exit 3" "$rc" 3

echo "== --restart=on-failure: a failing child is restarted with its fds"
FAKE_EXIT=4 start_sup sup4.log --restart=on-failure
wait "$SUP_PID"
rc=$?
SUP_PID=
expect "supervisor exit status after the start limit" "$rc" 4
grep -q "start limit hit" "$TMP/sup4.log" || fail "no start limit"
grep -q "generation 2: started pid [0-9]* with 2 stored fds: state:extra" "$TMP/sup4.log" ||
  fail "the automatic restart did not pass the stored fds"

[ "$FAILED" = 0 ] && echo PASS
