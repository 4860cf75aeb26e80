// The violation oracle: every access real hardware forbids is counted with a
// reason (table-driven, one case per kind), and legal accesses count zero.
#include <gtest/gtest.h>

#include <functional>

#include "sim/bar_memory.hpp"
#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

struct ViolationCase {
  const char* name;
  const char* bdf;
  std::function<void(SimDevice&)> setup;  // legal steps into the state
  std::function<void(SimDevice&)> act;    // exactly one forbidden access
  const char* reason;                     // substring of the logged reason
};

void d3hot(SimDevice& d) { ASSERT_TRUE(d.set_power_state(PowerState::kD3hot).ok()); }
void d3cold(SimDevice& d) {
  d3hot(d);
  ASSERT_TRUE(d.set_power_state(PowerState::kD3cold).ok());
}
void nothing(SimDevice&) {}
uint32_t doe0(SimDevice& d) { return find_cap(d, PCI_EXT_CAP_ID_DOE, true); }

void expect_all_ones_read(SimDevice& d, unsigned bar) {
  auto v = d.bar_read(bar, 0x40, 4);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0xffffffffu);  // master abort
}

const ViolationCase kCases[] = {
    {"BarReadInD3hot", "0000:01:00.0", d3hot, [](SimDevice& d) { expect_all_ones_read(d, 0); },
     "bar0 read of 4 bytes in D3hot"},
    {"BarWriteInD3cold", "0000:01:00.0", d3cold,
     [](SimDevice& d) { EXPECT_TRUE(d.bar_write(2, 0, 8, 1).ok()); },
     "bar2 write of 8 bytes in D3cold"},
    {"BarWithMemoryDecodeOff", "0000:02:00.0", [](SimDevice& d) { wr(d, PCI_COMMAND, 2, 0); },
     [](SimDevice& d) { expect_all_ones_read(d, 0); },
     "bar0 read of 4 bytes with memory decode off"},
    {"IoBarWithIoDecodeOff", "0000:01:00.0",
     [](SimDevice& d) { wr(d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY); },
     [](SimDevice& d) { EXPECT_EQ(d.bar_read(4, 0, 1).value_or(0), 0xffu); },
     "bar4 read of 1 bytes with I/O decode off"},
    {"BarWhileRomDecodeOn", "0000:01:00.0",
     [](SimDevice& d) { ASSERT_TRUE(d.rom_enable(true).ok()); },
     [](SimDevice& d) { expect_all_ones_read(d, 2); },
     "bar2 read of 4 bytes while ROM decode is on"},
    {"RomEnabledThroughConfig", "0000:02:00.0",
     [](SimDevice& d) { wr(d, PCI_ROM_ADDRESS, 4, 0xfe300001); },
     [](SimDevice& d) { EXPECT_TRUE(d.bar_write(0, 0, 4, 1).ok()); }, "while ROM decode is on"},
    {"ConfigReadInD3cold", "0000:01:00.1", d3cold,
     [](SimDevice& d) { EXPECT_EQ(d.config_read(0, 4).value_or(0), 0xffffffffu); },
     "config read of 4 bytes in D3cold"},
    {"ConfigWriteInD3cold", "0000:01:00.1", d3cold,
     [](SimDevice& d) { EXPECT_TRUE(d.config_write(PCI_COMMAND, 2, 0).ok()); },
     "config write of 2 bytes in D3cold"},
    {"RomReadInD3hot", "0000:01:00.0",
     [](SimDevice& d) {
       ASSERT_TRUE(d.rom_enable(true).ok());
       d3hot(d);
     },
     [](SimDevice& d) {
       std::vector<uint8_t> b(2);
       EXPECT_EQ(d.rom_read(0, b).value_or(0), 2u);
       EXPECT_EQ(b[0], 0xff);
     },
     "rom read in D3hot"},
    {"DoeNonDwordRead", "0000:01:00.0", nothing,
     [](SimDevice& d) { (void)d.config_read(doe0(d) + PCI_DOE_STATUS, 2); }, "not a dword access"},
    {"DoeNonDwordWrite", "0000:01:00.0", nothing,
     [](SimDevice& d) { (void)d.config_write(doe0(d) + PCI_DOE_WRITE + 3, 1, 0); },
     "not a dword access"},
    {"DoeWriteInD3hot", "0000:01:00.0", d3hot,
     [](SimDevice& d) { (void)d.config_write(doe0(d) + PCI_DOE_WRITE, 4, 0x00010001); },
     "DOE register write of 4 bytes in D3hot"},
    {"DoeMisuseReportedByResponder", "0000:01:00.0", nothing,
     [](SimDevice& d) { (void)d.config_write(doe0(d) + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_GO); },
     "GO with an empty data object"},
    {"D3coldFromD0", "0000:01:00.0", nothing,
     [](SimDevice& d) { EXPECT_TRUE(d.set_power_state(PowerState::kD3cold).ok()); },
     "D3cold entered from D0"},
    {"ResetInD3hot", "0000:01:00.0", d3hot,
     [](SimDevice& d) { EXPECT_EQ(d.reset().error(), Errno(EIO)); }, "reset in D3hot"},
    {"FlrBitInD3hot", "0000:01:00.0", d3hot,
     [](SimDevice& d) {
       wr(d, find_cap(d, PCI_CAP_ID_EXP, false) + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
     },
     "Initiate FLR in D3hot"},
    {"ConfigAfterRemove", "0000:01:00.1", [](SimDevice& d) { ASSERT_TRUE(d.remove().ok()); },
     [](SimDevice& d) { EXPECT_EQ(d.config_read(0, 4).error(), Errno(ENODEV)); },
     "config read of 4 bytes after remove"},
    {"BarAfterRemove", "0000:01:00.1", [](SimDevice& d) { ASSERT_TRUE(d.remove().ok()); },
     [](SimDevice& d) { EXPECT_EQ(d.bar_write(0, 0, 4, 0).error(), Errno(ENODEV)); },
     "bar0 write of 4 bytes after remove"},
    {"PowerAfterRemove", "0000:01:00.1", [](SimDevice& d) { ASSERT_TRUE(d.remove().ok()); },
     [](SimDevice& d) { EXPECT_EQ(d.set_power_state(PowerState::kD3hot).error(), Errno(ENODEV)); },
     "after remove"},
    {"BarBadWidth", "0000:01:00.0", nothing,
     [](SimDevice& d) { EXPECT_EQ(d.bar_read(0, 0, 3).error(), Errno(EINVAL)); }, "bad width"},
    {"BarMisaligned", "0000:01:00.0", nothing,
     [](SimDevice& d) { EXPECT_EQ(d.bar_read(0, 2, 4).error(), Errno(EINVAL)); }, "alignment"},
    {"BarBeyondEnd", "0000:01:00.0", nothing,
     [](SimDevice& d) { EXPECT_EQ(d.bar_write(4, 256, 1, 0).error(), Errno(ENXIO)); },
     "beyond the BAR"},
    {"BarUpperHalfOf64", "0000:01:00.0", nothing,
     [](SimDevice& d) { EXPECT_EQ(d.bar_read(1, 0, 4).error(), Errno(ENXIO)); }, "no such BAR"},
    {"BarIndexOutOfRange", "0000:01:00.0", nothing,
     [](SimDevice& d) { EXPECT_EQ(d.bar_read(6, 0, 4).error(), Errno(ENXIO)); }, "no such BAR"},
};

class Violation : public ::testing::TestWithParam<ViolationCase> {};

TEST_P(Violation, IsCountedWithItsReason) {
  const ViolationCase& c = GetParam();
  auto backend = make_default_backend();
  auto d = dev(*backend, c.bdf);
  c.setup(*d);
  ASSERT_EQ(violations(*d), 0u) << "setup was not legal: " << last_violation(*d);
  c.act(*d);
  EXPECT_EQ(violations(*d), 1u);
  EXPECT_NE(last_violation(*d).find(c.reason), std::string::npos) << last_violation(*d);
}

INSTANTIATE_TEST_SUITE_P(Sim, Violation, ::testing::ValuesIn(kCases),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(Violation, LegalAccessesCountZero) {
  auto backend = make_default_backend();
  for (const auto& base : backend->devices()) {
    auto& d = dynamic_cast<SimDevice&>(*base);
    std::vector<uint8_t> cfg(d.info().config_size);
    ASSERT_TRUE(d.config_read_block(0, cfg).ok());
    for (unsigned bar = 0; bar < 6; ++bar) {
      if (d.info().resources[bar].size() == 0) continue;
      for (unsigned w : {1u, 2u, 4u, 8u}) bar_rd(d, bar, 0x40, w);
      bar_wr(d, bar, 0x80, 4, 1);
    }
    if (d.info().has_rom()) {
      std::vector<uint8_t> rom(512);
      ASSERT_TRUE(d.rom_enable(true).ok());
      ASSERT_TRUE(d.rom_read(0, rom).ok());
      ASSERT_TRUE(d.rom_enable(false).ok());
    }
    if (d.caps().pm != 0) {  // config reads and writes stay legal in D3hot
      ASSERT_TRUE(d.set_power_state(PowerState::kD3hot).ok());
      ASSERT_TRUE(d.config_read_block(0, cfg).ok());  // DOE registers included
      wr(d, PCI_INTERRUPT_LINE, 1, 5);
      ASSERT_TRUE(d.set_power_state(PowerState::kD3cold).ok());
      ASSERT_TRUE(d.set_power_state(PowerState::kD0).ok());
      ASSERT_TRUE(d.reset().ok());
    }
    EXPECT_EQ(violations(d), 0u) << d.info().bdf.str() << ": " << last_violation(d);
  }
}

TEST(Violation, LogIsBounded) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  d3hot(*d);
  for (size_t i = 0; i < kViolationLogSize + 10; ++i) (void)d->bar_read(0, i * 8, 8);
  EXPECT_EQ(violations(*d), kViolationLogSize + 10);
  EXPECT_EQ(d->violation_log().size(), kViolationLogSize);
}

TEST(Violation, BlockedAccessesHaveNoSideEffects) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  bar_wr(*d, 0, kRegScratch0, 8, 7);
  wr(*d, PCI_COMMAND, 2, 0);
  EXPECT_TRUE(d->bar_write(0, kRegScratch0, 8, 99).ok());
  wr(*d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  EXPECT_EQ(bar_rd(*d, 0, kRegScratch0, 8), 7u);
  EXPECT_EQ(violations(*d), 1u);
}

}  // namespace
}  // namespace pcifs::backend::sim
