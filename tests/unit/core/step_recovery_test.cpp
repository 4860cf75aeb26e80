// The crash hand-over's core side (fs/core/step_recovery.hpp): DeviceControl
// journals each physical step before it runs and clears the record once the
// device is in a known state; a step that leaves the device unsafe keeps it;
// the Mediator recovers a record a dead daemon left, at attach, before the
// device is served, and serves it unhealthy (EIO) when that fails. Against
// the simulator, with an in-memory journal; FaultDevice hooks look at the
// journal at the very moment of the device operation.
#include "core/step_recovery.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <filesystem>
#include <map>
#include <mutex>

#include "core/cap_walk.hpp"
#include "core/device_control.hpp"
#include "fault/fault_backend.hpp"
#include "fault/fault_device.hpp"
#include "pcifs/mediator.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

using backend::fault::Fault;
using backend::fault::FaultDevice;
using backend::fault::OpClass;

const Bdf kEp0 = *Bdf::parse("0000:01:00.0");  // PM capability, ROM
constexpr char kRoot[] = "/test/shared-sim";

class MemJournal : public StepJournal {
 public:
  Result<void> record(const std::string& root, const Bdf& bdf, const StepRecord& rec) override {
    std::lock_guard lock(mu_);
    ++writes_;
    if (fail_writes_) return Errno(EROFS);
    records_[root + " " + bdf.str()] = rec;
    return Ok();
  }
  Result<void> clear(const std::string& root, const Bdf& bdf) override {
    std::lock_guard lock(mu_);
    records_.erase(root + " " + bdf.str());
    return Ok();
  }
  Result<std::optional<StepRecord>> pending(const std::string& root, const Bdf& bdf) override {
    std::lock_guard lock(mu_);
    if (unreadable_ && bdf == kEp0) return Errno(EBADMSG);
    auto it = records_.find(root + " " + bdf.str());
    if (it == records_.end()) return std::optional<StepRecord>();
    return std::optional<StepRecord>(it->second);
  }
  std::optional<StepRecord> get(const Bdf& bdf = kEp0) {
    std::lock_guard lock(mu_);
    auto it = records_.find(std::string(kRoot) + " " + bdf.str());
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }
  void put(const StepRecord& rec, const Bdf& bdf = kEp0) {
    std::lock_guard lock(mu_);
    records_[std::string(kRoot) + " " + bdf.str()] = rec;
  }
  void fail_writes() {
    std::lock_guard lock(mu_);
    fail_writes_ = true;
  }
  void make_unreadable() {
    std::lock_guard lock(mu_);
    unreadable_ = true;
  }
  int writes() {
    std::lock_guard lock(mu_);
    return writes_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, StepRecord> records_;
  int writes_ = 0;
  bool fail_writes_ = false;
  bool unreadable_ = false;
};

// --- DeviceControl's records

struct Fixture {
  Fixture() {
    backend = backend::sim::make_default_backend();
    sim = backend->find(kEp0);
    fault = std::make_shared<FaultDevice>(sim);
    control = std::make_unique<DeviceControl>(fault, nullptr);
    journal = std::make_shared<MemJournal>();
    control->set_step_recorder(StepRecorder(journal, kRoot, kEp0));
  }
  // The record as it is when the next call of class `c` reaches the device.
  void watch(OpClass c) {
    fault->set_hook(c, [this](OpClass) {
      std::lock_guard lock(seen_mu);
      if (!seen_once) seen = journal->get();
      seen_once = true;
    });
  }
  std::optional<StepRecord> seen_record() {
    std::lock_guard lock(seen_mu);
    return seen;
  }
  ConfigImage config() { return *read_config_image(*sim); }

  std::unique_ptr<backend::sim::SimBackend> backend;
  std::shared_ptr<backend::sim::SimDevice> sim;
  std::shared_ptr<FaultDevice> fault;
  std::unique_ptr<DeviceControl> control;
  std::shared_ptr<MemJournal> journal;
  std::mutex seen_mu;
  std::optional<StepRecord> seen;
  bool seen_once = false;
};

TEST(StepRecordsTest, PowerDownRecordsTheD0ImageBeforePmcsrAndClearsAfter) {
  Fixture f;
  const ConfigImage d0 = f.config();
  f.watch(OpClass::kPower);
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot));
  auto during = f.seen_record();
  ASSERT_TRUE(during.has_value()) << "no record when PMCSR was written";
  EXPECT_EQ(during->step, StepKind::kPowerDown);
  EXPECT_EQ(during->config, d0);
  EXPECT_EQ(during->command, cfg_read(d0, PCI_COMMAND, 2));
  EXPECT_FALSE(f.journal->get().has_value()) << "the completed step left its record";
}

TEST(StepRecordsTest, PowerUpRecordsTheSavedImageBeforeD0AndClearsAfterTheRestore) {
  Fixture f;
  const ConfigImage d0 = f.config();
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD3hot));
  f.watch(OpClass::kPower);
  ASSERT_TRUE(f.control->set_power_state(PowerState::kD0));
  auto during = f.seen_record();
  ASSERT_TRUE(during.has_value());
  EXPECT_EQ(during->step, StepKind::kPowerUp);
  EXPECT_EQ(cfg_read(during->config, PCI_COMMAND, 2), cfg_read(d0, PCI_COMMAND, 2));
  EXPECT_EQ(cfg_read(during->config, PCI_BASE_ADDRESS_0, 4), cfg_read(d0, PCI_BASE_ADDRESS_0, 4));
  EXPECT_FALSE(f.journal->get().has_value());
}

TEST(StepRecordsTest, RomCaptureRecordsThatDecodeMustGoOff) {
  Fixture f;
  f.watch(OpClass::kRom);
  ASSERT_TRUE(f.control->rom());
  auto during = f.seen_record();
  ASSERT_TRUE(during.has_value());
  EXPECT_EQ(during->step, StepKind::kRomCapture);
  EXPECT_TRUE(during->rom_decode_off);
  EXPECT_TRUE(during->config.empty());
  EXPECT_FALSE(f.journal->get().has_value());
}

TEST(StepRecordsTest, ResetRecordsTheImageToRestore) {
  Fixture f;
  const ConfigImage d0 = f.config();
  f.watch(OpClass::kReset);
  ASSERT_TRUE(f.control->reset());
  auto during = f.seen_record();
  ASSERT_TRUE(during.has_value());
  EXPECT_EQ(during->step, StepKind::kReset);
  EXPECT_EQ(during->config, d0);
  EXPECT_FALSE(f.journal->get().has_value());
}

TEST(StepRecordsTest, HandOverRecordsTheBaseline) {
  Fixture f;
  const ConfigImage baseline = clean_baseline(f.config());
  f.watch(OpClass::kReset);
  ASSERT_TRUE(f.control->hand_over(baseline, ResetMethod::kFlr));
  auto during = f.seen_record();
  ASSERT_TRUE(during.has_value());
  EXPECT_EQ(during->step, StepKind::kHandover);
  EXPECT_EQ(during->config, baseline);
  EXPECT_FALSE(f.journal->get().has_value());
}

TEST(StepRecordsTest, AFailedRestoreLeavesTheRecordForRecovery) {
  Fixture f;
  f.fault->set_fault(OpClass::kConfigWrite, Fault::always());
  EXPECT_FALSE(f.control->reset());  // the reset passes, its restore fails
  auto left = f.journal->get();
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(left->step, StepKind::kReset);
  EXPECT_FALSE(left->config.empty());
}

TEST(StepRecordsTest, RomDecodeStuckOnLeavesTheRecord) {
  Fixture f;
  // Calls of kRom: enable, read, disable, disable. Once the read is reached,
  // every later call fails: decode cannot be turned off.
  f.fault->set_hook(OpClass::kRom, [&f](OpClass) {
    if (f.fault->calls(OpClass::kRom) == 2) f.fault->set_fault(OpClass::kRom, Fault::always());
  });
  (void)f.control->rom();
  auto left = f.journal->get();
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(left->step, StepKind::kRomCapture);
  EXPECT_TRUE(left->rom_decode_off);
}

TEST(StepRecordsTest, APowerDownThatDidNotHappenClearsItsRecord) {
  Fixture f;
  f.fault->set_fault(OpClass::kPower, Fault::next(1));
  EXPECT_FALSE(f.control->set_power_state(PowerState::kD3hot));
  EXPECT_EQ(f.control->power_state(), PowerState::kD0);
  EXPECT_FALSE(f.journal->get().has_value());
}

TEST(StepRecordsTest, AJournalThatCannotWriteDoesNotStopTheStep) {
  Fixture f;
  f.journal->fail_writes();
  EXPECT_TRUE(f.control->set_power_state(PowerState::kD3hot));
  EXPECT_EQ(f.sim->physical_power_state(), PowerState::kD3hot);
  EXPECT_GT(f.journal->writes(), 0);
}

// --- recovery at attach, through the Mediator

class SharedSim : public backend::Backend {
 public:
  explicit SharedSim(std::shared_ptr<backend::sim::SimBackend> inner) : inner_(std::move(inner)) {}
  std::string describe() const override { return "shared " + inner_->describe(); }
  std::optional<std::string> shared_root() const override { return kRoot; }
  std::vector<std::shared_ptr<backend::Device>> devices() override { return inner_->devices(); }
  void set_hotplug_callback(backend::HotplugFn fn) override {
    inner_->set_hotplug_callback(std::move(fn));
  }

 private:
  std::shared_ptr<backend::sim::SimBackend> inner_;
};

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pcifs-steps-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    locks_ = tmpl;
    sim_ = backend::sim::make_default_backend();
    fault_ = std::make_shared<backend::fault::FaultBackend>(std::make_shared<SharedSim>(sim_));
    good_ = *read_config_image(*sim_->find(kEp0));
  }
  void TearDown() override {
    mediator_.reset();
    std::error_code ec;
    std::filesystem::remove_all(locks_, ec);
  }
  // What a daemon that died after PMCSR D3hot, with ROM decode on, leaves.
  void crash_mid_power_down() {
    auto& dev = *sim_->find(kEp0);
    StepRecord rec = restore_record(StepKind::kPowerDown, good_);
    journal_->put(rec);
    ASSERT_TRUE(dev.rom_enable(true));
    ASSERT_TRUE(dev.set_power_state(PowerState::kD3hot));
  }
  void start(bool leases = true) {
    MediatorOptions o;
    o.doe_timeout = std::chrono::milliseconds(100);
    if (leases) {
      HostLockOptions hl;
      hl.dir = locks_;
      hl.owner = "pid 1, test";
      hl.serves = [](const backend::DeviceInfo&) { return true; };
      o.host_locks = std::move(hl);
    }
    o.step_journal = journal_;
    mediator_ = std::make_unique<Mediator>(fault_, o);
    view_ = mediator_->add_view(ViewPolicy{});
  }
  Result<size_t> read_config(uint32_t off, std::span<uint8_t> out) {
    auto h = mediator_->open(view_, Caller{100, 0, 0}, FileRef{kEp0, FileKind::kConfig, 0, {}},
                             OpenFlags{true, false, false});
    if (!h) return h.error();
    auto r = mediator_->read(*h, off, out);
    mediator_->release(*h);
    return r;
  }
  ConfigImage device_config() { return *read_config_image(*sim_->find(kEp0)); }

  std::string locks_;
  std::shared_ptr<backend::sim::SimBackend> sim_;
  std::shared_ptr<backend::fault::FaultBackend> fault_;
  std::shared_ptr<MemJournal> journal_ = std::make_shared<MemJournal>();
  ConfigImage good_;
  std::unique_ptr<Mediator> mediator_;
  ViewId view_ = 0;
};

TEST_F(RecoveryTest, APendingRecordIsRecoveredBeforeTheDeviceIsServed) {
  crash_mid_power_down();
  auto& dev = *sim_->find(kEp0);
  start();
  EXPECT_EQ(dev.physical_power_state(), PowerState::kD0);
  EXPECT_FALSE(dev.rom_decode_enabled());
  ConfigImage now = device_config();
  EXPECT_EQ(cfg_read(now, PCI_COMMAND, 2), cfg_read(good_, PCI_COMMAND, 2));
  for (uint32_t off = PCI_BASE_ADDRESS_0; off <= PCI_BASE_ADDRESS_5; off += 4) {
    EXPECT_EQ(cfg_read(now, off, 4), cfg_read(good_, off, 4)) << "BAR at " << off;
  }
  EXPECT_FALSE(journal_->get().has_value()) << "the recovered record stays";
  EXPECT_EQ(mediator_->health(kEp0), "ok");
  std::vector<uint8_t> cmd(2);
  ASSERT_TRUE(read_config(PCI_COMMAND, cmd));
  EXPECT_EQ(cmd[0] | (cmd[1] << 8), static_cast<int>(cfg_read(good_, PCI_COMMAND, 2)));
  EXPECT_EQ(dev.violations().value_or(0), 0u);
}

// Negative control: without a lease there is no recovery (nor should there
// be: a live daemon may be mid-step), and the device stays as it was left.
TEST_F(RecoveryTest, WithoutALeaseNothingIsRecovered) {
  crash_mid_power_down();
  auto& dev = *sim_->find(kEp0);
  start(/*leases=*/false);
  EXPECT_EQ(dev.physical_power_state(), PowerState::kD3hot);
  EXPECT_TRUE(dev.rom_decode_enabled());
  EXPECT_TRUE(journal_->get().has_value());
}

TEST_F(RecoveryTest, AFailedRecoveryServesTheDeviceUnhealthyWithEio) {
  crash_mid_power_down();
  fault_->device(kEp0)->set_fault(OpClass::kRom, Fault::always());
  start();
  EXPECT_EQ(mediator_->health(kEp0), "recovery-failed");
  std::vector<uint8_t> cmd(2);
  auto r = read_config(PCI_COMMAND, cmd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  EXPECT_TRUE(journal_->get().has_value()) << "the next start must try again";
  // Other devices are served as usual.
  EXPECT_EQ(mediator_->health(*Bdf::parse("0000:02:00.0")), "ok");
}

TEST_F(RecoveryTest, AnUnreadableRecordServesTheDeviceUnhealthyAfterMakingItSafe) {
  crash_mid_power_down();
  journal_->make_unreadable();
  auto& dev = *sim_->find(kEp0);
  start();
  EXPECT_FALSE(dev.rom_decode_enabled());
  EXPECT_EQ(mediator_->health(kEp0), "recovery-failed");
}

TEST_F(RecoveryTest, ACommandOnlyRecordWritesTheCommand) {
  auto& dev = *sim_->find(kEp0);
  ASSERT_TRUE(dev.config_write(PCI_COMMAND, 2, 0));
  StepRecord rec;
  rec.step = StepKind::kReset;
  rec.command = static_cast<uint16_t>(cfg_read(good_, PCI_COMMAND, 2));
  auto done = recover_step(dev, rec);
  ASSERT_TRUE(done) << done.error().name();
  EXPECT_EQ(cfg_read(device_config(), PCI_COMMAND, 2), *rec.command);
  EXPECT_NE(done->find("Command"), std::string::npos) << *done;
}

}  // namespace
}  // namespace pcifs::core
