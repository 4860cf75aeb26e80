// Kernel uevents (backend/sysfs/uevent.hpp): the datagram parser, including
// garbage and every truncation; the reader thread over a socketpair (only
// believed senders get through, attached fds are closed); the unix socket a
// temp tree listens on; and the netlink socket (opened read-only, never sent
// to), which a backend rooted on sysfs picks.
#include "sysfs/uevent.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "sysfs/sysfs_backend.hpp"

namespace pcifs::backend::sysfs {
namespace {

using namespace std::string_literals;

// A datagram exactly as lib/kobject_uevent.c builds it.
std::string kernel_uevent(const std::string& action, const std::string& devpath,
                          const std::string& subsystem, const std::string& slot = "",
                          const std::string& extra = "") {
  std::string d = action + "@" + devpath + '\0';
  d += "ACTION=" + action + '\0';
  d += "DEVPATH=" + devpath + '\0';
  d += "SUBSYSTEM=" + subsystem + '\0';
  if (!slot.empty()) d += "PCI_SLOT_NAME=" + slot + '\0';
  d += extra;
  d += "SEQNUM=4711"s + '\0';
  return d;
}

std::string pci(const std::string& action, const std::string& bdf = "0000:01:00.0") {
  return kernel_uevent(action, "/devices/pci0000:00/0000:00:1c.0/" + bdf, "pci", bdf,
                       "PCI_CLASS=10802\0PCI_ID=1B36:0010\0MODALIAS=pci:v00001B36\0"s);
}

TEST(ParseUevent, KernelAddForAPciFunction) {
  auto ev = parse_uevent(pci("add"));
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->action, "add");
  EXPECT_EQ(ev->devpath, "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0");
  EXPECT_EQ(ev->subsystem, "pci");
  EXPECT_EQ(ev->slot, "0000:01:00.0");
  auto p = pci_event(*ev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->action, PciAction::kAdd);
  EXPECT_EQ(p->bdf.str(), "0000:01:00.0");
}

TEST(ParseUevent, TheFourPciActionsAndNothingElse) {
  const std::pair<const char*, std::optional<PciAction>> cases[] = {
      {"add", PciAction::kAdd},       {"remove", PciAction::kRemove}, {"bind", PciAction::kBind},
      {"unbind", PciAction::kUnbind}, {"change", std::nullopt},       {"move", std::nullopt},
      {"online", std::nullopt},       {"ADD", std::nullopt}};
  for (auto& [action, want] : cases) {
    auto ev = parse_uevent(pci(action));
    ASSERT_TRUE(ev) << action;
    auto p = pci_event(*ev);
    EXPECT_EQ(p.has_value(), want.has_value()) << action;
    if (p && want) {
      EXPECT_EQ(p->action, *want) << action;
    }
  }
}

TEST(ParseUevent, OtherSubsystemsAndDriverObjectsAreNotPciEvents) {
  // Same slot text, wrong subsystem: must not count.
  auto net = parse_uevent(kernel_uevent("add", "/devices/virtual/net/x", "net", "0000:01:00.0"));
  ASSERT_TRUE(net);
  EXPECT_FALSE(pci_event(*net));
  auto drv = parse_uevent(kernel_uevent("add", "/bus/pci/drivers/nvme", "drivers"));
  ASSERT_TRUE(drv);
  EXPECT_FALSE(pci_event(*drv));
  // A pci_bus object (SUBSYSTEM=pci_bus) is not a function either.
  auto bus = parse_uevent(kernel_uevent("add", "/devices/pci0000:00/pci_bus/0000:00", "pci_bus"));
  ASSERT_TRUE(bus);
  EXPECT_FALSE(pci_event(*bus));
}

TEST(ParseUevent, SlotFallsBackToTheDevpathAndMustBeABdf) {
  auto ev = parse_uevent(kernel_uevent("remove", "/devices/pci0000:00/0000:02:03.1", "pci"));
  ASSERT_TRUE(ev);
  auto p = pci_event(*ev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->bdf.str(), "0000:02:03.1");
  auto bad = parse_uevent(kernel_uevent("add", "/devices/pci0000:00/x", "pci", "zz:01:00.0"));
  ASSERT_TRUE(bad);
  EXPECT_FALSE(pci_event(*bad));
  auto nodev = parse_uevent(kernel_uevent("add", "/devices/pci0000:00", "pci"));
  ASSERT_TRUE(nodev);
  EXPECT_FALSE(pci_event(*nodev));
}

TEST(ParseUevent, UdevMessagesAreIgnored) {
  // udev's framing: "libudev\0", a binary header, then the same properties.
  std::string m = "libudev\0"s + "\xca\xfe\xed\xfe" + std::string(32, '\x01');
  m += pci("add");
  EXPECT_FALSE(parse_uevent(m));
  EXPECT_FALSE(parse_uevent("libudev\0"s));
}

struct Bad {
  const char* name;
  std::string datagram;
};

class MalformedUevent : public ::testing::TestWithParam<Bad> {};

TEST_P(MalformedUevent, IsRefused) { EXPECT_FALSE(parse_uevent(GetParam().datagram)); }

const std::string kGood = pci("add");
INSTANTIATE_TEST_SUITE_P(
    Garbage, MalformedUevent,
    ::testing::Values(
        Bad{"empty", ""}, Bad{"one_nul", "\0"s},
        Bad{"no_final_nul", kGood.substr(0, kGood.size() - 1)},
        Bad{"header_only", "add@/devices/x\0"s},
        Bad{"no_at", "add/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=pci\0"s},
        Bad{"empty_action", "@/devices/x\0ACTION=\0DEVPATH=/devices/x\0SUBSYSTEM=pci\0"s},
        Bad{"relative_devpath", "add@devices/x\0ACTION=add\0DEVPATH=devices/x\0SUBSYSTEM=pci\0"s},
        Bad{"field_without_eq", "add@/d/x\0ACTION=add\0DEVPATH=/d/x\0SUBSYSTEM=pci\0JUNK\0"s},
        Bad{"empty_key", "add@/d/x\0ACTION=add\0DEVPATH=/d/x\0SUBSYSTEM=pci\0=v\0"s},
        Bad{"empty_field", "add@/d/x\0ACTION=add\0\0DEVPATH=/d/x\0SUBSYSTEM=pci\0"s},
        Bad{"action_mismatch", "add@/d/x\0ACTION=remove\0DEVPATH=/d/x\0SUBSYSTEM=pci\0"s},
        Bad{"devpath_mismatch", "add@/d/x\0ACTION=add\0DEVPATH=/d/y\0SUBSYSTEM=pci\0"s},
        Bad{"no_subsystem", "add@/d/x\0ACTION=add\0DEVPATH=/d/x\0"s},
        Bad{"no_action", "add@/d/x\0DEVPATH=/d/x\0SUBSYSTEM=pci\0"s},
        Bad{"two_subsystems",
            "add@/d/x\0ACTION=add\0DEVPATH=/d/x\0SUBSYSTEM=net\0SUBSYSTEM=pci\0"s},
        Bad{"two_slots", kGood + "PCI_SLOT_NAME=0000:02:00.0\0"s},
        Bad{"oversized", kGood + "X=" + std::string(kMaxUeventSize, 'a') + '\0'}),
    [](const ::testing::TestParamInfo<Bad>& i) { return std::string(i.param.name); });

// Control for the table: the good datagram it is cut from parses.
TEST(ParseUevent, TheGoodOneParses) { EXPECT_TRUE(parse_uevent(kGood)); }

TEST(ParseUevent, EveryTruncationIsRefusedOrAFieldBoundary) {
  for (size_t n = 0; n < kGood.size(); ++n) {
    const std::string cut = kGood.substr(0, n);
    auto ev = parse_uevent(cut);
    if (n == 0 || cut.back() != '\0') {
      EXPECT_FALSE(ev) << "cut at " << n;
    } else if (ev) {
      // Cut exactly after a whole field: a shorter but complete datagram.
      EXPECT_EQ(ev->action, "add");
      EXPECT_EQ(ev->subsystem, "pci");
    }
  }
}

TEST(ParseUevent, RandomBytesAndFlipsNeverCrashAndNeverInventAnAction) {
  std::mt19937 rng(1234);  // fixed seed: the same inputs every run
  for (int i = 0; i < 20000; ++i) {
    std::string junk(rng() % 300, '\0');
    for (auto& c : junk) c = static_cast<char>(rng() % 4 == 0 ? 0 : rng() % 256);
    (void)parse_uevent(junk);
  }
  for (size_t at = 0; at < kGood.size(); ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string m = kGood;
      m[at] = static_cast<char>(m[at] ^ (1 << bit));
      auto ev = parse_uevent(m);
      // A flip may still parse (in SEQNUM, say) but ACTION must agree with the header.
      if (ev) {
        EXPECT_EQ(kGood.find(ev->action + "@"), 0u) << at << "/" << bit;
      }
    }
  }
}

// --- the monitor over a socketpair

struct Collected {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<PciEvent> events;
  void add(const PciEvent& e) {
    std::lock_guard<std::mutex> l(mu);
    events.push_back(e);
    cv.notify_all();
  }
  // Waits for `n` events (the reader runs on its own thread); false after 10 s.
  bool wait_for(size_t n) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(10), [&] { return events.size() >= n; });
  }
};

class MonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    const int on = 1;
    ASSERT_EQ(setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
    src_.fd.reset(sv[0]);
    src_.name = "socketpair";
    peer_.reset(sv[1]);
  }
  void start(UeventSender sender) {
    src_.sender = sender;
    mon_ = std::make_unique<UeventMonitor>(std::move(src_));
    ASSERT_TRUE(mon_->start([this](const PciEvent& e) { got_.add(e); }, [] {}));
  }
  void send(const std::string& d) {
    ASSERT_EQ(::send(peer_.get(), d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
  }
  UeventSource src_;
  UniqueFd peer_;
  Collected got_;
  std::unique_ptr<UeventMonitor> mon_;
};

TEST_F(MonitorTest, GarbageIsDroppedAndTheNextGoodEventArrives) {
  start(UeventSender::kLocal);
  send("hello");
  send(kGood.substr(0, 20));
  send("libudev\0"s + pci("add", "0000:05:00.0"));
  send(kernel_uevent("add", "/devices/virtual/net/x", "net", "0000:05:00.0"));
  send(pci("change", "0000:05:00.0"));
  send(std::string(kMaxUeventSize + 100, 'x'));  // longer than the reader's buffer
  send(pci("remove", "0000:07:00.0"));
  ASSERT_TRUE(got_.wait_for(1));
  ASSERT_EQ(got_.events.size(), 1u);
  EXPECT_EQ(got_.events[0].action, PciAction::kRemove);
  EXPECT_EQ(got_.events[0].bdf.str(), "0000:07:00.0");
  auto st = mon_->stats();
  EXPECT_EQ(st.datagrams, 7u);
  EXPECT_EQ(st.malformed, 4u);  // hello, cut, libudev, oversized
  EXPECT_EQ(st.ignored, 2u);    // net, change
  EXPECT_EQ(st.delivered, 1u);
  EXPECT_EQ(st.untrusted, 0u);
  EXPECT_TRUE(st.running);
}

TEST_F(MonitorTest, EventsKeepTheirOrder) {
  start(UeventSender::kLocal);
  send(pci("add", "0000:01:00.0"));
  send(pci("bind", "0000:01:00.0"));
  send(pci("unbind", "0000:01:00.0"));
  send(pci("remove", "0000:01:00.0"));
  ASSERT_TRUE(got_.wait_for(4));
  std::vector<PciAction> order;
  for (auto& e : got_.events) order.push_back(e.action);
  EXPECT_EQ(order, (std::vector<PciAction>{PciAction::kAdd, PciAction::kBind, PciAction::kUnbind,
                                           PciAction::kRemove}));
}

// The timer: nothing before the first datagram (nothing can be deferred
// yet), then after each burst and whenever the delay it asked for passes,
// until it asks for nothing.
TEST_F(MonitorTest, TheTimerRunsAfterBurstsAndWhenItsDelayPasses) {
  src_.sender = UeventSender::kLocal;
  mon_ = std::make_unique<UeventMonitor>(std::move(src_));
  std::atomic<int> calls{0};
  std::atomic<int> wanted{3};  // ask again this many times, 20 ms apart
  ASSERT_TRUE(mon_->start([this](const PciEvent& e) { got_.add(e); }, [] {}, {},
                          [&]() -> std::optional<std::chrono::milliseconds> {
                            ++calls;
                            if (wanted.load() <= 0) return std::nullopt;
                            --wanted;
                            return std::chrono::milliseconds(20);
                          }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls.load(), 0);
  send(pci("add", "0000:01:00.0"));
  ASSERT_TRUE(got_.wait_for(1));
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (calls.load() < 4 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(calls.load(), 4);  // after the burst, then three delays
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls.load(), 4);  // it asked for nothing more
}

// A kernel source believes only netlink datagrams from port 0: a unix peer
// (even root) is never the kernel.
TEST_F(MonitorTest, KernelSourceRefusesAnyoneElse) {
  start(UeventSender::kKernel);
  send(pci("add"));
  send(pci("remove"));
  // No event can ever come: wait for the reader to have looked at both.
  for (int i = 0; i < 1000 && mon_->stats().datagrams < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto st = mon_->stats();
  EXPECT_EQ(st.datagrams, 2u);
  EXPECT_EQ(st.untrusted, 2u);
  EXPECT_EQ(st.delivered, 0u);
  EXPECT_TRUE(got_.events.empty());
}

TEST_F(MonitorTest, ALocalSenderWithAnotherUidIsNotBelieved) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to send as another user";
  start(UeventSender::kLocal);
  const std::string d = pci("add", "0000:09:00.0");
  const pid_t child = fork();
  if (child == 0) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(2);
    _exit(::send(peer_.get(), d.data(), d.size(), 0) == static_cast<ssize_t>(d.size()) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(status, 0) << "the child could not send as nobody";
  send(pci("add", "0000:01:00.0"));  // ours: the control, and the sync point
  ASSERT_TRUE(got_.wait_for(1));
  ASSERT_EQ(got_.events.size(), 1u);
  EXPECT_EQ(got_.events[0].bdf.str(), "0000:01:00.0");
  EXPECT_EQ(mon_->stats().untrusted, 1u);
}

TEST_F(MonitorTest, AttachedDescriptorsAreClosedAndTheDatagramDropped) {
  start(UeventSender::kLocal);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const std::string d = pci("add", "0000:09:00.0");
  iovec iov{const_cast<char*>(d.data()), d.size()};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &p[1], sizeof(int));
  ASSERT_EQ(sendmsg(peer_.get(), &msg, 0), static_cast<ssize_t>(d.size()));
  close(p[1]);
  send(pci("add", "0000:01:00.0"));
  ASSERT_TRUE(got_.wait_for(1));
  EXPECT_EQ(got_.events.size(), 1u);
  EXPECT_EQ(got_.events[0].bdf.str(), "0000:01:00.0");
  EXPECT_EQ(mon_->stats().untrusted, 1u);
  // Every write end is closed, the one the reader received included: EOF.
  char b;
  EXPECT_EQ(read(p[0], &b, 1), 0);
  close(p[0]);
}

TEST_F(MonitorTest, StopEndsTheThreadAndIsIdempotent) {
  start(UeventSender::kLocal);
  send(pci("add"));
  ASSERT_TRUE(got_.wait_for(1));
  mon_->stop();
  EXPECT_FALSE(mon_->stats().running);
  mon_->stop();
  EXPECT_TRUE(mon_->start([](const PciEvent&) {}, [] {}));  // started once: no second thread
  EXPECT_FALSE(mon_->stats().running);
}

TEST(UeventMonitor, StopWithoutStartAndDestructionAreHarmless) {
  UeventSource s;
  UeventMonitor m(std::move(s));
  m.stop();
  EXPECT_FALSE(m.start([](const PciEvent&) {}, [] {}));  // no socket: EBADF
}

// --- the unix socket of a temp tree

class LocalSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/pcifs-uev-XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
    path_ = dir_ + "/.pcifs-uevents";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  bool is_socket() const {
    struct stat st {};
    return lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
  }
  int sendto_path(const std::string& d) const {
    UniqueFd s(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    return sendto(s.get(), d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0
               ? errno
               : 0;
  }
  std::string dir_, path_;
};

TEST_F(LocalSocketTest, BindsOwnerOnlyReceivesAndUnlinksOnDestruction) {
  {
    auto s = open_local_uevents(path_);
    ASSERT_TRUE(s) << s.error().name();
    struct stat st {};
    ASSERT_EQ(lstat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    UeventMonitor m(std::move(*s));
    Collected got;
    ASSERT_TRUE(m.start([&](const PciEvent& e) { got.add(e); }, [] {}));
    EXPECT_EQ(sendto_path(pci("add", "0000:03:00.0")), 0);
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(got.events[0].bdf.str(), "0000:03:00.0");
  }
  EXPECT_FALSE(is_socket()) << "the monitor leaves its socket behind";
}

TEST_F(LocalSocketTest, ALiveSocketIsNotStolenAStaleOneIsReplaced) {
  auto first = open_local_uevents(path_);
  ASSERT_TRUE(first);
  auto second = open_local_uevents(path_);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error(), Errno(EADDRINUSE));
  first->fd.reset();  // the first owner dies without cleaning up: a stale file
  ASSERT_TRUE(is_socket());
  auto third = open_local_uevents(path_);
  ASSERT_TRUE(third) << third.error().name();
}

TEST_F(LocalSocketTest, AnythingElseAtThePathIsLeftAlone) {
  { std::ofstream(path_) << "mine"; }
  auto s = open_local_uevents(path_);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), Errno(EEXIST));
  EXPECT_FALSE(is_socket());
  EXPECT_TRUE(std::filesystem::is_regular_file(path_));
}

TEST_F(LocalSocketTest, ReplacedSocketIsNotUnlinkedByTheOldOwner) {
  auto a = open_local_uevents(path_);
  ASSERT_TRUE(a);
  auto old = std::make_unique<UeventMonitor>(std::move(*a));
  ::unlink(path_.c_str());  // someone else took the path over
  auto b = open_local_uevents(path_);
  ASSERT_TRUE(b);
  old.reset();
  EXPECT_TRUE(is_socket()) << "the old monitor removed the new owner's socket";
}

TEST(LocalSocket, TooLongAPathIsRefused) {
  auto s = open_local_uevents("/tmp/" + std::string(200, 'x'));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), Errno(ENAMETOOLONG));
}

// Listening to the kernel is read-only and needs no privilege; it is opened,
// started and stopped here, and nothing is ever sent to it.
TEST(KernelUevents, OpensAndStops) {
  auto s = open_kernel_uevents();
  if (!s) GTEST_SKIP() << "no NETLINK_KOBJECT_UEVENT here: " << s.error().name();
  EXPECT_EQ(s->sender, UeventSender::kKernel);
  EXPECT_TRUE(s->path.empty());
  UeventMonitor m(std::move(*s));
  ASSERT_TRUE(m.start([](const PciEvent&) {}, [] {}));
  EXPECT_TRUE(m.stats().running);
  m.stop();
  EXPECT_FALSE(m.stats().running);
}

// A root on sysfs listens to the kernel, not to a socket file it could not
// create there. /sys/fs is sysfs but holds no PCI device: only read, nothing
// enumerated, nothing sent.
TEST(KernelUevents, ARootOnSysfsListensOnNetlink) {
  struct statfs st {};
  if (statfs("/sys/fs", &st) != 0 || st.f_type != SYSFS_MAGIC) {
    GTEST_SKIP() << "no sysfs at /sys";
  }
  if (!open_kernel_uevents()) GTEST_SKIP() << "no NETLINK_KOBJECT_UEVENT here";
  std::vector<std::string> warnings;
  SysfsOptions o;
  o.warn = [&](const std::string& m) { warnings.push_back(m); };
  SysfsBackend b("/sys/fs", o);
  EXPECT_EQ(b.hotplug_source(), "netlink uevents");
  EXPECT_TRUE(warnings.empty());
  EXPECT_TRUE(b.devices().empty());
}

}  // namespace
}  // namespace pcifs::backend::sysfs
