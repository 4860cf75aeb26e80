// SPEC S15 through the real daemon on a sysfs-shaped temp tree
// (--backend=sysfs:DIR), served in two views: hot-plug driven by kernel-format
// uevent datagrams sent to DIR/.pcifs-uevents (the code path netlink feeds on
// a real system), and the driver rule (a bound function is read-only and
// EBUSY for the rest; unbound and pci-stub functions are mediated in full).
//
// Every "nothing happened" check has a sync point: datagrams are handled in
// order by one thread, so once a later announced function shows up, the
// earlier datagrams have been dealt with.
#include <dirent.h>
#include <linux/pci_regs.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdio>
#include <cstring>
#include <set>

#include "fixtures/mount_doe.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

using namespace std::string_literals;

constexpr const char* kBase = "0000:00:00.0";     // present from the start, unbound
constexpr const char* kNew = "0000:01:00.0";      // arrives and leaves
constexpr const char* kBound = "0000:05:00.0";    // bound to e1000e
constexpr const char* kUnbound = "0000:06:00.0";  // no driver
constexpr const char* kStub = "0000:07:00.0";     // bound to pci-stub
constexpr uint64_t kBarLen = 4096;
constexpr uint32_t kMagic = 0xc0ffee42;

// --- small syscall helpers (mount_util.hpp cannot be included beside mount_doe.hpp)

bool eventually(const std::function<bool()>& pred) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::set<std::string> list_dir(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) out.insert(e->d_name);
  closedir(d);
  return out;
}

std::string read_link(const std::string& path) {
  char buf[512] = {};
  const ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// errno of opening `path` (0: it opened, and was closed again).
int open_errno(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

class Fd {
 public:
  Fd(const std::string& path, int flags) : fd_(open(path.c_str(), flags)), err_(errno) {}
  explicit Fd(int fd) : fd_(fd), err_(errno) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  bool ok() const { return fd_ >= 0; }
  int get() const { return fd_; }
  int err() const { return ok() ? 0 : err_; }

 private:
  int fd_;
  int err_;
};

// A little-endian register through an fd: the value, or the errno.
struct Reg {
  uint64_t value = 0;
  ssize_t n = -1;
  int err = 0;
};
Reg reg_get(int fd, off_t off, size_t width) {
  uint8_t b[8] = {};
  Reg r;
  r.n = pread(fd, b, width, off);
  r.err = r.n < 0 ? errno : 0;
  for (ssize_t i = 0; i < r.n && i < 8; ++i) r.value |= uint64_t{b[i]} << (8 * i);
  return r;
}
Reg reg_put(int fd, off_t off, size_t width, uint64_t v) {
  uint8_t b[8] = {};
  for (size_t i = 0; i < width && i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  Reg r;
  r.n = pwrite(fd, b, width, off);
  r.err = r.n < 0 ? errno : 0;
  return r;
}

// A function with one 4 KiB memory BAR (memory decode on), a ROM, `reset`,
// its own IOMMU group, and (bound ones) a DOE capability.
FakeFunction function(const std::string& bdf, uint16_t device,
                      std::optional<std::string> driver = std::nullopt) {
  FakeFunction f;
  f.bdf = bdf;
  f.config = make_config(0x1b36, device, 0x020000);
  f.config[PCI_COMMAND] = PCI_COMMAND_MEMORY;
  if (driver) put_le(f.config, 0x100, PCI_EXT_CAP_ID_DOE | (1u << 16), 4);
  const uint64_t base = 0xfe000000 + uint64_t{device} * 0x10000;
  f.resources.resize(7);
  f.resources[0] = {base, base + kBarLen - 1, backend::kResourceMem};
  f.resources[6] = {base + 0x8000, base + 0x87ff,
                    backend::kResourceMem | backend::kResourceReadonly};
  f.bar_files[0] = kBarLen;
  std::vector<uint8_t> rom(0x800, 0);
  rom[0] = 0x55;
  rom[1] = 0xaa;
  f.rom = rom;
  f.reset_file = true;
  f.driver = std::move(driver);
  f.iommu_group = device;
  return f;
}

// The datagram lib/kobject_uevent.c multicasts for a PCI function.
std::string uevent(const std::string& action, const std::string& bdf,
                   const std::string& subsystem = "pci") {
  const std::string path = "/devices/pci0000:00/" + bdf;
  std::string d = action + "@" + path + '\0';
  for (const std::string& f :
       {"ACTION=" + action, "DEVPATH=" + path, "SUBSYSTEM=" + subsystem, "PCI_CLASS=20000"s,
        "PCI_ID=1B36:0001"s, "PCI_SLOT_NAME=" + bdf, "SEQNUM=77"s}) {
    d += f + '\0';
  }
  return d;
}

class HotplugTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    tree_.add(function(kBase, 0));
    tree_.add(function(kBound, 5, "e1000e"));
    tree_.add(function(kUnbound, 6));
    tree_.add(function(kStub, 7, "pci-stub"));
    for (auto* m : {&m1_, &m2_}) {
      char dir[] = "/tmp/pcifs-mnt-XXXXXX";
      ASSERT_NE(mkdtemp(dir), nullptr);
      *m = dir;
    }
    v1_ = write_view_file(R"({"name": "one", "mountpoint": ")" + m1_ + "\"}");
    v2_ = write_view_file(R"({"name": "two", "mountpoint": ")" + m2_ + "\"}");
    d_ = std::make_unique<Daemon>(std::vector<std::string>{"--backend=sysfs:" + tree_.root(),
                                                           "--view=" + v1_, "--view=" + v2_},
                                  false, std::vector<std::string>{m1_, m2_});
    ASSERT_TRUE(d_->mounted()) << d_->log();
  }
  void TearDown() override {
    if (d_) {
      const bool alive = d_->alive();
      const std::string log = d_->log();
      EXPECT_TRUE(alive) << "the daemon died during the test\n" << log;
      EXPECT_EQ(d_->stop(), 0) << log;
      EXPECT_EQ(log.find("hot-plug off"), std::string::npos) << log;
    }
    for (auto& m : {m1_, m2_}) rmdir(m.c_str());
    for (auto& v : {v1_, v2_}) unlink(v.c_str());
  }

  void send(const std::string& datagram) {
    const std::string path = tree_.root() + "/.pcifs-uevents";
    Fd s(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    ASSERT_LT(path.size(), sizeof a.sun_path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(sendto(s.get(), datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&a),
                     sizeof a),
              static_cast<ssize_t>(datagram.size()))
        << path << ": " << strerror(errno);
  }
  bool listed(const std::string& m, const std::string& bdf) const {
    return list_dir(m + "/devices").count(bdf) == 1;
  }
  bool listed_everywhere(const std::string& bdf) const {
    return listed(m1_, bdf) && listed(m2_, bdf);
  }
  bool listed_nowhere(const std::string& bdf) const {
    return !listed(m1_, bdf) && !listed(m2_, bdf);
  }
  // Announces a new function and waits until every view shows it: after
  // that, every datagram sent before has been handled.
  void sync_with(const std::string& bdf, uint16_t device) {
    tree_.add(function(bdf, device));
    send(uevent("add", bdf));
    ASSERT_TRUE(eventually([&] { return listed_everywhere(bdf); })) << d_->log();
  }
  std::string file(const std::string& m, const std::string& bdf, const std::string& name) const {
    return m + "/devices/" + bdf + "/" + name;
  }

  SysfsTree tree_;  // outlives the daemon (TearDown stops it first)
  std::string m1_, m2_, v1_, v2_;
  std::unique_ptr<Daemon> d_;
};

TEST_F(HotplugTest, AnAnnouncedArrivalAppearsInEveryView) {
  EXPECT_TRUE(listed_everywhere(kBase));
  EXPECT_TRUE(listed_nowhere(kNew));
  tree_.add(function(kNew, 1));
  send(uevent("add", kNew));
  ASSERT_TRUE(eventually([&] { return listed_everywhere(kNew); })) << d_->log();
  for (const auto& m : {m1_, m2_}) {
    EXPECT_EQ(read_text(file(m, kNew, "device")), "0x0001\n") << m;
    auto cfg = pread_file(file(m, kNew, "config"), 4, 0);
    EXPECT_EQ(le32(cfg.data), 0x00011b36u) << m;
  }
  const std::string lspci =
      run_capture("lspci -A linux-sysfs -O sysfs.path=" + m2_ + " -n -s " + kNew);
  if (!lspci.empty()) {  // pciutils installed: it sees the new function too
    EXPECT_NE(lspci.find("01:00.0"), std::string::npos) << lspci;
  }
}

TEST_F(HotplugTest, AnAnnouncedRemovalKillsHandlesAndMappingsInEveryView) {
  tree_.add(function(kNew, 1));
  std::vector<uint8_t> bar0(kBarLen, 0);
  put_le(bar0, 0, kMagic, 4);
  SysfsTree::write(tree_.dir(kNew) + "/resource0", bar0);
  send(uevent("add", kNew));
  ASSERT_TRUE(eventually([&] { return listed_everywhere(kNew); })) << d_->log();

  install_sigbus_handler();
  Fd cfg(file(m1_, kNew, "config"), O_RDONLY);
  Fd cfg_rw(file(m2_, kNew, "config"), O_RDWR);
  ASSERT_TRUE(cfg.ok() && cfg_rw.ok()) << strerror(errno);
  BarMap map(file(m1_, kNew, "resource0"), kBarLen);  // claims the function
  ASSERT_TRUE(map.ok()) << strerror(errno);
  EXPECT_EQ(safe_load32(map.u32(0)), kMagic);  // the tree's BAR file, through the mapping
  EXPECT_EQ(reg_put(map.fd(), 8, 4, 0x12345678).n, 4);
  auto bar_file = SysfsTree::read_file(tree_.dir(kNew) + "/resource0");
  ASSERT_GE(bar_file.size(), 12u);
  EXPECT_EQ(le32(std::string(bar_file.begin(), bar_file.end()), 8), 0x12345678u);

  // Negative control: gone from the tree, but nobody said so: nothing changes.
  tree_.remove(kNew);
  sync_with("0000:02:00.0", 2);
  EXPECT_TRUE(listed_everywhere(kNew));
  EXPECT_EQ(reg_get(cfg.get(), 0, 4).value, 0x00011b36u);

  send(uevent("remove", kNew));
  ASSERT_TRUE(eventually([&] { return listed_nowhere(kNew); })) << d_->log();
  // The daemon drops the device from its listing, then invalidates the
  // kernel's cached entries: a path looked up just before may stat for a
  // moment longer.
  for (const auto& m : {m1_, m2_}) {
    struct stat st {};
    int err = 0;
    EXPECT_TRUE(eventually([&] {
      const bool gone = stat(file(m, kNew, "config").c_str(), &st) == -1;
      err = errno;
      return gone;
    })) << m;
    EXPECT_EQ(err, ENOENT) << m;
  }
  EXPECT_EQ(reg_get(cfg.get(), 0, 4).err, ENODEV);
  EXPECT_EQ(reg_get(cfg_rw.get(), 0, 4).err, ENODEV);
  EXPECT_EQ(reg_put(cfg_rw.get(), PCI_CACHE_LINE_SIZE, 1, 0x10).err, ENODEV);
  EXPECT_EQ(reg_get(map.fd(), 0, 4).err, ENODEV);
  EXPECT_EQ(reg_put(map.fd(), 8, 4, 1).err, ENODEV);
  EXPECT_EQ(in_child([&] { return *map.u32(0) == kMagic ? 0 : 1; }), kDiedOfSigbus);
  EXPECT_FALSE(safe_load32(map.u32(0)));
  EXPECT_TRUE(listed_everywhere(kBase));  // the others stay
  EXPECT_TRUE(d_->alive());
}

// Datagrams that are not a PCI hot-plug event from a believed sender change
// nothing and do not hurt the daemon; the same function's own "add" then
// does (positive control).
TEST_F(HotplugTest, GarbageAndOtherSubsystemsChangeNothing) {
  const std::string other = "0000:03:00.0";
  tree_.add(function(other, 3));
  const std::string good = uevent("add", other);
  send("");
  send("garbage");
  send(std::string(20000, '\xff'));           // longer than any uevent
  send(good.substr(0, good.size() - 1));      // truncated: no final NUL
  send(uevent("add", other, "net"));          // another subsystem
  send(uevent("change", other));              // an action pcifs ignores
  send("libudev\0\xca\xfe\xed\xfe"s + good);  // udev's framing
  send("add@/devices/x\0ACTION=remove\0DEVPATH=/devices/x\0SUBSYSTEM=pci\0"s);
  sync_with("0000:04:00.0", 4);
  EXPECT_TRUE(listed_nowhere(other));
  EXPECT_TRUE(d_->alive());
  send(good);
  EXPECT_TRUE(eventually([&] { return listed_everywhere(other); })) << d_->log();
}

// S15's driver rule, in both views: a function bound to a driver serves its
// attributes and config reads and refuses everything else with EBUSY.
TEST_F(HotplugTest, ABoundFunctionIsReadOnly) {
  for (const auto& m : {m1_, m2_}) {
    const std::string link = read_link(m + "/devices/" + kBound + "/driver");
    EXPECT_NE(link.find("drivers/e1000e"), std::string::npos) << m << ": " << link;
    EXPECT_EQ(read_text(file(m, kBound, "vendor")), "0x1b36\n");
    auto cfg = pread_file(file(m, kBound, "config"), 4, 0);
    EXPECT_EQ(le32(cfg.data), 0x00051b36u) << m;
    EXPECT_EQ(open_errno(file(m, kBound, "config"), O_RDWR), EBUSY) << m;
    EXPECT_EQ(open_errno(file(m, kBound, "resource0"), O_RDWR), EBUSY) << m;
    EXPECT_EQ(open_errno(file(m, kBound, "doe"), O_RDWR), EBUSY) << m;
    EXPECT_EQ(open_errno(file(m, kBound, "power_state"), O_WRONLY), EBUSY) << m;
    EXPECT_EQ(open_errno(file(m, kBound, "reset"), O_WRONLY), EBUSY) << m;
    auto rom = pread_file(file(m, kBound, "rom"), 2, 0);
    EXPECT_EQ(rom.n, -1) << m;
    EXPECT_EQ(rom.err, EBUSY) << m;
  }
  const std::string log = d_->log();
  EXPECT_NE(log.find(std::string(kBound) + ": EBUSY"), std::string::npos) << log;
  EXPECT_NE(log.find("bound to driver e1000e"), std::string::npos) << log;
  // Nothing reached the tree: its config is as it was made.
  EXPECT_EQ(SysfsTree::read_file(tree_.dir(kBound) + "/config"),
            function(kBound, 5, "e1000e").config);
}

// Unbound and pci-stub functions are mediated in full: a config write the
// policy allows reaches the tree's config file, BAR access reaches its BAR file.
TEST_F(HotplugTest, UnboundAndPciStubFunctionsAreMediatedInFull) {
  uint8_t value = 0x10;
  for (const char* bdf : {kUnbound, kStub}) {
    for (const auto& m : {m1_, m2_}) {
      ++value;
      // The previous round's claim ended when its files closed: handed over first.
      ASSERT_TRUE(wait_handed_over(m + "/devices/" + bdf));
      Fd cfg(file(m, bdf, "config"), O_RDWR);
      ASSERT_TRUE(cfg.ok()) << bdf << " " << m << ": " << strerror(cfg.err());
      EXPECT_EQ(reg_put(cfg.get(), PCI_CACHE_LINE_SIZE, 1, value).n, 1);
      EXPECT_EQ(SysfsTree::read_file(tree_.dir(bdf) + "/config").at(PCI_CACHE_LINE_SIZE), value)
          << bdf << " " << m;
      Fd bar(file(m, bdf, "resource0"), O_RDWR);
      ASSERT_TRUE(bar.ok()) << bdf << " " << m << ": " << strerror(bar.err());
      EXPECT_EQ(reg_put(bar.get(), 16, 4, 0xa0b0c000u + value).n, 4);
      auto b = SysfsTree::read_file(tree_.dir(bdf) + "/resource0");
      EXPECT_EQ(le32(std::string(b.begin(), b.end()), 16), 0xa0b0c000u + value) << bdf;
      EXPECT_EQ(reg_get(bar.get(), 16, 4).value, 0xa0b0c000u + value) << bdf;
    }
  }
  const std::string log = d_->log();
  EXPECT_EQ(log.find(std::string(kUnbound) + ": EBUSY"), std::string::npos) << log;
  EXPECT_EQ(log.find(std::string(kStub) + ": EBUSY"), std::string::npos) << log;
  EXPECT_EQ(log.find("bound to driver pci-stub"), std::string::npos) << log;
}

// A driver binding while pcifs' user holds the function: the user's handles
// die (the driver owns it now) and the function comes back read-only; unbinding
// gives a fully mediated function again.
TEST_F(HotplugTest, BindingADriverRevokesAndUnbindingRestores) {
  Fd bar(file(m1_, kUnbound, "resource0"), O_RDWR);
  ASSERT_TRUE(bar.ok()) << strerror(bar.err());
  ASSERT_EQ(reg_get(bar.get(), 0, 4).n, 4);
  const std::string link = tree_.dir(kUnbound) + "/driver";
  std::filesystem::create_directories(tree_.root() + "/drivers/nvme");
  std::filesystem::create_directory_symlink("../../../bus/pci/drivers/nvme", link);
  send(uevent("bind", kUnbound));
  ASSERT_TRUE(eventually([&] { return reg_get(bar.get(), 0, 4).err == ENODEV; })) << d_->log();
  ASSERT_TRUE(eventually([&] { return listed_everywhere(kUnbound); }));
  for (const auto& m : {m1_, m2_}) {
    EXPECT_EQ(open_errno(file(m, kUnbound, "resource0"), O_RDWR), EBUSY) << m;
    EXPECT_EQ(le32(pread_file(file(m, kUnbound, "config"), 4, 0).data), 0x00061b36u) << m;
  }
  std::filesystem::remove(link);
  send(uevent("unbind", kUnbound));
  EXPECT_TRUE(eventually([&] { return open_errno(file(m2_, kUnbound, "resource0"), O_RDWR) == 0; }))
      << d_->log();
}

}  // namespace
}  // namespace pcifs::testing
