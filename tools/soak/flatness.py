#!/usr/bin/env python3
"""The soak's flatness check (tools/soak.sh): are the daemons' RSS, threads
and fds in the last third of the samples where they were after the warm-up?

Input: the soak's samples.raw, one line per sample: time, generation, pid,
RSS kB, fds, threads, then the hot-plug daemon's RSS kB, fds, threads.

- RSS: the last third's median <= the first third's maximum + 10% + 8 MiB.
  The median, not the maximum: an allocator returns memory in bursts (TSan's
  does, by whole regions), so one sample can stand 10-20 MB above its
  neighbours without anything having leaked; a leak raises every later
  sample, and so the median.
- threads: the last third's maximum <= the first third's maximum + 12.
- fds: the last third's maximum <= the first third's maximum + 8.
Exits 1 when a figure grew, 2 when there are too few samples.
"""
import statistics
import sys

# (name, column, the last third's level, limit from the first third's maximum)
CHECKS = [
    ("rss_kB", 3, "median", lambda a: int(a * 1.10) + 8192),
    ("threads", 5, "max", lambda a: a + 12),
    ("fds", 4, "max", lambda a: a + 8),
    ("hp_rss", 6, "median", lambda a: int(a * 1.10) + 8192),
    ("hp_thr", 8, "max", lambda a: a + 12),
    ("hp_fds", 7, "max", lambda a: a + 8),
]
LEVEL = {"median": lambda xs: int(statistics.median(xs)), "max": max}


def check(rows):
    """True when every figure stayed flat; prints one line per figure."""
    k = len(rows) // 3
    first, last = rows[:k], rows[-k:]
    flat = True
    for name, col, level, limit_of in CHECKS:
        a = max(r[col] for r in first)
        b = LEVEL[level]([r[col] for r in last])
        limit = limit_of(a)
        ok = b <= limit
        flat &= ok
        print("%-8s first third max %8d  last third %-6s %8d  limit %8d  %s"
              % (name, a, level, b, limit, "ok" if ok else "GREW"))
    return flat


def main():
    rows = [list(map(int, line.split())) for line in open(sys.argv[1]) if line.strip()]
    if len(rows) < 3:
        print("flatness: only %d samples" % len(rows))
        return 2
    return 0 if check(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
