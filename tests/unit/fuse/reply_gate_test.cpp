// ReplyGate (fs/fuse/reply_gate.hpp): a reply runs while the gate is open,
// never after close(), and close() returns only once a reply in progress has
// finished: the view's session is destroyed right after it.
#include "fuse/reply_gate.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace pcifs::fuse {
namespace {

TEST(ReplyGateTest, RunsUntilClosedAndNeverAfter) {
  ReplyGate gate;
  int sent = 0;
  EXPECT_TRUE(gate.run([&] { ++sent; }));
  EXPECT_TRUE(gate.run([&] { ++sent; }));
  gate.close();
  EXPECT_FALSE(gate.run([&] { ++sent; }));
  EXPECT_EQ(sent, 2);
}

// A reply in progress holds close() back. The reply waits inside until the
// closer has announced itself, then yields for a while before it finishes:
// a close() that did not wait would return in that window and see the reply
// unfinished (how the negative control fails). A correct gate passes
// whatever the scheduling.
TEST(ReplyGateTest, CloseWaitsForAReplyInProgress) {
  ReplyGate gate;
  std::atomic<bool> inside{false}, closing{false}, finished{false};
  std::thread reply([&] {
    gate.run([&] {
      inside = true;
      while (!closing) std::this_thread::yield();
      for (int i = 0; i < 100000; ++i) std::this_thread::yield();
      finished = true;
    });
  });
  while (!inside) std::this_thread::yield();
  std::thread closer([&] {
    closing = true;
    gate.close();
    EXPECT_TRUE(finished) << "close() returned while a reply was still being sent";
  });
  closer.join();
  reply.join();
  EXPECT_FALSE(gate.run([] {}));
}

// Many completions at once (the DOE executor's threads) do not wait for each
// other: all of them are inside run() together.
TEST(ReplyGateTest, RepliesDoNotSerialiseEachOther) {
  ReplyGate gate;
  constexpr int kThreads = 4;
  std::atomic<int> in{0}, saw_all{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) {
    ts.emplace_back([&] {
      gate.run([&] {
        ++in;
        // Bounded: a gate that let one reply in at a time ends here too, and fails.
        for (long k = 0; k < 20'000'000 && in.load() < kThreads; ++k) std::this_thread::yield();
        if (in.load() == kThreads) ++saw_all;
      });
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(saw_all.load(), kThreads) << "the replies were not all inside run() at once";
}

}  // namespace
}  // namespace pcifs::fuse
