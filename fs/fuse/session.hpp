// One FUSE mount: the session, its /dev/fuse channel and its multi-threaded
// loop. Used by the pcifs daemon and by the benchmark's floor filesystem, so
// both run the same loop with the same options.
//
// Why the custom I/O: SPEC S5 needs exact-width pread/pwrite on resourceN
// (direct_io) AND mmap(MAP_SHARED) of the same file. The kernel allows shared
// mmap of a direct_io file only when FUSE_DIRECT_IO_ALLOW_MMAP was negotiated
// (Linux 6.6+), and libfuse 3.14, the only one Debian ships, cannot ask for it
// (its conn->want is 32 bits). Session installs a fuse_custom_io that passes
// every message through unchanged except the INIT reply, in which it sets that
// one flag when the kernel offered it. README "Decisions" has the details.
//
// Ownership: a Session owns its fuse_session. Thread safety: run() on one
// thread; exit() and raw() from any thread.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pcifs::fuse {

class UringChannel;

// How requests reach the daemon. kDev: read(2)/writev(2) on /dev/fuse.
// kUring: FUSE over io_uring (uring.hpp), refused when the kernel does not
// offer it. kAuto: io_uring where the kernel offers it, else /dev/fuse.
enum class Transport { kAuto, kUring, kDev };
// "auto", "uring", "dev"; false for anything else.
bool parse_transport(const std::string& s, Transport* out);

struct SessionOptions {
  std::vector<std::string> mount_options;  // "-o" values: allow_other, ...
  std::string fsname = "pcifs";
  // FUSE workers, all kept once started (session.cpp). No worker waits for a
  // device operation (DOE replies and requests behind a transition, reset,
  // capture or quiesce are answered from other threads), so 16 covers 16
  // device accesses in flight at once, more than the parallelism a PCI
  // function's config or BAR path offers, for 16 MiB of request buffers.
  unsigned max_threads = 16;
  bool allow_direct_io_mmap = true;
  Transport transport = Transport::kDev;
  // Ring entries each queue (one per possible CPU) keeps free for new
  // requests; it adds entries while requests wait for a later answer. A burst
  // larger than this while requests wait may queue in the kernel behind them
  // (README "Transports").
  unsigned uring_depth = 32;
};

class Session {
 public:
  // Creates the session and mounts it. On failure returns nullptr and sets
  // *error. `ops`/`userdata` must outlive the Session.
  static std::unique_ptr<Session> mount(const fuse_lowlevel_ops& ops, void* userdata,
                                        const std::string& mountpoint,
                                        const SessionOptions& options, std::string* error);
  // Takes over a connection a previous daemon made (its /dev/fuse fd `fd`,
  // from the service manager's fd store, owned from now on) and serves the
  // mount at `mountpoint` without mounting: the kernel sends no INIT, so
  // `init` (the INIT request the kernel sent the first daemon, init_request())
  // is replayed into libfuse and its reply dropped.
  static std::unique_ptr<Session> adopt(const fuse_lowlevel_ops& ops, void* userdata,
                                        const std::string& mountpoint, int fd,
                                        const std::vector<uint8_t>& init,
                                        const SessionOptions& options, std::string* error);
  ~Session();  // unmounts
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The multi-threaded loop. Returns 0 once the mount is gone or exit() ran;
  // the io_uring queues, if any, are stopped by then.
  int run();
  // Once INIT is answered (wait_for_init) and while run() runs: moves the
  // requests to io_uring as the options ask. False and *error when kUring was
  // asked and the kernel did not offer it or refused the rings; kAuto then
  // stays on /dev/fuse (and says why in the log).
  bool start_transport(std::string* error);
  // "io_uring" or "/dev/fuse": where requests come from now.
  const char* transport() const;
  // Requests that came over io_uring so far (0 on /dev/fuse).
  uint64_t uring_requests() const;
  // Ends the loop from any thread. Call until running() is false: a wake-up
  // sent just before the loop starts waiting is lost.
  void exit();
  // Ends the loop and waits until it has returned (its thread not joined).
  void end_loop();
  bool running() const { return running_.load(); }
  bool started() const { return started_.load(); }
  fuse_session* raw() const { return se_; }
  const std::string& mountpoint() const { return mountpoint_; }
  // Waits until the kernel's INIT has been answered (the loop must run).
  bool wait_for_init(std::chrono::milliseconds timeout) const;
  // For a mount already detached whose connection still lives (a container
  // holds it) and that must end now, with the daemon, or a mount handed to a
  // successor through the fd store (which holds the connection): the
  // destructor then closes the channel without touching the mountpoint path,
  // and keeps the session's memory until exit.
  void disown();
  // The INIT request of this connection (empty until it came).
  std::vector<uint8_t> init_request() const;
  // Asks the kernel to queue again the requests a dead predecessor read and
  // never answered (FUSE_NOTIFY_RESEND, Linux 6.9+). 0, or the errno.
  int resend() const;
  int fd() const { return fuse_session_fd(se_); }
  // Whether the kernel agreed to shared mmap of direct_io files.
  static bool direct_io_mmap_negotiated(fuse_session* se);

 private:
  Session(fuse_session* se, std::string mountpoint, const SessionOptions& options);
  void stop_uring();
  fuse_session* se_;
  std::string mountpoint_;
  unsigned max_threads_ = 16;
  Transport transport_ = Transport::kDev;
  unsigned uring_depth_ = 32;
  mutable std::mutex uring_mu_;
  std::unique_ptr<UringChannel> uring_;  // guarded by uring_mu_
  bool uring_stopped_ = false;           // guarded by uring_mu_: run() ended
  bool disowned_ = false;
  bool adopted_ = false;  // adopt(): the mount is not libfuse's to unmount
  std::atomic<bool> running_{false};
  std::atomic<bool> started_{false};
  std::atomic<pthread_t> loop_thread_{};
};

// The connection settings every pcifs session uses; call from the init op.
// max_readahead 0: a fault on a mapped BAR reads exactly the faulting page.
// Listings are always READDIRPLUS where the filesystem serves it (pcifs does).
void configure_connection(fuse_conn_info* conn);

}  // namespace pcifs::fuse
