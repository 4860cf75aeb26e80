// The daemon's life: one Mediator over the backend, one Filesystem and
// Session per view (each at its own mountpoint, sharing claims and power
// states, S6.3), the loops, and a clean end on SIGINT/SIGTERM/SIGHUP or when
// the last mount is gone (`fusermount3 -u`).
//
// The caller blocks SIGINT/SIGTERM/SIGHUP in every thread before calling
// serve() (block_stop_signals), so serve() can wait for them with sigtimedwait.
#pragma once

#include <signal.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/view.hpp"

namespace pcifs::fuse {

struct DaemonOptions {
  std::vector<ViewPolicy> views;  // each names its mountpoint
  std::vector<std::string> mount_options;
  MediatorOptions mediator;
  unsigned max_threads = 16;
  std::string backend_name;  // for the start-up summary
  std::string lock_dir;      // host leases (MediatorOptions::host_locks); empty: none
};

// SIGINT, SIGTERM, SIGHUP: the signals that end a daemon (and the floor).
sigset_t stop_signals();
void block_stop_signals();

// Mounts every view, calls `ready(ok, error)` once (after the mounts, or on the
// first failure, when nothing stays mounted), then serves. Returns the exit
// status: 0 after a clean end, 1 when a mount failed.
int serve(std::shared_ptr<backend::Backend> backend, const DaemonOptions& options,
          const std::function<void(bool, const std::string&)>& ready);

}  // namespace pcifs::fuse
