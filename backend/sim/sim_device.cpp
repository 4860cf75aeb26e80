// SimDevice: construction, the violation record, config and BAR accesses.
// Power, reset, removal and the ROM live in sim_device_power.cpp.
#include "sim/sim_device.hpp"

#include <linux/pci_regs.h>

#include <cstdio>

namespace pcifs::backend::sim {
namespace {

bool valid_width(unsigned width, bool allow8) {
  return width == 1 || width == 2 || width == 4 || (allow8 && width == 8);
}

uint64_t all_ones(unsigned width) {
  return width >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * width)) - 1;
}

std::string access_text(const char* what, const char* op, unsigned width) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s %s of %u bytes", what, op, width);
  return buf;
}

}  // namespace

SimDevice::SimDevice(DeviceSpec spec, std::shared_ptr<const ConfigModel> model,
                     std::shared_ptr<const std::vector<uint8_t>> rom)
    : spec_(std::move(spec)),
      model_(std::move(model)),
      rom_(std::move(rom)),
      info_(make_device_info(spec_)) {
  MutexLock l(mu_);
  config_ = firmware_config(spec_, *model_);
  bars_.resize(6);
  for (unsigned i = 0; i < 6; ++i) {
    if (spec_.bars[i].kind != BarKind::kNone)
      bars_[i] = std::make_unique<BarMemory>(spec_.bars[i].size);
  }
  for (const DoeResponderConfig& cfg : spec_.caps.doe) {
    doe_.push_back(
        std::make_unique<DoeResponder>(cfg, [this](std::string r) { violation(std::move(r)); }));
  }
  // Put there by the host before anyone could see the function: a PMCSR write.
  if (spec_.power_state == PowerState::kD3hot)
    (void)transition(PowerState::kD0, PowerState::kD3hot);
}

SimDevice::~SimDevice() = default;

// --- The violation oracle.

void SimDevice::violation(std::string reason) const {
  MutexLock l(vmu_);
  ++violation_count_;
  violation_log_.push_back(std::move(reason));
  if (violation_log_.size() > kViolationLogSize) violation_log_.pop_front();
}

std::optional<uint64_t> SimDevice::violations() const {
  MutexLock l(vmu_);
  return violation_count_;
}

std::vector<std::string> SimDevice::violation_log() const {
  MutexLock l(vmu_);
  return {violation_log_.begin(), violation_log_.end()};
}

// --- Config space.

Result<void> SimDevice::check_config(uint32_t offset, unsigned width, const char* op) const {
  auto what = [&] { return access_text("config", op, width); };  // only for a violation
  auto at = [&] {
    char buf[32];
    std::snprintf(buf, sizeof buf, " at 0x%x", offset);
    return std::string(buf);
  };
  if (removed_) return violation(what() + " after remove"), Errno(ENODEV);
  if (!valid_width(width, false) || offset % width != 0) {
    return violation(what() + at() + ": bad width or alignment"), Errno(EINVAL);
  }
  if (offset >= config_.size() || config_.size() - offset < width) {
    return violation(what() + at() + ": out of range"), Errno(ENXIO);
  }
  if (power_ == PowerState::kD3cold) return violation(what() + " in D3cold"), Errno(EIO);
  return Ok();
}

int SimDevice::doe_mailbox_at(uint32_t offset) const {
  const auto& offs = model_->caps.doe;
  for (size_t i = 0; i < offs.size(); ++i) {
    uint32_t first = offs[i] + uint32_t{PCI_DOE_CAP}, end = offs[i] + uint32_t{PCI_DOE_READ} + 4;
    if (offset >= first && offset < end) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

Result<uint32_t> SimDevice::config_read(uint32_t offset, unsigned width) {
  MutexLock l(mu_);
  if (auto r = check_config(offset, width, "read"); !r) {
    if (r.error() == Errno(EIO)) return static_cast<uint32_t>(all_ones(width));  // D3cold
    return r.error();
  }
  if (int mb = doe_mailbox_at(offset); mb >= 0)
    return doe_read(static_cast<size_t>(mb), offset, width);
  return get_field(config_, offset, width);
}

Result<uint32_t> SimDevice::doe_read(size_t mb, uint32_t offset, unsigned width) {
  uint32_t reg = offset - model_->caps.doe[mb];
  if (width != 4) {
    violation(access_text("DOE register", "read", width) + ": not a dword access");
    return static_cast<uint32_t>(all_ones(width));
  }
  return doe_[mb]->read(reg);
}

void SimDevice::doe_write(size_t mb, uint32_t offset, unsigned width, uint32_t value) {
  uint32_t reg = offset - model_->caps.doe[mb];
  if (width != 4) {
    violation(access_text("DOE register", "write", width) + ": not a dword access");
  } else if (power_ != PowerState::kD0) {
    violation(access_text("DOE register", "write", width) + " in " +
              std::string(to_string(power_)));
  } else {
    doe_[mb]->write(reg, value);
  }
}

Result<void> SimDevice::config_write(uint32_t offset, unsigned width, uint32_t value) {
  MutexLock l(mu_);
  if (auto r = check_config(offset, width, "write"); !r) {
    if (r.error() == Errno(EIO)) return Ok();  // D3cold: dropped
    return r;
  }
  if (int mb = doe_mailbox_at(offset); mb >= 0) {
    doe_write(static_cast<size_t>(mb), offset, width, value);
    return Ok();
  }
  uint16_t old_pmcsr = pmcsr();
  masked_write(config_, *model_, offset, width, value);
  after_config_write(offset, width, value, old_pmcsr);
  return Ok();
}

// Side effects that follow the masked write (the QEMU shape: explicit hooks).
void SimDevice::after_config_write(uint32_t offset, unsigned width, uint32_t value,
                                   uint16_t old_pmcsr) {
  auto covers = [&](uint32_t reg) { return reg >= offset && reg < offset + width; };
  const CapOffsets& caps = model_->caps;
  if (caps.pm != 0 && covers(caps.pm + PCI_PM_CTRL)) pmcsr_written(old_pmcsr);
  uint32_t flr_byte = caps.pcie + PCI_EXP_DEVCTL + 1u;
  if (caps.pcie != 0 && spec_.caps.flr && covers(flr_byte) &&
      ((value >> (8 * (flr_byte - offset))) & (PCI_EXP_DEVCTL_BCR_FLR >> 8)) != 0) {
    // PCIe 6.0 §6.6.2: writing 1 to Initiate FLR resets the function.
    if (power_ == PowerState::kD0) {
      function_reset();
    } else {
      violation("Initiate FLR in " + std::string(to_string(power_)));
    }
  }
}

uint16_t SimDevice::command() const {
  return static_cast<uint16_t>(get_field(config_, PCI_COMMAND, 2));
}

uint16_t SimDevice::pmcsr() const {
  if (model_->caps.pm == 0) return 0;
  return static_cast<uint16_t>(get_field(config_, model_->caps.pm + PCI_PM_CTRL, 2));
}

// --- BARs.

const char* SimDevice::bar_block_reason(const BarSpec& bar) const {
  if (power_ == PowerState::kD3cold) return " in D3cold";
  if (power_ == PowerState::kD3hot) return " in D3hot";
  if (bar.kind == BarKind::kIo) {
    if ((command() & PCI_COMMAND_IO) == 0) return " with I/O decode off";
  } else if ((command() & PCI_COMMAND_MEMORY) == 0) {
    return " with memory decode off";
  }
  if (rom_enabled_locked()) return " while ROM decode is on";
  return nullptr;
}

Result<SimDevice::Gate> SimDevice::gate_bar(unsigned bar, uint64_t offset, unsigned width,
                                            const char* op) const {
  auto what = [&] {  // built only for a violation: this runs on every access
    char name[16];
    std::snprintf(name, sizeof name, "bar%u", bar);
    return access_text(name, op, width);
  };
  if (removed_) return violation(what() + " after remove"), Errno(ENODEV);
  if (!valid_width(width, true) || offset % width != 0) {
    return violation(what() + ": bad width or alignment"), Errno(EINVAL);
  }
  if (bar >= 6 || !bars_[bar]) return violation(what() + ": no such BAR"), Errno(ENXIO);
  if (offset >= bars_[bar]->size() || bars_[bar]->size() - offset < width) {
    return violation(what() + ": beyond the BAR"), Errno(ENXIO);
  }
  if (const char* why = bar_block_reason(spec_.bars[bar])) {
    violation(what() + why);
    return Gate::kBlocked;
  }
  return Gate::kPass;
}

Result<uint64_t> SimDevice::bar_read(unsigned bar, uint64_t offset, unsigned width) {
  MutexLock l(mu_);
  auto gate = gate_bar(bar, offset, width, "read");
  if (!gate) return gate.error();
  if (*gate == Gate::kBlocked) return all_ones(width);
  return bars_[bar]->read(offset, width);
}

Result<void> SimDevice::bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) {
  MutexLock l(mu_);
  auto gate = gate_bar(bar, offset, width, "write");
  if (!gate) return gate.error();
  if (*gate == Gate::kPass) bars_[bar]->write(offset, width, value);
  return Ok();
}

bool SimDevice::run_passes(unsigned bar, uint64_t offset, unsigned width, size_t count) const {
  if (count == 0 || removed_ || !valid_width(width, true) || offset % width != 0) return false;
  if (bar >= 6 || !bars_[bar] || bar_block_reason(spec_.bars[bar]) != nullptr) return false;
  const uint64_t size = bars_[bar]->size();
  return offset < size && (size - offset) / width >= count;
}

// A run goes in one piece when every access of it is legal (the state cannot
// change while mu_ is held); otherwise access by access, so the oracle counts
// every illegal one as separate calls would. run_passes has no side effects.
Result<size_t> SimDevice::bar_read_run(unsigned bar, uint64_t offset, unsigned width,
                                       std::span<uint8_t> out) {
  const size_t count = out.size() / width;
  {
    MutexLock l(mu_);
    if (run_passes(bar, offset, width, count)) {
      bars_[bar]->read_run(offset, width, count, out.data());
      return count * width;
    }
  }
  return Device::bar_read_run(bar, offset, width, out);
}

Result<size_t> SimDevice::bar_write_run(unsigned bar, uint64_t offset, unsigned width,
                                        std::span<const uint8_t> in) {
  const size_t count = in.size() / width;
  {
    MutexLock l(mu_);
    if (run_passes(bar, offset, width, count)) {
      bars_[bar]->write_run(offset, width, count, in.data());
      return count * width;
    }
  }
  return Device::bar_write_run(bar, offset, width, in);
}

void SimDevice::set_doe_fault(unsigned mailbox, DoeFault fault) {
  MutexLock l(mu_);
  if (mailbox < doe_.size()) doe_[mailbox]->set_fault(fault);
}

}  // namespace pcifs::backend::sim
