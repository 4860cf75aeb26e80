// Which FUSE transports pcifs-bench measures (issue 13 section 4: each
// transport against the floor on the same transport), and the kernel switch
// that FUSE over io_uring needs.
//
// The kernel offers io_uring to a FUSE server only while
// /sys/module/fuse/parameters/enable_uring is Y. The pcifs daemon never flips
// it; the bench does, for its own run only: UringSwitch sets it to Y and its
// destructor writes back the value it found. Owned by run() in pcifs_bench.cpp
// and declared before any mount, so it is restored after every mount is gone
// on every way out: a normal end, an error (an exception unwinds through it),
// and SIGINT/SIGTERM/SIGHUP (install_stop_handlers only sets a flag, the
// measurements throw, and the same unwinding restores it). Only SIGKILL can
// leave it changed. Only the process that set it puts it back, never a forked
// child. Not thread-safe; one per process.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pcifs::bench {

enum class BenchTransport { kDev, kUring };

inline constexpr const char* kEnableUringParam = "/sys/module/fuse/parameters/enable_uring";
// The switch's path: kEnableUringParam, or $PCIFS_BENCH_ENABLE_URING where set
// (the smoke test names a missing file to check the fallback on any kernel).
std::string enable_uring_path();

// "dev" / "uring": the daemon's --transport value and the JSON's "transport".
const char* transport_arg(BenchTransport t);
// "/dev/fuse" / "io_uring": what pcifs logs ("requests over ...") and what
// pcifs::fuse::Session::transport() says.
const char* transport_server_name(BenchTransport t);

class UringSwitch {
 public:
  // Sets enable_uring to Y and checks it reads back Y; nullptr and *error
  // when the file is missing or cannot be written.
  static std::unique_ptr<UringSwitch> turn_on(std::string* error);
  ~UringSwitch();  // writes back the value it found
  UringSwitch(const UringSwitch&) = delete;
  UringSwitch& operator=(const UringSwitch&) = delete;
  const std::string& previous() const { return previous_; }

 private:
  explicit UringSwitch(std::string previous);
  std::string previous_;
  pid_t owner_;  // a forked child that unwinds through the switch leaves it alone
};

class BenchMount;

// The floor's .floor_stats as key -> value (floor_fs.hpp).
std::map<std::string, std::string> floor_stats(const BenchMount& floor);

// Throws std::runtime_error unless `pcifs` logged that it serves over `t` (and
// not the other transport) and `floor` (where given) says it does: no figure
// is printed for a transport that silently fell back.
void check_served_over(BenchTransport t, const BenchMount& pcifs, const BenchMount* floor,
                       int timeout_ms);

// What --transport=dev|uring|both asks for, as far as this kernel allows.
struct TransportChoice {
  std::vector<BenchTransport> transports;
  std::unique_ptr<UringSwitch> uring_switch;  // set while io_uring is measured
  std::string note;                           // why `both` became dev only; "" if it did not
};

// `uring` on a kernel without the switch, or one the bench cannot set: false
// and *error. `both` then falls back to dev, saying so in `note`.
bool choose_transports(const std::string& arg, TransportChoice* out, std::string* error);

}  // namespace pcifs::bench
