// The step journal: what a device must come back to if the daemon dies in the
// middle of a physical step on it (crash hand-over of real devices, issue 11).
//
// A real device outlives the daemon (Backend::shared_root non-empty: sysfs).
// If the daemon is killed between "ROM decode on" and "ROM decode off" of a
// ROM capture, between "PMCSR D3hot" and the end of a power transition, or in
// the middle of a config restore (decode off, BARs half written), the device
// stays that way and the next daemon would serve it so. So before each such
// step the core (DeviceControl) records what it is about to do and what the
// device must be brought back to, and clears the record once the step has
// completed. A step that fails leaves its record: the device's state is not
// known to be good, and the next daemon recovers it.
//
// At attach, the Mediator asks for the record of each device it leases (a
// lease proves no live daemon is mid-step on it): a record there means a
// daemon died mid-step. The device is then brought to a safe, known state
// before it is served: ROM decode off; when the record holds a config image,
// D0 and that image restored (Command last). One log line says what was
// recovered. A recovery that fails leaves the record (the next start tries
// again) and the device is served unhealthy: health "recovery-failed",
// device accesses EIO.
//
// The core has no syscalls: it sees this interface only. The daemon's
// implementation (fs/control/step_journal.hpp) keeps one small file per
// device in a subdirectory of the host lease directory. Thread safety: an
// implementation must be callable from any thread; calls for one device come
// from one control operation at a time (its DeviceControl slot).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pcifs/result.hpp"
#include "pcifs/types.hpp"

namespace pcifs {

// The operation a record belongs to (what the recovery log line names).
enum class StepKind : uint8_t {
  kRomCapture,  // ROM decode on .. ROM read .. ROM decode off
  kPowerDown,   // config saved, PMCSR D3hot (and D3cold where it exists)
  kPowerUp,     // PMCSR D0, then the saved config restored (Command last)
  kReset,       // function reset, then the saved config restored
  kHandover,    // tenant hand-over: reset, then the clean baseline restored
};

inline std::string_view to_string(StepKind k) {
  switch (k) {
    case StepKind::kRomCapture: return "rom-capture";
    case StepKind::kPowerDown: return "power-down";
    case StepKind::kPowerUp: return "power-up";
    case StepKind::kReset: return "reset";
    case StepKind::kHandover: return "hand-over";
  }
  return "?";
}

inline std::optional<StepKind> parse_step_kind(std::string_view t) {
  for (auto k : {StepKind::kRomCapture, StepKind::kPowerDown, StepKind::kPowerUp, StepKind::kReset,
                 StepKind::kHandover}) {
    if (to_string(k) == t) return k;
  }
  return std::nullopt;
}

// What the device must come back to if the step does not complete.
struct StepRecord {
  StepKind step = StepKind::kRomCapture;
  bool rom_decode_off = false;  // ROM decode must be turned off
  // The config image to restore in D0 (the whole config space, as saved by
  // the step); empty: none (the step does not change config state).
  std::vector<uint8_t> config;
  // The Command register the step ends with (written last by the restore; a
  // restore runs with decode off until then). With no config: written alone.
  std::optional<uint16_t> command;
  bool operator==(const StepRecord&) const = default;
};

class StepJournal {
 public:
  virtual ~StepJournal() = default;
  // `root` is the backend's shared_root, `bdf` the function: together they
  // name one device of the host. record() is durable when it returns Ok and
  // replaces any earlier record of the device.
  virtual Result<void> record(const std::string& root, const Bdf& bdf, const StepRecord& rec) = 0;
  // Removes the device's record; none is fine.
  virtual Result<void> clear(const std::string& root, const Bdf& bdf) = 0;
  // The record a daemon left: nullopt when there is none; EBADMSG when there
  // is one but it cannot be read (recovery then cannot restore config).
  virtual Result<std::optional<StepRecord>> pending(const std::string& root, const Bdf& bdf) = 0;
};

}  // namespace pcifs
