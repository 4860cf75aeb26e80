// S12 through the mount: clearing Memory Space Enable quiesces the BARs (pread
// EIO, mappings SIGBUS) and setting it again lets mappings fault in afresh; a
// mapping is page-cache-like (stale until a revocation refetches it: the
// negative control); and the invalidation-vs-fault deadlock case under load.
// Device: 0000:01:00.0, BAR0 (1 MiB, MSI-X table and PBA in pages 2 and 3).
#include <atomic>

#include "fixtures/mount_doe.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kBdf = "0000:01:00.0";
constexpr off_t kCommand = 0x04;
constexpr uint16_t kMemoryEnable = 0x2;  // PCI_COMMAND_MEMORY
constexpr size_t kBar0 = 1 << 20;
constexpr size_t kPage = 4096;

class RevocationTest : public MountTest {
 protected:
  std::string path(const char* file) const { return dev(kBdf) + "/" + file; }
  uint16_t command() const {
    return static_cast<uint16_t>(
        le32(pread_file(path("config"), 2, kCommand).data + std::string(2, '\0')));
  }
  // Written by the calling process, which must hold the claim.
  bool set_command(uint16_t v) {
    return write_file(path("config"), le_bytes(v, 2), kCommand).n == 2;
  }
  uint64_t load64(const BarMap& m, uint64_t off) const { return *m.u64(off); }
};

TEST_F(RevocationTest, MemoryDecodeOffQuiescesAndOnFaultsInAfresh) {
  install_sigbus_handler();
  BarMap map(path("resource0"), kBar0);
  ASSERT_TRUE(map.ok());
  const uint16_t cmd = command();
  ASSERT_NE(cmd & kMemoryEnable, 0);
  // Control: it all works with decode on.
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  EXPECT_EQ(touch_id_in_child(map), 0);

  ASSERT_TRUE(set_command(cmd & ~kMemoryEnable));
  uint32_t id = 0;
  EXPECT_EQ(pread(map.fd(), &id, 4, kRegId), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(pwrite(map.fd(), &id, 4, kRegId), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_FALSE(safe_load32(map.u32(kRegId))) << "a cached page survived the quiesce";
  EXPECT_EQ(touch_id_in_child(map), kDiedOfSigbus);
  // Config stays usable while the BARs are quiesced.
  EXPECT_EQ(command(), cmd & ~kMemoryEnable);

  ASSERT_TRUE(set_command(cmd));
  EXPECT_EQ(pread(map.fd(), &id, 4, kRegId), 4);
  EXPECT_EQ(id, kIdValue);
  EXPECT_EQ(safe_load32(map.u32(kRegId)), kIdValue);
  EXPECT_EQ(touch_id_in_child(map), 0);
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
}

TEST_F(RevocationTest, MappingIsPageCacheLikeUntilARevocationRefetchesIt) {
  install_sigbus_handler();
  BarMap map(path("resource0"), kBar0);
  ASSERT_TRUE(map.ok());
  const uint16_t cmd = command();
  // The device counts 4-byte accesses at 0x30. Fault the page in, then make
  // the device's count move with preads (reads: the kernel keeps the cached
  // page, unlike a direct write, which drops the written range).
  const uint64_t cached = load64(map, kRegCount4);
  uint32_t id = 0;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(pread(map.fd(), &id, 4, kRegId), 4);
  uint64_t live = 0;
  ASSERT_EQ(pread(map.fd(), &live, 8, kRegCount4), 8);
  ASSERT_GE(live, cached + 3) << "the device counted the reads";
  // Negative control: the mapping still shows the page as fetched, so a check
  // for fresh data through it can fail.
  EXPECT_EQ(load64(map, kRegCount4), cached);
  // A revocation (decode off/on) drops the page; the next touch refetches.
  ASSERT_TRUE(set_command(cmd & ~kMemoryEnable));
  ASSERT_TRUE(set_command(cmd));
  const auto fresh = safe_load32(map.u32(kRegCount4));
  ASSERT_TRUE(fresh);
  EXPECT_GE(*fresh, live);
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
}

// The deadlock case (STYLE.md, Concurrency): inval_inode waits for the page
// locks of faults in progress, whose FUSE_READs may be inside the daemon.
// A hammer process faults a freshly mapped BAR in many threads while the
// toggler (the claim holder; the hammer maps its inherited BAR handle)
// switches power D3hot/D0. The parent is the watchdog. The toggler starts
// only once the hammers read through their mappings, and goes on until they
// met both outcomes (served and refused faults) during the storm.
struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, sigbus{0}, bad{0};
  std::atomic<uint32_t> bad_value{0};
  // Written by the toggler: the counters when the storm began, and how many
  // D3hot/D0 toggles it made.
  std::atomic<long> ok_before_storm{-1}, sigbus_before_storm{-1}, toggles{0};
  bool both_moved() const {
    return ok.load() > ok_before_storm.load() && sigbus.load() > sigbus_before_storm.load();
  }
};

// The storm: at least kMinToggles, then on (bounded by kMaxToggles and
// kExtraLimit) until the hammers have met both outcomes during it, so the
// controls never depend on how the threads were scheduled.
constexpr long kMinToggles = 300, kMaxToggles = 100000;
constexpr auto kExtraLimit = std::chrono::seconds(60);

constexpr uint64_t kPattern = 0xa5a5000000000000ull;
// RAM pages the hammer checks: page 0 holds the registers (ID), pages 2 and 3
// the MSI-X table and PBA.
bool ram_page(size_t page) { return page == 1 || page >= 4; }

void hammer_thread(int fd, Shared* s, unsigned seed) {
  while (!s->stop.load()) {
    void* p = mmap(nullptr, kBar0, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      s->bad++;
      return;
    }
    auto* base = static_cast<volatile uint8_t*>(p);
    for (size_t i = 0; i < 24 && !s->stop.load(); ++i) {
      const size_t page = i == 0 ? 0 : (size_t{seed} * 37 + i * 11) % (kBar0 / kPage);
      if (page != 0 && !ram_page(page)) continue;
      const uint64_t off = page == 0 ? kRegId : page * kPage;
      auto v = safe_load32(reinterpret_cast<volatile uint32_t*>(base + off));
      const uint32_t want = page == 0 ? kIdValue : static_cast<uint32_t>(kPattern | page);
      if (!v) {
        s->sigbus++;
      } else if (*v == want) {
        s->ok++;
      } else {
        s->bad++;
        s->bad_value = *v;
      }
    }
    munmap(p, kBar0);
    ++seed;
  }
}

// Exit codes: 2/3 setup, 10 a toggle failed, 11 the hammer failed, 12 the
// hammers never read through a mapping (gate), 13 the storm ended (deadline
// or max count) before the hammers met both outcomes.
int toggler(const std::string& dev, Shared* s) {
  const int bar = open((dev + "/resource0").c_str(), O_RDWR);
  const int pw = open((dev + "/power_state").c_str(), O_WRONLY);
  if (bar < 0 || pw < 0) return 2;
  for (size_t page = 1; page < kBar0 / kPage; ++page) {
    const uint64_t v = kPattern | page;
    if (ram_page(page) && pwrite(bar, &v, 8, static_cast<off_t>(page * kPage)) != 8) return 3;
  }
  const pid_t h = fork();
  if (h == 0) {
    install_sigbus_handler();
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 8; ++t) threads.emplace_back(hammer_thread, bar, s, t * 1000);
    for (auto& t : threads) t.join();
    _exit(0);
  }
  // Gate: the storm starts only once the hammers are faulting (a good read,
  // or a failure that ends the test anyway).
  const bool hammering = wait_until([s] { return s->ok.load() > 0 || s->bad.load() > 0; });
  s->ok_before_storm = s->ok.load();
  s->sigbus_before_storm = s->sigbus.load();
  int failed = 0;
  long i = 0;
  auto end = std::chrono::steady_clock::time_point::max();
  for (; hammering && i < kMaxToggles; ++i) {
    if (i == kMinToggles) end = std::chrono::steady_clock::now() + kExtraLimit;
    if (i >= kMinToggles && (s->both_moved() || std::chrono::steady_clock::now() > end)) break;
    failed += pwrite(pw, "D3hot", 5, 0) != 5;
    failed += pwrite(pw, "D0", 2, 0) != 2;
    s->toggles = i + 1;
  }
  s->stop = true;
  int st = 0;
  waitpid(h, &st, 0);
  if (failed) return 10;
  if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) return 11;
  if (!hammering) return 12;
  return s->both_moved() ? 0 : 13;
}

TEST_F(RevocationTest, FaultStormAgainstPowerTogglesNeverHangsOrGoesStale) {
  auto* s = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(s, MAP_FAILED);
  new (s) Shared;
  const std::string device = dev(kBdf);
  const pid_t t = fork();
  if (t == 0) _exit(toggler(device, s));
  // A hang guard above the toggler's own bounds (gate, minimum storm, extra).
  auto st = wait_child_or_abort(t, std::chrono::seconds(400), d_->mnt());
  ASSERT_TRUE(st) << "hung: the daemon did not finish the toggles under the fault storm ("
                  << s->toggles.load() << " recorded, ok " << s->ok.load() << ", sigbus "
                  << s->sigbus.load() << ")";
  EXPECT_TRUE(WIFEXITED(*st)) << *st;
  EXPECT_EQ(WEXITSTATUS(*st), 0)
      << "2/3 setup, 10 a toggle failed, 11 the hammer failed, 12 no hammer read through its "
      << "mapping within " << kGateLimit.count() << " s, 13 the storm ended (" << s->toggles.load()
      << " toggles) before both outcomes: ok " << s->ok_before_storm.load() << " -> "
      << s->ok.load() << ", sigbus " << s->sigbus_before_storm.load() << " -> " << s->sigbus.load();
  EXPECT_EQ(s->bad.load(), 0) << "stale or wrong data through the mapping: 0x" << std::hex
                              << s->bad_value.load();
  // Controls: the storm did both -- faults served, and faults refused -- while
  // it ran, not only before it.
  EXPECT_GE(s->toggles.load(), kMinToggles);
  EXPECT_GT(s->ok.load(), s->ok_before_storm.load());
  EXPECT_GT(s->sigbus.load(), s->sigbus_before_storm.load());
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
  EXPECT_EQ(read_text(device + "/power_state"), "D0\n");
  EXPECT_EQ(le32(pread_file(device + "/resource0", 4, kRegId, O_RDWR).data), kIdValue);
  RecordProperty("ok", std::to_string(s->ok.load()));
  RecordProperty("sigbus", std::to_string(s->sigbus.load()));
  RecordProperty("toggles", std::to_string(s->toggles.load()));
  munmap(s, sizeof(Shared));
}

}  // namespace
}  // namespace pcifs::testing
