// ClaimTable: exclusive ownership of IOMMU groups by processes [S11].
//
// A claim covers a whole IOMMU group (devices of one group can DMA into each
// other, so sharing a group between processes would defeat exclusivity). The
// key is "group:N" from DeviceInfo::iommu_group, or "device:DDDD:BB:DD.F" when
// the platform has no IOMMU (each function then stands alone).
//
// A claim belongs to a process (thread-group pid) and is reference counted
// per claiming handle: the holder may take more handles; another process gets
// EBUSY (and learns who holds it, for the log line). The claim ends when its
// last handle is released, or when the daemon revokes it.
//
// Tenant hand-over: a claim released with `hand_over` does not free the group
// at once; it stays held by the daemon (handing_over) until handed_over() is
// called, once the devices of the group are clean again. Meanwhile acquire()
// fails with EAGAIN: the group is only briefly unavailable, unlike EBUSY.
//
// Bridges neither take nor block claims: the Mediator does not call acquire()
// for a bridge (a root port shares a group with what sits below it, and
// claiming it would lock users out of their own endpoint).
//
// One table is shared by all views of a daemon. Thread-safe: every method.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"
#include "pcifs/types.hpp"

namespace pcifs::core {

struct ClaimHolder {
  pid_t pid = 0;
  uid_t uid = 0;
  std::string view;
  uint32_t handles = 0;          // claiming handles still open
  bool handing_over = false;     // the claim ended; the daemon is cleaning the group
  bool handover_failed = false;  // ... and could not: retry_handover() before a new claim
};

// "pid=1234 uid=1000 view=c1", or "hand-over after pid=1234 uid=1000 view=c1"
std::string to_string(const ClaimHolder& holder);

class ClaimTable {
 public:
  // The claim key of a device (see above).
  static std::string group_key(const backend::DeviceInfo& info);

  // Takes one more claiming handle for caller.pid. EBUSY if another process
  // holds the group, EAGAIN while it is handed over; then *holder (if given)
  // receives that holder. On success *holder receives the claim as it now
  // stands (handles == 1: a new claim).
  Result<void> acquire(const std::string& group, const Caller& caller, std::string_view view,
                       ClaimHolder* holder = nullptr) EXCLUDES(mu_);
  // Drops one handle of `pid`; true when that ended the claim. Releasing a
  // claim `pid` does not hold (e.g. after revoke) is a no-op returning false.
  // With `hand_over`, an ended claim leaves the group handing_over (above).
  bool release(const std::string& group, pid_t pid, bool hand_over = false) EXCLUDES(mu_);
  // The hand-over of `group` is done: the group is free. No-op otherwise.
  void handed_over(const std::string& group) EXCLUDES(mu_);
  // It failed: the group stays unavailable (EAGAIN) until retry_handover().
  void handover_failed(const std::string& group) EXCLUDES(mu_);
  // True for exactly one caller while a failed hand-over waits for a retry.
  bool retry_handover(const std::string& group) EXCLUDES(mu_);
  // Waits until `group` is not handing over (or its hand-over failed), at most
  // until `deadline`; true when it is not handing over now.
  bool wait_handed_over(const std::string& group, std::chrono::steady_clock::time_point deadline)
      EXCLUDES(mu_);
  bool handing_over(const std::string& group) const EXCLUDES(mu_);
  // Ends the claim at once (daemon decision); returns who held it.
  std::optional<ClaimHolder> revoke(const std::string& group) EXCLUDES(mu_);

  std::optional<ClaimHolder> holder(const std::string& group) const EXCLUDES(mu_);
  // True when `pid` holds a live claim (not a hand-over) on the group.
  bool held_by(const std::string& group, pid_t pid) const EXCLUDES(mu_);
  std::string owner_text(const std::string& group) const EXCLUDES(mu_);  // or "none"

 private:
  mutable Mutex mu_{"ClaimTable::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  CondVar handed_over_cv_;               // a hand-over ended (done or failed)
  std::map<std::string, ClaimHolder, std::less<>> claims_ GUARDED_BY(mu_);
};

}  // namespace pcifs::core
