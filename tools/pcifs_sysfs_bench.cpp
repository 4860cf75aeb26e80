// pcifs-sysfs-bench: how long reading the whole config space of every device
// under a sysfs root takes, batched through io_uring and through the plain
// pread fallback, in the same run. Read-only: it never writes anything.
//
//   pcifs-sysfs-bench [--root DIR] [--rounds N]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "sysfs/sysfs_backend.hpp"

namespace {

using pcifs::backend::ConfigReadItem;
using pcifs::backend::sysfs::SysfsBackend;
using pcifs::backend::sysfs::SysfsOptions;

struct Timing {
  double us_per_run = 0;
  size_t devices = 0;
  size_t bytes = 0;
  size_t errors = 0;
  bool uring = false;
};

Timing measure(const std::string& root, bool force_pread, unsigned rounds) {
  SysfsOptions o;
  o.force_pread_batch = force_pread;
  SysfsBackend backend(root, o);
  auto devs = backend.devices();
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<ConfigReadItem> items;
  bufs.reserve(devs.size());
  for (auto& d : devs) bufs.emplace_back(d->info().config_size);
  for (size_t i = 0; i < devs.size(); ++i) {
    items.push_back({devs[i].get(), 0, bufs[i], pcifs::Errno(EIO)});
  }
  Timing t;
  t.devices = devs.size();
  t.uring = backend.batch_uses_uring();
  for (auto& b : bufs) t.bytes += b.size();
  backend.config_read_batch(items);  // warm-up: page in, open files
  auto start = std::chrono::steady_clock::now();
  for (unsigned r = 0; r < rounds; ++r) {
    backend.config_read_batch(items);
    for (auto& it : items) t.errors += it.result.ok() ? 0 : 1;
  }
  std::chrono::duration<double, std::micro> spent = std::chrono::steady_clock::now() - start;
  t.us_per_run = spent.count() / rounds;
  return t;
}

void print(const char* name, const Timing& t, bool wanted_uring) {
  double per_dev = t.devices ? t.us_per_run / static_cast<double>(t.devices) : 0;
  std::printf("%-9s %8.1f us/run  %8.2f us/device  (%zu devices, %zu bytes/run, %zu errors%s)\n",
              name, t.us_per_run, per_dev, t.devices, t.bytes, t.errors,
              wanted_uring && !t.uring ? ", io_uring unavailable: this is pread too" : "");
}

}  // namespace

static int run(int argc, char** argv) {
  CLI::App app{"Config-read benchmark of the sysfs backend: io_uring batch vs pread (read-only)"};
  std::string root = "/sys/bus/pci";
  unsigned rounds = 200;
  app.add_option("--root", root, "sysfs-shaped tree (ROOT/devices/BDF/config)");
  app.add_option("--rounds", rounds, "batches per mode")->check(CLI::Range(1u, 1000000u));
  CLI11_PARSE(app, argc, argv);

  auto probe = SysfsBackend::open(root);
  if (!probe) {
    std::fprintf(stderr, "pcifs-sysfs-bench: %s/devices: %s\n", root.c_str(),
                 std::string(probe.error().name()).c_str());
    return 2;
  }
  if ((*probe)->devices().empty()) {
    std::fprintf(stderr, "pcifs-sysfs-bench: no devices under %s\n", root.c_str());
    return 1;
  }
  probe->reset();
  Timing uring = measure(root, false, rounds);
  Timing plain = measure(root, true, rounds);
  std::printf("root %s, %u rounds, whole config of every device per run\n", root.c_str(), rounds);
  print("io_uring", uring, true);
  print("pread", plain, false);
  if (uring.us_per_run > 0) {
    std::printf("ratio     pread / io_uring = %.2f\n", plain.us_per_run / uring.us_per_run);
  }
  return uring.errors + plain.errors == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // allocation failure and the like: say so, exit 1
    std::fprintf(stderr, "pcifs-sysfs-bench: %s\n", e.what());
    return 1;
  }
}
