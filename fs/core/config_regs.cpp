#include "core/config_regs.hpp"

#include <linux/pci_regs.h>

#include <cassert>

namespace pcifs::core {

RegTable::RegTable(uint32_t size)
    : wmask_(size, 0), w1c_(size, 0), dma_(size, 0), layout_(size, 4) {}

void RegTable::define(uint32_t offset, unsigned width, uint32_t wmask, uint32_t w1cmask) {
  bool valid =
      (width == 1 || width == 2 || width == 4) && offset % width == 0 && offset + width <= size();
  assert(valid);
  if (!valid) return;
  uint32_t dword = offset & ~3u;
  for (uint32_t b = dword; b < dword + 4; ++b) {
    if (b >= offset && b < offset + width) continue;
    // A neighbour whose register overlapped the new one stands alone now.
    RegSpan r = reg_at(b);
    if (r.offset < offset + width && r.offset + r.width > offset) {
      layout_[b] = static_cast<uint8_t>(((b - dword) << 4) | 1);
    }
  }
  for (unsigned i = 0; i < width; ++i) {
    uint32_t b = offset + i;
    wmask_[b] = static_cast<uint8_t>(wmask >> (8 * i));
    w1c_[b] = static_cast<uint8_t>(w1cmask >> (8 * i));
    layout_[b] = static_cast<uint8_t>(((offset - dword) << 4) | width);
  }
}

RegSpan RegTable::reg_at(uint32_t offset) const {
  assert(offset < size());
  uint8_t l = layout_[offset];
  return {(offset & ~3u) + (l >> 4), l & 0xfu};
}

uint32_t RegTable::writable_bits(uint32_t offset, unsigned width) const {
  uint32_t m = 0;
  for (unsigned i = 0; i < width; ++i) {
    m |= static_cast<uint32_t>(wmask(offset + i) | w1cmask(offset + i)) << (8 * i);
  }
  return m;
}

void RegTable::mark_dma(uint32_t offset, unsigned width, uint32_t mask) {
  for (unsigned i = 0; i < width && offset + i < size(); ++i) {
    dma_[offset + i] |= static_cast<uint8_t>(mask >> (8 * i));
  }
}

uint32_t RegTable::dma_bits(uint32_t offset, unsigned width) const {
  uint32_t m = 0;
  for (unsigned i = 0; i < width && offset + i < size(); ++i) {
    m |= static_cast<uint32_t>(dma_[offset + i]) << (8 * i);
  }
  return m;
}

namespace {

// Error bits of the (secondary) status register, RW1C (PCI 3.0 §6.2.3).
constexpr uint32_t kStatusErrors = PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT |
                                   PCI_STATUS_REC_TARGET_ABORT | PCI_STATUS_REC_MASTER_ABORT |
                                   PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY;
// Command bits a user of the function may set, as vfio-pci allows.
constexpr uint32_t kCommandRw = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                                PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;

// Defines a capability register only when it lies inside the capability
// (cap_walk clips lengths to the next capability) and inside the space.
class CapScope {
 public:
  CapScope(RegTable& t, const CapInfo& c) : t_(t), c_(c) {}
  void reg(uint32_t rel, unsigned width, uint32_t wmask, uint32_t w1c) {
    if (rel + width > c_.length) return;
    if (c_.offset + rel + width > t_.size()) return;
    t_.define(c_.offset + rel, width, wmask, w1c);
  }
  void dma(uint32_t rel, unsigned width, uint32_t mask) {
    if (rel + width > c_.length || c_.offset + rel + width > t_.size()) return;
    t_.mark_dma(c_.offset + rel, width, mask);
  }

 private:
  RegTable& t_;
  const CapInfo& c_;
};

void define_header(RegTable& t, uint8_t header_type) {
  t.define(PCI_COMMAND, 2, kCommandRw, 0);
  t.mark_dma(PCI_COMMAND, 2, PCI_COMMAND_MASTER);
  t.define(PCI_STATUS, 2, 0, kStatusErrors);
  t.define(PCI_CACHE_LINE_SIZE, 1, 0xff, 0);
  t.define(PCI_LATENCY_TIMER, 1, 0xff, 0);
  t.define(PCI_HEADER_TYPE, 1, 0, 0);
  t.define(PCI_BIST, 1, 0, 0);  // starting a self test could take the function away
  t.define(PCI_INTERRUPT_LINE, 1, 0xff, 0);
  if (header_type == PCI_HEADER_TYPE_BRIDGE) {
    // Bus numbers, windows and bridge control stay read-only: changing them
    // could cut off or re-route the devices behind the bridge.
    t.define(PCI_SEC_STATUS, 2, 0, kStatusErrors);
    t.define(PCI_BRIDGE_CONTROL, 2, 0, 0);
  }
}

void define_pm(RegTable& t, const CapInfo& c) {
  // PowerState is reserved to power_state [S9]; No_Soft_Reset is read-only.
  CapScope(t, c).reg(PCI_PM_CTRL, 2, PCI_PM_CTRL_PME_ENABLE | PCI_PM_CTRL_DATA_SEL_MASK,
                     PCI_PM_CTRL_PME_STATUS);
}

void define_msi(RegTable& t, const CapInfo& c, std::span<const uint8_t> image) {
  CapScope s(t, c);
  uint32_t flags = cfg_read(image, c.offset + PCI_MSI_FLAGS, 2);
  bool is64 = (flags & PCI_MSI_FLAGS_64BIT) != 0;
  s.reg(PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE, 0);
  s.reg(PCI_MSI_ADDRESS_LO, 4, 0xfffffffc, 0);
  if (is64) s.reg(PCI_MSI_ADDRESS_HI, 4, 0xffffffff, 0);
  // The message address is where the function's interrupt write goes: a DMA target.
  s.dma(PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
  if (is64) s.dma(PCI_MSI_ADDRESS_HI, 4, 0xffffffff);
  s.reg(is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32, 2, 0xffff, 0);
  if (flags & PCI_MSI_FLAGS_MASKBIT)
    s.reg(is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32, 4, 0xffffffff, 0);
}

void define_msix(RegTable& t, const CapInfo& c) {
  CapScope(t, c).reg(PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 0);
}

void define_pcie(RegTable& t, const CapInfo& c, std::span<const uint8_t> image) {
  CapScope s(t, c);
  // Initiate FLR is dropped: resets go through `reset` [S10], which drains first.
  s.reg(PCI_EXP_DEVCTL, 2, 0xffffu & ~uint32_t{PCI_EXP_DEVCTL_BCR_FLR}, 0);
  s.reg(PCI_EXP_DEVSTA, 2, 0,
        PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_NFED | PCI_EXP_DEVSTA_FED | PCI_EXP_DEVSTA_URD);
  // Link Disable and Retrain Link are dropped: on a downstream port they take
  // down the link of every device behind it, which is no one caller's to decide.
  s.reg(PCI_EXP_LNKCTL, 2, 0xffffu & ~uint32_t{PCI_EXP_LNKCTL_LD | PCI_EXP_LNKCTL_RL}, 0);
  s.reg(PCI_EXP_LNKSTA, 2, 0, PCI_EXP_LNKSTA_LBMS | PCI_EXP_LNKSTA_LABS);
  // The "2" registers exist from capability version 2 on (PCIe 2.0 §7.8).
  if ((cfg_read(image, c.offset + PCI_EXP_FLAGS, 2) & PCI_EXP_FLAGS_VERS) < 2) return;
  s.reg(PCI_EXP_DEVCTL2, 2, 0xffff, 0);
  s.reg(PCI_EXP_LNKCTL2, 2, 0xffff, 0);
}

void define_aer(RegTable& t, const CapInfo& c, uint8_t header_type) {
  CapScope s(t, c);
  s.reg(PCI_ERR_UNCOR_STATUS, 4, 0, 0xffffffff);
  s.reg(PCI_ERR_UNCOR_MASK, 4, 0xffffffff, 0);
  s.reg(PCI_ERR_UNCOR_SEVER, 4, 0xffffffff, 0);
  s.reg(PCI_ERR_COR_STATUS, 4, 0, 0xffffffff);
  s.reg(PCI_ERR_COR_MASK, 4, 0xffffffff, 0);
  s.reg(PCI_ERR_CAP, 4, PCI_ERR_CAP_ECRC_GENE | PCI_ERR_CAP_ECRC_CHKE, 0);
  if (header_type != PCI_HEADER_TYPE_BRIDGE) return;  // root registers: root ports only
  s.reg(PCI_ERR_ROOT_COMMAND, 4,
        PCI_ERR_ROOT_CMD_COR_EN | PCI_ERR_ROOT_CMD_NONFATAL_EN | PCI_ERR_ROOT_CMD_FATAL_EN, 0);
  s.reg(PCI_ERR_ROOT_STATUS, 4, 0, 0x7f);
}

}  // namespace

RegTable build_reg_table(std::span<const uint8_t> image, uint32_t config_size, uint8_t header_type,
                         const std::vector<CapInfo>& caps) {
  RegTable t(config_size);
  define_header(t, header_type);
  for (const auto& c : caps) {
    // Everything not listed (VPD, DSN, DOE, vendor-specific, unknown) stays
    // read-only; DOE in particular is never written: pcifs is its only initiator.
    if (!c.extended) {
      if (c.id == PCI_CAP_ID_PM) define_pm(t, c);
      if (c.id == PCI_CAP_ID_MSI) define_msi(t, c, image);
      if (c.id == PCI_CAP_ID_MSIX) define_msix(t, c);
      if (c.id == PCI_CAP_ID_EXP) define_pcie(t, c, image);
    } else if (c.id == PCI_EXT_CAP_ID_ERR) {
      define_aer(t, c, header_type);
    }
  }
  return t;
}

}  // namespace pcifs::core
