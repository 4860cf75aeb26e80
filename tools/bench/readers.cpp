#include "readers.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "lspci.hpp"
#include "mounts.hpp"
#include "stats.hpp"
#include "transports.hpp"
#include "workloads.hpp"

namespace pcifs::bench {
namespace {

constexpr int kMountTimeoutMs = 20000;
constexpr uint32_t kPmcsr = 0x44;  // the simulated endpoint's PM control/status register

struct Source {
  const char* key;          // JSON
  const char* label;        // table heading
  const char* ratio_label;  // its ratio to the floor's heading
  std::string path;         // the config file
  uint32_t offset;
  std::vector<std::vector<double>> rounds;  // [reader row][round]
};

std::vector<unsigned> reader_counts(unsigned max_readers) {
  if (max_readers == 0) {
    const long cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    max_readers = std::max(4u, 2 * static_cast<unsigned>(cpus));
  }
  std::vector<unsigned> out;
  for (unsigned n = 1; n <= max_readers; n *= 2) out.push_back(n);
  return out;
}

std::unique_ptr<BenchMount> mounted(std::unique_ptr<BenchMount> m, const std::string& what,
                                    std::string* error) {
  if (!m || !m->wait_ready(kMountTimeoutMs, error)) {
    *error = what + ": " + *error;
    return nullptr;
  }
  return m;
}

// The pcifs columns, each against the floor: those with a ratio label (the
// floor itself and the kernel's own file, not a FUSE server, have none).
bool has_ratio(const Source& s) { return *s.ratio_label != '\0'; }

void print_table(const std::vector<Source>& src, const std::vector<unsigned>& counts,
                 const std::string& transport, unsigned rounds) {
  std::printf("config read 4 B, N reader processes, reads/s (median of %u rounds), over %s\n",
              rounds, transport.c_str());
  const Source& floor = src.back();
  std::printf("%8s", "readers");
  for (const auto& s : src) std::printf(" %16s", s.label);
  for (const auto& s : src) {
    if (has_ratio(s)) std::printf(" %10s", s.ratio_label);
  }
  std::printf("\n");
  for (size_t r = 0; r < counts.size(); ++r) {
    std::printf("%8u", counts[r]);
    for (const auto& s : src) std::printf(" %16.0f", median(s.rounds[r]));
    const double f = median(floor.rounds[r]);
    for (const auto& s : src) {
      if (has_ratio(s)) std::printf(" %10.2f", f > 0 ? median(s.rounds[r]) / f : 0);
    }
    std::printf("\n");
  }
  std::printf("(x / floor: pcifs's reads/s over the floor's; the goal at 16 readers is >= 0.9)\n");
}

void print_json(const std::vector<Source>& src, const std::vector<unsigned>& counts,
                const std::string& transport, unsigned rounds, const std::string& device) {
  std::printf("{\"transport\": \"%s\", \"rounds\": %u, \"sysfs_device\": \"%s\", \"rows\": [",
              transport.c_str(), rounds, device.c_str());
  for (size_t r = 0; r < counts.size(); ++r) {
    std::printf("%s{\"readers\": %u", r ? ", " : "", counts[r]);
    for (const auto& s : src) std::printf(", \"%s\": %.0f", s.key, median(s.rounds[r]));
    std::printf("}");
  }
  std::printf("]}\n");
}

}  // namespace

int run_readers_bench(const ReadersBenchArgs& a) {
  const BenchTransport transport =
      a.transport == "uring" ? BenchTransport::kUring : BenchTransport::kDev;
  const auto names = a.device.empty() ? list_devices(a.root) : std::vector<std::string>{a.device};
  const std::string device = names.empty() ? "" : names.front();
  std::string error;
  // Every mount forks before this process has a thread (floor_fs.hpp).
  std::unique_ptr<BenchMount> sysfs_mount;
  if (!device.empty()) {
    const std::string backend = a.root == "/sys/bus/pci" ? "sysfs" : "sysfs:" + a.root;
    sysfs_mount = mounted(BenchMount::start_pcifs(a.pcifs, &error, backend,
                                                  "devices/" + device + "/config", a.transport),
                          "pcifs --backend=" + backend, &error);
    if (!sysfs_mount) {
      std::fprintf(stderr, "pcifs-bench --readers: %s\n", error.c_str());
      return 1;
    }
  }
  auto sim = mounted(
      BenchMount::start_pcifs(a.pcifs, &error, "sim", "devices/0000:01:00.0/config", a.transport),
      "pcifs --backend=sim", &error);
  auto floor = sim ? mounted(BenchMount::start_floor(/*with_poll=*/true,
                                                     transport == BenchTransport::kUring, &error),
                             "the floor", &error)
                   : nullptr;
  if (!sim || !floor) {
    std::fprintf(stderr, "pcifs-bench --readers: %s\n", error.c_str());
    return 1;
  }
  try {
    check_served_over(transport, *sim, floor.get(), kMountTimeoutMs);
    if (sysfs_mount) check_served_over(transport, *sysfs_mount, nullptr, kMountTimeoutMs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pcifs-bench --readers: %s\n", e.what());
    return 1;
  }

  std::vector<Source> src;
  if (sysfs_mount) {
    src.push_back({"sysfs", "sysfs", "", a.root + "/devices/" + device + "/config", 0, {}});
    src.push_back({"pcifs_sysfs_shadow",
                   "pcifs sysfs",
                   "sysfs/fl",
                   sysfs_mount->mountpoint() + "/devices/" + device + "/config",
                   0,
                   {}});
  }
  src.push_back({"pcifs_sim_shadow", "pcifs sim @0", "@0/fl", sim->device_dir() + "config", 0, {}});
  src.push_back(
      {"pcifs_sim_pmcsr", "pcifs sim PMCSR", "PMCSR/fl", sim->device_dir() + "config", kPmcsr, {}});
  src.push_back(
      {"floor", "floor", "", floor->device_dir() + "config", kPmcsr, {}});  // last: the base

  const auto counts = reader_counts(a.max_readers);
  for (auto& s : src) s.rounds.resize(counts.size());
  try {
    for (unsigned round = 0; round < a.rounds && !stop_requested(); ++round) {
      for (size_t r = 0; r < counts.size(); ++r) {
        for (size_t k = 0; k < src.size(); ++k) {  // the order rotates every round
          Source& s = src[(k + round + r) % src.size()];
          s.rounds[r].push_back(
              parallel_preads(s.path, s.offset, counts[r], a.ops_per_reader, s.label));
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pcifs-bench --readers: %s\n", e.what());
    return 1;
  }
  if (stop_requested()) return 1;
  const std::string over = transport_server_name(transport);
  if (a.json) {
    print_json(src, counts, transport_arg(transport), a.rounds, device);
  } else {
    if (!device.empty())
      std::printf("sysfs columns: %s/devices/%s\n", a.root.c_str(), device.c_str());
    print_table(src, counts, over, a.rounds);
  }
  return 0;
}

}  // namespace pcifs::bench
