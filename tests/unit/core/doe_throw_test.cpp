// A DOE step that throws (no memory, a register path's bug) must still answer
// its exchange (EIO) and leave the mailbox usable: the next exchange Aborts
// first and then runs, and the simulated device sees no protocol violation.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>

#include "core/doe_mailbox.hpp"
#include "core/doe_object.hpp"
#include "pcifs/sync.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

using namespace std::chrono_literals;

// Register accesses through the device; the `throw_at`th one (1-based,
// counted from arm()) throws instead.
class ThrowingRegs final : public DoeRegs {
 public:
  ThrowingRegs(std::shared_ptr<backend::Device> dev, uint16_t off) : inner_(std::move(dev), off) {}
  void arm(int throw_at) {
    left_.store(throw_at);
    thrown_.store(false);
  }
  bool thrown() const { return thrown_.load(); }
  Result<uint32_t> read(uint32_t reg) override {
    maybe_throw();
    return inner_.read(reg);
  }
  Result<void> write(uint32_t reg, uint32_t value) override {
    maybe_throw();
    return inner_.write(reg, value);
  }

 private:
  void maybe_throw() {
    if (left_.load() > 0 && left_.fetch_sub(1) == 1) {
      thrown_.store(true);
      throw std::runtime_error("injected");
    }
  }
  DeviceDoeRegs inner_;
  std::atomic<int> left_{0};
  std::atomic<bool> thrown_{false};
};

DoeMailbox::Response exchange(DoeMailbox& mb, std::vector<uint32_t> req) {
  Mutex mu;
  CondVar cv;
  std::optional<DoeMailbox::Response> got;
  mb.submit(std::move(req), [&](DoeMailbox::Response r) {
    MutexLock lock(mu);
    got.emplace(std::move(r));
    cv.notify_all();
  });
  MutexLock lock(mu);
  // A bound against a hang: without an answer the test fails, it does not wait.
  cv.wait_for(mu, 20s, [&]() NO_THREAD_SAFETY_ANALYSIS { return got.has_value(); });
  if (!got) return Errno(EDEADLK);  // "never answered"
  return std::move(*got);
}

std::vector<uint32_t> discovery_request() {
  auto [dw0, dw1] = doe_header({kDoeVendorPciSig, kDoeTypeDiscovery}, 3);
  return {dw0, dw1, 0};
}

TEST(DoeThrow, ThrowingStepAnswersEioAndTheMailboxStaysUsable) {
  auto sim = backend::sim::make_default_backend();
  auto dev = sim->find(*Bdf::parse("0000:01:00.0"));
  auto offsets = find_doe_mailboxes(*dev);
  ASSERT_TRUE(offsets.ok() && !offsets->empty());
  DoeExecutor executor;
  DoeMailboxOptions o;
  o.response_timeout = o.busy_timeout = o.abort_timeout = 2s;
  auto regs = std::make_unique<ThrowingRegs>(dev, (*offsets)[0]);
  ThrowingRegs* r = regs.get();
  auto mb = DoeMailbox::create(executor, std::move(regs), o);

  // A throw at each register access of an exchange in turn: before the
  // request, while writing it, while waiting, while reading the response.
  int throws = 0;
  for (int at = 1; at < 200; ++at) {
    r->arm(at);
    auto first = exchange(*mb, discovery_request());
    const bool thrown = r->thrown();
    r->arm(0);
    ASSERT_FALSE(!first && first.error() == Errno(EDEADLK))
        << "throw at access " << at << ": the exchange was never answered";
    if (thrown) {
      ++throws;
      ASSERT_FALSE(first.ok()) << "throw at access " << at;
      EXPECT_EQ(first.error(), Errno(EIO)) << "throw at access " << at;
    } else {
      ASSERT_TRUE(first.ok()) << first.error().name();
    }
    auto next = exchange(*mb, discovery_request());
    ASSERT_TRUE(next.ok()) << "after a throw at access " << at << ": " << next.error().name();
    EXPECT_GE(next->size(), 3u);
    if (!thrown) break;  // the exchange made fewer accesses than `at`
  }
  EXPECT_GT(throws, 5);
  EXPECT_FALSE(mb->dead());
  EXPECT_EQ(dev->violations().value_or(0), 0u)
      << (dev->violation_log().empty() ? "" : dev->violation_log().back());
}

}  // namespace
}  // namespace pcifs::core
