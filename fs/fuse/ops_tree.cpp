// The namespace handlers: lookup, getattr, readlink, readdir, readdirplus.
#include <sys/stat.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "fuse/fh.hpp"
#include "fuse/filesystem.hpp"
#include "fuse/reply.hpp"

namespace pcifs::fuse {
namespace {

// Entries and attributes change only when a device leaves or arrives, and
// the revoker invalidates the kernel's copies then.
constexpr double kTimeout = 60.0;

struct DirSnapshot {
  std::vector<DirEntry> entries;
};

// An operation that needs a device's doe_features/ complete runs once the
// device's DOE Discovery has finished: at once, or on the DOE executor's
// thread when Discovery ends (within the first DOE timeout after the device
// arrived). No thread waits for a mailbox, and a mailbox that never answers
// delays nothing else. The request is held (HeldRequests): a view that stops
// first answers it ENODEV while its session can, and the completion, behind
// the view's ReplyGate, then has nothing to answer. `body(Reply&)` holds
// copies of what it needs from the request.
template <typename Body>
void after_discovery(Reply& r, std::optional<Bdf> device, const char* op, Body body) {
  if (!device) return body(r);
  Filesystem& fs = fs_of(r.req());
  const std::shared_ptr<HeldRequests>& held = fs.held();
  auto id = held->hold(r.req());
  if (!id) return r.error(Errno(ENODEV));  // the view is going
  r.take();
  std::function<void()> then = [gate = fs.replies(), held, id = *id, op,
                                body = std::move(body)]() mutable {
    gate->run([&] {
      fuse_req_t req = held->take(id);
      if (req == nullptr) return;  // answered as the view ended
      Reply later(req);
      guarded(op, [&] { body(later); });
    });
  };
  if (!fs.mediator().when_doe_discovered(*device, std::move(then)))
    spdlog::debug("{} in {}: after its DOE Discovery", op, device->str());
}

// The entry a LOOKUP answers for a node with attributes `st`; READDIRPLUS
// gives the same with each name it lists.
fuse_entry_param entry_of(const struct stat& st) {
  fuse_entry_param e{};
  e.ino = st.st_ino;
  e.attr = st;
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  return e;
}

// One page of a listing from `off` (READDIR), or with each entry's attributes
// as a LOOKUP would give them (READDIRPLUS: `fs` set), so that the kernel needs
// no LOOKUP for a name it has just listed (lspci lists devices/, then opens
// devices/B/config for each B). An entry that can no longer be looked up (a
// device left after the snapshot was taken), and `.` and `..`, go without
// attributes, as a plain entry: node id 0 makes the kernel link nothing.
void reply_dir(Reply& r, const DirSnapshot& snap, size_t size, off_t off,
               const Filesystem* fs = nullptr) {
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < snap.entries.size(); ++i) {
    const DirEntry& e = snap.entries[i];
    const auto next = static_cast<off_t>(i + 1);
    size_t n = 0;
    if (fs == nullptr) {
      struct stat st {};
      st.st_ino = encode(e.id);
      st.st_mode = e.type;
      n = fuse_add_direntry(r.req(), buf.data() + used, size - used, e.name.c_str(), &st, next);
    } else {
      fuse_entry_param p{};
      p.attr.st_ino = encode(e.id);
      p.attr.st_mode = e.type;
      if (e.name != "." && e.name != "..") {
        if (auto st = fs->stat_of(e.id)) p = entry_of(*st);
      }
      n = fuse_add_direntry_plus(r.req(), buf.data() + used, size - used, e.name.c_str(), &p, next);
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(r.take(), buf.data(), used);
}

}  // namespace

Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

Filesystem::Filesystem(Mediator& m, ViewId view, DriverNames& drivers)
    : tree_(m, view, drivers), name_(m.view(view).name) {
  clock_gettime(CLOCK_REALTIME, &started_);
}

Result<struct stat> Filesystem::stat_of(const NodeId& id) const {
  PCIFS_TRY_ASSIGN(a, tree_.attr(id));
  struct stat st {};
  st.st_ino = encode(id);
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_atim = st.st_mtim = st.st_ctim = started_;
  return st;
}

void op_init(void*, fuse_conn_info* conn) noexcept { configure_connection(conn); }

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Reply r(req);
  guarded("lookup", [&] {
    Filesystem& fs = fs_of(req);
    auto p = decode(parent);
    if (!p) return r.error(Errno(ENOENT));
    auto awaited = Tree::needs_discovery(Tree::Op::kLookup, *p, name);
    after_discovery(r, awaited, "lookup", [fs = &fs, p = *p, name = std::string(name)](Reply& out) {
      auto id = fs->tree().lookup(p, name);
      if (!id && id.error() == Errno(ENOENT) && Tree::absent_for_good(p, name)) {
        // A negative entry: the kernel answers the next lookups of the name.
        spdlog::trace("lookup {}/{}: absent for good", encode(p), name);
        fuse_entry_param e{};
        e.entry_timeout = kTimeout;
        fuse_reply_entry(out.take(), &e);
        return;
      }
      spdlog::trace("lookup {}/{}: {}", encode(p), name, id ? "found" : id.error().name());
      if (!id) return out.error(id.error());
      auto st = fs->stat_of(*id);
      if (!st) return out.error(st.error());
      const fuse_entry_param e = entry_of(*st);
      fuse_reply_entry(out.take(), &e);
    });
  });
}

// getattr, and setattr: truncate(2) and `echo > file` send a size change.
// Device files have a fixed size, so it is accepted and ignored, as sysfs
// does (O_TRUNC); any other change is EPERM.
void reply_attr(fuse_req_t req, fuse_ino_t ino, int to_set, const char* op) {
  Reply r(req);
  guarded(op, [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    if (to_set & ~FUSE_SET_ATTR_SIZE) return r.error(Errno(EPERM));
    Filesystem& fs = fs_of(req);
    auto awaited = Tree::needs_discovery(Tree::Op::kAttr, *id);
    after_discovery(r, awaited, op, [fs = &fs, id = *id](Reply& out) {
      auto st = fs->stat_of(id);
      if (!st) return out.error(st.error());
      fuse_reply_attr(out.take(), &*st, kTimeout);
    });
  });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  reply_attr(req, ino, 0, "getattr");
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat*, int to_set,
                fuse_file_info*) noexcept {
  reply_attr(req, ino, to_set, "setattr");
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  Reply r(req);
  guarded("readlink", [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    auto t = fs_of(req).tree().link_target(*id);
    if (!t) return r.error(t.error());
    fuse_reply_readlink(r.take(), t->c_str());
  });
}

Result<std::unique_ptr<DirSnapshot>> dir_snapshot(Filesystem& fs, const NodeId& id) {
  auto list = fs.tree().children(id);
  if (!list) return list.error();
  auto snap = std::make_unique<DirSnapshot>();
  snap->entries.push_back({".", id, S_IFDIR});
  snap->entries.push_back({"..", id, S_IFDIR});
  for (auto& e : *list) snap->entries.push_back(std::move(e));
  return snap;
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("opendir", [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    Filesystem& fs = fs_of(req);
    auto awaited = Tree::needs_discovery(Tree::Op::kList, *id);
    after_discovery(r, awaited, "opendir", [fs = &fs, id = *id, info = *fi](Reply& out) mutable {
      auto snap = dir_snapshot(*fs, id);
      if (!snap) return out.error(snap.error());
      fh_reply_open(out, &info, std::move(*snap), fs->handles());
    });
  });
}

namespace {

void list_dir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
              bool plus) {
  Reply r(req);
  const char* op = plus ? "readdirplus" : "readdir";
  guarded(op, [&] {
    Filesystem& fs = fs_of(req);
    const Filesystem* with_attrs = plus ? &fs : nullptr;
    if (auto snap = fs.handles().get<const DirSnapshot>(fi->fh))
      return reply_dir(r, *snap, size, off, with_attrs);
    // Opened before a restart: list the directory again under the same fh.
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    auto awaited = Tree::needs_discovery(Tree::Op::kList, *id);
    after_discovery(r, awaited, op,
                    [fs = &fs, id = *id, fh = fi->fh, size, off, with_attrs](Reply& out) {
                      auto fresh = dir_snapshot(*fs, id);
                      if (!fresh) return out.error(fresh.error());
                      std::shared_ptr<const DirSnapshot> snap(std::move(*fresh));
                      fs->handles().adopt(fh, snap);
                      reply_dir(out, *snap, size, off, with_attrs);
                    });
  });
}

}  // namespace

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                fuse_file_info* fi) noexcept {
  list_dir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    fuse_file_info* fi) noexcept {
  list_dir(req, ino, size, off, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("releasedir", [&] {
    fh_delete(fi, fs_of(req).handles());
    r.ok();
  });
}

}  // namespace pcifs::fuse

namespace pcifs::fuse {

// The tree is the device set's, not the user's: nothing can be created,
// removed or renamed in it. The errnos are sysfs's (EACCES to create a file,
// EPERM for the rest), not ENOSYS.
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) noexcept {
  fuse_reply_err(req, EACCES);
}
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) noexcept {
  fuse_reply_err(req, EACCES);
}
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) noexcept {
  fuse_reply_err(req, EPERM);
}
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) noexcept { fuse_reply_err(req, EPERM); }
void op_rmdir(fuse_req_t req, fuse_ino_t, const char*) noexcept { fuse_reply_err(req, EPERM); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) noexcept {
  fuse_reply_err(req, EPERM);
}
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*,
               unsigned) noexcept {
  fuse_reply_err(req, EPERM);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) noexcept {
  fuse_reply_err(req, EPERM);
}

}  // namespace pcifs::fuse
