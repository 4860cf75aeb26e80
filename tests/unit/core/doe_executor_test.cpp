// DoeExecutor with fake tasks: one step at a time per task, wakes during a
// step, timed rescheduling, and shutdown.
#include "core/doe_executor.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace pcifs::core {
namespace {

using namespace std::chrono_literals;
using Clock = DoeExecutor::Clock;

// Counts steps and detects two steps of this task at once.
class CountingTask : public DoeExecutor::Task {
 public:
  explicit CountingTask(int steps) : left_(steps) {}
  std::optional<Clock::time_point> step() override {
    if (in_step_.exchange(true)) overlap_ = true;
    for (int i = 0; i < 200; ++i) spin_.fetch_add(1);  // widen the window
    ++steps_;
    in_step_ = false;
    if (--left_ > 0) return Clock::now();
    done_ = true;
    return std::nullopt;
  }
  void shutdown() override { ++shutdowns_; }

  std::atomic<bool> in_step_{false}, overlap_{false}, done_{false};
  std::atomic<int> steps_{0}, left_, shutdowns_{0}, spin_{0};
};

TEST(DoeExecutor, NeverStepsOneTaskTwiceAtOnce) {
  DoeExecutor ex(4);
  std::vector<std::shared_ptr<CountingTask>> tasks;
  for (int i = 0; i < 8; ++i) tasks.push_back(std::make_shared<CountingTask>(300));
  // Wakes from several threads while the tasks are running.
  std::vector<std::thread> wakers;
  for (int w = 0; w < 3; ++w) {
    wakers.emplace_back([&] {
      for (int k = 0; k < 300; ++k)
        for (auto& t : tasks) ASSERT_TRUE(ex.wake(t));
    });
  }
  for (auto& w : wakers) w.join();
  for (auto& t : tasks) {
    while (!t->done_) std::this_thread::yield();
    EXPECT_FALSE(t->overlap_);
  }
}

TEST(DoeExecutor, OverlapDetectorWorks) {
  // Negative control for the test above: stepping one task from two threads
  // without the executor is caught.
  auto t = std::make_shared<CountingTask>(1 << 30);
  std::atomic<bool> go{false};
  auto run = [&] {
    while (!go) std::this_thread::yield();
    for (int i = 0; i < 20000 && !t->overlap_; ++i) (void)t->step();
  };
  std::thread a(run), b(run);
  go = true;
  a.join();
  b.join();
  EXPECT_TRUE(t->overlap_);
}

class TimedTask : public DoeExecutor::Task {
 public:
  explicit TimedTask(std::chrono::milliseconds delay) : delay_(delay) {}
  std::optional<Clock::time_point> step() override {
    auto now = Clock::now();
    if (steps_++ == 0) {
      due_ = now + delay_;
      return due_;
    }
    second_ = now;
    done_ = true;
    return std::nullopt;
  }
  void shutdown() override {}
  std::chrono::milliseconds delay_;
  std::atomic<int> steps_{0};
  Clock::time_point due_{}, second_{};
  std::atomic<bool> done_{false};
};

TEST(DoeExecutor, HonoursTheTimeAStepAsksFor) {
  DoeExecutor ex;
  auto t = std::make_shared<TimedTask>(30ms);
  ASSERT_TRUE(ex.wake(t));
  while (!t->done_) std::this_thread::yield();
  EXPECT_GE(t->second_, t->due_);  // never early
}

TEST(DoeExecutor, WakeBringsATimedTaskForward) {
  DoeExecutor ex;
  auto t = std::make_shared<TimedTask>(std::chrono::hours(1));
  ASSERT_TRUE(ex.wake(t));
  while (t->steps_ == 0) std::this_thread::yield();
  // The task asked for +1 h; a wake (new work) runs it at once instead, so
  // this test ends only if wake() brings it forward.
  ASSERT_TRUE(ex.wake(t));
  while (!t->done_) std::this_thread::yield();
  EXPECT_EQ(t->steps_, 2);
}

TEST(DoeExecutor, ShutdownEndsPendingTasksAndRefusesNewWork) {
  DoeExecutor ex;
  auto idle = std::make_shared<CountingTask>(1);
  ASSERT_TRUE(ex.wake(idle));
  while (!idle->done_) std::this_thread::yield();
  // A task with work far in the future is still pending at shutdown.
  class Later : public DoeExecutor::Task {
   public:
    std::optional<Clock::time_point> step() override { return Clock::now() + 1h; }
    void shutdown() override { ++shutdowns; }
    std::atomic<int> shutdowns{0};
  };
  auto later = std::make_shared<Later>();
  ASSERT_TRUE(ex.wake(later));
  ex.shutdown();
  EXPECT_EQ(later->shutdowns, 1);
  EXPECT_EQ(idle->shutdowns_, 0);  // nothing pending: not called
  EXPECT_TRUE(ex.stopped());
  EXPECT_FALSE(ex.wake(idle));
  ex.shutdown();  // idempotent
  EXPECT_EQ(later->shutdowns, 1);
}

}  // namespace
}  // namespace pcifs::core
