// Notifier and take_listen_fds (service_manager.hpp).
#include "control/service_manager.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace pcifs::control {

Notifier::Notifier() {
  const char* s = std::getenv("NOTIFY_SOCKET");
  if (s) socket_ = s;
}

bool Notifier::send(const std::string& state, const std::vector<int>& fds) const {
  if (socket_.empty()) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const bool abstract = socket_[0] == '@';
  if ((!abstract && socket_[0] != '/') || socket_.size() >= sizeof(addr.sun_path)) {
    spdlog::warn("NOTIFY_SOCKET={}: not an absolute path or @name: not notified", socket_);
    return false;
  }
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  if (abstract) addr.sun_path[0] = '\0';
  // A path's length counts its NUL; an abstract name is exactly its bytes.
  const auto len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_.size() + (abstract ? 0 : 1));
  iovec iov{const_cast<char*>(state.data()), state.size()};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const ssize_t n = fd < 0 ? -1 : ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  const int err = errno;
  if (fd >= 0) ::close(fd);
  if (n != static_cast<ssize_t>(state.size())) {
    spdlog::warn("NOTIFY_SOCKET={}: cannot notify: {}", socket_, std::strerror(err));
    return false;
  }
  return true;
}

bool valid_fd_name(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    if (c < 0x21 || c > 0x7e || c == ':') return false;
  }
  return true;
}

bool Notifier::store_fd(const std::string& name, int fd) const {
  if (!valid_fd_name(name)) return false;
  return send("FDSTORE=1\nFDNAME=" + name + "\n", {fd});
}

bool Notifier::remove_fds(const std::string& name) const {
  if (!valid_fd_name(name)) return false;
  return send("FDSTOREREMOVE=1\nFDNAME=" + name + "\n");
}

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

std::vector<ListenFd> take_listen_fds() {
  constexpr int kFirst = 3;  // SD_LISTEN_FDS_START
  const std::string pid = env("LISTEN_PID"), count = env("LISTEN_FDS"),
                    names = env("LISTEN_FDNAMES");
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  std::vector<ListenFd> out;
  char* end = nullptr;
  const long p = pid.empty() ? 0 : std::strtol(pid.c_str(), &end, 10);
  if (pid.empty() || *end != '\0' || p != ::getpid()) return out;
  const long n = count.empty() ? 0 : std::strtol(count.c_str(), &end, 10);
  if (count.empty() || *end != '\0' || n <= 0 || n > 65536) return out;
  std::vector<std::string> split;
  for (size_t start = 0; !names.empty();) {
    const size_t colon = names.find(':', start);
    split.push_back(names.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    const int fd = kFirst + static_cast<int>(i);
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) continue;  // not open: nothing to take
    out.push_back(ListenFd{fd, i < split.size() && !split[i].empty() ? split[i] : "unknown"});
  }
  return out;
}

}  // namespace pcifs::control
