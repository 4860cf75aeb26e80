// The contention counters of pcifs::Mutex and pcifs::SharedMutex
// (include/pcifs/sync.hpp): an acquisition that finds the lock taken counts
// in its name's site, with the time it waited; one that does not, counts
// nothing. Each waiting thread is let go only once its count is seen (a gate,
// not a sleep). Not counted under TSan (kLockContentionCounted).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/lock_wait.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::test {
namespace {

using namespace std::chrono_literals;

class LockContentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kLockContentionCounted) GTEST_SKIP() << "contention is not counted under TSan";
  }
};

// The negative control: nothing waits, nothing is counted, and a name that
// never waited has no site at all.
TEST_F(LockContentionTest, UncontendedAcquisitionsCountNothing) {
  Mutex m("test::uncontended_mutex");
  SharedMutex s("test::uncontended_shared");
  for (int i = 0; i < 10000; ++i) {
    MutexLock lock(m);
  }
  for (int i = 0; i < 10000; ++i) {
    ExclusiveLock lock(s);
  }
  // Readers share the lock: two threads reading at once never wait on each other.
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&s] {
      for (int i = 0; i < 100000; ++i) {
        SharedLock lock(s);
      }
    });
  }
  for (auto& r : readers) r.join();
  for (const auto& c : lock_contention()) {
    EXPECT_NE(c.name, "test::uncontended_mutex");
    EXPECT_NE(c.name, "test::uncontended_shared");
  }
}

TEST_F(LockContentionTest, AWaitingAcquisitionCountsItselfAndItsWait) {
  Mutex m("test::held_mutex");
  m.lock();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    MutexLock lock(m);
    got.store(true);
  });
  // Whatever is seen, the waiter is let go and joined before any assertion.
  const bool seen = wait_contended("test::held_mutex", 1);
  EXPECT_FALSE(got.load());  // counted while it still waits
  m.unlock();
  waiter.join();
  ASSERT_TRUE(seen);
  const LockContention c = contention_of("test::held_mutex");
  EXPECT_EQ(c.contended, 1u);
  EXPECT_GT(c.wait_ns, 0u);
  // Taken again with no one holding it: the count stays.
  for (int i = 0; i < 1000; ++i) {
    MutexLock lock(m);
  }
  EXPECT_EQ(contention_of("test::held_mutex").contended, 1u);
}

TEST_F(LockContentionTest, SharedAndExclusiveWaitsBothCount) {
  SharedMutex s("test::held_shared");
  s.lock();  // a writer holds it: a reader waits
  std::thread reader([&] { SharedLock lock(s); });
  const bool reader_seen = wait_contended("test::held_shared", 1);
  s.unlock();
  reader.join();
  ASSERT_TRUE(reader_seen);
  s.lock_shared();  // a reader holds it: a writer waits
  std::thread writer([&] { ExclusiveLock lock(s); });
  const bool writer_seen = wait_contended("test::held_shared", 2);
  s.unlock_shared();
  writer.join();
  ASSERT_TRUE(writer_seen);
  EXPECT_EQ(contention_of("test::held_shared").contended, 2u);
}

// Every lock of one name shares its site (the 64 shards of the handle table
// are one figure), and an unnamed lock is counted too.
TEST_F(LockContentionTest, LocksOfOneNameShareASite) {
  std::vector<std::unique_ptr<Mutex>> locks;
  for (int i = 0; i < 3; ++i) locks.push_back(std::make_unique<Mutex>("test::shard"));
  for (auto& m : locks) {
    // The count before the waiter starts: it may count itself at once.
    const uint64_t before = contention_of("test::shard").contended;
    m->lock();
    std::thread waiter([&m] { MutexLock lock(*m); });
    const bool seen = wait_contended("test::shard", before + 1);
    m->unlock();
    waiter.join();
    ASSERT_TRUE(seen);
  }
  EXPECT_EQ(contention_of("test::shard").contended, 3u);

  const uint64_t unnamed = contention_of("(unnamed Mutex)").contended;
  Mutex anonymous;
  anonymous.lock();
  std::thread waiter([&] { MutexLock lock(anonymous); });
  const bool seen = wait_contended("(unnamed Mutex)", unnamed + 1);
  anonymous.unlock();
  waiter.join();
  EXPECT_TRUE(seen);
}

}  // namespace
}  // namespace pcifs::test
