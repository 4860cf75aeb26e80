// The daemon's life: one Mediator over the backend, one Filesystem and
// Session per view (each at its own mountpoint, sharing claims and power
// states, S6.3), the loops, and a clean end on SIGINT/SIGTERM/SIGHUP or when
// the last mount is gone (`fusermount3 -u`).
//
// The caller blocks SIGINT/SIGTERM/SIGHUP in every thread before calling
// serve() (block_stop_signals), so serve() can wait for them with sigtimedwait.
#pragma once

#include <signal.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fuse/session.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/view.hpp"

namespace pcifs::fuse {

struct DaemonOptions {
  std::vector<ViewPolicy> views;  // each names its mountpoint
  std::vector<std::string> mount_options;
  MediatorOptions mediator;
  unsigned max_threads = 16;
  Transport transport = Transport::kAuto;  // session.hpp; kDev with fd_store
  std::string backend_name;                // for the start-up summary
  std::string lock_dir;                    // host leases (MediatorOptions::host_locks); empty: none
  // A host daemon [S16]: views at runtime through the control socket at this
  // path (empty: none; then the daemon ends with its last mount).
  std::string control;
  std::string state_dir;                       // runtime views persist here (empty: not at all)
  std::string cdi_dir;                         // one CDI spec per view (empty: none)
  std::string view_root = "/run/pcifs/views";  // where a view that names no mountpoint goes
  std::string hook_binary;                     // the CDI specs' hook: this binary
  std::chrono::milliseconds health_interval{1000};
  // Keep each view's connection in the service manager's fd store and hand
  // the mounts over on a stop signal (README "Restarts"): needs $NOTIFY_SOCKET.
  bool fd_store = false;
};

// SIGINT, SIGTERM, SIGHUP: the signals that end a daemon (and the floor).
sigset_t stop_signals();
void block_stop_signals();

// Mounts every view (the command line's, then the state directory's), starts
// the control socket, calls `ready(ok, error)` once (after that, or on the
// first failure, when nothing stays mounted), then serves. Returns the exit
// status: 0 after a clean end, 1 when a mount or the control socket failed.
int serve(std::shared_ptr<backend::Backend> backend, const DaemonOptions& options,
          const std::function<void(bool, const std::string&)>& ready);

}  // namespace pcifs::fuse
