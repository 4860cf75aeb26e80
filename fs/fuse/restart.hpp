// Restarts without breaking a mount (README "Restarts"): the daemon's side
// of the service manager's file-descriptor store.
//
// - The kernel keeps a FUSE connection while any process holds its
//   /dev/fuse descriptor. Each view's descriptor goes to the store
//   (FDSTORE=1, FDNAME=fuse-<view>) once its mount answers, with the
//   RestartState memfd (FDNAME=state: each view's INIT request and the
//   handle table, control/restart_state.hpp).
// - A daemon started with those descriptors (LISTEN_FDS) adopts each view's
//   connection instead of mounting (Session::adopt: same mount, same inode
//   numbers, no INIT), takes the journaled handles over with their claims
//   before its loop reads a request, asks the kernel to resend what the dead
//   daemon had read and not answered (FUSE_NOTIFY_RESEND), and drops every
//   cached page of the views' BARs (the next touch faults in afresh).
// - A view that ends for good leaves the store (FDSTOREREMOVE=1).
//
// Ownership: one per daemon, created before the Mediator serves anything.
// Thread safety: every method from any thread (ViewHost calls under its mu_).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "control/restart_state.hpp"
#include "control/service_manager.hpp"
#include "fuse/session.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

class Restart {
 public:
  // Takes the descriptors passed to this process (take_listen_fds). With
  // `fd_store` (and $NOTIFY_SOCKET set) the store is used from now on;
  // without, passed descriptors are still adopted (a restart without the
  // store's help cannot happen, but a manager that passes fds is obeyed).
  // nullptr + *error: the store is asked for but cannot be used.
  static std::unique_ptr<Restart> start(bool fd_store, std::string* error);
  ~Restart();

  bool storing() const { return storing_; }
  HandleJournal* journal() const { return state_.get(); }
  // The stored connection of view `name` with its INIT request (taken: a
  // second call gets nothing).
  struct Stored {
    int fd = -1;
    std::vector<uint8_t> init;
  };
  std::optional<Stored> take_view(const std::string& name) EXCLUDES(mu_);
  // After an adopted view's handles are in the Mediator: none of them is
  // left for another view to take (their view names are unique). Returns the
  // devices of handles whose device left while no daemon ran: the kernel may
  // still hold their directory entries (ViewHost invalidates them).
  std::vector<Bdf> adopt_handles(Mediator& m, const std::string& view, ViewId id) EXCLUDES(mu_);
  // New handle ids start above every id the previous daemons gave out.
  void reserve_ids(Mediator& m) const;
  // A view answers at its mountpoint: keep its connection (new) or note
  // that it was taken over (adopted: the store has it already).
  void view_serving(const std::string& name, const Session& s, bool adopted) EXCLUDES(mu_);
  void view_ended(const std::string& name) EXCLUDES(mu_);
  // A removed view whose connection a container still holds (it answers
  // ENODEV until the kernel lets go): its connection stays in the store under
  // a name no view can have ("~NAME~RANDOM", returned; empty: not storing),
  // so that a successor keeps answering ENODEV instead of the mount ending.
  // view_ended(that name) when the kernel lets go.
  std::string view_retired(const std::string& name, const Session& s) EXCLUDES(mu_);
  // The stored connections of retired views, with their INIT (taken).
  std::vector<std::pair<std::string, Stored>> take_retired() EXCLUDES(mu_);
  // Stored connections no configured view took: they leave the store (their
  // mounts end: a container's bind of one sees ENOTCONN). Call once, after
  // every view is up.
  void drop_leftovers() EXCLUDES(mu_);
  const control::Notifier& notifier() const { return notifier_; }

 private:
  Restart() = default;
  control::Notifier notifier_;
  bool storing_ = false;
  std::unique_ptr<control::RestartState> state_;
  Mutex mu_{"Restart::mu_"};  // lock order: after ViewHost::mu_; a leaf but for RestartState's
  std::map<std::string, int> stored_ GUARDED_BY(mu_);  // view name -> fd, not yet taken
  std::vector<HandleRecord> records_ GUARDED_BY(mu_);  // journaled, not yet adopted
};

}  // namespace pcifs::fuse
