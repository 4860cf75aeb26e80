// Small POSIX helpers for the control socket: an owning file descriptor, an
// eventfd used as a wake-up flag, creating the listening socket with the
// S16 rules (parent directory, stale sockets, mode 0600), connecting, the
// peer's credentials, and writing a whole buffer to a socket.
//
// UniqueFd and WakeFd are single-owner values; WakeFd::signal() may be called
// from any thread. Every descriptor is created close-on-exec; every send uses
// MSG_NOSIGNAL, so a vanished peer is EPIPE, never SIGPIPE.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>

#include "pcifs/result.hpp"

namespace pcifs::control {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// An eventfd as a level-triggered flag for poll(): readable once signalled,
// until drained. Signalling never blocks.
class WakeFd {
 public:
  static Result<WakeFd> create();
  void signal() const;
  void drain() const;
  int fd() const { return fd_.get(); }

 private:
  explicit WakeFd(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Creates the parent directory (0755) when missing, replaces a stale socket
// nobody answers, refuses a live one or a non-socket, binds, chmods 0600 and
// listens. The descriptor is non-blocking. *error reads "PATH: ...".
Result<UniqueFd> listen_unix(const std::string& path, std::string* error);

// A blocking SOCK_STREAM connection to `path`; the error is connect()'s errno
// (ENAMETOOLONG for a path that does not fit a sockaddr_un).
Result<UniqueFd> connect_unix(const std::string& path);

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
Result<PeerCred> peer_cred(int fd);

// Writes all of `data` to a non-blocking socket, waiting in poll() for room.
// Fails with ECANCELED when `stop_fd` becomes readable, ETIMEDOUT at
// `deadline`, or the send() errno (EPIPE when the peer has gone).
Result<void> send_all(int fd, std::string_view data, int stop_fd,
                      std::chrono::steady_clock::time_point deadline);

// Writes all of `data` to a blocking socket.
Result<void> send_blocking(int fd, std::string_view data);

}  // namespace pcifs::control
