#include "sysfs/sysfs_attrs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdlib>

#include "sysfs/unique_fd.hpp"

namespace pcifs::backend::sysfs {
namespace {

std::string_view trim(std::string_view t) {
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.remove_suffix(1);
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  return t;
}

uint32_t le(std::span<const uint8_t> b, size_t off, unsigned width) {
  uint32_t v = 0;
  for (unsigned k = 0; k < width && off + k < b.size(); ++k) {
    v |= static_cast<uint32_t>(b[off + k]) << (8 * k);
  }
  return v;
}

// An attribute parsed as hex, or the fallback (taken from config) if the file is
// absent or unreadable: sysfs is the kernel's view (quirks applied), config is not.
uint64_t hex_attr_or(const std::string& dir, const char* name, uint64_t fallback) {
  auto text = read_text_file(dir + "/" + name);
  if (!text) return fallback;
  return parse_hex_attr(*text).value_or(fallback);
}

int dec_attr_or(const std::string& dir, const char* name, int fallback) {
  auto text = read_text_file(dir + "/" + name);
  if (!text) return fallback;
  auto v = parse_dec_attr(*text);
  if (!v || *v < INT_MIN || *v > INT_MAX) return fallback;
  return static_cast<int>(*v);
}

std::vector<DoeFeature> read_doe_features(const std::string& dir) {
  std::vector<DoeFeature> out;
  DIR* d = ::opendir((dir + "/doe_features").c_str());
  if (d == nullptr) return out;  // absent: the kernel discovered no DOE mailbox
  while (dirent* e = ::readdir(d)) {
    if (auto f = parse_doe_feature_name(e->d_name)) out.push_back(*f);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The root of a device directory's real path (see pcie_root_from_path).
std::string pcie_root_of(const std::string& dir) {
  char* real = ::realpath(dir.c_str(), nullptr);
  if (real == nullptr) return {};
  std::string out = pcie_root_from_path(real);
  std::free(real);
  return out;
}

std::optional<int> iommu_group_of(const std::string& dir) {
  auto name = link_basename(dir + "/iommu_group");
  if (!name) return std::nullopt;
  auto v = parse_dec_attr(*name);
  if (!v || *v < 0 || *v > INT_MAX) return std::nullopt;
  return static_cast<int>(*v);
}

}  // namespace

std::string pcie_root_from_path(std::string_view path) {
  auto is_hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view c = path.substr(start, end - start);
    // "pciDDDD:BB": 3 + 4 + 1 + 2 characters.
    if (c.size() == 10 && c.starts_with("pci") && c[7] == ':' &&
        std::all_of(c.begin() + 3, c.begin() + 7, is_hex) && is_hex(c[8]) && is_hex(c[9])) {
      return std::string(c);
    }
    start = end + 1;
  }
  return {};
}

std::optional<uint64_t> parse_hex_attr(std::string_view text) {
  text = trim(text);
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<int64_t> parse_dec_attr(std::string_view text) {
  text = trim(text);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 10);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<std::vector<Resource>> parse_resource_text(std::string_view text) {
  std::vector<Resource> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    line = trim(line);
    if (line.empty()) continue;
    uint64_t f[3];
    for (auto& field : f) {
      size_t sp = line.find(' ');
      auto v = parse_hex_attr(line.substr(0, sp));
      if (!v) return std::nullopt;
      field = *v;
      line = sp == std::string_view::npos ? std::string_view() : trim(line.substr(sp + 1));
    }
    if (!line.empty()) return std::nullopt;
    // The kernel writes an empty resource as 0 0 or with end = start - 1; one
    // that ends further before its start would have a size of nearly 2^64.
    if (f[1] < f[0] && f[1] != f[0] - 1) return std::nullopt;
    out.push_back(Resource{f[0], f[1], f[2]});
  }
  if (out.size() < 7) out.resize(7);
  return out;
}

std::optional<DoeFeature> parse_doe_feature_name(std::string_view name) {
  if (name.size() != 7 || name[4] != ':') return std::nullopt;
  unsigned vendor = 0, type = 0;
  auto [p1, e1] = std::from_chars(name.data(), name.data() + 4, vendor, 16);
  auto [p2, e2] = std::from_chars(name.data() + 5, name.data() + 7, type, 16);
  if (e1 != std::errc() || e2 != std::errc() || p1 != name.data() + 4 || p2 != name.data() + 7) {
    return std::nullopt;
  }
  return DoeFeature{static_cast<uint16_t>(vendor), static_cast<uint8_t>(type)};
}

Result<std::string> read_text_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_from(errno);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_from(errno);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1u << 20)) return Errno(EFBIG);  // not an attribute
  }
}

std::optional<std::string> link_basename(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  std::string_view target(buf, static_cast<size_t>(n));
  while (target.size() > 1 && target.back() == '/') target.remove_suffix(1);
  size_t slash = target.rfind('/');
  if (slash != std::string_view::npos) target.remove_prefix(slash + 1);
  if (target.empty()) return std::nullopt;
  return std::string(target);
}

Result<DeviceInfo> read_device_info(const std::string& dir, const Bdf& bdf,
                                    std::span<const uint8_t> config_head, uint32_t config_size) {
  if (config_head.size() < 64) return Errno(EIO);
  DeviceInfo info;
  info.bdf = bdf;
  info.config_size = config_size;
  info.header_type = static_cast<uint8_t>(config_head[PCI_HEADER_TYPE] & 0x7f);
  info.vendor =
      static_cast<uint16_t>(hex_attr_or(dir, "vendor", le(config_head, PCI_VENDOR_ID, 2)));
  info.device =
      static_cast<uint16_t>(hex_attr_or(dir, "device", le(config_head, PCI_DEVICE_ID, 2)));
  info.class_code = static_cast<uint32_t>(
      hex_attr_or(dir, "class", le(config_head, PCI_CLASS_REVISION, 4) >> 8) & 0xffffff);
  info.revision = static_cast<uint8_t>(hex_attr_or(dir, "revision", config_head[PCI_REVISION_ID]));
  bool type0 = info.header_type == PCI_HEADER_TYPE_NORMAL;
  info.subsystem_vendor = static_cast<uint16_t>(hex_attr_or(
      dir, "subsystem_vendor", type0 ? le(config_head, PCI_SUBSYSTEM_VENDOR_ID, 2) : 0));
  info.subsystem_device = static_cast<uint16_t>(
      hex_attr_or(dir, "subsystem_device", type0 ? le(config_head, PCI_SUBSYSTEM_ID, 2) : 0));
  info.irq = dec_attr_or(dir, "irq", 0);
  info.numa_node = dec_attr_or(dir, "numa_node", -1);
  auto res_text = read_text_file(dir + "/resource");
  if (!res_text) return res_text.error();
  auto res = parse_resource_text(*res_text);
  if (!res) return Errno(EIO);
  info.resources = std::move(*res);
  info.driver = link_basename(dir + "/driver");
  info.iommu_group = iommu_group_of(dir);
  info.pcie_root = pcie_root_of(dir);
  info.kernel_doe_features = read_doe_features(dir);
  return info;
}

}  // namespace pcifs::backend::sysfs
