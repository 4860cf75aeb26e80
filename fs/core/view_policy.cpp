#include "core/view_policy.hpp"

#include <charconv>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/doe_object.hpp"

namespace pcifs::core {
namespace {

using nlohmann::json;

// Collects the first error; every check returns false once it has failed.
class Checker {
 public:
  Checker(const std::string& source, std::string* error) : source_(source), error_(error) {}
  bool fail(std::string_view field, std::string_view expected, const json& got) {
    if (error_) {
      // replace: the echo of a document that is not JSON may hold invalid
      // UTF-8 (or a character cut in half at 40 bytes); dump() would throw.
      *error_ = source_ + ": " + std::string(field) + ": expected " + std::string(expected) +
                " (got " + got.dump(-1, ' ', false, json::error_handler_t::replace) + ")";
    }
    return false;
  }

 private:
  std::string source_;
  std::string* error_;
};

std::optional<uint32_t> parse_hex(std::string_view t, size_t digits) {
  if (t.size() != digits) return std::nullopt;
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v, 16);
  if (ec != std::errc() || p != t.data() + t.size()) return std::nullopt;
  return v;
}

// The same "VVVV:TT" grammar as the doe file's checks (core/doe_object.hpp).
std::optional<DoeProtocol> parse_protocol(std::string_view t) {
  auto f = parse_doe_protocol(t);
  if (!f) return std::nullopt;
  return DoeProtocol{f->vendor, f->type};
}

bool get_bool(const json& j, const char* key, bool* out, Checker& c) {
  if (!j.contains(key)) return true;
  if (!j[key].is_boolean()) return c.fail(key, "true or false", j[key]);
  *out = j[key].get<bool>();
  return true;
}

bool get_id(const json& j, const char* key, uint32_t* out, bool* present, Checker& c) {
  if (!j.contains(key)) return true;
  const json& v = j[key];
  if (!v.is_number_unsigned() || v.get<uint64_t>() >= std::numeric_limits<uint32_t>::max()) {
    return c.fail(key, "a numeric id between 0 and 4294967294", v);
  }
  *out = v.get<uint32_t>();
  if (present) *present = true;
  return true;
}

bool get_devices(const json& j, ViewPolicy& v, Checker& c) {
  if (!j.contains("devices")) return true;
  const json& d = j["devices"];
  if (!d.is_array()) return c.fail("devices", "an array of selectors", d);
  std::vector<DeviceSelector> sel;
  for (size_t i = 0; i < d.size(); ++i) {
    std::string field = "devices[" + std::to_string(i) + "]";
    auto s = d[i].is_string() ? parse_selector(d[i].get<std::string>()) : std::nullopt;
    if (!s) {
      return c.fail(field, "\"DDDD:BB:DD.F\", \"VVVV:DDDD\" or \"class:CCCC[PP]\" in hex", d[i]);
    }
    sel.push_back(*s);
  }
  v.devices = std::move(sel);
  return true;
}

bool get_config_read(const json& j, ViewPolicy& v, Checker& c) {
  if (!j.contains("config_read")) return true;
  const json& r = j["config_read"];
  std::string s = r.is_string() ? r.get<std::string>() : "";
  if (s == "full")
    v.config_read = ConfigRead::kFull;
  else if (s == "header")
    v.config_read = ConfigRead::kHeader;
  else if (s == "none")
    v.config_read = ConfigRead::kNone;
  else
    return c.fail("config_read", "\"full\", \"header\" or \"none\"", r);
  return true;
}

bool get_low_power(const json& j, ViewPolicy& v, Checker& c) {
  if (!j.contains("low_power_access")) return true;
  const json& r = j["low_power_access"];
  std::string s = r.is_string() ? r.get<std::string>() : "";
  if (s == "deny")
    v.low_power_access = LowPowerAccess::kDeny;
  else if (s == "wake")
    v.low_power_access = LowPowerAccess::kWake;
  else
    return c.fail("low_power_access", "\"deny\" or \"wake\"", r);
  return true;
}

bool get_hide(const json& j, ViewPolicy& v, Checker& c) {
  if (!j.contains("hide")) return true;
  const json& h = j["hide"];
  if (!h.is_array()) return c.fail("hide", "an array of \"dsn\" / \"vpd\"", h);
  for (size_t i = 0; i < h.size(); ++i) {
    std::string s = h[i].is_string() ? h[i].get<std::string>() : "";
    if (s == "dsn")
      v.hide_dsn = true;
    else if (s == "vpd")
      v.hide_vpd = true;
    else
      return c.fail("hide[" + std::to_string(i) + "]", "\"dsn\" or \"vpd\"", h[i]);
  }
  return true;
}

bool get_doe(const json& j, ViewPolicy& v, Checker& c) {
  if (!j.contains("doe_protocols")) return true;
  const json& d = j["doe_protocols"];
  if (!d.is_array()) return c.fail("doe_protocols", "an array of \"VVVV:TT\"", d);
  std::vector<DoeProtocol> out;
  for (size_t i = 0; i < d.size(); ++i) {
    auto p = d[i].is_string() ? parse_protocol(d[i].get<std::string>()) : std::nullopt;
    if (!p) return c.fail("doe_protocols[" + std::to_string(i) + "]", "\"VVVV:TT\" in hex", d[i]);
    out.push_back(*p);
  }
  v.doe_protocols = std::move(out);
  return true;
}

bool get_strings(const json& j, ViewPolicy& v, Checker& c) {
  for (const char* key : {"mountpoint", "name"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_string() || j[key].get<std::string>().empty()) {
      return c.fail(key, "a non-empty string", j[key]);
    }
  }
  if (j.contains("mountpoint")) {
    v.mountpoint = j["mountpoint"].get<std::string>();
    if (v.mountpoint[0] != '/') return c.fail("mountpoint", "an absolute path", j["mountpoint"]);
    auto slash = v.mountpoint.find_last_not_of('/');
    std::string trimmed = v.mountpoint.substr(0, slash == std::string::npos ? 0 : slash + 1);
    auto base = trimmed.substr(trimmed.find_last_of('/') + 1);
    if (!base.empty()) v.name = base;
  }
  if (j.contains("name")) v.name = j["name"].get<std::string>();
  return true;
}

const char* const kKnownFields[] = {"mountpoint",
                                    "name",
                                    "devices",
                                    "uid",
                                    "gid",
                                    "config_read",
                                    "config_write",
                                    "bar_access",
                                    "mask_addresses",
                                    "hide",
                                    "doe_protocols",
                                    "low_power_access",
                                    "share_iommu_group",
                                    "allow_dma"};

bool check_unknown(const json& j, Checker& c) {
  for (const auto& [key, val] : j.items()) {
    bool known = false;
    for (const char* k : kKnownFields) known = known || key == k;
    if (!known) {
      return c.fail(key,
                    "one of the fields of SPEC S6 (mountpoint, name, devices, uid, gid, "
                    "config_read, config_write, bar_access, mask_addresses, hide, "
                    "doe_protocols, low_power_access, share_iommu_group, allow_dma)",
                    val);
    }
  }
  return true;
}

// A view's name goes into JSON (status, the control socket), which must be
// UTF-8: a file name that is not gets U+FFFD for its bad bytes.
std::string utf8(const std::string& s) {
  return json::parse(json(s).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

}  // namespace

std::optional<DeviceSelector> parse_selector(std::string_view t) {
  DeviceSelector s;
  if (auto b = Bdf::parse(t)) {
    s.kind = DeviceSelector::Kind::kBdf;
    s.bdf = *b;
    return s;
  }
  if (t.substr(0, 6) == "class:") {
    auto rest = t.substr(6);
    auto v = parse_hex(rest, rest.size() == 6 ? 6 : 4);
    if (!v) return std::nullopt;
    s.kind = DeviceSelector::Kind::kClass;
    s.class_value = *v;
    s.class_has_progif = rest.size() == 6;
    return s;
  }
  if (t.size() == 9 && t[4] == ':') {
    auto v = parse_hex(t.substr(0, 4), 4), d = parse_hex(t.substr(5), 4);
    if (!v || !d) return std::nullopt;
    s.kind = DeviceSelector::Kind::kIds;
    s.vendor = static_cast<uint16_t>(*v);
    s.device = static_cast<uint16_t>(*d);
    return s;
  }
  return std::nullopt;
}

ViewPolicy default_view() { return ViewPolicy{}; }

Result<ViewPolicy> parse_view(std::string_view text, const std::string& source,
                              std::string* error) {
  Checker c(source, error);
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (j.is_discarded()) {
    c.fail("(document)", "valid JSON", json(std::string(text.substr(0, 40))));
    return Errno(EINVAL);
  }
  if (!j.is_object()) {
    c.fail("(document)", "a JSON object", j);
    return Errno(EINVAL);
  }
  ViewPolicy v;
  v.source = source;
  v.name = source;
  uint32_t uid = 0, gid = 0;
  bool ok = check_unknown(j, c) && get_strings(j, v, c) && get_devices(j, v, c) &&
            get_id(j, "uid", &uid, &v.has_uid, c) && get_id(j, "gid", &gid, nullptr, c) &&
            get_config_read(j, v, c) && get_bool(j, "config_write", &v.config_write, c) &&
            get_bool(j, "bar_access", &v.bar_access, c) &&
            get_bool(j, "mask_addresses", &v.mask_addresses, c) && get_hide(j, v, c) &&
            get_doe(j, v, c) && get_low_power(j, v, c) &&
            get_bool(j, "share_iommu_group", &v.share_iommu_group, c) &&
            get_bool(j, "allow_dma", &v.allow_dma, c);
  if (!ok) return Errno(EINVAL);
  v.uid = uid;
  v.gid = j.contains("gid") ? gid : uid;
  return v;
}

Result<ViewPolicy> load_view_file(const std::string& path, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    if (error) *error = path + ": cannot be read";
    return Errno(ENOENT);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string name = path.substr(path.find_last_of('/') + 1);
  auto dot = name.rfind('.');
  auto v = parse_view(ss.str(), path, error);
  if (v && v->name == path) v->name = utf8(name.substr(0, dot));  // no mountpoint, no name field
  return v;
}

}  // namespace pcifs::core
