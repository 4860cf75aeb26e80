// DoeExecutor: the few worker threads that drive every DOE mailbox of the daemon.
//
// There may be thousands of devices, so there is no thread per mailbox: each
// mailbox is a Task, a state machine the executor steps. A step does a bounded
// amount of register work and says when it wants to run again (timed polling),
// so one worker interleaves many mailboxes and none is parked on a device.
//
// Ownership: the executor holds a shared_ptr to a Task only while the task is
// scheduled or running, so a task with work pending stays alive until that
// work ends. The executor must outlive the tasks that refer to it (the owner
// destroys it last).
//
// Guarantees: a task is never stepped by two workers at once; a wake() during
// a step reschedules the task right after it. shutdown() (also run by the
// destructor) stops the workers, joins them, then calls Task::shutdown() on
// every task that still had work, on the calling thread; wake() after that
// returns false and the caller ends its work itself.
//
// Thread safety: wake() and shutdown() may be called from any thread, except
// that shutdown() must not be called from a worker (from inside a step).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <queue>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pcifs/sync.hpp"

namespace pcifs::core {

class DoeExecutor {
 public:
  using Clock = std::chrono::steady_clock;

  class Task {
   public:
    virtual ~Task() = default;
    // Runs a bounded amount of work. Returns when to run again, or nullopt
    // when there is nothing to do until the next wake().
    virtual std::optional<Clock::time_point> step() = 0;
    // The executor has stopped; end every pending piece of work now (ESHUTDOWN).
    virtual void shutdown() = 0;
  };

  explicit DoeExecutor(unsigned threads = 1);
  ~DoeExecutor();
  DoeExecutor(const DoeExecutor&) = delete;
  DoeExecutor& operator=(const DoeExecutor&) = delete;

  // Runs `task` as soon as a worker is free. False once the executor has stopped.
  bool wake(const std::shared_ptr<Task>& task) EXCLUDES(mu_);
  // Idempotent; see the header comment.
  void shutdown() EXCLUDES(mu_);
  bool stopped() const EXCLUDES(mu_);
  unsigned threads() const { return static_cast<unsigned>(workers_.size()); }

 private:
  enum class State { kScheduled, kRunning };
  struct Entry {
    std::shared_ptr<Task> task;
    State state = State::kScheduled;
    Clock::time_point due;
    uint64_t generation = 0;  // matches the live heap item; older items are stale
    bool rewake = false;      // woken while running
  };
  struct Timer {
    Clock::time_point due;
    uint64_t generation;
    Task* task;
    bool operator>(const Timer& o) const { return due > o.due; }
  };

  void worker_loop();
  std::shared_ptr<Task> next_task() EXCLUDES(mu_);
  void after_step(Task* task, std::optional<Clock::time_point> next) EXCLUDES(mu_);
  void schedule(Entry& entry, Task* task, Clock::time_point due) REQUIRES(mu_);
  bool is_stale(const Timer& t) REQUIRES(mu_);

  mutable Mutex mu_{"DoeExecutor::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  CondVar cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  bool stopped_ GUARDED_BY(mu_) = false;
  uint64_t next_generation_ GUARDED_BY(mu_) = 1;
  std::unordered_map<Task*, Entry> tasks_ GUARDED_BY(mu_);
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_ GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // written only by the constructor and shutdown()
  // Serialises shutdown() callers; held across the join and the ESHUTDOWN
  // completions. Lock order: level 2 (fs/core/mediator_state.hpp).
  Mutex shutdown_mu_ ACQUIRED_BEFORE(mu_){"DoeExecutor::shutdown_mu_"};
};

}  // namespace pcifs::core
