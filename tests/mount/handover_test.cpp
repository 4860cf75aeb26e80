// Tenant hand-over and DMA through the mount [S11; README "Security"]:
//  - tenant A (a process) enables Bus Master and MSI-X, programs a vector and
//    writes BAR RAM, then exits; tenant B then reads a clean device. The
//    control: while A holds the claim, a reader sees A's state;
//  - a clean daemon exit hands over the claims it ends (a sysfs-shaped tree:
//    its `config` file outlives the daemon, so the test reads what was left);
//  - a real (sysfs) device masters only through a view that allows DMA, and
//    allow_dma in a --view file is refused unless root owns the file alone.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <sys/stat.h>

#include <fstream>

#include "fixtures/mount_fixture.hpp"
#include "fixtures/mount_util.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

constexpr char kEp[] = "0000:02:00.0";  // FLR; MSI-X table at BAR 0 + 0x2000
constexpr off_t kTable = 0x2000, kRam = 0x10000;
constexpr uint64_t kSecret = 0x5ec2e7da7a5ec2e7ull;

uint16_t cap(const std::string& c, uint8_t id) {
  for (auto p = static_cast<uint8_t>(c.at(PCI_CAPABILITY_LIST)); p != 0;
       p = static_cast<uint8_t>(c.at(p + PCI_CAP_LIST_NEXT))) {
    if (static_cast<uint8_t>(c.at(p)) == id) return p;
  }
  return 0;
}
unsigned u16(const std::string& c, size_t off) {
  return static_cast<uint8_t>(c.at(off)) |
         static_cast<unsigned>(static_cast<uint8_t>(c.at(off + 1))) << 8;
}

class HandoverMountTest : public MountTest {
 protected:
  std::string config() { return pread_file(d_->dev(kEp) + "/config", 256, 0).data; }
  uint64_t handovers() {
    auto s = device_status(status_of(d_->mnt()), kEp);
    return s.is_null() ? 0 : s["counters"].value("handovers", uint64_t{0});
  }
};

TEST_F(HandoverMountTest, TheNextTenantReadsACleanDevice) {
  const std::string dev = d_->dev(kEp);
  const std::string c0 = config();
  const uint16_t msix = cap(c0, PCI_CAP_ID_MSIX);
  ASSERT_NE(msix, 0);
  ASSERT_EQ(handovers(), 0u);
  {
    Holder a([&] {  // tenant A: everything a driver would leave behind
      // Raw fds, left open: the child keeps them until the test lets it exit.
      const int cfg = ::open((dev + "/config").c_str(), O_RDWR);
      const int bar = ::open((dev + "/resource0").c_str(), O_RDWR);
      if (cfg < 0 || bar < 0) return 1;
      uint16_t cmd =
          static_cast<uint16_t>(u16(c0, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
      uint16_t flags =
          static_cast<uint16_t>((u16(c0, msix + PCI_MSIX_FLAGS) | PCI_MSIX_FLAGS_ENABLE) &
                                ~unsigned{PCI_MSIX_FLAGS_MASKALL});
      if (reg_put(cfg, PCI_COMMAND, 2, cmd).n != 2) return 2;
      if (reg_put(cfg, msix + PCI_MSIX_FLAGS, 2, flags).n != 2) return 3;
      if (reg_put(bar, kTable, 8, 0xfee00000ull).n != 8) return 4;
      if (reg_put(bar, kRam, 8, kSecret).n != 8) return 5;
      return 0;
    });
    ASSERT_EQ(a.result(), 0);
    const std::string held = config();  // control: A's state is there while A holds it
    EXPECT_TRUE(u16(held, PCI_COMMAND) & PCI_COMMAND_MASTER);
    EXPECT_TRUE(u16(held, msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE);
    EXPECT_EQ(open_errno(dev + "/resource0", O_RDONLY), EBUSY) << "A holds the claim";
  }  // A exits: the kernel releases its files, the claim ends
  ASSERT_TRUE(wait_until([&] { return handovers() == 1; })) << d_->log();
  Fd bar(dev + "/resource0", O_RDWR);  // tenant B
  ASSERT_TRUE(bar.ok()) << strerror(bar.err());
  const std::string c1 = config();
  EXPECT_FALSE(u16(c1, PCI_COMMAND) & PCI_COMMAND_MASTER);
  EXPECT_FALSE(u16(c1, msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(reg_get(bar.get(), kTable, 8).value, 0u);
  EXPECT_EQ(reg_get(bar.get(), kRam, 8).value, 0u);
  EXPECT_EQ(read_text(dev + "/power_state"), "D0\n");
  EXPECT_NE(d_->log().find("handed over: flr reset"), std::string::npos) << d_->log();
}

// --- a real device: a sysfs-shaped tree (its files outlive the daemon)

constexpr char kReal[] = "0000:03:00.0";

class RealDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    FakeFunction f;
    f.bdf = kReal;
    f.config = make_config(0x1af4, 0x1041, 0x020000, 256);  // PM, No_Soft_Reset = 0
    f.config[PCI_COMMAND] = PCI_COMMAND_MEMORY;
    f.resources = {{0xfe000000, 0xfe000fff, backend::kResourceMem}};
    f.bar_files[0] = 0x1000;
    f.iommu_group = 9;
    dir_ = tree_.add(f);
  }
  std::string view_file(const std::string& body, mode_t mode, uid_t owner = 0) {
    char p[] = "/tmp/pcifs-view-XXXXXX";
    const int fd = mkstemp(p);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
    EXPECT_EQ(fchmod(fd, mode), 0);
    EXPECT_EQ(fchown(fd, owner, owner), 0);
    close(fd);
    files_.push_back(p);
    return p;
  }
  void TearDown() override {
    for (const auto& f : files_) unlink(f.c_str());
  }
  uint8_t command_in_tree() { return SysfsTree::read_file(dir_ + "/config").at(PCI_COMMAND); }
  // Sets Bus Master through the mount; returns what the device's config holds.
  uint8_t try_master(Daemon& d) {
    Fd cfg(d.dev(kReal) + "/config", O_RDWR);
    EXPECT_TRUE(cfg.ok()) << d.log();
    EXPECT_EQ(reg_put(cfg.get(), PCI_COMMAND, 1, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER).n, 1);
    return command_in_tree();
  }

  SysfsTree tree_;
  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(RealDeviceTest, BusMasterOnlyWithAllowDma) {
  {
    Daemon d({"--backend=sysfs:" + tree_.root()});
    ASSERT_TRUE(d.mounted()) << d.log();
    EXPECT_FALSE(try_master(d) & PCI_COMMAND_MASTER) << "the default view does not allow DMA";
    EXPECT_NE(d.log().find("does not allow DMA"), std::string::npos) << d.log();
    EXPECT_EQ(d.stop(), 0);
  }
  const std::string v = view_file(R"({"name": "dma", "allow_dma": true})", 0644);
  Daemon d({"--backend=sysfs:" + tree_.root(), "--view=" + v});
  ASSERT_TRUE(d.mounted()) << d.log();
  EXPECT_TRUE(try_master(d) & PCI_COMMAND_MASTER) << "control: granted";
  EXPECT_NE(read_text(d.mnt() + "/status").find("\"allow_dma\": true"), std::string::npos);
  EXPECT_EQ(d.stop(), 0);
}

TEST_F(RealDeviceTest, AllowDmaInAFileOthersCanWriteIsRefused) {
  for (const auto& [mode, owner] : {std::pair<mode_t, uid_t>{0666, 0}, {0644, kNobody}}) {
    const std::string v = view_file(R"({"name": "dma", "allow_dma": true})", mode, owner);
    auto r = run_pcifs({"-f", "--backend=sysfs:" + tree_.root(), "--view=" + v, "/nonexistent"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE((r.out + r.err).find("allow_dma: expected a file owned by root"), std::string::npos)
        << r.out << r.err;
  }
}

TEST_F(RealDeviceTest, ACleanExitHandsOverTheClaimsItEnds) {
  const std::string v = view_file(R"({"name": "dma", "allow_dma": true})", 0644);
  auto d = std::make_unique<Daemon>(
      std::vector<std::string>{"--backend=sysfs:" + tree_.root(), "--view=" + v});
  ASSERT_TRUE(d->mounted()) << d->log();
  const std::string cfg_path = d->dev(kReal) + "/config";
  Holder tenant([&] {
    const int cfg = ::open(cfg_path.c_str(), O_RDWR);  // held open while the daemon stops
    if (reg_put(cfg, PCI_COMMAND, 1, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER).n != 1) return 1;
    return 0;
  });
  ASSERT_EQ(tenant.result(), 0);
  ASSERT_TRUE(command_in_tree() & PCI_COMMAND_MASTER) << "control: set while held";
  EXPECT_EQ(d->signal_and_wait(SIGTERM), 0) << d->log();
  EXPECT_FALSE(command_in_tree() & PCI_COMMAND_MASTER) << d->log();
  EXPECT_TRUE(command_in_tree() & PCI_COMMAND_MEMORY) << "the baseline's decode";
  EXPECT_NE(d->log().find("handed over: pm reset"), std::string::npos) << d->log();
  tenant.release();
  unmount_all_on(d->mnt());
}

}  // namespace
}  // namespace pcifs::testing
