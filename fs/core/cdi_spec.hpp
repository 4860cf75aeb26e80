// Container Device Interface (CDI) specs for views: `pcifs cdi` turns the view
// files of a host into one spec, and the daemon writes one spec per view
// (control/cdi_dir.hpp), that a CDI-aware engine (podman, containerd, CRI-O)
// reads from /etc/cdi or /var/run/cdi. Each view becomes one device,
// "pcifs.io/view=NAME", whose edits are a bind mount of the view's mountpoint
// over /sys/bus/pci in the container (pciutils and other sysfs readers inside
// then see exactly the view's devices, under its policy) and, when the options
// name the pcifs binary, a createRuntime hook (`pcifs cdi-hook`,
// control/cdi_hook.hpp) that refuses to start a container whose view is not
// served or which mounts two views at one path [S16]. The spec declares the
// lowest CDI version its fields need (cdi_min_version).
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

inline constexpr std::string_view kCdiKind = "pcifs.io/view";  // vendor/class, as CDI requires
inline constexpr std::string_view kCdiContainerPath = "/sys/bus/pci";
// The hook: `HOOK_BINARY cdi-hook --view NAME --container-path PATH`, run by
// the OCI runtime at createRuntime (OCI runtime-spec 1.0.2; runc >= 1.0 runs
// it after the container's mounts are set up and before pivot_root, in the
// runtime's namespaces, with the container's state on stdin). `timeout` is
// the runtime's backstop; the hook bounds itself well below it.
inline constexpr std::string_view kCdiHookCommand = "cdi-hook";
inline constexpr std::string_view kCdiHookStage = "createRuntime";
inline constexpr int kCdiHookTimeoutS = 10;

struct CdiOptions {
  // Where the view appears inside the container. /sys/bus/pci makes the view a
  // drop-in for the kernel's tree (S3); another path suits tools that take
  // `-O sysfs.path=`.
  std::string container_path{kCdiContainerPath};
  // The absolute path of the pcifs binary, which each device's hook runs
  // (`pcifs cdi` passes its own /proc/self/exe). Empty: no hook.
  std::string hook_binary;
};

// The lowest CDI version that declares every field `spec` uses, by the
// version table of the CDI specification (SPEC.md, "Released versions"; the
// reference parser's MinimumRequiredVersion in specs-go/version.go checks
// the same):
//   0.3.0  the earliest version engines accept. Devices, mounts (hostPath,
//          containerPath, options) and hooks (hookName, path, args, env,
//          timeout) are all older than that.
//   0.4.0  a mount's `type`.
//   0.5.0  a device name that starts with a digit (earlier versions wanted
//          a letter first), a device node's `hostPath`.
//   0.6.0  `annotations` on the spec or a device, a '.' in the kind's name.
// Later versions add fields views never use (intelRdt, additionalGids,
// netDevices); they are not looked for.
// Declaring the lowest keeps older engines working: podman 4.3 (Debian 12)
// knows CDI 0.1.0 to 0.5.0 only and refuses "0.6.0" as an invalid version,
// while newer engines accept any version at or above what the fields need.
std::string cdi_min_version(const nlohmann::ordered_json& spec);

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
// views, or a container path or hook binary that is not absolute.
Result<nlohmann::ordered_json> cdi_spec(const std::vector<ViewPolicy>& views,
                                        const CdiOptions& options, std::string* error);

}  // namespace pcifs::core
