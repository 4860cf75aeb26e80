// Fuzzes config space writes [S4] against the simulator with its violation
// oracle armed: each input is a sequence of operations on a fresh Mediator
// over the default set -- config writes (device, offset, width and data from
// the input, as root), config reads as root and as a user, power_state and
// reset writes, handles released (claims end, hand-over runs) -- through
// try_write/try_read first and the waiting calls when they say so, as the
// FUSE layer does. Whatever the writes do to the command register, PMCSR,
// BARs, DevCtl (FLR) or the DOE registers, no access hardware forbids may
// reach a device.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/sim_mediator.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::fuzz;

constexpr std::array<size_t, 12> kLengths = {1, 2, 4, 1, 2, 4, 3, 8, 16, 0, 64, 256};
constexpr size_t kMaxOps = 64;

uint64_t config_offset(Input& in) {
  const uint16_t v = in.u16();
  // Mostly the header and the capability area; sometimes anywhere, or past the end.
  return (v & 0x8000) != 0 ? v % 4200u : v % 0x100u;
}

void config_write(SimMediator& m, Input& in, const Caller& c) {
  const Bdf b = kDevices[in.byte() % kDevices.size()];
  const uint64_t off = config_offset(in);
  const size_t len = kLengths[in.byte() % kLengths.size()];
  m.write_file(c, FileRef{b, FileKind::kConfig, 0, {}}, off, in.padded(len));
}

void config_read(SimMediator& m, Input& in, const Caller& c) {
  const Bdf b = kDevices[in.byte() % kDevices.size()];
  const uint64_t off = config_offset(in);
  std::vector<uint8_t> buf(kLengths[in.byte() % kLengths.size()] * 17 % 4200);
  auto h = m.handle(c, FileRef{b, FileKind::kConfig, 0, {}}, false);
  if (h) (void)m.read(*h, off, buf);
}

void control_write(SimMediator& m, Input& in, FileKind k) {
  const Bdf b = kDevices[in.byte() % kDevices.size()];
  m.control_write(b, k, k == FileKind::kReset ? 0 : in.byte());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  SimMediator m;
  for (size_t n = 0; n < kMaxOps && !in.empty(); ++n) {
    switch (in.byte() % 10) {
      case 0:
      case 1:
      case 2:
      case 3: config_write(m, in, kRoot); break;
      case 4: config_write(m, in, in.byte() % 2 ? kRoot2 : kUser); break;
      case 5: config_read(m, in, kRoot); break;
      case 6: config_read(m, in, kUser); break;
      case 7: control_write(m, in, FileKind::kPowerState); break;
      case 8: control_write(m, in, FileKind::kReset); break;
      case 9: m.release_one(in.byte()); break;
    }
  }
  m.med().drain_handovers();
  m.check_oracle();
  return 0;
}
