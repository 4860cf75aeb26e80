// RestartState (fs/control/restart_state.hpp): the memfd a successor daemon
// reads after a restart.
#include "control/restart_state.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

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
  // it: the second slot of the handle table (slots are taken lowest first).
  const size_t slot = 4096 + size_t{RestartState::kViewSlots} * 1024 + 256;
  auto* p = static_cast<char*>(
      ::mmap(nullptr, slot + 256, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd(), 0));
  ASSERT_NE(p, MAP_FAILED);
  uint64_t id = 0;
  std::memcpy(&id, p + slot + 8, sizeof id);
  ASSERT_EQ(id, 2u);
  const uint32_t writing = 1;
  std::memcpy(p + slot, &writing, sizeof writing);
  ::munmap(p, slot + 256);
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

}  // namespace
}  // namespace pcifs::control
