// The expansion ROM shadow [S7]: validation of ROM bytes and the raw capture.
//
// validate_rom() is a pure function over bytes: the chain of images, each with
// the 0x55AA signature, a pointer at 0x18 to its "PCIR" data structure, whose
// image length (512-byte units, +0x10) leads to the next image, until the
// image whose indicator (+0x15) has bit 7 set (PCI Firmware 3.0 §5.1). Reads
// of the shadow end at the end of that last image.
//
// capture_rom_window() performs the device side: ROM decode on, read the
// window, ROM decode off. It knows nothing about BAR users; DeviceControl
// (device_control.hpp) makes sure no BAR access can reach the device while it
// runs (PCI 3.0 §6.2.5.2: ROM decode may share the BAR decoder), caches the
// result and serves it.
//
// RomImage is immutable once built: share it freely between threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::core {

// Largest ROM window pcifs shadows; larger windows are refused as invalid.
inline constexpr uint64_t kMaxRomSize = 16u << 20;

struct RomImageInfo {
  uint32_t offset = 0;    // of the image in the ROM
  uint32_t length = 0;    // bytes
  uint8_t code_type = 0;  // 0 x86, 1 OpenFirmware, 2 PA-RISC, 3 EFI
  uint16_t vendor = 0;
  uint16_t device = 0;
  bool last = false;
};

struct RomCheck {
  bool valid = false;
  std::vector<RomImageInfo> images;
  uint32_t length = 0;  // end of the last image (valid only)
  std::string reason;   // why not valid, e.g. "signature 0xffff at 0x0"
};

RomCheck validate_rom(std::span<const uint8_t> rom);

// A validated ROM: the bytes up to the end of the last image, and its images.
struct RomImage {
  std::vector<uint8_t> bytes;
  std::vector<RomImageInfo> images;
};

// Turns ROM decode on, reads `size` bytes of the window, turns it off again
// (also when the read fails). `rom_off` reports whether decode is off after.
Result<std::vector<uint8_t>> capture_rom_window(backend::Device& dev, uint64_t size, bool* rom_off);

}  // namespace pcifs::core
