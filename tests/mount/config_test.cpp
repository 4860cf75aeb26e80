// S4 through the mount: config reads (full space for root and nobody, any
// offset and length, every read fresh, equal to the core twin) and mediated
// writes (virtual BAR sizing, RW1C, read-only bits dropped, the DOE capability
// and PowerState untouchable, nobody refused, writing claims [S11]).
#include <linux/pci_regs.h>

#include "fixtures/mount_core_twin.hpp"
#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

const std::vector<std::string> kDevices = {"0000:00:00.0", "0000:00:01.0", "0000:00:02.0",
                                           "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"};

size_t config_size(const std::string& bdf) { return bdf == "0000:00:00.0" ? 256 : 4096; }

std::string whole_config(const std::string& path) { return pread_file(path, 8192, 0).data; }

uint32_t le(const std::string& b, size_t off, size_t width) {
  uint32_t v = 0;
  for (size_t i = 0; i < width && off + i < b.size(); ++i) {
    v |= uint32_t{static_cast<uint8_t>(b[off + i])} << (8 * i);
  }
  return v;
}

// Offset of a capability in config bytes, 0 when absent.
uint32_t find_cap(const std::string& cfg, uint8_t id) {
  uint32_t p = le(cfg, PCI_CAPABILITY_LIST, 1) & ~3u;
  for (int guard = 0; p >= 0x40 && guard < 48; ++guard) {
    if (le(cfg, p, 1) == id) return p;
    p = le(cfg, p + 1, 1) & ~3u;
  }
  return 0;
}
uint32_t find_ext_cap(const std::string& cfg, uint16_t id) {
  uint32_t p = 0x100;
  for (int guard = 0; p >= 0x100 && p < cfg.size() && guard < 64; ++guard) {
    const uint32_t h = le(cfg, p, 4);
    if ((h & 0xffff) == id) return p;
    p = (h >> 20) & 0xffc;
  }
  return 0;
}

// --- reads: one daemon for the suite; nothing here writes.
class ConfigReadTest : public SharedMountTest<> {};

TEST_F(ConfigReadTest, FullSpaceForRootAndNobody) {
  for (const auto& b : kDevices) {
    const std::string path = dev(b) + "/config";
    const std::string root = whole_config(path);
    ASSERT_EQ(root.size(), config_size(b)) << b;
    EXPECT_EQ(le(root, 0, 2), 0x1b36u) << b;  // control: real bytes, not zeros
    // nobody gets the same bytes (the kernel would give 64).
    const int rc = as_nobody([&] { return whole_config(path) == root ? 0 : 1; });
    EXPECT_EQ(rc, 0) << b << ": nobody read other bytes than root";
  }
}

TEST_F(ConfigReadTest, CapabilitiesAreVisibleToNobody) {
  const std::string path = dev() + "/config";
  // Beyond the 64-byte header: the capability list and extended space.
  const int rc = as_nobody([&] {
    const std::string c = whole_config(path);
    return find_cap(c, PCI_CAP_ID_PM) != 0 && find_ext_cap(c, PCI_EXT_CAP_ID_DOE) != 0 ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

// Differential: every device's config through the mount equals the core
// twin's read of the same device.
TEST_F(ConfigReadTest, EqualsTheCore) {
  CoreTwin twin;
  for (const auto& b : kDevices) {
    const HandleId h = twin.open(b, FileKind::kConfig, 0, false);
    ASSERT_NE(h, 0u) << b;
    std::vector<uint8_t> core;
    ASSERT_EQ(twin.read(h, 0, 8192, &core), static_cast<long>(config_size(b))) << b;
    const std::string mount = whole_config(dev(b) + "/config");
    ASSERT_EQ(mount.size(), core.size()) << b;
    for (size_t i = 0; i < core.size(); ++i) {
      if (static_cast<uint8_t>(mount[i]) != core[i]) {
        ADD_FAILURE() << b << ": config byte 0x" << std::hex << i << " mount "
                      << int{static_cast<uint8_t>(mount[i])} << " core " << int{core[i]};
        break;
      }
    }
  }
}

TEST_F(ConfigReadTest, ReadsHaveNoSideEffects) {
  const std::string a = whole_config(dev() + "/config");
  const std::string b = whole_config(dev() + "/config");
  EXPECT_EQ(a, b);
  auto s = device_status(status_of(mnt()), "0000:01:00.0");
  EXPECT_EQ(s.value("violations", -1), 0) << s.dump();
  EXPECT_EQ(s.value("owner", ""), "none") << s.dump();
}

struct Slice {
  off_t off;
  size_t len;
};

class ConfigSliceTest : public ConfigReadTest,
                        public ::testing::WithParamInterface<std::tuple<Slice, bool>> {};

// Any offset, any length, short only at the end; the same for nobody.
TEST_P(ConfigSliceTest, ReadsTheSameBytesAsTheWholeRead) {
  const Slice s = std::get<0>(GetParam());  // not a structured binding: lambdas capture it
  const bool nobody = std::get<1>(GetParam());
  for (const char* b : {"0000:01:00.0", "0000:00:00.0"}) {
    const std::string path = dev(b) + "/config";
    const std::string whole = whole_config(path);
    ASSERT_EQ(whole.size(), config_size(b));
    const size_t start = std::min(whole.size(), static_cast<size_t>(s.off));
    const std::string want = whole.substr(start, s.len);
    auto read = [&] {
      IoResult r = pread_file(path, s.len, s.off);
      return r.n == static_cast<ssize_t>(want.size()) && r.data == want ? 0 : 1;
    };
    EXPECT_EQ(nobody ? as_nobody(read) : read(), 0)
        << b << " off " << s.off << " len " << s.len << " want " << want.size() << " bytes";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Slices, ConfigSliceTest,
    ::testing::Combine(::testing::Values(Slice{0, 1}, Slice{1, 1}, Slice{3, 2}, Slice{5, 3},
                                         Slice{2, 4}, Slice{0x3f, 1}, Slice{0x3e, 5},
                                         Slice{0x40, 4}, Slice{0x41, 7}, Slice{0xfd, 7},
                                         Slice{0x100, 0x100}, Slice{0x1ff, 0x202}, Slice{250, 16},
                                         Slice{255, 1}, Slice{256, 4}, Slice{4090, 16},
                                         Slice{4095, 1}, Slice{4096, 4}, Slice{5000, 4},
                                         Slice{0, 4096}, Slice{1, 4096}, Slice{0, 65536}),
                       ::testing::Bool()),
    [](const auto& tp) {
      const Slice& s = std::get<0>(tp.param);
      return std::string(std::get<1>(tp.param) ? "nobody" : "root") + "_" + std::to_string(s.off) +
             "_" + std::to_string(s.len);
    });

// --- writes: a fresh daemon per test.
class ConfigWriteTest : public MountTest {
 protected:
  std::string cfg(const std::string& bdf = "0000:01:00.0") { return dev(bdf) + "/config"; }
  void TearDown() override {
    if (d_) {
      auto s = device_status(status_of(d_->mnt()), "0000:01:00.0");
      EXPECT_EQ(s.value("violations", -1), 0) << s.dump();
    }
    MountTest::TearDown();
  }
};

// No caching: a reader holding an open fd sees a write made through another.
TEST_F(ConfigWriteTest, ReadsAreFresh) {
  Fd reader(cfg(), O_RDONLY), writer(cfg(), O_RDWR);
  ASSERT_TRUE(reader.ok() && writer.ok());
  const uint64_t before = reg_get(reader.get(), PCI_COMMAND, 2).value;
  ASSERT_EQ(reg_put(writer.get(), PCI_COMMAND, 2, before ^ PCI_COMMAND_SERR).n, 2);
  const uint64_t after = reg_get(reader.get(), PCI_COMMAND, 2).value;
  EXPECT_NE(after, before) << "the reader saw a stale Command register";
  EXPECT_EQ(after, before ^ PCI_COMMAND_SERR);
  // Also another process, another user.
  const std::string path = cfg();
  EXPECT_EQ(
      as_nobody([&] { return le(pread_file(path, 2, PCI_COMMAND).data, 0, 2) == after ? 0 : 1; }),
      0);
  ASSERT_EQ(reg_put(writer.get(), PCI_COMMAND, 2, before).n, 2);
  EXPECT_EQ(reg_get(reader.get(), PCI_COMMAND, 2).value, before);
}

// Virtual BARs size like hardware and never reach the device.
TEST_F(ConfigWriteTest, BarSizingWithAllOnes) {
  Fd fd(cfg(), O_RDWR), bar(dev() + "/resource2", O_RDWR);
  ASSERT_TRUE(fd.ok() && bar.ok());
  const std::string resource = read_text(dev() + "/resource");
  struct Want {
    off_t reg;
    uint32_t orig, sized;
  };
  const Want regs[] = {
      {PCI_BASE_ADDRESS_0, 0x0000000c, 0xfff0000c},  // mem64 prefetchable 1 MiB, low
      {PCI_BASE_ADDRESS_1, 0x00000080, 0xffffffff},  // its high dword
      {PCI_BASE_ADDRESS_2, 0xfe000000, 0xffff0000},  // mem32 64 KiB
      {PCI_BASE_ADDRESS_4, 0x00001001, 0xffffff01},  // I/O 256 B
      {PCI_ROM_ADDRESS, 0xfe010000, 0xffff0000},     // ROM 64 KiB, decode off
  };
  for (const Want& w : regs) {
    EXPECT_EQ(reg_get(fd.get(), w.reg, 4).value, w.orig) << std::hex << w.reg;
    ASSERT_EQ(reg_put(fd.get(), w.reg, 4, w.reg == PCI_ROM_ADDRESS ? 0xfffffffe : 0xffffffff).n, 4);
  }
  for (const Want& w : regs) {
    EXPECT_EQ(reg_get(fd.get(), w.reg, 4).value, w.sized) << std::hex << w.reg;
  }
  // The device still decodes at its address: BAR access works while sized.
  EXPECT_EQ(reg_get(bar.get(), 0x40, 4).value, 0x50434946u);
  EXPECT_EQ(read_text(dev() + "/resource"), resource);
  for (const Want& w : regs) ASSERT_EQ(reg_put(fd.get(), w.reg, 4, w.orig).n, 4);
  for (const Want& w : regs) {
    EXPECT_EQ(reg_get(fd.get(), w.reg, 4).value, w.orig) << std::hex << w.reg;
  }
}

TEST_F(ConfigWriteTest, Rw1cBitsClear) {
  Fd fd(cfg(), O_RDWR);
  ASSERT_TRUE(fd.ok());
  const uint32_t aer = find_ext_cap(whole_config(cfg()), PCI_EXT_CAP_ID_ERR);
  ASSERT_NE(aer, 0u);
  const off_t cor = aer + PCI_ERR_COR_STATUS;
  ASSERT_EQ(reg_get(fd.get(), cor, 4).value & PCI_ERR_COR_ADV_NFAT, PCI_ERR_COR_ADV_NFAT)
      << "the simulated device starts with Advisory Non-Fatal set";
  ASSERT_EQ(reg_put(fd.get(), cor, 4, 0).n, 4);  // control: writing 0 keeps it
  EXPECT_EQ(reg_get(fd.get(), cor, 4).value & PCI_ERR_COR_ADV_NFAT, PCI_ERR_COR_ADV_NFAT);
  ASSERT_EQ(reg_put(fd.get(), cor, 4, PCI_ERR_COR_ADV_NFAT).n, 4);  // writing 1 clears
  EXPECT_EQ(reg_get(fd.get(), cor, 4).value & PCI_ERR_COR_ADV_NFAT, 0u);
  ASSERT_EQ(reg_put(fd.get(), cor, 4, 0xffffffff).n, 4);  // and nothing sets it
  EXPECT_EQ(reg_get(fd.get(), cor, 4).value, 0u);
  // Status: writing ones clears RW1C bits but keeps the read-only Capabilities List.
  ASSERT_EQ(reg_put(fd.get(), PCI_STATUS, 2, 0xffff).n, 2);
  EXPECT_EQ(reg_get(fd.get(), PCI_STATUS, 2).value & PCI_STATUS_CAP_LIST, PCI_STATUS_CAP_LIST);
}

TEST_F(ConfigWriteTest, ReadOnlyBitsAreDroppedAndTheWriteReturnsItsLength) {
  Fd fd(cfg(), O_RDWR);
  ASSERT_TRUE(fd.ok());
  const std::string before = whole_config(cfg());
  EXPECT_EQ(reg_put(fd.get(), PCI_VENDOR_ID, 4, 0xffffffff).n, 4);
  EXPECT_EQ(reg_put(fd.get(), PCI_REVISION_ID, 4, 0).n, 4);
  EXPECT_EQ(reg_put(fd.get(), PCI_SUBSYSTEM_VENDOR_ID, 4, 0x12345678).n, 4);
  // Interrupt Line is writable, Interrupt Pin and Min_Gnt/Max_Lat are not.
  EXPECT_EQ(reg_put(fd.get(), PCI_INTERRUPT_LINE, 4, 0xffffff5a).n, 4);
  const std::string after = whole_config(cfg());
  EXPECT_EQ(le(after, PCI_VENDOR_ID, 4), le(before, PCI_VENDOR_ID, 4));
  EXPECT_EQ(le(after, PCI_REVISION_ID, 4), le(before, PCI_REVISION_ID, 4));
  EXPECT_EQ(le(after, PCI_SUBSYSTEM_VENDOR_ID, 4), le(before, PCI_SUBSYSTEM_VENDOR_ID, 4));
  EXPECT_EQ(le(after, PCI_INTERRUPT_LINE, 1), 0x5au);  // control: the writable byte changed
  EXPECT_EQ(le(after, PCI_INTERRUPT_PIN, 3), le(before, PCI_INTERRUPT_PIN, 3));
  // A write past the end of the space is short.
  char b[8] = {};
  EXPECT_EQ(pwrite(fd.get(), b, 8, 4092), 4);
}

TEST_F(ConfigWriteTest, DoeCapabilityIsNotWritable) {
  Fd fd(cfg(), O_RDWR);
  ASSERT_TRUE(fd.ok());
  const uint32_t doe = find_ext_cap(whole_config(cfg()), PCI_EXT_CAP_ID_DOE);
  ASSERT_NE(doe, 0u);
  const uint64_t ctrl = reg_get(fd.get(), doe + PCI_DOE_CTRL, 4).value;
  const uint64_t status = reg_get(fd.get(), doe + PCI_DOE_STATUS, 4).value;
  // Abort, GO, a request dword: each "succeeds" and none reaches the mailbox
  // (a GO with no object would be DOE misuse: a violation in status).
  EXPECT_EQ(reg_put(fd.get(), doe + PCI_DOE_WRITE, 4, 0x00000001).n, 4);
  EXPECT_EQ(reg_put(fd.get(), doe + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_GO).n, 4);
  EXPECT_EQ(reg_put(fd.get(), doe + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_ABORT).n, 4);
  EXPECT_EQ(reg_put(fd.get(), doe + PCI_DOE_CAP, 4, 0xffffffff).n, 4);
  EXPECT_EQ(reg_get(fd.get(), doe + PCI_DOE_CTRL, 4).value, ctrl);
  EXPECT_EQ(reg_get(fd.get(), doe + PCI_DOE_STATUS, 4).value, status);
  auto s = device_status(status_of(d_->mnt()), "0000:01:00.0");
  EXPECT_EQ(s.value("violations", -1), 0) << s.dump();
  ASSERT_TRUE(s["doe"].is_array() && !s["doe"].empty()) << s.dump();
  EXPECT_EQ(s["doe"][0].value("aborts", -1), 0) << s.dump();
}

TEST_F(ConfigWriteTest, PowerStateIsNotWritableThroughConfig) {
  Fd fd(cfg(), O_RDWR);
  ASSERT_TRUE(fd.ok());
  const uint32_t pm = find_cap(whole_config(cfg()), PCI_CAP_ID_PM);
  ASSERT_NE(pm, 0u);
  const off_t pmcsr = pm + PCI_PM_CTRL;
  const uint64_t v = reg_get(fd.get(), pmcsr, 2).value;
  ASSERT_EQ(v & PCI_PM_CTRL_STATE_MASK, 0u);
  EXPECT_EQ(reg_put(fd.get(), pmcsr, 2, v | 3).n, 2);  // D3hot: dropped
  EXPECT_EQ(reg_get(fd.get(), pmcsr, 2).value & PCI_PM_CTRL_STATE_MASK, 0u);
  EXPECT_EQ(read_text(dev() + "/power_state"), "D0\n");
  // Control: power_state does move it, and config then shows D3.
  ASSERT_EQ(write_file(dev() + "/power_state", "D3hot").err, 0);
  EXPECT_EQ(reg_get(fd.get(), pmcsr, 2).value & PCI_PM_CTRL_STATE_MASK, 3u);
  ASSERT_EQ(write_file(dev() + "/power_state", "D0").err, 0);
  EXPECT_EQ(reg_get(fd.get(), pmcsr, 2).value & PCI_PM_CTRL_STATE_MASK, 0u);
}

TEST_F(ConfigWriteTest, NobodyMayNotWrite) {
  const std::string path = cfg();
  auto try_write = [&](int flags) {
    return [path, flags] {
      Fd fd(path, flags);
      if (!fd.ok()) return fd.err();
      return reg_put(fd.get(), PCI_INTERRUPT_LINE, 1, 0x33).n == 1 ? 0 : errno;
    };
  };
  for (int flags : {O_WRONLY, O_RDWR}) {
    const int e = as_nobody(try_write(flags));
    EXPECT_TRUE(e == EACCES || e == EPERM) << "errno " << e;
  }
  EXPECT_EQ(as_nobody([&] { return open_errno(path, O_RDONLY); }), 0);  // control: reading is fine
  EXPECT_NE(le(whole_config(path), PCI_INTERRUPT_LINE, 1), 0x33u);
  EXPECT_EQ(try_write(O_RDWR)(), 0);  // control: root may
}

// Writing config claims the group [S11]; opening for writing alone does not.
TEST_F(ConfigWriteTest, WritingClaims) {
  const std::string path = cfg(), owner = dev() + "/owner";
  {
    Holder h([&] {
      static Fd keep;  // held until the child exits
      keep = Fd(path, O_RDWR);
      return keep.ok() ? 0 : 1;
    });
    ASSERT_EQ(h.result(), 0);
    EXPECT_EQ(read_text(owner), "none\n") << "an open without a write claimed";
  }
  Holder w([&] {
    static Fd keep;
    keep = Fd(path, O_RDWR);
    return keep.ok() && reg_put(keep.get(), PCI_INTERRUPT_LINE, 1, 0x44).n == 1 ? 0 : 1;
  });
  ASSERT_EQ(w.result(), 0);
  EXPECT_EQ(read_text(owner), "pid=" + std::to_string(w.pid()) + " uid=0 view=default\n");
  EXPECT_EQ(open_errno(dev() + "/resource0", O_RDWR), EBUSY);
  EXPECT_EQ(open_errno(dev("0000:01:00.1") + "/resource0", O_RDWR), EBUSY);
  EXPECT_EQ(open_errno(dev("0000:02:00.0") + "/resource0", O_RDWR), 0);  // another group
  w.release();
  EXPECT_TRUE(eventually([&] { return read_text(owner) == "none\n"; })) << read_text(owner);
  EXPECT_EQ(open_errno(dev() + "/resource0", O_RDWR), 0);
}

}  // namespace
}  // namespace pcifs::testing
