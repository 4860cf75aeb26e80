// DeviceControl against the simulator: the power state machine (every
// transition, what each access kind does in each state), restore after D0 and
// reset, the quiesce ordering and drain, fail-fast during a quiesce, decode
// changes, remove. The simulator's violation oracle must stay at zero wherever
// the core is in charge; negative controls show the oracle (or the test)
// would catch the failure.
#include "core/device_control.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cap_walk.hpp"
#include "fault/fault_device.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

using backend::fault::FaultDevice;
using backend::fault::OpClass;
using backend::sim::SimDevice;

constexpr uint64_t kIdReg = 0x40;
constexpr uint64_t kIdValue = 0x50434946;
constexpr uint64_t kScratch0 = 0x00;

Bdf bdf(const char* text) { return *Bdf::parse(text); }

// Records each call; optionally performs a BAR read inside the callback, the
// way a page fault's FUSE_READ would while notify_inval_inode waits for it.
class RecordingSink : public RevocationSink {
 public:
  void invalidate_mappings(const Bdf& b) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls.push_back(b);
    if (control != nullptr) {
      auto r = control->bar_read(0, kIdReg, 4);
      bar_results.push_back(r ? 0 : r.error().value());
    }
  }
  std::vector<Bdf> calls;
  std::vector<int> bar_results;  // 0: admitted and read; else the errno
  DeviceControl* control = nullptr;

 private:
  std::mutex mu_;
};

struct SimFixture {
  explicit SimFixture(const char* which = "0000:01:00.0") {
    backend = backend::sim::make_default_backend();
    sim = backend->find(bdf(which));
    fault = std::make_shared<FaultDevice>(sim);
    control = std::make_unique<DeviceControl>(fault, &sink);
  }
  uint64_t violations() const { return *sim->violations(); }
  std::string log() const {
    std::string s;
    for (auto& r : sim->violation_log()) s += r + "; ";
    return s;
  }
  std::unique_ptr<backend::sim::SimBackend> backend;
  std::shared_ptr<SimDevice> sim;
  std::shared_ptr<FaultDevice> fault;
  RecordingSink sink;
  std::unique_ptr<DeviceControl> control;
};

// ------------------------------------------------------- state machine table

struct Transition {
  const char* device;
  PowerState from;
  PowerState to;
};

std::string name_of(const testing::TestParamInfo<Transition>& info) {
  std::string d = info.param.device;
  return "fn" + d.substr(d.size() - 1) + "_bus" + d.substr(5, 2) + "_" +
         std::string(to_string(info.param.from)) + "_to_" + std::string(to_string(info.param.to));
}

class PowerTransitionTest : public testing::TestWithParam<Transition> {};

void expect_accesses_in(DeviceControl& dc, PowerState s, const ConfigImage& d0_config) {
  auto bar = dc.bar_read(0, kIdReg, 4);
  auto doe = dc.enter_doe();
  auto cfg = dc.config_read(PCI_VENDOR_ID, 2);
  auto cfg_w = dc.config_write(PCI_INTERRUPT_LINE, 1, d0_config[PCI_INTERRUPT_LINE]);
  ASSERT_TRUE(cfg.ok()) << to_string(s);
  EXPECT_EQ(*cfg, 0x1b36u);
  if (s == PowerState::kD0) {
    ASSERT_TRUE(bar.ok());
    EXPECT_EQ(*bar, kIdValue);
    EXPECT_TRUE(doe.ok());
    EXPECT_TRUE(cfg_w.ok());
    return;
  }
  ASSERT_FALSE(bar.ok());
  EXPECT_EQ(bar.error(), Errno(EIO));
  ASSERT_FALSE(doe.ok());
  EXPECT_EQ(doe.error(), Errno(EIO));
  EXPECT_EQ(cfg_w.ok(), s == PowerState::kD3hot);
}

TEST_P(PowerTransitionTest, ReachesTargetWithOracleAtZero) {
  const Transition& t = GetParam();
  SimFixture f(t.device);
  auto d0_config = read_config_image(*f.sim);
  ASSERT_TRUE(d0_config.ok());
  ASSERT_TRUE(f.control->set_power_state(t.from).ok());
  ASSERT_TRUE(f.control->set_power_state(t.to).ok());
  EXPECT_EQ(f.control->power_state(), t.to);
  EXPECT_EQ(f.sim->physical_power_state(), t.to);
  expect_accesses_in(*f.control, t.to, *d0_config);
  // Back to D0: config restored, BARs usable again.
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
  auto after = read_config_image(*f.sim);
  ASSERT_TRUE(after.ok());
  for (uint32_t off = PCI_BASE_ADDRESS_0; off <= PCI_BASE_ADDRESS_5; off += 4) {
    EXPECT_EQ(cfg_read(*after, off, 4), cfg_read(*d0_config, off, 4)) << "BAR at " << off;
  }
  EXPECT_EQ(cfg_read(*after, PCI_COMMAND, 2), cfg_read(*d0_config, PCI_COMMAND, 2));
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

std::vector<Transition> all_transitions() {
  std::vector<Transition> v;
  const PowerState states[] = {PowerState::kD0, PowerState::kD3hot, PowerState::kD3cold};
  for (const char* d : {"0000:01:00.0", "0000:01:00.1", "0000:02:00.0"}) {
    for (auto from : states) {
      for (auto to : states) v.push_back({d, from, to});
    }
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllStates, PowerTransitionTest, testing::ValuesIn(all_transitions()),
                         name_of);

TEST(DeviceControl, SameStateWriteTouchesNothing) {
  SimFixture f;
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(f.fault->calls(OpClass::kPower), 0u);
  EXPECT_TRUE(f.sink.calls.empty());
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot).ok());
  f.fault->reset_counters();
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot).ok());
  EXPECT_EQ(f.fault->calls(OpClass::kPower), 0u);
}

TEST(DeviceControl, D3coldConfigReadsComeFromSnapshotWithoutDeviceAccess) {
  SimFixture f;
  auto before = read_config_image(*f.sim);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3cold).ok());
  f.fault->reset_counters();
  std::vector<uint8_t> got(before->size());
  ASSERT_TRUE(f.control->config_read_block(0, got).ok());
  EXPECT_EQ(*f.control->config_read(PCI_COMMAND, 2), cfg_read(*before, PCI_COMMAND, 2));
  EXPECT_EQ(f.control->config_write(PCI_COMMAND, 2, 0).error(), Errno(EIO));
  EXPECT_EQ(f.fault->calls(OpClass::kConfigRead) + f.fault->calls(OpClass::kConfigWrite), 0u);
  // The snapshot is the config at D3cold entry, with PMCSR saying D3.
  auto pm = find_capability(*before, PCI_CAP_ID_PM, false);
  ASSERT_TRUE(pm.has_value());
  for (size_t i = 0; i < got.size(); ++i) {
    if (i == size_t{pm->offset} + PCI_PM_CTRL) {
      EXPECT_EQ(got[i] & PCI_PM_CTRL_STATE_MASK, 3);
    } else {
      ASSERT_EQ(got[i], (*before)[i]) << "offset " << i;
    }
  }
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

TEST(DeviceControl, ConfigWrittenInD3hotSurvivesReturnToD0) {
  SimFixture f("0000:01:00.1");  // No_Soft_Reset = 0: context is lost on D3hot -> D0
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot).ok());
  ASSERT_TRUE(f.control->config_write(PCI_INTERRUPT_LINE, 1, 0x5a).ok());
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(*f.sim->config_read(PCI_INTERRUPT_LINE, 1), 0x5au);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

// ------------------------------------------------------------ reset, restore

TEST(DeviceControl, ResetRestoresConfigAndKeepsBarsWorking) {
  SimFixture f("0000:01:00.0");
  auto exp = find_capability(*read_config_image(*f.sim), PCI_CAP_ID_EXP, false);
  ASSERT_TRUE(exp.has_value());
  uint32_t devctl = exp->offset + PCI_EXP_DEVCTL;
  uint32_t want = (*f.sim->config_read(devctl, 2) & ~0x7000u) | 0x2000u;  // MRRS 1024
  ASSERT_TRUE(f.control->config_write(devctl, 2, want).ok());
  ASSERT_TRUE(f.control->config_write(PCI_INTERRUPT_LINE, 1, 0x33).ok());
  auto before = read_config_image(*f.sim);
  uint64_t epoch = f.control->epoch();
  ASSERT_TRUE(f.control->reset().ok());
  EXPECT_NE(f.control->epoch(), epoch);
  auto after = read_config_image(*f.sim);
  EXPECT_EQ(cfg_read(*after, devctl, 2), want);
  EXPECT_EQ(cfg_read(*after, PCI_INTERRUPT_LINE, 1), 0x33u);
  EXPECT_EQ(cfg_read(*after, PCI_COMMAND, 2), cfg_read(*before, PCI_COMMAND, 2));
  EXPECT_EQ(cfg_read(*after, PCI_BASE_ADDRESS_0, 4), cfg_read(*before, PCI_BASE_ADDRESS_0, 4));
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
  EXPECT_EQ(f.sink.calls.size(), 2u);
  EXPECT_EQ(f.control->counters().resets, 1u);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

TEST(DeviceControl, NegativeControlResetWithoutRestoreIsCaughtByOracle) {
  SimFixture f;
  ASSERT_TRUE(f.sim->reset().ok());  // what reset() would do without the restore
  (void)f.sim->bar_read(0, kIdReg, 4);
  EXPECT_GT(f.violations(), 0u);
}

TEST(DeviceControl, ResetFromD3coldGoesThroughD0) {
  SimFixture f;
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3cold).ok());
  ASSERT_TRUE(f.control->reset().ok());
  EXPECT_EQ(f.control->power_state(), PowerState::kD0);
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

// ---------------------------------------------------------- quiesce ordering

TEST(DeviceControl, SinkCalledWhileAccessesFlowThenAfterGateClosed) {
  SimFixture f;
  f.sink.control = f.control.get();  // a BAR read inside the callback: no deadlock
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot).ok());
  ASSERT_EQ(f.sink.calls.size(), 2u);
  EXPECT_EQ(f.sink.calls[0], bdf("0000:01:00.0"));
  EXPECT_EQ(f.sink.bar_results, (std::vector<int>{0, EIO}));
  // Already quiesced: no mapping can exist, the sink is not bothered again.
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3cold).ok());
  EXPECT_EQ(f.sink.calls.size(), 2u);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

// Holds BAR reads inside the device until released.
struct BarLatch {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, released = false;
  void hook(OpClass c) {
    if (c != OpClass::kBarRead) return;
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  }
  void wait_entered() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return entered; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    released = true;
    cv.notify_all();
  }
};

// Waits (bounded) until the gate refuses BAR accesses: the quiesce closed it.
bool wait_gate_closed(DeviceControl& dc) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!dc.enter_bar(2).ok()) return true;
    std::this_thread::yield();
  }
  return false;
}

TEST(DeviceControl, InFlightAccessFinishesBeforeTransitionAndOthersFailFast) {
  SimFixture f;
  BarLatch latch;
  f.fault->set_hook(OpClass::kBarRead, [&](OpClass c) { latch.hook(c); });
  Result<uint64_t> held = Errno(EINVAL);
  std::thread reader([&] { held = f.control->bar_read(0, kIdReg, 4); });
  latch.wait_entered();
  f.fault->set_hook(OpClass::kBarRead, nullptr);
  Result<void> down = Errno(EINVAL);
  std::thread control([&] { down = f.control->set_power_state(PowerState::kD3hot); });
  ASSERT_TRUE(wait_gate_closed(*f.control));
  // The quiesce is draining: new accesses fail at once, nothing waits for it.
  EXPECT_EQ(f.control->bar_read(0, kScratch0, 8).error(), Errno(EIO));
  EXPECT_EQ(f.control->enter_doe().error(), Errno(EIO));
  EXPECT_EQ(f.control->wake().error(), Errno(EIO));
  EXPECT_EQ(f.control->rom().error(), Errno(EIO));
  EXPECT_TRUE(f.control->config_read(PCI_VENDOR_ID, 2).ok());  // config passes in D0
  EXPECT_EQ(f.fault->calls(OpClass::kPower), 0u);              // the transition waits for the drain
  EXPECT_EQ(f.sim->physical_power_state(), PowerState::kD0);
  latch.release();
  reader.join();
  control.join();
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(*held, kIdValue);
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(f.control->power_state(), PowerState::kD3hot);
  EXPECT_GT(f.control->counters().gate.longest_drain.count(), 0);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

TEST(DeviceControl, NegativeControlUngatedAccessRacingPowerDownIsCaught) {
  SimFixture f;
  BarLatch latch;
  f.fault->set_hook(OpClass::kBarRead, [&](OpClass c) { latch.hook(c); });
  // A raw access, not admitted through the gate: the drain cannot see it.
  std::thread reader([&] { (void)f.fault->bar_read(0, kIdReg, 4); });
  latch.wait_entered();
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot).ok());
  latch.release();
  reader.join();
  EXPECT_GT(f.violations(), 0u);
}

// --------------------------------------------------------------------- wake

TEST(DeviceControl, WakeBringsD0AndIsANoOpInD0) {
  SimFixture f;
  ASSERT_TRUE(f.control->wake().ok());
  EXPECT_EQ(f.fault->calls(OpClass::kPower), 0u);
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3cold).ok());
  std::vector<std::thread> wakers;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    wakers.emplace_back([&] { ok += f.control->wake().ok() ? 1 : 0; });
  }
  for (auto& t : wakers) t.join();
  EXPECT_EQ(ok.load(), 4);  // up-transitions never quiesce: wakers wait, all succeed
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

// ------------------------------------------------------------------- decode

TEST(DeviceControl, MemoryDecodeOffQuiescesAndOnReopens) {
  SimFixture f;
  uint32_t cmd = *f.sim->config_read(PCI_COMMAND, 2);
  uint64_t epoch = f.control->epoch();
  auto write = [&](uint32_t v) {
    return [&f, v] { return f.fault->config_write(PCI_COMMAND, 2, v); };
  };
  ASSERT_TRUE(
      f.control->change_decode({false, std::nullopt}, write(cmd & ~uint32_t{PCI_COMMAND_MEMORY}))
          .ok());
  EXPECT_EQ(f.sink.calls.size(), 2u);
  EXPECT_NE(f.control->epoch(), epoch);
  EXPECT_EQ(f.control->bar_read(0, kIdReg, 4).error(), Errno(EIO));
  EXPECT_TRUE(f.control->bar_read(4, 0, 1).ok());  // I/O decode is still on
  ASSERT_TRUE(f.control->change_decode({true, std::nullopt}, write(cmd)).ok());
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
  // Power cycle keeps the owner's decode choice.
  ASSERT_TRUE(
      f.control->change_decode({false, std::nullopt}, write(cmd & ~uint32_t{PCI_COMMAND_MEMORY}))
          .ok());
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3cold).ok());
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD0).ok());
  EXPECT_EQ(f.control->bar_read(0, kIdReg, 4).error(), Errno(EIO));
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

// Turning memory decode off quiesces BARs, not DOE: a DOE exchange of
// another process does not fail because the claim holder flipped a Command
// bit (DOE is config space; its mailbox keeps its state). Seen from inside
// the decode write, with BARs already closed. The power change of
// InFlightAccessFinishesBeforeTransitionAndOthersFailFast refuses DOE.
TEST(DeviceControl, DecodeOffLeavesDoeAdmitted) {
  SimFixture f;
  uint32_t cmd = *f.sim->config_read(PCI_COMMAND, 2);
  int doe = -1, bar = -1;
  auto write = [&] {
    auto d = f.control->enter_doe();
    doe = d ? 0 : d.error().value();
    d = Errno(EINVAL);  // the DOE access ends before the write
    bar = f.control->bar_read(0, kIdReg, 4) ? 0 : EIO;
    return f.fault->config_write(PCI_COMMAND, 2, cmd & ~uint32_t{PCI_COMMAND_MEMORY});
  };
  ASSERT_TRUE(f.control->change_decode({false, std::nullopt}, write).ok());
  EXPECT_EQ(doe, 0) << "DOE is refused during a decode change";
  EXPECT_EQ(bar, EIO) << "not vacuous: BARs were closed then";
  EXPECT_TRUE(f.control->enter_doe().ok());
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

TEST(DeviceControl, FailedDecodeWriteReopensUnchanged) {
  SimFixture f;
  auto fail = [] { return Result<void>(Errno(EIO)); };
  EXPECT_EQ(f.control->change_decode({false, std::nullopt}, fail).error(), Errno(EIO));
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
}

// ------------------------------------------------------------------- remove

TEST(DeviceControl, RemoveRevokesForGood) {
  SimFixture f;
  uint64_t epoch = f.control->epoch();
  ASSERT_TRUE(f.control->remove().ok());
  EXPECT_TRUE(f.control->revoked());
  EXPECT_TRUE(f.sim->removed());
  EXPECT_NE(f.control->epoch(), epoch);
  EXPECT_EQ(f.sink.calls.size(), 1u);
  EXPECT_EQ(f.control->bar_read(0, kIdReg, 4).error(), Errno(ENODEV));
  EXPECT_EQ(f.control->config_read(0, 4).error(), Errno(ENODEV));
  EXPECT_EQ(f.control->enter_doe().error(), Errno(ENODEV));
  EXPECT_EQ(f.control->set_power_state(PowerState::kD3hot).error(), Errno(ENODEV));
  EXPECT_EQ(f.control->reset().error(), Errno(ENODEV));
  EXPECT_EQ(f.control->rom().error(), Errno(ENODEV));
  EXPECT_EQ(f.control->remove().error(), Errno(ENODEV));
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

TEST(DeviceControl, FailedTransitionLeavesDeviceUsable) {
  SimFixture f;
  f.fault->set_fault(OpClass::kPower, backend::fault::Fault::next(1));
  EXPECT_EQ(f.control->set_power_state(PowerState::kD3hot).error(), Errno(EIO));
  EXPECT_EQ(f.control->power_state(), PowerState::kD0);
  EXPECT_EQ(*f.control->bar_read(0, kIdReg, 4), kIdValue);
  EXPECT_EQ(f.violations(), 0u) << f.log();
}

TEST(DeviceControl, CountersTrackAdmissionsAndRefusals) {
  SimFixture f;
  (void)f.control->bar_read(0, kIdReg, 4);
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot).ok());
  (void)f.control->bar_read(0, kIdReg, 4);
  auto c = f.control->counters();
  EXPECT_GE(c.gate.admitted, 1u);
  EXPECT_EQ(c.gate.refused_eio, 1u);
  EXPECT_EQ(c.quiesces, 1u);
  EXPECT_EQ(c.transitions, 1u);
}

}  // namespace
}  // namespace pcifs::core
