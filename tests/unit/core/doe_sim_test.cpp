// The DOE engine against the simulated default device set: mailboxes found by
// walking config space, driven through DeviceDoeRegs, with the device's
// violation oracle watching.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <chrono>

#include "core/cap_walk.hpp"
#include "core/doe_mailbox.hpp"
#include "core/doe_object.hpp"
#include "pcifs/sync.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

using backend::sim::DoeFault;
using namespace std::chrono_literals;
using Features = DoeMailbox::Features;

// Waits for one asynchronous result (bounded, as a guard against a hang).
template <class T>
class Waiter {
 public:
  std::function<void(T)> callback() {
    return [this](T v) {
      MutexLock lock(mu_);
      value_.emplace(std::move(v));
      cv_.notify_all();
    };
  }
  T get() {
    MutexLock lock(mu_);
    cv_.wait_for(mu_, 20s, [&]() REQUIRES(mu_) { return value_.has_value(); });
    if (!value_) return Errno(EINTR);
    return std::move(*value_);
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::optional<T> value_ GUARDED_BY(mu_);
};

class DoeSimTest : public testing::Test {
 protected:
  void SetUp() override { backend_ = backend::sim::make_default_backend(); }
  void TearDown() override {
    for (auto& d : backend_->devices()) {
      auto sim = backend_->find(d->info().bdf);
      EXPECT_EQ(d->violations().value_or(0), 0u)
          << d->info().bdf.str() << ": "
          << (sim && !sim->violation_log().empty() ? sim->violation_log().back() : "");
    }
  }
  std::shared_ptr<backend::sim::SimDevice> device(const char* bdf) {
    return backend_->find(*Bdf::parse(bdf));
  }
  std::vector<std::shared_ptr<DoeMailbox>> mailboxes(const char* bdf,
                                                     DoeMailboxOptions opt = fast()) {
    auto dev = device(bdf);
    auto offsets = find_doe_mailboxes(*dev);
    EXPECT_TRUE(offsets.ok());
    std::vector<std::shared_ptr<DoeMailbox>> out;
    for (uint16_t off : *offsets)
      out.push_back(DoeMailbox::create(executor_, std::make_unique<DeviceDoeRegs>(dev, off), opt));
    return out;
  }
  static DoeMailboxOptions fast() {
    DoeMailboxOptions o;
    o.response_timeout = 50ms;
    o.busy_timeout = 50ms;
    o.abort_timeout = 50ms;
    return o;
  }
  Result<Features> discover(DoeMailbox& mb) {
    Waiter<Result<Features>> w;
    mb.discover(w.callback());
    return w.get();
  }
  DoeMailbox::Response exchange(DoeMailbox& mb, std::vector<uint32_t> req) {
    Waiter<DoeMailbox::Response> w;
    mb.submit(std::move(req), w.callback());
    return w.get();
  }

  DoeExecutor executor_;
  std::unique_ptr<backend::sim::SimBackend> backend_;
};

TEST_F(DoeSimTest, FindsMailboxesLikeTheCapabilityWalker) {
  for (const char* bdf : {"0000:01:00.0", "0000:02:00.0", "0000:01:00.1", "0000:00:01.0"}) {
    auto dev = device(bdf);
    std::vector<uint8_t> cfg(dev->info().config_size);
    ASSERT_TRUE(dev->config_read_block(0, cfg).ok());
    std::vector<uint16_t> want;
    for (auto& c : find_all_extended(cfg, PCI_EXT_CAP_ID_DOE)) want.push_back(c.offset);
    auto got = find_doe_mailboxes(*dev);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, want) << bdf;
  }
  EXPECT_EQ(find_doe_mailboxes(*device("0000:01:00.0"))->size(), 1u);
  EXPECT_EQ(find_doe_mailboxes(*device("0000:02:00.0"))->size(), 2u);
  EXPECT_TRUE(find_doe_mailboxes(*device("0000:01:00.1"))->empty());
}

TEST_F(DoeSimTest, DiscoveryOfBothDevices) {
  auto a = mailboxes("0000:01:00.0");
  ASSERT_EQ(a.size(), 1u);
  auto fa = discover(*a[0]);
  ASSERT_TRUE(fa.ok()) << fa.error().name();
  EXPECT_EQ(*fa, (Features{{0x0001, 0x00}, {0x1e98, 0x02}, {0x1b36, 0x01}}));

  auto b = mailboxes("0000:02:00.0");
  ASSERT_EQ(b.size(), 2u);
  auto fb = discover(*b[0]);
  ASSERT_TRUE(fb.ok()) << fb.error().name();
  EXPECT_EQ(*fb, (Features{{0x0001, 0x00}, {0x1b36, 0x01}}));
  // Mailbox 1 is faulty by default (no response).
  auto fb1 = discover(*b[1]);
  ASSERT_FALSE(fb1.ok());
  EXPECT_EQ(fb1.error(), Errno(ETIMEDOUT));
  EXPECT_FALSE(b[1]->dead());
}

TEST_F(DoeSimTest, CdatWalkReadsEveryEntry) {
  auto mb = mailboxes("0000:01:00.0")[0];
  // CXL 2.0 §8.1.11.1 Read Entry: DW2 = code 0, table type 0, handle 31:16;
  // the response's DW2 holds the next handle, 0xffff after the last entry.
  uint32_t handle = 0;
  int entries = 0;
  uint32_t total_bytes = 0;
  while (handle != 0xffff && entries < 64) {
    auto [dw0, dw1] = doe_header({0x1e98, 0x02}, 3);
    auto r = exchange(*mb, {dw0, dw1, handle << 16});
    ASSERT_TRUE(r.ok()) << "handle " << handle << ": " << r.error().name();
    ASSERT_GE(r->size(), 4u);
    EXPECT_EQ(doe_object_length((*r)[1]), r->size());
    if (handle == 0) {
      total_bytes = (*r)[3];  // the CDAT header's Length field comes first
      EXPECT_GE(total_bytes, 16u);
    }
    handle = (*r)[2] >> 16;
    ++entries;
  }
  EXPECT_EQ(handle, 0xffffu);
  EXPECT_GE(entries, 2);
}

TEST_F(DoeSimTest, EchoOfManySizes) {
  auto mb = mailboxes("0000:02:00.0")[0];
  for (uint32_t n : {2u, 3u, 17u, 255u, 256u, 1000u, 65536u}) {
    auto [dw0, dw1] = doe_header({0x1b36, 0x01}, n);
    std::vector<uint32_t> req{dw0, dw1};
    for (uint32_t i = 2; i < n; ++i) req.push_back(i * 2654435761u);
    auto r = exchange(*mb, req);
    ASSERT_TRUE(r.ok()) << n;
    EXPECT_EQ(*r, req) << n;
  }
}

TEST_F(DoeSimTest, FaultModesThroughTheDevice) {
  auto dev = device("0000:02:00.0");
  auto mbs = mailboxes("0000:02:00.0");
  auto [dw0, dw1] = doe_header({0x1b36, 0x01}, 3);
  std::vector<uint32_t> req{dw0, dw1, 42};
  // Mailbox 1: no response -> ETIMEDOUT; cleared -> the next exchange works.
  EXPECT_EQ(exchange(*mbs[1], req).error(), Errno(ETIMEDOUT));
  dev->set_doe_fault(1, DoeFault::kNone);
  EXPECT_EQ(*exchange(*mbs[1], req), req);
  // Mailbox 0: error bit -> EIO, and mailbox 1 is not disturbed.
  dev->set_doe_fault(0, DoeFault::kError);
  EXPECT_EQ(exchange(*mbs[0], req).error(), Errno(EIO));
  EXPECT_EQ(*exchange(*mbs[1], req), req);
  // Stuck busy -> dead, EIO from then on; the other mailbox lives on.
  dev->set_doe_fault(0, DoeFault::kStuckBusy);
  EXPECT_EQ(exchange(*mbs[0], req).error(), Errno(EIO));
  EXPECT_TRUE(mbs[0]->dead());
  dev->set_doe_fault(0, DoeFault::kNone);
  EXPECT_EQ(exchange(*mbs[0], req).error(), Errno(EIO));
  EXPECT_EQ(*exchange(*mbs[1], req), req);
  EXPECT_FALSE(mbs[1]->dead());
}

TEST_F(DoeSimTest, FunctionResetBetweenExchangesDoesNotWedgeTheMailbox) {
  // The device's mailbox state is abandoned under the engine's feet.
  auto dev = device("0000:01:00.0");
  auto mb = mailboxes("0000:01:00.0")[0];
  auto [dw0, dw1] = doe_header({0x1b36, 0x01}, 4);
  std::vector<uint32_t> req{dw0, dw1, 1, 2};
  EXPECT_EQ(*exchange(*mb, req), req);
  ASSERT_TRUE(dev->reset().ok());  // FLR abandons the mailbox state
  EXPECT_EQ(*exchange(*mb, req), req);
}

}  // namespace
}  // namespace pcifs::core
