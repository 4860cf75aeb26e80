// FaultBackend: stable wrappers, pruning of departed devices, per-device seeds,
// hot-plug pass-through and the batched config read.
#include "fault/fault_backend.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "unit/fault/fake_backend.hpp"

namespace pcifs::backend::fault {
namespace {

using testing::FakeBackend;

const Bdf kA{0, 1, 0, 0};
const Bdf kB{0, 2, 0, 0};

struct Fixture {
  std::shared_ptr<FakeBackend> fake = std::make_shared<FakeBackend>();
  std::shared_ptr<testing::FakeDevice> a = fake->add(kA);
  std::shared_ptr<testing::FakeDevice> b = fake->add(kB);
  FaultBackend fb{fake, 5};
};

TEST(FaultBackend, DescribeNamesTheInnerBackend) {
  Fixture f;
  EXPECT_EQ(f.fb.describe(), "fault(fake)");
}

TEST(FaultBackend, WrapsEveryDeviceInOrder) {
  Fixture f;
  auto devs = f.fb.devices();
  ASSERT_EQ(devs.size(), 2u);
  EXPECT_EQ(devs[0]->info().bdf, kA);
  EXPECT_EQ(devs[1]->info().bdf, kB);
  auto* w = dynamic_cast<FaultDevice*>(devs[0].get());
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->inner(), f.a);
}

TEST(FaultBackend, WrappersAreStableAndKeepTheirFaults) {
  Fixture f;
  auto first = f.fb.devices();
  f.fb.device(kA)->set_fault(OpClass::kBarRead, Fault::always(Errno(EIO)));
  auto second = f.fb.devices();
  EXPECT_EQ(first[0], second[0]);
  EXPECT_EQ(first[1], second[1]);
  EXPECT_EQ(second[0]->bar_read(0, 0, 4).error(), Errno(EIO));
  EXPECT_TRUE(second[1]->bar_read(0, 0, 4).ok());
}

TEST(FaultBackend, DepartedDeviceIsForgottenAndANewOneStartsClean) {
  Fixture f;
  auto old = f.fb.device(kA);
  old->set_fault(OpClass::kReset, Fault::always());
  f.fake->drop(kA);
  EXPECT_EQ(f.fb.device(kA), nullptr);
  EXPECT_EQ(f.fb.devices().size(), 1u);
  f.fake->add(kA);  // a new function at the same address
  auto fresh = f.fb.device(kA);
  ASSERT_NE(fresh, nullptr);
  EXPECT_NE(fresh, old);
  EXPECT_TRUE(fresh->reset().ok());
  EXPECT_FALSE(old->reset().ok()) << "the old wrapper still works for its holder";
}

TEST(FaultBackend, SetFaultAllReachesEveryDevice) {
  Fixture f;
  f.fb.set_fault_all(OpClass::kPower, Fault::next(1, Errno(EBUSY)));
  for (auto& d : f.fb.devices()) {
    EXPECT_EQ(d->set_power_state(PowerState::kD3hot).error(), Errno(EBUSY));
    EXPECT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  }
}

TEST(FaultBackend, HotplugCallbackPassesThrough) {
  Fixture f;
  std::vector<std::pair<Bdf, bool>> seen;
  f.fb.set_hotplug_callback([&](const Bdf& bdf, bool added) { seen.emplace_back(bdf, added); });
  f.fake->drop(kB);
  f.fake->add(Bdf{0, 3, 0, 0});
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(kB, false));
  EXPECT_EQ(seen[1], std::make_pair(Bdf{0, 3, 0, 0}, true));
}

// The same seed gives each device the same failure sequence, whatever else
// happens to other devices; different devices get different sequences.
std::string pattern(FaultBackend& fb, const Bdf& bdf, int n) {
  auto d = fb.device(bdf);
  std::string s;
  for (int i = 0; i < n; ++i) s += d->bar_read(0, 0, 4).ok() ? '.' : 'x';
  return s;
}

TEST(FaultBackend, SeedGivesReproduciblePerDeviceSequences) {
  Fixture f1, f2;
  f1.fb.set_fault_all(OpClass::kBarRead, Fault::random(0.5));
  f2.fb.set_fault_all(OpClass::kBarRead, Fault::random(0.5));
  (void)pattern(f2.fb, kB, 50);  // disturb another device first
  auto a1 = pattern(f1.fb, kA, 100);
  EXPECT_EQ(a1, pattern(f2.fb, kA, 100));
  EXPECT_NE(a1, pattern(f1.fb, kB, 100));
}

TEST(FaultBackend, BatchChecksFaultsAndUsesTheInnerBatch) {
  Fixture f;
  auto devs = f.fb.devices();
  f.fb.device(kB)->set_fault(OpClass::kConfigRead, Fault::next(1, Errno(ENODEV)));
  std::array<uint8_t, 8> ba{}, bb{};
  std::array<ConfigReadItem, 2> items{ConfigReadItem{devs[0].get(), 8, ba, {}},
                                      ConfigReadItem{devs[1].get(), 8, bb, {}}};
  f.fb.config_read_batch(items);
  EXPECT_TRUE(items[0].result.ok());
  EXPECT_EQ(ba[0], 8);
  EXPECT_EQ(ba[7], 15);
  ASSERT_FALSE(items[1].result.ok());
  EXPECT_EQ(items[1].result.error(), Errno(ENODEV));
  EXPECT_EQ(bb[0], 0) << "a failed item is not read";
  EXPECT_EQ(f.fake->batch_calls, 1u);
  EXPECT_EQ(f.fake->batch_items, 1u);
  EXPECT_EQ(f.fb.device(kA)->calls(OpClass::kConfigRead), 1u);
}

TEST(FaultBackend, ConcurrentEnumerationAndHotplugKeepWrappersConsistent) {
  Fixture f;
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int i = 0; i < 200; ++i) {
      f.fake->drop(kB);
      f.fake->add(kB);
    }
    stop = true;
  });
  auto a0 = f.fb.device(kA);
  while (!stop) {
    auto devs = f.fb.devices();
    ASSERT_FALSE(devs.empty());
    ASSERT_EQ(devs[0], a0) << "a device that never left keeps its wrapper";
  }
  churn.join();
}

}  // namespace
}  // namespace pcifs::backend::fault
