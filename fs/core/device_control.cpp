#include "core/device_control.hpp"

#include <linux/pci_regs.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "core/cap_walk.hpp"

namespace pcifs::core {
namespace {

using Phase = ControlSlot::Phase;

}  // namespace

// The standard header and capabilities, once: Command (decode) and PMCSR
// (D3hot or D0; D3cold cannot be read from the function itself).
DeviceControl::Probe DeviceControl::probe(backend::Device& dev) {
  ConfigImage image(256, 0);
  if (!dev.config_read_block(0, std::span<uint8_t>(image))) return Probe{};
  return probe_image(image);
}

DeviceControl::Probe DeviceControl::probe_image(const ConfigImage& image) {
  uint32_t cmd = cfg_read(image, PCI_COMMAND, 2);
  auto state = pmcsr_state(image);
  return Probe{state && *state == 3 ? PowerState::kD3hot : PowerState::kD0,
               (cmd & PCI_COMMAND_MEMORY) != 0, (cmd & PCI_COMMAND_IO) != 0};
}

namespace {

bool bar_is_io(const backend::DeviceInfo& info, unsigned bar) {
  return bar < info.resources.size() && info.resources[bar].is_io();
}

// The convenience accessors check what the Mediator checks, so that a stray
// call can never reach the device out of bounds.
Result<void> check_bar_range(const backend::DeviceInfo& info, unsigned bar, uint64_t offset,
                             unsigned width) {
  if (bar >= 6 || bar >= info.resources.size()) return Errno(ENXIO);
  uint64_t size = info.resources[bar].size();
  if (width == 0 || width > 8 || (width & (width - 1)) != 0 || offset % width != 0) {
    return Errno(EINVAL);
  }
  if (size == 0 || offset >= size || size - offset < width) return Errno(ENXIO);
  return Ok();
}

}  // namespace

// ---------------------------------------------------------------- ControlSlot

void ControlSlot::acquire() NO_THREAD_SAFETY_ANALYSIS {
  {
    MutexLock lock(mu_);
    while (busy_) cv_.wait(mu_);
    busy_ = true;
  }
  order_.acquired();
}

bool ControlSlot::try_acquire_unless_quiescing() NO_THREAD_SAFETY_ANALYSIS {
  {
    MutexLock lock(mu_);
    while (busy_) {
      if (phase_ == Phase::kQuiescing) return false;
      cv_.wait(mu_);
    }
    busy_ = true;
  }
  order_.acquired();  // it may have waited: in the order as acquire() is
  return true;
}

bool ControlSlot::try_acquire() NO_THREAD_SAFETY_ANALYSIS {
  {
    MutexLock lock(mu_);
    if (busy_) return false;
    busy_ = true;
  }
  order_.try_acquired();
  return true;
}

void ControlSlot::release() NO_THREAD_SAFETY_ANALYSIS {
  order_.released();
  MutexLock lock(mu_);
  busy_ = false;
  phase_ = Phase::kIdle;
  cv_.notify_all();
}

void ControlSlot::set_phase(Phase phase) NO_THREAD_SAFETY_ANALYSIS {
  MutexLock lock(mu_);
  phase_ = phase;
  cv_.notify_all();  // waiters that refuse to wait behind a quiesce re-check
}

// -------------------------------------------------------------- construction

DeviceControl::DeviceControl(const std::shared_ptr<backend::Device>& dev, RevocationSink* sink)
    : DeviceControl(dev, sink, probe(*dev)) {}

DeviceControl::DeviceControl(const std::shared_ptr<backend::Device>& dev, RevocationSink* sink,
                             const ConfigImage& image)
    : DeviceControl(dev, sink, probe_image(image)) {}

DeviceControl::DeviceControl(std::shared_ptr<backend::Device> dev, RevocationSink* sink,
                             Probe initial)
    : dev_(std::move(dev)), sink_(sink), gate_(initial.power, initial.memory, initial.io) {}

ControlCounters DeviceControl::counters() const {
  ControlCounters c;
  c.gate = gate_.counters();
  c.quiesces = quiesces_.load();
  c.transitions = transitions_.load();
  c.resets = resets_.load();
  c.rom_captures = rom_captures_.load();
  c.handovers = handovers_.load();
  return c;
}

// ----------------------------------------------------------------- accesses

Result<AccessToken> DeviceControl::enter_bar(unsigned bar, bool wait) {
  if (unrecovered()) return Errno(EIO);
  return gate_.enter_bar(bar_is_io(dev_->info(), bar), wait);
}

Result<AccessToken> DeviceControl::enter_config(bool write, bool wait) {
  if (unrecovered()) return Errno(EIO);
  return gate_.enter_config(write, wait);
}

Result<AccessToken> DeviceControl::enter_doe() {
  if (unrecovered()) return Errno(EIO);
  return gate_.enter_doe();
}

// Before the device is shared (Mediator::Impl::attach, under attach_mu): no
// other thread can reach this object yet, so the slot is not taken. Taking it
// would order attach_mu before a ControlSlot, the reverse of a removal (a
// control operation whose backend reports the device gone: on_hotplug takes
// attach_mu), which TSan's deadlock detector reports as an inversion.
void DeviceControl::set_step_recorder(StepRecorder steps) NO_THREAD_SAFETY_ANALYSIS {
  steps_ = std::move(steps);
}

Result<uint32_t> DeviceControl::config_read(uint32_t offset, unsigned width) {
  auto token = enter_config(false);
  if (!token) return token.error();
  return config_read(*token, offset, width);
}

Result<uint32_t> DeviceControl::config_read(const AccessToken& token, uint32_t offset,
                                            unsigned width) {
  if (token.from_snapshot()) return cfg_read(*token.snapshot(), offset, width);
  return dev_->config_read(offset, width);
}

Result<void> DeviceControl::config_read_block(uint32_t offset, std::span<uint8_t> out) {
  auto token = enter_config(false);
  if (!token) return token.error();
  return config_read_block(*token, offset, out);
}

Result<void> DeviceControl::config_read_block(const AccessToken& token, uint32_t offset,
                                              std::span<uint8_t> out) {
  if (!token.from_snapshot()) return dev_->config_read_block(offset, out);
  const ConfigImage& snap = *token.snapshot();
  if (offset > snap.size() || out.size() > snap.size() - offset) return Errno(EINVAL);
  std::copy_n(snap.begin() + offset, out.size(), out.begin());
  return Ok();
}

Result<void> DeviceControl::config_write(uint32_t offset, unsigned width, uint32_t value) {
  auto token = enter_config(true);
  if (!token) return token.error();
  return config_write(*token, offset, width, value);
}

Result<void> DeviceControl::config_write(const AccessToken& token, uint32_t offset, unsigned width,
                                         uint32_t value) {
  if (token.from_snapshot()) return Errno(EIO);  // D3cold: never written (S9)
  return dev_->config_write(offset, width, value);
}

Result<uint64_t> DeviceControl::bar_read(unsigned bar, uint64_t offset, unsigned width) {
  PCIFS_TRY(check_bar_range(dev_->info(), bar, offset, width));
  auto token = enter_bar(bar);
  if (!token) return token.error();
  return dev_->bar_read(bar, offset, width);
}

Result<void> DeviceControl::bar_write(unsigned bar, uint64_t offset, unsigned width,
                                      uint64_t value) {
  PCIFS_TRY(check_bar_range(dev_->info(), bar, offset, width));
  auto token = enter_bar(bar);
  if (!token) return token.error();
  return dev_->bar_write(bar, offset, width, value);
}

// ------------------------------------------------------------------ quiesce

void DeviceControl::invalidate() {
  if (sink_ != nullptr) sink_->invalidate_mappings(dev_->info().bdf);
}

// `doe` false (a change of the decode bits): DOE exchanges go on through it.
// A power change, a reset or a hand-over closes DOE too, before the physical
// operation that loses the mailbox's state.
void DeviceControl::quiesce(bool doe) {
  ++quiesces_;
  // No mapping can exist unless memory BARs were admitted: skip the sink then.
  bool mapped = gate_.memory_mappable();
  slot_.set_phase(Phase::kQuiescing);
  if (mapped) invalidate();  // (1) dirty pages reach the device
  if (doe) {
    gate_.close();  // (2) new accesses fail fast
  } else {
    gate_.close_bars();
  }
  gate_.drain(false);        // (3) BAR (and closed DOE) accesses in flight finish
  if (mapped) invalidate();  // (4) pages faulted in before (2)
  slot_.set_phase(Phase::kPhysical);
  spdlog::info("{}: quiesced: in-flight accesses drained{}", dev_->info().bdf.str(),
               mapped ? ", BAR mappings revoked" : "");
}

void DeviceControl::decode_from_command(const ConfigImage& image) {
  uint32_t cmd = cfg_read(image, PCI_COMMAND, 2);
  gate_.set_decode((cmd & PCI_COMMAND_MEMORY) != 0, (cmd & PCI_COMMAND_IO) != 0);
}

// -------------------------------------------------------------------- power

Result<void> DeviceControl::set_power_state(PowerState target) {
  slot_.acquire();
  auto r = set_power_locked(target);
  slot_.release();
  return r;
}

Result<void> DeviceControl::wake(bool wait) {
  if (gate_.revoked()) return Errno(ENODEV);
  // Not kWouldWait: the caller may be a page fault, and the lane it would move
  // to may hold, ahead of it, an operation whose quiesce waits for that
  // fault's page lock. So a wake that cannot start now fails fast (EIO).
  if (!wait) {
    if (!slot_.try_acquire()) return Errno(EIO);
  } else if (!slot_.try_acquire_unless_quiescing()) {
    return Errno(EIO);
  }
  auto r = set_power_locked(PowerState::kD0);
  slot_.release();
  return r;
}

Result<void> DeviceControl::set_power_locked(PowerState target) {
  if (gate_.revoked()) return Errno(ENODEV);
  if (unrecovered()) return Errno(EIO);
  PowerState from = gate_.power();
  if (from == target) return Ok();
  ++transitions_;
  if (from == PowerState::kD0) return power_down_locked(target);
  if (target == PowerState::kD0) return power_up_locked(true);
  if (from == PowerState::kD3hot) return d3hot_to_d3cold_locked();
  // D3cold -> D3hot: through D0, BARs stay closed in between.
  PCIFS_TRY(power_up_locked(false));
  return power_down_locked(PowerState::kD3hot);
}

Result<void> DeviceControl::power_down_locked(PowerState target) {
  quiesce(/*doe=*/true);
  gate_.begin_physical();
  auto image = read_config_image(*dev_);
  if (image) steps_.begin(restore_record(StepKind::kPowerDown, *image));
  Result<void> r = image ? dev_->set_power_state(PowerState::kD3hot) : Result<void>(image.error());
  if (!r) {  // still in D0: nothing happened
    steps_.end();
    gate_.end_physical(PowerState::kD0, nullptr);
    gate_.reopen();
    return r;
  }
  saved_ = std::move(*image);
  if (target == PowerState::kD3hot) {
    steps_.end();
    gate_.end_physical(PowerState::kD3hot, nullptr);
    return Ok();
  }
  r = dev_->set_power_state(PowerState::kD3cold);
  steps_.end();  // D3cold or still D3hot: either is a state the next daemon can serve
  gate_.end_physical(r ? PowerState::kD3cold : PowerState::kD3hot,
                     r ? std::make_shared<const ConfigImage>(as_d3_snapshot(saved_)) : nullptr);
  return r;
}

Result<void> DeviceControl::d3hot_to_d3cold_locked() {
  slot_.set_phase(Phase::kPhysical);
  gate_.begin_physical();
  auto image = read_config_image(*dev_);  // D3hot: config still readable
  if (image) steps_.begin(restore_record(StepKind::kPowerDown, *image));
  Result<void> r = image ? dev_->set_power_state(PowerState::kD3cold) : Result<void>(image.error());
  steps_.end();
  if (!r) {
    gate_.end_physical(PowerState::kD3hot, nullptr);
    return r;
  }
  saved_ = std::move(*image);
  gate_.end_physical(PowerState::kD3cold,
                     std::make_shared<const ConfigImage>(as_d3_snapshot(saved_)));
  return Ok();
}

Result<void> DeviceControl::power_up_locked(bool reopen) {
  slot_.set_phase(Phase::kPhysical);
  PowerState from = gate_.power();
  gate_.begin_physical();
  if (from == PowerState::kD3hot) {
    // Config writes made in D3hot are part of the state to keep.
    if (auto image = read_config_image(*dev_)) saved_ = std::move(*image);
  }
  if (!saved_.empty()) steps_.begin(restore_record(StepKind::kPowerUp, saved_));
  auto r = dev_->set_power_state(PowerState::kD0);
  if (!r) {
    steps_.end();  // still in low power, as the gate says
    gate_.end_physical(from, from == PowerState::kD3cold
                                 ? std::make_shared<const ConfigImage>(as_d3_snapshot(saved_))
                                 : nullptr);
    return r;
  }
  r = restore_locked(from);
  if (r) steps_.end();  // a failed restore keeps the record: recovered at the next start
  gate_.end_physical(PowerState::kD0, nullptr);
  // A failed restore leaves BARs unprogrammed: keep them closed (EIO).
  if (r && reopen) gate_.reopen();
  return r;
}

Result<void> DeviceControl::restore_locked(PowerState from) {
  if (saved_.empty()) return Ok();  // never saved: nothing known to restore
  if (from == PowerState::kD3hot && no_soft_reset(saved_)) {
    // PCI PM 1.2 §5.6: context preserved. Trust but verify on Command.
    auto cmd = dev_->config_read(PCI_COMMAND, 2);
    if (cmd && *cmd == cfg_read(saved_, PCI_COMMAND, 2)) {
      decode_from_command(saved_);
      return Ok();
    }
  }
  auto r = restore_config_state(*dev_, saved_);
  if (r) {
    gate_.clear_rom_stuck();  // the ROM BAR was written back with decode off
    decode_from_command(saved_);
  }
  return r;
}

// ------------------------------------------------------------ reset, remove

Result<void> DeviceControl::reset() {
  slot_.acquire();
  auto r = reset_locked();
  slot_.release();
  return r;
}

Result<void> DeviceControl::reset_locked() {
  if (gate_.revoked()) return Errno(ENODEV);
  if (unrecovered()) return Errno(EIO);
  // As pci_reset_function: the function is brought to D0 before the reset.
  if (gate_.power() != PowerState::kD0) {
    ++transitions_;
    PCIFS_TRY(power_up_locked(false));
  }
  ++resets_;
  quiesce(/*doe=*/true);
  gate_.begin_physical();
  if (auto image = read_config_image(*dev_)) saved_ = std::move(*image);
  if (!saved_.empty()) steps_.begin(restore_record(StepKind::kReset, saved_));
  auto reset_result = dev_->reset();
  // Restore even after a failed reset: the function's state is unknown.
  auto restore_result = restore_locked(PowerState::kD0);
  if (restore_result) steps_.end();
  gate_.end_physical(PowerState::kD0, nullptr);
  if (restore_result) gate_.reopen();
  return reset_result ? restore_result : reset_result;
}

void DeviceControl::revoke() {
  if (gate_.revoked()) return;
  gate_.revoke();     // every later access: ENODEV
  gate_.drain(true);  // nothing of ours touches the device any more
  invalidate();       // faults now get ENODEV: SIGBUS
}

Result<void> DeviceControl::remove() {
  slot_.acquire();
  bool was_revoked = gate_.revoked();
  slot_.set_phase(Phase::kQuiescing);  // revoke() calls the sink: nobody waits behind us
  revoke();
  auto r = was_revoked ? Result<void>(Errno(ENODEV)) : dev_->remove();
  slot_.release();
  return r;
}

// ------------------------------------------------------------------- decode

Result<void> DeviceControl::change_decode(DecodeChange change,
                                          const std::function<Result<void>()>& do_write) {
  slot_.acquire();
  auto r = change_decode_locked(change, do_write);
  slot_.release();
  return r;
}

Result<void> DeviceControl::change_decode_locked(DecodeChange change,
                                                 const std::function<Result<void>()>& do_write) {
  if (gate_.revoked()) return Errno(ENODEV);
  if (unrecovered() || gate_.power() == PowerState::kD3cold) return Errno(EIO);
  bool mem = change.memory.value_or(gate_.memory_decode());
  bool io = change.io.value_or(gate_.io_decode());
  bool turning_off = (!mem && gate_.memory_decode()) || (!io && gate_.io_decode());
  bool quiesced = turning_off && gate_.power() == PowerState::kD0;
  if (quiesced) quiesce(/*doe=*/false);  // DOE is config space: it goes on
  auto r = do_write();
  if (r) gate_.set_decode(mem, io);
  if (quiesced) gate_.reopen();  // admission now follows the new decode bits
  return r;
}

// ---------------------------------------------------------------------- ROM

Result<std::shared_ptr<const RomImage>> DeviceControl::cached_rom() const {
  MutexLock lock(rom_mu_);
  if (rom_) return rom_;
  if (!rom_error_.empty()) return Errno(EIO);
  return Errno(EAGAIN);  // not captured yet
}

std::string DeviceControl::rom_error() const {
  MutexLock lock(rom_mu_);
  return rom_error_;
}

Result<std::shared_ptr<const RomImage>> DeviceControl::rom(bool wait) {
  auto cached = cached_rom();
  if (cached || cached.error() != Errno(EAGAIN)) return cached;
  if (gate_.revoked()) return Errno(ENODEV);
  if (unrecovered() || !dev_->info().has_rom()) return Errno(EIO);
  // A page fault on the rom file may land here: never wait behind a quiesce,
  // nor move to a lane behind one (see wake()): EIO, retried by the next read.
  if (!wait) {
    if (!slot_.try_acquire()) return Errno(EIO);
  } else if (!slot_.try_acquire_unless_quiescing()) {
    return Errno(EIO);
  }
  auto r = capture_locked();
  slot_.release();
  return r;
}

Result<std::shared_ptr<const RomImage>> DeviceControl::capture_locked() {
  auto cached = cached_rom();  // another caller may have captured meanwhile
  if (cached || cached.error() != Errno(EAGAIN)) return cached;
  slot_.set_phase(Phase::kCapture);
  // Low power, quiesced or decode off: EIO without touching the device, and
  // nothing remembered, so a later read retries.
  if (!gate_.begin_capture()) return Errno(EIO);
  ++rom_captures_;
  StepRecord rec;
  rec.step = StepKind::kRomCapture;
  rec.rom_decode_off = true;
  steps_.begin(rec);
  bool rom_off = true;
  auto bytes = capture_rom_window(*dev_, dev_->info().resources[6].size(), &rom_off);
  if (rom_off) steps_.end();  // decode stuck on: the record stays for the next daemon
  gate_.end_capture(rom_off);
  if (!bytes) return bytes.error();  // device error: retried on the next read
  RomCheck check = validate_rom(*bytes);
  MutexLock lock(rom_mu_);
  if (!check.valid) {
    rom_error_ = check.reason;
    return Errno(EIO);
  }
  bytes->resize(check.length);
  rom_ = std::make_shared<const RomImage>(RomImage{std::move(*bytes), std::move(check.images)});
  return rom_;
}

}  // namespace pcifs::core
