// Small POSIX helpers for the sysfs backend: an owning file descriptor and the
// mapping from a failed syscall's errno to an Errno.
//
// UniqueFd owns one descriptor and closes it on destruction; it is move-only and
// not synchronised (its owner guards it). errno_from() is thread-safe.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <utility>

#include "pcifs/result.hpp"

namespace pcifs::backend::sysfs {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// The Errno for a syscall that just failed with `e`. A removed sysfs node
// answers ENOENT (path lookups) or ENODEV (open files); both mean the device
// is gone. errno 0 (should not happen) becomes EIO so an Errno is always valid.
inline Errno errno_from(int e) {
  if (e == ENOENT || e == ENODEV) return Errno(ENODEV);
  return Errno(e > 0 ? e : EIO);
}

}  // namespace pcifs::backend::sysfs
