// Restarts through the service manager's fd store (README "Restarts"): the
// daemon runs under pcifs-supervise (tools/pcifs_supervise.cpp), which plays
// systemd's part over the same protocols (NOTIFY_SOCKET with FDSTORE=1,
// LISTEN_FDS at the next start). Client processes keep working through every
// restart:
//   - a config reader (one open handle, 4-byte preads, the value checked),
//   - a BAR user (a claiming handle, mapped; writes and reads through the
//     mapping and through pread/pwrite; a SIGBUS is counted),
//   - a DOE initiator (Discovery exchanges on one handle; an exchange in
//     flight at a restart may answer EIO, nothing else),
//   - a claim holder (a BAR of another group held open; after every restart
//     another process still gets EBUSY for it: the claim stayed exclusive).
// The daemon is killed with SIGKILL 50 times at points chosen by a seeded
// random count of client operations, every fifth time stopped with SIGTERM
// instead (a clean upgrade: the same path). After each restart every client
// must make progress (a bounded wait on its counter: a hang fails the test).
// Negative control: the same clients under a supervisor that keeps no fds
// (systemd with FileDescriptorStoreMax=0) see ENOTCONN after one restart.
#include <gtest/gtest.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kDoeDev = "0000:01:00.0";  // one healthy DOE mailbox
constexpr int kClients = 4;
enum Client { kConfig, kBar, kDoe, kClaim };
const char* const kNames[kClients] = {"config reader", "BAR user", "DOE initiator", "claim holder"};

// Written by the client processes, read by the test: anonymous shared memory.
struct Shared {
  std::atomic<uint64_t> ops[kClients];
  std::atomic<uint64_t> errs[kClients][160];  // by errno
  std::atomic<uint64_t> bad[kClients];        // oracle violations
  std::atomic<uint64_t> sigbus;
  std::atomic<uint64_t> doe_steps[3][160];  // write, response read, end-of-file read
  std::atomic<uint64_t> bar_steps[2][160];  // pwrite, pread
  std::atomic<uint64_t> restarts;           // how many the test has made so far
  std::atomic<int64_t> bar_error_at;        // restarts when a BAR call last failed
  std::atomic<int> stop;
};

Shared* g_shared = nullptr;
sigjmp_buf g_bus_jump;
void on_sigbus(int) { siglongjmp(g_bus_jump, 1); }

void count_error(Client c, int e) { g_shared->errs[c][e < 160 && e > 0 ? e : 0]++; }

// The client loops: plain syscalls only (they run in a child of a threaded
// process). Each returns when told to stop.
void config_reader(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return count_error(kConfig, errno);
  uint32_t first = 0;
  if (pread(fd, &first, 4, 0) != 4) count_error(kConfig, errno);
  while (!g_shared->stop.load()) {
    uint32_t v = 0;
    if (pread(fd, &v, 4, 0) != 4) {
      count_error(kConfig, errno);
    } else if (v != first) {
      g_shared->bad[kConfig]++;  // vendor/device never change
    }
    g_shared->ops[kConfig]++;
  }
  close(fd);
}

constexpr off_t kRam = 0x800;  // past the simulated BAR's registers (backend/sim/bar_memory.hpp)

void bar_user(const std::string& path, size_t size) {
  const int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) return count_error(kBar, errno);
  auto* p = static_cast<volatile uint32_t*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (p == MAP_FAILED) return count_error(kBar, errno);
  struct sigaction sa {};
  sa.sa_handler = on_sigbus;
  sigaction(SIGBUS, &sa, nullptr);
  uint32_t i = 0;
  while (!g_shared->stop.load()) {
    ++i;
    if (sigsetjmp(g_bus_jump, 1) != 0) {
      g_shared->sigbus++;
      continue;
    }
    p[kRam / 4] = i;  // through the mapping (writeback by the kernel)
    (void)p[kRam / 4];
    uint32_t v = i;
    for (int step = 0; step < 2; ++step) {
      const ssize_t n = step == 0 ? pwrite(fd, &v, 4, kRam + 4) : pread(fd, &v, 4, kRam + 4);
      if (n == 4) continue;
      g_shared->bar_steps[step][errno % 160]++;
      g_shared->bar_error_at.store(static_cast<int64_t>(g_shared->restarts.load()));
      count_error(kBar, errno);
    }
    // A restart may land between the write and the read: the simulated
    // device comes back as after a function reset. Only a value that is
    // neither ours nor the reset value is wrong.
    if (v != i && v != 0 && v != 0xffffffffu) g_shared->bad[kBar]++;
    g_shared->ops[kBar]++;
  }
  munmap(const_cast<uint32_t*>(p), size);
  close(fd);
}

void doe_initiator(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) return count_error(kDoe, errno);
  const uint32_t req[3] = {0x00000001, 3, 0};  // Discovery, index 0
  const uint32_t want[3] = {0x00000001, 3, 0x01000001};
  while (!g_shared->stop.load()) {
    if (write(fd, req, sizeof req) != static_cast<ssize_t>(sizeof req)) {
      g_shared->doe_steps[0][errno % 160]++;
      count_error(kDoe, errno);
    } else {
      uint32_t resp[3] = {};
      const ssize_t n = read(fd, resp, sizeof resp);
      if (n < 0) {
        g_shared->doe_steps[1][errno % 160]++;
        count_error(kDoe, errno);
      } else if (n != static_cast<ssize_t>(sizeof resp) || std::memcmp(resp, want, sizeof resp)) {
        g_shared->bad[kDoe]++;
      } else {
        // Read to the end: the exchange is over. EIO if a restart came
        // between (the journal holds an exchange over only once its end of
        // file was read: README "Restarts").
        uint32_t more = 0;
        const ssize_t end = read(fd, &more, sizeof more);
        if (end < 0) {
          g_shared->doe_steps[2][errno % 160]++;
          count_error(kDoe, errno);
        } else if (end != 0) {
          g_shared->bad[kDoe]++;
        }
      }
    }
    g_shared->ops[kDoe]++;
  }
  close(fd);
}

void claim_holder(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) return count_error(kClaim, errno);
  while (!g_shared->stop.load()) {
    uint32_t v = 0;
    if (pread(fd, &v, 4, 0) != 4) count_error(kClaim, errno);
    g_shared->ops[kClaim]++;
    usleep(1000);  // pacing only: the test waits on the counter, never on time
  }
  close(fd);
}

// The daemon under pcifs-supervise on a temp mountpoint.
class Supervised {
 public:
  explicit Supervised(bool fd_store) {
    char dir[] = "/tmp/pcifs-restart-XXXXXX";
    dir_ = mkdtemp(dir) ? dir : "";
    mnt_ = dir_ + "/mnt";
    status_ = dir_ + "/status";
    log_ = dir_ + "/log";
    mkdir(mnt_.c_str(), 0755);
    std::vector<std::string> args = {build_dir() + "/pcifs-supervise", "--status", status_};
    if (!fd_store) args.push_back("--no-fd-store");
    for (const std::string& a :
         {std::string("--"), build_dir() + "/pcifs", std::string("-f"), std::string("--fd-store"),
          std::string("--lock-dir=none"), std::string("--doe-timeout=200"), mnt_}) {
      args.push_back(a);
    }
    const int lfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    pid_ = spawn_logged(args, lfd);
    close(lfd);
  }
  ~Supervised() { stop(); }

  // Waits (bounded) until generation `gen` said READY=1.
  bool wait_ready(int gen) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < end) {
      if (generation() >= gen) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }
  int generation() const {
    std::ifstream in(status_);
    int gen = 0;
    in >> gen;
    return gen;
  }
  void crash() const { kill(pid_, SIGUSR1); }    // SIGKILL the daemon, start anew
  void upgrade() const { kill(pid_, SIGUSR2); }  // SIGTERM it, start anew
  const std::string& mnt() const { return mnt_; }
  std::string dev(const std::string& bdf) const { return mnt_ + "/devices/" + bdf; }
  std::string log() const { return slurp(log_); }
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);  // the daemon hands over; the store closes: the mount ends
      int st = 0;
      waitpid(pid_, &st, 0);
      pid_ = -1;
    }
    if (!mnt_.empty()) {
      umount2(mnt_.c_str(), MNT_DETACH);
      rmdir(mnt_.c_str());
      unlink(status_.c_str());
      unlink(log_.c_str());
      rmdir(dir_.c_str());
      mnt_.clear();
    }
  }

 private:
  std::string dir_, mnt_, status_, log_;
  pid_t pid_ = -1;
};

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    void* m =
        mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    g_shared = new (m) Shared{};
  }
  void TearDown() override {
    if (!g_shared) return;
    g_shared->stop.store(1);
    for (pid_t p : children_) {
      int st = 0;
      waitpid(p, &st, 0);
    }
    children_.clear();
    munmap(g_shared, sizeof(Shared));
    g_shared = nullptr;
  }
  template <typename F>
  void fork_client(F body) {
    const pid_t p = fork();
    if (p == 0) {
      body();
      _exit(0);
    }
    children_.push_back(p);
  }
  // Two BAR-carrying devices of different IOMMU groups, each with a
  // resource0 of at least a page.
  std::vector<std::pair<std::string, size_t>> bars(const std::string& mnt) const {
    std::vector<std::pair<std::string, size_t>> out;
    for (const char* b : {"0000:00:01.0", "0000:01:00.0", "0000:02:00.0", "0000:03:00.0"}) {
      struct stat st {};
      const std::string path = mnt + "/devices/" + b + "/resource0";
      if (stat(path.c_str(), &st) == 0 && st.st_size >= 4096) {
        out.emplace_back(path, static_cast<size_t>(st.st_size));
      }
    }
    return out;
  }
  // Waits until every client has made `n` more operations than `before`.
  bool all_progress(const uint64_t (&before)[kClients], uint64_t n, std::string* stuck) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (int c = 0; c < kClients; ++c) {
      while (g_shared->ops[c].load() < before[c] + n) {
        if (std::chrono::steady_clock::now() > end) {
          *stuck = kNames[c];
          return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    return true;
  }
  std::string errors() const {
    std::string out;
    for (int c = 0; c < kClients; ++c) {
      for (int e = 0; e < 160; ++e) {
        if (const uint64_t n = g_shared->errs[c][e].load()) {
          out += std::string(kNames[c]) + ": " + (e ? strerrorname_np(e) : "?") + " x" +
                 std::to_string(n) + "\n";
        }
      }
      for (int step = 0; c == kDoe && step < 3; ++step) {
        for (int e = 1; e < 160; ++e) {
          if (const uint64_t n = g_shared->doe_steps[step][e].load()) {
            out += std::string("  DOE step ") + "wre"[step] + ": " + strerrorname_np(e) + " x" +
                   std::to_string(n) + "\n";
          }
        }
      }
      for (int step = 0; c == kBar && step < 2; ++step) {
        for (int e = 1; e < 160; ++e) {
          if (const uint64_t n = g_shared->bar_steps[step][e].load()) {
            out += std::string("  BAR ") + (step == 0 ? "pwrite" : "pread") + ": " +
                   strerrorname_np(e) + " x" + std::to_string(n) + " (last after restart " +
                   std::to_string(g_shared->bar_error_at.load()) + ")\n";
          }
        }
      }
      if (const uint64_t n = g_shared->bad[c].load()) {
        out += std::string(kNames[c]) + ": " + std::to_string(n) + " wrong values\n";
      }
    }
    return out;
  }
  // Another process opens the held BAR: the claim must still be exclusive.
  static int other_open_errno(const std::string& path) {
    const pid_t p = fork();
    if (p == 0) {
      const int fd = open(path.c_str(), O_RDWR);
      _exit(fd >= 0 ? 0 : errno);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  void start_clients(const Supervised& s) {
    auto b = bars(s.mnt());
    ASSERT_GE(b.size(), 2u) << "the default set has two devices with a BAR of a page or more";
    const std::string config = s.dev(kDoeDev) + "/config", doe = s.dev(kDoeDev) + "/doe";
    fork_client([&] { config_reader(config); });
    fork_client([&, p = b[0]] { bar_user(p.first, p.second); });
    fork_client([&] { doe_initiator(doe); });
    fork_client([&, p = b[1]] { claim_holder(p.first); });
    held_ = b[1].first;
    uint64_t zero[kClients] = {};
    std::string stuck;
    ASSERT_TRUE(all_progress(zero, 1, &stuck)) << stuck << " never ran\n" << errors();
  }
  std::vector<pid_t> children_;
  std::string held_;
};

TEST_F(RestartTest, FiftyKillsNoClientNoticesAndClaimsStayExclusive) {
  Supervised s(/*fd_store=*/true);
  ASSERT_TRUE(s.wait_ready(1)) << s.log();
  start_clients(s);
  ASSERT_EQ(other_open_errno(held_), EBUSY);
  std::mt19937 rng(20261204);  // the kill points are random, and the same every run
  for (int round = 2; round <= 51; ++round) {
    // Let the clients run a random number of operations, then kill.
    const uint64_t until = g_shared->ops[kConfig].load() + rng() % 400;
    while (g_shared->ops[kConfig].load() < until && !HasFailure()) std::this_thread::yield();
    uint64_t before[kClients];
    g_shared->restarts.store(static_cast<uint64_t>(round - 1));
    if (round % 5 == 0) {
      s.upgrade();
    } else {
      s.crash();
    }
    ASSERT_TRUE(s.wait_ready(round)) << "generation " << round << " never ready\n" << s.log();
    for (int c = 0; c < kClients; ++c) before[c] = g_shared->ops[c].load();
    std::string stuck;
    ASSERT_TRUE(all_progress(before, 2, &stuck))
        << "after restart " << round - 1 << " the " << stuck << " hangs\n"
        << errors() << s.log();
    ASSERT_EQ(other_open_errno(held_), EBUSY) << "restart " << round - 1 << "\n" << s.log();
  }
  g_shared->stop.store(1);
  // Nothing but the documented EIO of a DOE exchange that died at a restart.
  for (int c = 0; c < kClients; ++c) {
    for (int e = 1; e < 160; ++e) {
      if (c == kDoe && e == EIO) continue;
      EXPECT_EQ(g_shared->errs[c][e].load(), 0u) << kNames[c] << ": " << strerrorname_np(e) << "\n"
                                                 << errors() << s.log();
    }
    EXPECT_EQ(g_shared->bad[c].load(), 0u) << kNames[c] << ": wrong values";
  }
  EXPECT_EQ(g_shared->sigbus.load(), 0u);
  EXPECT_EQ(errors().find("EBUSY"), std::string::npos) << errors();
  EXPECT_EQ(g_shared->errs[kConfig][ENOTCONN].load(), 0u);
}

// A directory read a few entries at a time (each getdents64 one FUSE
// READDIRPLUS at the next offset) goes on across a crash and an upgrade: the
// new daemon lists it again under the handle the kernel holds, and the names
// come out once each, the same as a fresh listing.
TEST_F(RestartTest, ADirectoryOpenAcrossRestartsListsOn) {
  Supervised s(/*fd_store=*/true);
  ASSERT_TRUE(s.wait_ready(1)) << s.log();
  const std::string dir = s.dev(kDoeDev);
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::vector<std::string> names;
  // A few entries: a buffer that holds about two.
  auto next = [&] {
    alignas(8) char buf[80];
    const long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    for (long at = 0; at < n;) {
      struct Dirent64 {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[1];
      };
      const auto* e = reinterpret_cast<const Dirent64*>(buf + at);
      names.emplace_back(e->name);
      at += e->reclen;
    }
    return n;
  };
  ASSERT_GT(next(), 0) << strerror(errno);
  s.crash();
  ASSERT_TRUE(s.wait_ready(2)) << s.log();
  ASSERT_GT(next(), 0) << strerror(errno) << "\n" << s.log();
  s.upgrade();
  ASSERT_TRUE(s.wait_ready(3)) << s.log();
  long n = 0;
  for (int i = 0; i < 100 && (n = next()) > 0;) ++i;
  EXPECT_EQ(n, 0) << strerror(errno) << "\n" << s.log();
  close(fd);
  const std::set<std::string> once(names.begin(), names.end());
  EXPECT_EQ(once.size(), names.size()) << "a name came twice";
  std::set<std::string> fresh = list_dir(dir);
  fresh.insert(".");
  fresh.insert("..");
  EXPECT_EQ(once, fresh);
  EXPECT_GT(names.size(), 6u);
}

TEST_F(RestartTest, WithoutTheFdStoreClientsSeeENOTCONN) {
  Supervised s(/*fd_store=*/false);
  ASSERT_TRUE(s.wait_ready(1)) << s.log();
  start_clients(s);
  s.crash();
  ASSERT_TRUE(s.wait_ready(2)) << s.log();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (g_shared->errs[kConfig][ENOTCONN].load() == 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(g_shared->errs[kConfig][ENOTCONN].load(), 0u) << errors();
}

}  // namespace
}  // namespace pcifs::testing
