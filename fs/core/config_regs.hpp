// The per-byte write permission table of one function's config space.
//
// Like QEMU's wmask/w1cmask and vfio-pci's per-capability permission tables:
// for every config byte, which bits a caller may write through to the device
// (wmask) and which are write-1-to-clear (w1cmask). Everything else is
// read-only to callers -- either read-only in hardware, or writable in hardware
// but reserved to pcifs (PMCSR PowerState, Initiate FLR, bridge windows, DOE).
// The table also records register boundaries, so that a caller's write becomes
// one device write per register, never one that spills into a neighbour.
//
// Registers never cross a dword boundary (true of every register pcifs makes
// writable). The BARs and ROM BAR are not in this table: they are virtual and
// live in ConfigSpace.
//
// It also marks the bits that let the function reach host memory: Bus Master
// Enable and the MSI message address. pcifs attaches no IOMMU domain, so on a
// real device these are written only for a view that allows DMA (view.hpp).
//
// A RegTable is built once at attach and is immutable afterwards: all const
// methods are thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/cap_walk.hpp"

namespace pcifs::core {

// A register: its first byte and its width (1, 2 or 4).
struct RegSpan {
  uint32_t offset = 0;
  unsigned width = 0;
};

class RegTable {
 public:
  // A table of `size` bytes, every dword a 4-byte read-only register.
  explicit RegTable(uint32_t size);

  // Declares the register at [offset, offset + width) with its writable and
  // RW1C bits (little-endian within the register). width 1, 2 or 4, naturally
  // aligned, inside the table; anything else is ignored (an invariant of the
  // builder, asserted in debug builds). Bytes of the enclosing dword that were
  // part of a wider register become 1-byte registers.
  void define(uint32_t offset, unsigned width, uint32_t wmask, uint32_t w1cmask);

  uint32_t size() const { return static_cast<uint32_t>(wmask_.size()); }
  uint8_t wmask(uint32_t offset) const { return offset < size() ? wmask_[offset] : 0; }
  uint8_t w1cmask(uint32_t offset) const { return offset < size() ? w1c_[offset] : 0; }
  // The register holding byte `offset` (which must be < size()).
  RegSpan reg_at(uint32_t offset) const;
  // Mask of writable (RW or RW1C) bits of `width` bytes at `offset`.
  uint32_t writable_bits(uint32_t offset, unsigned width) const;
  // Marks writable bits as DMA-capable (above).
  void mark_dma(uint32_t offset, unsigned width, uint32_t mask);
  // Mask of the DMA-capable bits of `width` bytes at `offset`.
  uint32_t dma_bits(uint32_t offset, unsigned width) const;

 private:
  std::vector<uint8_t> wmask_;
  std::vector<uint8_t> w1c_;
  std::vector<uint8_t> dma_;
  // Per byte: (register start within its dword << 4) | register width.
  std::vector<uint8_t> layout_;
};

// Builds the table for a function from its config image (read at attach) and
// the capabilities found in it. `header_type` is 0 (endpoint) or 1 (bridge);
// the table covers `config_size` bytes (256 or 4096).
RegTable build_reg_table(std::span<const uint8_t> image, uint32_t config_size, uint8_t header_type,
                         const std::vector<CapInfo>& caps);

}  // namespace pcifs::core
