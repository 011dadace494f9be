// The built-in suite (issue 2, section 4).
#include "splat/suite.hpp"

#include <algorithm>

#include "splat/error.hpp"

namespace splat {

namespace {
int64_t isqrt(int64_t n) {
  int64_t r = 0;
  while ((r + 1) * (r + 1) <= n) ++r;
  return r;
}
}  // namespace

std::vector<SuiteEntry> suite(int64_t n) {
  require(n > 0 && n <= (int64_t(1) << 40), "suite: sequence length must be positive, got " + std::to_string(n));
  const auto p = [](int64_t v) { return std::to_string(std::max<int64_t>(v, 1)); };
  return {
      {"window", "window:w=" + p(n / 16)},
      {"causal_window", "causal_window:w=" + p(n / 8)},
      {"dilated", "dilated:w=" + p(n / 16) + ",d=4"},
      {"strided", "strided:s=" + p(isqrt(n))},
      {"blocked", "blocked:b=" + p(n / 8)},
      {"longformer", "longformer:w=" + p(n / 16) + ",g=32"},
      {"bigbird", "bigbird:b=64,w=1,g=2,r=3,seed=1"},
  };
}

std::vector<std::string> suite_specs(int64_t n) {
  std::vector<std::string> out;
  for (auto& e : suite(n)) out.push_back(e.spec);
  return out;
}

std::vector<int64_t> suite_sizes() {
  return {4096, 16384};
}

}  // namespace splat
