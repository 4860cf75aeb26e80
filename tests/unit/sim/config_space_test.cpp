// Config space semantics of the simulated functions: per-byte RO / RW / RW1C
// (table-driven), BAR sizing per BAR kind, the ROM BAR, the capability chain.
#include <gtest/gtest.h>

#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

enum class Cap { kNone, kPm, kMsix, kPcie, kAer, kDsn, kDoe };

struct RegCase {
  const char* name;
  const char* bdf;
  Cap cap;
  uint32_t rel;  // offset from the capability (or absolute when kNone)
  unsigned width;
  uint32_t value;                  // what the test writes
  uint32_t writable;               // bits that take the value
  uint32_t w1c;                    // bits that a 1 clears
  std::optional<uint32_t> before;  // pinned reset value, where it matters
};

uint32_t cap_base(SimDevice& d, Cap cap) {
  switch (cap) {
    case Cap::kNone: return 0;
    case Cap::kPm: return find_cap(d, PCI_CAP_ID_PM, false);
    case Cap::kMsix: return find_cap(d, PCI_CAP_ID_MSIX, false);
    case Cap::kPcie: return find_cap(d, PCI_CAP_ID_EXP, false);
    case Cap::kAer: return find_cap(d, PCI_EXT_CAP_ID_ERR, true);
    case Cap::kDsn: return find_cap(d, PCI_EXT_CAP_ID_DSN, true);
    case Cap::kDoe: return find_cap(d, PCI_EXT_CAP_ID_DOE, true);
  }
  return 0;
}

class RegisterSemantics : public ::testing::TestWithParam<RegCase> {};

TEST_P(RegisterSemantics, WriteAppliesMasks) {
  const RegCase& c = GetParam();
  auto backend = make_default_backend();
  auto d = dev(*backend, c.bdf);
  uint32_t base = cap_base(*d, c.cap);
  ASSERT_TRUE(c.cap == Cap::kNone || base != 0) << "capability missing";
  uint32_t off = base + c.rel;
  uint32_t before = rd(*d, off, c.width);
  if (c.before) {
    EXPECT_EQ(before, *c.before);
  }
  wr(*d, off, c.width, c.value);
  uint32_t expect = ((before & ~c.writable) | (c.value & c.writable)) & ~(c.value & c.w1c);
  EXPECT_EQ(rd(*d, off, c.width), expect);
  EXPECT_EQ(violations(*d), 0u) << last_violation(*d);
}

const RegCase kRegCases[] = {
    {"VendorRO", "0000:01:00.0", Cap::kNone, PCI_VENDOR_ID, 2, 0xffff, 0, 0, 0x1b36},
    {"DeviceRO", "0000:01:00.0", Cap::kNone, PCI_DEVICE_ID, 2, 0x0000, 0, 0, 0x10f0},
    {"ClassRevRO", "0000:01:00.0", Cap::kNone, PCI_CLASS_REVISION, 4, 0, 0, 0, 0x05021001},
    {"CommandRW", "0000:01:00.0", Cap::kNone, PCI_COMMAND, 2, 0xffff, 0x0547, 0, 0x0007},
    {"CommandByte", "0000:01:00.0", Cap::kNone, PCI_COMMAND, 1, 0x00, 0x47, 0, 0x07},
    {"StatusNotSettable", "0000:01:00.0", Cap::kNone, PCI_STATUS, 2, 0xffff, 0, 0xf900, 0x0010},
    {"CacheLineRW", "0000:01:00.0", Cap::kNone, PCI_CACHE_LINE_SIZE, 1, 0x5a, 0xff, 0, 0},
    {"HeaderTypeRO", "0000:01:00.0", Cap::kNone, PCI_HEADER_TYPE, 1, 0x00, 0, 0, 0x80},
    {"SubsystemRO", "0000:01:00.0", Cap::kNone, PCI_SUBSYSTEM_VENDOR_ID, 4, 0, 0, 0, 0x00011b36},
    {"CapPointerRO", "0000:01:00.0", Cap::kNone, PCI_CAPABILITY_LIST, 1, 0x00, 0, 0, 0x40},
    {"IrqLineRW", "0000:01:00.0", Cap::kNone, PCI_INTERRUPT_LINE, 1, 0x42, 0xff, 0, 11},
    {"IrqPinRO", "0000:01:00.0", Cap::kNone, PCI_INTERRUPT_PIN, 1, 0x04, 0, 0, 1},
    {"PmcRO", "0000:01:00.0", Cap::kPm, PCI_PM_PMC, 2, 0xffff, 0, 0, 0x0003},
    // PowerState bits excluded here: writing them changes power (power_test).
    {"PmcsrPmeBits", "0000:01:00.0", Cap::kPm, PCI_PM_CTRL, 2, 0xfffc, 0x0100, 0x8000, 0x0008},
    {"PmcsrNoSoftResetZero", "0000:01:00.1", Cap::kPm, PCI_PM_CTRL, 2, 0x0008, 0x0100, 0x8000, 0x0},
    {"MsixControl", "0000:01:00.0", Cap::kMsix, PCI_MSIX_FLAGS, 2, 0xffff, 0xc000, 0, 7},
    {"MsixTableRO", "0000:01:00.0", Cap::kMsix, PCI_MSIX_TABLE, 4, 0xffffffff, 0, 0, 0x2000},
    {"MsixPbaRO", "0000:02:00.0", Cap::kMsix, PCI_MSIX_PBA, 4, 0, 0, 0, 0x3000},
    {"PcieFlagsRO", "0000:01:00.0", Cap::kPcie, PCI_EXP_FLAGS, 2, 0, 0, 0, 0x0002},
    {"PcieRootFlagsRO", "0000:00:01.0", Cap::kPcie, PCI_EXP_FLAGS, 2, 0, 0, 0, 0x0142},
    {"DevCtlRW", "0000:01:00.0", Cap::kPcie, PCI_EXP_DEVCTL, 2, 0x7fff, 0x7fff, 0, 0x2810},
    {"DevStaRW1C", "0000:01:00.0", Cap::kPcie, PCI_EXP_DEVSTA, 2, 0xffff, 0, 0x000f, 0x0009},
    {"DevStaClearOneBit", "0000:01:00.0", Cap::kPcie, PCI_EXP_DEVSTA, 1, 0x08, 0, 0x0f, 0x09},
    {"DevStaWriteZeroKeeps", "0000:01:00.1", Cap::kPcie, PCI_EXP_DEVSTA, 2, 0, 0, 0x000f, 0x0009},
    {"LnkCtlRW", "0000:01:00.0", Cap::kPcie, PCI_EXP_LNKCTL, 2, 0xffff, 0x0fc3, 0, 0},
    {"LnkStaEndpointRO", "0000:01:00.0", Cap::kPcie, PCI_EXP_LNKSTA, 2, 0xffff, 0, 0, 0x0084},
    {"LnkStaRootRW1C", "0000:00:01.0", Cap::kPcie, PCI_EXP_LNKSTA, 2, 0xffff, 0, 0xc000, 0x6084},
    {"AerUncorStatus", "0000:01:00.0", Cap::kAer, PCI_ERR_UNCOR_STATUS, 4, 0xffffffff, 0,
     0x07fff030, 0},
    {"AerUncorMask", "0000:01:00.0", Cap::kAer, PCI_ERR_UNCOR_MASK, 4, 0xffffffff, 0x07fff030, 0,
     0},
    {"AerCorStatusRW1C", "0000:01:00.0", Cap::kAer, PCI_ERR_COR_STATUS, 4, 0xffffffff, 0, 0xf1c1,
     0x2000},
    {"AerCorMask", "0000:02:00.0", Cap::kAer, PCI_ERR_COR_MASK, 4, 0, 0xf1c1, 0, 0x2000},
    {"AerHeaderRO", "0000:01:00.0", Cap::kAer, 0, 4, 0xffffffff, 0, 0, std::nullopt},
    {"DsnRO", "0000:01:00.0", Cap::kDsn, 4, 4, 0, 0, 0, 0x00000001},
    {"DsnHighRO", "0000:02:00.0", Cap::kDsn, 8, 4, 0, 0, 0, 0x0001b36f},
    {"DoeHeaderRO", "0000:01:00.0", Cap::kDoe, 0, 4, 0, 0, 0, std::nullopt},
    {"BridgeBusNumbers", "0000:00:01.0", Cap::kNone, PCI_PRIMARY_BUS, 4, 0x00070605, 0x00ffffff, 0,
     0x00010100},
    {"BridgeIoBase", "0000:00:01.0", Cap::kNone, PCI_IO_BASE, 2, 0xffff, 0xf0f0, 0, 0x1111},
    {"BridgeSecStatus", "0000:00:02.0", Cap::kNone, PCI_SEC_STATUS, 2, 0xffff, 0, 0xf900, 0},
    {"BridgeMemWindow", "0000:00:01.0", Cap::kNone, PCI_MEMORY_BASE, 4, 0xffffffff, 0xfff0fff0, 0,
     0xfe10fe00},
    {"BridgePrefWindow", "0000:00:01.0", Cap::kNone, PCI_PREF_MEMORY_BASE, 4, 0, 0xfff0fff0, 0,
     0x00110001},
    {"BridgePrefUpper", "0000:00:01.0", Cap::kNone, PCI_PREF_BASE_UPPER32, 4, 0x12, 0xffffffff, 0,
     0x80},
    {"BridgeHeaderType", "0000:00:01.0", Cap::kNone, PCI_HEADER_TYPE, 1, 0, 0, 0, 0x01},
};

INSTANTIATE_TEST_SUITE_P(Sim, RegisterSemantics, ::testing::ValuesIn(kRegCases),
                         [](const auto& p) { return std::string(p.param.name); });

// --- BAR sizing: write all-ones, read the size mask with the type bits.

struct BarCase {
  const char* name;
  const char* bdf;
  uint32_t reg;
  uint32_t firmware;   // value before sizing (address | type bits)
  uint32_t size_mask;  // read back after writing all-ones
};

class BarSizing : public ::testing::TestWithParam<BarCase> {};

TEST_P(BarSizing, AllOnesReadsSizeMaskAndRestores) {
  const BarCase& c = GetParam();
  auto backend = make_default_backend();
  auto d = dev(*backend, c.bdf);
  EXPECT_EQ(rd(*d, c.reg, 4), c.firmware);
  wr(*d, c.reg, 4, 0xffffffff);
  EXPECT_EQ(rd(*d, c.reg, 4), c.size_mask);
  wr(*d, c.reg, 4, c.firmware);
  EXPECT_EQ(rd(*d, c.reg, 4), c.firmware);
  EXPECT_EQ(violations(*d), 0u);
}

const BarCase kBarCases[] = {
    {"Mem64PrefLow", "0000:01:00.0", PCI_BASE_ADDRESS_0, 0x0000000c, 0xfff0000c},
    {"Mem64PrefHigh", "0000:01:00.0", PCI_BASE_ADDRESS_1, 0x00000080, 0xffffffff},
    {"Mem32", "0000:01:00.0", PCI_BASE_ADDRESS_2, 0xfe000000, 0xffff0000},
    {"Unimplemented", "0000:01:00.0", PCI_BASE_ADDRESS_3, 0, 0},
    {"Io256", "0000:01:00.0", PCI_BASE_ADDRESS_4, 0x00001001, 0xffffff01},
    {"Unimplemented5", "0000:01:00.0", PCI_BASE_ADDRESS_5, 0, 0},
    {"Mem64NonPrefLow", "0000:02:00.0", PCI_BASE_ADDRESS_0, 0xfe200004, 0xfff00004},
    {"Mem64NonPrefHigh", "0000:02:00.0", PCI_BASE_ADDRESS_1, 0, 0xffffffff},
    {"Fn1Mem32", "0000:01:00.1", PCI_BASE_ADDRESS_0, 0xfe020000, 0xffff0000},
    {"RomBarDecodeOff", "0000:01:00.0", PCI_ROM_ADDRESS, 0xfe010000,
     0xffff0001},  // enable bit is RW
    {"RomBar1MiB", "0000:02:00.0", PCI_ROM_ADDRESS, 0xfe300000, 0xfff00001},
    {"BridgeNoBar", "0000:00:01.0", PCI_BASE_ADDRESS_0, 0, 0},
    {"BridgeNoRom", "0000:00:01.0", PCI_ROM_ADDRESS1, 0, 0},
};

INSTANTIATE_TEST_SUITE_P(Sim, BarSizing, ::testing::ValuesIn(kBarCases),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(RomBar, EnableBitTurnsRomDecodeOn) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  EXPECT_FALSE(d->rom_decode_enabled());
  wr(*d, PCI_ROM_ADDRESS, 4, 0xfe010000 | PCI_ROM_ADDRESS_ENABLE);
  EXPECT_TRUE(d->rom_decode_enabled());
  EXPECT_EQ(rd(*d, PCI_ROM_ADDRESS, 4), 0xfe010001u);
  ASSERT_TRUE(d->rom_enable(false).ok());
  EXPECT_FALSE(d->rom_decode_enabled());
  EXPECT_EQ(rd(*d, PCI_ROM_ADDRESS, 4), 0xfe010000u);
  ASSERT_TRUE(d->rom_enable(true).ok());
  EXPECT_EQ(rd(*d, PCI_ROM_ADDRESS, 4) & PCI_ROM_ADDRESS_ENABLE, 1u);
}

TEST(Capabilities, ChainsAsTheDefaultSetSays) {
  auto backend = make_default_backend();
  auto ep0 = dev(*backend, "0000:01:00.0");
  for (int id : {PCI_CAP_ID_PM, PCI_CAP_ID_MSIX, PCI_CAP_ID_EXP}) {
    EXPECT_NE(find_cap(*ep0, static_cast<uint16_t>(id), false), 0u) << id;
  }
  for (int id : {PCI_EXT_CAP_ID_ERR, PCI_EXT_CAP_ID_DSN, PCI_EXT_CAP_ID_DOE}) {
    EXPECT_NE(find_cap(*ep0, static_cast<uint16_t>(id), true), 0u) << id;
  }
  EXPECT_EQ(find_cap(*ep0, PCI_EXT_CAP_ID_DOE, true, 1), 0u);  // one mailbox
  auto ep2 = dev(*backend, "0000:02:00.0");
  EXPECT_NE(find_cap(*ep2, PCI_EXT_CAP_ID_DOE, true, 1), 0u);  // two mailboxes
  EXPECT_EQ(find_cap(*ep2, PCI_EXT_CAP_ID_DOE, true, 2), 0u);
  auto fn1 = dev(*backend, "0000:01:00.1");
  EXPECT_EQ(find_cap(*fn1, PCI_CAP_ID_MSIX, false), 0u);
  EXPECT_EQ(find_cap(*fn1, PCI_EXT_CAP_ID_DSN, true), 0u);
  auto rp = dev(*backend, "0000:00:01.0");
  EXPECT_NE(find_cap(*rp, PCI_CAP_ID_MSI, false), 0u);
  EXPECT_EQ(rd(*rp, find_cap(*rp, PCI_CAP_ID_EXP, false) + PCI_EXP_FLAGS, 2) & PCI_EXP_FLAGS_TYPE,
            unsigned{PCI_EXP_TYPE_ROOT_PORT} << 4);
  auto host = dev(*backend, "0000:00:00.0");
  EXPECT_EQ(rd(*host, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, 0u);
  EXPECT_EQ(host->info().config_size, 256u);
}

TEST(Capabilities, DsnCarriesTheSerial) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  uint32_t dsn = find_cap(*d, PCI_EXT_CAP_ID_DSN, true);
  uint64_t serial = rd(*d, dsn + 4, 4) | uint64_t{rd(*d, dsn + 8, 4)} << 32;
  EXPECT_EQ(serial, 0x0001b36f00000001u);
}

TEST(ConfigAccess, BadWidthAlignmentAndRangeAreErrors) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:00:00.0");
  EXPECT_EQ(d->config_read(0, 3).error(), Errno(EINVAL));
  EXPECT_EQ(d->config_read(2, 4).error(), Errno(EINVAL));
  EXPECT_EQ(d->config_read(256, 1).error(), Errno(ENXIO));
  EXPECT_EQ(d->config_write(1, 2, 0).error(), Errno(EINVAL));
  EXPECT_EQ(d->config_write(0x100, 4, 0).error(), Errno(ENXIO));
  EXPECT_EQ(violations(*d), 5u);  // a bad call from the core is a bug: counted
}

TEST(ConfigAccess, ReadBlockMatchesSingleReads) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  std::vector<uint8_t> block(4096);
  ASSERT_TRUE(d->config_read_block(0, block).ok());
  for (uint32_t off = 0; off < 0x100; ++off) ASSERT_EQ(block[off], rd(*d, off, 1)) << off;
  EXPECT_EQ(violations(*d), 0u) << last_violation(*d);
}

}  // namespace
}  // namespace pcifs::backend::sim
