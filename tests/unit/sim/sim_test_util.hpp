// Helpers shared by the simulator's unit tests: the default backend's devices
// by BDF, a capability finder over the live config, and must-succeed accessors.
#pragma once

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <memory>
#include <string>

#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::backend::sim::testing {

inline Bdf bdf(const char* text) { return *Bdf::parse(text); }

inline std::shared_ptr<SimDevice> dev(SimBackend& b, const char* text) {
  auto d = b.find(bdf(text));
  EXPECT_NE(d, nullptr) << text;
  return d;
}

inline uint32_t rd(SimDevice& d, uint32_t off, unsigned width) {
  auto v = d.config_read(off, width);
  EXPECT_TRUE(v.ok()) << "config read at " << off;
  return v.value_or(0xdeadbeef);
}

inline void wr(SimDevice& d, uint32_t off, unsigned width, uint32_t value) {
  auto r = d.config_write(off, width, value);
  EXPECT_TRUE(r.ok()) << "config write at " << off;
}

inline uint64_t bar_rd(SimDevice& d, unsigned bar, uint64_t off, unsigned width) {
  auto v = d.bar_read(bar, off, width);
  EXPECT_TRUE(v.ok()) << "bar" << bar << " read at " << off;
  return v.value_or(0xdeadbeef);
}

inline void bar_wr(SimDevice& d, unsigned bar, uint64_t off, unsigned width, uint64_t v) {
  auto r = d.bar_write(bar, off, width, v);
  EXPECT_TRUE(r.ok()) << "bar" << bar << " write at " << off;
}

// Walks the live config of the device (standard list, then extended list) the
// way a driver would, independently of the model's own bookkeeping.
inline uint32_t find_cap(SimDevice& d, uint16_t id, bool extended, unsigned nth = 0) {
  if (!extended) {
    uint32_t off = rd(d, PCI_CAPABILITY_LIST, 1);
    for (int hops = 0; off != 0 && hops < 48; ++hops) {
      if (rd(d, off, 1) == id && nth-- == 0) return off;
      off = rd(d, off + 1, 1);
    }
    return 0;
  }
  uint32_t off = 0x100;
  for (int hops = 0; off != 0 && hops < 512; ++hops) {
    uint32_t h = rd(d, off, 4);
    if ((h & 0xffff) == id && nth-- == 0) return off;
    off = h >> 20;
  }
  return 0;
}

inline uint64_t violations(SimDevice& d) { return d.violations().value_or(~uint64_t{0}); }

inline std::string last_violation(SimDevice& d) {
  auto log = d.violation_log();
  return log.empty() ? std::string() : log.back();
}

}  // namespace pcifs::backend::sim::testing
