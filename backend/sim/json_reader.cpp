#include "sim/json_reader.hpp"

#include <charconv>
#include <cstdio>

namespace pcifs::backend::sim {

void json_fail(const std::string& path, const std::string& expected) {
  throw JsonError{path + ": " + expected};
}

std::string show_number(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v <= 4096 ? "%llu" : "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {

std::optional<uint64_t> parse_text(std::string_view t) {
  int base = 10;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
    base = 16;
    t.remove_prefix(2);
  }
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v, base);
  if (t.empty() || ec != std::errc() || p != t.data() + t.size()) return std::nullopt;
  return v;
}

}  // namespace

uint64_t json_uint(const nlohmann::json& v, const std::string& path, uint64_t lo, uint64_t hi) {
  std::string expected = "expected an integer from " + show_number(lo) + " to " + show_number(hi);
  std::optional<uint64_t> n;
  if (v.is_number_unsigned()) n = v.get<uint64_t>();
  if (v.is_string()) n = parse_text(v.get_ref<const std::string&>());
  if (!n || *n < lo || *n > hi) json_fail(path, expected);
  return *n;
}

JsonObject::JsonObject(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {
  if (!j_.is_object()) json_fail(path_.empty() ? "(top level)" : path_, "expected an object");
}

std::string JsonObject::path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

void JsonObject::only(std::initializer_list<std::string_view> known) const {
  for (const auto& [key, value] : j_.items()) {
    bool ok = false;
    for (std::string_view k : known) ok = ok || k == key;
    if (!ok) json_fail(path(key), "unknown field");
  }
}

const nlohmann::json& JsonObject::at(const char* key) const {
  if (!j_.contains(key)) json_fail(path(key), "required field missing");
  return j_.at(key);
}

uint64_t JsonObject::uint(const char* key, uint64_t lo, uint64_t hi) const {
  return json_uint(at(key), path(key), lo, hi);
}

uint64_t JsonObject::uint(const char* key, uint64_t lo, uint64_t hi, uint64_t fallback) const {
  return has(key) ? uint(key, lo, hi) : fallback;
}

bool JsonObject::boolean(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  if (!j_.at(key).is_boolean()) json_fail(path(key), "expected true or false");
  return j_.at(key).get<bool>();
}

std::string JsonObject::string(const char* key) const {
  const auto& v = at(key);
  if (!v.is_string()) json_fail(path(key), "expected a string");
  return v.get<std::string>();
}

std::optional<std::string> JsonObject::opt_string(const char* key) const {
  if (!has(key)) return std::nullopt;
  return string(key);
}

}  // namespace pcifs::backend::sim
