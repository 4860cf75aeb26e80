// Crash hand-over of real devices (pcifs/step_journal.hpp, issue 11): a
// daemon killed (SIGKILL) in the middle of a ROM capture, a power transition
// or a reset leaves the device as it was -- ROM decode on, D3hot, decode off
// with BARs lost -- and the next daemon brings it to a safe, known state
// before serving it: ROM decode off, D0, config (BARs, Command) restored.
//
// Real daemons on a sysfs-shaped temp tree with a temp --lock-dir. The crash
// is the sysfs backend's failpoint (backend/sysfs/crash_points.hpp:
// PCIFS_CRASH_AT), one per step. A temp tree keeps what is written to it and
// loses nothing by itself, so where a real function would come out of the
// step in D0uninitialized (D3hot -> D0 with No_Soft_Reset = 0, a reset), the
// test clears Command and BAR0 in the tree after the crash, as the hardware
// would have. The negative control removes the journal before the restart:
// the device then stays in the bad state, so the checks can fail.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "fixtures/mount_util.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kBdf[] = "0000:03:00.0";
constexpr uint64_t kBarLen = 4096;
constexpr uint32_t kBar0 = 0xfe000000;
constexpr uint32_t kRomBar = 0xfd000000;
constexpr uint16_t kCommand = PCI_COMMAND_MEMORY;  // Bus Master stays off: no DMA
constexpr uint32_t kPmcsr = 0x40 + PCI_PM_CTRL;    // make_config's PM capability

enum class Trigger { kRomRead, kD3hot, kD3hotThenD0, kReset };

struct Scenario {
  const char* point;  // PCIFS_CRASH_AT
  Trigger trigger;
  // What the tree must show after the crash (the half-done state), beyond
  // the record in the journal.
  bool rom_on = false;
  int pmcsr_state = 0;
  // The function lost its config in the step (D0uninitialized): the test
  // clears Command and BAR0 as the hardware would have.
  bool context_lost = false;
};

std::string name_of(const ::testing::TestParamInfo<Scenario>& info) {
  std::string n = info.param.point;
  for (auto& c : n) c = c == '-' ? '_' : c;
  return n;
}

const Scenario kScenarios[] = {
    {"rom-enabled", Trigger::kRomRead, true, 0, false},
    {"rom-read", Trigger::kRomRead, true, 0, false},
    {"before-d3hot", Trigger::kD3hot, false, 0, false},
    {"after-d3hot", Trigger::kD3hot, false, 3, true},
    {"after-d0", Trigger::kD3hotThenD0, false, 0, true},
    {"mid-restore", Trigger::kD3hotThenD0, false, 0, true},
    {"after-reset", Trigger::kReset, false, 0, true},
};

class CrashRecoveryTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    FakeFunction f;
    f.bdf = kBdf;
    f.config = make_config(0x1b36, 0x0010, 0x010802, 256);
    put_le(f.config, PCI_COMMAND, kCommand, 2);
    put_le(f.config, PCI_BASE_ADDRESS_0, kBar0, 4);
    put_le(f.config, PCI_ROM_ADDRESS, kRomBar, 4);
    f.resources.resize(7);
    f.resources[0] = {kBar0, kBar0 + kBarLen - 1, backend::kResourceMem};
    f.resources[6] = {kRomBar, kRomBar + 2047, backend::kResourceMem | backend::kResourceReadonly};
    f.bar_files[0] = kBarLen;
    // The tree's `rom` starts as the backend leaves it after a capture: "0\n"
    // written over the start (ROM decode off), so only a step can turn it on.
    f.rom = std::vector<uint8_t>(2048, 0);
    (*f.rom)[0] = '0';
    (*f.rom)[1] = '\n';
    f.reset_file = true;
    f.iommu_group = 9;
    dir_ = tree_.add(f);
    char locks[] = "/tmp/pcifs-locks-XXXXXX";
    ASSERT_NE(mkdtemp(locks), nullptr);
    locks_ = locks;
  }
  void TearDown() override {
    ::unsetenv("PCIFS_CRASH_AT");
    daemons_.clear();  // unmounts, the dead one's mount too
    std::error_code ec;
    fs::remove_all(locks_, ec);
  }

  Daemon& start(const char* crash_at) {
    if (crash_at)
      ::setenv("PCIFS_CRASH_AT", crash_at, 1);
    else
      ::unsetenv("PCIFS_CRASH_AT");
    daemons_.push_back(std::make_unique<Daemon>(
        std::vector<std::string>{"--backend=sysfs:" + tree_.root(), "--lock-dir=" + locks_}));
    ::unsetenv("PCIFS_CRASH_AT");
    return *daemons_.back();
  }

  // Runs the step in a child (its request dies with the daemon: ENOTCONN or
  // ECONNABORTED there), waits for the daemon to die and returns its status.
  int crash(Daemon& d, Trigger t) {
    const std::string dev = d.dev(kBdf);
    const pid_t child = fork();
    if (child == 0) {
      switch (t) {
        case Trigger::kRomRead: (void)pread_file(dev + "/rom", 16, 0); break;
        case Trigger::kD3hot: (void)write_file(dev + "/power_state", "D3hot\n"); break;
        case Trigger::kD3hotThenD0: {
          // One handle: its claim holds between the two writes, so no
          // hand-over (which would itself go through D0) runs in between.
          const int fd = ::open((dev + "/power_state").c_str(), O_WRONLY);
          if (fd >= 0 && ::pwrite(fd, "D3hot\n", 6, 0) == 6) (void)!::pwrite(fd, "D0\n", 3, 0);
          break;
        }
        case Trigger::kReset: (void)write_file(dev + "/reset", "1\n"); break;
      }
      _exit(0);
    }
    int st = 0;
    const bool died = wait_until([&] { return waitpid(d.pid(), &st, WNOHANG) == d.pid(); });
    int child_st = 0;
    if (!wait_until([&] { return waitpid(child, &child_st, WNOHANG) == child; })) {
      ::kill(child, SIGKILL);
      waitpid(child, &child_st, 0);
      ADD_FAILURE() << "the step's caller hung after the daemon died";
    }
    return died ? st : -1;
  }

  std::vector<uint8_t> config() const { return SysfsTree::read_file(dir_ + "/config"); }
  uint32_t reg(uint32_t off, unsigned width) const {
    auto c = config();
    uint32_t v = 0;
    for (unsigned k = 0; k < width && off + k < c.size(); ++k) v |= uint32_t{c[off + k]} << (8 * k);
    return v;
  }
  void put_reg(uint32_t off, unsigned width, uint32_t v) {
    auto c = config();
    put_le(c, off, v, width);
    SysfsTree::write(dir_ + "/config", c);
  }
  bool rom_on() const { return SysfsTree::read_file(dir_ + "/rom").at(0) == '1'; }
  bool rom_off() const {
    auto r = SysfsTree::read_file(dir_ + "/rom");
    return r.at(0) == '0' && r.at(1) == '\n';
  }
  size_t records() const {
    std::error_code ec;
    size_t n = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator(locks_ + "/steps", ec)) ++n;
    return n;
  }
  // The safe, known state: ROM decode off, D0, Command and BAR0 as configured.
  ::testing::AssertionResult safe() const {
    if (!rom_off()) return ::testing::AssertionFailure() << "ROM decode is not off";
    if ((reg(kPmcsr, 2) & PCI_PM_CTRL_STATE_MASK) != 0)
      return ::testing::AssertionFailure() << "PMCSR " << reg(kPmcsr, 2);
    if (reg(PCI_COMMAND, 2) != kCommand)
      return ::testing::AssertionFailure() << "Command " << reg(PCI_COMMAND, 2);
    if (reg(PCI_BASE_ADDRESS_0, 4) != kBar0)
      return ::testing::AssertionFailure() << "BAR0 " << reg(PCI_BASE_ADDRESS_0, 4);
    return ::testing::AssertionSuccess();
  }

  // Starts the crashing daemon, runs the step, checks the half-done state.
  void crash_in_step(const Scenario& s) {
    Daemon& first = start(s.point);
    ASSERT_TRUE(first.mounted()) << first.log();
    const int st = crash(first, s.trigger);
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
        << "status " << st << " at " << s.point << "\n"
        << first.log();
    EXPECT_EQ(records(), 1u) << "no step record left by the dead daemon";
    EXPECT_EQ(rom_on(), s.rom_on);
    EXPECT_EQ(reg(kPmcsr, 2) & PCI_PM_CTRL_STATE_MASK, static_cast<uint32_t>(s.pmcsr_state));
    if (s.context_lost) {
      put_reg(PCI_COMMAND, 2, 0);
      put_reg(PCI_BASE_ADDRESS_0, 4, 0);
    }
  }

  SysfsTree tree_;
  std::string dir_, locks_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

TEST_P(CrashRecoveryTest, TheNextDaemonRestoresTheDeviceBeforeServingIt) {
  const Scenario& s = GetParam();
  ASSERT_NO_FATAL_FAILURE(crash_in_step(s));

  Daemon& second = start(nullptr);
  ASSERT_TRUE(second.mounted()) << second.log();
  EXPECT_TRUE(safe()) << second.log();
  EXPECT_EQ(records(), 0u) << "the recovered record stays";
  EXPECT_NE(second.log().find("recovered after a daemon died during its"), std::string::npos)
      << second.log();
  // Served, and healthy.
  auto id = pread_file(second.dev(kBdf) + "/config", 4, 0);
  ASSERT_EQ(id.n, 4) << strerror(id.err);
  EXPECT_EQ(static_cast<uint8_t>(id.data[0]), 0x36);
  EXPECT_EQ(static_cast<uint8_t>(id.data[1]), 0x1b);
  auto cmd = pread_file(second.dev(kBdf) + "/config", 2, PCI_COMMAND);
  ASSERT_EQ(cmd.n, 2);
  EXPECT_EQ(static_cast<uint8_t>(cmd.data[0]), kCommand & 0xff);
  EXPECT_EQ(read_text(second.dev(kBdf) + "/power_state"), "D0\n");
  EXPECT_EQ(device_status(status_of(second.mnt()), kBdf).value("health", ""), "ok");
}

// Negative control: the same crash, the journal gone before the restart: the
// new daemon serves the device as the dead one left it.
TEST_P(CrashRecoveryTest, WithoutTheJournalTheDeviceStaysAsTheCrashLeftIt) {
  const Scenario& s = GetParam();
  if (std::string(s.point) == "before-d3hot") GTEST_SKIP() << "nothing was done to the device yet";
  ASSERT_NO_FATAL_FAILURE(crash_in_step(s));
  std::error_code ec;
  fs::remove_all(locks_ + "/steps", ec);

  Daemon& second = start(nullptr);
  ASSERT_TRUE(second.mounted()) << second.log();
  EXPECT_FALSE(safe());
  EXPECT_EQ(rom_on(), s.rom_on);
}

INSTANTIATE_TEST_SUITE_P(Steps, CrashRecoveryTest, ::testing::ValuesIn(kScenarios), name_of);

}  // namespace
}  // namespace pcifs::testing
