#include "fuse/deferred.hpp"

#include <pthread.h>

#include <utility>
#include <vector>

#include "fuse/uring.hpp"

namespace pcifs::fuse {

Deferred::Deferred() : thread_([this] { run(); }) {}

Deferred::~Deferred() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Deferred::post(std::function<void()> job) {
  {
    MutexLock lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void Deferred::run() {
  for (;;) {
    std::function<void()> job;
    {
      MutexLock lock(mu_);
      while (jobs_.empty() && !stop_) cv_.wait(mu_);
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();
    } catch (...) {  // a job is a reply; nothing to do but go on
    }
  }
}

// ---------------------------------------------------------------------- Lanes

Lanes::~Lanes() {
  std::vector<std::thread> threads;
  {
    MutexLock lock(mu_);
    stop_ = true;
    for (auto& [bdf, lane] : lanes_) {
      if (lane->thread.joinable()) threads.push_back(std::move(lane->thread));
    }
  }
  // A running lane empties its queue first: every queued request is answered.
  for (auto& t : threads) t.join();
}

bool Lanes::post(const Bdf& device, std::function<void()> job) {
  MutexLock lock(mu_);
  if (stop_) return false;
  auto& slot = lanes_[device];
  if (!slot) slot = std::make_unique<Lane>();
  Lane* lane = slot.get();
  if (lane->jobs.size() >= kMaxPerLane) return false;
  lane->jobs.push_back(std::move(job));
  if (lane->running) return true;
  // The previous thread set running=false under mu_ and touches nothing after
  // it: joining it here is immediate.
  if (lane->thread.joinable()) lane->thread.join();
  lane->running = true;
  try {
    lane->thread = std::thread([this, lane] { run(lane); });
  } catch (...) {
    lane->running = false;
    lane->jobs.pop_back();
    return false;
  }
  ++started_;
  return true;
}

uint64_t Lanes::threads_started() const {
  MutexLock lock(mu_);
  return started_;
}

void Lanes::run(Lane* lane) {
  // Started from a handler, maybe on a queue thread: not its name, not its pin.
  pthread_setname_np(pthread_self(), "pcifs-lane");
  unpin_current_thread();
  for (;;) {
    std::function<void()> job;
    {
      MutexLock lock(mu_);
      if (lane->jobs.empty()) {
        lane->running = false;
        return;
      }
      job = std::move(lane->jobs.front());
      lane->jobs.pop_front();
    }
    try {
      job();
    } catch (...) {  // a job answers its request itself; the lane goes on
    }
  }
}

}  // namespace pcifs::fuse
