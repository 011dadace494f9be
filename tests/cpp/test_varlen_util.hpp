// The dense mask of a packed varlen batch, the reference of the CPU and CUDA varlen tests: sequence b's pattern at its
// own length on the diagonal block [cu[b], cu[b+1]), nothing across sequences.
#pragma once
#include <cstdint>
#include <vector>

#include "splat/pattern.hpp"

namespace splat_test {

inline std::vector<uint8_t> packed_dense_mask(const splat::Pattern& p, const std::vector<int32_t>& cu) {
  const int64_t total = cu.back();
  std::vector<uint8_t> m(size_t(total * total), 0);
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int64_t s = cu[b], n = cu[b + 1] - cu[b];
    if (n == 0) continue;
    const std::vector<uint8_t> d = splat::dense_mask(p, n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) m[size_t((s + i) * total + s + j)] = d[size_t(i * n + j)];
  }
  return m;
}

}  // namespace splat_test
