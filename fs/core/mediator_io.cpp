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

}  // namespace

Result<size_t> Mediator::read(HandleId id, uint64_t off, std::span<uint8_t> out) {
  auto h = impl_->handle(id);
  if (!h) return Errno(EBADF);
  if (Impl::dead(*h)) return Errno(ENODEV);
  if (!h->flags.read) return Errno(EBADF);
  switch (h->ref.kind) {
    case FileKind::kConfig: return impl_->read_config(*h, off, out);
    case FileKind::kBar: return impl_->read_bar(*h, off, out);
    case FileKind::kRom: return impl_->read_rom(*h, off, out);
    case FileKind::kDoe: {  // the synchronous form: what is ready now, else EAGAIN
      Result<size_t> got = Errno(EAGAIN);
      impl_->doe_read(h, out.size(), /*nonblock=*/true, [&](Result<std::vector<uint8_t>> r) {
        if (!r)
          got = r.error();
        else
          got = serve(*r, 0, out);
      });
      return got;
    }
    case FileKind::kReset:
    case FileKind::kRemove: return Errno(EACCES);
    default: return impl_->read_text(*h, off, out);
  }
}

Result<size_t> Mediator::write(HandleId id, uint64_t off, std::span<const uint8_t> in) {
  auto h = impl_->handle(id);
  if (!h) return Errno(EBADF);
  if (Impl::dead(*h)) return Errno(ENODEV);
  if (!h->flags.write) return Errno(EBADF);
  switch (h->ref.kind) {
    case FileKind::kConfig: return impl_->write_config(*h, off, in);
    case FileKind::kBar: return impl_->write_bar(*h, off, in);
    case FileKind::kDoe: return impl_->doe_write(*h, in);
    case FileKind::kPowerState:
    case FileKind::kReset:
    case FileKind::kRemove: return impl_->write_control(*h, in);
    default: return Errno(EACCES);
  }
}

Result<size_t> Mediator::Impl::read_text(Handle& h, uint64_t off, std::span<uint8_t> out) {
  std::string text = text_of(*h.dev, policy(h.view), h.ref, h.caller);
  return serve({reinterpret_cast<const uint8_t*>(text.data()), text.size()}, off, out);
}

// --- config [S4]

Result<size_t> Mediator::Impl::read_config(Handle& h, uint64_t off, std::span<uint8_t> out) {
  DeviceState& d = *h.dev;
  if (off >= d.config->size()) return size_t{0};
  d.counters.config_reads++;
  auto raw = [&d](uint32_t o, std::span<uint8_t> b) { return d.control->config_read_block(o, b); };
  return d.config->read(static_cast<uint32_t>(off), out, read_policy(policy(h.view), h.caller),
                        raw);
}

Result<size_t> Mediator::Impl::write_config(Handle& h, uint64_t off, std::span<const uint8_t> in) {
  DeviceState& d = *h.dev;
  if (off >= d.config->size()) return size_t{0};  // as the kernel's config write: short
  PCIFS_TRY(claim(h));
  // S9: config writes pass in D3hot; only D3cold refuses them (EIO, or a wake).
  if (d.control->power_state() == PowerState::kD3cold) PCIFS_TRY(wake_if_allowed(h));
  d.counters.config_writes++;
  MutexLock lock(d.write_mu);
  auto raw_reg = [&d](uint32_t o, unsigned w) { return d.control->config_read(o, w); };
  auto plan = d.config->plan_write(static_cast<uint32_t>(off), in, raw_reg);
  if (!plan) return plan.error();
  auto raw_write = [&d](uint32_t o, unsigned w, uint32_t v) {
    return d.control->config_write(o, w, v);
  };
  if (!plan->memory_decode && !plan->io_decode) return d.config->apply_plan(*plan, raw_write);
  // Decode changes: the control quiesces BAR access first when decode goes off
  // [S12], then performs the write.
  Result<size_t> applied = size_t{0};
  auto r = d.control->change_decode({plan->memory_decode, plan->io_decode}, [&]() -> Result<void> {
    applied = d.config->apply_plan(*plan, raw_write);
    if (!applied) return applied.error();
    return Ok();
  });
  if (!r) return r.error();
  return applied;
}

// --- BARs [S5]

Result<size_t> Mediator::Impl::read_bar(Handle& h, uint64_t off, std::span<uint8_t> out) {
  DeviceState& d = *h.dev;
  const auto& res = d.info.resources[h.ref.index];
  auto n = core::check_bar_access(off, out.size(), res.size(), false);  // EINVAL before EIO
  if (!n || *n == 0) return n;
  PCIFS_TRY(wake_if_allowed(h));
  auto token = d.control->enter_bar(h.ref.index);  // one admission for the whole request
  if (!token) return token.error();
  d.counters.bar_reads++;
  return core::read_bar(*d.dev, h.ref.index, off, out, res.size(), res.is_io());
}

Result<size_t> Mediator::Impl::write_bar(Handle& h, uint64_t off, std::span<const uint8_t> in) {
  DeviceState& d = *h.dev;
  const auto& res = d.info.resources[h.ref.index];
  auto n = core::check_bar_access(off, in.size(), res.size(), true);
  if (!n || *n == 0) return n;
  PCIFS_TRY(wake_if_allowed(h));
  auto token = d.control->enter_bar(h.ref.index);
  if (!token) return token.error();
  d.counters.bar_writes++;
  return core::write_bar(*d.dev, h.ref.index, off, in, res.size(), res.is_io());
}

// --- rom [S7]

Result<size_t> Mediator::Impl::read_rom(Handle& h, uint64_t off, std::span<uint8_t> out) {
  DeviceState& d = *h.dev;
  if (d.bound()) {
    PCIFS_LOG_LIMITED(warn, "rom:" + d.bdf.str(), "{}: ROM capture refused: {}", d.bdf.str(),
                      *d.owned_elsewhere);
    return Errno(EBUSY);
  }
  auto rom = d.control->rom();
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
  if (h.ref.kind == FileKind::kPowerState) {
    // parse_power_state strips the one newline itself: "D0\n\n" is EINVAL.
    auto target = parse_power_state({reinterpret_cast<const char*>(in.data()), in.size()});
    if (!target) return Errno(EINVAL);
    PCIFS_TRY(claim(h));
    spdlog::info("{}: power_state {} -> {} by pid={}", d.bdf.str(),
                 to_string(d.control->power_state()), to_string(*target), h.caller.pid);
    r = d.control->set_power_state(*target);
    if (r)
      emit(MediatorEvent::device(MediatorEvent::Kind::kPower, d.bdf,
                                 std::string(to_string(*target))));
  } else if (text != "1") {
    return Errno(EINVAL);
  } else if (h.ref.kind == FileKind::kReset) {
    PCIFS_TRY(claim(h));
    spdlog::info("{}: reset by pid={}", d.bdf.str(), h.caller.pid);
    r = d.control->reset();
    if (r) d.config->reset_virtual();
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
