// The node's devices as the scheduler must see them [S16]. Pure: the host
// daemon's `devices` answer in, DRA devices and ResourceSlices out.
//
// One DRA device per IOMMU group: a function alone in its group is one device
// (named pci-DDDD-BB-DD-F after its BDF); a group with several endpoints is
// ONE device (iommu-group-N) holding all of them, so the scheduler can never
// split a group between pods. Bridges are never devices and never make a
// group "several" (exempt, as S11). A function with no IOMMU group is alone.
//
// Health: a device is "healthy" when every endpoint's pcifs health is "ok" or
// "low-power" (a device in D3 is usable: pcifs wakes it or the view refuses);
// otherwise "unhealthy" (bound to a kernel driver, served by another daemon,
// unresponsive, removed, dead DOE mailbox), with the reason in healthDetail.
// Unhealthy devices are published (the scheduler shows why) and never
// prepared; the DeviceClass in tools/kubernetes selects healthy ones only.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kube/dra_handler.hpp"
#include "pcifs/result.hpp"

namespace pcifs::kube {

// resource.k8s.io/v1 ResourceSliceMaxDevices.
inline constexpr size_t kMaxDevicesPerSlice = 128;

// One PCI function as the host daemon describes it (control `devices`).
struct HostFunction {
  std::string bdf;             // "0000:01:00.0"
  std::string vendor, device;  // "10de" (4 lower-case hex digits)
  std::string cls;             // "030200" (6 lower-case hex digits)
  bool bridge = false;
  std::optional<int> iommu_group;
  std::optional<int> numa_node;
  std::optional<std::string> driver;  // bound kernel driver
  std::string pcie_root;              // "pci0000:00"; empty when unknown
  std::string health;                 // pcifs's: "ok", "bound:nvidia", ...
};

// The `devices` response ({"ok":true,"devices":[...]}). Errors name the
// entry and field.
Result<std::vector<HostFunction>> parse_host_devices(const nlohmann::json& response,
                                                     std::string* error);

// clang-tidy 14 sees nlohmann::json's noexcept move through its assertions as
// a possible throw in the implicit move constructor (a false positive).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct DraDevice {
  std::string name;               // DNS label: pci-0000-01-00-0 or iommu-group-7
  std::vector<std::string> bdfs;  // its endpoints, sorted
  bool healthy = true;
  std::string health_detail;  // "ok", or the first unhealthy endpoint's "BDF: health"
  nlohmann::json attributes;  // resource.k8s.io/v1 DeviceAttribute map
};

// Every DRA device of the node, sorted by name.
std::vector<DraDevice> dra_devices(const std::vector<HostFunction>& functions);

// What a device is called in a pool: name -> device.
std::map<std::string, DraDevice> by_name(const std::vector<DraDevice>& devices);

// The node's pool as ResourceSlices (resource.k8s.io/v1): pool name = node
// name, at most kMaxDevicesPerSlice devices each, named NODE-pcifs.io-I, all
// with `generation` and the pool's slice count. At least one slice (empty
// devices) so that the pool exists even on a node without devices.
std::vector<nlohmann::json> resource_slices(const std::string& node, int64_t generation,
                                            const std::vector<DraDevice>& devices);

// The devices part of a slice set, for "did anything change?" comparisons.
nlohmann::json slice_devices(const std::vector<nlohmann::json>& slices);

}  // namespace pcifs::kube
