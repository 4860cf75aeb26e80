// S11 through the mount: claims across processes and IOMMU groups. Each
// holder is a child process (claims belong to thread groups); the owner file
// names the holder; EBUSY for the rest of the group, not for other groups;
// threads share their process's claim; the claim ends on close and on death;
// bridges neither take nor block; reading config/rom and DOE do not claim;
// writing power_state/reset/config do.
#include <thread>

#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

const char* const kEp0 = "0000:01:00.0";  // group 2
const char* const kEp1 = "0000:01:00.1";  // group 2
const char* const kEp2 = "0000:02:00.0";  // group 3

class ClaimsTest : public SharedMountTest<> {
 protected:
  void SetUp() override {
    SharedMountTest<>::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    // Every test starts with nothing claimed (the previous one released all).
    for (const char* b : {kEp0, kEp1, kEp2}) {
      ASSERT_TRUE(eventually([&] { return owner(b) == "none\n"; })) << b << ": " << owner(b);
    }
  }
  static std::string owner(const char* bdf) { return read_text(dev(bdf) + "/owner"); }
  static std::string owner_line(pid_t pid) {
    return "pid=" + std::to_string(pid) + " uid=0 view=default\n";
  }
  static std::string bar(const char* bdf) { return dev(bdf) + "/resource0"; }
  // A child process that opens a file and keeps it.
  static std::function<int()> keep_open(const std::string& path, int flags) {
    return [path, flags] {
      static Fd keep;
      keep = Fd(path, flags);
      return keep.ok() ? 0 : keep.err();
    };
  }
  static std::function<int()> keep_written(const std::string& path, const std::string& text) {
    return [path, text] {
      static Fd keep;
      keep = Fd(path, O_WRONLY);
      if (!keep.ok()) return 100 + keep.err();
      return ::write(keep.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size())
                 ? 0
                 : errno;
    };
  }
  static int open_in_child(const std::string& path, int flags) {
    return in_child([&] { return open_errno(path, flags); });
  }
};

TEST_F(ClaimsTest, OpeningABarClaimsAndOwnerShowsTheHolder) {
  Holder h(keep_open(bar(kEp0), O_RDWR));
  ASSERT_EQ(h.result(), 0);
  EXPECT_EQ(owner(kEp0), owner_line(h.pid()));
  EXPECT_EQ(owner(kEp1), owner_line(h.pid()));  // the group's claim
  EXPECT_EQ(owner(kEp2), "none\n");             // another group
  auto s = device_status(status_of(mnt()), kEp0);
  EXPECT_EQ(s.value("owner", ""), "pid=" + std::to_string(h.pid()) + " uid=0 view=default")
      << s.dump();
}

TEST_F(ClaimsTest, OtherProcessesGetEbusyForTheWholeGroup) {
  Holder h(keep_open(bar(kEp0), O_RDWR));
  ASSERT_EQ(h.result(), 0);
  EXPECT_EQ(open_errno(bar(kEp0), O_RDWR), EBUSY);
  EXPECT_EQ(open_errno(bar(kEp1), O_RDWR), EBUSY);
  EXPECT_EQ(open_errno(dev(kEp0) + "/resource2", O_RDONLY), EBUSY);
  EXPECT_EQ(open_in_child(bar(kEp1), O_RDWR), EBUSY);
  EXPECT_EQ(open_errno(bar(kEp2), O_RDWR), 0);  // a device of another group is fine
  auto s = device_status(status_of(mnt()), kEp1);
  EXPECT_GT(s["counters"].value("busy", 0), 0) << s.dump();
  // The log names who holds the claim.
  const std::string holder = "claimed by pid=" + std::to_string(h.pid()) + " uid=0";
  EXPECT_NE(d().log().find(holder), std::string::npos) << d().log();
  h.release();
  // Control: the same opens work once the holder is gone.
  EXPECT_TRUE(eventually([&] { return owner(kEp0) == "none\n"; })) << owner(kEp0);
  EXPECT_EQ(open_errno(bar(kEp1), O_RDWR), 0);
}

TEST_F(ClaimsTest, TheHolderMayOpenMoreOfItsGroup) {
  Holder h([&] {
    static Fd a, b, c;
    a = Fd(bar(kEp0), O_RDWR);
    b = Fd(bar(kEp1), O_RDWR);
    c = Fd(dev(kEp0) + "/resource2", O_RDWR);
    return a.ok() && b.ok() && c.ok() ? 0 : 1;
  });
  EXPECT_EQ(h.result(), 0);
  EXPECT_EQ(owner(kEp1), owner_line(h.pid()));
}

TEST_F(ClaimsTest, ThreadsOfOneProcessShareTheClaim) {
  // The holder opens in one thread and again in two others: all succeed,
  // and the owner is the process, not a thread.
  Holder h([&] {
    static Fd first;
    first = Fd(bar(kEp0), O_RDWR);
    if (!first.ok()) return 1;
    int errs[2] = {-1, -1};
    static Fd others[2];
    std::thread t0([&] {
      others[0] = Fd(bar(kEp1), O_RDWR);
      errs[0] = others[0].err();
    });
    std::thread t1([&] {
      others[1] = Fd(bar(kEp0), O_RDONLY);
      errs[1] = others[1].err();
    });
    t0.join();
    t1.join();
    return errs[0] == 0 && errs[1] == 0 ? 0 : 2;
  });
  EXPECT_EQ(h.result(), 0);
  EXPECT_EQ(owner(kEp0), owner_line(h.pid()));
  EXPECT_EQ(open_errno(bar(kEp1), O_RDWR), EBUSY);  // control: another process is still refused
}

TEST_F(ClaimsTest, ThreadsClaimForTheirProcess) {
  // A claim taken by a thread (not the main thread) is the process's.
  Holder h([&] {
    static Fd f;
    std::thread t([&] { f = Fd(bar(kEp0), O_RDWR); });
    t.join();
    return f.ok() ? 0 : 1;
  });
  ASSERT_EQ(h.result(), 0);
  EXPECT_EQ(owner(kEp0), owner_line(h.pid()));
}

TEST_F(ClaimsTest, TheClaimEndsOnClose) {
  {
    Fd f(bar(kEp0), O_RDWR);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(owner(kEp0), owner_line(getpid()));
    EXPECT_EQ(open_in_child(bar(kEp1), O_RDWR), EBUSY);  // control: held while open
  }
  EXPECT_TRUE(eventually([&] { return owner(kEp0) == "none\n"; })) << owner(kEp0);
  EXPECT_EQ(open_in_child(bar(kEp1), O_RDWR), 0);
}

TEST_F(ClaimsTest, TheClaimEndsWhenTheLastHandleCloses) {
  Fd a(bar(kEp0), O_RDWR), b(bar(kEp1), O_RDWR);
  ASSERT_TRUE(a.ok() && b.ok());
  a.reset();
  EXPECT_EQ(owner(kEp0), owner_line(getpid()));  // b still holds it
  EXPECT_EQ(open_in_child(bar(kEp0), O_RDWR), EBUSY);
  b.reset();
  EXPECT_TRUE(eventually([&] { return owner(kEp0) == "none\n"; })) << owner(kEp0);
}

TEST_F(ClaimsTest, TheClaimEndsWhenTheHolderDies) {
  Holder h(keep_open(bar(kEp0), O_RDWR));
  ASSERT_EQ(h.result(), 0);
  ASSERT_EQ(open_errno(bar(kEp1), O_RDWR), EBUSY);  // control: held
  h.kill_now();
  EXPECT_TRUE(eventually([&] { return owner(kEp0) == "none\n"; })) << owner(kEp0);
  Holder next(keep_open(bar(kEp1), O_RDWR));
  EXPECT_EQ(next.result(), 0);
  EXPECT_EQ(owner(kEp0), owner_line(next.pid()));
}

TEST_F(ClaimsTest, MmapKeepsTheClaimAfterClose) {
  // The mapping holds the file: the claim lasts until munmap (then ends).
  void* p = nullptr;
  {
    Fd f(bar(kEp0), O_RDWR);
    ASSERT_TRUE(f.ok());
    p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, f.get(), 0);
    ASSERT_NE(p, MAP_FAILED) << strerror(errno);
  }
  EXPECT_EQ(owner(kEp0), owner_line(getpid()));
  EXPECT_EQ(open_in_child(bar(kEp1), O_RDWR), EBUSY);
  munmap(p, 4096);
  EXPECT_TRUE(eventually([&] { return owner(kEp0) == "none\n"; })) << owner(kEp0);
}

TEST_F(ClaimsTest, ReadingConfigRomAndDoeDoNotClaim) {
  Holder h([&] {
    static Fd cfg, rom, doe;
    cfg = Fd(dev(kEp0) + "/config", O_RDONLY);
    rom = Fd(dev(kEp0) + "/rom", O_RDONLY);
    doe = Fd(dev(kEp0) + "/doe", O_RDWR);
    if (!cfg.ok() || !rom.ok() || !doe.ok()) return 1;
    char buf[4096];
    if (pread(cfg.get(), buf, 4096, 0) != 4096 || pread(rom.get(), buf, 4096, 0) != 4096) return 2;
    // DOE Discovery, index 0 (PCIe 6.0 §6.30.1.1): vendor 0001 type 00, 3 dwords.
    const uint32_t req[3] = {0x00000001, 3, 0};
    if (::write(doe.get(), req, sizeof req) != static_cast<ssize_t>(sizeof req)) return 3;
    uint32_t resp[8] = {};
    if (::read(doe.get(), resp, sizeof resp) < 12 || resp[0] != 0x00000001) return 4;
    return 0;
  });
  ASSERT_EQ(h.result(), 0);
  EXPECT_EQ(owner(kEp0), "none\n");
  EXPECT_EQ(open_errno(bar(kEp1), O_RDWR), 0);  // nobody holds the group
  // Control: the same process opening a BAR does claim.
  Holder h2(keep_open(bar(kEp0), O_RDONLY));
  ASSERT_EQ(h2.result(), 0);
  EXPECT_EQ(owner(kEp0), owner_line(h2.pid()));
}

TEST_F(ClaimsTest, NobodysReadsDoNotClaim) {
  Holder h(
      [&] {
        static Fd cfg;
        cfg = Fd(dev(kEp0) + "/config", O_RDONLY);
        char b[64];
        return cfg.ok() && pread(cfg.get(), b, 64, 0) == 64 ? 0 : 1;
      },
      kNobody);
  ASSERT_EQ(h.result(), 0);
  EXPECT_EQ(owner(kEp0), "none\n");
}

struct ClaimingWrite {
  const char* what;
  const char* file;
  const char* text;  // nullptr: a config write of the Interrupt Line
};

class ClaimingWriteTest : public ClaimsTest, public ::testing::WithParamInterface<ClaimingWrite> {};

TEST_P(ClaimingWriteTest, WritingClaims) {
  const ClaimingWrite& w = GetParam();
  const std::string path = dev(kEp1) + "/" + w.file;
  Holder h(w.text ? keep_written(path, w.text) : [&] {
    static Fd keep;
    keep = Fd(path, O_RDWR);
    char line = 0;
    if (!keep.ok() || pread(keep.get(), &line, 1, 0x3c) != 1) return 1;
    return pwrite(keep.get(), &line, 1, 0x3c) == 1 ? 0 : errno;
  });
  ASSERT_EQ(h.result(), 0) << w.what;
  EXPECT_EQ(owner(kEp1), owner_line(h.pid()));
  EXPECT_EQ(open_errno(bar(kEp0), O_RDWR), EBUSY);
  h.release();
  EXPECT_TRUE(eventually([&] { return owner(kEp1) == "none\n"; })) << owner(kEp1);
}

TEST_P(ClaimingWriteTest, IsRefusedWhileAnotherProcessHoldsTheGroup) {
  const ClaimingWrite& w = GetParam();
  Holder holder(keep_open(bar(kEp0), O_RDWR));
  ASSERT_EQ(holder.result(), 0);
  const std::string path = dev(kEp1) + "/" + w.file;
  const int rc = in_child([&] {
    Fd f(path, w.text ? O_WRONLY : O_RDWR);
    if (!f.ok()) return 100 + f.err();
    const std::string text = w.text ? w.text : std::string(1, '\0');
    const off_t off = w.text ? 0 : 0x3c;
    return pwrite(f.get(), text.data(), text.size(), off) < 0 ? errno : 0;
  });
  EXPECT_EQ(rc, EBUSY) << w.what;
  EXPECT_EQ(read_text(dev(kEp1) + "/power_state"), "D0\n");
}

INSTANTIATE_TEST_SUITE_P(Writes, ClaimingWriteTest,
                         ::testing::Values(ClaimingWrite{"power_state", "power_state", "D0"},
                                           ClaimingWrite{"reset", "reset", "1"},
                                           ClaimingWrite{"config", "config", nullptr}),
                         [](const auto& tp) { return std::string(tp.param.what); });

// --- bridges: a set where a root port shares its group with an endpoint.
struct BridgeSet {
  static std::vector<std::string> args() {
    static TempFile set(R"({"devices": [
      {"bdf": "0000:00:01.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400", "type": "bridge", "iommu_group": 7,
       "secondary_bus": 1, "subordinate_bus": 1,
       "bars": [{"index": 0, "type": "mem32", "size": 4096}]},
      {"bdf": "0000:01:00.0", "vendor": "0x1b36", "device": "0x10f1", "class": "0x020000", "iommu_group": 7,
       "bars": [{"index": 0, "type": "mem32", "size": 4096}]}]})");
    return {"--backend=sim:" + set.path()};
  }
};

class BridgeClaimsTest : public SharedMountTest<BridgeSet> {
 protected:
  static std::function<int()> keep_open(const std::string& path) {
    return [path] {
      static Fd keep;
      keep = Fd(path, O_RDWR);
      return keep.ok() ? 0 : keep.err();
    };
  }
};

TEST_F(BridgeClaimsTest, BridgesNeitherTakeNorBlock) {
  const std::string bridge = dev("0000:00:01.0"), ep = dev("0000:01:00.0");
  {
    Holder h(keep_open(ep + "/resource0"));  // the endpoint's holder
    ASSERT_EQ(h.result(), 0);
    EXPECT_EQ(read_text(ep + "/owner"), "pid=" + std::to_string(h.pid()) + " uid=0 view=default\n");
    // Another process still reaches the bridge of the same group.
    EXPECT_EQ(open_errno(bridge + "/resource0", O_RDWR), 0);
    EXPECT_EQ(write_file(bridge + "/config", std::string(1, '\x0b'), 0x3c).n, 1);
    EXPECT_EQ(open_errno(ep + "/resource0", O_RDWR), EBUSY);  // control: the endpoint is held
  }
  EXPECT_TRUE(eventually([&] { return read_text(ep + "/owner") == "none\n"; }));
  {
    Holder h(keep_open(bridge + "/resource0"));  // a bridge user takes nothing
    ASSERT_EQ(h.result(), 0);
    EXPECT_EQ(read_text(ep + "/owner"), "none\n");
    EXPECT_EQ(in_child([&] { return open_errno(ep + "/resource0", O_RDWR); }), 0);
  }
}

}  // namespace
}  // namespace pcifs::testing
