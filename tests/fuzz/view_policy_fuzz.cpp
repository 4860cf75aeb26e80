// Fuzzes view files [S6]: core::parse_view on the whole input (what
// load_view_file hands it) and core::parse_selector on it as one "devices"
// entry. A parse either succeeds or fails with EINVAL and a message naming
// the file; it never throws, crashes or recurses without bound.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/view_policy.hpp"
#include "fuzz/fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pcifs;
  const auto text = fuzz::as_text(data, size);
  std::string error;
  auto v = core::parse_view(text, "fuzz.json", &error);
  if (v.ok()) {
    if (v->source != "fuzz.json") fuzz::fail("parse_view: source not kept");
    if (!v->has_uid && v->uid != 0) fuzz::fail("parse_view: uid without has_uid");
  } else {
    if (v.error().value() != EINVAL) fuzz::fail("parse_view: error not EINVAL");
    if (error.rfind("fuzz.json", 0) != 0)
      fuzz::fail("parse_view: message without the file: " + error);
  }
  if (size <= 64) {
    auto sel = core::parse_selector(text);
    if (sel && sel->kind == DeviceSelector::Kind::kBdf && Bdf::parse(sel->bdf.str()) != sel->bdf) {
      fuzz::fail("parse_selector: BDF does not round-trip");
    }
  }
  return 0;
}
