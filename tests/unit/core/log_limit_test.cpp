#include "core/log_limit.hpp"

#include <gtest/gtest.h>

namespace pcifs::core {
namespace {

using namespace std::chrono_literals;

TEST(LogLimiterTest, AllowsABurstPerKeyPerSecondThenCountsWhatItDropped) {
  LogLimiter l;
  auto t0 = LogLimiter::Clock::time_point{} + 100s;
  uint64_t dropped = 99;
  for (uint32_t i = 0; i < LogLimiter::kBurst; ++i) {
    ASSERT_TRUE(l.allow("a", &dropped, t0)) << i;
    EXPECT_EQ(dropped, 0u);
  }
  EXPECT_FALSE(l.allow("a", &dropped, t0 + 10ms));
  EXPECT_FALSE(l.allow("a", &dropped, t0 + 20ms));
  EXPECT_TRUE(l.allow("b", &dropped, t0 + 30ms)) << "keys are independent";
  ASSERT_TRUE(l.allow("a", &dropped, t0 + 1s));
  EXPECT_EQ(dropped, 2u) << "the next allowed line reports the suppressed ones";
}

TEST(LogLimiterTest, TableStaysBounded) {
  LogLimiter l;
  uint64_t d = 0;
  for (size_t i = 0; i < 3 * LogLimiter::kMaxKeys; ++i) {
    EXPECT_TRUE(l.allow("k" + std::to_string(i), &d));
  }
}

}  // namespace
}  // namespace pcifs::core
