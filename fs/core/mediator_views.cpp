// Views at runtime [S16]: removing a view (S12 revoke of everything opened
// through it), what a view holds, the IOMMU-group rule for new views, device
// health, and the event sink that `pcifs view watch` reads.
#include <spdlog/spdlog.h>

#include <set>

#include "core/mediator_state.hpp"

namespace pcifs {

using core::DeviceState;
using core::Handle;

void Mediator::set_event_sink(EventSink sink) {
  MutexLock lock(impl_->event_mu);
  impl_->events = sink ? std::make_shared<const EventSink>(std::move(sink)) : nullptr;
}

void Mediator::Impl::emit(const MediatorEvent& e) const {
  std::shared_ptr<const EventSink> to;
  {
    MutexLock lock(event_mu);
    to = events;
  }
  if (to) (*to)(e);
}

void Mediator::Impl::claim_ended(const Handle& h) {
  emit(MediatorEvent::claim(MediatorEvent::Kind::kClaimReleased, h.dev->bdf, h.dev->group,
                            h.caller.pid, h.caller.uid, h.policy->name));
  hand_over(h.dev->group);
}

bool Mediator::Impl::removed(ViewId view) const { return views.removed(view); }

bool Mediator::view_removed(ViewId id) const { return impl_->removed(id); }

// Each handle first becomes dead (no new access starts), then its DOE work is
// cancelled and its claim ends; the mappings of every device it had a BAR of
// are invalidated last, so a fault after that reads through a dead handle
// (ENODEV: SIGBUS).
void Mediator::remove_view(ViewId id) {
  if (!impl_->views.remove(id)) return;
  // The flag before the look at the table: an open that this misses sees the
  // flag (Mediator::open).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto mine = impl_->handles.select([&](const Handle& h) { return h.view == id; });
  std::set<Bdf> mapped;
  size_t claims_ended = 0;
  for (auto& h : mine) {
    h->revoked.store(true);
    h->dev->counters.add(core::DeviceCounters::kRevokedHandles);
    uint64_t ticket = 0;
    ReadDone pending;
    {
      MutexLock lock(h->mu);
      if (h->doe.state == core::DoeSlot::State::kInFlight) ticket = h->doe.ticket;
      pending = std::move(h->doe.pending);
      h->doe.pending = nullptr;
      h->doe.state = core::DoeSlot::State::kIdle;
    }
    DeviceState& d = *h->dev;
    if (ticket && h->ref.index < d.mailboxes.size()) d.mailboxes[h->ref.index]->cancel(ticket);
    if (pending) pending(Errno(ENODEV));
    if (h->ref.kind == FileKind::kBar) mapped.insert(d.bdf);
    if (h->claiming.exchange(false) && impl_->claims.release(d.group, h->caller.pid, true)) {
      ++claims_ended;
      impl_->claim_ended(*h);
    }
  }
  for (const Bdf& bdf : mapped) impl_->sink.invalidate_mappings(bdf);
  spdlog::info("view {} removed: {} handle(s) revoked, {} claim(s) ended", view(id).name,
               mine.size(), claims_ended);
}

ViewUsage Mediator::view_usage(ViewId id) const {
  ViewUsage u;
  std::set<std::tuple<Bdf, pid_t, uid_t>> claims;
  for (const auto& h : impl_->handles.select([&](const Handle& x) { return x.view == id; })) {
    if (h->revoked.load()) continue;
    ++u.open_handles;
    if (h->claiming.load()) claims.insert({h->dev->bdf, h->caller.pid, h->caller.uid});
  }
  for (const auto& [bdf, pid, uid] : claims) u.claims.push_back({bdf, pid, uid});
  return u;
}

namespace {

uid_t owner_of(const ViewPolicy& v) { return v.has_uid ? v.uid : 0; }

bool selects(const ViewPolicy& v, const DeviceState& d) {
  return v.selects(d.bdf, d.info.vendor, d.info.device, d.info.class_code);
}

}  // namespace

std::optional<std::string> Mediator::group_conflict(const ViewPolicy& candidate) const {
  if (candidate.share_iommu_group) return std::nullopt;
  std::vector<ViewPolicy> live = impl_->views.live_policies();
  std::erase_if(live, [&](const ViewPolicy& v) { return owner_of(v) == owner_of(candidate); });
  ReadMostlyShared lock(impl_->devices_mu);
  for (const auto& [bdf, d] : impl_->devices) {
    if (d->bridge() || !selects(candidate, *d)) continue;
    for (const auto& [other_bdf, e] : impl_->devices) {
      if (e->bridge() || e->group != d->group) continue;
      for (const auto& v : live) {
        if (!selects(v, *e)) continue;
        return "devices: " + bdf.str() + " is in IOMMU " + d->group + " with " + other_bdf.str() +
               ", which view " + v.name + " (uid " + std::to_string(owner_of(v)) +
               ") selects: DMA isolation is per IOMMU group, so a group is never split between "
               "uids (set \"share_iommu_group\": true to allow it)";
      }
    }
  }
  return std::nullopt;
}

std::string Mediator::health(const Bdf& bdf) const {
  auto d = impl_->find(bdf);
  if (!d || d->gone.load()) return "removed";
  if (d->info.driver && *d->info.driver != "pci-stub") return "bound:" + *d->info.driver;
  if (d->lease_refused) return "served-elsewhere";
  if (d->control->unrecovered()) return "recovery-failed";  // step_recovery.hpp
  if (d->control->power_state() != PowerState::kD0) return "low-power";
  for (const auto& mb : d->mailboxes) {
    if (mb->dead()) return "doe-dead";
  }
  // All-ones is how PCIe reports a read nobody answered; a failed read (not a
  // revoked gate: that is removal) is the same to a user.
  auto vendor = d->control->config_read(0, 2);
  if (vendor ? *vendor == 0xffff : vendor.error() != Errno(ENODEV)) return "unresponsive";
  return "ok";
}

std::vector<Mediator::HostDevice> Mediator::host_devices() const {
  std::vector<std::shared_ptr<core::DeviceState>> devs;
  {
    ReadMostlyShared lock(impl_->devices_mu);
    for (const auto& [bdf, d] : impl_->devices) devs.push_back(d);
  }
  std::vector<HostDevice> out;
  out.reserve(devs.size());
  for (const auto& d : devs) out.push_back(HostDevice{d->info, health(d->bdf)});
  return out;
}

std::vector<std::pair<Bdf, std::string>> Mediator::health_all() const {
  std::vector<Bdf> bdfs;
  {
    ReadMostlyShared lock(impl_->devices_mu);
    for (const auto& [bdf, d] : impl_->devices) bdfs.push_back(bdf);
  }
  std::vector<std::pair<Bdf, std::string>> out;
  out.reserve(bdfs.size());
  for (const Bdf& b : bdfs) out.emplace_back(b, health(b));
  return out;
}

}  // namespace pcifs
