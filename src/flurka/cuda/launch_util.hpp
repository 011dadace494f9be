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

// Device memory owned by a host-to-host entry point (the *_cuda_host test and benchmark helpers), freed on scope
// exit; never on a launch path.
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t n) { cuda_check(cudaMalloc(&p, n < 16 ? 16 : n), "cudaMalloc"); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

// Bytes a strided [B, H, N, D] view spans, or an E, F or W matrix (all heads).
inline size_t extent_bytes(const TensorView& t) {
  size_t span = 1;
  for (int a = 0; a < 4; ++a) span += size_t(t.shape[a] - 1) * size_t(t.stride[a]);
  return span * dtype_size(t.dtype);
}
inline size_t extent_bytes(const MatrixView& x) {
  return size_t(x.heads * x.rows * x.cols) * dtype_size(x.dtype);
}

// Workspace regions start on 256-byte boundaries.
inline size_t align_up(size_t x) {
  return (x + 255) & ~size_t(255);
}

}  // namespace splat::fk
