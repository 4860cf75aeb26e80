// Small value types shared by every layer: device addresses, callers, power
// states. Plain values, no ownership, thread-safe to copy.
#pragma once

#include <sys/types.h>

#include <charconv>
#include <compare>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace pcifs {

// A PCI function address, DDDD:BB:DD.F.
struct Bdf {
  uint16_t domain = 0;
  uint8_t bus = 0;
  uint8_t dev = 0;  // 0..31
  uint8_t fn = 0;   // 0..7

  // Parses "DDDD:BB:DD.F" (lower or upper hex). Nothing else is accepted.
  static std::optional<Bdf> parse(std::string_view text);
  std::string str() const;  // "0000:01:00.0"
  auto operator<=>(const Bdf&) const = default;
  // The four fields in one number, distinct for distinct addresses.
  uint32_t packed() const {
    return static_cast<uint32_t>(domain) << 16 | static_cast<uint32_t>(bus) << 8 |
           static_cast<uint32_t>(dev) << 3 | fn;
  }
};

// The process on whose behalf a request is made. pid is the thread-group id.
struct Caller {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  bool is_root() const { return uid == 0; }
};

// PCI power management states pcifs exposes (PCI PM 1.2; D3cold per PCIe 5.0 §5.3.1.4.2).
enum class PowerState : uint8_t { kD0, kD3hot, kD3cold };
// to_string(PowerState): "D0" | "D3hot" | "D3cold"; parse_power_state: exact, one
// trailing newline allowed. Defined below.

inline std::optional<Bdf> Bdf::parse(std::string_view t) {
  // DDDD:BB:DD.F, exactly 12 characters.
  if (t.size() != 12 || t[4] != ':' || t[7] != ':' || t[10] != '.') return std::nullopt;
  auto hex = [&](size_t pos, size_t len, unsigned max) -> std::optional<unsigned> {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(t.data() + pos, t.data() + pos + len, v, 16);
    if (ec != std::errc() || p != t.data() + pos + len || v > max) return std::nullopt;
    return v;
  };
  auto d = hex(0, 4, 0xffff), b = hex(5, 2, 0xff), s = hex(8, 2, 31), f = hex(11, 1, 7);
  if (!d || !b || !s || !f) return std::nullopt;
  return Bdf{static_cast<uint16_t>(*d), static_cast<uint8_t>(*b), static_cast<uint8_t>(*s),
             static_cast<uint8_t>(*f)};
}

inline std::string Bdf::str() const {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
  return buf;
}

inline std::string_view to_string(PowerState s) {
  switch (s) {
    case PowerState::kD0: return "D0";
    case PowerState::kD3hot: return "D3hot";
    case PowerState::kD3cold: return "D3cold";
  }
  return "?";
}

inline std::optional<PowerState> parse_power_state(std::string_view t) {
  if (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  if (t == "D0") return PowerState::kD0;
  if (t == "D3hot") return PowerState::kD3hot;
  if (t == "D3cold") return PowerState::kD3cold;
  return std::nullopt;
}

}  // namespace pcifs

template <>
struct std::hash<pcifs::Bdf> {
  size_t operator()(const pcifs::Bdf& b) const noexcept { return b.packed(); }
};
