#include "core/doe_executor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace pcifs::core {

DoeExecutor::DoeExecutor(unsigned threads) {
  threads = std::max(threads, 1u);
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

DoeExecutor::~DoeExecutor() { shutdown(); }

bool DoeExecutor::wake(const std::shared_ptr<Task>& task) {
  MutexLock lock(mu_);
  if (stopped_) return false;
  auto [it, inserted] = tasks_.try_emplace(task.get());
  Entry& e = it->second;
  if (inserted) e.task = task;
  if (e.state == State::kRunning) {
    e.rewake = true;
  } else {
    auto now = Clock::now();
    if (inserted || e.due > now) schedule(e, task.get(), now);
  }
  return true;
}

void DoeExecutor::schedule(Entry& entry, Task* task, Clock::time_point due) {
  entry.state = State::kScheduled;
  entry.due = due;
  entry.generation = next_generation_++;
  entry.rewake = false;
  timers_.push(Timer{due, entry.generation, task});
  cv_.notify_all();
}

bool DoeExecutor::is_stale(const Timer& t) {
  auto it = tasks_.find(t.task);
  return it == tasks_.end() || it->second.state != State::kScheduled ||
         it->second.generation != t.generation;
}

std::shared_ptr<DoeExecutor::Task> DoeExecutor::next_task() {
  MutexLock lock(mu_);
  for (;;) {
    if (stopping_) return nullptr;
    if (timers_.empty()) {
      cv_.wait(mu_);
      continue;
    }
    Timer top = timers_.top();
    if (is_stale(top)) {
      timers_.pop();
      continue;
    }
    if (top.due > Clock::now()) {
      // Wake early when stopping or when an earlier timer may have arrived.
      uint64_t seen = next_generation_;
      cv_.wait_until(mu_, top.due,
                     [&]() REQUIRES(mu_) { return stopping_ || next_generation_ != seen; });
      continue;
    }
    timers_.pop();
    Entry& e = tasks_[top.task];
    e.state = State::kRunning;
    return e.task;
  }
}

void DoeExecutor::after_step(Task* task, std::optional<Clock::time_point> next) {
  MutexLock lock(mu_);
  auto it = tasks_.find(task);
  if (it == tasks_.end()) return;  // cannot happen: only shutdown() erases, after the join
  Entry& e = it->second;
  if (e.rewake) {
    schedule(e, task, Clock::now());
  } else if (next) {
    schedule(e, task, *next);
  } else {
    tasks_.erase(it);  // drops the executor's reference: idle tasks cost nothing here
  }
}

void DoeExecutor::worker_loop() {
  while (auto task = next_task()) {
    std::optional<Clock::time_point> next;
    try {
      next = task->step();
    } catch (...) {
      // A worker is a noexcept boundary: a throwing task (bad_alloc) is
      // parked until its next wake() rather than taking the daemon down.
      spdlog::error("doe executor: a step threw; task parked");
    }
    after_step(task.get(), next);
  }
}

void DoeExecutor::shutdown() {
  MutexLock serial(shutdown_mu_);
  {
    MutexLock lock(mu_);
    if (stopped_) return;
    stopping_ = true;
    cv_.notify_all();
  }
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
  std::vector<std::shared_ptr<Task>> pending;
  {
    MutexLock lock(mu_);
    stopped_ = true;
    for (auto& [ptr, entry] : tasks_) pending.push_back(std::move(entry.task));
    tasks_.clear();
    timers_ = {};
  }
  for (auto& t : pending) t->shutdown();
}

bool DoeExecutor::stopped() const {
  MutexLock lock(mu_);
  return stopped_;
}

}  // namespace pcifs::core
