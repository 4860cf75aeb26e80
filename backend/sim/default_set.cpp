// The embedded default device set: the one place its JSON text lives (format:
// sim/device_set.hpp; the facts are summarised in sim/sim_backend.hpp).
// Device ids: 1b36:0008 host bridge and 1b36:000c root port as QEMU uses them;
// 1b36:10f0 / 10f1 / 10f2 for the pcifs endpoints.
#include "sim/sim_backend.hpp"

namespace pcifs::backend::sim {
namespace {

constexpr std::string_view kDefaultSet = R"json({
  "devices": [
    { "bdf": "0000:00:00.0", "vendor": "0x1b36", "device": "0x0008", "class": "0x060000",
      "iommu_group": 0 },

    { "bdf": "0000:00:01.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
      "type": "bridge", "config_size": 4096, "irq": 24, "iommu_group": 1,
      "secondary_bus": 1, "subordinate_bus": 1,
      "windows": { "io": ["0x1000", "0x1fff"], "mem": ["0xfe000000", "0xfe1fffff"],
                   "prefetch": ["0x8000000000", "0x80001fffff"] },
      "capabilities": { "pm": {}, "msi": {}, "pcie": { "port": "root_port" } } },

    { "bdf": "0000:00:02.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
      "type": "bridge", "config_size": 4096, "irq": 25, "iommu_group": 4,
      "secondary_bus": 2, "subordinate_bus": 2,
      "windows": { "mem": ["0xfe200000", "0xfe3fffff"] },
      "capabilities": { "pm": {}, "msi": {}, "pcie": { "port": "root_port" } } },

    { "bdf": "0000:01:00.0", "vendor": "0x1b36", "device": "0x10f0", "class": "0x050210",
      "subsystem_vendor": "0x1b36", "subsystem_device": "0x0001", "revision": 1,
      "config_size": 4096, "irq": 11, "iommu_group": 2,
      "bars": [
        { "index": 0, "type": "mem64", "prefetchable": true, "size": "0x100000", "address": "0x8000000000" },
        { "index": 2, "type": "mem32", "size": "0x10000", "address": "0xfe000000" },
        { "index": 4, "type": "io", "size": 256, "address": "0x1000" } ],
      "rom": { "size": "0x10000", "address": "0xfe010000",
               "images": [ { "size": "0x8000", "code_type": 0 }, { "size": "0x4000", "code_type": 3 } ] },
      "capabilities": {
        "pm": { "no_soft_reset": true },
        "msix": { "vectors": 8, "bar": 0, "table_offset": "0x2000", "pba_offset": "0x3000" },
        "pcie": { "port": "endpoint" },
        "aer": {},
        "dsn": { "serial": "0x0001b36f00000001" },
        "doe": [ { "cdat": true, "echo": true } ] } },

    { "bdf": "0000:01:00.1", "vendor": "0x1b36", "device": "0x10f1", "class": "0x058000",
      "subsystem_vendor": "0x1b36", "subsystem_device": "0x0001", "revision": 1,
      "config_size": 4096, "irq": 11, "iommu_group": 2,
      "bars": [ { "index": 0, "type": "mem32", "size": "0x10000", "address": "0xfe020000" } ],
      "capabilities": {
        "pm": { "no_soft_reset": false },
        "pcie": { "port": "endpoint" },
        "aer": {} } },

    { "bdf": "0000:02:00.0", "vendor": "0x1b36", "device": "0x10f2", "class": "0x120000",
      "subsystem_vendor": "0x1b36", "subsystem_device": "0x0002", "revision": 2,
      "config_size": 4096, "irq": 10, "iommu_group": 3,
      "bars": [ { "index": 0, "type": "mem64", "size": "0x100000", "address": "0xfe200000" } ],
      "rom": { "size": "0x100000", "address": "0xfe300000",
               "images": [ { "size": "0x10000", "code_type": 0 }, { "size": "0x20000", "code_type": 3 },
                           { "size": "0x10000", "code_type": 3 } ] },
      "capabilities": {
        "pm": {},
        "msix": { "vectors": 16, "bar": 0, "table_offset": "0x2000", "pba_offset": "0x3000" },
        "pcie": { "port": "endpoint" },
        "aer": {},
        "dsn": { "serial": "0x0001b36f00000002" },
        "doe": [ { "echo": true }, { "echo": true, "fault": "no_response" } ] } }
  ]
}
)json";

}  // namespace

std::string_view default_set_json() { return kDefaultSet; }

}  // namespace pcifs::backend::sim
