// What a client can make the daemon hold is bounded per uid and in total
// [S13]: open `status` snapshots (EMFILE / ENFILE) and DOE exchanges queued
// or unread (EAGAIN); a share comes back when the snapshot is dropped or the
// response is read to its end or the handle is released.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <vector>

#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

const Caller kOther{300, 2000, 2000};

// The errno of a result, 0 for success (so a missing bound fails cleanly).
template <typename T>
int err(const Result<T>& r) {
  return r ? 0 : r.error().value();
}

// A Discovery request (index 0) as the bytes a client writes.
std::vector<uint8_t> discovery() {
  const uint32_t dw[3] = {0x0001, 3, 0};  // PCI-SIG Discovery, 3 dwords, index 0
  std::vector<uint8_t> out(sizeof dw);
  std::memcpy(out.data(), dw, sizeof dw);
  return out;
}

class BoundsTest : public MediatorFixture {
 protected:
  void SetUp() override {}
  void start_with(size_t status_uid, size_t status_total, size_t doe_uid, size_t doe_total) {
    MediatorOptions o;
    o.status_opens_per_uid = status_uid;
    o.status_opens_total = status_total;
    o.doe_pending_per_uid = doe_uid;
    o.doe_pending_total = doe_total;
    start(o);
    med_->wait_for_discovery();
  }
  // Reads a DOE handle's response to its end (blocking read, bounded).
  Result<std::vector<uint8_t>> read_doe(HandleId h) {
    Mutex mu;
    CondVar cv;
    std::optional<Result<std::vector<uint8_t>>> got;
    med_->doe_read(h, 1 << 20, [&](Result<std::vector<uint8_t>> r) {
      MutexLock lock(mu);
      got.emplace(std::move(r));
      cv.notify_all();
    });
    MutexLock lock(mu);
    cv.wait_for(mu, std::chrono::seconds(20),
                [&]() NO_THREAD_SAFETY_ANALYSIS { return got.has_value(); });
    if (!got) return Errno(EDEADLK);
    return std::move(*got);
  }
};

TEST_F(BoundsTest, StatusOpensPerUidAndInTotal) {
  start_with(2, 3, 0, 0);
  std::vector<StatusSnapshot> held;
  for (int i = 0; i < 2; ++i) {
    auto s = med_->status_snapshot(view_, kUser);
    ASSERT_TRUE(s.ok()) << i;
    EXPECT_NE(s->text.find("devices"), std::string::npos);
    held.push_back(std::move(*s));
  }
  EXPECT_EQ(err(med_->status_snapshot(view_, kUser)), EMFILE);  // this uid's bound
  auto third = med_->status_snapshot(view_, kRoot);
  ASSERT_TRUE(third.ok());
  held.push_back(std::move(*third));
  EXPECT_EQ(err(med_->status_snapshot(view_, kOther)), ENFILE);  // everyone's bound
  held.erase(held.begin());                                      // a close gives its share back
  EXPECT_TRUE(med_->status_snapshot(view_, kOther).ok());
  EXPECT_TRUE(med_->status_snapshot(view_, kUser).ok());
}

TEST_F(BoundsTest, DoeExchangesPerUid) {
  start_with(0, 0, 2, 0);
  std::vector<HandleId> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(must_open(kEp0, FileKind::kDoe, 0, true, kUser));
  ASSERT_TRUE(write(hs[0], 0, discovery()).ok());
  ASSERT_TRUE(write(hs[1], 0, discovery()).ok());
  // Answered or not, an unread response still counts: the third waits.
  EXPECT_EQ(err(write(hs[2], 0, discovery())), EAGAIN);
  // Another uid has its own share.
  HandleId other = must_open(kEp0, FileKind::kDoe, 0, true, kOther);
  EXPECT_TRUE(write(other, 0, discovery()).ok());
  // Reading a response to its end gives the share back.
  auto r = read_doe(hs[0]);
  ASSERT_TRUE(r.ok()) << r.error().name();
  EXPECT_EQ(r->size(), 12u);
  EXPECT_TRUE(write(hs[2], 0, discovery()).ok());
  EXPECT_EQ(err(write(hs[3], 0, discovery())), EAGAIN);
  // So does releasing a handle with its exchange unread.
  med_->release(hs[1]);
  EXPECT_TRUE(write(hs[3], 0, discovery()).ok());
  for (HandleId h : {hs[0], hs[2], hs[3], other}) med_->release(h);
}

TEST_F(BoundsTest, DoeExchangesInTotal) {
  start_with(0, 0, 0, 2);
  HandleId a = must_open(kEp0, FileKind::kDoe, 0, true, kUser);
  HandleId b = must_open(kEp0, FileKind::kDoe, 0, true, kOther);
  HandleId c = must_open(kEp0, FileKind::kDoe, 0, true, kRoot);
  ASSERT_TRUE(write(a, 0, discovery()).ok());
  ASSERT_TRUE(write(b, 0, discovery()).ok());
  EXPECT_EQ(err(write(c, 0, discovery())), EAGAIN);
  ASSERT_TRUE(read_doe(b).ok());
  EXPECT_TRUE(write(c, 0, discovery()).ok());
  for (HandleId h : {a, b, c}) med_->release(h);
}

}  // namespace
}  // namespace pcifs::test
