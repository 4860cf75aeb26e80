// DeviceCounters (fs/core/device_counters.hpp): per-CPU shards summed on
// read, and the open-handle gauge made of two of them (opens - releases).
#include "core/device_counters.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace pcifs::core {
namespace {

TEST(DeviceCountersTest, EachCounterCountsOnlyItself) {
  DeviceCounters c;
  c.add(DeviceCounters::kConfigReads);
  c.add(DeviceCounters::kConfigReads);
  c.add(DeviceCounters::kBusy);
  EXPECT_EQ(c.get(DeviceCounters::kConfigReads), 2u);
  EXPECT_EQ(c.get(DeviceCounters::kBusy), 1u);
  EXPECT_EQ(c.get(DeviceCounters::kConfigWrites), 0u);
  EXPECT_EQ(c.open_handles(), 0u);
}

// Threads open and release (some handles stay open) while a reader samples
// the gauge: it never exceeds what was ever opened, never wraps below 0, and
// is exact once the threads are done, whichever CPUs they ran on.
TEST(DeviceCountersTest, OpenHandlesAreOpensLessReleases) {
  DeviceCounters c;
  constexpr int kThreads = 4;
  constexpr int kEach = 20000;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> worst{0};
  std::thread reader([&] {
    while (!done.load()) {
      const uint64_t n = c.open_handles();
      if (n > worst.load()) worst.store(n);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        c.add(DeviceCounters::kOpens);
        if (i % 100 != 0) c.add(DeviceCounters::kReleases);  // every 100th stays open
      }
    });
  }
  for (auto& th : threads) th.join();
  done.store(true);
  reader.join();
  EXPECT_EQ(c.open_handles(), uint64_t{kThreads} * (kEach / 100));
  EXPECT_LE(worst.load(), uint64_t{kThreads} * kEach) << "a wrapped (negative) count";
  for (int i = 0; i < kThreads * (kEach / 100); ++i) c.add(DeviceCounters::kReleases);
  EXPECT_EQ(c.open_handles(), 0u);
  EXPECT_EQ(c.get(DeviceCounters::kOpens), uint64_t{kThreads} * kEach);
}

}  // namespace
}  // namespace pcifs::core
