// S9 through the mount: power_state reads never wake the device; writes need
// the claim; D3hot lets config through and fails BAR/DOE (EIO, mmap SIGBUS);
// D3cold serves config from the snapshot and touches nothing; back in D0
// config is restored and mappings fault in afresh; a "wake" view brings the
// device up for the claim holder. Device: 0000:01:00.0 (No_Soft_Reset=1).
#include "fixtures/mount_doe.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kBdf = "0000:01:00.0";
constexpr off_t kCacheLine = 0x0c;  // PCI_CACHE_LINE_SIZE: a plain RW byte

class PowerTest : public MountTest {
 protected:
  std::string path(const char* file) const { return dev(kBdf) + "/" + file; }
  // Through one fd kept open for the test, as a process that holds the file:
  // closing it would end the claim, whose hand-over brings the device to D0.
  IoResult set_power(const std::string& state) {
    if (power_fd_ < 0) power_fd_ = ::open(path("power_state").c_str(), O_WRONLY);
    IoResult r;
    r.n = ::pwrite(power_fd_, state.data(), state.size(), 0);
    r.err = r.n < 0 ? errno : 0;
    return r;
  }
  void TearDown() override {
    if (power_fd_ >= 0) ::close(power_fd_);
    MountTest::TearDown();
  }
  int power_fd_ = -1;
  std::string power() const { return read_text(path("power_state")); }
  long viol() const { return violations(d_->mnt(), kBdf); }
  uint32_t config32(off_t off) const { return le32(pread_file(path("config"), 4, off).data); }
  int cache_line() const {
    auto r = pread_file(path("config"), 1, kCacheLine);
    return r.n == 1 ? static_cast<uint8_t>(r.data[0]) : -1;
  }
};

TEST_F(PowerTest, ReadingPowerStateNeverWakes) {
  ASSERT_EQ(set_power("D3hot").n, 5);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(power(), "D3hot\n");
  EXPECT_EQ(as_nobody([&] { return read_text(path("power_state")) == "D3hot\n" ? 0 : 1; }), 0);
  (void)read_text(d_->mnt() + "/status");
  (void)read_text(path("owner"));
  EXPECT_EQ(device_status(d_->mnt(), kBdf)["power_state"], "D3hot");
  EXPECT_EQ(power(), "D3hot\n");
  // Control: the file does follow the state.
  ASSERT_EQ(set_power("D0\n").n, 3);
  EXPECT_EQ(power(), "D0\n");
  EXPECT_EQ(viol(), 0);
}

TEST_F(PowerTest, OnlyPowerStateNamesAreAccepted) {
  for (const char* bad : {"D1", "D2", "D3", "d0", "D3HOT", "D3hotx", " D0", "D0\n\n", "0"}) {
    auto r = set_power(bad);
    EXPECT_EQ(r.n, -1) << '"' << bad << '"';
    EXPECT_EQ(r.err, EINVAL) << '"' << bad << '"' << ": " << strerror(r.err);
  }
  EXPECT_EQ(power(), "D0\n");
  // Control: each valid name, with and without the newline echo adds.
  for (const char* good : {"D3hot", "D0\n", "D3cold\n", "D0"}) {
    auto r = set_power(good);
    EXPECT_EQ(r.n, static_cast<ssize_t>(strlen(good))) << good << ": " << strerror(r.err);
  }
  EXPECT_EQ(power(), "D0\n");
}

TEST_F(PowerTest, WritingNeedsTheClaim) {
  int held[2], done[2];
  ASSERT_EQ(pipe(held), 0);
  ASSERT_EQ(pipe(done), 0);
  const std::string bar = path("resource0");
  const pid_t holder = fork();
  if (holder == 0) {
    const int fd = open(bar.c_str(), O_RDWR);  // claims group 2
    (void)!::write(held[1], fd >= 0 ? "y" : "n", 1);
    char c;
    (void)!::read(done[0], &c, 1);
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(held[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto r = set_power("D3hot");
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, EBUSY);
  // The whole IOMMU group: the sibling function too.
  r = write_file(dev("0000:01:00.1") + "/power_state", "D3hot");
  EXPECT_EQ(r.err, EBUSY);
  EXPECT_EQ(power(), "D0\n");
  (void)!::write(done[1], "x", 1);
  int st = 0;
  waitpid(holder, &st, 0);
  ASSERT_TRUE(wait_unclaimed(dev(kBdf)));  // the holder's claim ended: its group is cleaned
  // Control: with the holder gone the same write works.
  r = set_power("D3hot");
  EXPECT_EQ(r.n, 5) << strerror(r.err);
  EXPECT_EQ(power(), "D3hot\n");
  for (int fd : {held[0], held[1], done[0], done[1]}) close(fd);
}

TEST_F(PowerTest, D3hotPassesConfigAndFailsBarAndDoe) {
  install_sigbus_handler();
  BarMap map(path("resource0"), 1 << 20);  // this process holds the claim
  ASSERT_TRUE(map.ok());
  // Control: in D0 every path works.
  EXPECT_EQ(touch_id_in_child(map), 0);
  EXPECT_EQ(le32(pread_file(path("resource0"), 4, kRegId, O_RDWR).data), kIdValue);
  DoeFile doe(path("doe"));
  ASSERT_TRUE(doe.exchange(discovery_request(0)));

  ASSERT_EQ(set_power("D3hot").n, 5);
  EXPECT_EQ(config32(0), 0x10f01b36u);
  ASSERT_EQ(write_file(path("config"), std::string(1, '\x30'), kCacheLine).n, 1);
  EXPECT_EQ(cache_line(), 0x30);
  auto r = pread_file(path("resource0"), 4, kRegId, O_RDWR);
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, EIO);
  r = write_file(path("resource0"), le_bytes(1, 8), kRegScratch0);
  EXPECT_EQ(r.err, EIO);
  EXPECT_EQ(touch_id_in_child(map), kDiedOfSigbus);
  EXPECT_FALSE(safe_load32(map.u32(kRegId))) << "a mapping touched in D3hot must SIGBUS";
  auto w = doe.write_obj(discovery_request(0));
  EXPECT_EQ(w.n, -1);
  EXPECT_EQ(w.err, EIO);
  EXPECT_EQ(power(), "D3hot\n");

  // Back in D0: the same mapping in the same process faults in afresh.
  ASSERT_EQ(set_power("D0").n, 2);
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  EXPECT_EQ(touch_id_in_child(map), 0);
  EXPECT_EQ(cache_line(), 0x30) << "a write made in D3hot is kept";
  EXPECT_TRUE(doe.exchange(discovery_request(0)));
  EXPECT_EQ(viol(), 0);
}

TEST_F(PowerTest, D3coldServesConfigFromTheSnapshotAndRestoresIt) {
  install_sigbus_handler();
  BarMap map(path("resource0"), 1 << 20);
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(write_file(path("config"), std::string(1, '\x20'), kCacheLine).n, 1);
  ASSERT_EQ(write_file(path("resource0"), le_bytes(0x1234, 8), kRegScratch0).n, 8);
  const uint32_t command = config32(4) & 0xffff;
  ASSERT_NE(command & 0x2, 0u) << "memory decode on in D0";
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);

  ASSERT_EQ(set_power("D3cold").n, 6);
  EXPECT_EQ(power(), "D3cold\n");
  // The snapshot: what the device held, not the all-ones of an access to a
  // powered-off device (the simulator would also count that as a violation).
  EXPECT_EQ(config32(0), 0x10f01b36u);
  EXPECT_EQ(cache_line(), 0x20);
  const auto full = pread_file(path("config"), 4096, 0);
  EXPECT_EQ(full.n, 4096);
  auto r = write_file(path("config"), std::string(1, '\x40'), kCacheLine);
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, EIO);
  r = pread_file(path("resource0"), 4, kRegId, O_RDWR);
  EXPECT_EQ(r.err, EIO);
  EXPECT_FALSE(safe_load32(map.u32(kRegId)));
  DoeFile doe(path("doe"));
  EXPECT_EQ(doe.write_obj(discovery_request(0)).err, EIO);
  EXPECT_EQ(viol(), 0) << "nothing may touch a device in D3cold";

  ASSERT_EQ(set_power("D0").n, 2);
  EXPECT_EQ(cache_line(), 0x20) << "config restored after power loss";
  EXPECT_EQ(config32(4) & 0xffff, command);
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  EXPECT_EQ(le32(pread_file(path("resource0"), 4, kRegId, O_RDWR).data), kIdValue);
  EXPECT_EQ(viol(), 0);
}

// A view with "low_power_access": "wake" (S6, S9).
class WakeViewTest : public MountTest {
 protected:
  std::vector<std::string> daemon_args() override {
    view_ = write_view_file(R"({"name": "wake", "low_power_access": "wake"})");
    return {"--view=" + view_};
  }
  void TearDown() override {
    MountTest::TearDown();
    if (!view_.empty()) unlink(view_.c_str());
  }
  std::string path(const char* file) const { return dev(kBdf) + "/" + file; }
  std::string view_;
};

TEST_F(WakeViewTest, TheClaimHoldersAccessWakesTheDevice) {
  install_sigbus_handler();
  const int bar = open(path("resource0").c_str(), O_RDWR);  // the claim
  ASSERT_GE(bar, 0);
  ASSERT_EQ(write_file(path("power_state"), "D3hot").n, 5);
  // Control: someone without the claim is not woken for (DOE does not claim).
  const int rc = in_child([&] {
    DoeFile doe(path("doe"));
    return doe.write_obj(discovery_request(0)).err == EIO ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(read_text(path("power_state")), "D3hot\n");
  // The claim holder's BAR read wakes it.
  uint32_t id = 0;
  EXPECT_EQ(pread(bar, &id, 4, kRegId), 4) << strerror(errno);
  EXPECT_EQ(id, kIdValue);
  EXPECT_EQ(read_text(path("power_state")), "D0\n");
  // And a fault through the holder's mapping, from D3cold.
  ASSERT_EQ(write_file(path("power_state"), "D3cold").n, 6);
  void* p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, bar, 0);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_EQ(safe_load32(static_cast<volatile uint32_t*>(p) + kRegId / 4), kIdValue);
  EXPECT_EQ(read_text(path("power_state")), "D0\n");
  munmap(p, 4096);
  close(bar);
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
}

}  // namespace
}  // namespace pcifs::testing
