// Inventory (inventory.hpp).
#include "kube/inventory.hpp"

#include <algorithm>
#include <cctype>

namespace pcifs::kube {

using nlohmann::json;

namespace {

bool fail(std::string* error, const std::string& text) {
  if (error != nullptr) *error = text;
  return false;
}

// "0x10de" or "10de" -> "10de" (lower case, `digits` hex digits).
std::optional<std::string> hex_field(const json& v, size_t digits) {
  if (!v.is_string()) return std::nullopt;
  std::string s = v.get<std::string>();
  if (s.starts_with("0x") || s.starts_with("0X")) s.erase(0, 2);
  if (s.size() != digits) return std::nullopt;
  for (char& c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

std::optional<int> opt_int(const json& v) {
  if (v.is_number_integer()) return v.get<int>();
  return std::nullopt;
}

// pci-0000-01-00-0: a DNS label (lower-case alphanumerics and '-').
std::string device_name_of(const std::string& bdf) {
  std::string out = "pci-";
  for (char c : bdf) out += (c == ':' || c == '.') ? '-' : c;
  return out;
}

bool usable(const std::string& health) { return health == "ok" || health == "low-power"; }

json str(const std::string& s) { return json{{"string", s}}; }

}  // namespace

Result<std::vector<HostFunction>> parse_host_devices(const json& response, std::string* error) {
  if (!response.is_object() || !response.value("ok", false)) {
    fail(error, "devices: " + (response.is_object() && response.contains("error")
                                   ? response["error"].dump()
                                   : std::string("not an answer")));
    return Errno(EIO);
  }
  const auto it = response.find("devices");
  if (it == response.end() || !it->is_array()) {
    fail(error, "devices: expected an array");
    return Errno(EINVAL);
  }
  std::vector<HostFunction> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& d = (*it)[i];
    const std::string at = "devices[" + std::to_string(i) + "]";
    if (!d.is_object() || !d.contains("bdf") || !d["bdf"].is_string()) {
      fail(error, at + ": expected an object with a bdf");
      return Errno(EINVAL);
    }
    HostFunction f;
    f.bdf = d["bdf"].get<std::string>();
    auto vendor = hex_field(d.value("vendor", json()), 4);
    auto device = hex_field(d.value("device", json()), 4);
    auto cls = hex_field(d.value("class", json()), 6);
    if (!vendor || !device || !cls) {
      fail(error, at + " (" + f.bdf + "): vendor, device, class: expected hex IDs");
      return Errno(EINVAL);
    }
    f.vendor = *vendor;
    f.device = *device;
    f.cls = *cls;
    f.bridge = d.value("bridge", false);
    f.iommu_group = opt_int(d.value("iommu_group", json()));
    f.numa_node = opt_int(d.value("numa_node", json()));
    if (d.contains("driver") && d["driver"].is_string()) f.driver = d["driver"].get<std::string>();
    if (d.contains("pcie_root") && d["pcie_root"].is_string()) {
      f.pcie_root = d["pcie_root"].get<std::string>();
    }
    f.health = d.value("health", std::string("unknown"));
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<DraDevice> dra_devices(const std::vector<HostFunction>& functions) {
  // Endpoints by IOMMU group; endpoints with no group stand alone.
  std::map<int, std::vector<const HostFunction*>> groups;
  std::vector<std::vector<const HostFunction*>> units;
  for (const auto& f : functions) {
    if (f.bridge) continue;
    if (f.iommu_group) {
      groups[*f.iommu_group].push_back(&f);
    } else {
      units.push_back({&f});
    }
  }
  for (auto& [g, members] : groups) units.push_back(std::move(members));

  std::vector<DraDevice> out;
  for (auto& members : units) {
    std::sort(members.begin(), members.end(),
              [](const HostFunction* a, const HostFunction* b) { return a->bdf < b->bdf; });
    const HostFunction& first = *members.front();
    DraDevice d;
    d.name = members.size() == 1 ? device_name_of(first.bdf)
                                 : "iommu-group-" + std::to_string(*first.iommu_group);
    std::string root = first.pcie_root;
    for (const HostFunction* m : members) {
      d.bdfs.push_back(m->bdf);
      if (m->pcie_root != root) root.clear();  // no one root: not claimed
      if (d.healthy && !usable(m->health)) {
        d.healthy = false;
        d.health_detail = m->bdf + ": " + m->health;
      }
    }
    if (d.healthy) d.health_detail = "ok";
    json a = json::object();
    a["resource.kubernetes.io/pciBusID"] = str(first.bdf);
    if (!root.empty()) a["resource.kubernetes.io/pcieRoot"] = str(root);
    a["pcifs.io/vendor"] = str(first.vendor);
    a["pcifs.io/device"] = str(first.device);
    a["pcifs.io/class"] = str(first.cls);
    if (first.iommu_group) a["pcifs.io/iommuGroup"] = json{{"int", *first.iommu_group}};
    if (first.numa_node) a["pcifs.io/numaNode"] = json{{"int", *first.numa_node}};
    a["pcifs.io/driver"] = str(first.driver.value_or(""));
    a["pcifs.io/health"] = str(d.healthy ? "healthy" : "unhealthy");
    a["pcifs.io/healthDetail"] = str(d.health_detail);
    a["pcifs.io/functions"] = json{{"int", static_cast<int64_t>(d.bdfs.size())}};
    std::string list;
    for (const auto& b : d.bdfs) list += (list.empty() ? "" : ",") + b;
    a["pcifs.io/bdfs"] = str(list);
    d.attributes = std::move(a);
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(),
            [](const DraDevice& a, const DraDevice& b) { return a.name < b.name; });
  return out;
}

std::map<std::string, DraDevice> by_name(const std::vector<DraDevice>& devices) {
  std::map<std::string, DraDevice> out;
  for (const auto& d : devices) out.emplace(d.name, d);
  return out;
}

std::vector<json> resource_slices(const std::string& node, int64_t generation,
                                  const std::vector<DraDevice>& devices) {
  const size_t count =
      std::max<size_t>(1, (devices.size() + kMaxDevicesPerSlice - 1) / kMaxDevicesPerSlice);
  std::vector<json> out;
  for (size_t i = 0; i < count; ++i) {
    json devs = json::array();
    for (size_t k = i * kMaxDevicesPerSlice;
         k < devices.size() && k < (i + 1) * kMaxDevicesPerSlice; ++k) {
      devs.push_back(json{{"name", devices[k].name}, {"attributes", devices[k].attributes}});
    }
    out.push_back(json{{"apiVersion", "resource.k8s.io/v1"},
                       {"kind", "ResourceSlice"},
                       {"metadata",
                        {{"name", node + "-" + kDriverName + "-" + std::to_string(i)},
                         {"labels", {{"app.kubernetes.io/managed-by", "pcifs-kube"}}}}},
                       {"spec",
                        {{"driver", kDriverName},
                         {"nodeName", node},
                         {"pool",
                          {{"name", node},
                           {"generation", generation},
                           {"resourceSliceCount", static_cast<int64_t>(count)}}},
                         {"devices", std::move(devs)}}}});
  }
  return out;
}

json slice_devices(const std::vector<json>& slices) {
  json all = json::array();
  for (const auto& s : slices) {
    const json& spec = s.value("spec", json::object());
    for (const auto& d : spec.value("devices", json::array())) all.push_back(d);
  }
  return all;
}

}  // namespace pcifs::kube
