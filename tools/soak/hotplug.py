#!/usr/bin/env python3
# Simulated hot-plug for the soak (tools/soak.sh): a sysfs-shaped tree that a
# second host daemon serves with --backend=sysfs:ROOT (ROOT = TREE/sys/bus/pci,
# as tests/fixtures/sysfs_tree.hpp builds it), and a plugger that makes a
# function arrive and leave with the kernel's uevent datagrams, sent to
# ROOT/.pcifs-uevents (where backend/sysfs takes them in place of netlink).
#
#   hotplug.py tree TREE                         the tree, with 0000:00:00.0
#   hotplug.py plugger SUMMARY STOP TREE MNT     until STOP: 0000:01:00.0
#       arrives (visible in MNT/devices within 20 s, its config reads
#       1b36:0001, its BAR opens), leaves (gone within 20 s; the BAR fd
#       opened before now fails ENODEV), again. Summary as client.py's.
import errno
import json
import os
import socket
import struct
import sys
import time

PCI_ROOT = "sys/bus/pci"
DEVICES = "sys/devices/pci0000:00"


def config_bytes(device):
    c = bytearray(4096)
    struct.pack_into("<HH", c, 0, 0x1B36, device)
    struct.pack_into("<I", c, 8, (0x020000 << 8) | 0x02)
    struct.pack_into("<HH", c, 0x2C, 0x1B36, 0x1100)
    c[4] = 0x02  # memory decode on
    c[6] |= 0x10  # capability list: PM at 0x40, D0
    c[0x34] = 0x40
    c[0x40], c[0x41] = 0x01, 0
    struct.pack_into("<HH", c, 0x42, 0x0003, 0)
    return bytes(c)


def add_function(tree, bdf, device, group):
    d = os.path.join(tree, DEVICES, bdf)
    os.makedirs(d)
    with open(os.path.join(d, "config"), "wb") as f:
        f.write(config_bytes(device))
    attrs = {"vendor": "0x1b36", "device": "0x%04x" % device, "subsystem_vendor": "0x1b36",
             "subsystem_device": "0x1100", "class": "0x020000", "revision": "0x02", "irq": "0",
             "numa_node": "-1"}
    for k, v in attrs.items():
        with open(os.path.join(d, k), "w") as f:
            f.write(v + "\n")
    base = 0xFE000000 + device * 0x10000
    lines = ["0x%016x 0x%016x 0x%016x" % (base, base + 4095, 0x200)]
    lines += ["0x%016x 0x%016x 0x%016x" % (0, 0, 0)] * 6
    with open(os.path.join(d, "resource"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "resource0"), "wb") as f:
        f.write(b"\0" * 4096)
    g = os.path.join(tree, "sys/kernel/iommu_groups", str(group))
    os.makedirs(g, exist_ok=True)
    os.symlink("../../../kernel/iommu_groups/%d" % group, os.path.join(d, "iommu_group"))
    os.symlink("../../../devices/pci0000:00/" + bdf, os.path.join(tree, PCI_ROOT, "devices", bdf))


def remove_function(tree, bdf):
    os.unlink(os.path.join(tree, PCI_ROOT, "devices", bdf))
    d = os.path.join(tree, DEVICES, bdf)
    for root, dirs, files in os.walk(d, topdown=False):
        for n in files + dirs:
            p = os.path.join(root, n)
            os.unlink(p) if not os.path.isdir(p) or os.path.islink(p) else os.rmdir(p)
    os.rmdir(d)


def announce(tree, action, bdf):
    """Sends the uevent. While the daemon restarts nobody listens (refused):
    retried for up to 60 s; a new daemon also scans the tree as it starts."""
    path = "/devices/pci0000:00/" + bdf
    fields = [action + "@" + path, "ACTION=" + action, "DEVPATH=" + path, "SUBSYSTEM=pci",
              "PCI_SLOT_NAME=" + bdf]
    end = time.monotonic() + 60
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        while True:
            try:
                s.sendto(b"".join(f.encode() + b"\0" for f in fields),
                         os.path.join(tree, PCI_ROOT, ".pcifs-uevents"))
                return
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
    finally:
        s.close()


def make_tree(tree):
    for d in (PCI_ROOT + "/devices", PCI_ROOT + "/drivers", DEVICES, "sys/kernel/iommu_groups"):
        os.makedirs(os.path.join(tree, d), exist_ok=True)
    add_function(tree, "0000:00:00.0", 0x0000, 0)


def plugger(summary, stop, tree, mnt):
    ops, errors, last = 0, {}, [0.0]

    def dump(force=False):
        if force or time.monotonic() - last[0] >= 2:
            last[0] = time.monotonic()
            with open(summary + ".tmp", "w") as f:
                json.dump({"kind": "hotplug", "pid": os.getpid(), "ops": ops, "errors": errors}, f)
            os.rename(summary + ".tmp", summary)

    def err(key):
        errors[key] = errors.get(key, 0) + 1

    def wait(pred):  # 20 s gate on a condition
        end = time.monotonic() + 20
        while not pred():
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    bdf = "0000:01:00.0"
    dev = os.path.join(mnt, "devices", bdf)
    while not os.path.exists(stop):
        dump()
        add_function(tree, bdf, 0x0001, 1)
        announce(tree, "add", bdf)
        if not wait(lambda: os.path.exists(dev)):
            err("TIMEOUT arrive")
            remove_function(tree, bdf)
            announce(tree, "remove", bdf)
            continue
        fd = -1
        try:
            with open(os.path.join(dev, "config"), "rb") as f:
                if struct.unpack("<HH", f.read(4)) != (0x1B36, 0x0001):
                    err("MISMATCH config")
            fd = os.open(os.path.join(dev, "resource0"), os.O_RDWR)
            os.pread(fd, 4, 0)
            ops += 1
        except OSError as e:
            err(errno.errorcode.get(e.errno, str(e.errno)) + " arrived")
        remove_function(tree, bdf)
        announce(tree, "remove", bdf)
        if not wait(lambda: not os.path.exists(dev)):
            err("TIMEOUT leave")
        if fd >= 0:
            try:
                os.pread(fd, 4, 0)
                err("NOERROR pread-after-removal")
            except OSError as e:
                if e.errno != errno.ENODEV:
                    err(errno.errorcode.get(e.errno, str(e.errno)) + " pread-after-removal")
            os.close(fd)
        time.sleep(0.2)
    dump(True)


if __name__ == "__main__":
    if sys.argv[1] == "tree":
        make_tree(sys.argv[2])
    else:
        plugger(*sys.argv[2:])
