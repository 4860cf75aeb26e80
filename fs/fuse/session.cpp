#include "fuse/session.hpp"

#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "fuse/uring.hpp"

namespace pcifs::fuse {
namespace {

// Linux 6.6 include/uapi/linux/fuse.h: FUSE_DIRECT_IO_ALLOW_MMAP is INIT flag
// bit 36, i.e. bit 4 of flags2. Debian's kernel headers predate it.
constexpr uint32_t kFlags2DirectIoAllowMmap = 1u << 4;
// Linux 6.14: FUSE_OVER_IO_URING is bit 41, bit 9 of flags2. The kernel offers
// it only while /sys/module/fuse/parameters/enable_uring is set.
constexpr uint32_t kFlags2OverIoUring = 1u << 9;

// INIT state per /dev/fuse fd. Touched twice per mount, read on every reply
// only while an INIT is outstanding.
struct InitState {
  uint64_t unique = 0;
  bool offered = false;     // the kernel's INIT carried the flag
  bool pending = false;     // our reply is not yet sent
  bool negotiated = false;  // we set it in the reply
  bool wanted = true;
  bool replied = false;  // INIT answered: negotiation is over
  bool offered_uring = false;
  bool wanted_uring = false;
  bool negotiated_uring = false;
  bool written = false;  // our patched reply reached the kernel
  uint32_t max_write = 0;
  uint32_t max_pages = 0;
  // The INIT request as the kernel sent it: a successor replays it (adopt()).
  std::vector<uint8_t> request;
};

// The unique of a replayed INIT: the kernel's are even and far below it
// (FUSE_UNIQUE_RESEND is bit 63), and its reply is never written.
constexpr uint64_t kReplayUnique = uint64_t{1} << 62;
std::mutex g_init_mu;
std::map<int, InitState> g_init;
std::atomic<int> g_init_pending{0};

void note_init_request(int fd, const void* buf, size_t len) {
  if (len < sizeof(fuse_in_header)) return;
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof in);
  if (in.opcode != FUSE_INIT) return;
  fuse_init_in init{};
  std::memcpy(&init, static_cast<const char*>(buf) + sizeof in,
              std::min(sizeof init, len - sizeof in));
  const bool ext = (init.flags & FUSE_INIT_EXT) != 0 &&
                   len >= sizeof in + offsetof(fuse_init_in, flags2) + sizeof(uint32_t);
  std::lock_guard lock(g_init_mu);
  InitState& s = g_init[fd];
  s.unique = in.unique;
  s.request.assign(static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + len);
  s.offered = ext && (init.flags2 & kFlags2DirectIoAllowMmap) != 0;
  s.offered_uring = ext && (init.flags2 & kFlags2OverIoUring) != 0;
  s.pending = true;
  g_init_pending.fetch_add(1);
}

// Makes every page of a worker's request buffer present and writable, once
// per buffer. The kernel copies a request into it page by page; a page not
// yet there must be faulted in, and a fault fails while the daemon is being
// killed -- and the kernel then ends that request with EIO instead of leaving
// it for the successor to be resent (fuse_dev_do_read). A writeback of a
// mapped BAR page is the request that first reaches past a buffer's first
// page: before this, one in a few hundred kill -9 restarts gave the BAR's
// next caller EIO (mount.restart_test). libfuse keeps one buffer per worker.
void prefault(void* buf, size_t len) {
  thread_local void* done = nullptr;
  thread_local size_t done_len = 0;
  if (buf == done && len <= done_len) return;
  const auto page = static_cast<size_t>(getpagesize());
  auto* p = static_cast<volatile char*>(buf);
  for (size_t off = 0; off < len; off += page) p[off] = 0;
  p[len - 1] = 0;
  done = buf;
  done_len = len;
}

// Not noexcept: libfuse cancels workers blocked in this read at shutdown.
ssize_t channel_read(int fd, void* buf, size_t len, void*) {
  if (len != 0) prefault(buf, len);
  ssize_t n = ::read(fd, buf, len);
  // Every message's opcode is looked at (no lock unless it is INIT): with
  // several views, several sessions' INITs may be outstanding at once.
  if (n > 0) note_init_request(fd, buf, static_cast<size_t>(n));
  return n;
}

enum class InitReply { kOther, kPatched, kReplayed };

// kPatched fills `out` when this reply is the INIT reply to patch; kReplayed:
// the reply to a replayed INIT, which the kernel must not see.
InitReply patch_init_reply(int fd, const iovec* iov, int count, std::vector<char>* out) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return InitReply::kOther;
  fuse_out_header oh;
  std::memcpy(&oh, iov[0].iov_base, sizeof oh);
  std::lock_guard lock(g_init_mu);
  auto it = g_init.find(fd);
  if (it == g_init.end() || !it->second.pending || it->second.unique != oh.unique) {
    return InitReply::kOther;
  }
  InitState& s = it->second;
  s.pending = false;
  s.replied = true;
  g_init_pending.fetch_sub(1);
  const InitReply done = oh.unique == kReplayUnique ? InitReply::kReplayed : InitReply::kOther;
  // The replayed reply is patched too: negotiated() says what the kernel
  // agreed to with the first daemon, which made the same reply.
  const bool mmap_bit = s.offered && s.wanted;
  // Never for a replayed INIT: a connection taken over stays on /dev/fuse.
  const bool uring_bit = s.offered_uring && s.wanted_uring && done != InitReply::kReplayed;
  if ((!mmap_bit && !uring_bit) || oh.error != 0) return done;
  for (int i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    out->insert(out->end(), p, p + iov[i].iov_len);
  }
  constexpr size_t kFlags2 = sizeof(fuse_out_header) + offsetof(fuse_init_out, flags2);
  constexpr size_t kFlags = sizeof(fuse_out_header) + offsetof(fuse_init_out, flags);
  if (out->size() < kFlags2 + sizeof(uint32_t)) return done;
  uint32_t flags = 0, flags2 = 0;
  std::memcpy(&flags, out->data() + kFlags, sizeof flags);
  std::memcpy(&flags2, out->data() + kFlags2, sizeof flags2);
  flags |= FUSE_INIT_EXT;
  if (mmap_bit) flags2 |= kFlags2DirectIoAllowMmap;
  if (uring_bit) flags2 |= kFlags2OverIoUring;
  std::memcpy(out->data() + kFlags, &flags, sizeof flags);
  std::memcpy(out->data() + kFlags2, &flags2, sizeof flags2);
  s.negotiated = mmap_bit;
  s.negotiated_uring = uring_bit;
  constexpr size_t kMaxWrite = sizeof(fuse_out_header) + offsetof(fuse_init_out, max_write);
  constexpr size_t kMaxPages = sizeof(fuse_out_header) + offsetof(fuse_init_out, max_pages);
  std::memcpy(&s.max_write, out->data() + kMaxWrite, sizeof s.max_write);
  uint16_t pages = 0;
  std::memcpy(&pages, out->data() + kMaxPages, sizeof pages);
  s.max_pages = pages;
  return done == InitReply::kReplayed ? done : InitReply::kPatched;
}

ssize_t reply_size(const iovec* iov, int count) {
  ssize_t n = 0;
  for (int i = 0; i < count; ++i) n += static_cast<ssize_t>(iov[i].iov_len);
  return n;
}

ssize_t channel_writev(int fd, iovec* iov, int count, void*) {
  if (g_init_pending.load() != 0) {
    std::vector<char> patched;
    switch (patch_init_reply(fd, iov, count, &patched)) {
      case InitReply::kPatched: {
        const ssize_t n = ::write(fd, patched.data(), patched.size());
        std::lock_guard lock(g_init_mu);
        g_init[fd].written = n >= 0;
        return n;
      }
      case InitReply::kReplayed: return reply_size(iov, count);
      case InitReply::kOther: break;
    }
  }
  // A reply to a request that came over io_uring goes back over it.
  if (UringChannel::route(fd, iov, count)) return reply_size(iov, count);
  return ::writev(fd, iov, count);
}

void on_wake_signal(int) {}

void install_wake_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_wake_signal;  // no SA_RESTART: interrupts the loop's sem_wait
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, nullptr);
  });
}

}  // namespace

namespace {

fuse_session* new_session(const fuse_lowlevel_ops& ops, void* userdata,
                          const SessionOptions& options, std::string* error) {
  std::vector<std::string> argv_s = {options.fsname, "-o",
                                     "fsname=" + options.fsname + ",subtype=" + options.fsname};
  for (const auto& o : options.mount_options) {
    argv_s.push_back("-o");
    argv_s.push_back(o);
  }
  std::vector<char*> argv;
  argv.reserve(argv_s.size());
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, userdata);
  // fuse_session_new's option parser leaves an allocated copy of the
  // arguments in `args` (LeakSanitizer: fuse_opt_add_arg); nothing keeps it.
  fuse_opt_free_args(&args);
  if (!se) *error = "bad FUSE options";
  return se;
}

// Whether io_uring with 128-byte SQEs works here (not disabled by
// kernel.io_uring_disabled, a seccomp filter or the kernel's age). Asked once.
bool uring_usable() {
  static const bool usable = [] {
    io_uring ring;
    if (io_uring_queue_init(4, &ring, IORING_SETUP_SQE128) != 0) return false;
    io_uring_queue_exit(&ring);
    return true;
  }();
  return usable;
}

// Our channel on the session's fd; false (and *error) when libfuse refused.
bool install_channel(fuse_session* se, const SessionOptions& options, std::string* error) {
  const int fd = fuse_session_fd(se);
  {
    std::lock_guard lock(g_init_mu);
    g_init[fd].wanted = options.allow_direct_io_mmap;
    // Asked for only where this process can make the rings: once INIT says
    // io_uring, the kernel holds every request until each queue has an entry.
    g_init[fd].wanted_uring = options.transport != Transport::kDev && uring_usable();
  }
  static const fuse_custom_io kIo = {channel_writev, channel_read, nullptr, nullptr};
  if (fuse_session_custom_io(se, &kIo, fd) != 0) {
    *error = "cannot install the FUSE channel";
    return false;
  }
  install_wake_handler();
  return true;
}

}  // namespace

std::unique_ptr<Session> Session::mount(const fuse_lowlevel_ops& ops, void* userdata,
                                        const std::string& mountpoint,
                                        const SessionOptions& options, std::string* error) {
  fuse_session* se = new_session(ops, userdata, options, error);
  if (!se) return nullptr;
  if (fuse_session_mount(se, mountpoint.c_str()) != 0) {
    fuse_session_destroy(se);
    *error = "cannot mount " + mountpoint;
    return nullptr;
  }
  if (!install_channel(se, options, error)) {
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return nullptr;
  }
  return std::unique_ptr<Session>(new Session(se, mountpoint, options));
}

std::unique_ptr<Session> Session::adopt(const fuse_lowlevel_ops& ops, void* userdata,
                                        const std::string& mountpoint, int fd,
                                        const std::vector<uint8_t>& init,
                                        const SessionOptions& options, std::string* error) {
  if (init.size() < sizeof(fuse_in_header) + sizeof(uint32_t) * 2) {
    *error = "no INIT request recorded";
    return nullptr;
  }
  fuse_in_header in;
  std::memcpy(&in, init.data(), sizeof in);
  if (in.opcode != FUSE_INIT || in.len != init.size()) {
    *error = "the recorded INIT request is not one";
    return nullptr;
  }
  fuse_session* se = new_session(ops, userdata, options, error);
  if (!se) return nullptr;
  // libfuse takes "/dev/fd/N" as an fd already connected: no mount(2).
  const std::string dev = "/dev/fd/" + std::to_string(fd);
  if (fuse_session_mount(se, dev.c_str()) != 0) {
    fuse_session_destroy(se);
    *error = "cannot take over the FUSE connection (fd " + std::to_string(fd) + ")";
    return nullptr;
  }
  auto s = std::unique_ptr<Session>(new Session(se, mountpoint, options));
  s->adopted_ = true;
  if (!install_channel(se, options, error)) {
    s->disown();  // closes our fd only: the mount and the store's fd stay
    return nullptr;
  }
  // The kernel answered INIT with the first daemon; this session's libfuse
  // must see one too before it takes any other request. Replay the recorded
  // request with a unique the kernel never uses; its reply is swallowed.
  std::vector<uint8_t> msg = init;
  in.unique = kReplayUnique;
  std::memcpy(msg.data(), &in, sizeof in);
  note_init_request(fd, msg.data(), msg.size());
  fuse_buf buf{};
  buf.mem = msg.data();
  buf.size = msg.size();
  fuse_session_process_buf(se, &buf);
  if (!s->wait_for_init(std::chrono::milliseconds(0))) {
    *error = "libfuse did not take the replayed INIT";
    s->disown();
    return nullptr;
  }
  return s;
}

std::vector<uint8_t> Session::init_request() const {
  std::lock_guard lock(g_init_mu);
  auto it = g_init.find(fuse_session_fd(se_));
  return it == g_init.end() ? std::vector<uint8_t>{} : it->second.request;
}

int Session::resend() const {
  // FUSE_NOTIFY_RESEND (Linux 6.9, include/uapi/linux/fuse.h: 7): the kernel
  // queues again every request the connection's previous reader took and
  // never answered, its unique marked with bit 63.
  constexpr int32_t kNotifyResend = 7;
  fuse_out_header oh{sizeof oh, kNotifyResend, 0};
  if (::write(fuse_session_fd(se_), &oh, sizeof oh) == static_cast<ssize_t>(sizeof oh)) return 0;
  return errno;
}

namespace {
// Sessions given up by disown(): still reachable, so that a leak checker at
// exit does not count them; the process is about to end.
// Never destroyed: a static vector's destructor would run before the leak
// checker looks.
std::mutex g_disowned_mu;
auto* const g_disowned = new std::vector<fuse_session*>;
}  // namespace

void Session::disown() { disowned_ = true; }

Session::Session(fuse_session* se, std::string mountpoint, const SessionOptions& options)
    : se_(se),
      mountpoint_(std::move(mountpoint)),
      max_threads_(options.max_threads),
      transport_(options.transport),
      uring_depth_(options.uring_depth) {}

Session::~Session() {
  // The rings first: their entries hold the device file, and no handler may
  // run once the owner has freed what they use.
  stop_uring();
  const int fd = fuse_session_fd(se_);
  if (disowned_) {
    // fuse_session_unmount would umount2() the mountpoint *path*, where
    // something else may be mounted by now, and fuse_session_destroy cannot
    // free the path without it. Closing the fd ends the connection.
    ::close(fd);
    std::lock_guard lock(g_disowned_mu);
    g_disowned->push_back(se_);
  } else {
    // An adopted session has no mountpoint of libfuse's to unmount: the
    // mount was made by a predecessor. Detach it by path, as libfuse would.
    if (adopted_ && ::umount2(mountpoint_.c_str(), MNT_DETACH) != 0 && errno != EINVAL &&
        errno != ENOENT) {
      spdlog::warn("{}: cannot detach: {}", mountpoint_, std::strerror(errno));
    }
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
  }
  std::lock_guard lock(g_init_mu);
  auto it = g_init.find(fd);
  if (it != g_init.end()) {
    if (it->second.pending) g_init_pending.fetch_sub(1);
    g_init.erase(it);
  }
}

int Session::run() {
  loop_thread_.store(pthread_self());
  running_.store(true);
  started_.store(true);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  // Workers are kept, never churned: libfuse 3.14 ends a worker whenever more
  // than `idle` are idle and starts one (with a max_write-sized buffer, 1 MiB)
  // whenever none is, so an idle limit below max_threads makes a burst of
  // readers create and destroy threads per request. With idle == max the pool
  // grows to the peak concurrency once and stays (at most max_threads
  // buffers). No setting can starve the kernel's writeback of dirty mapped BAR
  // pages, which a quiesce waits for: a worker never waits for a device
  // operation (Mediator::try_read/try_write; those requests run on the
  // device's lane, deferred.hpp), only for its own single device access, so
  // with any max_threads >= 1 a worker comes free for the writeback.
  fuse_loop_cfg_set_max_threads(cfg, max_threads_);
  fuse_loop_cfg_set_idle_threads(cfg, max_threads_);
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  const int rc = fuse_session_loop_mt(se_, cfg);
  fuse_loop_cfg_destroy(cfg);
  // The rings end with the loop: whoever ended it frees the handlers' state
  // next (ViewHost::stop), and a request the rings hold then is answered by
  // the unmount (ECONNABORTED), as one left on /dev/fuse is.
  stop_uring();
  running_.store(false);
  return rc;
}

void Session::stop_uring() {
  std::unique_ptr<UringChannel> ring;
  {
    std::lock_guard lock(uring_mu_);
    uring_stopped_ = true;
    ring = std::move(uring_);
  }
  if (ring) {
    spdlog::debug("{}: io_uring stopped after {} requests", mountpoint_, ring->requests());
  }
}

bool Session::start_transport(std::string* error) {
  if (transport_ == Transport::kDev) return true;
  const int fd = fuse_session_fd(se_);
  bool offered = false, negotiated = false;
  size_t payload = 0;
  // The kernel takes ring entries only once it has processed our INIT reply.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    {
      std::lock_guard lock(g_init_mu);
      auto it = g_init.find(fd);
      if (it != g_init.end() && it->second.replied) {
        const InitState& s = it->second;
        offered = s.offered_uring;
        negotiated = s.negotiated_uring;
        // dev_uring.c: the payload must hold max(8 KiB, max_write, max_pages pages).
        payload = std::max<size_t>(
            {8192, s.max_write, size_t{s.max_pages} * static_cast<size_t>(getpagesize())});
        if (!negotiated || s.written) break;
      }
    }
    if (std::chrono::steady_clock::now() >= end) {
      *error = "the INIT reply was not taken";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::string why;
  if (!negotiated) {
    why = adopted_  ? "a connection taken over from a previous daemon stays on /dev/fuse"
          : offered ? "not asked for"
                    : "the kernel does not offer FUSE over io_uring (Linux 6.14+ with "
                      "/sys/module/fuse/parameters/enable_uring=Y)";
  } else {
    std::lock_guard lock(uring_mu_);
    if (uring_stopped_) return true;  // the loop already ended
    uring_ = UringChannel::start(se_, fd, uring_depth_, payload, &why);
    if (uring_) {
      spdlog::info("{}: requests over io_uring ({} queues x {} entries)", mountpoint_,
                   uring_->queues(), uring_->depth());
      return true;
    }
  }
  if (transport_ == Transport::kUring) {
    *error = "--transport=uring: " + why;
    return false;
  }
  spdlog::info("{}: requests over /dev/fuse ({})", mountpoint_, why);
  return true;
}

const char* Session::transport() const {
  std::lock_guard lock(uring_mu_);
  return uring_ ? "io_uring" : "/dev/fuse";
}

uint64_t Session::uring_requests() const {
  std::lock_guard lock(uring_mu_);
  return uring_ ? uring_->requests() : 0;
}

bool parse_transport(const std::string& s, Transport* out) {
  if (s == "auto") {
    *out = Transport::kAuto;
  } else if (s == "uring") {
    *out = Transport::kUring;
  } else if (s == "dev") {
    *out = Transport::kDev;
  } else {
    return false;
  }
  return true;
}

void Session::exit() {
  fuse_session_exit(se_);
  // The loop's main thread waits in sem_wait for a worker to see the exit; a
  // signal interrupts that wait, it sees the flag and cancels the workers.
  if (running_.load()) pthread_kill(loop_thread_.load(), SIGUSR2);
}

// The wake-up signal is repeated (the first may come just before the loop's
// thread waits), but only every 25 ms: one that lands while the loop joins its
// workers is wasted, and under TSan harmful -- its runtime can deadlock on a
// signal that arrives inside its free() of a joined thread's stack.
void Session::end_loop() {
  constexpr auto kResend = std::chrono::milliseconds(25);
  auto next = std::chrono::steady_clock::now();
  while (running()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next) {
      exit();
      next = now + kResend;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool Session::wait_for_init(std::chrono::milliseconds timeout) const {
  const auto end = std::chrono::steady_clock::now() + timeout;
  const int fd = fuse_session_fd(se_);
  for (;;) {
    {
      std::lock_guard lock(g_init_mu);
      auto it = g_init.find(fd);
      if (it != g_init.end() && it->second.replied) return true;
    }
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool Session::direct_io_mmap_negotiated(fuse_session* se) {
  std::lock_guard lock(g_init_mu);
  auto it = g_init.find(fuse_session_fd(se));
  return it != g_init.end() && it->second.negotiated;
}

void configure_connection(fuse_conn_info* conn) {
  conn->max_readahead = 0;
  // READDIRPLUS for every page of a listing, not only the first: lspci and
  // `ls -l` list a directory, then look up each name it gave; with the
  // attributes in the listing the kernel asks nothing more (a few more
  // READDIR pages, instead of one LOOKUP per entry).
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                                       FUSE_CAP_SPLICE_MOVE | FUSE_CAP_READDIRPLUS_AUTO);
  conn->max_write = 1u << 20;
}

}  // namespace pcifs::fuse
