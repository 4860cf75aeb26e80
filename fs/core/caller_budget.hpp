// A count of things callers make the daemon hold (open `status` snapshots,
// DOE exchanges queued or unread), bounded per caller key (a uid) and in
// total [S13: nothing a client sends may make the daemon grow without bound].
//
// take() hands out a Token; the share is given back when the last copy of
// the token is destroyed, wherever that happens (a close, a handle's end).
// Tokens may outlive the budget's owner. A limit of 0 means no limit.
// Thread-safe.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>

#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

class CallerBudget {
 public:
  using Token = std::shared_ptr<void>;

  // `over_caller` / `over_total`: the errno a caller gets at each bound.
  CallerBudget(size_t per_caller, size_t total, Errno over_caller, Errno over_total)
      : state_(std::make_shared<State>()),
        per_caller_(per_caller),
        total_(total),
        over_caller_(over_caller),
        over_total_(over_total) {}

  Result<Token> take(uid_t key) {
    State& s = *state_;
    {
      MutexLock lock(s.mu);
      if (total_ != 0 && s.total >= total_) return over_total_;
      size_t& mine = s.held[key];  // may throw: nothing counted yet
      if (per_caller_ != 0 && mine >= per_caller_) {
        if (mine == 0) s.held.erase(key);
        return over_caller_;
      }
      ++mine;
      ++s.total;
    }
    // If the token's own memory cannot be had, the constructor runs the
    // deleter: the share is given back before the throw leaves.
    return Token(static_cast<void*>(nullptr), Giver{state_, key});
  }

  size_t held(uid_t key) const {
    MutexLock lock(state_->mu);
    auto it = state_->held.find(key);
    return it == state_->held.end() ? 0 : it->second;
  }
  size_t total() const {
    MutexLock lock(state_->mu);
    return state_->total;
  }

 private:
  struct State {
    mutable Mutex mu{"CallerBudget::State::mu"};
    std::map<uid_t, size_t> held GUARDED_BY(mu);
    size_t total GUARDED_BY(mu) = 0;
  };
  struct Giver {
    std::shared_ptr<State> state;
    uid_t key;
    void operator()(void*) const noexcept {
      MutexLock lock(state->mu);
      auto it = state->held.find(key);
      if (it != state->held.end() && --it->second == 0) state->held.erase(it);
      --state->total;
    }
  };

  std::shared_ptr<State> state_;
  const size_t per_caller_;
  const size_t total_;
  const Errno over_caller_;
  const Errno over_total_;
};

}  // namespace pcifs::core
