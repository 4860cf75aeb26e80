// S5 through the mount: BAR files. Exact-width accesses are counted by the
// simulated BAR itself (ACCESS_COUNT_W1..W8 at 0x20..0x38, every access
// counted, reads of the counters included), so "exactly one access of that
// width" and "split into the widest aligned accesses" are checked against the
// device, against a hand-computed split, and against the core twin doing the
// same access (differential). Also bounds, EINVAL, the I/O BAR, mmap, and
// EACCES for nobody.
#include <sys/mman.h>

#include <array>
#include <cstring>
#include <map>

#include "fixtures/mount_core_twin.hpp"
#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

constexpr uint32_t kId = 0x50434946;  // "PCIF" at 0x40 of every endpoint BAR
constexpr off_t kCounters = 0x20;     // W1, W2, W4, W8: 8-byte slots
using Counts = std::array<uint64_t, 4>;

// The accesses a split into widest aligned pieces makes, by width 1/2/4/8.
Counts expected_split(uint64_t off, uint64_t len, unsigned max_width) {
  Counts c{};
  while (len > 0) {
    unsigned w = max_width;
    while (w > 1 && (off % w != 0 || w > len)) w /= 2;
    ++c[static_cast<size_t>(__builtin_ctz(w))];
    off += w;
    len -= w;
  }
  return c;
}

// Zeroes the counters with one access of `width` (it counts, then zeroes).
template <class Put>
void reset_counters(Put put, unsigned width) {
  put(kCounters, std::vector<uint8_t>(width, 0));
}

// Reads the four counters with accesses of `width` (8 on memory BARs, 4 on the
// I/O BAR) and removes what those reads themselves counted.
template <class Get>
Counts read_counters(Get get, unsigned width) {
  Counts c{};
  for (size_t i = 0; i < 4; ++i) {
    std::vector<uint8_t> b = get(kCounters + static_cast<off_t>(8 * i), width);
    for (size_t k = 0; k < b.size(); ++k) c[i] |= uint64_t{b[k]} << (8 * k);
  }
  // The read of counter i sees itself and the earlier reads of its width.
  const size_t wi = static_cast<size_t>(__builtin_ctz(width));
  c[wi] -= wi + 1;
  return c;
}

std::string str(const Counts& c) {
  return "w1=" + std::to_string(c[0]) + " w2=" + std::to_string(c[1]) +
         " w4=" + std::to_string(c[2]) + " w8=" + std::to_string(c[3]);
}

class BarTest : public SharedMountTest<> {
 protected:
  static void TearDownTestSuite() {
    twin_handles_.clear();
    twin_.reset();
    SharedMountTest<>::TearDownTestSuite();
  }
  void TearDown() override {
    SharedMountTest<>::TearDown();
    // Nothing the core sends may be illegal on the device [S14 oracle].
    auto s = device_status(status_of(mnt()), "0000:01:00.0");
    EXPECT_EQ(s.value("violations", -1), 0) << s.dump();
  }
  // The mount side of an access: pread/pwrite on an fd.
  static auto getter(int fd) {
    return [fd](off_t off, unsigned w) {
      std::vector<uint8_t> b(w);
      const ssize_t n = pread(fd, b.data(), w, off);
      b.resize(n > 0 ? static_cast<size_t>(n) : 0);
      return b;
    };
  }
  static auto putter(int fd) {
    return [fd](off_t off, const std::vector<uint8_t>& b) {
      return pwrite(fd, b.data(), b.size(), off);
    };
  }
  // Counts what one access does on the mount.
  static Counts mount_counts(const std::string& file, bool write, uint64_t off, size_t len,
                             unsigned cw) {
    Fd fd(file, O_RDWR);
    EXPECT_TRUE(fd.ok()) << file << ": " << strerror(fd.err());
    reset_counters(putter(fd.get()), cw);
    std::vector<uint8_t> buf(len, 0x5a);
    const ssize_t n = write ? pwrite(fd.get(), buf.data(), len, static_cast<off_t>(off))
                            : pread(fd.get(), buf.data(), len, static_cast<off_t>(off));
    EXPECT_EQ(n, static_cast<ssize_t>(len)) << strerror(errno);
    return read_counters(getter(fd.get()), cw);
  }
  // The same on the core twin.
  static Counts core_counts(uint16_t bar, bool write, uint64_t off, size_t len, unsigned cw) {
    // One twin per suite (its start waits for DOE discovery); it ends with the
    // suite, so no core thread is running when other suites fork children.
    if (!twin_) twin_ = std::make_unique<CoreTwin>();
    CoreTwin& t = *twin_;
    if (!twin_handles_.count(bar)) {
      twin_handles_[bar] = t.open("0000:01:00.0", FileKind::kBar, bar);
    }
    const HandleId h = twin_handles_[bar];
    EXPECT_NE(h, 0u);
    auto get = [&](off_t o, unsigned w) {
      std::vector<uint8_t> b;
      t.read(h, static_cast<uint64_t>(o), w, &b);
      return b;
    };
    auto put = [&](off_t o, const std::vector<uint8_t>& b) {
      return t.write(h, static_cast<uint64_t>(o), b);
    };
    reset_counters(put, cw);
    const long n = write ? t.write(h, off, std::vector<uint8_t>(len, 0x5a)) : t.read(h, off, len);
    EXPECT_EQ(n, static_cast<long>(len));
    return read_counters(get, cw);
  }
  static inline std::unique_ptr<CoreTwin> twin_;
  static inline std::map<uint16_t, HandleId> twin_handles_;
};

struct Access {
  const char* file;  // resource0 (mem64), resource2 (mem32), resource4 (I/O)
  uint64_t off;
  size_t len;
};

std::string name_of(const Access& a, bool write) {
  char b[96];
  std::snprintf(b, sizeof b, "%s_%s_%zu_at_0x%llx", write ? "write" : "read", a.file, a.len,
                static_cast<unsigned long long>(a.off));
  return b;
}

class BarSplitTest : public BarTest,
                     public ::testing::WithParamInterface<std::tuple<Access, bool>> {};

// 1/2/4/8 aligned: exactly one access of that width; longer: the widest
// aligned pieces (I/O BARs: at most 4 bytes). Mount == hand split == core.
TEST_P(BarSplitTest, CountsMatchTheSplitAndTheCore) {
  const auto& [a, write] = GetParam();
  const bool io = std::string(a.file) == "resource4";
  const unsigned cw = io ? 4 : 8;
  const Counts want = expected_split(a.off, a.len, io ? 4 : 8);
  const Counts got = mount_counts(dev() + "/" + a.file, write, a.off, a.len, cw);
  EXPECT_EQ(got, want) << "mount " << str(got) << " vs split " << str(want);
  const auto bar = static_cast<uint16_t>(a.file[8] - '0');
  const Counts core = core_counts(bar, write, a.off, a.len, cw);
  EXPECT_EQ(got, core) << "mount " << str(got) << " vs core " << str(core);
  // Control: the access was counted at all (so equality is not 0 == 0).
  EXPECT_GT(got[0] + got[1] + got[2] + got[3], 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Widths, BarSplitTest,
    ::testing::Combine(::testing::Values(
                           // one access of each width, in RAM and in the register block
                           Access{"resource0", 0x1001, 1}, Access{"resource0", 0x1002, 2},
                           Access{"resource0", 0x1004, 4}, Access{"resource0", 0x1008, 8},
                           Access{"resource0", 0x00, 8}, Access{"resource0", 0x44, 4},
                           Access{"resource2", 0x2003, 1}, Access{"resource2", 0x2006, 2},
                           Access{"resource2", 0x200c, 4}, Access{"resource2", 0x2010, 8},
                           // longer accesses split into the widest aligned pieces
                           Access{"resource0", 0x1000, 16}, Access{"resource0", 0x1001, 15},
                           Access{"resource0", 0x1003, 13}, Access{"resource0", 0x1006, 10},
                           Access{"resource0", 0x1001, 9}, Access{"resource2", 0x2000, 4096},
                           Access{"resource2", 0x2004, 28},
                           // the I/O BAR: 1, 2, 4 as they are; 8 and more as 4-byte pieces
                           Access{"resource4", 0x81, 1}, Access{"resource4", 0x82, 2},
                           Access{"resource4", 0x84, 4}, Access{"resource4", 0x88, 8},
                           Access{"resource4", 0x81, 15}, Access{"resource4", 0x80, 64}),
                       ::testing::Bool()),
    [](const auto& tp) { return name_of(std::get<0>(tp.param), std::get<1>(tp.param)); });

class BarBadWidthTest : public BarTest,
                        public ::testing::WithParamInterface<std::tuple<Access, bool>> {};

// 3/5/6/7 bytes or a misaligned 2/4/8: EINVAL, and no device access at all.
// (The aligned cases of BarSplitTest are the control: same lengths work.)
TEST_P(BarBadWidthTest, IsEinvalWithoutDeviceAccess) {
  const auto& [a, write] = GetParam();
  Fd fd(dev() + "/" + a.file, O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  reset_counters(putter(fd.get()), 8);
  std::vector<uint8_t> buf(a.len, 0x11);
  errno = 0;
  const ssize_t n = write ? pwrite(fd.get(), buf.data(), a.len, static_cast<off_t>(a.off))
                          : pread(fd.get(), buf.data(), a.len, static_cast<off_t>(a.off));
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, EINVAL) << strerror(errno);
  EXPECT_EQ(read_counters(getter(fd.get()), 8), Counts{}) << "an EINVAL access reached the BAR";
}

INSTANTIATE_TEST_SUITE_P(
    Odd, BarBadWidthTest,
    ::testing::Combine(
        ::testing::Values(Access{"resource0", 0x1000, 3}, Access{"resource0", 0x1000, 5},
                          Access{"resource0", 0x1000, 6}, Access{"resource0", 0x1000, 7},
                          Access{"resource0", 0x1001, 2}, Access{"resource0", 0x1002, 4},
                          Access{"resource0", 0x1004, 8}, Access{"resource0", 0x1001, 4},
                          Access{"resource2", 0x2001, 3}),
        ::testing::Bool()),
    [](const auto& tp) { return name_of(std::get<0>(tp.param), std::get<1>(tp.param)); });

TEST_F(BarTest, RegistersReadAndWrite) {
  Fd fd(dev() + "/resource0", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  EXPECT_EQ(reg_get(fd.get(), 0x40, 4).value, kId);
  const uint64_t v = 0x0123456789abcdefull;
  ASSERT_EQ(reg_put(fd.get(), 0x08, 8, v).n, 8);
  EXPECT_EQ(reg_get(fd.get(), 0x08, 8).value, v);
  EXPECT_EQ(reg_get(fd.get(), 0x0c, 4).value, v >> 32);  // a narrower read of the slot
  // Side effects happen once per access: EVENT_COUNT counts doorbells and
  // clears on read.
  (void)reg_get(fd.get(), 0x10, 8);
  ASSERT_EQ(reg_put(fd.get(), 0x18, 4, 1).n, 4);
  ASSERT_EQ(reg_put(fd.get(), 0x18, 4, 1).n, 4);
  EXPECT_EQ(reg_get(fd.get(), 0x10, 8).value, 2u);
  EXPECT_EQ(reg_get(fd.get(), 0x10, 8).value, 0u);
}

TEST_F(BarTest, SplitWritesAndReadsCarryTheBytes) {
  Fd fd(dev() + "/resource2", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  std::vector<uint8_t> in(29), out(29);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(0x31 * i + 7);
  ASSERT_EQ(pwrite(fd.get(), in.data(), in.size(), 0x3003), 29);
  ASSERT_EQ(pread(fd.get(), out.data(), out.size(), 0x3003), 29);
  EXPECT_EQ(in, out);
  EXPECT_EQ(reg_get(fd.get(), 0x3002, 1).value, 0u);  // control: neighbours untouched
  EXPECT_EQ(reg_get(fd.get(), 0x3020, 1).value, 0u);
}

TEST_F(BarTest, ReadsAtOrPastTheEndReturnZeroBytes) {
  Fd fd(dev() + "/resource2", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  constexpr off_t kSize = 0x10000;
  char b[16];
  EXPECT_EQ(pread(fd.get(), b, 4, kSize), 0);
  EXPECT_EQ(pread(fd.get(), b, 8, kSize + 0x1000), 0);
  EXPECT_EQ(pread(fd.get(), b, 16, kSize - 8), 8);  // clipped at the end
  EXPECT_EQ(pread(fd.get(), b, 4, kSize - 4), 4);   // control: the last dword reads
}

TEST_F(BarTest, WritesPastTheEndAreEnxioAndWriteNothing) {
  Fd fd(dev() + "/resource2", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  constexpr off_t kSize = 0x10000;
  ASSERT_EQ(reg_put(fd.get(), kSize - 8, 8, 0x1111111111111111ull).n, 8);  // control: fits
  Reg r = reg_put(fd.get(), kSize, 4, 0);
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, ENXIO);
  std::vector<uint8_t> b(16, 0x22);
  errno = 0;
  EXPECT_EQ(pwrite(fd.get(), b.data(), b.size(), kSize - 8), -1);
  EXPECT_EQ(errno, ENXIO);
  EXPECT_EQ(reg_get(fd.get(), kSize - 8, 8).value, 0x1111111111111111ull)
      << "a write that did not fit changed the BAR";
}

TEST_F(BarTest, IoBarReadsAndWrites) {
  Fd fd(dev() + "/resource4", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  EXPECT_EQ(reg_get(fd.get(), 0x40, 4).value, kId);
  ASSERT_EQ(reg_put(fd.get(), 0x00, 4, 0xcafef00d).n, 4);
  EXPECT_EQ(reg_get(fd.get(), 0x00, 4).value, 0xcafef00du);
  ASSERT_EQ(reg_put(fd.get(), 0x00, 8, 0x0102030405060708ull).n, 8);  // two dwords
  EXPECT_EQ(reg_get(fd.get(), 0x00, 8).value, 0x0102030405060708ull);
  char b[8];
  EXPECT_EQ(pread(fd.get(), b, 4, 256), 0);
  errno = 0;
  EXPECT_EQ(pwrite(fd.get(), b, 4, 256), -1);
  EXPECT_EQ(errno, ENXIO);
}

TEST_F(BarTest, MmapReadsTheIdAndStoresReachTheDevice) {
  Fd fd(dev() + "/resource0", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  void* regs = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(regs, MAP_FAILED) << strerror(errno);
  EXPECT_EQ(*static_cast<volatile uint32_t*>(static_cast<void*>(static_cast<char*>(regs) + 0x40)),
            kId);
  munmap(regs, 4096);

  constexpr off_t kPage = 0x10000;  // RAM, away from the registers and the MSI-X table
  const uint64_t v = 0xfeedface00c0ffeeull;
  ASSERT_NE(reg_get(fd.get(), kPage + 8, 8).value, v);  // control: not there yet
  void* ram = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), kPage);
  ASSERT_NE(ram, MAP_FAILED) << strerror(errno);
  static_cast<volatile uint64_t*>(ram)[1] = v;
  EXPECT_EQ(msync(ram, 4096, MS_SYNC), 0) << strerror(errno);
  EXPECT_EQ(reg_get(fd.get(), kPage + 8, 8).value, v) << "the store did not reach the device";
  munmap(ram, 4096);
}

// Sysfs refuses to map an I/O BAR; a FUSE daemon cannot refuse mmap of one
// file once shared mmap of direct_io files is on (README "Decisions"). The
// mapping is then served like a memory BAR's: the page is fetched with
// 4-byte port reads, never wider (the I/O BAR's widest access).
TEST_F(BarTest, MmapOfTheIoBarIsServedWithPortWidthReads) {
  Fd fd(dev() + "/resource4", O_RDWR);
  ASSERT_TRUE(fd.ok()) << strerror(fd.err());
  uint32_t w4_before = 0, w4_after = 0;  // ACCESS_COUNT_W4
  ASSERT_EQ(pread(fd.get(), &w4_before, 4, 0x30), 4);
  void* p = mmap(nullptr, 256, PROT_READ, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED);
  uint32_t id = 0;
  std::memcpy(&id, static_cast<const char*>(p) + 0x40, sizeof id);
  EXPECT_EQ(id, 0x50434946u);
  munmap(p, 256);
  // The fault read the 256-byte window as 64 port reads; +1 for this read.
  ASSERT_EQ(pread(fd.get(), &w4_after, 4, 0x30), 4);
  EXPECT_EQ(w4_after - w4_before, 64u + 1u);
}

TEST_F(BarTest, NobodyCannotOpenBars) {
  for (const char* f : {"resource0", "resource2", "resource4"}) {
    const std::string p = dev() + "/" + f;
    EXPECT_EQ(as_nobody([&] { return open_errno(p, O_RDONLY); }), EACCES) << f;
    EXPECT_EQ(as_nobody([&] { return open_errno(p, O_RDWR); }), EACCES) << f;
    EXPECT_EQ(open_errno(p, O_RDWR), 0) << f;  // control: root can
  }
}

}  // namespace
}  // namespace pcifs::testing
