#include "sim/rom_image.hpp"

#include <numeric>

#include "sim/config_model.hpp"

namespace pcifs::backend::sim {
namespace {

// PCI Firmware 3.0 §5.1.1 (ROM header) and §5.1.3 (PCI data structure).
constexpr uint32_t kRomPcirPointer = 0x18;
constexpr uint32_t kPcirVendor = 0x04, kPcirDevice = 0x06, kPcirLength = 0x0a;
constexpr uint32_t kPcirRevision = 0x0c, kPcirClass = 0x0d, kPcirImageLength = 0x10;
constexpr uint32_t kPcirCodeType = 0x14, kPcirIndicator = 0x15;
constexpr uint8_t kPcirLastImage = 0x80;
constexpr uint32_t kPcirSize = 0x1c;        // PCI 3.0 structure
constexpr uint32_t kEfiSignature = 0x0ef1;  // UEFI 2.x §14.4.2 at image offset 4

void fill_body(std::span<uint8_t> image, size_t index) {
  for (size_t i = kRomPcirOffset + kPcirSize; i < image.size(); ++i) {
    image[i] = static_cast<uint8_t>((i * 131 + index * 17 + 7) >> 3);
  }
}

void write_image(std::span<uint8_t> image, const DeviceSpec& spec, size_t index, bool last) {
  const RomImageSpec& img = spec.rom.images[index];
  fill_body(image, index);
  image[0] = 0x55;
  image[1] = 0xaa;
  set_field(image, 2, 2, img.size / kRomImageUnit);  // initialization size
  if (img.code_type == kRomCodeEfi) set_field(image, 4, 4, kEfiSignature);
  set_field(image, kRomPcirPointer, 2, kRomPcirOffset);
  auto pcir = image.subspan(kRomPcirOffset, kPcirSize);
  std::fill(pcir.begin(), pcir.end(), 0);
  pcir[0] = 'P', pcir[1] = 'C', pcir[2] = 'I', pcir[3] = 'R';
  set_field(pcir, kPcirVendor, 2, spec.vendor);
  set_field(pcir, kPcirDevice, 2, spec.device);
  set_field(pcir, kPcirLength, 2, kPcirSize);
  pcir[kPcirRevision] = 3;
  set_field(pcir, kPcirClass, 3, spec.class_code);
  set_field(pcir, kPcirImageLength, 2, img.size / kRomImageUnit);
  pcir[kPcirCodeType] = img.code_type;
  pcir[kPcirIndicator] = last ? kPcirLastImage : 0;
  if (img.code_type == kRomCodeX86) {  // the BIOS checks a zero byte sum
    image.back() = 0;
    uint8_t sum = std::accumulate(image.begin(), image.end(), uint8_t{0},
                                  [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
    image.back() = static_cast<uint8_t>(-sum);
  }
}

}  // namespace

std::shared_ptr<const std::vector<uint8_t>> build_rom(const DeviceSpec& spec) {
  auto rom = std::make_shared<std::vector<uint8_t>>(spec.rom.size, uint8_t{0xff});
  size_t at = 0;
  for (size_t i = 0; i < spec.rom.images.size(); ++i) {
    size_t size = spec.rom.images[i].size;
    bool last = i + 1 == spec.rom.images.size();
    write_image(std::span<uint8_t>(*rom).subspan(at, size), spec, i, last);
    at += size;
  }
  return rom;
}

}  // namespace pcifs::backend::sim
