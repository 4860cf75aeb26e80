// fuse_file_info::fh for files the adapter serves itself (status, directory
// snapshots): it carries the address of a heap object, alive from open to
// release. Device files carry a Mediator HandleId instead.
//
// The objects are owned by their view's FhObjects, not by the kernel's
// handle: a handle still open when the daemon stops never gets its release,
// and its object must not leak then (LeakSanitizer found it).
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>

#include "fuse/reply.hpp"
#include "fuse/session.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

// The open objects of one view, keyed by their fh. Thread-safe.
class FhObjects {
 public:
  template <typename T>
  uint64_t add(std::unique_ptr<T> obj) EXCLUDES(mu_) {
    const auto fh = reinterpret_cast<uint64_t>(obj.get());
    MutexLock lock(mu_);
    objects_.emplace(fh, std::shared_ptr<void>(std::move(obj)));  // keeps T's deleter
    return fh;
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
  Mutex mu_;  // lock order: leaf (fs/core/mediator_state.hpp)
  std::unordered_map<uint64_t, std::shared_ptr<void>> objects_ GUARDED_BY(mu_);
};

template <typename T>
T* fh_object(const fuse_file_info* fi) {
  return reinterpret_cast<T*>(fi->fh);  // NOLINT(performance-no-int-to-ptr): see above
}

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
