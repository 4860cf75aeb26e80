// ConfigModel: the hardware shape of one simulated function's config space,
// in QEMU's form — the bytes as the hardware resets them, and beside every byte
// a writable mask and a write-1-to-clear mask. Built from a DeviceSpec; immutable
// afterwards, so identical functions (a "count" entry) share one model.
//
// Also the small byte helpers the device uses on its live config image: field
// get/set and the masked write that gives RO/RW/RW1C semantics per byte.
//
// Thread safety: a built ConfigModel is immutable and may be read from any
// thread. The free functions touch only what they are given.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "sim/device_spec.hpp"

namespace pcifs::backend::sim {

// Where the capabilities landed (0 = absent).
struct CapOffsets {
  uint16_t pm = 0, msi = 0, msix = 0, pcie = 0;
  uint16_t aer = 0, dsn = 0;
  std::vector<uint16_t> doe;  // one per mailbox, same order as CapsSpec::doe
};

struct ConfigModel {
  std::vector<uint8_t> hw_default;  // bytes after a reset: BARs 0, command 0
  std::vector<uint8_t> wmask;       // 1 = the bit is writable
  std::vector<uint8_t> w1cmask;     // 1 = writing 1 clears the bit
  CapOffsets caps;
};

std::shared_ptr<const ConfigModel> build_config_model(const DeviceSpec& spec);

// The config image firmware leaves at power-on: BARs and ROM BAR assigned,
// bus numbers and windows programmed, decode and bus mastering on.
std::vector<uint8_t> firmware_config(const DeviceSpec& spec, const ConfigModel& model);

// Little-endian field access on a config image; the caller checks bounds.
uint32_t get_field(std::span<const uint8_t> bytes, uint32_t offset, unsigned width);
void set_field(std::span<uint8_t> bytes, uint32_t offset, unsigned width, uint64_t value);

// A config write as hardware applies it, byte by byte: writable bits take the
// new value, RW1C bits written with 1 clear, everything else is kept.
void masked_write(std::span<uint8_t> bytes, const ConfigModel& model, uint32_t offset,
                  unsigned width, uint32_t value);

}  // namespace pcifs::backend::sim
