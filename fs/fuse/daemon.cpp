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

#include "fuse/filesystem.hpp"
#include "fuse/revoker.hpp"
#include "fuse/session.hpp"

namespace pcifs::fuse {
namespace {

struct Mount {
  std::unique_ptr<Filesystem> fs;
  std::unique_ptr<Session> session;
  std::thread loop;
};

void summary(const Mediator& m, const DaemonOptions& o, const std::vector<Mount>& mounts) {
  spdlog::info("pcifs {}: backend {}, {} view(s)", PCIFS_VERSION, o.backend_name, mounts.size());
  for (const auto& mt : mounts) {
    const ViewPolicy& v = m.view(mt.fs->view());
    spdlog::info("view {} at {}: {} device(s), files owned by uid {}{}; mmap of BARs {}", v.name,
                 mt.session->mountpoint(), m.devices(mt.fs->view()).size(), v.has_uid ? v.uid : 0,
                 v.source.empty() ? "" : " (" + v.source + ")",
                 Session::direct_io_mmap_negotiated(mt.session->raw())
                     ? "enabled"
                     : "unavailable (kernel lacks FUSE_DIRECT_IO_ALLOW_MMAP)");
  }
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
std::string ready_message(const std::vector<Mount>& mounts) {
  std::string status = "STATUS=serving";
  for (size_t i = 0; i < mounts.size(); ++i) {
    status += (i ? ", " : " ") + mounts[i].session->mountpoint();
  }
  for (auto& c : status) c = c == '\n' ? ' ' : c;  // one line per key
  return "READY=1\n" + status + "\n";
}

// Waits for a stop signal or for every loop to end; then ends the rest.
// `stop_notice` runs when a signal makes the daemon begin to unmount.
void wait_for_end(std::vector<Mount>& mounts, const std::function<void()>& stop_notice) {
  const sigset_t set = stop_signals();
  bool stopping = false;
  for (;;) {
    size_t running = 0;
    for (auto& mt : mounts) running += mt.session->running() ? 1 : 0;
    if (running == 0) return;
    if (stopping) {
      for (auto& mt : mounts) {
        if (mt.session->running()) mt.session->exit();
      }
    }
    const timespec tick{0, 100L * 1000 * 1000};
    siginfo_t info;
    const int sig = sigtimedwait(&set, &info, &tick);
    if (sig > 0 && !stopping) {
      spdlog::info("signal {}: unmounting", sig);
      stopping = true;
      stop_notice();
    }
  }
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
  DriverNames drivers;
  std::vector<Mount> mounts;
  for (const auto& v : options.views) {
    Mount mt;
    mt.fs = std::make_unique<Filesystem>(*mediator, mediator->add_view(v), drivers);
    mounts.push_back(std::move(mt));
  }
  mediator->wait_for_discovery();  // doe_features/ is complete before anyone looks
  SessionOptions so;
  so.mount_options = options.mount_options;
  so.max_threads = options.max_threads;
  for (size_t i = 0; i < mounts.size(); ++i) {
    std::string error;
    mounts[i].session = Session::mount(Filesystem::ops(), mounts[i].fs.get(),
                                       options.views[i].mountpoint, so, &error);
    if (!mounts[i].session) {
      mediator->set_revocation_sink(nullptr);
      mounts.clear();  // unmounts what was mounted
      ready(false, error);
      return 1;
    }
    revoker.add(mounts[i].session->raw());
  }
  for (auto& mt : mounts) {
    mt.loop = std::thread([s = mt.session.get()] { s->run(); });
  }
  while (true) {  // exit() reaches a loop only once it has started
    bool all = true;
    for (auto& mt : mounts) all = all && mt.session->started();
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& mt : mounts) mt.session->wait_for_init(std::chrono::seconds(5));
  summary(*mediator, options, mounts);
  ready(true, "");
  notifier.send(ready_message(mounts));
  bool stop_sent = false;
  auto stop_notice = [&] {
    if (!stop_sent) notifier.send("STOPPING=1\n");
    stop_sent = true;
  };
  wait_for_end(mounts, stop_notice);
  stop_notice();  // the mounts went away by themselves (fusermount3 -u)
  for (auto& mt : mounts) mt.loop.join();
  spdlog::info("all mounts gone: exiting");
  mediator->set_revocation_sink(nullptr);
  for (auto& mt : mounts) revoker.remove(mt.session->raw());
  for (auto& mt : mounts) mt.fs.reset();  // drains queued interrupt replies
  mediator.reset();                       // cancels DOE reads: their replies go out
  mounts.clear();                         // unmount and destroy the sessions
  return 0;
}

}  // namespace pcifs::fuse
