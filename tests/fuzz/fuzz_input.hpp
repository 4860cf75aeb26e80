// Helpers shared by the libFuzzer harnesses (tests/fuzz/*_fuzz.cpp): a byte
// reader that turns the fuzzer's input into typed values (what libFuzzer's
// FuzzedDataProvider does, without depending on clang's headers, since the
// same harnesses are built by GCC as corpus replayers), and the failure
// report every harness uses for a finding that is not a crash by itself.
//
// Single-threaded; each harness owns its reader for one input.
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pcifs::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t left() const { return size_ - pos_; }
  // The next byte, 0 once the input is used up.
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // Little-endian, missing bytes read as 0.
  uint64_t uint(unsigned bytes) {
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; ++i) v |= uint64_t{byte()} << (8 * i);
    return v;
  }
  uint16_t u16() { return static_cast<uint16_t>(uint(2)); }
  uint32_t u32() { return static_cast<uint32_t>(uint(4)); }
  // Up to n bytes (fewer at the end of the input).
  std::span<const uint8_t> bytes(size_t n) {
    if (n > left()) n = left();
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  std::span<const uint8_t> rest() { return bytes(left()); }
  // Exactly n bytes: what the input has, then zeros.
  std::vector<uint8_t> padded(size_t n) {
    std::vector<uint8_t> out(n);
    auto b = bytes(n);
    std::copy(b.begin(), b.end(), out.begin());
    return out;
  }
  std::string_view text(size_t n) {
    auto b = bytes(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  std::string_view rest_text() { return text(left()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The daemon's warnings (a DOE timeout, a refused claim) are expected by the
// thousand while fuzzing: only what would be a crash is worth printing.
inline void quiet_logs() {
  static const bool once = [] {
    spdlog::set_level(spdlog::level::critical);
    return true;
  }();
  (void)once;
}

// A finding the sanitizers cannot see (an oracle violation, a broken
// invariant): say what, then abort so that libFuzzer keeps the input.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace pcifs::fuzz
