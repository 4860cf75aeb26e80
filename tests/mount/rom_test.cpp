// S7 through the mount: `rom` is served from a validated shadow — st_size is
// the ROM BAR, reads end at the last image, 0x55AA headers, read-only (write
// EACCES, read-only mmap), captured once; an invalid ROM reads EIO and
// `status` and the log say why; a capture never disturbs a BAR user.
#include <sys/mman.h>

#include <atomic>
#include <thread>

#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

uint32_t le(const std::string& b, size_t off, size_t width) {
  uint32_t v = 0;
  for (size_t i = 0; i < width && off + i < b.size(); ++i) {
    v |= uint32_t{static_cast<uint8_t>(b[off + i])} << (8 * i);
  }
  return v;
}

struct RomFacts {
  const char* bdf;
  off_t bar_size;
  std::vector<size_t> images;  // lengths, in order
  uint32_t device;
};

const RomFacts kRoms[] = {{"0000:01:00.0", 0x10000, {0x8000, 0x4000}, 0x10f0},
                          {"0000:02:00.0", 0x100000, {0x10000, 0x20000, 0x10000}, 0x10f2}};

size_t total(const RomFacts& f) {
  size_t t = 0;
  for (size_t s : f.images) t += s;
  return t;
}

class RomTest : public SharedMountTest<> {};

TEST_F(RomTest, StSizeIsTheRomBar) {
  for (const auto& f : kRoms) {
    struct stat st {};
    ASSERT_EQ(stat((dev(f.bdf) + "/rom").c_str(), &st), 0) << f.bdf;
    EXPECT_EQ(st.st_size, f.bar_size) << f.bdf;
  }
}

TEST_F(RomTest, ReadsEndAtTheEndOfTheLastImage) {
  for (const auto& f : kRoms) {
    const std::string rom = dev(f.bdf) + "/rom";
    const size_t end = total(f);
    ASSERT_LT(end, static_cast<size_t>(f.bar_size)) << "the control needs a gap after the images";
    EXPECT_EQ(pread_file(rom, 2 << 20, 0).n, static_cast<ssize_t>(end)) << f.bdf;
    EXPECT_EQ(pread_file(rom, 64, static_cast<off_t>(end) - 16).n, 16) << f.bdf;
    EXPECT_EQ(pread_file(rom, 64, static_cast<off_t>(end)).n, 0) << f.bdf;
    EXPECT_EQ(pread_file(rom, 64, f.bar_size - 64).n, 0) << f.bdf;
    // cat-style reading sees the same end.
    EXPECT_EQ(read_text(rom).size(), end) << f.bdf;
  }
}

TEST_F(RomTest, ImagesHaveHeadersAndPcirStructures) {
  for (const auto& f : kRoms) {
    const std::string rom = pread_file(dev(f.bdf) + "/rom", 2 << 20, 0).data;
    ASSERT_EQ(rom.size(), total(f)) << f.bdf;
    size_t at = 0;
    for (size_t i = 0; i < f.images.size(); ++i) {
      EXPECT_EQ(le(rom, at, 2), 0xaa55u) << f.bdf << " image " << i;
      const size_t pcir = at + le(rom, at + 0x18, 2);
      EXPECT_EQ(rom.substr(pcir, 4), "PCIR") << f.bdf << " image " << i;
      EXPECT_EQ(le(rom, pcir + 4, 2), 0x1b36u);
      EXPECT_EQ(le(rom, pcir + 6, 2), f.device);
      EXPECT_EQ(le(rom, pcir + 0x10, 2) * 512u, f.images[i]) << f.bdf << " image " << i;
      const bool last = (le(rom, pcir + 0x15, 1) & 0x80) != 0;
      EXPECT_EQ(last, i + 1 == f.images.size()) << f.bdf << " image " << i;
      at += f.images[i];
    }
  }
}

TEST_F(RomTest, WritesAreRefused) {
  const std::string rom = dev() + "/rom";
  EXPECT_EQ(open_errno(rom, O_WRONLY), EACCES);
  EXPECT_EQ(open_errno(rom, O_RDWR), EACCES);
  EXPECT_EQ(as_nobody([&] { return open_errno(rom, O_WRONLY); }), EACCES);
  EXPECT_EQ(open_errno(rom, O_RDONLY), 0);  // control
}

TEST_F(RomTest, NobodyReadsTheSameRom) {
  const std::string rom = dev() + "/rom";
  const std::string root = pread_file(rom, 1 << 20, 0).data;
  ASSERT_FALSE(root.empty());
  EXPECT_EQ(as_nobody([&] { return pread_file(rom, 1 << 20, 0).data == root ? 0 : 1; }), 0);
}

TEST_F(RomTest, ReadOnlyMmapMatchesRead) {
  const std::string path = dev("0000:02:00.0") + "/rom";
  const std::string rom = pread_file(path, 2 << 20, 0).data;
  ASSERT_EQ(rom.size(), 0x40000u);
  Fd fd(path, O_RDONLY);
  ASSERT_TRUE(fd.ok());
  void* p = mmap(nullptr, rom.size(), PROT_READ, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED) << strerror(errno);
  EXPECT_EQ(std::memcmp(p, rom.data(), rom.size()), 0);
  munmap(p, rom.size());
  // A writable shared mapping of a read-only file is refused by the kernel.
  EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0), MAP_FAILED);
}

TEST_F(RomTest, ServedFromTheShadowAndStatusSaysValid) {
  for (int i = 0; i < 3; ++i) ASSERT_GT(pread_file(dev() + "/rom", 4096, 0).n, 0);
  auto s = device_status(status_of(mnt()), "0000:01:00.0");
  EXPECT_EQ(s["counters"].value("rom_captures", -1), 1) << s.dump();
  EXPECT_EQ(s["rom"].value("valid", false), true) << s.dump();
  EXPECT_EQ(s.value("violations", -1), 0) << s.dump();
}

// A fresh daemon: the first ROM read captures while a thread of this process
// hammers the BAR; no BAR access fails or sees another value, nothing illegal
// reaches the device, and the capture happens once.
TEST(RomCaptureTest, CaptureDoesNotDisturbABarUser) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Daemon d;
  ASSERT_TRUE(d.mounted()) << d.log();
  const std::string bdf = "0000:01:00.0";
  auto captures = [&] {
    return device_status(status_of(d.mnt()), bdf)["counters"].value("rom_captures", -1);
  };
  EXPECT_EQ(captures(), 0);  // control: nothing captured before the first read
  Fd bar(d.dev(bdf) + "/resource0", O_RDWR);
  ASSERT_TRUE(bar.ok());
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0}, bad{0};
  std::thread user([&] {
    while (!stop.load()) {
      const Reg r = reg_get(bar.get(), 0x40, 4);
      if (r.n != 4 || r.value != 0x50434946u) ++bad;
      ++reads;
    }
  });
  // Gates, bounded: the user is reading before the capture and goes on after it.
  const bool before = wait_until([&] { return reads.load() >= 50; });
  const IoResult rom = pread_file(d.dev(bdf) + "/rom", 1 << 20, 0);
  const long at_capture = reads.load();
  const bool after = wait_until([&] { return reads.load() >= at_capture + 50; });
  stop = true;
  user.join();
  EXPECT_TRUE(before && after) << "the BAR user stalled: " << reads.load() << " reads";
  EXPECT_EQ(rom.n, 0xc000);
  EXPECT_EQ(bad.load(), 0) << "BAR reads failed or saw other data during the capture";
  EXPECT_EQ(captures(), 1);
  (void)pread_file(d.dev(bdf) + "/rom", 16, 0);
  EXPECT_EQ(captures(), 1);
  auto s = device_status(status_of(d.mnt()), bdf);
  EXPECT_EQ(s.value("violations", -1), 0) << s.dump();
  bar.reset();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// A device set with one valid and one invalid ROM (no image: all 0xff).
struct BrokenRomSet {
  static std::vector<std::string> args() {
    static TempFile set(R"({"devices": [
      {"bdf": "0000:05:00.0", "vendor": 4660, "device": 1, "class": "0x020000", "iommu_group": 5,
       "rom": {"size": 4096, "images": []}},
      {"bdf": "0000:06:00.0", "vendor": 4660, "device": 2, "class": "0x020000", "iommu_group": 6,
       "rom": {"size": 4096, "images": [{"size": 2048}]}}]})");
    return {"--backend=sim:" + set.path()};
  }
};

class InvalidRomTest : public SharedMountTest<BrokenRomSet> {};

TEST_F(InvalidRomTest, ReadsEioAndStatusSaysWhy) {
  const IoResult r = pread_file(dev("0000:05:00.0") + "/rom", 4096, 0);
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, EIO) << strerror(r.err);
  EXPECT_EQ(pread_file(dev("0000:05:00.0") + "/rom", 4096, 0).err, EIO);  // for good
  // Control: the valid ROM of the same set reads.
  EXPECT_EQ(pread_file(dev("0000:06:00.0") + "/rom", 4096, 0).n, 2048);
  auto s = device_status(status_of(mnt()), "0000:05:00.0");
  ASSERT_TRUE(s.contains("rom")) << s.dump();
  EXPECT_EQ(s["rom"].value("valid", true), false) << s.dump();
  EXPECT_NE(s["rom"].value("error", "").find("signature 0xffff at 0x0"), std::string::npos)
      << s.dump();
  EXPECT_EQ(device_status(status_of(mnt()), "0000:06:00.0")["rom"].value("valid", false), true);
  EXPECT_NE(d().log().find("signature 0xffff at 0x0"), std::string::npos) << d().log();
}

}  // namespace
}  // namespace pcifs::testing
