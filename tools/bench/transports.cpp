// The bench's transports and the enable_uring switch (see transports.hpp).
#include "transports.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

#include "mounts.hpp"

namespace pcifs::bench {
namespace {

bool read_param(std::string* value) {
  std::ifstream in(enable_uring_path());
  return static_cast<bool>(in >> *value);
}

bool write_param(const std::string& value, std::string* error) {
  std::FILE* f = std::fopen(enable_uring_path().c_str(), "w");
  bool ok = f != nullptr && std::fputs((value + "\n").c_str(), f) >= 0;
  const int e = errno;
  if (f != nullptr && std::fclose(f) != 0) ok = false;
  if (!ok) *error = "cannot write " + enable_uring_path() + ": " + std::strerror(e);
  return ok;
}

}  // namespace

std::string enable_uring_path() {
  const char* p = std::getenv("PCIFS_BENCH_ENABLE_URING");
  return p && *p ? p : kEnableUringParam;
}

const char* transport_arg(BenchTransport t) {
  return t == BenchTransport::kUring ? "uring" : "dev";
}

const char* transport_server_name(BenchTransport t) {
  return t == BenchTransport::kUring ? "io_uring" : "/dev/fuse";
}

std::unique_ptr<UringSwitch> UringSwitch::turn_on(std::string* error) {
  std::string previous;
  if (access(enable_uring_path().c_str(), F_OK) != 0 || !read_param(&previous)) {
    *error = "no " + enable_uring_path() + ": this kernel has no FUSE over io_uring (Linux 6.14+)";
    return nullptr;
  }
  if (!write_param("Y", error)) return nullptr;
  std::unique_ptr<UringSwitch> s(new UringSwitch(previous));  // restores from here on
  std::string now;
  if (!read_param(&now) || now != "Y") {
    *error = enable_uring_path() + " reads '" + now + "' after writing Y";
    return nullptr;
  }
  return s;
}

UringSwitch::UringSwitch(std::string previous) : previous_(std::move(previous)), owner_(getpid()) {}

UringSwitch::~UringSwitch() {
  if (getpid() != owner_) return;
  std::string error;
  if (!write_param(previous_, &error)) {
    std::fprintf(stderr, "pcifs-bench: %s: it was %s before the bench set it to Y\n", error.c_str(),
                 previous_.c_str());
  }
}

bool choose_transports(const std::string& arg, TransportChoice* out, std::string* error) {
  out->transports = {BenchTransport::kDev};
  out->note.clear();
  if (arg == "dev") return true;
  std::string why;
  out->uring_switch = UringSwitch::turn_on(&why);
  if (out->uring_switch) {
    out->transports = arg == "uring" ? std::vector{BenchTransport::kUring}
                                     : std::vector{BenchTransport::kDev, BenchTransport::kUring};
    return true;
  }
  if (arg == "uring") {
    *error = "--transport=uring: " + why;
    return false;
  }
  out->note = "--transport=both: measuring /dev/fuse only: " + why;
  return true;
}

std::map<std::string, std::string> floor_stats(const BenchMount& floor) {
  std::ifstream in(floor.mountpoint() + "/.floor_stats");
  std::map<std::string, std::string> out;
  for (std::string k, v; in >> k >> v;) out[k] = v;
  return out;
}

void check_served_over(BenchTransport t, const BenchMount& pcifs, const BenchMount* floor,
                       int timeout_ms) {
  const std::string want = transport_server_name(t);
  const std::string other = transport_server_name(
      t == BenchTransport::kUring ? BenchTransport::kDev : BenchTransport::kUring);
  std::string error;
  const std::string log = pcifs.wait_transport_log(timeout_ms, &error);
  if (log.empty()) throw std::runtime_error(error);
  if (log.find("requests over " + want) == std::string::npos ||
      log.find("requests over " + other) != std::string::npos) {
    throw std::runtime_error(std::string("pcifs --transport=") + transport_arg(t) +
                             " does not serve over " + want + ", its log says:\n" + log);
  }
  if (floor == nullptr) return;
  const std::string got = floor_stats(*floor)["transport"];
  if (got != want) {
    throw std::runtime_error("the floor asked for " + want + " serves over '" + got + "'");
  }
}

}  // namespace pcifs::bench
