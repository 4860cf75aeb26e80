// Turns a --backend=SPEC command-line value (SPEC S2) into a Backend, for the
// daemon and the tools:
//   sim               the embedded default set of simulated devices
//   sim:FILE.json     simulated devices described by FILE.json
//   sysfs             this machine's devices, from /sys/bus/pci
//   sysfs:DIR         a sysfs-shaped tree rooted at DIR (DIR/devices/<BDF>/...)
//
// On failure, *error (if non-null) says what was given and what was expected,
// naming the file or directory, ready to print after "pcifs: ".
// Ownership: the caller owns the returned backend. Thread-safe (no shared state).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::backend {

inline constexpr std::string_view kDefaultBackendSpec = "sim";
inline constexpr std::string_view kSysfsRoot = "/sys/bus/pci";

// EINVAL for a malformed spec, ENOENT/ENOTDIR for a missing sysfs root, and
// whatever the simulator's loader reports for a bad device-set file.
Result<std::shared_ptr<Backend>> open_backend(std::string_view spec, std::string* error);

}  // namespace pcifs::backend
