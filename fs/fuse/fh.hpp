// fuse_file_info::fh for files the adapter serves itself (status, directory
// snapshots): a number naming a heap object, alive from open to release.
// Device files carry a Mediator HandleId instead.
//
// The number is never an address: after a restart (README "Restarts") the
// kernel still holds the fh values of the previous daemon and sends them, so
// every lookup goes through the table (an unknown fh is a handle opened
// before the restart: the caller rebuilds its object and adopt()s it), and
// each process numbers from its own random epoch (the high 32 bits), so a
// new handle never takes an fh an old one still has.
//
// The objects are owned by their view's FhObjects, not by the kernel's
// handle: a handle still open when the daemon stops never gets its release,
// and its object must not leak then (LeakSanitizer found it).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <unordered_map>

#include "fuse/reply.hpp"
#include "fuse/session.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

// The open objects of one view, keyed by their fh. Thread-safe.
class FhObjects {
 public:
  FhObjects() : epoch_(uint64_t{std::random_device{}()} << 32) {}

  template <typename T>
  uint64_t add(std::unique_ptr<T> obj) EXCLUDES(mu_) {
    std::shared_ptr<void> held(std::move(obj));  // keeps T's deleter
    MutexLock lock(mu_);
    uint64_t fh = 0;
    do {  // after 2^32 opens the numbers wrap: skip those still open
      fh = epoch_ | (next_++ & 0xffffffffu);
    } while (fh == 0 || !objects_.try_emplace(fh, held).second);
    return fh;
  }
  // The object of `fh`; null when this process did not open it.
  template <typename T>
  std::shared_ptr<T> get(uint64_t fh) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = objects_.find(fh);
    return it == objects_.end() ? nullptr : std::static_pointer_cast<T>(it->second);
  }
  // Keeps `obj` under an fh the kernel already holds (opened before a
  // restart), unless another request adopted one meanwhile.
  template <typename T>
  void adopt(uint64_t fh, std::shared_ptr<T> obj) EXCLUDES(mu_) {
    std::shared_ptr<void> held = std::const_pointer_cast<std::remove_const_t<T>>(obj);
    MutexLock lock(mu_);
    objects_.emplace(fh, std::move(held));
  }
  void remove(uint64_t fh) EXCLUDES(mu_) {
    std::shared_ptr<void> gone;  // freed after the lock is released
    MutexLock lock(mu_);
    auto it = objects_.find(fh);
    if (it == objects_.end()) return;
    gone = std::move(it->second);
    objects_.erase(it);
  }

 private:
  const uint64_t epoch_;
  Mutex mu_{"FhObjects::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  uint64_t next_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, std::shared_ptr<void>> objects_ GUARDED_BY(mu_);
};

// Opens with `obj` as the handle's object, registered in `objects`; the
// kernel's release removes it (fh_delete). An open the kernel gave up on gets
// no release: it is removed at once. The request is taken from its Reply
// guard only once nothing can throw any more: a failed registration (no
// memory) is answered EIO by the guard, never left unanswered.
template <typename T>
void fh_reply_open(Reply& r, fuse_file_info* fi, std::unique_ptr<T> obj, FhObjects& objects) {
  fi->fh = objects.add(std::move(obj));
  if (fuse_reply_open(r.take(), fi) != 0) objects.remove(fi->fh);
}

inline void fh_delete(const fuse_file_info* fi, FhObjects& objects) { objects.remove(fi->fh); }

}  // namespace pcifs::fuse
