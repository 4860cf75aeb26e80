// Views at runtime through the Mediator [S16]: remove_view as S12's revoke
// (handles, claims, mappings, DOE), view_usage, the IOMMU-group rule for new
// views, device health and the event sink. Each revocation check has its
// control: the same access through a view that was not removed.
#include <linux/pci_regs.h>

#include <condition_variable>
#include <mutex>

#include "core/doe_object.hpp"
#include "fault/fault_backend.hpp"
#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

using Kind = MediatorEvent::Kind;

ViewPolicy view_of(const std::string& name, std::vector<Bdf> bdfs, std::optional<uid_t> uid = {}) {
  ViewPolicy v;
  v.name = name;
  std::vector<DeviceSelector> sel;
  for (const Bdf& b : bdfs) {
    DeviceSelector s;
    s.kind = DeviceSelector::Kind::kBdf;
    s.bdf = b;
    sel.push_back(s);
  }
  v.devices = sel;
  if (uid) {
    v.uid = *uid;
    v.gid = *uid;
    v.has_uid = true;
  }
  return v;
}

class MediatorViewsTest : public MediatorFixture {
 protected:
  void record_events() {
    med_->set_event_sink([this](const MediatorEvent& e) {
      std::lock_guard lock(events_mu_);
      events_.push_back(e);
    });
  }
  std::vector<MediatorEvent> events() {
    std::lock_guard lock(events_mu_);
    return events_;
  }
  HandleId remove_handle(const Bdf& b) {
    auto h = med_->open(view_, kRoot, FileRef{b, FileKind::kRemove, 0, {}}, {false, true, false});
    EXPECT_TRUE(h.ok());
    return h.ok() ? *h : 0;
  }
  std::mutex events_mu_;
  std::vector<MediatorEvent> events_;
};

TEST_F(MediatorViewsTest, RemovedViewsHandlesAreDeadAndOtherViewsAreNot) {
  const ViewId a = med_->add_view(view_of("a", {kEp0, kEp2}));
  const ViewId b = med_->add_view(view_of("b", {kEp0, kEp2}));
  const HandleId ha = must_open(kEp0, FileKind::kConfig, 0, false, kRoot, a);
  const HandleId hb = must_open(kEp0, FileKind::kConfig, 0, false, kRoot, b);
  ASSERT_TRUE(read(ha, 0, 4).ok());
  med_->remove_view(a);
  EXPECT_TRUE(med_->view_removed(a));
  EXPECT_FALSE(med_->view_removed(b));
  EXPECT_EQ(read(ha, 0, 4).error(), Errno(ENODEV));
  EXPECT_EQ(write(ha, PCI_COMMAND, {0, 0}).error(), Errno(ENODEV));
  EXPECT_TRUE(read(hb, 0, 4).ok()) << "the other view's handle is untouched";
  EXPECT_EQ(open(kEp0, FileKind::kConfig, 0, false, kRoot, a).error(), Errno(ENODEV));
  EXPECT_TRUE(med_->devices(a).empty());
  EXPECT_EQ(med_->devices(b).size(), 2u);
  med_->remove_view(a);  // idempotent
  med_->release(ha);     // the kernel's release still comes, and finds its handle
  med_->release(hb);
}

TEST_F(MediatorViewsTest, RemoveViewEndsItsClaimsAndInvalidatesItsMappings) {
  const ViewId a = med_->add_view(view_of("a", {kEp2}));
  const ViewId b = med_->add_view(view_of("b", {kEp2}));
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true, kRoot, a);
  ASSERT_TRUE(bar_get(bar, kScratch0, 4).ok());
  EXPECT_EQ(open(kEp2, FileKind::kBar, 0, true, kRoot2, b).error(), Errno(EBUSY)) << "control";
  auto usage = med_->view_usage(a);
  EXPECT_EQ(usage.open_handles, 1u);
  ASSERT_EQ(usage.claims.size(), 1u);
  EXPECT_EQ(usage.claims[0].bdf, kEp2);
  EXPECT_EQ(usage.claims[0].pid, kRoot.pid);
  sink_.invalidations.clear();

  med_->remove_view(a);
  med_->drain_handovers();  // its hand-over also invalidates, from the worker thread
  EXPECT_THAT(sink_.invalidations, ::testing::Contains(kEp2));
  EXPECT_EQ(bar_get(bar, kScratch0, 4).error(), Errno(ENODEV)) << "a mapping's fault reads this";
  EXPECT_EQ(med_->view_usage(a).open_handles, 0u);
  const HandleId other = must_open(kEp2, FileKind::kBar, 0, true, kRoot2, b);
  EXPECT_EQ(med_->view_usage(b).claims.size(), 1u);
  med_->release(bar);  // a late release of the revoked handle must not end b's claim
  EXPECT_EQ(open(kEp2, FileKind::kBar, 0, true, kRoot, b).error(), Errno(EBUSY));
  med_->release(other);
}

// A DOE read waiting on an exchange that never completes (mailbox 1 of
// 02:00.0 does not respond) ends with ENODEV when its view goes, not with
// ETIMEDOUT a timeout later.
TEST_F(MediatorViewsTest, RemoveViewCancelsItsDoeExchanges) {
  MediatorOptions o;
  med_.reset();
  sim_ = backend::sim::make_default_backend();
  sim_raw_ = sim_.get();
  o.doe_timeout = std::chrono::seconds(60);
  med_ = std::make_unique<Mediator>(sim_, o);
  med_->set_revocation_sink(&sink_);
  const ViewId a = med_->add_view(view_of("a", {kEp2}));
  const HandleId doe = must_open(kEp2, FileKind::kDoe, 1, true, kRoot, a);
  const backend::DoeFeature echo{0x1b36, 0x01};
  auto [dw0, dw1] = core::doe_header(echo, 3);
  std::vector<uint8_t> req;
  for (const uint32_t dw : std::vector<uint32_t>{dw0, dw1, 7u}) {
    for (unsigned i = 0; i < 4; ++i) req.push_back(static_cast<uint8_t>(dw >> (8 * i)));
  }
  ASSERT_TRUE(med_->write(doe, 0, req).ok());
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<std::vector<uint8_t>>> got;
  med_->doe_read(doe, 4096, [&](Result<std::vector<uint8_t>> r) {
    std::lock_guard lock(mu);
    got = std::move(r);
    cv.notify_all();
  });
  {
    std::lock_guard lock(mu);
    EXPECT_FALSE(got.has_value()) << "control: the exchange is still in flight";
  }
  med_->remove_view(a);
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error(), Errno(ENODEV));
  lock.unlock();
  med_->release(doe);
}

TEST_F(MediatorViewsTest, AnIommuGroupIsNotSplitBetweenUids) {
  med_->remove_view(view_);  // the fixture's default view (root, every device)
  const ViewId a = med_->add_view(view_of("a", {kEp0}, 1000));
  auto why = med_->group_conflict(view_of("b", {kEp1}, 2000));
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("group:2"), std::string::npos) << *why;
  EXPECT_NE(why->find("view a"), std::string::npos) << *why;
  EXPECT_NE(why->find(kEp0.str()), std::string::npos) << *why;
  // The same device by another uid is the same group.
  EXPECT_TRUE(med_->group_conflict(view_of("b", {kEp0}, 2000)).has_value());
  // Controls: the same uid; another group; a bridge; an explicit share.
  EXPECT_FALSE(med_->group_conflict(view_of("b", {kEp1}, 1000)).has_value());
  EXPECT_FALSE(med_->group_conflict(view_of("b", {kEp2}, 2000)).has_value());
  EXPECT_FALSE(med_->group_conflict(view_of("b", {kRootPort1}, 2000)).has_value());
  auto shared = view_of("b", {kEp1}, 2000);
  shared.share_iommu_group = true;
  EXPECT_FALSE(med_->group_conflict(shared).has_value());
  // A removed view conflicts with nobody.
  med_->remove_view(a);
  EXPECT_FALSE(med_->group_conflict(view_of("b", {kEp1}, 2000)).has_value());
}

TEST_F(MediatorViewsTest, HealthFollowsPowerAndRemoval) {
  EXPECT_EQ(med_->health(kEp0), "ok");
  const HandleId p = must_open(kEp0, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(p, "D3hot").ok());
  EXPECT_EQ(med_->health(kEp0), "low-power");
  ASSERT_TRUE(write_text(p, "D0").ok());
  EXPECT_EQ(med_->health(kEp0), "ok");
  med_->release(p);
  const HandleId r = remove_handle(kEp1);
  ASSERT_TRUE(write_text(r, "1").ok());
  med_->release(r);
  EXPECT_EQ(med_->health(kEp1), "removed");
  const auto all = med_->health_all();
  EXPECT_EQ(all.size(), 5u);
  for (const auto& [bdf, h] : all) EXPECT_NE(bdf, kEp1);
}

// A device whose config does not answer (all-ones, or a failed read) is
// unresponsive; the same device answering again is ok (the control).
TEST_F(MediatorViewsTest, HealthSaysUnresponsiveWhenConfigDoesNotAnswer) {
  med_.reset();
  auto fault = std::make_shared<backend::fault::FaultBackend>(backend::sim::make_default_backend());
  med_ = std::make_unique<Mediator>(fault, MediatorOptions{});
  EXPECT_EQ(med_->health(kEp0), "ok");
  fault->device(kEp0)->set_fault(backend::fault::OpClass::kConfigRead,
                                 backend::fault::Fault::always());
  EXPECT_EQ(med_->health(kEp0), "unresponsive");
  EXPECT_EQ(med_->health(kEp1), "ok");
  fault->device(kEp0)->clear_all_faults();
  EXPECT_EQ(med_->health(kEp0), "ok");
}

// A DOE mailbox whose Abort never clears Busy is dead [S8]: doe-dead.
TEST_F(MediatorViewsTest, HealthSaysDoeDeadForAStuckMailbox) {
  std::string error;
  auto b = backend::sim::load_backend_json(R"({"devices": [
      {"bdf": "0000:05:00.0", "vendor": "0x1b36", "device": "0x10f0", "class": "0x120000",
       "config_size": 4096, "capabilities": {"pcie": {"port": "endpoint"},
       "doe": [{"fault": "stuck_busy"}]}},
      {"bdf": "0000:06:00.0", "vendor": "0x1b36", "device": "0x10f0", "class": "0x120000",
       "config_size": 4096, "capabilities": {"pcie": {"port": "endpoint"}, "doe": [{}]}}]})",
                                           &error);
  ASSERT_TRUE(b.ok()) << error;
  med_.reset();
  MediatorOptions o;
  o.doe_timeout = std::chrono::milliseconds(50);
  med_ = std::make_unique<Mediator>(std::shared_ptr<backend::Backend>(std::move(*b)), o);
  med_->wait_for_discovery();  // Discovery finds the stuck mailbox and gives up on it
  EXPECT_EQ(med_->health(*Bdf::parse("0000:05:00.0")), "doe-dead");
  EXPECT_EQ(med_->health(*Bdf::parse("0000:06:00.0")), "ok");
}

TEST_F(MediatorViewsTest, EventsTellClaimsPowerAndDepartures) {
  record_events();
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true);
  const HandleId bar2 = must_open(kEp2, FileKind::kBar, 0, true);  // same process: one claim
  med_->release(bar);
  med_->release(bar2);
  med_->drain_handovers();
  const HandleId p = must_open(kEp0, FileKind::kPowerState, 0, true);
  ASSERT_TRUE(write_text(p, "D3hot").ok());
  med_->release(p);
  med_->drain_handovers();
  const HandleId r = remove_handle(kEp1);
  ASSERT_TRUE(write_text(r, "1").ok());
  med_->release(r);
  std::vector<std::string> seen;
  size_t handed_over = 0;
  for (const auto& e : events()) {
    if (e.kind == Kind::kHandedOver) {  // one per device of each ended claim's group
      ++handed_over;
      continue;
    }
    seen.push_back(std::string(e.kind == Kind::kClaimTaken      ? "taken "
                               : e.kind == Kind::kClaimReleased ? "released "
                               : e.kind == Kind::kPower         ? "power " + e.detail + " "
                               : e.kind == Kind::kDeviceLeft    ? "left "
                                                                : "arrived ") +
                   e.bdf.str());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"taken 0000:02:00.0", "released 0000:02:00.0",
                                            "taken 0000:01:00.0", "power D3hot 0000:01:00.0",
                                            "released 0000:01:00.0", "left 0000:01:00.1"}));
  EXPECT_EQ(handed_over, 3u) << "02:00.0, then 01:00.0 and 01:00.1";
  const auto evs = events();
  ASSERT_FALSE(evs.empty());
  EXPECT_EQ(evs[0].pid, kRoot.pid);
  EXPECT_EQ(evs[0].detail, "group:3");
  med_->set_event_sink(nullptr);
  med_->drain_handovers();
  const HandleId again = must_open(kEp2, FileKind::kBar, 0, true);
  med_->release(again);
  EXPECT_EQ(events().size(), evs.size()) << "no sink, no events";
}

}  // namespace
}  // namespace pcifs::test
