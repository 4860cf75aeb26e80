// DeviceControl: one per device. Admits accesses (access_gate.hpp), runs the
// power state machine, reset and remove, quiesces and revokes BAR mappings,
// keeps the D3cold config snapshot and the saved config state, and owns the
// ROM shadow [S7, S9, S10, S12].
//
// Power state machine (logical state = what power_state() reports):
//   D0 -> D3hot   quiesce (below), save config, PMCSR D3hot.
//   D0 -> D3cold  quiesce, snapshot full config, D3hot, then D3cold (PCIe 5.0
//                 §5.8: D3cold is only entered from D3hot; config is lost).
//   D3hot -> D0   re-read config (writes made in D3hot count), PMCSR D0, then
//                 restore -- skipped when No_Soft_Reset=1 and Command survived
//                 (PCI PM 1.2 §5.6/§8.2.2: no internal reset, context kept).
//   D3hot -> D3cold  snapshot (config is readable in D3hot), then D3cold.
//   D3cold -> D0  power up, restore the snapshot (context was lost).
//   D3cold -> D3hot  via D0 (restore), without reopening BARs in between: a
//                 function leaves D3cold only through D0uninitialized.
//   same state    success, no device access.
// The device is brought up to D0 before a reset (as pci_reset_function does).
//
// Quiesce (leaving D0, reset, memory decode off) [S12]:
//   (1) invalidate mappings while accesses still flow: dirty mapped pages are
//       written back to the device;
//   (2) close the gate: new BAR/DOE accesses fail fast with EIO;
//   (3) wait for in-flight accesses to drain;
//   (4) invalidate again: pages faulted in between (1) and (2) go too.
// Then the physical phase: config accesses wait (bounded: save, the
// transition, the restore); nothing in it waits for an access or calls the
// sink. Back in D0 the gate reopens and mappings fault in afresh.
//
// Waiting: the control operations below wait (for the slot, for drains, for
// the sink) and are for threads that may wait: never a FUSE worker (STYLE.md;
// the sink's invalidation needs a free worker for the kernel's writeback of
// dirty mapped pages). The admission and access calls with wait=false, and
// wake(false)/rom(false), never wait for another operation: they return
// kWouldWait (access_gate.hpp) instead, and the caller retries with wait=true
// from a thread that may wait.
//
// Locking: control operations run one at a time, serialised by a ControlSlot
// (a flag + condition variable, so that callers who may sit inside a page
// fault -- wake() and rom() -- can refuse to wait behind a quiesce, which
// could be waiting for their page lock inside the sink). The sink is called
// with no lock held that an access could wait on. Never hold an AccessToken
// while calling a control operation (it would wait for itself). In the
// daemon's lock order (fs/core/mediator_state.hpp) the slot is level 3;
// rom_mu_, the slot's own mu_ and the gate's are leaves.
//
// Revocation generations: epoch() changes whenever admission changes (quiesce,
// reopen, power, decode); revoked() is final. A handle that sees revoked() is
// dead (ENODEV); one that sees a new epoch was quiesced and works again.
//
// Crash hand-over (step_recovery.hpp): with a StepRecorder set, each physical
// step is journaled before it runs (ROM capture: decode must go off; power-down,
// power-up, reset, hand-over: the config image to restore, Command last) and
// the record cleared once the device is in a known state again. A step that
// leaves the device unsafe (ROM decode stuck on, a restore that failed) keeps
// its record for the next daemon. A device whose recovery at attach failed is
// marked unrecovered: every access and control operation fails with EIO.
//
// Ownership: shares the Device; borrows the RevocationSink (may be null),
// which must outlive this object. Thread safety: every method is thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/access_gate.hpp"
#include "core/config_state.hpp"
#include "core/handover.hpp"
#include "core/revocation.hpp"
#include "core/rom_shadow.hpp"
#include "core/step_recovery.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

// Serialises control operations. A capability so clang checks that state
// owned by the running operation is only touched while it is held.
class CAPABILITY("control slot") ControlSlot {
 public:
  enum class Phase : uint8_t { kIdle, kQuiescing, kPhysical, kCapture };
  void acquire() ACQUIRE();
  // Waits for a running operation unless it is (or becomes) quiescing: then
  // false at once. For callers that may hold a page lock the sink waits for.
  bool try_acquire_unless_quiescing() TRY_ACQUIRE(true);
  bool try_acquire() TRY_ACQUIRE(true);  // never waits: false while another op runs
  void release() RELEASE();
  void set_phase(Phase phase) REQUIRES(this);

 private:
  Mutex mu_{"ControlSlot::mu_"};
  CondVar cv_;
  bool busy_ GUARDED_BY(mu_) = false;
  Phase phase_ GUARDED_BY(mu_) = Phase::kIdle;
  LockOrderProbe order_;  // the slot is a lock to TSan (lock order: mediator_state.hpp)
};

// Requested decode changes from a Command register write (WritePlan).
struct DecodeChange {
  std::optional<bool> memory;
  std::optional<bool> io;
};

struct ControlCounters {
  GateCounters gate;
  uint64_t quiesces = 0;
  uint64_t transitions = 0;
  uint64_t resets = 0;
  uint64_t rom_captures = 0;
  uint64_t handovers = 0;
};

class DeviceControl {
 public:
  // Reads Command and PMCSR once to learn the initial decode and power state.
  DeviceControl(const std::shared_ptr<backend::Device>& dev, RevocationSink* sink);
  // The same from a config image the caller has just read (no second read).
  DeviceControl(const std::shared_ptr<backend::Device>& dev, RevocationSink* sink,
                const ConfigImage& image);
  DeviceControl(const DeviceControl&) = delete;
  DeviceControl& operator=(const DeviceControl&) = delete;

  const backend::DeviceInfo& info() const { return dev_->info(); }

  // --- admission (see access_gate.hpp for the rules)
  Result<AccessToken> enter_bar(unsigned bar, bool wait = true);
  Result<AccessToken> enter_config(bool write, bool wait = true);
  Result<AccessToken> enter_doe();

  // --- admitted single accesses: device, or the D3cold snapshot for reads
  Result<uint32_t> config_read(uint32_t offset, unsigned width);
  Result<void> config_read_block(uint32_t offset, std::span<uint8_t> out);
  Result<void> config_write(uint32_t offset, unsigned width, uint32_t value);
  Result<uint64_t> bar_read(unsigned bar, uint64_t offset, unsigned width);
  Result<void> bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value);
  // The same under a config token the caller holds (from enter_config): one
  // admission for a whole mediated read or write, so that it is admitted or
  // refused before its first device access and a physical operation cannot
  // begin half-way through it.
  Result<uint32_t> config_read(const AccessToken& token, uint32_t offset, unsigned width);
  Result<void> config_read_block(const AccessToken& token, uint32_t offset, std::span<uint8_t> out);
  Result<void> config_write(const AccessToken& token, uint32_t offset, unsigned width,
                            uint32_t value);

  // --- power [S9], reset/remove [S10]
  PowerState power_state() const { return gate_.power(); }  // never touches the device
  Result<void> set_power_state(PowerState target);
  // low_power_access=wake: D0 before an access. EIO instead of waiting when a
  // quiesce is running (the caller may be a page fault the sink waits for);
  // wait=false: kWouldWait instead of waiting for any running operation.
  Result<void> wake(bool wait = true);
  Result<void> reset();
  Result<void> remove();  // revoke for good, then the backend's remove()
  // Tenant hand-over (handover.hpp; device_handover.cpp): quiesce and revoke
  // mappings, D0, reset by `method`, restore `baseline` (which becomes the
  // saved state), reopen. The reset's error, else the restore's; BARs stay
  // closed (EIO) when the restore failed.
  Result<void> hand_over(const ConfigImage& baseline, ResetMethod method);
  void revoke();  // the device vanished (hot-unplug): no device access
  // A Command write that changes decode: quiesces first when decode goes off
  // (memory: with mapping invalidation), runs `do_write` (the device write),
  // updates admission, reopens when decode comes back on.
  Result<void> change_decode(DecodeChange change, const std::function<Result<void>()>& do_write);

  // --- ROM shadow [S7]: captured once, lazily; an invalid ROM is remembered.
  // wait=false: kWouldWait instead of waiting for a running control operation.
  Result<std::shared_ptr<const RomImage>> rom(bool wait = true);
  std::string rom_error() const;  // why rom() fails with EIO; empty if none known

  // --- crash hand-over (step_recovery.hpp). Both before the device is shared.
  void set_step_recorder(StepRecorder steps);
  // Recovery at attach failed (logged there): accesses and control operations EIO.
  void mark_unrecovered() { unrecovered_.store(true, std::memory_order_release); }
  bool unrecovered() const { return unrecovered_.load(std::memory_order_acquire); }

  // --- state for the Mediator and `status`
  bool revoked() const { return gate_.revoked(); }
  uint64_t epoch() const { return gate_.epoch(); }
  // Changes whenever the device may have lost its state (a reset, a power
  // transition), counted when the physical operation begins: BAR and DOE
  // accesses are closed then, so an access admitted with the old value came
  // before the loss and one admitted with the new value after it.
  uint64_t state_generation() const { return gate_.physical_ops(); }
  ControlCounters counters() const;

 private:
  struct Probe {
    PowerState power = PowerState::kD0;
    bool memory = false;
    bool io = false;
  };
  static Probe probe(backend::Device& dev);
  static Probe probe_image(const ConfigImage& image);
  DeviceControl(std::shared_ptr<backend::Device> dev, RevocationSink* sink, Probe initial);
  void invalidate();
  // Closes BAR (and, with `doe`, DOE) admission, revokes mappings, drains.
  void quiesce(bool doe) REQUIRES(slot_);
  Result<void> set_power_locked(PowerState target) REQUIRES(slot_);
  Result<void> power_down_locked(PowerState target) REQUIRES(slot_);
  Result<void> power_up_locked(bool reopen) REQUIRES(slot_);
  Result<void> d3hot_to_d3cold_locked() REQUIRES(slot_);
  Result<void> restore_locked(PowerState from) REQUIRES(slot_);
  Result<void> reset_locked() REQUIRES(slot_);
  Result<void> hand_over_locked(const ConfigImage& baseline, ResetMethod method) REQUIRES(slot_);
  Result<void> change_decode_locked(DecodeChange change,
                                    const std::function<Result<void>()>& do_write) REQUIRES(slot_);
  Result<std::shared_ptr<const RomImage>> capture_locked() REQUIRES(slot_);
  void decode_from_command(const ConfigImage& image);
  Result<std::shared_ptr<const RomImage>> cached_rom() const EXCLUDES(rom_mu_);

  const std::shared_ptr<backend::Device> dev_;
  RevocationSink* const sink_;
  AccessGate gate_;
  ControlSlot slot_ ACQUIRED_BEFORE(rom_mu_);
  ConfigImage saved_ GUARDED_BY(slot_);   // config state to restore in D0
  StepRecorder steps_ GUARDED_BY(slot_);  // the step journal of this device, if any
  std::atomic<bool> unrecovered_{false};

  mutable Mutex rom_mu_{"DeviceControl::rom_mu_"};
  std::shared_ptr<const RomImage> rom_ GUARDED_BY(rom_mu_);
  std::string rom_error_ GUARDED_BY(rom_mu_);  // non-empty: invalid for good

  std::atomic<uint64_t> quiesces_{0}, transitions_{0}, resets_{0}, rom_captures_{0}, handovers_{0};
};

}  // namespace pcifs::core
