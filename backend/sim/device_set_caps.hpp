// The "capabilities" member of a device-set entry (format: sim/device_set.hpp).
// Internal to the loader. Throws JsonError naming the field on invalid input.
// Thread safety: pure function.
#pragma once

#include "sim/device_spec.hpp"
#include "sim/json_reader.hpp"

namespace pcifs::backend::sim {

// Reads d["capabilities"] (if present) into spec.caps and checks it against the
// rest of spec (BARs, header type, config size), which must be parsed already.
void parse_caps(const JsonObject& d, DeviceSpec& spec);

}  // namespace pcifs::backend::sim
