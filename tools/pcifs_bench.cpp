// pcifs-bench: what pcifs costs over a bare FUSE filesystem, measured in one
// run against two mounts per FUSE transport: the pcifs daemon (simulated
// backend, --transport=dev or uring) and a floor filesystem with the same
// session loop and options but no mediation (tools/bench/floor_fs.hpp), on the
// same transport. Every round runs each figure on every mount, in an order
// that rotates from round to round, so machine noise hits all alike; each
// figure is the median of its rounds, printed beside the floor's with their
// ratio, one block per transport, then io_uring against /dev/fuse for the
// same server (tools/bench/report.hpp). Each mount is checked to serve over
// the transport asked for before any figure is taken.
//
//   sudo pcifs-bench [--rounds N] [--quick] [--json] [--pcifs PATH]
//                    [--transport=dev|uring|both]   default both: sets the
//                    kernel's enable_uring to Y for the run (transports.hpp)
//   sudo pcifs-bench --lspci [ROOT]   lspci over a sysfs-backend mount vs over
//                                     ROOT (default /sys/bus/pci); see bench/lspci.hpp
//   sudo pcifs-bench --scale          costs against the number of devices and
//                                     views (64 vs 4096 functions, 1 vs 64
//                                     views); see bench/scale.hpp
//   pcifs-bench --core [--threads N,..]  the Mediator's read path with many
//                                     threads, no FUSE; see bench/core_paths.hpp
//   sudo pcifs-bench --readers [ROOT] reads/s with 1, 2, 4, ... reader processes:
//                                     ROOT's config, pcifs over it and over the
//                                     simulator, the floor; see bench/readers.hpp
//
// Needs root: the default view gives BAR files and power_state to root only.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/core_paths.hpp"
#include "bench/lspci.hpp"
#include "bench/mounts.hpp"
#include "bench/readers.hpp"
#include "bench/report.hpp"
#include "bench/scale.hpp"
#include "bench/transports.hpp"
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
  size_t block;  // index into the blocks
  int which;     // kPcifs or kFloor
};

// Every round runs each figure on every mount; the order rotates from round
// to round, so no mount always runs on the heels of another's work.
void run_rounds(std::vector<Block>& blocks, const std::vector<Side>& sides, const Sizes& sizes,
                unsigned rounds, bool progress) {
  const size_t n = sides.size();
  const size_t nfigs = blocks.front().figs.size();
  for (unsigned r = 0; r < rounds; ++r) {
    if (progress) std::fprintf(stderr, "\rpcifs-bench: round %u/%u", r + 1, rounds);
    for (size_t fi = 0; fi < nfigs; ++fi) {
      for (size_t k = 0; k < n; ++k) {
        const Side& side = sides[(r + k) % n];
        Block& b = blocks[side.block];
        Figure& f = b.figs[fi];
        const double cpu0 = cpu_seconds(side.server);
        f.samples[side.which].push_back(f.run(*side.target, sizes, b.obs[side.which]));
        f.cpu_s[side.which] += cpu_seconds(side.server) - cpu0;
      }
      for (auto& b : blocks) b.figs[fi].total_ops += b.figs[fi].ops(sizes);
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
  std::string transport = "both";  // dev, uring or both (transports.hpp)
  std::string lspci_root;          // --lspci: compare lspci over a sysfs-backend mount with sysfs
  bool scale = false;              // --scale: costs against the number of devices
  std::vector<unsigned> scale_counts = {64, 4096};
  std::vector<unsigned> scale_views;  // --scale-views; empty: ScaleBenchArgs's
  bool core = false;                  // --core: the Mediator's read path with many threads
  std::vector<unsigned> core_threads;
  std::string readers_root;  // --readers: reader scaling, ROOT's config beside pcifs and the floor
  std::string readers_device;
  unsigned max_readers = 0;
  bool verbose = false;
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

// One transport's two mounts.
struct Pair {
  BenchTransport transport;
  std::unique_ptr<BenchMount> pcifs, floor;
};

// Refuses a mount that serves over another transport than the one asked
// for: no figure is printed for a transport that silently fell back.
void check_transport(const Pair& p) {
  check_served_over(p.transport, *p.pcifs, p.floor.get(), kMountTimeoutMs);
}

// Starts every mount (all fork before this process has a thread,
// floor_fs.hpp), waits for them and checks their transports.
std::vector<Pair> start_mounts(const Args& a, const std::vector<BenchTransport>& transports) {
  std::vector<Pair> pairs;
  std::string error;
  for (BenchTransport t : transports) {
    const bool uring = t == BenchTransport::kUring;
    Pair p{t, nullptr, BenchMount::start_floor(!a.floor_no_poll, uring, &error)};
    if (!p.floor) throw std::runtime_error("floor: " + error);
    p.pcifs = BenchMount::start_pcifs(a.pcifs, &error, "sim", "devices/0000:01:00.0/config",
                                      transport_arg(t));
    if (!p.pcifs) throw std::runtime_error("pcifs: " + error);
    pairs.push_back(std::move(p));
  }
  for (auto& p : pairs) {
    if (!p.floor->wait_ready(kMountTimeoutMs, &error) ||
        !p.pcifs->wait_ready(kMountTimeoutMs, &error)) {
      throw std::runtime_error(error);
    }
    check_transport(p);
  }
  return pairs;
}

std::vector<Block> new_blocks(const std::vector<Pair>& pairs,
                              const std::vector<std::string>& only) {
  std::vector<Block> blocks;
  for (const auto& p : pairs) {
    Block b;
    b.transport = p.transport;
    b.figs = selected(only);
    blocks.push_back(std::move(b));
  }
  return blocks;
}

int bench(const Args& a, const TransportChoice& choice) {
  std::vector<Pair> pairs = start_mounts(a, choice.transports);
  RunInfo info = run_info(a.quick ? 1 : a.rounds);
  info.floor_poll = !a.floor_no_poll;
  info.transport_note = choice.note;
  std::vector<Block> blocks = new_blocks(pairs, a.only);
  {
    // Declared after the mounts: the files close before the mounts go.
    std::vector<std::unique_ptr<Target>> targets;
    std::vector<Side> sides;
    for (size_t i = 0; i < pairs.size(); ++i) {
      const std::string t = std::string(" (") + transport_server_name(pairs[i].transport) + ")";
      const BenchMount& pc = *pairs[i].pcifs;
      const BenchMount& fl = *pairs[i].floor;
      targets.push_back(std::make_unique<Target>("pcifs" + t, pc.device_dir(), ""));
      sides.push_back({targets.back().get(), pc.pid(), i, kPcifs});
      targets.push_back(std::make_unique<Target>("floor" + t, fl.device_dir(),
                                                 fl.mountpoint() + "/.floor_stats"));
      sides.push_back({targets.back().get(), fl.pid(), i, kFloor});
    }
    // Warm-up, untimed: first opens, lookups, the DOE executor, code paths.
    std::vector<Block> warm = new_blocks(pairs, a.only);
    run_rounds(warm, sides, quick_sizes(), 1, false);
    run_rounds(blocks, sides, a.quick ? quick_sizes() : Sizes{}, info.rounds, isatty(2) != 0);
  }
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].transport != BenchTransport::kUring) continue;
    // Still on the rings after every round, and they carried the work.
    check_transport(pairs[i]);
    blocks[i].floor_uring_requests = std::stoull(floor_stats(*pairs[i].floor)["uring_requests"]);
    if (blocks[i].floor_uring_requests == 0) {
      throw std::runtime_error("the floor on io_uring took no request over its rings");
    }
  }
  for (auto& p : pairs) {
    p.pcifs->stop();
    p.floor->stop();
  }
  if (a.json) {
    print_json(blocks, info);
  } else {
    print_table(blocks, info);
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
  app.add_flag("--verbose", a.verbose, "say on stderr which child (pid) serves which mount");
  app.add_option("--only", a.only, "run only these figures (names as in --json), e.g. to profile")
      ->delimiter(',');
  app.add_flag("--floor-no-poll", a.floor_no_poll,
               "give the floor no poll handler (pcifs needs one for doe): shows what the "
               "FUSE_POLL the kernel then sends per io_uring read costs");
  app.add_option("--pcifs", a.pcifs, "the pcifs daemon to start")->capture_default_str();
  app.add_option("--transport", a.transport,
                 "the FUSE transports to measure, each with pcifs and the floor on it: dev "
                 "(/dev/fuse), uring (FUSE over io_uring) or both, side by side in one run. uring "
                 "and both set /sys/module/fuse/parameters/enable_uring to Y for the run and put "
                 "it back at the end; both measures dev only where that cannot be done. --scale "
                 "takes all three; --lspci and --readers take dev or uring (both: dev)")
      ->check(CLI::IsMember({"dev", "uring", "both"}))
      ->capture_default_str();
  app.add_option("--lspci", a.lspci_root,
                 "instead: time `lspci -vvv -xxxx` over a sysfs-backend mount of ROOT against "
                 "lspci over ROOT itself (read-only), e.g. --lspci /sys/bus/pci")
      ->expected(0, 1)
      ->default_str("/sys/bus/pci");
  app.add_option("--readers", a.readers_root,
                 "instead: 4-byte config reads by 1, 2, 4, ... reader processes (up to twice the "
                 "CPUs): a device's config under ROOT read directly and through a sysfs-backend "
                 "mount, the simulated endpoint (shadowed register and PMCSR), and the floor, "
                 "side by side (--rounds, default 5 here)")
      ->expected(0, 1)
      ->default_str("/sys/bus/pci");
  app.add_option("--readers-device", a.readers_device,
                 "--readers: the device under ROOT/devices (default: the first)");
  app.add_option("--max-readers", a.max_readers,
                 "--readers: the most reader processes (default: twice the CPUs, at least 4)")
      ->check(CLI::Range(1u, 1024u));
  app.add_flag("--scale", a.scale,
               "instead: the cost of a lookup, a getattr, a read and lspci with 64 and with "
               "4096 simulated functions, and with 64 functions in 1 and in 64 views (a fresh "
               "mount per round; --rounds, default 5 here)");
  app.add_option("--scale-counts", a.scale_counts, "--scale: the device counts to compare")
      ->delimiter(',')
      ->check(CLI::Range(1u, 65536u));
  app.add_option("--scale-views", a.scale_views,
                 "--scale: the view counts to compare on the smallest set (default 1,64)")
      ->delimiter(',')
      ->check(CLI::Range(1u, 1024u));
  app.add_flag("--core", a.core,
               "instead: the Mediator's 4-byte config read with 1, 2, 4, ... threads on one "
               "device, in this process, no FUSE and no root (--rounds, default 5 here)");
  app.add_option("--threads", a.core_threads, "--core: the thread counts")
      ->delimiter(',')
      ->check(CLI::Range(1u, 1024u));
  try {
    app.parse(argc, argv);
    BenchMount::set_verbose(a.verbose);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kUsageError;
  }
  if (a.core) {
    CoreBenchArgs ca;
    ca.threads = a.core_threads;
    ca.rounds = a.quick ? 1 : (app.count("--rounds") > 0 ? a.rounds : 5);
    if (a.quick) ca.ms = 20;
    ca.json = a.json;
    return run_core_bench(ca);
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
  // Before the switch: from here a stop signal only sets a flag, and every
  // way out of run() unwinds through `choice`, which puts enable_uring back
  // once the mounts are gone.
  install_stop_handlers();
  const bool readers = app.count("--readers") > 0;
  const bool one_transport = app.count("--lspci") > 0 || readers;
  TransportChoice choice;
  std::string error;
  if (!choose_transports(one_transport && a.transport == "both" ? "dev" : a.transport, &choice,
                         &error)) {
    std::fprintf(stderr, "pcifs-bench: %s\n", error.c_str());
    return kUsageError;
  }
  if (!choice.note.empty()) std::fprintf(stderr, "pcifs-bench: note: %s\n", choice.note.c_str());
  if (app.count("--lspci") > 0) {
    LspciBenchArgs la;
    la.pcifs = a.pcifs;
    la.transport = transport_arg(choice.transports.front());
    if (!a.lspci_root.empty()) la.root = a.lspci_root;
    la.rounds = a.quick ? 1 : a.rounds;
    la.json = a.json;
    return run_lspci_bench(la);
  }
  if (readers) {
    ReadersBenchArgs ra;
    ra.pcifs = a.pcifs;
    ra.transport = transport_arg(choice.transports.front());
    if (!a.readers_root.empty()) ra.root = a.readers_root;
    ra.device = a.readers_device;
    ra.max_readers = a.max_readers;
    ra.rounds = a.quick ? 1 : (app.count("--rounds") > 0 ? a.rounds : 5);
    if (a.quick) ra.ops_per_reader = 200;
    ra.json = a.json;
    return run_readers_bench(ra);
  }
  if (a.scale) {
    ScaleBenchArgs sa;
    sa.pcifs = a.pcifs;
    sa.transports = choice.transports;
    if (!a.scale_counts.empty()) sa.counts = a.scale_counts;
    if (!a.scale_views.empty()) sa.views = a.scale_views;
    sa.rounds = a.quick ? 1 : (app.count("--rounds") > 0 ? a.rounds : 5);
    sa.json = a.json;
    return run_scale_bench(sa);
  }
  try {
    return bench(a, choice);
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
