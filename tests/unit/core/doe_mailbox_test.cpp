// DoeMailbox + DoeExecutor against the simulator's DOE responder, driven
// through a register adapter that can fail accesses (the power gate) and
// observe them (to synchronise without sleeping).
#include "core/doe_mailbox.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/doe_object.hpp"
#include "fixtures/doe_initiator.hpp"
#include "pcifs/sync.hpp"
#include "sim/doe_responder.hpp"

namespace pcifs::core {
namespace {

using backend::sim::DoeFault;
using backend::sim::DoeResponder;
using backend::sim::DoeResponderConfig;
using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

constexpr uint16_t kVendor = 0x1b36;

// One responder plus the knobs a test turns. Shared by the test and the regs.
struct Bench {
  Mutex mu;
  std::unique_ptr<DoeResponder> responder GUARDED_BY(mu);
  std::vector<std::string> violations GUARDED_BY(mu);
  Steady::time_point fake_now GUARDED_BY(mu) = Steady::now();
  // Returns true to fail the access with EIO (the power gate closed).
  std::function<bool(uint32_t reg, bool write, uint32_t value)> fail_if GUARDED_BY(mu);
  // Sees every access that reached the responder.
  std::function<void(uint32_t reg, bool write, uint32_t value)> observe GUARDED_BY(mu);

  explicit Bench(DoeResponderConfig cfg, bool fake_clock = false) {
    MutexLock lock(mu);
    responder =
        std::make_unique<DoeResponder>(cfg, [this](std::string r) NO_THREAD_SAFETY_ANALYSIS {
          violations.push_back(std::move(r));  // called with mu held, from read()/write()
        });
    if (fake_clock) responder->set_clock([this]() NO_THREAD_SAFETY_ANALYSIS { return fake_now; });
  }
  size_t violation_count() {
    MutexLock lock(mu);
    return violations.size();
  }
  std::string violation_text() {
    MutexLock lock(mu);
    std::string s;
    for (auto& v : violations) s += v + "; ";
    return s;
  }
  void set_fault(DoeFault f) {
    MutexLock lock(mu);
    responder->set_fault(f);
  }
  void advance(std::chrono::milliseconds d) {
    MutexLock lock(mu);
    fake_now += d;
  }
  uint32_t status() {
    MutexLock lock(mu);
    return responder->read(PCI_DOE_STATUS);
  }
};

class BenchRegs final : public DoeRegs {
 public:
  explicit BenchRegs(std::shared_ptr<Bench> b) : b_(std::move(b)) {}
  Result<uint32_t> read(uint32_t reg) override {
    MutexLock lock(b_->mu);
    if (b_->fail_if && b_->fail_if(reg, false, 0)) return Errno(EIO);
    uint32_t v = b_->responder->read(reg);
    if (b_->observe) b_->observe(reg, false, v);
    return v;
  }
  Result<void> write(uint32_t reg, uint32_t value) override {
    MutexLock lock(b_->mu);
    if (b_->fail_if && b_->fail_if(reg, true, value)) return Errno(EIO);
    b_->responder->write(reg, value);
    if (b_->observe) b_->observe(reg, true, value);
    return Ok();
  }

 private:
  std::shared_ptr<Bench> b_;
};

DoeResponderConfig config(DoeFault fault = DoeFault::kNone) {
  DoeResponderConfig c{kVendor};
  c.cdat = true;
  c.fault = fault;
  return c;
}

// Completions in the order they were called, each tagged by the test.
class Collector {
 public:
  DoeMailbox::Completion make(int tag) {
    return [this, tag](DoeMailbox::Response r) {
      MutexLock lock(mu_);
      got_.emplace_back(tag, std::move(r));
      cv_.notify_all();
    };
  }
  // Waits (bounded, as a guard against a hang) until n completions arrived.
  std::vector<std::pair<int, DoeMailbox::Response>> wait(size_t n) {
    MutexLock lock(mu_);
    cv_.wait_for(mu_, 20s, [&]() REQUIRES(mu_) { return got_.size() >= n; });
    return got_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<std::pair<int, DoeMailbox::Response>> got_ GUARDED_BY(mu_);
};

// A one-shot latch a register observer can open.
struct Latch {
  Mutex mu;
  CondVar cv;
  int count GUARDED_BY(mu) = 0;
  void hit() {
    MutexLock lock(mu);
    ++count;
    cv.notify_all();
  }
  bool wait(int n) {
    MutexLock lock(mu);
    return cv.wait_for(mu, 20s, [&]() REQUIRES(mu) { return count >= n; });
  }
};

std::vector<uint32_t> echo_request(uint32_t dwords, uint32_t seed = 0) {
  auto [dw0, dw1] = doe_header({kVendor, 0x01}, dwords);
  std::vector<uint32_t> v{dw0, dw1};
  for (uint32_t i = 2; i < dwords; ++i) v.push_back(seed * 0x10000u + i);
  return v;
}

DoeMailboxOptions fast_options() {
  DoeMailboxOptions o;
  o.response_timeout = 50ms;
  o.busy_timeout = 50ms;
  o.abort_timeout = 50ms;
  return o;
}

class DoeMailboxTest : public testing::Test {
 protected:
  void make(DoeResponderConfig cfg, DoeMailboxOptions opt = fast_options(), bool fake = false) {
    bench_ = std::make_shared<Bench>(cfg, fake);
    mb_ = DoeMailbox::create(executor_, std::make_unique<BenchRegs>(bench_), opt);
  }
  // Opens `latch` on every GO the device sees.
  void latch_on_go(Latch& latch) {
    MutexLock lock(bench_->mu);
    bench_->observe = [&latch](uint32_t reg, bool write, uint32_t v) {
      if (write && reg == PCI_DOE_CTRL && (v & PCI_DOE_CTRL_GO)) latch.hit();
    };
  }
  void TearDown() override {
    if (bench_) {
      EXPECT_EQ(bench_->violation_count(), 0u) << bench_->violation_text();
    }
  }

  DoeExecutor executor_;
  std::shared_ptr<Bench> bench_;
  std::shared_ptr<DoeMailbox> mb_;
  Collector got_;
};

// --- exchanges

class DoeEchoSize : public DoeMailboxTest, public testing::WithParamInterface<uint32_t> {};

TEST_P(DoeEchoSize, EchoesEveryDword) {
  make(config());
  auto req = echo_request(GetParam(), 7);
  mb_->submit(req, got_.make(0));
  auto r = got_.wait(1);
  ASSERT_TRUE(r[0].second.ok()) << r[0].second.error().name();
  EXPECT_EQ(*r[0].second, req);
  auto s = mb_->stats();
  EXPECT_EQ(s.completed, 1u);
  EXPECT_EQ(s.aborts, 0u);
}

// 2: header only; 256/257 straddle a step's access budget; 2^18: length field 0.
INSTANTIATE_TEST_SUITE_P(Sizes, DoeEchoSize,
                         testing::Values(2u, 3u, 4u, 127u, 128u, 129u, 256u, 257u, 4096u,
                                         kDoeMaxDwords));

TEST_F(DoeMailboxTest, DiscoveryListsEveryProtocolInIndexOrder) {
  make(config());
  Mutex mu;
  CondVar cv;
  std::optional<Result<DoeMailbox::Features>> result;
  mb_->discover([&](Result<DoeMailbox::Features> r) {
    MutexLock lock(mu);
    result.emplace(std::move(r));
    cv.notify_all();
  });
  MutexLock lock(mu);
  cv.wait_for(mu, 20s, [&]() NO_THREAD_SAFETY_ANALYSIS { return result.has_value(); });
  ASSERT_TRUE(result && result->ok());
  EXPECT_EQ(**result, (DoeMailbox::Features{{0x0001, 0x00}, {0x1e98, 0x02}, {kVendor, 0x01}}));
  EXPECT_EQ(mb_->stats().completed, 3u);
}

TEST_F(DoeMailboxTest, InvalidRequestFailsEinvalWithoutTouchingTheDevice) {
  make(config());
  Latch go;
  latch_on_go(go);
  mb_->submit({0x00011b36, 5, 0}, got_.make(0));  // claims 5 dwords, has 3
  mb_->submit({0x00011b36}, got_.make(1));
  mb_->submit(echo_request(3), got_.make(2));
  auto r = got_.wait(3);
  EXPECT_EQ(r[0].second.error(), Errno(EINVAL));
  EXPECT_EQ(r[1].second.error(), Errno(EINVAL));
  EXPECT_TRUE(r[2].second.ok());
  EXPECT_TRUE(go.wait(1));
  MutexLock lock(go.mu);
  EXPECT_EQ(go.count, 1);  // only the valid one reached GO
}

// --- ordering

TEST_F(DoeMailboxTest, FifoUnderConcurrentSubmitters) {
  make(config(DoeFault::kSlow), fast_options(), /*fake=*/true);
  DoeMailboxOptions opt;  // 1 s timeouts: the fake clock holds the first exchange
  mb_ = DoeMailbox::create(executor_, std::make_unique<BenchRegs>(bench_), opt);
  Latch go;
  latch_on_go(go);
  // A first exchange holds the mailbox (its response waits for the fake clock)
  // so every submission below is really queued behind it: the negative control
  // for "FIFO because nothing ever overlapped".
  mb_->submit(echo_request(3), got_.make(-1));
  ASSERT_TRUE(go.wait(1));
  bench_->set_fault(DoeFault::kNone);  // applies from the next GO

  constexpr int kThreads = 8, kEach = 40;
  Mutex tmu;
  std::map<uint64_t, int> tag_of_ticket;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        int tag = t * 1000 + i;
        MutexLock lock(tmu);  // ticket and tag recorded atomically with the submit
        tag_of_ticket[mb_->submit(
            echo_request(3 + static_cast<uint32_t>(i % 5), static_cast<uint32_t>(tag)),
            got_.make(tag))] = tag;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mb_->stats().queue_depth, size_t{kThreads * kEach});
  bench_->advance(1h);
  auto r = got_.wait(kThreads * kEach + 1);
  ASSERT_EQ(r.size(), size_t{kThreads * kEach + 1});
  EXPECT_EQ(r[0].first, -1);
  std::vector<int> want;
  for (auto& [ticket, tag] : tag_of_ticket) want.push_back(tag);  // ticket order
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(r[i + 1].first, want[i]) << "completion " << i;
    ASSERT_TRUE(r[i + 1].second.ok());
    int tag = want[i];
    EXPECT_EQ(*r[i + 1].second,
              echo_request(3 + static_cast<uint32_t>(tag % 1000 % 5), static_cast<uint32_t>(tag)));
  }
}

// --- faults

TEST_F(DoeMailboxTest, NoResponseTimesOutThenTheNextExchangeRuns) {
  make(config(DoeFault::kNoResponse));
  DoeMailbox::Completion first = got_.make(0);
  mb_->submit(echo_request(4), [&, first](DoeMailbox::Response r) {
    bench_->set_fault(DoeFault::kNone);  // before the next exchange starts
    first(std::move(r));
  });
  mb_->submit(echo_request(5), got_.make(1));
  auto r = got_.wait(2);
  ASSERT_FALSE(r[0].second.ok());
  EXPECT_EQ(r[0].second.error(), Errno(ETIMEDOUT));
  ASSERT_TRUE(r[1].second.ok()) << r[1].second.error().name();
  EXPECT_EQ(*r[1].second, echo_request(5));
  auto s = mb_->stats();
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.aborts, 1u);
  EXPECT_EQ(s.completed, 1u);
  EXPECT_FALSE(s.dead);
}

TEST_F(DoeMailboxTest, ErrorBitGivesEioAfterAbort) {
  make(config(DoeFault::kError));
  mb_->submit(echo_request(4), got_.make(0));
  auto r = got_.wait(1);
  EXPECT_EQ(r[0].second.error(), Errno(EIO));
  EXPECT_EQ(bench_->status() & PCI_DOE_STATUS_ERROR, 0u);  // the abort cleared it
  bench_->set_fault(DoeFault::kNone);
  mb_->submit(echo_request(4), got_.make(1));
  r = got_.wait(2);
  EXPECT_TRUE(r[1].second.ok());
  EXPECT_EQ(mb_->stats().errors, 1u);
  EXPECT_EQ(mb_->stats().aborts, 1u);
}

TEST_F(DoeMailboxTest, UnsupportedProtocolGetsEio) {
  make(config());
  auto [dw0, dw1] = doe_header({0x8086, 0x7f}, 3);
  mb_->submit({dw0, dw1, 0}, got_.make(0));
  EXPECT_EQ(got_.wait(1)[0].second.error(), Errno(EIO));
}

TEST_F(DoeMailboxTest, StuckBusyKillsTheMailbox) {
  make(config(DoeFault::kStuckBusy));
  for (int i = 0; i < 3; ++i) mb_->submit(echo_request(3), got_.make(i));
  auto r = got_.wait(3);
  for (auto& [tag, res] : r) {
    ASSERT_FALSE(res.ok()) << tag;
    EXPECT_EQ(res.error(), Errno(EIO)) << tag;
  }
  EXPECT_TRUE(mb_->dead());
  EXPECT_TRUE(mb_->stats().dead);
  // Future exchanges fail too, without touching the device.
  Latch any;
  {
    MutexLock lock(bench_->mu);
    bench_->observe = [&any](uint32_t, bool, uint32_t) { any.hit(); };
  }
  mb_->submit(echo_request(3), got_.make(3));
  r = got_.wait(4);
  EXPECT_EQ(r[3].second.error(), Errno(EIO));
  MutexLock lock(any.mu);
  EXPECT_EQ(any.count, 0);
}

TEST_F(DoeMailboxTest, SlowResponseBelowTheTimeoutSucceeds) {
  auto cfg = config(DoeFault::kSlow);
  cfg.slow_delay = 20ms;
  auto opt = fast_options();
  opt.response_timeout = 2000ms;
  make(cfg, opt);
  mb_->submit(echo_request(6), got_.make(0));
  auto r = got_.wait(1);
  ASSERT_TRUE(r[0].second.ok()) << r[0].second.error().name();
  EXPECT_EQ(*r[0].second, echo_request(6));
}

TEST_F(DoeMailboxTest, RealOneSecondTimeout) {
  make(config(DoeFault::kNoResponse), DoeMailboxOptions{});
  auto start = Steady::now();
  mb_->submit(echo_request(3), got_.make(0));
  auto r = got_.wait(1);
  EXPECT_EQ(r[0].second.error(), Errno(ETIMEDOUT));
  EXPECT_GE(Steady::now() - start, 1000ms);  // never early
}

// --- cancel

TEST_F(DoeMailboxTest, CancelWhileQueuedLeavesOthersAlone) {
  make(config(DoeFault::kSlow), DoeMailboxOptions{}, /*fake=*/true);
  Latch go;
  latch_on_go(go);
  mb_->submit(echo_request(3, 1), got_.make(0));
  ASSERT_TRUE(go.wait(1));  // exchange 0 is on the device, 1 and 2 must queue
  bench_->set_fault(DoeFault::kNone);
  uint64_t t1 = mb_->submit(echo_request(4, 2), got_.make(1));
  mb_->submit(echo_request(5, 3), got_.make(2));
  mb_->cancel(t1);
  auto r = got_.wait(1);
  EXPECT_EQ(r[0].first, 1);
  EXPECT_EQ(r[0].second.error(), Errno(ECANCELED));
  bench_->advance(1h);
  r = got_.wait(3);
  EXPECT_EQ(r[1].first, 0);
  EXPECT_EQ(*r[1].second, echo_request(3, 1));
  EXPECT_EQ(r[2].first, 2);
  EXPECT_EQ(*r[2].second, echo_request(5, 3));
  EXPECT_EQ(mb_->stats().cancelled, 1u);
  EXPECT_EQ(mb_->stats().aborts, 0u);
  mb_->cancel(t1);  // finished tickets: nothing
}

TEST_F(DoeMailboxTest, CancelWhileRunningAbortsAndTheNextRuns) {
  make(config(DoeFault::kSlow), DoeMailboxOptions{}, /*fake=*/true);
  Latch go;
  latch_on_go(go);
  uint64_t t0 = mb_->submit(echo_request(3, 1), got_.make(0));
  mb_->submit(echo_request(4, 2), got_.make(1));
  ASSERT_TRUE(go.wait(1));
  bench_->set_fault(DoeFault::kNone);
  mb_->cancel(t0);  // the clock never moves: only the abort can end it
  auto r = got_.wait(2);
  EXPECT_EQ(r[0].first, 0);
  EXPECT_EQ(r[0].second.error(), Errno(ECANCELED));
  EXPECT_EQ(r[1].first, 1);
  ASSERT_TRUE(r[1].second.ok());
  EXPECT_EQ(*r[1].second, echo_request(4, 2));
  auto s = mb_->stats();
  EXPECT_EQ(s.cancelled, 1u);
  EXPECT_EQ(s.aborts, 1u);
  EXPECT_EQ(s.timeouts, 0u);
}

TEST_F(DoeMailboxTest, CloseFailsEverythingWithItsErrno) {
  make(config(DoeFault::kSlow), DoeMailboxOptions{}, /*fake=*/true);
  Latch go;
  latch_on_go(go);
  mb_->submit(echo_request(3), got_.make(0));
  mb_->submit(echo_request(3), got_.make(1));
  ASSERT_TRUE(go.wait(1));
  mb_->close(Errno(ENODEV));
  mb_->submit(echo_request(3), got_.make(2));
  auto r = got_.wait(3);
  for (auto& [tag, res] : r) EXPECT_EQ(res.error(), Errno(ENODEV)) << tag;
}

// --- the power gate

TEST_F(DoeMailboxTest, GateClosingAfterGoGivesEioAndTheMailboxRecovers) {
  make(config());
  std::atomic<bool> closed{false};
  {
    MutexLock lock(bench_->mu);
    bench_->fail_if = [&closed](uint32_t, bool, uint32_t) { return closed.load(); };
    bench_->observe = [&closed](uint32_t reg, bool write, uint32_t v) {
      if (write && reg == PCI_DOE_CTRL && (v & PCI_DOE_CTRL_GO)) closed = true;
    };
  }
  mb_->submit(echo_request(8), got_.make(0));
  auto r = got_.wait(1);
  EXPECT_EQ(r[0].second.error(), Errno(EIO));
  {
    MutexLock lock(bench_->mu);
    bench_->observe = nullptr;
  }
  closed = false;  // back in D0; the response of exchange 0 is still in the mailbox
  mb_->submit(echo_request(9), got_.make(1));
  r = got_.wait(2);
  ASSERT_TRUE(r[1].second.ok()) << r[1].second.error().name();
  EXPECT_EQ(*r[1].second, echo_request(9));
  EXPECT_GE(mb_->stats().aborts, 1u);
}

TEST_F(DoeMailboxTest, GateFailingOneWriteMidRequestGivesEio) {
  make(config());
  std::atomic<int> writes{0};
  {
    MutexLock lock(bench_->mu);
    bench_->fail_if = [&writes](uint32_t reg, bool write, uint32_t) {
      return write && reg == PCI_DOE_WRITE && ++writes == 3;
    };
  }
  mb_->submit(echo_request(6), got_.make(0));
  mb_->submit(echo_request(7), got_.make(1));
  auto r = got_.wait(2);
  EXPECT_EQ(r[0].second.error(), Errno(EIO));
  ASSERT_TRUE(r[1].second.ok());
  EXPECT_EQ(*r[1].second, echo_request(7));
}

// --- the executor

TEST(DoeExecutorShutdown, PendingExchangesEndWithEshutdown) {
  auto bench = std::make_shared<Bench>(config(DoeFault::kSlow), /*fake=*/true);
  Collector got;
  Latch go;
  {
    MutexLock lock(bench->mu);
    bench->observe = [&go](uint32_t reg, bool write, uint32_t v) {
      if (write && reg == PCI_DOE_CTRL && (v & PCI_DOE_CTRL_GO)) go.hit();
    };
  }
  std::shared_ptr<DoeMailbox> mb;
  {
    DoeExecutor executor;
    mb = DoeMailbox::create(executor, std::make_unique<BenchRegs>(bench), DoeMailboxOptions{});
    for (int i = 0; i < 3; ++i) mb->submit(echo_request(3), got.make(i));
    ASSERT_TRUE(go.wait(1));
    executor.shutdown();
    auto r = got.wait(3);
    for (auto& [tag, res] : r) EXPECT_EQ(res.error(), Errno(ESHUTDOWN)) << tag;
    mb->submit(echo_request(3), got.make(3));  // after shutdown: at once, inline
    EXPECT_EQ(got.wait(4)[3].second.error(), Errno(ESHUTDOWN));
    mb.reset();  // mailboxes go before their executor
  }
  EXPECT_EQ(got.wait(4).size(), 4u);                     // exactly once each
  EXPECT_EQ(bench->status() & PCI_DOE_STATUS_BUSY, 0u);  // left aborted
  EXPECT_EQ(bench->violation_count(), 0u);
}

TEST(DoeExecutorShutdown, DestructorAlsoCompletesPendingWork) {
  auto bench = std::make_shared<Bench>(config(DoeFault::kNoResponse));
  Collector got;
  {
    DoeExecutor executor;
    auto mb = DoeMailbox::create(executor, std::make_unique<BenchRegs>(bench), DoeMailboxOptions{});
    for (int i = 0; i < 4; ++i) mb->submit(echo_request(3), got.make(i));
  }
  auto r = got.wait(4);
  ASSERT_EQ(r.size(), 4u);
  for (auto& [tag, res] : r) EXPECT_EQ(res.error(), Errno(ESHUTDOWN)) << tag;
}

TEST(DoeExecutorScale, ManyMailboxesProgressTogetherOnOneThread) {
  constexpr int kMailboxes = 64;
  DoeExecutor executor(1);
  Collector got;
  Latch go;
  std::vector<std::shared_ptr<Bench>> benches;
  std::vector<std::shared_ptr<DoeMailbox>> mbs;
  for (int i = 0; i < kMailboxes; ++i) {
    auto b = std::make_shared<Bench>(config(DoeFault::kSlow), /*fake=*/true);
    {
      MutexLock lock(b->mu);
      b->observe = [&go](uint32_t reg, bool write, uint32_t v) {
        if (write && reg == PCI_DOE_CTRL && (v & PCI_DOE_CTRL_GO)) go.hit();
      };
    }
    benches.push_back(b);
    mbs.push_back(
        DoeMailbox::create(executor, std::make_unique<BenchRegs>(b), DoeMailboxOptions{}));
  }
  for (int i = 0; i < kMailboxes; ++i)
    mbs[static_cast<size_t>(i)]->submit(echo_request(40, static_cast<uint32_t>(i)), got.make(i));
  // Every mailbox has its request on the device at the same time, although no
  // response can come until the clocks move: one thread is driving all 64.
  ASSERT_TRUE(go.wait(kMailboxes));
  for (auto& b : benches) b->advance(1h);
  auto r = got.wait(kMailboxes);
  ASSERT_EQ(r.size(), size_t{kMailboxes});
  for (auto& [tag, res] : r) {
    ASSERT_TRUE(res.ok()) << tag;
    EXPECT_EQ(*res, echo_request(40, static_cast<uint32_t>(tag)));
  }
  for (auto& b : benches) EXPECT_EQ(b->violation_count(), 0u);
}

// --- the oracle's negative controls: misuse the core avoids is really caught

TEST(DoeOracle, AdvancingPastTheObjectIsAViolation) {
  Bench bench(config());
  MutexLock lock(bench.mu);
  auto rd = [&](uint32_t reg) NO_THREAD_SAFETY_ANALYSIS { return bench.responder->read(reg); };
  auto wr = [&](uint32_t reg, uint32_t v)
                NO_THREAD_SAFETY_ANALYSIS { bench.responder->write(reg, v); };
  auto req = echo_request(4);
  auto r = test::doe_exchange(rd, wr, req);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(bench.violations.empty());
  wr(PCI_DOE_READ, 0);  // one dword too many
  EXPECT_EQ(bench.violations.size(), 1u);
}

TEST(DoeOracle, TwoRequestsInFlightAreAViolation) {
  Bench bench(config(DoeFault::kSlow), /*fake=*/true);
  MutexLock lock(bench.mu);
  for (uint32_t dw : echo_request(3)) bench.responder->write(PCI_DOE_WRITE, dw);
  bench.responder->write(PCI_DOE_CTRL, PCI_DOE_CTRL_GO);
  EXPECT_TRUE(bench.violations.empty());
  bench.responder->write(PCI_DOE_WRITE, echo_request(3)[0]);  // a second initiator
  EXPECT_EQ(bench.violations.size(), 1u);
}

}  // namespace
}  // namespace pcifs::core
