// HostControl (host_control.hpp).
#include "fuse/host_control.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>

namespace pcifs::fuse {

using nlohmann::json;

namespace {

const char* kind_name(MediatorEvent::Kind k) {
  switch (k) {
    case MediatorEvent::Kind::kDeviceArrived: return "device_arrived";
    case MediatorEvent::Kind::kDeviceLeft: return "device_left";
    case MediatorEvent::Kind::kPower: return "power";
    case MediatorEvent::Kind::kClaimTaken: return "claim_taken";
    case MediatorEvent::Kind::kClaimReleased: return "claim_released";
    case MediatorEvent::Kind::kHandedOver: return "handed_over";
  }
  return "unknown";
}

json event_json(const MediatorEvent& e) {
  json j{{"event", kind_name(e.kind)}, {"bdf", e.bdf.str()}};
  switch (e.kind) {
    case MediatorEvent::Kind::kPower: j["power_state"] = e.detail; break;
    case MediatorEvent::Kind::kHandedOver: j["reset"] = e.detail; break;
    case MediatorEvent::Kind::kClaimTaken:
    case MediatorEvent::Kind::kClaimReleased:
      j["group"] = e.detail;
      j["pid"] = e.pid;
      j["uid"] = e.uid;
      j["view"] = e.view;
      break;
    default:
      if (!e.detail.empty()) j["read_only"] = e.detail;
  }
  return j;
}

json failure(const std::string& error) { return json{{"ok", false}, {"error", error}}; }

}  // namespace

HostControl::~HostControl() { stop(); }

bool HostControl::start(const control::ServerOptions& options, std::string* error) {
  auto server = control::Server::start(options, *this, error);
  if (!server) return false;
  {
    MutexLock lock(mu_);
    server_ = std::move(server);
  }
  mediator_.set_event_sink([this](const MediatorEvent& e) { publish(event_json(e)); });
  host_.set_publish([this](const json& e) { publish(e); });
  return true;
}

// Events stop before the server goes: nothing publishes into a dead server.
void HostControl::stop() {
  std::unique_ptr<control::Server> server;
  {
    MutexLock lock(mu_);
    server = std::move(server_);
  }
  if (!server) return;  // never started, or stopped already (the Mediator may be gone)
  mediator_.set_event_sink(nullptr);
  host_.set_publish(nullptr);
  server.reset();
}

void HostControl::publish(const json& event) {
  MutexLock lock(mu_);
  if (server_) server_->publish(event);
}

json HostControl::add(const json& view, const std::string& source) {
  std::string error;
  auto r = host_.add(view, source, &error);
  if (!r) return failure(error);
  json out{
      {"ok", true},
      {"view", {{"name", r->name}, {"mountpoint", r->mountpoint}, {"cdi_device", r->cdi_device}}}};
  if (r->existed) out["note"] = "view " + r->name + " exists with this policy: nothing to do";
  return out;
}

json HostControl::rm(const std::string& name) {
  std::string error;
  auto r = host_.remove(name, &error);
  if (!r) return failure(error);
  if (!*r) return json{{"ok", true}, {"note", "no view named " + name + ": nothing to do"}};
  return json{{"ok", true}};
}

json HostControl::ls() { return json{{"ok", true}, {"views", host_.list()}}; }

// One object per function: bdf, vendor/device/class as "0x" hex (class: 24
// bits), bridge, iommu_group and numa_node (null when none), driver (null when
// unbound), pcie_root (null when unknown), health (Mediator::health).
json HostControl::devices() {
  json out = json::array();
  for (const auto& d : mediator_.host_devices()) {
    const auto& i = d.info;
    char vendor[8], device[8], cls[10];
    std::snprintf(vendor, sizeof vendor, "0x%04x", i.vendor);
    std::snprintf(device, sizeof device, "0x%04x", i.device);
    std::snprintf(cls, sizeof cls, "0x%06x", i.class_code & 0xffffffu);
    json j{{"bdf", i.bdf.str()},
           {"vendor", vendor},
           {"device", device},
           {"class", cls},
           {"bridge", i.is_bridge()},
           {"iommu_group", i.iommu_group ? json(*i.iommu_group) : json(nullptr)},
           {"numa_node", i.numa_node >= 0 ? json(i.numa_node) : json(nullptr)},
           {"driver", i.driver ? json(*i.driver) : json(nullptr)},
           {"pcie_root", i.pcie_root.empty() ? json(nullptr) : json(i.pcie_root)},
           {"health", d.health}};
    out.push_back(std::move(j));
  }
  return json{{"ok", true}, {"devices", std::move(out)}};
}

void HostControl::poll_health() {
  const bool baseline = health_.empty();
  std::map<Bdf, std::string> now;
  for (auto& [bdf, h] : mediator_.health_all()) now[bdf] = h;
  for (const auto& [bdf, h] : now) {
    auto it = health_.find(bdf);
    if (!baseline && (it == health_.end() || it->second != h)) {
      publish(json{{"event", "health"}, {"bdf", bdf.str()}, {"health", h}});
    }
  }
  health_ = std::move(now);
}

}  // namespace pcifs::fuse
