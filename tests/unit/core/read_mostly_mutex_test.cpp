// pcifs::ReadMostlyMutex (include/pcifs/sync.hpp): readers take the shard of
// their CPU, a writer every shard. Each wait is seen through a gate (a flag
// set once the lock is taken, polled with a bound), never a sleep.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "pcifs/sync.hpp"

namespace pcifs::test {
namespace {

using namespace std::chrono_literals;

// Polls `flag` until it is set; bounded at 60 s for a loaded machine.
bool becomes_true(const std::atomic<bool>& flag) {
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (!flag.load() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  return flag.load();
}

// Runs the calling thread on `cpu` only; false where it cannot.
bool pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0 && sched_getcpu() == cpu;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

TEST(ReadMostlyMutex, AWriterExcludesReadersOnEveryCpu) {
  ReadMostlyMutex mu("test::read_mostly");
  const auto cpus = allowed_cpus();
  ASSERT_FALSE(cpus.empty());
  mu.lock();
  std::vector<std::thread> readers;
  std::vector<std::unique_ptr<std::atomic<bool>>> got;
  for (int cpu : cpus) {
    got.push_back(std::make_unique<std::atomic<bool>>(false));
    readers.emplace_back([&mu, cpu, flag = got.back().get()] {
      (void)pin(cpu);
      ReadMostlyShared lock(mu);
      flag->store(true);
    });
  }
  // Each reader counts its wait before it blocks: seen while the writer holds.
  const auto end = std::chrono::steady_clock::now() + 60s;
  uint64_t waited = 0;
  while (std::chrono::steady_clock::now() < end) {
    waited = 0;
    for (const auto& c : lock_contention()) {
      if (c.name == "test::read_mostly") waited = c.contended;
    }
    if (!kLockContentionCounted || waited >= cpus.size()) break;
    std::this_thread::yield();
  }
  bool any = false;
  for (const auto& g : got) any = any || g->load();
  mu.unlock();
  for (auto& r : readers) r.join();
  EXPECT_FALSE(any) << "a reader got in while the writer held every shard";
  if (kLockContentionCounted) {
    EXPECT_EQ(waited, cpus.size());
  }
  for (const auto& g : got) EXPECT_TRUE(g->load()) << "control: each got in after";
}

TEST(ReadMostlyMutex, AReaderHoldsOffAWriterAndReadersShare) {
  ReadMostlyMutex mu("test::read_mostly_2");
  std::atomic<bool> held{false}, let_go{false};
  std::thread holder([&] {
    ReadMostlyShared lock(mu);
    held.store(true);
    while (!let_go.load()) std::this_thread::yield();
  });
  ASSERT_TRUE(becomes_true(held));
  {
    ReadMostlyShared second(mu);  // readers never wait for each other
  }
  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    ReadMostlyExclusive lock(mu);
    wrote.store(true);
  });
  // The writer counts its wait before it blocks (not under TSan: then this
  // only checks that it has not got in).
  bool counted = !kLockContentionCounted;
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (!counted && std::chrono::steady_clock::now() < end) {
    for (const auto& c : lock_contention()) counted = counted || c.name == "test::read_mostly_2";
    std::this_thread::yield();
  }
  const bool early = wrote.load();
  let_go.store(true);
  holder.join();
  EXPECT_TRUE(counted);
  EXPECT_FALSE(early) << "the writer got in while a reader held its shard";
  EXPECT_TRUE(becomes_true(wrote)) << "control: it gets in once the reader left";
  writer.join();
}

// A reader that moves to another CPU while it holds the lock gives back the
// shard it took, not its new CPU's: a writer can then take every shard.
TEST(ReadMostlyMutex, AReaderThatMovesGivesBackItsOwnShard) {
  const auto cpus = allowed_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  ReadMostlyMutex mu("test::read_mostly_3");
  std::thread mover([&] {
    ASSERT_TRUE(pin(cpus[0]));
    ReadMostlyShared lock(mu);
    ASSERT_TRUE(pin(cpus[1]));
  });  // released on cpus[1]
  mover.join();
  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    ReadMostlyExclusive lock(mu);
    wrote.store(true);
  });
  EXPECT_TRUE(becomes_true(wrote)) << "a shard stayed held";
  if (!wrote.load()) std::abort();  // a writer stuck for good: nothing to join
  writer.join();
}

}  // namespace
}  // namespace pcifs::test
