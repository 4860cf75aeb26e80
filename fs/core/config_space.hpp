// Config-space mediation for one function [S4]: what a view reads, and what a
// caller's write becomes on the device.
//
// One ConfigSpace per device, built by the Mediator at attach from the
// DeviceInfo and a config image it read and verified then. It owns:
//  - the write permission table (core/config_regs.hpp), immutable after
//    construction;
//  - the virtual BAR and ROM BAR registers, which read like hardware (sizing
//    with all-ones works) but are never written to the device. Guarded by mu_.
// It never touches the device itself: every device access goes through the
// callbacks the Mediator passes in (the device behind the power gate, or the
// D3cold snapshot), so the Mediator decides when and whether the device is
// reached.
//
// Writes are two-phase: plan_write() computes the device writes, the virtual
// register updates and the side effects (memory / I/O decode changes) the
// Mediator must act on -- quiesce BARs when decode goes off [S12] -- before
// apply_plan() performs them.
//
// Thread safety: every method is thread-safe. Concurrent plan/apply pairs on
// one device are the Mediator's to serialise (the claim holder writes).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "core/cap_walk.hpp"
#include "core/config_regs.hpp"
#include "core/config_shadow.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

// Reads bytes of the device's config (or its snapshot) into the span.
using RawRead = std::function<Result<void>(uint32_t off, std::span<uint8_t>)>;
// One naturally aligned register read / write of width 1, 2 or 4.
using RawReadReg = std::function<Result<uint32_t>(uint32_t off, unsigned width)>;
using RawWriteReg = std::function<Result<void>(uint32_t off, unsigned width, uint32_t value)>;

struct ConfigReadPolicy {
  enum class Scope { kFull, kHeader };
  Scope scope = Scope::kFull;   // kHeader: the first 64 bytes only, as for non-root on sysfs
  bool mask_addresses = false;  // BAR / ROM BAR addresses read as 0 (flag bits stay)
  bool hide_dsn = false;        // DSN serial number dwords read as 0
  bool hide_vpd = false;        // VPD address / data registers read as 0
};

// One register access: naturally aligned, width 1, 2 or 4, value little-endian.
struct RegWrite {
  uint32_t offset = 0;
  unsigned width = 0;
  uint32_t value = 0;
  friend bool operator==(const RegWrite&, const RegWrite&) = default;
};

struct WritePlan {
  std::vector<RegWrite> device_writes;   // in ascending offset order
  std::vector<RegWrite> virtual_writes;  // raw bytes for the virtual BAR registers
  // Set when the write changes Memory / I/O Space Enable: the new value. The
  // Mediator quiesces BAR access before a change to false, before apply_plan.
  std::optional<bool> memory_decode;
  std::optional<bool> io_decode;
  // Without allow_dma: the caller tried to set a DMA-capable bit (Bus Master
  // Enable, an MSI address). Such bits in a register that is written anyway
  // are written as 0 (Bus Master goes off); a register of nothing else (an
  // MSI address) is not written at all.
  bool dma_dropped = false;
  size_t length = 0;  // bytes of the caller's write accepted (short only at the end)
};

class ConfigSpace {
 public:
  // `image` is the config read at attach (config_size bytes; shorter images
  // are treated as zero-filled). Virtual BARs start at the assigned addresses.
  // With `reread` (the device's config, read again), the registers that cannot
  // change are verified and then served from the shadow (core/config_shadow.hpp).
  ConfigSpace(const backend::DeviceInfo& info, std::span<const uint8_t> image,
              const RawRead& reread = nullptr);
  ConfigSpace(const ConfigSpace&) = delete;
  ConfigSpace& operator=(const ConfigSpace&) = delete;

  // Reads up to out.size() bytes at `offset` as the view sees them. Returns the
  // bytes produced: short only at the end of the (policy-scoped) space. Only the
  // non-virtual, non-hidden bytes are read through `raw`.
  Result<size_t> read(uint32_t offset, std::span<uint8_t> out, const ConfigReadPolicy& p,
                      const RawRead& raw) const EXCLUDES(mu_);

  // Plans a caller's write of `data` at `offset`. Reads current device values
  // through `raw_reg` only for registers that mix writable and read-only bits,
  // and for the command register (to detect decode changes). Without
  // `allow_dma`, the DMA-capable bits (config_regs.hpp) are read-only.
  Result<WritePlan> plan_write(uint32_t offset, std::span<const uint8_t> data,
                               const RawReadReg& raw_reg, bool allow_dma = true) const;
  // Updates the virtual registers, then performs the device writes in order;
  // stops at the first failed device write. Returns plan.length.
  Result<size_t> apply_plan(const WritePlan& plan, const RawWriteReg& raw_write) EXCLUDES(mu_);

  // After a function reset: the virtual BARs hold the assigned addresses again
  // and the virtual ROM enable is off (its hardware default).
  void reset_virtual() EXCLUDES(mu_);

  // Layout, from the image at attach.
  uint32_t size() const { return table_.size(); }
  std::optional<uint16_t> pm_offset() const { return pm_; }
  std::optional<uint16_t> pcie_offset() const { return pcie_; }
  const std::vector<uint16_t>& doe_offsets() const { return doe_; }
  const std::vector<CapInfo>& caps() const { return caps_; }
  const RegTable& table() const { return table_; }

  // True for the bytes of the virtual BAR / ROM BAR registers.
  bool is_virtual(uint32_t offset) const;
  const ConfigShadow& shadow() const { return shadow_; }

 private:
  // One virtual 32-bit BAR register (a 64-bit BAR is two of them).
  struct VirtualReg {
    uint32_t addr_mask = 0;    // writable address bits; 0: unimplemented
    uint32_t flags = 0;        // read-only low bits as the hardware has them
    uint32_t assigned = 0;     // address bits after reset_virtual
    uint32_t enable_mask = 0;  // ROM: the enable bit, writable
  };
  static constexpr size_t kRomSlot = 6;

  void init_virtual(const backend::DeviceInfo& info, std::span<const uint8_t> image);
  uint32_t bar_base() const { return 0x10; }
  std::optional<size_t> slot_of(uint32_t offset) const;
  uint32_t slot_offset(size_t slot) const;
  uint32_t virtual_value(size_t slot, bool mask_addresses) const REQUIRES(mu_);
  uint8_t hidden_or_virtual_byte(uint32_t off, const ConfigReadPolicy& p) const REQUIRES(mu_);
  bool is_hidden(uint32_t off, const ConfigReadPolicy& p) const;
  // Whether the policy hides a byte of [begin, end) (DSN serial, VPD).
  bool hides_any(uint32_t begin, uint32_t end, const ConfigReadPolicy& p) const;
  // Whether [begin, end) may hold a virtual or a hidden byte: false lets a
  // read skip the per-byte checks.
  bool may_synthesize(uint32_t begin, uint32_t end, const ConfigReadPolicy& p) const;
  bool touches_doe(uint32_t begin, uint32_t end) const;
  Result<void> read_device(uint32_t off, std::span<uint8_t> out, const RawRead& raw) const;
  Result<void> read_runs(uint32_t offset, std::span<uint8_t> out, const ConfigReadPolicy& p,
                         const RawRead& raw, bool use_shadow) const;
  Result<void> plan_register(uint32_t off, std::span<const uint8_t> bytes,
                             const RawReadReg& raw_reg, bool allow_dma, WritePlan& plan) const;

  RegTable table_;
  std::vector<CapInfo> caps_;
  std::optional<uint16_t> pm_, pcie_, dsn_, vpd_;
  std::vector<uint16_t> doe_;
  uint8_t header_type_ = 0;
  std::array<VirtualReg, 7> vregs_{};  // immutable after construction
  ConfigShadow shadow_;                // immutable after construction
  mutable Mutex mu_{
      "ConfigSpace::mu_"};  // lock order: leaf, under write_mu (fs/core/mediator_state.hpp)
  std::array<uint32_t, 7> vvalue_ GUARDED_BY(mu_){};  // current address (+ROM enable) bits
};

}  // namespace pcifs::core
