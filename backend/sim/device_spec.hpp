// DeviceSpec: the validated description of one simulated PCI function, as the
// device-set loader (sim/device_set.hpp) produces it and SimDevice consumes it.
//
// Plain values with no behaviour: everything the hardware model needs to build
// its config space, BARs, ROM and DOE mailboxes. Thread safety: none needed
// (built once, then copied or read only).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pcifs/types.hpp"
#include "sim/doe_responder.hpp"

namespace pcifs::backend::sim {

enum class BarKind : uint8_t { kNone, kMem32, kMem64, kIo };

struct BarSpec {
  BarKind kind = BarKind::kNone;  // a 64-bit BAR also occupies the next index
  bool prefetchable = false;
  uint64_t size = 0;     // power of two
  uint64_t address = 0;  // what firmware assigned (power-on value)
};

struct RomImageSpec {
  uint32_t size = 0;      // bytes, multiple of 512
  uint8_t code_type = 0;  // PCI Firmware 3.0 §5.1.3: 0 x86, 3 EFI
};

struct RomSpec {
  uint64_t size = 0;  // the ROM BAR's size; 0 = no ROM
  uint64_t address = 0;
  std::vector<RomImageSpec> images;
};

struct WindowSpec {  // a bridge window as firmware programmed it; end 0 = closed
  uint64_t start = 0;
  uint64_t end = 0;
};

enum class PortType : uint8_t { kEndpoint, kRootPort };

struct CapsSpec {
  bool pm = false;
  bool no_soft_reset = false;
  bool msi = false;
  bool msix = false;
  uint16_t msix_vectors = 8;
  uint8_t msix_bar = 0;
  uint32_t msix_table_offset = 0x2000;
  uint32_t msix_pba_offset = 0x3000;
  bool pcie = false;
  PortType port_type = PortType::kEndpoint;
  bool flr = true;  // endpoints advertise FLR in DevCap
  bool aer = false;
  std::optional<uint64_t> dsn;
  std::vector<DoeResponderConfig> doe;  // one entry per DOE mailbox, in config order
};

struct DeviceSpec {
  Bdf bdf;
  uint16_t vendor = 0x1b36, device = 0;
  uint16_t subsystem_vendor = 0, subsystem_device = 0;
  uint32_t class_code = 0;
  uint8_t revision = 0;
  uint8_t header_type = 0;  // 0 endpoint, 1 bridge
  bool multifunction = false;
  uint32_t config_size = 256;
  int irq = 0;
  std::optional<int> iommu_group;
  std::optional<std::string> driver;
  std::array<BarSpec, 6> bars{};  // type 1 headers use only bars[0..1]
  RomSpec rom;
  // Type 1 only.
  uint8_t primary_bus = 0, secondary_bus = 0, subordinate_bus = 0;
  WindowSpec io_window, mem_window, pref_window;
  CapsSpec caps;
  // The power state the function is in when the simulator creates it (at
  // start, and so again after a daemon restart): as if the host had put it
  // there before pcifs came. D0 or D3hot (which needs caps.pm).
  PowerState power_state = PowerState::kD0;
  // Test-only gate: while this file exists, reset(), set_power_state() and
  // rom_read() wait (no device lock held) before doing anything; on entering
  // the wait they create "<stall_file>.entered". Empty: no gate.
  std::string stall_file;
};

}  // namespace pcifs::backend::sim
