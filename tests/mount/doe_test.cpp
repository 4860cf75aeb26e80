// S8 through the mount: the doe exchange file with plain syscalls. 01:00.0 has
// one healthy mailbox (Discovery, CDAT, echo); 02:00.0 has a healthy `doe` and
// a `doe.1` that never responds, which gives a response that stays pending
// until the daemon's timeout (ETIMEDOUT) -- the window the poll, nonblock,
// interrupt and kill tests need. The daemon runs with --doe-timeout=3000, not
// the default 1 s, so that a loaded machine has time to act inside the window.
#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>

#include <set>
#include <thread>

#include "fixtures/mount_doe.hpp"

namespace pcifs::testing {
namespace {

constexpr const char* kCxl = "0000:01:00.0";
constexpr const char* kTwoBox = "0000:02:00.0";

class DoeTest : public MountTest {
 protected:
  std::vector<std::string> daemon_args() override { return {"--doe-timeout=3000"}; }
  // Discovery of doe.1 takes the whole timeout: only the tests that count
  // that mailbox's exchanges or queue wait for it (settled()).
  bool settled_start() override { return false; }
  bool settled(const char* bdf) const { return list_errno(d_->dev(bdf) + "/doe_features") == 0; }
  std::string doe(const char* bdf = kCxl, const char* name = "doe") const {
    return d_->dev(bdf) + "/" + name;
  }
  nlohmann::json mailbox(const char* bdf, size_t m) const {
    auto d = device_status(d_->mnt(), bdf);
    return d.is_object() ? d["doe"][m] : nlohmann::json();
  }
};

TEST_F(DoeTest, DiscoveryExchangeReturnsTheFirstProtocol) {
  DoeFile f(doe());
  ASSERT_TRUE(f.ok()) << strerror(f.open_errno());
  auto w = f.write_obj(discovery_request(0));
  ASSERT_EQ(w.n, 12) << strerror(w.err);
  auto r = f.read_some(4096);
  ASSERT_EQ(r.n, 12) << strerror(r.err);
  // Index 0 is Discovery itself; next index 1 (PCIe 6.0 §6.30.1.1).
  EXPECT_EQ(to_dwords(r.data), (Dwords{doe_dw0(0x0001, 0x00), 3, 0x01000001}));
}

TEST_F(DoeTest, ShortBufferReadsThePartsAndTheResponseIsConsumedOnce) {
  DoeFile f(doe());
  ASSERT_TRUE(f.ok());
  // CDAT entry 0 (the 16-byte CDAT header): a 7-dword response.
  auto whole = f.exchange(cdat_request(0));
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->size(), 7u);
  EXPECT_EQ((*whole)[0], doe_dw0(0x1e98, 0x02));
  EXPECT_EQ((*whole)[1], 7u);

  ASSERT_EQ(f.write_obj(cdat_request(0)).n, 12);
  std::string parts;
  for (size_t len : {8u, 8u, 5u}) {
    auto r = f.read_some(len);
    ASSERT_EQ(r.n, static_cast<ssize_t>(len)) << strerror(r.err);
    parts += r.data;
  }
  auto rest = f.read_some(4096);
  ASSERT_EQ(rest.n, 7);  // only what is left, not a new object
  parts += rest.data;
  EXPECT_EQ(to_dwords(parts), *whole);
  // Read to its end: consumed. Nothing more to read, and a new exchange may start.
  EXPECT_EQ(f.read_some(4096).n, 0);
  EXPECT_EQ(f.write_obj(discovery_request(0)).n, 12);
  EXPECT_EQ(f.read_some(4096).n, 12);
}

TEST_F(DoeTest, SecondWriteBeforeTheResponseIsReadIsEbusy) {
  DoeFile f(doe());
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(f.write_obj(discovery_request(0)).n, 12);
  auto second = f.write_obj(discovery_request(1));
  EXPECT_EQ(second.n, -1);
  EXPECT_EQ(second.err, EBUSY);
  // The first exchange is intact; once it is read the handle takes a new one.
  auto r = f.read_some(4096);
  ASSERT_EQ(r.n, 12);
  EXPECT_EQ(to_dwords(r.data)[2] & 0xffffff, 0x000001u);  // Discovery: index 0's answer
  EXPECT_EQ(f.write_obj(discovery_request(1)).n, 12);
  // A second handle is independent: its own exchange while this one is in flight.
  DoeFile g(doe());
  EXPECT_TRUE(g.exchange(discovery_request(0)));
  r = f.read_some(4096);
  ASSERT_EQ(r.n, 12);
  EXPECT_EQ(to_dwords(r.data)[2] & 0xffffff, 0x021e98u);  // index 1: CDAT
}

TEST_F(DoeTest, NonblockingReadAndPollWhileTheResponseIsPending) {
  ASSERT_TRUE(settled(kTwoBox));
  // Control: on the healthy mailbox the response is there at once.
  DoeFile good(doe(kTwoBox, "doe"), O_RDWR | O_NONBLOCK);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good.poll_in(0) & POLLIN, 0) << "nothing asked yet: nothing to read";
  ASSERT_EQ(good.write_obj(discovery_request(0)).n, 12);
  EXPECT_NE(good.poll_in(5000) & POLLIN, 0);
  EXPECT_EQ(good.read_some(4096).n, 12);

  // The dead mailbox: pending until the daemon gives up after its timeout.
  DoeFile dead(doe(kTwoBox, "doe.1"), O_RDWR | O_NONBLOCK);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead.write_obj(discovery_request(0)).n, 12);
  auto r = dead.read_some(4096);
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, EAGAIN);
  EXPECT_EQ(dead.poll_in(0) & POLLIN, 0);
  EXPECT_NE(dead.poll_in(10000) & POLLIN, 0) << "poll must wake when the exchange ends";
  r = dead.read_some(4096);
  EXPECT_EQ(r.n, -1);
  EXPECT_EQ(r.err, ETIMEDOUT);
  // The error is delivered once; the mailbox was aborted, not killed.
  EXPECT_EQ(dead.read_some(4096).n, 0);
  // FIFO: a second handle's exchange runs only after the first one ended.
  DoeFile first(doe(kTwoBox, "doe.1"), O_RDWR | O_NONBLOCK);
  DoeFile second(doe(kTwoBox, "doe.1"), O_RDWR | O_NONBLOCK);
  ASSERT_EQ(first.write_obj(discovery_request(0)).n, 12);
  ASSERT_EQ(second.write_obj(discovery_request(0)).n, 12);
  EXPECT_NE(first.poll_in(10000) & POLLIN, 0);
  EXPECT_EQ(second.poll_in(0) & POLLIN, 0) << "queued behind the first, so not done with it";
  EXPECT_EQ(first.read_some(4096).err, ETIMEDOUT);
  EXPECT_NE(second.poll_in(10000) & POLLIN, 0);
  EXPECT_EQ(second.read_some(4096).err, ETIMEDOUT);
  EXPECT_EQ(mailbox(kTwoBox, 1)["dead"], false);
  EXPECT_GE(mailbox(kTwoBox, 1)["timeouts"].get<int>(), 1);
}

TEST_F(DoeTest, BadObjectsAreRefusedWithTheSpecifiedErrno) {
  DoeFile f(doe());
  ASSERT_TRUE(f.ok());
  auto expect_errno = [&](const std::string& bytes, int want, const char* what) {
    auto w = f.write_bytes(bytes);
    EXPECT_EQ(w.n, -1) << what;
    EXPECT_EQ(w.err, want) << what << ": " << strerror(w.err);
  };
  std::string ok = to_bytes(discovery_request(0));
  expect_errno(ok.substr(0, 10), EINVAL, "size not a multiple of 4");
  expect_errno(ok.substr(0, 4), EINVAL, "below 8 bytes");
  expect_errno(to_bytes({doe_dw0(0x0001, 0), 4, 0}), EINVAL, "length field 4, 3 dwords");
  expect_errno(to_bytes({doe_dw0(0x0001, 0), 2, 0}), EINVAL, "length field 2, 3 dwords");
  // Control: the handle was left idle by all of that; a good object works.
  auto rsp = f.exchange(discovery_request(0));
  ASSERT_TRUE(rsp);
  EXPECT_EQ(rsp->size(), 3u);
}

// An exchange that ends after the view's session is gone: the daemon stops
// (SIGTERM) while a handle still has an exchange in flight on the dead
// mailbox and a poll armed on it, and while a second handle's read is
// blocked on it. The connection ends with the daemon, so the kernel never
// sends these handles' releases: the exchanges complete as the daemon shuts
// its DOE executor down, after every session is destroyed, and their reply
// and wake-up must go nowhere (fs/fuse/reply_gate.hpp). Reaching the
// destroyed session is a use after free, which ASan and TSan turn into the
// exit status checked here (1, 66); on the TSan build this test failed so
// before the gate.
TEST_F(DoeTest, AnExchangeEndingAfterTheSessionRepliesToNothing) {
  DoeFile polled(doe(kTwoBox, "doe.1"), O_RDWR | O_NONBLOCK);
  ASSERT_TRUE(polled.ok());
  ASSERT_EQ(polled.write_obj(discovery_request(0)).n, 12);
  EXPECT_EQ(polled.poll_in(0) & POLLIN, 0);  // the daemon keeps the wake-up
  DoeFile blocked(doe(kTwoBox, "doe.1"));
  ASSERT_TRUE(blocked.ok());
  ASSERT_EQ(blocked.write_obj(discovery_request(0)).n, 12);    // queued behind
  std::thread reader([&] { (void)blocked.read_some(4096); });  // ends with the connection
  const int st = d_->signal_and_wait(SIGTERM);
  reader.join();
  EXPECT_EQ(st, 0) << "the daemon did not end cleanly (status " << st << ")\n" << d_->log();
  d_.reset();  // stopped here: nothing for TearDown to check
}

// Objects near the mailbox maximum (2^18 dwords = 1 MiB): one buffer, reused.
std::string max_object(size_t dwords, uint32_t dw1) {
  std::string b(dwords * 4, '\x5a');
  const uint32_t hdr[2] = {doe_dw0(0x1b36, 0x01), dw1};
  std::memcpy(b.data(), hdr, sizeof hdr);
  return b;
}

TEST_F(DoeTest, OverTheMailboxMaximumIsE2big) {
  DoeFile f(doe());
  ASSERT_TRUE(f.ok());
  // One dword over; the 18-bit length field cannot say so, so it says 1.
  const std::string big = max_object(kDoeMaxDwords + 1, 1);
  auto w = f.write_bytes(big);
  EXPECT_EQ(w.n, -1);
  EXPECT_EQ(w.err, E2BIG) << strerror(w.err);
  EXPECT_TRUE(f.exchange(discovery_request(0))) << "the handle stays usable";
}

TEST_F(DoeTest, TheMaximumObjectIsOneExchangeFromAnyBuffer) {
  DoeFile f(doe());
  ASSERT_TRUE(f.ok());
  // Length field 0 encodes 2^18. A std::string's buffer is not page aligned:
  // the write must not depend on where the caller's buffer starts.
  const std::string obj = max_object(kDoeMaxDwords, 0);
  auto w = f.write_bytes(obj);
  ASSERT_EQ(w.n, static_cast<ssize_t>(obj.size())) << strerror(w.err);
  std::string back;
  for (IoResult r = f.read_some(obj.size()); r.n > 0; r = f.read_some(obj.size())) back += r.data;
  EXPECT_TRUE(back == obj) << "echo of " << back.size() << " bytes differs";
}

TEST_F(DoeTest, ProtocolsOutsideTheViewAreEperm) {
  const Dwords echo = echo_request({0x11111111, 0x22222222});
  // Root is privileged in the default view: every protocol (the control).
  {
    DoeFile f(doe());
    auto rsp = f.exchange(echo);
    ASSERT_TRUE(rsp);
    EXPECT_EQ(*rsp, echo);
  }
  // nobody: Discovery and CDAT only.
  const int rc = as_nobody([&] {
    DoeFile f(doe());
    if (!f.ok()) return 10;
    if (!f.exchange(discovery_request(0))) return 11;
    if (!f.exchange(cdat_request(0))) return 12;
    auto w = f.write_obj(echo);
    if (w.n != -1) return 13;
    if (w.err != EPERM) return 14;
    return f.exchange(discovery_request(1)) ? 0 : 15;  // the refusal left the handle idle
  });
  EXPECT_EQ(rc, 0) << "10 open, 11/12 allowed protocols, 13/14 echo not EPERM, 15 after";
}

TEST_F(DoeTest, ClientsOnOneMailboxEachGetTheirOwnResponses) {
  constexpr int kClients = 6, kRounds = 150;
  std::vector<pid_t> kids;
  for (int c = 0; c < kClients; ++c) {
    const pid_t p = fork();
    if (p == 0) {
      DoeFile f(doe());
      if (!f.ok()) _exit(2);
      for (uint32_t i = 0; i < kRounds; ++i) {
        // Each client's payload is its own, and of its own length.
        Dwords payload(1 + (i + static_cast<uint32_t>(c)) % 9,
                       (static_cast<uint32_t>(c) << 24) | i);
        const Dwords req = i % 5 == 4 ? cdat_request(1) : echo_request(payload);
        auto rsp = f.exchange(req);
        if (!rsp) _exit(3);
        if (req[0] == doe_dw0(0x1e98, 0x02) ? (*rsp)[0] != req[0] : *rsp != req) _exit(4);
      }
      _exit(0);
    }
    kids.push_back(p);
  }
  for (pid_t p : kids) {
    auto st = wait_child_or_abort(p, std::chrono::seconds(120), d_->mnt());
    ASSERT_TRUE(st) << "client hung";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << "status " << *st;
  }
  EXPECT_EQ(violations(d_->mnt(), kCxl), 0);
}

TEST_F(DoeTest, FeaturesListWhatDiscoveryReports) {
  // Walk Discovery by hand through the doe file...
  std::set<std::string> walked;
  DoeFile f(doe());
  uint8_t index = 0;
  do {
    auto rsp = f.exchange(discovery_request(index));
    ASSERT_TRUE(rsp && rsp->size() == 3);
    char name[16];
    snprintf(name, sizeof name, "%04x:%02x", (*rsp)[2] & 0xffff, ((*rsp)[2] >> 16) & 0xff);
    walked.insert(name);
    index = static_cast<uint8_t>((*rsp)[2] >> 24);
  } while (index != 0 && walked.size() < 64);
  // ...and compare with the directory.
  std::set<std::string> listed;
  DIR* dir = opendir((d_->dev(kCxl) + "/doe_features").c_str());
  ASSERT_NE(dir, nullptr);
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') listed.insert(e->d_name);
  }
  closedir(dir);
  EXPECT_EQ(listed, walked);
  EXPECT_EQ(listed, (std::set<std::string>{"0001:00", "1e98:02", "1b36:01"}));
}

TEST_F(DoeTest, DoeDoesNotClaim) {
  DoeFile f(doe());
  ASSERT_TRUE(f.exchange(echo_request({1, 2, 3})));
  ASSERT_EQ(f.write_obj(discovery_request(0)).n, 12);  // and one left in flight
  EXPECT_EQ(read_text(dev(kCxl) + "/owner"), "none\n");
  // Another process may claim the group meanwhile...
  EXPECT_EQ(in_child([&] {
              const int fd = open((dev(kCxl) + "/resource2").c_str(), O_RDWR);
              return fd >= 0 ? 0 : 1;
            }),
            0);
  // ...control: a BAR handle does claim, so owner is not "none" while it is open
  // (once the child's claim has ended and been handed over).
  ASSERT_TRUE(wait_unclaimed(dev(kCxl)));
  const int bar = open((dev(kCxl) + "/resource2").c_str(), O_RDWR);
  ASSERT_GE(bar, 0);
  EXPECT_NE(read_text(dev(kCxl) + "/owner"), "none\n");
  close(bar);
  EXPECT_EQ(f.read_some(4096).n, 12);
}

// --- interrupts and killed callers: the exchange on the dead mailbox stays
// pending until the daemon's timeout, so a reader that comes back before
// that (with EINTR, or dead) shows the daemon answered the interrupt.

void on_usr1(int) {}

TEST_F(DoeTest, InterruptedReaderGetsEintrBeforeTheTimeoutAndTheExchangeGoesOn) {
  ASSERT_TRUE(settled(kTwoBox));
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const std::string path = doe(kTwoBox, "doe.1");
  const pid_t p = fork();
  if (p == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_usr1;  // no SA_RESTART: the read must come back
    sigaction(SIGUSR1, &sa, nullptr);
    DoeFile f(path);
    if (!f.ok() || f.write_obj(discovery_request(0)).n != 12) _exit(2);
    (void)!::write(ready[1], "r", 1);
    auto r = f.read_some(4096);
    if (r.n != -1) _exit(3);
    if (r.err != EINTR) _exit(10 + r.err);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, nullptr);
    // Still pending: EINTR came before the device timeout, not with it.
    if (f.poll_in(0) & POLLIN) _exit(4);
    // The exchange went on; a later read gets its real outcome.
    r = f.read_some(4096);
    if (r.n != -1 || r.err != ETIMEDOUT) _exit(5);
    _exit(0);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  ASSERT_TRUE(wait_blocked_in(p, SYS_read)) << "the reader never blocked";
  kill(p, SIGUSR1);
  auto st = wait_child_or_abort(p, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(st) << "the interrupted reader hung";
  EXPECT_TRUE(WIFEXITED(*st)) << *st;
  EXPECT_EQ(WEXITSTATUS(*st), 0) << "2 setup, 3 read returned data, 10+errno wrong errno, "
                                    "4 ready at once (EINTR only with the timeout), 5 no ETIMEDOUT";
}

// Starts a child that writes `req` to `path` and blocks reading the response;
// returns once it is blocked in read().
pid_t blocked_reader(const std::string& path, const Dwords& req) {
  const pid_t p = fork();
  if (p == 0) {
    DoeFile f(path);
    if (!f.ok() || f.write_obj(req).n != static_cast<ssize_t>(req.size() * 4)) _exit(2);
    auto r = f.read_some(4096);
    _exit(r.n < 0 ? 100 + r.err : 0);
  }
  EXPECT_TRUE(wait_blocked_in(p, SYS_read)) << "the reader never blocked";
  return p;
}

TEST_F(DoeTest, KilledBlockedReaderDiesBeforeTheTimeout) {
  ASSERT_TRUE(settled(kTwoBox));
  const auto before = mailbox(kTwoBox, 1);
  const pid_t p = blocked_reader(doe(kTwoBox, "doe.1"), discovery_request(0));
  kill(p, SIGKILL);
  auto st = wait_child_or_abort(p, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL);
  // It died while its exchange still ran: the exchange was cancelled by the
  // close at death, it did not time out first (it would have, had the process
  // waited in D state for the daemon's reply). The close reaches the daemon as
  // a RELEASE after the process is reaped: wait for the exchange to end,
  // whichever way.
  nlohmann::json after;
  ASSERT_TRUE(wait_until([&] {
    after = mailbox(kTwoBox, 1);
    return after.is_object() &&
           (after["cancelled"] != before["cancelled"] || after["timeouts"] != before["timeouts"]);
  })) << "the exchange never ended";
  EXPECT_EQ(after["timeouts"], before["timeouts"]);
  EXPECT_EQ(after["cancelled"].get<int>(), before["cancelled"].get<int>() + 1);
  // Control: a reader left alone does time out.
  const pid_t q = blocked_reader(doe(kTwoBox, "doe.1"), discovery_request(0));
  st = wait_child_or_abort(q, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 100 + ETIMEDOUT) << *st;
  EXPECT_EQ(mailbox(kTwoBox, 1)["timeouts"].get<int>(), before["timeouts"].get<int>() + 1);
}

TEST_F(DoeTest, KilledQueuedCallerDoesNotDisturbTheExchangeAhead) {
  ASSERT_TRUE(settled(kTwoBox));
  const std::string path = doe(kTwoBox, "doe.1");
  const pid_t ahead = blocked_reader(path, discovery_request(0));
  const pid_t queued = blocked_reader(path, discovery_request(0));
  EXPECT_EQ(mailbox(kTwoBox, 1)["queued"], 1) << "the second exchange waits behind the first";
  kill(queued, SIGKILL);
  auto st = wait_child_or_abort(queued, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFSIGNALED(*st));
  // The one ahead gets its own outcome, the timeout -- not EINTR, ECANCELED or EIO.
  st = wait_child_or_abort(ahead, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 100 + ETIMEDOUT) << *st;
  // The other mailbox of the device was never held up by this one.
  DoeFile good(doe(kTwoBox, "doe"));
  EXPECT_TRUE(good.exchange(discovery_request(0)));
  EXPECT_EQ(mailbox(kTwoBox, 1)["dead"], false);
  EXPECT_EQ(violations(d_->mnt(), kTwoBox), 0);
}

TEST_F(DoeTest, CallersKilledMidExchangeDoNotDisturbOthers) {
  constexpr int kGood = 3, kRounds = 200, kVictims = 40;
  std::vector<pid_t> good;
  for (int c = 0; c < kGood; ++c) {
    const pid_t p = fork();
    if (p == 0) {
      DoeFile f(doe());
      for (uint32_t i = 0; i < kRounds; ++i) {
        const Dwords req = echo_request(Dwords(4 + i % 16, (static_cast<uint32_t>(c) << 20) | i));
        auto rsp = f.exchange(req);
        if (!rsp || *rsp != req) _exit(3);
      }
      _exit(0);
    }
    good.push_back(p);
  }
  // Victims write a large echo and are killed at varying points: queued,
  // running, or with the response waiting to be read.
  for (int v = 0; v < kVictims; ++v) {
    const pid_t p = fork();
    if (p == 0) {
      DoeFile f(doe());
      (void)f.exchange(echo_request(Dwords(2000, 0xdead0000u | static_cast<uint32_t>(v))));
      pause();
      _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(300 * (v % 7)));
    kill(p, SIGKILL);
    ASSERT_TRUE(wait_child_or_abort(p, std::chrono::seconds(20), d_->mnt())) << "victim hung";
  }
  for (pid_t p : good) {
    auto st = wait_child_or_abort(p, std::chrono::seconds(120), d_->mnt());
    ASSERT_TRUE(st) << "client hung";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << *st;
  }
  EXPECT_EQ(mailbox(kCxl, 0)["dead"], false);
  EXPECT_EQ(violations(d_->mnt(), kCxl), 0);
}

// DOE Discovery runs in the background from the mount on. Here doe.1 of
// 02:00.0 takes a minute to time out (the longest timeout): before, the mount waited
// for it (the fixture's 20 s bound fails that); now only what needs 02:00.0's
// doe_features/ complete waits, on no thread (ops_tree.cpp after_discovery).
class DoeDiscoveryTest : public MountTest {
 protected:
  std::vector<std::string> daemon_args() override {
    return {"--doe-timeout=60000", "--log-level=debug"};
  }
  bool settled_start() override { return false; }
  // A child that lists the directory: exits 0, or with the errno.
  pid_t lister(const std::string& dir) {
    const pid_t p = fork();
    if (p == 0) _exit(list_errno(dir) & 0xff);
    return p;
  }
  // Evidence that the daemon took the listing and deferred it.
  bool deferred(const char* bdf) const {
    const std::string line = std::string(" in ") + bdf + ": after its DOE Discovery";
    return wait_until([&] { return d_->log().find(line) != std::string::npos; });
  }
  static bool still_running(pid_t p) {
    int st = 0;
    return waitpid(p, &st, WNOHANG) == 0;
  }
};

TEST_F(DoeDiscoveryTest, AMailboxThatNeverAnswersDelaysOnlyItsDevicesFeatures) {
  const std::string two = d_->dev(kTwoBox);
  const pid_t p = lister(two);
  ASSERT_TRUE(deferred(kTwoBox)) << d_->log();
  // Meanwhile everything else answers: the device's own files, an exchange on
  // its healthy mailbox, another device's doe_features/.
  EXPECT_EQ(read_text(two + "/vendor"), "0x1b36\n");
  EXPECT_EQ(pread_file(two + "/config", 4, 0).n, 4);
  DoeFile good(two + "/doe");
  EXPECT_TRUE(good.exchange(discovery_request(0)));
  EXPECT_EQ(list_errno(d_->dev(kCxl) + "/doe_features"), 0);
  EXPECT_TRUE(still_running(p)) << "the listing of 02:00.0 did not wait for its Discovery";
  // The device goes: its mailboxes fail or close, Discovery ends, and the
  // listing is answered -- with the device's files when Discovery ended on
  // the failing register path before the device left the tree, else ENOENT.
  ASSERT_EQ(write_file(two + "/remove", "1").n, 1);
  auto st = wait_child_or_abort(p, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(st) << "the deferred listing was never answered\n" << d_->log();
  EXPECT_TRUE(WIFEXITED(*st) && (WEXITSTATUS(*st) == 0 || WEXITSTATUS(*st) == ENOENT)) << *st;
}

TEST_F(DoeDiscoveryTest, AStopEndsWhatWaitsForDiscovery) {
  const pid_t p = lister(d_->dev(kTwoBox) + "/doe_features");
  ASSERT_TRUE(deferred(kTwoBox)) << d_->log();
  // The view stops with the listing deferred: the request ends with the
  // connection, and the reply that Discovery's end (ESHUTDOWN) would send
  // is dropped -- the view is gone by then.
  const int st = d_->signal_and_wait(SIGTERM);
  EXPECT_EQ(st, 0) << "the daemon did not end cleanly (status " << st << ")\n" << d_->log();
  auto child = wait_child_or_abort(p, std::chrono::seconds(20), d_->mnt());
  ASSERT_TRUE(child);
  EXPECT_TRUE(WIFEXITED(*child) && WEXITSTATUS(*child) != 0) << *child;
  d_.reset();  // stopped here: nothing for TearDown to check
}

// A device that arrives in low power refuses Discovery (no DOE access outside
// D0): its doe_features/ is empty, and fills in once it is put in D0 -- the
// listing waits for that second Discovery as for the first.
class DoeArrivesInD3hotTest : public MountTest {
 protected:
  static constexpr const char* kBdf = "0000:07:00.0";
  std::vector<std::string> daemon_args() override {
    static TempFile set(R"({"devices": [
      {"bdf": "0000:07:00.0", "device": 7, "class": "0x120000", "iommu_group": 7,
       "config_size": 4096, "power_state": "D3hot",
       "capabilities": {"pm": {}, "pcie": {"flr": true}, "doe": [{"echo": true}]}}]})");
    return {"--backend=sim:" + set.path()};
  }
};

TEST_F(DoeArrivesInD3hotTest, ItsFeaturesAppearOnceItIsInD0) {
  const std::string dev = d_->dev(kBdf);
  EXPECT_EQ(read_text(dev + "/power_state"), "D3hot\n");
  EXPECT_EQ(list_dir(dev + "/doe_features"), std::set<std::string>{}) << "refused in D3hot";
  {
    Fd p(dev + "/power_state", O_WRONLY);
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(::pwrite(p.get(), "D0", 2, 0), 2);
    EXPECT_EQ(list_dir(dev + "/doe_features"), (std::set<std::string>{"0001:00", "1b36:01"}))
        << d_->log();
  }
  ASSERT_TRUE(wait_unclaimed(dev));  // the hand-over leaves it in D0: nothing runs again
  EXPECT_EQ(list_dir(dev + "/doe_features"), (std::set<std::string>{"0001:00", "1b36:01"}));
  EXPECT_EQ(violations(d_->mnt(), kBdf), 0);
}

}  // namespace
}  // namespace pcifs::testing
