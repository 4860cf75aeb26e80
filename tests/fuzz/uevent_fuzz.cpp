// Fuzzes the uevent parser [S15]: sysfs::parse_uevent on the input as one
// datagram (what the monitor hands it, at most kMaxUeventSize bytes), then
// pci_event on what it accepted. Checks what parse_uevent promises: anything
// accepted ended with NUL, had an "ACTION@DEVPATH" header agreeing with its
// fields and a SUBSYSTEM; an accepted PCI event names a BDF that round-trips.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_input.hpp"
#include "sysfs/uevent.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pcifs;
  using namespace pcifs::backend::sysfs;
  const auto d = fuzz::as_text(data, size);
  auto ev = parse_uevent(d);
  if (!ev) return 0;
  if (d.size() > kMaxUeventSize || d.back() != '\0') fuzz::fail("accepted a truncated datagram");
  if (d.substr(0, ev->action.size() + 1 + ev->devpath.size()) != ev->action + "@" + ev->devpath) {
    fuzz::fail("accepted fields that disagree with the header");
  }
  if (ev->subsystem.empty() && d.find(std::string_view("SUBSYSTEM=\0", 11)) == d.npos) {
    fuzz::fail("accepted a datagram without SUBSYSTEM");
  }
  auto pci = pci_event(*ev);
  if (!pci) return 0;
  if (ev->subsystem != "pci") fuzz::fail("a PCI event from another subsystem");
  if (Bdf::parse(pci->bdf.str()) != pci->bdf)
    fuzz::fail("a PCI event BDF that does not round-trip");
  return 0;
}
