// ClaimTable: group-wide exclusivity across processes, per-process refcount,
// release, revoke, owner text.
#include "core/claims.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace pcifs::core {
namespace {

const Caller kAlice{1234, 1000, 1000};
const Caller kBob{4321, 1001, 1001};

TEST(ClaimTable, GroupKeyUsesIommuGroupOrDevice) {
  backend::DeviceInfo info;
  info.bdf = *Bdf::parse("0000:01:00.1");
  EXPECT_EQ(ClaimTable::group_key(info), "device:0000:01:00.1");
  info.iommu_group = 2;
  EXPECT_EQ(ClaimTable::group_key(info), "group:2");
}

TEST(ClaimTable, OtherProcessGetsEbusyAndLearnsTheHolder) {
  ClaimTable t;
  ASSERT_TRUE(t.acquire("group:2", kAlice, "c1").ok());
  ClaimHolder h;
  auto r = t.acquire("group:2", kBob, "c2", &h);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EBUSY));
  EXPECT_EQ(to_string(h), "pid=1234 uid=1000 view=c1");
  EXPECT_EQ(t.owner_text("group:2"), "pid=1234 uid=1000 view=c1");
  EXPECT_TRUE(t.acquire("group:3", kBob, "c2").ok());  // other groups are free
}

TEST(ClaimTable, SuccessReportsWhetherTheClaimIsNew) {
  ClaimTable t;
  ClaimHolder h;
  ASSERT_TRUE(t.acquire("group:2", kAlice, "c1", &h).ok());
  EXPECT_EQ(h.handles, 1u);  // new: the Mediator logs "claimed by"
  ASSERT_TRUE(t.acquire("group:2", kAlice, "c1", &h).ok());
  EXPECT_EQ(h.handles, 2u);  // one more handle of the same claim: no log line
  EXPECT_EQ(h.pid, kAlice.pid);
}

TEST(ClaimTable, SameProcessRefcountsAndLastReleaseEndsClaim) {
  ClaimTable t;
  ASSERT_TRUE(t.acquire("group:2", kAlice, "c1").ok());
  ASSERT_TRUE(t.acquire("group:2", kAlice, "other-view").ok());
  EXPECT_EQ(t.holder("group:2")->handles, 2u);
  EXPECT_FALSE(t.release("group:2", kBob.pid));  // not the holder: no effect
  EXPECT_FALSE(t.release("group:2", kAlice.pid));
  EXPECT_EQ(t.acquire("group:2", kBob, "c2").error(), Errno(EBUSY));
  EXPECT_TRUE(t.release("group:2", kAlice.pid));
  EXPECT_EQ(t.owner_text("group:2"), "none");
  EXPECT_TRUE(t.acquire("group:2", kBob, "c2").ok());
  EXPECT_TRUE(t.held_by("group:2", kBob.pid));
}

TEST(ClaimTable, RevokeEndsClaimAndReturnsHolder) {
  ClaimTable t;
  ASSERT_TRUE(t.acquire("group:2", kAlice, "c1").ok());
  ASSERT_TRUE(t.acquire("group:2", kAlice, "c1").ok());
  auto h = t.revoke("group:2");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->pid, kAlice.pid);
  EXPECT_EQ(h->handles, 2u);
  EXPECT_FALSE(t.revoke("group:2").has_value());
  EXPECT_FALSE(t.release("group:2", kAlice.pid));  // late releases are harmless
  EXPECT_TRUE(t.acquire("group:2", kBob, "c2").ok());
}

TEST(ClaimTable, ConcurrentAcquirersExactlyOneProcessWins) {
  ClaimTable t;
  std::atomic<int> winners{0};
  std::vector<std::thread> threads;
  for (pid_t pid = 100; pid < 116; ++pid) {
    threads.emplace_back([&, pid] {
      if (t.acquire("group:9", Caller{pid, 0, 0}, "v").ok()) ++winners;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(winners.load(), 1);
  EXPECT_EQ(t.holder("group:9")->handles, 1u);
}

}  // namespace
}  // namespace pcifs::core
