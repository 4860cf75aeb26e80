// The daemon's word with a service manager, in systemd's protocols without
// libsystemd (README "Restarts"):
//   - sd_notify(3): datagrams of "KEY=VALUE" lines to the AF_UNIX socket
//     named by $NOTIFY_SOCKET ('@' = the abstract namespace): READY=1,
//     STOPPING=1, STATUS=...; with descriptors attached (SCM_RIGHTS),
//     FDSTORE=1 + FDNAME=NAME keeps them in the manager's file-descriptor
//     store across a restart, FDSTOREREMOVE=1 + FDNAME=NAME drops them.
//   - sd_listen_fds(3): a daemon started with LISTEN_PID = its pid finds
//     LISTEN_FDS descriptors from fd 3 on, named by LISTEN_FDNAMES
//     (colon-separated): the store's descriptors, handed back.
// Nothing here is systemd-only: any manager speaking these protocols works
// (the tests use tools/pcifs_supervise.cpp).
//
// Thread safety: a Notifier is immutable after construction (send from any
// thread). take_listen_fds() once, before any thread starts (it unsets the
// variables, as sd_listen_fds(1) does).
#pragma once

#include <string>
#include <vector>

namespace pcifs::control {

class Notifier {
 public:
  Notifier();  // reads $NOTIFY_SOCKET
  bool enabled() const { return !socket_.empty(); }
  // Sends `state` (with `fds` attached, if any). A failure is logged and
  // returned: the caller decides whether it matters (readiness never does).
  bool send(const std::string& state, const std::vector<int>& fds = {}) const;
  // FDSTORE=1 with FDNAME=name, and FDSTOREREMOVE=1.
  bool store_fd(const std::string& name, int fd) const;
  bool remove_fds(const std::string& name) const;

 private:
  std::string socket_;
};

struct ListenFd {
  int fd = -1;
  std::string name;  // "unknown" when the manager named none
};

// The descriptors passed to this process (none if LISTEN_PID is another
// process's), each made close-on-exec. Unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES.
std::vector<ListenFd> take_listen_fds();

// systemd's rule for FDNAME: 1..255 printable ASCII characters, no ':'.
bool valid_fd_name(const std::string& name);

}  // namespace pcifs::control
