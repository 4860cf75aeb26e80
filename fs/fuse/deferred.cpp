#include "fuse/deferred.hpp"

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

}  // namespace pcifs::fuse
