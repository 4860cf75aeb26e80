// The Mediator: attach devices, views, handles, claims. Reads and writes are
// in mediator_io.cpp, DOE in mediator_doe.cpp, the tree in mediator_files.cpp.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/log_limit.hpp"
#include "core/mediator_state.hpp"

namespace pcifs {

using core::DeviceState;
using core::Handle;

Mediator::Impl::Impl(std::shared_ptr<backend::Backend> b, MediatorOptions o)
    : backend(std::move(b)), options(std::move(o)), executor(options.doe_threads) {
  auto root = backend->shared_root();
  if (options.host_locks && root) {
    host_locks = std::make_unique<core::HostLocks>(options.host_locks->dir, *root,
                                                   options.host_locks->owner);
  }
}

Mediator::Mediator(std::shared_ptr<backend::Backend> backend, MediatorOptions options)
    : impl_(std::make_unique<Impl>(std::move(backend), std::move(options))) {
  {
    MutexLock serial(impl_->attach_mu);  // nobody else yet; attach() requires it
    for (auto& dev : impl_->backend->devices()) impl_->attach(dev);
  }
  Impl* impl = impl_.get();
  impl_->backend->set_hotplug_callback(
      [impl](const Bdf& bdf, bool added) { impl->on_hotplug(bdf, added); });
  if (impl_->host_locks) impl_->lease_watcher = std::thread([impl] { impl->watch_leases(); });
}

Mediator::~Mediator() {
  impl_->handovers.drain();  // claims that ended leave clean devices behind
  if (impl_->lease_watcher.joinable()) {
    {
      MutexLock lock(impl_->watch_mu);
      impl_->watch_stop = true;
    }
    impl_->watch_cv.notify_all();
    impl_->lease_watcher.join();
  }
  impl_->backend->set_hotplug_callback(nullptr);
  impl_->executor.shutdown();  // pending DOE exchanges complete (ESHUTDOWN) now
}

void Mediator::Impl::attach(const std::shared_ptr<backend::Device>& dev) {
  auto d = std::make_shared<DeviceState>();
  d->dev = dev;
  d->info = dev->info();
  d->bdf = d->info.bdf;
  d->group = core::ClaimTable::group_key(d->info);
  if (d->info.driver && *d->info.driver != "pci-stub") {
    d->owned_elsewhere = "bound to driver " + *d->info.driver;
  } else {
    lease(*d);
  }
  core::StepRecorder steps = step_recorder(*d);
  const bool unrecovered = core::recover_at_attach(*dev, steps).has_value();  // before any read
  // The image the config tables are built from: read once, while nobody else
  // can reach the device (it is not yet published).
  std::vector<uint8_t> image(d->info.config_size, 0);
  if (auto r = dev->config_read_block(0, image); !r) {
    spdlog::warn("{}: config unreadable at attach ({}); serving what the tables allow",
                 d->bdf.str(), r.error().name());
  }
  // The registers that cannot change are verified by a second read and then
  // served from the shadow [S15].
  auto reread = [&dev](uint32_t off, std::span<uint8_t> out) {
    return dev->config_read_block(off, out);
  };
  d->config = std::make_unique<core::ConfigSpace>(d->info, image, reread);
  spdlog::debug("{}: config shadow: {} bytes", d->bdf.str(), d->config->shadow().shadowed_bytes());
  d->control = std::make_unique<core::DeviceControl>(dev, &sink, image);
  d->control->set_step_recorder(std::move(steps));
  if (unrecovered) d->control->mark_unrecovered();
  d->baseline = core::clean_baseline(image);
  d->reset_method = core::reset_method_of(image);
  d->msix = core::msix_table_of(image);
  d->doe_caps = d->config->doe_offsets().size();
  if (!d->bound()) {
    for (uint16_t off : d->config->doe_offsets()) {
      core::DoeMailboxOptions mo;
      mo.response_timeout = options.doe_timeout;  // PCIe 6.0 §6.30.2: 1 s for each
      mo.busy_timeout = options.doe_timeout;
      mo.abort_timeout = options.doe_timeout;
      mo.label = d->bdf.str() +
                 (d->mailboxes.empty() ? " doe" : " doe." + std::to_string(d->mailboxes.size()));
      d->mailboxes.push_back(core::DoeMailbox::create(
          executor, std::make_unique<core::GatedDoeRegs>(*d->control, dev, off), mo));
    }
  }
  {
    // Before it is published: whatever needs doe_features/ before Discovery
    // has ended waits for it (Mediator::when_doe_discovered).
    MutexLock lock(d->doe_mu);
    d->features.assign(d->mailboxes.size(), std::nullopt);
    d->rediscover.assign(d->mailboxes.size(), DeviceState::Rediscover::kNever);
    d->discovery_pending = d->mailboxes.size();
  }
  {
    ReadMostlyExclusive lock(devices_mu);
    publish(d);
  }
  start_discovery(d);
  emit(MediatorEvent::device(MediatorEvent::Kind::kDeviceArrived, d->bdf,
                             d->owned_elsewhere.value_or("")));
}

// Crash hand-over (pcifs/step_journal.hpp): only a device leased here is
// journaled and recovered -- the lease proves no live daemon is mid-step on it.
core::StepRecorder Mediator::Impl::step_recorder(const core::DeviceState& d) const {
  if (!d.lease || !options.step_journal) return {};
  auto root = backend->shared_root();
  if (!root) return {};
  return core::StepRecorder(options.step_journal, *root, d.bdf);
}

// Before the device is published and before Discovery: a device another
// daemon mediates must not see a single DOE exchange from this one.
void Mediator::Impl::lease(core::DeviceState& d) {
  if (!host_locks || !options.host_locks->serves || !options.host_locks->serves(d.info)) return;
  auto got = host_locks->acquire(d.group);
  if (got.lease) {
    d.lease = std::move(got.lease);
  } else if (got.holder) {
    d.lease_refused = true;
    any_refused.store(true);
    d.owned_elsewhere =
        "served by another pcifs daemon (" + (got.holder->empty() ? "starting" : *got.holder) + ")";
    spdlog::warn(
        "{}: {}: read-only here (lock {}); serve each device from one daemon, with "
        "--view repeated",
        d.bdf.str(), *d.owned_elsewhere, host_locks->path_of(d.group));
  } else {
    spdlog::warn("{}: no host lock ({}): another pcifs daemon could mediate it too", d.bdf.str(),
                 got.error.value_or("?"));
  }
}

void Mediator::Impl::watch_leases() {
  for (;;) {
    {
      MutexLock lock(watch_mu);
      if (watch_cv.wait_for(watch_mu, options.host_locks->retry,
                            [&]() NO_THREAD_SAFETY_ANALYSIS { return watch_stop; })) {
        return;
      }
    }
    // A thread is a noexcept boundary: a failed pass is logged and the next
    // one runs at the next period. A pass that failed between a device's
    // leaving and its arriving anew left it out: it is attached again then.
    try {
      if (any_refused.load()) retry_refused_leases();
      reattach_missing();
    } catch (const std::exception& e) {
      watch_failed(e.what());
    } catch (...) {
      watch_failed("unknown exception");
    }
  }
}

void Mediator::Impl::watch_failed(const char* what) noexcept {
  try {
    PCIFS_LOG_LIMITED(error, "leasewatch", "lease watcher: a pass failed ({}); retried in {} ms",
                      what, options.host_locks->retry.count());
  } catch (...) {
  }
  missing_after_failure.store(true);
}

// After a failed pass only: every device the backend lists that is not
// attached (removed for a takeover, not yet back) arrives anew.
void Mediator::Impl::reattach_missing() {
  if (!missing_after_failure.exchange(false)) return;
  MutexLock serial(attach_mu);
  for (auto& dev : backend->devices()) {
    if (find(dev->info().bdf)) continue;
    spdlog::info("{}: attached again after a failed lease takeover", dev->info().bdf.str());
    attach(dev);
  }
}

// A group whose lease is free now (the daemon that held it ended) is taken
// over: each of its read-only devices leaves and arrives anew, mediated in
// full (Discovery included), as after a driver unbind.
void Mediator::Impl::retry_refused_leases() {
  MutexLock serial(attach_mu);
  std::map<std::string, std::vector<std::shared_ptr<DeviceState>>> refused;
  {
    ReadMostlyShared lock(devices_mu);
    for (const auto& [bdf, d] : devices) {
      if (d->lease_refused && !d->gone.load()) refused[d->group].push_back(d);
    }
  }
  for (const auto& [group, states] : refused) {
    auto got = host_locks->acquire(group);  // held until attach() has shared it
    if (!got.lease) continue;
    for (const auto& d : states) {
      spdlog::info("{}: the other pcifs daemon let go of {}: mediated here from now on",
                   d->bdf.str(), group);
      device_removed(d->bdf);
      attach(d->dev);
    }
  }
}

void Mediator::Impl::on_hotplug(const Bdf& bdf, bool added) {
  MutexLock serial(attach_mu);
  if (!added) return device_removed(bdf);
  for (auto& dev : backend->devices()) {
    if (dev->info().bdf == bdf && !find(bdf)) {
      spdlog::info("{}: arrived", bdf.str());
      attach(dev);
    }
  }
}

void Mediator::Impl::device_removed(const Bdf& bdf) {
  std::shared_ptr<DeviceState> d;
  {
    ReadMostlyExclusive lock(devices_mu);
    const auto* found = lookup(bdf);
    if (found == nullptr) return;
    d = *found;
    unpublish(*d);
  }
  d->gone.store(true);
  d->control->revoke();
  for (auto& mb : d->mailboxes) mb->close(Errno(ENODEV));
  // The removed device's handles give up their share of the group's claim; the
  // holder's handles on other functions of the group keep it [S11].
  auto mine = handles.select([&](const Handle& h) { return h.dev == d; });
  bool ended = false;
  for (auto& h : mine) {
    if (!h->claiming.exchange(false) || !claims.release(d->group, h->caller.pid, true)) continue;
    ended = true;
    claim_ended(*h);
  }
  spdlog::info("{}: removed{}", bdf.str(), ended ? "; its claim ended" : "");
  emit(MediatorEvent::device(MediatorEvent::Kind::kDeviceLeft, bdf, ""));
  sink.invalidate_mappings(bdf);
  sink.device_gone(bdf);
  // Last: the kernel's view of the tree is updated first (the lock file's
  // unlink is a system call between "not listed" and "not found" otherwise).
  d->lease.reset();  // the slot's next device (or another daemon) may lease the group
}

void Mediator::Impl::publish(const std::shared_ptr<DeviceState>& d) {
  if (const auto* old = lookup(d->bdf)) unpublish(**old);
  devices[d->bdf] = d;
  by_bdf[d->bdf] = d;
  if (d->info.iommu_group) by_group[*d->info.iommu_group].insert(d->bdf);
  if (d->info.driver) by_driver[*d->info.driver].insert(d->bdf);
}

void Mediator::Impl::unpublish(const DeviceState& d) {
  auto drop = [&](auto& index, const auto& key) {
    auto it = index.find(key);
    if (it == index.end()) return;
    it->second.erase(d.bdf);
    if (it->second.empty()) index.erase(it);
  };
  if (d.info.iommu_group) drop(by_group, *d.info.iommu_group);
  if (d.info.driver) drop(by_driver, *d.info.driver);
  const Bdf bdf = d.bdf;  // d may be owned by the entries erased here
  devices.erase(bdf);
  by_bdf.erase(bdf);
}

std::vector<Bdf> Mediator::Impl::selected(const ViewPolicy& v, const std::set<Bdf>& set,
                                          size_t limit) const {
  std::vector<Bdf> out;
  for (const Bdf& bdf : set) {
    if (out.size() >= limit) break;
    const auto* d = lookup(bdf);
    if (d == nullptr) continue;
    const auto& i = (*d)->info;
    if (v.selects(bdf, i.vendor, i.device, i.class_code)) out.push_back(bdf);
  }
  return out;
}

const ViewPolicy* Mediator::Impl::live_policy(ViewId view) const {
  if (views.removed(view)) return nullptr;
  return &views.policy(view);
}

std::shared_ptr<DeviceState> Mediator::Impl::find(const Bdf& bdf) const {
  ReadMostlyShared lock(devices_mu);
  const auto* d = lookup(bdf);
  return d == nullptr ? nullptr : *d;
}

std::shared_ptr<DeviceState> Mediator::Impl::find_in(ViewId view, const Bdf& bdf) const {
  auto d = find(bdf);
  if (!d) return nullptr;
  const auto& i = d->info;
  return policy(view).selects(bdf, i.vendor, i.device, i.class_code) ? d : nullptr;
}

const ViewPolicy& Mediator::Impl::policy(ViewId view) const { return views.policy(view); }

std::shared_ptr<Handle> Mediator::Impl::handle(HandleId h) { return handles.find(h); }

Errno Mediator::Impl::missing(HandleId h) {
  MutexLock lock(handles_mu);
  return Errno(orphans.count(h) ? ENODEV : EBADF);
}

ViewId Mediator::add_view(ViewPolicy policy) { return impl_->views.add(std::move(policy)); }

const ViewPolicy& Mediator::view(ViewId id) const { return impl_->policy(id); }

void Mediator::set_revocation_sink(RevocationSink* sink) { impl_->sink.set(sink); }

std::vector<Bdf> Mediator::devices(ViewId view) const {
  const ViewPolicy& v = impl_->policy(view);
  std::vector<Bdf> out;
  if (impl_->removed(view)) return out;
  ReadMostlyShared lock(impl_->devices_mu);
  for (const auto& [bdf, d] : impl_->devices) {
    if (v.selects(bdf, d->info.vendor, d->info.device, d->info.class_code)) out.push_back(bdf);
  }
  return out;
}

// No copy of the device's shared_ptr: its count is a line every request on
// the device would write.
bool Mediator::has_device(ViewId view, const Bdf& bdf) const {
  const ViewPolicy* v = impl_->live_policy(view);
  return v != nullptr && impl_->with_device(*v, bdf, [](const DeviceState&) { return true; });
}

std::shared_ptr<backend::Device> Mediator::device(const Bdf& bdf) const {
  auto d = impl_->find(bdf);
  return d ? d->dev : nullptr;
}

std::optional<int> Mediator::iommu_group(ViewId view, const Bdf& bdf) const {
  auto d = impl_->find_in(view, bdf);
  return d ? d->info.iommu_group : std::nullopt;
}

std::optional<std::string> Mediator::driver(ViewId view, const Bdf& bdf) const {
  auto d = impl_->find_in(view, bdf);
  return d ? d->info.driver : std::nullopt;
}

template <class Key>
std::vector<Bdf> Mediator::Impl::indexed(ViewId view, Index<Key> Impl::*index, const Key& key,
                                         size_t limit) const {
  const ViewPolicy* v = live_policy(view);
  if (!v) return {};
  ReadMostlyShared lock(devices_mu);
  auto it = (this->*index).find(key);
  return it == (this->*index).end() ? std::vector<Bdf>{} : selected(*v, it->second, limit);
}

template <class Key>
std::vector<Key> Mediator::Impl::index_keys(ViewId view, Index<Key> Impl::*index) const {
  std::vector<Key> out;
  const ViewPolicy* v = live_policy(view);
  if (!v) return out;
  {
    ReadMostlyShared lock(devices_mu);
    for (const auto& [key, set] : this->*index) {
      if (!selected(*v, set, 1).empty()) out.push_back(key);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<Bdf> Mediator::group_devices(ViewId view, int group) const {
  return impl_->indexed(view, &Impl::by_group, group, SIZE_MAX);
}

std::vector<Bdf> Mediator::driver_devices(ViewId view, const std::string& driver) const {
  return impl_->indexed(view, &Impl::by_driver, driver, SIZE_MAX);
}

bool Mediator::has_group(ViewId view, int group) const {
  return !impl_->indexed(view, &Impl::by_group, group, 1).empty();
}

bool Mediator::has_driver(ViewId view, const std::string& driver) const {
  return !impl_->indexed(view, &Impl::by_driver, driver, 1).empty();
}

std::vector<int> Mediator::iommu_groups(ViewId view) const {
  return impl_->index_keys(view, &Impl::by_group);
}

std::vector<std::string> Mediator::drivers(ViewId view) const {
  return impl_->index_keys(view, &Impl::by_driver);
}

// --- claims [S11]

Result<void> Mediator::Impl::claim(Handle& h, bool wait) {
  DeviceState& d = *h.dev;
  if (d.bridge() || h.claiming.load()) return Ok();  // bridges neither take nor block
  core::ClaimHolder holder;
  auto r = claims.acquire(d.group, h.caller, h.policy->name, &holder);
  const auto deadline = std::chrono::steady_clock::now() + kHandoverWait;
  while (!r && holder.handing_over) {
    if (claims.retry_handover(d.group)) hand_over(d.group);  // the last one failed
    if (!wait) return Errno(kWouldWait);
    if (std::chrono::steady_clock::now() >= deadline) {
      d.counters.add(core::DeviceCounters::kBusy);
      PCIFS_LOG_LIMITED(warn, "handover:" + d.bdf.str(),
                        "{}: {} EAGAIN for pid={}: {} is still being handed over ({})", d.bdf.str(),
                        core::file_name(h.ref), h.caller.pid, d.group, core::to_string(holder));
      return r.error();
    }
    claims.wait_handed_over(d.group, deadline);
    r = claims.acquire(d.group, h.caller, h.policy->name, &holder);
  }
  if (!r) {
    d.counters.add(core::DeviceCounters::kBusy);
    PCIFS_LOG_LIMITED(warn, "busy:" + d.bdf.str(),
                      "{}: {} EBUSY for pid={} uid={} view={}: claimed by {}", d.bdf.str(),
                      core::file_name(h.ref), h.caller.pid, h.caller.uid, h.policy->name,
                      core::to_string(holder));
    return r.error();
  }
  if (h.claiming.exchange(true)) {
    claims.release(d.group, h.caller.pid);  // a racing write on this handle claimed first
    return Ok();
  }
  journal_changed_locking(h);
  if (!dma_allowed(h)) stop_mastering(h);  // each function of the group as it is claimed
  if (holder.handles == 1) {               // the first claiming handle of this process
    spdlog::info("{}: claimed by pid={} uid={} view={} ({})", d.bdf.str(), h.caller.pid,
                 h.caller.uid, h.policy->name, core::file_name(h.ref));
    emit(MediatorEvent::claim(MediatorEvent::Kind::kClaimTaken, d.bdf, d.group, h.caller.pid,
                              h.caller.uid, h.policy->name));
  }
  return Ok();
}

// low_power_access=wake [S9]: an access by the claim holder brings the device to D0.
Result<void> Mediator::Impl::wake_if_allowed(Handle& h, bool wait) {
  DeviceState& d = *h.dev;
  if (d.control->power_state() == PowerState::kD0) return Ok();
  if (h.policy->low_power_access != LowPowerAccess::kWake) return Errno(EIO);
  if (!d.bridge() && !claims.held_by(d.group, h.caller.pid)) return Errno(EIO);
  PCIFS_TRY(d.control->wake(wait));
  spdlog::info("{}: woken to D0 for pid={}", d.bdf.str(), h.caller.pid);
  emit(MediatorEvent::device(MediatorEvent::Kind::kPower, d.bdf,
                             std::string(to_string(PowerState::kD0))));
  rediscover(h.dev, /*reset=*/false);
  return Ok();
}

// --- open / release

Result<HandleId> Mediator::open(ViewId view, const Caller& caller, const FileRef& ref,
                                OpenFlags flags, bool wait) {
  if (impl_->removed(view)) return Errno(ENODEV);
  auto d = impl_->find_in(view, ref.bdf);
  if (!d || d->gone.load()) return Errno(ENOENT);
  const ViewPolicy& v = impl_->policy(view);
  if (auto r = impl_->check_open(v, caller, *d, ref, flags); !r) {
    d->counters.add(core::DeviceCounters::kDenials);
    if (r.error() == Errno(EBUSY) && d->bound()) {  // S15
      PCIFS_LOG_LIMITED(warn, "bound:" + d->bdf.str(), "{}: EBUSY for pid={} uid={}: {}",
                        d->bdf.str(), caller.pid, caller.uid, *d->owned_elsewhere);
      return r.error();
    }
    PCIFS_LOG_LIMITED(info, "deny:" + d->bdf.str(),
                      "{}: open of {} denied ({}) for pid={} uid={} view={}", d->bdf.str(),
                      core::file_name(ref), r.error().name(), caller.pid, caller.uid, v.name);
    return r.error();
  }
  auto h = std::make_shared<Handle>();
  h->view = view;
  h->policy = &impl_->policy(view);
  h->caller = caller;
  h->ref = ref;
  h->flags = flags;
  h->dev = std::move(d);  // one count of the device's shared_ptr per open, not three
  core::DeviceState* dev = h->dev.get();
  // In the table before it may claim, so that every way out below ends it
  // through release(), which also ends a claim it took: an open that fails
  // (EBUSY) or throws after the claim (a log line, an event, no memory) can
  // never leave a claim behind with no handle to end it. No daemon-wide lock
  // or counter: the id comes from this CPU's counter (handle_table.hpp).
  impl_->handles.insert_new(h, [&](HandleId id) { h->id = id; });  // may throw: nothing taken yet
  dev->counters.add(core::DeviceCounters::kOpens);
  struct Undo {
    Mediator* m;
    HandleId id;
    ~Undo() {
      if (id == 0) return;
      try {
        m->release(id);
      } catch (...) {  // a destructor, maybe while unwinding: nothing may leave it
      }
    }
  } undo{this, h->id};
  if (ref.kind == FileKind::kBar) PCIFS_TRY(impl_->claim(*h, wait));  // S11: opening a BAR claims
  // A removal of the view that began meanwhile either finds this handle in
  // the table (and revokes it, perhaps before its claim above) or set its
  // flag before this looks: the fence orders the table insert before the
  // load, as remove_view orders its flag before its look at the table.
  // Either way the open fails and `undo` ends what it took.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (impl_->removed(view) || h->revoked.load()) return Errno(ENODEV);
  if (auto* j = impl_->journal.load()) {
    HandleRecord rec{h->id, v.name, ref, flags, caller, h->claiming.load(), false};
    j->opened(rec);
  }
  undo.id = 0;
  return h->id;
}

// ------------------------------------------------------------------ restarts

void Mediator::set_handle_journal(HandleJournal* journal) { impl_->journal.store(journal); }

void Mediator::confirm_open(HandleId h) {
  if (auto* j = impl_->journal.load()) j->confirmed(h);
}

void Mediator::Impl::journal_changed(core::Handle& h) {
  if (auto* j = journal.load()) {
    j->changed(h.id, h.claiming.load(), h.doe.state != core::DoeSlot::State::kIdle);
  }
}

void Mediator::Impl::journal_changed_locking(core::Handle& h) {
  if (!journal.load()) return;
  MutexLock lock(h.mu);
  journal_changed(h);
}

void Mediator::reserve_handle_ids(HandleId first) { impl_->handles.ids_from(first); }

Result<void> Mediator::adopt_handle(ViewId view, const HandleRecord& r) {
  if (impl_->removed(view)) return Errno(ENODEV);
  if (r.id == 0) return Errno(EINVAL);
  auto d = impl_->find_in(view, r.ref.bdf);
  if (!d || d->gone.load() || !stat(view, r.ref)) {
    // Its device (or the file) left the view while no daemon ran: the handle
    // is taken over dead, as if it had been revoked then (ENODEV), and stays
    // in the journal until the kernel releases it.
    MutexLock lock(impl_->handles_mu);
    if (impl_->handles.contains(r.id) || !impl_->orphans.insert(r.id).second) return Errno(EEXIST);
    impl_->handles.ids_from(r.id + 1);
    spdlog::info("{}: handle {} of pid={} taken over dead: its device left while no daemon ran",
                 r.ref.bdf.str(), r.id, r.caller.pid);
    return Ok();
  }
  auto h = std::make_shared<Handle>();
  h->id = r.id;
  h->view = view;
  h->policy = &impl_->policy(view);
  h->caller = r.caller;
  h->ref = r.ref;
  h->flags = r.flags;
  h->dev = d;
  {
    MutexLock lock(impl_->handles_mu);
    if (impl_->orphans.count(r.id) || !impl_->handles.insert(r.id, h)) return Errno(EEXIST);
    impl_->handles.ids_from(r.id + 1);
  }
  d->counters.add(core::DeviceCounters::kOpens);
  const ViewPolicy& v = impl_->policy(view);
  if (r.claiming && !d->bridge()) {
    core::ClaimHolder holder;
    if (auto c = impl_->claims.acquire(d->group, r.caller, v.name, &holder); c) {
      h->claiming.store(true);
      if (!impl_->dma_allowed(*h)) impl_->stop_mastering(*h);
      if (holder.handles == 1) {
        spdlog::info("{}: claim of pid={} uid={} view={} taken over from the previous daemon",
                     d->bdf.str(), r.caller.pid, r.caller.uid, v.name);
      }
    } else {
      // Only a journal that contradicts itself gets here: the handle goes on
      // without the claim (its next BAR access claims again or gets EBUSY).
      spdlog::warn("{}: the claim of pid={} could not be taken over: {} holds {}", d->bdf.str(),
                   r.caller.pid, core::to_string(holder), d->group);
    }
  }
  MutexLock lock(h->mu);
  if (r.ref.kind == FileKind::kDoe && r.doe_busy) {
    // The exchange died with the old process: its reader learns it once.
    h->doe.state = core::DoeSlot::State::kReady;
    h->doe.response = Errno(EIO);
    h->doe.pos = 0;
    h->doe.lost = true;
  }
  if (h->claiming.load() != r.claiming) impl_->journal_changed(*h);
  return Ok();
}

void Mediator::release(HandleId id) {
  std::shared_ptr<Handle> h = impl_->handles.erase(id);
  if (!h) {
    MutexLock lock(impl_->handles_mu);
    if (impl_->orphans.erase(id))
      if (auto* j = impl_->journal.load()) j->released(id);
    return;
  }
  DeviceState& d = *h->dev;
  d.counters.add(core::DeviceCounters::kReleases);
  uint64_t ticket = 0;
  Mediator::ReadDone pending;
  {
    MutexLock lock(h->mu);
    if (h->doe.state == core::DoeSlot::State::kInFlight) ticket = h->doe.ticket;
    pending = std::move(h->doe.pending);
    h->doe.pending = nullptr;
    h->doe.state = core::DoeSlot::State::kIdle;
  }
  if (ticket && h->ref.index < d.mailboxes.size()) d.mailboxes[h->ref.index]->cancel(ticket);
  if (pending) pending(Errno(ECANCELED));
  if (auto* j = impl_->journal.load()) j->released(id);
  if (h->claiming.exchange(false) && impl_->claims.release(d.group, h->caller.pid, true)) {
    spdlog::info("{}: claim of pid={} released", d.bdf.str(), h->caller.pid);
    impl_->claim_ended(*h);
  }
}

}  // namespace pcifs
