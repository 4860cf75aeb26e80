#include "core/bar_access.hpp"

#include <optional>

namespace pcifs::core {
namespace {

constexpr size_t kMaxWidth = 8;
constexpr size_t kMaxIoWidth = 4;

bool is_single_width(size_t len) { return len == 1 || len == 2 || len == 4 || len == 8; }

}  // namespace

Result<size_t> check_bar_access(uint64_t offset, size_t len, uint64_t bar_size, bool is_write) {
  if (len == 0) return size_t{0};
  if (len < kMaxWidth && !is_single_width(len)) return Errno(EINVAL);
  if (is_single_width(len) && offset % len != 0) return Errno(EINVAL);
  if (offset >= bar_size) return is_write ? Result<size_t>(Errno(ENXIO)) : size_t{0};
  uint64_t room = bar_size - offset;
  if (len > room) return is_write ? Result<size_t>(Errno(ENXIO)) : static_cast<size_t>(room);
  return len;
}

namespace {

// The widest naturally aligned width at `off` that fits in `left` bytes.
unsigned piece_width(uint64_t off, size_t left, size_t max_width) {
  for (size_t w = max_width; w > 1; w /= 2) {
    if (off % w == 0 && left >= w) return static_cast<unsigned>(w);
  }
  return 1;
}

// Calls fn(BarAccess) for every piece; stops when fn returns false.
template <typename Fn>
Result<void> for_each_piece(uint64_t offset, size_t len, uint64_t bar_size, bool is_write,
                            bool is_io, Fn&& fn) {
  auto n = check_bar_access(offset, len, bar_size, is_write);
  if (!n) return n.error();
  size_t max_width = is_io ? kMaxIoWidth : kMaxWidth;
  for (size_t pos = 0; pos < *n;) {
    unsigned w = piece_width(offset + pos, *n - pos, max_width);
    if (!fn(BarAccess{offset + pos, w, pos})) break;
    pos += w;
  }
  return Ok();
}

}  // namespace

Result<std::vector<BarAccess>> split_bar_access(uint64_t offset, size_t len, uint64_t bar_size,
                                                bool is_write, bool is_io) {
  std::vector<BarAccess> out;
  auto r = for_each_piece(offset, len, bar_size, is_write, is_io, [&](const BarAccess& a) {
    out.push_back(a);
    return true;
  });
  if (!r) return r.error();
  return out;
}

namespace {

// Consecutive pieces of the widest width form one run: one backend call that
// performs exactly those accesses (Device::bar_read_run), so a bulk read does
// not pay a call and a lock per 8 bytes. fn(offset, width, buf_pos, bytes)
// returns the bytes done; the walk stops at the first short or failed run.
template <typename Fn>
Result<size_t> for_each_run(uint64_t offset, size_t len, uint64_t bar_size, bool is_write,
                            bool is_io, Fn&& fn) {
  auto n = check_bar_access(offset, len, bar_size, is_write);
  if (!n) return n.error();
  const size_t max_width = is_io ? kMaxIoWidth : kMaxWidth;
  size_t done = 0;
  for (size_t pos = 0; pos < *n;) {
    const unsigned w = piece_width(offset + pos, *n - pos, max_width);
    // Once aligned to the widest width, every following piece is that wide
    // until the tail; narrower pieces (head and tail) go one by one.
    const size_t bytes = w == max_width ? (*n - pos) / w * w : w;
    auto r = fn(offset + pos, w, pos, bytes);
    if (!r) return done ? Result<size_t>(done) : r.error();
    done += *r;
    if (*r < bytes) break;
    pos += bytes;
  }
  return done;
}

}  // namespace

Result<size_t> read_bar(backend::Device& dev, unsigned bar, uint64_t offset, std::span<uint8_t> out,
                        uint64_t bar_size, bool is_io) {
  return for_each_run(offset, out.size(), bar_size, false, is_io,
                      [&](uint64_t off, unsigned w, size_t pos, size_t bytes) {
                        return dev.bar_read_run(bar, off, w, out.subspan(pos, bytes));
                      });
}

Result<size_t> write_bar(backend::Device& dev, unsigned bar, uint64_t offset,
                         std::span<const uint8_t> in, uint64_t bar_size, bool is_io) {
  return for_each_run(offset, in.size(), bar_size, true, is_io,
                      [&](uint64_t off, unsigned w, size_t pos, size_t bytes) {
                        return dev.bar_write_run(bar, off, w, in.subspan(pos, bytes));
                      });
}

}  // namespace pcifs::core
