// core::ViewTable (fs/core/view_table.hpp): the views by id, read without a
// lock on every request while views come and go.
#include "core/view_table.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pcifs::core {
namespace {

ViewPolicy named(const std::string& name) {
  ViewPolicy p;
  p.name = name;
  return p;
}

TEST(ViewTable, IdsInOrderPoliciesStayWhereTheyAre) {
  ViewTable t;
  const ViewId a = t.add(named("a"));
  const ViewPolicy* pa = &t.policy(a);
  // Past the first chunk of the index: the records never move.
  std::vector<ViewId> ids;
  for (int i = 0; i < 2100; ++i) ids.push_back(t.add(named("v" + std::to_string(i))));
  EXPECT_EQ(a, 0u);
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_EQ(ids[i], i + 1);
    ASSERT_EQ(t.policy(ids[i]).name, "v" + std::to_string(i));
  }
  EXPECT_EQ(&t.policy(a), pa);
  EXPECT_EQ(pa->name, "a");
}

TEST(ViewTable, RemovedOnceAndKept) {
  ViewTable t;
  const ViewId a = t.add(named("a")), b = t.add(named("b"));
  EXPECT_FALSE(t.removed(a));
  EXPECT_EQ(t.live(a), &t.policy(a));
  EXPECT_TRUE(t.remove(a));
  EXPECT_FALSE(t.remove(a)) << "a second removal does nothing";
  EXPECT_TRUE(t.removed(a));
  EXPECT_EQ(t.live(a), nullptr);
  EXPECT_EQ(t.policy(a).name, "a") << "a removed view's policy stays readable";
  EXPECT_FALSE(t.removed(b)) << "control: the other view is live";
  const auto live = t.live_policies();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].name, "b");
}

TEST(ViewTable, UnknownIds) {
  ViewTable t;
  EXPECT_THROW((void)t.policy(0), std::out_of_range);
  EXPECT_FALSE(t.removed(0));
  EXPECT_EQ(t.live(0), nullptr);
  EXPECT_FALSE(t.remove(0));
  const ViewId a = t.add(named("a"));
  EXPECT_NO_THROW((void)t.policy(a)) << "control";
  EXPECT_THROW((void)t.policy(a + 1), std::out_of_range);
  EXPECT_THROW((void)t.policy(1u << 30), std::out_of_range) << "beyond the index";
}

// Readers of published views while a writer adds and removes others: every
// id a reader has seen published reads its own policy (TSan checks the
// publication).
TEST(ViewTable, ReadersWhileViewsComeAndGo) {
  ViewTable t;
  std::atomic<ViewId> published{t.add(named("0"))};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        const ViewId last = published.load();
        for (ViewId id = last > 64 ? last - 64 : 0; id <= last; ++id) {
          if (t.policy(id).name != std::to_string(id)) bad.fetch_add(1);
          (void)t.removed(id);
          reads.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (int i = 1; i <= 3000; ++i) {
    const ViewId id = t.add(named(std::to_string(i)));
    published.store(id);
    if (i % 3 == 0) t.remove(id - 1);
  }
  // Bounded: stop once the readers have read at all (on a loaded machine
  // they may get the CPU late).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (reads.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  stop.store(true);
  for (auto& th : readers) th.join();
  EXPECT_GT(reads.load(), 0u);
  EXPECT_EQ(bad.load(), 0u);
}

}  // namespace
}  // namespace pcifs::core
