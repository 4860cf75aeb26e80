#include "core_paths.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "core/access_gate.hpp"
#include "pcifs/mediator.hpp"
#include "sim/sim_backend.hpp"
#include "stats.hpp"

namespace pcifs::bench {
namespace {

using Clock = std::chrono::steady_clock;

// A column: a config register read through the Mediator, or (offset
// kGateOnly) the device gate's BAR admission alone, with nothing behind it.
constexpr uint32_t kGateOnly = UINT32_MAX;
struct Register {
  const char* name;
  uint32_t offset;
};
constexpr Register kRegisters[] = {{"shadowed register (offset 0)", 0},
                                   {"PMCSR (0x44, the device)", 0x44},
                                   {"BAR admission alone (the gate)", kGateOnly}};

std::vector<unsigned> default_threads() {
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  std::vector<unsigned> out;
  for (unsigned n = 1; n <= std::max(2 * cpus, 16u); n *= 2) out.push_back(n);
  return out;
}

// One run: `n` threads reading `offset` (or entering the gate) for `ms`;
// operations per second, or -1.
double run_once(Mediator& m, ViewId view, const Bdf& bdf, uint32_t offset, unsigned n,
                unsigned ms) {
  std::vector<HandleId> handles;
  core::AccessGate gate(PowerState::kD0, true, true);
  for (unsigned t = 0; t < n && offset != kGateOnly; ++t) {
    const Caller c{static_cast<pid_t>(100000 + t), 0, 0};
    auto h = m.open(view, c, FileRef{bdf, FileKind::kConfig, 0, {}}, OpenFlags{true, false, false});
    if (!h) return -1;
    handles.push_back(*h);
  }
  std::atomic<unsigned> ready{0};
  std::atomic<bool> go{false}, stop{false}, failed{false};
  std::vector<uint64_t> counts(n, 0);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      uint64_t k = 0;
      uint8_t buf[4];
      while (offset == kGateOnly && !stop.load(std::memory_order_relaxed)) {
        auto token = gate.enter_bar(false);
        if (!token) {
          failed.store(true);
          break;
        }
        ++k;
      }
      while (offset != kGateOnly && !stop.load(std::memory_order_relaxed)) {
        auto r = m.try_read(handles[t], offset, buf);
        if (!r || *r != sizeof buf) {
          failed.store(true);
          break;
        }
        ++k;
      }
      counts[t] = k;
    });
  }
  while (ready.load() < n) std::this_thread::yield();
  const auto t0 = Clock::now();
  go.store(true, std::memory_order_release);
  // A benchmark's fixed measuring window: the readers run until it ends.
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  stop.store(true);
  for (auto& th : threads) th.join();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (HandleId h : handles) m.release(h);
  if (failed.load()) return -1;
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return static_cast<double>(total) / s;
}

}  // namespace

int run_core_bench(const CoreBenchArgs& a) {
  const std::vector<unsigned> threads = a.threads.empty() ? default_threads() : a.threads;
  // The Mediator's log (a DOE discovery cut short at the end, ...) goes to
  // stderr: stdout is the table or the JSON.
  spdlog::set_default_logger(spdlog::stderr_color_mt("pcifs-bench-core"));
  auto m = std::make_unique<Mediator>(backend::sim::make_default_backend(), MediatorOptions{});
  const ViewId view = m->add_view(ViewPolicy{});
  const Bdf bdf = *Bdf::parse("0000:01:00.0");
  // [register][thread count] -> rounds
  std::vector<std::vector<std::vector<double>>> got(
      std::size(kRegisters), std::vector<std::vector<double>>(threads.size()));
  for (unsigned r = 0; r < a.rounds; ++r) {
    for (size_t g = 0; g < std::size(kRegisters); ++g) {
      for (size_t i = 0; i < threads.size(); ++i) {
        std::fprintf(stderr, "\rpcifs-bench --core: round %u/%u, %s, %u threads      ", r + 1,
                     a.rounds, kRegisters[g].name, threads[i]);
        const double ops = run_once(*m, view, bdf, kRegisters[g].offset, threads[i], a.ms);
        if (ops < 0) {
          std::fprintf(stderr, "\npcifs-bench --core: a read of %s failed\n", kRegisters[g].name);
          return 1;
        }
        got[g][i].push_back(ops);
      }
    }
  }
  std::fprintf(stderr, "\n");
  if (a.json) {
    std::printf("{\"cpus\": %u, \"rounds\": %u, \"ms\": %u, \"threads\": [",
                std::thread::hardware_concurrency(), a.rounds, a.ms);
    for (size_t i = 0; i < threads.size(); ++i) std::printf("%s%u", i ? ", " : "", threads[i]);
    std::printf("], \"reads_per_s\": {");
    for (size_t g = 0; g < std::size(kRegisters); ++g) {
      std::printf("%s\"%s\": [", g ? ", " : "", kRegisters[g].name);
      for (size_t i = 0; i < threads.size(); ++i)
        std::printf("%s%.0f", i ? ", " : "", median(got[g][i]));
      std::printf("]");
    }
    std::printf("}}\n");
    return 0;
  }
  std::printf(
      "pcifs-bench --core: the Mediator's 4-byte config read (try_read), N threads on one "
      "device, no FUSE, and the device gate's BAR admission alone (enter and leave); %u CPUs, "
      "%u rounds of %u ms, medians\n\n",
      std::thread::hardware_concurrency(), a.rounds, a.ms);
  std::printf("| threads |");
  for (const auto& reg : kRegisters) std::printf(" %s, ops/s | speed-up |", reg.name);
  std::printf("\n|---|");
  for (size_t g = 0; g < std::size(kRegisters); ++g) std::printf("---|---|");
  std::printf("\n");
  for (size_t i = 0; i < threads.size(); ++i) {
    std::printf("| %u |", threads[i]);
    for (size_t g = 0; g < std::size(kRegisters); ++g) {
      const double one = median(got[g][0]), now = median(got[g][i]);
      std::printf(" %.0f | %.2f |", now, one > 0 ? now / one : 0);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace pcifs::bench
