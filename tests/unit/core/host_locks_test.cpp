// HostLocks (fs/core/host_locks.hpp) and what the Mediator does with them:
// one daemon mediates a device, another serves it read-only [S6.3, S15].
#include "core/host_locks.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

namespace fs = std::filesystem;
using core::HostLocks;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pcifs-locks-XXXXXX";
    path_ = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

TEST(HostLocksTest, ALeaseIsExclusiveAndNamesItsHolder) {
  TempDir t;
  HostLocks a(t.sub("locks"), "/sys/bus/pci", "pid 1, view a");
  HostLocks b(t.sub("locks"), "/sys/bus/pci", "pid 2, view b");
  auto got = a.acquire("group:7");
  ASSERT_TRUE(got.lease);
  EXPECT_FALSE(got.holder || got.error);
  auto refused = b.acquire("group:7");
  EXPECT_FALSE(refused.lease);
  ASSERT_TRUE(refused.holder);
  EXPECT_EQ(*refused.holder, "pid 1, view a");
  EXPECT_EQ(a.path_of("group:7"), t.sub("locks") + "/-sys-bus-pci.group-7.lock");
}

// Negative controls: another group, another root or another lock directory
// is another lease.
TEST(HostLocksTest, OtherGroupsRootsAndDirectoriesDoNotConflict) {
  TempDir t;
  HostLocks a(t.sub("locks"), "/sys/bus/pci", "a");
  auto held = a.acquire("group:7");
  ASSERT_TRUE(held.lease);
  EXPECT_TRUE(HostLocks(t.sub("locks"), "/sys/bus/pci", "b").acquire("group:8").lease);
  EXPECT_TRUE(HostLocks(t.sub("locks"), "/tmp/tree/sys/bus/pci", "b").acquire("group:7").lease);
  EXPECT_TRUE(HostLocks(t.sub("other"), "/sys/bus/pci", "b").acquire("group:7").lease);
}

TEST(HostLocksTest, EndingTheLeaseFreesItAndRemovesTheFile) {
  TempDir t;
  HostLocks a(t.sub("locks"), "/r", "a");
  HostLocks b(t.sub("locks"), "/r", "b");
  auto held = a.acquire("device:0000:01:00.0");
  ASSERT_TRUE(held.lease);
  const std::string file = a.path_of("device:0000:01:00.0");
  EXPECT_TRUE(fs::exists(file));
  EXPECT_FALSE(b.acquire("device:0000:01:00.0").lease);
  held.lease.reset();
  EXPECT_FALSE(fs::exists(file));
  auto now = b.acquire("device:0000:01:00.0");
  ASSERT_TRUE(now.lease);
  std::ifstream in(file);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "b");
}

TEST(HostLocksTest, FunctionsOfOneGroupShareTheProcesssLease) {
  TempDir t;
  HostLocks a(t.sub("locks"), "/r", "a");
  auto first = a.acquire("group:2");
  auto second = a.acquire("group:2");
  ASSERT_TRUE(first.lease && second.lease);
  EXPECT_EQ(first.lease, second.lease);
  first.lease.reset();  // the other function still holds the group
  EXPECT_TRUE(HostLocks(t.sub("locks"), "/r", "b").acquire("group:2").holder);
  second.lease.reset();
  EXPECT_TRUE(HostLocks(t.sub("locks"), "/r", "b").acquire("group:2").lease);
}

// A daemon killed with SIGKILL runs no destructor; the kernel still drops its
// lock, and the stale file names nobody once it is taken over.
TEST(HostLocksTest, AKilledHolderHoldsNothing) {
  TempDir t;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    HostLocks mine(t.sub("locks"), "/r", "pid child");
    auto got = mine.acquire("group:1");
    const char c = got.lease ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    pause();
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  EXPECT_EQ(c, 'y');
  HostLocks parent(t.sub("locks"), "/r", "pid parent");
  auto refused = parent.acquire("group:1");
  ASSERT_TRUE(refused.holder);
  EXPECT_EQ(*refused.holder, "pid child");
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(fs::exists(parent.path_of("group:1")));  // left behind, unlocked
  EXPECT_TRUE(parent.acquire("group:1").lease);
  close(ready[0]);
  close(ready[1]);
}

TEST(HostLocksTest, LongRootsAreHashedIntoShortDistinctNames) {
  TempDir t;
  const std::string long1 = "/tmp/" + std::string(200, 'x') + "/sys/bus/pci";
  const std::string long2 = "/tmp/" + std::string(200, 'y') + "/sys/bus/pci";
  HostLocks a(t.sub("locks"), long1, "a");
  HostLocks b(t.sub("locks"), long2, "b");
  EXPECT_LT(fs::path(a.path_of("group:1")).filename().string().size(), 64u);
  EXPECT_NE(a.path_of("group:1"), b.path_of("group:1"));
  auto ha = a.acquire("group:1");
  EXPECT_TRUE(ha.lease);
  EXPECT_TRUE(b.acquire("group:1").lease);
}

TEST(HostLocksTest, AnUnusableDirectoryIsAnErrorNotALease) {
  TempDir t;
  std::ofstream(t.sub("file")) << "x";
  HostLocks a(t.sub("file") + "/locks", "/r", "a");
  auto got = a.acquire("group:1");
  EXPECT_FALSE(got.lease);
  EXPECT_FALSE(got.holder);
  ASSERT_TRUE(got.error);
  EXPECT_NE(got.error->find(t.sub("file")), std::string::npos) << *got.error;
}

// Three "daemons" take and end the same lease as fast as they can: never are
// both holding it. Ending a lease unlinks the file while another may be
// opening it; the inode check is what keeps this at one.
TEST(HostLocksTest, TakeoversRacingWithUnlinkNeverMakeTwoHolders) {
  TempDir t;
  std::atomic<int> holders{0};
  std::atomic<int> worst{0};
  std::atomic<int> leases{0};
  // Until 300 leases were taken in all (not a fixed number of tries: on a
  // loaded machine most tries meet a holder); the deadline only guards a hang.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto run = [&](const std::string& owner) {
    HostLocks mine(t.sub("locks"), "/r", owner);
    while (leases.load() < 300 && std::chrono::steady_clock::now() < deadline) {
      auto got = mine.acquire("group:1");
      if (!got.lease) continue;
      const int now = ++holders;
      int w = worst.load();
      while (now > w && !worst.compare_exchange_weak(w, now)) {
      }
      leases++;
      std::this_thread::yield();
      --holders;
    }
  };
  std::thread a(run, "a"), b(run, "b"), c(run, "c");
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(worst.load(), 1);
  EXPECT_GE(leases.load(), 300) << "the racers hardly ever got the lease";
}

// --- the Mediator: a device whose lease another daemon holds is read-only.

// The simulated set, presented as if other processes could reach it.
class SharedSim : public backend::Backend {
 public:
  SharedSim() : inner_(backend::sim::make_default_backend()) {}
  std::string describe() const override { return "shared " + inner_->describe(); }
  std::optional<std::string> shared_root() const override { return "/test/shared-sim"; }
  std::vector<std::shared_ptr<backend::Device>> devices() override { return inner_->devices(); }
  void set_hotplug_callback(backend::HotplugFn fn) override {
    inner_->set_hotplug_callback(std::move(fn));
  }

 private:
  std::shared_ptr<backend::sim::SimBackend> inner_;
};

MediatorOptions leased(const std::string& dir, const std::string& owner,
                       std::function<bool(const backend::DeviceInfo&)> serves = {},
                       std::chrono::milliseconds retry = std::chrono::seconds(1)) {
  MediatorOptions o;
  o.doe_timeout = std::chrono::milliseconds(100);
  HostLockOptions hl;
  hl.dir = dir;
  hl.owner = owner;
  hl.retry = retry;
  hl.serves = serves ? std::move(serves) : [](const backend::DeviceInfo&) { return true; };
  o.host_locks = std::move(hl);
  return o;
}

size_t feature_files(const Mediator& m, const Bdf& b) {
  size_t n = 0;
  for (const auto& f : m.files(0, b).value_or(std::vector<FileEntry>{})) {
    n += f.name.rfind("doe_features/", 0) == 0 ? 1 : 0;
  }
  return n;
}

Result<HandleId> open_as_root(Mediator& m, const Bdf& b, FileKind k, bool write) {
  const bool write_only = k == FileKind::kReset || k == FileKind::kRemove;
  return m.open(0, kRoot, FileRef{b, k, 0, {}}, OpenFlags{!write_only, write, false});
}

TEST(HostLeaseMediatorTest, TheSecondDaemonOnlyReads) {
  TempDir t;
  Mediator first(std::make_shared<SharedSim>(), leased(t.path(), "pid 1, view first"));
  first.add_view(ViewPolicy{});
  Mediator second(std::make_shared<SharedSim>(), leased(t.path(), "pid 2, view second"));
  second.add_view(ViewPolicy{});
  first.wait_for_discovery();
  second.wait_for_discovery();

  // The first mediates in full.
  auto bar = open_as_root(first, kEp0, FileKind::kBar, true);
  ASSERT_TRUE(bar.ok());
  EXPECT_TRUE(open_as_root(first, kEp0, FileKind::kDoe, true).ok());
  EXPECT_GT(feature_files(first, kEp0), 0u);

  // The second: reads pass, everything that could disturb the device is EBUSY.
  auto cfg = open_as_root(second, kEp0, FileKind::kConfig, false);
  ASSERT_TRUE(cfg.ok());
  std::vector<uint8_t> id(4);
  EXPECT_TRUE(second.read(*cfg, 0, id).ok());
  for (FileKind k : {FileKind::kBar, FileKind::kDoe, FileKind::kConfig, FileKind::kPowerState,
                     FileKind::kReset}) {
    auto r = open_as_root(second, kEp0, k, true);
    ASSERT_FALSE(r.ok()) << static_cast<int>(k);
    EXPECT_EQ(r.error(), Errno(EBUSY)) << static_cast<int>(k);
  }
  auto rom = open_as_root(second, kEp0, FileKind::kRom, false);
  ASSERT_TRUE(rom.ok());
  std::vector<uint8_t> sig(2);
  EXPECT_EQ(second.read(*rom, 0, sig).error(), Errno(EBUSY));
  // No Discovery ran from the second daemon: it lists the kernel's (none here).
  EXPECT_EQ(feature_files(second, kEp0), 0u);
  const std::string status = second.status_json(0);
  EXPECT_NE(status.find("served by another pcifs daemon (pid 1, view first)"), std::string::npos)
      << status;
  EXPECT_EQ(first.status_json(0).find("read_only"), std::string::npos);
}

// Negative controls: without leases, or for a device no view of the first
// daemon selects, both daemons mediate.
TEST(HostLeaseMediatorTest, WithoutLeasesOrOverlapBothMediate) {
  TempDir t;
  {
    MediatorOptions plain;
    Mediator a(std::make_shared<SharedSim>(), plain);
    a.add_view(ViewPolicy{});
    Mediator b(std::make_shared<SharedSim>(), plain);
    b.add_view(ViewPolicy{});
    EXPECT_TRUE(open_as_root(a, kEp2, FileKind::kPowerState, true).ok());
    EXPECT_TRUE(open_as_root(b, kEp2, FileKind::kPowerState, true).ok());
  }
  Mediator a(std::make_shared<SharedSim>(),
             leased(t.path(), "a", [](const backend::DeviceInfo& i) { return i.bdf == kEp0; }));
  a.add_view(ViewPolicy{});
  Mediator b(std::make_shared<SharedSim>(), leased(t.path(), "b"));
  b.add_view(ViewPolicy{});
  EXPECT_TRUE(open_as_root(a, kEp0, FileKind::kPowerState, true).ok());
  EXPECT_EQ(open_as_root(b, kEp0, FileKind::kPowerState, true).error(), Errno(EBUSY));
  EXPECT_TRUE(open_as_root(b, kEp2, FileKind::kPowerState, true).ok());  // a does not serve it
}

TEST(HostLeaseMediatorTest, TheLeaseEndsWithTheDaemonAndWithTheDevice) {
  TempDir t;
  auto first = std::make_unique<Mediator>(std::make_shared<SharedSim>(), leased(t.path(), "1"));
  first->add_view(ViewPolicy{});
  {
    Mediator refused(std::make_shared<SharedSim>(), leased(t.path(), "2"));
    refused.add_view(ViewPolicy{});
    EXPECT_EQ(open_as_root(refused, kEp2, FileKind::kBar, true).error(), Errno(EBUSY));
  }
  // The device leaves the first daemon (hot-remove): its group is free.
  auto rm = open_as_root(*first, kEp2, FileKind::kRemove, true);
  ASSERT_TRUE(rm.ok());
  const std::string one = "1";
  ASSERT_TRUE(first->write(*rm, 0, {reinterpret_cast<const uint8_t*>(one.data()), 1}).ok());
  {
    Mediator next(std::make_shared<SharedSim>(), leased(t.path(), "3"));
    next.add_view(ViewPolicy{});
    EXPECT_TRUE(open_as_root(next, kEp2, FileKind::kBar, true).ok());
    EXPECT_EQ(open_as_root(next, kEp0, FileKind::kBar, true).error(), Errno(EBUSY));
  }
  first.reset();  // the daemon ends: every lease with it
  Mediator last(std::make_shared<SharedSim>(), leased(t.path(), "4"));
  last.add_view(ViewPolicy{});
  EXPECT_TRUE(open_as_root(last, kEp0, FileKind::kBar, true).ok());
}

// A refused daemon keeps trying: while the holder lives nothing changes;
// once it ends, the device leaves the refused daemon's read-only state (its
// handles end) and arrives mediated in full, Discovery included.
TEST(HostLeaseMediatorTest, ARefusedDaemonTakesOverWhenTheHolderEnds) {
  TempDir t;
  const auto fast = std::chrono::milliseconds(20);
  auto first = std::make_unique<Mediator>(std::make_shared<SharedSim>(), leased(t.path(), "1"));
  first->add_view(ViewPolicy{});
  Mediator second(std::make_shared<SharedSim>(), leased(t.path(), "2", {}, fast));
  second.add_view(ViewPolicy{});
  auto cfg = open_as_root(second, kEp0, FileKind::kConfig, false);
  ASSERT_TRUE(cfg.ok());
  std::this_thread::sleep_for(10 * fast);  // ten retries while the holder lives
  EXPECT_EQ(open_as_root(second, kEp0, FileKind::kBar, true).error(), Errno(EBUSY));
  EXPECT_EQ(feature_files(second, kEp0), 0u);

  first.reset();
  // Group by group, in one pass of the watcher: wait until none is left.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (second.status_json(0).find("read_only") != std::string::npos &&
         std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(fast);
  }
  ASSERT_EQ(second.status_json(0).find("read_only"), std::string::npos);
  EXPECT_TRUE(open_as_root(second, kEp0, FileKind::kBar, true).ok());
  EXPECT_TRUE(open_as_root(second, kEp2, FileKind::kPowerState, true).ok());
  second.wait_for_discovery();
  EXPECT_GT(feature_files(second, kEp0), 0u);
  std::vector<uint8_t> id(4);
  EXPECT_EQ(second.read(*cfg, 0, id).error(), Errno(ENODEV));  // the read-only state's handle
}

}  // namespace
}  // namespace pcifs::test
