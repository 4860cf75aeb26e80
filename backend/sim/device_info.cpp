// DeviceInfo for a simulated function, shaped like what Linux shows in sysfs.
#include <linux/pci_regs.h>

#include <cstdio>
#include <string>

#include "sim/sim_device.hpp"

namespace pcifs::backend::sim {
namespace {

// A simulated function hangs under its domain's root bus 00 ("pci0000:00").
std::string fmt_root(uint16_t domain) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "pci%04x:00", domain);
  return buf;
}

// The flags Linux puts on a BAR resource (drivers/pci/probe.c decode_bar and
// __pci_read_base): the BAR's low type bits, IORESOURCE_MEM/IO, PREFETCH,
// MEM_64, and SIZEALIGN.
uint64_t bar_flags(const BarSpec& bar) {
  if (bar.kind == BarKind::kIo) return PCI_BASE_ADDRESS_SPACE_IO | kResourceIo | kResourceSizeAlign;
  uint64_t flags = kResourceMem | kResourceSizeAlign;
  if (bar.prefetchable) flags |= PCI_BASE_ADDRESS_MEM_PREFETCH | kResourcePrefetch;
  if (bar.kind == BarKind::kMem64) flags |= PCI_BASE_ADDRESS_MEM_TYPE_64 | kResourceMem64;
  return flags;
}

Resource range(uint64_t start, uint64_t size, uint64_t flags) {
  if (size == 0) return {};
  return {start, start + size - 1, flags};
}

Resource window(const WindowSpec& w, uint64_t flags) {
  if (w.end == 0) return {};
  return {w.start, w.end, flags};
}

void bridge_windows(const DeviceSpec& s, std::vector<Resource>& out) {
  // drivers/pci/probe.c pci_read_bridge_{io,mmio,mmio_pref}: the window's range
  // type bits plus IORESOURCE_IO / MEM / MEM|PREFETCH|MEM_64.
  out.push_back(window(s.io_window, PCI_IO_RANGE_TYPE_32 | kResourceIo));
  out.push_back(window(s.mem_window, kResourceMem));
  out.push_back(window(s.pref_window,
                       PCI_PREF_RANGE_TYPE_64 | kResourceMem | kResourcePrefetch | kResourceMem64));
  out.push_back({});  // the fourth bridge resource slot, unused on PCIe
}

}  // namespace

DeviceInfo make_device_info(const DeviceSpec& s) {
  DeviceInfo info;
  info.bdf = s.bdf;
  info.vendor = s.vendor;
  info.device = s.device;
  info.subsystem_vendor = s.subsystem_vendor;
  info.subsystem_device = s.subsystem_device;
  info.class_code = s.class_code;
  info.revision = s.revision;
  info.header_type = s.header_type;
  info.irq = s.irq;
  info.numa_node = -1;
  info.pcie_root = fmt_root(s.bdf.domain);
  info.config_size = s.config_size;
  for (const BarSpec& bar : s.bars) {
    info.resources.push_back(
        bar.kind == BarKind::kNone ? Resource{} : range(bar.address, bar.size, bar_flags(bar)));
  }
  // ROM: IORESOURCE_MEM | PREFETCH | READONLY | SIZEALIGN, as in __pci_read_base.
  info.resources.push_back(
      range(s.rom.address, s.rom.size,
            kResourceMem | kResourcePrefetch | kResourceReadonly | kResourceSizeAlign));
  if (s.header_type == PCI_HEADER_TYPE_BRIDGE) bridge_windows(s, info.resources);
  info.driver = s.driver;
  info.iommu_group = s.iommu_group;
  info.removable = true;  // the simulator models hot-remove [S10]
  info.simulated = true;
  return info;
}

}  // namespace pcifs::backend::sim
