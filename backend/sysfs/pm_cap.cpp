#include "sysfs/pm_cap.hpp"

#include <linux/pci_regs.h>

namespace pcifs::backend::sysfs {

std::optional<uint8_t> find_pm_capability(std::span<const uint8_t> config) {
  if (config.size() < 64) return std::nullopt;
  if ((config[PCI_STATUS] & PCI_STATUS_CAP_LIST) == 0) return std::nullopt;
  uint8_t list = PCI_CAPABILITY_LIST;
  if ((config[PCI_HEADER_TYPE] & 0x7f) == PCI_HEADER_TYPE_CARDBUS) list = PCI_CB_CAPABILITY_LIST;
  unsigned pos = config[list];
  // At most 48 hops, as the kernel's __pci_find_next_cap_ttl: (256-64)/4
  // entries fit, so more hops means the list loops.
  for (int ttl = 48; ttl > 0 && pos >= 0x40; --ttl) {
    pos &= ~3u;
    if (pos + PCI_CAP_LIST_NEXT >= config.size()) return std::nullopt;
    uint8_t id = config[pos + PCI_CAP_LIST_ID];
    if (id == 0xff) return std::nullopt;
    if (id == PCI_CAP_ID_PM) return static_cast<uint8_t>(pos);
    pos = config[pos + PCI_CAP_LIST_NEXT];
  }
  return std::nullopt;
}

}  // namespace pcifs::backend::sysfs
