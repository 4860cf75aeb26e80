// Mediator calls under allocation failure: whatever allocation of an open
// fails, no claim may outlive it (a claim with no handle is never released,
// and every other process gets EBUSY on the group for good).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <new>
#include <thread>

#include "fixtures/alloc_fail.hpp"
#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

class MediatorAllocTest : public MediatorFixture {
 protected:
  std::string owner() {
    HandleId o = must_open(kEp0, FileKind::kOwner);
    std::string t = text(o);
    med_->release(o);
    return t;
  }
  bool settled() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (owner() != "none\n") {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }
};

TEST_F(MediatorAllocTest, FailedBarOpenNeverLeavesItsClaim) {
  // A live process: a claim whose holder is gone may be taken back.
  const Caller me{::getpid(), 0, 0};
  int hits = 0;
  for (long n = 1; n < 10'000; ++n) {
    // A released claim is handed over before anyone claims again: wait for
    // that (bounded), or the open below would only get EAGAIN.
    ASSERT_TRUE(settled()) << "allocation " << n << ": " << owner();
    Result<HandleId> h = Errno(EIO);
    bool fired = false;
    {
      FailNthAllocation arm(n);
      try {
        h = open(kEp0, FileKind::kBar, 0, false, me);
      } catch (const std::bad_alloc&) {  // the FUSE guard's business: EIO
      }
      fired = arm.fired();
    }
    if (h) med_->release(*h);
    // Another process of another group member can claim now: nothing leaked.
    ASSERT_TRUE(settled()) << "allocation " << n << ": " << owner();
    auto other = open(kEp1, FileKind::kBar, 0, false, kRoot2);
    ASSERT_TRUE(other.ok()) << "allocation " << n
                            << " failed the open and left its claim: " << other.error().name();
    med_->release(*other);
    if (!fired) {
      EXPECT_TRUE(h.ok()) << h.error().name();
      break;
    }
    ++hits;
  }
  EXPECT_GE(hits, 3);
}

}  // namespace
}  // namespace pcifs::test
