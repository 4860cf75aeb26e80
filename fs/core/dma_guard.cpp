#include "core/dma_guard.hpp"

#include <linux/pci_regs.h>

#include "core/cap_walk.hpp"

namespace pcifs::core {

std::optional<MsixTable> msix_table_of(std::span<const uint8_t> image) {
  auto cap = find_capability(image, PCI_CAP_ID_MSIX, false);
  if (!cap || size_t{cap->offset} + PCI_MSIX_TABLE + 4 > image.size()) return std::nullopt;
  const uint32_t flags = cfg_read(image, cap->offset + PCI_MSIX_FLAGS, 2);
  const uint32_t table = cfg_read(image, cap->offset + PCI_MSIX_TABLE, 4);
  MsixTable t;
  t.bar = table & PCI_MSIX_TABLE_BIR;
  t.offset = table & PCI_MSIX_TABLE_OFFSET;
  t.entries = (flags & PCI_MSIX_FLAGS_QSIZE) + 1;
  if (t.bar > 5) return std::nullopt;  // reserved BIR: nothing to guard
  return t;
}

}  // namespace pcifs::core
