#include "core/log_limit.hpp"

namespace pcifs::core {

bool LogLimiter::allow(std::string_view key, uint64_t* suppressed, Clock::time_point now) {
  MutexLock lock(mu_);
  if (windows_.size() >= kMaxKeys && !windows_.count(std::string(key))) windows_.clear();
  Window& w = windows_[std::string(key)];
  if (w.count == 0 || now - w.start >= std::chrono::seconds(1)) {
    w.start = now;
    w.count = 0;
  }
  if (w.count >= kBurst) {
    ++w.dropped;
    return false;
  }
  ++w.count;
  *suppressed = w.dropped;
  w.dropped = 0;
  return true;
}

LogLimiter& client_log_limiter() {
  static LogLimiter limiter;
  return limiter;
}

}  // namespace pcifs::core
