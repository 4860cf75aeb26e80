// Fuzzes device-set files (backend/sim/device_set.hpp), an operator's input
// to `--backend=sim:FILE`: sim::parse_device_set on the whole input. A small
// set that parses (at most kMaxBuilt functions) is then built and served the
// way the daemon serves it: a SimBackend, a Mediator over it with the default
// view, every device's files listed and its config, resource, rom and status
// read as root and as a user. The simulator's violation oracle must stay at
// zero: whatever the set describes, the core never makes an access hardware
// forbids. Sets with DOE fault modes are parsed only: their mailboxes answer
// after a timeout, too slow for fuzzing (the doe harness covers them).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.hpp"
#include "pcifs/mediator.hpp"
#include "sim/device_set.hpp"
#include "sim/sim_backend.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::backend::sim;

constexpr size_t kMaxBuilt = 8;
const Caller kRoot{100, 0, 0};
const Caller kUser{200, 1000, 1000};

bool buildable(const std::vector<DeviceSpec>& specs) {
  if (specs.size() > kMaxBuilt) return false;
  for (const auto& s : specs) {
    for (const auto& m : s.caps.doe) {
      if (m.fault != DoeFault::kNone) return false;
    }
  }
  return true;
}

void read_file(Mediator& med, ViewId view, const Caller& c, const FileRef& ref) {
  auto h = med.open(view, c, ref, OpenFlags{true, false, false});
  if (!h) return;
  std::vector<uint8_t> buf(4096);
  for (uint64_t off = 0; off < 64 * 1024; off += buf.size()) {
    auto n = med.read(*h, off, buf);
    if (!n || *n == 0) break;
  }
  med.release(*h);
}

void serve(const std::vector<DeviceSpec>& specs) {
  auto sim = std::make_shared<SimBackend>("sim (fuzz)", build_devices(specs));
  {
    MediatorOptions o;
    o.doe_timeout = std::chrono::milliseconds(50);
    Mediator med(sim, o);
    const ViewId view = med.add_view(ViewPolicy{});
    med.wait_for_discovery();
    (void)med.status_json(view);
    for (const Bdf& b : med.devices(view)) {
      auto files = med.files(view, b);
      if (!files) continue;
      for (const auto& f : *files) {
        const auto k = f.ref.kind;
        if (k == FileKind::kConfig || k == FileKind::kRom || k == FileKind::kResource ||
            k == FileKind::kOwner || k == FileKind::kPowerState || k == FileKind::kDoeFeature) {
          read_file(med, view, kRoot, f.ref);
          read_file(med, view, kUser, f.ref);
        }
      }
    }
  }
  for (const auto& d : sim->devices()) {
    if (d->violations().value_or(0) != 0) {
      const auto log = d->violation_log();
      fuzz::fail(d->info().bdf.str() + ": oracle violation: " + (log.empty() ? "" : log.back()));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet_logs();
  std::string error;
  auto specs = parse_device_set(fuzz::as_text(data, size), &error);
  if (!specs) {
    if (error.empty()) fuzz::fail("parse_device_set failed without a message");
    return 0;
  }
  if (specs->empty()) fuzz::fail("parse_device_set accepted an empty set");
  for (size_t i = 1; i < specs->size(); ++i) {
    if (!((*specs)[i - 1].bdf < (*specs)[i].bdf)) fuzz::fail("device set not sorted/unique by BDF");
  }
  if (buildable(*specs)) serve(*specs);
  return 0;
}
