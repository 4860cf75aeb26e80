// The lock order (fs/core/mediator_state.hpp, "Lock order") taken from
// several threads at once, so that ThreadSanitizer's deadlock detector
// (tools/test.sh tsan) sees every main nesting of the daemon in one process:
// a future change that takes two of these locks the other way round, on any
// path this test runs, is a lock-order inversion report, even when the
// schedule never deadlocks. In other builds it is a short concurrency test
// that must end (no deadlock) with every path really taken.
//
// The nestings, each from its own thread while the others run:
//   config writes flipping memory decode   write_mu, ControlSlot, quiesce, sink
//   power_state D3hot/D0, reset, rom       ControlSlot, AccessGate, rom_mu_
//   remove (the simulator's hot-plug hook) ControlSlot -> attach_mu -> devices_mu,
//                                          handles_mu, ClaimTable, mailboxes,
//                                          event sink, revocation sink
//   DOE exchanges                          DoeMailbox, DoeExecutor, Handle::mu
//   views added and removed with handles   a host lock (as fuse::ViewHost::mu_)
//                                          -> views_mu, handles_mu, Handle::mu,
//                                          claims, sinks
//   readers: status, health, config, owner devices_mu, doe_mu, counters
// The sinks take locks of their own, as the FUSE layer's do (Revoker::mu_,
// HostControl::mu_), so the edges into them are part of the graph.
#include <linux/pci_regs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "core/doe_object.hpp"
#include "fixtures/mediator_fixture.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::test {
namespace {

using namespace std::chrono_literals;

constexpr int kRounds = 40;      // per worker; TSan makes each round slow
constexpr int kWarmRounds = 5;   // rounds every worker runs before the removal
constexpr int kWorkers = 6;      // the threads below but the remover
const Bdf kRemoved = kEp2;       // group 3: removed halfway, while the others run
const Caller kHolder = kRoot;    // pid 100 holds groups 2 and 3 throughout
const Caller kOther{300, 0, 0};  // root, another process: DOE and views (no claims)

// A revocation sink with a lock of its own, as fuse::Revoker (level 6).
class LockingSink : public RevocationSink {
 public:
  void invalidate_mappings(const Bdf&) override {
    MutexLock lock(mu_);
    ++invalidations_;
  }
  void device_gone(const Bdf&) override {
    MutexLock lock(mu_);
    ++gone_;
  }
  uint64_t invalidations() {
    MutexLock lock(mu_);
    return invalidations_;
  }
  uint64_t gone() {
    MutexLock lock(mu_);
    return gone_;
  }

 private:
  Mutex mu_;
  uint64_t invalidations_ GUARDED_BY(mu_) = 0;
  uint64_t gone_ GUARDED_BY(mu_) = 0;
};

// Events into a lock, as fuse::HostControl::mu_ -> the watchers' queues.
class EventLog {
 public:
  void add(const MediatorEvent& e) {
    MutexLock lock(mu_);
    kinds_.push_back(e.kind);
  }
  size_t count(MediatorEvent::Kind k) {
    MutexLock lock(mu_);
    return static_cast<size_t>(std::count(kinds_.begin(), kinds_.end(), k));
  }

 private:
  Mutex mu_;
  std::vector<MediatorEvent::Kind> kinds_ GUARDED_BY(mu_);
};

std::vector<uint8_t> discovery_request() {
  auto [dw0, dw1] = core::doe_header(backend::DoeFeature{0x0001, 0x00}, 3);
  std::vector<uint8_t> out;
  for (uint32_t dw : {dw0, dw1, uint32_t{0}}) {
    for (unsigned k = 0; k < 4; ++k) out.push_back(static_cast<uint8_t>(dw >> (8 * k)));
  }
  return out;
}

class LockOrderTest : public MediatorFixture {
 protected:
  void SetUp() override {
    MediatorFixture::SetUp();
    med_->set_revocation_sink(&locking_sink_);
    med_->set_event_sink([this](const MediatorEvent& e) { events_.add(e); });
    med_->wait_for_discovery();
  }
  void TearDown() override { med_.reset(); }  // drains hand-overs while the sinks live

  Result<HandleId> open_wo(const Bdf& b, FileKind k) {  // reset, remove: write-only files
    return med_->open(view_, kHolder, FileRef{b, k, 0, {}}, OpenFlags{false, true, false});
  }
  // One DOE exchange, waited for (bounded: a hang fails, it does not block).
  bool doe_exchange(HandleId h) {
    if (!write(h, 0, discovery_request()).ok()) return false;
    auto done = std::make_shared<std::promise<bool>>();
    auto got = done->get_future();
    med_->doe_read(h, 4096, [done](Result<std::vector<uint8_t>> r) { done->set_value(r.ok()); });
    if (got.wait_for(60s) != std::future_status::ready) {
      ADD_FAILURE() << "a DOE read never completed";
      return false;
    }
    return got.get();
  }

  LockingSink locking_sink_;
  EventLog events_;
  Mutex host_mu_;  // stands for fuse::ViewHost::mu_ (level 1)
};

TEST_F(LockOrderTest, MainNestingsFromSeveralThreads) {
  // The holder's claims last the whole run: claiming operations never race a
  // hand-over, so every path below really runs.
  HandleId bar0 = must_open(kEp0, FileKind::kBar, 0, true, kHolder);
  HandleId bar2 = must_open(kRemoved, FileKind::kBar, 0, true, kHolder);
  ASSERT_NE(bar0, 0u);
  ASSERT_NE(bar2, 0u);

  std::latch start(kWorkers + 1);
  std::latch warm(kWorkers);
  std::atomic<int> decode_flips{0}, power_cycles{0}, exchanges{0}, views_removed{0}, reads{0};
  std::vector<std::thread> threads;
  auto worker = [&](auto body) {
    threads.emplace_back([&, body] {
      start.arrive_and_wait();
      for (int i = 0; i < kRounds; ++i) {
        body(i);
        if (i + 1 == kWarmRounds) warm.count_down();
      }
    });
  };

  // write_mu, ControlSlot (decode off quiesces: the sink), AccessGate.
  worker([&](int i) {
    auto h = open(kEp0, FileKind::kConfig, 0, true, kHolder);
    if (!h) return;
    uint16_t cmd = (i % 2 == 0) ? 0 : PCI_COMMAND_MEMORY;
    if (write(*h, PCI_COMMAND, {static_cast<uint8_t>(cmd), 0}).ok()) ++decode_flips;
    med_->release(*h);
  });
  // ControlSlot: power transitions and resets of kEp1, and a ROM capture.
  worker([&](int i) {
    auto ps = open(kEp1, FileKind::kPowerState, 0, true, kHolder);
    if (ps) {
      if (write_text(*ps, i % 2 == 0 ? "D3hot" : "D0").ok()) ++power_cycles;
      med_->release(*ps);
    }
    if (i % 8 == 0) {
      if (auto r = open_wo(kEp1, FileKind::kReset)) {
        (void)write_text(*r, "1");
        med_->release(*r);
      }
      if (auto rom = open(kEp0, FileKind::kRom, 0, false, kHolder)) {
        (void)read(*rom, 0, 64);
        med_->release(*rom);
      }
    }
  });
  // DOE: mailbox, executor, Handle::mu (kEp0 needs no claim for DOE).
  worker([&](int) {
    auto h = open(kEp0, FileKind::kDoe, 0, true, kOther);
    if (!h) return;
    if (doe_exchange(*h)) ++exchanges;
    med_->release(*h);
  });
  // Views come and go with handles open in them: a host lock (level 1) over
  // add_view/remove_view, which revokes handles, cancels a DOE exchange in
  // flight and calls the sinks.
  worker([&](int) {
    ViewId v;
    {
      MutexLock host(host_mu_);
      v = med_->add_view(ViewPolicy{});
    }
    auto cfg = med_->open(v, kOther, FileRef{kEp0, FileKind::kConfig, 0, {}},
                          OpenFlags{true, false, false});
    auto doe =
        med_->open(v, kOther, FileRef{kEp0, FileKind::kDoe, 0, {}}, OpenFlags{true, true, false});
    if (doe) (void)write(*doe, 0, discovery_request());  // may still be in flight below
    {
      MutexLock host(host_mu_);
      med_->remove_view(v);
      (void)med_->health_all();
    }
    ++views_removed;
    if (cfg) med_->release(*cfg);
    if (doe) med_->release(*doe);
  });
  // Readers: status (devices_mu, doe_mu, counters), health, config, owner.
  worker([&](int) {
    (void)med_->status_json(view_);
    (void)med_->health_all();
    if (auto h = open(kEp0, FileKind::kConfig, 0, false, kOther)) {
      if (read(*h, 0, 256).ok()) ++reads;
      med_->release(*h);
    }
    if (auto h = open(kEp1, FileKind::kOwner, 0, false, kOther)) {
      (void)read(*h, 0, 64);
      med_->release(*h);
    }
  });
  // BAR traffic through the holder's handle: admitted accesses (tokens).
  worker([&](int i) {
    (void)bar_put(bar0, kScratch0, 4, static_cast<uint64_t>(i));
    (void)bar_get(bar0, kScratch0, 4);
    (void)bar_get(bar2, kScratch0, 4);  // ENODEV once kRemoved is gone
  });
  ASSERT_EQ(threads.size(), static_cast<size_t>(kWorkers));

  // ControlSlot -> attach_mu -> level 5 and the sinks: the device leaves
  // through its remove file (the simulator's hot-plug hook) mid-run.
  bool removed = false;
  threads.emplace_back([&] {
    start.arrive_and_wait();
    warm.wait();
    if (auto h = open_wo(kRemoved, FileKind::kRemove)) {
      removed = write_text(*h, "1").ok();
      med_->release(*h);
    }
  });
  for (auto& t : threads) t.join();

  // The holder's claims end last: claim end, event sink, hand-over.
  med_->release(bar0);
  med_->release(bar2);

  EXPECT_TRUE(removed);
  EXPECT_GT(decode_flips.load(), 0);
  EXPECT_GT(power_cycles.load(), 0);
  EXPECT_GT(exchanges.load(), 0);
  EXPECT_EQ(views_removed.load(), kRounds);
  EXPECT_GT(reads.load(), 0);
  EXPECT_GT(locking_sink_.invalidations(), 0u);
  EXPECT_GT(locking_sink_.gone(), 0u);
  EXPECT_EQ(events_.count(MediatorEvent::Kind::kDeviceLeft), 1u);
}

// A backend whose slot re-enumerates at once: when kRemoved leaves, a new
// device arrives at the same address (another sim set's function) before the
// remove() that caused it returns, as a rescan racing the removal would.
class ReplugBackend final : public backend::Backend {
 public:
  ReplugBackend()
      : first_(backend::sim::make_default_backend()),
        spare_(backend::sim::make_default_backend()) {}
  std::string describe() const override { return "replug"; }
  std::vector<std::shared_ptr<backend::Device>> devices() override {
    auto out = first_->devices();
    MutexLock lock(mu_);
    if (plugged_) out.push_back(spare_->find(kRemoved));
    return out;
  }
  void set_hotplug_callback(backend::HotplugFn fn) override {
    {
      MutexLock lock(mu_);
      fn_ = fn;
    }
    if (!fn) return first_->set_hotplug_callback(nullptr);
    first_->set_hotplug_callback([this](const Bdf& bdf, bool added) {
      backend::HotplugFn to;
      bool replug = false;
      {
        MutexLock lock(mu_);
        to = fn_;
        replug = !added && bdf == kRemoved && !plugged_;
        if (replug) plugged_ = true;
      }
      if (!to) return;
      to(bdf, added);
      if (replug) to(bdf, true);
    });
  }

 private:
  std::shared_ptr<backend::sim::SimBackend> first_, spare_;
  Mutex mu_;
  backend::HotplugFn fn_ GUARDED_BY(mu_);
  bool plugged_ GUARDED_BY(mu_) = false;
};

// The remove file's own removal of the device runs serialised with hot-plug
// (attach_mu, as -Wthread-safety found it did not) and removes only the
// device it removed: the one that arrived at the address meanwhile stays.
TEST(LockOrderRemove, RemoveFileLeavesTheDeviceThatArrivedInItsPlace) {
  auto be = std::make_shared<ReplugBackend>();
  Mediator med(be, MediatorOptions{});
  EventLog events;
  med.set_event_sink([&](const MediatorEvent& e) { events.add(e); });
  ViewId v = med.add_view(ViewPolicy{});
  auto rm = med.open(v, kHolder, FileRef{kRemoved, FileKind::kRemove, 0, {}},
                     OpenFlags{false, true, false});
  ASSERT_TRUE(rm.ok());
  const std::string one = "1";
  ASSERT_TRUE(med.write(*rm, 0, {reinterpret_cast<const uint8_t*>(one.data()), one.size()}).ok());
  med.release(*rm);
  auto now = med.devices(v);
  EXPECT_NE(std::find(now.begin(), now.end(), kRemoved), now.end()) << "the new device was removed";
  EXPECT_EQ(events.count(MediatorEvent::Kind::kDeviceLeft), 1u);
  auto cfg = med.open(v, kHolder, FileRef{kRemoved, FileKind::kConfig, 0, {}},
                      OpenFlags{true, false, false});
  EXPECT_TRUE(cfg.ok()) << (cfg.ok() ? "" : cfg.error().name());
  if (cfg) med.release(*cfg);
  med.set_event_sink(nullptr);
}

}  // namespace
}  // namespace pcifs::test
