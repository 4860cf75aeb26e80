// DoeMailbox: pcifs as the only initiator on one DOE mailbox (PCIe 6.0 §6.30,
// SPEC S8). Users queue exchanges; the mailbox runs them one at a time, in
// arrival order, as an explicit state machine stepped by a shared DoeExecutor.
//
// DoeRegs is the register path (relative to the DOE capability header); the
// Mediator implements it through the device's power gate, and DeviceDoeRegs
// is the plain adapter over a backend::Device.
//
// Ownership: create() returns a shared_ptr; the executor keeps the mailbox
// alive while it has work. The mailbox owns its DoeRegs. The executor must
// outlive the mailbox.
//
// Completions: every submit() gets exactly one call of its Completion, on an
// executor thread, with no mailbox lock held, in submission order per mailbox.
// The one exception: once the executor has shut down, pending and later
// exchanges complete with ESHUTDOWN on the thread that observes it (the
// executor's shutdown() caller or the submitter).
//
// Thread safety: every public method may be called from any thread, including
// from inside a Completion.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/doe_executor.hpp"
#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

// One DOE capability's registers. Called by one mailbox step at a time.
class DoeRegs {
 public:
  virtual ~DoeRegs() = default;
  virtual Result<uint32_t> read(uint32_t reg) = 0;
  virtual Result<void> write(uint32_t reg, uint32_t value) = 0;
  // An exchange starts: a register path that can tell the device lost its
  // state (reset, power cycle) from here on fails the exchange's accesses with
  // EIO instead of letting it poll an idle mailbox until the timeout.
  virtual void begin_exchange() {}
};

// Dword config accesses at `cap_offset + reg` of a backend device.
class DeviceDoeRegs final : public DoeRegs {
 public:
  DeviceDoeRegs(std::shared_ptr<backend::Device> device, uint16_t cap_offset);
  Result<uint32_t> read(uint32_t reg) override;
  Result<void> write(uint32_t reg, uint32_t value) override;

 private:
  std::shared_ptr<backend::Device> device_;
  uint16_t cap_offset_;
};

// Offsets of every DOE extended capability of `device` (reads its config space).
Result<std::vector<uint16_t>> find_doe_mailboxes(backend::Device& device);

struct DoeMailboxOptions {
  // PCIe 6.0 §6.30.2: a response is due within 1 s of GO.
  std::chrono::milliseconds response_timeout{1000};
  // Bounds on waiting for Busy to clear before a request, and after an Abort.
  std::chrono::milliseconds busy_timeout{1000};
  std::chrono::milliseconds abort_timeout{1000};
  uint32_t max_dwords = 1u << 18;
  std::string label = "doe";  // for the log: "0000:01:00.0 doe.1"
};

struct DoeStats {
  uint64_t exchanges = 0;  // submitted
  uint64_t completed = 0;  // ended with a response
  uint64_t timeouts = 0;
  uint64_t errors = 0;  // EIO of any cause (error bit, register failure, dead)
  uint64_t aborts = 0;  // Abort issued on the device
  uint64_t cancelled = 0;
  bool dead = false;
  size_t queue_depth = 0;  // waiting, not counting the one running
};

class DoeMailbox final : public DoeExecutor::Task, public std::enable_shared_from_this<DoeMailbox> {
 public:
  using Response = Result<std::vector<uint32_t>>;
  using Completion = std::function<void(Response)>;
  using Features = std::vector<backend::DoeFeature>;
  using DiscoveryDone = std::function<void(Result<Features>)>;

  static std::shared_ptr<DoeMailbox> create(DoeExecutor& executor, std::unique_ptr<DoeRegs> regs,
                                            DoeMailboxOptions options = {});
  ~DoeMailbox() override;

  // Queues one request object (header included, as check_doe_dwords accepts;
  // otherwise it completes with that errno). Returns a ticket for cancel().
  uint64_t submit(std::vector<uint32_t> request, Completion done) EXCLUDES(mu_);
  // Queued: removed, completes with ECANCELED. Running: the exchange is
  // aborted at its next step so the mailbox stays consistent, and completes
  // with ECANCELED. Unknown or finished tickets: nothing.
  void cancel(uint64_t ticket) EXCLUDES(mu_);
  // Runs Discovery (PCIe 6.0 §6.30.1.1) index 0, 1, ... through the queue.
  void discover(const DiscoveryDone& done) EXCLUDES(mu_);
  // The device is gone: everything pending and later completes with `why`.
  void close(Errno why) EXCLUDES(mu_);

  bool dead() const EXCLUDES(mu_);
  DoeStats stats() const EXCLUDES(mu_);

  // DoeExecutor::Task
  std::optional<DoeExecutor::Clock::time_point> step() override;
  void shutdown() override;

  struct Private;  // construction token for create()
  DoeMailbox(Private, DoeExecutor& executor, std::unique_ptr<DoeRegs> regs,
             DoeMailboxOptions options);

 private:
  using Clock = DoeExecutor::Clock;
  using TimePoint = Clock::time_point;

  // §6.30.2 as states; see doe_mailbox_fsm.cpp for the rule behind each.
  enum class Phase {
    kIdle,           // nothing on the device
    kAwaitNotBusy,   // before a request: Busy must be clear
    kWriteRequest,   // writing dwords to the Write Data Mailbox
    kAwaitResponse,  // GO set; polling Data Object Ready / Error
    kReadResponse,   // draining the Read Data Mailbox
    kAbortWait,      // Abort written; polling Busy / Error clear
    kDead,           // Abort did not take: EIO for good
  };
  struct Pending {
    Pending(uint64_t t, std::vector<uint32_t> r, Completion d)
        : ticket(t), request(std::move(r)), done(std::move(d)) {}
    uint64_t ticket = 0;
    std::vector<uint32_t> request;
    Completion done;
  };
  struct Delivery {
    // A constructor, so that emplace_back moves `done` in only once the
    // queue's memory is there: a failed allocation leaves it with the caller.
    Delivery(Completion d, Response r) : done(std::move(d)), result(std::move(r)) {}
    Completion done;
    Response result;
  };
  // What the FSM does once an Abort succeeds.
  enum class AfterAbort { kFail, kRetry };

  // --- FSM (doe_mailbox_fsm.cpp); touched only inside step() / shutdown().
  // step() without its guard; step() turns a throw into recover().
  std::optional<TimePoint> step_unguarded();
  std::optional<TimePoint> recover(const char* what) noexcept;
  std::optional<TimePoint> run_phase();
  std::optional<TimePoint> phase_idle();
  std::optional<TimePoint> phase_await_not_busy();
  std::optional<TimePoint> phase_write_request();
  std::optional<TimePoint> phase_await_response();
  std::optional<TimePoint> phase_read_response();
  std::optional<TimePoint> phase_abort_wait();
  std::optional<TimePoint> phase_dead();
  std::optional<TimePoint> start_abort(Errno err, AfterAbort after);
  std::optional<TimePoint> poll_later();
  std::optional<TimePoint> read_header();
  std::optional<TimePoint> finish_response();
  void enter(Phase phase, std::chrono::milliseconds bound);
  void finish(Response result) EXCLUDES(mu_);
  bool cancel_requested() EXCLUDES(mu_);
  Result<uint32_t> reg_read(uint32_t reg);
  Result<void> reg_write(uint32_t reg, uint32_t value);

  // --- queue side (doe_mailbox.cpp)
  void deliver_all() EXCLUDES(mu_);
  void record(const Response& result) REQUIRES(mu_);
  void discover_from(uint8_t index, const std::shared_ptr<Features>& found,
                     const DiscoveryDone& done);

  DoeExecutor& executor_;
  const std::unique_ptr<DoeRegs> regs_;
  const DoeMailboxOptions options_;

  // FSM state: only the executor's step() (never two at once) and the first
  // shutdown() after the workers are joined touch these.
  Phase phase_ = Phase::kIdle;
  std::optional<Pending> current_;
  TimePoint deadline_{};
  std::chrono::microseconds poll_interval_{};
  size_t position_ = 0;  // dwords written or read so far
  std::vector<uint32_t> response_;
  uint32_t response_length_ = 0;  // dwords the response header claims
  bool needs_abort_ = false;      // a failed register access left the mailbox unknown
  bool retried_ = false;          // one Abort-and-retry per exchange
  Errno abort_error_{EIO};
  AfterAbort after_abort_ = AfterAbort::kFail;
  int budget_ = 0;  // register accesses left in this step

  // Lock order: leaf; the executor is woken and completions run after it is
  // let go (fs/core/mediator_state.hpp).
  mutable Mutex mu_{"DoeMailbox::mu_"};
  std::deque<Pending> queue_ GUARDED_BY(mu_);
  std::deque<Delivery> outbox_ GUARDED_BY(mu_);
  uint64_t next_ticket_ GUARDED_BY(mu_) = 1;
  uint64_t running_ticket_ GUARDED_BY(mu_) = 0;
  std::optional<Errno> running_cancel_ GUARDED_BY(mu_);  // ECANCELED, or close()'s errno
  std::optional<Errno> closed_ GUARDED_BY(mu_);
  bool dead_ GUARDED_BY(mu_) = false;
  bool shut_down_ GUARDED_BY(mu_) = false;
  DoeStats stats_ GUARDED_BY(mu_);
};

}  // namespace pcifs::core
