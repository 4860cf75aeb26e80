#include "sim/device_set_caps.hpp"

#include <linux/pci_regs.h>

namespace pcifs::backend::sim {
namespace {

using nlohmann::json;

constexpr size_t kMaxDoeMailboxes = 8;

void parse_pm(const JsonObject& c, CapsSpec& caps) {
  JsonObject pm(c.at("pm"), c.path("pm"));
  pm.only({"no_soft_reset"});
  caps.pm = true;
  caps.no_soft_reset = pm.boolean("no_soft_reset", false);
}

void parse_msix(const JsonObject& c, const DeviceSpec& spec, CapsSpec& caps) {
  JsonObject m(c.at("msix"), c.path("msix"));
  m.only({"vectors", "bar", "table_offset", "pba_offset"});
  caps.msix = true;
  caps.msix_vectors = static_cast<uint16_t>(m.uint("vectors", 1, 2048, 8));
  caps.msix_bar = static_cast<uint8_t>(m.uint("bar", 0, 5, 0));
  const BarSpec& bar = spec.bars[caps.msix_bar];
  if (bar.kind == BarKind::kNone || bar.kind == BarKind::kIo) {
    json_fail(m.path("bar"), "expected the index of a memory BAR of this function");
  }
  caps.msix_table_offset = static_cast<uint32_t>(m.uint("table_offset", 0, 0xfffffff8, 0x2000));
  caps.msix_pba_offset = static_cast<uint32_t>(m.uint("pba_offset", 0, 0xfffffff8, 0x3000));
  // PCIe 6.0 §7.7.2: QWORD-aligned offsets; the structures lie inside the BAR.
  uint64_t table_end = uint64_t{caps.msix_table_offset} + uint64_t{16} * caps.msix_vectors;
  uint64_t pba_end =
      uint64_t{caps.msix_pba_offset} + uint64_t{8} * ((caps.msix_vectors + 63u) / 64u);
  if (caps.msix_table_offset % 8 != 0 || table_end > bar.size) {
    json_fail(m.path("table_offset"), "expected a multiple of 8 with the table inside the BAR");
  }
  if (caps.msix_pba_offset % 8 != 0 || pba_end > bar.size) {
    json_fail(m.path("pba_offset"), "expected a multiple of 8 with the PBA inside the BAR");
  }
}

void parse_pcie(const JsonObject& c, const DeviceSpec& spec, CapsSpec& caps) {
  JsonObject p(c.at("pcie"), c.path("pcie"));
  p.only({"port", "flr"});
  caps.pcie = true;
  std::string port =
      p.has("port") ? p.string("port") : (spec.header_type == 1 ? "root_port" : "endpoint");
  if (port == "endpoint" && spec.header_type == 0) {
    caps.port_type = PortType::kEndpoint;
  } else if (port == "root_port" && spec.header_type == 1) {
    caps.port_type = PortType::kRootPort;
  } else {
    json_fail(p.path("port"), spec.header_type == 1 ? "expected \"root_port\" for a bridge"
                                                    : "expected \"endpoint\" for an endpoint");
  }
  caps.flr = p.boolean("flr", caps.port_type == PortType::kEndpoint);
}

DoeFault parse_fault(const JsonObject& m) {
  std::string f = m.has("fault") ? m.string("fault") : "none";
  if (f == "none") return DoeFault::kNone;
  if (f == "no_response") return DoeFault::kNoResponse;
  if (f == "error") return DoeFault::kError;
  if (f == "stuck_busy") return DoeFault::kStuckBusy;
  if (f == "slow") return DoeFault::kSlow;
  json_fail(m.path("fault"), "expected none, no_response, error, stuck_busy or slow");
}

void parse_doe(const JsonObject& c, const DeviceSpec& spec, CapsSpec& caps) {
  const json& list = c.at("doe");
  if (!list.is_array() || list.empty() || list.size() > kMaxDoeMailboxes) {
    json_fail(c.path("doe"), "expected an array of 1 to 8 mailboxes");
  }
  for (size_t i = 0; i < list.size(); ++i) {
    JsonObject m(list[i], c.path("doe") + "[" + std::to_string(i) + "]");
    m.only({"cdat", "echo", "fault", "mailbox_dwords", "slow_delay_ms"});
    DoeResponderConfig cfg{spec.vendor};
    cfg.cdat = m.boolean("cdat", false);
    cfg.echo = m.boolean("echo", true);
    cfg.fault = parse_fault(m);
    cfg.mailbox_dwords = static_cast<uint32_t>(
        m.uint("mailbox_dwords", 4, kDoeMaxObjectDwords, kDoeMaxObjectDwords));
    cfg.slow_delay = std::chrono::milliseconds(m.uint("slow_delay_ms", 0, 60000, 200));
    caps.doe.push_back(cfg);
  }
}

void require_extended(const JsonObject& c, const DeviceSpec& spec, const char* key) {
  if (c.has(key) && spec.config_size != 4096) {
    json_fail(c.path(key), "an extended capability needs \"config_size\": 4096");
  }
}

void parse_empty(const JsonObject& c, const char* key, bool& flag) {
  if (!c.has(key)) return;
  JsonObject(c.at(key), c.path(key)).only({});
  flag = true;
}

}  // namespace

void parse_caps(const JsonObject& d, DeviceSpec& spec) {
  if (!d.has("capabilities")) return;
  JsonObject c(d.at("capabilities"), d.path("capabilities"));
  c.only({"pm", "msi", "msix", "pcie", "aer", "dsn", "doe"});
  CapsSpec& caps = spec.caps;
  if (c.has("pm")) parse_pm(c, caps);
  parse_empty(c, "msi", caps.msi);
  if (c.has("msix")) parse_msix(c, spec, caps);
  if (c.has("pcie")) parse_pcie(c, spec, caps);
  for (const char* key : {"aer", "dsn", "doe"}) require_extended(c, spec, key);
  parse_empty(c, "aer", caps.aer);
  if (c.has("dsn")) {
    JsonObject dsn(c.at("dsn"), c.path("dsn"));
    dsn.only({"serial"});
    caps.dsn = dsn.uint("serial", 0, ~uint64_t{0});
  }
  if (c.has("doe")) parse_doe(c, spec, caps);
}

}  // namespace pcifs::backend::sim
