// Tenant hand-over [S11] (core/handover.hpp): when a claim ends, the group's
// devices are reset and restored to their clean baseline before anyone may
// claim them again. Each check has its control: the dirty state is visible to
// a reader while the tenant still holds the claim.
#include "core/handover.hpp"

#include <linux/pci_regs.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "fault/fault_backend.hpp"
#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

using core::ResetMethod;

constexpr uint64_t kRam = 0x10000;       // plain memory in the simulated BAR 0
constexpr uint64_t kMsixTable = 0x2000;  // 02:00.0's MSI-X table (BAR 0)
constexpr uint16_t kMsixCap = PCI_CAP_ID_MSIX;

uint32_t le(const std::vector<uint8_t>& b, size_t off, unsigned width) {
  uint32_t v = 0;
  for (unsigned i = 0; i < width; ++i) v |= uint32_t{b[off + i]} << (8 * i);
  return v;
}

class HandoverTest : public MediatorFixture {
 protected:
  std::vector<uint8_t> config(const Bdf& b) {
    auto h = must_open(b, FileKind::kConfig, 0, false, kRoot2);
    auto r = read(h, 0, 4096);
    med_->release(h);
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : std::vector<uint8_t>(4096, 0);
  }
  uint16_t cap_offset(const std::vector<uint8_t>& c, uint8_t id) {
    for (uint8_t p = c[PCI_CAPABILITY_LIST]; p != 0; p = c[p + PCI_CAP_LIST_NEXT]) {
      if (c[p] == id) return p;
    }
    ADD_FAILURE() << "no capability " << int{id};
    return 0;
  }
  // Tenant A's session on 02:00.0: bus master and MSI-X on, a vector programmed, RAM written.
  void dirty(HandleId cfg, HandleId bar) {
    auto c = config(kEp2);
    const uint16_t msix = cap_offset(c, kMsixCap);
    uint32_t cmd = le(c, PCI_COMMAND, 2) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    ASSERT_TRUE(write(cfg, PCI_COMMAND, {uint8_t(cmd), uint8_t(cmd >> 8)}).ok());
    uint32_t flags = le(c, msix + PCI_MSIX_FLAGS, 2) | PCI_MSIX_FLAGS_ENABLE;
    flags &= ~uint32_t{PCI_MSIX_FLAGS_MASKALL};
    ASSERT_TRUE(write(cfg, msix + PCI_MSIX_FLAGS, {uint8_t(flags), uint8_t(flags >> 8)}).ok());
    ASSERT_TRUE(bar_put(bar, kMsixTable, 8, 0x00000000fee00000ull).ok());  // message address
    ASSERT_TRUE(bar_put(bar, kMsixTable + 8, 4, 0x4041).ok());             // message data
    ASSERT_TRUE(bar_put(bar, kRam, 8, 0x5ec2e7da7a5ec2e7ull).ok());        // a secret
  }
  struct Seen {
    bool master, msix_enabled;
    uint64_t table_address, ram;
  };
  // What a tenant sees through its BAR handle (opening one claims the group).
  Seen seen(HandleId bar) {
    auto c = config(kEp2);
    const uint16_t msix = cap_offset(c, kMsixCap);
    return Seen{(le(c, PCI_COMMAND, 2) & PCI_COMMAND_MASTER) != 0,
                (le(c, msix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE) != 0,
                bar_get(bar, kMsixTable, 8).value_or(~0ull), bar_get(bar, kRam, 8).value_or(~0ull)};
  }
  Seen seen_by_next() {
    const HandleId bar = must_open(kEp2, FileKind::kBar, 0, false, kRoot2);
    Seen s = seen(bar);
    med_->release(bar);
    return s;
  }
};

TEST_F(HandoverTest, ResetMethodAndBaselineFromTheConfigImage) {
  EXPECT_EQ(core::reset_method_of(config(kEp2)), ResetMethod::kFlr);  // PCIe DevCap FLR
  auto c = config(kEp2);
  const uint16_t msix = cap_offset(c, kMsixCap);
  c[PCI_COMMAND] |= PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
  c[msix + PCI_MSIX_FLAGS + 1] |= PCI_MSIX_FLAGS_ENABLE >> 8;
  auto clean = core::clean_baseline(c);
  EXPECT_EQ(clean[PCI_COMMAND] & PCI_COMMAND_MASTER, 0);
  EXPECT_NE(clean[PCI_COMMAND] & PCI_COMMAND_MEMORY, 0) << "decode is the baseline's";
  EXPECT_EQ(le(clean, msix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE, 0u);
  EXPECT_NE(le(clean, msix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_MASKALL, 0u);
}

TEST_F(HandoverTest, TheNextTenantReadsACleanDevice) {
  const HandleId cfg = must_open(kEp2, FileKind::kConfig, 0, true);
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true);
  dirty(cfg, bar);
  Seen before = seen(bar);  // control: A's state is there to see
  EXPECT_TRUE(before.master);
  EXPECT_TRUE(before.msix_enabled);
  EXPECT_EQ(before.table_address, 0xfee00000ull);
  EXPECT_EQ(before.ram, 0x5ec2e7da7a5ec2e7ull);

  med_->release(cfg);
  med_->release(bar);  // A's last claiming handle: the claim ends
  med_->drain_handovers();
  Seen after = seen_by_next();
  EXPECT_FALSE(after.master);
  EXPECT_FALSE(after.msix_enabled);
  EXPECT_EQ(after.table_address, 0u);
  EXPECT_EQ(after.ram, 0u);
  EXPECT_EQ(sim(kEp2).physical_power_state(), PowerState::kD0);
  EXPECT_EQ(violations(kEp2), 0u);
  med_->drain_handovers();  // seen_by_next's own claim ended: its hand-over writes the sink
  EXPECT_THAT(sink_.invalidations, ::testing::Contains(kEp2)) << "A's mappings were revoked";
}

TEST_F(HandoverTest, LowPowerIsLeftInD0) {
  const HandleId pw = must_open(kEp2, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(pw, "D3hot").ok());
  ASSERT_EQ(sim(kEp2).physical_power_state(), PowerState::kD3hot) << "control";
  med_->release(pw);
  med_->drain_handovers();
  EXPECT_EQ(sim(kEp2).physical_power_state(), PowerState::kD0);
  EXPECT_EQ(violations(kEp2), 0u);
}

TEST_F(HandoverTest, AReaderThatNeverClaimedLeavesTheDeviceAlone) {
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true);
  ASSERT_TRUE(bar_put(bar, kRam, 8, 42).ok());
  med_->release(bar);
  med_->drain_handovers();
  const HandleId cfg = must_open(kEp2, FileKind::kConfig);  // a read-only open: no claim
  med_->release(cfg);
  med_->drain_handovers();
  auto counters = med_->status_json(view_);
  EXPECT_NE(counters.find("\"handovers\": 1"), std::string::npos) << counters;
}

TEST_F(HandoverTest, RemovingTheViewHandsItsClaimsOver) {
  ViewPolicy v;
  v.name = "tenant";
  const ViewId a = med_->add_view(v);
  const HandleId cfg = must_open(kEp2, FileKind::kConfig, 0, true, kRoot, a);
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true, kRoot, a);
  dirty(cfg, bar);
  med_->remove_view(a);  // the holder keeps its fds; the claim ends anyway
  med_->drain_handovers();
  Seen after = seen_by_next();
  EXPECT_FALSE(after.master);
  EXPECT_EQ(after.ram, 0u);
  med_->release(cfg);
  med_->release(bar);
}

// The group is the daemon's while it is cleaned: a claim then gets EAGAIN
// (EBUSY is for another tenant). The reset blocks on a gate the test opens.
class HandoverGateTest : public MediatorFixture {
 protected:
  void SetUp() override {
    fault_ = std::make_shared<backend::fault::FaultBackend>(backend::sim::make_default_backend());
    med_ = std::make_unique<Mediator>(fault_, MediatorOptions{});
    med_->set_revocation_sink(&sink_);
    view_ = med_->add_view(ViewPolicy{});
  }
  void gate_resets() {
    fault_->device(kEp2)->set_hook(backend::fault::OpClass::kReset,
                                   [this](backend::fault::OpClass) {
                                     std::unique_lock lock(mu_);
                                     entered_ = true;
                                     cv_.notify_all();
                                     cv_.wait(lock, [this] { return open_; });
                                   });
  }
  void wait_entered() {
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(60), [this] { return entered_; }));
  }
  void open_gate() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // The hook uses this fixture's mutex and condition variable, which die
  // before the base's Mediator: no hand-over may run the hook after this.
  void TearDown() override {
    open_gate();
    med_->drain_handovers();
    fault_->device(kEp2)->set_hook(backend::fault::OpClass::kReset, nullptr);
  }
  Result<HandleId> try_open(const Bdf& b, const Caller& c) {
    return med_->open(view_, c, FileRef{b, FileKind::kBar, 0, {}}, OpenFlags{true, true, false},
                      /*wait=*/false);
  }
  std::shared_ptr<backend::fault::FaultBackend> fault_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, open_ = false;
};

TEST_F(HandoverGateTest, AClaimDuringTheHandOverGetsEagainThenSucceeds) {
  gate_resets();
  const HandleId a = must_open(kEp2, FileKind::kBar, 0, true, kRoot);
  EXPECT_EQ(open(kEp2, FileKind::kBar, 0, true, kRoot2).error(), Errno(EBUSY)) << "control";
  med_->release(a);
  wait_entered();  // the hand-over is resetting the device now
  EXPECT_EQ(try_open(kEp2, kRoot2).error(), Errno(kWouldWait)) << "not EBUSY: it frees itself";
  EXPECT_EQ(try_open(kEp2, kRoot).error(), Errno(kWouldWait)) << "the previous tenant too";
  auto cfg = must_open(kEp0, FileKind::kBar, 0, true, kRoot2);  // another group is not held up
  med_->release(cfg);
  // A waiting open (a FUSE lane's) is answered when the hand-over ends.
  std::promise<Result<HandleId>> got;
  auto fut = got.get_future();
  std::thread waiter([&] {
    got.set_value(med_->open(view_, kRoot2, FileRef{kEp2, FileKind::kBar, 0, {}},
                             OpenFlags{true, true, false}, /*wait=*/true));
  });
  EXPECT_EQ(fut.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
      << "control: it waits while the gate is shut";
  open_gate();
  auto b = fut.get();
  waiter.join();
  ASSERT_TRUE(b.ok()) << b.error().name();
  med_->release(*b);
}

// view rm while an open of the view waits for a hand-over: the removal finds
// the handle in the table (revoking it) before it claims. The open must not
// come back with a live claim on a removed view: it fails with ENODEV and
// ends the claim it took, and the next tenant claims the group.
TEST_F(HandoverGateTest, AnOpenWaitingForAHandOverFailsWhenItsViewIsRemoved) {
  const ViewId other = med_->add_view(ViewPolicy{});
  gate_resets();
  const HandleId a = must_open(kEp2, FileKind::kBar, 0, true, kRoot);
  med_->release(a);
  wait_entered();  // the hand-over is resetting the device now
  std::promise<Result<HandleId>> got;
  auto fut = got.get_future();
  std::thread waiter([&] {
    got.set_value(med_->open(other, kRoot2, FileRef{kEp2, FileKind::kBar, 0, {}},
                             OpenFlags{true, true, false}, /*wait=*/true));
  });
  // Bounded: the open puts its handle in the table, then waits to claim.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (med_->view_usage(other).open_handles == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(med_->view_usage(other).open_handles, 1u) << "the open never reached its claim";
  med_->remove_view(other);
  open_gate();
  auto b = fut.get();
  waiter.join();
  if (b.ok()) {
    med_->release(*b);
    ADD_FAILURE() << "a live handle and claim of a removed view";
  } else {
    EXPECT_EQ(b.error(), Errno(ENODEV));
  }
  // Its claim ended: after that hand-over, another tenant claims the group.
  med_->drain_handovers();
  auto next = med_->open(view_, kRoot, FileRef{kEp2, FileKind::kBar, 0, {}},
                         OpenFlags{true, true, false}, /*wait=*/true);
  ASSERT_TRUE(next.ok()) << next.error().name();
  med_->release(*next);
}

TEST_F(HandoverGateTest, AFailedHandOverKeepsTheGroupUntilARetrySucceeds) {
  backend::fault::Fault f;
  f.fail_next = 1;
  fault_->device(kEp2)->set_fault(backend::fault::OpClass::kReset, f);
  const HandleId a = must_open(kEp2, FileKind::kBar, 0, true, kRoot);
  med_->release(a);
  med_->drain_handovers();
  EXPECT_EQ(try_open(kEp2, kRoot2).error(), Errno(kWouldWait))
      << "a device in an unknown state is not handed on";
  med_->drain_handovers();  // that claim started a retry, which passes
  const HandleId b = must_open(kEp2, FileKind::kBar, 0, true, kRoot2);
  med_->release(b);
}

// A device with no FLR and No_Soft_Reset = 0 is reset through D3hot -> D0;
// one with neither keeps its memory (the README says so) but not its config.
TEST(HandoverMethodTest, PmResetAndNone) {
  const char* set = R"json({ "devices": [
    { "bdf": "0000:05:00.0", "vendor": "0x1b36", "device": "0x0001", "class": "0x120000",
      "iommu_group": 5, "config_size": 4096,
      "bars": [ { "index": 0, "type": "mem32", "size": "0x100000", "address": "0xfe000000" } ],
      "capabilities": { "pm": { "no_soft_reset": false }, "pcie": { "port": "endpoint", "flr": false } } },
    { "bdf": "0000:06:00.0", "vendor": "0x1b36", "device": "0x0002", "class": "0x120000",
      "iommu_group": 6, "config_size": 4096,
      "bars": [ { "index": 0, "type": "mem32", "size": "0x100000", "address": "0xfe100000" } ],
      "capabilities": { "pm": { "no_soft_reset": true }, "pcie": { "port": "endpoint", "flr": false } } }
  ] })json";
  std::string error;
  auto loaded = backend::sim::load_backend_json(set, &error);
  ASSERT_TRUE(loaded.ok()) << error;
  std::shared_ptr<backend::sim::SimBackend> sim = std::move(*loaded);
  Mediator med(sim, {});
  const ViewId v = med.add_view(ViewPolicy{});
  const Bdf pm = *Bdf::parse("0000:05:00.0"), none = *Bdf::parse("0000:06:00.0");
  auto st = med.status_json(v);
  EXPECT_NE(st.find("\"reset_method\": \"pm\""), std::string::npos) << st;
  EXPECT_NE(st.find("\"reset_method\": \"none\""), std::string::npos) << st;
  for (const Bdf& b : {pm, none}) {
    auto cfg = med.open(v, kRoot, FileRef{b, FileKind::kConfig, 0, {}}, {true, true, false});
    auto bar = med.open(v, kRoot, FileRef{b, FileKind::kBar, 0, {}}, {true, true, false});
    ASSERT_TRUE(cfg.ok() && bar.ok());
    std::vector<uint8_t> cmd{PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0};
    ASSERT_TRUE(med.write(*cfg, PCI_COMMAND, cmd).ok());
    std::vector<uint8_t> secret{1, 2, 3, 4, 5, 6, 7, 8};
    ASSERT_TRUE(med.write(*bar, kRam, secret).ok());
    med.release(*cfg);
    med.release(*bar);
  }
  med.drain_handovers();
  for (const Bdf& b : {pm, none}) {
    auto cfg = med.open(v, kRoot2, FileRef{b, FileKind::kConfig, 0, {}}, {true, false, false});
    auto bar = med.open(v, kRoot2, FileRef{b, FileKind::kBar, 0, {}}, {true, false, false});
    ASSERT_TRUE(cfg.ok() && bar.ok());
    std::vector<uint8_t> c(8), ram(8);
    ASSERT_TRUE(med.read(*cfg, 0, c).ok());
    ASSERT_TRUE(med.read(*bar, kRam, ram).ok());
    EXPECT_EQ(c[PCI_COMMAND] & PCI_COMMAND_MASTER, 0) << b.str();
    if (b == pm) {
      EXPECT_EQ(ram, std::vector<uint8_t>(8, 0)) << "the PM reset cleared it";
    } else {
      EXPECT_EQ(ram[0], 1) << "no reset: memory survives (documented)";
    }
    EXPECT_EQ(sim->find(b)->violations().value_or(0), 0u);
    med.release(*cfg);
    med.release(*bar);
  }
}

}  // namespace
}  // namespace pcifs::test
