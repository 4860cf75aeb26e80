// Device sets as JSON: the embedded default (its DeviceInfo facts), good files,
// bad files with the messages users see, and a 2048-function set.
#include "sim/device_set.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "sim/bar_memory.hpp"
#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

TEST(DefaultSet, DescribesTheDocumentedDevices) {
  auto b = make_default_backend();
  EXPECT_EQ(b->describe(), "sim (embedded default)");
  std::vector<std::string> bdfs;
  for (const auto& d : b->devices()) bdfs.push_back(d->info().bdf.str());
  EXPECT_EQ(bdfs, (std::vector<std::string>{"0000:00:00.0", "0000:00:01.0", "0000:00:02.0",
                                            "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"}));
}

struct InfoCase {
  const char* bdf;
  uint16_t device;
  uint32_t class_code;
  uint8_t header_type;
  int iommu_group;
  uint32_t config_size;
  size_t resource_lines;
};

class DefaultInfo : public ::testing::TestWithParam<InfoCase> {};

TEST_P(DefaultInfo, Facts) {
  const InfoCase& c = GetParam();
  auto b = make_default_backend();
  const DeviceInfo& i = dev(*b, c.bdf)->info();
  EXPECT_EQ(i.vendor, 0x1b36);
  EXPECT_EQ(i.device, c.device);
  EXPECT_EQ(i.class_code, c.class_code);
  EXPECT_EQ(i.header_type, c.header_type);
  EXPECT_EQ(i.iommu_group, c.iommu_group);
  EXPECT_EQ(i.config_size, c.config_size);
  EXPECT_EQ(i.resources.size(), c.resource_lines);
  EXPECT_EQ(i.numa_node, -1);
  EXPECT_FALSE(i.driver.has_value());
  EXPECT_TRUE(i.kernel_doe_features.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Sim, DefaultInfo,
    ::testing::Values(InfoCase{"0000:00:00.0", 0x0008, 0x060000, 0, 0, 256, 7},
                      InfoCase{"0000:00:01.0", 0x000c, 0x060400, 1, 1, 4096, 11},
                      InfoCase{"0000:00:02.0", 0x000c, 0x060400, 1, 4, 4096, 11},
                      InfoCase{"0000:01:00.0", 0x10f0, 0x050210, 0, 2, 4096, 7},
                      InfoCase{"0000:01:00.1", 0x10f1, 0x058000, 0, 2, 4096, 7},
                      InfoCase{"0000:02:00.0", 0x10f2, 0x120000, 0, 3, 4096, 7}));

TEST(DefaultSet, ResourcesCarryLinuxFlags) {
  auto b = make_default_backend();
  const auto& r = dev(*b, "0000:01:00.0")->info().resources;
  EXPECT_EQ(r[0].start, 0x8000000000u);
  EXPECT_EQ(r[0].end, 0x80000fffffu);
  EXPECT_EQ(r[0].flags, 0x0014220cu);  // 64-bit prefetchable memory
  EXPECT_EQ(r[1].size(), 0u);          // upper half of BAR0
  EXPECT_EQ(r[2].flags, 0x00040200u);  // 32-bit memory
  EXPECT_EQ(r[2].size(), 0x10000u);
  EXPECT_EQ(r[4].flags, 0x00040101u);  // I/O
  EXPECT_EQ(r[4].start, 0x1000u);
  EXPECT_EQ(r[6].flags, 0x00046200u);  // ROM
  EXPECT_EQ(r[6].start, 0xfe010000u);
  EXPECT_EQ(dev(*b, "0000:02:00.0")->info().resources[0].flags, 0x00140204u);
  const auto& w = dev(*b, "0000:00:01.0")->info().resources;
  EXPECT_EQ(w[7].flags, 0x00000101u);
  EXPECT_EQ(w[7].start, 0x1000u);
  EXPECT_EQ(w[8].flags, 0x00000200u);
  EXPECT_EQ(w[9].flags, 0x00102201u);
  EXPECT_EQ(w[9].end, 0x80001fffffu);
  EXPECT_EQ(w[10].size(), 0u);
  const auto& w2 = dev(*b, "0000:00:02.0")->info().resources;
  EXPECT_EQ(w2[7].size(), 0u);  // closed I/O window
  EXPECT_EQ(w2[8].start, 0xfe200000u);
}

TEST(DefaultSet, BarRegistersMatchResources) {
  auto b = make_default_backend();
  for (const auto& base : b->devices()) {
    auto& d = dynamic_cast<SimDevice&>(*base);
    const auto& r = d.info().resources;
    for (unsigned i = 0; i < 6 && !d.info().is_bridge(); ++i) {
      if (r[i].size() == 0) continue;
      uint64_t reg = rd(d, PCI_BASE_ADDRESS_0 + 4 * i, 4);
      uint64_t addr = r[i].is_io() ? reg & ~uint64_t{3} : reg & ~uint64_t{0xf};
      if (r[i].flags & kResourceMem64)
        addr |= uint64_t{rd(d, PCI_BASE_ADDRESS_0 + 4 * i + 4, 4)} << 32;
      EXPECT_EQ(addr, r[i].start) << d.info().bdf.str() << " bar" << i;
    }
  }
}

TEST(DefaultSet, MultiFunctionBitOnlyWhereSiblingsExist) {
  auto b = make_default_backend();
  EXPECT_EQ(rd(*dev(*b, "0000:01:00.0"), PCI_HEADER_TYPE, 1), 0x80u);
  EXPECT_EQ(rd(*dev(*b, "0000:01:00.1"), PCI_HEADER_TYPE, 1), 0x80u);
  EXPECT_EQ(rd(*dev(*b, "0000:02:00.0"), PCI_HEADER_TYPE, 1), 0x00u);
}

TEST(DeviceSet, DriverAndCountExpand) {
  std::string err;
  auto b = load_backend_json(R"({"devices":[
      {"bdf":"0000:03:00.6","count":4,"device":"0x10f3","class":"0x120000","iommu_group":10,
       "driver":"vfio-pci","bars":[{"index":0,"type":"mem32","size":4096,"address":"0xf0000000"}],
       "capabilities":{"pcie":{}}}]})",
                             &err);
  ASSERT_TRUE(b.ok()) << err;
  std::vector<std::string> bdfs;
  for (const auto& d : (*b)->devices()) bdfs.push_back(d->info().bdf.str());
  EXPECT_EQ(bdfs, (std::vector<std::string>{"0000:03:00.6", "0000:03:00.7", "0000:03:01.0",
                                            "0000:03:01.1"}));
  auto last = (*b)->find(bdf("0000:03:01.1"));
  EXPECT_EQ(last->info().driver, "vfio-pci");
  EXPECT_EQ(last->info().iommu_group, 13);
  EXPECT_EQ(last->info().resources[0].start, 0xf0003000u);
  EXPECT_EQ(rd(*last, PCI_BASE_ADDRESS_0, 4), 0xf0003000u);
  EXPECT_EQ(bar_rd(*last, 0, kRegId, 4), kIdValue);
}

// "power_state": the function is in D3hot when the simulator creates it, as
// after a PMCSR write by the host: its PMCSR says so, its BARs do not answer.
TEST(DeviceSet, PowerStateD3hotAtCreation) {
  std::string err;
  auto b = load_backend_json(R"({"devices":[
      {"bdf":"0000:03:00.0","count":2,"device":1,"class":"0x120000","power_state":"D3hot",
       "bars":[{"index":0,"type":"mem32","size":4096}],"capabilities":{"pm":{}}},
      {"bdf":"0000:04:00.0","device":2,"class":"0x120000","power_state":"D0",
       "capabilities":{"pm":{}}}]})",
                             &err);
  ASSERT_TRUE(b.ok()) << err;
  for (const char* at : {"0000:03:00.0", "0000:03:00.1"}) {
    auto d = (*b)->find(bdf(at));
    EXPECT_EQ(d->physical_power_state(), PowerState::kD3hot) << at;
    const uint32_t pmcsr = find_cap(*d, PCI_CAP_ID_PM, false) + PCI_PM_CTRL;
    EXPECT_EQ(rd(*d, pmcsr, 2) & PCI_PM_CTRL_STATE_MASK, 3u) << at;
    EXPECT_EQ(d->violations().value_or(0), 0u) << at;
  }
  auto d0 = (*b)->find(bdf("0000:04:00.0"));
  EXPECT_EQ(d0->physical_power_state(), PowerState::kD0);
  EXPECT_EQ(rd(*d0, find_cap(*d0, PCI_CAP_ID_PM, false) + PCI_PM_CTRL, 2) & PCI_PM_CTRL_STATE_MASK,
            0u);
}

TEST(DeviceSet, TwoThousandFunctionsLoad) {
  std::string err;
  auto start = std::chrono::steady_clock::now();
  auto b = load_backend_json(R"({"devices":[
      {"bdf":"0000:10:00.0","count":2048,"device":"0x10f4","class":"0x120000","config_size":4096,
       "bars":[{"index":0,"type":"mem64","size":"0x100000"}],
       "capabilities":{"pm":{},"pcie":{},"aer":{},"dsn":{"serial":1000}}}]})",
                             &err);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(b.ok()) << err;
  auto all = (*b)->devices();
  ASSERT_EQ(all.size(), 2048u);
  EXPECT_EQ(all.back()->info().bdf.str(), "0000:17:1f.7");
  EXPECT_NE(all[0]->info().resources[0].start, all[1]->info().resources[0].start);
  auto& lastdev = dynamic_cast<SimDevice&>(*all.back());
  EXPECT_EQ(rd(lastdev, find_cap(lastdev, PCI_EXT_CAP_ID_DSN, true) + 4, 4), 1000u + 2047u);
  // Timings are benchmarks, not assertions (a loaded CI machine under TSan
  // took 3.4 s): printed for the log; pcifs-bench --scale measures mounts of
  // 64 and 4096 functions.
  std::printf("2048 functions loaded in %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()));
}

TEST(DeviceSet, FileLoadNamesTheFile) {
  std::string path = ::testing::TempDir() + "pcifs_sim_set.json";
  {
    std::ofstream(path) << R"({"devices":[{"bdf":"0000:00:00.0","device":1,"class":"0x1234567"}]})";
  }
  std::string err;
  auto bad = load_backend_file(path, &err);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(err, path + ": devices[0].class: expected an integer from 0 to 0xffffff");
  { std::ofstream(path) << R"({"devices":[{"bdf":"0000:00:00.0","device":1,"class":1}]})"; }
  auto good = load_backend_file(path, &err);
  ASSERT_TRUE(good.ok()) << err;
  EXPECT_EQ((*good)->describe(), "sim:" + path);
  std::remove(path.c_str());
  EXPECT_EQ(load_backend_file(path, &err).error(), Errno(ENOENT));
  EXPECT_NE(err.find(path), std::string::npos);
}

TEST(DeviceSet, DefaultJsonTextIsTheOneUsed) {
  std::string err;
  auto b = load_backend_json(default_set_json(), &err);
  ASSERT_TRUE(b.ok()) << err;
  EXPECT_EQ((*b)->devices().size(), make_default_backend()->devices().size());
}

// --- Bad sets: the message names the field and what was expected.

struct BadCase {
  const char* name;
  const char* entry;  // one devices[] entry, or a whole document when it starts with '!'
  const char* message;
};

class BadSet : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadSet, IsRejectedWithItsMessage) {
  const BadCase& c = GetParam();
  std::string text =
      c.entry[0] == '!'
          ? std::string(c.entry + 1)
          : std::string(R"({"devices":[{"bdf":"0000:09:00.0","device":1,"class":1},)") + c.entry +
                "]}";
  std::string err;
  auto b = load_backend_json(text, &err);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error(), Errno(EINVAL));
  EXPECT_EQ(err, c.message);
}

const BadCase kBad[] = {
    {"BarSizeNotPow2",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":0,"type":"mem32","size":24}]})",
     "devices[1].bars[0].size: expected a power of two >= 16 and <= 0x80000000"},
    {"BarSizeTooSmall",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":0,"type":"mem64","size":8}]})",
     "devices[1].bars[0].size: expected a power of two >= 16 and <= 0x10000000000"},
    {"Mem64OverlapsNext",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":1,"type":"mem32","size":16},{"index":0,"type":"mem64","size":16}]})",
     "devices[1].bars[1].index: BAR 1 is already used"},
    {"IoBarTooBig",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":2,"type":"io","size":512}]})",
     "devices[1].bars[0].size: expected a power of two >= 4 and <= 256"},
    {"Mem64AtLastIndex",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":5,"type":"mem64","size":16}]})",
     "devices[1].bars[0].index: a 64-bit BAR needs the next index too"},
    {"Mem64UpperHalfReused",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":0,"type":"mem64","size":16},{"index":1,"type":"mem32","size":16}]})",
     "devices[1].bars[1].index: BAR 1 is already used"},
    {"BarType",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":0,"type":"mem","size":16}]})",
     "devices[1].bars[0].type: expected \"mem32\", \"mem64\" or \"io\""},
    {"BarMisalignedAddress",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":0,"type":"mem32","size":4096,"address":"0x1800"}]})",
     "devices[1].bars[0].address: expected a multiple of the size"},
    {"BadBdf", R"({"bdf":"0000:01:20.0","device":1,"class":1})",
     "devices[1].bdf: expected DDDD:BB:DD.F"},
    {"MissingDevice", R"({"bdf":"0000:01:00.0","class":1})",
     "devices[1].device: required field missing"},
    {"UnknownField", R"({"bdf":"0000:01:00.0","device":1,"class":1,"colour":"red"})",
     "devices[1].colour: unknown field"},
    {"DuplicateBdf", R"({"bdf":"0000:09:00.0","device":1,"class":1})",
     "devices[1].bdf: 0000:09:00.0 is already described by devices[0]"},
    {"CountOverlaps", R"({"bdf":"0000:08:1f.7","count":3,"device":1,"class":1})",
     "devices[1].bdf: 0000:09:00.0 is already described by devices[0]"},
    {"CountPastLastBus", R"({"bdf":"0000:ff:1f.6","count":3,"device":1,"class":1})",
     "devices[1].count: the functions run past bus 0xff"},
    {"CountZero", R"({"bdf":"0000:01:00.0","count":0,"device":1,"class":1})",
     "devices[1].count: expected an integer from 1 to 0x10000"},
    {"VendorFfff", R"({"bdf":"0000:01:00.0","vendor":"0xffff","device":1,"class":1})",
     "devices[1].vendor: expected an integer from 0 to 0xfffe"},
    {"NegativeNumber", R"({"bdf":"0000:01:00.0","device":-1,"class":1})",
     "devices[1].device: expected an integer from 0 to 0xffff"},
    {"HexGarbage", R"({"bdf":"0000:01:00.0","device":"0x12g","class":1})",
     "devices[1].device: expected an integer from 0 to 0xffff"},
    {"ConfigSize", R"({"bdf":"0000:01:00.0","device":1,"class":1,"config_size":512})",
     "devices[1].config_size: expected 256 or 4096"},
    {"ExtendedCapIn256", R"({"bdf":"0000:01:00.0","device":1,"class":1,"capabilities":{"aer":{}}})",
     "devices[1].capabilities.aer: an extended capability needs \"config_size\": 4096"},
    {"RomImagesTooBig",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"rom":{"size":2048,"images":[{"size":2048},{"size":512}]}})",
     "devices[1].rom.images[1].size: the images do not fit in the ROM size"},
    {"RomImageUnit",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"rom":{"size":4096,"images":[{"size":1000}]}})",
     "devices[1].rom.images[0].size: expected a multiple of 512"},
    {"MsixWithoutBar",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"capabilities":{"msix":{"bar":2}}})",
     "devices[1].capabilities.msix.bar: expected the index of a memory BAR of this function"},
    {"MsixTableOutside",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"bars":[{"index":0,"type":"mem32","size":4096}],"capabilities":{"msix":{"table_offset":"0x1000"}}})",
     "devices[1].capabilities.msix.table_offset: expected a multiple of 8 with the table inside "
     "the BAR"},
    {"RootPortOnEndpoint",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"capabilities":{"pcie":{"port":"root_port"}}})",
     "devices[1].capabilities.pcie.port: expected \"endpoint\" for an endpoint"},
    {"WindowsOnEndpoint", R"({"bdf":"0000:01:00.0","device":1,"class":1,"windows":{}})",
     "devices[1].windows: only bridges (\"type\": \"bridge\") have this"},
    {"DoeFault",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"config_size":4096,"capabilities":{"doe":[{"fault":"sometimes"}]}})",
     "devices[1].capabilities.doe[0].fault: expected none, no_response, error, stuck_busy or slow"},
    {"PmNotObject", R"({"bdf":"0000:01:00.0","device":1,"class":1,"capabilities":{"pm":true}})",
     "devices[1].capabilities.pm: expected an object"},
    {"BoolField",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"capabilities":{"pm":{"no_soft_reset":1}}})",
     "devices[1].capabilities.pm.no_soft_reset: expected true or false"},
    {"PowerStateUnknown",
     R"({"bdf":"0000:01:00.0","device":1,"class":1,"power_state":"D3cold","capabilities":{"pm":{}}})",
     R"(devices[1].power_state: expected "D0" or "D3hot")"},
    {"PowerStateWithoutPm", R"({"bdf":"0000:01:00.0","device":1,"class":1,"power_state":"D3hot"})",
     "devices[1].power_state: D3hot needs the PM capability (capabilities.pm)"},
    {"NoDevices", "!{\"devices\":[]}", "devices: expected a non-empty array"},
    {"TopNotObject", "![1,2]", "(top level): expected an object"},
    {"SyntaxError", "!{\"devices\":[",
     "invalid JSON: parse error at line 1, column 13: syntax error while parsing value - "
     "unexpected end of input; expected '[', '{', or a literal"},
    {"IoSpaceExhausted",
     R"({"bdf":"0000:01:00.0","count":300,"device":1,"class":1,"bars":[{"index":0,"type":"io","size":256}]})",
     "devices[1].bars[0].address: address space exhausted; give an address"},
};

INSTANTIATE_TEST_SUITE_P(Sim, BadSet, ::testing::ValuesIn(kBad),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace pcifs::backend::sim
