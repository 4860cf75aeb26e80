#include "sim/bar_memory.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace pcifs::backend::sim {
namespace {

uint64_t width_mask(unsigned width) {
  return width >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * width)) - 1;
}

}  // namespace

BarMemory::BarMemory(uint64_t size) : size_(size) {}

void BarMemory::count(unsigned width) {
  // width is 1, 2, 4 or 8: its log2 indexes the counters.
  ++access_counts_[static_cast<size_t>(std::countr_zero(width))];
}

uint64_t BarMemory::peek_slot(uint64_t slot) const {
  switch (slot * 8) {
    case kRegScratch0: return scratch_[0];
    case kRegScratch1: return scratch_[1];
    case kRegEventCount: return event_count_;
    case kRegAccessCountW1: return access_counts_[0];
    case kRegAccessCountW2: return access_counts_[1];
    case kRegAccessCountW4: return access_counts_[2];
    case kRegAccessCountW8: return access_counts_[3];
    case kRegId: return kIdValue;
    default: return 0;  // DOORBELL reads 0
  }
}

uint64_t BarMemory::read_slot(uint64_t slot) {
  uint64_t v = peek_slot(slot);
  if (slot * 8 == kRegEventCount) event_count_ = 0;  // read-to-clear
  return v;
}

void BarMemory::write_slot(uint64_t slot, uint64_t merged, bool doorbell) {
  uint64_t reg = slot * 8;
  if (reg == kRegScratch0 || reg == kRegScratch1) {
    scratch_[slot] = merged;
  } else if (doorbell) {
    ++event_count_;
  } else if (reg >= kRegAccessCountW1 && reg <= kRegAccessCountW8) {
    access_counts_.fill(0);
  }
  // EVENT_COUNT and ID ignore writes.
}

uint64_t BarMemory::read(uint64_t offset, unsigned width) {
  count(width);
  if (!in_registers(offset)) return ram_read(offset, width);
  unsigned shift = static_cast<unsigned>(offset % 8) * 8;
  return (read_slot(offset / 8) >> shift) & width_mask(width);
}

void BarMemory::write(uint64_t offset, unsigned width, uint64_t value) {
  count(width);
  if (!in_registers(offset)) return ram_write(offset, width, value);
  uint64_t slot = offset / 8;
  unsigned shift = static_cast<unsigned>(offset % 8) * 8;
  uint64_t mask = width_mask(width) << shift;
  uint64_t merged = (peek_slot(slot) & ~mask) | ((value << shift) & mask);
  write_slot(slot, merged, slot * 8 == kRegDoorbell);
}

void BarMemory::read_run(uint64_t offset, unsigned width, size_t count, uint8_t* out) {
  size_t i = 0;
  for (; i < count && in_registers(offset + i * width); ++i) {
    const uint64_t v = read(offset + i * width, width);
    for (unsigned k = 0; k < width; ++k) out[i * width + k] = static_cast<uint8_t>(v >> (8 * k));
  }
  if (i == count) return;
  access_counts_[static_cast<size_t>(std::countr_zero(width))] += count - i;
  uint64_t off = offset + i * width;
  uint8_t* dst = out + i * width;
  size_t left = (count - i) * width;
  while (left > 0) {
    const size_t n = std::min<size_t>(left, kPage - off % kPage);
    auto it = pages_.find(off / kPage);
    if (it == pages_.end()) {
      std::memset(dst, 0, n);
    } else {
      std::memcpy(dst, it->second->data() + off % kPage, n);
    }
    off += n;
    dst += n;
    left -= n;
  }
}

void BarMemory::write_run(uint64_t offset, unsigned width, size_t count, const uint8_t* in) {
  size_t i = 0;
  for (; i < count && in_registers(offset + i * width); ++i) {
    uint64_t v = 0;
    for (unsigned k = 0; k < width; ++k) v |= uint64_t{in[i * width + k]} << (8 * k);
    write(offset + i * width, width, v);
  }
  if (i == count) return;
  access_counts_[static_cast<size_t>(std::countr_zero(width))] += count - i;
  uint64_t off = offset + i * width;
  const uint8_t* src = in + i * width;
  size_t left = (count - i) * width;
  while (left > 0) {
    const size_t n = std::min<size_t>(left, kPage - off % kPage);
    auto& page = pages_[off / kPage];
    if (!page) page = std::make_unique<std::array<uint8_t, kPage>>();  // zero-filled
    std::memcpy(page->data() + off % kPage, src, n);
    off += n;
    src += n;
    left -= n;
  }
}

uint64_t BarMemory::ram_read(uint64_t offset, unsigned width) const {
  auto it = pages_.find(offset / kPage);
  if (it == pages_.end()) return 0;
  uint64_t v = 0;
  for (unsigned i = 0; i < width; ++i) v |= uint64_t{(*it->second)[offset % kPage + i]} << (8 * i);
  return v;
}

void BarMemory::ram_write(uint64_t offset, unsigned width, uint64_t value) {
  auto& page = pages_[offset / kPage];
  if (!page) page = std::make_unique<std::array<uint8_t, kPage>>();  // zero-filled
  for (unsigned i = 0; i < width; ++i) {
    (*page)[offset % kPage + i] = static_cast<uint8_t>(value >> (8 * i));
  }
}

void BarMemory::reset_registers() {
  scratch_[0] = scratch_[1] = 0;
  event_count_ = 0;
  access_counts_.fill(0);
}

void BarMemory::power_loss() {
  reset_registers();
  pages_.clear();
}

}  // namespace pcifs::backend::sim
