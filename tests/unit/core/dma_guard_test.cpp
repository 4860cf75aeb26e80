// DMA on real devices (view.hpp allow_dma; core/dma_guard.hpp): without the
// view's grant, Bus Master Enable, the MSI address and the MSI-X Message
// Addresses are dropped from writes to a real device; the rest of each write
// goes through. With the grant (the control), and on the simulator, they pass.
#include "core/dma_guard.hpp"

#include <linux/pci_regs.h>

#include <map>

#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

// The simulator's devices, presented as real ones (info().simulated false).
class AsReal final : public backend::Device {
 public:
  explicit AsReal(std::shared_ptr<backend::Device> inner) : inner_(std::move(inner)) {
    info_ = inner_->info();
    info_.simulated = false;
  }
  const backend::DeviceInfo& info() const override { return info_; }
  Result<uint32_t> config_read(uint32_t o, unsigned w) override {
    return inner_->config_read(o, w);
  }
  Result<void> config_write(uint32_t o, unsigned w, uint32_t v) override {
    return inner_->config_write(o, w, v);
  }
  Result<uint64_t> bar_read(unsigned b, uint64_t o, unsigned w) override {
    return inner_->bar_read(b, o, w);
  }
  Result<void> bar_write(unsigned b, uint64_t o, unsigned w, uint64_t v) override {
    return inner_->bar_write(b, o, w, v);
  }
  Result<void> rom_enable(bool on) override { return inner_->rom_enable(on); }
  Result<size_t> rom_read(uint64_t o, std::span<uint8_t> out) override {
    return inner_->rom_read(o, out);
  }
  Result<void> set_power_state(PowerState t) override { return inner_->set_power_state(t); }
  Result<void> reset() override { return inner_->reset(); }
  Result<void> remove() override { return inner_->remove(); }
  std::optional<uint64_t> violations() const override { return inner_->violations(); }

 private:
  std::shared_ptr<backend::Device> inner_;
  backend::DeviceInfo info_;
};

class AsRealBackend final : public backend::Backend {
 public:
  explicit AsRealBackend(std::shared_ptr<backend::Backend> inner) : inner_(std::move(inner)) {
    for (auto& d : inner_->devices()) devices_.push_back(std::make_shared<AsReal>(d));
  }
  std::string describe() const override { return "as-real(" + inner_->describe() + ")"; }
  std::vector<std::shared_ptr<backend::Device>> devices() override { return devices_; }
  void set_hotplug_callback(backend::HotplugFn) override {}

 private:
  std::shared_ptr<backend::Backend> inner_;
  std::vector<std::shared_ptr<backend::Device>> devices_;
};

constexpr uint64_t kMsixTable = 0x2000;  // 02:00.0: 16 vectors in BAR 0

TEST(DmaGuardTest, TheMessageAddressBytesOfEachEntryAreLeftOut) {
  core::MsixTable t{0, 0x2000, 2};  // entries at 0x2000 and 0x2010
  std::vector<std::pair<uint64_t, uint64_t>> got;
  auto collect = [&](uint64_t o, uint64_t n) { got.push_back({o, n}); };
  EXPECT_FALSE(core::for_each_allowed(t, 2, 0x2000, 0x20, collect)) << "another BAR";
  EXPECT_FALSE(core::for_each_allowed(t, 0, 0x1000, 0x1000, collect)) << "before the table";
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, uint64_t>>{{0x2000, 0x20}, {0x1000, 0x1000}}));
  got.clear();
  EXPECT_TRUE(core::for_each_allowed(t, 0, 0x1ff8, 0x40, collect));
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, uint64_t>>{
                     {0x1ff8, 8}, {0x2008, 8}, {0x2018, 8}, {0x2020, 0x18}}));
  got.clear();
  EXPECT_FALSE(core::for_each_allowed(t, 0, 0x200c, 4, collect)) << "vector control alone";
  EXPECT_TRUE(core::for_each_allowed(t, 0, 0x2004, 2, collect)) << "inside an address";
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, uint64_t>>{{0x200c, 4}}));
}

class DmaTest : public MediatorFixture {
 protected:
  void start_real() {
    sim_ = backend::sim::make_default_backend();
    sim_raw_ = sim_.get();
    med_ = std::make_unique<Mediator>(std::make_shared<AsRealBackend>(sim_), MediatorOptions{});
    med_->set_revocation_sink(&sink_);
    ViewPolicy no;
    no.name = "no-dma";
    ViewPolicy yes;
    yes.name = "dma";
    yes.allow_dma = true;
    no_dma_ = med_->add_view(no);
    dma_ = med_->add_view(yes);
  }
  // Sets Bus Master and an MSI-X message address through `view`; what the device holds after.
  std::pair<bool, uint64_t> try_dma(ViewId view) {
    const HandleId cfg = must_open(kEp2, FileKind::kConfig, 0, true, kRoot, view);
    const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true, kRoot, view);
    std::vector<uint8_t> cmd{PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0};
    EXPECT_EQ(write(cfg, PCI_COMMAND, cmd).value_or(0), 2u) << "the write itself succeeds";
    // One write over entry 0: address (dropped without the grant) and data (kept).
    std::vector<uint8_t> entry{0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0x40, 0, 0};
    EXPECT_EQ(write(bar, kMsixTable, entry).value_or(0), entry.size());
    const bool master = (sim(kEp2).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MASTER);
    const uint64_t addr = sim(kEp2).bar_read(0, kMsixTable, 8).value_or(~0ull);
    const uint64_t data = sim(kEp2).bar_read(0, kMsixTable + 8, 4).value_or(~0ull);
    EXPECT_EQ(data, 0x4041u) << "the rest of the write went through";
    EXPECT_TRUE(sim(kEp2).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MEMORY);
    med_->release(cfg);
    med_->release(bar);
    med_->drain_handovers();
    return {master, addr};
  }
  ViewId no_dma_ = 0, dma_ = 0;
};

TEST_F(DmaTest, ARealDeviceMastersOnlyThroughAViewThatAllowsDma) {
  start_real();
  auto [master, addr] = try_dma(no_dma_);
  EXPECT_FALSE(master);
  EXPECT_EQ(addr, 0u);
  auto [master2, addr2] = try_dma(dma_);  // control: the same writes with the grant
  EXPECT_TRUE(master2);
  EXPECT_EQ(addr2, 0xfee00000u);
  auto st = med_->status_json(dma_);
  EXPECT_NE(st.find("\"allow_dma\": true"), std::string::npos) << st;
  st = med_->status_json(no_dma_);
  EXPECT_NE(st.find("\"allow_dma\": false"), std::string::npos) << st;
}

// The simulated firmware leaves Bus Master on (as real firmware may): a claim
// through a view without allow_dma turns it off before the tenant can use it.
TEST_F(DmaTest, AClaimWithoutTheGrantStopsAMasteringDevice) {
  start_real();
  ASSERT_TRUE(sim(kEp0).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MASTER)
      << "the firmware's state";
  const HandleId granted = must_open(kEp0, FileKind::kBar, 0, true, kRoot, dma_);
  EXPECT_TRUE(sim(kEp0).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MASTER)
      << "control: a view with the grant leaves it";
  med_->release(granted);  // (its hand-over turns it off in group 2; 02:00.0 is group 3)
  ASSERT_TRUE(sim(kEp2).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MASTER);
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true, kRoot, no_dma_);
  EXPECT_FALSE(sim(kEp2).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MASTER);
  EXPECT_TRUE(sim(kEp2).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MEMORY);
  med_->release(bar);
}

TEST_F(DmaTest, MsiAddressIsDroppedToo) {
  start_real();
  // 01:00.1 has no MSI in the default set; 00:01.0 (a root port) has MSI but is a
  // bridge. Use the register table directly: the MSI address bits are marked.
  auto cfg = must_open(kRootPort1, FileKind::kConfig, 0, true, kRoot, no_dma_);
  auto c = read(cfg, 0, 256);
  ASSERT_TRUE(c.ok());
  uint8_t msi = 0;
  for (uint8_t p = (*c)[PCI_CAPABILITY_LIST]; p != 0; p = (*c)[p + PCI_CAP_LIST_NEXT]) {
    if ((*c)[p] == PCI_CAP_ID_MSI) msi = p;
  }
  ASSERT_NE(msi, 0);
  std::vector<uint8_t> addr{0x00, 0x00, 0xe0, 0xfe};
  ASSERT_TRUE(write(cfg, msi + PCI_MSI_ADDRESS_LO, addr).ok());
  EXPECT_EQ(sim(kRootPort1).config_read(msi + PCI_MSI_ADDRESS_LO, 4).value_or(~0u), 0u);
  med_->release(cfg);
  auto cfg2 = must_open(kRootPort1, FileKind::kConfig, 0, true, kRoot, dma_);
  ASSERT_TRUE(write(cfg2, msi + PCI_MSI_ADDRESS_LO, addr).ok());  // control
  EXPECT_EQ(sim(kRootPort1).config_read(msi + PCI_MSI_ADDRESS_LO, 4).value_or(0), 0xfee00000u);
  med_->release(cfg2);
}

TEST_F(DmaTest, TheSimulatorAllowsIt) {
  // MediatorFixture's own Mediator: the simulator, the default view (no allow_dma).
  const HandleId cfg = must_open(kEp2, FileKind::kConfig, 0, true);
  std::vector<uint8_t> cmd{PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0};
  ASSERT_TRUE(write(cfg, PCI_COMMAND, cmd).ok());
  EXPECT_TRUE(sim(kEp2).config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MASTER);
  med_->release(cfg);
}

}  // namespace
}  // namespace pcifs::test
