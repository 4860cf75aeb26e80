#!/usr/bin/env python3
# The soak's client processes (tools/soak.sh): each runs one loop against a
# pcifs mount until STOP exists, and keeps a summary in SUMMARY (JSON,
# rewritten atomically every 2 s and at exit): operations done, and every
# error counted as "ERRNO op" (the errno's name; MISMATCH for a wrong answer).
# soak.sh judges the errnos against what each kind may see.
#
#   client.py reader SUMMARY STOP VIEWS_ROOT       every view's devices: config,
#                                                  attributes, owner, status
#   client.py doe SUMMARY STOP DEVDIR              echo exchanges through doe
#   client.py claimer SUMMARY STOP DEVDIR          holds resource0 until killed
#   client.py toggler SUMMARY STOP DEVDIR          power_state D3hot/D0, reset
import errno
import json
import os
import random
import struct
import sys
import time

kind, summary_path, stop = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
ops = 0
errors = {}
last_dump = 0.0


def dump(force=False):
    global last_dump
    now = time.monotonic()
    if not force and now - last_dump < 2:
        return
    last_dump = now
    tmp = summary_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"kind": kind, "pid": os.getpid(), "ops": ops, "errors": errors}, f)
    os.rename(tmp, summary_path)


def err(name, op):
    key = name + " " + op
    errors[key] = errors.get(key, 0) + 1
    time.sleep(0.02)  # an error must not turn into a busy loop


def oserr(e, op):
    err(errno.errorcode.get(e.errno, str(e.errno)), op)


def running():
    dump()
    return not os.path.exists(stop)


def read_file(path, n=4096):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, 0)
    finally:
        os.close(fd)


def reader(root):
    global ops
    while running():
        try:
            views = sorted(os.listdir(root))
        except OSError as e:
            oserr(e, "listdir-root")
            continue
        for v in views:
            devs_dir = os.path.join(root, v, "devices")
            try:
                devs = os.listdir(devs_dir)
            except OSError as e:
                oserr(e, "listdir-devices")
                continue
            for d in devs:
                for name, n in (("config", 4096), ("vendor", 64), ("resource", 4096),
                                ("owner", 64), ("power_state", 64)):
                    try:
                        data = read_file(os.path.join(devs_dir, d, name), n)
                        if name == "config" and len(data) >= 64 and data[:2] == b"\xff\xff":
                            err("MISMATCH", "config-all-ones")
                        ops += 1
                    except OSError as e:
                        oserr(e, "read-" + name)
            if random.random() < 0.1:
                try:
                    json.loads(read_file(os.path.join(root, v, "status"), 1 << 20))
                    ops += 1
                except OSError as e:
                    oserr(e, "read-status")
                except ValueError:
                    err("MISMATCH", "status-json")


def doe(devdir):
    global ops
    path = os.path.join(devdir, "doe")
    fd = -1
    while running():
        if fd < 0:
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError as e:
                oserr(e, "open-doe")
                continue
        payload = [random.getrandbits(32) for _ in range(random.randint(1, 16))]
        req = struct.pack("<%dI" % (len(payload) + 2), 0x1b36 | (0x01 << 16), len(payload) + 2,
                          *payload)
        try:
            if os.write(fd, req) != len(req):
                err("SHORT", "write-doe")
                continue
            rsp = os.read(fd, 4096)
            ops += 1
            if rsp != req:
                err("MISMATCH", "doe-echo")
        except OSError as e:
            oserr(e, "doe-exchange")
            os.close(fd)
            fd = -1


def claimer(devdir):
    global ops
    path = os.path.join(devdir, "resource0")
    while running():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            oserr(e, "open-resource0")
            continue
        try:
            ident = struct.unpack("<I", os.pread(fd, 4, 0x40))[0]
            if ident != 0x50434946:
                err("MISMATCH", "bar-id")
            # Claims are exclusive: the owner is this process.
            owner = read_file(os.path.join(devdir, "owner"), 256).decode()
            if not owner.startswith("pid=%d " % os.getpid()):
                err("MISMATCH", "owner-" + owner.strip().replace(" ", "_"))
            ops += 1
            dump(True)
            # Hold the claim until soak.sh kills this process (or STOP).
            while running():
                os.pread(fd, 4, 0x40)
                time.sleep(0.2)
        except OSError as e:
            oserr(e, "pread-resource0")
        os.close(fd)


def write_text(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def toggler(devdir):
    global ops
    while running():
        try:
            # One open: the claim lasts for both writes (README: claims).
            fd = os.open(os.path.join(devdir, "power_state"), os.O_WRONLY)
            try:
                os.write(fd, b"D3hot")
                os.write(fd, b"D0")
                ops += 1
            finally:
                os.close(fd)
        except OSError as e:
            oserr(e, "power_state")
        try:
            write_text(os.path.join(devdir, "reset"), "1")
            ops += 1
        except OSError as e:
            oserr(e, "reset")
        try:
            state = read_file(os.path.join(devdir, "power_state"), 64)
            if state.strip() not in (b"D0", b"D3hot"):
                err("MISMATCH", "power_state-" + state.strip().decode(errors="replace"))
        except OSError as e:
            oserr(e, "read-power_state")
        time.sleep(0.05)


try:
    {"reader": reader, "doe": doe, "claimer": claimer, "toggler": toggler}[kind](*args)
finally:
    dump(True)
