// pcifs-bench --scale: whether a request's cost depends on how many devices
// the daemon serves (issue 13 §3). For each device count (default 64 and
// 4096 simulated functions, `"count": N` of one endpoint) it mounts a fresh
// daemon per round and measures, on 64 devices spread over the whole set:
//   - cold lookup: the first stat(2) of devices/B/vendor (lookups of B and
//     vendor, and a getattr), us per file
//   - getattr: statx(AT_STATX_FORCE_SYNC) of that file again (a FUSE_GETATTR
//     each time, never the attribute cache), us per call
//   - read: a 4-byte pread of devices/B/config through an open fd, us per read
//   - cold and warm `lspci` (plain, over the mount), ms for the whole set
// Then the number of views: the smallest set again, served by a daemon with
// each further view count (default 64) of every device, each its own mount
// (`--view` files), the figures measured on the first view while the others
// exist. With two transports (--transport=both) every configuration is
// measured on each, in the same rounds. Rounds alternate the order of the
// configurations. Each figure is the median of its rounds; the table puts
// each configuration beside the first on its transport (the smallest set,
// one view) and gives their ratio (flat: 1.00).
#pragma once

#include <string>
#include <vector>

#include "transports.hpp"

namespace pcifs::bench {

struct ScaleBenchArgs {
  std::string pcifs;                                                // the daemon
  std::vector<BenchTransport> transports = {BenchTransport::kDev};  // each measured in turn
  std::vector<unsigned> counts = {64, 4096};
  std::vector<unsigned> views = {1, 64};  // view counts (1 is the plain mount)
  unsigned rounds = 5;
  bool json = false;
};

// Returns the exit status: 0, or 1 (a mount or a measurement failed).
int run_scale_bench(const ScaleBenchArgs& a);

}  // namespace pcifs::bench
