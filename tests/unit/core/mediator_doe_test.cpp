// The doe file [S8] and doe_features/ through the Mediator API, on the default
// simulated set wrapped in a FaultBackend: a config-write hook on 0000:01:00.0
// parks the DOE engine on the first register write of an exchange, so tests
// hold an exchange in flight (and queue others behind it) without sleeping.
// The sim's violation oracle is checked for every device after every test.
#include <linux/pci_regs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/doe_object.hpp"
#include "core/view_policy.hpp"
#include "fault/fault_backend.hpp"
#include "fixtures/mediator_fixture.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::test {
namespace {

using backend::DoeFeature;
using backend::fault::FaultBackend;
using backend::fault::OpClass;
using backend::sim::DoeFault;
using namespace std::chrono_literals;
using Bytes = std::vector<uint8_t>;
using Dwords = std::vector<uint32_t>;

constexpr DoeFeature kDiscovery{0x0001, 0x00};
constexpr DoeFeature kSpdm{0x0001, 0x01};
constexpr DoeFeature kCdat{0x1e98, 0x02};
constexpr DoeFeature kEcho{0x1b36, 0x01};        // the sim's vendor-defined echo (its vendor id)
constexpr size_t kBig = (size_t{1} << 20) + 64;  // read buffer larger than any object

Bytes to_bytes(const Dwords& dw) {
  Bytes out(dw.size() * 4);
  for (size_t i = 0; i < dw.size(); ++i) {
    for (unsigned k = 0; k < 4; ++k) out[4 * i + k] = static_cast<uint8_t>(dw[i] >> (8 * k));
  }
  return out;
}

Dwords to_dwords(const Bytes& b) {
  Dwords out(b.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    for (unsigned k = 0; k < 4; ++k) out[i] |= uint32_t{b[4 * i + k]} << (8 * k);
  }
  return out;
}

// A request object as dwords: the header for `p` (length counts it), then `payload`.
Dwords object(DoeFeature p, const Dwords& payload) {
  auto [dw0, dw1] = core::doe_header(p, static_cast<uint32_t>(payload.size() + 2));
  Dwords out{dw0, dw1};
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Dwords echo_object(uint32_t tag, size_t payload_dwords = 3) {
  Dwords payload;
  for (size_t i = 0; i < payload_dwords; ++i)
    payload.push_back(tag * 0x01000193u + static_cast<uint32_t>(i));
  return object(kEcho, payload);
}

// PCIe 6.0 §6.30.1.1: Discovery request DW2 bits 7:0 = index.
Dwords discovery_object(uint8_t index) { return object(kDiscovery, {index}); }

// CXL 2.0 §8.1.11.1 Read Entry: DW2 = code 0, table type 0, entry handle in 31:16.
Dwords cdat_object(uint16_t handle) { return object(kCdat, {uint32_t{handle} << 16}); }

// One asynchronous result. get() waits with a generous bound that only guards
// against a hang; no test asserts on time. The callback shares the state, so a
// test that fails early leaves nothing dangling for a late completion.
template <class T>
class Waiter {
 public:
  std::function<void(T)> callback() {
    return [s = s_](T v) {
      MutexLock lock(s->mu);
      s->value.emplace(std::move(v));
      s->thread = std::this_thread::get_id();
      ++s->calls;
      s->cv.notify_all();
    };
  }
  bool done() {
    MutexLock lock(s_->mu);
    return s_->value.has_value();
  }
  std::optional<T> get() {
    MutexLock lock(s_->mu);
    s_->cv.wait_for(s_->mu, 20s, [&]() REQUIRES(s_->mu) { return s_->value.has_value(); });
    return s_->value;
  }
  std::thread::id thread() {
    MutexLock lock(s_->mu);
    return s_->thread;
  }
  int calls() {
    MutexLock lock(s_->mu);
    return s_->calls;
  }

 private:
  struct State {
    Mutex mu;
    CondVar cv;
    std::optional<T> value GUARDED_BY(mu);
    std::thread::id thread GUARDED_BY(mu);
    int calls GUARDED_BY(mu) = 0;
  };
  std::shared_ptr<State> s_ = std::make_shared<State>();
};
using ReadWaiter = Waiter<Result<Bytes>>;

// A poll wake callback that counts its calls.
class Flag {
 public:
  std::function<void()> callback() {
    return [s = s_] {
      MutexLock lock(s->mu);
      ++s->count;
      s->cv.notify_all();
    };
  }
  bool wait() {
    MutexLock lock(s_->mu);
    s_->cv.wait_for(s_->mu, 20s, [&]() REQUIRES(s_->mu) { return s_->count > 0; });
    return s_->count > 0;
  }
  int count() {
    MutexLock lock(s_->mu);
    return s_->count;
  }

 private:
  struct State {
    Mutex mu;
    CondVar cv;
    int count GUARDED_BY(mu) = 0;
  };
  std::shared_ptr<State> s_ = std::make_shared<State>();
};

// Parks config writes of one device while armed (a FaultDevice hook). The DOE
// engine's first register access that writes is the request's first dword, so
// an armed gate holds that exchange "running" and everything after it queued.
class Gate {
 public:
  void arm() {
    MutexLock lock(mu_);
    armed_ = true;
  }
  void open() {
    MutexLock lock(mu_);
    armed_ = false;
    cv_.notify_all();
  }
  void hook(OpClass) {
    MutexLock lock(mu_);
    if (!armed_) return;
    ++entered_;
    cv_.notify_all();
    cv_.wait(mu_, [&]() REQUIRES(mu_) { return !armed_; });
  }
  // True once a write is parked in the hook.
  bool wait_entered() {
    MutexLock lock(mu_);
    cv_.wait_for(mu_, 20s, [&]() REQUIRES(mu_) { return entered_ > 0; });
    return entered_ > 0;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool armed_ GUARDED_BY(mu_) = false;
  int entered_ GUARDED_BY(mu_) = 0;
};

class MediatorDoeTest : public MediatorFixture {
 protected:
  // 0000:02:00.0 doe.1 is made healthy unless a test wants its no_response
  // fault: Discovery at attach then ends at once instead of after a timeout.
  void SetUp() override { start_doe(/*faulty_doe1=*/false); }
  void TearDown() override {
    gate_.open();
    for (const Bdf& b : med_->devices(view_)) {
      auto* d = sim_raw_->find(b).get();
      ASSERT_NE(d, nullptr);
      EXPECT_EQ(d->violations().value_or(0), 0u)
          << b.str() << ": " << (d->violation_log().empty() ? "" : d->violation_log().back());
    }
    med_.reset();  // before gate_ and fault_ go: the hook refers to gate_
  }

  // ep0_in_d3hot: 0000:01:00.0 is in D3hot when the Mediator attaches it.
  // ep2_fault: the fault of both of 0000:02:00.0's mailboxes at attach
  // (where not faulty_doe1).
  void start_doe(bool faulty_doe1, bool ep0_in_d3hot = false,
                 DoeFault ep2_fault = DoeFault::kNone) {
    sim_ = backend::sim::make_default_backend();
    sim_raw_ = sim_.get();
    if (!faulty_doe1) {
      sim_raw_->find(kEp2)->set_doe_fault(0, ep2_fault);
      sim_raw_->find(kEp2)->set_doe_fault(1, ep2_fault);
    }
    if (ep0_in_d3hot) {
      auto r = sim_raw_->find(kEp0)->set_power_state(PowerState::kD3hot);
      ASSERT_TRUE(r.ok()) << r.error().name();
    }
    fault_ = std::make_shared<FaultBackend>(sim_);
    fault_->device(kEp0)->set_hook(OpClass::kConfigWrite, [this](OpClass c) { gate_.hook(c); });
    MediatorOptions o;
    o.doe_timeout = 100ms;  // as MediatorFixture: the faulty mailbox times out fast
    med_ = std::make_unique<Mediator>(fault_, o);
    med_->set_revocation_sink(&sink_);
    view_ = med_->add_view(ViewPolicy{});
    med_->wait_for_discovery();
  }

  ViewId add_view(const std::string& json) {
    std::string err;
    auto v = core::parse_view(json, "test.json", &err);
    EXPECT_TRUE(v.ok()) << err;
    return med_->add_view(*v);
  }

  Result<HandleId> open_doe(const Bdf& b, uint16_t mb = 0, const Caller& c = kRoot, ViewId v = 0,
                            bool nonblock = false) {
    return med_->open(v, c, FileRef{b, FileKind::kDoe, mb, {}}, OpenFlags{true, true, nonblock});
  }
  HandleId must_open_doe(const Bdf& b, uint16_t mb = 0, const Caller& c = kRoot, ViewId v = 0,
                         bool nonblock = false) {
    auto h = open_doe(b, mb, c, v, nonblock);
    EXPECT_TRUE(h.ok()) << (h.ok() ? "" : h.error().name());
    return h.ok() ? *h : 0;
  }

  Result<size_t> send(HandleId h, const Dwords& request) {
    return med_->write(h, 0, to_bytes(request));
  }
  // The blocking read: doe_read, waited for.
  Result<Bytes> await_read(HandleId h, size_t max = kBig) {
    ReadWaiter w;
    med_->doe_read(h, max, w.callback());
    auto r = w.get();
    if (!r) return Errno(ETIME);  // hung: never completed
    return *r;
  }
  // write() one request, then read the whole response.
  Result<Dwords> exchange(HandleId h, const Dwords& request) {
    auto n = send(h, request);
    if (!n) return n.error();
    EXPECT_EQ(*n, request.size() * 4);
    auto r = await_read(h);
    if (!r) return r.error();
    return to_dwords(*r);
  }
  Result<Dwords> exchange_as(const Bdf& b, uint16_t mb, const Caller& c, const Dwords& request,
                             ViewId v = 0) {
    auto h = open_doe(b, mb, c, v);
    if (!h) return h.error();
    auto r = exchange(*h, request);
    med_->release(*h);
    return r;
  }

  // What the device's doe_features/ lists now ("vvvv:tt").
  std::vector<std::string> features(const Bdf& b) {
    std::vector<std::string> out;
    auto files = med_->files(view_, b);
    EXPECT_TRUE(files.ok());
    if (!files) return out;
    for (const auto& e : *files) {
      if (e.name.rfind("doe_features/", 0) == 0) out.push_back(e.name.substr(13));
    }
    return out;
  }
  // Waits until the device's Discovery has ended (the bound is a hang guard).
  void settle(const Bdf& b) {
    Flag f;
    med_->when_doe_discovered(b, f.callback());
    ASSERT_TRUE(f.wait()) << b.str() << ": Discovery never ended";
  }

  nlohmann::json mailbox_status(const Bdf& b, size_t mb) {
    auto s = nlohmann::json::parse(med_->status_json(view_));
    for (const auto& d : s["devices"]) {
      if (d["bdf"] == b.str()) return d["doe"].at(mb);
    }
    ADD_FAILURE() << b.str() << " not in status";
    return {};
  }

  // Every protocol Discovery reports on one mailbox, walked through the doe file.
  std::vector<DoeFeature> discover(const Bdf& b, uint16_t mb) {
    std::vector<DoeFeature> out;
    uint8_t index = 0;
    do {
      auto r = exchange_as(b, mb, kUser, discovery_object(index));
      EXPECT_TRUE(r.ok()) << b.str() << " index " << int{index};
      if (!r || r->size() < 3) break;
      uint32_t dw = (*r)[2];
      out.push_back({static_cast<uint16_t>(dw & PCI_DOE_DATA_OBJECT_DISC_RSP_3_VID),
                     static_cast<uint8_t>((dw & PCI_DOE_DATA_OBJECT_DISC_RSP_3_PROTOCOL) >> 16)});
      index = static_cast<uint8_t>((dw & PCI_DOE_DATA_OBJECT_DISC_RSP_3_NEXT_INDEX) >> 24);
    } while (index != 0 && out.size() < 64);
    return out;
  }

  Gate gate_;
  std::shared_ptr<FaultBackend> fault_;
};

// --- exchanges and policy

TEST_F(MediatorDoeTest, DiscoveryOfEveryIndex) {
  // PCIe 6.0 §6.30.1.1: response DW2 = vendor 15:0, type 23:16, next index 31:24
  // (0 after the last); index 0 is Discovery itself. Unprivileged callers may.
  const uint32_t expect[] = {0x0001 | 0x00u << 16 | 1u << 24, 0x1e98 | 0x02u << 16 | 2u << 24,
                             0x1b36 | 0x01u << 16 | 0u << 24};
  auto [dw0, dw1] = core::doe_header(kDiscovery, 3);
  for (uint8_t i = 0; i < 3; ++i) {
    auto r = exchange_as(kEp0, 0, kUser, discovery_object(i));
    ASSERT_TRUE(r.ok()) << "index " << int{i} << ": " << r.error().name();
    EXPECT_EQ(*r, (Dwords{dw0, dw1, expect[i]})) << "index " << int{i};
  }
  // Past the last index the device cannot answer: it sets Error, the caller gets EIO.
  EXPECT_EQ(exchange_as(kEp0, 0, kUser, discovery_object(3)).error(), Errno(EIO));
  EXPECT_TRUE(exchange_as(kEp0, 0, kUser, discovery_object(0)).ok()) << "aborted, usable again";
}

TEST_F(MediatorDoeTest, CdatReadByUnprivilegedCaller) {
  auto r = exchange_as(kEp0, 0, kUser, cdat_object(0));
  ASSERT_TRUE(r.ok()) << r.error().name();
  ASSERT_GE(r->size(), 4u);
  EXPECT_EQ(core::doe_protocol_of((*r)[0]), kCdat);
  EXPECT_EQ(core::doe_object_length((*r)[1]), r->size()) << "length field matches the object";
  EXPECT_GE((*r)[3], 16u) << "entry 0 is the CDAT header: its Length comes first";
  EXPECT_EQ(text(must_open(kEp0, FileKind::kOwner, 0, false, kUser)), "none\n")
      << "DOE exchanges do not claim [S11]";
}

TEST_F(MediatorDoeTest, DefaultViewLimitsUnprivilegedToDiscoveryAndCdat) {
  for (DoeFeature p : {kEcho, kSpdm}) {
    HandleId h = must_open_doe(kEp0, 0, kUser);
    EXPECT_EQ(send(h, object(p, {1, 2})).error(), Errno(EPERM)) << core::format_doe_protocol(p);
    EXPECT_EQ(med_->doe_poll(h, nullptr), 2u) << "nothing queued: still writable";
    EXPECT_TRUE(exchange(h, discovery_object(0)).ok()) << "and usable";
    med_->release(h);
  }
  auto echo = exchange_as(kEp0, 0, kRoot, echo_object(7));
  ASSERT_TRUE(echo.ok()) << echo.error().name();
  EXPECT_EQ(*echo, echo_object(7)) << "root may use every protocol";
  // Root passes the policy for a protocol the device does not serve: the
  // device's Error comes back, not EPERM.
  EXPECT_EQ(exchange_as(kEp0, 0, kRoot, object(kSpdm, {1})).error(), Errno(EIO));
  EXPECT_EQ(text(must_open(kEp0, FileKind::kOwner, 0, false, kUser)), "none\n");
}

TEST_F(MediatorDoeTest, ViewProtocolListAppliesToEveryone) {
  ViewId v = add_view(R"({"name": "c1", "uid": 1000, "doe_protocols": ["0001:00", "1b36:01"]})");
  const Caller stranger{300, 2000, 2000};
  for (const Caller& c : {kRoot, kUser, stranger}) {
    EXPECT_EQ(exchange_as(kEp0, 0, c, cdat_object(0), v).error(), Errno(EPERM)) << c.uid;
    EXPECT_TRUE(exchange_as(kEp0, 0, c, discovery_object(0), v).ok()) << c.uid;
    auto echo = exchange_as(kEp0, 0, c, echo_object(c.uid), v);
    ASSERT_TRUE(echo.ok()) << c.uid;
    EXPECT_EQ(*echo, echo_object(c.uid));
  }
  EXPECT_TRUE(exchange_as(kEp0, 0, kUser, cdat_object(0)).ok()) << "the default view still allows";
}

TEST_F(MediatorDoeTest, OnlyMailboxesThatExistOpen) {
  EXPECT_EQ(open_doe(kEp0, 1).error(), Errno(ENOENT));
  EXPECT_EQ(open_doe(kEp1, 0).error(), Errno(ENOENT)) << "no DOE capability";
  EXPECT_TRUE(open_doe(kEp2, 1).ok());
}

// --- bad input [S8, S13]

TEST_F(MediatorDoeTest, MalformedObjectsAreEinval) {
  HandleId h = must_open_doe(kEp0, 0, kUser);
  Bytes good = to_bytes(discovery_object(0));
  struct Case {
    const char* why;
    Bytes bytes;
  };
  Bytes ragged = good;
  ragged.push_back(0);
  Bytes too_short(good.begin(), good.begin() + 4);
  Bytes header_only(good.begin(), good.begin() + 8);  // says 3 dwords, has 2
  Bytes long_claim = good;
  long_claim.insert(long_claim.end(), {0, 0, 0, 0});  // says 3 dwords, has 4
  Bytes zero_len = good;
  zero_len[4] = zero_len[5] = zero_len[6] = zero_len[7] = 0;  // 0 encodes 2^18 dwords
  for (const auto& c :
       {Case{"size not a multiple of 4", ragged}, Case{"empty", {}},
        Case{"below 8 bytes", too_short}, Case{"shorter than its length", header_only},
        Case{"longer than its length", long_claim},
        Case{"length 0 (2^18) on 3 dwords", zero_len}}) {
    EXPECT_EQ(med_->write(h, 0, c.bytes).error(), Errno(EINVAL)) << c.why;
  }
  EXPECT_EQ(med_->doe_poll(h, nullptr), 2u) << "nothing was queued";
  EXPECT_TRUE(exchange(h, discovery_object(0)).ok());
  EXPECT_EQ(mailbox_status(kEp0, 0)["exchanges"], 3 + 1) << "attach Discovery (3) + one";
}

TEST_F(MediatorDoeTest, OverMailboxMaximumIsE2big) {
  // 2^18 + 1 dwords: one more than the length field can encode. Passed as a
  // buffer; the core must refuse it from the byte count.
  Bytes huge((size_t{core::kDoeMaxDwords} + 1) * 4, 0);
  auto [dw0, dw1] = core::doe_header(kEcho, 3);
  for (unsigned k = 0; k < 4; ++k) {
    huge[k] = static_cast<uint8_t>(dw0 >> (8 * k));
    huge[4 + k] = static_cast<uint8_t>(dw1 >> (8 * k));
  }
  HandleId root = must_open_doe(kEp0);
  EXPECT_EQ(med_->write(root, 0, huge).error(), Errno(E2BIG));
  HandleId user = must_open_doe(kEp0, 0, kUser);
  EXPECT_EQ(med_->write(user, 0, huge).error(), Errno(E2BIG));
  EXPECT_EQ(med_->doe_poll(root, nullptr), 2u);
  EXPECT_TRUE(exchange(root, echo_object(1)).ok());
}

// The kernel splits a write of a near-maximum object into several FUSE writes
// (1 MiB and 256 pinned pages per request). The core reassembles them.
TEST_F(MediatorDoeTest, MaximumObjectSplitByTheKernelIsOneExchange) {
  const Dwords req = echo_object(5, core::kDoeMaxDwords - 2);
  const Bytes bytes = to_bytes(req);
  const size_t first = (size_t{1} << 20) - 100;  // an unaligned buffer's first piece
  HandleId h = must_open_doe(kEp0);
  auto a = med_->write(h, 0, std::span(bytes).first(first));
  ASSERT_TRUE(a.ok()) << a.error().name();
  EXPECT_EQ(*a, first);
  EXPECT_EQ(med_->doe_poll(h, nullptr), 2u) << "nothing queued before the last piece";
  auto b = med_->write(h, first, std::span(bytes).subspan(first));
  ASSERT_TRUE(b.ok()) << b.error().name();
  auto r = await_read(h);
  ASSERT_TRUE(r.ok()) << r.error().name();
  EXPECT_EQ(to_dwords(*r), req);
}

TEST_F(MediatorDoeTest, SplitWriteOverTheMaximumIsE2big) {
  Bytes bytes = to_bytes(echo_object(5, core::kDoeMaxDwords - 2));  // claims 2^18 dwords
  bytes.resize(bytes.size() + 64, 0);                               // but carries more
  const size_t first = (size_t{1} << 20) - 100;
  HandleId h = must_open_doe(kEp0);
  ASSERT_TRUE(med_->write(h, 0, std::span(bytes).first(first)).ok());
  EXPECT_EQ(med_->write(h, first, std::span(bytes).subspan(first)).error(), Errno(E2BIG));
  EXPECT_TRUE(exchange(h, echo_object(1)).ok()) << "the handle is usable again";
}

// Through FUSE the first piece of a write over the maximum arrives alone; a
// piece that long and longer than its header says can only be that.
TEST_F(MediatorDoeTest, FirstPieceLongerThanItsHeaderIsE2big) {
  Bytes bytes = to_bytes(echo_object(5, 1));
  bytes.resize(size_t{1} << 20, 0);
  HandleId h = must_open_doe(kEp0);
  EXPECT_EQ(med_->write(h, 0, bytes).error(), Errno(E2BIG));
  bytes.resize(4096);  // control: short and malformed is EINVAL
  EXPECT_EQ(med_->write(h, 0, bytes).error(), Errno(EINVAL));
}

// Negative control: a short object that disagrees with its length field is
// not mistaken for a first piece.
TEST_F(MediatorDoeTest, ShortWriteBelowAPieceIsStillEinval) {
  const Bytes bytes = to_bytes(echo_object(5, 1000));
  HandleId h = must_open_doe(kEp0);
  EXPECT_EQ(med_->write(h, 0, std::span(bytes).first(400)).error(), Errno(EINVAL));
}

// --- one exchange per handle; reading the response

TEST_F(MediatorDoeTest, SecondWriteBeforeResponseIsReadIsEbusy) {
  HandleId h = must_open_doe(kEp0);
  ASSERT_TRUE(send(h, echo_object(1)).ok());
  EXPECT_EQ(send(h, echo_object(2)).error(), Errno(EBUSY)) << "in flight or ready, not read";
  auto first = await_read(h, 8);  // only part of it
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(send(h, echo_object(2)).error(), Errno(EBUSY)) << "not read to its end";
  auto rest = await_read(h);
  ASSERT_TRUE(rest.ok());
  Bytes all = *first;
  all.insert(all.end(), rest->begin(), rest->end());
  EXPECT_EQ(to_dwords(all), echo_object(1)) << "the first request's response";
  auto second = exchange(h, echo_object(2));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, echo_object(2));
}

TEST_F(MediatorDoeTest, LargeResponseIsReadInPartsAndConsumedOnce) {
  HandleId h = must_open_doe(kEp0);
  const Dwords req = echo_object(9, 62);  // 64 dwords, 256 bytes
  ASSERT_TRUE(send(h, req).ok());
  auto part = await_read(h, 100);  // blocking form
  ASSERT_TRUE(part.ok());
  ASSERT_EQ(part->size(), 100u);
  Bytes all = *part;
  std::vector<uint8_t> buf(100);
  auto n = med_->read(h, 0, buf);  // synchronous form
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 100u);
  all.insert(all.end(), buf.begin(), buf.end());
  n = med_->read(h, 0, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 56u) << "the last part";
  all.insert(all.end(), buf.begin(), buf.begin() + 56);
  EXPECT_EQ(to_dwords(all), req);
  EXPECT_EQ(*med_->read(h, 0, buf), 0u) << "consumed: nothing pending";
  auto again = await_read(h);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty()) << "a blocking read of an idle handle is end of file too";
  EXPECT_EQ(med_->doe_poll(h, nullptr), 2u);
}

// --- asynchrony: hold the exchange with the gate

TEST_F(MediatorDoeTest, NonblockingReadBeforeResponseIsEagain) {
  HandleId nb = must_open_doe(kEp0, 0, kRoot, 0, /*nonblock=*/true);
  gate_.arm();
  ASSERT_TRUE(send(nb, echo_object(3)).ok());
  ASSERT_TRUE(gate_.wait_entered());
  ReadWaiter w;
  med_->doe_read(nb, kBig, w.callback());
  ASSERT_TRUE(w.done()) << "O_NONBLOCK: answered at once";
  EXPECT_EQ(w.get()->error(), Errno(EAGAIN));
  std::vector<uint8_t> buf(64);
  EXPECT_EQ(med_->read(nb, 0, buf).error(), Errno(EAGAIN));
  Flag ready;
  EXPECT_EQ(med_->doe_poll(nb, ready.callback()), 0u);
  gate_.open();
  ASSERT_TRUE(ready.wait());
  // Control: the same handle, once the hold ends, delivers the response.
  auto n = med_->read(nb, 0, buf);
  ASSERT_TRUE(n.ok()) << n.error().name();
  buf.resize(*n);
  EXPECT_EQ(to_dwords(buf), echo_object(3));
}

TEST_F(MediatorDoeTest, BlockingReadCompletesLaterFromTheDoeThread) {
  HandleId h = must_open_doe(kEp0);
  gate_.arm();
  ASSERT_TRUE(send(h, echo_object(4)).ok());
  ASSERT_TRUE(gate_.wait_entered());
  ReadWaiter w;
  med_->doe_read(h, 8, w.callback());  // a small buffer: the first part
  EXPECT_FALSE(w.done()) << "no response yet: the read is parked, not answered";
  std::vector<uint8_t> buf(64);
  EXPECT_EQ(med_->read(h, 0, buf).error(), Errno(EAGAIN)) << "the synchronous form never blocks";
  gate_.open();
  auto r = w.get();
  ASSERT_TRUE(r.has_value()) << "never completed";
  ASSERT_TRUE(r->ok()) << r->error().name();
  EXPECT_EQ(r->value().size(), 8u) << "the parked read's buffer size is honoured";
  EXPECT_NE(w.thread(), std::this_thread::get_id()) << "completed by the DOE thread";
  EXPECT_EQ(w.calls(), 1);
  auto rest = await_read(h);
  ASSERT_TRUE(rest.ok());
  Bytes all = **r;
  all.insert(all.end(), rest->begin(), rest->end());
  EXPECT_EQ(to_dwords(all), echo_object(4));
}

TEST_F(MediatorDoeTest, PollWritableIdleReadableWhenReadyWakesOnCompletion) {
  HandleId h = must_open_doe(kEp0);
  EXPECT_EQ(med_->doe_poll(h, nullptr), 2u) << "idle: writable";
  gate_.arm();
  ASSERT_TRUE(send(h, echo_object(5)).ok());
  ASSERT_TRUE(gate_.wait_entered());
  Flag woken;
  EXPECT_EQ(med_->doe_poll(h, woken.callback()), 0u) << "in flight: neither";
  EXPECT_EQ(woken.count(), 0);
  gate_.open();
  ASSERT_TRUE(woken.wait());
  EXPECT_EQ(med_->doe_poll(h, nullptr), 1u) << "response ready: readable";
  ASSERT_TRUE(await_read(h).ok());
  EXPECT_EQ(med_->doe_poll(h, nullptr), 2u) << "consumed: writable again";
  EXPECT_EQ(woken.count(), 1) << "woken once";
}

TEST_F(MediatorDoeTest, InterruptedReadGetsEintrAndTheExchangeGoesOn) {
  HandleId h = must_open_doe(kEp0);
  gate_.arm();
  ASSERT_TRUE(send(h, echo_object(6)).ok());
  ASSERT_TRUE(gate_.wait_entered());
  ReadWaiter blocked;
  med_->doe_read(h, kBig, blocked.callback());
  ASSERT_FALSE(blocked.done());
  med_->doe_interrupt(h);
  ASSERT_TRUE(blocked.done());
  EXPECT_EQ(blocked.get()->error(), Errno(EINTR));
  EXPECT_EQ(send(h, echo_object(7)).error(), Errno(EBUSY)) << "the exchange is still in flight";
  Flag ready;
  EXPECT_EQ(med_->doe_poll(h, ready.callback()), 0u);
  gate_.open();
  ASSERT_TRUE(ready.wait());
  auto r = await_read(h);
  ASSERT_TRUE(r.ok()) << r.error().name();
  EXPECT_EQ(to_dwords(*r), echo_object(6));
  EXPECT_EQ(blocked.calls(), 1) << "the interrupted read was answered once";
}

TEST_F(MediatorDoeTest, HandlesQueueInArrivalOrderEachGetsItsOwnResponse) {
  gate_.arm();
  HandleId a = must_open_doe(kEp0, 0, kRoot);
  HandleId b = must_open_doe(kEp0, 0, kRoot2);
  HandleId c = must_open_doe(kEp0, 0, kUser);
  ASSERT_TRUE(send(a, echo_object(0xa)).ok());
  ASSERT_TRUE(gate_.wait_entered());  // a is on the device; b and c queue behind it
  ASSERT_TRUE(send(b, echo_object(0xb)).ok());
  ASSERT_TRUE(send(c, discovery_object(1)).ok());
  EXPECT_EQ(mailbox_status(kEp0, 0)["queued"], 2);
  struct Order {
    Mutex mu;
    std::vector<char> tags GUARDED_BY(mu);
  };
  auto order = std::make_shared<Order>();
  ReadWaiter wa, wb, wc;
  auto tagged = [&](char tag, ReadWaiter& w) {
    return [order, tag, inner = w.callback()](Result<Bytes> r) {
      {
        MutexLock lock(order->mu);
        order->tags.push_back(tag);
      }
      inner(std::move(r));
    };
  };
  med_->doe_read(c, kBig, tagged('c', wc));
  med_->doe_read(b, kBig, tagged('b', wb));
  med_->doe_read(a, kBig, tagged('a', wa));
  gate_.open();
  auto ra = wa.get(), rb = wb.get(), rc = wc.get();
  ASSERT_TRUE(ra && rb && rc);
  ASSERT_TRUE(ra->ok() && rb->ok() && rc->ok());
  EXPECT_EQ(to_dwords(**ra), echo_object(0xa));
  EXPECT_EQ(to_dwords(**rb), echo_object(0xb));
  auto [dw0, dw1] = core::doe_header(kDiscovery, 3);
  EXPECT_EQ(to_dwords(**rc), (Dwords{dw0, dw1, 0x1e98 | 0x02u << 16 | 2u << 24}));
  MutexLock lock(order->mu);
  EXPECT_EQ(order->tags, (std::vector<char>{'a', 'b', 'c'})) << "FIFO per mailbox";
}

TEST_F(MediatorDoeTest, ReleaseWhileQueuedOrRunningDisturbsNobodyElse) {
  gate_.arm();
  HandleId running = must_open_doe(kEp0, 0, kRoot);
  HandleId queued = must_open_doe(kEp0, 0, kRoot2);
  HandleId c = must_open_doe(kEp0, 0, kRoot);
  HandleId d = must_open_doe(kEp0, 0, kUser);
  ASSERT_TRUE(send(running, echo_object(1, 40)).ok());
  ASSERT_TRUE(gate_.wait_entered());
  ASSERT_TRUE(send(queued, echo_object(2)).ok());
  ASSERT_TRUE(send(c, echo_object(3)).ok());
  ASSERT_TRUE(send(d, cdat_object(0)).ok());
  ReadWaiter on_released, wc, wd;
  med_->doe_read(queued, kBig, on_released.callback());
  med_->doe_read(c, kBig, wc.callback());
  med_->doe_read(d, kBig, wd.callback());
  med_->release(queued);
  ASSERT_TRUE(on_released.done()) << "a blocked read on a released handle is ended";
  EXPECT_EQ(on_released.get()->error(), Errno(ECANCELED));
  med_->release(running);
  gate_.open();
  auto rc = wc.get(), rd = wd.get();
  ASSERT_TRUE(rc && rd);
  ASSERT_TRUE(rc->ok()) << rc->error().name();
  ASSERT_TRUE(rd->ok()) << rd->error().name();
  EXPECT_EQ(to_dwords(**rc), echo_object(3));
  EXPECT_EQ(core::doe_protocol_of(to_dwords(**rd)[0]), kCdat);
  // Control: both cancel paths really ran — the queued one left the queue, the
  // running one was aborted on the device — so the check above was exposed.
  auto st = mailbox_status(kEp0, 0);
  EXPECT_EQ(st["cancelled"], 2);
  EXPECT_GE(st["aborts"].get<int>(), 1);
  EXPECT_EQ(st["dead"], false);
  auto after = exchange_as(kEp0, 0, kRoot, echo_object(4));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, echo_object(4));
  EXPECT_EQ(on_released.calls(), 1);
}

// --- device faults

TEST_F(MediatorDoeTest, ErrorBitIsEioThenTheMailboxRecovers) {
  sim(kEp0).set_doe_fault(0, DoeFault::kError);
  EXPECT_EQ(exchange_as(kEp0, 0, kRoot, echo_object(1)).error(), Errno(EIO));
  EXPECT_EQ(exchange_as(kEp0, 0, kUser, discovery_object(0)).error(), Errno(EIO));
  sim(kEp0).set_doe_fault(0, DoeFault::kNone);
  EXPECT_TRUE(exchange_as(kEp0, 0, kRoot, echo_object(1)).ok()) << "Abort cleared Error";
  auto st = mailbox_status(kEp0, 0);
  EXPECT_EQ(st["errors"], 2);
  EXPECT_EQ(st["dead"], false);
}

TEST_F(MediatorDoeTest, StuckBusyMailboxIsDeadForEveryone) {
  EXPECT_EQ(mailbox_status(kEp2, 1)["dead"], false);
  sim(kEp2).set_doe_fault(1, DoeFault::kStuckBusy);
  // Busy forever: the response times out, the Abort does not take (bounded by
  // the mailbox's 1 s abort wait), and the mailbox is dead.
  EXPECT_EQ(exchange_as(kEp2, 1, kRoot, echo_object(1)).error(), Errno(EIO));
  EXPECT_EQ(mailbox_status(kEp2, 1)["dead"], true);
  EXPECT_EQ(exchange_as(kEp2, 1, kUser, discovery_object(0)).error(), Errno(EIO));
  EXPECT_EQ(exchange_as(kEp2, 1, kRoot2, echo_object(2)).error(), Errno(EIO));
  EXPECT_EQ(mailbox_status(kEp2, 0)["dead"], false);
  auto other = exchange_as(kEp2, 0, kRoot, echo_object(3));
  ASSERT_TRUE(other.ok()) << "the device's other mailbox is not affected";
  EXPECT_EQ(*other, echo_object(3));
}

TEST_F(MediatorDoeTest, DoeInD3hotIsEio) {
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(ps, "D3hot").ok());
  EXPECT_EQ(exchange_as(kEp0, 0, kRoot, echo_object(1)).error(), Errno(EIO));
  EXPECT_EQ(exchange_as(kEp0, 0, kUser, discovery_object(0)).error(), Errno(EIO));
  ASSERT_TRUE(write_text(ps, "D0").ok());
  auto r = exchange_as(kEp0, 0, kUser, discovery_object(0));
  EXPECT_TRUE(r.ok()) << "back in D0";
  EXPECT_EQ(violations(kEp0), 0u) << "no DOE register write reached a device in D3hot";
}

TEST_F(MediatorDoeTest, WakeViewLetsTheClaimHolderExchangeInD3hot) {
  ViewId wake = add_view(R"({"name": "w", "low_power_access": "wake"})");
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, true);  // pid 100 claims
  ASSERT_TRUE(write_text(ps, "D3hot").ok());
  EXPECT_EQ(exchange_as(kEp0, 0, kRoot2, echo_object(1), wake).error(), Errno(EIO))
      << "not the claim holder: no wake";
  EXPECT_EQ(text(ps), "D3hot\n");
  auto r = exchange_as(kEp0, 0, kRoot, echo_object(2), wake);
  ASSERT_TRUE(r.ok()) << r.error().name();
  EXPECT_EQ(*r, echo_object(2));
  EXPECT_EQ(text(ps), "D0\n") << "woken first";
}

class MediatorDoeFaultyTest : public MediatorDoeTest {
 protected:
  void SetUp() override { start_doe(/*faulty_doe1=*/true); }
};

TEST_F(MediatorDoeFaultyTest, NoResponseTimesOutAndTheNextExchangeRuns) {
  // Two handles queue on the faulty mailbox: each times out in turn.
  HandleId a = must_open_doe(kEp2, 1, kRoot);
  HandleId b = must_open_doe(kEp2, 1, kUser);
  ASSERT_TRUE(send(a, echo_object(1)).ok());
  ASSERT_TRUE(send(b, discovery_object(0)).ok());
  EXPECT_EQ(await_read(a).error(), Errno(ETIMEDOUT));
  EXPECT_EQ(await_read(b).error(), Errno(ETIMEDOUT));
  auto st = mailbox_status(kEp2, 1);
  EXPECT_EQ(st["dead"], false) << "the Abort took";
  EXPECT_GE(st["timeouts"].get<int>(), 3) << "attach Discovery + two";
  auto healthy = exchange_as(kEp2, 0, kRoot, echo_object(2));
  ASSERT_TRUE(healthy.ok()) << healthy.error().name();
  EXPECT_EQ(*healthy, echo_object(2));
}

TEST_F(MediatorDoeFaultyTest, RemovalEndsABlockedReadWithEnodev) {
  auto dev = sim_raw_->find(kEp2);  // kept: find() forgets removed devices
  HandleId h = must_open_doe(kEp2, 1, kUser);
  ASSERT_TRUE(send(h, discovery_object(0)).ok());  // never answered (no_response)
  ReadWaiter w;
  med_->doe_read(h, kBig, w.callback());
  auto rm = med_->open(view_, kRoot, FileRef{kEp2, FileKind::kRemove, 0, {}},
                       OpenFlags{false, true, false});
  ASSERT_TRUE(rm.ok());
  ASSERT_TRUE(write_text(*rm, "1").ok());
  auto r = w.get();
  ASSERT_TRUE(r.has_value()) << "a blocked read must not outlive the device";
  EXPECT_EQ(r->error(), Errno(ENODEV));
  EXPECT_EQ(med_->doe_poll(h, nullptr) & 1u, 0u);
  std::vector<uint8_t> buf(16);
  EXPECT_EQ(med_->read(h, 0, buf).error(), Errno(ENODEV));
  EXPECT_EQ(send(h, discovery_object(0)).error(), Errno(ENODEV));
  EXPECT_EQ(dev->violations().value_or(0), 0u)
      << (dev->violation_log().empty() ? "" : dev->violation_log().back());
}

// --- doe_features/

TEST_F(MediatorDoeTest, FeaturesListWhatDiscoveryReports) {
  for (const Bdf& b : {kEp0, kEp2}) {
    std::vector<DoeFeature> found;
    for (uint16_t mb = 0; mb < 2; ++mb) {
      if (!open_doe(b, mb).ok()) continue;
      for (auto f : discover(b, mb)) {
        if (std::find(found.begin(), found.end(), f) == found.end()) found.push_back(f);
      }
    }
    std::vector<std::string> want;
    want.reserve(found.size());
    for (auto f : found) want.push_back("doe_features/" + core::format_doe_protocol(f));
    std::sort(want.begin(), want.end());
    auto files = med_->files(view_, b);
    ASSERT_TRUE(files.ok());
    std::vector<std::string> listed;
    for (const auto& e : *files) {
      if (e.name.rfind("doe_features/", 0) != 0) continue;
      listed.push_back(e.name);
      EXPECT_EQ(e.ref.kind, FileKind::kDoeFeature);
      auto fh = med_->open(view_, kUser, e.ref, OpenFlags{});
      ASSERT_TRUE(fh.ok()) << e.name;
      EXPECT_EQ(text(*fh), e.name.substr(13) + "\n") << "vvvv:tt, lower case";
    }
    std::sort(listed.begin(), listed.end());
    EXPECT_EQ(listed, want) << b.str();
    EXPECT_GE(want.size(), 2u) << "not vacuous: Discovery found something";
  }
}

// A device that arrives in low power refuses Discovery (the gate: no DOE
// access outside D0). Its mailboxes run it again when the device is next put
// in D0 -- by a power_state write, a reset, a wake or a hand-over -- instead of
// keeping an empty doe_features/ for good.
class MediatorDoeArrivesInD3hotTest : public MediatorDoeTest {
 protected:
  void SetUp() override { start_doe(/*faulty_doe1=*/false, /*ep0_in_d3hot=*/true); }
};

TEST_F(MediatorDoeArrivesInD3hotTest, DiscoveryRunsAgainWhenTheDeviceIsPutInD0) {
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, true);
  EXPECT_EQ(text(ps), "D3hot\n");
  EXPECT_TRUE(features(kEp0).empty()) << "refused in D3hot";
  EXPECT_FALSE(features(kEp2).empty()) << "another device is not held back";
  ASSERT_TRUE(write_text(ps, "D3hot").ok());  // still low power: nothing to run
  EXPECT_TRUE(med_->when_doe_discovered(kEp0, [] {})) << "no Discovery started in D3hot";
  ASSERT_TRUE(write_text(ps, "D0").ok());
  settle(kEp0);
  auto found = discover(kEp0, 0);
  std::vector<std::string> want;
  want.reserve(found.size());
  for (auto f : found) want.push_back(core::format_doe_protocol(f));
  std::sort(want.begin(), want.end());
  EXPECT_GE(want.size(), 2u) << "not vacuous";
  EXPECT_EQ(features(kEp0), want) << "what Discovery reports, once in D0";
  // Once found, a later power cycle does not run it again.
  ASSERT_TRUE(write_text(ps, "D3hot").ok());
  ASSERT_TRUE(write_text(ps, "D0").ok());
  EXPECT_TRUE(med_->when_doe_discovered(kEp0, [] {})) << "nothing to run again";
  EXPECT_EQ(features(kEp0), want);
}

TEST_F(MediatorDoeArrivesInD3hotTest, AWakeForTheClaimHolderRunsItAgain) {
  ViewId wake = add_view(R"({"name": "w", "low_power_access": "wake"})");
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(ps, "D3hot").ok());  // pid 100 claims; it stays in D3hot
  ASSERT_TRUE(features(kEp0).empty());
  auto r = exchange_as(kEp0, 0, kRoot, echo_object(7), wake);  // wakes to D0 first
  ASSERT_TRUE(r.ok()) << r.error().name();
  EXPECT_EQ(text(ps), "D0\n");
  settle(kEp0);
  EXPECT_EQ(features(kEp0).size(), discover(kEp0, 0).size());
  EXPECT_FALSE(features(kEp0).empty());
}

TEST_F(MediatorDoeArrivesInD3hotTest, AResetRunsItAgain) {
  auto rst = med_->open(view_, kRoot, FileRef{kEp0, FileKind::kReset, 0, {}},
                        OpenFlags{false, true, false});
  ASSERT_TRUE(rst.ok()) << rst.error().name();
  ASSERT_TRUE(features(kEp0).empty());
  ASSERT_TRUE(write_text(*rst, "1").ok());
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, false);
  if (text(ps) != "D0\n") GTEST_SKIP() << "this reset leaves the function in " << text(ps);
  settle(kEp0);
  EXPECT_FALSE(features(kEp0).empty());
}

TEST_F(MediatorDoeArrivesInD3hotTest, AHandOverRunsItAgain) {
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(ps, "D3hot").ok());  // a claim: its end hands the group over
  ASSERT_TRUE(features(kEp0).empty());
  med_->release(ps);
  med_->drain_handovers();  // reset, baseline config, D0
  settle(kEp0);
  EXPECT_FALSE(features(kEp0).empty());
}

// Negative control: a Discovery that timed out (doe.1 of 02:00.0 never
// answers) is not run again at a power cycle -- each try would cost the DOE
// timeout -- and what the healthy mailbox found stays.
TEST_F(MediatorDoeFaultyTest, ATimedOutDiscoveryIsNotRunAgain) {
  auto before = med_->files(view_, kEp2);
  ASSERT_TRUE(before.ok());
  HandleId ps = must_open(kEp2, FileKind::kPowerState, 0, true);
  const auto timeouts = mailbox_status(kEp2, 1)["timeouts"].get<int>();
  ASSERT_TRUE(write_text(ps, "D3hot").ok());
  ASSERT_TRUE(write_text(ps, "D0").ok());
  EXPECT_TRUE(med_->when_doe_discovered(kEp2, [] {})) << "nothing to run again";
  EXPECT_EQ(mailbox_status(kEp2, 1)["timeouts"].get<int>(), timeouts);
  auto after = med_->files(view_, kEp2);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), before->size());
}

// A mailbox that fails Discovery in D0 with its Error bit (both of 02:00.0's
// here, their error fault at attach; the device recovers from it at once): a
// power cycle does not run Discovery again -- nothing resets the mailbox --
// but a reset of the function does, by the reset file or a hand-over, and
// doe_features/ then lists what it reports. A timeout stays final
// (ATimedOutDiscoveryIsNotRunAgain, and its reset case below).
class MediatorDoeErrorAtAttachTest : public MediatorDoeTest {
 protected:
  void SetUp() override {
    start_doe(/*faulty_doe1=*/false, /*ep0_in_d3hot=*/false, DoeFault::kError);
    sim_raw_->find(kEp2)->set_doe_fault(0, DoeFault::kNone);
    sim_raw_->find(kEp2)->set_doe_fault(1, DoeFault::kNone);
  }
};

TEST_F(MediatorDoeErrorAtAttachTest, APowerCycleDoesNotRunItAgainAResetDoes) {
  ASSERT_EQ(features(kEp2).size(), 0u);
  EXPECT_EQ(mailbox_status(kEp2, 0)["errors"].get<int>(), 1) << "Discovery at attach failed";
  EXPECT_EQ(mailbox_status(kEp2, 1)["errors"].get<int>(), 1) << "Discovery at attach failed";
  HandleId ps = must_open(kEp2, FileKind::kPowerState, 0, true);  // claims; kept
  ASSERT_TRUE(write_text(ps, "D3hot").ok());
  ASSERT_TRUE(write_text(ps, "D0").ok());
  EXPECT_TRUE(med_->when_doe_discovered(kEp2, [] {})) << "not at a power cycle";
  EXPECT_EQ(features(kEp2).size(), 0u);
  auto rst = med_->open(view_, kRoot, FileRef{kEp2, FileKind::kReset, 0, {}},
                        OpenFlags{false, true, false});
  ASSERT_TRUE(rst.ok()) << rst.error().name();
  ASSERT_TRUE(write_text(*rst, "1").ok());
  settle(kEp2);
  std::vector<DoeFeature> found = discover(kEp2, 0);
  for (auto f : discover(kEp2, 1)) {
    if (std::find(found.begin(), found.end(), f) == found.end()) found.push_back(f);
  }
  ASSERT_GE(found.size(), 2u) << "not vacuous";
  EXPECT_EQ(features(kEp2).size(), found.size())
      << "what Discovery reports, once the function was reset";
  EXPECT_EQ(mailbox_status(kEp2, 1)["errors"].get<int>(), 1) << "it ran once more, and passed";
  // Found now: another reset does not run it again.
  ASSERT_TRUE(write_text(*rst, "1").ok());
  EXPECT_TRUE(med_->when_doe_discovered(kEp2, [] {})) << "nothing to run again";
}

TEST_F(MediatorDoeErrorAtAttachTest, AHandOverWithAResetRunsItAgain) {
  ASSERT_EQ(features(kEp2).size(), 0u);
  HandleId ps = must_open(kEp2, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(ps, "D0").ok());  // a claim: its end hands the group over
  med_->release(ps);
  med_->drain_handovers();  // reset, baseline config, D0
  settle(kEp2);
  EXPECT_GE(features(kEp2).size(), 2u);
}

// Negative control for the reset case: a mailbox that timed out is not
// tried again after a reset either (each try would cost the DOE timeout).
TEST_F(MediatorDoeFaultyTest, ATimedOutDiscoveryIsNotRunAgainAfterAReset) {
  const auto timeouts = mailbox_status(kEp2, 1)["timeouts"].get<int>();
  auto rst = med_->open(view_, kRoot, FileRef{kEp2, FileKind::kReset, 0, {}},
                        OpenFlags{false, true, false});
  ASSERT_TRUE(rst.ok()) << rst.error().name();
  ASSERT_TRUE(write_text(*rst, "1").ok());
  EXPECT_TRUE(med_->when_doe_discovered(kEp2, [] {})) << "nothing to run again";
  EXPECT_EQ(mailbox_status(kEp2, 1)["timeouts"].get<int>(), timeouts);
}

// Discovery runs in the background [S8]: when_doe_discovered holds what needs
// a device's doe_features/ until that device's Discovery ends -- here never on
// its own, doe.1 of 02:00.0 would take a minute -- and no longer than that:
// the executor's shutdown ends it, and the callback runs then.
TEST(MediatorDiscovery, WhenDoeDiscoveredWaitsForThatDevicesDiscoveryOnly) {
  MediatorOptions o;
  o.doe_timeout = 60s;
  auto med = std::make_unique<Mediator>(backend::sim::make_default_backend(), o);
  std::atomic<int> slow{0}, bridge{0}, absent{0};
  EXPECT_FALSE(med->when_doe_discovered(kEp2, [&] { slow++; }));
  EXPECT_TRUE(med->when_doe_discovered(kHostBridge, [&] { bridge++; }));  // no mailbox
  EXPECT_TRUE(med->when_doe_discovered(*Bdf::parse("0000:09:00.0"), [&] { absent++; }));
  EXPECT_EQ(bridge.load(), 1);
  EXPECT_EQ(absent.load(), 1);
  EXPECT_EQ(slow.load(), 0);
  // What a listing would show meanwhile: the features found so far, at once.
  auto files = med->files(med->add_view(ViewPolicy{}), kEp2);
  ASSERT_TRUE(files.ok());
  med.reset();  // the executor stops: Discovery ends (ESHUTDOWN), the callback runs
  EXPECT_EQ(slow.load(), 1);
}

// A Command write that turns memory decode off closes the BARs only (DOE is
// config space): it does not wait for a Discovery that is running -- doe.1 of
// 02:00.0 here, which would take a minute -- and does not fail it. The write
// returns while that Discovery still runs.
TEST(MediatorDiscovery, DecodeOffDoesNotWaitForDiscovery) {
  MediatorOptions o;
  o.doe_timeout = 60s;
  auto med = std::make_unique<Mediator>(backend::sim::make_default_backend(), o);
  const ViewId v = med->add_view(ViewPolicy{});
  auto h =
      med->open(v, kRoot, FileRef{kEp2, FileKind::kConfig, 0, {}}, OpenFlags{true, true, false});
  ASSERT_TRUE(h.ok()) << h.error().name();
  std::vector<uint8_t> cmd(2);
  ASSERT_TRUE(med->read(*h, PCI_COMMAND, cmd).ok());
  cmd[0] |= PCI_COMMAND_MEMORY;  // on first (no quiesce), then off
  ASSERT_TRUE(med->write(*h, PCI_COMMAND, cmd).ok());
  cmd[0] = static_cast<uint8_t>(cmd[0] & ~PCI_COMMAND_MEMORY);
  ASSERT_TRUE(med->write(*h, PCI_COMMAND, cmd).ok());
  EXPECT_FALSE(med->when_doe_discovered(kEp2, [] {})) << "the write waited for Discovery";
  auto st = nlohmann::json::parse(med->status_json(v));
  for (const auto& d : st["devices"]) {
    if (d["bdf"] == kEp2.str()) {
      EXPECT_EQ(d["counters"]["quiesces"], 1) << "not vacuous";
    }
  }
  // Not released: the claim's end would hand the group over, which waits
  // for that Discovery. The executor's shutdown ends it.
  med.reset();
}

}  // namespace
}  // namespace pcifs::test
