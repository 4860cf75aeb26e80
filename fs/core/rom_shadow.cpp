#include "core/rom_shadow.hpp"

#include <cstdio>

namespace pcifs::core {
namespace {

// PCI Firmware 3.0 §5.1: ROM header and PCI Data Structure offsets. Not in
// <linux/pci_regs.h>, which describes config space only.
constexpr uint32_t kRomSignature = 0xaa55;  // bytes 0x55, 0xAA
constexpr uint32_t kRomPcirPointer = 0x18;  // 16-bit offset of "PCIR" in the image
constexpr uint32_t kPcirVendor = 0x04;
constexpr uint32_t kPcirDevice = 0x06;
constexpr uint32_t kPcirImageLength = 0x10;  // in 512-byte units
constexpr uint32_t kPcirCodeType = 0x14;
constexpr uint32_t kPcirIndicator = 0x15;  // bit 7: last image
constexpr uint32_t kPcirMinSize = 0x18;
constexpr uint32_t kRomUnit = 512;
constexpr size_t kMaxImages = 64;

uint32_t le16(std::span<const uint8_t> b, size_t off) {
  return static_cast<uint32_t>(b[off] | (b[off + 1] << 8));
}

std::string fmt(const char* format, uint64_t a, uint64_t b = 0) {
  char buf[96];
  std::snprintf(buf, sizeof buf, format, static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return buf;
}

// Checks the image at `off`; fills `info` or returns the reason it is invalid.
std::string check_image(std::span<const uint8_t> rom, size_t off, RomImageInfo& info) {
  if (off + kRomPcirPointer + 2 > rom.size()) return fmt("truncated image header at 0x%llx", off);
  uint32_t sig = le16(rom, off);
  if (sig != kRomSignature) return fmt("signature 0x%04llx at 0x%llx", sig, off);
  size_t pcir = off + le16(rom, off + kRomPcirPointer);
  if (pcir + kPcirMinSize > rom.size())
    return fmt("PCIR pointer 0x%llx out of range at 0x%llx", pcir, off);
  if (rom[pcir] != 'P' || rom[pcir + 1] != 'C' || rom[pcir + 2] != 'I' || rom[pcir + 3] != 'R') {
    return fmt("PCIR signature missing at 0x%llx", pcir);
  }
  uint64_t length = uint64_t{le16(rom, pcir + kPcirImageLength)} * kRomUnit;
  if (length == 0) return fmt("image length 0 at 0x%llx", off);
  if (off + length > rom.size())
    return fmt("image at 0x%llx extends past the ROM (%llu bytes)", off, length);
  info.offset = static_cast<uint32_t>(off);
  info.length = static_cast<uint32_t>(length);
  info.vendor = static_cast<uint16_t>(le16(rom, pcir + kPcirVendor));
  info.device = static_cast<uint16_t>(le16(rom, pcir + kPcirDevice));
  info.code_type = rom[pcir + kPcirCodeType];
  info.last = (rom[pcir + kPcirIndicator] & 0x80) != 0;
  return {};
}

}  // namespace

RomCheck validate_rom(std::span<const uint8_t> rom) {
  RomCheck check;
  size_t off = 0;
  while (check.images.size() < kMaxImages) {
    RomImageInfo info;
    check.reason = check_image(rom, off, info);
    if (!check.reason.empty()) {
      check.images.clear();
      return check;
    }
    check.images.push_back(info);
    off += info.length;
    if (info.last) {
      check.valid = true;
      check.length = static_cast<uint32_t>(off);
      return check;
    }
  }
  check.images.clear();
  check.reason = fmt("no last-image flag in the first %llu images", kMaxImages);
  return check;
}

Result<std::vector<uint8_t>> capture_rom_window(backend::Device& dev, uint64_t size,
                                                bool* rom_off) {
  *rom_off = true;
  if (size == 0 || size > kMaxRomSize) return Errno(EIO);
  std::vector<uint8_t> bytes(size, 0xff);
  PCIFS_TRY(dev.rom_enable(true));
  Result<size_t> got = size_t{0};
  size_t pos = 0;
  while (pos < bytes.size()) {
    got = dev.rom_read(pos, std::span<uint8_t>(bytes).subspan(pos));
    if (!got || *got == 0) break;
    pos += *got;
  }
  // Decode off whatever happened: a BAR access with ROM decode on is illegal.
  *rom_off = dev.rom_enable(false).ok() || dev.rom_enable(false).ok();
  if (!got) return got.error();
  bytes.resize(pos);
  return bytes;
}

}  // namespace pcifs::core
