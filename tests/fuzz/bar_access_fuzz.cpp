// Fuzzes BAR access widths and offsets [S5] through the Mediator, with the
// simulator's violation oracle armed: each input is a sequence of operations
// on a fresh Mediator over the default set -- reads and writes of resourceN
// at offsets and lengths from the input (aligned or not, inside, across and
// past the end), interleaved with what changes whether a BAR may be touched:
// Command register writes (decode on/off: a quiesce), ROM BAR writes (ROM
// decode), power_state and reset writes, and claims ending. The core must
// answer each access with data or an errno and never let a forbidden access
// (decode off, D3, ROM decode on, out of range, bad width) reach a device.
#include <linux/pci_regs.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/sim_mediator.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::fuzz;

constexpr std::array<size_t, 12> kLengths = {1, 2, 4, 8, 1, 2, 4, 8, 3, 16, 0, 4104};
constexpr size_t kMaxOps = 64;

uint64_t bar_offset(Input& in) {
  switch (in.byte() % 4) {
    case 0: return in.byte();                       // the register block
    case 1: return in.u16();                        // inside the small BARs
    case 2: return in.u32() % (uint64_t{3} << 20);  // inside, at and past the 1 MiB BARs' end
    default: return in.uint(8);                     // anywhere, overflow included
  }
}

void bar_access(SimMediator& m, Input& in) {
  const uint8_t sel = in.byte();
  const Bdf b = kDevices[3 + sel % 3];  // the endpoints
  const uint16_t bar = static_cast<uint16_t>((sel >> 2) % 7);
  const bool write = (sel & 0x80) != 0;
  const uint64_t off = bar_offset(in);
  const size_t len = kLengths[in.byte() % kLengths.size()];
  auto h = m.handle(kRoot, FileRef{b, FileKind::kBar, bar, {}}, true);
  if (!h) return;
  if (write) {
    auto r = m.write(*h, off, in.padded(len));
    if (r && *r > len) fail("BAR write reports more than it was given");
  } else {
    std::vector<uint8_t> buf(len);
    auto r = m.read(*h, off, buf);
    if (r && *r > len) fail("BAR read returns more than asked for");
  }
}

void config_write(SimMediator& m, Input& in, uint64_t off, size_t len) {
  const Bdf b = kDevices[3 + in.byte() % 3];
  m.write_file(kRoot, FileRef{b, FileKind::kConfig, 0, {}}, off, in.padded(len));
}

void control_write(SimMediator& m, Input& in, FileKind k) {
  const Bdf b = kDevices[3 + in.byte() % 3];
  m.control_write(b, k, k == FileKind::kReset ? 0 : in.byte());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  SimMediator m;
  for (size_t n = 0; n < kMaxOps && !in.empty(); ++n) {
    switch (in.byte() % 12) {
      case 0:
      case 1:
      case 2:
      case 3:
      case 4:
      case 5: bar_access(m, in); break;
      case 6: config_write(m, in, PCI_COMMAND, 2); break;
      case 7: config_write(m, in, PCI_ROM_ADDRESS, 4); break;
      case 8: config_write(m, in, in.byte() % 0x40, 4); break;  // BAR registers and around
      case 9: control_write(m, in, FileKind::kPowerState); break;
      case 10: control_write(m, in, FileKind::kReset); break;
      case 11: m.release_one(in.byte()); break;
    }
  }
  m.med().drain_handovers();
  m.check_oracle();
  return 0;
}
