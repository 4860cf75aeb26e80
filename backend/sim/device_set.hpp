// Device sets: the JSON description of a set of simulated functions, and its
// validating parser. The embedded default set (sim/sim_backend.hpp,
// default_set_json()) is written in this format too.
//
// ---- Format (copied into the README) ----------------------------------------
// {
//   "devices": [                      // required, at least one entry
//     {
//       "bdf": "0000:01:00.0",        // required; the first function of the entry
//       "count": 1,                   // 1..65536 identical functions; the BDF
//                                     // increments the function (0-7), then the
//                                     // device (0-31), then the bus, like VFs
//       "vendor": "0x1b36",           // default 0x1b36; integers may be JSON
//       "device": "0x10f0",           // numbers or strings ("0x..." or decimal)
//       "subsystem_vendor": 0, "subsystem_device": 0,
//       "class": "0x050210",          // required, 24 bits
//       "revision": 1,
//       "type": "endpoint",           // "endpoint" (header type 0) | "bridge" (type 1)
//       "config_size": 4096,          // 256 | 4096 (default 256)
//       "irq": 11,                    // 0..255
//       "iommu_group": 2,             // optional; with count, function i gets
//       "iommu_group_shared": false,  //   group + i unless shared is true
//       "driver": "vfio-pci",         // optional bound driver name
//       "bars": [                     // endpoints: index 0-5; bridges: 0-1
//         { "index": 0, "type": "mem64",   // "mem32" | "mem64" (uses index+1 too) | "io"
//           "prefetchable": true,
//           "size": 1048576,               // power of two; memory >= 16, io 4..256
//           "address": "0xfe000000" }      // optional, aligned to size; default:
//       ],                                 // assigned in order; with count,
//                                          // function i gets address + i * size
//       "rom": { "size": 65536,            // power of two >= 2048
//                "address": "0xfe100000",  // optional, as for BARs
//                "images": [ { "size": 32768, "code_type": 0 } ] },
//                                          // size multiple of 512; images are
//                                          // laid out in order, the last flagged
//       // bridges only:
//       "secondary_bus": 1, "subordinate_bus": 1,   // primary is the own bus
//       "windows": { "io": ["0x1000", "0x1fff"], "mem": ["0xfe000000", "0xfe1fffff"],
//                    "prefetch": ["0x8000000000", "0x80001fffff"] },
//       "capabilities": {             // every capability is optional
//         "pm": { "no_soft_reset": true },
//         "msi": {},
//         "msix": { "vectors": 8, "bar": 0, "table_offset": "0x2000", "pba_offset": "0x3000" },
//         "pcie": { "port": "endpoint", "flr": true },   // "endpoint" | "root_port" (bridges)
//         "aer": {},                  // extended capabilities need config_size 4096
//         "dsn": { "serial": "0x0123456789abcdef" },     // with count: serial + i
//         "doe": [ { "cdat": false, "echo": true,        // one entry per mailbox;
//                    "fault": "none",                    // none | no_response | error
//                    "mailbox_dwords": 262144,           //   | stuck_busy | slow
//                    "slow_delay_ms": 200 } ]
//       }
//     }
//   ]
// }
// Unknown fields are errors (they are usually typos). Every error names the
// path of the field and what was expected, e.g.
//   "devices[2].bars[0].size: expected a power of two >= 16".
// BAR/ROM address ranges of different functions are not checked for overlap.
// A function is multi-function (header type bit 7) when another function of
// the same device number is in the set.
// ------------------------------------------------------------------------------
//
// Thread safety: parse_device_set is a pure function.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "pcifs/result.hpp"
#include "sim/device_spec.hpp"

namespace pcifs::backend::sim {

// One DeviceSpec per function, sorted by BDF. On failure: EINVAL and *error
// (if given) says where and why.
Result<std::vector<DeviceSpec>> parse_device_set(std::string_view text, std::string* error);

}  // namespace pcifs::backend::sim
