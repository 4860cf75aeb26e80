// RestartState (fs/control/restart_state.hpp): the memfd a successor daemon
// reads after a restart.
#include "control/restart_state.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace pcifs::control {
namespace {

HandleRecord record(HandleId id, const std::string& view, bool claiming = false) {
  HandleRecord r;
  r.id = id;
  r.view = view;
  r.ref = FileRef{Bdf{0, 2, 3, 1}, FileKind::kBar, 2, {}};
  r.flags = OpenFlags{true, true, false};
  r.caller = Caller{4242, 1000, 100};
  r.claiming = claiming;
  return r;
}

// What a successor finds: the same memfd, through a new descriptor.
std::unique_ptr<RestartState> successor(const RestartState& s) {
  std::string error;
  auto next = RestartState::adopt(::dup(s.fd()), &error);
  EXPECT_TRUE(next) << error;
  return next;
}

TEST(RestartStateTest, ConfirmedHandlesAndViewsSurvive) {
  std::string error;
  auto s = RestartState::create(&error);
  ASSERT_TRUE(s) << error;
  s->put_view("c1", {1, 2, 3});
  s->put_view("c2", {4});
  s->drop_view("c2");
  s->opened(record(5, "c1", true));
  s->confirmed(5);
  s->opened(record(6, "c1"));        // never confirmed: kept (an orphan costs an entry)
  s->opened(record(9, "c1", true));  // never confirmed, claiming: dropped
  s->opened(record(7, "c1"));
  s->confirmed(7);
  s->changed(7, true, true);
  s->opened(record(8, "c1"));
  s->confirmed(8);
  s->released(8);
  auto next = successor(*s);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->views(), std::vector<std::string>{"c1"});
  EXPECT_EQ(next->view_init("c1"), (std::vector<uint8_t>{1, 2, 3}));
  auto hs = next->handles();
  ASSERT_EQ(hs.size(), 3u);
  EXPECT_EQ(hs[1].id, 6u);
  hs.erase(hs.begin() + 1);
  EXPECT_EQ(hs[0].id, 5u);
  EXPECT_TRUE(hs[0].claiming);
  EXPECT_EQ(hs[0].view, "c1");
  EXPECT_EQ(hs[0].ref.bdf, (Bdf{0, 2, 3, 1}));
  EXPECT_EQ(hs[0].ref.kind, FileKind::kBar);
  EXPECT_EQ(hs[0].ref.index, 2);
  EXPECT_EQ(hs[0].caller.pid, 4242);
  EXPECT_EQ(hs[0].caller.uid, 1000u);
  EXPECT_TRUE(hs[0].flags.write);
  EXPECT_EQ(hs[1].id, 7u);
  EXPECT_TRUE(hs[1].claiming);
  EXPECT_TRUE(hs[1].doe_busy);
  EXPECT_EQ(next->first_free_id(), 10u);  // 9 was given out, even if dropped
}

TEST(RestartStateTest, ASlotTornByAKillIsSkipped) {
  std::string error;
  auto s = RestartState::create(&error);
  ASSERT_TRUE(s);
  s->opened(record(1, "v"));
  s->confirmed(1);
  s->opened(record(2, "v"));
  s->confirmed(2);
  // Mark handle 2's slot "being written", as a daemon killed mid-write leaves
  // it: the valid slot (state 2) whose id (at byte 8) is 2.
  const size_t table = 4096 + size_t{RestartState::kViewSlots} * 1024;
  const size_t size = table + size_t{RestartState::kHandleSlots} * 256;
  auto* p =
      static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd(), 0));
  ASSERT_NE(p, MAP_FAILED);
  int found = 0;
  for (size_t slot = table; slot < size; slot += 256) {
    uint32_t state = 0;
    uint64_t id = 0;
    std::memcpy(&state, p + slot, sizeof state);
    std::memcpy(&id, p + slot + 8, sizeof id);
    if (state != 2 || id != 2) continue;
    const uint32_t writing = 1;
    std::memcpy(p + slot, &writing, sizeof writing);
    ++found;
  }
  ::munmap(p, size);
  ASSERT_EQ(found, 1);
  auto hs = successor(*s)->handles();
  ASSERT_EQ(hs.size(), 1u);
  EXPECT_EQ(hs[0].id, 1u);
}

TEST(RestartStateTest, SomethingElseIsRefused) {
  const int fd = ::memfd_create("other", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  std::string error;
  EXPECT_FALSE(RestartState::adopt(fd, &error));
  EXPECT_NE(error.find("not a pcifs restart state"), std::string::npos) << error;
}

TEST(RestartStateTest, ReleasedSlotsAreReused) {
  std::string error;
  auto s = RestartState::create(&error);
  ASSERT_TRUE(s);
  for (HandleId id = 1; id <= 3 * RestartState::kHandleSlots; ++id) {
    s->opened(record(id, "v"));
    s->confirmed(id);
    s->released(id);
  }
  s->opened(record(1000000, "v"));
  s->confirmed(1000000);
  auto hs = successor(*s)->handles();
  ASSERT_EQ(hs.size(), 1u);
  EXPECT_EQ(hs[0].id, 1000000u);
}

// Ids that all pick one shard fill its range, then take slots of the other
// ranges: every slot of the table is used before a handle goes unjournaled.
TEST(RestartStateTest, AFullShardBorrowsFromTheOthersUntilTheTableIsFull) {
  std::string error;
  auto s = RestartState::create(&error);
  ASSERT_TRUE(s) << error;
  // Multiples of 64 * kHandleShards pick shard 0: (id ^ id / 64) % 16 == 0.
  std::vector<HandleId> ids;
  for (HandleId k = 1; ids.size() < RestartState::kHandleSlots + 5; ++k) {
    ids.push_back(k * 64 * RestartState::kHandleShards);
  }
  for (HandleId id : ids) {
    s->opened(record(id, "v"));
    s->confirmed(id);
  }
  auto hs = successor(*s)->handles();
  ASSERT_EQ(hs.size(), size_t{RestartState::kHandleSlots}) << "the last 5 find no slot";
  EXPECT_EQ(hs.front().id, ids.front());
  EXPECT_EQ(hs.back().id, ids[RestartState::kHandleSlots - 1]);
  // One released: its slot (of another range) takes the next handle.
  s->released(ids[3]);
  s->opened(record(ids.back(), "v"));
  s->confirmed(ids.back());
  hs = successor(*s)->handles();
  ASSERT_EQ(hs.size(), size_t{RestartState::kHandleSlots});
  EXPECT_EQ(hs.back().id, ids.back());
}

// Opens, confirms and releases from several threads at once (each thread's
// ids spread over every shard): the successor finds exactly the handles left
// open, each with its own record. Under TSan, a race in the shards' indexes or
// free lists is reported.
TEST(RestartStateTest, ConcurrentOpensAndReleasesKeepExactlyTheOpenOnes) {
  std::string error;
  auto s = RestartState::create(&error);
  ASSERT_TRUE(s) << error;
  constexpr int kThreads = 4;
  constexpr HandleId kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (HandleId n = 0; n < kPerThread; ++n) {
        const HandleId id = 1 + n * kThreads + static_cast<HandleId>(t);
        s->opened(record(id, "t" + std::to_string(t)));
        s->confirmed(id);
        if (n % 10 != 0) s->released(id);  // every tenth stays open
      }
    });
  }
  for (auto& th : threads) th.join();
  const auto hs = successor(*s)->handles();
  ASSERT_EQ(hs.size(), size_t{kThreads} * (kPerThread / 10));
  for (const auto& h : hs) {
    const HandleId n = (h.id - 1) / kThreads;
    const int t = static_cast<int>((h.id - 1) % kThreads);
    EXPECT_EQ(n % 10, 0u) << h.id;
    EXPECT_EQ(h.view, "t" + std::to_string(t)) << h.id;
  }
  EXPECT_EQ(successor(*s)->first_free_id(), kThreads * kPerThread + 1);
}

}  // namespace
}  // namespace pcifs::control
