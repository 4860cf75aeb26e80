// Views to a CDI spec (see cdi_spec.hpp). The format follows the CDI
// specification's JSON definition: cdiVersion, kind, devices[].name and
// devices[].containerEdits with mounts[] (hostPath, containerPath, type,
// options) and hooks[] (hookName, path, args, timeout).
#include "core/cdi_spec.hpp"

#include <map>

namespace pcifs::core {
namespace {

using json = nlohmann::ordered_json;  // keys in the order the CDI spec lists them

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_name_char(char c) { return is_alnum(c) || c == '_' || c == '.' || c == ':' || c == '-'; }

// Never "ro": every view has files that some caller inside may write —
// power_state and reset for the view's privileged callers, doe (write a
// request, read the response) for everyone — and a read-only bind would turn
// those into EROFS. What may be written is the daemon's policy (S6), decided
// per caller on every open. nosuid/nodev/noexec: the tree holds no programs
// and no device nodes, so nothing is lost by refusing them.
json mount_options() { return json::array({"rbind", "nosuid", "nodev", "noexec"}); }

std::string where(const ViewPolicy& v) { return v.source.empty() ? "view " + v.name : v.source; }

// The hook of one device: `pcifs cdi-hook --view NAME --container-path P`.
// args[0] is the program's name, as execv wants it.
json view_hook(const std::string& device, const CdiOptions& o) {
  return {{"hookName", std::string(kCdiHookStage)},
          {"path", o.hook_binary},
          {"args", json::array({"pcifs", std::string(kCdiHookCommand), "--view", device,
                                "--container-path", o.container_path})},
          {"timeout", kCdiHookTimeoutS}};
}

json device_edits(const ViewPolicy& v, const std::string& device, const CdiOptions& o) {
  json mount = {{"hostPath", v.mountpoint},
                {"containerPath", o.container_path},
                {"type", "bind"},
                {"options", mount_options()}};
  json edits = {{"mounts", json::array({mount})}};
  if (!o.hook_binary.empty()) edits["hooks"] = json::array({view_hook(device, o)});
  return edits;
}

bool uses_mount_type(const json& edits) {
  if (!edits.is_object() || !edits.contains("mounts")) return false;
  for (const auto& m : edits["mounts"]) {
    if (m.is_object() && m.contains("type") && m["type"] != "") return true;
  }
  return false;
}

bool uses_device_node_host_path(const json& edits) {
  if (!edits.is_object() || !edits.contains("deviceNodes")) return false;
  for (const auto& d : edits["deviceNodes"]) {
    if (d.is_object() && d.contains("hostPath") && d["hostPath"] != "") return true;
  }
  return false;
}

bool has_annotations(const json& j) {
  return j.is_object() && j.contains("annotations") && !j["annotations"].empty();
}

bool fail(std::string* error, const std::string& text) {
  if (error) *error = text;
  return false;
}

bool check_view(const ViewPolicy& v, const std::string& device, std::string* error) {
  if (v.mountpoint.empty() || v.mountpoint[0] != '/') {
    return fail(error, where(v) +
                           ": mountpoint: expected an absolute path (the CDI hostPath) (got " +
                           json(v.mountpoint).dump() + ")");
  }
  if (device.empty()) {
    return fail(error, where(v) +
                           ": name: expected a name with a letter or digit (CDI device names are "
                           "letters, digits and _.:-, from a letter or digit to a letter or "
                           "digit) (got " +
                           json(v.name).dump() + ")");
  }
  return true;
}

}  // namespace

std::string cdi_min_version(const json& spec) {
  const json none = json::object();
  auto field = [&](const json& j, const char* key) -> const json& {
    return j.is_object() && j.contains(key) ? j[key] : none;
  };
  const json& kind = field(spec, "kind");
  const std::string k = kind.is_string() ? kind.get<std::string>() : "";
  bool v060 = has_annotations(spec) ||
              (k.find('/') != std::string::npos && k.find('.', k.find('/')) != std::string::npos);
  bool v050 = uses_device_node_host_path(field(spec, "containerEdits"));
  bool v040 = uses_mount_type(field(spec, "containerEdits"));
  for (const auto& d : field(spec, "devices")) {
    const json& name = field(d, "name");
    const std::string n = name.is_string() ? name.get<std::string>() : "";
    v060 = v060 || has_annotations(d);
    v050 = v050 || (!n.empty() && n[0] >= '0' && n[0] <= '9') ||
           uses_device_node_host_path(field(d, "containerEdits"));
    v040 = v040 || uses_mount_type(field(d, "containerEdits"));
  }
  if (v060) return "0.6.0";
  if (v050) return "0.5.0";
  if (v040) return "0.4.0";
  return "0.3.0";
}

std::string cdi_device_name(std::string_view view_name) {
  std::string out;
  bool pending_dash = false;  // a run of bytes CDI does not allow, seen after a good one
  for (const char c : view_name) {
    if (!is_name_char(c)) {
      pending_dash = !out.empty();
      continue;
    }
    if (out.empty() && !is_alnum(c)) continue;  // must start with a letter or digit
    if (pending_dash) out += '-';
    pending_dash = false;
    out += c;
  }
  while (!out.empty() && !is_alnum(out.back())) out.pop_back();
  return out;
}

Result<json> cdi_spec(const std::vector<ViewPolicy>& views, const CdiOptions& options,
                      std::string* error) {
  if (views.empty()) {
    fail(error, "--view: expected at least one view file");
    return Errno(EINVAL);
  }
  if (options.container_path.empty() || options.container_path[0] != '/') {
    fail(error, "--container-path: expected an absolute path (got " +
                    json(options.container_path).dump() + ")");
    return Errno(EINVAL);
  }
  if (!options.hook_binary.empty() && options.hook_binary[0] != '/') {
    fail(error, "hook: expected the absolute path of the pcifs binary (got " +
                    json(options.hook_binary).dump() + ")");
    return Errno(EINVAL);
  }
  std::map<std::string, std::string> names;   // device name -> the view that took it
  std::map<std::string, std::string> mounts;  // mountpoint -> the view that took it
  json devices = json::array();
  for (const auto& v : views) {
    const std::string device = cdi_device_name(v.name);
    if (!check_view(v, device, error)) return Errno(EINVAL);
    if (auto [it, fresh] = names.emplace(device, where(v)); !fresh) {
      fail(error, where(v) + ": name: expected a CDI device name no other view uses (got " +
                      json(v.name).dump() + ", which is \"" + device + "\" like " + it->second +
                      ")");
      return Errno(EINVAL);
    }
    if (auto [it, fresh] = mounts.emplace(v.mountpoint, where(v)); !fresh) {
      fail(error, where(v) + ": mountpoint: expected a mountpoint no other view uses (got " +
                      json(v.mountpoint).dump() + " like " + it->second + ")");
      return Errno(EINVAL);
    }
    devices.push_back({{"name", device}, {"containerEdits", device_edits(v, device, options)}});
  }
  json body = {{"kind", std::string(kCdiKind)}, {"devices", std::move(devices)}};
  std::string version = cdi_min_version(body);
  return json{{"cdiVersion", std::move(version)},  // first, for the person reading it
              {"kind", std::move(body["kind"])},
              {"devices", std::move(body["devices"])}};
}

}  // namespace pcifs::core
