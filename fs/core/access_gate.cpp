#include "core/access_gate.hpp"

#include <sched.h>

#include <utility>

namespace pcifs::core {

AccessToken::AccessToken(AccessToken&& other) noexcept
    : gate_(std::exchange(other.gate_, nullptr)),
      kind_(other.kind_),
      shard_(std::exchange(other.shard_, -1)),
      snapshot_(std::move(other.snapshot_)) {}

AccessToken& AccessToken::operator=(AccessToken&& other) noexcept {
  if (this != &other) {
    release();
    gate_ = std::exchange(other.gate_, nullptr);
    kind_ = other.kind_;
    shard_ = std::exchange(other.shard_, -1);
    snapshot_ = std::move(other.snapshot_);
  }
  return *this;
}

void AccessToken::release() {
  if (gate_ != nullptr) {
    AccessGate* g = std::exchange(gate_, nullptr);
    if (shard_ >= 0) {
      g->leave_fast(kind_, static_cast<unsigned>(std::exchange(shard_, -1)));
    } else {
      g->leave(kind_);
    }
  }
  snapshot_.reset();
}

AccessGate::AccessGate(PowerState initial, bool mem_decode, bool io_decode)
    : power_(initial), mem_decode_(mem_decode), io_decode_(io_decode) {
  MutexLock lock(mu_);
  publish();
}

bool AccessGate::config_open() const {
  return !physical_ && !revoked_ && power_ != PowerState::kD3cold;
}

std::optional<AccessToken> AccessGate::try_enter_fast(AccessKind kind, bool io_bar) {
  const int cpu = sched_getcpu();
  const unsigned s = static_cast<unsigned>(cpu < 0 ? 0 : cpu) % kShards;
  const bool bar = kind == AccessKind::kBar;
  (bar ? shards_[s].bar_inflight : shards_[s].cfg_inflight).fetch_add(1, std::memory_order_seq_cst);
  if ((bar ? bar_open_[io_bar ? 1 : 0] : cfg_open_).load(std::memory_order_seq_cst)) {
    shards_[s].admitted.fetch_add(1, std::memory_order_relaxed);
    return AccessToken(this, kind, s);
  }
  leave_fast(kind, s);  // closed meanwhile: a drain may have counted this one
  return std::nullopt;
}

void AccessGate::leave_fast(AccessKind kind, unsigned shard) {
  auto& n = kind == AccessKind::kBar ? shards_[shard].bar_inflight : shards_[shard].cfg_inflight;
  n.fetch_sub(1, std::memory_order_seq_cst);
  // A wait counts itself in fast_waiters_ before it counts the shards (both
  // seq_cst): it saw this decrement, or this sees it and wakes it.
  if (fast_waiters_.load(std::memory_order_seq_cst) == 0) return;
  MutexLock lock(mu_);
  cv_.notify_all();
}

uint32_t AccessGate::fast_inflight(AccessKind kind) const {
  uint32_t n = 0;
  for (const auto& s : shards_) {
    n += (kind == AccessKind::kBar ? s.bar_inflight : s.cfg_inflight)
             .load(std::memory_order_seq_cst);
  }
  return n;
}

uint64_t AccessGate::fast_admitted() const {
  uint64_t n = 0;
  for (const auto& s : shards_) n += s.admitted.load(std::memory_order_relaxed);
  return n;
}

Errno AccessGate::refuse(int err) {
  if (err == ENODEV) {
    ++counters_.refused_enodev;
  } else {
    ++counters_.refused_eio;
  }
  return Errno(err);
}

bool AccessGate::bar_open(bool io) const {
  return !revoked_ && !quiesced_ && !rom_stuck_ && power_ == PowerState::kD0 &&
         (io ? io_decode_ : mem_decode_);
}

Result<AccessToken> AccessGate::enter_bar(bool io_bar, bool wait) {
  if (auto fast = try_enter_fast(AccessKind::kBar, io_bar)) return std::move(*fast);
  MutexLock lock(mu_);
  if (capturing_ && !revoked_ && !wait) {
    ++counters_.would_wait;
    return Errno(kWouldWait);
  }
  if (capturing_ && !revoked_) ++counters_.capture_waits;
  // A capture is short (one ROM read) and S7 forbids it to disturb a BAR user.
  while (capturing_ && !revoked_) cv_.wait(mu_);
  if (revoked_) return refuse(ENODEV);
  if (!bar_open(io_bar)) return refuse(EIO);
  ++bar_inflight_;
  ++counters_.admitted;
  return AccessToken(this, AccessKind::kBar);
}

Result<AccessToken> AccessGate::enter_config(bool write, bool wait) {
  if (auto fast = try_enter_fast(AccessKind::kConfig, false)) return std::move(*fast);
  MutexLock lock(mu_);
  if (physical_ && !revoked_ && !wait) {
    ++counters_.would_wait;
    return Errno(kWouldWait);
  }
  // A physical operation is a bounded run of device accesses that never waits
  // for an access or calls the revocation sink, so waiting for it is safe.
  while (physical_ && !revoked_) cv_.wait(mu_);
  if (revoked_) return refuse(ENODEV);
  if (power_ == PowerState::kD3cold) {
    // PCIe 5.0 §5.8: no config access reaches a function in D3cold.
    if (write || snapshot_ == nullptr) return refuse(EIO);
    ++counters_.admitted;
    return AccessToken(snapshot_);
  }
  ++cfg_inflight_;
  ++counters_.admitted;
  return AccessToken(this, AccessKind::kConfig);
}

bool AccessGate::doe_refused() const {
  return revoked_ || doe_closed_ || physical_ || power_ != PowerState::kD0;
}

Result<AccessToken> AccessGate::enter_doe() {
  MutexLock lock(mu_);
  if (revoked_) return refuse(ENODEV);
  if (doe_refused()) return refuse(EIO);
  ++doe_inflight_;
  ++counters_.admitted;
  return AccessToken(this, AccessKind::kDoe);
}

void AccessGate::leave(AccessKind kind) {
  MutexLock lock(mu_);
  uint32_t& n = kind == AccessKind::kBar      ? bar_inflight_
                : kind == AccessKind::kConfig ? cfg_inflight_
                                              : doe_inflight_;
  assert(n > 0);
  --n;
  if (n == 0 && waiters_ > 0) cv_.notify_all();
}

PowerState AccessGate::power() const {
  MutexLock lock(mu_);
  return power_;
}

bool AccessGate::revoked() const {
  MutexLock lock(mu_);
  return revoked_;
}

uint64_t AccessGate::epoch() const {
  MutexLock lock(mu_);
  return epoch_;
}

uint64_t AccessGate::physical_ops() const {
  MutexLock lock(mu_);
  return physical_ops_;
}

bool AccessGate::memory_mappable() const {
  MutexLock lock(mu_);
  return bar_open(false);
}

bool AccessGate::memory_decode() const {
  MutexLock lock(mu_);
  return mem_decode_;
}

bool AccessGate::io_decode() const {
  MutexLock lock(mu_);
  return io_decode_;
}

bool AccessGate::rom_stuck() const {
  MutexLock lock(mu_);
  return rom_stuck_;
}

GateCounters AccessGate::counters() const {
  MutexLock lock(mu_);
  GateCounters c = counters_;
  c.admitted += fast_admitted();
  return c;
}

void AccessGate::publish() {
  cfg_open_.store(config_open(), std::memory_order_seq_cst);
  bar_open_[0].store(!capturing_ && bar_open(false), std::memory_order_seq_cst);
  bar_open_[1].store(!capturing_ && bar_open(true), std::memory_order_seq_cst);
}

void AccessGate::changed() {
  ++epoch_;
  // Before any drain counts the shards (close() or begin_physical(), then
  // wait_idle()).
  publish();
  cv_.notify_all();
}

void AccessGate::close() {
  MutexLock lock(mu_);
  quiesced_ = true;
  doe_closed_ = true;
  changed();
}

void AccessGate::close_bars() {
  MutexLock lock(mu_);
  quiesced_ = true;
  changed();
}

void AccessGate::reopen() {
  MutexLock lock(mu_);
  quiesced_ = false;
  doe_closed_ = false;
  changed();
}

bool AccessGate::idle(bool config) const {
  return bar_inflight_ == 0 && fast_inflight(AccessKind::kBar) == 0 &&
         (doe_inflight_ == 0 || !doe_refused()) &&
         (!config || (cfg_inflight_ == 0 && fast_inflight(AccessKind::kConfig) == 0));
}

void AccessGate::wait_idle(bool config) {
  auto start = std::chrono::steady_clock::now();
  ++waiters_;
  fast_waiters_.fetch_add(1, std::memory_order_seq_cst);
  while (!idle(config)) cv_.wait(mu_);
  fast_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  --waiters_;
  auto waited = std::chrono::steady_clock::now() - start;
  if (waited > counters_.longest_drain) {
    counters_.longest_drain = std::chrono::duration_cast<std::chrono::nanoseconds>(waited);
  }
}

void AccessGate::drain(bool config) {
  MutexLock lock(mu_);
  wait_idle(config);
}

void AccessGate::begin_physical() {
  MutexLock lock(mu_);
  physical_ = true;
  ++physical_ops_;
  changed();
  wait_idle(true);
}

void AccessGate::end_physical(PowerState now, std::shared_ptr<const ConfigImage> snapshot) {
  MutexLock lock(mu_);
  power_ = now;
  snapshot_ = std::move(snapshot);
  physical_ = false;
  changed();
}

void AccessGate::set_decode(bool memory, bool io) {
  MutexLock lock(mu_);
  if (memory == mem_decode_ && io == io_decode_) return;
  mem_decode_ = memory;
  io_decode_ = io;
  changed();
}

bool AccessGate::begin_capture() {
  MutexLock lock(mu_);
  if (!bar_open(false)) return false;
  capturing_ = true;
  publish();  // before the shards are counted: new BAR accesses go locked and wait
  // Only BAR accesses share the decoder with the ROM (PCI 3.0 §6.2.5.2).
  ++waiters_;
  fast_waiters_.fetch_add(1, std::memory_order_seq_cst);
  while (bar_inflight_ != 0 || fast_inflight(AccessKind::kBar) != 0) cv_.wait(mu_);
  fast_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  --waiters_;
  return true;
}

void AccessGate::end_capture(bool rom_off) {
  MutexLock lock(mu_);
  capturing_ = false;
  if (!rom_off) rom_stuck_ = true;
  changed();
}

void AccessGate::clear_rom_stuck() {
  MutexLock lock(mu_);
  if (!rom_stuck_) return;
  rom_stuck_ = false;
  changed();
}

void AccessGate::revoke() {
  MutexLock lock(mu_);
  revoked_ = true;
  changed();
}

}  // namespace pcifs::core
