#include "control/unix_socket.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <system_error>

namespace pcifs::control {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int e) { return std::error_code(e, std::system_category()).message(); }

Errno fail(std::string* error, const std::string& path, const std::string& text, int e) {
  *error = path + ": " + text;
  return Errno(e);
}

bool fill_addr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) return false;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

const sockaddr* as_sockaddr(const sockaddr_un* a) { return reinterpret_cast<const sockaddr*>(a); }

// mkdir -p of the socket's directory; directories made here get 0755.
Result<void> make_parent(const std::string& path, std::string* error) {
  const size_t last = path.rfind('/');
  if (last == std::string::npos || last == 0) return Ok();
  const std::string parent = path.substr(0, last);
  for (size_t i = 1; i <= parent.size(); ++i) {
    if (i != parent.size() && parent[i] != '/') continue;
    const std::string prefix = parent.substr(0, i);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      const int e = errno;
      return fail(error, path, "cannot create " + prefix + ": " + errno_text(e), e);
    }
  }
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail(error, path, parent + " is not a directory", ENOTDIR);
  }
  return Ok();
}

// connect()'s errno (0: connected) without waiting: a live daemon whose
// backlog is full must not hang the one starting.
int probe_unix(const std::string& path) {
  sockaddr_un addr{};
  if (!fill_addr(path, &addr)) return ENAMETOOLONG;
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errno;
  return ::connect(fd.get(), as_sockaddr(&addr), sizeof(addr)) == 0 ? 0 : errno;
}

// A socket file left by a daemon that crashed is removed; one somebody still
// answers on is not ours to take.
Result<void> clear_stale(const std::string& path, std::string* error) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Ok();
    const int e = errno;
    return fail(error, path, errno_text(e), e);
  }
  if (!S_ISSOCK(st.st_mode)) return fail(error, path, "exists and is not a socket", EEXIST);
  const int probe = probe_unix(path);
  if (probe == 0 || probe == EAGAIN) {  // EAGAIN: alive, with a full backlog
    return fail(error, path, "another pcifs daemon is listening", EADDRINUSE);
  }
  if (probe != ECONNREFUSED) {
    return fail(error, path, "exists and cannot be probed: " + errno_text(probe), probe);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    const int e = errno;
    return fail(error, path, "cannot remove the stale socket: " + errno_text(e), e);
  }
  return Ok();
}

}  // namespace

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<WakeFd> WakeFd::create() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Errno(errno);
  return WakeFd(UniqueFd(fd));
}

void WakeFd::signal() const {
  const uint64_t one = 1;
  // EAGAIN only when the counter is near 2^64: it is readable then anyway.
  if (::write(fd_.get(), &one, sizeof(one)) < 0) return;
}

void WakeFd::drain() const {
  uint64_t count = 0;
  if (::read(fd_.get(), &count, sizeof(count)) < 0) return;  // EAGAIN: nothing to drain
}

Result<UniqueFd> listen_unix(const std::string& path, std::string* error) {
  sockaddr_un addr{};
  if (!fill_addr(path, &addr)) {
    return fail(error, path,
                "not a usable unix socket path (1 to " + std::to_string(sizeof(addr.sun_path) - 1) +
                    " bytes)",
                ENAMETOOLONG);
  }
  if (auto r = make_parent(path, error); !r) return r.error();
  if (auto r = clear_stale(path, error); !r) return r.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) {
    const int e = errno;
    return fail(error, path, "socket: " + errno_text(e), e);
  }
  if (::bind(fd.get(), as_sockaddr(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    return fail(error, path, "bind: " + errno_text(e), e);
  }
  // Between bind and chmod the socket has the umask's mode; SO_PEERCRED on
  // every connection is what actually keeps other users out.
  if (::chmod(path.c_str(), 0600) != 0 || ::listen(fd.get(), 64) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return fail(error, path, errno_text(e), e);
  }
  return fd;
}

Result<UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un addr{};
  if (!fill_addr(path, &addr)) return Errno(ENAMETOOLONG);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Errno(errno);
  int rc;
  do {
    rc = ::connect(fd.get(), as_sockaddr(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return Errno(errno);
  return fd;
}

Result<PeerCred> peer_cred(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return Errno(errno);
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

Result<void> send_all(int fd, std::string_view data, int stop_fd, Clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return Errno(errno);
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Errno(ETIMEDOUT);
    pollfd fds[2] = {{fd, POLLOUT, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX))) < 0 &&
        errno != EINTR) {
      return Errno(errno);
    }
    if (fds[1].revents != 0) return Errno(ECANCELED);
  }
  return Ok();
}

Result<void> send_blocking(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno(n < 0 ? errno : EIO);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Ok();
}

}  // namespace pcifs::control
