// Claims (claim.hpp).
#include "kube/claim.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/view_policy.hpp"
#include "kube/inventory.hpp"

namespace pcifs::kube {

using nlohmann::json;

namespace {

Errno fail(std::string* error, const std::string& text, int e = EINVAL) {
  if (error != nullptr) *error = text;
  return Errno(e);
}

const char* const kPolicyFields[] = {
    "config_read",      "config_write", "bar_access", "doe_protocols", "mask_addresses", "hide",
    "low_power_access", "uid",          "gid"};

bool is_policy_field(const std::string& k) {
  return std::any_of(std::begin(kPolicyFields), std::end(kPolicyFields),
                     [&](const char* f) { return k == f; });
}

// A nodeSelector that names nodes by metadata.name must name this one; one
// that selects by labels only is the scheduler's business (it chose us).
bool selector_allows(const json& selector, const std::string& node) {
  if (!selector.is_object()) return true;
  const json terms = selector.value("nodeSelectorTerms", json::array());
  if (!terms.is_array() || terms.empty()) return true;
  for (const auto& t : terms) {
    bool named_other = false;
    for (const auto& f : t.value("matchFields", json::array())) {
      if (f.value("key", "") != "metadata.name" || f.value("operator", "") != "In") continue;
      const json values = f.value("values", json::array());
      if (std::find(values.begin(), values.end(), json(node)) == values.end()) named_other = true;
    }
    if (!named_other) return true;  // a term this node can satisfy
  }
  return false;
}

std::string parent_request(const std::string& r) { return r.substr(0, r.find('/')); }

}  // namespace

std::string view_name_for(const std::string& claim_uid) { return "k8s-" + claim_uid; }

Result<void> merge_policy(const json& parameters, const std::string& where, json* policy,
                          std::string* error) {
  if (!parameters.is_object()) {
    return fail(error, where + ": parameters: expected an object (a pcifs.io/v1 ViewPolicy)");
  }
  json fields = json::object();
  for (const auto& [key, value] : parameters.items()) {
    if (key == "apiVersion") {
      if (value != "pcifs.io/v1") {
        return fail(error,
                    where + ": apiVersion: expected \"pcifs.io/v1\" (got " + value.dump() + ")");
      }
    } else if (key == "kind") {
      if (value != "ViewPolicy") {
        return fail(error, where + ": kind: expected \"ViewPolicy\" (got " + value.dump() + ")");
      }
    } else if (key == "allow_dma" || key == "share_iommu_group") {
      return fail(error, fmt::format("{}: {}: not allowed in a claim (a grant only the node's "
                                     "root gives, in the host daemon's own view files)",
                                     where, key));
    } else if (key == "devices" || key == "name" || key == "mountpoint") {
      return fail(error, fmt::format("{}: {}: not allowed in a claim (pcifs-kube sets it from "
                                     "the allocation)",
                                     where, key));
    } else if (!is_policy_field(key)) {
      return fail(error, fmt::format("{}: {}: unknown field (expected apiVersion, kind, "
                                     "config_read, config_write, bar_access, doe_protocols, "
                                     "mask_addresses, hide, low_power_access, uid, gid)",
                                     where, key));
    } else {
      fields[key] = value;
    }
  }
  // Types and values exactly as the host daemon will check them (SPEC S6).
  json probe = fields;
  probe["name"] = "probe";
  std::string why;
  if (!core::parse_view(probe.dump(), where, &why)) return fail(error, why);
  for (const auto& [key, value] : fields.items()) (*policy)[key] = value;
  return Ok();
}

Result<ClaimPlan> plan_claim(const json& claim, const ClaimRef& ref, const std::string& node,
                             std::string* error) {
  const std::string name = "claim " + ref.ns + "/" + ref.name;
  if (!claim.is_object()) return fail(error, name + ": the API server's answer is not an object");
  const json meta = claim.value("metadata", json::object());
  if (!meta.is_object() || meta.value("uid", "") != ref.uid) {
    return fail(error,
                name + ": its UID is " +
                    (meta.is_object() ? meta.value("uid", std::string("missing")) : "missing") +
                    ", the kubelet asked for " + ref.uid + " (deleted and created again?)",
                ESTALE);
  }
  const json status = claim.value("status", json::object());
  const json alloc = status.is_object() ? status.value("allocation", json()) : json();
  if (!alloc.is_object()) return fail(error, name + ": not allocated", ENOENT);
  if (!selector_allows(alloc.value("nodeSelector", json()), node)) {
    return fail(error, name + ": allocated to another node, not " + node, EXDEV);
  }
  const json devs = alloc.value("devices", json::object());
  const json results = devs.is_object() ? devs.value("results", json::array()) : json::array();
  if (!results.is_array())
    return fail(error, name + ": status.allocation.devices.results: expected an array");
  ClaimPlan plan;
  std::set<std::string> requests;
  for (size_t i = 0; i < results.size(); ++i) {
    const json& r = results[i];
    const std::string at = name + ": status.allocation.devices.results[" + std::to_string(i) + "]";
    if (!r.is_object()) return fail(error, at + ": expected an object");
    if (r.value("driver", "") != kDriverName) continue;  // another driver's device
    AllocatedDevice d{r.value("request", ""), r.value("pool", ""), r.value("device", "")};
    if (d.request.empty() || d.device.empty()) {
      return fail(error, at + ": expected request and device names");
    }
    if (d.pool != node) {
      return fail(error,
                  fmt::format("{}: device {} is from pool {}, not this node's ({})", at, d.device,
                              d.pool, node),
                  EXDEV);
    }
    requests.insert(d.request);
    requests.insert(parent_request(d.request));
    plan.devices.push_back(std::move(d));
  }
  if (plan.devices.empty()) {
    return fail(error, name + ": no device of driver " + kDriverName + " is allocated", ENOENT);
  }
  const json configs = devs.is_object() ? devs.value("config", json::array()) : json::array();
  for (size_t i = 0; configs.is_array() && i < configs.size(); ++i) {
    const json& c = configs[i];
    if (!c.is_object()) continue;
    const json opaque = c.value("opaque", json());
    if (!opaque.is_object() || opaque.value("driver", "") != kDriverName) continue;
    const json applies = c.value("requests", json::array());
    bool ours = !applies.is_array() || applies.empty();
    for (const auto& r : applies)
      ours = ours || (r.is_string() && requests.count(r.get<std::string>()));
    if (!ours) continue;
    const std::string where =
        name + ": config[" + std::to_string(i) + "] (" + c.value("source", std::string("?")) + ")";
    PCIFS_TRY(merge_policy(opaque.value("parameters", json()), where, &plan.policy, error));
  }
  return plan;
}

}  // namespace pcifs::kube
