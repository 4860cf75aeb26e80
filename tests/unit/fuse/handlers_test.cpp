// The FUSE handlers are noexcept boundaries: whatever fails inside one (here:
// every allocation in turn) must end in exactly one reply, never in
// std::terminate, and must free what the kernel handed over (poll handles).
//
// No mount: this binary stands in for libfuse's request and reply functions
// (its definitions take precedence over the shared library's), so a handler
// runs against a fake request on a real Filesystem over the simulator.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "fixtures/alloc_fail.hpp"
#include "fuse/filesystem.hpp"
#include "fuse/inode.hpp"
#include "sim/sim_backend.hpp"

namespace {

// A request as the stubs below see it. Nothing in here allocates: the stubs
// run while an allocation failure is armed.
struct FakeReq {
  pcifs::fuse::Filesystem* fs = nullptr;
  fuse_ctx ctx{};
  int replies = 0;
  int err = -1;  // the errno of a fuse_reply_err, -1 if none
  bool polled = false;
  unsigned poll_events = 0;
  bool opened = false;
  uint64_t fh = 0;
};

FakeReq& fake(fuse_req_t req) { return *reinterpret_cast<FakeReq*>(req); }
fuse_req_t as_req(FakeReq& r) { return reinterpret_cast<fuse_req_t>(&r); }

// Poll handles are addresses in this array; the stubs count their destruction.
constexpr int kPollHandles = 8;
char g_poll_slots[kPollHandles];
int g_poll_destroyed[kPollHandles];
fuse_pollhandle* poll_handle(int i) { return reinterpret_cast<fuse_pollhandle*>(&g_poll_slots[i]); }
int slot_of(fuse_pollhandle* ph) {
  return static_cast<int>(reinterpret_cast<char*>(ph) - g_poll_slots);
}

}  // namespace

// --- libfuse, as far as the handlers under test reach it
void* fuse_req_userdata(fuse_req_t req) { return fake(req).fs; }
const struct fuse_ctx* fuse_req_ctx(fuse_req_t req) { return &fake(req).ctx; }
int fuse_reply_err(fuse_req_t req, int err) {
  ++fake(req).replies;
  fake(req).err = err;
  return 0;
}
int fuse_reply_poll(fuse_req_t req, unsigned revents) {
  ++fake(req).replies;
  fake(req).polled = true;
  fake(req).poll_events = revents;
  return 0;
}
int fuse_reply_open(fuse_req_t req, const struct fuse_file_info* fi) {
  ++fake(req).replies;
  fake(req).opened = true;
  fake(req).fh = fi->fh;
  return 0;
}
void fuse_pollhandle_destroy(struct fuse_pollhandle* ph) { ++g_poll_destroyed[slot_of(ph)]; }
int fuse_lowlevel_notify_poll(struct fuse_pollhandle*) { return 0; }

namespace pcifs::fuse {
namespace {

const Bdf kEp0 = *Bdf::parse("0000:01:00.0");  // has a DOE mailbox

class HandlersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    med_ = std::make_unique<Mediator>(backend::sim::make_default_backend());
    view_ = med_->add_view(ViewPolicy{});
    fs_ = std::make_unique<Filesystem>(*med_, view_, drivers_);
    for (int& d : g_poll_destroyed) d = 0;
  }
  FakeReq request() {
    FakeReq r;
    r.fs = fs_.get();
    r.ctx.pid = ::getpid();
    r.ctx.uid = ::geteuid();
    r.ctx.gid = ::getegid();
    return r;
  }

  DriverNames drivers_;
  std::unique_ptr<Mediator> med_;
  ViewId view_ = 0;
  std::unique_ptr<Filesystem> fs_;
};

// Fails the 1st, 2nd, ... allocation of `call` until one run makes no failing
// allocation; `check` runs after each. Returns how many runs hit a failure.
template <typename Call, typename Check>
int fail_each_allocation(Call call, Check check) {
  int hits = 0;
  for (long n = 1; n < 10'000; ++n) {
    bool fired = false;
    {
      test::FailNthAllocation arm(n);
      call();
      fired = arm.fired();
    }
    check(n, fired);
    if (!fired) return hits;
    ++hits;
  }
  ADD_FAILURE() << "the call never ran without a failing allocation";
  return hits;
}

TEST_F(HandlersTest, PollOnPlainFileAnswersOnceAndFreesHandleWhenAllocationFails) {
  const fuse_ino_t ino = encode(NodeId{Node::kStatus, {}, 0});
  FakeReq req;
  fuse_file_info fi{};
  const int hits = fail_each_allocation(
      [&] {
        req = request();
        g_poll_destroyed[0] = 0;
        op_poll(as_req(req), ino, &fi, poll_handle(0));
      },
      [&](long n, bool fired) {
        EXPECT_EQ(req.replies, 1) << "allocation " << n;
        EXPECT_EQ(g_poll_destroyed[0], 1) << "allocation " << n;
        if (fired) {
          EXPECT_EQ(req.err, EIO) << "allocation " << n;
        } else {
          EXPECT_TRUE(req.polled);
          EXPECT_EQ(req.poll_events, unsigned{POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM});
        }
      });
  EXPECT_GE(hits, 1);  // the poll handle's owner is allocated
}

TEST_F(HandlersTest, PollOnDoeAnswersOnceAndFreesHandleWhenAllocationFails) {
  auto h = med_->open(view_, Caller{::getpid(), ::geteuid(), ::getegid()},
                      FileRef{kEp0, FileKind::kDoe, 0, {}}, OpenFlags{true, true, false});
  ASSERT_TRUE(h.ok()) << h.error().name();
  const fuse_ino_t ino = encode(NodeId::device_file(kEp0, FileKind::kDoe, 0));
  fuse_file_info fi{};
  fi.fh = *h;
  FakeReq req;
  const int hits = fail_each_allocation(
      [&] {
        req = request();
        g_poll_destroyed[1] = 0;
        op_poll(as_req(req), ino, &fi, poll_handle(1));
      },
      [&](long n, bool fired) {
        EXPECT_EQ(req.replies, 1) << "allocation " << n;
        // Idle: nothing in flight, so the Mediator keeps no wake-up.
        EXPECT_EQ(g_poll_destroyed[1], 1) << "allocation " << n;
        if (fired) {
          EXPECT_EQ(req.err, EIO) << "allocation " << n;
        } else {
          EXPECT_TRUE(req.polled);
          EXPECT_EQ(req.poll_events, unsigned{POLLOUT | POLLWRNORM});
        }
      });
  EXPECT_GE(hits, 2);  // the handle's owner and the wake-up
  med_->release(*h);
}

TEST_F(HandlersTest, PollOnDeadViewFreesHandle) {
  fs_->kill();
  FakeReq req = request();
  fuse_file_info fi{};
  op_poll(as_req(req), encode(NodeId{Node::kStatus, {}, 0}), &fi, poll_handle(2));
  EXPECT_EQ(req.replies, 1);
  EXPECT_EQ(req.err, ENODEV);
  EXPECT_EQ(g_poll_destroyed[2], 1);
}

// An open that cannot register its snapshot is answered (EIO), not dropped:
// the request must not leave its guard before the last thing that can throw.
// `first` is the first allocation to fail (1: every one in turn).
void open_answers_once(Filesystem* fs, fuse_ino_t ino,
                       void (*op)(fuse_req_t, fuse_ino_t, fuse_file_info*) noexcept,
                       void (*release)(fuse_req_t, fuse_ino_t, fuse_file_info*) noexcept,
                       long first) {
  auto make = [fs] {
    FakeReq r;
    r.fs = fs;
    r.ctx.uid = ::geteuid();
    return r;
  };
  FakeReq req;
  fuse_file_info fi{};
  int hits = 0;
  for (long n = first; n < first + 10'000; ++n) {
    bool fired = false;
    req = make();
    fi = fuse_file_info{};
    fi.flags = O_RDONLY;
    {
      test::FailNthAllocation arm(n);
      op(as_req(req), ino, &fi);
      fired = arm.fired();
    }
    EXPECT_EQ(req.replies, 1) << "allocation " << n;
    if (req.opened) {  // a failure absorbed, or none
      FakeReq rel = make();
      fuse_file_info done{};
      done.fh = req.fh;
      release(as_req(rel), ino, &done);
      EXPECT_EQ(rel.err, 0);
    } else {
      EXPECT_EQ(req.err, EIO) << "allocation " << n;
    }
    if (!fired) break;
    ++hits;
  }
  EXPECT_GE(hits, 1);
}

TEST_F(HandlersTest, OpendirAnswersOnceWhenAnyAllocationFails) {
  open_answers_once(fs_.get(), encode(NodeId{Node::kRoot, {}, 0}), op_opendir, op_releasedir, 1);
}

// Only the allocations after the text is made: nlohmann::json's destructor
// itself allocates (json_value::destroy), so a failure inside status_json can
// end in std::terminate whatever the handler does (see the report).
TEST_F(HandlersTest, OpenStatusAnswersOnceWhenRegisteringFails) {
  const fuse_ino_t ino = encode(NodeId{Node::kStatus, {}, 0});
  FakeReq req = request();
  fuse_file_info fi{};
  fi.flags = O_RDONLY;
  const long before = test::allocations_made();
  op_open(as_req(req), ino, &fi);
  const long used = test::allocations_made() - before;
  ASSERT_TRUE(req.opened);
  FakeReq rel = request();
  op_release(as_req(rel), ino, &fi);
  // The text's own string, the handle's shared owner and its table entry.
  open_answers_once(fs_.get(), ino, op_open, op_release, used - 2);
}

// The bound on open `status` snapshots reaches the caller through FUSE:
// EMFILE past this uid's share (MediatorOptions' default), and a close gives
// the share back.
TEST_F(HandlersTest, StatusOpensPastTheUidBoundGetEmfile) {
  const fuse_ino_t ino = encode(NodeId{Node::kStatus, {}, 0});
  const size_t bound = MediatorOptions{}.status_opens_per_uid;
  std::vector<uint64_t> open_fhs;
  for (size_t i = 0; i < bound; ++i) {
    FakeReq req = request();
    fuse_file_info fi{};
    fi.flags = O_RDONLY;
    op_open(as_req(req), ino, &fi);
    ASSERT_TRUE(req.opened) << i << ": " << req.err;
    open_fhs.push_back(req.fh);
  }
  FakeReq over = request();
  fuse_file_info fi{};
  fi.flags = O_RDONLY;
  op_open(as_req(over), ino, &fi);
  EXPECT_EQ(over.err, EMFILE);
  EXPECT_FALSE(over.opened);
  for (uint64_t fh : open_fhs) {
    FakeReq rel = request();
    fuse_file_info done{};
    done.fh = fh;
    op_release(as_req(rel), ino, &done);
  }
  FakeReq again = request();
  op_open(as_req(again), ino, &fi);
  EXPECT_TRUE(again.opened);
  fuse_file_info last{};
  last.fh = again.fh;
  FakeReq rel = request();
  op_release(as_req(rel), ino, &last);
}

}  // namespace
}  // namespace pcifs::fuse
