// Internal state of the Mediator (include/pcifs/mediator.hpp): per-device
// state, open handles, and the Impl that ties them to views and claims.
// Private to fs/core/mediator*.cpp.
//
// Locking order (outer to inner): Impl::devices_mu_ -> Impl::handles_mu_ ->
// Handle::mu -> DeviceState::doe_mu. None of these is held while calling a
// DeviceControl operation, a DoeMailbox, a completion callback or the sink;
// they guard bookkeeping only.
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/claims.hpp"
#include "core/config_space.hpp"
#include "core/device_control.hpp"
#include "core/doe_executor.hpp"
#include "core/doe_mailbox.hpp"
#include "core/host_locks.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

struct DeviceCounters {
  std::atomic<uint64_t> config_reads{0}, config_writes{0}, bar_reads{0}, bar_writes{0};
  std::atomic<uint64_t> doe_exchanges{0}, denials{0}, busy{0}, revoked_handles{0};
};

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
  std::atomic<uint32_t> open_handles{0};
  DeviceCounters counters;
  Mutex write_mu;  // one config write (plan + apply) at a time

  mutable Mutex doe_mu;
  CondVar discovery_cv;
  // Per mailbox: what Discovery reported; nullopt until it has run.
  std::vector<std::optional<std::vector<backend::DoeFeature>>> features GUARDED_BY(doe_mu);
  size_t discovery_pending GUARDED_BY(doe_mu) = 0;

  // Somebody else owns the device and pcifs only reads [S15]: "bound to
  // driver NAME", or "served by another pcifs daemon (pid N, ...)" when
  // another daemon holds its host lease. Set at attach, before publishing.
  std::optional<std::string> owned_elsewhere;
  std::shared_ptr<HostLease> lease;  // this daemon's host lease on the group, if any
  bool lease_refused = false;        // another daemon holds it: retried (watch_leases)
  bool bound() const { return owned_elsewhere.has_value(); }
  bool bridge() const { return info.is_bridge(); }
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
};

struct Handle {
  HandleId id = 0;
  ViewId view = 0;
  Caller caller;
  FileRef ref;
  OpenFlags flags;
  std::shared_ptr<DeviceState> dev;
  std::atomic<bool> claiming{false};
  std::atomic<bool> revoked{false};  // its view was removed: dead for good (ENODEV)
  Mutex mu;
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
  std::unique_ptr<core::HostLocks> host_locks;  // null: no cross-daemon leases
  // Serialises what changes the device set: hot-plug and lease takeovers.
  Mutex attach_mu;
  Mutex watch_mu;
  CondVar watch_cv;
  bool watch_stop GUARDED_BY(watch_mu) = false;
  std::atomic<bool> any_refused{false};  // until a lease is refused, the watcher has nothing to do
  std::thread lease_watcher;             // with host_locks: retries refused leases
  core::SinkRelay sink;
  core::ClaimTable claims;
  core::DoeExecutor executor;

  mutable SharedMutex devices_mu;
  std::map<Bdf, std::shared_ptr<core::DeviceState>> devices GUARDED_BY(devices_mu);
  mutable Mutex views_mu;
  std::deque<ViewPolicy> views GUARDED_BY(views_mu);  // deque: stable references
  std::deque<bool> views_removed GUARDED_BY(views_mu);
  mutable Mutex event_mu;
  std::shared_ptr<const EventSink> events GUARDED_BY(event_mu);
  Mutex handles_mu;
  std::unordered_map<HandleId, std::shared_ptr<core::Handle>> handles GUARDED_BY(handles_mu);
  HandleId next_handle GUARDED_BY(handles_mu) = 1;

  // --- mediator.cpp
  void attach(const std::shared_ptr<backend::Device>& dev);
  void lease(core::DeviceState& d);
  void watch_leases() EXCLUDES(watch_mu, attach_mu);
  void retry_refused_leases() EXCLUDES(attach_mu);
  void on_hotplug(const Bdf& bdf, bool added);
  void device_removed(const Bdf& bdf);
  std::shared_ptr<core::DeviceState> find(const Bdf& bdf) const;
  std::shared_ptr<core::DeviceState> find_in(ViewId view, const Bdf& bdf) const;
  std::shared_ptr<core::Handle> handle(HandleId h);
  const ViewPolicy& policy(ViewId view) const;
  Result<void> claim(core::Handle& h);
  void emit(const MediatorEvent& e) const EXCLUDES(event_mu);
  void claim_ended(const core::Handle& h);
  bool removed(ViewId view) const;
  // A handle of a removed view, or on a removed device, is dead (ENODEV).
  static bool dead(const core::Handle& h) { return h.revoked.load() || h.dev->gone.load(); }
  Result<void> wake_if_allowed(core::Handle& h);
  Result<void> check_open(const ViewPolicy& v, const Caller& c, core::DeviceState& d,
                          const FileRef& ref, OpenFlags flags);

  // --- mediator_io.cpp
  Result<size_t> read_text(core::Handle& h, uint64_t off, std::span<uint8_t> out);
  Result<size_t> read_config(core::Handle& h, uint64_t off, std::span<uint8_t> out);
  Result<size_t> write_config(core::Handle& h, uint64_t off, std::span<const uint8_t> in);
  Result<size_t> read_bar(core::Handle& h, uint64_t off, std::span<uint8_t> out);
  Result<size_t> write_bar(core::Handle& h, uint64_t off, std::span<const uint8_t> in);
  Result<size_t> read_rom(core::Handle& h, uint64_t off, std::span<uint8_t> out);
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

  // --- mediator_files.cpp
  std::vector<FileEntry> list_files(const ViewPolicy& v, const core::DeviceState& d) const;
  std::string text_of(const core::DeviceState& d, const ViewPolicy& v, const FileRef& ref,
                      const Caller& caller) const;
};

}  // namespace pcifs
