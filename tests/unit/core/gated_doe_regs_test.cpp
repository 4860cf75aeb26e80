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

// An exchange that begins after reset() was called but before its quiesce
// closed the gate (here: from the revocation sink, which quiesce() calls in
// exactly that window) runs its first accesses before the reset, so its later
// accesses must fail. Counting the reset when it is requested, rather than
// when it begins on the device, let them through: the mailbox then advanced
// an idle Read Data Mailbox (a simulator violation, seen in the mount stress).
class BeginInSink final : public RevocationSink {
 public:
  explicit BeginInSink(GatedDoeRegs*& regs) : regs_(regs) {}
  void invalidate_mappings(const Bdf&) override {
    if (done_ || regs_ == nullptr) return;
    done_ = true;
    regs_->begin_exchange();
    first_ = regs_->read(PCI_DOE_STATUS).ok();
  }
  void device_gone(const Bdf&) override {}
  bool done_ = false;
  bool first_ = false;

 private:
  GatedDoeRegs*& regs_;
};

TEST(GatedDoeRegsWindow, ExchangeBegunBeforeTheGateClosesFailsAfterTheReset) {
  auto sim = backend::sim::make_default_backend();
  auto dev = sim->find(*Bdf::parse("0000:01:00.0"));
  GatedDoeRegs* regs = nullptr;
  BeginInSink sink(regs);
  DeviceControl control(dev, &sink);
  GatedDoeRegs gated(control, dev, dev->caps().doe.at(0));
  regs = &gated;
  ASSERT_TRUE(control.reset().ok());
  ASSERT_TRUE(sink.done_) << "quiesce did not call the sink: the window was not reached";
  EXPECT_TRUE(sink.first_) << "the gate was already closed: the window was not reached";
  auto later = gated.read(PCI_DOE_STATUS);
  ASSERT_FALSE(later.ok()) << "an access of an exchange begun before the reset passed after it";
  EXPECT_EQ(later.error(), Errno(EIO));
  EXPECT_EQ(dev->violations().value_or(1), 0u);
}

}  // namespace
}  // namespace pcifs::core
