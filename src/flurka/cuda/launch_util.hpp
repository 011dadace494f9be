// Host helpers shared by the FLuRKA launch code: CUDA error checks, row addressing of tensors and matrices for the
// kernels, workspace alignment.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "flurka/cuda/tiles.cuh"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat::fk {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorCode::Cuda, std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

// [B, H, N, D] tensor rows by their strides; E, F, W matrices ([rows, cols] shared by every head, or per head).
inline Rows rows_of(const TensorView& t) {
  return Rows{t.data, t.stride[0], t.stride[1], t.stride[2]};
}
inline Rows rows_of(const MatrixView& x) {
  return Rows{x.data, 0, x.heads == 1 ? 0 : x.rows * x.cols, x.cols};
}

// Workspace regions start on 256-byte boundaries.
inline size_t align_up(size_t x) {
  return (x + 255) & ~size_t(255);
}

}  // namespace splat::fk
