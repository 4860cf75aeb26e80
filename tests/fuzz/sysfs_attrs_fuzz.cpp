// Fuzzes what the sysfs backend parses out of sysfs [S15]: text attributes
// (hex, decimal), the `resource` table, doe_features/ names, the PCI root in a
// device's path, and read_device_info over a device directory whose files
// hold the input. The first byte picks the parser; the rest is the text.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_input.hpp"
#include "sysfs/sysfs_attrs.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::backend::sysfs;

// A device directory in a temp dir, made once per process and left for the
// OS to clean up (the replayer and libFuzzer exit without destructors).
const std::string& device_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/pcifs-fuzz-sysfs-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (d == nullptr) fuzz::fail("mkdtemp");
    return std::string(d);
  }();
  return dir;
}

void put(const std::string& name, std::string_view text) {
  const std::string path = device_dir() + "/" + name;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fuzz::fail("open " + path);
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    fuzz::fail("write " + path);
  }
  ::close(fd);
}

void check_resources(const std::vector<backend::Resource>& res) {
  if (res.size() < 7) fuzz::fail("resource table shorter than 7 entries");
  for (const auto& r : res) {
    // The kernel writes an empty resource as 0 0 0 or as end = start - 1;
    // an entry that ends before it starts has no bytes, never 2^64 - n.
    if (r.end < r.start && r.size() != 0) fuzz::fail("resource entry ends before it starts");
  }
}

// Every attribute read_device_info looks at, filled from the input: the
// text is cut at each '|' (in order: vendor, device, class, irq, numa_node,
// resource); missing pieces leave the file absent.
void device_info(std::string_view text) {
  static constexpr std::array<const char*, 6> kFiles = {"vendor", "device",    "class",
                                                        "irq",    "numa_node", "resource"};
  for (const char* f : kFiles) ::unlink((device_dir() + "/" + f).c_str());
  for (const char* f : kFiles) {
    if (text.empty()) break;
    const size_t bar = text.find('|');
    put(f, text.substr(0, bar));
    text = bar == text.npos ? std::string_view() : text.substr(bar + 1);
  }
  std::array<uint8_t, 64> head{};
  head[0] = 0x36;
  head[1] = 0x1b;
  auto info = read_device_info(device_dir(), Bdf{}, head, 256);
  if (info) check_resources(info->resources);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const uint8_t mode = in.byte();
  const std::string_view text = in.rest_text();
  switch (mode % 6) {
    case 0: {
      auto v = parse_hex_attr(text);
      if (v && text.find_first_not_of("0123456789abcdefABCDEFxX \n") != text.npos) {
        fuzz::fail("parse_hex_attr accepted a non-hex character");
      }
      break;
    }
    case 1: (void)parse_dec_attr(text); break;
    case 2:
      if (auto r = parse_resource_text(text)) check_resources(*r);
      break;
    case 3: (void)parse_doe_feature_name(text); break;
    case 4: {
      const std::string root = pcie_root_from_path(text);
      if (!root.empty() && text.find(root) == text.npos) fuzz::fail("pcie_root not in the path");
      break;
    }
    case 5: device_info(text); break;
  }
  return 0;
}
