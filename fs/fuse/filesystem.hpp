// One view's filesystem: the lowlevel ops table and the per-view state its
// handlers reach through fuse_req_userdata(). Handlers are thin (STYLE.md):
// decode, resolve the caller, one Mediator or Tree call, reply.
//
// Ownership: a Filesystem borrows the Mediator and the DriverNames; it must
// outlive its Session. Thread safety: handlers run on many loop threads at once;
// everything they touch is thread-safe.
#pragma once

#include <atomic>
#include <cerrno>
#include <ctime>
#include <memory>

#include "fuse/deferred.hpp"
#include "fuse/fh.hpp"
#include "fuse/held_requests.hpp"
#include "fuse/reply_gate.hpp"
#include "fuse/session.hpp"
#include "fuse/tree.hpp"

namespace pcifs::fuse {

class Filesystem {
 public:
  Filesystem(Mediator& m, ViewId view, DriverNames& drivers);
  static const fuse_lowlevel_ops& ops();

  const Tree& tree() const { return tree_; }
  Mediator& mediator() const { return tree_.mediator(); }
  ViewId view() const { return tree_.view(); }
  const std::string& name() const { return name_; }
  // Fills a struct stat from the tree; false when the node is gone.
  Result<struct stat> stat_of(const NodeId& id) const;
  Deferred& deferred() { return deferred_; }
  // For replies sent from outside the loop (reply_gate.hpp); callbacks keep
  // the gate, which outlives the Filesystem.
  const std::shared_ptr<ReplyGate>& replies() const { return replies_.gate; }
  Lanes& lanes() { return lanes_; }
  // Requests answered later from outside the loop; answered ENODEV, if still
  // held, as the Filesystem goes (before the gate closes).
  const std::shared_ptr<HeldRequests>& held() const { return held_.requests; }
  FhObjects& handles() { return handles_; }
  // The view was removed [S16]: from now on every request but the releases
  // gets ENODEV (the mount may live on in a container until it lets go).
  void kill() { dead_.store(true); }
  bool dead() const { return dead_.load(std::memory_order_relaxed); }

 private:
  Tree tree_;
  std::string name_;
  timespec started_{};
  // Closed on destruction, after deferred_ and lanes_ (declared after it)
  // have run what they had queued, and before the Session goes.
  struct ClosesOnDestruction {
    std::shared_ptr<ReplyGate> gate = std::make_shared<ReplyGate>();
    ~ClosesOnDestruction() { gate->close(); }
  };
  FhObjects handles_;  // status and directory snapshots; replies behind the gate use it
  ClosesOnDestruction replies_;
  Deferred deferred_;
  Lanes lanes_;  // requests that wait for a device, off the loop's workers
  struct EndsOnDestruction {
    std::shared_ptr<HeldRequests> requests = std::make_shared<HeldRequests>();
    ~EndsOnDestruction() { requests->end(ENODEV); }
  };
  EndsOnDestruction held_;  // last: its requests are answered first
  std::atomic<bool> dead_{false};
};

// Handlers, one per op (ops_tree.cpp: the namespace; ops_file.cpp: I/O).
Filesystem& fs_of(fuse_req_t req);
void op_init(void* userdata, fuse_conn_info* conn) noexcept;
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_readlink(fuse_req_t req, fuse_ino_t ino) noexcept;
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                fuse_file_info* fi) noexcept;
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    fuse_file_info* fi) noexcept;
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept;
void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) noexcept;
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_poll(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, fuse_pollhandle* ph) noexcept;
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* fi) noexcept;
// The tree cannot be changed: these only refuse (EACCES / EPERM, as sysfs).
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              dev_t rdev) noexcept;
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) noexcept;
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept;
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept;
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned flags) noexcept;
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept;

}  // namespace pcifs::fuse
