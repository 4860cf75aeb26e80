// SysfsBackend over sysfs-shaped temp trees: enumeration, rescan/hot-plug and
// batched config reads (io_uring and the pread fallback).
#include "sysfs/sysfs_backend.hpp"

#include <gtest/gtest.h>
#include <liburing.h>

#include <thread>

#include "fixtures/sysfs_tree.hpp"

namespace pcifs::backend::sysfs {
namespace {

using pcifs::testing::FakeFunction;
using pcifs::testing::SysfsTree;

FakeFunction function(const std::string& bdf, uint16_t device, size_t config_size = 4096) {
  FakeFunction f;
  f.bdf = bdf;
  f.config = pcifs::testing::make_config(0x1b36, device, 0x020000, config_size, 0x40);
  // Distinct bytes per device, so a batch that mixes up buffers is caught.
  for (size_t i = 0x48; i < f.config.size(); ++i) {
    f.config[i] = static_cast<uint8_t>(i * 13 + device);
  }
  return f;
}

SysfsOptions fast(bool force_pread = false, unsigned ring = 64) {
  SysfsOptions o;
  o.force_pread_batch = force_pread;
  o.ring_entries = ring;
  o.d3hot_delay = std::chrono::milliseconds(0);
  return o;
}

bool uring_available() {
  io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) != 0) return false;
  io_uring_queue_exit(&ring);
  return true;
}

std::vector<std::string> bdfs(Backend& b) {
  std::vector<std::string> out;
  for (auto& d : b.devices()) out.push_back(d->info().bdf.str());
  return out;
}

TEST(SysfsBackend, EnumeratesSortedAndSkipsJunk) {
  SysfsTree tree;
  tree.add(function("0000:02:00.0", 2));
  tree.add(function("0000:00:00.0", 0));
  auto f = function("0000:01:00.1", 1);
  f.symlinked = false;  // a plain directory works as well as a link
  tree.add(f);
  SysfsTree::write_text(tree.root() + "/devices/not-a-bdf", "");
  std::filesystem::create_directories(tree.root() + "/devices/0000:03:00.0");  // no config
  SysfsBackend b(tree.root(), fast());
  EXPECT_EQ(bdfs(b), (std::vector<std::string>{"0000:00:00.0", "0000:01:00.1", "0000:02:00.0"}));
  ASSERT_EQ(b.skipped().size(), 1u);
  EXPECT_EQ(b.skipped()[0], "0000:03:00.0: ENODEV");
  EXPECT_EQ(b.describe(), "sysfs:" + tree.root());
}

TEST(SysfsBackend, OpenReportsAMissingRoot) {
  SysfsTree tree;
  auto b = SysfsBackend::open(tree.root() + "/nope", fast());
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error(), Errno(ENOENT));
  EXPECT_TRUE(SysfsBackend::open(tree.root(), fast()));
}

struct Event {
  std::string bdf;
  bool added;
  bool operator==(const Event&) const = default;
};

TEST(SysfsBackend, RescanReportsArrivalsAndDeparturesAndKeepsObjects) {
  SysfsTree tree;
  tree.add(function("0000:00:00.0", 0));
  tree.add(function("0000:01:00.0", 1));
  SysfsBackend b(tree.root(), fast());
  std::vector<Event> events;
  b.set_hotplug_callback([&](const Bdf& bdf, bool added) { events.push_back({bdf.str(), added}); });
  auto before = b.devices();
  ASSERT_EQ(before.size(), 2u);

  b.rescan();  // nothing changed: no events, same objects
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(b.devices()[0], before[0]);

  tree.remove("0000:01:00.0");
  tree.add(function("0000:02:00.0", 2));
  b.rescan();
  EXPECT_EQ(events, (std::vector<Event>{{"0000:01:00.0", false}, {"0000:02:00.0", true}}));
  auto after = b.devices();
  EXPECT_EQ(bdfs(b), (std::vector<std::string>{"0000:00:00.0", "0000:02:00.0"}));
  EXPECT_EQ(after[0], before[0]);  // the survivor is the same Device
  EXPECT_TRUE(after[0]->config_read(0, 4));
  EXPECT_EQ(before[1]->config_read(0, 4).error(), Errno(ENODEV));
  std::vector<uint8_t> buf(4);
  EXPECT_EQ(before[1]->config_read_block(0, buf).error(), Errno(ENODEV));
}

TEST(SysfsBackend, ReturningBdfIsANewDeviceAndTheOldStaysDead) {
  SysfsTree tree;
  tree.add(function("0000:01:00.0", 1));
  SysfsBackend b(tree.root(), fast());
  auto old = b.devices().at(0);
  tree.remove("0000:01:00.0");
  b.rescan();
  tree.add(function("0000:01:00.0", 7));
  b.rescan();
  auto fresh = b.devices().at(0);
  EXPECT_NE(fresh, old);
  EXPECT_EQ(fresh->info().device, 7);
  EXPECT_EQ(old->config_read(0, 4).error(), Errno(ENODEV));
}

TEST(SysfsBackend, RescanWithoutCallbackStillMarksDeparturesGone) {
  SysfsTree tree;
  tree.add(function("0000:01:00.0", 1));
  SysfsBackend b(tree.root(), fast());
  auto dev = b.devices().at(0);
  tree.remove("0000:01:00.0");
  b.rescan();
  EXPECT_TRUE(b.devices().empty());
  EXPECT_EQ(dev->config_read(0, 4).error(), Errno(ENODEV));
}

// --- batches: the same answers with io_uring and with the fallback.

class BatchTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    for (int i = 0; i < 5; ++i) {
      std::string bdf = "0000:0" + std::to_string(i) + ":00.0";
      tree_.add(function(bdf, static_cast<uint16_t>(0x10 + i), i == 2 ? 256 : 4096));
    }
    // A tiny ring, so 5 devices x 3 ranges need several chunks.
    backend_ = std::make_unique<SysfsBackend>(tree_.root(), fast(GetParam(), 4));
  }
  bool forced() const { return GetParam(); }
  SysfsTree tree_;
  std::unique_ptr<SysfsBackend> backend_;
};

TEST_P(BatchTest, UsesTheRequestedPath) {
  if (!forced() && !uring_available()) GTEST_SKIP() << "io_uring unavailable here";
  EXPECT_EQ(backend_->batch_uses_uring(), !forced());
}

TEST_P(BatchTest, EqualsPlainReads) {
  auto devs = backend_->devices();
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<ConfigReadItem> items;
  const std::pair<uint32_t, uint32_t> ranges[] = {{0, 64}, {0x41, 7}, {0, 256}};
  for (size_t i = 0; i < devs.size(); ++i) {
    for (auto [off, len] : ranges) bufs.emplace_back(len, 0xcc);
  }
  size_t k = 0;
  for (auto& d : devs) {
    for (auto [off, len] : ranges) items.push_back({d.get(), off, bufs[k++], Errno(EIO)});
  }
  backend_->config_read_batch(items);
  k = 0;
  for (auto& d : devs) {
    for (auto [off, len] : ranges) {
      ASSERT_TRUE(items[k].result) << d->info().bdf.str() << " " << items[k].result.error().name();
      std::vector<uint8_t> plain(len);
      ASSERT_TRUE(d->config_read_block(off, plain));
      EXPECT_EQ(bufs[k], plain) << d->info().bdf.str() << " at " << off;
      ++k;
    }
  }
}

TEST_P(BatchTest, FullConfigOfEveryDeviceMatchesTheFiles) {
  auto devs = backend_->devices();
  std::vector<std::vector<uint8_t>> bufs;
  for (auto& d : devs) bufs.emplace_back(d->info().config_size);
  std::vector<ConfigReadItem> items;
  for (size_t i = 0; i < devs.size(); ++i) items.push_back({devs[i].get(), 0, bufs[i], Errno(EIO)});
  backend_->config_read_batch(items);
  for (size_t i = 0; i < devs.size(); ++i) {
    ASSERT_TRUE(items[i].result);
    auto path = tree_.dir(devs[i]->info().bdf.str()) + "/config";
    EXPECT_EQ(bufs[i], SysfsTree::read_file(path)) << devs[i]->info().bdf.str();
  }
}

TEST_P(BatchTest, EachItemGetsItsOwnError) {
  auto devs = backend_->devices();
  auto* gone = static_cast<SysfsDevice*>(devs[1].get());
  gone->mark_gone();
  std::vector<uint8_t> a(4), b(4), c(8), d(0);
  std::vector<ConfigReadItem> items = {
      {devs[0].get(), 0, a, Errno(EIO)},    // fine
      {devs[1].get(), 0, b, Errno(EIO)},    // vanished
      {devs[2].get(), 252, c, Errno(EIO)},  // past the end of a 256-byte config
      {devs[3].get(), 16, d, Errno(EIO)},   // empty: nothing to do
      {nullptr, 0, a, Errno(EIO)},          // no device at all
  };
  backend_->config_read_batch(items);
  EXPECT_TRUE(items[0].result);
  EXPECT_EQ(items[1].result.error(), Errno(ENODEV));
  EXPECT_EQ(items[2].result.error(), Errno(EINVAL));
  EXPECT_TRUE(items[3].result);
  EXPECT_EQ(items[4].result.error(), Errno(EINVAL));
}

// A device of another backend (or a decorator) in the batch is read its own way.
class ForeignDevice final : public Device {
 public:
  const DeviceInfo& info() const override { return info_; }
  Result<uint32_t> config_read(uint32_t offset, unsigned) override { return offset + 1; }
  Result<void> config_write(uint32_t, unsigned, uint32_t) override { return Errno(EIO); }
  Result<uint64_t> bar_read(unsigned, uint64_t, unsigned) override { return Errno(EIO); }
  Result<void> bar_write(unsigned, uint64_t, unsigned, uint64_t) override { return Errno(EIO); }
  Result<void> rom_enable(bool) override { return Errno(EIO); }
  Result<size_t> rom_read(uint64_t, std::span<uint8_t>) override { return Errno(EIO); }
  Result<void> set_power_state(PowerState) override { return Errno(EIO); }
  Result<void> reset() override { return Errno(EIO); }
  Result<void> remove() override { return Errno(EIO); }

 private:
  DeviceInfo info_;
};

TEST_P(BatchTest, ForeignDevicesUseTheirOwnPath) {
  ForeignDevice foreign;
  std::vector<uint8_t> a(4, 0xcc);
  std::vector<ConfigReadItem> items = {{&foreign, 8, a, Errno(EIO)}};
  backend_->config_read_batch(items);
  ASSERT_TRUE(items[0].result);
  EXPECT_EQ(a, (std::vector<uint8_t>{9, 0, 0, 0}));
}

TEST_P(BatchTest, ConcurrentBatchesDoNotMixUpResults) {
  auto devs = backend_->devices();
  auto run = [&](size_t which, bool* ok) {
    for (int round = 0; round < 50; ++round) {
      std::vector<std::vector<uint8_t>> bufs(devs.size(), std::vector<uint8_t>(64));
      std::vector<ConfigReadItem> items;
      for (size_t i = 0; i < devs.size(); ++i) {
        items.push_back({devs[(i + which) % devs.size()].get(), 0, bufs[i], Errno(EIO)});
      }
      backend_->config_read_batch(items);
      for (size_t i = 0; i < devs.size(); ++i) {
        uint16_t device = static_cast<uint16_t>(bufs[i][2] | bufs[i][3] << 8);
        if (!items[i].result || device != devs[(i + which) % devs.size()]->info().device) {
          *ok = false;
        }
      }
    }
  };
  bool ok1 = true, ok2 = true;
  std::thread t1(run, 0, &ok1), t2(run, 3, &ok2);
  t1.join();
  t2.join();
  EXPECT_TRUE(ok1);
  EXPECT_TRUE(ok2);
}

INSTANTIATE_TEST_SUITE_P(Sysfs, BatchTest, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "pread" : "io_uring"; });

}  // namespace
}  // namespace pcifs::backend::sysfs
