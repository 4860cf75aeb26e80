// Many threads on one simulated device: every access is serialised (counts
// stay exact), and the backend's list survives concurrent removal. Run under
// TSan in CI. Negative control against a vacuous pass: a mid-run latch makes
// every thread's window of accesses overlap every other's (checked with ticket
// ranges), so an exact count cannot come from threads that ran one after the
// other — even on a loaded 2-core machine.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>

#include "sim/bar_memory.hpp"
#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

constexpr unsigned kThreads = 8;
constexpr unsigned kOps = 1500;

struct Span {
  uint64_t first = 0, last = 0;
};

// True when some thread's [first, last] ticket range overlaps another's.
bool overlapped(const std::vector<Span>& spans) {
  for (size_t i = 0; i < spans.size(); ++i) {
    for (size_t j = i + 1; j < spans.size(); ++j) {
      if (spans[i].first < spans[j].last && spans[j].first < spans[i].last) return true;
    }
  }
  return false;
}

TEST(Overlap, DetectsSequentialRuns) {  // the control's own control
  EXPECT_FALSE(overlapped({{0, 9}, {10, 19}, {20, 29}}));
  EXPECT_TRUE(overlapped({{0, 15}, {10, 19}}));
}

TEST(Concurrency, AccessCountsAndDoorbellsAreExact) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  bar_wr(*d, 0, kRegAccessCountW1, 8, 0);  // zero the counters
  std::atomic<uint64_t> ticket{0};
  std::vector<Span> spans(kThreads);
  std::latch start(kThreads), middle(kThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      unsigned width = 1u << (t % 4);
      start.arrive_and_wait();
      spans[t].first = ticket.fetch_add(1);
      for (unsigned i = 0; i < kOps; ++i) {
        if (i == kOps / 2) middle.arrive_and_wait();
        if (i % 2 == 0) {
          (void)d->bar_write(0, kRegDoorbell, width, 1);
        } else {
          (void)d->bar_read(0, 0x100 + width * t, width);
        }
        ticket.fetch_add(1);
      }
      spans[t].last = ticket.fetch_add(1);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(overlapped(spans)) << "threads never overlapped: the test proved nothing";
  uint64_t per_width = uint64_t{kThreads / 4} * kOps;
  EXPECT_EQ(bar_rd(*d, 0, kRegEventCount, 8), uint64_t{kThreads} * kOps / 2);
  EXPECT_EQ(bar_rd(*d, 0, kRegAccessCountW1, 8), per_width);
  EXPECT_EQ(bar_rd(*d, 0, kRegAccessCountW2, 8), per_width);
  EXPECT_EQ(bar_rd(*d, 0, kRegAccessCountW4, 8), per_width);
  EXPECT_EQ(bar_rd(*d, 0, kRegAccessCountW8, 8), per_width + 5);  // + this test's 8-byte reads
  EXPECT_EQ(violations(*d), 0u);
}

TEST(Concurrency, ViolationsAreCountedExactly) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:02:00.0");
  ASSERT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (unsigned i = 0; i < kOps / 4; ++i) {
        (void)d->bar_read(0, 0, 4);              // violation
        (void)d->config_read(PCI_VENDOR_ID, 2);  // legal in D3hot
        (void)d->violation_log();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(violations(*d), uint64_t{kThreads} * (kOps / 4));
}

TEST(Concurrency, ConfigAndPowerFromManyThreads) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");  // No_Soft_Reset: config survives D3hot
  std::latch start(kThreads + 1);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (unsigned i = 0; i < kOps; ++i) {
        EXPECT_EQ(d->config_read(PCI_VENDOR_ID, 2).value_or(0), 0x1b36u);
        EXPECT_TRUE(d->config_write(PCI_INTERRUPT_LINE, 1, i & 0xff).ok());
      }
    });
  }
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (unsigned i = 0; i < 200 && !stop; ++i) {
      EXPECT_TRUE(d->set_power_state(i % 2 ? PowerState::kD0 : PowerState::kD3hot).ok());
    }
    EXPECT_TRUE(d->set_power_state(PowerState::kD0).ok());
  });
  for (auto& th : threads) th.join();
  EXPECT_EQ(d->physical_power_state(), PowerState::kD0);
  EXPECT_EQ(violations(*d), 0u) << last_violation(*d);
}

TEST(Concurrency, RemoveWhileOthersEnumerateAndAccess) {
  auto backend = make_default_backend();
  std::atomic<int> departures{0};
  backend->set_hotplug_callback([&](const Bdf&, bool added) {
    if (!added) departures.fetch_add(1);
  });
  auto all = backend->devices();
  std::latch start(kThreads + 1);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (unsigned i = 0; i < kOps / 4; ++i) {
        for (const auto& x : backend->devices()) (void)x->config_read(0, 4);
        (void)backend->find(bdf("0000:01:00.0"));
      }
    });
  }
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (const auto& x : all) EXPECT_TRUE(x->remove().ok());
  });
  for (auto& th : threads) th.join();
  EXPECT_TRUE(backend->devices().empty());
  EXPECT_EQ(departures.load(), static_cast<int>(all.size()));
  for (const auto& x : all) EXPECT_EQ(x->config_read(0, 4).error(), Errno(ENODEV));
}

}  // namespace
}  // namespace pcifs::backend::sim
