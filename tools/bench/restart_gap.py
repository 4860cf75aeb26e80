#!/usr/bin/env python3
"""What a client sees of an in-place upgrade (README "Restarts: the fd store").

    restart_gap.py [--upgrades N] [--pcifs P] [--supervise S] [--doe-timeout MS]

Runs pcifs on the default simulated devices under pcifs-supervise with
--fd-store, opens 01:00.0/config once, and reads 4 bytes of it in a loop while
pcifs-supervise upgrades the daemon N times (SIGUSR2: the daemon gets SIGTERM
and hands its connection over; the next one takes it and the open handle over).
Prints, per upgrade, the longest time between two successive reads (the stall
the client saw) and whether every read returned 4 bytes. The first generation
is ready before the reader starts. As root; leaves no mount behind.
Exit: 0, 1 when a read failed or an upgrade never became ready, 2 on bad use.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upgrades", type=int, default=5)
    ap.add_argument("--pcifs", default=os.path.join(HERE, "..", "..", "build", "pcifs"))
    ap.add_argument("--supervise", default=None, help="default: beside --pcifs")
    ap.add_argument("--doe-timeout", type=int, default=None, help="pcifs's --doe-timeout (ms)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("restart_gap.py: needs root (a FUSE mount)", file=sys.stderr)
        return 2
    sup = a.supervise or os.path.join(os.path.dirname(a.pcifs), "pcifs-supervise")
    work = tempfile.mkdtemp(prefix="pcifs-restart-gap.")
    mnt, status = os.path.join(work, "mnt"), os.path.join(work, "status")
    os.mkdir(mnt)
    cmd = [sup, "--status", status, "--", a.pcifs, "-f", "--fd-store", "--lock-dir=none"]
    if a.doe_timeout:
        cmd.append("--doe-timeout=%d" % a.doe_timeout)
    proc = subprocess.Popen(cmd + [mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fd, failed = -1, False
    try:
        cfg = os.path.join(mnt, "devices", "0000:01:00.0", "config")
        end = time.monotonic() + 30
        while fd < 0:
            try:
                fd = os.open(cfg, os.O_RDONLY)
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    print("restart_gap.py: pcifs never mounted", file=sys.stderr)
                    return 1
                time.sleep(0.01)
        for n in range(1, a.upgrades + 1):
            state = {"stop": False, "worst": 0.0, "reads": 0, "bad": 0}

            def reader():
                last = time.monotonic()
                while not state["stop"]:
                    try:
                        ok = len(os.pread(fd, 4, 0)) == 4
                    except OSError:
                        ok = False
                    now = time.monotonic()
                    state["worst"] = max(state["worst"], now - last)
                    state["reads"] += 1
                    state["bad"] += 0 if ok else 1
                    last = now

            t = threading.Thread(target=reader)
            t.start()
            while state["reads"] < 100:  # the reader runs before the upgrade
                time.sleep(0.001)
            proc.send_signal(signal.SIGUSR2)
            ready = wait_generation(status, n + 1, 60)
            seen = state["reads"]
            while state["reads"] < seen + 1000:  # and reads through the new daemon
                time.sleep(0.001)
            state["stop"] = True
            t.join()
            failed |= not ready or state["bad"] > 0
            print("upgrade %d: worst gap %.1f ms, %d reads, %d failed%s" %
                  (n, state["worst"] * 1000, state["reads"], state["bad"],
                   "" if ready else ", never ready"))
            sys.stdout.flush()
            if not ready:
                break
    finally:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:  # ENOTCONN: that connection is gone
                pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        if os.path.exists(status):
            os.unlink(status)
        os.rmdir(mnt)
        os.rmdir(work)
    return 1 if failed else 0


def wait_generation(status, gen, limit_s):
    """pcifs-supervise's --status file holds the last generation that was ready."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            with open(status) as f:
                if int(f.read().split()[0]) >= gen:
                    return True
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.002)
    return False


if __name__ == "__main__":
    sys.exit(main())
