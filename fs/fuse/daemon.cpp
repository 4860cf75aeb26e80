// serve(): the daemon's life (daemon.hpp), and its word to a service manager:
// with $NOTIFY_SOCKET set (systemd Type=notify), READY=1 once every view is
// mounted and answering, STOPPING=1 when it begins to unmount.
#include "fuse/daemon.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "fuse/host_control.hpp"
#include "fuse/revoker.hpp"
#include "fuse/view_host.hpp"

namespace pcifs::fuse {
namespace {

void summary(const DaemonOptions& o, size_t views) {
  spdlog::info("pcifs {}: backend {}, {} view(s){}", PCIFS_VERSION, o.backend_name, views,
               o.control.empty() ? "" : ", control socket " + o.control);
}

// systemd's readiness protocol (sd_notify(3)) without libsystemd: one
// datagram of "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET
// ('@' = the abstract namespace). Read once, before any thread starts. A
// failure is logged and never fatal: the mounts serve either way.
class Notifier {
 public:
  Notifier() {
    const char* s = std::getenv("NOTIFY_SOCKET");
    if (s) socket_ = s;
  }
  void send(const std::string& state) const {
    if (socket_.empty()) return;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const bool abstract = socket_[0] == '@';
    if ((!abstract && socket_[0] != '/') || socket_.size() >= sizeof(addr.sun_path)) {
      spdlog::warn("NOTIFY_SOCKET={}: not an absolute path or @name: not notified", socket_);
      return;
    }
    std::memcpy(addr.sun_path, socket_.data(), socket_.size());
    if (abstract) addr.sun_path[0] = '\0';
    // A path's length counts its NUL; an abstract name is exactly its bytes.
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_.size() +
                                            (abstract ? 0 : 1));
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const ssize_t n = fd < 0 ? -1
                             : ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                                        reinterpret_cast<const sockaddr*>(&addr), len);
    const int err = errno;
    if (fd >= 0) ::close(fd);
    if (n != static_cast<ssize_t>(state.size())) {
      spdlog::warn("NOTIFY_SOCKET={}: cannot notify: {}", socket_, std::strerror(err));
    }
  }

 private:
  std::string socket_;
};

// READY=1 with a STATUS= line a person reads in `systemctl status`.
std::string ready_message(const std::vector<std::string>& mountpoints, const std::string& control) {
  std::string status = "STATUS=serving";
  for (size_t i = 0; i < mountpoints.size(); ++i) status += (i ? ", " : " ") + mountpoints[i];
  if (!control.empty()) status += (mountpoints.empty() ? " " : "; ") + ("control " + control);
  for (auto& c : status) c = c == '\n' ? ' ' : c;  // one line per key
  return "READY=1\n" + status + "\n";
}

// Serves until a stop signal, or (without a control socket) until every mount
// is gone. `tick` runs about every 100 ms on this thread.
void wait_for_end(ViewHost& host, bool host_daemon, const std::function<void()>& tick,
                  const std::function<void()>& stop_notice) {
  const sigset_t set = stop_signals();
  for (;;) {
    if (host.reap() == 0 && !host_daemon) return;
    tick();
    const timespec period{0, 100L * 1000 * 1000};
    siginfo_t info;
    const int sig = sigtimedwait(&set, &info, &period);
    if (sig > 0) {
      spdlog::info("signal {}: unmounting", sig);
      stop_notice();
      return;
    }
  }
}

HostOptions host_options(const DaemonOptions& o) {
  HostOptions h;
  h.session.mount_options = o.mount_options;
  h.session.max_threads = o.max_threads;
  h.state_dir = o.state_dir;
  h.cdi_dir = o.cdi_dir;
  h.view_root = o.view_root;
  h.hook_binary = o.hook_binary;
  return h;
}

// getpid() here, not in main: the daemon has forked into the background by now.
MediatorOptions mediator_options(const DaemonOptions& options) {
  MediatorOptions mo = options.mediator;
  if (options.lock_dir.empty()) return mo;
  HostLockOptions hl;
  hl.dir = options.lock_dir;
  std::string names;
  for (const auto& v : options.views) names += (names.empty() ? "" : ",") + v.name;
  hl.owner = "pid " + std::to_string(getpid()) +
             (options.views.size() > 1 ? ", views " : ", view ") + names;
  if (!options.control.empty()) {
    // A host daemon may be asked for any device at runtime: it leases all.
    hl.owner = "pid " + std::to_string(getpid()) + ", host daemon " + options.control;
    hl.serves = [](const backend::DeviceInfo&) { return true; };
    mo.host_locks = std::move(hl);
    return mo;
  }
  hl.serves = [views = options.views](const backend::DeviceInfo& i) {
    return std::any_of(views.begin(), views.end(), [&i](const ViewPolicy& v) {
      return v.selects(i.bdf, i.vendor, i.device, i.class_code);
    });
  };
  mo.host_locks = std::move(hl);
  return mo;
}

}  // namespace

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

void block_stop_signals() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int serve(std::shared_ptr<backend::Backend> backend, const DaemonOptions& options,
          const std::function<void(bool, const std::string&)>& ready) {
  const Notifier notifier;
  auto mediator = std::make_unique<Mediator>(std::move(backend), mediator_options(options));
  Revoker revoker;
  mediator->set_revocation_sink(&revoker);
  auto host = std::make_unique<ViewHost>(*mediator, revoker, host_options(options));
  HostControl control(*mediator, *host);
  auto fail = [&](const std::string& error) {
    control.stop();
    host.reset();  // unmounts what was mounted
    mediator->set_revocation_sink(nullptr);
    ready(false, error);
    return 1;
  };
  for (const auto& v : options.views) {
    std::string error;
    if (!host->add_static(v, &error)) return fail(error);
  }
  if (!options.control.empty()) {
    if (const size_t failed = host->load_state()) {
      spdlog::error("{} view(s) of {} could not be mounted (see above)", failed, options.state_dir);
    }
    control::ServerOptions so;
    so.path = options.control;
    so.version = PCIFS_VERSION;
    std::string error;
    if (!control.start(so, &error)) return fail("--control: " + error);
    control.poll_health();  // the baseline health changes are told against
  }
  summary(options, host->mountpoints().size());
  ready(true, "");
  notifier.send(ready_message(host->mountpoints(), options.control));
  auto last_health = std::chrono::steady_clock::now();
  auto tick = [&] {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_health < options.health_interval) return;
    last_health = now;
    control.poll_health();
  };
  bool stop_sent = false;
  auto stop_notice = [&] {
    if (!stop_sent) notifier.send("STOPPING=1\n");
    stop_sent = true;
  };
  wait_for_end(*host, !options.control.empty(), tick, stop_notice);
  stop_notice();  // the mounts went away by themselves (fusermount3 -u)
  control.stop();
  host->stop_all();
  spdlog::info("all mounts gone: exiting");
  mediator->set_revocation_sink(nullptr);
  host.reset();
  mediator.reset();  // cancels DOE reads: their replies go out
  return 0;
}

}  // namespace pcifs::fuse
