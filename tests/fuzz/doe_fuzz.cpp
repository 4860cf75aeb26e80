// Fuzzes DOE request objects [S8] through the Mediator: each input is a few
// exchanges on the doe files of the default set (one long-lived Mediator, as
// in the daemon), each a write of bytes from the input -- the length field
// fixed up to match on request, or left as the input says -- then reads of
// the response in chunks of a size from the input, blocking or not, with an
// interruption now and then, or the handle closed with the exchange in
// flight. Every read must end (a response, an errno or end of file, within a
// generous bound), a response is never larger than the mailbox maximum, and
// the simulator's violation oracle must stay at zero.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "fuzz/sim_mediator.hpp"
#include "pcifs/sync.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::fuzz;
using Bytes = std::vector<uint8_t>;

constexpr size_t kMaxExchanges = 8;
constexpr size_t kMaxObjectBytes = size_t{1} << 20;  // 2^18 dwords [S8]
constexpr auto kHang = std::chrono::seconds(30);

struct Mailbox {
  Bdf bdf;
  uint16_t index;
};
// 0000:02:00.0 mailbox 1 never answers (a timeout each time): rarely picked.
const std::array<Mailbox, 8> kMailboxes = {
    Mailbox{kDevices[3], 0}, Mailbox{kDevices[3], 0}, Mailbox{kDevices[3], 0},
    Mailbox{kDevices[5], 0}, Mailbox{kDevices[5], 0}, Mailbox{kDevices[5], 0},
    Mailbox{kDevices[5], 1}, Mailbox{kDevices[3], 1}};  // the last: no such mailbox

// One doe_read, waited for.
Result<Bytes> read_once(Mediator& med, HandleId h, size_t max, bool interrupt) {
  struct State {
    Mutex mu;
    CondVar cv;
    std::optional<Result<Bytes>> value GUARDED_BY(mu);
  };
  auto s = std::make_shared<State>();
  med.doe_read(h, max, [s](Result<Bytes> r) {
    MutexLock lock(s->mu);
    s->value.emplace(std::move(r));
    s->cv.notify_all();
  });
  if (interrupt) med.doe_interrupt(h);
  MutexLock lock(s->mu);
  if (!s->cv.wait_for(s->mu, kHang, [&]() REQUIRES(s->mu) { return s->value.has_value(); })) {
    fail("doe_read did not answer");
  }
  return std::move(*s->value);
}

// Waits until a non-blocking read would not say EAGAIN, as a client with
// O_NONBLOCK does with poll().
void wait_pollable(Mediator& med, HandleId h) {
  struct State {
    Mutex mu;
    CondVar cv;
    bool woken GUARDED_BY(mu) = false;
  };
  auto s = std::make_shared<State>();
  if (med.doe_poll(h, [s] {
        MutexLock lock(s->mu);
        s->woken = true;
        s->cv.notify_all();
      }) != 0) {
    return;
  }
  MutexLock lock(s->mu);
  if (!s->cv.wait_for(s->mu, kHang, [&]() REQUIRES(s->mu) { return s->woken; })) {
    fail("doe_poll never woke");
  }
}

// Reads until end of file (the response consumed) or an error.
void drain(Mediator& med, HandleId h, size_t max, bool interrupt) {
  size_t total = 0;
  for (int i = 0; i < 1 << 16; ++i) {
    auto r = read_once(med, h, max, interrupt && i == 0);
    if (!r) {
      if (r.error().value() == EINTR) continue;
      if (r.error().value() == EAGAIN) {
        wait_pollable(med, h);
        continue;
      }
      return;
    }
    if (r->size() > max) fail("doe_read returned more than asked for");
    total += r->size();
    if (total > kMaxObjectBytes) fail("a DOE response over the mailbox maximum");
    if (r->empty()) return;
  }
  fail("a DOE response that never ends");
}

SimMediator& mediator() {
  static SimMediator* m = new SimMediator(/*faulty_doe=*/true, std::chrono::milliseconds(20));
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  SimMediator& m = mediator();
  std::vector<HandleId> opened;
  for (size_t n = 0; n < kMaxExchanges && !in.empty(); ++n) {
    const Mailbox mb = kMailboxes[in.byte() % kMailboxes.size()];
    const uint8_t flags = in.byte();
    const Caller& c = (flags & 1) != 0 ? kUser : kRoot;
    const bool nonblock = (flags & 4) != 0;
    auto h = m.med().open(m.view(), c, FileRef{mb.bdf, FileKind::kDoe, mb.index, {}},
                          OpenFlags{true, true, nonblock});
    if (!h) continue;
    opened.push_back(*h);
    Bytes object(in.u16() % 4096);
    auto src = in.bytes(object.size());
    std::copy(src.begin(), src.end(), object.begin());
    if ((flags & 2) != 0 && object.size() >= 8) {  // a length field that agrees
      const uint32_t dwords = static_cast<uint32_t>(object.size() / 4);
      for (unsigned k = 0; k < 4; ++k) object[4 + k] = static_cast<uint8_t>(dwords >> (8 * k));
      object.resize(object.size() / 4 * 4);
    }
    auto w = m.med().write(*h, 0, object);
    if ((flags & 8) != 0) (void)m.med().write(*h, 0, object);  // a second one: EBUSY
    if (w && *w != object.size()) fail("a DOE write that took part of the object");
    if ((flags & 0x40) != 0) continue;  // closed with the exchange in flight (below)
    const size_t max = (flags & 0x20) != 0 ? 1 + in.byte() : kMaxObjectBytes + 64;
    drain(m.med(), *h, max, (flags & 0x10) != 0);
  }
  for (HandleId h : opened) m.med().release(h);
  m.check_oracle();
  return 0;
}
