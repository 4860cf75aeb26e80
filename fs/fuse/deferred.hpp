// A single thread that runs small jobs later. libfuse calls an interrupt
// callback with the request's lock held, and replying from there frees the
// request under that lock; so the callback only queues the job that replies.
// Thread safety: post() from any thread; the destructor runs what is queued.
#pragma once

#include <deque>
#include <functional>
#include <thread>

#include "pcifs/sync.hpp"

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
  Mutex mu_;  // lock order: leaf; jobs run without it (fs/core/mediator_state.hpp)
  CondVar cv_;
  std::deque<std::function<void()>> jobs_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pcifs::fuse
