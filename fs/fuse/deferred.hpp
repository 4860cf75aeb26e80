// Threads that run FUSE work off the loop's workers.
//
// Deferred: a single thread that runs small jobs later. libfuse calls an
// interrupt callback with the request's lock held, and replying from there
// frees the request under that lock; so the callback only queues the job that
// replies.
//
// Lanes: one lane per device for the requests a worker must not wait for
// (Mediator::try_read/try_write answered kWouldWait: a power transition,
// reset or ROM capture is running, or the request runs a control operation
// itself). A lane runs its jobs in order on its own thread, started when the
// lane gets work and ended when it is empty again, so a device stuck in a
// minute-long FLR holds its own lane and no loop worker: every other device of
// every view keeps answering, and a worker is always free for the kernel's
// writeback of dirty mapped pages that a quiesce waits for. A lane holds at
// most kMaxPerLane jobs (a stuck device cannot grow memory): post() is false
// beyond it and the caller answers EAGAIN.
//
// Thread safety: post() from any thread. The destructors run what is queued
// (every job replies to its request) and join their threads.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "pcifs/sync.hpp"
#include "pcifs/types.hpp"

namespace pcifs::fuse {

class Deferred {
 public:
  Deferred();
  ~Deferred();
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;
  void post(std::function<void()> job);

 private:
  void run();
  Mutex mu_{"Deferred::mu_"};  // lock order: leaf; jobs run without it (fs/core/mediator_state.hpp)
  CondVar cv_;
  std::deque<std::function<void()>> jobs_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class Lanes {
 public:
  // Queued requests per device: 4 times the loop's 16 workers, so that a
  // burst of readers is answered rather than refused, while a stuck device
  // holds at most 256 small closures (a request's copy of a write is at most
  // one page of config or a control word; BAR writes never wait here long).
  static constexpr size_t kMaxPerLane = 256;

  Lanes() = default;
  ~Lanes();
  Lanes(const Lanes&) = delete;
  Lanes& operator=(const Lanes&) = delete;

  // Queues `job` on the lane of `device`; false when that lane is full or the
  // Lanes are shutting down (the job is dropped: the caller answers).
  bool post(const Bdf& device, std::function<void()> job);
  // Lane threads started so far (for tests and `status`-like counters).
  uint64_t threads_started() const;

 private:
  struct Lane {
    std::deque<std::function<void()>> jobs;
    std::thread thread;
    bool running = false;
  };
  void run(Lane* lane);

  mutable Mutex mu_{
      "Lanes::mu_"};  // lock order: leaf; jobs run without it (fs/core/mediator_state.hpp)
  std::map<Bdf, std::unique_ptr<Lane>> lanes_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  uint64_t started_ GUARDED_BY(mu_) = 0;
};

}  // namespace pcifs::fuse
