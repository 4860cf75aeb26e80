#include "sysfs/uring_batch.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace pcifs::backend::sysfs {
namespace {

Result<void> from_count(int64_t n, size_t want) {
  if (n < 0) {
    int e = static_cast<int>(-n);
    return Errno(e == ENOENT ? ENODEV : e);
  }
  if (static_cast<size_t>(n) != want) return Errno(EIO);
  return Ok();
}

}  // namespace

UringBatch::UringBatch(unsigned entries, bool force_fallback) : entries_(std::max(1u, entries)) {
  MutexLock lock(mu_);
  if (force_fallback) return;
  ring_ok_ = io_uring_queue_init(entries_, &ring_, 0) == 0;
}

UringBatch::~UringBatch() {
  MutexLock lock(mu_);
  if (ring_ok_) io_uring_queue_exit(&ring_);
}

void UringBatch::run_plain(std::span<ReadOp> ops) {
  for (auto& op : ops) {
    ssize_t n;
    do {
      n = ::pread(op.fd, op.out.data(), op.out.size(), static_cast<off_t>(op.offset));
    } while (n < 0 && errno == EINTR);
    op.result = from_count(n < 0 ? -errno : n, op.out.size());
  }
}

bool UringBatch::using_uring() const {
  MutexLock lock(mu_);
  return ring_ok_;
}

void UringBatch::run(std::span<ReadOp> ops) {
  MutexLock lock(mu_);
  for (size_t i = 0; i < ops.size(); i += entries_) {
    auto chunk = ops.subspan(i, std::min<size_t>(entries_, ops.size() - i));
    if (ring_ok_) {
      run_chunk(chunk);
    } else {
      run_plain(chunk);
    }
  }
}

size_t UringBatch::submit_all(size_t queued) {
  size_t submitted = 0;
  while (submitted < queued) {
    int n = io_uring_submit(&ring_);
    if (n == -EINTR) continue;
    if (n <= 0) break;
    submitted += static_cast<size_t>(n);
  }
  return submitted;
}

void UringBatch::run_chunk(std::span<ReadOp> ops) {
  size_t queued = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) break;  // cannot happen: a chunk is at most the ring size
    io_uring_prep_read(sqe, ops[i].fd, ops[i].out.data(), static_cast<unsigned>(ops[i].out.size()),
                       ops[i].offset);
    io_uring_sqe_set_data64(sqe, i);
    ++queued;
  }
  size_t submitted = submit_all(queued);
  std::vector<bool> done(ops.size(), false);
  for (size_t seen = 0; seen < submitted;) {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) break;
    uint64_t i = io_uring_cqe_get_data64(cqe);
    if (i < ops.size()) {
      ops[i].result = from_count(cqe->res, ops[i].out.size());
      done[i] = true;
    }
    io_uring_cqe_seen(&ring_, cqe);
    ++seen;
  }
  if (submitted == queued && queued == ops.size()) return;
  // The ring refused work: SQEs may still sit in it, so it is not reusable.
  // Give it up and answer whatever did not complete with plain reads.
  io_uring_queue_exit(&ring_);
  ring_ok_ = false;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!done[i]) run_plain(ops.subspan(i, 1));
  }
}

}  // namespace pcifs::backend::sysfs
