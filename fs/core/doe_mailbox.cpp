// The queue side of DoeMailbox: submission, cancellation, delivery of
// completions, discovery, and the register adapter. The state machine that
// drives the device is in doe_mailbox_fsm.cpp.
#include "core/doe_mailbox.hpp"

#include <linux/pci_regs.h>
#include <spdlog/spdlog.h>

#include "core/doe_object.hpp"

namespace pcifs::core {

struct DoeMailbox::Private {
  explicit Private() = default;
};

namespace {

template <class D>
void invoke(D& d) {
  if (!d.done) return;
  try {
    d.done(std::move(d.result));
  } catch (...) {
    // A completion is the caller's code; its failure must not stop the mailbox.
    spdlog::error("doe: a completion threw; ignored");
  }
}

}  // namespace

// --- DeviceDoeRegs

DeviceDoeRegs::DeviceDoeRegs(std::shared_ptr<backend::Device> device, uint16_t cap_offset)
    : device_(std::move(device)), cap_offset_(cap_offset) {}

Result<uint32_t> DeviceDoeRegs::read(uint32_t reg) {
  return device_->config_read(cap_offset_ + reg, 4);
}

Result<void> DeviceDoeRegs::write(uint32_t reg, uint32_t value) {
  return device_->config_write(cap_offset_ + reg, 4, value);
}

Result<std::vector<uint16_t>> find_doe_mailboxes(backend::Device& device) {
  // Follows the extended list header by header rather than reading the whole
  // space, so no DOE data register is touched while looking for mailboxes.
  std::vector<uint16_t> found;
  if (device.info().config_size < 4096) return found;
  uint32_t offset = PCI_CFG_SPACE_SIZE;
  for (int hops = 0; hops < 960 && offset >= PCI_CFG_SPACE_SIZE; ++hops) {
    auto header = device.config_read(offset, 4);
    if (!header) return header.error();
    if (*header == 0 || *header == 0xffffffffu) break;
    if (PCI_EXT_CAP_ID(*header) == PCI_EXT_CAP_ID_DOE)
      found.push_back(static_cast<uint16_t>(offset));
    offset = PCI_EXT_CAP_NEXT(*header);
  }
  return found;
}

// --- DoeMailbox: construction and queue

std::shared_ptr<DoeMailbox> DoeMailbox::create(DoeExecutor& executor, std::unique_ptr<DoeRegs> regs,
                                               DoeMailboxOptions options) {
  return std::make_shared<DoeMailbox>(Private{}, executor, std::move(regs), std::move(options));
}

DoeMailbox::DoeMailbox(Private, DoeExecutor& executor, std::unique_ptr<DoeRegs> regs,
                       DoeMailboxOptions options)
    : executor_(executor), regs_(std::move(regs)), options_(std::move(options)) {}

DoeMailbox::~DoeMailbox() = default;

uint64_t DoeMailbox::submit(std::vector<uint32_t> request, Completion done) {
  uint64_t ticket = 0;
  bool shut = false;
  Completion rejected;  // completes outside the lock when the executor is gone
  {
    MutexLock lock(mu_);
    ticket = next_ticket_++;
    ++stats_.exchanges;
    shut = shut_down_;
    if (shut) {
      rejected = std::move(done);
    } else {
      queue_.emplace_back(ticket, std::move(request), std::move(done));
    }
  }
  if (shut) {
    if (rejected) rejected(Errno(ESHUTDOWN));
    return ticket;
  }
  if (!executor_.wake(shared_from_this())) shutdown();
  return ticket;
}

void DoeMailbox::cancel(uint64_t ticket) {
  {
    MutexLock lock(mu_);
    if (ticket != 0 && ticket == running_ticket_) {
      if (!running_cancel_) running_cancel_ = Errno(ECANCELED);
    } else {
      auto it = std::find_if(queue_.begin(), queue_.end(),
                             [&](const Pending& p) { return p.ticket == ticket; });
      if (it == queue_.end()) return;
      outbox_.emplace_back(std::move(it->done), Errno(ECANCELED));
      record(outbox_.back().result);
      queue_.erase(it);
    }
  }
  if (!executor_.wake(shared_from_this())) shutdown();
}

void DoeMailbox::close(Errno why) {
  {
    MutexLock lock(mu_);
    closed_ = why;
    if (running_ticket_ != 0) running_cancel_ = why;
    while (!queue_.empty()) {  // one at a time: a throw leaves the rest queued
      outbox_.emplace_back(std::move(queue_.front().done), why);
      queue_.pop_front();
    }
  }
  if (!executor_.wake(shared_from_this())) shutdown();
}

bool DoeMailbox::dead() const {
  MutexLock lock(mu_);
  return dead_;
}

DoeStats DoeMailbox::stats() const {
  MutexLock lock(mu_);
  DoeStats s = stats_;
  s.dead = dead_;
  s.queue_depth = queue_.size();
  return s;
}

void DoeMailbox::record(const Response& result) {
  if (result.ok()) {
    ++stats_.completed;
  } else if (result.error() == Errno(ETIMEDOUT)) {
    ++stats_.timeouts;
  } else if (result.error() == Errno(ECANCELED)) {
    ++stats_.cancelled;
  } else if (result.error() == Errno(EIO)) {
    ++stats_.errors;
  }
}

void DoeMailbox::deliver_all() {
  for (;;) {
    std::optional<Delivery> d;
    {
      MutexLock lock(mu_);
      if (outbox_.empty()) return;
      d.emplace(std::move(outbox_.front()));
      outbox_.pop_front();
    }
    invoke(*d);
  }
}

void DoeMailbox::shutdown() {
  std::deque<Delivery> out;
  bool first = false;
  {
    MutexLock lock(mu_);
    first = !shut_down_;
    shut_down_ = true;
    out.swap(outbox_);
  }
  if (first && current_) {
    // Best effort: leave the device idle for whoever initiates next (§6.30.2).
    if (phase_ != Phase::kAwaitNotBusy && phase_ != Phase::kDead)
      (void)regs_->write(PCI_DOE_CTRL, PCI_DOE_CTRL_ABORT);
    out.push_back(Delivery{std::move(current_->done), Errno(ESHUTDOWN)});
    current_.reset();
    phase_ = Phase::kIdle;
  }
  {
    MutexLock lock(mu_);
    running_ticket_ = 0;
    for (auto& p : queue_) out.push_back(Delivery{std::move(p.done), Errno(ESHUTDOWN)});
    queue_.clear();
  }
  for (auto& d : out) invoke(d);
}

// --- Discovery (PCIe 6.0 §6.30.1.1): request DW2 bits 7:0 = index; response
// DW2 = vendor (15:0), type (23:16), next index (31:24), 0 after the last.

void DoeMailbox::discover(const DiscoveryDone& done) {
  discover_from(0, std::make_shared<Features>(), done);
}

void DoeMailbox::discover_from(uint8_t index, const std::shared_ptr<Features>& found,
                               const DiscoveryDone& done) {
  auto [dw0, dw1] = doe_header({kDoeVendorPciSig, kDoeTypeDiscovery}, 3);
  auto self = shared_from_this();
  submit({dw0, dw1, index}, [self, found, done](Response r) {
    if (!r) return done(r.error());
    if (r->size() < 3) return done(Errno(EIO));
    uint32_t dw = (*r)[2];
    found->push_back({static_cast<uint16_t>(dw & PCI_DOE_DATA_OBJECT_DISC_RSP_3_VID),
                      static_cast<uint8_t>((dw & PCI_DOE_DATA_OBJECT_DISC_RSP_3_PROTOCOL) >> 16)});
    auto next = static_cast<uint8_t>((dw & PCI_DOE_DATA_OBJECT_DISC_RSP_3_NEXT_INDEX) >> 24);
    if (next == 0) return done(std::move(*found));
    // An index is 8 bits: more entries than that means the device loops.
    if (found->size() > 255) return done(Errno(EIO));
    self->discover_from(next, found, done);
  });
}

}  // namespace pcifs::core
