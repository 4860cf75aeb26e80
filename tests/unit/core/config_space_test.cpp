// ConfigSpace against a hand-built config image held by a "RAM" device: every
// byte written lands, so the tests see exactly what mediation let through.
// (config_space_sim_test.cpp runs the same checks against the simulator.)
#include "core/config_space.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <atomic>
#include <thread>

namespace pcifs::core {
namespace {

constexpr uint64_t kBar0 = 0x20'0000'0000;  // 64-bit prefetchable, 1 MiB
constexpr uint32_t kBar2 = 0xfe10'0000;     // 32-bit, 64 KiB
constexpr uint32_t kBar4 = 0xe000;          // I/O, 256 bytes
constexpr uint32_t kRom = 0xfe20'0000;      // 64 KiB
constexpr uint16_t kPm = 0x40, kMsix = 0x50, kExp = 0x60, kVpd = 0xa0, kMsi = 0xb0;
constexpr uint16_t kAer = 0x100, kDsn = 0x140, kDoe = 0x150;

void put(std::vector<uint8_t>& b, uint32_t off, unsigned width, uint32_t v) {
  for (unsigned i = 0; i < width; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t le32(std::span<const uint8_t> b) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4 && i < b.size(); ++i) v |= uint32_t{b[i]} << (8 * i);
  return v;
}

std::vector<uint8_t> endpoint_image() {
  std::vector<uint8_t> c(4096, 0);
  put(c, PCI_VENDOR_ID, 2, 0x1b36);
  put(c, PCI_DEVICE_ID, 2, 0x0010);
  put(c, PCI_COMMAND, 2, 0x0007);
  put(c, PCI_STATUS, 2, PCI_STATUS_CAP_LIST);
  put(c, PCI_CLASS_REVISION, 4, 0x05021001);
  put(c, PCI_BASE_ADDRESS_0, 4, static_cast<uint32_t>(kBar0) | 0xc);
  put(c, PCI_BASE_ADDRESS_1, 4, static_cast<uint32_t>(kBar0 >> 32));
  put(c, PCI_BASE_ADDRESS_2, 4, kBar2);
  put(c, PCI_BASE_ADDRESS_4, 4, kBar4 | 1);
  put(c, PCI_ROM_ADDRESS, 4, kRom);
  put(c, PCI_CAPABILITY_LIST, 1, kPm);
  put(c, PCI_INTERRUPT_PIN, 1, 1);
  put(c, kPm, 2, (kMsix << 8) | PCI_CAP_ID_PM);
  put(c, kPm + PCI_PM_PMC, 2, 0x0003);
  put(c, kPm + PCI_PM_CTRL, 2, PCI_PM_CTRL_NO_SOFT_RESET);
  put(c, kMsix, 2, (kExp << 8) | PCI_CAP_ID_MSIX);
  put(c, kMsix + PCI_MSIX_FLAGS, 2, 0x0007);
  put(c, kExp, 2, (kVpd << 8) | PCI_CAP_ID_EXP);
  put(c, kExp + PCI_EXP_FLAGS, 2, 0x0002);
  put(c, kExp + PCI_EXP_DEVCTL, 2, 0x2810);
  put(c, kExp + PCI_EXP_DEVSTA, 2, PCI_EXP_DEVSTA_AUXPD | PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_FED);
  put(c, kExp + PCI_EXP_LNKSTA, 2, 0xc011);
  put(c, kVpd, 2, (kMsi << 8) | PCI_CAP_ID_VPD);
  put(c, kVpd + PCI_VPD_ADDR, 2, 0x1234);
  put(c, kVpd + PCI_VPD_DATA, 4, 0xdeadbeef);
  put(c, kMsi, 2, PCI_CAP_ID_MSI);
  put(c, kMsi + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT);
  put(c, kAer, 4, (kDsn << 20) | (2 << 16) | PCI_EXT_CAP_ID_ERR);
  put(c, kAer + PCI_ERR_UNCOR_STATUS, 4, 0x00104000);
  put(c, kAer + PCI_ERR_COR_STATUS, 4, 0x00002001);
  put(c, kAer + PCI_ERR_CAP, 4, PCI_ERR_CAP_ECRC_GENC | PCI_ERR_CAP_ECRC_CHKC);
  put(c, kDsn, 4, (kDoe << 20) | (1 << 16) | PCI_EXT_CAP_ID_DSN);
  put(c, kDsn + 4, 4, 0x89abcdef);
  put(c, kDsn + 8, 4, 0x01234567);
  put(c, kDoe, 4, (1 << 16) | PCI_EXT_CAP_ID_DOE);
  return c;
}

backend::DeviceInfo endpoint_info() {
  backend::DeviceInfo info;
  info.vendor = 0x1b36;
  info.config_size = 4096;
  info.resources.resize(7);
  using namespace backend;
  info.resources[0] = {kBar0, kBar0 + 0xfffff, kResourceMem | kResourceMem64 | kResourcePrefetch};
  info.resources[2] = {kBar2, kBar2 + 0xffff, kResourceMem};
  info.resources[4] = {kBar4, kBar4 + 0xff, kResourceIo};
  info.resources[6] = {kRom, kRom + 0xffff, kResourceMem | kResourceReadonly};
  return info;
}

// A device whose config is plain memory; logs writes and register reads.
struct RamDevice {
  std::vector<uint8_t> cfg;
  std::vector<RegWrite> writes;
  std::vector<std::pair<uint32_t, size_t>> block_reads;
  int reg_reads = 0;

  RawRead raw() {
    return [this](uint32_t off, std::span<uint8_t> out) -> Result<void> {
      block_reads.emplace_back(off, out.size());
      if (off + out.size() > cfg.size()) return Errno(EIO);
      std::copy_n(cfg.begin() + off, out.size(), out.begin());
      return Ok();
    };
  }
  RawReadReg raw_reg() {
    return [this](uint32_t off, unsigned width) -> Result<uint32_t> {
      ++reg_reads;
      if (off % width != 0) return Errno(EINVAL);
      uint32_t v = 0;
      for (unsigned i = 0; i < width; ++i) v |= uint32_t{cfg[off + i]} << (8 * i);
      return v;
    };
  }
  RawWriteReg raw_write() {
    return [this](uint32_t off, unsigned width, uint32_t value) -> Result<void> {
      if (off % width != 0 || (width != 1 && width != 2 && width != 4)) return Errno(EINVAL);
      writes.push_back({off, width, value});
      put(cfg, off, width, value);
      return Ok();
    };
  }
};

class ConfigSpaceTest : public ::testing::Test {
 protected:
  ConfigSpaceTest() : space_(endpoint_info(), endpoint_image()) { dev_.cfg = endpoint_image(); }

  Result<size_t> write(uint32_t off, std::vector<uint8_t> bytes) {
    auto plan = space_.plan_write(off, bytes, dev_.raw_reg());
    if (!plan) return plan.error();
    last_plan_ = *plan;
    return space_.apply_plan(*plan, dev_.raw_write());
  }
  Result<size_t> write_le(uint32_t off, unsigned width, uint32_t v) {
    std::vector<uint8_t> b(width);
    for (unsigned i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    return write(off, b);
  }
  std::vector<uint8_t> read(uint32_t off, size_t len, ConfigReadPolicy p = {}) {
    std::vector<uint8_t> out(len, 0xee);
    auto n = space_.read(off, out, p, dev_.raw());
    EXPECT_TRUE(n.ok());
    out.resize(n.ok() ? *n : 0);
    return out;
  }
  uint32_t read32(uint32_t off, ConfigReadPolicy p = {}) {
    auto b = read(off, 4, p);
    return b.size() == 4 ? le32(b) : ~0u;
  }

  RamDevice dev_;
  ConfigSpace space_;
  WritePlan last_plan_;
};

// --- reads --------------------------------------------------------------

TEST_F(ConfigSpaceTest, ReadsEqualDeviceAtEveryOffsetAndLength) {
  // Firmware left the assigned addresses in the BARs, so the virtual registers
  // read exactly what the device holds.
  const auto image = endpoint_image();
  for (size_t len : {1u, 2u, 3u, 4u, 5u, 8u, 13u, 64u, 300u}) {
    for (uint32_t off = 0; off < 4096; ++off) {
      auto got = read(off, len);
      size_t want = std::min<size_t>(len, 4096 - off);
      ASSERT_EQ(got.size(), want) << off << "+" << len;
      ASSERT_TRUE(std::equal(got.begin(), got.end(), image.begin() + off)) << off << "+" << len;
    }
  }
}

TEST_F(ConfigSpaceTest, VirtualBytesAreNeverReadFromDevice) {
  read(0, 4096);
  for (auto [off, len] : dev_.block_reads) {
    for (uint32_t b = off; b < off + len; ++b) EXPECT_FALSE(space_.is_virtual(b)) << b;
  }
  dev_.block_reads.clear();
  read(PCI_BASE_ADDRESS_0, 24);  // all six BARs: no device access at all
  EXPECT_TRUE(dev_.block_reads.empty());
}

TEST_F(ConfigSpaceTest, DoeRegistersReadAsWholeDwords) {
  // The DOE mailbox registers take dword accesses only: a byte read widens.
  read(kDoe + PCI_DOE_STATUS + 1, 1);
  read(kDoe + PCI_DOE_CTRL + 2, 5);
  EXPECT_EQ(dev_.block_reads, (std::vector<std::pair<uint32_t, size_t>>{{kDoe + PCI_DOE_STATUS, 4},
                                                                        {kDoe + PCI_DOE_CTRL, 8}}));
  dev_.block_reads.clear();
  read(kDsn + 5, 1);  // elsewhere, exactly what was asked
  EXPECT_EQ(dev_.block_reads, (std::vector<std::pair<uint32_t, size_t>>{{kDsn + 5, 1}}));
}

TEST_F(ConfigSpaceTest, ShortOnlyAtEndOfSpace) {
  EXPECT_EQ(read(4090, 100).size(), 6u);
  EXPECT_EQ(read(4096, 4).size(), 0u);
  EXPECT_EQ(read(0xffffffff, 4).size(), 0u);
  EXPECT_EQ(read(0, 0).size(), 0u);
}

TEST_F(ConfigSpaceTest, HeaderScopeEndsAt64) {
  ConfigReadPolicy p;
  p.scope = ConfigReadPolicy::Scope::kHeader;
  EXPECT_EQ(read(0, 4096, p).size(), 64u);
  EXPECT_EQ(read(60, 8, p).size(), 4u);
  EXPECT_EQ(read(64, 4, p).size(), 0u);
  EXPECT_EQ(read(0x100, 4, p).size(), 0u);
}

TEST_F(ConfigSpaceTest, MaskAddressesKeepsFlagBits) {
  ConfigReadPolicy p;
  p.mask_addresses = true;
  EXPECT_EQ(read32(PCI_BASE_ADDRESS_0, p), 0xcu);
  EXPECT_EQ(read32(PCI_BASE_ADDRESS_1, p), 0u);
  EXPECT_EQ(read32(PCI_BASE_ADDRESS_2, p), 0u);
  EXPECT_EQ(read32(PCI_BASE_ADDRESS_4, p), 1u);
  EXPECT_EQ(read32(PCI_ROM_ADDRESS, p), 0u);
  // Unmasked, the same registers carry the addresses (the check can fail).
  EXPECT_EQ(read32(PCI_BASE_ADDRESS_2), kBar2);
}

TEST_F(ConfigSpaceTest, MaskAddressesStillShowsSizeMask) {
  ASSERT_TRUE(write_le(PCI_BASE_ADDRESS_2, 4, 0xffffffff).ok());
  ConfigReadPolicy p;
  p.mask_addresses = true;
  EXPECT_EQ(read32(PCI_BASE_ADDRESS_2, p), 0xffff0000u);
}

TEST_F(ConfigSpaceTest, HideDsnZeroesSerialOnly) {
  ConfigReadPolicy p;
  p.hide_dsn = true;
  EXPECT_EQ(read32(kDsn, p), read32(kDsn));  // header intact
  EXPECT_NE(read32(kDsn + 4), 0u);
  EXPECT_EQ(read32(kDsn + 4, p), 0u);
  EXPECT_EQ(read32(kDsn + 8, p), 0u);
  EXPECT_EQ(read32(kDoe, p), read32(kDoe));
  auto whole = read(kDsn + 2, 12, p);  // a read straddling the boundary
  auto plain = read(kDsn + 2, 2);
  EXPECT_EQ(whole[0], plain[0]);
  EXPECT_EQ(whole[1], plain[1]);
  for (size_t i = 2; i < 10; ++i) EXPECT_EQ(whole[i], 0) << i;
}

TEST_F(ConfigSpaceTest, HideVpdZeroesAddressAndData) {
  ConfigReadPolicy p;
  p.hide_vpd = true;
  EXPECT_EQ(read(kVpd, 2, p), read(kVpd, 2));  // id and next pointer intact
  EXPECT_NE(read32(kVpd + 4), 0u);
  EXPECT_EQ(read(kVpd + 2, 6, p), std::vector<uint8_t>(6, 0));
  EXPECT_EQ(read32(kMsi, p), read32(kMsi));
}

TEST_F(ConfigSpaceTest, ReadErrorPropagates) {
  RawRead failing = [](uint32_t, std::span<uint8_t>) -> Result<void> { return Errno(EIO); };
  std::vector<uint8_t> out(8);
  auto n = space_.read(0, out, {}, failing);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error(), Errno(EIO));
  auto bars = space_.read(PCI_BASE_ADDRESS_0, out, {}, failing);  // virtual only: no device
  ASSERT_TRUE(bars.ok());
  EXPECT_EQ(*bars, 8u);
}

// --- BAR sizing -----------------------------------------------------------

struct SizingCase {
  const char* name;
  uint32_t offset;
  uint32_t size_mask;  // what reads back after writing all-ones
  uint32_t assigned;   // what reads back at attach / after restoring
};

class BarSizingTest : public ConfigSpaceTest, public ::testing::WithParamInterface<SizingCase> {};

TEST_P(BarSizingTest, AllOnesReadsSizeMaskRestoreReadsAddressNeverDevice) {
  const SizingCase& c = GetParam();
  const auto before = dev_.cfg;
  EXPECT_EQ(read32(c.offset), c.assigned);
  ASSERT_EQ(*write_le(c.offset, 4, 0xffffffff), 4u);
  EXPECT_EQ(read32(c.offset), c.size_mask);
  ASSERT_EQ(*write_le(c.offset, 4, c.assigned), 4u);
  EXPECT_EQ(read32(c.offset), c.assigned);
  // Byte-wise sizing works the same (setpci may write one byte at a time).
  for (uint32_t b = 0; b < 4; ++b) ASSERT_TRUE(write_le(c.offset + b, 1, 0xff).ok());
  EXPECT_EQ(read32(c.offset), c.size_mask);
  space_.reset_virtual();
  EXPECT_EQ(read32(c.offset), c.assigned);
  EXPECT_TRUE(dev_.writes.empty());
  EXPECT_EQ(dev_.cfg, before);
}

INSTANTIATE_TEST_SUITE_P(
    Endpoint, BarSizingTest,
    ::testing::Values(SizingCase{"Mem64PrefLow", PCI_BASE_ADDRESS_0, 0xfff0000c,
                                 static_cast<uint32_t>(kBar0) | 0xc},
                      SizingCase{"Mem64High", PCI_BASE_ADDRESS_1, 0xffffffff,
                                 static_cast<uint32_t>(kBar0 >> 32)},
                      SizingCase{"Mem32", PCI_BASE_ADDRESS_2, 0xffff0000, kBar2},
                      SizingCase{"Unimplemented", PCI_BASE_ADDRESS_3, 0, 0},
                      SizingCase{"Io", PCI_BASE_ADDRESS_4, 0xffffff01, kBar4 | 1},
                      SizingCase{"Unimplemented5", PCI_BASE_ADDRESS_5, 0, 0},
                      SizingCase{"Rom", PCI_ROM_ADDRESS, 0xffff0001, kRom}),
    [](const auto& i) { return std::string(i.param.name); });

TEST_F(ConfigSpaceTest, RomEnableBitIsVirtual) {
  ASSERT_TRUE(write_le(PCI_ROM_ADDRESS, 4, kRom | PCI_ROM_ADDRESS_ENABLE).ok());
  EXPECT_EQ(read32(PCI_ROM_ADDRESS), kRom | PCI_ROM_ADDRESS_ENABLE);
  EXPECT_TRUE(dev_.writes.empty());
  space_.reset_virtual();
  EXPECT_EQ(read32(PCI_ROM_ADDRESS), kRom);
}

TEST_F(ConfigSpaceTest, WriteSpanningBarsAndCommandSplits) {
  // 0x30..0x3f: ROM BAR (virtual), cap pointer (RO), reserved, int line (RW), pin (RO).
  std::vector<uint8_t> data(16, 0xff);
  ASSERT_EQ(*write(PCI_ROM_ADDRESS, data), 16u);
  EXPECT_EQ(dev_.writes, (std::vector<RegWrite>{{PCI_INTERRUPT_LINE, 1, 0xff}}));
  EXPECT_EQ(read32(PCI_ROM_ADDRESS), 0xffff0001u);
}

// --- register classes ------------------------------------------------------

struct RegCase {
  const char* name;
  uint32_t offset;
  unsigned width;
  uint32_t device_before;          // planted in the device first
  uint32_t value;                  // what the caller writes
  std::vector<RegWrite> expected;  // what must reach the device
};

class RegClassTest : public ConfigSpaceTest, public ::testing::WithParamInterface<RegCase> {};

TEST_P(RegClassTest, DeviceSeesOnlyPermittedBits) {
  const RegCase& c = GetParam();
  put(dev_.cfg, c.offset, c.width, c.device_before);
  auto n = write_le(c.offset, c.width, c.value);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, c.width);  // a write that changes nothing still succeeds
  EXPECT_EQ(dev_.writes, c.expected);
}

std::vector<RegCase> reg_cases() {
  uint32_t pmcsr = kPm + PCI_PM_CTRL, devctl = kExp + PCI_EXP_DEVCTL;
  uint32_t devsta = kExp + PCI_EXP_DEVSTA, lnksta = kExp + PCI_EXP_LNKSTA;
  return {
      {"VendorIdRo", PCI_VENDOR_ID, 4, 0x00101b36, 0xffffffff, {}},
      {"CommandRw", PCI_COMMAND, 2, 0, 0x0406, {{PCI_COMMAND, 2, 0x0406}}},
      {"CommandRoBitsDropped", PCI_COMMAND, 2, 0, 0xffff, {{PCI_COMMAND, 2, 0x0547}}},
      {"CommandRoBitsKept", PCI_COMMAND, 2, 0x0010, 0x0000, {{PCI_COMMAND, 2, 0x0010}}},
      {"StatusRw1cOnlyWrittenOnes", PCI_STATUS, 2, 0xf910, 0x0100, {{PCI_STATUS, 2, 0x0110}}},
      {"StatusZeroClearsNothing", PCI_STATUS, 2, 0xf910, 0x0000, {{PCI_STATUS, 2, 0x0010}}},
      {"StatusRoBitsNotForced", PCI_STATUS, 2, 0x0010, 0x07ff, {{PCI_STATUS, 2, 0x0110}}},
      {"CommandAndStatusDword",
       PCI_COMMAND,
       4,
       0x00100000,
       0x80000002,
       {{PCI_COMMAND, 2, 0x0002}, {PCI_STATUS, 2, 0x8010}}},
      {"RevisionClassRo", PCI_CLASS_REVISION, 4, 0x05021001, 0, {}},
      {"CacheLineAndLatencyRw",
       PCI_CACHE_LINE_SIZE,
       4,
       0,
       0xffffffff,
       {{PCI_CACHE_LINE_SIZE, 1, 0xff}, {PCI_LATENCY_TIMER, 1, 0xff}}},
      {"BistRo", PCI_BIST, 1, 0x80, 0x40, {}},
      {"HeaderTypeRo", PCI_HEADER_TYPE, 1, 0, 0x01, {}},
      {"SubsystemRo", PCI_SUBSYSTEM_VENDOR_ID, 4, 0, 0xffffffff, {}},
      {"InterruptLineRwPinRo",
       PCI_INTERRUPT_LINE,
       2,
       0x0100,
       0xff0b,
       {{PCI_INTERRUPT_LINE, 1, 0x0b}}},
      {"CapPointerRo", PCI_CAPABILITY_LIST, 1, kPm, 0x80, {}},
      {"PmcRo", kPm + PCI_PM_PMC, 2, 3, 0xffff, {}},
      {"PmcsrPowerStateKept", pmcsr, 2, 0x0008, 0x0103, {{pmcsr, 2, 0x0108}}},
      {"PmcsrPowerStateByteNoWrite", pmcsr, 1, 0x08, 0x03, {}},
      {"PmcsrPmeStatusRw1c", pmcsr, 2, 0x8100, 0x8000, {{pmcsr, 2, 0x8000}}},
      {"PmcsrPmeStatusNotClearedByZero", pmcsr, 2, 0x8103, 0x0100, {{pmcsr, 2, 0x0103}}},
      {"MsixControlRw",
       kMsix + PCI_MSIX_FLAGS,
       2,
       7,
       0xffff,
       {{kMsix + PCI_MSIX_FLAGS, 2, 0xc007}}},
      {"MsixTableOffsetRo", kMsix + PCI_MSIX_TABLE, 4, 0, 0xffffffff, {}},
      {"MsiControlRw",
       kMsi + PCI_MSI_FLAGS,
       2,
       0x0180,
       0xffff,
       {{kMsi + PCI_MSI_FLAGS, 2, 0x01f1}}},
      {"MsiAddressRw",
       kMsi + PCI_MSI_ADDRESS_LO,
       4,
       0,
       0xfee00000,
       {{kMsi + PCI_MSI_ADDRESS_LO, 4, 0xfee00000}}},
      {"MsiAddressHiRw",
       kMsi + PCI_MSI_ADDRESS_HI,
       4,
       0,
       0x12345678,
       {{kMsi + PCI_MSI_ADDRESS_HI, 4, 0x12345678}}},
      {"MsiDataRw", kMsi + PCI_MSI_DATA_64, 2, 0, 0x4041, {{kMsi + PCI_MSI_DATA_64, 2, 0x4041}}},
      {"MsiMaskRw", kMsi + PCI_MSI_MASK_64, 4, 0, 0x1, {{kMsi + PCI_MSI_MASK_64, 4, 0x1}}},
      {"ExpFlagsAndDevCapRo", kExp + PCI_EXP_FLAGS, 2, 2, 0xffff, {}},
      {"DevCtlFlrDropped", devctl, 2, 0x2810, 0x800f, {{devctl, 2, 0x000f}}},
      {"DevCtlFlrByteDropped", devctl + 1, 1, 0x28, 0x80, {{devctl + 1, 1, 0x00}}},
      {"DevStaRw1c", devsta, 2, 0x001f, 0x0001, {{devsta, 2, 0x0011}}},
      {"LnkCtlRw", kExp + PCI_EXP_LNKCTL, 2, 0, 0x0043, {{kExp + PCI_EXP_LNKCTL, 2, 0x0043}}},
      {"LnkStaRw1c", lnksta, 2, 0xc011, 0x4000, {{lnksta, 2, 0x4011}}},
      {"DevCtl2Rw", kExp + PCI_EXP_DEVCTL2, 2, 0, 0x0410, {{kExp + PCI_EXP_DEVCTL2, 2, 0x0410}}},
      {"LnkCtl2Rw", kExp + PCI_EXP_LNKCTL2, 2, 0, 0x0003, {{kExp + PCI_EXP_LNKCTL2, 2, 0x0003}}},
      {"SlotCtlRo", kExp + PCI_EXP_SLTCTL, 2, 0, 0xffff, {}},
      {"VpdRo", kVpd + PCI_VPD_ADDR, 2, 0x1234, 0x8000, {}},
      {"AerUncorStatusRw1c",
       kAer + PCI_ERR_UNCOR_STATUS,
       4,
       0x00104000,
       0x00004000,
       {{kAer + PCI_ERR_UNCOR_STATUS, 4, 0x00004000}}},
      {"AerUncorMaskRw",
       kAer + PCI_ERR_UNCOR_MASK,
       4,
       0,
       0x00400000,
       {{kAer + PCI_ERR_UNCOR_MASK, 4, 0x00400000}}},
      {"AerSeverityRw",
       kAer + PCI_ERR_UNCOR_SEVER,
       4,
       0,
       0x00062030,
       {{kAer + PCI_ERR_UNCOR_SEVER, 4, 0x00062030}}},
      {"AerCorStatusRw1c",
       kAer + PCI_ERR_COR_STATUS,
       4,
       0x2001,
       0x2000,
       {{kAer + PCI_ERR_COR_STATUS, 4, 0x2000}}},
      {"AerCorMaskRw",
       kAer + PCI_ERR_COR_MASK,
       4,
       0,
       0x2000,
       {{kAer + PCI_ERR_COR_MASK, 4, 0x2000}}},
      {"AerCapMixed", kAer + PCI_ERR_CAP, 4, 0xa0, 0x1ff, {{kAer + PCI_ERR_CAP, 4, 0x1e0}}},
      {"AerHeaderLogRo", kAer + PCI_ERR_HEADER_LOG, 4, 0, 0xffffffff, {}},
      {"AerRootCommandRoOnEndpoint", kAer + PCI_ERR_ROOT_COMMAND, 4, 0, 7, {}},
      {"DsnRo", kDsn + 4, 4, 0x89abcdef, 0, {}},
      {"DoeControlNeverWritten", kDoe + PCI_DOE_CTRL, 4, 0, PCI_DOE_CTRL_GO, {}},
      {"DoeWriteMailboxNeverWritten", kDoe + PCI_DOE_WRITE, 4, 0, 0x12345678, {}},
      {"UnknownStdSpaceRo", 0xf0, 4, 0, 0xffffffff, {}},
      {"UnknownExtSpaceRo", 0x800, 4, 0, 0xffffffff, {}},
  };
}

INSTANTIATE_TEST_SUITE_P(Endpoint, RegClassTest, ::testing::ValuesIn(reg_cases()),
                         [](const auto& i) { return std::string(i.param.name); });

TEST_F(ConfigSpaceTest, FullyWritableRegisterNeedsNoDeviceRead) {
  ASSERT_TRUE(write_le(kAer + PCI_ERR_UNCOR_MASK, 4, 1).ok());
  EXPECT_EQ(dev_.reg_reads, 0);
  ASSERT_TRUE(write_le(PCI_STATUS, 2, 0x8000).ok());  // mixed: needs the RO bits
  EXPECT_EQ(dev_.reg_reads, 1);
}

TEST_F(ConfigSpaceTest, DoeCapabilityNeverWrittenAtAnyGranularity) {
  for (unsigned w : {1u, 2u, 4u}) {
    for (uint32_t off = kDoe; off < kDoe + PCI_DOE_READ + 4; off += w) {
      ASSERT_EQ(*write_le(off, w, 0xffffffff), w);
    }
  }
  ASSERT_EQ(*write(kDoe, std::vector<uint8_t>(PCI_DOE_READ + 4, 0xff)), PCI_DOE_READ + 4u);
  EXPECT_TRUE(dev_.writes.empty());
  EXPECT_EQ(dev_.reg_reads, 0);
}

TEST_F(ConfigSpaceTest, PowerStateNeverChangesThroughConfig) {
  // Any access pattern covering PMCSR: the PowerState bits written are the device's.
  put(dev_.cfg, kPm + PCI_PM_CTRL, 2, 0x0008);
  for (uint32_t off = kPm; off < kPm + PCI_PM_SIZEOF; ++off) {
    for (unsigned w : {1u, 2u, 3u, 4u}) ASSERT_TRUE(write_le(off, w, 0xffffffff).ok());
  }
  for (const auto& wr : dev_.writes) {
    if (wr.offset <= kPm + PCI_PM_CTRL && kPm + PCI_PM_CTRL < wr.offset + wr.width) {
      uint32_t shift = 8 * (kPm + PCI_PM_CTRL - wr.offset);
      EXPECT_EQ((wr.value >> shift) & PCI_PM_CTRL_STATE_MASK, 0u);
    }
  }
  EXPECT_EQ(dev_.cfg[kPm + PCI_PM_CTRL] & PCI_PM_CTRL_STATE_MASK, 0);
  EXPECT_FALSE(dev_.writes.empty());  // negative control: PMCSR was written
}

// Every byte, word and dword at every header offset: device writes are
// naturally aligned, inside one register, never virtual, and carry exactly the
// caller's bits where writable.
TEST_F(ConfigSpaceTest, HeaderGranularityAtEveryOffset) {
  const RegTable& t = space_.table();
  for (unsigned w : {1u, 2u, 4u}) {
    for (uint32_t off = 0; off + w <= 64; ++off) {
      dev_.writes.clear();
      dev_.cfg = endpoint_image();
      uint32_t v = 0xa5c3b4d2u & (w == 4 ? ~0u : (1u << (8 * w)) - 1);
      ASSERT_EQ(*write_le(off, w, v), w) << off;
      for (const auto& wr : dev_.writes) {
        SCOPED_TRACE(::testing::Message() << "write " << off << "/" << w << " -> " << wr.offset);
        EXPECT_EQ(wr.offset % wr.width, 0u);
        EXPECT_GE(wr.offset, off);
        EXPECT_LE(wr.offset + wr.width, off + w);
        RegSpan r = t.reg_at(wr.offset);
        EXPECT_LE(wr.offset + wr.width, r.offset + r.width);
        EXPECT_FALSE(space_.is_virtual(wr.offset));
        uint32_t mask = t.writable_bits(wr.offset, wr.width);
        EXPECT_NE(mask, 0u);
        uint32_t caller = v >> (8 * (wr.offset - off));
        EXPECT_EQ(wr.value & mask, caller & mask);
      }
    }
  }
}

// --- side effects ----------------------------------------------------------

TEST_F(ConfigSpaceTest, MemoryDecodeChangeReported) {
  put(dev_.cfg, PCI_COMMAND, 2, 0x0007);
  auto off = space_.plan_write(PCI_COMMAND, std::vector<uint8_t>{0x05, 0x00}, dev_.raw_reg());
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->memory_decode, std::optional<bool>(false));
  EXPECT_EQ(off->io_decode, std::nullopt);
  EXPECT_TRUE(dev_.writes.empty());  // planning alone writes nothing

  put(dev_.cfg, PCI_COMMAND, 2, 0x0004);
  auto on = space_.plan_write(PCI_COMMAND, std::vector<uint8_t>{0x07}, dev_.raw_reg());
  ASSERT_TRUE(on.ok());
  EXPECT_EQ(on->memory_decode, std::optional<bool>(true));
  EXPECT_EQ(on->io_decode, std::optional<bool>(true));
}

TEST_F(ConfigSpaceTest, NoDecodeEffectWhenUnchangedOrNotCovered) {
  put(dev_.cfg, PCI_COMMAND, 2, 0x0007);
  auto same = space_.plan_write(PCI_COMMAND, std::vector<uint8_t>{0x07, 0x04}, dev_.raw_reg());
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->memory_decode, std::nullopt);
  auto high = space_.plan_write(PCI_COMMAND + 1, std::vector<uint8_t>{0x04}, dev_.raw_reg());
  ASSERT_TRUE(high.ok());
  EXPECT_EQ(high->memory_decode, std::nullopt);
  auto bar = space_.plan_write(PCI_BASE_ADDRESS_0, std::vector<uint8_t>(4, 0), dev_.raw_reg());
  ASSERT_TRUE(bar.ok());
  EXPECT_EQ(bar->memory_decode, std::nullopt);
}

TEST_F(ConfigSpaceTest, WriteLengthClippedAtEnd) {
  EXPECT_EQ(*write(4094, std::vector<uint8_t>(8, 0xff)), 2u);
  EXPECT_EQ(*write(4096, std::vector<uint8_t>(4, 0xff)), 0u);
  EXPECT_TRUE(dev_.writes.empty());
}

TEST_F(ConfigSpaceTest, DeviceErrorsPropagate) {
  RawReadReg bad_read = [](uint32_t, unsigned) -> Result<uint32_t> { return Errno(EIO); };
  auto plan = space_.plan_write(PCI_COMMAND, std::vector<uint8_t>{0x06, 0}, bad_read);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error(), Errno(EIO));
  auto ok = space_.plan_write(kAer + PCI_ERR_UNCOR_MASK, std::vector<uint8_t>(4, 1), bad_read);
  ASSERT_TRUE(ok.ok());
  RawWriteReg bad_write = [](uint32_t, unsigned, uint32_t) -> Result<void> { return Errno(EIO); };
  auto n = space_.apply_plan(*ok, bad_write);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error(), Errno(EIO));
}

TEST_F(ConfigSpaceTest, LayoutAccessors) {
  EXPECT_EQ(space_.pm_offset(), std::optional<uint16_t>(kPm));
  EXPECT_EQ(space_.pcie_offset(), std::optional<uint16_t>(kExp));
  EXPECT_EQ(space_.doe_offsets(), std::vector<uint16_t>{kDoe});
  EXPECT_EQ(space_.caps().size(), 8u);
  EXPECT_EQ(space_.size(), 4096u);
}

// --- bridges -----------------------------------------------------------------

TEST(ConfigSpaceBridgeTest, WindowsBusNumbersAndBridgeControlReadOnly) {
  std::vector<uint8_t> img(256, 0);
  put(img, PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_BRIDGE);
  put(img, PCI_PRIMARY_BUS, 4, 0x00010100);
  put(img, PCI_MEMORY_BASE, 4, 0xfe00fe00);
  put(img, PCI_SEC_STATUS, 2, 0x8000);
  backend::DeviceInfo info;
  info.header_type = 1;
  info.resources.resize(7);
  ConfigSpace space(info, img);
  RamDevice dev{img, {}, {}, 0};
  for (uint32_t off : {uint32_t{PCI_PRIMARY_BUS}, uint32_t{PCI_IO_BASE}, uint32_t{PCI_MEMORY_BASE},
                       uint32_t{PCI_PREF_MEMORY_BASE}, uint32_t{PCI_PREF_BASE_UPPER32},
                       uint32_t{PCI_IO_BASE_UPPER16}, uint32_t{PCI_INTERRUPT_LINE}}) {
    auto plan = space.plan_write(off, std::vector<uint8_t>(4, 0), dev.raw_reg());
    ASSERT_TRUE(plan.ok());
    ASSERT_TRUE(space.apply_plan(*plan, dev.raw_write()).ok());
  }
  // Only the interrupt line and secondary status (RW1C, written 0: clears nothing).
  EXPECT_EQ(dev.writes,
            (std::vector<RegWrite>{{PCI_SEC_STATUS, 2, 0x0000}, {PCI_INTERRUPT_LINE, 1, 0x00}}));
  EXPECT_TRUE(space.is_virtual(PCI_BASE_ADDRESS_1));
  EXPECT_FALSE(space.is_virtual(PCI_BASE_ADDRESS_2));  // bus numbers on a bridge
  EXPECT_TRUE(space.is_virtual(PCI_ROM_ADDRESS1));
  EXPECT_FALSE(space.is_virtual(PCI_ROM_ADDRESS));
}

// --- concurrency -------------------------------------------------------------

TEST_F(ConfigSpaceTest, ConcurrentSizingAndReadsSeeWholeValues) {
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    RawWriteReg none = [](uint32_t, unsigned, uint32_t) -> Result<void> { return Errno(EIO); };
    RawReadReg nread = [](uint32_t, unsigned) -> Result<uint32_t> { return Errno(EIO); };
    for (int i = 0; i < 2000; ++i) {
      uint32_t v = i % 2 ? kBar2 : 0xffffffff;
      std::vector<uint8_t> b{uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};
      auto plan = space_.plan_write(PCI_BASE_ADDRESS_2, b, nread);
      if (!plan.ok() || !space_.apply_plan(*plan, none).ok()) ADD_FAILURE();
    }
    stop = true;
  });
  RawRead no_raw = [](uint32_t, std::span<uint8_t>) -> Result<void> { return Errno(EIO); };
  int torn = 0;
  while (!stop) {
    std::array<uint8_t, 4> b{};
    auto n = space_.read(PCI_BASE_ADDRESS_2, b, {}, no_raw);
    uint32_t v = le32(b);
    if (!n.ok() || (v != kBar2 && v != 0xffff0000u)) ++torn;
  }
  writer.join();
  EXPECT_EQ(torn, 0);
}

}  // namespace
}  // namespace pcifs::core
