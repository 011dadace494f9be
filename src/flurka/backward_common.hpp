// Internal helpers of the FLuRKA backward paths.
#pragma once
#include <cstdint>

#include "splat/flurka.hpp"

namespace splat::flurka_detail {

// Writes heads x rows x cols values into dst, which has the layout and dtype of `like` (E or F).
template <class T>
void store_matrix(void* dst, const MatrixView& like, const T* vals) {
  const size_t n = size_t(like.heads) * size_t(like.rows) * size_t(like.cols);
  for (size_t i = 0; i < n; ++i) store_element_f64(dst, like.dtype, i, double(vals[i]));
}

}  // namespace splat::flurka_detail
