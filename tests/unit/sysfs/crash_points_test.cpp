// The crash failpoints of backend/sysfs (sysfs/crash_points.hpp): the names
// parse, PCIFS_CRASH_AT arms one when a backend starts, and each armed point
// kills its process (SIGKILL) exactly where it says -- with the tree showing
// the step half done -- while an unarmed run of the same step completes.
// Each step runs in a forked child, so the kill ends the child only.
#include "sysfs/crash_points.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "fixtures/sysfs_tree.hpp"
#include "sysfs/sysfs_backend.hpp"
#include "sysfs/sysfs_device.hpp"

namespace pcifs::backend::sysfs {
namespace {

using pcifs::testing::FakeFunction;
using pcifs::testing::SysfsTree;

constexpr char kBdf[] = "0000:01:00.0";
constexpr uint32_t kPmcsr = 0x40 + PCI_PM_CTRL;

SysfsOptions no_uevents() {
  SysfsOptions o;
  o.uevents = false;
  return o;
}

TEST(CrashPointsTest, NamesParse) {
  EXPECT_EQ(parse_crash_point(""), CrashPoint::kNone);
  EXPECT_EQ(parse_crash_point("rom-enabled"), CrashPoint::kRomEnabled);
  EXPECT_EQ(parse_crash_point("rom-read"), CrashPoint::kRomRead);
  EXPECT_EQ(parse_crash_point("before-d3hot"), CrashPoint::kBeforeD3hot);
  EXPECT_EQ(parse_crash_point("after-d3hot"), CrashPoint::kAfterD3hot);
  EXPECT_EQ(parse_crash_point("after-d0"), CrashPoint::kAfterD0);
  EXPECT_EQ(parse_crash_point("mid-restore"), CrashPoint::kMidRestore);
  EXPECT_EQ(parse_crash_point("after-reset"), CrashPoint::kAfterReset);
  EXPECT_FALSE(parse_crash_point("after-D0").has_value());
}

TEST(CrashPointsTest, TheEnvironmentArmsAPointWhenABackendStarts) {
  SysfsTree tree;
  ::setenv("PCIFS_CRASH_AT", "after-d0", 1);
  { SysfsBackend b(tree.root(), no_uevents()); }
  EXPECT_EQ(armed_crash_point(), CrashPoint::kAfterD0);
  ::setenv("PCIFS_CRASH_AT", "nonsense", 1);
  std::string warned;
  {
    SysfsOptions o = no_uevents();
    o.warn = [&](const std::string& w) { warned = w; };
    SysfsBackend b(tree.root(), o);
  }
  EXPECT_NE(warned.find("no such failpoint"), std::string::npos) << warned;
  EXPECT_EQ(armed_crash_point(), CrashPoint::kAfterD0) << "an unknown name changes nothing";
  ::unsetenv("PCIFS_CRASH_AT");
  { SysfsBackend b(tree.root(), no_uevents()); }
  EXPECT_EQ(armed_crash_point(), CrashPoint::kNone);
}

class CrashPointStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeFunction f;
    f.bdf = kBdf;
    f.config = pcifs::testing::make_config(0x1b36, 0x0010, 0x010802, 256);
    f.resources.resize(7);
    f.resources[6] = {0xfd000000, 0xfd0007ff, kResourceMem | kResourceReadonly};
    f.rom = std::vector<uint8_t>(2048, 0x5a);
    f.reset_file = true;
    dir_ = tree_.add(f);
  }
  // Runs `step` on a fresh device in a child with `p` armed; its wait status.
  int run(CrashPoint p, const std::function<void(SysfsDevice&)>& step) {
    const pid_t child = fork();
    if (child == 0) {
      auto d = SysfsDevice::open(dir_, *Bdf::parse(kBdf), std::chrono::milliseconds(0));
      if (!d) _exit(2);
      arm_crash_point(p);
      step(**d);
      _exit(0);
    }
    int st = 0;
    waitpid(child, &st, 0);
    return st;
  }
  static bool killed(int st) { return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL; }
  uint32_t pmcsr() const {
    auto c = SysfsTree::read_file(dir_ + "/config");
    return c[kPmcsr] & PCI_PM_CTRL_STATE_MASK;
  }
  char rom0() const { return static_cast<char>(SysfsTree::read_file(dir_ + "/rom").at(0)); }

  SysfsTree tree_;
  std::string dir_;
};

TEST_F(CrashPointStepTest, RomPointsKillWithDecodeOn) {
  auto capture = [](SysfsDevice& d) {
    std::vector<uint8_t> buf(16);
    (void)d.rom_enable(true);
    (void)d.rom_read(0, buf);
    (void)d.rom_enable(false);
  };
  EXPECT_EQ(run(CrashPoint::kNone, capture), 0);
  EXPECT_EQ(rom0(), '0');
  for (CrashPoint p : {CrashPoint::kRomEnabled, CrashPoint::kRomRead}) {
    EXPECT_TRUE(killed(run(p, capture))) << static_cast<int>(p);
    EXPECT_EQ(rom0(), '1') << static_cast<int>(p);
  }
}

TEST_F(CrashPointStepTest, PowerPointsKillAroundThePmcsrWrite) {
  auto d3hot = [](SysfsDevice& d) { (void)d.set_power_state(PowerState::kD3hot); };
  EXPECT_TRUE(killed(run(CrashPoint::kBeforeD3hot, d3hot)));
  EXPECT_EQ(pmcsr(), 0u);
  EXPECT_TRUE(killed(run(CrashPoint::kAfterD3hot, d3hot)));
  EXPECT_EQ(pmcsr(), 3u);
  auto d0 = [](SysfsDevice& d) { (void)d.set_power_state(PowerState::kD0); };
  EXPECT_TRUE(killed(run(CrashPoint::kAfterD0, d0)));
  EXPECT_EQ(pmcsr(), 0u);
}

TEST_F(CrashPointStepTest, MidRestoreKillsAtTheFirstBarWriteAfterD0) {
  auto cycle = [](SysfsDevice& d) {
    (void)d.config_write(PCI_BASE_ADDRESS_0, 4, 0x11111111);  // not after a D0: no kill
    (void)d.set_power_state(PowerState::kD3hot);
    (void)d.set_power_state(PowerState::kD0);
    (void)d.config_write(PCI_INTERRUPT_LINE, 1, 5);       // not a BAR
    (void)d.config_write(PCI_BASE_ADDRESS_5, 4, 0x5555);  // the restore's first BAR: killed
    (void)d.config_write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  };
  EXPECT_TRUE(killed(run(CrashPoint::kMidRestore, cycle)));
  auto c = SysfsTree::read_file(dir_ + "/config");
  EXPECT_EQ(c[PCI_BASE_ADDRESS_0], 0x11);
  EXPECT_EQ(c[PCI_BASE_ADDRESS_5], 0x55);
  EXPECT_EQ(c[PCI_COMMAND], 0) << "killed before the Command write";
}

TEST_F(CrashPointStepTest, AfterResetKillsOnceResetWasWritten) {
  auto reset = [](SysfsDevice& d) { (void)d.reset(); };
  EXPECT_EQ(run(CrashPoint::kNone, reset), 0);
  EXPECT_TRUE(killed(run(CrashPoint::kAfterReset, reset)));
  EXPECT_EQ(SysfsTree::read_file(dir_ + "/reset").at(0), '1');
}

}  // namespace
}  // namespace pcifs::backend::sysfs
