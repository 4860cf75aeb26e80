// ReplyGate: replies and notifications that threads outside the session's
// loop send into it (the DOE executor completing an exchange: a blocked
// read's reply, a poll's wake-up), kept off a session that is being destroyed.
//
// Such a completion can come at any time: when the exchange ends, or when the
// Mediator shuts its DOE executor down after every view is stopped. Each one
// runs its reply through run(); the view's Filesystem closes the gate as it
// is destroyed, after its own queues have drained and before its Session is
// destroyed. close() waits for a reply in progress to finish; later
// completions drop theirs (the unmount already ended their requests, and a
// daemon handing over to a successor leaves them to be resent).
//
// Thread safety: run() from any thread, concurrently; close() once, from the
// thread that destroys the view. Lock order: mu_ is taken before libfuse's
// own session locks (the reply takes them) and, for a reply that first lists
// a directory (ops_tree.cpp after_discovery), before the Mediator's and the
// tree's locks; it is never taken with one of ours held.
#pragma once

#include "pcifs/sync.hpp"

namespace pcifs::fuse {

class ReplyGate {
 public:
  // Runs `send` unless the gate is closed; false when it was not run.
  template <typename Send>
  bool run(Send&& send) EXCLUDES(mu_) {
    SharedLock lock(mu_);
    if (closed_) return false;
    send();
    return true;
  }
  void close() EXCLUDES(mu_) {
    ExclusiveLock lock(mu_);
    closed_ = true;
  }

 private:
  SharedMutex mu_{"ReplyGate::mu_"};
  bool closed_ GUARDED_BY(mu_) = false;
};

}  // namespace pcifs::fuse
