// What the DRA gRPC service (plugin_server.hpp) asks of the driver: prepare
// and unprepare the claims of one kubelet call. The server translates the
// kubelet's protobuf messages (fs/kube/proto/dra_v1.proto) to and from these
// plain values; the driver (driver.hpp) implements DraHandler. Keeping the
// protobuf types out of this interface keeps the driver testable without gRPC.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace pcifs::kube {

// The DRA driver's name: its kubelet plugin, ResourceSlices, CDI vendor.
inline constexpr const char* kDriverName = "pcifs.io";

// A claim as the kubelet names it (v1 Claim: namespace, UID, name).
struct ClaimRef {
  std::string ns;
  std::string uid;
  std::string name;
};

// One allocated device as prepared (v1 Device).
struct PreparedDevice {
  std::vector<std::string> request_names;
  std::string pool;
  std::string device;
  std::vector<std::string> cdi_device_ids;
};

// The outcome for one claim: devices, or an error sentence (non-empty: failed;
// the kubelet retries and shows it in the pod's events).
struct PrepareResult {
  std::vector<PreparedDevice> devices;
  std::string error;
};

class DraHandler {
 public:
  virtual ~DraHandler() = default;
  // One NodePrepareResources call: the claims of one pod for this driver.
  // Returns a result for every claim, keyed by claim UID. Never throws.
  virtual std::map<std::string, PrepareResult> prepare(const std::vector<ClaimRef>& claims) = 0;
  // One NodeUnprepareResources call: UID -> error ("" when done). Never throws.
  virtual std::map<std::string, std::string> unprepare(const std::vector<ClaimRef>& claims) = 0;
};

}  // namespace pcifs::kube
