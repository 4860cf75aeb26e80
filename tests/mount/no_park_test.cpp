// Issue 12 §3: a FUSE worker never waits for a device operation that is not
// its own single access. Device A (0000:03:00.0) has the simulator's
// test-only stall gate (DeviceSpec::stall_file): while the file exists, its
// reset, power transitions and ROM reads wait, and say so by creating
// "<file>.entered". Device B (0000:04:00.0) is an ordinary device of the same
// daemon (16 FUSE workers).
//
//   StuckResetParksNoWorker: A is held in a reset while 64 threads read its
//     config and 16 its BAR; B still answers, while A is provably still stuck.
//     Before the fix the config readers parked every worker in the gate and
//     B's read hung (the bounded wait failed).
//   QuiesceGetsItsWriteback: the daemon has two FUSE workers. With a dirty
//     MAP_SHARED page of A's BAR, A is held in a ROM capture (it takes one
//     worker) while one thread writes power_state=D3hot and another turns
//     memory decode off through config: two control operations that quiesce.
//     The capture ends; the first quiesce invalidates the mapping, which waits
//     for the kernel's writeback of the page, a FUSE WRITE queued behind the
//     second operation's request. Before the fix both workers ended up parked
//     (one quiescing, one waiting for the control slot) and nothing served the
//     writeback: deadlock (the bounded wait failed, the daemon is killed and
//     lazily unmounted). Writes to one file are serialised by the kernel's
//     inode lock, so many writers of one file park only one worker: the small
//     pool is what makes the deadlock reachable with two files.
#include <linux/pci_regs.h>
#include <sys/syscall.h>

#include <atomic>
#include <deque>
#include <fstream>
#include <thread>

#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kA = "0000:03:00.0";
constexpr const char* kB = "0000:04:00.0";
constexpr off_t kCacheLine = 0x0c;                // PCI_CACHE_LINE_SIZE: read from the device
constexpr off_t kRamPage = 0x10000;               // BAR0 RAM, away from the registers
constexpr auto kHang = std::chrono::seconds(30);  // the hang guard of a bounded wait

std::string device_set(const std::string& stall) {
  return R"({"devices": [
    { "bdf": "0000:03:00.0", "vendor": "0x1b36", "device": "0x10f0", "class": "0x050210",
      "config_size": 4096, "iommu_group": 7, "stall_file": ")" +
         stall + R"(",
      "bars": [ { "index": 0, "type": "mem64", "prefetchable": true, "size": "0x100000",
                  "address": "0x8000000000" } ],
      "rom": { "size": "0x10000", "address": "0xfe010000",
               "images": [ { "size": "0x8000", "code_type": 0 } ] },
      "capabilities": { "pm": { "no_soft_reset": true }, "pcie": { "port": "endpoint" } } },
    { "bdf": "0000:04:00.0", "vendor": "0x1b36", "device": "0x10f1", "class": "0x058000",
      "config_size": 4096, "iommu_group": 8,
      "bars": [ { "index": 0, "type": "mem32", "size": "0x10000", "address": "0xfe100000" } ],
      "capabilities": { "pm": {}, "pcie": { "port": "endpoint" } } } ]})";
}

bool exists(const std::string& p) { return access(p.c_str(), F_OK) == 0; }

// The system call a thread of this process is blocked in (-1: running or gone):
// the evidence that a request has reached the mount and waits for its answer.
long blocked_in(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string first;
  if (!(f >> first) || first == "running") return -1;
  return std::strtol(first.c_str(), nullptr, 10);
}

// Threads that each run one blocking call on the mount. If some are still
// blocked when it goes (a failed assertion), `on_stuck` runs first: it kills
// the daemon, so that their calls return (ENOTCONN) and they can be joined.
class Crowd {
 public:
  explicit Crowd(std::function<void()> on_stuck) : on_stuck_(std::move(on_stuck)) {}
  ~Crowd() {
    if (done() != size()) on_stuck_();
    join();
  }
  void add(std::function<IoResult()> call) {
    auto* slot = &slots_.emplace_back();
    threads_.emplace_back([slot, call = std::move(call)] {
      slot->tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
      slot->result = call();
      slot->done.store(true);
    });
  }
  // All of them are blocked in `nr` (or done): their requests are in FUSE.
  bool all_blocked_in(long nr) const {
    for (const auto& s : slots_) {
      if (s.done.load()) continue;
      const pid_t tid = s.tid.load();
      if (tid == 0 || blocked_in(tid) != nr) return false;
    }
    return true;
  }
  size_t done() const {
    size_t n = 0;
    for (const auto& s : slots_) n += s.done.load() ? 1 : 0;
    return n;
  }
  size_t size() const { return slots_.size(); }
  const IoResult& result(size_t i) const { return slots_[i].result; }
  bool finished(size_t i) const { return slots_[i].done.load(); }
  void join() {
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  struct Slot {
    std::atomic<pid_t> tid{0};
    std::atomic<bool> done{false};
    IoResult result;
  };
  std::function<void()> on_stuck_;
  std::deque<Slot> slots_;
  std::vector<std::thread> threads_;
};

// One read or write on an fd opened beforehand: only the I/O reaches the
// mount while the device is held (an open would queue behind parked workers).
IoResult pread_fd(int fd, size_t len, off_t off) {
  IoResult r;
  r.data.resize(len);
  r.n = pread(fd, r.data.data(), len, off);
  r.err = r.n < 0 ? errno : 0;
  return r;
}
IoResult pwrite_fd(int fd, const std::string& data) {
  IoResult r;
  r.n = pwrite(fd, data.data(), data.size(), 0);
  r.err = r.n < 0 ? errno : 0;
  return r;
}

class NoParkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    char dir[] = "/tmp/pcifs-stall-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    stall_ = dir_ + "/stall";
    set_ = std::make_unique<TempFile>(device_set(stall_));
  }
  // The daemon, with its default worker pool unless `extra` says otherwise.
  void start(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), "--backend=sim:" + set_->path());
    d_ = std::make_unique<Daemon>(std::move(extra));
    ASSERT_TRUE(d_->mounted()) << d_->log();
    conn_ = fuse_connection_of(d_->mnt());
  }
  void TearDown() override {
    release();
    if (d_) d_->stop();
    if (d_) unmount_all_on(d_->mnt());
    (void)unlink((stall_ + ".entered").c_str());
    if (!dir_.empty()) rmdir(dir_.c_str());
  }
  std::string path(const char* bdf, const char* file) const { return d_->dev(bdf) + "/" + file; }
  void hold() { std::ofstream(stall_) << "held\n"; }
  void release() { (void)unlink(stall_.c_str()); }
  bool entered() const { return exists(stall_ + ".entered"); }
  // A hang: let everything go (the stall, the connection, then the daemon) so
  // that the test's threads return and the mount goes; the caller's assertion
  // reports it. The abort comes first: a daemon thread waiting for a
  // writeback no worker serves is in an uninterruptible wait SIGKILL cannot
  // end.
  void give_up() {
    release();
    if (!d_) return;
    abort_fuse_connection(conn_);
    d_->signal_and_wait(SIGKILL);
    // A dead connection fails statfs (ENOTCONN): the fixture cannot see it.
    unmount_all_on(d_->mnt());
    d_->stop();
  }

  std::string dir_, stall_;
  unsigned conn_ = 0;
  std::unique_ptr<TempFile> set_;
  std::unique_ptr<Daemon> d_;
};

TEST_F(NoParkTest, StuckResetParksNoWorker) {
  ASSERT_NO_FATAL_FAILURE(start());
  // Control: B and A answer before anything is stuck.
  ASSERT_EQ(pread_file(path(kB, "config"), 4, kCacheLine).n, 4);
  ASSERT_EQ(pread_file(path(kA, "config"), 4, kCacheLine).n, 4);
  std::vector<Fd> fds;
  for (int i = 0; i < 64; ++i) fds.emplace_back(path(kA, "config"), O_RDONLY);
  for (int i = 0; i < 16; ++i) fds.emplace_back(path(kA, "resource0"), O_RDONLY);
  Fd b_cfg(path(kB, "config"), O_RDONLY), b_bar(path(kB, "resource0"), O_RDONLY);
  Fd reset_fd(path(kA, "reset"), O_WRONLY);
  for (const auto& f : fds) ASSERT_TRUE(f.ok()) << strerror(f.err());
  ASSERT_TRUE(b_cfg.ok() && b_bar.ok() && reset_fd.ok());
  hold();
  Crowd reset([this] { give_up(); }), readers([this] { give_up(); });
  reset.add([&] { return pwrite_fd(reset_fd.get(), "1"); });
  ASSERT_TRUE(wait_until([&] { return entered(); })) << "A's reset never reached the device\n"
                                                     << d_->log();
  for (size_t i = 0; i < 64; ++i) {
    readers.add([&, i] { return pread_fd(fds[i].get(), 4, kCacheLine); });
  }
  for (size_t i = 64; i < 80; ++i) {
    readers.add([&, i] { return pread_fd(fds[i].get(), 8, kRamPage); });
  }
  // Every config read has reached the mount (a reader blocked in pread64); the
  // BAR reads of a quiesced device fail at once.
  ASSERT_TRUE(wait_until([&] { return readers.all_blocked_in(SYS_pread64); }));
  // B answers while A is still stuck: the assertion is the gate, not a time.
  Crowd other([this] { give_up(); });
  const auto t0 = std::chrono::steady_clock::now();
  other.add([&] { return pread_fd(b_cfg.get(), 4, kCacheLine); });
  other.add([&] { return pread_fd(b_bar.get(), 8, 0x40); });
  const bool answered = wait_until([&] { return other.done() == other.size(); }, kHang);
  const auto waited = std::chrono::steady_clock::now() - t0;
  // A's BAR reads fail fast (EIO, a quiesced device); on a loaded machine
  // their threads may still be on the way back: wait for them, not for luck.
  const bool bar_done = wait_until([&] {
    size_t n = 0;
    for (size_t i = 64; i < readers.size(); ++i) n += readers.finished(i) ? 1 : 0;
    return n == 16;
  });
  const bool still_stuck = reset.done() == 0 && exists(stall_);
  size_t config_ended = 0;
  for (size_t i = 0; i < 64; ++i) config_ended += readers.finished(i) ? 1 : 0;
  if (!answered) give_up();
  ASSERT_TRUE(answered) << "device B hung behind A's stuck reset (workers parked)";
  std::printf("B answered in %.3f ms while A was held in its reset\n",
              std::chrono::duration<double, std::milli>(waited).count());
  EXPECT_TRUE(still_stuck) << "A's reset was not held while B answered: the test proves nothing";
  EXPECT_TRUE(bar_done) << "A's BAR reads did not fail fast";
  EXPECT_EQ(config_ended, 0u) << "a config read ended while the reset was held";
  EXPECT_EQ(other.result(0).n, 4) << strerror(other.result(0).err);
  EXPECT_EQ(other.result(1).n, 8) << strerror(other.result(1).err);
  // Let A go: its reset ends, every waiting config read is answered then.
  release();
  ASSERT_TRUE(
      wait_until([&] { return reset.done() == 1 && readers.done() == readers.size(); }, kHang));
  EXPECT_EQ(reset.result(0).n, 1) << strerror(reset.result(0).err);
  size_t ok = 0;
  for (size_t i = 0; i < 64; ++i) ok += readers.result(i).n == 4 ? 1 : 0;
  EXPECT_EQ(ok, 64u) << "config reads are answered after the reset, not refused";
  for (size_t i = 64; i < readers.size(); ++i) {
    EXPECT_EQ(readers.result(i).err, EIO) << "a quiesced BAR fails fast with EIO";
  }
}

TEST_F(NoParkTest, QuiesceGetsItsWriteback) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-threads=2"}));
  const std::string bar = path(kA, "resource0");
  Fd fd(bar, O_RDWR);  // claims A for this process [S11]
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  Fd cfg(path(kA, "config"), O_RDWR), power(path(kA, "power_state"), O_WRONLY);
  Fd rom(path(kA, "rom"), O_RDONLY);
  ASSERT_TRUE(cfg.ok() && power.ok() && rom.ok());
  const Reg cmd = reg_get(cfg.get(), PCI_COMMAND, 2);
  ASSERT_EQ(cmd.n, 2) << strerror(cmd.err);
  ASSERT_TRUE(cmd.value & PCI_COMMAND_MEMORY) << "memory decode must start on";
  void* ram = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), kRamPage);
  ASSERT_NE(ram, MAP_FAILED) << strerror(errno);
  const uint64_t v = 0x5ca1ab1e0ddba11ull;
  static_cast<volatile uint64_t*>(ram)[3] = v;  // dirty, not yet written back
  // (No control read here: a direct_io read of the BAR writes the page back.)
  hold();
  Crowd capture([this] { give_up(); }), ops([this] { give_up(); });
  capture.add([&] { return pread_fd(rom.get(), 4, 0); });
  ASSERT_TRUE(wait_until([&] { return entered(); })) << "A's ROM capture never reached the device\n"
                                                     << d_->log();
  ops.add([&] { return pwrite_fd(power.get(), "D3hot"); });
  ops.add([&] {
    const Reg w = reg_put(cfg.get(), PCI_COMMAND, 2, cmd.value & ~uint64_t{PCI_COMMAND_MEMORY});
    IoResult r;
    r.n = w.n;
    r.err = w.err;
    return r;
  });
  // Both requests are in FUSE's queue before the writeback is: the order that
  // deadlocked.
  ASSERT_TRUE(wait_until([&] { return ops.all_blocked_in(SYS_pwrite64); }));
  release();  // the capture ends; a quiesce waits for the writeback
  const bool finished =
      wait_until([&] { return capture.done() == 1 && ops.done() == ops.size(); }, kHang);
  if (!finished) give_up();
  munmap(ram, 4096);
  ASSERT_TRUE(finished) << "deadlock: the quiesce waits for a writeback no worker can serve";
  EXPECT_EQ(capture.result(0).n, 4) << strerror(capture.result(0).err);
  EXPECT_EQ(ops.result(0).n, 5) << "power_state: " << strerror(ops.result(0).err);
  EXPECT_EQ(ops.result(1).n, 2) << "config: " << strerror(ops.result(1).err);
  EXPECT_EQ(read_text(path(kA, "power_state")), "D3hot\n");
  // Back to D0 with memory decode on: the page reached the device.
  ASSERT_EQ(pwrite(power.get(), "D0", 2, 0), 2) << strerror(errno);
  const Reg on = reg_put(cfg.get(), PCI_COMMAND, 2, cmd.value);
  ASSERT_EQ(on.n, 2) << strerror(on.err);
  EXPECT_EQ(reg_get(fd.get(), kRamPage + 24, 8).value, v) << "the dirty page was not written back";
}

}  // namespace
}  // namespace pcifs::testing
