// Row conversions of the CPU backend (vectorised f16/bf16 <-> f32), callable from code built
// without AVX2 flags (tests); the backend itself uses the inline versions in simd.hpp.
#pragma once
#include <cstddef>
#include <cstdint>

#include "splat/tensor.hpp"

namespace splat::cpu {

void rows_to_float(const void* src, DType t, size_t at, int64_t n, float* dst);
void rows_from_float(const float* src, DType t, void* dst, size_t at, int64_t n);

}  // namespace splat::cpu
