// The Mediator through its API on the default simulated set: the tree [S3],
// config [S4], BARs [S5], views [S6], rom [S7], claims [S11], status.
#include "pcifs/mediator.hpp"

#include <linux/pci_regs.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/view_policy.hpp"
#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

using ::testing::Contains;

std::vector<std::string> names(const std::vector<FileEntry>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) out.push_back(f.name);
  return out;
}

uint32_t le32(const std::vector<uint8_t>& b) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v |= uint32_t{b[i]} << (8 * i);
  return v;
}

class MediatorTest : public MediatorFixture {};

TEST_F(MediatorTest, DefaultViewShowsEveryDevice) {
  auto devs = med_->devices(view_);
  EXPECT_EQ(devs.size(), 6u);
  EXPECT_TRUE(std::is_sorted(devs.begin(), devs.end()));
}

TEST_F(MediatorTest, EndpointDirectoryListsItsFiles) {
  med_->wait_for_discovery();
  auto files = med_->files(view_, kEp0);
  ASSERT_TRUE(files.ok());
  auto n = names(*files);
  for (const char* want : {"vendor",
                           "device",
                           "class",
                           "subsystem_vendor",
                           "subsystem_device",
                           "revision",
                           "irq",
                           "numa_node",
                           "resource",
                           "config",
                           "resource0",
                           "resource2",
                           "resource4",
                           "rom",
                           "doe",
                           "doe_features/0001:00",
                           "doe_features/1e98:02",
                           "doe_features/1b36:01",
                           "power_state",
                           "reset",
                           "remove",
                           "owner"}) {
    EXPECT_THAT(n, Contains(want));
  }
  EXPECT_EQ(std::count(n.begin(), n.end(), "resource1"), 0) << "upper half of a 64-bit BAR";
  auto cfg = med_->stat(view_, FileRef{kEp0, FileKind::kConfig, 0, {}});
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->size, 4096u);
  auto bar0 = med_->stat(view_, FileRef{kEp0, FileKind::kBar, 0, {}});
  ASSERT_TRUE(bar0.ok());
  EXPECT_EQ(bar0->size, 1u << 20);
}

TEST_F(MediatorTest, SecondMailboxIsDocDot1AndHostBridgeHasNoBars) {
  auto n = names(*med_->files(view_, kEp2));
  EXPECT_THAT(n, Contains("doe"));
  EXPECT_THAT(n, Contains("doe.1"));
  auto hb = names(*med_->files(view_, kHostBridge));
  EXPECT_EQ(std::count_if(hb.begin(), hb.end(),
                          [](auto& s) { return s.rfind("resource", 0) == 0 && s != "resource"; }),
            0);
  EXPECT_EQ(std::count(hb.begin(), hb.end(), "rom"), 0);
}

// The kernel may cache the absence of any name this denies (fs/fuse/tree.cpp),
// so it must admit every name files() lists, for every device. A lookup finds
// a file by its name (device_file_ref, then stat): every listed name maps back
// to its own file, and stat() of it gives the listed entry.
TEST_F(MediatorTest, EveryListedNameMayNameADeviceFileAndIsThatFile) {
  med_->wait_for_discovery();
  size_t checked = 0;
  for (const Bdf& b : med_->devices(view_)) {
    auto files = med_->files(view_, b);
    ASSERT_TRUE(files.ok()) << b.str();
    for (const auto& f : *files) {
      auto st = med_->stat(view_, f.ref);
      ASSERT_TRUE(st.ok()) << b.str() << " " << f.name;
      EXPECT_EQ(st->name, f.name);
      EXPECT_EQ(st->mode, f.mode) << f.name;
      EXPECT_EQ(st->size, f.size) << f.name;
      EXPECT_EQ(st->keep_cache, f.keep_cache) << f.name;
      EXPECT_EQ(st->nonseekable, f.nonseekable) << f.name;
      if (f.ref.kind == FileKind::kDoeFeature) continue;  // doe_features/, the tree's own
      EXPECT_TRUE(Mediator::may_name_device_file(f.name)) << b.str() << " " << f.name;
      auto ref = Mediator::device_file_ref(b, f.name);
      ASSERT_TRUE(ref.has_value()) << b.str() << " " << f.name;
      EXPECT_EQ(ref->kind, f.ref.kind) << f.name;
      EXPECT_EQ(ref->index, f.ref.index) << f.name;
      EXPECT_EQ(ref->bdf, b);
      ++checked;
    }
    // Files this device does not have: no entry.
    for (auto missing : {FileRef{b, FileKind::kBar, 6, {}}, FileRef{b, FileKind::kDoe, 9, {}},
                         FileRef{b, FileKind::kConfig, 1, {}}}) {
      EXPECT_FALSE(med_->stat(view_, missing).ok()) << b.str();
    }
  }
  EXPECT_GT(checked, 60u);
  for (const char* no : {"label", "resource6", "resource01", "doe.0", "doe.01", "doe.65536",
                         "driver", "iommu_group", "doe_features", ""}) {
    EXPECT_FALSE(Mediator::device_file_ref(kEp0, no).has_value()) << no;
  }
  for (const char* yes : {"resource0", "resource5", "doe.1", "doe.65535", "power_state", "owner"}) {
    EXPECT_TRUE(Mediator::may_name_device_file(yes)) << yes;
  }
  for (const char* no : {"label", "of_node", "modalias", "resource6", "resource01", "resourcex",
                         "doe.", "doe.01", "doe.65536", "doe.x", "", "config ",
                         // the tree's own entries, not files of the Mediator:
                         "driver", "iommu_group", "doe_features"}) {
    EXPECT_FALSE(Mediator::may_name_device_file(no)) << no;
  }
}

TEST_F(MediatorTest, AttributesAreFormattedAsSysfs) {
  EXPECT_EQ(text(must_open(kEp0, FileKind::kVendor, 0, false, kUser)), "0x1b36\n");
  EXPECT_EQ(text(must_open(kEp0, FileKind::kClass, 0, false, kUser)), "0x050210\n");
  auto res = text(must_open(kEp0, FileKind::kResource, 0, false, kUser));
  EXPECT_GE(std::count(res.begin(), res.end(), '\n'), 7);
  EXPECT_EQ(res.substr(0, 2), "0x");
  EXPECT_EQ(res.find('\n'), 56u) << "three 18-character columns";
  EXPECT_EQ(text(must_open(kEp0, FileKind::kOwner, 0, false, kUser)), "none\n");
  EXPECT_EQ(text(must_open(kEp0, FileKind::kPowerState, 0, false, kUser)), "D0\n");
}

TEST_F(MediatorTest, AttributesAreReadOnly) {
  EXPECT_EQ(open(kEp0, FileKind::kVendor, 0, true).error(), Errno(EACCES));
  EXPECT_EQ(open(kEp0, FileKind::kOwner, 0, true).error(), Errno(EACCES));
}

TEST_F(MediatorTest, UnprivilegedReaderSeesFullConfig) {
  HandleId h = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  auto all = read(h, 0, 8192);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4096u) << "short only at the end of the space";
  EXPECT_EQ((*all)[0], 0x36);
  EXPECT_EQ((*all)[1], 0x1b);
  auto tail = read(h, 4094, 16);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->size(), 2u);
  EXPECT_EQ(read(h, 4096, 16)->size(), 0u);
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorTest, ConfigReadMatchesDeviceExceptVirtualBars) {
  HandleId h = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  auto via = read(h, 0, 4096);
  std::vector<uint8_t> raw(4096);
  ASSERT_TRUE(sim(kEp0).config_read_block(0, raw).ok());
  for (size_t i = 0; i < 4096; ++i) {
    EXPECT_EQ((*via)[i], raw[i]) << "offset " << i;  // firmware-assigned BARs read the same
  }
}

TEST_F(MediatorTest, UnprivilegedMayNotWriteConfigOrOpenBars) {
  EXPECT_EQ(open(kEp0, FileKind::kConfig, 0, true, kUser).error(), Errno(EACCES));
  EXPECT_EQ(open(kEp0, FileKind::kBar, 0, false, kUser).error(), Errno(EACCES));
  EXPECT_EQ(open(kEp0, FileKind::kPowerState, 0, true, kUser).error(), Errno(EACCES));
  EXPECT_EQ(open(kEp0, FileKind::kReset, 0, true, kUser).error(), Errno(EACCES));
  EXPECT_EQ(open(kEp0, FileKind::kBar, 1).error(), Errno(ENOENT)) << "BAR1: upper half";
}

TEST_F(MediatorTest, BarSizingThroughConfigNeverReachesDevice) {
  HandleId h = must_open(kEp0, FileKind::kConfig, 0, true);
  auto before = read(h, PCI_BASE_ADDRESS_2, 4);
  ASSERT_TRUE(write(h, PCI_BASE_ADDRESS_2, {0xff, 0xff, 0xff, 0xff}).ok());
  auto mask = read(h, PCI_BASE_ADDRESS_2, 4);
  uint32_t m = le32(*mask);
  EXPECT_EQ(m & ~0xfu, ~uint32_t{0xffff}) << "64 KiB BAR size mask";
  auto dev = sim(kEp0).config_read(PCI_BASE_ADDRESS_2, 4);
  uint32_t b = le32(*before);
  EXPECT_EQ(*dev, b) << "the device's BAR register is untouched";
  ASSERT_TRUE(write(h, PCI_BASE_ADDRESS_2, *before).ok());
  EXPECT_EQ(*read(h, PCI_BASE_ADDRESS_2, 4), *before);
}

TEST_F(MediatorTest, ConfigWriteClaimsAndOwnerShowsIt) {
  HandleId h = must_open(kEp0, FileKind::kConfig, 0, true);
  HandleId owner = must_open(kEp0, FileKind::kOwner, 0, false, kUser);
  EXPECT_EQ(text(owner), "none\n") << "opening for write does not claim; writing does";
  ASSERT_TRUE(write(h, PCI_CACHE_LINE_SIZE, {0x10}).ok());
  EXPECT_EQ(text(owner), "pid=100 uid=0 view=default\n");
  HandleId other = must_open(kEp1, FileKind::kConfig, 0, true, kRoot2);
  EXPECT_EQ(write(other, PCI_CACHE_LINE_SIZE, {0x10}).error(), Errno(EBUSY)) << "same group";
  med_->release(h);
  med_->drain_handovers();  // the group is handed over before anyone may claim it
  EXPECT_EQ(text(owner), "none\n");
  EXPECT_TRUE(write(other, PCI_CACHE_LINE_SIZE, {0x10}).ok());
}

TEST_F(MediatorTest, BarOpenClaimsTheWholeGroup) {
  HandleId a = must_open(kEp0, FileKind::kBar, 0);
  EXPECT_EQ(open(kEp0, FileKind::kBar, 2, false, kRoot2).error(), Errno(EBUSY));
  EXPECT_EQ(open(kEp1, FileKind::kBar, 0, false, kRoot2).error(), Errno(EBUSY));
  EXPECT_TRUE(open(kEp2, FileKind::kBar, 0, false, kRoot2).ok()) << "another group";
  HandleId same_pid = must_open(kEp1, FileKind::kBar, 0);  // the holder may take more
  med_->release(a);
  EXPECT_EQ(open(kEp0, FileKind::kBar, 0, false, kRoot2).error(), Errno(EBUSY))
      << "claim lasts until the LAST claiming handle goes";
  med_->release(same_pid);
  med_->drain_handovers();
  EXPECT_TRUE(open(kEp0, FileKind::kBar, 0, false, kRoot2).ok());
}

TEST_F(MediatorTest, BridgesNeitherTakeNorBlockClaims) {
  HandleId ep = must_open(kEp0, FileKind::kBar, 0);
  HandleId rp = must_open(kRootPort1, FileKind::kConfig, 0, true, kRoot2);
  EXPECT_TRUE(write(rp, PCI_CACHE_LINE_SIZE, {0x10}).ok());
  EXPECT_EQ(text(must_open(kRootPort1, FileKind::kOwner, 0, false, kUser)), "none\n");
  med_->release(ep);
}

TEST_F(MediatorTest, ReadingConfigRomOrDoeDoesNotClaim) {
  HandleId c = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  HandleId r = must_open(kEp0, FileKind::kRom, 0, false, kUser);
  ASSERT_TRUE(read(c, 0, 256).ok());
  ASSERT_TRUE(read(r, 0, 512).ok());
  EXPECT_TRUE(open(kEp0, FileKind::kBar, 0).ok());
}

TEST_F(MediatorTest, BarWidthsAndBounds) {
  HandleId h = must_open(kEp0, FileKind::kBar, 0, true);
  EXPECT_EQ(*bar_get(h, kIdReg, 4), 0x50434946u);
  ASSERT_TRUE(bar_put(h, kScratch0, 8, 0x1122334455667788ull).ok());
  EXPECT_EQ(*bar_get(h, kScratch0, 8), 0x1122334455667788ull);
  EXPECT_EQ(*bar_get(h, kScratch0 + 4, 2), 0x3344u);
  EXPECT_EQ(read(h, 1, 2).error(), Errno(EINVAL)) << "misaligned";
  EXPECT_EQ(read(h, 0, 3).error(), Errno(EINVAL)) << "odd width";
  EXPECT_EQ(read(h, 1u << 20, 4)->size(), 0u) << "at the end: 0 bytes";
  EXPECT_EQ(bar_put(h, 1u << 20, 4, 0).error(), Errno(ENXIO));
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorTest, OneAlignedPreadIsOneDeviceAccess) {
  HandleId h = must_open(kEp0, FileKind::kBar, 0, true);
  ASSERT_TRUE(bar_put(h, kCountW4, 8, 0).ok());  // zero all counters
  ASSERT_TRUE(bar_get(h, kIdReg, 4).ok());
  EXPECT_EQ(*bar_get(h, kCountW4, 8), 1u) << "the ID read: one 4-byte access";
}

TEST_F(MediatorTest, RomIsShadowedValidatedAndReadOnly) {
  HandleId h = must_open(kEp0, FileKind::kRom, 0, false, kUser);
  auto all = read(h, 0, 1 << 20);
  ASSERT_TRUE(all.ok());
  ASSERT_GE(all->size(), 1024u);
  EXPECT_EQ((*all)[0], 0x55);
  EXPECT_EQ((*all)[1], 0xaa);
  EXPECT_LE(all->size(), 64u * 1024);
  EXPECT_EQ(open(kEp0, FileKind::kRom, 0, true).error(), Errno(EACCES));
  EXPECT_FALSE(sim(kEp0).rom_decode_enabled());
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorTest, StatusIsJsonWithViolations) {
  auto s = nlohmann::json::parse(med_->status_json(view_));
  ASSERT_EQ(s["devices"].size(), 6u);
  for (const auto& d : s["devices"]) {
    EXPECT_EQ(d["violations"], 0);
    EXPECT_EQ(d["power_state"], "D0");
    EXPECT_EQ(d["owner"], "none");
  }
}

// --- views [S6]

class MediatorViewTest : public MediatorFixture {
 protected:
  ViewId add(const std::string& json) {
    std::string err;
    auto v = core::parse_view(json, "test.json", &err);
    EXPECT_TRUE(v.ok()) << err;
    return med_->add_view(*v);
  }
};

TEST_F(MediatorViewTest, SelectionHidesOtherDevices) {
  ViewId v = add(R"({"name": "c1", "devices": ["0000:02:00.0", "1b36:10f1"]})");
  auto devs = med_->devices(v);
  ASSERT_EQ(devs.size(), 2u);
  EXPECT_EQ(devs[0], kEp1);
  EXPECT_EQ(devs[1], kEp2);
  EXPECT_EQ(open(kEp0, FileKind::kConfig, 0, false, kRoot, v).error(), Errno(ENOENT));
  EXPECT_EQ(med_->files(v, kEp0).error(), Errno(ENOENT));
  EXPECT_EQ(med_->stat(v, FileRef{kEp0, FileKind::kConfig, 0, {}}).error(), Errno(ENOENT));
}

TEST_F(MediatorViewTest, HeaderOnlyForUnprivileged) {
  ViewId v = add(R"({"uid": 1000, "config_read": "header"})");
  auto other =
      read(must_open(kEp0, FileKind::kConfig, 0, false, Caller{5, 2000, 2000}, v), 0, 4096);
  EXPECT_EQ(other->size(), 64u);
  auto owner = read(must_open(kEp0, FileKind::kConfig, 0, false, kUser, v), 0, 4096);
  EXPECT_EQ(owner->size(), 4096u) << "the view's uid is privileged";
}

TEST_F(MediatorViewTest, NoneDeniesUnprivilegedReads) {
  ViewId v = add(R"({"config_read": "none"})");
  EXPECT_EQ(open(kEp0, FileKind::kConfig, 0, false, kUser, v).error(), Errno(EACCES));
  EXPECT_TRUE(open(kEp0, FileKind::kConfig, 0, false, kRoot, v).ok());
}

TEST_F(MediatorViewTest, ViewUidMayWriteWhereEnabled) {
  ViewId v = add(R"({"uid": 1000, "bar_access": false})");
  EXPECT_TRUE(open(kEp0, FileKind::kConfig, 0, true, kUser, v).ok());
  EXPECT_EQ(open(kEp0, FileKind::kBar, 0, false, kUser, v).error(), Errno(EACCES));
  EXPECT_EQ(open(kEp0, FileKind::kBar, 0, false, kRoot, v).error(), Errno(EACCES));
  auto n = names(*med_->files(v, kEp0));
  EXPECT_EQ(std::count(n.begin(), n.end(), "resource0"), 0) << "unopenable: not listed";
}

TEST_F(MediatorViewTest, MaskAddressesHidesPhysicalAddresses) {
  ViewId v = add(R"({"mask_addresses": true})");
  auto cfg = read(must_open(kEp0, FileKind::kConfig, 0, false, kUser, v), PCI_BASE_ADDRESS_0, 8);
  uint64_t bar = 0;
  for (size_t i = 0; i < 8; ++i) bar |= uint64_t{(*cfg)[i]} << (8 * i);
  EXPECT_EQ(bar & ~uint64_t{0xf}, 0u);
  EXPECT_EQ(bar & 0xf, 0xcu) << "64-bit prefetchable flags stay";
  std::string res = text(must_open(kEp0, FileKind::kResource, 0, false, kUser, v));
  EXPECT_EQ(res.substr(0, 37), "0x0000000000000000 0x0000000000000000");
}

TEST_F(MediatorViewTest, ClaimsAreSharedAcrossViews) {
  ViewId c1 = add(R"({"name": "c1", "uid": 1000})");
  ViewId c2 = add(R"({"name": "c2", "uid": 2000})");
  HandleId h = must_open(kEp0, FileKind::kBar, 0, false, kUser, c1);
  EXPECT_EQ(open(kEp1, FileKind::kBar, 0, false, Caller{300, 2000, 2000}, c2).error(),
            Errno(EBUSY));
  EXPECT_EQ(text(must_open(kEp0, FileKind::kOwner, 0, false, kUser, c2)),
            "pid=200 uid=1000 view=c1\n");
  med_->release(h);
}

// iommu_groups/ and drivers/ come from an index kept as devices come and go,
// filtered by the view like devices/ (and empty once the view is removed).
TEST_F(MediatorViewTest, GroupsFollowTheViewAndTheDeviceSet) {
  EXPECT_EQ(med_->iommu_groups(view_), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(med_->group_devices(view_, 2), (std::vector<Bdf>{kEp0, kEp1}));
  EXPECT_TRUE(med_->has_group(view_, 3));
  EXPECT_FALSE(med_->has_group(view_, 7));
  EXPECT_TRUE(med_->group_devices(view_, 7).empty());

  ViewId v = add(R"({"name": "c1", "devices": ["0000:01:00.1"]})");
  EXPECT_EQ(med_->iommu_groups(v), (std::vector<int>{2}));
  EXPECT_EQ(med_->group_devices(v, 2), (std::vector<Bdf>{kEp1}));
  EXPECT_TRUE(med_->has_group(v, 2));
  EXPECT_FALSE(med_->has_group(v, 3)) << "a group of devices the view does not select";

  ASSERT_TRUE(sim(kEp1).remove().ok());  // the backend's hot-unplug
  EXPECT_EQ(med_->group_devices(view_, 2), (std::vector<Bdf>{kEp0}));
  EXPECT_FALSE(med_->has_group(v, 2)) << "its only device left";
  EXPECT_TRUE(med_->iommu_groups(v).empty());
  EXPECT_TRUE(med_->has_group(view_, 2)) << "the control: the other view keeps the group";

  med_->remove_view(v);
  EXPECT_TRUE(med_->iommu_groups(v).empty());
  EXPECT_FALSE(med_->has_group(view_, 9));
}

// A Mediator over the simulated set `json` (and the backend, to remove
// devices from), with no views yet.
struct OwnSet {
  backend::sim::SimBackend* backend = nullptr;
  std::unique_ptr<Mediator> mediator;
};
OwnSet mediator_of(const std::string& json) {
  std::string err;
  auto set = backend::sim::load_backend_json(json, &err);
  EXPECT_TRUE(set.ok()) << err;
  if (!set.ok()) return {};
  OwnSet out;
  out.backend = set->get();
  out.mediator = std::make_unique<Mediator>(
      std::shared_ptr<backend::sim::SimBackend>(std::move(*set)), MediatorOptions{});
  return out;
}

TEST(MediatorDriverIndex, DriversFollowTheViewAndTheDeviceSet) {
  auto [raw, m] = mediator_of(R"({"devices": [
    {"bdf": "0000:03:00.0", "vendor": "0x8086", "device": "0x1572", "class": "0x020000", "iommu_group": 9, "driver": "vfio-pci"},
    {"bdf": "0000:03:00.1", "vendor": "0x8086", "device": "0x1572", "class": "0x020000", "iommu_group": 9, "driver": "vfio-pci"},
    {"bdf": "0000:04:00.0", "vendor": "0x8086", "device": "0x1572", "class": "0x020000", "iommu_group": 10, "driver": "ixgbe"},
    {"bdf": "0000:05:00.0", "vendor": "0x8086", "device": "0x1572", "class": "0x020000", "iommu_group": 11}]})");
  ASSERT_TRUE(m);
  const ViewId all = m->add_view(ViewPolicy{});
  const Bdf a = *Bdf::parse("0000:03:00.0"), b = *Bdf::parse("0000:03:00.1");
  EXPECT_EQ(m->drivers(all), (std::vector<std::string>{"ixgbe", "vfio-pci"}));
  EXPECT_EQ(m->driver_devices(all, "vfio-pci"), (std::vector<Bdf>{a, b}));
  EXPECT_TRUE(m->has_driver(all, "ixgbe"));
  EXPECT_FALSE(m->has_driver(all, "nvme"));
  EXPECT_EQ(m->iommu_groups(all), (std::vector<int>{9, 10, 11}));

  std::string perr;
  auto p = core::parse_view(R"({"name": "one", "devices": ["0000:03:00.1"]})", "v.json", &perr);
  ASSERT_TRUE(p.ok()) << perr;
  const ViewId one = m->add_view(*p);
  EXPECT_EQ(m->drivers(one), (std::vector<std::string>{"vfio-pci"}));
  EXPECT_EQ(m->driver_devices(one, "vfio-pci"), (std::vector<Bdf>{b}));
  EXPECT_FALSE(m->has_driver(one, "ixgbe"));

  ASSERT_TRUE(raw->find(b)->remove().ok());
  EXPECT_FALSE(m->has_driver(one, "vfio-pci"));
  EXPECT_EQ(m->driver_devices(all, "vfio-pci"), (std::vector<Bdf>{a}));
}

// Devices are found by address through a hashed index kept beside the
// ordered one that listings walk: with many functions each is found, listings
// stay in order, and a function that leaves is gone from every index.
TEST(MediatorManyDevices, EachIsFoundByAddressAndLeavesEveryIndex) {
  constexpr size_t kCount = 600;
  auto group = [](size_t i) { return 10 + static_cast<int>(i); };
  auto [raw, m] = mediator_of(R"({"devices": [{"bdf": "0000:01:00.0", "count": 600,
      "vendor": "0x1b36", "device": "0x10f0", "class": "0x010802", "iommu_group": 10}]})");
  ASSERT_TRUE(m);
  const ViewId all = m->add_view(ViewPolicy{});
  const std::vector<Bdf> devs = m->devices(all);
  ASSERT_EQ(devs.size(), kCount);
  EXPECT_TRUE(std::is_sorted(devs.begin(), devs.end()));
  std::vector<int> groups(kCount);
  for (size_t i = 0; i < kCount; ++i) groups[i] = group(i);
  EXPECT_EQ(m->iommu_groups(all), groups) << "in order, whatever the index's order";
  for (size_t i = 0; i < kCount; ++i) {
    EXPECT_TRUE(m->has_device(all, devs[i])) << devs[i].str();
    EXPECT_EQ(m->iommu_group(all, devs[i]), group(i)) << devs[i].str();
    EXPECT_EQ(m->group_devices(all, group(i)), std::vector<Bdf>{devs[i]});
  }
  EXPECT_FALSE(m->has_device(all, *Bdf::parse("0000:09:00.0")));

  std::vector<Bdf> kept;
  std::vector<int> kept_groups;
  for (size_t i = 0; i < kCount; ++i) {
    if (i % 3 == 0) {
      ASSERT_TRUE(raw->find(devs[i])->remove().ok());
    } else {
      kept.push_back(devs[i]);
      kept_groups.push_back(group(i));
    }
  }
  EXPECT_EQ(m->devices(all), kept);
  EXPECT_EQ(m->iommu_groups(all), kept_groups);
  for (size_t i = 0; i < kCount; ++i) {
    const bool gone = i % 3 == 0;
    EXPECT_EQ(m->has_device(all, devs[i]), !gone) << devs[i].str();
    EXPECT_EQ(m->stat(all, FileRef{devs[i], FileKind::kVendor, 0, {}}).ok(), !gone)
        << devs[i].str();
    EXPECT_EQ(m->has_group(all, group(i)), !gone) << devs[i].str();
  }
}

}  // namespace
}  // namespace pcifs::test
