// Walking the capability lists of a config space image.
//
// Works on a snapshot of config bytes (never on the device), so callers decide
// when the device is read. Guards against loops and out-of-range pointers the
// way the kernel's __pci_find_next_cap_ttl does (a bounded number of hops).
// Pure functions: thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace pcifs::core {

struct CapInfo {
  uint16_t id = 0;        // PCI_CAP_ID_* or PCI_EXT_CAP_ID_*
  uint16_t offset = 0;    // of the capability header
  uint16_t length = 0;    // bytes up to the next capability or a known size
  bool extended = false;  // in the extended (PCIe) list, offset >= 0x100
  uint8_t version = 0;    // extended capabilities only
};

// All capabilities, standard list first, then the extended list (only when
// the image is 4096 bytes). Lengths are the spec-defined size where pcifs
// knows it, else the distance to the next capability in address order.
std::vector<CapInfo> walk_capabilities(std::span<const uint8_t> config);

// The first capability with this id, if any.
std::optional<CapInfo> find_capability(std::span<const uint8_t> config, uint16_t id, bool extended);

// Every extended capability with this id (a device may have several DOE mailboxes).
std::vector<CapInfo> find_all_extended(std::span<const uint8_t> config, uint16_t id);

// Little-endian field readers over a config image; out of range reads 0.
uint32_t cfg_read(std::span<const uint8_t> config, uint32_t offset, unsigned width);

}  // namespace pcifs::core
