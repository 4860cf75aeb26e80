#include "core/cap_walk.hpp"

#include <linux/pci_regs.h>

#include <algorithm>

namespace pcifs::core {
namespace {

constexpr int kMaxStdHops = 48;   // (256 - 64) / 4, as the kernel's PCI_FIND_CAP_TTL
constexpr int kMaxExtHops = 960;  // (4096 - 256) / 4

// Sizes the spec fixes, so that the last capability does not extend to the end.
uint16_t known_length(uint16_t id, bool extended, std::span<const uint8_t> cfg, uint16_t off) {
  if (!extended) {
    switch (id) {
      case PCI_CAP_ID_PM: return PCI_PM_SIZEOF;
      case PCI_CAP_ID_MSIX: return PCI_CAP_MSIX_SIZEOF;
      case PCI_CAP_ID_EXP: return PCI_CAP_EXP_ENDPOINT_SIZEOF_V2;
      case PCI_CAP_ID_MSI: {
        uint32_t flags = cfg_read(cfg, off + PCI_MSI_FLAGS, 2);
        uint16_t len = (flags & PCI_MSI_FLAGS_64BIT) ? 14 : 10;
        if (flags & PCI_MSI_FLAGS_MASKBIT) len = static_cast<uint16_t>(len + 10);
        return len;
      }
      default: return 0;
    }
  }
  switch (id) {
    case PCI_EXT_CAP_ID_ERR: return PCI_ERR_ROOT_ERR_SRC + 4;
    case PCI_EXT_CAP_ID_DSN: return PCI_EXT_CAP_DSN_SIZEOF;
    case PCI_EXT_CAP_ID_DOE: return PCI_DOE_READ + 4;
    default: return 0;
  }
}

void fill_lengths(std::vector<CapInfo>& caps, std::span<const uint8_t> cfg, bool extended,
                  uint32_t end) {
  std::vector<uint16_t> starts;
  starts.reserve(caps.size());
  for (const auto& c : caps) starts.push_back(c.offset);
  std::sort(starts.begin(), starts.end());
  for (auto& c : caps) {
    auto next = std::upper_bound(starts.begin(), starts.end(), c.offset);
    uint32_t limit = next == starts.end() ? end : *next;
    uint16_t known = known_length(c.id, extended, cfg, c.offset);
    uint32_t len = known ? std::min<uint32_t>(known, limit - c.offset) : limit - c.offset;
    c.length = static_cast<uint16_t>(len);
  }
}

}  // namespace

uint32_t cfg_read(std::span<const uint8_t> config, uint32_t offset, unsigned width) {
  uint32_t v = 0;
  for (unsigned i = 0; i < width; ++i) {
    if (offset + i < config.size()) v |= static_cast<uint32_t>(config[offset + i]) << (8 * i);
  }
  return v;
}

std::vector<CapInfo> walk_capabilities(std::span<const uint8_t> cfg) {
  std::vector<CapInfo> std_caps, ext_caps;
  if (cfg.size() >= 64 && (cfg_read(cfg, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST)) {
    uint8_t hdr = cfg[PCI_HEADER_TYPE] & 0x7f;
    uint32_t pos = cfg_read(
        cfg, hdr == PCI_HEADER_TYPE_CARDBUS ? PCI_CB_CAPABILITY_LIST : PCI_CAPABILITY_LIST, 1);
    for (int ttl = kMaxStdHops; ttl > 0 && pos >= 0x40 && pos < 0x100; --ttl) {
      pos &= ~3u;
      uint8_t id = cfg[pos];
      if (id == 0xff) break;
      std_caps.push_back({id, static_cast<uint16_t>(pos), 0, false, 0});
      pos = cfg[pos + 1];
    }
    fill_lengths(std_caps, cfg, false, 0x100);
  }
  if (cfg.size() >= 4096) {
    uint32_t pos = PCI_CFG_SPACE_SIZE;
    for (int ttl = kMaxExtHops; ttl > 0 && pos >= PCI_CFG_SPACE_SIZE && pos < 4096; --ttl) {
      uint32_t header = cfg_read(cfg, pos, 4);
      if (header == 0 || header == 0xffffffff) break;
      ext_caps.push_back({static_cast<uint16_t>(PCI_EXT_CAP_ID(header)), static_cast<uint16_t>(pos),
                          0, true, static_cast<uint8_t>(PCI_EXT_CAP_VER(header))});
      pos = PCI_EXT_CAP_NEXT(header);
    }
    fill_lengths(ext_caps, cfg, true, 4096);
  }
  std_caps.insert(std_caps.end(), ext_caps.begin(), ext_caps.end());
  return std_caps;
}

std::optional<CapInfo> find_capability(std::span<const uint8_t> cfg, uint16_t id, bool extended) {
  for (const auto& c : walk_capabilities(cfg)) {
    if (c.id == id && c.extended == extended) return c;
  }
  return std::nullopt;
}

std::vector<CapInfo> find_all_extended(std::span<const uint8_t> cfg, uint16_t id) {
  std::vector<CapInfo> out;
  for (const auto& c : walk_capabilities(cfg)) {
    if (c.extended && c.id == id) out.push_back(c);
  }
  return out;
}

}  // namespace pcifs::core
