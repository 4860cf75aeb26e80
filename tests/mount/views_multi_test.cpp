// S6.3 through the real mount: one daemon, several views, each its own
// mountpoint; claims [S11] and power states [S9] are shared by all of them. A
// claim taken through one view blocks the IOMMU group through every other
// view (even one that does not show the claimed function), `owner`, `status`
// and the log name the holder with its view, and the group is free once the
// holder is gone. low_power_access follows the view an access goes through
// (extends power_test.cpp, which covers a wake by BAR read and mmap fault).
#include "fixtures/mount_views.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kEp = "0000:01:00.0";     // IOMMU group 2 with kSib
constexpr const char* kSib = "0000:01:00.1";    // same group
constexpr const char* kOther = "0000:02:00.0";  // group 3
constexpr off_t kCacheLine = PCI_CACHE_LINE_SIZE;
constexpr uint32_t kRegId = 0x40, kIdValue = 0x50434946;

class ViewMultiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    d_ = std::make_unique<ViewDaemon>(ViewDaemon::Views{
        {"A", ""},
        {"B", ""},
        {"C", R"("devices": ["0000:01:00.1"])"},
        {"W", R"("uid": 100000, "low_power_access": "wake")"},
        {"D", R"("uid": 100000, "low_power_access": "deny")"},
    });
    ASSERT_TRUE(d_->mounted()) << d_->log();
  }
  void TearDown() override {
    if (!d_) return;
    const bool alive = d_->alive();
    const std::string log = d_->log();
    EXPECT_TRUE(alive) << "the daemon died\n" << log;
    EXPECT_EQ(d_->stop(), 0) << log;
  }
  std::string dev(const std::string& view, const std::string& bdf = kEp) const {
    return d_->dev(view, bdf);
  }
  // errno of opening resource0 of `bdf` through `view` in a child as root (0:
  // it claimed; that claim ends with the child and is waited for).
  int claim_errno(const std::string& view, const std::string& bdf) {
    const int rc = in_child([&] { return open_errno(dev(view, bdf) + "/resource0", O_RDWR); });
    if (rc == 0) {
      EXPECT_TRUE(wait_unclaimed(dev(view, bdf)));
    }
    return rc;
  }
  std::string power(const std::string& view, const std::string& bdf = kEp) const {
    return read_text(dev(view, bdf) + "/power_state");
  }
  std::unique_ptr<ViewDaemon> d_;
};

TEST_F(ViewMultiTest, AClaimThroughOneViewBlocksTheGroupInEveryOther) {
  Holder h([&] { return ::open((dev("A") + "/resource0").c_str(), O_RDWR) >= 0 ? 0 : errno; });
  ASSERT_EQ(h.result(), 0);
  const std::string who = "pid=" + std::to_string(h.pid()) + " uid=0 view=A";
  EXPECT_EQ(claim_errno("B", kSib), EBUSY);
  EXPECT_EQ(claim_errno("B", kEp), EBUSY);
  // A view that does not even show the claimed function shares the group.
  EXPECT_EQ(claim_errno("C", kSib), EBUSY);
  // The other claiming writes: config, power_state, reset.
  EXPECT_EQ(
      in_child([&] { return write_file(dev("B", kSib) + "/config", "\x10", kCacheLine).err; }),
      EBUSY);
  EXPECT_EQ(in_child([&] { return write_file(dev("B", kSib) + "/power_state", "D3hot").err; }),
            EBUSY);
  EXPECT_EQ(in_child([&] { return write_file(dev("B", kEp) + "/reset", "1").err; }), EBUSY);
  EXPECT_EQ(power("B"), "D0\n");
  // Control: another group is free through B meanwhile.
  EXPECT_EQ(claim_errno("B", kOther), 0);
  // Who holds it, seen from every view.
  for (const char* v : {"A", "B"}) {
    EXPECT_EQ(read_text(dev(v, kEp) + "/owner"), who + "\n") << v;
    EXPECT_EQ(device_status(status_of(d_->mnt(v)), kEp).value("owner", ""), who) << v;
  }
  EXPECT_EQ(read_text(dev("C", kSib) + "/owner"), who + "\n");
  EXPECT_TRUE(eventually([&] {
    return d_->log().find("view=B: claimed by " + who) != std::string::npos;
  })) << d_->log();
  // The holder leaves: B can claim.
  h.release();
  EXPECT_TRUE(wait_unclaimed(dev("B")));
  EXPECT_EQ(claim_errno("B", kSib), 0);
}

// The view's uid as the holder, killed: its claim ends for every view.
TEST_F(ViewMultiTest, AKilledHoldersClaimEndsInEveryView) {
  Holder h([&] { return ::open((dev("W") + "/resource0").c_str(), O_RDWR) >= 0 ? 0 : errno; },
           kViewUid);
  ASSERT_EQ(h.result(), 0);
  const std::string who = "pid=" + std::to_string(h.pid()) + " uid=100000 view=W";
  EXPECT_EQ(read_text(dev("B", kSib) + "/owner"), who + "\n");
  EXPECT_EQ(claim_errno("B", kSib), EBUSY);  // root too
  EXPECT_TRUE(eventually([&] {
    return d_->log().find("view=B: claimed by " + who) != std::string::npos;
  })) << d_->log();
  h.kill_now();
  EXPECT_TRUE(wait_unclaimed(dev("B")));
  EXPECT_EQ(claim_errno("B", kSib), 0);
}

TEST_F(ViewMultiTest, PowerStateIsSharedByEveryView) {
  // The writer keeps power_state open: its claim (and the state) lasts until
  // it closes, when the hand-over brings the device back to D0.
  Fd pa(dev("A") + "/power_state", O_WRONLY);
  ASSERT_TRUE(pa.ok());
  ASSERT_EQ(::pwrite(pa.get(), "D3hot", 5, 0), 5);
  for (const char* v : {"A", "B", "W", "D"}) {
    EXPECT_EQ(power(v), "D3hot\n") << v;
    EXPECT_EQ(device_status(status_of(d_->mnt(v)), kEp).value("power_state", ""), "D3hot") << v;
    EXPECT_EQ(power(v, kSib), "D0\n") << v << ": control, the sibling stays in D0";
  }
  EXPECT_EQ(device_status(status_of(d_->mnt("C")), kSib).value("power_state", ""), "D0");
  // Not only the text: a BAR access through B (by the claim holder) fails as in D3hot.
  EXPECT_EQ(pread_file(dev("B") + "/resource0", 4, kRegId, O_RDWR).err, EIO);
  // Back to D0 through B, seen through A.
  ASSERT_EQ(write_file(dev("B") + "/power_state", "D0").n, 2);
  EXPECT_EQ(power("A"), "D0\n");
  pa.reset();
  ASSERT_TRUE(wait_unclaimed(dev("A")));
  EXPECT_EQ(in_child([&] {
              return cfg32(pread_file(dev("A") + "/resource0", 4, kRegId, O_RDWR).data, 0) ==
                             kIdValue
                         ? 0
                         : 1;
            }),
            0);
}

// One holder, two views of the device: "deny" fails its BAR and DOE access
// in D3hot and leaves the device there; "wake" brings it to D0. Steps report
// where they failed.
TEST_F(ViewMultiTest, LowPowerAccessFollowsTheViewOfTheAccess) {
  const int rc = in_child(
      [&] {
        Fd deny(dev("D") + "/resource0", O_RDWR), wake(dev("W") + "/resource0", O_RDWR);
        if (!deny.ok() || !wake.ok()) return 1;
        if (write_file(dev("D") + "/power_state", "D3hot").n != 5) return 2;
        uint32_t id = 0;
        if (pread(deny.get(), &id, 4, kRegId) != -1 || errno != EIO) return 3;
        if (doe_exchange(dev("D") + "/doe", {doe_dw0(1, 0), 3, 0}).err != EIO) return 4;
        if (power("D") != "D3hot\n") return 5;  // deny: not woken, even for the holder
        if (pread(wake.get(), &id, 4, kRegId) != 4 || id != kIdValue) return 6;
        if (power("D") != "D0\n") return 7;  // woken through W, for every view
        return 0;
      },
      kViewUid);
  EXPECT_EQ(rc, 0) << d_->log();
}

// A DOE exchange and a config write of the holder wake the device through a
// "wake" view (README: a config write wakes only from D3cold; in D3hot it
// passes); the same through "deny" fails with EIO.
TEST_F(ViewMultiTest, WakeByDoeAndByConfigWrite) {
  const int rc = in_child(
      [&] {
        Fd bar(dev("W") + "/resource0", O_RDWR);  // the claim
        if (!bar.ok()) return 1;
        if (write_file(dev("W") + "/power_state", "D3hot").n != 5) return 2;
        if (discovery_walk(dev("W") + "/doe").value_or(std::vector<std::string>{}).size() != 3) {
          return 3;
        }
        if (power("W") != "D0\n") return 4;
        if (write_file(dev("W") + "/power_state", "D3cold").n != 6) return 5;
        if (write_file(dev("D") + "/config", "\x20", kCacheLine).err != EIO) return 6;
        if (power("W") != "D3cold\n") return 7;
        if (write_file(dev("W") + "/config", "\x20", kCacheLine).n != 1) return 8;
        if (power("W") != "D0\n") return 9;
        if (read_config(dev("W"), 1, kCacheLine) != "\x20") return 10;
        if (write_file(dev("W") + "/power_state", "D3hot").n != 5) return 11;
        if (write_file(dev("W") + "/config", std::string(1, '\0'), kCacheLine).n != 1) return 12;
        if (power("W") != "D3hot\n") return 13;
        return write_file(dev("W") + "/power_state", "D0").n == 2 ? 0 : 14;
      },
      kViewUid);
  EXPECT_EQ(rc, 0) << d_->log();
  EXPECT_EQ(power("A"), "D0\n");
}

// Only the claim holder is woken: another process's DOE through the wake view
// fails with EIO while someone holds the claim, and the device stays down.
TEST_F(ViewMultiTest, AWakeViewDoesNotWakeForOthers) {
  Holder h(
      [&] {
        if (::open((dev("W") + "/resource0").c_str(), O_RDWR) < 0) return 1;
        return write_file(dev("W") + "/power_state", "D3hot").n == 5 ? 0 : 2;
      },
      kViewUid);
  ASSERT_EQ(h.result(), 0);
  EXPECT_EQ(in_child([&] {
              return doe_exchange(dev("W") + "/doe", {doe_dw0(1, 0), 3, 0}).err;
            }),
            EIO);
  EXPECT_EQ(in_child(
                [&] {
                  return doe_exchange(dev("W") + "/doe", {doe_dw0(1, 0), 3, 0}).err;
                },
                kViewUid),
            EIO);
  EXPECT_EQ(power("W"), "D3hot\n");
  h.release();
  ASSERT_TRUE(wait_unclaimed(dev("A")));
  ASSERT_EQ(write_file(dev("A") + "/power_state", "D0").n, 2);
}

}  // namespace
}  // namespace pcifs::testing
