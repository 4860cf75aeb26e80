#include "scale.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "lspci.hpp"
#include "mounts.hpp"
#include "stats.hpp"

namespace pcifs::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMountTimeoutMs = 60000;
constexpr unsigned kSample = 64;  // devices measured per round, spread over the set

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// Function i of a set whose first function is 0000:01:00.0: the function
// counts first (0-7), then the device (0-31), then the bus (README, "count").
std::string bdf_of(unsigned i) {
  char b[32];
  std::snprintf(b, sizeof b, "0000:%02x:%02x.%x", 1 + i / 256, (i / 8) % 32, i % 8);
  return b;
}

struct Figures {
  double lookup_us = 0, group_lookup_us = 0, getattr_us = 0, read_us = 0, lspci_cold_ms = 0,
         lspci_warm_ms = 0;
  double lspci_cold_us_fn = 0, lspci_warm_us_fn = 0;  // per function of the set
};

// A set file of `count` identical endpoints, in `dir`, each in its own IOMMU
// group (10 + i) as on a host with an IOMMU: iommu_groups/ has `count` entries.
std::string write_set(const std::string& dir, unsigned count) {
  std::string path = dir + "/set-" + std::to_string(count) + ".json";
  std::ofstream out(path);
  out << R"({"devices": [)";
  for (unsigned i = 0; i < count; ++i) {
    out << (i ? ",\n" : "\n") << R"({"bdf": ")" << bdf_of(i)
        << R"(", "vendor": "0x1b36", "device": "0x10f0", "class": "0x010802", "config_size": 4096,)"
        << R"( "iommu_group": )" << 10 + i
        << R"(, "bars": [{"index": 0, "type": "mem64", "size": 16384}],)"
        << R"( "capabilities": {"pm": {}, "msi": {}, "pcie": {"port": "endpoint", "flr": true}}})";
  }
  out << "]}\n";
  return path;
}

// One round on a fresh mount: nothing is cached in the kernel yet.
bool measure(const std::string& mnt, unsigned count, Figures* f, std::string* error) {
  std::vector<std::string> files, links;
  for (unsigned k = 0; k < kSample; ++k) {
    const unsigned i = k * count / kSample + count / kSample / 2;
    files.push_back(mnt + "/devices/" + bdf_of(i));
    links.push_back(mnt + "/iommu_groups/" + std::to_string(10 + i) + "/devices/" + bdf_of(i));
  }
  struct stat st {};
  // Three cold lookups each (the group, its devices/, the link), not followed.
  auto t0 = Clock::now();
  for (const auto& l : links) {
    if (lstat(l.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) {
      *error = "lstat " + l + " failed or is no link";
      return false;
    }
  }
  f->group_lookup_us = us_since(t0) / kSample;
  t0 = Clock::now();
  for (const auto& d : files) {
    if (stat((d + "/vendor").c_str(), &st) != 0) {
      *error = "stat " + d + "/vendor failed";
      return false;
    }
  }
  f->lookup_us = us_since(t0) / kSample;
  struct statx sx {};
  t0 = Clock::now();
  for (const auto& d : files) {
    if (statx(AT_FDCWD, (d + "/vendor").c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx)) {
      *error = "statx " + d + "/vendor failed";
      return false;
    }
  }
  f->getattr_us = us_since(t0) / kSample;
  std::vector<int> fds;
  fds.reserve(files.size());
  for (const auto& d : files) fds.push_back(open((d + "/config").c_str(), O_RDONLY));
  bool ok = std::none_of(fds.begin(), fds.end(), [](int fd) { return fd < 0; });
  constexpr int kReadsPerFile = 16;
  t0 = Clock::now();
  for (int r = 0; ok && r < kReadsPerFile; ++r) {
    for (int fd : fds) {
      uint32_t v = 0;
      ok = ok && pread(fd, &v, sizeof v, 0x44) == static_cast<ssize_t>(sizeof v);
    }
  }
  f->read_us = us_since(t0) / (kSample * kReadsPerFile);
  for (int fd : fds) {
    if (fd >= 0) close(fd);
  }
  if (!ok) {
    *error = "open or pread of config failed";
    return false;
  }
  const std::vector<std::string> args = {"-A", "linux-sysfs", "-O", "sysfs.path=" + mnt};
  const LspciRun cold = run_lspci(args, 0);
  const LspciRun warm = run_lspci(args, 0);
  if (!cold.ok || !warm.ok) {
    *error = "lspci failed over " + mnt;
    return false;
  }
  f->lspci_cold_ms = cold.ms;
  f->lspci_warm_ms = warm.ms;
  f->lspci_cold_us_fn = cold.ms * 1000 / count;
  f->lspci_warm_us_fn = warm.ms * 1000 / count;
  return true;
}

}  // namespace

int run_scale_bench(const ScaleBenchArgs& a) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/pcifs-bench-scale.XXXXXX";
  const char* dir = mkdtemp(tmpl.data());
  if (dir == nullptr) {
    std::perror("pcifs-bench --scale: mkdtemp");
    return 1;
  }
  std::vector<Figures> result;  // per configuration: the medians
  int rc = 0;
  // The configurations, on each transport: each count with one view, then
  // the first count with each further number of views.
  struct Config {
    unsigned count, views;
    size_t set;  // index into sets
    BenchTransport transport;
    size_t first;  // the configuration this one is compared with (same transport)
  };
  std::vector<Config> configs;
  std::vector<std::string> sets;
  for (unsigned count : a.counts) sets.push_back(write_set(dir, count));
  for (BenchTransport t : a.transports) {
    const size_t first = configs.size();
    for (size_t i = 0; i < a.counts.size(); ++i) configs.push_back({a.counts[i], 1, i, t, first});
    for (unsigned v : a.views) {
      if (v > 1) configs.push_back({a.counts.front(), v, 0, t, first});
    }
  }
  // Rounds alternate the order of the configurations, so that machine noise
  // hits every one alike (a round is one fresh mount of each).
  const size_t n = configs.size();
  std::vector<std::vector<Figures>> rounds(n);
  for (unsigned r = 0; r < a.rounds && rc == 0 && !stop_requested(); ++r) {
    for (size_t k = 0; k < n && rc == 0; ++k) {
      const size_t c = r % 2 ? n - 1 - k : k;
      const Config& cfg = configs[c];
      std::fprintf(stderr, "\rpcifs-bench --scale: round %u/%u, %u functions, %u view(s), %s   ",
                   r + 1, a.rounds, cfg.count, cfg.views, transport_arg(cfg.transport));
      std::string error;
      auto m = BenchMount::start_pcifs(a.pcifs, &error, "sim:" + sets[cfg.set],
                                       "devices/" + bdf_of(cfg.count - 1) + "/config",
                                       transport_arg(cfg.transport), cfg.views);
      Figures f;
      bool ok = m && m->wait_ready(kMountTimeoutMs, &error);
      if (ok) {
        try {  // a figure only for the transport asked for
          check_served_over(cfg.transport, *m, nullptr, kMountTimeoutMs);
        } catch (const std::exception& e) {
          error = e.what();
          ok = false;
        }
      }
      if (!ok || !measure(m->mountpoint(), cfg.count, &f, &error)) {
        std::fprintf(stderr, "\npcifs-bench --scale: %u functions, %u view(s), %s: %s\n", cfg.count,
                     cfg.views, transport_arg(cfg.transport), error.c_str());
        rc = 1;
        break;
      }
      rounds[c].push_back(f);
    }
  }
  struct Row {
    const char* name;
    const char* unit;
    double Figures::*field;
  };
  const Row rows[] = {
      {"cold lookup + getattr (devices/B/vendor)", "us", &Figures::lookup_us},
      {"cold lookup of a group's link (iommu_groups/G/devices/B)", "us", &Figures::group_lookup_us},
      {"getattr (statx, forced)", "us", &Figures::getattr_us},
      {"config read 4 B", "us", &Figures::read_us},
      {"lspci, cold, per function", "us", &Figures::lspci_cold_us_fn},
      {"lspci, warm, per function", "us", &Figures::lspci_warm_us_fn},
      {"lspci, cold, whole set", "ms", &Figures::lspci_cold_ms},
      {"lspci, warm, whole set", "ms", &Figures::lspci_warm_ms}};
  for (size_t c = 0; c < n; ++c) {
    Figures m;
    for (const auto& row : rows) {
      std::vector<double> v;
      for (const auto& f : rounds[c]) v.push_back(f.*row.field);
      m.*row.field = median(v);
    }
    result.push_back(m);
  }
  std::fprintf(stderr, "\n");
  for (const auto& set : sets) unlink(set.c_str());
  rmdir(dir);
  if (rc != 0 || result.empty()) return 1;
  if (a.json) {
    std::printf("{\"rounds\": %u, \"counts\": [", a.rounds);
    for (size_t i = 0; i < n; ++i) std::printf("%s%u", i ? ", " : "", configs[i].count);
    std::printf("], \"views\": [");
    for (size_t i = 0; i < n; ++i) std::printf("%s%u", i ? ", " : "", configs[i].views);
    std::printf("], \"transports\": [");
    for (size_t i = 0; i < n; ++i)
      std::printf("%s\"%s\"", i ? ", " : "", transport_arg(configs[i].transport));
    std::printf("], \"figures\": {");
    for (size_t r = 0; r < std::size(rows); ++r) {
      std::printf("%s\"%s (%s)\": [", r ? ", " : "", rows[r].name, rows[r].unit);
      for (size_t i = 0; i < result.size(); ++i)
        std::printf("%s%.1f", i ? ", " : "", result[i].*rows[r].field);
      std::printf("]");
    }
    std::printf("}}\n");
    return 0;
  }
  std::printf(
      "pcifs-bench --scale: %u rounds, a fresh mount each; medians; with several views, "
      "measured on the first while the others are mounted\n\n",
      a.rounds);
  const bool several = a.transports.size() > 1;
  auto label = [several](const Config& c) {
    return std::to_string(c.count) + " functions" +
           (c.views > 1 ? ", " + std::to_string(c.views) + " views" : "") +
           (several ? std::string(", ") + transport_arg(c.transport) : "");
  };
  std::printf("| figure |");
  for (const auto& c : configs) std::printf(" %s |", label(c).c_str());
  size_t ratios = 0;
  for (size_t i = 0; i < n; ++i) {
    const Config& c = configs[i];
    if (c.first == i) continue;
    ++ratios;
    const std::string on = several ? std::string(", ") + transport_arg(c.transport) : "";
    if (c.views > 1)
      std::printf(" ratio %u views / 1%s |", c.views, on.c_str());
    else
      std::printf(" ratio %u/%u functions%s |", c.count, configs[c.first].count, on.c_str());
  }
  std::printf("\n|---|");
  for (size_t i = 0; i < n + ratios; ++i) std::printf("---|");
  std::printf("\n");
  for (const auto& row : rows) {
    std::printf("| %s |", row.name);
    for (const auto& f : result) std::printf(" %.1f %s |", f.*row.field, row.unit);
    for (size_t i = 0; i < n; ++i) {
      const Config& c = configs[i];
      if (c.first == i) continue;
      const double first = result[c.first].*row.field;
      const bool whole_set =
          row.field == &Figures::lspci_cold_ms || row.field == &Figures::lspci_warm_ms;
      if (whole_set && c.count != configs[c.first].count)
        std::printf(" (grows with the set) |");
      else
        std::printf(" %.2f |", first > 0 ? result[i].*row.field / first : 0);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace pcifs::bench
