// Two pcifs daemons on the same devices (two pcifs@ units whose views
// overlap): the first to attach a device mediates it; the other serves it
// read-only, as it would a device bound to a driver, and says who holds it
// [S6.3, S15]. Real daemons on a sysfs-shaped temp tree, each with its own
// mountpoint, sharing a temp --lock-dir.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <filesystem>

#include "fixtures/mount_util.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

constexpr char kBdf[] = "0000:03:00.0";
constexpr uint64_t kBarLen = 4096;

nlohmann::json device_of(const Daemon& d) { return device_status(status_of(d.mnt()), kBdf); }

class HostLeaseMountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    FakeFunction f;
    f.bdf = kBdf;
    f.config = make_config(0x1b36, 0x0010, 0x010802, 256);
    f.config[PCI_COMMAND] = PCI_COMMAND_MEMORY;
    f.resources.resize(7);
    f.resources[0] = {0xfe000000, 0xfe000000 + kBarLen - 1, backend::kResourceMem};
    f.bar_files[0] = kBarLen;
    f.iommu_group = 9;
    tree_.add(f);
    char dir[] = "/tmp/pcifs-locks-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    locks_ = dir;
  }
  void TearDown() override {
    for (auto& d : daemons_) {
      if (d->pid() <= 0) continue;  // stopped by the test
      const std::string log = d->log();
      EXPECT_TRUE(d->alive()) << log;
      EXPECT_EQ(d->stop(), 0) << log;
    }
    std::error_code ec;
    std::filesystem::remove_all(locks_, ec);
  }
  Daemon& start(const std::string& lock_dir) {
    daemons_.push_back(std::make_unique<Daemon>(
        std::vector<std::string>{"--backend=sysfs:" + tree_.root(), "--lock-dir=" + lock_dir}));
    EXPECT_TRUE(daemons_.back()->mounted()) << daemons_.back()->log();
    return *daemons_.back();
  }
  // Lease files only: the step journal (DIR/steps) exists while a hand-over
  // runs, and a clean stop must leave nothing at all (entries()).
  size_t lock_files() const {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(locks_))
      n += e.path().extension() == ".lock";
    return n;
  }
  size_t entries() const {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(locks_)) ++n;
    return n;
  }

  SysfsTree tree_;
  std::string locks_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

TEST_F(HostLeaseMountTest, TheSecondDaemonServesTheDeviceReadOnlyAndNamesTheFirst) {
  Daemon& first = start(locks_);
  Daemon& second = start(locks_);
  ASSERT_TRUE(first.mounted() && second.mounted());
  EXPECT_EQ(lock_files(), 1u);

  EXPECT_EQ(open_errno(first.dev(kBdf) + "/resource0", O_RDWR), 0);
  EXPECT_EQ(open_errno(first.dev(kBdf) + "/power_state", O_WRONLY), 0);

  for (const char* name : {"resource0", "power_state", "reset"}) {
    EXPECT_EQ(open_errno(second.dev(kBdf) + "/" + name, O_WRONLY), EBUSY) << name;
  }
  EXPECT_EQ(open_errno(second.dev(kBdf) + "/config", O_RDWR), EBUSY);
  auto id = pread_file(second.dev(kBdf) + "/config", 4, 0);  // reads still pass
  ASSERT_EQ(id.n, 4);
  EXPECT_EQ(id.data, std::string("\x36\x1b\x10\x00", 4));  // 1b36:0010

  const std::string holder = "served by another pcifs daemon (pid " + std::to_string(first.pid());
  EXPECT_NE(second.log().find(holder), std::string::npos) << second.log();
  EXPECT_NE(device_of(second).value("read_only", "").find(holder), std::string::npos);
  EXPECT_FALSE(device_of(first).contains("read_only"));
}

// Negative controls: a daemon with no leases, or leases kept elsewhere,
// mediates the device beside the first.
TEST_F(HostLeaseMountTest, WithoutSharedLeasesBothDaemonsMediate) {
  Daemon& first = start(locks_);
  Daemon& unleased = start("none");
  char other[] = "/tmp/pcifs-locks-XXXXXX";
  ASSERT_NE(mkdtemp(other), nullptr);
  Daemon& elsewhere = start(other);
  for (Daemon* d : {&first, &unleased, &elsewhere}) {
    EXPECT_EQ(open_errno(d->dev(kBdf) + "/resource0", O_RDWR), 0) << d->mnt();
  }
  elsewhere.stop();
  std::filesystem::remove_all(other);
}

TEST_F(HostLeaseMountTest, TheLeaseEndsWithTheDaemon) {
  Daemon& first = start(locks_);
  ASSERT_TRUE(first.mounted());
  EXPECT_EQ(lock_files(), 1u);
  EXPECT_EQ(first.stop(), 0);
  EXPECT_EQ(entries(), 0u);  // nothing left behind after a clean stop
  Daemon& next = start(locks_);
  EXPECT_EQ(open_errno(next.dev(kBdf) + "/resource0", O_RDWR), 0);
}

// The second daemon keeps asking: once the first ends, it mediates the device
// itself (within its one-second retry), and the handles it had opened on the
// read-only device end with ENODEV, as after a driver unbind.
TEST_F(HostLeaseMountTest, WhenTheFirstDaemonEndsTheSecondTakesOver) {
  Daemon& first = start(locks_);
  Daemon& second = start(locks_);
  ASSERT_TRUE(first.mounted() && second.mounted());
  const int cfg = open((second.dev(kBdf) + "/config").c_str(), O_RDONLY);
  ASSERT_GE(cfg, 0);
  EXPECT_EQ(open_errno(second.dev(kBdf) + "/resource0", O_RDWR), EBUSY);
  EXPECT_EQ(first.stop(), 0);
  eventually([&] { return open_errno(second.dev(kBdf) + "/resource0", O_RDWR) == 0; });
  ASSERT_TRUE(wait_handed_over(second.dev(kBdf)));  // that open's claim ended with it
  EXPECT_EQ(open_errno(second.dev(kBdf) + "/resource0", O_RDWR), 0) << second.log();
  ASSERT_TRUE(wait_handed_over(second.dev(kBdf)));
  char b[4];
  EXPECT_EQ(pread(cfg, b, 4, 0), -1);
  EXPECT_EQ(errno, ENODEV);
  close(cfg);
  EXPECT_NE(second.log().find("the other pcifs daemon let go"), std::string::npos) << second.log();
  EXPECT_FALSE(device_of(second).contains("read_only"));
  EXPECT_EQ(lock_files(), 1u);  // the second's now
}

}  // namespace
}  // namespace pcifs::testing
