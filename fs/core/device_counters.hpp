// DeviceCounters: a device's operation counters for `status` [S3], bumped on
// every request by whichever thread serves it, and its open handles (every
// open and release counts too, so that no line is shared by every opener of
// the device either). One set of atomics would be one
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
    kOpens,     // handles opened (or taken over at a restart)
    kReleases,  // of those, released: open handles = kOpens - kReleases
    kCount
  };

  void add(Counter c) { shards_[shard()].v[c].fetch_add(1, std::memory_order_relaxed); }
  uint64_t get(Counter c) const {
    uint64_t sum = 0;
    for (const auto& s : shards_) sum += s.v[c].load(std::memory_order_relaxed);
    return sum;
  }
  // The handles open now: exact once the opens and releases in flight are
  // done. The sums are not one snapshot: while handles come and go this may
  // be a few off either way (never below 0).
  uint64_t open_handles() const {
    const uint64_t released = get(kReleases);
    const uint64_t opened = get(kOpens);
    return opened > released ? opened - released : 0;
  }

 private:
  static constexpr unsigned kShards = 16;
  struct alignas(64) Shard {
    std::array<std::atomic<uint64_t>, kCount> v{};
  };
  static_assert(sizeof(Shard) % 64 == 0, "whole cache lines per shard");
  static unsigned shard() {
    const int cpu = sched_getcpu();
    return static_cast<unsigned>(cpu < 0 ? 0 : cpu) % kShards;
  }
  std::array<Shard, kShards> shards_{};
};

}  // namespace pcifs::core
