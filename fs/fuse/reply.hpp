// Replies: every request gets exactly one. A Reply guard answers EIO if a
// handler path forgot to (or threw); take() hands the request to code that
// replies later (DOE completions). The one place an Errno becomes a reply.
#pragma once

#include <spdlog/spdlog.h>

#include <exception>

#include "fuse/session.hpp"
#include "pcifs/result.hpp"

namespace pcifs::fuse {

class Reply {
 public:
  explicit Reply(fuse_req_t req) : req_(req) {}
  ~Reply() {
    if (req_) fuse_reply_err(req_, EIO);
  }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;

  fuse_req_t req() const { return req_; }
  // Hands the request over: the caller now owes it its reply.
  fuse_req_t take() {
    fuse_req_t r = req_;
    req_ = nullptr;
    return r;
  }
  void error(Errno e) { fuse_reply_err(take(), e.value()); }
  void ok() { fuse_reply_err(take(), 0); }

 private:
  fuse_req_t req_;
};

// Runs a handler body at a noexcept boundary: an exception is logged and the
// guard replies EIO; the daemon goes on.
template <typename F>
void guarded(const char* op, F&& body) noexcept {
  try {
    body();
  } catch (const std::exception& e) {
    try {
      spdlog::error("{}: {}", op, e.what());
    } catch (...) {
    }
  } catch (...) {
    try {
      spdlog::error("{}: unknown exception", op);
    } catch (...) {
    }
  }
}

}  // namespace pcifs::fuse
