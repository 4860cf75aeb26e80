// The Mediator's control files through its API: power_state [S9], reset and
// remove [S10], and the quiesce of memory decode through the command register
// [S12]. The Mediator runs over a FaultBackend wrapping the default simulated
// set, so tests can count (and hold) the device calls the core makes; the
// sim's violation oracle must stay 0 wherever the core is in charge.
#include <linux/pci_regs.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/view_policy.hpp"
#include "fault/fault_backend.hpp"
#include "fixtures/mediator_fixture.hpp"
#include "pcifs/mediator.hpp"

namespace pcifs::test {
namespace {

using backend::fault::FaultBackend;
using backend::fault::FaultDevice;
using backend::fault::OpClass;

constexpr uint32_t kIdValue = 0x50434946;  // BAR register 0x40 of the sim endpoints

// "EIO", or "ok": a failed expectation reports instead of asserting in error().
template <typename T>
std::string_view err(const Result<T>& r) {
  return r.ok() ? std::string_view("ok") : r.error().name();
}

class MediatorControlTest : public MediatorFixture {
 protected:
  void SetUp() override {
    sim_ = backend::sim::make_default_backend();
    sim_raw_ = sim_.get();
    fault_ = std::make_shared<FaultBackend>(sim_);
    MediatorOptions o;
    o.doe_timeout = std::chrono::milliseconds(100);
    med_ = std::make_unique<Mediator>(fault_, o);
    med_->set_revocation_sink(&sink_);
    view_ = med_->add_view(ViewPolicy{});
    med_->wait_for_discovery();  // no Discovery exchange races a transition
  }

  FaultDevice& fdev(const Bdf& b) { return *fault_->device(b); }
  // reset and remove are write-only files.
  HandleId must_open_wo(const Bdf& b, FileKind k, const Caller& c = kRoot) {
    auto h = med_->open(view_, c, FileRef{b, k, 0, {}}, OpenFlags{false, true, false});
    EXPECT_TRUE(h.ok()) << (h.ok() ? "" : h.error().name());
    return h.ok() ? *h : 0;
  }
  static uint64_t all_calls(const FaultDevice& f) {
    uint64_t n = 0;
    for (size_t c = 0; c < backend::fault::kOpClassCount; ++c)
      n += f.calls(static_cast<OpClass>(c));
    return n;
  }
  size_t invalidations(const Bdf& b) const {
    return static_cast<size_t>(
        std::count(sink_.invalidations.begin(), sink_.invalidations.end(), b));
  }
  ViewId add(const std::string& json) {
    std::string err;
    auto v = core::parse_view(json, "test.json", &err);
    EXPECT_TRUE(v.ok()) << err;
    return med_->add_view(*v);
  }
  // Writes power_state through a handle of `c` kept open for the test, as a
  // process that holds the file open (closing it would end the claim, and the
  // hand-over would bring the device back to D0).
  Result<size_t> set_power(const Bdf& b, const std::string& s, const Caller& c = kRoot) {
    auto key = std::make_pair(b, c.pid);
    auto it = power_handles_.find(key);
    if (it == power_handles_.end()) {
      auto h = open(b, FileKind::kPowerState, 0, true, c);
      if (!h) return h.error();
      it = power_handles_.emplace(key, *h).first;
    }
    return write_text(it->second, s);
  }
  std::map<std::pair<Bdf, pid_t>, HandleId> power_handles_;
  std::string power(const Bdf& b) {
    HandleId h = must_open(b, FileKind::kPowerState, 0, false, kUser);
    std::string t = text(h);
    med_->release(h);
    return t;
  }
  uint64_t bget(HandleId h, uint64_t off, unsigned width) {
    auto v = bar_get(h, off, width);
    EXPECT_TRUE(v.ok()) << err(v);
    return v.value_or(~uint64_t{0});
  }
  uint32_t dev_cfg(const Bdf& b, uint32_t off, unsigned width = 4) {
    auto v = sim(b).config_read(off, width);
    EXPECT_TRUE(v.ok());
    return v.ok() ? *v : 0;
  }
  uint32_t cfg(HandleId h, uint32_t off, unsigned width = 4) {
    auto r = read(h, off, width);
    EXPECT_TRUE(r.ok() && r->size() == width);
    uint32_t v = 0;
    for (unsigned i = 0; r.ok() && i < r->size(); ++i) v |= uint32_t{(*r)[i]} << (8 * i);
    return v;
  }
  Result<size_t> cfg_put(HandleId h, uint32_t off, unsigned width, uint32_t v) {
    std::vector<uint8_t> b(width);
    for (unsigned i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    return write(h, off, b);
  }
  nlohmann::json dev_status(const Bdf& b, ViewId v = 0) {
    auto s = nlohmann::json::parse(med_->status_json(v));
    for (auto& d : s["devices"]) {
      if (d["bdf"] == b.str()) return d;
    }
    ADD_FAILURE() << b.str() << " not in status";
    return {};
  }
  // DOE Discovery request, index 0 (header, length 3 dwords, index).
  static std::vector<uint8_t> discovery_request() {
    return {0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  }
  Result<std::vector<uint8_t>> doe_response(HandleId h) {
    std::promise<Result<std::vector<uint8_t>>> p;
    auto f = p.get_future();
    med_->doe_read(h, 4096, [&p](Result<std::vector<uint8_t>> r) { p.set_value(std::move(r)); });
    return f.get();
  }

  std::shared_ptr<FaultBackend> fault_;
};

// --- power_state [S9]

TEST_F(MediatorControlTest, PowerStateReadNeverTouchesTheDevice) {
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, false, kUser);
  HandleId cf = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  FaultDevice& f = fdev(kEp0);
  for (const char* state : {"D0", "D3hot", "D3cold", "D0"}) {
    ASSERT_TRUE(set_power(kEp0, state).ok()) << state;
    uint64_t before = all_calls(f);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(text(ps), std::string(state) + "\n");
    EXPECT_EQ(all_calls(f), before) << "reading power_state in " << state;
  }
  // Negative control: the counter does see a device access made through the
  // Mediator (Command/Status: volatile, never from the config shadow).
  uint64_t before = f.calls(OpClass::kConfigRead);
  ASSERT_TRUE(read(cf, PCI_COMMAND, 4).ok());
  EXPECT_GT(f.calls(OpClass::kConfigRead), before);
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, PowerStateWritesMoveTheDevice) {
  struct Step {
    const char* text;
    PowerState want;
  };
  for (Step s : {Step{"D3hot", PowerState::kD3hot}, Step{"D0\n", PowerState::kD0},
                 Step{"D3cold\n", PowerState::kD3cold}, Step{"D3hot\n", PowerState::kD3hot},
                 Step{"D3cold", PowerState::kD3cold}, Step{"D0", PowerState::kD0}}) {
    std::string t = s.text;
    auto n = set_power(kEp0, t);
    ASSERT_TRUE(n.ok()) << t << ": " << n.error().name();
    EXPECT_EQ(*n, t.size()) << "a control write returns its length";
    EXPECT_EQ(sim(kEp0).physical_power_state(), s.want) << t;
    EXPECT_EQ(power(kEp0), std::string(to_string(s.want)) + "\n");
  }
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, PowerStateRejectsAnythingElse) {
  HandleId h = must_open(kEp0, FileKind::kPowerState, 0, true);
  HandleId owner = must_open(kEp0, FileKind::kOwner, 0, false, kUser);
  for (const std::string& bad :
       {std::string(""), std::string("\n"), std::string("D1"), std::string("d0"), std::string("D3"),
        std::string("D3Hot"), std::string(" D0"), std::string("D0 "), std::string("D0\n\n"),
        std::string("D3hot\r\n"), std::string("1"), std::string("D0\0", 3),
        std::string("D3coldX")}) {
    EXPECT_EQ(err(write_text(h, bad)), "EINVAL") << "'" << bad << "'";
  }
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kPower), 0u);
  EXPECT_EQ(power(kEp0), "D0\n");
  EXPECT_EQ(text(owner), "none\n") << "a rejected write does not claim";
}

TEST_F(MediatorControlTest, WritingPowerStateClaims) {
  EXPECT_EQ(err(open(kEp0, FileKind::kPowerState, 0, true, kUser)), "EACCES");
  EXPECT_TRUE(open(kEp0, FileKind::kPowerState, 0, false, kUser).ok()) << "reading is for all";
  HandleId h = must_open(kEp0, FileKind::kPowerState, 0, true);
  HandleId owner = must_open(kEp0, FileKind::kOwner, 0, false, kUser);
  EXPECT_EQ(text(owner), "none\n") << "opening does not claim";
  ASSERT_TRUE(write_text(h, "D0\n").ok());  // same state: no transition, still a claim
  EXPECT_EQ(text(owner), "pid=100 uid=0 view=default\n");
  EXPECT_EQ(err(open(kEp0, FileKind::kBar, 0, false, kRoot2)), "EBUSY");
  EXPECT_EQ(err(open(kEp1, FileKind::kBar, 0, false, kRoot2)), "EBUSY") << "same group";
  EXPECT_EQ(err(set_power(kEp0, "D3hot", kRoot2)), "EBUSY");
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD0) << "EBUSY moved nothing";
  med_->release(h);
  med_->drain_handovers();  // the claim's end hands the group over first
  EXPECT_EQ(text(owner), "none\n");
  EXPECT_TRUE(open(kEp0, FileKind::kBar, 0, false, kRoot2).ok());
}

TEST_F(MediatorControlTest, InD3hotConfigPassesBarAndDoeFail) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId cf = must_open(kEp0, FileKind::kConfig, 0, true);
  HandleId doe = must_open(kEp0, FileKind::kDoe, 0, true);
  ASSERT_TRUE(set_power(kEp0, "D3hot").ok());
  EXPECT_EQ(cfg(cf, PCI_VENDOR_ID), 0x10f01b36u) << "config read passes";
  ASSERT_TRUE(cfg_put(cf, PCI_CACHE_LINE_SIZE, 1, 0x20).ok()) << "config write passes";
  EXPECT_EQ(dev_cfg(kEp0, PCI_CACHE_LINE_SIZE, 1), 0x20u) << "and reached the device";
  EXPECT_EQ(err(bar_get(bar, kIdReg, 4)), "EIO");
  EXPECT_EQ(err(bar_put(bar, kScratch0, 4, 1)), "EIO");
  EXPECT_EQ(err(write(doe, 0, discovery_request())), "EIO");
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kBarRead), 0u);
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kBarWrite), 0u);
  ASSERT_TRUE(set_power(kEp0, "D0").ok());
  EXPECT_EQ(bget(bar, kIdReg, 4), kIdValue);
  EXPECT_EQ(cfg(cf, PCI_CACHE_LINE_SIZE, 1), 0x20u) << "a write made in D3hot is kept";
  ASSERT_TRUE(write(doe, 0, discovery_request()).ok());
  EXPECT_TRUE(doe_response(doe).ok());
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, InD3coldConfigReadsComeFromTheSnapshot) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId cf = must_open(kEp0, FileKind::kConfig, 0, true);
  HandleId user = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  auto before = read(user, 0, 4096);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(set_power(kEp0, "D3cold").ok());
  FaultDevice& f = fdev(kEp0);
  uint64_t device_calls = all_calls(f);
  auto after = read(user, 0, 4096);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(all_calls(f), device_calls) << "D3cold: the device is not touched at all";
  ASSERT_EQ(after->size(), 4096u);
  const uint16_t pmcsr = sim(kEp0).caps().pm + PCI_PM_CTRL;
  for (size_t i = 0; i < 4096; ++i) {
    if (i == pmcsr) continue;
    EXPECT_EQ((*after)[i], (*before)[i]) << "offset " << i;
  }
  EXPECT_EQ((*after)[pmcsr] & PCI_PM_CTRL_STATE_MASK, 3) << "PMCSR reads D3";
  EXPECT_EQ(err(cfg_put(cf, PCI_CACHE_LINE_SIZE, 1, 0x20)), "EIO");
  EXPECT_EQ(err(bar_get(bar, kIdReg, 4)), "EIO");
  EXPECT_EQ(err(bar_put(bar, kScratch0, 4, 1)), "EIO");
  EXPECT_EQ(all_calls(f), device_calls) << "refused accesses do not reach the device";
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD3cold);
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, D3hotToD3coldSnapshotEqualsD3hotConfig) {
  HandleId user = must_open(kEp2, FileKind::kConfig, 0, false, kUser);
  ASSERT_TRUE(set_power(kEp2, "D3hot").ok());
  auto hot = read(user, 0, 4096);
  ASSERT_TRUE(set_power(kEp2, "D3cold").ok());
  uint64_t device_calls = all_calls(fdev(kEp2));
  auto cold = read(user, 0, 4096);
  EXPECT_EQ(all_calls(fdev(kEp2)), device_calls);
  ASSERT_TRUE(hot.ok() && cold.ok());
  EXPECT_EQ(*cold, *hot);
  EXPECT_EQ(violations(kEp2), 0u);
}

TEST_F(MediatorControlTest, BackToD0RestoresConfigAndInvalidatesOnEveryQuiesce) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId user = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  const uint32_t cmd = dev_cfg(kEp0, PCI_COMMAND, 2);
  std::vector<uint32_t> bars;
  for (uint32_t off = PCI_BASE_ADDRESS_0; off <= PCI_BASE_ADDRESS_5; off += 4) {
    bars.push_back(dev_cfg(kEp0, off));
  }
  ASSERT_NE(cmd & PCI_COMMAND_MEMORY, 0u);
  ASSERT_NE(bars[0], 0u) << "firmware assigned BAR0";
  for (const char* low : {"D3cold", "D3hot"}) {
    size_t inval = invalidations(kEp0);
    ASSERT_TRUE(set_power(kEp0, low).ok());
    EXPECT_GT(invalidations(kEp0), inval) << "quiesce for " << low << " invalidated mappings";
    inval = invalidations(kEp0);
    ASSERT_TRUE(read(user, 0, 4096).ok());  // negative control: reads never invalidate
    EXPECT_EQ(text(must_open(kEp0, FileKind::kPowerState, 0, false, kUser)),
              std::string(low) + "\n");
    EXPECT_EQ(invalidations(kEp0), inval) << "config and power_state reads do not invalidate";
    ASSERT_TRUE(set_power(kEp0, "D0").ok());
    EXPECT_EQ(dev_cfg(kEp0, PCI_COMMAND, 2), cmd) << "command restored after " << low;
    for (unsigned i = 0; i < 6; ++i) {
      EXPECT_EQ(dev_cfg(kEp0, PCI_BASE_ADDRESS_0 + 4 * i), bars[i]) << "BAR" << i << " " << low;
    }
    EXPECT_EQ(bget(bar, kIdReg, 4), kIdValue) << "BAR works again after " << low;
  }
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, D3hotWithoutNoSoftResetIsRestored) {
  // 01:00.1 has No_Soft_Reset=0: D3hot -> D0 resets it to hardware defaults.
  HandleId bar = must_open(kEp1, FileKind::kBar, 0, true);
  const uint32_t cmd = dev_cfg(kEp1, PCI_COMMAND, 2);
  const uint32_t bar0 = dev_cfg(kEp1, PCI_BASE_ADDRESS_0);
  ASSERT_TRUE(set_power(kEp1, "D3hot").ok());
  ASSERT_TRUE(set_power(kEp1, "D0").ok());
  EXPECT_EQ(dev_cfg(kEp1, PCI_COMMAND, 2), cmd);
  EXPECT_EQ(dev_cfg(kEp1, PCI_BASE_ADDRESS_0), bar0);
  EXPECT_EQ(bget(bar, kIdReg, 4), kIdValue);
  EXPECT_EQ(violations(kEp1), 0u);
}

// --- low_power_access [S6, S9]

TEST_F(MediatorControlTest, WakeViewWakesForTheClaimHolderOnly) {
  ViewId wake = add(R"({"name": "w", "low_power_access": "wake"})");
  HandleId in_deny = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId in_wake = must_open(kEp0, FileKind::kBar, 0, true, kRoot, wake);
  HandleId user_doe = must_open(kEp0, FileKind::kDoe, 0, true, kUser, wake);
  HandleId other_doe = must_open(kEp0, FileKind::kDoe, 0, true, kRoot2, wake);
  HandleId user_cfg = must_open(kEp0, FileKind::kConfig, 0, false, kUser, wake);

  ASSERT_TRUE(set_power(kEp0, "D3hot").ok());
  EXPECT_EQ(err(bar_get(in_deny, kIdReg, 4)), "EIO") << "the deny view";
  EXPECT_EQ(err(write(user_doe, 0, discovery_request())), "EIO") << "not the holder";
  EXPECT_EQ(err(write(other_doe, 0, discovery_request())), "EIO") << "not the holder";
  EXPECT_TRUE(read(user_cfg, 0, 256).ok());
  EXPECT_EQ(power(kEp0), "D3hot\n") << "none of that woke the device";
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD3hot);

  EXPECT_EQ(bget(in_wake, kIdReg, 4), kIdValue) << "the holder's access wakes";
  EXPECT_EQ(power(kEp0), "D0\n");
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD0);

  ASSERT_TRUE(set_power(kEp0, "D3cold").ok());
  EXPECT_EQ(err(bar_put(in_deny, kScratch0, 4, 7)), "EIO");
  ASSERT_TRUE(bar_put(in_wake, kScratch0, 4, 7).ok()) << "wakes from D3cold too";
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD0);
  EXPECT_EQ(bget(in_deny, kScratch0, 4), 7u) << "restored: BARs decode again";

  // The holder's DOE exchange wakes too (the holder is pid 100 in any view).
  HandleId holder_doe = must_open(kEp0, FileKind::kDoe, 0, true, kRoot, wake);
  ASSERT_TRUE(set_power(kEp0, "D3hot").ok());
  ASSERT_TRUE(write(holder_doe, 0, discovery_request()).ok());
  EXPECT_TRUE(doe_response(holder_doe).ok());
  EXPECT_EQ(power(kEp0), "D0\n");
  EXPECT_EQ(violations(kEp0), 0u);
}

// --- reset [S10]

TEST_F(MediatorControlTest, ResetRestoresConfigAndVirtualBars) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId cf = must_open(kEp0, FileKind::kConfig, 0, true);
  HandleId rs = must_open_wo(kEp0, FileKind::kReset);
  const uint32_t bar2 = cfg(cf, PCI_BASE_ADDRESS_2);
  const uint32_t cmd = dev_cfg(kEp0, PCI_COMMAND, 2);
  ASSERT_TRUE(cfg_put(cf, PCI_CACHE_LINE_SIZE, 1, 0x20).ok());
  ASSERT_TRUE(bar_put(bar, kScratch0, 4, 0x1234).ok());
  ASSERT_TRUE(cfg_put(cf, PCI_BASE_ADDRESS_2, 4, 0xffffffff).ok());
  ASSERT_NE(cfg(cf, PCI_BASE_ADDRESS_2), bar2) << "sizing in progress";
  size_t inval = invalidations(kEp0);

  EXPECT_EQ(err(write_text(rs, "2")), "EINVAL");
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kReset), 0u);
  auto n = write_text(rs, "1\n");
  ASSERT_TRUE(n.ok()) << n.error().name();
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kReset), 1u);
  EXPECT_GT(invalidations(kEp0), inval) << "reset quiesces";
  EXPECT_EQ(bget(bar, kScratch0, 4), 0u) << "the function was reset";
  EXPECT_EQ(bget(bar, kIdReg, 4), kIdValue) << "BARs usable after";
  EXPECT_EQ(cfg(cf, PCI_BASE_ADDRESS_2), bar2) << "virtual BAR sizing state reset";
  EXPECT_EQ(dev_cfg(kEp0, PCI_CACHE_LINE_SIZE, 1), 0x20u) << "config state restored";
  EXPECT_EQ(dev_cfg(kEp0, PCI_COMMAND, 2), cmd);
  EXPECT_EQ(dev_status(kEp0)["counters"]["resets"], 1);
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, ResetFromD3hotComesBackInD0) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  ASSERT_TRUE(set_power(kEp0, "D3hot").ok());
  HandleId rs = must_open_wo(kEp0, FileKind::kReset);
  ASSERT_TRUE(write_text(rs, "1").ok());
  EXPECT_EQ(power(kEp0), "D0\n");
  EXPECT_EQ(bget(bar, kIdReg, 4), kIdValue);
  EXPECT_EQ(violations(kEp0), 0u);
}

TEST_F(MediatorControlTest, ResetRequiresTheClaim) {
  EXPECT_EQ(
      err(med_->open(view_, kUser, FileRef{kEp0, FileKind::kReset, 0, {}}, {false, true, false})),
      "EACCES")
      << "unprivileged";
  EXPECT_EQ(err(open(kEp0, FileKind::kReset, 0, false)), "EACCES") << "write-only";
  HandleId other = must_open(kEp1, FileKind::kBar, 0, false, kRoot2);  // group 2
  HandleId rs = must_open_wo(kEp0, FileKind::kReset);
  EXPECT_EQ(err(write_text(rs, "1")), "EBUSY");
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kReset), 0u);
  med_->release(other);
  med_->drain_handovers();  // other's claim ended: its group is handed over first
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kReset), 1u) << "the hand-over's FLR";
  ASSERT_TRUE(write_text(rs, "1").ok());
  EXPECT_EQ(text(must_open(kEp0, FileKind::kOwner, 0, false, kUser)),
            "pid=100 uid=0 view=default\n")
      << "writing reset claims";
  EXPECT_EQ(violations(kEp0), 0u);
}

// --- remove [S10]

TEST_F(MediatorControlTest, RemoveRevokesEveryHandleForGood) {
  ViewId c2 = add(R"({"name": "c2"})");
  auto simdev = sim_raw_->find(kEp0);  // stays valid after remove, for the oracle
  HandleId cf = must_open(kEp0, FileKind::kConfig, 0, true);
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId doe = must_open(kEp0, FileKind::kDoe, 0, true, kUser);
  HandleId rom = must_open(kEp0, FileKind::kRom, 0, false, kUser);
  HandleId ps = must_open(kEp0, FileKind::kPowerState, 0, false, kUser);
  HandleId rm = must_open_wo(kEp0, FileKind::kRemove);
  HandleId owner1 = must_open(kEp1, FileKind::kOwner, 0, false, kUser, c2);
  ASSERT_TRUE(read(rom, 0, 512).ok());
  EXPECT_EQ(text(owner1), "pid=100 uid=0 view=default\n") << "the BAR claims group 2";

  auto n = write_text(rm, "1\n");
  ASSERT_TRUE(n.ok()) << n.error().name();
  EXPECT_EQ(*n, 2u);
  for (ViewId v : {view_, c2}) {
    auto devs = med_->devices(v);
    EXPECT_EQ(std::count(devs.begin(), devs.end(), kEp0), 0) << "view " << v;
    EXPECT_EQ(err(med_->files(v, kEp0)), "ENOENT");
    EXPECT_EQ(err(open(kEp0, FileKind::kConfig, 0, false, kRoot, v)), "ENOENT");
  }
  for (int round = 0; round < 2; ++round) {  // for good
    EXPECT_EQ(err(read(cf, 0, 64)), "ENODEV");
    EXPECT_EQ(err(cfg_put(cf, PCI_CACHE_LINE_SIZE, 1, 0x20)), "ENODEV");
    EXPECT_EQ(err(bar_get(bar, kIdReg, 4)), "ENODEV");
    EXPECT_EQ(err(bar_put(bar, kScratch0, 4, 1)), "ENODEV");
    EXPECT_EQ(err(write(doe, 0, discovery_request())), "ENODEV");
    EXPECT_EQ(err(read(doe, 0, 64)), "ENODEV");
    EXPECT_EQ(err(read(rom, 0, 512)), "ENODEV") << "even the shadowed ROM";
    EXPECT_EQ(err(read(ps, 0, 16)), "ENODEV");
  }
  med_->drain_handovers();  // the ended claim hands 01:00.1 over
  EXPECT_EQ(std::count(sink_.gone.begin(), sink_.gone.end(), kEp0), 1);
  EXPECT_GE(invalidations(kEp0), 1u) << "mappings revoked";
  EXPECT_EQ(text(owner1), "none\n") << "the claim ended";
  EXPECT_TRUE(open(kEp1, FileKind::kBar, 0, false, kRoot2).ok());

  // A second remove is harmless: ENODEV, no second device_gone, no device access.
  EXPECT_EQ(err(write_text(rm, "1")), "ENODEV");
  EXPECT_EQ(std::count(sink_.gone.begin(), sink_.gone.end(), kEp0), 1);
  for (HandleId h : {cf, bar, doe, rom, ps, rm}) med_->release(h);
  EXPECT_EQ(text(owner1), "pid=101 uid=0 view=default\n")
      << "releasing the removed device's claiming handle leaves the new claim alone";
  EXPECT_EQ(simdev->violations().value_or(1), 0u);
  EXPECT_EQ(violations(kEp1), 0u);
}

TEST_F(MediatorControlTest, RemoveKeepsTheGroupClaimOfSiblingHandles) {
  HandleId a = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId b = must_open(kEp1, FileKind::kBar, 0, true);
  ASSERT_TRUE(write_text(must_open_wo(kEp0, FileKind::kRemove), "1").ok());
  EXPECT_EQ(err(open(kEp1, FileKind::kBar, 0, false, kRoot2)), "EBUSY")
      << "pid 100 still has a working BAR handle on 01:00.1";
  med_->release(a);
  EXPECT_EQ(err(open(kEp1, FileKind::kBar, 0, false, kRoot2)), "EBUSY");
  med_->release(b);
  med_->drain_handovers();
  EXPECT_TRUE(open(kEp1, FileKind::kBar, 0, false, kRoot2).ok());
}

// --- memory decode through the command register [S12]

TEST_F(MediatorControlTest, MemoryDecodeOffQuiescesBars) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  HandleId io = must_open(kEp0, FileKind::kBar, 4, true);
  HandleId cf = must_open(kEp0, FileKind::kConfig, 0, true);
  HandleId user = must_open(kEp0, FileKind::kConfig, 0, false, kUser);
  const uint32_t cmd = cfg(cf, PCI_COMMAND, 2);
  ASSERT_NE(cmd & PCI_COMMAND_MEMORY, 0u);
  ASSERT_NE(cmd & PCI_COMMAND_IO, 0u);
  size_t inval = invalidations(kEp0);
  ASSERT_TRUE(cfg_put(cf, PCI_CACHE_LINE_SIZE, 1, 0x20).ok());
  ASSERT_TRUE(read(user, 0, 4096).ok());
  EXPECT_EQ(invalidations(kEp0), inval) << "negative control: no decode change, no quiesce";
  uint64_t quiesces = dev_status(kEp0)["counters"]["quiesces"];

  ASSERT_TRUE(cfg_put(cf, PCI_COMMAND, 2, cmd & ~uint32_t{PCI_COMMAND_MEMORY}).ok());
  EXPECT_EQ(dev_cfg(kEp0, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY, 0u);
  EXPECT_GT(invalidations(kEp0), inval);
  EXPECT_EQ(dev_status(kEp0)["counters"]["quiesces"], quiesces + 1);
  EXPECT_EQ(err(bar_get(bar, kIdReg, 4)), "EIO");
  EXPECT_EQ(err(bar_put(bar, kScratch0, 4, 1)), "EIO");
  EXPECT_TRUE(bar_get(io, 0, 4).ok()) << "I/O decode is still on";

  ASSERT_TRUE(cfg_put(cf, PCI_COMMAND, 2, cmd).ok());
  EXPECT_EQ(bget(bar, kIdReg, 4), kIdValue);
  EXPECT_EQ(power(kEp0), "D0\n");
  EXPECT_EQ(violations(kEp0), 0u);
}

// --- status [S3]

TEST_F(MediatorControlTest, StatusReflectsPowerStateAndCounters) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  ASSERT_TRUE(bar_get(bar, kIdReg, 4).ok());
  ASSERT_TRUE(bar_put(bar, kScratch0, 4, 1).ok());
  auto s = dev_status(kEp0);
  EXPECT_EQ(s["power_state"], "D0");
  EXPECT_EQ(s["counters"]["bar_reads"], 1);
  EXPECT_EQ(s["counters"]["bar_writes"], 1);
  EXPECT_EQ(s["counters"]["power_transitions"], 0);
  EXPECT_EQ(s["owner"], "pid=100 uid=0 view=default");
  int transitions = 0;
  for (const char* st : {"D3hot", "D3cold", "D0"}) {
    ASSERT_TRUE(set_power(kEp0, st).ok());
    s = dev_status(kEp0);
    EXPECT_EQ(s["power_state"], st);
    EXPECT_EQ(s["counters"]["power_transitions"], ++transitions);
    EXPECT_EQ(s["violations"], 0);
  }
  EXPECT_EQ(s["counters"]["quiesces"], 1) << "only leaving D0 quiesces";
  EXPECT_EQ(dev_status(kEp1)["power_state"], "D0") << "per device";
  EXPECT_EQ(bar_get(bar, kIdReg, 4).ok(), true);
}

// --- in-flight accesses finish before the device leaves D0 [S9]

TEST_F(MediatorControlTest, InFlightBarReadFinishesBeforePowerDown) {
  HandleId bar = must_open(kEp0, FileKind::kBar, 0, true);
  std::mutex mu;
  std::condition_variable cv;
  bool held = false, release = false;
  std::atomic<bool> first{true};
  fdev(kEp0).set_hook(OpClass::kBarRead, [&](OpClass) {
    if (!first.exchange(false)) return;
    std::unique_lock lock(mu);
    held = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  auto reader = std::async(std::launch::async, [&] { return bar_get(bar, kIdReg, 4); });
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return held; });
  }
  auto powerer = std::async(std::launch::async, [&] { return set_power(kEp0, "D3hot"); });
  // Wait until the quiesce has closed the gate: a new access is refused at once.
  HandleId probe = must_open(kEp0, FileKind::kBar, 0, false);
  while (bar_get(probe, kIdReg, 4).ok()) std::this_thread::yield();
  EXPECT_EQ(fdev(kEp0).calls(OpClass::kPower), 0u) << "the device waits for the access";
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD0);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  auto got = reader.get();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, kIdValue) << "the held read completed in D0";
  ASSERT_TRUE(powerer.get().ok());
  EXPECT_EQ(sim(kEp0).physical_power_state(), PowerState::kD3hot);
  fdev(kEp0).set_hook(OpClass::kBarRead, nullptr);
  EXPECT_EQ(violations(kEp0), 0u);
}

// Negative control for the test above: had the power-down not waited, the held
// read would have reached the device in D3hot, and the oracle counts that.
TEST_F(MediatorControlTest, OracleCountsABarAccessThatLandsInD3hot) {
  auto& dev = sim(kEp2);
  ASSERT_TRUE(dev.set_power_state(PowerState::kD3hot).ok());
  (void)dev.bar_read(0, kIdReg, 4);
  EXPECT_EQ(violations(kEp2), 1u);
}

}  // namespace
}  // namespace pcifs::test
