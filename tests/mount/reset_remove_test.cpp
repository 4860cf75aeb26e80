// S10 through the mount: `reset` revokes mappings first, lets in-flight
// accesses finish, restores config after; `remove` takes the device out of
// every view, kills its handles (ENODEV) and mappings (SIGBUS) and ends its
// claims. Device: 0000:01:00.0 (IOMMU group 2 with 0000:01:00.1).
#include <dirent.h>

#include <atomic>
#include <set>

#include "fixtures/mount_doe.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kBdf = "0000:01:00.0";
constexpr const char* kSibling = "0000:01:00.1";
constexpr off_t kCommand = 0x04;
constexpr off_t kCacheLine = 0x0c;

std::set<std::string> list(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') out.insert(e->d_name);
  }
  closedir(d);
  return out;
}

class ResetTest : public MountTest {
 protected:
  std::string path(const char* file) const { return dev(kBdf) + "/" + file; }
  uint32_t config(off_t off, size_t n) const {
    return le32(pread_file(path("config"), n, off).data + std::string(4, '\0'));
  }
};

TEST_F(ResetTest, ResetRevokesMappingsAndRestoresConfig) {
  install_sigbus_handler();
  BarMap map(path("resource0"), 1 << 20);  // the claim, for config and reset writes
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(pwrite(map.fd(), "\x34\x12\0\0\0\0\0\0", 8, kRegScratch0), 8);
  const uint16_t cmd = 0x0007 | 0x0040 | 0x0100;  // IO, MEM, MASTER + PARITY, SERR
  ASSERT_EQ(write_file(path("config"), le_bytes(cmd, 2), kCommand).n, 2);
  ASSERT_EQ(write_file(path("config"), std::string(1, '\x10'), kCacheLine).n, 1);
  ASSERT_EQ(safe_load32(map.u32(kRegScratch0)), 0x1234u);  // the page is now cached

  auto r = write_file(path("reset"), "1");
  ASSERT_EQ(r.n, 1) << strerror(r.err);
  // The reset zeroed the scratch register. A mapping that was not revoked
  // would still show the cached 0x1234; this one faults in afresh.
  EXPECT_EQ(safe_load32(map.u32(kRegScratch0)), 0u);
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  // Config state restored after the reset (the function came back at 0).
  EXPECT_EQ(config(kCommand, 2), cmd);
  EXPECT_EQ(config(kCacheLine, 1), 0x10u);
  EXPECT_EQ(le32(pread_file(path("resource0"), 4, kRegId, O_RDWR).data), kIdValue);
  // Bad input and the claim rule (control that the write above did something).
  EXPECT_EQ(write_file(path("reset"), "2").err, EINVAL);
  EXPECT_EQ(in_child([&] { return write_file(path("reset"), "1").err == EBUSY ? 0 : 1; }), 0);
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
}

TEST_F(ResetTest, AccessesRacingResetsFinishOrFailCleanly) {
  install_sigbus_handler();
  BarMap map(path("resource0"), 1 << 20);
  ASSERT_TRUE(map.ok());
  std::atomic<bool> stop{false};
  std::atomic<long> good{0}, eio{0}, bad{0}, sigbus{0};
  std::atomic<int> running{0};  // threads past their first access
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (bool counted = false; !stop.load();) {
        if (t % 2 == 0) {
          uint32_t id = 0;
          const ssize_t n = pread(map.fd(), &id, 4, kRegId);
          if (n == 4 && id == kIdValue) {
            ++good;
          } else if (n == -1 && errno == EIO) {
            ++eio;
          } else {
            ++bad;
          }
        } else {
          auto v = safe_load32(map.u32(kRegId));
          if (!v) {
            ++sigbus;
          } else if (*v == kIdValue) {
            ++good;
          } else {
            ++bad;
          }
        }
        if (!counted) {
          counted = true;
          ++running;
        }
      }
    });
  }
  // Gate: the resets start once every thread has made an access; then at
  // least kMinResets of them, and on (bounded) until an access succeeded
  // between resets, so the control does not depend on thread scheduling.
  constexpr int kMinResets = 100, kMaxResets = 100000;
  const bool started = wait_until([&] { return running.load() == 4; });
  EXPECT_TRUE(started) << "only " << running.load() << " of 4 access threads ran within "
                       << kGateLimit.count() << " s";
  const long good_before = good.load();
  int resets = 0, resets_ok = 0;
  auto end = std::chrono::steady_clock::time_point::max();
  for (; started && resets < kMaxResets; ++resets) {
    if (resets == kMinResets) end = std::chrono::steady_clock::now() + kGateLimit;
    if (resets >= kMinResets &&
        (good.load() > good_before || std::chrono::steady_clock::now() > end))
      break;
    resets_ok += write_file(path("reset"), "1").n == 1;
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GE(resets, kMinResets);
  EXPECT_EQ(resets_ok, resets);
  EXPECT_EQ(bad.load(), 0) << "wrong data or errno during resets";
  EXPECT_GT(good.load(), good_before)
      << "no access succeeded while " << resets << " resets ran (eio " << eio.load() << ", sigbus "
      << sigbus.load() << ")";
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
  // After the storm everything works again.
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  RecordProperty("eio", std::to_string(eio.load()));
  RecordProperty("sigbus", std::to_string(sigbus.load()));
  RecordProperty("resets", std::to_string(resets));
}

// Two views of one daemon, each naming its own mountpoint (S6.3).
class RemoveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    for (auto* m : {&m1_, &m2_}) {
      char dir[] = "/tmp/pcifs-mnt-XXXXXX";
      ASSERT_NE(mkdtemp(dir), nullptr);
      *m = dir;
    }
    v1_ = write_view_file(R"({"name": "one", "mountpoint": ")" + m1_ + "\"}");
    v2_ = write_view_file(R"({"name": "two", "mountpoint": ")" + m2_ + "\"}");
    d_ = std::make_unique<Daemon>(std::vector<std::string>{"--view=" + v1_, "--view=" + v2_}, false,
                                  std::vector<std::string>{m1_, m2_});
    ASSERT_TRUE(d_->mounted()) << d_->log();
  }
  void TearDown() override {
    if (d_) {
      const bool alive = d_->alive();
      const std::string log = d_->log();
      EXPECT_EQ(d_->stop(), 0) << log;
      EXPECT_TRUE(alive) << log;
    }
    for (auto& m : {m1_, m2_}) rmdir(m.c_str());
    for (auto& v : {v1_, v2_}) unlink(v.c_str());
  }
  std::string m1_, m2_, v1_, v2_;
  std::unique_ptr<Daemon> d_;
};

// Each view is its own FUSE session with its own INIT: shared mmap of BAR
// files must be negotiated on every one of them, whichever INIT comes first.
TEST_F(RemoveTest, EveryViewCanMapABar) {
  for (const auto& m : {m1_, m2_}) {
    ASSERT_TRUE(wait_handed_over(m + "/devices/" + kBdf));  // the previous map's claim
    BarMap map(m + "/devices/" + kBdf + "/resource0", 1 << 20);
    EXPECT_TRUE(map.ok()) << m << ": " << strerror(errno);
  }
}

TEST_F(RemoveTest, RemovedDeviceLeavesEveryViewAndItsHandlesDie) {
  const std::string a = m1_ + "/devices/" + kBdf;
  install_sigbus_handler();
  BarMap map(a + "/resource0", 1 << 20);  // claims group 2 through view one
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  const int cfg = open((a + "/config").c_str(), O_RDONLY);
  ASSERT_GE(cfg, 0);
  DoeFile doe(a + "/doe");
  ASSERT_TRUE(doe.exchange(discovery_request(0)));
  const std::string sibling_bar = m2_ + "/devices/" + kSibling + "/resource0";
  auto try_claim = [&] {
    return in_child([&] { return open(sibling_bar.c_str(), O_RDWR) >= 0 ? 0 : errno; });
  };
  ASSERT_EQ(try_claim(), EBUSY) << "control: the group is claimed before the remove";

  auto r = write_file(m2_ + "/devices/" + kBdf + "/remove", "1");
  ASSERT_EQ(r.n, 1) << strerror(r.err);

  for (const auto& m : {m1_, m2_}) {
    auto devs = list(m + "/devices");
    EXPECT_EQ(devs.count(kBdf), 0u) << m;
    EXPECT_EQ(devs.count(kSibling), 1u) << m;
    EXPECT_EQ(list(m + "/iommu_groups/2/devices"), std::set<std::string>{kSibling}) << m;
    struct stat st {};
    EXPECT_EQ(stat((m + "/devices/" + kBdf).c_str(), &st), -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_TRUE(device_status(m, kBdf).is_null()) << m;
  }
  char buf[8];
  EXPECT_EQ(pread(cfg, buf, 4, 0), -1);
  EXPECT_EQ(errno, ENODEV);
  EXPECT_EQ(pread(map.fd(), buf, 4, kRegId), -1);
  EXPECT_EQ(errno, ENODEV);
  EXPECT_EQ(pwrite(map.fd(), buf, 8, kRegScratch0), -1);
  EXPECT_EQ(errno, ENODEV);
  auto w = doe.write_obj(discovery_request(0));
  EXPECT_EQ(w.n, -1);
  EXPECT_EQ(w.err, ENODEV);
  EXPECT_EQ(touch_id_in_child(map), kDiedOfSigbus);
  EXPECT_FALSE(safe_load32(map.u32(kRegId)));
  // The removed device's claim ended with it: the sibling can be claimed.
  EXPECT_EQ(try_claim(), 0);
  // The child's claim ends when the kernel's RELEASE of its fd arrives (after
  // close() returned), and the group's hand-over runs after that: "none" in
  // the end, not at once.
  const std::string owner = m1_ + "/devices/" + kSibling + "/owner";
  EXPECT_TRUE(wait_until([&] { return read_text(owner) == "none\n"; })) << read_text(owner);
  close(cfg);
}

}  // namespace
}  // namespace pcifs::testing
