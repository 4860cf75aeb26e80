// The Mediator's open handles by id (Mediator::Impl::handles).
//
// Every request looks its handle up here, so the table is split in shards,
// each with its own lock on its own cache line: requests on different
// handles (each reader opens its own) share no lock and no written line,
// and a lookup takes its shard's lock shared. Ids come from one sequence per
// CPU slot (a counter on its own line; the id is that sequence times kShards
// plus the slot), so an open writes no counter that opens on other CPUs
// write; the shard of an id mixes both parts, so the handles one thread
// opens one after another spread over every shard (their readers, often on
// other CPUs, then share no shard lock).
//
// Thread safety: every method from any thread. Lock order: a shard's lock is
// a leaf (nothing is taken under it; callers may hold Impl::handles_mu).
#pragma once

#include <sched.h>

#include <array>
#include <atomic>
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
  // Puts `h` in the table under a new id, which `assign(id)` learns before
  // any other thread can find it; returns the id. May throw (no memory):
  // then nothing changed.
  template <typename Assign>
  HandleId insert_new(std::shared_ptr<Handle> h, Assign assign) {
    const int cpu = sched_getcpu();
    const size_t slot = static_cast<size_t>(cpu < 0 ? 0 : cpu) % kShards;
    for (;;) {
      const HandleId id =
          sources_[slot].next.fetch_add(1, std::memory_order_relaxed) * kShards + slot;
      Shard& s = shard(id);
      ExclusiveLock lock(s.mu);
      if (s.map.count(id) != 0) continue;  // an adopted handle's (adopted after ids_from)
      assign(id);
      s.map.emplace(id, std::move(h));
      return id;
    }
  }
  // Every id insert_new() gives out from now on is at least `first`.
  void ids_from(HandleId first) {
    const HandleId seq = (first + kShards - 1) / kShards;
    for (IdSource& src : sources_) {
      HandleId cur = src.next.load(std::memory_order_relaxed);
      while (cur < seq && !src.next.compare_exchange_weak(cur, seq)) {
      }
    }
  }
  // An adopted handle under its own id. False (and nothing changed) when the
  // id is taken. May throw (no memory).
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
  struct alignas(64) IdSource {
    std::atomic<HandleId> next{1};  // ids next * kShards + the slot (never 0)
  };
  // The slot and the sequence both pick the shard: consecutive ids of one
  // slot go to different shards.
  static size_t shard_of(HandleId id) { return (id ^ (id / kShards)) % kShards; }
  Shard& shard(HandleId id) { return shards_[shard_of(id)]; }
  const Shard& shard(HandleId id) const { return shards_[shard_of(id)]; }
  std::array<Shard, kShards> shards_;
  std::array<IdSource, kShards> sources_;
};

}  // namespace pcifs::core
