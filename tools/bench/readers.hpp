// pcifs-bench --readers: issue 13's reader-scaling table in one run. N reader
// processes (1, 2, 4, ... up to twice the CPUs, at least 4), each with its own
// open `config`, make 4-byte preads in a loop, started together by a gate;
// reads per second, all readers together, for each source side by side:
//
//   sysfs            ROOT/devices/DEV/config at offset 0: the kernel's own file
//   pcifs sysfs      the same device through `pcifs --backend=sysfs` of ROOT,
//                    offset 0 (served from the shadow)
//   pcifs sim shadow the simulated endpoint 0000:01:00.0, offset 0 (shadow)
//   pcifs sim PMCSR  the same endpoint, offset 0x44 (admitted by the device's
//                    gate, read from the simulated device)
//   floor            the bare libfuse filesystem (floor_fs.hpp), same loop and
//                    transport as pcifs, serving config from memory
//
// Rounds rotate the order of the sources; each figure is the median of its
// rounds. The goal (issue 13 §1): each pcifs column at 16 readers at least
// 0.9x the floor, measured side by side. Read-only on ROOT (the sysfs daemon
// opens config read-only until something writes, and nothing here does). The
// sysfs columns are left out when ROOT has no devices.
#pragma once

#include <string>

namespace pcifs::bench {

struct ReadersBenchArgs {
  std::string pcifs;              // the daemon
  std::string transport = "dev";  // pcifs's and the floor's transport: dev or uring
  std::string root = "/sys/bus/pci";
  std::string device;  // under ROOT/devices; "" = the first, sorted
  unsigned rounds = 5;
  unsigned ops_per_reader = 4000;
  unsigned max_readers = 0;  // 0: twice the online CPUs, at least 4
  bool json = false;
};

// Returns the exit status: 0, or 1 when a mount or a read failed.
int run_readers_bench(const ReadersBenchArgs& a);

}  // namespace pcifs::bench
