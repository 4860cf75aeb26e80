// The measurements (see workloads.hpp). Timed regions contain only the
// operations a figure names; opening files, mapping for the quiesce and
// checking results are outside them.
#include "workloads.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mounts.hpp"

namespace pcifs::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kBar0Size = 1 << 20;
constexpr size_t kPage = 4096;
constexpr unsigned kQueueDepth = 32;
// The simulated device's DOE echo protocol (backend/sim: vendor 1b36, type 1).
constexpr uint32_t kEchoHeader0 = 0x1b36u | (1u << 16);

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void fail(const Target& t, const std::string& what, ssize_t got, int err) {
  std::string msg = t.name() + ": " + what + " returned " + std::to_string(got);
  if (got < 0) msg += std::string(" (") + std::strerror(err) + ")";
  throw std::runtime_error(msg);
}

void check_stop() {
  if (stop_requested()) throw std::runtime_error("interrupted");
}

int open_or_throw(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  return fd;
}

// A dword offset for the i-th config access: 68 = 4 * 17 with 17 odd, so the
// sequence visits every dword of the 4096-byte space before repeating.
off_t config_offset(unsigned i) { return static_cast<off_t>((i * 68u) % 4096u); }

struct Mapping {
  void* addr = MAP_FAILED;
  size_t len = 0;
  Mapping(int fd, size_t n) : addr(mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0)), len(n) {}
  ~Mapping() {
    if (addr != MAP_FAILED) munmap(addr, len);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const volatile uint8_t* bytes() const { return static_cast<const volatile uint8_t*>(addr); }
};

uint64_t resident_pages(const Mapping& m) {
  std::vector<unsigned char> vec(m.len / kPage);
  if (mincore(m.addr, m.len, vec.data()) != 0) return 0;
  uint64_t n = 0;
  for (unsigned char v : vec) n += v & 1u;
  return n;
}

// Reading one byte per page faults each page in (through a FUSE_READ when
// the page is not cached).
uint64_t touch_pages(const Mapping& m) {
  uint64_t sum = 0;
  for (size_t off = 0; off < m.len; off += kPage) sum += m.bytes()[off];
  return sum;
}

// The floor's counters of FUSE_READs on resource0: {count, largest size}.
std::array<uint64_t, 2> floor_read_stats(const Target& t) {
  std::ifstream in(t.stats_path());
  std::string k1, k2;
  std::array<uint64_t, 2> v{};
  in >> k1 >> v[0] >> k2 >> v[1];
  return v;
}

// One synchronous DOE echo exchange: write the request object, read the
// response, check it is the request.
void doe_exchange(const Target& t, int fd, uint32_t client, uint32_t seq) {
  const std::array<uint32_t, 4> req = {kEchoHeader0, 4, client, seq};
  std::array<uint32_t, 16> rsp{};
  const ssize_t w = write(fd, req.data(), sizeof req);
  if (w != static_cast<ssize_t>(sizeof req)) fail(t, "doe write", w, errno);
  const ssize_t r = read(fd, rsp.data(), sizeof rsp);
  if (r != static_cast<ssize_t>(sizeof req) ||
      std::memcmp(rsp.data(), req.data(), sizeof req) != 0) {
    fail(t, "doe read (want the 16-byte echo)", r, errno);
  }
}

double doe_clients_per_s(const Target& t, unsigned clients, unsigned per_client) {
  std::vector<int> fds;
  for (unsigned c = 0; c < clients; ++c) fds.push_back(open_or_throw(t.dir() + "doe", O_RDWR));
  std::atomic<bool> go{false};
  std::vector<std::string> errors(clients);
  std::vector<std::thread> threads;
  for (unsigned c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      while (!go.load()) std::this_thread::yield();
      try {
        for (unsigned i = 0; i < per_client && !stop_requested(); ++i)
          doe_exchange(t, fds[c], c, i);
      } catch (const std::exception& e) {
        errors[c] = e.what();
      }
    });
  }
  const auto start = Clock::now();
  go.store(true);
  for (auto& th : threads) th.join();
  const double spent = seconds_since(start);
  for (int fd : fds) close(fd);
  for (const auto& e : errors) {
    if (!e.empty()) throw std::runtime_error(e);
  }
  check_stop();
  return clients * per_client / spent;
}

}  // namespace

Target::Target(std::string name, std::string device_dir, std::string stats_path)
    : name_(std::move(name)), dir_(std::move(device_dir)), stats_(std::move(stats_path)) {
  try {
    config_fd_ = open_or_throw(dir_ + "config", O_RDONLY);
    bar0_fd_ = open_or_throw(dir_ + "resource0", O_RDWR);
    bar2_fd_ = open_or_throw(dir_ + "resource2", O_RDWR);
    power_fd_ = open_or_throw(dir_ + "power_state", O_RDWR);
  } catch (...) {
    close_all();
    throw;
  }
}

Target::~Target() { close_all(); }

void Target::close_all() {
  for (int* fd : {&config_fd_, &bar0_fd_, &bar2_fd_, &power_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

double config_read_qd1_us(const Target& t, const Sizes& s, Observations&) {
  uint32_t v = 0;
  const auto start = Clock::now();
  for (unsigned i = 0; i < s.config_ops; ++i) {
    const ssize_t n = pread(t.config_fd(), &v, 4, config_offset(i));
    if (n != 4) fail(t, "config pread", n, errno);
  }
  const double spent = seconds_since(start);
  check_stop();
  return spent * 1e6 / s.config_ops;
}

double config_readers_ops(const Target& t, const Sizes& s, unsigned readers) {
  return parallel_preads(t.dir() + "config", 0x44, readers, s.reader_ops, t.name());
}

double parallel_preads(const std::string& path, uint32_t offset, unsigned readers,
                       unsigned ops_per_reader, const std::string& what) {
  // Each child counts into its own slot; the gate is a pipe the parent
  // closes once every child has its file open.
  auto* done = static_cast<std::atomic<uint64_t>*>(mmap(nullptr, sizeof(uint64_t) * readers * 2,
                                                        PROT_READ | PROT_WRITE,
                                                        MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (done == MAP_FAILED) throw std::runtime_error("mmap for the readers failed");
  std::unique_ptr<void, std::function<void(void*)>> unmap(
      done, [=](void* p) { munmap(p, sizeof(uint64_t) * readers * 2); });
  int gate[2], ready[2];
  if (pipe(gate) != 0 || pipe(ready) != 0) throw std::runtime_error("pipe failed");
  std::vector<pid_t> kids;
  for (unsigned r = 0; r < readers; ++r) {
    const pid_t p = fork();
    if (p == 0) {
      close(gate[1]);
      close(ready[0]);
      const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      char c = fd >= 0 ? 'y' : 'n';
      (void)!write(ready[1], &c, 1);
      (void)!read(gate[0], &c, 1);  // EOF: go
      uint64_t ok = 0, bad = 0;
      for (unsigned i = 0; fd >= 0 && i < ops_per_reader && !stop_requested(); ++i) {
        uint32_t v = 0;
        if (pread(fd, &v, 4, offset) == 4)
          ++ok;
        else
          ++bad;
      }
      done[size_t{2} * r].store(ok);
      done[size_t{2} * r + 1].store(fd < 0 ? ops_per_reader : bad);
      _exit(0);
    }
    if (p < 0) break;
    kids.push_back(p);
  }
  close(gate[0]);
  close(ready[1]);
  unsigned opened = 0;
  for (size_t k = 0; k < kids.size(); ++k) {
    char c = 0;
    if (read(ready[0], &c, 1) == 1 && c == 'y') ++opened;
  }
  close(ready[0]);
  const auto start = Clock::now();
  close(gate[1]);
  for (pid_t p : kids) wait_child(p);
  const double spent = seconds_since(start);
  check_stop();
  uint64_t ok = 0, bad = 0;
  for (unsigned r = 0; r < readers; ++r) {
    ok += done[size_t{2} * r].load();
    bad += done[size_t{2} * r + 1].load();
  }
  if (kids.size() != readers || opened != readers || bad != 0) {
    throw std::runtime_error(what + ": " + std::to_string(readers) +
                             " readers: " + std::to_string(opened) + " opened, " +
                             std::to_string(bad) + " reads failed");
  }
  return static_cast<double>(ok) / spent;
}

// 32 reads in flight on one fd. FUSE files cannot be read without blocking,
// so io_uring hands each read to an io-wq worker; the default bound of those
// workers is 4 per CPU, so the ring raises it to 32 to keep 32 in flight.
double config_read_qd32_ops(const Target& t, const Sizes& s, Observations& o) {
  io_uring ring;
  if (const int rc = io_uring_queue_init(2 * kQueueDepth, &ring, 0); rc < 0) {
    throw std::runtime_error(std::string("io_uring_queue_init: ") + std::strerror(-rc));
  }
  unsigned workers[2] = {kQueueDepth, kQueueDepth};
  if (io_uring_register_iowq_max_workers(&ring, workers) < 0) o.iowq_workers_raised = false;
  ++o.rings_checked;
  std::array<uint32_t, kQueueDepth> bufs{};
  unsigned submitted = 0, done = 0;
  auto prep = [&](unsigned slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_read(sqe, t.config_fd(), &bufs[slot], 4,
                       static_cast<uint64_t>(config_offset(submitted)));
    io_uring_sqe_set_data64(sqe, slot);
    ++submitted;
  };
  std::string error;
  const auto start = Clock::now();
  for (unsigned slot = 0; slot < kQueueDepth && submitted < s.config_qd32_ops; ++slot) prep(slot);
  io_uring_submit(&ring);
  while (done < submitted && error.empty()) {
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) {
      error = std::string("io_uring_wait_cqe: ") + std::strerror(-rc);
      break;
    }
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      ++done;
      if (cqe->res != 4) error = "config read at QD32 returned " + std::to_string(cqe->res);
      if (submitted < s.config_qd32_ops) prep(static_cast<unsigned>(io_uring_cqe_get_data64(cqe)));
    }
    io_uring_cq_advance(&ring, seen);
    io_uring_submit(&ring);
  }
  const double spent = seconds_since(start);
  while (done < submitted) {  // an error left reads in flight: drain before the ring goes
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe(&ring, &cqe) == 0) {
      io_uring_cqe_seen(&ring, cqe);
      ++done;
    }
  }
  io_uring_queue_exit(&ring);
  if (!error.empty()) throw std::runtime_error(t.name() + ": " + error);
  check_stop();
  return done / spent;
}

// resource2 offset 0 is SCRATCH0 of the simulated BAR: read/write, no side effect.
double bar_pread4_us(const Target& t, const Sizes& s, Observations&) {
  uint32_t v = 0;
  const auto start = Clock::now();
  for (unsigned i = 0; i < s.bar_ops; ++i) {
    const ssize_t n = pread(t.bar2_fd(), &v, 4, 0);
    if (n != 4) fail(t, "BAR pread", n, errno);
  }
  const double spent = seconds_since(start);
  check_stop();
  return spent * 1e6 / s.bar_ops;
}

double bar_pwrite4_us(const Target& t, const Sizes& s, Observations&) {
  const auto start = Clock::now();
  for (uint32_t i = 0; i < s.bar_ops; ++i) {
    const ssize_t n = pwrite(t.bar2_fd(), &i, 4, 0);
    if (n != 4) fail(t, "BAR pwrite", n, errno);
  }
  const double spent = seconds_since(start);
  uint32_t back = 0;
  if (pread(t.bar2_fd(), &back, 4, 0) != 4 || back != s.bar_ops - 1) {
    throw std::runtime_error(t.name() + ": BAR scratch register does not hold the last write");
  }
  check_stop();
  return spent * 1e6 / s.bar_ops;
}

// The buffer is page-aligned, as dd's is: an unaligned 1 MiB buffer spans
// 257 pages and the kernel would split each read in two FUSE_READs.
double bulk_read_mibs(const Target& t, const Sizes& s, Observations& o) {
  static const std::unique_ptr<uint8_t, decltype(&std::free)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(kPage, kBar0Size)), &std::free);
  const auto before = t.stats_path().empty() ? std::array<uint64_t, 2>{} : floor_read_stats(t);
  const auto start = Clock::now();
  for (unsigned i = 0; i < s.bulk_reads; ++i) {
    const ssize_t n = pread(t.bar0_fd(), buf.get(), kBar0Size, 0);
    if (n != static_cast<ssize_t>(kBar0Size)) fail(t, "1 MiB BAR pread", n, errno);
  }
  const double spent = seconds_since(start);
  if (!t.stats_path().empty()) {
    const auto after = floor_read_stats(t);
    o.bulk_fuse_reads += after[0] - before[0];
    o.bulk_preads += s.bulk_reads;
    o.bulk_max_request = std::max(o.bulk_max_request, after[1]);
  }
  check_stop();
  return s.bulk_reads / spent;
}

// Each map is fresh: mmap of a direct_io FUSE file drops the file's page
// cache, so every touch below is a fault served by a FUSE_READ. mincore
// checks that (nothing cached at map time, everything after the touch).
double mmap_fault_us_per_page(const Target& t, const Sizes& s, Observations& o) {
  double spent = 0;
  uint64_t pages = 0;
  for (unsigned i = 0; i < s.mmap_maps; ++i) {
    Mapping m(t.bar0_fd(), kBar0Size);
    if (m.addr == MAP_FAILED) fail(t, "mmap resource0", -1, errno);
    o.mmap_resident_at_map += resident_pages(m);
    const auto start = Clock::now();
    touch_pages(m);
    spent += seconds_since(start);
    pages += kBar0Size / kPage;
    o.mmap_not_faulted += kBar0Size / kPage - resident_pages(m);
    ++o.mmap_maps_checked;
  }
  check_stop();
  return spent * 1e6 / static_cast<double>(pages);
}

double doe_1client_per_s(const Target& t, const Sizes& s, Observations&) {
  return doe_clients_per_s(t, 1, s.doe_ops);
}

double doe_8clients_per_s(const Target& t, const Sizes& s, Observations&) {
  return doe_clients_per_s(t, 8, s.doe8_ops);
}

// Maps first and touches after: each mmap drops the page cache (see above),
// so touching as we map would leave only the last maps populated.
double quiesce_64_maps_ms(const Target& t, const Sizes& s, Observations& o) {
  std::vector<std::unique_ptr<Mapping>> maps;
  for (unsigned i = 0; i < s.quiesce_mappings; ++i) {
    maps.push_back(std::make_unique<Mapping>(t.bar0_fd(), kBar0Size));
    if (maps.back()->addr == MAP_FAILED) fail(t, "mmap resource0", -1, errno);
  }
  for (const auto& m : maps) touch_pages(*m);
  const auto start = Clock::now();
  const ssize_t n = pwrite(t.power_fd(), "D3hot", 5, 0);
  const double spent = seconds_since(start);
  if (n != 5) fail(t, "power_state D3hot", n, errno);
  o.quiesce_resident_after += resident_pages(*maps.front());
  ++o.quiesces_checked;
  const ssize_t back = pwrite(t.power_fd(), "D0", 2, 0);
  if (back != 2) fail(t, "power_state D0", back, errno);
  maps.clear();
  check_stop();
  return spent * 1e3;
}

}  // namespace pcifs::bench
