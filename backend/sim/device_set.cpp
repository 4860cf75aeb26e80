#include "sim/device_set.hpp"

#include <algorithm>
#include <bit>
#include <map>

#include "sim/device_set_caps.hpp"
#include "sim/json_reader.hpp"

namespace pcifs::backend::sim {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxCount = 65536;
constexpr uint64_t k4G = uint64_t{1} << 32;

// Addresses given in the file; the rest are assigned in order from these pools.
struct Pools {
  uint64_t mem32 = 0x80000000;
  uint64_t mem64 = uint64_t{1} << 38;
  uint64_t io = 0x2000;
};

// One "devices[k]" entry: the template of its functions.
struct Entry {
  DeviceSpec spec;
  uint64_t count = 1;
  bool group_shared = false;
  std::array<bool, 6> bar_address_given{};
  bool rom_address_given = false;
  std::string path;
};

bool is_pow2(uint64_t v) { return v != 0 && std::has_single_bit(v); }

void parse_bar(const JsonObject& b, Entry& e) {
  b.only({"index", "type", "prefetchable", "size", "address"});
  bool bridge = e.spec.header_type == 1;
  auto index = static_cast<unsigned>(b.uint("index", 0, bridge ? 1 : 5));
  BarSpec& bar = e.spec.bars[index];
  auto taken = [&](unsigned i) {
    return e.spec.bars[i].kind != BarKind::kNone ||
           (i > 0 && e.spec.bars[i - 1].kind == BarKind::kMem64);
  };
  if (taken(index)) json_fail(b.path("index"), "BAR " + std::to_string(index) + " is already used");
  std::string type = b.string("type");
  if (type == "mem32")
    bar.kind = BarKind::kMem32;
  else if (type == "mem64")
    bar.kind = BarKind::kMem64;
  else if (type == "io")
    bar.kind = BarKind::kIo;
  else
    json_fail(b.path("type"), "expected \"mem32\", \"mem64\" or \"io\"");
  if (bar.kind == BarKind::kMem64 && index == (bridge ? 1u : 5u)) {
    json_fail(b.path("index"), "a 64-bit BAR needs the next index too");
  }
  if (bar.kind == BarKind::kMem64 && e.spec.bars[index + 1].kind != BarKind::kNone) {
    json_fail(b.path("index"), "BAR " + std::to_string(index + 1) + " is already used");
  }
  bar.prefetchable = b.boolean("prefetchable", false);
  if (bar.prefetchable && bar.kind == BarKind::kIo)
    json_fail(b.path("prefetchable"), "I/O BARs are not prefetchable");
  bool io = bar.kind == BarKind::kIo;
  uint64_t max = io ? 256 : bar.kind == BarKind::kMem32 ? (k4G >> 1) : (uint64_t{1} << 40);
  bar.size = b.uint("size", 0, ~uint64_t{0});
  if (!is_pow2(bar.size) || bar.size < (io ? 4u : 16u) || bar.size > max) {
    json_fail(b.path("size"), std::string("expected a power of two >= ") + (io ? "4" : "16") +
                                  " and <= " + show_number(max));
  }
  if (b.has("address")) {
    bar.address = b.uint("address", 0, ~uint64_t{0});
    if (bar.address % bar.size != 0)
      json_fail(b.path("address"), "expected a multiple of the size");
    e.bar_address_given[index] = true;
  }
}

void parse_bars(const JsonObject& d, Entry& e) {
  if (!d.has("bars")) return;
  const json& bars = d.at("bars");
  if (!bars.is_array()) json_fail(d.path("bars"), "expected an array");
  for (size_t i = 0; i < bars.size(); ++i) {
    parse_bar(JsonObject(bars[i], d.path("bars") + "[" + std::to_string(i) + "]"), e);
  }
}

void parse_rom(const JsonObject& d, Entry& e) {
  if (!d.has("rom")) return;
  JsonObject r(d.at("rom"), d.path("rom"));
  r.only({"size", "address", "images"});
  RomSpec& rom = e.spec.rom;
  rom.size = r.uint("size", 0, uint64_t{1} << 24);
  if (!is_pow2(rom.size) || rom.size < 2048)
    json_fail(r.path("size"), "expected a power of two >= 2048");
  if (r.has("address")) {
    rom.address = r.uint("address", 0, k4G - 1);
    if (rom.address % rom.size != 0)
      json_fail(r.path("address"), "expected a multiple of the size");
    e.rom_address_given = true;
  }
  const json& images = r.at("images");
  if (!images.is_array()) json_fail(r.path("images"), "expected an array");
  uint64_t total = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    JsonObject im(images[i], r.path("images") + "[" + std::to_string(i) + "]");
    im.only({"size", "code_type"});
    uint64_t size = im.uint("size", 512, 0xffffull * 512);
    if (size % 512 != 0) json_fail(im.path("size"), "expected a multiple of 512");
    total += size;
    if (total > rom.size) json_fail(im.path("size"), "the images do not fit in the ROM size");
    rom.images.push_back(
        {static_cast<uint32_t>(size), static_cast<uint8_t>(im.uint("code_type", 0, 255, 0))});
  }
}

WindowSpec parse_window(const JsonObject& w, const char* key, uint64_t align) {
  if (!w.has(key)) return {};
  const json& v = w.at(key);
  if (!v.is_array() || v.size() != 2) json_fail(w.path(key), "expected [start, end]");
  WindowSpec win{json_uint(v[0], w.path(key) + "[0]", 0, ~uint64_t{0}),
                 json_uint(v[1], w.path(key) + "[1]", 0, ~uint64_t{0})};
  if (win.start % align != 0 || (win.end + 1) % align != 0 || win.end <= win.start) {
    json_fail(w.path(key),
              "expected start < end, start and end + 1 multiples of " + show_number(align));
  }
  return win;
}

void parse_bridge(const JsonObject& d, Entry& e) {
  bool bridge = e.spec.header_type == 1;
  for (const char* key : {"secondary_bus", "subordinate_bus", "windows"}) {
    if (!bridge && d.has(key))
      json_fail(d.path(key), "only bridges (\"type\": \"bridge\") have this");
  }
  if (!bridge) return;
  e.spec.primary_bus = e.spec.bdf.bus;
  e.spec.secondary_bus = static_cast<uint8_t>(d.uint("secondary_bus", 0, 255, 0));
  e.spec.subordinate_bus = static_cast<uint8_t>(
      d.uint("subordinate_bus", e.spec.secondary_bus, 255, e.spec.secondary_bus));
  if (!d.has("windows")) return;
  JsonObject w(d.at("windows"), d.path("windows"));
  w.only({"io", "mem", "prefetch"});
  e.spec.io_window = parse_window(w, "io", 0x1000);
  e.spec.mem_window = parse_window(w, "mem", 0x100000);
  e.spec.pref_window = parse_window(w, "prefetch", 0x100000);
}

void parse_ids(const JsonObject& d, Entry& e) {
  DeviceSpec& s = e.spec;
  s.vendor = static_cast<uint16_t>(d.uint("vendor", 0, 0xfffe, 0x1b36));
  s.device = static_cast<uint16_t>(d.uint("device", 0, 0xffff));
  s.subsystem_vendor = static_cast<uint16_t>(d.uint("subsystem_vendor", 0, 0xffff, 0));
  s.subsystem_device = static_cast<uint16_t>(d.uint("subsystem_device", 0, 0xffff, 0));
  s.class_code = static_cast<uint32_t>(d.uint("class", 0, 0xffffff));
  s.revision = static_cast<uint8_t>(d.uint("revision", 0, 255, 0));
}

Entry parse_entry(const JsonObject& d) {
  d.only({"bdf",
          "count",
          "vendor",
          "device",
          "subsystem_vendor",
          "subsystem_device",
          "class",
          "revision",
          "type",
          "config_size",
          "irq",
          "iommu_group",
          "iommu_group_shared",
          "driver",
          "bars",
          "rom",
          "secondary_bus",
          "subordinate_bus",
          "windows",
          "capabilities",
          "power_state",
          "stall_file"});
  Entry e;
  e.path = d.path();
  auto bdf = Bdf::parse(d.string("bdf"));
  if (!bdf) json_fail(d.path("bdf"), "expected DDDD:BB:DD.F");
  e.spec.bdf = *bdf;
  e.count = d.uint("count", 1, kMaxCount, 1);
  parse_ids(d, e);
  std::string type = d.has("type") ? d.string("type") : "endpoint";
  if (type != "endpoint" && type != "bridge")
    json_fail(d.path("type"), "expected \"endpoint\" or \"bridge\"");
  e.spec.header_type = type == "bridge" ? 1 : 0;
  e.spec.config_size = static_cast<uint32_t>(d.uint("config_size", 256, 4096, 256));
  if (e.spec.config_size != 256 && e.spec.config_size != 4096)
    json_fail(d.path("config_size"), "expected 256 or 4096");
  e.spec.irq = static_cast<int>(d.uint("irq", 0, 255, 0));
  if (d.has("iommu_group"))
    e.spec.iommu_group = static_cast<int>(d.uint("iommu_group", 0, 1u << 30));
  e.group_shared = d.boolean("iommu_group_shared", false);
  e.spec.driver = d.opt_string("driver");
  if (e.spec.driver && (e.spec.driver->empty() || e.spec.driver->find('/') != std::string::npos)) {
    json_fail(d.path("driver"), "expected a driver name (no '/')");
  }
  // Test-only: reset, power transitions and ROM reads wait while this file
  // exists (sim_device_power.cpp), so that a test holds a device mid-operation.
  e.spec.stall_file = d.opt_string("stall_file").value_or("");
  parse_bars(d, e);
  parse_rom(d, e);
  parse_bridge(d, e);
  parse_caps(d, e.spec);
  if (d.has("power_state")) {
    const std::string p = d.string("power_state");
    if (p != "D0" && p != "D3hot") json_fail(d.path("power_state"), "expected \"D0\" or \"D3hot\"");
    if (p == "D3hot" && !e.spec.caps.pm)
      json_fail(d.path("power_state"), "D3hot needs the PM capability (capabilities.pm)");
    e.spec.power_state = p == "D3hot" ? PowerState::kD3hot : PowerState::kD0;
  }
  return e;
}

uint64_t assign(uint64_t& pool, uint64_t size, uint64_t limit, const std::string& path) {
  uint64_t at = (pool + size - 1) & ~(size - 1);
  if (at + size > limit || at + size < at)
    json_fail(path, "address space exhausted; give an address");
  pool = at + size;
  return at;
}

void place_bar(const Entry& e, unsigned i, uint64_t n, Pools& pools, BarSpec& bar) {
  std::string path = e.path + ".bars[" + std::to_string(i) + "].address";
  uint64_t limit = bar.kind == BarKind::kMem64 ? ~uint64_t{0}
                   : bar.kind == BarKind::kIo  ? 0x10000
                                               : k4G;
  if (!e.bar_address_given[i]) {
    uint64_t& pool = bar.kind == BarKind::kMem64 ? pools.mem64
                     : bar.kind == BarKind::kIo  ? pools.io
                                                 : pools.mem32;
    bar.address = assign(pool, bar.size, limit, path);
    return;
  }
  if (limit == 0x10000) limit = k4G;  // 32-bit I/O addresses are allowed when given
  bar.address += n * bar.size;
  if (bar.address + bar.size > limit || bar.address < e.spec.bars[i].address) {
    json_fail(path, "the functions' BARs run past " + show_number(limit));
  }
}

void place_rom(const Entry& e, uint64_t n, Pools& pools, RomSpec& rom) {
  std::string path = e.path + ".rom.address";
  if (!e.rom_address_given) {
    rom.address = assign(pools.mem32, rom.size, k4G, path);
  } else if ((rom.address += n * rom.size) + rom.size > k4G) {
    json_fail(path, "the functions' ROMs run past 0x100000000");
  }
}

DeviceSpec instance(const Entry& e, uint64_t n, Pools& pools) {
  DeviceSpec s = e.spec;
  uint64_t linear = (uint64_t{s.bdf.bus} << 8 | uint64_t{s.bdf.dev} << 3 | s.bdf.fn) + n;
  if (linear > 0xffff) json_fail(e.path + ".count", "the functions run past bus 0xff");
  s.bdf.bus = static_cast<uint8_t>(linear >> 8);
  s.bdf.dev = static_cast<uint8_t>((linear >> 3) & 31);
  s.bdf.fn = static_cast<uint8_t>(linear & 7);
  for (unsigned i = 0; i < 6; ++i) {
    if (s.bars[i].kind != BarKind::kNone) place_bar(e, i, n, pools, s.bars[i]);
  }
  if (s.rom.size != 0) place_rom(e, n, pools, s.rom);
  if (s.iommu_group && !e.group_shared) *s.iommu_group += static_cast<int>(n);
  if (s.caps.dsn) *s.caps.dsn += n;
  return s;
}

void mark_multifunction(std::vector<DeviceSpec>& specs) {
  std::map<std::tuple<uint16_t, uint8_t, uint8_t>, int> per_slot;
  for (const auto& s : specs) ++per_slot[{s.bdf.domain, s.bdf.bus, s.bdf.dev}];
  for (auto& s : specs) s.multifunction = per_slot[{s.bdf.domain, s.bdf.bus, s.bdf.dev}] > 1;
}

std::vector<DeviceSpec> parse_all(const json& top) {
  JsonObject root(top, "");
  root.only({"devices"});
  const json& devices = root.at("devices");
  if (!devices.is_array() || devices.empty()) json_fail("devices", "expected a non-empty array");
  std::vector<DeviceSpec> specs;
  std::map<Bdf, std::string> seen;
  Pools pools;
  for (size_t k = 0; k < devices.size(); ++k) {
    Entry e = parse_entry(JsonObject(devices[k], "devices[" + std::to_string(k) + "]"));
    for (uint64_t n = 0; n < e.count; ++n) {
      DeviceSpec s = instance(e, n, pools);
      auto [it, fresh] = seen.emplace(s.bdf, e.path);
      if (!fresh)
        json_fail(e.path + ".bdf", s.bdf.str() + " is already described by " + it->second);
      specs.push_back(std::move(s));
    }
  }
  std::sort(specs.begin(), specs.end(), [](const auto& a, const auto& b) { return a.bdf < b.bdf; });
  mark_multifunction(specs);
  return specs;
}

}  // namespace

Result<std::vector<DeviceSpec>> parse_device_set(std::string_view text, std::string* error) {
  try {
    return parse_all(json::parse(text));
  } catch (const JsonError& e) {
    if (error) *error = e.message;
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 3, ..." -> drop the tag.
    std::string what = e.what();
    auto cut = what.find("] ");
    if (error) *error = "invalid JSON: " + (cut == std::string::npos ? what : what.substr(cut + 2));
  } catch (const std::exception& e) {
    if (error) *error = std::string("device set: ") + e.what();
  }
  return Errno(EINVAL);
}

}  // namespace pcifs::backend::sim
