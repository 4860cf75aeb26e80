// FUSE over io_uring (README "Transports"): with --transport=uring every
// request reaches the daemon over its rings, the kernel's own counters say
// so, replies made on other threads (DOE, requests behind a device operation)
// come back over them, many callers on every CPU are served, an unmount under
// load ends cleanly; auto falls back to /dev/fuse where the kernel does not
// offer io_uring, uring then refuses to start, and the fd store refuses it.
//
// The kernel offers io_uring to FUSE only while the module's enable_uring
// switch is on. This suite turns it on for its run and puts the old value back
// (CTest runs it alone, RUN_SERIAL: no other daemon sees the switch change).
#include <dirent.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "fixtures/mount_fixture.hpp"
#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kSwitch = "/sys/module/fuse/parameters/enable_uring";
constexpr const char* kCxl = "0000:02:00.0";  // the default set's DOE device

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// A temp mountpoint, removed at the end.
class TempDir {
 public:
  TempDir() {
    char dir[] = "/tmp/pcifs-uring-XXXXXX";
    if (mkdtemp(dir) != nullptr) path_ = dir;
  }
  ~TempDir() {
    unmount_all_on(path_);
    rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool set_switch(bool on) {
  std::ofstream out(kSwitch);
  out << (on ? "Y" : "N") << "\n";
  out.flush();
  return static_cast<bool>(out);
}

class UringSwitch : public ::testing::Environment {
 public:
  void SetUp() override {
    std::ifstream in(kSwitch);
    have_ = static_cast<bool>(in >> old_);
  }
  void TearDown() override {
    if (have_) set_switch(old_ == "Y");
  }
  static bool available() { return access(kSwitch, W_OK) == 0; }

 private:
  bool have_ = false;
  std::string old_;
};
const auto* const g_switch = ::testing::AddGlobalTestEnvironment(new UringSwitch);

// The io_uring instances of `pid` and the completions the kernel has posted on
// them (fdinfo's CqTail): the kernel's count, not the daemon's.
struct Rings {
  int count = 0;
  uint64_t completions = 0;
};
Rings rings_of(pid_t pid) {
  Rings r;
  const std::string fds = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(fds.c_str());
  if (d == nullptr) return r;
  while (dirent* e = readdir(d)) {
    char target[256] = {};
    const std::string link = fds + "/" + e->d_name;
    if (readlink(link.c_str(), target, sizeof target - 1) <= 0) continue;
    if (std::string(target).find("io_uring") == std::string::npos) continue;
    ++r.count;
    std::istringstream info(slurp("/proc/" + std::to_string(pid) + "/fdinfo/" + e->d_name));
    for (std::string key; info >> key;) {
      if (key == "CqTail:") {
        uint64_t v = 0;
        info >> v;
        r.completions += v;
      }
    }
  }
  closedir(d);
  return r;
}

unsigned possible_cpus() {
  // "0-1", "0-15", "0,2-3"
  std::string s = slurp("/sys/devices/system/cpu/possible");
  unsigned n = 0;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, ',');) {
    const size_t dash = part.find('-');
    n += dash == std::string::npos ? 1
                                   : static_cast<unsigned>(std::stoul(part.substr(dash + 1)) -
                                                           std::stoul(part.substr(0, dash)) + 1);
  }
  return n;
}

class UringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    if (!UringSwitch::available()) {
      GTEST_SKIP() << kSwitch << " missing: this kernel has no FUSE over io_uring (6.14+)";
    }
    ASSERT_TRUE(set_switch(true));
  }
};

TEST_F(UringTest, EveryRequestGoesOverTheRingsAndDevUsesNone) {
  Daemon d({"--transport=uring"});
  ASSERT_TRUE(d.mounted()) << d.log();
  ASSERT_TRUE(wait_until([&] { return contains(d.log(), "requests over io_uring"); })) << d.log();
  const Rings before = rings_of(d.pid());
  // One ring per queue, the kernel's queue per possible CPU.
  EXPECT_EQ(before.count, static_cast<int>(possible_cpus()));
  const std::string config = d.dev("0000:01:00.0") + "/config";
  const int fd = open(config.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << strerror(errno);
  uint32_t first = 0;
  ASSERT_EQ(pread(fd, &first, 4, 0), 4);
  constexpr int kReads = 2000;
  for (int i = 0; i < kReads; ++i) {
    uint32_t v = 0;
    ASSERT_EQ(pread(fd, &v, 4, 0), 4) << strerror(errno);
    ASSERT_EQ(v, first);
  }
  close(fd);
  const Rings after = rings_of(d.pid());
  EXPECT_GE(after.completions - before.completions, static_cast<uint64_t>(kReads))
      << "the reads did not come over the rings";

  // Control: the same reads over /dev/fuse leave no ring behind, and the
  // bytes are the same.
  Daemon dev({"--transport=dev"});
  ASSERT_TRUE(dev.mounted()) << dev.log();
  EXPECT_TRUE(wait_until([&] { return contains(dev.log(), "requests over /dev/fuse"); }))
      << dev.log();
  EXPECT_EQ(rings_of(dev.pid()).count, 0);
  auto a = pread_file(config, 256, 0);
  auto b = pread_file(dev.dev("0000:01:00.0") + "/config", 256, 0);
  ASSERT_EQ(a.n, 256);
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(d.stop(), 0) << d.log();
  EXPECT_EQ(dev.stop(), 0) << dev.log();
}

TEST_F(UringTest, RepliesFromOtherThreadsComeBackOverTheRings) {
  Daemon d({"--transport=uring", "--doe-timeout=3000"});
  ASSERT_TRUE(d.mounted()) << d.log();
  const Rings before = rings_of(d.pid());
  // A DOE response is answered from the mailbox's executor, not from the
  // thread that took the read. Discovery, index 0 (PCIe 6.0 §6.30.1.1).
  const int doe = open((d.dev(kCxl) + "/doe").c_str(), O_RDWR);
  ASSERT_GE(doe, 0) << strerror(errno);
  const uint32_t req[3] = {0x00000001, 3, 0};
  const uint32_t want[3] = {0x00000001, 3, 0x01000001};
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(write(doe, req, sizeof req), static_cast<ssize_t>(sizeof req)) << strerror(errno);
    uint32_t resp[3] = {};
    ASSERT_EQ(read(doe, resp, sizeof resp), static_cast<ssize_t>(sizeof resp)) << strerror(errno);
    EXPECT_EQ(std::memcmp(resp, want, sizeof want), 0);
    uint32_t more = 0;
    EXPECT_EQ(read(doe, &more, sizeof more), 0);  // the end of the response
  }
  close(doe);
  // A power transition runs on the device's lane and is answered from there;
  // so is a BAR access that waits for it.
  // The writer holds the claim (its open), or the hand-over at the close
  // would bring the device back to D0.
  const std::string power = d.dev("0000:01:00.0") + "/power_state";
  const int pw = open(power.c_str(), O_WRONLY);
  ASSERT_GE(pw, 0) << strerror(errno);
  EXPECT_EQ(write(pw, "D3hot", 5), 5) << strerror(errno);
  EXPECT_EQ(read_text(power), "D3hot\n");
  EXPECT_EQ(write(pw, "D0", 2), 2) << strerror(errno);
  EXPECT_EQ(read_text(power), "D0\n");
  close(pw);
  // The simulated BAR's id register (backend/sim/bar_memory.hpp), through a
  // mapping: the fault is a read request of its own.
  const int bar = open((d.dev("0000:01:00.0") + "/resource0").c_str(), O_RDWR);
  ASSERT_GE(bar, 0) << strerror(errno);
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, bar, 0);
  ASSERT_NE(p, MAP_FAILED) << strerror(errno);
  EXPECT_EQ(static_cast<volatile uint32_t*>(p)[0x40 / 4], 0x50434946u);  // "PCIF"
  munmap(p, 4096);
  close(bar);
  const Rings after = rings_of(d.pid());
  EXPECT_GE(after.completions - before.completions, 40u);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// The allowed CPUs of one of pid's threads ("0-1"), and its name.
std::string task_field(pid_t pid, const std::string& tid, const std::string& key) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/task/" + tid + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      const size_t v = line.find_first_not_of(" \t", key.size() + 1);
      return v == std::string::npos ? "" : line.substr(v);
    }
  }
  return "";
}

std::vector<std::string> tasks_of(pid_t pid) {
  std::vector<std::string> out;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') out.emplace_back(e->d_name);
  }
  closedir(d);
  return out;
}

// Whether the CPU list ("0-3,6") holds cpu.
bool list_has(const std::string& list, unsigned cpu) {
  std::istringstream in(list);
  for (std::string part; std::getline(in, part, ',');) {
    const size_t dash = part.find('-');
    const unsigned lo = static_cast<unsigned>(std::stoul(part.substr(0, dash)));
    const unsigned hi =
        dash == std::string::npos ? lo : static_cast<unsigned>(std::stoul(part.substr(dash + 1)));
    if (cpu >= lo && cpu <= hi) return true;
  }
  return false;
}

// Each queue thread is pinned to its CPU (where the daemon may run there), so
// a request is served on its caller's CPU. A device's lane, which a handler
// starts from a queue thread, would inherit the pin and the name: it drops
// both. The lane is caught alive by holding a power transition in the
// simulator's stall gate (DeviceSpec::stall_file).
TEST_F(UringTest, QueueThreadsArePinnedAndALaneIsNot) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string stall = dir.path() + "/stall";
  TempFile set(R"({"devices": [{"bdf": "0000:03:00.0", "vendor": "0x1b36", "device": "0x10f0",
    "class": "0x050210", "config_size": 4096, "iommu_group": 7, "stall_file": ")" +
               stall + R"(", "capabilities": {"pm": {"no_soft_reset": true},
    "pcie": {"port": "endpoint"}}}]})");
  Daemon d({"--transport=uring", "--backend=sim:" + set.path()});
  ASSERT_TRUE(d.mounted()) << d.log();
  const pid_t pid = d.pid();
  const std::string all = task_field(pid, std::to_string(pid), "Cpus_allowed_list");
  ASSERT_FALSE(all.empty());
  int rings = 0;
  for (const auto& tid : tasks_of(pid)) {
    const std::string name = task_field(pid, tid, "Name");
    if (name.rfind("pcifs-ring", 0) != 0) continue;
    ++rings;
    const unsigned q = static_cast<unsigned>(std::stoul(name.substr(10)));
    EXPECT_EQ(task_field(pid, tid, "Cpus_allowed_list"), list_has(all, q) ? std::to_string(q) : all)
        << name;
  }
  EXPECT_EQ(rings, static_cast<int>(possible_cpus()));

  const std::string power = d.dev("0000:03:00.0") + "/power_state";
  const int pw = open(power.c_str(), O_WRONLY);
  ASSERT_GE(pw, 0) << strerror(errno);
  std::ofstream(stall) << "held\n";
  std::atomic<ssize_t> wrote{-2};
  std::thread writer([&] { wrote = write(pw, "D3hot", 5); });
  const bool entered = wait_until([&] { return access((stall + ".entered").c_str(), F_OK) == 0; });
  std::vector<std::string> lanes;
  for (const auto& tid : tasks_of(pid)) {
    if (task_field(pid, tid, "Name") == "pcifs-lane") {
      lanes.push_back(task_field(pid, tid, "Cpus_allowed_list"));
    }
  }
  (void)unlink(stall.c_str());
  writer.join();
  close(pw);
  (void)unlink((stall + ".entered").c_str());
  ASSERT_TRUE(entered) << "the transition never reached the device\n" << d.log();
  EXPECT_EQ(wrote.load(), 5) << strerror(errno);
  ASSERT_EQ(lanes.size(), 1u) << "the held transition runs on one lane";
  EXPECT_EQ(lanes[0], all) << "the lane kept a queue thread's pin";
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(UringTest, ManyCallersOnEveryCpuAreServed) {
  Daemon d({"--transport=uring"});
  ASSERT_TRUE(d.mounted()) << d.log();
  const std::string config = d.dev("0000:01:00.0") + "/config";
  auto first = pread_file(config, 4, 0);
  ASSERT_EQ(first.n, 4);
  constexpr int kProcs = 8, kReads = 3000;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    const pid_t k = fork();
    if (k == 0) {
      // Spread over the CPUs so that every queue takes requests.
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(static_cast<unsigned>(p) % possible_cpus(), &set);
      (void)sched_setaffinity(0, sizeof set, &set);
      const int fd = open(config.c_str(), O_RDONLY);
      if (fd < 0) _exit(2);
      for (int i = 0; i < kReads; ++i) {
        char v[4];
        if (pread(fd, v, 4, 0) != 4 || std::memcmp(v, first.data.data(), 4) != 0) _exit(3);
      }
      _exit(0);
    }
    ASSERT_GT(k, 0);
    kids.push_back(k);
  }
  for (pid_t k : kids) {
    int st = 0;
    ASSERT_TRUE(wait_until([&] { return waitpid(k, &st, WNOHANG) == k; })) << "a reader hangs";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "reader status " << st;
  }
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(UringTest, ADaemonStoppedUnderLoadEndsCleanly) {
  Daemon d({"--transport=uring"});
  ASSERT_TRUE(d.mounted()) << d.log();
  const std::string config = d.dev("0000:01:00.0") + "/config";
  auto* counts = static_cast<std::atomic<uint64_t>*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(counts, MAP_FAILED);
  std::vector<pid_t> kids;
  for (int p = 0; p < 4; ++p) {
    const pid_t k = fork();
    if (k == 0) {
      const int fd = open(config.c_str(), O_RDONLY);
      if (fd < 0) _exit(2);
      for (;;) {
        char v[4];
        if (pread(fd, v, 4, 0) != 4) {
          // The connection ended under the reader (the daemon closed it).
          _exit(errno == ENOTCONN || errno == ENODEV || errno == ECONNABORTED ? 0 : 4);
        }
        counts[p].fetch_add(1);
      }
    }
    ASSERT_GT(k, 0);
    kids.push_back(k);
  }
  // Every reader is under way before the stop.
  ASSERT_TRUE(wait_until([&] {
    for (int p = 0; p < 4; ++p) {
      if (counts[p].load() < 100) return false;
    }
    return true;
  }));
  // SIGTERM: the views end, the rings with them, the mount is detached and
  // its connection closed, though the readers hold their files.
  const int st = d.signal_and_wait(SIGTERM);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st << "\n" << d.log();
  for (pid_t k : kids) {
    int rst = 0;
    if (!wait_until([&] { return waitpid(k, &rst, WNOHANG) == k; })) {
      kill(k, SIGKILL);
      waitpid(k, &rst, 0);
      ADD_FAILURE() << "a reader hangs after the stop";
    }
    EXPECT_TRUE(WIFEXITED(rst) && WEXITSTATUS(rst) == 0) << "reader status " << rst;
  }
  munmap(counts, 4096);
}

TEST_F(UringTest, AutoFallsBackAndUringRefusesWhereTheKernelDoesNotOffer) {
  ASSERT_TRUE(set_switch(false));
  Daemon a({"--transport=auto"});
  ASSERT_TRUE(a.mounted()) << a.log();
  EXPECT_TRUE(wait_until([&] { return contains(a.log(), "requests over /dev/fuse"); })) << a.log();
  EXPECT_TRUE(contains(a.log(), "enable_uring")) << "the log says why\n" << a.log();
  EXPECT_EQ(rings_of(a.pid()).count, 0);
  EXPECT_EQ(pread_file(a.dev("0000:01:00.0") + "/vendor", 16, 0).data, "0x1b36\n");
  EXPECT_EQ(a.stop(), 0) << a.log();

  TempDir mnt;
  auto r = run_pcifs({"-f", "--transport=uring", mnt.path()}, {mnt.path()});
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "io_uring")) << r.err;
  EXPECT_EQ(proc_mounts_on(mnt.path()), 0) << "nothing stays mounted";
}

TEST_F(UringTest, TheFdStoreRefusesUring) {
  TempDir mnt;
  auto r = run_pcifs({"-f", "--fd-store", "--transport=uring", mnt.path()}, {mnt.path()});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "--fd-store")) << r.err;
  EXPECT_EQ(proc_mounts_on(mnt.path()), 0);
}

}  // namespace
}  // namespace pcifs::testing
