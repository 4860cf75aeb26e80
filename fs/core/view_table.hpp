// The Mediator's views by id (Mediator::Impl::views), read on every request.
//
// A lookup, a getattr and an open each ask for their view's policy and
// whether it was removed, several times; under one daemon-wide mutex every
// request of every view would meet there (issue 13 §1). Here a reader takes
// no lock and writes nothing: a view is a record that never moves and lives
// as long as the table (a ViewId is never reused while a handle may name
// it), found through a two-level index of atomic pointers that only grows;
// `removed` is an atomic flag in the record. Adding and removing views (rare)
// are serialised by the table's own mutex.
//
// Ordering: remove() stores the flag with seq_cst, and removed() loads it
// with seq_cst, so that an open that publishes its handle and then looks at
// the flag, against a removal that sets the flag and then looks for handles,
// cannot both miss each other (Mediator::open, Mediator::remove_view).
//
// Capacity: kChunks * kChunkSize views over the table's life (1 048 576);
// add() throws std::length_error beyond it.
//
// Thread safety: every method from any thread. Lock order: mu_ is a leaf
// (Impl::views_mu in fs/core/mediator_state.hpp's order).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <vector>

#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

class ViewTable {
 public:
  ViewTable() = default;
  ~ViewTable() {
    for (auto& c : chunks_) delete[] c.load(std::memory_order_relaxed);
  }
  ViewTable(const ViewTable&) = delete;
  ViewTable& operator=(const ViewTable&) = delete;

  ViewId add(ViewPolicy policy) {
    MutexLock lock(mu_);
    const size_t id = records_.size();
    if (id >= kChunks * kChunkSize) throw std::length_error("too many views");
    auto& chunk = chunks_[id / kChunkSize];
    if (chunk.load(std::memory_order_relaxed) == nullptr) {
      chunk.store(new std::atomic<Record*>[kChunkSize](), std::memory_order_release);
    }
    auto r = std::make_unique<Record>();
    r->policy = std::move(policy);
    records_.push_back(std::move(r));  // may throw: nothing published yet
    chunk.load(std::memory_order_relaxed)[id % kChunkSize].store(records_.back().get(),
                                                                 std::memory_order_release);
    count_.store(id + 1, std::memory_order_release);
    return static_cast<ViewId>(id);
  }

  // The policy of a view ever added (removed or not); throws std::out_of_range
  // for an id never given out.
  const ViewPolicy& policy(ViewId id) const { return record(id).policy; }
  bool removed(ViewId id) const {
    const Record* r = find(id);
    return r != nullptr && r->removed.load(std::memory_order_seq_cst);
  }
  // The policy of a view that is live, or nullptr (removed, or never added).
  const ViewPolicy* live(ViewId id) const {
    const Record* r = find(id);
    return r == nullptr || r->removed.load(std::memory_order_seq_cst) ? nullptr : &r->policy;
  }
  // Marks the view removed; false when it was already, or never added.
  bool remove(ViewId id) {
    MutexLock lock(mu_);
    Record* r = find(id);
    if (r == nullptr || r->removed.load(std::memory_order_relaxed)) return false;
    r->removed.store(true, std::memory_order_seq_cst);
    return true;
  }
  // Copies of the live views' policies (for checks across views; rare).
  std::vector<ViewPolicy> live_policies() const {
    MutexLock lock(mu_);
    std::vector<ViewPolicy> out;
    for (const auto& r : records_) {
      if (!r->removed.load(std::memory_order_relaxed)) out.push_back(r->policy);
    }
    return out;
  }

 private:
  static constexpr size_t kChunkSize = 1024;
  static constexpr size_t kChunks = 1024;
  struct Record {
    ViewPolicy policy;
    std::atomic<bool> removed{false};
  };

  Record* find(ViewId id) const {
    if (id >= kChunks * kChunkSize || id >= count_.load(std::memory_order_acquire)) return nullptr;
    return chunks_[id / kChunkSize].load(std::memory_order_acquire)[id % kChunkSize].load(
        std::memory_order_acquire);
  }
  const Record& record(ViewId id) const {
    const Record* r = find(id);
    if (r == nullptr) throw std::out_of_range("no such view");
    return *r;
  }

  mutable Mutex mu_{"ViewTable::mu_"};
  std::vector<std::unique_ptr<Record>> records_ GUARDED_BY(mu_);  // owns them, in id order
  std::array<std::atomic<std::atomic<Record*>*>, kChunks> chunks_{};
  std::atomic<size_t> count_{0};  // ids below it are published
};

}  // namespace pcifs::core
