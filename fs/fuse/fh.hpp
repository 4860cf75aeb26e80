// fuse_file_info::fh for files the adapter serves itself (status, directory
// snapshots): it carries the address of a heap object the handle owns from
// open to release. Device files carry a Mediator HandleId instead.
#pragma once

#include <cstdint>
#include <memory>

#include "fuse/session.hpp"

namespace pcifs::fuse {

template <typename T>
T* fh_object(const fuse_file_info* fi) {
  return reinterpret_cast<T*>(fi->fh);  // NOLINT(performance-no-int-to-ptr): see above
}

// Opens with `obj` as the handle's object; the kernel sends release, which
// must delete it (fh_delete). An open the kernel gave up on gets no release.
template <typename T>
void fh_reply_open(fuse_req_t req, fuse_file_info* fi, std::unique_ptr<T> obj) {
  fi->fh = reinterpret_cast<uint64_t>(obj.get());
  if (fuse_reply_open(req, fi) == 0) static_cast<void>(obj.release());
}

template <typename T>
void fh_delete(const fuse_file_info* fi) {
  delete fh_object<T>(fi);
}

}  // namespace pcifs::fuse
