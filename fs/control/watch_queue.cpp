#include "control/watch_queue.hpp"

#include <algorithm>

#include "control/protocol.hpp"

namespace pcifs::control {

void WatchQueue::push(std::shared_ptr<const std::string> line) {
  MutexLock lock(mu_);
  if (items_.size() >= capacity_) {
    ++pending_drop_;
    ++dropped_total_;
    return;
  }
  if (pending_drop_ > 0) {
    items_.push_back(Item{nullptr, pending_drop_});
    pending_drop_ = 0;
  }
  items_.push_back(Item{std::move(line), 0});
}

bool WatchQueue::take(std::string* out, size_t max_bytes) {
  MutexLock lock(mu_);
  const size_t before = out->size();
  while (!items_.empty() && out->size() < max_bytes) {
    const Item& item = items_.front();
    if (item.line) {
      out->append(*item.line);
    } else {
      out->append(overflow_line(item.dropped));
    }
    items_.pop_front();
  }
  if (items_.empty() && pending_drop_ > 0 && out->size() < max_bytes) {
    out->append(overflow_line(pending_drop_));
    pending_drop_ = 0;
  }
  return out->size() != before;
}

uint64_t WatchQueue::dropped_total() const {
  MutexLock lock(mu_);
  return dropped_total_;
}

std::string WatchQueue::overflow_line(uint64_t dropped) {
  return to_line(nlohmann::json{{"event", "overflow"}, {"dropped", dropped}});
}

void WatcherHub::add(std::shared_ptr<Watcher> w) {
  MutexLock lock(mu_);
  watchers_.push_back(std::move(w));
  changed_.notify_all();
}

void WatcherHub::remove(const Watcher* w) {
  MutexLock lock(mu_);
  std::erase_if(watchers_, [w](const auto& p) { return p.get() == w; });
  changed_.notify_all();
}

void WatcherHub::publish(const nlohmann::json& event) {
  const auto line = std::make_shared<const std::string>(to_line(event));
  MutexLock lock(mu_);
  for (const auto& w : watchers_) {
    w->queue.push(line);
    w->wake.signal();
  }
}

size_t WatcherHub::size() const {
  MutexLock lock(mu_);
  return watchers_.size();
}

bool WatcherHub::wait_for_size(size_t n, std::chrono::milliseconds timeout) const {
  MutexLock lock(mu_);
  return changed_.wait_for(mu_, timeout, [&]() REQUIRES(mu_) { return watchers_.size() == n; });
}

}  // namespace pcifs::control
