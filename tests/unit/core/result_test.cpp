#include "pcifs/result.hpp"

#include <gtest/gtest.h>

#include "pcifs/types.hpp"

namespace pcifs {
namespace {

Result<int> half(int v) {
  if (v % 2) return Errno(EINVAL);
  return v / 2;
}

Result<int> quarter(int v) {
  auto h = half(v);
  PCIFS_TRY(h);
  return half(*h);
}

TEST(ResultTest, HoldsValueOrErrno) {
  EXPECT_EQ(*half(8), 4);
  ASSERT_FALSE(half(3).ok());
  EXPECT_EQ(half(3).error(), Errno(EINVAL));
  EXPECT_EQ(half(3).error().name(), "EINVAL");
  EXPECT_EQ(half(3).value_or(-1), -1);
}

TEST(ResultTest, TryPropagates) {
  EXPECT_EQ(*quarter(8), 2);
  EXPECT_EQ(quarter(6).error(), Errno(EINVAL));
  EXPECT_EQ(quarter(5).error(), Errno(EINVAL));
}

TEST(BdfTest, ParsesAndFormats) {
  auto b = Bdf::parse("0000:01:1f.7");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->bus, 1);
  EXPECT_EQ(b->dev, 31);
  EXPECT_EQ(b->fn, 7);
  EXPECT_EQ(b->str(), "0000:01:1f.7");
  EXPECT_EQ(Bdf::parse("ABCD:EF:00.0")->str(), "abcd:ef:00.0");
}

TEST(BdfTest, RejectsMalformed) {
  for (const char* bad : {"", "0000:01:20.0", "0000:01:00.8", "000:01:00.0", "0000:01:00.0\n",
                          "0000-01:00.0", "0000:0g:00.0", "+000:01:00.0"}) {
    EXPECT_FALSE(Bdf::parse(bad)) << bad;
  }
}

TEST(PowerStateTest, ParsesExactly) {
  EXPECT_EQ(parse_power_state("D3hot\n"), PowerState::kD3hot);
  EXPECT_EQ(parse_power_state("D0"), PowerState::kD0);
  EXPECT_FALSE(parse_power_state("d0"));
  EXPECT_FALSE(parse_power_state("D3"));
  EXPECT_FALSE(parse_power_state("D0\n\n"));
  EXPECT_EQ(to_string(PowerState::kD3cold), "D3cold");
}

}  // namespace
}  // namespace pcifs
