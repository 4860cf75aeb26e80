// pcifs-dump: prints every function of a backend as `lspci -xxxx` would, so that
// `lspci -F FILE -vvv` decodes it (pciutils lib/dump.c reads this format):
//
//   DDDD:BB:DD.F CCSS: VVVV:DDDD (rev RR)     the address, then lspci -n style text
//   00: xx xx ... (16 bytes)                 the whole config space, 256 or 4096
//   ...                                      bytes, offsets in hex (3 digits above 0xff)
//   <blank line>
//
// Config is read through Device::config_read_block, one block per function: a
// read never has side effects (SPEC S4), so dumping a live backend is harmless.
// Exit status: 0 on success, 1 if a device could not be read, 2 on a bad command line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "select/open_backend.hpp"

namespace {

using pcifs::backend::Device;

void print_title(const pcifs::backend::DeviceInfo& info) {
  std::printf("%s %04x: %04x:%04x", info.bdf.str().c_str(), info.class_code >> 8, info.vendor,
              info.device);
  if (info.revision != 0) std::printf(" (rev %02x)", info.revision);
  std::printf("\n");
}

void print_rows(const std::vector<uint8_t>& config) {
  for (size_t row = 0; row < config.size(); row += 16) {
    std::printf(row < 0x100 ? "%02zx:" : "%03zx:", row);
    for (size_t i = row; i < row + 16 && i < config.size(); ++i) std::printf(" %02x", config[i]);
    std::printf("\n");
  }
}

// Returns false (and says why on stderr) if the config space could not be read.
bool dump_device(Device& dev) {
  const auto& info = dev.info();
  std::vector<uint8_t> config(info.config_size == 4096 ? 4096 : 256);
  auto r = dev.config_read_block(0, config);
  if (!r) {
    std::fprintf(stderr, "pcifs-dump: %s: config read failed: %s\n", info.bdf.str().c_str(),
                 std::string(r.error().name()).c_str());
    return false;
  }
  print_title(info);
  print_rows(config);
  std::printf("\n");
  return true;
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{
      "Print the config space of every device of a pcifs backend in the\n"
      "`lspci -xxxx` format, for `lspci -F FILE -vvv`."};
  std::string spec(pcifs::backend::kDefaultBackendSpec);
  app.add_option("--backend", spec,
                 "sim (embedded default set), sim:FILE.json, sysfs (/sys/bus/pci) or "
                 "sysfs:DIR (DIR/devices/<BDF>/...)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;  // SPEC S2: command-line errors exit with status 2
  }
  std::string error;
  auto backend = pcifs::backend::open_backend(spec, &error);
  if (!backend) {
    std::fprintf(stderr, "pcifs-dump: %s\n", error.c_str());
    return 2;
  }
  bool all_ok = true;
  for (auto& dev : (*backend)->devices()) all_ok = dump_device(*dev) && all_ok;
  return all_ok ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a backend bug must not look like a crash
    std::fprintf(stderr, "pcifs-dump: internal error: %s\n", e.what());
    return 1;
  }
}
