// The I/O handlers: open, read, write, release, poll. Device files go to the
// Mediator by handle; `status` is a snapshot taken at open; DOE reads are
// answered later, from the thread that completes the exchange.
#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fuse/caller.hpp"
#include "fuse/fh.hpp"
#include "fuse/filesystem.hpp"
#include "fuse/reply.hpp"

namespace pcifs::fuse {
namespace {

bool is_doe(const NodeId& id) {
  return id.node == Node::kDeviceFile && id.file_ref().kind == FileKind::kDoe;
}

void open_status(Reply& r, Filesystem& fs, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return r.error(Errno(EACCES));
  // Bounded per uid (EMFILE) and in total (ENFILE): each open holds a copy.
  auto snap = fs.mediator().status_snapshot(fs.view(), caller_of(r.req()));
  if (!snap) return r.error(snap.error());
  fi->direct_io = 1;
  fh_reply_open(r, fi, std::make_unique<StatusSnapshot>(std::move(*snap)), fs.handles());
}

// Replies from a per-thread copy, never from the handle's text: once the
// kernel has taken the reply the client may close, and the release (another
// thread) frees the text while this writev is still returning -- and the
// sanitizers' writev interceptors read the iovec after the syscall.
void read_status(Reply& r, Filesystem& fs, const fuse_file_info* fi, size_t size, off_t off) {
  auto snap = fs.handles().get<const StatusSnapshot>(fi->fh);
  if (!snap) {
    // Opened before a restart: the snapshot died with the old daemon. Take
    // one now, as an open would, and keep it for the handle's later reads.
    auto fresh = fs.mediator().status_snapshot(fs.view(), caller_of(r.req()));
    if (!fresh) return r.error(fresh.error());
    snap = std::make_shared<const StatusSnapshot>(std::move(*fresh));
    fs.handles().adopt(fi->fh, snap);
  }
  const std::string* text = &snap->text;
  const size_t start = std::min(text->size(), static_cast<size_t>(off));
  thread_local std::string slice;
  slice.assign(*text, start, std::min(size, text->size() - start));
  fuse_reply_buf(r.take(), slice.data(), slice.size());
}

// Interrupt callbacks run under the request's lock: queue the EINTR reply.
// If the response completed meanwhile there is nothing pending to interrupt.
// libfuse calls this from C: nothing may leave it. A job that cannot be
// queued (no memory) loses only the interrupt: the read is still answered
// when its exchange ends (bounded by the DOE timeout).
void on_doe_interrupt(fuse_req_t req, void* data) noexcept {
  const auto h = static_cast<HandleId>(reinterpret_cast<uintptr_t>(data));
  guarded("interrupt", [&] {
    Filesystem& fs = fs_of(req);
    Mediator* m = &fs.mediator();
    fs.deferred().post([m, h] { m->doe_interrupt(h); });
  });
}

void read_doe(Reply& r, Filesystem& fs, fuse_file_info* fi, size_t size) {
  fuse_req_t req = r.take();
  // The handle id itself is the callback's data: nothing to keep alive.
  void* data = reinterpret_cast<void*>(uintptr_t{fi->fh});  // NOLINT(performance-no-int-to-ptr)
  fuse_req_interrupt_func(req, on_doe_interrupt, data);
  if (fuse_req_interrupted(req)) {
    fuse_reply_err(req, EINTR);
    return;
  }
  // Answered later, maybe from the DOE executor: through the view's gate.
  fs.mediator().doe_read(
      fi->fh, size, [req, gate = fs.replies()](Result<std::vector<uint8_t>> res) {
        gate->run([&] {
          if (res) {
            fuse_reply_buf(req, reinterpret_cast<const char*>(res->data()), res->size());
          } else {
            const int e = res.error().value();
            fuse_reply_err(req, e == ECANCELED ? EINTR : e);
          }
        });
      });
}

// A read or write that would wait for a device operation (kWouldWait from
// try_read/try_write) runs on the device's lane and is answered from there; a
// full lane answers EAGAIN at once. The Reply is taken only once the job is
// queued, so that a failed post still gets exactly one answer.
template <typename Job>
void on_lane(Reply& r, Filesystem& fs, const NodeId& id, Job job) {
  fuse_req_t req = r.req();
  if (!fs.lanes().post(id.file_ref().bdf, [job = std::move(job), req]() mutable { job(req); })) {
    return r.error(Errno(EAGAIN));
  }
  r.take();
}

void read_later(Reply& r, Filesystem& fs, const NodeId& id, HandleId fh, size_t size, off_t off) {
  Mediator* m = &fs.mediator();
  on_lane(r, fs, id, [m, fh, size, off](fuse_req_t req) {
    thread_local std::vector<uint8_t> buf;
    Reply lr(req);
    guarded("read", [&] {
      if (buf.size() < size) buf.resize(size);
      auto n = m->read(fh, static_cast<uint64_t>(off), std::span(buf.data(), size));
      if (!n) return lr.error(n.error());
      fuse_reply_buf(lr.take(), reinterpret_cast<const char*>(buf.data()), *n);
    });
  });
}

void write_later(Reply& r, Filesystem& fs, const NodeId& id, HandleId fh, const char* data,
                 size_t size, off_t off) {
  Mediator* m = &fs.mediator();
  std::vector<uint8_t> copy(data, data + size);  // the request's buffer is the worker's
  on_lane(r, fs, id, [m, fh, copy = std::move(copy), off](fuse_req_t req) {
    Reply lr(req);
    guarded("write", [&] {
      auto n = m->write(fh, static_cast<uint64_t>(off), std::span(copy.data(), copy.size()));
      if (!n) return lr.error(n.error());
      fuse_reply_write(lr.take(), *n);
    });
  });
}

// A BAR open while its group is handed over to the next tenant: it waits for
// the hand-over on the device's lane and is answered from there.
void open_later(Reply& r, Filesystem& fs, const NodeId& id, const Caller& caller, OpenFlags flags,
                fuse_file_info fi) {
  Mediator* m = &fs.mediator();
  const ViewId view = fs.view();
  const FileRef ref = id.file_ref();
  on_lane(r, fs, id, [m, view, ref, caller, flags, fi](fuse_req_t req) mutable {
    Reply lr(req);
    guarded("open", [&] {
      auto h = m->open(view, caller, ref, flags, /*wait=*/true);
      if (!h) return lr.error(h.error());
      fi.fh = *h;
      if (fuse_reply_open(lr.take(), &fi) != 0) {
        m->release(*h);
      } else {
        m->confirm_open(*h);
      }
    });
  });
}

}  // namespace

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("open", [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    Filesystem& fs = fs_of(req);
    if (id->node == Node::kStatus) return open_status(r, fs, fi);
    if (id->node != Node::kDeviceFile && id->node != Node::kDoeFeature) {
      return r.error(Errno(EISDIR));
    }
    const FileRef ref = id->file_ref();
    auto entry = fs.mediator().stat(fs.view(), ref);
    if (!entry) return r.error(entry.error());
    const int acc = fi->flags & O_ACCMODE;
    OpenFlags flags;
    flags.read = acc != O_WRONLY;
    flags.write = acc != O_RDONLY;
    flags.nonblock = (fi->flags & O_NONBLOCK) != 0;
    // Only a handle that can claim (a BAR, or anything opened for writing) needs
    // the caller's process id, which costs a read of /proc; the others keep
    // the thread id, which only their log lines show.
    const bool may_claim = ref.kind == FileKind::kBar || flags.write;
    const Caller caller = may_claim ? claiming_caller_of(req) : caller_of(req);
    fi->direct_io = entry->direct_io ? 1 : 0;
    fi->keep_cache = entry->keep_cache ? 1 : 0;
    fi->nonseekable = entry->nonseekable ? 1 : 0;
    auto h = fs.mediator().open(fs.view(), caller, ref, flags, /*wait=*/false);
    if (!h && h.error() == Errno(kWouldWait)) return open_later(r, fs, *id, caller, flags, *fi);
    if (!h) return r.error(h.error());
    fi->fh = *h;
    // An open the kernel gave up on (interrupted) gets no release: end it here.
    if (fuse_reply_open(r.take(), fi) != 0) {
      fs.mediator().release(*h);
    } else {
      fs.mediator().confirm_open(*h);  // the handle survives a restart from now on
    }
  });
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("read", [&] {
    auto id = decode(ino);
    if (!id) return r.error(Errno(ENOENT));
    Filesystem& fs = fs_of(req);
    if (id->node == Node::kStatus) return read_status(r, fs, fi, size, off);
    if (is_doe(*id)) return read_doe(r, fs, fi, size);
    thread_local std::vector<uint8_t> buf;
    if (buf.size() < size) buf.resize(size);
    // Never waits for a device operation: those reads go to the device's lane.
    auto n =
        fs.mediator().try_read(fi->fh, static_cast<uint64_t>(off), std::span(buf.data(), size));
    if (!n && n.error() == Errno(kWouldWait)) return read_later(r, fs, *id, fi->fh, size, off);
    if (!n) return r.error(n.error());
    fuse_reply_buf(r.take(), reinterpret_cast<const char*>(buf.data()), *n);
  });
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("write", [&] {
    auto id = decode(ino);
    if (!id || id->node == Node::kStatus) return r.error(Errno(EACCES));
    // Writeback of a mapped BAR carries no caller (pid 0): the handle is the
    // writer, whichever process's mapping dirtied the page. Control writes
    // and writes that wait for a device operation go to the device's lane.
    Filesystem& fs = fs_of(req);
    auto n = fs.mediator().try_write(fi->fh, static_cast<uint64_t>(off),
                                     std::span(reinterpret_cast<const uint8_t*>(buf), size));
    if (!n && n.error() == Errno(kWouldWait)) {
      return write_later(r, fs, *id, fi->fh, buf, size, off);
    }
    if (!n) return r.error(n.error());
    fuse_reply_write(r.take(), *n);
  });
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Reply r(req);
  guarded("release", [&] {
    auto id = decode(ino);
    if (id && id->node == Node::kStatus) {
      fh_delete(fi, fs_of(req).handles());
    } else {
      fs_of(req).mediator().release(fi->fh);
    }
    r.ok();
  });
}

void op_poll(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, fuse_pollhandle* ph) noexcept {
  Reply r(req);
  guarded("poll", [&] {
    // Owns the poll handle from here on: destroyed when the Mediator drops the
    // wake-up (answered, replaced by a newer poll, or the handle released).
    // Made inside the guard: if its control block cannot be allocated, the
    // constructor destroys `ph` and the guard answers EIO.
    std::shared_ptr<fuse_pollhandle> handle(ph, [](fuse_pollhandle* p) {
      if (p) fuse_pollhandle_destroy(p);
    });
    // Checked here, not by Live: the ENODEV answer must still free `ph`.
    if (fs_of(req).dead()) return r.error(Errno(ENODEV));
    auto id = decode(ino);
    if (!id || !is_doe(*id)) {
      return void(fuse_reply_poll(r.take(), POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM));
    }
    std::function<void()> wake;
    if (handle) {
      wake = [handle, gate = fs_of(req).replies()] {
        gate->run([&] { fuse_lowlevel_notify_poll(handle.get()); });
      };
    }
    const unsigned bits = fs_of(req).mediator().doe_poll(fi->fh, std::move(wake));
    unsigned events = 0;
    if (bits & 1) events |= POLLIN | POLLRDNORM;
    if (bits & 2) events |= POLLOUT | POLLWRNORM;
    fuse_reply_poll(r.take(), events);
  });
}

namespace {

// The handler, unless the view was removed: then ENODEV (releases and
// forgets are not wrapped: they free what the kernel lets go of).
template <auto Op>
struct Live;
template <typename... A, void (*Op)(fuse_req_t, A...) noexcept>
struct Live<Op> {
  static void call(fuse_req_t req, A... a) noexcept {
    if (fs_of(req).dead()) {
      fuse_reply_err(req, ENODEV);
      return;
    }
    Op(req, a...);
  }
};

}  // namespace

const fuse_lowlevel_ops& Filesystem::ops() {
  static const fuse_lowlevel_ops kOps = [] {
    fuse_lowlevel_ops o{};
    o.init = op_init;
    o.lookup = Live<op_lookup>::call;
    o.getattr = Live<op_getattr>::call;
    o.setattr = Live<op_setattr>::call;
    o.readlink = Live<op_readlink>::call;
    o.opendir = Live<op_opendir>::call;
    o.readdir = Live<op_readdir>::call;
    o.readdirplus = Live<op_readdirplus>::call;
    o.releasedir = op_releasedir;
    o.open = Live<op_open>::call;
    o.read = Live<op_read>::call;
    o.write = Live<op_write>::call;
    o.release = op_release;
    o.poll = op_poll;  // checks dead() itself, to free the poll handle
    o.mknod = Live<op_mknod>::call;
    o.create = Live<op_create>::call;
    o.mkdir = Live<op_mkdir>::call;
    o.unlink = Live<op_unlink>::call;
    o.rmdir = Live<op_rmdir>::call;
    o.symlink = Live<op_symlink>::call;
    o.rename = Live<op_rename>::call;
    o.link = Live<op_link>::call;
    return o;
  }();
  return kOps;
}

}  // namespace pcifs::fuse
