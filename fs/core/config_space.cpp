#include "core/config_space.hpp"

#include <linux/pci_regs.h>

#include <algorithm>

namespace pcifs::core {
namespace {

constexpr uint32_t kHeaderBytes = 64;
constexpr uint32_t kVpdHiddenBytes = 6;   // PCI_VPD_ADDR (2) + PCI_VPD_DATA (4)
constexpr uint32_t kDsnSerialOffset = 4;  // PCIe 6.0 §7.9.3: serial after the header
constexpr uint32_t kDsnSerialBytes = 8;

uint32_t low32(uint64_t v) { return static_cast<uint32_t>(v); }
uint32_t width_mask(unsigned width) { return width >= 4 ? 0xffffffffu : (1u << (8 * width)) - 1; }

uint32_t le_value(std::span<const uint8_t> bytes) {
  uint32_t v = 0;
  for (size_t i = 0; i < bytes.size() && i < 4; ++i) v |= uint32_t{bytes[i]} << (8 * i);
  return v;
}

// The widest naturally aligned access at `off` that fits in `left` bytes.
unsigned aligned_width(uint32_t off, size_t left) {
  if (off % 4 == 0 && left >= 4) return 4;
  if (off % 2 == 0 && left >= 2) return 2;
  return 1;
}

}  // namespace

ConfigSpace::ConfigSpace(const backend::DeviceInfo& info, std::span<const uint8_t> image,
                         const RawRead& reread)
    : table_(0), header_type_(info.header_type) {
  uint32_t size = info.config_size >= 4096 ? 4096 : 256;
  std::vector<uint8_t> padded(size, 0);
  std::copy_n(image.begin(), std::min<size_t>(image.size(), size), padded.begin());
  caps_ = walk_capabilities(padded);
  table_ = build_reg_table(padded, size, header_type_, caps_);
  for (const auto& c : caps_) {
    if (!c.extended && c.id == PCI_CAP_ID_PM && !pm_) pm_ = c.offset;
    if (!c.extended && c.id == PCI_CAP_ID_EXP && !pcie_) pcie_ = c.offset;
    if (!c.extended && c.id == PCI_CAP_ID_VPD && !vpd_) vpd_ = c.offset;
    if (c.extended && c.id == PCI_EXT_CAP_ID_DSN && !dsn_) dsn_ = c.offset;
    if (c.extended && c.id == PCI_EXT_CAP_ID_DOE) doe_.push_back(c.offset);
  }
  init_virtual(info, padded);
  if (reread && image.size() >= size) shadow_ = ConfigShadow::build(info, padded, caps_, reread);
}

void ConfigSpace::init_virtual(const backend::DeviceInfo& info, std::span<const uint8_t> image) {
  size_t nbars = header_type_ == PCI_HEADER_TYPE_NORMAL   ? 6
                 : header_type_ == PCI_HEADER_TYPE_BRIDGE ? 2
                                                          : 0;
  auto res = [&](size_t i) {
    return i < info.resources.size() ? info.resources[i] : backend::Resource{};
  };
  for (size_t i = 0; i < nbars; ++i) {
    backend::Resource r = res(i);
    uint64_t size = r.size();
    if (size == 0) continue;
    uint32_t hw = cfg_read(image, slot_offset(i), 4);
    VirtualReg& v = vregs_[i];
    if (r.is_io() || (!r.is_mem() && (hw & PCI_BASE_ADDRESS_SPACE_IO))) {
      v.flags = PCI_BASE_ADDRESS_SPACE_IO;
      v.addr_mask = low32(~(size - 1)) & ~3u;
      v.assigned = low32(r.start) & v.addr_mask;
      continue;
    }
    bool is64 = (r.flags & backend::kResourceMem64) ||
                (hw & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64;
    bool pref = (r.flags & backend::kResourcePrefetch) || (hw & PCI_BASE_ADDRESS_MEM_PREFETCH);
    v.flags =
        (is64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0u) | (pref ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0u);
    v.addr_mask = low32(~(size - 1)) & ~0xfu;
    v.assigned = low32(r.start) & v.addr_mask;
    if (is64 && i + 1 < nbars) {
      VirtualReg& hi = vregs_[++i];
      hi.addr_mask = low32(~(size - 1) >> 32);
      hi.assigned = low32(r.start >> 32) & hi.addr_mask;
    }
  }
  if (nbars != 0 && info.has_rom()) {
    const backend::Resource& r = info.resources[6];
    VirtualReg& v = vregs_[kRomSlot];
    v.addr_mask = low32(~(r.size() - 1)) & PCI_ROM_ADDRESS_MASK;
    v.enable_mask = PCI_ROM_ADDRESS_ENABLE;
    v.assigned = low32(r.start) & v.addr_mask;
  }
  MutexLock l(mu_);
  for (size_t s = 0; s < vregs_.size(); ++s) vvalue_[s] = vregs_[s].assigned;
  if (nbars != 0)
    vvalue_[kRomSlot] |= cfg_read(image, slot_offset(kRomSlot), 4) & vregs_[kRomSlot].enable_mask;
}

uint32_t ConfigSpace::slot_offset(size_t slot) const {
  if (slot == kRomSlot) {
    return header_type_ == PCI_HEADER_TYPE_BRIDGE ? PCI_ROM_ADDRESS1 : PCI_ROM_ADDRESS;
  }
  return PCI_BASE_ADDRESS_0 + static_cast<uint32_t>(4 * slot);
}

std::optional<size_t> ConfigSpace::slot_of(uint32_t offset) const {
  uint32_t bars_end = header_type_ == PCI_HEADER_TYPE_NORMAL   ? PCI_BASE_ADDRESS_5 + 4
                      : header_type_ == PCI_HEADER_TYPE_BRIDGE ? PCI_BASE_ADDRESS_1 + 4
                                                               : PCI_BASE_ADDRESS_0;
  if (offset >= PCI_BASE_ADDRESS_0 && offset < bars_end) return (offset - PCI_BASE_ADDRESS_0) / 4;
  if (bars_end == PCI_BASE_ADDRESS_0) return std::nullopt;  // CardBus: nothing virtual
  uint32_t rom = slot_offset(kRomSlot);
  if (offset >= rom && offset < rom + 4) return kRomSlot;
  return std::nullopt;
}

bool ConfigSpace::is_virtual(uint32_t offset) const { return slot_of(offset).has_value(); }

uint32_t ConfigSpace::virtual_value(size_t slot, bool mask_addresses) const {
  const VirtualReg& r = vregs_[slot];
  uint32_t addr = vvalue_[slot] & r.addr_mask;
  // A sizing pattern reveals only the size, so it shows even when addresses are masked.
  if (mask_addresses && addr != r.addr_mask) addr = 0;
  return addr | r.flags | (vvalue_[slot] & r.enable_mask);
}

bool ConfigSpace::hides_any(uint32_t begin, uint32_t end, const ConfigReadPolicy& p) const {
  auto overlaps = [&](uint32_t lo, uint32_t hi) { return begin < hi && end > lo; };
  if (p.hide_dsn && dsn_ &&
      overlaps(*dsn_ + kDsnSerialOffset, *dsn_ + kDsnSerialOffset + kDsnSerialBytes)) {
    return true;
  }
  const uint32_t vpd_regs = vpd_ ? uint32_t{*vpd_} + PCI_VPD_ADDR : 0;
  return p.hide_vpd && vpd_ && overlaps(vpd_regs, vpd_regs + kVpdHiddenBytes);
}

bool ConfigSpace::is_hidden(uint32_t off, const ConfigReadPolicy& p) const {
  return hides_any(off, off + 1, p);
}

bool ConfigSpace::may_synthesize(uint32_t begin, uint32_t end, const ConfigReadPolicy& p) const {
  // The BAR registers of either header type, and the ROM register.
  const uint32_t rom = slot_offset(kRomSlot);
  return (begin < PCI_BASE_ADDRESS_5 + 4 && end > PCI_BASE_ADDRESS_0) ||
         (begin < rom + 4 && end > rom) || hides_any(begin, end, p);
}

uint8_t ConfigSpace::hidden_or_virtual_byte(uint32_t off, const ConfigReadPolicy& p) const {
  auto slot = slot_of(off);
  if (!slot) return 0;  // hidden
  uint32_t v = virtual_value(*slot, p.mask_addresses);
  return static_cast<uint8_t>(v >> (8 * (off - slot_offset(*slot))));
}

bool ConfigSpace::touches_doe(uint32_t begin, uint32_t end) const {
  for (uint16_t doe : doe_) {
    if (begin < doe + uint32_t{PCI_DOE_READ} + 4 && end > doe + uint32_t{PCI_DOE_CAP}) return true;
  }
  return false;
}

Result<void> ConfigSpace::read_device(uint32_t off, std::span<uint8_t> out,
                                      const RawRead& raw) const {
  uint32_t end = off + static_cast<uint32_t>(out.size());
  if (!touches_doe(off, end)) return raw(off, out);
  // DOE mailbox registers take dword accesses only (PCIe 6.0 §7.9.24): widen
  // the read to whole dwords. Reads of them have no side effects.
  uint32_t first = off & ~3u, last = std::min((end + 3) & ~3u, size());
  std::vector<uint8_t> buf(last - first);
  PCIFS_TRY(raw(first, buf));
  std::copy_n(buf.begin() + (off - first), out.size(), out.begin());
  return Ok();
}

Result<size_t> ConfigSpace::read(uint32_t offset, std::span<uint8_t> out, const ConfigReadPolicy& p,
                                 const RawRead& raw) const {
  uint32_t limit =
      p.scope == ConfigReadPolicy::Scope::kHeader ? std::min(kHeaderBytes, size()) : size();
  if (offset >= limit) return size_t{0};
  size_t n = std::min<size_t>(out.size(), limit - offset);
  out = out.first(n);
  PCIFS_TRY(read_runs(offset, out, p, raw, /*use_shadow=*/true));
  return n;
}

Result<void> ConfigSpace::read_runs(uint32_t offset, std::span<uint8_t> out,
                                    const ConfigReadPolicy& p, const RawRead& raw,
                                    bool use_shadow) const {
  const bool may_synth = may_synthesize(offset, offset + static_cast<uint32_t>(out.size()), p);
  auto synthetic = [&](size_t i) {
    uint32_t off = offset + static_cast<uint32_t>(i);
    return may_synth && (is_virtual(off) || is_hidden(off, p));
  };
  auto shadowed = [&](size_t i) {
    return use_shadow && shadow_.covers(offset + static_cast<uint32_t>(i));
  };
  // Device bytes first, without the lock: a device access may be slow.
  size_t from_device = 0, all_ones = 0;
  for (size_t i = 0; i < out.size();) {
    if (synthetic(i) || shadowed(i)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && !synthetic(j) && !shadowed(j)) ++j;
    auto run = out.subspan(i, j - i);
    PCIFS_TRY(read_device(offset + static_cast<uint32_t>(i), run, raw));
    from_device += run.size();
    all_ones += static_cast<size_t>(std::count(run.begin(), run.end(), uint8_t{0xff}));
    i = j;
  }
  // Nothing but 0xff from the device: it may be gone (or float the bus), and
  // then its old IDs must not show. Read it all from the device instead.
  if (use_shadow && from_device >= 4 && all_ones == from_device)
    return read_runs(offset, out, p, raw, /*use_shadow=*/false);
  bool any_synthetic = false;
  for (size_t i = 0; i < out.size(); ++i) {
    if (synthetic(i)) {
      any_synthetic = true;
    } else if (shadowed(i)) {
      out[i] = shadow_.byte(offset + static_cast<uint32_t>(i));
    }
  }
  // The virtual registers' lock only where a read shows one: every reader of
  // the device would take it otherwise (issue 13: one lock per device that
  // each config read took).
  if (!any_synthetic) return Ok();
  MutexLock l(mu_);
  for (size_t i = 0; i < out.size(); ++i) {
    if (synthetic(i)) out[i] = hidden_or_virtual_byte(offset + static_cast<uint32_t>(i), p);
  }
  return Ok();
}

Result<void> ConfigSpace::plan_register(uint32_t off, std::span<const uint8_t> bytes,
                                        const RawReadReg& raw_reg, bool allow_dma,
                                        WritePlan& plan) const {
  // A piece the device cannot take in one access (3 bytes, or misaligned)
  // becomes naturally aligned sub-accesses.
  for (size_t i = 0; i < bytes.size();) {
    uint32_t o = off + static_cast<uint32_t>(i);
    unsigned w = aligned_width(o, bytes.size() - i);
    uint32_t v = le_value(bytes.subspan(i, w));
    i += w;
    uint32_t writable = table_.writable_bits(o, w);
    const uint32_t dma = allow_dma ? 0 : table_.dma_bits(o, w);
    writable &= ~dma;
    if (writable == 0) {  // nothing the caller may change: no device access
      plan.dma_dropped = plan.dma_dropped || (v & dma) != 0;
      continue;
    }
    uint32_t keep = ~writable & width_mask(w);
    bool covers_command = o <= PCI_COMMAND && PCI_COMMAND < o + w;
    uint32_t cur = 0;
    if (keep != 0 || covers_command) {
      auto r = raw_reg(o, w);
      if (!r) return r.error();
      cur = *r;
    }
    // Kept bits carry the device's value, except RW1C bits, which are written
    // as the caller wrote them (1 clears, 0 leaves alone) -- keep excludes them.
    // DMA-capable bits the caller may not write are written as 0: a write
    // can turn mastering off, never on.
    uint32_t val = (cur & keep & ~dma) | (v & writable);
    if ((v & dma) != 0) plan.dma_dropped = true;
    if (covers_command) {
      unsigned shift = 8 * (PCI_COMMAND - o);
      auto bit = [&](uint32_t x, uint32_t b) { return ((x >> shift) & b) != 0; };
      if (bit(cur, PCI_COMMAND_MEMORY) != bit(val, PCI_COMMAND_MEMORY)) {
        plan.memory_decode = bit(val, PCI_COMMAND_MEMORY);
      }
      if (bit(cur, PCI_COMMAND_IO) != bit(val, PCI_COMMAND_IO))
        plan.io_decode = bit(val, PCI_COMMAND_IO);
    }
    plan.device_writes.push_back({o, w, val});
  }
  return Ok();
}

Result<WritePlan> ConfigSpace::plan_write(uint32_t offset, std::span<const uint8_t> data,
                                          const RawReadReg& raw_reg, bool allow_dma) const {
  WritePlan plan;
  if (offset >= size()) return plan;
  size_t n = std::min<size_t>(data.size(), size() - offset);
  plan.length = n;
  for (size_t i = 0; i < n;) {
    uint32_t off = offset + static_cast<uint32_t>(i);
    auto slot = slot_of(off);
    uint32_t reg_start = slot ? slot_offset(*slot) : table_.reg_at(off).offset;
    unsigned reg_width = slot ? 4 : table_.reg_at(off).width;
    size_t piece = std::min<size_t>(n - i, reg_start + reg_width - off);
    auto bytes = data.subspan(i, piece);
    if (slot) {
      plan.virtual_writes.push_back({off, static_cast<unsigned>(piece), le_value(bytes)});
    } else {
      PCIFS_TRY(plan_register(off, bytes, raw_reg, allow_dma, plan));
    }
    i += piece;
  }
  return plan;
}

Result<size_t> ConfigSpace::apply_plan(const WritePlan& plan, const RawWriteReg& raw_write) {
  {
    MutexLock l(mu_);
    for (const auto& vw : plan.virtual_writes) {
      auto slot = slot_of(vw.offset);
      if (!slot) continue;
      unsigned shift = 8 * (vw.offset - slot_offset(*slot));
      uint32_t m = width_mask(vw.width) << shift;
      uint32_t merged = (vvalue_[*slot] & ~m) | ((vw.value << shift) & m);
      const VirtualReg& r = vregs_[*slot];
      vvalue_[*slot] = merged & (r.addr_mask | r.enable_mask);
    }
  }
  for (const auto& dw : plan.device_writes) PCIFS_TRY(raw_write(dw.offset, dw.width, dw.value));
  return plan.length;
}

void ConfigSpace::reset_virtual() {
  MutexLock l(mu_);
  for (size_t s = 0; s < vregs_.size(); ++s) vvalue_[s] = vregs_[s].assigned;
}

}  // namespace pcifs::core
