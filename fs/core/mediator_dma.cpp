// DMA on real devices [view.hpp allow_dma]: pcifs attaches no IOMMU domain, so
// without the view's grant the writes that would let a device master on host
// memory are dropped -- Bus Master Enable and MSI addresses in config (the
// register table), the MSI-X Message Addresses in BAR memory (here) -- and the
// log says why. The rest of each write goes through.
#include <linux/pci_regs.h>
#include <spdlog/spdlog.h>

#include "core/bar_access.hpp"
#include "core/log_limit.hpp"
#include "core/mediator_state.hpp"

namespace pcifs {

void Mediator::Impl::dma_refused(const core::Handle& h, std::string_view what) const {
  PCIFS_LOG_LIMITED(warn, "dma:" + h.dev->bdf.str(),
                    "{}: {} write by pid={} uid={} dropped: view {} does not allow DMA (a device "
                    "that may master reaches host memory: pcifs attaches no IOMMU domain; root "
                    "grants it with \"allow_dma\": true)",
                    h.dev->bdf.str(), what, h.caller.pid, h.caller.uid, h.policy->name);
}

// A new claim through a view without allow_dma: a real device that firmware
// (or a driver before pcifs) left mastering stops before its tenant can
// program it. Best effort: a device in a transition keeps its state until its
// hand-over; the log says so.
void Mediator::Impl::stop_mastering(core::Handle& h) {
  core::DeviceState& d = *h.dev;
  auto token = d.control->enter_config(true, /*wait=*/false);
  if (!token) return;
  MutexLock lock(d.write_mu);
  auto cmd = d.control->config_read(*token, PCI_COMMAND, 2);
  if (!cmd || (*cmd & PCI_COMMAND_MASTER) == 0) return;
  auto w = d.control->config_write(*token, PCI_COMMAND, 2, *cmd & ~uint32_t{PCI_COMMAND_MASTER});
  spdlog::warn("{}: bus master was on at the claim of pid={}: {} (view {} does not allow DMA)",
               d.bdf.str(), h.caller.pid, w ? "turned off" : "could not turn it off",
               h.policy->name);
}

Result<size_t> Mediator::Impl::write_bar_guarded(core::Handle& h, uint64_t off,
                                                 std::span<const uint8_t> in) {
  core::DeviceState& d = *h.dev;
  const unsigned bar = h.ref.index;
  const auto& res = d.info.resources[bar];
  size_t done = 0;  // bytes of `in` accounted for: written, or dropped on purpose
  std::optional<Errno> error;
  bool dropped = core::for_each_allowed(*d.msix, bar, off, in.size(), [&](uint64_t at, uint64_t n) {
    if (error) return;
    auto piece = in.subspan(static_cast<size_t>(at - off), static_cast<size_t>(n));
    auto w = core::write_bar(*d.dev, bar, at, piece, res.size(), res.is_io());
    if (!w) {
      error = w.error();
    } else if (*w < n) {
      done = static_cast<size_t>(at - off + *w);
      error = Errno(EIO);
    } else {
      done = static_cast<size_t>(at - off + n);
    }
  });
  if (dropped) dma_refused(h, "MSI-X message address");
  if (!error) return in.size();
  if (done > 0) return done;
  return *error;
}

}  // namespace pcifs
