// RegTable: register boundaries and the masks build_reg_table derives from a
// capability layout (the write semantics themselves are tested through
// ConfigSpace in config_space_test.cpp).
#include "core/config_regs.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

namespace pcifs::core {
namespace {

void put(std::vector<uint8_t>& b, uint32_t off, unsigned width, uint32_t v) {
  for (unsigned i = 0; i < width; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

TEST(RegTableTest, DefaultIsReadOnlyDwords) {
  RegTable t(256);
  for (uint32_t off = 0; off < 256; ++off) {
    EXPECT_EQ(t.wmask(off), 0);
    EXPECT_EQ(t.w1cmask(off), 0);
    EXPECT_EQ(t.reg_at(off).offset, off & ~3u);
    EXPECT_EQ(t.reg_at(off).width, 4u);
  }
  EXPECT_EQ(t.wmask(256), 0);  // out of range reads as read-only
}

TEST(RegTableTest, DefineSplitsEnclosingDword) {
  RegTable t(256);
  t.define(0x3c, 1, 0xff, 0);
  EXPECT_EQ(t.reg_at(0x3c).width, 1u);
  for (uint32_t b = 0x3d; b < 0x40; ++b) {
    EXPECT_EQ(t.reg_at(b).offset, b);  // neighbours stand alone, never span the new register
    EXPECT_EQ(t.reg_at(b).width, 1u);
  }
  t.define(0x3e, 2, 0, 0xffff);
  EXPECT_EQ(t.reg_at(0x3f).offset, 0x3eu);
  EXPECT_EQ(t.reg_at(0x3f).width, 2u);
  EXPECT_EQ(t.reg_at(0x3c).width, 1u);
  EXPECT_EQ(t.writable_bits(0x3c, 4), 0xffff00ffu);
}

TEST(RegTableTest, DefineTwoHalvesOfDword) {
  RegTable t(256);
  t.define(0x04, 2, 0x0547, 0);
  t.define(0x06, 2, 0, 0xf900);
  EXPECT_EQ(t.reg_at(0x05).offset, 0x04u);
  EXPECT_EQ(t.reg_at(0x05).width, 2u);
  EXPECT_EQ(t.reg_at(0x07).offset, 0x06u);
  EXPECT_EQ(t.wmask(0x04), 0x47);
  EXPECT_EQ(t.wmask(0x05), 0x05);
  EXPECT_EQ(t.w1cmask(0x07), 0xf9);
  EXPECT_EQ(t.writable_bits(0x04, 4), 0xf9000547u);
}

// A minimal bridge with PM and a PCIe v1 capability (no "2" registers).
std::vector<uint8_t> bridge_image() {
  std::vector<uint8_t> c(256, 0);
  put(c, PCI_STATUS, 2, PCI_STATUS_CAP_LIST);
  put(c, PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_BRIDGE);
  put(c, PCI_CAPABILITY_LIST, 1, 0x40);
  put(c, 0x40, 2, 0x5000 | PCI_CAP_ID_PM);
  put(c, 0x50, 2, PCI_CAP_ID_EXP);
  put(c, 0x50 + PCI_EXP_FLAGS, 2, 0x0041);  // version 1, root port
  return c;
}

struct MaskCase {
  const char* name;
  uint32_t offset;
  unsigned width;
  uint32_t wmask;
  uint32_t w1cmask;
};

class BridgeMaskTest : public ::testing::TestWithParam<MaskCase> {};

TEST_P(BridgeMaskTest, Masks) {
  auto img = bridge_image();
  RegTable t = build_reg_table(img, 256, PCI_HEADER_TYPE_BRIDGE, walk_capabilities(img));
  const MaskCase& c = GetParam();
  uint32_t wm = 0, w1c = 0;
  for (unsigned i = 0; i < c.width; ++i) {
    wm |= uint32_t{t.wmask(c.offset + i)} << (8 * i);
    w1c |= uint32_t{t.w1cmask(c.offset + i)} << (8 * i);
  }
  EXPECT_EQ(wm, c.wmask);
  EXPECT_EQ(w1c, c.w1cmask);
}

INSTANTIATE_TEST_SUITE_P(
    Bridge, BridgeMaskTest,
    ::testing::Values(MaskCase{"Command", PCI_COMMAND, 2, 0x0547, 0},
                      MaskCase{"Status", PCI_STATUS, 2, 0, 0xf900},
                      MaskCase{"BusNumbers", PCI_PRIMARY_BUS, 4, 0, 0},
                      MaskCase{"IoWindowAndSecStatus", PCI_IO_BASE, 4, 0, 0xf9000000},
                      MaskCase{"MemWindow", PCI_MEMORY_BASE, 4, 0, 0},
                      MaskCase{"PrefWindow", PCI_PREF_MEMORY_BASE, 4, 0, 0},
                      MaskCase{"PrefUpper", PCI_PREF_BASE_UPPER32, 4, 0, 0},
                      MaskCase{"IntLineAndBridgeControl", PCI_INTERRUPT_LINE, 4, 0xff, 0},
                      MaskCase{"Bist", PCI_CACHE_LINE_SIZE, 4, 0x0000ffff, 0},
                      MaskCase{"Pmcsr", 0x40 + PCI_PM_CTRL, 2, 0x1f00, 0x8000},
                      MaskCase{"DevCtlNoFlr", 0x50 + PCI_EXP_DEVCTL, 2, 0x7fff, 0},
                      MaskCase{"DevSta", 0x50 + PCI_EXP_DEVSTA, 2, 0, 0x000f},
                      MaskCase{"LnkSta", 0x50 + PCI_EXP_LNKSTA, 2, 0, 0xc000},
                      MaskCase{"NoDevCtl2InV1", 0x50 + PCI_EXP_DEVCTL2, 2, 0, 0},
                      MaskCase{"NoLnkCtl2InV1", 0x50 + PCI_EXP_LNKCTL2, 2, 0, 0},
                      MaskCase{"VendorSpace", 0xc0, 4, 0, 0}),
    [](const auto& i) { return std::string(i.param.name); });

TEST(BuildRegTableTest, CapabilityClippedToNeighbour) {
  // An MSI capability squeezed by the next one gets no registers past it.
  std::vector<uint8_t> c(256, 0);
  put(c, PCI_STATUS, 2, PCI_STATUS_CAP_LIST);
  put(c, PCI_CAPABILITY_LIST, 1, 0x40);
  put(c, 0x40, 2, 0x4800 | PCI_CAP_ID_MSI);
  put(c, 0x40 + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_64BIT);
  put(c, 0x48, 2, 0x0009);  // a vendor capability right after
  RegTable t = build_reg_table(c, 256, 0, walk_capabilities(c));
  EXPECT_EQ(t.writable_bits(0x40 + PCI_MSI_ADDRESS_LO, 4), 0xfffffffcu);
  EXPECT_EQ(t.writable_bits(0x48, 4), 0u);  // would be MSI address hi without clipping
}

TEST(BuildRegTableTest, ExtendedCapsOnlyIn4096Space) {
  std::vector<uint8_t> c(4096, 0);
  put(c, 0x100, 4, (2 << 16) | PCI_EXT_CAP_ID_ERR);
  RegTable big = build_reg_table(c, 4096, 0, walk_capabilities(c));
  EXPECT_EQ(big.writable_bits(0x100 + PCI_ERR_UNCOR_MASK, 4), 0xffffffffu);
  EXPECT_EQ(big.writable_bits(0x100 + PCI_ERR_ROOT_COMMAND, 4), 0u);  // endpoint
  RegTable small =
      build_reg_table(std::span(c).first(256), 256, 0, walk_capabilities(std::span(c).first(256)));
  EXPECT_EQ(small.size(), 256u);
}

}  // namespace
}  // namespace pcifs::core
