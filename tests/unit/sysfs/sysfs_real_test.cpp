// The sysfs backend against this machine's real /sys/bus/pci. READ ONLY: no
// write, rom, reset or power call is ever made here, and the test checks that
// no writable config descriptor was opened.
#include <gtest/gtest.h>

#include <filesystem>

#include "fixtures/sysfs_tree.hpp"
#include "sysfs/sysfs_attrs.hpp"
#include "sysfs/sysfs_backend.hpp"

namespace pcifs::backend::sysfs {
namespace {

constexpr const char* kRoot = "/sys/bus/pci";

size_t real_device_count() {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(std::string(kRoot) + "/devices", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

std::vector<uint8_t> plain_config(const Bdf& bdf) {
  return pcifs::testing::SysfsTree::read_file(std::string(kRoot) + "/devices/" + bdf.str() +
                                              "/config");
}

class RealSysfsTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (real_device_count() == 0) GTEST_SKIP() << "no PCI devices in " << kRoot;
    SysfsOptions o;
    o.force_pread_batch = GetParam();
    backend_ = std::make_unique<SysfsBackend>(kRoot, o);
  }
  void TearDown() override {
    if (!backend_) return;
    for (auto& d : backend_->devices()) {
      EXPECT_FALSE(static_cast<SysfsDevice&>(*d).holds_writable_config()) << d->info().bdf.str();
    }
  }
  std::unique_ptr<SysfsBackend> backend_;
};

TEST_P(RealSysfsTest, EnumeratesEveryDevice) {
  EXPECT_EQ(backend_->devices().size(), real_device_count());
  EXPECT_TRUE(backend_->skipped().empty());
  for (auto& d : backend_->devices()) {
    auto dir = std::string(kRoot) + "/devices/" + d->info().bdf.str();
    auto vendor = read_text_file(dir + "/vendor");
    ASSERT_TRUE(vendor);
    EXPECT_EQ(parse_hex_attr(*vendor), d->info().vendor);
    EXPECT_GE(d->info().resources.size(), 7u);
    EXPECT_TRUE(d->info().config_size == 256 || d->info().config_size == 4096);
    // The real /sys links every function under its root: pcieRoot is known.
    EXPECT_EQ(d->info().pcie_root.rfind("pci", 0), 0u) << d->info().bdf.str();
  }
}

TEST_P(RealSysfsTest, BlockReadsEqualPlainReads) {
  for (auto& d : backend_->devices()) {
    std::vector<uint8_t> buf(d->info().config_size);
    ASSERT_TRUE(d->config_read_block(0, buf)) << d->info().bdf.str();
    EXPECT_EQ(buf, plain_config(d->info().bdf)) << d->info().bdf.str();
  }
}

TEST_P(RealSysfsTest, BatchReadsEqualPlainReads) {
  auto devs = backend_->devices();
  std::vector<std::vector<uint8_t>> bufs;
  for (auto& d : devs) bufs.emplace_back(d->info().config_size);
  std::vector<ConfigReadItem> items;
  for (size_t i = 0; i < devs.size(); ++i) items.push_back({devs[i].get(), 0, bufs[i], Errno(EIO)});
  backend_->config_read_batch(items);
  for (size_t i = 0; i < devs.size(); ++i) {
    ASSERT_TRUE(items[i].result) << devs[i]->info().bdf.str() << " "
                                 << items[i].result.error().name();
    EXPECT_EQ(bufs[i], plain_config(devs[i]->info().bdf)) << devs[i]->info().bdf.str();
  }
}

TEST_P(RealSysfsTest, DwordReadsEqualPlainReads) {
  for (auto& d : backend_->devices()) {
    auto want = plain_config(d->info().bdf);
    ASSERT_EQ(want.size(), d->info().config_size);
    for (uint32_t off = 0; off < 64; off += 4) {
      uint32_t w = 0;
      for (uint32_t k = 0; k < 4; ++k) w |= uint32_t{want[off + k]} << (8 * k);
      EXPECT_EQ(d->config_read(off, 4).value_or(~w), w) << d->info().bdf.str() << " @" << off;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sysfs, RealSysfsTest, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "pread" : "io_uring"; });

}  // namespace
}  // namespace pcifs::backend::sysfs
