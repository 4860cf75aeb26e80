#include "sim/config_model.hpp"

#include <linux/pci_regs.h>

#include <cassert>

namespace pcifs::backend::sim {
namespace {

// Bits the model makes writable / RW1C in the common header (PCI 3.0 §6.2.2-3).
constexpr uint32_t kCommandWritable = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                                      PCI_COMMAND_PARITY | PCI_COMMAND_SERR |
                                      PCI_COMMAND_INTX_DISABLE;
constexpr uint32_t kStatusW1c = PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT |
                                PCI_STATUS_REC_TARGET_ABORT | PCI_STATUS_REC_MASTER_ABORT |
                                PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY;
// AER (PCIe 6.0 §7.8.4): the defined uncorrectable / correctable error bits.
constexpr uint32_t kAerUncorBits = 0x07fff030;
constexpr uint32_t kAerCorBits = 0x0000f1c1;
constexpr uint16_t kAerSizeEndpoint = 0x38;
constexpr uint16_t kAerSizeRootPort = 0x48;
constexpr uint16_t kDoeCapSize = 0x18;   // PCIe 6.0 §7.9.24: header + 5 registers
constexpr uint16_t kPcieCapSize = 0x3c;  // v2 capability with slot and root registers
constexpr uint16_t kMsiCapSize = 0x10;   // 64-bit, no per-vector masking, padded

class Builder {
 public:
  explicit Builder(uint32_t size) {
    m_.hw_default.assign(size, 0);
    m_.wmask.assign(size, 0);
    m_.w1cmask.assign(size, 0);
  }
  void put(uint32_t off, unsigned width, uint64_t value, uint64_t wmask = 0, uint64_t w1c = 0) {
    set_field(m_.hw_default, off, width, value);
    set_field(m_.wmask, off, width, wmask);
    set_field(m_.w1cmask, off, width, w1c);
  }
  ConfigModel& model() { return m_; }

 private:
  ConfigModel m_;
};

void build_bar(Builder& b, uint32_t reg, const BarSpec& bar) {
  uint64_t size_mask = ~(bar.size - 1);
  switch (bar.kind) {
    case BarKind::kNone: return;
    case BarKind::kIo:
      b.put(reg, 4, PCI_BASE_ADDRESS_SPACE_IO, size_mask & PCI_BASE_ADDRESS_IO_MASK);
      return;
    case BarKind::kMem32:
    case BarKind::kMem64: {
      uint32_t flags = bar.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0;
      if (bar.kind == BarKind::kMem64) flags |= PCI_BASE_ADDRESS_MEM_TYPE_64;
      b.put(reg, 4, flags, size_mask & static_cast<uint32_t>(PCI_BASE_ADDRESS_MEM_MASK));
      if (bar.kind == BarKind::kMem64) b.put(reg + 4, 4, 0, size_mask >> 32);
      return;
    }
  }
}

void build_type0(Builder& b, const DeviceSpec& s) {
  for (unsigned i = 0; i < 6; ++i) build_bar(b, PCI_BASE_ADDRESS_0 + 4 * i, s.bars[i]);
  b.put(PCI_SUBSYSTEM_VENDOR_ID, 2, s.subsystem_vendor);
  b.put(PCI_SUBSYSTEM_ID, 2, s.subsystem_device);
}

void build_type1(Builder& b, const DeviceSpec& s) {
  for (unsigned i = 0; i < 2; ++i) build_bar(b, PCI_BASE_ADDRESS_0 + 4 * i, s.bars[i]);
  b.put(PCI_PRIMARY_BUS, 1, 0, 0xff);
  b.put(PCI_SECONDARY_BUS, 1, 0, 0xff);
  b.put(PCI_SUBORDINATE_BUS, 1, 0, 0xff);
  // 32-bit I/O and 64-bit prefetchable windows (PCI-to-PCI Bridge 1.2 §3.2.5).
  b.put(PCI_IO_BASE, 1, PCI_IO_RANGE_TYPE_32, 0xf0);
  b.put(PCI_IO_LIMIT, 1, PCI_IO_RANGE_TYPE_32, 0xf0);
  b.put(PCI_SEC_STATUS, 2, 0, 0, kStatusW1c);
  b.put(PCI_MEMORY_BASE, 2, 0, 0xfff0);
  b.put(PCI_MEMORY_LIMIT, 2, 0, 0xfff0);
  b.put(PCI_PREF_MEMORY_BASE, 2, PCI_PREF_RANGE_TYPE_64, 0xfff0);
  b.put(PCI_PREF_MEMORY_LIMIT, 2, PCI_PREF_RANGE_TYPE_64, 0xfff0);
  b.put(PCI_PREF_BASE_UPPER32, 4, 0, 0xffffffff);
  b.put(PCI_PREF_LIMIT_UPPER32, 4, 0, 0xffffffff);
  b.put(PCI_IO_BASE_UPPER16, 2, 0, 0xffff);
  b.put(PCI_IO_LIMIT_UPPER16, 2, 0, 0xffff);
  b.put(PCI_BRIDGE_CONTROL, 2, 0,
        PCI_BRIDGE_CTL_PARITY | PCI_BRIDGE_CTL_SERR | PCI_BRIDGE_CTL_ISA | PCI_BRIDGE_CTL_VGA |
            PCI_BRIDGE_CTL_MASTER_ABORT | PCI_BRIDGE_CTL_BUS_RESET);
}

void build_header(Builder& b, const DeviceSpec& s) {
  b.put(PCI_VENDOR_ID, 2, s.vendor);
  b.put(PCI_DEVICE_ID, 2, s.device);
  b.put(PCI_COMMAND, 2, 0, kCommandWritable);
  b.put(PCI_STATUS, 2, 0, 0, kStatusW1c);
  b.put(PCI_REVISION_ID, 1, s.revision);
  b.put(PCI_CLASS_PROG, 1, s.class_code & 0xff);
  b.put(PCI_CLASS_DEVICE, 2, s.class_code >> 8);
  b.put(PCI_CACHE_LINE_SIZE, 1, 0, 0xff);
  b.put(PCI_HEADER_TYPE, 1, (s.header_type & 0x7f) | (s.multifunction ? 0x80 : 0));
  b.put(PCI_INTERRUPT_LINE, 1, 0, 0xff);
  b.put(PCI_INTERRUPT_PIN, 1, 1);  // INTA#
  if (s.header_type == PCI_HEADER_TYPE_BRIDGE) {
    build_type1(b, s);
  } else {
    build_type0(b, s);
  }
  if (s.rom.size != 0) {
    uint32_t reg = s.header_type == PCI_HEADER_TYPE_BRIDGE ? PCI_ROM_ADDRESS1 : PCI_ROM_ADDRESS;
    uint64_t mask = (~(s.rom.size - 1) & PCI_ROM_ADDRESS_MASK) | PCI_ROM_ADDRESS_ENABLE;
    b.put(reg, 4, 0, mask);
  }
}

// --- Standard capabilities, chained from PCI_CAPABILITY_LIST.

void build_pm(Builder& b, uint16_t off, const DeviceSpec& s) {
  b.put(off + PCI_PM_PMC, 2, 3);  // PCI PM 1.2; only D0 and D3hot
  uint32_t nsr = s.caps.no_soft_reset ? PCI_PM_CTRL_NO_SOFT_RESET : 0;
  b.put(off + PCI_PM_CTRL, 2, nsr, PCI_PM_CTRL_STATE_MASK | PCI_PM_CTRL_PME_ENABLE,
        PCI_PM_CTRL_PME_STATUS);
}

void build_msi(Builder& b, uint16_t off) {
  b.put(off + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_64BIT, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE);
  b.put(off + PCI_MSI_ADDRESS_LO, 4, 0, 0xfffffffc);
  b.put(off + PCI_MSI_ADDRESS_HI, 4, 0, 0xffffffff);
  b.put(off + PCI_MSI_DATA_64, 2, 0, 0xffff);
}

void build_msix(Builder& b, uint16_t off, const CapsSpec& c) {
  b.put(off + PCI_MSIX_FLAGS, 2, (c.msix_vectors - 1u) & PCI_MSIX_FLAGS_QSIZE,
        PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  b.put(off + PCI_MSIX_TABLE, 4, c.msix_table_offset | c.msix_bar);
  b.put(off + PCI_MSIX_PBA, 4, c.msix_pba_offset | c.msix_bar);
}

void build_pcie_root(Builder& b, uint16_t off, const DeviceSpec& s) {
  b.put(off + PCI_EXP_SLTCAP, 4, uint32_t{s.bdf.dev} << 19);  // physical slot number
  // Indicators Off (PCIe 5.0 §7.5.3.10; 00b is reserved and lspci says "Unknown").
  b.put(off + PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_ATTN_IND_OFF | PCI_EXP_SLTCTL_PWR_IND_OFF, 0x07ff);
  b.put(off + PCI_EXP_SLTSTA, 2, PCI_EXP_SLTSTA_PDS, 0, 0x011f);
  b.put(off + PCI_EXP_RTCTL, 2, 0, 0x001f);
  b.put(off + PCI_EXP_RTSTA, 4, 0, 0, PCI_EXP_RTSTA_PME);
}

void build_pcie(Builder& b, uint16_t off, const DeviceSpec& s) {
  bool root = s.caps.port_type == PortType::kRootPort;
  uint32_t type = root ? PCI_EXP_TYPE_ROOT_PORT : PCI_EXP_TYPE_ENDPOINT;
  b.put(off + PCI_EXP_FLAGS, 2, 2u | (type << 4) | (root ? PCI_EXP_FLAGS_SLOT : 0u));
  uint32_t devcap = 1u /* MPS 256 */ | PCI_EXP_DEVCAP_RBER;
  if (!root && s.caps.flr) devcap |= PCI_EXP_DEVCAP_FLR;
  b.put(off + PCI_EXP_DEVCAP, 4, devcap);
  // Initiate FLR (bit 15) is not a stored bit: it reads 0 and its write is a hook.
  b.put(off + PCI_EXP_DEVCTL, 2, 0x2810, 0x7fff);
  // Correctable Error and Unsupported Request detected: what lspci usually shows.
  b.put(off + PCI_EXP_DEVSTA, 2, PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_URD, 0, 0x000f);
  uint32_t port = root ? uint32_t{s.bdf.dev} << 24 : 0;
  b.put(off + PCI_EXP_LNKCAP, 4, 4u | (8u << 4) | (root ? PCI_EXP_LNKCAP_DLLLARC : 0u) | port);
  b.put(off + PCI_EXP_LNKCTL, 2, 0, root ? 0x0fdb : 0x0fc3);
  uint32_t lnksta = 4u | (8u << 4) | (root ? PCI_EXP_LNKSTA_DLLLA | PCI_EXP_LNKSTA_LBMS : 0u);
  b.put(off + PCI_EXP_LNKSTA, 2, lnksta, 0, root ? 0xc000 : 0);
  if (root) build_pcie_root(b, off, s);
  b.put(off + PCI_EXP_DEVCAP2, 4, 0x1fu | (root ? PCI_EXP_DEVCAP2_ARI : 0u));
  b.put(off + PCI_EXP_DEVCTL2, 2, 0, 0x041f | (root ? PCI_EXP_DEVCTL2_ARI : 0u));
  b.put(off + PCI_EXP_LNKCAP2, 4, 0x1e);  // 2.5 - 16 GT/s
  b.put(off + PCI_EXP_LNKCTL2, 2, 4, 0x07bf);
}

void build_standard_caps(Builder& b, const DeviceSpec& s) {
  CapOffsets& caps = b.model().caps;
  struct Entry {
    uint8_t id;
    uint16_t size;
    uint16_t* where;
  };
  std::vector<Entry> list;
  if (s.caps.pm) list.push_back({PCI_CAP_ID_PM, PCI_PM_SIZEOF, &caps.pm});
  if (s.caps.msi) list.push_back({PCI_CAP_ID_MSI, kMsiCapSize, &caps.msi});
  if (s.caps.msix) list.push_back({PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF, &caps.msix});
  if (s.caps.pcie) list.push_back({PCI_CAP_ID_EXP, kPcieCapSize, &caps.pcie});
  if (list.empty()) return;
  b.put(PCI_STATUS, 2, PCI_STATUS_CAP_LIST, 0, kStatusW1c);
  uint16_t off = 0x40, prev = PCI_CAPABILITY_LIST;
  for (const Entry& e : list) {
    b.put(prev, 1, off);
    b.put(off + PCI_CAP_LIST_ID, 1, e.id);
    *e.where = off;
    prev = static_cast<uint16_t>(off + PCI_CAP_LIST_NEXT);
    off = static_cast<uint16_t>((off + e.size + 3u) & ~3u);
  }
  if (s.caps.pm) build_pm(b, caps.pm, s);
  if (s.caps.msi) build_msi(b, caps.msi);
  if (s.caps.msix) build_msix(b, caps.msix, s.caps);
  if (s.caps.pcie) build_pcie(b, caps.pcie, s);
}

// --- Extended capabilities, chained from 0x100.

void build_aer(Builder& b, uint16_t off, bool root) {
  b.put(off + PCI_ERR_UNCOR_STATUS, 4, 0, 0, kAerUncorBits);
  b.put(off + PCI_ERR_UNCOR_MASK, 4, 0, kAerUncorBits);
  b.put(off + PCI_ERR_UNCOR_SEVER, 4, 0x00462030, kAerUncorBits);  // spec defaults
  b.put(off + PCI_ERR_COR_STATUS, 4, PCI_ERR_COR_ADV_NFAT, 0, kAerCorBits);
  b.put(off + PCI_ERR_COR_MASK, 4, PCI_ERR_COR_ADV_NFAT, kAerCorBits);
  b.put(off + PCI_ERR_CAP, 4, PCI_ERR_CAP_ECRC_GENC | PCI_ERR_CAP_ECRC_CHKC,
        PCI_ERR_CAP_ECRC_GENE | PCI_ERR_CAP_ECRC_CHKE);
  if (!root) return;
  b.put(off + PCI_ERR_ROOT_COMMAND, 4, 0, 0x7);
  b.put(off + PCI_ERR_ROOT_STATUS, 4, 0, 0, 0x7f);
}

void build_extended_caps(Builder& b, const DeviceSpec& s) {
  CapOffsets& caps = b.model().caps;
  struct Entry {
    uint16_t id;
    uint8_t version;
    uint16_t size;
  };
  std::vector<Entry> list;
  bool root = s.caps.port_type == PortType::kRootPort;
  if (s.caps.aer)
    list.push_back({PCI_EXT_CAP_ID_ERR, 2, root ? kAerSizeRootPort : kAerSizeEndpoint});
  if (s.caps.dsn) list.push_back({PCI_EXT_CAP_ID_DSN, 1, PCI_EXT_CAP_DSN_SIZEOF});
  for (size_t i = 0; i < s.caps.doe.size(); ++i)
    list.push_back({PCI_EXT_CAP_ID_DOE, 1, kDoeCapSize});
  uint16_t off = 0x100;
  for (size_t i = 0; i < list.size(); ++i) {
    uint16_t next =
        i + 1 < list.size() ? static_cast<uint16_t>((off + list[i].size + 3u) & ~3u) : 0;
    b.put(off, 4, list[i].id | (uint32_t{list[i].version} << 16) | (uint32_t{next} << 20));
    if (list[i].id == PCI_EXT_CAP_ID_ERR) caps.aer = off;
    if (list[i].id == PCI_EXT_CAP_ID_DSN) caps.dsn = off;
    if (list[i].id == PCI_EXT_CAP_ID_DOE) caps.doe.push_back(off);
    off = next;
  }
  if (caps.aer != 0) build_aer(b, caps.aer, root);
  if (caps.dsn != 0) b.put(caps.dsn + 4u, 8, *s.caps.dsn);
}

void firmware_bar(std::vector<uint8_t>& bytes, uint32_t reg, const BarSpec& bar) {
  if (bar.kind == BarKind::kNone) return;
  uint32_t flags = get_field(bytes, reg, 4);
  set_field(bytes, reg, 4, flags | (bar.address & 0xffffffffu));
  if (bar.kind == BarKind::kMem64) set_field(bytes, reg + 4, 4, bar.address >> 32);
}

void firmware_windows(std::vector<uint8_t>& bytes, const DeviceSpec& s) {
  set_field(bytes, PCI_PRIMARY_BUS, 1, s.primary_bus);
  set_field(bytes, PCI_SECONDARY_BUS, 1, s.secondary_bus);
  set_field(bytes, PCI_SUBORDINATE_BUS, 1, s.subordinate_bus);
  // A closed window has base above limit (PCI-to-PCI Bridge 1.2 §3.2.5.6).
  auto window = [](const WindowSpec& w, uint64_t closed_base) {
    return w.end == 0 ? WindowSpec{closed_base, 0} : w;
  };
  WindowSpec io = window(s.io_window, 0xf000), mem = window(s.mem_window, 0xfff00000);
  WindowSpec pref = window(s.pref_window, 0xfff00000);
  set_field(bytes, PCI_IO_BASE, 1, ((io.start >> 8) & 0xf0) | PCI_IO_RANGE_TYPE_32);
  set_field(bytes, PCI_IO_LIMIT, 1, ((io.end >> 8) & 0xf0) | PCI_IO_RANGE_TYPE_32);
  set_field(bytes, PCI_IO_BASE_UPPER16, 2, io.start >> 16);
  set_field(bytes, PCI_IO_LIMIT_UPPER16, 2, io.end >> 16);
  set_field(bytes, PCI_MEMORY_BASE, 2, (mem.start >> 16) & 0xfff0);
  set_field(bytes, PCI_MEMORY_LIMIT, 2, (mem.end >> 16) & 0xfff0);
  set_field(bytes, PCI_PREF_MEMORY_BASE, 2, ((pref.start >> 16) & 0xfff0) | PCI_PREF_RANGE_TYPE_64);
  set_field(bytes, PCI_PREF_MEMORY_LIMIT, 2, ((pref.end >> 16) & 0xfff0) | PCI_PREF_RANGE_TYPE_64);
  set_field(bytes, PCI_PREF_BASE_UPPER32, 4, pref.start >> 32);
  set_field(bytes, PCI_PREF_LIMIT_UPPER32, 4, pref.end >> 32);
}

}  // namespace

uint32_t get_field(std::span<const uint8_t> bytes, uint32_t offset, unsigned width) {
  assert(offset + width <= bytes.size() && width <= 4);
  uint32_t v = 0;
  for (unsigned i = 0; i < width; ++i) v |= uint32_t{bytes[offset + i]} << (8 * i);
  return v;
}

void set_field(std::span<uint8_t> bytes, uint32_t offset, unsigned width, uint64_t value) {
  assert(offset + width <= bytes.size() && width <= 8);
  for (unsigned i = 0; i < width; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void masked_write(std::span<uint8_t> bytes, const ConfigModel& model, uint32_t offset,
                  unsigned width, uint32_t value) {
  for (unsigned i = 0; i < width; ++i) {
    uint32_t at = offset + i;
    auto in = static_cast<uint8_t>(value >> (8 * i));
    uint8_t w = model.wmask[at], c = model.w1cmask[at];
    uint8_t kept = static_cast<uint8_t>(bytes[at] & ~w);
    bytes[at] = static_cast<uint8_t>((kept | (in & w)) & ~(in & c));
  }
}

std::shared_ptr<const ConfigModel> build_config_model(const DeviceSpec& spec) {
  Builder b(spec.config_size);
  build_header(b, spec);
  build_standard_caps(b, spec);
  if (spec.config_size > 256) build_extended_caps(b, spec);
  return std::make_shared<const ConfigModel>(std::move(b.model()));
}

std::vector<uint8_t> firmware_config(const DeviceSpec& spec, const ConfigModel& model) {
  std::vector<uint8_t> bytes = model.hw_default;
  bool bridge = spec.header_type == PCI_HEADER_TYPE_BRIDGE;
  for (unsigned i = 0; i < (bridge ? 2u : 6u); ++i) {
    firmware_bar(bytes, PCI_BASE_ADDRESS_0 + 4 * i, spec.bars[i]);
  }
  if (spec.rom.size != 0) {  // assigned, decode left off (as Linux leaves it)
    set_field(bytes, bridge ? PCI_ROM_ADDRESS1 : PCI_ROM_ADDRESS, 4, spec.rom.address);
  }
  if (bridge) firmware_windows(bytes, spec);
  set_field(bytes, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  set_field(bytes, PCI_INTERRUPT_LINE, 1, static_cast<uint64_t>(spec.irq) & 0xff);
  return bytes;
}

}  // namespace pcifs::backend::sim
