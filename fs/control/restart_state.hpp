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
// Thread-safe: every method (one mutex, a leaf of the lock order).
#pragma once

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
  void opened(const HandleRecord& r) noexcept EXCLUDES(mu_) override;
  void confirmed(HandleId id) noexcept EXCLUDES(mu_) override;
  void changed(HandleId id, bool claiming, bool doe_busy) noexcept EXCLUDES(mu_) override;
  void released(HandleId id) noexcept EXCLUDES(mu_) override;
  // Every valid, confirmed handle, by id.
  std::vector<HandleRecord> handles() const EXCLUDES(mu_);
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

  const int fd_;
  char* const base_;
  mutable Mutex mu_{"RestartState::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  std::unordered_map<std::string, uint32_t> view_index_ GUARDED_BY(mu_);
  std::unordered_map<HandleId, uint32_t> handle_index_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_views_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_handles_ GUARDED_BY(mu_);
  bool full_logged_ GUARDED_BY(mu_) = false;
};

}  // namespace pcifs::control
