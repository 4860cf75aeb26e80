// A ResourceClaim (resource.k8s.io/v1) as the agent prepares it. Pure.
//
// plan_claim checks that the claim is the one the kubelet named (same UID),
// that it is allocated, and that its allocation is for this node (results of
// driver pcifs.io come from the pool named after the node; a nodeSelector, if
// any, names the node), and collects:
//   - the pcifs.io devices allocated (request, pool, device);
//   - the view policy: the opaque configs for driver pcifs.io that apply to
//     those requests, merged in the allocation's order (class configs, then
//     the claim's: a later field wins). Their parameters are a ViewPolicy:
//       {"apiVersion": "pcifs.io/v1", "kind": "ViewPolicy",   (both optional)
//        "config_read", "config_write", "bar_access", "doe_protocols",
//        "mask_addresses", "hide", "low_power_access", "uid", "gid"}
//     with the types of SPEC S6. Anything else is refused with the field
//     named: "devices", "name" and "mountpoint" are the agent's to set, and
//     "allow_dma"/"share_iommu_group" are grants only the node's root gives
//     (a claim's author is any user of a namespace).
// Errors are sentences for the pod's events, naming the claim and the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kube/dra_handler.hpp"
#include "pcifs/result.hpp"

namespace pcifs::kube {

struct AllocatedDevice {
  std::string request;
  std::string pool;
  std::string device;
};

struct ClaimPlan {
  std::vector<AllocatedDevice> devices;              // of driver pcifs.io, in allocation order
  nlohmann::json policy = nlohmann::json::object();  // S6 fields only
};

Result<ClaimPlan> plan_claim(const nlohmann::json& claim, const ClaimRef& ref,
                             const std::string& node, std::string* error);

// Checks one opaque config's parameters and merges their fields into
// *policy. `where` names the config in errors.
Result<void> merge_policy(const nlohmann::json& parameters, const std::string& where,
                          nlohmann::json* policy, std::string* error);

// The runtime view for a claim: "k8s-<uid>" (pcifs view names and CDI device
// names allow it: lower-case hex and '-').
std::string view_name_for(const std::string& claim_uid);

}  // namespace pcifs::kube
