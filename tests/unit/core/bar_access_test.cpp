// BAR access splitting [S5]: the pure rules, then the helpers against the
// simulator, counted with its ACCESS_COUNT_W* registers.
#include "core/bar_access.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "sim/bar_memory.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

constexpr uint64_t kSize = 0x1000;
constexpr uint64_t kEnd = std::numeric_limits<uint64_t>::max();

struct Piece {
  uint64_t offset;
  unsigned width;
};

struct SplitCase {
  const char* name;
  uint64_t offset;
  size_t len;
  bool is_write;
  bool is_io;
  int err;                    // 0: expect the pieces
  std::vector<Piece> pieces;  // in order; buf_pos follows from them
};

class SplitTest : public ::testing::TestWithParam<SplitCase> {};

TEST_P(SplitTest, Splits) {
  const SplitCase& c = GetParam();
  auto r = split_bar_access(c.offset, c.len, kSize, c.is_write, c.is_io);
  if (c.err != 0) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), Errno(c.err));
    return;
  }
  ASSERT_TRUE(r.ok()) << r.error().name();
  std::vector<BarAccess> want;
  size_t pos = 0;
  for (const auto& p : c.pieces) {
    want.push_back({p.offset, p.width, pos});
    pos += p.width;
  }
  EXPECT_EQ(*r, want);
}

std::vector<SplitCase> split_cases() {
  const bool R = false, W = true;
  return {
      {"Zero", 0, 0, R, false, 0, {}},
      {"ZeroWrite", 0, 0, W, false, 0, {}},
      {"Byte", 3, 1, R, false, 0, {{3, 1}}},
      {"WordAligned", 2, 2, R, false, 0, {{2, 2}}},
      {"WordMisaligned", 1, 2, R, false, EINVAL, {}},
      {"DwordAligned", 4, 4, W, false, 0, {{4, 4}}},
      {"DwordMisaligned", 2, 4, W, false, EINVAL, {}},
      {"QwordAligned", 8, 8, R, false, 0, {{8, 8}}},
      {"QwordMisaligned", 4, 8, R, false, EINVAL, {}},
      {"Three", 0, 3, R, false, EINVAL, {}},
      {"Five", 0, 5, W, false, EINVAL, {}},
      {"Six", 0, 6, R, false, EINVAL, {}},
      {"Seven", 0, 7, R, false, EINVAL, {}},
      {"NineSplits", 0, 9, R, false, 0, {{0, 8}, {8, 1}}},
      {"SixteenAligned", 0, 16, R, false, 0, {{0, 8}, {8, 8}}},
      {"SixteenAtOne", 1, 16, W, false, 0, {{1, 1}, {2, 2}, {4, 4}, {8, 8}, {16, 1}}},
      {"TwelveAtFour", 4, 12, R, false, 0, {{4, 4}, {8, 8}}},
      {"TenAtSix", 6, 10, R, false, 0, {{6, 2}, {8, 8}}},
      {"ThirteenAtThree", 3, 13, R, false, 0, {{3, 1}, {4, 4}, {8, 8}}},
      {"ReadAtEnd", kSize, 4, R, false, 0, {}},
      {"ReadPastEnd", kSize + 8, 8, R, false, 0, {}},
      {"ReadHugeOffset", kEnd - 7, 8, R, false, 0, {}},
      {"ReadCrossingEndClipped", kSize - 8, 16, R, false, 0, {{kSize - 8, 8}}},
      {"ReadCrossingEndOddClip", kSize - 6, 16, R, false, 0, {{kSize - 6, 2}, {kSize - 4, 4}}},
      {"ReadLastQword", kSize - 8, 8, R, false, 0, {{kSize - 8, 8}}},
      {"WriteAtEnd", kSize, 4, W, false, ENXIO, {}},
      {"WriteHugeOffset", kEnd - 7, 8, W, false, ENXIO, {}},
      {"WriteCrossingEnd", kSize - 8, 16, W, false, ENXIO, {}},
      {"WriteLastQword", kSize - 8, 8, W, false, 0, {{kSize - 8, 8}}},
      {"MisalignedPastEndIsEinval", kSize + 1, 2, W, false, EINVAL, {}},
      {"IoQwordSplit", 0, 8, R, true, 0, {{0, 4}, {4, 4}}},
      {"IoLongSplit", 2, 12, W, true, 0, {{2, 2}, {4, 4}, {8, 4}, {12, 2}}},
      {"IoDword", 4, 4, R, true, 0, {{4, 4}}},
  };
}

INSTANTIATE_TEST_SUITE_P(Rules, SplitTest, ::testing::ValuesIn(split_cases()),
                         [](const auto& i) { return std::string(i.param.name); });

// Property over every start offset and length up to 40: pieces tile the
// (clipped) range in order, are naturally aligned, and are as wide as possible.
TEST(SplitPropertyTest, PiecesTileRangeWidestFirst) {
  for (uint64_t off = 0; off < 24; ++off) {
    for (size_t len = 9; len <= 40; ++len) {
      auto r = split_bar_access(kSize - 32 + off, len, kSize, false);
      ASSERT_TRUE(r.ok());
      uint64_t pos = kSize - 32 + off;
      for (const auto& a : *r) {
        ASSERT_EQ(a.offset, pos);
        ASSERT_EQ(a.offset % a.width, 0u);
        unsigned wider = a.width * 2;
        uint64_t range_end = std::min<uint64_t>(kSize - 32 + off + len, kSize);
        bool could_widen = wider <= 8 && a.offset % wider == 0 && a.offset + wider <= range_end;
        EXPECT_FALSE(could_widen) << off << "+" << len << " at " << a.offset;
        pos += a.width;
      }
      EXPECT_EQ(pos, std::min<uint64_t>(kSize - 32 + off + len, kSize));
    }
  }
}

// --- helpers against the simulator ------------------------------------------

class BarHelpersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = backend::sim::make_default_backend();
    dev_ = backend_->find(*Bdf::parse("0000:01:00.0"));
    ASSERT_NE(dev_, nullptr);
    bar0_size_ = dev_->info().resources[0].size();
    ASSERT_EQ(bar0_size_, 1u << 20);
  }
  void zero_counters() {
    ASSERT_TRUE(dev_->bar_write(0, backend::sim::kRegAccessCountW1, 8, 0).ok());
  }
  // Accesses of width 1, 2, 4, 8 since zero_counters(), not counting these reads.
  std::array<uint64_t, 4> counters() {
    std::array<uint64_t, 4> c{};
    for (unsigned i = 0; i < 4; ++i) {
      c[i] = dev_->bar_read(0, backend::sim::kRegAccessCountW1 + 8 * i, 8).value_or(~0ull);
    }
    c[3] -= 4;  // the four 8-byte counter reads count themselves
    return c;
  }

  std::unique_ptr<backend::sim::SimBackend> backend_;
  std::shared_ptr<backend::sim::SimDevice> dev_;
  uint64_t bar0_size_ = 0;
};

TEST_F(BarHelpersTest, AlignedDwordReadIsOneDwordAccess) {
  zero_counters();
  std::array<uint8_t, 4> out{};
  auto n = read_bar(*dev_, 0, backend::sim::kRegId, out, bar0_size_);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 4u);
  EXPECT_EQ(out, (std::array<uint8_t, 4>{'F', 'I', 'C', 'P'}));  // 0x50434946 little-endian
  EXPECT_EQ(counters(), (std::array<uint64_t, 4>{0, 0, 1, 0}));
}

struct CountCase {
  const char* name;
  uint64_t offset;
  size_t len;
  std::array<uint64_t, 4> counts;  // W1, W2, W4, W8
};

class BarCountTest : public BarHelpersTest, public ::testing::WithParamInterface<CountCase> {};

TEST_P(BarCountTest, ReadAndWriteAccessCounts) {
  const CountCase& c = GetParam();
  std::vector<uint8_t> buf(c.len);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 7 + 1);
  zero_counters();
  auto w = write_bar(*dev_, 0, c.offset, buf, bar0_size_);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, c.len);
  EXPECT_EQ(counters(), c.counts);
  zero_counters();
  std::vector<uint8_t> back(c.len, 0);
  auto r = read_bar(*dev_, 0, c.offset, back, bar0_size_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, c.len);
  EXPECT_EQ(counters(), c.counts);
  EXPECT_EQ(back, buf);  // little-endian assembly round-trips through RAM
}

INSTANTIATE_TEST_SUITE_P(Sim, BarCountTest,
                         ::testing::Values(CountCase{"Byte", 0x101, 1, {1, 0, 0, 0}},
                                           CountCase{"Word", 0x102, 2, {0, 1, 0, 0}},
                                           CountCase{"Dword", 0x104, 4, {0, 0, 1, 0}},
                                           CountCase{"Qword", 0x108, 8, {0, 0, 0, 1}},
                                           CountCase{"Page", 0x1000, 4096, {0, 0, 0, 512}},
                                           CountCase{"OddStart", 0x101, 16, {2, 1, 1, 1}},
                                           CountCase{
                                               "LastBytes", (1u << 20) - 12, 12, {0, 0, 1, 1}}),
                         [](const auto& i) { return std::string(i.param.name); });

TEST_F(BarHelpersTest, OutOfRangeAndBadWidthTouchNothing) {
  zero_counters();
  std::vector<uint8_t> buf(16, 0xab);
  auto w = write_bar(*dev_, 0, bar0_size_ - 8, buf, bar0_size_);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error(), Errno(ENXIO));
  auto bad = read_bar(*dev_, 0, 0x100, std::span<uint8_t>(buf).first(3), bar0_size_);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), Errno(EINVAL));
  auto eof = read_bar(*dev_, 0, bar0_size_, buf, bar0_size_);
  ASSERT_TRUE(eof.ok());
  EXPECT_EQ(*eof, 0u);
  auto clipped = read_bar(*dev_, 0, bar0_size_ - 8, buf, bar0_size_);
  ASSERT_TRUE(clipped.ok());
  EXPECT_EQ(*clipped, 8u);
  EXPECT_EQ(counters(), (std::array<uint64_t, 4>{0, 0, 0, 1}));
  EXPECT_EQ(dev_->violations(), std::optional<uint64_t>(0));
}

TEST_F(BarHelpersTest, SideEffectRegistersSeeExactAccesses) {
  // One 4-byte doorbell write is one event; a 16-byte write over 0x10..0x1f is
  // one 8-byte write to the doorbell slot.
  std::array<uint8_t, 4> one{1, 0, 0, 0};
  ASSERT_TRUE(write_bar(*dev_, 0, backend::sim::kRegDoorbell, one, bar0_size_).ok());
  std::array<uint8_t, 8> ev{};
  ASSERT_EQ(*read_bar(*dev_, 0, backend::sim::kRegEventCount, ev, bar0_size_), 8u);
  EXPECT_EQ(ev[0], 1);
  ASSERT_EQ(*read_bar(*dev_, 0, backend::sim::kRegEventCount, ev, bar0_size_), 8u);
  EXPECT_EQ(ev[0], 0);  // read-to-clear: read exactly once above
}

// A Device whose BAR accesses fail after `ok_accesses` successes.
class FailingDevice final : public backend::Device {
 public:
  explicit FailingDevice(int ok_accesses) : left_(ok_accesses) {}
  const backend::DeviceInfo& info() const override { return info_; }
  Result<uint32_t> config_read(uint32_t, unsigned) override { return Errno(EIO); }
  Result<void> config_write(uint32_t, unsigned, uint32_t) override { return Errno(EIO); }
  Result<uint64_t> bar_read(unsigned, uint64_t off, unsigned) override {
    if (left_-- <= 0) return Errno(EIO);
    return off;
  }
  Result<void> bar_write(unsigned, uint64_t, unsigned, uint64_t) override {
    if (left_-- <= 0) return Errno(EIO);
    return Ok();
  }
  Result<void> rom_enable(bool) override { return Errno(EIO); }
  Result<size_t> rom_read(uint64_t, std::span<uint8_t>) override { return Errno(EIO); }
  Result<void> set_power_state(PowerState) override { return Errno(EIO); }
  Result<void> reset() override { return Errno(EIO); }
  Result<void> remove() override { return Errno(EIO); }

 private:
  backend::DeviceInfo info_;
  int left_;
};

TEST(BarHelpersErrorTest, StopsAtFirstErrorReturningProgress) {
  std::vector<uint8_t> buf(32);
  FailingDevice two(2);
  auto r = read_bar(two, 0, 0, buf, kSize);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 16u);
  EXPECT_EQ(buf[8], 8);  // the second piece's value, little-endian
  FailingDevice none(0);
  auto w = write_bar(none, 0, 0, buf, kSize);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error(), Errno(EIO));
  FailingDevice one(1);
  auto w1 = write_bar(one, 0, 4, buf, kSize);
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(*w1, 4u);
}

}  // namespace
}  // namespace pcifs::core
