// S3 through the mount: the tree is a drop-in for /sys/bus/pci — listings,
// stat sizes and modes, links, the `status` JSON; and S13 errnos of the tree
// itself (writes to read-only files, namespace changes).
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

using nlohmann::json;
using Names = std::set<std::string>;

const Names kAllDevices = {"0000:00:00.0", "0000:00:01.0", "0000:00:02.0",
                           "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"};
const Names kAttributes = {"vendor",           "device",   "class",       "subsystem_vendor",
                           "subsystem_device", "revision", "irq",         "numa_node",
                           "resource",         "config",   "power_state", "reset",
                           "remove",           "owner",    "iommu_group"};

Names with(Names base, std::initializer_list<const char*> more) {
  for (const char* m : more) base.insert(m);
  return base;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 ? st.st_mode : 0;
}

class TreeTest : public SharedMountTest<> {};

TEST_F(TreeTest, RootHasTheSysfsLayout) {
  EXPECT_EQ(list_dir(mnt()), (Names{"devices", "drivers", "iommu_groups", "status"}));
  EXPECT_EQ(mode_of(mnt()), static_cast<mode_t>(S_IFDIR | 0555));
  EXPECT_EQ(mode_of(mnt() + "/status"), static_cast<mode_t>(S_IFREG | 0444));
}

TEST_F(TreeTest, DevicesAreTheDefaultSet) { EXPECT_EQ(list_dir(mnt() + "/devices"), kAllDevices); }

TEST_F(TreeTest, DeviceDirectoriesListExactlyTheirFiles) {
  EXPECT_EQ(list_dir(dev("0000:01:00.0")), with(kAttributes, {"resource0", "resource2", "resource4",
                                                              "rom", "doe", "doe_features"}));
  EXPECT_EQ(list_dir(dev("0000:01:00.1")), with(kAttributes, {"resource0"}));
  EXPECT_EQ(list_dir(dev("0000:02:00.0")),
            with(kAttributes, {"resource0", "rom", "doe", "doe.1", "doe_features"}));
  // The host bridge: no BARs, no ROM, no DOE — so none of their files.
  EXPECT_EQ(list_dir(dev("0000:00:00.0")), kAttributes);
}

TEST_F(TreeTest, EveryListedEntryStatsAsItsType) {
  for (const auto& b : kAllDevices) {
    for (const auto& name : list_dir(dev(b))) {
      const mode_t m = mode_of(dev(b) + "/" + name);
      if (name == "iommu_group" || name == "driver") {
        EXPECT_TRUE(S_ISLNK(m)) << b << "/" << name;
      } else if (name == "doe_features") {
        EXPECT_TRUE(S_ISDIR(m)) << b << "/" << name;
      } else {
        EXPECT_TRUE(S_ISREG(m)) << b << "/" << name << " mode " << std::oct << m;
      }
    }
  }
}

TEST_F(TreeTest, ModesAreTrue) {
  const std::string d = dev();
  struct Want {
    const char* name;
    mode_t mode;
  };
  for (const Want& w :
       {Want{"vendor", 0444}, Want{"resource", 0444}, Want{"config", 0644}, Want{"resource0", 0600},
        Want{"resource4", 0600}, Want{"rom", 0444}, Want{"doe", 0666}, Want{"power_state", 0644},
        Want{"reset", 0200}, Want{"remove", 0200}, Want{"owner", 0444}}) {
    EXPECT_EQ(mode_of(d + "/" + w.name), static_cast<mode_t>(S_IFREG | w.mode)) << w.name;
  }
  EXPECT_EQ(mode_of(d), static_cast<mode_t>(S_IFDIR | 0555));
  struct stat st {};
  ASSERT_EQ(stat((d + "/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);  // the default view: files owned by root
}

// Every listed regular file opens for someone: root with the access its mode
// gives (a file nobody can open would not be listed).
TEST_F(TreeTest, EveryListedFileOpensForRoot) {
  for (const auto& b : kAllDevices) {
    for (const auto& name : list_dir(dev(b))) {
      const std::string p = dev(b) + "/" + name;
      const mode_t m = mode_of(p);
      if (!S_ISREG(m)) continue;
      const int flags = (m & 0444) && (m & 0222) ? O_RDWR : (m & 0444) ? O_RDONLY : O_WRONLY;
      ASSERT_TRUE(wait_handed_over(dev(b)));  // a BAR open claims: closed, it is handed over
      EXPECT_EQ(open_errno(p, flags), 0) << p;
    }
  }
}

TEST_F(TreeTest, StatSizesAreTrue) {
  struct Want {
    const char* bdf;
    const char* name;
    off_t size;
  };
  for (const Want& w :
       {Want{"0000:01:00.0", "config", 4096}, Want{"0000:00:00.0", "config", 256},
        Want{"0000:01:00.0", "resource0", 1 << 20}, Want{"0000:01:00.0", "resource2", 64 << 10},
        Want{"0000:01:00.0", "resource4", 256}, Want{"0000:01:00.0", "rom", 64 << 10},
        Want{"0000:02:00.0", "rom", 1 << 20}, Want{"0000:01:00.0", "vendor", 4096},
        Want{"0000:01:00.0", "doe", 0}}) {
    struct stat st {};
    ASSERT_EQ(stat((dev(w.bdf) + "/" + w.name).c_str(), &st), 0) << w.bdf << "/" << w.name;
    EXPECT_EQ(st.st_size, w.size) << w.bdf << "/" << w.name;
  }
  // A file nobody can open is not listed: 01:00.0 has no BAR1 or BAR3.
  struct stat st {};
  EXPECT_EQ(stat((dev() + "/resource1").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(TreeTest, AttributesAreSysfsText) {
  EXPECT_EQ(read_text(dev() + "/vendor"), "0x1b36\n");
  EXPECT_EQ(read_text(dev() + "/device"), "0x10f0\n");
  EXPECT_EQ(read_text(dev() + "/class"), "0x050210\n");
  EXPECT_EQ(read_text(dev() + "/subsystem_vendor"), "0x1b36\n");
  EXPECT_EQ(read_text(dev() + "/subsystem_device"), "0x0001\n");
  EXPECT_EQ(read_text(dev() + "/revision"), "0x01\n");
  EXPECT_EQ(read_text(dev() + "/irq"), "11\n");
  EXPECT_EQ(read_text(dev("0000:02:00.0") + "/device"), "0x10f2\n");
  EXPECT_EQ(read_text(dev() + "/power_state"), "D0\n");
  EXPECT_EQ(read_text(dev() + "/owner"), "none\n");
}

TEST_F(TreeTest, ResourceIsSysfsFormat) {
  const std::string text = read_text(dev() + "/resource");
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_GE(lines.size(), 7u) << text;  // six BARs and the ROM
  char start[32], end[32], flags[32];
  ASSERT_EQ(std::sscanf(lines[0].c_str(), "%31s %31s %31s", start, end, flags), 3) << lines[0];
  EXPECT_STREQ(start, "0x0000008000000000");
  EXPECT_STREQ(end, "0x00000080000fffff");
  ASSERT_EQ(std::sscanf(lines[2].c_str(), "%31s %31s", start, end), 2);
  EXPECT_STREQ(start, "0x00000000fe000000");
  EXPECT_STREQ(end, "0x00000000fe00ffff");
  EXPECT_EQ(lines[1].rfind("0x0000000000000000 0x0000000000000000", 0), 0u) << lines[1];
  ASSERT_EQ(std::sscanf(lines[6].c_str(), "%31s %31s", start, end), 2);  // the ROM
  EXPECT_STREQ(start, "0x00000000fe010000");
}

TEST_F(TreeTest, IommuGroupLinkResolvesToTheGroupDirectory) {
  EXPECT_EQ(read_link(dev() + "/iommu_group"), "../../iommu_groups/2");
  struct stat st {};
  EXPECT_EQ(stat((dev() + "/iommu_group").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(list_dir(mnt() + "/iommu_groups"), (Names{"0", "1", "2", "3", "4"}));
  EXPECT_EQ(list_dir(mnt() + "/iommu_groups/2/devices"), (Names{"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_EQ(list_dir(mnt() + "/iommu_groups/3/devices"), (Names{"0000:02:00.0"}));
  EXPECT_EQ(read_link(mnt() + "/iommu_groups/2/devices/0000:01:00.1"),
            "../../../devices/0000:01:00.1");
  EXPECT_EQ(stat((mnt() + "/iommu_groups/2/devices/0000:01:00.1/vendor").c_str(), &st), 0);
  EXPECT_EQ(read_text(mnt() + "/iommu_groups/3/devices/0000:02:00.0/device"), "0x10f2\n");
  // Looked up by name, not found by listing: a device of another group, a
  // name that is no BDF, or one written another way is not there; nor is a
  // group written another way (or past int), or one no device is in.
  for (const char* p :
       {"/iommu_groups/3/devices/0000:01:00.0", "/iommu_groups/3/devices/0000:02:00",
        "/iommu_groups/3/devices/0000:02:00.00", "/devices/0000:02:00.0x", "/devices/0000:77:00.0",
        "/iommu_groups/02", "/iommu_groups/+2", "/iommu_groups/ 2", "/iommu_groups/-1",
        "/iommu_groups/4294967298", "/iommu_groups/5", "/iommu_groups/2x", "/drivers/vfio-pci"}) {
    errno = 0;
    EXPECT_EQ(lstat((mnt() + p).c_str(), &st), -1) << p;
    EXPECT_EQ(errno, ENOENT) << p;
  }
}

TEST_F(TreeTest, NoDriverLinkWhereNoDriverIsBound) {
  for (const auto& b : kAllDevices) {
    struct stat st {};
    EXPECT_EQ(lstat((dev(b) + "/driver").c_str(), &st), -1) << b;
    EXPECT_EQ(errno, ENOENT);
  }
  EXPECT_TRUE(list_dir(mnt() + "/drivers").empty());
}

TEST_F(TreeTest, DoeFeaturesAreListed) {
  EXPECT_EQ(list_dir(dev() + "/doe_features"), (Names{"0001:00", "1e98:02", "1b36:01"}));
  EXPECT_EQ(read_text(dev() + "/doe_features/0001:00"), "0001:00\n");
}

TEST_F(TreeTest, StatusIsJsonWithEveryDevice) {
  const json s = status_of(mnt());
  ASSERT_TRUE(s.is_object()) << read_text(mnt() + "/status");
  ASSERT_TRUE(s.contains("devices") && s["devices"].is_array());
  Names seen;
  for (const auto& d : s["devices"]) {
    seen.insert(d.value("bdf", ""));
    EXPECT_EQ(d.value("power_state", ""), "D0") << d.dump();
    EXPECT_TRUE(d.contains("owner")) << d.dump();
    EXPECT_TRUE(d.contains("open_handles") && d["open_handles"].is_number()) << d.dump();
    EXPECT_TRUE(d.contains("counters") && d["counters"].is_object()) << d.dump();
    ASSERT_TRUE(d.contains("violations") && d["violations"].is_number()) << d.dump();
    EXPECT_EQ(d["violations"].get<uint64_t>(), 0u) << d.dump();
  }
  EXPECT_EQ(seen, kAllDevices);
}

TEST_F(TreeTest, StatusCountsOpenHandles) {
  auto handles = [&](const char* bdf) {
    return device_status(status_of(mnt()), bdf).value("open_handles", -1);
  };
  const int before = handles("0000:01:00.0"), other = handles("0000:02:00.0");
  ASSERT_GE(before, 0);
  {
    Fd a(dev() + "/config", O_RDONLY), b(dev() + "/vendor", O_RDONLY);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(handles("0000:01:00.0"), before + 2);
    EXPECT_EQ(handles("0000:02:00.0"), other);  // control: another device is unaffected
  }
  EXPECT_TRUE(eventually([&] { return handles("0000:01:00.0") == before; }));
}

TEST_F(TreeTest, StatusCountsConfigReads) {
  auto reads = [&] {
    return device_status(status_of(mnt()), "0000:02:00.0")["counters"].value("config_reads", -1);
  };
  const int before = reads();
  ASSERT_GE(before, 0);
  ASSERT_EQ(pread_file(dev("0000:02:00.0") + "/config", 4, 0).n, 4);
  EXPECT_GT(reads(), before);
}

// S13: read-only and write-only files refuse the other direction; the tree
// itself cannot be changed.
TEST_F(TreeTest, ErrnosOfTheTree) {
  EXPECT_EQ(open_errno(dev() + "/vendor", O_WRONLY), EACCES);
  EXPECT_EQ(open_errno(dev() + "/owner", O_WRONLY), EACCES);
  EXPECT_EQ(open_errno(dev() + "/resource", O_RDWR), EACCES);
  EXPECT_EQ(open_errno(dev() + "/reset", O_RDONLY), EACCES);
  EXPECT_EQ(open_errno(mnt() + "/status", O_WRONLY), EACCES);
  EXPECT_EQ(open_errno(dev() + "/no_such_file", O_RDONLY), ENOENT);
  EXPECT_EQ(open_errno(mnt() + "/devices/0000:09:00.0/config", O_RDONLY), ENOENT);
  // Changing the namespace is a policy refusal (sysfs says EACCES/EPERM too),
  // not ENOSYS.
  auto refused = [](int rc) {
    const int e = rc == 0 ? 0 : errno;
    return e == EACCES || e == EPERM ? 0 : e;
  };
  const int create = open_errno(dev() + "/new_file", O_CREAT | O_WRONLY);
  EXPECT_TRUE(create == EACCES || create == EPERM) << "create: " << strerror(create);
  EXPECT_EQ(refused(mkdir((dev() + "/d").c_str(), 0755)), 0) << "mkdir";
  EXPECT_EQ(refused(unlink((dev() + "/vendor").c_str())), 0) << "unlink";
  EXPECT_EQ(refused(rmdir((dev() + "/doe_features").c_str())), 0) << "rmdir";
  EXPECT_EQ(refused(rename((dev() + "/vendor").c_str(), (dev() + "/v2").c_str())), 0) << "rename";
  EXPECT_EQ(refused(symlink("x", (dev() + "/l").c_str())), 0) << "symlink";
  EXPECT_EQ(refused(chmod((dev() + "/vendor").c_str(), 0777)), 0) << "chmod";
  // Control: the files are still there and readable.
  EXPECT_EQ(read_text(dev() + "/vendor"), "0x1b36\n");
}

// --- views and device sets change what is listed.
struct HeaderNoBarsView {
  static std::vector<std::string> args() {
    static TempFile view(R"({"config_read": "header", "bar_access": false, "name": "c1"})");
    return {"--view=" + view.path()};
  }
};

// A file nobody in the view can open is not listed: no BAR files without
// bar_access, no rom unless config_read is full. (The default view above is
// the control: it lists both.)
class TreeViewTest : public SharedMountTest<HeaderNoBarsView> {};

TEST_F(TreeViewTest, UnopenableFilesAreNotListed) {
  const Names names = list_dir(dev());
  ASSERT_TRUE(names.count("config")) << "the listing is empty";
  for (const char* f : {"resource0", "resource2", "resource4", "rom"}) {
    EXPECT_EQ(names.count(f), 0u) << f;
    struct stat st {};
    EXPECT_EQ(stat((dev() + "/" + f).c_str(), &st), -1) << f;
  }
}

struct TraceLog {
  static std::vector<std::string> args() { return {"--log-level=trace"}; }
};

// A name no directory of its kind can ever have (lspci asks every device for
// `label` and `of_node`) is looked up once, then answered by the kernel's
// cache; a name that may come later (`driver`: a function can be bound at any
// time) reaches the daemon every time: the control, in the same run. The
// daemon's trace log counts the lookups that reached it.
class TreeLookupTest : public SharedMountTest<TraceLog> {};

TEST_F(TreeLookupTest, AbsentForGoodIsAskedOnceWhatMayComeEveryTime) {
  const std::vector<std::string> paths = {dev() + "/label", dev() + "/of_node", mnt() + "/slots",
                                          dev() + "/driver"};
  for (int round = 0; round < 3; ++round) {
    for (const auto& p : paths) {
      struct stat st {};
      errno = 0;
      EXPECT_EQ(stat(p.c_str(), &st), -1) << p;
      EXPECT_EQ(errno, ENOENT) << p;
    }
  }
  const std::string log = d().log();
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("/label: absent for good"), 1u) << log;
  EXPECT_EQ(count("/of_node: absent for good"), 1u) << log;
  EXPECT_EQ(count("/slots: absent for good"), 1u) << log;
  EXPECT_EQ(count("/driver: ENOENT"), 3u) << log;
  // Names that exist are unaffected.
  EXPECT_EQ(read_text(dev() + "/vendor"), "0x1b36\n");
}

// A listing carries each entry's attributes (READDIRPLUS on every page, not
// only the first): lspci lists devices/ and then opens devices/B/config for
// each B, `ls -l` stats what it listed, and neither needs a LOOKUP for a name
// it was just given. The control, in the same run: a name that was not listed
// is looked up. The daemon's trace log counts the lookups that reached it. A
// mount of its own, on which nothing was listed before (SharedMountTest lists
// every device directory to settle DOE), of a set whose devices/ takes several
// READDIRPLUS pages (about 190 entries fit in one).
TEST(TreeListingTest, AListedNameNeedsNoLookup) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  TempFile set(R"({"devices": [{"bdf": "0000:01:00.0", "count": 512,
      "vendor": "0x1b36", "device": "0x10f0", "class": "0x010802", "iommu_group": 10}]})");
  Daemon d({"--backend=sim:" + set.path(), "--log-level=trace"});
  ASSERT_TRUE(d.mounted()) << d.log();
  auto mnt = [&] { return d.mnt(); };
  auto ino_of = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
    return std::to_string(st.st_ino);
  };
  const std::string devices = mnt() + "/devices";
  const std::string devices_ino = ino_of(devices);
  const Names listed = list_dir(devices);
  ASSERT_EQ(listed.size(), 512u);
  for (const auto& b : listed) {
    struct stat st {};
    EXPECT_EQ(lstat((devices + "/" + b).c_str(), &st), 0) << b;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << b;
  }
  const std::string a = devices + "/0000:02:1f.7";  // on the last page
  const std::string a_ino = ino_of(a);
  const Names files = list_dir(a);
  ASSERT_TRUE(files.count("config")) << "listed: " << files.size();
  for (const auto& f : files) {
    struct stat st {};
    EXPECT_EQ(lstat((a + "/" + f).c_str(), &st), 0) << f;
    EXPECT_NE(st.st_mode, 0u) << f;
  }
  // The attributes are a lookup's: the size and mode a forced getattr gives.
  struct stat listed_st {};
  struct statx forced {};
  ASSERT_EQ(lstat((a + "/config").c_str(), &listed_st), 0);
  ASSERT_EQ(
      statx(AT_FDCWD, (a + "/config").c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &forced), 0);
  EXPECT_EQ(listed_st.st_size, static_cast<off_t>(forced.stx_size));
  EXPECT_EQ(listed_st.st_mode, forced.stx_mode);
  EXPECT_EQ(listed_st.st_ino, forced.stx_ino);
  // The control: a directory that was not listed.
  const std::string b = devices + "/0000:01:00.3";
  const std::string b_ino = ino_of(b);
  EXPECT_EQ(read_text(b + "/vendor"), "0x1b36\n");

  const std::string log = d.log();
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("lookup " + devices_ino + "/"), 0u) << "a listed device was looked up";
  EXPECT_EQ(count("lookup " + a_ino + "/"), 0u) << "a listed file was looked up";
  EXPECT_EQ(count("lookup " + b_ino + "/vendor: found"), 1u) << "the control\n" << log;
  EXPECT_EQ(d.stop(), 0) << d.log();
}

struct DriverSet {
  static std::vector<std::string> args() {
    static TempFile set(R"({"devices": [
      {"bdf": "0000:03:00.0", "vendor": "0x8086", "device": "0x1572", "class": "0x020000", "iommu_group": 9, "driver": "vfio-pci"},
      {"bdf": "0000:03:00.1", "vendor": "0x8086", "device": "0x1572", "class": "0x020000", "iommu_group": 9}]})");
    return {"--backend=sim:" + set.path()};
  }
};

// The control for NoDriverLinkWhereNoDriverIsBound: a bound device has the link.
class TreeDriverTest : public SharedMountTest<DriverSet> {};

TEST_F(TreeDriverTest, DriverLinkWhereBound) {
  EXPECT_EQ(read_link(dev("0000:03:00.0") + "/driver"), "../../drivers/vfio-pci");
  struct stat st {};
  EXPECT_EQ(stat((dev("0000:03:00.0") + "/driver").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(list_dir(mnt() + "/drivers"), (Names{"vfio-pci"}));
  EXPECT_EQ(list_dir(mnt() + "/drivers/vfio-pci"), (Names{"0000:03:00.0"}));
  EXPECT_EQ(read_link(mnt() + "/drivers/vfio-pci/0000:03:00.0"), "../../devices/0000:03:00.0");
  EXPECT_EQ(lstat((dev("0000:03:00.1") + "/driver").c_str(), &st), -1);
  errno = 0;
  EXPECT_EQ(lstat((mnt() + "/drivers/vfio-pci/0000:03:00.1").c_str(), &st), -1) << "not bound";
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(list_dir(mnt() + "/iommu_groups/9/devices"), (Names{"0000:03:00.0", "0000:03:00.1"}));
}

}  // namespace
}  // namespace pcifs::testing
