#include "fuse/uring.hpp"

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

namespace pcifs::fuse {
namespace {

// include/uapi/linux/fuse.h, protocol 7.42 (Linux 6.14). Debian's kernel
// headers predate it; the layout is the kernel's ABI.
constexpr size_t kInOutHeaderSize = 128;
constexpr size_t kOpInOutSize = 128;
struct RingEntInOut {
  uint64_t flags;
  uint64_t commit_id;  // the request's unique, echoed in the commit
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};
struct RingReqHeader {
  char in_out[kInOutHeaderSize];  // fuse_in_header in, fuse_out_header out
  char op_in[kOpInOutSize];       // the request's first argument (its op header)
  RingEntInOut ring_ent_in_out;
};
static_assert(sizeof(RingReqHeader) == 288);
struct RingCmdReq {  // in the SQE's 80-byte command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingCmdReq) == 24);
constexpr uint32_t kCmdRegister = 1;
constexpr uint32_t kCmdCommitAndFetch = 2;
constexpr size_t kSqeCmdArea = 80;

// Room in front of each entry's payload for the fuse_in_header and the op
// header, so that a request is one contiguous buffer for libfuse without
// copying its payload (a write's data stays where the kernel put it).
constexpr size_t kPrefix = 4096;
constexpr uint64_t kWakeTag = ~uint64_t{0};
// At most this many entries per queue (requests a queue holds at once, those
// waiting for a later answer included); past it the kernel queues requests
// until an entry comes back.
constexpr size_t kMaxEntries = 1024;

// Who holds an entry. kKernel: registered, waiting for a request (or being
// committed). kProcessing: the queue's thread is in the handler. kWaiting: the
// handler returned without a reply; another thread will answer. kReplied:
// another thread answered (into `late`); the queue's thread commits it.
enum class State : int { kKernel, kProcessing, kWaiting, kReplied };

struct Queue;

struct Entry {
  Queue* queue = nullptr;
  RingReqHeader* headers = nullptr;  // page-aligned, its own mapping
  uint8_t* region = nullptr;         // kPrefix + payload_cap, one mapping
  size_t payload_cap = 0;
  iovec iov[2]{};
  std::atomic<uint64_t> unique{0};  // the request it holds, 0 when none
  std::atomic<State> state{State::kKernel};
  std::mutex mu;           // guards `late`
  std::vector<char> late;  // a reply made on another thread
  bool live = false;       // registered and not cancelled (queue's thread only)
  uint8_t* payload() const { return region + kPrefix; }
};

struct Current {
  Entry* entry = nullptr;
  uint64_t unique = 0;
  bool replied = false;
};
// The request the queue thread is handling: its reply, made on this thread,
// goes straight into the entry, without a lock.
thread_local Current tl_current;

size_t payload_bytes(const iovec* iov, int count) {
  size_t n = iov[0].iov_len - sizeof(fuse_out_header);
  for (int i = 1; i < count; ++i) n += iov[i].iov_len;
  return n;
}

// Gathers everything after the fuse_out_header into `dst`.
void gather_payload(const iovec* iov, int count, uint8_t* dst) {
  const size_t head = iov[0].iov_len - sizeof(fuse_out_header);
  std::memcpy(dst, static_cast<const uint8_t*>(iov[0].iov_base) + sizeof(fuse_out_header), head);
  dst += head;
  for (int i = 1; i < count; ++i) {
    std::memcpy(dst, iov[i].iov_base, iov[i].iov_len);
    dst += iov[i].iov_len;
  }
}

// Writes a reply into the entry's header and payload (queue's thread, or the
// thread handling the request on it). One that does not fit becomes EIO.
void fill_entry(Entry& e, fuse_out_header oh, const uint8_t* payload, size_t n) {
  if (n > e.payload_cap) {
    spdlog::error("io_uring: a reply of {} bytes does not fit the ring's {}", n, e.payload_cap);
    oh.error = -EIO;
  }
  if (oh.error != 0) n = 0;
  oh.len = static_cast<uint32_t>(sizeof oh + n);
  std::memcpy(e.headers->in_out, &oh, sizeof oh);
  if (n != 0 && payload != e.payload()) std::memmove(e.payload(), payload, n);
  e.headers->ring_ent_in_out.payload_sz = static_cast<uint32_t>(n);
}

struct Queue {
  UringChannel::Impl* ch = nullptr;
  unsigned qid = 0;
  io_uring ring{};
  bool ring_ok = false;
  int wake_fd = -1;
  uint64_t wake_buf = 0;
  // The entries, for other threads to find a request's (route): slots[0, n)
  // are set, and an entry lives as long as the channel. The queue's thread
  // adds one whenever a handler keeps a request to answer later and fewer
  // than `depth` are left for the kernel's next requests: a request answered
  // later holds its entry as long as it waits (a DOE response, a read behind
  // a stuck reset), and those must never starve the other devices' callers
  // (mount_uring.no_park_test).
  std::unique_ptr<std::atomic<Entry*>[]> slots;
  std::atomic<size_t> nslots{0};
  std::vector<std::unique_ptr<Entry>> owned;  // the queue's thread, then the destructor
  unsigned available = 0;                     // entries the kernel holds for requests
  std::mutex mu;                              // guards to_commit
  std::vector<Entry*> to_commit;              // answered on other threads
  std::thread thread;
  std::atomic<uint64_t> requests{0};
  std::promise<int> registered;  // 0, or the errno the kernel refused with

  void run();
  bool setup(std::string* why);
  Entry* add_entry();
  int init_ring();
  io_uring_sqe* next_sqe();
  void prep_cmd(Entry& e, uint32_t op, uint64_t commit_id);
  void arm_wake();
  void handle(Entry& e);
  void commit(Entry& e);
  void commit_late(Entry& e);
  void drain_commits();
};

}  // namespace

struct UringChannel::Impl {
  fuse_session* se = nullptr;
  int fd = -1;
  unsigned depth = 0;
  size_t payload = 0;
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Queue>> queues;
};

namespace {

std::shared_mutex g_mu;
std::map<int, UringChannel::Impl*> g_channels;  // by /dev/fuse fd
std::atomic<int> g_count{0};

void late_reply(Entry& e, const iovec* iov, int count) {
  std::vector<char> buf(sizeof(fuse_out_header) + payload_bytes(iov, count));
  std::memcpy(buf.data(), iov[0].iov_base, sizeof(fuse_out_header));
  gather_payload(iov, count, reinterpret_cast<uint8_t*>(buf.data() + sizeof(fuse_out_header)));
  {
    std::lock_guard lock(e.mu);
    e.late = std::move(buf);
  }
  for (;;) {
    State s = e.state.load();
    if (s == State::kProcessing) {
      // The queue's thread is still in the handler: it sees kReplied when the
      // handler returns and commits.
      if (e.state.compare_exchange_weak(s, State::kReplied)) return;
    } else if (s == State::kWaiting) {
      if (e.state.compare_exchange_weak(s, State::kReplied)) {
        Queue& q = *e.queue;
        {
          std::lock_guard lock(q.mu);
          q.to_commit.push_back(&e);
        }
        const uint64_t one = 1;
        (void)!::write(q.wake_fd, &one, sizeof one);
        return;
      }
    } else {
      return;  // a second reply to one request: libfuse never makes one
    }
  }
}

}  // namespace

// A free submission slot: when the queue is full (more commits than it has
// room for in one batch), what is queued goes to the kernel first.
io_uring_sqe* Queue::next_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  while (sqe == nullptr) {
    io_uring_submit(&ring);
    sqe = io_uring_get_sqe(&ring);
  }
  return sqe;
}

void Queue::prep_cmd(Entry& e, uint32_t op, uint64_t commit_id) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_rw(IORING_OP_URING_CMD, sqe, ch->fd, e.iov, 2, 0);
  sqe->cmd_op = op;
  std::memset(sqe->cmd, 0, kSqeCmdArea);
  RingCmdReq req{};
  req.commit_id = commit_id;
  req.qid = static_cast<uint16_t>(qid);
  std::memcpy(sqe->cmd, &req, sizeof req);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&e));
}

void Queue::arm_wake() {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_read(sqe, wake_fd, &wake_buf, sizeof wake_buf, 0);
  io_uring_sqe_set_data64(sqe, kWakeTag);
}

bool Queue::setup(std::string* why) {
  wake_fd = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd < 0) {
    *why = std::string("eventfd: ") + std::strerror(errno);
    return false;
  }
  slots = std::make_unique<std::atomic<Entry*>[]>(kMaxEntries);
  for (unsigned i = 0; i < ch->depth; ++i) {
    if (add_entry() == nullptr) {
      *why = "no memory for the ring entries";
      return false;
    }
  }
  return true;
}

// A new entry, published for route(); nullptr when there is no memory or the
// queue has kMaxEntries. The caller registers it.
Entry* Queue::add_entry() {
  const size_t n = nslots.load();
  if (n >= kMaxEntries) return nullptr;
  // Its own mappings: the payload's pages are touched only as far as requests
  // reach, so an entry costs a few pages until a bulk access comes.
  void* h = mmap(nullptr, sizeof(RingReqHeader), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* r = mmap(nullptr, kPrefix + ch->payload, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (h == MAP_FAILED || r == MAP_FAILED) {
    if (h != MAP_FAILED) munmap(h, sizeof(RingReqHeader));
    if (r != MAP_FAILED) munmap(r, kPrefix + ch->payload);
    return nullptr;
  }
  auto e = std::make_unique<Entry>();
  e->queue = this;
  e->payload_cap = ch->payload;
  e->headers = static_cast<RingReqHeader*>(h);
  e->region = static_cast<uint8_t*>(r);
  e->iov[0] = {e->headers, sizeof(RingReqHeader)};
  e->iov[1] = {e->payload(), ch->payload};
  Entry* raw = e.get();
  owned.push_back(std::move(e));
  slots[n].store(raw);
  nslots.store(n + 1);
  return raw;
}

// On the queue's thread: a single-issuer ring belongs to the thread that
// made it, and the kernel runs the hand-over of each request (task work) on
// the thread that submitted the entry.
int Queue::init_ring() {
  // Every entry may complete at once: room for all of them and the wake-up.
  io_uring_params p{};
  p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = 2 * kMaxEntries;
  unsigned n = 4;
  while (n < 2 * (ch->depth + 1)) n *= 2;
  int rc = io_uring_queue_init_params(n, &ring, &p);
  if (rc == -EINVAL) {  // before 6.0: no single-issuer hint
    p = io_uring_params{};
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    p.cq_entries = 2 * kMaxEntries;
    rc = io_uring_queue_init_params(n, &ring, &p);
  }
  if (rc < 0) return -rc;
  ring_ok = true;
  return 0;
}

void Queue::handle(Entry& e) {
  requests.fetch_add(1, std::memory_order_relaxed);
  --available;
  fuse_in_header in;
  std::memcpy(&in, e.headers->in_out, sizeof in);
  const uint32_t psz = e.headers->ring_ent_in_out.payload_sz;
  const uint64_t id = e.headers->ring_ent_in_out.commit_id;
  e.state.store(State::kProcessing);
  e.unique.store(id);
  if (in.len < sizeof in + psz || in.len - sizeof in - psz > kOpInOutSize || psz > e.payload_cap) {
    spdlog::error("io_uring: a malformed request (len {}, payload {}): EIO", in.len, psz);
    fuse_out_header oh{};
    oh.unique = id;
    oh.error = -EIO;
    fill_entry(e, oh, nullptr, 0);
    commit(e);
    return;
  }
  // The request as /dev/fuse would deliver it: header, op header, payload.
  const size_t oplen = in.len - sizeof in - psz;
  uint8_t* start = e.payload() - oplen - sizeof in;
  std::memcpy(start, &in, sizeof in);
  std::memcpy(start + sizeof in, e.headers->op_in, oplen);
  fuse_buf buf{};
  buf.mem = start;
  buf.size = in.len;
  tl_current = Current{&e, id, false};
  fuse_session_process_buf(ch->se, &buf);
  const bool replied = tl_current.replied;
  tl_current = Current{};
  if (replied) return commit(e);
  State s = State::kProcessing;
  if (!e.state.compare_exchange_strong(s, State::kWaiting)) return commit_late(e);  // kReplied
  // The request waits for a later answer and keeps its entry meanwhile.
  if (available < ch->depth) {
    if (Entry* fresh = add_entry()) {
      prep_cmd(*fresh, kCmdRegister, 0);
      fresh->live = true;
      ++available;
    }
  }
}

void Queue::commit_late(Entry& e) {
  std::vector<char> late;
  {
    std::lock_guard lock(e.mu);
    late.swap(e.late);
  }
  fuse_out_header oh{};
  std::memcpy(&oh, late.data(), sizeof oh);
  fill_entry(e, oh, reinterpret_cast<const uint8_t*>(late.data() + sizeof oh),
             late.size() - sizeof oh);
  commit(e);
}

void Queue::commit(Entry& e) {
  const uint64_t id = e.unique.load();
  e.unique.store(0);
  e.state.store(State::kKernel);
  prep_cmd(e, kCmdCommitAndFetch, id);
  ++available;
}

void Queue::drain_commits() {
  std::vector<Entry*> batch;
  {
    std::lock_guard lock(mu);
    batch.swap(to_commit);
  }
  for (Entry* e : batch) commit_late(*e);
}

namespace {

// The CPUs the process may run on, from the thread that started the first
// channel (before any queue thread pinned itself).
std::once_flag g_cpus_once;
cpu_set_t g_process_cpus;
std::atomic<bool> g_cpus_saved{false};

void save_process_cpus() {
  std::call_once(g_cpus_once, [] {
    CPU_ZERO(&g_process_cpus);
    if (sched_getaffinity(0, sizeof g_process_cpus, &g_process_cpus) == 0) g_cpus_saved = true;
  });
}

void pin_to(unsigned cpu) {
  if (!g_cpus_saved.load() || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &g_process_cpus)) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) {
    spdlog::debug("io_uring queue {}: not pinned: {}", cpu, std::strerror(errno));
  }
}

}  // namespace

void Queue::run() {
  {
    std::string name = "pcifs-ring" + std::to_string(qid);
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  }
  pin_to(qid);
  if (const int e = init_ring(); e != 0) {
    registered.set_value(e);
    return;
  }
  for (auto& e : owned) {
    prep_cmd(*e, kCmdRegister, 0);
    e->live = true;
    ++available;
  }
  arm_wake();
  int rc = io_uring_submit(&ring);
  // A refused registration completes at once; an accepted one only when a
  // request comes.
  int refused = rc < 0 ? -rc : 0;
  io_uring_cqe* cqe = nullptr;
  while (refused == 0 && io_uring_peek_cqe(&ring, &cqe) == 0) {
    if (cqe->user_data != kWakeTag && cqe->res < 0) refused = -cqe->res;
    if (refused == 0) break;  // a request already: handled in the loop below
    io_uring_cqe_seen(&ring, cqe);
  }
  registered.set_value(refused);
  if (refused != 0) return;
  bool stopping = false;
  while (!stopping) {
    rc = io_uring_submit_and_wait(&ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EBUSY) {
      spdlog::error("io_uring queue {}: {}", qid, std::strerror(-rc));
      break;
    }
    unsigned head = 0, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      if (cqe->user_data == kWakeTag) {
        if (ch->stop.load()) {
          stopping = true;
        } else {
          arm_wake();
        }
        drain_commits();
        continue;
      }
      // The entry is the user data its command was submitted with.
      auto* e = reinterpret_cast<Entry*>(cqe->user_data);  // NOLINT(performance-no-int-to-ptr)
      if (cqe->res == 0) {
        handle(*e);
      } else {
        // ENOTCONN: the connection ended (unmount) or the entry was
        // cancelled; anything else is logged.
        if (cqe->res != -ENOTCONN && cqe->res != -ECANCELED) {
          spdlog::warn("io_uring queue {}: an entry ended: {}", qid, std::strerror(-cqe->res));
        }
        e->live = false;
        --available;
      }
    }
    io_uring_cq_advance(&ring, seen);
    if (std::none_of(owned.begin(), owned.end(), [](const auto& e) { return e->live; })) {
      break;  // the connection is gone
    }
  }
  io_uring_submit(&ring);  // the last commits
}

namespace {

// Once INIT said io_uring the kernel holds every request until each queue
// has an entry; a registration it refuses turns io_uring off for the
// connection (dev_uring.c: fc->io_uring = 0) and lets them go to /dev/fuse.
// One with no buffers is such a registration.
void decline(int fd) {
  io_uring ring;
  if (io_uring_queue_init(4, &ring, IORING_SETUP_SQE128) != 0) {
    spdlog::error("io_uring: cannot decline the rings: requests to this mount wait for them");
    return;
  }
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, nullptr, 0, 0);
  sqe->cmd_op = kCmdRegister;
  std::memset(sqe->cmd, 0, kSqeCmdArea);
  io_uring_submit_and_wait(&ring, 1);
  io_uring_queue_exit(&ring);
}

}  // namespace

void unpin_current_thread() {
  if (g_cpus_saved.load()) (void)sched_setaffinity(0, sizeof g_process_cpus, &g_process_cpus);
}

std::unique_ptr<UringChannel> UringChannel::start(fuse_session* se, int fd, unsigned depth,
                                                  size_t payload, std::string* error) {
  save_process_cpus();
  auto impl = std::make_unique<Impl>();
  impl->se = se;
  impl->fd = fd;
  impl->depth = std::max(1u, depth);
  impl->payload = payload;
  const unsigned n = possible_cpus();
  for (unsigned q = 0; q < n; ++q) {
    auto queue = std::make_unique<Queue>();
    queue->ch = impl.get();
    queue->qid = q;
    std::string why;
    if (!queue->setup(&why)) {
      *error = "io_uring queue " + std::to_string(q) + ": " + why;
      impl->queues.push_back(std::move(queue));
      UringChannel dead(std::move(impl));
      decline(fd);
      return nullptr;
    }
    impl->queues.push_back(std::move(queue));
  }
  {
    std::unique_lock lock(g_mu);
    g_channels[fd] = impl.get();
    g_count.fetch_add(1);
  }
  auto ch = std::unique_ptr<UringChannel>(new UringChannel(std::move(impl)));
  int refused = 0;
  for (auto& q : ch->impl_->queues) {
    std::future<int> done = q->registered.get_future();
    Queue* qp = q.get();
    q->thread = std::thread([qp] { qp->run(); });
    if (const int e = done.get(); e != 0 && refused == 0) refused = e;
  }
  if (refused != 0) {
    *error = std::string("the kernel refused the ring entries: ") + std::strerror(refused);
    return nullptr;  // the destructor stops the queues that did register
  }
  return ch;
}

UringChannel::UringChannel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UringChannel::~UringChannel() {
  {
    std::unique_lock lock(g_mu);
    auto it = g_channels.find(impl_->fd);
    if (it != g_channels.end() && it->second == impl_.get()) {
      g_channels.erase(it);
      g_count.fetch_sub(1);
    }
  }
  impl_->stop.store(true);
  for (auto& q : impl_->queues) {
    if (q->wake_fd >= 0) {
      const uint64_t one = 1;
      (void)!::write(q->wake_fd, &one, sizeof one);
    }
  }
  for (auto& q : impl_->queues) {
    if (q->thread.joinable()) q->thread.join();
    // Exiting the ring cancels what is still registered: the kernel lets go
    // of the entries (and of the device file) before their memory goes.
    if (q->ring_ok) io_uring_queue_exit(&q->ring);
    if (q->wake_fd >= 0) ::close(q->wake_fd);
    for (auto& e : q->owned) {
      munmap(e->headers, sizeof(RingReqHeader));
      munmap(e->region, kPrefix + e->payload_cap);
    }
  }
}

bool UringChannel::route(int fd, const iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header oh;
  std::memcpy(&oh, iov[0].iov_base, sizeof oh);
  if (oh.unique == 0) return false;  // a notification: /dev/fuse only
  Current& c = tl_current;
  if (c.entry != nullptr && c.unique == oh.unique && !c.replied) {
    const size_t n = payload_bytes(iov, count);
    if (n <= c.entry->payload_cap) {
      // Straight into the entry. The request's own payload may be where
      // this goes: a handler is done with its request once it replies.
      gather_payload(iov, count, c.entry->payload());
      fill_entry(*c.entry, oh, c.entry->payload(), n);
    } else {
      fill_entry(*c.entry, oh, nullptr, n);  // EIO
    }
    c.replied = true;
    return true;
  }
  if (g_count.load() == 0) return false;
  std::shared_lock lock(g_mu);
  auto it = g_channels.find(fd);
  if (it == g_channels.end()) return false;
  for (auto& q : it->second->queues) {
    const size_t n = q->nslots.load();
    for (size_t i = 0; i < n; ++i) {
      Entry* e = q->slots[i].load();
      if (e->unique.load() == oh.unique) {
        late_reply(*e, iov, count);
        return true;
      }
    }
  }
  return false;
}

unsigned UringChannel::queues() const { return static_cast<unsigned>(impl_->queues.size()); }
unsigned UringChannel::depth() const { return impl_->depth; }
uint64_t UringChannel::requests() const {
  uint64_t n = 0;
  for (auto& q : impl_->queues) n += q->requests.load(std::memory_order_relaxed);
  return n;
}

unsigned possible_cpus() {
  // "0-15" or "0,2-3": the kernel makes num_possible_cpus() queues.
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string s;
  unsigned n = 0;
  if (in >> s) {
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t comma = s.find(',', pos);
      const std::string part =
          s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      const size_t dash = part.find('-');
      try {
        if (dash == std::string::npos) {
          ++n;
        } else {
          n += static_cast<unsigned>(std::stoul(part.substr(dash + 1)) -
                                     std::stoul(part.substr(0, dash)) + 1);
        }
      } catch (const std::exception&) {
        n = 0;
        break;
      }
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  if (n == 0) n = static_cast<unsigned>(std::max(1, get_nprocs_conf()));
  return n;
}

}  // namespace pcifs::fuse
