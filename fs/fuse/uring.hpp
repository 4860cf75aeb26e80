// FUSE over io_uring (Linux 6.14+, fs/fuse/dev_uring.c): the kernel hands
// each request to a ring entry the daemon registered, on the queue of the CPU
// the caller runs on, and takes the reply and the next request in one
// IORING_OP_URING_CMD (COMMIT_AND_FETCH) -- no read(2)/writev(2) pair per
// request and no shared /dev/fuse wait queue that every worker sleeps on.
//
// libfuse 3.14 knows nothing of it, so this channel speaks the kernel's
// protocol itself and feeds each request to the same fuse_session (and so the
// same handlers) as the /dev/fuse loop: fuse_session_process_buf() with the
// request laid out as /dev/fuse would deliver it. Replies come back through
// the session's custom writev (session.cpp), which calls reply() here.
//
// One thread per queue (the kernel makes one queue per possible CPU, and a
// queue takes requests only once every queue has an entry), owning its io_uring (SQE128, single
// issuer, task work deferred to its own waits). A handler that answers on the queue's thread writes
// its reply straight into the entry; one that answers later from another thread (a deferred
// request, a DOE reply) hands the reply to the queue's thread, which commits it. Forgets,
// interrupts and notifications still go over /dev/fuse (the kernel sends them there), so the
// session's /dev/fuse loop keeps running beside the rings.
//
// Thread safety: reply() from any thread; everything else from the owner.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct fuse_session;

namespace pcifs::fuse {

// Each queue thread is pinned to its CPU (where the process may run there),
// so a request is served on the CPU its caller runs on. A thread started
// from a queue thread (a handler's device lane) would inherit the pin: it
// calls this first, and runs where the process may again.
void unpin_current_thread();

class UringChannel {
 public:
  // Registers `depth` entries per queue on `fd` (the session's /dev/fuse fd,
  // whose INIT was answered with FUSE_OVER_IO_URING) with `payload` bytes of
  // payload each (>= the connection's max_write and max_pages), and starts the
  // queue threads. A request answered later holds its entry until then; the
  // queue registers more so that `depth` stay free for new requests (up to
  // 1024 per queue). Returns once every entry is registered, or nullptr and
  // *error if the kernel refused (the connection then stays on /dev/fuse).
  static std::unique_ptr<UringChannel> start(fuse_session* se, int fd, unsigned depth,
                                             size_t payload, std::string* error);
  // Stops the queue threads and frees the entries. The kernel cancels the
  // entries still registered; call it before the connection's fd is closed
  // (the entries hold the device file) and after the last request a handler
  // may answer (a reply after this goes nowhere).
  ~UringChannel();
  UringChannel(const UringChannel&) = delete;
  UringChannel& operator=(const UringChannel&) = delete;

  // A reply (fuse_out_header first) for `fd`: if it answers a request that
  // came over this channel's rings it goes back over them and reply() returns
  // true; false for anything else (a /dev/fuse request, a notification).
  static bool route(int fd, const iovec* iov, int count);

  unsigned queues() const;
  unsigned depth() const;
  // Requests that came over the rings so far.
  uint64_t requests() const;

  struct Impl;

 private:
  explicit UringChannel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The number of queues the kernel makes: one per possible CPU
// (/sys/devices/system/cpu/possible).
unsigned possible_cpus();

}  // namespace pcifs::fuse
