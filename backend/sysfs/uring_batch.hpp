// Batched config reads over io_uring: many preads of sysfs `config` files
// submitted at once, so reading every device's config costs one or a few
// syscalls instead of one per device.
//
// UringBatch owns one ring. If io_uring_queue_init fails (old kernel, seccomp,
// io_uring_disabled) or the caller forces it, reads fall back to plain pread,
// one per item. run() is thread-safe: concurrent batches are serialised on the
// ring's mutex.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <span>
#include <vector>

#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::backend::sysfs {

// One pread: `out.size()` bytes from `fd` at `offset`; `result` is filled in:
// Ok, the syscall's errno, or EIO for a short read.
struct ReadOp {
  int fd = -1;
  uint64_t offset = 0;
  std::span<uint8_t> out;
  Result<void> result;
};

class UringBatch {
 public:
  // `entries`: ring size, the most reads in flight at once (chunk size).
  UringBatch(unsigned entries, bool force_fallback);
  ~UringBatch();
  UringBatch(const UringBatch&) = delete;
  UringBatch& operator=(const UringBatch&) = delete;

  // False if io_uring was never available, forced off, or the ring broke.
  bool using_uring() const EXCLUDES(mu_);
  void run(std::span<ReadOp> ops) EXCLUDES(mu_);

 private:
  void run_chunk(std::span<ReadOp> ops) REQUIRES(mu_);
  size_t submit_all(size_t queued) REQUIRES(mu_);
  static void run_plain(std::span<ReadOp> ops);

  mutable Mutex
      mu_;  // lock order: leaf, held across the ring's syscalls (fs/core/mediator_state.hpp)
  io_uring ring_ GUARDED_BY(mu_){};
  bool ring_ok_ GUARDED_BY(mu_) = false;
  const unsigned entries_;
};

}  // namespace pcifs::backend::sysfs
