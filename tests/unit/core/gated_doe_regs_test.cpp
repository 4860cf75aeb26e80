// The DOE register path of the Mediator: every access goes through the power
// gate, and a reset or power cycle in the middle of an exchange fails the
// exchange's later accesses with EIO (instead of letting the mailbox poll an
// idle device until the 1 s timeout).
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include "core/mediator_state.hpp"
#include "sim/sim_backend.hpp"

namespace pcifs::core {
namespace {

class GatedDoeRegsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_ = backend::sim::make_default_backend();
    dev_ = sim_->find(*Bdf::parse("0000:01:00.0"));
    control_ = std::make_unique<DeviceControl>(dev_, nullptr);
    uint16_t cap = dev_->caps().doe.at(0);
    regs_ = std::make_unique<GatedDoeRegs>(*control_, dev_, cap);
  }
  std::shared_ptr<backend::sim::SimBackend> sim_;
  std::shared_ptr<backend::sim::SimDevice> dev_;
  std::unique_ptr<DeviceControl> control_;
  std::unique_ptr<GatedDoeRegs> regs_;
};

TEST_F(GatedDoeRegsTest, AccessesPassWithinOneContext) {  // the negative control
  regs_->begin_exchange();
  EXPECT_TRUE(regs_->read(PCI_DOE_STATUS).ok());
  EXPECT_TRUE(regs_->read(PCI_DOE_STATUS).ok());
}

TEST_F(GatedDoeRegsTest, ResetMidExchangeFailsWithEio) {
  regs_->begin_exchange();
  ASSERT_TRUE(regs_->read(PCI_DOE_STATUS).ok());
  ASSERT_TRUE(control_->reset().ok());
  auto r = regs_->read(PCI_DOE_STATUS);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  regs_->begin_exchange();  // the next exchange starts afresh
  EXPECT_TRUE(regs_->read(PCI_DOE_STATUS).ok());
  EXPECT_EQ(dev_->violations().value_or(1), 0u);
}

TEST_F(GatedDoeRegsTest, PowerCycleMidExchangeFailsWithEio) {
  regs_->begin_exchange();
  ASSERT_TRUE(control_->set_power_state(PowerState::kD3hot).ok());
  EXPECT_EQ(regs_->read(PCI_DOE_STATUS).error(), Errno(EIO)) << "gate closed in D3hot";
  ASSERT_TRUE(control_->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(regs_->read(PCI_DOE_STATUS).error(), Errno(EIO)) << "context lost meanwhile";
  EXPECT_EQ(dev_->violations().value_or(1), 0u);
}

}  // namespace
}  // namespace pcifs::core
