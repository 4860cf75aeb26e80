// pcifs-bench --core: the Mediator's read path with many threads, in one
// process, with no FUSE (issue 13 §1): what the daemon's own code costs when
// every CPU reads the same device. N threads (1, 2, 4, ... up to twice the
// CPUs) each open config of one simulated endpoint with their own handle,
// wait at a gate, then make 4-byte try_read()s (what a FUSE worker calls)
// for a fixed time: of a shadowed register (offset 0: the shadow, no device
// access) and of PMCSR (0x44: admitted by the device's gate and read from
// the simulator); and the device gate's BAR admission alone (an AccessGate
// entered and left, nothing behind it: what every BAR pread pays); and the
// tree's side of a request on that device: what a FUSE LOOKUP or GETATTR of
// devices/B/config asks (has_device and stat), and what an OPEN and its
// RELEASE do (open and release of config, read-only: lspci opens every
// device's config anew, so many monitors open as often as they read). Each
// figure is the median of its rounds, in operations per second, with the
// speed-up over one thread; on a machine with fewer CPUs than threads the
// speed-up stops at the CPU count by nature. Then, per cell, the locks that
// waited longest during it (include/pcifs/sync.hpp's contention counters):
// what stops a figure from scaling, by name.
#pragma once

#include <vector>

namespace pcifs::bench {

struct CoreBenchArgs {
  std::vector<unsigned> threads;  // empty: 1, 2, 4, ... 2x the CPUs
  unsigned rounds = 5;
  unsigned ms = 200;  // per thread count, per register, per round
  bool json = false;
};

// Returns the exit status: 0, or 1 (a read failed).
int run_core_bench(const CoreBenchArgs& a);

}  // namespace pcifs::bench
