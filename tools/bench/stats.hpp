// The summaries every pcifs-bench table prints: the median of the rounds
// (the headline figure) and the best round.
#pragma once

#include <algorithm>
#include <vector>

namespace pcifs::bench {

// The middle round; the mean of the two middle ones for an even count. 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The smallest value (the fastest round of a time). 0 for none.
inline double best(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

}  // namespace pcifs::bench
