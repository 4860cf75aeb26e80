// pcifs-bench: what pcifs costs over a bare FUSE filesystem, measured in one
// run against two mounts: the pcifs daemon (simulated backend) and a floor
// filesystem with the same session loop and options but no mediation
// (tools/bench/floor_fs.hpp). Rounds alternate between the two, in alternating
// order, so machine noise hits both alike; each figure is the median of its
// rounds, printed beside the floor's with their ratio (tools/bench/report.hpp).
//
//   sudo pcifs-bench [--rounds N] [--quick] [--json] [--pcifs PATH]
//   sudo pcifs-bench --lspci [ROOT]   lspci over a sysfs-backend mount vs over
//                                     ROOT (default /sys/bus/pci); see bench/lspci.hpp
//   sudo pcifs-bench --scale          costs against the number of devices
//                                     (64 vs 4096 functions); see bench/scale.hpp
//
// Needs root: the default view gives BAR files and power_state to root only.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/lspci.hpp"
#include "bench/mounts.hpp"
#include "bench/report.hpp"
#include "bench/scale.hpp"
#include "bench/workloads.hpp"

namespace {

using namespace pcifs::bench;

constexpr int kUsageError = 2;
constexpr int kMountTimeoutMs = 20000;

// Reader scaling (issue 13): 1, 2, 4, ... readers up to twice the CPUs
// (at least 4), each a figure of its own.
void add_reader_figures(std::vector<Figure>& figs) {
  struct N {
    unsigned n;
    const char* name;
    const char* label;
    double (*run)(const Target&, const Sizes&, Observations&);
    unsigned (*ops)(const Sizes&);
  };
  static const N kReaders[] = {
      {1, "readers_1", "config read 4 B, 1 reader", config_readers_n<1>, reader_ops_n<1>},
      {2, "readers_2", "config read 4 B, 2 readers", config_readers_n<2>, reader_ops_n<2>},
      {4, "readers_4", "config read 4 B, 4 readers", config_readers_n<4>, reader_ops_n<4>},
      {8, "readers_8", "config read 4 B, 8 readers", config_readers_n<8>, reader_ops_n<8>},
      {16, "readers_16", "config read 4 B, 16 readers", config_readers_n<16>, reader_ops_n<16>},
      {32, "readers_32", "config read 4 B, 32 readers", config_readers_n<32>, reader_ops_n<32>},
      {64, "readers_64", "config read 4 B, 64 readers", config_readers_n<64>, reader_ops_n<64>},
  };
  const long cpus = std::max(2L, sysconf(_SC_NPROCESSORS_ONLN));
  for (const auto& r : kReaders) {
    if (r.n > 2 * static_cast<unsigned long>(cpus)) break;
    figs.push_back({r.name, r.label, "ops/s", true, r.run, r.ops, {}});
  }
}

std::vector<Figure> figures() {
  std::vector<Figure> figs = {
      {"config_read_qd1", "config read 4 B, QD1", "us/op", false, config_read_qd1_us,
       [](const Sizes& s) { return s.config_ops; }, 1.15},
      {"config_read_qd32", "config read 4 B, QD32 io_uring", "ops/s", true, config_read_qd32_ops,
       [](const Sizes& s) { return s.config_qd32_ops; }, 1.15},
      {"bar_pread4",
       "BAR pread 4 B (resource2+0)",
       "us/op",
       false,
       bar_pread4_us,
       [](const Sizes& s) { return s.bar_ops; },
       {}},
      {"bar_pwrite4",
       "BAR pwrite 4 B (resource2+0)",
       "us/op",
       false,
       bar_pwrite4_us,
       [](const Sizes& s) { return s.bar_ops; },
       {}},
      {"bulk_read_1m", "BAR bulk pread 1 MiB", "MiB/s", true, bulk_read_mibs,
       [](const Sizes& s) { return s.bulk_reads; }, 1.25},
      {"mmap_fault",
       "mmap fault-in (resource0)",
       "us/page",
       false,
       mmap_fault_us_per_page,
       [](const Sizes& s) { return s.mmap_maps * 256; },
       {}},
      {"doe_1_client",
       "DOE exchanges, 1 client",
       "exch/s",
       true,
       doe_1client_per_s,
       [](const Sizes& s) { return s.doe_ops; },
       {}},
      {"doe_8_clients",
       "DOE exchanges, 8 clients",
       "exch/s",
       true,
       doe_8clients_per_s,
       [](const Sizes& s) { return 8 * s.doe8_ops; },
       {}},
      {"quiesce_64_maps",
       "quiesce (D3hot), 64 live maps",
       "ms",
       false,
       quiesce_64_maps_ms,
       [](const Sizes&) { return 1u; },
       {}},
  };
  add_reader_figures(figs);
  return figs;
}

Sizes quick_sizes() {
  Sizes s;
  s.config_ops = 200;
  s.config_qd32_ops = 800;
  s.bar_ops = 200;
  s.bulk_reads = 2;
  s.mmap_maps = 1;
  s.doe_ops = 100;
  s.doe8_ops = 25;
  s.reader_ops = 100;
  return s;
}

std::string self_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

// CPU time (user + system, every thread) of a process so far, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(all.substr(close + 2));  // from field 3, the state
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;
  unsigned long long utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Side {
  const Target* target;
  pid_t server;
};

// Rounds alternate which mount goes first, so neither always runs on the
// heels of the other's work.
void run_rounds(std::vector<Figure>& figs, const Side sides[2], const Sizes& sizes, unsigned rounds,
                Observations obs[2], bool progress) {
  for (unsigned r = 0; r < rounds; ++r) {
    if (progress) std::fprintf(stderr, "\rpcifs-bench: round %u/%u", r + 1, rounds);
    for (auto& f : figs) {
      for (unsigned k = 0; k < 2; ++k) {
        const unsigned which = (r + k) % 2;
        const double cpu0 = cpu_seconds(sides[which].server);
        f.samples[which].push_back(f.run(*sides[which].target, sizes, obs[which]));
        f.cpu_s[which] += cpu_seconds(sides[which].server) - cpu0;
      }
      f.total_ops += f.ops(sizes);
    }
  }
  if (progress) std::fprintf(stderr, "\n");
}

RunInfo run_info(unsigned rounds) {
  RunInfo info;
  info.rounds = rounds;
  info.cpus = sysconf(_SC_NPROCESSORS_ONLN);
  std::ifstream("/proc/loadavg") >> info.loadavg;
  return info;
}

struct Args {
  unsigned rounds = 15;
  bool quick = false;
  bool json = false;
  std::string pcifs;
  std::vector<std::string> only;
  bool floor_no_poll = false;
  std::string lspci_root;  // --lspci: compare lspci over a sysfs-backend mount with sysfs
  bool scale = false;      // --scale: costs against the number of devices
  std::vector<unsigned> scale_counts = {64, 4096};
};

// --only keeps the named figures, e.g. to profile one workload with perf.
std::vector<Figure> selected(const std::vector<std::string>& only) {
  std::vector<Figure> out;
  for (auto& f : figures()) {
    if (only.empty() || std::find(only.begin(), only.end(), f.name) != only.end()) out.push_back(f);
  }
  if (out.empty()) throw std::runtime_error("--only: no figure of that name");
  return out;
}

int bench(const Args& a) {
  auto figs = selected(a.only);
  // Both children fork before this process has any thread (floor_fs.hpp).
  std::string error;
  std::unique_ptr<BenchMount> floor = BenchMount::start_floor(!a.floor_no_poll, &error);
  if (!floor) throw std::runtime_error("floor: " + error);
  std::unique_ptr<BenchMount> daemon = BenchMount::start_pcifs(a.pcifs, &error);
  if (!daemon) throw std::runtime_error("pcifs: " + error);
  install_stop_handlers();
  if (!floor->wait_ready(kMountTimeoutMs, &error) || !daemon->wait_ready(kMountTimeoutMs, &error)) {
    throw std::runtime_error(error);
  }
  RunInfo info = run_info(a.quick ? 1 : a.rounds);
  info.floor_poll = !a.floor_no_poll;
  Observations obs[2], warm_obs[2];
  {
    // Declared after the mounts: the files close before the mounts go.
    Target pcifs_t("pcifs", daemon->device_dir(), "");
    Target floor_t("floor", floor->device_dir(), floor->mountpoint() + "/.floor_stats");
    const Side sides[2] = {{&pcifs_t, daemon->pid()}, {&floor_t, floor->pid()}};
    // Warm-up, untimed: first opens, lookups, the DOE executor, code paths.
    auto warm = selected(a.only);
    run_rounds(warm, sides, quick_sizes(), 1, warm_obs, false);
    run_rounds(figs, sides, a.quick ? quick_sizes() : Sizes{}, info.rounds, obs, isatty(2) != 0);
  }
  daemon->stop();
  floor->stop();
  if (a.json) {
    print_json(figs, info, obs);
  } else {
    print_table(figs, info, obs);
  }
  return 0;
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"pcifs-bench: pcifs against a bare libfuse3 floor, as ratios (needs root)",
               "pcifs-bench"};
  Args a;
  a.pcifs = self_dir() + "/pcifs";
  app.add_option("--rounds", a.rounds, "rounds per figure; each figure is their median")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  app.add_flag("--quick", a.quick, "one small round of everything (a smoke test, not a figure)");
  app.add_flag("--json", a.json, "print the results as JSON (with every round's sample)");
  app.add_option("--only", a.only, "run only these figures (names as in --json), e.g. to profile")
      ->delimiter(',');
  app.add_flag("--floor-no-poll", a.floor_no_poll,
               "give the floor no poll handler (pcifs needs one for doe): shows what the "
               "FUSE_POLL the kernel then sends per io_uring read costs");
  app.add_option("--pcifs", a.pcifs, "the pcifs daemon to start")->capture_default_str();
  app.add_option("--lspci", a.lspci_root,
                 "instead: time `lspci -vvv -xxxx` over a sysfs-backend mount of ROOT against "
                 "lspci over ROOT itself (read-only), e.g. --lspci /sys/bus/pci")
      ->expected(0, 1)
      ->default_str("/sys/bus/pci");
  app.add_flag("--scale", a.scale,
               "instead: the cost of a lookup, a getattr, a read and lspci with 64 and with "
               "4096 simulated functions (a fresh mount per round; --rounds, default 5 here)");
  app.add_option("--scale-counts", a.scale_counts, "--scale: the device counts to compare")
      ->delimiter(',')
      ->check(CLI::Range(1u, 65536u));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kUsageError;
  }
  if (geteuid() != 0) {
    std::fprintf(stderr,
                 "pcifs-bench: needs root: the default view gives resourceN and power_state to "
                 "root only\n");
    return kUsageError;
  }
  if (access("/dev/fuse", R_OK | W_OK) != 0 || access(a.pcifs.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "pcifs-bench: needs /dev/fuse and an executable pcifs (--pcifs %s)\n",
                 a.pcifs.c_str());
    return kUsageError;
  }
  if (app.count("--lspci") > 0) {
    install_stop_handlers();
    LspciBenchArgs la;
    la.pcifs = a.pcifs;
    if (!a.lspci_root.empty()) la.root = a.lspci_root;
    la.rounds = a.quick ? 1 : a.rounds;
    la.json = a.json;
    return run_lspci_bench(la);
  }
  if (a.scale) {
    install_stop_handlers();
    ScaleBenchArgs sa;
    sa.pcifs = a.pcifs;
    if (!a.scale_counts.empty()) sa.counts = a.scale_counts;
    sa.rounds = a.quick ? 1 : (app.count("--rounds") > 0 ? a.rounds : 5);
    sa.json = a.json;
    return run_scale_bench(sa);
  }
  try {
    return bench(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\npcifs-bench: %s\n", e.what());
    return stop_requested() ? 130 : 1;
  }
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pcifs-bench: %s\n", e.what());
    return 1;
  }
}
