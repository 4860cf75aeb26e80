// Restart (restart.hpp).
#include "fuse/restart.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace pcifs::fuse {
namespace {

constexpr const char* kStateName = "state";
constexpr const char* kViewPrefix = "fuse-";
// Starts a retired view's stored name: no view name starts so (good_name).
constexpr const char* kRetiredMark = "~";

}  // namespace

std::unique_ptr<Restart> Restart::start(bool fd_store, std::string* error) {
  auto r = std::unique_ptr<Restart>(new Restart());
  Restart& self = *r;
  MutexLock lock(self.mu_);  // no other thread yet; for the analysis
  std::vector<control::ListenFd> fds = control::take_listen_fds();
  int state_fd = -1;
  for (const auto& f : fds) {
    if (f.name == kStateName && state_fd < 0) {
      state_fd = f.fd;
    } else if (f.name.rfind(kViewPrefix, 0) == 0 && !self.stored_.count(f.name.substr(5))) {
      self.stored_[f.name.substr(5)] = f.fd;
    } else {
      spdlog::warn("restart: passed fd {} named {}: not ours, closed", f.fd, f.name);
      ::close(f.fd);
    }
  }
  if (state_fd >= 0) {
    std::string why;
    self.state_ = control::RestartState::adopt(state_fd, &why);
    if (!self.state_)
      spdlog::warn("restart: the stored state is unusable ({}): starting afresh", why);
  }
  if (!self.state_ && !self.stored_.empty()) {
    // Connections without their INIT cannot be served: let them go.
    spdlog::warn("restart: {} stored connection(s) without their state: they end",
                 self.stored_.size());
    for (auto& [name, fd] : self.stored_) {
      self.notifier_.remove_fds(kViewPrefix + name);
      ::close(fd);
    }
    self.stored_.clear();
  }
  if (self.state_) {
    self.records_ = self.state_->handles();
    spdlog::info("restart: taking over {} view connection(s) and {} open handle(s)",
                 self.stored_.size(), self.records_.size());
  }
  if (!fd_store) return r;
  if (!self.notifier_.enabled()) {
    *error = "--fd-store: $NOTIFY_SOCKET is not set (no service manager to keep the fds)";
    return nullptr;
  }
  if (!self.state_) {
    self.state_ = control::RestartState::create(error);
    if (!self.state_) return nullptr;
    // A stale "state" the manager may still hold goes first.
    self.notifier_.remove_fds(kStateName);
    if (!self.notifier_.store_fd(kStateName, self.state_->fd())) {
      *error = "--fd-store: the service manager did not take the state fd";
      return nullptr;
    }
  }
  self.storing_ = true;
  return r;
}

Restart::~Restart() {
  MutexLock lock(mu_);
  for (auto& [name, fd] : stored_) ::close(fd);
}

std::optional<Restart::Stored> Restart::take_view(const std::string& name) {
  MutexLock lock(mu_);
  auto it = stored_.find(name);
  if (it == stored_.end()) return std::nullopt;
  Stored s{it->second, {}};
  stored_.erase(it);
  auto init = state_ ? state_->view_init(name) : std::nullopt;
  if (!init) {
    spdlog::warn("view {}: stored connection without its INIT: it ends", name);
    notifier_.remove_fds(kViewPrefix + name);
    ::close(s.fd);
    return std::nullopt;
  }
  s.init = std::move(*init);
  return s;
}

std::vector<Bdf> Restart::adopt_handles(Mediator& m, const std::string& view, ViewId id) {
  std::vector<HandleRecord> mine;
  {
    MutexLock lock(mu_);
    auto split = std::stable_partition(records_.begin(), records_.end(),
                                       [&](const HandleRecord& r) { return r.view != view; });
    mine.assign(std::make_move_iterator(split), std::make_move_iterator(records_.end()));
    records_.erase(split, records_.end());
  }
  size_t kept = 0;
  std::vector<Bdf> gone;
  for (const auto& r : mine) {
    if (m.adopt_handle(id, r)) {
      ++kept;
      if (!m.has_device(id, r.ref.bdf) &&
          std::find(gone.begin(), gone.end(), r.ref.bdf) == gone.end()) {
        gone.push_back(r.ref.bdf);
      }
      continue;
    }
    // Its view is gone or its record contradicts the table (a handle whose
    // device left is taken over dead, ENODEV): the kernel's handle gets EBADF.
    spdlog::info("view {}: handle {} ({} of pid={}) not taken over", view, r.id, r.ref.bdf.str(),
                 r.caller.pid);
    state_->released(r.id);
  }
  if (!mine.empty())
    spdlog::info("view {}: {} of {} handle(s) taken over", view, kept, mine.size());
  return gone;
}

void Restart::reserve_ids(Mediator& m) const {
  if (state_) m.reserve_handle_ids(state_->first_free_id());
}

void Restart::view_serving(const std::string& name, const Session& s, bool adopted) {
  if (!storing_ || adopted) return;
  state_->put_view(name, s.init_request());
  notifier_.remove_fds(kViewPrefix + name);  // a stale one of a view of that name
  if (!notifier_.store_fd(kViewPrefix + name, s.fd())) {
    spdlog::warn("view {}: the service manager did not keep its connection: a restart ends it",
                 name);
  }
}

void Restart::view_ended(const std::string& name) {
  if (!state_) return;
  state_->drop_view(name);
  if (storing_) notifier_.remove_fds(kViewPrefix + name);
}

std::string Restart::view_retired(const std::string& name, const Session& s) {
  if (!storing_) {
    view_ended(name);
    return {};
  }
  uint32_t salt = 0;
  if (::getentropy(&salt, sizeof salt) != 0) salt = static_cast<uint32_t>(::getpid());
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", salt);
  std::string stored = kRetiredMark + name + "~" + hex;
  MutexLock lock(mu_);
  state_->drop_view(name);
  state_->put_view(stored, s.init_request());
  // Removed first: a manager that keeps one copy of a descriptor keeps its
  // first name. A crash between the two ends this one connection.
  notifier_.remove_fds(kViewPrefix + name);
  if (!notifier_.store_fd(kViewPrefix + stored, s.fd())) {
    spdlog::warn("view {}: the service manager did not keep its retired connection", name);
    state_->drop_view(stored);
    return {};
  }
  return stored;
}

std::vector<std::pair<std::string, Restart::Stored>> Restart::take_retired() {
  std::vector<std::string> names;
  {
    MutexLock lock(mu_);
    for (const auto& [name, fd] : stored_)
      if (name.rfind(kRetiredMark, 0) == 0) names.push_back(name);
  }
  std::vector<std::pair<std::string, Stored>> out;
  for (const auto& name : names)
    if (auto s = take_view(name)) out.emplace_back(name, std::move(*s));
  return out;
}

void Restart::drop_leftovers() {
  MutexLock lock(mu_);
  for (auto& [name, fd] : stored_) {
    spdlog::warn("restart: view {} is no longer configured: its stored connection ends", name);
    notifier_.remove_fds(kViewPrefix + name);
    if (state_) state_->drop_view(name);
    ::close(fd);
  }
  stored_.clear();
  for (const auto& r : records_) {
    if (state_) state_->released(r.id);
  }
  records_.clear();
}

}  // namespace pcifs::fuse
