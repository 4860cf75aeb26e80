// The config shadow through the mount [S15], on a sysfs-shaped temp tree whose
// `config` file the test changes behind the daemon's back (as a device would):
//  - volatile registers (Command, a device-specific byte) show the new value
//    at once: a reader sees what the device holds at the time of the read;
//  - the negative control: a fixed register (Vendor ID) changed the same way
//    keeps its verified value, so the shadow really is in use (and the first
//    check is not passing for want of one);
//  - a device that reads all-ones shows all-ones, not its old IDs.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include "fixtures/mount_fixture.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

constexpr char kBdf[] = "0000:03:00.0";

class ShadowMountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    FakeFunction f;
    f.bdf = kBdf;
    f.config = make_config(0x1af4, 0x1041, 0x020000, 256);
    f.config[0x80] = 0x11;  // a device-specific register outside every capability
    dir_ = tree_.add(f);
    d_ = std::make_unique<Daemon>(std::vector<std::string>{"--backend=sysfs:" + tree_.root()});
    ASSERT_TRUE(d_->mounted()) << d_->log();
  }
  void TearDown() override {
    if (!d_) return;
    const bool alive = d_->alive();
    const std::string log = d_->log();
    EXPECT_TRUE(alive) << log;
    EXPECT_EQ(d_->stop(), 0) << log;
  }
  // The device changes a byte of its config space.
  void device_sets(size_t off, uint8_t v) {
    auto c = SysfsTree::read_file(dir_ + "/config");
    ASSERT_GT(c.size(), off);
    c[off] = v;
    SysfsTree::write(dir_ + "/config", c);
  }
  std::string config(size_t len = 256) {
    auto r = pread_file(d_->dev(kBdf) + "/config", len, 0);
    EXPECT_EQ(r.n, static_cast<ssize_t>(len)) << r.err;
    return r.data;
  }
  static unsigned u8(const std::string& s, size_t off) { return static_cast<uint8_t>(s.at(off)); }

  SysfsTree tree_;
  std::string dir_;
  std::unique_ptr<Daemon> d_;
};

TEST_F(ShadowMountTest, VolatileRegistersAreLiveAndFixedOnesComeFromTheShadow) {
  std::string before = config();
  ASSERT_EQ(u8(before, PCI_VENDOR_ID), 0xf4u);
  ASSERT_EQ(u8(before, 0x80), 0x11u);

  device_sets(PCI_COMMAND, 0x06);
  device_sets(0x80, 0x22);
  device_sets(PCI_VENDOR_ID, 0xaa);
  std::string after = config();
  EXPECT_EQ(u8(after, PCI_COMMAND), 0x06u) << "Command is volatile: read at the time of the read";
  EXPECT_EQ(u8(after, 0x80), 0x22u) << "device-specific bytes are never shadowed";
  EXPECT_EQ(u8(after, PCI_VENDOR_ID), 0xf4u) << "Vendor ID cannot change: served from the shadow";
  // The kernel's sysfs would answer a one-byte read the same way.
  auto one = pread_file(d_->dev(kBdf) + "/config", 1, PCI_COMMAND);
  ASSERT_EQ(one.n, 1);
  EXPECT_EQ(u8(one.data, 0), 0x06u);
}

TEST_F(ShadowMountTest, ADeviceThatReadsAllOnesShowsAllOnes) {
  SysfsTree::write(dir_ + "/config", std::vector<uint8_t>(256, 0xff));
  std::string c = config(64);
  EXPECT_EQ(u8(c, PCI_VENDOR_ID), 0xffu);
  EXPECT_EQ(u8(c, PCI_DEVICE_ID + 1), 0xffu);
  EXPECT_EQ(u8(c, PCI_CLASS_DEVICE + 1), 0xffu);
}

}  // namespace
}  // namespace pcifs::testing
