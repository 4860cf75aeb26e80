// BarMemory: what sits behind one simulated BAR — a small register block with
// side effects at the start, then plain RAM.
//
// Register map (offsets in the BAR; present when the BAR is at least
// kRegisterBlockMin bytes, smaller BARs are plain RAM):
//   0x00 SCRATCH0   64-bit read/write
//   0x08 SCRATCH1   64-bit read/write
//   0x10 EVENT_COUNT read-to-clear; +1 on every write (any width) to DOORBELL
//   0x18 DOORBELL   write-only, reads 0
//   0x20/0x28/0x30/0x38 ACCESS_COUNT_W1/W2/W4/W8: accesses of that width to
//        this BAR since reset, every access counted (including reads of these
//        counters, counted before the value is taken); a write to any of them
//        zeroes all four
//   0x40 ID         32-bit constant 0x50434946 ("PCIF"); 0x44 reads 0
// Registers are 8-byte slots; a narrower access reads or writes its bytes of
// the slot (a 4-byte read of 0x04 is the upper half of SCRATCH0).
//
// RAM is sparse (4 KiB pages allocated on first write, absent pages read 0), so
// thousands of functions with 1 MiB BARs cost nothing until written. Memory is
// bounded by the BAR size.
//
// Thread safety: none; the owning SimDevice serialises every call. Callers pass
// naturally aligned accesses of 1, 2, 4 or 8 bytes inside the BAR.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>

namespace pcifs::backend::sim {

inline constexpr uint64_t kRegScratch0 = 0x00;
inline constexpr uint64_t kRegScratch1 = 0x08;
inline constexpr uint64_t kRegEventCount = 0x10;
inline constexpr uint64_t kRegDoorbell = 0x18;
inline constexpr uint64_t kRegAccessCountW1 = 0x20;
inline constexpr uint64_t kRegAccessCountW2 = 0x28;
inline constexpr uint64_t kRegAccessCountW4 = 0x30;
inline constexpr uint64_t kRegAccessCountW8 = 0x38;
inline constexpr uint64_t kRegId = 0x40;
inline constexpr uint32_t kIdValue = 0x50434946;  // "PCIF"
inline constexpr uint64_t kRegisterBlockEnd = 0x48;
inline constexpr uint64_t kRegisterBlockMin = 0x80;

class BarMemory {
 public:
  explicit BarMemory(uint64_t size);
  uint64_t size() const { return size_; }

  uint64_t read(uint64_t offset, unsigned width);
  void write(uint64_t offset, unsigned width, uint64_t value);
  // `count` accesses of `width` at offset, offset + width, ...: the same
  // effects as that many read()/write() calls (registers one by one, in order;
  // RAM, which has no side effects, copied in bulk). Little-endian bytes.
  void read_run(uint64_t offset, unsigned width, size_t count, uint8_t* out);
  void write_run(uint64_t offset, unsigned width, size_t count, const uint8_t* in);

  void reset_registers();  // function reset: counters and scratch back to 0
  void power_loss();       // registers and RAM lost

 private:
  static constexpr uint64_t kPage = 4096;
  bool in_registers(uint64_t offset) const {
    return size_ >= kRegisterBlockMin && offset < kRegisterBlockEnd;
  }
  void count(unsigned width);
  uint64_t read_slot(uint64_t slot);  // side effects of a read included
  void write_slot(uint64_t slot, uint64_t merged, bool doorbell);
  uint64_t peek_slot(uint64_t slot) const;
  uint64_t ram_read(uint64_t offset, unsigned width) const;
  void ram_write(uint64_t offset, unsigned width, uint64_t value);

  uint64_t size_;
  uint64_t scratch_[2] = {0, 0};
  uint64_t event_count_ = 0;
  std::array<uint64_t, 4> access_counts_{};  // by width 1, 2, 4, 8
  std::unordered_map<uint64_t, std::unique_ptr<std::array<uint8_t, kPage>>> pages_;
};

}  // namespace pcifs::backend::sim
