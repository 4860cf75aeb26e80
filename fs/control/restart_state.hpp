// RestartState: what a successor daemon needs to take the mounts over after
// a restart (README "Restarts"), kept in a memfd that the service manager's
// file-descriptor store holds across the restart (service_manager.hpp).
//
// The memfd is mapped MAP_SHARED and written in place, so every write is in
// the file the moment it is made: a daemon killed at any instruction leaves
// the table as it was, with at most the one slot it was writing marked
// `writing` (a reader skips it). No syscall per change, no fsync: the file
// lives in memory and must only outlive the process, not the machine.
//
// Layout (version 1; all integers native-endian, the successor is the same
// machine):
//   header      magic "PCIFSRS1", version, slot counts and sizes, the highest
//               handle id ever journaled (new ids start above it, so an id
//               the kernel still holds is never given to another handle)
//   view slots  per mounted view: its name and the kernel's INIT request
//               (the successor replays it into its own session: no INIT
//               comes from the kernel for a connection that already has one)
//   handle slots  per open handle: HandleRecord, plus `confirmed` (the open
//               reply reached the kernel). An unconfirmed handle may be an
//               orphan (the kernel resends an open whose reply it never got)
//               or real (the confirmation died with the daemon): it is taken
//               over unless it holds a claim, which an orphan would keep for
//               good (then the kernel's handle, if real, gets EBADF)
// A slot is free (0), being written (1) or valid (2); a valid slot's flags
// word (claim, DOE state) changes by one atomic store.
//
// Bounds: kViewSlots views, kHandleSlots handles. A handle or view past the
// bound is not journaled (logged once): it does not survive a restart (its
// handle then fails with EBADF; a view not journaled is mounted afresh).
//
// Thread-safe: every method. Handles are journaled by every open, confirm
// and release, so no daemon-wide lock is on that path: the handle slots are
// split into kHandleShards ranges, each with its own mutex, index and free
// list; a handle is indexed in the shard its id picks (spread as
// core::HandleTable spreads them) and takes a slot of that shard's range, or,
// when that range is used up, of the next shard's with one free. Views have
// one mutex (they change rarely). All of them are leaves of the lock order,
// and no method holds two.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pcifs/mediator.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::control {

class RestartState final : public HandleJournal {
 public:
  static constexpr uint32_t kViewSlots = 4096;
  static constexpr uint32_t kHandleSlots = 65536;
  static constexpr uint32_t kHandleShards = 16;
  static constexpr uint32_t kSlotsPerShard = kHandleSlots / kHandleShards;
  static constexpr size_t kMaxInit = 512;  // a FUSE INIT request is 64..104 bytes

  // A new, empty state in a new memfd.
  static std::unique_ptr<RestartState> create(std::string* error);
  // Takes over the memfd `fd` a previous daemon left (owned from now on).
  // Slots being written when it died and unconfirmed handles are dropped.
  static std::unique_ptr<RestartState> adopt(int fd, std::string* error);
  ~RestartState() override;
  RestartState(const RestartState&) = delete;
  RestartState& operator=(const RestartState&) = delete;

  int fd() const { return fd_; }

  // --- views
  // Records a mounted view (replaces a previous record of that name).
  void put_view(const std::string& name, const std::vector<uint8_t>& init) EXCLUDES(mu_);
  void drop_view(const std::string& name) EXCLUDES(mu_);
  // The INIT request recorded for `name`.
  std::optional<std::vector<uint8_t>> view_init(const std::string& name) const EXCLUDES(mu_);
  std::vector<std::string> views() const EXCLUDES(mu_);

  // --- handles (HandleJournal)
  void opened(const HandleRecord& r) noexcept override;
  void confirmed(HandleId id) noexcept override;
  void changed(HandleId id, bool claiming, bool doe_busy) noexcept override;
  void released(HandleId id) noexcept override;
  // Every valid, confirmed handle, by id.
  std::vector<HandleRecord> handles() const;
  // The first id a new handle may take.
  HandleId first_free_id() const;

 private:
  struct Header;
  struct ViewSlot;
  struct HandleSlot;
  RestartState(int fd, void* base) : fd_(fd), base_(static_cast<char*>(base)) {}
  static size_t total_size();
  static std::unique_ptr<RestartState> map(int fd, std::string* error);  // owns fd either way
  Header* header() const;
  ViewSlot* view_slot(uint32_t i) const;
  HandleSlot* handle_slot(uint32_t i) const;
  // Rebuilds the indexes below from the slots (`scan` false: all are free).
  void load(bool scan) EXCLUDES(mu_);
  std::vector<bool> written_pages() const;

  // One range of handle slots: the handles whose id picks it, and the free
  // slots of its range (slots [k * kSlotsPerShard, (k + 1) * kSlotsPerShard)).
  struct alignas(64) HandleShard {
    // lock order: leaf (fs/core/mediator_state.hpp)
    mutable Mutex mu{"RestartState::HandleShard::mu"};
    std::unordered_map<HandleId, uint32_t> index GUARDED_BY(mu);  // id -> slot (any range)
    std::vector<uint32_t> free GUARDED_BY(mu);                    // reserved: never allocates
  };
  static uint32_t shard_of(HandleId id) {
    return static_cast<uint32_t>((id ^ (id / 64)) % kHandleShards);
  }
  // A free slot, from shard `home`'s range or else the first other one with
  // one free; none when every slot is taken.
  std::optional<uint32_t> take_slot(uint32_t home);
  void free_slot(uint32_t slot);  // to its range's shard
  // Indexes `r` in its shard and writes its slot; false (nothing written)
  // when the index has no memory.
  bool write_handle(const HandleRecord& r, uint32_t slot) noexcept;

  const int fd_;
  char* const base_;
  mutable Mutex mu_{"RestartState::mu_"};  // views; lock order: leaf
  std::unordered_map<std::string, uint32_t> view_index_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_views_ GUARDED_BY(mu_);
  bool views_full_logged_ GUARDED_BY(mu_) = false;
  std::array<HandleShard, kHandleShards> shards_;
  std::atomic<bool> handles_full_logged_{false};
};

}  // namespace pcifs::control
