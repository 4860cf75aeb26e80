// Internal state of the Mediator (include/pcifs/mediator.hpp): per-device
// state, open handles, and the Impl that ties them to views and claims.
// Private to fs/core/mediator*.cpp.
//
// ---------------------------------------------------------------- Lock order
// The whole daemon's order, written here because the core is where the
// nestings meet (every other header that owns a lock points here). Levels,
// outer (taken first) to inner: holding a lock of level N, a thread takes
// only locks of levels > N. Locks of one level are never held together,
// except along a chain written "a -> b". Waiting for someone (a drain, a
// CondVar, a join, a FUSE worker the kernel waits for) counts as taking what
// that someone holds while it makes progress.
//
//  1  fuse::ViewHost::mu_         view add/rm/list/reap/stop. Held across
//                                 Mediator::add_view/remove_view (and the
//                                 sinks remove_view calls), wait_for_discovery,
//                                 drain_handovers (waits for the hand-over
//                                 worker: levels 3-8, never 1), FUSE
//                                 mount/unmount and joining a view's threads.
//                                 No FUSE handler takes it.
//  2  DoeExecutor::shutdown_mu_   held across joining the DOE workers and the
//                                 ESHUTDOWN completions (-> Handle::mu, doe_mu).
//     SysfsBackend::rescan_mu_    held across the hot-plug callback (-> 4).
//  3  DeviceControl's ControlSlot one control operation per device (a flag and
//     (device_control.hpp)        a CondVar; LockOrderProbe shows it to TSan).
//                                 Held across the quiesce (AccessGate drains,
//                                 the revocation sink), a physical operation,
//                                 change_decode's write (-> 5, 6) and the
//                                 backend's remove(), whose hot-plug callback
//                                 takes attach_mu (-> 4). Two slots are never
//                                 held together.
//  4  Impl::attach_mu             the device set changes: attach, removal,
//                                 lease takeover. Held across backend
//                                 devices(), HostLocks::acquire,
//                                 DeviceControl::revoke (drains every token),
//                                 DoeMailbox::close, the event sink and the
//                                 revocation sink. Never a ControlSlot under
//                                 it (3 -> 4: a remove() would wait here for
//                                 itself): claim-end work that needs one runs
//                                 on the hand-over worker (handover.hpp).
//  5  AccessToken                 an admitted access (access_gate.hpp): a
//                                 shared hold of its device's gate, which the
//                                 drains of levels 3 and 4 wait for. Under a
//                                 token: levels 6-8 only, never a wait for a
//                                 control operation.
//  6  DeviceState::write_mu       one config write, plan + apply, taken after
//                                 the write's config token. Never held across
//                                 a control operation or a sink call: a FUSE
//                                 handler waits on it.
//  7  Impl::devices_mu -> Impl::handles_mu -> Handle::mu -> DeviceState::doe_mu
//     Impl::handles_mu -> a HandleTable shard's mu (a leaf: handle_table.hpp)
//     ViewTable::mu_ (Impl::views; readers take no lock: view_table.hpp),
//     Impl::event_mu, Impl::watch_mu
//                                 bookkeeping. Each is taken
//                                 alone today (the chain is the order a future
//                                 nesting must follow); nothing is called with
//                                 one held but the doe_mu CondVar wait and a
//                                 CallerBudget share given back (Handle::mu).
//  8  leaves, and short chains written "a -> b": nothing of levels 1-7 is
//     taken while one is held, and no callback runs under one.
//     core:    ClaimTable::mu_, HostLocks::mu_ (held across open + flock
//              LOCK_NB of a lock file), LogLimiter::mu_, ConfigSpace::mu_,
//              CallerBudget's mu, HandoverWorker::mu_ (jobs run without it),
//              DeviceControl::rom_mu_, ControlSlot's own mu_, AccessGate::mu_
//              (its CondVar: waits for a physical operation, a ROM capture or
//              a drain), DoeMailbox::mu_, DoeExecutor::mu_ (a mailbox wakes
//              the executor after it let go of its own mu_).
//     fuse:    ViewHost::publish_mu_ -> HostControl::mu_ -> control::
//              WatcherHub::mu_ -> control::WatchQueue::mu_ (events; the
//              Mediator's event sink enters at HostControl::mu_);
//              Revoker::mu_ (held across fuse_lowlevel_notify_inval_*: see
//              "Sink"); Deferred::mu_ and Lanes::mu_ (jobs run without them),
//              FhObjects::mu_, DriverNames::mu_, control::Server::mu_,
//              session.cpp's g_init_mu, g_disowned_mu.
//     backend: sim Registry::mu -> SimDevice::mu_ -> SimDevice::vmu_;
//              FaultBackend::mu_, FaultDevice::mu_ (its hooks run without it),
//              SysfsBackend::mu_ (after rescan_mu_), SysfsDevice::mu_,
//              UringBatch::mu_, UeventMonitor::mu_. A device access takes
//              these under any of levels 2-7 (a config write under write_mu,
//              a transition under a ControlSlot, attach under attach_mu).
//
// Sink: the revocation sink (fuse Revoker) calls notify_inval_inode, and the
// kernel may wait there for a FUSE loop worker: the writeback of a dirty BAR
// page, or the FUSE_READ of a fault holding a page lock. So no loop worker
// may wait for a lock held across a sink call, nor for a ControlSlot: control
// operations and the waits for them run off the workers (Mediator::try_read
// and try_write answer kWouldWait; fuse/deferred.hpp's Lanes run the request),
// ViewHost::mu_, attach_mu and Revoker::mu_ are never taken by a loop worker,
// and write_mu is never held across a sink call.
//
// Callbacks (event sink, revocation sink, DOE completions, ReadDone,
// hot-plug) are called with no level-7 or level-8 lock held.
//
// Checked by: clang -Wthread-safety-beta (ACQUIRED_BEFORE, where both locks
// are members of one class), TSan's deadlock detector (tools/test.sh tsan;
// lock_order_test.cpp takes the nestings above from several threads).
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/caller_budget.hpp"
#include "core/claims.hpp"
#include "core/config_space.hpp"
#include "core/device_control.hpp"
#include "core/device_counters.hpp"
#include "core/dma_guard.hpp"
#include "core/doe_executor.hpp"
#include "core/doe_mailbox.hpp"
#include "core/handle_table.hpp"
#include "core/handover.hpp"
#include "core/host_locks.hpp"
#include "core/view_table.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

struct DeviceState {
  Bdf bdf;
  std::shared_ptr<backend::Device> dev;
  backend::DeviceInfo info;
  std::string group;  // claim key (ClaimTable::group_key)
  std::unique_ptr<ConfigSpace> config;
  std::unique_ptr<DeviceControl> control;
  std::vector<std::shared_ptr<DoeMailbox>> mailboxes;  // unbound devices only
  size_t doe_caps = 0;                                 // DOE capabilities in config
  std::atomic<bool> gone{false};
  DeviceCounters counters;
  // Tenant hand-over (handover.hpp), fixed at attach: the state each new
  // claim starts from, and how the function is reset to it.
  core::ConfigImage baseline;
  core::ResetMethod reset_method = core::ResetMethod::kNone;
  std::atomic<uint64_t> handovers{0};  // completed
  std::atomic<uint64_t> handover_failures{0};
  std::optional<core::MsixTable> msix;  // its Message Address fields are DMA targets
  // One config write (plan + apply) at a time. Taken after the write's config
  // token (AccessToken before write_mu) and never held across a control
  // operation: a Command write that changes decode plans, drops it, and
  // plans again inside change_decode, after the quiesce.
  Mutex write_mu ACQUIRED_BEFORE(doe_mu){
      "DeviceState::write_mu"};  // lock order: level 6 (top of this file)

  mutable Mutex doe_mu{"DeviceState::doe_mu"};  // lock order: level 7, last of its chain
  mutable CondVar discovery_cv;
  // Per mailbox: what Discovery reported; nullopt until it has run. Set
  // before the device is published; Discovery then runs in the background.
  std::vector<std::optional<std::vector<backend::DoeFeature>>> features GUARDED_BY(doe_mu);
  size_t discovery_pending GUARDED_BY(doe_mu) = 0;
  // Per mailbox: whether, and when, its last Discovery runs again
  // (Mediator::Impl::rediscover).
  //  - kAtD0: refused because the device was not in D0 (it arrived in low
  //    power): when the device is next brought to D0.
  //  - kAtReset: the mailbox failed it in D0 (its Error bit, or a response
  //    that is not Discovery's): after the function's next reset (the reset
  //    file, or a hand-over that resets), which puts a mailbox back to its
  //    initial state; a power change alone would find the same.
  //  - kNever: it succeeded, or timed out in D0 -- each further try would
  //    cost the DOE timeout, and hold the device's control writes as long.
  enum class Rediscover : uint8_t { kNever, kAtD0, kAtReset };
  std::vector<Rediscover> rediscover GUARDED_BY(doe_mu);
  // Mediator::when_doe_discovered's callbacks, run when it reaches 0.
  std::vector<std::function<void()>> discovery_waiters GUARDED_BY(doe_mu);

  // Somebody else owns the device and pcifs only reads [S15]: "bound to
  // driver NAME", or "served by another pcifs daemon (pid N, ...)" when
  // another daemon holds its host lease. Set at attach, before publishing.
  std::optional<std::string> owned_elsewhere;
  std::shared_ptr<HostLease> lease;  // this daemon's host lease on the group, if any
  bool lease_refused = false;        // another daemon holds it: retried (watch_leases)
  bool bound() const { return owned_elsewhere.has_value(); }
  bool bridge() const { return info.is_bridge(); }
  // Waits until Discovery has finished on every mailbox: each exchange ends
  // by the DOE timeout, or at once when the device goes or the executor shuts
  // down. Only on a thread that may wait and is not the DOE executor's (a
  // device lane, the hand-over worker), holding no other lock.
  void await_discovery() const EXCLUDES(doe_mu);
  // What the mailboxes have reported so far; complete once Discovery has
  // finished (Mediator::when_doe_discovered). Never waits.
  std::vector<backend::DoeFeature> doe_features() const EXCLUDES(doe_mu);
};

// The DOE exchange of one handle [S8]: one in flight at a time.
struct DoeSlot {
  enum class State : uint8_t { kIdle, kInFlight, kReady };
  State state = State::kIdle;
  uint64_t ticket = 0;
  Result<std::vector<uint8_t>> response{std::vector<uint8_t>{}};
  size_t pos = 0;
  Mediator::ReadDone pending;  // a blocked read waiting for the response
  size_t pending_max = 0;
  std::function<void()> wake;    // poll notification, fired once
  std::vector<uint8_t> partial;  // the first pieces of a write the kernel split
  // Taken over from a daemon that died with this exchange in flight: the
  // next read or write gets EIO once (Mediator::adopt_handle).
  bool lost = false;
  // This exchange's share of the DOE bound (Impl::doe_budget): held from the
  // write until the response is read to its end (or the handle ends).
  std::shared_ptr<void> budget;
};

struct Handle {
  HandleId id = 0;
  ViewId view = 0;
  // Its view's policy, as policy(view) gives it: views never change and live
  // as long as the Mediator, so the request path reads it without views_mu.
  const ViewPolicy* policy = nullptr;
  Caller caller;
  FileRef ref;
  OpenFlags flags;
  std::shared_ptr<DeviceState> dev;
  std::atomic<bool> claiming{false};
  std::atomic<bool> revoked{false};  // its view was removed: dead for good (ENODEV)
  // Lock order: level 7, after Impl::handles_mu, before DeviceState::doe_mu.
  Mutex mu{"Handle::mu"};
  DoeSlot doe GUARDED_BY(mu);
};

// DOE registers through the power gate: every access is admitted (D0 only) or
// fails with EIO, so an exchange never reaches a device in low power [S9].
class GatedDoeRegs final : public DoeRegs {
 public:
  GatedDoeRegs(DeviceControl& control, std::shared_ptr<backend::Device> dev, uint16_t cap)
      : control_(control), dev_(std::move(dev)), cap_(cap) {}
  Result<uint32_t> read(uint32_t reg) override;
  Result<void> write(uint32_t reg, uint32_t value) override;
  void begin_exchange() override { begun_ = context(); }

 private:
  // Changes whenever the device may have lost its DOE state. Not the status
  // counters: they count an operation before its quiesce, so an exchange that
  // began in between would have taken the new value and yet run before the loss.
  uint64_t context() const { return control_.state_generation(); }
  Result<void> admit_same_context() const {
    if (context() != begun_) return Errno(EIO);  // reset or power cycle mid-exchange
    return Ok();
  }

  DeviceControl& control_;
  std::shared_ptr<backend::Device> dev_;
  uint16_t cap_;
  uint64_t begun_ = 0;  // only the mailbox's one executor step at a time touches it
};

// Forwards the core's revocation calls to whatever sink the FUSE layer set.
class SinkRelay final : public RevocationSink {
 public:
  void set(pcifs::RevocationSink* s) { sink_.store(s); }
  void invalidate_mappings(const Bdf& bdf) override {
    if (auto* s = sink_.load()) s->invalidate_mappings(bdf);
  }
  void device_gone(const Bdf& bdf) override {
    if (auto* s = sink_.load()) s->device_gone(bdf);
  }

 private:
  std::atomic<pcifs::RevocationSink*> sink_{nullptr};
};

// The file's name in its device directory, for logs: "resource2", "doe.1".
std::string file_name(const FileRef& ref);

}  // namespace pcifs::core

namespace pcifs {

struct Mediator::Impl {
  Impl(std::shared_ptr<backend::Backend> b, MediatorOptions o);

  std::shared_ptr<backend::Backend> backend;
  MediatorOptions options;
  // Bounds per uid and in total (after `options`, which they are made from).
  core::CallerBudget status_budget{options.status_opens_per_uid, options.status_opens_total,
                                   Errno(EMFILE), Errno(ENFILE)};
  core::CallerBudget doe_budget{options.doe_pending_per_uid, options.doe_pending_total,
                                Errno(EAGAIN), Errno(EAGAIN)};
  std::unique_ptr<core::HostLocks> host_locks;  // null: no cross-daemon leases
  // Serialises what changes the device set: hot-plug and lease takeovers.
  // Lock order: level 4, then the level-7 locks below (top of this file).
  Mutex attach_mu ACQUIRED_BEFORE(devices_mu, handles_mu, event_mu,
                                  watch_mu){"Mediator::attach_mu"};
  Mutex watch_mu{"Mediator::watch_mu"};
  CondVar watch_cv;
  bool watch_stop GUARDED_BY(watch_mu) = false;
  std::atomic<bool> any_refused{false};  // until a lease is refused, the watcher has nothing to do
  std::thread lease_watcher;             // with host_locks: retries refused leases
  core::SinkRelay sink;
  core::ClaimTable claims;
  core::DoeExecutor executor;

  // Read by every lookup and open, written when the device set changes.
  mutable ReadMostlyMutex devices_mu ACQUIRED_BEFORE(handles_mu){"Mediator::devices_mu"};
  // In address order, for listings; `by_bdf` holds the same devices for
  // lookups: a lookup of one device among thousands is a few cache lines, not
  // a walk of a tree whose nodes are spread over the heap (README, "Many
  // devices").
  std::map<Bdf, std::shared_ptr<core::DeviceState>> devices GUARDED_BY(devices_mu);
  std::unordered_map<Bdf, std::shared_ptr<core::DeviceState>> by_bdf GUARDED_BY(devices_mu);
  // The device at `bdf`, or null; the pointer is valid while devices_mu is held.
  const std::shared_ptr<core::DeviceState>* lookup(const Bdf& bdf) const
      REQUIRES_SHARED(devices_mu) {
    auto it = by_bdf.find(bdf);
    return it == by_bdf.end() ? nullptr : &it->second;
  }
  // The same devices by IOMMU group and by driver (immutable per DeviceState:
  // a rebind is a removal and an arrival), kept with `devices`. Hashed, for
  // lookups; a listing sorts the keys (index_keys).
  template <class Key>
  using Index = std::unordered_map<Key, std::set<Bdf>>;
  Index<int> by_group GUARDED_BY(devices_mu);
  Index<std::string> by_driver GUARDED_BY(devices_mu);
  void publish(const std::shared_ptr<core::DeviceState>& d) REQUIRES(devices_mu);
  void unpublish(const core::DeviceState& d) REQUIRES(devices_mu);
  // Those of `set` the view selects, at most `limit`.
  std::vector<Bdf> selected(const ViewPolicy& v, const std::set<Bdf>& set, size_t limit) const
      REQUIRES_SHARED(devices_mu);
  // The view's policy; null once the view is removed.
  const ViewPolicy* live_policy(ViewId view) const;
  // The view's devices under `key` of an index, at most `limit`; the keys the
  // view has a device under. Each takes devices_mu (shared).
  template <class Key>
  std::vector<Bdf> indexed(ViewId view, Index<Key> Impl::*index, const Key& key,
                           size_t limit) const;
  template <class Key>
  std::vector<Key> index_keys(ViewId view, Index<Key> Impl::*index) const;
  core::ViewTable views;  // lock-free for readers: every request asks it
  mutable Mutex event_mu{"Mediator::event_mu"};
  std::shared_ptr<const EventSink> events GUARDED_BY(event_mu);
  // Orphans, and an adoption's check of both sets; the table itself has its
  // own (sharded) locks, taken under handles_mu where both are needed
  // (adopt, the release of an orphan). open() and release() of a live
  // handle take neither handles_mu nor any other daemon-wide lock.
  Mutex handles_mu{"Mediator::handles_mu"};
  core::HandleTable handles;
  // Handles of the previous daemon whose device left while no daemon ran
  // (adopt_handle): they answer ENODEV, like a handle of a removed device,
  // until the kernel releases them.
  std::unordered_set<HandleId> orphans GUARDED_BY(handles_mu);
  std::atomic<HandleJournal*> journal{nullptr};  // null: nothing is journaled
  // Last: its jobs use the members above; ~Mediator drains it first.
  core::HandoverWorker handovers;

  // --- mediator.cpp
  void attach(const std::shared_ptr<backend::Device>& dev) REQUIRES(attach_mu);
  void lease(core::DeviceState& d) REQUIRES(attach_mu);
  core::StepRecorder step_recorder(const core::DeviceState& d) const;
  void watch_leases() EXCLUDES(watch_mu, attach_mu);
  void retry_refused_leases() EXCLUDES(attach_mu);
  void watch_failed(const char* what) noexcept;  // logs; the next pass reattaches
  void reattach_missing() EXCLUDES(attach_mu);
  std::atomic<bool> missing_after_failure{false};
  void on_hotplug(const Bdf& bdf, bool added) EXCLUDES(attach_mu);
  void device_removed(const Bdf& bdf) REQUIRES(attach_mu);
  std::shared_ptr<core::DeviceState> find(const Bdf& bdf) const;
  std::shared_ptr<core::DeviceState> find_in(ViewId view, const Bdf& bdf) const;
  // f(device) under devices_mu (shared) when `v` selects `bdf`, else false:
  // for what needs the device only for a moment (a lookup, a getattr), with
  // no copy of its shared_ptr, whose count every request on the device
  // would write. f may take level-7 locks after devices_mu (doe_mu).
  template <class F>
  bool with_device(const ViewPolicy& v, const Bdf& bdf, F f) const {
    ReadMostlyShared lock(devices_mu);
    const auto* d = lookup(bdf);
    if (d == nullptr) return false;
    const auto& i = (*d)->info;
    return v.selects(bdf, i.vendor, i.device, i.class_code) && f(**d);
  }
  std::shared_ptr<core::Handle> handle(HandleId h);
  // What an id without a live handle answers: ENODEV for an orphan, else EBADF.
  Errno missing(HandleId h) EXCLUDES(handles_mu);
  const ViewPolicy& policy(ViewId view) const;
  // Takes the handle's claim. While its group is handed over: with `wait`,
  // waits for the hand-over (bounded by kHandoverWait, then EAGAIN); without,
  // Errno(kWouldWait) at once (the FUSE layer retries on the device's lane).
  Result<void> claim(core::Handle& h, bool wait = true);
  static constexpr std::chrono::seconds kHandoverWait{120};  // a sysfs FLR can take ~1 min
  void emit(const MediatorEvent& e) const EXCLUDES(event_mu);
  // A claim just ended, its group left handing over (ClaimTable::release with
  // hand_over): tells watchers and queues the group's hand-over.
  void claim_ended(const core::Handle& h);
  // Cleans every mediated endpoint of `group` on the hand-over worker, then
  // frees the group (or leaves it failed: retried by the next claim).
  void hand_over(const std::string& group);
  void run_hand_over(const std::string& group,
                     const std::vector<std::shared_ptr<core::DeviceState>>& members);
  // Tells the journal the handle's claim and DOE state (README "Restarts").
  void journal_changed(core::Handle& h) REQUIRES(h.mu);
  void journal_changed_locking(core::Handle& h) EXCLUDES(h.mu);
  bool removed(ViewId view) const;
  // A handle of a removed view, or on a removed device, is dead (ENODEV).
  static bool dead(const core::Handle& h) { return h.revoked.load() || h.dev->gone.load(); }
  // May this handle's writes let the device master (view.hpp allow_dma)?
  // Always for the simulator, whose devices reach no host memory.
  bool dma_allowed(const core::Handle& h) const {
    return h.dev->info.simulated || h.policy->allow_dma;
  }
  // --- mediator_dma.cpp
  void dma_refused(const core::Handle& h, std::string_view what) const;
  void stop_mastering(core::Handle& h);
  // A BAR write without the MSI-X table's Message Address bytes (dma_guard.hpp).
  Result<size_t> write_bar_guarded(core::Handle& h, uint64_t off, std::span<const uint8_t> in);
  Result<void> wake_if_allowed(core::Handle& h, bool wait = true);
  Result<void> check_open(const ViewPolicy& v, const Caller& c, core::DeviceState& d,
                          const FileRef& ref, OpenFlags flags);

  // --- mediator_io.cpp
  // `wait` false: kWouldWait instead of waiting for (or running) a control
  // operation (Mediator::try_read/try_write).
  Result<size_t> read(HandleId id, uint64_t off, std::span<uint8_t> out, bool wait);
  Result<size_t> write(HandleId id, uint64_t off, std::span<const uint8_t> in, bool wait);
  Result<size_t> read_text(core::Handle& h, uint64_t off, std::span<uint8_t> out);
  Result<size_t> read_config(core::Handle& h, uint64_t off, std::span<uint8_t> out, bool wait);
  Result<size_t> write_config(core::Handle& h, uint64_t off, std::span<const uint8_t> in,
                              bool wait);
  Result<size_t> read_bar(core::Handle& h, uint64_t off, std::span<uint8_t> out, bool wait);
  Result<size_t> write_bar(core::Handle& h, uint64_t off, std::span<const uint8_t> in, bool wait);
  Result<size_t> read_rom(core::Handle& h, uint64_t off, std::span<uint8_t> out, bool wait);
  Result<size_t> write_control(core::Handle& h, std::span<const uint8_t> in);

  // --- mediator_doe.cpp
  Result<size_t> doe_write(core::Handle& h, std::span<const uint8_t> piece);
  Result<std::optional<std::vector<uint8_t>>> doe_assemble(core::Handle& h,
                                                           std::span<const uint8_t> in);
  Result<void> doe_submit(core::Handle& h, std::span<const uint8_t> in);
  void doe_read(const std::shared_ptr<core::Handle>& h, size_t max, bool nonblock, ReadDone done);
  void doe_complete(const std::weak_ptr<core::Handle>& wh, uint64_t ticket,
                    Result<std::vector<uint32_t>> r);
  void start_discovery(const std::shared_ptr<core::DeviceState>& d);
  // After a power change, a reset, a wake or a hand-over: if the device is
  // now in D0, the mailboxes whose Discovery was refused outside D0 run it
  // again, and, where `reset` (the function was reset), those whose mailbox
  // failed it (DeviceState::rediscover).
  void rediscover(const std::shared_ptr<core::DeviceState>& d, bool reset);

  // --- mediator_files.cpp
  std::vector<FileEntry> list_files(const ViewPolicy& v, const core::DeviceState& d) const;
  std::optional<FileEntry> entry(const ViewPolicy& v, const core::DeviceState& d,
                                 const FileRef& ref, bool known_feature) const;
  std::string text_of(const core::DeviceState& d, const ViewPolicy& v, const FileRef& ref,
                      const Caller& caller) const;
};

}  // namespace pcifs
