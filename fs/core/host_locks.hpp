// HostLocks: one pcifs daemon per device, across daemons [S6.3, S11, S15].
//
// Claims and power states are shared by the views of ONE daemon. Two daemons
// serving the same real device (two pcifs@ units whose views overlap) would
// each believe they own its claims and its power state, and one could power
// a device down under the other's mappings. So a daemon takes a host-wide
// lease on every IOMMU group it mediates, keyed by what the backend reaches
// (Backend::shared_root) and the claim key (ClaimTable::group_key); a daemon
// that finds the lease taken serves that device read-only, as it serves one
// bound to a kernel driver.
//
// A lease is an flock(2) on DIR/<root>.<group>.lock: the kernel drops it when
// the holder's descriptor closes, so a daemon that died (even SIGKILL) holds
// nothing. The holder writes who it is into the file; a refused acquirer reads
// that back for its log line. The file is unlinked (while still locked) when
// the lease ends; an acquirer that locked a file which was unlinked meanwhile
// sees a different inode under the name and tries again.
//
// Leases on one key are shared inside the process (functions of one group).
// Thread-safe: every method.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "pcifs/sync.hpp"

namespace pcifs::core {

class HostLease;

class HostLocks {
 public:
  // dir: where lock files live (created if missing). root: the backend's
  // shared_root. owner: what a refused acquirer will read, e.g. "pid 42, views a,b".
  HostLocks(std::string dir, std::string root, std::string owner);

  struct Outcome {
    std::shared_ptr<HostLease> lease;  // held: keep it as long as the device is served
    std::optional<std::string>
        holder;  // another process holds it: what it wrote ("" if nothing yet)
    std::optional<std::string> error;  // neither: the lock could not be taken at all
  };
  Outcome acquire(const std::string& key) EXCLUDES(mu_);

  // The lock file of `key`, for messages and tests.
  std::string path_of(const std::string& key) const;

 private:
  const std::string dir_, root_, owner_;
  Mutex mu_{"HostLocks::mu_"};  // lock order: leaf, under attach_mu (fs/core/mediator_state.hpp)
  std::map<std::string, std::weak_ptr<HostLease>> held_ GUARDED_BY(mu_);
};

}  // namespace pcifs::core
