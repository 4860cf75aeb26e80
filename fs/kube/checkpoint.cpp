// The checkpoint file (checkpoint.hpp).
#include "kube/checkpoint.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "control/state_dir.hpp"

namespace pcifs::kube {

using nlohmann::json;

namespace {

constexpr int kVersion = 1;

const char* state_name(CheckpointEntry::State s) {
  switch (s) {
    case CheckpointEntry::State::kPreparing: return "preparing";
    case CheckpointEntry::State::kPrepared: return "prepared";
    case CheckpointEntry::State::kUnpreparing: return "unpreparing";
  }
  return "preparing";
}

Errno fail(std::string* error, const std::string& text, int e) {
  if (error != nullptr) *error = text;
  return Errno(e);
}

json entry_json(const CheckpointEntry& e) {
  json devs = json::array();
  for (const auto& d : e.devices) {
    devs.push_back(json{{"requests", d.request_names},
                        {"pool", d.pool},
                        {"device", d.device},
                        {"cdi", d.cdi_device_ids}});
  }
  return json{{"state", state_name(e.state)},
              {"namespace", e.ns},
              {"name", e.name},
              {"view", e.view},
              {"devices", devs}};
}

bool entry_from(const json& j, CheckpointEntry* e) {
  if (!j.is_object()) return false;
  const std::string s = j.value("state", "");
  if (s == "preparing") {
    e->state = CheckpointEntry::State::kPreparing;
  } else if (s == "prepared") {
    e->state = CheckpointEntry::State::kPrepared;
  } else if (s == "unpreparing") {
    e->state = CheckpointEntry::State::kUnpreparing;
  } else {
    return false;
  }
  e->ns = j.value("namespace", "");
  e->name = j.value("name", "");
  e->view = j.value("view", "");
  if (e->view.empty()) return false;
  for (const auto& d : j.value("devices", json::array())) {
    PreparedDevice p;
    p.request_names = d.value("requests", std::vector<std::string>{});
    p.pool = d.value("pool", "");
    p.device = d.value("device", "");
    p.cdi_device_ids = d.value("cdi", std::vector<std::string>{});
    e->devices.push_back(std::move(p));
  }
  return true;
}

}  // namespace

Result<Checkpoint> Checkpoint::load(const std::string& path, std::string* error) {
  Checkpoint c;
  c.path_ = path;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return c;
    return fail(error, path + ": " + std::strerror(errno), errno);
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    const json j = json::parse(text.str());
    if (!j.is_object() || j.value("version", 0) != kVersion || !j.contains("claims") ||
        !j["claims"].is_object()) {
      return fail(error,
                  path + ": not a pcifs-kube checkpoint (version " + std::to_string(kVersion) + ")",
                  EINVAL);
    }
    for (const auto& [uid, e] : j["claims"].items()) {
      CheckpointEntry entry;
      if (!entry_from(e, &entry))
        return fail(error, fmt::format("{}: claim {}: malformed", path, uid), EINVAL);
      c.entries_.emplace(uid, std::move(entry));
    }
  } catch (const std::exception& e) {
    return fail(error, path + ": " + e.what(), EINVAL);
  }
  return c;
}

const CheckpointEntry* Checkpoint::find(const std::string& uid) const {
  auto it = entries_.find(uid);
  return it == entries_.end() ? nullptr : &it->second;
}

Result<void> Checkpoint::put(const std::string& uid, const CheckpointEntry& e, std::string* error) {
  auto next = entries_;
  next[uid] = e;
  PCIFS_TRY(save(next, error));
  entries_ = std::move(next);
  return Ok();
}

Result<void> Checkpoint::erase(const std::string& uid, std::string* error) {
  if (!entries_.count(uid)) return Ok();
  auto next = entries_;
  next.erase(uid);
  PCIFS_TRY(save(next, error));
  entries_ = std::move(next);
  return Ok();
}

Result<void> Checkpoint::save(const std::map<std::string, CheckpointEntry>& entries,
                              std::string* error) const {
  json claims = json::object();
  for (const auto& [uid, e] : entries) claims[uid] = entry_json(e);
  const std::string text = json{{"version", kVersion}, {"claims", claims}}.dump(2) + "\n";
  return control::write_atomically(path_, text, 0600, error);
}

}  // namespace pcifs::kube
