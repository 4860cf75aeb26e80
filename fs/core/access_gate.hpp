// AccessGate: admission of device accesses for one function, as RAII tokens.
//
// The gate is the data half of DeviceControl (device_control.hpp): it knows
// the logical power state, whether BAR/DOE accesses are open, how many
// accesses are in flight, and whether a physical operation or a ROM capture
// is running. Control operations (DeviceControl, one at a time) flip its state
// and drain it; accesses enter and leave it.
//
// Admission rules [S9, S12]:
//   revoked                         -> ENODEV, every kind, for good
//   BAR:  ROM capture running       -> wait for it (bounded; S7: no error),
//                                      or kWouldWait at once (wait=false)
//         D0, open, decode enabled  -> admitted
//         anything else             -> EIO at once (never waits for a drain)
//   DOE:  D0, no physical operation,
//         not closed (close(); a
//         close_bars() leaves it open) -> admitted, else EIO
//   config: physical op running     -> wait for it (bounded: a transition and
//                                      a restore, never a drain or a sink call),
//                                      or kWouldWait at once (wait=false)
//         D0 / D3hot                -> admitted
//         D3cold: read              -> admitted, served from the snapshot
//         D3cold: write             -> EIO
// A token counts as in flight until destroyed; drains wait for the count.
// Never hold a token while calling a DeviceControl control operation: the
// operation would wait for the token to go (self-deadlock). A token must not
// outlive its gate. DOE code holds a token per register access or polling
// step, never across a whole exchange, so a drain stays one access long.
//
// wait=false is for FUSE workers, which must never wait for a device
// operation that is not their own single access (STYLE.md): the caller gets
// kWouldWait and answers the request later from another thread. A physical
// operation or a capture only runs while its DeviceControl's ControlSlot is
// held, so "the slot is free" implies "nothing here would wait".
//
// Thread safety: every method is thread-safe. Waits are on one CondVar under
// mu_; nothing here calls out while holding mu_.
//
// Config and BAR admission take no lock in the common case (config: no
// physical operation, not revoked, not D3cold; BAR: open, decoding, no ROM
// capture): every reader of a device would contend on mu_ otherwise (issue 13
// §1). An access counts itself in flight in its CPU's shard (its own cache
// line, one count per kind), then checks the published flag of its kind
// (cfg_open_, bar_open_[io]); the control side clears the flag under mu_
// before it counts the shards. Both are seq_cst, so either the access sees
// the gate closed (takes itself out and goes the locked way) or the drain
// (or capture) sees the access. Anything that waits for the shards counts
// itself in fast_waiters_ first, and an access that leaves while one does
// wakes it under mu_ (whether the gate is closed or not). DOE admission stays
// locked: one initiator per mailbox (the executor), nothing to contend.
#pragma once

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "core/config_state.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"
#include "pcifs/types.hpp"

namespace pcifs::core {

enum class AccessKind : uint8_t { kBar, kConfig, kDoe };

// An internal errno, never a reply: the access would have to wait for a
// physical operation or a ROM capture (wait=false). The Mediator's try_*
// calls pass it up; the FUSE layer then serves the request off its workers.
inline constexpr int kWouldWait = EINPROGRESS;

class AccessGate;

// Proof of admission. Move-only; leaving the scope ends the access. A config
// read token in D3cold carries the snapshot instead of a device admission.
class [[nodiscard]] AccessToken {
 public:
  AccessToken() = default;
  AccessToken(AccessToken&& other) noexcept;
  AccessToken& operator=(AccessToken&& other) noexcept;
  AccessToken(const AccessToken&) = delete;
  AccessToken& operator=(const AccessToken&) = delete;
  ~AccessToken() { release(); }

  bool from_snapshot() const { return snapshot_ != nullptr; }
  // The D3cold snapshot (full config image); null unless from_snapshot().
  const ConfigImage* snapshot() const { return snapshot_.get(); }
  void release();  // ends the access early; idempotent

 private:
  friend class AccessGate;
  AccessToken(AccessGate* gate, AccessKind kind) : gate_(gate), kind_(kind) {}
  explicit AccessToken(std::shared_ptr<const ConfigImage> snap) : snapshot_(std::move(snap)) {}

  AccessToken(AccessGate* gate, AccessKind kind, unsigned shard)
      : gate_(gate), kind_(kind), shard_(static_cast<int>(shard)) {}

  AccessGate* gate_ = nullptr;
  AccessKind kind_ = AccessKind::kBar;
  int shard_ = -1;  // >= 0: a config or BAR access admitted without the lock
  std::shared_ptr<const ConfigImage> snapshot_;
};

struct GateCounters {
  uint64_t admitted = 0;
  uint64_t refused_eio = 0;
  uint64_t refused_enodev = 0;
  uint64_t capture_waits = 0;  // BAR accesses that waited for a ROM capture
  uint64_t would_wait = 0;     // wait=false accesses refused with kWouldWait
  std::chrono::nanoseconds longest_drain{0};
};

class AccessGate {
 public:
  AccessGate(PowerState initial, bool mem_decode, bool io_decode);
  AccessGate(const AccessGate&) = delete;
  AccessGate& operator=(const AccessGate&) = delete;

  // --- accesses
  Result<AccessToken> enter_bar(bool io_bar, bool wait = true) EXCLUDES(mu_);
  Result<AccessToken> enter_config(bool write, bool wait = true) EXCLUDES(mu_);
  Result<AccessToken> enter_doe() EXCLUDES(mu_);

  // --- observers (never touch the device)
  PowerState power() const EXCLUDES(mu_);
  bool revoked() const EXCLUDES(mu_);
  uint64_t epoch() const EXCLUDES(mu_);
  // Physical operations begun so far (begin_physical calls): changes exactly
  // when the device may lose state, and only while no BAR/DOE access can pass.
  uint64_t physical_ops() const EXCLUDES(mu_);
  bool memory_mappable() const EXCLUDES(mu_);  // memory BAR accesses admitted now
  bool memory_decode() const EXCLUDES(mu_);
  bool io_decode() const EXCLUDES(mu_);
  bool rom_stuck() const EXCLUDES(mu_);
  GateCounters counters() const EXCLUDES(mu_);

  // --- control side; the caller is the DeviceControl slot holder
  void close() EXCLUDES(mu_);  // BAR/DOE accesses now fail fast (before a physical operation)
  // BAR accesses now fail fast; DOE accesses go on. For a change of the
  // decode bits: DOE is config space, and its mailbox keeps its state.
  void close_bars() EXCLUDES(mu_);
  void reopen() EXCLUDES(mu_);  // admitted again where power and decode allow
  // Waits until no BAR access, no DOE access unless DOE is still admitted
  // (close_bars(): waiting for it would be waiting for a stream), and, with
  // `config`, no config access is in flight.
  void drain(bool config) EXCLUDES(mu_);
  // Config accesses wait from here until end_physical(); in-flight ones drain.
  void begin_physical() EXCLUDES(mu_);
  void end_physical(PowerState now, std::shared_ptr<const ConfigImage> snapshot) EXCLUDES(mu_);
  void set_decode(bool memory, bool io) EXCLUDES(mu_);
  // Starts a ROM capture: false (EIO for the caller) unless memory BARs are
  // admitted now; else new BAR accesses wait and in-flight ones have drained.
  bool begin_capture() EXCLUDES(mu_);
  // `rom_off` false: ROM decode could not be turned off; BARs stay refused
  // (EIO) until clear_rom_stuck() after a config restore.
  void end_capture(bool rom_off) EXCLUDES(mu_);
  void clear_rom_stuck() EXCLUDES(mu_);
  void revoke() EXCLUDES(mu_);

 private:
  friend class AccessToken;
  void leave(AccessKind kind) EXCLUDES(mu_);
  // The lock-free admission (above) of a config or BAR access: a token, or
  // nothing (go locked).
  std::optional<AccessToken> try_enter_fast(AccessKind kind, bool io_bar) EXCLUDES(mu_);
  void leave_fast(AccessKind kind, unsigned shard) EXCLUDES(mu_);
  uint32_t fast_inflight(AccessKind kind) const;
  uint64_t fast_admitted() const;
  bool config_open() const REQUIRES(mu_);
  bool bar_open(bool io) const REQUIRES(mu_);
  bool doe_refused() const REQUIRES(mu_);
  bool idle(bool config) const REQUIRES(mu_);
  void wait_idle(bool config) REQUIRES(mu_);
  Errno refuse(int err) REQUIRES(mu_);
  void changed() REQUIRES(mu_);  // admission may have changed: new epoch, wake waiters
  void publish() REQUIRES(mu_);  // the lock-free flags from the state under mu_

  mutable Mutex mu_{"AccessGate::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  CondVar cv_;
  PowerState power_ GUARDED_BY(mu_);
  bool mem_decode_ GUARDED_BY(mu_);
  bool io_decode_ GUARDED_BY(mu_);
  bool quiesced_ GUARDED_BY(mu_) = false;  // BARs closed
  bool doe_closed_ GUARDED_BY(mu_) = false;
  bool physical_ GUARDED_BY(mu_) = false;
  bool capturing_ GUARDED_BY(mu_) = false;
  bool rom_stuck_ GUARDED_BY(mu_) = false;
  bool revoked_ GUARDED_BY(mu_) = false;
  uint64_t epoch_ GUARDED_BY(mu_) = 1;
  uint64_t physical_ops_ GUARDED_BY(mu_) = 0;
  uint32_t bar_inflight_ GUARDED_BY(mu_) = 0;
  uint32_t cfg_inflight_ GUARDED_BY(mu_) = 0;
  uint32_t doe_inflight_ GUARDED_BY(mu_) = 0;
  uint32_t waiters_ GUARDED_BY(mu_) = 0;  // drains waiting for in-flight counts
  std::shared_ptr<const ConfigImage> snapshot_ GUARDED_BY(mu_);
  GateCounters counters_ GUARDED_BY(mu_);

  static constexpr unsigned kShards = 16;
  struct alignas(64) Shard {
    std::atomic<uint32_t> cfg_inflight{0};
    std::atomic<uint32_t> bar_inflight{0};
    std::atomic<uint64_t> admitted{0};
  };
  std::array<Shard, kShards> shards_{};
  // config_open() and, per BAR kind (memory, I/O), bar_open() with no capture
  // running, as last published under mu_ (publish()); read without it.
  std::atomic<bool> cfg_open_{false};
  std::array<std::atomic<bool>, 2> bar_open_{};
  // Waits that count the shards now (wait_idle, begin_capture): a lock-free
  // access that leaves wakes them.
  std::atomic<uint32_t> fast_waiters_{0};
};

}  // namespace pcifs::core
