#include "fuse/daemon.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <chrono>
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

// Waits for a stop signal or for every loop to end; then ends the rest.
void wait_for_end(std::vector<Mount>& mounts) {
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
    }
  }
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
  auto mediator = std::make_unique<Mediator>(std::move(backend), options.mediator);
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
  wait_for_end(mounts);
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
