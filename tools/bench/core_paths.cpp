#include "core_paths.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "core/access_gate.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"
#include "sim/sim_backend.hpp"
#include "stats.hpp"

namespace pcifs::bench {
namespace {

using Clock = std::chrono::steady_clock;

// A column: a config register read through the Mediator (kRead at
// `offset`); the device gate's BAR admission alone, with nothing behind it
// (kGate); what a FUSE LOOKUP or GETATTR of devices/B/config asks the
// Mediator (kLookup: has_device and stat); what an OPEN and its RELEASE do
// (kOpen: open and release of config, read-only).
enum class Op { kRead, kGate, kLookup, kOpen };
struct Register {
  const char* name;
  Op op;
  uint32_t offset = 0;
};
constexpr Register kRegisters[] = {{"shadowed register (offset 0)", Op::kRead, 0},
                                   {"PMCSR (0x44, the device)", Op::kRead, 0x44},
                                   {"BAR admission alone (the gate)", Op::kGate},
                                   {"lookup (has_device + stat)", Op::kLookup},
                                   {"open + release", Op::kOpen}};

std::vector<unsigned> default_threads() {
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  std::vector<unsigned> out;
  for (unsigned n = 1; n <= std::max(2 * cpus, 16u); n *= 2) out.push_back(n);
  return out;
}

// Lock waits by lock name (include/pcifs/sync.hpp): what lock_contention()
// says now, and what it added since an earlier look.
using Waits = std::map<std::string, LockContention>;
Waits waits_now() {
  Waits w;
  for (auto& c : lock_contention()) w[c.name] = c;
  return w;
}
void add_waits_since(const Waits& before, Waits* sum) {
  for (const auto& [name, now] : waits_now()) {
    const auto it = before.find(name);
    const uint64_t c0 = it == before.end() ? 0 : it->second.contended;
    const uint64_t w0 = it == before.end() ? 0 : it->second.wait_ns;
    if (now.contended == c0) continue;
    LockContention& s = (*sum)[name];
    s.name = name;
    s.contended += now.contended - c0;
    s.wait_ns += now.wait_ns - w0;
  }
}

// One cell over all rounds: the rates, and the lock waits of every operation.
struct Cell {
  std::vector<double> rates;
  uint64_t ops = 0;
  Waits waits;
};

// The locks that waited longest in a cell, per operation: "NAME C/M W ns"
// (acquisitions that waited per million operations, nanoseconds waited per
// operation), at most `top`; "none".
std::string top_waits(const Cell& c, size_t top) {
  std::vector<LockContention> v;
  for (const auto& [name, w] : c.waits) v.push_back(w);
  std::sort(v.begin(), v.end(),
            [](const LockContention& a, const LockContention& b) { return a.wait_ns > b.wait_ns; });
  std::string out;
  const double ops = static_cast<double>(std::max<uint64_t>(c.ops, 1));
  for (size_t i = 0; i < v.size() && i < top; ++i) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %.0f/M %.0f ns", out.empty() ? "" : "; ",
                  v[i].name.c_str(), static_cast<double>(v[i].contended) * 1e6 / ops,
                  static_cast<double>(v[i].wait_ns) / ops);
    out += buf;
  }
  return out.empty() ? "none" : out;
}

// One operation of column `reg` by thread `t`; false when it failed.
bool one_op(Mediator& m, ViewId view, const Bdf& bdf, const Register& reg, core::AccessGate& gate,
            HandleId handle, unsigned t) {
  const FileRef config{bdf, FileKind::kConfig, 0, {}};
  switch (reg.op) {
    case Op::kRead: {
      uint8_t buf[4];
      auto r = m.try_read(handle, reg.offset, buf);
      return r && *r == sizeof buf;
    }
    case Op::kGate: return static_cast<bool>(gate.enter_bar(false));
    case Op::kLookup: return m.has_device(view, bdf) && static_cast<bool>(m.stat(view, config));
    case Op::kOpen: {
      const Caller c{static_cast<pid_t>(100000 + t), 0, 0};
      auto h = m.open(view, c, config, OpenFlags{true, false, false}, /*wait=*/false);
      if (!h) return false;
      m.release(*h);
      return true;
    }
  }
  return false;
}

// One run: `n` threads making column `reg`'s operation for `ms`; operations
// per second (-1 on failure), the operations in *ops.
double run_once(Mediator& m, ViewId view, const Bdf& bdf, const Register& reg, unsigned n,
                unsigned ms, uint64_t* ops) {
  std::vector<HandleId> handles(n, 0);
  core::AccessGate gate(PowerState::kD0, true, true);
  for (unsigned t = 0; t < n && reg.op == Op::kRead; ++t) {
    const Caller c{static_cast<pid_t>(100000 + t), 0, 0};
    auto h = m.open(view, c, FileRef{bdf, FileKind::kConfig, 0, {}}, OpenFlags{true, false, false});
    if (!h) return -1;
    handles[t] = *h;
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
      while (!stop.load(std::memory_order_relaxed)) {
        if (!one_op(m, view, bdf, reg, gate, handles[t], t)) {
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
  for (HandleId h : handles) {
    if (h) m.release(h);
  }
  if (failed.load()) return -1;
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  *ops = total;
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
  // [register][thread count]
  std::vector<std::vector<Cell>> got(std::size(kRegisters), std::vector<Cell>(threads.size()));
  for (unsigned r = 0; r < a.rounds; ++r) {
    for (size_t g = 0; g < std::size(kRegisters); ++g) {
      for (size_t i = 0; i < threads.size(); ++i) {
        std::fprintf(stderr, "\rpcifs-bench --core: round %u/%u, %s, %u threads      ", r + 1,
                     a.rounds, kRegisters[g].name, threads[i]);
        Cell& cell = got[g][i];
        const Waits before = waits_now();
        uint64_t ops = 0;
        const double rate = run_once(*m, view, bdf, kRegisters[g], threads[i], a.ms, &ops);
        if (rate < 0) {
          std::fprintf(stderr, "\npcifs-bench --core: %s failed\n", kRegisters[g].name);
          return 1;
        }
        add_waits_since(before, &cell.waits);
        cell.rates.push_back(rate);
        cell.ops += ops;
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
        std::printf("%s%.0f", i ? ", " : "", median(got[g][i].rates));
      std::printf("]");
    }
    // Per register, per thread count: the operations of every round and
    // each lock's waits during them.
    std::printf("}, \"lock_waits_counted\": %s, \"lock_waits\": {",
                kLockContentionCounted ? "true" : "false");
    for (size_t g = 0; g < std::size(kRegisters); ++g) {
      std::printf("%s\"%s\": [", g ? ", " : "", kRegisters[g].name);
      for (size_t i = 0; i < threads.size(); ++i) {
        std::printf("%s{\"ops\": %llu, \"locks\": [", i ? ", " : "",
                    static_cast<unsigned long long>(got[g][i].ops));
        size_t k = 0;
        for (const auto& [name, w] : got[g][i].waits) {
          std::printf("%s{\"name\": \"%s\", \"contended\": %llu, \"wait_ns\": %llu}",
                      k++ ? ", " : "", name.c_str(), static_cast<unsigned long long>(w.contended),
                      static_cast<unsigned long long>(w.wait_ns));
        }
        std::printf("]}");
      }
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
      const double one = median(got[g][0].rates), now = median(got[g][i].rates);
      std::printf(" %.0f | %.2f |", now, one > 0 ? now / one : 0);
    }
    std::printf("\n");
  }
  if (!kLockContentionCounted) {
    std::printf("\nLock waits: not counted in this build (TSan).\n");
    return 0;
  }
  std::printf(
      "\nLock waits, all rounds: the locks that waited longest, each as acquisitions that "
      "found it taken per million operations and nanoseconds waited per operation "
      "(include/pcifs/sync.hpp)\n\n| threads |");
  for (const auto& reg : kRegisters) std::printf(" %s |", reg.name);
  std::printf("\n|---|");
  for (size_t g = 0; g < std::size(kRegisters); ++g) std::printf("---|");
  std::printf("\n");
  for (size_t i = 0; i < threads.size(); ++i) {
    std::printf("| %u |", threads[i]);
    for (size_t g = 0; g < std::size(kRegisters); ++g) {
      std::printf(" %s |", top_waits(got[g][i], 2).c_str());
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace pcifs::bench
