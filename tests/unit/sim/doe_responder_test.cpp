// Tests of the simulated DOE responder, driven only through its registers as an
// initiator would drive real hardware.
#include "sim/doe_responder.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fixtures/doe_initiator.hpp"
#include "sim/cdat.hpp"

namespace pcifs::backend::sim {
namespace {

using test::doe_exchange;
using test::doe_header0;
using Dwords = std::vector<uint32_t>;

constexpr uint16_t kVid = 0x1b36;

class DoeTest : public ::testing::Test {
 public:  // the violation table's lambdas drive the mailbox through these
  void make(DoeResponderConfig cfg) {
    doe_ = std::make_unique<DoeResponder>(cfg, [this](std::string r) { log_.push_back(r); });
    doe_->set_clock([this] { return now_; });
  }
  void SetUp() override { make({.vendor_id = kVid, .cdat = true}); }

  uint32_t rd(uint32_t reg) { return doe_->read(reg); }
  void wr(uint32_t reg, uint32_t v) { doe_->write(reg, v); }
  uint32_t status() { return rd(PCI_DOE_STATUS); }
  Result<Dwords> exchange(const Dwords& req, unsigned max_polls = 100) {
    test::DoeExchangeOptions opt;
    opt.max_polls = max_polls;
    opt.between_polls = [this] { now_ += std::chrono::milliseconds(10); };
    return doe_exchange([this](uint32_t r) { return rd(r); },
                        [this](uint32_t r, uint32_t v) { wr(r, v); }, req, opt);
  }
  void write_object(const Dwords& obj) {
    for (uint32_t dw : obj) wr(PCI_DOE_WRITE, dw);
  }
  void go() { wr(PCI_DOE_CTRL, PCI_DOE_CTRL_GO); }
  void abort_mailbox() { wr(PCI_DOE_CTRL, PCI_DOE_CTRL_ABORT); }

  static Dwords discovery(uint8_t index) {
    return {doe_header0(kDoeVendorPciSig, kDoeTypeDiscovery), 3, index};
  }
  static Dwords cdat_read(uint32_t handle, uint32_t code = 0, uint32_t table = 0) {
    return {doe_header0(kDoeVendorCxl, kDoeTypeCdat), 3, code | (table << 8) | (handle << 16)};
  }
  static Dwords echo(size_t dwords) {
    Dwords obj(dwords);
    obj[0] = doe_header0(kVid, kDoeTypeEcho);
    obj[1] = static_cast<uint32_t>(dwords) & PCI_DOE_DATA_OBJECT_HEADER_2_LENGTH;
    for (size_t i = 2; i < dwords; ++i) obj[i] = static_cast<uint32_t>(0xa5000000u + i);
    return obj;
  }

  std::unique_ptr<DoeResponder> doe_;
  std::vector<std::string> log_;
  std::chrono::steady_clock::time_point now_{};
};

// --- Discovery -------------------------------------------------------------

struct DiscoveryCase {
  bool cdat, echo;
  std::vector<uint32_t> expected;  // vendor | type << 16, in index order
};

class DoeDiscoveryTest : public DoeTest, public ::testing::WithParamInterface<DiscoveryCase> {};

TEST_P(DoeDiscoveryTest, WalkListsExactlyTheConfiguredProtocols) {
  make({.vendor_id = kVid, .cdat = GetParam().cdat, .echo = GetParam().echo});
  std::vector<uint32_t> seen;
  uint32_t index = 0;
  do {
    auto rsp = exchange(discovery(static_cast<uint8_t>(index)));
    ASSERT_TRUE(rsp.ok()) << rsp.error().name();
    ASSERT_EQ(rsp->size(), 3u);
    EXPECT_EQ((*rsp)[0], doe_header0(kDoeVendorPciSig, kDoeTypeDiscovery));
    EXPECT_EQ((*rsp)[1], 3u);
    uint32_t dw2 = (*rsp)[2];
    seen.push_back(dw2 &
                   (PCI_DOE_DATA_OBJECT_DISC_RSP_3_VID | PCI_DOE_DATA_OBJECT_DISC_RSP_3_PROTOCOL));
    index = (dw2 & PCI_DOE_DATA_OBJECT_DISC_RSP_3_NEXT_INDEX) >> 24;
    ASSERT_LT(seen.size(), 10u) << "discovery does not terminate";
  } while (index != 0);
  EXPECT_EQ(seen, GetParam().expected);
  EXPECT_TRUE(log_.empty());
}

TEST_P(DoeDiscoveryTest, IndexPastTheLastIsAnError) {
  make({.vendor_id = kVid, .cdat = GetParam().cdat, .echo = GetParam().echo});
  auto n = static_cast<uint8_t>(GetParam().expected.size());
  EXPECT_TRUE(exchange(discovery(static_cast<uint8_t>(n - 1))).ok());
  auto rsp = exchange(discovery(n));
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(EIO));
  EXPECT_EQ(status(), 0u) << "the initiator's abort clears Error";
  EXPECT_TRUE(log_.empty()) << "asking is not misuse";
}

INSTANTIATE_TEST_SUITE_P(Configs, DoeDiscoveryTest,
                         ::testing::Values(DiscoveryCase{false, false, {0x00000001}},
                                           DiscoveryCase{true, false, {0x00000001, 0x00021e98}},
                                           DiscoveryCase{false, true, {0x00000001, 0x00011b36}},
                                           DiscoveryCase{
                                               true, true, {0x00000001, 0x00021e98, 0x00011b36}}));

TEST_F(DoeTest, DiscoveryRequestOfWrongLengthIsAnError) {
  Dwords req{doe_header0(kDoeVendorPciSig, kDoeTypeDiscovery), 4, 0, 0};
  auto rsp = exchange(req);
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(EIO));
}

// --- CDAT -------------------------------------------------------------------

TEST_F(DoeTest, CdatWalkReassemblesAChecksummedTable) {
  std::vector<uint8_t> table;
  std::vector<uint8_t> types;
  uint32_t handle = 0;
  for (int guard = 0; handle != 0xffff; ++guard) {
    ASSERT_LT(guard, 16) << "CDAT walk does not terminate";
    auto rsp = exchange(cdat_read(handle));
    ASSERT_TRUE(rsp.ok()) << rsp.error().name();
    ASSERT_GE(rsp->size(), 4u);
    EXPECT_EQ((*rsp)[0], doe_header0(kDoeVendorCxl, kDoeTypeCdat));
    EXPECT_EQ((*rsp)[2] & 0xffff, 0u) << "response code 0, table type CDAT";
    size_t bytes = (rsp->size() - 3) * 4;
    auto* p = reinterpret_cast<const uint8_t*>(rsp->data() + 3);
    if (handle == 0) {
      EXPECT_EQ(bytes, sizeof(CdatHeader));
    } else {
      types.push_back(p[0]);
      EXPECT_EQ(p[2] | (p[3] << 8), static_cast<int>(bytes)) << "structure length field";
    }
    table.insert(table.end(), p, p + bytes);
    handle = (*rsp)[2] >> 16;
  }
  ASSERT_GE(table.size(), sizeof(CdatHeader));
  CdatHeader hdr;
  std::memcpy(&hdr, table.data(), sizeof hdr);
  EXPECT_EQ(hdr.length, table.size());
  EXPECT_EQ(hdr.revision, 1);
  EXPECT_EQ(cdat_byte_sum(table), 0);
  EXPECT_NE(hdr.checksum, 0) << "the checksum byte does some work";
  EXPECT_EQ(types, (std::vector<uint8_t>{0, 1, 4}));  // DSMAS, DSLBIS, DSEMTS
  EXPECT_EQ(table, default_cdat_table().bytes());
  EXPECT_TRUE(log_.empty());
}

TEST_F(DoeTest, CdatCorruptionIsDetectedByTheChecksum) {
  // Negative control for the checksum assertion above.
  auto bytes = default_cdat_table().bytes();
  bytes[20] ^= 1;
  EXPECT_NE(cdat_byte_sum(bytes), 0);
}

struct BadCdatCase {
  const char* name;
  uint32_t handle, code, table;
};

class DoeBadCdatTest : public DoeTest, public ::testing::WithParamInterface<BadCdatCase> {};

TEST_P(DoeBadCdatTest, AnswersWithError) {
  auto rsp = exchange(cdat_read(GetParam().handle, GetParam().code, GetParam().table));
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(EIO));
  EXPECT_TRUE(exchange(cdat_read(0)).ok()) << "the mailbox recovers after abort";
  EXPECT_TRUE(log_.empty());
}

INSTANTIATE_TEST_SUITE_P(Requests, DoeBadCdatTest,
                         ::testing::Values(BadCdatCase{"HandlePastEnd", 4, 0, 0},
                                           BadCdatCase{"LastHandle", 0xffff, 0, 0},
                                           BadCdatCase{"RequestCode", 0, 1, 0},
                                           BadCdatCase{"TableType", 0, 0, 1}),
                         [](const auto& p) { return std::string(p.param.name); });

TEST_F(DoeTest, CdatNotConfiguredIsAnUnknownProtocol) {
  make({.vendor_id = kVid, .cdat = false});
  auto rsp = exchange(cdat_read(0));
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(EIO));
}

// --- Echo -------------------------------------------------------------------

class DoeEchoTest : public DoeTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(DoeEchoTest, AnswersWithTheRequest) {
  make({.vendor_id = kVid, .mailbox_dwords = 4096});
  Dwords req = echo(GetParam());
  auto rsp = exchange(req);
  ASSERT_TRUE(rsp.ok()) << rsp.error().name();
  EXPECT_EQ(*rsp, req);
  EXPECT_EQ(status(), 0u);
  EXPECT_EQ(doe_->allocated_dwords(), 0u) << "nothing kept after the exchange";
  EXPECT_TRUE(log_.empty());
}

INSTANTIATE_TEST_SUITE_P(Sizes, DoeEchoTest, ::testing::Values(2, 3, 4, 5, 17, 255, 1024, 4096));

TEST_F(DoeTest, EchoOfTheLargestObjectUsesLengthZero) {
  Dwords req = echo(kDoeMaxObjectDwords);
  ASSERT_EQ(req[1], 0u);
  auto rsp = exchange(req);
  ASSERT_TRUE(rsp.ok()) << rsp.error().name();
  EXPECT_EQ(*rsp, req);
}

TEST_F(DoeTest, EchoOfAnotherVendorIsAnUnknownProtocol) {
  Dwords req = echo(4);
  req[0] = doe_header0(0x8086, kDoeTypeEcho);
  auto rsp = exchange(req);
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(EIO));
  EXPECT_TRUE(exchange(echo(4)).ok());
  EXPECT_TRUE(log_.empty());
}

// --- Register semantics -------------------------------------------------------

TEST_F(DoeTest, ReadingTheReadMailboxHasNoSideEffect) {
  write_object(echo(4));
  go();
  ASSERT_EQ(status(), PCI_DOE_STATUS_DATA_OBJECT_READY);
  uint32_t first = rd(PCI_DOE_READ);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(rd(PCI_DOE_READ), first);
  wr(PCI_DOE_READ, 0);
  EXPECT_EQ(rd(PCI_DOE_READ), 4u) << "the write advanced to DW1";
  wr(PCI_DOE_READ, 0x12345678);  // any value advances
  wr(PCI_DOE_READ, 0);
  EXPECT_EQ(status(), PCI_DOE_STATUS_DATA_OBJECT_READY) << "one dword left";
  wr(PCI_DOE_READ, 0);
  EXPECT_EQ(status(), 0u) << "Data Object Ready clears after the last dword";
  EXPECT_TRUE(log_.empty());
}

TEST_F(DoeTest, ReadingTheReadMailboxWithNothingReadyIsHarmless) {
  // A config dump (lspci -xxxx, cat config) reads every register: no misuse.
  EXPECT_EQ(rd(PCI_DOE_READ), 0u);
  write_object(echo(3));
  go();
  while (status() & PCI_DOE_STATUS_DATA_OBJECT_READY) wr(PCI_DOE_READ, 0);
  EXPECT_EQ(rd(PCI_DOE_READ), 0u) << "past the end reads 0";
  EXPECT_TRUE(log_.empty());
  wr(PCI_DOE_READ, 0);  // advancing past the end IS misuse: the oracle must see it
  EXPECT_EQ(log_.size(), 1u);
}

TEST_F(DoeTest, PassiveRegistersReadAsSpecified) {
  EXPECT_EQ(rd(PCI_DOE_CAP) & PCI_DOE_CAP_INT_SUP, 0u);
  wr(PCI_DOE_CTRL, PCI_DOE_CTRL_INT_EN);
  EXPECT_EQ(rd(PCI_DOE_CTRL), 0u) << "no interrupt support: Interrupt Enable hardwired 0";
  write_object(echo(2));
  EXPECT_EQ(rd(PCI_DOE_WRITE), 0u);
  go();
  EXPECT_EQ(rd(PCI_DOE_CTRL), 0u) << "GO reads as 0";
  wr(PCI_DOE_STATUS, 0xffffffff);
  EXPECT_EQ(status(), PCI_DOE_STATUS_DATA_OBJECT_READY) << "Status is not writable";
}

TEST_F(DoeTest, AbortWinsOverGoInTheSameWrite) {
  write_object(echo(3));
  wr(PCI_DOE_CTRL, PCI_DOE_CTRL_ABORT | PCI_DOE_CTRL_GO);
  EXPECT_EQ(status(), 0u);
  EXPECT_TRUE(exchange(echo(3)).ok()) << "the partial request was discarded";
  EXPECT_TRUE(log_.empty());
}

TEST_F(DoeTest, AbortDiscardsAPendingResponse) {
  write_object(echo(8));
  go();
  wr(PCI_DOE_READ, 0);
  abort_mailbox();
  EXPECT_EQ(status(), 0u);
  auto rsp = exchange(discovery(0));
  ASSERT_TRUE(rsp.ok());
  EXPECT_EQ(rsp->size(), 3u);
  EXPECT_EQ(doe_->allocated_dwords(), 0u);
}

TEST_F(DoeTest, ResetAbandonsEverything) {
  write_object({doe_header0(kVid, kDoeTypeEcho), 6, 1});  // half a request
  doe_->reset();
  EXPECT_EQ(status(), 0u);
  EXPECT_EQ(exchange(echo(3)).value(), echo(3)) << "stale dwords did not leak in";
  write_object(echo(5));
  go();
  doe_->reset();
  EXPECT_EQ(status(), 0u) << "pending response dropped";
  EXPECT_EQ(doe_->allocated_dwords(), 0u);
  doe_->set_fault(DoeFault::kError);
  write_object(echo(3));
  go();
  ASSERT_EQ(status(), PCI_DOE_STATUS_ERROR);
  doe_->reset();
  EXPECT_EQ(status(), 0u) << "Error cleared";
  EXPECT_EQ(doe_->config().fault, DoeFault::kError) << "the fault is a property of the device";
  EXPECT_TRUE(log_.empty());
}

// --- Faults -----------------------------------------------------------------

TEST_F(DoeTest, NoResponseStaysBusyUntilAbort) {
  doe_->set_fault(DoeFault::kNoResponse);
  write_object(echo(4));
  go();
  for (int i = 0; i < 50; ++i) {
    now_ += std::chrono::seconds(1);
    ASSERT_EQ(status(), PCI_DOE_STATUS_BUSY);
  }
  abort_mailbox();
  EXPECT_EQ(status(), 0u);
  doe_->set_fault(DoeFault::kNone);
  EXPECT_EQ(exchange(echo(4)).value(), echo(4));
  EXPECT_TRUE(log_.empty());
}

TEST_F(DoeTest, NoResponseTimesOutTheInitiator) {
  doe_->set_fault(DoeFault::kNoResponse);
  auto rsp = exchange(echo(4));
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(ETIMEDOUT));
  EXPECT_EQ(status(), 0u) << "the helper aborted";
}

TEST_F(DoeTest, ErrorFaultSetsErrorUntilAbort) {
  doe_->set_fault(DoeFault::kError);
  write_object(discovery(0));
  go();
  EXPECT_EQ(status(), PCI_DOE_STATUS_ERROR);
  EXPECT_EQ(status(), PCI_DOE_STATUS_ERROR) << "Error is sticky";
  abort_mailbox();
  EXPECT_EQ(status(), 0u);
  EXPECT_EQ(exchange(discovery(0)).error(), Errno(EIO));
  doe_->set_fault(DoeFault::kNone);
  EXPECT_TRUE(exchange(discovery(0)).ok());
  EXPECT_TRUE(log_.empty());
}

TEST_F(DoeTest, StuckBusySurvivesAbortButNotReset) {
  doe_->set_fault(DoeFault::kStuckBusy);
  auto rsp = exchange(echo(4));
  ASSERT_FALSE(rsp.ok());
  EXPECT_EQ(rsp.error(), Errno(ETIMEDOUT));
  abort_mailbox();
  EXPECT_EQ(status(), PCI_DOE_STATUS_BUSY) << "abort cannot clear a stuck mailbox";
  EXPECT_EQ(exchange(echo(4)).error(), Errno(EBUSY));
  EXPECT_TRUE(log_.empty()) << "the helper checked Busy before writing";
  doe_->reset();
  EXPECT_EQ(status(), 0u);
  doe_->set_fault(DoeFault::kNone);
  EXPECT_EQ(exchange(echo(4)).value(), echo(4));
}

TEST_F(DoeTest, StuckBusyReturnsAfterResetWhileTheFaultStays) {
  doe_->set_fault(DoeFault::kStuckBusy);
  EXPECT_FALSE(exchange(echo(2)).ok());
  doe_->reset();
  EXPECT_EQ(status(), 0u);
  EXPECT_EQ(exchange(echo(2)).error(), Errno(ETIMEDOUT));
  abort_mailbox();
  EXPECT_EQ(status(), PCI_DOE_STATUS_BUSY);
}

TEST_F(DoeTest, SlowResponseIsReadyOnlyAfterTheDelay) {
  make({.vendor_id = kVid, .fault = DoeFault::kSlow, .slow_delay = std::chrono::milliseconds(200)});
  write_object(echo(6));
  go();
  EXPECT_EQ(status(), PCI_DOE_STATUS_BUSY);
  now_ += std::chrono::milliseconds(199);
  EXPECT_EQ(status(), PCI_DOE_STATUS_BUSY);
  now_ += std::chrono::milliseconds(1);
  EXPECT_EQ(status(), PCI_DOE_STATUS_DATA_OBJECT_READY);
  Dwords got;
  while (status() & PCI_DOE_STATUS_DATA_OBJECT_READY) {
    got.push_back(rd(PCI_DOE_READ));
    wr(PCI_DOE_READ, 0);
  }
  EXPECT_EQ(got, echo(6));
  EXPECT_TRUE(log_.empty());
}

TEST_F(DoeTest, SlowResponseIsDiscardedByAbort) {
  make({.vendor_id = kVid, .fault = DoeFault::kSlow});
  write_object(echo(6));
  go();
  abort_mailbox();
  now_ += std::chrono::seconds(1);
  EXPECT_EQ(status(), 0u) << "an aborted slow response never appears";
}

TEST_F(DoeTest, SlowResponseWithTheRealClock) {
  make({.vendor_id = kVid, .fault = DoeFault::kSlow, .slow_delay = std::chrono::milliseconds(5)});
  doe_->set_clock(nullptr);
  auto start = std::chrono::steady_clock::now();
  test::DoeExchangeOptions opt;  // polls with yield until the real deadline
  auto rsp = doe_exchange([this](uint32_t r) { return rd(r); },
                          [this](uint32_t r, uint32_t v) { wr(r, v); }, echo(3), opt);
  ASSERT_TRUE(rsp.ok()) << rsp.error().name();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(5));
}

// --- Violations ---------------------------------------------------------------

struct ViolationCase {
  const char* name;
  DoeFault fault;
  uint32_t capacity;
  std::function<void(DoeTest&)> misuse;
  const char* reason;  // substring of the single violation reported
};

class DoeViolationCaseTest : public DoeTest, public ::testing::WithParamInterface<ViolationCase> {};

TEST_P(DoeViolationCaseTest, IsReportedOnce) {
  make({.vendor_id = kVid, .mailbox_dwords = GetParam().capacity, .fault = GetParam().fault});
  GetParam().misuse(*this);
  ASSERT_EQ(log_.size(), 1u) << (log_.empty() ? "" : log_[0]);
  EXPECT_NE(log_[0].find(GetParam().reason), std::string::npos) << log_[0];
}

// Short names for the table below.
namespace ops {
void obj(DoeTest& t, const Dwords& o) { t.write_object(o); }
void go(DoeTest& t) { t.go(); }
void adv(DoeTest& t) { t.wr(PCI_DOE_READ, 0); }
void drain(DoeTest& t) {
  while (t.status() & PCI_DOE_STATUS_DATA_OBJECT_READY) adv(t);
}
Dwords ok_req() { return DoeTest::echo(4); }
}  // namespace ops

INSTANTIATE_TEST_SUITE_P(
    Kinds, DoeViolationCaseTest,
    ::testing::Values(ViolationCase{"WriteWhileBusy", DoeFault::kNoResponse, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::obj(d, {1});
                                    },
                                    "PCI_DOE_WRITE while Busy"},
                      ViolationCase{"WriteWhileStuck", DoeFault::kStuckBusy, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      d.abort_mailbox();
                                      ops::obj(d, {1});
                                    },
                                    "PCI_DOE_WRITE while Busy"},
                      ViolationCase{"WriteWhileResponsePending", DoeFault::kNone, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::obj(d, {1});
                                    },
                                    "while a response is pending"},
                      ViolationCase{"WriteWhileError", DoeFault::kError, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::obj(d, {1});
                                    },
                                    "PCI_DOE_WRITE while Error"},
                      ViolationCase{"GoWhileBusy", DoeFault::kNoResponse, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::go(d);
                                    },
                                    "GO while Busy"},
                      ViolationCase{"GoWhileResponsePending", DoeFault::kNone, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::go(d);
                                    },
                                    "GO while a response is pending"},
                      ViolationCase{"GoWhileError", DoeFault::kError, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::go(d);
                                    },
                                    "GO while Error"},
                      ViolationCase{"GoEmpty", DoeFault::kNone, 64, [](DoeTest& d) { ops::go(d); },
                                    "empty data object"},
                      ViolationCase{"GoHalfHeader", DoeFault::kNone, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, {doe_header0(kVid, 1)});
                                      ops::go(d);
                                    },
                                    "incomplete data object header"},
                      ViolationCase{"GoIncomplete", DoeFault::kNone, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, {doe_header0(kVid, 1), 5, 0});
                                      ops::go(d);
                                    },
                                    "(incomplete object)"},
                      ViolationCase{"GoLongerThanLength", DoeFault::kNone, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, {doe_header0(kVid, 1), 2, 0});
                                      ops::go(d);
                                    },
                                    "length field 2 but 3 dwords"},
                      ViolationCase{"GoOverCapacity", DoeFault::kNone, 16,
                                    [](DoeTest& d) {
                                      ops::obj(d, {doe_header0(kVid, 1), 17});
                                      ops::go(d);
                                    },
                                    "over the mailbox capacity"},
                      ViolationCase{"GoLengthZeroOverCapacity", DoeFault::kNone, 16,
                                    [](DoeTest& d) {
                                      ops::obj(d, {doe_header0(kVid, 1), 0});
                                      ops::go(d);
                                    },
                                    "length 262144 over"},
                      ViolationCase{"Overrun", DoeFault::kNone, 8,
                                    [](DoeTest& d) {
                                      Dwords o = DoeTest::echo(12);
                                      ops::obj(d, o);  // reported once, not per dropped dword
                                    },
                                    "overruns the mailbox of 8 dwords"},
                      ViolationCase{"AdvanceWithNothingReady", DoeFault::kNone, 64,
                                    [](DoeTest& d) { ops::adv(d); },
                                    "advanced with no data object ready"},
                      ViolationCase{"AdvancePastEnd", DoeFault::kNone, 64,
                                    [](DoeTest& d) {
                                      ops::obj(d, ops::ok_req());
                                      ops::go(d);
                                      ops::drain(d);
                                      ops::adv(d);
                                    },
                                    "advanced past the end"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST_F(DoeTest, MisusedGoLeavesErrorAndAbortRecovers) {
  write_object({doe_header0(kVid, 1), 5, 0});
  go();
  EXPECT_EQ(status(), PCI_DOE_STATUS_ERROR);
  abort_mailbox();
  EXPECT_EQ(exchange(echo(5)).value(), echo(5));
  EXPECT_EQ(log_.size(), 1u);
}

TEST_F(DoeTest, CorrectUseReportsNoViolation) {
  for (uint8_t i = 0; i < 3; ++i) ASSERT_TRUE(exchange(discovery(i)).ok());
  for (uint32_t h = 0; h < 4; ++h) ASSERT_TRUE(exchange(cdat_read(h)).ok());
  for (size_t n = 2; n < 40; ++n) ASSERT_EQ(exchange(echo(n)).value(), echo(n));
  doe_->set_fault(DoeFault::kNoResponse);
  EXPECT_FALSE(exchange(echo(3)).ok());
  doe_->set_fault(DoeFault::kError);
  EXPECT_FALSE(exchange(echo(3)).ok());
  doe_->set_fault(DoeFault::kSlow);
  EXPECT_TRUE(exchange(echo(3), 1000).ok());
  doe_->set_fault(DoeFault::kNone);
  doe_->reset();
  EXPECT_TRUE(exchange(echo(3)).ok());
  EXPECT_TRUE(log_.empty()) << log_.front();
}

// --- Memory -----------------------------------------------------------------

TEST_F(DoeTest, MemoryGrowsWithWhatIsWrittenNotWithTheLengthField) {
  write_object({doe_header0(kVid, 1), 0 /* 2^18 */, 7});
  EXPECT_LE(doe_->allocated_dwords(), 8u);
  abort_mailbox();
  EXPECT_EQ(doe_->allocated_dwords(), 0u);
}

TEST_F(DoeTest, MemoryIsBoundedByTheMailbox) {
  make({.vendor_id = kVid, .mailbox_dwords = 100});
  write_object(echo(1000));
  EXPECT_LE(doe_->allocated_dwords(), 100u);
  EXPECT_EQ(log_.size(), 1u);
}

}  // namespace
}  // namespace pcifs::backend::sim
