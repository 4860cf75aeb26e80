#include "core/config_state.hpp"

#include <linux/pci_regs.h>

#include <span>

#include "core/cap_walk.hpp"

namespace pcifs::core {
namespace {

// Writes the saved value of one register back.
struct Restorer {
  backend::Device& dev;
  const ConfigImage& saved;

  uint32_t saved_value(uint32_t off, unsigned width) const { return cfg_read(saved, off, width); }
  Result<void> put(uint32_t off, unsigned width) const {
    return dev.config_write(off, width, saved_value(off, width));
  }
  Result<void> put_value(uint32_t off, unsigned width, uint32_t value) const {
    return dev.config_write(off, width, value);
  }
};

Result<void> restore_pm(const Restorer& r) {
  auto pm = find_capability(r.saved, PCI_CAP_ID_PM, false);
  if (!pm) return Ok();
  uint32_t off = pm->offset + PCI_PM_CTRL;
  // PowerState stays D0 (we are in D0 now); PME_Status is RW1C: never write a 1.
  uint32_t keep = PCI_PM_CTRL_PME_ENABLE | PCI_PM_CTRL_DATA_SEL_MASK;
  return r.put_value(off, 2, r.saved_value(off, 2) & keep);
}

Result<void> restore_pcie(const Restorer& r) {
  auto exp = find_capability(r.saved, PCI_CAP_ID_EXP, false);
  if (!exp) return Ok();
  uint32_t base = exp->offset;
  uint32_t flags = r.saved_value(base + PCI_EXP_FLAGS, 2);
  uint32_t type = (flags & PCI_EXP_FLAGS_TYPE) >> 4;
  bool v2 = (flags & PCI_EXP_FLAGS_VERS) >= 2;
  bool has_link = type != PCI_EXP_TYPE_RC_END && type != PCI_EXP_TYPE_RC_EC;
  bool has_slot = (flags & PCI_EXP_FLAGS_SLOT) != 0;
  bool has_root = type == PCI_EXP_TYPE_ROOT_PORT || type == PCI_EXP_TYPE_RC_EC;
  PCIFS_TRY(r.put(base + PCI_EXP_DEVCTL, 2));
  if (has_link) PCIFS_TRY(r.put(base + PCI_EXP_LNKCTL, 2));
  if (has_slot) PCIFS_TRY(r.put(base + PCI_EXP_SLTCTL, 2));
  if (has_root) PCIFS_TRY(r.put(base + PCI_EXP_RTCTL, 2));
  if (!v2) return Ok();
  PCIFS_TRY(r.put(base + PCI_EXP_DEVCTL2, 2));
  if (has_link) PCIFS_TRY(r.put(base + PCI_EXP_LNKCTL2, 2));
  if (has_slot) PCIFS_TRY(r.put(base + PCI_EXP_SLTCTL2, 2));
  return Ok();
}

Result<void> restore_aer(const Restorer& r) {
  if (r.saved.size() <= 256) return Ok();
  auto aer = find_capability(r.saved, PCI_EXT_CAP_ID_ERR, true);
  if (!aer) return Ok();
  uint32_t base = aer->offset;
  PCIFS_TRY(r.put(base + PCI_ERR_UNCOR_MASK, 4));
  PCIFS_TRY(r.put(base + PCI_ERR_UNCOR_SEVER, 4));
  PCIFS_TRY(r.put(base + PCI_ERR_COR_MASK, 4));
  auto exp = find_capability(r.saved, PCI_CAP_ID_EXP, false);
  uint32_t type =
      exp ? (r.saved_value(exp->offset + PCI_EXP_FLAGS, 2) & PCI_EXP_FLAGS_TYPE) >> 4 : 0;
  if (exp && type == PCI_EXP_TYPE_ROOT_PORT) PCIFS_TRY(r.put(base + PCI_ERR_ROOT_COMMAND, 4));
  return Ok();
}

// Type 0: dwords 15..4 high to low, then the low header, Command last.
Result<void> restore_header0(const Restorer& r) {
  uint32_t rom = r.saved_value(PCI_ROM_ADDRESS, 4) & ~static_cast<uint32_t>(PCI_ROM_ADDRESS_ENABLE);
  PCIFS_TRY(r.put(PCI_INTERRUPT_LINE, 1));
  PCIFS_TRY(r.put_value(PCI_ROM_ADDRESS, 4, rom));
  for (uint32_t off = PCI_BASE_ADDRESS_5; off >= PCI_BASE_ADDRESS_0; off -= 4)
    PCIFS_TRY(r.put(off, 4));
  PCIFS_TRY(r.put(PCI_CACHE_LINE_SIZE, 2));  // cache line size + latency timer
  return r.put(PCI_COMMAND, 2);              // 16 bits: Status is RW1C
}

// Type 1: the same order, bridge windows and bus numbers instead of BARs 2..5.
Result<void> restore_header1(const Restorer& r) {
  uint32_t rom =
      r.saved_value(PCI_ROM_ADDRESS1, 4) & ~static_cast<uint32_t>(PCI_ROM_ADDRESS_ENABLE);
  PCIFS_TRY(r.put(PCI_BRIDGE_CONTROL, 2));
  PCIFS_TRY(r.put(PCI_INTERRUPT_LINE, 1));
  PCIFS_TRY(r.put_value(PCI_ROM_ADDRESS1, 4, rom));
  PCIFS_TRY(r.put(PCI_IO_BASE_UPPER16, 4));
  PCIFS_TRY(r.put(PCI_PREF_LIMIT_UPPER32, 4));
  PCIFS_TRY(r.put(PCI_PREF_BASE_UPPER32, 4));
  PCIFS_TRY(r.put(PCI_PREF_MEMORY_BASE, 4));
  PCIFS_TRY(r.put(PCI_MEMORY_BASE, 4));
  PCIFS_TRY(r.put(PCI_IO_BASE, 2));  // the upper half is Secondary Status (RW1C)
  PCIFS_TRY(r.put(PCI_PRIMARY_BUS, 4));
  PCIFS_TRY(r.put(PCI_BASE_ADDRESS_1, 4));
  PCIFS_TRY(r.put(PCI_BASE_ADDRESS_0, 4));
  PCIFS_TRY(r.put(PCI_CACHE_LINE_SIZE, 2));
  return r.put(PCI_COMMAND, 2);
}

Result<void> restore_msi(const Restorer& r) {
  if (auto msi = find_capability(r.saved, PCI_CAP_ID_MSI, false)) {
    uint32_t base = msi->offset;
    uint32_t flags = r.saved_value(base + PCI_MSI_FLAGS, 2);
    bool is64 = (flags & PCI_MSI_FLAGS_64BIT) != 0;
    bool maskbit = (flags & PCI_MSI_FLAGS_MASKBIT) != 0;
    PCIFS_TRY(r.put(base + PCI_MSI_ADDRESS_LO, 4));
    if (is64) PCIFS_TRY(r.put(base + PCI_MSI_ADDRESS_HI, 4));
    PCIFS_TRY(r.put(base + (is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32), 2));
    if (maskbit) PCIFS_TRY(r.put(base + (is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32), 4));
    PCIFS_TRY(r.put(base + PCI_MSI_FLAGS, 2));  // enable last
  }
  if (auto msix = find_capability(r.saved, PCI_CAP_ID_MSIX, false)) {
    PCIFS_TRY(r.put(msix->offset + PCI_MSIX_FLAGS, 2));
  }
  return Ok();
}

std::optional<uint32_t> pmcsr_offset(const ConfigImage& image) {
  auto pm = find_capability(image, PCI_CAP_ID_PM, false);
  if (!pm) return std::nullopt;
  return pm->offset + PCI_PM_CTRL;
}

}  // namespace

Result<ConfigImage> read_config_image(backend::Device& dev) {
  ConfigImage image(dev.info().config_size, 0);
  PCIFS_TRY(dev.config_read_block(0, std::span<uint8_t>(image)));
  return image;
}

Result<void> restore_config_state(backend::Device& dev, const ConfigImage& saved) {
  if (saved.size() < 64) return Errno(EINVAL);
  Restorer r{dev, saved};
  PCIFS_TRY(restore_pm(r));
  PCIFS_TRY(restore_pcie(r));
  PCIFS_TRY(restore_aer(r));
  bool bridge = (saved[PCI_HEADER_TYPE] & 0x7f) == PCI_HEADER_TYPE_BRIDGE;
  PCIFS_TRY(bridge ? restore_header1(r) : restore_header0(r));
  return restore_msi(r);
}

bool no_soft_reset(const ConfigImage& image) {
  auto off = pmcsr_offset(image);
  return off && (cfg_read(image, *off, 2) & PCI_PM_CTRL_NO_SOFT_RESET) != 0;
}

std::optional<unsigned> pmcsr_state(const ConfigImage& image) {
  auto off = pmcsr_offset(image);
  if (!off) return std::nullopt;
  return cfg_read(image, *off, 2) & PCI_PM_CTRL_STATE_MASK;
}

ConfigImage as_d3_snapshot(const ConfigImage& image) {
  ConfigImage copy = image;
  if (auto off = pmcsr_offset(copy); off && *off < copy.size()) {
    copy[*off] = static_cast<uint8_t>(copy[*off] | PCI_PM_CTRL_STATE_MASK);  // D3
  }
  return copy;
}

}  // namespace pcifs::core
