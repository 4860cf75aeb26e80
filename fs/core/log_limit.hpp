// Rate limiting for log lines a client can trigger (denials, EBUSY, DOE
// failures): at most kBurst lines per key per second; the first line after a
// quiet spell says how many were suppressed. Keys are short strings such as
// "deny:0000:01:00.0". Thread-safe. The table is bounded (kMaxKeys); when full,
// it is cleared, which at worst lets a few extra lines through.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pcifs/sync.hpp"

namespace pcifs::core {

class LogLimiter {
 public:
  static constexpr uint32_t kBurst = 10;
  static constexpr size_t kMaxKeys = 4096;
  using Clock = std::chrono::steady_clock;

  // True when a line for `key` may be logged now; *suppressed receives how
  // many lines of this key were dropped since the last one allowed.
  bool allow(std::string_view key, uint64_t* suppressed, Clock::time_point now = Clock::now())
      EXCLUDES(mu_);

 private:
  struct Window {
    Clock::time_point start;
    uint32_t count = 0;
    uint64_t dropped = 0;
  };
  Mutex mu_{"LogLimiter::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  std::unordered_map<std::string, Window> windows_ GUARDED_BY(mu_);
};

// The daemon-wide limiter used by the core's log lines.
LogLimiter& client_log_limiter();

}  // namespace pcifs::core

// Logs through spdlog when the limiter allows it (callers include spdlog).
#define PCIFS_LOG_LIMITED(level, key, ...)                                   \
  do {                                                                       \
    uint64_t pcifs_dropped_ = 0;                                             \
    if (::pcifs::core::client_log_limiter().allow((key), &pcifs_dropped_)) { \
      if (pcifs_dropped_) {                                                  \
        spdlog::level("({} similar lines suppressed)", pcifs_dropped_);      \
      }                                                                      \
      spdlog::level(__VA_ARGS__);                                            \
    }                                                                        \
  } while (0)
