// Differential: the simulator's default device set written out as a sysfs
// tree, read back through SysfsBackend, must describe the same devices and
// the same config bytes as the simulator itself.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include "fixtures/sysfs_tree.hpp"
#include "sim/sim_backend.hpp"
#include "sysfs/pm_cap.hpp"
#include "sysfs/sysfs_backend.hpp"

namespace pcifs::backend::sysfs {
namespace {

using pcifs::testing::SysfsTree;

class SimTreeTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    sim_ = sim::make_default_backend();
    for (auto& d : sim_->devices()) {
      auto f = pcifs::testing::function_from_device(*d);
      ASSERT_TRUE(f) << d->info().bdf.str();
      tree_.add(*f);
    }
    SysfsOptions o;
    o.force_pread_batch = GetParam();
    o.d3hot_delay = std::chrono::milliseconds(0);
    sysfs_ = std::make_unique<SysfsBackend>(tree_.root(), o);
  }
  std::unique_ptr<sim::SimBackend> sim_;
  SysfsTree tree_;
  std::unique_ptr<SysfsBackend> sysfs_;
};

void expect_same_info(const DeviceInfo& a, const DeviceInfo& b) {
  SCOPED_TRACE(a.bdf.str());
  EXPECT_EQ(a.bdf, b.bdf);
  EXPECT_EQ(a.vendor, b.vendor);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.subsystem_vendor, b.subsystem_vendor);
  EXPECT_EQ(a.subsystem_device, b.subsystem_device);
  EXPECT_EQ(a.class_code, b.class_code);
  EXPECT_EQ(a.revision, b.revision);
  EXPECT_EQ(a.header_type, b.header_type);
  EXPECT_EQ(a.config_size, b.config_size);
  EXPECT_EQ(a.iommu_group, b.iommu_group);
  EXPECT_EQ(a.driver, b.driver);
  EXPECT_EQ(a.has_rom(), b.has_rom());
  ASSERT_EQ(a.resources.size(), b.resources.size());
  for (size_t i = 0; i < a.resources.size(); ++i) {
    EXPECT_EQ(a.resources[i].start, b.resources[i].start) << i;
    EXPECT_EQ(a.resources[i].end, b.resources[i].end) << i;
    EXPECT_EQ(a.resources[i].flags, b.resources[i].flags) << i;
  }
}

TEST_P(SimTreeTest, SameDevicesSameInfo) {
  auto s = sim_->devices();
  auto y = sysfs_->devices();
  ASSERT_EQ(s.size(), y.size());
  ASSERT_GE(s.size(), 6u);
  for (size_t i = 0; i < s.size(); ++i) expect_same_info(s[i]->info(), y[i]->info());
}

TEST_P(SimTreeTest, BatchAndBlockReadsEqualTheSimulator) {
  auto s = sim_->devices();
  auto y = sysfs_->devices();
  ASSERT_EQ(s.size(), y.size());
  std::vector<std::vector<uint8_t>> bufs;
  for (auto& d : y) bufs.emplace_back(d->info().config_size);
  std::vector<ConfigReadItem> items;
  for (size_t i = 0; i < y.size(); ++i) items.push_back({y[i].get(), 0, bufs[i], Errno(EIO)});
  sysfs_->config_read_batch(items);
  for (size_t i = 0; i < s.size(); ++i) {
    std::vector<uint8_t> want(s[i]->info().config_size), block(want.size());
    ASSERT_TRUE(s[i]->config_read_block(0, want));
    ASSERT_TRUE(items[i].result);
    ASSERT_TRUE(y[i]->config_read_block(0, block));
    EXPECT_EQ(bufs[i], want) << s[i]->info().bdf.str();
    EXPECT_EQ(block, want) << s[i]->info().bdf.str();
  }
}

TEST_P(SimTreeTest, PowerFindsThePmCapabilityOfARealChain) {
  // 0000:01:00.0 has MSI-X, PCIe, ... besides PM: the walk must find PM.
  auto bdf = *Bdf::parse("0000:01:00.0");
  std::shared_ptr<Device> dev;
  for (auto& d : sysfs_->devices()) {
    if (d->info().bdf == bdf) dev = d;
  }
  ASSERT_TRUE(dev);
  std::vector<uint8_t> cfg(256);
  ASSERT_TRUE(dev->config_read_block(0, cfg));
  auto pm = find_pm_capability(cfg);
  ASSERT_TRUE(pm);
  ASSERT_TRUE(dev->set_power_state(PowerState::kD3hot));
  EXPECT_EQ(dev->config_read(*pm + PCI_PM_CTRL, 2).value_or(0) & PCI_PM_CTRL_STATE_MASK, 3u);
  ASSERT_TRUE(dev->set_power_state(PowerState::kD0));
  EXPECT_EQ(dev->config_read(*pm + PCI_PM_CTRL, 2).value_or(9) & PCI_PM_CTRL_STATE_MASK, 0u);
}

TEST_P(SimTreeTest, RomFileIsTheSimulatorsRom) {
  auto bdf = *Bdf::parse("0000:01:00.0");
  for (auto& d : sysfs_->devices()) {
    if (d->info().bdf != bdf) continue;
    std::vector<uint8_t> head(2);
    ASSERT_TRUE(d->rom_read(0, head));
    EXPECT_EQ(head, (std::vector<uint8_t>{0x55, 0xaa}));
    return;
  }
  FAIL() << "no 0000:01:00.0";
}

INSTANTIATE_TEST_SUITE_P(Sysfs, SimTreeTest, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "pread" : "io_uring"; });

}  // namespace
}  // namespace pcifs::backend::sysfs
