// DeviceControl::hand_over (device_control.hpp, handover.hpp): the tenant
// hand-over, beside reset_locked() in structure: the function is brought to D0,
// quiesced (mappings revoked, accesses drained), reset, and left in the clean
// baseline rather than in the state it was found in.
#include <spdlog/spdlog.h>

#include "core/device_control.hpp"

namespace pcifs::core {

Result<void> DeviceControl::hand_over(const ConfigImage& baseline, ResetMethod method) {
  slot_.acquire();
  auto r = hand_over_locked(baseline, method);
  slot_.release();
  return r;
}

Result<void> DeviceControl::hand_over_locked(const ConfigImage& baseline, ResetMethod method) {
  if (gate_.revoked()) return Errno(ENODEV);
  if (unrecovered()) return Errno(EIO);
  ++handovers_;
  if (gate_.power() != PowerState::kD0) {  // a reset needs D0, and the next user gets D0
    ++transitions_;
    PCIFS_TRY(power_up_locked(false));
  }
  quiesce(/*doe=*/true);
  gate_.begin_physical();
  steps_.begin(restore_record(StepKind::kHandover, baseline));
  Result<void> reset = Ok();
  if (method == ResetMethod::kFlr) {  // counted in handovers_, not resets_ (the `reset` file's)
    reset = dev_->reset();
  } else if (method == ResetMethod::kPm) {
    // PCI PM 1.2 §5.6.1: with No_Soft_Reset = 0, D3hot -> D0 resets the function.
    reset = dev_->set_power_state(PowerState::kD3hot);
    if (reset) reset = dev_->set_power_state(PowerState::kD0);
  }
  // Restore even after a failed reset: the baseline is the best state known.
  saved_ = baseline;
  auto restored = restore_config_state(*dev_, saved_);
  if (restored) {
    steps_.end();  // a failed restore keeps the record: recovered at the next start
    gate_.clear_rom_stuck();
    decode_from_command(saved_);
  }
  gate_.end_physical(PowerState::kD0, nullptr);
  if (restored) gate_.reopen();
  if (!reset) {
    spdlog::error("{}: hand-over: {} reset failed ({})", dev_->info().bdf.str(), to_string(method),
                  reset.error().name());
  }
  return reset ? restored : reset;
}

}  // namespace pcifs::core
