// DeviceCounters: a device's operation counters for `status` [S3], bumped on
// every request by whichever thread serves it. One set of atomics would be one
// cache line that every reader of the device writes (issue 13 §1), so each
// CPU adds to its own shard: a cache line of all the counters, chosen by the
// CPU the thread runs on (rseq makes that a load). A read sums the shards: a
// counter is exact once its writers are done, and never goes backwards.
//
// Thread safety: every method is thread-safe and lock-free.
#pragma once

#include <sched.h>

#include <array>
#include <atomic>
#include <cstdint>

namespace pcifs::core {

class DeviceCounters {
 public:
  enum Counter : uint8_t {
    kConfigReads,
    kConfigWrites,
    kBarReads,
    kBarWrites,
    kDoeExchanges,
    kDenials,
    kBusy,
    kRevokedHandles,
    kCount
  };

  void add(Counter c) { shards_[shard()].v[c].fetch_add(1, std::memory_order_relaxed); }
  uint64_t get(Counter c) const {
    uint64_t sum = 0;
    for (const auto& s : shards_) sum += s.v[c].load(std::memory_order_relaxed);
    return sum;
  }

 private:
  static constexpr unsigned kShards = 16;
  struct alignas(64) Shard {
    std::array<std::atomic<uint64_t>, kCount> v{};
  };
  static_assert(sizeof(Shard) == 64, "one cache line per shard");
  static unsigned shard() {
    const int cpu = sched_getcpu();
    return static_cast<unsigned>(cpu < 0 ? 0 : cpu) % kShards;
  }
  std::array<Shard, kShards> shards_{};
};

}  // namespace pcifs::core
