// Reads and writes of device files: config [S4], BARs [S5], rom [S7], and the
// control files power_state [S9], reset and remove [S10].
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "core/bar_access.hpp"
#include "core/log_limit.hpp"
#include "core/mediator_state.hpp"

namespace pcifs {

using core::DeviceState;
using core::Handle;

namespace {

Result<size_t> serve(std::span<const uint8_t> data, uint64_t off, std::span<uint8_t> out) {
  if (off >= data.size()) return size_t{0};
  size_t n = std::min<size_t>(out.size(), data.size() - static_cast<size_t>(off));
  std::memcpy(out.data(), data.data() + off, n);
  return n;
}

core::ConfigReadPolicy read_policy(const ViewPolicy& v, const Caller& c) {
  core::ConfigReadPolicy p;
  bool header = !v.privileged(c) && v.config_read == ConfigRead::kHeader;
  p.scope = header ? core::ConfigReadPolicy::Scope::kHeader : core::ConfigReadPolicy::Scope::kFull;
  p.mask_addresses = v.mask_addresses && !v.privileged(c);  // S4: from unprivileged readers
  p.hide_dsn = v.hide_dsn;
  p.hide_vpd = v.hide_vpd;
  return p;
}

// The text of a control write: "1", "D3hot", each with an optional newline.
std::string_view control_text(std::span<const uint8_t> in) {
  std::string_view t(reinterpret_cast<const char*>(in.data()), in.size());
  if (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  return t;
}

// A config write's plan and its application, under the caller's token.
Result<core::WritePlan> plan_config_write(DeviceState& d, const core::AccessToken& t, uint32_t off,
                                          std::span<const uint8_t> in, bool allow_dma) {
  auto raw_reg = [&d, &t](uint32_t o, unsigned w) { return d.control->config_read(t, o, w); };
  return d.config->plan_write(off, in, raw_reg, allow_dma);
}

Result<size_t> apply_config_write(DeviceState& d, const core::AccessToken& t,
                                  const core::WritePlan& plan) {
  auto raw_write = [&d, &t](uint32_t o, unsigned w, uint32_t v) {
    return d.control->config_write(t, o, w, v);
  };
  return d.config->apply_plan(plan, raw_write);
}

}  // namespace

static_assert(kWouldWait == core::kWouldWait);

Result<size_t> Mediator::read(HandleId id, uint64_t off, std::span<uint8_t> out) {
  return impl_->read(id, off, out, /*wait=*/true);
}

Result<size_t> Mediator::try_read(HandleId id, uint64_t off, std::span<uint8_t> out) {
  return impl_->read(id, off, out, /*wait=*/false);
}

Result<size_t> Mediator::write(HandleId id, uint64_t off, std::span<const uint8_t> in) {
  return impl_->write(id, off, in, /*wait=*/true);
}

Result<size_t> Mediator::try_write(HandleId id, uint64_t off, std::span<const uint8_t> in) {
  return impl_->write(id, off, in, /*wait=*/false);
}

Result<size_t> Mediator::Impl::read(HandleId id, uint64_t off, std::span<uint8_t> out, bool wait) {
  auto h = handle(id);
  if (!h) return missing(id);
  if (dead(*h)) return Errno(ENODEV);
  if (!h->flags.read) return Errno(EBADF);
  switch (h->ref.kind) {
    case FileKind::kConfig: return read_config(*h, off, out, wait);
    case FileKind::kBar: return read_bar(*h, off, out, wait);
    case FileKind::kRom: return read_rom(*h, off, out, wait);
    case FileKind::kDoe: {  // the synchronous form: what is ready now, else EAGAIN
      Result<size_t> got = Errno(EAGAIN);
      doe_read(h, out.size(), /*nonblock=*/true, [&](Result<std::vector<uint8_t>> r) {
        if (!r)
          got = r.error();
        else
          got = serve(*r, 0, out);
      });
      return got;
    }
    case FileKind::kReset:
    case FileKind::kRemove: return Errno(EACCES);
    default: return read_text(*h, off, out);
  }
}

Result<size_t> Mediator::Impl::write(HandleId id, uint64_t off, std::span<const uint8_t> in,
                                     bool wait) {
  auto h = handle(id);
  if (!h) return missing(id);
  if (dead(*h)) return Errno(ENODEV);
  if (!h->flags.write) return Errno(EBADF);
  switch (h->ref.kind) {
    case FileKind::kConfig: return write_config(*h, off, in, wait);
    case FileKind::kBar: return write_bar(*h, off, in, wait);
    case FileKind::kDoe: return doe_write(*h, in);
    case FileKind::kPowerState:
    case FileKind::kReset:
    case FileKind::kRemove:
      // A control operation waits for drains and for the writeback of mapped
      // pages: never on a thread that must not wait.
      if (!wait) return Errno(kWouldWait);
      return write_control(*h, in);
    default: return Errno(EACCES);
  }
}

Result<size_t> Mediator::Impl::read_text(Handle& h, uint64_t off, std::span<uint8_t> out) {
  std::string text = text_of(*h.dev, *h.policy, h.ref, h.caller);
  return serve({reinterpret_cast<const uint8_t*>(text.data()), text.size()}, off, out);
}

// --- config [S4]

Result<size_t> Mediator::Impl::read_config(Handle& h, uint64_t off, std::span<uint8_t> out,
                                           bool wait) {
  DeviceState& d = *h.dev;
  if (off >= d.config->size()) return size_t{0};
  // One admission, taken at the first device byte (shadowed bytes need none,
  // and are served even while a physical operation runs): refused before any
  // device access, never half-way.
  std::optional<core::AccessToken> token;
  auto raw = [&](uint32_t o, std::span<uint8_t> b) -> Result<void> {
    if (!token) {
      auto t = d.control->enter_config(false, wait);
      if (!t) return t.error();
      token.emplace(std::move(*t));
    }
    return d.control->config_read_block(*token, o, b);
  };
  auto n = d.config->read(static_cast<uint32_t>(off), out, read_policy(*h.policy, h.caller), raw);
  if (n || n.error() != Errno(kWouldWait)) d.counters.add(core::DeviceCounters::kConfigReads);
  return n;
}

Result<size_t> Mediator::Impl::write_config(Handle& h, uint64_t off, std::span<const uint8_t> in,
                                            bool wait) {
  DeviceState& d = *h.dev;
  if (off >= d.config->size()) return size_t{0};  // as the kernel's config write: short
  PCIFS_TRY(claim(h, wait));
  // S9: config writes pass in D3hot; only D3cold refuses them (EIO, or a wake).
  if (d.control->power_state() == PowerState::kD3cold) PCIFS_TRY(wake_if_allowed(h, wait));
  // Lock order: the config token, then write_mu (a physical operation waits
  // for tokens to drain, so nobody may wait for the token holding write_mu).
  auto token = d.control->enter_config(true, wait);
  if (!token) return token.error();
  const auto o = static_cast<uint32_t>(off);
  core::DecodeChange decode;
  {
    MutexLock lock(d.write_mu);
    auto plan = plan_config_write(d, *token, o, in, dma_allowed(h));
    if (!plan) return plan.error();
    if (plan->dma_dropped) dma_refused(h, "bus master enable or an MSI address");
    if (!plan->memory_decode && !plan->io_decode) {
      d.counters.add(core::DeviceCounters::kConfigWrites);
      return apply_config_write(d, *token, *plan);
    }
    decode = {plan->memory_decode, plan->io_decode};
  }
  token->release();
  // Decode changes run a control operation (a quiesce when decode goes off,
  // which waits for the writeback of mapped pages) [S12]: never with write_mu
  // or a token held, never on a thread that must not wait.
  // A decode change closes the BARs only: DOE (and Discovery) go on.
  if (!wait) return Errno(kWouldWait);
  d.counters.add(core::DeviceCounters::kConfigWrites);
  Result<size_t> applied = size_t{0};
  auto r = d.control->change_decode(decode, [&]() -> Result<void> {
    // The slot is ours: no physical operation can run, this never waits.
    auto t = d.control->enter_config(true);
    if (!t) return t.error();
    MutexLock lock(d.write_mu);
    // Planned again: another write may have come between the two plans.
    auto plan = plan_config_write(d, *t, o, in, dma_allowed(h));
    if (!plan) return plan.error();
    applied = apply_config_write(d, *t, *plan);
    if (!applied) return applied.error();
    return Ok();
  });
  if (!r) return r.error();
  return applied;
}

// --- BARs [S5]

Result<size_t> Mediator::Impl::read_bar(Handle& h, uint64_t off, std::span<uint8_t> out,
                                        bool wait) {
  DeviceState& d = *h.dev;
  const auto& res = d.info.resources[h.ref.index];
  auto n = core::check_bar_access(off, out.size(), res.size(), false);  // EINVAL before EIO
  if (!n || *n == 0) return n;
  PCIFS_TRY(wake_if_allowed(h, wait));
  // A BAR request may be a page fault: it never moves to a lane, where an
  // operation ahead of it could be waiting for its page lock. It waits here
  // only for a running ROM capture (one ROM read; a capture calls no sink).
  auto token = d.control->enter_bar(h.ref.index, /*wait=*/true);
  if (!token) return token.error();
  d.counters.add(core::DeviceCounters::kBarReads);
  return core::read_bar(*d.dev, h.ref.index, off, out, res.size(), res.is_io());
}

Result<size_t> Mediator::Impl::write_bar(Handle& h, uint64_t off, std::span<const uint8_t> in,
                                         bool wait) {
  DeviceState& d = *h.dev;
  const auto& res = d.info.resources[h.ref.index];
  auto n = core::check_bar_access(off, in.size(), res.size(), true);
  if (!n || *n == 0) return n;
  PCIFS_TRY(wake_if_allowed(h, wait));
  auto token = d.control->enter_bar(h.ref.index, /*wait=*/true);
  if (!token) return token.error();
  d.counters.add(core::DeviceCounters::kBarWrites);
  if (d.msix && !dma_allowed(h)) return write_bar_guarded(h, off, in);
  return core::write_bar(*d.dev, h.ref.index, off, in, res.size(), res.is_io());
}

// --- rom [S7]

Result<size_t> Mediator::Impl::read_rom(Handle& h, uint64_t off, std::span<uint8_t> out,
                                        bool wait) {
  DeviceState& d = *h.dev;
  if (d.bound()) {
    PCIFS_LOG_LIMITED(warn, "rom:" + d.bdf.str(), "{}: ROM capture refused: {}", d.bdf.str(),
                      *d.owned_elsewhere);
    return Errno(EBUSY);
  }
  auto rom = d.control->rom(wait);
  if (!rom && rom.error() == Errno(kWouldWait)) return rom.error();
  if (!rom) {
    PCIFS_LOG_LIMITED(warn, "rom:" + d.bdf.str(), "{}: rom: {} ({})", d.bdf.str(),
                      rom.error().name(), d.control->rom_error());
    return rom.error();
  }
  return serve((*rom)->bytes, off, out);
}

// --- control files [S9, S10]

Result<size_t> Mediator::Impl::write_control(Handle& h, std::span<const uint8_t> in) {
  DeviceState& d = *h.dev;
  std::string_view text = control_text(in);
  Result<void> r = Ok();
  // A power change or a reset in the middle of Discovery would fail it and
  // leave doe_features/ empty for good: it waits (the first DOE timeout after
  // the device arrived at most). On the device's lane: control writes wait.
  if (h.ref.kind != FileKind::kRemove) d.await_discovery();
  if (h.ref.kind == FileKind::kPowerState) {
    // parse_power_state strips the one newline itself: "D0\n\n" is EINVAL.
    auto target = parse_power_state({reinterpret_cast<const char*>(in.data()), in.size()});
    if (!target) return Errno(EINVAL);
    PCIFS_TRY(claim(h));
    spdlog::info("{}: power_state {} -> {} by pid={}", d.bdf.str(),
                 to_string(d.control->power_state()), to_string(*target), h.caller.pid);
    r = d.control->set_power_state(*target);
    if (r) {
      emit(MediatorEvent::device(MediatorEvent::Kind::kPower, d.bdf,
                                 std::string(to_string(*target))));
      rediscover(h.dev, /*reset=*/false);
    }
  } else if (text != "1") {
    return Errno(EINVAL);
  } else if (h.ref.kind == FileKind::kReset) {
    PCIFS_TRY(claim(h));
    spdlog::info("{}: reset by pid={}", d.bdf.str(), h.caller.pid);
    r = d.control->reset();
    if (r) {
      d.config->reset_virtual();
      rediscover(h.dev, /*reset=*/true);
    }
  } else {
    spdlog::info("{}: remove by pid={}", d.bdf.str(), h.caller.pid);
    r = d.control->remove();
    // The backend's hot-plug callback may have run it (and a new device may
    // sit at the address since): only this device, serialised as hot-plug is.
    MutexLock serial(attach_mu);
    if (find(d.bdf).get() == &d) device_removed(d.bdf);
  }
  if (!r) return r.error();
  return in.size();
}

}  // namespace pcifs
