// Inode numbers of the pcifs tree. Every node's number is computed from what
// it is (node kind, device, file), so there is no inode table to keep, nothing
// to forget, and the revoker can name a device's BAR inodes without a lookup.
//
// Layout of a 64-bit number: [node 8][bdf 32][arg 24]; the root is 1.
//   device files:      arg = FileKind << 16 | index
//   doe_features/V:T:  arg = vendor << 8 | type
//   group nodes:       arg = group number; driver nodes: arg = driver id
// Plain values; thread-safe.
#pragma once

#include <cstdint>
#include <optional>

#include "pcifs/mediator.hpp"
#include "pcifs/types.hpp"

namespace pcifs::fuse {

enum class Node : uint8_t {
  kRoot = 1,
  kDevicesDir,        // devices/
  kDeviceDir,         // devices/BDF/
  kDeviceFile,        // devices/BDF/<file>
  kDoeFeaturesDir,    // devices/BDF/doe_features/
  kDoeFeature,        // devices/BDF/doe_features/VVVV:TT
  kDriverLink,        // devices/BDF/driver
  kIommuLink,         // devices/BDF/iommu_group
  kGroupsDir,         // iommu_groups/
  kGroupDir,          // iommu_groups/N/
  kGroupDevicesDir,   // iommu_groups/N/devices/
  kGroupDeviceLink,   // iommu_groups/N/devices/BDF
  kDriversDir,        // drivers/
  kDriverDir,         // drivers/NAME/
  kDriverDeviceLink,  // drivers/NAME/BDF
  kStatus,            // status
};

struct NodeId {
  Node node = Node::kRoot;
  Bdf bdf;
  uint32_t arg = 0;  // 24 bits, see above

  FileRef file_ref() const;  // kDeviceFile / kDoeFeature only
  static NodeId device_file(const Bdf& bdf, FileKind kind, uint16_t index);
  static NodeId of(const FileRef& ref);
  bool operator==(const NodeId&) const = default;
};

uint64_t encode(const NodeId& id);
std::optional<NodeId> decode(uint64_t ino);

}  // namespace pcifs::fuse
