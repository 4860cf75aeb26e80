// Finding the Power Management capability in a config image, for
// SysfsDevice::set_power_state. The core's cap_walk is not visible to backends
// (layering), and PMCSR is all this backend needs, so this is a minimal walk of
// the standard capability list only (PM is never an extended capability).
// Pure function: thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace pcifs::backend::sysfs {

// Offset of the PM capability header (PCI_CAP_ID_PM), or nullopt when the
// Capabilities List bit is clear, the list has no PM entry, or it loops.
std::optional<uint8_t> find_pm_capability(std::span<const uint8_t> config);

}  // namespace pcifs::backend::sysfs
