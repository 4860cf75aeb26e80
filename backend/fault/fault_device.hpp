// A fault-injecting decorator over one Device (like leveldb's fault-injection Env).
//
// FaultDevice forwards every call to the device it wraps, unless a Fault set for
// that call's operation class says otherwise: fail the next N calls, every call,
// or each call with probability p (from a per-device, per-class RNG seeded by
// the owning FaultBackend, so a seed reproduces the same failure sequence no
// matter how calls to other devices or classes interleave), and/or delay each
// call (to widen race windows in concurrency tests), and/or run a hook before
// the inner call (to hold an access in flight deterministically, without sleeps).
//
// Ownership: a FaultDevice shares ownership of its inner Device. FaultBackend
// creates them; tests may also wrap a Device directly.
// Thread safety: every method may be called from any thread, concurrently. The
// delay and the hook run outside the FaultDevice's lock, so concurrent calls
// really do overlap inside them; faults are decided under the lock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string_view>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::backend::fault {

// Which Device methods a Fault applies to.
enum class OpClass : uint8_t {
  kConfigRead,   // config_read, config_read_block, Backend::config_read_batch
  kConfigWrite,  // config_write
  kBarRead,      // bar_read
  kBarWrite,     // bar_write
  kRom,          // rom_enable, rom_read
  kPower,        // set_power_state
  kReset,        // reset
  kRemove,       // remove
};
inline constexpr size_t kOpClassCount = 8;
std::string_view to_string(OpClass c);

// What to do to the calls of one operation class. The modes combine: a call
// fails if it is one of the next `fail_next`, or `fail_always`, or the RNG says
// so; `delay` applies to every call, failing or not.
struct Fault {
  Errno error{EIO};
  uint64_t fail_next = 0;  // the next N calls fail, then calls pass again
  bool fail_always = false;
  double probability = 0.0;  // 0..1: each call fails with this probability
  std::chrono::nanoseconds delay{0};

  static Fault next(uint64_t n, Errno e = Errno(EIO));
  static Fault always(Errno e = Errno(EIO));
  static Fault random(double p, Errno e = Errno(EIO));
  static Fault delayed(std::chrono::nanoseconds d);
};

// Called before the inner call of a class (after the fault decision and the
// delay), outside any lock. May block: the call stays "in flight" meanwhile.
using FaultHook = std::function<void(OpClass)>;

class FaultDevice final : public Device {
 public:
  // `seed` feeds the probabilistic faults; FaultBackend derives it per device.
  explicit FaultDevice(std::shared_ptr<Device> inner, uint64_t seed = 0);

  const std::shared_ptr<Device>& inner() const { return inner_; }

  void set_fault(OpClass c, const Fault& f) EXCLUDES(mu_);
  void clear_fault(OpClass c) EXCLUDES(mu_);
  void clear_all_faults() EXCLUDES(mu_);
  void set_hook(OpClass c, FaultHook hook) EXCLUDES(mu_);
  // Calls of a class since construction or reset_counters(), failed ones included.
  uint64_t calls(OpClass c) const EXCLUDES(mu_);
  uint64_t injected_failures(OpClass c) const EXCLUDES(mu_);
  void reset_counters() EXCLUDES(mu_);

  // Checks the fault of class `c` for one call: counts it, delays, runs the
  // hook, and returns the error to inject if any. Public for FaultBackend's batch.
  Result<void> enter(OpClass c) EXCLUDES(mu_);

  // --- Device
  const DeviceInfo& info() const override { return inner_->info(); }
  Result<uint32_t> config_read(uint32_t offset, unsigned width) override;
  Result<void> config_write(uint32_t offset, unsigned width, uint32_t value) override;
  Result<void> config_read_block(uint32_t offset, std::span<uint8_t> out) override;
  Result<uint64_t> bar_read(unsigned bar, uint64_t offset, unsigned width) override;
  Result<void> bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) override;
  Result<void> rom_enable(bool on) override;
  Result<size_t> rom_read(uint64_t offset, std::span<uint8_t> out) override;
  Result<void> set_power_state(PowerState target) override;
  Result<void> reset() override;
  Result<void> remove() override;
  std::optional<uint64_t> violations() const override { return inner_->violations(); }
  std::vector<std::string> violation_log() const override { return inner_->violation_log(); }

 private:
  struct ClassState {
    Fault fault;
    FaultHook hook;
    std::mt19937_64 rng;
    uint64_t calls = 0;
    uint64_t failures = 0;
  };
  struct Decision {
    std::optional<Errno> error;
    std::chrono::nanoseconds delay{0};
    FaultHook hook;
  };
  Decision decide(OpClass c) EXCLUDES(mu_);
  static bool draw(ClassState& s);

  const std::shared_ptr<Device> inner_;
  mutable Mutex mu_{
      "FaultDevice::mu_"};  // lock order: leaf; hooks run without it (fs/core/mediator_state.hpp)
  std::array<ClassState, kOpClassCount> state_ GUARDED_BY(mu_);
};

}  // namespace pcifs::backend::fault
