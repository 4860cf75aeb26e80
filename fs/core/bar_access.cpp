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

Result<size_t> read_bar(backend::Device& dev, unsigned bar, uint64_t offset, std::span<uint8_t> out,
                        uint64_t bar_size, bool is_io) {
  size_t done = 0;
  std::optional<Errno> err;
  auto r = for_each_piece(offset, out.size(), bar_size, false, is_io, [&](const BarAccess& a) {
    auto v = dev.bar_read(bar, a.offset, a.width);
    if (!v) {
      err = v.error();
      return false;
    }
    for (unsigned k = 0; k < a.width; ++k) out[a.buf_pos + k] = static_cast<uint8_t>(*v >> (8 * k));
    done += a.width;
    return true;
  });
  if (!r) return r.error();
  if (err && done == 0) return *err;
  return done;
}

Result<size_t> write_bar(backend::Device& dev, unsigned bar, uint64_t offset,
                         std::span<const uint8_t> in, uint64_t bar_size, bool is_io) {
  size_t done = 0;
  std::optional<Errno> err;
  auto r = for_each_piece(offset, in.size(), bar_size, true, is_io, [&](const BarAccess& a) {
    uint64_t v = 0;
    for (unsigned k = 0; k < a.width; ++k) v |= uint64_t{in[a.buf_pos + k]} << (8 * k);
    auto w = dev.bar_write(bar, a.offset, a.width, v);
    if (!w) {
      err = w.error();
      return false;
    }
    done += a.width;
    return true;
  });
  if (!r) return r.error();
  if (err && done == 0) return *err;
  return done;
}

}  // namespace pcifs::core
