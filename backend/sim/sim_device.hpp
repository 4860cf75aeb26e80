// SimDevice: one simulated PCI/PCIe function — the reference model every pcifs
// test checks against.
//
// It does what hardware does and nothing more: config space with per-byte
// RO/RW/RW1C masks (sim/config_model.hpp), BAR sizing, PM/MSI/MSI-X/PCIe/AER/
// DSN/DOE capabilities, BAR registers with side effects (sim/bar_memory.hpp), an
// expansion ROM (sim/rom_image.hpp), power states D0/D3hot/D3cold, function
// reset and hot-remove. It performs no policy at all; instead it is the
// violation oracle: every access real hardware forbids is counted, with a short
// reason in a bounded log, so tests can prove the core never lets one through.
//
// What counts as a violation (and what the access then does):
//  - any access after remove()                          -> ENODEV
//  - a malformed call: bad width/alignment (EINVAL), offset or BAR out of range,
//    unimplemented BAR, no ROM (ENXIO) — the core checks bounds first, so these
//    are core bugs
//  - any access in D3cold: config reads return all-ones, writes are dropped,
//    BAR reads all-ones; set_power_state(D3cold) from D0
//  - BAR access in D3hot, with memory (I/O for I/O BARs) decode off in the
//    command register, or while ROM decode is on (PCI 3.0 §6.2.5.2: the ROM may
//    share a decoder with the BARs): reads all-ones, writes dropped, result Ok
//    (what a master abort looks like)
//  - rom_read while ROM decode or memory decode is off, or not in D0: 0xff bytes
//  - DOE register accesses that are not dword-sized, DOE register writes in
//    D3hot, and DOE protocol misuse reported by the DoeResponder
//  - reset() outside D0 (EIO, nothing happens)
// Reads of the DOE registers in D3hot are legal (config space, no side effects).
//
// Power: PMCSR PowerState writes move D0 <-> D3hot (D1/D2 are not supported and
// such writes leave the field unchanged). D3hot -> D0 keeps config when
// No_Soft_Reset is 1, else the function resets to hardware defaults. D3cold is
// entered with set_power_state(D3cold) (power removed; legal from D3hot) and
// left with set_power_state(D0): hardware defaults, DOE idle, BAR RAM zero.
// Hardware defaults mean BAR registers 0 and command register 0: firmware's
// assignment is gone until the owner restores its saved state. A function
// reset also clears the BAR registers (scratch, counters) but keeps BAR RAM.
// Writing Initiate FLR (PCIe DevCtl bit 15) performs the same reset as reset().
//
// Thread safety: every method may be called from any thread. Each device
// serialises its own accesses with one lock (one access at a time per
// function, like hardware); the violation record has its own inner lock.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"
#include "sim/bar_memory.hpp"
#include "sim/config_model.hpp"
#include "sim/device_spec.hpp"
#include "sim/doe_responder.hpp"

namespace pcifs::backend::sim {

inline constexpr size_t kViolationLogSize = 64;

class SimDevice final : public Device {
 public:
  // `model` and `rom` may be shared with identical functions.
  SimDevice(DeviceSpec spec, std::shared_ptr<const ConfigModel> model,
            std::shared_ptr<const std::vector<uint8_t>> rom);
  ~SimDevice() override;

  const DeviceInfo& info() const override { return info_; }
  Result<uint32_t> config_read(uint32_t offset, unsigned width) override;
  Result<void> config_write(uint32_t offset, unsigned width, uint32_t value) override;
  Result<uint64_t> bar_read(unsigned bar, uint64_t offset, unsigned width) override;
  Result<void> bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) override;
  Result<size_t> bar_read_run(unsigned bar, uint64_t offset, unsigned width,
                              std::span<uint8_t> out) override;
  Result<size_t> bar_write_run(unsigned bar, uint64_t offset, unsigned width,
                               std::span<const uint8_t> in) override;
  Result<void> rom_enable(bool on) override;
  Result<size_t> rom_read(uint64_t offset, std::span<uint8_t> out) override;
  Result<void> set_power_state(PowerState target) override;
  Result<void> reset() override;
  Result<void> remove() override;
  std::optional<uint64_t> violations() const override;

  // The reasons of the last kViolationLogSize violations, oldest first,
  // e.g. "bar0 read of 4 bytes in D3hot".
  std::vector<std::string> violation_log() const override;
  PowerState physical_power_state() const;
  bool rom_decode_enabled() const;
  bool removed() const;
  void set_doe_fault(unsigned mailbox, DoeFault fault);

  // For the owning backend: called once after remove() succeeded, with no lock
  // of this device held. Set before the device is shared.
  void set_remove_hook(std::function<void(const Bdf&)> hook);
  const DeviceSpec& spec() const { return spec_; }
  const CapOffsets& caps() const { return model_->caps; }

 private:
  enum class Gate { kPass, kBlocked };  // kBlocked: a violation, master abort

  void violation(std::string reason) const;
  Result<void> check_config(uint32_t offset, unsigned width, const char* op) const REQUIRES(mu_);
  bool run_passes(unsigned bar, uint64_t offset, unsigned width, size_t count) const REQUIRES(mu_);
  Result<Gate> gate_bar(unsigned bar, uint64_t offset, unsigned width, const char* op) const
      REQUIRES(mu_);
  const char* bar_block_reason(const BarSpec& bar) const REQUIRES(mu_);
  int doe_mailbox_at(uint32_t offset) const;
  Result<uint32_t> doe_read(size_t mb, uint32_t offset, unsigned width) REQUIRES(mu_);
  void doe_write(size_t mb, uint32_t offset, unsigned width, uint32_t value) REQUIRES(mu_);
  void after_config_write(uint32_t offset, unsigned width, uint32_t value, uint16_t old_pmcsr)
      REQUIRES(mu_);
  void pmcsr_written(uint16_t old_pmcsr) REQUIRES(mu_);
  void enter_d3hot() REQUIRES(mu_);
  void leave_d3hot() REQUIRES(mu_);
  void function_reset() REQUIRES(mu_);
  void stall() const EXCLUDES(mu_);  // DeviceSpec::stall_file
  void power_on() REQUIRES(mu_);
  uint16_t command() const REQUIRES(mu_);
  uint16_t pmcsr() const REQUIRES(mu_);
  void set_pm_state_bits(uint16_t state) REQUIRES(mu_);
  uint32_t rom_bar_reg() const;
  bool rom_enabled_locked() const REQUIRES(mu_);
  Result<void> transition(PowerState from, PowerState to) REQUIRES(mu_);

  const DeviceSpec spec_;
  const std::shared_ptr<const ConfigModel> model_;
  const std::shared_ptr<const std::vector<uint8_t>> rom_;
  DeviceInfo info_;

  // Lock order: leaf chain Registry::mu -> mu_ -> vmu_ (fs/core/mediator_state.hpp).
  mutable Mutex mu_ ACQUIRED_BEFORE(vmu_){"SimDevice::mu_"};
  std::vector<uint8_t> config_ GUARDED_BY(mu_);
  PowerState power_ GUARDED_BY(mu_) = PowerState::kD0;
  bool removed_ GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<BarMemory>> bars_ GUARDED_BY(mu_);  // by BAR index; null if none
  std::vector<std::unique_ptr<DoeResponder>> doe_ GUARDED_BY(mu_);
  std::function<void(const Bdf&)> remove_hook_ GUARDED_BY(mu_);

  // Inner lock: the DoeResponder reports through a sink while mu_ is held.
  mutable Mutex vmu_{"SimDevice::vmu_"};
  mutable uint64_t violation_count_ GUARDED_BY(vmu_) = 0;
  mutable std::deque<std::string> violation_log_ GUARDED_BY(vmu_);
};

// DeviceInfo as Linux would show it for this spec (resources with IORESOURCE_*
// flags, bridge windows for type 1 headers).
DeviceInfo make_device_info(const DeviceSpec& spec);

}  // namespace pcifs::backend::sim
