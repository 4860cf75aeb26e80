// SimDevice: power states, function reset, hot-remove and the expansion ROM.
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "sim/sim_device.hpp"

namespace pcifs::backend::sim {

// --- Expansion ROM.

uint32_t SimDevice::rom_bar_reg() const {
  return spec_.header_type == PCI_HEADER_TYPE_BRIDGE ? PCI_ROM_ADDRESS1 : PCI_ROM_ADDRESS;
}

bool SimDevice::rom_enabled_locked() const {
  return spec_.rom.size != 0 &&
         (get_field(config_, rom_bar_reg(), 4) & PCI_ROM_ADDRESS_ENABLE) != 0;
}

bool SimDevice::rom_decode_enabled() const {
  MutexLock l(mu_);
  return rom_enabled_locked();
}

Result<void> SimDevice::rom_enable(bool on) {
  MutexLock l(mu_);
  if (removed_) return violation("rom enable after remove"), Errno(ENODEV);
  if (spec_.rom.size == 0) return violation("rom enable: no ROM"), Errno(ENXIO);
  if (power_ == PowerState::kD3cold) return violation("rom enable in D3cold"), Errno(EIO);
  uint32_t reg = get_field(config_, rom_bar_reg(), 4);
  reg = on ? (reg | PCI_ROM_ADDRESS_ENABLE) : (reg & ~uint32_t{PCI_ROM_ADDRESS_ENABLE});
  set_field(config_, rom_bar_reg(), 4, reg);
  return Ok();
}

// The test-only gate of DeviceSpec::stall_file: waits (bounded, 10 minutes)
// while the file exists, after saying so with "<file>.entered".
void SimDevice::stall() const {
  const std::string& f = spec_.stall_file;
  if (f.empty() || ::access(f.c_str(), F_OK) != 0) return;
  if (int fd = ::open((f + ".entered").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644); fd >= 0) {
    ::close(fd);
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  while (::access(f.c_str(), F_OK) == 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Result<size_t> SimDevice::rom_read(uint64_t offset, std::span<uint8_t> out) {
  stall();
  MutexLock l(mu_);
  if (removed_) return violation("rom read after remove"), Errno(ENODEV);
  if (spec_.rom.size == 0) return violation("rom read: no ROM"), Errno(ENXIO);
  if (offset >= rom_->size()) return size_t{0};
  size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), rom_->size() - offset));
  const char* why = nullptr;
  if (power_ != PowerState::kD0) {
    why = power_ == PowerState::kD3hot ? "rom read in D3hot" : "rom read in D3cold";
  } else if (!rom_enabled_locked()) {
    why = "rom read while ROM decode is off";
  } else if ((command() & PCI_COMMAND_MEMORY) == 0) {
    why = "rom read with memory decode off";
  }
  if (why != nullptr) {
    violation(why);
    std::fill_n(out.begin(), n, uint8_t{0xff});
  } else {
    std::memcpy(out.data(), rom_->data() + offset, n);
  }
  return n;
}

// --- Power (PCI PM 1.2 §5.4; PCIe 6.0 §5.3.1.4 for D3hot -> D0 and No_Soft_Reset).

void SimDevice::set_pm_state_bits(uint16_t state) {
  uint32_t at = model_->caps.pm + PCI_PM_CTRL;
  uint32_t v = (get_field(config_, at, 2) & ~uint32_t{PCI_PM_CTRL_STATE_MASK}) | state;
  set_field(config_, at, 2, v);
}

void SimDevice::pmcsr_written(uint16_t old_pmcsr) {
  uint16_t state = pmcsr() & PCI_PM_CTRL_STATE_MASK;
  uint16_t old_state = old_pmcsr & PCI_PM_CTRL_STATE_MASK;
  if (state == old_state) return;
  if (state == 1 || state == 2) {  // D1/D2 unsupported (PMC): the write has no effect
    set_pm_state_bits(old_state);
  } else if (state == 3) {
    enter_d3hot();
  } else {
    leave_d3hot();
  }
}

void SimDevice::enter_d3hot() { power_ = PowerState::kD3hot; }

void SimDevice::leave_d3hot() {
  power_ = PowerState::kD0;
  bool keep = (pmcsr() & PCI_PM_CTRL_NO_SOFT_RESET) != 0;
  if (!keep) function_reset();  // an internal reset: hardware defaults
}

// FLR, or the internal reset of D3hot -> D0. PCIe 6.0 §6.6.2: after an FLR
// the function must hold no software-readable state of its previous use, so
// the model clears its BAR memory (the MSI-X table with it), as power loss does.
void SimDevice::function_reset() {
  config_ = model_->hw_default;
  for (auto& doe : doe_) doe->reset();
  for (auto& bar : bars_) {
    if (bar) bar->power_loss();
  }
}

void SimDevice::power_on() {
  power_ = PowerState::kD0;
  config_ = model_->hw_default;
  for (auto& doe : doe_) doe->reset();
  for (auto& bar : bars_) {
    if (bar) bar->power_loss();
  }
}

Result<void> SimDevice::transition(PowerState from, PowerState to) {
  bool has_pm = model_->caps.pm != 0;
  if (to == PowerState::kD3cold) {
    if (from != PowerState::kD3hot) violation("D3cold entered from D0");
    power_ = PowerState::kD3cold;
    for (auto& doe : doe_) doe->reset();  // power is gone
    return Ok();
  }
  if (from == PowerState::kD3cold) {
    if (to == PowerState::kD3hot) return violation("D3cold to D3hot without D0"), Errno(EINVAL);
    power_on();
    return Ok();
  }
  if (!has_pm) return Errno(EOPNOTSUPP);
  // D0 <-> D3hot: exactly what a PMCSR write does.
  uint16_t old = pmcsr();
  set_pm_state_bits(to == PowerState::kD3hot ? 3 : 0);
  pmcsr_written(old);
  return Ok();
}

Result<void> SimDevice::set_power_state(PowerState target) {
  stall();
  MutexLock l(mu_);
  if (removed_) return violation("set power state after remove"), Errno(ENODEV);
  if (target == power_) return Ok();
  return transition(power_, target);
}

PowerState SimDevice::physical_power_state() const {
  MutexLock l(mu_);
  return power_;
}

// --- Reset and removal.

Result<void> SimDevice::reset() {
  stall();
  MutexLock l(mu_);
  if (removed_) return violation("reset after remove"), Errno(ENODEV);
  if (power_ != PowerState::kD0) {
    violation("reset in " + std::string(to_string(power_)));
    return Errno(EIO);
  }
  function_reset();
  return Ok();
}

void SimDevice::set_remove_hook(std::function<void(const Bdf&)> hook) {
  MutexLock l(mu_);
  remove_hook_ = std::move(hook);
}

Result<void> SimDevice::remove() {
  std::function<void(const Bdf&)> hook;
  {
    MutexLock l(mu_);
    if (removed_) return violation("remove after remove"), Errno(ENODEV);
    removed_ = true;
    hook = remove_hook_;
  }
  if (hook) hook(spec_.bdf);  // no device lock held: the hook may call back in
  return Ok();
}

bool SimDevice::removed() const {
  MutexLock l(mu_);
  return removed_;
}

}  // namespace pcifs::backend::sim
