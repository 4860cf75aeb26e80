// The Mediator's open handles by id (Mediator::Impl::handles).
//
// Every request looks its handle up here, so the table is split in shards,
// each with its own lock on its own cache line: requests on different
// handles (each reader opens its own) share no lock and no written line,
// and a lookup takes its shard's lock shared. Ids are given out in sequence
// (Impl::next_handle), so id % kShards spreads them evenly.
//
// Thread safety: every method from any thread. Lock order: a shard's lock is
// a leaf (nothing is taken under it; callers may hold Impl::handles_mu).
#pragma once

#include <array>
#include <memory>
#include <unordered_map>
#include <vector>

#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

struct Handle;

class HandleTable {
 public:
  std::shared_ptr<Handle> find(HandleId id) const {
    const Shard& s = shard(id);
    SharedLock lock(s.mu);
    auto it = s.map.find(id);
    return it == s.map.end() ? nullptr : it->second;
  }
  bool contains(HandleId id) const { return find(id) != nullptr; }
  // False (and nothing changed) when the id is taken. May throw (no memory).
  bool insert(HandleId id, std::shared_ptr<Handle> h) {
    Shard& s = shard(id);
    ExclusiveLock lock(s.mu);
    return s.map.emplace(id, std::move(h)).second;
  }
  // The handle taken out, or nullptr when there was none.
  std::shared_ptr<Handle> erase(HandleId id) {
    Shard& s = shard(id);
    ExclusiveLock lock(s.mu);
    auto it = s.map.find(id);
    if (it == s.map.end()) return nullptr;
    auto h = std::move(it->second);
    s.map.erase(it);
    return h;
  }
  // The handles `keep` says yes to, shard by shard (not one atomic picture:
  // a handle opened meanwhile may or may not be in it).
  template <typename Pred>
  std::vector<std::shared_ptr<Handle>> select(Pred keep) const {
    std::vector<std::shared_ptr<Handle>> out;
    for (const Shard& s : shards_) {
      SharedLock lock(s.mu);
      for (const auto& [id, h] : s.map) {
        if (keep(*h)) out.push_back(h);
      }
    }
    return out;
  }

 private:
  static constexpr size_t kShards = 64;
  struct alignas(64) Shard {
    mutable SharedMutex mu{"HandleTable::Shard::mu"};
    std::unordered_map<HandleId, std::shared_ptr<Handle>> map GUARDED_BY(mu);
  };
  Shard& shard(HandleId id) { return shards_[id % kShards]; }
  const Shard& shard(HandleId id) const { return shards_[id % kShards]; }
  std::array<Shard, kShards> shards_;
};

}  // namespace pcifs::core
