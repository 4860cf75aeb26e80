// Tenant hand-over [S11] (handover.hpp): when a claim ends, every mediated
// endpoint of its IOMMU group is reset and restored to its clean baseline on
// the hand-over worker; the group stays unavailable (EAGAIN) until then.
#include <spdlog/spdlog.h>

#include <chrono>

#include "core/mediator_state.hpp"

namespace pcifs {

using core::DeviceState;

void Mediator::Impl::hand_over(const std::string& group) {
  std::vector<std::shared_ptr<DeviceState>> members;
  {
    ReadMostlyShared lock(devices_mu);
    for (const auto& [bdf, d] : devices) {
      if (d->group == group && !d->bridge() && !d->bound()) members.push_back(d);
    }
  }
  handovers.submit([this, group, members = std::move(members)] { run_hand_over(group, members); });
}

void Mediator::Impl::run_hand_over(const std::string& group,
                                   const std::vector<std::shared_ptr<DeviceState>>& members) {
  bool failed = false;
  for (const auto& d : members) {
    if (d->gone.load()) continue;
    d->await_discovery();  // a reset in the middle of Discovery would fail it (write_control)
    const auto start = std::chrono::steady_clock::now();
    auto r = d->control->hand_over(d->baseline, d->reset_method);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    if (!r && (r.error() == Errno(ENODEV) || d->gone.load())) continue;  // removed meanwhile
    if (r) {
      d->config->reset_virtual();
      d->handovers++;
      rediscover(d, /*reset=*/d->reset_method != core::ResetMethod::kNone);
      spdlog::info("{}: handed over: {}, baseline config, bus master off, D0 ({} ms)", d->bdf.str(),
                   d->reset_method == core::ResetMethod::kNone
                       ? std::string("no reset (the function has none: its memory is kept)")
                       : std::string(core::to_string(d->reset_method)) + " reset",
                   ms);
    } else {
      failed = true;
      d->handover_failures++;
      spdlog::error(
          "{}: hand-over failed ({}): {} stays unavailable (EAGAIN) and is retried "
          "at the next claim",
          d->bdf.str(), r.error().name(), group);
    }
    emit(MediatorEvent::device(MediatorEvent::Kind::kHandedOver, d->bdf,
                               r ? std::string(core::to_string(d->reset_method))
                                 : "failed: " + std::string(r.error().name())));
  }
  if (failed) {
    claims.handover_failed(group);
  } else {
    claims.handed_over(group);
  }
}

void Mediator::drain_handovers() { impl_->handovers.drain(); }

}  // namespace pcifs
