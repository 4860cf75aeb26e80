// Small helpers for reading a validated JSON description: every accessor
// checks type and range and, on failure, throws JsonError naming the path of
// the field and what was expected ("devices[2].bars[0].size: expected ...").
// JsonError never leaves the loader (parse_device_set catches it).
//
// Thread safety: a JsonObject is a view on a json value owned by the caller;
// use from one thread.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace pcifs::backend::sim {

struct JsonError {
  std::string message;
};

[[noreturn]] void json_fail(const std::string& path, const std::string& expected);

// Numbers in messages: decimal up to 4096, hex ("0xffff") above.
std::string show_number(uint64_t v);

class JsonObject {
 public:
  JsonObject(const nlohmann::json& j, std::string path);  // throws unless j is an object

  const std::string& path() const { return path_; }
  std::string path(std::string_view key) const;
  // Fails on any member not in `known`.
  void only(std::initializer_list<std::string_view> known) const;
  bool has(const char* key) const { return j_.contains(key); }
  const nlohmann::json& at(const char* key) const;

  // Integers may be JSON numbers or strings ("0x1b36", "4096").
  uint64_t uint(const char* key, uint64_t lo, uint64_t hi) const;  // required
  uint64_t uint(const char* key, uint64_t lo, uint64_t hi, uint64_t fallback) const;
  bool boolean(const char* key, bool fallback) const;
  std::string string(const char* key) const;  // required
  std::optional<std::string> opt_string(const char* key) const;

 private:
  const nlohmann::json& j_;
  std::string path_;
};

// A JSON value (number or string) as an unsigned integer within [lo, hi].
uint64_t json_uint(const nlohmann::json& v, const std::string& path, uint64_t lo, uint64_t hi);

}  // namespace pcifs::backend::sim
