#include "sysfs/crash_points.hpp"

#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <utility>

namespace pcifs::backend::sysfs {
namespace {

std::atomic<CrashPoint> armed{CrashPoint::kNone};

constexpr std::pair<std::string_view, CrashPoint> kNames[] = {
    {"rom-enabled", CrashPoint::kRomEnabled},   {"rom-read", CrashPoint::kRomRead},
    {"before-d3hot", CrashPoint::kBeforeD3hot}, {"after-d3hot", CrashPoint::kAfterD3hot},
    {"after-d0", CrashPoint::kAfterD0},         {"mid-restore", CrashPoint::kMidRestore},
    {"after-reset", CrashPoint::kAfterReset},
};

}  // namespace

std::optional<CrashPoint> parse_crash_point(std::string_view name) {
  if (name.empty()) return CrashPoint::kNone;
  for (const auto& [n, p] : kNames) {
    if (n == name) return p;
  }
  return std::nullopt;
}

std::optional<std::string> arm_crash_point_from_env() {
  const char* v = std::getenv("PCIFS_CRASH_AT");
  auto p = parse_crash_point(v ? v : "");
  if (!p) return "PCIFS_CRASH_AT=" + std::string(v) + ": no such failpoint (ignored)";
  arm_crash_point(*p);
  return std::nullopt;
}

void arm_crash_point(CrashPoint p) { armed.store(p, std::memory_order_relaxed); }

CrashPoint armed_crash_point() { return armed.load(std::memory_order_relaxed); }

void crash_at(CrashPoint p) {
  if (p == CrashPoint::kNone || armed.load(std::memory_order_relaxed) != p) return;
  ::raise(SIGKILL);
}

}  // namespace pcifs::backend::sysfs
