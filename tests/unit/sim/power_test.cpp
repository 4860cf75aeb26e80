// Power states, config loss and keep, function reset, hot-remove.
#include <gtest/gtest.h>

#include <atomic>

#include "sim/bar_memory.hpp"
#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

uint32_t pmcsr_at(SimDevice& d) { return find_cap(d, PCI_CAP_ID_PM, false) + PCI_PM_CTRL; }

class Power : public ::testing::Test {
 protected:
  std::shared_ptr<SimDevice> get(const char* text) { return dev(*backend_, text); }
  std::unique_ptr<SimBackend> backend_ = make_default_backend();
};

TEST_F(Power, PmcsrWritesMoveBetweenD0AndD3hot) {
  auto d = get("0000:01:00.0");
  uint32_t pm = pmcsr_at(*d);
  wr(*d, pm, 2, 3);
  EXPECT_EQ(d->physical_power_state(), PowerState::kD3hot);
  EXPECT_EQ(rd(*d, pm, 2) & PCI_PM_CTRL_STATE_MASK, 3u);
  wr(*d, pm, 2, 0);
  EXPECT_EQ(d->physical_power_state(), PowerState::kD0);
  EXPECT_EQ(violations(*d), 0u);
}

TEST_F(Power, D1AndD2AreNotSupported) {
  auto d = get("0000:01:00.0");
  uint32_t pm = pmcsr_at(*d);
  wr(*d, pm, 2, 1);
  EXPECT_EQ(rd(*d, pm, 2) & PCI_PM_CTRL_STATE_MASK, 0u);
  EXPECT_EQ(d->physical_power_state(), PowerState::kD0);
  wr(*d, pm, 2, 3);
  wr(*d, pm, 2, 2);
  EXPECT_EQ(rd(*d, pm, 2) & PCI_PM_CTRL_STATE_MASK, 3u);
  EXPECT_EQ(d->physical_power_state(), PowerState::kD3hot);
}

TEST_F(Power, D3hotToD0KeepsConfigWithNoSoftReset) {
  auto d = get("0000:01:00.0");  // No_Soft_Reset = 1
  bar_wr(*d, 0, kRegScratch0, 8, 42);
  wr(*d, PCI_INTERRUPT_LINE, 1, 9);
  ASSERT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  EXPECT_EQ(rd(*d, PCI_INTERRUPT_LINE, 1), 9u);  // config readable in D3hot
  ASSERT_TRUE(d->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(rd(*d, PCI_BASE_ADDRESS_2, 4), 0xfe000000u);
  EXPECT_EQ(rd(*d, PCI_COMMAND, 2), 0x0007u);
  EXPECT_EQ(rd(*d, PCI_INTERRUPT_LINE, 1), 9u);
  EXPECT_EQ(bar_rd(*d, 0, kRegScratch0, 8), 42u);
  EXPECT_EQ(violations(*d), 0u);
}

TEST_F(Power, D3hotToD0ResetsConfigWithoutNoSoftReset) {
  auto d = get("0000:01:00.1");  // No_Soft_Reset = 0
  ASSERT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  ASSERT_TRUE(d->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(rd(*d, PCI_BASE_ADDRESS_0, 4), 0u);  // hardware default
  EXPECT_EQ(rd(*d, PCI_COMMAND, 2), 0u);
  EXPECT_EQ(rd(*d, PCI_INTERRUPT_LINE, 1), 0u);
  EXPECT_EQ(rd(*d, pmcsr_at(*d), 2) & PCI_PM_CTRL_STATE_MASK, 0u);
  EXPECT_EQ(rd(*d, PCI_VENDOR_ID, 2), 0x1b36u);  // hardwired bits stay
  // A BAR access before the owner restores state is a violation.
  EXPECT_TRUE(d->bar_read(0, 0, 4).ok());
  EXPECT_EQ(violations(*d), 1u);
  wr(*d, PCI_BASE_ADDRESS_0, 4, 0xfe020000);  // restore, pci_restore_state style
  wr(*d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  EXPECT_EQ(bar_rd(*d, 0, kRegId, 4), kIdValue);
  EXPECT_EQ(violations(*d), 1u);
}

TEST_F(Power, D3coldLosesEverything) {
  auto d = get("0000:01:00.0");
  bar_wr(*d, 0, 0x1000, 8, 0x77);
  ASSERT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  ASSERT_TRUE(d->set_power_state(PowerState::kD3cold).ok());
  EXPECT_EQ(d->physical_power_state(), PowerState::kD3cold);
  EXPECT_EQ(violations(*d), 0u);
  ASSERT_TRUE(d->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(d->physical_power_state(), PowerState::kD0);
  EXPECT_EQ(rd(*d, PCI_BASE_ADDRESS_0, 4), 0x0000000cu);  // type bits only
  EXPECT_EQ(rd(*d, PCI_COMMAND, 2), 0u);
  wr(*d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  EXPECT_EQ(bar_rd(*d, 0, 0x1000, 8), 0u);  // RAM lost with power
  EXPECT_EQ(violations(*d), 0u);
}

TEST_F(Power, D3coldToD3hotIsRefused) {
  auto d = get("0000:02:00.0");
  ASSERT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  ASSERT_TRUE(d->set_power_state(PowerState::kD3cold).ok());
  EXPECT_EQ(d->set_power_state(PowerState::kD3hot).error(), Errno(EINVAL));
  EXPECT_EQ(d->physical_power_state(), PowerState::kD3cold);
  EXPECT_EQ(violations(*d), 1u);
}

TEST_F(Power, SameStateIsANoOp) {
  auto d = get("0000:01:00.1");
  wr(*d, PCI_INTERRUPT_LINE, 1, 3);
  ASSERT_TRUE(d->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(rd(*d, PCI_INTERRUPT_LINE, 1), 3u);
}

TEST(PowerNoPm, WithoutPmCapabilityD3hotIsUnsupported) {
  std::string err;
  auto b = load_backend_json(R"({"devices":[{"bdf":"0000:05:00.0","device":1,"class":0}]})", &err);
  ASSERT_TRUE(b.ok()) << err;
  auto d = (*b)->find(*Bdf::parse("0000:05:00.0"));
  EXPECT_EQ(d->set_power_state(PowerState::kD3hot).error(), Errno(EOPNOTSUPP));
  EXPECT_EQ(d->physical_power_state(), PowerState::kD0);
}

// --- Function reset.

TEST_F(Power, ResetRestoresHardwareDefaults) {
  auto d = get("0000:01:00.0");
  ASSERT_TRUE(d->rom_enable(true).ok());
  uint32_t devsta = find_cap(*d, PCI_CAP_ID_EXP, false) + PCI_EXP_DEVSTA;
  wr(*d, devsta, 2, 0xffff);
  ASSERT_TRUE(d->reset().ok());
  EXPECT_FALSE(d->rom_decode_enabled());
  EXPECT_EQ(rd(*d, PCI_ROM_ADDRESS, 4), 0u);
  EXPECT_EQ(rd(*d, PCI_BASE_ADDRESS_2, 4), 0u);
  EXPECT_EQ(rd(*d, PCI_COMMAND, 2), 0u);
  EXPECT_EQ(rd(*d, devsta, 2), 0x0009u);
  EXPECT_EQ(d->physical_power_state(), PowerState::kD0);
  EXPECT_EQ(violations(*d), 0u);
}

TEST_F(Power, InitiateFlrBitResets) {
  auto d = get("0000:01:00.0");
  uint32_t devctl = find_cap(*d, PCI_CAP_ID_EXP, false) + PCI_EXP_DEVCTL;
  wr(*d, devctl, 2, 0x2810 | PCI_EXP_DEVCTL_BCR_FLR);
  EXPECT_EQ(rd(*d, PCI_COMMAND, 2), 0u);
  EXPECT_EQ(rd(*d, devctl, 2) & PCI_EXP_DEVCTL_BCR_FLR, 0u);  // not a stored bit
  auto control = get("0000:01:00.1");
  wr(*control, find_cap(*control, PCI_CAP_ID_EXP, false) + PCI_EXP_DEVCTL, 2, 0x2810);
  EXPECT_EQ(rd(*control, PCI_COMMAND, 2), 0x0007u);  // negative control: no FLR bit
}

TEST_F(Power, ResetIdlesTheDoeMailbox) {
  auto d = get("0000:02:00.0");  // mailbox 1 never responds
  uint32_t doe = find_cap(*d, PCI_EXT_CAP_ID_DOE, true, 1);
  ASSERT_NE(doe, 0u);
  wr(*d, doe + PCI_DOE_WRITE, 4, 0x00000001);  // Discovery request
  wr(*d, doe + PCI_DOE_WRITE, 4, 3);
  wr(*d, doe + PCI_DOE_WRITE, 4, 0);
  wr(*d, doe + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_GO);
  EXPECT_NE(rd(*d, doe + PCI_DOE_STATUS, 4) & PCI_DOE_STATUS_BUSY, 0u);
  ASSERT_TRUE(d->reset().ok());
  EXPECT_EQ(rd(*d, doe + PCI_DOE_STATUS, 4) & PCI_DOE_STATUS_BUSY, 0u);
  EXPECT_EQ(violations(*d), 0u) << last_violation(*d);
}

TEST_F(Power, DoeFaultCanBeCleared) {
  auto d = get("0000:02:00.0");
  d->set_doe_fault(1, DoeFault::kNone);
  uint32_t doe = find_cap(*d, PCI_EXT_CAP_ID_DOE, true, 1);
  for (uint32_t dw : {0x00000001u, 3u, 0u}) wr(*d, doe + PCI_DOE_WRITE, 4, dw);
  wr(*d, doe + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_GO);
  EXPECT_NE(rd(*d, doe + PCI_DOE_STATUS, 4) & PCI_DOE_STATUS_DATA_OBJECT_READY, 0u);
  EXPECT_EQ(rd(*d, doe + PCI_DOE_READ, 4), 0x00000001u);  // Discovery response header
}

// --- Hot-remove.

TEST_F(Power, RemoveDropsTheDeviceAndFiresHotplug) {
  std::vector<std::pair<Bdf, bool>> events;
  backend_->set_hotplug_callback([&](const Bdf& b, bool added) { events.emplace_back(b, added); });
  auto d = get("0000:01:00.1");
  size_t before = backend_->devices().size();
  ASSERT_TRUE(d->remove().ok());
  EXPECT_TRUE(d->removed());
  EXPECT_EQ(backend_->find(bdf("0000:01:00.1")), nullptr);
  EXPECT_EQ(backend_->devices().size(), before - 1);
  for (const auto& x : backend_->devices()) EXPECT_NE(x->info().bdf, bdf("0000:01:00.1"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].first, bdf("0000:01:00.1"));
  EXPECT_FALSE(events[0].second);
  EXPECT_EQ(d->remove().error(), Errno(ENODEV));
  EXPECT_EQ(events.size(), 1u);
  EXPECT_NE(backend_->find(bdf("0000:01:00.0")), nullptr);  // its sibling stays
}

TEST_F(Power, CallbackMayCallBackIntoTheBackend) {
  size_t seen = 0;
  backend_->set_hotplug_callback([&](const Bdf&, bool) { seen = backend_->devices().size(); });
  ASSERT_TRUE(get("0000:02:00.0")->remove().ok());
  EXPECT_EQ(seen, 5u);  // no lock held: no deadlock, and the list is already updated
}

TEST(RemoveAfterBackend, DeviceOutlivesItsBackend) {
  std::shared_ptr<SimDevice> d;
  {
    auto backend = make_default_backend();
    d = backend->find(*Bdf::parse("0000:02:00.0"));
  }
  EXPECT_TRUE(d->remove().ok());
  EXPECT_EQ(d->config_read(0, 4).error(), Errno(ENODEV));
}

}  // namespace
}  // namespace pcifs::backend::sim
