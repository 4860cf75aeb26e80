// ViewHost: the views one daemon serves, each a Filesystem + Session + loop
// at its own mountpoint, added and removed while the daemon runs [S16].
//
// - Static views (--view, or the default view) are mounted at start and live
//   as long as the daemon; they are not persisted.
// - Runtime views (`pcifs view add`, through the control socket) are checked
//   as --view files are, mounted at a directory the host creates, persisted
//   in the state directory (temp file + rename) and published as a CDI spec;
//   `remove` revokes everything of the view (Mediator::remove_view), deletes
//   its spec and state file, detaches the mount and removes the directory.
//   A mount a container still holds stays connected and answers ENODEV to
//   everything until the kernel lets go of it (a "retired" view), so a
//   caller's open handle gets ENODEV, never ENOTCONN; reap() collects it.
// - A clean stop (stop_all) unmounts every view, removes the directories it
//   created and the CDI specs it wrote (nothing is left for an engine to bind
//   to), and keeps the state files, so the views come back at the next start.
//
// Thread safety: every method may be called from any thread (control
// connections, the daemon's main loop); one mutex serialises them. FUSE
// handlers never take it. Ownership: borrows the Mediator and the Revoker,
// which must outlive it.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fuse/filesystem.hpp"
#include "fuse/restart.hpp"
#include "fuse/revoker.hpp"
#include "fuse/session.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

struct HostOptions {
  SessionOptions session;
  std::string state_dir;                       // "": runtime views are not persisted
  std::string cdi_dir;                         // "": no CDI specs are written
  std::string view_root = "/run/pcifs/views";  // mountpoint of a view that names none
  std::string hook_binary;                     // the CDI spec's hook ("": none)
  Restart* restart = nullptr;                  // the fd store (restart.hpp); null: none
};

struct AddedView {
  std::string name, mountpoint, cdi_device;
  bool existed = false;  // the same view was already there: nothing was done
};

class ViewHost {
 public:
  using Publish = std::function<void(const nlohmann::json& event)>;
  ViewHost(Mediator& m, Revoker& revoker, HostOptions options);
  ~ViewHost();  // stop_all()
  ViewHost(const ViewHost&) = delete;
  ViewHost& operator=(const ViewHost&) = delete;

  void set_publish(Publish publish) EXCLUDES(mu_);
  // Mounts a view of the command line. On failure *error says why.
  Result<void> add_static(ViewPolicy v, std::string* error) EXCLUDES(mu_);
  // A runtime view from its JSON object; errors name `source` and the field.
  Result<AddedView> add(const nlohmann::json& view, const std::string& source, std::string* error)
      EXCLUDES(mu_);
  // false: no view of that name (nothing to do). Static views cannot be removed.
  Result<bool> remove(const std::string& name, std::string* error) EXCLUDES(mu_);
  nlohmann::json list() const EXCLUDES(mu_);
  // Mounts every view of the state directory; returns how many failed (each logged).
  size_t load_state() EXCLUDES(mu_);
  // After a restart: serves the stored connections of views removed before
  // it that a container still held (every request ENODEV, as before the
  // restart) until the kernel lets go. Returns how many.
  size_t adopt_retired() EXCLUDES(mu_);
  // Collects loops that ended (a retired view let go by the kernel, or a view
  // unmounted from outside, which then counts as removed). Returns the number
  // of views still served.
  size_t reap() EXCLUDES(mu_);
  void stop_all() EXCLUDES(mu_);
  // For a successor that takes the mounts over through the fd store: ends
  // every loop once its requests in progress are answered and leaves
  // everything else as it is (mounts, claims, CDI specs, state). The
  // process must end right after, without destroying the Mediator.
  void hand_over() EXCLUDES(mu_);
  std::vector<std::string> mountpoints() const EXCLUDES(mu_);

 private:
  struct Hosted;
  Result<AddedView> mount_locked(ViewPolicy v, const nlohmann::json& stored, bool runtime,
                                 std::string* error) REQUIRES(mu_);
  std::optional<std::string> mountpoint_conflict(const std::string& mp) const REQUIRES(mu_);
  void retire_locked(std::unique_ptr<Hosted> h, const char* why) REQUIRES(mu_);
  static void start_loop(Hosted& h);
  void stop(Hosted& h);
  void publish(const nlohmann::json& event) const EXCLUDES(publish_mu_);

  Mediator& mediator_;
  Revoker& revoker_;
  const HostOptions options_;
  DriverNames drivers_;
  // Lock order: mu_ is level 1, the outermost lock of the daemon; publish_mu_
  // starts a leaf chain (-> HostControl::mu_ -> the watchers') (fs/core/mediator_state.hpp).
  mutable Mutex mu_ ACQUIRED_BEFORE(publish_mu_){"ViewHost::mu_"};
  mutable Mutex publish_mu_{"ViewHost::publish_mu_"};
  Publish publish_ GUARDED_BY(publish_mu_);
  std::map<std::string, std::unique_ptr<Hosted>> views_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Hosted>> retired_ GUARDED_BY(mu_);
};

}  // namespace pcifs::fuse
