// Parsers of sysfs attribute text and the local PM capability walk.
#include "sysfs/sysfs_attrs.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include "fixtures/sysfs_tree.hpp"
#include "sysfs/pm_cap.hpp"

namespace pcifs::backend::sysfs {
namespace {

struct HexCase {
  const char* text;
  std::optional<uint64_t> want;
};
class HexAttrTest : public ::testing::TestWithParam<HexCase> {};

TEST_P(HexAttrTest, Parses) { EXPECT_EQ(parse_hex_attr(GetParam().text), GetParam().want); }

INSTANTIATE_TEST_SUITE_P(Sysfs, HexAttrTest,
                         ::testing::Values(HexCase{"0x8086\n", 0x8086},
                                           HexCase{"0x060400\n", 0x060400}, HexCase{"0x00", 0},
                                           HexCase{"1af4", 0x1af4},
                                           HexCase{"0xffffffffffffffff\n", ~uint64_t{0}},
                                           HexCase{"", std::nullopt}, HexCase{"0x", std::nullopt},
                                           HexCase{"0x12g4\n", std::nullopt},
                                           HexCase{"0x1 2", std::nullopt}));

TEST(PcieRoot, FirstRootComponentOfTheRealPath) {
  EXPECT_EQ(pcie_root_from_path("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"), "pci0000:00");
  EXPECT_EQ(pcie_root_from_path("/sys/devices/pci0001:3a/0001:3a:00.0"), "pci0001:3a");
  // Not a root: a sysfs-shaped tree without the kernel's links, a BDF, junk.
  EXPECT_EQ(pcie_root_from_path("/tmp/tree/bus/pci/devices/0000:01:00.0"), "");
  EXPECT_EQ(pcie_root_from_path("/sys/devices/pci0000:0g/x"), "");
  EXPECT_EQ(pcie_root_from_path("/sys/devices/pci0000:000/x"), "");
  EXPECT_EQ(pcie_root_from_path(""), "");
}

TEST(DecAttr, ParsesNegativeAndRejectsJunk) {
  EXPECT_EQ(parse_dec_attr("-1\n"), -1);
  EXPECT_EQ(parse_dec_attr("17\n"), 17);
  EXPECT_EQ(parse_dec_attr("17x"), std::nullopt);
  EXPECT_EQ(parse_dec_attr("\n"), std::nullopt);
}

TEST(ResourceText, ParsesEveryLineAndPadsToSeven) {
  auto r = parse_resource_text(
      "0x0000004000000000 0x000000400007ffff 0x0000000000140204\n"
      "0x000000000000e000 0x000000000000e0ff 0x0000000000040101\n");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 7u);
  EXPECT_EQ((*r)[0].start, 0x4000000000u);
  EXPECT_EQ((*r)[0].size(), 0x80000u);
  EXPECT_TRUE((*r)[0].is_mem());
  EXPECT_TRUE((*r)[1].is_io());
  EXPECT_EQ((*r)[1].size(), 0x100u);
  EXPECT_EQ((*r)[6].size(), 0u);
}

TEST(ResourceText, KeepsBridgeWindowsBeyondSeven) {
  std::vector<Resource> in(10);
  in[8] = Resource{0xfe000000, 0xfe0fffff, kResourceMem};
  auto r = parse_resource_text(pcifs::testing::resource_text(in));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 10u);
  EXPECT_EQ((*r)[8].start, 0xfe000000u);
}

TEST(ResourceText, RejectsMalformedLines) {
  EXPECT_FALSE(parse_resource_text("0x0 0x0\n"));
  EXPECT_FALSE(parse_resource_text("0x0 0x0 0x0 0x0\n"));
  EXPECT_FALSE(parse_resource_text("zz 0x0 0x0\n"));
}

// Found by tests/fuzz/sysfs_attrs_fuzz.cpp: an entry that ends before it
// starts had a size of nearly 2^64. The kernel's own empty entry (end =
// start - 1) stays accepted, with size 0.
TEST(ResourceText, EndBeforeStart) {
  EXPECT_FALSE(parse_resource_text("0x2000 0x1000 0x200\n"));
  auto r = parse_resource_text("0x1000 0xfff 0x200\n");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)[0].size(), 0u);
}

struct DoeCase {
  const char* name;
  std::optional<DoeFeature> want;
};
class DoeNameTest : public ::testing::TestWithParam<DoeCase> {};
TEST_P(DoeNameTest, Parses) { EXPECT_EQ(parse_doe_feature_name(GetParam().name), GetParam().want); }
INSTANTIATE_TEST_SUITE_P(Sysfs, DoeNameTest,
                         ::testing::Values(DoeCase{"0001:00", DoeFeature{1, 0}},
                                           DoeCase{"1e98:02", DoeFeature{0x1e98, 2}},
                                           DoeCase{"1E98:0A", DoeFeature{0x1e98, 0xa}},
                                           DoeCase{"1e98:2", std::nullopt},
                                           DoeCase{"1e98-02", std::nullopt},
                                           DoeCase{"1e98:0x", std::nullopt},
                                           DoeCase{".", std::nullopt}));

TEST(PmCapability, FoundAtHeadOfList) {
  auto c = pcifs::testing::make_config(0x1b36, 1, 0x020000, 256, 0x50);
  EXPECT_EQ(find_pm_capability(c), 0x50);
}

TEST(PmCapability, FoundFurtherDownTheChain) {
  auto c = pcifs::testing::make_config(0x1b36, 1, 0x020000, 256, 0x60);
  c[PCI_CAPABILITY_LIST] = 0x40;  // MSI at 0x40 -> PM at 0x60
  c[0x40] = PCI_CAP_ID_MSI;
  c[0x41] = 0x60;
  EXPECT_EQ(find_pm_capability(c), 0x60);
}

TEST(PmCapability, AbsentWhenCapListBitClear) {
  auto c = pcifs::testing::make_config(0x1b36, 1, 0x020000, 256, 0x40);
  c[PCI_STATUS] &= static_cast<uint8_t>(~PCI_STATUS_CAP_LIST);
  EXPECT_EQ(find_pm_capability(c), std::nullopt);
}

TEST(PmCapability, LoopingListTerminates) {
  auto c = pcifs::testing::make_config(0x1b36, 1, 0x020000, 256, 0);
  c[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
  c[PCI_CAPABILITY_LIST] = 0x40;
  c[0x40] = PCI_CAP_ID_MSI;
  c[0x41] = 0x40;  // points at itself
  EXPECT_EQ(find_pm_capability(c), std::nullopt);
}

TEST(PmCapability, NoPmInList) {
  auto c = pcifs::testing::make_config(0x1b36, 1, 0x020000, 256, 0);
  c[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
  c[PCI_CAPABILITY_LIST] = 0x40;
  c[0x40] = PCI_CAP_ID_EXP;
  EXPECT_EQ(find_pm_capability(c), std::nullopt);
}

}  // namespace
}  // namespace pcifs::backend::sysfs
