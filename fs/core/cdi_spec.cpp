// Views to a CDI 0.6.0 spec (see cdi_spec.hpp). The format follows the CDI
// specification's JSON definition: cdiVersion, kind, devices[].name and
// devices[].containerEdits.mounts[] with hostPath, containerPath, type and
// options.
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
    json mount = {{"hostPath", v.mountpoint},
                  {"containerPath", options.container_path},
                  {"type", "bind"},
                  {"options", mount_options()}};
    devices.push_back({{"name", device}, {"containerEdits", {{"mounts", json::array({mount})}}}});
  }
  return json{{"cdiVersion", std::string(kCdiVersion)},
              {"kind", std::string(kCdiKind)},
              {"devices", std::move(devices)}};
}

}  // namespace pcifs::core
