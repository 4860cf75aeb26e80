// The floor filesystem (see floor_fs.hpp): a fixed inode table, memory behind
// every file, and the same open flags pcifs sets, so a request costs only the
// FUSE round trip, the loop and a memcpy.
#include "floor_fs.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fuse/daemon.hpp"
#include "fuse/session.hpp"

namespace pcifs::bench {
namespace {

enum Ino : fuse_ino_t {
  kRoot = FUSE_ROOT_ID,
  kDevices,
  kDevice,
  kConfig,
  kResource0,
  kResource2,
  kDoe,
  kPowerState,
  kStats,
  kInoEnd,
};

struct NodeInfo {
  fuse_ino_t parent;
  const char* name;
  mode_t mode;
  off_t size;
};

// Indexed by inode number. Modes and sizes as pcifs's default view shows them.
constexpr std::array<NodeInfo, kInoEnd> kNodes = {{
    {0, "", 0, 0},
    {kRoot, "", S_IFDIR | 0555, 0},
    {kRoot, "devices", S_IFDIR | 0555, 0},
    {kDevices, "0000:01:00.0", S_IFDIR | 0555, 0},
    {kDevice, "config", S_IFREG | 0644, 4096},
    {kDevice, "resource0", S_IFREG | 0600, 1 << 20},
    {kDevice, "resource2", S_IFREG | 0600, 64 << 10},
    {kDevice, "doe", S_IFREG | 0666, 0},
    {kDevice, "power_state", S_IFREG | 0644, 4096},
    {kRoot, ".floor_stats", S_IFREG | 0444, 4096},
}};

// pcifs's attribute and entry timeout (fs/fuse/ops_tree.cpp).
constexpr double kTimeout = 60.0;

struct Floor {
  fuse_session* se = nullptr;
  pcifs::fuse::Session* session = nullptr;  // set before the loop starts
  std::array<uint8_t, 4096> config{};
  // BAR memory: concurrent pread/pwrite of one BAR must not race.
  std::mutex bar_mu;
  std::vector<uint8_t> bar0 = std::vector<uint8_t>(1 << 20);
  std::vector<uint8_t> bar2 = std::vector<uint8_t>(64 << 10);
  std::atomic<uint64_t> r0_reads{0};
  std::atomic<uint64_t> r0_max_read{0};
};

// One DOE handle: the object last written, returned by the next read(s).
struct DoeHandle {
  std::mutex mu;
  std::vector<char> object;
};

// fuse_file_info::fh carries the handle's address, as in pcifs.
DoeHandle* handle_of(const fuse_file_info* fi) {
  return reinterpret_cast<DoeHandle*>(fi->fh);  // NOLINT(performance-no-int-to-ptr)
}

Floor& floor_of(fuse_req_t req) { return *static_cast<Floor*>(fuse_req_userdata(req)); }

struct stat stat_of(fuse_ino_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = kNodes[ino].mode;
  st.st_nlink = S_ISDIR(kNodes[ino].mode) ? 2 : 1;
  st.st_size = kNodes[ino].size;
  st.st_blksize = 4096;
  return st;
}

std::vector<uint8_t>* bar_of(Floor& f, fuse_ino_t ino) {
  if (ino == kResource0) return &f.bar0;
  if (ino == kResource2) return &f.bar2;
  return nullptr;
}

void op_init(void*, fuse_conn_info* conn) noexcept { pcifs::fuse::configure_connection(conn); }

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  for (fuse_ino_t ino = kDevices; ino < kInoEnd; ++ino) {
    if (kNodes[ino].parent == parent && std::strcmp(kNodes[ino].name, name) == 0) {
      fuse_entry_param e{};
      e.ino = ino;
      e.attr = stat_of(ino);
      e.attr_timeout = kTimeout;
      e.entry_timeout = kTimeout;
      fuse_reply_entry(req, &e);
      return;
    }
  }
  fuse_reply_err(req, ENOENT);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  if (ino == 0 || ino >= kInoEnd) return void(fuse_reply_err(req, ENOENT));
  const struct stat st = stat_of(ino);
  fuse_reply_attr(req, &st, kTimeout);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  if (ino < kConfig || ino >= kInoEnd) return void(fuse_reply_err(req, EISDIR));
  // The flags pcifs sets (fs/fuse/ops_file.cpp): direct_io on every device
  // file but rom, doe nonseekable.
  fi->direct_io = 1;
  fi->keep_cache = 0;
  fi->nonseekable = ino == kDoe ? 1 : 0;
  fi->fh = 0;
  if (ino == kDoe) {
    auto h = std::make_unique<DoeHandle>();
    fi->fh = reinterpret_cast<uint64_t>(h.get());
    if (fuse_reply_open(req, fi) == 0) (void)h.release();  // the kernel owns it now
    return;
  }
  fuse_reply_open(req, fi);
}

void reply_slice(fuse_req_t req, const char* data, size_t len, size_t size, off_t off) {
  const size_t start = std::min(len, static_cast<size_t>(off));
  fuse_reply_buf(req, data + start, std::min(size, len - start));
}

void read_doe(fuse_req_t req, fuse_file_info* fi, size_t size) {
  auto* h = handle_of(fi);
  std::vector<char> out;
  {
    std::lock_guard lock(h->mu);
    if (h->object.empty()) return void(fuse_reply_err(req, EAGAIN));
    const size_t n = std::min(size, h->object.size());
    out.assign(h->object.begin(), h->object.begin() + static_cast<std::ptrdiff_t>(n));
    h->object.erase(h->object.begin(), h->object.begin() + static_cast<std::ptrdiff_t>(n));
  }
  fuse_reply_buf(req, out.data(), out.size());
}

void read_bar(fuse_req_t req, Floor& f, fuse_ino_t ino, size_t size, off_t off) {
  if (ino == kResource0) {
    f.r0_reads.fetch_add(1, std::memory_order_relaxed);
    uint64_t seen = f.r0_max_read.load(std::memory_order_relaxed);
    while (size > seen && !f.r0_max_read.compare_exchange_weak(seen, size)) {
    }
  }
  // Copied out under the lock and replied outside it, as pcifs does.
  const std::vector<uint8_t>& bar = *bar_of(f, ino);
  thread_local std::vector<uint8_t> buf;
  const size_t start = std::min(bar.size(), static_cast<size_t>(off));
  const size_t n = std::min(size, bar.size() - start);
  if (buf.size() < n) buf.resize(n);
  {
    std::lock_guard lock(f.bar_mu);
    std::memcpy(buf.data(), bar.data() + start, n);
  }
  fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), n);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  Floor& f = floor_of(req);
  switch (ino) {
    case kConfig:
      return reply_slice(req, reinterpret_cast<const char*>(f.config.data()), f.config.size(), size,
                         off);
    case kResource0:
    case kResource2: return read_bar(req, f, ino, size, off);
    case kDoe: return read_doe(req, fi, size);
    case kPowerState: return reply_slice(req, "D0\n", 3, size, off);
    case kStats: {
      char line[192];
      const int n = std::snprintf(
          line, sizeof line,
          "resource0_reads %llu resource0_max_read %llu transport %s uring_requests %llu\n",
          static_cast<unsigned long long>(f.r0_reads.load()),
          static_cast<unsigned long long>(f.r0_max_read.load()), f.session->transport(),
          static_cast<unsigned long long>(f.session->uring_requests()));
      return reply_slice(req, line, static_cast<size_t>(n), size, off);
    }
    default: fuse_reply_err(req, EISDIR);
  }
}

// The floor's quiesce: drop every resource mapping, as pcifs's revoker does.
void quiesce(Floor& f) {
  for (fuse_ino_t ino : {kResource0, kResource2}) {
    const int rc = fuse_lowlevel_notify_inval_inode(f.se, ino, 0, 0);
    if (rc != 0 && rc != -ENOENT) std::fprintf(stderr, "floor: inval_inode: %d\n", rc);
  }
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) noexcept {
  Floor& f = floor_of(req);
  if (ino == kResource0 || ino == kResource2) {
    std::vector<uint8_t>& bar = *bar_of(f, ino);
    if (static_cast<size_t>(off) >= bar.size()) return void(fuse_reply_err(req, ENXIO));
    const size_t n = std::min(size, bar.size() - static_cast<size_t>(off));
    {
      std::lock_guard lock(f.bar_mu);
      std::memcpy(bar.data() + off, buf, n);
    }
    return void(fuse_reply_write(req, n));
  }
  if (ino == kDoe) {
    auto* h = handle_of(fi);
    std::lock_guard lock(h->mu);
    h->object.assign(buf, buf + size);
    return void(fuse_reply_write(req, size));
  }
  if (ino == kPowerState) {
    if (size >= 2 && std::memcmp(buf, "D3", 2) == 0) quiesce(f);
    return void(fuse_reply_write(req, size));
  }
  fuse_reply_err(req, EACCES);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  if (ino == kDoe) delete handle_of(fi);
  fuse_reply_err(req, 0);
}

// Mirrors pcifs's op_poll (which exists for doe): a mount with a poll handler
// makes the kernel send FUSE_POLL for every file polled, io_uring's reads
// included, so the floor answers them too unless --floor-no-poll.
void op_poll(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, fuse_pollhandle* ph) noexcept {
  if (ph) fuse_pollhandle_destroy(ph);  // nothing is ever pending: no wake-up to send
  unsigned events = POLLOUT | POLLWRNORM;
  if (ino != kDoe) {
    events |= POLLIN | POLLRDNORM;
  } else {
    auto* h = handle_of(fi);
    std::lock_guard lock(h->mu);
    if (!h->object.empty()) events |= POLLIN | POLLRDNORM;
  }
  fuse_reply_poll(req, events);
}

// Accepted and ignored, as pcifs does for O_TRUNC on device files.
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat*, int, fuse_file_info*) noexcept {
  op_getattr(req, ino, nullptr);
}

fuse_lowlevel_ops floor_ops(bool with_poll) {
  fuse_lowlevel_ops o{};
  o.init = op_init;
  o.lookup = op_lookup;
  o.getattr = op_getattr;
  o.setattr = op_setattr;
  o.open = op_open;
  o.read = op_read;
  o.write = op_write;
  o.release = op_release;
  if (with_poll) o.poll = op_poll;
  return o;
}

// Serves until a stop signal or an external unmount ends the loop.
void wait_for_end(pcifs::fuse::Session& s) {
  const sigset_t set = pcifs::fuse::stop_signals();
  bool stopping = false;
  while (s.running()) {
    if (stopping) s.exit();
    const timespec tick{0, 50L * 1000 * 1000};
    if (sigtimedwait(&set, nullptr, &tick) > 0) stopping = true;
  }
}

// Moves the requests to io_uring when asked, before any is served: once INIT
// promised io_uring, the kernel holds every request until the rings are up.
bool start_transport(pcifs::fuse::Session& s, bool uring) {
  std::string error;
  if (!s.wait_for_init(std::chrono::seconds(10))) {
    error = "the kernel's INIT was not answered";
  } else if (s.start_transport(&error)) {
    const char* want = uring ? "io_uring" : "/dev/fuse";
    if (std::strcmp(s.transport(), want) == 0) return true;
    error = std::string("asked for ") + want + ", serving over " + s.transport();
  }
  std::fprintf(stderr, "floor: %s\n", error.c_str());
  return false;
}

}  // namespace

int run_floor(const std::string& mountpoint, bool with_poll, bool uring) {
  const sigset_t set = pcifs::fuse::stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread: all inherit it
  Floor floor;
  for (size_t i = 0; i < floor.config.size(); ++i) floor.config[i] = static_cast<uint8_t>(i);
  pcifs::fuse::SessionOptions so;
  so.fsname = kFloorFsName;
  so.transport = uring ? pcifs::fuse::Transport::kUring : pcifs::fuse::Transport::kDev;
  if (geteuid() == 0) so.mount_options.push_back("allow_other");  // as pcifs does as root
  std::string error;
  const fuse_lowlevel_ops ops = floor_ops(with_poll);
  auto session = pcifs::fuse::Session::mount(ops, &floor, mountpoint, so, &error);
  if (!session) {
    std::fprintf(stderr, "floor: %s\n", error.c_str());
    return 1;
  }
  floor.se = session->raw();
  floor.session = session.get();
  std::thread loop([s = session.get()] { s->run(); });
  while (!session->started()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool serving = start_transport(*session, uring);
  if (serving) wait_for_end(*session);
  while (session->running()) {
    session->exit();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  loop.join();
  session.reset();  // unmounts
  return serving ? 0 : 1;
}

}  // namespace pcifs::bench
