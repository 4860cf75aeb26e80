// The bounded queue between Server::publish() and one watcher's connection
// thread. publish() must never wait for a client, so a watcher that does not
// read loses events instead of growing the queue: while the queue holds
// `capacity` events, new ones are counted and dropped, and the watcher gets
// {"event":"overflow","dropped":N} at the place of the gap, either before the
// next event that fits or, when none comes, as soon as it has caught up.
//
// Lines are shared (one serialisation per published event, whatever the
// number of watchers). WatcherHub is the set of current watchers that
// Server::publish() fans out to. Everything here is thread-safe: push() and
// publish() from any thread, take() from the watcher's own thread. Lock
// order: WatcherHub::mu_ before WatchQueue::mu_.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "control/unix_socket.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::control {

class WatchQueue {
 public:
  explicit WatchQueue(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  // Queues one event line ('\n'-terminated); drops it when the queue is full.
  void push(std::shared_ptr<const std::string> line) EXCLUDES(mu_);
  // Moves queued lines, overflow markers included, to the end of *out until
  // it holds at least `max_bytes` or the queue is empty. False when nothing
  // was added.
  bool take(std::string* out, size_t max_bytes) EXCLUDES(mu_);
  // Events dropped since construction (for logs and tests).
  uint64_t dropped_total() const EXCLUDES(mu_);

  static std::string overflow_line(uint64_t dropped);

 private:
  struct Item {
    std::shared_ptr<const std::string> line;  // null: an overflow marker
    uint64_t dropped = 0;
  };

  const size_t capacity_;
  mutable Mutex mu_{
      "WatchQueue::mu_"};  // lock order: leaf, after WatcherHub::mu_ (fs/core/mediator_state.hpp)
  std::deque<Item> items_ GUARDED_BY(mu_);
  uint64_t pending_drop_ GUARDED_BY(mu_) = 0;  // dropped since the last marker
  uint64_t dropped_total_ GUARDED_BY(mu_) = 0;
};

// One watching connection: its queue, and the eventfd that wakes its thread
// when the queue gains a line.
struct Watcher {
  Watcher(size_t capacity, WakeFd wake_fd) : queue(capacity), wake(std::move(wake_fd)) {}
  WatchQueue queue;
  WakeFd wake;
};

class WatcherHub {
 public:
  void add(std::shared_ptr<Watcher> w) EXCLUDES(mu_);
  void remove(const Watcher* w) EXCLUDES(mu_);
  // Serialises `event` once and queues it for every watcher; never blocks on
  // a client (only on the short queue locks).
  void publish(const nlohmann::json& event) EXCLUDES(mu_);
  size_t size() const EXCLUDES(mu_);
  // Waits until size() == n or the timeout passes; true when it got there.
  bool wait_for_size(size_t n, std::chrono::milliseconds timeout) const EXCLUDES(mu_);

 private:
  mutable Mutex mu_{
      "WatcherHub::mu_"};  // lock order: before WatchQueue::mu_ (fs/core/mediator_state.hpp)
  mutable CondVar changed_;
  std::vector<std::shared_ptr<Watcher>> watchers_ GUARDED_BY(mu_);
};

}  // namespace pcifs::control
