// BAR access splitting [S5]: how one pread/pwrite on a resourceN file becomes
// device accesses, and helpers that perform them.
//
// The rules (S5, decided here where the spec is silent):
//  - 1, 2, 4 or 8 bytes at a naturally aligned offset: exactly one access of
//    that width. 3, 5, 6 or 7 bytes, or 2/4/8 bytes misaligned: EINVAL (this is
//    checked before the bounds, so a malformed access is EINVAL wherever it is).
//  - Longer accesses (9 bytes and up, any start offset) are split into the
//    widest naturally aligned accesses: smaller leading pieces up to the
//    alignment, the widest in the middle, smaller trailing pieces.
//  - Reads at or past the end return nothing; reads crossing the end are
//    clipped to it. Writes that start at or past the end, and writes that start
//    inside but cross the end, fail with ENXIO and perform no access at all.
//  - I/O BARs take at most 4-byte accesses: an aligned 8-byte access to an I/O
//    BAR becomes two 4-byte accesses (like a long access).
//
// Pure functions and stateless helpers: thread-safe. The helpers do not check
// power state or claims; the Mediator calls them inside its access gate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::core {

// One device access: `width` bytes at BAR offset `offset`, which are bytes
// [buf_pos, buf_pos + width) of the caller's buffer.
struct BarAccess {
  uint64_t offset = 0;
  unsigned width = 0;
  size_t buf_pos = 0;
  friend bool operator==(const BarAccess&, const BarAccess&) = default;
};

// Validates a caller's access of `len` bytes at `offset` of a BAR of
// `bar_size` bytes without touching anything: EINVAL for a bad width or
// alignment, ENXIO for a write that does not fit; else the number of bytes to
// access (0: nothing to do, e.g. a read at or after the end; short: clipped).
Result<size_t> check_bar_access(uint64_t offset, size_t len, uint64_t bar_size, bool is_write);

// The accesses for a caller's access of `len` bytes at `offset` of a BAR of
// `bar_size` bytes. An empty vector: nothing to do (len 0, or a read at/after
// the end).
Result<std::vector<BarAccess>> split_bar_access(uint64_t offset, size_t len, uint64_t bar_size,
                                                bool is_write, bool is_io = false);

// Performs a read of out.size() bytes at `offset` of BAR `bar` on `dev`, piece
// by piece, assembling little-endian bytes. Stops at the first failing access:
// returns the bytes done before it if any, else its error.
Result<size_t> read_bar(backend::Device& dev, unsigned bar, uint64_t offset, std::span<uint8_t> out,
                        uint64_t bar_size, bool is_io = false);

// Performs a write likewise. Same partial-progress rule.
Result<size_t> write_bar(backend::Device& dev, unsigned bar, uint64_t offset,
                         std::span<const uint8_t> in, uint64_t bar_size, bool is_io = false);

}  // namespace pcifs::core
