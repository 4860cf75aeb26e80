// Reading a sysfs PCI device directory into a DeviceInfo, the way lspci's
// linux-sysfs method does (pciutils lib/sysfs.c): text attributes, the
// `resource` table, the `driver` and `iommu_group` links and `doe_features/`.
//
// Pure parsing functions and one reader that only opens files read-only.
// Everything here is stateless and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::backend::sysfs {

// "0x8086\n" -> 0x8086 (prefix optional, one trailing newline allowed).
std::optional<uint64_t> parse_hex_attr(std::string_view text);
// The PCI root in a device's real sysfs path: the first component shaped
// "pciDDDD:BB" ("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0" gives
// "pci0000:00"); empty when there is none.
std::string pcie_root_from_path(std::string_view path);
// "-1\n" -> -1: irq and numa_node are decimal.
std::optional<int64_t> parse_dec_attr(std::string_view text);
// Every line of a sysfs `resource` file, padded with empty entries to 7.
// nullopt if a line is malformed.
std::optional<std::vector<Resource>> parse_resource_text(std::string_view text);
// "1e98:02" -> {0x1e98, 0x02}.
std::optional<DoeFeature> parse_doe_feature_name(std::string_view name);

// Whole small file (attributes are at most a page); ENODEV if missing.
Result<std::string> read_text_file(const std::string& path);
// Basename of a symlink's target, nullopt if there is no such link.
std::optional<std::string> link_basename(const std::string& path);

// Everything DeviceInfo holds, for the device directory `dir` whose config
// image starts with `config_head` (at least 64 bytes) and is `config_size` long.
// Attributes that are missing fall back to the config image (IDs, class,
// revision) or to neutral defaults (irq 0, numa_node -1).
Result<DeviceInfo> read_device_info(const std::string& dir, const Bdf& bdf,
                                    std::span<const uint8_t> config_head, uint32_t config_size);

}  // namespace pcifs::backend::sysfs
