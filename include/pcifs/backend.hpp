// The backend interface: raw access to PCI functions, with no policy at all.
//
// A Backend enumerates Devices; a Device performs single hardware accesses. This
// is the "Env" of pcifs: the simulator (backend/sim) is its in-memory twin and the
// reference for every test, backend/sysfs reaches real devices, and
// backend/fault wraps either to inject failures.
//
// Every method here is one thing the hardware does. Mediation (who may do what,
// when, and in which power state) lives in fs/core, never here: a Device will
// happily perform an access that real hardware forbids, and the simulator counts
// such an access as a violation so tests can prove the core never lets one through.
//
// Thread safety: every Device method may be called from any thread, concurrently;
// an implementation serialises internally as the hardware would (one access at a
// time per function). Backend::devices() may be called concurrently with hot-plug.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pcifs/result.hpp"
#include "pcifs/types.hpp"

namespace pcifs::backend {

// Linux IORESOURCE_* flag bits, as they appear in the sysfs `resource` file.
inline constexpr uint64_t kResourceIo = 0x00000100;
inline constexpr uint64_t kResourceMem = 0x00000200;
inline constexpr uint64_t kResourcePrefetch = 0x00002000;
inline constexpr uint64_t kResourceMem64 = 0x00100000;
inline constexpr uint64_t kResourceSizeAlign = 0x00040000;
inline constexpr uint64_t kResourceReadonly = 0x00004000;  // ROM

// One line of the sysfs `resource` file: [start, end] and IORESOURCE flags.
// An unimplemented resource is all zeros.
struct Resource {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t flags = 0;
  uint64_t size() const { return start == 0 && end == 0 ? 0 : end - start + 1; }
  bool is_io() const { return (flags & kResourceIo) != 0; }
  bool is_mem() const { return (flags & kResourceMem) != 0; }
};

// A DOE feature as Linux names it in doe_features/: vendor id and data object type.
struct DoeFeature {
  uint16_t vendor = 0;
  uint8_t type = 0;
  auto operator<=>(const DoeFeature&) const = default;
};

// Static facts about a function, read once at enumeration. Volatile state is
// never cached here.
struct DeviceInfo {
  Bdf bdf;
  uint16_t vendor = 0, device = 0;
  uint16_t subsystem_vendor = 0, subsystem_device = 0;
  uint32_t class_code = 0;  // 24 bits: base, sub, prog-if
  uint8_t revision = 0;
  uint8_t header_type = 0;  // without the multi-function bit: 0 endpoint, 1 bridge
  int irq = 0;
  int numa_node = -1;
  uint32_t config_size = 256;  // 256 or 4096
  // All lines of the sysfs `resource` file: [0..5] BARs, [6] ROM, then bridge
  // windows (bridges) and whatever else the kernel lists. At least 7 entries.
  std::vector<Resource> resources;
  std::optional<std::string> driver;  // bound kernel driver, if any
  std::optional<int> iommu_group;     // none when the platform has no IOMMU
  // The PCI root the function hangs under, as sysfs names it ("pci0000:00",
  // the first component of /sys/devices/pciDDDD:BB/...): Kubernetes's
  // resource.kubernetes.io/pcieRoot. Empty when unknown (a sysfs-shaped tree
  // without the kernel's links). The simulator: its domain's root bus 00.
  std::string pcie_root;
  // doe_features as the kernel lists them (sysfs backend); empty for the sim,
  // whose features pcifs discovers itself.
  std::vector<DoeFeature> kernel_doe_features;
  // The backend can hot-remove this function (the simulator): `remove` is served.
  bool removable = false;
  // A model in this process (the simulator): nothing it does reaches host
  // memory, so DMA-capable settings (Bus Master, MSI addresses) are harmless.
  bool simulated = false;
  bool is_bridge() const { return header_type == 1; }
  bool has_rom() const { return resources.size() > 6 && resources[6].size() != 0; }
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const DeviceInfo& info() const = 0;

  // --- Config space: one access of `width` 1, 2 or 4 bytes at a naturally
  // aligned offset below config_size. Little-endian value in the low bits.
  virtual Result<uint32_t> config_read(uint32_t offset, unsigned width) = 0;
  virtual Result<void> config_write(uint32_t offset, unsigned width, uint32_t value) = 0;
  // Many bytes at once (sysfs: one pread). Default: aligned dword accesses.
  virtual Result<void> config_read_block(uint32_t offset, std::span<uint8_t> out);

  // --- BAR windows: one access of `width` 1, 2, 4 or 8 bytes at a naturally
  // aligned offset inside BAR `bar` (0..5). Bounds are checked by the caller.
  virtual Result<uint64_t> bar_read(unsigned bar, uint64_t offset, unsigned width) = 0;
  virtual Result<void> bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) = 0;
  // A run of accesses of one width at consecutive offsets (offset, offset +
  // width, ...) covering the buffer, whose size is a multiple of width: the
  // same device accesses as that many bar_read/bar_write calls, in one call, so
  // a backend can take its lock once. Returns the bytes done before the first
  // error, or that error when nothing was done. Default: one call per access.
  virtual Result<size_t> bar_read_run(unsigned bar, uint64_t offset, unsigned width,
                                      std::span<uint8_t> out);
  virtual Result<size_t> bar_write_run(unsigned bar, uint64_t offset, unsigned width,
                                       std::span<const uint8_t> in);

  // --- Expansion ROM. rom_enable(true) turns ROM decode on (the ROM BAR enable
  // bit; sysfs: `echo 1 > rom`); rom_read then reads the ROM window. While ROM
  // decode is on, the BARs may share its decoder (PCI 3.0 §6.2.5.2): a BAR
  // access then is illegal. rom_read returns the bytes read (short at the end).
  virtual Result<void> rom_enable(bool on) = 0;
  virtual Result<size_t> rom_read(uint64_t offset, std::span<uint8_t> out) = 0;

  // --- Power, reset, removal: the physical operations. The core drains
  // accesses, saves and restores config state around them.
  // set_power_state: D0 <-> D3hot through PMCSR; D3cold: power removed (sim),
  // not available on every backend (EOPNOTSUPP).
  virtual Result<void> set_power_state(PowerState target) = 0;
  virtual Result<void> reset() = 0;   // function-level reset
  virtual Result<void> remove() = 0;  // hot-remove (sim); EOPNOTSUPP elsewhere

  // Accesses that real hardware forbids, as counted by a model that can tell
  // (the simulator). nullopt for real devices.
  virtual std::optional<uint64_t> violations() const { return std::nullopt; }
  // The reasons of the most recent of them, oldest first (empty for real devices).
  virtual std::vector<std::string> violation_log() const { return {}; }
};

// Hot-plug notification: `added` true for an arrival, false for a departure.
using HotplugFn = std::function<void(const Bdf& bdf, bool added)>;

// One read of a batch: `length` bytes of config at `offset` into `out`.
struct ConfigReadItem {
  Device* device = nullptr;
  uint32_t offset = 0;
  std::span<uint8_t> out;
  Result<void> result;  // filled in by config_read_batch
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string describe() const = 0;  // "sim (embedded default)", "sysfs:/sys/bus/pci"
  // What this backend's devices are, when other processes can reach the same
  // devices through it (sysfs: the canonical root): two backends with the same
  // answer serve the same hardware. nullopt: the devices are this process's
  // own (the simulator).
  virtual std::optional<std::string> shared_root() const { return std::nullopt; }
  // The functions present now, sorted by Bdf.
  virtual std::vector<std::shared_ptr<Device>> devices() = 0;
  // Installs the hot-plug callback; called from any thread, never with a
  // backend lock held. One callback at a time.
  virtual void set_hotplug_callback(HotplugFn fn) = 0;
  // Reads many config ranges at once (sysfs: io_uring). Default: one by one.
  virtual void config_read_batch(std::span<ConfigReadItem> items);
};

inline Result<size_t> Device::bar_read_run(unsigned bar, uint64_t offset, unsigned width,
                                           std::span<uint8_t> out) {
  size_t done = 0;
  for (; done + width <= out.size(); done += width) {
    auto v = bar_read(bar, offset + done, width);
    if (!v) return done ? Result<size_t>(done) : v.error();
    for (unsigned k = 0; k < width; ++k) out[done + k] = static_cast<uint8_t>(*v >> (8 * k));
  }
  return done;
}

inline Result<size_t> Device::bar_write_run(unsigned bar, uint64_t offset, unsigned width,
                                            std::span<const uint8_t> in) {
  size_t done = 0;
  for (; done + width <= in.size(); done += width) {
    uint64_t v = 0;
    for (unsigned k = 0; k < width; ++k) v |= uint64_t{in[done + k]} << (8 * k);
    auto w = bar_write(bar, offset + done, width, v);
    if (!w) return done ? Result<size_t>(done) : w.error();
  }
  return done;
}

inline Result<void> Device::config_read_block(uint32_t offset, std::span<uint8_t> out) {
  // Widest naturally aligned accesses, like the kernel's pci_read_config loop.
  size_t i = 0;
  while (i < out.size()) {
    uint32_t off = offset + static_cast<uint32_t>(i);
    size_t left = out.size() - i;
    unsigned w = (off % 4 == 0 && left >= 4) ? 4 : (off % 2 == 0 && left >= 2) ? 2 : 1;
    auto v = config_read(off, w);
    if (!v) return v.error();
    for (unsigned k = 0; k < w; ++k) out[i + k] = static_cast<uint8_t>(*v >> (8 * k));
    i += w;
  }
  return Ok();
}

inline void Backend::config_read_batch(std::span<ConfigReadItem> items) {
  for (auto& it : items) it.result = it.device->config_read_block(it.offset, it.out);
}

}  // namespace pcifs::backend
