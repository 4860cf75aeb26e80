// Crash hand-over of real devices (pcifs/step_journal.hpp): the core's side.
//
// StepRecorder is one device's door to the StepJournal: DeviceControl calls
// begin() before a physical step (ROM capture, power transition, reset,
// hand-over) with what the device must come back to, and end() once the step
// has left the device in a known, safe state. A step that fails in a way that
// leaves the device unsafe (ROM decode stuck on, a config restore that did not
// complete) does not call end(): its record stays for the next daemon. A
// record that cannot be written is logged (rate-limited) and the step runs
// anyway: pcifs then behaves as it did without a journal, it does not refuse
// the user's power_state or rom read over /run being full.
//
// recover_at_attach() runs when the Mediator takes a device it leases, before
// anything reads it for serving: a record there means a daemon died mid-step.
// The recovery, whatever the step was:
//   1. ROM decode off (pcifs never leaves it on outside a capture);
//   2. with a config image: D0 (PMCSR, if it reads D3hot), then the image
//      restored as after a power transition (config_state.hpp: BARs before
//      Command, which goes last);
//   3. with only a Command value: that Command written.
// Then the record goes and one info line says what was done. A failure (or a
// record that cannot be read) keeps the record, logs an error and returns why:
// the device is then served unhealthy (DeviceControl::mark_unrecovered).
//
// Thread safety: StepRecorder is used by one control operation at a time (its
// DeviceControl's slot); the functions here are called before the device is
// shared.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/config_state.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"
#include "pcifs/step_journal.hpp"

namespace pcifs::core {

class StepRecorder {
 public:
  StepRecorder() = default;  // no journal: every call does nothing
  StepRecorder(std::shared_ptr<StepJournal> journal, std::string root, Bdf bdf);

  bool active() const { return journal_ != nullptr; }
  void begin(const StepRecord& rec);
  void end();      // the step completed: its record goes
  void discard();  // removes the device's record, ours or a dead daemon's
  Result<std::optional<StepRecord>> pending() const;

 private:
  std::shared_ptr<StepJournal> journal_;
  std::string root_;
  Bdf bdf_;
  bool open_ = false;  // a record of ours is in the journal
};

// A record for `step` that restores `image` (its Command last).
StepRecord restore_record(StepKind step, const ConfigImage& image);

// Performs steps 1-3 above on `dev`; returns what was done ("ROM decode off,
// D3hot -> D0, config restored (Command 0x0006)"), or the first error.
Result<std::string> recover_step(backend::Device& dev, const StepRecord& rec);

// nullopt: nothing was pending, or it was recovered. Else why the device could
// not be brought to a safe state (for health and the log).
std::optional<std::string> recover_at_attach(backend::Device& dev, StepRecorder& steps);

}  // namespace pcifs::core
