#include "core/config_shadow.hpp"

#include <linux/pci_regs.h>

#include <algorithm>

namespace pcifs::core {
namespace {

constexpr uint32_t kExtStart = 0x100;
constexpr uint32_t kDsnSerialOffset = 4;  // PCIe 6.0 §7.9.3
constexpr uint32_t kDsnSerialBytes = 8;
// PCI IDE controllers (class 01:01) may have writable programming-interface
// bits (native/compatibility mode): their class code is not fixed.
constexpr uint32_t kClassIde = 0x0101;

class Marker {
 public:
  explicit Marker(std::vector<bool>& mask) : mask_(mask) {}
  void mark(uint32_t off, uint32_t len) {
    for (uint32_t i = off; i < off + len && i < mask_.size(); ++i) mask_[i] = true;
  }

 private:
  std::vector<bool>& mask_;
};

void mark_header(Marker& m, std::span<const uint8_t> image, uint8_t header_type) {
  m.mark(PCI_VENDOR_ID, 4);
  m.mark(PCI_REVISION_ID, 1);
  if ((cfg_read(image, PCI_CLASS_DEVICE, 2)) != kClassIde) m.mark(PCI_CLASS_PROG, 3);
  m.mark(PCI_HEADER_TYPE, 1);
  m.mark(PCI_CAPABILITY_LIST, 1);
  m.mark(PCI_INTERRUPT_PIN, 1);
  switch (header_type & 0x7f) {
    case PCI_HEADER_TYPE_NORMAL:
      m.mark(PCI_CARDBUS_CIS, 4);
      m.mark(PCI_SUBSYSTEM_VENDOR_ID, 4);
      m.mark(PCI_CAPABILITY_LIST + 1, 7);  // reserved up to Interrupt Line
      m.mark(PCI_MIN_GNT, 2);
      break;
    case PCI_HEADER_TYPE_BRIDGE:
      m.mark(PCI_CAPABILITY_LIST + 1, 3);  // reserved up to the ROM BAR
      break;
    default: break;  // CardBus: only the common fields above
  }
}

void mark_capability(Marker& m, const CapInfo& c) {
  if (c.extended) {
    m.mark(c.offset, 4);  // ID, version, next
    if (c.id == PCI_EXT_CAP_ID_DSN) m.mark(c.offset + kDsnSerialOffset, kDsnSerialBytes);
    return;
  }
  m.mark(c.offset, 2);  // ID, next
  switch (c.id) {
    case PCI_CAP_ID_PM: m.mark(c.offset + PCI_PM_PMC, 2); break;
    case PCI_CAP_ID_EXP:
      m.mark(c.offset + PCI_EXP_FLAGS, 2);
      m.mark(c.offset + PCI_EXP_LNKCAP, 4);
      if (c.length >= PCI_EXP_LNKCAP2 + 4) {  // version 2 capability: the "2" registers
        m.mark(c.offset + PCI_EXP_DEVCAP2, 4);
        m.mark(c.offset + PCI_EXP_LNKCAP2, 4);
      }
      break;
    case PCI_CAP_ID_MSIX:
      m.mark(c.offset + PCI_MSIX_TABLE, 4);
      m.mark(c.offset + PCI_MSIX_PBA, 4);
      break;
    default: break;
  }
}

bool empty_ext_list(std::span<const uint8_t> image) {
  if (image.size() < 4096) return false;
  uint32_t h = cfg_read(image, kExtStart, 4);
  return h == 0 || h == 0xffffffffu;
}

}  // namespace

std::vector<bool> immutable_config_bytes(std::span<const uint8_t> image, uint8_t header_type,
                                         const std::vector<CapInfo>& caps) {
  std::vector<bool> mask(image.size(), false);
  if (image.size() < 64) return mask;
  Marker m(mask);
  mark_header(m, image, header_type);
  for (const auto& c : caps) mark_capability(m, c);
  if (empty_ext_list(image)) m.mark(kExtStart, 4);  // "no extended capabilities" is structure
  return mask;
}

ConfigShadow ConfigShadow::build(const backend::DeviceInfo& info, std::span<const uint8_t> image,
                                 const std::vector<CapInfo>& caps, const RawRead& reread) {
  ConfigShadow s;
  if (image.size() < 64) return s;
  // The IDs the backend reported independently must be what the image holds.
  if (cfg_read(image, PCI_VENDOR_ID, 2) != info.vendor ||
      cfg_read(image, PCI_DEVICE_ID, 2) != info.device ||
      (cfg_read(image, PCI_CLASS_REVISION, 4) >> 8) != info.class_code) {
    return s;
  }
  std::vector<bool> mask = immutable_config_bytes(image, info.header_type, caps);
  // Verify: a second read of every dword holding a candidate byte must agree.
  for (uint32_t dw = 0; dw + 4 <= mask.size(); dw += 4) {
    if (!std::any_of(mask.begin() + dw, mask.begin() + dw + 4, [](bool b) { return b; })) continue;
    uint32_t end = dw + 4;  // extend over following candidate dwords: one read per run
    while (end + 4 <= mask.size() &&
           std::any_of(mask.begin() + end, mask.begin() + end + 4, [](bool b) { return b; })) {
      end += 4;
    }
    std::vector<uint8_t> again(end - dw);
    if (!reread || !reread(dw, again)) return ConfigShadow{};
    for (uint32_t i = dw; i < end; ++i) {
      if (mask[i] && again[i - dw] != image[i]) mask[i] = false;
    }
    dw = end - 4;
  }
  // Whole dwords only: a dword with a volatile byte costs a device access
  // anyway, and splitting it would turn one dword access into two smaller ones.
  for (uint32_t dw = 0; dw + 4 <= mask.size(); dw += 4) {
    bool whole = std::all_of(mask.begin() + dw, mask.begin() + dw + 4, [](bool b) { return b; });
    if (!whole) std::fill(mask.begin() + dw, mask.begin() + dw + 4, false);
  }
  s.mask_ = std::move(mask);
  s.values_.assign(image.begin(), image.end());
  return s;
}

size_t ConfigShadow::shadowed_bytes() const {
  return static_cast<size_t>(std::count(mask_.begin(), mask_.end(), true));
}

}  // namespace pcifs::core
