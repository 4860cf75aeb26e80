// A minimal recording Backend for the fault decorator's tests: config and BAR 0
// are plain memory, every call is counted, hot-plug is driven by the test.
// Independent of the simulator, so these tests pin the decorator alone.
// Thread-safe (one mutex around everything).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::backend::fault::testing {

class FakeDevice final : public Device {
 public:
  explicit FakeDevice(Bdf bdf) {
    info_.bdf = bdf;
    info_.vendor = 0x1b36;
    info_.resources.resize(7);
    for (size_t i = 0; i < config_.size(); ++i) config_[i] = static_cast<uint8_t>(i);
  }
  const DeviceInfo& info() const override { return info_; }

  Result<uint32_t> config_read(uint32_t offset, unsigned width) override {
    ++inner_calls;
    MutexLock l(mu_);
    uint32_t v = 0;
    std::memcpy(&v, &config_[offset], width);
    return v;
  }
  Result<void> config_write(uint32_t offset, unsigned width, uint32_t value) override {
    ++inner_calls;
    MutexLock l(mu_);
    std::memcpy(&config_[offset], &value, width);
    return Ok();
  }
  Result<void> config_read_block(uint32_t offset, std::span<uint8_t> out) override {
    ++inner_calls;
    ++block_calls;
    MutexLock l(mu_);
    std::memcpy(out.data(), &config_[offset], out.size());
    return Ok();
  }
  Result<uint64_t> bar_read(unsigned, uint64_t offset, unsigned width) override {
    ++inner_calls;
    MutexLock l(mu_);
    uint64_t v = 0;
    std::memcpy(&v, &bar_[offset], width);
    return v;
  }
  Result<void> bar_write(unsigned, uint64_t offset, unsigned width, uint64_t value) override {
    ++inner_calls;
    MutexLock l(mu_);
    std::memcpy(&bar_[offset], &value, width);
    return Ok();
  }
  Result<void> rom_enable(bool) override {
    ++inner_calls;
    return Ok();
  }
  Result<size_t> rom_read(uint64_t, std::span<uint8_t> out) override {
    ++inner_calls;
    std::fill(out.begin(), out.end(), uint8_t{0x55});
    return out.size();
  }
  Result<void> set_power_state(PowerState s) override {
    ++inner_calls;
    MutexLock l(mu_);
    power_ = s;
    return Ok();
  }
  Result<void> reset() override {
    ++inner_calls;
    return Ok();
  }
  Result<void> remove() override {
    ++inner_calls;
    return Ok();
  }
  std::optional<uint64_t> violations() const override { return 7; }

  PowerState power() {
    MutexLock l(mu_);
    return power_;
  }

  std::atomic<uint64_t> inner_calls{0};
  std::atomic<uint64_t> block_calls{0};

 private:
  DeviceInfo info_;
  Mutex mu_;
  std::array<uint8_t, 256> config_ GUARDED_BY(mu_){};
  std::array<uint8_t, 4096> bar_ GUARDED_BY(mu_){};
  PowerState power_ GUARDED_BY(mu_) = PowerState::kD0;
};

class FakeBackend final : public Backend {
 public:
  std::string describe() const override { return "fake"; }
  std::vector<std::shared_ptr<Device>> devices() override {
    MutexLock l(mu_);
    std::vector<std::shared_ptr<Device>> out;
    for (auto& [bdf, d] : devs_) out.push_back(d);
    return out;
  }
  void set_hotplug_callback(HotplugFn fn) override {
    MutexLock l(mu_);
    fn_ = std::move(fn);
  }
  void config_read_batch(std::span<ConfigReadItem> items) override {
    ++batch_calls;
    batch_items += items.size();
    Backend::config_read_batch(items);
  }

  std::shared_ptr<FakeDevice> add(Bdf bdf) {
    auto d = std::make_shared<FakeDevice>(bdf);
    HotplugFn fn;
    {
      MutexLock l(mu_);
      devs_[bdf] = d;
      fn = fn_;
    }
    if (fn) fn(bdf, true);
    return d;
  }
  void drop(Bdf bdf) {
    HotplugFn fn;
    {
      MutexLock l(mu_);
      devs_.erase(bdf);
      fn = fn_;
    }
    if (fn) fn(bdf, false);
  }

  std::atomic<uint64_t> batch_calls{0};
  std::atomic<uint64_t> batch_items{0};

 private:
  Mutex mu_;
  std::map<Bdf, std::shared_ptr<FakeDevice>> devs_ GUARDED_BY(mu_);
  HotplugFn fn_ GUARDED_BY(mu_);
};

}  // namespace pcifs::backend::fault::testing
