#include "rows.hpp"

#include "simd.hpp"

namespace splat::cpu {

void rows_to_float(const void* src, DType t, size_t at, int64_t n, float* dst) {
  load_row(src, t, at, n, dst);
}
void rows_from_float(const float* src, DType t, void* dst, size_t at, int64_t n) {
  store_row(src, t, dst, at, n);
}

}  // namespace splat::cpu
