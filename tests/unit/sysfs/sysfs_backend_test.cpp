// SysfsBackend over sysfs-shaped temp trees: enumeration, rescan/hot-plug
// (rescan() and uevents sent to ROOT/.pcifs-uevents) and batched config reads
// (io_uring and the pread fallback).
#include "sysfs/sysfs_backend.hpp"

#include <gtest/gtest.h>
#include <liburing.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
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

// --- hot-plug [S15]: uevents sent to ROOT/.pcifs-uevents, as the kernel would.

std::string pci_uevent(const std::string& action, const std::string& bdf,
                       const std::string& subsystem = "pci") {
  const std::string path = "/devices/pci0000:00/" + bdf;
  std::string d = action + "@" + path + '\0';
  for (const std::string& f : {"ACTION=" + action, "DEVPATH=" + path, "SUBSYSTEM=" + subsystem,
                               "PCI_SLOT_NAME=" + bdf, std::string("SEQNUM=1")}) {
    d += f + '\0';
  }
  return d;
}

void send_uevent(const SysfsTree& tree, const std::string& datagram) {
  const std::string path = tree.root() + "/.pcifs-uevents";
  UniqueFd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof a.sun_path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::sendto(s.get(), datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&a),
                     sizeof a),
            static_cast<ssize_t>(datagram.size()))
      << path << ": " << strerror(errno);
}

// Callback events, from the uevent thread; waits are bounded so a broken
// build fails instead of hanging.
class Recorder {
 public:
  HotplugFn fn() {
    return [this](const Bdf& bdf, bool added) {
      std::lock_guard<std::mutex> l(mu_);
      events_.push_back({bdf.str(), added});
      cv_.notify_all();
    };
  }
  std::vector<Event> wait_for(size_t n) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(10), [&] { return events_.size() >= n; });
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Event> events_;
};

TEST(SysfsHotplug, AddAndRemoveUeventsChangeTheDeviceSet) {
  SysfsTree tree;
  tree.add(function("0000:00:00.0", 0));
  SysfsBackend b(tree.root(), fast());
  EXPECT_EQ(b.hotplug_source(), tree.root() + "/.pcifs-uevents");
  Recorder r;
  b.set_hotplug_callback(r.fn());
  tree.add(function("0000:01:00.0", 1));
  send_uevent(tree, pci_uevent("add", "0000:01:00.0"));
  EXPECT_EQ(r.wait_for(1), (std::vector<Event>{{"0000:01:00.0", true}}));
  EXPECT_EQ(bdfs(b), (std::vector<std::string>{"0000:00:00.0", "0000:01:00.0"}));
  auto dev = b.devices().at(1);
  EXPECT_EQ(dev->info().device, 1);
  tree.remove("0000:01:00.0");
  send_uevent(tree, pci_uevent("remove", "0000:01:00.0"));
  EXPECT_EQ(r.wait_for(2).back(), (Event{"0000:01:00.0", false}));
  EXPECT_EQ(bdfs(b), (std::vector<std::string>{"0000:00:00.0"}));
  EXPECT_EQ(dev->config_read(0, 4).error(), Errno(ENODEV));
}

// Each uevent looks at its own slot only: a directory nobody announced stays
// unseen (negative control), until its own uevent comes (positive control).
TEST(SysfsHotplug, OnlyTheAnnouncedSlotIsLookedAtAndNothingIsPolled) {
  SysfsTree tree;
  tree.add(function("0000:00:00.0", 0));
  SysfsBackend b(tree.root(), fast());
  Recorder r;
  b.set_hotplug_callback(r.fn());
  tree.add(function("0000:02:00.0", 2));
  send_uevent(tree, "garbage");
  send_uevent(tree, pci_uevent("add", "0000:02:00.0", "net"));
  send_uevent(tree, pci_uevent("change", "0000:02:00.0"));
  tree.add(function("0000:03:00.0", 3));
  send_uevent(tree, pci_uevent("add", "0000:03:00.0"));
  EXPECT_EQ(r.wait_for(1), (std::vector<Event>{{"0000:03:00.0", true}}));
  EXPECT_EQ(bdfs(b), (std::vector<std::string>{"0000:00:00.0", "0000:03:00.0"}));
  auto st = b.uevent_stats();
  EXPECT_EQ(st.malformed, 1u);
  EXPECT_EQ(st.ignored, 2u);
  EXPECT_EQ(st.delivered, 1u);
  send_uevent(tree, pci_uevent("add", "0000:02:00.0"));
  EXPECT_EQ(r.wait_for(2).back(), (Event{"0000:02:00.0", true}));
}

// `udevadm trigger --action=add` and a remove for a function still there are
// synthetic: the device and the handles on it stay.
TEST(SysfsHotplug, SyntheticAddOrRemoveKeepsTheDevice) {
  SysfsTree tree;
  tree.add(function("0000:01:00.0", 1));
  SysfsBackend b(tree.root(), fast());
  Recorder r;
  b.set_hotplug_callback(r.fn());
  auto dev = b.devices().at(0);
  send_uevent(tree, pci_uevent("add", "0000:01:00.0"));
  send_uevent(tree, pci_uevent("remove", "0000:01:00.0"));
  tree.add(function("0000:02:00.0", 2));
  send_uevent(tree, pci_uevent("add", "0000:02:00.0"));  // the sync point
  EXPECT_EQ(r.wait_for(1), (std::vector<Event>{{"0000:02:00.0", true}}));
  EXPECT_EQ(b.devices().at(0), dev);
  EXPECT_TRUE(dev->config_read(0, 4));
}

// A driver change is a departure and an arrival: the new Device carries the
// new owner, the old one is dead. A repeated bind changes nothing.
TEST(SysfsHotplug, BindAndUnbindReplaceTheDeviceWithItsNewOwner) {
  SysfsTree tree;
  const std::string fn_dir = tree.add(function("0000:01:00.0", 1));
  SysfsBackend b(tree.root(), fast());
  Recorder r;
  b.set_hotplug_callback(r.fn());
  auto unbound = b.devices().at(0);
  ASSERT_FALSE(unbound->info().driver);
  std::filesystem::create_directories(tree.root() + "/drivers/nvme");
  std::filesystem::create_directory_symlink("../../../bus/pci/drivers/nvme", fn_dir + "/driver");
  send_uevent(tree, pci_uevent("bind", "0000:01:00.0"));
  EXPECT_EQ(r.wait_for(2), (std::vector<Event>{{"0000:01:00.0", false}, {"0000:01:00.0", true}}));
  auto bound = b.devices().at(0);
  EXPECT_EQ(bound->info().driver, "nvme");
  EXPECT_EQ(unbound->config_read(0, 4).error(), Errno(ENODEV));
  send_uevent(tree, pci_uevent("bind", "0000:01:00.0"));  // nothing changed
  tree.add(function("0000:02:00.0", 2));
  send_uevent(tree, pci_uevent("add", "0000:02:00.0"));
  EXPECT_EQ(r.wait_for(3).size(), 3u);
  EXPECT_EQ(b.devices().at(0), bound);
  std::filesystem::remove(fn_dir + "/driver");
  send_uevent(tree, pci_uevent("unbind", "0000:01:00.0"));
  auto ev = r.wait_for(5);
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[3], (Event{"0000:01:00.0", false}));
  EXPECT_EQ(ev[4], (Event{"0000:01:00.0", true}));
  EXPECT_FALSE(b.devices().at(0)->info().driver);
  EXPECT_EQ(bound->config_read(0, 4).error(), Errno(ENODEV));
}

// 0000:01:00.0 bound to nvme, on a backend with the given unbind settle;
// unbind() takes the driver link away and sends the uevent, as the kernel does.
class BoundSlot {
 public:
  explicit BoundSlot(std::chrono::milliseconds settle) {
    FakeFunction f = function(kSlot, 1);
    f.driver = "nvme";
    dir_ = tree.add(f);
    SysfsOptions o = fast();
    o.unbind_settle = settle;
    b = std::make_unique<SysfsBackend>(tree.root(), o);
    b->set_hotplug_callback(r.fn());
  }
  void unbind() {
    std::filesystem::remove(dir_ + "/driver");
    send_uevent(tree, pci_uevent("unbind", kSlot));
  }
  void remove() {
    tree.remove(kSlot);
    send_uevent(tree, pci_uevent("remove", kSlot));
  }
  void bind_stub() {
    std::filesystem::create_directories(tree.root() + "/drivers/pci-stub");
    std::filesystem::create_directory_symlink("../../../bus/pci/drivers/pci-stub",
                                              dir_ + "/driver");
    send_uevent(tree, pci_uevent("bind", kSlot));
  }
  static constexpr const char* kSlot = "0000:01:00.0";
  SysfsTree tree;
  std::unique_ptr<SysfsBackend> b;
  Recorder r;

 private:
  std::string dir_;
};

// A removal sends `unbind` then `remove`, and the directory can still be
// there when the unbind is handled: the dying function must not come back
// unbound in between (it would be mediated in full, DOE Discovery included).
TEST(SysfsHotplug, UnbindThenRemoveNeverShowsTheDyingFunctionUnbound) {
  const auto settle = std::chrono::milliseconds(100);
  BoundSlot s(settle);
  s.unbind();
  EXPECT_EQ(s.r.wait_for(1), (std::vector<Event>{{"0000:01:00.0", false}}));
  s.remove();
  std::this_thread::sleep_for(3 * settle);  // well past the settle
  s.tree.add(function("0000:02:00.0", 2));
  send_uevent(s.tree, pci_uevent("add", "0000:02:00.0"));  // the sync point
  EXPECT_EQ(s.r.wait_for(2), (std::vector<Event>{{"0000:01:00.0", false}, {"0000:02:00.0", true}}));
  EXPECT_EQ(bdfs(*s.b), (std::vector<std::string>{"0000:02:00.0"}));
}

// Negative control for the test above: with no settle (how it was before),
// the same sequence does show the dying function unbound in between.
TEST(SysfsHotplug, WithoutTheSettleTheDyingFunctionComesBackUnbound) {
  BoundSlot s(std::chrono::milliseconds(0));
  s.unbind();
  EXPECT_EQ(s.r.wait_for(2), (std::vector<Event>{{"0000:01:00.0", false}, {"0000:01:00.0", true}}));
  s.remove();
  EXPECT_EQ(s.r.wait_for(3).back(), (Event{"0000:01:00.0", false}));
}

// An unbind that no removal follows (an administrator's) shows the function
// again, unbound, once the settle has passed, and not before.
TEST(SysfsHotplug, APlainUnbindShowsTheFunctionUnboundAfterTheSettle) {
  const auto settle = std::chrono::milliseconds(200);
  BoundSlot s(settle);
  const auto sent = std::chrono::steady_clock::now();
  s.unbind();
  auto ev = s.r.wait_for(2);
  const auto waited = std::chrono::steady_clock::now() - sent;
  ASSERT_EQ(ev, (std::vector<Event>{{"0000:01:00.0", false}, {"0000:01:00.0", true}}));
  EXPECT_GE(waited, settle);
  ASSERT_EQ(s.b->devices().size(), 1u);
  EXPECT_FALSE(s.b->devices().at(0)->info().driver);
}

// The slot's next uevent (here a bind to pci-stub) ends the wait at once.
TEST(SysfsHotplug, TheSlotsNextUeventEndsTheSettle) {
  BoundSlot s(std::chrono::seconds(30));  // a settle the test would notice
  s.unbind();
  s.bind_stub();
  EXPECT_EQ(s.r.wait_for(2), (std::vector<Event>{{"0000:01:00.0", false}, {"0000:01:00.0", true}}));
  ASSERT_EQ(s.b->devices().size(), 1u);
  EXPECT_EQ(s.b->devices().at(0)->info().driver, "pci-stub");
}

// Without uevents, rescan() still tells a re-created directory (the old config
// stays open, so its inode cannot be reused) and a driver change.
TEST(SysfsHotplug, RescanNoticesARecreatedDirectoryAndADriverChange) {
  SysfsTree tree;
  tree.add(function("0000:01:00.0", 1));
  SysfsOptions o = fast();
  o.uevents = false;
  SysfsBackend b(tree.root(), o);
  EXPECT_EQ(b.hotplug_source(), "off: disabled");
  EXPECT_FALSE(std::filesystem::exists(tree.root() + "/.pcifs-uevents"));
  std::vector<Event> events;
  b.set_hotplug_callback([&](const Bdf& bdf, bool added) { events.push_back({bdf.str(), added}); });
  auto old = b.devices().at(0);
  tree.remove("0000:01:00.0");
  tree.add(function("0000:01:00.0", 9));  // another function, same slot, same (no) driver
  b.rescan();
  EXPECT_EQ(events, (std::vector<Event>{{"0000:01:00.0", false}, {"0000:01:00.0", true}}));
  EXPECT_EQ(old->config_read(0, 4).error(), Errno(ENODEV));
  EXPECT_EQ(b.devices().at(0)->info().device, 9);
  b.rescan();  // control: nothing changed, nothing reported
  EXPECT_EQ(events.size(), 2u);
  std::filesystem::create_directories(tree.root() + "/drivers/e1000e");
  std::filesystem::create_directory_symlink("../../../bus/pci/drivers/e1000e",
                                            tree.dir("0000:01:00.0") + "/driver");
  b.rescan();
  EXPECT_EQ(events.size(), 4u);
  EXPECT_EQ(b.devices().at(0)->info().driver, "e1000e");
  std::filesystem::remove(tree.dir("0000:01:00.0") + "/driver");
  b.rescan();
  EXPECT_EQ(events.size(), 6u);
  EXPECT_FALSE(b.devices().at(0)->info().driver);
}

TEST(SysfsHotplug, ASecondBackendOnOneTreeRunsWithoutHotplugAndSaysSo) {
  SysfsTree tree;
  SysfsBackend first(tree.root(), fast());
  std::vector<std::string> warnings;
  SysfsOptions o = fast();
  o.warn = [&](const std::string& m) { warnings.push_back(m); };
  SysfsBackend second(tree.root(), o);
  EXPECT_EQ(second.hotplug_source(), "off: " + tree.root() + "/.pcifs-uevents: EADDRINUSE");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("hot-plug off"), std::string::npos) << warnings[0];
  Recorder r;
  first.set_hotplug_callback(r.fn());  // the first one still follows the tree
  tree.add(function("0000:01:00.0", 1));
  send_uevent(tree, pci_uevent("add", "0000:01:00.0"));
  EXPECT_EQ(r.wait_for(1).size(), 1u);
}

TEST(SysfsHotplug, DestructionStopsTheReaderAndRemovesTheSocket) {
  SysfsTree tree;
  const std::string sock = tree.root() + "/.pcifs-uevents";
  {
    SysfsBackend b(tree.root(), fast());
    EXPECT_TRUE(std::filesystem::is_socket(sock));
    b.set_hotplug_callback([](const Bdf&, bool) {});
    EXPECT_TRUE(b.uevent_stats().running);
  }
  EXPECT_FALSE(std::filesystem::exists(sock));
  { SysfsBackend never_started(tree.root(), fast()); }
  EXPECT_FALSE(std::filesystem::exists(sock));
}

// A daemon changes directory after opening the backend: rescans must still
// find a tree given by a relative path.
TEST(SysfsBackend, ARelativeRootIsMadeAbsolute) {
  SysfsTree tree;
  tree.add(function("0000:01:00.0", 1));
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(std::filesystem::path(tree.root()).parent_path());
  SysfsOptions o = fast();
  o.uevents = false;
  SysfsBackend b("pci", o);
  std::filesystem::current_path("/");
  b.rescan();
  std::filesystem::current_path(cwd);
  EXPECT_EQ(b.describe(), "sysfs:" + tree.root());
  EXPECT_EQ(bdfs(b), (std::vector<std::string>{"0000:01:00.0"}));
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
