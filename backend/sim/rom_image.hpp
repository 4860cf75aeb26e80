// Expansion ROM contents for a simulated function, generated from its RomSpec:
// a chain of images as PCI Firmware 3.0 §5.1 lays them out — 0x55AA at 0,
// the PCIR pointer at 0x18, a PCIR structure with the vendor/device ids, the
// class code, the image length in 512-byte units (PCIR+0x10), the code type
// (PCIR+0x14) and the last-image flag (bit 7 of PCIR+0x15). Image bodies are a
// deterministic pattern; legacy x86 images carry a zero byte-sum checksum.
// Bytes of the ROM window past the last image read 0xff, like erased flash.
//
// Pure function; the result is immutable and shared by identical functions.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sim/device_spec.hpp"

namespace pcifs::backend::sim {

inline constexpr uint32_t kRomPcirOffset = 0x1c;  // where generated images put PCIR
inline constexpr uint32_t kRomImageUnit = 512;
inline constexpr uint8_t kRomCodeX86 = 0;
inline constexpr uint8_t kRomCodeEfi = 3;

// The whole ROM window (spec.rom.size bytes).
std::shared_ptr<const std::vector<uint8_t>> build_rom(const DeviceSpec& spec);

}  // namespace pcifs::backend::sim
