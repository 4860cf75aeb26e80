// ViewHost (view_host.hpp): mounting, retiring and listing views at runtime.
#include "fuse/view_host.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "control/cdi_dir.hpp"
#include "control/state_dir.hpp"
#include "core/cdi_spec.hpp"
#include "core/view_policy.hpp"

namespace pcifs::fuse {

using nlohmann::json;

struct ViewHost::Hosted {
  ViewPolicy policy;
  ViewId id = 0;
  bool runtime = false;      // added through the control socket: persisted
  bool created_dir = false;  // the host made the mountpoint directory
  bool adopted = false;      // its connection came from the fd store (a restart)
  std::string stored;        // the view object as persisted (runtime): for idempotency
  std::string stored_as;     // retired, its connection in the fd store under this name
  std::unique_ptr<Filesystem> fs;
  std::unique_ptr<Session> session;
  std::thread loop;
  std::shared_ptr<std::atomic<bool>> ended = std::make_shared<std::atomic<bool>>(false);
};

namespace {

// A name is a file name (state dir, CDI spec) and a CDI device name.
bool good_name(const std::string& n) {
  if (n.empty() || n.size() > 128 || !std::isalnum(static_cast<unsigned char>(n[0]))) return false;
  for (char c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

std::string normal(const std::string& path) {
  std::string p = std::filesystem::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool inside(const std::string& a, const std::string& b) {  // a is b or below b
  return a == b || a.rfind(b + "/", 0) == 0;
}

// A FUSE mount whose daemon died answers ENOTCONN: detach it so the
// directory can be mounted again (a crashed predecessor left it).
void detach_dead_mount(const std::string& mp) {
  struct stat st {};
  if (::stat(mp.c_str(), &st) == 0 || errno != ENOTCONN) return;
  if (::umount2(mp.c_str(), MNT_DETACH) == 0) {
    spdlog::warn("{}: detached the dead FUSE mount a previous daemon left", mp);
  } else {
    spdlog::warn("{}: dead FUSE mount, cannot detach it: {}", mp, std::strerror(errno));
  }
}

// Creates `mp` and its parents (0755); true in *created when `mp` was made.
bool make_mountpoint(const std::string& mp, bool* created, std::string* error) {
  detach_dead_mount(mp);
  struct stat st {};
  if (::stat(mp.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return true;
    *error = "mountpoint: expected a directory, got " + mp;
    return false;
  }
  std::error_code ec;
  std::filesystem::create_directories(mp, ec);
  if (ec) {
    *error = "mountpoint: cannot create " + mp + ": " + ec.message();
    return false;
  }
  ::chmod(mp.c_str(), 0755);
  *created = true;
  return true;
}

json view_event(const char* kind, const ViewPolicy& v) {
  return json{{"event", kind}, {"view", v.name}, {"mountpoint", v.mountpoint}};
}

}  // namespace

ViewHost::ViewHost(Mediator& m, Revoker& revoker, HostOptions options)
    : mediator_(m), revoker_(revoker), options_(std::move(options)) {}

ViewHost::~ViewHost() { stop_all(); }

void ViewHost::set_publish(Publish publish) {
  MutexLock lock(publish_mu_);
  publish_ = std::move(publish);
}

void ViewHost::publish(const json& event) const {
  MutexLock lock(publish_mu_);
  if (publish_) publish_(event);
}

std::optional<std::string> ViewHost::mountpoint_conflict(const std::string& mp) const {
  for (const auto& [name, h] : views_) {
    const std::string other = normal(h->policy.mountpoint);
    if (inside(mp, other) || inside(other, mp)) {
      return fmt::format(
          "mountpoint: expected a mountpoint no other view uses or contains, got {} (view {} is "
          "at {})",
          mp, name, other);
    }
  }
  return std::nullopt;
}

Result<void> ViewHost::add_static(ViewPolicy v, std::string* error) {
  MutexLock lock(mu_);
  if (views_.count(v.name)) {
    *error = (v.source.empty() ? "view " + v.name : v.source) + ": name: " + v.name + " is taken";
    return Errno(EEXIST);
  }
  PCIFS_TRY(mount_locked(std::move(v), json(), /*runtime=*/false, error));
  return Ok();
}

Result<AddedView> ViewHost::add(const json& view, const std::string& source, std::string* error) {
  if (!view.is_object()) {
    *error = source + ": (document): expected a JSON object";
    return Errno(EINVAL);
  }
  PCIFS_TRY_ASSIGN(v, core::parse_view(view.dump(), source, error));
  json stored = view;
  if (!view.contains("name")) {
    if (!view.contains("mountpoint")) {
      *error = source + ": name: expected a view name (or a mountpoint to name it after)";
      return Errno(EINVAL);
    }
    stored["name"] = v.name;
  }
  if (!good_name(v.name)) {
    *error = source +
             ": name: expected 1-128 letters, digits and _.- from a letter or digit, got " +
             json(v.name).dump();
    return Errno(EINVAL);
  }
  if (v.mountpoint.empty()) v.mountpoint = options_.view_root + "/" + v.name;
  if (v.mountpoint[0] != '/') {
    *error = source + ": mountpoint: expected an absolute path, got " + v.mountpoint;
    return Errno(EINVAL);
  }
  v.mountpoint = normal(v.mountpoint);
  stored["mountpoint"] = v.mountpoint;
  MutexLock lock(mu_);
  if (auto it = views_.find(v.name); it != views_.end()) {
    if (it->second->runtime && it->second->stored == stored.dump()) {
      return AddedView{v.name, v.mountpoint,
                       std::string(core::kCdiKind) + "=" + core::cdi_device_name(v.name), true};
    }
    *error = source + ": name: view " + v.name + " exists with another policy (pcifs view rm " +
             v.name + " first)";
    return Errno(EEXIST);
  }
  if (auto why = mediator_.group_conflict(v)) {
    *error = source + ": " + *why;
    return Errno(EBUSY);
  }
  return mount_locked(std::move(v), stored, /*runtime=*/true, error);
}

Result<AddedView> ViewHost::mount_locked(ViewPolicy v, const json& stored, bool runtime,
                                         std::string* error) {
  const std::string where = v.source.empty() ? "view " + v.name : v.source;
  if (auto why = mountpoint_conflict(normal(v.mountpoint))) {
    *error = where + ": " + *why;
    return Errno(EBUSY);
  }
  auto h = std::make_unique<Hosted>();
  h->runtime = runtime;
  std::vector<Bdf> left;  // adopted: devices of its handles that left meanwhile
  auto undo_dir = [&] {
    if (h->created_dir) ::rmdir(v.mountpoint.c_str());
  };
  h->policy = v;
  h->id = mediator_.add_view(v);
  h->fs = std::make_unique<Filesystem>(mediator_, h->id, drivers_);
  if (Restart* r = options_.restart) {
    if (auto kept = r->take_view(v.name)) {
      std::string why;
      h->session = Session::adopt(Filesystem::ops(), h->fs.get(), v.mountpoint, kept->fd,
                                  kept->init, options_.session, &why);
      if (h->session) {
        h->adopted = true;
        // Before the loop reads a request: the kernel's handles find theirs.
        left = r->adopt_handles(mediator_, v.name, h->id);
      } else {
        // The stored connection cannot be served: it ends, and the view is
        // mounted afresh (a container's bind of the old mount sees ENOTCONN).
        spdlog::error("{}: cannot take over the stored connection ({}): mounting afresh", where,
                      why);
        r->view_ended(v.name);
        ::umount2(v.mountpoint.c_str(), MNT_DETACH);
      }
    }
  }
  if (!h->session) {
    if (!make_mountpoint(v.mountpoint, &h->created_dir, error)) {
      mediator_.remove_view(h->id);
      *error = where + ": " + *error;
      return Errno(EINVAL);
    }
    h->session =
        Session::mount(Filesystem::ops(), h->fs.get(), v.mountpoint, options_.session, error);
  }
  if (!h->session) {
    mediator_.remove_view(h->id);
    undo_dir();
    *error = where + ": " + *error;
    return Errno(EIO);
  }
  revoker_.add(h->session->raw());
  if (h->adopted) {
    // Requests the dead daemon read and never answered come again (6.9+).
    // Before the loop starts: a resend moves every request being processed
    // on the connection, and one of our own would then run twice.
    if (const int e = h->session->resend()) {
      spdlog::warn(
          "view {}: the kernel cannot resend requests in flight at the restart ({}): "
          "their callers wait until they are killed",
          v.name, std::strerror(e));
    }
  }
  start_loop(*h);
  // The transport before the first request: once INIT said io_uring, the
  // kernel holds every request until each queue has an entry.
  std::string why;
  const bool answered = h->session->wait_for_init(std::chrono::seconds(10));
  if (answered && !h->session->start_transport(&why)) {
    *error = where + ": " + why;
    stop(*h);
    undo_dir();
    return Errno(EIO);
  }
  struct stat st {};
  if (!answered || ::stat((v.mountpoint + "/devices").c_str(), &st) != 0) {
    *error = where + ": the mount at " + v.mountpoint + " does not answer";
    stop(*h);
    undo_dir();
    return Errno(EIO);
  }
  if (h->adopted) {
    // Pages the old daemon filled belong to devices it reset: fault in afresh.
    for (const Bdf& b : mediator_.devices(h->id)) revoker_.invalidate_mappings(b);
    // A device that left while no daemon ran: the kernel may still hold its
    // entry (60 s) and show it; as at a removal, it goes now.
    for (const Bdf& b : left) revoker_.device_gone(b);
    spdlog::info("view {} at {}: taken over from the previous daemon", v.name, v.mountpoint);
  }
  if (options_.restart) options_.restart->view_serving(v.name, *h->session, h->adopted);
  h->stored = stored.dump();
  if (runtime && !options_.state_dir.empty() &&
      !control::save_state(options_.state_dir, v.name, stored.dump(2) + "\n", error)) {
    stop(*h);
    undo_dir();
    return Errno(EIO);
  }
  std::string cdi_error;
  if (!options_.cdi_dir.empty()) {
    core::CdiOptions co;
    co.hook_binary = options_.hook_binary;
    if (!control::write_view_spec(options_.cdi_dir, v, co, &cdi_error)) {
      spdlog::warn("view {}: no CDI spec: {}", v.name, cdi_error);
    }
  }
  spdlog::info("view {} at {}: {} device(s), files owned by uid {}{}, requests over {}", v.name,
               v.mountpoint, mediator_.devices(h->id).size(), v.has_uid ? v.uid : 0,
               runtime ? " (runtime)" : (v.source.empty() ? "" : " (" + v.source + ")"),
               h->session->transport());
  publish(view_event("view_added", v));
  AddedView out{v.name, v.mountpoint,
                std::string(core::kCdiKind) + "=" + core::cdi_device_name(v.name), false};
  views_[v.name] = std::move(h);
  return out;
}

// Runs the view's session loop on its thread; returns once it runs. `ended`
// tells reap() when the kernel has let go of the connection.
void ViewHost::start_loop(Hosted& h) {
  h.loop = std::thread([s = h.session.get(), ended = h.ended] {
    s->run();
    ended->store(true);
  });
  while (!h.session->started()) std::this_thread::yield();
}

// Ends a view's loop and unmounts it (a clean stop). The loop must have started.
void ViewHost::stop(Hosted& h) {
  h.session->end_loop();
  if (h.loop.joinable()) h.loop.join();
  revoker_.remove(h.session->raw());
  h.fs.reset();       // drains queued interrupt replies
  h.session.reset();  // unmounts
}

Result<bool> ViewHost::remove(const std::string& name, std::string* error) {
  MutexLock lock(mu_);
  auto it = views_.find(name);
  if (it == views_.end()) return false;
  if (!it->second->runtime) {
    *error = "view " + name + " comes from the command line (--view): stop the daemon to end it";
    return Errno(EPERM);
  }
  auto h = std::move(it->second);
  views_.erase(it);
  if (!options_.state_dir.empty()) control::remove_state(options_.state_dir, name);
  retire_locked(std::move(h), "removed");
  return true;
}

// The view ends for good: no new container can get it (its CDI spec goes
// first), everything opened through it is revoked, and the host's mount and
// directory go. A container's bind of the mount keeps the connection, which
// answers ENODEV until the kernel drops it (reap).
void ViewHost::retire_locked(std::unique_ptr<Hosted> h, const char* why) {
  const ViewPolicy& v = h->policy;
  if (!options_.cdi_dir.empty()) control::remove_view_spec(options_.cdi_dir, v.name);
  if (Restart* r = options_.restart) {
    // A container's bind may hold the connection past a restart: it stays
    // stored until the kernel lets go (reap).
    if (h->session && !h->ended->load())
      h->stored_as = r->view_retired(v.name, *h->session);
    else
      r->view_ended(v.name);
  }
  mediator_.remove_view(h->id);
  if (h->fs) h->fs->kill();
  if (h->session && !h->ended->load() && ::umount2(v.mountpoint.c_str(), MNT_DETACH) != 0 &&
      errno != EINVAL && errno != ENOENT) {
    spdlog::warn("view {}: cannot detach {}: {}", v.name, v.mountpoint, std::strerror(errno));
  }
  if (h->created_dir || h->runtime) ::rmdir(v.mountpoint.c_str());
  spdlog::info("view {} {}: mount at {} detached", v.name, why, v.mountpoint);
  publish(view_event("view_removed", v));
  retired_.push_back(std::move(h));
}

size_t ViewHost::reap() {
  MutexLock lock(mu_);
  for (auto it = retired_.begin(); it != retired_.end();) {
    if (!(*it)->ended->load()) {
      ++it;
      continue;
    }
    stop(**it);  // the loop has ended: the kernel let go of the connection
    if (!(*it)->stored_as.empty()) options_.restart->view_ended((*it)->stored_as);
    spdlog::debug("view {}: its last mount is gone", (*it)->policy.name);
    it = retired_.erase(it);
  }
  for (auto it = views_.begin(); it != views_.end();) {
    if (!it->second->ended->load()) {
      ++it;
      continue;
    }
    auto h = std::move(it->second);
    it = views_.erase(it);
    spdlog::warn("view {}: unmounted from outside the daemon: removed", h->policy.name);
    if (h->runtime && !options_.state_dir.empty()) {
      control::remove_state(options_.state_dir, h->policy.name);
    }
    retire_locked(std::move(h), "unmounted");
  }
  return views_.size();
}

// Every view ends as if removed (S12 revoke: handles, claims, and mappings,
// invalidated while the sessions can still do it, so a mapped page faults
// afresh and gets SIGBUS rather than staying readable), then unmounts.
void ViewHost::stop_all() {
  MutexLock lock(mu_);
  for (auto& [name, h] : views_) {
    if (!options_.cdi_dir.empty()) control::remove_view_spec(options_.cdi_dir, name);
    if (options_.restart) options_.restart->view_ended(name);
    mediator_.remove_view(h->id);
    h->fs->kill();
  }
  // The claims just ended: clean their devices while the sink still reaches
  // every mount (a hand-over revokes mappings), then unmount.
  mediator_.drain_handovers();
  for (auto& [name, h] : views_) {
    stop(*h);
    if (h->created_dir || h->runtime) ::rmdir(h->policy.mountpoint.c_str());
  }
  views_.clear();
  for (auto& h : retired_) {
    // Detached long ago; its path may hold another mount now.
    if (!h->ended->load()) h->session->disown();
    stop(*h);
    if (!h->stored_as.empty()) options_.restart->view_ended(h->stored_as);
  }
  retired_.clear();
}

void ViewHost::hand_over() {
  MutexLock lock(mu_);
  for (auto& [name, h] : views_) {
    h->session->end_loop();
    if (h->loop.joinable()) h->loop.join();
    h->session->disown();  // the store holds the connection; the mount stays
  }
}

size_t ViewHost::adopt_retired() {
  Restart* r = options_.restart;
  if (!r) return 0;
  MutexLock lock(mu_);
  size_t n = 0;
  for (auto& [name, kept] : r->take_retired()) {
    auto h = std::make_unique<Hosted>();
    h->policy.name = name;
    h->id = mediator_.add_view(h->policy);
    mediator_.remove_view(h->id);  // every request: ENODEV
    h->fs = std::make_unique<Filesystem>(mediator_, h->id, drivers_);
    h->fs->kill();
    std::string why;
    // No mountpoint: the host's mount was detached at the removal.
    h->session = Session::adopt(Filesystem::ops(), h->fs.get(), "", kept.fd, kept.init,
                                options_.session, &why);
    if (!h->session) {
      spdlog::warn("retired view {}: cannot take over its connection ({}): it ends", name, why);
      r->view_ended(name);
      continue;
    }
    h->adopted = true;
    h->stored_as = name;
    revoker_.add(h->session->raw());
    (void)h->session->resend();  // what the old daemon left unanswered: ENODEV
    start_loop(*h);
    spdlog::info("retired view {}: its connection taken over (ENODEV until released)", name);
    retired_.push_back(std::move(h));
    ++n;
  }
  return n;
}

size_t ViewHost::load_state() {
  if (options_.state_dir.empty()) return 0;
  size_t failed = 0;
  for (const auto& f : control::list_state(options_.state_dir)) {
    std::string error;
    json j = json::parse(f.text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && add(j, f.path, &error)) continue;
    if (j.is_discarded()) error = f.path + ": not JSON";
    spdlog::error("state: {}: not mounted", error);
    ++failed;
  }
  return failed;
}

json ViewHost::list() const {
  MutexLock lock(mu_);
  json out = json::array();
  for (const auto& [name, h] : views_) {
    json devices = json::array();
    for (const Bdf& b : mediator_.devices(h->id)) devices.push_back(b.str());
    const ViewUsage u = mediator_.view_usage(h->id);
    json claims = json::array();
    for (const auto& c : u.claims) {
      claims.push_back(json{{"bdf", c.bdf.str()}, {"pid", c.pid}, {"uid", c.uid}});
    }
    out.push_back(
        json{{"name", name},
             {"mountpoint", h->policy.mountpoint},
             {"uid", h->policy.has_uid ? json(h->policy.uid) : json(nullptr)},
             {"devices", devices},
             {"open_handles", u.open_handles},
             {"claims", claims},
             {"runtime", h->runtime},
             {"allow_dma", h->policy.allow_dma},
             {"cdi_device", std::string(core::kCdiKind) + "=" + core::cdi_device_name(name)}});
  }
  return out;
}

std::vector<std::string> ViewHost::mountpoints() const {
  MutexLock lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, h] : views_) out.push_back(h->policy.mountpoint);
  return out;
}

}  // namespace pcifs::fuse
