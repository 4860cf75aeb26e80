// A fault-injecting decorator over any Backend: devices() returns FaultDevices
// wrapping the inner backend's devices, so tests can make chosen operations of
// chosen devices fail or stall while everything else passes through unchanged.
//
// Wrappers are stable: the same inner Device object always yields the same
// FaultDevice (faults set on it stay set across devices() calls). A wrapper is
// forgotten once its inner device is no longer listed (removed); whoever still
// holds it keeps a working object.
//
// Ownership: FaultBackend shares ownership of the inner backend and of the
// wrappers it hands out.
// Thread safety: every method may be called from any thread, concurrently, and
// concurrently with hot-plug. The hot-plug callback is passed through to the
// inner backend unchanged (called with no FaultBackend lock held).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fault/fault_device.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::backend::fault {

inline constexpr uint64_t kDefaultSeed = 0x70636966735eedULL;

class FaultBackend final : public Backend {
 public:
  // Each wrapper's RNG is seeded from `seed` and its Bdf, so the failure
  // sequence of a device depends only on the seed and the calls to that device.
  explicit FaultBackend(std::shared_ptr<Backend> inner, uint64_t seed = kDefaultSeed);

  const std::shared_ptr<Backend>& inner() const { return inner_; }
  // The wrapper of the device at `bdf`, or nullptr if the inner backend lists none.
  std::shared_ptr<FaultDevice> device(const Bdf& bdf) EXCLUDES(mu_);
  // Sets the same fault on every device listed now.
  void set_fault_all(OpClass c, const Fault& f) EXCLUDES(mu_);

  // --- Backend
  std::string describe() const override;                    // "fault(<inner describe>)"
  std::optional<std::string> shared_root() const override;  // the inner backend's
  std::vector<std::shared_ptr<Device>> devices() override EXCLUDES(mu_);
  void set_hotplug_callback(HotplugFn fn) override;
  // Items whose device is one of our wrappers are checked against its
  // kConfigRead fault, then the rest go to the inner backend's batch in one go.
  void config_read_batch(std::span<ConfigReadItem> items) override;

 private:
  std::vector<std::shared_ptr<FaultDevice>> wrap_all() EXCLUDES(mu_);
  std::shared_ptr<FaultDevice> wrap(const std::shared_ptr<Device>& d) REQUIRES(mu_);

  const std::shared_ptr<Backend> inner_;
  const uint64_t seed_;
  Mutex mu_{"FaultBackend::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  // Keyed by the inner device's address; the wrapper holds the inner device, so
  // the address cannot be reused while the entry exists.
  std::map<const Device*, std::shared_ptr<FaultDevice>> wrappers_ GUARDED_BY(mu_);
};

}  // namespace pcifs::backend::fault
