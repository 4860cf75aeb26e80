// SimBackend: a set of simulated PCI functions (sim/sim_device.hpp) behind the
// Backend interface — the embedded default set, or a device-set JSON file
// (format: sim/device_set.hpp).
//
// The embedded default set (its JSON text: default_set_json()):
//   0000:00:00.0 host bridge 1b36:0008, class 060000, group 0
//   0000:00:01.0 PCIe root port 1b36:000c, class 060400, secondary bus 1, group 1
//   0000:00:02.0 PCIe root port 1b36:000c, class 060400, secondary bus 2, group 4
//   0000:01:00.0 CXL memory device 1b36:10f0, class 050210, fn 0, group 2:
//                BAR0 mem64 pref 1 MiB, BAR2 mem32 64 KiB, BAR4 I/O 256 B,
//                ROM 64 KiB (x86 then EFI image), PM (No_Soft_Reset=1), MSI-X,
//                PCIe, AER, DSN, one DOE mailbox (Discovery, CDAT, echo)
//   0000:01:00.1 1b36:10f1, class 058000, fn 1, group 2: BAR0 mem32 64 KiB,
//                PM (No_Soft_Reset=0), PCIe, AER
//   0000:02:00.0 1b36:10f2, class 120000, group 3: BAR0 mem64 1 MiB, ROM 1 MiB
//                (3 images), PM, MSI-X, PCIe, AER, DSN, two DOE mailboxes
//                (0 healthy: Discovery + echo; 1 faulty: no_response)
//
// Ownership: the backend shares its devices (shared_ptr) with whoever holds
// them; a removed device stays valid for its holders but refuses every access.
// Thread safety: every method may be called from any thread; the device list
// and the hot-plug callback are guarded by one lock, and the callback is
// called with no lock held.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"
#include "sim/device_spec.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::backend::sim {

class SimBackend final : public Backend {
 public:
  SimBackend(std::string description, std::vector<std::shared_ptr<SimDevice>> devices);

  std::string describe() const override;  // "sim (embedded default)" or "sim:FILE"
  std::vector<std::shared_ptr<Device>> devices() override;  // present, sorted by Bdf
  void set_hotplug_callback(HotplugFn fn) override;         // remove() fires fn(bdf, false)
  std::shared_ptr<SimDevice> find(const Bdf& bdf) const;    // nullptr if absent or removed

 private:
  // Shared with the devices' remove hooks, so a device that outlives the
  // backend can still be removed safely.
  struct Registry {
    Mutex mu{"SimBackend::Registry::mu"};  // lock order: leaf chain mu -> SimDevice::mu_
                                           // (fs/core/mediator_state.hpp)
    std::map<Bdf, std::shared_ptr<SimDevice>> devices GUARDED_BY(mu);
    HotplugFn hotplug GUARDED_BY(mu);
  };
  static void on_removed(const std::weak_ptr<Registry>& reg, const Bdf& bdf);

  const std::string description_;
  const std::shared_ptr<Registry> registry_;
};

std::unique_ptr<SimBackend> make_default_backend();  // the embedded default set
std::string_view default_set_json();                 // its JSON text

// Builds the devices of a parsed set (sharing config models and ROMs between
// identical functions).
std::vector<std::shared_ptr<SimDevice>> build_devices(const std::vector<DeviceSpec>& specs);

// Errors name the field and what was expected:
// "devices[2].bars[0].size: expected a power of two >= 16". load_backend_file
// prefixes the file name. Failures return EINVAL (ENOENT etc. for the file).
Result<std::unique_ptr<SimBackend>> load_backend_json(std::string_view text, std::string* error);
Result<std::unique_ptr<SimBackend>> load_backend_file(const std::string& path, std::string* error);

}  // namespace pcifs::backend::sim
