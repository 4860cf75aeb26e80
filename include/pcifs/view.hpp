// A view: one mount with a policy (SPEC S6). Parsed from JSON by the core
// (core/view_policy.hpp); read by the Mediator and the FUSE layer. A plain
// value, immutable once built; safe to share between threads.
//
// Who may do what in a view. The view's *privileged* callers are root and the
// view's uid (when the view names one). Then:
//   - config reads: privileged callers always read the full space; everyone
//     else reads as `config_read` says (full | header = 64 bytes | none).
//   - config writes, BAR files, power_state, reset, remove: privileged callers
//     only, and only where the view enables them (`config_write`, `bar_access`).
//   - DOE: everyone; `doe_protocols` lists the protocols allowed. When the view
//     does not list them, unprivileged callers get Discovery and CDAT only and
//     privileged callers get every protocol.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pcifs/types.hpp"

namespace pcifs {

enum class ConfigRead : uint8_t { kFull, kHeader, kNone };
enum class LowPowerAccess : uint8_t { kDeny, kWake };

// One entry of "devices": a BDF, "VVVV:DDDD", or "class:CCCC" / "class:CCCCPP".
struct DeviceSelector {
  enum class Kind : uint8_t { kBdf, kIds, kClass };
  Kind kind = Kind::kBdf;
  Bdf bdf;
  uint16_t vendor = 0, device = 0;
  uint32_t class_value = 0;  // 16 bits (base, sub) or 24 bits (with prog-if)
  bool class_has_progif = false;
  // Matches a function by address, ids and 24-bit class code.
  bool matches(const Bdf& b, uint16_t ven, uint16_t dev, uint32_t class_code) const {
    switch (kind) {
      case Kind::kBdf: return b == bdf;
      case Kind::kIds: return ven == vendor && dev == device;
      case Kind::kClass:
        return class_has_progif ? class_code == class_value : (class_code >> 8) == class_value;
    }
    return false;
  }
};

// A DOE protocol as "VVVV:TT".
struct DoeProtocol {
  uint16_t vendor = 0;
  uint8_t type = 0;
  bool operator==(const DoeProtocol&) const = default;
};

struct ViewPolicy {
  std::string name =
      "default";       // "view=NAME" in owner; from "name", else the mountpoint's basename
  std::string source;  // the file it came from ("" for the default view)
  std::string mountpoint;
  std::optional<std::vector<DeviceSelector>> devices;  // nullopt: every device
  uid_t uid = 0;
  gid_t gid = 0;
  bool has_uid = false;  // the view names an owner uid
  ConfigRead config_read = ConfigRead::kFull;
  bool config_write = true;
  bool bar_access = true;
  bool mask_addresses = false;
  bool hide_dsn = false;
  bool hide_vpd = false;
  std::optional<std::vector<DoeProtocol>> doe_protocols;  // nullopt: the default rule above
  LowPowerAccess low_power_access = LowPowerAccess::kDeny;
  // A view added at runtime may not select an endpoint of an IOMMU group that
  // has an endpoint in a view of another uid (DMA isolation is per group),
  // unless it says so here.
  bool share_iommu_group = false;
  // Bus Master Enable and the MSI/MSI-X message addresses on real devices.
  // pcifs attaches no IOMMU domain, so a device that may master can read and
  // write any host memory its IOMMU group can reach (all of it with iommu=pt
  // or no IOMMU): only a view that says so lets its privileged callers set
  // them, and only root grants it (a --view file with it must be root's and
  // not writable by others; the control socket is root's). The simulator's
  // devices reach no host memory and always allow them.
  bool allow_dma = false;

  bool selects(const Bdf& b, uint16_t ven, uint16_t dev, uint32_t class_code) const {
    if (!devices) return true;
    for (const auto& s : *devices) {
      if (s.matches(b, ven, dev, class_code)) return true;
    }
    return false;
  }
  bool privileged(const Caller& c) const { return c.uid == 0 || (has_uid && c.uid == uid); }
  bool doe_allowed(const Caller& c, DoeProtocol p) const {
    if (doe_protocols) {
      for (const auto& q : *doe_protocols) {
        if (q == p) return true;
      }
      return false;
    }
    if (privileged(c)) return true;
    return (p.vendor == 0x0001 && p.type == 0x00) || (p.vendor == 0x1e98 && p.type == 0x02);
  }
};

}  // namespace pcifs
