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

#include "control/service_manager.hpp"
#include "control/step_journal.hpp"
#include "fuse/host_control.hpp"
#include "fuse/restart.hpp"
#include "fuse/revoker.hpp"
#include "fuse/view_host.hpp"

namespace pcifs::fuse {
namespace {

void summary(const DaemonOptions& o, size_t views) {
  spdlog::info("pcifs {}: backend {}, {} view(s){}", PCIFS_VERSION, o.backend_name, views,
               o.control.empty() ? "" : ", control socket " + o.control);
}

// READY=1 with a STATUS= line a person reads in `systemctl status`.
std::string ready_message(const std::vector<std::string>& mountpoints, const std::string& control) {
  std::string status = "STATUS=serving";
  for (size_t i = 0; i < mountpoints.size(); ++i) status += (i ? ", " : " ") + mountpoints[i];
  if (!control.empty()) status += (mountpoints.empty() ? " " : "; ") + ("control " + control);
  for (auto& c : status) c = c == '\n' ? ' ' : c;  // one line per key
  return "READY=1\n" + status + "\n";
}

// Serves until a stop signal (returns true), or (without a control socket)
// until every mount is gone. `tick` runs about every 100 ms on this thread.
bool wait_for_end(ViewHost& host, bool host_daemon, const std::function<void()>& tick) {
  const sigset_t set = stop_signals();
  for (;;) {
    if (host.reap() == 0 && !host_daemon) return false;
    tick();
    const timespec period{0, 100L * 1000 * 1000};
    siginfo_t info;
    const int sig = sigtimedwait(&set, &info, &period);
    if (sig > 0) {
      spdlog::info("signal {}", sig);
      return true;
    }
  }
}

HostOptions host_options(const DaemonOptions& o, Restart* restart) {
  HostOptions h;
  h.restart = restart;
  h.session.mount_options = o.mount_options;
  h.session.max_threads = o.max_threads;
  h.session.transport = o.fd_store ? Transport::kDev : o.transport;
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
  // Crash hand-over of leased real devices (pcifs/step_journal.hpp).
  mo.step_journal = std::make_shared<control::StepJournalDir>(options.lock_dir + "/steps");
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
  std::string restart_error;
  auto restart = Restart::start(options.fd_store, &restart_error);
  if (!restart) {
    ready(false, restart_error);
    return 1;
  }
  const control::Notifier& notifier = restart->notifier();
  auto mediator = std::make_unique<Mediator>(std::move(backend), mediator_options(options));
  restart->reserve_ids(*mediator);
  if (restart->storing()) mediator->set_handle_journal(restart->journal());
  Revoker revoker;
  mediator->set_revocation_sink(&revoker);
  auto host = std::make_unique<ViewHost>(*mediator, revoker, host_options(options, restart.get()));
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
  host->adopt_retired();
  restart->drop_leftovers();
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
  const bool signalled = wait_for_end(*host, !options.control.empty(), tick);
  notifier.send("STOPPING=1\n");
  if (signalled && restart->storing()) {
    // The successor takes everything over from the fd store: nothing may be
    // undone here (no revocation, no hand-over reset, no unmount). Answer
    // what the loops are doing, then end without destructors; what is still
    // unanswered (DOE reads, requests on a device's lane) is resent to the
    // successor.
    spdlog::info("handing the mounts over to the next daemon (fd store)");
    control.stop();
    host->hand_over();
    // Flushed, not shut down: a DOE thread may still log (a Discovery ending)
    // until _Exit, and spdlog::shutdown() would free the logger under it.
    spdlog::default_logger()->flush();
    std::_Exit(0);
  }
  spdlog::info("unmounting");
  control.stop();
  host->stop_all();
  spdlog::info("all mounts gone: exiting");
  mediator->set_revocation_sink(nullptr);
  host.reset();
  mediator.reset();  // cancels DOE reads: their replies go out
  return 0;
}

}  // namespace pcifs::fuse
