// DMA guard: what keeps a view without allow_dma (view.hpp) from making a real
// device reach host memory through its BARs. Config space is guarded by the
// register table (config_regs.hpp: Bus Master Enable, MSI addresses); this is
// the MSI-X half: the table's Message Address fields live in BAR memory
// (PCIe 6.0 §7.7.2.2), so BAR writes over them are dropped, the rest of the
// write goes through. Pure functions; thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::core {

struct MsixTable {
  unsigned bar = 0;
  uint64_t offset = 0;   // of entry 0 in the BAR
  uint32_t entries = 0;  // 16 bytes each: address lo, address hi, data, vector control
};

// The MSI-X table a config image describes, if it has an MSI-X capability.
std::optional<MsixTable> msix_table_of(std::span<const uint8_t> image);

// The byte ranges of [offset, offset + length) of `bar` that are not Message
// Address bytes of `table`, in order, as (offset, length) pairs, calling `fn`
// for each. Returns true when some bytes were left out.
template <class Fn>
bool for_each_allowed(const MsixTable& table, unsigned bar, uint64_t offset, uint64_t length,
                      Fn&& fn) {
  const uint64_t end = offset + length;
  const uint64_t t_begin = table.offset, t_end = table.offset + uint64_t{16} * table.entries;
  if (bar != table.bar || end <= t_begin || offset >= t_end) {
    fn(offset, length);
    return false;
  }
  bool dropped = false;
  uint64_t at = offset;
  while (at < end) {
    if (at < t_begin || at >= t_end) {  // outside the table: up to its edge
      uint64_t stop = at < t_begin ? std::min(end, t_begin) : end;
      fn(at, stop - at);
      at = stop;
      continue;
    }
    uint64_t entry = t_begin + (at - t_begin) / 16 * 16;
    if (at < entry + 8) {  // Message Address (lo, hi): dropped
      dropped = true;
      at = std::min(end, entry + 8);
      continue;
    }
    uint64_t stop = std::min(end, entry + 16);  // Message Data, Vector Control
    fn(at, stop - at);
    at = stop;
  }
  return dropped;
}

}  // namespace pcifs::core
