// StepJournalDir: the daemon's StepJournal (pcifs/step_journal.hpp), one small
// file per device in a directory: DIR/BDF.HASH.step, where HASH (16 hex digits,
// FNV-1a 64) names the backend's shared_root, so two trees never share a file.
// The daemon puts DIR under the host lease directory (--lock-dir, default
// /run/pcifs/locks/steps): leases and step records describe the same devices,
// and /run is empty after a reboot, when no device is mid-step any more. With
// --lock-dir=none there are no leases and so no journal.
//
// A record is written with control::write_atomically (temp file, fsync,
// rename): a crash leaves the old record or the new one, never a torn one. It
// is removed when the step ends, and DIR itself once empty (a clean daemon
// leaves nothing behind); a writer that finds DIR gone creates it again.
//
// File format (text, one field a line, in this order; version 1):
//   pcifs-step 1
//   root /sys/bus/pci          the shared_root (for people; the name hashes it)
//   device 0000:03:00.0
//   step power-down            to_string(StepKind)
//   rom-decode-off 0|1
//   command 0x0006 | -         the Command the step ends with, or none
//   config N                   bytes of the config image (0: none), then
//   <hex>                      ceil(N/32) lines of up to 64 hex digits
//   end
// Anything else (a missing field, a bad number, hex that does not add up to N,
// no "end") is unreadable: pending() answers EBADMSG and logs the path.
//
// Thread-safe: every method (the file system serialises; the caller writes
// one device's record from one operation at a time).
#pragma once

#include <optional>
#include <string>

#include "pcifs/step_journal.hpp"

namespace pcifs::control {

// The text of `rec` for the device, and back. parse: nullopt when malformed.
std::string format_step_record(const std::string& root, const Bdf& bdf, const StepRecord& rec);
std::optional<StepRecord> parse_step_record(const std::string& text);

class StepJournalDir final : public StepJournal {
 public:
  explicit StepJournalDir(std::string dir) : dir_(std::move(dir)) {}

  Result<void> record(const std::string& root, const Bdf& bdf, const StepRecord& rec) override;
  Result<void> clear(const std::string& root, const Bdf& bdf) override;
  Result<std::optional<StepRecord>> pending(const std::string& root, const Bdf& bdf) override;

  const std::string& dir() const { return dir_; }
  std::string path_of(const std::string& root, const Bdf& bdf) const;

 private:
  const std::string dir_;
};

}  // namespace pcifs::control
