// HeldRequests: requests a view answers later from outside its loop, once
// something they need has happened (a listing that waits for a device's DOE
// Discovery: ops_tree.cpp after_discovery). Each is answered exactly once, by
// whoever takes it first: the completion, or end() as the view's Filesystem
// goes, while its session can still take a reply (libfuse frees a request only
// when it is answered, so one never answered would leak).
//
// Thread safety: every method from any thread. Lock order: mu_ is a leaf;
// replies are sent without it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <utility>

#include "fuse/session.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

class HeldRequests {
 public:
  // Holds `req`; nullopt once end() has run (the caller answers it).
  std::optional<uint64_t> hold(fuse_req_t req) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (ended_) return std::nullopt;
    held_.emplace(++next_, req);
    return next_;
  }
  // The request to answer now, or nullptr when it was answered already.
  fuse_req_t take(uint64_t id) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = held_.find(id);
    if (it == held_.end()) return nullptr;
    fuse_req_t req = it->second;
    held_.erase(it);
    return req;
  }
  // Answers every request still held with `err`; later holds are refused.
  void end(int err) EXCLUDES(mu_) {
    std::map<uint64_t, fuse_req_t> left;
    {
      MutexLock lock(mu_);
      ended_ = true;
      left.swap(held_);
    }
    for (auto& [id, req] : left) fuse_reply_err(req, err);
  }

 private:
  Mutex mu_{"HeldRequests::mu_"};
  std::map<uint64_t, fuse_req_t> held_ GUARDED_BY(mu_);
  uint64_t next_ GUARDED_BY(mu_) = 0;
  bool ended_ GUARDED_BY(mu_) = false;
};

}  // namespace pcifs::fuse
