// The RevocationSink of the mount: turns the core's "drop this device's
// mappings" into fuse_lowlevel_notify_inval_inode on every session (view),
// and a removed device into dentry invalidations.
//
// Deadlock rule (STYLE.md): the kernel's invalidation waits for page locks of
// faults in progress, whose FUSE_READ may sit in our read handler. The core
// calls this without its locks, and handlers never take mu_, so a fault in
// progress always finishes (or fails fast on the closed gate).
// Thread safety: all methods from any thread.
#pragma once

#include <vector>

#include "fuse/session.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

class Revoker : public RevocationSink {
 public:
  void add(fuse_session* se);
  void remove(fuse_session* se);
  void invalidate_mappings(const Bdf& bdf) override;
  void device_gone(const Bdf& bdf) override;

 private:
  // Lock order: leaf, held across notify_inval_*; taken under ViewHost::mu_,
  // a ControlSlot and attach_mu, never by a FUSE handler (fs/core/mediator_state.hpp).
  Mutex mu_{"Revoker::mu_"};
  std::vector<fuse_session*> sessions_ GUARDED_BY(mu_);
};

}  // namespace pcifs::fuse
