// Kernel uevents for the sysfs backend: the datagram parser, the two sockets
// they arrive on (netlink from the kernel, a unix socket on a temp tree) and
// the reader thread. See uevent.hpp.
#include "sysfs/uevent.hpp"

#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <utility>

namespace pcifs::backend::sysfs {
namespace {

constexpr std::string_view kUdevMagic("libudev\0", 8);
// Datagrams read per wake-up before looking at the stop eventfd again.
constexpr int kBurst = 64;
// Netlink receive buffer asked for (capped by net.core.rmem_max): room for a
// burst of uevents, as when a bridge with many functions arrives at once.
constexpr int kNetlinkRcvbuf = 1 << 20;

// Stores `value` for a key pcifs reads; a repeated key makes the datagram
// ambiguous, so it is refused.
bool take(bool& seen, std::string& out, std::string_view value) {
  if (seen) return false;
  seen = true;
  out = value;
  return true;
}

std::optional<PciAction> pci_action(std::string_view a) {
  if (a == "add") return PciAction::kAdd;
  if (a == "remove") return PciAction::kRemove;
  if (a == "bind") return PciAction::kBind;
  if (a == "unbind") return PciAction::kUnbind;
  return std::nullopt;
}

Result<void> set_passcred(int fd) {
  const int on = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) return Errno(errno);
  return Ok();
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

int bind_unix(int fd, const sockaddr_un& a) {
  return ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a);
}

// EADDRINUSE on bind: a socket file is there. Replaces it if nobody is bound
// to it any more (a daemon that died); never touches anything else.
Result<void> replace_stale(const std::string& path, const sockaddr_un& a) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Errno(errno);
  if (!S_ISSOCK(st.st_mode)) return Errno(EEXIST);
  UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return Errno(errno);
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
    return Errno(EADDRINUSE);  // alive: another daemon serves this tree
  }
  if (errno != ECONNREFUSED) return Errno(errno);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno(errno);
  return Ok();
}

}  // namespace

std::string errno_text(Errno e) {
  const char* n = ::strerrorname_np(e.value());  // glibc 2.32
  return n != nullptr ? n : "errno " + std::to_string(e.value());
}

std::optional<Uevent> parse_uevent(std::string_view d) {
  if (d.empty() || d.size() > kMaxUeventSize) return std::nullopt;
  if (d.substr(0, kUdevMagic.size()) == kUdevMagic)
    return std::nullopt;                      // udev's, not the kernel's
  if (d.back() != '\0') return std::nullopt;  // the kernel ends every field with NUL: truncated
  d.remove_suffix(1);
  const size_t header_end = d.find('\0');
  if (header_end == std::string_view::npos) return std::nullopt;  // a header and no fields
  const std::string_view header = d.substr(0, header_end);
  const size_t at = header.find('@');
  if (at == std::string_view::npos || at == 0) return std::nullopt;
  const std::string_view h_action = header.substr(0, at);
  const std::string_view h_devpath = header.substr(at + 1);
  if (h_devpath.empty() || h_devpath.front() != '/') return std::nullopt;

  Uevent ev;
  bool action = false, devpath = false, subsystem = false, slot = false;
  std::string_view rest = d.substr(header_end + 1);
  for (;;) {
    const size_t end = rest.find('\0');
    const std::string_view field = rest.substr(0, end);
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;  // also the empty field
    const std::string_view key = field.substr(0, eq);
    const std::string_view value = field.substr(eq + 1);
    bool ok = true;
    if (key == "ACTION") ok = take(action, ev.action, value);
    if (key == "DEVPATH") ok = take(devpath, ev.devpath, value);
    if (key == "SUBSYSTEM") ok = take(subsystem, ev.subsystem, value);
    if (key == "PCI_SLOT_NAME") ok = take(slot, ev.slot, value);
    if (!ok) return std::nullopt;
    if (end == std::string_view::npos) break;
    rest = rest.substr(end + 1);
  }
  if (!action || !devpath || !subsystem) return std::nullopt;
  if (ev.action != h_action || ev.devpath != h_devpath) return std::nullopt;
  return ev;
}

std::optional<PciEvent> pci_event(const Uevent& ev) {
  if (ev.subsystem != "pci") return std::nullopt;
  auto action = pci_action(ev.action);
  if (!action) return std::nullopt;
  std::string_view slot = ev.slot;
  if (slot.empty()) {  // every PCI device uevent carries PCI_SLOT_NAME; be lenient anyway
    std::string_view path = ev.devpath;
    slot = path.substr(path.rfind('/') + 1);
  }
  auto bdf = Bdf::parse(slot);
  if (!bdf) return std::nullopt;
  return PciEvent{*action, *bdf};
}

Result<UeventSource> open_kernel_uevents() {
  UeventSource s;
  s.sender = UeventSender::kKernel;
  s.name = "netlink uevents";
  s.fd.reset(
      ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT));
  if (!s.fd.valid()) return Errno(errno);
  PCIFS_TRY(set_passcred(s.fd.get()));
  // Best effort: a small buffer only means an overflow, which rescans.
  (void)::setsockopt(s.fd.get(), SOL_SOCKET, SO_RCVBUF, &kNetlinkRcvbuf, sizeof kNetlinkRcvbuf);
  sockaddr_nl a{};
  a.nl_family = AF_NETLINK;
  a.nl_groups = 1;  // the kernel's uevent multicast group (udev's is 2)
  if (::bind(s.fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    return Errno(errno);
  }
  return s;
}

Result<UeventSource> open_local_uevents(const std::string& path) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) return Errno(ENAMETOOLONG);
  UeventSource s;
  s.sender = UeventSender::kLocal;
  s.name = path;
  s.fd.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s.fd.valid()) return Errno(errno);
  const sockaddr_un a = unix_address(path);
  if (bind_unix(s.fd.get(), a) != 0) {
    if (errno != EADDRINUSE) return Errno(errno);
    PCIFS_TRY(replace_stale(path, a));
    if (bind_unix(s.fd.get(), a) != 0) return Errno(errno);
  }
  s.path = path;  // ours from here on: the monitor unlinks it
  // Sending needs write permission on the socket file: only the owner. The
  // sender check below still holds if the mode is changed behind our back.
  struct stat st {};
  if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return Errno(e);
  }
  s.path_dev = st.st_dev;
  s.path_ino = st.st_ino;
  if (auto r = set_passcred(s.fd.get()); !r) {
    ::unlink(path.c_str());
    return r.error();
  }
  return s;
}

UeventMonitor::UeventMonitor(UeventSource source)
    : source_(std::move(source)), stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

UeventMonitor::~UeventMonitor() {
  stop();
  if (source_.path.empty()) return;
  // Only the socket we bound: a later daemon may have replaced a stale one.
  struct stat st {};
  if (::lstat(source_.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == source_.path_dev && st.st_ino == source_.path_ino) {
    ::unlink(source_.path.c_str());
  }
}

Result<void> UeventMonitor::start(EventFn on_event, LostFn on_lost, StoppedFn on_stopped,
                                  TimerFn on_timer) {
  MutexLock lock(mu_);
  if (started_) return Ok();
  if (!source_.fd.valid() || !stop_fd_.valid()) return Errno(EBADF);
  // The thread takes no signal: they belong to the daemon's own handling.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    // A thread is a noexcept boundary: a handler's throw is caught by call();
    // anything else (no memory in the loop itself) ends the thread cleanly,
    // as a socket error does, rather than taking the daemon down.
    thread_ = std::thread([this, ev = std::move(on_event), lost = std::move(on_lost),
                           done = std::move(on_stopped), timer = std::move(on_timer)]() noexcept {
      std::string why;
      try {
        why = run(ev, lost, timer);
      } catch (const std::exception& e) {
        why = "internal error";
        try {
          why += std::string(": ") + e.what();
        } catch (...) {
        }
      } catch (...) {
        why = "internal error";
      }
      if (why.empty()) return;
      {
        MutexLock guard(mu_);
        stats_.running = false;
        try {
          stats_.stopped_why = why;
        } catch (...) {
        }
      }
      (void)call("stopped", [&] {
        if (done) done(why);
      });
    });
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return Errno(e.code().value() > 0 ? e.code().value() : EAGAIN);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  started_ = true;
  stats_.running = true;
  return Ok();
}

void UeventMonitor::stop() {
  std::thread t;
  {
    MutexLock lock(mu_);
    t = std::move(thread_);
  }
  if (!t.joinable()) return;
  const uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  t.join();
  MutexLock lock(mu_);
  stats_.running = false;
}

UeventMonitor::Stats UeventMonitor::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

void UeventMonitor::count(uint64_t Stats::*field) {
  MutexLock lock(mu_);
  ++(stats_.*field);
}

template <typename F>
bool UeventMonitor::call(const char* what, F&& f) noexcept {
  // A copy: what() dies with the exception, at the end of its catch block.
  char why[160] = "unknown exception";
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    std::snprintf(why, sizeof why, "%s", e.what());
  } catch (...) {
  }
  uint64_t dropped = 0;
  bool report = false;
  {
    MutexLock lock(mu_);
    ++stats_.handler_errors;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_report_ >= std::chrono::seconds(1)) {
      report = true;
      dropped = unreported_;
      unreported_ = 0;
      last_report_ = now;
    } else {
      ++unreported_;
    }
  }
  if (report) {
    std::fprintf(stderr, "pcifs: %s: the %s handler failed (%s); going on%s\n",
                 source_.name.c_str(), what, why,
                 dropped ? " (and earlier failures not shown)" : "");
  }
  return false;
}

std::string UeventMonitor::run(const EventFn& on_event, const LostFn& on_lost,
                               const TimerFn& on_timer) {
  pollfd fds[2] = {{source_.fd.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
  // Until on_timer wants to run, in ms; -1: no timer. (Not an optional: GCC's
  // -O2 flow analysis calls its value maybe-uninitialized.)
  int timeout = -1;
  auto timer = [&] {
    timeout = -1;
    if (!on_timer) return;
    (void)call("timer", [&] {
      const auto w = on_timer();
      timeout = w ? static_cast<int>(std::clamp<int64_t>(w->count(), 0, 60'000)) : -1;
    });
  };
  for (;;) {
    const int ready = ::poll(fds, 2, timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return "poll: " + errno_text(Errno(errno));
    }
    if (ready == 0) {
      timer();
      continue;
    }
    if (fds[1].revents != 0) return {};
    if ((fds[0].revents & POLLNVAL) != 0) return "socket closed";
    for (int i = 0; i < kBurst; ++i) {
      bool lost = false, again = false;
      int error = 0;
      auto ev = receive(&lost, &again, &error);
      if (again) break;
      if (error != 0) return "recvmsg: " + errno_text(Errno(error));
      if (lost) {
        count(&Stats::overflows);
        if (on_lost) (void)call("lost", on_lost);
        continue;
      }
      // An event whose handler threw may be half applied: rescan, as after
      // lost events, so the receiver converges on what is there.
      if (ev && on_event && !call("event", [&] { on_event(*ev); }) && on_lost) {
        (void)call("lost", on_lost);
      }
    }
    timer();
  }
}

bool UeventMonitor::trusted(const void* name, size_t name_len, bool has_cred, uid_t uid) const {
  if (!has_cred) return false;
  if (source_.sender == UeventSender::kLocal) return uid == ::geteuid() || uid == 0;
  // Kernel: only the kernel itself sends with port id 0 (udev's own
  // multicasts, or a root process's, carry their port id).
  if (name_len < sizeof(sockaddr_nl)) return false;
  sockaddr_nl nl{};
  std::memcpy(&nl, name, sizeof nl);
  return nl.nl_family == AF_NETLINK && nl.nl_pid == 0 && uid == 0;
}

std::optional<PciEvent> UeventMonitor::receive(bool* lost, bool* again, int* error) {
  char buf[kMaxUeventSize];
  sockaddr_storage addr{};
  // Room for credentials and a few descriptors: a local sender could attach
  // fds, which must be closed, not leaked.
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = sizeof addr;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  const ssize_t n = ::recvmsg(source_.fd.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      *again = errno != EINTR;
    } else if (errno == ENOBUFS) {
      *lost = true;
    } else {
      *error = errno;
    }
    return std::nullopt;
  }
  count(&Stats::datagrams);
  bool has_cred = false, had_fds = false;
  ucred cred{};
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof cred)) {
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      has_cred = true;
    } else if (c->cmsg_type == SCM_RIGHTS) {
      had_fds = true;
      const size_t bytes = c->cmsg_len - CMSG_LEN(0);
      for (size_t k = 0; k + sizeof(int) <= bytes; k += sizeof(int)) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + k, sizeof fd);
        if (fd >= 0) ::close(fd);
      }
    }
  }
  if (had_fds || (msg.msg_flags & MSG_CTRUNC) != 0 ||
      !trusted(&addr, msg.msg_namelen, has_cred, cred.uid)) {
    count(&Stats::untrusted);
    return std::nullopt;
  }
  auto ev = (msg.msg_flags & MSG_TRUNC) != 0
                ? std::nullopt
                : parse_uevent(std::string_view(buf, static_cast<size_t>(n)));
  if (!ev) {
    count(&Stats::malformed);
    return std::nullopt;
  }
  auto pci = pci_event(*ev);
  count(pci ? &Stats::delivered : &Stats::ignored);
  return pci;
}

}  // namespace pcifs::backend::sysfs
