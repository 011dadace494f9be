// Internal helpers shared by the CPU paths: converting views to float/double buffers per head.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "splat/flurka.hpp"

namespace splat::flurka_detail {

// Rows [0, n) of head (b, h) of t as a dense n x D buffer of T.
template <class T>
void load_head(const TensorView& t, int64_t b, int64_t h, std::vector<T>& dst) {
  const int64_t n = t.N(), D = t.D();
  dst.resize(size_t(n * D));
  for (int64_t i = 0; i < n; ++i) {
    const size_t o = t.offset(b, h, i);
    T* row = dst.data() + i * D;
    if (t.dtype == DType::F32) {
      const float* p = static_cast<const float*>(t.data) + o;
      for (int64_t d = 0; d < D; ++d) row[d] = T(p[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) row[d] = T(load_element(t.data, t.dtype, o + d));
    }
  }
}

template <class T>
void store_row(const TensorView& t, int64_t b, int64_t h, int64_t i, const T* row) {
  const size_t o = t.offset(b, h, i);
  for (int64_t d = 0; d < t.D(); ++d) store_element(t.data, t.dtype, o + d, float(row[d]));
}

// Matrix of head h (shared matrices ignore h) as a dense rows x cols buffer of T.
template <class T>
void load_matrix(const MatrixView& x, int64_t h, std::vector<T>& dst) {
  const size_t n = size_t(x.rows * x.cols), o = x.offset(h);
  dst.resize(n);
  for (size_t i = 0; i < n; ++i) dst[i] = T(load_element(x.data, x.dtype, o + i));
}

// Sign-safe elu(x) + 1.
template <class T>
inline T elu1(T x) {
  return x > 0 ? x + T(1) : std::exp(x);
}

}  // namespace splat::flurka_detail
