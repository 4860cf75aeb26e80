// The DRA driver's logic (driver.hpp).
#include "kube/driver.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <set>

#include "control/cdi_dir.hpp"
#include "control/client.hpp"
#include "kube/claim.hpp"
#include "kube/inventory.hpp"

namespace pcifs::kube {

using nlohmann::json;

Result<json> ControlSocketDaemon::call(const json& request, std::string* error) {
  auto client = control::Client::connect(path_, error);
  if (!client) return Errno(EHOSTDOWN);
  return client->request(request, error);
}

Driver::Driver(std::string node, HostDaemon& daemon, ClaimReader& claims, Checkpoint checkpoint,
               std::string cdi_dir)
    : node_(std::move(node)),
      cdi_dir_(std::move(cdi_dir)),
      daemon_(daemon),
      claims_(claims),
      checkpoint_(std::move(checkpoint)) {}

std::map<std::string, CheckpointEntry> Driver::entries() const {
  MutexLock lock(mu_);
  return checkpoint_.entries();
}

std::map<std::string, PrepareResult> Driver::prepare(const std::vector<ClaimRef>& claims) {
  MutexLock lock(mu_);
  std::map<std::string, PrepareResult> out;
  std::set<std::string> uids;
  for (const auto& c : claims) uids.insert(c.uid);
  if (uids.size() > 1) {
    std::string names;
    for (const auto& c : claims) names += (names.empty() ? "" : ", ") + c.ns + "/" + c.name;
    const std::string why =
        "pcifs.io: a pod gets one view (a container has one /sys/bus/pci), "
        "but this pod has " +
        std::to_string(uids.size()) + " pcifs.io claims (" + names +
        "): request all its pcifs.io devices in one ResourceClaim";
    for (const auto& c : claims) out[c.uid].error = why;
    spdlog::warn("prepare refused: {}", why);
    return out;
  }
  for (const auto& c : claims) {
    try {
      out[c.uid] = prepare_one(c);
    } catch (const std::exception& e) {
      out[c.uid].error = std::string("pcifs.io: internal error: ") + e.what();
    }
    if (!out[c.uid].error.empty()) {
      spdlog::warn("prepare {}/{} ({}): {}", c.ns, c.name, c.uid, out[c.uid].error);
    }
  }
  return out;
}

PrepareResult Driver::prepare_one(const ClaimRef& c) {
  PrepareResult res;
  if (const auto* e = checkpoint_.find(c.uid); e && e->state == CheckpointEntry::State::kPrepared) {
    res.devices = e->devices;  // the kubelet asks again after a restart: same answer
    return res;
  }
  std::string error;
  auto claim = claims_.get_claim(c.ns, c.name, &error);
  if (!claim) {
    res.error = "pcifs.io: cannot read claim " + c.ns + "/" + c.name + ": " + error;
    return res;
  }
  auto plan = plan_claim(*claim, c, node_, &error);
  if (!plan) {
    res.error = "pcifs.io: " + error;
    return res;
  }
  // The allocated devices, as the node has them now.
  auto answer = daemon_.call(json{{"verb", "devices"}}, &error);
  if (!answer) {
    res.error = "pcifs.io: the pcifs host daemon: " + error;
    return res;
  }
  auto functions = parse_host_devices(*answer, &error);
  if (!functions) {
    res.error = "pcifs.io: the pcifs host daemon's inventory: " + error;
    return res;
  }
  const auto devices = by_name(dra_devices(*functions));
  json bdfs = json::array();
  for (const auto& d : plan->devices) {
    auto it = devices.find(d.device);
    if (it == devices.end()) {
      res.error = "pcifs.io: device " + d.device + " does not exist on node " + node_ +
                  " (removed since it was allocated?)";
      return res;
    }
    if (!it->second.healthy) {
      res.error = "pcifs.io: device " + d.device + " is unhealthy (" + it->second.health_detail +
                  "): pcifs.io prepares no device that a kernel driver or another daemon holds";
      return res;
    }
    for (const auto& b : it->second.bdfs) bdfs.push_back(b);
  }
  json view = plan->policy;
  view["name"] = view_name_for(c.uid);
  view["devices"] = bdfs;

  CheckpointEntry entry;
  entry.state = CheckpointEntry::State::kPreparing;
  entry.ns = c.ns;
  entry.name = c.name;
  entry.view = view["name"].get<std::string>();
  if (!checkpoint_.put(c.uid, entry, &error)) {
    res.error = "pcifs.io: " + error;
    return res;
  }
  auto added = daemon_.call(
      json{{"verb", "add"}, {"source", "claim " + c.ns + "/" + c.name}, {"view", view}}, &error);
  if (!added) {  // no answer: the view may exist; the entry says so, a retry settles it
    res.error = "pcifs.io: the pcifs host daemon: " + error;
    return res;
  }
  if (!added->value("ok", false)) {
    std::string why = added->value("error", std::string("refused"));
    std::string ignored;
    (void)checkpoint_.erase(c.uid, &ignored);  // refused: nothing was made
    res.error = "pcifs.io: the pcifs host daemon refused the view: " + why;
    return res;
  }
  const json v = added->value("view", json::object());
  const std::string cdi = v.is_object() ? v.value("cdi_device", "") : "";
  if (cdi.empty()) {
    res.error = "pcifs.io: the pcifs host daemon named no CDI device for view " + entry.view;
    return res;
  }
  if (!cdi_dir_.empty() &&
      ::access(control::view_spec_path(cdi_dir_, entry.view).c_str(), F_OK) != 0) {
    // The runtime would not find the device: undo, and say where we looked.
    std::string ignored;
    if (remove_view(entry.view, &ignored)) (void)checkpoint_.erase(c.uid, &ignored);
    res.error = "pcifs.io: the pcifs host daemon wrote no CDI spec for view " + entry.view +
                " in " + cdi_dir_ + " (is pcifs.service started with --cdi-dir=" + cdi_dir_ + "?)";
    return res;
  }
  for (const auto& d : plan->devices) {
    res.devices.push_back(PreparedDevice{{d.request}, d.pool, d.device, {cdi}});
  }
  entry.state = CheckpointEntry::State::kPrepared;
  entry.devices = res.devices;
  if (!checkpoint_.put(c.uid, entry, &error)) {
    res.devices.clear();
    res.error = "pcifs.io: " + error;
    return res;
  }
  spdlog::info("prepared claim {}/{} ({}): view {} with {} device(s), CDI {}", c.ns, c.name, c.uid,
               entry.view, plan->devices.size(), cdi);
  return res;
}

std::map<std::string, std::string> Driver::unprepare(const std::vector<ClaimRef>& claims) {
  MutexLock lock(mu_);
  std::map<std::string, std::string> out;
  for (const auto& c : claims) {
    try {
      out[c.uid] = unprepare_one(c);
    } catch (const std::exception& e) {
      out[c.uid] = std::string("pcifs.io: internal error: ") + e.what();
    }
    if (!out[c.uid].empty()) spdlog::warn("unprepare {}/{}: {}", c.ns, c.name, out[c.uid]);
  }
  return out;
}

Result<void> Driver::remove_view(const std::string& view, std::string* error) {
  auto r = daemon_.call(json{{"verb", "rm"}, {"name", view}}, error);
  if (!r) return r.error();
  if (!r->value("ok", false)) {
    if (error != nullptr) *error = r->value("error", std::string("refused"));
    return Errno(EIO);
  }
  return Ok();
}

std::string Driver::unprepare_one(const ClaimRef& c) {
  std::string error;
  const CheckpointEntry* e = checkpoint_.find(c.uid);
  CheckpointEntry entry;
  if (e != nullptr) {
    entry = *e;
  } else {
    entry.ns = c.ns;
    entry.name = c.name;
    entry.view = view_name_for(c.uid);
  }
  entry.state = CheckpointEntry::State::kUnpreparing;
  if (e != nullptr && !checkpoint_.put(c.uid, entry, &error)) return "pcifs.io: " + error;
  if (!remove_view(entry.view, &error)) {
    return "pcifs.io: cannot remove view " + entry.view + ": " + error;
  }
  if (!checkpoint_.erase(c.uid, &error)) return "pcifs.io: " + error;
  spdlog::info("unprepared claim {}/{} ({}): view {} removed", c.ns, c.name, c.uid, entry.view);
  return "";
}

size_t Driver::recover() {
  MutexLock lock(mu_);
  size_t unsettled = 0;
  const auto all = checkpoint_.entries();
  for (const auto& [uid, e] : all) {
    if (e.state == CheckpointEntry::State::kUnpreparing) {
      std::string error;
      if (remove_view(e.view, &error) && checkpoint_.erase(uid, &error)) {
        spdlog::info("recovered: claim {}/{} ({}): view {} removed", e.ns, e.name, uid, e.view);
        continue;
      }
      spdlog::warn("recover: claim {}/{} ({}): {}", e.ns, e.name, uid, error);
    }
    if (e.state != CheckpointEntry::State::kPrepared) ++unsettled;
  }
  return unsettled;
}

}  // namespace pcifs::kube
