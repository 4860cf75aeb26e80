// The doe file [S8]: write() queues one exchange per handle, the response is
// read back (blocking reads complete asynchronously), poll says when.
#include <spdlog/spdlog.h>

#include <cstring>

#include "core/doe_object.hpp"
#include "core/log_limit.hpp"
#include "core/mediator_state.hpp"

namespace pcifs {

using core::DeviceState;
using core::DoeSlot;
using core::Handle;

Result<uint32_t> core::GatedDoeRegs::read(uint32_t reg) {
  auto token = control_.enter_doe();
  if (!token) return token.error();
  PCIFS_TRY(admit_same_context());
  return dev_->config_read(cap_ + reg, 4);
}

Result<void> core::GatedDoeRegs::write(uint32_t reg, uint32_t value) {
  auto token = control_.enter_doe();
  if (!token) return token.error();
  PCIFS_TRY(admit_same_context());
  return dev_->config_write(cap_ + reg, 4, value);
}

namespace {

std::vector<uint8_t> to_bytes(const std::vector<uint32_t>& dw) {
  std::vector<uint8_t> out(dw.size() * 4);
  for (size_t i = 0; i < dw.size(); ++i) {
    for (unsigned k = 0; k < 4; ++k) out[4 * i + k] = static_cast<uint8_t>(dw[i] >> (8 * k));
  }
  return out;
}

// Back to idle, keeping a poll waiter.
void to_idle(DoeSlot& s) {
  s.state = DoeSlot::State::kIdle;
  s.lost = false;
  s.ticket = 0;
  s.response = std::vector<uint8_t>{};
  s.pos = 0;
  s.budget.reset();
}

// Takes the next part of a ready response (caller holds h.mu): a response is
// consumed once read to its end; an error is delivered once.
Result<std::vector<uint8_t>> take(DoeSlot& s, size_t max) {
  if (!s.response) {
    Errno e = s.response.error();
    to_idle(s);
    return e;
  }
  const auto& all = *s.response;
  size_t n = std::min(max, all.size() - s.pos);
  std::vector<uint8_t> part(all.begin() + static_cast<long>(s.pos),
                            all.begin() + static_cast<long>(s.pos + n));
  s.pos += n;
  if (s.pos >= all.size()) to_idle(s);
  return part;
}

}  // namespace

namespace {

// The kernel hands the daemon at most one FUSE request's worth of a write
// (max_write 1 MiB, and 256 pinned pages: an unaligned 1 MiB buffer spans 257),
// so a write() of an object near the 2^18-dword maximum can arrive as several
// writes in a row. A first piece is at least this long and shorter than the
// length its own header claims.
constexpr size_t kSplitPieceMin = (size_t{1} << 20) - 4095;

size_t claimed_bytes(std::span<const uint8_t> in) {
  if (in.size() < 8) return 0;
  uint32_t dw1 = 0;
  std::memcpy(&dw1, in.data() + 4, sizeof dw1);
  return size_t{core::doe_object_length(dw1)} * 4;
}

}  // namespace

// Collects the pieces of a split write (S8: one whole object per write()).
// Returns the whole object once complete, nullopt while pieces are missing.
Result<std::optional<std::vector<uint8_t>>> Mediator::Impl::doe_assemble(
    Handle& h, std::span<const uint8_t> in) {
  MutexLock lock(h.mu);
  auto& part = h.doe.partial;
  if (part.empty()) {
    const size_t want = claimed_bytes(in);
    // A piece this long that is longer than its header says is the start of
    // a write over the maximum (the 18-bit field cannot say more): E2BIG.
    if (in.size() >= kSplitPieceMin && in.size() > want) return Errno(E2BIG);
    if (in.size() < kSplitPieceMin || in.size() == want) {
      return std::optional<std::vector<uint8_t>>{std::vector<uint8_t>(in.begin(), in.end())};
    }
  }
  if (part.size() + in.size() > size_t{core::kDoeMaxDwords} * 4) {
    part.clear();
    return Errno(E2BIG);
  }
  part.insert(part.end(), in.begin(), in.end());
  if (part.size() < claimed_bytes(part)) return std::optional<std::vector<uint8_t>>{};
  return std::optional<std::vector<uint8_t>>{std::exchange(part, {})};
}

Result<size_t> Mediator::Impl::doe_write(Handle& h, std::span<const uint8_t> piece) {
  PCIFS_TRY_ASSIGN(whole, doe_assemble(h, piece));
  if (!whole) return piece.size();  // more pieces to come
  PCIFS_TRY(doe_submit(h, *whole));
  return piece.size();
}

Result<void> Mediator::Impl::doe_submit(Handle& h, std::span<const uint8_t> in) {
  DeviceState& d = *h.dev;
  auto req = core::parse_doe_request(in);
  if (!req) return req.error();
  if (!h.policy->doe_allowed(h.caller, {req->protocol.vendor, req->protocol.type})) {
    d.counters.add(core::DeviceCounters::kDenials);
    PCIFS_LOG_LIMITED(info, "doedeny:" + d.bdf.str(),
                      "{}: DOE protocol {} denied for pid={} uid={} view={}", d.bdf.str(),
                      core::format_doe_protocol(req->protocol), h.caller.pid, h.caller.uid,
                      h.policy->name);
    return Errno(EPERM);
  }
  if (h.ref.index >= d.mailboxes.size()) return Errno(EIO);
  PCIFS_TRY(wake_if_allowed(h));
  auto& mb = d.mailboxes[h.ref.index];
  {
    MutexLock lock(h.mu);
    if (h.doe.lost) {  // the old daemon's exchange (maybe this very write, resent) died with it
      to_idle(h.doe);
      journal_changed(h);
      return Errno(EIO);
    }
    if (h.doe.state != DoeSlot::State::kIdle) return Errno(EBUSY);  // one in flight per handle
  }
  // The bound on exchanges held per uid and in total [S13]: EAGAIN past it.
  auto share = doe_budget.take(h.caller.uid);
  if (!share) {
    PCIFS_LOG_LIMITED(info, "doebound:" + std::to_string(h.caller.uid),
                      "{}: DOE write EAGAIN for pid={} uid={}: {} exchanges held ({} in all)",
                      d.bdf.str(), h.caller.pid, h.caller.uid, doe_budget.held(h.caller.uid),
                      doe_budget.total());
    return share.error();
  }
  {
    MutexLock lock(h.mu);
    if (h.doe.state != DoeSlot::State::kIdle) return Errno(EBUSY);  // a racing write won
    h.doe.state = DoeSlot::State::kInFlight;
    h.doe.budget = std::move(*share);
    journal_changed(h);
  }
  d.counters.add(core::DeviceCounters::kDoeExchanges);
  std::weak_ptr<Handle> wh = handle(h.id);
  // The ticket is recorded after submit; a completion that beats it finds
  // ticket 0 and still matches (see doe_complete).
  uint64_t ticket = 0;
  try {
    ticket = mb->submit(std::move(req->dwords), [this, wh](Result<std::vector<uint32_t>> r) {
      doe_complete(wh, 0, std::move(r));
    });
  } catch (...) {  // not queued (no memory): the handle must not stay in flight
    MutexLock lock(h.mu);
    if (h.doe.state == DoeSlot::State::kInFlight) to_idle(h.doe);
    journal_changed(h);
    throw;
  }
  {
    MutexLock lock(h.mu);
    if (h.doe.state == DoeSlot::State::kInFlight) h.doe.ticket = ticket;
  }
  return Ok();
}

void Mediator::Impl::doe_complete(const std::weak_ptr<Handle>& wh, uint64_t,
                                  Result<std::vector<uint32_t>> r) {
  auto h = wh.lock();
  if (!h) return;  // released meanwhile: nobody to tell
  // Removal revokes register access before it closes the mailboxes, so a
  // running exchange may fail on the revoked gate first (EIO): the caller
  // learns what happened, ENODEV [S10].
  if (!r && (dead(*h) || h->dev->control->revoked())) r = Errno(ENODEV);
  Mediator::ReadDone pending;
  std::function<void()> wake;
  std::optional<Result<std::vector<uint8_t>>> part;
  {
    MutexLock lock(h->mu);
    if (h->doe.state != DoeSlot::State::kInFlight) return;
    h->doe.state = DoeSlot::State::kReady;
    h->doe.pos = 0;
    if (r)
      h->doe.response = to_bytes(*r);
    else
      h->doe.response = r.error();
    if (!r && r.error() != Errno(ECANCELED)) {
      PCIFS_LOG_LIMITED(warn, "doefail:" + h->dev->bdf.str(),
                        "{}: DOE exchange for pid={} failed: {}", h->dev->bdf.str(), h->caller.pid,
                        r.error().name());
    }
    if (h->doe.pending) {
      pending = std::move(h->doe.pending);
      h->doe.pending = nullptr;
      part = take(h->doe, h->doe.pending_max);
    }
    wake = std::move(h->doe.wake);
    h->doe.wake = nullptr;
  }
  if (pending && part) pending(std::move(*part));
  if (wake) wake();
}

void Mediator::Impl::doe_read(const std::shared_ptr<Handle>& h, size_t max, bool nonblock,
                              ReadDone done) {
  Result<std::vector<uint8_t>> now = std::vector<uint8_t>{};
  {
    MutexLock lock(h->mu);
    switch (h->doe.state) {
      case DoeSlot::State::kIdle:
        // Nothing asked: end of file. Only now is the exchange journaled as
        // over: the reply carrying the response's last part may have died
        // with the daemon, and then its resent read must get EIO, not EOF.
        journal_changed(*h);
        break;
      case DoeSlot::State::kReady: now = take(h->doe, max); break;
      case DoeSlot::State::kInFlight:
        if (nonblock) {
          now = Errno(EAGAIN);
        } else if (h->doe.pending) {
          now = Errno(EBUSY);  // one blocked reader per handle
        } else {
          h->doe.pending = std::move(done);
          h->doe.pending_max = max;
          return;
        }
    }
  }
  done(std::move(now));
}

void Mediator::doe_read(HandleId id, size_t max_bytes, ReadDone done) {
  auto h = impl_->handle(id);
  if (!h) return done(impl_->missing(id));
  if (Impl::dead(*h)) return done(Errno(ENODEV));
  if (h->ref.kind != FileKind::kDoe) return done(Errno(EINVAL));
  impl_->doe_read(h, max_bytes, h->flags.nonblock, std::move(done));
}

void Mediator::doe_interrupt(HandleId id) {
  auto h = impl_->handle(id);
  if (!h) return;
  ReadDone pending;
  {
    MutexLock lock(h->mu);
    pending = std::move(h->doe.pending);
    h->doe.pending = nullptr;
  }
  if (pending) pending(Errno(EINTR));  // the exchange goes on; a later read gets it
}

unsigned Mediator::doe_poll(HandleId id, std::function<void()> wake) {
  auto h = impl_->handle(id);
  if (!h) return 3;  // ready: the next read or write tells why (EBADF, ENODEV)
  MutexLock lock(h->mu);
  switch (h->doe.state) {
    case DoeSlot::State::kIdle: return 2;
    case DoeSlot::State::kReady: return 1;
    case DoeSlot::State::kInFlight: h->doe.wake = std::move(wake); return 0;
  }
  return 0;
}

namespace {

// Whether Discovery could reach the device's mailboxes now.
bool in_d0(const DeviceState& d) {
  return !d.gone.load() && !d.control->unrecovered() && d.control->power_state() == PowerState::kD0;
}

// Runs Discovery on mailbox `m`; discovery_pending already counts it. The
// device lives until its Discovery has ended, so the callbacks of
// when_doe_discovered always run: every exchange completes (a response, the
// timeout, close() at removal, ESHUTDOWN when the executor stops).
void discover_mailbox(const std::shared_ptr<DeviceState>& d, size_t m) {
  const uint64_t generation = d->control->state_generation();
  d->mailboxes[m]->discover([dev = d, m, generation](Result<std::vector<backend::DoeFeature>> r) {
    const bool eio = !r && r.error() == Errno(EIO);
    // The device changed state while Discovery ran and is in D0 now: a wake
    // (which does not wait for Discovery) came after the refusal, and the
    // rediscover() after it found nothing to retry yet. Once more, at once;
    // each further try needs another change of state.
    if (eio && dev->control->state_generation() != generation && in_d0(*dev)) {
      spdlog::info("{}: DOE mailbox {}: Discovery again, the device is in D0 now", dev->bdf.str(),
                   m);
      return discover_mailbox(dev, m);
    }
    // Refused because the device is not in D0 (it arrived in low power): it
    // runs again when the device is next put there. Failed by the mailbox of
    // a device in D0 (EIO: its Error bit, or not a Discovery response): after
    // the next reset of the function. A timeout is final (DeviceState).
    using Again = DeviceState::Rediscover;
    const Again again = !eio ? Again::kNever : in_d0(*dev) ? Again::kAtReset : Again::kAtD0;
    if (!r) {
      spdlog::warn("{}: DOE mailbox {} discovery failed: {}{}", dev->bdf.str(), m, r.error().name(),
                   again == Again::kAtD0 ? " (the device is not in D0: it runs again when it is "
                                           "put there)"
                   : again == Again::kAtReset ? " (it runs again after the next reset)"
                                              : "");
    }
    std::vector<std::function<void()>> then;
    {
      MutexLock lock(dev->doe_mu);
      dev->features[m] = r ? *r : std::vector<backend::DoeFeature>{};
      dev->rediscover[m] = again;
      if (--dev->discovery_pending == 0) then.swap(dev->discovery_waiters);
      dev->discovery_cv.notify_all();
    }
    for (auto& f : then) f();  // with no lock held
  });
}

}  // namespace

void Mediator::Impl::start_discovery(const std::shared_ptr<DeviceState>& d) {
  for (size_t m = 0; m < d->mailboxes.size(); ++m) discover_mailbox(d, m);
}

void Mediator::Impl::rediscover(const std::shared_ptr<DeviceState>& d, bool reset) {
  if (!in_d0(*d)) return;
  using Again = DeviceState::Rediscover;
  std::vector<std::pair<size_t, Again>> again;
  {
    MutexLock lock(d->doe_mu);
    for (size_t m = 0; m < d->rediscover.size(); ++m) {
      const Again when = d->rediscover[m];
      if (when == Again::kNever || (when == Again::kAtReset && !reset)) continue;
      d->rediscover[m] = Again::kNever;
      d->features[m].reset();
      again.emplace_back(m, when);
    }
    d->discovery_pending += again.size();
  }
  for (const auto& [m, when] : again) {
    spdlog::info("{}: DOE mailbox {}: Discovery again, {}", d->bdf.str(), m,
                 when == Again::kAtReset ? "the function was reset" : "the device is in D0");
    discover_mailbox(d, m);
  }
}

bool Mediator::when_doe_discovered(const Bdf& bdf, std::function<void()> then) {
  if (auto d = impl_->find(bdf)) {
    MutexLock lock(d->doe_mu);
    if (d->discovery_pending > 0) {
      d->discovery_waiters.push_back(std::move(then));
      return false;
    }
  }
  then();
  return true;
}

void Mediator::wait_for_discovery() {
  std::vector<std::shared_ptr<DeviceState>> all;
  {
    ReadMostlyShared lock(impl_->devices_mu);
    for (auto& [bdf, d] : impl_->devices) all.push_back(d);
  }
  for (auto& d : all) d->await_discovery();
}

}  // namespace pcifs
