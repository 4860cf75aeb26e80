// The namespace handlers: lookup, getattr, readlink, readdir.
#include <sys/stat.h>

#include <cerrno>
#include <memory>
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
    auto id = fs.tree().lookup(*p, name);
    if (!id && id.error() == Errno(ENOENT) && Tree::absent_for_good(*p, name)) {
      // A negative entry: the kernel answers the next lookups of the name.
      spdlog::trace("lookup {}/{}: absent for good", parent, name);
      fuse_entry_param e{};
      e.entry_timeout = kTimeout;
      fuse_reply_entry(r.take(), &e);
      return;
    }
    spdlog::trace("lookup {}/{}: {}", parent, name, id ? "found" : id.error().name());
    if (!id) return r.error(id.error());
    auto st = fs.stat_of(*id);
    if (!st) return r.error(st.error());
    fuse_entry_param e{};
    e.ino = st->st_ino;
    e.attr = *st;
    e.attr_timeout = kTimeout;
    e.entry_timeout = kTimeout;
    fuse_reply_entry(r.take(), &e);
  });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  Reply r(req);
  guarded("getattr", [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    auto st = fs_of(req).stat_of(*id);
    if (!st) return r.error(st.error());
    fuse_reply_attr(r.take(), &*st, kTimeout);
  });
}

// truncate(2) and `echo > file` send a size change: device files have a
// fixed size, so it is accepted and ignored, as sysfs does (O_TRUNC).
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat*, int to_set,
                fuse_file_info*) noexcept {
  Reply r(req);
  guarded("setattr", [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    if (to_set & ~FUSE_SET_ATTR_SIZE) return r.error(Errno(EPERM));
    auto st = fs_of(req).stat_of(*id);
    if (!st) return r.error(st.error());
    fuse_reply_attr(r.take(), &*st, kTimeout);
  });
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

Result<std::unique_ptr<DirSnapshot>> dir_snapshot(fuse_req_t req, fuse_ino_t ino) {
  auto id = decode(ino);
  if (!id) return Errno(ENOENT);
  auto list = fs_of(req).tree().children(*id);
  if (!list) return list.error();
  auto snap = std::make_unique<DirSnapshot>();
  snap->entries.push_back({".", *id, S_IFDIR});
  snap->entries.push_back({"..", *id, S_IFDIR});
  for (auto& e : *list) snap->entries.push_back(std::move(e));
  return snap;
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("opendir", [&] {
    auto snap = dir_snapshot(req, ino);
    if (!snap) return r.error(snap.error());
    fh_reply_open(r, fi, std::move(*snap), fs_of(req).handles());
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("readdir", [&] {
    auto snap = fs_of(req).handles().get<const DirSnapshot>(fi->fh);
    if (!snap) {
      // Opened before a restart: list the directory again under the same fh.
      auto fresh = dir_snapshot(req, ino);
      if (!fresh) return r.error(fresh.error());
      snap = std::shared_ptr<const DirSnapshot>(std::move(*fresh));
      fs_of(req).handles().adopt(fi->fh, snap);
    }
    std::vector<char> buf(size);
    size_t used = 0;
    for (size_t i = static_cast<size_t>(off); i < snap->entries.size(); ++i) {
      const DirEntry& e = snap->entries[i];
      struct stat st {};
      st.st_ino = encode(e.id);
      st.st_mode = e.type;
      const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                                         static_cast<off_t>(i + 1));
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(r.take(), buf.data(), used);
  });
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
