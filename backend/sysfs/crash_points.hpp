// Crash injection for tests of the crash hand-over (pcifs/step_journal.hpp):
// a failpoint kills the daemon (SIGKILL, so nothing of ours runs afterwards) at
// one named point of a physical step, leaving the device exactly as a crash
// there would. Armed by the environment variable PCIFS_CRASH_AT=<name>, read
// once when a SysfsBackend is constructed; unset or empty: no failpoint (the
// checks are one relaxed atomic load). An unknown name is reported through the
// backend's warn and arms nothing.
//
// Names (each fires the first time its point is reached):
//   rom-enabled   after `rom` was written "1" (ROM decode on), before the read
//   rom-read      after a read of the ROM window, before decode goes off
//   before-d3hot  before the PMCSR write that enters D3hot
//   after-d3hot   after the PMCSR write that entered D3hot
//   after-d0      after the PMCSR write that left D3hot for D0, before the
//                 config restore
//   mid-restore   in the middle of the restore that follows D3hot -> D0: after
//                 its first BAR register write, Command not yet written back
//   after-reset   after `reset` was written, before the config restore
//
// Thread-safe: every function.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pcifs::backend::sysfs {

enum class CrashPoint : uint8_t {
  kNone,
  kRomEnabled,
  kRomRead,
  kBeforeD3hot,
  kAfterD3hot,
  kAfterD0,
  kMidRestore,
  kAfterReset,
};

std::optional<CrashPoint> parse_crash_point(std::string_view name);  // "" -> kNone

// Reads PCIFS_CRASH_AT and arms its point; the error text for an unknown name.
std::optional<std::string> arm_crash_point_from_env();
void arm_crash_point(CrashPoint p);  // tests of this file
CrashPoint armed_crash_point();

// SIGKILL now when `p` is armed.
void crash_at(CrashPoint p);

}  // namespace pcifs::backend::sysfs
