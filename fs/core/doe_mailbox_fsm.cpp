// The DoeMailbox state machine: one exchange at a time on the device, each
// rule from PCIe 6.0 §6.30.2 ("Operation") unless noted.
//
//   Idle --request--> AwaitNotBusy --!Busy--> WriteRequest --GO--> AwaitResponse
//   AwaitResponse --Data Object Ready--> ReadResponse --> Idle (response)
//   AwaitResponse --Error--> Abort (EIO); --timeout--> Abort (ETIMEDOUT)
//   any device phase --cancel/close--> Abort (ECANCELED / close's errno)
//   AbortWait --!Busy && !Error--> Idle (or AwaitNotBusy once, to retry)
//   AbortWait --bound passed--> Dead (EIO for the running and every later exchange)
//
// Runs only inside step() (the executor never steps one task twice at once),
// so the FSM fields need no lock; the queue and the cancel flags are under mu_.
#include <linux/pci_regs.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/doe_mailbox.hpp"
#include "core/doe_object.hpp"
#include "core/log_limit.hpp"

namespace pcifs::core {
namespace {

// Register accesses per step: a large object is written or read over several
// steps so that other mailboxes on the same worker keep moving.
constexpr int kStepBudget = 256;
// Timed polling: fast first (a simple responder answers in microseconds),
// then backing off to the 1 ms the kernel's DOE code settles at.
constexpr std::chrono::microseconds kPollFirst{10};
constexpr std::chrono::microseconds kPollMax{1000};
// run_phase()'s "nothing to do until woken".
constexpr auto kIdleForever = DoeExecutor::Clock::time_point::max();

}  // namespace

// A step is a noexcept boundary of its own: the executor would only park a
// task that throws, and the exchange's reader would wait forever.
std::optional<DoeExecutor::Clock::time_point> DoeMailbox::step() {
  try {
    return step_unguarded();
  } catch (const std::exception& e) {
    return recover(e.what());
  } catch (...) {
    return recover("unknown exception");
  }
}

// A step threw (no memory, a register path's bug): the device may be anywhere
// in an exchange, so the running exchange fails with EIO and the next one
// starts with an Abort (needs_abort_), the way a failed register access is
// handled -- §6.30.2 lets Abort end whatever state the mailbox is in. The
// mailbox is not marked dead for it: if the Abort does not take, the usual
// rule marks it dead then. Allocates nothing: the completion is called
// directly, after what was already in the outbox (submission order).
std::optional<DoeExecutor::Clock::time_point> DoeMailbox::recover(const char* what) noexcept {
  try {
    PCIFS_LOG_LIMITED(
        error, "doethrow:" + options_.label,
        "{}: DOE step failed ({}); the exchange fails with EIO, Abort before the next",
        options_.label, what);
  } catch (...) {
  }
  needs_abort_ = true;
  Completion done;
  Response result = Errno(EIO);
  if (current_) {
    done = std::move(current_->done);
    current_.reset();
  }
  response_.clear();
  {
    MutexLock lock(mu_);
    if (closed_) result = *closed_;
    if (running_cancel_) result = *running_cancel_;
    if (done) record(result);
    running_ticket_ = 0;
    running_cancel_.reset();
    phase_ = dead_ ? Phase::kDead : Phase::kIdle;
  }
  deliver_all();
  if (done) {
    try {
      done(std::move(result));
    } catch (...) {  // the caller's code: as invoke()
    }
  }
  // Again soon, not at once: a failure that repeats (no memory) fails one
  // exchange per step rather than spinning a worker.
  return Clock::now() + kPollMax;
}

std::optional<DoeExecutor::Clock::time_point> DoeMailbox::step_unguarded() {
  budget_ = kStepBudget;
  std::optional<TimePoint> next;
  while (!(next = run_phase())) {
    deliver_all();  // reply as soon as an exchange ends, before the next one starts
    if (budget_ <= 0) {
      next = Clock::now();  // yield: runnable again at once
      break;
    }
  }
  deliver_all();
  if (*next == kIdleForever) return std::nullopt;
  return next;
}

// nullopt: the phase changed, run the next one now. A time: poll again then.
std::optional<DoeMailbox::TimePoint> DoeMailbox::run_phase() {
  bool device_phase = phase_ == Phase::kWriteRequest || phase_ == Phase::kAwaitResponse ||
                      phase_ == Phase::kReadResponse;
  // A cancelled exchange stops at a step boundary; Abort leaves the mailbox
  // idle for the next initiator (§6.30.2: Abort may be issued at any time).
  if (device_phase && cancel_requested()) return start_abort(Errno(ECANCELED), AfterAbort::kFail);
  switch (phase_) {
    case Phase::kIdle: return phase_idle();
    case Phase::kAwaitNotBusy: return phase_await_not_busy();
    case Phase::kWriteRequest: return phase_write_request();
    case Phase::kAwaitResponse: return phase_await_response();
    case Phase::kReadResponse: return phase_read_response();
    case Phase::kAbortWait: return phase_abort_wait();
    case Phase::kDead: return phase_dead();
  }
  return kIdleForever;
}

void DoeMailbox::enter(Phase phase, std::chrono::milliseconds bound) {
  phase_ = phase;
  deadline_ = Clock::now() + bound;
  poll_interval_ = kPollFirst;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::poll_later() {
  auto at = Clock::now() + poll_interval_;
  poll_interval_ = std::min(poll_interval_ * 2, kPollMax);
  return at;
}

Result<uint32_t> DoeMailbox::reg_read(uint32_t reg) {
  --budget_;
  return regs_->read(reg);
}

Result<void> DoeMailbox::reg_write(uint32_t reg, uint32_t value) {
  --budget_;
  return regs_->write(reg, value);
}

bool DoeMailbox::cancel_requested() {
  MutexLock lock(mu_);
  return running_cancel_.has_value();
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_idle() {
  {
    MutexLock lock(mu_);
    if (queue_.empty()) return kIdleForever;
    // Into current_ first: from here a throw is answered by recover().
    current_ = std::move(queue_.front());
    queue_.pop_front();
    if (closed_ || dead_) {
      Response r = closed_ ? *closed_ : Errno(EIO);
      outbox_.emplace_back(std::move(current_->done), std::move(r));
      record(outbox_.back().result);
      current_.reset();
      return std::nullopt;
    }
    running_ticket_ = current_->ticket;
    running_cancel_.reset();
  }
  retried_ = false;
  auto valid = check_doe_dwords(current_->request, options_.max_dwords);
  if (!valid) {
    finish(valid.error());
    return std::nullopt;
  }
  regs_->begin_exchange();
  enter(Phase::kAwaitNotBusy, options_.busy_timeout);
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_await_not_busy() {
  if (cancel_requested()) {  // nothing is on the device yet: no Abort needed
    finish(Errno(ECANCELED));
    return std::nullopt;
  }
  // An earlier register failure left the mailbox in an unknown state: Abort first.
  if (needs_abort_) return start_abort(Errno(EIO), AfterAbort::kRetry);
  auto status = reg_read(PCI_DOE_STATUS);
  if (!status) return start_abort(status.error(), AfterAbort::kFail);
  // A new object may be written only while Busy is clear.
  if (*status & PCI_DOE_STATUS_BUSY) {
    if (Clock::now() < deadline_) return poll_later();
    return start_abort(Errno(EIO), AfterAbort::kRetry);
  }
  // A stale Error or an unread object (left by an earlier initiator): Abort
  // returns the mailbox to its initial state, then this request goes out.
  if (*status & (PCI_DOE_STATUS_ERROR | PCI_DOE_STATUS_DATA_OBJECT_READY))
    return start_abort(Errno(EIO), AfterAbort::kRetry);
  position_ = 0;
  phase_ = Phase::kWriteRequest;
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_write_request() {
  const auto& request = current_->request;
  while (position_ < request.size()) {
    if (budget_ <= 0) return Clock::now();
    auto w = reg_write(PCI_DOE_WRITE, request[position_]);
    if (!w) return start_abort(w.error(), AfterAbort::kFail);
    ++position_;
  }
  // GO once the whole object is in the Write Data Mailbox.
  auto go = reg_write(PCI_DOE_CTRL, PCI_DOE_CTRL_GO);
  if (!go) return start_abort(go.error(), AfterAbort::kFail);
  enter(Phase::kAwaitResponse, options_.response_timeout);
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_await_response() {
  auto status = reg_read(PCI_DOE_STATUS);
  if (!status) return start_abort(status.error(), AfterAbort::kFail);
  // Error: the object was not processed; only Abort clears it.
  if (*status & PCI_DOE_STATUS_ERROR) return start_abort(Errno(EIO), AfterAbort::kFail);
  if (*status & PCI_DOE_STATUS_DATA_OBJECT_READY) {
    position_ = 0;
    response_.clear();
    phase_ = Phase::kReadResponse;
    return std::nullopt;
  }
  // The response is due within 1 s of GO (response_timeout).
  if (Clock::now() >= deadline_) return start_abort(Errno(ETIMEDOUT), AfterAbort::kFail);
  return poll_later();
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::read_header() {
  // Read Data Mailbox: a read returns the current dword, a write of any value
  // advances to the next one.
  uint32_t header[2] = {};
  for (auto& dw : header) {
    auto v = reg_read(PCI_DOE_READ);
    if (!v) return start_abort(v.error(), AfterAbort::kFail);
    dw = *v;
    auto ack = reg_write(PCI_DOE_READ, 0);
    if (!ack) return start_abort(ack.error(), AfterAbort::kFail);
  }
  // §6.30.1: Length counts the header; 0 encodes 2^18 (the mailbox maximum).
  uint32_t length = doe_object_length(header[1]);
  if (length < kDoeHeaderDwords || length > options_.max_dwords)
    return start_abort(Errno(EIO), AfterAbort::kFail);
  response_length_ = length;
  response_.reserve(length);  // bounded by max_dwords above
  response_.assign(header, header + 2);
  position_ = 2;
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_read_response() {
  if (position_ == 0) return read_header();
  if (position_ < response_length_) {
    // Data Object Ready stays set until the last dword is taken; if it is
    // gone, the object is shorter than its header claimed.
    auto status = reg_read(PCI_DOE_STATUS);
    if (!status) return start_abort(status.error(), AfterAbort::kFail);
    if (!(*status & PCI_DOE_STATUS_DATA_OBJECT_READY))
      return start_abort(Errno(EIO), AfterAbort::kFail);
  }
  while (position_ < response_length_) {
    if (budget_ <= 0) return Clock::now();
    auto v = reg_read(PCI_DOE_READ);
    if (!v) return start_abort(v.error(), AfterAbort::kFail);
    response_.push_back(*v);
    auto ack = reg_write(PCI_DOE_READ, 0);
    if (!ack) return start_abort(ack.error(), AfterAbort::kFail);
    ++position_;
  }
  return finish_response();
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::finish_response() {
  // An Error raised while the response was read voids it.
  auto status = reg_read(PCI_DOE_STATUS);
  if (!status) return start_abort(status.error(), AfterAbort::kFail);
  if (*status & PCI_DOE_STATUS_ERROR) return start_abort(Errno(EIO), AfterAbort::kFail);
  // The response carries the request's protocol (§6.30.1); anything else is
  // not an answer to this request. The object is consumed, so no Abort.
  if (doe_protocol_of(response_[0]) != doe_protocol_of(current_->request[0])) {
    finish(Errno(EIO));
    return std::nullopt;
  }
  finish(std::move(response_));
  response_ = {};
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::start_abort(Errno err, AfterAbort after) {
  {
    MutexLock lock(mu_);
    ++stats_.aborts;
  }
  abort_error_ = err;
  if (err != Errno(ECANCELED)) {  // a cancel is the caller's own doing
    PCIFS_LOG_LIMITED(warn, "doeabort:" + options_.label, "{}: DOE Abort ({})", options_.label,
                      err.name());
  }
  after_abort_ =
      (after == AfterAbort::kRetry && !retried_) ? AfterAbort::kRetry : AfterAbort::kFail;
  auto w = reg_write(PCI_DOE_CTRL, PCI_DOE_CTRL_ABORT);
  if (!w) {
    // The register path itself failed (e.g. the device left D0): fail this
    // exchange and Abort before the next one, when the device is back.
    needs_abort_ = true;
    finish(Errno(EIO));
    return std::nullopt;
  }
  enter(Phase::kAbortWait, options_.abort_timeout);
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_abort_wait() {
  auto status = reg_read(PCI_DOE_STATUS);
  if (!status) {
    needs_abort_ = true;
    finish(Errno(EIO));
    return std::nullopt;
  }
  // Abort is complete when both Busy and Error are clear.
  if (!(*status & (PCI_DOE_STATUS_BUSY | PCI_DOE_STATUS_ERROR))) {
    needs_abort_ = false;
    if (after_abort_ == AfterAbort::kRetry) {
      retried_ = true;
      enter(Phase::kAwaitNotBusy, options_.busy_timeout);
    } else {
      finish(abort_error_);
    }
    return std::nullopt;
  }
  if (Clock::now() < deadline_) return poll_later();
  // An Abort that does not take leaves no way to use the mailbox (as Linux's
  // PCI_DOE_FLAG_DEAD): fail everything from now on.
  {
    MutexLock lock(mu_);
    dead_ = true;
  }
  spdlog::error("{}: DOE mailbox dead: Abort did not clear Busy; EIO for every exchange",
                options_.label);
  finish(Errno(EIO));
  return std::nullopt;
}

std::optional<DoeMailbox::TimePoint> DoeMailbox::phase_dead() {
  MutexLock lock(mu_);
  while (!queue_.empty()) {  // one at a time: a throw leaves the rest queued
    Response r = closed_ ? *closed_ : Errno(EIO);
    outbox_.emplace_back(std::move(queue_.front().done), std::move(r));
    record(outbox_.back().result);
    queue_.pop_front();
  }
  return kIdleForever;
}

void DoeMailbox::finish(Response result) {
  MutexLock lock(mu_);
  if (running_cancel_) result = *running_cancel_;
  // Moved out of current_ only once the outbox has room (else recover()
  // answers it).
  outbox_.emplace_back(std::move(current_->done), std::move(result));
  record(outbox_.back().result);
  current_.reset();
  response_.clear();
  running_ticket_ = 0;
  running_cancel_.reset();
  phase_ = dead_ ? Phase::kDead : Phase::kIdle;
}

}  // namespace pcifs::core
