// Container Device Interface (CDI 0.6.0) specs for views: `pcifs cdi` turns
// the view files of a host into one spec that a CDI-aware engine (podman,
// containerd, CRI-O) reads from /etc/cdi or /var/run/cdi. Each view becomes one
// device, "pcifs.io/view=NAME", whose only edit is a bind mount of the view's
// mountpoint over /sys/bus/pci in the container: pciutils and other sysfs
// readers inside then see exactly the view's devices, under its policy.
//
// Pure functions over values: thread-safe, no I/O.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "pcifs/result.hpp"
#include "pcifs/view.hpp"

namespace pcifs::core {

inline constexpr std::string_view kCdiVersion = "0.6.0";
inline constexpr std::string_view kCdiKind = "pcifs.io/view";  // vendor/class, as CDI requires
inline constexpr std::string_view kCdiContainerPath = "/sys/bus/pci";

struct CdiOptions {
  // Where the view appears inside the container. /sys/bus/pci makes the view a
  // drop-in for the kernel's tree (S3); another path suits tools that take
  // `-O sysfs.path=`.
  std::string container_path{kCdiContainerPath};
};

// The CDI device name for a view name. CDI names are
// [A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])? (the reference parser also wants
// the last character alphanumeric): every run of other bytes becomes one '-',
// and what is not alphanumeric at either end is dropped. "" when nothing is
// left (the name had no letter or digit).
std::string cdi_device_name(std::string_view view_name);

// The spec for `views` (each as loaded from its file: it must name its
// mountpoint). On failure *error is "FILE: FIELD: expected WHAT (got ...)",
// like the view parser's: a name with no letter or digit, two views whose
// names sanitise to the same device name, two views on one mountpoint, no
// views, or a container path that is not absolute.
Result<nlohmann::ordered_json> cdi_spec(const std::vector<ViewPolicy>& views,
                                        const CdiOptions& options, std::string* error);

}  // namespace pcifs::core
