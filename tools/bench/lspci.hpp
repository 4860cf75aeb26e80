// pcifs-bench --lspci: what `lspci -vvv -xxxx` costs over a pcifs mount of the
// sysfs backend compared with the same lspci over the sysfs tree itself [S15],
// measured in one run with alternating rounds. It also checks that both print
// the same bytes (as root, and as nobody over the mount).
//
// Read-only on the sysfs tree: lspci only reads, and the daemon opens config
// read-only until something writes (nothing here does).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace pcifs::bench {

struct LspciRun {
  double ms = 0;
  std::string out;
  bool ok = false;
};
// The device names under ROOT/devices, sorted (none when it cannot be read).
std::vector<std::string> list_devices(const std::string& root);

// Runs lspci with `args`, as `uid` (0: unchanged), capturing stdout and timing it.
LspciRun run_lspci(const std::vector<std::string>& args, uid_t uid);

struct LspciBenchArgs {
  std::string pcifs;              // the daemon
  std::string transport = "dev";  // its --transport
  std::string root = "/sys/bus/pci";
  unsigned rounds = 15;
  bool json = false;
};

// Returns the exit status: 0, 1 (failure), 77 (no devices or no lspci: nothing to compare).
int run_lspci_bench(const LspciBenchArgs& a);

}  // namespace pcifs::bench
