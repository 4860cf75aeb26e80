// `status` [S3]: per device power state, owner, open handles, counters, DOE
// mailboxes, the ROM shadow, and for simulated devices the violation count.
#include <nlohmann/json.hpp>

#include "core/doe_object.hpp"
#include "core/mediator_state.hpp"

namespace pcifs {

using nlohmann::json;

namespace {

json counters_json(const core::DeviceState& d) {
  const auto& c = d.counters;
  auto cc = d.control->counters();
  return json{{"config_reads", c.get(core::DeviceCounters::kConfigReads)},
              {"config_writes", c.get(core::DeviceCounters::kConfigWrites)},
              {"bar_reads", c.get(core::DeviceCounters::kBarReads)},
              {"bar_writes", c.get(core::DeviceCounters::kBarWrites)},
              {"doe_exchanges", c.get(core::DeviceCounters::kDoeExchanges)},
              {"denials", c.get(core::DeviceCounters::kDenials)},
              {"busy", c.get(core::DeviceCounters::kBusy)},
              {"quiesces", cc.quiesces},
              {"power_transitions", cc.transitions},
              {"resets", cc.resets},
              {"rom_captures", cc.rom_captures},
              {"handovers", d.handovers.load()},
              {"handover_failures", d.handover_failures.load()}};
}

json doe_json(const core::DeviceState& d) {
  json out = json::array();
  for (size_t m = 0; m < d.mailboxes.size(); ++m) {
    auto s = d.mailboxes[m]->stats();
    out.push_back(json{{"mailbox", m},
                       {"dead", s.dead},
                       {"exchanges", s.exchanges},
                       {"completed", s.completed},
                       {"timeouts", s.timeouts},
                       {"errors", s.errors},
                       {"aborts", s.aborts},
                       {"cancelled", s.cancelled},
                       {"queued", s.queue_depth}});
  }
  return out;
}

}  // namespace

std::string Mediator::status_json(ViewId view) const {
  const ViewPolicy& v = impl_->policy(view);
  json devs = json::array();
  for (const Bdf& bdf : devices(view)) {
    auto d = impl_->find(bdf);
    if (!d) continue;
    json j{{"bdf", bdf.str()},
           {"power_state", std::string(to_string(d->control->power_state()))},
           {"health", health(bdf)},
           {"owner", impl_->claims.owner_text(d->group)},
           {"reset_method", std::string(core::to_string(d->reset_method))},
           {"open_handles", d->counters.open_handles()},
           {"counters", counters_json(*d)},
           {"doe", doe_json(*d)}};
    if (d->info.driver) j["driver"] = *d->info.driver;
    if (d->owned_elsewhere) j["read_only"] = *d->owned_elsewhere;  // S15: why pcifs only reads
    if (d->info.has_rom()) {
      std::string why = d->control->rom_error();
      j["rom"] = why.empty() ? json{{"valid", true}} : json{{"valid", false}, {"error", why}};
    }
    if (auto viol = d->dev->violations()) j["violations"] = *viol;
    if (auto why = d->dev->violation_log(); !why.empty()) j["violation_log"] = why;
    devs.push_back(std::move(j));
  }
  json out{{"view", v.name},
           {"backend", impl_->backend->describe()},
           {"allow_dma", v.allow_dma},
           {"devices", devs}};
  return out.dump(2) + "\n";
}

Result<StatusSnapshot> Mediator::status_snapshot(ViewId view, const Caller& caller) const {
  StatusSnapshot s;
  PCIFS_TRY_ASSIGN(share, impl_->status_budget.take(caller.uid));  // before the text is made
  s.share = std::move(share);
  s.text = status_json(view);
  return s;
}

}  // namespace pcifs
