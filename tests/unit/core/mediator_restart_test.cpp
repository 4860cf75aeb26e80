// The Mediator's side of restarts (README "Restarts"): it journals its handle
// table as it changes, and a successor takes the handles over under the same
// ids, with their claims, and with a DOE exchange that died answering EIO.
#include <gtest/gtest.h>

#include <array>
#include <future>
#include <map>
#include <mutex>
#include <set>

#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

// The journal as a map: what a successor would find.
class MapJournal : public HandleJournal {
 public:
  void opened(const HandleRecord& r) noexcept override {
    std::lock_guard lock(mu);
    records[r.id] = r;
    confirmed_ids.erase(r.id);
  }
  void confirmed(HandleId id) noexcept override {
    std::lock_guard lock(mu);
    if (records.count(id)) confirmed_ids.insert(id);
  }
  void changed(HandleId id, bool claiming, bool doe_busy) noexcept override {
    std::lock_guard lock(mu);
    auto it = records.find(id);
    if (it == records.end()) return;
    it->second.claiming = claiming;
    it->second.doe_busy = doe_busy;
  }
  void released(HandleId id) noexcept override {
    std::lock_guard lock(mu);
    records.erase(id);
    confirmed_ids.erase(id);
  }
  HandleRecord at(HandleId id) {
    std::lock_guard lock(mu);
    return records.at(id);
  }
  std::mutex mu;
  std::map<HandleId, HandleRecord> records;
  std::set<HandleId> confirmed_ids;
};

class MediatorRestartTest : public MediatorFixture {
 protected:
  void SetUp() override {
    MediatorFixture::SetUp();
    med_->set_handle_journal(&journal_);
  }
  // A second daemon's Mediator over a fresh simulator (the old process's
  // device state died with it), with one view of the same name.
  std::unique_ptr<Mediator> successor(ViewId* view) {
    auto m = std::make_unique<Mediator>(backend::sim::make_default_backend(), MediatorOptions{});
    *view = m->add_view(ViewPolicy{});
    return m;
  }
  MapJournal journal_;
};

TEST_F(MediatorRestartTest, OpenClaimConfirmReleaseAreJournaled) {
  const HandleId cfg = must_open(kEp0, FileKind::kConfig);
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true);
  ASSERT_EQ(journal_.records.size(), 2u);
  EXPECT_FALSE(journal_.at(cfg).claiming);
  EXPECT_TRUE(journal_.at(bar).claiming);
  EXPECT_EQ(journal_.at(bar).ref.bdf, kEp2);
  EXPECT_EQ(journal_.at(bar).ref.kind, FileKind::kBar);
  EXPECT_EQ(journal_.at(bar).caller.pid, kRoot.pid);
  EXPECT_EQ(journal_.at(bar).view, med_->view(view_).name);
  EXPECT_TRUE(journal_.confirmed_ids.empty());  // the FUSE layer confirms
  med_->confirm_open(bar);
  EXPECT_EQ(journal_.confirmed_ids.count(bar), 1u);
  med_->release(bar);
  med_->release(cfg);
  EXPECT_TRUE(journal_.records.empty());
}

TEST_F(MediatorRestartTest, AClaimTakenOverStaysExclusiveUnderTheSameId) {
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true);
  const HandleRecord rec = journal_.at(bar);
  ViewId v = 0;
  auto next = successor(&v);
  ASSERT_TRUE(next->adopt_handle(v, rec));
  // Another process is refused: the claim came along.
  auto other = next->open(v, kRoot2, FileRef{kEp2, FileKind::kBar, 0, {}}, OpenFlags{true, true});
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error(), Errno(EBUSY));
  // The handle works under its old id; the id is not given out again.
  std::vector<uint8_t> buf(4);
  EXPECT_TRUE(next->read(bar, 0, buf));
  EXPECT_EQ(next->adopt_handle(v, rec).error(), Errno(EEXIST));
  auto fresh = next->open(v, kRoot, FileRef{kEp0, FileKind::kConfig, 0, {}}, OpenFlags{});
  ASSERT_TRUE(fresh);
  EXPECT_GT(*fresh, bar);
  // Its release ends the claim.
  next->release(bar);
  auto now = next->open(v, kRoot2, FileRef{kEp2, FileKind::kBar, 0, {}}, OpenFlags{true, true});
  EXPECT_TRUE(now) << (now ? "" : now.error().name());
}

TEST_F(MediatorRestartTest, NegativeControlWithoutTheClaimAnotherProcessGetsIt) {
  const HandleId bar = must_open(kEp2, FileKind::kBar, 0, true);
  HandleRecord rec = journal_.at(bar);
  rec.claiming = false;  // a journal that lost the claim
  ViewId v = 0;
  auto next = successor(&v);
  ASSERT_TRUE(next->adopt_handle(v, rec));
  EXPECT_TRUE(next->open(v, kRoot2, FileRef{kEp2, FileKind::kBar, 0, {}}, OpenFlags{true, true}));
}

TEST_F(MediatorRestartTest, ReserveHandleIdsSkipsTheOldOnes) {
  ViewId v = 0;
  auto next = successor(&v);
  next->reserve_handle_ids(1000);
  auto h = next->open(v, kRoot, FileRef{kEp0, FileKind::kConfig, 0, {}}, OpenFlags{});
  ASSERT_TRUE(h);
  EXPECT_GE(*h, 1000u);
}

// A handle whose device left while no daemon ran (hot-unplugged, or gone from
// the view) is taken over dead: ENODEV, as if it had been revoked at the
// removal, not EBADF; it stays journaled until the kernel releases it.
TEST_F(MediatorRestartTest, AHandleWhoseDeviceLeftIsTakenOverDead) {
  HandleRecord rec;
  rec.id = 7;
  rec.view = "v";
  rec.flags = OpenFlags{true, true};
  rec.ref = FileRef{*Bdf::parse("0000:77:00.0"), FileKind::kBar, 0, {}};
  rec.claiming = true;
  ViewId v = 0;
  auto next = successor(&v);
  MapJournal j2;
  next->set_handle_journal(&j2);
  ASSERT_TRUE(next->adopt_handle(v, rec));
  EXPECT_EQ(next->adopt_handle(v, rec).error(), Errno(EEXIST));
  std::array<uint8_t, 4> buf{};
  EXPECT_EQ(next->read(7, 0, buf).error(), Errno(ENODEV));
  EXPECT_EQ(next->write(7, 0, buf).error(), Errno(ENODEV));
  std::promise<Result<std::vector<uint8_t>>> p;
  next->doe_read(7, 4096, [&](Result<std::vector<uint8_t>> r) { p.set_value(std::move(r)); });
  EXPECT_EQ(p.get_future().get().error(), Errno(ENODEV));
  EXPECT_EQ(next->doe_poll(7, nullptr), 3u) << "ready: the next call tells why";
  // A new handle never reuses its id.
  auto fresh = next->open(v, kRoot, FileRef{kEp0, FileKind::kConfig, 0, {}}, OpenFlags{});
  ASSERT_TRUE(fresh);
  EXPECT_GT(*fresh, 7u);
  // Released: the journal forgets it and the id is an unknown handle (EBADF).
  j2.records[7] = rec;
  next->release(7);
  EXPECT_EQ(j2.records.count(7), 0u);
  EXPECT_EQ(next->read(7, 0, buf).error(), Errno(EBADF));
  // Negative control: an id that was never taken over is EBADF, not ENODEV.
  EXPECT_EQ(next->read(12345, 0, buf).error(), Errno(EBADF));
  // A view removed while no daemon ran: not taken over at all.
  next->remove_view(v);
  rec.id = 9;
  rec.ref.bdf = kEp0;
  EXPECT_EQ(next->adopt_handle(v, rec).error(), Errno(ENODEV));
  next->set_handle_journal(nullptr);
}

// A DOE exchange in flight when the daemon died: the journal says so, and the
// taken-over handle answers its next read (or a resent write) with EIO once.
TEST_F(MediatorRestartTest, ADoeExchangeThatDiedAnswersEioOnce) {
  const HandleId h = must_open(kEp0, FileKind::kDoe, 0, true);
  const std::vector<uint8_t> discovery = {1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0};
  ASSERT_TRUE(write(h, 0, discovery));
  EXPECT_TRUE(journal_.at(h).doe_busy);
  HandleRecord rec = journal_.at(h);
  // Read the response to its end: the journal sees the exchange over.
  std::promise<Result<std::vector<uint8_t>>> p1, p2;
  med_->doe_read(h, 4096, [&](Result<std::vector<uint8_t>> r) { p1.set_value(std::move(r)); });
  ASSERT_TRUE(p1.get_future().get());
  EXPECT_TRUE(journal_.at(h).doe_busy);  // the reply with the response may yet be lost
  med_->doe_read(h, 4096, [&](Result<std::vector<uint8_t>> r) { p2.set_value(std::move(r)); });
  ASSERT_TRUE(p2.get_future().get());  // end of file: now the exchange is over
  EXPECT_FALSE(journal_.at(h).doe_busy);

  ViewId v = 0;
  auto next = successor(&v);
  ASSERT_TRUE(next->adopt_handle(v, rec));  // the record from mid-exchange
  std::promise<Result<std::vector<uint8_t>>> p3;
  next->doe_read(h, 4096, [&](Result<std::vector<uint8_t>> r) { p3.set_value(std::move(r)); });
  auto r3 = p3.get_future().get();
  ASSERT_FALSE(r3);
  EXPECT_EQ(r3.error(), Errno(EIO));
  // Once: the handle is usable again.
  EXPECT_TRUE(next->write(h, 0, discovery));

  // A resent write finds the lost exchange: EIO, then the next one works.
  rec.id = 999;
  ASSERT_TRUE(next->adopt_handle(v, rec));
  EXPECT_EQ(next->write(999, 0, discovery).error(), Errno(EIO));
  EXPECT_TRUE(next->write(999, 0, discovery));
}

}  // namespace
}  // namespace pcifs::test
