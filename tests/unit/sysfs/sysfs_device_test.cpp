// SysfsDevice over a sysfs-shaped temp tree: attributes, config, BARs, ROM,
// power, reset and vanished devices. Nothing here touches /sys.
#include "sysfs/sysfs_device.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include "fixtures/sysfs_tree.hpp"
#include "sysfs/sysfs_backend.hpp"

namespace pcifs::backend::sysfs {
namespace {

using pcifs::testing::FakeFunction;
using pcifs::testing::SysfsTree;

constexpr uint8_t kPm = 0x40;
constexpr uint32_t kPmcsr = kPm + PCI_PM_CTRL;
constexpr uint64_t kBar0Size = 16384;

FakeFunction endpoint() {
  FakeFunction f;
  f.bdf = "0000:01:00.0";
  f.config = pcifs::testing::make_config(0x1b36, 0x0010, 0x050210, 4096, kPm,
                                         PCI_PM_CTRL_PME_STATUS | PCI_PM_CTRL_PME_ENABLE);
  for (size_t i = 0x100; i < f.config.size(); ++i) f.config[i] = static_cast<uint8_t>(i * 7);
  f.resources.resize(7);
  f.resources[0] = {0xfe000000, 0xfe000000 + kBar0Size - 1,
                    kResourceMem | kResourceMem64 | kResourcePrefetch};
  f.resources[2] = {0xfe100000, 0xfe10ffff, kResourceMem};  // no resource2 file
  f.resources[4] = {0xe000, 0xe0ff, kResourceIo};
  f.resources[6] = {0xfe200000, 0xfe20ffff, kResourceMem | kResourceReadonly};
  f.bar_files = {{0, kBar0Size}, {4, 256}};
  std::vector<uint8_t> rom(1000);
  for (size_t i = 0; i < rom.size(); ++i) rom[i] = static_cast<uint8_t>(i ^ 0x5a);
  f.rom = rom;
  f.reset_file = true;
  f.driver = "pci-stub";
  f.iommu_group = 2;
  f.doe_features = {"1e98:02", "0001:00", "1b36:01"};
  f.attrs = {{"irq", "17\n"}, {"numa_node", "1\n"}};
  return f;
}

class SysfsDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tree_.add(endpoint());
    auto d = SysfsDevice::open(tree_.root() + "/devices/0000:01:00.0", *Bdf::parse("0000:01:00.0"),
                               std::chrono::milliseconds(0));
    ASSERT_TRUE(d) << d.error().name();
    dev_ = *d;
  }
  std::vector<uint8_t> file(const std::string& name) {
    return SysfsTree::read_file(dir_ + "/" + name);
  }
  // Bytes of a file written behind the device's back (as the hardware would change).
  void poke(const std::string& name, off_t off, std::vector<uint8_t> bytes) {
    int fd = ::open((dir_ + "/" + name).c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), off), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  uint16_t pmcsr() {
    auto c = file("config");
    return static_cast<uint16_t>(c[kPmcsr] | c[kPmcsr + 1] << 8);
  }

  SysfsTree tree_;
  std::string dir_;
  std::shared_ptr<SysfsDevice> dev_;
};

TEST_F(SysfsDeviceTest, ReadsAttributes) {
  const DeviceInfo& i = dev_->info();
  EXPECT_EQ(i.bdf.str(), "0000:01:00.0");
  EXPECT_EQ(i.vendor, 0x1b36);
  EXPECT_EQ(i.device, 0x0010);
  EXPECT_EQ(i.subsystem_vendor, 0x1b36);
  EXPECT_EQ(i.subsystem_device, 0x1100);
  EXPECT_EQ(i.class_code, 0x050210u);
  EXPECT_EQ(i.revision, 0x02);
  EXPECT_EQ(i.irq, 17);
  EXPECT_EQ(i.numa_node, 1);
  EXPECT_EQ(i.config_size, 4096u);
  EXPECT_EQ(i.header_type, 0);
  EXPECT_EQ(i.driver, "pci-stub");
  EXPECT_EQ(i.iommu_group, 2);
  std::vector<DoeFeature> doe = {{0x0001, 0}, {0x1b36, 1}, {0x1e98, 2}};
  EXPECT_EQ(i.kernel_doe_features, doe);
  ASSERT_EQ(i.resources.size(), 7u);
  EXPECT_EQ(i.resources[0].size(), kBar0Size);
  EXPECT_EQ(i.resources[0].flags, kResourceMem | kResourceMem64 | kResourcePrefetch);
  EXPECT_TRUE(i.resources[4].is_io());
  EXPECT_TRUE(i.has_rom());
}

TEST(SysfsDeviceInfo, BridgeWithoutLinksOrDoeAndSmallConfig) {
  SysfsTree tree;
  FakeFunction f;
  f.bdf = "0000:00:01.0";
  f.config = pcifs::testing::make_config(0x8086, 0x1234, 0x060400, 256, 0);
  f.config[PCI_HEADER_TYPE] = 0x81;  // multi-function bridge
  f.resources.resize(9);
  f.resources[8] = {0xfe000000, 0xfe1fffff, kResourceMem};
  f.symlinked = false;
  tree.add(f);
  auto d = SysfsDevice::open(tree.root() + "/devices/" + f.bdf, *Bdf::parse(f.bdf),
                             std::chrono::milliseconds(0));
  ASSERT_TRUE(d);
  const DeviceInfo& i = (*d)->info();
  EXPECT_EQ(i.header_type, 1);
  EXPECT_TRUE(i.is_bridge());
  EXPECT_EQ(i.config_size, 256u);
  EXPECT_EQ(i.driver, std::nullopt);
  EXPECT_EQ(i.iommu_group, std::nullopt);
  EXPECT_TRUE(i.kernel_doe_features.empty());
  ASSERT_EQ(i.resources.size(), 9u);
  EXPECT_EQ(i.resources[8].size(), 0x200000u);
  EXPECT_FALSE(i.has_rom());
}

TEST(SysfsDeviceInfo, MissingAttributesFallBackToConfig) {
  SysfsTree tree;
  FakeFunction f = endpoint();
  std::string d = tree.add(f);
  ::unlink((d + "/vendor").c_str());
  ::unlink((d + "/class").c_str());
  ::unlink((d + "/irq").c_str());
  auto dev = SysfsDevice::open(d, *Bdf::parse(f.bdf), std::chrono::milliseconds(0));
  ASSERT_TRUE(dev);
  EXPECT_EQ((*dev)->info().vendor, 0x1b36);
  EXPECT_EQ((*dev)->info().class_code, 0x050210u);
  EXPECT_EQ((*dev)->info().irq, 0);
}

struct Access {
  uint32_t offset;
  unsigned width;
};
class ConfigAccessTest : public SysfsDeviceTest, public ::testing::WithParamInterface<Access> {};

TEST_P(ConfigAccessTest, ReadsExactlyTheFileBytes) {
  auto [off, w] = GetParam();
  auto c = file("config");
  uint32_t want = 0;
  for (unsigned k = 0; k < w; ++k) want |= uint32_t{c[off + k]} << (8 * k);
  auto v = dev_->config_read(off, w);
  ASSERT_TRUE(v) << v.error().name();
  EXPECT_EQ(*v, want);
}

TEST_P(ConfigAccessTest, WritesExactlyWidthBytes) {
  auto [off, w] = GetParam();
  auto before = file("config");
  ASSERT_TRUE(dev_->config_write(off, w, 0xa1b2c3d4));
  auto after = file("config");
  for (unsigned k = 0; k < w; ++k) before[off + k] = static_cast<uint8_t>(0xa1b2c3d4u >> (8 * k));
  EXPECT_EQ(after, before);
}

INSTANTIATE_TEST_SUITE_P(Sysfs, ConfigAccessTest,
                         ::testing::Values(Access{0, 1}, Access{0, 2}, Access{0, 4}, Access{3, 1},
                                           Access{0x42, 2}, Access{0x100, 4}, Access{0xffc, 4},
                                           Access{0xfff, 1}));

class BadConfigAccessTest : public SysfsDeviceTest, public ::testing::WithParamInterface<Access> {};
TEST_P(BadConfigAccessTest, IsEinval) {
  auto [off, w] = GetParam();
  auto r = dev_->config_read(off, w);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errno(EINVAL));
  EXPECT_EQ(dev_->config_write(off, w, 0).error(), Errno(EINVAL));
}
INSTANTIATE_TEST_SUITE_P(Sysfs, BadConfigAccessTest,
                         ::testing::Values(Access{1, 2}, Access{2, 4}, Access{0, 3}, Access{0, 8},
                                           Access{4096, 1}, Access{0xfffffffc, 4}));

TEST_F(SysfsDeviceTest, ReadsNeverOpenAWritableConfig) {
  ASSERT_TRUE(dev_->config_read(0, 4));
  std::vector<uint8_t> buf(4096);
  ASSERT_TRUE(dev_->config_read_block(0, buf));
  EXPECT_FALSE(dev_->holds_writable_config());
  ASSERT_TRUE(dev_->config_write(0x3c, 1, 5));
  EXPECT_TRUE(dev_->holds_writable_config());
}

TEST_F(SysfsDeviceTest, ReadsSeeChangesMadeBehindTheirBack) {
  poke("config", 0x200, {0x11, 0x22, 0x33, 0x44});
  EXPECT_EQ(dev_->config_read(0x200, 4).value_or(0), 0x44332211u);
}

TEST_F(SysfsDeviceTest, BlockReadIsTheFileAndBoundsChecked) {
  std::vector<uint8_t> buf(0x300);
  ASSERT_TRUE(dev_->config_read_block(0x100, buf));
  auto c = file("config");
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), c.begin() + 0x100));
  std::vector<uint8_t> over(2);
  EXPECT_EQ(dev_->config_read_block(4095, over).error(), Errno(EINVAL));
}

struct BarAccess {
  uint64_t offset;
  unsigned width;
};
class MemBarTest : public SysfsDeviceTest, public ::testing::WithParamInterface<BarAccess> {};

TEST_P(MemBarTest, StoreTouchesExactlyWidthBytes) {
  auto [off, w] = GetParam();
  poke("resource0", 0, std::vector<uint8_t>(64, 0xee));
  ASSERT_TRUE(dev_->bar_write(0, off, w, 0x0102030405060708));
  auto b = file("resource0");
  for (uint64_t i = 0; i < 64; ++i) {
    bool inside = i >= off && i < off + w;
    uint8_t want = inside ? static_cast<uint8_t>(0x0102030405060708ull >> (8 * (i - off))) : 0xee;
    EXPECT_EQ(b[i], want) << "byte " << i;
  }
}

TEST_P(MemBarTest, LoadReadsExactlyWidthBytes) {
  auto [off, w] = GetParam();
  ASSERT_TRUE(dev_->bar_read(0, 0, 8));  // mapped before the file changes
  poke("resource0", 0, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  uint64_t want = 0;
  for (unsigned k = 0; k < w; ++k) want |= uint64_t{static_cast<uint8_t>(off + k + 1)} << (8 * k);
  EXPECT_EQ(dev_->bar_read(0, off, w).value_or(~0ull), want);
}

INSTANTIATE_TEST_SUITE_P(Sysfs, MemBarTest,
                         ::testing::Values(BarAccess{0, 1}, BarAccess{5, 1}, BarAccess{2, 2},
                                           BarAccess{4, 4}, BarAccess{0, 8}, BarAccess{8, 8}));

TEST_F(SysfsDeviceTest, MemBarReachesTheLastBytesOfTheBar) {
  ASSERT_TRUE(dev_->bar_write(0, kBar0Size - 8, 8, 0x1122334455667788));
  EXPECT_EQ(dev_->bar_read(0, kBar0Size - 8, 8).value_or(0), 0x1122334455667788u);
  EXPECT_EQ(file("resource0")[kBar0Size - 1], 0x11);
}

TEST_F(SysfsDeviceTest, BarAccessErrors) {
  EXPECT_EQ(dev_->bar_read(0, 2, 4).error(), Errno(EINVAL));  // misaligned
  EXPECT_EQ(dev_->bar_read(0, 0, 3).error(), Errno(EINVAL));  // odd width
  EXPECT_EQ(dev_->bar_read(6, 0, 4).error(), Errno(EINVAL));  // no such BAR index
  EXPECT_EQ(dev_->bar_read(0, kBar0Size, 1).error(), Errno(ENXIO));
  EXPECT_EQ(dev_->bar_read(1, 0, 4).error(), Errno(ENXIO));  // unimplemented BAR
  EXPECT_EQ(dev_->bar_read(2, 0, 4).error(), Errno(ENXIO));  // no resource2 file
  EXPECT_EQ(dev_->bar_write(0, kBar0Size - 4, 8, 0).error(), Errno(EINVAL));
}

TEST_F(SysfsDeviceTest, ResourceFileShorterThanTheBarIsRefusedNotMapped) {
  ASSERT_EQ(::truncate((dir_ + "/resource0").c_str(), 4096), 0);
  EXPECT_EQ(dev_->bar_read(0, kBar0Size - 8, 8).error(), Errno(EIO));
}

TEST_F(SysfsDeviceTest, IoBarUsesPreadAndPwrite) {
  ASSERT_TRUE(dev_->bar_write(4, 0x10, 2, 0xbeef));
  auto b = file("resource4");
  EXPECT_EQ(b[0x10], 0xef);
  EXPECT_EQ(b[0x11], 0xbe);
  EXPECT_EQ(b[0x12], 0x00);
  poke("resource4", 0x20, {0x78, 0x56, 0x34, 0x12});
  EXPECT_EQ(dev_->bar_read(4, 0x20, 4).value_or(0), 0x12345678u);
  EXPECT_EQ(dev_->bar_read(4, 0x20, 1).value_or(0), 0x78u);
}

TEST_F(SysfsDeviceTest, RomReadIsTheFileShortAtTheEnd) {
  auto rom = file("rom");
  std::vector<uint8_t> buf(600);
  auto n = dev_->rom_read(500, buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 500u);
  EXPECT_TRUE(std::equal(buf.begin(), buf.begin() + 500, rom.begin() + 500));
  EXPECT_EQ(dev_->rom_read(1000, buf).value_or(99), 0u);
}

TEST_F(SysfsDeviceTest, RomEnableWritesOneAndTwoByteZero) {
  ASSERT_TRUE(dev_->rom_enable(true));
  auto r = file("rom");
  EXPECT_EQ(r[0], '1');
  ASSERT_TRUE(dev_->rom_enable(false));
  r = file("rom");
  // The kernel disables only on exactly "0" plus one byte at offset 0.
  EXPECT_EQ(r[0], '0');
  EXPECT_EQ(r[1], '\n');
}

TEST(SysfsDeviceNoRom, RomAccessIsEnxio) {
  SysfsTree tree;
  FakeFunction f = endpoint();
  f.rom.reset();
  f.reset_file = false;
  std::string d = tree.add(f);
  auto dev = SysfsDevice::open(d, *Bdf::parse(f.bdf), std::chrono::milliseconds(0));
  ASSERT_TRUE(dev);
  std::vector<uint8_t> buf(16);
  EXPECT_EQ((*dev)->rom_read(0, buf).error(), Errno(ENXIO));
  EXPECT_EQ((*dev)->rom_enable(true).error(), Errno(ENXIO));
  EXPECT_EQ((*dev)->reset().error(), Errno(EOPNOTSUPP));
}

TEST_F(SysfsDeviceTest, PowerGoesThroughPmcsrKeepingOtherBits) {
  ASSERT_TRUE(dev_->set_power_state(PowerState::kD3hot));
  // State 3, PME_Enable kept, PME_Status (RW1C) not written back as 1.
  EXPECT_EQ(pmcsr(), PCI_PM_CTRL_PME_ENABLE | 3);
  ASSERT_TRUE(dev_->set_power_state(PowerState::kD0));
  EXPECT_EQ(pmcsr(), PCI_PM_CTRL_PME_ENABLE);
}

TEST_F(SysfsDeviceTest, PowerToCurrentStateWritesNothing) {
  ASSERT_TRUE(dev_->set_power_state(PowerState::kD0));
  EXPECT_FALSE(dev_->holds_writable_config());
  EXPECT_EQ(pmcsr(), PCI_PM_CTRL_PME_STATUS | PCI_PM_CTRL_PME_ENABLE);
}

TEST_F(SysfsDeviceTest, D3coldIsNotSupported) {
  EXPECT_EQ(dev_->set_power_state(PowerState::kD3cold).error(), Errno(EOPNOTSUPP));
  EXPECT_FALSE(dev_->holds_writable_config());
}

TEST(SysfsDevicePower, NoPmCapabilityIsNotSupported) {
  SysfsTree tree;
  FakeFunction f = endpoint();
  f.config = pcifs::testing::make_config(0x1b36, 0x0010, 0x050210, 4096, 0);
  std::string d = tree.add(f);
  auto dev = SysfsDevice::open(d, *Bdf::parse(f.bdf), std::chrono::milliseconds(0));
  ASSERT_TRUE(dev);
  EXPECT_EQ((*dev)->set_power_state(PowerState::kD3hot).error(), Errno(EOPNOTSUPP));
}

TEST_F(SysfsDeviceTest, ResetWritesOne) {
  ASSERT_TRUE(dev_->reset());
  auto r = file("reset");
  EXPECT_EQ(std::string(r.begin(), r.end()), "1\n");
}

TEST_F(SysfsDeviceTest, RemoveIsRefusedAndNoViolationCount) {
  EXPECT_EQ(dev_->remove().error(), Errno(EOPNOTSUPP));
  EXPECT_EQ(dev_->violations(), std::nullopt);
}

TEST_F(SysfsDeviceTest, VanishedDirectoryIsNoticedOnAnOptionalFile) {
  tree_.remove("0000:01:00.0");
  EXPECT_EQ(dev_->reset().error(), Errno(ENODEV));  // `reset` is gone, and so is the device
  EXPECT_TRUE(dev_->gone());
}

TEST_F(SysfsDeviceTest, GoneDeviceFailsEveryAccessWithEnodev) {
  ASSERT_TRUE(dev_->config_read(0, 4));  // control: it worked before
  dev_->mark_gone();
  std::vector<uint8_t> buf(8);
  EXPECT_EQ(dev_->config_read(0, 4).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->config_write(0, 4, 0).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->config_read_block(0, buf).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->bar_read(0, 0, 4).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->bar_write(4, 0, 1, 0).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->rom_read(0, buf).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->rom_enable(true).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->set_power_state(PowerState::kD3hot).error(), Errno(ENODEV));
  EXPECT_EQ(dev_->reset().error(), Errno(ENODEV));
}

}  // namespace
}  // namespace pcifs::backend::sysfs
