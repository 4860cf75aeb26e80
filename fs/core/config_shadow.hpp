// The config shadow [S15]: registers that cannot change, served from memory.
//
// A config read through the kernel costs one device access per dword (tens of
// microseconds in a VM), so pcifs answers the registers the PCI and PCIe specs
// define as read-only and fixed from a copy, and reads everything else from
// the device at the time of the read. What is shadowed (byte by byte):
//  - header: Vendor/Device ID, Revision ID, Class Code, Header Type,
//    Capabilities Pointer, Interrupt Pin; for type 0 also CardBus CIS,
//    Subsystem IDs, Min_Gnt/Max_Lat and the reserved bytes 0x35-0x3b;
//  - the capability chain's structure: each capability's ID and next pointer,
//    each extended capability header (and the empty-list header at 0x100);
//  - read-only registers of well-known capabilities: PM Capabilities (PMC),
//    PCIe Capabilities, Link Capabilities, Device/Link Capabilities 2, MSI-X
//    Table and PBA offsets, the DSN serial number.
// Never: Command/Status, BARs (virtual anyway), anything a write, a message or
// the device itself can change (Device Capabilities carries the captured slot
// power limit; MSI/MSI-X Message Control has enable bits), vendor-specific
// bodies, and bytes outside every capability.
//
// Served in whole dwords: a dword with one volatile byte is read from the
// device whole (the access is needed anyway; splitting it would cost two).
//
// Verified: a byte is shadowed only if the attach image and a second read of it
// agree, and the IDs and class agree with the DeviceInfo (for sysfs, the
// kernel's own copies). A read whose device bytes all come back 0xff (a device
// that has gone, or is in a state that floats the bus) is redone without the
// shadow, so a vanished device never shows its old IDs.
//
// Immutable after construction: thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/cap_walk.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::core {

// Which bytes of `image` the specs define as fixed (see above). Pure.
std::vector<bool> immutable_config_bytes(std::span<const uint8_t> image, uint8_t header_type,
                                         const std::vector<CapInfo>& caps);

class ConfigShadow {
 public:
  ConfigShadow() = default;  // nothing shadowed
  // `image`: the config read at attach. `reread` reads the candidate bytes a
  // second time (runs of naturally aligned dwords); a failed re-read shadows
  // nothing.
  using RawRead = std::function<Result<void>(uint32_t off, std::span<uint8_t>)>;
  static ConfigShadow build(const backend::DeviceInfo& info, std::span<const uint8_t> image,
                            const std::vector<CapInfo>& caps, const RawRead& reread);

  bool covers(uint32_t off) const { return off < mask_.size() && mask_[off]; }
  uint8_t byte(uint32_t off) const { return values_[off]; }
  size_t shadowed_bytes() const;

 private:
  std::vector<bool> mask_;
  std::vector<uint8_t> values_;
};

}  // namespace pcifs::core
