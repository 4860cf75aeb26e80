// pcifs-bench's figures and how they are reported: the samples of each
// figure for both mounts, the ratio convention, the table and the JSON.
// One Block per transport measured: pcifs and the floor both on it. When both
// transports ran, cross-transport lines compare io_uring with /dev/fuse for
// the same server in the same run (uring cost / dev cost, <1: io_uring is
// cheaper), the issue 13 section 2 goal being <= 0.5 for pcifs's QD1 read.
//
// Convention: ratio = pcifs cost / floor cost, so >1 always means pcifs is
// slower (times: pcifs/floor; rates: floor/pcifs). The headline is the median
// of the rounds; "best" (fastest round of each) and the servers' CPU time per
// operation are printed beside it because on a loaded machine the wall-clock
// medians mostly measure the scheduler, while CPU per operation does not.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "stats.hpp"
#include "transports.hpp"
#include "workloads.hpp"

namespace pcifs::bench {

struct Figure {
  const char* name;   // for --json and scripts
  const char* label;  // for the table
  const char* unit;
  bool rate;  // higher is better: the ratio is floor/pcifs
  double (*run)(const Target&, const Sizes&, Observations&);
  unsigned (*ops)(const Sizes&);        // operations per round, for CPU per operation
  std::optional<double> target;         // the bound on the ratio
  std::vector<double> samples[2] = {};  // [0] pcifs, [1] floor
  double cpu_s[2] = {0, 0};             // each server's CPU time over all rounds
  unsigned total_ops = 0;               // per server, over all rounds
};

inline constexpr int kPcifs = 0;
inline constexpr int kFloor = 1;

double ratio(const Figure& f);       // of the medians
double best_ratio(const Figure& f);  // of each side's fastest round
double cpu_us_per_op(const Figure& f, int side);

// One transport's results: pcifs and the floor, each checked to serve over it.
struct Block {
  BenchTransport transport = BenchTransport::kDev;
  std::vector<Figure> figs;
  Observations obs[2];                // [kPcifs], [kFloor]
  uint64_t floor_uring_requests = 0;  // requests the floor took over io_uring
};

struct RunInfo {
  unsigned rounds = 0;
  double loadavg = 0;  // 1-minute load average at the start
  long cpus = 0;
  bool floor_poll = true;      // the floor had a poll handler, as pcifs has
  std::string transport_note;  // why --transport=both measured /dev/fuse only
};

void print_table(const std::vector<Block>& blocks, const RunInfo& info);
void print_json(const std::vector<Block>& blocks, const RunInfo& info);

}  // namespace pcifs::bench
